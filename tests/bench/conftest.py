"""Fixtures of the benchmarks: full sizes under `make bench`, quick smoke sizes under `make test`.

`make test` runs pytest with `--benchmark-disable`: each benchmark body then runs once, and the
worker benchmarks shrink to a few seconds each (see `WorkerSizes.smoke`). `make bench` runs the
full sizes that BENCHMARKS.md reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from worker.redis_server import RedisServer


@dataclass(frozen=True)
class WorkerSizes:
    """Sizes of the worker benchmarks (issue: worker)."""

    smoke: bool
    rounds: int  # rounds of the throughput and request_entry benchmarks (medians of these)
    messages: int  # throughput: trade_closed messages in the backlog
    accounts: int  # throughput: accounts, the history accounts included
    history_accounts: int  # accounts with a long history
    history_trades: int  # prior trades of each history account, applied through decide
    entry_calls: int  # request_entry: sequential calls per round
    event_rate: int  # publish -> event: messages per second
    event_seconds: float  # publish -> event: seconds of steady publishing

    @classmethod
    def full(cls, rounds: int) -> WorkerSizes:
        return cls(False, rounds, 100_000, 1_000, 10, 100_000, 20_000, 1_000, 60.0)

    @classmethod
    def smoke_sizes(cls) -> WorkerSizes:
        return cls(True, 1, 2_000, 100, 2, 2_000, 500, 1_000, 3.0)


@pytest.fixture(scope="session")
def worker_sizes(request: pytest.FixtureRequest) -> WorkerSizes:
    if request.config.getoption("benchmark_disable"):
        return WorkerSizes.smoke_sizes()
    return WorkerSizes.full(max(1, int(request.config.getoption("benchmark_min_rounds"))))


@pytest.fixture
def bench_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """An admin client on the emptied session server, AOF rewrites off while it is in use.

    An automatic AOF rewrite would shrink the file in the middle of a measurement of its growth.
    """
    if not redis_server.running:
        redis_server.start()
    client = redis_server.admin_client()
    saved = client.config_get("auto-aof-rewrite-percentage")["auto-aof-rewrite-percentage"]
    try:
        client.flushall()
        client.config_set("auto-aof-rewrite-percentage", 0)
        yield client
    finally:
        client.config_set("auto-aof-rewrite-percentage", saved)
        client.flushall()
        client.close()
