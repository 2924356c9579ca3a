"""App versions and what a license covers, compared with `packaging.version` (PEP 440, so pre-releases
such as 2.0.0rc1 sort after every 1.x release and before 2.0.0). Pure functions, no database.

The rule: a license covers every release of one major version line. Buying (or upgrading to) major M
sets eligible_until_version to "M.999.999", the highest release of that line we will ever ship.
"""

from packaging.version import InvalidVersion, Version

LAST_MINOR = 999
LAST_PATCH = 999

__all__ = ["InvalidVersion", "eligible_until_for", "version_covered", "version_parse", "version_upgrade_target"]


def version_parse(raw: str) -> Version:
    """Raises InvalidVersion for anything packaging does not accept."""
    return Version(str(raw).strip())


def eligible_until_for(version: str) -> str:
    """The highest version covered by a license bought for `version`: the end of its major line."""
    return f"{version_parse(version).major}.{LAST_MINOR}.{LAST_PATCH}"


def version_covered(*, eligible_until_version: str, version: str) -> bool:
    return version_parse(version) <= version_parse(eligible_until_version)


def version_upgrade_target(eligible_until_version: str) -> tuple[str, str]:
    """The next major line after the covered one: (its first version, the new eligible_until_version)."""
    next_major = version_parse(eligible_until_version).major + 1
    return f"{next_major}.0.0", f"{next_major}.{LAST_MINOR}.{LAST_PATCH}"
