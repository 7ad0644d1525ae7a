# shellcheck shell=bash
# Shared by the benchmark scripts (sourced; they define ROOT, say and die first).

# Benchmarks run their daemons on this machine only: no DHT lookups of public bootstrap nodes,
# no LAN announcements (the daemons inherit these; see `fybrk mount --help`).
export FYBRK_NO_DHT=1 FYBRK_NO_LAN_DISCOVERY=1

# find_fybrk: sets FYBRK to $FYBRK_BIN, or to the release binary of this checkout (honouring
# CARGO_TARGET_DIR), building it if it is missing.
find_fybrk() {
    if [[ -n ${FYBRK_BIN:-} ]]; then
        FYBRK=$FYBRK_BIN
    else
        local target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
        [[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
        FYBRK="$target_dir/release/fybrk"
        if [[ ! -x $FYBRK ]]; then
            say "building $FYBRK (release)"
            (cd "$ROOT" && cargo build --release -p fybrk)
        fi
    fi
    [[ -x $FYBRK ]] || die "fybrk binary not found at $FYBRK"
}
