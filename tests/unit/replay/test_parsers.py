"""Parsing real and crafted trade histories for ``phasectl replay``."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import FrozenInstanceError
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from worker.replay.parsers import (
    ParsedHistory,
    ParseProblem,
    ReplayFormatError,
    ReplayTrade,
    detect_format,
    parse_freqtrade,
    parse_generic,
    parse_history,
    parse_tradingview,
    scale_to_size,
)

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"
FREQTRADE = "freqtrade_backtest-result_StrategyTestV3.json"
MARKETLAB = "marketlab_Strat04TrendPullback_v1_backtest-result-2026-02-20_07-47-23.json"
TRADINGVIEW = "tradingview_leap_futures_trade_history.csv"
NEW_YORK = ZoneInfo("America/New_York")


def real_file(name: str) -> Path:
    if not DATA.is_dir():
        pytest.skip(
            "../shared/data is absent: real trade histories are not available on this machine"
        )
    return DATA / name


@pytest.fixture(scope="module")
def freqtrade() -> ParsedHistory:
    return parse_history(real_file(FREQTRADE))


@pytest.fixture(scope="module")
def marketlab() -> ParsedHistory:
    return parse_history(real_file(MARKETLAB))


@pytest.fixture(scope="module")
def tradingview() -> ParsedHistory:
    return parse_history(real_file(TRADINGVIEW))


def by_id(history: ParsedHistory) -> dict[str, ReplayTrade]:
    return {trade.trade_id: trade for trade in history.trades}


# ---------------------------------------------------------------------------------------------
# Real files


@pytest.mark.parametrize(
    ("name", "expected"),
    [(FREQTRADE, "freqtrade"), (MARKETLAB, "freqtrade"), (TRADINGVIEW, "tradingview")],
)
def test_detect_format_names_the_format_of_each_real_file(name: str, expected: str) -> None:
    assert detect_format(real_file(name)) == expected


def test_the_freqtrade_export_yields_its_179_trades_in_btc(freqtrade: ParsedHistory) -> None:
    assert (freqtrade.format, freqtrade.currency) == ("freqtrade", "BTC")
    assert len(freqtrade.trades) == 179
    assert freqtrade.skipped == ()


def test_a_freqtrade_pnl_is_the_decimal_exactly_as_written_in_the_file(
    freqtrade: ParsedHistory,
) -> None:
    raw = real_file(FREQTRADE).read_text(encoding="utf-8")
    match = re.search(r'"open_date":"2018-01-29 23:30:00\+00:00".*?"profit_abs":([^,]+),', raw)
    assert match is not None
    written = match.group(1)  # -1.4998880680546292e-05

    trade = by_id(freqtrade)["TRX/BTC:1517268600000"]

    assert trade.pnl == Decimal(written)
    assert trade.pnl != Decimal(float(written))  # what a float round trip would have produced


def test_the_freqtrade_force_exits_become_emergency_exits(freqtrade: ParsedHistory) -> None:
    emergency = [trade.trade_id for trade in freqtrade.trades if trade.kind == "emergency_exit"]
    assert sorted(emergency) == [
        "ADA/BTC:1517013900000",
        "TRX/BTC:1517268600000",
        "ZEC/BTC:1517046000000",
    ]


def test_freqtrade_trades_keep_ratio_stake_and_pair_and_aware_utc_times(
    freqtrade: ParsedHistory,
) -> None:
    first = by_id(freqtrade)["TRX/BTC:1515568500000"]
    assert first.opened_at == datetime(2018, 1, 10, 7, 15, tzinfo=UTC)
    assert first.closed_at == datetime(2018, 1, 10, 7, 20, tzinfo=UTC)
    assert (first.return_ratio, first.stake, first.symbol) == (
        Decimal("0.03990025"),
        Decimal("0.001"),
        "TRX/BTC",
    )
    assert all(trade.opened_at.utcoffset() is not None for trade in freqtrade.trades)


def test_replayed_trades_are_sorted_by_open_then_close_then_id(freqtrade: ParsedHistory) -> None:
    keys = [(trade.opened_at, trade.closed_at, trade.trade_id) for trade in freqtrade.trades]
    assert keys == sorted(keys)


def test_the_marketlab_export_yields_its_557_trades_in_usdt(marketlab: ParsedHistory) -> None:
    assert (marketlab.format, marketlab.currency) == ("freqtrade", "USDT")
    assert len(marketlab.trades) == 557
    assert marketlab.skipped == ()


def test_the_marketlab_net_pnl_equals_the_exports_own_total_exactly(
    marketlab: ParsedHistory,
) -> None:
    document = json.loads(real_file(MARKETLAB).read_text(encoding="utf-8"), parse_float=Decimal)
    total = document["strategy"]["Strat04TrendPullback_v1"]["profit_total_abs"]

    assert sum(trade.pnl for trade in marketlab.trades) == total == Decimal("-43.97352762")


def test_the_tradingview_export_yields_47_trades_in_usd(tradingview: ParsedHistory) -> None:
    assert (tradingview.format, tradingview.currency) == ("tradingview", "USD")
    assert len(tradingview.trades) == 47
    assert tradingview.skipped == ()


def test_the_tradingview_net_pnl_is_the_exact_sum_of_the_exit_rows(
    tradingview: ParsedHistory,
) -> None:
    rows = csv.DictReader(io.StringIO(real_file(TRADINGVIEW).read_text(encoding="utf-8")))
    exits = sum(Decimal(row["Net PnL USD"]) for row in rows if row["Type"].startswith("Exit"))

    assert sum(trade.pnl for trade in tradingview.trades) == exits == Decimal("23989")


def test_tradingview_sep_14_closes_four_losers_totalling_minus_15762(
    tradingview: ParsedHistory,
) -> None:
    sep_14 = date(2026, 9, 14)
    day = [t for t in tradingview.trades if t.closed_at.astimezone(NEW_YORK).date() == sep_14]

    assert sorted(t.trade_id for t in day) == ["tv-16", "tv-17", "tv-18", "tv-19"]
    assert all(t.pnl < 0 for t in day)
    assert sum(t.pnl for t in day) == Decimal("-15762")


def test_tradingview_trades_14_to_19_are_six_losers_in_a_row_in_trade_order(
    tradingview: ParsedHistory,
) -> None:
    in_order = sorted(tradingview.trades, key=lambda t: (t.closed_at, t.trade_id))
    ids = [t.trade_id for t in in_order]
    start = ids.index("tv-14")
    run = in_order[start : start + 6]

    assert [t.trade_id for t in run] == [f"tv-{n}" for n in range(14, 20)]
    assert all(t.pnl < 0 for t in run)
    assert in_order[start - 1].pnl > 0
    assert in_order[start + 6].pnl > 0


def test_tradingview_dates_are_wall_clock_times_in_new_york_by_default(
    tradingview: ParsedHistory,
) -> None:
    first = by_id(tradingview)["tv-1"]
    assert first.opened_at == datetime(2026, 9, 4, 22, 0, tzinfo=UTC)  # 18:00 EDT
    assert first.closed_at == datetime(2026, 9, 5, 0, 17, tzinfo=UTC)  # 20:17 EDT


def test_tradingview_dates_follow_the_timezone_the_caller_names() -> None:
    history = parse_history(real_file(TRADINGVIEW), tz="UTC")
    assert by_id(history)["tv-1"].opened_at == datetime(2026, 9, 4, 18, 0, tzinfo=UTC)


def test_tradingview_return_percent_becomes_a_ratio_and_stake_stays_unknown(
    tradingview: ParsedHistory,
) -> None:
    first = by_id(tradingview)["tv-1"]
    assert (first.return_ratio, first.stake, first.symbol) == (
        Decimal("0.0022"),
        None,
        "CME_MINI:MES1!",
    )


# ---------------------------------------------------------------------------------------------
# Generic CSV (crafted)

GENERIC_HEADER = "trade_id,opened_at,closed_at,pnl,kind,equity_after"
GOOD_A = "a,2026-01-05T09:35:00-05:00,2026-01-05T10:00:00-05:00,12.50,regular,10012.50"
GOOD_B = "b,2026-01-05T11:00:00-05:00,2026-01-05T11:30:00-05:00,-5,,"


def generic(*rows: str) -> str:
    return "\n".join((GENERIC_HEADER, *rows)) + "\n"


def test_a_generic_csv_yields_its_trades_with_every_field() -> None:
    history = parse_generic(generic(GOOD_A, GOOD_B), None, "USD")

    assert history.skipped == ()
    assert history.trades[0] == ReplayTrade(
        trade_id="a",
        opened_at=datetime(2026, 1, 5, 14, 35, tzinfo=UTC),
        closed_at=datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
        pnl=Decimal("12.50"),
        kind="regular",
        equity_after=Decimal("10012.50"),
        return_ratio=None,
        stake=None,
        symbol=None,
        source_line=2,
    )
    assert (history.trades[1].kind, history.trades[1].equity_after) == ("regular", None)


@pytest.mark.parametrize(
    ("row", "code"),
    [
        ("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,12,3,regular,", "malformed"),
        ("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,twelve,,", "bad_number"),
        ("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,NaN,,", "non_finite"),
        ("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,,,", "missing_value"),
        (",2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,1,,", "missing_value"),
        ("x,2026-01-05T12:00:00Z,yesterday,1,,", "bad_timestamp"),
        ("x,2026-01-05,2026-01-05T12:10:00Z,1,,", "bad_timestamp"),
        ("x,2026-01-05T12:10:00Z,2026-01-05T12:00:00Z,1,,", "closed_before_opened"),
        ("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,1,scalp,", "bad_kind"),
        ("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,1,,lots", "bad_number"),
        ("a,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,1,,", "duplicate_trade_id"),
        ("x" * 129 + ",2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,1,,", "trade_id_too_long"),
    ],
)
def test_a_malformed_generic_row_is_skipped_and_reported_by_its_line(row: str, code: str) -> None:
    history = parse_generic(generic(GOOD_A, row, GOOD_B), None, "USD")

    assert [t.trade_id for t in history.trades] == ["a", "b"]
    assert [(p.line, p.code) for p in history.skipped] == [(3, code)]


def test_generic_line_numbers_count_blank_lines() -> None:
    text = generic(GOOD_A, "", "", "x,2026-01-05T12:00:00Z,later,1,,", GOOD_B)
    assert [p.line for p in parse_generic(text, None, "USD").skipped] == [5]


def test_generic_naive_timestamps_are_read_in_the_given_timezone() -> None:
    text = generic("n,2026-07-01 09:30,2026-07-01T10:00,1,,")
    trade = parse_generic(text, "America/New_York", "USD").trades[0]
    assert trade.opened_at == datetime(2026, 7, 1, 13, 30, tzinfo=UTC)


def test_generic_naive_timestamps_without_a_timezone_refuse_the_file() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_generic(generic(GOOD_A, "n,2026-07-01 09:30,2026-07-01 10:00,1,,"), None, "USD")
    assert raised.value.code == "timezone_required"


def test_a_generic_local_time_skipped_by_dst_is_reported() -> None:
    text = generic(GOOD_A, "n,2026-03-08 02:30,2026-03-08 03:30,1,,")
    history = parse_generic(text, "America/New_York", "USD")
    assert [(p.line, p.code) for p in history.skipped] == [(3, "bad_timestamp")]


def test_a_generic_csv_needs_the_currency_from_the_caller() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_generic(generic(GOOD_A), None, None)
    assert raised.value.code == "currency_required"


@pytest.mark.parametrize(
    "header",
    [
        "trade_id,opened_at,closed_at",  # pnl missing
        "opened_at,trade_id,closed_at,pnl",  # trade_id not first
        "trade_id,opened_at,closed_at,pnl,equity",  # unknown column
        "trade_id,opened_at,closed_at,pnl,pnl",  # repeated column
    ],
)
def test_a_generic_csv_with_a_wrong_header_is_refused(header: str) -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_generic(header + "\n" + GOOD_A + "\n", None, "USD")
    assert raised.value.code == "wrong_header"


def test_a_generic_csv_without_usable_trades_is_refused() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_generic(generic("x,2026-01-05T12:00:00Z,2026-01-05T12:10:00Z,oops,,"), None, "USD")
    assert raised.value.code == "no_trades"


# ---------------------------------------------------------------------------------------------
# TradingView (crafted)

TV_HEADER = "Symbol,Trade number,Type,Date and time,Signal,Net PnL USD,Return %"


def tradingview_text(*rows: str) -> str:
    return "\n".join((TV_HEADER, *rows))


TV_ONE = (
    'CME_MINI:MES1!,1,Exit short,"Sep 4, 2026, 20:17",x,2550,0.22',
    'CME_MINI:MES1!,1,Entry short,"Sep 4, 2026, 18:00",x,2550,0.22',
)


def test_an_unpaired_tradingview_entry_is_an_open_trade_skipped_and_reported() -> None:
    text = tradingview_text(*TV_ONE, 'NYMEX:MCL1!,2,Entry long,"Sep 7, 2026, 03:30",x,0,0')
    history = parse_tradingview(text)

    assert [t.trade_id for t in history.trades] == ["tv-1"]
    assert [(p.line, p.code) for p in history.skipped] == [(4, "unpaired_entry")]


def test_an_unpaired_tradingview_exit_is_skipped_and_reported() -> None:
    text = tradingview_text('NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 03:30",x,10,0.1', *TV_ONE)
    history = parse_tradingview(text)
    assert [(p.line, p.code) for p in history.skipped] == [(2, "unpaired_exit")]


def test_a_tradingview_exit_still_marked_open_is_skipped() -> None:
    text = tradingview_text(
        *TV_ONE,
        'NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 04:00",Open,10,0.1',
        'NYMEX:MCL1!,2,Entry long,"Sep 7, 2026, 03:30",x,10,0.1',
    )
    assert [(p.line, p.code) for p in parse_tradingview(text).skipped] == [(4, "open_trade")]


@pytest.mark.parametrize(
    ("exit_row", "code"),
    [
        ('NYMEX:MCL1!,2,Exit long,"Sept 31, 2026, 03:30",x,10,0.1', "bad_timestamp"),
        ('NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 04:00",x,ten,0.1', "bad_number"),
        ('NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 04:00",x,,0.1', "missing_value"),
        ('NYMEX:MCL1!,2,Close long,"Sep 7, 2026, 04:00",x,10,0.1', "bad_type"),
        ('NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 03:00",x,10,0.1', "closed_before_opened"),
        ('NYMEX:MCL1!,2,Exit short,"Sep 7, 2026, 04:00",x,10,0.1', "mismatched_direction"),
        ('NYMEX:MCL1!,two,Exit long,"Sep 7, 2026, 04:00",x,10,0.1', "bad_number"),
        ('NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 04:00",x,10', "malformed"),
    ],
)
def test_a_malformed_tradingview_exit_row_skips_its_trade_and_names_the_line(
    exit_row: str, code: str
) -> None:
    text = tradingview_text(
        *TV_ONE, exit_row, 'NYMEX:MCL1!,2,Entry long,"Sep 7, 2026, 03:30",x,10,0.1'
    )
    history = parse_tradingview(text)

    assert [t.trade_id for t in history.trades] == ["tv-1"]
    assert next((p.line, p.code) for p in history.skipped) == (4, code)


def test_a_broken_tradingview_row_is_the_only_problem_reported_for_its_trade() -> None:
    text = tradingview_text(
        *TV_ONE,
        'NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 25:00",x,10,0.1',
        'NYMEX:MCL1!,2,Entry long,"Sep 7, 2026, 03:30",x,10,0.1',
    )
    assert [(p.line, p.code) for p in parse_tradingview(text).skipped] == [(4, "bad_timestamp")]


def test_a_second_tradingview_exit_for_one_trade_number_is_a_duplicate() -> None:
    text = tradingview_text(*TV_ONE, 'CME_MINI:MES1!,1,Exit short,"Sep 4, 2026, 21:00",x,5,0.1')
    with pytest.raises(ReplayFormatError) as raised:
        parse_tradingview(text)
    assert raised.value.code == "no_trades"


def test_a_duplicated_tradingview_trade_is_skipped_and_reported_at_the_second_row() -> None:
    text = tradingview_text(
        *TV_ONE,
        'NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 04:00",x,10,0.1',
        'NYMEX:MCL1!,2,Entry long,"Sep 7, 2026, 03:30",x,10,0.1',
        'NYMEX:MCL1!,2,Exit long,"Sep 7, 2026, 05:00",x,10,0.1',
    )
    history = parse_tradingview(text)
    assert [t.trade_id for t in history.trades] == ["tv-1"]
    assert [(p.line, p.code) for p in history.skipped] == [(6, "duplicate_trade_id")]


def test_a_tradingview_csv_without_a_net_pnl_column_is_refused() -> None:
    text = 'Symbol,Trade number,Type,Date and time,Profit\nX,1,Exit long,"Sep 4, 2026, 20:17",1'
    with pytest.raises(ReplayFormatError) as raised:
        parse_tradingview(text)
    assert raised.value.code == "wrong_header"


def test_tradingview_takes_its_currency_from_the_net_pnl_column() -> None:
    text = tradingview_text(*TV_ONE).replace("Net PnL USD", "Net PnL EUR")
    assert parse_tradingview(text).currency == "EUR"


def test_an_unknown_timezone_is_refused() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_tradingview(tradingview_text(*TV_ONE), "Mars/Olympus_Mons")
    assert raised.value.code == "unknown_timezone"


# ---------------------------------------------------------------------------------------------
# freqtrade (crafted)


def freqtrade_trade(**overrides: object) -> dict[str, object]:
    trade: dict[str, object] = {
        "pair": "ETH/USDT",
        "stake_amount": 30,
        "open_date": "2025-01-01 01:00:00+00:00",
        "close_date": "2025-01-01 05:00:00+00:00",
        "profit_ratio": 0.01,
        "profit_abs": 0.3,
        "exit_reason": "roi",
        "is_open": False,
    }
    trade.update(overrides)
    return trade


def freqtrade_text(
    strategies: dict[str, list[dict[str, object]]], currency: str | None = "USDT"
) -> str:
    results: dict[str, object] = {}
    for name, trades in strategies.items():
        results[name] = {"trades": trades} | ({"stake_currency": currency} if currency else {})
    return json.dumps({"strategy": results})


def test_a_freqtrade_export_with_several_strategies_needs_one_named() -> None:
    text = freqtrade_text({"Alpha": [freqtrade_trade()], "Beta": [freqtrade_trade()]})
    with pytest.raises(ReplayFormatError) as raised:
        parse_freqtrade(text)
    assert raised.value.code == "strategy_required"
    assert "Alpha" in raised.value.message
    assert "Beta" in raised.value.message


def test_a_freqtrade_strategy_named_by_the_caller_is_the_one_parsed() -> None:
    beta = freqtrade_trade(pair="BTC/USDT")
    text = freqtrade_text({"Alpha": [freqtrade_trade()], "Beta": [beta]})
    assert [t.symbol for t in parse_freqtrade(text, "Beta").trades] == ["BTC/USDT"]


def test_a_freqtrade_strategy_absent_from_the_export_is_refused() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_freqtrade(freqtrade_text({"Alpha": [freqtrade_trade()]}), "Gamma")
    assert raised.value.code == "unknown_strategy"


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (freqtrade_trade(profit_abs="abc"), "bad_number"),
        (freqtrade_trade(profit_abs=None), "missing_value"),
        (freqtrade_trade(close_date=None), "missing_value"),
        (freqtrade_trade(close_date="tomorrow"), "bad_timestamp"),
        (freqtrade_trade(close_date="2024-12-31 00:00:00+00:00"), "closed_before_opened"),
        (freqtrade_trade(is_open=True), "open_trade"),
        (freqtrade_trade(open_date="2025-01-01 00:00:00+00:00"), "duplicate_trade_id"),
        ("not a trade", "malformed"),
    ],
)
def test_a_malformed_freqtrade_trade_is_reported_by_its_position(bad: object, code: str) -> None:
    first = freqtrade_trade(open_date="2025-01-01 00:00:00+00:00")
    text = freqtrade_text({"S": [first, bad, freqtrade_trade(pair="SOL/USDT")]})  # type: ignore[list-item]
    history = parse_freqtrade(text)

    assert len(history.trades) == 2
    assert [(p.line, p.code) for p in history.skipped] == [(2, code)]


def test_a_freqtrade_nan_profit_is_reported_not_parsed() -> None:
    text = freqtrade_text({"S": [freqtrade_trade(), freqtrade_trade(pair="X/USDT")]})
    text = text.replace('"profit_abs": 0.3}', '"profit_abs": NaN}', 1)
    text = text.replace('"profit_abs": 0.3,', '"profit_abs": NaN,', 1)
    history = parse_freqtrade(text)
    assert [(p.line, p.code) for p in history.skipped] == [(1, "non_finite")]


@pytest.mark.parametrize("reason", ["force_exit", "emergency_exit"])
def test_a_freqtrade_forced_or_emergency_exit_is_an_emergency_exit(reason: str) -> None:
    text = freqtrade_text({"S": [freqtrade_trade(exit_reason=reason)]})
    assert parse_freqtrade(text).trades[0].kind == "emergency_exit"


def test_the_freqtrade_currency_falls_back_to_the_metadata_then_the_caller() -> None:
    bare = json.loads(freqtrade_text({"S": [freqtrade_trade()]}, currency=None))
    with_metadata = bare | {"metadata": {"S": {"stake_currency": "BTC"}}}

    assert parse_freqtrade(json.dumps(with_metadata)).currency == "BTC"
    assert parse_freqtrade(json.dumps(bare), currency="EUR").currency == "EUR"
    with pytest.raises(ReplayFormatError) as raised:
        parse_freqtrade(json.dumps(bare))
    assert raised.value.code == "currency_required"


def test_json_that_does_not_parse_is_refused() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        parse_freqtrade('{"strategy": {')
    assert raised.value.code == "not_json"


# ---------------------------------------------------------------------------------------------
# Files: detection and dispatch


def test_a_json_file_without_a_strategy_object_is_not_a_known_format(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text('{"trades": []}', encoding="utf-8")
    with pytest.raises(ReplayFormatError) as raised:
        detect_format(path)
    assert raised.value.code == "unknown_format"


def test_a_csv_with_an_unrecognised_header_is_not_a_known_format(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text("id,date,profit\n1,2026-01-05,3\n", encoding="utf-8")
    with pytest.raises(ReplayFormatError) as raised:
        parse_history(path, currency="USD")
    assert raised.value.code == "unknown_format"


def test_parse_history_reads_a_generic_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text("\ufeff" + generic(GOOD_A, GOOD_B), encoding="utf-8")
    history = parse_history(path, currency="USD")
    assert (detect_format(path), len(history.trades)) == ("generic", 2)


def test_a_strategy_argument_for_a_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(generic(GOOD_A), encoding="utf-8")
    with pytest.raises(ReplayFormatError) as raised:
        parse_history(path, currency="USD", strategy="S")
    assert raised.value.code == "bad_argument"


def test_a_currency_that_contradicts_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text(tradingview_text(*TV_ONE), encoding="utf-8")
    with pytest.raises(ReplayFormatError) as raised:
        parse_history(path, currency="EUR")
    assert raised.value.code == "currency_mismatch"


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trades.csv"
    path.write_bytes(b"trade_id,opened_at\n\xff\xfe\n")
    with pytest.raises(ReplayFormatError) as raised:
        detect_format(path)
    assert raised.value.code == "not_text"


# ---------------------------------------------------------------------------------------------
# Values and scaling


def sample(**overrides: object) -> ReplayTrade:
    fields: dict[str, object] = {
        "trade_id": "t",
        "opened_at": datetime(2026, 1, 5, 14, 35, tzinfo=UTC),
        "closed_at": datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
        "pnl": Decimal("5"),
        "kind": "regular",
        "equity_after": None,
        "return_ratio": None,
        "stake": None,
        "symbol": None,
        "source_line": 2,
    }
    fields.update(overrides)
    return ReplayTrade(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ratio", "size", "expected"),
    [
        (Decimal("0.0022"), Decimal("100"), Decimal("0.22")),
        (Decimal("0.00125"), Decimal("100"), Decimal("0.12")),  # half-even: down to the even cent
        (Decimal("0.00135"), Decimal("100"), Decimal("0.14")),  # half-even: up to the even cent
        (Decimal("-0.017859049644652635"), Decimal("200"), Decimal("-3.57")),
    ],
)
def test_scaling_reprices_the_return_ratio_at_the_size_in_cents(
    ratio: Decimal, size: Decimal, expected: Decimal
) -> None:
    assert scale_to_size(sample(return_ratio=ratio), size) == expected


def test_scaling_without_a_ratio_uses_pnl_over_stake() -> None:
    assert scale_to_size(sample(stake=Decimal("30")), Decimal("100")) == Decimal("16.67")


def test_scaling_a_trade_with_neither_ratio_nor_stake_is_refused() -> None:
    with pytest.raises(ReplayFormatError) as raised:
        scale_to_size(sample(), Decimal("100"))
    assert raised.value.code == "cannot_scale"


def test_replay_trades_and_problems_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        sample().pnl = Decimal(0)  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        ParseProblem(1, "x").line = 2  # type: ignore[misc]
