"""The validated policy (SPEC §11): thresholds, windows, sizes and calendar, SPEC defaults.

Owns the policy models, their TOML and canonical-JSON forms and the policy version. Pure: callers
read files and pass the text in.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cached_property, lru_cache
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

__all__ = [
    "DEFAULT_POLICY",
    "NYSE_HOLIDAYS_2026_2027",
    "CalendarPolicy",
    "DeliveryPolicy",
    "DowngradePolicy",
    "GateProofPolicy",
    "GateScalingPolicy",
    "GateTrialPolicy",
    "GatesPolicy",
    "OverridePolicy",
    "Policy",
    "PolicyError",
    "SizePolicy",
    "load_policy_toml",
    "policy_from_json",
]


class PolicyError(ValueError):
    """A policy that cannot be used; `problems` names every bad field as "dotted.path: what"."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__("; ".join(self.problems))


class _FieldProblems(ValueError):
    """Raised by cross-field validators so each offending field keeps its own path."""

    def __init__(self, problems: Iterable[tuple[str, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{name}: {what}" for name, what in self.problems))


# --- field types -------------------------------------------------------------------------------


def _exact_decimal(value: object) -> object:
    # A binary float cannot hold 0.6 exactly and criteria compare exact values, so a
    # threshold is written as a string or an integer.
    if isinstance(value, float):
        raise ValueError('use a string, e.g. "0.60", floats are inexact')
    if isinstance(value, bool):  # bool is an int subclass; True is never a meant threshold
        raise ValueError("expected a decimal, got a boolean")
    return value


def _plain_date(value: object) -> object:
    # Refuse datetimes (a date subclass) and integers (pydantic would read a Unix timestamp).
    if isinstance(value, datetime):
        raise ValueError("expected a date YYYY-MM-DD, got a date-time")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            # fromisoformat alone would also take week dates and "20261126".
            if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        raise ValueError(f"expected a date YYYY-MM-DD, got {value!r}")
    raise ValueError("expected a date YYYY-MM-DD")


def _optional_plain_date(value: object) -> object:
    return None if value is None else _plain_date(value)


def _wall_time(value: object) -> object:
    if isinstance(value, str):
        try:
            # HH:MM or HH:MM:SS (canonical JSON); not "0700" or offsets, which fromisoformat takes.
            if not re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", value):
                raise ValueError(value)
            value = time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"expected a time HH:MM, got {value!r}") from None
    if not isinstance(value, time):
        raise ValueError("expected a time HH:MM")
    if value.tzinfo is not None:
        raise ValueError("give a local wall-clock time without an offset; the timezone decides it")
    return value


_WEEKDAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _weekday_numbers(value: object) -> object:
    if value == "all":
        return tuple(range(7))
    if isinstance(value, list | tuple):
        numbers: list[object] = []
        for item in value:
            if isinstance(item, str):
                if item.lower() not in _WEEKDAY_NAMES:
                    raise ValueError(f"unknown weekday {item!r}; use {', '.join(_WEEKDAY_NAMES)}")
                numbers.append(_WEEKDAY_NAMES.index(item.lower()))
            else:
                numbers.append(item)
        return tuple(numbers)
    return value


Fraction = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(ge=0, le=1)]
NonNegDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(ge=0)]
PosDecimal = Annotated[Decimal, BeforeValidator(_exact_decimal), Field(gt=0)]
Count = Annotated[StrictInt, Field(ge=1)]
NonNegInt = Annotated[StrictInt, Field(ge=0)]
PlainDate = Annotated[date, BeforeValidator(_plain_date)]
Weekday = Annotated[StrictInt, Field(ge=0, le=6)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- calendar (R-1.3) --------------------------------------------------------------------------

# DST rules are only known for the future as far as the timezone database reaches; a century from
# 2020 covers any policy this worker will run.
_DST_SCAN = (date(2020, 1, 6), date(2120, 1, 1))  # starts on a Monday


@lru_cache(maxsize=64)
def _unstable_open(zone: str, at: time) -> date | None:
    """The first day on which `at` is skipped or repeated in `zone`, else None.

    Samples the offset weekly and looks at single days only in weeks where it changed, so a
    century costs about ten milliseconds, once per (zone, time); no real zone changes its offset
    twice within a week.
    """
    tz = ZoneInfo(zone)
    week = timedelta(days=7)
    start, end = _DST_SCAN
    while start < end:
        before = datetime.combine(start, time(12), tzinfo=tz).utcoffset()
        after = datetime.combine(start + week, time(12), tzinfo=tz).utcoffset()
        if before != after:
            for offset in range(8):
                day = start + timedelta(days=offset)
                local = datetime.combine(day, at, tzinfo=tz)
                # PEP 495: fold=1 differs from fold=0 exactly when the wall time is skipped or
                # repeated.
                if local.replace(fold=1).utcoffset() != local.utcoffset():
                    return day
        start += week
    return None


class CalendarPolicy(_Frozen):
    """The market calendar (R-1.3). Weekdays use Python numbering: Monday 0 … Sunday 6."""

    timezone: StrictStr = "America/New_York"
    session_open: Annotated[time, BeforeValidator(_wall_time)] = time(7, 0)
    weekdays: Annotated[tuple[Weekday, ...], BeforeValidator(_weekday_numbers)] = (0, 1, 2, 3, 4)
    holidays: tuple[PlainDate, ...] = ()
    # None: no expiry, never warns.
    holidays_valid_through: Annotated[date | None, BeforeValidator(_optional_plain_date)] = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA timezone {value!r}") from None
        return value

    @field_validator("session_open")
    @classmethod
    def _not_in_dst_hours(cls, value: time) -> time:
        if time(1, 0) <= value <= time(3, 0):
            raise ValueError("01:00 to 03:00 is refused: DST can skip or repeat it")
        return value

    @field_validator("weekdays")
    @classmethod
    def _some_weekdays(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value:
            raise ValueError("at least one trading weekday is required")
        return tuple(sorted(set(value)))  # canonical, so order never changes the version

    @field_validator("holidays")
    @classmethod
    def _sorted_holidays(cls, value: tuple[date, ...]) -> tuple[date, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _open_exists_once_every_day(self) -> Self:
        # The 01:00-03:00 rule covers US and EU rules; zones that change at midnight need this.
        day = _unstable_open(self.timezone, self.session_open)
        if day is not None:
            raise _FieldProblems(
                [
                    (
                        "session_open",
                        f"{self.session_open.isoformat('minutes')} is skipped or repeated in "
                        f"{self.timezone} on {day} (DST change); choose another time",
                    )
                ]
            )
        return self


# NYSE full-day closures (early closes are ordinary sessions here). 2028-01-01 is a Saturday and
# NYSE does not close on Friday 2027-12-31 for it.
NYSE_HOLIDAYS_2026_2027: tuple[date, ...] = (
    date(2026, 1, 1),  # New Year's Day
    date(2026, 1, 19),  # Martin Luther King Jr. Day
    date(2026, 2, 16),  # Washington's Birthday
    date(2026, 4, 3),  # Good Friday
    date(2026, 5, 25),  # Memorial Day
    date(2026, 6, 19),  # Juneteenth
    date(2026, 7, 3),  # Independence Day (observed)
    date(2026, 9, 7),  # Labor Day
    date(2026, 11, 26),  # Thanksgiving
    date(2026, 12, 25),  # Christmas
    date(2027, 1, 1),  # New Year's Day
    date(2027, 1, 18),  # Martin Luther King Jr. Day
    date(2027, 2, 15),  # Washington's Birthday
    date(2027, 3, 26),  # Good Friday
    date(2027, 5, 31),  # Memorial Day
    date(2027, 6, 18),  # Juneteenth (observed)
    date(2027, 7, 5),  # Independence Day (observed)
    date(2027, 9, 6),  # Labor Day
    date(2027, 11, 25),  # Thanksgiving
    date(2027, 12, 24),  # Christmas (observed)
)


def _nyse_calendar() -> CalendarPolicy:
    return CalendarPolicy(
        holidays=NYSE_HOLIDAYS_2026_2027, holidays_valid_through=date(2027, 12, 31)
    )


# --- gates (R-3.x) -----------------------------------------------------------------------------


class GateProofPolicy(_Frozen):
    """experience -> proof (R-3.1)."""

    min_sessions: Count = 20
    window_sessions: Count = 20
    min_win_rate: Fraction = Decimal("0.60")
    min_rr: NonNegDecimal = Decimal("1.5")
    max_override_incidents: NonNegInt = 0


class GateTrialPolicy(_Frozen):
    """proof -> trial (R-3.2)."""

    min_days: Count = 30
    min_trades: Count = 50
    window_trades: Count = 50
    min_win_rate: Fraction = Decimal("0.65")
    min_rr: NonNegDecimal = Decimal("1.8")
    max_no_entry_run: NonNegInt = 3


class GateScalingPolicy(_Frozen):
    """trial -> scaling (R-3.3)."""

    min_days: Count = 60
    min_trades: Count = 100
    window_trades: Count = 100
    min_win_rate: Fraction = Decimal("0.70")
    min_rr: NonNegDecimal = Decimal("2.0")
    max_drawdown: Fraction = Decimal("0.05")  # strict: drawdown < max_drawdown


class GatesPolicy(_Frozen):
    proof: GateProofPolicy = Field(default_factory=GateProofPolicy)
    trial: GateTrialPolicy = Field(default_factory=GateTrialPolicy)
    scaling: GateScalingPolicy = Field(default_factory=GateScalingPolicy)
    max_non_regular_share: Fraction = Decimal("0.10")  # fails strictly above


# --- sizes, downgrades, delivery, overrides ------------------------------------------------------


class SizePolicy(_Frozen):
    """Position sizes in the account currency (R-5.x, R-4.10, R-11.2)."""

    proof: PosDecimal = Decimal("100")
    trial: PosDecimal = Decimal("200")
    scaling_base: PosDecimal = Decimal("200")
    scaling_step: NonNegDecimal = Decimal("100")
    scaling_step_wins: Count = 5
    scaling_bonus: NonNegDecimal = Decimal("200")
    scaling_bonus_win_rate: Fraction = Decimal("0.70")
    scaling_bonus_sessions: Count = 10
    max_position_fraction: Fraction = Decimal("0.05")
    max_position_size: PosDecimal = Decimal("2000")
    min_position_size: PosDecimal = Decimal("10.00")
    reduction_fraction: Fraction = Decimal("0.5")
    paper_notional: PosDecimal = Decimal("100")
    unauthorized_size_tolerance: Fraction = Decimal("0.01")

    @model_validator(mode="after")
    def _sizes_reach_the_minimum(self) -> Self:
        # A phase whose base size is below the minimum could never enter: a typo, not a
        # policy. The reduction may go below it on purpose, so it is not checked.
        names = ("proof", "trial", "scaling_base", "max_position_size")
        low = [
            (name, f"{getattr(self, name)} is below min_position_size {self.min_position_size}")
            for name in names
            if getattr(self, name) < self.min_position_size
        ]
        if low:
            raise _FieldProblems(low)
        return self


class DowngradePolicy(_Frozen):
    """Automatic downgrade triggers (R-6.1)."""

    max_consecutive_losses: Count = 3  # fires at >=
    rolling_window: Count = 20
    min_rolling_win_rate: Fraction = Decimal("0.55")  # fires strictly below
    max_daily_loss: Fraction = Decimal("0.05")  # fires strictly above; trial and scaling only


class DeliveryPolicy(_Frozen):
    """Delivery, ordering and retention (R-10.x, R-4.10 ledger)."""

    too_late_trading_days: Count = 5
    future_tolerance_seconds: NonNegInt = 120
    session_close_grace_seconds: NonNegInt = 900
    max_attempts: Count = 5
    decision_retention_days: Count = 30
    inbox_retention_seconds: Count = 86400
    events_maxlen: Count = 1_000_000


class OverridePolicy(_Frozen):
    """Signed operator requests (R-7.8 … R-7.11)."""

    max_validity_seconds: Count = 600
    max_clock_skew_seconds: NonNegInt = 60
    operator_failures: Count = 5  # locks at more than this many
    operator_window_seconds: Count = 900
    operator_lockout_seconds: Count = 900
    global_failures: Count = 20
    global_window_seconds: Count = 900
    global_throttle_seconds: NonNegInt = 10
    kdf_iterations: Count = 600_000
    min_password_length: Count = 20


# --- the policy --------------------------------------------------------------------------------


class Policy(_Frozen):
    """The whole policy; `Policy()` is the SPEC default."""

    currency: StrictStr = "USD"
    auto_advance: StrictBool = False
    halt_on_unauthorized_entry: StrictBool = True
    auto_acknowledge_breaker: StrictBool = False  # the replay profile only
    calendar: CalendarPolicy = Field(default_factory=_nyse_calendar)
    gates: GatesPolicy = Field(default_factory=GatesPolicy)
    sizes: SizePolicy = Field(default_factory=SizePolicy)
    downgrade: DowngradePolicy = Field(default_factory=DowngradePolicy)
    delivery: DeliveryPolicy = Field(default_factory=DeliveryPolicy)
    overrides: OverridePolicy = Field(default_factory=OverridePolicy)

    @field_validator("currency")
    @classmethod
    def _currency_code(cls, value: str) -> str:
        if re.fullmatch(r"[A-Z0-9]{3,10}", value) is None:
            raise ValueError("3 to 10 uppercase letters or digits, e.g. USD, BTC, USDT")
        return value

    def canonical_json(self) -> str:
        """Sorted, compact, ASCII JSON; decimals are strings exactly as written ("0.60" stays)."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        )

    @cached_property
    def version(self) -> str:
        """Recorded with every transition (R-11.1); changes with any byte of the canonical form."""
        digest = hashlib.sha256(self.canonical_json().encode("ascii")).hexdigest()
        return f"sha256:{digest[:16]}"

    def model_copy(self, *, update: Mapping[str, Any] | None = None,
                   deep: bool = False) -> Policy:
        """A validated copy: pydantic's would carry over the cached `version` and skip checks,
        so a changed policy could masquerade as the old one and never be reloaded."""
        _ = deep  # a re-validated copy shares nothing mutable with the original
        return _validated(self.model_dump() | dict(update or {}))

    def replay_profile(self, currency: str) -> Policy:
        """The replay accounts' policy (R-11.2): auto-advance, auto-acknowledge, own currency."""
        changes = {"auto_advance": True, "auto_acknowledge_breaker": True, "currency": currency}
        return _validated(self.model_dump() | changes)

    @property
    def trade_window_capacity(self) -> int:
        """Trades the engine must keep for the largest trade window (R-3.2, R-3.3)."""
        return max(self.gates.trial.window_trades, self.gates.scaling.window_trades)

    @property
    def session_window_capacity(self) -> int:
        """Sessions the engine must keep for the largest session window (R-3.1, R-5.1)."""
        return max(self.gates.proof.window_sessions, self.sizes.scaling_bonus_sessions)


DEFAULT_POLICY: Policy = Policy()


# --- loading -----------------------------------------------------------------------------------


def _path(loc: Iterable[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else part)
    return path


def _problems(exc: ValidationError) -> list[str]:
    problems: list[str] = []
    for error in exc.errors():
        path = _path(error["loc"])
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, _FieldProblems):
            problems.extend(
                f"{_path([*error['loc'], name])}: {what}" for name, what in cause.problems
            )
        elif error["type"] == "extra_forbidden":
            problems.append(f"{path}: unknown key")
        else:
            problems.append(f"{path or 'policy'}: {error['msg'].removeprefix('Value error, ')}")
    return problems


def _validated(data: Mapping[str, Any], problems: Iterable[str] = ()) -> Policy:
    found = list(problems)
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        found.extend(_problems(exc))
    if found:
        raise PolicyError(found)
    return policy


def _toml_only_problems(data: Mapping[str, Any]) -> list[str]:
    calendar = data.get("calendar")
    if not isinstance(calendar, dict):
        return []
    problems = []
    # Policy() carries the NYSE holidays; a [calendar] table without them would silently trade
    # through Thanksgiving, so an empty list has to be asked for.
    if "holidays" not in calendar:
        problems.append("calendar.holidays: required when [calendar] is given; write [] for none")
    # Integer weekdays are ambiguous in a hand-written file (cron counts Sunday as 0).
    weekdays = calendar.get("weekdays")
    if isinstance(weekdays, list) and any(not isinstance(day, str) for day in weekdays):
        problems.append('calendar.weekdays: use names like ["mon", "tue"] or "all"')
    return problems


def load_policy_toml(text: str) -> Policy:
    """Validate a policy file's text; PolicyError names every bad field (R-11.1)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"toml: {exc}"]) from None
    return _validated(data, _toml_only_problems(data))


def policy_from_json(text: str) -> Policy:
    """Rebuild a policy from its canonical JSON (as stored in P:policy or a signed request)."""
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise PolicyError([f"json: {exc}"]) from None
    if not isinstance(data, dict):
        raise PolicyError(["json: expected an object"])
    return _validated(data)
