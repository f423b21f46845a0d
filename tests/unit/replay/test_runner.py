"""The replay's orchestration (worker/replay/runner.py) against a scripted stand-in for the bot.

The stand-in answers entry requests from a script and "applies" each message by bumping the
state version, so these tests need no Redis and never sleep (the wait's clock is injected).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

import pytest

from contracts.client import EntryDecision
from contracts.messages import SessionEnded, TradeClosed
from worker.domain.calendar import Calendar
from worker.domain.policy import DEFAULT_POLICY
from worker.replay.parsers import ParsedHistory, ReplayTrade
from worker.replay.runner import (
    DEFAULT_EQUITY,
    ReplayError,
    ReplayOptions,
    plan,
    replay,
    starting_equity,
)

NY = ZoneInfo("America/New_York")
CAL = Calendar(DEFAULT_POLICY.calendar)
FRIDAY = date(2026, 1, 16)  # Monday 2026-01-19 is a holiday (Martin Luther King Jr. Day)
TUESDAY = date(2026, 1, 20)


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NY)


def rt(trade_id: str, opened: datetime, closed: datetime, pnl: str, *,
       kind: Literal["regular", "emergency_exit", "manual"] = "regular",
       equity_after: str | None = None, ratio: str | None = None) -> ReplayTrade:
    return ReplayTrade(trade_id, opened, closed, Decimal(pnl), kind,
                       None if equity_after is None else Decimal(equity_after),
                       None if ratio is None else Decimal(ratio), None, None, 1)


def history(*trades: ReplayTrade, fmt: Literal["freqtrade", "tradingview", "generic"] = "generic"
            ) -> ParsedHistory:
    ordered = tuple(sorted(trades, key=lambda t: (t.opened_at, t.closed_at, t.trade_id)))
    return ParsedHistory(fmt, "USD", ordered, ())


def allowed(phase: str, size: str = "0.00") -> EntryDecision:
    return EntryDecision("d-1", True, "allowed", phase, Decimal(size), None, None)


@dataclass
class FakeBot:
    """Applies every message at once (version + 1) unless told otherwise."""

    phase: str = "experience"
    decide: Callable[[str, str, str], EntryDecision] = lambda phase, mode, kind: allowed(phase)
    applies: bool = True
    dead_letter_on: str | None = None  # a trade id whose message the "worker" dead-letters
    version: int = 1
    dead_letters: int = 0
    published: list[TradeClosed | SessionEnded] = field(default_factory=list)
    requests: list[tuple[str, str, str | None, datetime | None]] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def publish_trade_closed(self, msg: TradeClosed) -> str:
        self.order.append(f"close {msg.trade_id}")
        if msg.trade_id == self.dead_letter_on:
            self.dead_letters += 1
        return self._publish(msg)

    def publish_session_ended(self, msg: SessionEnded) -> str:
        self.order.append(f"session {msg.trading_day}")
        return self._publish(msg)

    def _publish(self, msg: TradeClosed | SessionEnded) -> str:
        self.published.append(msg)
        if self.applies:
            self.version += 1
        return f"{len(self.published)}-0"

    def request_entry(self, account_id: str, mode: Literal["live", "paper"],
                      kind: Literal["regular", "emergency_exit", "manual"] = "regular",
                      request_id: str | None = None, position_id: str | None = None,
                      at: datetime | None = None) -> EntryDecision:
        self.requests.append((mode, kind, request_id, at))
        self.order.append(f"{kind} {mode} {request_id}")
        if kind == "emergency_exit":
            return EntryDecision("x-1", True, "emergency_exit", self.phase, Decimal("0.00"),
                                 None, None)
        return self.decide(self.phase, mode, kind)

    def status(self, account_id: str) -> dict[str, str]:
        return {"phase": self.phase, "version": str(self.version),
                "dead_letters": str(self.dead_letters)}


def registered(request: dict[str, Any]) -> dict[str, Any]:
    return {"outcome": "applied", "account_id": request["account_id"]}


def run(hist: ParsedHistory, bot: FakeBot, **options: Any) -> Any:
    ticks = iter(range(10_000))
    return replay(hist, client=bot, register=registered, calendar=CAL,
                  options=ReplayOptions("acct-1", **options),
                  clock=lambda: float(next(ticks)), pause=lambda _s: None)


# -- the plan ----------------------------------------------------------------------------------


def test_every_trading_day_from_the_first_entry_to_the_last_close_ends_once() -> None:
    steps = plan(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "1"),
                         rt("b", at(TUESDAY + timedelta(days=1), 10),
                            at(TUESDAY + timedelta(days=1), 11), "1")), CAL)

    days = [s.day for s in steps if s.kind == "session"]
    assert days == [FRIDAY, TUESDAY, TUESDAY + timedelta(days=1)]  # the holiday is skipped
    assert steps[-1].kind == "session"
    assert steps[-1].at == CAL.session_end(TUESDAY + timedelta(days=1))


def test_a_session_ends_before_an_entry_at_its_end_and_an_entry_before_its_own_close() -> None:
    friday_end = CAL.session_end(FRIDAY)  # Tuesday's open
    steps = plan(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 10), "1"),
                         rt("b", friday_end, friday_end + timedelta(hours=1), "1")), CAL)

    assert [(s.kind, s.trade.trade_id if s.trade else str(s.day)) for s in steps] == [
        ("entry", "a"), ("close", "a"), ("session", str(FRIDAY)),
        ("entry", "b"), ("close", "b"), ("session", str(TUESDAY))]


def test_overlapping_trades_are_entered_when_opened_and_published_when_closed() -> None:
    bot = FakeBot()
    run(history(rt("long", at(FRIDAY, 9, 40), at(FRIDAY, 15), "5"),
                rt("short", at(FRIDAY, 10), at(FRIDAY, 11), "-2")), bot)

    assert bot.order == ["regular paper replay:long", "regular paper replay:short",
                         "close short", "close long", f"session {FRIDAY}"]


# -- equity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "equity_after", "expected"),
    [
        (Decimal("2500"), "10117.26", (Decimal("2500"), "option")),
        (None, "10117.26", (Decimal("10000.00"), "file")),
        (None, None, (DEFAULT_EQUITY, "default")),
    ],
)
def test_the_starting_equity_is_the_option_else_the_files_else_the_default(
        given: Decimal | None, equity_after: str | None, expected: tuple[Decimal, str]) -> None:
    hist = history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "117.26", equity_after=equity_after))

    assert starting_equity(hist, given) == expected


def test_session_ends_and_trades_carry_the_running_equity() -> None:
    bot = FakeBot()
    run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "10.50"),
                rt("b", at(TUESDAY, 10), at(TUESDAY, 11), "-0.25")), bot, equity=Decimal(1000))

    assert [(type(m).__name__, m.equity_after if isinstance(m, TradeClosed) else m.equity)
            for m in bot.published] == [
        ("TradeClosed", Decimal("1010.50")), ("SessionEnded", Decimal("1010.50")),
        ("TradeClosed", Decimal("1010.25")), ("SessionEnded", Decimal("1010.25"))]


# -- entries -----------------------------------------------------------------------------------


def test_live_trades_cite_their_decision_with_its_size_and_paper_trades_carry_no_size() -> None:
    bot = FakeBot(phase="proof",
                  decide=lambda phase, mode, kind: EntryDecision(
                      "d-42", True, "allowed", phase, Decimal("100.00"), None, 0))
    run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "3")), bot)
    paper = FakeBot()
    run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "3")), paper)

    live_msg = bot.published[0]
    assert isinstance(live_msg, TradeClosed)
    assert (live_msg.mode, live_msg.entry_decision_id, live_msg.position_size) == (
        "live", "d-42", Decimal("100.00"))
    assert bot.requests[0] == ("live", "regular", "replay:a", at(FRIDAY, 10))
    paper_msg = paper.published[0]
    assert isinstance(paper_msg, TradeClosed)
    assert (paper_msg.mode, paper_msg.position_size) == ("paper", None)


def test_denied_entries_are_skipped_and_counted_by_reason() -> None:
    answers = iter([allowed("proof", "100.00"),
                    EntryDecision("d-2", False, "daily_limit", "proof", Decimal("100.00"),
                                  None, 0)])
    bot = FakeBot(phase="proof", decide=lambda phase, mode, kind: next(answers))

    result = run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "3"),
                         rt("b", at(FRIDAY, 12), at(FRIDAY, 13), "4")), bot)

    assert result.skipped == {"daily_limit": 1}
    assert [s.trade_id for s in result.skipped_trades] == ["b"]
    assert "close b" not in bot.order
    assert result.published == 1


def test_an_emergency_exit_is_entered_as_regular_and_announced_when_it_closes() -> None:
    bot = FakeBot(phase="trial", decide=lambda phase, mode, kind: allowed(phase, "200.00"))

    run(history(rt("e", at(FRIDAY, 10), at(FRIDAY, 11), "-3", kind="emergency_exit")), bot)

    assert [(mode, kind, rid) for mode, kind, rid, _ in bot.requests] == [
        ("live", "regular", "replay:e"), ("live", "emergency_exit", "replay-exit:e")]
    msg = bot.published[0]
    assert isinstance(msg, TradeClosed)
    assert (msg.kind, msg.entry_decision_id) == ("emergency_exit", "d-1")


def test_manual_trades_name_the_replay_as_their_operator() -> None:
    bot = FakeBot()
    run(history(rt("m", at(FRIDAY, 10), at(FRIDAY, 11), "1", kind="manual")), bot)

    msg = bot.published[0]
    assert isinstance(msg, TradeClosed)
    assert (msg.kind, msg.operator_id) == ("manual", "replay")


# -- scaling and the wire's precision ----------------------------------------------------------


def test_scaling_reprices_live_trades_at_the_decided_size_and_paper_at_the_notional() -> None:
    live = FakeBot(phase="proof", decide=lambda phase, mode, kind: allowed(phase, "100.00"))
    run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "55", ratio="0.0123"),
                fmt="freqtrade"), live, scale_to_phase_size=True)
    paper = FakeBot()
    run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "55", ratio="0.0123"),
                fmt="freqtrade"), paper, scale_to_phase_size=True,
        paper_notional=Decimal("250"))

    assert [m.pnl for m in live.published if isinstance(m, TradeClosed)] == [Decimal("1.23")]
    assert [m.pnl for m in paper.published if isinstance(m, TradeClosed)] == [Decimal("3.08")]


def test_scaling_a_history_without_return_ratio_or_stake_is_refused_before_registering() -> None:
    bot = FakeBot()
    with pytest.raises(ReplayError) as refused:
        run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "5")), bot,
            scale_to_phase_size=True)

    assert refused.value.code == "cannot_scale"
    assert bot.requests == []


def test_pnl_beyond_twelve_decimal_places_is_rounded_for_the_wire_and_counted() -> None:
    bot = FakeBot()
    result = run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "-1.4998880680546292e-05")),
                 bot, equity=Decimal("0.01"))

    msg = bot.published[0]
    assert isinstance(msg, TradeClosed)
    assert msg.pnl == Decimal("-0.000014998881")
    assert result.rounded == 1
    assert result.final_equity == Decimal("0.01") + Decimal("-0.000014998881")


# -- waiting for the worker ----------------------------------------------------------------------


def test_without_a_worker_applying_messages_the_replay_stops_at_the_deadline() -> None:
    bot = FakeBot(applies=False)

    with pytest.raises(ReplayError) as stalled:
        run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "1")), bot, timeout=5.0)

    assert stalled.value.code == "not_applied"
    assert len(bot.published) == 1  # never the next message before this one is applied


def test_a_dead_lettered_message_stops_the_replay() -> None:
    bot = FakeBot(dead_letter_on="a")

    with pytest.raises(ReplayError) as stopped:
        run(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "1"),
                    rt("b", at(FRIDAY, 12), at(FRIDAY, 13), "1")), bot)

    assert stopped.value.code == "dead_lettered"
    assert "close b" not in bot.order


def test_a_refused_registration_stops_the_replay_with_its_reason() -> None:
    def taken(_request: dict[str, Any]) -> dict[str, Any]:
        return {"outcome": "refused", "reason": "already_registered"}

    with pytest.raises(ReplayError) as refused:
        replay(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "1")), client=FakeBot(),
               register=taken, calendar=CAL, options=ReplayOptions("acct-1"))

    assert refused.value.code == "already_registered"


def test_registration_asks_for_a_message_clock_from_the_first_entry_in_the_files_currency(
        ) -> None:
    seen: list[dict[str, Any]] = []

    def register(request: dict[str, Any]) -> dict[str, Any]:
        seen.append(request)
        return registered(request)

    replay(history(rt("a", at(FRIDAY, 10), at(FRIDAY, 11), "1")), client=FakeBot(),
           register=register, calendar=CAL, options=ReplayOptions("acct-1"))

    assert seen == [{"account_id": "acct-1", "operator_id": "replay", "clock": "message",
                     "starts_at": at(FRIDAY, 10).isoformat(), "currency": "USD"}]
