//! The binary body of an invitation, format 1.
//!
//! ```text
//! version      u8       1
//! inviter      [u8;32]  device id
//! folder       [u8;16]  folder id
//! secret       [u8;16]
//! expires      LEB128   unix seconds (5 bytes until 2038, canonical form only)
//! name         u8 len (<= 32) + UTF-8
//! addrs        u8 count (<= 8), u8 families (bit i set: address i is IPv6; unused bits zero),
//!              then each address: 4 or 16 bytes of IP + u16 port, big endian
//! rendezvous   u8 tag: 0 none | 1 IPv4 (4 + 2) | 2 IPv6 (16 + 2)
//!                      | 3 host (u8 len + name + u16 port)
//! ```
//!
//! Every field has exactly one encoding (canonical varint, zero unused family bits, no trailing
//! bytes), so one invitation has exactly one text. The version byte first and the 4-byte checksum
//! after the body are fixed for all future formats, so any fybrk can tell "damaged" from "newer".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use super::rendezvous::{HostPort, Rendezvous, MAX_HOST_LEN};
use super::{Invitation, MAX_ADDRS};
use crate::name::{is_clean, sanitize_name, MAX_NAME_LEN};

/// Bytes before the variable part: version, inviter, folder, secret.
const FIXED_LEN: usize = 1 + 32 + 16 + 16;
/// The shortest possible body: fixed part, 1-byte expiry, empty name, no addresses, no rendezvous.
pub(super) const MIN_BODY_LEN: usize = FIXED_LEN + 1 + 1 + 2 + 1;

const RV_NONE: u8 = 0;
const RV_V4: u8 = 1;
const RV_V6: u8 = 2;
const RV_HOST: u8 = 3;

/// Why a body could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum BodyError {
    /// The bytes ran out before the structure did.
    Short,
    /// The structure is wrong; the text says how.
    Malformed(&'static str),
}

/// Drops what another device cannot use: IPv6 flow info and scope id.
pub(super) fn portable(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(a) => SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), 0, 0)),
        v4 => v4,
    }
}

fn put_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let low = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// Writes the body of `inv`, normalising on the way: the name is sanitised and cut, only the
/// first [`MAX_ADDRS`] addresses are kept, and IPv6 scope ids are dropped.
pub(super) fn write(inv: &Invitation) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    out.push(inv.version);
    out.extend_from_slice(&inv.inviter);
    out.extend_from_slice(&inv.folder);
    out.extend_from_slice(&inv.secret);
    put_varint(&mut out, inv.expires_unix);

    let name = sanitize_name(&inv.inviter_name);
    // sanitize_name keeps it within MAX_NAME_LEN (32), so the length fits a byte.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());

    let addrs = &inv.addrs[..inv.addrs.len().min(MAX_ADDRS)];
    out.push(addrs.len() as u8);
    let families = addrs
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_ipv6())
        .fold(0u8, |bits, (i, _)| bits | (1 << i));
    out.push(families);
    for addr in addrs {
        put_addr(&mut out, addr);
    }

    match &inv.rendezvous {
        None => out.push(RV_NONE),
        Some(Rendezvous::Addr(a)) => {
            out.push(if a.is_ipv6() { RV_V6 } else { RV_V4 });
            put_addr(&mut out, a);
        }
        Some(Rendezvous::Host(h)) => {
            out.push(RV_HOST);
            // HostPort guarantees 1..=253 bytes.
            out.push(h.host().len() as u8);
            out.extend_from_slice(h.host().as_bytes());
            out.extend_from_slice(&h.port().to_be_bytes());
        }
    }
    out
}

/// A cursor over the body that reports running out as [`BodyError::Short`].
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BodyError> {
        let end = self.pos.checked_add(n).ok_or(BodyError::Short)?;
        let bytes = self.buf.get(self.pos..end).ok_or(BodyError::Short)?;
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, BodyError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BodyError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn port(&mut self) -> Result<u16, BodyError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn addr(&mut self, v6: bool) -> Result<SocketAddr, BodyError> {
        let ip = if v6 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        };
        Ok(SocketAddr::new(ip, self.port()?))
    }

    fn varint(&mut self) -> Result<u64, BodyError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = self.u8()?;
            let part = u64::from(b & 0x7f);
            // The tenth byte may carry only the top bit of a u64.
            if i == 9 && part > 1 {
                return Err(BodyError::Malformed("the expiry time is out of range"));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                // A zero last byte (other than for the value 0 itself) is a longer spelling of a
                // shorter number; reject it so each body has one form.
                if b == 0 && i > 0 {
                    return Err(BodyError::Malformed(
                        "the expiry time is not in canonical form",
                    ));
                }
                return Ok(v);
            }
        }
        Err(BodyError::Malformed("the expiry time is out of range"))
    }
}

/// Reads a format-1 body from the front of `buf`, returning it and the number of bytes it used.
/// Bytes after it are left to the caller (they are the checksum, or trailing garbage).
pub(super) fn read(buf: &[u8]) -> Result<(Invitation, usize), BodyError> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u8()?;
    let inviter = r.array()?;
    let folder = r.array()?;
    let secret = r.array()?;
    let expires_unix = r.varint()?;

    let name_len = usize::from(r.u8()?);
    if name_len > MAX_NAME_LEN {
        return Err(BodyError::Malformed("the device name is too long"));
    }
    let inviter_name = std::str::from_utf8(r.take(name_len)?)
        .map_err(|_| BodyError::Malformed("the device name is not UTF-8"))?
        .to_owned();
    if !is_clean(&inviter_name) {
        return Err(BodyError::Malformed(
            "the device name contains control characters",
        ));
    }

    let count = usize::from(r.u8()?);
    if count > MAX_ADDRS {
        return Err(BodyError::Malformed("it lists too many addresses"));
    }
    let families = r.u8()?;
    if count < 8 && families >> count != 0 {
        return Err(BodyError::Malformed("the address list is inconsistent"));
    }
    let mut addrs = Vec::with_capacity(count);
    for i in 0..count {
        addrs.push(r.addr(families & (1 << i) != 0)?);
    }

    let rendezvous = match r.u8()? {
        RV_NONE => None,
        RV_V4 => Some(Rendezvous::Addr(r.addr(false)?)),
        RV_V6 => Some(Rendezvous::Addr(r.addr(true)?)),
        RV_HOST => {
            let len = usize::from(r.u8()?);
            if len == 0 || len > MAX_HOST_LEN {
                return Err(BodyError::Malformed(
                    "the rendezvous host name has a bad length",
                ));
            }
            let host = std::str::from_utf8(r.take(len)?)
                .map_err(|_| BodyError::Malformed("the rendezvous host name is not ASCII"))?;
            let port = r.port()?;
            let hp = HostPort::new(host, port)
                .map_err(|_| BodyError::Malformed("the rendezvous host name is invalid"))?;
            Some(Rendezvous::Host(hp))
        }
        _ => {
            return Err(BodyError::Malformed(
                "the rendezvous entry has an unknown kind",
            ))
        }
    };

    let inv = Invitation {
        version,
        inviter,
        inviter_name,
        addrs,
        rendezvous,
        folder,
        secret,
        expires_unix,
    };
    Ok((inv, r.pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint_of(bytes: &[u8]) -> Result<u64, BodyError> {
        Reader { buf: bytes, pos: 0 }.varint()
    }

    #[test]
    fn varint_round_trip_and_canonical() {
        for v in [
            0,
            1,
            127,
            128,
            1_700_000_000,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(varint_of(&out), Ok(v));
        }
        // 1 spelled in two bytes.
        assert!(matches!(
            varint_of(&[0x81, 0x00]),
            Err(BodyError::Malformed(_))
        ));
        // Eleven bytes / overflow.
        assert!(matches!(
            varint_of(&[0xff; 10]),
            Err(BodyError::Malformed(_))
        ));
        assert_eq!(varint_of(&[0x80]), Err(BodyError::Short));
    }

    #[test]
    fn minimal_body_has_min_len() {
        let inv = Invitation {
            version: 1,
            inviter: [1; 32],
            inviter_name: String::new(),
            addrs: vec![],
            rendezvous: None,
            folder: [2; 16],
            secret: [3; 16],
            expires_unix: 0,
        };
        let body = write(&inv);
        assert_eq!(body.len(), MIN_BODY_LEN);
        assert_eq!(read(&body), Ok((inv, MIN_BODY_LEN)));
    }
}
