"""A private redis-server for tests and `make run`: free port, own data dir, R-12.2 settings.

The settings mirror deploy/redis.conf and go on the command line. The ``default`` user needs the
admin password from the first connection on (its SHA-256 is in the aclfile before the server
starts); the four R-7.14 users are installed right after start, with random passwords.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, Final, TypeVar
from urllib.parse import quote, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.redis_acl import ADMIN_USER, ROLES, USER_FOR_ROLE, acl_rules, apply_acl

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 15.0  # seconds until PING answers after exec (includes AOF loading)
STOP_TIMEOUT_S: Final = 15.0  # seconds between SIGTERM and SIGKILL
_POLL_INTERVAL_S: Final = 0.02  # pause between probes, only ever inside a deadline loop
_PORT_ATTEMPTS: Final = 5  # another process can take the probed free port before redis binds it
_MIN_VERSION: Final = (7, 0)  # ACL selectors and %R~/%W~ key permissions
ACL_FILE: Final = "users.acl"
LOG_FILE: Final = "redis.log"
PID_FILE: Final = "redis.pid"

# Production settings of SPEC; deploy/redis.conf explains each one.
SAFE_ARGS: Final[tuple[str, ...]] = (
    "--appendonly", "yes",
    "--appendfsync", "always",
    "--no-appendfsync-on-rewrite", "no",
    "--aof-load-truncated", "yes",
    "--maxmemory-policy", "noeviction",
    "--save", "",
)  # fmt: skip
# A throwaway server (no AOF) that the worker refuses unless PHASE_UNSAFE_REDIS=1.
UNSAFE_ARGS: Final[tuple[str, ...]] = (
    "--appendonly", "no",
    "--maxmemory-policy", "noeviction",
    "--save", "",
)  # fmt: skip

T = TypeVar("T")


class RedisServerError(RuntimeError):
    """The private redis-server could not be started, reached or stopped."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the kernel picks it for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def new_password() -> str:
    """256 random bits, URL-safe so that it can sit in a redis:// URL as is."""
    return secrets.token_urlsafe(32)


def poll_until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``probe`` until it returns something other than None, for at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise RedisServerError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(_POLL_INTERVAL_S)


def pid_is_redis(pid: int) -> bool:
    """True while ``pid`` is a live redis-server process (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the field after "(comm)" is the state; Z is an exited child waiting to be reaped
    zombie = stat.rsplit(")", 1)[-1].split()[0] == "Z"
    program = cmdline.split(b"\0", 1)[0].split(b" ", 1)[0]
    return program.rsplit(b"/", 1)[-1] == b"redis-server" and not zombie


def stop_pid(pid: int, timeout: float = STOP_TIMEOUT_S) -> bool:
    """SIGTERM redis-server ``pid`` and wait, SIGKILL after ``timeout``; False if it is not one."""
    if not pid_is_redis(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    try:
        poll_until(lambda: True if not pid_is_redis(pid) else None, timeout, f"pid {pid} to exit")
    except RedisServerError:
        os.kill(pid, signal.SIGKILL)
        poll_until(lambda: True if not pid_is_redis(pid) else None, timeout, f"pid {pid} to die")
    return True


class RedisServer:
    """One redis-server process bound to 127.0.0.1 with its data (AOF, aclfile, log) in data_dir.

    ``passwords`` maps every user name (``default``, the admin, and the four R-7.14 users) to
    its password; they are generated unless given and stay the same across ``restart()``.
    The server is a child of this process unless started with ``detach=True``, in which case
    redis daemonizes itself (own session, pid file) and outlives this process.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        prefix: str = "phase",
        unsafe: bool = False,
        passwords: Mapping[str, str] | None = None,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        acl_rules(prefix)  # validates the prefix before anything starts
        self.data_dir = Path(data_dir).resolve()
        self.prefix = prefix
        self.unsafe = unsafe
        given = dict(passwords or {})
        users = [ADMIN_USER, *USER_FOR_ROLE.values()]
        self.passwords: dict[str, str] = {user: given.get(user) or new_password() for user in users}
        self.port: int | None = port
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._daemon_pid: int | None = None
        self._detach = False
        self._log: IO[bytes] | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's URL without credentials."""
        return f"redis://{HOST}:{self._port()}/0"

    def url_for(self, user: str) -> str:
        """``redis://user:password@127.0.0.1:port/0`` for a user name; ``default`` is the admin."""
        if user not in self.passwords:
            raise KeyError(f"unknown Redis user {user!r}; known: {sorted(self.passwords)}")
        creds = f"{quote(user, safe='')}:{quote(self.passwords[user], safe='')}"
        return f"redis://{creds}@{HOST}:{self._port()}/0"

    @property
    def admin_url(self) -> str:
        return self.url_for(ADMIN_USER)

    def admin_client(self, **kwargs: Any) -> redis.Redis:
        """A client logged in as the admin (``default``); the caller closes it."""
        return redis.Redis.from_url(self.admin_url, **kwargs)

    @property
    def pid(self) -> int | None:
        if self._proc is not None:
            return self._proc.pid
        return self._daemon_pid

    @property
    def running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._daemon_pid is not None and pid_is_redis(self._daemon_pid)

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    @property
    def pid_path(self) -> Path:
        return self.data_dir / PID_FILE

    def _port(self) -> int:
        if self.port is None:
            raise RedisServerError("the server has not been started")
        return self.port

    # -- life cycle --------------------------------------------------------------------------

    def start(self, *, detach: bool = False, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server, wait until it answers PING, check it, install the ACL users."""
        if self.running:
            raise RedisServerError(f"already running (pid {self.pid})")
        self._detach = detach
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._write_acl_file()
        fixed = self.port is not None
        attempts = 1 if fixed else _PORT_ATTEMPTS
        for attempt in range(1, attempts + 1):
            port = self.port if self.port is not None else free_port()
            log_size = self.log_path.stat().st_size if self.log_path.exists() else 0
            try:
                self._spawn(port, detach=detach)
                self._wait_ready(port, timeout)
            except RedisServerError:
                self._force_stop()
                new_log = self._log_since(log_size)
                if attempt < attempts and "Address already in use" in new_log:
                    continue
                raise
            self.port = port
            break
        try:
            with self.admin_client() as admin:
                self._check_version(admin)
                apply_acl(
                    admin,
                    self.prefix,
                    self.passwords,
                    admin_password=self.passwords[ADMIN_USER],
                    persist=True,
                )
        except BaseException:
            self._force_stop()
            raise

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM (Redis fsyncs the AOF and exits), then SIGKILL after ``timeout`` seconds."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(timeout=timeout)
            self._proc = None
        if self._daemon_pid is not None:
            stop_pid(self._daemon_pid, timeout)
            self._daemon_pid = None
            self.pid_path.unlink(missing_ok=True)
        self._close_log()

    def kill9(self) -> None:
        """Crash the server with SIGKILL: only what was fsynced survives (all of it, with
        appendfsync always)."""
        pid = self.pid
        if pid is not None and self.running:
            os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(timeout=STOP_TIMEOUT_S)
            self._proc = None
        if self._daemon_pid is not None:
            poll_until(
                lambda: True if not pid_is_redis(pid or 0) else None, STOP_TIMEOUT_S, "SIGKILL"
            )
            self._daemon_pid = None
        self._close_log()

    def restart(self, timeout: float = START_TIMEOUT_S) -> None:
        """Stop if running, start again on the same port and data dir (AOF recovery)."""
        self.stop()
        self.start(detach=self._detach, timeout=timeout)

    def wait(self) -> int:
        """Block until a server started in the foreground exits; its exit status."""
        if self._proc is None:
            raise RedisServerError("no foreground server to wait for")
        return self._proc.wait()

    def release(self) -> None:
        """Forget a detached server without stopping it (``serve --detach`` exits after this)."""
        if self._proc is not None:
            raise RedisServerError("only a detached server can be released")
        self._daemon_pid = None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ---------------------------------------------------------------------------

    def _argv(self, port: int, *, detach: bool) -> list[str]:
        binary = self._binary or shutil.which("redis-server")
        if binary is None:
            raise RedisServerError("redis-server not found on PATH: run deploy/ensure-redis.sh")
        if detach:
            process = ["--daemonize", "yes", "--pidfile", str(self.pid_path),
                       "--logfile", str(self.log_path)]  # fmt: skip
        else:
            process = ["--daemonize", "no"]  # logs to stdout, which is the log file
        return [
            binary,
            "--port", str(port),
            "--bind", HOST,
            "--protected-mode", "yes",
            *process,
            "--dir", str(self.data_dir),
            "--aclfile", str(self.data_dir / ACL_FILE),
            "--always-show-logo", "no",
            *(UNSAFE_ARGS if self.unsafe else SAFE_ARGS),
        ]  # fmt: skip

    def _spawn(self, port: int, *, detach: bool) -> None:
        argv = self._argv(port, detach=detach)
        if detach:
            self.pid_path.unlink(missing_ok=True)
            # Fixed argv, no shell: the binary is redis-server and every argument is ours.
            # With --daemonize yes this returns as soon as redis has forked into the background.
            try:
                done = subprocess.run(  # noqa: S603
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    cwd=self.data_dir,
                    check=False,
                    timeout=START_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise RedisServerError(f"cannot run {argv[0]}: {exc}") from exc
            if done.returncode != 0:
                raise RedisServerError(
                    f"redis-server exited with status {done.returncode}: "
                    f"{(done.stdout + done.stderr).decode(errors='replace')}"
                )
            return
        self._log = self.log_path.open("ab")
        try:
            # Fixed argv, no shell: the binary is redis-server and every argument is ours.
            self._proc = subprocess.Popen(  # noqa: S603
                argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
            )
        except OSError as exc:
            self._close_log()
            raise RedisServerError(f"cannot run {argv[0]}: {exc}") from exc

    def _wait_ready(self, port: int, timeout: float) -> None:
        with redis.Redis(
            host=HOST,
            port=port,
            username=ADMIN_USER,
            password=self.passwords[ADMIN_USER],
            socket_connect_timeout=1.0,
            socket_timeout=5.0,
            retry=Retry(NoBackoff(), 0),
        ) as probe:

            def ready() -> bool | None:
                self._raise_if_exited()
                try:
                    return True if probe.ping() else None
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    return None

            poll_until(ready, timeout, f"redis-server on port {port} to answer PING")
        if self._proc is None:
            self._daemon_pid = int(
                poll_until(
                    lambda: (
                        self.pid_path.read_text().strip() or None
                        if self.pid_path.exists()
                        else None
                    ),
                    timeout,
                    f"{self.pid_path}",
                )
            )

    def _raise_if_exited(self) -> None:
        if self._proc is not None:
            code = self._proc.poll()
        elif self.pid_path.exists():
            text = self.pid_path.read_text().strip()
            code = None if not text or pid_is_redis(int(text)) else -1
        else:
            code = None
        if code is not None:
            raise RedisServerError(
                f"redis-server exited with status {code}; log {self.log_path}:\n{self.log_tail()}"
            )

    def _force_stop(self) -> None:
        """Best-effort cleanup after a failed start: never leave a half-started server."""
        if self._proc is None and self._daemon_pid is None and self.pid_path.exists():
            text = self.pid_path.read_text().strip()
            self._daemon_pid = int(text) if text else None
        self.stop(timeout=STOP_TIMEOUT_S)

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as fh:
                fh.seek(offset)
                return fh.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _check_version(self, admin: redis.Redis) -> None:
        version = str(admin.info("server")["redis_version"])
        major_minor = tuple(int(part) for part in version.split(".")[:2])
        if major_minor < _MIN_VERSION:
            raise RedisServerError(f"redis-server {version} is too old; Phaseguard needs 7.0+")

    def _write_acl_file(self) -> None:
        """Only the admin, and only the password's SHA-256, before the server takes a connection.

        apply_acl() then adds the R-7.14 users and ACL SAVE writes them here (hashed too).
        """
        digest = hashlib.sha256(self.passwords[ADMIN_USER].encode()).hexdigest()
        write_private(self.data_dir / ACL_FILE, f"user {ADMIN_USER} on #{digest} ~* &* +@all\n")


# -- files shared with `make run` and worker.settings -------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically to a file only its owner can read (mode 0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_run_files(server: RedisServer, run_dir: Path) -> None:
    """``run_dir/redis.url`` (no credentials) and ``run_dir/acl/<role>`` = ``user:password``.

    Roles are worker, bot, ops, reader and admin (the ``default`` user).
    """
    acl_dir = run_dir / "acl"
    acl_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    acl_dir.chmod(0o700)
    for role, user in [*USER_FOR_ROLE.items(), ("admin", ADMIN_USER)]:
        write_private(acl_dir / role, f"{user}:{server.passwords[user]}\n")
    (run_dir / "redis.url").write_text(server.url + "\n")


def read_run_passwords(run_dir: Path) -> dict[str, str]:
    """Passwords by user name from ``run_dir/acl/*``; missing files are left out."""
    passwords: dict[str, str] = {}
    for role in [*ROLES, "admin"]:
        path = run_dir / "acl" / role
        if path.is_file():
            user, _, password = path.read_text().strip().partition(":")
            passwords[user] = password
    return passwords


# -- command line: python -m worker.redis_server serve|stop ------------------------------------


class _StopServing(BaseException):
    """Raised by the signal handler to leave the foreground wait; not an error."""


def _reuse(data_dir: Path, run_dir: Path, prefix: str) -> RedisServer | None:
    """The server an earlier ``serve --detach`` left running in ``data_dir``, if still alive."""
    pid_path = data_dir / PID_FILE
    url_path = run_dir / "redis.url"
    if not (pid_path.is_file() and url_path.is_file()):
        return None
    text = pid_path.read_text().strip()
    if not text or not pid_is_redis(int(text)):
        return None
    port = urlsplit(url_path.read_text().strip()).port
    server = RedisServer(data_dir, prefix=prefix, passwords=read_run_passwords(run_dir), port=port)
    try:
        with server.admin_client(socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0)) as admin:
            # the prefix may have changed since: re-apply, it is idempotent
            apply_acl(
                admin,
                prefix,
                server.passwords,
                admin_password=server.passwords[ADMIN_USER],
                persist=True,
            )
    except (redis.RedisError, ValueError) as exc:
        raise RedisServerError(
            f"redis-server pid {text} serves {data_dir} but refuses the credentials in "
            f"{run_dir}/acl ({type(exc).__name__}); stop it with: "
            f"python -m worker.redis_server stop --dir {data_dir}"
        ) from exc
    server._daemon_pid = int(text)
    return server


def _serve(args: argparse.Namespace) -> int:
    data_dir: Path = args.dir.resolve()
    run_dir: Path = args.run_dir.resolve()
    if args.detach:
        reused = _reuse(data_dir, run_dir, args.prefix)
        if reused is not None:
            print(f"reused redis-server pid {reused.pid} on {reused.url} (data {data_dir})")
            return 0
        # a crashed earlier server may have left its pid file behind
        (data_dir / PID_FILE).unlink(missing_ok=True)
    server = RedisServer(data_dir, prefix=args.prefix, unsafe=args.unsafe)
    server.start(detach=args.detach)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_run_files(server, run_dir)
    print(f"started redis-server pid {server.pid} on {server.url} (data {data_dir})", flush=True)
    if args.detach:
        server.release()
        return 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _StopServing

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.wait()
    except _StopServing:
        pass
    finally:
        server.stop()
    return 0


def _stop(args: argparse.Namespace) -> int:
    pid_path: Path = args.dir.resolve() / PID_FILE
    text = pid_path.read_text().strip() if pid_path.is_file() else ""
    if not text:
        print(f"no {pid_path}: nothing to stop")
        return 0
    stopped = stop_pid(int(text))
    pid_path.unlink(missing_ok=True)
    print(f"stopped redis-server pid {text}" if stopped else f"pid {text} was not running")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m worker.redis_server", description=__doc__.split("\n", 1)[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="start a private redis-server, write redis.url and acl/")
    serve.add_argument("--dir", type=Path, default=Path(".run/redis"), help="data directory")
    serve.add_argument("--run-dir", type=Path, default=Path(".run"), help="where redis.url goes")
    serve.add_argument(
        "--prefix",
        default=os.environ.get("PHASE_KEY_PREFIX", "phase"),
        help="key prefix P in the ACL rules (default: $PHASE_KEY_PREFIX, else phase)",
    )
    serve.add_argument(
        "--detach", action="store_true", help="daemonize, or reuse the one already running"
    )
    serve.add_argument("--unsafe", action="store_true", help="no AOF: the worker refuses it")
    serve.set_defaults(func=_serve)
    stop = sub.add_parser("stop", help="stop the server a detached serve left running")
    stop.add_argument("--dir", type=Path, default=Path(".run/redis"), help="data directory")
    stop.set_defaults(func=_stop)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except RedisServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
