"""The metrics of SPEC §2: outcomes, win rate, payoff ratio, streaks, equity, drawdown, epochs."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from worker.domain.calendar import Calendar
from worker.domain.decide import equity_at
from worker.domain.metrics import EpochContext, Outcomes, Tally, Window, fold, q4
from worker.domain.model import Kind, Trade

from .conftest import FRIDAY, MONDAY, Book, et

D = Decimal

START = et(MONDAY, 7)
CTX = EpochContext(START, inclusive=False, start_equity=Decimal("10000"), window=Window())


def outcomes(*pnls: int | str) -> Outcomes:
    out = Outcomes()
    for pnl in pnls:
        out = out.add(Decimal(pnl))
    return out


def trade(n: int, pnl: int | str, *, kind: Kind = "regular", closed_at: datetime | None = None,
          opened_at: datetime | None = None, day: date = MONDAY) -> Trade:
    at = closed_at if closed_at is not None else et(day, 10) + timedelta(minutes=n)
    return Trade(f"T{n:03d}", at, opened_at, Decimal(pnl), kind, False, None, day, "x")


def tally(*pnls: int | str, kinds: tuple[Kind, ...] = (), ctx: EpochContext = CTX) -> Tally:
    trades = [trade(i, p, kind=kinds[i] if i < len(kinds) else "regular")
              for i, p in enumerate(pnls)]
    return fold(Tally(), trades, ctx)


# --- wins, losses, breakevens, win rate -------------------------------------------


@pytest.mark.parametrize(
    ("pnl", "wins", "losses", "breakevens"),
    [("0.01", 1, 0, 0), ("-0.01", 0, 1, 0), ("0", 0, 0, 1), ("0.000", 0, 0, 1)],
)
def test_r2_2_positive_pnl_is_a_win_negative_a_loss_zero_a_breakeven(
        pnl: str, wins: int, losses: int, breakevens: int) -> None:
    out = outcomes(pnl)

    assert (out.wins, out.losses, out.breakevens) == (wins, losses, breakevens)


def test_r2_3_win_rate_counts_a_breakeven_as_a_counted_non_win() -> None:
    assert outcomes(10, 0, -5, 0).win_rate() == Decimal("0.25")


def test_r2_11_win_rate_of_no_trades_is_no_data() -> None:
    assert Outcomes().win_rate() is None
    assert Outcomes().win_rate_at_least(Decimal("0")) is None


def test_r2_1_win_rate_threshold_is_compared_exactly_not_after_rounding() -> None:
    # 2/3 = 0.66666…: rounds to 0.6667 on the wire but is below 0.66667
    out = outcomes(1, 1, -1)

    assert out.win_rate_at_least(Decimal("0.66667")) is False
    assert out.win_rate_at_least(Decimal("0.6666")) is True


# --- payoff ratio -------------------------------------------------------------------------


def test_r2_4_rr_is_mean_win_over_mean_absolute_loss() -> None:
    # mean win (30 + 60) / 2 = 45, mean |loss| (10 + 20) / 2 = 15
    assert outcomes(30, 60, -10, -20).rr() == Decimal(3)


def test_r2_4_wins_and_no_losses_is_unbounded_and_meets_any_rr_threshold() -> None:
    out = outcomes(5, 7)

    assert out.rr_unbounded() is True
    assert out.rr() is None
    assert out.rr_at_least(Decimal("1000000")) is True


def test_r2_4_no_wins_is_rr_zero() -> None:
    out = outcomes(-5, 0)

    assert out.rr() == Decimal(0)
    assert out.rr_at_least(Decimal("0.0001")) is False


def test_r2_4_breakevens_only_is_rr_zero_not_no_data() -> None:
    assert outcomes(0, 0).rr() == Decimal(0)


def test_r2_11_rr_of_no_trades_is_no_data() -> None:
    assert Outcomes().rr() is None
    assert Outcomes().rr_at_least(Decimal(0)) is None


def test_r2_1_rr_exactly_at_the_threshold_meets_it_by_exact_comparison() -> None:
    out = outcomes(1, 2, -1, -1)  # mean win 1.5, mean |loss| 1

    assert out.rr_at_least(Decimal("1.5")) is True
    assert out.rr_at_least(Decimal("1.5000000001")) is False


# --- how ratios are emitted ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "emitted"),
    [
        ("0.66665", "0.6666"),  # half-even: ties go to the even digit
        ("0.66675", "0.6668"),
        ("0.666651", "0.6667"),
        ("1.5", "1.5000"),
        ("0", "0.0000"),
    ],
)
def test_r2_1_ratios_are_emitted_quantized_to_4_places_half_even(value: str, emitted: str) -> None:
    assert q4(Decimal(value)) == emitted


def test_r2_1_money_keeps_its_scale_through_the_tally() -> None:
    t = tally("10.50", "-0.25", "0.000")

    assert str(t.pnl) == "10.250"


# --- counted trades, trigger trades, streaks --------------------------------------


def test_r2_5_only_regular_trades_are_counted() -> None:
    t = tally(10, 10, 10, kinds=("regular", "emergency_exit", "manual"))

    assert t.counted == 1
    assert t.epoch_trades == 3
    assert t.non_regular == 2


def test_r2_5_every_kind_is_a_trigger_trade_and_any_positive_pnl_is_a_rolling_window_win() -> None:
    t = tally(10, 10, -10, kinds=("emergency_exit", "manual", "regular"))

    assert t.triggers == 3
    assert t.trigger_outcomes(20) == (2, 3)


@pytest.mark.parametrize("kind", ["emergency_exit", "manual"])
def test_r2_5_a_non_regular_win_does_not_reset_a_loss_streak(kind: Kind) -> None:
    t = tally(-1, -1, 5, kinds=("regular", "regular", kind))

    assert t.loss_streak == 2


def test_r2_5_a_regular_win_resets_the_loss_streak() -> None:
    assert tally(-1, -1, 5).loss_streak == 0


@pytest.mark.parametrize("kind", ["emergency_exit", "manual", "regular"])
def test_r2_5_a_loss_of_any_kind_extends_the_loss_streak(kind: Kind) -> None:
    assert tally(-1, -1, kinds=("regular", kind)).loss_streak == 2


def test_r2_5_scaling_win_streak_counts_regular_wins_since_the_last_loss_of_any_kind() -> None:
    t = tally(5, 5, -1, 5, 5, 5, 7, kinds=("regular", "regular", "emergency_exit", "regular",
                                         "regular", "regular", "manual"))

    assert t.win_streak == 3


def test_r2_6_a_breakeven_neither_extends_nor_resets_a_loss_streak() -> None:
    assert tally(-1, 0, -1, 0).loss_streak == 2


def test_r2_6_a_breakeven_neither_extends_nor_resets_a_win_streak() -> None:
    assert tally(1, 0, 1, 0).win_streak == 2


def test_r2_6_streaks_follow_trade_order_not_fold_arguments() -> None:
    # the same trades, one arriving late, give the same streak once refolded in trade order
    book = Book.at("experience")
    book.trade(-1, at=et(MONDAY, 10, 0))
    book.trade(-1, at=et(MONDAY, 10, 2))
    book.trade(5, at=et(MONDAY, 10, 1))  # arrives last, belongs in the middle

    assert book.state.current.loss_streak == 1


# --- epoch membership ---------------------------------------------------------------------


def test_r1_5_a_trade_opened_before_the_epoch_start_counts_in_pnl_but_not_in_streaks() -> None:
    early = trade(1, -50, opened_at=START - timedelta(hours=1))
    t = fold(Tally(), [early], CTX)

    assert t.pnl == Decimal(-50)
    assert (t.loss_streak, t.counted, t.triggers, t.epoch_trades) == (0, 0, 0, 0)


def test_r1_5_a_trade_without_opened_at_belongs_by_its_closed_at() -> None:
    assert fold(Tally(), [trade(1, -50)], CTX).loss_streak == 1


def test_r1_5_a_trade_anchored_exactly_at_the_epoch_start_stays_in_the_old_epoch() -> None:
    t = fold(Tally(), [trade(1, -50, closed_at=START)], CTX)

    assert t.epoch_trades == 0


def test_r1_5_a_new_epoch_keeps_pnl_and_restarts_every_epoch_counter() -> None:
    t = tally(10, -5, -5).reset_epoch()

    assert t.pnl == Decimal(0)
    assert t.trades == 3
    assert (t.counted, t.loss_streak, t.counted_window, t.trigger_window) == (0, 0, (), ())


# --- windows -------------------------------------------------------------------------------------


def test_r2_3_counted_window_keeps_only_the_last_window_trades() -> None:
    ctx = EpochContext(START, False, None, Window(trades=3, sessions=2, triggers=2))
    t = tally(-1, 1, 1, 1, ctx=ctx)

    assert t.counted_window == (Decimal(1),) * 3
    assert t.counted_outcomes(50).n == 3
    assert t.trigger_outcomes(20) == (2, 2)


def test_r2_3_session_window_aggregates_counted_trades_per_closed_session() -> None:
    trades = [trade(1, 5, day=MONDAY), trade(2, -5, day=MONDAY),
              trade(3, 5, day=date(2026, 1, 6), kind="manual"),
              trade(4, 5, day=date(2026, 1, 7))]
    t = fold(Tally(), trades, CTX).finish_day(CTX.window)

    sessions, out = t.session_outcomes(20)
    assert t.sessions_counted == 2  # the manual-only day has no counted trade
    assert (sessions, out.n, out.wins) == (2, 3, 2)


# --- max drawdown ------------------------------------------------------------------------


def test_r2_10_drawdown_is_the_worst_drop_from_the_running_peak() -> None:
    # 10000 → 10500 (peak) → 10000 → 10200 → 9975: worst (10500 - 9975) / 10500 = 0.05
    t = tally(500, -500, 200, -225)

    assert t.drawdown(Decimal("10000")) == Decimal("0.05")


def test_r2_10_the_epoch_start_equity_is_the_first_peak() -> None:
    assert tally(-100).drawdown(Decimal("10000")) == Decimal("0.01")


def test_r2_10_drawdown_counts_trades_of_every_kind() -> None:
    t = tally(-100, kinds=("emergency_exit",))

    assert t.drawdown(Decimal("10000")) == Decimal("0.01")


def test_r2_10_drawdown_counts_trades_closed_after_the_start_even_if_opened_before() -> None:
    early = trade(1, -100, opened_at=START - timedelta(hours=1))

    assert fold(Tally(), [early], CTX).drawdown(Decimal("10000")) == Decimal("0.01")


def test_r2_11_drawdown_without_a_known_positive_start_equity_is_no_data() -> None:
    t = tally(-100)

    assert t.drawdown(None) is None
    assert t.drawdown_below(Decimal("0.05"), Decimal(0)) is None


def test_r2_10_drawdown_exactly_at_the_threshold_is_not_below_it() -> None:
    t = tally(-500)

    assert t.drawdown_below(Decimal("0.05"), Decimal("10000")) is False
    assert tally("-499.99").drawdown_below(Decimal("0.05"), Decimal("10000")) is True


def test_r2_10_deposits_between_reports_are_not_drawdown() -> None:
    # equity reports jump (a deposit), but drawdown is built from start equity plus P&L only
    book = Book.at("trial")
    book.trade(-100, mode="live", equity_after="50000")

    assert book.state.current.drawdown(book.state.epoch_start_equity) == Decimal("0.01")


# --- equity at an instant -----------------------------------------------------------------


def test_r2_8_equity_is_the_last_report_at_or_before_the_instant() -> None:
    book = Book.at("proof")  # FRIDAY closed with equity 10000
    book.trade(-100, mode="live", equity_after="9900", at=et(MONDAY, 10))
    cal = Calendar(book.policy.calendar)

    assert equity_at(book.state, et(MONDAY, 9), cal) == Decimal("10000")
    assert equity_at(book.state, et(MONDAY, 10), cal) == Decimal("9900")


def test_r2_8_equity_reported_the_trading_day_before_is_known() -> None:
    book = Book.at("proof")
    cal = Calendar(book.policy.calendar)

    # FRIDAY's report is known through Monday's session, which ends Tuesday 07:00
    assert equity_at(book.state, et(date(2026, 1, 6), 6, 59), cal) == Decimal("10000")


def test_r2_8_equity_reported_two_trading_days_before_is_unknown() -> None:
    book = Book.at("proof")
    cal = Calendar(book.policy.calendar)

    assert equity_at(book.state, et(date(2026, 1, 6), 7), cal) is None


def test_r2_8_equity_may_be_reported_at_or_below_zero() -> None:
    book = Book.at("proof")
    book.trade(-20000, mode="live", equity_after="-10000")
    cal = Calendar(book.policy.calendar)

    assert equity_at(book.state, et(MONDAY, 11), cal) == Decimal("-10000")


def test_r2_8_no_report_is_unknown_equity() -> None:
    book = Book.at("experience", equity=None)
    cal = Calendar(book.policy.calendar)

    assert equity_at(book.state, et(FRIDAY, 17), cal) is None


# --- modes and kinds ----------------------------------------------------------------------


def test_r1_4_paper_and_live_regular_trades_count_alike() -> None:
    book = Book.at("trial")
    book.trade("10", mode="paper")
    book.trade("-5", mode="live")

    cur = book.state.current
    assert (cur.counted, cur.triggers, cur.pnl) == (2, 2, D("5"))


@pytest.mark.parametrize(("kind", "counted", "non_regular"),
                         [("regular", 1, 0), ("emergency_exit", 0, 1), ("manual", 0, 1)])
def test_r1_4_each_kind_is_applied_and_only_regular_is_counted(kind: Kind, counted: int,
                                                              non_regular: int) -> None:
    book = Book.at("trial")

    decision = book.trade("10", kind=kind, mode="live")

    assert decision.outcome == "applied"
    cur = book.state.current
    assert (cur.counted, cur.non_regular, cur.triggers) == (counted, non_regular, 1)
