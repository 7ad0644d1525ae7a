//! NAT-PMP (RFC 6886) messages: the external address request and the UDP mapping request, and
//! their answers, as pure encoding and decoding (the driver sends them to the gateway's port
//! 5351 from a socket of its own).

use std::net::Ipv4Addr;

use super::DecodeError;

/// The gateway's NAT-PMP (and PCP) port.
pub const PORT: u16 = 5351;

/// Opcode of the external address request; its answer has 128 added.
const OP_ADDRESS: u8 = 0;
/// Opcode of a UDP mapping request.
const OP_MAP_UDP: u8 = 1;
/// Answers set the top bit of the request's opcode.
const ANSWER: u8 = 128;

/// Asks for the gateway's external IPv4 address.
pub fn encode_address_request() -> [u8; 2] {
    [0, OP_ADDRESS]
}

/// Asks for (or, with `lifetime_secs` 0 and `external_port` 0, deletes) a UDP mapping of
/// `internal_port`.
pub fn encode_map_request(internal_port: u16, external_port: u16, lifetime_secs: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[1] = OP_MAP_UDP;
    b[4..6].copy_from_slice(&internal_port.to_be_bytes());
    b[6..8].copy_from_slice(&external_port.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime_secs.to_be_bytes());
    b
}

/// A NAT-PMP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The external address.
    Address {
        /// RFC 6886 result code (0: success).
        result: u16,
        /// The gateway's external IPv4 address.
        ip: Ipv4Addr,
    },
    /// A mapping's outcome.
    Map {
        /// RFC 6886 result code (0: success).
        result: u16,
        /// The internal port it concerns.
        internal_port: u16,
        /// The external port granted.
        external_port: u16,
        /// How long it lasts, in seconds.
        lifetime_secs: u32,
    },
}

/// Decodes an answer from the gateway. Anything that is not a NAT-PMP answer (another
/// version, a request, too short) is an error; a longer datagram's tail is ignored.
pub fn decode(b: &[u8]) -> Result<Answer, DecodeError> {
    let (&version, rest) = b.split_first().ok_or(DecodeError::Short)?;
    if version != 0 {
        return Err(DecodeError::Version(version));
    }
    let op = *rest.first().ok_or(DecodeError::Short)?;
    let u16_at = |i: usize| -> Result<u16, DecodeError> {
        let s = b.get(i..i + 2).ok_or(DecodeError::Short)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    };
    let u32_at = |i: usize| -> Result<u32, DecodeError> {
        let s = b.get(i..i + 4).ok_or(DecodeError::Short)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    };
    match op {
        x if x == ANSWER + OP_ADDRESS => Ok(Answer::Address {
            result: u16_at(2)?,
            ip: Ipv4Addr::from(u32_at(8)?),
        }),
        x if x == ANSWER + OP_MAP_UDP => Ok(Answer::Map {
            result: u16_at(2)?,
            internal_port: u16_at(8)?,
            external_port: u16_at(10)?,
            lifetime_secs: u32_at(12)?,
        }),
        other => Err(DecodeError::Opcode(other)),
    }
}

/// Encodes an answer as a gateway would (for tests and the round-trip property).
pub fn encode_answer(a: &Answer) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    match *a {
        Answer::Address { result, ip } => {
            b[1] = ANSWER + OP_ADDRESS;
            b[2..4].copy_from_slice(&result.to_be_bytes());
            b.extend_from_slice(&ip.octets());
        }
        Answer::Map {
            result,
            internal_port,
            external_port,
            lifetime_secs,
        } => {
            b[1] = ANSWER + OP_MAP_UDP;
            b[2..4].copy_from_slice(&result.to_be_bytes());
            b.extend_from_slice(&internal_port.to_be_bytes());
            b.extend_from_slice(&external_port.to_be_bytes());
            b.extend_from_slice(&lifetime_secs.to_be_bytes());
        }
    }
    b
}
