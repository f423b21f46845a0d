"""The Lua entry script against a real Redis (SPEC §4, R-7.14).

(a) It answers exactly what the pure reference `decide_entry` answers, for every row of
ENTRY_RULES, on the redis clock and on a replay account's message clock; its ledger writes
(R-4.8, R-4.9) and the `at` rule (R-1.6). (b) Of concurrent live proof requests exactly one wins
the day's slot (R-4.6). (c) The bot user can ask and publish but write nothing else (R-7.14).
"""

from __future__ import annotations

import json
import multiprocessing as mp
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from contracts.client import EntryDecision, PhaseguardClient
from worker.consumer import calendar_blob, calendar_opens
from worker.domain.entries import ENTRY_RULES, EntryClock, EntryOutcome, EntryView, decide_entry
from worker.redis_acl import Role
from worker.store.keys import RQ_QUEUE, Keys
from worker.store.uow import dumps

from .builders_b import (
    CAL,
    POLICY,
    PREFIX,
    init_deployment,
    now_of,
    register,
    stale_day,
    text,
    trade,
    trading_days,
)

pytestmark = pytest.mark.redis

NY = ZoneInfo("America/New_York")
# A Friday 09:30 ET before the 2026 spring-forward weekend: the next open is Monday 07:00 EDT.
FRIDAY = datetime(2026, 3, 6, 9, 30, tzinfo=NY)
MONDAY_OPEN = datetime(2026, 3, 9, 11, 0, tzinfo=UTC)
MIN_SIZE = POLICY.sizes.min_position_size


@dataclass
class Env:
    admin: redis.Redis
    worker: redis.Redis
    bot: redis.Redis
    ops: redis.Redis
    keys: Keys
    client: PhaseguardClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = PhaseguardClient(self.bot, PREFIX)

    def shard(self, account_id: str) -> int:
        return self.keys.shard(account_id)

    def ledger(self, account_id: str) -> dict[str, str]:
        raw = self.admin.hgetall(self.keys.entries(self.shard(account_id), account_id))
        return {text(k): text(v) for k, v in raw.items()}


@pytest.fixture
def env(redis_admin: redis.Redis, role_url: Callable[[Role], str]) -> Iterator[Env]:
    made = {role: redis.Redis.from_url(role_url(role)) for role in ("worker", "bot", "ops")}
    try:
        keys = init_deployment(made["worker"])
        yield Env(redis_admin, made["worker"], made["bot"], made["ops"], keys)
    finally:
        for c in made.values():
            c.close()


# -- (a) Lua == Python ----------------------------------------------------------------------------

EquityDay = Literal["today", "yesterday", "stale"] | None


@dataclass(frozen=True)
class Case:
    """One entry request and the account as the script finds it."""

    id: str
    mode: Literal["live", "paper"]
    kind: Literal["regular", "emergency_exit", "manual"] = "regular"
    registered: bool = True
    retired: bool = False
    state: bool = True
    phase: Literal["experience", "proof", "trial", "scaling"] = "proof"
    halted: bool = False
    degraded: bool = False
    size: str = "100.00"
    equity: str | None = "20000.00"
    equity_day: EquityDay = "today"
    slot: bool = False  # a live entry was already allowed today
    raw_phase: str | None = None  # a phase field the worker never writes: unreadable state


CASES = [
    # emergency exits, whatever the account's condition
    Case("exit-unknown", "live", "emergency_exit", registered=False),
    Case("exit-retired", "live", "emergency_exit", retired=True),
    Case("exit-tripped", "live", "emergency_exit", halted=True),
    Case("exit-degraded", "live", "emergency_exit", phase="trial", degraded=True),
    Case("exit-no-state", "paper", "emergency_exit", state=False),
    Case("exit-experience", "paper", "emergency_exit", phase="experience", size="0.00"),
    Case("exit-depleted", "live", "emergency_exit", phase="scaling", equity="-5.00"),
    #
    Case("unknown", "live", registered=False),
    Case("unknown-paper", "paper", registered=False),
    Case("retired", "live", retired=True, phase="scaling"),
    Case("state-missing", "live", state=False),
    Case("state-unreadable", "live", raw_phase="bogus"),
    #
    Case("experience-paper", "paper", phase="experience", size="0.00"),
    Case("experience-paper-tripped", "paper", phase="experience", size="0.00", halted=True),
    Case("experience-live", "live", phase="experience", size="0.00"),
    Case("experience-live-tripped", "live", phase="experience", size="0.00", halted=True),
    #
    Case("breaker-live", "live", halted=True),
    Case("breaker-paper", "paper", phase="trial", halted=True),
    Case("breaker-before-degraded", "live", halted=True, degraded=True),
    Case("degraded-live", "live", phase="trial", degraded=True),
    Case("degraded-paper", "paper", phase="trial", degraded=True),
    #
    Case("equity-never-reported", "live", equity=None, equity_day=None),
    Case("equity-stale", "live", phase="trial", equity_day="stale"),
    Case("equity-yesterday", "live", phase="trial", size="200.00", equity_day="yesterday"),
    Case("equity-zero", "live", phase="scaling", equity="0.00"),
    Case("equity-negative", "live", phase="proof", equity="-1.00"),
    Case("size-below-minimum", "live", phase="trial", size="9.99"),
    Case("size-at-minimum", "live", phase="trial", size="10.00"),
    #
    Case("proof-daily-limit", "live", slot=True),
    Case("proof-manual-daily-limit", "live", "manual", slot=True),
    Case("proof-allowed", "live"),
    Case("proof-paper-slot-used", "paper", slot=True),
    Case("proof-paper-equity-unknown", "paper", equity=None, equity_day=None),
    #
    Case("trial-allowed", "live", phase="trial", size="200.00"),
    Case("trial-allowed-slot-used", "live", phase="trial", size="200.00", slot=True),
    Case("scaling-allowed", "live", phase="scaling", size="700.00"),
    Case("scaling-paper", "paper", phase="scaling", size="700.00", equity_day="stale"),
]


def view_of(case: Case, today: date, yesterday: date) -> EntryView:
    days = {"today": today, "yesterday": yesterday, "stale": stale_day(today), None: None}
    return EntryView(
        registered=case.registered, retired=case.retired,
        state_present=case.state and case.raw_phase is None, phase=case.phase,
        halted=case.halted, degraded=case.degraded, position_size=Decimal(case.size),
        equity=None if case.equity is None else Decimal(case.equity),
        equity_day=days[case.equity_day], slot_used_today=case.slot,
    )


def put_account(env: Env, account_id: str, case: Case, clock: str, at: datetime) -> None:
    """Write the registry, the state's public fields, the ledger slot and the calendars."""
    k = env.shard(account_id)
    today, yesterday, _ = trading_days(at)
    env.admin.set(env.keys.calendar(k), calendar_blob(POLICY, CAL.trading_day(now_of(env.admin))))
    if clock == "message":
        env.admin.set(env.keys.account_calendar(k, account_id), calendar_blob(POLICY, today))
    if case.registered:
        env.admin.hset(env.keys.registry(k), account_id, dumps({
            "clock": clock, "currency": "USD", "created": "2026-01-05T12:00:00+00:00",
            "starts_at": "2026-01-05T12:00:00+00:00" if clock == "message" else None,
            "retired_at": "2026-02-02T12:00:00+00:00" if case.retired else None}))
    if case.state:
        view = view_of(case, today, yesterday)
        env.admin.hset(env.keys.state(k, account_id), mapping={
            "phase": case.raw_phase or case.phase, "halted": "1" if case.halted else "0",
            "degraded": "1" if case.degraded else "0", "position_size": case.size,
            "equity": case.equity or "",
            "equity_day": "" if view.equity_day is None else view.equity_day.isoformat()})
    if case.slot:
        env.admin.hset(env.keys.entries(k, account_id), f"slot:{today}", "proof|earlier-1")


def answer(d: EntryDecision) -> tuple[Any, ...]:
    return (d.allowed, d.reason, d.phase, d.position_size, d.next_allowed_at, d.remaining_today)


def expected(o: EntryOutcome) -> tuple[Any, ...]:
    return (o.allowed, o.reason, o.phase, o.position_size, o.next_allowed_at, o.remaining_today)


@pytest.mark.parametrize("clock", ["redis", "message"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_entry_script_answers_what_decide_entry_answers(env: Env, case: Case, clock: str) -> None:
    account_id = f"{case.id}-{clock}"
    message_clock = clock == "message" and case.registered
    at = FRIDAY if message_clock else now_of(env.admin)
    put_account(env, account_id, case, clock, at)
    today, yesterday, next_open = trading_days(at)

    got = env.client.request_entry(account_id, case.mode, case.kind,
                                   request_id=f"req-{case.id}", position_id="pos-1",
                                   at=FRIDAY if clock == "message" else None)

    want = decide_entry(view_of(case, today, yesterday), mode=case.mode, kind=case.kind,
                        clock=EntryClock(at, today, yesterday, next_open), min_size=MIN_SIZE)
    assert answer(got) == expected(want)
    if got.trading_day is not None:
        assert got.trading_day == today.isoformat()
    assert got.decision_id


def test_the_case_table_covers_every_entry_rule() -> None:
    today, yesterday, next_open = trading_days(FRIDAY)
    clock = EntryClock(FRIDAY, today, yesterday, next_open)
    rows = set()
    for case in CASES:
        o = decide_entry(view_of(case, today, yesterday), mode=case.mode, kind=case.kind,
                         clock=clock, min_size=MIN_SIZE)
        rows.add("paper_allowed" if o.allowed and o.phase == "experience"
                 and o.reason == "allowed" else o.reason)
    assert rows == {name for name, _ in ENTRY_RULES}


def test_daily_limit_points_at_the_next_open_across_the_dst_weekend(env: Env) -> None:
    case = Case("dst", "live", slot=True)
    put_account(env, "dst", case, "message", FRIDAY)
    got = env.client.request_entry("dst", "live", at=FRIDAY)
    assert (got.reason, got.next_allowed_at, got.remaining_today) == (
        "daily_limit", MONDAY_OPEN, 0)


# -- (a) the ledger, R-4.9 -----------------------------------------------------------------


def _proof(env: Env, account_id: str, **kw: Any) -> date:
    at = now_of(env.admin)
    put_account(env, account_id, Case(account_id, "live", **kw), "redis", at)
    return CAL.trading_day(at)


def test_an_allowed_live_entry_is_kept_by_its_decision_id_and_uses_the_slot(env: Env) -> None:
    today = _proof(env, "keeper")
    got = env.client.request_entry("keeper", "live", request_id="order-1")
    assert (got.allowed, got.remaining_today) == (True, 0)
    ledger = env.ledger("keeper")
    kept = json.loads(ledger[f"d:{got.decision_id}"])
    assert (kept["phase"], kept["size"], kept["day"], kept["request_id"]) == (
        "proof", "100.00", today.isoformat(), "order-1")
    assert ledger[f"slot:{today}"] == f"proof|{got.decision_id}"


def test_a_repeated_request_id_returns_the_stored_decision(env: Env) -> None:
    _proof(env, "repeat")
    first = env.client.request_entry("repeat", "live", request_id="order-1")
    again = env.client.request_entry("repeat", "live", request_id="order-1")
    other = env.client.request_entry("repeat", "live", request_id="order-2")
    other_again = env.client.request_entry("repeat", "live", request_id="order-2")
    assert first.allowed
    assert again == first
    assert other.reason == "daily_limit"
    assert other_again == other
    assert [k for k in env.ledger("repeat") if k.startswith("d:")] == [f"d:{first.decision_id}"]
    # the repeat was answered from the ledger, not counted as a second denial
    today = first.trading_day
    assert env.ledger("repeat")[f"denyn:{today}:daily_limit"] == "1"


def test_only_allowed_live_entries_are_recorded_as_decisions(env: Env) -> None:
    _proof(env, "paper-too")
    today = CAL.trading_day(now_of(env.admin))
    papers = [env.client.request_entry("paper-too", "paper") for _ in range(2)]
    assert all(p.allowed for p in papers)
    assert f"slot:{today}" not in env.ledger("paper-too")  # paper never uses the slot
    live = env.client.request_entry("paper-too", "live")
    assert live.allowed
    decisions = {k for k in env.ledger("paper-too") if k.startswith("d:")}
    assert decisions == {f"d:{live.decision_id}"}


def test_the_first_denial_per_reason_and_day_is_recorded_and_later_ones_counted(
        env: Env) -> None:
    today = _proof(env, "denied", phase="experience", size="0.00")
    for i in range(3):
        assert env.client.request_entry("denied", "live", request_id=f"live-{i}").reason == \
            "paper_only"
    env.admin.hset(env.keys.state(env.shard("denied"), "denied"), mapping={
        "phase": "trial", "halted": "1"})
    env.client.request_entry("denied", "live", request_id="tripped-0")
    ledger = env.ledger("denied")
    first = json.loads(ledger[f"deny:{today}:paper_only"])
    assert (first["reason"], first["request_id"], first["mode"]) == ("paper_only", "live-0", "live")
    assert ledger[f"denyn:{today}:paper_only"] == "3"
    assert json.loads(ledger[f"deny:{today}:circuit_breaker"])["request_id"] == "tripped-0"
    assert ledger[f"denyn:{today}:circuit_breaker"] == "1"


def test_emergency_exits_are_audited_and_consume_nothing(env: Env) -> None:
    today = _proof(env, "exiting")
    out = env.client.request_entry("exiting", "live", kind="emergency_exit", request_id="exit-1",
                                   position_id="pos-9")
    assert (out.allowed, out.reason, out.position_size) == (True, "emergency_exit", Decimal(0))
    record = json.loads(env.ledger("exiting")[f"exit:{today}:exit-1"])
    assert (record["request_id"], record["position_id"], record["mode"]) == (
        "exit-1", "pos-9", "live")
    assert f"slot:{today}" not in env.ledger("exiting")
    assert env.client.request_entry("exiting", "live").allowed  # the slot is still free


def test_an_emergency_exit_for_an_unregistered_id_writes_nothing(env: Env) -> None:
    before = set(env.admin.keys("*"))
    out = env.client.request_entry("ghost", "live", kind="emergency_exit", request_id="exit-1",
                                   position_id="pos-1")
    assert (out.allowed, out.reason) == (True, "emergency_exit")
    assert set(env.admin.keys("*")) == before


def test_decision_ids_are_redis_time_in_microseconds_and_a_sequence(env: Env) -> None:
    _proof(env, "ids", phase="trial")
    for i in range(1, 21):
        before = env.admin.time()
        got = env.client.request_entry("ids", "live")
        after = env.admin.time()
        micros, _, seq = got.decision_id.partition("-")
        low = int(before[0]) * 1_000_000 + int(before[1])
        high = int(after[0]) * 1_000_000 + int(after[1])
        assert low <= int(micros) <= high, got.decision_id
        assert seq == str(i)


def test_at_is_ignored_for_a_redis_clock_account(env: Env) -> None:
    today = _proof(env, "wallclock", phase="trial")
    got = env.client.request_entry("wallclock", "live", at=datetime(2020, 1, 7, 15, tzinfo=UTC))
    assert got.allowed
    assert got.trading_day == today.isoformat()


def test_a_replay_account_decides_at_its_message_time_right_after_registration(
        env: Env) -> None:
    register(env.worker, "replay-1", clock="message", starts_at="2020-01-06T14:00:00+00:00",
             currency="EUR")
    at = datetime(2020, 1, 7, 15, tzinfo=UTC)
    got = env.client.request_entry("replay-1", "paper", at=at)
    assert (got.allowed, got.phase, got.trading_day) == (True, "experience", "2020-01-07")
    live = env.client.request_entry("replay-1", "live", at=at)
    assert live.reason == "paper_only"
    assert env.ledger("replay-1")["denyn:2020-01-07:paper_only"] == "1"


# -- (b) the proof-slot race: exactly one of the concurrent requests wins ------------------------

RACERS = 8
ROUNDS = 20


def _race(url: str, racer: int, barrier: Any, results: Any) -> None:
    """One bot process: per round, wait for the others, then ask for the same account's slot."""
    conn = redis.Redis.from_url(url)
    try:
        client = PhaseguardClient(conn, PREFIX)
        client.meta()  # connect and read P:meta before the start signal
        for rnd in range(ROUNDS):
            barrier.wait(timeout=30)
            d = client.request_entry(f"race-{rnd}", "live", request_id=f"r{rnd}-p{racer}")
            results.put((rnd, d.allowed, d.reason, d.trading_day,
                         None if d.next_allowed_at is None else d.next_allowed_at.timestamp()))
    finally:
        conn.close()


def test_of_concurrent_live_proof_requests_exactly_one_is_allowed(
        env: Env, role_url: Callable[[Role], str]) -> None:
    at = now_of(env.admin)
    for rnd in range(ROUNDS):
        put_account(env, f"race-{rnd}", Case("race", "live"), "redis", at)
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(RACERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_race, args=(role_url("bot"), i, barrier, results))
             for i in range(RACERS)]
    for p in procs:
        p.start()
    try:
        answers = [results.get(timeout=60) for _ in range(RACERS * ROUNDS)]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        results.close()
        results.join_thread()
    assert [p.exitcode for p in procs] == [0] * RACERS
    for rnd in range(ROUNDS):
        mine = [a for a in answers if a[0] == rnd]
        assert len(mine) == RACERS
        winners = [a for a in mine if a[1]]
        assert len(winners) == 1, mine
        for _, _, reason, day, next_at in (a for a in mine if not a[1]):
            assert reason == "daily_limit"
            assert next_at == CAL.session_end(date.fromisoformat(day)).timestamp()
        slot_days = [k for k in env.ledger(f"race-{rnd}") if k.startswith("slot:")]
        assert len(slot_days) == 1


# -- (c): what the bot and ops users may write ------------------------------------------


def test_the_bot_can_publish_and_get_entry_decisions(env: Env) -> None:
    register(env.worker, "bot-ok")
    entry_id = env.client.publish_trade_closed(trade("bot-ok", "t-1", now_of(env.admin)))
    k = env.shard("bot-ok")
    assert [text(i) for i, _ in env.admin.xrange(env.keys.inbox(k))] == [entry_id]
    env.admin.set(env.keys.calendar(k), calendar_blob(POLICY, CAL.trading_day(now_of(env.admin))))
    assert env.client.request_entry("bot-ok", "paper").allowed


@pytest.mark.parametrize("command", [
    pytest.param(lambda keys, k: ("HSET", keys.state(k, "bot-no"), "phase", "scaling"),
                 id="hset-state"),
    pytest.param(lambda keys, k: ("HSET", keys.registry(k), "intruder", "{}"), id="hset-registry"),
    pytest.param(lambda keys, k: ("XADD", keys.history(k, "bot-no"), "*", "type", "x"),
                 id="xadd-history"),
    pytest.param(lambda keys, k: ("XADD", keys.events(k), "*", "type", "phase_changed"),
                 id="xadd-events"),
    pytest.param(lambda keys, k: ("XADD", keys.deadletter(k), "*", "reason", "x"),
                 id="xadd-deadletter"),
    pytest.param(lambda keys, k: ("SET", keys.calendar(k), "{}"), id="set-calendar"),
    pytest.param(lambda keys, k: ("LPUSH", f"rq:queue:{RQ_QUEUE}", "job-1"), id="lpush-rq-queue"),
    pytest.param(lambda keys, k: ("XACK", keys.inbox(k), "phaseguard", "0-1"), id="xack-inbox"),
])
def test_the_bot_cannot_write_anything_else(env: Env, command: Callable[[Keys, int],
                                                                         tuple[str, ...]]) -> None:
    register(env.worker, "bot-no")
    k = env.shard("bot-no")
    before = env.admin.hgetall(env.keys.state(k, "bot-no"))
    with pytest.raises(redis.exceptions.NoPermissionError):
        env.bot.execute_command(*command(env.keys, k))
    assert env.admin.hgetall(env.keys.state(k, "bot-no")) == before
    assert env.admin.xlen(env.keys.events(k)) == 0
    assert env.admin.llen(f"rq:queue:{RQ_QUEUE}") == 0


def test_the_bot_cannot_enqueue_an_ops_job(env: Env) -> None:
    queue = Queue(RQ_QUEUE, connection=env.bot, serializer=JSONSerializer)
    with pytest.raises(redis.exceptions.NoPermissionError):
        queue.enqueue("worker.jobs.accounts_add", {"account_id": "sneaky"})
    assert env.admin.llen(f"rq:queue:{RQ_QUEUE}") == 0
    assert env.admin.keys("rq:job:*") == []


def test_the_ops_user_cannot_write_state(env: Env) -> None:
    register(env.worker, "ops-no")
    key = env.keys.state(env.shard("ops-no"), "ops-no")
    with pytest.raises(redis.exceptions.NoPermissionError):
        env.ops.hset(key, "phase", "scaling")
    assert text(env.admin.hget(key, "phase")) == "experience"



# -- the calendar blob: the current form and the earlier one ---------------------------------------


def test_the_script_reads_the_earlier_calendar_form_the_same_way(env: Env) -> None:
    """Until the worker republishes a shard's calendar after an upgrade, the blob may still hold
    the earlier form (opens as [[day, epoch seconds], ...]): the same days, the same answer."""
    register(env.worker, "cal-1")
    k = env.shard("cal-1")
    blob = calendar_blob(POLICY, CAL.trading_day(now_of(env.admin)))
    opens = calendar_opens(blob)
    assert opens == sorted(opens)
    assert all(int(CAL.session_open(d).timestamp()) == at for d, at in opens)
    earlier = json.dumps({"opens": [[d.isoformat(), at] for d, at in opens],
                          "min_size": json.loads(blob)["min_size"]})
    answers = []
    for form in (blob, earlier):
        env.admin.set(env.keys.calendar(k), form)
        d = env.client.request_entry("cal-1", "paper")
        answers.append((d.allowed, d.reason, d.trading_day, d.phase, d.position_size))
    assert answers[0] == answers[1]
    assert answers[0][2] == CAL.trading_day(now_of(env.admin)).isoformat()
