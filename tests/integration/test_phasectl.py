"""phasectl end to end (R-12.1, R-7.1, R-7.7, R-7.7b): real processes on the session's Redis.

`phasectl` runs as a subprocess with the ops user's URL; the ops worker runs as
`python -m worker.ops_worker` with the worker user's URL. Operator mistakes end in exactly one
`phasectl:` line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from worker.redis_acl import USER_FOR_ROLE, Role
from worker.redis_server import RedisServer, free_port
from worker.store.keys import RQ_QUEUE, Keys

from .builders_b import (
    MINUTE,
    PREFIX,
    ROOT,
    clean_env,
    consumer,
    drain,
    init_deployment,
    now_of,
    register,
    trade,
    venv_script,
    xadd,
)

pytestmark = pytest.mark.redis

EXIT_USAGE, EXIT_REFUSED, EXIT_UNAVAILABLE = 2, 3, 4
START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 60.0


@dataclass
class Deployment:
    admin: redis.Redis
    worker: redis.Redis
    keys: Keys
    urls: Callable[[Role], str]
    tmp: Path

    def phasectl(self, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
        env = clean_env(REDIS_URL=url or self.urls("ops"), PHASE_KEY_PREFIX=PREFIX,
                        PHASE_RUN_DIR=str(self.tmp / "no-run-dir"))
        return subprocess.run([venv_script("phasectl"), *args], env=env, cwd=self.tmp,
                              capture_output=True, text=True, timeout=CALL_TIMEOUT_S, check=False)

    def json(self, *args: str, code: int = 0) -> Any:
        done = self.phasectl(*args, "--json")
        assert done.returncode == code, (done.stdout, done.stderr)
        return json.loads(done.stdout)


@pytest.fixture
def deployment(redis_admin: redis.Redis, role_url: Callable[[Role], str],
               tmp_path: Path) -> Iterator[Deployment]:
    """A freshly initialised deployment (P:meta, P:policy) and no ops worker."""
    worker = redis.Redis.from_url(role_url("worker"))
    try:
        yield Deployment(redis_admin, worker, init_deployment(worker), role_url, tmp_path)
    finally:
        worker.close()


@contextmanager
def ops_worker_process(d: Deployment) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m worker.ops_worker` as the worker user, listening on phase-ops."""
    log_path = d.tmp / "ops-worker.log"
    env = clean_env(REDIS_URL=d.urls("worker"), PHASE_KEY_PREFIX=PREFIX,
                    PHASE_LOG_FORMAT="json", PHASE_RUN_DIR=str(d.tmp / "no-run-dir"))
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "worker.ops_worker"], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not d.admin.smembers(f"rq:workers:{RQ_QUEUE}"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"the ops worker did not start:\n{log_path.read_text()}")
                time.sleep(0.05)
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # warm shutdown: finishes the job in hand
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture(scope="class")
def with_ops_worker(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Deployment]:
    """One deployment and one ops worker for a whole class; its tests use distinct accounts.

    Class-scoped (the per-test `redis_admin` would empty Redis under the running worker), so
    the class's tests never request `redis_admin` and the worker stops when the class ends.
    """
    admin = redis_server.admin_client(decode_responses=True)
    worker = redis.Redis.from_url(redis_server.url_for(USER_FOR_ROLE["worker"]))
    try:
        admin.flushall()
        d = Deployment(admin, worker, init_deployment(worker),
                       lambda role: redis_server.url_for(USER_FOR_ROLE[role]),
                       tmp_path_factory.mktemp("phasectl"))
        with ops_worker_process(d):
            yield d
    finally:
        worker.close()
        admin.close()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    """The single `phasectl:` line of a failed command (and no traceback anywhere)."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("phasectl: ")
    return lines[0]


# -- through a running ops worker --------------------------------------------------------------


class TestWithAnOpsWorker:
    """phasectl -> RQ (ops user) -> `python -m worker.ops_worker` (worker user) -> outcome."""

    def test_accounts_add_list_and_retire(self, with_ops_worker: Deployment) -> None:
        d = with_ops_worker
        added = d.json("accounts", "add", "acct-1", "--operator", "alice")
        assert added == {"outcome": "applied", "account_id": "acct-1",
                         "shard": d.keys.shard("acct-1"), "phase": "experience"}
        assert _row(d.json("accounts", "list"), "acct-1") == {
            "account_id": "acct-1", "shard": d.keys.shard("acct-1"), "clock": "redis",
            "currency": "USD", "retired_at": None, "phase": "experience", "halted": False,
            "degraded": False, "position_size": "0.00"}

        retired = d.json("accounts", "retire", "acct-1", "--operator", "alice")
        assert retired["outcome"] == "applied"
        assert _row(d.json("accounts", "list"), "acct-1")["retired_at"] == retired["retired_at"]

        again = d.phasectl("accounts", "add", "acct-1", "--json")
        assert again.returncode == EXIT_REFUSED
        assert json.loads(again.stdout) == {"outcome": "refused", "reason": "already_registered"}

    def test_advance_refused_by_the_gate_exits_3_with_the_criteria(
            self, with_ops_worker: Deployment) -> None:
        d = with_ops_worker
        register(d.worker, "eager")
        out = d.json("advance", "eager", "--operator", "alice", code=EXIT_REFUSED)
        assert (out["outcome"], out["reason"], out["phase"]) == ("refused", "gate_failed",
                                                                 "experience")
        assert [c["name"] for c in out["validation"]["criteria"]] == [
            "closed_sessions_with_trades", "win_rate", "rr", "override_incidents",
            "non_regular_share"]
        human = d.phasectl("advance", "eager")
        assert human.returncode == EXIT_REFUSED
        assert "refused: gate_failed" in human.stdout
        assert "closed_sessions_with_trades" in human.stdout

    def test_dead_letters_are_listed_and_discarded(self, with_ops_worker: Deployment) -> None:
        d = with_ops_worker
        register(d.worker, "dl-acct")
        k = d.keys.shard("dl-acct")
        bad = xadd(d.admin, d.keys, k, "trade_closed",
                   trade("dl-acct", "t-1", now_of(d.admin) - MINUTE, leverage="5"))
        drain(consumer(d.worker, d.keys))

        [row] = [r for r in d.json("deadletter", "list") if r["account_id"] == "dl-acct"]
        assert (row["shard"], row["reason"], row["source_id"]) == (k, "unknown_field", bad)
        assert d.json("status", "dl-acct")["degraded"] is True

        out = d.json("deadletter", "discard", str(k), row["entry_id"], "--operator", "alice")
        assert (out["outcome"], out["entry_id"]) == ("applied", row["entry_id"])
        assert d.json("deadletter", "list", "--account", "dl-acct") == []
        assert d.json("status", "dl-acct")["degraded"] is False


def _row(rows: list[dict[str, Any]], account_id: str) -> dict[str, Any]:
    [row] = [r for r in rows if r["account_id"] == account_id]
    return row


# -- read-only commands ------------------------------------------------------------------------


def test_status_shows_phase_breaker_size_and_the_next_gate(deployment: Deployment) -> None:
    d = deployment
    register(d.worker, "watched")
    status = d.json("status", "watched")
    assert (status["account_id"], status["phase"], status["breaker_tripped"], status["degraded"],
            status["position_size"], status["live_entry_today"]) == (
        "watched", "experience", False, False, "0.00", False)
    assert status["gate"]["to_phase"] == "proof"
    assert status["gate"]["eligible"] is False
    human = d.phasectl("status", "watched")
    assert human.returncode == 0
    assert "experience" in human.stdout
    assert "breaker" in human.stdout


def test_validate_evaluates_the_gate_read_only(deployment: Deployment) -> None:
    d = deployment
    register(d.worker, "checked")
    k = d.keys.shard("checked")
    before = d.admin.hgetall(d.keys.state(k, "checked"))
    gate = d.json("validate", "checked", code=1)  # not eligible: non-zero, scriptable
    assert (gate["from_phase"], gate["to_phase"], gate["eligible"]) == ("experience", "proof",
                                                                        False)
    assert gate["failed"] == [c["name"] for c in gate["criteria"] if not c["met"]]
    human = d.phasectl("validate", "checked")
    assert human.returncode == 1
    assert "win_rate" in human.stdout
    assert d.admin.hgetall(d.keys.state(k, "checked")) == before
    assert d.admin.llen(f"rq:queue:{RQ_QUEUE}") == 0


# -- mistakes: one line, non-zero, no traceback -------------------------------------------------


@pytest.mark.parametrize(("args", "code"), [
    (["status", "bad id!"], EXIT_USAGE),
    (["frobnicate"], EXIT_USAGE),
    (["accounts", "add"], EXIT_USAGE),
    (["status", "--bogus", "acct-1"], EXIT_USAGE),
    (["accounts", "add", "acct-2", "--clock", "wall"], EXIT_USAGE),
    (["deadletter", "discard", "shard-one", "1-1"], EXIT_USAGE),
    (["status", "ghost"], EXIT_REFUSED),
], ids=["bad-account-id", "unknown-command", "missing-argument", "unknown-option",
        "bad-clock", "bad-shard", "unknown-account"])
def test_a_mistake_is_one_line_on_stderr(deployment: Deployment, args: list[str],
                                         code: int) -> None:
    done = deployment.phasectl(*args)
    one_line_error(done)
    assert done.returncode == code
    assert done.stdout == ""


def test_an_unreachable_redis_is_one_line(deployment: Deployment) -> None:
    done = deployment.phasectl("status", "acct-1", url=f"redis://127.0.0.1:{free_port()}/0")
    assert "cannot reach Redis" in one_line_error(done)
    assert done.returncode == EXIT_UNAVAILABLE


def test_wrong_credentials_are_one_line_without_the_password(deployment: Deployment) -> None:
    url = deployment.urls("ops")
    user_part, _, host_part = url.rpartition("@")
    wrong = f"{user_part.rsplit(':', 1)[0]}:not-the-password-at-all@{host_part}"
    done = deployment.phasectl("status", "acct-1", url=wrong)
    line = one_line_error(done)
    assert done.returncode == EXIT_UNAVAILABLE
    assert "not-the-password-at-all" not in line


def test_the_bot_user_cannot_enqueue_through_phasectl(deployment: Deployment) -> None:
    done = deployment.phasectl("accounts", "add", "sneaky", url=deployment.urls("bot"))
    one_line_error(done)
    assert deployment.admin.llen(f"rq:queue:{RQ_QUEUE}") == 0


def test_without_an_ops_worker_a_command_times_out_cleanly(deployment: Deployment) -> None:
    done = deployment.phasectl("accounts", "add", "lonely", "--timeout", "1")
    line = one_line_error(done)
    assert done.returncode == EXIT_UNAVAILABLE
    assert "no ops worker" in line
    assert deployment.admin.hlen(deployment.keys.registry(deployment.keys.shard("lonely"))) == 0
