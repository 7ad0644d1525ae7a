//! TURN ChannelData framing (RFC 8656 §12.4): a 4-byte header (channel number, payload length)
//! in front of each datagram relayed on a channel.

use std::ops::RangeInclusive;

/// TURN channel numbers (RFC 8656 §12): 0x4000..=0x4FFF, so ChannelData starts with 64..=79.
pub const CHANNEL_NUMBERS: RangeInclusive<u16> = 0x4000..=0x4FFF;
/// ChannelData header: channel number and payload length, two bytes each.
pub const CHANNEL_DATA_HEADER: usize = 4;
/// Why ChannelData could not be framed or unframed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Shorter than the 4-byte header.
    #[error("ChannelData of {0} bytes is shorter than its 4-byte header")]
    Short(usize),
    /// The channel number is outside 0x4000..=0x4FFF.
    #[error("channel number {0:#06x} is outside the TURN channel range 0x4000..=0x4FFF")]
    BadChannel(u16),
    /// The length field claims more bytes than the datagram has.
    #[error("ChannelData claims {claimed} payload bytes but carries only {actual}")]
    Truncated {
        /// Length from the header.
        claimed: usize,
        /// Bytes present after the header.
        actual: usize,
    },
    /// The payload does not fit the 16-bit length field.
    #[error("a ChannelData payload holds at most 65535 bytes, not {0}")]
    TooLong(usize),
}

/// Appends `payload` framed as ChannelData on `channel` to `out` (RFC 8656 §12.4). Over UDP no
/// padding is needed, so none is added.
pub fn encode_channel_data(
    channel: u16,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), ChannelDataError> {
    if !CHANNEL_NUMBERS.contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let len = u16::try_from(payload.len()).map_err(|_| ChannelDataError::TooLong(payload.len()))?;
    push_channel_data(channel, len, payload, out);
    Ok(())
}

/// Splits ChannelData into its channel number and payload. Trailing bytes past the length field
/// (padding, which RFC 8656 allows over UDP too) are ignored.
pub fn decode_channel_data(datagram: &[u8]) -> Result<(u16, &[u8]), ChannelDataError> {
    let (channel, len) = channel_data_header(datagram)?;
    Ok((
        channel,
        &datagram[CHANNEL_DATA_HEADER..CHANNEL_DATA_HEADER + len],
    ))
}

pub(super) fn push_channel_data(channel: u16, len: u16, payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Channel number and payload length of a ChannelData datagram, checked against its size.
pub(super) fn channel_data_header(datagram: &[u8]) -> Result<(u16, usize), ChannelDataError> {
    let [c0, c1, l0, l1, ..] = *datagram else {
        return Err(ChannelDataError::Short(datagram.len()));
    };
    let channel = u16::from_be_bytes([c0, c1]);
    if !CHANNEL_NUMBERS.contains(&channel) {
        return Err(ChannelDataError::BadChannel(channel));
    }
    let len = usize::from(u16::from_be_bytes([l0, l1]));
    let actual = datagram.len() - CHANNEL_DATA_HEADER;
    if len > actual {
        return Err(ChannelDataError::Truncated {
            claimed: len,
            actual,
        });
    }
    Ok((channel, len))
}
