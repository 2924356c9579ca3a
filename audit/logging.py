"""A logging filter that masks license keys in every log line (a key can appear in a URL, e.g.
`licenses/{key}/eligibility/`, which Django logs on a 4xx)."""

import logging

from audit.redaction import mask_license_key


class MaskLicenseKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_license_key(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True
