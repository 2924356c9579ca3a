import logging
import runpy

from django.conf import settings

KEY = "REPHLO-ABCD-EFGH-JKLM-NPQ7"


def test_the_access_log_of_a_worker_masks_license_keys(caplog):
    config = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    config["post_fork"](None, None)
    access_log = logging.getLogger("gunicorn.access")

    with caplog.at_level(logging.INFO, logger="gunicorn.access"):
        access_log.info(
            '%(h)s "%(r)s" %(s)s',
            {"h": "203.0.113.9", "r": f"GET /api/v1/licenses/{KEY}/eligibility/?version=1.2.0 HTTP/1.1", "s": "200"},
        )

    assert KEY not in caplog.text
    assert "REPHLO-****-****-****-NPQ7" in caplog.text
