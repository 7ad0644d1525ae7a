#!/usr/bin/env bash
# Filesystem benchmark: fybrk's FUSE mount vs the native disk, side by side in one run.
# A benchmark, not a test: it always exits 0 once it has measured; read the PASS/MISS column.
#
#   scripts/bench/fs.sh [--size 1G] [--files 10000]
#
#   --size SIZE    sequential write/read file size, in fio's syntax (1G = 1 GiB)    [1G]
#   --files N      number of 1 KiB files for the create-rate test                   [10000]
#
# Environment:
#   BENCH_DIR      where to work (must be on the disk you care about)   [/var/tmp/fybrk-bench]
#                  results go to $BENCH_DIR/results.json; the work files are removed on exit
#   FYBRK_BIN      the fybrk binary to measure          [target/release/fybrk, built if missing]
#   RAND_SIZE      file size for the 4 KiB random-read test                          [256M]
#   RAND_RUNTIME   cap in seconds for the random-read test                           [60]
#
# Tests (each on the mount, then natively): fio sequential write (bs=1M, psync, end_fsync=1),
# fio sequential read of that file, fio 4 KiB random read (one pass over RAND_SIZE), and a
# create rate (create + write 1 KiB + close, in one process). Page caches are dropped before
# each read when root. The daemon's peak RSS is read from /proc/PID/status (VmHWM), and VmRSS
# is sampled every 0.2 s during the sequential write.
#
# Run as root: dropping caches needs it (without root it goes on, reads may then be warm).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

usage() { sed -n '2,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

SIZE=1G
FILES=10000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --size) SIZE=${2:?--size needs a value}; shift 2 ;;
        --files) FILES=${2:?--files needs a value}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "fs.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
[[ $FILES =~ ^[0-9]+$ && $FILES -gt 0 ]] || { echo "fs.sh: --files must be a positive integer" >&2; exit 2; }

BENCH_DIR=${BENCH_DIR:-/var/tmp/fybrk-bench}
RAND_SIZE=${RAND_SIZE:-256M}
RAND_RUNTIME=${RAND_RUNTIME:-60}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

# rustup's default location, for a shell that has not sourced ~/.cargo/env yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# --- tools and binary ------------------------------------------------------------------------
if ! command -v fio >/dev/null 2>&1 || ! command -v python3 >/dev/null 2>&1; then
    say "fio/python3 missing: installing the test dependencies"
    bash "$ROOT/scripts/setup-deps.sh" --test
fi

find_fybrk

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1
if [[ $IS_ROOT -eq 0 ]]; then
    warn "not root: cannot drop the page cache, so reads may be served from memory;"
    warn "fio's own per-file invalidation (posix_fadvise) still applies. Run as root for real numbers."
fi

# --- work dir --------------------------------------------------------------------------------
# Both sides live on the same disk, so the comparison is fybrk's overhead, not two disks.
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd -P)
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
NATIVE="$WORK/native"
STATE="$WORK/state"
MNT="$WORK/mnt"
mkdir -p "$NATIVE" "$STATE" "$MNT"
DAEMON_PID=""
SAMPLER_PID=""

# findmnt, not `mountpoint`: it also sees a stale mount whose daemon is gone.
is_mounted() { [[ -n $(findmnt -rn -M "$1" -o TARGET 2>/dev/null || true) ]]; }

cleanup() {
    local rc=$?
    set +e
    if [[ -n $SAMPLER_PID ]]; then
        kill "$SAMPLER_PID" 2>/dev/null
        wait "$SAMPLER_PID" 2>/dev/null
    fi
    if is_mounted "$MNT"; then
        say "unmounting $MNT"
        "$FYBRK" --state "$STATE" unmount "$MNT" ||
            fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT" 2>/dev/null ||
            umount -l "$MNT"
    fi
    # The daemon exits after the unmount; give it a moment, then stop it (we started it).
    if [[ -n $DAEMON_PID ]]; then
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$DAEMON_PID" 2>/dev/null; then
            warn "daemon $DAEMON_PID still running after unmount; sending SIGTERM"
            kill "$DAEMON_PID"
        fi
    fi
    # Never rm -rf into a live mount: with the daemon gone it could hang, and it is not ours
    # to delete through.
    if is_mounted "$MNT"; then
        warn "$MNT is still mounted; leaving $WORK in place"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() {
    sync
    if [[ $IS_ROOT -eq 1 ]]; then
        echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || warn "could not write /proc/sys/vm/drop_caches"
    fi
}

# fio_value FILE.json KEY: one number from fio's JSON output (bandwidth in MiB/s, or IOPS).
fio_value() {
    python3 - "$1" "$2" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
key = sys.argv[2]
if key == "write_mibs":
    v = job["write"]["bw_bytes"] / 2**20
elif key == "read_mibs":
    v = job["read"]["bw_bytes"] / 2**20
elif key == "read_iops":
    v = job["read"]["iops"]
else:
    sys.exit(f"unknown key {key}")
print(f"{v:.1f}")
PY
}

# run_fio NAME FILE JSON [fio options...]
# psync, one job, no preallocation (fallocate on FUSE may be unsupported; keep both sides
# equal). fio's default buffers are scrambled per block, so fybrk cannot dedup them away.
run_fio() {
    local name=$1 file=$2 json=$3
    shift 3
    fio --name="$name" --filename="$file" --ioengine=psync --numjobs=1 --fallocate=none \
        --output-format=json --output="$json" "$@"
}

# proc_kib PID FIELD: a /proc/PID/status field such as VmRSS or VmHWM, in KiB (empty if gone).
proc_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null || true; }

# Create-rate test: one process, create + write 1 KiB + close per file; prints files/s.
create_rate() {
    python3 - "$1" "$2" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
os.makedirs(d, exist_ok=True)
buf = bytearray(os.urandom(1024))
start = time.perf_counter()
for i in range(n):
    buf[:8] = i.to_bytes(8, "little")  # distinct content per file: no dedup shortcut
    fd = os.open(os.path.join(d, f"f{i:06d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    if os.write(fd, buf) != len(buf):
        sys.exit("short write")
    os.close(fd)
elapsed = time.perf_counter() - start
print(f"{n / elapsed:.1f}")
PY
}

# --- mount -----------------------------------------------------------------------------------
say "fybrk:   $FYBRK"
say "workdir: $WORK ($(df -h --output=source,fstype,avail "$WORK" | tail -n 1 | tr -s ' '))"
say "fio:     $(fio --version)   kernel: $(uname -r)   cpus: $(nproc)"

# `mount` returns once the filesystem is mounted, leaving the daemon behind.
"$FYBRK" --state "$STATE" mount "$MNT"
is_mounted "$MNT" || die "fybrk mount returned but nothing is mounted at $MNT"
if [[ -r $STATE/daemon.pid ]]; then
    DAEMON_PID=$(tr -dc '0-9' <"$STATE/daemon.pid")
fi
if [[ -z $DAEMON_PID ]] || ! kill -0 "$DAEMON_PID" 2>/dev/null; then
    warn "no live daemon PID in $STATE/daemon.pid; RSS will not be reported"
    DAEMON_PID=""
fi
say "mounted $MNT (daemon pid ${DAEMON_PID:-unknown})"

declare -A R # results: R[test_side] = value

# --- sequential write ------------------------------------------------------------------------
say "sequential write $SIZE, bs=1M: fybrk"
RSS_SAMPLES="$WORK/rss.samples"
: >"$RSS_SAMPLES"
if [[ -n $DAEMON_PID ]]; then
    # Background sampler: VmHWM only gives the lifetime peak; this shows what the write costs.
    (while kill -0 "$DAEMON_PID" 2>/dev/null; do
        proc_kib "$DAEMON_PID" VmRSS >>"$RSS_SAMPLES"
        sleep 0.2
    done) &
    SAMPLER_PID=$!
fi
run_fio seqwrite "$MNT/seq.dat" "$WORK/seqwrite-fybrk.json" --rw=write --bs=1M --size="$SIZE" --end_fsync=1
if [[ -n $SAMPLER_PID ]]; then
    kill "$SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" 2>/dev/null || true
    SAMPLER_PID=""
fi
R[seq_write_fybrk]=$(fio_value "$WORK/seqwrite-fybrk.json" write_mibs)
if [[ -n $DAEMON_PID ]]; then
    hwm=$(proc_kib "$DAEMON_PID" VmHWM)
    [[ -n $hwm ]] && R[rss_hwm_fybrk]=$(awk -v k="$hwm" 'BEGIN {printf "%.1f", k / 1024}')
    max=$(sort -n "$RSS_SAMPLES" | tail -n 1)
    [[ -n $max ]] && R[rss_write_fybrk]=$(awk -v k="$max" 'BEGIN {printf "%.1f", k / 1024}')
fi

say "sequential write $SIZE, bs=1M: native"
run_fio seqwrite "$NATIVE/seq.dat" "$WORK/seqwrite-native.json" --rw=write --bs=1M --size="$SIZE" --end_fsync=1
R[seq_write_native]=$(fio_value "$WORK/seqwrite-native.json" write_mibs)

# --- sequential read -------------------------------------------------------------------------
for side in fybrk native; do
    dir=$MNT
    [[ $side == native ]] && dir=$NATIVE
    say "sequential read $SIZE, bs=1M: $side"
    drop_caches
    run_fio seqread "$dir/seq.dat" "$WORK/seqread-$side.json" --rw=read --bs=1M --size="$SIZE"
    R[seq_read_$side]=$(fio_value "$WORK/seqread-$side.json" read_mibs)
    rm -f "$dir/seq.dat"
done

# --- 4 KiB random read -----------------------------------------------------------------------
# Lay the file out first (not measured), drop caches, then read every 4 KiB block once in random
# order (fio's random map), capped at RAND_RUNTIME seconds: cold random reads, not a warm cache.
for side in fybrk native; do
    dir=$MNT
    [[ $side == native ]] && dir=$NATIVE
    say "4 KiB random read over $RAND_SIZE: $side"
    run_fio layout "$dir/rand.dat" "$WORK/layout-$side.json" --rw=write --bs=1M --size="$RAND_SIZE" --end_fsync=1
    drop_caches
    run_fio randread "$dir/rand.dat" "$WORK/randread-$side.json" --rw=randread --bs=4k \
        --size="$RAND_SIZE" --runtime="$RAND_RUNTIME"
    R[rand_read_$side]=$(fio_value "$WORK/randread-$side.json" read_iops)
    rm -f "$dir/rand.dat"
done

# --- create rate -----------------------------------------------------------------------------
for side in fybrk native; do
    dir=$MNT
    [[ $side == native ]] && dir=$NATIVE
    say "create $FILES files of 1 KiB: $side"
    R[creates_$side]=$(create_rate "$dir/creates" "$FILES")
done

if [[ -n $DAEMON_PID ]]; then
    hwm=$(proc_kib "$DAEMON_PID" VmHWM)
    [[ -n $hwm ]] && R[rss_end_fybrk]=$(awk -v k="$hwm" 'BEGIN {printf "%.1f", k / 1024}')
fi

# --- report ----------------------------------------------------------------------------------
args=()
for k in "${!R[@]}"; do args+=("$k=${R[$k]}"); done
python3 - "$BENCH_DIR/results.json" "$SIZE" "$FILES" "$RAND_SIZE" "$IS_ROOT" "${args[@]}" <<'PY'
import datetime, json, socket, sys

out, size, files, rand_size, is_root = sys.argv[1:6]
r = {k: float(v) for k, v in (a.split("=", 1) for a in sys.argv[6:])}

def row(test, unit, key, target, check):
    fy, nat = r.get(key + "_fybrk"), r.get(key + "_native")
    ratio = fy / nat if fy is not None and nat else None
    ok = check(fy, ratio) if check and fy is not None else None
    return {"test": test, "unit": unit, "fybrk": fy, "native": nat,
            "ratio": None if ratio is None else round(ratio, 3), "target": target,
            "result": None if ok is None else ("PASS" if ok else "MISS")}

rows = [
    row(f"seq write {size} bs=1M", "MiB/s", "seq_write", ">= 35% of native",
        lambda fy, ratio: ratio is not None and ratio >= 0.35),
    row(f"seq read {size} bs=1M", "MiB/s", "seq_read", ">= 50% of native",
        lambda fy, ratio: ratio is not None and ratio >= 0.50),
    row(f"rand read 4k over {rand_size}", "IOPS", "rand_read", "-", None),
    row(f"create {files} x 1 KiB", "files/s", "creates", ">= 5000/s",
        lambda fy, ratio: fy >= 5000),
    row("daemon peak RSS (VmHWM after seq write)", "MiB", "rss_hwm", "<= 50 MiB",
        lambda fy, ratio: fy <= 50),
    row("daemon max VmRSS during seq write", "MiB", "rss_write", "-", None),
    row("daemon peak RSS (VmHWM at end)", "MiB", "rss_end", "-", None),
]

def fmt(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"

table = [["test", "unit", "fybrk", "native", "fybrk/native", "target", "result"]]
for x in rows:
    table.append([x["test"], x["unit"], fmt(x["fybrk"]), fmt(x["native"]),
                  "-" if x["ratio"] is None else f"{x['ratio'] * 100:.0f}%",
                  x["target"], x["result"] or "-"])
widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
print()
for n, line in enumerate(table):
    print("  ".join(c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
                    for i, (c, w) in enumerate(zip(line, widths))))
    if n == 0:
        print("  ".join("-" * w for w in widths))

doc = {
    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "host": socket.gethostname(),
    "params": {"size": size, "files": int(files), "rand_size": rand_size,
               "caches_dropped": is_root == "1"},
    "rows": rows,
}
with open(out, "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
print(f"\nresults written to {out}")
PY
