#!/usr/bin/env bash
# Stop a dockerd started by hack/docker/start.sh DIR and undo everything it did:
# remove its containers and networks, stop dockerd and its containerd (and
# shims), delete its bridge, iptables rules and cgroups, unmount what is left
# under DIR and remove DIR. The last private dockerd to stop also removes
# dockerd's shared iptables chains and restores ip_forward and the FORWARD policy.
# Usage: hack/docker/stop.sh DIR
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=../lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$NEXCAGE_ROOT/hack/docker/common.sh"

[[ $# -eq 1 ]] || die "usage: $0 DIR"
require_root
[[ -d "$1" ]] || exit 0
dir="$(cd -- "$1" && pwd -P)"
sock="$dir/docker.sock"
name="$(docker_name "$dir")"
docker=("$DOCKER" -H "unix://$sock")

alive() { "${docker[@]}" info >/dev/null 2>&1; }
# Containers and networks outlive a crashed dockerd (shims, bridges, rules).
# Restart it: it then cleans up its own state and we can remove the rest.
if ! alive && [[ -f "$dir/daemon.json" && -f "$dir/bridge.env" ]]; then
    "$NEXCAGE_ROOT/hack/docker/start.sh" "$dir" >/dev/null 2>&1 ||
        log "could not restart dockerd in $dir; cleaning up by hand"
fi
if alive; then
    mapfile -t ids < <("${docker[@]}" ps -aq)
    if ((${#ids[@]})); then
        "${docker[@]}" rm -f --volumes "${ids[@]}" >/dev/null || log "docker rm -f failed"
    fi
    "${docker[@]}" network prune -f >/dev/null || true   # user-defined networks: bridges, rules
fi

# Only signal the pid if it is still our dockerd (pids get reused).
if [[ -f "$dir/docker.pid" ]]; then
    pid="$(cat "$dir/docker.pid")"
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]; then
        kill -TERM "$pid"
        for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    fi
fi

# Stragglers of this instance (docker-proxy after a SIGKILLed dockerd, a
# runtime left mid-command): known programs whose argv names a path in DIR.
subnet=
if [[ -f "$dir/bridge.env" ]]; then
    # shellcheck source=/dev/null
    source "$dir/bridge.env"   # bridge= subnet= gateway=
fi
for p in /proc/[0-9]*; do
    case "$(cat "$p/comm" 2>/dev/null)" in
        dockerd | docker-proxy | containerd* | nexcage | runc | crun) ;;
        *) continue ;;
    esac
    args="$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null)" || continue
    if [[ "$args" == *"$dir/"* || ( -n "$subnet" && "$args" == *docker-proxy*"-container-ip ${subnet%.0/24}."* ) ]]; then
        [[ "$args" == *containerd-shim* ]] && continue   # containerd's stop.sh handles shims
        kill -KILL "${p#/proc/}" 2>/dev/null || true
    fi
done

"$NEXCAGE_ROOT/hack/containerd/stop.sh" "$dir/containerd"

docker_lock
bridge="$name"
subnet=
if [[ -f "$dir/bridge.env" ]]; then
    # shellcheck source=/dev/null
    source "$dir/bridge.env"
fi
# Rules naming our bridge or our subnet (dockerd leaves the default bridge's
# rules in place when it stops, and re-creates them when it starts).
net="${subnet%.0/24}."
ours() {
    [[ " $1 " == *" $bridge "* ]] && return 0
    [[ -n "$subnet" && "$1" == *" $net"* ]]   # -s/-d NET.x/.., --to-destination NET.x:..
}
for table in nat filter; do
    while read -r -a rule; do
        [[ "${rule[0]:-}" == -A ]] || continue
        ours "${rule[*]}" || continue
        iptables -w -t "$table" -D "${rule[@]:1}" 2>/dev/null || true
    done < <(iptables -w -t "$table" -S 2>/dev/null)
done
ip link del "$bridge" 2>/dev/null || true

# The last one out: with no dockerd left and nothing but bare RETURNs in
# dockerd's chains, remove the chains and the jumps to them, and put back what
# the first private dockerd found.
chain_rules() {  # rules in dockerd's chains other than a bare RETURN
    iptables -w -t nat -S 2>/dev/null | awk '$1 == "-A" && $2 == "DOCKER" && !($3 == "-j" && $4 == "RETURN" && NF == 4)'
    iptables -w -t filter -S 2>/dev/null |
        awk '$1 == "-A" && $2 ~ /^DOCKER(-|$)/ && !($3 == "-j" && $4 == "RETURN" && NF == 4)'
}
other_dockerd=no
for p in /proc/[0-9]*; do
    [[ "$(cat "$p/comm" 2>/dev/null)" == dockerd ]] && other_dockerd=yes && break
done
if [[ "$other_dockerd" == no && -z "$(chain_rules)" ]]; then
    for table in nat filter; do
        while read -r -a rule; do
            [[ "${rule[0]:-}" == -A && "${rule[*]}" =~ -j\ DOCKER(-[A-Z0-9-]+)?$ ]] || continue
            [[ "${rule[1]}" == DOCKER* ]] && continue   # inside the chains: go with them
            iptables -w -t "$table" -D "${rule[@]:1}" 2>/dev/null || true
        done < <(iptables -w -t "$table" -S 2>/dev/null)
        while read -r chain; do
            iptables -w -t "$table" -F "$chain" 2>/dev/null || true
        done < <(iptables -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER(-|$)/ {print $2}')
        while read -r chain; do
            iptables -w -t "$table" -X "$chain" 2>/dev/null || true
        done < <(iptables -w -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER(-|$)/ {print $2}')
    done
    if [[ -f "$DOCKER_HOST_RECORD" ]]; then
        ip_forward= bridge_nf_call_iptables= bridge_nf_call_ip6tables= forward_policy=
        nft_tables= run_containerd=
        # shellcheck source=/dev/null
        source "$DOCKER_HOST_RECORD"
        if [[ -n "$ip_forward" ]]; then echo "$ip_forward" >/proc/sys/net/ipv4/ip_forward; fi
        if [[ -n "$bridge_nf_call_iptables" ]]; then
            echo "$bridge_nf_call_iptables" >/proc/sys/net/bridge/bridge-nf-call-iptables
        fi
        if [[ -n "$bridge_nf_call_ip6tables" ]]; then
            echo "$bridge_nf_call_ip6tables" >/proc/sys/net/bridge/bridge-nf-call-ip6tables
        fi
        if [[ -n "$forward_policy" ]]; then iptables -w -P FORWARD "$forward_policy"; fi
        # nft tables that iptables-nft created for dockerd, if they hold nothing now.
        if [[ -n "$nft_tables" ]] && have nft; then
            for t in filter nat; do
                [[ "$nft_tables " == *" ip/$t "* ]] && continue
                nft list table ip "$t" >/dev/null 2>&1 || continue
                if ! nft list table ip "$t" |
                    grep -vE '^[[:space:]]*(table ip|chain [A-Z]+ \{|type .* policy accept;|\}|$)' | grep -q .; then
                    nft delete table ip "$t"
                fi
            done
        fi
        # containerd's shims make /run/containerd/s, shared by all containerds.
        if [[ "$run_containerd" == no ]] && ! pgrep '^containerd' >/dev/null; then
            rmdir /run/containerd/s /run/containerd 2>/dev/null || true
        fi
        rm -f -- "$DOCKER_HOST_RECORD"
    fi
    # dockerd's plugin discovery directory is always /run/docker/plugins.
    rmdir /run/docker/plugins /run/docker 2>/dev/null || true
fi
docker_unlock

# Cgroups: dockerd puts containers under /<name>/<id> (--cgroup-parent).
for root in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [[ -d "$root$name" ]] || continue
    find "$root$name" -depth -type d -exec rmdir {} + 2>/dev/null ||
        log "cgroup $root$name still in use"
done

# Unmount deepest first: the data root is bind-mounted on itself, container
# rootfs (overlay) under DIR/data, network namespaces under DIR/exec/netns.
while read -r mnt; do
    umount -- "$mnt" 2>/dev/null || umount -l -- "$mnt" || true
done < <(findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | sort -r)
if findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0, d) == 1' | grep -q .; then
    die "mounts left under $dir; not removing it"
fi
rm -rf --one-file-system -- "$dir"
