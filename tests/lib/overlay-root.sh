#!/bin/sh
# Runs a command chrooted into an overlay of / whose upper layer is
# DIR/upper: what it installs or changes (dpkg's database, /etc, /usr,
# /var/lib) lands there, and the host's files stay as they were. Used by
# tests that install a .deb for real (deploy/upgrade-test.sh, which execs
# systemd here; php-ext/run-tests.sh).
#
#   unshare --mount [--pid --fork --net --uts] sh tests/lib/overlay-root.sh DIR CMD [ARG...]
#
# Must run in a mount namespace of its own (the mounts then vanish with
# it). DIR must be on the root file system (e.g. under /var/tmp), so that
# what it holds is visible inside at the same path. /proc is mounted anew
# (the pid namespace's own, with --pid), /run is an empty tmpfs, /dev and
# /sys are the host's. A container image's policy-rc.d (exit 101: no
# service may start) is not carried over: a real machine has none.
set -e
[ $# -ge 2 ] || { echo "usage: $0 DIR CMD [ARG...]" >&2; exit 2; }
dir=$1; shift
mkdir -p "$dir/upper" "$dir/work" "$dir/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
mount --rbind /dev "$dir/root/dev"
mount -t sysfs sysfs "$dir/root/sys"
mount --rbind /sys/fs/cgroup "$dir/root/sys/fs/cgroup"
mount -t proc proc "$dir/root/proc"
mount -t tmpfs tmpfs "$dir/root/run"
rm -f "$dir/root/usr/sbin/policy-rc.d"
exec chroot "$dir/root" "$@"
