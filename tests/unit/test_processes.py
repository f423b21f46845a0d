"""The processes of R-12.1, without Redis: their entry points and phasectl's commands.

The processes themselves run against a real Redis in the integration tests (test_phasectl,
test_crash_recovery, test_processes); here only what they are called and what they offer.
"""

from __future__ import annotations

import runpy
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
from rq.worker import Worker
from typer.testing import CliRunner

import worker.cli as cli
from worker.ops_worker import PhaseguardJob, PhaseguardWorker
from worker.ops_worker import main as ops_worker_entry
from worker.store.keys import RQ_QUEUE

ROOT = Path(__file__).resolve().parents[2]
# R-12.1's list; `override` groups force-advance, rollback, reset-epoch and clear-reduction.
SPEC_COMMANDS = ("accounts", "status", "validate", "advance", "override", "acknowledge", "ack",
                 "export", "archive", "events", "deadletter", "policy", "replay", "simulate",
                 "report")


def commands() -> dict[str, Any]:
    root: Any = typer.main.get_command(cli.phasectl)
    found: dict[str, Any] = root.commands
    return found


def test_r12_1_phase_worker_and_phasectl_are_the_installed_commands() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

    assert project["project"]["scripts"] == {"phase-worker": "worker.cli:worker_main",
                                             "phasectl": "worker.cli:phasectl_main"}


def test_r12_1_python_m_worker_is_phase_worker(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["worker", "--help"])

    with pytest.raises(SystemExit) as done:
        runpy.run_module("worker", run_name="__main__")

    assert done.value.code == 0
    assert capsys.readouterr().out.startswith("usage: phase-worker")


def test_r12_1_the_ops_worker_is_phaseguards_rq_worker_class_on_phase_ops() -> None:
    assert RQ_QUEUE == "phase-ops"
    assert issubclass(PhaseguardWorker, Worker)
    assert PhaseguardWorker.job_class is PhaseguardJob
    assert ops_worker_entry.__module__ == "worker.ops_worker"


@pytest.mark.parametrize("name", SPEC_COMMANDS)
def test_r12_1_phasectl_has_every_command_of_the_rulebook(name: str) -> None:
    assert name in commands()


@pytest.mark.parametrize(("group", "names"), [
    ("accounts", {"add", "list", "retire"}),
    ("override", {"force-advance", "rollback", "reset-epoch", "clear-reduction"}),
    ("deadletter", {"list", "requeue", "discard"}),
    ("policy", {"show", "validate", "apply"}),
])
def test_r12_1_phasectls_command_groups_have_their_subcommands(group: str,
                                                               names: set[str]) -> None:
    assert set(commands()[group].commands) >= names


@pytest.mark.parametrize("name", ["acknowledge", "ack"])
def test_r12_1_ack_is_an_alias_of_acknowledge(monkeypatch: pytest.MonkeyPatch,
                                              name: str) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(cli, "run_signed", lambda *args, **kw: calls.append(args))

    done = CliRunner().invoke(cli.phasectl, [name, "acct-1", "--operator", "alice", "--reason",
                                             "checked the bot", "--json"])

    assert done.exit_code == 0, done.output
    assert calls == [("acknowledge", "acct-1", "alice", "checked the bot", False, 60.0, True)]
    assert [p.name for p in commands()[name].params] == [
        p.name for p in commands()["acknowledge"].params]
