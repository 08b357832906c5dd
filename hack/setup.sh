#!/usr/bin/env bash
# Prepare a Debian 12 machine (root, no systemd, cgroup v1 hybrid) for nexcage's
# tests: packages, cgroup and podman fixes, busybox rootfs and podman image.
# Idempotent and quick when everything is already in place.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root

# 1. Packages; apt only runs when a tool is missing.
packages=(runc crun podman containerd lxc busybox-static hyperfine jq criu protobuf-compiler python3 zstd uidmap procps curl iproute2 libseccomp-dev docker.io iptables man-db)
tools=("$NEXCAGE_RUNC" "$NEXCAGE_CRUN" podman containerd ctr lxc-start hyperfine jq criu protoc python3 zstd newuidmap ps curl ss ip dockerd iptables man)
missing=0
for t in "${tools[@]}"; do have "$t" || missing=1; done
# Debian's dynamic "busybox" package also provides /bin/busybox; we need the static one.
dpkg-query -W -f '${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing=1
# libseccomp.a: nexcage links libseccomp statically.
[[ -f /usr/lib/x86_64-linux-gnu/libseccomp.a ]] || missing=1
if (( missing )); then
    log "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${packages[@]}" >/dev/null
fi

# 2. crun rejects a hybrid cgroup setup while the cgroup2 mount holds hugetlb;
#    mounting a v1 hugetlb hierarchy moves the controller out of cgroup2.
if [[ -d /sys/fs/cgroup/unified ]] && ! mountpoint -q /sys/fs/cgroup/hugetlb; then
    log "mounting cgroup v1 hugetlb"
    mkdir -p /sys/fs/cgroup/hugetlb
    mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb
fi

# Unprivileged LXC containers (the Proxmox stand-in, hack/pve) map root to
# 100000+: newuidmap refuses unless root owns that range.
for f in /etc/subuid /etc/subgid; do
    grep -qx 'root:100000:65536' "$f" 2>/dev/null || echo 'root:100000:65536' >>"$f"
done

# 3. podman drop-in: rlimits that fit this sandbox, cgroupfs, nexcage runtime.
dropin=/etc/containers/containers.conf.d/50-nexcage.conf
if ! cmp -s "$NEXCAGE_ROOT/hack/podman/50-nexcage.conf" "$dropin"; then
    log "installing $dropin"
    install -D -m 0644 "$NEXCAGE_ROOT/hack/podman/50-nexcage.conf" "$dropin"
fi

# 4. Shared read-only busybox rootfs used by bundles/busybox/config.json.
"$NEXCAGE_ROOT/bundles/make-rootfs.sh" "$NEXCAGE_ROOTFS"

# 5. podman image of that rootfs, labelled with the rootfs stamp so a rebuilt
#    rootfs (new busybox or recipe) is re-imported.
stamp="$(cat "$NEXCAGE_ROOTFS/.nexcage-rootfs")"
old="$(podman image inspect --format '{{.Id}} {{index .Labels "org.nexcage.rootfs"}}' \
    "$NEXCAGE_IMAGE" 2>/dev/null || true)"
if [[ "${old#* }" != "$stamp" ]]; then
    log "importing $NEXCAGE_IMAGE"
    tar -C "$NEXCAGE_ROOTFS" -c . | podman import --quiet \
        --change 'CMD=["/bin/sh"]' --change "LABEL=org.nexcage.rootfs=$stamp" \
        - "$NEXCAGE_IMAGE" >/dev/null
    # Drop the outdated image, unless a container still uses it.
    if [[ -n "$old" ]]; then podman rmi "${old%% *}" >/dev/null 2>&1 || true; fi
fi
# 6. VMs (the qm backend and its stand-in): QEMU matching the image's qemu-utils
#    (Debian 12's own qemu-system-x86 conflicts with it: bookworm-backports has the
#    same version), kmod and cpio to build the guest's initramfs, and a guest kernel.
#    PVE ships none and this machine's kernel is not a file here: Debian's cloud
#    kernel (LZ4, virtio built as modules), unpacked into bundles/vm-kernel.
if ! have qemu-system-x86_64 || ! have depmod || ! have cpio; then
    backports=/etc/apt/sources.list.d/nexcage-backports.list
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports"
        echo 'deb http://deb.debian.org/debian bookworm-backports main' >"$backports"
    fi
    log "installing qemu-system-x86 (bookworm-backports), kmod, cpio"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
    apt-get install -y -qq kmod cpio >/dev/null
fi
"$NEXCAGE_ROOT/hack/vm/get-kernel.sh" "$NEXCAGE_VM_KERNEL"
# virtiofsd shares a rootfs into a VM in place (PVE ships /usr/libexec/virtiofsd; Debian
# 12 has none): built from crates.io, about a minute.
if ! have virtiofsd && [[ ! -x /usr/libexec/virtiofsd ]]; then
    log "building virtiofsd (cargo install)"
    dpkg-query -W -f '${Status}' libcap-ng-dev 2>/dev/null | grep -q 'ok installed' ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcap-ng-dev >/dev/null
    target="$(mktemp -d)"
    CARGO_TARGET_DIR="$target" cargo install --quiet --locked --root /usr/local virtiofsd
    rm -rf "$target"
fi
log "setup done"
