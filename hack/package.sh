#!/usr/bin/env bash
# Builds the Debian package OUTDIR/nexcage_<version>_amd64.deb and prints its path:
# the static release binary, the man pages and shell completions it generates from
# its own command line, /etc/nexcage/config.json as a conffile, and the examples in
# hack/package/. Needs cargo, dpkg-deb and gzip; root or not. Everything is staged in
# a temporary directory removed on exit, so only the .deb is left (replaced if there).
# Usage: hack/package.sh OUTDIR
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(( $# == 1 )) || die "usage: $0 OUTDIR"
outdir="$1"
files="$NEXCAGE_ROOT/hack/package"
for t in cargo dpkg-deb gzip md5sum; do have "$t" || die "$t not found"; done
# The package's modes must not depend on the caller's umask.
umask 022

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/root"

log "building the release binary (cargo build --release --locked)"
# The binary's path as cargo reports it, wherever the target directory is.
bin="$(cd "$NEXCAGE_ROOT" &&
    cargo build --release --locked --message-format=json-render-diagnostics |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)"
[[ -x "$bin" ]] || die "cargo reported no nexcage binary"
version="$("$bin" --version | sed -n 's/^nexcage version //p')"
[[ -n "$version" ]] || die "no version in '$bin --version'"
# A semver pre-release (0.2.0-rc.1) sorts before its release in Debian only with '~'.
version="${version/-/\~}"

install -D -m 0755 "$bin" "$root/usr/bin/nexcage"

man="$root/usr/share/man/man1"
install -d "$man"
"$root/usr/bin/nexcage" man "$man" >/dev/null
gzip -9n "$man"/*.1

completions() { # SHELL PATH
    install -d "$(dirname "$2")"
    "$root/usr/bin/nexcage" completion "$1" >"$2"
}
completions bash "$root/usr/share/bash-completion/completions/nexcage"
completions zsh "$root/usr/share/zsh/vendor-completions/_nexcage"
completions fish "$root/usr/share/fish/vendor_completions.d/nexcage.fish"

install -D -m 0644 "$files/config.json" "$root/etc/nexcage/config.json"
doc="$root/usr/share/doc/nexcage"
install -D -m 0644 "$files/copyright" "$doc/copyright"
install -d "$doc/examples"
install -m 0644 "$files"/examples/* "$doc/examples/"
# The examples' README points to it for the config's keys and the engines.
gzip -9n -c "$NEXCAGE_ROOT/README.md" >"$doc/README.md.gz"

install -d "$root/DEBIAN"
echo /etc/nexcage/config.json >"$root/DEBIAN/conffiles"
# dpkg checks conffiles by their own hashes; md5sums lists the other files.
(cd "$root" && find usr -type f | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
installed_size="$(du -sk --exclude=DEBIAN "$root" | cut -f1)"
maintainer="${DEBFULLNAME:-nexcage maintainers} <${DEBEMAIL:-maintainers@nexcage.invalid}>"
cat >"$root/DEBIAN/control" <<EOF
Package: nexcage
Version: $version
Architecture: amd64
Maintainer: $maintainer
Installed-Size: $installed_size
Recommends: crun, lxc
Suggests: runc
Section: admin
Priority: optional
Description: OCI runtime that routes containers to crun, runc, LXC or Proxmox VE
 nexcage is called by container engines (podman, Docker, containerd and so
 Kubernetes) as they call runc. It routes each container, by annotations and
 the rules in /etc/nexcage/config.json, to a backend: crun or runc, a plain LXC
 container, or a Proxmox VE container (pct) or VM (qm), and records where it
 went so that every later command reaches the same backend.
 .
 The binary is static. The shipped config routes every container to crun.
EOF

deb="nexcage_${version}_amd64.deb"
dpkg-deb --build --root-owner-group "$root" "$stage/$deb" >&2
mkdir -p "$outdir"
mv -f "$stage/$deb" "$outdir/$deb"
log "built $outdir/$deb"
echo "$outdir/$deb"
