"""Position size (SPEC §5): phase sizes, the scaling steps and bonus, caps, the reduction."""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.domain import actions
from worker.domain.decide import EMPTY_LEDGER, decide
from worker.domain.entries import EntryClock, EntryView, decide_entry
from worker.domain.model import Phase
from worker.domain.policy import DEFAULT_POLICY
from worker.domain.rules import position_size

from .conftest import MONDAY, Book, et, session_msg, spread, with_policy

D = Decimal


def size(phase: Phase, *, wins: int = 0, bonus: bool = False, reduced: bool = False,
         equity: str | None = "100000") -> Decimal:
    return position_size(phase, wins, bonus, reduced, None if equity is None else D(equity),
                         DEFAULT_POLICY)[0]


# --- by rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phase", "wins", "bonus", "expected"),
    [
        ("experience", 0, False, "0.00"),
        ("proof", 0, False, "100.00"),
        ("trial", 0, False, "200.00"),
        ("scaling", 0, False, "200.00"),
        ("scaling", 4, False, "200.00"),
        ("scaling", 5, False, "300.00"),
        ("scaling", 9, False, "300.00"),
        ("scaling", 10, False, "400.00"),
        ("scaling", 0, True, "400.00"),
        ("scaling", 5, True, "500.00"),
        ("proof", 10, True, "100.00"),  # steps and bonus are scaling only
    ],
)
def test_r5_1_size_by_phase_consecutive_wins_and_session_bonus(
        phase: Phase, wins: int, bonus: bool, expected: str) -> None:
    assert size(phase, wins=wins, bonus=bonus) == D(expected)


@pytest.mark.parametrize(
    ("phase", "equity", "expected"),
    [
        ("trial", "3999", "199.00"),  # 5 % = 199.95, the cap rounded down to whole units
        ("trial", "4000", "200.00"),
        ("proof", "1999.99", "99.00"),
        ("proof", "150", "7.00"),
        ("scaling", "1000000", "2000.00"),  # never above the absolute cap
    ],
)
def test_r5_1_size_is_capped_at_5_percent_of_equity_in_whole_units_and_at_2000(
        phase: Phase, equity: str, expected: str) -> None:
    wins = 1000 if phase == "scaling" else 0
    assert size(phase, wins=wins, equity=equity) == D(expected)


@pytest.mark.parametrize("phase", ["proof", "trial", "scaling"])
def test_r5_1_with_unknown_equity_the_live_size_is_zero(phase: Phase) -> None:
    assert size(phase, equity=None) == D("0.00")


@pytest.mark.parametrize("equity", ["0", "-50"])
def test_r5_1_with_equity_at_or_below_zero_the_size_is_zero(equity: str) -> None:
    assert size("trial", equity=equity) == D("0.00")


def test_r5_1_size_is_rounded_down_to_cents() -> None:
    policy = with_policy(DEFAULT_POLICY, sizes={"proof": "100.03"})

    reduced = position_size("proof", 0, False, True, D(100000), policy)[0]

    assert reduced == D("50.01")  # 50.015 rounded down


@pytest.mark.parametrize(("phase", "expected"),
                         [("proof", "50.00"), ("trial", "100.00"), ("scaling", "100.00")])
def test_r5_2_the_reduction_is_half_of_the_phase_size(phase: Phase, expected: str) -> None:
    assert size(phase, reduced=True) == D(expected)


def test_r5_2_the_reduction_applies_before_the_equity_cap() -> None:
    assert size("trial", reduced=True, equity="1500") == D("75.00")
    assert size("trial", reduced=True, equity="3000") == D("100.00")


# --- by data -------------------------------------------------------------------------------


def test_r5_1_scaling_size_steps_up_after_5_consecutive_regular_wins() -> None:
    book = Book.at("scaling")
    book.trades(["10"] * 4)
    assert book.state.position_size == D("200.00")

    book.trade("10")

    assert book.state.position_size == D("300.00")
    book.trades(["10"] * 5)
    assert book.state.position_size == D("400.00")


def test_r5_1_a_loss_of_any_kind_restarts_the_scaling_steps() -> None:
    book = Book.at("scaling")
    book.trades(["10"] * 5)

    book.trade("-1", kind="emergency_exit")

    assert book.state.position_size == D("200.00")


def test_r5_1_non_regular_wins_do_not_count_toward_a_scaling_step() -> None:
    book = Book.at("scaling")
    book.trades(["10"] * 4)

    book.trade("10", kind="manual", mode="live")

    assert book.state.position_size == D("200.00")


def bonus_book(outcomes: list[bool]) -> Book:
    book = Book.at("scaling", equity="20000")
    for won in outcomes:
        book.session(["10" if won else "-1"])
    return book


def test_r5_1_ten_sessions_at_a_win_rate_of_0_70_add_the_bonus() -> None:
    book = bonus_book(spread(10, 3))  # W W W L W W L W W L: no step, 7 of 10

    assert book.state.session_bonus is True
    assert book.state.position_size == D("400.00")


def test_r5_1_nine_good_sessions_are_not_enough_for_the_bonus() -> None:
    book = bonus_book(spread(9, 2))

    assert book.state.session_bonus is False
    assert book.state.position_size == D("200.00")


def test_r5_1_a_session_win_rate_below_0_70_gives_no_bonus() -> None:
    book = bonus_book(spread(10, 4))

    assert book.state.position_size == D("200.00")


def test_r5_1_an_equity_of_3999_caps_the_trial_size_at_199() -> None:
    book = Book.at("trial", equity="3999")

    assert book.state.position_size == D("199.00")


def test_r5_1_unknown_equity_makes_the_live_size_zero() -> None:
    book = Book.at("trial", equity=None)

    assert book.state.position_size == D("0.00")


def test_r5_1_equity_older_than_the_day_before_makes_the_size_zero_at_the_next_trade() -> None:
    book = Book.at("trial")  # FRIDAY's report is known on MONDAY only
    book.session(["1"], session_equity=None)

    book.trade("1")  # Tuesday: the last report is two trading days old

    assert book.state.position_size == D("0.00")
    assert book.events_of("position_size_changed")[-1].payload["to_size"] == "0.00"


def test_r4_5_a_small_account_sizes_below_the_minimum_and_live_entries_are_denied() -> None:
    book = Book.at("proof", equity="150")
    assert book.state.position_size == D("7.00")

    view = EntryView(registered=True, phase="proof", position_size=book.state.position_size,
                     equity=D(150), equity_day=MONDAY)
    clock = EntryClock(et(MONDAY, 9), MONDAY, MONDAY, et(MONDAY, 7))
    outcome = decide_entry(view, mode="live", kind="regular", clock=clock,
                           min_size=DEFAULT_POLICY.sizes.min_position_size)

    assert (outcome.allowed, outcome.reason) == (False, "size_below_minimum")


# --- the reduction's lifetime -------------------------------------------------------------


def downgraded() -> Book:
    book = Book.at("trial")
    book.trades(["-10"] * 3)
    assert (book.state.phase, book.state.position_size) == ("proof", D("50.00"))
    return book


def test_r5_2_the_reduction_survives_rollback() -> None:
    book = downgraded()

    book.act(actions.act_rollback, target="experience")

    assert book.state.size_reduced is True


def test_r5_2_a_rolled_back_account_keeps_the_reduction_until_its_next_advance() -> None:
    book = downgraded()
    book.act(actions.act_rollback, target="experience")
    book.act(actions.act_acknowledge)

    book.act(actions.act_force_advance, target="proof")

    assert (book.state.size_reduced, book.state.position_size) == (False, D("100.00"))


def test_r5_2_the_reduction_survives_reset_epoch() -> None:
    book = downgraded()

    book.act(actions.act_reset_epoch)

    assert book.state.size_reduced is True
    assert book.state.position_size == D("50.00")


def test_r5_2_clear_reduction_removes_it() -> None:
    book = downgraded()

    result = book.act(actions.act_clear_reduction)

    assert result.outcome == "applied"
    assert (book.state.size_reduced, book.state.position_size) == (False, D("100.00"))


def test_r5_2_an_advance_removes_it() -> None:
    book = downgraded()
    book.act(actions.act_acknowledge)

    book.act(actions.act_force_advance, target="trial")

    assert (book.state.size_reduced, book.state.position_size) == (False, D("200.00"))


# --- position_size_changed ----------------------------------------------------------------


def test_r5_3_a_size_step_publishes_position_size_changed_with_its_justification() -> None:
    book = Book.at("scaling")
    book.trades(["10"] * 4)

    decision = book.trade("10")

    [event] = [e for e in decision.events if e.type == "position_size_changed"]
    assert event.payload["from_size"] == "200.00"
    assert event.payload["to_size"] == "300.00"
    assert event.payload["justification"] == "300.00: 5 consecutive wins"


def test_r5_3_a_capped_size_names_the_cap_and_the_equity() -> None:
    book = Book.at("proof", equity="3999")

    book.force_to("trial")

    event = book.events_of("position_size_changed")[-1]
    assert event.payload["justification"] == "199.00: capped at 5% of equity 3999"


def test_r5_3_an_unchanged_size_publishes_nothing() -> None:
    book = Book.at("trial")

    decision = book.trade("10")

    assert "position_size_changed" not in [e.type for e in decision.events]


def test_r5_3_every_size_change_is_also_recorded_in_history() -> None:
    book = Book.at("scaling")

    book.trades(["10"] * 5)

    assert book.records_of("size_changed")[-1].payload["to_size"] == "300.00"


def test_r5_1_a_session_ended_equity_refreshes_the_size() -> None:
    book = Book.at("trial", equity="3000")
    assert book.state.position_size == D("150.00")

    decision = decide(book.state, EMPTY_LEDGER, session_msg(MONDAY, equity="5000"),
                      book.policy, et(MONDAY, 17))

    assert decision.state.position_size == D("200.00")
