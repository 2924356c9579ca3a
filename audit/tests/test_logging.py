import logging

from audit.logging import MaskLicenseKeys


def test_license_keys_are_masked_in_log_lines():
    record = logging.LogRecord(
        "django.request",
        logging.WARNING,
        __file__,
        1,
        "Not Found: %s",
        ("/api/v1/licenses/REPHLO-ABCD-EFGH-JKMN-PQRS/eligibility/",),
        None,
    )

    MaskLicenseKeys().filter(record)

    assert record.getMessage() == "Not Found: /api/v1/licenses/REPHLO-****-****-****-PQRS/eligibility/"


def test_percent_encoded_license_keys_are_masked_in_log_lines():
    record = logging.LogRecord(
        "billing",
        logging.INFO,
        __file__,
        1,
        "asked for %s",
        ("/api/v1/licenses/REPHLO%2DABCD%2DEFGH%2DJKMN%2DPQRS/eligibility/?q=%52EPHLO-ABCD-EFGH-JKMN-PQRS",),
        None,
    )

    MaskLicenseKeys().filter(record)

    assert record.getMessage() == (
        "asked for /api/v1/licenses/REPHLO-****-****-****-PQRS/eligibility/?q=REPHLO-****-****-****-PQRS"
    )
