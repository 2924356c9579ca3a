import re

import pytest
from django.db import IntegrityError

from licensing import keys, services
from licensing.models import LicenseStatus, PerpetualLicense
from licensing.tests.factories import PerpetualLicenseFactory

KEY_SHAPE = re.compile(r"^REPHLO-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}(-[23456789ABCDEFGHJKMNPQRSTUVWXYZ]{4}){3}$")
SAMPLE = [keys.key_generate() for _ in range(40)]


def body_of(key: str) -> str:
    return key.removeprefix("REPHLO-").replace("-", "")


def test_alphabet_has_no_look_alike_characters():
    assert not set("0O1IL") & set(keys.ALPHABET)
    assert len(set(keys.ALPHABET)) == len(keys.ALPHABET) == 31


@pytest.mark.parametrize("key", SAMPLE[:10])
def test_generated_key_has_the_format_and_a_valid_check_character(key):
    assert KEY_SHAPE.match(key)
    assert len(key) == keys.KEY_LENGTH == 26
    assert keys.key_is_valid(key)


def test_generated_keys_are_distinct():
    assert len({keys.key_generate() for _ in range(2000)}) == 2000


@pytest.mark.parametrize("key", SAMPLE)
def test_every_single_character_substitution_is_caught(key):
    body = body_of(key)
    typos = [
        keys.key_format(body[:position] + other + body[position + 1 :])
        for position in range(len(body))
        for other in keys.ALPHABET + "0O1IL"
        if other != body[position]
    ]

    assert len(typos) == 16 * 35
    assert not any(keys.key_is_valid(typo) for typo in typos)


@pytest.mark.parametrize("key", SAMPLE)
def test_every_swap_of_two_different_characters_is_caught(key):
    body = body_of(key)
    for first in range(len(body)):
        for second in range(first + 1, len(body)):
            if body[first] == body[second]:
                continue
            swapped = list(body)
            swapped[first], swapped[second] = swapped[second], swapped[first]
            assert not keys.key_is_valid(keys.key_format("".join(swapped)))


@pytest.mark.parametrize(
    "typed",
    ["REPHLO-ABCD-EFGH-JKMN-PQR", "REPHLO-ABCD-EFGH-JKMN-PQRST", "REPHLA-ABCD-EFGH-JKMN-PQRS", "", "REPHLO ABCD"],
)
def test_malformed_keys_are_invalid(typed):
    assert not keys.key_is_valid(keys.key_normalize(typed))


def test_keys_are_case_insensitive_and_trimmed_on_input():
    key = SAMPLE[0]

    assert keys.key_is_valid(keys.key_normalize(f"  {key.lower()}\n"))
    assert keys.key_normalize(f" {key.lower()} ") == key


def test_check_character_is_deterministic():
    assert keys.key_from_payload("ABCDEFGHJKMNPQR") == keys.key_from_payload("ABCDEFGHJKMNPQR")
    with pytest.raises(ValueError):
        keys.key_check_character("ABC")


@pytest.mark.django_db
def test_factory_keys_are_valid_and_distinct():
    licenses = PerpetualLicenseFactory.create_batch(5)

    assert all(keys.key_is_valid(license_.license_key) for license_ in licenses)
    assert len({license_.license_key for license_ in licenses}) == 5


@pytest.mark.django_db
def test_the_database_refuses_a_second_license_with_the_same_key():
    existing = PerpetualLicenseFactory()

    with pytest.raises(IntegrityError):
        PerpetualLicenseFactory(license_key=existing.license_key)


@pytest.mark.django_db
def test_a_key_collision_is_retried_with_a_new_key(user, staff_user, monkeypatch):
    taken = PerpetualLicenseFactory().license_key
    fresh = keys.key_generate()
    drawn = iter([taken, fresh])
    monkeypatch.setattr(keys, "key_generate", lambda: next(drawn))

    issued = services.license_issue(user=user, actor=staff_user)

    assert issued.license_key == fresh
    assert issued.status == LicenseStatus.ACTIVE
    assert PerpetualLicense.objects.filter(license_key=taken).count() == 1
