#!/usr/bin/env bash
# Tests of the deployment kit (deploy/): real nginx + real cometbox on loopback,
# systemd unit verification, the Debian package and its maintainer scripts.
#
#   bash deploy/run-tests.sh
#
# Environment:
#   COMETBOX_BIN=path       server binary (default: target/debug/cometbox, built
#                           with `cargo build` when missing)
#   DEPLOY_DEB_PREBUILT=1  package $COMETBOX_BIN with `cargo deb --no-build`
#                           instead of letting cargo deb build the release binary
#                           (faster; the package layout is the same)
#   KEEP_TMP=1              keep the temporary directory (logs, configs, .deb)
#
# Non-interactive; installs nginx, curl, systemd (for systemd-analyze) with
# apt-get when missing, and cargo-deb with `cargo install` when missing. Fails
# loudly when a prerequisite cannot be had; never skips a check silently.
# Only loopback addresses and Unix sockets are used; every process it starts
# is stopped by its pid at the end.

set -euo pipefail
export CI="${CI:-true}"
export DEBIAN_FRONTEND=noninteractive
exec </dev/null

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$DEPLOY")"
cd "$REPO"

log() { printf '[deploy] %s\n' "$*"; }
die() { printf '[deploy] FATAL: %s\n' "$*" >&2; exit 1; }

PASSED=0
FAILED=0
FAILURES=()
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); FAILURES+=("$1"); printf 'FAIL %s\n' "$1"; }

# ------------------------------------------------------------------ prerequisites
[ "$(id -u)" = 0 ] || command -v sudo >/dev/null || die "needs root (or sudo) to install packages and run unshare"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"

export PATH="$PATH:/usr/sbin:/sbin:$HOME/.cargo/bin"
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v curl >/dev/null || missing+=(curl)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v python3 >/dev/null || missing+=(python3)
command -v unshare >/dev/null || missing+=(util-linux)
command -v adduser >/dev/null || missing+=(adduser)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing with apt-get: ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q || die "apt-get update failed"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi
for t in nginx curl systemd-analyze python3 dpkg-deb unshare cargo; do
    command -v "$t" >/dev/null || die "$t is still missing"
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 >= 3.11 needed (tomllib); $(python3 --version)"
if ! cargo deb --version >/dev/null 2>&1; then
    log "installing cargo-deb (cargo install cargo-deb --locked; compiles, a few minutes)"
    cargo install cargo-deb --locked || die "cargo install cargo-deb failed"
fi
log "nginx $(nginx -v 2>&1 | sed 's/.*version: //'), $(systemd-analyze --version | head -1), $(cargo deb --version)"

COMETBOX_BIN="${COMETBOX_BIN:-$REPO/target/debug/cometbox}"
if [ ! -x "$COMETBOX_BIN" ]; then
    if [ "$COMETBOX_BIN" = "$REPO/target/debug/cometbox" ]; then
        log "building the server (cargo build)"
        cargo build --quiet || die "cargo build failed"
    fi
    [ -x "$COMETBOX_BIN" ] || die "server binary $COMETBOX_BIN not found"
fi
COMETBOX_BIN="$(cd "$(dirname "$COMETBOX_BIN")" && pwd)/$(basename "$COMETBOX_BIN")"
log "server binary: $COMETBOX_BIN"

# ------------------------------------------------------------------ scratch space, cleanup
T="$(mktemp -d /tmp/cometbox-deploy.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    if [ "$rc" != 0 ] || [ "$FAILED" != 0 ]; then
        for f in "$T"/cometbox.log "$T"/nginx-error.log "$T"/longpoll.out; do
            [ -s "$f" ] && { echo "----- tail of $f"; tail -n 40 "$f"; }
        done
    fi
    if [ -n "${KEEP_TMP:-}" ]; then log "kept $T"; else $SUDO rm -rf "$T"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# COMETBOX_<SECTION>__<KEY> variables of the caller's environment would change
# what is tested (and older builds took even COMETBOX_BIN for configuration):
# run the server with only the variables a test sets.
CB_ENV=(env)
for v in $(compgen -e); do
    case "$v" in COMETBOX_*) CB_ENV+=(-u "$v");; esac
done
# deploy/cometbox.toml keeps its disk store in /var/lib/cometbox: the tests
# use a directory of their own.
CB_ENV+=(COMETBOX_STORE__PATH="$T/store")
cometbox_clean() { "${CB_ENV[@]}" "$@"; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for TIMEOUT_SECONDS COMMAND...: retry every 0.1s
wait_for() {
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# ================================================================== 1. configuration file
log "1. deploy/cometbox.toml against the real binary"
if out="$(cometbox_clean "$COMETBOX_BIN" --config deploy/cometbox.toml --check-config 2>&1)"; then
    pass "cometbox --check-config accepts deploy/cometbox.toml"
    printf '%s\n' "$out" | sed 's/^/     /'
else
    fail "cometbox --check-config rejects deploy/cometbox.toml"
    printf '%s\n' "$out" | sed 's/^/     /'
fi
# deploy/cometbox.toml sets (uncommented) every key, so the check above covers
# every key name. Make sure it lacks none: neither the keys of the issue nor
# any the server knows (its error for an unknown key lists the known ones).
if missing_keys="$("${CB_ENV[@]}" python3 - "$COMETBOX_BIN" deploy/cometbox.toml "$T" <<'PY'
import re, subprocess, sys, tomllib
binary, path, tmp = sys.argv[1:]
keys = set("""public.listen public.cors_origins public.socket_mode ingest.listen ingest.key
ingest.socket_mode auth.secret auth.token_ttl auth.max_token_ttl limits.poll_timeout
limits.max_poll_timeout limits.client_idle_timeout limits.mailbox_max_messages
limits.message_ttl limits.max_polls_per_client limits.max_body_bytes
limits.max_payload_bytes limits.max_clients limits.max_batch_commands
limits.max_connections limits.max_ingest_in_flight limits.request_timeout
store.kind store.path store.fsync store.fsync_interval store.segment_bytes
log.format log.level""".split())
for section in ("public", "ingest", "auth", "limits", "store", "log"):
    probe = f"{tmp}/probe-{section}.toml"
    with open(probe, "w") as f:
        f.write(f"[{section}]\nzz_no_such_key = 1\n")
    r = subprocess.run([binary, "--config", probe, "--check-config"], capture_output=True, text=True, timeout=30)
    m = re.search(r"unknown field `zz_no_such_key`, expected (.*?)(?: for key|$)", r.stdout + r.stderr, re.M)
    if not m:
        print(f"(cannot list the server's [{section}] keys: {(r.stdout + r.stderr).strip()!r})", file=sys.stderr)
        continue
    keys |= {f"{section}.{k}" for k in re.findall(r"`([a-z0-9_]+)`", m.group(1))}
with open(path, "rb") as f:
    conf = tomllib.load(f)
missing = sorted(k for k in keys if k.split(".")[1] not in conf.get(k.split(".")[0], {}))
print(" ".join(missing) if missing else len(keys))
sys.exit(1 if missing else 0)
PY
)"; then
    pass "deploy/cometbox.toml sets all $missing_keys keys (the issue's and the server's)"
else
    fail "deploy/cometbox.toml lacks keys: $missing_keys"
fi
printf '[limits]\npoll_timout = "25s"\n' > "$T/typo.toml"
if out="$(cometbox_clean "$COMETBOX_BIN" --config "$T/typo.toml" --check-config 2>&1)"; then
    fail "--check-config (ExecStartPre) rejects an unknown key"
elif printf '%s' "$out" | grep -q poll_timout; then
    pass "--check-config (ExecStartPre) rejects an unknown key and names it"
else
    fail "--check-config rejects an unknown key but does not name it: $out"
fi

# ================================================================== 2. cometbox + nginx
log "2. cometbox on ephemeral ports, nginx in front with deploy/nginx/cometbox.conf"
SECRET="deploy-test-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
POLL_TIMEOUT=3
HOLD=65   # > nginx's default proxy_read_timeout of 60s
"${CB_ENV[@]}" \
COMETBOX_PUBLIC__LISTEN=127.0.0.1:0 \
COMETBOX_INGEST__LISTEN="unix:$T/ingest.sock" \
COMETBOX_AUTH__SECRET="$SECRET" \
COMETBOX_LIMITS__POLL_TIMEOUT="${POLL_TIMEOUT}s" \
COMETBOX_LIMITS__MAX_POLL_TIMEOUT="$((HOLD + 5))s" \
COMETBOX_BAYEUX__ENABLED=true \
RUST_LOG="${RUST_LOG:-info}" \
    "$COMETBOX_BIN" --config deploy/cometbox.toml --ready-file "$T/ready.json" \
    >"$T/cometbox.log" 2>&1 &
CB_PID=$!
PIDS+=("$CB_PID")
wait_for 30 test -s "$T/ready.json" || die "cometbox wrote no ready file in 30s (log: $(tail -5 "$T/cometbox.log"))"
kill -0 "$CB_PID" 2>/dev/null || die "cometbox exited"
PUBLIC="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["public"])' "$T/ready.json")"
log "cometbox ready: $(cat "$T/ready.json")"
case "$PUBLIC" in 127.0.0.1:*) ;; *) die "unexpected public address $PUBLIC";; esac

# The README's way to look at a running server.
if curl -fsS --max-time 5 --unix-socket "$T/ingest.sock" http://localhost/stats >"$T/stats.json"; then
    pass "curl --unix-socket <ingest.sock> http://localhost/stats (README)"
else
    fail "curl --unix-socket <ingest.sock> http://localhost/stats (README)"
fi

mkdir -p "$T/nginx"
USER_LINE=""
[ "$(id -u)" = 0 ] && USER_LINE="user root root;"
write_nginx_conf() {   # $1 file, $2 port, $3 upstream block or include
    cat >"$1" <<EOF
$USER_LINE
worker_processes 1;
pid $T/nginx/nginx.pid;
error_log $T/nginx-error.log info;
events { worker_connections 1024; }
http {
    access_log $T/nginx/access.log;
    client_body_temp_path $T/nginx/body;
    proxy_temp_path $T/nginx/proxy;
    fastcgi_temp_path $T/nginx/fastcgi;
    uwsgi_temp_path $T/nginx/uwsgi;
    scgi_temp_path $T/nginx/scgi;
    $3
    server {
        listen 127.0.0.1:$2;
        server_name localhost;
        # A typical site: static files by regex, PHP by regex. The snippet's
        # location must win over both for /cometbox/ URLs.
        location / { return 404; }
        location ~* \.(js|css|png)\$ { return 418; }
        location ~ \.php\$ { return 418; }
        include $DEPLOY/nginx/cometbox.conf;
    }
}
EOF
}

# (a) the shipped upstream file, unchanged: syntax only
write_nginx_conf "$T/nginx-shipped.conf" "$(free_port)" "include $DEPLOY/nginx/cometbox-upstream.conf;"
if out="$(nginx -e "$T/nginx-error.log" -p "$T/nginx/" -c "$T/nginx-shipped.conf" -t 2>&1)"; then
    pass "nginx -t with cometbox-upstream.conf + cometbox.conf as shipped"
else
    fail "nginx -t with cometbox-upstream.conf + cometbox.conf as shipped"; printf '%s\n' "$out"
fi

# (a2) the shipped multi-node upstream file, unchanged: syntax only (it is
# run for real, with the test nodes' addresses, by tests/cluster/nginx.rs)
write_nginx_conf "$T/nginx-cluster.conf" "$(free_port)" "include $DEPLOY/nginx/cometbox-upstream-cluster.conf;"
if out="$(nginx -e "$T/nginx-error.log" -p "$T/nginx/" -c "$T/nginx-cluster.conf" -t 2>&1)"; then
    pass "nginx -t with cometbox-upstream-cluster.conf + cometbox.conf as shipped"
else
    fail "nginx -t with cometbox-upstream-cluster.conf + cometbox.conf as shipped"; printf '%s\n' "$out"
fi

# (b) the test's own upstream on the ephemeral port, cometbox.conf unchanged
NGINX_PID=""
for attempt in 1 2 3; do
    NGINX_PORT="$(free_port)"
    write_nginx_conf "$T/nginx.conf" "$NGINX_PORT" \
        "upstream cometbox_public { server $PUBLIC; keepalive 64; keepalive_timeout 5s; }"
    if [ "$attempt" = 1 ]; then
        if out="$(nginx -e "$T/nginx-error.log" -p "$T/nginx/" -c "$T/nginx.conf" -t 2>&1)"; then
            pass "nginx -t with the test upstream + cometbox.conf"
        else
            printf '%s\n' "$out"; die "nginx -t failed for the test configuration"
        fi
    fi
    nginx -e "$T/nginx-error.log" -p "$T/nginx/" -c "$T/nginx.conf" -g 'daemon off;' &
    NGINX_PID=$!
    if wait_for 10 curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/"; then
        break
    fi
    kill "$NGINX_PID" 2>/dev/null || true; wait "$NGINX_PID" 2>/dev/null || true
    NGINX_PID=""
    log "nginx did not come up on port $NGINX_PORT (attempt $attempt)"
done
[ -n "$NGINX_PID" ] || die "nginx did not start (see $T/nginx-error.log: $(tail -3 "$T/nginx-error.log"))"
PIDS+=("$NGINX_PID")
log "nginx on 127.0.0.1:$NGINX_PORT (pid $NGINX_PID)"

# The >60s poll runs in the background while the other steps go on.
python3 "$DEPLOY/tests/e2e.py" longpoll --nginx "127.0.0.1:$NGINX_PORT" --ready "$T/ready.json" \
    --secret "$SECRET" --hold "$HOLD" >"$T/longpoll.out" 2>&1 &
LONG_PID=$!
PIDS+=("$LONG_PID")
LONG_START=$(date +%s)

log "3. browser and backend traffic through nginx"
python3 "$DEPLOY/tests/e2e.py" checks --nginx "127.0.0.1:$NGINX_PORT" --ready "$T/ready.json" \
    --secret "$SECRET" --poll-timeout "$POLL_TIMEOUT" | tee "$T/e2e.out" || true
PASSED=$((PASSED + $(grep -c '^PASS ' "$T/e2e.out" || true)))
while IFS= read -r line; do
    FAILED=$((FAILED + 1)); FAILURES+=("${line#FAIL }")
done < <(grep '^FAIL ' "$T/e2e.out" || true)
grep -qE '^(PASS|FAIL) ' "$T/e2e.out" || fail "e2e.py checks ran no check (crashed?)"

log "3b. what cometbox.conf sends upstream (recording upstream, own nginx)"
python3 "$DEPLOY/tests/proxy_check.py" "$DEPLOY/nginx/cometbox.conf" "$T" "$USER_LINE" \
    | tee "$T/proxy.out" || true
PASSED=$((PASSED + $(grep -c '^PASS ' "$T/proxy.out" || true)))
while IFS= read -r line; do
    FAILED=$((FAILED + 1)); FAILURES+=("${line#FAIL }")
done < <(grep '^FAIL ' "$T/proxy.out" || true)
grep -qE '^(PASS|FAIL) ' "$T/proxy.out" || fail "proxy_check.py ran no check (crashed?)"
# The directives whose effect a test on loopback cannot tell apart.
snippet_ok=1
for want in 'proxy_buffering off;' 'proxy_cache off;' 'proxy_http_version 1.1;' \
            'proxy_set_header Connection "";' 'proxy_set_header X-Real-IP $remote_addr;' \
            'proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;'; do
    grep -qF "$want" deploy/nginx/cometbox.conf || { snippet_ok=0; fail "cometbox.conf lacks $want"; }
done
# Every location's (polls, WebSockets): the shortest must do.
read_timeout="$(sed -n 's/^ *proxy_read_timeout \([0-9]*\)s;.*/\1/p' deploy/nginx/cometbox.conf | sort -n | head -n 1)"
max_poll="$(python3 -c 'import tomllib,sys; v=tomllib.load(open(sys.argv[1],"rb"))["limits"]["max_poll_timeout"]; print(int(v[:-1]) * {"s": 1, "m": 60, "h": 3600}[v[-1]])' deploy/cometbox.toml)"
if [ -n "$read_timeout" ] && [ "$read_timeout" -ge $((max_poll + 10)) ]; then
    :
else
    snippet_ok=0; fail "proxy_read_timeout (${read_timeout:-unset}s) is not >= max_poll_timeout (${max_poll}s) + 10s"
fi
[ "$snippet_ok" = 1 ] && pass "cometbox.conf: buffering and cache off, HTTP/1.1 keep-alive, read timeout ${read_timeout}s > max_poll_timeout ${max_poll}s"

# ================================================================== 4. systemd unit
log "4. systemd-analyze verify deploy/systemd/cometbox.service"
mkdir -p "$T/systemd"
# ExecStart/ExecStartPre must name an existing binary: verify a copy that
# points at the built one (everything else unchanged).
sed "s#/usr/bin/cometbox#$COMETBOX_BIN#g" deploy/systemd/cometbox.service >"$T/systemd/cometbox.service"
if out="$(systemd-analyze verify "$T/systemd/cometbox.service" 2>&1)" && [ -z "$out" ]; then
    pass "systemd-analyze verify cometbox.service (no warnings)"
else
    fail "systemd-analyze verify cometbox.service"; printf '%s\n' "$out"
fi
unit_ok=1
for want in 'Type=notify' 'User=cometbox' 'RuntimeDirectory=cometbox' 'ProtectSystem=strict' \
            'NoNewPrivileges=yes' 'PrivateTmp=yes' 'CapabilityBoundingSet=$' \
            'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'LimitNOFILE=1048576' \
            'Restart=on-failure' 'ExecStartPre=/usr/bin/cometbox .*--check-config'; do
    grep -qE "^$want" deploy/systemd/cometbox.service || { unit_ok=0; fail "cometbox.service lacks $want"; }
done
[ "$unit_ok" = 1 ] && pass "cometbox.service has the hardening and service settings"
if exposure="$(systemd-analyze security --offline=true "$T/systemd/cometbox.service" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')" \
    && [ -n "$exposure" ]; then
    if python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)"; then
        pass "systemd-analyze security: exposure $exposure (<= 2.0)"
    else
        fail "systemd-analyze security: exposure $exposure (> 2.0)"
    fi
else
    fail "systemd-analyze security --offline=true gave no exposure level"
fi

if out="$(python3 "$DEPLOY/tests/sd_notify_check.py" "$COMETBOX_BIN" deploy/cometbox.toml "$T" 2>&1)"; then
    pass "Type=notify: $out"
else
    fail "Type=notify (NOTIFY_SOCKET): $out"
fi

# ================================================================== 5. Debian package
log "5. cargo deb"
mkdir -p "$T/deb"
if [ -n "${DEPLOY_DEB_PREBUILT:-}" ]; then
    mkdir -p "$T/target/release"
    cp "$COMETBOX_BIN" "$T/target/release/cometbox"
    deb_cmd=(env CARGO_TARGET_DIR="$T/target" cargo deb --no-build --no-strip --fast --output "$T/deb/")
    prev_cmd=(env CARGO_TARGET_DIR="$T/target" cargo deb --no-build --no-strip --fast)
else
    deb_cmd=(cargo deb --fast --output "$T/deb/")
    prev_cmd=(cargo deb --no-build --fast)
fi
# The same build under a lower version, for the upgrade test (section 6).
prev_cmd+=(--deb-version 0.0.0~previous-1 --output "$T/deb-prev/")
log "${deb_cmd[*]}"
if "${deb_cmd[@]}" >"$T/cargo-deb.log" 2>&1; then
    DEB="$(ls "$T"/deb/cometbox_*.deb | head -1)"
    pass "cargo deb builds $(basename "$DEB")"
else
    tail -n 30 "$T/cargo-deb.log"
    fail "cargo deb"
    DEB=""
fi
if [ -n "$DEB" ]; then
    dpkg-deb --contents "$DEB" | tee "$T/contents.txt" | sed 's/^/     /'
    for f in ./usr/bin/cometbox ./etc/cometbox/cometbox.toml \
             ./usr/lib/systemd/system/cometbox.service \
             ./usr/share/cometbox/nginx/cometbox.conf \
             ./usr/share/cometbox/nginx/cometbox-upstream.conf \
             ./usr/share/cometbox/nginx/cometbox-upstream-cluster.conf \
             ./usr/share/doc/cometbox/README.md; do
        if grep -qE " $f\$" "$T/contents.txt"; then pass "package contains ${f#.}"; else fail "package contains ${f#.}"; fi
    done
    grep -qE '^-rwxr-xr-x .* \./usr/bin/cometbox$' "$T/contents.txt" \
        || fail "/usr/bin/cometbox is not mode 0755"

    dpkg-deb -I "$DEB" | tee "$T/info.txt" | sed 's/^/     /'
    for s in postinst postrm prerm conffiles; do
        if grep -qE "^ +[0-9]+ bytes, +[0-9]+ lines .* $s( |$)" "$T/info.txt"; then
            pass "dpkg-deb -I lists $s"
        else
            fail "dpkg-deb -I lists $s"
        fi
    done
    mkdir -p "$T/ctl" "$T/root"
    dpkg-deb -e "$DEB" "$T/ctl"
    dpkg-deb -x "$DEB" "$T/root"
    if grep -qx /etc/cometbox/cometbox.toml "$T/ctl/conffiles"; then
        pass "/etc/cometbox/cometbox.toml is a conffile"
    else
        fail "/etc/cometbox/cometbox.toml is a conffile"
    fi
    ok=1
    for s in postinst postrm prerm; do
        sh -n "$T/ctl/$s" || { ok=0; fail "$s is not valid sh"; }
        ! grep -q '#DEBHELPER#' "$T/ctl/$s" || { ok=0; fail "$s still has the #DEBHELPER# token"; }
    done
    grep -q 'deb-systemd-helper enable cometbox.service' "$T/ctl/postinst" \
        || { ok=0; fail "postinst does not enable cometbox.service"; }
    grep -q 'deb-systemd-invoke $_dh_action cometbox.service' "$T/ctl/postinst" \
        || { ok=0; fail "postinst does not start cometbox.service"; }
    [ "$ok" = 1 ] && pass "maintainer scripts are valid sh and enable + start the unit"
    cmp -s "$T/root/usr/lib/systemd/system/cometbox.service" deploy/systemd/cometbox.service \
        && pass "packaged unit is deploy/systemd/cometbox.service" \
        || fail "packaged unit differs from deploy/systemd/cometbox.service"
    if out="$(cometbox_clean "$T/root/usr/bin/cometbox" --config "$T/root/etc/cometbox/cometbox.toml" --check-config 2>&1)"; then
        pass "packaged binary accepts the packaged config (--check-config)"
    else
        fail "packaged binary rejects the packaged config: $out"
    fi

    # Maintainer scripts for real, against a private copy of /etc in a mount
    # namespace: the host's users and /etc stay untouched.
    log "postinst/postrm in a mount namespace over a copy of /etc"
    $SUDO cp -a /etc "$T/etc"
    cat >"$T/maint.sh" <<EOF
set -e
mount --bind "$T/etc" /etc
export DPKG_MAINTSCRIPT_PACKAGE=cometbox DPKG_MAINTSCRIPT_NAME=postinst
sh -e "$T/ctl/postinst" configure 2>&1 | sed 's/^/postinst: /'
id cometbox
getent group cometbox | cut -d: -f4
stat -c '%a %U:%G' /etc/cometbox/cometbox.env
grep -cE '^COMETBOX_AUTH__SECRET=[0-9a-f]{64}\$' /etc/cometbox/cometbox.env
cp /etc/cometbox/cometbox.env "$T/env.before"
sh -e "$T/ctl/postinst" configure 0.0.1-1 >/dev/null 2>&1
cmp /etc/cometbox/cometbox.env "$T/env.before" && echo secret-kept
# The store's data directory, on a tmpfs in this namespace only.
mount -t tmpfs tmpfs /var/lib
mkdir -p /var/lib/cometbox && touch /var/lib/cometbox/journal-00000001.log
DPKG_MAINTSCRIPT_NAME=postrm sh -e "$T/ctl/postrm" purge >/dev/null 2>&1
test ! -e /etc/cometbox/cometbox.env && echo purged
test ! -e /var/lib/cometbox && echo state-purged
EOF
    if $SUDO unshare -m sh "$T/maint.sh" >"$T/maint.out" 2>&1; then
        sed 's/^/     /' "$T/maint.out"
        grep -q '^uid=[0-9]*(cometbox) gid=[0-9]*(cometbox)' "$T/maint.out" \
            && pass "postinst creates system user and group cometbox" \
            || fail "postinst creates system user and group cometbox"
        if getent passwd www-data >/dev/null; then
            grep -qxE '([^,]*,)*www-data(,[^,]*)*' "$T/maint.out" \
                && pass "postinst adds www-data to group cometbox" \
                || fail "postinst adds www-data to group cometbox"
        fi
        grep -qx '640 root:cometbox' "$T/maint.out" && grep -qx 1 "$T/maint.out" \
            && pass "postinst writes a random secret to /etc/cometbox/cometbox.env (0640 root:cometbox)" \
            || fail "postinst writes a random secret to /etc/cometbox/cometbox.env (0640 root:cometbox)"
        grep -qx secret-kept "$T/maint.out" && pass "postinst keeps the secret on upgrade" \
            || fail "postinst keeps the secret on upgrade"
        grep -qx purged "$T/maint.out" && pass "postrm purge removes the generated secret" \
            || fail "postrm purge removes the generated secret"
        grep -qx state-purged "$T/maint.out" && pass "postrm purge removes /var/lib/cometbox (the disk store)" \
            || fail "postrm purge removes /var/lib/cometbox (the disk store)"
    else
        sed 's/^/     /' "$T/maint.out"
        fail "maintainer scripts in a mount namespace (unshare -m) failed"
    fi
fi

# ================================================================== 6. upgrade under systemd
if [ -n "$DEB" ]; then
    log "6. upgrade under a real systemd (deploy/upgrade-test.sh)"
    mkdir -p "$T/deb-prev"
    if "${prev_cmd[@]}" >"$T/cargo-deb-prev.log" 2>&1; then
        PREV_DEB="$(ls "$T"/deb-prev/cometbox_*.deb | head -1)"
        if $SUDO bash "$DEPLOY/upgrade-test.sh" "$PREV_DEB" "$DEB" >"$T/upgrade.out" 2>&1; then :; fi
        sed 's/^/     /' "$T/upgrade.out"
        n_pass=$(grep -c '^PASS ' "$T/upgrade.out" || true)
        grep -q '^upgrade: [0-9]* passed, 0 failed$' "$T/upgrade.out" \
            && pass "package upgrade under systemd ($n_pass checks)" \
            || fail "package upgrade under systemd (see above)"
    else
        tail -n 30 "$T/cargo-deb-prev.log"
        fail "cargo deb --deb-version 0.0.0~previous-1"
    fi
fi

# ================================================================== the >60s poll
log "waiting for the ${HOLD}s poll through nginx (started $(( $(date +%s) - LONG_START ))s ago)"
for _ in $(seq $(( (HOLD + 40) * 10 ))); do
    kill -0 "$LONG_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$LONG_PID" 2>/dev/null; then
    fail "the ${HOLD}s poll did not finish in $((HOLD + 40))s"
else
    wait "$LONG_PID" || true
    cat "$T/longpoll.out"
    PASSED=$((PASSED + $(grep -c '^PASS ' "$T/longpoll.out" || true)))
    grep -q '^PASS ' "$T/longpoll.out" || fail "the ${HOLD}s poll through nginx (see above)"
fi

# cometbox must still be alive and must stop cleanly on SIGTERM (exit 0).
if kill -0 "$CB_PID" 2>/dev/null; then
    kill -TERM "$CB_PID"
    rc=0
    for _ in $(seq 100); do kill -0 "$CB_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$CB_PID" 2>/dev/null; then
        fail "cometbox did not exit within 10s of SIGTERM"
    else
        wait "$CB_PID" || rc=$?
        [ "$rc" = 0 ] && pass "cometbox exits 0 on SIGTERM (systemd stop)" \
            || fail "cometbox exited $rc on SIGTERM"
    fi
else
    fail "cometbox died during the tests"
fi

echo
if [ "$FAILED" -gt 0 ]; then
    log "failed checks:"
    printf '  - %s\n' "${FAILURES[@]}"
fi
echo "deploy: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
