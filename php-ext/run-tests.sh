#!/usr/bin/env bash
# The PHP extension's suite (issue #28), run by tests/run-all.sh after
# php-client's:
#
#   bash php-ext/run-tests.sh
#
# 1. installs php-dev, libclang-dev, php-fpm and nginx with apt-get when
#    missing (root or sudo), and stops loudly if that fails;
# 2. builds the extension (cargo build --release --locked; release because
#    the .deb and the benchmark ship that one) and runs its unit tests;
# 3. runs php-client's PHPUnit suite with the extension loaded
#    (COMETBOX_PHP_EXT; the runs without it are php-client's own suite);
# 4. builds the .deb, checks its contents, installs it with dpkg (in an
#    overlay of /: the host's PHP is untouched), checks that `php -m` lists
#    cometbox and that phpenmod linked its ini, then purges it and checks
#    that PHP no longer loads it;
# 5. the FPM test (tests/fpm-test.sh): a php-fpm pool behind nginx, 3000
#    sends, cometbox restarted in the middle.
# Uses $COMETBOX_BIN (default <repo>/target/debug/cometbox, built when missing).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
log() { printf '[php-ext] %s\n' "$*" >&2; }
die() { printf '[php-ext] ERROR: %s\n' "$*" >&2; exit 1; }
. "$repo/tests/lib/apt.sh"

# ---------------------------------------------------------------- packages
missing=()
for p in php-dev libclang-dev php-fpm nginx php-cli php-xml php-curl php-mbstring phpunit iproute2 curl; do
    package_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi
command -v php-config >/dev/null 2>&1 || die "php-config missing after installing php-dev"

# The extension must not be enabled system-wide already: the suite would
# not know which copy PHP loads, and php-client's runs without it would use it.
if php -r 'exit(extension_loaded("cometbox") ? 0 : 1);'; then
    die "the cometbox extension is already enabled in this PHP (dpkg -r php$(php-config --version | cut -d. -f1,2)-cometbox, or phpdismod cometbox)"
fi

# ------------------------------------------------------------------- build
log "cargo build --release --locked (php-ext)"
(cd "$here" && cargo build --release --locked </dev/null) || die "cargo build failed"
(cd "$here" && cargo test --release --locked </dev/null) || die "cargo test (php-ext unit tests) failed"
so="$here/target/release/libcometbox.so"
[ -f "$so" ] || die "the build did not produce $so"

bin="${COMETBOX_BIN:-$repo/target/debug/cometbox}"
if [ ! -x "$bin" ]; then
    [ -z "${COMETBOX_BIN:-}" ] || die "COMETBOX_BIN=$bin is not an executable file"
    (cd "$repo" && cargo build --locked </dev/null) || die "cargo build (server) failed"
fi
export COMETBOX_BIN="$bin"

status=0
step() { log "---- $1"; }

# ------------------------------------------------- PHPUnit, with extension
step "php-client's PHPUnit suite with the extension"
COMETBOX_PHP_EXT="$so" bash "$repo/php-client/run-tests.sh" || { log "FAILED: PHPUnit with the extension"; status=1; }

# -------------------------------------------------------------------- .deb
step ".deb: build, contents, dpkg -i, php -m, dpkg --purge"
deb_test() {
    local deb ver extdir name listing ini conf
    deb="$(bash "$here/package.sh" "$(mktemp -d "${TMPDIR:-/tmp}/cometbox-phpext-out.XXXXXX")")" || return 1
    ver="$(php-config --version | cut -d. -f1,2)"
    extdir="$(php-config --extension-dir)"
    name="php$ver-cometbox"
    listing="$(dpkg-deb -c "$deb")"
    grep -q " \./${extdir#/}/cometbox.so$" <<<"$listing" || { log "no $extdir/cometbox.so in the .deb"; return 1; }
    grep -q " \./etc/php/$ver/mods-available/cometbox.ini$" <<<"$listing" || { log "no mods-available/cometbox.ini in the .deb"; return 1; }
    ini="$(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - "./etc/php/$ver/mods-available/cometbox.ini")"
    grep -qx 'extension=cometbox.so' <<<"$ini" && grep -qx '; priority=20' <<<"$ini" || { log "unexpected ini: $ini"; return 1; }
    [ "$(dpkg-deb -f "$deb" Package)" = "$name" ] || { log "package name is not $name"; return 1; }
    dpkg-deb -f "$deb" Depends | grep -q "phpapi-$(php-config --phpapi)" || { log "Depends lacks phpapi-$(php-config --phpapi)"; return 1; }
    # Installed for real, but in an overlay of / in a mount namespace of
    # its own (tests/lib/overlay-root.sh): dpkg's database and /etc/php
    # change there only, so the host's PHP never loads the module, whatever
    # else runs meanwhile.
    local w
    w="$(mktemp -d /var/tmp/cometbox-phpext-deb.XXXXXX)"
    cp "$deb" "$w/"
    conf="/etc/php/$ver/cli/conf.d/20-cometbox.ini"
    cat >"$w/check.sh" <<EOF
set -e
dpkg -i "$w/$(basename "$deb")" >&2
php -m | grep -qx cometbox || { echo "installed, but php -m does not list cometbox" >&2; exit 1; }
[ -L "$conf" ] || { echo "phpenmod did not link $conf" >&2; exit 1; }
[ -L "/etc/php/$ver/fpm/conf.d/20-cometbox.ini" ] || { echo "phpenmod did not link the fpm ini" >&2; exit 1; }
php -r 'exit(phpversion("cometbox") !== false && function_exists("cometbox_native_request") ? 0 : 1);'
echo "installed: php -m lists cometbox \$(php -r 'echo phpversion("cometbox");'), $conf -> \$(readlink "$conf")" >&2
dpkg --purge "$name" >&2
if php -m | grep -qx cometbox || [ -e "$conf" ] || [ -L "$conf" ] || [ -e "$extdir/cometbox.so" ]; then
    echo "after dpkg --purge PHP still loads cometbox or its files remain" >&2
    exit 1
fi
EOF
    local ok=0
    as_root unshare --mount sh "$repo/tests/lib/overlay-root.sh" "$w/overlay" sh "$w/check.sh" && ok=1
    rm -rf "$w"
    rm -rf "$(dirname "$deb")"
    [ "$ok" = 1 ]
}
deb_test || { log "FAILED: .deb"; status=1; }

# --------------------------------------------------------------------- FPM
step "PHP-FPM behind nginx with the extension: 3000 sends, cometbox restarted mid-run"
FPM_EXT="$so" bash "$here/tests/fpm-test.sh" || { log "FAILED: FPM test"; status=1; }

[ "$status" -eq 0 ] || die "FAILED"
log "all php-ext tests passed"
