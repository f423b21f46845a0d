"""Every Redis key Phaseguard uses, in one place (R-9.2).

The public layout (inbox, events, state, ...) is part of the wire contract and lives in
`contracts.keys`; the worker-private keys below share the same `{s<k>}` hash tag so that every
transaction stays inside one shard's Cluster slot (R-9.1).
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts import keys as wire
from contracts.keys import CONSUMER_GROUP, KeySpace
from contracts.shard import shard_of

RQ_QUEUE = "phase-ops"  # RQ queue of operator jobs (R-7.1 .. R-7.7c)
EVENTS_MAXLEN = 1_000_000  # events streams are trimmed with MAXLEN ~ this


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one deployment: prefix and shard count."""

    prefix: str
    shards: int

    def shard(self, account_id: str) -> int:
        return shard_of(account_id, self.shards)

    @property
    def space(self) -> KeySpace:
        return KeySpace(self.prefix, self.shards)

    # -- deployment-wide ---------------------------------------------------------------------
    @property
    def meta(self) -> str:  # hash: shard count, accepted schemas, deployment id, script sha
        return wire.meta(self.prefix)

    @property
    def policy(self) -> str:  # string: {"version": ..., "policy": canonical JSON}
        return wire.policy(self.prefix)

    @property
    def ops_kdf(self) -> str:  # hash: override KDF parameters (not secret, R-7.9)
        return wire.ops_kdf(self.prefix)

    # -- override protection; operator ids are validated before use ----------
    def ops_fails(self, operator: str) -> str:  # zset: failed signature checks, 15 min window
        return f"{self.prefix}:ops:fails:{operator}"

    @property
    def ops_fails_all(self) -> str:  # zset: every failed signature check, 15 min window
        return f"{self.prefix}:ops:fails"

    def ops_lock(self, operator: str) -> str:  # string with PX: the operator is locked out
        return f"{self.prefix}:ops:lock:{operator}"

    @property
    def ops_throttle(self) -> str:  # string with PX: brute force suspected, checks throttled
        return f"{self.prefix}:ops:throttle"

    @property
    def ops_throttle_slot(self) -> str:  # string with PX: one signature check per period
        return f"{self.prefix}:ops:throttle:slot"

    def ops_request_claim(self, request_id: str) -> str:  # string: payload digest
        return f"{self.prefix}:ops:reqid:{request_id}"

    def ops_request(self, k: int, request_id: str) -> str:  # string: stored outcome
        return f"{self.prefix}:{wire.shard_tag(k)}:ops:req:{request_id}"

    @property
    def workers(self) -> str:  # zset: live worker name -> heartbeat expiry (ms), for balancing
        return f"{self.prefix}:workers"

    # -- per shard -----------------------------------------------------------------------------
    def registry(self, k: int) -> str:  # hash: account id -> registration JSON
        return wire.registry(self.prefix, k)

    def inbox(self, k: int) -> str:  # stream: input; consumer group `phaseguard`
        return wire.inbox(self.prefix, k)

    def events(self, k: int) -> str:  # stream: events, MAXLEN ~ 1,000,000
        return wire.events(self.prefix, k)

    def deadletter(self, k: int) -> str:  # stream: rejected input with reason
        return wire.deadletter(self.prefix, k)

    def overrides(self, k: int) -> str:  # stream: override attempts
        return wire.overrides(self.prefix, k)

    def lease(self, k: int) -> str:  # string: owning worker, PX expiry
        return wire.lease(self.prefix, k)

    def calendar(self, k: int) -> str:  # string: JSON session opens for the entry script
        return wire.calendar(self.prefix, k)

    def failures(self, k: int) -> str:  # hash: inbox entry id -> failed attempts
        return f"{self.prefix}:{wire.shard_tag(k)}:failures"

    # -- per account ---------------------------------------------------------------------------
    def state(self, k: int, account_id: str) -> str:  # hash: read model + private `core`
        return wire.state(self.prefix, k, account_id)

    def history(self, k: int, account_id: str) -> str:  # stream: append-only history
        return wire.history(self.prefix, k, account_id)

    def entries(self, k: int, account_id: str) -> str:  # hash: the entry ledger
        return wire.entries(self.prefix, k, account_id)

    def account_calendar(self, k: int, account_id: str) -> str:  # message-clock opens
        return wire.account_calendar(self.prefix, k, account_id)


def consumer_name(k: int) -> str:
    """One consumer name per shard (R-10.1): a new owner inherits the pending entries."""
    return f"shard-{k}"


__all__ = ["CONSUMER_GROUP", "EVENTS_MAXLEN", "RQ_QUEUE", "Keys", "consumer_name"]
