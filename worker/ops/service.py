"""Verification and execution of signed operator requests (R-7.10 .. R-7.13).

Check order, each refusal with its own reason: not_configured -> malformed -> locked_out ->
(throttled) -> bad_signature -> issued_in_future / expired -> replay -> stale_request -> the
action's own rules. Every attempt, allowed or refused, is audited in the shard's overrides
stream and the account's history. The effect, its audit and the request's stored outcome
commit in one transaction on the account's shard (shard 0 for policy_apply).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from redis.client import Pipeline

from worker.domain import actions
from worker.domain.actions import ActionResult
from worker.domain.decide import Record
from worker.domain.model import AccountState
from worker.domain.policy import Policy, PolicyError, policy_from_json
from worker.ops import keyring
from worker.ops.signing import Malformed, Request, parse_request, signature_ok
from worker.store.codec import decode_state
from worker.store.keys import Keys
from worker.store.runtime import PolicyHolder, load_keys, policy_blob, policy_for, redis_now
from worker.store.uow import Staging, dumps, transact

JSONDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str = ""


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- audit ------------------------------------------------------------------------------------


def audit_record(req: JSONDict, outcome: str, reason: str, now: datetime,
                 detail: str = "") -> JSONDict:
    """What every attempt leaves behind (R-7.13): never the password, key or signature."""
    return {"at": now.isoformat(), "request_id": req.get("request_id"),
            "operator_id": req.get("operator_id"), "action": req.get("action"),
            "account_id": req.get("account_id"), "target_phase": req.get("target_phase"),
            "expected_phase": req.get("expected_phase"), "outcome": outcome, "reason": reason,
            "detail": detail, "request_reason": req.get("reason")}


def _audit_shard(keys: Keys, req: JSONDict, registered: bool) -> int:
    account = req.get("account_id")
    if registered and isinstance(account, str):
        return keys.shard(account)
    return 0


def write_audit(client: redis.Redis, keys: Keys, req: JSONDict, outcome: str, reason: str,
                now: datetime, detail: str = "") -> None:
    """Audit a refusal that changes nothing else (outside any effect transaction)."""
    account = req.get("account_id") if isinstance(req.get("account_id"), str) else None
    if req.get("action") == "policy_apply":
        account = None  # policy_apply is audited on shard 0, whatever account it names
    registered = False
    if account:
        try:
            registered = bool(client.hexists(keys.registry(keys.shard(account)), account))
        except redis.RedisError:
            registered = False
    k = _audit_shard(keys, req, registered)
    record = audit_record(req, outcome, reason, now, detail)
    pipe = client.pipeline(transaction=True)
    pipe.xadd(keys.overrides(k), {"data": dumps(record)})
    if registered and account:
        pipe.xadd(keys.history(k, account), {"type": "override_attempt", "data": dumps(record)})
    pipe.execute()


# -- lockout and throttle (R-7.11) --------------------------------------------------------------


def _locked(client: redis.Redis, keys: Keys, operator: str) -> bool:
    return bool(client.exists(keys.ops_lock(operator)))


def _throttled(client: redis.Redis, keys: Keys, policy: Policy) -> bool:
    """While brute force is suspected, one signature check per throttle period, globally."""
    if not client.exists(keys.ops_throttle):
        return False
    period = policy.overrides.global_throttle_seconds * 1000
    return not client.set(keys.ops_throttle_slot, "1", nx=True, px=max(1, period))


def record_failure(client: redis.Redis, keys: Keys, policy: Policy, operator: str,
                   now: datetime) -> bool:
    """Count a failed signature check; lock the operator / throttle everyone past the limits.

    Returns True when this failure locked the operator out.
    """
    o = policy.overrides
    ms = int(now.timestamp() * 1000)
    member = f"{ms}-{uuid.uuid4().hex[:8]}"
    pipe = client.pipeline(transaction=True)
    pipe.zadd(keys.ops_fails(operator), {member: ms})
    pipe.zremrangebyscore(keys.ops_fails(operator), "-inf", ms - o.operator_window_seconds * 1000)
    pipe.zcard(keys.ops_fails(operator))
    pipe.pexpire(keys.ops_fails(operator), o.operator_window_seconds * 1000)
    pipe.zadd(keys.ops_fails_all, {f"{operator}:{member}": ms})
    pipe.zremrangebyscore(keys.ops_fails_all, "-inf", ms - o.global_window_seconds * 1000)
    pipe.zcard(keys.ops_fails_all)
    pipe.pexpire(keys.ops_fails_all, o.global_window_seconds * 1000)
    res = pipe.execute()
    mine, everyone = int(res[2]), int(res[6])
    locked = False
    if mine > o.operator_failures:
        locked = bool(client.set(keys.ops_lock(operator), "1", nx=True,
                                 px=o.operator_lockout_seconds * 1000))
    if everyone > o.global_failures and client.set(
            keys.ops_throttle, "1", nx=True, px=o.global_window_seconds * 1000):
        _publish_bruteforce(client, keys, everyone, now)
    return locked


def _publish_bruteforce(client: redis.Redis, keys: Keys, failures: int, now: datetime) -> None:
    body = {"event_id": f"ops:{uuid.uuid4()}", "schema_version": 1,
            "type": "override_bruteforce_suspected", "account_id": None,
            "occurred_at": now.isoformat(), "effective_at": now.isoformat(),
            "trading_day": None, "caused_by": "ops", "payload": {"failures": failures}}
    client.xadd(keys.events(0), {"type": "override_bruteforce_suspected",
                                 "data": dumps(body)})


# -- the effect ---------------------------------------------------------------------------------


ACTIONS: dict[str, Callable[..., ActionResult]] = {
    "acknowledge": lambda st, pol, now, r, cause: actions.act_acknowledge(
        st, pol, now, operator_id=r.operator_id, cause=cause),
    "force_advance": lambda st, pol, now, r, cause: actions.act_force_advance(
        st, pol, now, target=r.target_phase, operator_id=r.operator_id, reason=r.reason,
        cause=cause),
    "rollback": lambda st, pol, now, r, cause: actions.act_rollback(
        st, pol, now, target=r.target_phase, operator_id=r.operator_id, reason=r.reason,
        cause=cause),
    "reset_epoch": lambda st, pol, now, r, cause: actions.act_reset_epoch(
        st, pol, now, operator_id=r.operator_id, reason=r.reason, cause=cause),
    "clear_reduction": lambda st, pol, now, r, cause: actions.act_clear_reduction(
        st, pol, now, operator_id=r.operator_id, cause=cause),
}


@dataclass
class _Gathered:
    now: datetime
    stored: JSONDict | None
    registered: bool
    retired: bool
    state: AccountState | None
    policy_raw: str | None


def execute(client: redis.Redis, keys: Keys, policy: Policy, req: Request,
            effect: Callable[[_Gathered, Staging], tuple[JSONDict, bool]] | None = None
            ) -> JSONDict:
    """Replay check, stale check and the action, in one transaction with audit and outcome."""
    account = req.account_id
    k = keys.shard(account) if account else 0
    req_key = keys.ops_request(k, req.request_id)
    watch = [req_key]
    if account:
        watch += [keys.state(k, account), keys.registry(k)]
    else:
        watch.append(keys.policy)
    result: JSONDict = {}
    later: list[JSONDict] = []  # audit records for shard 0, written after the transaction

    def gather(pipe: Pipeline) -> _Gathered:
        stored = pipe.get(req_key)
        reg = pipe.hget(keys.registry(k), account) if account else None
        st = None
        if reg:
            raw = pipe.hgetall(keys.state(k, account or ""))
            st = decode_state({_s(a): _s(b) for a, b in raw.items()}) if raw else None
        pol = pipe.get(keys.policy) if not account else None
        return _Gathered(redis_now(pipe.time()), json.loads(stored) if stored else None,
                         bool(reg), bool(reg and json.loads(reg).get("retired_at")), st,
                         _s(pol) if pol else None)

    def stage(g: _Gathered) -> Staging:
        result.clear()
        later.clear()
        staging = Staging(keys, k)
        if g.stored is not None:
            if g.stored.get("digest") == req.digest:
                result.update({**g.stored["outcome"], "replayed": True})
                _stage_audit(staging, keys, k, req, g, str(g.stored["outcome"].get("outcome")),
                             "replayed", later)
            else:
                result.update({"outcome": "refused", "reason": "replay"})
                _stage_audit(staging, keys, k, req, g, "refused", "replay", later)
            return staging
        outcome, _changed = _decide(g, staging, policy, req, effect)
        result.update(outcome)
        _stage_audit(staging, keys, k, req, g, str(outcome["outcome"]),
                     str(outcome.get("reason") or ""), later)
        ttl_ms = int((req.expires_at + timedelta(days=1) - g.now).total_seconds() * 1000)
        stored = dumps({"digest": req.digest, "outcome": outcome})
        staging.raw(lambda p: p.set(req_key, stored, px=max(ttl_ms, 1000)))
        return staging

    transact(client, watch, gather, stage)
    for record in later:
        client.xadd(keys.overrides(0), {"data": dumps(record)})
    return dict(result)


def _stage_audit(staging: Staging, keys: Keys, k: int, req: Request, g: _Gathered,
                 outcome: str, reason: str, later: list[JSONDict]) -> None:
    record = audit_record(req.fields, outcome, reason, g.now)
    if req.account_id and not g.registered:
        # no valid account: shard 0's stream (R-7.13); a transaction stays in one shard's slot,
        # so it is appended right after this one commits
        later.append(record)
        return
    staging.raw(lambda p: p.xadd(keys.overrides(k), {"data": dumps(record)}))
    if g.registered and req.account_id:
        staging.history(req.account_id, Record("override_attempt", record), g.now,
                        req.request_id)


def _decide(g: _Gathered, staging: Staging, policy: Policy, req: Request,
            effect: Callable[[_Gathered, Staging], tuple[JSONDict, bool]] | None
            ) -> tuple[JSONDict, bool]:
    if effect is not None:
        return effect(g, staging)
    if not g.registered:
        return {"outcome": "refused", "reason": "unknown_account"}, False
    if g.retired:
        return {"outcome": "refused", "reason": "account_retired"}, False
    st = g.state
    if st is None:
        return {"outcome": "refused", "reason": "state_unavailable"}, False
    if st.phase != req.expected_phase:
        return {"outcome": "refused", "reason": "stale_request",
                "detail": f"account is in {st.phase}, not {req.expected_phase}"}, False
    # replay accounts act on the replay profile, in their own currency
    res = ACTIONS[req.action](st, policy_for(policy, st.clock, st.currency), g.now, req,
                              req.request_id)
    out: JSONDict = {"outcome": res.outcome, "reason": res.reason or None,
                     "phase": res.state.phase, "account_id": st.account_id}
    if res.detail is not None:
        out["validation"] = res.detail
    if res.outcome != "applied":
        return out, False
    staging.state(res.state)
    for rec in res.history:
        staging.history(st.account_id, rec, g.now, req.request_id)
    for ev in res.events:
        staging.event(st.account_id, ev, g.now, req.request_id)
    return out, True


def policy_effect(req: Request) -> Callable[[_Gathered, Staging], tuple[JSONDict, bool]]:
    """R-7.7a: validate and install a new policy if the expected version still holds."""

    def effect(g: _Gathered, staging: Staging) -> tuple[JSONDict, bool]:
        current = json.loads(g.policy_raw)["version"] if g.policy_raw else None
        expected = req.fields.get("expected_policy_version")
        if expected != current:
            return {"outcome": "refused", "reason": "stale_request",
                    "detail": f"policy version is {current}, not {expected}"}, False
        try:
            new = policy_from_json(str(req.fields.get("policy")))
        except PolicyError as exc:
            return {"outcome": "refused", "reason": "invalid_policy",
                    "problems": list(exc.problems)}, False
        blob = policy_blob(new)
        staging.raw(lambda p: p.set(staging.keys.policy, blob))
        return {"outcome": "applied", "version": new.version, "previous_version": current}, True

    return effect


# -- the whole check order ------------------------------------------------------------------------


def handle(client: redis.Redis, keys: Keys, raw: object, job_action: str,
           effect_for: Callable[[Request], Callable[[_Gathered, Staging],
                                                    tuple[JSONDict, bool]]] | None = None
           ) -> JSONDict:
    """Run every check of R-7.10 in order, then the effect; audit every attempt."""
    policy = PolicyHolder(client, keys).refresh(force=True)
    now = redis_now(client.time())
    fields = raw if isinstance(raw, dict) else {"raw": str(raw)[:200]}

    def refuse(reason: str, detail: str = "") -> JSONDict:
        write_audit(client, keys, fields, "refused", reason, now, detail)
        out: JSONDict = {"outcome": "refused", "reason": reason}
        if detail:
            out["detail"] = detail
        return out

    key = keyring.current()
    if key is None:
        return refuse("not_configured", "PHASE_OVERRIDE_PASSWORD is not set on the ops worker")
    try:
        req = parse_request(raw, timedelta(seconds=policy.overrides.max_validity_seconds))
    except Malformed as exc:
        return refuse("malformed", str(exc))
    if req.action != job_action:
        return refuse("malformed", f"job {job_action} cannot run action {req.action}")
    meta_id = client.hget(keys.meta, "deployment_id")
    if meta_id is not None and _s(meta_id) != req.deployment_id:
        return refuse("malformed", "request is for another deployment")
    if req.action != "rollback" and _locked(client, keys, req.operator_id):
        return refuse("locked_out", f"operator {req.operator_id} is locked out after repeated "
                                    "bad signatures")
    if _throttled(client, keys, policy):
        return refuse("throttled", "signature checks are throttled: brute force suspected")
    if not signature_ok(req.fields, key):
        locked = record_failure(client, keys, policy, req.operator_id, now)
        return refuse("bad_signature", "operator locked out" if locked else "")
    skew = timedelta(seconds=policy.overrides.max_clock_skew_seconds)
    if req.issued_at > now + skew:
        return refuse("issued_in_future", f"issued_at is more than {skew.seconds} s ahead")
    if now > req.expires_at:
        return refuse("expired", "the request expired; sign a new one")
    # deployment-wide: the outcome is stored on the account's shard, so a request id is
    # also claimed globally with its payload digest; another payload under it is a replay
    ttl_ms = int((req.expires_at + timedelta(days=1) - now).total_seconds() * 1000)
    prior = client.set(keys.ops_request_claim(req.request_id), req.digest, nx=True,
                       px=max(ttl_ms, 1000), get=True)
    if prior is not None and _s(prior) != req.digest:
        return refuse("replay", "this request_id was already used with another payload")
    effect = effect_for(req) if effect_for is not None else None
    return execute(client, keys, policy, req, effect)


def run_job(raw: object, action: str, *, client: redis.Redis | None = None,
            prefix: str | None = None, effect_for: Callable[..., Any] | None = None) -> JSONDict:
    from worker.jobs import _connection, _prefix

    conn = client or _connection()
    keys = load_keys(conn, prefix or _prefix())
    return handle(conn, keys, raw, action, effect_for)

