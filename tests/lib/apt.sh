# Sourced by the suites' run-tests.sh scripts: running a command as root
# (directly, or with sudo without a password prompt) and asking dpkg whether
# a package is installed. The caller defines `die MESSAGE` (its own prefix).

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root (or sudo) to run: $*"
    fi
}

package_installed() {
    local status
    status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ]
}
