#!/usr/bin/env bash
# Builds each client as the package a user installs, installs it the way a
# user would into a fresh temporary project, and uses it:
#
#   client-js      `npm pack`, then `npm install <tarball>` into a new npm
#                  project; require() and import of 'cometbox-client' (one
#                  long-poll reply served by an injected fetch); TypeScript
#                  (typescript from npm) checks an ESM, a CommonJS and a
#                  <script> consumer against the installed declarations
#   python-client  `python3 -m build --no-isolation` (Debian's python3-build,
#                  offline): an sdist, and a wheel built from that sdist;
#                  the wheel installed with pip into a fresh venv (no index);
#                  `import cometbox` there, and smoke calls
#   php-client     `composer validate --strict` (Debian's composer); a fresh
#                  composer project requiring cometbox/client from a "path"
#                  repository (Packagist disabled: offline), symlinked and
#                  copied, then its vendor/autoload.php and smoke calls
#   both           Python's and PHP's token(client, ttl, channels) give the
#                  same claims
#
#   bash tests/packages/run-tests.sh
#
# Needs no server binary. Installs what is missing with apt-get (nodejs,
# npm, python3-venv, python3-build, python3-setuptools, python3-wheel,
# php-cli, php-xml, composer) and typescript from the npm registry (cached by
# npm after the first run); stops with a clear message when it cannot.
# Everything happens in a temporary directory that is removed at the end;
# nothing is written into the repository. Prints "N passed, M failed" last
# and exits non-zero when M > 0. Non-interactive.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
TYPESCRIPT_VERSION="${TYPESCRIPT_VERSION:-5.9.3}"

log() { printf '[packages] %s\n' "$*" >&2; }
die() { printf '[packages] ERROR: %s\n' "$*" >&2; exit 1; }
exec </dev/null

# ---------------------------------------------------------------- packages
# as_root, package_installed
. "$repo/tests/lib/apt.sh"

# Debian's interpreter (python3-build and python3-venv install for it; a
# pyenv python3 first on PATH would not see them). $PYTHON overrides.
py="${PYTHON:-/usr/bin/python3}"

node_ready() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        node -e 'process.exit(+process.versions.node.split(".")[0] >= 18 ? 0 : 1)' >/dev/null 2>&1
}
python_ready() {
    [ -x "$py" ] && "$py" -c 'import sys; assert sys.version_info >= (3, 9); import venv, ensurepip, build, setuptools, wheel' >/dev/null 2>&1
}
php_ready() {
    command -v php >/dev/null 2>&1 &&
        php -r 'foreach (["json", "simplexml", "xmlwriter"] as $e) { if (!extension_loaded($e)) exit(1); }' >/dev/null 2>&1
}
composer_ready() { command -v composer >/dev/null 2>&1; }

# Only the Debian packages of what is missing (node and npm often come from
# elsewhere, e.g. NodeSource's nodejs, which conflicts with Debian's npm).
missing=()
node_ready || missing+=(nodejs npm)
if ! python_ready; then
    [ -z "${PYTHON:-}" ] || die "PYTHON=$py is not Python >= 3.9 with venv, ensurepip, build, setuptools and wheel"
    missing+=(python3 python3-venv python3-build python3-setuptools python3-wheel)
fi
php_ready || missing+=(php-cli php-xml)
composer_ready || missing+=(composer)
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing: ${missing[*]} (node >= 18 and npm; python3 >= 3.9 with venv, build, setuptools, wheel; php with json, simplexml, xmlwriter; composer), and apt-get is not available to install them"
    apt_install "${missing[@]}"
    node_ready || die "node >= 18 or npm is still missing"
    python_ready || die "$py still lacks Python >= 3.9, venv, ensurepip, build, setuptools or wheel (or set PYTHON)"
    php_ready || die "php or one of its extensions json, simplexml, xmlwriter is still missing"
    composer_ready || die "composer is still missing"
fi
log "node $(node --version), npm $(npm --version), $("$py" --version), PHP $(php -r 'echo PHP_VERSION;'), $(composer --version --no-ansi 2>/dev/null | head -n1)"

# ------------------------------------------------------------------ checks
work="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-packages.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# Composer and npm state of this run stays in $work (Packagist is never asked).
export COMPOSER_HOME="$work/composer-home" COMPOSER_NO_INTERACTION=1 COMPOSER_ALLOW_SUPERUSER=1
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

passed=0
failed=0
failures=()
# check NAME FUNCTION: runs FUNCTION in a subshell with `set -e`, its output
# in a log that is shown only when it fails.
check() {
    local name="$1" fn="$2" started=$SECONDS
    if (set -e; "$fn") >"$work/check.log" 2>&1; then
        passed=$((passed + 1))
        log "PASS  $name ($((SECONDS - started)) s)"
    else
        failed=$((failed + 1))
        failures+=("$name")
        log "FAIL  $name; its output:"
        sed 's/^/    | /' "$work/check.log" >&2
    fi
}

# ----------------------------------------------------------- client-js (npm)
js_version="$(node -p 'require(process.argv[1]).version' "$repo/client-js/package.json")"

js_pack() {
    mkdir -p "$work/js"
    # Packed from a copy: what `files` names, nothing of node_modules or tests.
    (cd "$repo/client-js" && npm pack --silent --pack-destination "$work/js" >"$work/js/pack-name")
    tarball="$work/js/$(tail -n1 "$work/js/pack-name")"
    [ -f "$tarball" ] || { echo "npm pack wrote no $tarball"; exit 1; }
    [ "$(basename "$tarball")" = "cometbox-client-$js_version.tgz" ]
    tar -tzf "$tarball" | sort >"$work/js/contents"
    printf 'package/%s\n' README.md cometbox.d.mts cometbox.d.ts cometbox.js cometbox.mjs package.json | sort >"$work/js/expected"
    diff -u "$work/js/expected" "$work/js/contents"
    # every file package.json points at is in the tarball
    node -e '
        const p = require(process.argv[1]);
        const paths = [p.main, p.module, p.browser, p.types];
        (function walk(v) { if (typeof v === "string") paths.push(v); else if (v) Object.values(v).forEach(walk); })(p.exports);
        const have = new Set(require("fs").readFileSync(process.argv[2], "utf8").split("\n"));
        const missing = paths.filter((f) => !have.has("package/" + f.replace(/^\.\//, "")));
        if (missing.length) { console.error("package.json points at files not in the tarball:", missing); process.exit(1); }
        console.log("entry points in the tarball:", [...new Set(paths)].join(" "));
    ' "$repo/client-js/package.json" "$work/js/contents"
}

js_install() {
    mkdir -p "$work/js/app"
    cd "$work/js/app"
    npm init -y >/dev/null
    # The package has no dependencies: nothing to fetch.
    npm install --offline --no-audit --no-fund "$work/js/cometbox-client-$js_version.tgz"
    node -e 'const l = require("./package-lock.json"); const k = Object.keys(l.packages).filter(Boolean);
             if (k.join() !== "node_modules/cometbox-client") { console.error("installed:", k); process.exit(1); }'
    [ ! -L node_modules/cometbox-client ] # a copy from the tarball, not a link to the checkout
}

js_require() {
    cd "$work/js/app"
    cp "$here/smoke.cjs" .
    node smoke.cjs "$js_version"
}

js_import() {
    cd "$work/js/app"
    cp "$here/smoke.mjs" .
    node smoke.mjs "$js_version"
}

js_types() {
    mkdir -p "$work/js/tsc"
    cd "$work/js/tsc"
    npm init -y >/dev/null
    npm install --prefer-offline --no-audit --no-fund "typescript@$TYPESCRIPT_VERSION" ||
        { echo "cannot install typescript@$TYPESCRIPT_VERSION from the npm registry"; exit 1; }
    cd "$work/js/app"
    cp "$here/ts/esm.mts" "$here/ts/cjs.cts" "$here/ts/page.ts" .
    local tsc=("$work/js/tsc/node_modules/.bin/tsc" --noEmit --strict)
    "${tsc[@]}" --version
    echo "node16: esm.mts cjs.cts"
    "${tsc[@]}" --module node16 --moduleResolution node16 esm.mts cjs.cts
    echo "bundler: esm.mts"
    "${tsc[@]}" --module esnext --moduleResolution bundler esm.mts
    echo "script: page.ts"
    "${tsc[@]}" --module node16 --moduleResolution node16 --lib es2020,dom page.ts
}

check "client-js: npm pack holds the files package.json names (main, module, browser, types, exports)" js_pack
check "client-js: npm install of the tarball into a fresh project" js_install
check "client-js: require('cometbox-client') (CommonJS), a poll reply dispatched" js_require
check "client-js: import CometBox from 'cometbox-client' (ES module), named exports" js_import
check "client-js: TypeScript $TYPESCRIPT_VERSION checks import (node16, bundler), require and <script> consumers" js_types

# ------------------------------------------------------- python-client (pip)
py_version="$("$py" -c 'import re, sys; print(re.search(r"^version = \"([^\"]+)\"", open(sys.argv[1]).read(), re.M).group(1))' "$repo/python-client/pyproject.toml")"

py_build() {
    mkdir -p "$work/py/src"
    # From a copy (setuptools writes build/ and *.egg-info next to the sources).
    cp -R "$repo/python-client/pyproject.toml" "$repo/python-client/README.md" "$repo/python-client/src" "$work/py/src/"
    rm -rf "$work/py/src/src/"*.egg-info
    find "$work/py/src" -name __pycache__ -prune -exec rm -rf {} +
    cd "$work/py"
    # sdist first, then the wheel built from the unpacked sdist (what pip
    # does with an sdist from PyPI); no isolation: Debian's setuptools, offline.
    "$py" -m build --no-isolation --outdir dist src
    ls dist
    [ -f "dist/cometbox-$py_version.tar.gz" ] && [ -f "dist/cometbox-$py_version-py3-none-any.whl" ]
    "$py" - "dist/cometbox-$py_version-py3-none-any.whl" <<'PY'
import sys, zipfile
names = sorted(zipfile.ZipFile(sys.argv[1]).namelist())
code = [n for n in names if ".dist-info/" not in n]
expected = sorted("cometbox/" + f for f in ["__init__.py", "_transport.py", "_xml.py", "batch.py",
                                             "client.py", "errors.py", "hooks.py", "jwt.py", "py.typed"])
if code != expected:
    sys.exit(f"the wheel holds {code}, expected {expected}")
print("wheel:", " ".join(names))
PY
}

py_install() {
    "$py" -m venv "$work/py/venv"
    "$work/py/venv/bin/python" -m pip install --no-index --no-cache-dir --disable-pip-version-check \
        "$work/py/dist/cometbox-$py_version-py3-none-any.whl"
    "$work/py/venv/bin/python" -m pip list --disable-pip-version-check --format=freeze | grep -x "cometbox==$py_version"
}

py_import() {
    mkdir -p "$work/py/elsewhere"
    cd "$work/py/elsewhere"   # not python-client/: the import must find the installed copy
    "$work/py/venv/bin/python" -W error::DeprecationWarning - "$py_version" "$work/py/venv" <<'PY'
import importlib.metadata, os, sys
import cometbox
from cometbox import hooks, jwt

version, venv = sys.argv[1], sys.argv[2]
assert cometbox.__file__.startswith(venv + os.sep), cometbox.__file__
assert cometbox.__version__ == version == importlib.metadata.version("cometbox"), (cometbox.__version__, version)
assert os.path.isfile(os.path.join(os.path.dirname(cometbox.__file__), "py.typed"))
client = cometbox.Client("http://127.0.0.1:9", secret="s3cret", timeout=1.0)
claims = jwt.claims(client.token("user:42", 60, ["room:*"]))   # token(client, ttl, channels)
assert claims["sub"] == "user:42" and claims["channels"] == ["room:*"] and claims["exp"] - claims["iat"] == 60, claims
assert jwt.claims(client.token("user:42", channels=["room:*"], ttl=60)) == claims
assert client.batch().send("user:42", {"text": "hi"}, "notice").subscribe("user:42", "room:1").to_xml().startswith(b"<batch")
assert hooks.allow() == b'{"allow":true}'
assert client.health() is False    # nothing listens on port 9: False, no exception
print("import cometbox", cometbox.__version__, "from", os.path.dirname(cometbox.__file__), ": ok")
PY
}

check "python-client: python3 -m build: an sdist and a wheel built from it (offline), only the package in the wheel" py_build
check "python-client: the wheel installed into a fresh venv (pip, no index)" py_install
check "python-client: import cometbox from the venv, token(client, ttl, channels), health()" py_import

# ---------------------------------------------------- php-client (composer)
php_version="$(php -r 'preg_match("/const VERSION = \x27([^\x27]+)\x27/", file_get_contents($argv[1]), $m); echo $m[1];' "$repo/php-client/src/Client.php")"

php_validate() {
    cd "$repo/php-client"
    composer validate --strict --no-check-lock --no-ansi
}

# php_project DIR SYMLINK: a fresh project requiring cometbox/client by path.
php_project() {
    local dir="$1" symlink="$2"
    mkdir -p "$dir"
    cd "$dir"
    cat >composer.json <<JSON
{
    "name": "example/app",
    "type": "project",
    "description": "a fresh project using cometbox/client",
    "repositories": [
        {"packagist.org": false},
        {"type": "path", "url": "$repo/php-client", "options": {"symlink": $symlink}}
    ],
    "require": {"cometbox/client": "@dev"}
}
JSON
    composer install --no-progress --no-ansi
    if [ "$symlink" = true ]; then [ -L vendor/cometbox/client ]; else [ ! -L vendor/cometbox/client ] && [ -f vendor/cometbox/client/src/Client.php ]; fi
    cat >app.php <<'PHP'
<?php
require __DIR__ . '/vendor/autoload.php';

use CometBox\Client;
use CometBox\Hooks;
use CometBox\Jwt;

function check(bool $ok, string $what): void { if (!$ok) { fwrite(STDERR, "failed: $what\n"); exit(1); } }

$file = (new ReflectionClass(Client::class))->getFileName();
check(strpos(realpath($file), realpath($argv[1]) . '/') === 0, "CometBox\\Client loaded from $argv[1] (it is $file)");
check(Client::VERSION === $argv[2], 'Client::VERSION is ' . Client::VERSION);
$client = new Client('http://127.0.0.1:9', ['secret' => 's3cret', 'timeout' => 1.0]);
$token = $client->token('user:42', 60, ['room:*']);   // token($clientId, $ttl, $channels)
$claims = json_decode(base64_decode(strtr(explode('.', $token)[1], '-_', '+/')), true);
check($claims['sub'] === 'user:42' && $claims['channels'] === ['room:*'] && $claims['exp'] - $claims['iat'] === 60, 'token claims');
check(count(explode('.', Jwt::mint('s3cret', 'user:42', 60, ['room:*']))) === 3, 'Jwt::mint');
check(strpos($client->batch()->send('user:42', ['text' => 'hi'], 'notice')->toXml(), '<batch') !== false, 'batch()->toXml()');
check(Hooks::allow() === '{"allow":true}', 'Hooks::allow()');
check($client->health() === false, 'health() is false with nothing listening');
echo "CometBox\\Client ", Client::VERSION, " (", $client->transportName(), ") from ", dirname($file), ": ok\n";
PHP
    # symlinked: the checkout itself; copied: the copy in vendor/
    if [ "$symlink" = true ]; then php app.php "$repo/php-client" "$php_version"; else php app.php "$dir/vendor/cometbox/client" "$php_version"; fi
}

php_path_symlink() { php_project "$work/php/linked" true; }
php_path_copy() { php_project "$work/php/copied" false; }

check "php-client: composer validate --strict" php_validate
check "php-client: composer install by path (symlinked) into a fresh project, vendor/autoload.php, smoke calls" php_path_symlink
check "php-client: composer install by path (copied) into a fresh project, vendor/autoload.php, smoke calls" php_path_copy

# ------------------------------------------------------- both backend clients
same_tokens() {
    # The same secret, client, ttl and channels, in the same argument order,
    # through the installed packages: the same claims (iat aside).
    local a b
    a="$(cd "$work/py/elsewhere" && "$work/py/venv/bin/python" -c '
import json, cometbox
c = cometbox.jwt.claims(cometbox.Client(secret="s").token("user:42", 600, ["room:*", "news"]))
print(json.dumps({"sub": c["sub"], "ttl": c["exp"] - c["iat"], "channels": c["channels"]}, separators=(",", ":")))')"
    b="$(cd "$work/php/copied" && php -r '
require "vendor/autoload.php";
$t = (new CometBox\Client("http://127.0.0.1:8481", ["secret" => "s"]))->token("user:42", 600, ["room:*", "news"]);
$c = json_decode(base64_decode(strtr(explode(".", $t)[1], "-_", "+/")), true);
echo json_encode(["sub" => $c["sub"], "ttl" => $c["exp"] - $c["iat"], "channels" => $c["channels"]]), "\n";')"
    echo "python: $a"
    echo "php:    $b"
    [ -n "$a" ] && [ "$a" = "$b" ]
}
check "python + php: token(client, ttl, channels) gives the same claims" same_tokens

# ------------------------------------------------------------------ result
if [ "$failed" -gt 0 ]; then
    log "failed: $(printf '%s; ' "${failures[@]}")"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
