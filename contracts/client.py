"""The small client the trading bot and other services use (R-9.5).

Publishes `trade_closed` / `session_ended` (validated first, decimals as strings), asks for atomic
pre-trade entry decisions (one EVALSHA of `entry.lua`), reads an account's public status and
follows every shard's events. It refuses locally what `P:meta` does not accept.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any, Literal

import redis
from redis.exceptions import NoScriptError

from contracts import keys as wire
from contracts.codec import encode_message
from contracts.errors import InvalidMessage
from contracts.events import Event, decode_event
from contracts.messages import SessionEnded, TradeClosed
from contracts.shard import shard_of, validate_account_id


def entry_script() -> str:
    """The Lua source of the entry decision, shipped with the contracts package."""
    return resources.files("contracts").joinpath("entry.lua").read_text(encoding="utf-8")


class ClientError(Exception):
    """The deployment refuses or cannot serve the request (not a decision: those are answers)."""


@dataclass(frozen=True, slots=True)
class EntryDecision:
    """The answer of request_entry (SPEC §4)."""

    decision_id: str
    allowed: bool
    reason: str
    phase: str | None
    position_size: Decimal
    next_allowed_at: datetime | None
    remaining_today: int | None
    trading_day: str | None = None

    @classmethod
    def from_json(cls, raw: str | bytes) -> EntryDecision:
        body = json.loads(raw)
        nxt = body.get("next_allowed_at")
        return cls(
            decision_id=str(body["decision_id"]), allowed=bool(body["allowed"]),
            reason=str(body["reason"]), phase=body.get("phase"),
            position_size=Decimal(str(body.get("position_size") or "0.00")),
            next_allowed_at=None if nxt is None else datetime.fromtimestamp(float(nxt), tz=UTC),
            remaining_today=body.get("remaining_today"), trading_day=body.get("trading_day"),
        )


class PhaseguardClient:
    """One client per process; connection and key prefix come from the caller."""

    def __init__(self, connection: redis.Redis, prefix: str = wire.DEFAULT_PREFIX) -> None:
        self.r = connection
        self.prefix = wire.validate_prefix(prefix)
        self._meta: dict[str, Any] | None = None

    # -- deployment facts ---------------------------------------------------------------------
    def meta(self, refresh: bool = False) -> dict[str, Any]:
        if self._meta is None or refresh:
            raw = self.r.hgetall(wire.meta(self.prefix))
            if not raw:
                raise ClientError(f"deployment {self.prefix!r} is not initialised (no P:meta)")
            meta = {_s(k): _s(v) for k, v in raw.items()}
            self._meta = {
                "shards": int(meta["shards"]),
                "schema_versions": json.loads(meta.get("schema_versions", "{}")),
                "fields": json.loads(meta.get("fields", "{}")),
                "entry_script_sha": meta.get("entry_script_sha"),
                "deployment_id": meta.get("deployment_id"),
            }
        return self._meta

    def shard(self, account_id: str) -> int:
        return shard_of(validate_account_id(account_id), int(self.meta()["shards"]))

    # -- publishing -----------------------------------------------------------------------------
    def _publish(self, msg: TradeClosed | SessionEnded) -> str:
        fields = encode_message(msg)
        type_ = fields["type"]
        meta = self.meta()
        accepted_versions = meta["schema_versions"].get(type_, [])
        if msg.schema_version not in accepted_versions:
            raise InvalidMessage("unsupported_schema_version",
                                 f"{type_} schema_version {msg.schema_version} is not accepted "
                                 f"by this deployment (accepts {accepted_versions})")
        sent = set(json.loads(fields["data"]))
        unknown = sent - set(meta["fields"].get(type_, sent))
        if unknown:
            raise InvalidMessage("unknown_field", f"fields not accepted by this deployment: "
                                                  f"{sorted(unknown)}")
        entry_id = self.r.xadd(wire.inbox(self.prefix, self.shard(msg.account_id)),
                               fields)  # type: ignore[arg-type]
        return _s(entry_id)

    def publish_trade_closed(self, msg: TradeClosed | dict[str, Any]) -> str:
        """Validate and publish one closed position; returns the inbox entry id."""
        model = msg if isinstance(msg, TradeClosed) else TradeClosed.model_validate(msg)
        return self._publish(model)

    def publish_session_ended(self, msg: SessionEnded | dict[str, Any]) -> str:
        model = msg if isinstance(msg, SessionEnded) else SessionEnded.model_validate(msg)
        return self._publish(model)

    # -- entry decisions -------------------------------------------------------------------------
    def request_entry(self, account_id: str, mode: Literal["live", "paper"],
                      kind: Literal["regular", "emergency_exit", "manual"] = "regular",
                      request_id: str | None = None, position_id: str | None = None,
                      at: datetime | None = None) -> EntryDecision:
        """One atomic decision (SPEC §4); `at` is honoured only for clock = message accounts."""
        if mode not in ("live", "paper"):
            raise InvalidMessage("invalid_field", f"mode must be live or paper, not {mode!r}")
        if kind not in ("regular", "emergency_exit", "manual"):
            raise InvalidMessage("invalid_field", f"unknown kind {kind!r}")
        if at is not None and at.tzinfo is None:
            raise InvalidMessage("naive_timestamp", "at must be timezone-aware")
        k = self.shard(account_id)
        keys = [wire.registry(self.prefix, k), wire.state(self.prefix, k, account_id),
                wire.entries(self.prefix, k, account_id), wire.calendar(self.prefix, k),
                wire.account_calendar(self.prefix, k, account_id)]
        args = [account_id, mode, kind, request_id or str(uuid.uuid4()), position_id or "",
                "" if at is None else repr(at.timestamp())]
        sha = self.meta().get("entry_script_sha")
        try:
            if not sha:
                raise NoScriptError("no script sha published")
            raw = self.r.evalsha(sha, len(keys), *keys, *args)
        except NoScriptError:
            # after a Redis restart the script cache is empty: load our shipped copy again
            sha = self.r.script_load(entry_script())
            self.meta()["entry_script_sha"] = sha
            raw = self.r.evalsha(sha, len(keys), *keys, *args)
        return EntryDecision.from_json(raw)

    # -- reading -----------------------------------------------------------------------------------
    def status(self, account_id: str) -> dict[str, str]:
        """The public read model of the account (R-9.2); private fields are left out."""
        k = self.shard(account_id)
        raw = self.r.hgetall(wire.state(self.prefix, k, account_id))
        return {_s(f): _s(v) for f, v in raw.items() if _s(f) != "core"}

    def subscribe(self, *, start: Literal["now", "beginning"] = "now", block_ms: int = 1000,
                  max_idle: int | None = None) -> Iterator[tuple[str, Event]]:
        """Follow every shard's events in order per shard: yields (stream entry id, Event).

        `max_idle` stops after that many consecutive empty polls (None: follow forever).
        """
        shards = int(self.meta()["shards"])
        streams = [wire.events(self.prefix, k) for k in range(shards)]
        last: dict[str, str] = {}
        for stream in streams:
            # resolve "now" per stream once: "$" on every call would skip what arrived between
            tail = self.r.xrevrange(stream, count=1) if start == "now" else []
            last[stream] = _s(tail[0][0]) if tail else "0-0"
        idle = 0
        while max_idle is None or idle < max_idle:
            res: Any = self.r.xread(last, block=block_ms, count=500)  # type: ignore[arg-type]
            if not res:
                idle += 1
                continue
            idle = 0
            for stream, entries in res:
                for entry_id, fields in entries:
                    last[_s(stream)] = _s(entry_id)
                    yield _s(entry_id), decode_event(fields)


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
