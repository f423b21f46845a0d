"""The checked-in JSON Schemas (R-9.5) match the models."""

from __future__ import annotations

import json

import pytest

from contracts.gen_schemas import SCHEMA_DIR, render_schemas


@pytest.mark.parametrize(("name", "text"), sorted(render_schemas().items()))
def test_r9_5_the_checked_in_schema_matches_the_model(name: str, text: str) -> None:
    path = SCHEMA_DIR / name

    assert path.is_file(), f"{name} is missing: run python -m contracts.gen_schemas"
    assert path.read_text(encoding="utf-8") == text, "run python -m contracts.gen_schemas"


def test_r9_5_the_trade_closed_schema_requires_live_fields_and_forbids_unknown_ones() -> None:
    schema = json.loads(render_schemas()["trade_closed.json"])

    assert schema["additionalProperties"] is False
    live_rule = schema["allOf"][0]
    assert live_rule["if"]["properties"]["mode"] == {"const": "live"}
    assert set(live_rule["then"]["required"]) == {"position_size", "equity_after"}
