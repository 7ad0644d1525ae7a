//! RFC 4648 base32 (the standard alphabet, no padding), written out here because it is forty lines
//! and the invitation needs two things most decoders make optional: case-insensitive input and a
//! strict check that the unused bits of the last character are zero. Without that check a change
//! to the last character could decode to the same bytes, and a typo would slip through unnoticed.

/// The RFC 4648 alphabet. Upper case only: QR alphanumeric mode has no lower-case letters.
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Why a string is not valid base32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base32Error {
    /// A character outside the alphabet (after folding case).
    BadChar,
    /// A length no whole number of bytes encodes to (1, 3 or 6 characters past a group of 8):
    /// a truncated or padded-by-hand string.
    BadLength,
    /// The last character carries non-zero bits past the end of the data.
    NonCanonical,
}

/// Encodes `data` as upper-case base32 without padding.
pub(crate) fn encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &byte in data {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
        // Only the low `bits` bits are still needed; keep `acc` small.
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'A'..=b'Z' => Some(u32::from(c - b'A')),
        b'a'..=b'z' => Some(u32::from(c - b'a')),
        b'2'..=b'7' => Some(u32::from(c - b'2') + 26),
        _ => None,
    }
}

/// Decodes base32 without padding, accepting either case.
pub(crate) fn decode(text: &str) -> Result<Vec<u8>, Base32Error> {
    let (out, leftover) = decode_bits(text.as_bytes())?;
    if matches!(text.len() % 8, 1 | 3 | 6) {
        return Err(Base32Error::BadLength);
    }
    // Left-over bits (fewer than 8) are padding and must be zero for the encoding to be the only
    // one of these bytes.
    if leftover != 0 {
        return Err(Base32Error::NonCanonical);
    }
    Ok(out)
}

/// Decodes every whole byte in `text`, ignoring a bad length and the trailing bits: the best
/// guess at what a damaged text held, for telling "cut short" from "changed".
pub(crate) fn decode_lossy(text: &str) -> Result<Vec<u8>, Base32Error> {
    decode_bits(text.as_bytes()).map(|(out, _)| out)
}

/// The whole bytes of `text` and the value of the bits left over after them.
fn decode_bits(text: &[u8]) -> Result<(Vec<u8>, u32), Base32Error> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for &c in text {
        let v = value(c).ok_or(Base32Error::BadChar)?;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok((out, acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4648_vectors() {
        // RFC 4648 section 10, without the padding.
        let cases: [(&str, &str); 7] = [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
            assert_eq!(decode(&coded.to_lowercase()).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode("MZXW6Y1"), Err(Base32Error::BadChar));
        assert_eq!(decode("MZX"), Err(Base32Error::BadLength));
        // "MZ" is "f"; "M3" has a set bit past the end of the byte.
        assert_eq!(decode("M3"), Err(Base32Error::NonCanonical));
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let coded = encode(&data);
            prop_assert_eq!(decode(&coded).unwrap(), data);
        }
    }
}
