"""The private redis-server (R-12.2) and the ACL users of R-7.14, against a real redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from rq import Queue, SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from worker import redis_acl as redis_acl_module
from worker import redis_server as redis_server_module
from worker.redis_acl import (
    ADMIN_USER,
    BOT_USER,
    OPS_QUEUE,
    USER_FOR_ROLE,
    Role,
    acl_rules,
    apply_acl,
)
from worker.redis_server import RedisServer, pid_is_redis
from worker.settings import Settings, redis_url_for

pytestmark = pytest.mark.redis
README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"

STATE = "phase:{s3}:a:acct-1:state"
ENTRIES = "phase:{s3}:a:acct-1:entries"
HISTORY = "phase:{s3}:a:acct-1:history"
ACCOUNT_CALENDAR = "phase:{s3}:a:acct-1:calendar"
REGISTRY = "phase:{s3}:accounts"
CALENDAR = "phase:{s3}:calendar"
INBOX = "phase:{s3}:inbox"
EVENTS = "phase:{s3}:events"
DEADLETTER = "phase:{s3}:deadletter"
OVERRIDES = "phase:{s3}:overrides"
LEASE = "phase:{s3}:lease"
META = "phase:meta"
POLICY = "phase:policy"
KDF = "phase:ops:kdf"
RQ_QUEUE = f"rq:queue:{OPS_QUEUE}"

Command = tuple[str, ...]
NO_RETRY = Retry(NoBackoff(), 0)  # a refused login is the answer, not a reason to retry


def double(value: int) -> int:
    """An RQ job: JSON in, JSON out."""
    return value * 2


def explode(message: str) -> None:
    """An RQ job that fails."""
    raise RuntimeError(message)


@pytest.fixture
def seeded(redis_admin: redis.Redis) -> redis.Redis:
    """One account's keys, as the worker would have written them."""
    redis_admin.hset(STATE, mapping={"phase": "proof", "halted": "0", "version": "7"})
    redis_admin.hset(ENTRIES, "d-1", "{}")
    redis_admin.xadd(HISTORY, {"type": "transition"})
    redis_admin.xadd(EVENTS, {"type": "phase_changed", "data": "{}"})
    redis_admin.xadd(INBOX, {"type": "trade_closed", "data": "{}"})
    redis_admin.hset(REGISTRY, "acct-1", "{}")
    redis_admin.set(CALENDAR, "[]")
    redis_admin.set(ACCOUNT_CALENDAR, "[]")
    redis_admin.hset(META, "shards", "16")
    redis_admin.set(POLICY, "{}")
    redis_admin.hset(KDF, "alg", "pbkdf2-sha256")
    return redis_admin


@pytest.fixture
def connect(role_url: Callable[[Role], str]) -> Iterator[Callable[[Role], redis.Redis]]:
    """Clients logged in as a role; all closed after the test."""
    clients: list[redis.Redis] = []

    def client(role: Role) -> redis.Redis:
        made = redis.Redis.from_url(role_url(role), decode_responses=True)
        clients.append(made)
        return made

    yield client
    for made in clients:
        made.close()


def run(client: redis.Redis, command: Command) -> object:
    execute: Callable[..., object] = client.execute_command  # unannotated in redis-py
    return execute(*command)


def acl_denials(admin: redis.Redis) -> list[dict[str, Any]]:
    log: list[dict[str, Any]] = admin.acl_log()
    return log


# -- the server ---------------------------------------------------------------------------------


def test_private_server_runs_with_the_durability_settings_of_r_12_2(
    redis_admin: redis.Redis,
) -> None:
    config = redis_admin.config_get("*")
    assert config["appendonly"] == "yes"
    assert config["appendfsync"] == "always"
    assert config["maxmemory-policy"] == "noeviction"
    assert config["no-appendfsync-on-rewrite"] == "no"
    assert config["bind"] == "127.0.0.1"
    assert config["protected-mode"] == "yes"


def test_private_server_is_our_own_process_not_the_machine_6379(
    redis_server: RedisServer, redis_admin: redis.Redis
) -> None:
    info = redis_admin.info("server")
    assert redis_server.port != 6379
    assert info["tcp_port"] == redis_server.port
    assert info["process_id"] == redis_server.pid


def test_default_user_needs_the_admin_password(redis_server: RedisServer) -> None:
    with (
        redis.Redis.from_url(redis_server.url, retry=NO_RETRY) as anonymous,
        pytest.raises(redis.AuthenticationError),
    ):
        anonymous.ping()


def test_an_acknowledged_xadd_survives_a_crash_and_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with redis.Redis.from_url(server.url_for(BOT_USER)) as bot:
            entry_id = bot.xadd(INBOX, {"type": "trade_closed", "data": "{}"})
        server.kill9()
        assert not server.running
        server.restart()
        with server.admin_client(decode_responses=True) as admin:
            assert admin.xrange(INBOX) == [
                (entry_id.decode(), {"type": "trade_closed", "data": "{}"})
            ]
        with redis.Redis.from_url(server.url_for(BOT_USER)) as bot:
            assert bot.ping()  # the users and their passwords are back as well
    finally:
        server.stop()
    assert not server.running


def test_restart_keeps_the_port_and_the_url(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        url = server.url
        server.restart()
        assert server.url == url
    finally:
        server.stop()


def test_unsafe_server_runs_without_aof(tmp_path: Path) -> None:
    with (
        RedisServer(tmp_path / "redis", unsafe=True) as server,
        server.admin_client(decode_responses=True) as admin,
    ):
        assert admin.config_get("appendonly") == {"appendonly": "no"}
        assert admin.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}


def test_serve_detach_writes_the_run_files_reuses_and_stops(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, run_dir = tmp_path / "redis", tmp_path / "run"
    argv = ["serve", "--detach", "--dir", str(data_dir), "--run-dir", str(run_dir)]
    assert redis_server_module.main([*argv, "--prefix", "phase"]) == 0
    pid = int((data_dir / "redis.pid").read_text())
    try:
        assert "started" in capsys.readouterr().out
        assert {p.name for p in (run_dir / "acl").iterdir()} == {*USER_FOR_ROLE, "admin"}
        assert all((p.stat().st_mode & 0o777) == 0o600 for p in (run_dir / "acl").iterdir())
        assert "@" not in (run_dir / "redis.url").read_text()

        assert redis_server_module.main([*argv, "--prefix", "phase"]) == 0
        assert "reused" in capsys.readouterr().out
        assert int((data_dir / "redis.pid").read_text()) == pid

        for name in ("REDIS_URL", "PHASE_REDIS_USER", "PHASE_REDIS_PASSWORD"):
            monkeypatch.delenv(name, raising=False)
        settings = Settings(run_dir=run_dir)
        with redis.Redis.from_url(redis_url_for(settings, "bot"), decode_responses=True) as bot:
            bot.xadd(INBOX, {"type": "trade_closed", "data": "{}"})
            with pytest.raises(redis.exceptions.NoPermissionError):
                bot.hset(STATE, "phase", "scaling")
    finally:
        assert redis_server_module.main(["stop", "--dir", str(data_dir)]) == 0
    assert not pid_is_redis(pid)
    assert not (data_dir / "redis.pid").exists()


# -- ACL users (R-7.14) -------------------------------------------------------------------------

ALLOWED: list[tuple[Role, Command]] = [
    ("bot", ("XADD", INBOX, "*", "type", "trade_closed", "data", "{}")),
    ("bot", ("HSET", ENTRIES, "d-2", "{}")),
    ("bot", ("HINCRBY", ENTRIES, "slots:2025-01-02", "1")),
    ("bot", ("PEXPIRE", ENTRIES, "2592000000")),
    ("bot", ("HGETALL", STATE)),
    ("bot", ("HGET", REGISTRY, "acct-1")),
    ("bot", ("GET", CALENDAR)),
    ("bot", ("GET", ACCOUNT_CALENDAR)),
    ("bot", ("HGETALL", META)),
    ("bot", ("GET", POLICY)),
    ("bot", ("XRANGE", EVENTS, "-", "+")),
    ("bot", ("XREAD", "COUNT", "10", "STREAMS", EVENTS, "0")),
    ("bot", ("TIME",)),
    ("bot", ("SCRIPT", "LOAD", "return 1")),
    ("ops", ("LPUSH", RQ_QUEUE, "job-id")),
    ("ops", ("HGETALL", STATE)),
    ("ops", ("XRANGE", HISTORY, "-", "+")),
    ("ops", ("XRANGE", DEADLETTER, "-", "+")),
    ("ops", ("HGETALL", KDF)),
    ("ops", ("GET", POLICY)),
    ("reader", ("HGETALL", STATE)),
    ("reader", ("XRANGE", EVENTS, "-", "+")),
    ("reader", ("XREAD", "COUNT", "10", "STREAMS", EVENTS, "0")),
    ("reader", ("XRANGE", HISTORY, "-", "+")),
    ("reader", ("HGETALL", META)),
    ("worker", ("HSET", STATE, "phase", "trial")),
    ("worker", ("XADD", EVENTS, "*", "type", "phase_changed")),
    ("worker", ("XADD", HISTORY, "*", "type", "transition")),
    ("worker", ("XADD", DEADLETTER, "*", "reason", "too_late")),
    ("worker", ("XADD", OVERRIDES, "*", "outcome", "refused")),
    ("worker", ("SET", LEASE, "worker-1", "NX", "PX", "10000")),
    ("worker", ("HSET", KDF, "iterations", "600000")),
    ("worker", ("XGROUP", "CREATE", INBOX, "phaseguard", "0", "MKSTREAM")),
    ("worker", ("HDEL", ENTRIES, "d-1")),
    ("worker", ("LPUSH", RQ_QUEUE, "job-id")),
    ("worker", ("CONFIG", "GET", "appendonly")),
    ("worker", ("SCRIPT", "LOAD", "return 1")),
]

DENIED: list[tuple[Role, Command]] = [
    ("bot", ("HSET", STATE, "phase", "scaling")),
    ("bot", ("DEL", STATE)),
    ("bot", ("XADD", EVENTS, "*", "type", "phase_changed")),
    ("bot", ("XADD", HISTORY, "*", "type", "transition")),
    ("bot", ("XRANGE", HISTORY, "-", "+")),
    ("bot", ("XADD", DEADLETTER, "*", "reason", "x")),
    ("bot", ("HSET", REGISTRY, "acct-2", "{}")),
    ("bot", ("SET", POLICY, "{}")),
    ("bot", ("HGETALL", KDF)),
    ("bot", ("SET", LEASE, "bot")),
    ("bot", ("LPUSH", RQ_QUEUE, "job-id")),
    ("bot", ("XRANGE", INBOX, "-", "+")),
    ("bot", ("XREADGROUP", "GROUP", "phaseguard", "bot", "STREAMS", INBOX, ">")),
    ("bot", ("XDEL", INBOX, "0-1")),
    ("bot", ("HSET", INBOX, "f", "v")),
    ("bot", ("XADD", ENTRIES, "*", "f", "v")),
    ("bot", ("EVAL", "return 1", "0")),
    ("bot", ("SCRIPT", "FLUSH")),
    ("bot", ("KEYS", "*")),
    ("bot", ("FLUSHALL",)),
    ("bot", ("CONFIG", "GET", "*")),
    ("bot", ("CLIENT", "LIST")),
    ("ops", ("HSET", STATE, "phase", "scaling")),
    ("ops", ("XADD", INBOX, "*", "type", "trade_closed")),
    ("ops", ("XADD", EVENTS, "*", "type", "phase_changed")),
    ("ops", ("HSET", REGISTRY, "acct-2", "{}")),
    ("ops", ("DEL", STATE)),
    ("ops", ("LPUSH", "rq:queue:default", "job-id")),
    ("ops", ("SET", "elsewhere", "1")),
    ("ops", ("FLUSHALL",)),
    ("ops", ("SCRIPT", "FLUSH")),
    ("ops", ("ACL", "SETUSER", "intruder", "on", ">password-of-intruder", "+@all", "~*")),
    ("reader", ("HSET", STATE, "phase", "scaling")),
    ("reader", ("XADD", EVENTS, "*", "type", "phase_changed")),
    ("reader", ("XADD", INBOX, "*", "type", "trade_closed")),
    ("reader", ("HGETALL", REGISTRY)),
    ("reader", ("HGETALL", ENTRIES)),
    ("reader", ("GET", POLICY)),
    ("reader", ("HGETALL", KDF)),
    ("reader", ("LPUSH", RQ_QUEUE, "job-id")),
    ("reader", ("LRANGE", RQ_QUEUE, "0", "-1")),
    ("worker", ("SET", "elsewhere", "1")),
    ("worker", ("LPUSH", "rq:queue:default", "job-id")),
    ("worker", ("FLUSHALL",)),
    ("worker", ("FLUSHDB",)),
    ("worker", ("KEYS", "*")),
    ("worker", ("CONFIG", "SET", "appendfsync", "everysec")),
    ("worker", ("SCRIPT", "FLUSH")),
    ("worker", ("SHUTDOWN",)),
    ("worker", ("ACL", "SETUSER", "phaseguard-bot", "+@all")),
    ("worker", ("CLIENT", "KILL", "ID", "999999")),
]


def _ids(cases: list[tuple[Role, Command]]) -> list[str]:
    return [f"{role}:{' '.join(command[:2])}" for role, command in cases]


@pytest.mark.parametrize(("role", "command"), ALLOWED, ids=_ids(ALLOWED))
def test_role_may_run_the_commands_of_its_job(
    seeded: redis.Redis, connect: Callable[[Role], redis.Redis], role: Role, command: Command
) -> None:
    run(connect(role), command)
    assert acl_denials(seeded) == []


@pytest.mark.parametrize(("role", "command"), DENIED, ids=_ids(DENIED))
def test_role_is_refused_what_is_not_its_job(
    seeded: redis.Redis, connect: Callable[[Role], redis.Redis], role: Role, command: Command
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        run(connect(role), command)


ENTRY_SCRIPT = """
local now = redis.call('TIME')
local phase = redis.call('HGET', KEYS[1], 'phase')
redis.call('HINCRBY', KEYS[2], 'slots', 1)
redis.call('PEXPIRE', KEYS[2], 2592000000)
return {phase, now[1]}
"""
STATE_WRITING_SCRIPT = "redis.call('HSET', KEYS[1], 'phase', 'scaling') return 1"


def test_bot_runs_the_entry_script_the_worker_loaded(
    seeded: redis.Redis, connect: Callable[[Role], redis.Redis]
) -> None:
    sha = connect("worker").script_load(ENTRY_SCRIPT)
    phase, _now = connect("bot").evalsha(sha, 2, STATE, ENTRIES)
    assert phase == "proof"
    assert seeded.hget(ENTRIES, "slots") == "1"


def test_bot_reloads_the_entry_script_after_the_cache_was_emptied(
    seeded: redis.Redis, connect: Callable[[Role], redis.Redis]
) -> None:
    bot = connect("bot")
    sha = bot.script_load(ENTRY_SCRIPT)
    phase, _now = bot.evalsha(sha, 2, STATE, ENTRIES)
    assert phase == "proof"


@pytest.mark.parametrize("loader", ["worker", "bot"])
def test_bot_cannot_write_state_through_a_script(
    seeded: redis.Redis, connect: Callable[[Role], redis.Redis], loader: Role
) -> None:
    sha = connect(loader).script_load(STATE_WRITING_SCRIPT)
    with pytest.raises(redis.ResponseError, match="can't access"):
        connect("bot").evalsha(sha, 1, STATE)
    assert seeded.hget(STATE, "phase") == "proof"


def test_apply_acl_twice_changes_nothing(
    redis_server: RedisServer, redis_admin: redis.Redis
) -> None:
    before = redis_admin.acl_list()
    apply_acl(redis_admin, "phase", redis_server.passwords)
    assert redis_admin.acl_list() == before


def test_apply_acl_replaces_a_password(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server, server.admin_client() as admin:
        old_url = server.url_for(BOT_USER)
        apply_acl(admin, "phase", {**server.passwords, BOT_USER: "a-new-password-for-the-bot"})
        with (
            redis.Redis.from_url(old_url, retry=NO_RETRY) as bot,
            pytest.raises(redis.AuthenticationError),
        ):
            bot.ping()


def test_acl_rules_refuse_a_prefix_with_glob_characters() -> None:
    with pytest.raises(ValueError, match="prefix"):
        acl_rules("phase*")


def test_apply_acl_refuses_a_missing_password(redis_admin: redis.Redis) -> None:
    with pytest.raises(ValueError, match="no password"):
        apply_acl(redis_admin, "phase", {ADMIN_USER: "x" * 20})


def test_redis_acl_apply_writes_credentials_and_keeps_them_on_a_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = tmp_path / "acl"
    with RedisServer(tmp_path / "redis") as server:
        monkeypatch.setenv("REDIS_URL", server.admin_url)
        assert redis_acl_module.main(["apply", "--creds-dir", str(creds)]) == 0
        first = {p.name: p.read_text() for p in creds.iterdir()}
        assert redis_acl_module.main(["apply", "--creds-dir", str(creds)]) == 0
        assert {p.name: p.read_text() for p in creds.iterdir()} == first
        assert set(first) == set(USER_FOR_ROLE)
        assert all((p.stat().st_mode & 0o777) == 0o600 for p in creds.iterdir())
        user, _, password = first["bot"].strip().partition(":")
        with redis.Redis.from_url(server.url, username=user, password=password) as bot:
            bot.xadd(INBOX, {"type": "trade_closed", "data": "{}"})
    capsys.readouterr()


def test_deploy_readme_lists_the_exact_acl_rules() -> None:
    text = README.read_text()
    for user, rules in acl_rules("phase").items():
        block = "```text\n" + "\n".join(rules) + "\n```"
        assert f"`{user}`:\n\n{block}" in text, f"deploy/README.md is out of date for {user}"


# -- RQ on phase-ops ----------------------------------------------------------------------------


def _queue(client: redis.Redis) -> Queue:
    return Queue(OPS_QUEUE, connection=client, serializer=JSONSerializer)


@pytest.fixture
def rq_clients(redis_url: str, role_url: Callable[[Role], str]) -> Iterator[dict[str, redis.Redis]]:
    """RQ needs bytes responses: clients without decode_responses."""
    clients = {role: redis.Redis.from_url(role_url(role)) for role in ("worker", "ops", "bot")}
    yield clients
    for client in clients.values():
        client.close()


def _run_burst(worker_client: redis.Redis) -> None:
    worker = SimpleWorker(
        [_queue(worker_client)], connection=worker_client, serializer=JSONSerializer
    )
    worker.work(burst=True, logging_level="WARNING")


@pytest.mark.parametrize("enqueuer", ["ops", "worker"])
def test_rq_job_enqueued_by_role_runs_on_the_worker_user(
    redis_admin: redis.Redis, rq_clients: dict[str, redis.Redis], enqueuer: str
) -> None:
    job = _queue(rq_clients[enqueuer]).enqueue(f"{__name__}.double", 21)
    _run_burst(rq_clients["worker"])
    fetched = Job.fetch(job.id, connection=rq_clients["ops"], serializer=JSONSerializer)
    assert fetched.get_status() == JobStatus.FINISHED
    assert fetched.return_value() == 42
    assert acl_denials(redis_admin) == []


def test_failed_rq_job_is_recorded_without_acl_denials(
    redis_admin: redis.Redis, rq_clients: dict[str, redis.Redis]
) -> None:
    job = _queue(rq_clients["ops"]).enqueue(f"{__name__}.explode", "boom")
    _run_burst(rq_clients["worker"])
    assert job.id in _queue(rq_clients["ops"]).failed_job_registry.get_job_ids()
    assert acl_denials(redis_admin) == []


def test_bot_cannot_enqueue_an_rq_job(
    redis_admin: redis.Redis, rq_clients: dict[str, redis.Redis]
) -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        _queue(rq_clients["bot"]).enqueue(f"{__name__}.double", 21)
    assert redis_admin.llen(RQ_QUEUE) == 0
    assert redis_admin.keys("rq:job:*") == []
