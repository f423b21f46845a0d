"""The pre-trade entry decision of SPEC §4 as one ordered table (first matching rule wins).

`ENTRY_RULES` is the single source of the decision order: the Lua entry script mirrors it and a
test runs both over the same cases. `decide_entry` is the pure reference implementation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from worker.domain.model import LIVE_PHASES, Phase

Mode = Literal["live", "paper"]
EntryKind = Literal["regular", "emergency_exit", "manual"]

# (reason, when it applies) in evaluation order; `allowed` rows end the table.
ENTRY_RULES: tuple[tuple[str, str], ...] = (
    ("emergency_exit", "kind is emergency_exit: always allowed, size 0 (R-4.1)"),
    ("unknown_account", "the account is not registered (R-4.2)"),
    ("account_retired", "the account is retired (R-4.2)"),
    ("state_unavailable", "the account's state is missing or unreadable (R-4.2)"),
    ("paper_allowed", "experience and paper: allowed, unlimited, also while tripped (R-4.3)"),
    ("paper_only", "experience and live (R-4.3)"),
    ("circuit_breaker", "the breaker is tripped (R-4.4)"),
    ("input_dead_lettered", "live entry on a degraded account (R-4.4, R-10.6)"),
    ("equity_unknown", "live entry, equity not reported today or the day before (R-4.5)"),
    ("equity_depleted", "live entry, equity <= 0 (R-4.5)"),
    ("size_below_minimum", "live entry, size below min_position_size (R-4.5)"),
    ("daily_limit", "proof, live, a live entry was already allowed today (R-4.6)"),
    ("allowed", "otherwise allowed with the account's position size (R-4.6, R-4.7)"),
)


@dataclass(frozen=True, slots=True)
class EntryView:
    """What the entry script reads about the account, all in one shard."""

    registered: bool
    retired: bool = False
    state_present: bool = True
    phase: Phase = "experience"
    halted: bool = False
    degraded: bool = False
    position_size: Decimal = Decimal("0.00")
    equity: Decimal | None = None
    equity_day: date | None = None
    slot_used_today: bool = False  # a live entry was already allowed this trading day


@dataclass(frozen=True, slots=True)
class EntryClock:
    """Calendar facts about the decision instant, computed by the caller (or the calendar key)."""

    now: datetime
    today: date
    previous_day: date
    next_open: datetime


@dataclass(frozen=True, slots=True)
class EntryOutcome:
    allowed: bool
    reason: str
    phase: Phase | None
    position_size: Decimal
    next_allowed_at: datetime | None = None
    remaining_today: int | None = None  # None: unlimited
    consumes_slot: bool = False  # the script marks today's live-entry slot used
    records_decision: bool = False  # allowed live entries are kept by decision_id


ZERO = Decimal("0.00")


def decide_entry(view: EntryView, *, mode: Mode, kind: EntryKind, clock: EntryClock,
                 min_size: Decimal) -> EntryOutcome:
    """Walk ENTRY_RULES in order; the first rule that matches decides."""
    phase = view.phase if view.registered and view.state_present else None
    if kind == "emergency_exit":
        return EntryOutcome(True, "emergency_exit", phase, ZERO)
    if not view.registered:
        return EntryOutcome(False, "unknown_account", None, ZERO)
    if view.retired:
        return EntryOutcome(False, "account_retired", None, ZERO)
    if not view.state_present:
        return EntryOutcome(False, "state_unavailable", None, ZERO)
    live = mode == "live"
    if view.phase == "experience":
        if live:
            return EntryOutcome(False, "paper_only", "experience", ZERO)
        return EntryOutcome(True, "allowed", "experience", ZERO)
    if view.halted:
        return EntryOutcome(False, "circuit_breaker", view.phase, ZERO)
    if live and view.degraded:
        return EntryOutcome(False, "input_dead_lettered", view.phase, ZERO)
    limited = view.phase == "proof" and live
    if live and view.phase in LIVE_PHASES:
        known = view.equity is not None and view.equity_day in (clock.today, clock.previous_day)
        if not known or view.equity is None:
            return EntryOutcome(False, "equity_unknown", view.phase, ZERO)
        if view.equity <= 0:
            return EntryOutcome(False, "equity_depleted", view.phase, ZERO)
        if view.position_size < min_size:
            return EntryOutcome(False, "size_below_minimum", view.phase, view.position_size)
    if limited and view.slot_used_today:
        return EntryOutcome(False, "daily_limit", view.phase, view.position_size,
                            next_allowed_at=clock.next_open, remaining_today=0)
    return EntryOutcome(True, "allowed", view.phase, view.position_size,
                        remaining_today=0 if limited else None,
                        consumes_slot=live, records_decision=live)
