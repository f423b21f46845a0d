"""Compact, versioned encoding of AccountState into the fields of its Redis hash (R-9.2).

Public read-model fields (`phase`, `halted`, ...) are plain strings that the entry script, the bot
and subscribers read; the rest lives in one positional JSON blob, `core`. An unknown codec
version fails loudly (StateCodecError) — a state is never silently reinterpreted.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.metrics import Outcomes, SessionAgg, Tally, Window
from worker.domain.model import AccountState, EquityReport, Kind, SessionMeta, Trade

CODEC_VERSION = 2
_KINDS: tuple[Kind, ...] = ("regular", "emergency_exit", "manual")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# Trades as JSON strings by object identity (see _enc_trades): id(trade) -> (trade, the trade
# before it, its JSON text). Entries hold strong references, so an id is never reused while it is
# a key. Cleared whole when full: a miss only costs a re-encode.
_TRADE_CACHE: dict[int, tuple[Trade, Trade | None, str]] = {}
_TRADE_CACHE_MAX = 1 << 15


class StateCodecError(ValueError):
    """The stored state cannot be read by this version: the operator must look (never guess)."""


# -- scalars -----------------------------------------------------------------------------------


def _us(v: datetime) -> int:
    """An instant as integer microseconds since the Unix epoch (decoded in UTC)."""
    return (v - _EPOCH) // _US


def _t(v: datetime | None) -> int | None:
    return None if v is None else (v - _EPOCH) // _US


def _dt(v: int | None) -> datetime | None:
    return None if v is None else _EPOCH + _US * v


def _dt_req(v: int) -> datetime:
    return _EPOCH + _US * v


def _d(v: Decimal | None) -> str | None:
    return None if v is None else str(v)


def _dec(v: str | None) -> Decimal | None:
    return None if v is None else Decimal(v)


def _day(v: date | None) -> int | None:
    return None if v is None else v.toordinal()


def _date(v: int | None) -> date | None:
    return None if v is None else date.fromordinal(v)


def _zc(v: int) -> str:
    """An integer with its trailing zeros written as an exponent: 1800000000 -> "18e8"."""
    text = str(v)
    short = text.rstrip("0")
    zeros = len(text) - len(short)
    return f"{short}e{zeros}" if zeros > 1 else text


def _unzc(text: str) -> int:
    mantissa, _, zeros = text.partition("e")
    return int(mantissa) * 10 ** int(zeros) if zeros else int(mantissa)


# -- trades ------------------------------------------------------------------------------------
# A trade is one string, "day,closed,opened,pnl,flags,equity,digest,trade_id": the day (ordinal)
# and closed_at (microseconds) as deltas from the trade before it, opened_at as microseconds
# before closed_at, flags = kind index * 2 + live, empty for None. The trade id goes last and is
# split off whole, so it may hold any character. Inside the horizon this is what keeps the
# state under 16 KiB (SPEC bounds the horizon, the property tests the size).


def _enc_trade(t: Trade, prev: Trade | None) -> str:
    closed = _us(t.closed_at)
    base_us, base_day = (0, 0) if prev is None else (_us(prev.closed_at), prev.day.toordinal())
    opened = "" if t.opened_at is None else _zc(closed - _us(t.opened_at))
    equity = "" if t.equity_after is None else str(t.equity_after)
    return (f"{t.day.toordinal() - base_day},{_zc(closed - base_us)},{opened},{t.pnl},"
            f"{_KINDS.index(t.kind) * 2 + t.live},{equity},{t.digest},{t.trade_id}")


def _enc_trades(trades: tuple[Trade, ...]) -> str:
    """The trades as a JSON array, reusing the text of a trade already encoded after the same
    predecessor.

    States are persistent values: a new state shares all but its newest Trade objects with the
    one before it (and a decoded state's trades are cached as they are read), so a commit
    encodes only the trades that are new to this process.
    """
    cache = _TRADE_CACHE
    if len(cache) > _TRADE_CACHE_MAX:
        cache.clear()
    out: list[str] = []
    prev: Trade | None = None
    for t in trades:
        hit = cache.get(id(t))
        if hit is not None and hit[0] is t and hit[1] is prev:
            out.append(hit[2])
        else:
            text = json.dumps(_enc_trade(t, prev))
            cache[id(t)] = (t, prev, text)
            out.append(text)
        prev = t
    return f"[{','.join(out)}]"


def _dec_trades(items: list[str]) -> tuple[Trade, ...]:
    out: list[Trade] = []
    cache = _TRADE_CACHE
    if len(cache) > _TRADE_CACHE_MAX:
        cache.clear()
    ordinal = 0
    day = date.min
    closed = _EPOCH
    prev: Trade | None = None
    for text in items:
        d_day, d_closed, opened, pnl, flags, equity, digest, trade_id = text.split(",", 7)
        if d_day != "0" or prev is None:
            ordinal += int(d_day)
            day = date.fromordinal(ordinal)
        closed = closed + _US * _unzc(d_closed)
        f = int(flags)
        t = Trade(trade_id, closed, closed - _US * _unzc(opened) if opened else None,
                  Decimal(pnl), _KINDS[f >> 1], bool(f & 1),
                  Decimal(equity) if equity else None, day, digest)
        cache[id(t)] = (t, prev, json.dumps(text))
        out.append(t)
        prev = t
    return tuple(out)


def _enc_equity(reports: tuple[EquityReport, ...], trades: tuple[Trade, ...]) -> list[Any]:
    """A report that a trade in the horizon made (its equity_after) is written as that trade's
    index; any other report as [at, day, value]. Both are decoded to equal values."""
    by_at = {id(t.closed_at): i for i, t in enumerate(trades) if t.equity_after is not None}
    out: list[Any] = []
    for r in reports:
        i = by_at.get(id(r.at))
        if i is not None:
            t = trades[i]
            # identity, not equality: Decimal("5") == Decimal("5.00") but prints differently
            if t.closed_at is r.at and t.equity_after is r.value and t.day == r.day:
                out.append(i)
                continue
        out.append([_t(r.at), r.day.toordinal(), str(r.value)])
    return out


def _dec_equity(items: list[Any], trades: tuple[Trade, ...]) -> tuple[EquityReport, ...]:
    out: list[EquityReport] = []
    for item in items:
        if type(item) is int:
            t = trades[item]
            if item < 0 or t.equity_after is None:
                raise StateCodecError(f"equity report {item} names no trade with equity")
            out.append(EquityReport(t.closed_at, t.day, t.equity_after))
        else:
            out.append(EquityReport(_dt_req(item[0]), date.fromordinal(item[1]),
                                    Decimal(item[2])))
    return tuple(out)


# -- composites --------------------------------------------------------------------------------


def _enc_out(o: Outcomes) -> list[Any]:
    return [o.n, o.wins, o.losses, str(o.win_sum), str(o.loss_sum)]


def _dec_out(v: list[Any]) -> Outcomes:
    return Outcomes(v[0], v[1], v[2], Decimal(v[3]), Decimal(v[4]))


def _enc_decimals(values: tuple[Decimal, ...]) -> str:
    return ",".join(map(str, values))


def _dec_decimals(text: str) -> tuple[Decimal, ...]:
    return tuple(map(Decimal, text.split(","))) if text else ()


def _enc_sessions(window: tuple[SessionAgg, ...]) -> str:
    return ";".join(f"{a.day.toordinal()},{o.n},{o.wins},{o.losses},{o.win_sum},{o.loss_sum}"
                    for a in window for o in (a.outcomes,))


def _dec_sessions(text: str) -> tuple[SessionAgg, ...]:
    out: list[SessionAgg] = []
    for item in text.split(";") if text else ():
        day, n, wins, losses, win_sum, loss_sum = item.split(",")
        out.append(SessionAgg(date.fromordinal(int(day)),
                              Outcomes(int(n), int(wins), int(losses), Decimal(win_sum),
                                       Decimal(loss_sum))))
    return tuple(out)


def _enc_tally(t: Tally) -> list[Any]:
    return [
        None if t.last_key is None else [_t(t.last_key[0]), t.last_key[1]],
        t.trades, str(t.pnl), t.epoch_trades, t.non_regular, t.counted,
        _enc_decimals(t.counted_window), t.sessions_counted, _enc_sessions(t.session_window),
        _day(t.day), _enc_out(t.day_outcomes), t.loss_streak, t.win_streak, t.triggers,
        "".join(["1" if w else "0" for w in t.trigger_window]),
        str(t.dd_pnl), _d(t.dd_peak), str(t.dd_drop), str(t.dd_base),
    ]


def _dec_tally(v: list[Any]) -> Tally:
    return Tally(
        last_key=None if v[0] is None else (_dt_req(v[0][0]), v[0][1]),
        trades=v[1], pnl=Decimal(v[2]), epoch_trades=v[3], non_regular=v[4], counted=v[5],
        counted_window=_dec_decimals(v[6]), sessions_counted=v[7],
        session_window=_dec_sessions(v[8]),
        day=_date(v[9]), day_outcomes=_dec_out(v[10]), loss_streak=v[11], win_streak=v[12],
        triggers=v[13], trigger_window=tuple([c == "1" for c in v[14]]), dd_pnl=Decimal(v[15]),
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
        _enc_tally(s.current), [_enc_meta(m) for m in s.sessions],
        _enc_equity(s.equity, s.recent), _d(s.epoch_start_equity), _t(s.clock_at),
        [s.window.trades, s.window.sessions, s.window.triggers],
    ]
    fields = public_fields(s)
    # The trades, by far the largest part, go last as ready-made JSON (see _enc_trades).
    head = json.dumps(core, separators=(",", ":"))
    fields["core"] = f"{head[:-1]},{_enc_trades(s.recent)}]"
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
        recent = _dec_trades(v[33])
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
            recent=recent, sessions=tuple(_dec_meta(m) for m in v[28]),
            equity=_dec_equity(v[29], recent),
            epoch_start_equity=_dec(v[30]), clock_at=_dt(v[31]),
            window=Window(v[32][0], v[32][1], v[32][2]),
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
