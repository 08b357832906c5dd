#!/usr/bin/env bash
# End-to-end check, the main job of the repository: set the machine up, build and
# install the release binary, then show nexcage at work and check what it does:
#   (a) the example bundle run through nexcage to crun,
#   (b) the same bundle to runc,
#   (c) podman --runtime nexcage: output and exit code,
#   (d) the bundle as a plain LXC container (backend lxc),
#   (e) podman --runtime nexcage on the lxc backend: output, exit code, and -p to
#       busybox httpd reached from the host.
# Every check prints "ok" or "FAIL"; the script exits 1 if any failed.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
cd "$NEXCAGE_ROOT"

INSTALLED=/usr/local/bin/nexcage   # the path the podman drop-in registers
BUILT="$NEXCAGE_ROOT/target/x86_64-unknown-linux-gnu/release/nexcage"
BUNDLE=bundles/busybox

checks=0
failures=0
heading() { printf '\n=== %s\n' "$*"; }
ok() { checks=$((checks + 1)); printf 'ok    %s\n' "$*"; }
bad() { checks=$((checks + 1)); failures=$((failures + 1)); printf 'FAIL  %s\n' "$*"; }
expect() { # expect WHAT WANT GOT
    if [[ "$3" == "$2" ]]; then ok "$1"; else bad "$1: want $(printf '%q' "$2"), got $(printf '%q' "$3")"; fi
}
# Shows a command before running it; %q so what is printed can be pasted back.
show() { printf '$'; printf ' %q' "$@"; printf '\n'; }

tmp=""
podman_name="nexcage-e2e-$$"
cleanup() {
    local rc=$?
    # Only what this run made: our private root, our temp dir, our podman container.
    if [[ -n "$tmp" && -d "$tmp/root" ]]; then
        local id
        while IFS= read -r id; do
            "$INSTALLED" --root "$tmp/root" delete --force "$id" >/dev/null 2>&1 || true
        done < <("$INSTALLED" --root "$tmp/root" list --quiet 2>/dev/null || true)
    fi
    podman rm --force --ignore "$podman_name" "$podman_name-lxc" >/dev/null 2>&1 || true
    if [[ -n "$tmp" ]]; then rm -rf -- "$tmp"; fi
    if (( rc != 0 && failures == 0 )); then
        printf '\nABORTED (exit %d): a step failed before its checks, see above\n' "$rc"
    fi
}
trap cleanup EXIT

heading "setup (hack/setup.sh)"
bash hack/setup.sh

heading "build (cargo build --release --locked)"
cargo build --release --locked

heading "install $INSTALLED"
install -m 0755 "$BUILT" "$INSTALLED"
show nexcage --version
"$INSTALLED" --version
if cmp -s "$BUILT" "$INSTALLED"; then ok "installed binary is the one just built"; else bad "installed binary differs from $BUILT"; fi

# A private root keeps this run apart from /run/nexcage and from parallel runs; the
# explicit routing configs make (a) and (b) independent of /etc/nexcage/config.json.
tmp="$(mktemp -d "${TMPDIR:-/tmp}/nexcage-e2e.XXXXXX")"
root="$tmp/root"
declare -A delegate_path=([crun]="$NEXCAGE_CRUN" [runc]="$NEXCAGE_RUNC")
for backend in crun runc; do
    jq -nc --arg name "$backend" --arg path "${delegate_path[$backend]}" \
        '{default: $name, backends: {($name): {type: "oci", path: $path}}}' >"$tmp/$backend.json"
done

# bundle_via BACKEND LABEL: route, run in the foreground, then create/start/delete
# while asking the backend itself whether it holds the container.
bundle_via() {
    local backend="$1" label="$2" config="$tmp/$1.json" delegate="${delegate_path[$1]}"
    local id="e2e-$1-$$" id2="e2e-$1-created-$$" out rc status i
    local nx=("$INSTALLED" --root "$root" --config "$config")

    heading "($label) $BUNDLE through nexcage to $backend"
    printf 'routing config %s: %s\n' "$config" "$(cat "$config")"

    show "${nx[@]}" route --bundle "$BUNDLE" "$id"
    out="$("${nx[@]}" route --bundle "$BUNDLE" "$id")"
    printf '%s\n' "$out"
    expect "route picks $backend" "$backend (default; config: $config)" "$out"

    show "${nx[@]}" run --bundle "$BUNDLE" "$id"
    rc=0
    out="$("${nx[@]}" run --bundle "$BUNDLE" "$id")" || rc=$?
    printf '%s\n' "$out"
    expect "run exit code" 0 "$rc"
    expect "run output" $'hello from nexcage\n0' "$out"
    # A finished foreground run leaves its record for the next reader to clear.
    expect "nothing left after run (nexcage list)" "" "$("${nx[@]}" list --quiet)"

    # The route above is nexcage's word; the backend's own state dir is the proof.
    show "${nx[@]}" create --bundle "$BUNDLE" "$id2"
    "${nx[@]}" create --bundle "$BUNDLE" "$id2" >"$tmp/$id2.out" 2>&1 </dev/null \
        || { cat "$tmp/$id2.out"; bad "create $id2"; return; }
    status="$("$delegate" --root "$root/backends/$backend" state "$id2" | jq -r .status)"
    expect "$backend itself reports the container (state)" created "$status"
    show "${nx[@]}" start "$id2"
    "${nx[@]}" start "$id2"
    # start returns once the process runs; wait (at most 10 s) for it to finish.
    for (( i = 0; i < 100; i++ )); do
        status="$("${nx[@]}" state "$id2" | jq -r .status)"
        [[ "$status" == stopped ]] && break
        sleep 0.1
    done
    expect "state after start" stopped "$status"
    expect "container output" $'hello from nexcage\n0' "$(cat "$tmp/$id2.out")"
    show "${nx[@]}" delete "$id2"
    "${nx[@]}" delete "$id2"
    if "$delegate" --root "$root/backends/$backend" state "$id2" >/dev/null 2>&1; then
        bad "$backend still holds $id2 after delete"
    else
        ok "$backend no longer holds the container after delete"
    fi
    expect "nothing left (nexcage list)" "" "$("${nx[@]}" list --quiet)"
}

bundle_via crun a
bundle_via runc b

heading "(c) podman --runtime nexcage"
show podman --runtime nexcage run --rm "$NEXCAGE_IMAGE" echo hello from podman
rc=0
out="$(podman --runtime nexcage run --rm "$NEXCAGE_IMAGE" echo hello from podman)" || rc=$?
printf '%s\n' "$out"
expect "podman exit code" 0 "$rc"
expect "podman output" "hello from podman" "$out"

# Named, without --rm, so podman can be asked afterwards which runtime ran it.
show podman --runtime nexcage run --name "$podman_name" "$NEXCAGE_IMAGE" sh -c 'exit 42'
rc=0
podman --runtime nexcage run --name "$podman_name" "$NEXCAGE_IMAGE" sh -c 'exit 42' || rc=$?
expect "podman passes the container's exit code" 42 "$rc"
expect "podman used runtime" nexcage \
    "$(podman container inspect --format '{{.OCIRuntime}}' "$podman_name")"
podman rm "$podman_name" >/dev/null

heading "(d) $BUNDLE as a plain LXC container (backend lxc)"
jq -nc '{default: "lxc", backends: {lxc: {type: "lxc"}}}' >"$tmp/lxc.json"
nx=("$INSTALLED" --root "$root" --config "$tmp/lxc.json")
id="e2e-lxc-$$"
show "${nx[@]}" run --bundle "$BUNDLE" "$id"
rc=0
out="$("${nx[@]}" run --bundle "$BUNDLE" "$id")" || rc=$?
printf '%s\n' "$out"
expect "lxc: run exit code" 0 "$rc"
expect "lxc: run output" $'hello from nexcage\n0' "$out"
show "${nx[@]}" create --bundle "$BUNDLE" "$id"
"${nx[@]}" create --bundle "$BUNDLE" "$id" >/dev/null 2>&1 </dev/null
# LXC's own view: the definition nexcage generated, under its lxcpath.
show lxc-ls -P "$root/lxc/lxc" -1
expect "lxc: LXC knows the container" "$id" "$(lxc-ls -P "$root/lxc/lxc" -1)"
"${nx[@]}" delete --force "$id"
expect "lxc: nothing left in LXC after delete" "" "$(lxc-ls -P "$root/lxc/lxc" -1)"
expect "lxc: nothing left (nexcage list)" "" "$("${nx[@]}" list --quiet)"

heading "(e) podman --runtime nexcage, backend lxc chosen by annotation"
jq -nc --arg crun "$NEXCAGE_CRUN" '{default: "crun", annotation_backends: ["lxc", "crun"],
    backends: {crun: {type: "oci", path: $crun}, lxc: {type: "lxc"}}}' >"$tmp/podman.json"
pod=(podman --runtime nexcage --runtime-flag "config=$tmp/podman.json")
show "${pod[@]}" run --rm --annotation org.nexcage.backend=lxc "$NEXCAGE_IMAGE" sh -c 'cat /proc/1/cmdline | tr "\0" " "; echo; exit 7'
rc=0
out="$("${pod[@]}" run --rm --annotation org.nexcage.backend=lxc "$NEXCAGE_IMAGE" \
    sh -c 'cat /proc/1/cmdline | tr "\0" " "; echo; exit 7')" || rc=$?
printf '%s\n' "$out"
expect "podman/lxc: exit code" 7 "$rc"
expect "podman/lxc: PID 1 is nexcage init in an LXC container" \
    "/dev/.nexcage/nexcage init --dir /dev/.nexcage " "$out"
port=18080
while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done
show "${pod[@]}" run -d --name "$podman_name-lxc" --annotation org.nexcage.backend=lxc -p "$port:80" "$NEXCAGE_IMAGE" sh -c '...; httpd -f -p 80 -h /www'
"${pod[@]}" run -d --name "$podman_name-lxc" --annotation org.nexcage.backend=lxc -p "$port:80" \
    "$NEXCAGE_IMAGE" sh -c 'mkdir /www && echo served by lxc >/www/index.html && exec httpd -f -p 80 -h /www' >/dev/null
got=""
for (( i = 0; i < 50; i++ )); do
    got="$(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null)" && break
    sleep 0.1
done
show curl "http://127.0.0.1:$port/"
printf '%s\n' "$got"
expect "podman/lxc: -p $port:80 reaches httpd in the container" "served by lxc" "$got"
"${pod[@]}" stop -t 5 "$podman_name-lxc" >/dev/null
"${pod[@]}" rm "$podman_name-lxc" >/dev/null
expect "podman/lxc: nothing left in LXC" 0 "$(lxc-ls -P /run/nexcage/lxc/lxc -1 2>/dev/null | grep -c . || true)"

heading "summary"
printf '%d checks, %d failed\n' "$checks" "$failures"
if (( failures > 0 )); then
    printf 'FAIL\n'
    exit 1
fi
printf 'PASS\n'
