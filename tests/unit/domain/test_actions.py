"""Operator actions' own rules and effects (SPEC R-7.1 … R-7.7, R-3.6, R-3.10, R-6.3)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest

from worker.domain import actions
from worker.domain.decide import new_account
from worker.domain.model import Phase, Registration
from worker.domain.policy import DEFAULT_POLICY, Policy

from .conftest import FRIDAY, MONDAY, Book, et, with_policy

D = Decimal


def lenient() -> Policy:
    return with_policy(DEFAULT_POLICY, gates={
        "proof": {"min_sessions": 1, "min_win_rate": "0", "min_rr": "0"}})


def tripped(phase: Phase = "trial") -> Book:
    """A downgraded account: one phase below `phase`, tripped and reduced."""
    book = Book.at(phase)
    book.trades(["-10"] * 3)
    assert (book.state.halted, book.state.size_reduced) == (True, True)
    return book


# --- R-7.1 advance -------------------------------------------------------------------------------


def test_r7_1_advance_moves_an_eligible_account_one_phase_up() -> None:
    book = Book.at("experience", lenient())
    book.session(["10"])

    result = book.act(actions.act_advance, operator_id="ops-user")

    assert result.outcome == "applied"
    assert book.state.phase == "proof"
    record = book.records_of("transition")[-1].payload
    assert (record["kind"], record["trigger"], record["operator_id"]) == (
        "advance", "manual", "ops-user")
    assert (record["validation_passed"], record["override_used"]) == (True, False)


def test_r7_1_advance_reevaluates_the_gate_and_refuses_with_the_failed_criteria() -> None:
    book = Book.at("experience")
    book.session(["10"])

    result = book.act(actions.act_advance)

    assert (result.outcome, result.reason) == ("refused", "gate_failed")
    assert result.detail is not None
    assert result.detail["failed"] == ["closed_sessions_with_trades"]
    assert book.state.phase == "experience"


def test_r7_1_a_refused_action_changes_nothing() -> None:
    book = Book.at("experience")
    before = book.state

    result = book.act(actions.act_advance)

    assert result.state is before
    assert (result.events, result.history) == ((), ())


# --- R-7.2 acknowledge ---------------------------------------------------------------------------


def test_r7_2_acknowledge_clears_the_breaker_and_publishes_it() -> None:
    book = tripped()

    result = book.act(actions.act_acknowledge, operator_id="op-7")

    assert result.outcome == "applied"
    assert book.state.halted is False
    [event] = result.events
    assert event.type == "circuit_breaker_cleared"
    assert (event.payload["by"], event.payload["operator_id"]) == ("acknowledge", "op-7")
    assert [r.type for r in result.history] == ["breaker_cleared"]


def test_r7_2_acknowledge_when_not_tripped_is_a_noop() -> None:
    book = Book.at("trial")

    result = book.act(actions.act_acknowledge)

    assert (result.outcome, result.events, result.history) == ("noop", (), ())
    assert result.state is book.state


def test_r7_2_acknowledge_keeps_the_phase_and_the_reduction() -> None:
    book = tripped()

    book.act(actions.act_acknowledge)

    assert (book.state.phase, book.state.size_reduced) == ("proof", True)


# --- R-7.3 force_advance -------------------------------------------------------------------------


def test_r7_3_force_advance_moves_one_phase_up_without_the_gate() -> None:
    book = Book.at("experience")

    result = book.act(actions.act_force_advance, target="proof", reason="known good bot")

    assert result.outcome == "applied"
    assert book.state.phase == "proof"


def test_r7_3_force_advance_records_the_bypassed_evaluation_as_an_override() -> None:
    book = Book.at("experience")

    book.act(actions.act_force_advance, target="proof", reason="known good bot")

    record = book.records_of("transition")[-1].payload
    assert (record["kind"], record["override_used"], record["validation_passed"]) == (
        "force_advance", True, False)
    assert record["validation"]["eligible"] is False
    assert "closed_sessions_with_trades" in record["validation"]["failed"]
    assert record["reasons"] == ["known good bot"]


# --- R-7.4 rollback ------------------------------------------------------------------------------


@pytest.mark.parametrize(("start", "target"), [("scaling", "proof"), ("scaling", "experience"),
                                              ("trial", "trial"), ("proof", "experience")])
def test_r7_4_rollback_goes_to_any_named_lower_phase(start: Phase, target: Phase) -> None:
    book = Book.at(start)

    result = book.act(actions.act_rollback, target=target)

    if target == start:
        assert result.reason == "non_sequential"
    else:
        assert result.outcome == "applied"
        assert book.state.phase == target
        record = book.records_of("transition")[-1].payload
        assert (record["kind"], record["trigger"], record["override_used"]) == (
            "rollback", "manual", True)


def test_r7_4_rollback_without_a_target_is_refused() -> None:
    book = Book.at("trial")

    assert book.act(actions.act_rollback, target=None).outcome == "refused"


def test_r6_3_rollback_leaves_the_breaker_tripped() -> None:
    book = tripped("scaling")

    book.act(actions.act_rollback, target="proof")

    assert (book.state.phase, book.state.halted) == ("proof", True)


def test_r7_4_rollback_starts_a_new_tenure_and_epoch_at_the_job_time() -> None:
    book = Book.at("trial")
    book.trades(["-10", "-10"])
    at = et(MONDAY, 12)

    book.act(actions.act_rollback, target="proof", now=at)

    assert (book.state.tenure_start, book.state.epoch_start) == (at, at)
    assert book.state.current.loss_streak == 0


# --- R-7.5 reset_epoch ---------------------------------------------------------------------------


def test_r7_5_reset_epoch_restarts_the_epoch_counters_and_windows() -> None:
    book = Book.at("proof")
    book.trades(["-10", "-10", "10", "-10"])
    book.end()

    result = book.act(actions.act_reset_epoch, now=et(MONDAY, 17))

    cur = book.state.current
    assert (cur.counted, cur.loss_streak, cur.triggers, cur.counted_window) == (0, 0, 0, ())
    assert book.state.closed_days == 0
    assert cur.pnl == D("-20")  # P&L carries on (R-1.5)
    assert book.state.epoch_start == et(MONDAY, 17)
    assert [e.type for e in result.events] == ["epoch_reset"]


def test_r7_5_reset_epoch_is_an_override_incident_of_the_tenure() -> None:
    book = Book.at("experience")

    book.act(actions.act_reset_epoch)
    book.act(actions.act_reset_epoch)

    assert book.state.override_incidents == 2


def test_r7_5_reset_epoch_keeps_the_phase_and_tenure() -> None:
    book = Book.at("trial")
    tenure = book.state.tenure_start

    book.act(actions.act_reset_epoch, now=et(MONDAY, 12))

    assert (book.state.phase, book.state.tenure_start) == ("trial", tenure)


def test_r6_3_reset_epoch_leaves_the_breaker_tripped() -> None:
    book = tripped()

    book.act(actions.act_reset_epoch)

    assert book.state.halted is True


# --- R-7.6 clear_reduction -----------------------------------------------------------------------


def test_r7_6_clear_reduction_removes_the_reduction_and_publishes_the_new_size() -> None:
    book = tripped()

    result = book.act(actions.act_clear_reduction)

    assert result.outcome == "applied"
    assert book.state.size_reduced is False
    assert [e.type for e in result.events] == ["position_size_changed"]
    assert "reduction_cleared" in [r.type for r in result.history]


def test_r7_6_clear_reduction_without_a_reduction_is_a_noop() -> None:
    book = Book.at("trial")

    result = book.act(actions.act_clear_reduction)

    assert (result.outcome, result.events, result.history) == ("noop", (), ())


def test_r6_3_clear_reduction_leaves_the_breaker_tripped() -> None:
    book = tripped()

    book.act(actions.act_clear_reduction)

    assert book.state.halted is True


@pytest.mark.parametrize("action", [actions.act_acknowledge, actions.act_clear_reduction,
                                    actions.act_reset_epoch])
def test_r7_an_applied_action_bumps_the_state_version(action: object) -> None:
    book = tripped()
    version = book.state.version

    book.act(action)  # type: ignore[arg-type]

    assert book.state.version == version + 1


# --- R-7.7 accounts_add (the state part) ---------------------------------------------------------


def test_r1_1_a_new_account_starts_in_experience_in_its_first_epoch() -> None:
    book = Book(DEFAULT_POLICY)

    assert book.state.phase == "experience"
    assert book.state.epoch_start == book.registration.created_at
    assert book.state.version == 1


def test_r7_7_a_registered_account_starts_in_experience_with_its_clock_and_currency() -> None:
    reg = Registration("bot-9", "redis", "EUR", et(FRIDAY, 12))

    state = new_account(reg, DEFAULT_POLICY)

    assert (state.phase, state.clock, state.currency) == ("experience", "redis", "EUR")
    assert (state.halted, state.size_reduced, state.position_size) == (False, False, D("0.00"))
    assert state.epoch_start == state.tenure_start == et(FRIDAY, 12)


def test_r7_7_a_message_clock_account_starts_its_first_epoch_at_starts_at_inclusively() -> None:
    starts = et(MONDAY, 7) - timedelta(days=365)
    reg = Registration("replay-1", "message", "BTC", et(FRIDAY, 12), starts_at=starts)

    state = new_account(reg, DEFAULT_POLICY)

    assert (state.clock, state.currency, state.epoch_start) == ("message", "BTC", starts)
    assert state.epoch_inclusive is True


# --- R-1.6: whose clock an action runs on --------------------------------------------------------


def test_r1_6_a_message_clock_accounts_action_takes_effect_at_message_time() -> None:
    book = Book.at("experience", clock="message", starts_at=et(MONDAY, 7))
    book.trade("10", at=et(MONDAY, 10))
    book.trade("10", at=et(MONDAY, 11))

    book.act(actions.act_reset_epoch, now=et(date(2026, 6, 1), 9))  # the worker's clock

    assert book.state.epoch_start == et(MONDAY, 11)


def test_r1_6_a_redis_clock_accounts_action_takes_effect_at_the_job_time() -> None:
    book = Book.at("experience")
    book.trade("10", at=et(MONDAY, 10))

    book.act(actions.act_reset_epoch, now=et(MONDAY, 15))

    assert book.state.epoch_start == et(MONDAY, 15)
