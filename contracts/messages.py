"""Inbound messages (R-9.3): the ``data`` objects of ``trade_closed`` and ``session_ended``.

The inbox entry carries the message type as its own stream field, so the models have no type tag.
Validation is strict (R-2.1): unknown fields are refused and nothing is coerced, except that a
decimal may be a JSON number or a decimal string and a timestamp or trading day is its RFC 3339
text. The reusable field types below are shared with the event models.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Literal, Self, TypeAlias

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from contracts.shard import ACCOUNT_ID_PATTERN

SCHEMA_VERSION: Final = 1

# --- decimals (R-2.1) ---------------------------------------------------------------------------

DECIMAL_LIMIT: Final = Decimal(10) ** 15  # |x| must be below this
DECIMAL_MAX_PLACES: Final = 12
# The JSON number grammar, also used for decimals sent as strings (how the client sends them).
DECIMAL_STRING_PATTERN: Final = r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$"
# The same grammar, capturing the fraction digits and the exponent to count decimal places.
_DECIMAL_STRING_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?")
# Plain notation already within both bounds: the common case, which then needs no further check.
_IN_RANGE_PLAIN_RE: Final = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,12})?")
_NON_FINITE_WORDS: Final = frozenset({"nan", "snan", "inf", "infinity"})


def _to_decimal(value: object) -> object:
    """A JSON number (already a ``Decimal`` or ``int``) or decimal string -> a bounded ``Decimal``.

    Anything else (bool, float, other types) is returned untouched for strict validation to
    refuse as a wrong type.
    """
    if type(value) is str:
        # The hot path: the client sends decimals as strings, almost always in plain notation.
        if _IN_RANGE_PLAIN_RE.fullmatch(value) is not None:
            return Decimal(value)
        # Places are counted on the text, which is much cheaper than Decimal.as_tuple().
        match = _DECIMAL_STRING_RE.fullmatch(value)
        if match is None:
            if value.lstrip("+-").lower() in _NON_FINITE_WORDS:
                raise PydanticCustomError("non_finite_number", "NaN and infinities are invalid")
            raise PydanticCustomError("invalid_field", "not a decimal number")
        try:
            number = Decimal(value)
        except InvalidOperation:  # an exponent beyond what Decimal can hold
            raise PydanticCustomError("out_of_range", "decimal exponent out of range") from None
        fraction, exponent = match.groups()
        places = (len(fraction) if fraction else 0) - (int(exponent) if exponent else 0)
    elif type(value) is Decimal:
        number = value
        if not number.is_finite():
            raise PydanticCustomError("non_finite_number", "NaN and infinities are invalid")
        exponent_value = number.as_tuple().exponent
        places = -exponent_value if isinstance(exponent_value, int) else 0
    elif type(value) is int:
        number = Decimal(value)
        places = 0
    else:
        return value
    if places > DECIMAL_MAX_PLACES:
        raise PydanticCustomError("out_of_range", "at most 12 decimal places")
    if abs(number) >= DECIMAL_LIMIT:
        raise PydanticCustomError("out_of_range", "absolute value must be below 10**15")
    return number


_DECIMAL_DESCRIPTION: Final = (
    "finite decimal, absolute value below 10^15, at most 12 decimal places; a JSON number or a "
    "decimal string (the client sends strings)"
)

WireDecimal = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string", "pattern": DECIMAL_STRING_PATTERN},
            ],
            "description": _DECIMAL_DESCRIPTION,
        }
    ),
]
"""An exact, finite, bounded decimal (R-2.1)."""

NonNegativeDecimal = Annotated[
    Decimal,
    BeforeValidator(_to_decimal),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DECIMAL_STRING_PATTERN.replace("^-?", "^", 1)},
            ],
            "description": f"{_DECIMAL_DESCRIPTION}; not negative",
        }
    ),
]
"""A ``WireDecimal`` that is not negative."""

# --- timestamps and trading days ----------------------------------------------------------------

# RFC 3339 date-time. The offset is optional here only so that a naive timestamp is refused as
# "naive_timestamp" rather than as a malformed string. Fractions are limited to microseconds:
# finer digits are refused rather than silently truncated.
_DATETIME_BODY: Final = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
_OFFSET: Final = r"(?:Z|[+-][0-9]{2}:[0-9]{2})"
DATETIME_PATTERN: Final = f"^{_DATETIME_BODY}{_OFFSET}$"
_DATETIME_RE: Final = re.compile(f"{_DATETIME_BODY}{_OFFSET}?")
DATE_PATTERN: Final = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
_DATE_RE: Final = re.compile(DATE_PATTERN[1:-1])
_MINUTE: Final = timedelta(minutes=1)


def _to_datetime(value: object) -> object:
    """RFC 3339 text -> ``datetime`` (naive if the offset is missing, for the awareness check)."""
    if type(value) is str:
        if _DATETIME_RE.fullmatch(value) is None:
            raise PydanticCustomError("invalid_field", "not an RFC 3339 timestamp with offset")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("invalid_field", "not a valid timestamp") from None
    if isinstance(value, datetime):
        offset = value.utcoffset()
        # RFC 3339 offsets are whole minutes; anything finer could not be sent on the wire.
        if offset is not None and offset % _MINUTE:
            raise PydanticCustomError("invalid_field", "UTC offset must be whole minutes")
    return value


def _to_date(value: object) -> object:
    """``YYYY-MM-DD`` text -> ``date``."""
    if type(value) is str:
        if _DATE_RE.fullmatch(value) is None:
            raise PydanticCustomError("invalid_field", "not a YYYY-MM-DD date")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise PydanticCustomError("invalid_field", "not a valid date") from None
    return value


WireDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_to_datetime),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATETIME_PATTERN}),
]
"""An aware instant, RFC 3339 with offset on the wire (``Z`` or ``±HH:MM``); naive refused."""

TradingDay = Annotated[
    date,
    BeforeValidator(_to_date),
    WithJsonSchema({"type": "string", "format": "date", "pattern": DATE_PATTERN}),
]
"""A trading day, ``YYYY-MM-DD`` on the wire."""


# --- identifiers --------------------------------------------------------------------------------


def _to_schema_version(value: object) -> object:
    # Literal[1] alone accepts True, 1.0 and Decimal(1) even in strict mode.
    if type(value) is not int:
        raise PydanticCustomError("unsupported_schema_version", "schema_version must be 1")
    return value


SchemaVersion = Annotated[Literal[1], BeforeValidator(_to_schema_version)]
AccountId = Annotated[str, StringConstraints(pattern=ACCOUNT_ID_PATTERN)]
TradeId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{2,10}$")]
Mode = Literal["live", "paper"]
Kind = Literal["regular", "emergency_exit", "manual"]

_TRADE_CLOSED_SCHEMA_EXTRA: Final[dict[str, Any]] = {
    "allOf": [
        {
            "if": {"properties": {"mode": {"const": "live"}}, "required": ["mode"]},
            "then": {"required": ["position_size", "equity_after"]},
        },
        {
            "if": {"properties": {"kind": {"const": "manual"}}, "required": ["kind"]},
            "then": {"required": ["operator_id"]},
        },
    ],
    "description": "data of an inbox entry of type trade_closed (SPEC R-9.3); opened_at must not "
    "be after closed_at",
}


class TradeClosed(BaseModel):
    """One fully closed position (R-1.4, R-9.3)."""

    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, json_schema_extra=_TRADE_CLOSED_SCHEMA_EXTRA
    )

    schema_version: SchemaVersion
    account_id: AccountId
    trade_id: TradeId
    mode: Mode
    closed_at: WireDatetime
    pnl: WireDecimal
    kind: Kind = "regular"
    opened_at: WireDatetime | None = None
    entry_decision_id: ShortText | None = None
    symbol: ShortText | None = None
    position_size: NonNegativeDecimal | None = None
    equity_after: WireDecimal | None = None
    currency: Currency | None = None
    operator_id: ShortText | None = None

    @model_validator(mode="after")
    def _check_cross_field_rules(self) -> Self:
        if self.opened_at is not None and self.opened_at > self.closed_at:
            raise PydanticCustomError("invalid_field", "opened_at is after closed_at")
        if self.mode == "live" and (self.position_size is None or self.equity_after is None):
            missing = "position_size" if self.position_size is None else "equity_after"
            raise PydanticCustomError(
                "missing_field", "{field} is required on a live trade", {"field": missing}
            )
        if self.kind == "manual" and self.operator_id is None:
            raise PydanticCustomError("missing_field", "operator_id is required on a manual trade")
        return self


class SessionEnded(BaseModel):
    """The bot's statement that no more trades will close in a trading day (R-9.3, R-10.5)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        json_schema_extra={
            "description": "data of an inbox entry of type session_ended (SPEC R-9.3)"
        },
    )

    schema_version: SchemaVersion
    account_id: AccountId
    trading_day: TradingDay
    ended_at: WireDatetime
    equity: WireDecimal | None = None


InboundMessage: TypeAlias = TradeClosed | SessionEnded
MESSAGE_TYPES: Final[dict[str, type[TradeClosed] | type[SessionEnded]]] = {
    "trade_closed": TradeClosed,
    "session_ended": SessionEnded,
}
