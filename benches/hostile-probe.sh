#!/usr/bin/env bash
# benches/hostile-probe.sh: replays issue 14's probe at full scale against
# the release binary on loopback and prints the figures (server RSS, kernel
# TCP memory, ingest latency, statuses). Takes about two minutes.
#
#   benches/hostile-probe.sh            # builds target/release/cometbox first
#   COMETBOX_BIN=path benches/hostile-probe.sh
#   PROBE_ONLY=1,4 benches/hostile-probe.sh    # only scenarios 1 and 4
#
# Needs python3 and an open-file limit of at least 20,000 (the idle
# scenario holds 19,960 connections). Every server it starts is its own
# child and is stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${COMETBOX_BIN:-}" ]]; then
    CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-1}" cargo build --release --locked --bin cometbox
    COMETBOX_BIN="$PWD/${CARGO_TARGET_DIR:-target}/release/cometbox"
fi
ulimit -n 20000 2>/dev/null || true
exec python3 benches/hostile_probe.py "$COMETBOX_BIN"
