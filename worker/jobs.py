"""RQ entry points at stable dotted paths (`worker.jobs.<name>`), each with one JSON argument.

Every job runs through the same unit of work as the consumer: state, history, events and audit
commit in one MULTI/EXEC on the account's shard. Jobs return a JSON outcome; they never raise for
an operator mistake (the outcome says `refused` with a reason).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

import redis
from redis.client import Pipeline

from contracts.shard import ACCOUNT_ID_PATTERN
from worker.consumer import calendar_blob
from worker.domain.actions import ActionResult, act_advance
from worker.domain.decide import Emitted, Record, new_account
from worker.domain.model import AccountState, Registration
from worker.store.codec import decode_state
from worker.store.keys import Keys
from worker.store.runtime import PolicyHolder, fetch_policy, load_keys, policy_for, redis_now
from worker.store.uow import Staging, dumps, transact

_ACCOUNT_RE = re.compile(ACCOUNT_ID_PATTERN)
_CURRENCY_RE = re.compile(r"^[A-Z0-9]{2,10}$")

JSONDict = dict[str, Any]


# -- the job's environment ----------------------------------------------------------------------


def _connection() -> redis.Redis:
    from rq import get_current_job

    job = get_current_job()
    if job is None:  # pragma: no cover - jobs only run inside an RQ worker
        raise RuntimeError("not running inside an RQ job")
    return job.connection


def _prefix() -> str:
    return os.environ.get("PHASE_KEY_PREFIX", "phase")


def _refused(reason: str, **extra: Any) -> JSONDict:
    return {"outcome": "refused", "reason": reason, **extra}


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def load_state(client: redis.Redis, keys: Keys, k: int, account_id: str) -> AccountState | None:
    raw = client.hgetall(keys.state(k, account_id))
    if not raw:
        return None
    return decode_state({_text(f): _text(v) for f, v in raw.items()})


def stage_effects(staging: Staging, account_id: str, events: tuple[Emitted, ...],
                  history: tuple[Record, ...], now: datetime, cause: str) -> None:
    for rec in history:
        staging.history(account_id, rec, now, cause)
    for ev in events:
        staging.event(account_id, ev, now, cause)


# -- accounts (R-7.7) ---------------------------------------------------------------------------


def accounts_add(request: JSONDict, *, client: redis.Redis | None = None,
                 prefix: str | None = None) -> JSONDict:
    """Register an account in experience.

    Request: `{account_id, clock?, starts_at?, currency?, operator_id}`.
    """
    client = client or _connection()
    keys = load_keys(client, prefix or _prefix())
    policy = fetch_policy(client, keys)
    account_id = str(request.get("account_id", ""))
    if not _ACCOUNT_RE.fullmatch(account_id):
        return _refused("invalid_account_id")
    clock = request.get("clock") or "redis"
    if clock not in ("redis", "message"):
        return _refused("invalid_clock")
    currency = request.get("currency") or policy.currency
    if not _CURRENCY_RE.fullmatch(str(currency)):
        return _refused("invalid_currency")
    starts_at: datetime | None = None
    if clock == "message":
        try:
            starts_at = datetime.fromisoformat(str(request.get("starts_at")))
        except ValueError:
            return _refused("invalid_starts_at")
        if starts_at.tzinfo is None:
            return _refused("invalid_starts_at")
    elif currency != policy.currency:
        return _refused("currency_mismatch", detail="only replay accounts choose a currency")
    k = keys.shard(account_id)
    result: JSONDict = {}

    def gather(pipe: Pipeline) -> datetime | None:
        exists = pipe.hexists(keys.registry(k), account_id)
        return None if exists else redis_now(pipe.time())

    def stage(now: datetime | None) -> Staging:
        staging = Staging(keys, k)
        if now is None:
            result.update(_refused("already_registered"))
            return staging
        reg = Registration(account_id, "message" if clock == "message" else "redis",
                           str(currency), now, starts_at)
        state = new_account(reg, policy)
        body = {"clock": clock, "currency": currency, "created": now.isoformat(),
                "starts_at": None if starts_at is None else starts_at.isoformat(),
                "retired_at": None}
        staging.raw(lambda p: p.hset(keys.registry(k), account_id, dumps(body)))
        staging.state(state)
        if state.current_day is not None and reg.clock == "message":
            # the entry script decides a replay account's `at` on its own calendar,
            # needed from registration on, before the worker has seen any of its messages
            blob = calendar_blob(policy, state.current_day)
            staging.raw(lambda p: p.set(keys.account_calendar(k, account_id), blob))
        staging.history(account_id, Record("registered", {**body, "operator_id":
                                                          request.get("operator_id")}),
                        now, "accounts_add")
        result.update({"outcome": "applied", "account_id": account_id, "shard": k,
                       "phase": state.phase})
        return staging

    transact(client, [keys.registry(k)], gather, stage)
    return result


def accounts_retire(request: JSONDict, *, client: redis.Redis | None = None,
                    prefix: str | None = None) -> JSONDict:
    """Stop accepting an account's input (R-7.7): entries refused, messages dead-lettered."""
    client = client or _connection()
    keys = load_keys(client, prefix or _prefix())
    account_id = str(request.get("account_id", ""))
    k = keys.shard(account_id)
    result: JSONDict = {}

    def gather(pipe: Pipeline) -> tuple[JSONDict | None, datetime]:
        raw = pipe.hget(keys.registry(k), account_id)
        return (json.loads(raw) if raw else None), redis_now(pipe.time())

    def stage(data: tuple[JSONDict | None, datetime]) -> Staging:
        reg, now = data
        staging = Staging(keys, k)
        if reg is None:
            result.update(_refused("unknown_account"))
        elif reg.get("retired_at"):
            result.update({"outcome": "noop", "retired_at": reg["retired_at"]})
        else:
            reg["retired_at"] = now.isoformat()
            staging.raw(lambda p: p.hset(keys.registry(k), account_id, dumps(reg)))
            staging.history(account_id, Record("retired", {"operator_id":
                                                           request.get("operator_id")}),
                            now, "accounts_retire")
            result.update({"outcome": "applied", "retired_at": reg["retired_at"]})
        return staging

    transact(client, [keys.registry(k)], gather, stage)
    return result


# -- advance (R-7.1) ----------------------------------------------------------------------------


def advance(request: JSONDict, *, client: redis.Redis | None = None,
            prefix: str | None = None) -> JSONDict:
    """Re-evaluate the gate at execution; one phase up if eligible, else refused with criteria."""
    client = client or _connection()
    keys = load_keys(client, prefix or _prefix())
    policy = PolicyHolder(client, keys).refresh(force=True)
    account_id = str(request.get("account_id", ""))
    k = keys.shard(account_id)
    cause = str(request.get("request_id") or f"advance:{account_id}")
    result: JSONDict = {}

    def gather(pipe: Pipeline) -> tuple[JSONDict | None, AccountState | None, datetime]:
        raw = pipe.hget(keys.registry(k), account_id)
        return ((json.loads(raw) if raw else None), load_state(pipe, keys, k, account_id),
                redis_now(pipe.time()))

    def stage(data: tuple[JSONDict | None, AccountState | None, datetime]) -> Staging:
        reg, st, now = data
        staging = Staging(keys, k)
        if reg is None:
            result.update(_refused("unknown_account"))
            return staging
        if reg.get("retired_at"):
            result.update(_refused("account_retired"))
            return staging
        if st is None:
            result.update(_refused("state_unavailable"))
            return staging
        target = request.get("target_phase")
        # a replay account's gate runs on the replay profile, in its own currency
        res: ActionResult = act_advance(st, policy_for(policy, st.clock, st.currency), now,
                                        operator_id=request.get("operator_id"), cause=cause,
                                        target=target)
        audit = {"action": "advance", "operator_id": request.get("operator_id"),
                 "outcome": res.outcome, "reason": res.reason, "from_phase": st.phase}
        if res.outcome == "applied":
            staging.state(res.state)
            stage_effects(staging, account_id, res.events, res.history, now, cause)
            audit["to_phase"] = res.state.phase
        else:
            staging.history(account_id, Record("operator_action", audit), now, cause)
        result.update({"outcome": res.outcome, "reason": res.reason or None,
                       "phase": res.state.phase, "validation": res.detail})
        return staging

    transact(client, [keys.state(k, account_id), keys.registry(k)], gather, stage)
    return result


# -- dead letters (R-7.7b, R-10.6) --------------------------------------------------------------


def _deadletter_job(request: JSONDict, requeue: bool, client: redis.Redis | None,
                    prefix: str | None) -> JSONDict:
    client = client or _connection()
    keys = load_keys(client, prefix or _prefix())
    try:
        k = int(request["shard"])
        entry_id = str(request["entry_id"])
    except (KeyError, TypeError, ValueError):
        return _refused("malformed")
    if not 0 <= k < keys.shards:
        return _refused("malformed", detail="no such shard")
    result: JSONDict = {}
    dl_key = keys.deadletter(k)

    def gather(pipe: Pipeline) -> tuple[Any, AccountState | None, int, datetime]:
        rows: Any = pipe.xrange(dl_key, entry_id, entry_id)
        st = None
        pending = 0
        if rows:
            acc = _text(rows[0][1].get(b"account_id", rows[0][1].get("account_id", b"")))
            if acc:
                pipe.watch(keys.state(k, acc))  # type: ignore[no-untyped-call]
                st = load_state(pipe, keys, k, acc)
                pending = int(_text(pipe.hget(keys.state(k, acc), "dead_letters") or b"0"))
        return rows, st, pending, redis_now(pipe.time())

    def stage(data: tuple[Any, AccountState | None, int, datetime]) -> Staging:
        rows, st, pending, now = data
        staging = Staging(keys, k)
        if not rows:
            result.update(_refused("not_found"))
            return staging
        fields = {_text(a): _text(b) for a, b in rows[0][1].items()}
        if requeue and st is not None and fields.get("type") == "trade_closed":
            try:
                trade_id = json.loads(fields["data"]).get("trade_id")
            except (ValueError, AttributeError):
                trade_id = None
            if trade_id is not None and any(t.trade_id == trade_id for t in st.recent):
                result.update(_refused("already_applied", trade_id=trade_id))
                return staging
        if requeue:
            msg = {"type": fields.get("type", ""), "data": fields.get("data", ""),
                   "requeued_from": entry_id}
            staging.raw(lambda p: p.xadd(keys.inbox(k), msg))  # type: ignore[arg-type]
        staging.raw(lambda p: p.xdel(dl_key, entry_id))
        if st is not None:
            remaining = max(0, pending - 1)
            st2 = replace(st, degraded=remaining > 0, version=st.version + 1, updated_at=now)
            staging.state(st2, {"dead_letters": str(remaining)})
            staging.history(st.account_id, Record(
                "deadletter_requeued" if requeue else "deadletter_discarded",
                {"entry_id": entry_id, "operator_id": request.get("operator_id"),
                 "reason": fields.get("reason")}), now, entry_id)
        result.update({"outcome": "applied", "action": "requeue" if requeue else "discard",
                       "entry_id": entry_id})
        return staging

    transact(client, [dl_key], gather, stage)
    return result


def deadletter_requeue(request: JSONDict, *, client: redis.Redis | None = None,
                       prefix: str | None = None) -> JSONDict:
    """Requeue one dead letter: XADD with `requeued_from` + XDEL, one transaction (R-10.6)."""
    return _deadletter_job(request, True, client, prefix)


def deadletter_discard(request: JSONDict, *, client: redis.Redis | None = None,
                       prefix: str | None = None) -> JSONDict:
    """Discard one dead letter (audited)."""
    return _deadletter_job(request, False, client, prefix)


# -- signed actions (R-7.2 .. R-7.7a): the request is the job's only argument ---------------------


def _signed(action: str, request: JSONDict, client: redis.Redis | None,
            prefix: str | None) -> JSONDict:
    from worker.ops.service import policy_effect, run_job

    effect = policy_effect if action == "policy_apply" else None
    return run_job(request, action, client=client, prefix=prefix, effect_for=effect)


def acknowledge(request: JSONDict, *, client: redis.Redis | None = None,
                prefix: str | None = None) -> JSONDict:
    """Clear the circuit breaker (R-7.2); `noop` when it is not tripped."""
    return _signed("acknowledge", request, client, prefix)


def force_advance(request: JSONDict, *, client: redis.Redis | None = None,
                  prefix: str | None = None) -> JSONDict:
    """One phase up without the gate (R-7.3); records the bypassed evaluation."""
    return _signed("force_advance", request, client, prefix)


def rollback(request: JSONDict, *, client: redis.Redis | None = None,
             prefix: str | None = None) -> JSONDict:
    """To a named lower phase (R-7.4)."""
    return _signed("rollback", request, client, prefix)


def reset_epoch(request: JSONDict, *, client: redis.Redis | None = None,
                prefix: str | None = None) -> JSONDict:
    """Restart the epoch's counters and windows (R-7.5); an override incident."""
    return _signed("reset_epoch", request, client, prefix)


def clear_reduction(request: JSONDict, *, client: redis.Redis | None = None,
                    prefix: str | None = None) -> JSONDict:
    """Remove the size reduction (R-7.6)."""
    return _signed("clear_reduction", request, client, prefix)


def policy_apply(request: JSONDict, *, client: redis.Redis | None = None,
                 prefix: str | None = None) -> JSONDict:
    """Validate and install a new policy (R-7.7a); audited on shard 0."""
    return _signed("policy_apply", request, client, prefix)


# -- archive (R-7.7c, R-8.1): signed; phasectl exported the history before sending it ------------


def archive(request: JSONDict, *, client: redis.Redis | None = None,
            prefix: str | None = None) -> JSONDict:
    """Trim the account's history below the request's `issued_at`, audited (R-7.7c).

    Not through `_signed`: the effect plans the trim with a connection (worker.ops.archive).
    """
    from worker.ops.archive import effect_for
    from worker.ops.service import run_job

    conn = client or _connection()
    keys = load_keys(conn, prefix or _prefix())
    return run_job(request, "archive", client=conn, prefix=keys.prefix,
                   effect_for=effect_for(conn, keys))
