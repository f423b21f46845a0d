"""The override password and the derived key never leave the processes that hold them (R-7.9,
R-7.13).

One full run for the module: signed jobs that succeed and fail in process, a real ops worker
process and phasectl with the right and a wrong password, and the exports of every kind. Then
every place the data could end up is searched for the password and the key, raw, hex, base64
and URL-safe base64 (with and without padding): every Redis key and value, the AOF files, an
RDB snapshot, the logs of the ops worker and of phasectl, and the exports.
"""

from __future__ import annotations

import ast
import base64
import importlib
import importlib.util
import io
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.integration.signed_support import (
    PARAMS,
    PASSWORD,
    PHASECTL,
    PYTHON,
    REPO,
    WRONG_PASSWORD,
    Captured,
    OpsWorker,
    deployment,
    env_for,
    s,
)
from worker.domain.policy import DEFAULT_POLICY
from worker.ops.signing import derive_key
from worker.redis_acl import USER_FOR_ROLE
from worker.redis_server import RedisServer

pytestmark = pytest.mark.redis

ACCT = "acct-1"
TRIPPED = "acct-2"
SHORT_PASSWORD = "only nineteen chars"  # 19 characters: one short of R-7.9's minimum
OTHER_KEY = bytes(range(32))


def encodings(secret: bytes) -> dict[str, bytes]:
    """Every encoding R-7.13 names: raw, hex, base64 and URL-safe base64, padded or not."""
    forms = {
        "raw": secret,
        "hex": secret.hex().encode(),
        "HEX": secret.hex().upper().encode(),
        "base64": base64.b64encode(secret),
        "urlsafe_base64": base64.urlsafe_b64encode(secret),
    }
    forms["base64_unpadded"] = forms["base64"].rstrip(b"=")
    forms["urlsafe_base64_unpadded"] = forms["urlsafe_base64"].rstrip(b"=")
    return forms


@dataclass
class FullRun:
    needles: dict[str, bytes]
    marker: bytes  # a request id the run stored: proves each search reads the right data
    phasectl: list[Captured] = field(default_factory=list)
    worker_logs: str = ""
    exports: dict[str, str] = field(default_factory=dict)
    export_skipped: str = ""


def leaks(haystack: bytes, needles: dict[str, bytes]) -> list[str]:
    return [name for name, needle in needles.items() if needle in haystack]


@pytest.fixture(scope="module")
def full_run(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[FullRun]:
    key = derive_key(PASSWORD, PARAMS)  # once for the module: the in-process jobs sign with it
    needles = {f"password/{n}": v for n, v in encodings(PASSWORD.encode()).items()}
    needles |= {f"wrong_password/{n}": v for n, v in encodings(WRONG_PASSWORD.encode()).items()}
    needles |= {f"key/{n}": v for n, v in encodings(key).items()}
    admin = redis_server.admin_client()
    workdir = tmp_path_factory.mktemp("secrets")

    def url(role: str) -> str:
        return redis_server.url_for(USER_FOR_ROLE[role])  # type: ignore[index]

    ops_worker: OpsWorker | None = None
    try:
        admin.flushall()
        with deployment(admin, url, key) as d:
            d.register(ACCT)
            d.trip(TRIPPED)
            applied = d.request("force_advance", ACCT, target="proof")
            d.run(("force_advance", applied), ("force_advance", applied),  # + a replay
                  ("acknowledge", d.request("acknowledge", TRIPPED)),
                  ("clear_reduction", d.request("clear_reduction", TRIPPED)),
                  ("reset_epoch", d.request("reset_epoch", TRIPPED)),
                  ("policy_apply", d.request("policy_apply", None,
                                             policy=DEFAULT_POLICY.canonical_json(),
                                             expected_policy_version=DEFAULT_POLICY.version)),
                  ("acknowledge", d.request("acknowledge", ACCT, v="bogus")),
                  *[("rollback", d.request("rollback", ACCT, target="experience",
                                           operator="mallory", key=OTHER_KEY))
                    for _ in range(6)])
            run = FullRun(needles, applied["request_id"].encode())

            ops_worker = OpsWorker(url("worker"), PASSWORD, workdir)
            ops_worker.wait_ready(admin)
            for password, operator in ((PASSWORD, "alice"), (WRONG_PASSWORD, "bob")):
                proc = subprocess.run(
                    [str(PHASECTL), "override", "rollback", TRIPPED, "--to", "experience",
                     "--operator", operator, "--reason", "secrets test", "--password-stdin"],
                    input=password + "\n", capture_output=True, text=True, cwd=workdir,
                    env=env_for(url("ops")), timeout=90, check=False)
                run.phasectl.append(Captured(proc.returncode, proc.stdout, proc.stderr))
            ops_worker.stop()
            run.worker_logs = ops_worker.logs()

            if importlib.util.find_spec("worker.export") is None:
                run.export_skipped = "worker/export.py does not exist yet (issue: export)"
            else:
                export_mod = importlib.import_module("worker.export")
                for account in (ACCT, TRIPPED):
                    for kind in export_mod.KINDS:
                        for fmt in export_mod.FORMATS:
                            out = io.StringIO()
                            export_mod.export(d.ops, d.keys, account, kind, fmt, out,
                                              spool_dir=str(workdir))
                            run.exports[f"{account}/{kind}.{fmt}"] = out.getvalue()
        yield run
    finally:
        if ops_worker is not None:
            ops_worker.stop()
        admin.close()


def test_the_full_run_signed_succeeded_and_failed(full_run: FullRun) -> None:
    assert [c.code for c in full_run.phasectl] == [0, 3]
    assert "applied" in full_run.phasectl[0].stdout
    assert "bad_signature" in full_run.phasectl[1].stdout


def _redis_bytes(admin: redis.Redis, key: bytes) -> bytes:
    """The key's name, its DUMP and its contents read by type."""
    parts = [key, admin.dump(key) or b""]
    kind = s(admin.type(key))
    if kind == "string":
        parts.append(admin.get(key) or b"")
    elif kind == "hash":
        parts += [b for kv in admin.hgetall(key).items() for b in kv]
    elif kind == "stream":
        parts += [b for _, fields in admin.xrange(key) for kv in fields.items() for b in kv]
    elif kind == "zset":
        parts += [m for m, _ in admin.zrange(key, 0, -1, withscores=True)]
    elif kind == "list":
        parts += admin.lrange(key, 0, -1)
    elif kind == "set":
        parts += list(admin.smembers(key))
    return b"\n".join(parts)


def test_the_search_finds_every_encoding_of_a_planted_secret(redis_server: RedisServer) -> None:
    planted = encodings(b"a planted stand-in, never the real password")
    with redis_server.admin_client() as admin:
        try:
            admin.set("probe:raw", planted["raw"])
            admin.hset("probe:hash", "f", b"x" + planted["urlsafe_base64_unpadded"] + b"y")
            admin.xadd("probe:stream", {"data": planted["HEX"]})
            found = set()
            for key in ("probe:raw", "probe:hash", "probe:stream"):
                found |= set(leaks(_redis_bytes(admin, key.encode()), planted))
        finally:
            admin.delete("probe:raw", "probe:hash", "probe:stream")

    assert {"raw", "urlsafe_base64_unpadded", "HEX"} <= found


def test_r7_13_no_redis_key_or_value_holds_the_password_or_the_key(
        full_run: FullRun, redis_server: RedisServer) -> None:
    with redis_server.admin_client() as admin:
        found: dict[str, list[str]] = {}
        everything = []
        for key in admin.scan_iter(count=1000):
            data = _redis_bytes(admin, key)
            everything.append(data)
            if hit := leaks(data, full_run.needles):
                found[s(key)] = hit

    assert found == {}
    assert any(full_run.marker in data for data in everything)


def test_r7_13_the_aof_holds_neither_the_password_nor_the_key(
        full_run: FullRun, redis_server: RedisServer) -> None:
    files = sorted((redis_server.data_dir / "appendonlydir").iterdir())
    assert files

    contents = b"".join(f.read_bytes() for f in files)

    assert leaks(contents, full_run.needles) == []
    assert full_run.marker in contents


def test_r7_13_an_rdb_snapshot_holds_neither_the_password_nor_the_key(
        full_run: FullRun, redis_server: RedisServer) -> None:
    with redis_server.admin_client() as admin:
        directory = Path(admin.config_get("dir")["dir"])
        rdb = directory / admin.config_get("dbfilename")["dbfilename"]
        compression = admin.config_get("rdbcompression")["rdbcompression"]
        admin.config_set("rdbcompression", "no")  # LZF could hide a value from the search
        try:
            admin.save()
            contents = rdb.read_bytes()
        finally:
            admin.config_set("rdbcompression", compression)
            rdb.unlink(missing_ok=True)

    assert leaks(contents, full_run.needles) == []
    assert full_run.marker in contents


def test_r7_13_the_ops_worker_logs_hold_neither_the_password_nor_the_key(
        full_run: FullRun) -> None:
    logs = full_run.worker_logs.encode()

    assert leaks(logs, full_run.needles) == []
    assert b"worker.jobs.rollback" in logs


def test_r7_13_phasectls_output_holds_neither_the_password_nor_the_key(
        full_run: FullRun) -> None:
    for run in full_run.phasectl:
        assert leaks((run.stdout + run.stderr).encode(), full_run.needles) == []


def test_r7_13_exports_hold_neither_the_password_nor_the_key(full_run: FullRun) -> None:
    if full_run.export_skipped:
        pytest.skip(full_run.export_skipped)
    assert full_run.exports

    for name, text in full_run.exports.items():
        assert leaks(text.encode(), full_run.needles) == [], name
    assert any(full_run.marker.decode() in text for text in full_run.exports.values())


# -- the ops worker's key --------------------------------------------------------------------


def test_r7_9_the_ops_worker_refuses_a_password_shorter_than_20_characters(
        redis_server: RedisServer, tmp_path: Path) -> None:
    assert len(SHORT_PASSWORD) == 19
    url = redis_server.url_for(USER_FOR_ROLE["worker"])

    proc = subprocess.run([PYTHON, "-m", "worker.ops_worker"], capture_output=True, text=True,
                          cwd=tmp_path, env=env_for(url, PHASE_OVERRIDE_PASSWORD=SHORT_PASSWORD),
                          timeout=60, check=False)

    assert proc.returncode != 0
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "20" in proc.stderr
    assert SHORT_PASSWORD not in proc.stdout + proc.stderr


def _calls(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, dotted name) of every call in `tree`, in source order."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            found.append((node.lineno, ast.unparse(node.func)))
    return sorted(found)


def _function(path: Path, name: str) -> ast.FunctionDef:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    [fn] = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name]
    return fn


def test_r7_9_the_ops_worker_derives_the_key_before_it_builds_the_rq_worker() -> None:
    calls = _calls(_function(REPO / "worker" / "cli.py", "ops_worker_main"))

    install = [line for line, name in calls if name == "keyring.install"]
    build = [line for line, name in calls if name == "PhaseguardWorker"]
    work = [line for line, name in calls if name.endswith(".work")]
    assert len(install) == len(build) == len(work) == 1
    assert install[0] < build[0] < work[0]


def test_r7_9_jobs_never_derive_a_key() -> None:
    paths = [REPO / "worker" / "jobs.py", REPO / "worker" / "ops_worker.py",
             *sorted((REPO / "worker" / "ops").glob("*.py"))]
    derivers = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [name for _, name in _calls(tree)
                 if name.split(".")[-1] in ("derive_key", "pbkdf2_hmac")]
        if names:
            derivers[path.name] = names

    # only keyring.install (run once at start-up) and the KDF itself may derive
    assert derivers == {"signing.py": ["hashlib.pbkdf2_hmac"], "keyring.py": ["derive_key"]}
