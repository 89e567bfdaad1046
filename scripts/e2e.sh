#!/usr/bin/env bash
# The browser suite: Debian's headless chromium, driven by Playwright for Python, against
# `tether serve examples/catalog.py` (tests/e2e). Screenshots and logs land in target/e2e/.
#
# Sets up what it needs: the chromium package (only when missing), the venv's pinned
# playwright and pytest (from requirements.txt), and the tether binary (cargo build).
# Never runs `playwright install`: it downloads a browser; we use /usr/bin/chromium.
#
# Environment: TETHER_BIN to test another binary (then nothing is built), E2E_ARGS for
# extra pytest arguments (e.g. "-x -v").
set -euo pipefail
cd "$(dirname "$0")/.."

VPY=${VPY:-.venv/bin/python}

if ! command -v chromium >/dev/null; then
  echo "e2e: installing Debian's chromium" >&2
  SUDO=$( [ "$(id -u)" = 0 ] || echo sudo )
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium
fi

if [ ! -x "$VPY" ]; then
  echo "e2e: no venv at $VPY; creating it (make venv)" >&2
  make venv
fi
if ! "$VPY" -c 'import playwright, pytest' 2>/dev/null; then
  echo "e2e: installing the pinned playwright and pytest into the venv" >&2
  "$VPY" -m pip install --quiet -r requirements.txt
fi

if [ -z "${TETHER_BIN:-}" ]; then
  cargo build --bin tether
fi

export TETHER_PYTHON=${TETHER_PYTHON:-$(cd "$(dirname "$VPY")" && pwd)/$(basename "$VPY")}
mkdir -p target/e2e

rc=0
# Every wait inside is bounded; this is the backstop for the whole run.
timeout --kill-after=30 1200 \
  "$VPY" -m pytest tests/e2e -p no:cacheprovider -ra ${E2E_ARGS:-} || rc=$?

case $rc in
  0) echo "e2e: passed; screenshots in target/e2e/" ;;
  5) echo "e2e: FAILED: pytest collected no tests" >&2; exit 1 ;;
  124|137) echo "e2e: FAILED: the suite ran out of time (20 min)" >&2; exit 1 ;;
  *) echo "e2e: FAILED (pytest exit $rc); screenshots and tether.log in target/e2e/" >&2 ;;
esac
exit "$rc"
