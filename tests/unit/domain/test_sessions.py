"""Session close (SPEC R-2.7, R-10.5, R-4.9), gates at close (R-3.5, R-3.8, R-3.9), R-11.2."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from worker.domain import actions
from worker.domain.decide import LedgerDay
from worker.domain.policy import DEFAULT_POLICY, Policy

from .conftest import FRIDAY, MONDAY, Book, criterion, et, with_policy

D = Decimal
TUESDAY, WEDNESDAY, THURSDAY, FRIDAY2 = (date(2026, 1, 6), date(2026, 1, 7), date(2026, 1, 8),
                                         date(2026, 1, 9))


# --- R-2.7: the session record -------------------------------------------------------------------


def test_r2_7_a_session_record_has_every_field() -> None:
    book = Book.at("experience")
    book.session(["10"])

    record = book.session_record(MONDAY)

    assert set(record) >= {
        "trading_day", "phase", "position_size", "phases", "counted_trades", "wins", "losses",
        "breakevens", "emergency_exits", "gross_win_pnl", "gross_loss_pnl", "net_pnl",
        "start_equity", "end_equity", "breaker_trips", "denied_entries", "closed_implicitly",
        "amended"}


def test_r2_7_counts_are_of_counted_trades_and_pnl_is_of_every_kind() -> None:
    book = Book.at("experience")
    book.trades(["10", "-4", "0"])
    book.trade("7", kind="emergency_exit")
    book.trade("-3", kind="manual", mode="live")
    book.end()

    r = book.session_record(MONDAY)
    assert (r["counted_trades"], r["wins"], r["losses"], r["breakevens"]) == (3, 1, 1, 1)
    assert r["emergency_exits"] == 1
    assert (r["gross_win_pnl"], r["gross_loss_pnl"], r["net_pnl"]) == ("17", "-7", "10")


def test_r2_7_the_record_carries_the_phase_and_size_at_close() -> None:
    book = Book.at("trial")
    book.session(["10"])

    r = book.session_record(MONDAY)
    assert (r["phase"], r["position_size"]) == ("trial", "200.00")


def test_r2_7_phases_during_the_day_list_every_phase_in_order() -> None:
    book = Book.at("trial")
    book.trades(["-10"] * 3)  # → proof mid-day
    book.end()

    r = book.session_record(MONDAY)
    assert r["phases"] == ["trial", "proof"]
    assert (r["phase"], r["breaker_trips"]) == ("proof", 1)


def test_r2_7_a_transition_after_the_close_shows_in_the_next_sessions_phases_only() -> None:
    book = Book.at("proof")
    book.end()  # MONDAY closes in proof
    book.act(actions.act_force_advance, target="trial", now=et(MONDAY, 18))
    book.session([])

    assert book.session_record(MONDAY)["phases"] == ["proof"]
    assert book.session_record(TUESDAY)["phases"] == ["trial"]


@pytest.mark.parametrize(
    ("trade_equity", "session_equity", "end"),
    [
        (None, "10500", "10500"),  # the session_ended equity
        ("10300", None, "10300"),  # else the last trade's equity
        (None, None, "10000"),  # else the start equity
        ("10300", "10400", "10400"),
    ],
)
def test_r2_7_end_equity_is_session_ended_else_last_trade_else_start(
        trade_equity: str | None, session_equity: str | None, end: str) -> None:
    book = Book.at("proof")
    if trade_equity is None:
        book.trade("10")
    else:
        book.trade("10", mode="live", equity_after=trade_equity)
    book.end(equity=session_equity)

    r = book.session_record(MONDAY)
    assert (r["start_equity"], r["end_equity"]) == ("10000", end)


def test_r2_7_start_equity_is_unknown_without_a_recent_report() -> None:
    book = Book.at("proof", equity=None)
    book.session([])

    r = book.session_record(MONDAY)
    assert (r["start_equity"], r["end_equity"]) == (None, None)


def test_r2_7_counted_trades_exclude_trades_opened_before_the_epoch() -> None:
    book = Book.at("proof")
    book.act(actions.act_reset_epoch, now=et(MONDAY, 12))
    book.trade("-20", at=et(MONDAY, 13), opened_at=et(MONDAY, 11))
    book.trade("5", at=et(MONDAY, 14))
    book.end()

    r = book.session_record(MONDAY)
    assert (r["counted_trades"], r["net_pnl"]) == (1, "-15")


# --- R-4.9: denials and emergency exits from the entry ledger ------------------------------------


def test_r4_9_first_denials_and_emergency_exits_reach_history_when_the_session_closes() -> None:
    book = Book.at("proof")
    book.ledger_days[MONDAY] = LedgerDay(
        MONDAY,
        first_denials=({"reason": "daily_limit", "request_id": "r2"},
                       {"reason": "equity_unknown", "request_id": "r5"}),
        denial_counts=(("daily_limit", 4), ("equity_unknown", 1)),
        emergency_exits=({"request_id": "r9", "position_id": "p1"},),
    )

    book.session(["10"])

    denied = book.records_of("entry_denied")
    assert [r.payload["reason"] for r in denied] == ["daily_limit", "equity_unknown"]
    assert [r.payload["position_id"] for r in book.records_of("emergency_exit")] == ["p1"]
    assert book.session_record(MONDAY)["denied_entries"] == {"daily_limit": 4,
                                                             "equity_unknown": 1}


def test_r4_9_a_closed_sessions_ledger_day_is_handed_back_for_cleanup() -> None:
    book = Book.at("proof")

    book.session([])

    decision = book.results[-1]
    assert decision.closed_days == (MONDAY,)  # type: ignore[union-attr]


# --- R-3.5: the no-entry run ---------------------------------------------------------------------


def proof_week(entries: set[date], policy: Policy = DEFAULT_POLICY) -> Book:
    book = Book.at("proof", policy)
    for day in (MONDAY, TUESDAY, WEDNESDAY, THURSDAY, FRIDAY2):
        if day in entries:
            book.entered(day)
        book.session(["10"])
    return book


@pytest.mark.parametrize(
    ("entries", "run", "met"),
    [
        ({MONDAY}, "4", False),  # the unfinished run Tue-Fri counts
        ({MONDAY, FRIDAY2}, "3", True),
        ({MONDAY, WEDNESDAY, FRIDAY2}, "1", True),
        ({FRIDAY2}, "0", True),  # measured from the epoch's first allowed entry
    ],
)
def test_r3_5_the_no_entry_run_counts_days_without_an_allowed_live_proof_entry(
        entries: set[date], run: str, met: bool) -> None:
    book = proof_week(entries)

    c = criterion(book.gate(), "no_entry_run")
    assert (c.actual, c.met) == (run, met)


def test_r3_5_days_tripped_at_the_open_are_skipped_by_the_no_entry_run() -> None:
    book = Book.at("proof")
    book.entered(MONDAY)
    book.session(["10"])
    book.trade("10", mode="live", decision=None)  # Tuesday: unauthorized, trips the breaker
    book.end()
    for _ in range(3):  # Wed-Fri open tripped
        book.session([])

    assert criterion(book.gate(), "no_entry_run").actual == "1"


def test_r3_5_an_acknowledge_after_the_close_means_the_next_day_was_not_tripped_at_open() -> None:
    book = Book.at("proof")
    book.entered(MONDAY)
    book.session(["10"])
    book.trade("10", mode="live", decision=None)  # Tuesday: trips
    book.end()
    book.act(actions.act_acknowledge, now=et(TUESDAY, 20))  # before Wednesday's open
    for _ in range(3):
        book.session([])

    assert criterion(book.gate(), "no_entry_run").actual == "4"


# --- R-3.8: advancement_eligible -----------------------------------------------------------------


def lenient(**extra: object) -> Policy:
    return with_policy(DEFAULT_POLICY, gates={
        "proof": {"min_sessions": 1, "min_win_rate": "0.5", "min_rr": "0"}}, **extra)


def test_r3_8_advancement_eligible_is_published_when_an_account_becomes_eligible() -> None:
    book = Book.at("experience", lenient())

    book.session(["10"])

    [event] = [e for e in book.results[-1].events if e.type == "advancement_eligible"]
    assert event.payload["eligible"] is True
    assert event.payload["to_phase"] == "proof"


def test_r3_8_advancement_eligible_is_published_once_while_eligibility_lasts() -> None:
    book = Book.at("experience", lenient())

    for _ in range(3):
        book.session(["10"])

    assert len(book.events_of("advancement_eligible")) == 1


def test_r3_8_advancement_eligible_is_published_again_after_being_ineligible() -> None:
    book = Book.at("experience", lenient())
    book.session(["10"])  # eligible
    book.session(["-10", "-10", "-10"])  # 1 of 4: ineligible
    book.session(["10", "10", "10"])  # 4 of 7: eligible again

    assert len(book.events_of("advancement_eligible")) == 2


def test_r3_8_an_amendment_never_evaluates_the_gate() -> None:
    book = Book.at("experience", lenient())
    book.session(["-10"])  # ineligible

    decision = book.trade("10", day=MONDAY, at=et(MONDAY, 15))  # late: amends MONDAY

    assert [e.type for e in decision.events] == ["session_amended"]
    assert book.state.eligible is False


# --- R-3.9: auto-advance -------------------------------------------------------------------------


def test_r3_9_without_auto_advance_an_eligible_account_stays() -> None:
    book = Book.at("experience", lenient())

    book.session(["10"])

    assert book.state.phase == "experience"


def test_r3_9_auto_advance_advances_at_session_close_effective_at_ended_at() -> None:
    book = Book.at("experience", lenient(auto_advance=True))

    book.session(["10"])

    assert book.state.phase == "proof"
    [changed] = book.events_of("phase_changed")
    assert changed.payload["trigger"] == "auto"
    assert changed.effective_at == et(MONDAY, 16)
    assert book.state.tenure_start == book.state.epoch_start == et(MONDAY, 16)


def test_r1_5_an_auto_advance_at_an_implicit_close_takes_effect_at_the_sessions_end() -> None:
    book = Book.at("experience", lenient(auto_advance=True))
    book.trade("10")

    book.trade("10", day=TUESDAY)

    [changed] = book.events_of("phase_changed")
    assert changed.effective_at == et(TUESDAY, 7)


# --- R-11.2: the replay profile's automatic acknowledge ------------------------------------------


def replay_book() -> Book:
    policy = DEFAULT_POLICY.replay_profile("USD")
    book = Book(policy, clock="message", starts_at=et(FRIDAY, 7))
    book.end(FRIDAY, equity="10000")
    book.force_to("trial")
    book.clear_logs()
    return book


def test_r11_2_replay_acknowledges_at_the_close_of_the_first_session_opened_after_the_trip(
        ) -> None:
    book = replay_book()
    book.trades(["-10"] * 3)  # MONDAY: → proof, tripped
    book.end(MONDAY)
    assert book.state.halted  # MONDAY opened before the trip

    book.end(TUESDAY)

    assert book.state.halted is False
    [cleared] = book.events_of("circuit_breaker_cleared")
    assert cleared.payload["by"] == "auto"
    assert cleared.effective_at == et(TUESDAY, 16)


def test_r11_2_the_day_after_an_automatic_acknowledge_is_not_tripped_at_the_open() -> None:
    book = replay_book()
    book.trades(["-10"] * 3)
    book.end(MONDAY)
    book.end(TUESDAY)

    meta = book.state.session(WEDNESDAY)
    assert meta is not None
    assert meta.tripped_at_open is False


def test_r11_2_without_the_replay_profile_the_breaker_stays_tripped() -> None:
    book = Book.at("trial")
    book.trades(["-10"] * 3)
    book.end(MONDAY)
    book.end(TUESDAY)

    assert book.state.halted is True


def test_r2_7_breaker_trips_are_counted_per_session() -> None:
    book = Book.at("trial")
    book.trade("1", mode="live", decision=None)  # trip
    book.act(actions.act_acknowledge, now=et(MONDAY, 11))
    book.resume(et(MONDAY, 12))
    book.trade("1", mode="live", decision=None)  # trip again
    book.end()

    assert book.session_record(MONDAY)["breaker_trips"] == 2


def test_r2_7_a_late_trade_amends_the_session_record() -> None:
    book = Book.at("experience")
    book.session(["10"])

    book.trade("-4", day=MONDAY, at=et(MONDAY, 15))

    r = book.session_record(MONDAY)
    assert (r["amended"], r["counted_trades"], r["net_pnl"]) == (True, 2, "6")
    assert book.events_of("session_amended")[-1].trading_day == MONDAY


def test_r1_5_an_epoch_reset_mid_day_keeps_trades_before_it_out_of_the_window() -> None:
    book = Book.at("experience")
    book.trades(["-10", "-10"])
    book.act(actions.act_reset_epoch, now=et(MONDAY, 12))
    book.trade("10", at=et(MONDAY, 13))
    book.end()

    assert book.session_record(MONDAY)["counted_trades"] == 1
    assert book.state.current.pnl == D("-10")
    assert book.state.epoch_start == et(MONDAY, 12)
