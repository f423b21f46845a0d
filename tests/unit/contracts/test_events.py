"""Event envelope (R-9.4): encoding, tolerant decoding, account scope."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import pytest

from contracts.errors import InvalidMessage
from contracts.events import EVENT_TYPES, Event, decode_event, encode_event

SPEC_EVENT_TYPES = (
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
)


def phase_changed(**changes: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": "1767643800000-0",
        "schema_version": 1,
        "type": "phase_changed",
        "account_id": "acct-1",
        "occurred_at": datetime(2026, 1, 5, 20, 10, 1, tzinfo=UTC),
        "effective_at": datetime(2026, 1, 5, 20, 10, tzinfo=UTC),
        "trading_day": date(2026, 1, 5),
        "caused_by": "1767643799000-3",
        "payload": {"from_phase": "trial", "to_phase": "proof", "daily_loss": "0.0612"},
    }
    fields.update(changes)
    return Event.model_validate(fields)


def event_fields(data: dict[str, Any], type_: str | None = None) -> dict[bytes, bytes]:
    return {b"type": (type_ or data["type"]).encode(), b"data": json.dumps(data).encode()}


def test_r9_4_the_event_types_are_those_of_the_spec() -> None:
    assert EVENT_TYPES == SPEC_EVENT_TYPES


def test_r9_4_decoding_an_encoded_event_gives_it_back() -> None:
    event = phase_changed()

    assert decode_event(encode_event(event)) == event


def test_r9_4_an_event_entry_has_the_type_and_the_whole_event_as_data() -> None:
    fields = encode_event(phase_changed())

    assert fields["type"] == "phase_changed"
    data = json.loads(fields["data"])
    assert data["occurred_at"] == "2026-01-05T20:10:01Z"
    assert data["trading_day"] == "2026-01-05"
    assert data["payload"]["daily_loss"] == "0.0612"
    assert data["account_id"] == "acct-1"


def test_r9_4_a_subscriber_ignores_an_unknown_field_in_data() -> None:
    data = json.loads(encode_event(phase_changed())["data"]) | {"added_later": {"x": 1}}

    assert decode_event(event_fields(data)) == phase_changed()


def test_r9_4_a_subscriber_ignores_an_unknown_stream_field() -> None:
    fields = dict(encode_event(phase_changed())) | {"trace": "abc"}

    assert decode_event(fields) == phase_changed()


def test_r9_4_bruteforce_suspicion_has_no_account_and_no_trading_day() -> None:
    event = phase_changed(type="override_bruteforce_suspected", account_id=None, trading_day=None)

    assert decode_event(encode_event(event)).account_id is None


BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown type", {"type": "phase_skipped"}, "unknown_type"),
    ("schema version 2", {"schema_version": 2}, "unsupported_schema_version"),
    ("naive occurred_at", {"occurred_at": "2026-01-05T20:10:00"}, "naive_timestamp"),
    ("event_id null", {"event_id": None}, "invalid_field"),
    ("account event without account", {"account_id": None}, "missing_field"),
    ("bruteforce with an account", {"type": "override_bruteforce_suspected"}, "invalid_field"),
    ("payload not an object", {"payload": ["x"]}, "invalid_field"),
]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [pytest.param(changes, reason, id=name) for name, changes, reason in BAD_EVENTS],
)
def test_r9_4_an_unusable_event_is_refused_with_its_reason(
    changes: dict[str, Any], reason: str
) -> None:
    data = json.loads(encode_event(phase_changed())["data"]) | changes

    with pytest.raises(InvalidMessage) as caught:
        decode_event(event_fields(data, "phase_changed"))

    assert caught.value.reason == reason


def test_r9_4_an_event_whose_stream_type_differs_from_its_data_is_refused() -> None:
    data = json.loads(encode_event(phase_changed())["data"])

    with pytest.raises(InvalidMessage) as caught:
        decode_event(event_fields(data, "epoch_reset"))

    assert caught.value.reason == "invalid_field"


def test_r9_4_an_event_entry_without_data_is_refused() -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_event({b"type": b"phase_changed"})

    assert caught.value.reason == "missing_field"
