#!/usr/bin/env bash
# Make the image nexcage-busybox:latest in a dockerd from the shared busybox
# rootfs (nothing can be pulled here). Does nothing if the image exists.
# Usage: hack/docker/import-image.sh SOCK [NAME]   (SOCK: path or unix://path)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$NEXCAGE_ROOT/hack/docker/common.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 SOCK [NAME]"
host="unix://${1#unix://}"
image="${2:-nexcage-busybox:latest}"
"$DOCKER" -H "$host" image inspect "$image" >/dev/null 2>&1 && exit 0
[[ -x "$NEXCAGE_ROOTFS/bin/sh" ]] || die "$NEXCAGE_ROOTFS missing; run hack/setup.sh"
tar -C "$NEXCAGE_ROOTFS" -c . |
    "$DOCKER" -H "$host" import --change 'CMD ["/bin/sh"]' - "$image" >/dev/null
