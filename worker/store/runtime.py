"""Deployment bootstrap shared by every process: P:meta, the policy in P:policy, Redis clock.

`P:meta` is initialised once (HSETNX): the shard count is fixed at first start (R-9.1). The policy
is installed once on a fresh deployment and reloaded by every process when its version changes
(R-11.1).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from contracts.client import entry_script
from contracts.messages import SessionEnded, TradeClosed
from worker.domain.policy import DEFAULT_POLICY, Policy, load_policy_toml, policy_from_json
from worker.store.keys import Keys

DEFAULT_SHARDS = 16
POLICY_CHECK_S = 1.0  # how often a process looks for a new policy version


class DeploymentError(RuntimeError):
    """The deployment is not usable as configured: tell the operator, do not start."""


def redis_now(reply: Any) -> datetime:
    """Redis TIME -> aware UTC datetime (R-1.6: Redis is the clock)."""
    seconds, micros = int(reply[0]), int(reply[1])
    return datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=micros)


def accepted_fields() -> dict[str, list[str]]:
    return {"trade_closed": sorted(TradeClosed.model_fields),
            "session_ended": sorted(SessionEnded.model_fields)}


def init_meta(client: redis.Redis, prefix: str, shards: int = DEFAULT_SHARDS) -> Keys:
    """Create P:meta once; later starts read the stored shard count (never change it)."""
    meta_key = Keys(prefix, 1).meta
    pipe = client.pipeline(transaction=True)
    pipe.hsetnx(meta_key, "shards", str(shards))
    pipe.hsetnx(meta_key, "deployment_id", str(uuid.uuid4()))
    pipe.hset(meta_key, mapping={"schema_versions": json.dumps({"trade_closed": [1],
                                                                "session_ended": [1]}),
                                 "fields": json.dumps(accepted_fields())})
    pipe.hget(meta_key, "shards")
    stored = pipe.execute()[-1]
    # the entry script's sha, for clients' EVALSHA (R-9.5); loading is idempotent
    sha = client.script_load(entry_script())
    client.hset(meta_key, "entry_script_sha", sha)
    return Keys(prefix, int(stored))


def load_keys(client: redis.Redis, prefix: str) -> Keys:
    """Keys of an initialised deployment; refuses to guess the shard count."""
    stored = client.hget(Keys(prefix, 1).meta, "shards")
    if stored is None:
        raise DeploymentError(f"deployment {prefix!r} is not initialised: start phase-worker "
                              "once (it creates P:meta)")
    return Keys(prefix, int(stored))


def read_policy_file(path: str | None) -> Policy:
    if not path:
        return DEFAULT_POLICY
    return load_policy_toml(Path(path).read_text(encoding="utf-8"))


def install_policy(client: redis.Redis, keys: Keys, policy: Policy) -> bool:
    """Install `policy` unless one is already there (fresh deployment only, R-11.1)."""
    blob = json.dumps({"version": policy.version, "policy": policy.canonical_json()})
    return bool(client.set(keys.policy, blob, nx=True))


def policy_blob(policy: Policy) -> str:
    return json.dumps({"version": policy.version, "policy": policy.canonical_json()})


def fetch_policy(client: redis.Redis, keys: Keys) -> Policy:
    raw = client.get(keys.policy)
    if raw is None:
        raise DeploymentError("no policy installed in P:policy: start phase-worker first")
    body = json.loads(raw)
    return policy_from_json(body["policy"])


@dataclass
class PolicyHolder:
    """The effective policy of a process, reloaded when P:policy's version changes."""

    client: redis.Redis
    keys: Keys
    current: Policy = field(default=DEFAULT_POLICY)
    _next_check: float = 0.0

    def refresh(self, force: bool = False) -> Policy:
        now = time.monotonic()
        if not force and now < self._next_check:
            return self.current
        self._next_check = now + POLICY_CHECK_S
        raw = self.client.get(self.keys.policy)
        if raw is not None:
            body = json.loads(raw)
            if body.get("version") != self.current.version:
                self.current = policy_from_json(body["policy"])
        return self.current


# Replay profiles by (base policy version, currency): building one validates a whole policy.
_REPLAY_PROFILES: dict[tuple[str, str], Policy] = {}
_REPLAY_PROFILES_MAX = 64


def policy_for(policy: Policy, clock: str, currency: str) -> Policy:
    """The policy an account runs on: replay accounts (clock = message) get the replay profile
    in their own currency (R-11.2), every other account the deployment's policy as is."""
    if clock != "message":
        return policy
    key = (policy.version, currency)
    profile = _REPLAY_PROFILES.get(key)
    if profile is None:
        if len(_REPLAY_PROFILES) >= _REPLAY_PROFILES_MAX:
            _REPLAY_PROFILES.clear()
        profile = _REPLAY_PROFILES[key] = policy.replay_profile(currency)
    return profile


def check_persistence(client: redis.Redis, unsafe_ok: bool) -> list[str]:
    """R-12.2: appendonly yes, appendfsync always, noeviction — else refuse (or warn if unsafe)."""
    want = {"appendonly": "yes", "appendfsync": "always", "maxmemory-policy": "noeviction"}
    problems = []
    for name, value in want.items():
        got = client.config_get(name).get(name)
        if got != value:
            problems.append(f"{name} is {got!r}, must be {value!r}")
    if problems and not unsafe_ok:
        raise DeploymentError("unsafe Redis: " + "; ".join(problems)
                              + " (PHASE_UNSAFE_REDIS=1 allows a throwaway server)")
    return problems
