"""Key layout (R-9.2) and hash tags (R-9.1)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from contracts import keys
from contracts.errors import InvalidMessage
from contracts.shard import shard_of

SHARD_KEYS: list[tuple[Callable[[str, int], str], str]] = [
    (keys.registry, "phase:{s3}:accounts"),
    (keys.inbox, "phase:{s3}:inbox"),
    (keys.events, "phase:{s3}:events"),
    (keys.deadletter, "phase:{s3}:deadletter"),
    (keys.overrides, "phase:{s3}:overrides"),
    (keys.lease, "phase:{s3}:lease"),
    (keys.calendar, "phase:{s3}:calendar"),
]
ACCOUNT_KEYS: list[tuple[Callable[[str, int, str], str], str]] = [
    (keys.state, "phase:{s3}:a:acct-1:state"),
    (keys.history, "phase:{s3}:a:acct-1:history"),
    (keys.entries, "phase:{s3}:a:acct-1:entries"),
    (keys.account_calendar, "phase:{s3}:a:acct-1:calendar"),
]


@pytest.mark.parametrize(
    ("key", "expected"),
    [(keys.meta, "phase:meta"), (keys.policy, "phase:policy"), (keys.ops_kdf, "phase:ops:kdf")],
)
def test_r9_2_deployment_keys_have_their_names(key: Callable[[str], str], expected: str) -> None:
    assert key("phase") == expected


@pytest.mark.parametrize(("key", "expected"), SHARD_KEYS)
def test_r9_2_shard_keys_have_their_names(key: Callable[[str, int], str], expected: str) -> None:
    assert key("phase", 3) == expected


@pytest.mark.parametrize(("key", "expected"), ACCOUNT_KEYS)
def test_r9_2_account_keys_have_their_names(
    key: Callable[[str, int, str], str], expected: str
) -> None:
    assert key("phase", 3, "acct-1") == expected


def test_r9_1_every_key_of_a_shard_carries_its_hash_tag() -> None:
    names = [key("p", 12) for key, _ in SHARD_KEYS] + [key("p", 12, "a") for key, _ in ACCOUNT_KEYS]

    assert all(name.startswith("p:" + keys.shard_tag(12) + ":") for name in names)


def test_r9_2_the_inbox_consumer_group_is_phaseguard() -> None:
    assert keys.CONSUMER_GROUP == "phaseguard"


@pytest.mark.parametrize("prefix", ["phase", "phase-test_1.2", "A"])
def test_a_valid_prefix_is_returned_unchanged(prefix: str) -> None:
    assert keys.validate_prefix(prefix) == prefix


@pytest.mark.parametrize("prefix", ["", "phase:x", "{phase}", "phase ", "phase\n", "ph\u00e4se"])
def test_an_invalid_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        keys.validate_prefix(prefix)


def test_a_keyspace_places_an_account_s_keys_in_its_shard() -> None:
    space = keys.KeySpace("phase", 16)
    shard = shard_of("acct-1", 16)

    assert space.state("acct-1") == keys.state("phase", shard, "acct-1")
    assert space.inbox("acct-1") == keys.inbox("phase", shard)
    assert space.registry("acct-1") == keys.registry("phase", shard)


def test_a_keyspace_lists_the_events_streams_of_every_shard_in_order() -> None:
    space = keys.KeySpace("phase", 3)

    assert space.all_events() == ("phase:{s0}:events", "phase:{s1}:events", "phase:{s2}:events")


def test_a_keyspace_refuses_an_invalid_account_id() -> None:
    with pytest.raises(InvalidMessage) as caught:
        keys.KeySpace("phase", 16).state("acct:1")

    assert caught.value.reason == "invalid_field"


def test_a_keyspace_refuses_an_invalid_prefix() -> None:
    with pytest.raises(ValueError, match="prefix"):
        keys.KeySpace("phase:x", 16)


def test_a_keyspace_refuses_a_shard_count_below_one() -> None:
    with pytest.raises(ValueError, match="shard_count"):
        keys.KeySpace("phase", 0)
