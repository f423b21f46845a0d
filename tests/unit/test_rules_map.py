"""docs/rules.md maps every rule id of the rulebook to the tests that prove it.

Fails when a rule lists no test (every rule is required), when a listed test does not exist or
is an expected failure, or when the map and the rulebook disagree about which rules there are.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT.parent / "shared" / "SPEC.md"
RULES_MD = ROOT / "docs" / "rules.md"
RULE_ID = re.compile(r"R-\d+\.\d+[a-z]?")
NODE = re.compile(r"`([^`\s]+\.py(?:::[A-Za-z_][A-Za-z0-9_]*)+)`")

# The rulebook's ids (SPEC v1), so the map stays enforced where ../shared is not checked out.
FROZEN_IDS: tuple[str, ...] = (
    "R-1.1", "R-1.2", "R-1.3", "R-1.4", "R-1.5", "R-1.6",
    "R-2.1", "R-2.2", "R-2.3", "R-2.4", "R-2.5", "R-2.6", "R-2.7", "R-2.8", "R-2.9", "R-2.10",
    "R-2.11",
    "R-3.1", "R-3.2", "R-3.3", "R-3.4", "R-3.5", "R-3.6", "R-3.7", "R-3.8", "R-3.9", "R-3.10",
    "R-4.1", "R-4.2", "R-4.3", "R-4.4", "R-4.5", "R-4.6", "R-4.7", "R-4.8", "R-4.9", "R-4.10",
    "R-4.11",
    "R-5.1", "R-5.2", "R-5.3",
    "R-6.1", "R-6.2", "R-6.3", "R-6.4",
    "R-7.1", "R-7.2", "R-7.3", "R-7.4", "R-7.5", "R-7.6", "R-7.7", "R-7.7a", "R-7.7b", "R-7.7c",
    "R-7.8", "R-7.9", "R-7.10", "R-7.11", "R-7.12", "R-7.13", "R-7.14",
    "R-8.1", "R-8.2", "R-8.3",
    "R-9.1", "R-9.2", "R-9.3", "R-9.4", "R-9.5",
    "R-10.1", "R-10.2", "R-10.3", "R-10.4", "R-10.5", "R-10.6", "R-10.7",
    "R-11.1", "R-11.2",
    "R-12.1", "R-12.2", "R-12.3", "R-12.4",
)

# Rules that must list at least one existing test: every rule of every section …
REQUIRED_SECTIONS: frozenset[int] = frozenset(range(1, 13))
# … and every rule by name, so that no id can drop out of the requirement unnoticed.
REQUIRED_RULES: frozenset[str] = frozenset(FROZEN_IDS)


def section(rule_id: str) -> int:
    return int(rule_id[2:].split(".")[0])


def is_required(rule_id: str) -> bool:
    return section(rule_id) in REQUIRED_SECTIONS or rule_id in REQUIRED_RULES


@cache
def spec_ids() -> tuple[str, ...]:
    """Every rule id the rulebook mentions, in rulebook order; the frozen list without it."""
    if not SPEC.is_file():
        return FROZEN_IDS
    found: dict[str, None] = {}
    for match in RULE_ID.finditer(SPEC.read_text(encoding="utf-8")):
        found.setdefault(match.group(), None)
    return tuple(sorted(found, key=_order))


def _order(rule_id: str) -> tuple[int, int, str]:
    major, minor = rule_id[2:].split(".")
    digits = minor.rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(major), int(digits), minor[len(digits):]


@cache
def rule_rows() -> tuple[tuple[str, tuple[str, ...], str], ...]:
    """(rule id, listed test nodes, the tests cell) for every row of docs/rules.md's table."""
    rows = []
    for line in RULES_MD.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or RULE_ID.fullmatch(cells[0]) is None:
            continue
        rows.append((cells[0], tuple(NODE.findall(cells[-1])), cells[-1]))
    return tuple(rows)


def mapped() -> dict[str, tuple[str, ...]]:
    return {rule_id: nodes for rule_id, nodes, _ in rule_rows()}


@cache
def defined_tests(path: Path) -> frozenset[str]:
    """`name` of every top-level test function and `Class::name` of every test method."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef))
    return frozenset(names)


@cache
def xfail_tests(path: Path) -> frozenset[str]:
    """`name` (or `Class::name`) of every test function marked `xfail` in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def marked(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
        return any("xfail" in ast.unparse(d) for d in fn.decorator_list)

    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and marked(node):
            names.add(node.name)
        elif isinstance(node, ast.ClassDef):
            names.update(f"{node.name}::{item.name}" for item in node.body
                         if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)
                         and marked(item))
    return frozenset(names)


def is_xfail(node: str) -> bool:
    path_text, _, name = node.partition("::")
    return name in xfail_tests(ROOT / path_text)


def missing_node(node: str) -> str | None:
    """Why a listed `path::name` is not a test, or None when it is one."""
    path_text, _, name = node.partition("::")
    path = ROOT / path_text
    if not path.is_file():
        return f"{node}: no file {path_text}"
    if not name.split("::")[-1].startswith("test_"):
        return f"{node}: not a test function name"
    if name not in defined_tests(path):
        return f"{node}: no such test in {path_text}"
    return None


# --- the map against the rulebook ----------------------------------------------------------------


def test_the_map_has_one_row_per_rule_of_the_rulebook_in_order() -> None:
    assert [rule_id for rule_id, _, _ in rule_rows()] == list(spec_ids())


def test_every_required_rule_lists_at_least_one_test() -> None:
    rules = mapped()
    unproven = [rule_id for rule_id in spec_ids()
                if is_required(rule_id) and not rules.get(rule_id)]

    assert unproven == []


def test_every_listed_test_exists() -> None:
    problems = [problem for nodes in mapped().values() for node in nodes
                if (problem := missing_node(node)) is not None]

    assert problems == []


def test_no_rule_is_left_to_a_later_issue() -> None:
    deferred = [rule_id for rule_id, _, cell in rule_rows() if "issue:" in cell]

    assert deferred == []


def test_no_listed_test_is_an_expected_failure() -> None:
    xfails = [node for nodes in mapped().values() for node in nodes
              if missing_node(node) is None and is_xfail(node)]

    assert xfails == []


def test_every_rule_of_the_rulebook_is_required() -> None:
    assert [rule_id for rule_id in spec_ids() if not is_required(rule_id)] == []
    assert set(FROZEN_IDS) == REQUIRED_RULES


def test_the_required_rules_are_rules_of_the_rulebook() -> None:
    assert set(spec_ids()) >= REQUIRED_RULES
    assert {section(rule_id) for rule_id in spec_ids()} >= REQUIRED_SECTIONS


def test_the_frozen_ids_are_the_rulebooks_ids() -> None:
    if not SPEC.is_file():
        pytest.skip("../shared/SPEC.md is not checked out next to the repository")
    assert spec_ids() == FROZEN_IDS


# --- the checks themselves -----------------------------------------------------------------------


def test_a_listed_test_that_does_not_exist_is_reported() -> None:
    this = Path(__file__).relative_to(ROOT).as_posix()

    assert missing_node(f"{this}::test_every_listed_test_exists") is None
    assert missing_node(f"{this}::test_that_was_never_written") is not None
    assert missing_node("tests/unit/no_such_file.py::test_x") is not None


@pytest.mark.parametrize("rule_id", ["R-1.1", "R-6.4", "R-7.7a", "R-7.7b", "R-7.7c", "R-8.2",
                                     "R-9.2", "R-10.6", "R-11.2", "R-12.1", "R-12.4"])
def test_a_rule_of_any_section_is_required(rule_id: str) -> None:
    assert is_required(rule_id)


def test_an_expected_failure_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "test_sample.py"
    path.write_text(
        "import pytest\n\n"
        "@pytest.mark.xfail(strict=True, reason='a known gap')\n"
        "def test_gap() -> None: ...\n\n"
        "@pytest.mark.parametrize('x', [1])\n"
        "def test_fine(x: int) -> None: ...\n\n"
        "class TestGroup:\n"
        "    @pytest.mark.xfail(reason='another')\n"
        "    def test_method(self) -> None: ...\n",
        encoding="utf-8")

    assert xfail_tests(path) == {"test_gap", "TestGroup::test_method"}
