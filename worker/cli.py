"""The composition root: `phase-worker`, the ops worker and `phasectl` (R-12.1).

Nothing connects at import time. Every command builds Settings, connects as its R-7.14 user and
turns an operator mistake into one line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import redis
import typer
from rich.console import Console
from rich.table import Table

from contracts.shard import validate_account_id
from worker.redis_acl import Role
from worker.settings import Settings, SettingsError, redact_url, redis_url_for
from worker.store.keys import RQ_QUEUE, Keys
from worker.store.runtime import DeploymentError

EXIT_USAGE = 2  # the operator's input is wrong
EXIT_REFUSED = 3  # the deployment refused the action (outcome printed)
EXIT_UNAVAILABLE = 4  # Redis or the ops worker cannot be reached in time

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one line per error, never wrapped at 80 columns


class CliError(Exception):
    """One line for the operator, then exit with `code`."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    raise CliError(message, code)


# -- connections -------------------------------------------------------------------------------


def settings() -> Settings:
    try:
        return Settings()
    except (SettingsError, ValueError) as exc:
        fail(f"configuration: {_first_line(exc)}")


def connect(cfg: Settings, role: Role) -> redis.Redis:
    url = redis_url_for(cfg, role)
    client = redis.Redis.from_url(url, socket_connect_timeout=5, health_check_interval=30)
    try:
        client.ping()
    except redis.AuthenticationError:
        fail(f"Redis refused the {role} credentials at {redact_url(url)}", EXIT_UNAVAILABLE)
    except redis.ConnectionError as exc:
        fail(f"cannot reach Redis at {redact_url(url)}: {exc} (is `make run` up?)",
             EXIT_UNAVAILABLE)
    return client


@contextmanager
def ops_client(role: Role = "ops") -> Iterator[tuple[redis.Redis, Keys, Settings]]:
    from worker.store.runtime import load_keys

    cfg = settings()
    client = connect(cfg, role)
    try:
        yield client, load_keys(client, cfg.key_prefix), cfg
    finally:
        client.close()


def run_job(client: redis.Redis, name: str, request: dict[str, Any], timeout: float,
            ttl: int | None = None) -> dict[str, Any]:
    """Enqueue worker.jobs.<name> with one JSON argument and wait for its outcome."""
    from rq import Queue
    from rq.results import Result
    from rq.serializers import JSONSerializer

    queue = Queue(RQ_QUEUE, connection=client, serializer=JSONSerializer)
    job = queue.enqueue(f"worker.jobs.{name}", request, result_ttl=3600, failure_ttl=3600,
                        ttl=ttl)
    result = job.latest_result(timeout=max(1, int(timeout)))
    if result is None:
        fail(f"no ops worker finished job {job.id} within {timeout:.0f} s "
             "(is the ops process running?)", EXIT_UNAVAILABLE)
    if result.type != Result.Type.SUCCESSFUL:
        fail(f"job {job.id} failed: {_first_line(result.exc_string or 'unknown error')}",
             EXIT_UNAVAILABLE)
    value = result.return_value
    return value if isinstance(value, dict) else {"outcome": "applied", "value": value}


def _first_line(exc: object) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


def emit(data: Any, as_json: bool, render: Callable[[], None] | None = None) -> None:
    if as_json or render is None:
        out.print_json(json.dumps(data, default=str))
    else:
        render()


def finish_outcome(result: dict[str, Any], as_json: bool) -> None:
    """Print a job outcome; refused outcomes exit non-zero."""
    outcome = result.get("outcome")

    def render() -> None:
        style = {"applied": "green", "noop": "yellow"}.get(str(outcome), "red")
        line = f"[{style}]{outcome}[/]"
        if result.get("reason"):
            line += f": {result['reason']}"
        for key in ("account_id", "phase", "entry_id", "retired_at"):
            if result.get(key):
                line += f"  {key}={result[key]}"
        out.print(line)
        validation = result.get("validation")
        if isinstance(validation, dict) and validation.get("criteria"):
            print_criteria(validation)

    emit(result, as_json, render)
    if outcome == "refused":
        raise typer.Exit(EXIT_REFUSED)


def print_criteria(validation: dict[str, Any]) -> None:
    table = Table(title=f"gate {validation.get('from_phase')} → {validation.get('to_phase')}")
    for col in ("criterion", "required", "actual", "met"):
        table.add_column(col)
    for c in validation.get("criteria", []):
        actual = c.get("actual")
        shown = "unbounded" if c.get("rr_unbounded") else ("no data" if actual is None
                                                            else str(actual))
        table.add_row(c["name"], c["required"], shown,
                      "[green]yes[/]" if c["met"] else "[red]no[/]")
    out.print(table)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the job.")]
OperatorOpt = Annotated[str, typer.Option("--operator", help="Your operator id (audited).")]


def account_arg(value: str) -> str:
    try:
        return validate_account_id(value)
    except Exception as exc:
        raise typer.BadParameter(f"{value!r} is not a valid account id") from exc


AccountArg = Annotated[str, typer.Argument(help="Account id.", callback=account_arg)]

phasectl = typer.Typer(name="phasectl", no_args_is_help=True, add_completion=False,
                       help="Operate Phaseguard: accounts, status, gates, overrides, exports.")
accounts_app = typer.Typer(no_args_is_help=True, help="Register, list and retire accounts.")
deadletter_app = typer.Typer(no_args_is_help=True, help="Inspect, requeue or discard dead "
                                                        "letters.")
phasectl.add_typer(accounts_app, name="accounts")
phasectl.add_typer(deadletter_app, name="deadletter")


# -- accounts ----------------------------------------------------------------------------------


@accounts_app.command("add")
def accounts_add_cmd(account: AccountArg, operator: OperatorOpt = "ops",
                     clock: Annotated[str, typer.Option(help="redis, or message (replay)")
                                      ] = "redis",
                     starts_at: Annotated[str | None, typer.Option(help="message clock: ISO "
                                                                        "instant")] = None,
                     currency: Annotated[str | None, typer.Option()] = None,
                     timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Register ACCOUNT in experience (R-7.7)."""
    if clock not in ("redis", "message"):
        fail("--clock must be redis or message")
    with ops_client() as (client, _keys, _cfg):
        result = run_job(client, "accounts_add", {
            "account_id": account, "operator_id": operator, "clock": clock,
            "starts_at": starts_at, "currency": currency}, timeout)
    finish_outcome(result, as_json)


@accounts_app.command("retire")
def accounts_retire_cmd(account: AccountArg, operator: OperatorOpt = "ops",
                        timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Stop accepting ACCOUNT's input (R-7.7)."""
    with ops_client() as (client, _keys, _cfg):
        result = run_job(client, "accounts_retire", {"account_id": account,
                                                     "operator_id": operator}, timeout)
    finish_outcome(result, as_json)


@accounts_app.command("list")
def accounts_list_cmd(as_json: JsonOpt = False) -> None:
    """Every registered account with its phase and breaker."""
    rows: list[dict[str, Any]] = []
    with ops_client() as (client, keys, _cfg):
        for k in range(keys.shards):
            for acc, raw in sorted(client.hgetall(keys.registry(k)).items()):
                name = _s(acc)
                reg = json.loads(raw)
                st = client.hmget(keys.state(k, name), "phase", "halted", "degraded",
                                  "position_size")
                rows.append({"account_id": name, "shard": k, "clock": reg.get("clock"),
                             "currency": reg.get("currency"), "retired_at": reg.get("retired_at"),
                             "phase": _s(st[0]) if st[0] else None,
                             "halted": st[1] == b"1", "degraded": st[2] == b"1",
                             "position_size": _s(st[3]) if st[3] else None})

    def render() -> None:
        table = Table(title=f"{len(rows)} accounts")
        for col in ("account", "phase", "size", "breaker", "degraded", "clock", "retired"):
            table.add_column(col)
        for r in sorted(rows, key=lambda r: r["account_id"]):
            table.add_row(r["account_id"], r["phase"] or "?", r["position_size"] or "",
                          "[red]tripped[/]" if r["halted"] else "ok",
                          "[red]yes[/]" if r["degraded"] else "no", r["clock"] or "",
                          r["retired_at"] or "")
        out.print(table)

    emit(rows, as_json, render)


# -- status / validate / advance ---------------------------------------------------------------


def _load(client: redis.Redis, keys: Keys, account: str) -> Any:
    from worker.store.codec import StateCodecError, decode_state

    k = keys.shard(account)
    if not client.hexists(keys.registry(k), account):
        fail(f"unknown account {account!r}", EXIT_REFUSED)
    raw = client.hgetall(keys.state(k, account))
    if not raw:
        fail(f"the state of {account!r} is missing (state_unavailable)", EXIT_REFUSED)
    try:
        return decode_state({_s(f): _s(v) for f, v in raw.items()})
    except StateCodecError as exc:
        fail(f"the state of {account!r} is unreadable: {exc}", EXIT_REFUSED)


@phasectl.command("status")
def status_cmd(account: AccountArg, as_json: JsonOpt = False) -> None:
    """Phase, breaker, size and why, today's entries, and the next gate's criteria."""
    from worker.domain.calendar import Calendar
    from worker.domain.decide import evaluate
    from worker.store.runtime import fetch_policy, redis_now

    with ops_client() as (client, keys, _cfg):
        policy = fetch_policy(client, keys)
        st = _load(client, keys, account)
        k = keys.shard(account)
        now = redis_now(client.time())
        cal = Calendar(policy.calendar)
        today = cal.trading_day(now).isoformat()
        ledger = {_s(f): _s(v) for f, v in client.hgetall(keys.entries(k, account)).items()}
        dls = client.hget(keys.state(k, account), "dead_letters")
    gate = evaluate(st, policy)
    slot = ledger.get(f"slot:{today}")
    data = {
        "account_id": account, "phase": st.phase, "breaker_tripped": st.halted,
        "degraded": st.degraded, "dead_letters": int(dls or 0),
        "position_size": str(st.position_size), "size_reason": st.size_reason,
        "size_reduced": st.size_reduced, "currency": st.currency, "trading_day": today,
        "live_entry_today": slot is not None,
        "next_allowed_at": (cal.next_open_after(now).isoformat()
                            if slot and st.phase == "proof" else None),
        "denials_today": {f.split(":", 2)[2]: int(v) for f, v in ledger.items()
                          if f.startswith(f"denyn:{today}:")},
        "gate": gate.as_json() if gate else None, "policy_version": policy.version,
    }

    def render() -> None:
        out.print(f"[bold]{account}[/]  phase [bold]{st.phase}[/]  size "
                  f"{st.position_size} {st.currency}  ({st.size_reason})")
        out.print("breaker: " + ("[red]TRIPPED[/] (acknowledge to resume)" if st.halted
                                 else "[green]ok[/]")
                  + ("   [red]DEGRADED[/]: a message was dead-lettered "
                     "(phasectl deadletter list)" if st.degraded else ""))
        out.print(f"today {today}: live entry {'used' if slot else 'not used'}"
                  + (f", next allowed {data['next_allowed_at']}" if data["next_allowed_at"]
                     else ""))
        if gate:
            print_criteria(gate.as_json())
        else:
            out.print("top of the ladder: no further gate")

    emit(data, as_json, render)


@phasectl.command("validate")
def validate_cmd(account: AccountArg, as_json: JsonOpt = False) -> None:
    """Evaluate the next gate now, read-only (R-3.8)."""
    from worker.domain.decide import evaluate
    from worker.store.runtime import fetch_policy

    with ops_client() as (client, keys, _cfg):
        policy = fetch_policy(client, keys)
        st = _load(client, keys, account)
    gate = evaluate(st, policy)
    data = gate.as_json() if gate else {"eligible": False, "reason": "top of the ladder"}
    emit(data, as_json, (lambda: print_criteria(data)) if gate else None)
    if not data.get("eligible"):
        raise typer.Exit(1)


@phasectl.command("advance")
def advance_cmd(account: AccountArg, operator: OperatorOpt = "ops",
                timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Advance ACCOUNT one phase if its gate holds at execution (R-7.1)."""
    with ops_client() as (client, _keys, _cfg):
        result = run_job(client, "advance", {"account_id": account, "operator_id": operator,
                                             "request_id": str(uuid.uuid4())}, timeout)
    finish_outcome(result, as_json)


# -- dead letters --------------------------------------------------------------------------------


@deadletter_app.command("list")
def deadletter_list_cmd(account: Annotated[str | None, typer.Option(
        help="Only this account's.")] = None, as_json: JsonOpt = False) -> None:
    """Every dead letter with its reason (R-10.6)."""
    rows: list[dict[str, Any]] = []
    with ops_client() as (client, keys, _cfg):
        for k in range(keys.shards):
            entries: Any = client.xrange(keys.deadletter(k))
            for entry_id, fields in entries:
                f = {_s(a): _s(b) for a, b in fields.items()}
                if account and f.get("account_id") != account:
                    continue
                rows.append({"shard": k, "entry_id": _s(entry_id), **{
                    key: f.get(key) for key in ("account_id", "reason", "error", "type",
                                                "source_id")}})

    def render() -> None:
        table = Table(title=f"{len(rows)} dead letters")
        for col in ("shard", "entry", "account", "reason", "error"):
            table.add_column(col)
        for r in rows:
            table.add_row(str(r["shard"]), r["entry_id"], r["account_id"] or "-",
                          r["reason"] or "", (r["error"] or "")[:80])
        out.print(table)

    emit(rows, as_json, render)


def _deadletter_action(name: str, shard: int, entry_id: str, operator: str, timeout: float,
                       as_json: bool) -> None:
    with ops_client() as (client, _keys, _cfg):
        result = run_job(client, name, {"shard": shard, "entry_id": entry_id,
                                        "operator_id": operator}, timeout)
    finish_outcome(result, as_json)


@deadletter_app.command("requeue")
def deadletter_requeue_cmd(shard: int, entry_id: str, operator: OperatorOpt = "ops",
                           timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Put a dead letter back into its inbox (refused if its trade was applied)."""
    _deadletter_action("deadletter_requeue", shard, entry_id, operator, timeout, as_json)


@deadletter_app.command("discard")
def deadletter_discard_cmd(shard: int, entry_id: str, operator: OperatorOpt = "ops",
                           timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Drop a dead letter for good (audited)."""
    _deadletter_action("deadletter_discard", shard, entry_id, operator, timeout, as_json)


# -- signed actions (R-7.2 .. R-7.7a) ------------------------------------------------------------

override_app = typer.Typer(no_args_is_help=True, help="Signed overrides: force-advance, "
                                                      "rollback, reset-epoch, clear-reduction.")
policy_app = typer.Typer(no_args_is_help=True, help="Show, validate or apply the policy.")
phasectl.add_typer(override_app, name="override")
phasectl.add_typer(policy_app, name="policy")

ReasonOpt = Annotated[str, typer.Option("--reason", help="Why (audited, <= 500 characters).")]
StdinOpt = Annotated[bool, typer.Option("--password-stdin",
                                        help="Read the override password from stdin.")]


def read_password(from_stdin: bool) -> str:
    """The override password: stdin or a no-echo prompt, never argv (R-7.13)."""
    import getpass

    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            fail("no password on stdin")
        return line
    if not sys.stdin.isatty():
        fail("no terminal for the password prompt: use --password-stdin")
    return getpass.getpass("override password: ")


def signed_request(client: redis.Redis, keys: Keys, *, action: str, operator: str,
                   reason: str, password: str, account: str | None,
                   target: str | None = None, policy_json: str | None = None,
                   expected_policy_version: str | None = None) -> dict[str, Any]:
    """Build and sign a request with the deployment's KDF parameters and Redis's clock."""
    from worker.ops.keyring import load_kdf
    from worker.ops.signing import derive_key, new_request, sign
    from worker.store.runtime import redis_now

    try:
        params = load_kdf(client, keys)
    except ValueError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    expected = None
    if account is not None:
        k = keys.shard(account)
        phase = client.hget(keys.state(k, account), "phase")
        if phase is None:
            fail(f"unknown account {account!r}", EXIT_REFUSED)
        expected = _s(phase)
    fields = new_request(deployment_id=params.deployment_id, action=action,
                         operator_id=operator, reason=reason, account_id=account,
                         expected_phase=expected, target_phase=target,
                         now=redis_now(client.time()), policy=policy_json,
                         expected_policy_version=expected_policy_version)
    return sign(fields, derive_key(password, params))


def run_signed(action: str, account: str | None, operator: str, reason: str,
               from_stdin: bool, timeout: float, as_json: bool, *, target: str | None = None,
               policy_json: str | None = None, expected_version: str | None = None) -> None:
    if not reason.strip():
        fail("--reason must say why")
    password = read_password(from_stdin)
    with ops_client() as (client, keys, _cfg):
        request = signed_request(client, keys, action=action, operator=operator, reason=reason,
                                 password=password, account=account, target=target,
                                 policy_json=policy_json,
                                 expected_policy_version=expected_version)
        del password
        from worker.ops.signing import parse_ts
        from worker.store.runtime import redis_now

        ttl = int((parse_ts(request["expires_at"]) - redis_now(client.time())).total_seconds())
        result = run_job(client, action, request, timeout, ttl=max(ttl, 1))
    finish_outcome(result, as_json)


@phasectl.command("acknowledge")
def acknowledge_cmd(account: AccountArg, operator: OperatorOpt, reason: ReasonOpt,
                    password_stdin: StdinOpt = False, timeout: TimeoutOpt = 60.0,
                    as_json: JsonOpt = False) -> None:
    """Clear ACCOUNT's circuit breaker (signed, R-7.2). Alias: ack."""
    run_signed("acknowledge", account, operator, reason, password_stdin, timeout, as_json)


@phasectl.command("ack", hidden=True)
def ack_cmd(account: AccountArg, operator: OperatorOpt, reason: ReasonOpt,
            password_stdin: StdinOpt = False, timeout: TimeoutOpt = 60.0,
            as_json: JsonOpt = False) -> None:
    """Alias of acknowledge."""
    run_signed("acknowledge", account, operator, reason, password_stdin, timeout, as_json)


PhaseOpt = Annotated[str, typer.Option("--to", help="Target phase: experience, proof, trial, "
                                                    "scaling.")]


def _phase(value: str) -> str:
    if value not in ("experience", "proof", "trial", "scaling"):
        fail(f"--to {value!r} is not a phase (experience, proof, trial, scaling)")
    return value


@override_app.command("force-advance")
def force_advance_cmd(account: AccountArg, to: PhaseOpt, operator: OperatorOpt,
                      reason: ReasonOpt, password_stdin: StdinOpt = False,
                      timeout: TimeoutOpt = 60.0, as_json: JsonOpt = False) -> None:
    """One phase up without the gate (R-7.3); an override incident."""
    run_signed("force_advance", account, operator, reason, password_stdin, timeout, as_json,
               target=_phase(to))


@override_app.command("rollback")
def rollback_cmd(account: AccountArg, to: PhaseOpt, operator: OperatorOpt, reason: ReasonOpt,
                 password_stdin: StdinOpt = False, timeout: TimeoutOpt = 60.0,
                 as_json: JsonOpt = False) -> None:
    """Move ACCOUNT down to a named lower phase (R-7.4)."""
    run_signed("rollback", account, operator, reason, password_stdin, timeout, as_json,
               target=_phase(to))


@override_app.command("reset-epoch")
def reset_epoch_cmd(account: AccountArg, operator: OperatorOpt, reason: ReasonOpt,
                    password_stdin: StdinOpt = False, timeout: TimeoutOpt = 60.0,
                    as_json: JsonOpt = False) -> None:
    """Restart the epoch's counters and windows (R-7.5); an override incident."""
    run_signed("reset_epoch", account, operator, reason, password_stdin, timeout, as_json)


@override_app.command("clear-reduction")
def clear_reduction_cmd(account: AccountArg, operator: OperatorOpt, reason: ReasonOpt,
                        password_stdin: StdinOpt = False, timeout: TimeoutOpt = 60.0,
                        as_json: JsonOpt = False) -> None:
    """Remove the size reduction left by a downgrade (R-7.6)."""
    run_signed("clear_reduction", account, operator, reason, password_stdin, timeout, as_json)


def _load_policy_file(path: Path) -> Any:
    from worker.domain.policy import PolicyError, load_policy_toml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        return load_policy_toml(text)
    except PolicyError as exc:
        fail(f"{path}: {exc}")


@policy_app.command("show")
def policy_show_cmd(as_json: JsonOpt = False) -> None:
    """The effective policy and its version."""
    from worker.store.runtime import fetch_policy

    with ops_client() as (client, keys, _cfg):
        policy = fetch_policy(client, keys)
    data = {"version": policy.version, "policy": json.loads(policy.canonical_json())}
    emit(data, as_json, lambda: out.print_json(json.dumps(data)))


@policy_app.command("validate")
def policy_validate_cmd(file: Path, as_json: JsonOpt = False) -> None:
    """Check a policy TOML file; every bad field is named."""
    policy = _load_policy_file(file)
    data = {"valid": True, "version": policy.version}
    emit(data, as_json, lambda: out.print(f"[green]valid[/]  version {policy.version}"))


@policy_app.command("apply")
def policy_apply_cmd(file: Path, operator: OperatorOpt, reason: ReasonOpt,
                     password_stdin: StdinOpt = False, timeout: TimeoutOpt = 60.0,
                     as_json: JsonOpt = False) -> None:
    """Install a new policy (signed, R-7.7a); refused if the policy changed meanwhile."""
    from worker.store.runtime import fetch_policy

    policy = _load_policy_file(file)
    with ops_client() as (client, keys, _cfg):
        current = fetch_policy(client, keys).version
    run_signed("policy_apply", None, operator, reason, password_stdin, timeout, as_json,
               policy_json=policy.canonical_json(), expected_version=current)


@phasectl.command("events")
def events_cmd(follow: Annotated[bool, typer.Option("--follow", "-f",
                                                    help="Keep following.")] = False,
               account: Annotated[str | None, typer.Option(help="Only this account.")] = None,
               as_json: JsonOpt = False) -> None:
    """Every shard's events, oldest first (with --follow: then new ones as they come)."""
    from contracts.client import PhaseguardClient

    with ops_client() as (client, keys, _cfg):
        bot = PhaseguardClient(client, keys.prefix)
        stream = bot.subscribe(start="beginning", block_ms=1000,
                               max_idle=None if follow else 1)
        try:
            for entry_id, ev in stream:
                if account and ev.account_id != account:
                    continue
                if as_json:
                    out.print_json(ev.model_dump_json())
                else:
                    out.print(f"{entry_id}  {ev.occurred_at.isoformat()}  "
                              f"[bold]{ev.type}[/]  {ev.account_id or '-'}  "
                              f"{json.dumps(ev.payload, default=str)[:120]}")
        except KeyboardInterrupt:
            return


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- processes ------------------------------------------------------------------------------------


def _prepare_deployment(cfg: Settings, client: redis.Redis, shards: int) -> tuple[Keys, Any]:
    """Checks and one-time initialisation shared by the worker processes (R-12.2, R-11.1)."""
    from worker.domain.calendar import Calendar
    from worker.store.runtime import (
        check_persistence,
        init_meta,
        install_policy,
        read_policy_file,
    )

    log = _log()
    problems = check_persistence(client, cfg.unsafe_redis)
    if problems:
        log.warning("UNSAFE_REDIS", problems=problems,
                    detail="PHASE_UNSAFE_REDIS=1: acknowledged messages may be lost")
    policy = read_policy_file(str(cfg.policy_file) if cfg.policy_file else None)
    keys = init_meta(client, cfg.key_prefix, shards)
    if install_policy(client, keys, policy):
        log.info("policy_installed", version=policy.version)
    from worker.ops.keyring import ensure_kdf
    from worker.ops.signing import check_password
    from worker.store.runtime import fetch_policy, redis_now

    effective = fetch_policy(client, keys)
    # public parameters, stored once; a short password refuses the start
    ensure_kdf(client, keys, effective.overrides.kdf_iterations)
    if cfg.override_password is not None:
        check_password(cfg.override_password.get_secret_value(),
                       effective.overrides.min_password_length)
    status = Calendar(effective.calendar).holidays_status(redis_now(client.time()).date())
    if status == "expired":
        raise DeploymentError("the policy's holiday list has expired (holidays_valid_through): "
                              "apply a policy with the next year's holidays")
    if status == "warning":
        log.warning("holidays_expiring", valid_through=str(
            effective.calendar.holidays_valid_through))
    return keys, effective


def _log() -> Any:
    import structlog

    return structlog.get_logger("phaseguard")


def worker_main(argv: list[str] | None = None) -> int:
    """phase-worker / python -m worker: the inbox consumer."""
    import argparse

    from worker.consumer import ShardConsumer, tune_gc
    from worker.logging import configure_logging
    from worker.store.runtime import DEFAULT_SHARDS, PolicyHolder

    parser = argparse.ArgumentParser(prog="phase-worker", description="Phaseguard consumer.")
    parser.add_argument("--shards", type=int, default=DEFAULT_SHARDS,
                        help="shard count at first start (fixed afterwards)")
    parser.add_argument("--lease-ms", type=int, default=10_000, help=argparse.SUPPRESS)
    parser.add_argument("--max-shards", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default=None, help=argparse.SUPPRESS)
    # test hook: park after reading a batch and before EXEC, after touching the named file
    parser.add_argument("--park-before-exec", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        cfg = Settings()
        configure_logging(cfg.log_format)
        client = redis.Redis.from_url(redis_url_for(cfg, "worker"), health_check_interval=30)
        keys, _policy = _prepare_deployment(cfg, client, args.shards)
    except (SettingsError, DeploymentError, ValueError, redis.RedisError) as exc:
        print(f"phase-worker: {_first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    stop = {"now": False}

    def on_signal(signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hook = None
    if args.park_before_exec is not None:
        marker: Path = args.park_before_exec

        def park(point: str) -> None:
            if point == "before_exec":
                marker.write_text("parked\n")
                while True:  # wait here to be killed: the test's crash point
                    time.sleep(3600)

        hook = park
    tune_gc()
    consumer = ShardConsumer(client, keys, PolicyHolder(client, keys), lease_ms=args.lease_ms,
                             max_shards=args.max_shards, fault_hook=hook,
                             **({"name": args.name} if args.name else {}))
    _log().info("worker_started", name=consumer.name, shards=keys.shards, prefix=keys.prefix)
    consumer.run(lambda: stop["now"])
    _log().info("worker_stopped", name=consumer.name)
    return 0


def ops_worker_main() -> int:
    """The ops worker: the Phaseguard RQ worker class on `phase-ops` (R-12.1)."""
    from rq.serializers import JSONSerializer

    from worker.logging import configure_logging
    from worker.ops_worker import PhaseguardJob, PhaseguardWorker
    from worker.store.runtime import DEFAULT_SHARDS

    try:
        cfg = Settings()
        configure_logging(cfg.log_format)
        client = redis.Redis.from_url(redis_url_for(cfg, "worker"), health_check_interval=30)
        keys, policy = _prepare_deployment(cfg, client, DEFAULT_SHARDS)
        from worker.ops import keyring

        if cfg.override_password is not None:
            # derived once, before any job runs; forked work horses inherit it
            keyring.install(cfg.override_password.get_secret_value(),
                            keyring.ensure_kdf(client, keys, policy.overrides.kdf_iterations),
                            policy.overrides.min_password_length)
        else:
            _log().warning("overrides_not_configured",
                           detail="PHASE_OVERRIDE_PASSWORD unset: signed actions are refused")
    except (SettingsError, DeploymentError, ValueError, redis.RedisError) as exc:
        print(f"phase-ops-worker: {_first_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    w = PhaseguardWorker([RQ_QUEUE], connection=client, job_class=PhaseguardJob,
                         serializer=JSONSerializer)
    w.work(with_scheduler=False)
    return 0


def phasectl_main() -> None:
    """Entry point: one line per mistake, never a traceback."""
    try:
        code = phasectl(standalone_mode=False)
    except CliError as exc:
        err.print(f"phasectl: {exc}", highlight=False, markup=False)
        raise SystemExit(exc.code) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        err.print("phasectl: aborted", highlight=False)
        raise SystemExit(130) from None
    except typer.TyperException as exc:  # usage errors (typer vendors click's exceptions)
        formatter = getattr(exc, "format_message", None)
        message = formatter() if callable(formatter) else str(exc)
        err.print(f"phasectl: {message}", highlight=False, markup=False)
        raise SystemExit(int(getattr(exc, "exit_code", EXIT_USAGE))) from None
    except (DeploymentError, redis.RedisError) as exc:
        err.print(f"phasectl: {_first_line(exc)}", highlight=False, markup=False)
        raise SystemExit(EXIT_UNAVAILABLE) from None
    except Exception as exc:  # anything unforeseen: still one line
        err.print(f"phasectl: unexpected error: {type(exc).__name__}: {_first_line(exc)}",
                  highlight=False, markup=False)
        raise SystemExit(1) from None
    raise SystemExit(code if isinstance(code, int) else 0)


def _register_extensions() -> None:
    """Commands that live beside their feature modules register themselves here."""
    import importlib

    for module in ("worker.export_cli", "worker.replay.cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(phasectl)


_register_extensions()
