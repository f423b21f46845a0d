"""Shard function and account id grammar (R-9.1, R-1.1)."""

from __future__ import annotations

import pytest

from contracts.errors import InvalidMessage
from contracts.shard import SHARD_TEST_VECTORS, shard_of, validate_account_id


@pytest.mark.parametrize(("account_id", "shard_count", "expected"), SHARD_TEST_VECTORS)
def test_r9_1_the_published_shard_vectors_hold(
    account_id: str, shard_count: int, expected: int
) -> None:
    assert shard_of(account_id, shard_count) == expected


def test_r9_1_the_vectors_cover_the_usual_shard_counts() -> None:
    counts = {count for _, count, _ in SHARD_TEST_VECTORS}

    assert {1, 16, 64, 1024} <= counts


@pytest.mark.parametrize("character", [".", "_", "-"])
def test_r9_1_the_vectors_cover_every_punctuation_of_account_ids(character: str) -> None:
    assert any(character in account_id for account_id, _, _ in SHARD_TEST_VECTORS)


def test_r9_1_the_vectors_hold_only_valid_account_ids() -> None:
    for account_id, _, _ in SHARD_TEST_VECTORS:
        assert validate_account_id(account_id) == account_id


def test_r9_1_a_shard_count_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="shard_count"):
        shard_of("acct-1", 0)


@pytest.mark.parametrize(
    "account_id", ["a", "A", "0", "acct-1", "ACME.main_2", "x" * 64, "9-._", "a..b"]
)
def test_r1_1_a_valid_account_id_is_returned_unchanged(account_id: str) -> None:
    assert validate_account_id(account_id) == account_id


@pytest.mark.parametrize(
    "account_id",
    [
        "",
        "-acct",
        ".acct",
        "_acct",
        "acct 1",
        "acct:1",
        "acct{1}",
        "acct-1\n",
        "x" * 65,
        "\u00e9t\u00e9",
        "acct/1",
    ],
)
def test_r1_1_an_invalid_account_id_is_refused(account_id: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        validate_account_id(account_id)

    assert caught.value.reason == "invalid_field"
