"""The HTML report (worker/replay/report.py): a pure function of history records and the gate."""

from __future__ import annotations

from datetime import date, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest

from worker.replay.report import (
    HistoryRecord,
    decode_record,
    render_report,
    sessions_of,
    timeline,
)

DAY0 = date(2026, 3, 2)
VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "col", "wbr", "area", "base",
                  "source", "embed", "param", "track"})
GATE: dict[str, Any] = {
    "from_phase": "proof", "to_phase": "trial", "eligible": False, "failed": ["closed_days"],
    "criteria": [
        {"name": "closed_days", "required": ">= 30", "actual": "12", "met": False},
        {"name": "rr", "required": ">= 1.8", "actual": None, "met": False, "reason": "no data"},
        {"name": "win_rate", "required": ">= 0.65", "actual": "0.7000", "met": True},
    ],
}


class Checker(HTMLParser):
    """Fails on any end tag that does not close the innermost open element."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.classes: list[str] = []
        self.attrs: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._record(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._record(attrs)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def _record(self, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.attrs.append(found)
        self.classes.extend((found.get("class") or "").split())


def parsed(page: str) -> Checker:
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert checker.problems == []
    assert checker.stack == []
    return checker


def rec(type_: str, **data: Any) -> HistoryRecord:
    return HistoryRecord(f"{len(data)}-0", type_, data)


def session(day: date, phase: str, equity: str | None, size: str = "100.00",
            kind: str = "session_closed", **extra: Any) -> HistoryRecord:
    body = {"trading_day": str(day), "phase": phase, "position_size": size, "phases": [phase],
            "counted_trades": 2, "wins": 1, "losses": 1, "breakevens": 0,
            "emergency_exits": 0, "gross_win_pnl": "20.00", "gross_loss_pnl": "-5.00",
            "net_pnl": "15.00", "start_equity": None, "end_equity": equity,
            "breaker_trips": 0, "denied_entries": {}, "closed_implicitly": False,
            "amended": kind == "session_amended", "currency": "USD", **extra}
    return rec(kind, **body)


def transition(day: date, frm: str, to: str, kind: str, *reasons: str) -> HistoryRecord:
    return rec("transition", trading_day=str(day), from_phase=frm, to_phase=to, kind=kind,
               trigger="auto", reasons=list(reasons))


def ladder() -> list[HistoryRecord]:
    """Five sessions: an advance, a downgrade with its trip, an unauthorized entry, an amendment."""
    d = [DAY0 + timedelta(days=i) for i in range(5)]
    return [
        rec("registered", clock="message", currency="USD"),
        session(d[0], "experience", "10000.00", size="0.00"),
        transition(d[1], "experience", "proof", "advance"),
        session(d[1], "proof", "10100.00"),
        session(d[2], "proof", "10050.00"),
        transition(d[3], "proof", "experience", "downgrade", "consecutive_losses: 3 in a row"),
        rec("breaker_tripped", at="2026-03-05T11:00:00-05:00", trading_day=str(d[3]),
            reasons=["consecutive_losses"], phase="experience"),
        session(d[3], "experience", "9900.00", size="0.00", breaker_trips=1),
        rec("unauthorized_entry", trade_id="t-9", entry_decision_id=None, reason="no id"),
        session(d[4], "experience", "9950.00", size="0.00"),
        session(d[2], "proof", "10075.00", kind="session_amended"),
    ]


def test_the_report_parses_as_well_formed_html() -> None:
    parsed(render_report("acct-1", ladder(), GATE))


def test_the_report_is_self_contained() -> None:
    page = render_report("acct-1", ladder(), GATE).lower()

    for external in ("http:", "https:", "src=", "href=", "url(", "@import", "<script"):
        assert external not in page


def test_the_equity_chart_has_one_point_per_session_with_the_latest_version_of_each() -> None:
    checker = parsed(render_report("acct-1", ladder(), GATE))

    points = [a for a in checker.attrs if "session-point" in (a.get("class") or "").split()]
    assert [p["data-day"] for p in points] == [str(DAY0 + timedelta(days=i)) for i in range(5)]
    assert points[2]["data-equity"] == "10075.00"  # the amended end equity


def test_every_transition_breaker_trip_and_unauthorized_entry_has_one_marker() -> None:
    checker = parsed(render_report("acct-1", ladder(), GATE))

    assert checker.classes.count("transition-marker") == 2
    assert checker.classes.count("breaker-marker") == 1
    assert checker.classes.count("unauthorized-marker") == 1
    kinds = [a.get("data-kind") for a in checker.attrs if a.get("class") == "transition-marker"]
    assert kinds == ["advance", "downgrade"]


def test_phase_bands_follow_each_sessions_phase() -> None:
    checker = parsed(render_report("acct-1", ladder(), GATE))

    bands = [a.get("data-phase") for a in checker.attrs if a.get("class") == "phase-band"]
    assert bands == ["experience", "proof", "experience"] * 2  # equity chart, then size chart


def test_sessions_without_a_known_equity_still_get_a_hollow_point() -> None:
    records = [session(DAY0, "experience", None), session(DAY0 + timedelta(days=1),
                                                          "experience", "10.00")]

    checker = parsed(render_report("acct-1", records, None))

    assert checker.classes.count("session-point") == 2
    assert checker.classes.count("unknown-equity") == 1


def test_every_text_from_the_history_is_escaped() -> None:
    hostile = "<script>alert('x')</script>"
    records = [*ladder(), transition(DAY0 + timedelta(days=4), "experience", "proof",
                                     "advance", hostile)]
    gate = {**GATE, "criteria": [{"name": hostile, "required": "<marquee>", "actual": "&",
                                  "met": True}]}

    page = render_report("acct-1", records, gate)

    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "<marquee>" not in page
    assert "&lt;marquee&gt;" in page
    parsed(page)


def test_the_gate_table_shows_each_criterion_with_required_actual_and_met() -> None:
    page = render_report("acct-1", ladder(), GATE)

    assert "closed_days" in page
    assert "&gt;= 30" in page
    assert "no data" in page
    assert "not eligible" in page


def test_at_the_top_of_the_ladder_there_is_no_gate_table() -> None:
    page = render_report("acct-1", ladder(), None)

    assert "Top of the ladder" in page
    assert 'class="gate"' not in page


def test_an_empty_history_renders_an_empty_report() -> None:
    checker = parsed(render_report("acct-1", [], None))

    assert checker.classes.count("session-point") == 0


def test_the_timeline_lists_transitions_in_history_order() -> None:
    rows = timeline(ladder())

    assert [(r.trading_day, r.from_phase, r.to_phase, r.kind, r.reasons) for r in rows] == [
        (DAY0 + timedelta(days=1), "experience", "proof", "advance", ()),
        (DAY0 + timedelta(days=3), "proof", "experience", "downgrade",
         ("consecutive_losses: 3 in a row",))]


def test_sessions_of_keeps_the_latest_version_per_trading_day_in_day_order() -> None:
    rows = sessions_of(ladder())

    assert [r.day for r in rows] == [DAY0 + timedelta(days=i) for i in range(5)]
    assert rows[2].amended
    assert str(rows[2].end_equity) == "10075.00"


@pytest.mark.parametrize(
    "fields",
    [
        {b"type": b"transition", b"data": b"{not json"},
        {b"type": b"transition", b"data": b"[1, 2]"},
        {b"data": b"{}"},
    ],
)
def test_an_unreadable_history_entry_is_skipped(fields: dict[bytes, bytes]) -> None:
    assert decode_record(b"1-0", fields) is None


def test_history_decimals_are_read_exactly() -> None:
    record = decode_record(b"1-0", {b"type": b"session_closed",
                                    b"data": b'{"end_equity": 961425548.08470054}'})

    assert record is not None
    assert str(record.data["end_equity"]) == "961425548.08470054"
