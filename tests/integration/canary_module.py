"""A module the ops worker must never import: importing it leaves a mark (test_ops_worker.py).

It writes to the file named by $PHASEGUARD_CANARY_FILE at import time, so a test can prove that
a job naming one of its functions was refused *before* import, not merely before the call.
"""

from __future__ import annotations

import os
from pathlib import Path

_MARKER = os.environ.get("PHASEGUARD_CANARY_FILE")
if _MARKER:
    with Path(_MARKER).open("a", encoding="utf-8") as _f:
        _f.write(f"imported by pid {os.getpid()}\n")


def boom(*args: object, **kwargs: object) -> None:
    """What a smuggled job or callback would run."""
    raise AssertionError("a forbidden function ran")
