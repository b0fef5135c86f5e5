#!/usr/bin/env bash
# The Pusher suite: Pusher's official, unchanged server SDKs against
# cometbox's [pusher] HTTP API, on the real binary:
#   - Node: npm `pusher` 5.x (test/node-sdk.test.mjs, node --test)
#   - pages: npm `pusher-js` 8 and `laravel-echo` 2 in Node against
#     GET /app/<key> (test/pusher-js.test.mjs; through a restart of a server
#     of its own: test/pusher-js-restart.test.mjs), and pusher-js's and Echo's
#     browser builds in Debian's headless Chromium (test/pusher-js-browser.test.mjs,
#     playwright-core, which downloads no browser)
#   - Python: PyPI `pusher` 3.x (test/test_python_sdk.py, unittest, in a
#     throwaway venv)
# Each test reads the effect back through a real GET /poll; the webhooks
# cometbox sends (to webhook_receiver.py) are validated with the SDKs' own
# webhook helpers.
#
#   bash tests/pusher/run-tests.sh
#
# COMETBOX_BIN=/path/to/cometbox uses that binary; without it the script runs
# `cargo build` in the repository root and uses target/debug/cometbox.
# Installs what is missing (apt-get: nodejs npm python3 python3-venv; npm ci
# from the committed lockfile; pip into a venv) and fails loudly when
# anything cannot be installed or any test fails. The server listens on
# loopback ports the kernel picks (port 0, read back from --ready-file) and
# is stopped by its pid.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export DEBIAN_FRONTEND=noninteractive
exec </dev/null

log() { printf '[pusher] %s\n' "$*" >&2; }
die() { printf '[pusher] ERROR: %s\n' "$*" >&2; exit 1; }

# as_root, package_installed
. "$REPO/tests/lib/apt.sh"

# ---------------------------------------------------------------- packages
py=/usr/bin/python3
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
[ -x "${CHROMIUM_BIN:-/usr/bin/chromium}" ] || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
[ -x "$py" ] || missing+=(python3)
"$py" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    apt_install "${missing[@]}"
fi
command -v node >/dev/null 2>&1 || die "node is missing"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "node >= 20 needed (global fetch, node --test); found $(node --version)"
"$py" -c 'import sys, ensurepip, venv; assert sys.version_info >= (3, 8)' ||
    die "$py lacks Python >= 3.8 with venv and ensurepip"

# ------------------------------------------------------------------ server
if [ -n "${COMETBOX_BIN:-}" ]; then
    [ -x "$COMETBOX_BIN" ] || die "COMETBOX_BIN=$COMETBOX_BIN is not an executable file"
    bin="$COMETBOX_BIN"
else
    bin="$REPO/target/debug/cometbox"
    command -v cargo >/dev/null 2>&1 || die "cargo is missing (or set COMETBOX_BIN)"
    log "cargo build (repository root)"
    (cd "$REPO" && cargo build --quiet) || die "cargo build failed"
    [ -x "$bin" ] || die "no server binary at $bin"
fi
log "server binary: $bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-pusher-tests.XXXXXX")"
server_pid=""
receiver_pid=""
cleanup() {
    if [ -n "$receiver_pid" ]; then kill -TERM "$receiver_pid" 2>/dev/null || true; fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The site's webhook endpoint (webhook_receiver.py), on a port it picks.
"$py" "$HERE/webhook_receiver.py" "$work/webhook.port" "$work/webhooks.jsonl" &
receiver_pid=$!
for _ in $(seq 100); do [ -f "$work/webhook.port" ] && break; sleep 0.1; done
[ -f "$work/webhook.port" ] || die "the webhook receiver did not start"
export PUSHER_SUITE_WEBHOOKS="$work/webhooks.jsonl"

# Digits: the Python SDK refuses any other app id.
APP_ID=4242
KEY=suite-key
SECRET="suite-secret-$RANDOM$RANDOM"
cat >"$work/cometbox.toml" <<TOML
[public]
listen = "127.0.0.1:0"
# The browser test's page comes from the site's own server on another port:
# another origin, which a WebSocket upgrade must be allowed from.
cors_origins = ["*"]

[ingest]
listen = "127.0.0.1:0"

[limits]
poll_timeout = "2s"

[pusher]
enabled = true
app_id = "$APP_ID"
key = "$KEY"
secret = "$SECRET"
client_events = true
webhook_url = "http://127.0.0.1:$(cat "$work/webhook.port")/pusher/webhooks"
TOML

# Only the settings in the file: the caller's COMETBOX_* (COMETBOX_BIN, ...)
# stay out of the server's environment.
env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$bin" --config "$work/cometbox.toml" --check-config \
    >"$work/check.txt" 2>&1 || { cat "$work/check.txt" >&2; die "--check-config refused the configuration"; }
grep -q "pusher: on, app id \"$APP_ID\", key \"$KEY\"" "$work/check.txt" ||
    { cat "$work/check.txt" >&2; die "--check-config does not report Pusher on"; }
if grep -q "$SECRET" "$work/check.txt"; then die "--check-config printed the Pusher secret"; fi

env -i PATH="$PATH" HOME="${HOME:-/tmp}" "$bin" --config "$work/cometbox.toml" \
    --ready-file "$work/ready.json" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 300); do
    [ -f "$work/ready.json" ] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; die "the server exited before it was ready"; }
    sleep 0.1
done
[ -f "$work/ready.json" ] || { cat "$work/server.log" >&2; die "the server was not ready within 30 s"; }
read_addr() { "$py" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$work/ready.json" "$1"; }
export PUSHER_SUITE_PUBLIC="http://$(read_addr public)"
export PUSHER_SUITE_INGEST="http://$(read_addr ingest)"
export PUSHER_SUITE_APP_ID="$APP_ID" PUSHER_SUITE_KEY="$KEY" PUSHER_SUITE_SECRET="$SECRET"
log "server pid $server_pid: public $PUSHER_SUITE_PUBLIC, ingest $PUSHER_SUITE_INGEST"

failed=0

# -------------------------------------------------------------------- node
cd "$HERE"
log "npm ci (pusher from package-lock.json)"
npm ci --no-audit --no-fund --loglevel=error || die "npm ci failed"
node -e 'const v = require("pusher/package.json").version; if (!v.startsWith("5.")) { console.error("pusher " + v + " is not 5.x"); process.exit(1) }' ||
    die "the installed npm pusher is not 5.x"
log "node --test test/node-sdk.test.mjs"
timeout --kill-after=10 180 node --test --test-force-exit --test-timeout=30000 test/node-sdk.test.mjs || failed=1
log "node --test test/pusher-js.test.mjs (pusher-js 8 and laravel-echo 2, unchanged)"
timeout --kill-after=10 180 node --test --test-force-exit --test-timeout=30000 test/pusher-js.test.mjs || failed=1
log "node --test test/pusher-js-restart.test.mjs (pusher-js through a restart of its own server)"
PUSHER_SUITE_BIN="$bin" timeout --kill-after=10 180 node --test --test-force-exit --test-timeout=120000 test/pusher-js-restart.test.mjs || failed=1
log "node --test test/pusher-js-browser.test.mjs (pusher-js's browser build in headless Chromium)"
timeout --kill-after=10 180 node --test --test-force-exit --test-timeout=60000 test/pusher-js-browser.test.mjs || failed=1

# ------------------------------------------------------------------ python
log "pip install pusher 3.x (into a throwaway venv)"
"$py" -m venv "$work/venv" || die "cannot create a venv with $py"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir \
    -r "$HERE/requirements.txt" || die "pip install -r tests/pusher/requirements.txt failed"
"$work/venv/bin/python" -c 'import pusher.version as v, sys; sys.exit(0 if v.VERSION.startswith("3.") else "pusher " + v.VERSION + " is not 3.x")' ||
    die "the installed PyPI pusher is not 3.x"
log "python -m unittest test/test_python_sdk.py"
(cd "$HERE/test" && timeout --kill-after=10 180 "$work/venv/bin/python" -m unittest -v test_python_sdk) || failed=1

if [ "$failed" -ne 0 ]; then
    log "server log (last lines):"
    tail -n 40 "$work/server.log" >&2 || true
    die "some Pusher SDK tests failed"
fi
log "all Pusher SDK tests passed (Node pusher $(node -p 'require("pusher/package.json").version'), Python pusher $("$work/venv/bin/python" -c 'import pusher.version as v; print(v.VERSION)'))"
