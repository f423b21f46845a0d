"""decode_inbox / encode_message: every dead-letter reason of R-9.3 and the exactness of R-2.1."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from contracts.codec import MAX_DATA_BYTES, decode_inbox, encode_message
from contracts.errors import InvalidMessage
from contracts.messages import MESSAGE_TYPES, SessionEnded, TradeClosed

NY = timezone(timedelta(hours=-5))


def paper_trade(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "account_id": "acct-1",
        "trade_id": "T-1",
        "mode": "paper",
        "closed_at": "2026-01-05T15:10:00-05:00",
        "pnl": "12.50",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not DROP}


def live_trade(**changes: Any) -> dict[str, Any]:
    full = {
        "mode": "live",
        "kind": "regular",
        "opened_at": "2026-01-05T14:02:11.250000-05:00",
        "entry_decision_id": "d-7f3a9c",
        "symbol": "ES",
        "position_size": "100.00",
        "equity_after": "20150.25",
        "currency": "USD",
    }
    full.update(changes)
    return paper_trade(**full)


def session_ended(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "account_id": "acct-1",
        "trading_day": "2026-01-05",
        "ended_at": "2026-01-05T16:00:00-05:00",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not DROP}


DROP = object()  # a field to leave out


def entry(data: dict[str, Any] | bytes | str, type_: str = "trade_closed") -> dict[bytes, bytes]:
    if isinstance(data, dict):
        data = json.dumps(data)
    raw = data.encode() if isinstance(data, str) else data
    return {b"type": type_.encode(), b"data": raw}


def raw_trade(pnl_text: str) -> bytes:
    """A paper trade whose pnl is the given JSON text, verbatim."""
    return json.dumps(paper_trade(pnl="PNL")).replace('"PNL"', pnl_text).encode()


# --- positives ----------------------------------------------------------------------------------


def test_a_minimal_paper_trade_decodes_with_defaults() -> None:
    msg = decode_inbox(entry(paper_trade()))

    assert msg == TradeClosed(
        schema_version=1,
        account_id="acct-1",
        trade_id="T-1",
        mode="paper",
        closed_at=datetime(2026, 1, 5, 15, 10, tzinfo=NY),
        pnl=Decimal("12.50"),
    )
    assert msg.kind == "regular"
    assert msg.opened_at is None
    assert msg.position_size is None


def test_a_live_trade_with_every_field_decodes() -> None:
    msg = decode_inbox(entry(live_trade()))

    assert isinstance(msg, TradeClosed)
    assert msg.mode == "live"
    assert msg.opened_at == datetime(2026, 1, 5, 14, 2, 11, 250000, tzinfo=NY)
    assert msg.entry_decision_id == "d-7f3a9c"
    assert msg.symbol == "ES"
    assert msg.position_size == Decimal("100.00")
    assert msg.equity_after == Decimal("20150.25")
    assert msg.currency == "USD"


def test_r2_1_long_decimal_json_number_stays_exact() -> None:
    msg = decode_inbox(entry(raw_trade("961425548.08470054")))

    assert isinstance(msg, TradeClosed)
    assert msg.pnl == Decimal("961425548.08470054")
    assert str(msg.pnl) == "961425548.08470054"


def test_r2_1_long_decimal_string_stays_exact() -> None:
    msg = decode_inbox(entry(live_trade(equity_after="961425548.08470054")))

    assert isinstance(msg, TradeClosed)
    assert msg.equity_after == Decimal("961425548.08470054")
    assert str(msg.equity_after) == "961425548.08470054"


@pytest.mark.parametrize(
    ("pnl_text", "expected"),
    [
        ("-3.25", Decimal("-3.25")),
        ('"-3.25"', Decimal("-3.25")),
        ("7", Decimal(7)),
        ('"7"', Decimal(7)),
        ("1.5e2", Decimal("150")),
        ('"1E-7"', Decimal("1E-7")),
        ('"999999999999999.999999999999"', Decimal("999999999999999.999999999999")),
        ('"-0.000000000001"', Decimal("-1E-12")),
        ('"0"', Decimal(0)),
    ],
)
def test_r2_1_a_decimal_may_be_a_json_number_or_a_decimal_string(
    pnl_text: str, expected: Decimal
) -> None:
    msg = decode_inbox(entry(raw_trade(pnl_text)))

    assert isinstance(msg, TradeClosed)
    assert msg.pnl == expected


def test_r2_1_a_decimal_keeps_its_scale() -> None:
    msg = decode_inbox(entry(raw_trade('"100.10"')))

    assert isinstance(msg, TradeClosed)
    assert str(msg.pnl) == "100.10"


@pytest.mark.parametrize("equity", ["0", "-1520.75", 0, -3])
def test_r2_8_equity_at_or_below_zero_is_accepted(equity: str | int) -> None:
    msg = decode_inbox(entry(live_trade(equity_after=equity)))

    assert isinstance(msg, TradeClosed)
    assert msg.equity_after is not None
    assert msg.equity_after <= 0


def test_r1_4_a_manual_trade_with_its_operator_decodes() -> None:
    msg = decode_inbox(entry(live_trade(kind="manual", operator_id="ops-jane")))

    assert isinstance(msg, TradeClosed)
    assert msg.kind == "manual"
    assert msg.operator_id == "ops-jane"


def test_an_emergency_exit_without_entry_decision_decodes() -> None:
    msg = decode_inbox(entry(live_trade(kind="emergency_exit", entry_decision_id=DROP)))

    assert isinstance(msg, TradeClosed)
    assert msg.kind == "emergency_exit"


def test_opened_at_equal_to_closed_at_is_accepted() -> None:
    msg = decode_inbox(entry(paper_trade(opened_at="2026-01-05T20:10:00Z")))

    assert isinstance(msg, TradeClosed)
    assert msg.opened_at == msg.closed_at


def test_an_optional_field_sent_as_null_is_absent() -> None:
    msg = decode_inbox(entry(paper_trade(symbol=None, opened_at=None)))

    assert isinstance(msg, TradeClosed)
    assert msg.symbol is None


def test_a_utc_timestamp_with_z_decodes_as_aware() -> None:
    msg = decode_inbox(entry(paper_trade(closed_at="2026-01-05T20:10:00.5Z")))

    assert isinstance(msg, TradeClosed)
    assert msg.closed_at == datetime(2026, 1, 5, 20, 10, 0, 500000, tzinfo=UTC)


def test_a_session_ended_decodes() -> None:
    msg = decode_inbox(entry(session_ended(equity="-12.00"), "session_ended"))

    assert msg == SessionEnded(
        schema_version=1,
        account_id="acct-1",
        trading_day=date(2026, 1, 5),
        ended_at=datetime(2026, 1, 5, 16, tzinfo=NY),
        equity=Decimal("-12.00"),
    )


def test_r9_3_a_requeued_entry_decodes() -> None:
    fields = entry(paper_trade()) | {b"requeued_from": b"1767643800000-0"}

    assert isinstance(decode_inbox(fields), TradeClosed)


def test_text_field_names_and_values_decode_like_bytes() -> None:
    fields = {"type": "trade_closed", "data": json.dumps(paper_trade())}

    assert decode_inbox(fields) == decode_inbox(entry(paper_trade()))


def test_r9_3_data_of_exactly_64_kib_is_accepted() -> None:
    data = json.dumps(paper_trade())
    padded = data[:-1] + " " * (MAX_DATA_BYTES - len(data)) + "}"

    assert len(padded.encode()) == MAX_DATA_BYTES
    assert isinstance(decode_inbox(entry(padded)), TradeClosed)


# --- rejects ------------------------------------------------------------------------------------

BAD_TRADES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field in data", paper_trade(fee="0.10"), "unknown_field"),
    ("schema version 2", paper_trade(schema_version=2), "unsupported_schema_version"),
    ("schema version true", paper_trade(schema_version=True), "unsupported_schema_version"),
    ("schema version 1.0", paper_trade(schema_version=1.0), "unsupported_schema_version"),
    ("schema version as text", paper_trade(schema_version="1"), "unsupported_schema_version"),
    (
        "schema version 2 with new fields",
        paper_trade(schema_version=2, fee="1"),
        "unsupported_schema_version",
    ),
    ("schema version missing", paper_trade(schema_version=DROP), "missing_field"),
    ("pnl missing", paper_trade(pnl=DROP), "missing_field"),
    ("closed_at missing", paper_trade(closed_at=DROP), "missing_field"),
    ("pnl true", paper_trade(pnl=True), "invalid_field"),
    ("pnl null", paper_trade(pnl=None), "invalid_field"),
    ("pnl a list", paper_trade(pnl=["1"]), "invalid_field"),
    ("pnl with a plus sign", paper_trade(pnl="+1.5"), "invalid_field"),
    ("pnl with spaces", paper_trade(pnl=" 1.5"), "invalid_field"),
    ("pnl with an underscore", paper_trade(pnl="1_000"), "invalid_field"),
    ("pnl with a bare point", paper_trade(pnl=".5"), "invalid_field"),
    ("pnl with a trailing point", paper_trade(pnl="5."), "invalid_field"),
    ("pnl with arabic-indic digits", paper_trade(pnl="\u0661\u0662"), "invalid_field"),
    ("pnl empty", paper_trade(pnl=""), "invalid_field"),
    ("trade_id a number", paper_trade(trade_id=17), "invalid_field"),
    ("mode in capitals", paper_trade(mode="LIVE"), "invalid_field"),
    ("kind unknown", paper_trade(kind="hedge"), "invalid_field"),
    ("naive closed_at", paper_trade(closed_at="2026-01-05T15:10:00"), "naive_timestamp"),
    ("naive opened_at", paper_trade(opened_at="2026-01-05T15:00:00"), "naive_timestamp"),
    ("closed_at with a space", paper_trade(closed_at="2026-01-05 15:10:00Z"), "invalid_field"),
    ("closed_at a date", paper_trade(closed_at="2026-01-05"), "invalid_field"),
    ("closed_at without seconds", paper_trade(closed_at="2026-01-05T15:10Z"), "invalid_field"),
    ("closed_at offset +0500", paper_trade(closed_at="2026-01-05T15:10:00+0500"), "invalid_field"),
    (
        "closed_at offset +24:00",
        paper_trade(closed_at="2026-01-05T15:10:00+24:00"),
        "invalid_field",
    ),
    (
        "closed_at nanoseconds",
        paper_trade(closed_at="2026-01-05T15:10:00.123456789Z"),
        "invalid_field",
    ),
    ("closed_at month 13", paper_trade(closed_at="2026-13-05T15:10:00Z"), "invalid_field"),
    ("closed_at leap second", paper_trade(closed_at="2026-01-05T23:59:60Z"), "invalid_field"),
    ("closed_at epoch seconds", paper_trade(closed_at=1767643800), "invalid_field"),
    ("pnl NaN as text", paper_trade(pnl="NaN"), "non_finite_number"),
    ("pnl Infinity as text", paper_trade(pnl="Infinity"), "non_finite_number"),
    ("pnl -inf as text", paper_trade(pnl="-inf"), "non_finite_number"),
    ("pnl 10**15", paper_trade(pnl="1000000000000000"), "out_of_range"),
    ("pnl -10**15", paper_trade(pnl=-(10**15)), "out_of_range"),
    ("pnl 1e15", paper_trade(pnl="1e15"), "out_of_range"),
    ("pnl 13 decimal places", paper_trade(pnl="0.0000000000001"), "out_of_range"),
    ("pnl 13 places of zeros", paper_trade(pnl="1.0000000000000"), "out_of_range"),
    ("pnl exponent too large", paper_trade(pnl="1e999999999999999999999"), "out_of_range"),
    ("equity_after out of range", live_trade(equity_after="1e400"), "out_of_range"),
    ("opened_at after closed_at", paper_trade(opened_at="2026-01-05T20:10:01Z"), "invalid_field"),
    ("live without equity_after", live_trade(equity_after=DROP), "missing_field"),
    ("live without position_size", live_trade(position_size=DROP), "missing_field"),
    ("live with null position_size", live_trade(position_size=None), "missing_field"),
    ("manual without operator_id", live_trade(kind="manual"), "missing_field"),
    ("negative position_size", live_trade(position_size="-1"), "invalid_field"),
    ("account id starting with a dash", paper_trade(account_id="-acct"), "invalid_field"),
    ("account id with a space", paper_trade(account_id="acct 1"), "invalid_field"),
    ("account id with a colon", paper_trade(account_id="acct:1"), "invalid_field"),
    ("account id with a newline", paper_trade(account_id="acct-1\n"), "invalid_field"),
    ("account id of 65 chars", paper_trade(account_id="a" * 65), "invalid_field"),
    ("account id empty", paper_trade(account_id=""), "invalid_field"),
    ("empty trade_id", paper_trade(trade_id=""), "invalid_field"),
    ("129-char trade_id", paper_trade(trade_id="t" * 129), "invalid_field"),
    ("65-char symbol", paper_trade(symbol="s" * 65), "invalid_field"),
    ("empty entry_decision_id", paper_trade(entry_decision_id=""), "invalid_field"),
    ("lower-case currency", paper_trade(currency="usd"), "invalid_field"),
    ("one-letter currency", paper_trade(currency="U"), "invalid_field"),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [pytest.param(data, reason, id=name) for name, data, reason in BAD_TRADES],
)
def test_r9_3_an_invalid_trade_closed_is_refused_with_its_reason(
    data: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_inbox(entry(data))

    assert caught.value.reason == reason


BAD_SESSIONS: list[tuple[str, dict[str, Any], str]] = [
    ("unknown field", session_ended(pnl="1"), "unknown_field"),
    ("trading_day without zero padding", session_ended(trading_day="2026-1-5"), "invalid_field"),
    ("trading_day 30 February", session_ended(trading_day="2026-02-30"), "invalid_field"),
    ("trading_day basic format", session_ended(trading_day="20260105"), "invalid_field"),
    ("trading_day a timestamp", session_ended(trading_day="2026-01-05T00:00:00Z"), "invalid_field"),
    ("trading_day missing", session_ended(trading_day=DROP), "missing_field"),
    ("naive ended_at", session_ended(ended_at="2026-01-05T16:00:00"), "naive_timestamp"),
    ("equity NaN as text", session_ended(equity="NaN"), "non_finite_number"),
    ("equity out of range", session_ended(equity="1e20"), "out_of_range"),
    ("equity true", session_ended(equity=True), "invalid_field"),
    ("schema version 0", session_ended(schema_version=0), "unsupported_schema_version"),
]


@pytest.mark.parametrize(
    ("data", "reason"),
    [pytest.param(data, reason, id=name) for name, data, reason in BAD_SESSIONS],
)
def test_r9_3_an_invalid_session_ended_is_refused_with_its_reason(
    data: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_inbox(entry(data, "session_ended"))

    assert caught.value.reason == reason


VALID = json.dumps(paper_trade()).encode()


def fields_of(data: bytes | str, type_: bytes | str = b"trade_closed", **extra: Any) -> Any:
    """Stream fields; ``extra`` adds fields given as ``name=value`` (bytes)."""
    return {b"type": type_, b"data": data} | {k.encode(): v for k, v in extra.items()}


BAD_ENTRIES: list[tuple[str, dict[Any, Any], str]] = [
    ("unknown stream field", fields_of(VALID, x=b"1"), "unknown_field"),
    ("non-UTF-8 stream field name", fields_of(VALID) | {b"\xff": b"1"}, "unknown_field"),
    ("type given twice", fields_of(VALID) | {"type": "trade_closed"}, "unknown_field"),
    ("unknown type", fields_of(VALID, b"trade_opened"), "unknown_type"),
    ("non-UTF-8 type", fields_of(VALID, b"\xfftrade"), "unknown_type"),
    ("type missing", {b"data": VALID}, "missing_field"),
    ("data missing", {b"type": b"trade_closed"}, "missing_field"),
    ("requeued_from malformed", fields_of(VALID, requeued_from=b"x"), "invalid_field"),
    ("data over 64 KiB", fields_of(VALID[:-1] + b" " * MAX_DATA_BYTES + b"}"), "too_large"),
    ("text data over 64 KiB", fields_of("{" + "\u00e9" * (MAX_DATA_BYTES // 2) + "}"), "too_large"),
    ("data not UTF-8", fields_of(VALID.replace(b"T-1", b"T-\xe9")), "malformed_json"),
    ("data in UTF-16", fields_of(VALID.decode().encode("utf-16")), "malformed_json"),
    ("data with a byte order mark", fields_of(b"\xef\xbb\xbf" + VALID), "malformed_json"),
    ("data not JSON", fields_of(b"{"), "malformed_json"),
    ("data empty", fields_of(b""), "malformed_json"),
    ("data a list", fields_of(b"[]"), "malformed_json"),
    ("data a string", fields_of(b'"trade"'), "malformed_json"),
    ("data a number", fields_of(b"1"), "malformed_json"),
    ("data with trailing text", fields_of(VALID + b"{}"), "malformed_json"),
    ("data repeating a key", fields_of(VALID[:-1] + b', "pnl": "1"}'), "malformed_json"),
    ("data with a lone surrogate", fields_of(VALID.replace(b"T-1", b"\\ud800")), "malformed_json"),
    ("data nested too deeply", fields_of(b"[" * 30000 + b"]" * 30000), "malformed_json"),
    ("pnl NaN as JSON constant", fields_of(raw_trade("NaN")), "non_finite_number"),
    ("pnl Infinity as JSON constant", fields_of(raw_trade("Infinity")), "non_finite_number"),
    ("pnl -Infinity as JSON constant", fields_of(raw_trade("-Infinity")), "non_finite_number"),
    ("pnl JSON number 1e15", fields_of(raw_trade("1e15")), "out_of_range"),
    ("pnl JSON number of 13 places", fields_of(raw_trade("0.1234567890123")), "out_of_range"),
    (
        "pnl JSON number, huge exponent",
        fields_of(raw_trade("1e99999999999999999999")),
        "out_of_range",
    ),
    ("pnl JSON integer of 5000 digits", fields_of(raw_trade("9" * 5000)), "out_of_range"),
]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [pytest.param(fields, reason, id=name) for name, fields, reason in BAD_ENTRIES],
)
def test_r9_3_an_invalid_inbox_entry_is_refused_with_its_reason(
    fields: dict[Any, Any], reason: str
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_inbox(fields)

    assert caught.value.reason == reason


def test_a_refusal_carries_a_human_detail_naming_the_field() -> None:
    with pytest.raises(InvalidMessage) as caught:
        decode_inbox(entry(paper_trade(pnl=True)))

    assert "pnl" in caught.value.detail
    assert str(caught.value).startswith("invalid_field: ")


# --- building models in Python ------------------------------------------------------------------


def test_a_naive_datetime_is_refused_when_building_a_model() -> None:
    with pytest.raises(ValueError, match="timezone"):
        SessionEnded(
            schema_version=1,
            account_id="acct-1",
            trading_day=date(2026, 1, 5),
            ended_at=datetime(2026, 1, 5, 16),  # noqa: DTZ001 - the point of the test
        )


def test_an_offset_with_seconds_is_refused_because_rfc_3339_cannot_carry_it() -> None:
    odd = timezone(timedelta(minutes=19, seconds=32))

    with pytest.raises(ValueError, match="whole minutes"):
        SessionEnded(
            schema_version=1,
            account_id="acct-1",
            trading_day=date(2026, 1, 5),
            ended_at=datetime(2026, 1, 5, 16, tzinfo=odd),
        )


def test_a_float_is_refused_when_building_a_model() -> None:
    with pytest.raises(ValueError, match="pnl"):
        TradeClosed.model_validate(
            paper_trade(pnl=0.1, closed_at=datetime(2026, 1, 5, 20, tzinfo=UTC))
        )


def test_models_are_frozen() -> None:
    msg = decode_inbox(entry(paper_trade()))
    assert isinstance(msg, TradeClosed)

    with pytest.raises(ValueError, match="frozen"):
        msg.pnl = Decimal(0)  # type: ignore[misc]


# --- encoding -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_", "data"),
    [
        ("trade_closed", paper_trade()),
        ("trade_closed", live_trade(kind="manual", operator_id="ops-jane", pnl="-0.000000000001")),
        ("trade_closed", live_trade(pnl="961425548.08470054", equity_after="1E+3")),
        ("session_ended", session_ended()),
        ("session_ended", session_ended(equity="0.00", ended_at="2026-01-05T21:00:00.000001Z")),
    ],
)
def test_decoding_an_encoded_message_gives_it_back(type_: str, data: dict[str, Any]) -> None:
    msg = decode_inbox(entry(data, type_))

    assert decode_inbox(encode_message(msg)) == msg


def test_encoding_names_the_type_and_sends_decimals_as_exact_strings() -> None:
    msg = decode_inbox(entry(live_trade(pnl="961425548.08470054", position_size="100.00")))

    fields = encode_message(msg)

    assert fields["type"] == "trade_closed"
    data = json.loads(fields["data"])
    assert data["pnl"] == "961425548.08470054"
    assert data["position_size"] == "100.00"
    assert data["closed_at"] == "2026-01-05T15:10:00-05:00"


def test_encoding_leaves_out_absent_optional_fields() -> None:
    fields = encode_message(decode_inbox(entry(paper_trade())))

    assert "operator_id" not in json.loads(fields["data"])


def test_message_types_name_both_inbound_models() -> None:
    assert MESSAGE_TYPES["trade_closed"] is TradeClosed
    assert MESSAGE_TYPES["session_ended"] is SessionEnded
    assert len(MESSAGE_TYPES) == 2
