#!/usr/bin/env bash
# Unpacks Debian's cloud kernel into DIR for VM guests: DIR/vmlinuz, DIR/modules
# (lib/modules/<version>, depmod'ed, for an initramfs to take modules from) and
# DIR/version. Nothing is installed on the host: the package is only downloaded.
# Idempotent: does nothing when DIR holds the version apt would pick.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
dir="${1:?usage: get-kernel.sh DIR}"

# The versioned image package the metapackage points at.
package="$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1)"
[[ -n "$package" ]] || die "no linux-image-cloud-amd64 in apt's lists (apt-get update?)"
version="${package#linux-image-}"
if [[ "$(cat "$dir/version" 2>/dev/null)" == "$version" ]]; then
    exit 0
fi
log "unpacking $package into $dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# _apt cannot write into a root-only temporary directory.
chmod 0755 "$work"
(cd "$work" && apt-get download -qq "$package" 2>/dev/null)
dpkg-deb -x "$work"/"$package"_*.deb "$work/x"
depmod -b "$work/x" "$version"
rm -rf "$dir.new"
mkdir -p "$dir.new"
cp "$work/x/boot/vmlinuz-$version" "$dir.new/vmlinuz"
mv "$work/x/lib/modules/$version" "$dir.new/modules"
echo "$version" >"$dir.new/version"
rm -rf "$dir"
mv "$dir.new" "$dir"
