"""The account's value types: phases, trades as the engine keeps them, session bookkeeping, state.

Everything here is a frozen value. The state keeps only what the rules need: a *settled* tally of
every trade older than the dedupe horizon (R-10.3) plus the individual trades inside it, so the
encoded state stays bounded however long the history grows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from worker.domain.metrics import Tally, Window

Phase = Literal["experience", "proof", "trial", "scaling"]
PHASES: tuple[Phase, ...] = ("experience", "proof", "trial", "scaling")
LIVE_PHASES: frozenset[Phase] = frozenset({"proof", "trial", "scaling"})
Kind = Literal["regular", "emergency_exit", "manual"]
Clock = Literal["redis", "message"]


def phase_index(phase: Phase) -> int:
    return PHASES.index(phase)


@dataclass(frozen=True, slots=True)
class Trade:
    """A closed position as the engine keeps it inside the dedupe horizon."""

    trade_id: str
    closed_at: datetime
    opened_at: datetime | None
    pnl: Decimal
    kind: Kind
    live: bool
    equity_after: Decimal | None
    day: date  # trading day of closed_at
    digest: str  # content fingerprint: an identical repeat changes nothing

    @property
    def order_key(self) -> tuple[datetime, str]:
        """Trade order (R-1.5): (closed_at, trade_id)."""
        return (self.closed_at, self.trade_id)

    @property
    def anchor(self) -> datetime:
        """The instant that decides epoch membership: opened_at, else closed_at (R-1.5)."""
        return self.opened_at if self.opened_at is not None else self.closed_at


@dataclass(frozen=True, slots=True)
class EquityReport:
    """An equity observation (R-2.8): a live trade's equity_after or a session_ended equity."""

    at: datetime
    day: date
    value: Decimal


@dataclass(frozen=True, slots=True)
class SessionMeta:
    """What a session needs beyond its trades (R-2.7), kept while inside the horizon."""

    day: date
    closed: bool = False
    implicit: bool = False
    amended: bool = False
    end_equity: Decimal | None = None
    phases: tuple[Phase, ...] = ()
    phase_at_close: Phase | None = None
    breaker_trips: int = 0
    tripped_at_open: bool = False
    denials: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Registration:
    """The registry entry of an account (R-7.7)."""

    account_id: str
    clock: Clock
    currency: str
    created_at: datetime
    starts_at: datetime | None = None  # message-clock accounts: the history's first instant
    retired_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AccountState:
    """The whole per-account state the worker loads, decides on and writes back in one EXEC."""

    account_id: str
    clock: Clock
    currency: str
    phase: Phase
    version: int
    updated_at: datetime
    tenure_start: datetime
    epoch_start: datetime
    epoch_inclusive: bool  # first epoch of a message-clock account: trades at starts_at count
    halted: bool = False
    tripped_at: datetime | None = None
    cleared_at: datetime | None = None
    degraded: bool = False
    size_reduced: bool = False
    position_size: Decimal = Decimal("0.00")
    size_reason: str = "experience: paper only"
    eligible: bool = False  # last gate verdict, so advancement_eligible fires once per change
    override_incidents: int = 0  # successful override incidents in the tenure
    high_water: tuple[datetime, str] | None = None  # H: highest applied trade order key
    current_day: date | None = None  # the open (not yet closed) session's trading day
    closed_days: int = 0  # closed sessions whose open is at or after the epoch start
    proof_entry_seen: bool = False  # the epoch's first allowed live proof entry happened
    no_entry_run: int = 0  # current run of trading days without an allowed live proof entry
    longest_no_entry_run: int = 0
    session_bonus: bool = False  # scaling bonus condition of, refreshed at session close
    settled: Tally = field(default_factory=Tally)  # every trade before the horizon
    current: Tally = field(default_factory=Tally)  # every trade applied
    recent: tuple[Trade, ...] = ()  # trades inside the horizon, in trade order
    sessions: tuple[SessionMeta, ...] = ()  # sessions inside the horizon, by day
    equity: tuple[EquityReport, ...] = ()  # reports inside the horizon plus the last one before
    epoch_start_equity: Decimal | None = None  # equity at the epoch start, if known
    clock_at: datetime | None = None  # message-clock accounts: the latest message instant
    window: Window = field(default_factory=Window)  # window capacities fixed at the epoch start

    def in_epoch(self, trade: Trade) -> bool:
        """R-1.5: a trade belongs to the epoch in which it was opened."""
        if self.epoch_inclusive:
            return trade.anchor >= self.epoch_start
        return trade.anchor > self.epoch_start

    def session(self, day: date) -> SessionMeta | None:
        for meta in self.sessions:
            if meta.day == day:
                return meta
        return None
