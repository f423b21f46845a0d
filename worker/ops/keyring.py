"""The override key of this process (R-7.9) and the public KDF parameters in `P:ops:kdf`.

The key is derived once per process, before any job runs (the ops worker does it before it forks
work horses), and lives only in this module's memory: never in Redis, logs, events or exports.
"""

from __future__ import annotations

import secrets
from typing import Any

import redis

from worker.ops.signing import KDF_ALG, KDF_ITERATIONS, KdfParams, check_password, derive_key
from worker.store.keys import Keys

_KEY: bytes | None = None


def ensure_kdf(client: redis.Redis, keys: Keys, iterations: int = KDF_ITERATIONS) -> KdfParams:
    """Store the KDF parameters on first start (never overwritten), then return them."""
    deployment = client.hget(keys.meta, "deployment_id")
    fresh = KdfParams(KDF_ALG, iterations, secrets.token_bytes(16), _s(deployment or ""))
    pipe = client.pipeline(transaction=True)
    for name, value in fresh.as_fields().items():
        pipe.hsetnx(keys.ops_kdf, name, value)
    pipe.hgetall(keys.ops_kdf)
    stored = pipe.execute()[-1]
    return KdfParams.from_fields({_s(k): _s(v) for k, v in stored.items()})


def load_kdf(client: redis.Redis, keys: Keys) -> KdfParams:
    stored = client.hgetall(keys.ops_kdf)
    if not stored:
        raise ValueError("P:ops:kdf is not set: start phase-worker once")
    return KdfParams.from_fields({_s(k): _s(v) for k, v in stored.items()})


def install(password: str, params: KdfParams, min_length: int | None = None) -> None:
    """Derive and keep the key for this process; refuses a short password (R-7.9)."""
    global _KEY
    if min_length is None:
        check_password(password)
    else:
        check_password(password, min_length)
    _KEY = derive_key(password, params)


def install_key(key: bytes | None) -> None:
    """For a process that already holds a derived key (tests; `None` forgets it)."""
    global _KEY
    _KEY = key


def current() -> bytes | None:
    return _KEY


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
