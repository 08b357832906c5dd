#!/usr/bin/env bash
# Copy localhost/nexcage-busybox:latest from podman into a containerd namespace
# (no registry is reachable). For the CRI namespace k8s.io it also creates
# localhost/nexcage-pause:latest, the sandbox image named in config-cri.toml.
# Usage: hack/containerd/import-images.sh SOCK [NAMESPACE]   (default: default)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 SOCK [NAMESPACE]"
sock="$1"
ns="${2:-default}"
podman image exists "$NEXCAGE_IMAGE" || die "$NEXCAGE_IMAGE missing; run hack/setup.sh"

# oci-archive keeps the full reference, so ctr names it localhost/nexcage-busybox:latest.
podman save --quiet --format oci-archive "$NEXCAGE_IMAGE" |
    ctr --address "$sock" --namespace "$ns" images import - >/dev/null

if [[ "$ns" == k8s.io ]]; then
    # A pod sandbox must keep running; the busybox image's CMD is sh, which exits.
    # The podman image gets a per-run name so concurrent runs don't collide.
    c=(ctr --address "$sock" --namespace "$ns")
    tmp="localhost/nexcage-pause:tmp-$$-$RANDOM"
    tar -C "$NEXCAGE_ROOTFS" -c . |
        podman import --quiet --change 'CMD=["/bin/sleep","infinity"]' - "$tmp" >/dev/null
    podman save --quiet --format oci-archive "$tmp" | "${c[@]}" images import - >/dev/null
    podman rmi "$tmp" >/dev/null   # only containerd needs it
    "${c[@]}" images tag --force "$tmp" localhost/nexcage-pause:latest >/dev/null
    "${c[@]}" images rm "$tmp" >/dev/null
fi
