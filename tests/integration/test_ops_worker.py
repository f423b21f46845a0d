"""The ops worker (R-7.1, R-7.7, R-7.7b, R-7.13): Phaseguard's RQ worker class on `phase-ops`.

Jobs are enqueued by the ops user with RQ's JSON serializer and run in burst mode by the worker
user: accounts, advance (refused with its reasons), dead letters. A job naming anything outside
the allowlisted `worker.jobs.<name>` fails *before import* (a canary module proves no import
happened), and a pickled job is never executed.
"""

from __future__ import annotations

import importlib
import json
import sys
from base64 import b64decode
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from rq import Callback, Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from contracts.client import PhaseguardClient
from worker.consumer import calendar_blob
from worker.ops_worker import PhaseguardJob, PhaseguardSimpleWorker
from worker.redis_acl import Role
from worker.store.keys import RQ_QUEUE, Keys

from .builders_b import (
    CAL,
    MINUTE,
    POLICY,
    PREFIX,
    consumer,
    deadletters,
    drain,
    history,
    init_deployment,
    now_of,
    public,
    register,
    set_state,
    text,
    trade,
    xadd,
)

pytestmark = pytest.mark.redis

CANARY = "tests.integration.canary_module"


@dataclass
class Ops:
    admin: redis.Redis
    worker: redis.Redis  # the ops worker's user
    ops: redis.Redis  # phasectl's user: enqueues
    bot: redis.Redis
    keys: Keys
    canary_file: Path

    def enqueue(self, func: str, *args: Any, **options: Any) -> Job:
        queue = Queue(RQ_QUEUE, connection=self.ops, serializer=JSONSerializer)
        return queue.enqueue(func, *args, **options)

    def work(self) -> None:
        queue = Queue(RQ_QUEUE, connection=self.worker, serializer=JSONSerializer)
        w = PhaseguardSimpleWorker([queue], connection=self.worker, job_class=PhaseguardJob,
                                   serializer=JSONSerializer)
        w.work(burst=True, logging_level="ERROR")

    def run(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        """Enqueue worker.jobs.<name>, run the worker in burst mode, return the job's outcome."""
        [value] = self.run_many([(name, request)])
        return value

    def run_many(self, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Several jobs, one burst (each burst costs RQ about a second to stop its pubsub
        thread), their outcomes in order."""
        jobs = [self.enqueue(f"worker.jobs.{name}", request) for name, request in calls]
        self.work()
        values = []
        for job in jobs:
            fetched = self.fetch(job.id)
            assert fetched.get_status() == JobStatus.FINISHED, self.failure(job.id)
            value = fetched.return_value()
            assert isinstance(value, dict)
            values.append(value)
        return values

    def fetch(self, job_id: str) -> Job:
        return Job.fetch(job_id, connection=self.ops, serializer=JSONSerializer)

    def failure(self, job_id: str) -> str:
        result = self.fetch(job_id).latest_result()
        return "" if result is None else str(result.exc_string)


@pytest.fixture
def env(redis_admin: redis.Redis, role_url: Callable[[Role], str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Ops]:
    made = {role: redis.Redis.from_url(role_url(role)) for role in ("worker", "ops", "bot")}
    canary = tmp_path / "canary-imported"
    monkeypatch.setenv("PHASEGUARD_CANARY_FILE", str(canary))
    monkeypatch.setenv("PHASE_KEY_PREFIX", PREFIX)
    try:
        keys = init_deployment(made["worker"])
        yield Ops(redis_admin, made["worker"], made["ops"], made["bot"], keys, canary)
    finally:
        for c in made.values():
            c.close()
        sys.modules.pop(CANARY, None)


# -- accounts (R-7.7) -------------------------------------------------------------------------


def test_accounts_add_registers_the_account_in_experience(env: Ops) -> None:
    out = env.run("accounts_add", {"account_id": "acct-1", "operator_id": "alice"})
    k = env.keys.shard("acct-1")
    assert out == {"outcome": "applied", "account_id": "acct-1", "shard": k,
                   "phase": "experience"}
    reg = json.loads(env.admin.hget(env.keys.registry(k), "acct-1"))
    assert (reg["clock"], reg["currency"], reg["retired_at"]) == ("redis", "USD", None)
    assert public(env.admin, env.keys, "acct-1")["phase"] == "experience"
    [(kind, record)] = history(env.admin, env.keys, "acct-1")
    assert (kind, record["operator_id"]) == ("registered", "alice")


def test_accounts_add_registers_a_replay_account_in_its_own_currency(env: Ops) -> None:
    out = env.run("accounts_add", {"account_id": "replay-1", "operator_id": "alice",
                                   "clock": "message", "starts_at": "2019-03-04T14:30:00+00:00",
                                   "currency": "EUR"})
    assert out["outcome"] == "applied"
    reg = json.loads(env.admin.hget(env.keys.registry(env.keys.shard("replay-1")), "replay-1"))
    assert (reg["clock"], reg["currency"]) == ("message", "EUR")


ADD_REFUSALS = [
    ("space", {"account_id": "bad id"}, "invalid_account_id"),
    ("empty", {"account_id": ""}, "invalid_account_id"),
    ("too-long", {"account_id": "x" * 65}, "invalid_account_id"),
    ("duplicate", {"account_id": "dup"}, "already_registered"),
    ("clock", {"account_id": "a-1", "clock": "wall"}, "invalid_clock"),
    ("no-starts-at", {"account_id": "a-1", "clock": "message"}, "invalid_starts_at"),
    ("naive-starts-at", {"account_id": "a-1", "clock": "message",
                         "starts_at": "2019-03-04T14:30:00"}, "invalid_starts_at"),
    ("currency-of-a-live-account", {"account_id": "a-1", "currency": "EUR"},
     "currency_mismatch"),
    ("currency-format", {"account_id": "a-1", "currency": "usd"}, "invalid_currency"),
]


def test_accounts_add_refuses_with_a_reason(env: Ops, subtests: pytest.Subtests) -> None:
    register(env.worker, "dup")
    outcomes = env.run_many([("accounts_add", {"operator_id": "alice", **request})
                             for _, request, _ in ADD_REFUSALS])
    for (case, _, reason), out in zip(ADD_REFUSALS, outcomes, strict=True):
        with subtests.test(case=case):
            assert (out["outcome"], out["reason"]) == ("refused", reason)
    registered = {a for k in range(env.keys.shards) for a in env.admin.hkeys(env.keys.registry(k))}
    assert registered == {"dup"}


def test_accounts_retire_stops_the_accounts_entries(env: Ops) -> None:
    register(env.worker, "leaving")
    k = env.keys.shard("leaving")
    env.admin.set(env.keys.calendar(k), calendar_blob(POLICY, CAL.trading_day(now_of(env.admin))))
    retire = {"account_id": "leaving", "operator_id": "alice"}
    out, again, unknown = env.run_many([("accounts_retire", retire), ("accounts_retire", retire),
                                        ("accounts_retire", {"account_id": "nobody"})])
    assert out["outcome"] == "applied"
    assert json.loads(env.admin.hget(env.keys.registry(k), "leaving"))["retired_at"] == \
        out["retired_at"]
    assert again == {"outcome": "noop", "retired_at": out["retired_at"]}
    assert unknown == {"outcome": "refused", "reason": "unknown_account"}
    assert PhaseguardClient(env.bot, PREFIX).request_entry("leaving", "paper").reason == \
        "account_retired"
    assert [t for t, _ in history(env.admin, env.keys, "leaving")] == ["registered", "retired"]


# -- advance (R-7.1, R-3.6, R-3.10) -------------------------------------------------------------


def test_advance_is_refused_with_every_criterion_when_the_gate_fails(env: Ops) -> None:
    register(env.worker, "eager")
    before = public(env.admin, env.keys, "eager")
    out = env.run("advance", {"account_id": "eager", "operator_id": "alice", "request_id": "r1"})
    assert (out["outcome"], out["reason"], out["phase"]) == ("refused", "gate_failed",
                                                             "experience")
    validation = out["validation"]
    assert (validation["from_phase"], validation["to_phase"], validation["eligible"]) == (
        "experience", "proof", False)
    names = [c["name"] for c in validation["criteria"]]
    assert names == ["closed_sessions_with_trades", "win_rate", "rr", "override_incidents",
                     "non_regular_share"]
    assert validation["failed"] == [c["name"] for c in validation["criteria"] if not c["met"]]
    assert all({"required", "actual", "met"} <= set(c) for c in validation["criteria"])
    assert public(env.admin, env.keys, "eager") == before  # refused: nothing changed
    audit = [r for t, r in history(env.admin, env.keys, "eager") if t == "operator_action"]
    assert [(r["action"], r["outcome"], r["reason"], r["operator_id"]) for r in audit] == [
        ("advance", "refused", "gate_failed", "alice")]


ADVANCE_REFUSALS = [
    ("at-scaling", "scaling", None, False, "non_sequential"),
    ("skipping", "experience", "trial", False, "non_sequential"),
    ("downward", "trial", "proof", False, "non_sequential"),
    ("current", "trial", "trial", False, "non_sequential"),
    ("tripped-proof", "proof", None, True, "breaker_tripped"),
    ("tripped-trial", "trial", "scaling", True, "breaker_tripped"),
]


def test_advance_is_refused_out_of_sequence_or_while_tripped(
        env: Ops, subtests: pytest.Subtests) -> None:
    for case, phase, _, halted, _ in ADVANCE_REFUSALS:
        register(env.worker, case)
        set_state(env.admin, env.keys, case, phase=phase, halted=halted,
                  position_size=Decimal("200.00"))
    outcomes = env.run_many([("advance", {"account_id": case, "operator_id": "alice",
                                          "target_phase": target})
                             for case, _, target, _, _ in ADVANCE_REFUSALS])
    for (case, phase, _, _, reason), out in zip(ADVANCE_REFUSALS, outcomes, strict=True):
        with subtests.test(case=case):
            assert (out["outcome"], out["reason"], out["phase"]) == ("refused", reason, phase)
            assert public(env.admin, env.keys, case)["phase"] == phase


def test_advance_of_an_account_that_cannot_act_is_refused(env: Ops) -> None:
    register(env.worker, "retired")
    register(env.worker, "stateless")
    env.admin.delete(env.keys.state(env.keys.shard("stateless"), "stateless"))
    retired, *outcomes = env.run_many(
        [("accounts_retire", {"account_id": "retired"})]
        + [("advance", {"account_id": a, "operator_id": "alice"})
           for a in ("nobody", "retired", "stateless")])
    assert retired["outcome"] == "applied"
    assert [(o["outcome"], o["reason"]) for o in outcomes] == [
        ("refused", "unknown_account"), ("refused", "account_retired"),
        ("refused", "state_unavailable")]


# -- dead letters (R-7.7b) ----------------------------------------------------------------------


def test_dead_letter_jobs_discard_and_requeue_through_the_queue(env: Ops) -> None:
    register(env.worker, "dl-acct")
    k = env.keys.shard("dl-acct")
    now = now_of(env.admin)
    for trade_id in ("t-1", "t-2"):
        xadd(env.admin, env.keys, k, "trade_closed",
             trade("dl-acct", trade_id, now - MINUTE, leverage="3"))
    c = consumer(env.worker, env.keys)
    drain(c)
    (first, _), (second, _) = deadletters(env.admin, env.keys, k)
    assert public(env.admin, env.keys, "dl-acct")["degraded"] == "1"

    assert env.run("deadletter_discard", {"shard": k, "entry_id": first,
                                          "operator_id": "alice"})["outcome"] == "applied"
    assert env.run("deadletter_requeue", {"shard": k, "entry_id": second,
                                          "operator_id": "alice"})["outcome"] == "applied"

    assert deadletters(env.admin, env.keys, k) == []
    assert public(env.admin, env.keys, "dl-acct")["degraded"] == "0"
    requeued = env.admin.xrange(env.keys.inbox(k))[-1][1]
    assert requeued["requeued_from"] == second
    kinds = [t for t, _ in history(env.admin, env.keys, "dl-acct")]
    assert ("deadletter_discarded" in kinds, "deadletter_requeued" in kinds) == (True, True)


def test_dead_letter_jobs_refuse_a_bad_request(env: Ops) -> None:
    outcomes = env.run_many([
        ("deadletter_requeue", {"entry_id": "1-1"}),
        ("deadletter_discard", {"shard": "x", "entry_id": "1-1"}),
        ("deadletter_discard", {"shard": 99, "entry_id": "1-1"}),
        ("deadletter_requeue", {"shard": 0, "entry_id": "1-1"}),
        ("deadletter_discard", {"shard": 0, "entry_id": "1-1"}),
    ])
    assert [o["reason"] for o in outcomes] == ["malformed", "malformed", "malformed",
                                               "not_found", "not_found"]


# -- only worker.jobs.<name>, checked before import ---------------------------------------------


def test_the_canary_leaves_a_mark_when_imported(env: Ops) -> None:
    """The control for the tests below: importing the canary does write its marker."""
    assert CANARY not in sys.modules
    importlib.import_module(CANARY)
    assert env.canary_file.read_text().startswith("imported")


FORBIDDEN = [
    f"{CANARY}.boom",
    "os.system",
    "worker.jobs.os.system",
    "worker.consumer.ShardConsumer",
    "worker.jobs._connection",
    "worker.jobs.load_state",
    "worker.jobs.advance.__globals__",
    "builtins.eval",
    "subprocess.run",
]


def test_a_job_outside_the_allowlist_fails_without_being_imported(
        env: Ops, subtests: pytest.Subtests) -> None:
    jobs = [env.enqueue(func, "touch /tmp/phaseguard-pwned") for func in FORBIDDEN]
    env.work()
    for func, job in zip(FORBIDDEN, jobs, strict=True):
        with subtests.test(func=func):
            assert env.fetch(job.id).get_status() == JobStatus.FAILED
            assert "ForbiddenJob" in env.failure(job.id)
    assert not env.canary_file.exists()
    assert CANARY not in sys.modules


def test_a_job_carrying_a_callback_never_imports_it(env: Ops, subtests: pytest.Subtests) -> None:
    hooks = ["on_success", "on_failure", "on_stopped"]
    jobs = [env.enqueue("worker.jobs.accounts_add", {"account_id": f"cb-{i}", "operator_id": "x"},
                        **{hook: Callback(f"{CANARY}.boom")}) for i, hook in enumerate(hooks)]
    env.work()
    for hook, job in zip(hooks, jobs, strict=True):
        with subtests.test(hook=hook):
            assert env.fetch(job.id).get_status() == JobStatus.FAILED
            assert "ForbiddenJob" in env.failure(job.id)
    assert not env.canary_file.exists()
    assert CANARY not in sys.modules
    assert all(env.admin.hlen(env.keys.registry(k)) == 0 for k in range(env.keys.shards))


def test_a_pickled_job_is_never_executed(env: Ops) -> None:
    pickled = Queue(RQ_QUEUE, connection=env.ops)  # RQ's default serializer: pickle
    job = pickled.enqueue("worker.jobs.accounts_add", {"account_id": "pickled",
                                                       "operator_id": "x"})
    env.work()
    assert env.admin.hlen(env.keys.registry(env.keys.shard("pickled"))) == 0
    status = text(env.admin.hget(f"rq:job:{job.id}", "status") or "")
    assert status == JobStatus.FAILED.value


def test_the_job_runs_as_the_worker_user_and_answers_json(env: Ops) -> None:
    job = env.enqueue("worker.jobs.accounts_add", {"account_id": "json-1", "operator_id": "x"})
    env.work()
    raw = env.admin.xrevrange(f"rq:results:{job.id}", count=1)[0][1]
    # RQ stores the serialized value base64-encoded: with our serializer, it is JSON inside
    assert json.loads(b64decode(raw["return_value"])) == {
        "outcome": "applied", "account_id": "json-1", "shard": env.keys.shard("json-1"),
        "phase": "experience"}
