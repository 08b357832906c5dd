# shellcheck shell=bash
# Shared by hack/docker/start.sh and stop.sh: names, paths and the host-wide lock.
# Sourcing only defines things (after lib.sh).

DOCKER=/usr/bin/docker      # the Debian 20.10 client; /usr/local/bin/docker is newer and mismatched
DOCKERD=/usr/sbin/dockerd
# Engines (and dockerd) may run with a thin PATH; iptables, docker-proxy and
# docker-init are looked up in it.
DOCKERD_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# ip_forward, bridge-nf-call-* and the FORWARD policy as they were before the
# first private dockerd changed them; the last stop.sh restores them and removes it.
DOCKER_HOST_RECORD=/run/nexcage-docker-host.env

# The per-DIR name used for the bridge and the cgroup parent: "nxd" + 8 hex
# digits of DIR's hash (bridge names hold at most 15 bytes).
docker_name() { printf 'nxd%s' "$(printf '%s' "$1" | sha256sum | cut -c1-8)"; }

# Serialises iptables, the host record and bridge setup between concurrent
# start.sh/stop.sh runs. A flock on this script directory: no file is created.
docker_lock() {
    exec {DOCKER_LOCK_FD}<"$NEXCAGE_ROOT/hack/docker"
    flock "$DOCKER_LOCK_FD"
}
docker_unlock() {
    [[ -n "${DOCKER_LOCK_FD:-}" ]] || return 0
    exec {DOCKER_LOCK_FD}<&-
    unset DOCKER_LOCK_FD
}

# True if any of dockerd's shared chains exists (another dockerd is or was here).
docker_chains_exist() {
    iptables -w -t nat -S DOCKER >/dev/null 2>&1 || iptables -w -t filter -S DOCKER >/dev/null 2>&1
}
