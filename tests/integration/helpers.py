"""Builders shared by the integration tests: a deployment, its clients, messages and polling.

A `Harness` bootstraps a deployment on the session's redis-server (P:meta and the policy),
registers accounts through `worker.jobs.accounts_add`, hands out clients logged in as the R-7.14
users (closed by `close()`), builds in-process consumers and reads back what the worker wrote.
`WorkerProcesses` starts `python -m worker` subprocesses and kills whatever is left at the end.
Nothing here sleeps except the short pause inside a deadline-bounded poll.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, TypeVar
from zoneinfo import ZoneInfo

import redis

from contracts.client import PhaseguardClient
from contracts.events import Event, decode_event
from contracts.messages import SessionEnded, TradeClosed
from worker import jobs
from worker.consumer import ShardConsumer
from worker.domain.calendar import Calendar
from worker.domain.model import AccountState
from worker.domain.policy import DEFAULT_POLICY, Policy
from worker.redis_acl import Role
from worker.store.codec import decode_state
from worker.store.keys import CONSUMER_GROUP, Keys
from worker.store.runtime import (
    PolicyHolder,
    fetch_policy,
    init_meta,
    install_policy,
    load_keys,
    redis_now,
)

PREFIX = "phase"  # the session server's ACL rules are written for this prefix
NY = ZoneInfo("America/New_York")
POLL_PAUSE_S = 0.01  # the only pause in these tests, always inside a deadline-bounded loop

T = TypeVar("T")
RoleUrl = Callable[[Role], str]


# -- polling -----------------------------------------------------------------------------------


def poll_until(pred: Callable[[], T], timeout: float, what: str = "condition") -> T:
    """Call `pred` until it returns something truthy, for at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_PAUSE_S)


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def inbox_drained(client: redis.Redis, keys: Keys) -> bool:
    """Every inbox entry was delivered to the consumer group and acknowledged."""
    pipe = client.pipeline(transaction=False)
    for k in range(keys.shards):
        pipe.exists(keys.inbox(k))
    exists = pipe.execute()
    inboxes = [keys.inbox(k) for k in range(keys.shards) if exists[k]]
    if not inboxes:
        return True
    pipe = client.pipeline(transaction=False)
    for inbox in inboxes:
        pipe.xinfo_stream(inbox)
        pipe.xinfo_groups(inbox)
    res = pipe.execute()
    for i in range(len(inboxes)):
        stream, groups = res[2 * i], res[2 * i + 1]
        group = next((g for g in groups if _s(g["name"]) == CONSUMER_GROUP), None)
        if group is None or int(group["pending"]) > 0:
            return False
        if _s(group["last-delivered-id"]) != _s(stream["last-generated-id"]):
            return False
    return True


def drain(consumer: ShardConsumer, timeout: float = 15.0) -> int:
    """run_once() until every inbox entry is delivered and acknowledged; entries handled."""
    deadline = time.monotonic() + timeout
    handled = 0
    while True:
        n = consumer.run_once()
        handled += n
        if n == 0 and inbox_drained(consumer.client, consumer.keys):
            return handled
        if time.monotonic() >= deadline:
            raise AssertionError(f"inbox not drained within {timeout:g}s "
                                 f"(owned shards {sorted(consumer.owned)})")
        if n == 0:
            time.sleep(POLL_PAUSE_S)


# -- messages ----------------------------------------------------------------------------------


def et(day: date, hour: int, minute: int = 0) -> datetime:
    """`day` at `hour:minute` New York wall time."""
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)


def trade(account: str, trade_id: str, pnl: Decimal | str | int, closed_at: datetime, *,
          mode: str = "paper", opened_at: datetime | None = None, kind: str = "regular",
          entry_decision_id: str | None = None, position_size: Decimal | str | None = None,
          equity_after: Decimal | str | None = None,
          operator_id: str | None = None) -> TradeClosed:
    body: dict[str, Any] = {
        "schema_version": 1, "account_id": account, "trade_id": trade_id, "mode": mode,
        "closed_at": closed_at, "pnl": Decimal(pnl), "kind": kind, "opened_at": opened_at,
        "entry_decision_id": entry_decision_id,
        "position_size": None if position_size is None else Decimal(position_size),
        "equity_after": None if equity_after is None else Decimal(equity_after),
        "operator_id": operator_id,
    }
    return TradeClosed.model_validate(body)


def session_end(account: str, day: date, ended_at: datetime,
                equity: Decimal | str | None = None) -> SessionEnded:
    return SessionEnded.model_validate({
        "schema_version": 1, "account_id": account, "trading_day": day, "ended_at": ended_at,
        "equity": None if equity is None else Decimal(equity)})


# -- reading back --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """A history or dead-letter stream entry with its JSON body decoded."""

    id: str
    type: str
    body: dict[str, Any]


def stream_ids(client: redis.Redis, key: str) -> list[str]:
    rows: Any = client.xrange(key)
    return [_s(entry_id) for entry_id, _ in rows]


def read_history(client: redis.Redis, keys: Keys, account: str) -> list[Entry]:
    k = keys.shard(account)
    out = []
    rows: Any = client.xrange(keys.history(k, account))
    for entry_id, fields in rows:
        f = {_s(a): _s(b) for a, b in fields.items()}
        out.append(Entry(_s(entry_id), f["type"], json.loads(f["data"])))
    return out


def read_events(client: redis.Redis, keys: Keys, k: int) -> list[Event]:
    rows: Any = client.xrange(keys.events(k))
    return [decode_event(fields) for _, fields in rows]


def read_deadletters(client: redis.Redis, keys: Keys, k: int) -> list[dict[str, str]]:
    rows: Any = client.xrange(keys.deadletter(k))
    return [{_s(a): _s(b) for a, b in fields.items()} for _, fields in rows]


def read_state(client: redis.Redis, keys: Keys, account: str) -> AccountState:
    raw = client.hgetall(keys.state(keys.shard(account), account))
    assert raw, f"no state for {account}"
    return decode_state({_s(a): _s(b) for a, b in raw.items()})


def public_state(client: redis.Redis, keys: Keys, account: str) -> dict[str, str]:
    raw = client.hgetall(keys.state(keys.shard(account), account))
    return {_s(a): _s(b) for a, b in raw.items() if _s(a) != "core"}


def pending_count(client: redis.Redis, keys: Keys) -> int:
    total = 0
    for k in range(keys.shards):
        if client.exists(keys.inbox(k)):
            groups = client.xinfo_groups(keys.inbox(k))
            total += sum(int(g["pending"]) for g in groups)
    return total


def accounts_on_shard(keys: Keys, shard: int, count: int, stem: str = "acct") -> list[str]:
    """`count` account ids that hash to `shard` (R-9.1), deterministic."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        candidate = f"{stem}-{i}"
        if keys.shard(candidate) == shard:
            out.append(candidate)
        i += 1
    return out


# -- the deployment ------------------------------------------------------------------------------


class Harness:
    """One test's view of a deployment on the session server; `close()` closes every client."""

    def __init__(self, admin: redis.Redis, role_url: RoleUrl) -> None:
        self.admin = admin  # decode_responses=True, owned by the redis_admin fixture
        self.role_url = role_url
        self._clients: list[redis.Redis] = []
        self._keys: Keys | None = None
        self.policy: Policy = DEFAULT_POLICY

    def client(self, role: Role, **kwargs: Any) -> redis.Redis:
        c = redis.Redis.from_url(self.role_url(role), **kwargs)
        self._clients.append(c)
        return c

    def close(self) -> None:
        for c in self._clients:
            c.close()
        self._clients.clear()

    @property
    def keys(self) -> Keys:
        assert self._keys is not None, "bootstrap() first"
        return self._keys

    def bootstrap(self, policy: Policy | None = None, shards: int = 16) -> Keys:
        """What phase-worker does on a fresh deployment: P:meta, then the policy (once)."""
        self.policy = policy or DEFAULT_POLICY
        worker = self.client("worker")
        self._keys = init_meta(worker, PREFIX, shards)
        assert install_policy(worker, self._keys, self.policy)
        return self._keys

    def attach(self) -> Keys:
        """Use the deployment already in Redis (after a restart)."""
        worker = self.client("worker")
        self._keys = load_keys(worker, PREFIX)
        self.policy = fetch_policy(worker, self._keys)
        return self._keys

    def add_account(self, account: str, *, clock: str = "redis", starts_at: datetime | None = None,
                    currency: str | None = None) -> int:
        request: dict[str, Any] = {
            "account_id": account, "operator_id": "alice", "clock": clock, "currency": currency,
            "starts_at": None if starts_at is None else starts_at.isoformat()}
        out = jobs.accounts_add(request, client=self.client("worker"), prefix=PREFIX)
        assert out["outcome"] == "applied", out
        return int(out["shard"])

    def bot(self) -> PhaseguardClient:
        return PhaseguardClient(self.client("bot"), PREFIX)

    def consumer(self, **kwargs: Any) -> ShardConsumer:
        c = self.client("worker")
        return ShardConsumer(c, self.keys, PolicyHolder(c, self.keys), **kwargs)

    def close_a_day(self, accounts: list[str]) -> None:
        """Register each account, publish one winning trade and today's session end for it
        (a millisecond apart, in account order), and drain: one session_closed each."""
        t0 = self.now()
        day = self.calendar().trading_day(t0)
        bot = self.bot()
        ms = timedelta(milliseconds=1)
        for i, account in enumerate(accounts):
            self.add_account(account)
            bot.publish_trade_closed(trade(account, "t-1", "10", t0 + (i + 1) * ms))
            bot.publish_session_ended(session_end(account, day, t0 + (i + 5) * ms))
        drain(self.consumer())

    def now(self) -> datetime:
        return redis_now(self.admin.time())

    def calendar(self) -> Calendar:
        return Calendar(self.policy.calendar)

    # reading back, as the admin
    def state(self, account: str) -> AccountState:
        return read_state(self.admin, self.keys, account)

    def public(self, account: str) -> dict[str, str]:
        return public_state(self.admin, self.keys, account)

    def history(self, account: str) -> list[Entry]:
        return read_history(self.admin, self.keys, account)

    def events(self, k: int) -> list[Event]:
        return read_events(self.admin, self.keys, k)

    def deadletters(self, k: int) -> list[dict[str, str]]:
        return read_deadletters(self.admin, self.keys, k)

    def pending(self) -> int:
        return pending_count(self.admin, self.keys)


# -- worker subprocesses ---------------------------------------------------------------------------


def worker_env(url: str, **extra: str) -> dict[str, str]:
    """The environment of a phase-worker subprocess: only the variables we mean (R-12.3)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PHASE_") and k != "REDIS_URL"}
    env.update({"REDIS_URL": url, "PHASE_KEY_PREFIX": PREFIX, "PHASE_LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    _log: IO[bytes]

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")


@dataclass
class WorkerProcesses:
    """Starts `python -m worker` subprocesses; `close()` kills and reaps every one still alive."""

    url: str
    workdir: Path
    procs: list[WorkerProcess] = field(default_factory=list)

    def start(self, *args: str) -> WorkerProcess:
        n = len(self.procs)
        log_path = self.workdir / f"worker-{n}.log"
        log = log_path.open("wb")
        # a fixed argv: this interpreter running our own package
        proc = subprocess.Popen([sys.executable, "-m", "worker", *args],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=self.workdir, env=worker_env(self.url))
        wp = WorkerProcess(proc, log_path, log)
        self.procs.append(wp)
        return wp

    def terminate(self, wp: WorkerProcess, timeout: float = 15.0) -> int:
        wp.proc.send_signal(signal.SIGTERM)
        return wp.proc.wait(timeout=timeout)

    def close(self) -> None:
        for wp in self.procs:
            if wp.proc.poll() is None:
                wp.proc.kill()
            wp.proc.wait(timeout=15)
            wp._log.close()
        self.procs.clear()


def alive(wp: WorkerProcess) -> bool:
    if wp.proc.poll() is not None:
        raise AssertionError(f"worker exited with {wp.proc.returncode}:\n{wp.log()[-4000:]}")
    return True


def days_from(cal: Calendar, first: date, count: int) -> Iterator[date]:
    """`count` trading days from the first trading day >= `first`."""
    day = first if cal.is_trading_day(first) else cal.next_trading_day(first)
    for _ in range(count):
        yield day
        day = cal.next_trading_day(day)


def strip(value: Any, volatile: frozenset[str]) -> Any:
    """`value` without the keys in `volatile`, at any depth (ids and wall-clock instants)."""
    if isinstance(value, Mapping):
        return {k: strip(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, list | tuple):
        return [strip(v, volatile) for v in value]
    return value


__all__ = ["NY", "PREFIX", "Entry", "Harness", "WorkerProcess", "WorkerProcesses",
           "accounts_on_shard", "alive", "days_from", "drain", "et", "inbox_drained",
           "pending_count", "poll_until", "public_state", "read_deadletters", "read_events",
           "read_history", "read_state", "session_end", "stream_ids", "strip", "trade"]
