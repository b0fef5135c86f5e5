#!/usr/bin/env bash
# Runs the PHP client's test suite against the real cometbox binary.
#
#   php-client/run-tests.sh [extra phpunit arguments]
#
# - installs php-cli, php-xml, php-curl, php-mbstring and phpunit with apt-get
#   when they are missing (Debian/Ubuntu; root or sudo), and stops loudly if
#   that fails;
# - uses $COMETBOX_BIN, default <repo>/target/debug/cometbox, built with
#   `cargo build` from the repository root when missing;
# - runs PHPUnit twice: with every extension of this PHP (curl loaded, so the
#   'auto' transport is curl), then with ext-curl left out (so 'auto' is the
#   raw-socket transport and curl-only tests are skipped);
# - with COMETBOX_PHP_EXT=/path/to/cometbox.so (php-ext/run-tests.sh sets
#   it), runs PHPUnit once instead, with that extension loaded
#   (`-d extension=...`): 'auto' is then the extension's transport, and
#   NativeExtensionTest fails if it is not;
# - exits non-zero if anything failed. Non-interactive (fine for CI=true).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

log() { printf '[php-client] %s\n' "$*" >&2; }
die() { printf '[php-client] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
# as_root, package_installed
. "$repo/tests/lib/apt.sh"


php_ready() {
    command -v php >/dev/null 2>&1 && command -v phpunit >/dev/null 2>&1 &&
        php -r 'foreach (["curl","dom","xmlwriter","simplexml","mbstring","json"] as $e) { if (!extension_loaded($e)) exit(1); }' >/dev/null 2>&1
}

if ! php_ready; then
    missing=()
    if command -v dpkg-query >/dev/null 2>&1; then
        for p in php-cli php-xml php-curl php-mbstring phpunit; do
            package_installed "$p" || missing+=("$p")
        done
    else
        die "php/phpunit or a PHP extension is missing and this is not a Debian-like system: install php-cli, php-xml, php-curl, php-mbstring and phpunit"
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    php_ready || die "php, phpunit or one of the extensions curl, dom, xmlwriter, simplexml, mbstring is still missing after installing"
fi
log "$(php -r 'echo "PHP ", PHP_VERSION;'), $(phpunit --version 2>/dev/null | sed -n 's/ by .*//; /./{p;q}')"

# ------------------------------------------------------------------ server
bin="${COMETBOX_BIN:-$repo/target/debug/cometbox}"
if [ ! -x "$bin" ]; then
    if [ -n "${COMETBOX_BIN:-}" ]; then
        die "COMETBOX_BIN=$bin is not an executable file"
    fi
    command -v cargo >/dev/null 2>&1 || die "$bin is missing and cargo is not installed to build it"
    log "building the server: cargo build (in $repo)"
    (cd "$repo" && cargo build </dev/null) || die "cargo build failed"
    [ -x "$bin" ] || die "cargo build did not produce $bin"
fi
export COMETBOX_BIN="$bin"
log "server binary: $COMETBOX_BIN"

# ------------------------------------------------------------------- tests
phpunit_bin="$(command -v phpunit)"
status=0

if [ -n "${COMETBOX_PHP_EXT:-}" ]; then
    [ -f "$COMETBOX_PHP_EXT" ] || die "COMETBOX_PHP_EXT=$COMETBOX_PHP_EXT is not a file"
    php -d extension="$COMETBOX_PHP_EXT" -r 'exit(extension_loaded("cometbox") ? 0 : 1);' ||
        die "php does not load $COMETBOX_PHP_EXT"
    export COMETBOX_PHP_EXT
    log "with the cometbox extension: $COMETBOX_PHP_EXT"
    if php -d extension="$COMETBOX_PHP_EXT" "$phpunit_bin" -c "$here/phpunit.xml.dist" "$@" </dev/null; then
        log "all PHP client tests passed with the extension"
        exit 0
    fi
    log "FAILED (with the extension)"
    exit 1
fi
if php -r 'exit(extension_loaded("cometbox") ? 0 : 1);'; then
    die "the cometbox extension is enabled in this PHP: the runs without it would use it (phpdismod cometbox, or use COMETBOX_PHP_EXT)"
fi

log "run 1/2: all extensions (curl loaded)"
php "$phpunit_bin" -c "$here/phpunit.xml.dist" "$@" </dev/null || status=1

# Same PHP with ext-curl left out: a scan dir holding every ini file of this
# PHP but the one that loads curl.
scanned="$(php -r 'echo (string) php_ini_scanned_files();' | tr -d ' \n')"
nocurl_dir="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-php-nocurl.XXXXXX")"
trap 'rm -rf "$nocurl_dir"' EXIT
if [ -n "$scanned" ]; then
    IFS=',' read -r -a ini_files <<<"$scanned"
    for f in "${ini_files[@]}"; do
        [ -n "$f" ] || continue
        if grep -Eq '^[[:space:]]*extension[[:space:]]*=[[:space:]]*"?curl(\.so)?"?[[:space:]]*$' "$f"; then
            continue
        fi
        ln -s "$f" "$nocurl_dir/$(basename "$f")"
    done
fi
if PHP_INI_SCAN_DIR="$nocurl_dir" php -r 'exit(extension_loaded("curl") ? 1 : 0);'; then
    log "run 2/2: without ext-curl ('auto' = socket transport)"
    PHP_INI_SCAN_DIR="$nocurl_dir" php "$phpunit_bin" -c "$here/phpunit.xml.dist" "$@" </dev/null || status=1
else
    die "cannot unload ext-curl for the second run (built into this PHP?)"
fi

if [ "$status" -ne 0 ]; then
    log "FAILED"
    exit 1
fi
log "all PHP client tests passed (with and without ext-curl)"
