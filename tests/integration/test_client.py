"""The client in `contracts` (R-9.5) refuses locally what `P:meta` does not accept.

A deployment lists, per message type, the schema versions and the fields it accepts. A client
(logged in as the bot) checks every message against them before its XADD, so a bot newer than
its worker gets an exception instead of a dead letter; and it follows every shard's events.
What the client reads was written by the worker: P:meta and the shard calendars (R-9.2).
"""

from __future__ import annotations

import json

import pytest

from contracts.client import PhaseguardClient
from contracts.errors import InvalidMessage
from worker.consumer import calendar_opens

from .helpers import (
    PREFIX,
    Harness,
    accounts_on_shard,
    session_end,
    stream_ids,
    trade,
)

pytestmark = pytest.mark.redis


def meta_field(h: Harness, name: str) -> dict[str, list[object]]:
    value: dict[str, list[object]] = json.loads(h.admin.hget(h.keys.meta, name) or "{}")
    return value


def inbox_lengths(h: Harness) -> int:
    return sum(h.admin.xlen(h.keys.inbox(k)) for k in range(h.keys.shards))


def test_r9_5_p_meta_lists_the_accepted_schema_versions_and_fields(h: Harness) -> None:
    h.bootstrap()

    assert meta_field(h, "schema_versions") == {"trade_closed": [1], "session_ended": [1]}
    fields = meta_field(h, "fields")
    assert {"account_id", "trade_id", "pnl", "closed_at", "symbol"} <= set(fields["trade_closed"])
    assert {"account_id", "trading_day", "ended_at", "equity"} <= set(fields["session_ended"])


def test_r9_5_a_schema_version_the_deployment_does_not_accept_is_refused_locally(
        h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    h.admin.hset(h.keys.meta, "schema_versions",
                 json.dumps({"trade_closed": [2], "session_ended": [1]}))
    bot = h.bot()

    with pytest.raises(InvalidMessage) as refused:
        bot.publish_trade_closed(trade("acct-1", "t-1", "5", h.now()))

    assert refused.value.reason == "unsupported_schema_version"
    assert inbox_lengths(h) == 0
    assert bot.publish_session_ended(session_end("acct-1", h.calendar().trading_day(h.now()),
                                                 h.now()))


def test_r9_5_a_field_the_deployment_does_not_accept_is_refused_locally(h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")
    fields = meta_field(h, "fields")
    fields["trade_closed"].remove("symbol")  # a worker older than the bot's contract
    h.admin.hset(h.keys.meta, "fields", json.dumps(fields))
    bot = h.bot()
    with_symbol = trade("acct-1", "t-1", "5", h.now()).model_copy(update={"symbol": "ES"})

    with pytest.raises(InvalidMessage) as refused:
        bot.publish_trade_closed(with_symbol)

    assert refused.value.reason == "unknown_field"
    assert inbox_lengths(h) == 0
    assert bot.publish_trade_closed(trade("acct-1", "t-1", "5", h.now()))  # without: accepted
    assert inbox_lengths(h) == 1


def test_r9_5_a_message_is_published_to_its_accounts_shard(h: Harness) -> None:
    keys = h.bootstrap()
    [account] = accounts_on_shard(keys, 13, 1)
    h.add_account(account)

    entry_id = h.bot().publish_trade_closed(trade(account, "t-1", "5", h.now()))

    assert stream_ids(h.admin, keys.inbox(13)) == [entry_id]
    assert h.bot().shard(account) == 13


def test_r9_5_status_is_the_public_read_model_only(h: Harness) -> None:
    h.bootstrap()
    h.add_account("acct-1")

    status = h.bot().status("acct-1")

    assert {"phase", "halted", "degraded", "position_size", "size_reduced", "daily_entry_limit",
            "version", "updated_at"} <= set(status)
    assert "core" not in status  # the private, encoded state stays private
    assert status["phase"] == "experience"


def test_r9_5_subscribe_follows_the_events_of_every_shard(h: Harness) -> None:
    keys = h.bootstrap()
    accounts = [accounts_on_shard(keys, k, 1)[0] for k in (0, 7, 15)]
    h.close_a_day(accounts)

    reader = PhaseguardClient(h.client("reader"), PREFIX)  # subscribers log in as the reader
    seen = [event for _, event in reader.subscribe(start="beginning", block_ms=10, max_idle=1)]

    assert sorted((e.type, e.account_id) for e in seen) == sorted(
        ("session_closed", a) for a in accounts)


def test_r9_2_the_worker_publishes_the_next_400_session_opens_of_every_shard(
        h: Harness) -> None:
    keys = h.bootstrap()
    cal = h.calendar()
    today = cal.trading_day(h.now())

    h.consumer().run_once()  # takes every shard and publishes its calendar

    for k in range(keys.shards):
        raw = h.admin.get(keys.calendar(k))
        assert raw is not None, k
        opens = calendar_opens(raw)
        days = [d for d, _ in opens]
        assert len(days) - days.index(today) == 400  # today's open and the 399 after it
        assert all(at == int(cal.session_open(d).timestamp()) for d, at in opens)
        assert days == sorted(set(days))
