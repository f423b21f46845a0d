"""The Phaseguard RQ worker on queue `phase-ops` (R-7.1): runs only `worker.jobs.<name>`.

The function name is checked against an explicit allowlist *before* anything is imported, so a
job naming `os.system` (or `worker.jobs.os.system`) fails without its target ever being loaded.
Both sides use RQ's JSON serializer (R-7.13): no pickles.
"""

from __future__ import annotations

import re
from typing import Any

from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker, Worker

JOB_MODULE = "worker.jobs"
ALLOWED_JOBS = frozenset({
    "accounts_add", "accounts_retire", "advance", "deadletter_requeue", "deadletter_discard",
    "acknowledge", "force_advance", "rollback", "reset_epoch", "clear_reduction",
    "policy_apply", "archive",
})
_NAME = re.compile(r"^worker\.jobs\.([a-z_]+)$")


class ForbiddenJob(Exception):
    """A job names a function outside worker.jobs: refused before import."""


def allowed(func_name: str | None) -> bool:
    m = _NAME.fullmatch(func_name or "")
    return m is not None and m.group(1) in ALLOWED_JOBS


class PhaseguardJob(Job):
    """An RQ job that refuses to resolve any function but the allowed `worker.jobs.*`.

    RQ also imports and runs a job's success, failure and stopped callbacks by name, which would
    let whoever can enqueue run any importable function. Phaseguard jobs have no callbacks: a job
    that carries one is refused, and no callback is ever resolved.
    """

    @property
    def func(self) -> Any:
        if not allowed(self.func_name):
            raise ForbiddenJob(f"refused: {self.func_name!r} is not a Phaseguard job")
        callbacks = [name for name in (getattr(self, f"_{hook}_callback_name", None)
                                       for hook in ("success", "failure", "stopped")) if name]
        if callbacks:
            raise ForbiddenJob(f"refused: {self.func_name!r} carries callbacks {callbacks!r}")
        return super().func

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


class PhaseguardWorker(Worker):
    """The ops worker process (forks a work horse per job)."""

    job_class = PhaseguardJob
    serializer = JSONSerializer


class PhaseguardSimpleWorker(SimpleWorker):
    """The same checks without forking: for tests (`work(burst=True)`)."""

    job_class = PhaseguardJob
    serializer = JSONSerializer


def main() -> int:
    from worker.cli import ops_worker_main

    return ops_worker_main()


if __name__ == "__main__":
    raise SystemExit(main())
