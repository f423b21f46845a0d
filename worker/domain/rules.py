"""The rulebook as small pure functions: gate criteria (§3), downgrade triggers (§6), size (§5).

Each rule takes its data as arguments and returns a verdict with a human-readable reason; the
orchestrators (`evaluate_gate`, `downgrade_triggers`, `position_size`) only combine verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

from worker.domain.metrics import CENT, Outcomes, Tally, q4
from worker.domain.model import Phase
from worker.domain.policy import Policy

NO_DATA = "no data"
NEXT_PHASE: dict[Phase, Phase] = {"experience": "proof", "proof": "trial", "trial": "scaling"}


@dataclass(frozen=True, slots=True)
class Criterion:
    """One gate criterion's verdict (R-3.7): required value, actual value and `met`."""

    name: str
    required: str
    actual: str | None  # None: no data
    met: bool
    reason: str = ""
    unbounded: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "required": self.required,
                               "actual": self.actual, "met": self.met}
        if self.reason:
            out["reason"] = self.reason
        if self.unbounded:
            out["rr_unbounded"] = True
        return out


@dataclass(frozen=True, slots=True)
class GateResult:
    from_phase: Phase
    to_phase: Phase
    criteria: tuple[Criterion, ...]

    @property
    def eligible(self) -> bool:
        return all(c.met for c in self.criteria)

    @property
    def failed(self) -> tuple[str, ...]:
        """Failed criteria in table order (R-3.7)."""
        return tuple(c.name for c in self.criteria if not c.met)

    def as_json(self) -> dict[str, Any]:
        return {"from_phase": self.from_phase, "to_phase": self.to_phase,
                "eligible": self.eligible, "failed": list(self.failed),
                "criteria": [c.as_json() for c in self.criteria]}


@dataclass(frozen=True, slots=True)
class GateInputs:
    """What a gate needs, measured over closed sessions of the epoch (R-3.5)."""

    tally: Tally  # folded over the trades of closed sessions only, last session finished
    closed_days: int
    override_incidents: int
    no_entry_run: int | None  # longest run incl. the unfinished one; None before any entry
    start_equity: Decimal | None


# -- criteria ----------------------------------------------------------------------------------


def at_least(name: str, actual: int, required: int) -> Criterion:
    return Criterion(name, f">= {required}", str(actual), actual >= required)


def at_most(name: str, actual: int | None, limit: int) -> Criterion:
    if actual is None:
        return Criterion(name, f"<= {limit}", None, False, NO_DATA)
    return Criterion(name, f"<= {limit}", str(actual), actual <= limit)


def win_rate_at_least(name: str, outcomes: Outcomes, threshold: Decimal) -> Criterion:
    met = outcomes.win_rate_at_least(threshold)
    rate = outcomes.win_rate()
    if met is None or rate is None:
        return Criterion(name, f">= {threshold}", None, False, NO_DATA)
    return Criterion(name, f">= {threshold}", q4(rate), met)


def rr_at_least(name: str, outcomes: Outcomes, threshold: Decimal) -> Criterion:
    met = outcomes.rr_at_least(threshold)
    if met is None:
        return Criterion(name, f">= {threshold}", None, False, NO_DATA)
    if outcomes.rr_unbounded():
        return Criterion(name, f">= {threshold}", None, True, "wins and no losses",
                         unbounded=True)
    rr = outcomes.rr()
    return Criterion(name, f">= {threshold}", q4(rr) if rr is not None else None, met)


def drawdown_below(name: str, tally: Tally, threshold: Decimal,
                   start_equity: Decimal | None) -> Criterion:
    met = tally.drawdown_below(threshold, start_equity)
    dd = tally.drawdown(start_equity)
    if met is None or dd is None:
        return Criterion(name, f"< {threshold}", None, False, NO_DATA)
    return Criterion(name, f"< {threshold}", q4(dd), met)


def non_regular_share(tally: Tally, max_share: Decimal) -> Criterion:
    """R-3.4: more than `max_share` non-regular trades, or none at all, fails."""
    name = "non_regular_share"
    if tally.epoch_trades == 0:
        return Criterion(name, f"<= {max_share}", None, False, NO_DATA)
    share = Decimal(tally.non_regular) / tally.epoch_trades
    return Criterion(name, f"<= {max_share}", q4(share),
                     Decimal(tally.non_regular) <= max_share * tally.epoch_trades)


# -- gates (R-3.1 ..) ----------------------------------------------------------------


def evaluate_gate(phase: Phase, inputs: GateInputs, policy: Policy) -> GateResult | None:
    """Every criterion of the gate out of `phase`, in table order; None at the top."""
    t = inputs.tally
    gates = policy.gates
    crits: list[Criterion]
    if phase == "experience":
        g1 = gates.proof
        _, outcomes = t.session_outcomes(g1.window_sessions)
        crits = [
            at_least("closed_sessions_with_trades", t.sessions_counted, g1.min_sessions),
            win_rate_at_least("win_rate", outcomes, g1.min_win_rate),
            rr_at_least("rr", outcomes, g1.min_rr),
            at_most("override_incidents", inputs.override_incidents, g1.max_override_incidents),
        ]
    elif phase == "proof":
        g2 = gates.trial
        outcomes = t.counted_outcomes(g2.window_trades)
        crits = [
            at_least("closed_trading_days", inputs.closed_days, g2.min_days),
            at_least("counted_trades", t.counted, g2.min_trades),
            win_rate_at_least("win_rate", outcomes, g2.min_win_rate),
            rr_at_least("rr", outcomes, g2.min_rr),
            at_most("no_entry_run", inputs.no_entry_run, g2.max_no_entry_run),
        ]
    elif phase == "trial":
        g3 = gates.scaling
        outcomes = t.counted_outcomes(g3.window_trades)
        crits = [
            at_least("closed_trading_days", inputs.closed_days, g3.min_days),
            at_least("counted_trades", t.counted, g3.min_trades),
            win_rate_at_least("win_rate", outcomes, g3.min_win_rate),
            rr_at_least("rr", outcomes, g3.min_rr),
            drawdown_below("max_drawdown", t, g3.max_drawdown, inputs.start_equity),
        ]
    else:
        return None
    crits.append(non_regular_share(t, gates.max_non_regular_share))
    return GateResult(phase, NEXT_PHASE[phase], tuple(crits))


# -- downgrade triggers (R-6.1) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    reason: str


def consecutive_losses(streak: int, limit: int) -> Trigger | None:
    if streak >= limit:
        return Trigger("consecutive_losses", f"{streak} consecutive losses (limit {limit})")
    return None


def rolling_win_rate(wins: int, n: int, epoch_triggers: int, window: int,
                     floor: Decimal) -> Trigger | None:
    """Strictly below `floor` over the last `window` trigger trades, once the epoch has them."""
    if epoch_triggers < window or n < window:
        return None
    if Decimal(wins) < floor * n:
        return Trigger("rolling_win_rate",
                       f"win rate {q4(Decimal(wins) / n)} over the last {n} trades < {floor}")
    return None


def daily_loss(phase: Phase, day_net: Decimal, base_equity: Decimal | None,
               limit: Decimal) -> Trigger | None:
    """R-2.9: −net / equity at the later of the day's open and the epoch start, strictly > limit."""
    if phase not in ("trial", "scaling") or base_equity is None or base_equity <= 0:
        return None
    if day_net < 0 and -day_net > limit * base_equity:
        return Trigger("daily_loss",
                       f"daily loss {q4(-day_net / base_equity)} of equity {base_equity} > {limit}")
    return None


# -- position size (R-5.1 ..) ----------------------------------------------------------


def floor_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_DOWN)


def phase_size(phase: Phase, win_streak: int, session_bonus: bool,
               policy: Policy) -> tuple[Decimal, str]:
    """The phase's nominal size before reduction and caps, with its justification."""
    s = policy.sizes
    if phase == "experience":
        return Decimal(0), "paper only"
    if phase == "proof":
        return s.proof, "proof size"
    if phase == "trial":
        return s.trial, "trial size"
    steps = win_streak // s.scaling_step_wins
    size = s.scaling_base + s.scaling_step * steps
    reasons = []
    if steps:
        reasons.append(f"{steps * s.scaling_step_wins} consecutive wins")
    if session_bonus:
        size += s.scaling_bonus
        reasons.append(f"win rate >= {s.scaling_bonus_win_rate} over "
                       f"{s.scaling_bonus_sessions} sessions")
    return size, ", ".join(reasons) if reasons else "scaling base size"


def position_size(phase: Phase, win_streak: int, session_bonus: bool, reduced: bool,
                  equity: Decimal | None, policy: Policy) -> tuple[Decimal, str]:
    """R-5.1: size in the account currency, rounded down to cents, with a justification."""
    base, why = phase_size(phase, win_streak, session_bonus, policy)
    if phase == "experience":
        return Decimal("0.00"), "0.00: experience is paper only"
    if reduced:
        base = base * policy.sizes.reduction_fraction
        why = f"{why}, reduced to {policy.sizes.reduction_fraction} after a downgrade"
    if equity is None:
        return Decimal("0.00"), "0.00: equity unknown"
    fraction = policy.sizes.max_position_fraction
    cap = (fraction * equity).quantize(Decimal(1), rounding=ROUND_DOWN)
    size = base
    if cap < size:
        size = cap
        why = f"capped at {(fraction * 100).normalize():f}% of equity {equity}"
    if policy.sizes.max_position_size < size:
        size = policy.sizes.max_position_size
        why = f"capped at {policy.sizes.max_position_size}"
    size = floor_cents(max(size, Decimal(0)))
    return size, f"{size}: {why}"
