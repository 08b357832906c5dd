#!/usr/bin/env bash
# Makes an isolated stand-in Proxmox node under DIR, to try nexcage without Proxmox:
# DIR/pct, DIR/pvesh, DIR/qm (the stand-ins, pointed at DIR/node) and DIR/config.json
# with backends crun (the default), runc, lxc, pve (pct) and vm (qm, TCG unless KVM
# works here), each selectable with the annotation org.nexcage.backend=<name>.
#   hack/pve/node.sh /tmp/pve
#   nexcage --config /tmp/pve/config.json run --bundle B id   (annotate B for pve/vm)
# Needs what hack/setup.sh installs (lxc, QEMU, the guest kernel, virtiofsd).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
dir="${1:?usage: node.sh DIR}"
# pmxcfs always has the node's config directories (/etc/pve/lxc, /etc/pve/qemu-server).
mkdir -p "$dir/node/etc/pve/lxc" "$dir/node/etc/pve/qemu-server"
dir="$(cd "$dir" && pwd)"
# Unprivileged containers (uid 100000+) must be able to reach their rootfs.
chmod 0755 "$dir"
for tool in pct pvesh qm; do
    cat >"$dir/$tool" <<SCRIPT
#!/bin/sh
export PVE_STANDIN_ROOT='$dir/node' PVE_STANDIN_NODE=standin
exec '$NEXCAGE_ROOT/hack/pve/$tool' "\$@"
SCRIPT
    chmod 0755 "$dir/$tool"
done
virtiofsd=/usr/libexec/virtiofsd
[[ -x "$virtiofsd" ]] || virtiofsd="$(command -v virtiofsd || true)"
[[ -n "$virtiofsd" ]] || die "no virtiofsd (hack/setup.sh builds one)"
[[ -f "$NEXCAGE_VM_KERNEL/vmlinuz" ]] || die "no guest kernel in $NEXCAGE_VM_KERNEL (hack/setup.sh)"
jq -n --arg dir "$dir" --arg crun "$NEXCAGE_CRUN" --arg runc "$NEXCAGE_RUNC" \
    --arg kernel "$NEXCAGE_VM_KERNEL" --arg virtiofsd "$virtiofsd" '{
    default: "crun",
    backends: {
        crun: {type: "oci", path: $crun},
        runc: {type: "oci", path: $runc},
        lxc: {type: "lxc"},
        pve: {type: "pct", pct: ($dir + "/pct"), pvesh: ($dir + "/pvesh"),
              config_dir: ($dir + "/node/etc/pve/lxc"), lock_dir: ($dir + "/node/run/lock/lxc")},
        vm: {type: "qm", qm: ($dir + "/qm"), pvesh: ($dir + "/pvesh"), kvm: false,
             kernel: $kernel, virtiofsd: $virtiofsd}
    },
    annotation_backends: ["crun", "runc", "lxc", "pve", "vm"]
}' >"$dir/config.json"
echo "$dir/config.json"
