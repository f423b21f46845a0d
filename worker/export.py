"""Streaming export of one account's history stream (R-8.3), in constant memory.

The stream is read in XRANGE pages of `PAGE` entries up to the entry that was last when the
export began (a snapshot), never loaded whole. One record type per file, a fixed column list per
kind, CSV or JSON Lines, with the summary as the CSV's first line (`# summary: {json}`) or the
JSON Lines' last line (`{"record_type": "summary", ...}`). docs/decisions.md ("Export and
archive") explains the choices.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from typing import Any, Final, Literal, NamedTuple, TextIO, get_args

import redis

from worker.domain.calendar import Calendar
from worker.store.keys import Keys
from worker.store.runtime import fetch_policy

Kind = Literal["sessions", "transitions", "overrides", "history"]
Fmt = Literal["csv", "jsonl"]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
FORMATS: Final[tuple[str, ...]] = get_args(Fmt)
PAGE: Final = 1000  # entries per XRANGE page: the export's memory does not depend on the stream
PREFETCH: Final = 32  # latest versions of amended days fetched per round trip
_COPY_CHUNK: Final = 64 * 1024  # characters per read when copying the CSV spool behind the summary

# The fixed columns of each kind (also the keys of a JSON Lines record, after `record_type`).
# A field that is a list or an object is written as JSON text in its CSV cell.
SESSION_COLUMNS: Final = (
    "entry_id", "trading_day", "phase", "position_size", "phases", "counted_trades", "wins",
    "losses", "breakevens", "emergency_exits", "gross_win_pnl", "gross_loss_pnl", "net_pnl",
    "start_equity", "end_equity", "breaker_trips", "denied_entries", "closed_implicitly",
    "amended", "currency", "occurred_at", "caused_by",
)  # fmt: skip
TRANSITION_COLUMNS: Final = (
    "entry_id", "transition_id", "trading_day", "occurred_at", "effective_at", "from_phase",
    "to_phase", "kind", "trigger", "validation_passed", "reasons", "operator_id",
    "override_used", "metrics", "policy_version", "validation", "caused_by",
)  # fmt: skip
OVERRIDE_COLUMNS: Final = (
    "entry_id", "trading_day", "at", "request_id", "operator_id", "action", "account_id",
    "expected_phase", "target_phase", "outcome", "reason", "detail", "request_reason",
)  # fmt: skip
# Every entry as stored: `data` is the stored JSON text, untouched; `extra` holds any field other
# than `type` and `data` as a JSON object (the worker writes none), so an archive loses nothing.
HISTORY_COLUMNS: Final = ("entry_id", "type", "data", "extra")

COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "sessions": SESSION_COLUMNS, "transitions": TRANSITION_COLUMNS,
    "overrides": OVERRIDE_COLUMNS, "history": HISTORY_COLUMNS,
}
RECORD_TYPE: Final[Mapping[str, str]] = {
    "sessions": "session", "transitions": "transition", "overrides": "override",
    "history": "history",
}


def _both(*names: str) -> frozenset[str | bytes]:
    """Entry types as text and as bytes: a client may or may not decode responses."""
    return frozenset([*names, *(n.encode() for n in names)])


_AMENDED: Final = _both("session_amended")
_SESSION_TYPES: Final = _both("session_closed", "session_amended")
_TYPES: Final[Mapping[str, frozenset[str | bytes]]] = {
    "sessions": _SESSION_TYPES, "transitions": _both("transition"),
    "overrides": _both("override_attempt"),
}

_DAY_RE: Final = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # ASCII digits only (fullmatch)
# A plain decimal number is never a formula, so "-12.50" keeps its sign (R-8.3 escapes text).
_NUMBER_RE: Final = re.compile(r"[+-]?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # (fullmatch)
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST: Final = frozenset(_FORMULA_START)
_CONVERT: Final = frozenset({bool, list, dict})  # cell types the csv module would write wrongly
# A rendered CSV row in which a cell may start like a formula: at the row start or after a comma,
# an opening quote then = + - @ tab CR, or unquoted = @ tab, or + - not followed by a plain number
# and the cell's end. A hit only means "check cell by cell"; a miss means no cell needs a prefix.
_SUSPECT_CELL: Final = (r'(?:"[=+\-@\t\r]|[=@\t\r]'
                        r'|[+-](?![0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?(?:,|\r\n\Z)))')
_SUSPECT_FIRST: Final = re.compile(_SUSPECT_CELL)  # matched at the row start
_SUSPECT_NEXT: Final = re.compile("," + _SUSPECT_CELL)  # a literal first: a fast search
_MAX_SIGNATURES: Final = 256  # row type signatures remembered (bounded: cleared when full)
# RFC 4180 line ends; the csv module then quotes any cell holding a CR or LF (with "\n" alone it
# would leave a bare CR unquoted and break the row for every reader)
_EOL: Final = "\r\n"
# Sums of money are exact: a precision no account's P&L comes near, so addition never rounds.
_EXACT: Final = Context(prec=200)
_Q4: Final = Decimal("0.0001")


def q4(value: Decimal) -> str:
    """A ratio as emitted (R-2.1): 4 places, half-even, in the exact context."""
    return str(value.quantize(_Q4, rounding=ROUND_HALF_EVEN, context=_EXACT))


class ExportError(ValueError):
    """The export cannot run as asked (bad kind, format or date range): tell the operator."""


# -- the range ------------------------------------------------------------------------------------


def parse_day(text: str, what: str = "date") -> date:
    """A `YYYY-MM-DD` date, or ExportError naming the bad value."""
    if not _DAY_RE.fullmatch(text):
        raise ExportError(f"{what} {text!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ExportError(f"{what} {text!r} is not a valid date: {exc}") from None


def check_request(kind: str, fmt: str, start: date | None, end: date | None) -> None:
    if kind not in KINDS:
        raise ExportError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    for name, day in (("--from", start), ("--to", end)):
        if day is not None and (isinstance(day, datetime) or not isinstance(day, date)):
            raise ExportError(f"{name} must be a date, not {type(day).__name__}")
    if start is not None and end is not None and start > end:
        raise ExportError(f"the range starts after it ends ({start} > {end})")


def passes(kind: str) -> int:
    """How many times an export of `kind` reads the stream (for a progress total)."""
    return 2 if kind == "sessions" else 1


# -- the summary ----------------------------------------------------------------------------------


@dataclass
class ExportSummary:
    """What an export wrote: counts, and for sessions total P&L, win rate and R:R."""

    account_id: str
    kind: str
    start: date | None
    end: date | None
    records: int = 0
    skipped: int = 0  # unreadable entries of the exported kind: bad JSON or wrong shape
    entries_read: int = 0  # stream entries read, every pass counted once
    last_entry_id: str | None = None  # the snapshot: no entry after it was read
    counted_trades: int = 0
    wins: int = 0
    losses: int = 0
    total_pnl: Decimal = field(default_factory=Decimal)
    gross_win: Decimal = field(default_factory=Decimal)
    gross_loss: Decimal = field(default_factory=Decimal)  # sum of gross_loss_pnl (<= 0)

    def add_session(self, s: _Session) -> None:
        self.counted_trades += s.counted
        self.wins += s.wins
        self.losses += s.losses
        self.total_pnl = _EXACT.add(self.total_pnl, s.net)
        self.gross_win = _EXACT.add(self.gross_win, s.gross_win)
        self.gross_loss = _EXACT.add(self.gross_loss, s.gross_loss)

    def win_rate(self) -> str | None:
        if self.counted_trades == 0:
            return None
        return q4(_EXACT.divide(Decimal(self.wins), Decimal(self.counted_trades)))

    def rr_unbounded(self) -> bool:
        return self.wins > 0 and (self.losses == 0 or self.gross_loss == 0)

    def rr(self) -> str | None:
        """Mean win / mean |loss| (R-2.4) from the sessions' counts and gross P&L sums."""
        if self.counted_trades == 0 or self.rr_unbounded():
            return None
        if self.wins == 0:
            return q4(Decimal(0))
        num = _EXACT.multiply(self.gross_win, Decimal(self.losses))
        den = _EXACT.multiply(_EXACT.minus(self.gross_loss), Decimal(self.wins))
        return q4(_EXACT.divide(num, den))

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "account_id": self.account_id, "kind": self.kind,
            "from": None if self.start is None else self.start.isoformat(),
            "to": None if self.end is None else self.end.isoformat(),
            "records": self.records, "skipped": self.skipped,
            "last_entry_id": self.last_entry_id,
        }
        if self.kind == "sessions":
            body.update({
                "total_pnl": str(self.total_pnl), "gross_win_pnl": str(self.gross_win),
                "gross_loss_pnl": str(self.gross_loss), "counted_trades": self.counted_trades,
                "wins": self.wins, "losses": self.losses, "win_rate": self.win_rate(),
                "rr": self.rr(), "rr_unbounded": self.rr_unbounded(),
            })
        return body


# -- reading --------------------------------------------------------------------------------------


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _text(v: object) -> str:
    """Stored bytes as text for `--kind history`: bytes that are not UTF-8 (the worker writes
    ASCII JSON) come out backslash-escaped instead of stopping the archive."""
    return v.decode("utf-8", "backslashreplace") if isinstance(v, bytes) else str(v)


def _field(fields: Mapping[Any, Any], name: str, raw: bytes) -> Any:
    """A field of an entry from a client with or without decode_responses."""
    value = fields.get(raw)
    return fields.get(name) if value is None else value


def _type(fields: Mapping[Any, Any]) -> Any:
    """The entry's `type`, bytes or text as the client returns it (compared against both)."""
    value = fields.get(b"type")
    return fields.get("type") if value is None else value


def _snapshot_end(client: redis.Redis, key: str) -> str | None:
    last: Any = client.xrevrange(key, "+", "-", count=1)
    return _s(last[0][0]) if last else None


def _entries(client: redis.Redis, key: str, end_id: str,
             progress: Callable[[int], None] | None,
             summary: ExportSummary) -> Iterator[tuple[Any, Mapping[Any, Any]]]:
    """Every entry up to `end_id`, oldest first, one page of PAGE entries in memory at a time.

    Ids come as the client returns them (bytes or text): callers convert the ones they write.
    """
    start = "-"
    while True:
        page: Any = client.xrange(key, start, end_id, count=PAGE)
        yield from page
        read = len(page)
        summary.entries_read += read
        if progress is not None and read:
            progress(read)
        if read < PAGE:
            return
        start = "(" + _s(page[-1][0])
        del page  # let this page go before the next one arrives: one page at a time


def _load(data: Any) -> dict[str, Any] | None:
    """The entry's JSON object (decimals exact), or None when it is not one."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        try:  # the worker's compact JSON: no surrounding blanks for decode() to look for
            body, end = _DECODER.raw_decode(text)
        except ValueError:
            end = -1
        if end != len(text):
            body = _DECODER.decode(text)  # blanks around it, or not JSON: decode() decides
    except (ValueError, TypeError):  # bad UTF-8 is a ValueError too; no data is a TypeError
        return None
    return body if type(body) is dict else None


def _day(value: Any) -> date | None:
    """A `YYYY-MM-DD` text as a date (fromisoformat alone would also take `2026-W11-2`)."""
    if type(value) is not str or len(value) != 10 or value[4] != "-" or value[7] != "-" \
            or not value.isascii():
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def _instant_day(value: Any, cal: Calendar) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    if at.tzinfo is None or at.utcoffset() is None:
        return None
    return cal.trading_day(at)


class _Session(NamedTuple):
    """A readable session record: its day and what the summary needs (a tuple: cheap to make)."""

    day: date
    counted: int
    wins: int
    losses: int
    gross_win: Decimal
    gross_loss: Decimal
    net: Decimal


_TO_DECIMAL: Final = (str, int)  # stored decimal strings; a JSON integer is exact too


def _session(body: dict[str, Any]) -> _Session | None:
    """The record's day and summary fields, or None when any is missing or malformed.

    Counts are JSON integers (never a bool, a float or a string); money is the stored decimal
    string (or an exact JSON number, a Decimal already), finite. Written flat: it runs per record.
    """
    get: Callable[[str], Any] = body.get
    day, counted, wins, losses = (get("trading_day"), get("counted_trades"), get("wins"),
                                  get("losses"))
    gross_win, gross_loss, net = get("gross_win_pnl"), get("gross_loss_pnl"), get("net_pnl")
    if (type(day) is not str or len(day) != 10 or day[4] != "-" or day[7] != "-"
            or not day.isascii() or type(counted) is not int or type(wins) is not int
            or type(losses) is not int or wins < 0 or losses < 0 or wins + losses > counted):
        return None
    try:
        day = date.fromisoformat(day)
        gross_win = Decimal(gross_win) if type(gross_win) in _TO_DECIMAL else gross_win
        gross_loss = Decimal(gross_loss) if type(gross_loss) in _TO_DECIMAL else gross_loss
        net = Decimal(net) if type(net) in _TO_DECIMAL else net
    except (ValueError, InvalidOperation):
        return None
    if (type(gross_win) is not Decimal or type(gross_loss) is not Decimal
            or type(net) is not Decimal or not gross_win.is_finite()
            or not gross_loss.is_finite() or not net.is_finite()):
        return None
    return _Session(day, counted, wins, losses, gross_win, gross_loss, net)


def _in_range(day: date, start: date | None, end: date | None) -> bool:
    return (start is None or day >= start) and (end is None or day <= end)


# -- writing --------------------------------------------------------------------------------------


def _json_default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)  # exactly as stored
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


# One encoder and one decoder for the module: json.dumps/loads with options build new ones per call.
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=_json_default)
_DECODER: Final = json.JSONDecoder(parse_float=Decimal)  # never a binary float
# The C encoder behind JSONEncoder, built once: JSONEncoder.encode builds it anew for every call,
# which costs more than encoding a session's small lists. No circular check (markers None): the
# values come from decoding JSON, which cannot make a cycle. Absent without the C accelerator.
_MAKE_C_ENCODER: Final[Any] = getattr(json.encoder, "c_make_encoder", None)  # not in typeshed
_C_ENCODE: Final[Any] = None if _MAKE_C_ENCODER is None else _MAKE_C_ENCODER(
    None, _json_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)


def _json(value: Any) -> str:
    """Compact JSON of a list or object (decimals as their exact strings)."""
    if _C_ENCODE is None:
        return _ENCODER.encode(value)
    return "".join(_C_ENCODE(value, 0))


def _text_cell(text: str) -> str:
    """Neutralise a spreadsheet formula (CSV injection): prefix it with an apostrophe."""
    if text and text.startswith(_FORMULA_START) and not _NUMBER_RE.fullmatch(text):
        return "'" + text
    return text


def cell(value: Any) -> str:
    """One CSV cell: null is empty, booleans are true/false, lists and objects are JSON text."""
    if value is None:
        return ""
    if isinstance(value, str):
        return _text_cell(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | Decimal):
        return str(value)
    return _text_cell(_json(value))


class _Line:
    """A file for csv.writer that keeps the one line each writerow writes."""

    text = ""

    def write(self, text: str) -> int:
        self.text = text
        return len(text)


class _Writer:
    """CSV rows go to a spool first (the summary must come first); JSON Lines go straight out.

    A CSV row is rendered as is, then searched once for a cell that could start a formula; only
    such a row is rendered again cell by cell through `cell` (the common row costs one regex
    search instead of a check per cell). Which cells the csv module would write wrongly (bools,
    lists, objects) is looked up by the row's type signature.
    """

    def __init__(self, out: TextIO, fmt: str, kind: str, spool_dir: str | None) -> None:
        self.out = out
        self.fmt = fmt
        self.columns = COLUMNS[kind]
        self.rest = self.columns[1:]  # entry_id is every kind's first column
        self.record_type = RECORD_TYPE[kind]
        self.spool: TextIO | None = None
        self.line = _Line()
        self.csv = csv.writer(self.line, lineterminator=_EOL)
        self.fixes: dict[tuple[type, ...], tuple[int, ...]] = {}
        if fmt == "csv":
            self.spool = tempfile.TemporaryFile(  # noqa: SIM115 - closed in finish/close
                "w+", encoding="utf-8", newline="", dir=spool_dir)

    def _fixes(self, values: list[Any]) -> tuple[int, ...]:
        sig = tuple(map(type, values))
        fix = self.fixes.get(sig)
        if fix is None:
            if len(self.fixes) >= _MAX_SIGNATURES:
                self.fixes.clear()
            fix = self.fixes[sig] = tuple(i for i, t in enumerate(sig) if t in _CONVERT)
        return fix

    def csv_line(self, values: list[Any]) -> str:
        """The CSV line of `values`, exactly as if every value had gone through `cell`."""
        for i in self._fixes(values):
            v = values[i]  # a bool, or a list or object: JSON text, never formula-like
            values[i] = ("true" if v else "false") if type(v) is bool else _json(v)
        self.csv.writerow(values)  # str, int, Decimal and None ("") as they are
        text = self.line.text
        if _SUSPECT_FIRST.match(text) or _SUSPECT_NEXT.search(text):
            self.csv.writerow([cell(v) for v in values])
        return self.line.text

    def row(self, entry_id: str, body: Mapping[str, Any]) -> None:
        values = [entry_id, *map(body.get, self.rest)]
        if self.spool is not None:
            self.spool.write(self.csv_line(values))
        else:
            record = {"record_type": self.record_type, **dict(zip(self.columns, values,
                                                                  strict=True))}
            self.out.write(_json(record) + "\n")

    def finish(self, summary: dict[str, Any]) -> None:
        if self.spool is None:
            self.out.write(_json({"record_type": "summary", **summary}) + "\n")
            return
        self.out.write("# summary: " + _json(summary) + _EOL)
        self.csv.writerow(self.columns)
        self.out.write(self.line.text)
        self.spool.seek(0)
        shutil.copyfileobj(self.spool, self.out, _COPY_CHUNK)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.close()


# -- the export -----------------------------------------------------------------------------------


def export(client: redis.Redis, keys: Keys, account_id: str, kind: str, fmt: str, out: TextIO,
           start: date | None = None, end: date | None = None,
           progress: Callable[[int], None] | None = None, *, calendar: Calendar | None = None,
           spool_dir: str | None = None) -> ExportSummary:
    """Write `account_id`'s records of `kind` whose trading day is in [start, end] to `out`.

    `progress(n)` is called after every page with the number of entries just read (a sessions
    export reads the stream `passes(kind)` times). CSV rows are spooled to an anonymous
    temporary file in `spool_dir` until the summary is known, then copied behind it.
    """
    check_request(kind, fmt, start, end)
    key = keys.history(keys.shard(account_id), account_id)
    summary = ExportSummary(account_id, kind, start, end)
    end_id = _snapshot_end(client, key)
    summary.last_entry_id = end_id
    if kind == "overrides" or (kind == "history" and (start or end)):
        calendar = calendar or Calendar(fetch_policy(client, keys).calendar)
    writer = _Writer(out, fmt, kind, spool_dir)
    try:
        if end_id is not None:
            if kind == "sessions":
                _sessions(client, key, end_id, writer, summary, progress)
            elif kind == "history":
                _history(client, key, end_id, writer, summary, progress, calendar)
            else:
                _records(client, key, end_id, kind, writer, summary, progress, calendar)
        writer.finish(summary.as_json())
    finally:
        writer.close()
    return summary


def _sessions(client: redis.Redis, key: str, end_id: str, writer: _Writer,
              summary: ExportSummary, progress: Callable[[int], None] | None) -> None:
    """Each session once, in its latest version, in trading-day order: two passes.

    Pass 1 keeps, for amended trading days in range only, the id of the day's last readable
    amendment (amendments always follow the close). Pass 2 writes a never-amended day at its
    close, and an amended day's latest version, fetched by id, where its close stands (so the
    file stays in close order); the day's other records are passed over. Memory: one page plus
    one small entry per amended day, never one per entry.
    """
    latest: dict[date, str] = {}
    for raw_id, data in _amendments(client, key, end_id, progress, summary):
        body = _load(data)
        rec = None if body is None else _session(body)
        if rec is not None and _in_range(rec.day, summary.start, summary.end):
            latest[rec.day] = _s(raw_id)
    written: set[date] = set()  # amended days already written (a subset of `latest`)
    versions = _Latest(client, key, latest)
    ranged = summary.start is not None or summary.end is not None
    for raw_id, fields in _entries(client, key, end_id, progress, summary):
        type_ = fields.get(b"type") or _type(fields)  # the bytes client first: phasectl's
        if type_ not in _SESSION_TYPES:
            continue
        body = _load(fields.get(b"data") or _field(fields, "data", b"data"))
        rec = None if body is None else _session(body)
        if body is None or rec is None:
            summary.skipped += 1
            continue
        if ranged and not _in_range(rec.day, summary.start, summary.end):
            continue
        entry_id = _s(raw_id)
        last = latest.get(rec.day)
        if last is not None:
            if rec.day in written or (entry_id != last and type_ in _AMENDED):
                continue  # superseded: the latest version is (or will be) written
            if entry_id != last:  # the close of an amended day: its latest version goes here
                entry_id, body, rec = versions.pop(rec.day) or (entry_id, body, rec)
            body["amended"] = True
            written.add(rec.day)
        writer.row(entry_id, body)
        summary.records += 1
        summary.add_session(rec)


def _amendments(client: redis.Redis, key: str, end_id: str,
                progress: Callable[[int], None] | None,
                summary: ExportSummary) -> Iterator[tuple[Any, Any]]:
    """(id, data) of every session_amended entry up to `end_id` (pass 1)."""
    for raw_id, fields in _entries(client, key, end_id, progress, summary):
        if _type(fields) in _AMENDED:
            yield raw_id, _field(fields, "data", b"data")


class _Latest:
    """Latest versions of amended days, fetched by id for the next PREFETCH amended days at once.

    Closes come in trading-day order, so one pipelined round trip serves the next PREFETCH
    amended days; at most PREFETCH parsed records are held.
    """

    def __init__(self, client: redis.Redis, key: str, latest: dict[date, str]) -> None:
        self.client = client
        self.key = key
        self.latest = latest
        self.days = sorted(latest)  # as small as `latest`
        self.cache: dict[date, tuple[str, dict[str, Any], _Session] | None] = {}

    def pop(self, day: date) -> tuple[str, dict[str, Any], _Session] | None:
        """The day's latest version (None if an archive took it since pass 1 read it)."""
        if day not in self.cache:
            self.cache.clear()
            start = bisect_left(self.days, day)
            batch = self.days[start:start + PREFETCH]
            pipe = self.client.pipeline(transaction=False)
            for d in batch:
                pipe.xrange(self.key, self.latest[d], self.latest[d])
            for d, rows in zip(batch, pipe.execute(), strict=True):
                body = _load(_field(rows[0][1], "data", b"data")) if rows else None
                rec = None if body is None else _session(body)
                self.cache[d] = None if body is None or rec is None else (
                    self.latest[d], body, rec)
        return self.cache.pop(day, None)


def _records(client: redis.Redis, key: str, end_id: str, kind: str, writer: _Writer,
             summary: ExportSummary, progress: Callable[[int], None] | None,
             cal: Calendar | None) -> None:
    """Transitions (their `trading_day`) or override attempts (`trading_day`, else `at`)."""
    wanted = _TYPES[kind]
    for raw_id, fields in _entries(client, key, end_id, progress, summary):
        if _type(fields) not in wanted:
            continue
        body = _load(_field(fields, "data", b"data"))
        day = None
        if body is not None:
            day = _day(body.get("trading_day"))
            if day is None and kind == "overrides" and cal is not None \
                    and body.get("trading_day") is None:
                day = _instant_day(body.get("at"), cal)
        if body is None or day is None:
            summary.skipped += 1
            continue
        if not _in_range(day, summary.start, summary.end):
            continue
        body["trading_day"] = day.isoformat()
        writer.row(_s(raw_id), body)
        summary.records += 1


def _history(client: redis.Redis, key: str, end_id: str, writer: _Writer,
             summary: ExportSummary, progress: Callable[[int], None] | None,
             cal: Calendar | None) -> None:
    """Every entry as stored; with a range, by `trading_day`, else the day of `at`/occurred_at."""
    ranged = summary.start is not None or summary.end is not None
    for raw_id, fields in _entries(client, key, end_id, progress, summary):
        stored = {_text(k): _text(v) for k, v in fields.items()}
        if ranged:
            body = _load(stored.get("data"))
            day = None if body is None else _history_day(body, cal)
            if day is None:
                summary.skipped += 1
                continue
            if not _in_range(day, summary.start, summary.end):
                continue
        extra = {k: v for k, v in stored.items() if k not in ("type", "data")}
        writer.row(_s(raw_id), {"type": stored.get("type"), "data": stored.get("data"),
                              "extra": extra or None})
        summary.records += 1


def _history_day(body: dict[str, Any], cal: Calendar | None) -> date | None:
    day = _day(body.get("trading_day"))
    if day is not None or cal is None:
        return day
    for name in ("at", "occurred_at"):
        day = _instant_day(body.get(name), cal)
        if day is not None:
            return day
    return None


def stream_id(text: str) -> tuple[int, int]:
    """A stream entry id as comparable numbers (`1700000000000-3` -> (1700000000000, 3))."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


__all__: Sequence[str] = [
    "COLUMNS", "FORMATS", "HISTORY_COLUMNS", "KINDS", "OVERRIDE_COLUMNS", "PAGE",
    "SESSION_COLUMNS", "TRANSITION_COLUMNS", "ExportError", "ExportSummary", "cell",
    "check_request", "export", "parse_day", "passes", "stream_id",
]
