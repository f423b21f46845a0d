"""Unauthorized entries (SPEC R-4.10): live trades the entry script never allowed."""

from __future__ import annotations

from decimal import Decimal

import pytest

from worker.domain.decide import Decision
from worker.domain.policy import DEFAULT_POLICY

from .conftest import MONDAY, Book, with_policy

D = Decimal


def unauthorized(decision: Decision) -> bool:
    events = [e.type for e in decision.events]
    records = [r.type for r in decision.history]
    assert events.count("unauthorized_entry") == records.count("unauthorized_entry")
    return "unauthorized_entry" in events


def test_r4_10_a_live_regular_trade_without_entry_decision_id_is_unauthorized() -> None:
    book = Book.at("proof")

    decision = book.trade("10", mode="live", decision=None, trade_id="T-x")

    assert unauthorized(decision)
    payload = book.events_of("unauthorized_entry")[0].payload
    assert (payload["trade_id"], payload["entry_decision_id"]) == ("T-x", None)


def test_r4_10_an_unauthorized_entry_trips_the_breaker() -> None:
    book = Book.at("proof")

    decision = book.trade("10", mode="live", decision=None)

    assert book.state.halted is True
    assert "circuit_breaker_tripped" in [e.type for e in decision.events]
    assert book.events_of("circuit_breaker_tripped")[0].payload["reasons"] == [
        "unauthorized_entry"]


def test_r4_10_a_decision_id_the_ledger_does_not_know_is_unauthorized() -> None:
    book = Book.at("proof")

    assert unauthorized(book.trade("10", mode="live", decision="d-unknown"))


def test_r4_10_an_entry_made_in_experience_is_unauthorized() -> None:
    book = Book.at("proof")
    book.allow("d-exp", size="100", phase="experience")

    assert unauthorized(book.trade("10", mode="live", decision="d-exp", position_size="100"))


@pytest.mark.parametrize(("size", "bad"), [("101.00", False), ("101.01", True),
                                           ("100.00", False), ("50", False)])
def test_r4_10_a_size_more_than_1_percent_over_the_decided_size_is_unauthorized(
        size: str, bad: bool) -> None:
    book = Book.at("proof")
    book.allow("d1", size="100.00")

    assert unauthorized(book.trade("10", mode="live", decision="d1", position_size=size)) is bad


def test_r4_10_an_allowed_decision_at_its_size_is_authorized() -> None:
    book = Book.at("trial")

    decision = book.trade("10", mode="live")  # the Book cites an allowed decision

    assert not unauthorized(decision)
    assert book.state.halted is False
    assert decision.consumed_decisions == ("d1",)


def test_r4_10_a_manual_live_trade_is_never_unauthorized() -> None:
    book = Book.at("proof")

    decision = book.trade("10", mode="live", kind="manual", decision=None)

    assert not unauthorized(decision)
    assert book.state.halted is False


def test_r4_10_a_paper_trade_is_never_unauthorized() -> None:
    book = Book.at("proof")

    assert not unauthorized(book.trade("10", mode="paper", decision=None))


def test_r4_10_with_halt_on_unauthorized_entry_false_it_is_recorded_but_does_not_trip() -> None:
    book = Book.at("proof", with_policy(DEFAULT_POLICY, halt_on_unauthorized_entry=False))

    decision = book.trade("10", mode="live", decision=None)

    assert unauthorized(decision)
    assert book.state.halted is False


def test_r4_10_an_unauthorized_trades_pnl_counts_like_any_other() -> None:
    book = Book.at("proof")

    book.trade("-25", mode="live", decision=None)

    cur = book.state.current
    assert (cur.pnl, cur.counted, cur.loss_streak) == (D("-25"), 1, 1)
    book.end()
    assert book.session_record(MONDAY)["net_pnl"] == "-25"


def test_r4_10_a_live_trade_in_experience_without_decision_is_unauthorized() -> None:
    book = Book.at("experience")

    assert unauthorized(book.trade("10", mode="live", decision=None))
