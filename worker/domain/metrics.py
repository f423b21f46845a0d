"""Incremental, exact metrics (SPEC §2): the tally folded over trades in trade order.

A `Tally` is the fold of a prefix of the account's trades. It keeps only bounded windows, so the
state never grows with the history. Ratios are kept as exact numerator/denominator pairs and
compared by cross-multiplication: a criterion never depends on how a quotient was rounded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from worker.domain.model import Trade

ZERO = Decimal(0)
ONE = Decimal(1)
Q4 = Decimal("0.0001")
CENT = Decimal("0.01")


def q4(value: Decimal) -> str:
    """A ratio as emitted on the wire: 4 places, half-even (R-2.1)."""
    return str(value.quantize(Q4, rounding=ROUND_HALF_EVEN))


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Win/loss aggregates of a set of trades: enough for win rate and payoff ratio."""

    n: int = 0
    wins: int = 0
    losses: int = 0
    win_sum: Decimal = ZERO  # sum of winning P&L
    loss_sum: Decimal = ZERO  # sum of |losing P&L|

    def add(self, pnl: Decimal) -> Outcomes:
        if pnl > 0:
            return Outcomes(self.n + 1, self.wins + 1, self.losses, self.win_sum + pnl,
                            self.loss_sum)
        if pnl < 0:
            return Outcomes(self.n + 1, self.wins, self.losses + 1, self.win_sum,
                            self.loss_sum - pnl)
        return Outcomes(self.n + 1, self.wins, self.losses, self.win_sum, self.loss_sum)

    def merge(self, other: Outcomes) -> Outcomes:
        return Outcomes(self.n + other.n, self.wins + other.wins, self.losses + other.losses,
                        self.win_sum + other.win_sum, self.loss_sum + other.loss_sum)

    @property
    def breakevens(self) -> int:
        return self.n - self.wins - self.losses

    # -- win rate (R-2.3) ------------------------------------------------------------------
    def win_rate(self) -> Decimal | None:
        return None if self.n == 0 else Decimal(self.wins) / Decimal(self.n)

    def win_rate_at_least(self, threshold: Decimal) -> bool | None:
        """Exact `wins / n >= threshold`; None when there is no data (R-2.11)."""
        return None if self.n == 0 else Decimal(self.wins) >= threshold * self.n

    def win_rate_below(self, threshold: Decimal) -> bool | None:
        return None if self.n == 0 else Decimal(self.wins) < threshold * self.n

    # -- payoff ratio (R-2.4) --------------------------------------------------------------
    def rr_unbounded(self) -> bool:
        return self.wins > 0 and self.losses == 0

    def rr(self) -> Decimal | None:
        """Mean win / mean |loss|; None for no data and for unbounded (see rr_unbounded)."""
        if self.n == 0 or self.rr_unbounded():
            return None
        if self.wins == 0:
            return ZERO
        return (self.win_sum / self.wins) / (self.loss_sum / self.losses)

    def rr_at_least(self, threshold: Decimal) -> bool | None:
        if self.n == 0:
            return None
        if self.rr_unbounded():
            return True
        if self.wins == 0:
            return threshold <= 0
        # win_sum/wins >= t * loss_sum/losses, cross-multiplied (all factors positive)
        return self.win_sum * self.losses >= threshold * self.loss_sum * self.wins


@dataclass(frozen=True, slots=True)
class SessionAgg:
    """A session's counted trades (R-2.5), for the session windows of R-3.1 and R-5.1."""

    day: date
    outcomes: Outcomes


@dataclass(frozen=True, slots=True)
class Window:
    """Capacities fixed at the epoch start: larger windows apply from the next epoch (R-11.1)."""

    trades: int = 100
    sessions: int = 20
    triggers: int = 20


@dataclass(frozen=True, slots=True)
class EpochContext:
    """What the fold needs to know about the epoch it is folding into."""

    start: datetime
    inclusive: bool
    start_equity: Decimal | None
    window: Window

    def member(self, trade: Trade) -> bool:
        anchor = trade.anchor
        return anchor >= self.start if self.inclusive else anchor > self.start


@dataclass(frozen=True, slots=True)
class Tally:
    """The fold of a prefix of the trades, in trade order."""

    last_key: tuple[datetime, str] | None = None
    trades: int = 0
    pnl: Decimal = ZERO  # all kinds, all epochs
    # epoch-scoped: trades opened in the epoch
    epoch_trades: int = 0
    non_regular: int = 0
    counted: int = 0
    counted_window: tuple[Decimal, ...] = ()  # last `window.trades` counted P&Ls
    sessions_counted: int = 0  # completed sessions with >= 1 counted trade
    session_window: tuple[SessionAgg, ...] = ()
    day: date | None = None  # the session being accumulated
    day_outcomes: Outcomes = Outcomes()
    loss_streak: int = 0  # losses since the last regular win
    win_streak: int = 0  # regular wins since the last loss of any kind
    triggers: int = 0
    trigger_window: tuple[bool, ...] = ()  # True = win, last `window.triggers` trigger trades
    # drawdown: trades closed after the epoch start, all kinds
    dd_pnl: Decimal = ZERO
    dd_peak: Decimal | None = None
    dd_drop: Decimal = ZERO  # the worst (peak - E) / peak so far, as an exact pair
    dd_base: Decimal = ONE

    def step(self, trade: Trade, ctx: EpochContext) -> Tally:
        """Fold one more trade, which must come after every trade already folded."""
        t = self
        if t.day is not None and trade.day != t.day:
            t = t.finish_day(ctx.window)
        pnl = trade.pnl
        # Built field by field rather than through dataclasses.replace: this is the hot path of
        # every trade (replace costs several times the whole fold step).
        dd_pnl, dd_peak, dd_drop, dd_base = t.dd_pnl, t.dd_peak, t.dd_drop, t.dd_base
        if (trade.closed_at > ctx.start and ctx.start_equity is not None
                and ctx.start_equity > 0):
            dd_pnl, dd_peak, dd_drop, dd_base = _drawdown_step(t, ctx.start_equity, pnl)
        epoch_trades, non_regular, counted = t.epoch_trades, t.non_regular, t.counted
        counted_window, day_outcomes = t.counted_window, t.day_outcomes
        loss_streak, win_streak = t.loss_streak, t.win_streak
        triggers, trigger_window = t.triggers, t.trigger_window
        if ctx.member(trade):
            regular = trade.kind == "regular"
            epoch_trades += 1
            if regular:
                counted += 1
                counted_window = (*counted_window, pnl)[-ctx.window.trades:]
                day_outcomes = day_outcomes.add(pnl)
            else:
                non_regular += 1
            # trigger trades are every kind; breakevens leave streaks alone
            if pnl > 0 and regular:
                loss_streak = 0
                win_streak += 1
            elif pnl < 0:
                loss_streak += 1
                win_streak = 0
            triggers += 1
            trigger_window = (*trigger_window, pnl > 0)[-ctx.window.triggers:]
        return Tally(
            last_key=trade.order_key, trades=t.trades + 1, pnl=t.pnl + pnl,
            epoch_trades=epoch_trades, non_regular=non_regular, counted=counted,
            counted_window=counted_window, sessions_counted=t.sessions_counted,
            session_window=t.session_window, day=trade.day, day_outcomes=day_outcomes,
            loss_streak=loss_streak, win_streak=win_streak, triggers=triggers,
            trigger_window=trigger_window, dd_pnl=dd_pnl, dd_peak=dd_peak, dd_drop=dd_drop,
            dd_base=dd_base,
        )

    def finish_day(self, window: Window) -> Tally:
        """Close the session being accumulated into the session window."""
        if self.day is None or self.day_outcomes.n == 0:
            return replace(self, day=None, day_outcomes=Outcomes())
        agg = SessionAgg(self.day, self.day_outcomes)
        return replace(self, day=None, day_outcomes=Outcomes(),
                       sessions_counted=self.sessions_counted + 1,
                       session_window=(*self.session_window, agg)[-window.sessions:])

    def reset_epoch(self) -> Tally:
        """A new epoch: keep P&L, restart every epoch-scoped counter and window (R-1.5)."""
        return Tally(last_key=self.last_key, trades=self.trades, pnl=self.pnl)

    # -- read-outs ---------------------------------------------------------------------------
    def counted_outcomes(self, last: int) -> Outcomes:
        out = Outcomes()
        for pnl in self.counted_window[-last:] if last > 0 else ():
            out = out.add(pnl)
        return out

    def session_outcomes(self, last: int) -> tuple[int, Outcomes]:
        """(how many sessions, their counted trades' outcomes) over the last `last` sessions."""
        sessions = self.session_window[-last:] if last > 0 else ()
        out = Outcomes()
        for agg in sessions:
            out = out.merge(agg.outcomes)
        return len(sessions), out

    def trigger_outcomes(self, last: int) -> tuple[int, int]:
        """(wins, n) over the last `last` trigger trades."""
        window = self.trigger_window[-last:] if last > 0 else ()
        return sum(window), len(window)

    def drawdown(self, start_equity: Decimal | None) -> Decimal | None:
        """The epoch's max drawdown as a fraction; None without a positive start equity."""
        if start_equity is None or start_equity <= 0:
            return None
        return self.dd_drop / self.dd_base

    def drawdown_below(self, threshold: Decimal, start_equity: Decimal | None) -> bool | None:
        if start_equity is None or start_equity <= 0:
            return None
        return self.dd_drop < threshold * self.dd_base


def _drawdown_step(t: Tally, start_equity: Decimal,
                   pnl: Decimal) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(dd_pnl, dd_peak, dd_drop, dd_base) after one more trade closed after the epoch start."""
    cum = t.dd_pnl + pnl
    equity = start_equity + cum
    peak = t.dd_peak if t.dd_peak is not None else start_equity
    peak = max(peak, equity)  # peak >= start_equity > 0
    if (peak - equity) * t.dd_base > t.dd_drop * peak:
        return cum, peak, peak - equity, peak
    return cum, peak, t.dd_drop, t.dd_base


def fold(start: Tally, trades: Iterable[Trade], ctx: EpochContext) -> Tally:
    tally = start
    for trade in trades:
        tally = tally.step(trade, ctx)
    return tally
