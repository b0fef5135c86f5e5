#!/usr/bin/env bash
# Runs the Python client's test suite against the real cometbox binary.
#
#   python-client/run-tests.sh [extra pytest arguments]
#
# - installs python3, python3-pytest, python3-venv, python3-setuptools and
#   python3-wheel with apt-get when they are missing (Debian/Ubuntu; root or sudo), and stops loudly if that fails;
# - uses $COMETBOX_BIN, default <repo>/target/debug/cometbox, built with
#   `cargo build` from the repository root when missing;
# - installs the package (`pip install`, offline, no build isolation) into a
#   throwaway venv and runs pytest there, so the tests exercise the installed
#   copy (py.typed included), not the source tree;
# - exits non-zero if anything failed, or if pytest ran no test.
#   Non-interactive (fine for CI=true).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

log() { printf '[python-client] %s\n' "$*" >&2; }
die() { printf '[python-client] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- packages
# as_root, package_installed
. "$repo/tests/lib/apt.sh"


# Debian's interpreter, where python3-pytest installs (a pyenv or other
# python3 first on PATH would not see it). $PYTHON overrides.
py="${PYTHON:-/usr/bin/python3}"

python_ready() {
    [ -x "$py" ] && "$py" -c 'import sys; assert sys.version_info >= (3, 9)' >/dev/null 2>&1 &&
        "$py" -m pytest --version >/dev/null 2>&1 &&
        "$py" -c 'import ensurepip, venv, setuptools, wheel' >/dev/null 2>&1
}

if ! python_ready; then
    [ -z "${PYTHON:-}" ] || die "PYTHON=$py lacks Python >= 3.9, pytest, venv/ensurepip, setuptools or wheel"
    command -v dpkg-query >/dev/null 2>&1 ||
        die "python3 >= 3.9, pytest, venv, setuptools or wheel is missing and this is not a Debian-like system: install them, or set PYTHON"
    missing=()
    for p in python3 python3-pytest python3-venv python3-setuptools python3-wheel; do
        package_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    python_ready || die "$py still lacks Python >= 3.9, pytest, venv, setuptools or wheel after installing them"
fi
log "$("$py" --version), $("$py" -m pytest --version 2>&1 | head -n1)"

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

# ----------------------------------------------------------------- install
work="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-python-tests.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# --system-site-packages: pytest, and wheel for the offline build, come from
# Debian; the package itself is installed into the venv, which shadows any
# other copy.
"$py" -m venv --system-site-packages "$work/venv" || die "cannot create a venv with $py"
vpy="$work/venv/bin/python"
# Built from a copy, so that setuptools' build/ and *.egg-info stay out of the tree.
mkdir "$work/pkg"
cp -R "$here/pyproject.toml" "$here/README.md" "$here/src" "$work/pkg/"
rm -rf "$work/pkg/src/"*.egg-info
log "pip install python-client (into a throwaway venv)"
"$vpy" -m pip install -q --no-index --no-build-isolation --no-deps --disable-pip-version-check \
    --no-cache-dir "$work/pkg" </dev/null || die "pip install python-client failed"
installed="$(cd "$work" && "$vpy" -c 'import cometbox, os; print(os.path.dirname(cometbox.__file__))')"
case "$installed" in
    "$work/venv/"*) ;;
    *) die "the tests would import cometbox from $installed, not from the venv" ;;
esac
[ -f "$installed/py.typed" ] || die "py.typed is missing from the installed package ($installed)"
log "testing the installed package in $installed"

# ------------------------------------------------------------------- tests
status=0
(cd "$here" && "$vpy" -m pytest -p no:cacheprovider -rfEs "$@" </dev/null) || status=$?
if [ "$status" -eq 5 ]; then
    die "pytest collected no test"
elif [ "$status" -ne 0 ]; then
    log "FAILED (pytest exit status $status)"
    exit 1
fi
log "all Python client tests passed"
