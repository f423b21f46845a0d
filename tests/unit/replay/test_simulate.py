"""The seeded synthetic history behind ``phasectl simulate``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time, timedelta
from decimal import Decimal
from itertools import groupby, pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from worker.replay.parsers import ReplayTrade, parse_generic
from worker.replay.simulate import GENERIC_HEADER, LOSING_PRESET, simulate

NEW_YORK = ZoneInfo("America/New_York")


def trades_of(text: str) -> tuple[ReplayTrade, ...]:
    history = parse_generic(text, None, "USD")
    assert history.skipped == ()
    return history.trades


def by_day(trades: Sequence[ReplayTrade]) -> list[list[ReplayTrade]]:
    return [list(day) for _, day in groupby(trades, key=lambda t: t.closed_at.date())]


def longest_losing_run(pnls: Sequence[Decimal]) -> int:
    longest = current = 0
    for pnl in pnls:
        current = current + 1 if pnl < 0 else 0
        longest = max(longest, current)
    return longest


def win_rate_and_payoff(pnls: Sequence[Decimal]) -> tuple[Decimal, Decimal]:
    wins = [p for p in pnls if p > 0]
    losses = [-p for p in pnls if p < 0]
    payoff = (sum(wins, Decimal(0)) / len(wins)) / (sum(losses, Decimal(0)) / len(losses))
    return Decimal(len(wins)) / len(pnls), payoff


def test_the_default_history_parses_as_generic_csv_with_two_trades_a_day() -> None:
    text = simulate(seed=7)

    assert text.splitlines()[0] == ",".join(GENERIC_HEADER)
    assert len(trades_of(text)) == 500


def test_the_same_arguments_give_byte_identical_text() -> None:
    assert simulate(seed=7, days=30) == simulate(seed=7, days=30)


def test_different_seeds_give_different_histories() -> None:
    assert simulate(seed=7, days=30) != simulate(seed=8, days=30)


def test_trades_fall_on_weekdays_only_starting_at_the_start_date() -> None:
    trades = trades_of(simulate(seed=7, days=10))
    days = sorted({t.opened_at.astimezone(NEW_YORK).date() for t in trades})

    assert days[0] == date(2026, 1, 5)
    assert len(days) == 10
    assert all(day.weekday() < 5 for day in days)


def test_trades_open_and_close_within_the_local_session_window_across_dst() -> None:
    trades = trades_of(simulate(seed=3, days=60, trades_per_day=5, start=date(2026, 2, 16)))
    local = [(t.opened_at.astimezone(NEW_YORK), t.closed_at.astimezone(NEW_YORK)) for t in trades]

    assert all(time(9, 35) <= o.time() < c.time() <= time(15, 30) for o, c in local)
    assert {o.utcoffset() for o, _ in local} == {timedelta(hours=-5), timedelta(hours=-4)}


def test_trades_of_one_day_do_not_overlap() -> None:
    for day in by_day(trades_of(simulate(seed=11, days=20, trades_per_day=4))):
        assert all(a.closed_at <= b.opened_at for a, b in pairwise(day))


def test_equity_after_runs_on_from_the_starting_equity() -> None:
    trades = trades_of(simulate(seed=7, days=20, starting_equity=Decimal("2500")))
    running = Decimal("2500")
    for trade in trades:
        running += trade.pnl
        assert trade.equity_after == running


def test_pnl_is_the_risk_or_the_payoff_within_ten_percent_in_cents() -> None:
    trades = trades_of(simulate(seed=7, days=50, risk=Decimal("40"), payoff_ratio=Decimal("2")))

    assert all(t.pnl == t.pnl.quantize(Decimal("0.01")) for t in trades)
    assert all(Decimal("72") <= t.pnl <= Decimal("88") for t in trades if t.pnl > 0)
    assert all(Decimal("-44") <= t.pnl <= Decimal("-36") for t in trades if t.pnl < 0)


def test_the_default_seed_7_history_clears_the_experience_and_proof_thresholds_early() -> None:
    # Experience gate over the first 20 sessions; proof over the next 50
    # days, where the one-live-entry-a-day limit lets only each day's first trade through.
    days = by_day(trades_of(simulate(seed=7)))
    experience = [t.pnl for day in days[:20] for t in day]
    proof = [day[0].pnl for day in days[20:70]]

    win_rate, payoff = win_rate_and_payoff(experience)
    assert win_rate >= Decimal("0.60")
    assert payoff >= Decimal("1.5")
    win_rate, payoff = win_rate_and_payoff(proof)
    assert win_rate >= Decimal("0.65")
    assert payoff >= Decimal("1.8")
    assert longest_losing_run(proof) < 3
    rolling = [sum(1 for p in proof[i : i + 20] if p > 0) for i in range(len(proof) - 19)]
    assert min(rolling) >= 11  # a 20-trade win rate never below 0.55


def test_warm_up_days_trade_the_default_strategy_with_the_same_draws() -> None:
    warmed = simulate(seed=7, days=30, warmup_days=10, win_probability=Decimal("0.40"),
                      payoff_ratio=Decimal("0.8")).splitlines()
    default = simulate(seed=7, days=30).splitlines()

    assert warmed[: 1 + 2 * 10] == default[: 1 + 2 * 10]
    assert warmed[1 + 2 * 10 :] != default[1 + 2 * 10 :]


def test_the_losing_preset_wins_long_enough_to_leave_experience_first() -> None:
    # Experience is never downgraded: the losses must come after the gate of.
    days = by_day(trades_of(simulate(seed=7, **LOSING_PRESET)))
    win_rate, payoff = win_rate_and_payoff([t.pnl for day in days[:20] for t in day])

    assert win_rate >= Decimal("0.60")
    assert payoff >= Decimal("1.5")


def test_the_losing_preset_for_seed_7_loses_three_in_a_row_within_40_days() -> None:
    trades = trades_of(simulate(seed=7, **LOSING_PRESET))
    days = by_day(trades)[:40]

    assert longest_losing_run([t.pnl for day in days for t in day]) >= 3
    assert longest_losing_run([day[0].pnl for day in days]) >= 3  # even one trade a day
    assert sum(t.pnl for t in trades) < 0


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"days": 0}, "days"),
        ({"trades_per_day": 0}, "trades_per_day"),
        ({"trades_per_day": 51}, "trades_per_day"),
        ({"win_probability": Decimal("1.01")}, "win_probability"),
        ({"payoff_ratio": Decimal("0")}, "payoff_ratio"),
        ({"risk": Decimal("-1")}, "risk"),
        ({"starting_equity": Decimal("NaN")}, "starting_equity"),
        ({"tz": "Nowhere/Special"}, "timezone"),
        ({"warmup_days": -1}, "warmup_days"),
    ],
)
def test_an_out_of_range_argument_is_refused_by_name(bad: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        simulate(seed=7, **bad)
