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
        seg.tail.extend_from_slice(data);
        *active = Some(start);
        seg.drain(writer, false)?;
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
