"""Engine benchmarks: `decide` on one more trade after 100 and after 100,000 prior trades, the gate
evaluation at both sizes, a session close, and the state codec at 100,000 (BENCHMARKS.md, "Engine").

The histories are applied message by message through `decide`, never made by setting counters:
a proof account trading live with equity and an allowed entry decision (so every trigger rule and
the authorization check run), 20 trades a trading day in a win, win, loss pattern that never
downgrades, each day closed by session_ended with equity. The first day holds 10 trades, so
after 100 and after 100,000 trades the last day is open with 10 trades in it and the measured
trade is its 11th: the same path at both sizes. One pass builds both states, once per session.

Under --benchmark-disable (the smoke run of `make test`) the large history is 2,000 trades
instead of 100,000; the test names keep saying 100000.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from contracts.messages import SessionEnded, TradeClosed
from worker.domain import actions
from worker.domain.calendar import Calendar
from worker.domain.decide import LedgerDecision, LedgerView, decide, evaluate, new_account
from worker.domain.model import AccountState, Registration
from worker.domain.policy import DEFAULT_POLICY
from worker.store.codec import decode_state, encode_state, encoded_size

POLICY = DEFAULT_POLICY
CAL = Calendar(POLICY.calendar)
ACCOUNT = "acct-bench-engine"
FIRST_DAY = date(2026, 1, 5)
NOW = datetime(2100, 1, 1, tzinfo=UTC)  # the worker clock: after every message
PER_DAY = 20
FIRST_DAY_TRADES = 10
PNLS = (Decimal("12.50"), Decimal("8.25"), Decimal("-6.10"))  # win, win, loss
START_EQUITY = Decimal("20000.00")
SMALL = 100
LARGE = 100_000
LARGE_WHEN_DISABLED = 2_000
STATE_LIMIT = 16 * 1024
LEDGER = LedgerView(decisions={"d-1": LedgerDecision("d-1", "proof", Decimal("100.00"),
                                                     FIRST_DAY)})


@dataclass(frozen=True)
class Built:
    """An account after `trades` trades, and the next trade (the 11th of the open day)."""

    trades: int
    state: AccountState
    next_trade: TradeClosed


def trade(n: int, day: date, k: int, equity: Decimal) -> TradeClosed:
    """The n-th trade (from 0), the k-th of its day: 32-character id, live, cites d-1."""
    closed = CAL.session_open(day) + timedelta(minutes=10 + 30 * k)
    return TradeClosed(
        schema_version=1, account_id=ACCOUNT, trade_id=f"{n:032d}", mode="live",
        closed_at=closed, opened_at=closed - timedelta(minutes=5), pnl=PNLS[n % 3],
        entry_decision_id="d-1", position_size=Decimal("100.00"), equity_after=equity)


def build(sizes: tuple[int, ...]) -> dict[int, Built]:
    """Apply max(sizes) trades through decide; keep the state after each size in `sizes`."""
    registered = CAL.session_open(FIRST_DAY) - timedelta(hours=1)
    state = new_account(Registration(ACCOUNT, "redis", "USD", registered), POLICY)
    forced = actions.act_force_advance(state, POLICY, registered, target="proof",
                                       operator_id="bench", reason="bench", cause="bench")
    state = forced.state
    equity = START_EQUITY
    built: dict[int, Built] = {}
    day, k, n = FIRST_DAY, PER_DAY - FIRST_DAY_TRADES, 0
    while n < max(sizes):
        if k == PER_DAY:
            end = SessionEnded(schema_version=1, account_id=ACCOUNT, trading_day=day,
                               ended_at=CAL.session_open(day) + timedelta(hours=10),
                               equity=equity)
            state = decide(state, LEDGER, end, POLICY, NOW).state
            day, k = CAL.next_trading_day(day), 0
        equity += PNLS[n % 3]
        decision = decide(state, LEDGER, trade(n, day, k, equity), POLICY, NOW)
        assert decision.outcome == "applied", decision
        state = decision.state
        n, k = n + 1, k + 1
        if n in sizes:
            built[n] = Built(n, state, trade(n, day, k, equity + PNLS[n % 3]))
    for b in built.values():
        # the measured path: a live phase, breaker clear, every trigger rule evaluated
        assert (b.state.phase, b.state.halted, b.state.current.trades) == ("proof", False,
                                                                           b.trades)
    return built


@pytest.fixture(scope="module")
def histories(request: pytest.FixtureRequest) -> dict[int, Built]:
    disabled = bool(request.config.getoption("benchmark_disable", default=False))
    large = LARGE_WHEN_DISABLED if disabled else LARGE
    built = build((SMALL, large))
    return {SMALL: built[SMALL], LARGE: built[large]}


def _decide_next(built: Built) -> None:
    decide(built.state, LEDGER, built.next_trade, POLICY, NOW, "bench")


@pytest.mark.benchmark(group="engine: decide one trade_closed")
def test_decide_trade_after_100_trades(benchmark: BenchmarkFixture,
                                       histories: dict[int, Built]) -> None:
    built = histories[SMALL]
    assert decide(built.state, LEDGER, built.next_trade, POLICY, NOW).outcome == "applied"

    benchmark(_decide_next, built)


@pytest.mark.benchmark(group="engine: decide one trade_closed")
def test_decide_trade_after_100000_trades(benchmark: BenchmarkFixture,
                                          histories: dict[int, Built]) -> None:
    built = histories[LARGE]
    assert decide(built.state, LEDGER, built.next_trade, POLICY, NOW).outcome == "applied"

    benchmark(_decide_next, built)


@pytest.mark.benchmark(group="engine: decide one session_ended")
def test_decide_session_ended_after_100000_trades(benchmark: BenchmarkFixture,
                                                  histories: dict[int, Built]) -> None:
    """The open day's close: session record, gate evaluation, size refresh."""
    built = histories[LARGE]
    day = CAL.trading_day(built.next_trade.closed_at)
    end = SessionEnded(schema_version=1, account_id=ACCOUNT, trading_day=day,
                       ended_at=CAL.session_open(day) + timedelta(hours=10),
                       equity=Decimal("20500.00"))
    closed = decide(built.state, LEDGER, end, POLICY, NOW)
    assert [e.type for e in closed.events][:1] == ["session_closed"]

    benchmark(decide, built.state, LEDGER, end, POLICY, NOW, "bench")


@pytest.mark.benchmark(group="engine: gate evaluation")
def test_evaluate_gate_after_100_trades(benchmark: BenchmarkFixture,
                                        histories: dict[int, Built]) -> None:
    """On demand (phasectl validate), mid-day: the closed sessions' trades are refolded."""
    built = histories[SMALL]
    assert evaluate(built.state, POLICY) is not None

    benchmark(evaluate, built.state, POLICY)


@pytest.mark.benchmark(group="engine: gate evaluation")
def test_evaluate_gate_after_100000_trades(benchmark: BenchmarkFixture,
                                           histories: dict[int, Built]) -> None:
    built = histories[LARGE]
    assert evaluate(built.state, POLICY) is not None

    benchmark(evaluate, built.state, POLICY)


@pytest.mark.benchmark(group="engine: state codec")
def test_encode_state_after_100000_trades(benchmark: BenchmarkFixture,
                                          histories: dict[int, Built]) -> None:
    """What a commit encodes: the state decide just made from the stored one (one new trade,
    a new tally); the setup (decide) is not timed."""
    built = histories[LARGE]
    for b in histories.values():
        assert encoded_size(encode_state(b.state)) < STATE_LIMIT

    def fresh() -> tuple[tuple[AccountState], dict[str, object]]:
        return (decide(built.state, LEDGER, built.next_trade, POLICY, NOW).state,), {}

    benchmark.pedantic(encode_state, setup=fresh, rounds=200, warmup_rounds=5)


@pytest.mark.benchmark(group="engine: state codec")
def test_decode_state_after_100000_trades(benchmark: BenchmarkFixture,
                                          histories: dict[int, Built]) -> None:
    built = histories[LARGE]
    fields = encode_state(built.state)
    assert decode_state(fields) == built.state

    benchmark(decode_state, fields)
