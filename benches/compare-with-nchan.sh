#!/usr/bin/env bash
# The side-by-side comparison in one command, on a fresh Debian machine:
#   ./benches/compare-with-nchan.sh [--json load.json] [other load-tool options]
# Installs nginx and Nchan (Debian's libnginx-mod-nchan) when missing, then
# runs every scenario against both servers, three times, and prints medians
# and cometbox/Nchan ratios. Takes about five minutes on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for p in nginx libnginx-mod-nchan; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
exec cargo bench --bench load -- all --target both --runs 3 "$@"
