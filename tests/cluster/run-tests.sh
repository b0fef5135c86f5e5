#!/usr/bin/env bash
# The redis store's end-to-end suite: several real cometbox nodes on a real
# redis-server (Debian's), each test with its own Redis on a free loopback
# port and its own data directory, stopped by pid; every scenario runs once
# on one server and once on a 3-master Redis Cluster (cluster-enabled
# servers on loopback, joined by `redis-cli --cluster create`).
#   bash tests/cluster/run-tests.sh
# Installs redis-server if missing; fails loudly if it cannot.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export DEBIAN_FRONTEND=noninteractive
# openssl makes the TLS test's certificates.
if ! command -v redis-server >/dev/null || ! command -v openssl >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends redis-server openssl
fi
command -v openssl >/dev/null || { echo "openssl is required and could not be installed" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is required and could not be installed" >&2; exit 1; }
# Debian's package starts a system-wide Redis on 6379; the tests never use
# it (each starts its own), so it is left alone.
export REDIS_SERVER=$(command -v redis-server)
# redis-cli (redis-tools, which redis-server depends on) makes the clusters.
command -v redis-cli >/dev/null || { echo "redis-cli is required (apt-get install redis-tools)" >&2; exit 1; }
export REDIS_CLI=$(command -v redis-cli)
cargo build --locked --bin cometbox
export COMETBOX_BIN=${COMETBOX_BIN:-$repo/target/debug/cometbox}
cargo test --locked --features redis-tests --test cluster -- --test-threads 3
