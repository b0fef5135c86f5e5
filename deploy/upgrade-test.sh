#!/usr/bin/env bash
# A real package upgrade under a real systemd: the previous .deb installed and
# its service running, data in /var/lib/cometbox, then `dpkg -i` of the new
# .deb. Checks that the unit really starts with its hardening (Type=notify,
# ProtectSystem=strict, ...), that the upgrade restarts it (a new MainPID),
# and that the data, the generated secret and a locally changed conffile
# survive: a cursor taken before the upgrade reads exactly what came after
# it, with the token minted before it, and no `reset`. Then `dpkg --purge`
# stops the service.
#
#   bash deploy/upgrade-test.sh PREVIOUS.deb NEW.deb     (as root)
#
# deploy/run-tests.sh calls it with the package it built and the same build
# repackaged under a lower version: what is tested here is the upgrade path
# (maintainer scripts, systemd, the data directory); that a newer binary
# reads an older on-disk format is the disk-v1 fixture's test in
# tests/durability (docs/storage.md, "Changing the format").
#
# How, without touching the host: systemd runs as PID 1 of new PID, mount,
# network and UTS namespaces, chrooted into an overlay of / whose upper layer
# is a temporary directory (tests/lib/overlay-root.sh). dpkg writes its database, /etc, /usr and
# /var/lib/cometbox into that layer only; cometbox listens on the loopback of
# the new network namespace. `systemctl poweroff` ends it all; SIGKILL of that
# PID 1 if it does not.
set -euo pipefail
exec </dev/null

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -eq 2 ] || { echo "usage: $0 PREVIOUS.deb NEW.deb" >&2; exit 2; }
PREV="$(readlink -f "$1")"
NEW="$(readlink -f "$2")"
[ "$(id -u)" = 0 ] || { echo "upgrade-test: needs root (namespaces, overlay mount)" >&2; exit 1; }
for t in unshare nsenter chroot curl python3 dpkg-deb; do
    command -v "$t" >/dev/null || { echo "upgrade-test: $t is missing" >&2; exit 1; }
done
[ -x /lib/systemd/systemd ] || { echo "upgrade-test: /lib/systemd/systemd is missing (apt-get install systemd)" >&2; exit 1; }

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'PASS %s\n' "$1"; }
fail() { FAILED=$((FAILED + 1)); printf 'FAIL %s\n' "$1"; }
log() { printf '[upgrade] %s\n' "$*"; }

# On the root file system (/var/tmp, not a tmpfs of its own), so that the
# packages in it are visible in the overlay at the same path.
W="$(mktemp -d /var/tmp/cbupgrade.XXXXXX)"
mkdir -p "$W/debs"
# The packages travel in $W: a /tmp may be a mount of its own (or become one
# under systemd), which the overlay of / does not show.
cp "$PREV" "$NEW" "$W/debs/"
PREV="$W/debs/$(basename "$PREV")"
NEW="$W/debs/$(basename "$NEW")"

# Only what the test needs: no getty, no other package's services.
mkdir -p "$W/upper/etc/systemd/system"
cat >"$W/upper/etc/systemd/system/upgrade-test.target" <<EOF
[Unit]
Description=cometbox upgrade test
Requires=basic.target
After=basic.target
AllowIsolate=yes
EOF
unshare --pid --fork --mount-proc --mount --net --uts \
    sh "$REPO/tests/lib/overlay-root.sh" "$W" /lib/systemd/systemd --system --unit=upgrade-test.target \
    >"$W/boot.log" 2>&1 &
UNSHARE_PID=$!
SD=""

cleanup() {
    if [ -n "$SD" ] && kill -0 "$SD" 2>/dev/null; then
        nsenter -t "$SD" -a --root="/proc/$SD/root" --wd=/ systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 150); do kill -0 "$UNSHARE_PID" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$SD" 2>/dev/null && kill -KILL "$SD" 2>/dev/null || true
    fi
    kill -0 "$UNSHARE_PID" 2>/dev/null && kill -KILL "$UNSHARE_PID" 2>/dev/null || true
    wait "$UNSHARE_PID" 2>/dev/null || true
    [ -n "${KEEP_TMP:-}" ] && log "kept $W" || rm -rf "$W"
}
trap cleanup EXIT

inside() { nsenter -t "$SD" -a --root="/proc/$SD/root" --wd=/ "$@"; }

# The forked child of unshare becomes systemd (sh execs chroot, which execs it).
for _ in $(seq 100); do
    SD="$(pgrep -P "$UNSHARE_PID" || true)"
    [ -n "$SD" ] && [ "$(cat "/proc/$SD/comm" 2>/dev/null)" = systemd ] && break
    SD=""
    kill -0 "$UNSHARE_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$SD" ]; then
    cat "$W/boot.log"
    echo "upgrade-test: systemd did not start in its namespaces" >&2
    exit 1
fi
state=""
for _ in $(seq 300); do
    state="$(inside systemctl is-system-running 2>/dev/null || true)"
    case "$state" in running|degraded) break ;; esac
    sleep 0.2
done
case "$state" in
    running|degraded) pass "systemd runs as PID 1 of its own namespaces ($state)" ;;
    *) cat "$W/boot.log"; fail "systemd did not come up (state '$state')"; exit 1 ;;
esac

ingest() { inside curl -sS --max-time 10 --unix-socket /run/cometbox/ingest.sock "$@"; }
send() { ingest -H 'Content-Type: application/xml' --data "<message to=\"upgrade\">{\"n\": $1}</message>" http://localhost/ >/dev/null; }
poll() { inside curl -sS --max-time 10 "http://127.0.0.1:8480/poll?timeout=0&token=$TOKEN$1"; }
main_pid() { inside systemctl show -p MainPID --value cometbox.service; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# ------------------------------------------------------------ the old package
inside dpkg --purge cometbox >/dev/null 2>&1 || true
log "dpkg -i $(basename "$PREV")"
if inside dpkg -i "$PREV" >"$W/dpkg-prev.log" 2>&1; then
    pass "the previous package installs under systemd"
else
    cat "$W/dpkg-prev.log"; fail "dpkg -i $(basename "$PREV")"; exit 1
fi
if [ "$(inside systemctl is-active cometbox.service || true)" = active ]; then
    pass "its postinst started cometbox.service (Type=notify, the unit's hardening in force)"
else
    inside systemctl status --no-pager cometbox.service || true
    inside journalctl -u cometbox.service --no-pager | tail -n 30 || true
    fail "cometbox.service is not active after installation"; exit 1
fi
[ "$(inside systemctl is-enabled cometbox.service || true)" = enabled ] \
    && pass "cometbox.service is enabled" || fail "cometbox.service is not enabled"
OLD_PID="$(main_pid)"

# A local change to the conffile, which the upgrade must keep.
inside sed -i 's/^client_idle_timeout = "2m"$/client_idle_timeout = "3m"/' /etc/cometbox/cometbox.toml
inside grep -q '^client_idle_timeout = "3m"$' /etc/cometbox/cometbox.toml || fail "could not edit the conffile"

TOKEN="$(ingest -d client=upgrade http://localhost/token | sed -n 's/.*<token[^>]*>\(.*\)<\/token>.*/\1/p')"
[ -n "$TOKEN" ] || { fail "POST /token on the ingest socket gave no token"; exit 1; }
send 1; send 2
reply="$(poll "")"
CURSOR="$(printf '%s' "$reply" | json 'd["cursor"]')"
[ "$(printf '%s' "$reply" | json '[m["data"]["n"] for m in d["messages"]]')" = "[1, 2]" ] \
    && pass "the old service delivers what was sent to it" || fail "first poll: $reply"
send 3; send 4
inside test -n "$(inside ls /var/lib/cometbox)" && pass "/var/lib/cometbox holds the disk store" \
    || fail "/var/lib/cometbox is empty"

# ------------------------------------------------------------ the upgrade
log "dpkg -i $(basename "$NEW") (upgrade from $(inside dpkg-query -W -f='${Version}' cometbox))"
if inside dpkg -i "$NEW" >"$W/dpkg-new.log" 2>&1; then
    pass "the new package upgrades the previous one"
else
    cat "$W/dpkg-new.log"; fail "dpkg -i $(basename "$NEW")"
fi
NEW_VERSION="$(dpkg-deb -f "$NEW" Version)"
[ "$(inside dpkg-query -W -f='${Version}' cometbox)" = "$NEW_VERSION" ] \
    && pass "dpkg records version $NEW_VERSION" || fail "dpkg does not record version $NEW_VERSION"
NEW_PID="$(main_pid)"
if [ "$(inside systemctl is-active cometbox.service || true)" = active ] && [ "$NEW_PID" != "$OLD_PID" ] && [ "$NEW_PID" != 0 ]; then
    pass "the upgrade restarted the service (MainPID $OLD_PID -> $NEW_PID)"
else
    inside journalctl -u cometbox.service --no-pager | tail -n 30 || true
    fail "the service was not restarted by the upgrade (MainPID $OLD_PID -> $NEW_PID)"
fi
inside grep -q '^client_idle_timeout = "3m"$' /etc/cometbox/cometbox.toml \
    && pass "the locally changed conffile is kept" || fail "the upgrade overwrote the changed conffile"
send 5
reply="$(poll "&since=$CURSOR")"
got="$(printf '%s' "$reply" | json '([m["data"]["n"] for m in d["messages"]], d.get("reset", False))' 2>/dev/null || echo "$reply")"
if [ "$got" = "([3, 4, 5], False)" ]; then
    pass "the cursor from before the upgrade reads 3, 4, 5 with the old token: data and secret kept, no reset"
else
    fail "after the upgrade, since the old cursor: $got"
fi

# ------------------------------------------------------------ purge
inside dpkg --purge cometbox >"$W/dpkg-purge.log" 2>&1 || { cat "$W/dpkg-purge.log"; fail "dpkg --purge cometbox"; }
state="$(inside systemctl is-active cometbox.service || true)"
[ "$state" != active ] && ! inside sh -c "kill -0 $NEW_PID" 2>/dev/null \
    && pass "dpkg --purge stops the service ($state)" || fail "the service still runs after purge"
inside test ! -e /var/lib/cometbox && pass "dpkg --purge removes /var/lib/cometbox" \
    || fail "/var/lib/cometbox is still there after purge"

echo "upgrade: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
