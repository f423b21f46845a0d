"""Builders for the signed-action tests: a deployment with a known override key, jobs, audit.

The KDF parameters (`P:ops:kdf`) and the deployment id are fixed, so a test module derives the
600,000-iteration key once and every test installs it with `keyring.install_key` instead of
deriving again. Jobs are enqueued as `phaseguard-ops` with RQ's JSON serializer and run by the
Phaseguard RQ worker class (`work(burst=True)`) logged in as `phaseguard-worker`, as in
production. Account states that need a history (a tripped breaker) are built by the pure engine
and committed through the store's unit of work.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import redis
from redis.client import Pipeline
from rq import Queue
from rq.results import Result
from rq.serializers import JSONSerializer

from contracts.messages import TradeClosed
from worker import jobs
from worker.domain import actions
from worker.domain.decide import EMPTY_LEDGER, decide
from worker.domain.model import AccountState, Phase
from worker.domain.policy import DEFAULT_POLICY
from worker.domain.rules import NEXT_PHASE
from worker.jobs import load_state
from worker.ops import keyring
from worker.ops.signing import KDF_ALG, KDF_ITERATIONS, KdfParams, fmt_ts, new_request, sign
from worker.ops_worker import PhaseguardJob, PhaseguardSimpleWorker
from worker.redis_acl import Role
from worker.store.keys import RQ_QUEUE, Keys
from worker.store.runtime import init_meta, install_policy, redis_now
from worker.store.uow import Staging, transact

PREFIX = "phase"  # the session server's ACL rules are written for this prefix
PASSWORD = "correct horse battery staple 42"  # the good override password (>= 20 characters)
WRONG_PASSWORD = "incorrect horse battery staple 42"
DEPLOYMENT_ID = "0b7f6c9e-3f1d-4c8a-9e51-2d4a6b8c0e13"
PARAMS = KdfParams(KDF_ALG, KDF_ITERATIONS, bytes.fromhex("9f3a5c7e1b2d4f6081a3c5e7092b4d6f"),
                   DEPLOYMENT_ID)
REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
PHASECTL = Path(sys.executable).with_name("phasectl")  # the console script, as operators run it
POLL_PAUSE_S = 0.02  # the only pause in these tests, always inside a deadline-bounded loop

T = TypeVar("T")
RoleUrl = Callable[[Role], str]
JSONDict = dict[str, Any]


def poll_until(probe: Callable[[], T], timeout: float, what: str) -> T:
    """Call `probe` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_PAUSE_S)


def s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class BurstWorker(PhaseguardSimpleWorker):
    """The Phaseguard worker class, minus RQ's command channel (remote stop/kill over pubsub).

    A burst run needs no remote commands; RQ's pubsub thread blocks for up to 60 s and costs a
    1 s join on every burst. Job resolution, the allowlist and the serializer are untouched.
    """

    def subscribe(self) -> None:
        return None


@dataclass
class Deployment:
    """One initialised deployment on the session's redis-server, seen as worker and as ops."""

    worker: redis.Redis
    ops: redis.Redis
    keys: Keys
    key: bytes

    # -- accounts ---------------------------------------------------------------------------

    def register(self, account: str) -> None:
        result = jobs.accounts_add({"account_id": account, "operator_id": "ops"},
                                   client=self.worker, prefix=PREFIX)
        assert result["outcome"] == "applied", result

    def state(self, account: str) -> AccountState:
        st = load_state(self.worker, self.keys, self.keys.shard(account), account)
        assert st is not None
        return st

    def public(self, account: str) -> dict[str, str]:
        raw = self.worker.hgetall(self.keys.state(self.keys.shard(account), account))
        return {s(k): s(v) for k, v in raw.items()}

    def now(self) -> datetime:
        return redis_now(self.worker.time())

    def commit(self, before: AccountState, after: AccountState, history: list[Any],
               events: list[Any], now: datetime) -> None:
        """Write an engine-built state with its history and events in one transaction."""
        k = self.keys.shard(after.account_id)

        def gather(pipe: Pipeline) -> None:
            return None

        def stage(_: None) -> Staging:
            staging = Staging(self.keys, k)
            staging.state(after)
            for rec in history:
                staging.history(after.account_id, rec, now, "test-setup")
            for ev in events:
                staging.event(after.account_id, ev, now, "test-setup")
            return staging

        assert before.account_id == after.account_id
        transact(self.worker, [self.keys.state(k, after.account_id)], gather, stage)

    def force_to(self, account: str, phase: Phase) -> AccountState:
        """Climb with the engine's force_advance (no gate) up to `phase`, committed."""
        st = start = self.state(account)
        now = self.now()
        history: list[Any] = []
        events: list[Any] = []
        while st.phase != phase:
            nxt = NEXT_PHASE[st.phase]
            res = actions.act_force_advance(st, DEFAULT_POLICY, now, target=nxt,
                                            operator_id="setup", reason="setup", cause="setup")
            assert res.outcome == "applied", res
            st = res.state
            history += res.history
            events += res.events
        self.commit(start, st, history, events, now)
        return st

    def trip(self, account: str, phase: Phase = "trial") -> AccountState:
        """Register, climb to `phase`, then three losses: downgraded, tripped and reduced."""
        self.register(account)
        st = start = self.force_to(account, phase)
        base = self.now()  # after the epoch start, so the losses belong to the epoch
        history: list[Any] = []
        events: list[Any] = []
        for i in range(3):
            msg = TradeClosed(schema_version=1, account_id=account, trade_id=f"loss-{i}",
                              mode="paper", closed_at=base + timedelta(milliseconds=i + 1),
                              pnl=Decimal("-5.00"))
            dec = decide(st, EMPTY_LEDGER, msg, DEFAULT_POLICY,
                         base + timedelta(milliseconds=i + 1), f"loss-{i}")
            assert dec.outcome == "applied", dec
            st = dec.state
            history += dec.history
            events += dec.events
        assert st.halted, "three losses must trip the breaker"
        assert st.size_reduced, "three losses must downgrade with a size reduction"
        self.commit(start, st, history, events, base)
        # every later job runs after the downgrade instant, as it would in production
        poll_until(lambda: self.now() > base + timedelta(milliseconds=3), 5.0, "the clock")
        return st

    # -- requests and jobs ------------------------------------------------------------------

    def request(self, action: str, account: str | None, *, operator: str = "alice",
                target: str | None = None, expected: str | None = "auto",
                reason: str = "operator test", key: bytes | None = None,
                at: datetime | None = None, validity: timedelta = timedelta(minutes=5),
                policy: str | None = None, expected_policy_version: str | None = None,
                **overrides: Any) -> JSONDict:
        """A signed request as phasectl builds it; `overrides` replace fields before signing."""
        if expected == "auto":
            expected = None if account is None else self._phase_or_none(account)
        fields = new_request(deployment_id=DEPLOYMENT_ID, action=action, operator_id=operator,
                             reason=reason, account_id=account, expected_phase=expected,
                             target_phase=target, now=at or self.now(),
                             validity=validity, policy=policy,
                             expected_policy_version=expected_policy_version)
        fields.update(overrides)
        return sign(fields, self.key if key is None else key)

    def _phase_or_none(self, account: str) -> str:
        phase = self.worker.hget(self.keys.state(self.keys.shard(account), account), "phase")
        return "experience" if phase is None else s(phase)

    def run(self, *calls: tuple[str, object]) -> list[JSONDict]:
        """Enqueue each (job name, request) as ops, run them all, return their outcomes."""
        queue = Queue(RQ_QUEUE, connection=self.ops, serializer=JSONSerializer)
        enqueued = [queue.enqueue(f"worker.jobs.{name}", request) for name, request in calls]
        BurstWorker([RQ_QUEUE], connection=self.worker, job_class=PhaseguardJob,
                    serializer=JSONSerializer).work(burst=True)
        outcomes = []
        for job in enqueued:
            result = job.latest_result()
            assert result is not None, f"job {job.id} did not run"
            assert result.type == Result.Type.SUCCESSFUL, result.exc_string
            assert isinstance(result.return_value, dict)
            outcomes.append(result.return_value)
        return outcomes

    def run_one(self, name: str, request: object) -> JSONDict:
        return self.run((name, request))[0]

    # -- what was written -------------------------------------------------------------------

    def audits(self, shard: int) -> list[JSONDict]:
        rows = self.worker.xrange(self.keys.overrides(shard))
        return [json.loads(fields[b"data"]) for _, fields in rows]

    def audit_counts(self) -> dict[int, int]:
        """Entries per shard's overrides stream, only for the shards that have any."""
        pipe = self.worker.pipeline(transaction=False)
        for k in range(self.keys.shards):
            pipe.xlen(self.keys.overrides(k))
        return {k: n for k, n in enumerate(pipe.execute()) if n}

    def history(self, account: str) -> list[tuple[str, JSONDict]]:
        key = self.keys.history(self.keys.shard(account), account)
        return [(s(f[b"type"]), json.loads(f[b"data"])) for _, f in self.worker.xrange(key)]

    def attempts(self, account: str) -> list[JSONDict]:
        return [data for kind, data in self.history(account) if kind == "override_attempt"]

    def events(self, shard: int) -> list[JSONDict]:
        return [json.loads(f[b"data"]) for _, f in self.worker.xrange(self.keys.events(shard))]


@contextmanager
def deployment(admin: redis.Redis, role_url: RoleUrl, key: bytes) -> Iterator[Deployment]:
    """A fresh deployment (the admin fixture emptied the server) with `key` installed.

    P:meta's deployment id and P:ops:kdf are written before the worker's own first start
    would create them, so they match the key the module derived once.
    """
    worker = redis.Redis.from_url(role_url("worker"))
    ops = redis.Redis.from_url(role_url("ops"))
    previous = keyring.current()
    try:
        worker.hset(Keys(PREFIX, 1).meta, "deployment_id", DEPLOYMENT_ID)
        worker.hset(Keys(PREFIX, 1).ops_kdf, mapping=PARAMS.as_fields())
        keys = init_meta(worker, PREFIX)
        install_policy(worker, keys, DEFAULT_POLICY)
        assert keyring.ensure_kdf(worker, keys) == PARAMS
        keyring.install_key(key)
        yield Deployment(worker, ops, keys, key)
    finally:
        keyring.install_key(previous)
        worker.close()
        ops.close()


def audited(record: Mapping[str, Any], *, operator: str, action: str, outcome: str,
            reason: str, target: str | None = None) -> bool:
    """The audit record names what R-7.13 asks for (and never the signature)."""
    return (record.get("operator_id") == operator and record.get("action") == action
            and record.get("target_phase") == target and record.get("outcome") == outcome
            and record.get("reason") == reason and "signature" not in record)


# -- subprocesses -------------------------------------------------------------------------------


def env_for(url: str, **extra: str) -> dict[str, str]:
    """A process environment: REDIS_URL, the test prefix, JSON logs, nothing inherited of ours."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PHASE_", "REDIS_"))}
    env.update({"REDIS_URL": url, "PHASE_KEY_PREFIX": PREFIX, "PHASE_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1", "COLUMNS": "200", **extra})
    return env


@dataclass
class Captured:
    """A finished process: exit code and everything it wrote."""

    code: int
    stdout: str
    stderr: str


def phasectl(args: list[str], *, url: str, cwd: Path, stdin: str | None = None,
             timeout: float = 60.0) -> Captured:
    """Run phasectl as an operator would, logged in by REDIS_URL (the ops user)."""
    proc = subprocess.run([PYTHON, "-c", "from worker.cli import phasectl_main; phasectl_main()",
                           *args], input=stdin, capture_output=True, text=True, cwd=cwd,
                          env=env_for(url), timeout=timeout, check=False)
    return Captured(proc.returncode, proc.stdout, proc.stderr)


class OpsWorker:
    """`python -m worker.ops_worker` as a subprocess; its stdout and stderr go to files."""

    def __init__(self, url: str, password: str, logdir: Path) -> None:
        self.out_path = logdir / "ops-worker.out"
        self.err_path = logdir / "ops-worker.err"
        self._out = self.out_path.open("wb")
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen([PYTHON, "-m", "worker.ops_worker"], cwd=logdir,
                                     env=env_for(url, PHASE_OVERRIDE_PASSWORD=password),
                                     stdout=self._out, stderr=self._err)

    def wait_ready(self, admin: redis.Redis, timeout: float = 30.0) -> None:
        """Until an RQ worker listens on phase-ops (the key is derived before it registers)."""

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"the ops worker exited with {self.proc.returncode}: "
                                     f"{self.err_path.read_text()[-2000:]}")
            return bool(admin.scard(f"rq:workers:{RQ_QUEUE}"))

        poll_until(ready, timeout, "the ops worker to listen on phase-ops")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._out.close()
        self._err.close()

    def logs(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(
            errors="replace")


def expired_window(now: datetime) -> dict[str, str]:
    """issued_at and expires_at of a request that expired a minute ago."""
    return {"issued_at": fmt_ts(now - timedelta(minutes=6)),
            "expires_at": fmt_ts(now - timedelta(minutes=1))}
