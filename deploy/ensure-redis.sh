#!/usr/bin/env bash
# Makes sure a redis-server binary (>= 7) is available; installs Debian's package when we can.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian package redis-server" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # Debian starts a system service on install; Phaseguard never uses it.
  exit 0
fi
echo "redis-server not found. Install it with: sudo apt-get install -y redis-server" >&2
exit 1
