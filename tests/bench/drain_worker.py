"""A consumer process for the throughput benchmark: `python -m tests.bench.drain_worker`.

It is `phase-worker` minus the signal handling: the same `ShardConsumer` service loop (`run`: a
thread per owned shard), JSON logging (one line per message, R-12.4, to --log) and GC tuning,
with a start line so that process start-up and imports stay out of the timing. `--rounds` drives
the finite mode (`run_once` until a round finds every owned inbox empty) instead.
Protocol on stdin/stdout, one line each:
  -> "ready <shards owned>"   leases taken (`--max-shards` of them), consumer groups created
  <- "go"                     start
  -> {"handled": N, "seconds": S}   once every owned inbox is delivered and acknowledged
  <- "stop" (or EOF)          exit 0 (the service loop released its leases when done)
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import redis

from tests.bench.workload import inboxes_drained
from worker.consumer import ShardConsumer, tune_gc
from worker.logging import configure_logging
from worker.store.runtime import PolicyHolder, load_keys

READY_TIMEOUT_S = 30.0
POLL_S = 0.01  # how often the service-loop mode looks whether the owned inboxes are done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prefix", default="phase")
    ap.add_argument("--max-shards", type=int, required=True)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--parallel", type=int, default=None)
    ap.add_argument("--default-gc", action="store_true", help="keep CPython's GC thresholds")
    ap.add_argument("--rounds", action="store_true", help="run_once rounds, not the service loop")
    ap.add_argument("--log", required=True)
    args = ap.parse_args(argv)
    with open(args.log, "a", encoding="utf-8") as log_file:
        configure_logging("json", stream=log_file)
        if not args.default_gc:
            tune_gc()
        client = redis.Redis.from_url(args.url)
        try:
            keys = load_keys(client, args.prefix)
            extra = {} if args.batch is None else {"batch": args.batch}
            if args.parallel is not None:
                extra["parallel"] = args.parallel
            consumer = ShardConsumer(client, keys, PolicyHolder(client, keys),
                                     max_shards=args.max_shards, **extra)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while len(consumer.owned) < args.max_shards:
                if time.monotonic() > deadline:
                    print(f"failed {sorted(consumer.owned)}", flush=True)
                    return 1
                consumer.balance()
            print(f"ready {len(consumer.owned)}", flush=True)
            if sys.stdin.readline().strip() != "go":
                consumer.release_all()
                return 1
            if args.rounds:
                start = time.perf_counter()
                handled = 0
                while True:
                    n = consumer.run_once()
                    handled += n
                    if n == 0:
                        break
                seconds = time.perf_counter() - start
                print(json.dumps({"handled": handled, "seconds": seconds}), flush=True)
                sys.stdin.readline()
                consumer.release_all()
                return 0
            inboxes = [consumer.keys.inbox(k) for k in sorted(consumer.owned)]
            stop = threading.Event()
            start = time.perf_counter()
            service = threading.Thread(target=consumer.run, args=(stop.is_set,))
            service.start()
            try:
                while not inboxes_drained(client, inboxes):
                    if not service.is_alive():
                        print("failed: the service loop ended", flush=True)
                        return 1
                    time.sleep(POLL_S)
                seconds = time.perf_counter() - start
            finally:
                stop.set()
                service.join()  # run() releases the leases on its way out
            # counted after the loops ended: a loop adds a batch after its EXEC
            handled = sum(consumer.loop_handled.values())
            print(json.dumps({"handled": handled, "seconds": seconds}), flush=True)
            sys.stdin.readline()
        finally:
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
