"""The operators' acceptance scenario from a shell: phasectl against a real ops worker process.

`python -m worker.ops_worker` runs as `phaseguard-worker` with the override password in its
environment; `phasectl` runs as `phaseguard-ops` and reads the password from stdin. A trial
account is rolled back to proof with the right password; wrong passwords are refused (exit code
3) and audited; the sixth wrong force-advance within 15 minutes locks the operator out, and the
seventh is refused `locked_out` even with the right password (R-7.4, R-7.11, R-7.13).

The scenario runs once for the module (every phasectl run derives the 600,000-iteration key);
the tests below read what it left behind.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import typer

from tests.integration.signed_support import (
    PASSWORD,
    PHASECTL,
    WRONG_PASSWORD,
    Captured,
    OpsWorker,
    audited,
    deployment,
    env_for,
    s,
)
from worker.redis_acl import USER_FOR_ROLE
from worker.redis_server import RedisServer

pytestmark = pytest.mark.redis

ACCT = "acct-1"
REASON = "desk review 2026-11-24"
EXIT_REFUSED = 3


@dataclass
class Scenario:
    """What the scenario's processes printed, and what Redis held after each step."""

    rollback: Captured
    first_five: list[Captured]
    sixth: Captured
    seventh: Captured
    locked_after_five: bool
    locked_after_six: bool
    phase_after_all: str
    audits: list[dict[str, Any]]
    history_attempts: list[dict[str, Any]]
    lock_pttl: int
    jobs: list[dict[str, Any]] = field(default_factory=list)
    argvs: list[list[str]] = field(default_factory=list)


def force_advance_args(*, as_json: bool = True) -> list[str]:
    args = ["override", "force-advance", ACCT, "--to", "trial", "--operator", "alice",
            "--reason", REASON, "--password-stdin"]
    return [*args, "--json"] if as_json else args


def start(args: list[str], url: str, cwd: Path) -> subprocess.Popen[str]:
    """phasectl as an operator runs it; `finish` writes the password to its stdin."""
    return subprocess.Popen([str(PHASECTL), *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=env_for(url))


def finish(proc: subprocess.Popen[str], password: str) -> Captured:
    try:
        out, err = proc.communicate(password + "\n", timeout=90)
    finally:
        if proc.poll() is None:  # timed out: never leave a phasectl behind
            proc.kill()
            proc.communicate()
    return Captured(proc.returncode, out, err)


def job_hashes(admin: redis.Redis) -> list[dict[str, Any]]:
    rows = []
    for key in admin.scan_iter(match="rq:job:*", count=1000):
        name = s(key)
        if name.count(":") != 2:
            continue
        job_id = name.split(":")[2]
        rows.append({"id": job_id, "ttl": admin.ttl(key), "fields": {
            s(k): s(v) for k, v in admin.hgetall(key).items() if s(k) != "data"},
            "result_ttl": admin.ttl(f"rq:results:{job_id}")})
    return rows


@pytest.fixture(scope="module")
def scenario(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[Scenario]:
    admin = redis_server.admin_client()
    workdir = tmp_path_factory.mktemp("lockout-cli")

    def url(role: str) -> str:
        return redis_server.url_for(USER_FOR_ROLE[role])  # type: ignore[index]

    ops_worker: OpsWorker | None = None
    try:
        admin.flushall()
        with deployment(admin, url, key=b"") as d:  # fixed KDF parameters; no key in-process
            d.register(ACCT)
            d.force_to(ACCT, "trial")
            ops_worker = OpsWorker(url("worker"), PASSWORD, workdir)
            ops_worker.wait_ready(admin)
            ops_url = url("ops")
            argvs: list[list[str]] = []

            def run(args: list[str], password: str) -> Captured:
                argvs.append(args)
                return finish(start(args, ops_url, workdir), password)

            rollback = run(["override", "rollback", ACCT, "--to", "proof", "--operator",
                            "alice", "--reason", REASON, "--password-stdin"], PASSWORD)
            # the first five wrong attempts may run side by side: each is one failure
            procs = [start(force_advance_args(), ops_url, workdir)
                     for _ in range(5)]
            argvs += [force_advance_args()] * 5
            try:
                first_five = [finish(p, WRONG_PASSWORD) for p in procs]
            finally:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.communicate()
            locked_after_five = bool(d.worker.exists(d.keys.ops_lock("alice")))
            sixth = run(force_advance_args(), WRONG_PASSWORD)
            locked_after_six = bool(d.worker.exists(d.keys.ops_lock("alice")))
            lock_pttl = int(d.worker.pttl(d.keys.ops_lock("alice")))
            seventh = run(force_advance_args(), PASSWORD)
            result = Scenario(
                rollback=rollback, first_five=first_five, sixth=sixth, seventh=seventh,
                locked_after_five=locked_after_five, locked_after_six=locked_after_six,
                phase_after_all=d.public(ACCT)["phase"],
                audits=d.audits(d.keys.shard(ACCT)), history_attempts=d.attempts(ACCT),
                lock_pttl=lock_pttl, jobs=job_hashes(admin), argvs=argvs)
        ops_worker.stop()
        yield result
    finally:
        if ops_worker is not None:
            ops_worker.stop()
        admin.close()


def outcome(run: Captured) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(run.stdout)
    return body


def test_r7_4_phasectl_rolls_a_trial_account_back_to_proof_and_prints_the_outcome(
        scenario: Scenario) -> None:
    run = scenario.rollback

    assert run.code == 0, run.stderr
    assert "applied" in run.stdout
    assert f"account_id={ACCT}" in run.stdout
    assert "phase=proof" in run.stdout
    first = scenario.audits[0]
    assert audited(first, operator="alice", action="rollback", target="proof",
                   outcome="applied", reason="")


def test_r7_11_a_wrong_password_is_refused_with_exit_code_3_and_audited(
        scenario: Scenario) -> None:
    for run in scenario.first_five:
        assert run.code == EXIT_REFUSED, run.stderr
        assert (outcome(run)["outcome"], outcome(run)["reason"]) == ("refused", "bad_signature")
    refused = scenario.audits[1:6]
    assert all(audited(a, operator="alice", action="force_advance", target="trial",
                       outcome="refused", reason="bad_signature") for a in refused)
    assert [a["reason"] for a in scenario.history_attempts[1:6]] == ["bad_signature"] * 5


def test_r7_11_the_sixth_wrong_force_advance_within_15_minutes_locks_the_operator_out(
        scenario: Scenario) -> None:
    assert not scenario.locked_after_five
    assert scenario.sixth.code == EXIT_REFUSED
    assert outcome(scenario.sixth) == {"outcome": "refused", "reason": "bad_signature",
                                       "detail": "operator locked out"}
    assert scenario.locked_after_six
    assert 14 * 60 * 1000 < scenario.lock_pttl <= 15 * 60 * 1000


def test_r7_11_the_seventh_is_refused_locked_out_even_with_the_right_password(
        scenario: Scenario) -> None:
    assert scenario.seventh.code == EXIT_REFUSED
    assert outcome(scenario.seventh)["reason"] == "locked_out"
    assert scenario.phase_after_all == "proof"
    assert audited(scenario.audits[-1], operator="alice", action="force_advance",
                   target="trial", outcome="refused", reason="locked_out")
    assert len(scenario.audits) == len(scenario.history_attempts) == 8


def test_r7_13_the_password_is_never_on_argv(scenario: Scenario) -> None:
    for argv in scenario.argvs:
        assert not any(PASSWORD in a or WRONG_PASSWORD in a for a in argv)
    from worker.cli import phasectl

    root: Any = typer.main.get_command(phasectl)
    signed = [("override", "force-advance"), ("override", "rollback"),
              ("override", "reset-epoch"), ("override", "clear-reduction"),
              ("policy", "apply"), ("acknowledge",), ("ack",)]
    for path in signed:
        cmd = root
        for name in path:
            cmd = cmd.commands[name]
        secret = [p for p in cmd.params if "password" in (p.name or "")]
        # the only password parameter is a flag: the value itself can only come from stdin
        assert [(p.name, p.is_flag) for p in secret] == [("password_stdin", True)], path


def test_r7_13_phasectl_jobs_expire_with_the_request_and_keep_their_results_briefly(
        scenario: Scenario) -> None:
    assert len(scenario.jobs) == 8  # one per phasectl run
    for job in scenario.jobs:
        assert 0 < int(job["fields"]["ttl"]) <= 10 * 60  # enqueued to live until expires_at
        assert int(job["fields"]["result_ttl"]) <= 3600
        assert int(job["fields"]["failure_ttl"]) <= 3600
        assert 0 < job["ttl"] <= 3600  # result_ttl: the hash with the signed request goes
        assert 0 < job["result_ttl"] <= 3600
        assert job["fields"]["status"] == "finished"

