#!/usr/bin/env bash
# On-demand reads: a file written on device A, read on an on-demand device B (content fetched
# as it is read) and on a full device C (content already local), side by side in one run.
#
#   scripts/bench/ondemand.sh [--size-mib N] [--rounds N]
#
#   --size-mib N   size of the remote file                                        [1024]
#   --rounds N     first-byte latency samples (each after `fybrk free` + cache drop) [10]
#
# Prints, as ratios against C's local read in the same run:
#   1. sequential read of the whole file (dd bs=1M, page cache dropped first): B remote vs C local;
#   2. first-byte latency of a remote file on B (`head -c 1` after `fybrk free` and a cache
#      drop), median and worst of --rounds, against the same on C.
# Everything runs in a private network namespace holding only `lo` (unshare --net): no packet
# leaves the machine. Needs root and /dev/fuse; builds nothing (set FYBRK_BIN or run
# `cargo build --release -p fybrk` first). Check `uptime` first: a busy machine measures itself.
set -euo pipefail
# Daemons stay on this machine: no DHT, no LAN announcements.
export FYBRK_NO_DHT=1 FYBRK_NO_LAN_DISCOVERY=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${FYBRK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fybrk}
SIZE_MIB=1024
ROUNDS=10
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mib) SIZE_MIB=${2:?}; shift 2 ;;
        --rounds) ROUNDS=${2:?}; shift 2 ;;
        -h | --help) sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "ondemand.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ -x $BIN ]] || { echo "no fybrk binary at $BIN: cargo build --release -p fybrk" >&2; exit 1; }

# Re-run inside a network namespace of our own (only `lo`, brought up).
if [[ -z ${FYBRK_BENCH_NETNS:-} ]]; then
    exec unshare --net env FYBRK_BENCH_NETNS=1 bash -c 'ip link set lo up && exec "$0" "$@"' \
        "${BASH_SOURCE[0]}" --size-mib "$SIZE_MIB" --rounds "$ROUNDS"
fi

echo "uptime: $(uptime)"
tmp=$(mktemp -d /var/tmp/fybrk-ondemand-bench.XXXXXX)
devices=(a b c)
cleanup() {
    for d in "${devices[@]}"; do
        "$BIN" --state "$tmp/$d/state" unmount "$tmp/$d/mnt" >/dev/null 2>&1 ||
            umount -l "$tmp/$d/mnt" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

up() { # NAME EXTRA...
    local d=$1
    shift
    mkdir -p "$tmp/$d/state" "$tmp/$d/mnt"
    printf 'web = false\n' >"$tmp/$d/state/config.toml"
    "$BIN" --state "$tmp/$d/state" mount "$tmp/$d/mnt" --listen 127.0.0.1:0 --name "$d" "$@" >/dev/null
}
fy() { local d=$1; shift; "$BIN" --state "$tmp/$d/state" "$@"; }
pair() { # INVITER JOINER
    local inv
    inv=$(fy "$1" pair --yes --no-wait --json --png "$tmp/$1/qr.png" | head -1 |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["payload"])')
    fy "$2" pair-with --yes "$inv" >/dev/null
}
now_ns() { date +%s%N; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

up a
up b --on-demand --cache "$((SIZE_MIB / 4 + 64))M"
up c
pair a b
pair a c
echo "writing $SIZE_MIB MiB on A"
dd if=/dev/urandom of="$tmp/a/mnt/big.bin" bs=1M count="$SIZE_MIB" status=none
want=$(sha256sum <"$tmp/a/mnt/big.bin" | cut -d' ' -f1)
echo "waiting for C (full) to hold it and B (on demand) to list it"
for _ in $(seq 600); do
    [[ -f $tmp/c/mnt/big.bin && -f $tmp/b/mnt/big.bin ]] &&
        [[ $(stat -c %s "$tmp/b/mnt/big.bin") == $((SIZE_MIB << 20)) ]] &&
        fy c status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
sys.exit(0 if all(p["in_sync"] for p in s["peers"]) and s["stored_bytes"] > 0 else 1)' && break
    sleep 1
done

read_secs() { # FILE -> seconds for a cold sequential read, checking the bytes
    drop_caches
    local t0 t1 got
    t0=$(now_ns)
    got=$(dd if="$1" bs=1M status=none | sha256sum | cut -d' ' -f1)
    t1=$(now_ns)
    [[ $got == "$want" ]] || { echo "wrong bytes read from $1" >&2; exit 1; }
    python3 -c "print(($t1 - $t0) / 1e9)"
}
first_byte_ms() { # DEVICE -> ms to the first byte after dropping local content and caches
    [[ $1 == b ]] && fy b free "$tmp/b/mnt/big.bin" >/dev/null
    drop_caches
    local t0 t1
    t0=$(now_ns)
    head -c 1 "$tmp/$1/mnt/big.bin" >/dev/null
    t1=$(now_ns)
    python3 -c "print(($t1 - $t0) / 1e6)"
}

c_secs=$(read_secs "$tmp/c/mnt/big.bin")
fy b free "$tmp/b/mnt/big.bin" >/dev/null
b_secs=$(read_secs "$tmp/b/mnt/big.bin")
b_lat=(); c_lat=()
for _ in $(seq "$ROUNDS"); do
    b_lat+=("$(first_byte_ms b)")
    c_lat+=("$(first_byte_ms c)")
done
python3 - "$SIZE_MIB" "$b_secs" "$c_secs" "${b_lat[*]}" "${c_lat[*]}" <<'EOF'
import statistics, sys
mib, b, c = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
bl = [float(x) for x in sys.argv[4].split()]
cl = [float(x) for x in sys.argv[5].split()]
print(f"sequential read of {mib} MiB, page cache dropped:")
print(f"  on-demand B (fetched from A): {mib / b:8.1f} MiB/s  ({b:.2f} s)")
print(f"  full C (local):               {mib / c:8.1f} MiB/s  ({c:.2f} s)")
print(f"  ratio B/C: {c / b:.2f}")
print(f"first byte of a remote file (median / worst of {len(bl)}):")
print(f"  on-demand B: {statistics.median(bl):7.2f} / {max(bl):7.2f} ms")
print(f"  full C:      {statistics.median(cl):7.2f} / {max(cl):7.2f} ms")
EOF
for d in a b c; do
    rss=$(grep VmHWM /proc/"$(cat "$tmp/$d/state/daemon.pid" 2>/dev/null || echo self)"/status 2>/dev/null | awk '{print $2}')
    echo "peak RSS $d: ${rss:-?} KiB"
done
