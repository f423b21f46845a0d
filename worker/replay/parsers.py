"""Turn a closed-trade history file into ``ReplayTrade`` values for ``phasectl replay``.

Owns the three input formats (freqtrade backtest JSON, TradingView "List of trades" CSV, generic
CSV; see docs/replay-formats.md). The ``parse_*`` functions take the file's text and are pure; they
know nothing of Redis, the policy or the trading calendar. Only ``detect_format`` and
``parse_history`` read a file.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

TradeKind = Literal["regular", "emergency_exit", "manual"]
ReplayFormat = Literal["freqtrade", "tradingview", "generic"]

# Why the whole file was refused; the CLI maps every code to one line for the operator.
FormatErrorCode = Literal[
    "not_text",  # the bytes are not UTF-8
    "not_json",  # a .json file (or one starting with "{") that does not parse
    "not_csv",  # the csv module cannot read it (bad quoting, NUL bytes)
    "unknown_format",  # none of the three formats
    "wrong_header",  # a CSV header missing, duplicating or inventing columns
    "strategy_required",  # a freqtrade export with several strategies and none chosen
    "unknown_strategy",  # the chosen strategy is not in the export
    "bad_argument",  # an argument that does not apply to the format (strategy for a CSV)
    "unknown_timezone",  # tz is not an IANA zone name
    "timezone_required",  # a naive timestamp in a generic CSV and no tz given
    "currency_required",  # no currency in the file and none given
    "currency_mismatch",  # the caller's currency differs from the file's
    "bad_currency",  # a currency code that is not 2-12 upper-case letters or digits
    "no_trades",  # nothing left to replay
    "cannot_scale",  # scale_to_size on a trade with neither return ratio nor stake
]

# Why one row (CSV) or one trade (JSON) was skipped.
ProblemCode = Literal[
    "malformed",  # wrong number of fields, or a JSON trade that is not an object
    "missing_value",  # a required field is empty or absent
    "bad_number",  # not a decimal number
    "non_finite",  # NaN or an infinity
    "bad_timestamp",  # not a date and time, or a local time a DST change skips
    "bad_kind",  # kind not regular / emergency_exit / manual
    "bad_type",  # TradingView Type not "Entry|Exit long|short"
    "closed_before_opened",
    "trade_id_too_long",  # more than 128 characters
    "duplicate_trade_id",
    "open_trade",  # still open in the source (freqtrade is_open, TradingView signal "Open")
    "unpaired_entry",  # TradingView entry row without its exit: an open trade
    "unpaired_exit",  # TradingView exit row without its entry
    "mismatched_direction",  # TradingView entry long / exit short under one trade number
]

MAX_TRADE_ID_LENGTH: Final = 128
DEFAULT_TRADINGVIEW_TZ: Final = "America/New_York"  # the export carries no zone; see the docs
CENTS: Final = Decimal("0.01")
# Explicit context so results never depend on the caller's thread-local decimal context.
_DECIMAL: Final = Context(prec=34, rounding=ROUND_HALF_EVEN)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_CURRENCY_RE: Final = re.compile(r"[A-Z0-9]{2,12}")
_EMERGENCY_EXIT_REASONS: Final = frozenset(
    # freqtrade's ExitType values; *_sell are the pre-2022 spellings of the same exits.
    {"force_exit", "emergency_exit", "force_sell", "emergency_sell"}
)
_TRADE_KINDS: Final[Mapping[str, TradeKind]] = {
    "regular": "regular",
    "emergency_exit": "emergency_exit",
    "manual": "manual",
}


class ReplayFormatError(ValueError):
    """The file (or an argument) cannot be replayed at all; the operator must fix the input."""

    def __init__(self, message: str, *, code: FormatErrorCode = "unknown_format") -> None:
        super().__init__(message)
        self.message = message
        self.code: FormatErrorCode = code


@dataclass(frozen=True, slots=True)
class ReplayTrade:
    """One closed trade, as the replay will publish it (in the source's currency)."""

    trade_id: str
    opened_at: datetime
    closed_at: datetime
    pnl: Decimal
    kind: TradeKind
    equity_after: Decimal | None
    return_ratio: Decimal | None
    stake: Decimal | None
    symbol: str | None
    source_line: int


@dataclass(frozen=True, slots=True)
class ParseProblem:
    """A skipped row: ``line`` is the 1-based CSV line, or the trade's 1-based index in JSON."""

    line: int
    reason: str
    code: ProblemCode = "malformed"


@dataclass(frozen=True, slots=True)
class ParsedHistory:
    format: ReplayFormat
    currency: str
    trades: tuple[ReplayTrade, ...]  # sorted by (opened_at, closed_at, trade_id)
    skipped: tuple[ParseProblem, ...]  # sorted by line


class _RowError(Exception):
    """Internal: the current row is skipped for this reason."""

    def __init__(self, code: ProblemCode, reason: str) -> None:
        super().__init__(reason)
        self.code: ProblemCode = code
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# Entry points


def detect_format(path: Path) -> ReplayFormat:
    """Name the format of ``path`` from its extension and content; ReplayFormatError if none."""
    return _sniff(_read_text(path), path.suffix)[0]


def parse_history(
    path: Path,
    *,
    tz: str | None = None,
    currency: str | None = None,
    strategy: str | None = None,
) -> ParsedHistory:
    """Read, detect and parse ``path``.

    ``tz`` localises naive timestamps (TradingView: default America/New_York; generic: required
    only when a timestamp is naive; freqtrade: unused, its dates are UTC). ``currency`` is required
    for generic CSV and, for the other formats, must match the file's own currency when given.
    ``strategy`` picks one strategy of a multi-strategy freqtrade export.
    """
    text = _read_text(path)
    fmt, document = _sniff(text, path.suffix)
    if strategy is not None and fmt != "freqtrade":
        raise ReplayFormatError(
            f"strategy {strategy!r} applies only to freqtrade exports, not to a {fmt} file",
            code="bad_argument",
        )
    if fmt == "freqtrade":
        history = _freqtrade_from_document(document, strategy, currency)
    elif fmt == "tradingview":
        history = parse_tradingview(text, DEFAULT_TRADINGVIEW_TZ if tz is None else tz)
    else:
        history = parse_generic(text, tz, currency)
    if currency is not None and currency != history.currency:
        raise ReplayFormatError(
            f"the file's currency is {history.currency}, not {currency}",
            code="currency_mismatch",
        )
    return history


def parse_freqtrade(
    text: str, strategy: str | None = None, *, currency: str | None = None
) -> ParsedHistory:
    """Parse a freqtrade backtest export; ``currency`` is only a fallback for exports without
    ``stake_currency`` (and must agree with it otherwise)."""
    return _freqtrade_from_document(_load_json(text), strategy, currency)


def parse_tradingview(text: str, tz: str = DEFAULT_TRADINGVIEW_TZ) -> ParsedHistory:
    """Parse a TradingView "List of trades" CSV whose naive dates are wall-clock times in ``tz``."""
    zone = _zone(tz)
    rows = _csv_rows(text)
    header_line, header = _header(rows, "TradingView")
    columns = _column_index(header)
    pnl_columns = [name for name in header if name.startswith("Net PnL ")]
    missing = [name for name in ("Trade number", "Type", "Date and time") if name not in columns]
    if len(pnl_columns) != 1:
        missing.append("Net PnL <currency>")
    if missing:
        raise ReplayFormatError(
            f"line {header_line}: not a TradingView list of trades, missing column(s) "
            + ", ".join(repr(name) for name in missing),
            code="wrong_header",
        )
    currency = _valid_currency(pnl_columns[0].removeprefix("Net PnL ").strip())
    pnl_at = columns[pnl_columns[0]]

    problems: list[ParseProblem] = []
    # trade number -> rows in file order; a trade with any bad row is dropped as a whole.
    entries: dict[int, list[tuple[int, _TvRow]]] = {}
    exits: dict[int, list[tuple[int, _TvRow]]] = {}
    broken: set[int] = set()
    order: list[int] = []
    number_at = columns["Trade number"]
    for line, fields in rows:
        try:
            number = _positive_int(
                fields[number_at] if number_at < len(fields) else "", "Trade number"
            )
        except _RowError as error:
            problem = _field_count_problem(line, len(header), len(fields))
            if len(fields) == len(header):
                problem = ParseProblem(line, error.reason, error.code)
            problems.append(problem)
            continue
        if number not in entries and number not in exits and number not in broken:
            order.append(number)
        try:
            if len(fields) != len(header):
                raise _RowError("malformed", f"expected {len(header)} fields, got {len(fields)}")
            row = _tradingview_row(fields, columns, pnl_at, zone, tz)
        except _RowError as error:
            problems.append(
                ParseProblem(line, f"{error.reason}; trade {number} skipped", error.code)
            )
            broken.add(number)
            continue
        (entries if row.is_entry else exits).setdefault(number, []).append((line, row))

    candidates: list[ReplayTrade] = []
    for number in order:
        if number in broken:
            continue
        try:
            candidates.append(_tradingview_trade(number, entries.get(number), exits.get(number)))
        except _TradeSkipped as skipped:
            problems.append(ParseProblem(skipped.line, skipped.reason, skipped.code))
    return _finish("tradingview", currency, candidates, problems)


def parse_generic(text: str, tz: str | None = None, currency: str | None = None) -> ParsedHistory:
    """Parse ``trade_id,opened_at,closed_at,pnl[,kind,equity_after,symbol]`` CSV text.

    Timestamps are ISO 8601; naive ones are read as wall-clock time in ``tz`` (a naive timestamp
    with no ``tz`` refuses the file). ``currency`` is required: the format does not carry one.
    """
    if currency is None:
        raise ReplayFormatError(
            "a generic CSV carries no currency: give the account currency", code="currency_required"
        )
    currency = _valid_currency(currency)
    zone = None if tz is None else _zone(tz)
    rows = _csv_rows(text)
    header_line, header = _header(rows, "generic")
    _check_generic_header(header_line, header)
    columns = _column_index(header)

    problems: list[ParseProblem] = []
    candidates: list[ReplayTrade] = []
    for line, fields in rows:
        if len(fields) != len(header):
            problems.append(_field_count_problem(line, len(header), len(fields)))
            continue
        try:
            candidates.append(_generic_trade(line, fields, columns, zone))
        except _RowError as error:
            problems.append(ParseProblem(line, error.reason, error.code))
    return _finish("generic", currency, candidates, problems)


def scale_to_size(trade: ReplayTrade, size: Decimal) -> Decimal:
    """The trade's P&L had it been opened with ``size``: return_ratio x size (else pnl x size /
    stake), quantized to cents half-even."""
    if not size.is_finite() or size < 0:
        raise ValueError(f"size must be a finite decimal >= 0, got {size}")
    if trade.return_ratio is not None:
        scaled = _DECIMAL.multiply(trade.return_ratio, size)
    elif trade.stake is not None and trade.stake > 0:
        scaled = _DECIMAL.divide(_DECIMAL.multiply(trade.pnl, size), trade.stake)
    else:
        raise ReplayFormatError(
            f"trade {trade.trade_id} has neither a return ratio nor a stake, so it cannot be "
            "scaled to the phase size",
            code="cannot_scale",
        )
    return scaled.quantize(CENTS, rounding=ROUND_HALF_EVEN, context=_DECIMAL)


# ---------------------------------------------------------------------------------------------
# File reading and sniffing


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ReplayFormatError(
            f"{path.name} is not UTF-8 text (byte {error.start})", code="not_text"
        ) from None


def _sniff(text: str, suffix: str) -> tuple[ReplayFormat, Any]:
    """The format, and for JSON the already-decoded document (so it is parsed once)."""
    if suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        document = _load_json(text)
        if isinstance(document, dict) and isinstance(document.get("strategy"), dict):
            return "freqtrade", document
        raise ReplayFormatError(
            "JSON without a top-level 'strategy' object is not a freqtrade backtest export",
            code="unknown_format",
        )
    rows = _csv_rows(text)
    if rows:
        header = rows[0][1]
        if "Trade number" in header:
            return "tradingview", None
        if header and header[0] == "trade_id":
            return "generic", None
    raise ReplayFormatError(
        "not a freqtrade backtest JSON, a TradingView list of trades (a 'Trade number' column) "
        "or a generic CSV (header starting with trade_id)",
        code="unknown_format",
    )


def _load_json(text: str) -> Any:
    try:
        # parse_float keeps every number exactly as written; NaN/Infinity become Decimal
        # specials so the trade holding them is reported instead of crashing the parse.
        return json.loads(text, parse_float=Decimal, parse_constant=Decimal)
    except json.JSONDecodeError as error:
        raise ReplayFormatError(
            f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}",
            code="not_json",
        ) from None


def _csv_rows(text: str) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records with the 1-based line each starts on, fields stripped."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    rows: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for record in reader:
            if any(field.strip() for field in record):
                rows.append((start, [field.strip() for field in record]))
            start = reader.line_num + 1
    except csv.Error as error:
        raise ReplayFormatError(f"line {reader.line_num}: {error}", code="not_csv") from None
    return rows


def _header(rows: list[tuple[int, list[str]]], what: str) -> tuple[int, list[str]]:
    if not rows:
        raise ReplayFormatError(f"the {what} CSV is empty", code="no_trades")
    line, header = rows.pop(0)
    if len(set(header)) != len(header):
        raise ReplayFormatError(f"line {line}: the header repeats a column", code="wrong_header")
    return line, header


def _column_index(header: list[str]) -> dict[str, int]:
    return {name: index for index, name in enumerate(header)}


def _field_count_problem(line: int, expected: int, got: int) -> ParseProblem:
    return ParseProblem(line, f"expected {expected} fields, got {got}", "malformed")


# ---------------------------------------------------------------------------------------------
# Shared value parsing


def _zone(tz: str) -> tzinfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReplayFormatError(
            f"unknown timezone {tz!r}: give an IANA name such as America/New_York",
            code="unknown_timezone",
        ) from None


def _valid_currency(currency: str) -> str:
    if not _CURRENCY_RE.fullmatch(currency):
        raise ReplayFormatError(
            f"currency {currency!r} is not a code of 2-12 upper-case letters or digits",
            code="bad_currency",
        )
    return currency


def _decimal_text(raw: str, field: str) -> Decimal:
    if not raw:
        raise _RowError("missing_value", f"{field} is empty")
    try:
        # U+2212 is the minus sign some exports use for negatives.
        value = Decimal(raw.replace("\u2212", "-"))
    except InvalidOperation:
        raise _RowError("bad_number", f"{field} {raw!r} is not a decimal number") from None
    return _finite(value, field)


def _finite(value: Decimal, field: str) -> Decimal:
    if not value.is_finite():
        raise _RowError("non_finite", f"{field} is {value}, not a finite number")
    return value


def _positive_int(raw: str, field: str) -> int:
    if not raw:
        raise _RowError("missing_value", f"{field} is empty")
    if not raw.isascii() or not raw.isdigit() or int(raw) == 0:
        raise _RowError("bad_number", f"{field} {raw!r} is not a positive integer")
    return int(raw)


def _localize(naive: datetime, zone: tzinfo, tz: str, raw: str) -> datetime:
    """Attach ``zone``; a wall time a DST change skips is refused, a repeated one takes the
    earlier (first) occurrence, zoneinfo's fold=0."""
    aware = naive.replace(tzinfo=zone)
    if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise _RowError("bad_timestamp", f"{raw!r} does not exist in {tz} (skipped by DST)")
    return aware


def _check_id(trade_id: str) -> str:
    if not trade_id:
        raise _RowError("missing_value", "trade_id is empty")
    if len(trade_id) > MAX_TRADE_ID_LENGTH:
        raise _RowError(
            "trade_id_too_long", f"trade_id has {len(trade_id)} characters, more than 128"
        )
    return trade_id


def _check_order(opened_at: datetime, closed_at: datetime) -> None:
    if closed_at < opened_at:
        raise _RowError(
            "closed_before_opened",
            f"closed at {closed_at.isoformat()} before it opened at {opened_at.isoformat()}",
        )


def _finish(
    fmt: ReplayFormat,
    currency: str,
    candidates: list[ReplayTrade],
    problems: list[ParseProblem],
) -> ParsedHistory:
    """Drop duplicate ids (the first occurrence in the file wins), sort, refuse an empty result."""
    first_line: dict[str, int] = {}
    trades: list[ReplayTrade] = []
    for trade in sorted(candidates, key=lambda t: t.source_line):
        first = first_line.get(trade.trade_id)
        if first is not None:
            reason = f"duplicate trade_id {trade.trade_id!r} (first at {first})"
            problems.append(ParseProblem(trade.source_line, reason, "duplicate_trade_id"))
            continue
        first_line[trade.trade_id] = trade.source_line
        trades.append(trade)
    problems.sort(key=lambda problem: problem.line)
    if not trades:
        detail = f"; {len(problems)} skipped, first: {_describe(problems[0])}" if problems else ""
        raise ReplayFormatError(f"no trades to replay in the {fmt} file{detail}", code="no_trades")
    trades.sort(key=lambda t: (t.opened_at, t.closed_at, t.trade_id))
    return ParsedHistory(fmt, currency, tuple(trades), tuple(problems))


def _describe(problem: ParseProblem) -> str:
    return f"{problem.line}: {problem.reason}"


# ---------------------------------------------------------------------------------------------
# freqtrade


def _freqtrade_from_document(
    document: Any, strategy: str | None, currency: str | None
) -> ParsedHistory:
    if not isinstance(document, dict) or not isinstance(document.get("strategy"), dict):
        raise ReplayFormatError(
            "not a freqtrade backtest export: no top-level 'strategy' object",
            code="unknown_format",
        )
    strategies: dict[str, Any] = document["strategy"]
    if not strategies:
        raise ReplayFormatError("the export holds no strategy results", code="no_trades")
    names = ", ".join(sorted(strategies)) or "none"
    if strategy is None:
        if len(strategies) != 1:
            raise ReplayFormatError(
                f"the export holds {len(strategies)} strategies ({names}): name one",
                code="strategy_required",
            )
        strategy = next(iter(strategies))
    elif strategy not in strategies:
        raise ReplayFormatError(
            f"strategy {strategy!r} is not in the export (it holds: {names})",
            code="unknown_strategy",
        )
    result = strategies[strategy]
    trades = result.get("trades") if isinstance(result, dict) else None
    if not isinstance(trades, list):
        raise ReplayFormatError(f"strategy.{strategy} has no 'trades' list", code="unknown_format")
    resolved = _freqtrade_currency(document, strategy, result, currency)

    problems: list[ParseProblem] = []
    candidates: list[ReplayTrade] = []
    for index, raw in enumerate(trades, start=1):
        try:
            candidates.append(_freqtrade_trade(index, raw))
        except _RowError as error:
            problems.append(ParseProblem(index, error.reason, error.code))
    return _finish("freqtrade", resolved, candidates, problems)


def _freqtrade_currency(
    document: dict[str, Any], strategy: str, result: dict[str, Any], given: str | None
) -> str:
    found = result.get("stake_currency")
    metadata = document.get("metadata")
    if not isinstance(found, str) and isinstance(metadata, dict):
        entry = metadata.get(strategy)
        found = entry.get("stake_currency") if isinstance(entry, dict) else None
    if isinstance(found, str):
        if given is not None and given != found:
            raise ReplayFormatError(
                f"the export's stake currency is {found}, not {given}", code="currency_mismatch"
            )
        return _valid_currency(found)
    if given is None:
        raise ReplayFormatError(
            f"strategy.{strategy} has no stake_currency: give the currency",
            code="currency_required",
        )
    return _valid_currency(given)


def _freqtrade_trade(index: int, raw: Any) -> ReplayTrade:
    if not isinstance(raw, dict):
        raise _RowError("malformed", "the trade is not a JSON object")
    if raw.get("is_open") is True:
        raise _RowError("open_trade", "the trade is still open (is_open)")
    pair = raw.get("pair")
    if not isinstance(pair, str) or not pair:
        raise _RowError("missing_value", "pair is missing")
    opened_at = _freqtrade_date(raw, "open_date")
    closed_at = _freqtrade_date(raw, "close_date")
    _check_order(opened_at, closed_at)
    pnl = _json_decimal(raw, "profit_abs")
    if pnl is None:
        raise _RowError("missing_value", "profit_abs is missing")
    exit_reason = raw.get("exit_reason", raw.get("sell_reason"))
    kind: TradeKind = "emergency_exit" if exit_reason in _EMERGENCY_EXIT_REASONS else "regular"
    # Milliseconds since the epoch: freqtrade holds one open trade per pair, so pair + open
    # instant is unique and stable across re-exports.
    opened_ms = (opened_at - _EPOCH) // timedelta(milliseconds=1)
    return ReplayTrade(
        trade_id=_check_id(f"{pair}:{opened_ms}"),
        opened_at=opened_at,
        closed_at=closed_at,
        pnl=pnl,
        kind=kind,
        equity_after=None,
        return_ratio=_json_decimal(raw, "profit_ratio"),
        stake=_json_decimal(raw, "stake_amount"),
        symbol=pair,
        source_line=index,
    )


def _freqtrade_date(raw: dict[str, Any], field: str) -> datetime:
    value = raw.get(field)
    if not isinstance(value, str) or not value:
        raise _RowError("missing_value", f"{field} is missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _RowError("bad_timestamp", f"{field} {value!r} is not an ISO date and time") from None
    # freqtrade works in UTC throughout; exports from before it wrote "+00:00" are UTC too.
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _json_decimal(raw: dict[str, Any], field: str) -> Decimal | None:
    value = raw.get(field)
    if value is None:
        return None
    if isinstance(value, bool):
        raise _RowError("bad_number", f"{field} is {value}, not a number")
    if isinstance(value, int | Decimal):
        return _finite(Decimal(value), field)
    if isinstance(value, str):
        return _decimal_text(value, field)
    raise _RowError("bad_number", f"{field} is not a number")


# ---------------------------------------------------------------------------------------------
# TradingView

_TV_TYPE_RE: Final = re.compile(r"(entry|exit) (long|short)", re.IGNORECASE)
_TV_DATE_RE: Final = re.compile(
    r"([A-Za-z]{3})[a-z]* (\d{1,2}), (\d{4}),? (\d{1,2}):(\d{2})(?::(\d{2}))?"
)
_MONTHS: Final = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}


@dataclass(frozen=True, slots=True)
class _TvRow:
    is_entry: bool
    direction: str
    at: datetime
    pnl: Decimal | None  # exit rows only
    return_ratio: Decimal | None
    symbol: str | None
    still_open: bool


class _TradeSkipped(Exception):
    def __init__(self, line: int, code: ProblemCode, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.code: ProblemCode = code
        self.reason = reason


def _tradingview_row(
    fields: list[str], columns: dict[str, int], pnl_at: int, zone: tzinfo, tz: str
) -> _TvRow:
    kind = fields[columns["Type"]]
    match = _TV_TYPE_RE.fullmatch(kind)
    if match is None:
        code: ProblemCode = "missing_value" if not kind else "bad_type"
        raise _RowError(code, f"Type {kind!r} is not 'Entry|Exit long|short'")
    is_entry = match.group(1).lower() == "entry"
    at = _tradingview_date(fields[columns["Date and time"]], zone, tz)
    pnl = None
    return_ratio = None
    if not is_entry:
        pnl = _decimal_text(fields[pnl_at], "Net PnL")
        if "Return %" in columns and fields[columns["Return %"]]:
            percent = _decimal_text(fields[columns["Return %"]], "Return %")
            return_ratio = _DECIMAL.divide(percent, Decimal(100))
    symbol = (fields[columns["Symbol"]] or None) if "Symbol" in columns else None
    signal = fields[columns["Signal"]] if "Signal" in columns else ""
    return _TvRow(
        is_entry=is_entry,
        direction=match.group(2).lower(),
        at=at,
        pnl=pnl,
        return_ratio=return_ratio,
        symbol=symbol,
        # TradingView's strategy tester marks a position still open at the last bar this way.
        still_open=not is_entry and signal.lower() == "open",
    )


def _tradingview_date(raw: str, zone: tzinfo, tz: str) -> datetime:
    if not raw:
        raise _RowError("missing_value", "Date and time is empty")
    match = _TV_DATE_RE.fullmatch(raw)
    try:
        if match is not None:
            month = _MONTHS.get(match.group(1).lower())
            if month is None:
                raise ValueError(raw)
            naive = datetime(  # noqa: DTZ001 - wall-clock time, localised just below
                int(match.group(3)),
                month,
                int(match.group(2)),
                int(match.group(4)),
                int(match.group(5)),
                int(match.group(6) or 0),
            )
        else:
            naive = datetime.fromisoformat(raw)
    except ValueError:
        raise _RowError(
            "bad_timestamp", f"Date and time {raw!r} is not like 'Sep 14, 2026, 11:26'"
        ) from None
    if naive.tzinfo is not None:
        return naive
    return _localize(naive, zone, tz, raw)


def _tradingview_trade(
    number: int,
    entries: list[tuple[int, _TvRow]] | None,
    exits: list[tuple[int, _TvRow]] | None,
) -> ReplayTrade:
    for rows, what in ((entries, "entry"), (exits, "exit")):
        if rows is not None and len(rows) > 1:
            raise _TradeSkipped(
                rows[1][0],
                "duplicate_trade_id",
                f"trade {number} has a second {what} row (first at line {rows[0][0]})",
            )
    if not exits:
        line = entries[0][0] if entries else 0
        raise _TradeSkipped(line, "unpaired_entry", f"trade {number} has no exit row: still open")
    exit_line, exit_row = exits[0]
    if not entries:
        raise _TradeSkipped(exit_line, "unpaired_exit", f"trade {number} has no entry row")
    entry_row = entries[0][1]
    if exit_row.still_open:
        raise _TradeSkipped(exit_line, "open_trade", f"trade {number} is still open")
    if entry_row.direction != exit_row.direction:
        raise _TradeSkipped(
            exit_line,
            "mismatched_direction",
            f"trade {number} enters {entry_row.direction} but exits {exit_row.direction}",
        )
    try:
        _check_order(entry_row.at, exit_row.at)
    except _RowError as error:
        raise _TradeSkipped(exit_line, error.code, error.reason) from None
    if exit_row.pnl is None:  # exit rows always carry it; this only satisfies the type
        raise _TradeSkipped(exit_line, "missing_value", f"trade {number} has no Net PnL")
    return ReplayTrade(
        trade_id=f"tv-{number}",
        opened_at=entry_row.at,
        closed_at=exit_row.at,
        pnl=exit_row.pnl,
        kind="regular",
        equity_after=None,
        return_ratio=exit_row.return_ratio,
        # "Size (value)" is price x quantity without the contract multiplier, so it is not the
        # notional the P&L and "Return %" refer to: no stake.
        stake=None,
        symbol=exit_row.symbol or entry_row.symbol,
        source_line=exit_line,
    )


# ---------------------------------------------------------------------------------------------
# Generic CSV

_GENERIC_REQUIRED: Final = ("trade_id", "opened_at", "closed_at", "pnl")
_GENERIC_OPTIONAL: Final = ("kind", "equity_after", "symbol")
_DATE_ONLY_RE: Final = re.compile(r"\d{4}-?\d{2}-?\d{2}")


def _check_generic_header(line: int, header: list[str]) -> None:
    problems: list[str] = []
    if not header or header[0] != "trade_id":
        problems.append("the first column must be trade_id")
    missing = [name for name in _GENERIC_REQUIRED if name not in header]
    if missing:
        problems.append("missing " + ", ".join(missing))
    unknown = [name for name in header if name not in _GENERIC_REQUIRED + _GENERIC_OPTIONAL]
    if unknown:
        problems.append("unknown column(s) " + ", ".join(repr(name) for name in unknown))
    if problems:
        raise ReplayFormatError(
            f"line {line}: not a generic trade CSV ({'; '.join(problems)}); expected "
            "trade_id,opened_at,closed_at,pnl[,kind,equity_after,symbol]",
            code="wrong_header",
        )


def _generic_trade(
    line: int, fields: list[str], columns: dict[str, int], zone: tzinfo | None
) -> ReplayTrade:
    def optional(name: str) -> str:
        return fields[columns[name]] if name in columns else ""

    trade_id = _check_id(fields[columns["trade_id"]])
    opened_at = _generic_time(line, fields[columns["opened_at"]], "opened_at", zone)
    closed_at = _generic_time(line, fields[columns["closed_at"]], "closed_at", zone)
    _check_order(opened_at, closed_at)
    pnl = _decimal_text(fields[columns["pnl"]], "pnl")
    raw_kind = optional("kind")
    kind = _TRADE_KINDS.get(raw_kind or "regular")
    if kind is None:
        raise _RowError("bad_kind", f"kind {raw_kind!r} is not regular, emergency_exit or manual")
    raw_equity = optional("equity_after")
    return ReplayTrade(
        trade_id=trade_id,
        opened_at=opened_at,
        closed_at=closed_at,
        pnl=pnl,
        kind=kind,
        equity_after=_decimal_text(raw_equity, "equity_after") if raw_equity else None,
        return_ratio=None,
        stake=None,
        symbol=optional("symbol") or None,
        source_line=line,
    )


def _generic_time(line: int, raw: str, field: str, zone: tzinfo | None) -> datetime:
    if not raw:
        raise _RowError("missing_value", f"{field} is empty")
    if _DATE_ONLY_RE.fullmatch(raw):
        raise _RowError("bad_timestamp", f"{field} {raw!r} has no time of day")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise _RowError("bad_timestamp", f"{field} {raw!r} is not an ISO 8601 timestamp") from None
    if parsed.tzinfo is not None:
        return parsed
    if zone is None:
        raise ReplayFormatError(
            f"line {line}: {field} {raw!r} has no UTC offset; give the timezone it is in",
            code="timezone_required",
        )
    return _localize(parsed, zone, str(zone), raw)
