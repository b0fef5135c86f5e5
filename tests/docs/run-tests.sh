#!/usr/bin/env bash
# The docs suite: the examples of README.md, docs/*.md, deploy/README.md and
# the PHP and Python clients' READMEs
# marked `<!-- doc-test -->` run against the real binary (tests/docs/README.md).
#
#   bash tests/docs/run-tests.sh              # every doc
#   bash tests/docs/run-tests.sh docs/x.md    # one file
#
# COMETBOX_BIN=/path/to/cometbox uses that binary; without it the script runs
# `cargo build` and uses target/debug/cometbox. Installs what the examples
# call (curl, php-cli, python3, redis-server) with apt-get when missing;
# fails loudly when anything cannot be installed or any example fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
export DEBIAN_FRONTEND=noninteractive
exec </dev/null

die() { echo "tests/docs: $*" >&2; exit 1; }

missing=()
for tool in curl:curl php:php-cli python3:python3 redis-server:redis-server; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; else SUDO=; fi
  $SUDO apt-get update -qq || die "apt-get update failed"
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi
php -r 'exit(extension_loaded("curl") || function_exists("fsockopen") ? 0 : 1);' \
  || die "php can reach no server (no curl, no sockets)"

if [ -z "${COMETBOX_BIN:-}" ]; then
  cargo build --quiet || die "cargo build failed"
  COMETBOX_BIN="$repo/target/debug/cometbox"
fi
export COMETBOX_BIN

# The runner must catch a doc whose output drifted, or it proves nothing.
drift_log=$(mktemp)
trap 'rm -f "$drift_log"' EXIT
if python3 tests/docs/run_docs.py tests/docs/fixtures/drifted.md >"$drift_log" 2>&1; then
  cat "$drift_log"
  die "the runner passed tests/docs/fixtures/drifted.md, whose shown output is wrong"
fi
grep -q "drifted.md:.*printed other output than the doc shows" "$drift_log" \
  || { cat "$drift_log"; die "the drifted fixture failed for another reason"; }
echo "tests/docs: the runner catches a drifted doc"

timeout --kill-after=10 300 python3 tests/docs/run_docs.py "$@"
