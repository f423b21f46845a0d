"""`phasectl export` and `phasectl archive` (R-8.3, R-7.7c), registered by worker.cli.

The commands take worker.cli's helpers at call time (worker.cli imports this module at its end),
so importing this module never imports the composition root. Data goes to the named file (or
stdout for `export --out -`); messages go to stderr, with a progress bar only on a terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

from contracts.shard import validate_account_id


def _account(value: str) -> str:
    try:
        return validate_account_id(value)
    except Exception as exc:
        raise typer.BadParameter(f"{value!r} is not a valid account id") from exc


AccountArg = Annotated[str, typer.Argument(help="Account id.", callback=_account)]
KindOpt = Annotated[str, typer.Option("--kind", help="sessions, transitions, overrides or "
                                                     "history (every entry as stored).")]
FormatOpt = Annotated[str, typer.Option("--format", help="csv or jsonl.")]
FromOpt = Annotated[str | None, typer.Option("--from", help="First trading day, YYYY-MM-DD "
                                                            "(inclusive).")]
ToOpt = Annotated[str | None, typer.Option("--to", help="Last trading day, YYYY-MM-DD "
                                                        "(inclusive).")]
OutOpt = Annotated[str, typer.Option("--out", help="File to write, or - for stdout.")]
ArchiveOutOpt = Annotated[Path, typer.Option("--out", help="File for the full export (JSON "
                                                           "Lines); must not exist.")]
OperatorOpt = Annotated[str, typer.Option("--operator", help="Your operator id (audited).")]
ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (audited, <= 500 characters).")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin",
                                        help="Read the override password from stdin.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the job.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("archive")(archive_cmd)


# -- helpers --------------------------------------------------------------------------------------


def _range(start: str | None, end: str | None) -> tuple[date | None, date | None]:
    from worker.cli import fail
    from worker.export import ExportError, parse_day

    try:
        return (None if start is None else parse_day(start, "--from"),
                None if end is None else parse_day(end, "--to"))
    except ExportError as exc:
        fail(str(exc))


@contextmanager
def _progress(total: int, what: str) -> Iterator[Callable[[int], None] | None]:
    """A rich progress bar on stderr when it is a terminal; nothing otherwise."""
    from worker.cli import err

    if not err.is_terminal or total <= 0:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  transient=True) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


@contextmanager
def _file(path: Path) -> Iterator[TextIO]:
    """Write to `path.partial`, then fsync and rename: a failed export leaves no half file."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as f:
        try:
            yield f
            f.flush()
            os.fsync(f.fileno())
        except BaseException:
            f.close()
            partial.unlink(missing_ok=True)
            raise
    partial.replace(path)


def _open_error(path: Path, exc: OSError) -> str:
    return f"cannot write {path}: {exc.strerror or exc}"


def _known(client: Any, keys: Any, account: str) -> bool:
    k = keys.shard(account)
    return bool(client.hexists(keys.registry(k), account)
                or client.exists(keys.history(k, account)))


# -- phasectl export ------------------------------------------------------------------------------


def export_cmd(account: AccountArg, kind: KindOpt, fmt: FormatOpt = "csv",
               start: FromOpt = None, end: ToOpt = None, out: OutOpt = "-") -> None:
    """Export ACCOUNT's sessions, transitions, overrides or raw history (R-8.3), streaming."""
    import sys

    from worker.cli import EXIT_REFUSED, err, fail, ops_client
    from worker.export import RECORD_TYPE, ExportError, check_request, export, passes

    first, last = _range(start, end)
    try:
        check_request(kind, fmt, first, last)
    except ExportError as exc:
        fail(str(exc))
    target = None if out == "-" else Path(out)
    if target is not None and target.is_dir():
        fail(f"--out {target} is a directory")
    with ops_client() as (client, keys, _cfg):
        if not _known(client, keys, account):
            fail(f"unknown account {account!r}", EXIT_REFUSED)
        total = int(client.xlen(keys.history(keys.shard(account), account))) * passes(kind)
        with _progress(total, f"export {kind}") as progress:
            if target is None:
                summary = export(client, keys, account, kind, fmt, sys.stdout, first, last,
                                 progress)
                sys.stdout.flush()
            else:
                try:
                    with _file(target) as f:
                        summary = export(client, keys, account, kind, fmt, f, first, last,
                                         progress, spool_dir=str(target.parent))
                except OSError as exc:
                    fail(_open_error(target, exc))
    where = "stdout" if target is None else str(target)
    err.print(f"exported {summary.records} {RECORD_TYPE[kind]} records of {account} to {where}"
              + (f" ({summary.skipped} unreadable entries skipped)" if summary.skipped else ""),
              highlight=False, markup=False)


# -- phasectl archive -----------------------------------------------------------------------------


def archive_cmd(account: AccountArg, out: ArchiveOutOpt, operator: OperatorOpt,
                reason: ReasonOpt, password_stdin: StdinOpt = False,
                timeout: TimeoutOpt = 60.0, as_json: JsonOpt = False) -> None:
    """Export ACCOUNT's whole history to FILE, then trim what it holds (signed, R-7.7c).

    The request is signed first; its issued_at is the cutoff. The export that follows holds every
    entry below it, and the job trims exactly those (docs/decisions.md, "Export and archive").
    """
    from worker.cli import (
        EXIT_REFUSED,
        err,
        fail,
        finish_outcome,
        ops_client,
        read_password,
        run_job,
        signed_request,
    )
    from worker.export import export, stream_id
    from worker.ops.signing import parse_ts
    from worker.store.runtime import redis_now

    if not reason.strip():
        fail("--reason must say why")
    if out.exists():
        fail(f"--out {out} exists: an archive never overwrites a file")
    if not out.parent.is_dir():
        fail(f"--out {out}: no such directory {out.parent}")
    password = read_password(password_stdin)
    with ops_client() as (client, keys, _cfg):
        request = signed_request(client, keys, action="archive", operator=operator,
                                 reason=reason, password=password, account=account)
        del password
        history = keys.history(keys.shard(account), account)
        with _progress(int(client.xlen(history)), "export history") as progress:
            try:
                with _file(out) as f:
                    summary = export(client, keys, account, "history", "jsonl", f,
                                     progress=progress, spool_dir=str(out.parent))
            except OSError as exc:
                fail(_open_error(out, exc))
        err.print(f"exported {summary.records} history entries of {account} to {out} "
                  f"(through {summary.last_entry_id})", highlight=False, markup=False)
        left = int((parse_ts(request["expires_at"])
                    - redis_now(client.time())).total_seconds())
        if left < 1:
            fail(f"the export outlasted the signed request: nothing was trimmed; {out} holds a "
                 "complete export; run archive again with another --out", EXIT_REFUSED)
        result = run_job(client, "archive", request, timeout, ttl=left)
    _check_trim(result, summary.records, summary.last_entry_id, stream_id, err)
    finish_outcome(result, as_json)


def _check_trim(result: dict[str, Any], exported: int, last_exported: str | None,
                stream_id: Callable[[str], tuple[int, int]], err: Any) -> None:
    """The job cannot see the file: check here that it trimmed nothing the file lacks."""
    if result.get("outcome") != "applied":
        return
    trimmed = int(result.get("trimmed") or 0)
    last_trimmed = result.get("last_trimmed_id")
    beyond = (isinstance(last_trimmed, str) and (
        last_exported is None or stream_id(last_trimmed) > stream_id(last_exported)))
    if trimmed > exported or beyond:
        err.print(f"phasectl: WARNING: the job trimmed {trimmed} entries through "
                  f"{last_trimmed}, the export holds {exported} through {last_exported}: was "
                  "another archive of this account running?", highlight=False, markup=False)
