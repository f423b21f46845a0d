"""Trading-day and session-open arithmetic in the market timezone (SPEC R-1.3).

The session of trading day D runs from D's open to the next trading day's open, so every instant
belongs to exactly one trading day. Wall times are resolved by the timezone database (zoneinfo),
never by fixed offsets; every datetime in and out is timezone-aware. Returned datetimes carry the
market zone, and Python subtracts and adds datetimes of one zone by wall clock: convert to UTC
before measuring elapsed time across a DST change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from worker.domain.policy import CalendarPolicy

__all__ = ["HOLIDAY_WARNING_DAYS", "SCAN_LIMIT_DAYS", "Calendar"]

# How far next/previous_trading_day look before giving up: more than a year without a trading day
# is a broken holiday list, not a market.
SCAN_LIMIT_DAYS = 400
# warn from this many days before holidays_valid_through.
HOLIDAY_WARNING_DAYS = 30

_ONE_DAY = timedelta(days=1)


def _require_aware(instant: datetime) -> None:
    if instant.tzinfo is None or instant.utcoffset() is None:
        raise ValueError(f"naive datetime {instant.isoformat()}: an offset or zone is required")


def _require_date(day: date) -> None:
    # datetime subclasses date; accepting one would silently drop its time and zone.
    if isinstance(day, datetime):
        raise TypeError(f"expected a date, got the datetime {day.isoformat()}")


@dataclass(frozen=True, slots=True)
class Calendar:
    """The market calendar of one policy: `Calendar(policy.calendar)`."""

    policy: CalendarPolicy
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)
    _weekdays: frozenset[int] = field(init=False, repr=False, compare=False)
    _holidays: frozenset[date] = field(init=False, repr=False, compare=False)
    _open: time = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: derived lookups are set once here, through object.__setattr__.
        object.__setattr__(self, "_tz", ZoneInfo(self.policy.timezone))
        object.__setattr__(self, "_weekdays", frozenset(self.policy.weekdays))
        object.__setattr__(self, "_holidays", frozenset(self.policy.holidays))
        object.__setattr__(self, "_open", self.policy.session_open)

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    def is_trading_day(self, day: date) -> bool:
        _require_date(day)
        return self._is_trading(day)

    def session_open(self, day: date) -> datetime:
        """`day` at the session-open wall time in the market timezone, trading day or not."""
        _require_date(day)
        # The policy refuses open times that DST skips or repeats, so fold=0 is the only reading.
        return datetime.combine(day, self._open, tzinfo=self._tz)

    def next_trading_day(self, day: date) -> date:
        """The first trading day strictly after `day`."""
        _require_date(day)
        return self._step(day, 1)

    def previous_trading_day(self, day: date) -> date:
        """The last trading day strictly before `day`."""
        _require_date(day)
        return self._step(day, -1)

    def add_trading_days(self, day: date, n: int) -> date:
        """The n-th trading day after (n > 0) or before (n < 0) `day`; `day` itself when n == 0."""
        _require_date(day)
        direction: Literal[1, -1] = 1 if n > 0 else -1
        for _ in range(abs(n)):
            day = self._step(day, direction)
        return day

    def trading_day(self, instant: datetime) -> date:
        """The trading day whose session holds `instant`: the latest D with open(D) <= instant."""
        _require_aware(instant)
        day = instant.astimezone(self._tz).date()
        if self._is_trading(day) and self.session_open(day) <= instant:
            return day
        # Before today's open, or not a trading day: still inside an earlier day's session, whose
        # open falls on an earlier local date and so is certainly before the instant.
        return self._step(day, -1)

    def session_end(self, day: date) -> datetime:
        """Where the session of `day` ends: the next trading day's open."""
        return self.session_open(self.next_trading_day(day))

    def next_open_after(self, instant: datetime) -> datetime:
        """The open of the trading day after the one holding `instant` (R-4.6 next_allowed_at)."""
        return self.session_end(self.trading_day(instant))

    def opens(self, start_day: date, count: int) -> list[datetime]:
        """Opens of `count` consecutive trading days from the first trading day >= `start_day`."""
        _require_date(start_day)
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        day = start_day if self._is_trading(start_day) else self._step(start_day, 1)
        result: list[datetime] = []
        for _ in range(count):
            result.append(self.session_open(day))
            day = self._step(day, 1)
        return result

    def trading_days_between(self, a: date, b: date) -> int:
        """How many trading days d satisfy a <= d < b (0 when b <= a)."""
        _require_date(a)
        _require_date(b)
        if b <= a:
            return 0
        # Whole weeks by arithmetic, so long spans (epochs of years) stay cheap.
        weeks, rest = divmod((b - a).days, 7)
        count = weeks * len(self._weekdays)
        count += sum(1 for i in range(rest) if (a.weekday() + i) % 7 in self._weekdays)
        count -= sum(1 for h in self._holidays if a <= h < b and h.weekday() in self._weekdays)
        return count

    def holidays_status(self, today: date) -> Literal["ok", "warning", "expired"]:
        """R-1.3: "warning" from 30 days before holidays_valid_through, "expired" after it."""
        _require_date(today)
        through = self.policy.holidays_valid_through
        if through is None:
            return "ok"
        if today > through:
            return "expired"
        if today >= through - timedelta(days=HOLIDAY_WARNING_DAYS):
            return "warning"
        return "ok"

    def _is_trading(self, day: date) -> bool:
        return day.weekday() in self._weekdays and day not in self._holidays

    def _step(self, day: date, direction: Literal[1, -1]) -> date:
        step = _ONE_DAY * direction
        candidate = day
        for _ in range(SCAN_LIMIT_DAYS):
            candidate += step
            if self._is_trading(candidate):
                return candidate
        where = "after" if direction > 0 else "before"
        raise ValueError(f"no trading day within {SCAN_LIMIT_DAYS} days {where} {day}")
