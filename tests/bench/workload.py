"""The worker benchmarks' workload: a deployment, its accounts and the inbox messages.

Accounts are registered through the real `accounts_add` job. The accounts "with history" get a
state built by applying that many paper trades through `decide` (never by setting counters): one
template state is built, cached under `.benchmarks/` (keyed by the trade count, the last
trading day and a hash of the engine's source), and cloned to each account id by rewriting
`account_id` (decode_state -> replace -> encode_state).

Messages are paper `trade_closed` trades of regular kind (the accounts are in `experience`,
where a live trade would be an unauthorized entry, R-4.10), closed "now" by the Redis clock.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import redis

from contracts.codec import TRADE_CLOSED_ADAPTER
from worker import jobs
from worker.consumer import calendar_blob
from worker.domain.calendar import Calendar
from worker.domain.decide import EMPTY_LEDGER, decide, new_account
from worker.domain.model import Registration
from worker.domain.policy import DEFAULT_POLICY, Policy
from worker.store.codec import StateCodecError, decode_state, encode_state
from worker.store.keys import Keys
from worker.store.runtime import init_meta, install_policy, redis_now
from worker.store.uow import dumps

PREFIX = "phase"
SHARDS = 16
ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = ROOT / ".benchmarks" / "worker-states"
HISTORY_TRADES_PER_DAY = 20  # trades a trading day in the built histories
_ENGINE_SOURCES = ("worker/domain", "worker/store/codec.py", "contracts/messages.py")


def account_id(i: int) -> str:
    return f"acct-{i:05d}"


def history_account_id(i: int) -> str:
    return f"hist-{i:02d}"


@dataclass(frozen=True)
class Deployment:
    keys: Keys
    policy: Policy
    accounts: list[str]  # every registered account, history accounts included


def deploy(client: redis.Redis, *, accounts: int, history_accounts: int,
           history_trades: int) -> Deployment:
    """Initialise P:meta and the policy on an empty server and register the accounts.

    `accounts` counts every account; `history_accounts` of them carry `history_trades` prior
    trades each.
    """
    keys = init_meta(client, PREFIX, SHARDS)
    policy = DEFAULT_POLICY
    install_policy(client, keys, policy)
    fresh = [account_id(i) for i in range(accounts - history_accounts)]
    for acc in fresh:
        res = jobs.accounts_add({"account_id": acc, "operator_id": "bench"}, client=client,
                                prefix=PREFIX)
        assert res["outcome"] == "applied", res
    hist = [history_account_id(i) for i in range(history_accounts)]
    if hist:
        now = redis_now(client.time())
        cal = Calendar(policy.calendar)
        last_day = cal.previous_trading_day(cal.trading_day(now))
        template, created = history_state(policy, history_trades, last_day)
        pipe = client.pipeline(transaction=False)
        for acc in hist:
            k = keys.shard(acc)
            state = replace(decode_state(template), account_id=acc)
            pipe.hset(keys.state(k, acc), mapping=encode_state(state))  # type: ignore[arg-type]
            pipe.hset(keys.registry(k), acc, dumps({
                "clock": "redis", "currency": policy.currency, "created": created,
                "starts_at": None, "retired_at": None}))
        pipe.execute()
    publish_calendars(client, keys, policy)
    return Deployment(keys, policy, fresh + hist)


def publish_calendars(client: redis.Redis, keys: Keys, policy: Policy) -> None:
    """What the worker publishes for the entry script (request_entry needs it)."""
    today = Calendar(policy.calendar).trading_day(redis_now(client.time()))
    blob = calendar_blob(policy, today)
    client.mset({keys.calendar(k): blob for k in range(keys.shards)})


# -- states with a long history ------------------------------------------------------------------


def _engine_hash() -> str:
    h = hashlib.sha256()
    for rel in _ENGINE_SOURCES:
        path = ROOT / rel
        for f in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(f.read_bytes())
    return h.hexdigest()[:12]


def history_state(policy: Policy, trades: int, last_day: date) -> tuple[dict[str, str], str]:
    """Encoded state fields of an account with `trades` paper trades ending on `last_day`.

    Built once through `decide` and cached; returns (state fields, registration instant).
    """
    name = f"hist-{trades}-{last_day}-{policy.version.split(':')[-1][:12]}-{_engine_hash()}.json"
    path = CACHE_DIR / name
    if path.exists():
        cached = json.loads(path.read_text())
        try:
            decode_state(cached["fields"])
        except StateCodecError:
            pass
        else:
            return cached["fields"], cached["created"]
    fields, created = build_history_state(policy, trades, last_day)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for old in CACHE_DIR.glob(f"hist-{trades}-*.json"):
        old.unlink()
    path.write_text(json.dumps({"fields": fields, "created": created}))
    return fields, created


def build_history_state(policy: Policy, trades: int,
                        last_day: date) -> tuple[dict[str, str], str]:
    """Apply `trades` paper trades (20 a trading day, ending on `last_day`) through decide."""
    cal = Calendar(policy.calendar)
    days = -(-trades // HISTORY_TRADES_PER_DAY)
    day = cal.add_trading_days(last_day, -(days - 1))
    created = cal.session_open(day)
    state = new_account(Registration("template", "redis", policy.currency, created), policy)
    rnd = random.Random(11)
    i = 0
    while i < trades:
        open_at = cal.session_open(day)
        for j in range(min(HISTORY_TRADES_PER_DAY, trades - i)):
            closed = open_at + timedelta(hours=2, minutes=15 * j + 10)
            msg = TRADE_CLOSED_ADAPTER.validate_python({
                "schema_version": 1, "account_id": "template", "trade_id": f"H-{i:08d}",
                "mode": "paper", "closed_at": closed, "opened_at": closed - timedelta(minutes=8),
                "pnl": Decimal(f"{rnd.uniform(-80, 120):.2f}"), "symbol": "AAPL"})
            d = decide(state, EMPTY_LEDGER, msg, policy, closed + timedelta(seconds=1),
                       cause=f"build-{i}")
            assert d.outcome == "applied", d
            state = d.state
            i += 1
        day = cal.next_trading_day(day)
    assert state.current.trades == trades
    return encode_state(state), created.isoformat()


# -- messages ------------------------------------------------------------------------------------


def trade_data(i: int, account: str, closed_at: datetime, opened_at: datetime,
               rnd: random.Random) -> str:
    """A paper trade as the client publishes it (decimals as strings)."""
    return json.dumps({
        "schema_version": 1, "account_id": account, "trade_id": f"T-{i:010d}", "mode": "paper",
        "kind": "regular", "opened_at": opened_at.isoformat(), "closed_at": closed_at.isoformat(),
        "pnl": f"{rnd.uniform(-80, 120):.2f}", "symbol": "AAPL",
    }, separators=(",", ":"))


def trades(client: redis.Redis, dep: Deployment, count: int,
           seed: int = 7) -> Iterator[tuple[str, dict[str, str]]]:
    """`count` trades over the deployment's accounts, uniformly at random: (inbox key, fields).

    Closed from one second after the Redis clock on, 20 µs apart (well inside the 2-minute
    future tolerance, R-10.3), so each account's trades arrive in trade order.
    """
    rnd = random.Random(seed)
    base = redis_now(client.time())
    opened = base
    for i in range(count):
        acc = dep.accounts[rnd.randrange(len(dep.accounts))]
        closed = base + timedelta(seconds=1, microseconds=20 * i)
        yield (dep.keys.inbox(dep.keys.shard(acc)),
               {"type": "trade_closed", "data": trade_data(i, acc, closed, opened, rnd)})


def publish(client: redis.Redis, messages: Iterator[tuple[str, dict[str, str]]]) -> int:
    """XADD in pipelines of 1,000 (untimed setup)."""
    pipe = client.pipeline(transaction=False)
    n = 0
    for inbox, fields in messages:
        pipe.xadd(inbox, fields)  # type: ignore[arg-type]
        n += 1
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    return n


def drained(client: redis.Redis, keys: Keys) -> bool:
    """True when every inbox entry has been delivered to the group and acknowledged."""
    return inboxes_drained(client, [keys.inbox(k) for k in range(keys.shards)])


def inboxes_drained(client: redis.Redis, inboxes: list[str]) -> bool:
    """True when every entry of these inboxes has been delivered to the group and acknowledged."""
    from worker.store.keys import CONSUMER_GROUP

    pipe = client.pipeline(transaction=False)
    for inbox in inboxes:
        pipe.xinfo_groups(inbox)
    for groups in pipe.execute():
        group = next((g for g in groups if g["name"] in (CONSUMER_GROUP, CONSUMER_GROUP.encode())),
                     None)
        if group is None or group["pending"] or group.get("lag"):
            return False
    return True


def register_direct(client: redis.Redis, dep: Deployment, ids: list[str]) -> None:
    """Register many fresh accounts at once, writing what `accounts_add` writes (registry entry
    and state; not its history record): the latency benchmark needs tens of thousands."""
    now = redis_now(client.time())
    reg_body = dumps({"clock": "redis", "currency": dep.policy.currency,
                      "created": now.isoformat(), "starts_at": None, "retired_at": None})
    pipe = client.pipeline(transaction=False)
    for n, acc in enumerate(ids, 1):
        k = dep.keys.shard(acc)
        state = new_account(Registration(acc, "redis", dep.policy.currency, now), dep.policy)
        pipe.hset(dep.keys.registry(k), acc, reg_body)
        pipe.hset(dep.keys.state(k, acc), mapping=encode_state(state))  # type: ignore[arg-type]
        if n % 1000 == 0:
            pipe.execute()
    pipe.execute()
    dep.accounts.extend(ids)
