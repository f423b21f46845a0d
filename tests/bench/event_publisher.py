"""The publishers of the publish -> event benchmark: `python -m tests.bench.event_publisher`.

A process of its own, as a trading bot is: it imports only the client (`contracts`), not the test
runner, whose heap would otherwise make the runner's garbage collections part of what is measured.
`--threads` threads (each with its own connection, as the bot user) publish one `session_ended`
per account of `--accounts-file` (one id a line) on a deadline schedule, message i due at
start + i / rate; before each XADD a thread notes `time.monotonic_ns()` (the system-wide
CLOCK_MONOTONIC the subscriber reads too). Prints "ready", waits for "go" on stdin, publishes,
then writes one JSON line per message to --out, [inbox entry id, ns], and prints "done".
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import redis

from contracts.client import PhaseguardClient

START_DELAY_NS = 50_000_000  # the schedule starts this long after "go"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--prefix", default="phase")
    ap.add_argument("--accounts-file", type=Path, required=True)
    ap.add_argument("--day", required=True)
    ap.add_argument("--rate", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    ids = args.accounts_file.read_text().split()
    period = 1_000_000_000 // args.rate
    connections = [redis.Redis.from_url(args.url) for _ in range(args.threads)]
    clients = [PhaseguardClient(c, prefix=args.prefix) for c in connections]
    for client in clients:
        client.meta()
    published: list[dict[str, int]] = [{} for _ in range(args.threads)]
    errors: list[BaseException] = []
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    start = time.monotonic_ns() + START_DELAY_NS

    def publish(j: int) -> None:
        client, mine = clients[j], published[j]
        try:
            for i in range(j, len(ids), args.threads):
                wait = start + i * period - time.monotonic_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                t = time.monotonic_ns()
                entry_id = client.publish_session_ended({
                    "schema_version": 1, "account_id": ids[i], "trading_day": args.day,
                    "ended_at": datetime.now(UTC).isoformat()})
                mine[entry_id] = t
        except BaseException as exc:  # reported below, after every thread is done
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(j,), name=f"publisher-{j}")
               for j in range(args.threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for conn in connections:
        conn.close()
    if errors:
        print(f"failed: {errors[0]!r}", flush=True)
        return 1
    with args.out.open("w", encoding="utf-8") as out:
        for mine in published:
            for entry_id, t in mine.items():
                out.write(json.dumps([entry_id, t]) + "\n")
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
