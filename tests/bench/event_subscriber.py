"""The subscriber of the publish -> event benchmark: `python -m tests.bench.event_subscriber`.

Follows every shard's events with `PhaseguardClient.subscribe` (as the reader user) from the
beginning of the (fresh) streams and records, for each event, when it was seen:
`time.monotonic_ns()`, the system-wide CLOCK_MONOTONIC that the publisher also reads. It prints
"ready" once connected; after `--expect` events (or `--idle-s` without any, or SIGTERM) it writes
one JSON line per event to --out: [caused_by, type, seen_ns].
"""

from __future__ import annotations

import argparse
import json
import signal
import time

import redis

from contracts.client import PhaseguardClient

BLOCK_MS = 100


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prefix", default="phase")
    ap.add_argument("--out", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--idle-s", type=float, default=30.0)
    args = ap.parse_args(argv)

    def on_term(*_: object) -> None:
        raise SystemExit(0)  # out of a blocking read; `finally` still writes what was seen

    signal.signal(signal.SIGTERM, on_term)
    seen: list[tuple[str, str, int]] = []
    client = redis.Redis.from_url(args.url)
    try:
        sub = PhaseguardClient(client, prefix=args.prefix)
        sub.meta()
        print("ready", flush=True)
        max_idle = max(1, int(args.idle_s * 1000 / BLOCK_MS))
        for _entry_id, event in sub.subscribe(start="beginning", block_ms=BLOCK_MS,
                                              max_idle=max_idle):
            seen.append((event.caused_by, event.type, time.monotonic_ns()))
            if len(seen) >= args.expect:
                break
    finally:
        client.close()
        with open(args.out, "w", encoding="utf-8") as out:
            for row in seen:
                out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
