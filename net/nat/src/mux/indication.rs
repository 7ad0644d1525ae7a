//! TURN Send and Data indications (RFC 8656 §11): a datagram to or from a peer with no channel
//! bound yet, carried in a STUN indication with the peer's address (XOR-PEER-ADDRESS) and the
//! payload (DATA).
//!
//! These are framed by hand rather than through stun-rs: they sit on the data path until a
//! channel is bound, and need neither integrity nor fingerprint (RFC 8656 §11.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// STUN message types of the two indications (method 0x006 / 0x007, class indication).
const SEND_INDICATION: u16 = 0x0016;
const DATA_INDICATION: u16 = 0x0017;
const XOR_PEER_ADDRESS: u16 = 0x0012;
const DATA: u16 = 0x0013;
const COOKIE: u32 = 0x2112_A442;
const HEADER: usize = 20;

/// The most a Send indication adds to a payload: header, IPv6 XOR-PEER-ADDRESS, DATA header
/// and padding.
pub(crate) const SEND_OVERHEAD: usize = HEADER + 4 + 20 + 4 + 3;

/// Appends a Send indication carrying `payload` to `peer` to `out`. `tid` only has to differ
/// between messages in flight; indications are never answered.
pub(crate) fn push_send_indication(
    peer: SocketAddr,
    payload: &[u8],
    tid: [u8; 12],
    out: &mut Vec<u8>,
) {
    let addr_len = if peer.is_ipv4() { 8 } else { 20 };
    let padded = payload.len().next_multiple_of(4);
    let body = 4 + addr_len + 4 + padded;
    out.extend_from_slice(&SEND_INDICATION.to_be_bytes());
    // A UDP payload (at most 65,535 bytes) always fits: callers pass QUIC packets.
    out.extend_from_slice(&(body as u16).to_be_bytes());
    out.extend_from_slice(&COOKIE.to_be_bytes());
    out.extend_from_slice(&tid);
    out.extend_from_slice(&XOR_PEER_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(addr_len as u16).to_be_bytes());
    push_xor_address(peer, &tid, out);
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + padded - payload.len(), 0);
}

fn push_xor_address(peer: SocketAddr, tid: &[u8; 12], out: &mut Vec<u8>) {
    let cookie = COOKIE.to_be_bytes();
    out.push(0);
    out.push(if peer.is_ipv4() { 1 } else { 2 });
    out.extend_from_slice(&(peer.port() ^ (COOKIE >> 16) as u16).to_be_bytes());
    match peer.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&(u32::from(ip) ^ COOKIE).to_be_bytes()),
        IpAddr::V6(ip) => {
            let key: Vec<u8> = cookie.iter().chain(tid).copied().collect();
            out.extend(ip.octets().iter().zip(key).map(|(a, k)| a ^ k));
        }
    }
}

/// The peer and payload of a Data indication, or `None` if `msg` is not a well-formed one.
pub(crate) fn parse_data_indication(msg: &[u8]) -> Option<(SocketAddr, &[u8])> {
    if msg.len() < HEADER
        || u16::from_be_bytes([msg[0], msg[1]]) != DATA_INDICATION
        || msg[4..8] != COOKIE.to_be_bytes()
    {
        return None;
    }
    let body_len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    let body = msg.get(HEADER..HEADER + body_len)?;
    let tid: [u8; 12] = msg[8..20].try_into().ok()?;
    let (mut peer, mut data) = (None, None);
    let mut rest = body;
    while rest.len() >= 4 {
        let kind = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        let value = rest.get(4..4 + len)?;
        match kind {
            XOR_PEER_ADDRESS => peer = parse_xor_address(value, &tid),
            DATA => data = Some(value),
            _ => {}
        }
        rest = rest.get((4 + len.next_multiple_of(4)).min(rest.len())..)?;
    }
    Some((peer?, data?))
}

fn parse_xor_address(value: &[u8], tid: &[u8; 12]) -> Option<SocketAddr> {
    let port = u16::from_be_bytes([*value.get(2)?, *value.get(3)?]) ^ (COOKIE >> 16) as u16;
    let ip = match (value.get(1)?, value.len()) {
        (1, 8) => {
            let raw = u32::from_be_bytes(value[4..8].try_into().ok()?);
            IpAddr::V4(Ipv4Addr::from(raw ^ COOKIE))
        }
        (2, 20) => {
            let key: Vec<u8> = COOKIE.to_be_bytes().iter().chain(tid).copied().collect();
            let mut octets = [0u8; 16];
            for (o, (a, k)) in octets.iter_mut().zip(value[4..20].iter().zip(key)) {
                *o = a ^ k;
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Data indication as a TURN server frames it: a Send indication with the other type.
    fn data_indication(peer: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_send_indication(peer, payload, [7; 12], &mut out);
        out[..2].copy_from_slice(&DATA_INDICATION.to_be_bytes());
        out
    }

    #[test]
    fn round_trips_both_families_and_odd_lengths() {
        for peer in [
            "203.0.113.9:41641".parse().unwrap(),
            "[2001:db8::7]:9".parse().unwrap(),
        ] {
            for len in [0, 1, 3, 4, 5, 1200] {
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let msg = data_indication(peer, &payload);
                assert_eq!(msg.len() % 4, 0, "STUN messages are padded to 4 bytes");
                assert!(msg.len() <= payload.len() + SEND_OVERHEAD);
                assert_eq!(parse_data_indication(&msg), Some((peer, &payload[..])));
            }
        }
    }

    #[test]
    fn a_send_indication_is_not_taken_for_data() {
        let mut msg = Vec::new();
        push_send_indication("198.51.100.1:1".parse().unwrap(), b"x", [1; 12], &mut msg);
        assert_eq!(parse_data_indication(&msg), None);
    }

    #[test]
    fn truncated_or_incomplete_messages_are_rejected() {
        let msg = data_indication("198.51.100.1:5".parse().unwrap(), b"hello");
        for cut in 0..msg.len() {
            assert_eq!(parse_data_indication(&msg[..cut]), None, "cut at {cut}");
        }
        // Without XOR-PEER-ADDRESS.
        let mut no_peer = msg[..HEADER].to_vec();
        no_peer[2..4].copy_from_slice(&12u16.to_be_bytes());
        no_peer.extend_from_slice(&DATA.to_be_bytes());
        no_peer.extend_from_slice(&5u16.to_be_bytes());
        no_peer.extend_from_slice(b"hello\0\0\0");
        assert_eq!(parse_data_indication(&no_peer), None);
    }
}
