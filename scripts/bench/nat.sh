#!/usr/bin/env bash
# NAT traversal figures in the lab (tests/lab/): needs root (network namespaces, nftables) and
# coturn (scripts/setup-deps.sh --test installs it).
#
#   sudo scripts/bench/nat.sh
#
# For a home-home pair (direct, hole-punched through the lab's rendezvous server), a
# symmetric-symmetric pair (relayed through coturn: one side reaches the other's relayed
# address), a home / UDP-blocked pair (the blocked side sends everything through coturn) and a
# symmetric-symmetric pair whose first router runs miniupnpd (direct through its PCP port mapping;
# needs miniupnpd-nftables), prints:
#   connect (s)  from starting the second device's daemon to a file written while it was down
#                being readable on it (targets: direct <= 2 s, relayed <= 5 s)
#   MiB/s        a 64 MiB file written on the first device until verified on the second
#                (target: relayed >= 50 % of direct)
# Then, for every pair of router kinds (tests/restricted.rs: home, port-restricted, masquerade,
# symmetric, double NAT, open, and UDP-blocked with home), RUNS pairings each (default 20, 4 labs
# at a time; FYBRK_MATRIX_JOBS changes that), prints:
#   expected     the path the pair must end on right after pairing (direct or relay)
#   as expected  how many of the runs did
#   median/max   from `pair-with` to the link being up (s)
#
#   sudo scripts/bench/nat.sh            # both tables
#   sudo RUNS=20 scripts/bench/nat.sh matrix   # only the pairing matrix
#
# Then the serverless paths: two devices behind home (and port-restricted) routers, no
# rendezvous server, both restarted at new public ports, find each other through the lab's own
# Mainline DHT (tests/dht.rs): seconds from the restart to a direct link both ways; a device on
# a LAN renumbered, found again by LAN discovery (tests/lan.rs): seconds until a file written
# after the change arrives; two IPv6-only devices (tests/ipv6.rs): seconds from `pair-with` to a
# direct IPv6 link.
#
# It runs the ignored tests `nat_bench` in tests/nat_sync.rs, `portmap_bench` in tests/portmap.rs
# and `restricted_bench` in tests/restricted.rs, and tests/dht.rs; nothing leaves the lab.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
case "${1:-}" in
    -h | --help) sed -n '2,35s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
esac
if [[ $(id -u) -ne 0 ]]; then
    echo "nat.sh: needs root (network namespaces)" >&2
    exit 1
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo build --release -p fybrk >/dev/null
if [[ "${1:-}" != matrix ]]; then
    CI=true cargo test --release -p fybrk -p fybrk-tests --test nat_sync nat_bench -- --ignored \
        --nocapture 2>&1 | grep -E "^(pair|Home|Symmetric|UdpBlocked|test result)"
    CI=true cargo test --release -p fybrk -p fybrk-tests --test portmap portmap_bench -- --ignored \
        --nocapture 2>&1 | grep -E "^(Symmetric|test result)"
fi
FYBRK_BENCH_RUNS=${RUNS:-20} CI=true cargo test --release -p fybrk -p fybrk-tests --test restricted \
    restricted_bench -- --ignored --nocapture 2>&1 \
    | grep -E "^(pair|Home|PortRestricted|Masquerade|Symmetric|DoubleNat|Open|test result)"
if [[ "${1:-}" != matrix ]]; then
    CI=true cargo test --release -p fybrk -p fybrk-tests --test dht -- --nocapture --test-threads 1 \
        2>&1 | grep -E "^(test .*nats|found each other|test result)"
    CI=true cargo test --release -p fybrk -p fybrk-tests --test lan renumbered -- --nocapture \
        2>&1 | grep -E "^(reconnected after|test result)"
    CI=true cargo test --release -p fybrk -p fybrk-tests --test ipv6 two_ipv6 -- --nocapture \
        2>&1 | grep -E "^(IPv6|test result)"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
