"""The consumer's fast paths keep their promises (docs/decisions.md, "Delivery"): the decoded-state
cache follows every writer's version, a transaction that lost its WATCH leaves nothing cached,
writes send only changed fields, and shards processed at once give what one at a time gives."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from worker.store.codec import decode_state, encode_state

from .helpers import Harness, accounts_on_shard, drain, trade

pytestmark = pytest.mark.redis
MS = timedelta(milliseconds=1)


def _halt_behind_the_consumers_back(h: Harness, account: str) -> None:
    """Another writer (an operator job, say) changes the state and bumps its version."""
    key = h.keys.state(h.keys.shard(account), account)
    st = decode_state(h.admin.hgetall(key))
    h.admin.hset(key, mapping=encode_state(  # type: ignore[arg-type]
        replace(st, halted=True, version=st.version + 1)))


def test_a_state_changed_by_another_writer_is_read_again_not_taken_from_the_cache(
        h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    consumer = h.consumer()
    bot.publish_trade_closed(trade("acct-1", "t-1", "10.00", t0 + MS))
    drain(consumer)  # acct-1's state is cached now
    _halt_behind_the_consumers_back(h, "acct-1")
    version = h.state("acct-1").version

    bot.publish_trade_closed(trade("acct-1", "t-2", "10.00", t0 + 2 * MS))
    drain(consumer)

    state = h.state("acct-1")
    assert state.halted  # the other writer's change survived
    assert state.version == version + 1
    assert [t.trade_id for t in state.recent] == ["t-1", "t-2"]


def test_a_batch_whose_transaction_lost_its_watch_caches_nothing_and_is_decided_again(
        h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    bot.publish_trade_closed(trade("acct-1", "t-1", "10.00", t0 + MS))
    first = h.consumer()
    drain(first)
    first.release_all()
    calls: list[str] = []

    def interfere(point: str) -> None:
        if point == "before_exec" and not calls:
            calls.append(point)
            # after the batch was decided on version v, before its EXEC: v + 1 by someone else
            _halt_behind_the_consumers_back(h, "acct-1")

    consumer = h.consumer(fault_hook=interfere)
    bot.publish_trade_closed(trade("acct-1", "t-2", "10.00", t0 + 2 * MS))
    drain(consumer)  # fills the cache with v, then the first EXEC fails on the WATCH
    version = h.state("acct-1").version
    bot.publish_trade_closed(trade("acct-1", "t-3", "10.00", t0 + 3 * MS))
    drain(consumer)

    state = h.state("acct-1")
    assert calls == ["before_exec"]
    assert state.halted
    assert state.version == version + 1
    assert [t.trade_id for t in state.recent] == ["t-1", "t-2", "t-3"]


def test_a_commit_writes_only_the_state_fields_that_changed(h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    consumer = h.consumer()
    bot.publish_trade_closed(trade("acct-1", "t-1", "10.00", t0 + MS))
    drain(consumer)  # a cold state: the whole hash was read, so the next write is a diff
    key = h.keys.state(h.keys.shard("acct-1"), "acct-1")
    h.admin.hset(key, "marker", "untouched")
    before = h.admin.hgetall(key)
    monitor_log: list[Any] = []
    with h.admin.monitor() as monitor:
        bot.publish_trade_closed(trade("acct-1", "t-2", "10.00", t0 + 2 * MS))
        drain(consumer)
        h.admin.ping()  # a command of our own marks the end of what the worker sent
        for command in monitor.listen():
            monitor_log.append(command["command"])
            if command["command"] == "PING":
                break
    after = h.admin.hgetall(key)

    hsets = [c for c in monitor_log if c.startswith("HSET") and key in c]
    assert len(hsets) == 1
    written = {k for k in after if after[k] != before.get(k)}
    assert {"version", "updated_at", "core"} <= written
    assert "phase" not in hsets[0].split(key, 1)[1]  # unchanged public fields are not resent
    assert after["marker"] == "untouched"
    assert decode_state(after).version == decode_state(before).version + 1


def test_shards_processed_at_once_give_what_one_shard_at_a_time_gives(h: Harness) -> None:
    keys = h.bootstrap()
    accounts = [a for k in range(4) for a in accounts_on_shard(keys, k, 3)]
    for a in accounts:
        h.add_account(a)
    t0 = h.now()
    bot = h.bot()
    for i in range(60):
        a = accounts[(i * 7) % len(accounts)]
        bot.publish_trade_closed(trade(a, f"t-{i}", f"{(i % 9) - 4}.50", t0 + (i + 1) * MS))

    def outcome() -> dict[str, Any]:
        return {a: (h.state(a).current.trades, h.state(a).current.pnl,
                    [t.trade_id for t in h.state(a).recent]) for a in accounts}

    threaded = h.consumer(parallel=4)
    drain(threaded)  # 60 entries, less than a batch: the shards go to the threads
    assert threaded._pool is not None
    threaded.release_all()
    parallel = outcome()
    h.admin.flushall()
    h.bootstrap()
    for a in accounts:
        h.add_account(a)
    for i in range(60):
        a = accounts[(i * 7) % len(accounts)]
        bot.publish_trade_closed(trade(a, f"t-{i}", f"{(i % 9) - 4}.50", t0 + (i + 1) * MS))
    drain(h.consumer(parallel=1))

    assert outcome() == parallel
    assert sum(n for n, _, _ in parallel.values()) == 60
