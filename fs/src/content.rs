//! The content of an open file: the committed version (a chunk list) plus uncommitted writes.
//!
//! Writes land in a sparse staging area with the same offsets as the file: memory for small
//! files, an unnamed temporary file (`O_TMPFILE`) past [`MEM_STAGING_LIMIT`], so a file larger
//! than RAM never sits in memory. A range set remembers which bytes were written. Reading merges
//! the three sources: written bytes from staging, the rest from the committed chunks, zeros past
//! the committed content (holes, or after a truncation).
//!
//! Commit re-chunks only what changed: chunks that end before the first change are kept as they
//! are (FastCDC cut points depend only on the bytes since the previous cut), and after the last
//! change the chunker stops as soon as one of its cuts lands on an old chunk boundary, keeping the
//! old tail. Appending to a 4 GiB file therefore reads back one chunk, not 4 GiB.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use fybrk_store::{chunker, ChunkRef, ChunkWriter, Store};

use crate::error::{FsError, FsResult};
pub use crate::layout::Layout;
use crate::layout::{holes, MAX_FILE_SIZE};
use crate::stream::Stream;

/// Staging stays in memory up to this file offset; past it, writes go to a temporary file.
const MEM_STAGING_LIMIT: u64 = 1 << 20;

/// Zeros never written (a truncation up, a write past the end) that run at least this long are
/// committed as holes, not as zero chunks: a sparse file costs nothing until written. Shorter
/// gaps are chunked like any content (a hole reference is as big as a chunk reference, and
/// FastCDC cuts zeros into 256 KiB chunks that all dedup to one).
pub(crate) const HOLE_MIN: u64 = 1 << 20;

/// Sorted, disjoint, non-adjacent byte ranges.
#[derive(Debug, Default)]
pub struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    pub fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // Merge with every range that overlaps or touches [start, end).
        let touching: Vec<(u64, u64)> = self
            .0
            .range(..=end)
            .rev()
            .take_while(|(_, &e)| e >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.0.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        self.0.insert(start, end);
    }

    /// Forgets everything at or after `offset`.
    pub fn truncate(&mut self, offset: u64) {
        let tail: Vec<u64> = self.0.range(offset..).map(|(&s, _)| s).collect();
        for s in tail {
            self.0.remove(&s);
        }
        if let Some((_, e)) = self.0.range_mut(..offset).next_back() {
            *e = (*e).min(offset);
        }
    }

    pub fn first(&self) -> Option<u64> {
        self.0.keys().next().copied()
    }

    pub fn last_end(&self) -> Option<u64> {
        self.0.values().next_back().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Splits `[start, end)` into pieces, each wholly inside or outside the set.
    pub fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
        let mut out = Vec::new();
        if start >= end {
            return out;
        }
        let mut pos = start;
        let first = self.0.range(..=start).next_back().map(|(&s, &e)| (s, e));
        let rest = self.0.range(start + 1..end).map(|(&s, &e)| (s, e));
        for (s, e) in first.into_iter().chain(rest) {
            if e <= pos || s >= end {
                continue;
            }
            if s > pos {
                out.push((pos, s, false));
            }
            let stop = e.min(end);
            out.push((pos.max(s), stop, true));
            pos = stop;
        }
        if pos < end {
            out.push((pos, end, false));
        }
        out
    }
}

/// Where uncommitted bytes live.
enum Staging {
    Mem(Vec<u8>),
    File(File),
}

impl Staging {
    fn write_at(&mut self, dir: &Path, offset: u64, data: &[u8]) -> io::Result<()> {
        let end = offset + data.len() as u64;
        if let Staging::Mem(buf) = self {
            if end <= MEM_STAGING_LIMIT {
                if buf.len() < end as usize {
                    buf.resize(end as usize, 0);
                }
                buf[offset as usize..end as usize].copy_from_slice(data);
                return Ok(());
            }
            // Spill: an unnamed file in the staging dir, gone by itself when closed or on crash.
            let file = File::options()
                .read(true)
                .write(true)
                .custom_flags(libc::O_TMPFILE)
                .mode(0o600)
                .open(dir)?;
            file.write_all_at(buf, 0)?;
            *self = Staging::File(file);
        }
        match self {
            Staging::File(f) => f.write_all_at(data, offset),
            Staging::Mem(_) => unreachable!("memory staging spilled above"),
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Staging::Mem(m) => {
                let start = offset as usize;
                buf.copy_from_slice(&m[start..start + buf.len()]);
                Ok(())
            }
            Staging::File(f) => f.read_exact_at(buf, offset),
        }
    }
}

/// One open file's state, shared by all handles on the inode (so two descriptors see each
/// other's writes, as POSIX wants).
pub struct OpenFile {
    pub base: Arc<Layout>,
    staging: Option<Staging>,
    dirty: RangeSet,
    /// Committed bytes at or past this offset no longer belong to the file (truncated).
    base_valid: u64,
    pub size: u64,
    pub mtime_ns: i64,
    /// Permission bits set while writes were pending, committed with them (see `Fs::setattr`).
    pub mode: Option<u32>,
    /// Something changed since the last commit.
    pub modified: bool,
    pub handles: u32,
    /// Sequential writes to an empty file, chunked on arrival.
    stream: Option<Stream>,
    /// Chunks written but not committed yet (from a stream that ended or a failed commit):
    /// their writer keeps them pinned and carries any still unflushed ones.
    held: Option<ChunkWriter>,
    /// Keeps the committed version's chunks alive while the file is open.
    _pins: fybrk_store::Pins,
    /// The version vector of the record this content is based on (set at open, moved by
    /// every commit): a record at the path with changes from elsewhere means a peer's version
    /// landed meanwhile.
    pub version: fybrk_store::VersionVector,
}

impl OpenFile {
    pub fn new(store: &Store, chunks: Vec<ChunkRef>, mtime_ns: i64) -> OpenFile {
        let pins = store.pin(chunks.iter().map(|c| c.id));
        let base = Arc::new(Layout::new(chunks));
        let size = base.len();
        OpenFile {
            base_valid: size,
            base,
            staging: None,
            dirty: RangeSet::default(),
            size,
            mtime_ns,
            mode: None,
            modified: false,
            handles: 0,
            stream: None,
            held: None,
            _pins: pins,
            version: fybrk_store::VersionVector::default(),
        }
    }

    /// True when reads can go straight to the base chunks.
    pub fn is_clean(&self) -> bool {
        self.stream.is_none()
            && self.dirty.is_empty()
            && self.base_valid == self.base.len()
            && self.size == self.base.len()
    }

    pub fn write(
        &mut self,
        store: &Store,
        staging_dir: &Path,
        offset: u64,
        data: &[u8],
        now_ns: i64,
    ) -> FsResult<()> {
        if offset.saturating_add(data.len() as u64) > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        self.mtime_ns = now_ns;
        self.modified = true;
        if self.stream.is_none() && self.all_zeros() {
            // Writes into zeros nobody wrote are chunked on arrival (see `stream`): a new file,
            // and also one preallocated first (ftruncate or fallocate to the final size, as
            // fio, databases and download managers do), in order or not.
            self.stream = Some(Stream::new(
                self.held.take().unwrap_or_else(|| store.writer()),
            ));
        }
        if let Some(s) = &mut self.stream {
            let taken = s.write(offset, data);
            self.size = self.size.max(s.end());
            if taken.as_ref().map_or(true, |&t| t) {
                return taken.map(|_| ());
            }
        }
        self.end_stream(staging_dir)?;
        let staging = self.staging.get_or_insert_with(|| Staging::Mem(Vec::new()));
        staging.write_at(staging_dir, offset, data)?;
        let end = offset + data.len() as u64;
        self.dirty.insert(offset, end);
        self.size = self.size.max(end);
        Ok(())
    }

    /// True when the content is nothing but zeros nobody wrote: empty, or only grown by a
    /// truncation or `fallocate`, or holes. Cheap: holes are one reference per 4 GiB.
    fn all_zeros(&self) -> bool {
        self.dirty.is_empty() && self.base.data_ranges(0, self.base_valid).next().is_none()
    }

    /// Leaves streaming mode: the chunks cut so far become the base, the undecided tail becomes
    /// a written range, and random access works as usual from here on.
    pub fn end_stream(&mut self, staging_dir: &Path) -> FsResult<()> {
        let Some(mut s) = self.stream.take() else {
            return Ok(());
        };
        // Readers go to the database for base chunks. If they cannot get there (a full disk),
        // the file stays a stream, with everything in it.
        let parts = s
            .base()
            .and_then(|p| s.writer.flush().map(|()| p).map_err(Into::into));
        let (chunks, valid, tail) = match parts {
            Ok(p) => p,
            Err(e) => {
                self.stream = Some(s);
                return Err(e);
            }
        };
        self.base = Arc::new(Layout::new(chunks));
        self.base_valid = valid;
        self.dirty = RangeSet::default();
        if let Some((at, tail)) = tail {
            let staging = self.staging.get_or_insert_with(|| Staging::Mem(Vec::new()));
            staging.write_at(staging_dir, at, &tail)?;
            self.dirty.insert(at, at + tail.len() as u64);
        }
        self.held = Some(s.writer);
        Ok(())
    }

    pub fn truncate(&mut self, staging_dir: &Path, size: u64, now_ns: i64) -> FsResult<()> {
        if size > MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        match &self.stream {
            // Growing past what was streamed adds zeros after it: the stream goes on, and
            // the zeros become holes (or zero chunks) when it is committed.
            Some(s) if size >= s.end() => {}
            _ => self.end_stream(staging_dir)?,
        }
        if size < self.size {
            self.dirty.truncate(size);
            self.base_valid = self.base_valid.min(size);
        }
        self.size = size;
        self.mtime_ns = now_ns;
        self.modified = true;
        Ok(())
    }

    /// Reads up to `len` bytes at `offset` of the current (uncommitted) content.
    pub fn read(
        &mut self,
        store: &Store,
        staging_dir: &Path,
        offset: u64,
        len: usize,
    ) -> FsResult<Vec<u8>> {
        self.end_stream(staging_dir)?;
        let end = offset.saturating_add(len as u64).min(self.size);
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = vec![0u8; (end - offset) as usize];
        self.read_into(store, offset, &mut out)?;
        Ok(out)
    }

    fn read_into(&self, store: &Store, offset: u64, out: &mut [u8]) -> FsResult<()> {
        let end = offset + out.len() as u64;
        for (s, e, written) in self.dirty.pieces(offset, end) {
            let dst = &mut out[(s - offset) as usize..(e - offset) as usize];
            if written {
                if let Some(st) = &self.staging {
                    st.read_at(s, dst)?;
                }
            } else if s < self.base_valid {
                let stop = e.min(self.base_valid);
                self.base
                    .read_at(store, s, &mut dst[..(stop - s) as usize])?;
                dst[(stop - s) as usize..].fill(0);
            } else {
                dst.fill(0);
            }
        }
        Ok(())
    }

    /// Chunks the current content; returns the new chunk list and the writer holding the new,
    /// not yet committed chunks. Only changed regions are re-chunked. The file's state is left
    /// as it was, so a failed commit can be retried.
    pub fn rechunk(&mut self, store: &Store) -> FsResult<(Vec<ChunkRef>, ChunkWriter)> {
        if let Some(s) = &mut self.stream {
            let chunks = s.chunks(self.size)?;
            let writer = std::mem::replace(&mut s.writer, store.writer());
            return Ok((chunks, writer));
        }
        let base = &self.base;
        let mut writer = self.held.take().unwrap_or_else(|| store.writer());
        // First byte that may differ from the base content.
        let mut lo = self.dirty.first().unwrap_or(u64::MAX).min(self.base_valid);
        if self.size != base.len() {
            lo = lo.min(self.size.min(base.len()));
        }
        // Restart at the chunk holding `lo`. The last base chunk was cut by the end of the
        // file, not by content, so it is never a safe place to continue after.
        let keep = base.index_of(lo).min(base.chunks.len().saturating_sub(1));
        let mut chunks: Vec<ChunkRef> = base.chunks[..keep].to_vec();
        writer.reuse(&chunks);
        let restart = base.starts[keep];
        // Past `resync_from` the content equals the base at the same offsets, so a cut that
        // lands on an old boundary means the rest of the old chunks are still right.
        let resync_from = if self.size == base.len() && self.base_valid == base.len() {
            self.dirty.last_end().unwrap_or(0)
        } else {
            u64::MAX
        };

        // Content from `restart` on, as stretches that may hold data (chunked) and long runs
        // of zeros nobody wrote (holes, one reference per `HOLE_PIECE`). A stretch's end is a
        // forced cut, so content-defined cuts start again after a hole.
        let resync = |cut: u64| {
            (cut >= resync_from && cut < self.size)
                .then(|| base.starts.binary_search(&cut).ok())
                .flatten()
        };
        for (from, to, hole) in self.stretches(restart, self.size) {
            let mut at = None;
            if hole {
                chunks.extend(holes(to - from));
                at = resync(to);
            } else {
                let reader = ContentReader {
                    file: self,
                    store,
                    pos: from,
                    end: to,
                };
                for piece in chunker::chunks(reader) {
                    let piece = piece?;
                    chunks.push(writer.add(&piece.data)?);
                    at = resync(from + piece.offset + piece.length as u64);
                    if at.is_some() {
                        break;
                    }
                }
            }
            if let Some(j) = at {
                let tail = &base.chunks[j..];
                writer.reuse(tail);
                chunks.extend_from_slice(tail);
                break;
            }
        }
        Ok((chunks, writer))
    }

    /// `[start, end)` of the current content as consecutive stretches `(from, to, hole)`. A
    /// hole is a run of at least [`HOLE_MIN`] zeros that nobody wrote: past the committed
    /// content or in its holes, and not in staging. Everything else may hold data; shorter gaps
    /// of zeros go with the data around them.
    fn stretches(&self, start: u64, end: u64) -> Vec<(u64, u64, bool)> {
        let mut data: Vec<(u64, u64)> = self
            .base
            .data_ranges(start, end.min(self.base_valid))
            .collect();
        data.extend(
            self.dirty
                .pieces(start, end)
                .into_iter()
                .filter(|&(_, _, written)| written)
                .map(|(s, e, _)| (s, e)),
        );
        data.sort_unstable();
        let mut out: Vec<(u64, u64, bool)> = Vec::new();
        let mut pos = start;
        fn add_data(out: &mut Vec<(u64, u64, bool)>, from: u64, to: u64) {
            match out.last_mut() {
                Some(last) if !last.2 && last.1 == from => last.1 = to,
                _ => out.push((from, to, false)),
            }
        }
        for (s, e) in data {
            if e <= pos {
                continue;
            }
            let s = s.max(pos);
            if s - pos >= HOLE_MIN {
                out.push((pos, s, true));
                pos = s;
            }
            add_data(&mut out, pos, e);
            pos = e;
        }
        if end > pos {
            if end - pos >= HOLE_MIN {
                out.push((pos, end, true));
            } else {
                add_data(&mut out, pos, end);
            }
        }
        out
    }

    /// A commit of `chunks` failed: keep them (and the writer with any unflushed ones) as the
    /// file's content so nothing written is lost and the next flush tries again.
    pub fn commit_failed(&mut self, chunks: Vec<ChunkRef>, writer: ChunkWriter) {
        match &mut self.stream {
            // `rechunk` cut the whole stream into `chunks`, and left it in place: the writer
            // goes back with the chunks it still holds. (Turning them into the base instead
            // would make every read of a chunk not yet in the database an `EIO`.)
            Some(s) => {
                drop(chunks);
                s.writer = writer;
            }
            // Staging still holds everything: the next rechunk redoes the work.
            None => self.held = Some(writer),
        }
    }

    /// After a commit: the new chunk list is the committed version and staging is empty.
    pub fn committed(&mut self, store: &Store, chunks: Vec<ChunkRef>) {
        self._pins = store.pin(chunks.iter().map(|c| c.id));
        self.base = Arc::new(Layout::new(chunks));
        self.base_valid = self.base.len();
        self.size = self.base.len();
        self.staging = None;
        self.dirty = RangeSet::default();
        self.stream = None;
        self.held = None;
        self.modified = false;
    }
}

/// `Read` over an open file's current content, for the chunker.
struct ContentReader<'a> {
    file: &'a OpenFile,
    store: &'a Store,
    pos: u64,
    end: u64,
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min((self.end - self.pos) as usize);
        if n == 0 {
            return Ok(0);
        }
        self.file
            .read_into(self.store, self.pos, &mut buf[..n])
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fybrk_store::{FolderKey, StoreOptions};
    use proptest::prelude::*;

    #[test]
    fn range_set_merges_and_splits() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 25);
        assert_eq!(
            r.0.iter().map(|(&a, &b)| (a, b)).collect::<Vec<_>>(),
            vec![(10, 25), (30, 40)]
        );
        assert_eq!(
            r.pieces(0, 50),
            vec![
                (0, 10, false),
                (10, 25, true),
                (25, 30, false),
                (30, 40, true),
                (40, 50, false)
            ]
        );
        assert_eq!(r.pieces(12, 13), vec![(12, 13, true)]);
        r.insert(5, 35);
        assert_eq!(r.0.len(), 1);
        r.truncate(20);
        assert_eq!(
            r.pieces(0, 30),
            vec![(0, 5, false), (5, 20, true), (20, 30, false)]
        );
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(
            &dir.path().join("db"),
            &FolderKey::from_bytes([4; 32]),
            StoreOptions::default(),
        )
        .unwrap();
        (dir, s)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Write(u32, Vec<u8>),
        Append(Vec<u8>),
        Truncate(u32),
        /// Empties the file, grows it to the first number, then writes the pieces in order
        /// from 0 (ftruncate or fallocate first, then the content: the streaming path).
        Preallocated(u32, Vec<Vec<u8>>),
        /// Empties the file, then writes blocks of the given lengths (laid end to end from
        /// the offset) in a shuffled order: the out-of-order streaming path.
        Scattered(u32, Vec<u32>, u64),
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u32..600_000, proptest::collection::vec(any::<u8>(), 1..70_000)).prop_map(|(o, d)| Op::Write(o, d)),
            3 => proptest::collection::vec(any::<u8>(), 1..300_000).prop_map(Op::Append),
            1 => (0u32..700_000).prop_map(Op::Truncate),
            1 => (0u32..2_500_000, proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..400_000), 0..4)).prop_map(|(n, p)| Op::Preallocated(n, p)),
            1 => (0u32..600_000, proptest::collection::vec(prop_oneof![Just(300_000u32), 1u32..20_000], 1..6), any::<u64>()).prop_map(|(o, b, seed)| Op::Scattered(o, b, seed)),
            1 => Just(Op::Commit),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Random writes, truncations and commits against a plain Vec model: reads and
        /// committed chunk lists always give the model's bytes.
        #[test]
        fn open_file_matches_a_byte_vector(ops in proptest::collection::vec(op(), 1..25)) {
            let (dir, store) = store();
            let mut f = OpenFile::new(&store, Vec::new(), 0);
            let mut model: Vec<u8> = Vec::new();
            for op in ops {
                match op {
                    Op::Write(off, data) => {
                        f.write(&store, dir.path(), u64::from(off), &data, 1).unwrap();
                        let end = off as usize + data.len();
                        if model.len() < end { model.resize(end, 0); }
                        model[off as usize..end].copy_from_slice(&data);
                    }
                    Op::Append(data) => {
                        f.write(&store, dir.path(), model.len() as u64, &data, 1).unwrap();
                        model.extend_from_slice(&data);
                    }
                    Op::Truncate(n) => { f.truncate(dir.path(), u64::from(n), 1).unwrap(); model.resize(n as usize, 0); }
                    Op::Scattered(from, lens, seed) => {
                        f.truncate(dir.path(), 0, 1).unwrap();
                        model.clear();
                        let mut blocks = Vec::new();
                        let mut at = u64::from(from);
                        for (i, len) in lens.into_iter().enumerate() {
                            let fill = (seed as u8).wrapping_add(i as u8) | 1;
                            blocks.push((at, vec![fill; len as usize]));
                            at += u64::from(len);
                        }
                        let mut x = seed | 1;
                        for i in (1..blocks.len()).rev() {
                            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                            blocks.swap(i, (x % (i as u64 + 1)) as usize);
                        }
                        for (off, data) in blocks {
                            f.write(&store, dir.path(), off, &data, 1).unwrap();
                            let end = off as usize + data.len();
                            if model.len() < end { model.resize(end, 0); }
                            model[off as usize..end].copy_from_slice(&data);
                        }
                    }
                    Op::Preallocated(n, pieces) => {
                        f.truncate(dir.path(), 0, 1).unwrap();
                        f.truncate(dir.path(), u64::from(n), 1).unwrap();
                        model.clear();
                        model.resize(n as usize, 0);
                        let mut at = 0usize;
                        for p in pieces {
                            f.write(&store, dir.path(), at as u64, &p, 1).unwrap();
                            if model.len() < at + p.len() { model.resize(at + p.len(), 0); }
                            model[at..at + p.len()].copy_from_slice(&p);
                            at += p.len();
                        }
                    }
                    Op::Commit => {
                        let (chunks, mut w) = f.rechunk(&store).unwrap();
                        let mut r = fybrk_store::FileRecord::new("f", fybrk_store::Kind::File, 0o644, 1);
                        r.size = chunks.iter().map(|c| u64::from(c.len)).sum();
                        prop_assert_eq!(r.size, model.len() as u64);
                        r.chunks = chunks.clone();
                        store.commit(vec![r], Some(&mut w), false).unwrap();
                        f.committed(&store, chunks);
                    }
                }
                prop_assert_eq!(f.size, model.len() as u64);
                let got = f.read(&store, dir.path(), 0, model.len() + 10).unwrap();
                prop_assert_eq!(&got, &model);
            }
            prop_assert!(store.verify().unwrap().is_ok());
        }
    }

    /// ftruncate (or fallocate) to the final size, then the content in order: chunked as it
    /// arrives, like a plain append, with the zeros past what was written left as a hole.
    #[test]
    fn preallocated_file_streams() {
        let (dir, store) = store();
        let mut f = OpenFile::new(&store, Vec::new(), 0);
        f.truncate(dir.path(), 8 << 20, 1).unwrap();
        let piece: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
        for i in 0..5u64 {
            f.write(&store, dir.path(), i << 20, &piece, 1).unwrap();
            assert!(f.stream.is_some(), "write {i} left the stream");
            assert!(f.staging.is_none());
        }
        assert_eq!(f.size, 8 << 20);
        let (chunks, w) = f.rechunk(&store).unwrap();
        let total: u64 = chunks.iter().map(|c| u64::from(c.len)).sum();
        assert_eq!(total, 8 << 20);
        assert!(chunks.last().is_some_and(|c| c.is_hole()));
        // As after a commit that failed: the stream carries on with its chunks.
        f.commit_failed(chunks, w);
        // Growing further keeps streaming; shrinking below what was streamed ends it.
        f.truncate(dir.path(), 9 << 20, 1).unwrap();
        assert!(f.stream.is_some());
        f.truncate(dir.path(), 1 << 20, 1).unwrap();
        assert!(f.stream.is_none());
        assert_eq!(f.read(&store, dir.path(), 0, 2 << 20).unwrap(), piece);
    }

    /// 1 MiB blocks in a shuffled order into a new file: chunked as they arrive, nothing
    /// staged, and the commit gives the bytes back.
    #[test]
    fn out_of_order_blocks_stream() {
        let (dir, store) = store();
        let mut f = OpenFile::new(&store, Vec::new(), 0);
        let order = [3u64, 0, 5, 1, 4, 2];
        let block = |i: u64| vec![i as u8 + 1; 1 << 20];
        for &i in &order {
            f.write(&store, dir.path(), i << 20, &block(i), 1).unwrap();
            assert!(f.stream.is_some() && f.staging.is_none(), "block {i}");
        }
        let (chunks, mut w) = f.rechunk(&store).unwrap();
        let mut r = fybrk_store::FileRecord::new("f", fybrk_store::Kind::File, 0o644, 1);
        r.size = chunks.iter().map(|c| u64::from(c.len)).sum();
        assert_eq!(r.size, 6 << 20);
        r.chunks = chunks.clone();
        store.commit(vec![r], Some(&mut w), false).unwrap();
        f.committed(&store, chunks);
        let got = f.read(&store, dir.path(), 0, 7 << 20).unwrap();
        let want: Vec<u8> = (0..6).flat_map(block).collect();
        assert!(got == want);
        // A small write away from the segments, or one overlapping them, goes to staging.
        let mut g = OpenFile::new(&store, Vec::new(), 0);
        g.write(&store, dir.path(), 1 << 20, &block(1), 1).unwrap();
        g.write(&store, dir.path(), 5, b"small", 1).unwrap();
        assert!(g.stream.is_none());
        let got = g.read(&store, dir.path(), 0, 3 << 20).unwrap();
        assert_eq!(got.len(), 2 << 20);
        assert_eq!(&got[5..10], b"small");
        assert!(got[1 << 20..] == block(1)[..]);
    }

    #[test]
    fn small_edit_rechunks_little() {
        let (dir, store) = store();
        let mut data = vec![0u8; 8 << 20];
        let mut x = 1u64;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let mut f = OpenFile::new(&store, Vec::new(), 0);
        f.write(&store, dir.path(), 0, &data, 1).unwrap();
        let (chunks, mut w) = f.rechunk(&store).unwrap();
        let mut r = fybrk_store::FileRecord::new("f", fybrk_store::Kind::File, 0o644, 1);
        r.size = data.len() as u64;
        r.chunks = chunks.clone();
        store.commit(vec![r], Some(&mut w), false).unwrap();
        f.committed(&store, chunks.clone());

        f.write(&store, dir.path(), 4 << 20, b"an edit in the middle", 2)
            .unwrap();
        let (after, _w) = f.rechunk(&store).unwrap();
        let changed = after.iter().filter(|c| !chunks.contains(c)).count();
        assert!(changed <= 2, "{changed} chunks changed");
        assert_eq!(after.len(), chunks.len());
    }
}
