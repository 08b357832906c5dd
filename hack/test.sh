#!/usr/bin/env bash
# THE test command (README, .ci/run): prepare the machine, then format check,
# lints, and every unit and integration test. Needs root: the integration tests
# drive the real crun, runc and podman that hack/setup.sh installs.
# Usage: hack/test.sh   (extra arguments go to `cargo test`, e.g. a test name)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
require_root
cd "$NEXCAGE_ROOT"

# One line per finished step, printed at the end whether we pass or fail, so a
# long cargo log still ends with what ran and what broke.
summary=()
print_summary() {
    local rc=$?
    printf '\n== hack/test.sh summary\n'
    # ${arr[@]+...}: an empty array is "unbound" under set -u in older bash.
    printf '%s\n' ${summary[@]+"${summary[@]}"}
    if (( rc == 0 )); then printf 'PASS\n'; else printf 'FAIL (exit %d)\n' "$rc"; fi
}
trap print_summary EXIT

step() {
    local name="$1" start=$SECONDS
    shift
    log "== $name: $*"
    if ! "$@"; then
        summary+=("$(printf '%-7s FAILED after %ss' "$name" "$((SECONDS - start))")")
        exit 1
    fi
    summary+=("$(printf '%-7s ok (%ss)' "$name" "$((SECONDS - start))")")
}

# bash, not ./: a fresh clone or an archive may have lost the exec bits.
step setup bash hack/setup.sh
step fmt cargo fmt --check
step clippy cargo clippy --locked --all-targets -- -D warnings
step test cargo test --locked "$@"
