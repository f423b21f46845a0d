"""The export's pure parts (cells, dates, summary) and its paging, without a Redis server.

A tiny in-memory stand-in answers XRANGE/XREVRANGE, so the tests can count what the export asks
for: pages of 1,000 entries, up to the snapshot taken when it started.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.export import (
    PAGE,
    ExportError,
    ExportSummary,
    _Writer,
    cell,
    check_request,
    export,
    parse_day,
    stream_id,
)
from worker.store.keys import Keys

KEYS = Keys("phase", 16)
ACCOUNT = "acct-1"


@pytest.mark.parametrize(("value", "expected"), [
    ("=HYPERLINK(\"x\")", "'=HYPERLINK(\"x\")"),
    ("+1+1", "'+1+1"),
    ("-1+1", "'-1+1"),
    ("@SUM(A1)", "'@SUM(A1)"),
    ("\tx", "'\tx"),
    ("\rx", "'\rx"),
    ("-12.50", "-12.50"),  # a number is not a formula
    ("+3", "+3"),
    ("-1E+5", "-1E+5"),
    ("plain", "plain"),
    ("", ""),
    (None, ""),
    (True, "true"),
    (False, "false"),
    (3, "3"),
    (Decimal("961425548.08470054"), "961425548.08470054"),
    (["=a"], '["=a"]'),
    ({"k": "v"}, '{"k":"v"}'),
])
def test_a_cell_is_written_safely_and_exactly(value: Any, expected: str) -> None:
    assert cell(value) == expected


@pytest.mark.parametrize("text", ["2026-02-30", "2026-1-05", "20260105", "yesterday", "",
                                  "2026-01-05T00:00", " 2026-01-05"])
def test_a_malformed_date_is_refused(text: str) -> None:
    with pytest.raises(ExportError):
        parse_day(text)


def test_a_well_formed_date_is_read() -> None:
    assert parse_day("2024-02-29") == date(2024, 2, 29)


@pytest.mark.parametrize(("kind", "fmt", "start", "end"), [
    ("trades", "csv", None, None),
    ("sessions", "xml", None, None),
    ("sessions", "csv", date(2026, 3, 2), date(2026, 3, 1)),
    ("sessions", "csv", datetime(2026, 3, 1), None),  # noqa: DTZ001 - the refusal is the point
])
def test_a_bad_request_is_refused(kind: str, fmt: str, start: date | None,
                                  end: date | None) -> None:
    with pytest.raises(ExportError):
        check_request(kind, fmt, start, end)


def test_a_one_day_range_is_allowed() -> None:
    check_request("sessions", "csv", date(2026, 3, 2), date(2026, 3, 2))


@pytest.mark.parametrize(("counts", "win_rate", "rr", "unbounded"), [
    ((0, 0, 0, "0", "0"), None, None, False),  # no counted trades: no data
    ((2, 0, 2, "0", "-4.00"), "0.0000", "0.0000", False),  # no wins: 0
    ((2, 2, 0, "5.00", "0"), "1.0000", None, True),  # wins and no losses: unbounded
    ((3, 1, 2, "9.00", "-6.00"), "0.3333", "3.0000", False),  # 9/1 over 6/2
    ((3, 2, 1, "1.00", "-3.00"), "0.6667", "0.1667", False),  # half-even to 4 places
])
def test_the_summary_ratios_follow_the_metrics_rules(counts: tuple[int, int, int, str, str],
                                                     win_rate: str | None, rr: str | None,
                                                     unbounded: bool) -> None:
    n, wins, losses, gross_win, gross_loss = counts
    summary = ExportSummary(ACCOUNT, "sessions", None, None, counted_trades=n, wins=wins,
                            losses=losses, gross_win=Decimal(gross_win),
                            gross_loss=Decimal(gross_loss))
    assert (summary.win_rate(), summary.rr(), summary.rr_unbounded()) == (win_rate, rr,
                                                                          unbounded)


def test_stream_ids_compare_as_numbers() -> None:
    assert stream_id("999-10") < stream_id("1000-2")
    assert stream_id("1000-2") < stream_id("1000-10")


# -- paging -------------------------------------------------------------------------------------


class Stream:
    """XRANGE/XREVRANGE over one stream held in a list, recording every call."""

    def __init__(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        self.entries = entries
        self.calls: list[tuple[str, str, str, int | None]] = []

    @staticmethod
    def _bound(text: str) -> tuple[tuple[int, int], bool]:
        if text == "-":
            return (0, 0), True
        if text == "+":
            return (1 << 62, 0), True
        exclusive = text.startswith("(")
        return stream_id(text.removeprefix("(")), not exclusive

    def _between(self, lo: str, hi: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        (a, a_in), (b, b_in) = self._bound(lo), self._bound(hi)
        out = []
        for entry_id, fields in self.entries:
            sid = stream_id(entry_id.decode())
            if (sid > a or (a_in and sid == a)) and (sid < b or (b_in and sid == b)):
                out.append((entry_id, fields))
        return out

    def xrange(self, key: str, min: str = "-", max: str = "+",
               count: int | None = None) -> list[Any]:
        self.calls.append(("xrange", min, max, count))
        found = self._between(min, max)
        return found[:count] if count else found

    def xrevrange(self, key: str, max: str = "+", min: str = "-",
                  count: int | None = None) -> list[Any]:
        self.calls.append(("xrevrange", max, min, count))
        found = list(reversed(self._between(min, max)))
        return found[:count] if count else found


def sessions(n: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
    body = {"trading_day": "2026-03-10", "counted_trades": 1, "wins": 1, "losses": 0,
            "gross_win_pnl": "1.00", "gross_loss_pnl": "0", "net_pnl": "1.00"}
    return [(f"{1000 + i}-0".encode(), {b"type": b"session_closed",
                                        b"data": json.dumps(body).encode()})
            for i in range(n)]


def test_the_stream_is_read_in_pages_of_a_thousand_entries_per_pass() -> None:
    fake = Stream(sessions(2 * PAGE + 5))
    summary = export(fake, KEYS, ACCOUNT, "sessions", "jsonl", io.StringIO())  # type: ignore[arg-type]
    pages = [c for c in fake.calls if c[0] == "xrange"]
    assert all(c[3] == PAGE for c in pages)
    assert len(pages) == 2 * 3  # two passes of three pages
    assert summary.records == 2 * PAGE + 5
    assert summary.entries_read == 2 * (2 * PAGE + 5)


def test_entries_appended_during_the_export_are_not_read() -> None:
    fake = Stream(sessions(3))
    original = fake.xrange

    def growing(key: str, min: str = "-", max: str = "+",
                count: int | None = None) -> list[Any]:
        fake.entries.append((f"{5000 + len(fake.entries)}-0".encode(), fake.entries[0][1]))
        return original(key, min, max, count)

    fake.xrange = growing  # type: ignore[method-assign]
    summary = export(fake, KEYS, ACCOUNT, "sessions", "csv", io.StringIO())  # type: ignore[arg-type]
    assert summary.records == 3
    assert summary.last_entry_id == "1002-0"


# -- the CSV fast path --------------------------------------------------------------------------

_TRICKY = "=+-@\t\r\n,\"'0123456789.eE x[]{}"
_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.text(alphabet=_TRICKY, max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
    st.lists(st.text(alphabet=_TRICKY, max_size=3), max_size=2),
    st.dictionaries(st.text(alphabet=_TRICKY, max_size=2), st.integers(-5, 5), max_size=2),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_VALUES, min_size=1, max_size=6))
def test_a_csv_line_is_what_checking_every_cell_would_write(values: list[Any]) -> None:
    expected = io.StringIO()
    csv.writer(expected, lineterminator="\r\n").writerow([cell(v) for v in values])
    writer = _Writer(io.StringIO(), "jsonl", "history", None)
    assert writer.csv_line(list(values)) == expected.getvalue()
