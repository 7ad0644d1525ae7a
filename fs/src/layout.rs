//! A committed version's content as laid out in the file: its chunk list with start offsets,
//! holes (runs of zeros that are not stored, [`ChunkRef::hole`]) among them, and reads that
//! trust nothing a record says about a chunk.

use fybrk_store::{ChunkRef, Store, StoreError};

use crate::error::FsResult;

/// The largest file fybrk keeps: 8 TiB. Growing a file past it (`truncate`, a write) is
/// `EFBIG`. Why this number: a sparse file costs one hole reference per [`HOLE_PIECE`] bytes in
/// its record, so a fully sparse file of this size has a record of about 80 KB (2049
/// references); and writes far out land in a sparse staging file on the disk under the state
/// dir, which must take the offset (ext4's own limit is 16 TiB with 4 KiB blocks).
pub const MAX_FILE_SIZE: u64 = 1 << 43;

/// The longest hole one reference covers: the largest multiple of 64 KiB a chunk length
/// (`u32`) holds.
pub const HOLE_PIECE: u32 = 0xFFFF_0000;

/// A committed chunk list with its start offsets, for binary search.
#[derive(Debug, Default)]
pub struct Layout {
    pub chunks: Vec<ChunkRef>,
    /// `starts[i]` is the file offset of `chunks[i]`; one extra entry holds the total length.
    pub starts: Vec<u64>,
}

impl Layout {
    pub fn new(chunks: Vec<ChunkRef>) -> Layout {
        let mut starts = Vec::with_capacity(chunks.len() + 1);
        let mut pos = 0u64;
        for c in &chunks {
            starts.push(pos);
            // Cannot overflow for lists that fit in memory (2^32 chunks of 2^32 bytes), but a
            // record is input: saturate rather than trust it.
            pos = pos.saturating_add(u64::from(c.len));
        }
        starts.push(pos);
        Layout { chunks, starts }
    }

    pub fn len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    /// Index of the chunk holding byte `offset` (`chunks.len()` at or past the end).
    pub fn index_of(&self, offset: u64) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i.min(self.chunks.len()),
            // `starts[0]` is 0, so `i` is at least 1.
            Err(i) => i.saturating_sub(1),
        }
    }

    /// Copies committed bytes `[offset, offset + buf.len())`, which lie within the layout.
    /// Holes read as zeros without touching the store. A chunk whose plaintext is not as long
    /// as the record claims (a damaged or hostile record) is `EIO` with a log line, never a
    /// panic and never other bytes in its place.
    pub fn read_at(&self, store: &Store, offset: u64, buf: &mut [u8]) -> FsResult<()> {
        let mut done = 0;
        let mut i = self.index_of(offset);
        while done < buf.len() {
            let (Some(c), Some(&start)) = (self.chunks.get(i), self.starts.get(i)) else {
                tracing::error!(offset, len = buf.len(), "read past the end of a chunk list");
                return Err(StoreError::CorruptRecord {
                    key: String::new(),
                    reason: "read past the end of the chunk list".into(),
                }
                .into());
            };
            let pos = offset + done as u64;
            let from = pos - start;
            let n = (u64::from(c.len) - from).min((buf.len() - done) as u64) as usize;
            let dst = &mut buf[done..done + n];
            if c.is_hole() {
                dst.fill(0);
            } else {
                let chunk = store.read_chunk(&c.id)?;
                if chunk.len() != c.len as usize {
                    tracing::error!(
                        chunk = %c.id,
                        claimed = c.len,
                        actual = chunk.len(),
                        "a record's chunk length differs from the chunk; refusing the read"
                    );
                    return Err(
                        StoreError::CorruptChunk(c.id, "length differs from the record's").into(),
                    );
                }
                let from = from as usize;
                dst.copy_from_slice(&chunk[from..from + n]);
            }
            done += n;
            i += 1;
        }
        Ok(())
    }

    /// The chunks that overlap `[start, end)`, with their start offsets, in order.
    pub fn chunks_in(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, &ChunkRef)> + '_ {
        let first = self.index_of(start);
        self.starts
            .iter()
            .zip(&self.chunks)
            .skip(first)
            .take_while(move |(s, _)| **s < end)
            .map(|(s, c)| (*s, c))
    }

    /// The byte ranges of `[start, end)` that are stored chunks (not holes), in order.
    pub fn data_ranges(&self, start: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let first = self.index_of(start);
        self.chunks
            .iter()
            .zip(self.starts.windows(2))
            .skip(first)
            .take_while(move |(_, w)| w[0] < end)
            .filter(|(c, _)| !c.is_hole())
            .map(move |(_, w)| (w[0].max(start), w[1].min(end)))
            .filter(|(s, e)| s < e)
    }
}

/// Hole references covering `len` bytes.
pub fn holes(mut len: u64) -> impl Iterator<Item = ChunkRef> {
    std::iter::from_fn(move || {
        let n = len.min(u64::from(HOLE_PIECE));
        len -= n;
        (n > 0).then(|| ChunkRef::hole(n as u32))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fybrk_store::{FolderKey, StoreOptions};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            &dir.path().join("db"),
            &FolderKey::from_bytes([5; 32]),
            StoreOptions::default(),
        )
        .unwrap();
        (dir, s)
    }

    #[test]
    fn holes_read_as_zeros_and_cover_their_length() {
        let (_d, store) = store();
        let mut w = store.writer();
        let data = w.add(b"data").unwrap();
        w.flush().unwrap();
        let mut chunks = vec![data];
        chunks.extend(holes(2 * u64::from(HOLE_PIECE) + 3));
        chunks.push(data);
        assert_eq!(chunks.len(), 5);
        let l = Layout::new(chunks);
        assert_eq!(l.len(), 4 + 2 * u64::from(HOLE_PIECE) + 3 + 4);
        let mut buf = [7u8; 10];
        // Straddles the start of the data chunk after the holes; no chunk read for the zeros.
        l.read_at(&store, l.len() - 6, &mut buf[..6]).unwrap();
        assert_eq!(&buf[..6], b"\0\0data");
        let far = 4 + u64::from(HOLE_PIECE) + 17;
        l.read_at(&store, far, &mut buf).unwrap();
        assert_eq!(buf, [0; 10]);
        let ranges: Vec<_> = l.data_ranges(2, l.len()).collect();
        assert_eq!(ranges, vec![(2, 4), (l.len() - 4, l.len())]);
    }

    #[test]
    fn a_wrong_chunk_length_is_an_error_not_a_panic() {
        let (_d, store) = store();
        let mut w = store.writer();
        let real = w.add(b"0123456789").unwrap();
        w.flush().unwrap();
        for claimed in [4u32, 10_000] {
            let l = Layout::new(vec![ChunkRef {
                id: real.id,
                len: claimed,
            }]);
            let mut buf = vec![0u8; claimed as usize];
            let e = l.read_at(&store, 0, &mut buf).unwrap_err();
            assert_eq!(e.errno(), libc::EIO, "claimed {claimed}: {e}");
        }
        // Reading past the list (a caller bug or a lying size) is an error too.
        let l = Layout::new(vec![real]);
        let mut buf = vec![0u8; 20];
        assert_eq!(
            l.read_at(&store, 0, &mut buf).unwrap_err().errno(),
            libc::EIO
        );
    }
}
