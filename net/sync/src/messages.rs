//! The replication wire protocol: the messages and the frame codec.
//!
//! A frame is a 4-byte big-endian payload length followed by the postcard encoding of one
//! [`Message`]. The length is checked against a maximum *before* anything is buffered, so a
//! broken or hostile peer cannot make us allocate more than that. Decoding never panics: short,
//! oversized or garbage input is a [`FrameError`].
//!
//! Protocol versioning lives in the QUIC ALPN, not in the frames. Within one version, new
//! message kinds are appended to [`Message`] (postcard encodes the variant index), never
//! inserted, so the encoding of existing kinds does not change.

use fybrk_store::record::ShortId;
use fybrk_store::{ChunkId, FileRecord};
use serde::{Deserialize, Serialize};

/// Default frame limit: 32 MiB. The largest message is normally a chunk response (at most
/// 256 KiB of plaintext plus sealing overhead) or an index batch (kept near
/// [`crate::SessionConfig::batch_bytes`]); what needs the headroom is one record of a huge
/// file, which travels whole: about 37 bytes per chunk, so 32 MiB carries a ~850k-chunk list, a
/// file of roughly 50 GiB at the 64 KiB average chunk size. The limit is also the most a peer
/// can make us buffer per connection.
pub const DEFAULT_MAX_FRAME: usize = 32 << 20;

/// Bytes of the length prefix.
const HEADER: usize = 4;

/// One protocol message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First message on a connection, in both directions.
    Hello {
        /// The sender's short device id.
        device: ShortId,
        /// The folder the sender syncs.
        folder: [u8; 16],
        /// The sender's latest local sequence number.
        max_seq: u64,
        /// The receiver's sequence number up to which the sender has everything (persisted
        /// progress): the receiver sends its changes after this one.
        seen_from_you: u64,
    },
    /// A batch of the sender's records, in sequence order.
    IndexUpdate {
        /// The records (tombstones included).
        records: Vec<FileRecord>,
        /// After this batch the receiver has every change of the sender up to this sequence.
        up_to_seq: u64,
    },
    /// Asks for one chunk's sealed bytes.
    ChunkRequest {
        /// The chunk.
        id: ChunkId,
        /// Echoed in the response; unique among the sender's outstanding requests.
        req_id: u32,
    },
    /// Answers a [`Message::ChunkRequest`].
    ChunkResponse {
        /// The request being answered.
        req_id: u32,
        /// The sealed chunk as stored (`nonce || ciphertext || tag`), or `None` when the sender
        /// does not have it (any more).
        #[serde(with = "opt_bytes")]
        data: Option<Vec<u8>>,
    },
    /// Keepalive; answered with [`Message::Pong`].
    Ping,
    /// Answer to [`Message::Ping`].
    Pong,
    /// Asks which of these chunks the receiver keeps: holds, uses, and will not evict (a full
    /// device). An on-demand device evicts only content another device keeps. At most
    /// [`MAX_KEEPS_QUERY`] ids.
    KeepsQuery {
        /// Echoed in the reply; one query is outstanding at a time.
        req_id: u32,
        /// The chunks asked about.
        ids: Vec<ChunkId>,
    },
    /// Answers a [`Message::KeepsQuery`]: one flag per id, in order.
    KeepsReply {
        /// The query being answered.
        req_id: u32,
        /// Whether the sender keeps each chunk.
        keeps: Vec<bool>,
    },
    /// Chunks the sender just wrote locally, before any record uses them: a file still being
    /// written. The receiver may fetch them now, so that when the record arrives at `close`
    /// only its tail is left to transfer. Sent only on connections that negotiated ALPN
    /// `fybrk/2` (an older peer would close the session on an unknown message). At most
    /// [`MAX_OFFER`] ids.
    Offer {
        /// The chunks, in the order they were written.
        ids: Vec<ChunkId>,
    },
}

/// The most chunk ids one [`Message::KeepsQuery`] may carry (128 KiB of ids).
pub const MAX_KEEPS_QUERY: usize = 4096;

/// The most chunk ids one [`Message::Offer`] may carry (32 KiB of ids; a 512 KiB write batch
/// holds 2 to 32 chunks, so a sender needs far fewer).
pub const MAX_OFFER: usize = 1024;

/// Why a frame could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame (announced or to be sent) is larger than the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} bytes buffered, {need} needed)")]
    Truncated {
        /// Bytes received of the incomplete frame (header included).
        have: usize,
        /// Bytes the complete frame needs (header included).
        need: usize,
    },
    /// The payload is not a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message could not be serialized.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// The payload holds a message followed by extra bytes.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

/// Appends one frame holding `msg` to `out`. Fails (leaving `out` as it was) when the encoding
/// exceeds `max`.
pub fn encode_frame_into(msg: &Message, out: &mut Vec<u8>, max: usize) -> Result<(), FrameError> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    if let Err(e) = postcard::to_io(msg, &mut *out) {
        // Writing into a Vec cannot fail and our types serialize infallibly; keep the
        // caller's buffer intact all the same.
        out.truncate(start);
        return Err(FrameError::Encode(e.to_string()));
    }
    let len = out.len() - start - HEADER;
    match u32::try_from(len) {
        Ok(l) if len <= max => {
            out[start..start + HEADER].copy_from_slice(&l.to_be_bytes());
            Ok(())
        }
        _ => {
            out.truncate(start);
            Err(FrameError::TooLarge { len, max })
        }
    }
}

/// One frame holding `msg`.
pub fn encode_frame(msg: &Message, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame_into(msg, &mut out, max)?;
    Ok(out)
}

/// The payload length announced by a frame header, checked against `max` (for drivers that
/// `read_exact` the header and then the payload).
pub fn frame_len(header: [u8; HEADER], max: usize) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

/// Decodes one payload (without its header). The whole slice must be exactly one message.
pub fn decode_message(payload: &[u8]) -> Result<Message, FrameError> {
    let (msg, rest) = postcard::take_from_bytes::<Message>(payload)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Reassembles messages from a byte stream cut at arbitrary points.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed; compacted lazily so a run of small frames does not
    /// shift the buffer once per frame.
    pos: usize,
    max: usize,
}

impl FrameDecoder {
    /// A decoder that rejects frames larger than `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            pos: 0,
            max,
        }
    }

    /// Adds bytes read from the stream. Call [`FrameDecoder::next_message`] after each push so
    /// an oversized header is rejected before its payload piles up.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. After an error the
    /// stream is out of step: drop the connection.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let avail = &self.buf[self.pos..];
        let Some(header) = avail.first_chunk::<HEADER>() else {
            return Ok(None);
        };
        let len = frame_len(*header, self.max)?;
        let Some(payload) = avail.get(HEADER..HEADER + len) else {
            return Ok(None);
        };
        let msg = decode_message(payload)?;
        self.pos += HEADER + len;
        Ok(Some(msg))
    }

    /// Checks that the stream ended on a frame boundary (call at end of stream).
    pub fn finish(&self) -> Result<(), FrameError> {
        let have = self.buf.len() - self.pos;
        if have == 0 {
            return Ok(());
        }
        let need = match self.buf[self.pos..].first_chunk::<HEADER>() {
            Some(h) => HEADER + u32::from_be_bytes(*h) as usize,
            None => HEADER,
        };
        Err(FrameError::Truncated { have, need })
    }
}

/// An upper bound of the encoded size of `record`, cheap enough to call per record when cutting
/// index batches (postcard varints take at most 10 bytes for a u64 or i64, 5 for a u32).
pub fn record_len_bound(record: &FileRecord) -> usize {
    const VARINT64: usize = 10;
    const VARINT32: usize = 5;
    let chunk = 32 + VARINT32;
    let target = record.target.as_ref().map_or(0, |t| VARINT64 + t.len());
    2 + (VARINT64 + record.path.len())
        + VARINT32
        + 2 * VARINT64
        + (VARINT64 + record.chunks.len() * chunk)
        + (1 + target)
        + (VARINT64 + record.version.0.len() * 2 * VARINT64)
        + VARINT64
}

/// Bytes an `IndexUpdate` adds around its records: variant, list length, `up_to_seq`.
pub const INDEX_OVERHEAD: usize = 1 + 10 + 10;

/// Serde for `Option<Vec<u8>>` as one byte string. The derived form would visit a `Vec<u8>`
/// byte by byte (slow for 256 KiB chunks); postcard encodes a byte string exactly like a
/// sequence of `u8` (length varint + raw bytes), so the wire format is unchanged.
mod opt_bytes {
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::ser::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&Bytes(bytes)),
            None => s.serialize_none(),
        }
    }

    struct Bytes<'a>(&'a [u8]);

    impl serde::Serialize for Bytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(OptVisitor)
    }

    struct OptVisitor;

    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("optional byte string")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_byte_buf(BytesVisitor).map(Some)
        }
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("byte string")
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        // Self-describing formats may hand bytes over as a sequence.
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fybrk_store::{ChunkRef, Kind, VersionVector};
    use proptest::prelude::*;

    fn arb_chunk_id() -> impl Strategy<Value = ChunkId> {
        any::<[u8; 32]>().prop_map(ChunkId)
    }

    fn arb_record() -> impl Strategy<Value = FileRecord> {
        (
            prop_oneof![Just(Kind::File), Just(Kind::Dir), Just(Kind::Symlink)],
            any::<bool>(),
            "[a-z./ ]{0,40}",
            any::<u32>(),
            any::<i64>(),
            any::<u64>(),
            prop::collection::vec((arb_chunk_id(), any::<u32>()), 0..8),
            prop::option::of(".{0,20}"),
            prop::collection::btree_map(any::<u64>(), any::<u64>(), 0..5),
            any::<u64>(),
        )
            .prop_map(
                |(kind, deleted, path, mode, mtime_ns, size, chunks, target, vv, seq)| FileRecord {
                    kind,
                    deleted,
                    path,
                    mode,
                    mtime_ns,
                    size,
                    chunks: chunks
                        .into_iter()
                        .map(|(id, len)| ChunkRef { id, len })
                        .collect(),
                    target,
                    version: VersionVector(vv),
                    seq,
                },
            )
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u64>(), any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(
                |(device, folder, max_seq, seen_from_you)| Message::Hello {
                    device,
                    folder,
                    max_seq,
                    seen_from_you
                }
            ),
            (prop::collection::vec(arb_record(), 0..4), any::<u64>())
                .prop_map(|(records, up_to_seq)| Message::IndexUpdate { records, up_to_seq }),
            (arb_chunk_id(), any::<u32>())
                .prop_map(|(id, req_id)| Message::ChunkRequest { id, req_id }),
            (
                any::<u32>(),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..300))
            )
                .prop_map(|(req_id, data)| Message::ChunkResponse { req_id, data }),
            Just(Message::Ping),
            Just(Message::Pong),
            (any::<u32>(), prop::collection::vec(arb_chunk_id(), 0..5))
                .prop_map(|(req_id, ids)| Message::KeepsQuery { req_id, ids }),
            (any::<u32>(), prop::collection::vec(any::<bool>(), 0..5))
                .prop_map(|(req_id, keeps)| Message::KeepsReply { req_id, keeps }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip(msgs in prop::collection::vec(arb_message(), 1..6),
                             cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6)) {
            let mut stream = Vec::new();
            for m in &msgs {
                encode_frame_into(m, &mut stream, DEFAULT_MAX_FRAME).unwrap();
            }
            // Feed the stream cut at arbitrary points: the decoder must not care.
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
            points.push(0);
            points.push(stream.len());
            points.sort_unstable();
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            let mut out = Vec::new();
            for w in points.windows(2) {
                dec.push(&stream[w[0]..w[1]]);
                while let Some(m) = dec.next_message().unwrap() {
                    out.push(m);
                }
            }
            dec.finish().unwrap();
            prop_assert_eq!(out, msgs);
        }

        #[test]
        fn truncated_frames_are_errors(msg in arb_message(), cut in any::<prop::sample::Index>()) {
            let frame = encode_frame(&msg, DEFAULT_MAX_FRAME).unwrap();
            let cut = cut.index(frame.len());
            let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
            dec.push(&frame[..cut]);
            prop_assert_eq!(dec.next_message(), Ok(None));
            let is_truncated = matches!(dec.finish(), Err(FrameError::Truncated { .. }));
            prop_assert!(cut == 0 || is_truncated);
            // A truncated payload handed over as if complete is an error, not a panic.
            if cut > HEADER {
                prop_assert!(decode_message(&frame[HEADER..cut]).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_message(&bytes);
            let mut dec = FrameDecoder::new(1 << 10);
            dec.push(&bytes);
            while let Ok(Some(_)) = dec.next_message() {}
        }

        #[test]
        fn record_bound_holds(r in arb_record()) {
            let actual = postcard::to_allocvec(&r).unwrap().len();
            prop_assert!(actual <= record_len_bound(&r), "{} > {}", actual, record_len_bound(&r));
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let big = Message::ChunkResponse {
            req_id: 1,
            data: Some(vec![7; 2000]),
        };
        assert!(matches!(
            encode_frame(&big, 1000),
            Err(FrameError::TooLarge { .. })
        ));
        let mut out = vec![9];
        assert!(encode_frame_into(&big, &mut out, 1000).is_err());
        assert_eq!(out, vec![9], "a failed encode leaves the buffer as it was");

        let mut dec = FrameDecoder::new(1000);
        dec.push(&(1001u32).to_be_bytes());
        assert_eq!(
            dec.next_message(),
            Err(FrameError::TooLarge {
                len: 1001,
                max: 1000
            })
        );
        assert!(frame_len(u32::MAX.to_be_bytes(), DEFAULT_MAX_FRAME).is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut frame = encode_frame(&Message::Ping, 100).unwrap();
        frame.push(0);
        assert_eq!(
            decode_message(&frame[HEADER..]),
            Err(FrameError::TrailingBytes(1))
        );
    }

    #[test]
    fn chunk_bytes_encode_like_a_plain_vec() {
        // The hand-written byte-string serde must keep postcard's `Vec<u8>` wire format.
        #[derive(Serialize)]
        enum Plain {
            _Hello,
            _Index,
            _Req,
            ChunkResponse { req_id: u32, data: Option<Vec<u8>> },
        }
        let data = Some(vec![1, 2, 3, 200]);
        let ours = postcard::to_allocvec(&Message::ChunkResponse {
            req_id: 5,
            data: data.clone(),
        })
        .unwrap();
        let plain = postcard::to_allocvec(&Plain::ChunkResponse { req_id: 5, data }).unwrap();
        assert_eq!(ours, plain);
    }
}

#[cfg(test)]
mod fuzz_tests;
