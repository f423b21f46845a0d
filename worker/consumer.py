"""The inbox consumer (SPEC §10): shard leases, batched XREADGROUP, one transaction per batch.

Per shard batch: **gather** (decode, WATCH lease and states, read states, ledgers, registry and
the clock in one round trip), **decide** (the pure core, once per message, in inbox order),
**apply** (state, history, events, dead letters, ledger clean-up and XACK in one MULTI/EXEC).

`run()` (the service) gives each owned shard a thread that blocks on its inbox and applies each
batch as it arrives; `run_once()` (tests) reads every owned shard once and processes that round.
docs/decisions.md ("Delivery") says why.
"""

from __future__ import annotations

import gc
import json
import math
import threading
import time
import uuid
import weakref
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import redis
import structlog
from redis.client import Pipeline
from redis.exceptions import ResponseError

from contracts.codec import decode_inbox
from contracts.errors import InvalidMessage
from contracts.messages import SessionEnded, TradeClosed
from worker.domain.calendar import Calendar
from worker.domain.decide import (
    Decision,
    Emitted,
    LedgerView,
    Record,
    Sweep,
    account_now,
    calendar_of,
    decide,
)
from worker.domain.model import AccountState
from worker.domain.policy import Policy
from worker.store.codec import StateCodecError, decode_state
from worker.store.keys import CONSUMER_GROUP, Keys, consumer_name
from worker.store.ledger import cleanup_fields, read_ledger
from worker.store.runtime import PolicyHolder, policy_for, redis_now
from worker.store.uow import (
    Command,
    Contention,
    LeaseLost,
    Staging,
    dumps,
    round_trip,
    transact,
    transact_reads,
)

log = structlog.get_logger("phaseguard.consumer")

BATCH = 1000  # entries per XREADGROUP per shard: one transaction each (BENCHMARKS.md)
PARALLEL = 4  # shards whose batches one worker processes at once, in threads (run_once)
GC_THRESHOLDS = (1_000, 5, 10)  # gc.set_threshold of a worker process (tune_gc)
LEASE_MS = 10_000  # lease expiry; renewed every LEASE_MS / 3
SWEEP_EVERY_S = 30.0  # session-close sweep period
SWEEP_BUDGET = 100  # registry entries a sweep chunk looks at, at most (more on small shards)
TICK_S = 0.1  # the service loop's periodic work: at most this late (and a stop noticed)
SWEEP_PAUSE_S = 0.01  # between two chunks of a sweep pass in the service loop
LOOP_BLOCK_MS = 250  # a shard loop's blocking read: how soon it notices a stop
LOOP_JOIN_S = 30.0  # waiting for a shard loop to finish its batch when it is stopped
TRIM_EVERY_S = 300.0  # inbox trimming period
CALENDAR_EVERY_S = 3600.0  # republish the shard calendars for the entry script
CALENDAR_DAYS = 400  # session opens published ahead
CALENDAR_BACK = 10  # and behind, so the script can find today's and yesterday's session

Hook = Callable[[str], None]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def tune_gc() -> None:
    """The garbage collector of a worker process (its composition root calls this).

    A worker keeps many long-lived objects (the decoded states of its accounts: immutable, so
    never part of a reference cycle) and allocates many short-lived ones per message, nearly
    all freed by reference counting. CPython's collector would scan the long-lived ones again
    and again: a full collection over tens of thousands of cached states stopped every thread
    of the process for 50-200 ms, the tail of publish -> event (BENCHMARKS.md), and with larger
    thresholds even a young collection took tens of milliseconds.

    So young collections stay small (short pauses), and whatever survived a generation-1
    collection, i.e. two collections, is frozen (`gc.freeze`): moved out of the collector's
    sight for good. Cycles that die young are still collected; the price is that a cycle among
    long-lived objects that dies later is never freed, which this process does not make.
    """
    gc.set_threshold(*GC_THRESHOLDS)
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


def _freeze_survivors(phase: str, info: dict[str, int]) -> None:
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()  # O(1): the generations' lists are spliced onto the permanent one


CALENDAR_RECORD = 20  # "YYYY-MM-DD" and the open in 10-digit epoch seconds


def calendar_blob(policy: Policy, start: date, count: int = CALENDAR_DAYS) -> str:
    """What the entry script reads: {"opens":"<day><epoch seconds>...","min_size":"10.00"}.

    The opens are one string of fixed 20-character records, ascending, and come first: the
    script bisects them with GETRANGE, a record at a time, where decoding 410 JSON pairs cost
    ~100 us of every request (entry.lua depends on this exact layout).
    """
    cal = Calendar(policy.calendar)
    first = cal.add_trading_days(start, -CALENDAR_BACK)
    opens = cal.opens(first, count + CALENDAR_BACK)
    records = "".join(f"{cal.trading_day(o).isoformat()}{int(o.timestamp()):010d}" for o in opens)
    return json.dumps({"opens": records, "min_size": str(policy.sizes.min_position_size)},
                      separators=(",", ":"))


def calendar_opens(blob: str) -> list[tuple[date, int]]:
    """The (trading day, open in epoch seconds) records of a `calendar_blob`."""
    records = json.loads(blob)["opens"]
    n = CALENDAR_RECORD
    return [(date.fromisoformat(records[i:i + 10]), int(records[i + 10:i + n]))
            for i in range(0, len(records), n)]


@dataclass
class _Item:
    entry_id: str
    fields: dict[Any, Any]
    msg: TradeClosed | SessionEnded | None
    error: InvalidMessage | None
    account_id: str | None


@dataclass
class _Loaded:
    now: datetime
    registry: dict[str, dict[str, Any] | None]
    states: dict[str, AccountState | None]
    raw_versions: dict[str, str]
    dead_letters: dict[str, int]
    ledgers: dict[str, dict[Any, Any]]


@dataclass
class _ShardLoop:
    thread: threading.Thread
    stop: threading.Event


@dataclass
class ShardConsumer:
    """Owns shard leases and processes their inboxes. `run_once()` is the finite mode for tests."""

    client: redis.Redis
    keys: Keys
    policy: PolicyHolder
    name: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:12]}")
    lease_ms: int = LEASE_MS
    batch: int = BATCH
    max_shards: int | None = None
    fault_hook: Hook | None = None
    parallel: int = PARALLEL
    owned: set[int] = field(default_factory=set)
    _needs_pending: set[int] = field(default_factory=set)
    _cache: dict[str, tuple[str, AccountState]] = field(default_factory=dict)
    # account -> (version, the state hash's fields at that version): writes send only changes
    _fields: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    _next_renew: float = 0.0
    _next_sweep: float = 0.0
    _sweeps: dict[int, int] = field(default_factory=dict)  # shard -> HSCAN cursor, pass under way
    _next_trim: float = 0.0
    _next_calendar: dict[int, float] = field(default_factory=dict)
    _cal_days: dict[str, date] = field(default_factory=dict)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _loops: dict[int, _ShardLoop] = field(default_factory=dict, repr=False)  # run(): per shard
    _loop_failure: Exception | None = field(default=None, repr=False)
    loop_handled: dict[int, int] = field(default_factory=dict)  # run(): entries handled, by shard
    _wake: threading.Event = field(default_factory=threading.Event, repr=False)

    # -- leases (R-10.1) -------------------------------------------------------------------------
    def balance(self) -> None:
        """Renew held leases, then take or give up shards toward an even share."""
        r = self.client
        # Redis's clock, not this host's: heartbeats of workers on other hosts compare fairly
        now_ms = int(redis_now(r.time()).timestamp() * 1000)
        pipe = r.pipeline(transaction=False)
        pipe.zadd(self.keys.workers, {self.name: now_ms + self.lease_ms})
        pipe.zremrangebyscore(self.keys.workers, "-inf", now_ms)
        pipe.zcard(self.keys.workers)
        # once: a shard loop may drop a shard meanwhile (LeaseLost). A shard with a running loop
        # is renewed by that loop, between its transactions: renewing touches the lease key that
        # every transaction WATCHes, so from here it would make an in-flight batch start over.
        held = [k for k in sorted(self.owned) if not self._loop_running(k)]
        for k in held:
            pipe.eval(_RENEW, 1, self.keys.lease(k), self.name, self.lease_ms)
        res = pipe.execute()
        live = max(1, int(res[2]))
        for k, ok in zip(held, res[3:], strict=True):
            if not ok:
                self.owned.discard(k)
                log.warning("lease_lost", shard=k)
        # A worker whose lease expired unnoticed may still have read entries of a shard we own
        # (they are pending under the shard's consumer name, and ">" never returns them again):
        # look at the pending entries once per renewal.
        self._needs_pending.update(held)
        share = math.ceil(self.keys.shards / live)
        if self.max_shards is not None:
            share = min(share, self.max_shards)
        excess = sorted(self.owned, reverse=True)[:max(0, len(self.owned) - share)]
        # their loops end first (with the batch in hand): a read one had blocked in could
        # otherwise take entries after the next owner started
        self._stop_loops(excess)
        for k in excess:
            r.eval(_RELEASE, 1, self.keys.lease(k), self.name)
            self.owned.discard(k)
            log.info("lease_released", shard=k)
        if len(self.owned) < share:
            start = zlib.crc32(self.name.encode()) % self.keys.shards
            for i in range(self.keys.shards):
                if len(self.owned) >= share:
                    break
                k = (start + i) % self.keys.shards
                if k in self.owned:
                    continue
                if r.set(self.keys.lease(k), self.name, nx=True, px=self.lease_ms):
                    self.owned.add(k)
                    self._needs_pending.add(k)  # a new owner resumes pending entries first
                    self._ensure_group(k)
                    log.info("lease_acquired", shard=k)
        self._next_renew = time.monotonic() + self.lease_ms / 3000

    def release_all(self) -> None:
        self._stop_loops(list(self._loops))
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        for k in sorted(self.owned):
            self.client.eval(_RELEASE, 1, self.keys.lease(k), self.name)
        self.owned.clear()
        self.client.zrem(self.keys.workers, self.name)

    def _ensure_group(self, k: int) -> None:
        try:
            self.client.xgroup_create(self.keys.inbox(k), CONSUMER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # -- the loop --------------------------------------------------------------------------------
    def run_once(self, block_ms: int | None = None) -> int:
        """One round: keep leases, then one batch per owned shard. Returns entries handled."""
        clock = time.monotonic()
        if clock >= self._next_renew:
            self.balance()
        self.policy.refresh()
        batches = self._read_all(sorted(self.owned)) if block_ms is None else {}
        # Threads overlap the waiting for fsyncs, which is what a round of small batches is
        # made of; a backlog's full batches are CPU work, where they only take turns.
        if (self.parallel > 1 and block_ms is None
                and sum(map(len, batches.values())) < self.batch):
            handled = self._parallel_round(batches, clock)
        else:
            handled = self._sequential_round(batches, clock, block_ms)
        self._sweep_and_trim(clock)
        return handled

    def _sequential_round(self, batches: dict[int, list[Any]], clock: float,
                          block_ms: int | None) -> int:
        handled = 0
        for k in sorted(self.owned):
            if time.monotonic() >= self._next_renew:
                self.balance()  # a long round (large batches, a backlog) must not outlive leases
                if k not in self.owned:
                    continue  # what was read for it stays pending for its next owner
            if clock >= self._next_calendar.get(k, 0.0):
                self._publish_calendar(k)
            try:
                handled += self._shard_round(k, block_ms, batches.get(k))
            except LeaseLost:
                # another worker owns it now: never commit for it again
                self.owned.discard(k)
                log.warning("lease_lost", shard=k)
            except Contention:
                self._needs_pending.add(k)  # the batch stays pending; retried next round
                log.warning("batch_contention", shard=k)
        return handled

    def _parallel_round(self, batches: dict[int, list[Any]], clock: float) -> int:
        """Every shard with input at once, up to `parallel` threads, each shard in one thread
        (so each shard's batches stay in inbox order).

        The Python work still takes turns on the GIL; what overlaps is the waiting: with
        appendfsync always, every EXEC waits for an fsync, and one after another they made a
        round of many small batches (a steady trickle of input) last one fsync per shard.
        """
        work: list[int] = []
        for k in sorted(self.owned):
            if clock >= self._next_calendar.get(k, 0.0):
                self._publish_calendar(k)
            if batches.get(k) or k not in batches or k in self._needs_pending:
                work.append(k)
        if not work:
            return 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallel, thread_name_prefix="phase-shard")
            weakref.finalize(self, self._pool.shutdown, wait=False)  # a dropped consumer's threads
        futures: dict[int, Future[int]] = {
            k: self._pool.submit(self._shard_round, k, None, batches.get(k)) for k in work}
        running = set(futures.values())
        while running:
            # Renewing a lease modifies its key, which every running transaction WATCHes: it
            # would make them all start again. Only a round this long renews mid-way (two
            # thirds of the lease after the last renewal), so that it cannot outlive its leases.
            urgent = self._next_renew + self.lease_ms / 3000
            _, running = wait(running, timeout=max(0.0, urgent - time.monotonic()))
            if running and time.monotonic() >= urgent:
                self.balance()
        handled = 0
        failure: BaseException | None = None
        for k, fut in futures.items():
            try:
                handled += fut.result()
            except LeaseLost:
                self.owned.discard(k)  # another worker owns it now
                log.warning("lease_lost", shard=k)
            except Contention:
                self._needs_pending.add(k)  # the batch stays pending; retried next round
                log.warning("batch_contention", shard=k)
            except Exception as exc:  # e.g. Redis away: raised once every thread is done
                failure = failure or exc
        if failure is not None:
            raise failure
        return handled

    def run(self, should_stop: Callable[[], bool], block_ms: int = LOOP_BLOCK_MS) -> None:
        """The service loop, until should_stop(): each owned shard has its own thread that
        blocks on the shard's inbox and applies a batch the moment it arrives (`_shard_loop`);
        this thread keeps the leases, the calendars, the sweep and the trimming.

        A stop signal lets every loop finish the batch in hand (graceful stop): a loop blocked
        on an empty inbox notices within `block_ms`.
        """
        backoff = 0.0
        try:
            while not should_stop():
                try:
                    if self._loop_failure is not None:
                        failure, self._loop_failure = self._loop_failure, None
                        raise failure
                    self.housekeeping()
                    for k in sorted(self.owned):
                        loop = self._loops.get(k)
                        if loop is None or not loop.thread.is_alive():
                            self._start_loop(k, block_ms)
                    backoff = 0.0
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    # Redis away: keep nothing half-done (uncommitted batches stay pending),
                    # retry with a capped exponential backoff, re-taking leases on return
                    backoff = min(5.0, max(0.1, backoff * 2))
                    log.error("redis_unavailable", error=str(exc), retry_in_s=backoff)
                    self._stop_loops(list(self._loops))
                    self.owned.clear()
                    self._next_renew = 0.0
                    time.sleep(backoff)
                    continue
                # the next periodic job is at most a tick away; a pass of the sweep goes on
                # chunk by chunk, a short pause between chunks
                self._wake.wait(SWEEP_PAUSE_S if self._sweeps else TICK_S)
                self._wake.clear()
        finally:
            try:
                self.release_all()
            except redis.RedisError:
                log.warning("leases_not_released", detail="they expire by themselves")

    def housekeeping(self) -> None:
        """The periodic work of the service loop: leases, policy, calendars, sweep, trim."""
        clock = time.monotonic()
        if clock >= self._next_renew:
            self.balance()
        self.policy.refresh()
        for k in sorted(self.owned):
            if clock >= self._next_calendar.get(k, 0.0):
                self._publish_calendar(k)
        self._sweep_and_trim(clock)

    def _sweep_and_trim(self, clock: float) -> None:
        if clock >= self._next_sweep:
            self._sweeps = dict.fromkeys(sorted(self.owned), 0)
            self._next_sweep = clock + SWEEP_EVERY_S
        if self._sweeps:
            self._sweep_some()
        if clock >= self._next_trim:
            for k in sorted(self.owned):
                self.trim(k)
            self._next_trim = clock + TRIM_EVERY_S

    def _start_loop(self, k: int, block_ms: int) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._shard_loop, args=(k, stop, block_ms),
                                  name=f"phase-shard-{k}", daemon=True)
        self._loops[k] = _ShardLoop(thread, stop)
        thread.start()

    def _stop_loops(self, shards: list[int]) -> None:
        """End these shards' loops after the batch in hand and wait for them, all at once."""
        loops = [(k, loop) for k in shards if (loop := self._loops.pop(k, None)) is not None]
        for _, loop in loops:
            loop.stop.set()
        for k, loop in loops:
            if loop.thread is threading.current_thread():
                continue
            loop.thread.join(LOOP_JOIN_S)
            if loop.thread.is_alive():
                log.warning("shard_loop_still_running", shard=k)

    def _loop_running(self, k: int) -> bool:
        loop = self._loops.get(k)
        return loop is not None and loop.thread.is_alive() and not loop.stop.is_set()

    def _shard_loop(self, k: int, stop: threading.Event, block_ms: int) -> None:
        """One owned shard: read (pending entries first, R-10.1), apply, again, until stopped
        or the shard is no longer ours. Each batch is one transaction (`_process`); the loop
        renews the shard's lease itself, between two batches (see `balance`)."""
        renew_s = self.lease_ms / 3000
        renew_at = time.monotonic() + renew_s
        while not stop.is_set() and k in self.owned:
            try:
                if time.monotonic() >= renew_at:
                    if not self.client.eval(_RENEW, 1, self.keys.lease(k), self.name,
                                            self.lease_ms):
                        raise LeaseLost(self.keys.lease(k))
                    renew_at = time.monotonic() + renew_s
                    self._needs_pending.add(k)  # as balance() does for the shards it renews
                n = self._shard_round(k, block_ms)
                if n:
                    self.loop_handled[k] = self.loop_handled.get(k, 0) + n  # this loop's key only
            except LeaseLost:
                # another worker owns it now: never commit for it again
                self.owned.discard(k)
                log.warning("lease_lost", shard=k)
                return
            except Contention:
                self._needs_pending.add(k)  # the batch stays pending; retried next read
                log.warning("batch_contention", shard=k)
            except Exception as exc:  # Redis away (or a bug): the service loop handles it
                self._loop_failure = exc
                self._wake.set()
                return

    def _read_all(self, shards: list[int]) -> dict[int, list[Any]]:
        """The next batch of every shard in one round trip: its pending entries if it needs
        them, else new ones. Delivering entries writes the group's pending list, so with
        appendfsync always each XREADGROUP waits for an fsync: one for all, not one each."""
        if not shards:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for k in shards:
            start = "0" if k in self._needs_pending else ">"
            pipe.xreadgroup(CONSUMER_GROUP, consumer_name(k), {self.keys.inbox(k): start},
                            count=self.batch)
        out: dict[int, list[Any]] = {}
        for k, res in zip(shards, pipe.execute(raise_on_error=False), strict=True):
            if not isinstance(res, Exception):  # else _shard_round reads (and raises) itself
                out[k] = list(res[0][1]) if res else []
        return out

    def _shard_round(self, k: int, block_ms: int | None,
                     prefetched: list[Any] | None = None) -> int:
        entries: list[Any] = []
        retrying = k in self._needs_pending  # pending entries may carry failure counts
        if prefetched is not None:
            entries = prefetched
            if not entries and k in self._needs_pending:
                self._needs_pending.discard(k)  # nothing pending: new entries next round
                entries = self._read(k, ">", None)
        else:
            if k in self._needs_pending:
                entries = self._read(k, "0", None)
                if not entries:
                    self._needs_pending.discard(k)
            if not entries:
                entries = self._read(k, ">", block_ms)
        if not entries:
            return 0
        if self.fault_hook:
            self.fault_hook("after_read")
        try:
            self._process(k, entries, clear_failures=retrying)
        except (LeaseLost, Contention):
            raise
        except Exception:
            log.exception("batch_failed", shard=k, entries=len(entries))
            self._needs_pending.add(k)
            for entry in entries:
                self._process_one_guarded(k, entry)
        return len(entries)

    def _read(self, k: int, stream_id: str, block_ms: int | None) -> list[Any]:
        res: Any = self.client.xreadgroup(CONSUMER_GROUP, consumer_name(k),
                                          {self.keys.inbox(k): stream_id}, count=self.batch,
                                          block=block_ms)
        return list(res[0][1]) if res else []

    def _process_one_guarded(self, k: int, entry: tuple[Any, Any]) -> None:
        """R-10.6: retry one at a time; the 5th failure of a message dead-letters it."""
        entry_id = _text(entry[0])
        try:
            self._process(k, [entry], clear_failures=True)
        except (LeaseLost, Contention):
            raise
        except Exception as exc:
            fails = int(self.client.hincrby(self.keys.failures(k), entry_id, 1))
            log.exception("message_failed", shard=k, entry_id=entry_id, attempt=fails)
            if fails >= self.policy.current.delivery.max_attempts:
                self._give_up(k, entry, exc)

    def _give_up(self, k: int, entry: tuple[Any, Any], exc: Exception) -> None:
        started = time.perf_counter()
        entry_id, fields = _text(entry[0]), entry[1]
        account = _guess_account(fields)
        watch = [self.keys.state(k, account)] if account else []

        def gather(pipe: Pipeline) -> _Loaded | None:
            if account is None:
                return None
            try:
                return self._load(k, [account])
            except (ValueError, TypeError):  # an unreadable registry entry: nothing to degrade
                return None

        def stage(loaded: _Loaded | None) -> Staging:
            st = Staging(self.keys, k, self.policy.current.delivery.events_maxlen)
            st.deadletter(reason="processing_failed", error=repr(exc), source_id=entry_id,
                          type_=_field(fields, "type"), data=_field(fields, "data"),
                          account_id=account)
            st.raw(lambda p: p.hdel(self.keys.failures(k), entry_id))
            st.ack(entry_id)
            reg = loaded.registry.get(account) if loaded and account else None
            state = loaded.states.get(account) if loaded and account else None
            if loaded and account and reg and not reg.get("retired_at") and state is not None:
                # like any dead letter of a registered account, it degrades the account
                degraded = self._degrade(st, state, loaded.now, entry_id, "processing_failed")
                st.state(degraded, {"dead_letters": str(loaded.dead_letters.get(account, 0) + 1)})
            return st

        transact(self.client, watch, gather, stage, lease_key=self.keys.lease(k),
                 owner=self.name)
        self._cache.pop(account or "", None)
        # its one line, like every handled message
        log.info("message", shard=k, account_id=account, entry_id=entry_id,
                 outcome="dead_letter", reason="processing_failed",
                 latency_ms=round((time.perf_counter() - started) * 1000, 3))

    # -- one batch -------------------------------------------------------------------------------
    def _process(self, k: int, entries: list[tuple[Any, Any]], *,
                 clear_failures: bool = False) -> None:
        """One transaction for the batch. `clear_failures`: these entries were retried, so
        their R-10.6 failure counts go in the same EXEC as their effects."""
        started = time.perf_counter()
        items: list[_Item] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            try:
                msg = decode_inbox(fields)
                items.append(_Item(entry_id, fields, msg, None, msg.account_id))
            except InvalidMessage as exc:
                items.append(_Item(entry_id, fields, None, exc, _guess_account(fields)))
        accounts = list(dict.fromkeys(i.account_id for i in items if i.account_id))
        state_keys = [self.keys.state(k, a) for a in accounts]

        reads, cold = self._load_reads(k, accounts)

        def parse(pipe: Pipeline, replies: list[Any]) -> _Loaded:
            return self._load_parse(k, accounts, cold, replies,
                                    lambda commands: round_trip(pipe, commands))

        outcomes: list[tuple[_Item, str, str | None]] = []
        commits: dict[str, tuple[str, AccountState, dict[str, str]]] = {}

        def stage(loaded: _Loaded) -> Staging:
            outcomes.clear()
            commits.clear()
            if self.fault_hook:
                self.fault_hook("before_exec")
            staging = self._stage(k, items, loaded, outcomes, commits)
            if clear_failures:
                ids = [i.entry_id for i in items]
                staging.raw(lambda p: p.hdel(self.keys.failures(k), *ids))
            return staging

        # WATCH, the lease check and every read in one round trip, EXEC in a second
        transact_reads(self.client, state_keys, reads, parse, stage,
                       lease_key=self.keys.lease(k), owner=self.name)
        # only what EXEC committed may be cached: a state staged for a transaction that lost
        # its WATCH could otherwise be taken for another writer's state of the same version
        for acc, (version, st, written) in commits.items():
            self._cache[acc] = (version, st)
            self._fields[acc] = (version, written)
        elapsed_ms = (time.perf_counter() - started) * 1000 / max(1, len(items))
        for item, outcome, reason in outcomes:
            log.info("message", shard=k, account_id=item.account_id, entry_id=item.entry_id,
                     outcome=outcome, reason=reason, latency_ms=round(elapsed_ms, 3))

    def _load(self, k: int, accounts: list[str]) -> _Loaded:
        """`_load_reads` in one round trip of a plain pipeline (the pipeline of `transact` is
        watching, one command at a time), then `_load_parse`."""
        reads, cold = self._load_reads(k, accounts)
        return self._load_parse(k, accounts, cold, self._pipelined(reads), self._pipelined)

    def _pipelined(self, commands: list[Command]) -> list[Any]:
        rp = self.client.pipeline(transaction=False)
        for command in commands:
            rp.execute_command(*command)  # type: ignore[no-untyped-call]
        return rp.execute()

    def _load_reads(self, k: int, accounts: list[str]) -> tuple[list[Command], set[str]]:
        """What a batch reads under WATCH: clock, registry, each state's version, ledgers; the
        whole state hash of the accounts this process has no decoded state of (`cold`)."""
        cold = {a for a in accounts if a not in self._cache}  # no version to compare: read all
        reads: list[Command] = [("TIME",)]
        if accounts:
            reads.append(("HMGET", self.keys.registry(k), *accounts))
        for a in accounts:
            if a in cold:
                reads.append(("HGETALL", self.keys.state(k, a)))
            else:
                reads.append(("HMGET", self.keys.state(k, a), "version", "dead_letters"))
            reads.append(("HGETALL", self.keys.entries(k, a)))
        return reads, cold

    def _load_parse(self, k: int, accounts: list[str], cold: set[str], res: list[Any],
                    read: Callable[[list[Command]], list[Any]]) -> _Loaded:
        """The replies of `_load_reads`; then, through `read`, the whole state hash of the
        accounts whose cached decoded state is not the version the hash holds.

        Every writer of a state bumps its `version`, so an equal version means the cached
        state (and the fields this process last wrote or read) is what the hash holds.
        """
        now = redis_now(res[0])
        regs_raw = res[1] if accounts else []
        registry: dict[str, dict[str, Any] | None] = {}
        states: dict[str, AccountState | None] = {}
        versions: dict[str, str] = {}
        dls: dict[str, int] = {}
        ledgers: dict[str, dict[Any, Any]] = {}
        misses: list[str] = []
        for i, a in enumerate(accounts):
            reg = regs_raw[i]
            registry[a] = json.loads(reg) if reg else None
            ledgers[a] = res[3 + 2 * i]
            if a in cold:
                raw_state = {_text(f): _text(v) for f, v in res[2 + 2 * i].items()}
                versions[a] = raw_state.get("version", "")
                dls[a] = int(raw_state.get("dead_letters", "0") or 0)
                states[a] = self._decode_cached(a, raw_state)
                continue
            version_raw, dl_raw = res[2 + 2 * i]
            dls[a] = int(dl_raw or 0)
            if version_raw is None:  # no state hash (or one without a version: unreadable)
                misses.append(a)
                continue
            versions[a] = version = _text(version_raw)
            hit = self._cache.get(a)
            if hit is not None and hit[0] == version:
                states[a] = hit[1]
            else:
                misses.append(a)
        if misses:
            fetched = read([("HGETALL", self.keys.state(k, a)) for a in misses])
            for a, raw in zip(misses, fetched, strict=True):
                raw_state = {_text(f): _text(v) for f, v in raw.items()}
                versions[a] = raw_state.get("version", "")
                states[a] = self._decode_cached(a, raw_state)
        return _Loaded(now, registry, states, versions, dls, ledgers)

    def _decode_cached(self, account: str, raw: dict[str, str]) -> AccountState | None:
        if not raw:
            self._cache.pop(account, None)
            return None
        version = raw.get("version", "")
        hit = self._cache.get(account)
        if hit is not None and hit[0] == version:
            return hit[1]
        try:
            st = decode_state(raw)
        except StateCodecError:
            log.error("state_unreadable", account_id=account)
            return None
        self._cache[account] = (version, st)
        self._fields[account] = (version, raw)
        return st

    def _stage(self, k: int, items: list[_Item], loaded: _Loaded,
               outcomes: list[tuple[_Item, str, str | None]],
               commits: dict[str, tuple[str, AccountState, dict[str, str]]]) -> Staging:
        policy = self.policy.current
        staging = Staging(self.keys, k, self.policy.current.delivery.events_maxlen)
        now = loaded.now
        states = dict(loaded.states)
        dirty: dict[str, int] = {}  # account -> dead letters added in this batch
        touched: set[str] = set()
        consumed: dict[str, list[str]] = {}
        closed: dict[str, list[date]] = {}
        ledgers: dict[str, LedgerView] = {}  # parsed once per account and batch
        for item in items:
            acc = item.account_id
            reg = loaded.registry.get(acc) if acc else None
            st = states.get(acc) if acc else None
            reason: str | None = None
            error = ""
            if item.error is not None:
                reason, error = item.error.reason, item.error.detail
            elif acc is None or reg is None:
                reason, error = "unknown_account", f"account {acc!r} is not registered"
            elif reg.get("retired_at"):
                reason, error = "account_retired", f"account {acc} is retired"
            elif st is None:
                reason, error = "state_unavailable", f"state of {acc} is missing or unreadable"
            if reason is None and st is not None and item.msg is not None and acc is not None:
                # replay accounts run on the replay profile, in their own currency
                ledger = ledgers.get(acc)
                if ledger is None:
                    ledger = ledgers[acc] = read_ledger(loaded.ledgers[acc])
                decision = decide(st, ledger, item.msg,
                                  policy_for(policy, st.clock, st.currency), now,
                                  cause=item.entry_id)
                if decision.dead_letter is not None:
                    reason, error = decision.dead_letter.reason, decision.dead_letter.error
                else:
                    if decision.outcome == "applied":
                        states[acc] = decision.state
                        touched.add(acc)
                        self._stage_effects(staging, acc, decision, now, item.entry_id)
                        consumed.setdefault(acc, []).extend(decision.consumed_decisions)
                        closed.setdefault(acc, []).extend(decision.closed_days)
                    outcomes.append((item, decision.outcome, None))
            if reason is not None:
                staging.deadletter(reason=reason, error=error, source_id=item.entry_id,
                                   type_=_field(item.fields, "type"),
                                   data=_field(item.fields, "data"), account_id=acc)
                outcomes.append((item, "dead_letter", reason))
                st = states.get(acc) if acc else None
                # a retired account accepts no input anyway: its dead letters never degrade it
                retired = reg is not None and bool(reg.get("retired_at"))
                if acc and st is not None and not retired:
                    states[acc] = self._degrade(staging, st, now, item.entry_id, reason)
                    dirty[acc] = dirty.get(acc, 0) + 1
                    touched.add(acc)
            staging.ack(item.entry_id)
        for acc in touched:
            st = states[acc]
            if st is None:
                continue
            extra = {}
            if acc in dirty:
                extra["dead_letters"] = str(loaded.dead_letters.get(acc, 0) + dirty[acc])
            known = self._fields.get(acc)
            previous = known[1] if known and known[0] == loaded.raw_versions.get(acc) else None
            commits[acc] = (str(st.version), st, staging.state(st, extra, previous))
            if acc in consumed or acc in closed:
                fields = cleanup_fields(loaded.ledgers[acc], tuple(closed.get(acc, ())),
                                        tuple(consumed.get(acc, ())),
                                        # decisions expire on the account's own clock:
                                        # a replayed 2018 decision is not 30 days old in 2026
                                        calendar_of(policy.calendar).trading_day(
                                            account_now(st, now)),
                                        policy.delivery.decision_retention_days)
                if fields:
                    staging.raw(_hdel(self.keys.entries(k, acc), fields))
            if st.clock == "message":
                self._stage_account_calendar(staging, k, st, policy)
        return staging

    def _stage_effects(self, staging: Staging, acc: str, decision: Decision, now: datetime,
                       cause: str) -> None:
        for rec in decision.history:
            staging.history(acc, rec, now, cause)
        for ev in decision.events:
            staging.event(acc, ev, now, cause)

    def _degrade(self, staging: Staging, st: AccountState, now: datetime, cause: str,
                 reason: str) -> AccountState:
        """R-10.6: a dead letter for a registered account degrades it until an operator acts."""
        day = Calendar(self.policy.current.calendar).trading_day(now)
        staging.history(st.account_id, Record("dead_letter", {"reason": reason,
                                                              "source_id": cause}), now, cause)
        if not st.degraded:
            staging.event(st.account_id, Emitted("account_degraded", now, day,
                                                 {"reason": reason, "source_id": cause}),
                          now, cause)
        return replace(st, degraded=True, version=st.version + 1, updated_at=now)

    def _stage_account_calendar(self, staging: Staging, k: int, st: AccountState,
                                policy: Policy) -> None:
        if st.clock_at is None:
            return
        cal = Calendar(policy.calendar)
        day = cal.trading_day(st.clock_at)
        last = self._cal_days.get(st.account_id)
        if last is not None and last == day:
            return
        self._cal_days[st.account_id] = day
        blob = calendar_blob(policy, day)
        key = self.keys.account_calendar(k, st.account_id)
        staging.raw(lambda p: p.set(key, blob))

    def _publish_calendar(self, k: int) -> None:
        policy = self.policy.current
        now = redis_now(self.client.time())
        today = Calendar(policy.calendar).trading_day(now)
        self.client.set(self.keys.calendar(k), calendar_blob(policy, today))
        self._next_calendar[k] = time.monotonic() + CALENDAR_EVERY_S

    # -- periodic work ---------------------------------------------------------------------------
    def sweep(self, k: int) -> int:
        """R-10.5: close sessions whose end + grace has passed, for redis-clock accounts.

        One whole pass over shard k's registry; returns the accounts swept."""
        self.policy.refresh()  # the effective policy, also when called outside run_once
        cursor, swept, _ = self._sweep_chunk(k, 0)
        while cursor:
            cursor, n, _ = self._sweep_chunk(k, cursor)
            swept += n
        return swept

    def _sweep_some(self) -> None:
        """The next chunks of the sweep passes under way, SWEEP_BUDGET registry entries a round:
        a pass over tens of thousands of accounts in one go stalled every shard for a second."""
        budget = SWEEP_BUDGET
        for k in sorted(self._sweeps):
            if budget <= 0:
                break
            if k not in self.owned:
                del self._sweeps[k]
                continue
            cursor, _, seen = self._sweep_chunk(k, self._sweeps[k])
            budget -= seen
            if cursor:
                self._sweeps[k] = cursor
            else:
                del self._sweeps[k]

    def _sweep_chunk(self, k: int, cursor: int) -> tuple[int, int, int]:
        """One HSCAN step of shard k's registry: (next cursor, accounts swept, entries seen).

        HSCAN may return an entry twice; sweeping an account twice is a no-op the second time.
        """
        policy = self.policy.current
        cal = calendar_of(policy.calendar)
        scanned: Any = self.client.hscan(self.keys.registry(k), cursor, count=SWEEP_BUDGET)
        cursor, regs = int(scanned[0]), scanned[1]
        accounts = []
        for a, v in regs.items():
            reg = json.loads(v)
            if reg.get("clock") == "redis" and not reg.get("retired_at"):
                accounts.append(_text(a))
        if not accounts:
            return cursor, 0, len(regs)
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        for a in accounts:
            pipe.hget(self.keys.state(k, a), "open_day")
        res = pipe.execute()
        now = redis_now(res[0])
        grace = timedelta(seconds=policy.delivery.session_close_grace_seconds)
        due = []
        for a, day in zip(accounts, res[1:], strict=True):
            if day and cal.session_end(date.fromisoformat(_text(day))) + grace <= now:
                due.append(a)
        for a in due:
            self._sweep_account(k, a)
        return cursor, len(due), len(regs)

    def _sweep_account(self, k: int, account: str) -> None:
        cause = f"sweep:{uuid.uuid4().hex[:12]}"

        def gather(pipe: Pipeline) -> _Loaded:
            return self._load(k, [account])

        commits: dict[str, tuple[str, AccountState]] = {}

        def stage(loaded: _Loaded) -> Staging:
            staging = Staging(self.keys, k, self.policy.current.delivery.events_maxlen)
            commits.clear()
            st = loaded.states.get(account)
            if st is None:
                return staging
            decision = decide(st, read_ledger(loaded.ledgers[account]), Sweep(),
                              self.policy.current, loaded.now, cause=cause)
            if decision.outcome != "applied":
                return staging
            self._stage_effects(staging, account, decision, loaded.now, cause)
            staging.state(decision.state)
            commits[account] = (str(decision.state.version), decision.state)
            fields = cleanup_fields(loaded.ledgers[account], decision.closed_days, (),
                                    loaded.now.date(),
                                    self.policy.current.delivery.decision_retention_days)
            if fields:
                staging.raw(_hdel(self.keys.entries(k, account), fields))
            return staging

        transact(self.client, [self.keys.state(k, account)], gather, stage,
                 lease_key=self.keys.lease(k), owner=self.name)
        self._cache.update(commits)  # after EXEC only (see _process)

    def trim(self, k: int) -> None:
        """R-10.7: trim the inbox below the oldest pending entry minus 24 hours."""
        inbox = self.keys.inbox(k)
        try:
            summary = self.client.xpending(inbox, CONSUMER_GROUP)
        except ResponseError:
            return
        if summary and summary.get("pending"):
            oldest = _text(summary["min"])
        else:
            info = self.client.xinfo_groups(inbox)
            group = next((g for g in info if _text(g["name"]) == CONSUMER_GROUP), None)
            if group is None:
                return
            oldest = _text(group["last-delivered-id"])
        ms = int(oldest.split("-")[0]) - self.policy.current.delivery.inbox_retention_seconds * 1000
        if ms > 0:
            self.client.xtrim(inbox, minid=f"{ms}-0", approximate=True)


def _hdel(key: str, fields: list[str]) -> Callable[[Pipeline], object]:
    return lambda p: p.hdel(key, *fields)


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _field(fields: dict[Any, Any], name: str) -> str:
    v = fields.get(name.encode(), fields.get(name))
    if v is None:
        return ""
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _guess_account(fields: dict[Any, Any]) -> str | None:
    """Best effort: which account a malformed message was meant for (to degrade it)."""
    try:
        acc = json.loads(_field(fields, "data")).get("account_id")
    except (ValueError, AttributeError):
        return None
    return acc if isinstance(acc, str) and 0 < len(acc) <= 64 else None


__all__ = ["ShardConsumer", "calendar_blob", "calendar_opens", "dumps"]
_ = UTC
