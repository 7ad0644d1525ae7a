//! PCP (RFC 6887) MAP requests and answers for UDP over IPv4, as pure encoding and decoding.
//! PCP shares NAT-PMP's port (5351); a NAT-PMP-only gateway answers a PCP request with a
//! NAT-PMP "unsupported version" answer, which decodes here as an error.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::DecodeError;

/// PCP's version number.
const VERSION: u8 = 2;
/// The MAP opcode.
const OP_MAP: u8 = 1;
/// Answers set the top bit of the opcode byte.
const ANSWER: u8 = 0x80;
/// The common header.
const HEADER_LEN: usize = 24;
/// MAP's opcode-specific part.
const MAP_LEN: usize = 36;
/// A MAP request or answer without options.
pub const MAP_MESSAGE_LEN: usize = HEADER_LEN + MAP_LEN;
/// IANA protocol number of UDP.
const PROTO_UDP: u8 = 17;

/// One MAP request (or, with `lifetime_secs` 0, the deletion of the mapping `nonce` made).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// Requested lifetime in seconds; 0 deletes.
    pub lifetime_secs: u32,
    /// This device's address as the gateway sees it (the source of the request).
    pub client: Ipv4Addr,
    /// Chosen at random once per mapping and kept for its renewals and deletion: the gateway
    /// ties the mapping to it.
    pub nonce: [u8; 12],
    /// The port to map.
    pub internal_port: u16,
    /// The external port wished for (0: any).
    pub external_port: u16,
}

/// A MAP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapAnswer {
    /// RFC 6887 result code (0: success).
    pub result: u8,
    /// Granted lifetime in seconds (on an error: how long the error holds).
    pub lifetime_secs: u32,
    /// The gateway's epoch (seconds since it lost its state).
    pub epoch: u32,
    /// The request's nonce.
    pub nonce: [u8; 12],
    /// The internal port.
    pub internal_port: u16,
    /// The external port granted.
    pub external_port: u16,
    /// The external address granted (IPv4, or `None` when it is a real IPv6 address).
    pub external_ip: Option<Ipv4Addr>,
}

/// Encodes a MAP request for UDP.
pub fn encode_map(r: &MapRequest) -> [u8; MAP_MESSAGE_LEN] {
    let mut b = [0u8; MAP_MESSAGE_LEN];
    b[0] = VERSION;
    b[1] = OP_MAP;
    b[4..8].copy_from_slice(&r.lifetime_secs.to_be_bytes());
    b[8..24].copy_from_slice(&r.client.to_ipv6_mapped().octets());
    let m = &mut b[HEADER_LEN..];
    m[0..12].copy_from_slice(&r.nonce);
    m[12] = PROTO_UDP;
    m[16..18].copy_from_slice(&r.internal_port.to_be_bytes());
    m[18..20].copy_from_slice(&r.external_port.to_be_bytes());
    // No address wished for: the IPv4-mapped unspecified address (RFC 6887 section 11.1).
    m[20..36].copy_from_slice(&Ipv4Addr::UNSPECIFIED.to_ipv6_mapped().octets());
    b
}

/// Decodes a MAP answer for UDP. Other versions, opcodes and protocols, requests and short
/// datagrams are errors; options after the MAP part are ignored.
pub fn decode_map(b: &[u8]) -> Result<MapAnswer, DecodeError> {
    let version = *b.first().ok_or(DecodeError::Short)?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let b = b.get(..MAP_MESSAGE_LEN).ok_or(DecodeError::Short)?;
    if b[1] != ANSWER | OP_MAP {
        return Err(DecodeError::Opcode(b[1]));
    }
    let m = &b[HEADER_LEN..];
    if m[12] != PROTO_UDP {
        return Err(DecodeError::Protocol(m[12]));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&m[0..12]);
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&m[20..36]);
    Ok(MapAnswer {
        result: b[3],
        lifetime_secs: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        epoch: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        nonce,
        internal_port: u16::from_be_bytes([m[16], m[17]]),
        external_port: u16::from_be_bytes([m[18], m[19]]),
        external_ip: Ipv6Addr::from(ip).to_ipv4_mapped(),
    })
}

/// Encodes an answer as a gateway would (for tests and the round-trip property).
pub fn encode_answer(a: &MapAnswer) -> [u8; MAP_MESSAGE_LEN] {
    let mut b = [0u8; MAP_MESSAGE_LEN];
    b[0] = VERSION;
    b[1] = ANSWER | OP_MAP;
    b[3] = a.result;
    b[4..8].copy_from_slice(&a.lifetime_secs.to_be_bytes());
    b[8..12].copy_from_slice(&a.epoch.to_be_bytes());
    let m = &mut b[HEADER_LEN..];
    m[0..12].copy_from_slice(&a.nonce);
    m[12] = PROTO_UDP;
    m[16..18].copy_from_slice(&a.internal_port.to_be_bytes());
    m[18..20].copy_from_slice(&a.external_port.to_be_bytes());
    let ip = a
        .external_ip
        .map_or(Ipv6Addr::LOCALHOST, |v4| v4.to_ipv6_mapped());
    m[20..36].copy_from_slice(&ip.octets());
    b
}
