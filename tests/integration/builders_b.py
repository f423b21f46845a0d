"""Small builders for the entry-script, dead-letter, ops-worker and phasectl integration tests.

Everything writes through the caller's client; nothing connects by itself. States are built with
the worker's own codec (decode, `replace`, encode) so a test can put an account in any phase
without replaying months of trades.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis

from contracts.shard import shard_of
from worker import jobs
from worker.consumer import ShardConsumer
from worker.domain.calendar import Calendar
from worker.domain.model import AccountState, EquityReport
from worker.domain.policy import DEFAULT_POLICY, Policy
from worker.store.codec import decode_state, encode_state
from worker.store.keys import CONSUMER_GROUP, Keys
from worker.store.runtime import PolicyHolder, init_meta, install_policy, redis_now

PREFIX = "phase"  # the prefix the session's redis-server grants the users
SHARDS = 16
POLICY: Policy = DEFAULT_POLICY
CAL = Calendar(POLICY.calendar)
ROOT = Path(__file__).resolve().parents[2]


def text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def init_deployment(worker: redis.Redis, shards: int = SHARDS) -> Keys:
    """What phase-worker does at its first start: P:meta (with the entry script) and P:policy."""
    keys = init_meta(worker, PREFIX, shards)
    install_policy(worker, keys, POLICY)
    return keys


def now_of(client: redis.Redis) -> datetime:
    """Redis TIME, the worker's and the entry script's clock (R-1.6)."""
    return redis_now(client.time())


def ids_in_shard(keys: Keys, shard: int, n: int, stem: str) -> list[str]:
    """`n` account ids that hash to `shard` (so their messages share one inbox)."""
    found: list[str] = []
    i = 0
    while len(found) < n:
        candidate = f"{stem}-{i}"
        if shard_of(candidate, keys.shards) == shard:
            found.append(candidate)
        i += 1
    return found


def register(worker: redis.Redis, account_id: str, **extra: Any) -> dict[str, Any]:
    """accounts_add called directly (the job's own function, no RQ round trip)."""
    result = jobs.accounts_add({"account_id": account_id, "operator_id": "tests", **extra},
                               client=worker, prefix=PREFIX)
    assert result["outcome"] == "applied", result
    return result


def load(client: redis.Redis, keys: Keys, account_id: str) -> AccountState:
    raw = client.hgetall(keys.state(keys.shard(account_id), account_id))
    return decode_state({text(f): text(v) for f, v in raw.items()})


def public(client: redis.Redis, keys: Keys, account_id: str) -> dict[str, str]:
    raw = client.hgetall(keys.state(keys.shard(account_id), account_id))
    return {text(f): text(v) for f, v in raw.items() if text(f) != "core"}


def set_state(client: redis.Redis, keys: Keys, account_id: str, *,
              equity: Decimal | None = None, equity_at: datetime | None = None,
              **changes: Any) -> AccountState:
    """Rewrite a registered account's state with `changes` (and an equity report), versioned."""
    st = load(client, keys, account_id)
    if equity is not None:
        at = equity_at or st.updated_at
        st = replace(st, equity=(*st.equity, EquityReport(at, CAL.trading_day(at), equity)))
    st = replace(st, version=st.version + 1, **changes)
    client.hset(keys.state(keys.shard(account_id), account_id),
                mapping=encode_state(st))  # type: ignore[arg-type]
    return st


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def trade(account_id: str, trade_id: str, closed_at: datetime, pnl: str = "1.00",
          **extra: Any) -> dict[str, Any]:
    """The data of a paper trade_closed (valid unless `extra` says otherwise)."""
    return {"schema_version": 1, "account_id": account_id, "trade_id": trade_id, "mode": "paper",
            "closed_at": iso(closed_at), "pnl": pnl, **extra}


def xadd(client: redis.Redis, keys: Keys, shard: int, type_: str, data: str | bytes | Mapping[
        str, Any], **fields: str) -> str:
    """A raw inbox entry (the bot's XADD, bypassing the client's local checks)."""
    body = data if isinstance(data, str | bytes) else json.dumps(data)
    return text(client.xadd(keys.inbox(shard), {"type": type_, "data": body, **fields}))


def consumer(worker: redis.Redis, keys: Keys) -> ShardConsumer:
    return ShardConsumer(worker, keys, PolicyHolder(worker, keys))


def drain(c: ShardConsumer, max_rounds: int = 50) -> int:
    """run_once until a round handles nothing; returns the entries handled."""
    total = 0
    for _ in range(max_rounds):
        handled = c.run_once()
        if handled == 0:
            return total
        total += handled
    raise AssertionError(f"the consumer still had work after {max_rounds} rounds")


def pending(client: redis.Redis, keys: Keys, shard: int) -> int:
    summary = client.xpending(keys.inbox(shard), CONSUMER_GROUP)
    return int(summary["pending"])


def deadletters(client: redis.Redis, keys: Keys, shard: int) -> list[tuple[str, dict[str, str]]]:
    return [(text(i), {text(a): text(b) for a, b in f.items()})
            for i, f in client.xrange(keys.deadletter(shard))]


def events(client: redis.Redis, keys: Keys, shard: int) -> list[dict[str, Any]]:
    return [json.loads(text(f[b"data"] if b"data" in f else f["data"]))
            for _, f in client.xrange(keys.events(shard))]


def history(client: redis.Redis, keys: Keys, account_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The account's history stream as (type, data)."""
    rows = client.xrange(keys.history(keys.shard(account_id), account_id))
    return [(text(f[b"type"] if b"type" in f else f["type"]),
             json.loads(text(f[b"data"] if b"data" in f else f["data"]))) for _, f in rows]


def applied_trade_ids(client: redis.Redis, keys: Keys, account_id: str) -> list[str]:
    return [t.trade_id for t in load(client, keys, account_id).recent]


def trading_days(at: datetime) -> tuple[date, date, datetime]:
    """(today, the trading day before, the next session open) of an instant."""
    today = CAL.trading_day(at)
    return today, CAL.previous_trading_day(today), CAL.session_end(today)


def stale_day(today: date) -> date:
    """A trading day older than yesterday: its equity is no longer known (R-2.8)."""
    return CAL.previous_trading_day(CAL.previous_trading_day(today))


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any Phaseguard or Redis setting, plus overrides."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PHASE_") and k not in ("REDIS_URL", "COLUMNS", "LINES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(overrides)
    return env


def venv_script(name: str) -> str:
    """A console script installed next to the running interpreter (.venv/bin/phasectl)."""
    return str(Path(sys.executable).parent / name)


MINUTE = timedelta(minutes=1)
