#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine or a developer's:
#   ./tests/run-all.sh
# Installs what the suites need (Debian packages, npm packages from the
# lockfile, cargo-deb), builds the server, then runs, in order:
#   1. cargo test        unit tests, the integration binary (tests/it) and the
#                        disk store's durability suite (tests/durability: kills
#                        the real binary; mounts a tmpfs and an ext4 image, root)
#   1b. redis cluster   several real nodes on a real redis-server (tests/cluster),
#                        also behind a real nginx with the deploy snippets
#   1c. docs            the examples of README.md, docs/ and deploy/README.md
#                        marked <!-- doc-test --> run against the binary (tests/docs)
#   2. php-client        PHPUnit against the real binary, every transport
#      php-ext           the PHP extension (php-ext/): PHPUnit with it, its
#                        .deb installed in an overlay of /, PHP-FPM behind
#                        nginx with cometbox restarted mid-run
#      python-client     pytest against the real binary, TCP and Unix socket
#      packages          each client built and installed as a user would
#                        (npm pack, a wheel in a fresh venv, composer path)
#   3. client-js         node unit + integration tests, headless Chromium (also a
#                        page behind nginx, two nodes on Redis, one SIGKILLed)
#      bayeux            the real npm Bayeux clients (CometD and Faye in Node and
#                        in Chromium) and the Bayeux chat demo (tests/bayeux)
#      pusher            Pusher's official Node and Python server SDKs against
#                        [pusher]'s HTTP API, read back by /poll (tests/pusher)
#      bridges           [[bridge]] against real ActiveMQ, RabbitMQ, NATS and
#                        Redis (Debian's packages) started on loopback
#   4. deploy            real nginx in front, systemd unit check, the .deb
#   5. load tool smoke   the benches/ load tool on a tiny scale (release build):
#                        nothing lost, no errors, so the tool keeps working
# Any failure, or anything that cannot be installed, fails the run loudly.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
export DEBIAN_FRONTEND=noninteractive

say() { printf '\n==> %s\n' "$*"; }

# Debian packages every suite needs, installed once (the suites' own
# scripts re-check and only install what is still missing).
packages=(php-cli php-xml php-curl php-mbstring phpunit chromium nginx curl systemd python3
          python3-pytest python3-venv python3-setuptools python3-wheel
          e2fsprogs util-linux mount redis-server composer python3-build)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

say "building the server"
cargo build --locked
export COMETBOX_BIN="$repo/target/debug/cometbox"

# What the suites start (servers, php -S, redis-server, nginx, brokers) they
# must stop. Processes of those kinds that exist now are not ours; any new
# one still running at the end is a leak, and fails the run.
helpers_running() {
  # (No match is no process, not a failure: `|| true` under pipefail.)
  { ps -eo pid=,args= | grep -E "php -S|php-fpm: master|redis-server|nginx: master|cometbox|activemq|rabbitmq|nats-server" \
    | grep -v -E "grep|run-all\.sh|cargo " | awk '{print $1}' | sort; } || true
}
before_pids="$(helpers_running)"

results=()
failed=0
run_suite() {
  local name=$1; shift
  local started=$SECONDS
  say "$name"
  if "$@"; then
    results+=("PASS  $name [$((SECONDS - started)) s]")
  else
    results+=("FAIL  $name [$((SECONDS - started)) s]"); failed=$((failed + 1))
  fi
}

run_suite "cargo test (unit + integration)" cargo test --locked
run_suite "redis store: nodes on a real Redis (tests/cluster)" bash tests/cluster/run-tests.sh
run_suite "docs: the README's and docs/ examples run as written (tests/docs)" bash tests/docs/run-tests.sh

# The release build (for the .deb and the load tool) takes minutes of CPU;
# it runs while the client suites, which wait on the network more than on
# the CPU, use the debug binary. (It fits in what they leave idle; with
# the load tool's and the PHP extension's builds added beside it, the run
# waited 310 s for them and took 2 minutes longer, so those build in turn.)
say "building the release binary in the background"
release_log="$(mktemp)"
cargo build --locked --release --bin cometbox >"$release_log" 2>&1 &
release_pid=$!
release_started=$SECONDS

run_suite "php-client (PHPUnit)" bash php-client/run-tests.sh
run_suite "php-ext (PHP extension: PHPUnit with it, .deb, PHP-FPM behind nginx)" bash php-ext/run-tests.sh
run_suite "python-client (pytest)" bash python-client/run-tests.sh
run_suite "packages (npm pack, wheel, composer path install)" bash tests/packages/run-tests.sh
run_suite "client-js (node + Chromium)" bash client-js/run-tests.sh
run_suite "bayeux (CometD + Faye in Node and Chromium, demo)" bash tests/bayeux/run-tests.sh
run_suite "pusher (server SDKs; pusher-js and Laravel Echo in Node and Chromium)" bash tests/pusher/run-tests.sh
run_suite "bridges (ActiveMQ, RabbitMQ, NATS, Redis)" bash tests/bridges/run-tests.sh

say "waiting for the release build"
if wait "$release_pid"; then
  results+=("PASS  release build [finished by $((SECONDS - release_started)) s after its start]")
else
  cat "$release_log"
  results+=("FAIL  release build"); failed=$((failed + 1))
fi
rm -f "$release_log"
run_suite "deploy (nginx, systemd, .deb)" bash deploy/run-tests.sh
run_suite "load tool smoke (benches/load)" cargo bench --locked --bench load -- smoke

say "processes left behind"
sleep 2   # a suite's last kill takes a moment to be reaped
left=$(comm -13 <(echo "$before_pids") <(helpers_running) || true)
if [ -n "$left" ]; then
  ps -o pid=,ppid=,args= -p $(echo $left | tr ' ' ',') || true
  results+=("FAIL  nothing left running (the processes above outlived their suites)")
  failed=$((failed + 1))
else
  results+=("PASS  nothing left running")
fi

say "summary"
printf '%s\n' "${results[@]}"
passed=$(( ${#results[@]} - failed ))
echo "suites: $passed passed, $failed failed, in $((SECONDS / 60)) min $((SECONDS % 60)) s"
[ "$failed" -eq 0 ]
