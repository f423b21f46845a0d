"""decide(state, ledger, message, policy, now) -> Decision: the one pure entry point per message.

Handles `trade_closed`, `session_ended` and the session-close sweep (SPEC §2, §3, §5, §6, §10.3-5).
The caller gathers (decodes, loads state and the entry ledger), calls this once, and applies the
returned Decision in one MULTI/EXEC. Nothing here performs I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
from base64 import urlsafe_b64encode
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, fields, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from operator import attrgetter
from typing import Any

from contracts.messages import SessionEnded, TradeClosed
from worker.domain.calendar import Calendar
from worker.domain.metrics import EpochContext, Outcomes, Tally, Window, fold, q4
from worker.domain.model import (
    LIVE_PHASES,
    PHASES,
    AccountState,
    EquityReport,
    Phase,
    Registration,
    SessionMeta,
    Trade,
)
from worker.domain.policy import CalendarPolicy, Policy
from worker.domain.rules import (
    NEXT_PHASE,
    GateInputs,
    GateResult,
    Trigger,
    consecutive_losses,
    daily_loss,
    evaluate_gate,
    position_size,
    rolling_win_rate,
)

JSON = dict[str, Any]
_TRADE_ID = attrgetter("trade_id")
_TRADE_DAY = attrgetter("day")
_REPORT_AT = attrgetter("at")


@lru_cache(maxsize=16)
def calendar_of(policy: CalendarPolicy) -> Calendar:
    """The Calendar of a calendar policy, built once: every message needs one."""
    return Calendar(policy)


@lru_cache(maxsize=1024)
def _trading_days_before(cal: Calendar, day: date, n: int) -> date:
    return cal.add_trading_days(day, -n)


# -- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerDecision:
    """An allowed live entry decision recorded by the entry script (R-4.8)."""

    decision_id: str
    phase: Phase
    size: Decimal
    day: date


@dataclass(frozen=True, slots=True)
class LedgerDay:
    """One trading day of the entry ledger (R-4.6, R-4.9)."""

    day: date
    live_entry_phase: Phase | None = None  # phase of the day's allowed live entry, if any
    first_denials: tuple[JSON, ...] = ()  # first denial per reason: {reason, at, request_id, ...}
    denial_counts: tuple[tuple[str, int], ...] = ()  # every denial per reason, first included
    emergency_exits: tuple[JSON, ...] = ()


@dataclass(frozen=True, slots=True)
class LedgerView:
    """What the gather step read of the account's entry ledger."""

    decisions: dict[str, LedgerDecision] = field(default_factory=dict)
    days: dict[date, LedgerDay] = field(default_factory=dict)


EMPTY_LEDGER = LedgerView()


@dataclass(frozen=True, slots=True)
class Sweep:
    """The periodic session-close sweep (R-10.5): close sessions whose end + grace has passed."""


Message = TradeClosed | SessionEnded | Sweep


# -- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Emitted:
    """An event before its envelope: the apply step adds event_id, occurred_at and caused_by."""

    type: str
    effective_at: datetime
    trading_day: date | None
    payload: JSON


@dataclass(frozen=True, slots=True)
class Record:
    """A history stream entry (R-8.1)."""

    type: str
    payload: JSON


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class Decision:
    state: AccountState
    outcome: str  # applied | duplicate | dead_letter | noop
    events: tuple[Emitted, ...] = ()
    history: tuple[Record, ...] = ()
    dead_letter: DeadLetter | None = None
    consumed_decisions: tuple[str, ...] = ()  # ledger decision ids a trade has now cited
    closed_days: tuple[date, ...] = ()  # ledger days whose session closed (cleaned up)

    @property
    def changed(self) -> bool:
        return self.outcome == "applied"


class _Out:
    """Accumulates what one decision emits, in order."""

    def __init__(self) -> None:
        self.events: list[Emitted] = []
        self.history: list[Record] = []
        self.consumed: list[str] = []
        self.closed_days: list[date] = []

    def emit(self, type_: str, at: datetime, day: date | None, payload: JSON) -> None:
        self.events.append(Emitted(type_, at, day, payload))

    def record(self, type_: str, payload: JSON) -> None:
        self.history.append(Record(type_, payload))

    def decision(self, state: AccountState, outcome: str = "applied") -> Decision:
        return Decision(state, outcome, tuple(self.events), tuple(self.history), None,
                        tuple(self.consumed), tuple(self.closed_days))


def dead(state: AccountState, reason: str, error: str) -> Decision:
    return Decision(state, "dead_letter", dead_letter=DeadLetter(reason, error))


# -- registration ------------------------------------------------------------------------------


def new_account(reg: Registration, policy: Policy) -> AccountState:
    """The state of a freshly registered account: experience, first epoch (R-1.1, R-1.5, R-7.7)."""
    cal = calendar_of(policy.calendar)
    start = reg.starts_at if reg.clock == "message" and reg.starts_at else reg.created_at
    return AccountState(
        account_id=reg.account_id, clock=reg.clock, currency=reg.currency, phase="experience",
        version=1, updated_at=reg.created_at, tenure_start=start, epoch_start=start,
        epoch_inclusive=reg.clock == "message", current_day=cal.trading_day(start),
        window=window_of(policy), sessions=(SessionMeta(cal.trading_day(start),
                                                        phases=("experience",)),),
        position_size=Decimal("0.00"), size_reason="0.00: experience is paper only",
    )


def window_of(policy: Policy) -> Window:
    return Window(trades=policy.trade_window_capacity,
                  sessions=policy.session_window_capacity,
                  triggers=policy.downgrade.rolling_window)


# -- helpers over the state --------------------------------------------------------------------


_STATE_FIELDS = tuple(f.name for f in fields(AccountState))
_STATE_FIELD_SET = frozenset(_STATE_FIELDS)
_set = object.__setattr__


def _evolve(state: AccountState, **changes: Any) -> AccountState:
    """`dataclasses.replace` for the per-trade path, at about half its cost.

    AccountState has no __post_init__ and no init=False fields, so copying every slot and
    overriding `changes` is exactly what replace would build.
    """
    if not _STATE_FIELD_SET.issuperset(changes):
        raise TypeError(f"AccountState has no field {sorted(set(changes) - _STATE_FIELD_SET)}")
    new = object.__new__(AccountState)
    for name in _STATE_FIELDS:
        _set(new, name, changes[name] if name in changes else getattr(state, name))
    return new


def ctx_of(state: AccountState) -> EpochContext:
    return EpochContext(state.epoch_start, state.epoch_inclusive, state.epoch_start_equity,
                        state.window)


def equity_at(state: AccountState, instant: datetime, cal: Calendar, *,
              day: date | None = None) -> Decimal | None:
    """R-2.8: the last equity reported at or before `instant`, if known there (`day`: the
    trading day of `instant`, when the caller already knows it)."""
    # Reports are kept in time order: the last one at or before `instant` by bisection.
    idx = bisect_right(state.equity, instant, key=_REPORT_AT)
    if idx == 0:
        return None
    found = state.equity[idx - 1]
    if day is None:
        day = cal.trading_day(instant)
    if found.day == day or found.day == cal.previous_trading_day(day):
        return found.value
    return None


def account_now(state: AccountState, now: datetime) -> datetime:
    """R-1.6: replay accounts live on message time; everyone else on the worker's clock."""
    if state.clock == "message":
        return state.clock_at if state.clock_at is not None else state.epoch_start
    return now


def _add_report(state: AccountState, rep: EquityReport) -> AccountState:
    return _evolve(state, equity=_with_report(state.equity, rep))


def _with_report(reports: tuple[EquityReport, ...],
                 rep: EquityReport) -> tuple[EquityReport, ...]:
    """`reports` with `rep` inserted in time order, after any report at the same instant."""
    if not reports or reports[-1].at <= rep.at:
        return (*reports, rep)
    idx = bisect_right(reports, rep.at, key=_REPORT_AT)
    return (*reports[:idx], rep, *reports[idx:])


def _digest(msg: TradeClosed) -> str:
    body = msg.model_dump_json(exclude_none=True).encode()
    # 64 bits in 11 URL-safe characters: the state keeps one per trade in the horizon (16 KiB).
    return urlsafe_b64encode(hashlib.blake2b(body, digest_size=8).digest()).decode()[:11]


def _meta(state: AccountState, day: date) -> SessionMeta:
    found = state.session(day)
    return found if found is not None else SessionMeta(day, phases=(state.phase,))


def _put_meta(state: AccountState, meta: SessionMeta) -> AccountState:
    metas = [m for m in state.sessions if m.day != meta.day]
    metas.append(meta)
    metas.sort(key=lambda m: m.day)
    return _evolve(state, sessions=tuple(metas))


def _touch_phase(state: AccountState, day: date | None) -> AccountState:
    """Record the account's phase among the phases of the session of `day` (R-2.7)."""
    if day is None:
        return state
    meta = _meta(state, day)
    if state.phase in meta.phases:
        return state
    return _put_meta(state, replace(meta, phases=(*meta.phases, state.phase)))


def tripped_at_open(state: AccountState, open_at: datetime) -> bool:
    return (state.tripped_at is not None and state.tripped_at <= open_at
            and (state.cleared_at is None or state.cleared_at < state.tripped_at
                 or state.cleared_at > open_at))


def recompute_current(state: AccountState) -> AccountState:
    """The slow path: refold the horizon's trades onto the settled tally (late trades)."""
    return _evolve(state, current=fold(state.settled, state.recent, ctx_of(state)))


def gate_tally(state: AccountState) -> Tally:
    """The tally over closed sessions only (R-3.5), with the last closed session finished."""
    open_day = state.current_day
    recent = state.recent
    # `recent` is in trade order, so the closed sessions' trades are a prefix of it.
    k = len(recent) if open_day is None else bisect_left(recent, open_day, key=_TRADE_DAY)
    if k == len(recent):
        # Every trade is in a closed session (the usual case at a session close): `current`
        # is already that fold, since it always equals fold(settled, recent).
        return state.current.finish_day(state.window)
    return fold(state.settled, recent[:k], ctx_of(state)).finish_day(state.window)


def gate_inputs(state: AccountState) -> GateInputs:
    run: int | None = None
    if state.proof_entry_seen:
        run = max(state.longest_no_entry_run, state.no_entry_run)
    return GateInputs(gate_tally(state), state.closed_days, state.override_incidents, run,
                      state.epoch_start_equity)


def evaluate(state: AccountState, policy: Policy) -> GateResult | None:
    """The gate out of the current phase, over closed sessions (R-3.7, used by validate)."""
    return evaluate_gate(state.phase, gate_inputs(state), policy)


def metrics_snapshot(state: AccountState, policy: Policy) -> JSON:
    """The metrics recorded with every transition (R-8.2)."""
    cur = state.current
    wins, n = cur.trigger_outcomes(policy.downgrade.rolling_window)
    counted = cur.counted_outcomes(state.window.trades)
    return {
        "trades": cur.trades, "pnl": str(cur.pnl), "counted_trades": cur.counted,
        "loss_streak": cur.loss_streak, "win_streak": cur.win_streak,
        "rolling_wins": wins, "rolling_trades": n,
        "win_rate": _ratio(counted.win_rate()), "rr": _ratio(counted.rr()),
        "rr_unbounded": counted.rr_unbounded(),
        "max_drawdown": _ratio(cur.drawdown(state.epoch_start_equity)),
        "closed_days": state.closed_days, "position_size": str(state.position_size),
    }


def _ratio(value: Decimal | None) -> str | None:
    return None if value is None else q4(value)


# -- size ---------------------------------------------------------------------------------------


def refresh_size(state: AccountState, policy: Policy, cal: Calendar, at: datetime,
                 out: _Out, cause: str, *, day: date | None = None) -> AccountState:
    """Recompute the position size; publish position_size_changed when it moves (R-5.3).

    `day` is the trading day of `at` when the caller already knows it."""
    equity = equity_at(state, at, cal, day=day)
    size, why = position_size(state.phase, state.current.win_streak, state.session_bonus,
                              state.size_reduced, equity, policy)
    if size == state.position_size and why == state.size_reason:
        return state
    old = state.position_size
    state = _evolve(state, position_size=size, size_reason=why)
    if size != old:
        day = cal.trading_day(at) if day is None else day
        payload = {"from_size": str(old), "to_size": str(size), "justification": why,
                   "phase": state.phase, "cause": cause, "currency": state.currency}
        out.emit("position_size_changed", at, day, payload)
        out.record("size_changed", {**payload, "at": at.isoformat(), "trading_day": str(day)})
    return state


# -- transitions -------------------------------------------------------------------------------


def start_epoch(state: AccountState, at: datetime, policy: Policy, cal: Calendar) -> AccountState:
    """A new epoch at `at` (R-1.5): counters and windows restart, P&L and equity carry on."""
    state = _evolve(state, epoch_start=at, epoch_inclusive=False, closed_days=0,
                    proof_entry_seen=False, no_entry_run=0, longest_no_entry_run=0,
                    session_bonus=False, eligible=False, window=window_of(policy),
                    settled=state.settled.reset_epoch())
    state = _evolve(state, epoch_start_equity=equity_at(state, at, cal))
    return recompute_current(state)


def transition(state: AccountState, to: Phase, *, kind: str, trigger: str, at: datetime,
               now: datetime, reasons: list[str], policy: Policy, cal: Calendar, out: _Out,
               cause: str, operator_id: str | None = None, override_used: bool = False,
               validation: GateResult | None = None) -> AccountState:
    """Move to `to`: a new tenure and epoch at `at`, the history record and phase_changed."""
    frm = state.phase
    snapshot = metrics_snapshot(state, policy)
    state = _evolve(state, phase=to, tenure_start=at, override_incidents=0)
    state = start_epoch(state, at, policy, cal)
    day = cal.trading_day(at)
    state = _touch_phase(state, state.current_day if state.current_day is not None else day)
    record = {
        "transition_id": f"{cause}:{kind}", "occurred_at": now.isoformat(),
        "effective_at": at.isoformat(), "trading_day": str(day), "from_phase": frm,
        "to_phase": to, "kind": kind, "trigger": trigger,
        "validation_passed": validation.eligible if validation is not None else None,
        "reasons": reasons, "operator_id": operator_id, "override_used": override_used,
        "metrics": snapshot, "policy_version": policy.version,
    }
    if validation is not None:
        record["validation"] = validation.as_json()
    out.record("transition", record)
    out.emit("phase_changed", at, day, {k: record[k] for k in (
        "transition_id", "from_phase", "to_phase", "kind", "trigger", "reasons",
        "operator_id", "override_used", "validation_passed", "policy_version")})
    return state


def trip_breaker(state: AccountState, at: datetime, reasons: list[str], cal: Calendar,
                 out: _Out) -> AccountState:
    if state.halted:
        return state
    day = cal.trading_day(at)
    state = _evolve(state, halted=True, tripped_at=at)
    meta = _meta(state, day)
    state = _put_meta(state, replace(meta, breaker_trips=meta.breaker_trips + 1))
    out.emit("circuit_breaker_tripped", at, day, {"reasons": reasons, "phase": state.phase})
    out.record("breaker_tripped", {"at": at.isoformat(), "trading_day": str(day),
                                   "reasons": reasons, "phase": state.phase})
    return state


def clear_breaker(state: AccountState, at: datetime, cal: Calendar, out: _Out, *,
                  by: str, operator_id: str | None = None) -> AccountState:
    day = cal.trading_day(at)
    state = _evolve(state, halted=False, cleared_at=at)
    out.emit("circuit_breaker_cleared", at, day, {"by": by, "operator_id": operator_id,
                                                  "phase": state.phase})
    out.record("breaker_cleared", {"at": at.isoformat(), "trading_day": str(day), "by": by,
                                   "operator_id": operator_id})
    return state


def downgrade(state: AccountState, trade: Trade, fired: list[Trigger], now: datetime,
              policy: Policy, cal: Calendar, out: _Out, cause: str) -> AccountState:
    """R-6.2: one phase down, new tenure and epoch at the trade, reduction, breaker, events."""
    to = PHASES[PHASES.index(state.phase) - 1]
    reasons = [f"{t.name}: {t.reason}" for t in fired]
    at = trade.closed_at
    state = transition(state, to, kind="downgrade", trigger="auto", at=at, now=now,
                       reasons=reasons, policy=policy, cal=cal, out=out, cause=cause)
    state = _evolve(state, size_reduced=True)
    state = trip_breaker(state, at, [t.name for t in fired], cal, out)
    return refresh_size(state, policy, cal, at, out, cause)


def advance(state: AccountState, at: datetime, now: datetime, policy: Policy, cal: Calendar,
            out: _Out, cause: str, *, kind: str, trigger: str, validation: GateResult | None,
            operator_id: str | None = None, override_used: bool = False,
            reasons: list[str] | None = None) -> AccountState:
    """One phase up (R-3.6, R-3.10): clears the size reduction, starts a new tenure."""
    to = NEXT_PHASE[state.phase]
    state = transition(state, to, kind=kind, trigger=trigger, at=at, now=now,
                       reasons=reasons or [], policy=policy, cal=cal, out=out, cause=cause,
                       operator_id=operator_id, override_used=override_used,
                       validation=validation)
    state = _evolve(state, size_reduced=False)
    return refresh_size(state, policy, cal, at, out, cause)


# -- sessions ------------------------------------------------------------------------------------


def size_at_close(state: AccountState, day: date, cal: Calendar, policy: Policy) -> Decimal:
    """The position size as of the end of `day`'s session, from the data alone (R-2.7).

    Computed from the trades through that day and the equity known at its end, not from the
    moment the close was processed, so the record is the same in any arrival order (R-10.4).
    """
    meta = _meta(state, day)
    phase = meta.phase_at_close or state.phase
    last = cal.session_end(day) - timedelta(microseconds=1)  # the session's final instant
    k = bisect_right(state.recent, day, key=_TRADE_DAY)
    if k == len(state.recent):
        tally = state.current  # no later trade applied: the running tally is through `day`
    else:
        tally = fold(state.settled, state.recent[:k], ctx_of(state))
    s = policy.sizes
    sessions, outcomes = tally.finish_day(state.window).session_outcomes(
        s.scaling_bonus_sessions)
    bonus = (sessions >= s.scaling_bonus_sessions
             and outcomes.win_rate_at_least(s.scaling_bonus_win_rate) is True)
    size, _why = position_size(phase, tally.win_streak, bonus, state.size_reduced,
                               equity_at(state, last, cal), policy)
    return size


def session_record(state: AccountState, day: date, cal: Calendar, policy: Policy) -> JSON:
    """The session record of R-2.7, from the day's trades inside the horizon and its meta."""
    meta = _meta(state, day)
    trades = [t for t in state.recent if t.day == day]
    counted = Outcomes()
    gross_win = gross_loss = Decimal(0)
    emergency = 0
    last_trade_equity: Decimal | None = None
    for t in trades:
        if t.kind == "regular" and state.in_epoch(t):
            counted = counted.add(t.pnl)
        if t.kind == "emergency_exit":
            emergency += 1
        if t.pnl > 0:
            gross_win += t.pnl
        elif t.pnl < 0:
            gross_loss += t.pnl
        if t.equity_after is not None:
            last_trade_equity = t.equity_after
    start_equity = equity_at(state, cal.session_open(day), cal)
    end_equity = meta.end_equity
    if end_equity is None:
        end_equity = last_trade_equity if last_trade_equity is not None else start_equity
    return {
        "trading_day": str(day), "phase": meta.phase_at_close or state.phase,
        "position_size": str(size_at_close(state, day, cal, policy)),
        "phases": list(meta.phases), "counted_trades": counted.n, "wins": counted.wins,
        "losses": counted.losses, "breakevens": counted.breakevens,
        "emergency_exits": emergency, "gross_win_pnl": str(gross_win),
        "gross_loss_pnl": str(gross_loss), "net_pnl": str(gross_win + gross_loss),
        "start_equity": None if start_equity is None else str(start_equity),
        "end_equity": None if end_equity is None else str(end_equity),
        "breaker_trips": meta.breaker_trips, "denied_entries": dict(meta.denials),
        "closed_implicitly": meta.implicit, "amended": meta.amended, "currency": state.currency,
    }


def close_session(state: AccountState, day: date, *, implicit: bool, at: datetime,
                  now: datetime, ledger: LedgerView, policy: Policy, cal: Calendar, out: _Out,
                  cause: str, end_equity: Decimal | None = None) -> AccountState:
    """Close `day`'s session (R-10.5): record, ledger denials, gate, auto-advance, auto-ack."""
    open_at = cal.session_open(day)
    meta = _meta(state, day)
    ledger_day = ledger.days.get(day)
    if ledger_day is not None:
        for denial in ledger_day.first_denials:
            out.record("entry_denied", dict(denial))
        for exit_ in ledger_day.emergency_exits:
            out.record("emergency_exit", dict(exit_))
    in_epoch = open_at >= state.epoch_start
    state = _evolve(state, closed_days=state.closed_days + (1 if in_epoch else 0))
    if state.phase == "proof" and in_epoch:
        state = _count_no_entry(state, meta, ledger_day)
    meta = replace(meta, closed=True, implicit=implicit, end_equity=end_equity,
                   phase_at_close=state.phase,
                   denials=ledger_day.denial_counts if ledger_day else ())
    state = _put_meta(state, meta)
    nxt = cal.next_trading_day(day)
    state = _evolve(state, current_day=nxt)
    state = _put_meta(state, SessionMeta(nxt, phases=(state.phase,),
                                         tripped_at_open=tripped_at_open(state,
                                                                         cal.session_open(nxt))))
    record = session_record(state, day, cal, policy)
    out.record("session_closed", record)
    out.emit("session_closed", at, day, record)
    out.closed_days.append(day)
    # replay profile acknowledges the breaker at the close of the first session that
    # opened after the trip.
    if (policy.auto_acknowledge_breaker and state.halted and state.tripped_at is not None
            and open_at > state.tripped_at):
        state = clear_breaker(state, at, cal, out, by="auto")
    state = _refresh_bonus(state, policy)
    return _gate_at_close(state, at, now, policy, cal, out, cause)


def _count_no_entry(state: AccountState, meta: SessionMeta,
                    ledger_day: LedgerDay | None) -> AccountState:
    """R-3.5: runs of trading days without an allowed live proof entry."""
    entered = ledger_day is not None and ledger_day.live_entry_phase == "proof"
    if entered:
        return _evolve(state, proof_entry_seen=True, no_entry_run=0)
    if not state.proof_entry_seen or meta.tripped_at_open:
        return state
    run = state.no_entry_run + 1
    return _evolve(state, no_entry_run=run,
                   longest_no_entry_run=max(state.longest_no_entry_run, run))


def _refresh_bonus(state: AccountState, policy: Policy) -> AccountState:
    s = policy.sizes
    sessions, outcomes = gate_tally(state).session_outcomes(s.scaling_bonus_sessions)
    bonus = (sessions >= s.scaling_bonus_sessions
             and outcomes.win_rate_at_least(s.scaling_bonus_win_rate) is True)
    return state if bonus == state.session_bonus else _evolve(state, session_bonus=bonus)


def _gate_at_close(state: AccountState, at: datetime, now: datetime, policy: Policy,
                   cal: Calendar, out: _Out, cause: str) -> AccountState:
    """R-3.8/R-3.9: evaluate the gate; publish eligibility on change; auto-advance."""
    result = evaluate(state, policy)
    if result is None:
        return state
    if not result.eligible:
        return _evolve(state, eligible=False) if state.eligible else state
    if not state.eligible:
        day = cal.trading_day(at)
        out.emit("advancement_eligible", at, day, result.as_json())
        state = _evolve(state, eligible=True)
    if policy.auto_advance and not state.halted:
        state = advance(state, at, now, policy, cal, out, cause, kind="advance",
                        trigger="auto", validation=result)
    return state


def close_through(state: AccountState, last: date, *, now: datetime, ledger: LedgerView,
                  policy: Policy, cal: Calendar, out: _Out, cause: str) -> AccountState:
    """Implicitly close every open session up to and including `last`."""
    while state.current_day is not None and state.current_day <= last:
        day = state.current_day
        state = close_session(state, day, implicit=True, at=cal.session_end(day), now=now,
                              ledger=ledger, policy=policy, cal=cal, out=out, cause=cause)
    return state


# -- the horizon ---------------------------------------------------------------------------------


def cutoff_day(state: AccountState, policy: Policy, cal: Calendar) -> date | None:
    """R-10.3: trades closed before this trading day's open are too late."""
    if state.high_water is None:
        return None
    h_at = state.high_water[0]
    # H is the last trade of the horizon's (it never settles), whose trading day is known
    last = state.recent[-1] if state.recent else None
    h_day = last.day if last is not None and last.closed_at == h_at else cal.trading_day(h_at)
    return _trading_days_before(cal, h_day, policy.delivery.too_late_trading_days)


def settle(state: AccountState, policy: Policy, cal: Calendar) -> AccountState:
    """Fold what fell out of the horizon into the settled tally: the state stays bounded."""
    cut = cutoff_day(state, policy, cal)
    if cut is None or not state.recent or state.recent[0].day >= cut:
        return state
    n = 0
    while n < len(state.recent) and state.recent[n].day < cut:
        n += 1
    settled = fold(state.settled, state.recent[:n], ctx_of(state))
    cut_at = cal.session_open(cut)
    reports = state.equity
    keep_from = 0
    for i, rep in enumerate(reports):
        if rep.at < cut_at:
            keep_from = i  # the last report before the horizon stays: equity carries over
    return _evolve(state, settled=settled, recent=state.recent[n:],
                   sessions=tuple(m for m in state.sessions if m.day >= cut
                                  or (state.current_day is not None
                                      and m.day >= state.current_day)),
                   equity=reports[keep_from:])


# -- trade_closed ----------------------------------------------------------------------------------


def _validate_trade(state: AccountState, msg: TradeClosed, policy: Policy, cal: Calendar,
                    now: datetime) -> DeadLetter | None:
    if msg.currency is not None and msg.currency != state.currency:
        return DeadLetter("currency_mismatch",
                          f"currency {msg.currency} but the account trades {state.currency}")
    limit = timedelta(seconds=policy.delivery.future_tolerance_seconds)
    if state.clock == "redis" and msg.closed_at > now + limit:
        return DeadLetter("future_timestamp",
                          f"closed_at {msg.closed_at.isoformat()} is ahead of the worker clock")
    cut = cutoff_day(state, policy, cal)
    if cut is not None and msg.closed_at < cal.session_open(cut):
        return DeadLetter("too_late", f"closed_at {msg.closed_at.isoformat()} is before the "
                                      f"open of {cut}, the dedupe horizon")
    return None


def apply_trade(state: AccountState, ledger: LedgerView, msg: TradeClosed, policy: Policy,
                now: datetime, cause: str) -> Decision:
    cal = calendar_of(policy.calendar)
    problem = _validate_trade(state, msg, policy, cal, now)
    if problem is not None:
        return Decision(state, "dead_letter", dead_letter=problem)
    digest = _digest(msg)
    if msg.trade_id in map(_TRADE_ID, state.recent):  # C-level scan: no repeat is the norm
        seen = next(t for t in state.recent if t.trade_id == msg.trade_id)
        if seen.digest == digest:
            return Decision(state, "duplicate")
        return dead(state, "conflicting_duplicate",
                    f"trade {msg.trade_id} was already applied with other content")
    out = _Out()
    trade = Trade(trade_id=msg.trade_id, closed_at=msg.closed_at, opened_at=msg.opened_at,
                  pnl=msg.pnl, kind=msg.kind, live=msg.mode == "live",
                  equity_after=msg.equity_after, day=cal.trading_day(msg.closed_at),
                  digest=digest)
    if state.clock == "message":
        clock = max(state.clock_at or trade.closed_at, trade.closed_at)
        state = _evolve(state, clock_at=clock)
    # the first message for a later trading day closes the sessions before it.
    if state.current_day is not None and trade.day > state.current_day:
        state = close_through(state, cal.previous_trading_day(trade.day), now=now,
                              ledger=ledger, policy=policy, cal=cal, out=out, cause=cause)
    equity = state.equity
    if trade.live and trade.equity_after is not None:
        equity = _with_report(equity, EquityReport(trade.closed_at, trade.day, trade.equity_after))
    late = state.current_day is not None and trade.day < state.current_day
    before = _closed_records(state, trade.day, cal, policy) if late else {}
    state = _insert_trade(state, trade, equity)
    if late:
        state = _amend(state, before, cal, policy, out, always=trade.day)
    state = _touch_phase(state, trade.day if not late else None)
    if state.in_epoch(trade) and state.phase in LIVE_PHASES and not state.halted:
        fired = _triggers(state, trade, policy, cal)
        if fired:
            state = downgrade(state, trade, fired, now, policy, cal, out, cause)
    if trade.live and msg.kind != "manual":
        state = _check_authorized(state, msg, trade, ledger, policy, cal, out)
    if msg.entry_decision_id is not None and msg.entry_decision_id in ledger.decisions:
        out.consumed.append(msg.entry_decision_id)
    state = refresh_size(state, policy, cal, trade.closed_at, out, cause, day=trade.day)
    state = settle(state, policy, cal)
    return out.decision(_bump(state, now, cal))


def _insert_trade(state: AccountState, trade: Trade,
                  equity: tuple[EquityReport, ...]) -> AccountState:
    """Add the trade in trade order (and the equity reports, in the same copy of the state)."""
    key = trade.order_key
    hw = key if state.high_water is None or key > state.high_water else state.high_water
    if state.current.last_key is None or key > state.current.last_key:
        # the fast path: a trade after every trade applied extends the tally
        return _evolve(state, recent=(*state.recent, trade), equity=equity,
                       current=state.current.step(trade, ctx_of(state)), high_water=hw)
    recent = list(state.recent)
    idx = len(recent)
    while idx > 0 and recent[idx - 1].order_key > key:
        idx -= 1
    recent.insert(idx, trade)
    return recompute_current(_evolve(state, recent=tuple(recent), high_water=hw, equity=equity))


def _closed_records(state: AccountState, since: date, cal: Calendar,
                    policy: Policy) -> dict[date, JSON]:
    """The records of the closed sessions from `since` on, as they stand now."""
    return {m.day: session_record(state, m.day, cal, policy)
            for m in state.sessions if m.closed and m.day >= since}


def _same(a: JSON, b: JSON) -> bool:
    return {k: v for k, v in a.items() if k != "amended"} == {
        k: v for k, v in b.items() if k != "amended"}


def _amend(state: AccountState, before: dict[date, JSON], cal: Calendar, policy: Policy,
           out: _Out, *, always: date | None, at: datetime | None = None) -> AccountState:
    """R-10.4: late input amends its closed session, and every later closed session whose
    record it changes (equity, size); never on the gate (R-3.8)."""
    for day in sorted(before):
        meta = state.session(day)
        if meta is None or not meta.closed:
            continue
        if day != always and _same(before[day], session_record(state, day, cal, policy)):
            continue
        state = _put_meta(state, replace(meta, amended=True))
        record = session_record(state, day, cal, policy)
        out.record("session_amended", record)
        out.emit("session_amended", at if at is not None and day == always
                 else cal.session_end(day), day, record)
    return state


def _triggers(state: AccountState, trade: Trade, policy: Policy, cal: Calendar) -> list[Trigger]:
    d = policy.downgrade
    cur = state.current
    # a larger window applies from the next epoch; until then the epoch's own window does
    window = min(d.rolling_window, state.window.triggers)
    wins, n = cur.trigger_outcomes(window)
    # `recent` is in trade order, so its days are sorted: bisect to the trade's day.
    lo = bisect_left(state.recent, trade.day, key=_TRADE_DAY)
    hi = bisect_right(state.recent, trade.day, lo=lo, key=_TRADE_DAY)
    day_net = sum((t.pnl for t in state.recent[lo:hi] if state.in_epoch(t)), Decimal(0))
    open_at = cal.session_open(trade.day)
    base_at = max(open_at, state.epoch_start)
    base_day = trade.day if base_at is open_at else None
    fired = [
        consecutive_losses(cur.loss_streak, d.max_consecutive_losses),
        rolling_win_rate(wins, n, cur.triggers, window, d.min_rolling_win_rate),
        daily_loss(state.phase, day_net, equity_at(state, base_at, cal, day=base_day),
                   d.max_daily_loss),
    ]
    return [f for f in fired if f is not None]


def _check_authorized(state: AccountState, msg: TradeClosed, trade: Trade, ledger: LedgerView,
                      policy: Policy, cal: Calendar, out: _Out) -> AccountState:
    """R-4.10: a live, non-manual trade must cite an allowed live decision of this account."""
    decision = ledger.decisions.get(msg.entry_decision_id) if msg.entry_decision_id else None
    problem: str | None = None
    if msg.entry_decision_id is None:
        problem = "no entry_decision_id"
    elif decision is None:
        problem = f"entry decision {msg.entry_decision_id} is not an allowed live decision"
    elif decision.phase == "experience":
        problem = "entry made in experience (paper only)"
    elif msg.position_size is not None and msg.position_size > decision.size * (
            1 + policy.sizes.unauthorized_size_tolerance):
        problem = (f"position size {msg.position_size} exceeds the decided {decision.size} "
                   f"by more than {policy.sizes.unauthorized_size_tolerance}")
    if problem is None:
        return state
    payload = {"trade_id": trade.trade_id, "entry_decision_id": msg.entry_decision_id,
               "position_size": None if msg.position_size is None else str(msg.position_size),
               "reason": problem, "pnl": str(trade.pnl), "phase": state.phase}
    out.record("unauthorized_entry", payload)
    out.emit("unauthorized_entry", trade.closed_at, trade.day, payload)
    if policy.halt_on_unauthorized_entry:
        state = trip_breaker(state, trade.closed_at, ["unauthorized_entry"], cal, out)
    return state


def _bump(state: AccountState, now: datetime, cal: Calendar) -> AccountState:
    state = sync_open_session(state, now, cal)
    return _evolve(state, version=state.version + 1, updated_at=now)


def sync_open_session(state: AccountState, now: datetime, cal: Calendar) -> AccountState:
    """A change made before the open session's open is the state that session opens in.

    The phases during a day (R-2.7) and whether the breaker was tripped at its open (R-3.5) are
    first written when the previous session closes; a transition, trip or acknowledge processed
    after that close but before the next open replaces them instead of adding to them.
    """
    day = state.current_day
    if day is None or account_now(state, now) >= cal.session_open(day):
        return state
    meta = _meta(state, day)
    fresh = replace(meta, phases=(state.phase,), tripped_at_open=state.halted)
    return state if fresh == meta else _put_meta(state, fresh)


# -- session_ended ---------------------------------------------------------------------------------


def apply_session_ended(state: AccountState, ledger: LedgerView, msg: SessionEnded,
                        policy: Policy, now: datetime, cause: str) -> Decision:
    cal = calendar_of(policy.calendar)
    original = state
    day = msg.trading_day
    if not cal.is_trading_day(day):
        return dead(state, "not_a_trading_day", f"{day} is not a trading day")
    limit = timedelta(seconds=policy.delivery.future_tolerance_seconds)
    if state.clock == "redis" and (msg.ended_at > now + limit
                                   or cal.session_open(day) > now + limit):
        return dead(state, "future_timestamp", f"session {day} has not started yet")
    cut = cutoff_day(state, policy, cal)
    if cut is not None and day < cut:
        return dead(state, "too_late", f"session {day} is before the dedupe horizon {cut}")
    out = _Out()
    if state.clock == "message":
        state = _evolve(state, clock_at=max(state.clock_at or msg.ended_at, msg.ended_at))
    closed_already = state.current_day is None or day < state.current_day
    before = _closed_records(state, day, cal, policy) if closed_already else {}
    if msg.equity is not None:
        state = _add_report(state, EquityReport(msg.ended_at, day, msg.equity))
    if closed_already:
        # a later session_ended amends only the end equity (and, through it, the
        # equity later closed sessions started from).
        meta = state.session(day)
        if meta is None or msg.equity is None or meta.end_equity == msg.equity:
            return Decision(original, "duplicate")  # nothing to amend: changes nothing
        state = _put_meta(state, replace(meta, end_equity=msg.equity))
        state = _amend(state, before, cal, policy, out, always=day, at=msg.ended_at)
        state = refresh_size(state, policy, cal, msg.ended_at, out, cause)
        return out.decision(_bump(state, now, cal))
    if state.current_day is not None and day > state.current_day:
        state = close_through(state, cal.previous_trading_day(day), now=now, ledger=ledger,
                              policy=policy, cal=cal, out=out, cause=cause)
    state = close_session(state, day, implicit=False, at=msg.ended_at, now=now, ledger=ledger,
                          policy=policy, cal=cal, out=out, cause=cause, end_equity=msg.equity)
    state = refresh_size(state, policy, cal, msg.ended_at, out, cause)
    return out.decision(_bump(state, now, cal))


def apply_sweep(state: AccountState, ledger: LedgerView, policy: Policy, now: datetime,
                cause: str) -> Decision:
    """R-10.5: close sessions whose end + grace has passed by the worker clock."""
    if state.clock == "message" or state.current_day is None:
        return Decision(state, "noop")
    cal = calendar_of(policy.calendar)
    grace = timedelta(seconds=policy.delivery.session_close_grace_seconds)
    last: date | None = None
    day = state.current_day
    while cal.session_end(day) + grace <= now:
        last = day
        day = cal.next_trading_day(day)
    if last is None:
        return Decision(state, "noop")
    out = _Out()
    state = close_through(state, last, now=now, ledger=ledger,
                          policy=policy, cal=cal, out=out, cause=cause)
    state = refresh_size(state, policy, cal, now, out, cause)
    return out.decision(_bump(state, now, cal))


def decide(state: AccountState, ledger: LedgerView, message: Message, policy: Policy,
           now: datetime, cause: str = "") -> Decision:
    """The functional core's single entry point for inbound messages and the sweep."""
    if isinstance(message, TradeClosed):
        return apply_trade(state, ledger, message, policy, now, cause)
    if isinstance(message, SessionEnded):
        return apply_session_ended(state, ledger, message, policy, now, cause)
    return apply_sweep(state, ledger, policy, now, cause)
