"""Seeded synthetic trade histories for ``phasectl simulate``, written as generic-format CSV.

``simulate`` draws a fixed-risk intraday strategy: ``trades_per_day`` trades on each of ``days``
Monday-to-Friday dates (weekends skipped; holidays are not known here, the replay's calendar
decides what a trading day is). Parameters:

- ``seed``: seeds ``random.Random``; the same arguments always give byte-identical text.
- ``days``: how many weekdays to fill, counted from ``start`` (a weekend ``start`` moves to Monday).
- ``win_probability``: chance that a trade wins, 0..1, drawn exactly in steps of one millionth.
- ``payoff_ratio``: a win's size in units of ``risk`` (the R:R the history aims at).
- ``trades_per_day``: trades per day, 1..50, each inside its own slice of 09:35-15:30 local time.
- ``starting_equity``: equity before the first trade; ``equity_after`` runs on from it.
- ``risk``: money lost by an average losing trade; a win makes ``risk * payoff_ratio``. Each P&L
  carries up to +/-10 % seeded noise and is quantized to cents (half-even).
- ``start``: first date; ``tz``: IANA zone of the wall-clock times (timestamps carry the offset).
- ``warmup_days``: the first days trade the default winning strategy (``WARMUP_WIN_PROBABILITY``
  at ``WARMUP_PAYOFF_RATIO``) before ``win_probability`` and ``payoff_ratio`` apply: a strategy
  that worked, then stopped working. The random draws do not depend on it.

The defaults are a strongly winning strategy (72 % winners at 2.2R) that climbs
experience -> proof -> trial within 250 days. ``LOSING_PRESET`` wins for 25 days (long enough to
earn proof: experience itself is never downgraded, R-6.4) and then loses at 40 % and 0.8R, which
produces the loss streaks that trigger downgrades.
"""

from __future__ import annotations

import csv
import io
import random
from datetime import date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

GENERIC_HEADER: Final = ("trade_id", "opened_at", "closed_at", "pnl", "kind", "equity_after")
SESSION_FIRST_ENTRY: Final = time(9, 35)  # local wall time of the earliest simulated entry
SESSION_LAST_EXIT: Final = time(15, 30)  # local wall time by which every simulated trade closes
MAX_TRADES_PER_DAY: Final = 50  # keeps every slice at least 7 minutes wide
NOISE_PERMILLE: Final = 100  # P&L noise bound: +/-100 per mille = +/-10 % of the nominal amount
_CENTS: Final = Decimal("0.01")
_MILLION: Final = 1_000_000


WARMUP_WIN_PROBABILITY: Final = Decimal("0.72")  # the default strategy, used for warm-up days
WARMUP_PAYOFF_RATIO: Final = Decimal("2.2")


class SimulationPreset(TypedDict, total=False):
    """Keyword arguments of ``simulate`` that a preset may fix."""

    days: int
    warmup_days: int
    win_probability: Decimal
    payoff_ratio: Decimal
    trades_per_day: int
    starting_equity: Decimal
    risk: Decimal


# Wins long enough to leave experience, then loses money: for seed 7 it runs three or more
# losses in a row within the first 40 days, so a replay is downgraded out of proof.
LOSING_PRESET: Final[SimulationPreset] = {
    "warmup_days": 25,
    "win_probability": Decimal("0.40"),
    "payoff_ratio": Decimal("0.8"),
}


def simulate(
    *,
    seed: int,
    days: int = 250,
    win_probability: Decimal = WARMUP_WIN_PROBABILITY,
    payoff_ratio: Decimal = WARMUP_PAYOFF_RATIO,
    trades_per_day: int = 2,
    starting_equity: Decimal = Decimal("10000"),
    risk: Decimal = Decimal("50"),
    start: date = date(2026, 1, 5),
    tz: str = "America/New_York",
    warmup_days: int = 0,
) -> str:
    """A generic-format CSV (header ``trade_id,opened_at,closed_at,pnl,kind,equity_after``)."""
    _check(days, win_probability, payoff_ratio, trades_per_day, starting_equity, risk)
    if warmup_days < 0:
        raise ValueError(f"warmup_days must be >= 0, got {warmup_days}")
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {tz!r}") from None
    # Not for security: a seeded generator whose whole point is reproducible test data.
    rng = random.Random(seed)  # noqa: S311
    threshold = win_probability * _MILLION
    warmup_threshold = WARMUP_WIN_PROBABILITY * _MILLION
    slot_minutes = _minutes(SESSION_FIRST_ENTRY, SESSION_LAST_EXIT) // trades_per_day
    win_amount = risk * payoff_ratio
    warmup_win_amount = risk * WARMUP_PAYOFF_RATIO
    equity = starting_equity

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(GENERIC_HEADER)
    for index, day in enumerate(_weekdays(start, days)):
        warm = index < warmup_days
        first_entry = datetime.combine(day, SESSION_FIRST_ENTRY, tzinfo=zone)
        for slot in range(trades_per_day):
            slot_start = first_entry + timedelta(minutes=slot * slot_minutes)
            # The entry lands in the slice's first half and the exit in the same slice, so trades
            # of one day never overlap and all close by SESSION_LAST_EXIT.
            opened_at = slot_start + timedelta(minutes=rng.randrange(slot_minutes // 2))
            closed_at = opened_at + timedelta(minutes=rng.randint(1, slot_minutes // 2))
            won = rng.randrange(_MILLION) < (warmup_threshold if warm else threshold)
            noise = Decimal(rng.randint(-NOISE_PERMILLE, NOISE_PERMILLE)) / 1000
            nominal = (warmup_win_amount if warm else win_amount) if won else -risk
            pnl = (nominal * (1 + noise)).quantize(_CENTS, rounding=ROUND_HALF_EVEN)
            equity += pnl
            writer.writerow(
                (
                    f"sim{seed}-{day:%Y%m%d}-{slot + 1}",
                    opened_at.isoformat(),
                    closed_at.isoformat(),
                    str(pnl),
                    "regular",
                    str(equity),
                )
            )
    return out.getvalue()


def _check(
    days: int,
    win_probability: Decimal,
    payoff_ratio: Decimal,
    trades_per_day: int,
    starting_equity: Decimal,
    risk: Decimal,
) -> None:
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    if not 1 <= trades_per_day <= MAX_TRADES_PER_DAY:
        raise ValueError(f"trades_per_day must be 1..{MAX_TRADES_PER_DAY}, got {trades_per_day}")
    if not (win_probability.is_finite() and 0 <= win_probability <= 1):
        raise ValueError(f"win_probability must be within 0..1, got {win_probability}")
    if not (payoff_ratio.is_finite() and payoff_ratio > 0):
        raise ValueError(f"payoff_ratio must be > 0, got {payoff_ratio}")
    if not (risk.is_finite() and risk > 0):
        raise ValueError(f"risk must be > 0, got {risk}")
    if not starting_equity.is_finite():
        raise ValueError(f"starting_equity must be finite, got {starting_equity}")


def _minutes(first: time, last: time) -> int:
    return (last.hour - first.hour) * 60 + last.minute - first.minute


def _weekdays(start: date, count: int) -> list[date]:
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:  # Monday..Friday
            days.append(day)
        day += timedelta(days=1)
    return days
