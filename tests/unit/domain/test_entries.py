"""The pre-trade entry decision (SPEC §4) as the pure reference the entry script mirrors."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields, replace
from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest

from worker.domain.calendar import Calendar
from worker.domain.entries import (
    ENTRY_RULES,
    EntryClock,
    EntryKind,
    EntryOutcome,
    EntryView,
    Mode,
    decide_entry,
)
from worker.domain.model import Phase
from worker.domain.policy import DEFAULT_POLICY

from .conftest import et

D = Decimal
CAL = Calendar(DEFAULT_POLICY.calendar)
MIN = DEFAULT_POLICY.sizes.min_position_size
TUESDAY = date(2026, 1, 6)


def clock_at(now: datetime) -> EntryClock:
    today = CAL.trading_day(now)
    return EntryClock(now, today, CAL.previous_trading_day(today), CAL.next_open_after(now))


CLOCK = clock_at(et(TUESDAY, 9, 30))

# Every later rule would also match this view: a case proves its rule wins by coming first.
WORST = EntryView(registered=False, retired=True, state_present=False, phase="proof",
                  halted=True, degraded=True, position_size=D("9.99"), equity=None,
                  equity_day=None, slot_used_today=True)
HEALTHY = EntryView(registered=True, phase="proof", position_size=D("100.00"),
                    equity=D(10000), equity_day=TUESDAY)


def entry(view: EntryView, mode: Mode = "live", kind: EntryKind = "regular",
          clock: EntryClock = CLOCK) -> EntryOutcome:
    return decide_entry(view, mode=mode, kind=kind, clock=clock, min_size=MIN)


@dataclass(frozen=True)
class Case:
    row: str
    view: EntryView
    mode: Mode
    kind: EntryKind
    allowed: bool
    reason: str


OK = replace(WORST, registered=True, retired=False, state_present=True)
CASES = [
    Case("emergency_exit", WORST, "live", "emergency_exit", True, "emergency_exit"),
    Case("unknown_account", WORST, "live", "regular", False, "unknown_account"),
    Case("account_retired", replace(WORST, registered=True), "live", "regular", False,
         "account_retired"),
    Case("state_unavailable", replace(WORST, registered=True, retired=False), "live", "regular",
         False, "state_unavailable"),
    Case("paper_allowed", replace(OK, phase="experience"), "paper", "regular", True, "allowed"),
    Case("paper_only", replace(OK, phase="experience"), "live", "regular", False, "paper_only"),
    Case("circuit_breaker", OK, "live", "regular", False, "circuit_breaker"),
    Case("input_dead_lettered", replace(OK, halted=False), "live", "regular", False,
         "input_dead_lettered"),
    Case("equity_unknown", replace(OK, halted=False, degraded=False), "live", "regular", False,
         "equity_unknown"),
    Case("equity_depleted", replace(OK, halted=False, degraded=False, equity=D(0),
                                    equity_day=TUESDAY), "live", "regular", False,
         "equity_depleted"),
    Case("size_below_minimum", replace(OK, halted=False, degraded=False, equity=D(10000),
                                       equity_day=TUESDAY), "live", "regular", False,
         "size_below_minimum"),
    Case("daily_limit", replace(HEALTHY, slot_used_today=True), "live", "regular", False,
         "daily_limit"),
    Case("allowed", HEALTHY, "live", "regular", True, "allowed"),
]


def test_r4_every_entry_rule_has_a_case_in_table_order() -> None:
    assert [c.row for c in CASES] == [reason for reason, _ in ENTRY_RULES]


@pytest.mark.parametrize("case", CASES, ids=[c.row for c in CASES])
def test_r4_the_first_matching_entry_rule_decides(case: Case) -> None:
    outcome = entry(case.view, case.mode, case.kind)

    assert (outcome.allowed, outcome.reason) == (case.allowed, case.reason)


# --- emergency exits -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "view",
    [
        EntryView(registered=False),
        replace(HEALTHY, retired=True),
        replace(HEALTHY, state_present=False),
        replace(HEALTHY, halted=True),
        replace(HEALTHY, degraded=True),
        replace(HEALTHY, equity=None),
        replace(HEALTHY, slot_used_today=True),
        replace(HEALTHY, phase="experience"),
    ],
    ids=["unknown", "retired", "no_state", "tripped", "degraded", "no_equity", "slot_used",
         "experience"],
)
@pytest.mark.parametrize("mode", ["live", "paper"])
def test_r4_1_an_emergency_exit_is_always_allowed_with_size_zero_and_consumes_nothing(
        view: EntryView, mode: Mode) -> None:
    outcome = entry(view, mode, "emergency_exit")

    assert (outcome.allowed, outcome.reason, outcome.position_size) == (
        True, "emergency_exit", D("0.00"))
    assert (outcome.consumes_slot, outcome.records_decision) == (False, False)


# --- R-4.2 / R-4.3 -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["live", "paper"])
def test_r4_2_an_unknown_account_is_refused_for_either_mode(mode: Mode) -> None:
    assert entry(EntryView(registered=False), mode).reason == "unknown_account"


def test_r4_3_experience_paper_entries_are_allowed_while_tripped_and_unlimited() -> None:
    view = EntryView(registered=True, phase="experience", halted=True, slot_used_today=True)

    outcome = entry(view, "paper")

    assert (outcome.allowed, outcome.remaining_today, outcome.consumes_slot) == (
        True, None, False)


def test_r4_3_experience_live_entries_are_paper_only_even_with_equity() -> None:
    view = EntryView(registered=True, phase="experience", equity=D(10000), equity_day=TUESDAY)

    assert entry(view, "live").reason == "paper_only"


# --- R-4.4 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("phase", ["proof", "trial", "scaling"])
@pytest.mark.parametrize("mode", ["live", "paper"])
def test_r4_4_a_tripped_breaker_denies_entries_outside_experience(phase: Phase,
                                                                  mode: Mode) -> None:
    assert entry(replace(HEALTHY, phase=phase, halted=True), mode).reason == "circuit_breaker"


def test_r4_4_a_degraded_account_still_takes_paper_entries() -> None:
    outcome = entry(replace(HEALTHY, degraded=True), "paper")

    assert (outcome.allowed, outcome.reason) == (True, "allowed")


# --- R-4.5 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("equity_day", "reason"),
    [
        (TUESDAY, "allowed"),
        (date(2026, 1, 5), "allowed"),  # the trading day before
        (date(2026, 1, 2), "equity_unknown"),  # older than the day before
        (None, "equity_unknown"),
    ],
)
def test_r4_5_equity_is_known_only_when_reported_today_or_the_trading_day_before(
        equity_day: date | None, reason: str) -> None:
    assert entry(replace(HEALTHY, equity_day=equity_day)).reason == reason


def test_r4_5_equity_reported_friday_is_known_on_monday() -> None:
    monday = date(2026, 1, 12)
    view = replace(HEALTHY, equity_day=date(2026, 1, 9))

    assert entry(view, clock=clock_at(et(monday, 9))).reason == "allowed"


@pytest.mark.parametrize(("equity", "reason"),
                         [("0", "equity_depleted"), ("-1", "equity_depleted"),
                          ("0.01", "allowed")])
def test_r4_5_equity_at_or_below_zero_is_depleted(equity: str, reason: str) -> None:
    assert entry(replace(HEALTHY, equity=D(equity))).reason == reason


@pytest.mark.parametrize(("size", "reason"),
                         [("9.99", "size_below_minimum"), ("10.00", "allowed"),
                          ("0.00", "size_below_minimum")])
def test_r4_5_a_size_below_10_00_is_refused(size: str, reason: str) -> None:
    assert entry(replace(HEALTHY, position_size=D(size))).reason == reason


def test_r4_5_paper_entries_need_no_equity() -> None:
    assert entry(replace(HEALTHY, equity=None, position_size=D(0)), "paper").allowed


# --- proof's one live entry a day ---------------------------------------------------------


def test_r4_6_a_proof_live_entry_consumes_the_days_slot_and_leaves_none() -> None:
    outcome = entry(HEALTHY)

    assert (outcome.allowed, outcome.consumes_slot, outcome.remaining_today) == (True, True, 0)


@pytest.mark.parametrize(
    ("now", "next_open", "utc_offset_hours"),
    [
        (et(date(2026, 3, 6), 9, 30), et(date(2026, 3, 9), 7), -4),  # DST begins Sunday 03-08
        (et(date(2026, 10, 30), 9, 30), et(date(2026, 11, 2), 7), -5),  # DST ends Sunday 11-01
        (et(date(2026, 1, 6), 9, 30), et(date(2026, 1, 7), 7), -5),
    ],
)
def test_r4_6_daily_limit_answers_the_next_trading_days_open_across_dst(
        now: datetime, next_open: datetime, utc_offset_hours: int) -> None:
    view = replace(HEALTHY, equity_day=CAL.trading_day(now), slot_used_today=True)

    outcome = entry(view, clock=clock_at(now))

    assert outcome.reason == "daily_limit"
    assert outcome.next_allowed_at == next_open
    assert outcome.next_allowed_at is not None
    assert outcome.next_allowed_at.utcoffset() == timedelta(hours=utc_offset_hours)
    assert outcome.remaining_today == 0


def test_r4_6_a_slot_used_by_a_live_entry_in_another_phase_limits_proof() -> None:
    # the slot is per trading day, whatever phase used it (e.g. trial, then a downgrade)
    trial = entry(replace(HEALTHY, phase="trial", position_size=D(200)))
    assert trial.consumes_slot

    assert entry(replace(HEALTHY, slot_used_today=True)).reason == "daily_limit"


@pytest.mark.parametrize("slot_used", [False, True])
def test_r4_6_paper_entries_never_use_the_slot(slot_used: bool) -> None:
    outcome = entry(replace(HEALTHY, slot_used_today=slot_used), "paper")

    assert (outcome.allowed, outcome.consumes_slot, outcome.records_decision) == (
        True, False, False)


@pytest.mark.parametrize("phase", ["trial", "scaling"])
def test_r4_7_trial_and_scaling_live_entries_are_unlimited_with_the_accounts_size(
        phase: Phase) -> None:
    view = replace(HEALTHY, phase=phase, position_size=D("300.00"), slot_used_today=True)

    outcome = entry(view)

    assert (outcome.allowed, outcome.position_size, outcome.remaining_today) == (
        True, D("300.00"), None)


# --- R-4.8 ---------------------------------------------------------------------------------------


def test_r4_8_allowed_live_entries_are_recorded_by_decision_id() -> None:
    assert entry(HEALTHY).records_decision is True


@pytest.mark.parametrize("case", [c for c in CASES if c.reason != "daily_limit"],
                         ids=[c.row for c in CASES if c.reason != "daily_limit"])
def test_r4_8_next_allowed_at_is_set_only_for_daily_limit(case: Case) -> None:
    assert entry(case.view, case.mode, case.kind).next_allowed_at is None


def test_r4_8_remaining_today_is_null_when_unlimited() -> None:
    assert entry(replace(HEALTHY, phase="trial")).remaining_today is None
    assert entry(HEALTHY, "paper").remaining_today is None


# --- R-4.11 --------------------------------------------------------------------------------------


def test_r4_11_the_entry_decision_takes_no_password_or_override_input() -> None:
    names = set(inspect.signature(decide_entry).parameters) | {
        f.name for f in fields(EntryView)} | {f.name for f in fields(EntryClock)}

    assert not {n for n in names if any(w in n for w in ("password", "override", "signature",
                                                         "force", "bypass"))}
    assert set(inspect.signature(decide_entry).parameters) == {
        "view", "mode", "kind", "clock", "min_size"}


def test_r4_11_only_an_emergency_exit_bypasses_the_daily_limit() -> None:
    view = replace(HEALTHY, slot_used_today=True)

    reasons = {kind: entry(view, kind=kind).reason
               for kind in ("regular", "manual", "emergency_exit")}

    assert reasons == {"regular": "daily_limit", "manual": "daily_limit",
                       "emergency_exit": "emergency_exit"}
