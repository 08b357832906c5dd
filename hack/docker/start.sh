#!/usr/bin/env bash
# Start a private dockerd (never the system one) whose data, exec root, socket,
# logs and containerd live in DIR, with its own bridge and cgroup parent.
# Usage: hack/docker/start.sh DIR [NAME=CONFIG ...]
#   Registers runtime "nexcage" (/usr/local/bin/nexcage, or $NEXCAGE_BIN, no
#   args: nexcage's default backend) and, per NAME=CONFIG, a runtime NAME that
#   runs nexcage with `--config CONFIG`. Running it again on a live DIR adds the
#   new runtimes (dockerd reloads them on SIGHUP); it never removes one.
#   Imports the image nexcage-busybox:latest (hack/docker/import-image.sh).
# Prints the docker socket path; use it as `docker -H unix://SOCK ...`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$NEXCAGE_ROOT/hack/docker/common.sh"

[[ $# -ge 1 ]] || die "usage: $0 DIR [NAME=CONFIG ...]"
require_root
[[ -x "$DOCKERD" && -x "$DOCKER" ]] || die "docker.io missing ($DOCKERD, $DOCKER)"
have jq || die "jq missing; run hack/setup.sh"
have iptables || die "iptables missing"
nexcage="${NEXCAGE_BIN:-/usr/local/bin/nexcage}"
[[ -x "$nexcage" ]] || die "$nexcage is not executable"
mkdir -p -- "$1"
dir="$(cd -- "$1" && pwd -P)"
shift
# dockerd wraps runtimes that have runtimeArgs in `#!/bin/sh\nPATH ARGS $@`
# (unquoted), and bundle paths under DIR reach that script: no whitespace.
[[ "$dir" != *[[:space:]]* ]] || die "DIR must not contain whitespace: $dir"
sock="$dir/docker.sock"
# sun_path holds 107 bytes; containerd's socket in DIR/containerd is the longest.
(( ${#dir} + 33 <= 107 )) || die "DIR too long for unix sockets: $dir"
name="$(docker_name "$dir")"

# Runtimes: the previous ones (a restart or a second call keeps them) plus the arguments.
runtimes="$dir/runtimes.json"
[[ -f "$runtimes" ]] || jq -n --arg p "$nexcage" '{nexcage: {path: $p}}' >"$runtimes"
for arg in "$@"; do
    [[ "$arg" == ?*=?* ]] || die "expected NAME=CONFIG, got: $arg"
    rt="${arg%%=*}"
    cfg="${arg#*=}"
    [[ "$rt" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad runtime name: $rt"
    [[ "$rt" != runc && "$rt" != nexcage ]] || die "runtime name $rt is reserved"
    [[ -f "$cfg" ]] || die "no such config: $cfg"
    cfg="$(realpath -- "$cfg")"
    [[ "$cfg" != *[[:space:]]* ]] || die "config path must not contain whitespace: $cfg"
    jq --arg n "$rt" --arg p "$nexcage" --arg c "$cfg" \
        '.[$n] = {path: $p, runtimeArgs: ["--config", $c]}' "$runtimes" >"$runtimes.tmp"
    mv -f -- "$runtimes.tmp" "$runtimes"
done
# deprecated-key-path: dockerd 20.10 otherwise writes its trust key to
# /etc/docker/key.json (it has no command-line flag for this).
jq --arg k "$dir/key.json" '{"deprecated-key-path": $k, runtimes: .}' "$runtimes" >"$dir/daemon.json.tmp"

alive() { "$DOCKER" -H "unix://$sock" info >/dev/null 2>&1; }
if [[ -S "$sock" ]] && alive; then
    # Already running: starting twice is harmless; new runtimes are reloaded.
    if ! cmp -s "$dir/daemon.json.tmp" "$dir/daemon.json"; then
        mv -f -- "$dir/daemon.json.tmp" "$dir/daemon.json"
        kill -HUP "$(cat "$dir/docker.pid")"
        for _ in $(seq 50); do
            "$DOCKER" -H "unix://$sock" info --format '{{json .Runtimes}}' 2>/dev/null |
                jq -e --slurpfile want "$runtimes" '($want[0] | keys) - keys == []' >/dev/null && break
            sleep 0.1
        done
    fi
    rm -f -- "$dir/daemon.json.tmp"
    "$NEXCAGE_ROOT/hack/docker/import-image.sh" "$sock"
    printf '%s\n' "$sock"
    exit 0
fi
mv -f -- "$dir/daemon.json.tmp" "$dir/daemon.json"

csock="$("$NEXCAGE_ROOT/hack/containerd/start.sh" "$dir/containerd")"

docker_lock
# First private dockerd on the host: note what dockerd will change (it turns on
# ip_forward and then sets the FORWARD policy to DROP) for the last stop.sh.
# (dockerd calls whichever `iptables` is on PATH; here that is iptables-nft.)
if [[ ! -f "$DOCKER_HOST_RECORD" ]] && ! docker_chains_exist; then
    {
        printf 'ip_forward=%s\n' "$(cat /proc/sys/net/ipv4/ip_forward)"
        for f in /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables; do
            if [[ -f "$f" ]]; then printf '%s=%s\n' "${f##*/}" "$(cat "$f")" | tr - _; fi
        done
        printf 'forward_policy=%s\n' "$(iptables -w -S FORWARD | awk '$1 == "-P" {print $3; exit}')"
        # iptables-nft creates the nft tables "ip filter" and "ip nat" on first use.
        if have nft; then
            printf 'nft_tables=%q\n' " $(nft list tables 2>/dev/null | awk '{printf "%s/%s ", $2, $3}')"
        fi
        printf 'run_containerd=%s\n' "$([[ -e /run/containerd ]] && echo yes || echo no)"
    } >"$DOCKER_HOST_RECORD.tmp"
    mv -f -- "$DOCKER_HOST_RECORD.tmp" "$DOCKER_HOST_RECORD"
fi

# The bridge: dockerd 20.10 rejects --bip together with --bridge, and only
# creates a bridge itself when it is named docker0, so we make it. Its address
# (a free /24 in 10.213.0.0/16) becomes the default network's subnet.
ip2int() { local IFS=.; read -r a b c d <<<"$1"; echo $(( (a << 24) | (b << 16) | (c << 8) | d )); }
subnet_free() {  # $1 = a.b.c.0 of a /24: no route or address overlaps it
    local lo hi prefix net len n mask
    lo=$(ip2int "$1"); hi=$(( lo + 255 ))
    while read -r prefix; do
        [[ "$prefix" == default ]] && continue
        net="${prefix%/*}"; len="${prefix#*/}"; [[ "$prefix" == */* ]] || len=32
        [[ "$net" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
        n=$(ip2int "$net"); mask=$(( len == 0 ? 0 : (0xffffffff << (32 - len)) & 0xffffffff ))
        (( (n & mask) <= hi && ((n & mask) | (~mask & 0xffffffff)) >= lo )) && return 1
    done < <({ ip -4 route show table all | awk '{print ($1 ~ /^(local|broadcast|unicast|anycast|multicast|blackhole|unreachable|prohibit|throw|nat)$/) ? $2 : $1}'
               ip -4 -o addr show | awk '{print $4}'; })
    return 0
}
if [[ -f "$dir/bridge.env" ]]; then
    # shellcheck source=/dev/null
    source "$dir/bridge.env"   # bridge= subnet= gateway=
else
    # No record but a bridge of this name: left by an earlier run on this DIR.
    if ip link show "$name" >/dev/null 2>&1; then ip link del "$name"; fi
    start=$(( 16#$(printf '%s' "$dir" | sha256sum | cut -c1-2) ))
    subnet=
    for ((i = 0; i < 256; i++)); do
        third=$(( (start + i) % 256 ))
        if subnet_free "10.213.$third.0"; then
            subnet="10.213.$third.0/24"; gateway="10.213.$third.1"
            break
        fi
    done
    [[ -n "$subnet" ]] || die "no free /24 in 10.213.0.0/16"
    bridge="$name"
    printf 'bridge=%s\nsubnet=%s\ngateway=%s\n' "$bridge" "$subnet" "$gateway" >"$dir/bridge.env"
fi
if ! ip link show "$bridge" >/dev/null 2>&1; then
    ip link add name "$bridge" type bridge
fi
ip -4 addr show dev "$bridge" | grep -qF " $gateway/24 " ||
    ip addr add "$gateway/24" dev "$bridge"
ip link set "$bridge" up

# setsid: the daemon must outlive the caller's process group; its fds must not
# hold the caller's pipes (or our lock) open.
rm -f -- "$dir/docker.pid"
setsid env PATH="$DOCKERD_PATH" "$DOCKERD" \
    --config-file "$dir/daemon.json" \
    --containerd "$csock" \
    --data-root "$dir/data" \
    --exec-root "$dir/exec" \
    --pidfile "$dir/docker.pid" \
    -H "unix://$sock" \
    --bridge "$bridge" \
    --cgroup-parent "/$name" \
    --log-level info \
    </dev/null >>"$dir/dockerd.log" 2>&1 {DOCKER_LOCK_FD}<&- &
pid=$!

for _ in $(seq 300); do
    if alive; then
        docker_unlock
        "$NEXCAGE_ROOT/hack/docker/import-image.sh" "$sock"
        printf '%s\n' "$sock"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
tail -n 20 "$dir/dockerd.log" >&2 || true
kill "$pid" 2>/dev/null || true
die "dockerd did not come up (log: $dir/dockerd.log); clean up with hack/docker/stop.sh $dir"
