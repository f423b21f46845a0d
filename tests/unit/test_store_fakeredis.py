"""Fast unit tests of the store layer on fakeredis (the same behaviours run against a real
redis-server in tests/integration/test_uow.py; these are in addition, never instead)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal

import fakeredis
import pytest
import redis
from redis.client import Pipeline

from worker.domain.decide import Record, new_account
from worker.domain.model import Registration
from worker.domain.policy import DEFAULT_POLICY
from worker.store.codec import decode_state
from worker.store.keys import CONSUMER_GROUP, Keys
from worker.store.ledger import cleanup_fields, read_ledger
from worker.store.uow import Contention, LeaseLost, Staging, transact

KEYS = Keys("phase", 16)
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
ACCOUNT = "acct-1"
K = KEYS.shard(ACCOUNT)


@pytest.fixture
def r() -> Iterator[redis.Redis]:
    client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.close()


def inbox_entry(r: redis.Redis) -> str:
    r.xgroup_create(KEYS.inbox(K), CONSUMER_GROUP, id="0", mkstream=True)
    entry_id = r.xadd(KEYS.inbox(K), {"type": "trade_closed", "data": "{}"})
    r.xreadgroup(CONSUMER_GROUP, "shard", {KEYS.inbox(K): ">"})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def full_staging(entry_id: str) -> Staging:
    st = new_account(Registration(ACCOUNT, "redis", "USD", NOW), DEFAULT_POLICY)
    staging = Staging(KEYS, K)
    staging.state(st)
    staging.history(ACCOUNT, Record("registered", {"by": "test"}), NOW, entry_id)
    staging.ack(entry_id)
    return staging


def test_r10_2_state_history_and_ack_commit_together(r: redis.Redis) -> None:
    entry_id = inbox_entry(r)

    transact(r, [KEYS.state(K, ACCOUNT)], lambda pipe: None, lambda _: full_staging(entry_id))

    raw = {k.decode(): v.decode() for k, v in r.hgetall(KEYS.state(K, ACCOUNT)).items()}
    assert decode_state(raw).account_id == ACCOUNT
    assert r.xlen(KEYS.history(K, ACCOUNT)) == 1
    assert r.xpending(KEYS.inbox(K), CONSUMER_GROUP)["pending"] == 0


def test_r10_2_a_stage_that_raises_writes_nothing(r: redis.Redis) -> None:
    entry_id = inbox_entry(r)

    def stage(_: None) -> Staging:
        full_staging(entry_id)
        raise RuntimeError("bug while staging")

    with pytest.raises(RuntimeError):
        transact(r, [KEYS.state(K, ACCOUNT)], lambda pipe: None, stage)

    assert not r.exists(KEYS.state(K, ACCOUNT))
    assert r.xlen(KEYS.history(K, ACCOUNT)) == 0
    assert r.xpending(KEYS.inbox(K), CONSUMER_GROUP)["pending"] == 1


def test_r10_2_a_concurrent_change_to_a_watched_key_is_retried_on_fresh_data(
        r: redis.Redis) -> None:
    counter = "phase:{s0}:counter"
    r.set(counter, 1)
    seen: list[int] = []

    def gather(pipe: Pipeline) -> int:
        value = int(pipe.get(counter) or 0)
        seen.append(value)
        if len(seen) == 1:
            r.set(counter, 100)  # another writer, between our read and our EXEC
        return value

    def stage(value: int) -> Staging:
        staging = Staging(KEYS, 0)
        staging.raw(lambda p: p.set(counter, value + 1))
        return staging

    transact(r, [counter], gather, stage)

    assert seen == [1, 100]
    assert int(r.get(counter) or 0) == 101


def test_r10_2_endless_contention_gives_up_without_writing(r: redis.Redis) -> None:
    key = "phase:{s0}:busy"

    def gather(pipe: Pipeline) -> None:
        r.incr(key)  # every attempt loses its WATCH

    def stage(_: None) -> Staging:
        staging = Staging(KEYS, 0)
        staging.raw(lambda p: p.set("phase:{s0}:written", 1))
        return staging

    with pytest.raises(Contention):
        transact(r, [key], gather, stage, attempts=3)

    assert not r.exists("phase:{s0}:written")


def test_r10_1_a_worker_without_the_lease_cannot_commit(r: redis.Redis) -> None:
    r.set(KEYS.lease(K), "someone-else")
    entry_id = inbox_entry(r)

    with pytest.raises(LeaseLost):
        transact(r, [KEYS.state(K, ACCOUNT)], lambda pipe: None,
                 lambda _: full_staging(entry_id), lease_key=KEYS.lease(K), owner="me")

    assert not r.exists(KEYS.state(K, ACCOUNT))


def test_staging_writes_only_the_fields_that_changed(r: redis.Redis) -> None:
    st = new_account(Registration(ACCOUNT, "redis", "USD", NOW), DEFAULT_POLICY)
    first = Staging(KEYS, K)
    held = first.state(st)
    transact(r, [KEYS.state(K, ACCOUNT)], lambda pipe: None, lambda _: first)
    r.hset(KEYS.state(K, ACCOUNT), "marker", "kept")

    second = Staging(KEYS, K)
    second.state(st, {"dead_letters": "1"}, previous=held)
    transact(r, [KEYS.state(K, ACCOUNT)], lambda pipe: None, lambda _: second)

    assert len(second.ops) == 1  # one HSET, of the changed field only
    assert r.hget(KEYS.state(K, ACCOUNT), "dead_letters") == b"1"
    assert r.hget(KEYS.state(K, ACCOUNT), "marker") == b"kept"


def test_r4_9_the_ledger_reads_decisions_slots_denials_and_exits(r: redis.Redis) -> None:
    key = KEYS.entries(K, ACCOUNT)
    r.hset(key, mapping={
        "d:dec-1": json.dumps({"phase": "proof", "size": "100.00", "day": "2026-03-02"}),
        "slot:2026-03-02": "proof|dec-1",
        "deny:2026-03-02:daily_limit": json.dumps({"reason": "daily_limit", "at": 1.0}),
        "denyn:2026-03-02:daily_limit": "3",
        "exit:2026-03-02:req-9": json.dumps({"at": 2.0, "request_id": "req-9"}),
        "d:broken": "not json",
    })

    view = read_ledger(r.hgetall(key))

    assert view.decisions["dec-1"].size == Decimal("100.00")
    assert "broken" not in view.decisions  # unreadable fields are skipped, never fatal
    day = view.days[date(2026, 3, 2)]
    assert day.live_entry_phase == "proof"
    assert day.denial_counts == (("daily_limit", 3),)
    assert [e["request_id"] for e in day.emergency_exits] == ["req-9"]


def test_r9_2_ledger_cleanup_drops_closed_days_cited_and_expired_decisions(
        r: redis.Redis) -> None:
    key = KEYS.entries(K, ACCOUNT)
    r.hset(key, mapping={
        "d:old": json.dumps({"phase": "proof", "size": "100", "day": "2026-01-02"}),
        "d:cited": json.dumps({"phase": "proof", "size": "100", "day": "2026-03-02"}),
        "d:open": json.dumps({"phase": "proof", "size": "100", "day": "2026-03-03"}),
        "slot:2026-03-02": "proof|cited", "r:2026-03-03:x": "{}",
    })

    drop = cleanup_fields(r.hgetall(key), (date(2026, 3, 2),), ("cited",), date(2026, 3, 3), 30)

    assert sorted(drop) == ["d:cited", "d:old", "slot:2026-03-02"]
