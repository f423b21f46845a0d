"""Compact, versioned encoding of AccountState into the fields of its Redis hash (R-9.2).

Public read-model fields (`phase`, `halted`, ...) are plain strings that the entry script, the bot
and subscribers read; the rest lives in one positional JSON blob, `core`. An unknown codec
version fails loudly (StateCodecError) — a state is never silently reinterpreted.

Size and speed: the trades inside the dedupe horizon dominate, so each is one short delta-coded
string (the state stays under 16 KiB at 20 trades a day with 32-character ids, see the property
tests), and encoding reuses, by object identity, the text of trades, tallies and windows that
the previous state of the account already had: a commit encodes only what changed. The caches
are bounded and never change what is written, only how fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from worker.domain.metrics import EpochContext, Outcomes, SessionAgg, Tally, Window
from worker.domain.model import AccountState, EquityReport, Kind, SessionMeta, Trade

CODEC_VERSION = 3  # 3: sessions no longer store a size at close (derived)
_KINDS: tuple[Kind, ...] = ("regular", "emergency_exit", "manual")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Denial reasons of the entry script (R-4.2 ..) written as their index in a session's
# denial counts; any other reason is written as text. Append only: the index is stored.
_DENIALS: tuple[str, ...] = (
    "unknown_account", "account_retired", "state_unavailable", "paper_only", "circuit_breaker",
    "input_dead_lettered", "equity_unknown", "equity_depleted", "size_below_minimum",
    "daily_limit",
)
_DENIAL_INDEX = {reason: i for i, reason in enumerate(_DENIALS)}
_US = timedelta(microseconds=1)
# Encoded trades by object identity (see _enc_trades): id(trade) -> (trade, the trade before it,
# its text, whether that text is already JSON-quoted). Entries hold strong references, so an id is
# never reused while it is a key. Cleared whole when full: a miss only costs a re-encode.
_TRADE_CACHE: dict[int, tuple[Trade, Trade | None, str, bool]] = {}
# Sized for a shard owner: ~1,000 accounts x the ~120 trades of their horizons (measured: at
# 32,768 a two-process worker cleared it over and over, 29 µs vs 12 µs of encoding a message);
# at ~100 bytes an entry that is ~20 MB at most.
_TRADE_CACHE_MAX = 1 << 17
# Encoded tallies and session windows by object identity, the same way: the settled tally and the
# session window change about once a trading day, not with every trade.
_MEMO: dict[int, tuple[object, Any]] = {}
_MEMO_MAX = 1 << 12
# Above this many characters of core, the current tally's counted-trade window is written as null
# when the trades in the horizon rebuild it exactly (see _derived_window): up to 1 KiB saved on
# the largest states, at the cost of a pass over the horizon.
_COMPACT_ABOVE = 12 * 1024
_MS = timedelta(milliseconds=1)
_S = timedelta(seconds=1)


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


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _base36(n: int) -> str:
    if n < 0:
        return f"-{_base36(-n)}"
    digits = []
    while True:
        n, digit = divmod(n, 36)
        digits.append(_B36[digit])
        if not n:
            return "".join(reversed(digits))


def _span(us: int) -> str:
    """A duration in microseconds, short: base 36 (digits 0-9a-z) in whole seconds, else in
    milliseconds with "M" after, else in microseconds with "U" after."""
    if us % 1_000_000 == 0:
        return _base36(us // 1_000_000)
    if us % 1000 == 0:
        return f"{_base36(us // 1000)}M"
    return f"{_base36(us)}U"


def _unspan(text: str) -> timedelta:
    unit = text[-1]
    if unit == "M":
        return _MS * int(text[:-1], 36)
    if unit == "U":
        return _US * int(text[:-1], 36)
    return _S * int(text, 36)


# -- trades ------------------------------------------------------------------------------------
# A trade is one string, "day,closed,opened,pnl,flags,equity,digest,trade_id": the day (ordinal)
# and closed_at as deltas from the trade before it, opened_at as the span before closed_at (both
# spans as _span writes them), flags = kind index * 2 + live, empty for None. The trade id goes
# last and is split off whole, so it may hold any character. Inside the horizon this is what
# keeps the state under 16 KiB (SPEC bounds the horizon, the property tests the size).


def _enc_trade(t: Trade, prev: Trade | None) -> str:
    if "," in t.digest:
        raise StateCodecError(f"trade {t.trade_id}: a digest cannot hold a comma")
    closed = _us(t.closed_at)
    base_us, base_day = (0, 0) if prev is None else (_us(prev.closed_at), prev.day.toordinal())
    opened = "" if t.opened_at is None else _span(closed - _us(t.opened_at))
    equity = "" if t.equity_after is None else str(t.equity_after)
    return (f"{t.day.toordinal() - base_day},{_span(closed - base_us)},{opened},{t.pnl},"
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
            if hit[3]:
                out.append(hit[2])
                prev = t
                continue
            text = json.dumps(hit[2])  # read by _dec_trades, quoted on first use
        else:
            text = json.dumps(_enc_trade(t, prev))
        cache[id(t)] = (t, prev, text, True)
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
        closed = closed + _unspan(d_closed)
        f = int(flags)
        t = Trade(trade_id, closed, closed - _unspan(opened) if opened else None,
                  Decimal(pnl), _KINDS[f >> 1], bool(f & 1),
                  Decimal(equity) if equity else None, day, digest)
        cache[id(t)] = (t, prev, text, False)
        out.append(t)
        prev = t
    return tuple(out)


def _derived_window(settled: Tally, recent: tuple[Trade, ...], ctx: EpochContext) -> tuple[
        Decimal, ...]:
    """The counted-trade window that fold(settled, recent) builds, which `current` always is:
    the settled window, then the P&L of each regular trade of the epoch, the last N of them."""
    pnls = [t.pnl for t in recent if t.kind == "regular" and ctx.member(t)]
    return (*settled.counted_window, *pnls)[-ctx.window.trades:]


def _same_objects(a: tuple[Decimal, ...], b: tuple[Decimal, ...]) -> bool:
    # identity, not equality: Decimal("5") == Decimal("5.00") but prints differently
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _enc_equity(reports: tuple[EquityReport, ...], trades: tuple[Trade, ...]) -> list[Any]:
    """A report that a trade in the horizon made (its equity_after) is written as that trade's
    index, a run of them as "first:end"; any other report as [at, day, value]. Both are decoded
    to equal values."""
    by_at = {id(t.closed_at): i for i, t in enumerate(trades) if t.equity_after is not None}
    out: list[Any] = []
    start = end = -1  # the run of trade indexes being collected: start .. end - 1
    for r in reports:
        i = by_at.get(id(r.at))
        if i is not None:
            t = trades[i]
            # identity, not equality: Decimal("5") == Decimal("5.00") but prints differently
            if t.closed_at is r.at and t.equity_after is r.value and t.day == r.day:
                if i == end:
                    end += 1
                    continue
                _flush_run(out, start, end)
                start, end = i, i + 1
                continue
        _flush_run(out, start, end)
        start = end = -1
        out.append([_t(r.at), r.day.toordinal(), str(r.value)])
    _flush_run(out, start, end)
    return out


def _flush_run(out: list[Any], start: int, end: int) -> None:
    if end - start == 1:
        out.append(start)
    elif end - start > 1:
        out.append(f"{start}:{end}")


def _dec_equity(items: list[Any], trades: tuple[Trade, ...]) -> tuple[EquityReport, ...]:
    out: list[EquityReport] = []
    for item in items:
        if isinstance(item, list):
            out.append(EquityReport(_dt_req(item[0]), date.fromordinal(item[1]),
                                    Decimal(item[2])))
            continue
        if isinstance(item, str):
            first, _, end = item.partition(":")
            indexes = range(int(first), int(end))
        else:
            indexes = range(item, item + 1)
        for i in indexes:
            t = trades[i]
            if i < 0 or t.equity_after is None:
                raise StateCodecError(f"equity report {i} names no trade with equity")
            out.append(EquityReport(t.closed_at, t.day, t.equity_after))
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


def _memo(obj: object, encode: Callable[[Any], Any]) -> Any:
    hit = _MEMO.get(id(obj))
    if hit is not None and hit[0] is obj:
        return hit[1]
    if len(_MEMO) > _MEMO_MAX:
        _MEMO.clear()
    out = encode(obj)
    _MEMO[id(obj)] = (obj, out)
    return out


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
        _enc_decimals(t.counted_window), t.sessions_counted,
        _memo(t.session_window, _enc_sessions),
        _day(t.day), _enc_out(t.day_outcomes), t.loss_streak, t.win_streak, t.triggers,
        "".join(["1" if w else "0" for w in t.trigger_window]),
        str(t.dd_pnl), _d(t.dd_peak), str(t.dd_drop), str(t.dd_base),
    ]


def _dec_tally(v: list[Any]) -> Tally:
    return Tally(
        last_key=None if v[0] is None else (_dt_req(v[0][0]), v[0][1]),
        trades=v[1], pnl=Decimal(v[2]), epoch_trades=v[3], non_regular=v[4], counted=v[5],
        counted_window=v[6] if isinstance(v[6], tuple) else _dec_decimals(v[6]),
        sessions_counted=v[7],
        session_window=_dec_sessions(v[8]),
        day=_date(v[9]), day_outcomes=_dec_out(v[10]), loss_streak=v[11], win_streak=v[12],
        triggers=v[13], trigger_window=tuple([c == "1" for c in v[14]]), dd_pnl=Decimal(v[15]),
        dd_peak=_dec(v[16]), dd_drop=Decimal(v[17]), dd_base=Decimal(v[18]),
    )


def _enc_meta(m: SessionMeta) -> list[Any]:
    return [m.day.toordinal(), int(m.closed), int(m.implicit), int(m.amended), _d(m.end_equity),
            list(m.phases), m.phase_at_close, m.breaker_trips,
            int(m.tripped_at_open),
            [x for r, n in m.denials for x in (_DENIAL_INDEX.get(r, r), n)]]


def _dec_meta(v: list[Any]) -> SessionMeta:
    return SessionMeta(date.fromordinal(v[0]), bool(v[1]), bool(v[2]), bool(v[3]), _dec(v[4]),
                       tuple(v[5]), v[6], v[7], bool(v[8]),
                       tuple((_DENIALS[r] if type(r) is int else str(r), int(n))
                             for r, n in zip(v[9][::2], v[9][1::2], strict=True)))


# -- the state ---------------------------------------------------------------------------------


def public_fields(s: AccountState) -> dict[str, str]:
    """The read model of R-9.2 that the entry script, the bot and readers use."""
    last = s.equity[-1] if s.equity else None
    return {
        "phase": s.phase, "halted": "1" if s.halted else "0",
        "degraded": "1" if s.degraded else "0", "position_size": str(s.position_size),
        "size_reduced": "1" if s.size_reduced else "0",
        "daily_entry_limit": "1" if s.phase == "proof" else "0",
        "version": str(s.version),
        # in UTC, as Redis TIME gives it, so that writing a state read back changes no byte
        "updated_at": s.updated_at.astimezone(UTC).isoformat(),
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
        s.longest_no_entry_run, int(s.session_bonus), _memo(s.settled, _enc_tally),
        _enc_tally(s.current), [_enc_meta(m) for m in s.sessions],
        _enc_equity(s.equity, s.recent), _d(s.epoch_start_equity), _t(s.clock_at),
        [s.window.trades, s.window.sessions, s.window.triggers],
    ]
    fields = public_fields(s)
    # The trades, by far the largest part, go last as ready-made JSON (see _enc_trades).
    trades = _enc_trades(s.recent)
    head = json.dumps(core, separators=(",", ":"))
    if len(head) + len(trades) > _COMPACT_ABOVE and _same_objects(
            s.current.counted_window, _derived_window(s.settled, s.recent, _ctx(s))):
        core[27] = [*core[27][:6], None, *core[27][7:]]
        head = json.dumps(core, separators=(",", ":"))
    fields["core"] = f"{head[:-1]},{trades}]"
    return fields


def _ctx(s: AccountState) -> EpochContext:
    return EpochContext(s.epoch_start, s.epoch_inclusive, s.epoch_start_equity, s.window)


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
        settled = _dec_tally(v[26])
        if v[27][6] is None:  # written by the compact form: rebuilt from the horizon
            ctx = EpochContext(_dt_req(v[8]), bool(v[9]), None, Window(*v[32]))
            v[27][6] = _derived_window(settled, recent, ctx)
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
            settled=settled, current=_dec_tally(v[27]),
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
