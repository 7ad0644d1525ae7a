//! Writes into zeros nobody wrote (a new file, or one only grown by `ftruncate`/`fallocate`),
//! chunked as they arrive: no staging copy and no re-read at commit.
//!
//! Writes in order from 0 make one segment whose cut points are content-defined, exactly as a
//! plain sequential write. Large writes elsewhere (fio's randwrite, a downloader filling blocks
//! in the order they arrive) start segments of their own: a segment ends with a forced cut
//! (the chunker restarts there), which costs at most one short chunk per segment and keeps the
//! chunking work spread over the writes instead of all of it at the commit. Only the segment
//! written last holds undecided bytes (less than one chunk), so memory stays bounded.

use std::collections::BTreeMap;

use fybrk_store::chunker::{self, MAX_CHUNK};
use fybrk_store::{ChunkRef, ChunkWriter};

use crate::content::HOLE_MIN;
use crate::error::FsResult;
use crate::layout::holes;

/// A write away from every segment's end starts a new segment only when at least this large:
/// smaller scattered writes (a database's pages) go to staging and are chunked at commit, so
/// they do not leave one short chunk each.
const MIN_SEGMENT: usize = MAX_CHUNK as usize;

/// Bytes written from `start` (the key in [`Stream::segs`]) on.
#[derive(Default)]
struct Seg {
    chunks: Vec<ChunkRef>,
    /// Bytes covered by `chunks`.
    len: u64,
    /// Bytes after `len` whose cut point is not decided yet.
    tail: Vec<u8>,
}

impl Seg {
    fn end(&self, start: u64) -> u64 {
        start + self.len + self.tail.len() as u64
    }

    /// Cuts every chunk that is decided (all of them at `eof`). A chunk the writer refuses (a
    /// full disk) stays in `tail`, and those before it stay cut: the segment is consistent
    /// either way, so a later attempt neither loses nor repeats a byte.
    fn drain(&mut self, writer: &mut ChunkWriter, eof: bool) -> FsResult<()> {
        let mut pos = 0;
        let result = loop {
            let Some(n) = chunker::first_cut(&self.tail[pos..], eof) else {
                break Ok(());
            };
            match writer.add(&self.tail[pos..pos + n]) {
                Ok(chunk) => self.chunks.push(chunk),
                Err(e) => break Err(e.into()),
            }
            pos += n;
        };
        self.len += pos as u64;
        self.tail.drain(..pos);
        if self.tail.is_empty() && eof {
            // A settled segment may never be written again: its buffer (a write's size) goes
            // now, or a thousand out-of-order blocks would keep a thousand of them.
            self.tail = Vec::new();
        }
        result
    }

    /// Appends `data` and cuts every chunk that is decided, like pushing it onto `tail` and
    /// [`Seg::drain`] but without copying all of it: only the chunks that start in the undecided
    /// tail are cut from a joined copy (at most a chunk's worth of `data` each); from the first
    /// chunk that starts in `data` on, chunks are cut from `data` itself, and only what is left
    /// undecided at its end is kept. (Copying every write into `tail` first was a full extra
    /// pass over a sequential write.) On an error, everything not cut is in `tail`, as with
    /// `drain`.
    fn push(&mut self, writer: &mut ChunkWriter, data: &[u8]) -> FsResult<()> {
        let max = MAX_CHUNK as usize;
        // Where in `data` the next chunk starts, once it starts there.
        let mut pos = 0;
        while !self.tail.is_empty() {
            let old = self.tail.len();
            let take = max.saturating_sub(old).min(data.len());
            self.tail.extend_from_slice(&data[..take]);
            let Some(n) = chunker::first_cut(&self.tail, false) else {
                // Fewer than a chunk's worth in all: undecided, and all of it is in `tail`.
                return Ok(());
            };
            match writer.add(&self.tail[..n]) {
                Ok(chunk) => self.chunks.push(chunk),
                Err(e) => {
                    self.tail.extend_from_slice(&data[take..]);
                    return Err(e.into());
                }
            }
            self.len += n as u64;
            if n >= old {
                // The next chunk starts in `data`: the copied bytes after the cut are dropped
                // (they are still in `data`).
                pos = n - old;
                self.tail.clear();
            } else {
                // The next chunk still starts in the old tail: undo the copy and go again.
                self.tail.truncate(old);
                self.tail.drain(..n);
            }
        }
        while let Some(n) = chunker::first_cut(&data[pos..], false) {
            match writer.add(&data[pos..pos + n]) {
                Ok(chunk) => self.chunks.push(chunk),
                Err(e) => {
                    self.tail.extend_from_slice(&data[pos..]);
                    return Err(e.into());
                }
            }
            self.len += n as u64;
            pos += n;
        }
        self.tail.extend_from_slice(&data[pos..]);
        Ok(())
    }
}

/// A stream's content as a base to read from: the chunk list, its length, and the undecided
/// tail (offset, bytes) whose place in the list holds zeros.
pub(crate) type Parts = (Vec<ChunkRef>, u64, Option<(u64, Vec<u8>)>);

/// The written segments of a file that was all zeros, and the writer holding their chunks.
pub(crate) struct Stream {
    pub writer: ChunkWriter,
    /// By start offset; disjoint. Between and after them: zeros nobody wrote.
    segs: BTreeMap<u64, Seg>,
    /// The segment written last: the only one that may hold a tail.
    active: Option<u64>,
}

impl Stream {
    pub fn new(writer: ChunkWriter) -> Stream {
        Stream {
            writer,
            segs: BTreeMap::new(),
            active: None,
        }
    }

    /// The end of the last written byte (0 when nothing was written).
    pub fn end(&self) -> u64 {
        self.segs.iter().next_back().map_or(0, |(&s, g)| g.end(s))
    }

    /// Takes `data` at `offset` if it lands on zeros nobody wrote, appending to the segment
    /// that ends there or starting one. `Ok(false)`: it does not fit (it overlaps written
    /// bytes, or is a small scattered write), and the caller ends streaming. An error leaves
    /// the bytes taken (in a tail) or not, consistently, as [`Seg::drain`] says.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> FsResult<bool> {
        if data.is_empty() {
            return Ok(true);
        }
        let end = offset + data.len() as u64;
        let prev = self
            .segs
            .range(..=offset)
            .next_back()
            .map(|(&s, g)| (s, g.end(s)));
        let start = match prev {
            Some((_, e)) if e > offset => return Ok(false),
            Some((s, e)) if e == offset => s,
            _ if offset == 0 || data.len() >= MIN_SEGMENT => offset,
            _ => return Ok(false),
        };
        if self.segs.range(offset + 1..end).next().is_some() {
            return Ok(false);
        }
        if self.active != Some(start) {
            self.settle()?;
        }
        let Stream {
            writer,
            segs,
            active,
        } = self;
        let seg = segs.entry(start).or_default();
        *active = Some(start);
        seg.push(writer, data)?;
        Ok(true)
    }

    /// Cuts the undecided tail of the segment written last, at its end.
    fn settle(&mut self) -> FsResult<()> {
        let Stream {
            writer,
            segs,
            active,
        } = self;
        if let Some(seg) = active.and_then(|a| segs.get_mut(&a)) {
            seg.drain(writer, true)?;
        }
        *active = None;
        Ok(())
    }

    /// The content `[0, size)` as one chunk list, for a commit: the segments in order, with
    /// the zeros between and after them. Cuts every tail; the stream stays usable.
    pub fn chunks(&mut self, size: u64) -> FsResult<Vec<ChunkRef>> {
        self.settle()?;
        let (chunks, pos, _) = self.layout()?;
        let mut chunks = chunks;
        zeros(&mut self.writer, &mut chunks, size.saturating_sub(pos))?;
        Ok(chunks)
    }

    /// For leaving streaming mode: the chunk list up to the end of the last segment (the
    /// undecided tail's place holds zeros), its length, and the tail with its offset, which the
    /// caller stages as written bytes.
    pub fn base(&mut self) -> FsResult<Parts> {
        self.layout()
    }

    fn layout(&mut self) -> FsResult<Parts> {
        let Stream { writer, segs, .. } = self;
        let mut out = Vec::new();
        let mut pos = 0;
        let mut tail = None;
        for (&start, seg) in segs.iter() {
            zeros(writer, &mut out, start - pos)?;
            out.extend_from_slice(&seg.chunks);
            pos = start + seg.len;
            if !seg.tail.is_empty() {
                zeros(writer, &mut out, seg.tail.len() as u64)?;
                tail = Some((pos, seg.tail.clone()));
                pos += seg.tail.len() as u64;
            }
        }
        Ok((out, pos, tail))
    }
}

/// `len` zeros nobody wrote: holes when long, else zero chunks (a handful of ids, deduplicated).
fn zeros(writer: &mut ChunkWriter, out: &mut Vec<ChunkRef>, len: u64) -> FsResult<()> {
    if len >= HOLE_MIN {
        out.extend(holes(len));
        return Ok(());
    }
    let zero = vec![0u8; len.min(u64::from(MAX_CHUNK)) as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(zero.len() as u64);
        out.push(writer.add(&zero[..n as usize])?);
        left -= n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fybrk_store::{FolderKey, Store, StoreOptions};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// Appends of any sizes cut exactly where one pass over the whole content cuts (the
        /// chunk ids, and with them deduplication, do not depend on how the file was written),
        /// whether a write lands in the undecided tail, spans several chunks or both.
        #[test]
        fn appends_cut_like_one_pass(
            seed in any::<u64>(),
            sizes in proptest::collection::vec(prop_oneof![1usize..600, 1usize..70_000, 200_000usize..1_100_000], 1..12),
            low_entropy in any::<bool>(),
        ) {
            let total: usize = sizes.iter().sum();
            let mut x = seed | 1;
            let data: Vec<u8> = (0..total)
                .map(|i| {
                    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                    // Runs of one byte find no cut point: forced cuts at MAX_CHUNK.
                    if low_entropy && (i / 300_000) % 2 == 1 { 7 } else { x as u8 }
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(&dir.path().join("db"), &FolderKey::from_bytes([9; 32]), StoreOptions::default()).unwrap();
            let mut stream = Stream::new(store.writer());
            let mut at = 0;
            for n in sizes {
                prop_assert!(stream.write(at as u64, &data[at..at + n]).unwrap());
                at += n;
            }
            let got: Vec<u32> = stream.chunks(total as u64).unwrap().iter().map(|c| c.len).collect();
            let want: Vec<u32> = chunker::chunks(&data[..]).map(|c| c.unwrap().length as u32).collect();
            prop_assert_eq!(got, want);
        }
    }
}
