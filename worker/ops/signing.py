"""Signed operator requests (R-7.8, R-7.9): their shape, canonical form, HMAC and key derivation.

Pure functions only. The key is PBKDF2-HMAC-SHA256(password, salt, iterations) with the public
parameters from `P:ops:kdf`; the password never leaves the operator's machine and the derived key
never leaves the process that derived it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

VERSION = "phaseguard-override/1"
KDF_ALG = "pbkdf2-hmac-sha256"
KDF_ITERATIONS = 600_000
MIN_PASSWORD_LENGTH = 20
MAX_VALIDITY = timedelta(minutes=10)
MAX_REASON = 500
SIGNED_ACTIONS = frozenset({"acknowledge", "force_advance", "rollback", "reset_epoch",
                            "clear_reduction", "policy_apply", "archive"})
NEEDS_TARGET = frozenset({"force_advance", "rollback"})
PHASES = ("experience", "proof", "trial", "scaling")
FIELDS = ("v", "deployment_id", "request_id", "account_id", "action", "expected_phase",
          "target_phase", "operator_id", "reason", "issued_at", "expires_at")
POLICY_FIELDS = ("policy", "expected_policy_version")
_TS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$")  # ASCII digits
_HEX = re.compile(r"^[0-9a-f]{64}$")
_OPERATOR = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Malformed(ValueError):
    """The request does not have the shape of R-7.8 (refusal reason `malformed`)."""


@dataclass(frozen=True, slots=True)
class KdfParams:
    """The public key-derivation parameters stored in `P:ops:kdf` (not secret)."""

    alg: str
    iterations: int
    salt: bytes
    deployment_id: str

    def as_fields(self) -> dict[str, str]:
        return {"alg": self.alg, "iterations": str(self.iterations), "salt": self.salt.hex(),
                "deployment_id": self.deployment_id}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> KdfParams:
        try:
            params = cls(fields["alg"], int(fields["iterations"]), bytes.fromhex(fields["salt"]),
                         fields["deployment_id"])
        except (KeyError, ValueError) as exc:
            raise ValueError(f"P:ops:kdf is incomplete or corrupt: {exc}") from exc
        if params.alg != KDF_ALG or params.iterations < 100_000 or len(params.salt) < 16:
            raise ValueError("P:ops:kdf has unsupported or weak parameters")
        return params


def check_password(password: str, min_length: int = MIN_PASSWORD_LENGTH) -> None:
    """R-7.9: refuse a short password (the worker does not start with one)."""
    if len(password) < min_length:
        raise ValueError(f"the override password must have at least {min_length} "
                         "characters")


def derive_key(password: str, params: KdfParams) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), params.salt,
                               params.iterations)


def canonical(fields: dict[str, Any]) -> bytes:
    """The signed bytes (R-7.8): every field but `signature`, sorted, compact, ASCII."""
    body = {k: v for k, v in fields.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(fields: dict[str, Any], key: bytes) -> dict[str, Any]:
    """A copy of `fields` with its hex HMAC-SHA256 signature."""
    signature = hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()
    return {**{k: v for k, v in fields.items() if k != "signature"}, "signature": signature}


def signature_ok(fields: dict[str, Any], key: bytes) -> bool:
    expected = hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, str(fields.get("signature", "")))


def fmt_ts(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text: str) -> datetime:
    if not _TS.fullmatch(text):
        raise Malformed(f"timestamp {text!r} is not YYYY-MM-DDTHH:MM:SSZ")
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:  # the right shape but no such instant, e.g. month 13
        raise Malformed(f"timestamp {text!r} is not a valid instant") from exc


def new_request(*, deployment_id: str, action: str, operator_id: str, reason: str,
                account_id: str | None, expected_phase: str | None,
                target_phase: str | None, now: datetime,
                validity: timedelta = timedelta(minutes=5), policy: str | None = None,
                expected_policy_version: str | None = None) -> dict[str, Any]:
    """The unsigned fields of a request, as phasectl builds them."""
    fields: dict[str, Any] = {
        "v": VERSION, "deployment_id": deployment_id, "request_id": str(uuid.uuid4()),
        "account_id": account_id, "action": action, "expected_phase": expected_phase,
        "target_phase": target_phase, "operator_id": operator_id, "reason": reason,
        "issued_at": fmt_ts(now), "expires_at": fmt_ts(now + validity),
    }
    if action == "policy_apply":
        fields["policy"] = policy
        fields["expected_policy_version"] = expected_policy_version
    return fields


@dataclass(frozen=True, slots=True)
class Request:
    """A well-formed signed request (shape checked; signature not yet)."""

    fields: dict[str, Any]
    action: str
    operator_id: str
    account_id: str | None
    expected_phase: str | None
    target_phase: str | None
    reason: str
    request_id: str
    issued_at: datetime
    expires_at: datetime
    deployment_id: str

    @property
    def digest(self) -> str:
        """Identifies the payload: an identical resubmission has the same digest (R-7.12)."""
        return hashlib.sha256(canonical(self.fields)).hexdigest()


def parse_request(raw: object, max_validity: timedelta = MAX_VALIDITY) -> Request:
    """Check the shape of R-7.8; raise Malformed naming the first problem."""
    if not isinstance(raw, dict):
        raise Malformed("request is not a JSON object")
    action = raw.get("action")
    if action not in SIGNED_ACTIONS:
        raise Malformed(f"unknown action {action!r}")
    allowed = set(FIELDS) | {"signature"} | (set(POLICY_FIELDS) if action == "policy_apply"
                                             else set())
    extra = set(raw) - allowed
    missing = allowed - set(raw)
    if extra:
        raise Malformed(f"unknown fields {sorted(extra)}")
    if missing:
        raise Malformed(f"missing fields {sorted(missing)}")
    for key, value in raw.items():
        if value is not None and not isinstance(value, str):
            raise Malformed(f"{key} must be a string or null")
    if raw["v"] != VERSION:
        raise Malformed(f"v must be {VERSION}")
    sig = raw.get("signature")
    if not isinstance(sig, str) or not _HEX.fullmatch(sig):
        raise Malformed("signature must be 64 lowercase hex characters")
    try:
        rid = uuid.UUID(str(raw["request_id"]))
    except ValueError as exc:
        raise Malformed("request_id is not a UUID") from exc
    if rid.version != 4 or str(rid) != raw["request_id"]:
        raise Malformed("request_id must be a canonical UUID4")
    operator = raw["operator_id"]
    if not isinstance(operator, str) or not _OPERATOR.fullmatch(operator):
        raise Malformed("operator_id is missing or not a valid id")
    reason = raw["reason"]
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON \
            or not reason.isprintable():
        raise Malformed(f"reason must be 1-{MAX_REASON} printable characters")
    issued, expires = parse_ts(str(raw["issued_at"])), parse_ts(str(raw["expires_at"]))
    if expires <= issued or expires - issued > max_validity:
        raise Malformed("expires_at must be after issued_at and at most "
                        f"{int(max_validity.total_seconds())} s later")
    if not isinstance(raw["deployment_id"], str) or not raw["deployment_id"]:
        raise Malformed("deployment_id is missing")
    account, expected, target = raw["account_id"], raw["expected_phase"], raw["target_phase"]
    if action == "policy_apply":
        if account is not None or expected is not None or target is not None:
            raise Malformed("policy_apply takes no account_id, expected_phase or target_phase")
        if not isinstance(raw.get("policy"), str) or not isinstance(
                raw.get("expected_policy_version"), str):
            raise Malformed("policy_apply needs policy and expected_policy_version strings")
    else:
        if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
            raise Malformed("account_id is missing or invalid")
        if expected not in PHASES:
            raise Malformed("expected_phase must be a phase")
        if action in NEEDS_TARGET and target not in PHASES:
            raise Malformed(f"{action} needs target_phase")
        if action not in NEEDS_TARGET and target is not None:
            raise Malformed(f"{action} takes no target_phase")
    return Request(dict(raw), str(action), str(operator), account, expected, target,
                   str(reason), str(raw["request_id"]), issued, expires,
                   str(raw["deployment_id"]))
