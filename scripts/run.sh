#!/usr/bin/env bash
# The "new user" command: install what is missing, build fybrk, install it, mount the folder.
#
#   scripts/run.sh [MOUNTPOINT]      (default: ~/Fybrk)
#
# Steps: scripts/setup-deps.sh (system packages; the Rust toolchain must already be there),
# `cargo build --release -p fybrk`, copy the binary to ~/.local/bin/fybrk, `fybrk mount`, and
# `fybrk status`. Safe to run again: an existing fybrk mount is left alone and its status shown.
# The state dir is fybrk's default (~/.local/share/fybrk) unless FYBRK_STATE is set.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "${1:-}" in
    -h | --help) sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
esac
if [[ $# -gt 1 ]]; then
    echo "usage: scripts/run.sh [MOUNTPOINT]" >&2
    exit 2
fi

MNT=${1:-$HOME/Fybrk}
# Absolute, without a trailing slash: findmnt and the daemon (which leaves the caller's cwd)
# both need the same spelling of the path. Done textually, because resolving it would touch
# the mount point, and a stale FUSE mount answers every stat with ENOTCONN.
[[ $MNT == /* ]] || MNT="$PWD/$MNT"
[[ $MNT == / ]] || MNT=${MNT%/}

BIN_DIR="$HOME/.local/bin"
BIN="$BIN_DIR/fybrk"

say() { printf '==> %s\n' "$*"; }

# rustup's default location, for a shell that has not sourced ~/.cargo/env yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

# Prints "FSTYPE SOURCE" if something is mounted exactly at $1 (works on a stale mount too,
# unlike `mountpoint`, which has to stat it).
mount_at() {
    findmnt -rn -M "$1" -o FSTYPE,SOURCE 2>/dev/null || true
}
# fybrk mounts with subtype "fybrk" and fsname "fybrk", i.e. "fuse.fybrk fybrk" in findmnt.
is_fybrk_mount() {
    local fstype source
    read -r fstype source <<<"$(mount_at "$1")" || true
    [[ ${fstype:-} == fuse.fybrk || (${fstype:-} == fuse* && ${source:-} == *fybrk*) ]]
}

say "checking system packages"
bash "$ROOT/scripts/setup-deps.sh"

say "building fybrk (release; the first build compiles RocksDB's C++ and takes a while)"
(cd "$ROOT" && cargo build --release -p fybrk)

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $target_dir == /* ]] || target_dir="$ROOT/$target_dir"
built="$target_dir/release/fybrk"
[[ -x $built ]] || { echo "error: build finished but $built is missing" >&2; exit 1; }

# Copy next to the destination, then rename over it: a running daemon keeps executing the old
# file (overwriting it in place would fail with "Text file busy" or corrupt it).
mkdir -p "$BIN_DIR"
install -m 0755 "$built" "$BIN_DIR/.fybrk.new.$$"
mv -f "$BIN_DIR/.fybrk.new.$$" "$BIN"
say "installed $BIN"
case ":$PATH:" in
    *":$BIN_DIR:"*) ;;
    *)
        echo "warning: $BIN_DIR is not on your PATH; add this to your shell profile:" >&2
        # Single quotes on purpose: the user should paste the literal text.
        # shellcheck disable=SC2016
        echo '    export PATH="$HOME/.local/bin:$PATH"' >&2
        ;;
esac

if is_fybrk_mount "$MNT"; then
    if stat "$MNT" >/dev/null 2>&1; then
        say "$MNT is already mounted by fybrk"
        echo "    (it runs the binary it was started with; to switch to this build:"
        echo "     $BIN unmount '$MNT' && $0 '$MNT')"
        "$BIN" status
        exit 0
    fi
    # The daemon died and left the kernel mount behind ("Transport endpoint is not connected").
    # `fybrk mount` clears a stale mount of its own mount point too; doing it here first lets
    # `mkdir -p` below work.
    say "$MNT is a stale fybrk mount (daemon gone); cleaning it up"
    "$BIN" unmount "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
elif [[ -n $(mount_at "$MNT") ]]; then
    echo "error: something else is mounted at $MNT: $(mount_at "$MNT")" >&2
    exit 1
fi

mkdir -p "$MNT"
say "mounting $MNT"
"$BIN" mount "$MNT"
"$BIN" status
echo
echo "Your folder is at $MNT. Stop it with: fybrk unmount '$MNT'"
