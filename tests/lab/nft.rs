//! The nftables rulesets of the lab's routers, as text for `nft -f`.
//!
//! Every router names its interfaces `wan` (towards the internet) and `lan` (towards the device, or
//! towards the home router for a CGNAT). What each kind does, in RFC 4787 terms:
//!
//! | kind                  | mapping                 | filtering                        |
//! |-----------------------|-------------------------|----------------------------------|
//! | Home                  | endpoint-independent    | address-dependent                |
//! | PortRestricted, CGNAT | endpoint-independent    | address- and port-dependent      |
//! | Masquerade            | endpoint-independent    | address- and port-dependent      |
//! | Symmetric             | address+port-dependent  | address- and port-dependent      |
//!
//! Linux NAT is conntrack: `masquerade` keeps the device's source port when the resulting 5-tuple
//! is free, which for one device behind a router is always, so the mapping is the same towards
//! every destination (endpoint-independent). An inbound packet passes only if it is the reply
//! direction of a conntrack entry, so Linux filters by address *and* port on its own.
//! `masquerade random` picks a new random port per connection: a new mapping per destination.
//!
//! Home's address-dependent filtering needs more than conntrack: a postrouting chain running after
//! source NAT records, for every outbound UDP packet, (destination address, public port) -> (device
//! address, device port) in a dynamic map, and prerouting DNATs a new inbound flow whose
//! (source address, destination port) is in that map. So after the device sent to 198.51.100.10:7000,
//! 198.51.100.10 may write to the device's mapping from any port; nobody else may.
//!
//! Every router drops new inbound flows addressed to itself (`input`). Besides being what real
//! routers do, it keeps the dropped packet's conntrack entry unconfirmed: otherwise a hole-punch
//! packet that arrives before the device's own first packet would occupy the 5-tuple, and the
//! device's packet would be NATed to another port, breaking the punch.
//!
//! Except `Masquerade`: a Linux box whose only rule is `masquerade`, its input chain accepting
//! everything (no service listens on the WAN, so the kernel answers with ICMP port unreachable).
//! The early probe's entry is confirmed there, lives 30 s after its last packet, and the device's
//! own first datagram to that peer leaves from another public port: the conflict the other kinds
//! avoid, which hole punching has to survive (see `Puncher` in `net/nat/src/rendezvous/`).

use std::fmt::Write as _;
use std::net::SocketAddr;

/// Which inbound flows a router lets through to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Filtering {
    /// From any port of an address the device has sent to (Home).
    Address,
    /// Only replies from exactly the address and port the device sent to (plain conntrack).
    AddressAndPort,
}

/// One router's NAT behaviour.
#[derive(Clone, Copy, Debug)]
pub(super) struct Nat {
    /// A new random public port per destination (symmetric NAT) instead of keeping the port.
    pub(super) random_port: bool,
    pub(super) filtering: Filtering,
    /// Drop every UDP datagram from the LAN that is not addressed to this address (TURN only).
    pub(super) udp_only_to: Option<SocketAddr>,
    /// Public UDP port = device port XOR this (0: the device's own port). Still one mapping per
    /// device port, whatever the destination; [`super::Device::lose_mappings`] changes it, as a
    /// router that rebooted hands out new ports.
    pub(super) port_xor: u16,
    /// Accept new flows addressed to the router itself instead of dropping them
    /// ([`super::RouterKind::Masquerade`]): their conntrack entries are confirmed.
    pub(super) accept_input: bool,
}

/// The public namespace's `lab_transit` table: the bridge between the routers drops IPv4
/// datagrams whose TTL is 2 or less, as the two routers (at least) between two customers of an
/// ISP would. Without it, a datagram that leaves a NAT with any TTL reaches the other router, and
/// a low-TTL probe (one that opens its own NAT but dies in the network, see `Puncher` in
/// `net/nat/src/rendezvous/`) could not be tested. Servers sit on the bridge's own addresses, so
/// traffic to them is not forwarded by the bridge and is never dropped here.
pub(super) const TRANSIT: &str = "table bridge lab_transit {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ether type ip ip ttl <= 2 drop
  }
}
";

/// How long Home remembers that the device wrote to an address: conntrack's timeout for an
/// established UDP flow (`nf_conntrack_udp_timeout_stream`, 120 s), so both forget together.
const ADDRESS_FILTER_TIMEOUT: &str = "120s";

/// The `lab` table of a router doing `nat` between `lan` and `wan`.
pub(super) fn router(nat: &Nat) -> String {
    let masq = if nat.random_port {
        "masquerade random".to_string()
    } else if nat.port_xor != 0 {
        format!(
            "meta l4proto udp masquerade to :udp sport ^ {}\n    oifname \"wan\" masquerade",
            nat.port_xor
        )
    } else {
        "masquerade".to_string()
    };
    // Declaring then deleting the table first makes a reload replace it (and forget `sent_to`).
    let mut s = String::from("table ip lab\ndelete table ip lab\n");
    s.push_str("table ip lab {\n");
    writeln!(
        s,
        "  chain post_nat {{\n    type nat hook postrouting priority srcnat; policy accept;\n    \
         oifname \"wan\" {masq}\n  }}"
    )
    .unwrap();
    // A router takes from the internet only what is addressed to it: after `Lab::renumber`,
    // datagrams a neighbour still sends to the old address (its ARP cache) must not find the
    // mapping through `pre_nat` below.
    s.push_str(
        "  chain pre_f {\n    type filter hook prerouting priority raw; policy accept;\n    \
         iifname \"wan\" fib daddr type != local drop\n  }\n",
    );
    if !nat.accept_input {
        s.push_str(
            "  chain input_f {\n    type filter hook input priority filter; policy accept;\n    \
             iifname \"wan\" ct state new,invalid drop\n  }\n",
        );
    }
    s.push_str(
        "  chain forward_f {\n    type filter hook forward priority filter; policy accept;\n    \
         iifname \"wan\" ct state invalid drop\n    \
         iifname \"wan\" ct state new ct status & dnat == 0 drop\n",
    );
    if let Some(turn) = nat.udp_only_to {
        let SocketAddr::V4(turn) = turn else {
            panic!("the lab is IPv4 only: {turn}")
        };
        writeln!(
            s,
            "    iifname \"lan\" meta l4proto udp ip daddr . udp dport != {{ {} . {} }} drop",
            turn.ip(),
            turn.port()
        )
        .unwrap();
    }
    s.push_str("  }\n");
    if nat.filtering == Filtering::Address {
        writeln!(
            s,
            "  map sent_to {{\n    type ipv4_addr . inet_service : ipv4_addr . inet_service\n    \
             flags dynamic,timeout\n    timeout {ADDRESS_FILTER_TIMEOUT}\n  }}"
        )
        .unwrap();
        // After srcnat (priority 100) the packet carries its public source port.
        s.push_str(
            "  chain learn {\n    type filter hook postrouting priority srcnat + 10; policy accept;\n    \
             oifname \"wan\" meta l4proto udp update @sent_to { ip daddr . udp sport : \
             ct original ip saddr . ct original proto-src }\n  }\n",
        );
        s.push_str(
            "  chain pre_nat {\n    type nat hook prerouting priority dstnat; policy accept;\n    \
             iifname \"wan\" meta l4proto udp dnat ip to ip saddr . udp dport map @sent_to\n  }\n",
        );
    }
    s.push_str("}\n");
    s
}

/// The `lab_loss` table: drops `percent` % of the packets forwarded by a router (each direction
/// on its own), or of those entering and leaving `eth0` of an un-NATed device. Replaces the
/// previous loss setting; 0 removes it.
pub(super) fn loss(percent: u8, on_router: bool) -> String {
    assert!(percent <= 100, "loss is a percentage: {percent}");
    // Declaring then deleting the table removes it whether or not it exists.
    let mut s = String::from("table ip lab_loss\ndelete table ip lab_loss\n");
    if percent == 0 {
        return s;
    }
    // nftables takes no `< 100` against a value of 0-99: everything is a plain drop.
    let rule = if percent == 100 {
        "drop".to_string()
    } else {
        format!("numgen random mod 100 < {percent} drop")
    };
    s.push_str("table ip lab_loss {\n");
    // Before the router's own filter chains, so a dropped packet never creates NAT state.
    if on_router {
        writeln!(
            s,
            "  chain fwd_loss {{\n    type filter hook forward priority filter - 10; policy accept;\n    \
             {rule}\n  }}"
        )
        .unwrap();
    } else {
        writeln!(
            s,
            "  chain in_loss {{\n    type filter hook input priority filter - 10; policy accept;\n    \
             iifname \"eth0\" {rule}\n  }}\n  chain out_loss {{\n    \
             type filter hook output priority filter - 10; policy accept;\n    \
             oifname \"eth0\" {rule}\n  }}"
        )
        .unwrap();
    }
    s.push_str("}\n");
    s
}

/// The `lab_block` table: a router drops every packet it forwards to or from one of `ips`,
/// before its NAT sees it. Replaces the previous list; an empty one removes the table.
pub(super) fn block(ips: &[std::net::Ipv4Addr]) -> String {
    let mut s = String::from("table ip lab_block\ndelete table ip lab_block\n");
    if ips.is_empty() {
        return s;
    }
    let set = ips
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    writeln!(
        s,
        "table ip lab_block {{\n  chain fwd_block {{\n    \
         type filter hook forward priority filter - 20; policy accept;\n    \
         ip daddr {{ {set} }} drop\n    ip saddr {{ {set} }} drop\n  }}\n}}"
    )
    .unwrap();
    s
}
