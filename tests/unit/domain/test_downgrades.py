"""Downgrades and the circuit breaker (SPEC §6, R-2.9 daily loss, R-1.5 epochs)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.domain import actions
from worker.domain.model import Phase
from worker.domain.rules import consecutive_losses, daily_loss, rolling_win_rate

from .conftest import MONDAY, Book, criterion, et, with_policy

D = Decimal


# --- rule level ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("streak", "fires"), [(0, False), (2, False), (3, True), (7, True)])
def test_r6_1_consecutive_losses_fire_at_three_or_more(streak: int, fires: bool) -> None:
    verdict = consecutive_losses(streak, 3)

    assert (verdict is not None) is fires
    if verdict is not None:
        assert verdict.name == "consecutive_losses"


@pytest.mark.parametrize(
    ("wins", "n", "epoch_triggers", "fires"),
    [
        (10, 20, 20, True),  # 0.50
        (10, 20, 25, True),
        (11, 20, 20, False),  # exactly 0.55: strict
        (0, 19, 19, False),  # fewer than 20 trigger trades in the epoch
        (0, 20, 19, False),
    ],
)
def test_r6_1_rolling_win_rate_fires_strictly_below_0_55_with_20_trades_in_the_epoch(
        wins: int, n: int, epoch_triggers: int, fires: bool) -> None:
    verdict = rolling_win_rate(wins, n, epoch_triggers, 20, D("0.55"))

    assert (verdict is not None) is fires


@pytest.mark.parametrize(
    ("phase", "net", "base", "fires"),
    [
        ("trial", "-500.01", "10000", True),
        ("scaling", "-500.01", "10000", True),
        ("trial", "-500", "10000", False),  # exactly 5 %: strict
        ("proof", "-9000", "10000", False),  # trial and scaling only
        ("experience", "-9000", "10000", False),
        ("trial", "-9000", None, False),  # unknown equity cannot fire
        ("trial", "-9000", "0", False),  # equity <= 0 cannot fire
        ("trial", "-9000", "-1", False),
        ("trial", "500.01", "10000", False),  # a net gain is no loss
    ],
)
def test_r2_9_daily_loss_fires_strictly_above_5_percent_in_trial_and_scaling_only(
        phase: Phase, net: str, base: str | None, fires: bool) -> None:
    verdict = daily_loss(phase, D(net), None if base is None else D(base), D("0.05"))

    assert (verdict is not None) is fires


# --- R-6.2: what a downgrade does ----------------------------------------------------------------


def test_r6_2_three_consecutive_losses_in_proof_downgrade_one_phase_in_one_decision() -> None:
    book = Book.at("proof")
    book.trades(["-10", "-10"])

    decision = book.trade("-10")

    assert book.state.phase == "experience"
    assert [e.type for e in decision.events] == [
        "phase_changed", "circuit_breaker_tripped", "position_size_changed"]
    assert [r.type for r in decision.history] == ["transition", "breaker_tripped", "size_changed"]
    changed = decision.events[0].payload
    assert (changed["from_phase"], changed["to_phase"], changed["kind"], changed["trigger"]) == (
        "proof", "experience", "downgrade", "auto")
    assert [r.split(":")[0] for r in changed["reasons"]] == ["consecutive_losses"]


def test_r6_2_a_downgrade_trips_the_breaker_and_halves_the_new_phase_size() -> None:
    book = Book.at("trial")

    book.trades(["-10"] * 3)

    assert (book.state.phase, book.state.halted, book.state.size_reduced) == ("proof", True, True)
    assert book.state.position_size == D("50.00")
    assert book.events_of("position_size_changed")[-1].payload["to_size"] == "50.00"


def test_r6_2_reasons_list_every_rule_that_fired() -> None:
    book = Book.at("trial")
    book.trades(["-10", "-10"])

    decision = book.trade("-600")  # third loss and a daily loss of 6.2 %

    names = [r.split(":")[0] for r in decision.events[0].payload["reasons"]]
    assert names == ["consecutive_losses", "daily_loss"]
    tripped = decision.events[1].payload["reasons"]
    assert tripped == ["consecutive_losses", "daily_loss"]


def test_r6_2_a_downgrade_moves_exactly_one_phase_down() -> None:
    book = Book.at("scaling")
    book.trades(["-10", "-10"])

    book.trade("-9000")  # fires streak and daily loss at once

    assert book.state.phase == "trial"


def test_r6_2_the_new_tenure_and_epoch_begin_at_the_triggering_trade() -> None:
    book = Book.at("trial")
    book.trades(["-10", "-10"])
    closed_at = et(MONDAY, 10, 2)

    book.trade("-10", at=closed_at)

    assert book.state.tenure_start == closed_at
    assert book.state.epoch_start == closed_at
    record = book.records_of("transition")[-1].payload
    assert record["effective_at"] == closed_at.isoformat()
    assert book.events_of("phase_changed")[-1].effective_at == closed_at


def test_r1_5_the_triggering_trade_stays_in_the_old_epoch() -> None:
    book = Book.at("trial")

    book.trades(["-10"] * 3)

    cur = book.state.current
    assert (cur.loss_streak, cur.triggers, cur.counted) == (0, 0, 0)
    assert cur.pnl == D("-30")  # the account's P&L keeps every trade


# --- streak details (R-2.5, R-2.6) ---------------------------------------------------------------


def test_r2_6_a_breakeven_does_not_extend_a_streak_toward_a_downgrade() -> None:
    book = Book.at("proof")

    book.trades(["-10", "-10", "0"])

    assert book.state.phase == "proof"


def test_r2_6_a_breakeven_does_not_reset_a_streak_either() -> None:
    book = Book.at("proof")

    book.trades(["-10", "-10", "0", "-10"])

    assert book.state.phase == "experience"


def test_r2_5_an_emergency_exit_win_does_not_reset_a_loss_streak() -> None:
    book = Book.at("proof")
    book.trades(["-10", "-10"])
    book.trade("50", kind="emergency_exit")

    book.trade("-10")

    assert book.state.phase == "experience"


def test_r2_5_a_regular_win_resets_a_loss_streak() -> None:
    book = Book.at("proof")
    book.trades(["-10", "-10", "50"])

    book.trade("-10")

    assert book.state.phase == "proof"


def test_r2_5_a_loss_of_any_kind_counts_toward_the_streak() -> None:
    book = Book.at("proof")
    book.trade("-10")
    book.trade("-10", kind="emergency_exit")

    book.trade("-10", kind="manual", mode="live")

    assert book.state.phase == "experience"


# --- rolling win rate (R-6.1) --------------------------------------------------------------------


def alternating(n: int) -> list[str]:
    """W, L, W, L, …: never two losses in a row."""
    return ["10" if i % 2 == 0 else "-10" for i in range(n)]


def test_r6_1_rolling_win_rate_below_0_55_fires_at_the_twentieth_trigger_trade() -> None:
    book = Book.at("proof")
    book.trades(alternating(19))
    assert book.state.phase == "proof"  # 10 of 19 wins, but fewer than 20 trades

    decision = book.trade("-10")  # 10 of 20 = 0.50

    assert book.state.phase == "experience"
    assert [r.split(":")[0] for r in decision.events[0].payload["reasons"]] == [
        "rolling_win_rate"]


def test_r6_1_rolling_win_rate_of_exactly_0_55_does_not_fire() -> None:
    book = Book.at("proof")
    book.trades([*alternating(17), "10", "10", "-10"])  # 11 of 20

    assert book.state.phase == "proof"


def test_r6_1_rolling_win_rate_needs_20_trigger_trades_in_the_current_epoch() -> None:
    book = Book.at("proof")
    book.trades(alternating(16))
    book.act(actions.act_reset_epoch, now=et(MONDAY, 11))
    book.resume(et(MONDAY, 11, 1))

    book.trades(alternating(10))

    assert book.state.current.triggers == 10
    assert book.state.phase == "proof"


def test_r2_5_trigger_trades_of_every_kind_fill_the_rolling_window() -> None:
    book = Book.at("proof")
    pnls = alternating(20)
    for i, pnl in enumerate(pnls):
        book.trade(pnl, kind="emergency_exit" if i % 4 == 0 else "regular")

    assert book.state.phase == "experience"


# --- daily loss (R-2.9) --------------------------------------------------------------------------


def test_r2_9_a_daily_loss_above_5_percent_downgrades_trial() -> None:
    book = Book.at("trial")  # equity 10000 at the open

    book.trades(["-300", "100", "-300.01"])  # net -500.01

    assert book.state.phase == "proof"


def test_r2_9_a_daily_loss_of_exactly_5_percent_does_not_fire() -> None:
    book = Book.at("trial")

    book.trades(["-300", "100", "-300"])

    assert book.state.phase == "trial"


def test_r2_9_daily_loss_does_not_apply_in_proof() -> None:
    book = Book.at("proof")

    book.trades(["-9000", "10"])

    assert book.state.phase == "proof"


def test_r2_9_daily_loss_cannot_fire_while_equity_is_unknown() -> None:
    book = Book.at("trial", equity=None)

    book.trade("-9000")

    assert book.state.phase == "trial"


def test_r2_9_daily_loss_cannot_fire_when_equity_at_the_open_is_zero() -> None:
    book = Book.at("trial", equity="0")

    book.trade("-9000")

    assert book.state.phase == "trial"


def test_r2_9_daily_loss_counts_only_the_trades_of_that_trading_day() -> None:
    book = Book.at("trial")
    book.session(["-400"])  # Monday, equity 9600 at close

    book.trade("-400")  # Tuesday: 400 / 9600 = 4.2 %

    assert book.state.phase == "trial"


def test_r2_9_daily_loss_is_measured_against_equity_at_the_later_epoch_start() -> None:
    book = Book.at("trial")
    book.trade("-400", mode="live")  # equity 9600
    book.act(actions.act_reset_epoch, now=et(MONDAY, 12))

    book.trade("-150", at=et(MONDAY, 13))  # 150 of 9600: 1.6 %, the earlier loss is not counted

    assert book.state.phase == "trial"
    book.trade("-340.01", at=et(MONDAY, 14))  # 490.01 of 9600 = 5.1 %
    assert book.state.phase == "proof"


# --- R-6.3: the tripped breaker ------------------------------------------------------------------


def tripped_trial() -> Book:
    book = Book.at("trial")
    book.trade("10", mode="live", decision=None)  # unauthorized: trips the breaker (R-4.10)
    assert (book.state.halted, book.state.phase) == (True, "trial")
    return book


def test_r6_3_while_tripped_no_downgrade_fires() -> None:
    book = tripped_trial()

    book.trades(["-10"] * 3 + ["-9000"])

    assert book.state.phase == "trial"
    assert "phase_changed" not in book.event_types()


def test_r6_3_while_tripped_metrics_keep_updating() -> None:
    book = tripped_trial()

    book.trades(["-10"] * 3)

    assert book.state.current.loss_streak == 3
    assert book.state.current.triggers == 4


def test_r6_3_after_acknowledge_rules_that_still_hold_fire_at_the_next_trigger_trade() -> None:
    book = tripped_trial()
    book.trades(["-10"] * 3)
    book.act(actions.act_acknowledge, now=et(MONDAY, 12))

    book.trade("0", at=et(MONDAY, 13))  # a breakeven: the streak of 3 still holds

    assert book.state.phase == "proof"


def test_r6_3_after_a_downgrade_new_epoch_losses_fire_after_acknowledge() -> None:
    book = Book.at("trial")
    book.trades(["-10"] * 3)  # → proof, tripped
    book.trades(["-10"] * 3)  # new epoch, tripped: no downgrade
    assert book.state.phase == "proof"
    book.act(actions.act_acknowledge, now=et(MONDAY, 12))

    book.trade("-10", at=et(MONDAY, 13))

    assert book.state.phase == "experience"


def test_r6_3_relatch_a_winning_trade_after_acknowledge_does_not_downgrade_again() -> None:
    book = Book.at("trial")
    book.trades(["-10"] * 3)  # → proof, tripped; the losses stay in the old epoch
    book.act(actions.act_acknowledge, now=et(MONDAY, 12))

    book.trade("10", at=et(MONDAY, 13))

    assert (book.state.phase, book.state.halted) == ("proof", False)
    assert book.events_of("phase_changed")[-1].payload["to_phase"] == "proof"


def test_r6_3_relatch_a_daily_loss_does_not_fire_again_after_acknowledge() -> None:
    book = Book.at("scaling")
    book.trade("-600")  # 6 % → trial, tripped
    assert book.state.phase == "trial"
    book.act(actions.act_acknowledge, now=et(MONDAY, 12))

    book.trade("10", at=et(MONDAY, 13))  # same day: the loss is in the old epoch

    assert (book.state.phase, book.state.halted) == ("trial", False)


def test_r6_3_relatch_old_losses_do_not_fill_the_new_rolling_window() -> None:
    book = Book.at("trial")
    book.trades([*alternating(19), "-10"])  # rolling 0.50 → proof
    assert book.state.phase == "proof"
    book.act(actions.act_acknowledge, now=et(MONDAY, 12))

    book.trade("10", at=et(MONDAY, 13))

    assert book.state.phase == "proof"
    assert book.state.current.trigger_outcomes(20) == (1, 1)


def test_r6_4_experience_is_never_downgraded() -> None:
    book = Book.at("experience")

    book.trades(["-10"] * 25)

    assert book.state.phase == "experience"
    assert book.state.halted is False
    assert "phase_changed" not in book.event_types()


# --- R-11.1: policy changes ----------------------------------------------------------------------


def test_r11_1_a_new_threshold_applies_at_once_to_the_next_trade() -> None:
    book = Book.at("proof")
    book.trades(["-10", "-10"])
    book.policy = with_policy(book.policy, downgrade={"max_consecutive_losses": 4})

    book.trade("-10")

    assert book.state.phase == "proof"
    book.trade("-10")
    assert book.state.phase == "experience"


def test_r11_1_a_new_gate_threshold_changes_the_verdict_at_once() -> None:
    book = Book.at("experience")
    for _ in range(20):
        book.session(["30", "30", "-10"])  # win rate 0.6667
    result = book.gate()
    assert result is not None
    assert result.eligible

    book.policy = with_policy(book.policy, gates={"proof": {"min_win_rate": "0.70"}})

    assert criterion(book.gate(), "win_rate").met is False


def test_r11_1_a_larger_window_applies_from_the_next_epoch() -> None:
    book = Book.at("proof")
    book.policy = with_policy(book.policy, downgrade={"rolling_window": 30})

    book.trades(alternating(20))  # the epoch's window is still 20 trades: 0.50 fires

    assert book.state.phase == "experience"


def test_r11_1_the_larger_window_is_in_force_once_a_new_epoch_starts() -> None:
    book = Book.at("proof")
    book.policy = with_policy(book.policy, downgrade={"rolling_window": 30})
    book.act(actions.act_reset_epoch, now=et(MONDAY, 9))
    assert book.state.window.triggers == 30

    book.trades(alternating(29))  # 15 of 29: fewer trades than the window
    assert book.state.phase == "proof"

    book.trade("-10")  # 15 of 30

    assert book.state.phase == "experience"
