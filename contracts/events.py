"""Outbound events (R-9.4): one tolerant envelope model and its stream encoding.

Subscribers ignore fields they do not know (fields are only ever added within a schema
version), so the model ignores extra fields instead of refusing them. The type-specific body is
``payload``, already JSON-safe (decimals as strings).
"""

from __future__ import annotations

from typing import Any, Final, Literal, Self, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from contracts.codec import StreamFields, field_text, load_json_object, stream_fields
from contracts.errors import InvalidMessage, invalid_from_validation_error
from contracts.messages import AccountId, SchemaVersion, TradingDay, WireDatetime

EventType = Literal[
    "phase_changed",
    "advancement_eligible",
    "position_size_changed",
    "circuit_breaker_tripped",
    "circuit_breaker_cleared",
    "session_closed",
    "session_amended",
    "epoch_reset",
    "unauthorized_entry",
    "account_degraded",
    "override_bruteforce_suspected",
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)
# The one event about the deployment rather than an account; it goes to shard 0's stream.
DEPLOYMENT_EVENT_TYPES: Final[frozenset[EventType]] = frozenset({"override_bruteforce_suspected"})


class Event(BaseModel):
    """An event as published on ``P:{s<k>}:events`` (R-9.4)."""

    model_config = ConfigDict(frozen=True, extra="ignore", strict=True)

    event_id: str = Field(min_length=1)
    schema_version: SchemaVersion
    type: EventType
    account_id: AccountId | None
    occurred_at: WireDatetime
    effective_at: WireDatetime
    trading_day: TradingDay | None
    caused_by: str = Field(min_length=1)  # inbox entry id or request id
    payload: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_account_scope(self) -> Self:
        deployment_wide = self.type in DEPLOYMENT_EVENT_TYPES
        if deployment_wide and (self.account_id is not None or self.trading_day is not None):
            raise PydanticCustomError(
                "invalid_field", "{type} has no account_id or trading_day", {"type": self.type}
            )
        if not deployment_wide and self.account_id is None:
            raise PydanticCustomError(
                "missing_field", "{type} needs an account_id", {"type": self.type}
            )
        return self


EVENT_ADAPTER: Final = TypeAdapter(Event)


def encode_event(event: Event) -> dict[str, str]:
    """Stream fields for XADD: ``type`` and ``data`` (the whole event as compact JSON)."""
    return {"type": event.type, "data": EVENT_ADAPTER.dump_json(event).decode()}


def decode_event(fields: StreamFields) -> Event:
    """Decode one events-stream entry; unknown stream fields and data fields are ignored.

    Raises ``InvalidMessage`` for an entry a subscriber cannot use (skip it and log).
    """
    named = stream_fields(fields)
    if "type" not in named or "data" not in named:
        raise InvalidMessage("missing_field", "an event entry needs the fields type and data")
    obj = load_json_object(named["data"])
    try:
        event = EVENT_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise invalid_from_validation_error(exc) from None
    type_name = field_text(named["type"], "type")
    if type_name != event.type:
        raise InvalidMessage(
            "invalid_field", f"stream type {type_name!r:.80} differs from data type {event.type}"
        )
    return event
