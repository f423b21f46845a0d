"""The entry ledger hash (R-9.2, R-4.8, R-4.9): its field layout, read into a LedgerView.

The Lua entry script (entry.lua) writes these fields; the worker only reads them (never WATCHes
them) and deletes what it has consumed in the same transaction as the effect.

Fields:
  seq                       counter for decision ids
  d:<decision_id>           allowed live decision: {"phase", "size", "day", "at", "request_id"}
  r:<day>:<request_id>      the stored answer for an idempotent repeat within the day
  slot:<day>                "<phase>|<decision_id>": a live entry was allowed that day
  deny:<day>:<reason>       the first denial per (reason, day): {"reason", "at", "request_id", ...}
  denyn:<day>:<reason>      how many denials per (reason, day)
  exit:<day>:<request_id>   an emergency exit: {"at", "request_id", "position_id", "mode"}
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.decide import LedgerDay, LedgerDecision, LedgerView
from worker.domain.model import PHASES, Phase


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def read_ledger(raw: dict[Any, Any]) -> LedgerView:
    """Parse HGETALL of the entries hash; unreadable fields are ignored, never fatal."""
    decisions: dict[str, LedgerDecision] = {}
    slots: dict[date, Phase] = {}
    denials: dict[date, list[dict[str, Any]]] = defaultdict(list)
    counts: dict[date, list[tuple[str, int]]] = defaultdict(list)
    exits: dict[date, list[dict[str, Any]]] = defaultdict(list)
    for k, v in raw.items():
        key, val = _s(k), _s(v)
        try:
            kind, _, rest = key.partition(":")
            if kind == "d":
                body = json.loads(val)
                phase = body["phase"]
                if phase in PHASES:
                    decisions[rest] = LedgerDecision(rest, phase, Decimal(body["size"]),
                                                     date.fromisoformat(body["day"]))
            elif kind == "slot":
                phase = val.split("|", 1)[0]
                if phase in PHASES:
                    slots[date.fromisoformat(rest)] = PHASES[PHASES.index(phase)]
            elif kind == "deny":
                day_s, _, _reason = rest.partition(":")
                denials[date.fromisoformat(day_s)].append(json.loads(val))
            elif kind == "denyn":
                day_s, _, reason = rest.partition(":")
                counts[date.fromisoformat(day_s)].append((reason, int(val)))
            elif kind == "exit":
                day_s, _, _rid = rest.partition(":")
                exits[date.fromisoformat(day_s)].append(json.loads(val))
        except (ValueError, KeyError, TypeError):
            continue
    days: dict[date, LedgerDay] = {}
    for day in set(slots) | set(denials) | set(counts) | set(exits):
        days[day] = LedgerDay(
            day, slots.get(day),
            tuple(sorted(denials.get(day, []), key=lambda d: (str(d.get("at")),
                                                              str(d.get("reason"))))),
            tuple(sorted(counts.get(day, []))),
            tuple(sorted(exits.get(day, []), key=lambda d: (str(d.get("at")),
                                                            str(d.get("request_id"))))),
        )
    return LedgerView(decisions, days)


def cleanup_fields(raw: dict[Any, Any], closed_days: tuple[date, ...], consumed: tuple[str, ...],
                   today: date, retention_days: int) -> list[str]:
    """Ledger fields to delete: closed days' entries, cited decisions, expired decisions."""
    closed = {d.isoformat() for d in closed_days}
    oldest = today - timedelta(days=retention_days)
    out: list[str] = [f"d:{c}" for c in consumed]
    for k, v in raw.items():
        key = _s(k)
        kind, _, rest = key.partition(":")
        if kind in ("r", "slot", "deny", "denyn", "exit"):
            if rest.split(":", 1)[0] in closed:
                out.append(key)
        elif kind == "d":
            try:
                if date.fromisoformat(json.loads(_s(v))["day"]) < oldest:
                    out.append(key)
            except (ValueError, KeyError, TypeError):
                out.append(key)
    return out
