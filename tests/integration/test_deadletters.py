"""Dead letters end to end (R-9.3, R-10.3, R-10.6, R-7.7b): the real consumer on a real Redis.

Every dead-letter reason is produced between two valid messages of the same shard: the bad one
lands in the dead-letter stream with its reason and payload, its neighbours are applied and
nothing stays pending. A registered account's dead letter degrades it until an operator requeues
or discards the last one. A message that keeps failing unexpectedly is dead-lettered after five
attempts while the rest of its batch is applied.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import redis
import structlog

import worker.consumer as consumer_module
from contracts.client import PhaseguardClient
from contracts.errors import REASONS
from contracts.messages import TradeClosed
from worker import jobs
from worker.consumer import ShardConsumer
from worker.redis_acl import Role
from worker.store.keys import Keys

from .builders_b import (
    CAL,
    MINUTE,
    PREFIX,
    applied_trade_ids,
    consumer,
    deadletters,
    drain,
    events,
    history,
    ids_in_shard,
    init_deployment,
    iso,
    now_of,
    pending,
    public,
    register,
    set_state,
    text,
    trade,
    xadd,
)

pytestmark = pytest.mark.redis


@dataclass
class World:
    """Four accounts in one shard: healthy `main` (in proof), a retired one, one whose state is
    missing, and an id nobody registered."""

    admin: redis.Redis
    worker: redis.Redis
    keys: Keys
    shard: int
    main: str
    retired: str
    stateless: str
    stranger: str
    now: datetime
    consumer: ShardConsumer
    entries: PhaseguardClient

    def send(self, type_: str, data: str | bytes | dict[str, Any]) -> str:
        return xadd(self.admin, self.keys, self.shard, type_, data)

    def dead(self) -> list[tuple[str, dict[str, str]]]:
        return deadletters(self.admin, self.keys, self.shard)

    def degraded(self, account_id: str) -> bool:
        return public(self.admin, self.keys, account_id)["degraded"] == "1"

    def degraded_events(self) -> list[dict[str, Any]]:
        return [e for e in events(self.admin, self.keys, self.shard)
                if e["type"] == "account_degraded"]

    def job(self, name: str, entry_id: str) -> dict[str, Any]:
        fn = {"requeue": jobs.deadletter_requeue, "discard": jobs.deadletter_discard}[name]
        return fn({"shard": self.shard, "entry_id": entry_id, "operator_id": "alice"},
                  client=self.worker, prefix=PREFIX)


@pytest.fixture
def world(redis_admin: redis.Redis, role_url: Callable[[Role], str]) -> Iterator[World]:
    worker = redis.Redis.from_url(role_url("worker"))
    bot = redis.Redis.from_url(role_url("bot"))
    try:
        keys = init_deployment(worker)
        shard = 3
        main, retired, stateless, stranger = ids_in_shard(keys, shard, 4, "dl")
        for acc in (main, retired, stateless):
            register(worker, acc)
        set_state(redis_admin, keys, main, phase="proof", position_size=Decimal("100.00"))
        jobs.accounts_retire({"account_id": retired, "operator_id": "t"}, client=worker,
                             prefix=PREFIX)
        redis_admin.delete(keys.state(shard, stateless))
        yield World(redis_admin, worker, keys, shard, main, retired, stateless, stranger,
                    now_of(redis_admin), consumer(worker, keys), PhaseguardClient(bot, PREFIX))
    finally:
        worker.close()
        bot.close()


# -- one bad message between two good ones, for every reason ------------------------------------


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data)


def _saturday(w: World) -> str:
    day = w.now.date()
    while CAL.is_trading_day(day) or day.weekday() != 5:
        day += timedelta(days=1)
    return (day - timedelta(days=7)).isoformat()


@dataclass(frozen=True)
class Bad:
    reason: str
    type_: str
    data: Callable[[World], str]
    degrades: bool  # the dead letter names the registered, healthy account `main`


def _bad_trade(**extra: Any) -> Callable[[World], str]:
    return lambda w: _json(trade(w.main, "bad", w.now - MINUTE, **extra))


def _without(field: str) -> Callable[[World], str]:
    def build(w: World) -> str:
        data = trade(w.main, "bad", w.now - MINUTE)
        del data[field]
        return _json(data)

    return build


BAD = [
    # the codec's reasons (contracts.errors.REASONS)
    Bad("malformed_json", "trade_closed", lambda w: '{"account_id": "' + w.main + '", "trade',
        False),
    Bad("unknown_field", "trade_closed", _bad_trade(leverage="10"), True),
    Bad("unknown_type", "trade_opened", _bad_trade(), True),
    Bad("invalid_field", "trade_closed", _bad_trade(mode="short"), True),
    Bad("naive_timestamp", "trade_closed",
        lambda w: _json({**trade(w.main, "bad", w.now), "closed_at": "2026-01-05T10:00:00"}),
        True),
    Bad("non_finite_number", "trade_closed",
        lambda w: _json(trade(w.main, "bad", w.now - MINUTE)).replace('"1.00"', "NaN"), True),
    Bad("out_of_range", "trade_closed", _bad_trade(pnl="1e20"), True),
    Bad("too_large", "trade_closed", _bad_trade(note="x" * 70_000), True),
    Bad("missing_field", "trade_closed", _without("pnl"), True),
    Bad("unsupported_schema_version", "trade_closed", _bad_trade(schema_version=2), True),
    # the worker's reasons
    Bad("unknown_account", "trade_closed",
        lambda w: _json(trade(w.stranger, "bad", w.now - MINUTE)), False),
    Bad("account_retired", "trade_closed",
        lambda w: _json(trade(w.retired, "bad", w.now - MINUTE)), False),
    Bad("state_unavailable", "trade_closed",
        lambda w: _json(trade(w.stateless, "bad", w.now - MINUTE)), False),
    Bad("currency_mismatch", "trade_closed", _bad_trade(currency="EUR"), True),
    Bad("future_timestamp", "trade_closed",
        lambda w: _json(trade(w.main, "bad", w.now + timedelta(hours=1))), True),
    Bad("too_late", "trade_closed",
        lambda w: _json(trade(w.main, "bad", w.now - timedelta(days=30))), True),
    Bad("conflicting_duplicate", "trade_closed",
        lambda w: _json(trade(w.main, "v1", w.now - 2 * MINUTE, pnl="2.00")), True),
    Bad("not_a_trading_day", "session_ended",
        lambda w: _json({"schema_version": 1, "account_id": w.main, "trading_day": _saturday(w),
                         "ended_at": iso(w.now - MINUTE)}), True),
]


def test_the_table_has_every_reason_the_codec_can_give() -> None:
    assert set(REASONS) <= {b.reason for b in BAD}


@pytest.mark.parametrize("bad", BAD, ids=[b.reason for b in BAD])
def test_a_bad_message_is_dead_lettered_and_its_neighbours_are_applied(
        world: World, bad: Bad) -> None:
    w = world
    w.send("trade_closed", trade(w.main, "v1", w.now - 2 * MINUTE))
    data = bad.data(w)
    bad_id = w.send(bad.type_, data)
    w.send("trade_closed", trade(w.main, "v2", w.now - MINUTE))

    assert drain(w.consumer) == 3

    [(_, letter)] = w.dead()
    assert letter["reason"] == bad.reason
    assert letter["error"]
    assert (letter["source_id"], letter["type"], letter["data"]) == (bad_id, bad.type_, data)
    assert applied_trade_ids(w.admin, w.keys, w.main) == ["v1", "v2"]
    assert pending(w.admin, w.keys, w.shard) == 0
    assert w.degraded(w.main) is bad.degrades
    assert len(w.degraded_events()) == (1 if bad.degrades else 0)
    decision = w.entries.request_entry(w.main, "live")
    assert (decision.reason == "input_dead_lettered") is bad.degrades


def test_a_degrading_dead_letter_is_published_and_recorded(world: World) -> None:
    w = world
    bad_id = w.send("trade_closed", _bad_trade(currency="EUR")(w))
    drain(w.consumer)
    [event] = w.degraded_events()
    assert (event["account_id"], event["caused_by"]) == (w.main, bad_id)
    assert event["payload"] == {"reason": "currency_mismatch", "source_id": bad_id}
    assert ("dead_letter", {"reason": "currency_mismatch", "source_id": bad_id}) in [
        (t, {k: d[k] for k in ("reason", "source_id") if k in d})
        for t, d in history(w.admin, w.keys, w.main)]


def test_a_retired_accounts_dead_letters_never_degrade_it(world: World) -> None:
    w = world
    w.send("trade_closed", trade(w.retired, "bad", w.now - MINUTE, leverage="2"))
    w.send("trade_closed", trade(w.retired, "t-1", w.now - MINUTE))
    drain(w.consumer)
    assert [letter["reason"] for _, letter in w.dead()] == ["unknown_field", "account_retired"]
    assert not w.degraded(w.retired)
    assert w.degraded_events() == []


# -- operators: requeue and discard (R-7.7b) ----------------------------------------------


def test_requeue_puts_the_message_back_in_one_step_and_it_applies_once_fixed(
        world: World) -> None:
    w = world
    late = w.stranger
    w.send("trade_closed", trade(late, "t-1", w.now - MINUTE))
    drain(w.consumer)
    [(dl_id, letter)] = w.dead()
    assert letter["reason"] == "unknown_account"
    register(w.worker, late)  # the operator fixes the cause

    assert w.job("requeue", dl_id) == {"outcome": "applied", "action": "requeue",
                                       "entry_id": dl_id}

    assert w.dead() == []
    *_, (_, fields) = w.admin.xrange(w.keys.inbox(w.shard))
    assert {text(a): text(b) for a, b in fields.items()} == {
        "type": "trade_closed", "data": letter["data"], "requeued_from": dl_id}
    drain(w.consumer)
    assert applied_trade_ids(w.admin, w.keys, late) == ["t-1"]
    assert pending(w.admin, w.keys, w.shard) == 0


def test_requeue_is_refused_when_the_trade_was_applied_meanwhile(world: World) -> None:
    w = world
    w.send("trade_closed", trade(w.main, "t-5", w.now - MINUTE, currency="EUR"))
    drain(w.consumer)
    [(dl_id, _)] = w.dead()
    w.send("trade_closed", trade(w.main, "t-5", w.now - MINUTE, currency="USD"))  # corrected
    drain(w.consumer)
    assert applied_trade_ids(w.admin, w.keys, w.main) == ["t-5"]

    refused = w.job("requeue", dl_id)

    assert (refused["outcome"], refused["reason"]) == ("refused", "already_applied")
    assert [i for i, _ in w.dead()] == [dl_id]
    assert w.degraded(w.main)
    assert w.admin.xlen(w.keys.inbox(w.shard)) == 2  # nothing was added


def test_degraded_clears_when_the_last_dead_letter_is_handled(world: World) -> None:
    w = world
    w.send("trade_closed", _bad_trade(currency="EUR")(w))
    w.send("trade_closed", _bad_trade(leverage="2")(w))
    drain(w.consumer)
    (first, _), (second, _) = w.dead()
    assert public(w.admin, w.keys, w.main)["dead_letters"] == "2"

    assert w.job("discard", first)["outcome"] == "applied"
    assert w.degraded(w.main)
    assert w.entries.request_entry(w.main, "live").reason == "input_dead_lettered"

    assert w.job("discard", second)["outcome"] == "applied"
    assert w.dead() == []
    assert not w.degraded(w.main)
    assert w.entries.request_entry(w.main, "live").reason != "input_dead_lettered"
    audit = [d for t, d in history(w.admin, w.keys, w.main) if t == "deadletter_discarded"]
    assert [(d["entry_id"], d["operator_id"]) for d in audit] == [(first, "alice"),
                                                                   (second, "alice")]


def test_a_requeued_message_that_fails_again_degrades_again(world: World) -> None:
    w = world
    w.send("trade_closed", _bad_trade(leverage="2")(w))
    drain(w.consumer)
    [(dl_id, _)] = w.dead()
    assert w.job("requeue", dl_id)["outcome"] == "applied"
    assert not w.degraded(w.main)
    drain(w.consumer)
    [(again, letter)] = w.dead()
    assert again != dl_id
    assert letter["reason"] == "unknown_field"
    assert w.degraded(w.main)


@pytest.mark.parametrize("action", ["requeue", "discard"])
def test_a_dead_letter_job_for_a_missing_entry_is_refused(world: World, action: str) -> None:
    assert world.job(action, "1-1") == {"outcome": "refused", "reason": "not_found"}


# -- an unexpected failure is retried alone, then dead-lettered ------------------------


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """The consumer's log lines, captured (and not rendered: a traceback per attempt)."""
    with structlog.testing.capture_logs() as captured:
        yield captured


def _inject_fault(monkeypatch: pytest.MonkeyPatch, trade_id: str) -> None:
    """A bug in the worker that strikes one message only: the core raises for that trade.

    Fault injection around the real `decide` (which still runs for every other message).
    """
    real_decide = consumer_module.decide

    def faulty_decide(state: Any, ledger: Any, message: Any, *args: Any, **kw: Any) -> Any:
        if isinstance(message, TradeClosed) and message.trade_id == trade_id:
            raise RuntimeError("injected fault")
        return real_decide(state, ledger, message, *args, **kw)

    monkeypatch.setattr(consumer_module, "decide", faulty_decide)


def test_a_message_that_keeps_failing_is_dead_lettered_after_five_attempts(
        world: World, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]) -> None:
    w = world
    _inject_fault(monkeypatch, "boom")
    other = ids_in_shard(w.keys, w.shard, 5, "dl")[4]
    register(w.worker, other)
    w.send("trade_closed", trade(w.main, "v1", w.now - 3 * MINUTE))
    boom_id = w.send("trade_closed", trade(w.main, "boom", w.now - 2 * MINUTE))
    w.send("trade_closed", trade(other, "o1", w.now - 2 * MINUTE))
    w.send("trade_closed", trade(w.main, "v2", w.now - MINUTE))

    attempts = []
    for _ in range(5):
        assert w.dead() == []
        w.consumer.run_once()
        attempts.append(int(w.admin.hget(w.keys.failures(w.shard), boom_id) or 0))

    assert attempts == [1, 2, 3, 4, 0]  # the fifth failure dead-letters and forgets the count
    assert applied_trade_ids(w.admin, w.keys, w.main) == ["v1", "v2"]
    assert applied_trade_ids(w.admin, w.keys, other) == ["o1"]
    [(_, letter)] = w.dead()
    assert (letter["reason"], letter["source_id"], letter["account_id"]) == (
        "processing_failed", boom_id, w.main)
    assert "injected fault" in letter["error"]
    assert pending(w.admin, w.keys, w.shard) == 0
    assert drain(w.consumer) == 0
    failed = [e["attempt"] for e in logs if e["event"] == "message_failed"]
    assert failed == [1, 2, 3, 4, 5]


def test_a_processing_failure_degrades_the_account_until_requeued(
        world: World, monkeypatch: pytest.MonkeyPatch, logs: list[dict[str, Any]]) -> None:
    w = world
    _inject_fault(monkeypatch, "boom")
    w.send("trade_closed", trade(w.main, "boom", w.now - MINUTE))
    for _ in range(5):
        w.consumer.run_once()
    [(dl_id, letter)] = w.dead()
    assert letter["reason"] == "processing_failed"
    assert w.degraded(w.main)
    assert w.entries.request_entry(w.main, "live").reason == "input_dead_lettered"
    monkeypatch.undo()  # the bug is fixed: the operator requeues
    assert w.job("requeue", dl_id)["outcome"] == "applied"
    drain(w.consumer)
    assert applied_trade_ids(w.admin, w.keys, w.main) == ["boom"]
    assert not w.degraded(w.main)
