"""Operator actions of SPEC §7 as pure functions over the account state.

Authentication (signatures, lockout, replay) happens before these run; here are only the
actions' own rules (R-3.6, R-3.10, R-7.1 .. R-7.6) and their effects.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from worker.domain.calendar import Calendar
from worker.domain.decide import (
    Emitted,
    Record,
    _Out,
    account_now,
    advance,
    clear_breaker,
    evaluate,
    refresh_size,
    start_epoch,
    sync_open_session,
    transition,
)
from worker.domain.model import PHASES, AccountState, Phase, phase_index
from worker.domain.policy import Policy
from worker.domain.rules import NEXT_PHASE


@dataclass(frozen=True, slots=True)
class ActionResult:
    state: AccountState
    outcome: str  # applied | noop | refused
    reason: str = ""
    detail: dict[str, Any] | None = None
    events: tuple[Emitted, ...] = ()
    history: tuple[Record, ...] = ()


def _done(state: AccountState, out: _Out, now: datetime, cal: Calendar,
          detail: dict[str, Any] | None = None, outcome: str = "applied") -> ActionResult:
    state = sync_open_session(state, now, cal)
    state = replace(state, version=state.version + 1, updated_at=now)
    return ActionResult(state, outcome, "", detail, tuple(out.events), tuple(out.history))


def refused(state: AccountState, reason: str, detail: dict[str, Any] | None = None) -> ActionResult:
    return ActionResult(state, "refused", reason, detail)


def _sequential(state: AccountState, target: Phase | None) -> str | None:
    """R-3.6: only the next phase; anything else is non_sequential."""
    nxt = NEXT_PHASE.get(state.phase)
    if nxt is None or (target is not None and target != nxt):
        return "non_sequential"
    return None


def act_advance(state: AccountState, policy: Policy, now: datetime, *, operator_id: str | None,
                cause: str, target: Phase | None = None) -> ActionResult:
    """R-7.1: re-evaluate the gate at execution; one phase up if eligible."""
    problem = _sequential(state, target)
    if problem:
        return refused(state, problem)
    if state.halted:
        return refused(state, "breaker_tripped")
    result = evaluate(state, policy)
    if result is None:  # unreachable: _sequential guarantees a next phase
        return refused(state, "non_sequential")
    if not result.eligible:
        return refused(state, "gate_failed", result.as_json())
    cal = Calendar(policy.calendar)
    at = account_now(state, now)
    out = _Out()
    state = advance(state, at, now, policy, cal, out, cause, kind="advance", trigger="manual",
                    validation=result, operator_id=operator_id)
    return _done(state, out, now, cal, result.as_json())


def act_force_advance(state: AccountState, policy: Policy, now: datetime, *, target: Phase | None,
                      operator_id: str, reason: str, cause: str) -> ActionResult:
    """R-7.3: one phase up without the gate; records the bypassed evaluation; an incident."""
    problem = _sequential(state, target)
    if problem:
        return refused(state, problem)
    if state.halted:
        return refused(state, "breaker_tripped")
    bypassed = evaluate(state, policy)
    cal = Calendar(policy.calendar)
    at = account_now(state, now)
    out = _Out()
    state = advance(state, at, now, policy, cal, out, cause, kind="force_advance",
                    trigger="manual", validation=bypassed, operator_id=operator_id,
                    override_used=True, reasons=[reason])
    return _done(state, out, now, cal, bypassed.as_json() if bypassed else None)


def act_rollback(state: AccountState, policy: Policy, now: datetime, *, target: Phase | None,
                 operator_id: str, reason: str, cause: str) -> ActionResult:
    """R-7.4: to a named lower phase; the reduction and the breaker stay (R-5.2, R-6.3)."""
    if target is None or target not in PHASES or phase_index(target) >= phase_index(state.phase):
        return refused(state, "non_sequential")
    cal = Calendar(policy.calendar)
    at = account_now(state, now)
    out = _Out()
    state = transition(state, target, kind="rollback", trigger="manual", at=at, now=now,
                       reasons=[reason], policy=policy, cal=cal, out=out, cause=cause,
                       operator_id=operator_id, override_used=True)
    state = refresh_size(state, policy, cal, at, out, cause)
    return _done(state, out, now, cal)


def act_acknowledge(state: AccountState, policy: Policy, now: datetime, *, operator_id: str,
                    cause: str) -> ActionResult:
    """R-7.2: clears the breaker; `noop` when it is not tripped."""
    if not state.halted:
        return ActionResult(state, "noop")
    cal = Calendar(policy.calendar)
    out = _Out()
    state = clear_breaker(state, account_now(state, now), cal, out, by="acknowledge",
                          operator_id=operator_id)
    return _done(state, out, now, cal)


def act_reset_epoch(state: AccountState, policy: Policy, now: datetime, *, operator_id: str,
                    reason: str, cause: str) -> ActionResult:
    """R-7.5: restart the epoch's counters and windows; an override incident in the tenure."""
    cal = Calendar(policy.calendar)
    at = account_now(state, now)
    out = _Out()
    state = start_epoch(state, at, policy, cal)
    state = replace(state, override_incidents=state.override_incidents + 1)
    day = cal.trading_day(at)
    payload = {"at": at.isoformat(), "trading_day": str(day), "operator_id": operator_id,
               "reason": reason, "phase": state.phase}
    out.record("epoch_reset", payload)
    out.emit("epoch_reset", at, day, payload)
    state = refresh_size(state, policy, cal, at, out, cause)
    return _done(state, out, now, cal)


def act_clear_reduction(state: AccountState, policy: Policy, now: datetime, *, operator_id: str,
                        cause: str) -> ActionResult:
    """R-7.6: removes the size reduction; `noop` when there is none."""
    if not state.size_reduced:
        return ActionResult(state, "noop")
    cal = Calendar(policy.calendar)
    at = account_now(state, now)
    out = _Out()
    state = replace(state, size_reduced=False)
    out.record("reduction_cleared", {"at": at.isoformat(), "operator_id": operator_id})
    state = refresh_size(state, policy, cal, at, out, cause)
    return _done(state, out, now, cal)

