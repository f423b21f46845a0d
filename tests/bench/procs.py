"""Processes of the worker benchmarks: consumers, the subscriber, the reference baseline.

Every process started here is waited for (or killed) before the helper returns or closes, so no
ResourceWarning leaks into `filterwarnings = error`.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import redis

from tests.bench.workload import ROOT

BASELINE = (ROOT.parent / "shared" / "bench" / "baseline.py").resolve()
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def shares(shards: int, workers: int) -> list[int]:
    """Shards per worker, as even as possible: 16 over 3 is [6, 5, 5]."""
    return [shards // workers + (1 if i < shards % workers else 0) for i in range(workers)]


def read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """One line of the child's stdout, or an error naming what it printed on stderr."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise TimeoutError(f"no line from pid {proc.pid} within {timeout:g}s")
    line = proc.stdout.readline()
    if not line:
        err = proc.stderr.read() if proc.stderr is not None else ""
        raise RuntimeError(f"pid {proc.pid} exited ({proc.wait()}): {err[-2000:]}")
    return line.strip()


def _stop(proc: subprocess.Popen[str], *, term: bool = True) -> None:
    if proc.poll() is None and term:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class DrainWorkers:
    """`workers` consumer processes (tests/bench/drain_worker.py) splitting the shards."""

    def __init__(self, url: str, workers: int, shards: int, log_dir: Path,
                 batch: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        try:
            for i, share in enumerate(shares(shards, workers)):
                cmd = [sys.executable, "-m", "tests.bench.drain_worker", "--url", url,
                       "--max-shards", str(share), "--log", str(log_dir / f"worker-{i}.log")]
                if batch is not None:
                    cmd += ["--batch", str(batch)]
                cmd += extra_args
                proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE)
                self.procs.append(proc)
                # one at a time: each takes its share before the next one balances
                line = read_line(proc, READY_TIMEOUT_S)
                if line != f"ready {share}":
                    raise RuntimeError(f"worker {i}: {line}")
        except BaseException:
            self.close()
            raise

    def go(self) -> list[dict[str, Any]]:
        """Start every worker, wait until each has drained its shards; their reports."""
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        return [json.loads(read_line(proc, 3600)) for proc in self.procs]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write("stop\n")
                    proc.stdin.flush()
                except BrokenPipeError:
                    pass
        for proc in self.procs:
            _stop(proc, term=False)
        self.procs.clear()


class WorkerProcesses:
    """`python -m worker` processes (the real `phase-worker`), `--max-shards` each."""

    def __init__(self, url: str, workers: int, shards: int, log_dir: Path) -> None:
        env = _env() | {"REDIS_URL": url, "PHASE_LOG_FORMAT": "json"}
        for name in ("PHASE_REDIS_USER", "PHASE_REDIS_PASSWORD", "PHASE_UNSAFE_REDIS"):
            env.pop(name, None)
        self.procs: list[subprocess.Popen[str]] = []
        self.logs: list[IO[str]] = []
        for i, share in enumerate(shares(shards, workers)):
            log = open(log_dir / f"phase-worker-{i}.log", "w", encoding="utf-8")  # noqa: SIM115
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "worker", "--max-shards", str(share)], cwd=ROOT, env=env,
                text=True, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))

    def wait_for_leases(self, client: redis.Redis, prefix: str, shards: int) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        keys = [f"{prefix}:{{s{k}}}:lease" for k in range(shards)]
        while not all(client.mget(keys)):
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"phase-worker exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not take every shard's lease")
            time.sleep(0.05)

    def close(self) -> None:
        for proc in self.procs:
            _stop(proc)
        for log in self.logs:
            log.close()
        self.procs.clear()
        self.logs.clear()


class Subscriber:
    """tests/bench/event_subscriber.py as the reader user."""

    def __init__(self, url: str, out: Path, expect: int) -> None:
        self.out = out
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.event_subscriber", "--url", url, "--out",
             str(out), "--expect", str(expect)], cwd=ROOT, env=_env(), text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = read_line(self.proc, READY_TIMEOUT_S)
            if line != "ready":
                raise RuntimeError(f"subscriber: {line}")
        except BaseException:
            self.close()
            raise

    def results(self, timeout: float) -> list[tuple[str, str, int]]:
        """Wait for it to see what it expects (or give up); [(caused_by, type, seen_ns)]."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout)
        self.close()
        rows = [json.loads(line) for line in self.out.read_text().splitlines()]
        return [(str(a), str(b), int(c)) for a, b, c in rows]

    def close(self) -> None:
        _stop(self.proc)


class Publishers:
    """tests/bench/event_publisher.py as the bot user: ready once connected; `run()` publishes."""

    def __init__(self, url: str, accounts: list[str], day: str, rate: int, threads: int,
                 workdir: Path) -> None:
        self.out = workdir / "published.jsonl"
        ids = workdir / "accounts.txt"
        ids.write_text("\n".join(accounts) + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.event_publisher", "--url", url, "--accounts-file",
             str(ids), "--day", day, "--rate", str(rate), "--threads", str(threads), "--out",
             str(self.out)], cwd=ROOT, env=_env(), text=True, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            line = read_line(self.proc, READY_TIMEOUT_S)
            if line != "ready":
                raise RuntimeError(f"publisher: {line}")
        except BaseException:
            self.close()
            raise

    def run(self, timeout: float) -> dict[str, int]:
        """Publish everything; {inbox entry id: monotonic ns noted before its XADD}."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = read_line(self.proc, timeout)
        if line != "done":
            raise RuntimeError(f"publisher: {line}")
        rows = [json.loads(row) for row in self.out.read_text().splitlines()]
        return {str(entry_id): int(t) for entry_id, t in rows}

    def close(self) -> None:
        _stop(self.proc)


def run_baseline(url: str, messages: int, accounts: int) -> dict[str, Any]:
    """../shared/bench/baseline.py as is, on the same server; its one JSON line."""
    if not BASELINE.exists():
        raise FileNotFoundError(f"the reference baseline {BASELINE} is missing")
    done = subprocess.run(
        [sys.executable, str(BASELINE), "--url", url, "--messages", str(messages),
         "--accounts", str(accounts)], capture_output=True, text=True, check=True, timeout=1800)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
