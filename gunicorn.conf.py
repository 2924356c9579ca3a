"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py billing_project.wsgi:application`.

One sync worker per core with persistent database connections (DB_CONN_MAX_AGE). With
PROMETHEUS_MULTIPROC_DIR set, every worker writes its metrics there and /metrics sums them.
"""

import multiprocessing
import os
import shutil

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count()))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
accesslog = "-"
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


def on_starting(server):
    """Metrics files of a previous run would be summed into this one's: start from an empty folder."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_fork(server, worker):
    """The access log names each request's URL, and `licenses/{key}/eligibility/` carries a license
    key: the worker masks keys there as the application's own logs do."""
    import logging

    from audit.logging import MaskLicenseKeys

    logging.getLogger("gunicorn.access").addFilter(MaskLicenseKeys())
