"""Replay a parsed trade history through the worker as a replay account (R-1.6, R-11.2).

Owns the orchestration of ``phasectl replay``: registering the account (clock = message), then
walking the history in time order as the bot would have lived it — an entry decision at each
trade's ``opened_at``, its ``trade_closed`` at ``closed_at``, a ``session_ended`` at each trading
day's end — and waiting for every message to be applied before the next. It talks to the
deployment only through the bot's client and an injected registration callable: no side path.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final, Literal, Protocol

from contracts.client import EntryDecision
from contracts.messages import DECIMAL_LIMIT, DECIMAL_MAX_PLACES, SessionEnded, TradeClosed
from worker.domain.calendar import Calendar
from worker.replay.parsers import ParsedHistory, ReplayFormatError, ReplayTrade, scale_to_size

DEFAULT_EQUITY: Final = Decimal(10000)  # starting equity when neither --equity nor the file says
DEFAULT_TIMEOUT_S: Final = 30.0  # how long one message may take to be applied
REPLAY_OPERATOR: Final = "replay"  # operator_id on registration and on manual trades
MAX_SYMBOL_LENGTH: Final = 64  # ShortText; a longer symbol is left out of the message
_WIRE_QUANTUM: Final = Decimal(1).scaleb(-DECIMAL_MAX_PLACES)  # at most 12 places
_FIRST_PAUSE_S: Final = 0.0005  # first pause of the wait-for-apply poll; doubles up to the cap
_MAX_PAUSE_S: Final = 0.02

Mode = Literal["live", "paper"]
StepKind = Literal["session", "entry", "close"]
# At one instant: the session that ends there closes first (the instant belongs to the next
# day), then entries, then closes (a trade opened and closed at once is entered first).
_RANK: Final[Mapping[StepKind, int]] = {"session": 0, "entry": 1, "close": 2}


class BotClient(Protocol):
    """What the replay needs of ``contracts.client.PhaseguardClient`` (as phaseguard-bot)."""

    def publish_trade_closed(self, msg: TradeClosed) -> str: ...

    def publish_session_ended(self, msg: SessionEnded) -> str: ...

    def request_entry(self, account_id: str, mode: Literal["live", "paper"],
                      kind: Literal["regular", "emergency_exit", "manual"] = "regular",
                      request_id: str | None = None, position_id: str | None = None,
                      at: datetime | None = None) -> EntryDecision: ...

    def status(self, account_id: str) -> dict[str, str]: ...


Register = Callable[[dict[str, Any]], dict[str, Any]]  # the accounts_add job


class ReplayError(Exception):
    """The replay cannot go on; ``code`` is stable, the message is one line for the operator."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    account_id: str
    equity: Decimal | None = None  # starting equity; None: from the file, else DEFAULT_EQUITY
    scale_to_phase_size: bool = False
    timeout: float = DEFAULT_TIMEOUT_S
    paper_notional: Decimal = Decimal(100)  # experience trades are sized at this


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int
    phase: str
    trading_day: date | None


@dataclass(frozen=True, slots=True)
class SkippedTrade:
    trade_id: str
    opened_at: datetime
    reason: str  # the entry decision's reason
    phase: str


@dataclass
class ReplayResult:
    account_id: str
    format: str
    currency: str
    trades_in_file: int
    start_equity: Decimal
    start_equity_source: str  # "option", "file" or "default"
    published: int = 0
    sessions_ended: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    skipped_trades: list[SkippedTrade] = field(default_factory=list)
    rounded: int = 0  # P&L values rounded to the wire's 12 decimal places
    final_equity: Decimal = Decimal(0)
    final_phase: str = "experience"
    decisions: dict[str, EntryDecision] = field(default_factory=dict)  # by trade id

    def as_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id, "format": self.format, "currency": self.currency,
            "trades_in_file": self.trades_in_file, "published": self.published,
            "sessions_ended": self.sessions_ended,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_trades": [
                {"trade_id": s.trade_id, "opened_at": s.opened_at.isoformat(),
                 "reason": s.reason, "phase": s.phase} for s in self.skipped_trades],
            "rounded_to_wire_precision": self.rounded,
            "start_equity": str(self.start_equity),
            "start_equity_source": self.start_equity_source,
            "final_equity": str(self.final_equity), "final_phase": self.final_phase,
        }


@dataclass(frozen=True, slots=True)
class _Step:
    at: datetime
    kind: StepKind
    order: int  # tie-break inside one kind
    trade: ReplayTrade | None = None
    day: date | None = None

    @property
    def key(self) -> tuple[datetime, int, int]:
        return (self.at, _RANK[self.kind], self.order)


def plan(history: ParsedHistory, calendar: Calendar) -> list[_Step]:
    """Every step of the replay in the order the bot would have lived them."""
    trades = history.trades
    steps = [_Step(t.opened_at, "entry", i, trade=t) for i, t in enumerate(trades)]
    by_close = sorted(trades, key=lambda t: (t.closed_at, t.trade_id))
    steps += [_Step(t.closed_at, "close", i, trade=t) for i, t in enumerate(by_close)]
    # The account opens on the first trade's trading day (starts_at = its opened_at); every
    # trading day through the last close ends with a session_ended carrying the equity, so the
    # equity stays known for live entries even across days without trades.
    day = calendar.trading_day(trades[0].opened_at)
    last = max(calendar.trading_day(t.closed_at) for t in trades)
    n = 0
    while day <= last:
        steps.append(_Step(calendar.session_end(day), "session", n, day=day))
        day = calendar.next_trading_day(day)
        n += 1
    steps.sort(key=lambda s: s.key)
    return steps


def starting_equity(history: ParsedHistory, given: Decimal | None) -> tuple[Decimal, str]:
    """--equity, else what the file's first equity_after implies, else DEFAULT_EQUITY."""
    if given is not None:
        return given, "option"
    cumulative = Decimal(0)
    for t in sorted(history.trades, key=lambda t: (t.closed_at, t.trade_id)):
        cumulative += t.pnl
        if t.equity_after is not None:
            return t.equity_after - cumulative, "file"
    return DEFAULT_EQUITY, "default"


def _wire(value: Decimal) -> tuple[Decimal, bool]:
    """``value`` with at most the wire's 12 decimal places (R-9.3); whether it was rounded."""
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -DECIMAL_MAX_PLACES:
        return value.quantize(_WIRE_QUANTUM, rounding=ROUND_HALF_EVEN), True
    return value, False


def _check_inputs(history: ParsedHistory, options: ReplayOptions, equity: Decimal) -> None:
    if options.scale_to_phase_size:
        unscalable = next((t for t in history.trades
                           if t.return_ratio is None and (t.stake is None or t.stake <= 0)), None)
        if unscalable is not None:
            raise ReplayError(f"--scale-to-phase-size needs a return ratio or stake per trade; "
                              f"{history.format} trade {unscalable.trade_id} has neither",
                              "cannot_scale")
    if not equity.is_finite() or abs(equity) >= DECIMAL_LIMIT or _wire(equity)[1]:
        raise ReplayError(f"starting equity {equity} is not a finite decimal below 10^15 with at "
                          f"most {DECIMAL_MAX_PLACES} places", "bad_equity")
    if options.timeout <= 0:
        raise ReplayError("--timeout must be positive", "bad_argument")


class Replay:
    """One replay run. ``run()`` registers the account and walks the plan; see the module doc.

    ``progress`` is called after every step; ``before_publish`` right before each message is
    published (tests snapshot the entry ledger there). ``clock`` and ``pause`` serve only the
    deadline-bounded wait for a message to be applied.
    """

    def __init__(self, history: ParsedHistory, *, client: BotClient, register: Register,
                 calendar: Calendar, options: ReplayOptions,
                 progress: Callable[[Progress], None] | None = None,
                 before_publish: Callable[[TradeClosed | SessionEnded], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 pause: Callable[[float], None] = time.sleep) -> None:
        self.history = history
        self.client = client
        self.register = register
        self.calendar = calendar
        self.options = options
        self.progress = progress
        self.before_publish = before_publish
        self.clock = clock
        self.pause = pause
        equity, source = starting_equity(history, options.equity)
        _check_inputs(history, options, equity)
        self.equity = equity
        self.result = ReplayResult(options.account_id, history.format, history.currency,
                                   len(history.trades), equity, source, final_equity=equity)
        self._status: dict[str, str] = {}
        self._open: dict[str, tuple[EntryDecision, Mode]] = {}

    @property
    def account(self) -> str:
        return self.options.account_id

    def run(self) -> ReplayResult:
        steps = plan(self.history, self.calendar)
        self._register()
        for done, step in enumerate(steps, start=1):
            if step.trade is None:
                self._end_session(step.day or self.calendar.trading_day(step.at), step.at)
            elif step.kind == "entry":
                self._enter(step.trade)
            else:
                self._close(step.trade)
            if self.progress is not None:
                day = step.day if step.day is not None else self.calendar.trading_day(step.at)
                self.progress(Progress(done, len(steps), self.phase, day))
        self.result.final_phase = self.phase
        self.result.final_equity = self.equity
        return self.result

    @property
    def phase(self) -> str:
        return self._status.get("phase", "?")

    # -- steps ------------------------------------------------------------------------------------
    def _register(self) -> None:
        first = self.history.trades[0].opened_at
        outcome = self.register({
            "account_id": self.account, "operator_id": REPLAY_OPERATOR, "clock": "message",
            "starts_at": first.isoformat(), "currency": self.history.currency})
        if outcome.get("outcome") != "applied":
            reason = str(outcome.get("reason") or outcome.get("outcome"))
            hint = ": replay into a new account id" if reason == "already_registered" else ""
            raise ReplayError(f"registering {self.account} was refused ({reason}){hint}",
                              reason)
        self._status = self.client.status(self.account)
        if "phase" not in self._status:
            raise ReplayError(f"{self.account} was registered but has no state",
                              "state_unavailable")

    def _enter(self, trade: ReplayTrade) -> None:
        mode: Mode = "paper" if self.phase == "experience" else "live"
        # An emergency exit closes a position that a regular entry opened: the entry is
        # asked as regular, the exit itself is announced when the trade closes.
        kind = "regular" if trade.kind == "emergency_exit" else trade.kind
        decision = self.client.request_entry(self.account, mode, kind,
                                             request_id=f"replay:{trade.trade_id}",
                                             at=trade.opened_at)
        if not decision.allowed:
            # a backtest knows nothing of the daily limit or the breaker: the trade never happened
            self.result.skipped[decision.reason] += 1
            self.result.skipped_trades.append(
                SkippedTrade(trade.trade_id, trade.opened_at, decision.reason, self.phase))
            return
        self._open[trade.trade_id] = (decision, mode)
        self.result.decisions[trade.trade_id] = decision

    def _close(self, trade: ReplayTrade) -> None:
        opened = self._open.pop(trade.trade_id, None)
        if opened is None:
            return  # its entry was denied
        decision, mode = opened
        if trade.kind == "emergency_exit":
            # always allowed; the entry script audits it (history at the session close)
            self.client.request_entry(self.account, mode, "emergency_exit",
                                      request_id=f"replay-exit:{trade.trade_id}",
                                      position_id=trade.trade_id, at=trade.closed_at)
        pnl = trade.pnl
        if self.options.scale_to_phase_size:
            size = decision.position_size if mode == "live" else self.options.paper_notional
            pnl = scale_to_size(trade, size)
        pnl, rounded = _wire(pnl)
        self.result.rounded += rounded
        self.equity += pnl
        symbol = trade.symbol if trade.symbol and len(trade.symbol) <= MAX_SYMBOL_LENGTH else None
        msg = TradeClosed(
            schema_version=1, account_id=self.account, trade_id=trade.trade_id, mode=mode,
            closed_at=trade.closed_at, pnl=pnl, kind=trade.kind, opened_at=trade.opened_at,
            entry_decision_id=decision.decision_id, symbol=symbol,
            position_size=decision.position_size if mode == "live" else None,
            equity_after=self.equity, currency=self.history.currency,
            operator_id=REPLAY_OPERATOR if trade.kind == "manual" else None)
        self._publish(msg, trade.trade_id)
        self.result.published += 1

    def _end_session(self, day: date, ended_at: datetime) -> None:
        msg = SessionEnded(schema_version=1, account_id=self.account, trading_day=day,
                           ended_at=ended_at, equity=self.equity)
        self._publish(msg, f"session {day}")
        self.result.sessions_ended += 1

    # -- publishing ------------------------------------------------------------------------------
    def _publish(self, msg: TradeClosed | SessionEnded, what: str) -> None:
        before = self._status
        if self.before_publish is not None:
            self.before_publish(msg)
        if isinstance(msg, TradeClosed):
            entry_id = self.client.publish_trade_closed(msg)
        else:
            entry_id = self.client.publish_session_ended(msg)
        self._status = self._wait_applied(before.get("version"), what, entry_id)
        if _dead_letters(self._status) > _dead_letters(before):
            raise ReplayError(f"the worker dead-lettered {what} (inbox entry {entry_id}); see "
                              f"`phasectl deadletter list --account {self.account}`",
                              "dead_lettered")

    def _wait_applied(self, version: str | None, what: str, entry_id: str) -> dict[str, str]:
        """Poll the account's state version until the worker has applied the message."""
        deadline = self.clock() + self.options.timeout
        pause = _FIRST_PAUSE_S
        for status in self._statuses():
            if status.get("version") != version:
                return status
            if self.clock() >= deadline:
                break
            self.pause(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)
        raise ReplayError(f"the worker did not apply {what} (inbox entry {entry_id}) within "
                          f"{self.options.timeout:g} s: is phase-worker running?", "not_applied")

    def _statuses(self) -> Iterator[dict[str, str]]:
        while True:
            yield self.client.status(self.account)


def _dead_letters(status: Mapping[str, str]) -> int:
    try:
        return int(status.get("dead_letters") or 0)
    except ValueError:
        return 0


def replay(history: ParsedHistory, *, client: BotClient, register: Register,
           calendar: Calendar, options: ReplayOptions, **callbacks: Any) -> ReplayResult:
    """Run one replay; raises ReplayError (or ReplayFormatError from scaling) on failure."""
    return Replay(history, client=client, register=register, calendar=calendar,
                  options=options, **callbacks).run()


__all__ = ["DEFAULT_EQUITY", "BotClient", "Progress", "Replay", "ReplayError", "ReplayFormatError",
           "ReplayOptions", "ReplayResult", "SkippedTrade", "plan", "replay", "starting_equity"]
