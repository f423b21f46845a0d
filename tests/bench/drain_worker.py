"""A consumer process for the throughput benchmark: `python -m tests.bench.drain_worker`.

It is `phase-worker` minus the signal handling: the same `ShardConsumer`, JSON logging (one line
per message, R-12.4, to --log) and GC thresholds, with a start line so that process start-up and
imports stay out of the timing. Protocol on stdin/stdout, one line each:
  -> "ready <shards owned>"   leases taken (`--max-shards` of them), consumer groups created
  <- "go"                     start
  -> {"handled": N, "seconds": S}   after the first round that found every owned inbox empty
  <- "stop" (or EOF)          leases released, exit 0
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import redis

from worker.consumer import ShardConsumer, tune_gc
from worker.logging import configure_logging
from worker.store.runtime import PolicyHolder, load_keys

READY_TIMEOUT_S = 30.0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prefix", default="phase")
    ap.add_argument("--max-shards", type=int, required=True)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--parallel", type=int, default=None)
    ap.add_argument("--default-gc", action="store_true", help="keep CPython's GC thresholds")
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
        finally:
            client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
