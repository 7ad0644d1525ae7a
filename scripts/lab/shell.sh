#!/usr/bin/env bash
# Build a NAT lab with one device behind a router of KIND, open a shell in the device's network
# namespace, and tear the lab down when the shell exits.
#
#   scripts/lab/shell.sh KIND     KIND: home | port-restricted | symmetric | double-nat |
#                                       udp-blocked | open
#
# Needs root. The lab is built by the Rust harness itself (tests/lab/, through the ignored test
# `manual_lab_shell` in tests/nat_lab.rs), so what you poke at is exactly what the tests use.
# The first run compiles the test binary (release profile; honours CARGO_TARGET_DIR).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
usage() { sed -n '2,10s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
die() { printf 'lab shell: %s\n' "$*" >&2; exit 1; }

kind=${1:-}
case "$kind" in
    home | port-restricted | symmetric | double-nat | udp-blocked | open) ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
esac
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, nftables)"
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi

work=$(mktemp -d -t fybrk-lab-shell.XXXXXX)
info=$work/lab.env
log=$work/harness.log
lab_pid=
cleanup() {
    # Removing the info file tells the harness to drop the lab; then wait for the teardown.
    rm -f "$info"
    if [[ -n $lab_pid ]]; then
        wait "$lab_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

cd "$ROOT"
FYBRK_LAB_KIND=$kind FYBRK_LAB_INFO=$info FYBRK_LAB_SHELL_PID=$$ \
    cargo test --release -p fybrk-tests --test nat_lab -- \
    --ignored --exact manual_lab_shell --nocapture >"$log" 2>&1 &
lab_pid=$!

echo "lab shell: building the lab (the first run compiles the test binary; log: $log)"
until [[ -f $info ]]; do
    if ! kill -0 "$lab_pid" 2>/dev/null; then
        cat "$log" >&2
        die "the harness exited before the lab was up"
    fi
    sleep 0.2
done
# shellcheck source=/dev/null
source "$info"

cat <<INFO

  device      $DEV_NS   $LAN_IP  (router kind: $ROUTER_KIND)
  router      ${ROUTER_NS:-none}   public address $PUBLIC_IP${CGNAT_NS:+   behind CGNAT $CGNAT_NS}
  public ns   $PUBLIC_NS   coturn ${TURN:-not installed}   Echo servers $ECHO1 $ECHO2
  lab files   $LAB_DIR

  Try:  turnutils_stunclient ${TURN%:*}                  (your mapping, as coturn sees it)
        python3 -c 'import socket; u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \\
          u.sendto(b"whoami 1", ("${ECHO1%:*}", ${ECHO1##*:})); print(u.recv(99))'
        nsenter --net=/run/netns/$ROUTER_NS nft list ruleset     (the router's rules)
  Exit the shell to tear the lab down.

INFO
nsenter --net="/run/netns/$DEV_NS" env PS1="[lab $kind $DEV_NS] \\w# " bash --norc -i || true
