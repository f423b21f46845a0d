"""Redis ACL users of SPEC R-7.14: the rules of each user and their idempotent installation.

Every rule names keys through the prefix ``P`` (R-9.2) and the RQ keys of queue ``phase-ops``.
``acl_rules`` is pure; ``apply_acl`` installs the users; ``python -m worker.redis_acl apply``
does that on a production server (deploy/README.md).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, get_args

if TYPE_CHECKING:
    import redis

Role = Literal["worker", "bot", "ops", "reader"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

WORKER_USER: Final = "phaseguard-worker"
BOT_USER: Final = "phaseguard-bot"
OPS_USER: Final = "phaseguard-ops"
READER_USER: Final = "phaseguard-reader"
# The Redis user each process role logs in as; `.run/acl/<role>` holds its credentials.
USER_FOR_ROLE: Final[Mapping[Role, str]] = {
    "worker": WORKER_USER,
    "bot": BOT_USER,
    "ops": OPS_USER,
    "reader": READER_USER,
}
# Redis's built-in user: kept on, with a password only the administrator (make run, tests) holds.
ADMIN_USER: Final = "default"

OPS_QUEUE: Final = "phase-ops"
# rq's key prefix (rq.defaults.RQ_KEY_PREFIX); Phaseguard never overrides RQ_KEY_PREFIX.
RQ_PREFIX: Final = "rq"

_PREFIX_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
# Same rule as SPEC; it also guarantees the prefix has no glob metacharacter (* ? [ \).
_QUEUE_RE: Final = _PREFIX_RE


def rq_key_patterns(queue: str = OPS_QUEUE) -> list[str]:
    """Glob patterns of every key rq 3.0 touches to enqueue, run and clean jobs of ``queue``.

    Queue-scoped keys name the queue; job and worker keys are named by random ids, so they are
    globbed. Read from rq's sources (queue.py, registry.py, job.py, results.py, executions.py,
    worker_registration.py, scheduler.py, group.py, suspension.py, intermediate_queue.py) and
    proven complete by tests/integration/test_redis_server.py, which runs real jobs and asserts
    that `ACL LOG` stays empty.
    """
    if not _QUEUE_RE.fullmatch(queue):
        raise ValueError(f"invalid RQ queue name {queue!r}")
    rq = RQ_PREFIX
    per_queue = [
        f"{rq}:queue:{queue}",  # the job id list
        f"{rq}:queue:{queue}:*",  # :intermediate list and its :first_seen:<job> markers
        # registries: started (wip), finished, failed, deferred, ready, scheduled, canceled
        *(
            f"{rq}:{registry}:{queue}"
            for registry in (
                "wip",
                "finished",
                "failed",
                "deferred",
                "ready",
                "scheduled",
                "canceled",
            )
        ),
        f"{rq}:clean_registries:{queue}",  # maintenance lock
        f"{rq}:workers:{queue}",  # workers listening on the queue
        f"{rq}:scheduler-lock:{queue}",  # only with the rq scheduler
    ]
    shared = [
        f"{rq}:queues",  # set of queue keys
        f"{rq}:workers",  # set of worker keys
        f"{rq}:suspended",  # `rq suspend` flag, read by workers
        f"{rq}:job:*",  # job hashes, :dependents, :dependencies
        f"{rq}:results:*",  # result streams
        f"{rq}:execution:*",  # one execution of a job
        f"{rq}:executions:*",  # executions registry of a job
        f"{rq}:worker:*",  # worker hashes and :executions
        f"{rq}:scheduler:*",  # only with the rq scheduler
        f"{rq}:groups",  # group maintenance runs on every worker start
        f"{rq}:group:*",
        f"{rq}:clean_groups",
        f"{rq}:rl-keys",  # rate-limit registries, scanned by every worker's maintenance
        f"{rq}:rl:*",
    ]
    return per_queue + shared


def rq_channel_patterns() -> list[str]:
    """Pub/sub channels of rq's worker commands (shutdown, kill-horse, stop-job)."""
    return [f"{RQ_PREFIX}:pubsub:*"]


def _check_prefix(prefix: str) -> None:
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"invalid key prefix {prefix!r}: must match {_PREFIX_RE.pattern}")


def _selector(*rules: str) -> str:
    """A Redis 7 selector: one ACL SETUSER argument holding an alternative set of rules."""
    return "(" + " ".join(rules) + ")"


def acl_rules(prefix: str) -> dict[str, list[str]]:
    """The ACL SETUSER rules (without password and ``on``) of each R-7.14 user, by user name.

    Each list starts with ``reset`` so that applying it replaces whatever the user had.
    ``%R~`` grants read, ``%W~`` write, ``~`` both; a ``(...)`` selector is an alternative
    permission set: a command runs if the root or one selector allows the command and all of
    its keys. Lua scripts run with the caller's permissions, and EVALSHA's declared keys need
    read+write access, which is why the bot's EVALSHA selector lists its keys with ``~`` but
    allows no other command.
    """
    _check_prefix(prefix)
    p = prefix
    state = f"{p}:{{*}}:a:*:state"
    history = f"{p}:{{*}}:a:*:history"
    entries = f"{p}:{{*}}:a:*:entries"
    account_calendar = f"{p}:{{*}}:a:*:calendar"
    registry = f"{p}:{{*}}:accounts"
    shard_calendar = f"{p}:{{*}}:calendar"
    inbox = f"{p}:{{*}}:inbox"
    events = f"{p}:{{*}}:events"
    meta = f"{p}:meta"
    policy = f"{p}:policy"

    rq_keys = [f"~{pattern}" for pattern in rq_key_patterns()]
    rq_channels = [f"&{pattern}" for pattern in rq_channel_patterns()]
    # Nothing in Phaseguard uses Redis Functions; SCRIPT FLUSH would make the bot's EVALSHA fail.
    no_cache_wipes = ["-script|flush", "-function"]

    bot_readable = [state, registry, shard_calendar, account_calendar, meta, policy, events]
    return {
        WORKER_USER: [
            "reset",
            f"~{p}:*",
            *rq_keys,
            *rq_channels,
            "+@all",
            "-@admin",
            "-@dangerous",
            "+info",  # rq reads INFO server for the Redis version
            "+config|get",  # start-up check of appendonly/appendfsync/maxmemory-policy
            *no_cache_wipes,
        ],
        BOT_USER: [
            "reset",
            # root: publish to the inboxes, nothing else touches keys
            f"%W~{inbox}",
            # PING, HELLO, CLIENT SETNAME/ID/INFO, SELECT, ... but not CLIENT KILL/LIST/PAUSE
            "+@connection",
            "-@admin",
            "-@dangerous",
            "+xadd",  # %W~ suffices: XADD only inserts
            "+time",  # the entry script's clock is Redis TIME
            # The client reloads its shipped entry script when a Redis restart emptied the
            # cache (NOSCRIPT). Loading grants nothing: a script runs with the caller's rights.
            "+script|load",
            "+script|exists",
            # read model, registry, calendars, meta, policy and events: read only
            _selector(*(f"%R~{key}" for key in bot_readable), "+@read", "-@dangerous"),
            # the entry ledgers: the only keys the bot writes (through the entry script)
            _selector(
                f"~{entries}",
                "+@read",
                "-@dangerous",
                *(f"+{cmd}" for cmd in ("hset", "hsetnx", "hincrby", "expire", "pexpire")),
            ),
            # EVALSHA declares its keys read+write; inside the script every call is checked
            # again against the selectors above, so this grants no write by itself.
            _selector(*(f"~{key}" for key in [*bot_readable, entries]), "+evalsha"),
        ],
        OPS_USER: [
            "reset",
            f"%R~{p}:*",
            *rq_keys,
            *rq_channels,
            "+@all",
            "-@admin",
            "-@dangerous",
            "+info",  # rq reads INFO server for the Redis version
            *no_cache_wipes,
        ],
        READER_USER: [
            "reset",
            f"%R~{state}",
            f"%R~{events}",
            f"%R~{history}",
            # shard count and accepted schema versions, needed to subscribe to every shard
            f"%R~{meta}",
            "+@connection",
            "+@read",
            "-@admin",
            "-@dangerous",
        ],
    }


def apply_acl(
    client: redis.Redis,
    prefix: str,
    passwords: Mapping[str, str],
    *,
    admin_password: str | None = None,
    persist: bool = False,
) -> None:
    """Create or replace the four users with ``passwords`` (by user name); idempotent.

    With ``admin_password`` the ``default`` user keeps all permissions but needs that password
    (the ACL equivalent of requirepass), so only the administrator can use it. With ``persist``
    the users are written to the server's ``aclfile`` (ACL SAVE) to survive restarts.
    Connections already authenticated stay authenticated.
    """
    rules = acl_rules(prefix)
    missing = sorted(set(rules) - set(passwords))
    if missing:
        raise ValueError(f"no password for ACL users {missing}")
    for user, user_rules in rules.items():
        password = passwords[user]
        _check_password(user, password)
        _execute(client, "ACL", "SETUSER", user, *user_rules, f">{password}", "on")
    if admin_password is not None:
        _check_password(ADMIN_USER, admin_password)
        _execute(
            client,
            "ACL",
            "SETUSER",
            ADMIN_USER,
            "reset",
            "~*",
            "&*",
            "+@all",
            f">{admin_password}",
            "on",
        )
    if persist:
        _execute(client, "ACL", "SAVE")


def _execute(client: redis.Redis, *args: str) -> object:
    execute: Callable[..., object] = client.execute_command  # unannotated in redis-py
    return execute(*args)


def _check_password(user: str, password: str) -> None:
    # A space would split the ACL rule; short passwords are guessable over the network.
    if len(password) < 16 or any(ch.isspace() for ch in password):
        raise ValueError(f"password of ACL user {user!r} must be 16+ characters without spaces")


# -- command line: python -m worker.redis_acl apply -------------------------------------------


def _load_or_create_passwords(creds_dir: Path) -> dict[str, str]:
    """Passwords by user name from ``creds_dir/<role>`` (``user:password``), new ones if absent."""
    from worker.redis_server import write_private  # imports this module: import late

    creds_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    passwords: dict[str, str] = {}
    for role, user in USER_FOR_ROLE.items():
        path = creds_dir / role
        if path.is_file():
            _, _, password = path.read_text().strip().partition(":")
        else:
            password = secrets.token_urlsafe(32)
            write_private(path, f"{user}:{password}\n")
        passwords[user] = password
    return passwords


def main(argv: list[str] | None = None) -> int:
    """Install the R-7.14 users on the server at $REDIS_URL (admin credentials in the URL)."""
    import redis as redis_lib  # only the command line needs the client library

    parser = argparse.ArgumentParser(prog="python -m worker.redis_acl", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    apply = sub.add_parser("apply", help="create or update the four users; ACL SAVE")
    apply.add_argument(
        "--creds-dir",
        type=Path,
        required=True,
        help="one 'user:password' file per role (worker, bot, ops, reader); missing ones are "
        "generated with mode 0600",
    )
    apply.add_argument("--prefix", default=os.environ.get("PHASE_KEY_PREFIX", "phase"))
    apply.add_argument("--no-save", action="store_true", help="skip ACL SAVE (no aclfile)")
    args = parser.parse_args(argv)
    url = os.environ.get("REDIS_URL")
    if not url:
        parser.error(
            "set REDIS_URL to the admin URL, e.g. redis://default:PASSWORD@127.0.0.1:6390/0"
        )
    passwords = _load_or_create_passwords(args.creds_dir)
    with redis_lib.Redis.from_url(url) as client:
        apply_acl(client, args.prefix, passwords, persist=not args.no_save)
    print(f"applied ACL users {sorted(passwords)} for prefix {args.prefix!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
