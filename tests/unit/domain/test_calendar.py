"""Trading days and session opens in the market timezone (SPEC R-1.3, R-4.6, R-10.3)."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.domain.calendar import Calendar
from worker.domain.policy import DEFAULT_POLICY, CalendarPolicy

NY = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")

NYSE = Calendar(DEFAULT_POLICY.calendar)  # Mon-Fri with the NYSE 2026-2027 holidays
ALL_DAYS = Calendar(CalendarPolicy(weekdays=(0, 1, 2, 3, 4, 5, 6)))
LSE = Calendar(CalendarPolicy(timezone="Europe/London", session_open=time(8, 0)))


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ny(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=NY)


def d(text: str) -> date:
    return date.fromisoformat(text)


# --- session opens across DST (R-1.3) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "open_utc"),
    [
        ("2026-03-06", "2026-03-06T12:00"),  # Friday before DST starts (EST, UTC-5)
        ("2026-03-08", "2026-03-08T11:00"),  # the Sunday DST starts: 07:00 exists once, EDT
        ("2026-03-09", "2026-03-09T11:00"),  # Monday after (EDT, UTC-4)
        ("2026-10-30", "2026-10-30T11:00"),  # Friday before DST ends (EDT)
        ("2026-11-01", "2026-11-01T12:00"),  # the Sunday DST ends: back to EST
        ("2026-11-02", "2026-11-02T12:00"),  # Monday after (EST)
    ],
)
def test_r1_3_session_open_stays_0700_local_while_its_utc_offset_follows_dst(
    day: str, open_utc: str
) -> None:
    opened = NYSE.session_open(d(day))

    assert (opened.hour, opened.minute, opened.tzinfo) == (7, 0, NY)
    assert opened == utc(open_utc)


@pytest.mark.parametrize(
    ("day", "open_utc"),
    [
        ("2026-03-27", "2026-03-27T08:00"),  # London still on GMT (UK DST starts 2026-03-29)
        ("2026-03-30", "2026-03-30T07:00"),  # BST
        ("2026-10-23", "2026-10-23T07:00"),  # BST (UK DST ends 2026-10-25)
        ("2026-10-26", "2026-10-26T08:00"),  # GMT
    ],
)
def test_r1_3_a_london_calendar_follows_the_uk_dst_dates(day: str, open_utc: str) -> None:
    assert LSE.session_open(d(day)) == utc(open_utc)


def test_r1_3_a_london_calendar_keeps_its_own_zone() -> None:
    assert LSE.tz == LONDON
    assert LSE.session_open(d("2026-03-30")).tzinfo == LONDON


@pytest.mark.parametrize(
    ("instant", "day"),
    [
        ("2026-03-16T07:59", "2026-03-13"),  # GMT: New York is already on DST, London not
        ("2026-03-16T08:00", "2026-03-16"),
        ("2026-03-30T06:59", "2026-03-27"),  # BST: open is 07:00Z
        ("2026-03-30T07:00", "2026-03-30"),
    ],
)
def test_r1_3_a_london_calendar_assigns_instants_by_london_opens(instant: str, day: str) -> None:
    assert LSE.trading_day(utc(instant)) == d(day)


# --- which trading day an instant belongs to (R-1.3) ---------------------------------------------


@pytest.mark.parametrize(
    ("instant", "day"),
    [
        ("2026-03-09T10:59:59", "2026-03-06"),  # Monday 06:59:59 EDT still Friday's session
        ("2026-03-09T11:00:00", "2026-03-09"),  # Monday 07:00 EDT opens Monday
        ("2026-03-07T17:00:00", "2026-03-06"),  # Saturday noon EST belongs to Friday
        ("2026-03-08T12:00:00", "2026-03-06"),  # the DST Sunday belongs to Friday
        ("2026-11-02T11:59:59", "2026-10-30"),  # Monday 06:59:59 EST
        ("2026-11-02T12:00:00", "2026-11-02"),  # Monday 07:00 EST
        ("2026-11-01T06:30:00", "2026-10-30"),  # 01:30 EDT, the first of the repeated hour
        ("2026-11-01T07:30:00", "2026-10-30"),  # 01:30 EST, the second one
        ("2026-03-10T03:00:00", "2026-03-09"),  # Monday 23:00 EDT
    ],
)
def test_r1_3_trading_day_is_the_latest_trading_day_opened_at_or_before_the_instant(
    instant: str, day: str
) -> None:
    assert NYSE.trading_day(utc(instant)) == d(day)


def test_r1_3_trading_day_does_not_depend_on_the_instants_own_zone() -> None:
    instant = utc("2026-03-09T10:59:59")

    assert NYSE.trading_day(instant.astimezone(ZoneInfo("Asia/Tokyo"))) == d("2026-03-06")


@pytest.mark.parametrize("method", ["trading_day", "next_open_after"])
def test_r1_3_naive_datetimes_are_refused(method: str) -> None:
    naive = datetime.fromisoformat("2026-03-09T07:00")

    with pytest.raises(ValueError, match="naive"):
        getattr(NYSE, method)(naive)


def test_r1_3_a_datetime_where_a_date_is_expected_is_refused() -> None:
    with pytest.raises(TypeError):
        NYSE.is_trading_day(ny("2026-03-09T07:00"))


# --- next_allowed_at (R-4.6) ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "next_open_utc"),
    [
        ("2026-03-06T09:30", "2026-03-09T11:00"),  # Friday EST -> Monday 07:00 EDT
        ("2026-10-30T09:30", "2026-11-02T12:00"),  # Friday EDT -> Monday 07:00 EST
        ("2026-05-13T09:30", "2026-05-14T11:00"),  # an ordinary Wednesday -> Thursday
        ("2026-05-14T06:59", "2026-05-14T11:00"),  # before Thursday's open: still Wednesday's day
        ("2026-11-25T09:30", "2026-11-27T12:00"),  # Wednesday before Thanksgiving -> Friday
    ],
)
def test_r4_6_next_open_after_an_entry_is_the_next_trading_days_open(
    entry: str, next_open_utc: str
) -> None:
    after = NYSE.next_open_after(ny(entry))

    assert after == utc(next_open_utc)
    assert (after.tzinfo, after.hour, after.minute) == (NY, 7, 0)


# --- holidays and weekdays (R-1.3) ---------------------------------------------------------------


def test_r1_3_thanksgiving_is_not_a_trading_day() -> None:
    assert not NYSE.is_trading_day(d("2026-11-26"))


def test_r1_3_the_session_before_thanksgiving_runs_to_fridays_open() -> None:
    assert NYSE.session_end(d("2026-11-25")) == ny("2026-11-27T07:00")


def test_r1_3_thanksgiving_noon_belongs_to_wednesdays_session() -> None:
    assert NYSE.trading_day(ny("2026-11-26T12:00")) == d("2026-11-25")


@pytest.mark.parametrize(
    ("day", "trading"),
    [
        ("2026-03-07", False),  # Saturday
        ("2026-03-08", False),  # Sunday
        ("2026-03-09", True),
        ("2026-04-03", False),  # Good Friday
        ("2026-07-03", False),  # Independence Day observed
        ("2027-12-24", False),  # Christmas observed
        ("2027-12-31", True),  # NYSE does not close for New Year's Day on a Saturday
    ],
)
def test_r1_3_trading_days_are_policy_weekdays_that_are_not_holidays(
    day: str, trading: bool
) -> None:
    assert NYSE.is_trading_day(d(day)) is trading


def test_r1_3_with_all_weekdays_saturday_is_a_trading_day() -> None:
    assert ALL_DAYS.is_trading_day(d("2026-03-07"))


def test_r1_3_with_all_weekdays_saturday_noon_belongs_to_saturday() -> None:
    assert ALL_DAYS.trading_day(ny("2026-03-07T12:00")) == d("2026-03-07")


def test_r1_3_with_all_weekdays_fridays_session_ends_at_saturdays_open() -> None:
    assert ALL_DAYS.session_end(d("2026-03-06")) == ny("2026-03-07T07:00")


@pytest.mark.parametrize(
    ("day", "hours"),
    [("2026-03-07", 23), ("2026-03-08", 24), ("2026-10-31", 25), ("2026-11-01", 24)],
)
def test_r1_3_with_all_weekdays_a_session_spanning_a_dst_change_is_23_or_25_hours_long(
    day: str, hours: int
) -> None:
    # Python subtracts two datetimes of the same zone by wall clock; elapsed time needs UTC.
    start, end = ALL_DAYS.session_open(d(day)), ALL_DAYS.session_end(d(day))
    session = end.astimezone(UTC) - start.astimezone(UTC)

    assert session == timedelta(hours=hours)


def test_r1_3_a_calendar_without_any_trading_day_in_reach_raises() -> None:
    mondays = tuple(d("2026-01-05") + timedelta(weeks=n) for n in range(60))
    only_holiday_mondays = Calendar(CalendarPolicy(weekdays=(0,), holidays=mondays))

    with pytest.raises(ValueError, match="no trading day"):
        only_holiday_mondays.next_trading_day(d("2026-01-01"))


# --- stepping and counting (R-10.3, R-3.5) -------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "following", "preceding"),
    [
        ("2026-03-06", "2026-03-09", "2026-03-05"),  # Friday
        ("2026-03-07", "2026-03-09", "2026-03-06"),  # Saturday
        ("2026-11-25", "2026-11-27", "2026-11-24"),  # before Thanksgiving
        ("2026-11-27", "2026-11-30", "2026-11-25"),  # after Thanksgiving
    ],
)
def test_r1_3_next_and_previous_trading_days_are_strictly_after_and_before(
    day: str, following: str, preceding: str
) -> None:
    assert (NYSE.next_trading_day(d(day)), NYSE.previous_trading_day(d(day))) == (
        d(following),
        d(preceding),
    )


@pytest.mark.parametrize(
    ("day", "n", "expected"),
    [
        ("2026-03-06", 0, "2026-03-06"),
        ("2026-03-07", 0, "2026-03-07"),  # n == 0 returns the day even when it is not trading
        ("2026-11-25", 1, "2026-11-27"),
        ("2026-11-27", -1, "2026-11-25"),
        ("2026-03-07", 1, "2026-03-09"),
        ("2026-03-07", -1, "2026-03-06"),
        ("2026-12-24", 2, "2026-12-29"),  # over Christmas and a weekend
        ("2026-01-05", -3, "2025-12-30"),  # over New Year's Day
        ("2026-11-30", -5, "2026-11-20"),  # five trading days back over Thanksgiving
    ],
)
def test_r10_3_add_trading_days_steps_over_weekends_and_holidays(
    day: str, n: int, expected: str
) -> None:
    assert NYSE.add_trading_days(d(day), n) == d(expected)


@pytest.mark.parametrize(
    ("a", "b", "count"),
    [
        ("2026-11-23", "2026-11-30", 4),  # Thanksgiving week
        ("2026-11-23", "2026-11-23", 0),
        ("2026-11-30", "2026-11-23", 0),
        ("2026-03-07", "2026-03-09", 0),  # a weekend
        ("2026-01-01", "2027-01-01", 251),  # NYSE 2026
        ("2027-01-01", "2028-01-01", 251),  # NYSE 2027
    ],
)
def test_r3_5_trading_days_between_counts_half_open_ranges(a: str, b: str, count: int) -> None:
    assert NYSE.trading_days_between(d(a), d(b)) == count


def test_r1_3_opens_start_at_the_first_trading_day_on_or_after_the_start_day() -> None:
    assert NYSE.opens(d("2026-11-26"), 3) == [
        ny("2026-11-27T07:00"),
        ny("2026-11-30T07:00"),
        ny("2026-12-01T07:00"),
    ]


def test_r1_3_opens_include_the_start_day_when_it_is_trading() -> None:
    assert NYSE.opens(d("2026-11-25"), 1) == [ny("2026-11-25T07:00")]


def test_r1_3_four_hundred_opens_are_strictly_increasing_trading_day_opens() -> None:
    opens = NYSE.opens(d("2026-01-01"), 400)

    assert len(opens) == 400
    assert all(a < b for a, b in itertools.pairwise(opens))
    assert all(NYSE.is_trading_day(o.date()) and o.hour == 7 for o in opens)


def test_r1_3_zero_opens_is_an_empty_list() -> None:
    assert NYSE.opens(d("2026-01-01"), 0) == []


def test_r1_3_a_negative_count_of_opens_is_refused() -> None:
    with pytest.raises(ValueError, match="count"):
        NYSE.opens(d("2026-01-01"), -1)


# --- holiday list expiry (R-1.3) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "status"),
    [
        ("2027-11-30", "ok"),  # 31 days before 2027-12-31
        ("2027-12-01", "warning"),  # 30 days before
        ("2027-12-31", "warning"),  # the last valid day
        ("2028-01-01", "expired"),  # the day after
    ],
)
def test_r1_3_holidays_status_warns_30_days_before_and_expires_after_valid_through(
    today: str, status: str
) -> None:
    assert NYSE.holidays_status(d(today)) == status


def test_r1_3_holidays_without_valid_through_never_expire() -> None:
    assert ALL_DAYS.holidays_status(d("2999-01-01")) == "ok"


# --- every instant belongs to exactly one trading day (R-1.3) -------------------------------------

SECONDS_2024_TO_2028 = st.integers(
    min_value=int(datetime(2024, 1, 1, tzinfo=UTC).timestamp()),
    max_value=int(datetime(2029, 1, 1, tzinfo=UTC).timestamp()) - 1,
)
ANY_ZONE = st.sampled_from([UTC, NY, LONDON, ZoneInfo("Asia/Tokyo")])


@pytest.mark.parametrize("calendar", [NYSE, ALL_DAYS, LSE], ids=["mon-fri", "all", "london"])
@given(seconds=SECONDS_2024_TO_2028, zone=ANY_ZONE)
def test_r1_3_every_instant_belongs_to_exactly_one_trading_day(
    calendar: Calendar, seconds: int, zone: ZoneInfo
) -> None:
    instant = datetime.fromtimestamp(seconds, tz=zone)
    day = calendar.trading_day(instant)

    assert calendar.is_trading_day(day)
    assert calendar.session_open(day) <= instant < calendar.session_end(day)


@pytest.mark.parametrize("calendar", [NYSE, ALL_DAYS], ids=["mon-fri", "all"])
@given(seconds=SECONDS_2024_TO_2028)
def test_r4_6_next_open_after_is_the_end_of_the_instants_session(
    calendar: Calendar, seconds: int
) -> None:
    instant = datetime.fromtimestamp(seconds, tz=UTC)

    assert calendar.next_open_after(instant) == calendar.session_end(calendar.trading_day(instant))


@given(
    start=st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31)),
    span=st.integers(min_value=-30, max_value=800),
)
def test_r3_5_trading_days_between_matches_counting_day_by_day(start: date, span: int) -> None:
    end = start + timedelta(days=span)
    by_hand = sum(1 for i in range(max(span, 0)) if NYSE.is_trading_day(start + timedelta(days=i)))

    assert NYSE.trading_days_between(start, end) == by_hand


@given(
    start=st.dates(min_value=date(2024, 1, 1), max_value=date(2028, 12, 31)),
    n=st.integers(min_value=0, max_value=300),
)
def test_r10_3_adding_n_trading_days_to_a_trading_day_spans_n_trading_days(
    start: date, n: int
) -> None:
    day = start if NYSE.is_trading_day(start) else NYSE.next_trading_day(start)

    assert NYSE.trading_days_between(day, NYSE.add_trading_days(day, n)) == n
