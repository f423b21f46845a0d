#!/usr/bin/env bash
# `make run`: the Procfile's processes (honcho) against a private redis-server, or $REDIS_URL.
#
# Without REDIS_URL it starts (or reuses, after a crash) the redis-server in .run/redis with the
# R-12.2 settings, and writes .run/redis.url plus one .run/acl/<role> file per R-7.14 user.
# Ctrl-C (or SIGTERM) stops honcho's processes and then that redis-server; its data stays in
# .run/redis (AOF), so the next `make run` carries on where this one stopped.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
HONCHO=.venv/bin/honcho
PROCFILE="${PROCFILE:-Procfile}"  # another Procfile, e.g. to try the stack with stand-ins
RUN_DIR=.run
DATA_DIR=$RUN_DIR/redis
mkdir -p "$RUN_DIR"

# One `make run` per checkout: the one holding the lock owns .run/redis, so a redis-server found
# running there was left by a run that died, and this run adopts it (and stops it at the end).
exec 9>"$RUN_DIR/run.lock"
if ! flock -n 9; then
  echo "run-stack: another 'make run' is active in this checkout (lock $RUN_DIR/run.lock)" >&2
  exit 1
fi

own_redis=0
honcho_pid=""
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$honcho_pid" ] && kill -0 "$honcho_pid" 2>/dev/null; then
    kill -TERM "$honcho_pid" 2>/dev/null || true
    wait "$honcho_pid" 2>/dev/null || true
  fi
  if [ "$own_redis" = 1 ]; then
    # .run/redis.url stays: a stale URL fails with "connection refused", whereas without it
    # processes would fall back to redis://127.0.0.1:6379, somebody else's Redis.
    "$PY" -m worker.redis_server stop --dir "$DATA_DIR" || status=1
  fi
  exit "$status"
}
trap cleanup EXIT

if [ -n "${REDIS_URL:-}" ]; then
  echo "run-stack: using REDIS_URL; no private redis-server"
else
  "$PY" -m worker.redis_server serve --detach --dir "$DATA_DIR" --run-dir "$RUN_DIR"
  own_redis=1
fi

export PHASE_LOG_FORMAT="${PHASE_LOG_FORMAT:-console}"
# honcho reads the processes through pipes: unbuffered, so each log line shows as it happens
export PYTHONUNBUFFERED=1
"$HONCHO" start -f "$PROCFILE" &
honcho_pid=$!
# A trapped signal interrupts `wait`; honcho then gets SIGTERM, stops its processes and exits.
trap 'kill -TERM "$honcho_pid" 2>/dev/null || true' INT TERM
while :; do
  if wait "$honcho_pid"; then status=0; else status=$?; fi
  kill -0 "$honcho_pid" 2>/dev/null || break
done
exit "$status"
