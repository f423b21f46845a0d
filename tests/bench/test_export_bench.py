"""Export benchmarks (R-8.3): speed against a bare XRANGE + csv.writer loop, and peak memory.

One account's history holds 100,000 entries (2,000 under --benchmark-disable, as in `make test`)
in a realistic mix: a session record every trading day, amendments of about one day in a
hundred, size changes, transitions and override attempts. `test_export_sessions_csv` exports its
sessions to CSV (two passes, parsing, spooling); `test_bare_loop_csv` reads the same entries with
XRANGE ... COUNT 1000 and writes them unparsed with csv.writer. The memory benchmark compares the
tracemalloc peak of exporting 10,000 and 100,000 entries (1,000 and 2,000 when disabled), and
`test_export_to_bare_loop_ratio` alternates the two loops in one test (min of 5 each) so that
machine load cannot favour either.
Figures and acceptance are in BENCHMARKS.md ("Export").
"""

from __future__ import annotations

import csv
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from worker.export import PAGE, export
from worker.redis_server import RedisServer
from worker.store.keys import Keys
from worker.store.uow import dumps

KEYS = Keys("phase", 16)
BIG = "acct-bench-big"
SMALL = "acct-bench-small"
FIRST_DAY = date(1900, 1, 1)
MEMORY_RATIO_LIMIT = 1.3  # peak at 10x the entries must stay within this factor


@dataclass(frozen=True)
class Workload:
    client: redis.Redis
    big: int
    small: int


def _disabled(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_disable", default=False))


def _session(day: date, amended: bool = False) -> dict[str, Any]:
    return {
        "trading_day": day.isoformat(), "phase": "scaling", "position_size": "1250.00",
        "phases": ["scaling"], "counted_trades": 20, "wins": 11, "losses": 8, "breakevens": 1,
        "emergency_exits": 0, "gross_win_pnl": "961425548.08470054",
        "gross_loss_pnl": "-4120.50", "net_pnl": "961421427.57970054",
        "start_equity": "250000.00", "end_equity": "250412.75", "breaker_trips": 0,
        "denied_entries": {"daily_limit": 2}, "closed_implicitly": False, "amended": amended,
        "currency": "USD", "occurred_at": f"{day.isoformat()}T21:00:00+00:00",
        "caused_by": "1700000000000-0",
    }


def history_entries(n: int) -> Iterator[tuple[str, str]]:
    """`n` (type, data) history entries of a long-lived account, oldest first."""
    made = 0
    i = 0
    while True:
        day = FIRST_DAY + timedelta(days=i)
        batch = [("session_closed", dumps(_session(day)))]
        if i % 10 == 9:
            batch.append(("size_changed", dumps({"at": f"{day}T21:00:00+00:00",
                                                 "trading_day": str(day), "from": "1000.00",
                                                 "to": "1250.00", "reason": "step"})))
        if i % 25 == 24:
            batch.append(("override_attempt", dumps({
                "at": f"{day}T15:00:00+00:00", "request_id": f"r-{i}", "operator_id": "alice",
                "action": "acknowledge", "outcome": "applied", "reason": "",
                "request_reason": "=not a formula"})))
        if i % 50 == 49:
            batch.append(("transition", dumps({
                "transition_id": f"t-{i}", "trading_day": str(day), "from_phase": "trial",
                "to_phase": "scaling", "kind": "advance", "trigger": "auto", "reasons": [],
                "metrics": {"win_rate": "0.5500"}, "policy_version": "v1"})))
        if i % 100 == 99:  # a late trade amends the session of two days before
            batch.append(("session_amended", dumps(_session(day - timedelta(days=2), True))))
        for entry in batch:
            if made == n:
                return
            yield entry
            made += 1
        i += 1


def _fill(client: redis.Redis, account: str, n: int) -> None:
    key = KEYS.history(KEYS.shard(account), account)
    pipe = client.pipeline(transaction=False)
    for j, (type_, data) in enumerate(history_entries(n), 1):
        pipe.xadd(key, {"type": type_, "data": data})
        if j % 2000 == 0:
            pipe.execute()
    pipe.execute()


@pytest.fixture(scope="module")
def workload(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Workload]:
    big = 2_000 if _disabled(request.config) else 100_000
    client = redis_server.admin_client()
    try:
        client.flushall()
        small = max(big // 10, PAGE)  # at least one full page, so the two peaks compare
        _fill(client, BIG, big)
        _fill(client, SMALL, small)
        yield Workload(client, big, small)
    finally:
        client.close()


def _export(client: redis.Redis, account: str, path: Path) -> int:
    with path.open("w", encoding="utf-8", newline="") as out:
        return export(client, KEYS, account, "sessions", "csv", out,
                      spool_dir=str(path.parent)).records


def _bare(client: redis.Redis, account: str, path: Path) -> int:
    """The floor: read every entry in pages and write it as is, nothing parsed or checked."""
    key = KEYS.history(KEYS.shard(account), account)
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        start: bytes | str = "-"
        while True:
            page: Any = client.xrange(key, start, "+", count=PAGE)
            for entry_id, fields in page:
                writer.writerow((entry_id.decode(), fields[b"type"].decode(),
                                 fields[b"data"].decode()))
            rows += len(page)
            if len(page) < PAGE:
                return rows
            start = b"(" + page[-1][0]


@pytest.mark.benchmark(group="export")
def test_export_sessions_csv(benchmark: Any, workload: Workload, tmp_path: Path) -> None:
    records = benchmark(_export, workload.client, BIG, tmp_path / "sessions.csv")
    assert records > 0
    benchmark.extra_info["entries"] = workload.big
    benchmark.extra_info["sessions"] = records


@pytest.mark.benchmark(group="export")
def test_bare_loop_csv(benchmark: Any, workload: Workload, tmp_path: Path) -> None:
    rows = benchmark(_bare, workload.client, BIG, tmp_path / "bare.csv")
    assert rows == workload.big
    benchmark.extra_info["entries"] = workload.big


def _peak(client: redis.Redis, account: str, path: Path) -> int:
    tracemalloc.start()
    try:
        _export(client, account, path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.benchmark(group="export-memory")
def test_export_peak_memory_does_not_grow_with_the_history(benchmark: Any, workload: Workload,
                                                           tmp_path: Path) -> None:
    _export(workload.client, SMALL, tmp_path / "warm.csv")  # imports and connection, untraced

    def measure() -> tuple[int, int]:
        return (_peak(workload.client, SMALL, tmp_path / "small.csv"),
                _peak(workload.client, BIG, tmp_path / "big.csv"))

    small, big = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update({"entries_small": workload.small, "entries_big": workload.big,
                                 "peak_small_bytes": small, "peak_big_bytes": big,
                                 "ratio": round(big / small, 3)})
    print(f"\nexport peak memory: {workload.small} entries {small} B, "
          f"{workload.big} entries {big} B, ratio {big / small:.3f}")
    assert big <= MEMORY_RATIO_LIMIT * small, (small, big)


@pytest.mark.benchmark(group="export-ratio")
def test_export_to_bare_loop_ratio(benchmark: Any, workload: Workload, tmp_path: Path,
                                   request: pytest.FixtureRequest) -> None:
    """Export and bare loop alternated in one test, so machine load hits both alike."""
    rounds = 1 if _disabled(request.config) else 5

    def alternate() -> tuple[float, float]:
        bare, exported = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            _bare(workload.client, BIG, tmp_path / "bare.csv")
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            _export(workload.client, BIG, tmp_path / "sessions.csv")
            exported.append(time.perf_counter() - started)
        return min(bare), min(exported)

    bare, exported = benchmark.pedantic(alternate, rounds=1, iterations=1)
    benchmark.extra_info.update({"entries": workload.big, "bare_min_s": round(bare, 3),
                                 "export_min_s": round(exported, 3),
                                 "ratio": round(exported / bare, 3)})
    print(f"\nexport vs bare loop, min of {rounds} alternated: bare {bare:.3f} s, "
          f"export {exported:.3f} s, ratio {exported / bare:.2f}")
