"""Signed operator actions end to end: RQ jobs run by the Phaseguard worker class (R-7.2 .. R-7.13).

Each job is enqueued as `phaseguard-ops` with RQ's JSON serializer and run by
`PhaseguardSimpleWorker(...).work(burst=True)` logged in as `phaseguard-worker`. Every refusal
reason of R-7.10 .. R-7.12 and R-3.6 / R-3.10 is provoked in check order, and every attempt's
audit record is looked up where R-7.13 puts it.
"""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from tests.integration.signed_support import (
    PARAMS,
    PASSWORD,
    PREFIX,
    Deployment,
    RoleUrl,
    audited,
    deployment,
    expired_window,
    s,
)
from worker.domain.policy import DEFAULT_POLICY, policy_from_json
from worker.ops import keyring
from worker.ops.signing import KDF_ALG, KDF_ITERATIONS, derive_key, sign
from worker.ops_worker import PhaseguardSimpleWorker, PhaseguardWorker
from worker.store.keys import RQ_QUEUE, Keys
from worker.store.runtime import PolicyHolder, init_meta

pytestmark = pytest.mark.redis

ACCT = "acct-1"  # shard 3 of 16: never shard 0, so "the account's shard" and "shard 0" differ
OTHER_KEY = bytes(range(32))  # any key but the deployment's: what a wrong password derives
Audits = dict[int, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def override_key() -> bytes:
    """The deployment's override key, derived once for the module (600,000 iterations)."""
    return derive_key(PASSWORD, PARAMS)


@pytest.fixture
def d(redis_admin: redis.Redis, role_url: RoleUrl, override_key: bytes) -> Iterator[Deployment]:
    with deployment(redis_admin, role_url, override_key) as dep:
        yield dep


def shard(d: Deployment, account: str = ACCT) -> int:
    return d.keys.shard(account)


def appended(d: Deployment, run: Callable[[], Any]) -> tuple[Any, Audits]:
    """Run `run`; return its value and the audit records it appended, by shard."""
    before = d.audit_counts()
    value = run()
    after = d.audit_counts()
    return value, {k: d.audits(k)[before.get(k, 0):] for k, n in after.items()
                   if n > before.get(k, 0)}


def test_the_test_account_is_not_on_shard_0() -> None:
    assert Keys(PREFIX, 16).shard(ACCT) != 0


# -- acknowledge ----------------------------------------------------------------------------


def test_r7_2_acknowledge_clears_a_tripped_breaker(d: Deployment) -> None:
    tripped = d.trip(ACCT)
    req = d.request("acknowledge", ACCT)

    out = d.run_one("acknowledge", req)

    assert out["outcome"] == "applied"
    public = d.public(ACCT)
    assert public["halted"] == "0"
    assert public["phase"] == tripped.phase == "proof"
    assert public["size_reduced"] == "1"  # the reduction stays until an advance or a clear
    cleared = [e for e in d.events(shard(d)) if e["type"] == "circuit_breaker_cleared"]
    assert [(e["account_id"], e["caused_by"], e["payload"]["operator_id"]) for e in cleared] == [
        (ACCT, req["request_id"], "alice")]
    assert "breaker_cleared" in [kind for kind, _ in d.history(ACCT)]


def test_r7_2_acknowledge_when_not_tripped_is_a_noop(d: Deployment) -> None:
    d.register(ACCT)
    version = d.public(ACCT)["version"]

    out = d.run_one("acknowledge", d.request("acknowledge", ACCT))

    assert (out["outcome"], out["phase"]) == ("noop", "experience")
    assert d.public(ACCT)["version"] == version
    assert [e["type"] for e in d.events(shard(d))] == []


# -- force_advance --------------------------------------------------------------------------


def test_r7_3_force_advance_moves_one_phase_up_without_the_gate(d: Deployment) -> None:
    d.register(ACCT)  # no sessions at all: the experience -> proof gate fails

    out = d.run_one("force_advance", d.request("force_advance", ACCT, target="proof"))

    assert (out["outcome"], out["phase"]) == ("applied", "proof")
    assert out["validation"]["eligible"] is False
    assert d.public(ACCT)["phase"] == "proof"
    changed = [e for e in d.events(shard(d)) if e["type"] == "phase_changed"]
    assert [(e["payload"]["from_phase"], e["payload"]["to_phase"], e["payload"]["kind"])
            for e in changed] == [("experience", "proof", "force_advance")]


def test_r7_3_force_advance_records_the_bypassed_evaluation_as_an_override(
        d: Deployment) -> None:
    d.register(ACCT)

    d.run_one("force_advance", d.request("force_advance", ACCT, target="proof",
                                         reason="desk approved"))

    [record] = [data for kind, data in d.history(ACCT) if kind == "transition"]
    assert record["kind"] == "force_advance"
    assert record["trigger"] == "manual"
    assert record["operator_id"] == "alice"
    assert record["override_used"] is True  # the override incident of the tenure it ended
    assert record["validation_passed"] is False
    assert record["reasons"] == ["desk approved"]
    failed = record["validation"]["failed"]
    assert failed
    assert set(failed) <= {c["name"] for c in record["validation"]["criteria"]}


# -- rollback -------------------------------------------------------------------------------


def test_r7_4_rollback_to_a_named_lower_phase_keeps_the_breaker_and_the_reduction(
        d: Deployment) -> None:
    d.trip(ACCT)  # trial -> proof by a downgrade: tripped and reduced

    out = d.run_one("rollback", d.request("rollback", ACCT, target="experience"))

    assert (out["outcome"], out["phase"]) == ("applied", "experience")
    public = d.public(ACCT)
    assert (public["phase"], public["halted"], public["size_reduced"]) == (
        "experience", "1", "1")
    [record] = [data for kind, data in d.history(ACCT)
                if kind == "transition" and data["kind"] == "rollback"]
    assert (record["from_phase"], record["to_phase"], record["operator_id"]) == (
        "proof", "experience", "alice")


def test_r7_4_rollback_skips_phases_downward(d: Deployment) -> None:
    d.register(ACCT)
    d.force_to(ACCT, "scaling")

    out = d.run_one("rollback", d.request("rollback", ACCT, target="proof"))

    assert (out["outcome"], d.public(ACCT)["phase"]) == ("applied", "proof")


# -- reset_epoch ----------------------------------------------------------------------------


def test_r7_5_reset_epoch_restarts_the_epoch_as_an_override_incident(d: Deployment) -> None:
    before = d.trip(ACCT)

    out = d.run_one("reset_epoch", d.request("reset_epoch", ACCT))

    assert out["outcome"] == "applied"
    after = d.state(ACCT)
    assert after.epoch_start > before.epoch_start
    assert after.tenure_start == before.tenure_start
    assert after.override_incidents == before.override_incidents + 1
    assert (after.phase, after.halted, after.size_reduced) == ("proof", True, True)
    assert [e["type"] for e in d.events(shard(d))].count("epoch_reset") == 1


# -- clear_reduction ------------------------------------------------------------------------


def test_r7_6_clear_reduction_removes_the_reduction_and_leaves_the_breaker(
        d: Deployment) -> None:
    d.trip(ACCT)

    out = d.run_one("clear_reduction", d.request("clear_reduction", ACCT))

    assert out["outcome"] == "applied"
    public = d.public(ACCT)
    assert (public["size_reduced"], public["halted"]) == ("0", "1")
    assert "reduction_cleared" in [kind for kind, _ in d.history(ACCT)]


def test_r7_6_clear_reduction_without_a_reduction_is_a_noop(d: Deployment) -> None:
    d.register(ACCT)

    out = d.run_one("clear_reduction", d.request("clear_reduction", ACCT))

    assert out["outcome"] == "noop"


# -- R-7.7a policy_apply ---------------------------------------------------------------------------


def changed_policy(**downgrade: Any) -> str:
    body = json.loads(DEFAULT_POLICY.canonical_json())
    body["downgrade"].update(downgrade)
    return json.dumps(body)


def test_r7_7a_policy_apply_installs_the_policy_and_workers_reload_it(d: Deployment) -> None:
    holder = PolicyHolder(d.worker, d.keys)
    assert holder.refresh(force=True).version == DEFAULT_POLICY.version
    new = policy_from_json(changed_policy(max_consecutive_losses=4))
    req = d.request("policy_apply", None, policy=new.canonical_json(),
                    expected_policy_version=DEFAULT_POLICY.version)

    out, audits = appended(d, lambda: d.run_one("policy_apply", req))

    assert out["outcome"] == "applied"
    assert (out["version"], out["previous_version"]) == (new.version, DEFAULT_POLICY.version)
    assert json.loads(d.worker.get(d.keys.policy))["version"] == new.version
    reloaded = holder.refresh(force=True)
    assert reloaded.version == new.version
    assert reloaded.downgrade.max_consecutive_losses == 4
    assert list(audits) == [0]
    assert audited(audits[0][0], operator="alice", action="policy_apply", outcome="applied",
                   reason="")


def test_r7_7a_policy_apply_for_an_older_policy_version_is_refused_stale_request(
        d: Deployment) -> None:
    new = policy_from_json(changed_policy(max_consecutive_losses=4))
    req = d.request("policy_apply", None, policy=new.canonical_json(),
                    expected_policy_version="sha256:0000000000000000")

    out, audits = appended(d, lambda: d.run_one("policy_apply", req))

    assert (out["outcome"], out["reason"]) == ("refused", "stale_request")
    assert json.loads(d.worker.get(d.keys.policy))["version"] == DEFAULT_POLICY.version
    assert list(audits) == [0]
    assert audited(audits[0][0], operator="alice", action="policy_apply", outcome="refused",
                   reason="stale_request")


def test_r7_7a_an_invalid_policy_is_refused_with_every_problem(d: Deployment) -> None:
    body = json.loads(changed_policy(max_consecutive_losses=0))
    body["sizes"]["proof"] = "a lot"
    req = d.request("policy_apply", None, policy=json.dumps(body),
                    expected_policy_version=DEFAULT_POLICY.version)

    out = d.run_one("policy_apply", req)

    assert (out["outcome"], out["reason"]) == ("refused", "invalid_policy")
    named = {problem.split(":")[0] for problem in out["problems"]}
    assert named == {"downgrade.max_consecutive_losses", "sizes.proof"}
    assert json.loads(d.worker.get(d.keys.policy))["version"] == DEFAULT_POLICY.version


# -- key derivation parameters ---------------------------------------------------------------


def test_r7_9_the_first_start_stores_the_kdf_parameters_once(redis_admin: redis.Redis,
                                                              role_url: RoleUrl) -> None:
    worker = redis.Redis.from_url(role_url("worker"))
    ops = redis.Redis.from_url(role_url("ops"))
    try:
        keys = init_meta(worker, PREFIX)
        first = keyring.ensure_kdf(worker, keys)
        second = keyring.ensure_kdf(worker, keys)
        as_ops = keyring.load_kdf(ops, keys)  # what phasectl reads
        deployment_id = s(worker.hget(keys.meta, "deployment_id"))
    finally:
        worker.close()
        ops.close()

    assert (first.alg, first.iterations, len(first.salt)) == (KDF_ALG, 600_000, 16)
    assert KDF_ITERATIONS == 600_000
    assert first.deployment_id == deployment_id
    assert second == first == as_ops


def test_r7_14_the_ops_user_reads_but_cannot_write_the_kdf_parameters_or_the_policy(
        d: Deployment) -> None:
    assert keyring.load_kdf(d.ops, d.keys) == PARAMS  # what phasectl needs to sign

    for write in (lambda: d.ops.hset(d.keys.ops_kdf, "salt", "00" * 16),
                  lambda: d.ops.set(d.keys.policy, "{}"),
                  lambda: d.ops.delete(d.keys.ops_lock("alice"))):
        with pytest.raises(redis.exceptions.NoPermissionError):
            write()
    assert keyring.load_kdf(d.worker, d.keys) == PARAMS


# -- check order ----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["valid", "garbage"])
def test_r7_10_without_a_key_every_request_is_refused_not_configured(d: Deployment,
                                                                     shape: str) -> None:
    d.register(ACCT)
    req: object = d.request("acknowledge", ACCT) if shape == "valid" else "garbage"
    keyring.install_key(None)

    out, audits = appended(d, lambda: d.run_one("acknowledge", req))

    assert (out["outcome"], out["reason"]) == ("refused", "not_configured")
    expected_shard = shard(d) if shape == "valid" else 0
    assert [(k, len(v)) for k, v in audits.items()] == [(expected_shard, 1)]
    assert audits[expected_shard][0]["reason"] == "not_configured"
    assert len(d.attempts(ACCT)) == (1 if shape == "valid" else 0)


def _without(d: Deployment, field: str) -> dict[str, Any]:
    req = d.request("acknowledge", ACCT)
    del req[field]
    return sign(req, d.key)


Shape = Callable[[Deployment], tuple[str, object]]
ACCOUNT_SHARD = "account"
MALFORMED: list[tuple[str, Shape, str | int]] = [
    ("not_an_object", lambda d: ("acknowledge", ["acknowledge", ACCT]), 0),
    ("wrong_version", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, v="phaseguard-override/2")), ACCOUNT_SHARD),
    ("unknown_action", lambda d: ("acknowledge", sign(
        {**d.request("acknowledge", ACCT), "action": "delete_account"}, d.key)), ACCOUNT_SHARD),
    ("request_id_not_a_uuid", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, request_id="request-1")), ACCOUNT_SHARD),
    ("request_id_uuid1", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, request_id="c232ab00-9414-11ec-b3c8-9f6bdeced846")), ACCOUNT_SHARD),
    ("request_id_not_canonical", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, request_id=str(uuid.uuid4()).upper())), ACCOUNT_SHARD),
    ("extra_field", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, note="hello")), ACCOUNT_SHARD),
    ("missing_field", lambda d: ("acknowledge", _without(d, "expires_at")), ACCOUNT_SHARD),
    ("non_string_value", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, issued_at=1795000000)), ACCOUNT_SHARD),
    ("reason_too_long", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, reason="x" * 501)), ACCOUNT_SHARD),
    ("reason_not_printable", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, reason="line one\nline two")), ACCOUNT_SHARD),
    ("reason_blank", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, reason="   ")), ACCOUNT_SHARD),
    ("valid_for_more_than_10_minutes", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, validity=timedelta(minutes=10, seconds=1))), ACCOUNT_SHARD),
    ("expires_before_issued", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, validity=timedelta(seconds=-1))), ACCOUNT_SHARD),
    ("timestamp_with_an_offset", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, issued_at=d.now().replace(microsecond=0).isoformat())),
     ACCOUNT_SHARD),
    ("timestamp_of_no_such_instant", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, expires_at="2026-13-01T00:00:00Z")), ACCOUNT_SHARD),
    ("rollback_without_target", lambda d: ("rollback", d.request(
        "rollback", ACCT, target=None)), ACCOUNT_SHARD),
    ("force_advance_without_target", lambda d: ("force_advance", d.request(
        "force_advance", ACCT, target=None)), ACCOUNT_SHARD),
    ("acknowledge_with_target", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, target="proof")), ACCOUNT_SHARD),
    ("expected_phase_not_a_phase", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, expected="gold")), ACCOUNT_SHARD),
    ("operator_id_invalid", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, operator="alice smith")), ACCOUNT_SHARD),
    ("account_id_invalid", lambda d: ("acknowledge", d.request(
        "acknowledge", "not valid!", expected="experience")), 0),
    ("policy_apply_with_account_fields", lambda d: ("policy_apply", d.request(
        "policy_apply", ACCT, expected="experience", policy=DEFAULT_POLICY.canonical_json(),
        expected_policy_version=DEFAULT_POLICY.version)), 0),
    ("policy_apply_without_policy", lambda d: ("policy_apply", d.request(
        "policy_apply", None, expected_policy_version=DEFAULT_POLICY.version)), 0),
    ("policy_fields_on_an_account_action", lambda d: ("acknowledge", sign(
        {**d.request("acknowledge", ACCT), "policy": "{}", "expected_policy_version": "x"},
        d.key)), ACCOUNT_SHARD),
    ("job_and_action_differ", lambda d: ("force_advance", d.request(
        "acknowledge", ACCT)), ACCOUNT_SHARD),
    ("other_deployment", lambda d: ("acknowledge", d.request(
        "acknowledge", ACCT, deployment_id=str(uuid.uuid4()))), ACCOUNT_SHARD),
    ("signature_not_hex", lambda d: ("acknowledge", {**d.request("acknowledge", ACCT),
                                                     "signature": "zz" * 32}), ACCOUNT_SHARD),
]


@pytest.mark.parametrize(("name", "shape", "where"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_r7_10_a_malformed_request_is_refused_malformed_and_audited(
        d: Deployment, name: str, shape: Shape, where: str | int) -> None:
    d.register(ACCT)
    job, req = shape(d)

    out, audits = appended(d, lambda: d.run_one(job, req))

    assert (out["outcome"], out["reason"]) == ("refused", "malformed"), name
    expected_shard = shard(d) if where == ACCOUNT_SHARD else where
    assert [(k, len(v)) for k, v in audits.items()] == [(expected_shard, 1)]
    assert audits[expected_shard][0]["reason"] == "malformed"
    assert len(d.attempts(ACCT)) == (1 if where == ACCOUNT_SHARD else 0)


def lock_out(d: Deployment, operator: str = "alice") -> list[dict[str, Any]]:
    """Six bad signatures: the sixth locks the operator out (R-7.11)."""
    bad = [("force_advance", d.request("force_advance", ACCT, operator=operator,
                                       target="trial", key=OTHER_KEY)) for _ in range(6)]
    return d.run(*bad)


def test_r7_10_malformed_comes_before_locked_out(d: Deployment) -> None:
    d.register(ACCT)
    lock_out(d)

    out = d.run_one("acknowledge", d.request("acknowledge", ACCT, v="phaseguard-override/0"))

    assert out["reason"] == "malformed"


def test_r7_10_locked_out_comes_before_the_signature_check(d: Deployment) -> None:
    d.register(ACCT)
    lock_out(d)
    failures = d.worker.zcard(d.keys.ops_fails("alice"))

    out = d.run_one("acknowledge", d.request("acknowledge", ACCT, key=OTHER_KEY))

    assert out["reason"] == "locked_out"
    assert d.worker.zcard(d.keys.ops_fails("alice")) == failures  # not even counted


@pytest.mark.parametrize("when", ["expired", "issued_in_future"])
def test_r7_10_a_bad_signature_comes_before_the_clock_checks(d: Deployment, when: str) -> None:
    d.register(ACCT)
    now = d.now()
    if when == "expired":
        req = d.request("acknowledge", ACCT, key=OTHER_KEY, **expired_window(now))
    else:
        req = d.request("acknowledge", ACCT, key=OTHER_KEY, at=now + timedelta(hours=1))

    assert d.run_one("acknowledge", req)["reason"] == "bad_signature"


def test_r7_10_a_request_issued_more_than_60_s_ahead_is_refused_issued_in_future(
        d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("acknowledge", ACCT, at=d.now() + timedelta(seconds=120))

    out, audits = appended(d, lambda: d.run_one("acknowledge", req))

    assert (out["outcome"], out["reason"]) == ("refused", "issued_in_future")
    assert audited(audits[shard(d)][0], operator="alice", action="acknowledge",
                   outcome="refused", reason="issued_in_future")


def test_r7_10_a_request_issued_less_than_60_s_ahead_is_accepted(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("acknowledge", ACCT, at=d.now() + timedelta(seconds=30))

    assert d.run_one("acknowledge", req)["outcome"] == "noop"


def test_r7_10_an_expired_request_is_refused_expired(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("acknowledge", ACCT, **expired_window(d.now()))

    out, audits = appended(d, lambda: d.run_one("acknowledge", req))

    assert (out["outcome"], out["reason"]) == ("refused", "expired")
    assert audited(audits[shard(d)][0], operator="alice", action="acknowledge",
                   outcome="refused", reason="expired")


def test_r7_10_expiry_comes_before_the_replay_check(d: Deployment) -> None:
    d.register(ACCT)
    first = d.request("acknowledge", ACCT)
    d.run_one("acknowledge", first)
    late = d.request("acknowledge", ACCT, request_id=first["request_id"],
                     **expired_window(d.now()))

    assert d.run_one("acknowledge", late)["reason"] == "expired"


def test_r7_10_a_different_expected_phase_is_refused_stale_request(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("force_advance", ACCT, target="proof", expected="proof")

    out, audits = appended(d, lambda: d.run_one("force_advance", req))

    assert (out["outcome"], out["reason"]) == ("refused", "stale_request")
    assert d.public(ACCT)["phase"] == "experience"
    assert audited(audits[shard(d)][0], operator="alice", action="force_advance",
                   target="proof", outcome="refused", reason="stale_request")
    assert audited(d.attempts(ACCT)[-1], operator="alice", action="force_advance",
                   target="proof", outcome="refused", reason="stale_request")


def test_r7_10_replay_comes_before_the_expected_phase(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("force_advance", ACCT, target="proof")
    d.run_one("force_advance", req)  # the account is in proof now: the request is stale too
    changed = d.request("force_advance", ACCT, target="proof", expected="experience",
                        request_id=req["request_id"], reason="changed")

    again, other = d.run(("force_advance", req), ("force_advance", changed))

    assert (again["outcome"], again["replayed"]) == ("applied", True)
    assert (other["outcome"], other["reason"]) == ("refused", "replay")


def test_r7_10_the_expected_phase_comes_before_the_actions_own_rules(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("force_advance", ACCT, target="scaling", expected="proof")

    assert d.run_one("force_advance", req)["reason"] == "stale_request"


@pytest.mark.parametrize(("start", "target"), [("experience", "trial"), ("experience",
                                                                          "experience"),
                                               ("proof", "experience"), ("proof", "scaling"),
                                               ("scaling", "scaling")])
def test_r3_6_force_advance_to_any_phase_but_the_next_is_refused_non_sequential(
        d: Deployment, start: str, target: str) -> None:
    d.register(ACCT)
    d.force_to(ACCT, start)  # type: ignore[arg-type]

    out, audits = appended(d, lambda: d.run_one("force_advance", d.request(
        "force_advance", ACCT, target=target)))

    assert (out["outcome"], out["reason"]) == ("refused", "non_sequential")
    assert d.public(ACCT)["phase"] == start
    assert audited(audits[shard(d)][0], operator="alice", action="force_advance",
                   target=target, outcome="refused", reason="non_sequential")


@pytest.mark.parametrize(("start", "target"), [("proof", "proof"), ("proof", "trial"),
                                               ("experience", "experience")])
def test_r3_6_rollback_to_the_same_or_a_higher_phase_is_refused_non_sequential(
        d: Deployment, start: str, target: str) -> None:
    d.register(ACCT)
    d.force_to(ACCT, start)  # type: ignore[arg-type]

    out = d.run_one("rollback", d.request("rollback", ACCT, target=target))

    assert (out["outcome"], out["reason"]) == ("refused", "non_sequential")
    assert d.public(ACCT)["phase"] == start


def test_r3_10_force_advance_while_the_breaker_is_tripped_is_refused_breaker_tripped(
        d: Deployment) -> None:
    d.trip(ACCT)

    out, audits = appended(d, lambda: d.run_one("force_advance", d.request(
        "force_advance", ACCT, target="trial")))

    assert (out["outcome"], out["reason"]) == ("refused", "breaker_tripped")
    assert (d.public(ACCT)["phase"], d.public(ACCT)["halted"]) == ("proof", "1")
    assert audited(audits[shard(d)][0], operator="alice", action="force_advance",
                   target="trial", outcome="refused", reason="breaker_tripped")


def test_r7_10_an_unregistered_account_is_refused_unknown_account_and_audited_on_shard_0(
        d: Deployment) -> None:
    ghost = "ghost-account"
    assert shard(d, ghost) != 0

    out, audits = appended(d, lambda: d.run_one("acknowledge", d.request(
        "acknowledge", ghost, expected="proof")))

    assert (out["outcome"], out["reason"]) == ("refused", "unknown_account")
    assert list(audits) == [0]
    assert audited(audits[0][0], operator="alice", action="acknowledge", outcome="refused",
                   reason="unknown_account")
    assert audits[0][0]["account_id"] == ghost
    assert not d.worker.exists(d.keys.history(shard(d, ghost), ghost))


# -- failed signatures ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["wrong_key", "tampered_after_signing"])
def test_r7_11_a_bad_signature_is_refused_bad_signature_and_audited(d: Deployment,
                                                                    how: str) -> None:
    d.register(ACCT)
    if how == "wrong_key":
        req = d.request("force_advance", ACCT, target="proof", key=OTHER_KEY)
    else:
        req = {**d.request("force_advance", ACCT, target="proof"), "reason": "not what I signed"}

    out, audits = appended(d, lambda: d.run_one("force_advance", req))

    assert (out["outcome"], out["reason"]) == ("refused", "bad_signature")
    assert d.public(ACCT)["phase"] == "experience"
    assert [(k, len(v)) for k, v in audits.items()] == [(shard(d), 1)]
    assert audited(audits[shard(d)][0], operator="alice", action="force_advance",
                   target="proof", outcome="refused", reason="bad_signature")
    assert audited(d.attempts(ACCT)[-1], operator="alice", action="force_advance",
                   target="proof", outcome="refused", reason="bad_signature")


def test_r7_11_five_failures_do_not_lock_an_operator_out(d: Deployment) -> None:
    d.register(ACCT)
    d.run(*[("acknowledge", d.request("acknowledge", ACCT, key=OTHER_KEY)) for _ in range(5)])

    assert d.run_one("acknowledge", d.request("acknowledge", ACCT))["outcome"] == "noop"


def test_r7_11_the_sixth_failure_locks_the_operator_out_for_15_minutes(d: Deployment) -> None:
    d.register(ACCT)

    outs = lock_out(d)

    assert [o["reason"] for o in outs] == ["bad_signature"] * 6
    assert [o.get("detail", "") for o in outs] == [""] * 5 + ["operator locked out"]
    assert 14 * 60 * 1000 < d.worker.pttl(d.keys.ops_lock("alice")) <= 15 * 60 * 1000
    good, bob = d.run(("force_advance", d.request("force_advance", ACCT, target="proof")),
                      ("acknowledge", d.request("acknowledge", ACCT, operator="bob")))
    assert (good["outcome"], good["reason"]) == ("refused", "locked_out")
    assert bob["outcome"] == "noop"  # the lock is per operator
    assert d.public(ACCT)["phase"] == "experience"
    assert audited(d.attempts(ACCT)[-2], operator="alice", action="force_advance",
                   target="proof", outcome="refused", reason="locked_out")


def test_r7_11_a_locked_out_operator_can_still_roll_back(d: Deployment) -> None:
    d.register(ACCT)
    d.force_to(ACCT, "proof")
    lock_out(d)

    out = d.run_one("rollback", d.request("rollback", ACCT, target="experience"))

    assert (out["outcome"], d.public(ACCT)["phase"]) == ("applied", "experience")


def test_r7_11_failures_older_than_15_minutes_do_not_count(d: Deployment) -> None:
    d.register(ACCT)
    old_ms = int((d.now() - timedelta(minutes=16)).timestamp() * 1000)
    d.worker.zadd(d.keys.ops_fails("alice"), {f"{old_ms}-old{i}": old_ms for i in range(10)})

    [out] = d.run(("acknowledge", d.request("acknowledge", ACCT, key=OTHER_KEY)))

    assert out.get("detail", "") == ""
    assert not d.worker.exists(d.keys.ops_lock("alice"))


def brute_force(d: Deployment, operators: int) -> list[dict[str, Any]]:
    """One bad signature from each of `operators` operators (none of them gets locked out)."""
    return d.run(*[("acknowledge", d.request("acknowledge", ACCT, operator=f"op-{i}",
                                             key=OTHER_KEY)) for i in range(operators)])


def bruteforce_events(d: Deployment) -> list[dict[str, Any]]:
    return [e for e in d.events(0) if e["type"] == "override_bruteforce_suspected"]


def test_r7_11_more_than_20_failures_publish_override_bruteforce_suspected_once_on_shard_0(
        d: Deployment) -> None:
    d.register(ACCT)

    brute_force(d, 20)
    assert bruteforce_events(d) == []
    assert not d.worker.exists(d.keys.ops_throttle)
    brute_force(d, 2)

    [event] = bruteforce_events(d)
    assert (event["account_id"], event["trading_day"]) == (None, None)
    assert event["schema_version"] == 1
    assert event["payload"]["failures"] == 21
    assert all(e["type"] != "override_bruteforce_suspected"
               for k in range(1, d.keys.shards) for e in d.events(k))


def test_r7_11_while_brute_force_is_suspected_one_signature_check_per_10_s_passes(
        d: Deployment) -> None:
    d.register(ACCT)
    brute_force(d, 21)
    failures = d.worker.zcard(d.keys.ops_fails_all)

    first, second, bad = d.run(
        ("acknowledge", d.request("acknowledge", ACCT, operator="bob")),
        ("acknowledge", d.request("acknowledge", ACCT, operator="carol")),
        ("acknowledge", d.request("acknowledge", ACCT, operator="dave", key=OTHER_KEY)))

    assert first["outcome"] == "noop"
    assert (second["outcome"], second["reason"]) == ("refused", "throttled")
    assert (bad["outcome"], bad["reason"]) == ("refused", "throttled")
    assert d.worker.zcard(d.keys.ops_fails_all) == failures  # a throttled check is no failure
    assert 0 < d.worker.pttl(d.keys.ops_throttle_slot) <= 10_000
    assert audited(d.attempts(ACCT)[-1], operator="dave", action="acknowledge",
                   outcome="refused", reason="throttled")


def test_r7_11_locked_out_comes_before_throttled(d: Deployment) -> None:
    d.register(ACCT)
    lock_out(d)
    brute_force(d, 15)  # 21 failures in all, alice's six included
    assert d.worker.exists(d.keys.ops_throttle)

    out = d.run_one("acknowledge", d.request("acknowledge", ACCT))

    assert out["reason"] == "locked_out"


# -- replay ---------------------------------------------------------------------------------


def test_r7_12_an_identical_resubmission_returns_the_stored_outcome_replayed(
        d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("force_advance", ACCT, target="proof")

    first, again = d.run(("force_advance", req), ("force_advance", req))

    assert first["outcome"] == "applied"
    assert "replayed" not in first
    assert again == {**first, "replayed": True}
    assert d.public(ACCT)["phase"] == "proof"  # applied once
    assert [a["reason"] for a in d.attempts(ACCT)] == ["", "replayed"]
    assert [a["outcome"] for a in d.attempts(ACCT)] == ["applied", "applied"]


def test_r7_12_a_refused_outcome_is_stored_and_replayed_too(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("force_advance", ACCT, target="trial")

    first, again = d.run(("force_advance", req), ("force_advance", req))

    assert first["reason"] == again["reason"] == "non_sequential"
    assert again["replayed"] is True


def test_r7_12_the_same_id_with_a_different_payload_is_refused_replay(d: Deployment) -> None:
    d.register(ACCT)
    req = d.request("acknowledge", ACCT)
    other = d.request("acknowledge", ACCT, request_id=req["request_id"], reason="another")

    first, second = d.run(("acknowledge", req), ("acknowledge", other))

    assert first["outcome"] == "noop"
    assert (second["outcome"], second["reason"]) == ("refused", "replay")
    assert audited(d.attempts(ACCT)[-1], operator="alice", action="acknowledge",
                   outcome="refused", reason="replay")


def test_r7_12_the_same_id_for_an_account_on_another_shard_is_refused_replay(
        d: Deployment) -> None:
    other_account = "acct-2"
    assert shard(d, other_account) != shard(d)
    d.register(ACCT)
    d.register(other_account)
    req = d.request("acknowledge", ACCT)
    other = d.request("acknowledge", other_account, request_id=req["request_id"])

    _, second = d.run(("acknowledge", req), ("acknowledge", other))

    assert second["reason"] == "replay"


# -- audit and transport --------------------------------------------------------------------


def test_r7_13_every_attempt_is_audited_once_on_its_shard_and_in_the_accounts_history(
        d: Deployment) -> None:
    d.register(ACCT)
    calls: list[tuple[str, object]] = [
        ("force_advance", d.request("force_advance", ACCT, target="proof")),  # applied
        ("acknowledge", d.request("acknowledge", ACCT, key=OTHER_KEY, operator="bob")),
        ("rollback", d.request("rollback", ACCT, target="scaling", expected="proof")),
        ("acknowledge", d.request("acknowledge", "ghost-account", expected="proof")),
        ("acknowledge", "not a request"),
        ("policy_apply", d.request("policy_apply", None, policy=DEFAULT_POLICY.canonical_json(),
                                   expected_policy_version="sha256:0000000000000000")),
    ]

    _, audits = appended(d, lambda: d.run(*calls))

    assert {k: len(v) for k, v in audits.items()} == {shard(d): 3, 0: 3}
    mine = [(a["operator_id"], a["action"], a["target_phase"], a["outcome"], a["reason"])
            for a in audits[shard(d)]]
    assert mine == [("alice", "force_advance", "proof", "applied", ""),
                    ("bob", "acknowledge", None, "refused", "bad_signature"),
                    ("alice", "rollback", "scaling", "refused", "non_sequential")]
    assert [(a["operator_id"], a["action"], a["outcome"], a["reason"])
            for a in d.attempts(ACCT)] == [m[:2] + m[3:] for m in mine]
    assert [a.get("action") for a in audits[0]] == [
        "acknowledge", None, "policy_apply"]
    assert [a["reason"] for a in audits[0]] == ["unknown_account", "malformed", "stale_request"]
    assert all("signature" not in a for rows in audits.values() for a in rows)


def test_r7_13_jobs_travel_as_json_never_as_pickles(d: Deployment) -> None:
    assert PhaseguardWorker.serializer is JSONSerializer
    assert PhaseguardSimpleWorker.serializer is JSONSerializer
    d.register(ACCT)
    req = d.request("acknowledge", ACCT)
    job = Queue(RQ_QUEUE, connection=d.ops, serializer=JSONSerializer).enqueue(
        "worker.jobs.acknowledge", req)

    stored = d.worker.hget(f"rq:job:{job.id}", "data")

    assert stored is not None
    assert json.loads(zlib.decompress(stored)) == ["worker.jobs.acknowledge", None, [req], {}]


def test_r7_13_a_job_outside_worker_jobs_is_never_run(d: Deployment) -> None:
    job = Queue(RQ_QUEUE, connection=d.ops, serializer=JSONSerializer).enqueue(
        "os.getcwd")
    PhaseguardSimpleWorker([RQ_QUEUE], connection=d.worker,
                           serializer=JSONSerializer).work(burst=True)

    result = job.latest_result()
    assert result is not None
    assert "ForbiddenJob" in (result.exc_string or "")

