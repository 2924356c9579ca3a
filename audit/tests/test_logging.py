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
