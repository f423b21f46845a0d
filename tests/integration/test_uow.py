"""The unit of work discards unless committed (STYLE habit 5, SPEC R-10.1, R-10.2).

`transact` WATCHes the lease and the given keys, gathers, stages and commits in one MULTI/EXEC;
these tests prove no-commit, exception in gather, a concurrent change and a lost lease.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis
from redis.client import Pipeline

from worker.domain.decide import Emitted, Record
from worker.store.keys import Keys
from worker.store.uow import (
    Contention,
    LeaseLost,
    Staging,
    round_trip,
    transact,
    transact_reads,
)

from .helpers import PREFIX, Harness, read_history

pytestmark = pytest.mark.redis
ACCOUNT = "acct-1"
K = Keys(PREFIX, 16).shard(ACCOUNT)
OWNER = "worker-a"
AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


@pytest.fixture
def keys() -> Keys:
    return Keys(PREFIX, 16)


@pytest.fixture
def worker(h: Harness) -> redis.Redis:
    return h.client("worker", decode_responses=True)


def counter_key(keys: Keys) -> str:
    return keys.state(K, ACCOUNT)


def written(admin: redis.Redis, keys: Keys) -> dict[str, object]:
    """Everything a staged transaction in these tests could have written."""
    return {
        "state": admin.hgetall(keys.state(K, ACCOUNT)),
        "history": admin.xlen(keys.history(K, ACCOUNT)),
        "events": admin.xlen(keys.events(K)),
        "deadletter": admin.xlen(keys.deadletter(K)),
    }


def full_staging(keys: Keys, value: str) -> Staging:
    st = Staging(keys, K)
    st.raw(lambda p: p.hset(keys.state(K, ACCOUNT), "n", value))
    st.history(ACCOUNT, Record("note", {"n": value}), AT, "test")
    st.event(ACCOUNT, Emitted("session_closed", AT, AT.date(), {"n": value}), AT, "test")
    st.deadletter(reason="x", error="y", source_id="0-1", type_="t", data="{}",
                  account_id=ACCOUNT)
    return st


def test_a_committed_staging_writes_every_part(h: Harness, keys: Keys,
                                               worker: redis.Redis) -> None:
    transact(worker, [counter_key(keys)], lambda pipe: None,
             lambda _: full_staging(keys, "1"))

    assert written(h.admin, keys) == {"state": {"n": "1"}, "history": 1, "events": 1,
                                      "deadletter": 1}


def test_nothing_is_written_when_stage_raises_after_staging(h: Harness, keys: Keys,
                                                           worker: redis.Redis) -> None:
    def stage(_: None) -> Staging:
        full_staging(keys, "1")  # staged, never committed
        raise RuntimeError("decide failed")

    with pytest.raises(RuntimeError, match="decide failed"):
        transact(worker, [counter_key(keys)], lambda pipe: None, stage)

    assert written(h.admin, keys) == {"state": {}, "history": 0, "events": 0, "deadletter": 0}
    assert worker.ping()  # the connection went back clean (no WATCH or MULTI left behind)
    transact(worker, [counter_key(keys)], lambda pipe: None, lambda _: full_staging(keys, "2"))
    assert written(h.admin, keys)["state"] == {"n": "2"}


def test_an_exception_in_gather_writes_nothing(h: Harness, keys: Keys,
                                               worker: redis.Redis) -> None:
    staged = []

    def gather(pipe: Pipeline) -> None:
        pipe.hgetall(counter_key(keys))
        raise ValueError("state unreadable")

    def stage(_: None) -> Staging:
        staged.append(True)
        return full_staging(keys, "1")

    with pytest.raises(ValueError, match="state unreadable"):
        transact(worker, [counter_key(keys)], gather, stage)

    assert staged == []
    assert written(h.admin, keys) == {"state": {}, "history": 0, "events": 0, "deadletter": 0}


def test_a_concurrent_change_between_gather_and_exec_is_retried_on_fresh_data(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    key = counter_key(keys)
    h.admin.hset(key, "n", "1")
    seen: list[int] = []

    def gather(pipe: Pipeline) -> int:
        value = int(pipe.hget(key, "n") or 0)
        seen.append(value)
        if len(seen) == 1:
            h.admin.hset(key, "n", "100")  # another writer commits after our read
        return value

    def stage(value: int) -> Staging:
        st = Staging(keys, K)
        st.raw(lambda p: p.hset(key, "n", str(value + 1)))
        st.history(ACCOUNT, Record("note", {"from": value}), AT, "test")
        return st

    transact(worker, [key], gather, stage)

    assert seen == [1, 100]
    assert h.admin.hget(key, "n") == "101"  # not 2: the stale attempt wrote nothing
    assert [e.body for e in read_history(h.admin, keys, ACCOUNT)] == [
        {"caused_by": "test", "from": 100, "occurred_at": AT.isoformat()}]


def test_endless_contention_gives_up_without_writing(h: Harness, keys: Keys,
                                                     worker: redis.Redis) -> None:
    key = counter_key(keys)
    h.admin.hset(key, "n", "0")

    def gather(pipe: Pipeline) -> None:
        h.admin.hincrby(key, "n", 1)  # someone else wins every time

    with pytest.raises(Contention):
        transact(worker, [key], gather, lambda _: full_staging(keys, "mine"), attempts=3)

    assert h.admin.hget(key, "n") == "3"
    assert written(h.admin, keys)["history"] == 0


def test_a_lease_held_by_another_owner_raises_lease_lost_and_writes_nothing(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    h.admin.set(keys.lease(K), "worker-b", px=10_000)
    gathered = []

    with pytest.raises(LeaseLost):
        transact(worker, [counter_key(keys)], lambda pipe: gathered.append(True),
                 lambda _: full_staging(keys, "1"), lease_key=keys.lease(K), owner=OWNER)

    assert gathered == []
    assert written(h.admin, keys) == {"state": {}, "history": 0, "events": 0, "deadletter": 0}


def test_an_expired_lease_raises_lease_lost(h: Harness, keys: Keys,
                                            worker: redis.Redis) -> None:
    with pytest.raises(LeaseLost):
        transact(worker, [counter_key(keys)], lambda pipe: None,
                 lambda _: full_staging(keys, "1"), lease_key=keys.lease(K), owner=OWNER)

    assert written(h.admin, keys)["events"] == 0


def test_a_lease_taken_over_between_gather_and_exec_writes_nothing(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    h.admin.set(keys.lease(K), OWNER, px=10_000)
    attempts = []

    def gather(pipe: Pipeline) -> None:
        attempts.append(True)
        # our lease expires and another worker takes the shard while we decide
        h.admin.set(keys.lease(K), "worker-b", px=10_000)

    with pytest.raises(LeaseLost):
        transact(worker, [counter_key(keys)], gather, lambda _: full_staging(keys, "1"),
                 lease_key=keys.lease(K), owner=OWNER)

    assert attempts == [True]  # EXEC failed on the watched lease; the retry saw the new owner
    assert written(h.admin, keys) == {"state": {}, "history": 0, "events": 0, "deadletter": 0}


def test_a_held_lease_lets_the_transaction_commit(h: Harness, keys: Keys,
                                                  worker: redis.Redis) -> None:
    h.admin.set(keys.lease(K), OWNER, px=10_000)

    transact(worker, [counter_key(keys)], lambda pipe: None, lambda _: full_staging(keys, "1"),
             lease_key=keys.lease(K), owner=OWNER)

    assert written(h.admin, keys)["history"] == 1


# -- transact_reads: WATCH, the lease check and the reads in one round trip ----------------------


def test_reads_sent_with_the_watch_are_guarded_by_it_and_retried_on_fresh_data(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    key = counter_key(keys)
    h.admin.set(keys.lease(K), OWNER, px=10_000)
    h.admin.hset(key, "n", "1")
    seen: list[int] = []

    def parse(pipe: Pipeline, replies: list[object]) -> int:
        [value] = replies
        seen.append(int(str(value)))
        if len(seen) == 1:
            h.admin.hset(key, "n", "100")  # another writer commits after our read
        return seen[-1]

    def stage(value: int) -> Staging:
        st = Staging(keys, K)
        st.raw(lambda p: p.hset(key, "n", str(value + 1)))
        return st

    transact_reads(worker, [key], [("HGET", key, "n")], parse, stage,
                   lease_key=keys.lease(K), owner=OWNER)

    assert seen == [1, 100]
    assert h.admin.hget(key, "n") == "101"  # not 2: the stale attempt wrote nothing


def test_reads_sent_with_the_watch_get_redis_pys_reply_types_and_a_further_read_works(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    key = counter_key(keys)
    h.admin.set(keys.lease(K), OWNER, px=10_000)
    h.admin.hset(key, mapping={"a": "1", "b": "2"})
    got: list[object] = []

    def parse(pipe: Pipeline, replies: list[object]) -> None:
        got.extend(replies)
        got.extend(round_trip(pipe, [("HGET", key, "b")]))  # still on the watching connection

    transact_reads(worker, [key], [("TIME",), ("HGETALL", key), ("HMGET", key, "a", "x")],
                   parse, lambda _: Staging(keys, K), lease_key=keys.lease(K), owner=OWNER)

    now, everything, some, again = got
    assert isinstance(now, tuple)  # TIME's (seconds, microseconds)
    assert len(now) == 2
    assert everything == {"a": "1", "b": "2"}
    assert some == ["1", None]
    assert again == "2"


def test_an_error_reply_among_the_reads_raises_and_leaves_the_connection_usable(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    key = counter_key(keys)
    h.admin.set(keys.lease(K), OWNER, px=10_000)
    not_a_hash = keys.state(K, "other")
    h.admin.set(not_a_hash, "x")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        transact_reads(worker, [key], [("HGETALL", not_a_hash), ("HGET", key, "n")],
                       lambda pipe, replies: None, lambda _: full_staging(keys, "no"),
                       lease_key=keys.lease(K), owner=OWNER)
    assert written(h.admin, keys)["history"] == 0

    # every reply was read: the pooled connection is in step for the next transaction
    transact_reads(worker, [key], [("HGET", key, "n")], lambda pipe, replies: replies,
                   lambda _: full_staging(keys, "1"), lease_key=keys.lease(K), owner=OWNER)
    assert written(h.admin, keys)["history"] == 1
    assert worker.ping()


def test_transact_reads_refuses_to_commit_without_the_lease(
        h: Harness, keys: Keys, worker: redis.Redis) -> None:
    h.admin.set(keys.lease(K), "worker-b", px=10_000)
    parsed = []

    with pytest.raises(LeaseLost):
        transact_reads(worker, [counter_key(keys)], [("TIME",)],
                       lambda pipe, replies: parsed.append(replies),
                       lambda _: full_staging(keys, "1"), lease_key=keys.lease(K), owner=OWNER)

    assert parsed == []
    assert written(h.admin, keys) == {"state": {}, "history": 0, "events": 0, "deadletter": 0}
