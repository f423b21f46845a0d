"""Export (R-8.3) and archive (R-7.7c, R-8.1) against the session's redis-server.

History entries are written the way the worker writes them (`type` + JSON `data`, decimals as
strings); the export reads them as `phaseguard-ops`, as phasectl does. One test drives the real
consumer to close and amend a session, so the export is also proven on engine-made records.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
from rq import Queue
from rq.serializers import JSONSerializer

from tests.integration.signed_support import (
    PARAMS,
    PASSWORD,
    PYTHON,
    Deployment,
    RoleUrl,
    deployment,
    env_for,
    phasectl,
    poll_until,
    s,
)
from worker import jobs
from worker.consumer import ShardConsumer
from worker.domain.calendar import Calendar
from worker.domain.policy import DEFAULT_POLICY
from worker.export import (
    OVERRIDE_COLUMNS,
    SESSION_COLUMNS,
    TRANSITION_COLUMNS,
    ExportError,
    ExportSummary,
    export,
    stream_id,
)
from worker.ops.archive import cutoff_id
from worker.ops.signing import derive_key
from worker.ops_worker import PhaseguardJob, PhaseguardSimpleWorker
from worker.store.keys import RQ_QUEUE
from worker.store.runtime import PolicyHolder, redis_now
from worker.store.uow import dumps

ACCOUNT = "acct-export"
ET = ZoneInfo("America/New_York")
CAL = Calendar(DEFAULT_POLICY.calendar)


@pytest.fixture(scope="module")
def override_key() -> bytes:
    """The deployment's override key, derived once for the module (600,000 iterations)."""
    return derive_key(PASSWORD, PARAMS)


@pytest.fixture
def d(redis_admin: redis.Redis, role_url: RoleUrl, override_key: bytes) -> Iterator[Deployment]:
    with deployment(redis_admin, role_url, override_key) as dep:
        yield dep


# -- builders -------------------------------------------------------------------------------------


def history_key(d: Deployment, account: str = ACCOUNT) -> str:
    return d.keys.history(d.keys.shard(account), account)


def put(d: Deployment, type_: str, data: Mapping[str, Any] | str, *, account: str = ACCOUNT,
        entry_id: str = "*") -> str:
    """One history entry as the worker writes it (`data` may be raw text, to corrupt it)."""
    body = data if isinstance(data, str) else dumps(data)
    return s(d.worker.xadd(history_key(d, account), {"type": type_, "data": body}, id=entry_id))


def session(day: str, **changes: Any) -> dict[str, Any]:
    """A session record shaped like worker.domain.decide.session_record's."""
    record: dict[str, Any] = {
        "trading_day": day, "phase": "proof", "position_size": "100.00", "phases": ["proof"],
        "counted_trades": 2, "wins": 1, "losses": 1, "breakevens": 0, "emergency_exits": 0,
        "gross_win_pnl": "30.00", "gross_loss_pnl": "-10.00", "net_pnl": "20.00",
        "start_equity": "1000.00", "end_equity": "1020.00", "breaker_trips": 0,
        "denied_entries": {}, "closed_implicitly": False, "amended": False, "currency": "USD",
        "occurred_at": f"{day}T21:00:00+00:00", "caused_by": "1-0",
    }
    record.update(changes)
    return record


def transition(day: str, **changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "transition_id": f"{day}:advance", "occurred_at": f"{day}T21:00:00+00:00",
        "effective_at": f"{day}T21:00:00+00:00", "trading_day": day,
        "from_phase": "experience", "to_phase": "proof", "kind": "advance", "trigger": "auto",
        "validation_passed": True, "reasons": [], "operator_id": None, "override_used": False,
        "metrics": {"win_rate": "0.6000"}, "policy_version": "v1", "caused_by": "1-0",
    }
    record.update(changes)
    return record


def attempt(at: datetime, **changes: Any) -> dict[str, Any]:
    """An override_attempt record (the audit of R-7.13): no trading_day, only `at`."""
    record: dict[str, Any] = {
        "at": at.isoformat(), "request_id": "r-1", "operator_id": "alice",
        "action": "acknowledge", "account_id": ACCOUNT, "target_phase": None,
        "expected_phase": "proof", "outcome": "refused", "reason": "bad_signature",
        "detail": "", "request_reason": "because",
    }
    record.update(changes)
    return record


def run(d: Deployment, kind: str, fmt: str, start: date | None = None, end: date | None = None,
        account: str = ACCOUNT) -> tuple[str, ExportSummary]:
    buf = io.StringIO()
    summary = export(d.ops, d.keys, account, kind, fmt, buf, start, end)
    return buf.getvalue(), summary


def read_csv(text: str) -> tuple[dict[str, Any], list[str], list[dict[str, str]]]:
    first, _, rest = text.partition("\r\n")
    assert first.startswith("# summary: "), first
    reader = csv.reader(io.StringIO(rest))
    header = next(reader)
    return (json.loads(first.removeprefix("# summary: ")), header,
            [dict(zip(header, row, strict=True)) for row in reader])


def read_jsonl(text: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines, "a JSON Lines export always has its summary line"
    *records, summary = lines
    assert summary["record_type"] == "summary"
    return records, summary


# -- shape of the files ---------------------------------------------------------------------------


def test_csv_starts_with_the_summary_comment_then_the_fixed_columns(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10"))
    put(d, "transition", transition("2026-03-10"))  # another kind: not in a sessions file
    text, _ = run(d, "sessions", "csv")
    summary, header, rows = read_csv(text)
    assert header == list(SESSION_COLUMNS)
    assert [r["trading_day"] for r in rows] == ["2026-03-10"]
    assert summary["records"] == 1
    assert summary["kind"] == "sessions"


def test_jsonl_ends_with_the_summary_line(d: Deployment) -> None:
    put(d, "transition", transition("2026-03-10"))
    put(d, "session_closed", session("2026-03-10"))  # another kind: not in a transitions file
    put(d, "transition", transition("2026-03-11", kind="downgrade", to_phase="experience"))
    text, _ = run(d, "transitions", "jsonl")
    records, summary = read_jsonl(text)
    assert [r["record_type"] for r in records] == ["transition", "transition"]
    assert [r["kind"] for r in records] == ["advance", "downgrade"]
    assert list(records[0]) == ["record_type", *TRANSITION_COLUMNS]
    assert summary["records"] == 2


def test_a_list_or_object_field_is_json_text_in_its_csv_cell(d: Deployment) -> None:
    put(d, "transition", transition("2026-03-10", reasons=["a", "b"]))
    _, _, rows = read_csv(run(d, "transitions", "csv")[0])
    assert json.loads(rows[0]["reasons"]) == ["a", "b"]
    assert json.loads(rows[0]["metrics"]) == {"win_rate": "0.6000"}
    assert rows[0]["validation_passed"] == "true"
    assert rows[0]["operator_id"] == ""


def test_an_empty_range_writes_the_header_and_summary_only(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10"))
    start = end = date(2026, 3, 11)
    text, summary = run(d, "sessions", "csv", start, end)
    assert text.splitlines()[1:] == [",".join(SESSION_COLUMNS)]
    assert read_csv(text)[0]["records"] == 0
    records, last = read_jsonl(run(d, "sessions", "jsonl", start, end)[0])
    assert records == []
    assert last["total_pnl"] == "0"
    assert last["win_rate"] is None
    assert summary.records == 0


def test_an_account_without_history_exports_the_summary_only(d: Deployment) -> None:
    records, summary = read_jsonl(run(d, "overrides", "jsonl", account="nobody")[0])
    assert records == []
    assert summary["records"] == 0
    assert summary["last_entry_id"] is None


# -- the range ------------------------------------------------------------------------------------


def test_the_range_is_inclusive_on_trading_days(d: Deployment) -> None:
    for day in ("2026-03-09", "2026-03-10", "2026-03-11", "2026-03-12", "2026-03-13"):
        put(d, "session_closed", session(day))
    _, _, rows = read_csv(run(d, "sessions", "csv", date(2026, 3, 10), date(2026, 3, 12))[0])
    assert [r["trading_day"] for r in rows] == ["2026-03-10", "2026-03-11", "2026-03-12"]
    _, _, rows = read_csv(run(d, "sessions", "csv", date(2026, 3, 12), None)[0])
    assert [r["trading_day"] for r in rows] == ["2026-03-12", "2026-03-13"]
    _, _, rows = read_csv(run(d, "sessions", "csv", None, date(2026, 3, 9))[0])
    assert [r["trading_day"] for r in rows] == ["2026-03-09"]


def test_a_session_counts_on_its_trading_day_not_on_when_it_was_written(
        d: Deployment) -> None:
    # closed by the sweep at 07:15 ET the next morning: still the session of March 10
    put(d, "session_closed", session("2026-03-10", occurred_at="2026-03-11T11:15:00+00:00"))
    one_day = date(2026, 3, 10)
    _, _, rows = read_csv(run(d, "sessions", "csv", one_day, one_day)[0])
    assert [r["trading_day"] for r in rows] == ["2026-03-10"]
    nxt = date(2026, 3, 11)
    assert read_csv(run(d, "sessions", "csv", nxt, nxt)[0])[2] == []


@pytest.mark.parametrize(("wall", "day"), [
    ("2026-03-10T07:00:00", "2026-03-10"),  # the session open belongs to its own day
    ("2026-03-10T23:30:00", "2026-03-10"),  # late evening: still the session opened at 07:00
    ("2026-03-11T06:59:59", "2026-03-10"),  # the next morning before the open
    ("2026-03-11T07:00:00", "2026-03-11"),
    ("2026-03-16T06:59:59", "2026-03-13"),  # Monday before the open: Friday's session
])
def test_an_override_attempt_counts_on_the_trading_day_of_its_instant_in_market_time(
        d: Deployment, wall: str, day: str) -> None:
    at = datetime.fromisoformat(wall).replace(tzinfo=ET).astimezone(UTC)
    put(d, "override_attempt", attempt(at))
    one = date.fromisoformat(day)
    _, _, rows = read_csv(run(d, "overrides", "csv", one, one)[0])
    assert [r["trading_day"] for r in rows] == [day]
    assert list(rows[0]) == list(OVERRIDE_COLUMNS)
    before = one - timedelta(days=1)
    assert read_csv(run(d, "overrides", "csv", before, before)[0])[2] == []


def test_a_range_that_starts_after_it_ends_is_refused(d: Deployment) -> None:
    with pytest.raises(ExportError):
        run(d, "sessions", "csv", date(2026, 3, 12), date(2026, 3, 11))


@pytest.mark.parametrize("kind_fmt", [("trades", "csv"), ("sessions", "xlsx")])
def test_an_unknown_kind_or_format_is_refused(d: Deployment, kind_fmt: tuple[str, str]) -> None:
    with pytest.raises(ExportError):
        run(d, *kind_fmt)


# -- sessions: latest version, summary, exactness -------------------------------------------------


def test_an_amended_session_appears_once_in_its_latest_version(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10", wins=1, net_pnl="20.00"))
    put(d, "session_closed", session("2026-03-11"))
    put(d, "session_amended", session("2026-03-10", amended=True, wins=2, counted_trades=3,
                                      gross_win_pnl="50.00", net_pnl="40.00"))
    latest = put(d, "session_amended", session("2026-03-10", amended=True, wins=2,
                                               counted_trades=4, breakevens=1,
                                               gross_win_pnl="50.00", net_pnl="40.01"))
    _, _, rows = read_csv(run(d, "sessions", "csv")[0])
    # trading-day order: the amended day's latest version stands where its close stood
    assert [r["trading_day"] for r in rows] == ["2026-03-10", "2026-03-11"]
    assert rows[0]["entry_id"] == latest
    assert (rows[0]["amended"], rows[0]["net_pnl"], rows[0]["counted_trades"]) == (
        "true", "40.01", "4")
    assert rows[1]["amended"] == "false"
    records, summary = read_jsonl(run(d, "sessions", "jsonl")[0])
    assert [(r["trading_day"], r["amended"]) for r in records] == [
        ("2026-03-10", True), ("2026-03-11", False)]
    assert summary["total_pnl"] == "60.01"  # the latest version only, once


def test_many_amended_days_each_appear_once_in_trading_day_order(d: Deployment) -> None:
    days = [date(2026, 1, 5) + timedelta(days=i) for i in range(90)]
    for day in days:
        put(d, "session_closed", session(day.isoformat(), net_pnl="1.00"))
    latest = {}
    for day in reversed(days[::2]):  # 45 amended days (more than one prefetch), late and twice
        put(d, "session_amended", session(day.isoformat(), amended=True, net_pnl="5.00"))
        latest[day.isoformat()] = put(d, "session_amended", session(
            day.isoformat(), amended=True, net_pnl="2.00"))
    records, summary = read_jsonl(run(d, "sessions", "jsonl")[0])
    assert [r["trading_day"] for r in records] == [day.isoformat() for day in days]
    assert all(r["entry_id"] == latest[r["trading_day"]] and r["net_pnl"] == "2.00"
               for r in records if r["amended"])
    assert sum(r["amended"] for r in records) == 45
    assert summary["total_pnl"] == "135.00"  # 45 x 1.00 + 45 x 2.00


def test_the_reader_user_exports_the_same_sessions_file_as_ops(d: Deployment,
                                                               role_url: RoleUrl) -> None:
    put(d, "session_closed", session("2026-03-10"))
    put(d, "session_closed", session("2026-03-11"))
    put(d, "session_amended", session("2026-03-10", amended=True, net_pnl="7.00"))
    ops_text, _ = run(d, "sessions", "csv")
    reader = redis.Redis.from_url(role_url("reader"), decode_responses=True)  # history
    try:
        buf = io.StringIO()
        export(reader, d.keys, ACCOUNT, "sessions", "csv", buf)
    finally:
        reader.close()
    assert buf.getvalue() == ops_text  # and a client that decodes responses writes the same


def test_an_amendment_whose_close_was_archived_still_appears_once(d: Deployment) -> None:
    put(d, "session_amended", session("2026-03-10", amended=True, net_pnl="1.00"))
    last = put(d, "session_amended", session("2026-03-10", amended=True, net_pnl="2.00"))
    records, _ = read_jsonl(run(d, "sessions", "jsonl")[0])
    assert [(r["entry_id"], r["net_pnl"]) for r in records] == [(last, "2.00")]


def test_the_summary_has_total_pnl_win_rate_and_rr_of_the_exported_sessions(
        d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10", counted_trades=3, wins=2, losses=1,
                                     gross_win_pnl="30.00", gross_loss_pnl="-5.00",
                                     net_pnl="25.00"))
    put(d, "session_closed", session("2026-03-11", counted_trades=2, wins=0, losses=2,
                                     gross_win_pnl="0.00", gross_loss_pnl="-10.00",
                                     net_pnl="-10.00"))
    summary, _, _ = read_csv(run(d, "sessions", "csv")[0])
    assert summary["total_pnl"] == "15.00"
    assert summary["win_rate"] == "0.4000"  # 2 wins / 5 counted trades
    # mean win 30/2 = 15, mean |loss| 15/3 = 5
    assert (summary["rr"], summary["rr_unbounded"]) == ("3.0000", False)


def test_wins_without_losses_is_an_unbounded_rr(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10", counted_trades=1, wins=1, losses=0,
                                     gross_loss_pnl="0.00", net_pnl="30.00"))
    summary, _, _ = read_csv(run(d, "sessions", "csv")[0])
    assert (summary["rr"], summary["rr_unbounded"], summary["win_rate"]) == (
        None, True, "1.0000")


def test_decimals_are_written_exactly_as_stored(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10", gross_win_pnl="961425548.08470054",
                                     gross_loss_pnl="-0.00000001",
                                     net_pnl="961425548.08470053", end_equity="1E+3"))
    # a JSON number (never written by the worker) stays exact too: parse_float=Decimal
    put(d, "session_closed", '{"trading_day":"2026-03-11","counted_trades":0,"wins":0,'
                             '"losses":0,"gross_win_pnl":0.10,"gross_loss_pnl":"0",'
                             '"net_pnl":961425548.08470054}')
    _, _, rows = read_csv(run(d, "sessions", "csv")[0])
    assert (rows[0]["gross_win_pnl"], rows[0]["gross_loss_pnl"], rows[0]["net_pnl"],
            rows[0]["end_equity"]) == ("961425548.08470054", "-0.00000001",
                                       "961425548.08470053", "1E+3")
    assert (rows[1]["gross_win_pnl"], rows[1]["net_pnl"]) == ("0.10", "961425548.08470054")
    records, summary = read_jsonl(run(d, "sessions", "jsonl")[0])
    assert records[0]["net_pnl"] == "961425548.08470053"
    assert summary["total_pnl"] == "1922851096.16940107"
    assert Decimal(summary["total_pnl"]) == Decimal("961425548.08470053") + Decimal(
        "961425548.08470054")


# -- CSV injection and unreadable entries ---------------------------------------------------------


@pytest.mark.parametrize("text", ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "\rx"])
def test_formula_like_text_cells_are_prefixed_with_an_apostrophe(d: Deployment,
                                                                 text: str) -> None:
    put(d, "override_attempt", attempt(datetime(2026, 3, 10, 15, tzinfo=UTC),
                                       request_reason=text, operator_id=text))
    _, _, rows = read_csv(run(d, "overrides", "csv")[0])
    assert rows[0]["request_reason"] == "'" + text
    assert rows[0]["operator_id"] == "'" + text
    records, _ = read_jsonl(run(d, "overrides", "jsonl")[0])
    assert records[0]["request_reason"] == text  # JSON Lines are data, not a spreadsheet


def test_negative_numbers_are_numbers_not_formulas(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10", gross_loss_pnl="-10.00", net_pnl="-1.5"))
    _, _, rows = read_csv(run(d, "sessions", "csv")[0])
    assert (rows[0]["gross_loss_pnl"], rows[0]["net_pnl"]) == ("-10.00", "-1.5")


def test_unreadable_entries_are_skipped_and_counted(d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10"))
    put(d, "session_closed", "{not json")
    put(d, "session_closed", "[1, 2]")
    put(d, "session_amended", json.dumps(session("2026-03-11", wins="two")))
    put(d, "session_closed", json.dumps(session("2026-13-01")))
    put(d, "session_closed", json.dumps(session("2026-03-12", net_pnl="NaN")))
    d.worker.xadd(history_key(d), {"type": "session_closed"})  # no data at all
    put(d, "transition", "{not json")  # another kind's junk is not this file's business
    put(d, "session_closed", session("2026-03-13"))
    text, summary = run(d, "sessions", "csv")
    head, _, rows = read_csv(text)
    assert [r["trading_day"] for r in rows] == ["2026-03-10", "2026-03-13"]
    assert head["skipped"] == summary.skipped == 6
    assert read_jsonl(run(d, "transitions", "jsonl")[0])[1]["skipped"] == 1


def test_an_unreadable_latest_amendment_leaves_the_last_readable_version(
        d: Deployment) -> None:
    put(d, "session_closed", session("2026-03-10", net_pnl="1.00"))
    good = put(d, "session_amended", session("2026-03-10", amended=True, net_pnl="2.00"))
    put(d, "session_amended", "{broken")
    records, summary = read_jsonl(run(d, "sessions", "jsonl")[0])
    assert [(r["entry_id"], r["net_pnl"]) for r in records] == [(good, "2.00")]
    assert summary["skipped"] == 1


# -- history kind and the real engine -------------------------------------------------------------


def test_the_history_kind_exports_every_entry_as_stored(d: Deployment) -> None:
    ids = [put(d, "session_closed", session("2026-03-10")), put(d, "breaker_tripped", "{odd"),
           s(d.worker.xadd(history_key(d), {"type": "x", "data": "{}", "extra": "=1"})),
           s(d.worker.xadd(history_key(d), {"type": "y", "data": b"\xff{}"}))]
    records, summary = read_jsonl(run(d, "history", "jsonl")[0])
    assert [r["entry_id"] for r in records] == ids
    assert records[0]["data"] == dumps(session("2026-03-10"))  # the stored text, untouched
    assert records[1]["data"] == "{odd"
    assert records[2]["extra"] == {"extra": "=1"}
    assert records[3]["data"] == "\\xff{}"  # not UTF-8: escaped, never fatal
    assert summary["last_entry_id"] == ids[-1]
    _, _, rows = read_csv(run(d, "history", "csv")[0])
    assert rows[2]["extra"] == '{"extra":"=1"}'


def test_sessions_closed_and_amended_by_the_engine_export_once(d: Deployment) -> None:
    d.register(ACCOUNT)
    now = redis_now(d.worker.time())
    today = CAL.trading_day(now)
    opened = CAL.session_open(today)
    k = d.keys.shard(ACCOUNT)

    def send(type_: str, body: dict[str, Any]) -> None:
        d.worker.xadd(d.keys.inbox(k), {"type": type_, "data": json.dumps(body)})

    def trade(trade_id: str, pnl: str, closed_at: datetime) -> dict[str, Any]:
        return {"schema_version": 1, "account_id": ACCOUNT, "trade_id": trade_id,
                "mode": "paper", "closed_at": closed_at.isoformat(), "pnl": pnl}

    consumer = ShardConsumer(d.worker, d.keys, PolicyHolder(d.worker, d.keys))

    def drain() -> None:
        for _ in range(20):
            if consumer.run_once() == 0:
                return
        raise AssertionError("the consumer kept finding work")

    send("trade_closed", trade("t-1", "961425548.08470054", now))
    send("session_ended", {"schema_version": 1, "account_id": ACCOUNT,
                           "trading_day": today.isoformat(), "ended_at": now.isoformat()})
    drain()
    # a late trade of the same trading day amends the closed session
    send("trade_closed", trade("t-2", "-0.00000001", opened + (now - opened) / 2))
    drain()
    types = [s(f[b"type"]) for _, f in d.worker.xrange(history_key(d))]
    assert types.count("session_closed") == 1, types
    assert types.count("session_amended") == 1, types
    records, summary = read_jsonl(run(d, "sessions", "jsonl", today, today)[0])
    assert len(records) == 1
    assert records[0]["amended"] is True
    assert records[0]["net_pnl"] == "961425548.08470053"
    assert summary["total_pnl"] == "961425548.08470053"


# -- archive (R-7.7c, R-8.1) ----------------------------------------------------------------------


def old_history(d: Deployment, n: int, minutes_ago: int = 9) -> list[str]:
    """`n` entries with ids minutes in the past, then the registration (now)."""
    base = int(redis_now(d.worker.time()).timestamp() * 1000) - minutes_ago * 60_000
    ids = [put(d, "session_closed", session(f"2026-03-{10 + i % 3:02d}"), entry_id=f"{base}-{i}")
           for i in range(n)]
    d.register(ACCOUNT)
    return ids


def archive_request(d: Deployment, at: datetime, **overrides: Any) -> dict[str, Any]:
    return d.request("archive", ACCOUNT, reason="quarterly archive", at=at, **overrides)


def test_archive_trims_the_entries_before_issued_at_and_audits_it(d: Deployment) -> None:
    ids = old_history(d, 5)
    cutoff_at = redis_now(d.worker.time()) - timedelta(minutes=1)
    state_before = d.worker.hgetall(d.keys.state(d.keys.shard(ACCOUNT), ACCOUNT))
    result = d.run_one("archive", archive_request(d, cutoff_at))
    assert result["outcome"] == "applied", result
    assert (result["trimmed"], result["first_trimmed_id"], result["last_trimmed_id"]) == (
        5, ids[0], ids[-1])
    assert result["cutoff_id"] == cutoff_id(cutoff_at.replace(microsecond=0))
    left = d.worker.xrange(history_key(d))
    assert [s(f[b"type"]) for _, f in left] == ["registered", "history_archived",
                                                "override_attempt"]
    archived = json.loads(left[1][1][b"data"])
    assert (archived["trimmed"], archived["last_trimmed_id"], archived["operator_id"]) == (
        5, ids[-1], "alice")
    audit = d.audits(d.keys.shard(ACCOUNT))[-1]
    assert (audit["action"], audit["outcome"]) == ("archive", "applied")
    assert ids[-1] in audit["reason"]
    assert "signature" not in audit
    # the state (metrics live there, not in the history) is untouched
    assert d.worker.hgetall(d.keys.state(d.keys.shard(ACCOUNT), ACCOUNT)) == state_before


def test_an_identical_archive_resubmission_returns_the_stored_outcome(d: Deployment) -> None:
    old_history(d, 3)
    request = archive_request(d, redis_now(d.worker.time()) - timedelta(minutes=1))
    first = d.run_one("archive", request)
    again = d.run_one("archive", request)
    assert again == {**first, "replayed": True}
    assert d.worker.xlen(history_key(d)) == 4  # registered, archived and two audits


def test_archive_with_nothing_older_than_the_cutoff_is_a_noop(d: Deployment) -> None:
    d.register(ACCOUNT)
    result = d.run_one("archive", archive_request(
        d, redis_now(d.worker.time()) - timedelta(minutes=1)))
    assert (result["outcome"], result["reason"], result["trimmed"]) == (
        "noop", "nothing_to_archive", 0)


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"key": b"\x01" * 32}, "bad_signature"),
    ({"expected": "trial"}, "stale_request"),
    ({"validity": timedelta(seconds=30)}, "expired"),  # issued 1 minute ago, for 30 s
])
def test_a_refused_archive_trims_nothing_and_is_audited(
        d: Deployment, overrides: dict[str, Any], reason: str) -> None:
    old_history(d, 3)
    before = d.worker.xlen(history_key(d))
    result = d.run_one("archive", archive_request(
        d, redis_now(d.worker.time()) - timedelta(minutes=1), **overrides))
    assert (result["outcome"], result["reason"]) == ("refused", reason)
    assert d.worker.xlen(history_key(d)) == before + 1  # only the override_attempt
    assert d.audits(d.keys.shard(ACCOUNT))[-1]["reason"] == reason


def test_an_archive_whose_cutoff_is_in_the_future_is_refused(d: Deployment) -> None:
    old_history(d, 2)
    result = d.run_one("archive", archive_request(
        d, redis_now(d.worker.time()) + timedelta(seconds=30)))
    assert (result["outcome"], result["reason"]) == ("refused", "cutoff_in_future")
    assert d.worker.xlen(history_key(d)) == 4


def test_an_archive_of_an_unknown_account_is_refused(d: Deployment) -> None:
    result = d.run_one("archive", d.request("archive", "ghost", expected="experience",
                                            reason="x"))
    assert (result["outcome"], result["reason"]) == ("refused", "unknown_account")


def test_archive_runs_through_the_job_allowlist_and_the_direct_call_alike(
        d: Deployment) -> None:
    old_history(d, 2)
    result = jobs.archive(archive_request(d, redis_now(d.worker.time()) - timedelta(minutes=1)),
                          client=d.worker, prefix=d.keys.prefix)
    assert (result["outcome"], result["trimmed"]) == ("applied", 2)


# -- phasectl -------------------------------------------------------------------------------------


def test_phasectl_export_writes_the_file(d: Deployment, role_url: RoleUrl,
                                         tmp_path: Path) -> None:
    d.register(ACCOUNT)
    put(d, "session_closed", session("2026-03-10", net_pnl="961425548.08470054"))
    out = tmp_path / "sessions.csv"
    done = phasectl(["export", ACCOUNT, "--kind", "sessions", "--format", "csv", "--from",
                     "2026-03-10", "--to", "2026-03-10", "--out", str(out)],
                    url=role_url("ops"), cwd=tmp_path)
    assert done.code == 0, done.stderr
    with out.open(newline="") as f:  # the file's own CRLF line ends
        summary, _, rows = read_csv(f.read())
    assert rows[0]["net_pnl"] == summary["total_pnl"] == "961425548.08470054"
    assert not (tmp_path / "sessions.csv.partial").exists()
    assert "\x1b" not in done.stderr  # no progress bar without a terminal


@pytest.mark.parametrize(("args", "needle"), [
    (["--from", "2026-03-12", "--to", "2026-03-11"], "starts after it ends"),
    (["--from", "2026-02-30"], "not a valid date"),
    (["--to", "12/03/2026"], "not a date"),
    (["--format", "xlsx"], "format"),
])
def test_phasectl_export_refuses_a_bad_range_in_one_line(tmp_path: Path, args: list[str],
                                                         needle: str) -> None:
    done = phasectl(["export", ACCOUNT, "--kind", "sessions", *args], url="redis://127.0.0.1:1",
                    cwd=tmp_path)
    assert done.code == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert needle in done.stderr


def test_phasectl_archive_exports_then_trims(d: Deployment, role_url: RoleUrl,
                                             tmp_path: Path) -> None:
    ids = old_history(d, 4)
    # the export holds every entry; the job trims the ones older than the signed issued_at
    out = tmp_path / "archive.jsonl"
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    with secret.open() as stdin:
        proc = subprocess.Popen(
            [PYTHON, "-c", "from worker.cli import phasectl_main; phasectl_main()", "archive",
             ACCOUNT, "--out", str(out), "--operator", "alice", "--reason", "quarterly archive",
             "--password-stdin", "--json"], stdin=stdin, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env_for(role_url("ops")))
    try:
        queue = Queue(RQ_QUEUE, connection=d.ops, serializer=JSONSerializer)
        poll_until(lambda: queue.count > 0 or proc.poll() is not None, 60.0,
                   "phasectl to enqueue the archive job")
        PhaseguardSimpleWorker([RQ_QUEUE], connection=d.worker, job_class=PhaseguardJob,
                               serializer=JSONSerializer).work(burst=True)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stderr
    result = json.loads(stdout)
    assert result["outcome"] == "applied"
    records, summary = read_jsonl(out.read_text())
    exported = [r["entry_id"] for r in records]
    assert exported[:4] == ids
    assert result["trimmed"] >= 4
    assert stream_id(result["last_trimmed_id"]) <= stream_id(summary["last_entry_id"])
    left = [s(i) for i, _ in d.worker.xrange(history_key(d))]
    assert not set(ids) & set(left)
    assert "WARNING" not in stderr


def test_phasectl_archive_never_overwrites_a_file(tmp_path: Path) -> None:
    out = tmp_path / "archive.jsonl"
    out.write_text("keep me\n")
    done = phasectl(["archive", ACCOUNT, "--out", str(out), "--operator", "alice", "--reason",
                     "x", "--password-stdin"], url="redis://127.0.0.1:1", cwd=tmp_path,
                    stdin=PASSWORD + "\n")
    assert done.code == 2
    assert "exists" in done.stderr
    assert out.read_text() == "keep me\n"
