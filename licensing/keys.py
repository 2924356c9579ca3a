"""License keys: `REPHLO-XXXX-XXXX-XXXX-XXXX`, pure functions (no database).

The 16 characters after the prefix come from a 31-character alphabet without the look-alikes
0/O and 1/I/L. The first 15 are drawn from `secrets` (31**15, about 2**74 keys); the 16th is a check
character: the weighted sum of all 16 values, weights 1..16, is 0 modulo 31. Because 31 is prime and
every weight is non-zero and distinct modulo 31, any single mistyped character and any swap of two
characters changes the sum, so a typo is refused before any database lookup.
"""

import secrets

PREFIX = "REPHLO"
ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
MODULUS = len(ALPHABET)  # 31, prime: see the module docstring
BODY_LENGTH = 16
GROUP_LENGTH = 4
KEY_LENGTH = len(PREFIX) + BODY_LENGTH + BODY_LENGTH // GROUP_LENGTH  # 26: four hyphens

_VALUES = {character: value for value, character in enumerate(ALPHABET)}


def _weighted_sum(characters: str) -> int:
    return sum(weight * _VALUES[character] for weight, character in enumerate(characters, start=1))


def key_check_character(payload: str) -> str:
    """The check character that completes 15 payload characters (weight 16 is inverted modulo 31)."""
    if len(payload) != BODY_LENGTH - 1 or any(character not in _VALUES for character in payload):
        raise ValueError("The payload must be 15 characters of the key alphabet.")
    inverse_of_last_weight = pow(BODY_LENGTH, -1, MODULUS)
    return ALPHABET[(-_weighted_sum(payload) * inverse_of_last_weight) % MODULUS]


def key_format(body: str) -> str:
    """`REPHLO-` and the 16 body characters in groups of four."""
    groups = [body[start : start + GROUP_LENGTH] for start in range(0, BODY_LENGTH, GROUP_LENGTH)]
    return "-".join([PREFIX, *groups])


def key_from_payload(payload: str) -> str:
    """A complete key for 15 payload characters (deterministic: factories and tests use it)."""
    return key_format(payload + key_check_character(payload))


def key_generate() -> str:
    """A fresh random key with its check character."""
    return key_from_payload("".join(secrets.choice(ALPHABET) for _ in range(BODY_LENGTH - 1)))


def key_normalize(raw: str) -> str:
    """What a person typed, as stored: surrounding blanks removed, upper-cased."""
    return raw.strip().upper()


def key_is_valid(key: str) -> bool:
    """Shape, alphabet and check character of a normalized key; no lookup."""
    if len(key) != KEY_LENGTH:
        return False
    prefix, *groups = key.split("-")
    if prefix != PREFIX or len(groups) != BODY_LENGTH // GROUP_LENGTH:
        return False
    if any(len(group) != GROUP_LENGTH for group in groups):
        return False
    body = "".join(groups)
    if any(character not in _VALUES for character in body):
        return False
    return _weighted_sum(body) % MODULUS == 0
