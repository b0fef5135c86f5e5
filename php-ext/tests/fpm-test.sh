#!/usr/bin/env bash
# A PHP-FPM pool (Debian's php-fpm8.2, pm = static) behind nginx, serving
# page.php, which sends one numbered message per request through php-client.
# Drives FPM_REQUESTS requests, restarts cometbox (disk store, same Unix
# socket) in the middle (requests during the restart fail with 503, as the
# page reports them), then FPM_AFTER more once it is back, and checks with
# check.php: every acknowledged number delivered exactly once, none twice,
# every request after the restart acknowledged, and with the extension one
# ingest connection per worker per server lifetime (and the server sees
# exactly one per worker at the end).
#
#   php-ext/tests/fpm-test.sh
#
# Environment:
#   COMETBOX_BIN     the server (default <repo>/target/debug/cometbox)
#   FPM_EXT          path of cometbox.so to load in the pool ('' = without
#                    the extension: php-client's own transports)
#   FPM_REQUESTS     requests to drive (default 3000), FPM_PARALLEL (8),
#   FPM_AFTER        requests once the restarted server is back (1000),
#   FPM_WORKERS      pool size (4), FPM_RESTART (1 = restart the server at
#                    about a third of the requests; 0 = never),
#   FPM_INGEST       unix (default) or tcp (only without restart: the port
#                    is ephemeral)
# Prints "fpm: ... req/s" (used by benches/php-ext.sh). Everything started
# here is on loopback or Unix sockets in a temp dir and stopped by pid.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
log() { printf '[php-ext fpm] %s\n' "$*" >&2; }
die() { printf '[php-ext fpm] ERROR: %s\n' "$*" >&2; exit 1; }

bin="${COMETBOX_BIN:-$repo/target/debug/cometbox}"
ext="${FPM_EXT-}"
requests="${FPM_REQUESTS:-3000}"
after="${FPM_AFTER:-1000}"
parallel="${FPM_PARALLEL:-8}"
workers="${FPM_WORKERS:-4}"
restart="${FPM_RESTART:-1}"
ingest_kind="${FPM_INGEST:-unix}"
key="fpm-test-key"
secret="fpm-test-secret"

[ -x "$bin" ] || die "no cometbox binary at $bin"
fpm="$(command -v php-fpm8.2 || command -v php-fpm || true)"
[ -n "$fpm" ] || fpm=/usr/sbin/php-fpm8.2
[ -x "$fpm" ] || die "php-fpm8.2 not found (apt-get install php-fpm)"
[ -x /usr/sbin/nginx ] || die "nginx not found (apt-get install nginx)"
[ -z "$ext" ] || [ -f "$ext" ] || die "FPM_EXT=$ext is not a file"
[ "$ingest_kind" = unix ] || [ "$restart" = 0 ] || die "FPM_INGEST=tcp needs FPM_RESTART=0"

T="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-fpm.XXXXXX")"
server_pid="" fpm_pid="" nginx_pid="" driver_pid=""
cleanup() {
    for p in $driver_pid $nginx_pid $fpm_pid $server_pid; do
        kill "$p" 2>/dev/null || true
    done
    for p in $driver_pid $nginx_pid $fpm_pid $server_pid; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null || true
    done
    if [ -n "${FPM_KEEP:-}" ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT

start_server() {
    rm -f "$T/ready.json"
    local listen="unix:$T/ingest.sock"
    [ "$ingest_kind" = unix ] || listen="127.0.0.1:0"
    env -i PATH="$PATH" HOME="${HOME:-/root}" \
        COMETBOX_PUBLIC__LISTEN=127.0.0.1:0 \
        COMETBOX_INGEST__LISTEN="$listen" \
        COMETBOX_INGEST__KEY="$key" \
        COMETBOX_AUTH__SECRET="$secret" \
        COMETBOX_STORE__KIND=disk \
        COMETBOX_STORE__PATH="$T/store" \
        "$bin" --ready-file "$T/ready.json" >>"$T/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 300); do
        [ -s "$T/ready.json" ] && break
        kill -0 "$server_pid" 2>/dev/null || { cat "$T/server.log" >&2; die "cometbox exited at start"; }
        sleep 0.05
    done
    [ -s "$T/ready.json" ] || die "cometbox not ready in 15 s"
    public="$(php -r 'echo json_decode(file_get_contents($argv[1]), true)["public"];' "$T/ready.json")"
    ingest="$(php -r 'echo json_decode(file_get_contents($argv[1]), true)["ingest"];' "$T/ready.json")"
}
stop_server() {
    kill "$server_pid"
    for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$server_pid" 2>/dev/null && die "cometbox did not stop within 10 s of SIGTERM"
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
}

start_server
case "$ingest" in
    unix:*) ingest_url="$ingest" ;;
    *) ingest_url="http://$ingest" ;;
esac

# The page and where it finds things.
cp "$here/page.php" "$T/page.php"
cat >"$T/page-config.php" <<PHP
<?php return ['autoload' => '$repo/php-client/autoload.php', 'ingest' => '$ingest_url', 'key' => '$key'];
PHP

cat >"$T/fpm.conf" <<CONF
[global]
pid = $T/fpm.pid
error_log = $T/fpm.log
daemonize = no

[test]
listen = $T/fpm.sock
listen.mode = 0666
pm = static
pm.max_children = $workers
catch_workers_output = yes
CONF
fpm_args=(-F -R -y "$T/fpm.conf" -d "opcache.enable=1")
[ -z "$ext" ] || fpm_args+=(-d "extension=$ext")
"$fpm" "${fpm_args[@]}" >>"$T/fpm.out" 2>&1 &
fpm_pid=$!

port="$(php -r '$s = stream_socket_server("tcp://127.0.0.1:0"); echo explode(":", stream_socket_get_name($s, false))[1];')"
mkdir -p "$T/nginx"
cat >"$T/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 1;
pid $T/nginx.pid;
error_log $T/nginx-error.log;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $T/nginx/body;
    fastcgi_temp_path $T/nginx/fastcgi;
    proxy_temp_path $T/nginx/proxy;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    server {
        listen 127.0.0.1:$port;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_param SCRIPT_FILENAME $T/page.php;
            fastcgi_keep_conn on;
            fastcgi_pass unix:$T/fpm.sock;
        }
    }
}
CONF
/usr/sbin/nginx -p "$T/nginx" -c "$T/nginx.conf" >>"$T/nginx.out" 2>&1 &
nginx_pid=$!

for _ in $(seq 100); do
    curl -s -o /dev/null --noproxy '*' "http://127.0.0.1:$port/?n=-1" 2>/dev/null && [ -S "$T/fpm.sock" ] && break
    kill -0 "$fpm_pid" 2>/dev/null || { cat "$T/fpm.out" "$T/fpm.log" >&2 2>/dev/null; die "php-fpm exited"; }
    kill -0 "$nginx_pid" 2>/dev/null || { cat "$T/nginx.out" "$T/nginx-error.log" >&2 2>/dev/null; die "nginx exited"; }
    sleep 0.1
done
first="$(curl -s --noproxy '*' "http://127.0.0.1:$port/?n=-1")"
case "$first" in
    *'"pid"'*) ;;
    *) cat "$T/fpm.log" "$T/nginx-error.log" >&2 2>/dev/null; die "the page does not answer: $first" ;;
esac
expect_transport=native
[ -n "$ext" ] || expect_transport="$(php -r 'echo extension_loaded("curl") ? "curl" : "socket";')"
log "pool of $workers workers ($expect_transport), nginx on 127.0.0.1:$port, ingest $ingest_url; $requests requests, $parallel in flight"

start_ns=$(date +%s%N)
php "$here/drive.php" "$port" "$requests" "$parallel" 120 "$T/progress" "$T/results.jsonl" &
driver_pid=$!
restarts=0
if [ "$restart" = 1 ]; then
    for _ in $(seq 1200); do
        [ "$(cat "$T/progress" 2>/dev/null || echo 0)" -ge $((requests / 3)) ] && break
        kill -0 "$driver_pid" 2>/dev/null || break
        sleep 0.05
    done
    log "restarting cometbox after $(cat "$T/progress" 2>/dev/null || echo 0) requests"
    stop_server
    start_server
    restarts=1
fi
driver_status=0
wait "$driver_pid" || driver_status=$?
driver_pid=""
end_ns=$(date +%s%N)
[ "$driver_status" -eq 0 ] || die "the driver did not finish its $requests requests in time"
elapsed_ms=$(( (end_ns - start_ns) / 1000000 ))
must_succeed_from=""
if [ "$restarts" = 1 ]; then
    # The server is back: these must all be acknowledged, over the
    # connection each worker opened again.
    log "$after more requests, the server back"
    php "$here/drive.php" "$port" "$after" "$parallel" 120 "$T/progress" "$T/results.jsonl" "$requests" ||
        die "the driver did not finish its $after requests after the restart in time"
    must_succeed_from="$requests"
fi

status=0
php "$here/check.php" "$T/results.jsonl" "$public" "$secret" "$workers" "$restarts" "$expect_transport" $must_succeed_from || status=1

if [ -n "$ext" ]; then
    # The server's side of the ingest connections, as the kernel sees them
    # (the server's own /stats figure also counts the permit its accept loop
    # holds for the next connection).
    command -v ss >/dev/null 2>&1 || die "ss not found (apt-get install iproute2)"
    if [ "$ingest_kind" = unix ]; then
        held="$(ss -H -x -p state established | grep -F "$T/ingest.sock" | grep -c "pid=$server_pid," || true)"
    else
        held="$(ss -H -t -n -p state established "( sport = :${ingest##*:} )" | grep -c "pid=$server_pid," || true)"
    fi
    log "server: $held established ingest connections after the run (pool of $workers)"
    [ "$held" = "$workers" ] || { ss -x -p | grep -F "$T" >&2 || true; log "expected $workers ingest connections (one per worker), the server holds $held"; status=1; }
fi
if grep -E -i 'panic|segfault|SIGSEGV' "$T/fpm.log" "$T/fpm.out" 2>/dev/null; then
    log "php-fpm logged a crash"; status=1
fi

rps=$(( requests * 1000 / (elapsed_ms > 0 ? elapsed_ms : 1) ))
echo "fpm: transport=$expect_transport ingest=$ingest_kind workers=$workers parallel=$parallel requests=$requests restarts=$restarts elapsed_ms=$elapsed_ms req_per_s=$rps"
[ "$status" -eq 0 ] || die "FAILED (logs: FPM_KEEP=1 keeps $T)"
log "passed"
