#!/usr/bin/env bash
# Build a minimal busybox rootfs for nexcage's tests and benchmarks.
# Usage: bundles/make-rootfs.sh [DEST]   (default: bundles/rootfs)
# Rebuilds only when DEST is missing, busybox changed, or this script changed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../hack/lib.sh"

dest="${1:-$NEXCAGE_ROOTFS}"
busybox=/bin/busybox
[[ -x "$busybox" ]] || die "$busybox missing (apt-get install busybox-static)"
# A dynamic busybox (package "busybox") would need its libraries in the rootfs.
ldd "$busybox" >/dev/null 2>&1 && die "$busybox is dynamic; install busybox-static"

# The stamp ties the rootfs to the exact busybox binary and build recipe.
stamp="$(cat "$busybox" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
up_to_date() { [[ "$(cat "$dest/.nexcage-rootfs" 2>/dev/null)" == "$stamp" ]]; }
up_to_date && exit 0

# Parallel test runs may all call us: one builds, the others wait and reuse it.
mkdir -p -- "$(dirname -- "$dest")"
exec 9<"$(dirname -- "$dest")"
flock 9
up_to_date && exit 0

log "building busybox rootfs in $dest"
# Build next to DEST and rename, so a reader never sees half a rootfs.
tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
trap 'rm -rf -- "$tmp"' EXIT
# Mount points and writable-looking dirs; runtimes must not have to create
# any of them in a shared, read-only rootfs.
mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,etc,root,var,run}
chmod 1777 "$tmp/tmp"
chmod 0700 "$tmp/root"
cp "$busybox" "$tmp/bin/busybox"
# --list-full gives each applet's usual path (bin/sh, usr/bin/env, ...).
while IFS= read -r applet; do
    [[ "$applet" == linuxrc || -e "$tmp/$applet" ]] && continue
    ln -s /bin/busybox "$tmp/$applet"
done < <("$busybox" --list-full)

printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
    'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$tmp/etc/passwd"
printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$tmp/etc/group"
echo nexcage >"$tmp/etc/hostname"
printf '%s\n' "$stamp" >"$tmp/.nexcage-rootfs"
chmod 0755 "$tmp"   # mktemp made it 0700; containers run as non-root too

if [[ -e "$dest" ]]; then
    old="$(mktemp -d "$dest.old.XXXXXX")"
    mv -T -- "$dest" "$old/rootfs"
    mv -T -- "$tmp" "$dest"
    rm -rf -- "$old"
else
    mv -T -- "$tmp" "$dest"
fi
log "rootfs ready: $dest"
