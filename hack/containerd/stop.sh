#!/usr/bin/env bash
# Stop a containerd started by start.sh DIR: kill and delete its tasks and
# containers, stop the daemon and its shims, unmount what it left under DIR.
# DIR itself is kept (containerd.log is useful); remove it afterwards if wanted.
# Usage: hack/containerd/stop.sh DIR
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 DIR"
require_root
[[ -d "$1" ]] || exit 0
dir="$(cd -- "$1" && pwd -P)"
sock="$dir/containerd.sock"
pidfile="$dir/containerd.pid"

alive() { ctr --address "$sock" version >/dev/null 2>&1; }
# Containers outlive containerd (their shims keep them). If the daemon crashed,
# restart it: it reconnects to its shims and can then delete the containers.
if ! alive && [[ -f "$dir/containerd.config" ]]; then
    "$(dirname "${BASH_SOURCE[0]}")/start.sh" "$dir" "$(cat "$dir/containerd.config")" >/dev/null || true
fi
if alive; then
    while read -r ns; do
        c=(ctr --address "$sock" --namespace "$ns")
        while read -r id; do
            "${c[@]}" tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
            "${c[@]}" tasks delete --force "$id" >/dev/null 2>&1 || true
        done < <("${c[@]}" tasks list --quiet 2>/dev/null)
        while read -r id; do
            "${c[@]}" containers delete "$id" >/dev/null 2>&1 || true
        done < <("${c[@]}" containers list --quiet 2>/dev/null)
    done < <(ctr --address "$sock" namespaces list --quiet 2>/dev/null)
fi

if [[ -f "$pidfile" ]]; then
    pid="$(cat "$pidfile")"
    # Only signal the pid if it is still our containerd (pids get reused).
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == containerd ]]; then
        kill -TERM "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
fi
rm -f -- "$pidfile" "$dir/containerd.config"

# Shims left behind (e.g. the daemon crashed) are found by their -address
# flag; their children are the containers' init processes, killed first.
for p in /proc/[0-9]*; do
    mapfile -d '' argv 2>/dev/null <"$p/cmdline" || continue
    [[ "${argv[0]:-}" == *containerd-shim* ]] || continue
    for ((i = 1; i < ${#argv[@]}; i++)); do
        if [[ "${argv[i-1]}" == -address && "${argv[i]}" == "$sock" ]]; then
            pkill -KILL --parent "${p#/proc/}" || true
            kill -KILL "${p#/proc/}" 2>/dev/null || true
        fi
    done
done

# Unmount deepest first: task rootfs mounts live under DIR/state.
while read -r mnt; do
    umount -- "$mnt" 2>/dev/null || umount -l -- "$mnt"
done < <(findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r)
rm -f -- "$sock" "$sock.ttrpc"
