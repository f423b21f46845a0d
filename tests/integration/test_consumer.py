"""The inbox consumer against a real redis-server (SPEC §10, R-9.2 .. R-9.4, R-1.6)."""

from __future__ import annotations

import json
import threading
import time
from datetime import date, timedelta

import pytest
from structlog.testing import capture_logs

from contracts.client import PhaseguardClient
from worker.consumer import ShardConsumer, calendar_opens
from worker.domain.decide import new_account
from worker.domain.model import Registration
from worker.domain.policy import DEFAULT_POLICY
from worker.store.codec import encode_state
from worker.store.keys import CONSUMER_GROUP, consumer_name

from .helpers import (
    PREFIX,
    Harness,
    accounts_on_shard,
    drain,
    et,
    poll_until,
    session_end,
    stream_ids,
    trade,
)

pytestmark = pytest.mark.redis
MS = timedelta(milliseconds=1)


def _backdate(h: Harness, account: str, trading_days: int) -> date:
    """Make `account` look registered `trading_days` ago and silent since; its first day."""
    cal = h.calendar()
    first = cal.add_trading_days(cal.trading_day(h.now()), -trading_days)
    created = cal.session_open(first) + timedelta(hours=1)
    state = new_account(Registration(account, "redis", h.policy.currency, created), h.policy)
    key = h.keys.state(h.keys.shard(account), account)
    h.admin.hset(key, mapping=encode_state(state))  # type: ignore[arg-type]
    return first


# -- one message, end to end ------------------------------------------------------------------


def test_a_batch_commits_state_history_events_and_ack_together(h: Harness) -> None:
    keys = h.bootstrap()
    k = h.add_account("acct-1")
    t0 = h.now()
    day = h.calendar().trading_day(t0)
    bot = h.bot()
    bot.publish_trade_closed(trade("acct-1", "t-1", "25.00", t0 + MS))
    closing = bot.publish_session_ended(session_end("acct-1", day, t0 + 2 * MS, equity="10025"))

    assert h.consumer().run_once() == 2

    state = h.state("acct-1")
    assert (state.current.trades, state.version) == (1, 3)
    assert state.current_day == h.calendar().next_trading_day(day)
    history = h.history("acct-1")
    assert [e.type for e in history] == ["registered", "session_closed"]
    record = history[1].body
    assert (record["trading_day"], record["counted_trades"], record["net_pnl"]) == (
        day.isoformat(), 1, "25.00")
    assert (record["end_equity"], record["closed_implicitly"]) == ("10025", False)
    assert record["caused_by"] == closing
    events = h.events(k)
    assert [(e.type, e.caused_by, e.trading_day) for e in events] == [
        ("session_closed", closing, day)]
    group = h.admin.xinfo_groups(keys.inbox(k))[0]
    assert (group["pending"], group["last-delivered-id"]) == (0, closing)


def test_a_batch_that_fails_before_exec_writes_nothing_and_stays_pending(h: Harness) -> None:
    h.bootstrap()
    k = h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    bot.publish_trade_closed(trade("acct-1", "t-1", "25.00", t0 + MS))
    bot.publish_session_ended(session_end("acct-1", h.calendar().trading_day(t0), t0 + 2 * MS))
    failing = {"on": True}

    def hook(point: str) -> None:
        if point == "before_exec" and failing["on"]:
            raise RuntimeError("injected before EXEC")

    consumer = h.consumer(fault_hook=hook)
    with capture_logs() as logs:
        consumer.run_once()  # the batch fails, then each message once on its own

    assert [e["event"] for e in logs if e["log_level"] == "error"] == [
        "batch_failed", "message_failed", "message_failed"]

    assert h.state("acct-1").version == 1
    assert [e.type for e in h.history("acct-1")] == ["registered"]
    assert h.events(k) == []
    assert h.deadletters(k) == []
    assert h.pending() == 2
    assert set(h.admin.hvals(h.keys.failures(k))) == {"1"}

    failing["on"] = False
    drain(consumer)
    assert h.state("acct-1").current.trades == 1
    assert [e.type for e in h.events(k)] == ["session_closed"]
    assert h.pending() == 0


def test_a_message_that_failed_once_and_then_succeeded_leaves_no_failure_count(
        h: Harness) -> None:
    h.bootstrap()
    k = h.add_account("acct-1")
    h.bot().publish_trade_closed(trade("acct-1", "t-1", "25.00", h.now() + MS))
    failures = [1, 2]  # the batch, then its one-at-a-time retry; the next round succeeds

    def hook(point: str) -> None:
        if point == "before_exec" and failures:
            failures.pop()
            raise RuntimeError("injected before EXEC")

    consumer = h.consumer(fault_hook=hook)
    with capture_logs():
        drain(consumer)

    assert h.state("acct-1").current.trades == 1
    assert h.admin.hlen(h.keys.failures(k)) == 0


def test_one_batch_applies_several_accounts_each_in_inbox_order(h: Harness) -> None:
    keys = h.bootstrap()
    same_shard = accounts_on_shard(keys, 5, 4)
    other = accounts_on_shard(keys, 9, 1)
    accounts = same_shard + other
    for account in accounts:
        h.add_account(account)
    t0 = h.now()
    bot = h.bot()
    for i in range(3):
        for j, account in enumerate(accounts):
            pnl = f"{(i + 1) * (j + 1)}.00" if i != 1 else f"-{j + 1}.50"
            bot.publish_trade_closed(trade(account, f"{account}-t{i}", pnl,
                                           t0 + (10 * i + j + 1) * MS))

    assert h.consumer().run_once() == 15  # one batch per shard, all in one round

    for j, account in enumerate(accounts):
        state = h.state(account)
        assert [t.trade_id for t in state.recent] == [f"{account}-t{i}" for i in range(3)]
        assert state.current.trades == 3
        assert str(state.current.pnl) == f"{(j + 1) + 3 * (j + 1) - (j + 1.5):.2f}"
        assert (state.current.loss_streak, state.current.win_streak) == (0, 1)
        assert state.version == 4
    assert h.pending() == 0


def test_events_decode_with_the_contract_and_reach_a_subscriber(h: Harness) -> None:
    keys = h.bootstrap()
    accounts = accounts_on_shard(keys, 2, 2)
    for account in accounts:
        h.add_account(account)
    t0 = h.now()
    day = h.calendar().trading_day(t0)
    bot = h.bot()
    causes = {}
    for i, account in enumerate(accounts):
        bot.publish_trade_closed(trade(account, "t-1", "10", t0 + (i + 1) * MS))
        causes[account] = bot.publish_session_ended(session_end(account, day,
                                                                t0 + (i + 5) * MS))
    drain(h.consumer())

    reader = PhaseguardClient(h.client("reader"), PREFIX)
    seen = list(reader.subscribe(start="beginning", block_ms=10, max_idle=1))

    assert [e.type for _, e in seen] == ["session_closed", "session_closed"]
    assert [(e.account_id, e.caused_by, e.trading_day) for _, e in seen] == [
        (a, causes[a], day) for a in accounts]
    assert len({e.event_id for _, e in seen}) == 2
    for _, event in seen:
        assert event.schema_version == 1
        assert event.occurred_at >= t0 - timedelta(seconds=1)
        assert event.payload["counted_trades"] == 1


# -- duplicates (R-10.3) ------------------------------------------------------------------------


def test_an_identical_repeat_of_a_trade_changes_nothing(h: Harness) -> None:
    keys = h.bootstrap()
    k = h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    msg = trade("acct-1", "t-1", "25.00", t0 + MS)
    bot.publish_trade_closed(msg)
    consumer = h.consumer()
    drain(consumer)
    before = (h.admin.hgetall(keys.state(k, "acct-1")), h.history("acct-1"), h.events(k))

    bot.publish_trade_closed(msg)
    drain(consumer)

    assert (h.admin.hgetall(keys.state(k, "acct-1")), h.history("acct-1"),
            h.events(k)) == before
    assert h.deadletters(k) == []
    assert h.pending() == 0


def test_a_conflicting_repeat_is_dead_lettered_and_degrades_the_account(h: Harness) -> None:
    h.bootstrap()
    k = h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    bot.publish_trade_closed(trade("acct-1", "t-1", "25.00", t0 + MS))
    repeat = bot.publish_trade_closed(trade("acct-1", "t-1", "30.00", t0 + MS))
    drain(h.consumer())

    [letter] = h.deadletters(k)
    assert (letter["reason"], letter["source_id"], letter["account_id"]) == (
        "conflicting_duplicate", repeat, "acct-1")
    assert json.loads(letter["data"])["pnl"] == "30.00"
    state = h.state("acct-1")
    assert (state.current.trades, str(state.current.pnl), state.degraded) == (1, "25.00", True)
    assert h.public("acct-1")["degraded"] == "1"
    assert [(e.type, e.caused_by) for e in h.events(k)] == [("account_degraded", repeat)]
    assert [e.type for e in h.history("acct-1")] == ["registered", "dead_letter"]
    assert h.pending() == 0


def test_a_second_session_ended_amends_only_the_end_equity(h: Harness) -> None:
    h.bootstrap()
    k = h.add_account("acct-1")
    t0 = h.now()
    day = h.calendar().trading_day(t0)
    bot = h.bot()
    bot.publish_trade_closed(trade("acct-1", "t-1", "25.00", t0 + MS))
    bot.publish_session_ended(session_end("acct-1", day, t0 + 2 * MS, equity="100"))
    bot.publish_session_ended(session_end("acct-1", day, t0 + 3 * MS, equity="200"))
    drain(h.consumer())

    events = h.events(k)
    assert [e.type for e in events] == ["session_closed", "session_amended"]
    assert (events[1].payload["end_equity"], events[1].payload["amended"]) == ("200", True)
    assert events[1].payload["counted_trades"] == 1
    assert [e.type for e in h.history("acct-1")] == ["registered", "session_closed",
                                                     "session_amended"]


# -- session close (R-10.5) -----------------------------------------------------------------------


def test_the_sweep_closes_sessions_whose_end_plus_grace_has_passed(h: Harness) -> None:
    keys = h.bootstrap()
    k = h.add_account("acct-1")
    first = _backdate(h, "acct-1", 3)
    cal = h.calendar()
    bot = h.bot()
    bot.publish_trade_closed(trade("acct-1", "t-1", "40.00",
                                   cal.session_open(first) + timedelta(hours=2)))
    consumer = h.consumer()

    drain(consumer)  # the first round applies the trade, then sweeps

    now = h.now()
    grace = timedelta(seconds=h.policy.delivery.session_close_grace_seconds)
    due = []
    day = first
    while cal.session_end(day) + grace <= now:
        due.append(day)
        day = cal.next_trading_day(day)
    assert len(due) >= 2
    events = h.events(k)
    assert [(e.type, e.trading_day) for e in events] == [("session_closed", d) for d in due]
    assert all(e.caused_by.startswith("sweep:") for e in events)
    assert all(e.payload["closed_implicitly"] for e in events)
    assert [e.payload["counted_trades"] for e in events] == [1] + [0] * (len(due) - 1)
    assert h.state("acct-1").current_day == day
    assert h.public("acct-1")["open_day"] == day.isoformat()
    assert consumer.sweep(k) == 0  # nothing is due any more
    assert len(h.events(k)) == len(due)
    assert keys.shard("acct-1") == k


# -- retention (R-10.7, R-9.2) --------------------------------------------------------------------


def test_trimming_the_inbox_keeps_pending_entries_and_the_last_day_before_them(
        h: Harness) -> None:
    keys = h.bootstrap()
    consumer = h.consumer()
    consumer.balance()  # owns every shard and creates the consumer groups
    k = 0
    inbox = keys.inbox(k)
    now_ms = int(h.now().timestamp() * 1000)
    hour = 3_600_000
    old = [h.admin.xadd(inbox, {"type": "x", "data": "{}"}, id=f"{now_ms - 72 * hour + i}-0")
           for i in range(300)]
    recent = h.admin.xadd(inbox, {"type": "x", "data": "{}"}, id=f"{now_ms - 30 * hour}-0")
    newest = h.admin.xadd(inbox, {"type": "x", "data": "{}"})
    # what a worker that died mid-batch leaves behind: delivered, two of them unacknowledged
    h.admin.xreadgroup(CONSUMER_GROUP, consumer_name(k), {inbox: ">"}, count=1000)
    h.admin.xack(inbox, CONSUMER_GROUP, *old)

    consumer.trim(k)

    remaining = stream_ids(h.admin, inbox)
    assert recent in remaining
    assert newest in remaining
    assert len(remaining) < len(old)  # MINID ~ drops whole nodes below oldest pending - 24 h
    pending = h.admin.xpending_range(inbox, CONSUMER_GROUP, "-", "+", 10)
    assert [p["message_id"] for p in pending] == [recent, newest]


def test_with_nothing_pending_the_inbox_keeps_a_day_before_the_last_delivered(
        h: Harness) -> None:
    keys = h.bootstrap()
    consumer = h.consumer()
    consumer.balance()
    inbox = keys.inbox(0)
    now_ms = int(h.now().timestamp() * 1000)
    hour = 3_600_000
    old = [h.admin.xadd(inbox, {"type": "x", "data": "{}"}, id=f"{now_ms - 50 * hour + i}-0")
           for i in range(300)]
    kept = [h.admin.xadd(inbox, {"type": "x", "data": "{}"}, id=f"{now_ms - 20 * hour + i}-0")
            for i in range(5)]
    h.admin.xreadgroup(CONSUMER_GROUP, consumer_name(0), {inbox: ">"}, count=1000)
    h.admin.xack(inbox, CONSUMER_GROUP, *old, *kept)

    consumer.trim(0)

    remaining = stream_ids(h.admin, inbox)
    assert set(kept) <= set(remaining)
    assert len(remaining) < len(old)


def test_event_streams_are_appended_with_the_policys_approximate_maxlen(h: Harness) -> None:
    # The policy's delivery.events_maxlen goes to XADD MAXLEN ~ (R-9.2); the default 1,000,000
    # would need a million events to observe.
    small = DEFAULT_POLICY.model_copy(update={"delivery": {
        **DEFAULT_POLICY.delivery.model_dump(), "events_maxlen": 10}})
    keys = h.bootstrap(small)
    k = h.add_account("acct-1")
    _backdate(h, "acct-1", 300)
    consumer = h.consumer()
    consumer.balance()

    assert consumer.sweep(k) == 1  # closes ~300 sessions in one transaction

    closed = [e for e in h.history("acct-1") if e.type == "session_closed"]
    assert len(closed) >= 290
    length = h.admin.xlen(keys.events(k))
    assert 10 <= length < len(closed)


# -- graceful stop (R-10.1) ------------------------------------------------------------------------


def test_a_stop_during_a_batch_finishes_it_and_releases_every_lease(h: Harness) -> None:
    keys = h.bootstrap()
    h.add_account("acct-1")
    t0 = h.now()
    bot = h.bot()
    for i in range(3):
        bot.publish_trade_closed(trade("acct-1", f"t-{i}", "5", t0 + (i + 1) * MS))
    stop = {"now": False}

    def hook(point: str) -> None:
        if point == "before_exec":
            stop["now"] = True  # the signal arrives while the batch is in hand

    consumer = h.consumer(fault_hook=hook)
    consumer.run(lambda: stop["now"], block_ms=10)

    assert h.state("acct-1").current.trades == 3
    assert h.pending() == 0
    assert consumer.owned == set()
    assert [h.admin.get(keys.lease(k)) for k in range(keys.shards)] == [None] * keys.shards
    assert h.admin.zscore(keys.workers, consumer.name) is None
    successor = h.consumer()
    successor.balance()
    assert successor.owned == set(range(keys.shards))  # nothing to wait for


# -- the service loop: a thread per owned shard ---------------------------------------------------


class Running:
    """`ShardConsumer.run` on a background thread, stopped (and joined) on exit."""

    def __init__(self, consumer: ShardConsumer) -> None:
        self.consumer = consumer
        self.stop = threading.Event()
        self.thread = threading.Thread(target=consumer.run, args=(self.stop.is_set,),
                                       kwargs={"block_ms": 50})

    def __enter__(self) -> Running:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def test_the_service_loop_applies_each_shards_messages_as_they_arrive(h: Harness) -> None:
    keys = h.bootstrap()
    accounts = ["acct-1", "acct-2", "acct-3"]
    assert len({h.add_account(a) for a in accounts}) == 3  # three shards, three loops
    consumer = h.consumer()
    bot = h.bot()
    t0 = h.now()
    with Running(consumer):
        poll_until(lambda: consumer.owned == set(range(keys.shards)), 10, "every lease")
        for i, account in enumerate(accounts):
            bot.publish_trade_closed(trade(account, f"t-{i}", "5", t0 + (i + 1) * MS))
        poll_until(lambda: all(h.state(a).current.trades == 1 for a in accounts), 10,
                   "each shard's loop to apply its message")
        assert h.pending() == 0
    assert sum(consumer.loop_handled.values()) == 3
    assert consumer.owned == set()  # the stop released every lease
    assert [h.admin.get(keys.lease(k)) for k in range(keys.shards)] == [None] * keys.shards


def test_a_shard_loop_renews_its_own_lease_and_keeps_the_shard(h: Harness) -> None:
    keys = h.bootstrap()
    k = h.add_account("acct-1")
    consumer = h.consumer(lease_ms=600)  # would expire within 0.6 s without renewals
    with capture_logs() as logs, Running(consumer):
        poll_until(lambda: consumer.owned == set(range(keys.shards)), 10, "every lease")
        start = time.monotonic()
        # three lease periods go by: renewals (every 0.2 s) or the shard is gone
        poll_until(lambda: time.monotonic() - start > 1.8, 5, "three lease periods")
        assert h.admin.get(keys.lease(k)) == consumer.name
        h.bot().publish_trade_closed(trade("acct-1", "t-1", "5", h.now() + MS))
        poll_until(lambda: h.state("acct-1").current.trades == 1, 10, "the message applied")
        assert h.admin.get(keys.lease(k)) == consumer.name
        assert 0 < int(h.admin.pttl(keys.lease(k))) <= 600
    assert not [e for e in logs if e["event"] in ("lease_lost", "batch_contention")]
    assert consumer.loop_handled == {k: 1}


# -- replay accounts (R-1.6, R-9.2) ----------------------------------------------------------------


def test_a_message_clock_account_lives_on_message_time_and_gets_its_calendar(
        h: Harness) -> None:
    keys = h.bootstrap()
    monday, tuesday = date(2026, 3, 2), date(2026, 3, 3)
    k = h.add_account("replay-1", clock="message", starts_at=et(monday, 9), currency="EUR")
    bot = h.bot()
    bot.publish_trade_closed(trade("replay-1", "r-1", "12.50", et(monday, 10),
                                   opened_at=et(monday, 9)))
    bot.publish_session_ended(session_end("replay-1", monday, et(monday, 16), equity="5012.50"))
    bot.publish_trade_closed(trade("replay-1", "r-2", "-2.50", et(tuesday, 11, 30)))
    drain(h.consumer())

    state = h.state("replay-1")
    assert (state.clock, state.currency, state.clock_at) == ("message", "EUR",
                                                             et(tuesday, 11, 30))
    assert state.current_day == tuesday
    assert state.current.counted == 2  # r-1 opened exactly at starts_at: the first epoch's own
    assert h.deadletters(k) == []
    [closed] = h.events(k)
    assert (closed.type, closed.trading_day, closed.effective_at) == (
        "session_closed", monday, et(monday, 16))

    raw = h.admin.get(keys.account_calendar(k, "replay-1"))
    assert raw is not None
    opens = calendar_opens(raw)
    cal = h.calendar()
    days = [d for d, _ in opens]
    assert days[0] == cal.add_trading_days(tuesday, -10)
    assert (tuesday, int(cal.session_open(tuesday).timestamp())) in opens
    assert len(opens) == 410
    assert json.loads(raw)["min_size"] == "10.00"

    paper = bot.request_entry("replay-1", "paper", at=et(tuesday, 12))
    live = bot.request_entry("replay-1", "live", at=et(tuesday, 12))
    assert (paper.allowed, paper.trading_day, paper.phase) == (True, "2026-03-03", "experience")
    assert (live.allowed, live.reason) == (False, "paper_only")


# -- lease handover (R-10.1) -----------------------------------------------------------------------


def test_entries_read_by_a_worker_that_lost_its_lease_are_applied_by_the_new_owner(
        h: Harness) -> None:
    keys = h.bootstrap()
    k = h.add_account("acct-1")
    slow = h.consumer(lease_ms=60_000)  # not due to renew (and notice) during the test
    slow.balance()  # owns every shard
    h.admin.delete(keys.lease(k))  # its lease on k expired while it was busy elsewhere
    new_owner = h.consumer(lease_ms=600)  # renews, and so looks at pending entries, every 0.2 s
    new_owner.balance()
    assert k in new_owner.owned
    assert new_owner.run_once() == 0  # resumes k: nothing pending, nothing new
    t0 = h.now()
    h.bot().publish_trade_closed(trade("acct-1", "t-1", "5", t0 + MS))

    with capture_logs() as logs:
        slow.run_once()  # still believes it owns k: reads the entry, cannot commit it

    assert {"event": "lease_lost", "shard": k, "log_level": "warning"} in logs
    assert k not in slow.owned
    assert h.pending() == 1
    drain(new_owner, timeout=5)
    assert h.state("acct-1").current.trades == 1
