"""An account's history as one self-contained HTML report (``phasectl report``).

``render_report`` is a pure function of the history records and the current gate: the equity
curve over phase bands with markers for transitions, breaker trips and unauthorized entries,
the position size, the gate's criteria, the phase timeline and the session table, as inline SVG
and tables with no external reference. ``read_history`` is the small Redis reader behind it.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from html import escape
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import redis

    from worker.store.keys import Keys

PHASE_COLORS: Final[Mapping[str, str]] = {
    "experience": "#9aa5b1", "proof": "#4c8bf5", "trial": "#f5a623", "scaling": "#2eb872",
}
KIND_COLORS: Final[Mapping[str, str]] = {
    "advance": "#1f9d55", "force_advance": "#8e44ad", "downgrade": "#d64545",
    "rollback": "#8e44ad",
}
_WIDTH: Final = 1000
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 16, 14, 34  # plot margins in SVG units
_X_TICKS: Final = 8
_Y_TICKS: Final = 5
_PAGE: Final = 1000  # history entries per XRANGE


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One entry of an account's history stream (R-8.1): its type and decoded body."""

    entry_id: str
    type: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SessionRow:
    """The latest version of one session record (R-2.7), by trading day."""

    day: date
    phase: str
    position_size: Decimal | None
    end_equity: Decimal | None
    net_pnl: Decimal | None
    counted: int
    wins: int
    losses: int
    emergency_exits: int
    breaker_trips: int
    denied: dict[str, int]
    implicit: bool
    amended: bool


@dataclass(frozen=True, slots=True)
class TimelineRow:
    """One phase transition (R-8.2) as the timeline shows it."""

    trading_day: date | None
    from_phase: str
    to_phase: str
    kind: str
    trigger: str
    reasons: tuple[str, ...]


# -- reading --------------------------------------------------------------------------------------


def _text(v: object) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def decode_record(entry_id: object, fields: Mapping[Any, Any]) -> HistoryRecord | None:
    """A history stream entry, or None when it is unreadable (skipped, never fatal)."""
    f = {_text(k): _text(v) for k, v in fields.items()}
    try:
        data = json.loads(f.get("data", "{}"), parse_float=Decimal)
    except ValueError:
        return None
    if not isinstance(data, dict) or "type" not in f:
        return None
    return HistoryRecord(_text(entry_id), f["type"], data)


def read_history(client: redis.Redis, keys: Keys, account_id: str) -> list[HistoryRecord]:
    """Every readable record of the account's history stream, oldest first, in pages."""
    key = keys.history(keys.shard(account_id), account_id)
    out: list[HistoryRecord] = []
    start = "-"
    while True:
        page: Any = client.xrange(key, start, "+", count=_PAGE)
        for entry_id, fields in page:
            record = decode_record(entry_id, fields)
            if record is not None:
                out.append(record)
        if len(page) < _PAGE:
            return out
        start = "(" + _text(page[-1][0])


# -- the data the report shows ---------------------------------------------------------------


def _dec(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def sessions_of(records: Iterable[HistoryRecord]) -> list[SessionRow]:
    """One row per trading day, its latest session_closed / session_amended version."""
    latest: dict[date, SessionRow] = {}
    for r in records:
        if r.type not in ("session_closed", "session_amended"):
            continue
        d = r.data
        day = _day(d.get("trading_day"))
        if day is None:
            continue
        denied = d.get("denied_entries")
        latest[day] = SessionRow(
            day=day, phase=str(d.get("phase", "?")), position_size=_dec(d.get("position_size")),
            end_equity=_dec(d.get("end_equity")), net_pnl=_dec(d.get("net_pnl")),
            counted=_int(d.get("counted_trades")), wins=_int(d.get("wins")),
            losses=_int(d.get("losses")), emergency_exits=_int(d.get("emergency_exits")),
            breaker_trips=_int(d.get("breaker_trips")),
            denied={str(k): _int(v) for k, v in denied.items()} if isinstance(denied, dict)
            else {},
            implicit=d.get("closed_implicitly") is True,
            amended=d.get("amended") is True or r.type == "session_amended")
    return [latest[day] for day in sorted(latest)]


def timeline(records: Iterable[HistoryRecord]) -> list[TimelineRow]:
    """The transitions in history order: date, from -> to, kind, trigger, reasons."""
    rows = []
    for r in records:
        if r.type != "transition":
            continue
        d = r.data
        reasons = d.get("reasons")
        rows.append(TimelineRow(
            _day(d.get("trading_day")), str(d.get("from_phase", "?")),
            str(d.get("to_phase", "?")), str(d.get("kind", "?")), str(d.get("trigger", "")),
            tuple(str(x) for x in reasons) if isinstance(reasons, list) else ()))
    return rows


@dataclass(frozen=True, slots=True)
class _Marker:
    css: str  # transition-marker | breaker-marker | unauthorized-marker
    slot: float  # position in session slots: i is the left edge of session i
    color: str
    label: str
    attrs: tuple[tuple[str, str], ...]


def _slot_of(days: Sequence[date], day: date | None, fallback: int) -> int:
    return fallback if day is None else bisect_left(days, day)


def markers_of(records: Sequence[HistoryRecord], sessions: Sequence[SessionRow]) -> list[_Marker]:
    """Transitions at the left edge of the first session they shaped (where its band starts);
    breaker trips and unauthorized entries in the middle of their session."""
    days = [s.day for s in sessions]
    out: list[_Marker] = []
    closed_seen = 0  # session records before this record: the session open at the time
    for r in records:
        d = r.data
        if r.type == "session_closed":
            closed_seen += 1
        elif r.type == "transition":
            row = timeline([r])[0]
            slot = _slot_of(days, row.trading_day, closed_seen)
            label = (f"{row.trading_day or '?'}: {row.from_phase} → {row.to_phase} ({row.kind}"
                     f"{', ' + row.trigger if row.trigger else ''})"
                     + (f" — {'; '.join(row.reasons)}" if row.reasons else ""))
            out.append(_Marker("transition-marker", slot,
                               KIND_COLORS.get(row.kind, "#555555"), label,
                               (("kind", row.kind), ("from", row.from_phase),
                                ("to", row.to_phase), ("day", str(row.trading_day or "")))))
        elif r.type == "breaker_tripped":
            day = _day(d.get("trading_day"))
            raw_reasons = d.get("reasons")
            reasons = raw_reasons if isinstance(raw_reasons, list) else []
            slot = _slot_of(days, day, closed_seen)
            why = ", ".join(map(str, reasons))
            out.append(_Marker("breaker-marker", slot + 0.5, "#b00020",
                               f"{day or '?'}: circuit breaker tripped ({why})",
                               (("day", str(day or "")),)))
        elif r.type == "unauthorized_entry":
            out.append(_Marker("unauthorized-marker", min(closed_seen, len(days)) + 0.5,
                               "#e67e00",
                               f"unauthorized entry {d.get('trade_id', '?')}: "
                               f"{d.get('reason', '')}",
                               (("trade", str(d.get("trade_id", ""))),)))
    return out


# -- SVG helpers -----------------------------------------------------------------------------------


def _a(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    return f"{value:.1f}"


def _nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """About ``count`` round tick values (steps of 1, 2, 2.5 or 5 x 10^n) within [lo, hi]."""
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = magnitude * 10
    for factor in (1, 2, 2.5, 5):
        if raw <= magnitude * factor:
            step = magnitude * factor
            break
    ticks = []
    value = math.ceil(lo / step) * step
    while value <= hi:
        ticks.append(value)
        value += step
    return ticks


def _money(value: Decimal | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.4g}"
    return f"{value:,}"


class _Plot:
    """Coordinates of one chart: session slots on x, a value range on y."""

    def __init__(self, n: int, height: int, lo: float, hi: float) -> None:
        self.n = max(n, 1)
        self.height = height
        pad = (hi - lo) * 0.06 or max(abs(hi) * 0.06, 1.0)
        self.lo, self.hi = lo - pad, hi + pad
        self.width = _WIDTH - _LEFT - _RIGHT
        self.bottom = height - _BOTTOM

    def x(self, slot: float) -> float:
        return _LEFT + slot * self.width / self.n

    def y(self, value: float) -> float:
        span = self.hi - self.lo
        return self.bottom - (value - self.lo) / span * (self.bottom - _TOP)


def _bands(plot: _Plot, sessions: Sequence[SessionRow]) -> list[str]:
    out = []
    i = 0
    while i < len(sessions):
        j = i
        while j + 1 < len(sessions) and sessions[j + 1].phase == sessions[i].phase:
            j += 1
        phase = sessions[i].phase
        x0, x1 = plot.x(i), plot.x(j + 1)
        out.append(
            f'<rect class="phase-band" data-phase="{_a(phase)}" x="{_num(x0)}" y="{_TOP}" '
            f'width="{_num(x1 - x0)}" height="{_num(plot.bottom - _TOP)}" '
            f'fill="{PHASE_COLORS.get(phase, "#cccccc")}" fill-opacity="0.18">'
            f"<title>{_a(phase)}: {_a(sessions[i].day)} … {_a(sessions[j].day)}</title></rect>")
        i = j + 1
    return out


def _axes(plot: _Plot, sessions: Sequence[SessionRow], ticks: list[float]) -> list[str]:
    out = [f'<line class="axis" x1="{_LEFT}" y1="{_num(plot.bottom)}" '
           f'x2="{_num(plot.x(plot.n))}" y2="{_num(plot.bottom)}" />']
    for t in ticks:
        y = plot.y(t)
        if not _TOP - 1 <= y <= plot.bottom + 1:
            continue
        out.append(f'<line class="grid" x1="{_LEFT}" y1="{_num(y)}" x2="{_num(plot.x(plot.n))}" '
                   f'y2="{_num(y)}" />')
        out.append(f'<text class="tick" x="{_LEFT - 6}" y="{_num(y + 4)}" '
                   f'text-anchor="end">{_a(_money(t))}</text>')
    if sessions:
        step = max(1, len(sessions) // _X_TICKS)
        for i in range(0, len(sessions), step):
            x = plot.x(i + 0.5)
            # a date is about 64 units wide: keep the last ones inside the chart
            anchor = "end" if x + 32 > _WIDTH - _RIGHT else "middle"
            out.append(f'<text class="tick" x="{_num(x)}" y="{_num(plot.bottom + 16)}" '
                       f'text-anchor="{anchor}">{_a(sessions[i].day)}</text>')
    return out


def _marker_svg(plot: _Plot, m: _Marker) -> str:
    x = plot.x(m.slot)
    data = " ".join(f'data-{k}="{_a(v)}"' for k, v in m.attrs)
    title = f"<title>{_a(m.label)}</title>"
    if m.css == "transition-marker":
        up = ("advance" in dict(m.attrs).get("kind", ""))
        tip = _TOP + (0 if up else 9)
        base = _TOP + (9 if up else 0)
        return (f'<g class="transition-marker" {data}>{title}'
                f'<line x1="{_num(x)}" y1="{_TOP}" x2="{_num(x)}" y2="{_num(plot.bottom)}" '
                f'stroke="{m.color}" stroke-width="1.5" stroke-dasharray="4 3" />'
                f'<polygon points="{_num(x - 6)},{base} {_num(x + 6)},{base} {_num(x)},{tip}" '
                f'fill="{m.color}" /></g>')
    y = plot.bottom - 8
    if m.css == "breaker-marker":
        return (f'<g class="breaker-marker" {data}>{title}'
                f'<rect x="{_num(x - 5)}" y="{_num(y - 5)}" width="10" height="10" '
                f'transform="rotate(45 {_num(x)} {_num(y)})" fill="{m.color}" /></g>')
    return (f'<g class="unauthorized-marker" {data}>{title}'
            f'<circle cx="{_num(x)}" cy="{_num(y - 14)}" r="6" fill="{m.color}" />'
            f'<text x="{_num(x)}" y="{_num(y - 10)}" text-anchor="middle" class="bang">!</text>'
            f"</g>")


def equity_svg(sessions: Sequence[SessionRow], markers: Sequence[_Marker],
               currency: str) -> str:
    """The equity curve: one point per session (class session-point) over phase bands."""
    height = 340
    known = [float(s.end_equity) for s in sessions if s.end_equity is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    plot = _Plot(len(sessions), height, lo, hi)
    parts = [f'<svg class="chart equity" viewBox="0 0 {_WIDTH} {height}" role="img" '
             f'aria-label="equity per session in {_a(currency)}">']
    parts += _bands(plot, sessions)
    parts += _axes(plot, sessions, _nice_ticks(plot.lo, plot.hi, _Y_TICKS))
    line = [f"{_num(plot.x(i + 0.5))},{_num(plot.y(float(s.end_equity)))}"
            for i, s in enumerate(sessions) if s.end_equity is not None]
    if line:
        parts.append(f'<polyline class="equity-line" points="{" ".join(line)}" />')
    for i, s in enumerate(sessions):
        x = plot.x(i + 0.5)
        known_equity = s.end_equity is not None
        y = plot.y(float(s.end_equity)) if s.end_equity is not None else plot.bottom
        title = (f"{s.day} · {s.phase} · equity {_money(s.end_equity)} {currency} · net "
                 f"{_money(s.net_pnl)} · {s.counted} trades ({s.wins} won, {s.losses} lost)")
        css = "session-point" if known_equity else "session-point unknown-equity"
        parts.append(f'<circle class="{css}" data-day="{s.day}" data-phase="{_a(s.phase)}" '
                     f'data-equity="{_a(s.end_equity if known_equity else "")}" '
                     f'cx="{_num(x)}" cy="{_num(y)}" r="2.6">'
                     f"<title>{_a(title)}</title></circle>")
    parts += [_marker_svg(plot, m) for m in markers]
    parts.append("</svg>")
    return "".join(parts)


def size_svg(sessions: Sequence[SessionRow], currency: str) -> str:
    """Position size at each session's close, as a step line over the phase bands."""
    height = 200
    sizes = [float(s.position_size) for s in sessions if s.position_size is not None]
    plot = _Plot(len(sessions), height, 0.0, max(sizes, default=1.0) or 1.0)
    parts = [f'<svg class="chart size" viewBox="0 0 {_WIDTH} {height}" role="img" '
             f'aria-label="position size per session in {_a(currency)}">']
    parts += _bands(plot, sessions)
    parts += _axes(plot, sessions, _nice_ticks(0.0, plot.hi, 4))
    path: list[str] = []
    for i, s in enumerate(sessions):
        if s.position_size is None:
            continue
        y = _num(plot.y(float(s.position_size)))
        path.append(f"{'M' if not path else 'L'} {_num(plot.x(i))} {y}")
        path.append(f"L {_num(plot.x(i + 1))} {y}")
    if path:
        parts.append(f'<path class="size-line" d="{" ".join(path)}" />')
    parts.append("</svg>")
    return "".join(parts)


# -- HTML ------------------------------------------------------------------------------------

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1060px;padding:0 16px;color:#1f2933;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.muted{color:#616e7c}.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{border:1px solid #d9e2ec;border-radius:6px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:17px}
.chart{width:100%;height:auto;border:1px solid #e4e7eb;border-radius:6px;background:#fff}
.grid{stroke:#e4e7eb;stroke-width:1}.axis{stroke:#9aa5b1;stroke-width:1}
.tick{font-size:11px;fill:#616e7c}.equity-line{fill:none;stroke:#1f2933;stroke-width:1.4}
.size-line{fill:none;stroke:#1f2933;stroke-width:1.6}
.session-point{fill:#1f2933}.session-point.unknown-equity{fill:#fff;stroke:#9aa5b1}
.bang{font-size:10px;font-weight:bold;fill:#fff}
.legend{display:flex;flex-wrap:wrap;gap:14px;margin:6px 0;font-size:13px}
.sw{display:inline-block;width:12px;height:12px;border-radius:2px;margin-right:5px;
vertical-align:-1px}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:left;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.yes{color:#1f9d55;font-weight:600}.no{color:#d64545;font-weight:600}
.scroll{max-height:520px;overflow:auto;border:1px solid #e4e7eb;border-radius:6px}
.scroll th{position:sticky;top:0;background:#f5f7fa}
.phase{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:12px}
"""


def _phase_tag(phase: str) -> str:
    return (f'<span class="phase" style="background:{PHASE_COLORS.get(phase, "#7b8794")}">'
            f"{escape(phase)}</span>")


def _table(headers: Sequence[tuple[str, bool]], rows: Iterable[Sequence[str]],
           css: str) -> str:
    head = "".join(f'<th class="n">{escape(h)}</th>' if numeric else f"<th>{escape(h)}</th>"
                   for h, numeric in headers)
    body = []
    for row in rows:
        cells = "".join(f'<td class="n">{cell}</td>' if numeric else f"<td>{cell}</td>"
                        for cell, (_h, numeric) in zip(row, headers, strict=True))
        body.append(f"<tr>{cells}</tr>")
    return (f'<table class="{css}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _gate_html(gate: Mapping[str, Any] | None) -> str:
    if gate is None:
        return '<p class="muted">Top of the ladder: no further gate.</p>'
    verdict = ('<span class="yes">eligible</span>' if gate.get("eligible")
               else '<span class="no">not eligible</span>')
    rows = []
    for c in gate.get("criteria", []):
        actual = c.get("actual")
        shown = "unbounded" if c.get("rr_unbounded") else ("no data" if actual is None
                                                           else str(actual))
        met = '<span class="yes">yes</span>' if c.get("met") else '<span class="no">no</span>'
        rows.append([escape(str(c.get("name", ""))), escape(str(c.get("required", ""))),
                     escape(shown), met, escape(str(c.get("reason", "")))])
    title = (f"<p>{_phase_tag(str(gate.get('from_phase', '?')))} → "
             f"{_phase_tag(str(gate.get('to_phase', '?')))} {verdict}</p>")
    return title + _table([("criterion", False), ("required", True), ("actual", True),
                           ("met", False), ("note", False)], rows, "gate")


def _timeline_html(rows: Sequence[TimelineRow]) -> str:
    if not rows:
        return '<p class="muted">No phase transitions yet.</p>'
    return _table(
        [("trading day", False), ("from → to", False), ("kind", False), ("trigger", False),
         ("reasons", False)],
        ([escape(str(r.trading_day or "?")),
          f"{_phase_tag(r.from_phase)} → {_phase_tag(r.to_phase)}", escape(r.kind),
          escape(r.trigger), escape("; ".join(r.reasons))] for r in rows), "timeline")


def _sessions_html(sessions: Sequence[SessionRow]) -> str:
    def denied(s: SessionRow) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(s.denied.items()))

    rows = ([escape(str(s.day)), _phase_tag(s.phase), escape(_money(s.position_size)),
             str(s.counted), str(s.wins), str(s.losses), escape(_money(s.net_pnl)),
             escape(_money(s.end_equity)), str(s.breaker_trips) if s.breaker_trips else "",
             escape(denied(s)),
             escape(" ".join(f for f, on in (("implicit", s.implicit), ("amended", s.amended))
                             if on))]
            for s in sessions)
    return '<div class="scroll">' + _table(
        [("trading day", False), ("phase", False), ("size", True), ("trades", True),
         ("won", True), ("lost", True), ("net P&L", True), ("end equity", True),
         ("trips", True), ("denied entries", False), ("flags", False)],
        rows, "sessions") + "</div>"


def _legend() -> str:
    phases = "".join(f'<span><span class="sw" style="background:{c};opacity:.45"></span>'
                     f"{escape(p)}</span>" for p, c in PHASE_COLORS.items())
    marks = (f'<span><span class="sw" style="background:{KIND_COLORS["advance"]}"></span>'
             "advance</span>"
             f'<span><span class="sw" style="background:{KIND_COLORS["downgrade"]}"></span>'
             "downgrade</span>"
             '<span><span class="sw" style="background:#b00020"></span>breaker trip</span>'
             '<span><span class="sw" style="background:#e67e00"></span>unauthorized entry'
             "</span>")
    return f'<div class="legend">{phases}{marks}</div>'


def render_report(account_id: str, records: Sequence[HistoryRecord],
                  gate: Mapping[str, Any] | None, *, currency: str | None = None,
                  phase: str | None = None) -> str:
    """The whole report as one HTML document; every text is escaped, nothing is fetched."""
    sessions = sessions_of(records)
    rows = timeline(records)
    markers = markers_of(records, sessions)
    cur = currency or next((str(r.data["currency"]) for r in records
                            if r.type == "session_closed" and "currency" in r.data), "")
    now_phase = phase or (sessions[-1].phase if sessions else "experience")
    known = [s.end_equity for s in sessions if s.end_equity is not None]
    net = sum((s.net_pnl for s in sessions if s.net_pnl is not None), Decimal(0))
    trips = sum(1 for r in records if r.type == "breaker_tripped")
    unauthorized = sum(1 for r in records if r.type == "unauthorized_entry")
    downgrades = sum(1 for r in rows if r.kind == "downgrade")
    cards = [
        ("phase now", _phase_tag(now_phase)), ("sessions", str(len(sessions))),
        ("counted trades", str(sum(s.counted for s in sessions))),
        ("net P&L", escape(f"{_money(net)} {cur}")),
        ("equity at close", escape(f"{_money(known[0]) if known else '—'} → "
                          f"{_money(known[-1]) if known else '—'}")),
        ("transitions", str(len(rows))), ("downgrades", str(downgrades)),
        ("breaker trips", str(trips)), ("unauthorized entries", str(unauthorized)),
    ]
    period = (f"{sessions[0].day} … {sessions[-1].day}" if sessions else "no closed session yet")
    return "".join([
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Phaseguard report: {escape(account_id)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Phaseguard report: {escape(account_id)}</h1>",
        f'<p class="muted">{escape(period)} · currency {escape(cur or "?")}</p>',
        '<div class="cards">',
        "".join(f'<div class="card"><span class="muted">{escape(k)}</span><b>{v}</b></div>'
                for k, v in cards),
        "</div>",
        "<h2>Equity at each session's close</h2>", _legend(),
        equity_svg(sessions, markers, cur),
        "<h2>Position size</h2>", size_svg(sessions, cur),
        "<h2>Next gate</h2>", _gate_html(gate),
        "<h2>Phase timeline</h2>", _timeline_html(rows),
        "<h2>Sessions</h2>", _sessions_html(sessions),
        "</body></html>\n",
    ])


__all__ = ["HistoryRecord", "SessionRow", "TimelineRow", "decode_record", "markers_of",
           "read_history", "render_report", "sessions_of", "timeline"]
