"""Fixtures shared by the integration tests (the redis-server itself is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from worker.redis_acl import Role
from worker.redis_server import RedisServer

from .helpers import Harness, WorkerProcesses


@pytest.fixture
def h(redis_admin: redis.Redis, role_url: Callable[[Role], str]) -> Iterator[Harness]:
    """A deployment-building harness on the session's server, closed after the test."""
    harness = Harness(redis_admin, role_url)
    try:
        yield harness
    finally:
        harness.close()


@pytest.fixture
def procs(redis_server: RedisServer, role_url: Callable[[Role], str],
          tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Worker subprocesses as phaseguard-worker; every one is killed and reaped afterwards."""
    workers = WorkerProcesses(role_url("worker"), tmp_path)
    try:
        yield workers
    finally:
        workers.close()
