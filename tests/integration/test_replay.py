"""`phasectl replay` against a real redis-server and a running consumer (R-1.6, R-11.2, §4).

Replay waits for the worker to apply every message, so each test runs an in-process consumer loop
in a background thread; the CLI tests also start the RQ ops worker (accounts_add) as a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from contracts.messages import SessionEnded, TradeClosed
from worker import jobs
from worker.domain.calendar import Calendar
from worker.domain.decide import LedgerView, Record, decide, new_account
from worker.domain.model import Registration
from worker.redis_acl import Role
from worker.redis_server import RedisServer, write_run_files
from worker.replay.parsers import ParsedHistory, parse_generic, parse_history
from worker.replay.report import read_history, sessions_of, timeline
from worker.replay.runner import ReplayError, ReplayOptions, ReplayResult, replay
from worker.replay.simulate import simulate
from worker.store.ledger import read_ledger
from worker.store.uow import dumps

from .helpers import PREFIX, Entry, Harness, poll_until, strip

pytestmark = pytest.mark.redis

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FREQTRADE = "freqtrade_backtest-result_StrategyTestV3.json"
MARKETLAB = "marketlab_Strat04TrendPullback_v1_backtest-result-2026-02-20_07-47-23.json"
TRADINGVIEW = "tradingview_leap_futures_trade_history.csv"
# Ids and wall-clock instants of the worker (the pure run has its own): never compared.
VOLATILE = frozenset({"occurred_at", "caused_by", "transition_id", "cause"})
# The records decide() writes; `registered` comes from the accounts_add job.
ENGINE_RECORDS = frozenset({"session_closed", "session_amended", "transition", "breaker_tripped",
                            "breaker_cleared", "size_changed", "entry_denied", "emergency_exit",
                            "unauthorized_entry"})


def shipped(name: str) -> Path:
    if not DATA.is_dir():
        pytest.skip(f"the shared trade-history fixtures are not checked out next to the repo "
                    f"({DATA})")
    return DATA / name


class ConsumerThread:
    """The consumer's finite mode (`run_once`) in a loop on a background thread."""

    def __init__(self, h: Harness) -> None:
        self.consumer = h.consumer()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._loop, name="consumer", daemon=True)

    def _loop(self) -> None:
        try:
            while not self.stop.is_set():
                if self.consumer.run_once() == 0:
                    self.stop.wait(0.0005)  # idle: the event ends the wait at once on stop
        except BaseException as exc:  # surfaced by close(), never lost in the thread
            self.errors.append(exc)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.consumer.release_all()
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def h(redis_admin: redis.Redis, role_url: Callable[[Role], str]) -> Iterator[Harness]:
    harness = Harness(redis_admin, role_url)
    harness.bootstrap()
    consumer = ConsumerThread(harness)
    consumer.thread.start()
    try:
        with capture_logs():  # one log line per message: keep the test output readable
            yield harness
    finally:
        consumer.close()
        harness.close()


class LedgerTap:
    """A before_publish hook that records each message with the entry ledger it meets."""

    def __init__(self, h: Harness, account: str) -> None:
        self.admin = h.admin
        self.key = h.keys.entries(h.keys.shard(account), account)
        self.seen: list[tuple[TradeClosed | SessionEnded, LedgerView]] = []

    def __call__(self, msg: TradeClosed | SessionEnded) -> None:
        self.seen.append((msg, read_ledger(self.admin.hgetall(self.key))))


def run(h: Harness, history: ParsedHistory, account: str, **callbacks: Any) -> ReplayResult:
    worker = h.client("worker")

    def register(request: dict[str, Any]) -> dict[str, Any]:
        return jobs.accounts_add(request, client=worker, prefix=PREFIX)

    return replay(history, client=h.bot(), register=register,
                  calendar=Calendar(h.policy.calendar),
                  options=ReplayOptions(account, timeout=15.0), **callbacks)


def pure_run(h: Harness, history: ParsedHistory, account: str,
             fed: list[tuple[TradeClosed | SessionEnded, LedgerView]]) -> list[Record]:
    """decide() over the same messages and ledgers, from a fresh account, replay profile."""
    policy = h.policy.replay_profile(history.currency)
    reg = Registration(account, "message", history.currency,
                       datetime(2030, 1, 1, tzinfo=UTC), history.trades[0].opened_at)
    state = new_account(reg, policy)
    records: list[Record] = []
    for msg, ledger in fed:
        decision = decide(state, ledger, msg, policy, datetime(2030, 1, 1, tzinfo=UTC), "pure")
        assert decision.dead_letter is None, decision.dead_letter
        if decision.outcome == "applied":
            state = decision.state
            records.extend(decision.history)
    return records


def comparable(records: list[Record] | list[Entry]) -> list[tuple[str, Any]]:
    out = []
    for r in records:
        kind, body = (r.type, r.payload) if isinstance(r, Record) else (r.type, r.body)
        if kind in ENGINE_RECORDS:
            out.append((kind, strip(body, VOLATILE)))
    return out


def normalised(records: list[Record]) -> list[Record]:
    """The pure records through the JSON the history stream stores them as."""
    return [Record(r.type, json.loads(dumps(r.payload))) for r in records]


# -- each shipped format -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [FREQTRADE, TRADINGVIEW, MARKETLAB])
def test_each_shipped_history_replays_through_the_worker_without_manual_edits(
        h: Harness, name: str) -> None:
    history = parse_history(shipped(name))
    account = f"replay-{history.format}-{len(history.trades)}"

    result = run(h, history, account)

    assert result.published + sum(result.skipped.values()) == len(history.trades)
    assert h.deadletters(h.keys.shard(account)) == []
    sessions = sessions_of(read_history(h.admin, h.keys, account))
    assert len(sessions) == result.sessions_ended
    assert sum(s.counted + s.emergency_exits for s in sessions) == result.published
    assert h.public(account)["phase"] == result.final_phase


def test_the_freqtrade_replay_ends_with_the_pure_engines_session_records(h: Harness) -> None:
    history = parse_history(shipped(FREQTRADE))
    tap = LedgerTap(h, "ft-1")

    run(h, history, "ft-1", before_publish=tap)

    worker = comparable(h.history("ft-1"))
    pure = comparable(normalised(pure_run(h, history, "ft-1", tap.seen)))
    assert [body for kind, body in worker if kind == "session_closed"] == [
        body for kind, body in pure if kind == "session_closed"]
    assert worker == pure


def test_r11_2_a_history_that_climbs_and_falls_ends_with_the_pure_engines_records(
        h: Harness) -> None:
    # 100 days of the default strategy: proof, trial, a downgrade, daily limits, the breaker.
    history = parse_generic(simulate(seed=7, days=100), None, "USD")
    tap = LedgerTap(h, "sim-1")

    result = run(h, history, "sim-1", before_publish=tap)

    assert result.skipped["daily_limit"] > 0
    worker = comparable(h.history("sim-1"))
    assert {"transition", "breaker_tripped", "entry_denied", "size_changed"} <= {
        kind for kind, _ in worker}
    # every live trade cites the decision that let it in: none is unauthorized
    assert "unauthorized_entry" not in {kind for kind, _ in worker}
    assert [body["to_phase"] for kind, body in worker if kind == "transition"][:3] == [
        "proof", "trial", "proof"]
    # the replay profile advances and acknowledges the breaker by itself
    assert {body["trigger"] for kind, body in worker if kind == "transition"} == {"auto"}
    assert [body["by"] for kind, body in worker if kind == "breaker_cleared"][:1] == ["auto"]
    assert worker == comparable(normalised(pure_run(h, history, "sim-1", tap.seen)))


# -- the CLI, end to end ---------------------------------------------------------------------------


@pytest.fixture
def stack(h: Harness, redis_server: RedisServer, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A run directory like `make run` writes, and the RQ ops worker on it; the environment."""
    write_run_files(redis_server, tmp_path)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PHASE_") and k not in ("REDIS_URL", "COLUMNS", "LINES")}
    env.update({"PHASE_RUN_DIR": str(tmp_path), "PHASE_KEY_PREFIX": PREFIX,
                "PHASE_LOG_FORMAT": "json", "COLUMNS": "160"})
    log = (tmp_path / "ops.log").open("wb")
    ops = subprocess.Popen([sys.executable, "-m", "worker.ops_worker"], env=env,
                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        poll_until(lambda: h.admin.scard("rq:workers") > 0 or ops.poll() is not None, 30,
                   "the ops worker to register")
        assert ops.poll() is None, (tmp_path / "ops.log").read_text()
        yield env
    finally:
        ops.terminate()
        ops.wait(timeout=30)
        log.close()


def phasectl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "phasectl"), *args], env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_the_printed_timeline_of_seed_7_reaches_trial_and_the_report_matches_it(
        h: Harness, stack: dict[str, str], tmp_path: Path) -> None:
    sim = phasectl(stack, "simulate", "--seed", "7")
    assert sim.returncode == 0, sim.stderr
    (tmp_path / "sim.csv").write_text(sim.stdout)

    done = phasectl(stack, "replay", str(tmp_path / "sim.csv"), "--account", "demo")

    assert done.returncode == 0, done.stderr
    assert "experience → proof" in done.stdout
    assert "proof → trial" in done.stdout
    report = phasectl(stack, "report", "demo", "--out", str(tmp_path / "demo.html"))
    assert report.returncode == 0, report.stderr
    page = (tmp_path / "demo.html").read_text()
    records = read_history(h.admin, h.keys, "demo")
    assert page.count('class="session-point') == len(sessions_of(records))
    assert page.count('class="transition-marker"') == len(timeline(records))


def test_the_printed_timeline_of_a_losing_history_shows_a_downgrade(
        stack: dict[str, str], tmp_path: Path) -> None:
    # 25 winning days earn proof; the losses after them push the account back down
    sim = phasectl(stack, "simulate", "--seed", "7", "--losing", "--days", "60")
    (tmp_path / "losing.csv").write_text(sim.stdout)

    done = phasectl(stack, "replay", str(tmp_path / "losing.csv"), "--account", "loser")

    assert done.returncode == 0, done.stderr
    assert "proof → experience" in done.stdout
    assert "downgrade" in done.stdout
    assert "consecutive_losses" in done.stdout


def test_a_replay_into_an_existing_account_is_refused_with_one_line(
        h: Harness, stack: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "short.csv").write_text(simulate(seed=1, days=2))
    assert phasectl(stack, "replay", str(tmp_path / "short.csv"), "--account", "twice"
                    ).returncode == 0

    again = phasectl(stack, "replay", str(tmp_path / "short.csv"), "--account", "twice")

    assert again.returncode == 3
    assert again.stderr.strip().count("\n") == 0
    assert "already_registered" in again.stderr


def test_without_a_running_worker_the_replay_stops_at_the_deadline(
        redis_admin: redis.Redis, role_url: Callable[[Role], str]) -> None:
    idle = Harness(redis_admin, role_url)
    try:
        idle.bootstrap()
        history = parse_generic(simulate(seed=1, days=2), None, "USD")
        worker = idle.client("worker")

        def register(request: dict[str, Any]) -> dict[str, Any]:
            return jobs.accounts_add(request, client=worker, prefix=PREFIX)

        with pytest.raises(ReplayError) as refused:
            replay(history, client=idle.bot(), register=register,
                   calendar=Calendar(idle.policy.calendar),
                   options=ReplayOptions("nobody-home", timeout=0.2))
        assert refused.value.code == "not_applied"
    finally:
        idle.close()


def test_r11_2_the_worker_runs_replay_accounts_only_on_the_replay_profile() -> None:
    from worker.domain.policy import DEFAULT_POLICY
    from worker.store.runtime import policy_for

    replayed = policy_for(DEFAULT_POLICY, "message", "BTC")

    assert policy_for(DEFAULT_POLICY, "redis", "USD") is DEFAULT_POLICY
    assert (replayed.auto_advance, replayed.auto_acknowledge_breaker, replayed.currency) == (
        True, True, "BTC")
    assert policy_for(DEFAULT_POLICY, "message", "BTC") is replayed  # built once per currency
    assert replayed.gates == DEFAULT_POLICY.gates
