"""Signed operator requests as pure functions (R-7.8, R-7.9): canonical bytes, HMAC, KDF, shape."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.ops.signing import (
    FIELDS,
    KDF_ALG,
    KDF_ITERATIONS,
    MIN_PASSWORD_LENGTH,
    VERSION,
    KdfParams,
    Malformed,
    canonical,
    check_password,
    derive_key,
    fmt_ts,
    new_request,
    parse_request,
    parse_ts,
    sign,
    signature_ok,
)

KEY = bytes.fromhex("00" * 16 + "ff" * 16)
NOW = datetime(2026, 11, 24, 2, 17, 49, tzinfo=UTC)
DEPLOYMENT = "0b7f6c9e-3f1d-4c8a-9e51-2d4a6b8c0e13"
REQUEST_ID = "5d9c2a8e-6b1f-4e3a-9c7d-2f8e4b6a1c0d"


def fields(action: str = "force_advance", **changes: Any) -> dict[str, Any]:
    """Unsigned fields of a well-formed request, with a fixed request id."""
    target = "proof" if action in ("force_advance", "rollback") else None
    account = None if action == "policy_apply" else "acct-1"
    expected = None if action == "policy_apply" else "experience"
    base = new_request(deployment_id=DEPLOYMENT, action=action, operator_id="alice",
                       reason="desk approved", account_id=account, expected_phase=expected,
                       target_phase=target, now=NOW, policy="{}" if action == "policy_apply"
                       else None, expected_policy_version="sha256:0123456789abcdef"
                       if action == "policy_apply" else None)
    return {**base, "request_id": REQUEST_ID, **changes}


def signed(action: str = "force_advance", **changes: Any) -> dict[str, Any]:
    return sign(fields(action, **changes), KEY)


# -- canonical form and signature -----------------------------------------------------------


def test_r7_8_canonical_bytes_are_sorted_compact_ascii_json_without_the_signature() -> None:
    body = {"reason": "ok", "action": "acknowledge", "target_phase": None,
            "signature": "ab" * 32}

    assert canonical(body) == b'{"action":"acknowledge","reason":"ok","target_phase":null}'


def test_r7_8_canonical_bytes_escape_non_ascii_in_the_reason() -> None:
    body = {"reason": "café ✓ 𝄞"}

    assert canonical(body) == b'{"reason":"caf\\u00e9 \\u2713 \\ud834\\udd1e"}'


def test_r7_8_canonical_bytes_are_exactly_the_spec_formula() -> None:
    req = signed()
    without = {k: v for k, v in req.items() if k != "signature"}

    assert canonical(req) == json.dumps(without, sort_keys=True, separators=(",", ":"),
                                        ensure_ascii=True).encode()


def test_r7_8_the_signature_is_hex_hmac_sha256_of_the_canonical_bytes() -> None:
    req = signed()

    expected = hmac.new(KEY, canonical(req), hashlib.sha256).hexdigest()
    assert req["signature"] == expected
    assert len(expected) == 64


def test_r7_8_sign_then_verify_round_trips() -> None:
    assert signature_ok(signed(), KEY)
    assert signature_ok(signed("policy_apply"), KEY)


def test_r7_8_signing_does_not_change_the_fields_or_sign_an_old_signature() -> None:
    unsigned = fields()
    once = sign(unsigned, KEY)

    assert sign(once, KEY) == once
    assert {k: v for k, v in once.items() if k != "signature"} == unsigned


@pytest.mark.parametrize("name", [*FIELDS, "policy", "expected_policy_version"])
def test_r7_8_tampering_with_any_field_breaks_the_signature(name: str) -> None:
    req = signed("policy_apply") if name.startswith(("policy", "expected_policy")) else signed()

    tampered = {**req, name: f"{req[name]}x" if req[name] is not None else "x"}

    assert not signature_ok(tampered, KEY)


@pytest.mark.parametrize("change", [
    pytest.param(lambda r: {**r, "extra": None}, id="added_field"),
    pytest.param(lambda r: {k: v for k, v in r.items() if k != "target_phase"},
                 id="removed_field"),
    pytest.param(lambda r: {**r, "signature": r["signature"].upper()}, id="uppercase_signature"),
    pytest.param(lambda r: {**r, "signature": r["signature"][:-1] + "0"
                            if r["signature"][-1] != "0" else r["signature"][:-1] + "1"},
                 id="one_hex_digit"),
    pytest.param(lambda r: {k: v for k, v in r.items() if k != "signature"}, id="no_signature"),
])
def test_r7_8_any_other_change_breaks_the_signature(
        change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    assert not signature_ok(change(signed()), KEY)


def test_r7_8_another_key_does_not_verify() -> None:
    assert not signature_ok(signed(), bytes(32))


def test_r7_8_new_request_builds_the_fields_of_its_action() -> None:
    plain = fields()
    policy = fields("policy_apply")

    assert set(plain) == set(FIELDS)
    assert set(policy) == {*FIELDS, "policy", "expected_policy_version"}
    assert plain["v"] == VERSION == "phaseguard-override/1"
    assert (plain["issued_at"], plain["expires_at"]) == ("2026-11-24T02:17:49Z",
                                                         "2026-11-24T02:22:49Z")
    fresh = new_request(deployment_id=DEPLOYMENT, action="acknowledge", operator_id="alice",
                        reason="r", account_id="acct-1", expected_phase="proof",
                        target_phase=None, now=NOW)
    assert uuid.UUID(fresh["request_id"]).version == 4


def test_r7_8_a_well_formed_request_parses() -> None:
    req = parse_request(signed())

    assert (req.action, req.operator_id, req.account_id, req.expected_phase,
            req.target_phase) == ("force_advance", "alice", "acct-1", "experience", "proof")
    assert (req.issued_at, req.expires_at) == (NOW, NOW + timedelta(minutes=5))
    assert req.deployment_id == DEPLOYMENT


def test_r7_8_a_policy_apply_request_parses_with_null_account_fields() -> None:
    req = parse_request(signed("policy_apply"))

    assert (req.account_id, req.expected_phase, req.target_phase) == (None, None, None)


def test_r7_8_a_reason_of_500_printable_characters_with_non_ascii_is_well_formed() -> None:
    assert parse_request(signed(reason="é" * 500)).reason == "é" * 500


def test_r7_8_a_validity_of_exactly_10_minutes_is_well_formed() -> None:
    assert parse_request(signed(expires_at=fmt_ts(NOW + timedelta(minutes=10))))


def test_r7_8_identical_requests_have_the_same_digest_and_changed_ones_another() -> None:
    assert parse_request(signed()).digest == parse_request(signed()).digest
    assert parse_request(signed()).digest != parse_request(signed(reason="other")).digest


def _drop(name: str) -> dict[str, Any]:
    req = signed()
    del req[name]
    return req


MALFORMED: list[tuple[str, object]] = [
    ("not_an_object", ["force_advance"]),
    ("null", None),
    ("unknown_action", signed(action="delete_account")),
    ("missing_action", _drop("action")),
    ("missing_signature", _drop("signature")),
    ("missing_expires_at", _drop("expires_at")),
    ("missing_target_phase_key", _drop("target_phase")),
    ("extra_field", signed(note="hi")),
    ("policy_field_on_an_account_action", signed(policy="{}")),
    ("integer_value", signed(issued_at=1795000000)),
    ("boolean_value", signed(reason=True)),
    ("list_value", signed(reason=["a"])),
    ("object_value", signed(target_phase={"phase": "proof"})),
    ("wrong_version", signed(v="phaseguard-override/2")),
    ("null_version", signed(v=None)),
    ("signature_uppercase", {**signed(), "signature": signed()["signature"].upper()}),
    ("signature_short", {**signed(), "signature": "ab" * 31}),
    ("signature_not_hex", {**signed(), "signature": "zz" * 32}),
    ("signature_null", {**signed(), "signature": None}),
    ("request_id_not_a_uuid", signed(request_id="request-1")),
    ("request_id_null", signed(request_id=None)),
    ("request_id_uuid1", signed(request_id="c232ab00-9414-11ec-b3c8-9f6bdeced846")),
    ("request_id_uppercase", signed(request_id=REQUEST_ID.upper())),
    ("request_id_braces", signed(request_id="{" + REQUEST_ID + "}")),
    ("request_id_no_dashes", signed(request_id=REQUEST_ID.replace("-", ""))),
    ("operator_id_null", signed(operator_id=None)),
    ("operator_id_empty", signed(operator_id="")),
    ("operator_id_with_space", signed(operator_id="alice smith")),
    ("operator_id_too_long", signed(operator_id="a" * 65)),
    ("reason_null", signed(reason=None)),
    ("reason_empty", signed(reason="")),
    ("reason_blank", signed(reason="   ")),
    ("reason_501_characters", signed(reason="x" * 501)),
    ("reason_newline", signed(reason="line one\nline two")),
    ("reason_tab", signed(reason="a\tb")),
    ("reason_nul", signed(reason="a\x00b")),
    ("reason_line_separator", signed(reason="a\u2028b")),
    ("issued_at_null", signed(issued_at=None)),
    ("expires_before_issued", signed(expires_at=fmt_ts(NOW - timedelta(seconds=1)))),
    ("expires_at_issued", signed(expires_at=fmt_ts(NOW))),
    ("valid_10_minutes_and_1_second", signed(expires_at=fmt_ts(NOW + timedelta(minutes=10,
                                                                               seconds=1)))),
    ("deployment_id_null", signed(deployment_id=None)),
    ("deployment_id_empty", signed(deployment_id="")),
    ("account_id_null", signed(account_id=None)),
    ("account_id_invalid", signed(account_id="not valid!")),
    ("account_id_too_long", signed(account_id="a" * 65)),
    ("expected_phase_null", signed(expected_phase=None)),
    ("expected_phase_unknown", signed(expected_phase="gold")),
    ("force_advance_without_target", signed(target_phase=None)),
    ("rollback_without_target", signed("rollback", target_phase=None)),
    ("rollback_to_no_phase", signed("rollback", target_phase="basement")),
    ("acknowledge_with_target", signed("acknowledge", target_phase="proof")),
    ("reset_epoch_with_target", signed("reset_epoch", target_phase="proof")),
    ("policy_apply_with_account", signed("policy_apply", account_id="acct-1")),
    ("policy_apply_with_expected_phase", signed("policy_apply", expected_phase="proof")),
    ("policy_apply_with_target", signed("policy_apply", target_phase="proof")),
    ("policy_apply_without_policy", signed("policy_apply", policy=None)),
    ("policy_apply_without_expected_version", signed("policy_apply",
                                                     expected_policy_version=None)),
    ("policy_apply_missing_policy_key", {k: v for k, v in signed("policy_apply").items()
                                         if k != "policy"}),
]


@pytest.mark.parametrize("raw", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_r7_8_a_request_not_of_the_r7_8_shape_is_malformed(raw: object) -> None:
    with pytest.raises(Malformed):
        parse_request(raw)


# -- timestamps ------------------------------------------------------------------------------------


def test_r7_8_timestamps_are_formatted_in_utc_to_the_second() -> None:
    from zoneinfo import ZoneInfo

    at = datetime(2026, 11, 23, 21, 17, 49, 999_999, tzinfo=ZoneInfo("America/New_York"))

    assert fmt_ts(at) == "2026-11-24T02:17:49Z"


def test_r7_8_a_timestamp_parses_to_an_aware_utc_instant() -> None:
    assert parse_ts("2026-11-24T02:17:49Z") == NOW


@pytest.mark.parametrize("text", [
    "2026-11-24T02:17:49+00:00",
    "2026-11-24T02:17:49",
    "2026-11-24 02:17:49Z",
    "2026-11-24T02:17:49.000Z",
    "2026-11-24T02:17:49z",
    "2026-11-24t02:17:49Z",
    "2026-11-24T02:17Z",
    "2026-11-24",
    "20261124T021749Z",
    " 2026-11-24T02:17:49Z",
    "2026-11-24T02:17:49Z\n",
    "2026-13-01T00:00:00Z",
    "2026-02-30T00:00:00Z",
    "2026-11-24T24:00:00Z",
    "2026-11-24T02:60:00Z",
    "٢٠٢٦-11-24T02:17:49Z",
    "",
])
def test_r7_8_a_timestamp_in_any_other_form_is_malformed(text: str) -> None:
    with pytest.raises(Malformed):
        parse_ts(text)


# -- key derivation -------------------------------------------------------------------------


def test_r7_9_the_key_is_pbkdf2_hmac_sha256_of_the_password_and_salt() -> None:
    # few iterations keep the unit folder fast; the stored parameters are 600,000 (below)
    params = KdfParams(KDF_ALG, 1000, bytes(range(16)), DEPLOYMENT)

    key = derive_key("correct horse battery staple 42", params)

    assert key == hashlib.pbkdf2_hmac("sha256", b"correct horse battery staple 42",
                                      bytes(range(16)), 1000)
    assert len(key) == 32


def test_r7_9_a_new_deployment_uses_600000_iterations_of_pbkdf2_hmac_sha256() -> None:
    assert (KDF_ALG, KDF_ITERATIONS) == ("pbkdf2-hmac-sha256", 600_000)


def test_r7_9_kdf_parameters_round_trip_through_their_stored_fields() -> None:
    params = KdfParams(KDF_ALG, KDF_ITERATIONS, bytes(range(16)), DEPLOYMENT)

    stored = params.as_fields()

    assert stored == {"alg": "pbkdf2-hmac-sha256", "iterations": "600000",
                      "salt": "000102030405060708090a0b0c0d0e0f", "deployment_id": DEPLOYMENT}
    assert KdfParams.from_fields(stored) == params


@pytest.mark.parametrize("change", [
    {"alg": "md5"},
    {"iterations": "1000"},
    {"iterations": "many"},
    {"salt": "00" * 15},
    {"salt": "not hex"},
])
def test_r7_9_weak_or_corrupt_kdf_parameters_are_refused(change: dict[str, str]) -> None:
    stored = {**KdfParams(KDF_ALG, KDF_ITERATIONS, bytes(16), DEPLOYMENT).as_fields(), **change}

    with pytest.raises(ValueError, match="P:ops:kdf"):
        KdfParams.from_fields(stored)


def test_r7_9_incomplete_kdf_parameters_are_refused() -> None:
    stored = KdfParams(KDF_ALG, KDF_ITERATIONS, bytes(16), DEPLOYMENT).as_fields()
    del stored["salt"]

    with pytest.raises(ValueError, match="P:ops:kdf"):
        KdfParams.from_fields(stored)


@pytest.mark.parametrize("password", ["", "x" * 19, "short password here"])
def test_r7_9_a_password_shorter_than_20_characters_is_refused(password: str) -> None:
    assert len(password) < MIN_PASSWORD_LENGTH == 20
    with pytest.raises(ValueError, match="20"):
        check_password(password)


@pytest.mark.parametrize("password", ["x" * 20, "é" * 20, "correct horse battery staple"])
def test_r7_9_a_password_of_20_characters_or_more_is_accepted(password: str) -> None:
    check_password(password)


def test_r7_9_the_password_is_counted_in_characters_not_bytes() -> None:
    with pytest.raises(ValueError, match="20"):
        check_password("é" * 19)  # 38 bytes of UTF-8, 19 characters
