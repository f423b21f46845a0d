"""Advancement gates (SPEC §3): each criterion at its boundary, by rule and by data."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from worker.domain import actions
from worker.domain.metrics import EpochContext, Outcomes, Tally, Window, fold
from worker.domain.model import PHASES, Kind, Phase, Trade
from worker.domain.policy import DEFAULT_POLICY, Policy
from worker.domain.rules import (
    NEXT_PHASE,
    NO_DATA,
    GateInputs,
    at_least,
    at_most,
    drawdown_below,
    evaluate_gate,
    non_regular_share,
    rr_at_least,
    win_rate_at_least,
)

from .conftest import MONDAY, Book, criterion, et, spread, with_policy

D = Decimal


def outs(wins: int, losses: int, breakevens: int = 0, win: str = "1", loss: str = "1") -> Outcomes:
    return Outcomes(wins + losses + breakevens, wins, losses, D(win) * wins, D(loss) * losses)


def tally_of(pnls: list[Decimal], kinds: list[Kind] | None = None) -> Tally:
    ctx = EpochContext(et(MONDAY, 7), False, D(10000), Window())
    trades = [Trade(f"T{i:03d}", et(MONDAY, 10) + timedelta(minutes=i), None, p,
                    kinds[i] if kinds else "regular", False, None, MONDAY, "x")
              for i, p in enumerate(pnls)]
    return fold(Tally(), trades, ctx).finish_day(ctx.window)


# --- rule level: each criterion function at its boundary -----------------------------------------


@pytest.mark.parametrize(
    ("wins", "n", "threshold", "met"),
    [
        (5999, 10000, "0.60", False),  # R-3.1: 0.5999
        (6000, 10000, "0.60", True),
        (6499, 10000, "0.65", False),  # R-3.2
        (6500, 10000, "0.65", True),
        (6999, 10000, "0.70", False),  # R-3.3
        (7000, 10000, "0.70", True),
    ],
)
def test_r3_1_to_r3_3_win_rate_criterion_is_met_at_the_threshold_and_not_just_below(
        wins: int, n: int, threshold: str, met: bool) -> None:
    c = win_rate_at_least("win_rate", outs(wins, n - wins), D(threshold))

    assert c.met is met
    assert c.required == f">= {threshold}"


def test_r3_2_win_rate_0_6499_fails_and_0_65_passes() -> None:
    assert not win_rate_at_least("win_rate", outs(6499, 3501), D("0.65")).met
    assert win_rate_at_least("win_rate", outs(65, 35), D("0.65")).met


@pytest.mark.parametrize(
    ("outcomes", "threshold", "met", "actual"),
    [
        (outs(2, 2, win="1.5", loss="1"), "1.5", True, "1.5000"),
        (outs(2, 2, win="1.4999", loss="1"), "1.5", False, "1.4999"),
        (outs(2, 2, win="1.8", loss="1"), "1.8", True, "1.8000"),
        (outs(2, 2, win="1.7999", loss="1"), "1.8", False, "1.7999"),
        (outs(2, 2, win="2", loss="1"), "2.0", True, "2.0000"),
        (outs(2, 2, win="1.9999", loss="1"), "2.0", False, "1.9999"),
        (outs(0, 3), "1.5", False, "0.0000"),  # no wins: R:R 0
    ],
)
def test_r2_4_rr_criterion_is_met_at_the_threshold_and_not_just_below(
        outcomes: Outcomes, threshold: str, met: bool, actual: str) -> None:
    c = rr_at_least("rr", outcomes, D(threshold))

    assert (c.met, c.actual, c.unbounded) == (met, actual, False)


def test_r2_4_unbounded_rr_meets_the_criterion_and_is_emitted_as_null_with_rr_unbounded() -> None:
    c = rr_at_least("rr", outs(3, 0), D("1000"))

    assert c.met is True
    assert c.as_json()["actual"] is None
    assert c.as_json()["rr_unbounded"] is True


@pytest.mark.parametrize("rule", [win_rate_at_least, rr_at_least])
def test_r2_11_no_counted_trades_fails_win_rate_and_rr_with_no_data(rule: object) -> None:
    c = rule("x", Outcomes(), D("0"))  # type: ignore[operator]

    assert (c.met, c.actual, c.reason) == (False, None, NO_DATA)


@pytest.mark.parametrize(
    ("actual", "required", "met"), [(19, 20, False), (20, 20, True), (21, 20, True)],
)
def test_r3_1_at_least_criterion_boundary(actual: int, required: int, met: bool) -> None:
    assert at_least("closed_sessions_with_trades", actual, required).met is met


@pytest.mark.parametrize(
    ("actual", "limit", "met", "reason"),
    [(3, 3, True, ""), (4, 3, False, ""), (0, 0, True, ""), (1, 0, False, ""),
     (None, 3, False, NO_DATA)],
)
def test_r3_2_at_most_criterion_boundary_and_no_data(actual: int | None, limit: int, met: bool,
                                                       reason: str) -> None:
    c = at_most("no_entry_run", actual, limit)

    assert (c.met, c.reason) == (met, reason)


@pytest.mark.parametrize(
    ("loss", "met", "actual"),
    [("-500", False, "0.0500"), ("-499.99", True, "0.0500"), ("-600", False, "0.0600"),
     ("-1", True, "0.0001")],
)
def test_r3_3_max_drawdown_is_strictly_below_0_05(loss: str, met: bool, actual: str) -> None:
    c = drawdown_below("max_drawdown", tally_of([D(loss)]), D("0.05"), D(10000))

    assert (c.met, c.actual, c.required) == (met, actual, "< 0.05")


def test_r2_11_max_drawdown_without_start_equity_is_no_data() -> None:
    c = drawdown_below("max_drawdown", tally_of([D(1)]), D("0.05"), None)

    assert (c.met, c.reason) == (False, NO_DATA)


@pytest.mark.parametrize(
    ("regular", "other", "met"),
    [(9, 1, True), (90, 10, True), (89, 11, False), (8, 1, False), (10, 0, True),
     (0, 1, False)],
)
def test_r3_4_non_regular_share_passes_at_10_percent_and_fails_just_above(
        regular: int, other: int, met: bool) -> None:
    regulars: list[Kind] = ["regular"] * regular
    others: list[Kind] = ["manual"] * other
    kinds = regulars + others
    c = non_regular_share(tally_of([D(1)] * len(kinds), kinds), D("0.10"))

    assert c.met is met


def test_r3_4_non_regular_share_without_trades_is_no_data() -> None:
    c = non_regular_share(Tally(), D("0.10"))

    assert (c.met, c.actual, c.reason) == (False, None, NO_DATA)


# --- R-3.7: the shape of a gate evaluation -------------------------------------------------------


EMPTY = GateInputs(Tally(), 0, 0, None, None)


@pytest.mark.parametrize(
    ("phase", "names"),
    [
        ("experience", ["closed_sessions_with_trades", "win_rate", "rr", "override_incidents",
                        "non_regular_share"]),
        ("proof", ["closed_trading_days", "counted_trades", "win_rate", "rr", "no_entry_run",
                   "non_regular_share"]),
        ("trial", ["closed_trading_days", "counted_trades", "win_rate", "rr", "max_drawdown",
                   "non_regular_share"]),
    ],
)
def test_r3_7_a_gate_returns_every_criterion_in_table_order_non_regular_share_last(
        phase: Phase, names: list[str]) -> None:
    result = evaluate_gate(phase, EMPTY, DEFAULT_POLICY)

    assert result is not None
    assert [c.name for c in result.criteria] == names
    assert result.to_phase == NEXT_PHASE[phase]


def test_r3_7_failed_names_are_listed_in_table_order() -> None:
    inputs = GateInputs(tally_of([D(1)] * 2 + [D(-1)] * 3), 0, 1, None, None)

    result = evaluate_gate("experience", inputs, DEFAULT_POLICY)

    assert result is not None
    assert result.failed == ("closed_sessions_with_trades", "win_rate", "rr",
                             "override_incidents")
    assert result.as_json()["failed"] == list(result.failed)
    assert result.eligible is False


def test_r3_7_every_criterion_carries_required_actual_and_met() -> None:
    result = evaluate_gate("proof", EMPTY, DEFAULT_POLICY)

    assert result is not None
    for c in result.as_json()["criteria"]:
        assert {"name", "required", "actual", "met"} <= set(c)


def test_r3_6_there_is_no_gate_above_scaling() -> None:
    assert evaluate_gate("scaling", EMPTY, DEFAULT_POLICY) is None


def test_r2_11_a_gate_over_no_trades_fails_every_data_criterion_with_no_data() -> None:
    result = evaluate_gate("experience", EMPTY, DEFAULT_POLICY)

    assert result is not None
    no_data = {c.name for c in result.criteria if c.reason == NO_DATA}
    assert no_data == {"win_rate", "rr", "non_regular_share"}
    assert not result.eligible


# --- data level: the nearest achievable k/N around each threshold --------------------------------


def experience_sessions(wins: list[bool], win: str = "30", loss: str = "-10") -> Book:
    """One closed session per outcome, one regular trade each."""
    book = Book.at("experience")
    for won in wins:
        book.session([win if won else loss])
    return book


@pytest.mark.parametrize(("losses", "met"), [(8, True), (9, False)])
def test_r3_1_win_rate_12_of_20_passes_and_11_of_20_fails(losses: int, met: bool) -> None:
    book = experience_sessions(spread(20, losses))

    c = criterion(book.gate(), "win_rate")
    assert c.met is met
    assert c.actual == ("0.6000" if met else "0.5500")


@pytest.mark.parametrize(("win", "met"), [("15", True), ("14.99", False)])
def test_r3_1_rr_exactly_1_5_passes_and_just_below_fails(win: str, met: bool) -> None:
    book = experience_sessions(spread(20, 8), win=win, loss="-10")

    assert criterion(book.gate(), "rr").met is met


def test_r3_1_wins_without_losses_meet_rr_unbounded() -> None:
    book = experience_sessions([True] * 20)

    c = criterion(book.gate(), "rr")
    assert c.met is True
    assert c.as_json() == {"name": "rr", "required": ">= 1.5", "actual": None, "met": True,
                           "reason": "wins and no losses", "rr_unbounded": True}


def test_r3_1_twenty_good_sessions_make_the_account_eligible() -> None:
    book = experience_sessions(spread(20, 8))

    result = book.gate()
    assert result is not None
    assert result.eligible, result.failed


def test_r3_1_nineteen_sessions_with_trades_fail_closed_sessions_with_trades() -> None:
    book = experience_sessions(spread(19, 7))

    result = book.gate()
    assert result is not None
    assert result.failed == ("closed_sessions_with_trades",)


def test_r3_1_sessions_without_a_counted_trade_do_not_count() -> None:
    book = experience_sessions(spread(19, 7))
    book.session(["30"], kind="manual")
    book.session([])

    c = criterion(book.gate(), "closed_sessions_with_trades")
    assert (c.met, c.actual) == (False, "19")


def test_r3_1_win_rate_and_rr_use_only_the_last_20_such_sessions() -> None:
    book = experience_sessions([False] * 5 + spread(20, 8))

    c = criterion(book.gate(), "win_rate")
    assert (c.met, c.actual) == (True, "0.6000")


def test_r3_1_a_successful_override_incident_in_the_tenure_fails_the_gate() -> None:
    book = experience_sessions(spread(20, 8))
    book.act(actions.act_reset_epoch)
    for won in spread(20, 8):
        book.session(["30" if won else "-10"])

    result = book.gate()
    assert result is not None
    assert result.failed == ("override_incidents",)


def proof_days(wins: list[bool], days: int = 30, *, entries: bool = True) -> Book:
    """`days` closed proof sessions holding the outcomes in order, a live entry each day."""
    book = Book.at("proof")
    per_day = [len(wins) // days + (1 if i < len(wins) % days else 0) for i in range(days)]
    it = iter(wins)
    for n in per_day:
        if entries:
            book.entered(book.day)
        book.session(["30" if next(it) else "-10" for _ in range(n)])
    return book


@pytest.mark.parametrize(("losses", "met", "actual"), [(18, False, "0.6400"),
                                                       (17, True, "0.6600")])
def test_r3_2_win_rate_32_of_50_fails_and_33_of_50_passes(losses: int, met: bool,
                                                           actual: str) -> None:
    book = proof_days(spread(50, losses))

    assert book.state.phase == "proof"
    c = criterion(book.gate(), "win_rate")
    assert (c.met, c.actual) == (met, actual)


def test_r3_2_thirty_days_fifty_trades_and_daily_entries_make_proof_eligible() -> None:
    book = proof_days(spread(50, 17))

    result = book.gate()
    assert result is not None
    assert result.eligible, result.failed


def test_r3_2_twenty_nine_days_and_forty_nine_trades_fail_their_criteria() -> None:
    book = proof_days(spread(49, 16), days=29)

    result = book.gate()
    assert result is not None
    assert result.failed == ("closed_trading_days", "counted_trades")


def test_r3_2_without_any_allowed_proof_entry_the_no_entry_run_is_no_data() -> None:
    book = proof_days(spread(50, 17), entries=False)

    c = criterion(book.gate(), "no_entry_run")
    assert (c.met, c.reason) == (False, NO_DATA)


def trial_days(wins: list[bool], days: int = 60, loss: str = "-10") -> Book:
    book = Book.at("trial")
    per_day = [len(wins) // days + (1 if i < len(wins) % days else 0) for i in range(days)]
    it = iter(wins)
    for n in per_day:
        book.session(["30" if next(it) else loss for _ in range(n)])
    return book


@pytest.mark.parametrize(("losses", "met", "actual"), [(31, False, "0.6900"),
                                                       (30, True, "0.7000")])
def test_r3_3_win_rate_69_of_100_fails_and_70_of_100_passes(losses: int, met: bool,
                                                            actual: str) -> None:
    book = trial_days(spread(100, losses))

    assert book.state.phase == "trial"
    c = criterion(book.gate(), "win_rate")
    assert (c.met, c.actual) == (met, actual)


def test_r3_3_sixty_days_a_hundred_trades_and_a_small_drawdown_make_trial_eligible() -> None:
    book = trial_days(spread(100, 30))

    result = book.gate()
    assert result is not None
    assert result.eligible, result.failed


@pytest.mark.parametrize(("loss", "met"), [("-500", False), ("-499.99", True)])
def test_r3_3_a_drawdown_of_exactly_0_05_fails_and_just_below_passes(loss: str, met: bool) -> None:
    book = Book.at("trial")  # epoch start equity 10000
    book.session([loss])

    c = criterion(book.gate(), "max_drawdown")
    assert c.met is met


def test_r3_4_non_regular_share_counts_only_trades_of_closed_sessions() -> None:
    book = Book.at("experience")
    book.session(["5"] * 8)
    book.trade("5", kind="emergency_exit")  # 1 of 9 but in the open session: not yet counted

    assert criterion(book.gate(), "non_regular_share").met is True
    book.end()
    assert criterion(book.gate(), "non_regular_share").met is False


# --- R-3.5: what the gates measure ---------------------------------------------------------------


def test_r3_5_gates_use_closed_sessions_only() -> None:
    book = Book.at("proof")
    book.trade("30")

    c = criterion(book.gate(), "counted_trades")
    assert c.actual == "0"
    book.end()
    assert criterion(book.gate(), "counted_trades").actual == "1"


def test_r3_5_closed_trading_days_count_sessions_opened_at_or_after_the_epoch_start() -> None:
    book = Book.at("proof")  # forced at FRIDAY 16:01: FRIDAY's session opened before
    assert book.state.closed_days == 0

    book.session([])
    book.session([])

    assert criterion(book.gate(), "closed_trading_days").actual == "2"


def test_r3_5_a_session_opened_before_a_mid_day_epoch_start_does_not_count() -> None:
    book = Book.at("proof")
    book.trade("5")
    book.act(actions.act_reset_epoch, now=et(MONDAY, 12))
    book.end()

    assert book.state.closed_days == 0


def test_r3_5_override_incidents_count_in_the_tenure_in_which_they_were_taken() -> None:
    book = Book.at("experience")
    book.act(actions.act_reset_epoch)
    assert book.state.override_incidents == 1

    book.force_to("proof")  # itself an incident of the experience tenure, which ends here

    assert book.state.override_incidents == 0


# --- R-3.6: sequential transitions ---------------------------------------------------------------


def test_r3_6_advancing_from_scaling_is_refused_non_sequential() -> None:
    book = Book.at("scaling")

    assert book.act(actions.act_advance).reason == "non_sequential"
    assert book.act(actions.act_force_advance, target=None).reason == "non_sequential"


@pytest.mark.parametrize("target", ["experience", "proof", "scaling"])
def test_r3_6_force_advance_to_any_phase_but_the_next_is_refused_non_sequential(
        target: Phase) -> None:
    book = Book.at("proof")

    result = book.act(actions.act_force_advance, target=target)

    assert (result.outcome, result.reason) == ("refused", "non_sequential")
    assert book.state.phase == "proof"


@pytest.mark.parametrize("target", ["experience", "trial", "scaling"])
def test_r3_6_advance_naming_a_phase_other_than_the_next_is_refused_non_sequential(
        target: Phase) -> None:
    book = Book.at("experience")

    assert book.act(actions.act_advance, target=target).reason == "non_sequential"


@pytest.mark.parametrize("target", ["trial", "scaling"])
def test_r3_6_rollback_to_the_same_or_a_higher_phase_is_refused_non_sequential(
        target: Phase) -> None:
    book = Book.at("trial")

    assert book.act(actions.act_rollback, target=target).reason == "non_sequential"


def test_r3_6_force_advance_to_the_next_phase_moves_exactly_one_phase() -> None:
    book = Book.at("proof")

    result = book.act(actions.act_force_advance, target="trial")

    assert result.outcome == "applied"
    assert book.state.phase == "trial"


# --- R-3.10: the breaker blocks advancing; advancing clears the reduction ------------------------


def lenient(policy: Policy = DEFAULT_POLICY) -> Policy:
    """Gates that one good session passes, so a test can reach eligibility quickly."""
    return with_policy(policy, gates={
        "proof": {"min_sessions": 1, "min_win_rate": "0", "min_rr": "0"},
        "trial": {"min_days": 1, "min_trades": 1, "min_win_rate": "0", "min_rr": "0"},
        "scaling": {"min_days": 1, "min_trades": 1, "min_win_rate": "0", "min_rr": "0"},
    })


def downgraded_to_proof(policy: Policy) -> Book:
    book = Book.at("trial", policy)
    book.trades(["-10"] * 3)
    assert (book.state.phase, book.state.halted, book.state.size_reduced) == ("proof", True, True)
    return book


def test_r3_10_advance_and_force_advance_are_refused_breaker_tripped() -> None:
    book = downgraded_to_proof(lenient())
    book.end()
    book.entered(book.day)
    book.session(["30"])
    result = book.gate()
    assert result is not None
    assert result.eligible, result.failed

    assert book.act(actions.act_advance).reason == "breaker_tripped"
    assert book.act(actions.act_force_advance, target=None).reason == "breaker_tripped"
    assert book.state.phase == "proof"


def test_r3_10_auto_advance_is_refused_while_the_breaker_is_tripped() -> None:
    book = Book.at("experience", lenient(with_policy(DEFAULT_POLICY, auto_advance=True)))
    book.trade("30", mode="live", decision=None)  # unauthorized: trips the breaker (R-4.10)
    assert book.state.halted

    book.end()
    book.session(["30"])

    assert book.state.phase == "experience"
    assert "phase_changed" not in book.event_types()


def test_r3_10_an_advance_clears_the_size_reduction_and_starts_a_new_tenure() -> None:
    book = downgraded_to_proof(lenient())
    book.act(actions.act_acknowledge)
    book.end()
    book.entered(book.day)
    book.session(["30"])

    result = book.act(actions.act_advance, now=et(book.day, 6))

    assert result.outcome == "applied", result
    assert (book.state.phase, book.state.size_reduced) == ("trial", False)
    assert book.state.position_size == D("200.00")
    assert book.state.tenure_start == et(book.day, 6)


def test_r3_10_a_force_advance_also_clears_the_size_reduction() -> None:
    book = downgraded_to_proof(DEFAULT_POLICY)
    book.act(actions.act_acknowledge)

    book.act(actions.act_force_advance, target="trial")

    assert book.state.size_reduced is False


# --- R-1.2: the ladder ---------------------------------------------------------------------------


def test_r1_2_phases_are_experience_proof_trial_scaling_in_that_order() -> None:
    assert PHASES == ("experience", "proof", "trial", "scaling")
    assert NEXT_PHASE == {"experience": "proof", "proof": "trial", "trial": "scaling"}


@pytest.mark.parametrize(("start", "down"), [("proof", "experience"), ("trial", "proof"),
                                             ("scaling", "trial")])
def test_r1_2_a_downgrade_goes_to_the_phase_below(start: Phase, down: Phase) -> None:
    book = Book.at(start)

    book.trades(["-10"] * 3)

    assert book.state.phase == down
