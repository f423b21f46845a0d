"""Properties of the engine over generated histories (SPEC R-10.3, R-10.4, the state's bound).

Every history goes through `decide` message by message, as the worker sends it. Each test's
docstring states the domain it quantifies over; outside it the property is not claimed.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.messages import SessionEnded, TradeClosed
from worker.domain import actions
from worker.domain.calendar import Calendar
from worker.domain.decide import (
    EMPTY_LEDGER,
    Decision,
    LedgerDay,
    LedgerDecision,
    LedgerView,
    Message,
    Sweep,
    cutoff_day,
    decide,
    evaluate,
    new_account,
)
from worker.domain.metrics import EpochContext, fold
from worker.domain.model import PHASES, AccountState, Clock, Kind, Phase, Registration
from worker.domain.policy import DEFAULT_POLICY
from worker.store.codec import decode_state, encode_state, encoded_size

POLICY = DEFAULT_POLICY
CAL = Calendar(POLICY.calendar)
ACCOUNT = "acct-prop"
FIRST_DAY = date(2026, 1, 5)
MINUTE = timedelta(minutes=1)
STATE_LIMIT = 16 * 1024  # bytes of the state hash (field names and values)
LONGEST_ACCOUNT = "A" * 64  # at most 64 characters
# Trade ids of the size test: 32 characters that JSON writes as themselves.
ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/"
# The entry script's denial reasons: the size test's ledger denies entries for every one, daily.
DENIAL_REASONS = ("unknown_account", "account_retired", "state_unavailable", "paper_only",
                  "circuit_breaker", "input_dead_lettered", "equity_unknown", "equity_depleted",
                  "size_below_minimum", "daily_limit")

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- running histories -----------------------------------------------------------------------


def trading_days(start: date, count: int) -> list[date]:
    """`count` consecutive trading days from the first trading day on or after `start`."""
    day = start if CAL.is_trading_day(start) else CAL.next_trading_day(start)
    days = [day]
    while len(days) < count:
        days.append(CAL.next_trading_day(days[-1]))
    return days


def message_time(msg: Message) -> datetime | None:
    if isinstance(msg, TradeClosed):
        return msg.closed_at
    if isinstance(msg, SessionEnded):
        return msg.ended_at
    return None


@dataclass
class Run:
    """One account's history as the worker would process it: every decision, in order."""

    state: AccountState
    ledger: LedgerView = EMPTY_LEDGER
    now: datetime | None = None
    decisions: list[Decision] = field(default_factory=list)

    def feed(self, msg: Message, *, now: datetime | None = None,
             roundtrip: bool = False) -> Decision:
        """Decide one message at `now` (default: a minute after the message's own time).

        With `roundtrip` the state is first written and read back, as a worker that loads it
        from Redis would see it."""
        at = message_time(msg)
        if now is None:
            now = self.now if at is None else at + MINUTE
        self.now = now if self.now is None else max(self.now, now)
        state = decode_state(encode_state(self.state)) if roundtrip else self.state
        decision = decide(state, self.ledger, msg, POLICY, self.now, f"m{len(self.decisions)}")
        self.decisions.append(decision)
        self.state = decision.state
        return decision

    def dead_letters(self) -> list[str]:
        return [d.dead_letter.reason for d in self.decisions if d.dead_letter is not None]

    def session_records(self) -> dict[str, dict[str, Any]]:
        """The latest session_closed/session_amended record per trading day, without the two
        flags that R-10.4 lets depend on arrival order."""
        latest: dict[str, dict[str, Any]] = {}
        for decision in self.decisions:
            for record in decision.history:
                if record.type in ("session_closed", "session_amended"):
                    latest[record.payload["trading_day"]] = {
                        k: v for k, v in record.payload.items()
                        if k not in ("closed_implicitly", "amended")}
        return latest


def register(at: datetime, *, clock: Clock = "redis", phase: Phase = "experience",
             account_id: str = ACCOUNT) -> AccountState:
    """A fresh account registered at `at`, forced up to `phase` at once (if above experience)."""
    reg = Registration(account_id, clock, "USD", at,
                       starts_at=at if clock == "message" else None)
    state = new_account(reg, POLICY)
    while PHASES.index(state.phase) < PHASES.index(phase):
        result = actions.act_force_advance(state, POLICY, at, target=None, operator_id="op-1",
                                           reason="property setup", cause="setup")
        assert result.outcome == "applied", result
        state = result.state
    return state


def paper_trade(trade_id: str, closed_at: datetime, pnl: Decimal, kind: Kind,
                opened_at: datetime | None) -> TradeClosed:
    return TradeClosed(schema_version=1, account_id=ACCOUNT, trade_id=trade_id, mode="paper",
                       closed_at=closed_at, pnl=pnl, kind=kind, opened_at=opened_at)


def session_ended(day: date, equity: Decimal | None) -> SessionEnded:
    return SessionEnded(schema_version=1, account_id=ACCOUNT, trading_day=day,
                        ended_at=CAL.session_open(day) + timedelta(hours=9), equity=equity)


def refold_invariant(state: AccountState) -> bool:
    """`current` is always the fold of the settled tally and the horizon's trades."""
    ctx = EpochContext(state.epoch_start, state.epoch_inclusive, state.epoch_start_equity,
                       state.window)
    return state.current == fold(state.settled, state.recent, ctx)


def observable(decision: Decision) -> tuple[Any, ...]:
    """All a decision publishes or writes, instants with their offsets (isoformat)."""
    return (
        decision.outcome, decision.dead_letter,
        [(e.type, e.effective_at.isoformat(), e.trading_day, e.payload)
         for e in decision.events],
        [(r.type, r.payload) for r in decision.history],
        decision.consumed_decisions, decision.closed_days,
    )


# --- (a): arrival order does not matter without transitions --------------------------

cents = st.integers(-50_000, 50_000).map(lambda c: Decimal(c).scaleb(-2))


def sized(low: int, high: int, elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    """Lists whose length is uniform in low..high: hypothesis' own lists are mostly short."""
    return st.integers(low, high).flatmap(
        lambda n: st.lists(elements, min_size=n, max_size=n))


@st.composite
def paper_histories(draw: st.DrawFn) -> dict[str, Any]:
    start = FIRST_DAY + timedelta(days=draw(st.integers(0, 700)))
    days = trading_days(start, draw(st.integers(1, 6)))
    trades = draw(sized(1, 60, st.tuples(
        st.integers(0, len(days) - 1),  # trading day
        st.integers(0, 86_399_999_999),  # microseconds after that day's open: inside its session
        cents,
        st.sampled_from(["regular", "regular", "regular", "emergency_exit"]),
        st.none() | st.integers(0, 3 * 86_400),  # opened this many seconds before closing
    )))
    # each session_ended reports an equity or not, independently (late reports amend later
    # sessions' start equity, R-10.4)
    equities = draw(st.lists(st.none() | st.integers(0, 10**9).map(
        lambda c: Decimal(c).scaleb(-2)), min_size=len(days), max_size=len(days)))
    order = draw(st.permutations(range(len(trades))))
    return {"days": days, "trades": trades, "order": order, "equities": equities}


def paper_messages(h: dict[str, Any]) -> tuple[list[TradeClosed], list[SessionEnded]]:
    days: list[date] = h["days"]
    trades = []
    for i, (d, offset_us, pnl, kind, back) in enumerate(h["trades"]):
        closed = CAL.session_open(days[d]) + timedelta(microseconds=offset_us)
        opened = None if back is None else closed - timedelta(seconds=back)
        trades.append(paper_trade(f"T{i}", closed, pnl, kind, opened))
    ends = [session_ended(day, eq) for day, eq in zip(days, h["equities"], strict=True)]
    return trades, ends


@PROPERTY
@given(paper_histories())
def test_r10_4_histories_without_transitions_give_the_same_metrics_and_records_in_any_order(
        h: dict[str, Any]) -> None:
    """Domain: an experience account (redis clock, default policy: experience is never
    downgraded and auto_advance is false, so nothing transitions) registered at the open of the
    first day; 1-60 paper trades (so none is an unauthorized entry) over 1-6 consecutive trading
    days from a start anywhere in 2026-2027, each closed anywhere inside its day's session
    (microsecond times), P&L -500.00 .. 500.00 in cents including zero, kind regular or
    emergency_exit, opened_at absent or up to three days before closing (so also before the
    registration, outside the epoch); then one session_ended per day, in day order, at 16:00,
    each reporting an equity or not. At most six trading days means no trade or
    session_ended is ever before the horizon (R-10.3), so no arrival order dead-letters anything.

    Claim (R-10.4): sending the trades in any order, then the session ends, gives the same
    metrics (the tally of every trade, the gate evaluation, the closed-day count) and the same
    final session record per day (the last session_closed/session_amended written for it),
    apart from `closed_implicitly` and `amended`, as sending them in trade order with each
    day's session_ended after its trades.
    """
    trades, ends = paper_messages(h)
    registered = CAL.session_open(h["days"][0])

    in_order = Run(register(registered))
    by_day = sorted(trades, key=lambda m: (m.closed_at, m.trade_id))
    for end in ends:
        for msg in by_day:
            if CAL.trading_day(msg.closed_at) == end.trading_day:
                in_order.feed(msg)
        in_order.feed(end)

    shuffled = Run(register(registered))
    for i in h["order"]:
        shuffled.feed(trades[i])
    for end in ends:
        shuffled.feed(end)

    assert in_order.dead_letters() == shuffled.dead_letters() == []
    assert shuffled.state.current == in_order.state.current
    assert evaluate(shuffled.state, POLICY) == evaluate(in_order.state, POLICY)
    assert shuffled.state.closed_days == in_order.state.closed_days
    assert shuffled.session_records() == in_order.session_records()


# --- (b), (c) any history: determinism and identical duplicates ------------------------------

LEDGER_DECISIONS = {
    "ok-proof": ("proof", "100.00"), "ok-trial": ("trial", "200.00"),
    "ok-scaling": ("scaling", "300.00"), "exp": ("experience", "0.00"),
}
PNLS = [Decimal(v) for v in ("-1200", "-600", "-250.5", "-40", "-3.25", "0", "0.01", "7",
                              "25.50", "60", "400")]
EQUITIES = [Decimal(v) for v in ("10000", "9400.00", "12000.5", "500", "0", "-20")]


@st.composite
def any_histories(draw: st.DrawFn) -> dict[str, Any]:
    """Raw material of a history; see `any_messages` for what it becomes."""
    # days relative to the latest day so far: mostly the same, sometimes the next, sometimes
    # an earlier one (a late message)
    day_index = st.sampled_from([0] * 6 + [1, 1, 2, -1, -3])
    trade = st.tuples(
        st.just("trade"), day_index, st.integers(0, 86_399), st.sampled_from(PNLS),
        st.sampled_from(["live", "live", "paper"]),
        st.sampled_from(["regular"] * 6 + ["emergency_exit", "manual"]),
        st.none() | st.integers(0, 2 * 86_400),
        # mostly authorized: an unauthorized entry trips the breaker, which stops downgrades
        st.sampled_from(["ok-proof"] * 40 + [*LEDGER_DECISIONS, None, "unknown"]),
        st.sampled_from(EQUITIES), st.sampled_from(["100.00"] * 10 + ["50.00", "300.00"]))
    end = st.tuples(st.just("end"), day_index, st.none() | st.sampled_from(EQUITIES))
    sweep = st.tuples(st.just("sweep"), st.integers(0, 72))
    repeat = st.tuples(st.just("repeat"), st.integers(0, 10**6), st.booleans())
    return {
        "start": FIRST_DAY + timedelta(days=draw(st.integers(0, 700))),
        "phase": draw(st.sampled_from(PHASES)),
        "clock": draw(st.sampled_from(["redis", "redis", "message"])),
        "entered": draw(st.lists(st.booleans(), min_size=10, max_size=10)),
        "items": draw(sized(1, 60, st.one_of(trade, trade, trade, end, sweep, repeat))),
    }


Timed = tuple[Message, datetime | None]  # a message and the worker clock to decide it at (or
# None: a minute after the message's own time)


def any_messages(h: dict[str, Any]) -> tuple[AccountState, LedgerView, list[Timed]]:
    """The registered account, its entry ledger and the messages with the sweeps' clocks."""
    days = trading_days(h["start"], 10)
    registered = CAL.session_open(days[0]) - timedelta(hours=2)
    state = register(registered, clock=h["clock"], phase=h["phase"])
    ledger = LedgerView(
        decisions={k: LedgerDecision(k, phase, Decimal(size), days[0])
                   for k, (phase, size) in LEDGER_DECISIONS.items()},
        days={day: LedgerDay(day, live_entry_phase="proof" if entered else None,
                             denial_counts=(("daily_limit", 2),) if entered else ())
              for day, entered in zip(days, h["entered"], strict=True)})
    messages: list[Timed] = []
    sent: list[TradeClosed] = []
    last = registered
    latest = 0  # the latest day index so far

    def day_of(shift: int) -> date:
        nonlocal latest
        index = min(max(latest + shift, 0), len(days) - 1)
        latest = max(latest, index)
        return days[index]

    for item in h["items"]:
        msg: Message
        now: datetime | None = None
        if item[0] == "trade":
            _, shift, offset, pnl, mode, kind, back, decision, equity, size = item
            closed = CAL.session_open(day_of(shift)) + timedelta(seconds=offset)
            live = mode == "live"
            msg = TradeClosed(
                schema_version=1, account_id=ACCOUNT, trade_id=f"T{len(sent)}", mode=mode,
                closed_at=closed, pnl=pnl, kind=kind,
                opened_at=None if back is None else closed - timedelta(seconds=back),
                entry_decision_id=decision, position_size=Decimal(size) if live else None,
                equity_after=equity if live else None,
                operator_id="op-1" if kind == "manual" else None)
            sent.append(msg)
        elif item[0] == "end":
            msg = session_ended(day_of(item[1]), item[2])
        elif item[0] == "sweep":
            msg, now = Sweep(), last + timedelta(hours=item[1])
        elif sent:
            msg = sent[item[1] % len(sent)]
            if item[2]:  # the same trade id with other content
                msg = msg.model_copy(update={"pnl": msg.pnl + 1})
        else:
            continue
        at = message_time(msg)
        last = max(last, at) if at is not None else now or last
        messages.append((msg, now))
    return state, ledger, messages


def replay(h: dict[str, Any], *, roundtrip: bool = False) -> tuple[Run, list[Message]]:
    state, ledger, messages = any_messages(h)
    run = Run(state, ledger)
    for msg, now in messages:
        run.feed(msg, now=now, roundtrip=roundtrip)
    return run, [msg for msg, _ in messages]


@PROPERTY
@given(any_histories())
def test_r10_4_the_same_inbox_order_always_gives_the_same_result(h: dict[str, Any]) -> None:
    """Domain: any history of up to 60 messages over ten consecutive trading days from a start
    anywhere in 2026-2027, for an account registered two hours before the first open (redis or
    message clock) and forced up to any phase: live and paper trades of every kind with P&L
    from -1200 to 400 (so streaks, rolling win rates and daily losses fire downgrades and trip
    the breaker), equity from -20 to 12000.5 (unknown, depleted and known equity), cited entry
    decisions allowed in any phase, missing or unknown (unauthorized entries), opened_at absent
    or up to two days earlier; session_ended for any of those days with or without equity;
    sweeps up to 72 hours after the latest message; repeats of earlier trades, identical or
    with other content; all in arbitrary arrival order (late trades, dead letters), against an
    entry ledger that allowed live entries on some days.

    Claim (R-10.4): replaying the same messages in the same order gives identical decisions
    (outcome, dead letter, events with their instants' offsets, history, ledger clean-up) and
    an identical encoded state, also when every message is decided on the state as read back
    from its encoding (another worker, R-10.1); and after every message the running tally
    equals a refold of the horizon onto the settled tally.
    """
    first, _ = replay(h)
    again, _ = replay(h)
    reloaded, _ = replay(h, roundtrip=True)

    assert [observable(d) for d in again.decisions] == [observable(d) for d in first.decisions]
    assert [observable(d) for d in reloaded.decisions] == [
        observable(d) for d in first.decisions]
    assert encode_state(again.state) == encode_state(first.state)
    assert encode_state(reloaded.state) == encode_state(first.state)
    assert all(refold_invariant(d.state) for d in first.decisions)


@PROPERTY
@given(any_histories())
def test_r10_3_resending_an_applied_trade_changes_nothing(h: dict[str, Any]) -> None:
    """Domain: the histories of the determinism property above, then every trade_closed that
    was applied in them is sent once more, identical, to the final state.

    Claim (R-10.3): each repeat changes nothing: the outcome is `duplicate` while the trade is
    inside the dedupe horizon (closed at or after the open of the trading day five trading days
    before the highest applied trade's), else `too_late`; either way no event, no history, and
    the very same state.
    """
    run, messages = replay(h)
    trades = [msg for msg, d in zip(messages, run.decisions, strict=True)
              if isinstance(msg, TradeClosed) and d.outcome == "applied"]
    state = run.state
    cut = cutoff_day(state, POLICY, CAL)

    for msg in trades:
        decision = decide(state, run.ledger, msg, POLICY, run.now or msg.closed_at, "again")

        inside = cut is None or msg.closed_at >= CAL.session_open(cut)
        assert decision.outcome == ("duplicate" if inside else "dead_letter")
        if not inside:
            assert decision.dead_letter is not None
            assert decision.dead_letter.reason == "too_late"
        assert decision.state is state
        assert decision.events == decision.history == ()


# --- (d) the encoded state stays bounded ------------------------------------------------------


def bulky_history(rng: random.Random, per_day: Sequence[int],
                  start: date = FIRST_DAY) -> Iterable[tuple[date, list[TradeClosed],
                                                             SessionEnded]]:
    """Worst-case sized days: per day `per_day[i]` live trades with 32-character ids, P&L and
    equity with the most digits of the domain, microsecond times, then session_ended."""
    day = start if CAL.is_trading_day(start) else CAL.next_trading_day(start)
    n = 0
    for count in per_day:
        offsets = sorted(rng.randrange(86_400_000_000) for _ in range(count))
        trades = []
        for offset in offsets:
            n += 1
            closed = CAL.session_open(day) + timedelta(microseconds=offset)
            kind = rng.choice(["regular", "regular", "emergency_exit", "manual"])
            trades.append(TradeClosed(
                schema_version=1, account_id=ACCOUNT,
                trade_id=f"{rng.choice(ID_ALPHABET) * 22}{n:010d}", mode="live",
                closed_at=closed, pnl=Decimal(rng.randrange(-9_999_999, 10_000_000)).scaleb(-2),
                kind=kind, opened_at=closed - timedelta(microseconds=rng.randrange(3 * 10**11)),
                entry_decision_id=rng.choice(["ok-proof", "ok-trial", "exp", None]),
                position_size=Decimal("100.00"),
                equity_after=Decimal(rng.randrange(-999_999_999, 10**9)).scaleb(-2),
                operator_id="op-1" if kind == "manual" else None))
        end = session_ended(day, Decimal(rng.randrange(-999_999_999, 10**9)).scaleb(-2))
        yield day, trades, end
        day = CAL.next_trading_day(day)


def bulky_ledger(days: Iterable[date]) -> LedgerView:
    """Allowed decisions in every phase, and each day an entry denied for every reason."""
    denials = tuple((reason, 999_999) for reason in DENIAL_REASONS)
    return LedgerView(
        decisions={k: LedgerDecision(k, phase, Decimal(size), FIRST_DAY)
                   for k, (phase, size) in LEDGER_DECISIONS.items()},
        days={day: LedgerDay(day, live_entry_phase="proof", denial_counts=denials)
              for day in days})


def size_of(state: AccountState) -> int:
    return encoded_size(encode_state(state))


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(per_day=sized(1, 40, st.integers(0, 20) | st.just(20)),
       seed=st.integers(0, 2**32), phase=st.sampled_from(["proof", "trial", "scaling"]))
def test_the_encoded_state_stays_under_16_kib_after_every_message(
        per_day: list[int], seed: int, phase: Phase) -> None:
    """Domain: an account of the 64-character maximum id forced up to proof, trial or scaling,
    1-40 consecutive trading days of 0-20 live trades each (so downgrades, breaker trips and
    unauthorized entries happen) with trade ids of exactly 32 characters that JSON writes as
    themselves (letters, digits, "-_.:/"), P&L with cents up to ±99,999.99, equity_after and
    session equity with cents up to ±9,999,999.99, closed_at at random microseconds inside the
    session and opened_at up to 3.5 days earlier; one session_ended per day with equity; and an
    entry ledger that denied every reason on every day (the session records count them).
    The horizon holds at most six trading days (R-10.3), so the history's length beyond that
    does not matter; the deterministic test below runs 2,000 days.

    Claim: after every message the state hash (field names and values, UTF-8) is under
    16 KiB, and decode(encode(state)) == state.
    """
    rng = random.Random(seed)
    history = list(bulky_history(rng, per_day))
    run = Run(register(CAL.session_open(FIRST_DAY) - timedelta(hours=1), phase=phase,
                       account_id=LONGEST_ACCOUNT),
              bulky_ledger(day for day, _, _ in history))
    for _, trades, end in history:
        for msg in [*trades, end]:
            run.feed(msg)
            assert size_of(run.state) < STATE_LIMIT

    assert decode_state(encode_state(run.state)) == run.state
    assert run.dead_letters() == []


def test_two_thousand_trading_days_of_twenty_trades_stay_under_16_kib() -> None:
    """Domain: the size property's worst case run long: 2,000 consecutive trading days (about
    eight years) of exactly 20 such trades each, 40,000 trades, with every denial reason counted
    every day; the size measured at each day's fullest point, after its session_ended (all the
    horizon's trades, the day's equity report and denial counts, the next day's session open).

    Claim: the state never reaches 16 KiB, however long the history, and it reads back equal.
    """
    run = Run(register(CAL.session_open(FIRST_DAY) - timedelta(hours=1), phase="trial",
                       account_id=LONGEST_ACCOUNT),
              bulky_ledger(trading_days(FIRST_DAY, 2000)))
    largest = 0
    for _, trades, end in bulky_history(random.Random(2000), [20] * 2000):
        for msg in trades:
            run.feed(msg)
        run.feed(end)
        largest = max(largest, size_of(run.state))

    assert largest < STATE_LIMIT
    assert run.state.current.trades == 40_000
    assert decode_state(encode_state(run.state)) == run.state


@PROPERTY
@given(ids=st.lists(st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=40),
                    min_size=1, max_size=12, unique=True),
       seed=st.integers(0, 2**32))
def test_any_trade_id_survives_the_state_encoding(ids: list[str], seed: int) -> None:
    """Domain: paper trades whose ids are any text of 1-40 characters (commas, quotes,
    backslashes, control characters, any script; no lone surrogates, which the inbox refuses),
    one trading day, random P&L and times.

    Claim: decode(encode(state)) == state, trade ids included.
    """
    rng = random.Random(seed)
    run = Run(register(CAL.session_open(FIRST_DAY)))
    for trade_id in ids:
        closed = CAL.session_open(FIRST_DAY) + timedelta(microseconds=rng.randrange(8 * 10**10))
        run.feed(paper_trade(trade_id, closed, Decimal(rng.randrange(-999, 999)).scaleb(-2),
                             "regular", None))

    assert [t.trade_id for t in decode_state(encode_state(run.state)).recent] == [
        t.trade_id for t in run.state.recent]
    assert decode_state(encode_state(run.state)) == run.state
