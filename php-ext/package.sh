#!/usr/bin/env bash
# Builds the Debian package of the cometbox PHP extension with dpkg-deb:
#
#   php-ext/package.sh [OUTPUT_DIR]      (default php-ext/target/deb)
#
# from php-ext/target/release/libcometbox.so (built here with
# `cargo build --release --locked` when missing or older than the sources),
# for the PHP that `php-config` names (Debian bookworm: 8.2, API 20220829).
# The package, php<VERSION>-cometbox:
#   <php-config --extension-dir>/cometbox.so
#   /etc/php/<VERSION>/mods-available/cometbox.ini   (conffile; priority 20)
# postinst enables it with phpenmod, prerm disables it with phpdismod (so
# php-fpm, mod_php and the CLI load it after a restart). Prints the .deb's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/target/deb}"
die() { printf '[php-ext package] ERROR: %s\n' "$*" >&2; exit 1; }

command -v php-config >/dev/null 2>&1 || die "php-config not found (apt-get install php-dev)"
command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
so="$here/target/release/libcometbox.so"
if [ ! -f "$so" ] || [ -n "$(find "$here/src" "$here/Cargo.toml" "$here/Cargo.lock" -newer "$so" 2>/dev/null | head -1)" ]; then
    (cd "$here" && cargo build --release --locked) >&2 || die "cargo build failed"
fi

php_version="$(php-config --version | cut -d. -f1,2)"
ext_dir="$(php-config --extension-dir)"
phpapi="$(php-config --phpapi)"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)"
arch="$(dpkg --print-architecture)"
name="php${php_version}-cometbox"

root="$(mktemp -d "${TMPDIR:-/tmp}/cometbox-phpext-deb.XXXXXX")"
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
install -D -m 0644 "$so" "$root$ext_dir/cometbox.so"
install -d "$root/etc/php/$php_version/mods-available"
cat >"$root/etc/php/$php_version/mods-available/cometbox.ini" <<INI
; configuration for php cometbox module (php-client's native transport:
; one keep-alive connection per worker to cometbox's ingest listener)
; priority=20
extension=cometbox.so
INI
install -d "$root/usr/share/doc/$name"
install -m 0644 "$here/README.md" "$root/usr/share/doc/$name/README.md"
install -m 0644 "$here/../LICENSE" "$root/usr/share/doc/$name/copyright"

install -d "$root/DEBIAN"
size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
cat >"$root/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: cometbox <cometbox@localhost>
Installed-Size: $size
Depends: phpapi-$phpapi, php-common (>= 2:69), libc6
Section: php
Priority: optional
Description: cometbox PHP extension (native transport for php-client)
 Keeps one keep-alive connection per PHP worker (PHP-FPM, mod_php) to the
 cometbox ingest listener, over TCP or a Unix socket. php-client uses it
 when it is loaded and falls back to its own transports otherwise.
CONTROL
echo "/etc/php/$php_version/mods-available/cometbox.ini" >"$root/DEBIAN/conffiles"
cat >"$root/DEBIAN/postinst" <<SH
#!/bin/sh
set -e
if [ "\$1" = configure ] && command -v phpenmod >/dev/null 2>&1; then
    phpenmod -v $php_version cometbox
fi
SH
cat >"$root/DEBIAN/prerm" <<SH
#!/bin/sh
set -e
# Before the .ini goes: phpdismod removes the conf.d links to it.
if [ "\$1" = remove ] && command -v phpdismod >/dev/null 2>&1; then
    phpdismod -v $php_version cometbox
fi
SH
cat >"$root/DEBIAN/postrm" <<SH
#!/bin/sh
set -e
# phpenmod's record of the module being enabled, gone with the package.
if [ "\$1" = purge ]; then
    rm -f /var/lib/php/modules/$php_version/*/enabled_by_maint/cometbox /var/lib/php/modules/$php_version/*/enabled_by_admin/cometbox
fi
SH
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
