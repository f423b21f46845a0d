"""Unit of work: WATCH -> load -> stage -> MULTI/EXEC with a bounded retry (STYLE habit 4-5).

`Staging` collects every write of one shard's transaction (state, history, events, dead letters,
ledger clean-up, XACK) so that the decide step never talks to Redis, and nothing is written
unless EXEC succeeds. Encoding happens while staging, before MULTI: Redis does not roll back a
command that fails inside EXEC.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from redis.exceptions import ResponseError, WatchError

from worker.domain.decide import Emitted, Record
from worker.domain.model import AccountState
from worker.store.codec import encode_state
from worker.store.keys import CONSUMER_GROUP, EVENTS_MAXLEN, Keys

T = TypeVar("T")
MAX_ATTEMPTS = 20  # WATCH conflicts before giving up on one transaction


class LeaseLost(Exception):
    """This worker no longer owns the shard: stop, never commit (R-10.1)."""


class Contention(Exception):
    """Too many concurrent changes: the batch stays pending and is retried later."""


def json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)  # Decimal and date: exact text


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=json_default, sort_keys=True)


def event_fields(ev: Emitted, *, account_id: str | None, event_id: str, occurred_at: datetime,
                 caused_by: str) -> dict[str, str]:
    """The stream entry of an event (R-9.4): `type` and the whole envelope as JSON `data`."""
    body = {
        "event_id": event_id, "schema_version": 1, "type": ev.type, "account_id": account_id,
        "occurred_at": occurred_at.isoformat(), "effective_at": ev.effective_at.isoformat(),
        "trading_day": None if ev.trading_day is None else ev.trading_day.isoformat(),
        "caused_by": caused_by, "payload": ev.payload,
    }
    return {"type": ev.type, "data": dumps(body)}


def history_fields(rec: Record, *, occurred_at: datetime, caused_by: str) -> dict[str, str]:
    body = dict(rec.payload)
    body.setdefault("occurred_at", occurred_at.isoformat())
    body.setdefault("caused_by", caused_by)
    return {"type": rec.type, "data": dumps(body)}


class Staging:
    """Writes of one transaction, encoded up front and replayed into MULTI in order."""

    def __init__(self, keys: Keys, shard: int, events_maxlen: int = EVENTS_MAXLEN) -> None:
        self.keys = keys
        self.shard = shard
        self.events_maxlen = events_maxlen  # the policy's delivery.events_maxlen
        self.ops: list[Callable[[Pipeline], object]] = []
        self.acks: list[str] = []
        self.event_count = 0

    def state(self, st: AccountState, extra: dict[str, str] | None = None,
              previous: dict[str, str] | None = None) -> dict[str, str]:
        """Stage the state hash; given `previous` (what the hash holds now), only the fields
        that differ from it. Returns what the hash holds after the write."""
        fields = encode_state(st)
        if extra:
            fields.update(extra)
        changed = fields
        if previous is not None:
            changed = {f: v for f, v in fields.items() if previous.get(f) != v}
        if changed:
            key = self.keys.state(self.shard, st.account_id)
            self.ops.append(lambda p: p.hset(key, mapping=changed))  # type: ignore[arg-type]
        return fields if previous is None else {**previous, **fields}

    def history(self, account_id: str, rec: Record, occurred_at: datetime, caused_by: str) -> None:
        fields = history_fields(rec, occurred_at=occurred_at, caused_by=caused_by)
        key = self.keys.history(self.shard, account_id)
        self.ops.append(lambda p: p.xadd(key, fields))  # type: ignore[arg-type]

    def event(self, account_id: str | None, ev: Emitted, occurred_at: datetime,
              caused_by: str) -> None:
        self.event_count += 1
        fields = event_fields(ev, account_id=account_id, event_id=f"{caused_by}/{self.event_count}",
                              occurred_at=occurred_at, caused_by=caused_by)
        key = self.keys.events(self.shard)
        self.ops.append(lambda p: p.xadd(key, fields,  # type: ignore[arg-type]
                                         maxlen=self.events_maxlen,
                                         approximate=True))

    def deadletter(self, *, reason: str, error: str, source_id: str, type_: str, data: str,
                   account_id: str | None) -> None:
        fields = {"reason": reason, "error": error[:2000], "source_id": source_id,
                  "type": type_, "data": data, "account_id": account_id or ""}
        key = self.keys.deadletter(self.shard)
        self.ops.append(lambda p: p.xadd(key, fields))  # type: ignore[arg-type]

    def raw(self, op: Callable[[Pipeline], object]) -> None:
        self.ops.append(op)

    def ack(self, entry_id: str) -> None:
        self.acks.append(entry_id)

    def apply(self, pipe: Pipeline) -> None:
        for op in self.ops:
            op(pipe)
        if self.acks:
            pipe.xack(self.keys.inbox(self.shard), CONSUMER_GROUP, *self.acks)


def transact(client: redis.Redis, watch: list[str], gather: Callable[[Pipeline], T],
             stage: Callable[[T], Staging], *, lease_key: str | None = None,
             owner: str | None = None, attempts: int = MAX_ATTEMPTS) -> T:
    """Run gather -> stage -> EXEC under WATCH, retrying on conflicts; returns what gather read.

    `gather` reads through the pipeline while it is in immediate (WATCH) mode. When a lease key
    is given it is WATCHed too and must hold `owner`, so a worker that lost its lease cannot
    commit (R-10.1).
    """
    keys = ([lease_key] if lease_key else []) + watch

    def begin(pipe: Pipeline) -> T:
        pipe.watch(*keys)  # type: ignore[no-untyped-call]
        if lease_key is not None:
            _check_lease(lease_key, pipe.get(lease_key), owner)
        return gather(pipe)

    return _run(client, begin, stage, attempts)


def transact_reads(client: redis.Redis, watch: list[str], reads: list[Command],
                   parse: Callable[[Pipeline, list[Any]], T], stage: Callable[[T], Staging], *,
                   lease_key: str, owner: str, attempts: int = MAX_ATTEMPTS) -> T:
    """`transact` for a hot path: WATCH, the lease check and `reads` in one round trip.

    The commands go out together on the connection the transaction then uses, WATCH first, so
    every read is guarded by it; `parse` gets the pipeline (still watching, for any further
    read) and the replies of `reads`, in order.
    """
    keys = [lease_key, *watch]

    def begin(pipe: Pipeline) -> T:
        replies = round_trip(pipe, [("WATCH", *keys), ("GET", lease_key), *reads])
        _check_lease(lease_key, replies[1], owner)
        return parse(pipe, replies[2:])

    return _run(client, begin, stage, attempts)


Command = tuple[str | int | float | bytes, ...]


def round_trip(pipe: Pipeline, commands: list[Command]) -> list[Any]:
    """Send `commands` on the pipeline's own connection in one write and read every reply (with
    redis-py's response callbacks), without leaving its immediate mode: this is how a WATCH and
    the reads it guards share a round trip, which redis-py's pipeline API does not offer (it
    runs a WATCH, and everything after it, one command at a time).

    The first error reply is raised after all replies are read; a connection that fails
    mid-way is closed, never handed back half-read.
    """
    conn = pipe.connection
    if conn is None:
        conn = pipe.connection = pipe.connection_pool.get_connection()
    replies: list[Any] = []
    try:
        conn.send_packed_command(conn.pack_commands(commands))  # type: ignore[no-untyped-call]
        for args in commands:
            try:
                # parse_response notes a WATCH (pipe.watching), so reset() sends UNWATCH
                replies.append(pipe.parse_response(  # type: ignore[no-untyped-call]
                    conn, str(args[0])))
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        conn.disconnect()  # type: ignore[no-untyped-call]
        pipe.watching = False  # the connection is gone, and its WATCH with it
        raise
    for reply in replies:
        if isinstance(reply, ResponseError):
            raise reply
    return replies


def _check_lease(lease_key: str, holder: object, owner: str | None) -> None:
    if holder is None or _text(holder) != owner:
        raise LeaseLost(lease_key)


def _run(client: redis.Redis, begin: Callable[[Pipeline], T], stage: Callable[[T], Staging],
         attempts: int) -> T:
    with client.pipeline() as pipe:
        for _ in range(attempts):
            try:
                data = begin(pipe)
                staging = stage(data)
                pipe.multi()
                staging.apply(pipe)
                pipe.execute()
                return data
            except WatchError:
                continue
            finally:
                pipe.reset()
    raise Contention(f"gave up after {attempts} conflicting attempts")


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
