"""contracts is shared with the bot and subscribers: it never imports worker (R-9.5)."""

from __future__ import annotations

import ast
from pathlib import Path

import contracts

CONTRACTS_DIR = Path(contracts.__file__).resolve().parent


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_r9_5_contracts_never_imports_worker() -> None:
    offenders = {
        f"{path.relative_to(CONTRACTS_DIR)}: {module}"
        for path in CONTRACTS_DIR.rglob("*.py")
        for module in imported_modules(path)
        if module == "worker" or module.startswith("worker.")
    }

    assert not offenders
