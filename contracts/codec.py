"""Inbox entries <-> message models: decode once at the boundary, encode for the wire (R-9.3).

Data is parsed with ``json.loads(parse_float=Decimal)`` because pydantic's JSON parser would pass
long decimals through binary floats (R-2.1), then validated strictly on a module-level adapter.
Every refusal is an ``InvalidMessage`` whose reason is a stable dead-letter code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final, TypeAlias

from pydantic import TypeAdapter, ValidationError

from contracts.errors import InvalidMessage, invalid_from_validation_error
from contracts.messages import InboundMessage, SessionEnded, TradeClosed

MAX_DATA_BYTES: Final = 64 * 1024

TRADE_CLOSED_ADAPTER: Final = TypeAdapter(TradeClosed)
SESSION_ENDED_ADAPTER: Final = TypeAdapter(SessionEnded)
# Keyed by text and by bytes, so that the stream's type field needs no decoding.
_ADAPTERS: Final[dict[bytes | str, TypeAdapter[TradeClosed] | TypeAdapter[SessionEnded]]] = {
    "trade_closed": TRADE_CLOSED_ADAPTER,
    b"trade_closed": TRADE_CLOSED_ADAPTER,
    "session_ended": SESSION_ENDED_ADAPTER,
    b"session_ended": SESSION_ENDED_ADAPTER,
}
# The fields of a stream entry as redis-py returns them: names and values as bytes, or as text
# with decode_responses=True. (Mapping is invariant in its key type, hence the union.)
StreamFields: TypeAlias = (
    Mapping[bytes, bytes | str] | Mapping[str, bytes | str] | Mapping[bytes | str, bytes | str]
)
_STREAM_ID_RE: Final = re.compile(r"[0-9]+-[0-9]+")


class _NonFinite(Exception):
    """Raised from inside ``json.loads`` on ``NaN``, ``Infinity`` or ``-Infinity``."""


class _DuplicateKey(Exception):
    """Raised from inside ``json.loads`` when an object repeats a key (which one would count?)."""


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


# Built once: json.loads(text, parse_float=...) would construct a decoder on every call.
_DECODER: Final = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
)


def _has_lone_surrogate(value: object) -> bool:
    """True if a string in ``value`` holds a lone surrogate (from a ``\\ud800``-style escape).

    Iterative, because the parsed value may be nested almost as deep as the recursion limit.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def load_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse stream ``data``: at most 64 KiB of UTF-8 JSON holding one object, decimals exact.

    Refused: oversized (``too_large``), not UTF-8, not JSON, duplicate keys, lone surrogate
    escapes or not an object (``malformed_json``), ``NaN``/``Infinity`` (``non_finite_number``),
    numbers Python cannot hold (``out_of_range``).
    """
    if isinstance(raw, bytes):
        if len(raw) > MAX_DATA_BYTES:
            raise InvalidMessage("too_large", f"data is {len(raw)} bytes, limit {MAX_DATA_BYTES}")
        try:
            text = raw.decode()
        except UnicodeDecodeError as exc:
            raise InvalidMessage("malformed_json", f"data is not UTF-8: {exc.reason}") from None
    else:
        text = raw
        # A character is 1-4 UTF-8 bytes: encode only when the length leaves room for doubt.
        if (
            len(text) > MAX_DATA_BYTES // 4
            and len(text.encode(errors="surrogatepass")) > MAX_DATA_BYTES
        ):
            raise InvalidMessage("too_large", f"data is over {MAX_DATA_BYTES} bytes")
    try:
        obj = _DECODER.decode(text)
    except _NonFinite as exc:
        raise InvalidMessage("non_finite_number", f"{exc} is not a valid number") from None
    except _DuplicateKey:
        raise InvalidMessage("malformed_json", "an object repeats a key") from None
    except json.JSONDecodeError as exc:
        raise InvalidMessage("malformed_json", f"data is not JSON: {exc}") from None
    except (ValueError, InvalidOperation):  # an integer over 4300 digits, a huge exponent
        raise InvalidMessage("out_of_range", "a number is too large to represent") from None
    except RecursionError:
        raise InvalidMessage("malformed_json", "data is nested too deeply") from None
    if type(obj) is not dict:
        raise InvalidMessage(
            "malformed_json", f"data must be a JSON object, not {type(obj).__name__}"
        )
    # Escapes are rare on this wire; only then look for a lone surrogate, which could never be
    # written back to Redis as UTF-8.
    if "\\u" in text and _has_lone_surrogate(obj):
        raise InvalidMessage("malformed_json", "data holds a lone surrogate escape")
    return obj


def stream_fields(fields: StreamFields) -> dict[str, bytes | str]:
    """The fields of a stream entry with names as text (redis-py returns bytes by default)."""
    named: dict[str, bytes | str] = {}
    for key, value in fields.items():
        if isinstance(key, str):
            named[key] = value
            continue
        try:
            named[key.decode()] = value
        except UnicodeDecodeError:
            raise InvalidMessage("unknown_field", f"stream field {key!r:.80}") from None
    return named


def field_text(value: bytes | str, name: str) -> str:
    """A short stream field's value as text."""
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise InvalidMessage("invalid_field", f"stream field {name} is not UTF-8") from None


def _check_requeued_from(value: bytes | str) -> None:
    if _STREAM_ID_RE.fullmatch(field_text(value, "requeued_from")) is None:
        raise InvalidMessage("invalid_field", "requeued_from is not a stream entry id")


def decode_inbox(fields: StreamFields) -> InboundMessage:
    """Decode one inbox entry (R-9.3) into a ``TradeClosed`` or ``SessionEnded``.

    Raises ``InvalidMessage`` with a stable reason for everything that must be dead-lettered.
    """
    # One pass over the (two or three) fields, comparing bytes and text names directly: this
    # runs for every message, and building a normalised copy costs more than the checks.
    type_raw: bytes | str | None = None
    data_raw: bytes | str | None = None
    for key, value in fields.items():
        if key == b"type" or key == "type":
            if type_raw is not None:
                raise InvalidMessage("unknown_field", "stream field type appears twice")
            type_raw = value
        elif key == b"data" or key == "data":
            if data_raw is not None:
                raise InvalidMessage("unknown_field", "stream field data appears twice")
            data_raw = value
        elif key == b"requeued_from" or key == "requeued_from":
            _check_requeued_from(value)
        else:
            raise InvalidMessage("unknown_field", f"unknown stream field {key!r:.80}")
    if type_raw is None:
        raise InvalidMessage("missing_field", "stream field type is missing")
    if data_raw is None:
        raise InvalidMessage("missing_field", "stream field data is missing")
    adapter = _ADAPTERS.get(type_raw)
    if adapter is None:
        raise InvalidMessage("unknown_type", f"unknown message type {type_raw!r:.80}")
    obj = load_json_object(data_raw)
    try:
        return adapter.validate_python(obj)
    except ValidationError as exc:
        raise invalid_from_validation_error(exc) from None


def message_type(msg: InboundMessage) -> str:
    """The stream ``type`` of a message model."""
    return "trade_closed" if isinstance(msg, TradeClosed) else "session_ended"


def encode_message(msg: InboundMessage) -> dict[str, str]:
    """Stream fields for XADD: ``type`` and ``data`` (compact JSON; decimals as exact strings
    keeping their scale, timestamps RFC 3339, absent optional fields left out).

    ``decode_inbox(encode_message(m)) == m`` for every valid ``m``.
    """
    if isinstance(msg, TradeClosed):
        data = TRADE_CLOSED_ADAPTER.dump_json(msg, exclude_none=True)
    else:
        data = SESSION_ENDED_ADAPTER.dump_json(msg, exclude_none=True)
    return {"type": message_type(msg), "data": data.decode()}
