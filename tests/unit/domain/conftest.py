"""Builders for the engine tests: messages in New York time and a `Book` that runs one account.

A `Book` registers an account with `new_account`, feeds trades and session ends through `decide`
(and operator actions through `worker.domain.actions`) and keeps the state, every decision and
every event and history record, so a test reads like the account's diary.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from contracts.messages import SessionEnded, TradeClosed
from worker.domain import actions
from worker.domain.actions import ActionResult
from worker.domain.calendar import Calendar
from worker.domain.decide import (
    Decision,
    Emitted,
    LedgerDay,
    LedgerDecision,
    LedgerView,
    Message,
    Record,
    Sweep,
    decide,
    evaluate,
    new_account,
)
from worker.domain.model import PHASES, AccountState, Clock, Kind, Phase, Registration
from worker.domain.policy import DEFAULT_POLICY, Policy
from worker.domain.rules import Criterion, GateResult

NY = ZoneInfo("America/New_York")
ACCOUNT = "acct-1"
FRIDAY = date(2026, 1, 2)  # registration day of every Book: Friday, the day after New Year's Day
MONDAY = date(2026, 1, 5)  # the first trading day a Book trades on
Money = Decimal | int | str


def et(day: date, hour: int = 10, minute: int = 0) -> datetime:
    """`day` at `hour:minute` New York wall time, timezone-aware."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)


def dec(value: Money) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(value)


def trade_msg(trade_id: str, pnl: Money, closed_at: datetime, *, mode: str = "paper",
              kind: Kind = "regular", opened_at: datetime | None = None,
              entry_decision_id: str | None = None, position_size: Money | None = None,
              equity_after: Money | None = None, operator_id: str | None = None,
              account_id: str = ACCOUNT) -> TradeClosed:
    """A trade_closed message; live trades get a size and equity when none are given."""
    if mode == "live":
        position_size = Decimal("100") if position_size is None else position_size
        equity_after = Decimal("10000") if equity_after is None else equity_after
    if kind == "manual" and operator_id is None:
        operator_id = "op-1"
    return TradeClosed(
        schema_version=1, account_id=account_id, trade_id=trade_id, mode=mode,  # type: ignore[arg-type]
        closed_at=closed_at, pnl=dec(pnl), kind=kind, opened_at=opened_at,
        entry_decision_id=entry_decision_id,
        position_size=None if position_size is None else dec(position_size),
        equity_after=None if equity_after is None else dec(equity_after),
        operator_id=operator_id,
    )


def session_msg(day: date, *, ended_at: datetime | None = None, equity: Money | None = None,
                account_id: str = ACCOUNT) -> SessionEnded:
    return SessionEnded(schema_version=1, account_id=account_id, trading_day=day,
                        ended_at=ended_at if ended_at is not None else et(day, 16),
                        equity=None if equity is None else dec(equity))


def _merge(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def with_policy(policy: Policy, **changes: Any) -> Policy:
    """A validated copy of `policy` with nested changes: with_policy(p, downgrade={...})."""
    return Policy.model_validate(_merge(policy.model_dump(), changes))


def criterion(result: GateResult | None, name: str) -> Criterion:
    assert result is not None
    found = [c for c in result.criteria if c.name == name]
    assert len(found) == 1, f"{name} not in {[c.name for c in result.criteria]}"
    return found[0]


def spread(n: int, losses: int) -> list[bool]:
    """`n` outcomes (True = win) with `losses` losses spread evenly: never two losses in a row
    while losses < n / 2, so no streak or rolling-window rule interferes with a gate test."""
    return [(i + 1) * losses // n == i * losses // n for i in range(n)]


_AUTO: Any = object()


class Book:
    """One account driven through the pure engine, with everything it emitted kept in order."""

    def __init__(self, policy: Policy = DEFAULT_POLICY, *, clock: Clock = "redis",
                 created_at: datetime | None = None, starts_at: datetime | None = None,
                 currency: str = "USD", equity: Money | None = "10000") -> None:
        self.policy = policy
        self.cal = Calendar(policy.calendar)
        created = created_at if created_at is not None else et(FRIDAY, 12)
        self.registration = Registration(ACCOUNT, clock, currency, created, starts_at=starts_at)
        self.state: AccountState = new_account(self.registration, policy)
        self.now = created
        self.equity: Decimal | None = None if equity is None else dec(equity)
        self.day = self.cal.next_trading_day(self.cal.trading_day(starts_at or created))
        self.decisions: dict[str, LedgerDecision] = {}
        self.ledger_days: dict[date, LedgerDay] = {}
        self.events: list[Emitted] = []
        self.history: list[Record] = []
        self.results: list[Decision | ActionResult] = []
        self._seq = 0
        self._next_at: dict[date, datetime] = {}

    # -- setup ------------------------------------------------------------------------------

    @classmethod
    def at(cls, phase: Phase = "experience", policy: Policy = DEFAULT_POLICY,
           **kwargs: Any) -> Book:
        """A Book whose registration day closed with the equity reported, forced up to `phase`
        right after; the logs start empty and the next trade falls on MONDAY."""
        book = cls(policy, **kwargs)
        if book.registration.clock == "redis":
            book.end(FRIDAY)
        book.force_to(phase)
        book.clear_logs()
        return book

    def force_to(self, phase: Phase) -> None:
        while PHASES.index(self.state.phase) < PHASES.index(phase):
            result = self.act(actions.act_force_advance, target=None, reason="setup")
            assert result.outcome == "applied", result

    def clear_logs(self) -> None:
        self.events.clear()
        self.history.clear()
        self.results.clear()

    # -- the ledger the entry script would have written ------------------------------------

    @property
    def ledger(self) -> LedgerView:
        return LedgerView(decisions=dict(self.decisions), days=dict(self.ledger_days))

    def allow(self, decision_id: str, *, size: Money | None = None, phase: Phase | None = None,
              day: date | None = None) -> str:
        self.decisions[decision_id] = LedgerDecision(
            decision_id, phase or self.state.phase,
            self.state.position_size if size is None else dec(size), day or self.day)
        return decision_id

    def entered(self, day: date, phase: Phase = "proof") -> None:
        """The entry script allowed a live entry on `day` (R-4.6 slot, R-3.5 no-entry run)."""
        found = self.ledger_days.get(day, LedgerDay(day))
        self.ledger_days[day] = replace(found, live_entry_phase=phase)

    # -- messages ---------------------------------------------------------------------------

    def feed(self, message: Message, now: datetime | None = None) -> Decision:
        if now is None:
            if isinstance(message, TradeClosed):
                now = max(self.now, message.closed_at + timedelta(minutes=1))
            elif isinstance(message, SessionEnded):
                now = max(self.now, message.ended_at + timedelta(minutes=1))
            else:
                now = self.now
        self.now = now
        self._seq += 1
        result = decide(self.state, self.ledger, message, self.policy, now, f"m{self._seq}")
        self.results.append(result)
        if result.outcome == "applied":
            self.state = result.state
            self.events.extend(result.events)
            self.history.extend(result.history)
        return result

    def trade(self, pnl: Money, *, day: date | None = None, at: datetime | None = None,
              mode: str = "paper", kind: Kind = "regular", opened_at: datetime | None = None,
              decision: str | None = _AUTO, position_size: Money | None = None,
              equity_after: Money | None = _AUTO, trade_id: str | None = None,
              now: datetime | None = None) -> Decision:
        """One closed trade on the cursor day (each a minute after the last, from 10:00).

        A live trade reports the running equity and, unless `decision` says otherwise, cites a
        decision the entry script allowed for it at the account's current size."""
        day = day or self.day
        if at is None:
            at = self._next_at.get(day, et(day, 10))
            self._next_at[day] = at + timedelta(minutes=1)
        pnl = dec(pnl)
        live = mode == "live"
        if live and equity_after is _AUTO:
            equity_after = (self.equity or Decimal(0)) + pnl
        elif equity_after is _AUTO:
            equity_after = None
        if live and position_size is None:
            position_size = self.state.position_size
        if decision is _AUTO:
            decision = None
            if live and kind != "manual":
                decision = self.allow(f"d{len(self.decisions) + 1}",
                                      day=self.cal.trading_day(at))
        self._seq += 1
        msg = trade_msg(trade_id or f"T{self._seq}", pnl, at, mode=mode, kind=kind,
                        opened_at=opened_at, entry_decision_id=decision,
                        position_size=position_size, equity_after=equity_after)
        result = self.feed(msg, now)
        if result.outcome == "applied" and self.equity is not None:
            self.equity = dec(equity_after) if equity_after is not None else self.equity + pnl
        return result

    def trades(self, pnls: Iterable[Money], **kwargs: Any) -> list[Decision]:
        return [self.trade(p, **kwargs) for p in pnls]

    def end(self, day: date | None = None, *, at: datetime | None = None,
            equity: Money | None = _AUTO, now: datetime | None = None) -> Decision:
        """session_ended for `day` (default the cursor day) at 16:00, reporting the running
        equity; the cursor moves to the next trading day."""
        day = day or self.day
        if equity is _AUTO:
            equity = self.equity
        result = self.feed(session_msg(day, ended_at=at, equity=equity), now)
        if day >= self.day:
            self.day = self.cal.next_trading_day(day)
        return result

    def session(self, pnls: Iterable[Money], **kwargs: Any) -> date:
        """A whole trading day: its trades, then session_ended. Returns the day."""
        day = self.day
        equity = kwargs.pop("session_equity", _AUTO)
        for pnl in pnls:
            self.trade(pnl, day=day, **kwargs)
        self.end(day, equity=equity)
        return day

    def sweep(self, now: datetime) -> Decision:
        return self.feed(Sweep(), now)

    def resume(self, at: datetime) -> None:
        """Trades without an explicit time continue from `at`, a minute apart."""
        self._next_at[self.cal.trading_day(at)] = at

    # -- operator actions -------------------------------------------------------------------

    def act(self, action: Callable[..., ActionResult], now: datetime | None = None,
            **kwargs: Any) -> ActionResult:
        """Run an operator action as its job would, defaulting operator and cause."""
        if now is not None:
            self.now = now
        kwargs.setdefault("operator_id", "op-1")
        kwargs.setdefault("cause", f"job{len(self.results) + 1}")
        if action in (actions.act_force_advance, actions.act_rollback, actions.act_reset_epoch):
            kwargs.setdefault("reason", "test")
        result = action(self.state, self.policy, self.now, **kwargs)
        self.results.append(result)
        if result.outcome == "applied":
            self.state = result.state
            self.events.extend(result.events)
            self.history.extend(result.history)
        return result

    # -- read-outs --------------------------------------------------------------------------

    def gate(self) -> GateResult | None:
        return evaluate(self.state, self.policy)

    def event_types(self) -> list[str]:
        return [e.type for e in self.events]

    def history_types(self) -> list[str]:
        return [r.type for r in self.history]

    def events_of(self, type_: str) -> list[Emitted]:
        return [e for e in self.events if e.type == type_]

    def records_of(self, type_: str) -> list[Record]:
        return [r for r in self.history if r.type == type_]

    def session_record(self, day: date) -> dict[str, Any]:
        """The latest session_closed/session_amended record written for `day`."""
        found = [r.payload for r in self.history
                 if r.type in ("session_closed", "session_amended")
                 and r.payload["trading_day"] == str(day)]
        assert found, f"no session record for {day}"
        return found[-1]


@pytest.fixture
def policy() -> Policy:
    return DEFAULT_POLICY


@pytest.fixture
def cal(policy: Policy) -> Calendar:
    return Calendar(policy.calendar)


@pytest.fixture
def book(policy: Policy) -> Book:
    """A fresh experience account whose next trade falls on MONDAY 2026-01-05."""
    return Book.at("experience", policy)
