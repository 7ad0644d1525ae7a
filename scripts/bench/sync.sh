#!/usr/bin/env bash
# Sync benchmark: two fybrk devices vs two Syncthing instances on loopback, side by side in one run.
# A benchmark, not a test: it always exits 0 once it has measured; read the PASS/MISS column.
#
#   scripts/bench/sync.sh [--size-mib N] [--large-runs N] [--only fybrk|syncthing] [--files N]
#                         [--base-mib N]
#
#   --size-mib N   large-file size in MiB (shrink it for a quick run)                [1024]
#   --large-runs N runs of the large-file case per pair, each of new random data;
#                  the median run is reported                                        [3]
#   --only WHAT    measure only fybrk, or only Syncthing (both watcher settings)     [both]
#   --files N      number of 1 KiB files for the latency test (at least 20 to count) [20]
#   --base-mib N   size of the file the 1 MiB insertion goes into                     [256]
#
# Environment:
#   BENCH_DIR      where to work (must be on the disk you care about)  [/var/tmp/fybrk-bench]
#                  results go to $BENCH_DIR/sync-results.json, the daemons' logs to
#                  $BENCH_DIR/sync-logs/; the work files are removed on exit
#   FYBRK_BIN      the fybrk binary to measure        [target/release/fybrk, built if missing]
#
# Pairs, one after the other: fybrk (two daemons, own --state and mount, --listen 127.0.0.1:0,
# paired with `pair --yes --no-wait --json` + `pair-with`), then Syncthing with fsWatcherDelayS=1 (its
# minimum) and with the default 10 (two instances each, own --home, loopback-only config:
# no discovery, relays, NAT, STUN, usage or crash reporting, upgrades; explicit tcp:// and quic://
# 127.0.0.1 addresses). Everything runs in a private network namespace (unshare --net) holding
# only `lo`, so no packet can leave the machine whatever a daemon tries. For each pair:
#   1. latency: a 1 KiB file (new name each time, one at a time) from close() on A until B reads
#      the right content (polled every 5 ms); median and p90.
#   2. throughput: --size-mib MiB of random data written on A (dd bs=1M) until every byte reads
#      back right on B (sha256 per MiB as it arrives, then a whole-file sha256); MiB/s from the
#      start of the write to verified on B. --large-runs times, each with data of its own and
#      after dropping the page cache; the median run is reported (see "Why several runs").
#   3. insertion: a synced --base-mib MiB file rewritten on A as head + 1 MiB random + tail;
#      bytes on the wire from nftables counters on lo for the pair's ports (per direction, IP
#      bytes), next to what the programs report (fybrk status peers[].bytes_out/bytes_in,
#      Syncthing /rest/system/connections out/inBytesTotal).
#   4. peak RSS (VmHWM) of each daemon at the end of its pair's run.
#
# Why several runs: on a VM whose host takes back the memory its guest frees, writing into
# memory the host must back again is several times slower than into memory just recycled, and
# the first large run after a quiet spell pays for it. A single run charged that to whichever
# pair came first (fybrk measured 83 and 110 MiB/s in two runs an hour apart, Syncthing 100
# and 104). Dropping the cache before each run and taking the median evens it out.
#
# Run as root: the network namespace, nftables and FUSE mounts need it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPER="$ROOT/scripts/bench/sync_bench.py"

usage() { sed -n '2,45s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

SIZE_MIB=1024
LARGE_RUNS=3
ONLY=""
FILES=20
BASE_MIB=256
ARGS=("$@")
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=${2:?--size-mib needs a value}; shift 2 ;;
        --large-runs) LARGE_RUNS=${2:?--large-runs needs a value}; shift 2 ;;
        --only) ONLY=${2:?--only needs a value}; shift 2 ;;
        --files) FILES=${2:?--files needs a value}; shift 2 ;;
        --base-mib) BASE_MIB=${2:?--base-mib needs a value}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "sync.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
for v in SIZE_MIB LARGE_RUNS FILES BASE_MIB; do
    [[ ${!v} =~ ^[0-9]+$ && ${!v} -gt 0 ]] || { echo "sync.sh: ${v,,} must be a positive integer" >&2; exit 2; }
done
[[ $BASE_MIB -ge 2 ]] || { echo "sync.sh: --base-mib must be at least 2" >&2; exit 2; }
case "$ONLY" in
    "" | fybrk | syncthing) ;;
    *) echo "sync.sh: --only takes fybrk or syncthing" >&2; exit 2 ;;
esac
RUN_FYBRK=1
RUN_ST=1
[[ $ONLY == syncthing ]] && RUN_FYBRK=0
[[ $ONLY == fybrk ]] && RUN_ST=0

BENCH_DIR_ENV=${BENCH_DIR:-}
BENCH_DIR=${BENCH_DIR:-/var/tmp/fybrk-bench}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

[[ $(id -u) -eq 0 ]] || die "run as root: the private network namespace, nftables counters and FUSE mounts need it"

# The exact command, for the report (environment that matters first).
CMD=""
[[ -n $BENCH_DIR_ENV ]] && CMD+="BENCH_DIR=$(printf '%q' "$BENCH_DIR_ENV") "
[[ -n ${FYBRK_BIN:-} && $RUN_FYBRK -eq 1 ]] && CMD+="FYBRK_BIN=$(printf '%q' "$FYBRK_BIN") "
CMD+="scripts/bench/sync.sh"
for a in "${ARGS[@]}"; do CMD+=" $(printf '%q' "$a")"; done

# --- tools and binary (before entering the namespace: these may need the network) ------------
if [[ -z ${SYNC_BENCH_IN_NETNS:-} ]]; then
    if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    for tool in python3 nft unshare ip dd findmnt; do
        command -v "$tool" >/dev/null 2>&1 || { say "$tool missing: installing the test dependencies"; bash "$ROOT/scripts/setup-deps.sh" --test; break; }
    done
    if [[ $RUN_ST -eq 1 ]] && ! command -v syncthing >/dev/null 2>&1; then
        say "syncthing missing: installing it"
        apt-get install -y syncthing >/dev/null || { apt-get update >/dev/null && apt-get install -y syncthing >/dev/null; }
    fi
    if [[ $RUN_FYBRK -eq 1 ]]; then
        find_fybrk
        export FYBRK_BIN=$FYBRK
    fi
    # Re-run this script in a new network namespace: only a loopback, nothing can leave.
    SYNC_BENCH_IN_NETNS=1 SYNC_BENCH_CMD=$CMD exec unshare --net -- bash "${BASH_SOURCE[0]}" "${ARGS[@]}"
fi
CMD=${SYNC_BENCH_CMD:-$CMD}
ip link set lo up
FYBRK=${FYBRK_BIN:-}

# --- work dir, cleanup -----------------------------------------------------------------------
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd -P)
WORK=$(mktemp -d "$BENCH_DIR/sync.XXXXXX")
SRC="$WORK/src"
RESULTS="$WORK/results"
mkdir -p "$SRC" "$RESULTS"
NFT_TABLE="fybrk_sync_bench_$$"
NFT_READY=0
ST_PIDS=()     # Syncthing processes we started
FY_MOUNTS=()   # "STATE|MOUNTPOINT|PID" of fybrk daemons we started
HELPER_PID=""  # a long helper step, run in the background so that a signal stops it at once

# helper ARGS...: run sync_bench.py; bash runs traps only between commands, but `wait` returns
# as soon as a signal arrives, so INT/TERM reach the cleanup without waiting for the step to end.
helper() {
    local rc=0
    python3 "$HELPER" "$@" &
    HELPER_PID=$!
    wait "$HELPER_PID" || rc=$?
    HELPER_PID=""
    return "$rc"
}

# findmnt, not `mountpoint`: it also sees a stale mount whose daemon is gone.
is_mounted() { [[ -n $(findmnt -rn -M "$1" -o TARGET 2>/dev/null || true) ]]; }

stop_pid() { # PID: SIGTERM, up to 10 s, then SIGKILL
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    warn "process $pid ignored SIGTERM for 10 s; sending SIGKILL"
    kill -9 "$pid" 2>/dev/null
}

fy_unmount() { # STATE MOUNTPOINT PID
    local state=$1 mnt=$2 pid=$3
    if is_mounted "$mnt"; then
        "$FYBRK" --state "$state" unmount "$mnt" ||
            fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt"
    fi
    if [[ -n $pid ]]; then
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            warn "fybrk daemon $pid still running after unmount; stopping it"
            stop_pid "$pid"
        fi
    fi
}

# The daemons' logs outlive the run in $BENCH_DIR/sync-logs/ (replaced by the next run).
save_logs() {
    local f rel
    rm -rf "$BENCH_DIR/sync-logs"
    while IFS= read -r f; do
        rel=${f#"$WORK"/}
        mkdir -p "$BENCH_DIR/sync-logs/$(dirname "$rel")"
        tail -c 20M "$f" >"$BENCH_DIR/sync-logs/$rel"
    done < <(find "$WORK" -path "$WORK/*/mnt" -prune -o -type f \
        \( -name syncthing.log -o -name generate.log -o -name daemon.log \) -print 2>/dev/null)
}

cleanup() {
    local rc=$?
    set +e
    local pid m state mnt left=0
    [[ -n $HELPER_PID ]] && stop_pid "$HELPER_PID"
    for pid in "${ST_PIDS[@]}"; do stop_pid "$pid"; done
    for m in "${FY_MOUNTS[@]}"; do
        IFS='|' read -r state mnt pid <<<"$m"
        fy_unmount "$state" "$mnt" "$pid"
    done
    save_logs
    [[ $NFT_READY -eq 1 ]] && nft delete table inet "$NFT_TABLE" 2>/dev/null
    # Never rm -rf into a live mount.
    for m in "${FY_MOUNTS[@]}"; do
        IFS='|' read -r state mnt pid <<<"$m"
        if is_mounted "$mnt"; then warn "$mnt is still mounted"; left=1; fi
    done
    if [[ $left -eq 1 ]]; then
        warn "leaving $WORK in place"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- nftables byte counters on lo, per pair and direction ------------------------------------
# Output hook only, so each packet on lo counts once. A pair's traffic always has one of its two
# listen ports at one end: A->B is "from A's port or to B's port", B->A the reverse. GSO/TSO
# super-packets count as one IP header, so these are payload + a few headers.
nft add table inet "$NFT_TABLE"
NFT_READY=1
nft add chain inet "$NFT_TABLE" out '{ type filter hook output priority 0; policy accept; }'

nft_pair() { # PREFIX PORT_A PORT_B
    local p=$1 pa=$2 pb=$3
    nft add counter inet "$NFT_TABLE" "${p}_a2b"
    nft add counter inet "$NFT_TABLE" "${p}_b2a"
    nft add rule inet "$NFT_TABLE" out oif lo meta l4proto '{ tcp, udp }' th sport "$pa" counter name "${p}_a2b" accept
    nft add rule inet "$NFT_TABLE" out oif lo meta l4proto '{ tcp, udp }' th dport "$pb" counter name "${p}_a2b" accept
    nft add rule inet "$NFT_TABLE" out oif lo meta l4proto '{ tcp, udp }' th sport "$pb" counter name "${p}_b2a" accept
    nft add rule inet "$NFT_TABLE" out oif lo meta l4proto '{ tcp, udp }' th dport "$pa" counter name "${p}_b2a" accept
}

LARGE_ARGS=()
for ((i = 1; i <= LARGE_RUNS; i++)); do LARGE_ARGS+=(--large "$SRC/large-$i.bin"); done
measure_common=("${LARGE_ARGS[@]}" --base "$SRC/base.bin" --insert "$SRC/insert.bin"
    --files "$FILES" --size-mib "$SIZE_MIB" --base-mib "$BASE_MIB" --nft-table "$NFT_TABLE")

# --- Syncthing -------------------------------------------------------------------------------
run_syncthing() { # LABEL WATCH_DELAY_S
    local label=$1 delay=$2 dir="$WORK/$1" side
    local pa pb ga gb key ida idb pida pidb link
    read -r pa pb ga gb <<<"$(python3 "$HELPER" free-ports 4)"
    key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    for side in a b; do
        mkdir -p "$dir/$side/data"
        STNODEFAULTFOLDER=1 syncthing generate --home "$dir/$side/home" --no-default-folder \
            --skip-port-probing >"$dir/$side/generate.log" 2>&1
    done
    ida=$(syncthing serve --home "$dir/a/home" --device-id)
    idb=$(syncthing serve --home "$dir/b/home" --device-id)
    python3 "$HELPER" st-config "$dir/a/home" --name bench-a --folder "$dir/a/data" --apikey "$key" \
        --port "$pa" --gui-port "$ga" --peer-id "$idb" --peer-name bench-b --peer-port "$pb" --watch-delay "$delay"
    python3 "$HELPER" st-config "$dir/b/home" --name bench-b --folder "$dir/b/data" --apikey "$key" \
        --port "$pb" --gui-port "$gb" --peer-id "$ida" --peer-name bench-a --peer-port "$pa" --watch-delay "$delay"
    nft_pair "$label" "$pa" "$pb"
    for side in a b; do
        local gp=$ga
        [[ $side == b ]] && gp=$gb
        # STMONITORED: run as the "inner" process directly. Without it Syncthing forks a monitor
        # process (even with --no-restart) and $! would be the monitor, not the one syncing.
        STMONITORED=yes STNODEFAULTFOLDER=1 STNORESTART=1 STNOUPGRADE=1 syncthing serve \
            --home "$dir/$side/home" --no-browser --no-restart --no-upgrade \
            --gui-address="http://127.0.0.1:$gp" --gui-apikey="$key" --logflags=3 \
            >"$dir/$side/syncthing.log" 2>&1 &
        ST_PIDS+=($!)
        [[ $side == a ]] && pida=$! || pidb=$!
    done
    say "syncthing $label: A pid $pida (:$pa), B pid $pidb (:$pb), fsWatcherDelayS=$delay"
    helper st-wait --url-a "http://127.0.0.1:$ga" --url-b "http://127.0.0.1:$gb" \
        --key "$key" --id-a "$ida" --id-b "$idb" >"$dir/link" ||
        { tail -n 20 "$dir"/*/syncthing.log >&2; die "syncthing pair $label did not come up"; }
    link=$(cat "$dir/link")
    say "connected: $link"
    helper measure --kind syncthing --label "$label" --watch "watcher ${delay}s" \
        --dir-a "$dir/a/data" --dir-b "$dir/b/data" --pid-a "$pida" --pid-b "$pidb" \
        --url-a "http://127.0.0.1:$ga" --url-b "http://127.0.0.1:$gb" --key "$key" \
        --id-a "$ida" --id-b "$idb" --prefix "$label" --link "$link" \
        --out "$RESULTS/$label.json" "${measure_common[@]}"
    check_loopback_only "$pida" "$pidb"
    stop_pid "$pida"
    stop_pid "$pidb"
    rm -rf "$dir/a/data" "$dir/b/data" # the logs stay for save_logs
}

# Belt and braces next to the namespace: every inet socket of these processes is on loopback.
check_loopback_only() {
    local pid bad
    for pid in "$@"; do
        bad=$(ss -tunapH 2>/dev/null | grep "pid=$pid," | awk '{print $5, $6}' |
            tr ' ' '\n' | grep -v -E '^(127\.0\.0\.1|\[::1\]|\[::ffff:127\.0\.0\.1\]|\*|0\.0\.0\.0|\[::\]):' || true)
        [[ -z $bad ]] || warn "process $pid has non-loopback sockets: $bad"
    done
}

# --- fybrk -----------------------------------------------------------------------------------
run_fybrk() {
    local label=fybrk dir="$WORK/fybrk" side pida pidb pa pb payload link
    for side in a b; do
        mkdir -p "$dir/$side/state" "$dir/$side/mnt"
        chmod 700 "$dir/$side/state"
        "$FYBRK" --state "$dir/$side/state" mount "$dir/$side/mnt" --name "bench-$side" --listen 127.0.0.1:0
        is_mounted "$dir/$side/mnt" || die "fybrk mount returned but nothing is mounted at $dir/$side/mnt"
        local pid
        pid=$(tr -dc '0-9' <"$dir/$side/state/daemon.pid" 2>/dev/null || true)
        FY_MOUNTS+=("$dir/$side/state|$dir/$side/mnt|$pid")
        if [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; then
            die "no live daemon pid in $dir/$side/state/daemon.pid"
        fi
        [[ $side == a ]] && pida=$pid || pidb=$pid
    done
    pa=$("$FYBRK" --state "$dir/a/state" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen_addr"].rsplit(":",1)[1])')
    pb=$("$FYBRK" --state "$dir/b/state" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["listen_addr"].rsplit(":",1)[1])')
    nft_pair "$label" "$pa" "$pb"
    say "fybrk: A pid $pida (:$pa), B pid $pidb (:$pb)"
    payload=$("$FYBRK" --state "$dir/a/state" pair --yes --no-wait --json --png "$dir/pair.png" | head -n 1 |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"])')
    "$FYBRK" --state "$dir/b/state" pair-with --yes "$payload"
    helper fy-wait --fybrk "$FYBRK" --state-a "$dir/a/state" --state-b "$dir/b/state" >"$dir/link" ||
        { tail -n 20 "$dir"/*/state/daemon.log >&2; die "the fybrk daemons did not connect"; }
    link=$(cat "$dir/link")
    say "connected: $link"
    helper measure --kind fybrk --label "$label" \
        --dir-a "$dir/a/mnt" --dir-b "$dir/b/mnt" --pid-a "$pida" --pid-b "$pidb" \
        --fybrk "$FYBRK" --state-a "$dir/a/state" --state-b "$dir/b/state" --prefix "$label" \
        --link "QUIC $link" --out "$RESULTS/$label.json" "${measure_common[@]}"
    check_loopback_only "$pida" "$pidb"
    fy_unmount "$dir/a/state" "$dir/a/mnt" "$pida"
    fy_unmount "$dir/b/state" "$dir/b/mnt" "$pidb"
}

# --- run -------------------------------------------------------------------------------------
say "command: $CMD"
say "workdir: $WORK ($(df -h --output=source,fstype,avail "$WORK" | tail -n 1 | tr -s ' '))"
say "kernel: $(uname -r)   cpus: $(nproc)   network: private namespace, lo only"
# Everything here (two daemons each side, hashing, the checker) competes for the same CPUs:
# a busy machine skews the comparison, and unevenly since the pairs run one after the other.
load_check() {
    local load
    load=$(cut -d ' ' -f 1 /proc/loadavg)
    say "load average $1: $(cut -d ' ' -f 1-3 /proc/loadavg)"
    if awk -v l="$load" -v n="$(nproc)" 'BEGIN {exit !(l > 0.25 * n)}'; then
        warn "the machine is busy (load $load on $(nproc) cpus): the figures are noisy"
    fi
}
load_check "before"
[[ $RUN_FYBRK -eq 1 ]] && say "fybrk: $FYBRK ($("$FYBRK" --version 2>/dev/null || echo '?'))"
[[ $RUN_ST -eq 1 ]] && say "syncthing: $(syncthing --version | head -n 1)"

say "generating random data: $LARGE_RUNS x $SIZE_MIB MiB large files, $BASE_MIB MiB base file, 1 MiB insert"
for ((i = 1; i <= LARGE_RUNS; i++)); do helper gen-data "$SRC/large-$i.bin" "$SIZE_MIB"; done
helper gen-data "$SRC/base.bin" "$BASE_MIB"
helper gen-data "$SRC/insert.bin" 1

if [[ $RUN_FYBRK -eq 1 ]]; then
    say "pair: fybrk"
    run_fybrk
fi
if [[ $RUN_ST -eq 1 ]]; then
    say "pair: Syncthing, fsWatcherDelayS=1"
    run_syncthing syncthing_w1 1
    say "pair: Syncthing, fsWatcherDelayS=10 (default)"
    run_syncthing syncthing_w10 10
fi

load_check "after"
python3 "$HELPER" report --command "$CMD" "$BENCH_DIR/sync-results.json" "$RESULTS"/*.json
echo
echo "command: $CMD"
