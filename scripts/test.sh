#!/usr/bin/env bash
# The "run every test" command (also what CI runs, through .ci/run).
#
#   scripts/test.sh [ARGS...]      ARGS go to `cargo test`, e.g.: scripts/test.sh -- --nocapture
#
# 1. scripts/setup-deps.sh --test   system packages for the tests (fuse3, coturn, nftables, ...)
# 2. cargo build --release --workspace --all-targets
# 3. cargo clippy --release --workspace --all-targets -- -D warnings   (a lint fails the run)
# 4. cargo test  --release --workspace --no-fail-fast ARGS...
#
# Release only, on purpose: RocksDB's C++ takes ~13 minutes per profile on 2 cores, so building
# debug as well would double the time. Tests that need root or /dev/fuse run for real as root,
# skip loudly otherwise, and never skip when CI=true. The tests run even when clippy found
# something, so one run shows both; the exit status is non-zero if either failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

case "${1:-}" in
    -h | --help) sed -n '2,14s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
esac

# rustup's default location, for a shell that has not sourced ~/.cargo/env yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
# A failing test's backtrace is worth more than the extra lines.
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

phases=()
start_all=$SECONDS
phase_start=0
begin() {
    phase_start=$SECONDS
    printf '\n==> %s\n' "$1"
}
# end NAME STATUS: record how long the phase took, for the summary at the end.
end() {
    local took=$((SECONDS - phase_start))
    phases+=("$(printf '%-8s %4dm%02ds  %s' "$1" $((took / 60)) $((took % 60)) "$2")")
    printf '==> %s: %s in %dm%02ds\n' "$1" "$2" $((took / 60)) $((took % 60))
}
summary() {
    local total=$((SECONDS - start_all))
    printf '\n==> summary\n'
    printf '    %s\n' "${phases[@]}"
    printf '    %-8s %4dm%02ds\n' total $((total / 60)) $((total % 60))
}

begin "setup: system packages for the tests"
bash "$ROOT/scripts/setup-deps.sh" --test
end setup ok

# Say up front which mode the FUSE/root tests will run in, so a log shows it without digging.
if [[ $(id -u) -eq 0 && -c /dev/fuse ]]; then
    echo "==> root with /dev/fuse: mount and network-namespace tests run for real"
elif [[ ${CI:-} == true ]]; then
    echo "==> CI=true without root or /dev/fuse: tests that need them will FAIL (never skipped in CI)"
else
    echo "==> not root or no /dev/fuse: tests that need them will be SKIPPED (each says so)"
fi

begin "build: cargo build --release --workspace --all-targets"
build_rc=0
cargo build --release --workspace --all-targets || build_rc=$?
if [[ $build_rc -ne 0 ]]; then
    end build "FAILED (exit $build_rc)"
    summary
    exit "$build_rc"
fi
end build ok

begin "clippy: cargo clippy --release --workspace --all-targets -- -D warnings"
clippy_rc=0
cargo clippy --release --workspace --all-targets -- -D warnings || clippy_rc=$?
if [[ $clippy_rc -eq 0 ]]; then
    end clippy ok
else
    end clippy "FAILED (exit $clippy_rc)"
fi

begin "test: cargo test --release --workspace --no-fail-fast $*"
test_rc=0
cargo test --release --workspace --no-fail-fast "$@" || test_rc=$?
if [[ $test_rc -eq 0 ]]; then
    end test ok
else
    end test "FAILED (exit $test_rc)"
fi
summary
if [[ $test_rc -ne 0 ]]; then
    exit "$test_rc"
fi
exit "$clippy_rc"
