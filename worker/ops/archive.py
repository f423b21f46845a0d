"""The signed `archive` action (R-7.7c, R-8.1): trim an account's history below a cutoff, audited.

The cutoff is the signed request's `issued_at`: every history entry whose stream id is older
(`XTRIM MINID <issued_at in ms>-0`, exact). `phasectl archive` signs the request first and only
then exports the whole history to the operator's file, so every entry below the cutoff is in that
file before the request is sent (docs/decisions.md, "Export and archive"). The trim, a
`history_archived` record, the audit and the stored outcome commit in one transaction; the
account's state is not touched (metrics live in the state, not in the history).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import redis

from worker.domain.decide import Record
from worker.ops.signing import Request
from worker.store.keys import Keys
from worker.store.uow import Staging

if TYPE_CHECKING:
    from worker.ops.service import _Gathered

JSONDict = dict[str, Any]
Effect = Callable[["_Gathered", Staging], tuple[JSONDict, bool]]
COUNT_PAGE: Final = 1000  # entries per page when counting what a trim will remove
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def cutoff_id(issued_at: datetime) -> str:
    """The smallest stream id the trim keeps: `issued_at` in milliseconds, sequence 0."""
    return f"{(issued_at - _EPOCH) // _MS}-0"


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    """What a trim at `cutoff` removes: read just before the transaction.

    Entries below a cutoff in the past never change (a new entry's id is at least Redis's clock),
    so only a concurrent archive of the same account could make these figures stale.
    """

    cutoff: str
    count: int
    first_id: str | None
    last_id: str | None


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def plan_archive(client: redis.Redis, keys: Keys, account_id: str,
                 issued_at: datetime) -> ArchivePlan:
    """Count the entries older than the cutoff, and their first and last ids."""
    key = keys.history(keys.shard(account_id), account_id)
    cutoff = cutoff_id(issued_at)
    pipe = client.pipeline(transaction=True)
    pipe.xlen(key)
    pipe.xrange(key, cutoff, "+", count=COUNT_PAGE)
    pipe.xrange(key, "-", "(" + cutoff, count=1)
    pipe.xrevrange(key, "(" + cutoff, "-", count=1)
    length, newer, first, last = pipe.execute()
    if len(newer) < COUNT_PAGE:
        count = int(length) - len(newer)  # one atomic snapshot: exact
    else:  # unusually many entries since the cutoff: count the older ones page by page
        count, start = 0, "-"
        while True:
            page: Any = client.xrange(key, start, "(" + cutoff, count=COUNT_PAGE)
            count += len(page)
            if len(page) < COUNT_PAGE:
                break
            start = "(" + _s(page[-1][0])
    return ArchivePlan(cutoff, count, _s(first[0][0]) if first else None,
                       _s(last[0][0]) if last else None)


def archive_effect(req: Request, plan: ArchivePlan) -> Effect:
    """The action's own rules (R-7.10's last step), then the trim, staged in the transaction."""

    def effect(g: _Gathered, staging: Staging) -> tuple[JSONDict, bool]:
        account = req.account_id or ""
        if not g.registered:
            return {"outcome": "refused", "reason": "unknown_account"}, False
        st = g.state
        if st is None:
            return {"outcome": "refused", "reason": "state_unavailable"}, False
        if st.phase != req.expected_phase:
            return {"outcome": "refused", "reason": "stale_request",
                    "detail": f"account is in {st.phase}, not {req.expected_phase}"}, False
        if req.issued_at > g.now:
            # the cutoff must be in the past, or entries written after the export would go
            return {"outcome": "refused", "reason": "cutoff_in_future",
                    "detail": "issued_at is after the Redis clock: sign with phasectl"}, False
        out: JSONDict = {"account_id": account, "phase": st.phase, "cutoff_id": plan.cutoff,
                         "trimmed": plan.count, "first_trimmed_id": plan.first_id,
                         "last_trimmed_id": plan.last_id}
        if plan.count == 0:
            return {"outcome": "noop", "reason": "nothing_to_archive", **out}, False
        history = staging.keys.history(staging.shard, account)
        cutoff = plan.cutoff
        staging.raw(lambda p: p.xtrim(history, minid=cutoff, approximate=False))
        staging.history(account, Record("history_archived", {
            "at": g.now.isoformat(), "operator_id": req.operator_id,
            "request_id": req.request_id, "reason": req.reason, "cutoff_id": cutoff,
            "trimmed": plan.count, "first_trimmed_id": plan.first_id,
            "last_trimmed_id": plan.last_id}), g.now, req.request_id)
        # the reason lands in the audit (overrides stream and history): what went, up to where
        return {"outcome": "applied", **out,
                "reason": f"trimmed {plan.count} entries through {plan.last_id}"}, True

    return effect


def effect_for(client: redis.Redis, keys: Keys) -> Callable[[Request], Effect]:
    """The `effect_for` hook of `worker.ops.service.handle`: plans, then stages the trim.

    `handle` calls it only after every check of R-7.10 passed, so an unsigned or expired request
    never reads the history.
    """

    def build(req: Request) -> Effect:
        plan = plan_archive(client, keys, req.account_id or "", req.issued_at)
        return archive_effect(req, plan)

    return build
