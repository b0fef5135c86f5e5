#!/usr/bin/env bash
# The `[[bridge]]` suite: real brokers from Debian's packages on loopback,
# real clients of each broker, the real cometbox binary, a browser's GET /poll.
#
#   tests/bridges/run-tests.sh [extra pytest arguments]
#
# - installs activemq, rabbitmq-server, nats-server, redis-server (and
#   redis-tools), python3-venv and python3-pytest with apt-get when missing;
# - installs the brokers' Python clients from PyPI (stomp.py, pika,
#   nats-py) into a throwaway venv;
# - uses $COMETBOX_BIN, default <repo>/target/debug/cometbox (built when
#   missing);
# - the tests (conftest.py, support.py) make a CA and certificates with
#   openssl, start every broker in its own temp directory on ports of their
#   own (a plain and a TLS listener each; NATS: a plain server and a
#   TLS-only one with a password and JetStream), in parallel, and stop them
#   by pid; test_bridges.py and test_tls.py share them.
# Fails loudly when anything is missing; never skips.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

log() { printf '[bridges] %s\n' "$*" >&2; }
die() { printf '[bridges] ERROR: %s\n' "$*" >&2; exit 1; }

# as_root, package_installed
. "$repo/tests/lib/apt.sh"

packages=(activemq rabbitmq-server nats-server redis-server redis-tools erlang-base
          default-jre-headless openssl python3 python3-venv python3-pytest)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
# The packages' own services are not ours: the tests start private
# instances. Nothing here stops a system-wide broker someone else runs.
for tool in java redis-server redis-cli nats-server epmd openssl; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/lib/erlang/bin/$tool" ] || die "$tool is missing after installing the packages"
done
[ -f /usr/share/activemq/bin/activemq.jar ] || die "/usr/share/activemq/bin/activemq.jar is missing"
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || die "/usr/lib/rabbitmq/bin/rabbitmq-server is missing"

bin="${COMETBOX_BIN:-$repo/target/debug/cometbox}"
if [ ! -x "$bin" ]; then
    [ -z "${COMETBOX_BIN:-}" ] || die "COMETBOX_BIN=$bin is not an executable file"
    log "building the server: cargo build"
    (cd "$repo" && cargo build --locked </dev/null) || die "cargo build failed"
fi
export COMETBOX_BIN="$bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-bridges.XXXXXX")"
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 -m venv --system-site-packages "$work/venv" || die "cannot create a venv"
log "pip install stomp.py pika nats-py (PyPI)"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir \
    -r "$here/requirements.txt" </dev/null || die "pip install failed"
"$work/venv/bin/python" -c 'import stomp, pika, nats, pytest' || die "the broker clients do not import"

status=0
(cd "$here" && BRIDGES_WORK="$work" "$work/venv/bin/python" -m pytest -p no:cacheprovider -rfEs "$@" </dev/null) || status=$?
if [ "$status" -eq 5 ]; then
    die "pytest collected no test"
elif [ "$status" -ne 0 ]; then
    log "FAILED (pytest exit status $status)"
    exit 1
fi
log "all bridge tests passed"
