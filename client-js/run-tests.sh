#!/usr/bin/env bash
# Runs every test of client-js: unit (injected fetch/timers/storage), integration
# (the real cometbox binary from Node) and browser (headless Debian Chromium via
# playwright-core, including the chat demo under `php -S`, and a page behind nginx
# in front of two nodes on Redis, one of them SIGKILLed, and /status on Redis).
#
#   bash client-js/run-tests.sh            # everything
#   bash client-js/run-tests.sh unit       # or: integration, browser (any subset)
#
# COMETBOX_BIN=/path/to/cometbox uses that binary; without it the script runs
# `cargo build` in the repository root (a no-op when up to date; it also re-embeds
# a changed cometbox.js) and uses target/debug/cometbox.
# Non-interactive; exits non-zero when anything is missing or any test fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
export CI="${CI:-true}"
export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # playwright-core never downloads; belt and braces
exec </dev/null

die() { echo "run-tests.sh: $*" >&2; exit 1; }

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(unit integration browser)
want() { local s; for s in "${suites[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
for s in "${suites[@]}"; do
  case "$s" in unit|integration|browser) ;; *) die "unknown suite '$s' (unit, integration, browser)";; esac
done

# --- system packages -------------------------------------------------------
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if want browser; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v php >/dev/null 2>&1 || missing+=(php-cli)
  # test/browser/cluster.test.js: two nodes on Redis behind nginx;
  # test/browser/status-redis.test.js: /status of two nodes on Redis.
  [ -x /usr/bin/redis-server ] || missing+=(redis-server)
  [ -x /usr/sbin/nginx ] || missing+=(nginx)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "run-tests.sh: installing ${missing[*]} with apt-get"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to apt-get install ${missing[*]}"
    SUDO="sudo -n"
  fi
  $SUDO apt-get update -q || die "apt-get update failed"
  $SUDO apt-get install -y -q "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi
command -v node >/dev/null 2>&1 || die "node is missing"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || die "node >= 18 needed (global fetch, node --test); found $(node --version)"
if want browser; then
  [ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing"
  command -v php >/dev/null 2>&1 || die "php is missing"
  [ -f "$REPO/php-client/autoload.php" ] || die "php-client/autoload.php is missing (the chat demo needs it)"
  [ -x /usr/bin/redis-server ] || die "/usr/bin/redis-server is missing"
  [ -x /usr/sbin/nginx ] || die "/usr/sbin/nginx is missing"
fi

# --- the server binary -----------------------------------------------------
if want integration || want browser; then
  if [ -n "${COMETBOX_BIN:-}" ]; then
    [ -x "$COMETBOX_BIN" ] || die "COMETBOX_BIN=$COMETBOX_BIN is not an executable file"
  else
    COMETBOX_BIN="$REPO/target/debug/cometbox"
    if command -v cargo >/dev/null 2>&1; then
      echo "run-tests.sh: cargo build (repository root)"
      (cd "$REPO" && cargo build --quiet) || die "cargo build failed"
    fi
    [ -x "$COMETBOX_BIN" ] || die "no server binary at $COMETBOX_BIN (install cargo or set COMETBOX_BIN)"
  fi
  export COMETBOX_BIN
  echo "run-tests.sh: server binary $COMETBOX_BIN"
fi

# --- node dependencies -----------------------------------------------------
cd "$HERE"
npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"

# --- tests -----------------------------------------------------------------
dirs=()
for s in unit integration browser; do want "$s" && dirs+=("test/$s/"); done
mkdir -p test-results
# test/integration/ws.test.js drives the class over a WebSocket from Node: a
# global WebSocket is there from Node 22, behind a flag in Node 20 and 21 (the
# test files inherit it from the runner).
node_flags=()
if [ "$(node -p 'typeof WebSocket')" != function ]; then
  if [ "$(node --experimental-websocket -p 'typeof WebSocket' 2>/dev/null)" = function ]; then
    node_flags+=(--experimental-websocket)
  else
    echo "run-tests.sh: this node has no WebSocket: test/integration/ws.test.js will be skipped" >&2
  fi
fi
echo "run-tests.sh: node ${node_flags[*]} --test ${dirs[*]}"
# One runner for all files (one summary); files one at a time: the browser
# suites are heavy for a 2-core machine. Every test bounds its own waits.
timeout --kill-after=30 1500 node "${node_flags[@]}" --test --test-concurrency=1 --test-timeout=180000 "${dirs[@]}"
