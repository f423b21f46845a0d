"""The transition record of R-8.2, as the pure engine writes it into the history (R-8.1).

Every way into a new phase (downgrade, auto-advance at session close, and the operator's advance,
force_advance and rollback) writes one `transition` record carrying every field of R-8.2; the
apply step only adds `caused_by`. `occurred_at` is the worker clock handed to the core, while
`effective_at` is the instant the new tenure starts (R-1.5).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime

import pytest

from worker.domain import actions
from worker.domain.policy import DEFAULT_POLICY, Policy

from .conftest import MONDAY, Book, et, with_policy

R8_2_FIELDS = frozenset({
    "transition_id", "occurred_at", "effective_at", "trading_day", "from_phase", "to_phase",
    "kind", "trigger", "validation_passed", "reasons", "operator_id", "override_used", "metrics",
    "policy_version"})
TRADE_AT = et(MONDAY, 10, 2)  # the triggering trade closes here ...
WORKER_NOW = et(MONDAY, 10, 30)  # ... and the worker applies it later
JOB_AT = et(MONDAY, 12)  # when an operator's job runs


def lenient(**extra: object) -> Policy:
    """One session with a winning trade makes an experience account eligible."""
    return with_policy(DEFAULT_POLICY, gates={
        "proof": {"min_sessions": 1, "min_win_rate": "0.5", "min_rr": "0"}}, **extra)


def transition_of(book: Book) -> dict[str, object]:
    [record] = book.records_of("transition")
    return record.payload


# -- one scenario per way into a new phase ---------------------------------------------------------


def downgraded() -> Book:
    book = Book.at("proof")
    book.trades(["-10", "-10"])
    book.trade("-10", at=TRADE_AT, now=WORKER_NOW)
    return book


def auto_advanced() -> Book:
    book = Book.at("experience", lenient(auto_advance=True))
    book.session(["10"])  # session_ended at 16:00, applied at 16:01
    return book


def advanced() -> Book:
    book = Book.at("experience", lenient())
    book.session(["10"])
    assert book.act(actions.act_advance, now=JOB_AT, operator_id="op-9").outcome == "applied"
    return book


def force_advanced() -> Book:
    book = Book.at("experience")
    result = book.act(actions.act_force_advance, now=JOB_AT, operator_id="op-9", target="proof",
                      reason="known good bot")
    assert result.outcome == "applied"
    return book


def rolled_back() -> Book:
    book = Book.at("trial")
    result = book.act(actions.act_rollback, now=JOB_AT, operator_id="op-9", target="proof",
                      reason="too risky")
    assert result.outcome == "applied"
    return book


SCENARIOS: dict[str, Callable[[], Book]] = {
    "downgrade": downgraded,
    "auto-advance": auto_advanced,
    "advance": advanced,
    "force-advance": force_advanced,
    "rollback": rolled_back,
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_r8_2_every_transition_record_carries_every_field_of_the_spec(scenario: str) -> None:
    book = SCENARIOS[scenario]()

    record = transition_of(book)

    assert set(record) >= R8_2_FIELDS
    assert isinstance(record["transition_id"], str)
    assert record["transition_id"]
    assert isinstance(record["reasons"], list)
    assert isinstance(record["metrics"], dict)
    assert record["metrics"]
    assert record["policy_version"] == book.policy.version


@pytest.mark.parametrize(
    ("scenario", "kind", "trigger", "operator_id", "override_used", "validation_passed"),
    [
        # no gate is evaluated for a downgrade or a rollback: validation_passed is null
        ("downgrade", "downgrade", "auto", None, False, None),
        ("auto-advance", "advance", "auto", None, False, True),
        ("advance", "advance", "manual", "op-9", False, True),
        ("force-advance", "force_advance", "manual", "op-9", True, False),
        ("rollback", "rollback", "manual", "op-9", True, None),
    ],
)
def test_r8_2_kind_trigger_operator_override_and_validation_follow_the_cause(
        scenario: str, kind: str, trigger: str, operator_id: str | None, override_used: bool,
        validation_passed: bool | None) -> None:
    record = transition_of(SCENARIOS[scenario]())

    assert (record["kind"], record["trigger"], record["operator_id"], record["override_used"],
            record["validation_passed"]) == (kind, trigger, operator_id, override_used,
                                             validation_passed)


@pytest.mark.parametrize(("scenario", "from_phase", "to_phase"), [
    ("downgrade", "proof", "experience"),
    ("auto-advance", "experience", "proof"),
    ("advance", "experience", "proof"),
    ("force-advance", "experience", "proof"),
    ("rollback", "trial", "proof"),
])
def test_r8_2_the_record_names_the_phase_left_and_the_phase_entered(
        scenario: str, from_phase: str, to_phase: str) -> None:
    book = SCENARIOS[scenario]()

    record = transition_of(book)

    assert (record["from_phase"], record["to_phase"]) == (from_phase, to_phase)
    assert book.state.phase == to_phase


def test_r8_2_a_downgrade_occurs_at_the_worker_clock_and_takes_effect_at_the_trade() -> None:
    book = downgraded()

    record = transition_of(book)

    assert datetime.fromisoformat(str(record["occurred_at"])) == WORKER_NOW
    assert datetime.fromisoformat(str(record["effective_at"])) == TRADE_AT
    assert book.state.tenure_start == TRADE_AT
    assert date.fromisoformat(str(record["trading_day"])) == MONDAY


def test_r8_2_an_auto_advance_takes_effect_at_the_session_end_it_was_decided_at() -> None:
    book = auto_advanced()

    record = transition_of(book)

    assert datetime.fromisoformat(str(record["effective_at"])) == et(MONDAY, 16)
    assert datetime.fromisoformat(str(record["occurred_at"])) == et(MONDAY, 16, 1)
    assert book.state.tenure_start == et(MONDAY, 16)
    assert date.fromisoformat(str(record["trading_day"])) == MONDAY


@pytest.mark.parametrize("scenario", ["advance", "force-advance", "rollback"])
def test_r8_2_an_operators_transition_takes_effect_when_its_job_runs(scenario: str) -> None:
    book = SCENARIOS[scenario]()

    record = transition_of(book)

    assert datetime.fromisoformat(str(record["occurred_at"])) == JOB_AT
    assert datetime.fromisoformat(str(record["effective_at"])) == JOB_AT
    assert book.state.tenure_start == JOB_AT


def test_r8_2_a_downgrade_lists_every_rule_that_fired_as_its_reasons() -> None:
    book = Book.at("trial")
    book.trades(["-10", "-10"])
    book.trade("-600")  # the third loss, and a daily loss of 6.2 %

    reasons = transition_of(book)["reasons"]

    assert isinstance(reasons, list)
    assert [str(r).split(":")[0] for r in reasons] == ["consecutive_losses", "daily_loss"]


def test_r8_2_the_metrics_snapshot_is_the_one_that_triggered_not_the_new_epochs() -> None:
    book = downgraded()

    metrics = transition_of(book)["metrics"]

    assert isinstance(metrics, dict)
    assert (metrics["loss_streak"], metrics["trades"], metrics["pnl"]) == (3, 3, "-30")
    assert metrics["position_size"] == "100.00"  # the proof size the losses were taken at
    assert book.state.current.loss_streak == 0  # the new epoch starts from nothing


def test_r8_2_the_policy_version_is_that_of_the_policy_that_decided() -> None:
    policy = with_policy(DEFAULT_POLICY, halt_on_unauthorized_entry=False)
    assert policy.version != DEFAULT_POLICY.version
    book = Book.at("proof", policy)

    book.trades(["-10"] * 3)

    assert transition_of(book)["policy_version"] == policy.version


def test_r8_2_phase_changed_carries_the_transition_id_of_its_record() -> None:
    book = Book.at("trial")
    book.trades(["-10"] * 3)  # trial -> proof
    book.act(actions.act_acknowledge)
    book.trades(["-10"] * 3)  # proof -> experience

    records = [r.payload for r in book.records_of("transition")]
    events = [e.payload for e in book.events_of("phase_changed")]

    assert [r["transition_id"] for r in records] == [e["transition_id"] for e in events]
    assert len({r["transition_id"] for r in records}) == 2
    for record, event in zip(records, events, strict=True):
        assert {k: record[k] for k in event} == event
