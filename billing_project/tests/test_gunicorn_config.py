import logging
import runpy

import pytest
from django.conf import settings

KEY = "REPHLO-ABCD-EFGH-JKLM-NPQ7"


@pytest.mark.parametrize(
    "written",
    [
        KEY,
        KEY.replace("-", "%2D"),  # the hyphens escaped, as some HTTP clients send them
        "%52%45" + KEY[2:].replace("-", "%2d"),  # any character may be escaped, in either case of hex
        "%20" + KEY + "%20",  # blanks around the key, which the API strips
    ],
)
def test_the_access_log_of_a_worker_masks_license_keys_however_they_are_escaped(caplog, written):
    config = runpy.run_path(str(settings.BASE_DIR / "gunicorn.conf.py"))
    config["post_fork"](None, None)
    access_log = logging.getLogger("gunicorn.access")

    with caplog.at_level(logging.INFO, logger="gunicorn.access"):
        access_log.info(
            '%(h)s "%(r)s" %(s)s',
            {
                "h": "203.0.113.9",
                "r": f"GET /api/v1/licenses/{written}/eligibility/?version=1.2.0 HTTP/1.1",
                "s": "200",
            },
        )

    assert "ABCD" not in caplog.text
    assert "REPHLO-****-****-****-NPQ7" in caplog.text
