"""Worker benchmarks (issue: worker), against the session's real redis-server (appendfsync always).

1. Throughput: a backlog of trade_closed messages over many accounts, a few of them with a long
   history, drained by consumer processes; interleaved round by round with the reference
   baseline (../shared/bench/baseline.py, run as is) on the same server.
2. request_entry latency: sequential calls as the bot user.
3. publish -> event latency: session_ended messages at a steady rate, each closing a session;
   `phase-worker` processes apply them and a subscriber process sees the session_closed events.
4. AOF bytes per message: what publishing and what processing add to the append-only file.

Full sizes under `make bench`; under `make test` (`--benchmark-disable`) every body runs once at
smoke sizes of a few seconds (tests/bench/conftest.py). Figures go to extra_info and
BENCHMARKS.md; nothing here asserts on timing.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from contracts.client import PhaseguardClient
from tests.bench import procs, workload
from tests.bench.conftest import WorkerSizes
from worker.domain.calendar import Calendar
from worker.redis_acl import USER_FOR_ROLE
from worker.redis_server import RedisServer
from worker.store.runtime import redis_now

WORKERS = 2  # consumer processes of the latency and AOF benchmarks (BENCHMARKS.md: why)
FSYNC_STALL_MS = 5  # latency-monitor-threshold during the publish -> event run
PUBLISHERS = 4  # publishing threads (one process): each XADD waits for an fsync


def aof_size(client: redis.Redis) -> int:
    return int(client.info("persistence")["aof_current_size"])


def quantile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank quantile of an ascending list."""
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


class DrainRound:
    """One throughput round: the baseline, then a fresh deployment with its backlog and ready
    consumer processes; `run()` is the timed part."""

    def __init__(self, client: redis.Redis, server: RedisServer, sizes: WorkerSizes,
                 workers: int, log_dir: Path) -> None:
        self.client = client
        self.baseline = procs.run_baseline(server.admin_url, sizes.messages, sizes.accounts)
        client.flushall()
        self.dep = workload.deploy(client, accounts=sizes.accounts,
                                   history_accounts=sizes.history_accounts,
                                   history_trades=sizes.history_trades)
        before = aof_size(client)
        self.messages = workload.publish(client, workload.trades(client, self.dep,
                                                                 sizes.messages))
        self.publish_aof = aof_size(client) - before
        self.workers = procs.DrainWorkers(server.url_for(USER_FOR_ROLE["worker"]), workers,
                                          self.dep.keys.shards, log_dir)
        self.aof_before = aof_size(client)
        self.wall = 0.0
        self.reports: list[dict[str, Any]] = []
        self.worker_aof = 0

    def run(self) -> None:
        start = time.perf_counter()
        self.reports = self.workers.go()
        self.wall = time.perf_counter() - start
        self.worker_aof = aof_size(self.client) - self.aof_before

    def close(self) -> None:
        self.workers.close()

    @property
    def rate(self) -> float:
        return self.messages / self.wall


def run_drain_rounds(benchmark: Any, client: redis.Redis, server: RedisServer,
                     sizes: WorkerSizes, workers: int, log_dir: Path) -> list[DrainRound]:
    rounds: list[DrainRound] = []

    def setup() -> tuple[tuple[DrainRound], dict[str, Any]]:
        for old in rounds:
            old.close()
        rounds.append(DrainRound(client, server, sizes, workers, log_dir))
        return (rounds[-1],), {}

    try:
        benchmark.pedantic(DrainRound.run, setup=setup, rounds=sizes.rounds, iterations=1)
        for r in rounds:
            handled = sum(rep["handled"] for rep in r.reports)
            assert handled >= r.messages, (handled, r.messages)
            assert workload.drained(client, r.dep.keys)
            dead = sum(client.xlen(r.dep.keys.deadletter(k)) for k in range(r.dep.keys.shards))
            assert dead == 0
    finally:
        for r in rounds:
            r.close()
    return rounds


@pytest.mark.parametrize("workers", [1, 2])
def test_worker_throughput_against_the_baseline(
        benchmark: Any, bench_redis: redis.Redis, redis_server: RedisServer,
        worker_sizes: WorkerSizes, workers: int, tmp_path: Path) -> None:
    """Drain 100,000 trade_closed over 1,000 accounts (10 with 100,000 prior trades each) with
    `workers` consumer processes; each round first runs the baseline on the same server.
    Medians of 5 rounds. Smoke (`make test`): 2,000 messages, 100 accounts, 1 round."""
    rounds = run_drain_rounds(benchmark, bench_redis, redis_server, worker_sizes, workers,
                              tmp_path)
    worker_rates = [r.rate for r in rounds]
    baseline_rates = [float(r.baseline["messages_per_s"]) for r in rounds]
    worker = statistics.median(worker_rates)
    baseline = statistics.median(baseline_rates)
    benchmark.extra_info.update({
        "messages": rounds[0].messages, "accounts": worker_sizes.accounts,
        "history_accounts": worker_sizes.history_accounts,
        "history_trades": worker_sizes.history_trades, "workers": workers,
        "worker_msgs_per_s": round(worker), "baseline_msgs_per_s": round(baseline),
        # rounds are pairs run back to back: the median of their ratios, less moved by the
        # load of a shared machine than the ratio of the two medians
        "ratio": round(statistics.median(w / b for w, b in zip(worker_rates, baseline_rates,
                                                                strict=True)), 3),
        "ratio_of_medians": round(worker / baseline, 3),
        "worker_msgs_per_s_rounds": [round(x) for x in worker_rates],
        "baseline_msgs_per_s_rounds": [round(x) for x in baseline_rates],
        "worker_aof_bytes_per_msg": round(statistics.median(
            r.worker_aof / r.messages for r in rounds), 1),
    })


def test_worker_aof_bytes_per_message(
        benchmark: Any, bench_redis: redis.Redis, redis_server: RedisServer,
        worker_sizes: WorkerSizes, tmp_path: Path) -> None:
    """AOF growth per message of the throughput workload: publishing (the bot's XADD) and
    processing (the worker's transactions), with 2 consumer processes, one round (the figure
    barely moves). Smoke (`make test`): 2,000 messages."""
    sizes = dataclasses.replace(worker_sizes, rounds=1)
    rounds = run_drain_rounds(benchmark, bench_redis, redis_server, sizes, WORKERS, tmp_path)
    r = rounds[0]
    benchmark.extra_info.update({
        "messages": r.messages, "workers": WORKERS,
        "publish_aof_bytes_per_msg": round(r.publish_aof / r.messages, 1),
        "worker_aof_bytes_per_msg": round(r.worker_aof / r.messages, 1),
        "total_aof_bytes_per_msg": round((r.publish_aof + r.worker_aof) / r.messages, 1),
        "worker_msgs_per_s": round(r.rate),
    })


def test_request_entry_latency(benchmark: Any, bench_redis: redis.Redis,
                               redis_server: RedisServer, worker_sizes: WorkerSizes) -> None:
    """request_entry p50/p99/max over 20,000 sequential calls per round (paper entries of
    experience accounts, cycling over 1,000 accounts; each call writes the ledger, so each waits
    for an fsync). Smoke (`make test`): 500 calls, 100 accounts."""
    accounts = min(worker_sizes.accounts, 1_000)
    dep = workload.deploy(bench_redis, accounts=accounts, history_accounts=0, history_trades=0)
    bot = redis.Redis.from_url(redis_server.url_for(USER_FOR_ROLE["bot"]))
    per_round: list[list[float]] = []
    try:
        client = PhaseguardClient(bot, prefix=workload.PREFIX)
        first = client.request_entry(dep.accounts[0], mode="paper")
        assert first.allowed, first

        def calls() -> None:
            lat: list[float] = []
            n_acc = len(dep.accounts)
            for i in range(worker_sizes.entry_calls):
                acc = dep.accounts[i % n_acc]
                t = time.perf_counter()
                client.request_entry(acc, mode="paper")
                lat.append(time.perf_counter() - t)
            per_round.append(sorted(lat))

        benchmark.pedantic(calls, rounds=worker_sizes.rounds, iterations=1)
    finally:
        bot.close()
    p50s = [quantile(r, 0.50) * 1000 for r in per_round]
    p99s = [quantile(r, 0.99) * 1000 for r in per_round]
    pooled = sorted(x for r in per_round for x in r)
    benchmark.extra_info.update({
        "calls_per_round": worker_sizes.entry_calls, "rounds": len(per_round),
        "p50_ms": round(statistics.median(p50s), 3), "p99_ms": round(statistics.median(p99s), 3),
        "p99_ms_all_calls": round(quantile(pooled, 0.99) * 1000, 3),
        "max_ms": round(pooled[-1] * 1000, 3),
        "p50_ms_rounds": [round(x, 3) for x in p50s], "p99_ms_rounds": [round(x, 3) for x in p99s],
    })


def test_publish_to_event_latency(benchmark: Any, bench_redis: redis.Redis,
                                  redis_server: RedisServer, worker_sizes: WorkerSizes,
                                  tmp_path: Path) -> None:
    """publish -> session_closed seen by a subscriber, at a steady 1,000 session_ended/s for
    60 s (60,000 accounts, each closing today's session once), 2 `phase-worker` processes.

    The publishers (a process of their own, tests/bench/event_publisher.py: threads on a
    deadline-based schedule) note `time.monotonic_ns()` before each XADD by its inbox entry id;
    the subscriber process notes the same clock when it sees an event and the event's
    `caused_by` names that entry.
    Smoke (`make test`): 3 s, 3,000 messages."""
    sizes = worker_sizes
    count = int(sizes.event_rate * sizes.event_seconds)
    dep = workload.deploy(bench_redis, accounts=0, history_accounts=0, history_trades=0)
    ids = [f"close-{i:06d}" for i in range(count)]
    workload.register_direct(bench_redis, dep, ids)
    now = redis_now(bench_redis.time())
    day = Calendar(dep.policy.calendar).trading_day(now)
    published: dict[str, int] = {}
    workers = procs.WorkerProcesses(redis_server.url_for(USER_FOR_ROLE["worker"]), WORKERS,
                                    dep.keys.shards, tmp_path)
    try:
        workers.wait_for_leases(bench_redis, workload.PREFIX, dep.keys.shards)
        subscriber = procs.Subscriber(redis_server.url_for(USER_FOR_ROLE["reader"]),
                                      tmp_path / "seen.jsonl", count)
        # Redis's own latency monitor notes every fsync of the AOF that took >= 5 ms: the disk's
        # stalls during the run, reported beside the figures they hold up
        bench_redis.config_set("latency-monitor-threshold", FSYNC_STALL_MS)
        bench_redis.execute_command("LATENCY", "RESET")
        try:
            publishers = procs.Publishers(redis_server.url_for(USER_FOR_ROLE["bot"]), ids,
                                          day.isoformat(), sizes.event_rate, PUBLISHERS,
                                          tmp_path)
            try:
                def publish() -> None:
                    published.update(publishers.run(timeout=60 + sizes.event_seconds))

                benchmark.pedantic(publish, rounds=1, iterations=1)
            finally:
                publishers.close()
            seen = subscriber.results(timeout=60 + sizes.event_seconds)
            stalls = [int(ms) for _, ms in bench_redis.execute_command(
                "LATENCY", "HISTORY", "aof-fsync-always")]
        finally:
            bench_redis.config_set("latency-monitor-threshold", 0)
            subscriber.close()
    finally:
        workers.close()
    latencies = sorted((ns - published[cause]) / 1e6 for cause, type_, ns in seen
                       if type_ == "session_closed" and cause in published)
    assert len(latencies) == count, (len(latencies), count)
    benchmark.extra_info.update({
        "events": len(latencies), "rate_per_s": sizes.event_rate,
        "seconds": sizes.event_seconds, "workers": WORKERS, "publishers": PUBLISHERS,
        "p50_ms": round(quantile(latencies, 0.50), 3),
        "p99_ms": round(quantile(latencies, 0.99), 3),
        "max_ms": round(latencies[-1], 3),
        # seconds of the run in which an fsync of the AOF took >= 5 ms, and the worst of each
        "fsync_stall_seconds": len(stalls), "fsync_stalls_ms": sorted(stalls, reverse=True),
    })
