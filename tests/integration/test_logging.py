"""Logs (R-12.4): one line per handled message with account, entry id, outcome and latency;
JSON lines in production.

In process, structlog's `capture_logs()` collects the consumer's lines around `run_once()` (the
tests never call `configure_logging`, which would cache the loggers). A `python -m worker`
subprocess proves the production rendering: every line of its output is one JSON object.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from worker.redis_acl import Role
from worker.redis_server import RedisServer

from .helpers import (
    Harness,
    accounts_on_shard,
    drain,
    poll_until,
    session_end,
    trade,
    worker_env,
)

pytestmark = pytest.mark.redis
MS = timedelta(milliseconds=1)


def message_lines(logs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [line for line in logs if line["event"] == "message"]


def publish_mixed(h: Harness) -> dict[str, tuple[str, str]]:
    """Two accounts on one shard: applied, duplicate and dead-lettered messages, and one for an
    unregistered id. Returns entry id -> (account id, expected outcome)."""
    keys = h.bootstrap()
    first, second, stranger = accounts_on_shard(keys, 6, 3, stem="log")
    h.add_account(first)
    h.add_account(second)
    t0 = h.now()
    day = h.calendar().trading_day(t0)
    bot = h.bot()
    sent = {}
    one = trade(first, "t-1", "25.00", t0 + MS)
    sent[bot.publish_trade_closed(one)] = (first, "applied")
    sent[bot.publish_trade_closed(trade(second, "t-1", "-5.00", t0 + 2 * MS))] = (second,
                                                                                 "applied")
    sent[bot.publish_trade_closed(one)] = (first, "duplicate")
    sent[bot.publish_trade_closed(trade(first, "t-1", "30.00", t0 + MS))] = (first, "dead_letter")
    sent[bot.publish_trade_closed(trade(stranger, "t-9", "1.00", t0 + 3 * MS))] = (stranger,
                                                                                  "dead_letter")
    sent[bot.publish_session_ended(session_end(first, day, t0 + 4 * MS))] = (first, "applied")
    return sent


def test_r12_4_every_handled_message_gets_exactly_one_line_with_its_facts(h: Harness) -> None:
    sent = publish_mixed(h)

    with capture_logs() as logs:
        drain(h.consumer())

    lines = message_lines(logs)
    assert sorted(line["entry_id"] for line in lines) == sorted(sent)  # each once
    for line in lines:
        account, outcome = sent[line["entry_id"]]
        assert (line["account_id"], line["outcome"], line["log_level"]) == (account, outcome,
                                                                            "info")
        assert isinstance(line["latency_ms"], int | float)
        assert line["latency_ms"] >= 0
    reasons = sorted(str(line.get("reason")) for line in lines
                     if line["outcome"] == "dead_letter")
    assert reasons == ["conflicting_duplicate", "unknown_account"]


def test_r12_4_a_batch_retried_one_message_at_a_time_still_logs_each_message_once(
        h: Harness) -> None:
    sent = publish_mixed(h)
    failing = {"on": True}

    def hook(point: str) -> None:
        if point == "before_exec" and failing["on"]:
            failing["on"] = False  # the batch fails once; the one-at-a-time retries succeed
            raise RuntimeError("injected before EXEC")

    with capture_logs() as logs:
        drain(h.consumer(fault_hook=hook))

    assert [line["event"] for line in logs if line["log_level"] == "error"] == ["batch_failed"]
    assert sorted(line["entry_id"] for line in message_lines(logs)) == sorted(sent)


def test_r12_4_a_message_dead_lettered_after_five_failures_gets_its_line_too(
        h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    entry_id = h.bot().publish_trade_closed(trade("acct-1", "t-1", "25.00", h.now() + MS))

    def hook(point: str) -> None:
        if point == "before_exec":
            raise RuntimeError("injected before EXEC")  # a bug that strikes every attempt

    consumer = h.consumer(fault_hook=hook)
    with capture_logs() as logs:
        for _ in range(5):
            consumer.run_once()

    assert len(h.deadletters(h.keys.shard("acct-1"))) == 1  # handled: dead-lettered
    [line] = message_lines(logs)
    assert (line["entry_id"], line["account_id"], line["outcome"]) == (entry_id, "acct-1",
                                                                       "dead_letter")


def test_r12_4_the_worker_writes_json_lines_by_default(
        h: Harness, redis_server: RedisServer, role_url: Callable[[Role], str],
        tmp_path: Path) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    entry_id = h.bot().publish_trade_closed(trade("acct-1", "t-1", "25.00", h.now() + MS))
    env = worker_env(role_url("worker"))
    del env["PHASE_LOG_FORMAT"]  # production: nothing set, JSON
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        # a fixed argv: this interpreter running our own package
        proc = subprocess.Popen([sys.executable, "-m", "worker"], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)

        def applied() -> bool:
            assert proc.poll() is None, log_path.read_text()  # it must not have stopped
            return h.state("acct-1").current.trades == 1

        try:
            poll_until(applied, 20, "the worker to apply the trade")
            proc.terminate()
            assert proc.wait(timeout=15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=15)

    lines = [json.loads(text) for text in log_path.read_text().splitlines()]
    assert all(isinstance(line, dict) and line["timestamp"].endswith("Z") for line in lines)
    [line] = message_lines(lines)
    assert (line["entry_id"], line["account_id"], line["outcome"], line["level"]) == (
        entry_id, "acct-1", "applied", "info")
    assert line["latency_ms"] >= 0
