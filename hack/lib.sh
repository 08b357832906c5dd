# shellcheck shell=bash
# Small helpers for nexcage's scripts: `source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"`.
# Sourcing only defines things; it never changes the caller's shell options.

# Repo root, from this file's own location, so scripts work from any cwd.
NEXCAGE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
export NEXCAGE_ROOT

# Messages go to stderr so scripts can print results (paths, ids) on stdout.
log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
die() { log "error: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
require_root() { [[ "$(id -u)" -eq 0 ]] || die "must run as root"; }

# The runtimes and tools nexcage's tests drive; setup.sh installs them.
NEXCAGE_RUNC=/usr/sbin/runc
NEXCAGE_CRUN=/usr/bin/crun
# Shared busybox rootfs and the podman image imported from it.
NEXCAGE_ROOTFS="$NEXCAGE_ROOT/bundles/rootfs"
NEXCAGE_IMAGE=localhost/nexcage-busybox:latest
# A guest kernel for VMs: vmlinuz, its modules, and the version (hack/vm/get-kernel.sh).
NEXCAGE_VM_KERNEL="$NEXCAGE_ROOT/bundles/vm-kernel"
export NEXCAGE_RUNC NEXCAGE_CRUN NEXCAGE_ROOTFS NEXCAGE_IMAGE NEXCAGE_VM_KERNEL
