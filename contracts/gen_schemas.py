"""Regenerate the checked-in JSON Schemas of the wire models: ``python -m contracts.gen_schemas``.

A unit test renders them in memory and fails when the files have drifted from the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from pydantic import BaseModel

from contracts.events import Event
from contracts.messages import SessionEnded, TradeClosed

SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"
SCHEMA_MODELS: Final[dict[str, type[BaseModel]]] = {
    "trade_closed.json": TradeClosed,
    "session_ended.json": SessionEnded,
    "event.json": Event,
}


def render_schemas() -> dict[str, str]:
    """File name -> schema text (sorted keys, two-space indent, trailing newline)."""
    return {
        name: json.dumps(model.model_json_schema(), sort_keys=True, indent=2) + "\n"
        for name, model in SCHEMA_MODELS.items()
    }


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name, text in render_schemas().items():
        (SCHEMA_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote {SCHEMA_DIR / name}")


if __name__ == "__main__":
    main()
