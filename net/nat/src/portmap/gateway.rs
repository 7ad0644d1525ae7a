//! The LAN's gateway: the next hop of the IPv4 default route, read from `/proc/net/route`.

use std::net::Ipv4Addr;

/// The gateway of the first IPv4 default route in the text of `/proc/net/route` (columns:
/// interface, destination, gateway, flags, ..., mask; addresses as little-endian hex).
pub fn parse_default_gateway(route_table: &str) -> Option<Ipv4Addr> {
    /// `RTF_UP | RTF_GATEWAY`: a usable route through a next hop.
    const UP_GATEWAY: u32 = 0x1 | 0x2;
    route_table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let hex = |i: usize| cols.get(i).and_then(|s| u32::from_str_radix(s, 16).ok());
        let (dest, gw, flags, mask) = (hex(1)?, hex(2)?, hex(3)?, hex(7)?);
        (dest == 0 && mask == 0 && flags & UP_GATEWAY == UP_GATEWAY && gw != 0)
            // The kernel prints the address as a native-endian u32 of its network-order bytes.
            .then(|| Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

/// This machine's IPv4 default gateway, if it has one.
pub fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&text)
}
