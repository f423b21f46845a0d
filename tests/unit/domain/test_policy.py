"""The policy models, the TOML file and the canonical JSON (SPEC §11, R-1.3 calendar fields)."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import date, time
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError

from worker.domain.policy import (
    DEFAULT_POLICY,
    NYSE_HOLIDAYS_2026_2027,
    CalendarPolicy,
    Policy,
    PolicyError,
    load_policy_toml,
    policy_from_json,
)


def default_file_text() -> str:
    return resources.files("worker").joinpath("default_policy.toml").read_text(encoding="utf-8")


def paths(error: PolicyError) -> set[str]:
    return {problem.split(": ", 1)[0] for problem in error.problems}


def refused_paths(text: str) -> set[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy_toml(text)
    return paths(caught.value)


def dig(policy: Policy, dotted: str) -> object:
    value: object = policy
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


# Calendar tables in these tests must list holidays (see the [calendar] rule below).
CAL = "[calendar]\nholidays = []\n"


# --- the default file -----------------------------------------------------------------------------


def test_r11_1_default_policy_file_loads_to_exactly_the_default_policy() -> None:
    loaded = load_policy_toml(default_file_text())

    assert loaded == Policy()
    assert loaded.version == DEFAULT_POLICY.version


def test_r11_1_default_policy_file_writes_every_key_of_the_policy() -> None:
    in_file = json.loads(load_policy_toml(default_file_text()).canonical_json())
    as_written = tomllib.loads(default_file_text())

    def keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
        found: set[str] = set()
        for key, value in tree.items():
            found |= keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
        return found

    assert keys(as_written) == keys(in_file)


@pytest.mark.parametrize(
    ("field", "spec_default"),
    [
        ("currency", "USD"),  # R-5.1
        ("auto_advance", False),  # R-3.9
        ("halt_on_unauthorized_entry", True),  # R-4.10
        ("auto_acknowledge_breaker", False),  # R-11.2
        ("calendar.timezone", "America/New_York"),  # R-1.3
        ("calendar.session_open", time(7, 0)),
        ("calendar.weekdays", (0, 1, 2, 3, 4)),
        ("calendar.holidays_valid_through", date(2027, 12, 31)),
        ("gates.proof.min_sessions", 20),  # R-3.1
        ("gates.proof.window_sessions", 20),
        ("gates.proof.min_win_rate", Decimal("0.60")),
        ("gates.proof.min_rr", Decimal("1.5")),
        ("gates.proof.max_override_incidents", 0),
        ("gates.trial.min_days", 30),  # R-3.2
        ("gates.trial.min_trades", 50),
        ("gates.trial.window_trades", 50),
        ("gates.trial.min_win_rate", Decimal("0.65")),
        ("gates.trial.min_rr", Decimal("1.8")),
        ("gates.trial.max_no_entry_run", 3),
        ("gates.scaling.min_days", 60),  # R-3.3
        ("gates.scaling.min_trades", 100),
        ("gates.scaling.window_trades", 100),
        ("gates.scaling.min_win_rate", Decimal("0.70")),
        ("gates.scaling.min_rr", Decimal("2.0")),
        ("gates.scaling.max_drawdown", Decimal("0.05")),
        ("gates.max_non_regular_share", Decimal("0.10")),  # R-3.4
        ("sizes.proof", Decimal(100)),  # R-5.1
        ("sizes.trial", Decimal(200)),
        ("sizes.scaling_base", Decimal(200)),
        ("sizes.scaling_step", Decimal(100)),
        ("sizes.scaling_step_wins", 5),
        ("sizes.scaling_bonus", Decimal(200)),
        ("sizes.scaling_bonus_win_rate", Decimal("0.70")),
        ("sizes.scaling_bonus_sessions", 10),
        ("sizes.max_position_fraction", Decimal("0.05")),
        ("sizes.max_position_size", Decimal(2000)),
        ("sizes.min_position_size", Decimal("10.00")),  # R-4.5
        ("sizes.reduction_fraction", Decimal("0.5")),  # R-5.2
        ("sizes.paper_notional", Decimal(100)),  # R-11.2
        ("sizes.unauthorized_size_tolerance", Decimal("0.01")),  # R-4.10
        ("downgrade.max_consecutive_losses", 3),  # R-6.1
        ("downgrade.rolling_window", 20),
        ("downgrade.min_rolling_win_rate", Decimal("0.55")),
        ("downgrade.max_daily_loss", Decimal("0.05")),
        ("delivery.too_late_trading_days", 5),  # R-10.3
        ("delivery.future_tolerance_seconds", 120),
        ("delivery.session_close_grace_seconds", 900),  # R-10.5
        ("delivery.max_attempts", 5),  # R-10.6
        ("delivery.decision_retention_days", 30),  # R-9.2
        ("delivery.inbox_retention_seconds", 86400),  # R-10.7
        ("delivery.events_maxlen", 1_000_000),
        ("overrides.max_validity_seconds", 600),  # R-7.8
        ("overrides.max_clock_skew_seconds", 60),  # R-7.10
        ("overrides.operator_failures", 5),  # R-7.11
        ("overrides.operator_window_seconds", 900),
        ("overrides.operator_lockout_seconds", 900),
        ("overrides.global_failures", 20),
        ("overrides.global_window_seconds", 900),
        ("overrides.global_throttle_seconds", 10),
        ("overrides.kdf_iterations", 600_000),  # R-7.9
        ("overrides.min_password_length", 20),
    ],
)
def test_r11_1_default_policy_holds_the_spec_default(field: str, spec_default: object) -> None:
    assert dig(DEFAULT_POLICY, field) == spec_default


def test_r1_3_default_holidays_are_the_nyse_full_day_closures_of_2026_and_2027() -> None:
    holidays = DEFAULT_POLICY.calendar.holidays

    assert holidays == NYSE_HOLIDAYS_2026_2027
    assert len(holidays) == 20
    assert {date(2026, 11, 26), date(2026, 4, 3), date(2027, 3, 26), date(2027, 12, 24)} <= set(
        holidays
    )
    assert all(day.weekday() < 5 for day in holidays)


def test_r1_3_a_bare_calendar_policy_has_no_holidays_and_never_expires() -> None:
    assert CalendarPolicy().holidays == ()
    assert CalendarPolicy().holidays_valid_through is None


# --- every bad field named -----------------------------------------------------------------------


def test_r11_1_every_bad_field_is_named_in_one_error() -> None:
    text = """
currency = "usd"
auto_advance = "yes"
[calendar]
holidays = ["2026-13-01"]
session_open = "02:00"
timezone = "Mars/Olympus"
[gates.proof]
min_sessions = 0
min_win_rate = "1.2"
[gates.scaling]
max_drawdown = "-0.01"
[downgrade]
rolling_window = "20"
[overrides]
kdf_iterations = 0
"""
    assert refused_paths(text) == {
        "currency",
        "auto_advance",
        "calendar.holidays[0]",
        "calendar.session_open",
        "calendar.timezone",
        "gates.proof.min_sessions",
        "gates.proof.min_win_rate",
        "gates.scaling.max_drawdown",
        "downgrade.rolling_window",
        "overrides.kdf_iterations",
    }


def test_r11_1_policy_error_is_a_value_error_joining_its_problems() -> None:
    error = PolicyError(["a.b: bad", "c: worse"])

    assert isinstance(error, ValueError)
    assert error.problems == ("a.b: bad", "c: worse")
    assert str(error) == "a.b: bad; c: worse"


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("[gates.proof]\nmin_win_rate = 0.6\n", "gates.proof.min_win_rate"),
        ("[sizes]\nproof = 100.0\n", "sizes.proof"),
        ("[downgrade]\nmax_daily_loss = 5e-2\n", "downgrade.max_daily_loss"),
        ("[gates.trial]\nmin_trades = 50.0\n", "gates.trial.min_trades"),
    ],
)
def test_r2_1_toml_floats_are_refused_because_they_are_inexact(text: str, path: str) -> None:
    assert refused_paths(text) == {path}


def test_r2_1_the_float_refusal_tells_the_operator_to_write_a_string() -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_toml("[gates.proof]\nmin_win_rate = 0.6\n")

    assert '"0.60"' in caught.value.problems[0]


@pytest.mark.parametrize(
    ("text", "field", "expected"),
    [
        ('[gates.proof]\nmin_win_rate = "0.6"\n', "gates.proof.min_win_rate", Decimal("0.6")),
        ("[sizes]\nproof = 150\n", "sizes.proof", Decimal(150)),
        ('[sizes]\nproof = "150.25"\n', "sizes.proof", Decimal("150.25")),
    ],
)
def test_r2_1_decimals_are_read_exactly_from_strings_and_integers(
    text: str, field: str, expected: Decimal
) -> None:
    value = dig(load_policy_toml(text), field)

    assert value == expected
    assert str(value) == str(expected)


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("colour = 1\n", "colour"),
        ("[sizes]\nproof_size = 100\n", "sizes.proof_size"),
        ("[gates.experience]\nmin_days = 1\n", "gates.experience"),
        ("[limits]\nx = 1\n", "limits"),
    ],
)
def test_r11_1_unknown_keys_are_refused(text: str, path: str) -> None:
    assert refused_paths(text) == {path}


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('[sizes]\nmin_position_size = "-1"\n', "sizes.min_position_size"),
        ('[sizes]\nmax_position_fraction = "1.01"\n', "sizes.max_position_fraction"),
        ("[sizes]\nscaling_bonus = true\n", "sizes.scaling_bonus"),
        ('[sizes]\npaper_notional = "NaN"\n', "sizes.paper_notional"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts"),
        ("[delivery]\nfuture_tolerance_seconds = -1\n", "delivery.future_tolerance_seconds"),
        ("[overrides]\nmin_password_length = true\n", "overrides.min_password_length"),
        ('[gates]\nmax_non_regular_share = "2"\n', "gates.max_non_regular_share"),
        ('halt_on_unauthorized_entry = "true"\n', "halt_on_unauthorized_entry"),
    ],
)
def test_r11_1_out_of_range_or_mistyped_values_are_refused(text: str, path: str) -> None:
    assert refused_paths(text) == {path}


@pytest.mark.parametrize(
    ("text", "zero_allowed"),
    [
        ("[gates.proof]\nmax_override_incidents = 0\n", "gates.proof.max_override_incidents"),
        ("[gates.trial]\nmax_no_entry_run = 0\n", "gates.trial.max_no_entry_run"),
        ("[sizes]\nscaling_step = 0\n", "sizes.scaling_step"),
        ("[delivery]\nsession_close_grace_seconds = 0\n", "delivery.session_close_grace_seconds"),
    ],
)
def test_r11_1_zero_is_accepted_where_it_is_meaningful(text: str, zero_allowed: str) -> None:
    assert dig(load_policy_toml(text), zero_allowed) == 0


def test_r4_5_every_size_below_the_minimum_position_size_is_named() -> None:
    text = '[sizes]\nmin_position_size = "250"\n'

    assert refused_paths(text) == {"sizes.proof", "sizes.trial", "sizes.scaling_base"}


def test_r4_5_a_size_equal_to_the_minimum_is_accepted() -> None:
    policy = load_policy_toml('[sizes]\nmin_position_size = "100"\n')

    assert policy.sizes.min_position_size == policy.sizes.proof


def test_r11_1_cross_field_problems_are_reported_next_to_field_problems_elsewhere() -> None:
    text = '[sizes]\nmin_position_size = "3000"\n[delivery]\nmax_attempts = 0\n'

    assert refused_paths(text) == {
        "sizes.proof",
        "sizes.trial",
        "sizes.scaling_base",
        "sizes.max_position_size",
        "delivery.max_attempts",
    }


def test_r11_1_a_toml_syntax_error_is_a_policy_error() -> None:
    assert refused_paths("currency = \n") == {"toml"}


@pytest.mark.parametrize("currency", ["USD", "BTC", "USDT", "EUR", "USDC", "XAU2"])
def test_r5_1_currency_codes_are_accepted(currency: str) -> None:
    assert load_policy_toml(f'currency = "{currency}"\n').currency == currency


@pytest.mark.parametrize("currency", ["usd", "US", "ABCDEFGHIJK", "US D", "€UR", ""])
def test_r5_1_malformed_currency_codes_are_refused(currency: str) -> None:
    assert refused_paths(f'currency = "{currency}"\n') == {"currency"}


# --- calendar fields (R-1.3) ---------------------------------------------------------------------


@pytest.mark.parametrize("session_open", ["01:00", "01:30", "02:30", "03:00"])
def test_r1_3_session_open_between_1_and_3_is_refused(session_open: str) -> None:
    assert refused_paths(f'{CAL}session_open = "{session_open}"\n') == {"calendar.session_open"}


@pytest.mark.parametrize(
    ("session_open", "expected"),
    [("00:59", time(0, 59)), ("03:01", time(3, 1)), ("07:00", time(7, 0)), ("23:59", time(23, 59))],
)
def test_r1_3_session_open_outside_1_to_3_is_accepted(session_open: str, expected: time) -> None:
    assert load_policy_toml(f'{CAL}session_open = "{session_open}"\n').calendar.session_open == (
        expected
    )


def test_r1_3_session_open_may_be_a_toml_local_time() -> None:
    assert load_policy_toml(f"{CAL}session_open = 09:30:00\n").calendar.session_open == time(9, 30)


@pytest.mark.parametrize("session_open", ['"7am"', '"0700"', '"07:00+01:00"', "7"])
def test_r1_3_session_open_that_is_not_a_local_wall_time_is_refused(session_open: str) -> None:
    assert refused_paths(f"{CAL}session_open = {session_open}\n") == {"calendar.session_open"}


@pytest.mark.parametrize(
    ("timezone", "session_open"),
    [
        ("America/Havana", "00:30"),  # DST starts at midnight: 00:00-01:00 is skipped
        ("America/Santiago", "23:30"),  # DST ends at midnight: 23:00-24:00 is repeated
    ],
)
def test_r1_3_session_open_skipped_or_repeated_by_a_midnight_dst_change_is_refused(
    timezone: str, session_open: str
) -> None:
    text = f'{CAL}timezone = "{timezone}"\nsession_open = "{session_open}"\n'

    assert refused_paths(text) == {"calendar.session_open"}


@pytest.mark.parametrize("timezone", ["Europe/London", "Asia/Tokyo", "UTC", "America/Havana"])
def test_r1_3_other_iana_timezones_are_accepted_with_a_safe_open(timezone: str) -> None:
    assert load_policy_toml(f'{CAL}timezone = "{timezone}"\n').calendar.timezone == timezone


@pytest.mark.parametrize("timezone", ["Mars/Olympus", "EST5", "../etc/passwd", "", "+05:00"])
def test_r1_3_unknown_timezones_are_refused(timezone: str) -> None:
    assert refused_paths(f'{CAL}timezone = "{timezone}"\n') == {"calendar.timezone"}


@pytest.mark.parametrize(
    ("weekdays", "expected"),
    [
        ('"all"', (0, 1, 2, 3, 4, 5, 6)),
        ('["mon", "tue", "wed", "thu", "fri"]', (0, 1, 2, 3, 4)),
        ('["sun", "SAT"]', (5, 6)),
        ('["fri", "mon", "mon"]', (0, 4)),
    ],
)
def test_r1_3_weekdays_are_named_or_all_and_stored_as_sorted_python_numbers(
    weekdays: str, expected: tuple[int, ...]
) -> None:
    assert load_policy_toml(f"{CAL}weekdays = {weekdays}\n").calendar.weekdays == expected


@pytest.mark.parametrize("weekdays", ['["monday"]', "[]", '"weekdays"', "[0, 1]", '["mon", 1]'])
def test_r1_3_bad_weekdays_are_refused(weekdays: str) -> None:
    assert refused_paths(f"{CAL}weekdays = {weekdays}\n") == {"calendar.weekdays"}


def test_r1_3_holidays_may_be_toml_dates_or_strings() -> None:
    text = (
        '[calendar]\nholidays = [2026-11-26, "2026-12-25"]\nholidays_valid_through = 2026-12-31\n'
    )
    calendar = load_policy_toml(text).calendar

    assert calendar.holidays == (date(2026, 11, 26), date(2026, 12, 25))
    assert calendar.holidays_valid_through == date(2026, 12, 31)


def test_r1_3_holidays_are_stored_sorted_without_repeats() -> None:
    text = '[calendar]\nholidays = ["2026-12-25", "2026-11-26", "2026-12-25"]\n'

    assert load_policy_toml(text).calendar.holidays == (date(2026, 11, 26), date(2026, 12, 25))


@pytest.mark.parametrize(
    ("holiday", "path"),
    [
        ("2026-11-26T00:00:00", "calendar.holidays[0]"),
        ("20261126", "calendar.holidays[0]"),
        ('"26/11/2026"', "calendar.holidays[0]"),
        ('"2026-W48-4"', "calendar.holidays[0]"),
        ('"2026-02-30"', "calendar.holidays[0]"),
    ],
)
def test_r1_3_holidays_that_are_not_plain_dates_are_refused(holiday: str, path: str) -> None:
    assert refused_paths(f"[calendar]\nholidays = [{holiday}]\n") == {path}


def test_r1_3_a_calendar_table_without_holidays_is_refused_rather_than_dropping_them() -> None:
    assert refused_paths('[calendar]\ntimezone = "America/New_York"\n') == {"calendar.holidays"}


def test_r1_3_an_omitted_calendar_table_keeps_the_default_calendar() -> None:
    assert load_policy_toml("auto_advance = true\n").calendar == DEFAULT_POLICY.calendar


def test_r1_3_an_omitted_holidays_valid_through_never_expires() -> None:
    assert load_policy_toml(CAL).calendar.holidays_valid_through is None


# --- canonical JSON and version (R-11.1) --------------------------------------------------------

NON_DEFAULT = """
currency = "BTC"
auto_advance = true
[calendar]
timezone = "Europe/London"
session_open = "08:15"
weekdays = "all"
holidays = ["2026-12-25"]
[gates.proof]
min_win_rate = "0.625"
[sizes]
min_position_size = "0.0001"
proof = "0.01"
"""


@pytest.mark.parametrize("policy", [DEFAULT_POLICY, load_policy_toml(NON_DEFAULT)])
def test_r11_1_canonical_json_round_trips_to_an_equal_policy_with_the_same_version(
    policy: Policy,
) -> None:
    again = policy_from_json(policy.canonical_json())

    assert again == policy
    assert again.version == policy.version
    assert again.canonical_json() == policy.canonical_json()


def test_r11_1_canonical_json_is_sorted_compact_ascii_with_decimals_as_strings() -> None:
    text = DEFAULT_POLICY.canonical_json()
    data = json.loads(text)

    assert text == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert data["gates"]["proof"]["min_win_rate"] == "0.60"
    assert data["sizes"]["min_position_size"] == "10.00"
    assert data["calendar"]["session_open"] == "07:00:00"


def test_r11_1_version_is_sha256_prefixed_16_hex_digits() -> None:
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", DEFAULT_POLICY.version)


def test_r11_1_version_is_the_same_for_equal_policies_built_separately() -> None:
    assert Policy().version == load_policy_toml(default_file_text()).version


def test_r11_1_version_changes_when_a_threshold_changes() -> None:
    changed = load_policy_toml('[gates.proof]\nmin_win_rate = "0.61"\n')

    assert changed.version != DEFAULT_POLICY.version


def test_r11_1_version_keeps_a_decimal_as_written_so_0_6_and_0_60_differ() -> None:
    written_short = load_policy_toml('[gates.proof]\nmin_win_rate = "0.6"\n')

    assert written_short == DEFAULT_POLICY
    assert written_short.version != DEFAULT_POLICY.version


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("{", "json"),
        ("[]", "json"),
        ('{"currency": "USD", "extra": 1}', "extra"),
        ('{"gates": {"proof": {"min_win_rate": "0.6x"}}}', "gates.proof.min_win_rate"),
    ],
)
def test_r11_1_bad_policy_json_is_a_policy_error(text: str, path: str) -> None:
    with pytest.raises(PolicyError) as caught:
        policy_from_json(text)

    assert paths(caught.value) == {path}


def test_r2_1_a_json_number_is_read_exactly_not_through_a_binary_float() -> None:
    policy = policy_from_json('{"gates": {"proof": {"min_win_rate": 0.6}}}')

    assert policy.gates.proof.min_win_rate == Decimal("0.6")


def test_r11_1_policies_are_frozen() -> None:
    with pytest.raises(ValidationError):
        DEFAULT_POLICY.currency = "EUR"  # type: ignore[misc]


# --- replay profile and window capacities ------------------------------------------------------


def test_r11_2_replay_profile_advances_and_acknowledges_automatically_in_its_currency() -> None:
    replay = DEFAULT_POLICY.replay_profile("BTC")

    assert (replay.auto_advance, replay.auto_acknowledge_breaker, replay.currency) == (
        True,
        True,
        "BTC",
    )


def test_r11_2_replay_profile_keeps_every_other_setting() -> None:
    replay = DEFAULT_POLICY.replay_profile("BTC")
    expected = DEFAULT_POLICY.model_copy(
        update={"auto_advance": True, "auto_acknowledge_breaker": True, "currency": "BTC"}
    )

    assert replay == expected
    assert DEFAULT_POLICY.auto_advance is False


def test_r11_2_replay_profile_refuses_a_malformed_currency() -> None:
    with pytest.raises(PolicyError) as caught:
        DEFAULT_POLICY.replay_profile("btc")

    assert paths(caught.value) == {"currency"}


@pytest.mark.parametrize(
    ("text", "capacity"),
    [
        ("", 100),
        ("[gates.scaling]\nwindow_trades = 10\n", 50),
        ("[gates.trial]\nwindow_trades = 120\n", 120),
    ],
)
def test_r3_2_r3_3_trade_window_capacity_is_the_largest_trade_window(
    text: str, capacity: int
) -> None:
    assert load_policy_toml(text).trade_window_capacity == capacity


@pytest.mark.parametrize(
    ("text", "capacity"),
    [
        ("", 20),
        ("[sizes]\nscaling_bonus_sessions = 30\n", 30),
        ("[gates.proof]\nwindow_sessions = 25\n", 25),
    ],
)
def test_r3_1_r5_1_session_window_capacity_covers_the_proof_window_and_the_size_bonus(
    text: str, capacity: int
) -> None:
    assert load_policy_toml(text).session_window_capacity == capacity


def test_r11_1_a_copied_policy_with_changes_has_its_own_version() -> None:
    """A changed copy must never keep the original's cached version (it would not reload)."""
    changed = DEFAULT_POLICY.model_copy(update={"auto_advance": True})
    assert changed.auto_advance is True
    assert changed.version != DEFAULT_POLICY.version


def test_r11_1_a_copied_policy_is_validated() -> None:
    with pytest.raises(PolicyError):
        DEFAULT_POLICY.model_copy(update={"auto_advance": "yes"})
