"""The primary keys (billing_project.models.BaseModel): version 7 UUIDs, ordered by time, unique
across forked workers."""

import os
import time
import uuid

import pytest

from billing_project.models import IdempotencyKey

uuid7 = IdempotencyKey._meta.pk.default


def test_a_key_is_a_version_7_uuid_beginning_with_the_time_in_milliseconds():
    before = time.time_ns() // 1_000_000
    key = uuid7()
    after = time.time_ns() // 1_000_000

    assert (key.version, key.variant) == (7, uuid.RFC_4122)
    assert before <= key.int >> 80 <= after


def test_keys_of_later_milliseconds_sort_after_earlier_ones():
    earlier = [uuid7() for _ in range(100)]
    time.sleep(0.002)
    later = [uuid7() for _ in range(100)]

    assert max(earlier) < min(later)


def test_the_keys_one_process_makes_are_unique_and_in_order():
    keys = [uuid7() for _ in range(50_000)]

    assert len(set(keys)) == len(keys)
    assert keys == sorted(keys)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_workers_make_different_keys():
    uuid7()  # whatever state key making keeps exists before the fork, as in a preloaded server
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(reader)
        os.write(writer, b"".join(uuid7().bytes for _ in range(1_000)))
        os._exit(0)
    os.close(writer)
    parent_keys = {uuid7() for _ in range(1_000)}
    received = b""
    while chunk := os.read(reader, 16_000):
        received += chunk
    os.close(reader)
    os.waitpid(child, 0)
    child_keys = {uuid.UUID(bytes=received[i : i + 16]) for i in range(0, len(received), 16)}

    assert len(child_keys) == 1_000
    assert not parent_keys & child_keys
