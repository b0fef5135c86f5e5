#!/usr/bin/env bash
# Benchmark of the cometbox PHP extension (issue #28) against php-client's
# own transports; figures go to docs/performance.md ("The PHP extension").
# A benchmark, never a test: it prints figures and asserts nothing.
#
#   benches/php-ext.sh [SENDS] [FPM_REQUESTS]     (defaults 5000 and 5000)
#
# 1. time and CPU per send from PHP (benches/php-ext-send.php): the
#    extension ('native'), then the class's 'socket' and 'curl' transports,
#    each over TCP and over the Unix socket, against one release server per
#    address kind;
# 2. requests per second of the FPM page (php-ext/tests/fpm-test.sh with
#    FPM_RESTART=0): with the extension and without it ('auto' = curl), over
#    the Unix socket and over TCP.
# Uses $COMETBOX_BIN (default target/release/cometbox; not built here) and
# php-ext/target/release/libcometbox.so (built with --locked when missing).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
sends="${1:-5000}"
fpm_requests="${2:-5000}"
bin="${COMETBOX_BIN:-$repo/target/release/cometbox}"
so="$repo/php-ext/target/release/libcometbox.so"
die() { printf '[bench php-ext] ERROR: %s\n' "$*" >&2; exit 1; }
[ -x "$bin" ] || die "no server binary at $bin (cargo build --release --locked --bin cometbox)"
[ -f "$so" ] || (cd "$repo/php-ext" && cargo build --release --locked) || die "cannot build the extension"

T="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-bench-php.XXXXXX")"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$T"
}
trap cleanup EXIT

key=bench-key
start() { # $1 = name, $2 = ingest listen address; sets url_$1 and pid_$1
    env -i PATH="$PATH" COMETBOX_PUBLIC__LISTEN=127.0.0.1:0 COMETBOX_INGEST__LISTEN="$2" \
        COMETBOX_INGEST__KEY="$key" COMETBOX_AUTH__SECRET=bench-secret \
        "$bin" --ready-file "$T/$1.json" >"$T/$1.log" 2>&1 &
    pids+=($!)
    eval "pid_$1=$!"
    for _ in $(seq 200); do [ -s "$T/$1.json" ] && break; sleep 0.05; done
    [ -s "$T/$1.json" ] || die "server $1 did not start"
    local ingest
    ingest="$(php -r 'echo json_decode(file_get_contents($argv[1]), true)["ingest"];' "$T/$1.json")"
    case "$ingest" in unix:*) eval "url_$1=\$ingest" ;; *) eval "url_$1=http://\$ingest" ;; esac
}
start tcp 127.0.0.1:0
start unix "unix:$T/ingest.sock"

echo "# $(date -u +%FT%TZ) commit $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores, PHP $(php -r 'echo PHP_VERSION;'), $sends sends per case"
for kind in unix tcp; do
    url_var="url_$kind"; pid_var="pid_$kind"
    php -d extension="$so" "$repo/benches/php-ext-send.php" "${!url_var}" "$key" native "$sends" "${!pid_var}"
    php "$repo/benches/php-ext-send.php" "${!url_var}" "$key" socket "$sends" "${!pid_var}"
    php "$repo/benches/php-ext-send.php" "${!url_var}" "$key" curl "$sends" "${!pid_var}"
done

for ingest in unix tcp; do
    for ext in "$so" ""; do
        COMETBOX_BIN="$bin" FPM_EXT="$ext" FPM_RESTART=0 FPM_INGEST="$ingest" FPM_REQUESTS="$fpm_requests" \
            bash "$repo/php-ext/tests/fpm-test.sh" 2>/dev/null | grep '^fpm:' || die "fpm run failed (ingest $ingest, ext '${ext:-none}')"
    done
done
