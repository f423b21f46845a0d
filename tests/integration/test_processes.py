"""The processes at start-up and phasectl's read-only commands (R-12.1, R-12.2, R-1.3, R-7.9).

`python -m worker` and `python -m worker.ops_worker` run as subprocesses: they refuse to start on
a Redis without the R-12.2 durability settings unless PHASE_UNSAFE_REDIS=1 (then they say so
loudly), after the policy's `holidays_valid_through` (R-1.3, warning from 30 days before) and
with an override password shorter than 20 characters (R-7.9). A refusal is one line on stderr and
exit code 2, before anything is consumed. The first start fixes the shard count (R-9.1), the
KDF parameters (R-7.9) and the policy (R-11.1); later starts keep them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

import worker
from worker.redis_acl import USER_FOR_ROLE, Role
from worker.redis_server import RedisServer
from worker.store.runtime import DeploymentError, check_persistence

from .builders_b import clean_env, venv_script
from .helpers import (
    PREFIX,
    Harness,
    accounts_on_shard,
    poll_until,
    worker_env,
)

pytestmark = pytest.mark.redis
EXIT_USAGE = 2
START_TIMEOUT_S = 30.0
# (module, the name it gives itself on stderr)
PROCESSES = [("worker", "phase-worker"), ("worker.ops_worker", "phase-ops-worker")]
DEFAULT_POLICY_TOML = Path(worker.__file__).parent / "default_policy.toml"


@pytest.fixture
def unsafe_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A throwaway redis-server without the AOF (`appendonly no`), with the R-7.14 users."""
    with RedisServer(tmp_path / "unsafe-redis", prefix=PREFIX, unsafe=True) as server:
        yield server


def run_to_exit(module: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # a fixed argv: this interpreter running one of our own modules
    return subprocess.run([sys.executable, "-m", module], env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, check=False)


def refusal(done: subprocess.CompletedProcess[str], name: str) -> str:
    """The single `name:` line of a process that refused to start."""
    assert done.returncode == EXIT_USAGE, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"{name}: ")
    return lines[0]


def run_until_logged(module: str, env: dict[str, str], cwd: Path, event: str, *args: str
                     ) -> list[dict[str, Any]]:
    """Start `module`, wait until it logs `event`, stop it (SIGTERM); its JSON log lines."""
    log_path = cwd / f"{module}.log"
    with log_path.open("wb") as log:
        # a fixed argv: this interpreter running one of our own modules
        proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env, cwd=cwd,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            poll_until(lambda: proc.poll() is not None or f'"{event}"' in log_path.read_text(),
                       START_TIMEOUT_S, f"{module} to log {event}")
            assert proc.poll() is None, log_path.read_text()
            proc.terminate()
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=15)
    return [json.loads(line) for line in log_path.read_text().splitlines()
            if line.startswith("{")]


def policy_valid_through(directory: Path, through: date) -> Path:
    """The default policy file with another `holidays_valid_through`."""
    text, count = re.subn(r'^holidays_valid_through = ".*"$',
                          f'holidays_valid_through = "{through.isoformat()}"',
                          DEFAULT_POLICY_TOML.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert count == 1
    path = directory / "policy.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- durability settings, checked at start -------------------------------------------------


def test_r12_2_the_start_check_passes_on_a_server_with_the_durability_settings(
        h: Harness) -> None:
    assert check_persistence(h.client("worker", decode_responses=True), unsafe_ok=False) == []


def test_r12_2_the_start_check_refuses_a_server_without_them(
        unsafe_server: RedisServer) -> None:
    with redis.Redis.from_url(unsafe_server.url_for(USER_FOR_ROLE["worker"]),
                              decode_responses=True) as client:
        with pytest.raises(DeploymentError):
            check_persistence(client, unsafe_ok=False)
        problems = check_persistence(client, unsafe_ok=True)  # PHASE_UNSAFE_REDIS=1

    assert any(p.startswith("appendonly ") for p in problems)


@pytest.mark.parametrize(("module", "name"), PROCESSES)
def test_r12_2_a_process_refuses_to_start_on_an_unsafe_redis(
        unsafe_server: RedisServer, tmp_path: Path, module: str, name: str) -> None:
    env = worker_env(unsafe_server.url_for(USER_FOR_ROLE["worker"]))

    line = refusal(run_to_exit(module, env, tmp_path), name)

    assert "PHASE_UNSAFE_REDIS" in line
    with unsafe_server.admin_client() as admin:
        assert admin.dbsize() == 0  # refused before initialising anything


def test_r12_2_with_phase_unsafe_redis_1_the_worker_starts_and_warns_loudly(
        unsafe_server: RedisServer, tmp_path: Path) -> None:
    env = worker_env(unsafe_server.url_for(USER_FOR_ROLE["worker"]), PHASE_UNSAFE_REDIS="1")

    lines = run_until_logged("worker", env, tmp_path, "worker_started")

    [warning] = [line for line in lines if line["event"] == "UNSAFE_REDIS"]
    assert warning["level"] == "warning"
    assert any(p.startswith("appendonly ") for p in warning["problems"])


# -- the holiday list's validity, checked at start -----------------------------------------


@pytest.mark.parametrize(("module", "name"), PROCESSES)
def test_r1_3_a_process_refuses_to_start_after_holidays_valid_through(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path, module: str,
        name: str) -> None:
    yesterday = h.now().date() - timedelta(days=1)
    env = worker_env(role_url("worker"),
                     PHASE_POLICY_FILE=str(policy_valid_through(tmp_path, yesterday)))

    line = refusal(run_to_exit(module, env, tmp_path), name)

    assert "holidays_valid_through" in line


def test_r1_3_the_worker_warns_from_30_days_before_holidays_valid_through(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    through = h.now().date() + timedelta(days=29)
    env = worker_env(role_url("worker"),
                     PHASE_POLICY_FILE=str(policy_valid_through(tmp_path, through)))

    lines = run_until_logged("worker", env, tmp_path, "worker_started")

    [warning] = [line for line in lines if line["event"] == "holidays_expiring"]
    assert (warning["level"], warning["valid_through"]) == ("warning", through.isoformat())


def test_r1_3_the_worker_does_not_warn_earlier_than_30_days_before(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    through = h.now().date() + timedelta(days=45)
    env = worker_env(role_url("worker"),
                     PHASE_POLICY_FILE=str(policy_valid_through(tmp_path, through)))

    lines = run_until_logged("worker", env, tmp_path, "worker_started")

    assert [line for line in lines if line["event"] == "holidays_expiring"] == []


# -- what the first start fixes ----------------------------------------------------


def test_r9_1_the_shard_count_is_fixed_at_the_first_start(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    env = worker_env(role_url("worker"))

    run_until_logged("worker", env, tmp_path, "worker_started")
    first = h.admin.hget(h.attach().meta, "shards")
    lines = run_until_logged("worker", env, tmp_path, "worker_started", "--shards", "8")

    assert first == "16"
    assert h.admin.hget(h.keys.meta, "shards") == "16"
    [started] = [line for line in lines if line["event"] == "worker_started"]
    assert started["shards"] == 16


def test_r11_1_the_first_start_installs_the_policy_file_and_later_starts_keep_it(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    today = h.now().date()
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    first = policy_valid_through(first_dir, today + timedelta(days=400))
    second = policy_valid_through(second_dir, today + timedelta(days=500))

    run_until_logged("worker", worker_env(role_url("worker"), PHASE_POLICY_FILE=str(first)),
                     tmp_path, "worker_started")
    installed = h.admin.get(h.attach().policy)
    run_until_logged("worker", worker_env(role_url("worker"), PHASE_POLICY_FILE=str(second)),
                     tmp_path, "worker_started")

    assert installed is not None
    assert h.admin.get(h.keys.policy) == installed
    assert h.policy.calendar.holidays_valid_through == today + timedelta(days=400)


# -- the override password and the KDF parameters at start ---------------------------------


def test_r7_9_the_consumer_refuses_a_password_shorter_than_20_characters(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    short = "nineteen-characters"
    assert len(short) == 19
    env = worker_env(role_url("worker"), PHASE_OVERRIDE_PASSWORD=short)

    done = run_to_exit("worker", env, tmp_path)

    refusal(done, "phase-worker")
    assert short not in done.stdout + done.stderr


def test_r7_9_the_first_start_stores_the_kdf_parameters_and_later_starts_keep_them(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    env = worker_env(role_url("worker"))

    run_until_logged("worker", env, tmp_path, "worker_started")
    first = h.admin.hgetall(h.attach().ops_kdf)
    run_until_logged("worker", env, tmp_path, "worker_started")

    assert h.admin.hgetall(h.keys.ops_kdf) == first
    assert (first["alg"], first["iterations"], len(bytes.fromhex(str(first["salt"])))) == (
        "pbkdf2-hmac-sha256", "600000", 16)
    assert first["deployment_id"] == h.admin.hget(h.keys.meta, "deployment_id")


# -- phasectl's read-only commands against a deployment ------------------------------------


def phasectl(role_url: Callable[[Role], str], cwd: Path, *args: str
             ) -> subprocess.CompletedProcess[str]:
    env = clean_env(REDIS_URL=role_url("ops"), PHASE_KEY_PREFIX=PREFIX,
                    PHASE_RUN_DIR=str(cwd / "no-run-dir"))
    return subprocess.run([venv_script("phasectl"), *args], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def json_documents(text: str) -> list[Any]:
    """Every JSON value in `text`, one after the other (pretty-printed ones included)."""
    decoder = json.JSONDecoder()
    found, at = [], 0
    while (at := len(text) - len(text[at:].lstrip())) < len(text):
        value, at = decoder.raw_decode(text, at)
        found.append(value)
    return found


def test_r12_1_phasectl_events_prints_the_events_of_every_shard(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    keys = h.bootstrap()
    accounts = [accounts_on_shard(keys, 1, 1)[0], accounts_on_shard(keys, 9, 1)[0]]
    h.close_a_day(accounts)

    done = phasectl(role_url, tmp_path, "events", "--json")

    assert done.returncode == 0, done.stderr
    printed = json_documents(done.stdout)
    assert sorted((e["type"], e["account_id"]) for e in printed) == sorted(
        ("session_closed", a) for a in accounts)


def test_r12_1_phasectl_policy_show_prints_the_effective_policy_and_its_version(
        h: Harness, role_url: Callable[[Role], str], tmp_path: Path) -> None:
    h.bootstrap()

    done = phasectl(role_url, tmp_path, "policy", "show", "--json")

    assert done.returncode == 0, done.stderr
    [shown] = json_documents(done.stdout)
    assert shown == {"version": h.policy.version,
                     "policy": json.loads(h.policy.canonical_json())}
