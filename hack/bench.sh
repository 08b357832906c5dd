#!/usr/bin/env bash
# nexcage's performance benchmark (the numbers the README cites), measured side by
# side in one run: `run` of a /bin/true bundle through nexcage vs crun and runc
# directly, `podman run --rm` with nexcage vs crun, nexcage's own peak RSS, and the
# Proxmox backend (pct) against the stand-in in hack/pve: first vs later container
# small vs large rootfs (used in place).
# Prints the machine facts and markdown tables on stdout; progress goes to stderr.
# The timing and RSS work is in hack/bench.py.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: hack/bench.sh [--runs N] [--podman-runs N] [--pct-runs N] [--lxc-runs N] [--quick]
  --runs N         rounds of the run comparison (default 100)
  --podman-runs N  rounds of the podman comparison (default: same as --runs; 0 skips it)
  --pct-runs N     rounds of the Proxmox-backend (pct stand-in) section (default 10; 0 skips it)
  --lxc-runs N     rounds of the plain-LXC backend comparison (default 30; 0 skips it)
  --quick          smoke run: 10 rounds of each, 3 of the pct section
EOF
}

runs=100
podman_runs=""
pct_runs=10
lxc_runs=30
while (( $# > 0 )); do
    case "$1" in
        --runs) [[ $# -ge 2 ]] || die "--runs needs a value"; runs="$2"; shift 2 ;;
        --podman-runs) [[ $# -ge 2 ]] || die "--podman-runs needs a value"; podman_runs="$2"; shift 2 ;;
        --pct-runs) [[ $# -ge 2 ]] || die "--pct-runs needs a value"; pct_runs="$2"; shift 2 ;;
        --lxc-runs) [[ $# -ge 2 ]] || die "--lxc-runs needs a value"; lxc_runs="$2"; shift 2 ;;
        --quick) runs=10; podman_runs=10; pct_runs=3; lxc_runs=10; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
podman_runs="${podman_runs:-$runs}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got $runs"
[[ "$podman_runs" =~ ^[0-9]+$ ]] || die "--podman-runs must be an integer, got $podman_runs"
[[ "$pct_runs" =~ ^[0-9]+$ ]] || die "--pct-runs must be an integer, got $pct_runs"
[[ "$lxc_runs" =~ ^[0-9]+$ ]] || die "--lxc-runs must be an integer, got $lxc_runs"

require_root
cd "$NEXCAGE_ROOT"
have python3 || die "python3 is needed for hack/bench.py (apt-get install python3)"
bash hack/setup.sh

# Always ask cargo: it is a no-op when the binary is fresh, and a stale binary
# would be measured otherwise.
log "building the release binary"
cargo build --release --locked --quiet
nexcage="$NEXCAGE_ROOT/target/x86_64-unknown-linux-gnu/release/nexcage"
[[ -x "$nexcage" ]] || die "$nexcage missing after the build"

# Container ids and podman's label carry this tag, so leftovers can be told apart.
tag="b$$"
# Under /run, where crun, runc and nexcage keep their state by default: file
# creation cost there (tmpfs on most machines) is part of what is measured.
work="$(mktemp -d /run/nexcage-bench.XXXXXX)"
# The pct section's isolated Proxmox "node" (set below when it runs).
pct_dir=""
cleanup() {
    # Containers a failed run may have left in our private roots (and only those).
    local id
    while IFS= read -r id; do
        "$nexcage" --root "$work/nexcage" delete --force "$id" >/dev/null 2>&1 || true
    done < <("$nexcage" --root "$work/nexcage" list --quiet 2>/dev/null || true)
    while IFS= read -r id; do
        "$nexcage" --root "$work/rss" delete --force "$id" >/dev/null 2>&1 || true
    done < <("$nexcage" --root "$work/rss" list --quiet 2>/dev/null || true)
    while IFS= read -r id; do
        "$NEXCAGE_CRUN" --root "$work/crun" delete --force "$id" >/dev/null 2>&1 || true
    done < <("$NEXCAGE_CRUN" --root "$work/crun" list --quiet 2>/dev/null || true)
    while IFS= read -r id; do
        "$NEXCAGE_RUNC" --root "$work/runc" delete --force "$id" >/dev/null 2>&1 || true
    done < <("$NEXCAGE_RUNC" --root "$work/runc" list --quiet 2>/dev/null || true)
    if [[ -n "$pct_dir" ]]; then cleanup_pct; fi
    rm -rf -- "$work"
}
# As tests/pct.rs's fixture does it: our containers through nexcage, then whatever
# the stand-in still runs directly with LXC, then the (empty) cgroups under our
# prefix, then the node and the rootfs copies.
cleanup_pct() {
    local id name cg dir
    while IFS= read -r id; do
        "$nexcage" --root "$pct_root" --config "$pct_config" delete --force "$id" >/dev/null 2>&1 || true
    done < <("$nexcage" --root "$pct_root" --config "$pct_config" list --quiet 2>/dev/null || true)
    while IFS= read -r name; do
        lxc-stop -P "$pct_lxc" -n "$name" --kill >/dev/null 2>&1 || true
    done < <(lxc-ls -P "$pct_lxc" --running -1 2>/dev/null || true)
    for cg in /sys/fs/cgroup/*/"$pct_cgroup" /sys/fs/cgroup/"$pct_cgroup"; do
        [[ -d "$cg" ]] || continue
        # Deepest first; a cgroup whose last process is still exiting gets 5 s.
        while IFS= read -r dir; do
            for _ in {1..100}; do
                rmdir -- "$dir" 2>/dev/null && break
                sleep 0.05
            done
        done < <(find "$cg" -depth -type d 2>/dev/null || true)
    done
    rm -rf -- "$pct_dir"
}
trap cleanup EXIT

# The bundle: the example spec running /bin/true on the shared rootfs (absolute,
# since the bundle lives elsewhere). Every variant runs this same bundle.
mkdir "$work/bundle"
jq --arg rootfs "$NEXCAGE_ROOTFS" '.process.args = ["/bin/true"] | .root.path = $rootfs' \
    bundles/busybox/config.json >"$work/bundle/config.json"
# Explicit one-backend configs: routing must not depend on /etc/nexcage/config.json.
declare -A delegate_path=([crun]="$NEXCAGE_CRUN" [runc]="$NEXCAGE_RUNC")
for backend in crun runc; do
    jq -nc --arg name "$backend" --arg path "${delegate_path[$backend]}" \
        '{default: $name, backends: {($name): {type: "oci", path: $path}}}' >"$work/$backend.json"
done

jq -nc '{default: "lxc", backends: {lxc: {type: "lxc"}}}' >"$work/lxc.json"

# Check the routing the numbers depend on before spending minutes on them.
for backend in crun runc lxc; do
    route="$("$nexcage" --config "$work/$backend.json" route --bundle "$work/bundle" check)"
    [[ "$route" == "$backend "* ]] || die "$work/$backend.json routes to $route"
done

# The pct section: an isolated Proxmox "node" for the stand-in (hack/pve), made as
# tests/pct.rs's `Pve` fixture makes it: its own dirs, a cgroup prefix of its own,
# pct/pvesh wrappers exporting PVE_STANDIN_*, and a config whose only backend is
# of type pct. On disk (/var/tmp; /tmp and /run may be tmpfs): the rootfs copies
# are hundreds of MiB.
pct_sizes=(50 500)
pct_args=()
if (( pct_runs > 0 )); then
    have lxc-start || die "lxc is needed for the pct section (hack/setup.sh installs it)"
    dir="$(mktemp -d /var/tmp/nexcage-pct-bench.XXXXXX)"
    pct_node="$dir/node"
    pct_lxc="$pct_node/var/lib/lxc"
    pct_cgroup="nexcage-pct-bench-$(basename "$dir")"
    pct_config="$dir/pct.json"
    pct_root="$work/nexcage-pct"
    pct_dir="$dir"  # from here on, cleanup_pct has all it needs
    chmod 0755 "$pct_dir"
    # Peak: the rootfs copies, slack.
    sum=0
    for mib in "${pct_sizes[@]}"; do (( sum += mib )); done
    need=$(( sum + 512 ))
    avail="$(df --output=avail -B1M "$pct_dir" | tail -n 1 | tr -d ' ')"
    (( avail >= need )) ||
        die "the pct section needs ${need} MiB free in /var/tmp, has ${avail} (--pct-runs 0 skips it)"
    wrapper='#!/bin/sh\nexport PVE_STANDIN_ROOT=%q PVE_STANDIN_NODE=benchnode'
    wrapper+=' PVE_STANDIN_CGROUP_PREFIX=%q\nexec %q "$@"\n'
    for tool in pct pvesh qm; do
        # shellcheck disable=SC2059 # the format is ours
        printf "$wrapper" "$pct_node" "$pct_cgroup/" "$NEXCAGE_ROOT/hack/pve/$tool" >"$pct_dir/$tool"
        chmod 0755 "$pct_dir/$tool"
    done
    virtiofsd=/usr/libexec/virtiofsd
    [[ -x "$virtiofsd" ]] || virtiofsd="$(command -v virtiofsd)"
    # The qm backend beside it (TCG: this machine's /dev/kvm boots no guest kernel),
    # picked by annotation.
    jq -nc --arg pct "$pct_dir/pct" --arg pvesh "$pct_dir/pvesh" --arg qm "$pct_dir/qm" \
        --arg conf "$pct_node/etc/pve/lxc" --arg lock "$pct_node/run/lock/lxc" \
        --arg kernel "$NEXCAGE_VM_KERNEL" --arg virtiofsd "$virtiofsd" \
        '{default: "pve", backends: {pve: {type: "pct", pct: $pct, pvesh: $pvesh,
          config_dir: $conf, lock_dir: $lock},
          vm: {type: "qm", qm: $qm, pvesh: $pvesh, kvm: false, memory: 256,
               kernel: $kernel, virtiofsd: $virtiofsd}},
          annotation_backends: ["pve", "vm"]}' >"$pct_config"
    # Rootfs copies of ~50 and ~500 MiB: the busybox rootfs plus one file of random
    # (incompressible) data making up the rest, on the node's filesystem.
    rootfs_bytes="$(du -sb "$NEXCAGE_ROOTFS" | cut -f1)"
    for mib in "${pct_sizes[@]}"; do
        log "pct: making a ${mib} MiB rootfs"
        cp -a "$NEXCAGE_ROOTFS" "$pct_dir/rootfs-$mib"
        head -c "$(( mib * 1048576 - rootfs_bytes ))" /dev/urandom \
            >"$pct_dir/rootfs-$mib/bench-random"
        mkdir "$pct_dir/bundle-$mib"
        jq --arg rootfs "$pct_dir/rootfs-$mib" '.process.args = ["/bin/true"] | .root.path = $rootfs' \
            bundles/busybox/config.json >"$pct_dir/bundle-$mib/config.json"
        route="$("$nexcage" --config "$pct_config" route --bundle "$pct_dir/bundle-$mib" check)"
        [[ "$route" == "pve "* ]] || die "$pct_config routes to $route"
        pct_args+=(--pct-bundle "$mib=$pct_dir/bundle-$mib")
    done
    pct_args+=(--pct-config "$pct_config" --pct-root "$pct_root")
fi

printf '## nexcage benchmark\n\n'
commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then commit+="+dirty"; fi
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
cgroups="v1 (hybrid)"
[[ "$(stat -f -c %T /sys/fs/cgroup)" == cgroup2fs ]] && cgroups="v2"
printf -- '- date: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
printf -- '- kernel: %s; cores: %s (%s); memory: %s\n' "$(uname -r)" "$(nproc)" "$cpu" \
    "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
printf -- '- cgroups: %s; state dirs in /run, filesystem %s\n' "$cgroups" "$(stat -f -c %T "$work")"
printf -- '- nexcage: %s (commit %s, release build)\n' "$("$nexcage" --version | head -n 1)" "$commit"
printf -- '- %s; %s; %s\n' "$("$NEXCAGE_CRUN" --version | head -n 1)" \
    "$("$NEXCAGE_RUNC" --version | head -n 1)" "$(podman --version)"
if (( pct_runs > 0 )); then
    printf -- '- pct: the stand-in hack/pve (%s, lxc %s, %s, zstd %s); %s, filesystem %s\n' \
        "$(python3 --version)" "$(lxc-start --version)" "$(tar --version | head -n 1)" \
        "$(zstd --version | sed -n 's/.* v\([0-9.]*\).*/\1/p')" \
        "node, templates, volumes and rootfs copies in /var/tmp" "$(stat -f -c %T "$pct_dir")"
fi
printf -- '- load average before: %s\n\n' "$(cut -d' ' -f1-3 /proc/loadavg)"

# The floor of any exec wrapper: a static C program that only execs crun.
have gcc || die "gcc is needed for the exec-floor wrapper (apt-get install gcc)"
printf '#include <unistd.h>\nint main(int c, char **v) { (void)c; v[0] = "%s"; execv(v[0], v); return 127; }\n' \
    "$NEXCAGE_CRUN" >"$work/floor.c"
gcc -O2 -static -o "$work/floor" "$work/floor.c"

python3 hack/bench.py \
    --nexcage "$nexcage" --crun "$NEXCAGE_CRUN" --runc "$NEXCAGE_RUNC" --floor "$work/floor" \
    --podman "$(command -v podman)" --image "$NEXCAGE_IMAGE" \
    --bundle "$work/bundle" --work "$work" \
    --runs "$runs" --podman-runs "$podman_runs" --tag "$tag" \
    --pct-runs "$pct_runs" ${pct_args[@]+"${pct_args[@]}"} --lxc-runs "$lxc_runs"

# A foreground `run` execs the delegate, so its record stays until the next reader
# clears it: `list` must clear every one, and no runtime may hold a container.
printf '\n### Leftovers\n\n'
records() { find "$work/nexcage/containers" -mindepth 1 -maxdepth 1 | wc -l; }
before="$(records)"
listed="$("$nexcage" --root "$work/nexcage" list --quiet)"
after="$(records)"
held=()
for backend in crun runc; do
    for root in "$work/$backend" "$work/nexcage/backends/$backend"; do
        # A root the runtime never created holds nothing (and makes `list` fail).
        [[ -d "$root" ]] || continue
        mapfile -t ids < <("${delegate_path[$backend]}" --root "$root" list --quiet)
        held+=(${ids[@]+"${ids[@]}"})
    done
done
# The lxc backend: no LXC container defined or running under nexcage's lxcpath.
if [[ -d "$work/nexcage/lxc/lxc" ]]; then
    mapfile -t ids < <(lxc-ls -P "$work/nexcage/lxc/lxc" -1)
    held+=(${ids[@]+"${ids[@]}"})
fi
mapfile -t ids < <(podman ps --all --quiet --filter "label=org.nexcage.bench=$tag")
held+=(${ids[@]+"${ids[@]}"})
printf -- '- nexcage records of finished runs before "nexcage list": %s; listed by it: %s; after: %s\n' \
    "$before" "$(wc -w <<<"$listed")" "$after"
printf -- '- containers still held by crun, runc (direct and under nexcage), LXC or podman: %s\n' "${#held[@]}"
pct_left=()
if (( pct_runs > 0 )); then
    # The pct section's node: no container through nexcage, in Proxmox's view (pct
    # list, configs), in LXC's, in the stand-in's cgroups, and no volume or template
    # in the node's storage (the rootfs is used in place).
    # `wait "$!"` after a `< <(...)`: the listing must have succeeded (set -e).
    pct_records() { find "$pct_root/containers" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l; }
    pct_before="$(pct_records)"
    mapfile -t pct_listed < <("$nexcage" --root "$pct_root" --config "$pct_config" list --quiet)
    wait "$!"
    pct_after="$(pct_records)"
    mapfile -t cts < <("$pct_dir/pct" list)
    wait "$!"
    mapfile -t lxcs < <(lxc-ls -P "$pct_lxc" -1)
    wait "$!"
    mapfile -t confs < <(find "$pct_node/etc/pve/lxc" -mindepth 1 -maxdepth 1 2>/dev/null)
    # The backend's empty archive for `pct create` is its own, not a container's; so
    # are the qm backend's initramfs and socket dir (which must be empty).
    mapfile -t runtime < <(find "$pct_root/backends" -mindepth 2 -maxdepth 2 ! -name empty.tar \
        ! -name 'initramfs-*.cpio' ! -name '@sockets' 2>/dev/null)
    mapfile -t sockets < <(find "$pct_root/backends" -path '*/@sockets/*' 2>/dev/null)
    runtime+=(${sockets[@]+"${sockets[@]}"})
    mapfile -t vms < <("$pct_dir/qm" list)
    wait "$!"
    mapfile -t temps < <(find "$pct_node/var/lib/vz" \( -type f -o -name 'subvol-*' \) 2>/dev/null)
    cgs=()
    for cg in /sys/fs/cgroup/*/"$pct_cgroup" /sys/fs/cgroup/"$pct_cgroup"; do
        if [[ -d "$cg" ]]; then cgs+=("$cg"); fi
    done
    procs=()
    if (( ${#cgs[@]} > 0 )); then
        mapfile -t procs < <(find "${cgs[@]}" -name cgroup.procs -exec cat -- {} + | sort -u)
    fi
    printf -- '- pct: nexcage records of finished runs before "nexcage list": %s; %s: %s; %s: %s\n' \
        "$pct_before" "listed by it" "${#pct_listed[@]}" "after" "$pct_after"
    printf -- '- pct: containers in "pct list": %s; VMs in "qm list": %s; CT configs: %s; LXC containers: %s; ' \
        "${#cts[@]}" "${#vms[@]}" "${#confs[@]}" "${#lxcs[@]}"
    printf -- 'nexcage runtime dirs: %s; volumes or templates in the storage: %s; %s: %s\n' \
        "${#runtime[@]}" "${#temps[@]}" "processes in the stand-in cgroups" "${#procs[@]}"
    pct_left=(${pct_listed[@]+"${pct_listed[@]}"} ${cts[@]+"${cts[@]}"} ${vms[@]+"${vms[@]}"} ${confs[@]+"${confs[@]}"}
        ${lxcs[@]+"${lxcs[@]}"} ${runtime[@]+"${runtime[@]}"} ${temps[@]+"${temps[@]}"}
        ${procs[@]+"${procs[@]}"})
    (( pct_after == 0 )) || pct_left+=("$pct_after records")
fi
if [[ -n "$listed" || "$after" -ne 0 || ${#held[@]} -ne 0 || ${#pct_left[@]} -ne 0 ]]; then
    die "containers left behind: ${listed} ${held[*]} ${pct_left[*]}"
fi
printf -- '- nothing left\n'
