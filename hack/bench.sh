#!/usr/bin/env bash
# nexcage's performance benchmark (the numbers the README cites), measured side by
# side in one run: `run` of a /bin/true bundle through nexcage vs crun and runc
# directly, `podman run --rm` with nexcage vs crun, and nexcage's own peak RSS.
# Prints the machine facts and markdown tables on stdout; progress goes to stderr.
# The timing and RSS work is in hack/bench.py.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    cat <<EOF
Usage: hack/bench.sh [--runs N] [--podman-runs N] [--quick]
  --runs N         rounds of the run comparison (default 100)
  --podman-runs N  rounds of the podman comparison (default: same as --runs; 0 skips it)
  --quick          smoke run: 10 rounds of each
EOF
}

runs=100
podman_runs=""
while (( $# > 0 )); do
    case "$1" in
        --runs) [[ $# -ge 2 ]] || die "--runs needs a value"; runs="$2"; shift 2 ;;
        --podman-runs) [[ $# -ge 2 ]] || die "--podman-runs needs a value"; podman_runs="$2"; shift 2 ;;
        --quick) runs=10; podman_runs=10; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
podman_runs="${podman_runs:-$runs}"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a positive integer, got $runs"
[[ "$podman_runs" =~ ^[0-9]+$ ]] || die "--podman-runs must be an integer, got $podman_runs"

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
    rm -rf -- "$work"
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

# Check the routing the numbers depend on before spending minutes on them.
for backend in crun runc; do
    route="$("$nexcage" --config "$work/$backend.json" route --bundle "$work/bundle" check)"
    [[ "$route" == "$backend "* ]] || die "$work/$backend.json routes to $route"
done

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
printf -- '- load average before: %s\n\n' "$(cut -d' ' -f1-3 /proc/loadavg)"

python3 hack/bench.py \
    --nexcage "$nexcage" --crun "$NEXCAGE_CRUN" --runc "$NEXCAGE_RUNC" \
    --podman "$(command -v podman)" --image "$NEXCAGE_IMAGE" \
    --bundle "$work/bundle" --work "$work" \
    --runs "$runs" --podman-runs "$podman_runs" --tag "$tag"

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
mapfile -t ids < <(podman ps --all --quiet --filter "label=org.nexcage.bench=$tag")
held+=(${ids[@]+"${ids[@]}"})
printf -- '- nexcage records of finished runs before "nexcage list": %s; listed by it: %s; after: %s\n' \
    "$before" "$(wc -w <<<"$listed")" "$after"
printf -- '- containers still held by crun, runc (direct and under nexcage) or podman: %s\n' "${#held[@]}"
if [[ -n "$listed" || "$after" -ne 0 || ${#held[@]} -ne 0 ]]; then
    die "containers left behind: ${listed} ${held[*]}"
fi
printf -- '- nothing left\n'
