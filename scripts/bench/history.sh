#!/usr/bin/env bash
# History's space cost for two realistic workloads, through a real mount:
#
#   1. a 1 MiB document saved 1,000 times, each save changing 100 bytes somewhere;
#   2. a 256 MiB file rewritten 10 times, each time with 1 MiB changed in one place.
#
# Every save is a whole-file rewrite (open O_TRUNC, write, close), as editors do. Prints, per
# workload, what the files hold now, what the store holds on disk, and what history adds
# (`history_bytes` after `fybrk gc`, i.e. what deleting all history would free).
#
#   scripts/bench/history.sh            (needs root and /dev/fuse; builds nothing: set FYBRK_BIN
#                                        or run `cargo build --release -p fybrk` first)
set -euo pipefail
# Daemons stay on this machine: no DHT, no LAN announcements.
export FYBRK_NO_DHT=1 FYBRK_NO_LAN_DISCOVERY=1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${FYBRK_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/fybrk}
[[ -x $BIN ]] || { echo "no fybrk binary at $BIN: cargo build --release -p fybrk" >&2; exit 1; }

tmp=$(mktemp -d /tmp/fybrk-history-bench.XXXXXX)
state=$tmp/state
mnt=$tmp/mnt
cleanup() {
    "$BIN" --state "$state" unmount "$mnt" >/dev/null 2>&1 || umount -l "$mnt" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
# Each workload on a fresh folder, so its figures are its own.
fresh() {
    cleanup
    mkdir -p "$mnt"
    "$BIN" --state "$state" mount "$mnt" --listen 127.0.0.1:0 >/dev/null
}

measure() {
    "$BIN" --state "$state" gc >/dev/null
    "$BIN" --state "$state" status --json | python3 -c '
import json, sys
s = json.load(sys.stdin)
f = lambda k: s[k] / (1 << 20)
print("  files now %8.1f MiB   stored on disk %8.1f MiB   of which history %8.1f MiB"
      % (f("logical_bytes"), f("stored_bytes"), f("history_bytes")))
'
}

fresh
echo "1,000 saves of a 1 MiB document, 100 bytes changed per save (1,000 MiB written):"
python3 - "$mnt/doc.bin" <<'PY'
import random, sys
r = random.Random(1)
doc = bytearray(r.randbytes(1 << 20))
for _ in range(1000):
    off = r.randrange(len(doc) - 100)
    doc[off:off + 100] = r.randbytes(100)
    with open(sys.argv[1], "wb") as f:
        f.write(doc)
PY
measure

fresh
echo "a 256 MiB file rewritten 10 times, 1 MiB changed each time (2.5 GiB written):"
python3 - "$mnt/big.bin" <<'PY'
import random, sys
r = random.Random(2)
big = bytearray(b"".join(r.randbytes(1 << 20) for _ in range(256)))
for _ in range(11):
    off = r.randrange(len(big) - (1 << 20))
    big[off:off + (1 << 20)] = r.randbytes(1 << 20)
    with open(sys.argv[1], "wb") as f:
        f.write(big)
PY
measure
