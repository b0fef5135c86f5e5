#!/usr/bin/env bash
# The Bayeux suite: the real, unchanged npm Bayeux clients against the real
# cometbox binary on loopback ephemeral ports.
#   - CometD (npm `cometd` + `cometd-nodejs-client`) and Faye in Node
#     (test/cometd-node.test.mjs, test/faye.test.mjs, scenarios in test/scenarios.mjs)
#   - CometD's JavaScript library and Faye's browser bundle in headless
#     Debian Chromium: the same scenarios (test/cometd-chromium.test.mjs,
#     test/faye-chromium.test.mjs), and CometD's transports, long-polling
#     with CORS and callback-polling (test/browser.test.mjs)
#   - the Bayeux chat demo, client-js/examples/bayeux-chat, clicked through
#     (test/bayeux-chat-demo.test.mjs; screenshot in tests/bayeux/test-results/)
#
#   bash tests/bayeux/run-tests.sh                 # everything
#   bash tests/bayeux/run-tests.sh test/faye.test.mjs   # some files
#
# COMETBOX_BIN=/path/to/cometbox uses that binary; without it the script runs
# `cargo build` in the repository root and uses target/debug/cometbox.
# Installs what is missing (apt-get: nodejs npm chromium php-cli; npm ci from
# the lockfile); exits non-zero when anything is missing or any test fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export CI="${CI:-true}"
export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1   # playwright-core never downloads; belt and braces
exec </dev/null

die() { echo "tests/bayeux/run-tests.sh: $*" >&2; exit 1; }

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v php >/dev/null 2>&1 || missing+=(php-cli)
if [ ${#missing[@]} -gt 0 ]; then
  echo "tests/bayeux/run-tests.sh: installing ${missing[*]} with apt-get"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "need root or sudo to apt-get install ${missing[*]}"
    SUDO="sudo -n"
  fi
  $SUDO apt-get update -q || die "apt-get update failed"
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi
command -v node >/dev/null 2>&1 || die "node is missing"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node >= 20 needed (node --test, ES modules, findLastIndex); found $(node --version)"
node --help | grep -q -- --test-force-exit || die "node >= 20.14 needed (node --test --test-force-exit); found $(node --version)"
[ -x /usr/bin/chromium ] || die "/usr/bin/chromium is missing"
command -v php >/dev/null 2>&1 || die "php is missing"
[ -f "$REPO/php-client/autoload.php" ] || die "php-client/autoload.php is missing (the hook receivers need it)"

if [ -n "${COMETBOX_BIN:-}" ]; then
  [ -x "$COMETBOX_BIN" ] || die "COMETBOX_BIN=$COMETBOX_BIN is not an executable file"
else
  COMETBOX_BIN="$REPO/target/debug/cometbox"
  command -v cargo >/dev/null 2>&1 || die "cargo is missing (or set COMETBOX_BIN)"
  echo "tests/bayeux/run-tests.sh: cargo build (repository root)"
  (cd "$REPO" && cargo build --quiet) || die "cargo build failed"
  [ -x "$COMETBOX_BIN" ] || die "no server binary at $COMETBOX_BIN"
fi
export COMETBOX_BIN
echo "tests/bayeux/run-tests.sh: server binary $COMETBOX_BIN"

cd "$HERE"
npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"

files=("$@")
[ ${#files[@]} -gt 0 ] || files=(test/cometd-node.test.mjs test/faye.test.mjs test/cometd-chromium.test.mjs test/faye-chromium.test.mjs test/browser.test.mjs test/bayeux-chat-demo.test.mjs)
mkdir -p test-results
echo "tests/bayeux/run-tests.sh: node --test ${files[*]}"
# One file at a time (Chromium is heavy on a 2-core machine); every test
# bounds its own waits, and the whole run is bounded here.
timeout --kill-after=30 600 node --test --test-concurrency=1 --test-force-exit --test-timeout=120000 "${files[@]}"
