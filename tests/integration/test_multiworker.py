"""Four worker processes give exactly what one worker gives (R-10.1, R-10.4).

Six replay (`clock = message`) accounts trade 20 trading days under a policy with small gates and
`auto_advance = true`: they climb to proof and trial, enter live through the entry script
(`request_entry(at=opened_at)`), and fall back on losing streaks. The same inbox order is played
through one in-process consumer (whole batches, then one message per transaction) and through
four `python -m worker` processes; every account's state, history and events must match, apart
from ids and wall-clock instants.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from contracts.messages import SessionEnded, TradeClosed
from worker.domain.policy import DEFAULT_POLICY, Policy

from .helpers import (
    Harness,
    WorkerProcesses,
    alive,
    days_from,
    drain,
    et,
    inbox_drained,
    poll_until,
    session_end,
    strip,
    trade,
)

pytestmark = pytest.mark.redis
SHARDS = 4  # one shard per worker once balanced
WORKERS = 4
ACCOUNTS = [f"bot-{i}" for i in range(6)]
FIRST_DAY = date(2026, 2, 2)
DAYS = 20
START_EQUITY = Decimal("10000")
# Ids, wall-clock instants and inbox entry ids differ from run to run by design.
VOLATILE = frozenset({"occurred_at", "caused_by", "transition_id", "event_id", "decision_id",
                      "entry_decision_id", "source_id", "cause", "created"})
GOOD_DAYS = ([Decimal("80.00"), Decimal("70.00")],
             [Decimal("90.00"), Decimal("-30.00"), Decimal("60.00")])
BAD_DAY = [Decimal("-40.00"), Decimal("-35.00"), Decimal("-45.00")]  # 3 losses: a downgrade


def small_gates_policy() -> Policy:
    body = DEFAULT_POLICY.model_dump()
    body["auto_advance"] = True
    body["auto_acknowledge_breaker"] = True  # nobody acknowledges: let accounts climb again
    body["gates"]["proof"].update(min_sessions=3, window_sessions=3)
    body["gates"]["trial"].update(min_days=3, min_trades=5, window_trades=5)
    return Policy.model_validate(body)


POLICY = small_gates_policy()


def plan() -> dict[str, list[list[Decimal]]]:
    """Each account's P&L per day: mostly good days, a seeded sprinkle of losing streaks."""
    out = {}
    for n, account in enumerate(ACCOUNTS):
        rng = random.Random(1000 + n)
        days = []
        for i in range(DAYS):
            bad = i >= 4 and rng.random() < 0.18
            days.append(BAD_DAY if bad else GOOD_DAYS[rng.randrange(2)])
        out[account] = days
    return out


def play(h: Harness, barrier: Callable[[], object]) -> dict[str, Any]:
    """Register the accounts and publish 20 days; `barrier` waits until the worker caught up.

    Within a day every entry request comes before any of the day's messages, so what the
    entry script sees never depends on how fast the worker is.
    """
    cal = h.calendar()
    days = list(days_from(cal, FIRST_DAY, DAYS))
    for account in ACCOUNTS:
        h.add_account(account, clock="message", starts_at=et(days[0], 9))
    bot = h.bot()
    equity = dict.fromkeys(ACCOUNTS, START_EQUITY)
    pnls = plan()
    live_trades = 0
    for i, day in enumerate(days):
        outbox: list[TradeClosed | SessionEnded] = []
        for account in ACCOUNTS:
            status = bot.status(account)
            may_go_live = status["phase"] in ("proof", "trial") and status["halted"] == "0"
            for j, pnl in enumerate(pnls[account][i]):
                tid = f"{account}-{day:%m%d}-{j}"
                opened = et(day, 10 + j)
                equity[account] += pnl
                fields: dict[str, Any] = {"opened_at": opened}
                if may_go_live:
                    decision = bot.request_entry(account, "live", request_id=tid, at=opened)
                    if decision.allowed:
                        live_trades += 1
                        fields.update(mode="live", entry_decision_id=decision.decision_id,
                                      position_size=decision.position_size,
                                      equity_after=equity[account])
                outbox.append(trade(account, tid, pnl, opened + timedelta(minutes=30),
                                    **fields))
            outbox.append(session_end(account, day, et(day, 16), equity=equity[account]))
        for msg in outbox:
            if isinstance(msg, TradeClosed):
                bot.publish_trade_closed(msg)
            else:
                bot.publish_session_ended(msg)
        barrier()
    return {"live_trades": live_trades}


def snapshot(h: Harness) -> dict[str, Any]:
    """Per account: the decoded state (but its wall-clock stamp), history and events."""
    out: dict[str, Any] = {}
    keys = h.keys
    events = {k: h.events(k) for k in range(keys.shards)}
    for account in ACCOUNTS:
        state = h.state(account)
        public = h.public(account)
        public.pop("updated_at")
        out[account] = {
            # a trade's digest covers its entry_decision_id, which is made of Redis time
            "state": replace(state, updated_at=datetime(1970, 1, 1, tzinfo=UTC),
                             recent=tuple(replace(t, digest="") for t in state.recent)),
            "public": public,
            "history": [(e.type, strip(e.body, VOLATILE)) for e in h.history(account)],
            "events": [(e.type, e.effective_at, e.trading_day, strip(e.payload, VOLATILE))
                       for e in events[keys.shard(account)] if e.account_id == account],
        }
    out["deadletters"] = [d for k in range(keys.shards) for d in h.deadletters(k)]
    out["pending"] = h.pending()
    return out


def transitions(snap: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(a, body["kind"], body["to_phase"]) for a in ACCOUNTS
            for kind, body in snap[a]["history"] if kind == "transition"]


def fresh_deployment(h: Harness) -> None:
    h.admin.flushall()
    h.admin.script_flush()
    h.bootstrap(POLICY, shards=SHARDS)


def assert_same(got: dict[str, Any], want: dict[str, Any], how: str) -> None:
    for account in ACCOUNTS:
        for part in ("public", "state", "history", "events"):
            assert got[account][part] == want[account][part], f"{how}: {account} {part}"
    assert (got["deadletters"], got["pending"]) == ([], 0), how


def test_the_same_inbox_order_gives_the_same_result_however_it_is_consumed(
        h: Harness, procs: WorkerProcesses) -> None:
    # the reference: one worker, in process, whole batches
    h.bootstrap(POLICY, shards=SHARDS)
    single = h.consumer()
    played = play(h, lambda: drain(single))
    one = snapshot(h)

    # the scenario does what it is meant to: climbs, live entries, downgrades, no dead letter
    moves = transitions(one)
    assert ("advance", "trial") in {(k, p) for _, k, p in moves}
    assert {k for _, k, _ in moves} == {"advance", "downgrade"}
    assert played["live_trades"] > 20
    assert not [e for a in ACCOUNTS for e in one[a]["history"] if e[0] == "unauthorized_entry"]
    assert (one["deadletters"], one["pending"]) == ([], 0)

    # one message per transaction: batch boundaries change nothing
    fresh_deployment(h)
    by_message = h.consumer(batch=1)
    assert play(h, lambda: drain(by_message)) == played
    assert_same(snapshot(h), one, "one message per transaction")

    # four worker processes sharing the shards, leases moving while they balance
    fresh_deployment(h)
    workers = [procs.start("--lease-ms", "2000") for _ in range(WORKERS)]

    def shared() -> bool:  # the first worker took every shard; balancing hands some over
        holders = {h.admin.get(h.keys.lease(k)) for k in range(SHARDS)}
        return None not in holders and len(holders) >= 2

    poll_until(shared, 30, "the workers to share the shards")

    def caught_up() -> bool:
        return all(alive(w) for w in workers) and inbox_drained(h.admin, h.keys)

    assert play(h, lambda: poll_until(caught_up, 30, "the workers to drain the inbox")) == played
    assert_same(snapshot(h), one, "four worker processes")
    for worker in workers:  # graceful stop
        assert procs.terminate(worker) == 0, worker.log()[-2000:]
    handled = [sum(1 for line in w.log().splitlines() if json.loads(line)["event"] == "message")
               for w in workers]
    assert sum(1 for n in handled if n) >= 2, handled  # the shards really were shared
    assert all(h.admin.get(h.keys.lease(k)) is None for k in range(SHARDS))
