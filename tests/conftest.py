"""Session-wide fixtures: one private redis-server (never the machine's 6379) for every test.

Tests that use it are marked ``redis`` automatically. If redis-server cannot start, those tests
fail with the reason; they are never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis

from worker.redis_acl import USER_FOR_ROLE, Role
from worker.redis_server import RedisServer, RedisServerError

KEY_PREFIX = "phase"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "redis_server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.redis)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server with the R-12.2 settings and the R-7.14 users (prefix ``phase``)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"), prefix=KEY_PREFIX)
    failure = None
    try:
        server.start()
    except (RedisServerError, OSError) as exc:
        failure = f"could not start the test redis-server: {exc}"
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The admin URL (user ``default``) of the session's server."""
    return redis_server.admin_url


@pytest.fixture
def role_url(redis_server: RedisServer) -> Callable[[Role], str]:
    """``role_url("bot")`` is the URL that logs in as ``phaseguard-bot``, and so on."""

    def url(role: Role) -> str:
        return redis_server.url_for(USER_FOR_ROLE[role])

    return url


@pytest.fixture
def redis_admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """An admin client on an emptied server (data, scripts, ACL log); closed after the test."""
    if not redis_server.running:
        # a test that crashed or stopped the server (kill9, restart failing) must not leak
        redis_server.start()
    client = redis_server.admin_client(decode_responses=True)
    try:
        client.flushall()
        client.script_flush()
        client.acl_log_reset()
        yield client
    finally:
        client.close()
