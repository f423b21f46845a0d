"""Imports point one way (STYLE.md): the functional core and the wire contracts do no I/O.

Walks worker/domain/*.py and the pure contracts modules with ``ast`` (nothing is imported) and
fails on an I/O import, on a reach into the layers above, or on a clock read in the core.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_MODULES = ("messages", "events", "codec", "shard", "keys", "errors")

# Modules the pure code never imports: I/O, clocks, randomness, concurrency, logging.
IO_MODULES = frozenset(
    {
        "redis",
        "rq",
        "structlog",
        "logging",
        "os",
        "time",
        "random",
        "secrets",
        "socket",
        "subprocess",
        "threading",
        "multiprocessing",
        "asyncio",
        "requests",
        "httpx",
        "importlib",
    }
)
# The layers above the core, and the contracts' own Redis client.
DOMAIN_FORBIDDEN = IO_MODULES | {
    "worker.store",
    "worker.consumer",
    "worker.jobs",
    "worker.ops",
    "worker.cli",
    "worker.replay",
    "worker.settings",
    "worker.logging",
    "worker.redis_server",
    "worker.redis_acl",
    "contracts.client",
}
CONTRACTS_FORBIDDEN = IO_MODULES | {"worker", "contracts.client"}
# Calls that make a function impure however they were imported.
FORBIDDEN_CALLS = frozenset({"open", "print", "input", "__import__", "exec", "eval"})
CLOCK_ATTRIBUTES = frozenset({"now", "utcnow", "today"})


@dataclass(frozen=True)
class Violation:
    line: int
    what: str


def _absolute(module: str | None, level: int, package: str) -> str:
    """Resolve ``from ..x import y`` inside ``package`` to an absolute module name."""
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _forbidden(name: str, forbidden: frozenset[str]) -> bool:
    return any(name == banned or name.startswith(banned + ".") for banned in forbidden)


def check_source(source: str, package: str, forbidden: frozenset[str]) -> list[Violation]:
    """Every forbidden import, impure builtin call and clock read in ``source``."""
    found: list[Violation] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module, node.level, package)
            # `from pkg import x` may name a module (pkg.x) or an attribute of pkg
            names = (
                [base]
                if _forbidden(base, forbidden)
                else [f"{base}.{alias.name}" for alias in node.names]
            )
        else:
            if isinstance(node, ast.Call):
                func = node.func
                if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
                    found.append(Violation(node.lineno, f"calls {func.id}()"))
                if isinstance(func, ast.Attribute) and func.attr in CLOCK_ATTRIBUTES:
                    found.append(Violation(node.lineno, f"reads the clock: .{func.attr}()"))
            continue
        found.extend(
            Violation(node.lineno, f"imports {name}")
            for name in names
            if _forbidden(name, forbidden)
        )
    return found


def _files() -> list[tuple[Path, str, frozenset[str]]]:
    domain = sorted((ROOT / "worker" / "domain").glob("*.py"))
    contracts = [ROOT / "contracts" / f"{name}.py" for name in CONTRACT_MODULES]
    return [(path, "worker.domain", DOMAIN_FORBIDDEN) for path in domain] + [
        (path, "contracts", CONTRACTS_FORBIDDEN) for path in contracts if path.exists()
    ]


FILES = _files()


@pytest.mark.parametrize(
    ("path", "package", "forbidden"), FILES, ids=[str(f[0].relative_to(ROOT)) for f in FILES]
)
def test_pure_module_does_no_io(path: Path, package: str, forbidden: frozenset[str]) -> None:
    violations = check_source(path.read_text(), package, forbidden)
    assert violations == [], f"{path.relative_to(ROOT)}: " + "; ".join(
        f"line {v.line} {v.what}" for v in violations
    )


def test_the_functional_core_is_among_the_checked_files() -> None:
    assert ROOT / "worker" / "domain" / "__init__.py" in [path for path, _, _ in FILES]


@pytest.mark.parametrize(
    ("source", "package", "forbidden", "expected"),
    [
        ("import redis\n", "worker.domain", DOMAIN_FORBIDDEN, "imports redis"),
        ("import redis.client as rc\n", "worker.domain", DOMAIN_FORBIDDEN, "imports redis.client"),
        ("from os import environ\n", "worker.domain", DOMAIN_FORBIDDEN, "imports os"),
        ("from time import monotonic\n", "worker.domain", DOMAIN_FORBIDDEN, "imports time"),
        ("from ..store import keys\n", "worker.domain", DOMAIN_FORBIDDEN, "imports worker.store"),
        ("from worker import jobs\n", "worker.domain", DOMAIN_FORBIDDEN, "imports worker.jobs"),
        (
            "import contracts.client\n",
            "worker.domain",
            DOMAIN_FORBIDDEN,
            "imports contracts.client",
        ),
        (
            "from worker.domain import x\n",
            "contracts",
            CONTRACTS_FORBIDDEN,
            "imports worker.domain",
        ),
        ("import structlog\n", "contracts", CONTRACTS_FORBIDDEN, "imports structlog"),
        ("x = datetime.now(tz)\n", "worker.domain", DOMAIN_FORBIDDEN, "reads the clock: .now()"),
        ("print('x')\n", "worker.domain", DOMAIN_FORBIDDEN, "calls print()"),
    ],
)
def test_checker_flags_an_impure_module(
    source: str, package: str, forbidden: frozenset[str], expected: str
) -> None:
    assert [v.what for v in check_source(source, package, forbidden)] == [expected]


@pytest.mark.parametrize(
    "source",
    [
        "from decimal import Decimal\nfrom datetime import datetime, timedelta\n",
        "from . import policy\nfrom .rules import Verdict\n",
        "from contracts.messages import TradeClosed\n",
        "import redistribution\nimport timeit_like\n",
    ],
)
def test_checker_accepts_a_pure_module(source: str) -> None:
    assert check_source(source, "worker.domain", DOMAIN_FORBIDDEN) == []
