"""Redis restarts lose no acknowledged message (R-12.2: appendonly yes, appendfsync always).

A dedicated redis-server in the test's tmp_path (the session's server is left alone) is
restarted with SIGTERM and crashed with SIGKILL; every effect the worker committed and every
inbox entry Redis acknowledged is still there afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from worker.redis_acl import USER_FOR_ROLE, Role
from worker.redis_server import RedisServer

from .helpers import PREFIX, Harness, drain, session_end, stream_ids, trade

pytestmark = pytest.mark.redis
ACCOUNTS = ["acct-a", "acct-b", "acct-c", "acct-d"]
LEASE_MS = 600  # the crashed worker's leases are in the AOF too: keep the wait short


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path / "redis", prefix=PREFIX)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def harness(server: RedisServer) -> Harness:
    def role_url(role: Role) -> str:
        return server.url_for(USER_FOR_ROLE[role])

    return Harness(server.admin_client(decode_responses=True), role_url)


def close(h: Harness) -> None:
    h.close()
    h.admin.close()


def publish_day(h: Harness, first: int, count: int) -> list[str]:
    """`count` trades per account from trade number `first`, then each account's session end."""
    t0 = h.now()
    day = h.calendar().trading_day(t0)
    bot = h.bot()
    ids = []
    step = 0
    for account in ACCOUNTS:
        for i in range(first, first + count):
            step += 1
            pnl = f"{(-1) ** i * (i % 7 + 1)}.{i % 100:02d}"
            ids.append(bot.publish_trade_closed(
                trade(account, f"{account}-{i}", pnl, t0 + timedelta(milliseconds=step))))
        step += 1
        ids.append(bot.publish_session_ended(
            session_end(account, day, t0 + timedelta(milliseconds=step),
                        equity=f"{10_000 + first}")))
    return ids


def everything(h: Harness) -> dict[str, Any]:
    """Every committed effect, byte for byte, stream ids included."""
    keys = h.keys
    a = h.admin
    return {
        "states": {acc: a.hgetall(keys.state(keys.shard(acc), acc)) for acc in ACCOUNTS},
        "history": {acc: a.xrange(keys.history(keys.shard(acc), acc)) for acc in ACCOUNTS},
        "events": {k: a.xrange(keys.events(k)) for k in range(keys.shards)},
        "deadletters": {k: a.xrange(keys.deadletter(k)) for k in range(keys.shards)},
        "registry": {k: a.hgetall(keys.registry(k)) for k in range(keys.shards)},
        "policy": a.get(keys.policy),
        "meta": a.hgetall(keys.meta),
    }


def test_a_restart_from_the_aof_keeps_every_committed_effect(server: RedisServer) -> None:
    h = harness(server)
    try:
        h.bootstrap()
        for account in ACCOUNTS:
            h.add_account(account)
        publish_day(h, 0, 10)
        drain(h.consumer())
        before = everything(h)
        assert all(len(history) == 2 for history in before["history"].values())
    finally:
        close(h)

    server.restart()

    h = harness(server)
    try:
        h.attach()
        assert everything(h) == before
        assert h.pending() == 0
        assert h.bot().request_entry("acct-a", "paper").allowed  # script cache was emptied
    finally:
        close(h)


def test_a_crash_keeps_every_acknowledged_message_and_committed_effect(
        server: RedisServer) -> None:
    h = harness(server)
    try:
        h.bootstrap()
        for account in ACCOUNTS:
            h.add_account(account)
        publish_day(h, 0, 10)
        drain(h.consumer(lease_ms=LEASE_MS))  # its leases survive the crash in the AOF
        applied = everything(h)
        waiting = publish_day(h, 10, 5)  # acknowledged by XADD, not yet consumed
    finally:
        close(h)

    server.kill9()
    server.start()

    h = harness(server)
    try:
        h.attach()
        assert everything(h) == applied
        inbox = [i for k in range(h.keys.shards) for i in stream_ids(h.admin, h.keys.inbox(k))]
        assert set(waiting) <= set(inbox)
        drain(h.consumer(lease_ms=LEASE_MS))
        for account in ACCOUNTS:
            state = h.state(account)
            assert state.current.trades == 15
            assert [t.trade_id for t in state.recent] == [f"{account}-{i}" for i in range(15)]
        assert h.pending() == 0
    finally:
        close(h)


def test_the_servers_in_these_tests_fsync_every_write(server: RedisServer) -> None:
    with server.admin_client(decode_responses=True) as admin:
        assert admin.config_get("appendonly") == {"appendonly": "yes"}
        assert admin.config_get("appendfsync") == {"appendfsync": "always"}

