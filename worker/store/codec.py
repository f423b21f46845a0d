"""Compact, versioned encoding of AccountState into the fields of its Redis hash (R-9.2).

Public read-model fields (`phase`, `halted`, ...) are plain strings that the entry script, the bot
and subscribers read; the rest lives in one positional JSON blob, `core`. An unknown codec
version fails loudly (StateCodecError) — a state is never silently reinterpreted.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from worker.domain.metrics import Outcomes, SessionAgg, Tally, Window
from worker.domain.model import AccountState, EquityReport, Kind, SessionMeta, Trade

CODEC_VERSION = 1
_KINDS: tuple[Kind, ...] = ("regular", "emergency_exit", "manual")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class StateCodecError(ValueError):
    """The stored state cannot be read by this version: the operator must look (never guess)."""


# -- scalars -----------------------------------------------------------------------------------


def _t(v: datetime | None) -> int | None:
    if v is None:
        return None
    delta = v - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _dt(v: int | None) -> datetime | None:
    if v is None:
        return None
    return datetime.fromtimestamp(v // 1_000_000, tz=UTC).replace(microsecond=v % 1_000_000)


def _dt_req(v: int) -> datetime:
    out = _dt(v)
    if out is None:
        raise StateCodecError("a required instant is missing")
    return out


def _d(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


def _dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def _day(v: date | None) -> int | None:
    return None if v is None else v.toordinal()


def _date(v: int | None) -> date | None:
    return None if v is None else date.fromordinal(v)


# -- composites --------------------------------------------------------------------------------


def _enc_trade(t: Trade) -> list[Any]:
    return [t.trade_id, _t(t.closed_at), _t(t.opened_at), str(t.pnl), _KINDS.index(t.kind),
            int(t.live), _d(t.equity_after), t.day.toordinal(), t.digest]


def _dec_trade(v: list[Any]) -> Trade:
    return Trade(v[0], _dt_req(v[1]), _dt(v[2]), Decimal(v[3]), _KINDS[v[4]], bool(v[5]),
                 _dec(v[6]), date.fromordinal(v[7]), v[8])


def _enc_out(o: Outcomes) -> list[Any]:
    return [o.n, o.wins, o.losses, str(o.win_sum), str(o.loss_sum)]


def _dec_out(v: list[Any]) -> Outcomes:
    return Outcomes(v[0], v[1], v[2], Decimal(v[3]), Decimal(v[4]))


def _enc_tally(t: Tally) -> list[Any]:
    return [
        None if t.last_key is None else [_t(t.last_key[0]), t.last_key[1]],
        t.trades, str(t.pnl), t.epoch_trades, t.non_regular, t.counted,
        [str(p) for p in t.counted_window], t.sessions_counted,
        [[a.day.toordinal(), *_enc_out(a.outcomes)] for a in t.session_window],
        _day(t.day), _enc_out(t.day_outcomes), t.loss_streak, t.win_streak, t.triggers,
        "".join("1" if w else "0" for w in t.trigger_window),
        str(t.dd_pnl), _d(t.dd_peak), str(t.dd_drop), str(t.dd_base),
    ]


def _dec_tally(v: list[Any]) -> Tally:
    return Tally(
        last_key=None if v[0] is None else (_dt_req(v[0][0]), v[0][1]),
        trades=v[1], pnl=Decimal(v[2]), epoch_trades=v[3], non_regular=v[4], counted=v[5],
        counted_window=tuple(Decimal(p) for p in v[6]), sessions_counted=v[7],
        session_window=tuple(SessionAgg(date.fromordinal(a[0]), _dec_out(a[1:])) for a in v[8]),
        day=_date(v[9]), day_outcomes=_dec_out(v[10]), loss_streak=v[11], win_streak=v[12],
        triggers=v[13], trigger_window=tuple(c == "1" for c in v[14]), dd_pnl=Decimal(v[15]),
        dd_peak=_dec(v[16]), dd_drop=Decimal(v[17]), dd_base=Decimal(v[18]),
    )


def _enc_meta(m: SessionMeta) -> list[Any]:
    return [m.day.toordinal(), int(m.closed), int(m.implicit), int(m.amended), _d(m.end_equity),
            list(m.phases), m.phase_at_close, _d(m.size_at_close), m.breaker_trips,
            int(m.tripped_at_open), [list(d) for d in m.denials]]


def _dec_meta(v: list[Any]) -> SessionMeta:
    return SessionMeta(date.fromordinal(v[0]), bool(v[1]), bool(v[2]), bool(v[3]), _dec(v[4]),
                       tuple(v[5]), v[6], _dec(v[7]), v[8], bool(v[9]),
                       tuple((str(r), int(n)) for r, n in v[10]))


# -- the state ---------------------------------------------------------------------------------


def public_fields(s: AccountState) -> dict[str, str]:
    """The read model of R-9.2 that the entry script, the bot and readers use."""
    last = s.equity[-1] if s.equity else None
    return {
        "phase": s.phase, "halted": "1" if s.halted else "0",
        "degraded": "1" if s.degraded else "0", "position_size": str(s.position_size),
        "size_reduced": "1" if s.size_reduced else "0",
        "daily_entry_limit": "1" if s.phase == "proof" else "0",
        "version": str(s.version), "updated_at": s.updated_at.isoformat(),
        "equity": "" if last is None else str(last.value),
        "equity_day": "" if last is None else last.day.isoformat(),
        "currency": s.currency, "clock": s.clock, "size_reason": s.size_reason,
        "open_day": "" if s.current_day is None else s.current_day.isoformat(),
    }


def encode_state(s: AccountState) -> dict[str, str]:
    core = [
        CODEC_VERSION, s.account_id, s.clock, s.currency, s.phase, s.version, _t(s.updated_at),
        _t(s.tenure_start), _t(s.epoch_start), int(s.epoch_inclusive), int(s.halted),
        _t(s.tripped_at), _t(s.cleared_at), int(s.degraded), int(s.size_reduced),
        str(s.position_size), s.size_reason, int(s.eligible), s.override_incidents,
        None if s.high_water is None else [_t(s.high_water[0]), s.high_water[1]],
        _day(s.current_day), s.closed_days, int(s.proof_entry_seen), s.no_entry_run,
        s.longest_no_entry_run, int(s.session_bonus), _enc_tally(s.settled),
        _enc_tally(s.current), [_enc_trade(t) for t in s.recent],
        [_enc_meta(m) for m in s.sessions],
        [[_t(r.at), r.day.toordinal(), str(r.value)] for r in s.equity],
        _d(s.epoch_start_equity), _t(s.clock_at),
        [s.window.trades, s.window.sessions, s.window.triggers],
    ]
    fields = public_fields(s)
    fields["core"] = json.dumps(core, separators=(",", ":"))
    return fields


def decode_state(fields: dict[str, str]) -> AccountState:
    raw = fields.get("core")
    if raw is None:
        raise StateCodecError("state has no core field")
    try:
        v = json.loads(raw)
        if not isinstance(v, list) or not v or v[0] != CODEC_VERSION:
            version = v[0] if isinstance(v, list) and v else None
            raise StateCodecError(f"state codec version {version!r} is not {CODEC_VERSION}: "
                                  "upgrade the worker or migrate the state")
        return AccountState(
            account_id=v[1], clock=v[2], currency=v[3], phase=v[4], version=v[5],
            updated_at=_dt_req(v[6]), tenure_start=_dt_req(v[7]), epoch_start=_dt_req(v[8]),
            epoch_inclusive=bool(v[9]), halted=bool(v[10]), tripped_at=_dt(v[11]),
            cleared_at=_dt(v[12]), degraded=bool(v[13]), size_reduced=bool(v[14]),
            position_size=Decimal(v[15]), size_reason=v[16], eligible=bool(v[17]),
            override_incidents=v[18],
            high_water=None if v[19] is None else (_dt_req(v[19][0]), v[19][1]),
            current_day=_date(v[20]), closed_days=v[21], proof_entry_seen=bool(v[22]),
            no_entry_run=v[23], longest_no_entry_run=v[24], session_bonus=bool(v[25]),
            settled=_dec_tally(v[26]), current=_dec_tally(v[27]),
            recent=tuple(_dec_trade(t) for t in v[28]),
            sessions=tuple(_dec_meta(m) for m in v[29]),
            equity=tuple(EquityReport(_dt_req(r[0]), date.fromordinal(r[1]), Decimal(r[2]))
                         for r in v[30]),
            epoch_start_equity=_dec(v[31]), clock_at=_dt(v[32]),
            window=Window(v[33][0], v[33][1], v[33][2]),
        )
    except StateCodecError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as exc:
        raise StateCodecError(f"state is unreadable: {exc}") from exc


def encoded_size(fields: dict[str, str]) -> int:
    """Bytes of the hash's field names and values, as the property test bounds them."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in fields.items())


__all__ = ["CODEC_VERSION", "StateCodecError", "decode_state", "encode_state",
           "encoded_size", "public_fields"]
