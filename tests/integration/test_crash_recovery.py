"""kill -9 between read and EXEC: the next owner applies the batch exactly once (R-10.1, R-10.2).

A real `python -m worker` reads a batch and parks just before EXEC (after touching a marker
file); the test kills it with SIGKILL, then a second worker takes the shards over once the dead
worker's leases expire and re-reads the pending entries first.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from .helpers import (
    Harness,
    WorkerProcesses,
    accounts_on_shard,
    alive,
    drain,
    poll_until,
    session_end,
    trade,
)

pytestmark = pytest.mark.redis
LEASE_MS = 1500  # the killed worker's lease: the successor waits for it to expire
SUCCESSOR_LEASE_MS = 600  # short, so the successor re-balances every 0.2 s
REPETITIONS = 20


@pytest.mark.parametrize("repetition", range(REPETITIONS))
def test_a_batch_of_a_worker_killed_before_exec_is_applied_once_by_the_next_owner(
        repetition: int, h: Harness, procs: WorkerProcesses, tmp_path: Path) -> None:
    keys = h.bootstrap()
    accounts = accounts_on_shard(keys, 4, 2) + accounts_on_shard(keys, 11, 1)
    for account in accounts:
        h.add_account(account)
    t0 = h.now()
    day = h.calendar().trading_day(t0)
    trades = 2 + repetition % 4
    bot = h.bot()
    expected: dict[str, list[str]] = {}
    step = 0
    for account in accounts:
        for i in range(trades):
            step += 1
            tid = f"{account}-t{i}"
            bot.publish_trade_closed(trade(account, tid, f"{(-1) ** i * (i + 3)}.25",
                                           t0 + timedelta(milliseconds=step)))
            expected.setdefault(account, []).append(tid)
        step += 1
        bot.publish_session_ended(session_end(account, day, t0 + timedelta(milliseconds=step)))
    marker = tmp_path / "parked"

    worker = procs.start("--lease-ms", str(LEASE_MS), "--park-before-exec", str(marker))
    poll_until(lambda: alive(worker) and marker.exists(), 20, "the worker to park before EXEC")

    assert h.pending() > 0
    for account in accounts:
        assert h.state(account).version == 1
        assert [e.type for e in h.history(account)] == ["registered"]
    assert all(h.admin.xlen(keys.events(k)) == 0 for k in range(keys.shards))

    worker.proc.kill()
    worker.proc.wait(timeout=10)
    logged = [json.loads(line)["event"] for line in worker.log().splitlines()]
    assert "worker_started" in logged  # JSON lines, as PHASE_LOG_FORMAT=json asks

    successor = h.consumer(lease_ms=SUCCESSOR_LEASE_MS)
    drain(successor, timeout=20)

    for account in accounts:
        state = h.state(account)
        assert [t.trade_id for t in state.recent] == expected[account]
        assert state.current.trades == trades
        assert state.version == 1 + trades + 1  # one bump per applied message, none twice
        assert [e.type for e in h.history(account)] == ["registered", "session_closed"]
    events = [e for k in range(keys.shards) for e in h.events(k)]
    assert sorted((e.account_id or "", e.type) for e in events) == sorted(
        (a, "session_closed") for a in accounts)
    assert len({e.event_id for e in events}) == len(events)
    assert h.pending() == 0
    for k in range(keys.shards):
        assert h.deadletters(k) == []
        assert h.admin.hlen(keys.failures(k)) == 0
