"""``phasectl replay``, ``simulate`` and ``report`` (R-12.1), registered by ``register(app)``.

The composition for these commands: which Redis user does what (the bot publishes and asks for
entries, R-12.3; the ops user registers through the ops queue and reads history), and how results
are printed. worker.cli is imported inside the commands: it imports this module while it loads.
"""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer

from contracts.shard import validate_account_id

if TYPE_CHECKING:
    from worker.replay.parsers import ParsedHistory
    from worker.replay.report import TimelineRow
    from worker.replay.runner import ReplayResult

FORMATS: Final = ("auto", "freqtrade", "tradingview", "generic")


def _account(value: str) -> str:
    try:
        return validate_account_id(value)
    except Exception as exc:
        raise typer.BadParameter(f"{value!r} is not a valid account id") from exc


def _decimal(name: str, value: str | None) -> Decimal | None:
    from worker.cli import fail

    if value is None:
        return None
    try:
        number = Decimal(value)
    except InvalidOperation:
        fail(f"{name} {value!r} is not a decimal number")
    if not number.is_finite():
        fail(f"{name} must be finite")
    return number


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


# -- replay -------------------------------------------------------------------------------------


def replay_cmd(
    file: Annotated[Path, typer.Argument(help="Trade history: freqtrade JSON, TradingView or "
                                              "generic CSV (docs/replay-formats.md).")],
    account: Annotated[str, typer.Option("--account", callback=_account,
                                         help="A new account id to replay into.")],
    fmt: Annotated[str, typer.Option("--format", help="auto, freqtrade, tradingview or "
                                                      "generic.")] = "auto",
    strategy: Annotated[str | None, typer.Option(help="freqtrade: the strategy to replay.")
                        ] = None,
    tz: Annotated[str | None, typer.Option("--tz", help="IANA zone of naive timestamps.")
                  ] = None,
    currency: Annotated[str | None, typer.Option(help="The history's currency (generic CSV; "
                                                      "default: the policy's).")] = None,
    equity: Annotated[str | None, typer.Option(help="Starting equity (default: from the "
                                                    "file's equity_after, else 10000).")] = None,
    scale: Annotated[bool, typer.Option("--scale-to-phase-size", help="Re-price each trade at "
                                        "the decided size (paper: paper_notional).")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for each message "
                                                             "to be applied.")] = 30.0,
    as_json: JsonOpt = False,
) -> None:
    """Replay a closed-trade history through the worker as a replay account (R-1.6, R-11.2)."""
    from contracts.client import PhaseguardClient
    from worker.cli import (
        EXIT_REFUSED,
        EXIT_UNAVAILABLE,
        EXIT_USAGE,
        connect,
        fail,
        run_job,
        settings,
    )
    from worker.domain.calendar import Calendar
    from worker.replay.parsers import ReplayFormatError, detect_format, parse_history
    from worker.replay.report import read_history, timeline
    from worker.replay.runner import ReplayError, ReplayOptions, replay
    from worker.store.runtime import fetch_policy, load_keys

    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}")
    if not file.is_file():
        fail(f"{file}: no such file")
    start_equity = _decimal("--equity", equity)
    try:
        detected = detect_format(file)
    except ReplayFormatError as exc:
        fail(f"{file.name}: {exc.message} ({exc.code})")
    if fmt not in ("auto", detected):
        fail(f"{file.name} is a {detected} file, not {fmt}")
    cfg = settings()
    ops = connect(cfg, "ops")
    bot = connect(cfg, "bot")  # the replay publishes and asks for entries as the bot
    try:
        keys = load_keys(ops, cfg.key_prefix)
        policy = fetch_policy(ops, keys)
        if currency is None and detected == "generic":
            currency = policy.currency
        try:
            history = parse_history(file, tz=tz, currency=currency, strategy=strategy)
        except ReplayFormatError as exc:
            fail(f"{file.name}: {exc.message} ({exc.code})")
        options = ReplayOptions(account, start_equity, scale, timeout,
                                policy.sizes.paper_notional)
        client = PhaseguardClient(bot, keys.prefix)

        def register(request: dict[str, Any]) -> dict[str, Any]:
            return run_job(ops, "accounts_add", request, timeout)

        try:
            result = _with_progress(history, as_json, lambda progress: replay(
                history, client=client, register=register, calendar=Calendar(policy.calendar),
                options=options, progress=progress))
        except ReplayError as exc:
            code = {"not_applied": EXIT_UNAVAILABLE, "cannot_scale": EXIT_USAGE,
                    "bad_equity": EXIT_USAGE, "bad_argument": EXIT_USAGE}.get(exc.code,
                                                                              EXIT_REFUSED)
            fail(str(exc), code)
        rows = timeline(read_history(ops, keys, account))
    finally:
        ops.close()
        bot.close()
    _print_replay(history, result, rows, as_json)


def _with_progress(history: ParsedHistory, quiet: bool, run: Any) -> ReplayResult:
    """Run the replay under a progress bar on stderr (none with --json)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from worker.cli import err
    from worker.replay.runner import Progress as Step

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=True,
                  disable=quiet) as bar:
        task = bar.add_task(f"replaying {len(history.trades)} trades", total=None)

        def progress(step: Step) -> None:
            bar.update(task, total=step.total, completed=step.done,
                       description=f"{step.trading_day}  {step.phase:<10}")

        result: ReplayResult = run(progress)
        return result


def _print_replay(history: ParsedHistory, result: ReplayResult, rows: list[TimelineRow],
                  as_json: bool) -> None:
    from rich.table import Table

    from worker.cli import emit, out

    data = result.as_json()
    data["file_rows_skipped"] = [{"line": p.line, "code": p.code, "reason": p.reason}
                                 for p in history.skipped]
    data["timeline"] = [{"trading_day": None if r.trading_day is None else str(r.trading_day),
                         "from_phase": r.from_phase, "to_phase": r.to_phase, "kind": r.kind,
                         "trigger": r.trigger, "reasons": list(r.reasons)} for r in rows]

    def render() -> None:
        table = Table(title=f"phase timeline of {result.account_id}")
        table.add_column("trading day", no_wrap=True)
        table.add_column("from → to", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("reasons")
        for r in rows:
            style = "red" if r.kind == "downgrade" else "green"
            table.add_row(str(r.trading_day or "?"), f"{r.from_phase} → {r.to_phase}",
                          f"[{style}]{r.kind}[/]", "; ".join(r.reasons))
        if rows:
            out.print(table)
        else:
            out.print("phase timeline: no transition (still in experience)")
        out.print(f"{result.format} file: {result.trades_in_file} trades"
                  + (f", {len(history.skipped)} rows skipped (first: line "
                     f"{history.skipped[0].line}: {history.skipped[0].reason})"
                     if history.skipped else ""))
        out.print(f"published {result.published} trades and {result.sessions_ended} session "
                  f"ends; skipped {sum(result.skipped.values())}"
                  + (" (" + ", ".join(f"{k} {v}" for k, v in sorted(result.skipped.items()))
                     + ")" if result.skipped else ""))
        if result.rounded:
            out.print(f"{result.rounded} P&L values rounded to 12 decimal places (R-9.3)")
        out.print(f"equity {result.start_equity} → {result.final_equity} {result.currency} "
                  f"(start: {result.start_equity_source}); final phase "
                  f"[bold]{result.final_phase}[/]")

    emit(data, as_json, render)


# -- simulate -----------------------------------------------------------------------------------


def simulate_cmd(
    seed: Annotated[int, typer.Option(help="Random seed; same arguments, same file.")] = 7,
    days: Annotated[int | None, typer.Option(help="Weekdays to fill (default 250).")] = None,
    win_probability: Annotated[str | None, typer.Option(help="Chance a trade wins, 0..1.")
                               ] = None,
    payoff: Annotated[str | None, typer.Option(help="A win's size in units of risk (R:R).")
                      ] = None,
    trades_per_day: Annotated[int | None, typer.Option(help="Trades each day, 1..50.")] = None,
    equity: Annotated[str | None, typer.Option(help="Starting equity.")] = None,
    losing: Annotated[bool, typer.Option("--losing", help="A losing strategy that triggers "
                                                          "downgrades.")] = False,
) -> None:
    """Print a seeded synthetic trade history as generic CSV (docs/replay-formats.md)."""
    from worker.cli import fail
    from worker.replay.simulate import LOSING_PRESET, SimulationPreset, simulate

    params: SimulationPreset = dict(LOSING_PRESET) if losing else {}  # type: ignore[assignment]
    if days is not None:
        params["days"] = days
    if trades_per_day is not None:
        params["trades_per_day"] = trades_per_day
    for key, name, value in (("win_probability", "--win-probability", win_probability),
                             ("payoff_ratio", "--payoff", payoff),
                             ("starting_equity", "--equity", equity)):
        number = _decimal(name, value)
        if number is not None:
            params[key] = number  # type: ignore[literal-required]
    try:
        text = simulate(seed=seed, **params)
    except ValueError as exc:
        fail(str(exc))
    sys.stdout.write(text)


# -- report -------------------------------------------------------------------------------------


def report_cmd(
    account: Annotated[str, typer.Argument(help="Account id.", callback=_account)],
    out_path: Annotated[Path | None, typer.Option("--out", help="HTML file to write "
                                                                "(default ACCOUNT.html).")
                        ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Write one self-contained HTML report of ACCOUNT's history (no external references)."""
    from worker.cli import _load, emit, fail, ops_client, out
    from worker.domain.decide import evaluate
    from worker.replay.report import read_history, render_report, sessions_of, timeline
    from worker.store.runtime import fetch_policy, policy_for

    with ops_client() as (client, keys, _cfg):
        st = _load(client, keys, account)
        policy = policy_for(fetch_policy(client, keys), st.clock, st.currency)
        gate = evaluate(st, policy)
        records = read_history(client, keys, account)
    page = render_report(account, records, None if gate is None else gate.as_json(),
                         currency=st.currency, phase=st.phase)
    target = out_path or Path(f"{account}.html")
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}")
    data = {"account_id": account, "out": str(target), "sessions": len(sessions_of(records)),
            "transitions": len(timeline(records)), "bytes": len(page.encode())}
    emit(data, as_json, lambda: out.print(
        f"wrote {target}: {data['sessions']} sessions, {data['transitions']} transitions"))


def register(app: typer.Typer) -> None:
    """Add replay, simulate and report to phasectl."""
    app.command("replay")(replay_cmd)
    app.command("simulate")(simulate_cmd)
    app.command("report")(report_cmd)
