#!/usr/bin/env bash
# Build libfuse's passthrough_hp example (the FUSE reference column of scripts/bench/fs.sh) and
# print the path of the binary on stdout; everything else goes to stderr.
#
#   scripts/bench/passthrough_hp.sh
#
# Environment:
#   PASSTHROUGH_HP_CACHE  where built binaries are kept, one per libfuse version
#                         [$BENCH_DIR/cache, BENCH_DIR defaulting to /var/tmp/fybrk-bench]
#
# The example is not packaged in Debian, so it is compiled from the fuse3 *source* package of the
# installed libfuse3-dev: same version as the library it links. The source comes through apt's
# deb-src of this machine's own Debian mirrors, with a private sources list and lists dir, so the
# system's apt configuration is left untouched. A second run finds the cached binary and does not
# touch the network. Debian/Ubuntu and root (to apt-get install) on the first run. Exits non-zero
# with a message when it cannot build; fs.sh then runs without the column.
set -euo pipefail

usage() { sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

case "${1:-}" in
    "") ;;
    -h | --help) usage; exit 0 ;;
    *) echo "passthrough_hp.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
esac

say() { printf 'passthrough_hp: %s\n' "$*" >&2; }
die() { printf 'passthrough_hp: error: %s\n' "$*" >&2; exit 1; }

CACHE=${PASSTHROUGH_HP_CACHE:-${BENCH_DIR:-/var/tmp/fybrk-bench}/cache}
# Bump when the build recipe below changes, so an old cached binary is not reused.
RECIPE=1

# --- build tools -----------------------------------------------------------------------------
# libfuse3-dev: headers + pkg-config file of the library the example links; g++: it is C++17.
# Installed here rather than through setup-deps.sh --test, which would pull in the whole test
# suite's packages (chromium, ...) just for this.
need=()
dpkg-query -W -f='${db:Status-Abbrev}' libfuse3-dev 2>/dev/null | grep -q '^ii' || need+=(libfuse3-dev)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v xz >/dev/null 2>&1 || need+=(xz-utils)
command -v python3 >/dev/null 2>&1 || need+=(python3) # reads the apt sources below
if [[ ${#need[@]} -gt 0 ]]; then
    [[ $(id -u) -eq 0 ]] || die "missing ${need[*]}; run as root or: apt-get install ${need[*]}"
    command -v apt-get >/dev/null 2>&1 || die "missing ${need[*]} and no apt-get to install them"
    say "installing ${need[*]}"
    apt_opts=(-y -q -o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0)
    {
        DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update &&
            DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install --no-install-recommends "${need[@]}"
    } >&2 || die "apt-get install ${need[*]} failed"
fi

# The Debian version (3.14.0-4) names the cache entry: the binary must match the installed
# library, and a new upload of the library gets a new build.
DEB_VERSION=$(dpkg-query -W -f='${Version}' libfuse3-dev)
BIN="$CACHE/passthrough_hp-$DEB_VERSION-r$RECIPE/passthrough_hp"
if [[ -x $BIN ]]; then
    say "cached: $BIN"
    printf '%s\n' "$BIN"
    exit 0
fi

# --- source ----------------------------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/passthrough_hp.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
mkdir -p "$SCRATCH/sources.list.d" "$SCRATCH/lists/partial" "$SCRATCH/dl"

# deb-src twins of the enabled Debian/Ubuntu entries, one-line (*.list) and deb822 (*.sources).
# Third-party repositories are left out: most publish no sources, and one failing index would
# make the whole `apt-get update` fail.
python3 - "$SCRATCH/sources.list.d/src.sources" /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources <<'PY'
import os, re, sys

out, paths = sys.argv[1], sys.argv[2:]
distro = re.compile(r"(debian|ubuntu)", re.I)
stanzas = []
for path in paths:
    if not os.path.isfile(path):
        continue
    text = open(path, encoding="utf-8", errors="replace").read()
    if path.endswith(".list"):
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            m = re.match(r"^deb\s+(\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
            if not m or not distro.search(m.group(2)):
                continue
            opts = {}
            for kv in (m.group(1) or "").strip("[] \t").split():
                if "=" in kv:
                    k, v = kv.split("=", 1)
                    opts[k.lower()] = v
            st = {"Types": "deb-src", "URIs": m.group(2), "Suites": m.group(3),
                  "Components": m.group(4)}
            if "signed-by" in opts:
                st["Signed-By"] = opts["signed-by"]
            stanzas.append(st)
    else:
        # deb822: blank-line separated stanzas; continuation lines (an inline key) start with space.
        for block in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in block.splitlines():
                if line.startswith("#"):
                    continue
                if line[:1] in (" ", "\t") and key:
                    fields[key] += "\n" + line
                elif ":" in line:
                    key, val = line.split(":", 1)
                    key = key.strip()
                    fields[key] = val.strip()
            types = fields.get("Types", "").split()
            if "deb" not in types or not distro.search(fields.get("URIs", "")):
                continue
            if fields.get("Enabled", "yes").lower() == "no":
                continue
            fields["Types"] = "deb-src"
            stanzas.append(fields)
with open(out, "w") as f:
    for st in stanzas:
        for k, v in st.items():
            f.write(f"{k}: {v}\n")
        f.write("\n")
print(f"passthrough_hp: {len(stanzas)} deb-src entries", file=sys.stderr)
sys.exit(0 if stanzas else 1)
PY
[[ -s $SCRATCH/sources.list.d/src.sources ]] || die "no Debian/Ubuntu apt sources found to derive deb-src from"

# apt drops privileges to _apt for downloads; let it reach and write where the files go.
if id _apt >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    chmod 755 "$SCRATCH"
    chown _apt "$SCRATCH/dl" "$SCRATCH/lists/partial"
fi
apt_src=(apt-get -q -o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$SCRATCH/sources.list.d"
    -o "Dir::State::Lists=$SCRATCH/lists" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
    -o Acquire::http::Timeout=30 -o Acquire::https::Timeout=30)
say "fetching the fuse3 $DEB_VERSION source (deb-src of this machine's mirrors)"
"${apt_src[@]}" update >&2 || say "apt-get update reported errors; trying the download anyway"
# The exact version first; the candidate if that one is gone from the mirror.
(cd "$SCRATCH/dl" && { "${apt_src[@]}" source --download-only "fuse3=$DEB_VERSION" >&2 ||
    "${apt_src[@]}" source --download-only fuse3 >&2; }) || die "apt-get source fuse3 failed"
orig=$(find "$SCRATCH/dl" -maxdepth 1 -name 'fuse3_*.orig.tar.*' ! -name '*.asc' | head -n 1)
[[ -n $orig ]] || die "no fuse3_*.orig.tar.* downloaded"
tar -xf "$orig" -C "$SCRATCH"
src=$(find "$SCRATCH" -path '*/example/passthrough_hp.cc' | head -n 1)
[[ -n $src ]] || die "example/passthrough_hp.cc not in $(basename "$orig")"

# --- build -----------------------------------------------------------------------------------
# libfuse's meson build compiles the example against a private config (config.h) that the
# example itself never includes, so these feature macros come out undefined there. Two are
# needed for a usable reference: HAVE_UTIMENSAT, without which setting times by path fails
# (`cp -a` then errors on every file), and HAVE_POSIX_FALLOCATE, without which fallocate(2) is
# ENOTSUP (the preallocated-write case). Both functions exist on every Linux libc. HAVE_SETXATTR
# stays off, as in libfuse's build: xattr handlers would add a getxattr round trip to writes.
say "compiling $(basename "$(dirname "$(dirname "$src")")")/example/passthrough_hp.cc"
mkdir -p "$(dirname "$BIN")"
# shellcheck disable=SC2046 # pkg-config prints several words on purpose
g++ -O2 -std=c++17 -DHAVE_UTIMENSAT -DHAVE_POSIX_FALLOCATE $(pkg-config --cflags fuse3) \
    -o "$BIN.tmp" "$src" $(pkg-config --libs fuse3) -lpthread >&2 || die "g++ failed"
mv -f "$BIN.tmp" "$BIN"
say "built $BIN"
printf '%s\n' "$BIN"
