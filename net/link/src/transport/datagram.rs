//! How large a QUIC datagram may get: the bound of quinn's MTU discovery, from the socket's
//! receive buffer and the MTU of the interfaces it sends through.

/// quinn's default bound for MTU discovery: a datagram that fits Ethernet's 1500-byte MTU over
/// IPv4 and IPv6.
pub const ETHERNET_DATAGRAM: u16 = 1452;

/// The largest UDP payload (over IPv6; IPv4 takes 20 bytes less, which discovery finds).
pub const LARGEST_DATAGRAM: u16 = 65_527;

/// A receive buffer that holds a burst of large datagrams: what the daemon asks for.
pub const LARGE_DATAGRAM_BUFFER: usize = 4 << 20;

/// The smallest datagram QUIC allows (and quinn's starting MTU).
pub const SMALLEST_DATAGRAM: u16 = 1200;

/// What an interface's MTU holds besides the UDP payload: the IPv6 and UDP headers (IPv4's are
/// 20 bytes smaller, which discovery finds).
const IP_UDP_HEADERS: u32 = 48;

/// How far MTU discovery may search on a socket whose receive buffer is `receive_buffer` bytes
/// (as `getsockopt(SO_RCVBUF)` reports it) and whose datagrams leave through interfaces of at
/// most `link_mtu` bytes.
///
/// Each packet costs the same CPU whatever its size (header protection, AEAD set-up, a system
/// call's share, acknowledgements), so a path that takes larger datagrams than Ethernet
/// (loopback, jumbo-frame LANs, some virtual networks) should carry them: between two daemons
/// on loopback, a 1 GiB sync took 5.7 + 8.0 -> 3.8 + 4.4 CPU-seconds (sender + receiver) and
/// ran 116 -> 173 MiB/s (`scripts/bench/sync.sh`, median of 3).
///
/// Never beyond the interface, though: quinn sets "don't fragment", so the kernel refuses a
/// datagram over the interface's MTU, and MTU probes bypass the congestion window, so every
/// such doomed probe (each size is tried four times) would hold data back until it is declared
/// lost. A daemon on a 1500-byte Ethernet searches up to 1452 as quinn's default does; on an
/// interface below that (this VM's is 1400) it stops below 1452 instead of probing it in vain.
///
/// And a large datagram fills a small receive buffer at once: with Linux's default 208 KiB, a
/// 16 MiB transfer on loopback lost a quarter of its bytes at 58 KB datagrams against 3 % at
/// 1452. So the search goes past Ethernet only where the socket got the buffer the daemon asks
/// for (root, or `net.core.rmem_max` at least [`LARGE_DATAGRAM_BUFFER`]).
pub fn largest_datagram(receive_buffer: usize, link_mtu: u32) -> u16 {
    let link = u16::try_from(link_mtu.saturating_sub(IP_UDP_HEADERS))
        .unwrap_or(LARGEST_DATAGRAM)
        .clamp(SMALLEST_DATAGRAM, LARGEST_DATAGRAM);
    // The kernel reports twice what was set (its bookkeeping share); either way this many.
    if receive_buffer >= LARGE_DATAGRAM_BUFFER {
        link
    } else {
        link.min(ETHERNET_DATAGRAM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL_BUFFER: usize = 212_992; // Linux's default, as getsockopt reports it
    const LARGE_BUFFER: usize = 2 * LARGE_DATAGRAM_BUFFER; // as root, as getsockopt reports it

    #[test]
    fn the_interface_bounds_the_search() {
        assert_eq!(largest_datagram(LARGE_BUFFER, 1500), ETHERNET_DATAGRAM);
        assert_eq!(largest_datagram(LARGE_BUFFER, 9000), 8952);
        // Loopback: 65,536 less the headers.
        assert_eq!(largest_datagram(LARGE_BUFFER, 65_536), 65_488);
        assert_eq!(largest_datagram(LARGE_BUFFER, u32::MAX), LARGEST_DATAGRAM);
        // Below Ethernet the search stops below 1452 rather than probing it in vain.
        assert_eq!(largest_datagram(LARGE_BUFFER, 1400), 1352);
        assert_eq!(largest_datagram(SMALL_BUFFER, 1400), 1352);
        // Never below what QUIC requires, whatever an interface claims.
        assert_eq!(largest_datagram(LARGE_BUFFER, 0), SMALLEST_DATAGRAM);
        assert_eq!(largest_datagram(SMALL_BUFFER, 1280), 1232);
        assert_eq!(largest_datagram(SMALL_BUFFER, 1100), SMALLEST_DATAGRAM);
    }

    #[test]
    fn a_small_buffer_keeps_datagrams_within_ethernet() {
        assert_eq!(largest_datagram(SMALL_BUFFER, 65_536), ETHERNET_DATAGRAM);
        assert_eq!(largest_datagram(SMALL_BUFFER, 9000), ETHERNET_DATAGRAM);
        assert_eq!(largest_datagram(0, 65_536), ETHERNET_DATAGRAM);
        assert_eq!(largest_datagram(LARGE_DATAGRAM_BUFFER, 65_536), 65_488);
    }
}
