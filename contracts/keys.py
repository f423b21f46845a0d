"""Every Redis key name of the wire contract (R-9.2): pure functions of prefix, shard, account.

Every key of shard ``k`` carries the hash tag ``{s<k>}`` so that one shard's keys share a Redis
Cluster slot and a transaction never spans two (R-9.1). The functions format strings only: the
account id is validated at the boundary (messages, ``KeySpace``), and its grammar (R-1.1) keeps
``:``, ``{`` and ``}`` out of key names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from contracts.shard import shard_of, validate_account_id

DEFAULT_PREFIX: Final = "phase"
CONSUMER_GROUP: Final = "phaseguard"  # the inbox consumer group of every shard
PREFIX_PATTERN: Final = r"^[A-Za-z0-9_.-]+$"
_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` unchanged if it matches ``PREFIX_PATTERN``, else raise ``ValueError``."""
    if not isinstance(prefix, str) or _PREFIX_RE.fullmatch(prefix) is None:
        raise ValueError(f"key prefix {prefix!r:.80} does not match {PREFIX_PATTERN}")
    return prefix


# --- deployment-wide keys (no hash tag) ---------------------------------------------------------


def meta(prefix: str) -> str:
    """hash: shard count, accepted schema versions and fields, deployment id."""
    return f"{prefix}:meta"


def policy(prefix: str) -> str:
    """string: the effective policy (JSON) and its version."""
    return f"{prefix}:policy"


def ops_kdf(prefix: str) -> str:
    """hash: override key-derivation parameters (not secret)."""
    return f"{prefix}:ops:kdf"


# --- per-shard keys -----------------------------------------------------------------------------


def shard_tag(k: int) -> str:
    """The Redis Cluster hash tag of shard ``k``."""
    return f"{{s{k}}}"


def registry(prefix: str, k: int) -> str:
    """hash: registry of shard k, account id -> registration JSON (clock, currency, created,
    ``retired_at``)."""
    return f"{prefix}:{{s{k}}}:accounts"


def inbox(prefix: str, k: int) -> str:
    """stream: input of shard k, read by consumer group ``CONSUMER_GROUP``."""
    return f"{prefix}:{{s{k}}}:inbox"


def events(prefix: str, k: int) -> str:
    """stream: events of shard k, trimmed ``MAXLEN ~ 1000000``."""
    return f"{prefix}:{{s{k}}}:events"


def deadletter(prefix: str, k: int) -> str:
    """stream: rejected input of shard k: ``reason``, ``error``, ``source_id``, ``type``,
    ``data``."""
    return f"{prefix}:{{s{k}}}:deadletter"


def overrides(prefix: str, k: int) -> str:
    """stream: override attempts of shard k."""
    return f"{prefix}:{{s{k}}}:overrides"


def lease(prefix: str, k: int) -> str:
    """string: the worker that owns shard k, with an expiry."""
    return f"{prefix}:{{s{k}}}:lease"


def calendar(prefix: str, k: int) -> str:
    """string: the next 400 session opens, for the entry script."""
    return f"{prefix}:{{s{k}}}:calendar"


# --- per-account keys (in the account's shard) --------------------------------------------------


def state(prefix: str, k: int, account_id: str) -> str:
    """hash: public read model (``phase``, ``halted``, ``degraded``, ``position_size``,
    ``size_reduced``, ``daily_entry_limit``, ``version``, ``updated_at``); other fields private."""
    return f"{prefix}:{{s{k}}}:a:{account_id}:state"


def history(prefix: str, k: int, account_id: str) -> str:
    """stream: the account's append-only history."""
    return f"{prefix}:{{s{k}}}:a:{account_id}:history"


def entries(prefix: str, k: int, account_id: str) -> str:
    """hash: entry ledger (allowed live decisions by ``decision_id``, per-day slot use, first
    denials, emergency exits); read, never watched, by the worker."""
    return f"{prefix}:{{s{k}}}:a:{account_id}:entries"


def account_calendar(prefix: str, k: int, account_id: str) -> str:
    """string: ``clock = message`` accounts only: session opens from ``starts_at``'s trading day,
    kept 400 ahead of the account's latest message; the entry script uses it for ``at``."""
    return f"{prefix}:{{s{k}}}:a:{account_id}:calendar"


@dataclass(frozen=True, slots=True)
class KeySpace:
    """The keys of one deployment, addressed by account id; the shard is computed (R-9.1).

    Convenience for clients and tools; hot paths that already know the shard call the functions.
    """

    prefix: str
    shard_count: int

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        if self.shard_count < 1:
            raise ValueError(f"shard_count must be at least 1, got {self.shard_count}")

    def shard(self, account_id: str) -> int:
        """The shard of a valid account id (``InvalidMessage`` otherwise)."""
        return shard_of(validate_account_id(account_id), self.shard_count)

    def meta(self) -> str:
        return meta(self.prefix)

    def policy(self) -> str:
        return policy(self.prefix)

    def ops_kdf(self) -> str:
        return ops_kdf(self.prefix)

    def registry(self, account_id: str) -> str:
        return registry(self.prefix, self.shard(account_id))

    def inbox(self, account_id: str) -> str:
        return inbox(self.prefix, self.shard(account_id))

    def events(self, account_id: str) -> str:
        return events(self.prefix, self.shard(account_id))

    def deadletter(self, account_id: str) -> str:
        return deadletter(self.prefix, self.shard(account_id))

    def overrides(self, account_id: str) -> str:
        return overrides(self.prefix, self.shard(account_id))

    def lease(self, account_id: str) -> str:
        return lease(self.prefix, self.shard(account_id))

    def calendar(self, account_id: str) -> str:
        return calendar(self.prefix, self.shard(account_id))

    def state(self, account_id: str) -> str:
        return state(self.prefix, self.shard(account_id), account_id)

    def history(self, account_id: str) -> str:
        return history(self.prefix, self.shard(account_id), account_id)

    def entries(self, account_id: str) -> str:
        return entries(self.prefix, self.shard(account_id), account_id)

    def account_calendar(self, account_id: str) -> str:
        return account_calendar(self.prefix, self.shard(account_id), account_id)

    def all_events(self) -> tuple[str, ...]:
        """The events stream of every shard, in shard order (what a subscriber reads)."""
        return tuple(events(self.prefix, k) for k in range(self.shard_count))

    def all_inboxes(self) -> tuple[str, ...]:
        """The inbox of every shard, in shard order."""
        return tuple(inbox(self.prefix, k) for k in range(self.shard_count))
