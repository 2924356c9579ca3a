"""What an audit row may keep of a request body: secrets are replaced, license keys masked."""

import re
from urllib.parse import unquote

REDACTED = "[redacted]"
SECRET_KEY_PATTERN = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|card|cvc|cvv|signature|csrfmiddlewaretoken|\botp"
    r"|^(access|refresh)$",
    re.I,
)
# A key as written, or percent-encoded in a URL, any of its characters as %XX (a raw request line
# in gunicorn's access log is not decoded): `REPHLO%2DABCD-...`, `%52EPHLO-...`.
_CHARACTER = r"(?:[A-Z0-9]|%[0-9A-F]{2})"
_HYPHEN = r"(?:-|%2D)"
_PREFIX = "".join(f"(?:{letter}|%{ord(letter):02X})" for letter in "REPHLO")
_START = r"(?:(?<=%[0-9A-F]{2})|(?<![A-Z0-9]))"  # not inside a word; an escape such as %20 may precede
LICENSE_KEY_PATTERN = re.compile(
    _START
    + rf"(?P<prefix>{_PREFIX}){_HYPHEN}(?:{_CHARACTER}{{4}}{_HYPHEN}){{3}}(?P<last>{_CHARACTER}{{4}})"
    + r"(?![A-Z0-9])",
    re.I,
)


def mask_license_key(value: str) -> str:
    """Keeps only the last group, so support can still match a key a customer reads out."""
    return LICENSE_KEY_PATTERN.sub(
        lambda m: f"{unquote(m.group('prefix'))}-****-****-****-{unquote(m.group('last'))}", value
    )


def mask_license_keys_in(value):
    """`value` (JSON-like) with every license key in its strings masked; nothing else changed."""
    return _masked(value, hide_secrets=False)


def mask_secret(value: str, *, shown: int = 4) -> str:
    """The first characters of a secret (enough to tell two apart), the rest hidden."""
    return f"{value[:shown]}…" if len(value) > shown else "…"


def redact(value):
    """`value` (JSON-like) with the values of secret-named keys replaced and license keys masked."""
    return _masked(value, hide_secrets=True)


def _masked(value, *, hide_secrets: bool):
    if isinstance(value, dict):
        return {
            key: REDACTED
            if hide_secrets and SECRET_KEY_PATTERN.search(str(key))
            else _masked(item, hide_secrets=hide_secrets)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_masked(item, hide_secrets=hide_secrets) for item in value]
    if isinstance(value, str):
        return mask_license_key(value)
    return value
