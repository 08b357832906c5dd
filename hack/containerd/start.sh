#!/usr/bin/env bash
# Start a private containerd whose root, state, socket and log live in DIR.
# Usage: hack/containerd/start.sh DIR [CONFIG]
# Prints the grpc socket path; use it as `ctr --address SOCK ...`.
# No systemd here, so tests start (and stop.sh stops) their own daemon.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 DIR [CONFIG]"
require_root
have containerd || die "containerd missing; run hack/setup.sh"
mkdir -p -- "$1"
dir="$(cd -- "$1" && pwd -P)"
config="$(realpath -- "${2:-$NEXCAGE_ROOT/hack/containerd/config.toml}")"
sock="$dir/containerd.sock"
# sun_path holds 107 bytes, and containerd adds ".ttrpc" for its second socket.
(( ${#sock} + 6 <= 107 )) || die "DIR too long for a unix socket: $dir"

if [[ -S "$sock" ]] && ctr --address "$sock" version >/dev/null 2>&1; then
    printf '%s\n' "$sock"   # already running: starting twice is harmless
    exit 0
fi

# setsid: the daemon must outlive the caller's process group; its fds must not
# hold the caller's pipes open, or a test reading our stdout would never see EOF.
setsid containerd --config "$config" --root "$dir/root" --state "$dir/state" \
    --address "$sock" --log-level info </dev/null >>"$dir/containerd.log" 2>&1 &
pid=$!
echo "$pid" >"$dir/containerd.pid"
# stop.sh restarts a crashed daemon with the same config to clean up after it.
printf '%s\n' "$config" >"$dir/containerd.config"

for _ in $(seq 100); do
    if ctr --address "$sock" version >/dev/null 2>&1; then
        printf '%s\n' "$sock"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
tail -n 20 "$dir/containerd.log" >&2 || true
kill "$pid" 2>/dev/null || true
rm -f -- "$dir/containerd.pid" "$dir/containerd.config"
die "containerd did not come up (log: $dir/containerd.log)"
