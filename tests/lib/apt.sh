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

# Installs the named Debian packages with apt-get (as root): `apt-get
# update` first (three tries, 10 s apart: a mirror can be briefly
# unreachable), never a prompt, never recommends. Dies naming what failed.
# The caller defines `log MESSAGE` too.
apt_install() {
    [ $# -gt 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install: $*"
    log "installing: $*"
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3) attempt
    for attempt in 1 2 3; do
        as_root apt-get "${apt_opts[@]}" update -q </dev/null && break
        [ "$attempt" -eq 3 ] && die "apt-get update failed"
        log "apt-get update failed (attempt $attempt); retrying in 10 s"
        sleep 10
    done
    as_root apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "$@" </dev/null ||
        die "apt-get install $* failed"
}
