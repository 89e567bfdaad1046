#!/usr/bin/env bash
# Three-way benchmark on loopback: direct `panel serve`, tether, and nginx as a plain reverse
# proxy, interleaved in one run. Writes target/bench/results.md and results.json.
#
#   make bench                      # or: bash scripts/bench.sh [--quick] [tether-bench flags]
#
# Builds tether and tether-bench in release mode, installs Debian's nginx when missing, and
# raises the open-files limit for the idle-websocket measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
  echo "bench: installing nginx" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null
fi

# 10,000 idle websockets take two descriptors each in tether; go as high as allowed.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ]; then hard=1048576; fi
ulimit -n "$hard" || true

cargo build --release --bin tether --bin tether-bench

exec ./target/release/tether-bench \
  --tether target/release/tether \
  --python "${TETHER_PYTHON:-$PWD/.venv/bin/python}" \
  --out target/bench \
  "$@"
