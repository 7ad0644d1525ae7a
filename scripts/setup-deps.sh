#!/usr/bin/env bash
# Install the system packages fybrk needs to build and run (and, with --test, to run every test).
#
#   scripts/setup-deps.sh          build + run: FUSE, clang/libclang for RocksDB's bindgen, ...
#   scripts/setup-deps.sh --test   also what the test suite and benchmarks use (coturn, nftables, ...)
#
# Debian/Ubuntu only (apt-get). It is idempotent and cheap when everything is already there:
# `apt-get update` runs only if a package is actually missing. The Rust toolchain itself is NOT
# installed here (it comes from rustup, per user); we only check that it is present and recent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
    sed -n '2,9s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

with_test=0
for arg in "$@"; do
    case "$arg" in
        --test) with_test=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "setup-deps: unknown argument '$arg'" >&2; usage >&2; exit 2 ;;
    esac
done

say() { printf 'setup-deps: %s\n' "$*"; }
die() { printf 'setup-deps: error: %s\n' "$*" >&2; exit 1; }

# Why each package is here:
#   fuse3            fusermount3: fuser mounts with mount(2) as root, but needs it as a normal user
#   clang, libclang-dev  the rocksdb crate runs bindgen, which needs libclang *and* its headers
#   pkg-config, build-essential  RocksDB's C++ is compiled from source by the cc crate
#   ca-certificates  cargo fetching crates over HTTPS on a minimal image
base_pkgs=(fuse3 clang libclang-dev pkg-config build-essential ca-certificates)
# Test suite and benchmarks:
#   git, sqlite3, tar, fio, python3, hyperfine  workloads run inside the mount; fio/python3 for benches
#   psmisc (fuser/killall), procps (ps/pgrep), util-linux (findmnt/mountpoint/nsenter)  daemon
#                    tests; nsenter also runs commands in the NAT lab's namespaces
#   e2fsprogs        chattr/lsattr/mkfs.ext4, for tests that compare against a native filesystem
#   coturn           real STUN/TURN server for the NAT lab (turnserver; its turnutils_* clients)
#   nftables, iproute2  NAT routers and loss injection in network namespaces (the NAT lab)
#   miniupnpd-nftables  the real NAT-PMP/PCP/UPnP IGD daemon on a lab router (tests/portmap.rs);
#                    its Debian service never starts in a container without systemd
#   conntrack        a lab router forgets its NAT mappings (`conntrack -F`): a changed network;
#                    tests/restricted.rs lists a router's UDP entries (`conntrack -L`) when a
#                    pairing ends relayed: the stale entries behind it
#   syncthing        the side-by-side peer in the sync benchmark
#   perl             `prove`, which runs the vendored pjdfstest .t files (tests/pjdfs.rs); gcc for
#                    its C helper comes with build-essential
#   systemd          systemd-analyze verifies the unit `fybrk service` writes, systemd-escape
#                    checks its name (tests/service.rs); ~10 MB, nothing is started
#   chromium, chromium-driver  tests/web.rs drives the web page in headless Chromium (WebDriver)
#   python3-prometheus-client  tests/web.rs parses /metrics with the reference text parser
#   libfuse3-dev     scripts/bench/fs.sh compiles libfuse's passthrough_hp example, its FUSE
#                    reference column, against it (scripts/bench/passthrough_hp.sh)
test_pkgs=(git sqlite3 fio tar python3 psmisc procps util-linux e2fsprogs
    coturn nftables iproute2 conntrack miniupnpd-nftables syncthing hyperfine perl systemd
    chromium chromium-driver python3-prometheus-client libfuse3-dev)

pkgs=("${base_pkgs[@]}")
if [[ $with_test -eq 1 ]]; then
    pkgs+=("${test_pkgs[@]}")
fi

# Root runs apt-get directly (CI, containers); anyone else goes through sudo.
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo_cmd=(sudo)
    fi
fi
as_root() {
    if [[ $(id -u) -ne 0 && ${#sudo_cmd[@]} -eq 0 ]]; then
        die "need root for: $*  (run this script as root, or install sudo)"
    fi
    "${sudo_cmd[@]}" "$@"
}

# ---------------------------------------------------------------------------------------------
# 1. System packages
# ---------------------------------------------------------------------------------------------
if command -v dpkg-query >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    missing=()
    for p in "${pkgs[@]}"; do
        # "ii" = desired install, actually installed. Anything else (absent, "rc" removed with
        # config left behind, half-configured) counts as missing.
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        if [[ $status != ii* ]]; then
            missing+=("$p")
        fi
    done

    if [[ ${#missing[@]} -eq 0 ]]; then
        say "all ${#pkgs[@]} packages already installed"
    else
        say "installing: ${missing[*]}"
        # The lock timeout lets us wait for another apt run (unattended-upgrades, a second
        # script) instead of failing at once. noninteractive: CI has no stdin and no TTY;
        # Use-Pty=0 keeps dpkg's progress bars out of CI logs.
        apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
        as_root env DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update
        as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get "${apt_opts[@]}" install --no-install-recommends "${missing[@]}"
    fi
else
    # Not Debian/Ubuntu: we cannot install for you, but the cargo and /dev/fuse checks below
    # still apply, so carry on instead of stopping a user who already has everything.
    say "warning: apt-get/dpkg not found (not Debian/Ubuntu?); install the equivalents of:"
    say "  ${pkgs[*]}"
fi

# ---------------------------------------------------------------------------------------------
# 2. Rust toolchain (checked, never installed)
# ---------------------------------------------------------------------------------------------
# rustup puts cargo in ~/.cargo/bin, which a fresh login shell may not have on PATH yet.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
    say "note: using $HOME/.cargo/bin/cargo (not on your PATH; run: . \"\$HOME/.cargo/env\")"
fi
if ! command -v cargo >/dev/null 2>&1; then
    cat >&2 <<'EOF'
setup-deps: error: cargo (the Rust toolchain) is not installed.
  fybrk does not install Rust for you. Install it with rustup, then open a new shell:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
  and re-run this command.
EOF
    exit 1
fi

# The workspace declares a minimum Rust version; a too-old rustc fails late with confusing
# errors deep in a dependency, so say it up front.
need_rust=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$ROOT/Cargo.toml" | head -n 1)
have_rust=$(rustc --version 2>/dev/null | awk '{print $2}' || true)
if [[ -n $need_rust && -n $have_rust ]]; then
    oldest=$(printf '%s\n%s\n' "$need_rust" "$have_rust" | sort -V | head -n 1)
    if [[ $oldest != "$need_rust" ]]; then
        die "rustc $have_rust is older than the $need_rust this workspace needs: run 'rustup update'"
    fi
fi
say "rust toolchain: $(cargo --version)"
# The test command runs clippy with -D warnings. rustup's default profile has it; a minimal
# profile does not, and then the run would fail on a missing tool rather than on a lint.
if [[ $with_test -eq 1 ]] && ! cargo clippy --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then
        say "clippy missing: rustup component add clippy"
        rustup component add clippy
    else
        die "cargo clippy is missing and there is no rustup to add it: install clippy for this toolchain"
    fi
fi

# ---------------------------------------------------------------------------------------------
# 3. /dev/fuse
# ---------------------------------------------------------------------------------------------
# Without the device nothing can be mounted. On a normal machine the fuse module is loaded on
# demand; in a minimal VM it may need modprobe; in a container it must be passed in.
if [[ ! -e /dev/fuse ]] && command -v modprobe >/dev/null 2>&1; then
    say "/dev/fuse missing, trying: modprobe fuse"
    as_root modprobe fuse || true
fi
if [[ ! -c /dev/fuse ]]; then
    msg="/dev/fuse is not available, so nothing can be mounted.
  Load the kernel module (sudo modprobe fuse), or, inside a container, start it with
  --device /dev/fuse --cap-add SYS_ADMIN."
    # The test suite still has plenty to run without FUSE (mount tests skip loudly), so a
    # developer's --test run only warns. In CI mount tests must never skip: fail right here.
    if [[ $with_test -eq 1 && ${CI:-} != true ]]; then
        printf 'setup-deps: warning: %s\n' "$msg" >&2
    else
        die "$msg"
    fi
else
    say "/dev/fuse present"
fi

# A normal user mounts through the setuid fusermount3; without it fuser fails with a
# confusing "No such file or directory".
if [[ $(id -u) -ne 0 ]] && ! command -v fusermount3 >/dev/null 2>&1; then
    die "fusermount3 not found (Debian/Ubuntu package fuse3); non-root mounts need it"
fi

# ---------------------------------------------------------------------------------------------
# 4. pjdfstest's C helper (tests/pjdfs.rs)
# ---------------------------------------------------------------------------------------------
# The .t files look for an executable `pjdfstest` in their own directory or a parent, so it is
# built beside the vendored source (gitignored). Rebuilt only when the source is newer.
if [[ $with_test -eq 1 ]]; then
    pjd="$ROOT/tests/pjdfstest"
    if [[ ! -x $pjd/pjdfstest || $pjd/pjdfstest.c -nt $pjd/pjdfstest || $pjd/config.h -nt $pjd/pjdfstest ]]; then
        say "building tests/pjdfstest/pjdfstest"
        cc -Wall -Werror -O2 -o "$pjd/pjdfstest.tmp" "$pjd/pjdfstest.c" ||
            die "cannot build tests/pjdfstest/pjdfstest (gcc from build-essential)"
        mv -f "$pjd/pjdfstest.tmp" "$pjd/pjdfstest"
    else
        say "tests/pjdfstest/pjdfstest up to date"
    fi
fi

say "done"
