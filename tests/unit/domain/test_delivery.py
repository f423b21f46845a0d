"""Delivery and ordering, the pure parts (SPEC R-10.3 … R-10.5, R-9.3 checks, R-1.6 clocks)."""

from __future__ import annotations

import ast
import random
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from worker.domain import actions as actions_module
from worker.domain import decide as decide_module
from worker.domain.decide import EMPTY_LEDGER, decide

from .conftest import FRIDAY, MONDAY, Book, et, session_msg, trade_msg

D = Decimal
TUESDAY, WEDNESDAY, THURSDAY = date(2026, 1, 6), date(2026, 1, 7), date(2026, 1, 8)
MONDAY2 = date(2026, 1, 12)  # five trading days after MONDAY


def dead_reason(book: Book) -> str | None:
    last = book.results[-1]
    dead = getattr(last, "dead_letter", None)
    return None if dead is None else dead.reason


# --- bounds ------------------------------------------------------------------------------


def test_r10_3_a_trade_closed_before_the_open_five_trading_days_before_h_is_too_late() -> None:
    book = Book.at("experience")
    book.trade("1", at=et(MONDAY2, 10))  # H's trading day; five trading days before: MONDAY
    before = book.state

    decision = book.trade("1", at=et(MONDAY, 6, 59))

    assert (decision.outcome, dead_reason(book)) == ("dead_letter", "too_late")
    assert book.state is before


def test_r10_3_a_trade_at_that_open_is_still_accepted() -> None:
    book = Book.at("experience")
    book.trade("1", at=et(MONDAY2, 10))

    assert book.trade("1", at=et(MONDAY, 7)).outcome == "applied"


def test_r10_3_a_session_ended_before_the_horizon_is_too_late() -> None:
    book = Book.at("experience")
    book.trade("1", at=et(MONDAY2, 10))

    decision = book.end(FRIDAY)

    assert (decision.outcome, dead_reason(book)) == ("dead_letter", "too_late")


@pytest.mark.parametrize(("ahead", "reason"), [(timedelta(minutes=2), None),
                                               (timedelta(minutes=2, microseconds=1),
                                                "future_timestamp")])
def test_r10_3_a_trade_closed_more_than_2_minutes_after_the_worker_clock_is_refused(
        ahead: timedelta, reason: str | None) -> None:
    book = Book.at("experience")
    now = et(MONDAY, 10)

    book.trade("1", at=now + ahead, now=now)

    assert dead_reason(book) == reason


def test_r10_3_a_session_ended_in_the_future_is_refused() -> None:
    book = Book.at("experience")

    book.end(MONDAY, now=et(MONDAY, 15))  # ended_at 16:00

    assert dead_reason(book) == "future_timestamp"


def test_r1_6_a_message_clock_account_takes_trades_from_any_time() -> None:
    book = Book.at("experience", clock="message", starts_at=et(MONDAY, 7))

    decision = book.trade("1", at=et(WEDNESDAY, 10), now=et(MONDAY, 8))  # days ahead

    assert decision.outcome == "applied"


def test_r1_6_a_message_clock_accounts_clock_is_its_latest_message() -> None:
    book = Book.at("experience", clock="message", starts_at=et(MONDAY, 7))
    book.trade("1", at=et(TUESDAY, 10), now=et(date(2026, 6, 1), 8))
    book.trade("1", at=et(MONDAY, 10), now=et(date(2026, 6, 1), 9))  # late: clock stays

    assert book.state.clock_at == et(TUESDAY, 10)


# --- duplicates --------------------------------------------------------------------------


def test_r10_3_an_identical_repeat_changes_nothing() -> None:
    book = Book.at("experience")
    book.trade("5", trade_id="T-1", at=et(MONDAY, 10))
    before = book.state

    decision = book.trade("5", trade_id="T-1", at=et(MONDAY, 10))

    assert decision.outcome == "duplicate"
    assert decision.changed is False
    assert (decision.events, decision.history) == ((), ())
    assert book.state is before


def test_r10_3_a_repeat_with_different_content_is_a_conflicting_duplicate() -> None:
    book = Book.at("experience")
    book.trade("5", trade_id="T-1", at=et(MONDAY, 10))

    decision = book.trade("6", trade_id="T-1", at=et(MONDAY, 10))

    assert (decision.outcome, dead_reason(book)) == ("dead_letter", "conflicting_duplicate")
    assert book.state.current.pnl == D(5)


def test_r10_3_a_repeat_at_another_time_is_a_conflicting_duplicate() -> None:
    book = Book.at("experience")
    book.trade("5", trade_id="T-1", at=et(MONDAY, 10))

    book.trade("5", trade_id="T-1", at=et(MONDAY, 11))

    assert dead_reason(book) == "conflicting_duplicate"


def test_r10_3_a_second_session_ended_amends_only_the_end_equity() -> None:
    book = Book.at("experience")
    book.trade("5")
    book.end(MONDAY, equity="10005")
    closed = book.state

    decision = book.end(MONDAY, equity="10100", at=et(MONDAY, 17))

    assert decision.outcome == "applied"
    assert [e.type for e in decision.events] == ["session_amended"]
    record = book.session_record(MONDAY)
    assert (record["end_equity"], record["amended"]) == ("10100", True)
    assert record["net_pnl"] == "5"
    assert (book.state.current, book.state.current_day) == (closed.current, closed.current_day)


@pytest.mark.parametrize("equity", [None, "10005"])
def test_r10_3_a_second_session_ended_without_a_new_end_equity_changes_nothing(
        equity: str | None) -> None:
    book = Book.at("experience")
    book.trade("5")
    book.end(MONDAY, equity="10005")
    before = book.state

    decision = book.end(MONDAY, equity=equity, at=et(MONDAY, 17))

    assert decision.outcome == "duplicate"
    assert book.state is before


# --- checks the engine makes ---------------------------------------------------------------


def test_r9_3_a_trade_in_another_currency_is_dead_lettered_currency_mismatch() -> None:
    book = Book.at("experience")
    msg = trade_msg("T-1", "5", et(MONDAY, 10)).model_copy(update={"currency": "EUR"})

    decision = decide(book.state, EMPTY_LEDGER, msg, book.policy, et(MONDAY, 11))

    assert decision.dead_letter is not None
    assert decision.dead_letter.reason == "currency_mismatch"


def test_r9_3_a_session_ended_for_a_non_trading_day_is_dead_lettered() -> None:
    book = Book.at("experience")

    decision = decide(book.state, EMPTY_LEDGER, session_msg(date(2026, 1, 10)), book.policy,
                      et(date(2026, 1, 12), 8))

    assert decision.dead_letter is not None
    assert decision.dead_letter.reason == "not_a_trading_day"


# --- order -------------------------------------------------------------------------------


def test_r10_4_a_late_trade_amends_its_closed_session() -> None:
    book = Book.at("experience")
    book.session(["10"])

    decision = book.trade("-4", at=et(MONDAY, 15))

    assert [e.type for e in decision.events] == ["session_amended"]
    record = book.session_record(MONDAY)
    assert (record["amended"], record["net_pnl"], record["counted_trades"]) == (True, "6", 2)


def test_r10_4_transitions_already_made_are_not_undone_by_a_late_trade() -> None:
    book = Book.at("proof")
    book.trade("-10", at=et(MONDAY, 10))
    book.trade("-10", at=et(MONDAY, 11))
    book.trade("-10", at=et(MONDAY, 13))  # → experience
    assert book.state.phase == "experience"

    book.trade("50", at=et(MONDAY, 12))  # in trade order it broke the streak

    assert book.state.phase == "experience"


SCHEDULE = [(MONDAY, 10, "10"), (MONDAY, 11, "-4"), (MONDAY, 12, "0"), (TUESDAY, 10, "7"),
            (TUESDAY, 11, "-2"), (WEDNESDAY, 10, "3"), (THURSDAY, 10, "-1"),
            (THURSDAY, 11, "9")]


def replay(order: list[int], mode: str = "paper") -> Book:
    """The SCHEDULE's trades in `order`, then a sweep closing every session.

    No rule fires on this schedule (a history without transitions). Paper trades report no
    equity and the account reported none, so the size stays 0.00 whatever the order."""
    book = Book.at("proof", equity=None if mode == "paper" else "10000")
    for i in order:
        day, hour, pnl = SCHEDULE[i]
        equity = str(10000 + i) if mode == "live" else None
        book.trade(pnl, at=et(day, hour), trade_id=f"T{i}", mode=mode, equity_after=equity)
    book.sweep(et(date(2026, 1, 9), 12))
    return book


def records(book: Book) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for r in book.history:
        if r.type in ("session_closed", "session_amended"):
            latest[r.payload["trading_day"]] = {k: v for k, v in r.payload.items()
                                                if k not in ("closed_implicitly", "amended")}
    return latest


@pytest.mark.parametrize("seed", range(6))
def test_r10_4_any_arrival_order_gives_the_same_metrics_and_session_records(seed: int) -> None:
    in_order = replay(list(range(len(SCHEDULE))))
    order = list(range(len(SCHEDULE)))
    random.Random(seed).shuffle(order)

    shuffled = replay(order)

    assert shuffled.state.current == in_order.state.current
    assert records(shuffled) == records(in_order)


def test_r10_4_late_equity_reports_give_the_same_session_records_in_any_order() -> None:
    in_order = replay(list(range(len(SCHEDULE))), mode="live")

    shuffled = replay([3, 6, 1, 5, 7, 0, 4, 2], mode="live")

    assert shuffled.state.current == in_order.state.current
    assert records(shuffled) == records(in_order)


# --- when a session closes ---------------------------------------------------------------


def test_r10_5_session_ended_closes_the_session_explicitly() -> None:
    book = Book.at("experience")
    book.trade("10")

    decision = book.end()

    assert [e.type for e in decision.events] == ["session_closed"]
    assert book.session_record(MONDAY)["closed_implicitly"] is False
    assert book.state.current_day == TUESDAY


def test_r10_5_the_first_message_for_a_later_day_closes_the_session_implicitly() -> None:
    book = Book.at("experience")
    book.trade("10")

    decision = book.trade("10", day=WEDNESDAY)

    closed = [e for e in decision.events if e.type == "session_closed"]
    assert [e.trading_day for e in closed] == [MONDAY, TUESDAY]
    assert book.session_record(MONDAY)["closed_implicitly"] is True
    assert closed[0].effective_at == et(TUESDAY, 7)  # the session's end


def test_r10_5_a_session_ended_for_a_later_day_closes_the_days_before_implicitly() -> None:
    book = Book.at("experience")
    book.trade("10")

    book.end(TUESDAY)

    assert book.session_record(MONDAY)["closed_implicitly"] is True
    assert book.session_record(TUESDAY)["closed_implicitly"] is False


def test_r10_5_the_sweep_closes_a_session_15_minutes_after_its_end() -> None:
    book = Book.at("experience")
    book.trade("10")

    assert book.sweep(et(TUESDAY, 7, 14)).outcome == "noop"
    decision = book.sweep(et(TUESDAY, 7, 15))

    assert [e.type for e in decision.events] == ["session_closed"]
    assert book.session_record(MONDAY)["closed_implicitly"] is True


def test_r10_5_the_sweep_never_closes_a_message_clock_accounts_session() -> None:
    book = Book.at("experience", clock="message", starts_at=et(MONDAY, 7))
    book.trade("10", day=MONDAY)

    assert book.sweep(et(date(2026, 2, 2), 12)).outcome == "noop"




# --- what the engine publishes ------------------------------------------------------------

R9_4_TYPES = {"phase_changed", "advancement_eligible", "position_size_changed",
              "circuit_breaker_tripped", "circuit_breaker_cleared", "session_closed",
              "session_amended", "epoch_reset", "unauthorized_entry", "account_degraded",
              "override_bruteforce_suspected"}


def test_r9_4_the_engine_emits_only_event_types_of_the_wire_contract() -> None:
    emitted: set[str] = set()
    for module in (decide_module, actions_module):
        tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "emit" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                emitted.add(str(node.args[0].value))

    assert emitted
    assert emitted <= R9_4_TYPES


def test_r9_4_every_event_carries_an_aware_effective_at_and_its_trading_day() -> None:
    book = Book.at("trial")
    book.trades(["-10"] * 3)
    book.end()

    for event in book.events:
        assert event.effective_at.utcoffset() is not None
        assert event.trading_day is not None
        assert event.type in R9_4_TYPES
