#!/usr/bin/env bash
# The redis store's end-to-end suite: several real cometbox nodes on a real
# redis-server (Debian's), each test with its own Redis on a free loopback
# port and its own data directory, stopped by pid; every scenario runs once
# on one server and once on a 3-master Redis Cluster (cluster-enabled
# servers on loopback, joined by `redis-cli --cluster create`); the nginx*.rs
# tests put a real nginx (Debian's, own config and temp dirs, free loopback
# port, stopped by pid) with the deploy kit's snippets in front of the nodes.
#   bash tests/cluster/run-tests.sh
#   bash tests/cluster/run-tests.sh chaos     # only the tests whose name holds "chaos"
#   bash tests/cluster/run-tests.sh conformance   # the store conformance suite, every store
# Installs redis-server and nginx if missing; fails loudly if it cannot.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export DEBIAN_FRONTEND=noninteractive
export PATH="$PATH:/usr/sbin:/sbin"
# openssl makes the TLS test's certificates.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v nginx >/dev/null || missing+=(nginx)
command -v openssl >/dev/null || missing+=(openssl)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v openssl >/dev/null || { echo "openssl is required and could not be installed" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required and could not be installed" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is required and could not be installed" >&2; exit 1; }
# Debian's packages start a system-wide Redis on 6379 and nginx on 80; the
# tests never use them (each test starts its own, on free loopback ports,
# with its own config and directories), so they are left alone.
export REDIS_SERVER=$(command -v redis-server)
export NGINX_BIN=$(command -v nginx)
# redis-cli (redis-tools, which redis-server depends on) makes the clusters.
command -v redis-cli >/dev/null || { echo "redis-cli is required (apt-get install redis-tools)" >&2; exit 1; }
export REDIS_CLI=$(command -v redis-cli)
cargo build --locked --bin cometbox
export COMETBOX_BIN=${COMETBOX_BIN:-$repo/target/debug/cometbox}
cargo test --locked --features redis-tests --test cluster -- --test-threads 3 "$@"
