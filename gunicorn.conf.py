"""gunicorn settings for production: `gunicorn -c gunicorn.conf.py billing_project.wsgi:application`.

Sync workers, one per core plus one (WEB_CONCURRENCY), with persistent database connections
(DB_CONN_MAX_AGE): measured against gthread and other counts with bench/workers.py (README,
"Processes"). No access log unless GUNICORN_ACCESS_LOG names one ("-" for stdout): the reverse proxy
in front keeps one, and writing it costs a tenth of a small request's time. Every worker
writes its metrics to one folder (prometheus_client's multiprocess mode) and /metrics sums them,
whichever worker answers: PROMETHEUS_MULTIPROC_DIR when set, else a folder of this server's own
under RUNTIME_DIR (or the system's temporary folder), removed when the server stops.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() + 1))
worker_class = "sync"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "0"))
max_requests_jitter = max_requests // 10
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")


# The metrics folder this server made for itself (none when PROMETHEUS_MULTIPROC_DIR was given).
created_folders: list[str] = []


def on_starting(server):
    """Runs in the master before any worker exists, so every worker inherits the folder. Metrics files
    of a previous run would be summed into this one's: the folder starts empty."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)
    else:
        runtime = os.environ.get("RUNTIME_DIR") or tempfile.gettempdir()
        os.makedirs(runtime, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="metrics-", dir=runtime)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        created_folders.append(folder)
    server.log.info("metrics of all workers in %s", folder)


def on_exit(server):
    for folder in created_folders:
        shutil.rmtree(folder, ignore_errors=True)


def child_exit(server, worker):
    """A dead worker's counters still count; its gauges for the live processes are dropped."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


# A first generation this large is collected every few requests rather than several times within one.
GC_FIRST_GENERATION_THRESHOLD = 50_000


def post_worker_init(worker):
    """The application is loaded, and its modules, settings and caches live as long as the worker:
    frozen, the garbage collector no longer walks them, and with a larger first generation it runs
    every few requests rather than several times within one (a batch of 100 usage events spent about
    a tenth of its CPU in the collector; bench/RESULTS.md). Objects freed by their reference counts,
    most of a request's, are freed at once as before."""
    import gc

    gc.freeze()
    gc.set_threshold(GC_FIRST_GENERATION_THRESHOLD)


def post_fork(server, worker):
    """The access log names each request's URL, and `licenses/{key}/eligibility/` carries a license
    key: the worker masks keys there as the application's own logs do."""
    import logging

    from audit.logging import MaskLicenseKeys

    logging.getLogger("gunicorn.access").addFilter(MaskLicenseKeys())
