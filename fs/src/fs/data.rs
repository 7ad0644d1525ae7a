//! Open files and their content: handles, reads, buffered writes, and committing an open file's
//! new content (on flush, fsync, release and setattr). Content buffering itself lives in
//! `content`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fybrk_store::{ChunkRef, ChunkWriter, FileRecord, Kind, VersionVector};

use super::{live, lock, now_ns, Fs, Handle, OpenMode, Orphan};
use crate::content::OpenFile;
use crate::error::{FsError, FsResult};
use crate::layout::Layout;

impl Fs {
    /// Fresh open state for the file `r`.
    fn open_state(&self, r: &FileRecord) -> OpenFile {
        let mut f = OpenFile::new(&self.store(), r.chunks.clone(), r.mtime_ns);
        f.version = r.version.clone();
        f
    }

    /// Runs `op` on the open state of `ino`, opening it for the duration if no handle has it.
    pub(super) fn with_open_file<T>(
        &self,
        ino: u64,
        r: &FileRecord,
        op: impl FnOnce(&mut OpenFile) -> FsResult<T>,
    ) -> FsResult<T> {
        let f = match self.open_file(ino) {
            Some(f) => f,
            None => Arc::new(Mutex::new(self.open_state(r))),
        };
        let mut f = lock(&f);
        op(&mut f)
    }

    /// Commits `ino`: the open file's new content if it changed, plus `edit` on the record.
    /// A file that was unlinked meanwhile is not brought back.
    pub(super) fn commit_file(
        &self,
        ino: u64,
        mut f: Option<&mut OpenFile>,
        sync: bool,
        edit: impl FnOnce(&mut FileRecord),
    ) -> FsResult<()> {
        let mut content = match &mut f {
            Some(f) if f.modified => Some(f.rechunk(&self.store())?),
            _ => None,
        };
        let pending_mode = f.as_deref().and_then(|f| f.mode);
        let result = self.commit_record(
            ino,
            &mut content,
            f.as_deref().map(|f| (f.mtime_ns, &f.version)),
            sync,
            |rec| {
                if let Some(m) = pending_mode {
                    rec.mode = m;
                }
                edit(rec)
            },
        );
        if let Some(f) = f {
            if result.is_ok() {
                f.mode = None;
            }
            match (result, content) {
                (Ok(Some((mtime, version))), Some((chunks, _writer))) => {
                    f.committed(&self.store(), chunks);
                    f.mtime_ns = mtime;
                    f.version = version;
                }
                (Ok(Some((mtime, version))), None) => {
                    f.mtime_ns = mtime;
                    f.version = version;
                }
                // Unlinked meanwhile: nothing to commit, nothing to keep.
                (Ok(None), _) => f.modified = false,
                (Err(e), Some((chunks, writer))) => {
                    f.commit_failed(chunks, writer);
                    return Err(e);
                }
                (Err(e), None) => return Err(e),
            }
        }
        Ok(())
    }

    /// The record half of [`Fs::commit_file`], under the namespace lock. `open` is the open
    /// file's mtime and the version its content is based on. Returns the committed mtime and
    /// version, or `None` if the inode has no name any more.
    fn commit_record(
        &self,
        ino: u64,
        content: &mut Option<(Vec<ChunkRef>, ChunkWriter)>,
        open: Option<(i64, &VersionVector)>,
        sync: bool,
        edit: impl FnOnce(&mut FileRecord),
    ) -> FsResult<Option<(i64, VersionVector)>> {
        let mtime_ns = open.map(|(t, _)| t);
        let _ns = lock(&self.ns);
        let Some(path) = lock(&self.inodes).path(ino).map(str::to_owned) else {
            let orphan = lock(&self.orphans).get(&ino).cloned();
            return match (orphan, content.as_mut()) {
                (Some(o), Some(c)) => self.commit_orphan(ino, o, c, mtime_ns, sync).map(Some),
                _ => Ok(None),
            };
        };
        let Some(mut rec) = live(self.store().get(&path)?) else {
            return Ok(None);
        };
        if let (Some((_, base)), Some(c)) = (open, content.as_mut()) {
            if rec.version.changed_elsewhere(base, self.store().device()) {
                // A peer's version landed after this content was opened, and the kernel has
                // not been told yet: the same as an orphaned inode, just found first here.
                lock(&self.inodes).unlink(&path, None);
                let orphan = Orphan::Was(path);
                return self.commit_orphan(ino, orphan, c, mtime_ns, sync).map(Some);
            }
        }
        rec.version = Default::default();
        if let Some((chunks, _)) = content {
            rec.size = chunks.iter().map(|c| u64::from(c.len)).sum();
            rec.chunks = chunks.clone();
        }
        if let Some(t) = mtime_ns {
            rec.mtime_ns = t;
        }
        edit(&mut rec);
        let mtime = rec.mtime_ns;
        let committed = self
            .store()
            .commit(vec![rec], content.as_mut().map(|(_, w)| w), sync)?;
        let version = committed
            .into_iter()
            .next()
            .map(|r| r.version)
            .unwrap_or_default();
        Ok(Some((mtime, version)))
    }

    fn new_handle(&self, ino: u64, mode: OpenMode) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles).insert(
            fh,
            Handle {
                ino,
                mode,
                owner: None,
                read_end: 0,
            },
        );
        fh
    }

    /// Opens a regular file.
    pub fn open(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        if crate::travel::is_synthetic(ino) {
            return self.past_open(ino, mode.write || mode.truncate);
        }
        if !mode.write {
            return self.open_file_handle(ino, mode);
        }
        // Before anything can be written: no page fill from here until the handle closes.
        self.fill.writer_opened(ino);
        let opened = self.open_file_handle(ino, mode);
        if opened.is_err() {
            self.fill.writer_closed(ino);
        }
        opened
    }

    fn open_file_handle(&self, ino: u64, mode: OpenMode) -> FsResult<u64> {
        let (r, _) = self.record_for(ino)?;
        match r.kind {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid),
        }
        let f = {
            // The count goes up under the map's lock: a `release` of the last other handle
            // (the kernel sends it after `close` returns, so it races the next `open`) takes
            // that lock too, and would otherwise drop the entry between our lookup and our
            // count, leaving this handle without open state (reads failed with EBADF).
            let mut files = lock(&self.open_files);
            let f = files
                .entry(ino)
                .or_insert_with(|| Arc::new(Mutex::new(self.open_state(&r))))
                .clone();
            lock(&f).handles += 1;
            f
        };
        {
            let mut f = lock(&f);
            if mode.truncate && mode.write && f.size > 0 {
                f.truncate(&self.cfg.staging_dir, 0, now_ns())?;
                self.content_changed(ino);
            }
        }
        lock(&self.inodes).opened(ino);
        Ok(self.new_handle(ino, mode))
    }

    fn handle(&self, fh: u64) -> FsResult<(u64, OpenMode, Arc<Mutex<OpenFile>>)> {
        let (ino, mode) = {
            let handles = lock(&self.handles);
            let h = handles.get(&fh).ok_or(FsError::BadHandle)?;
            (h.ino, h.mode)
        };
        let f = self.open_file(ino).ok_or(FsError::BadHandle)?;
        Ok((ino, mode, f))
    }

    /// Reads up to `size` bytes at `offset`.
    pub fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        if crate::travel::is_synthetic(fh) {
            return self.past_read(fh, offset, size);
        }
        let (ino, _, f) = self.handle(fh)?;
        let sequential = {
            let mut handles = lock(&self.handles);
            let h = handles.get_mut(&fh).ok_or(FsError::BadHandle)?;
            let seq = h.read_end == offset;
            h.read_end = offset.saturating_add(u64::from(size));
            seq
        };
        let mut f = lock(&f);
        let result = if !f.is_clean() {
            f.read(&self.store(), &self.cfg.staging_dir, offset, size as usize)
        } else {
            // A random read may fill the kernel's cache with the rest of its chunks; the
            // ticket is taken before the content is looked at (see `crate::fill`).
            let ticket = match sequential {
                true => None,
                false => self.fill.ticket(ino),
            };
            // Committed content only: read the chunks without holding the file lock.
            let base = f.base.clone();
            drop(f);
            let end = offset.saturating_add(u64::from(size)).min(base.len());
            if offset >= end {
                return Ok(Vec::new());
            }
            self.read_ahead(&base, offset, end, sequential);
            let mut out = vec![0u8; (end - offset) as usize];
            let read = base.read_at(&self.store(), offset, &mut out).map(|()| out);
            if let (Ok(_), Some(ticket)) = (&read, ticket) {
                self.fill_pages(ino, ticket, &base, offset, end);
            }
            read
        };
        match &result {
            Ok(_) => self.note_readable(ino),
            Err(e) => self.note_unreadable(ino, e),
        }
        result
    }

    /// Offers the chunks of `base` that `[offset, end)` touched, just read and so in the
    /// decrypted-chunk cache, to the page fill.
    fn fill_pages(&self, ino: u64, ticket: u64, base: &Layout, offset: u64, end: u64) {
        let store = self.store();
        for (start, c) in base.chunks_in(offset, end) {
            if c.is_hole() {
                continue;
            }
            // A hit unless another reader pushed it out meanwhile: then no fill, no new read.
            if let Some(plain) = store
                .cached_chunk(&c.id)
                .filter(|p| p.len() == c.len as usize)
            {
                self.fill.offer(ino, ticket, start, plain, base.len());
            }
        }
    }

    /// Writes `data` at `offset` (at the end for O_APPEND handles). Buffered until flush.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        let (ino, mode, f) = self.handle(fh)?;
        if !mode.write {
            return Err(FsError::BadHandle);
        }
        let mut f = lock(&f);
        let at = if mode.append { f.size } else { offset };
        let result = f.write(&self.store(), &self.cfg.staging_dir, at, data, now_ns());
        // Even a failed write may have changed part of the content (a stream keeps its tail).
        self.content_changed(ino);
        result.map(|()| data.len() as u32)
    }

    /// `fallocate(2)` modes 0 and `FALLOC_FL_KEEP_SIZE` (`keep_size`) on `fh`: reserves
    /// `[offset, offset + len)`. Nothing is reserved on disk: zeros nobody wrote are holes here
    /// (they cost nothing until written), so mode 0 only grows the size to `offset + len`, and
    /// `keep_size` only checks the range. Like `write`, it needs a handle open for writing.
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, keep_size: bool) -> FsResult<()> {
        if crate::travel::is_synthetic(fh) {
            return Err(FsError::ReadOnly);
        }
        // fallocate(2): a zero length is EINVAL; past the largest file is EFBIG.
        if len == 0 {
            return Err(FsError::Invalid);
        }
        let end = offset.checked_add(len).ok_or(FsError::TooBig)?;
        if end > crate::layout::MAX_FILE_SIZE {
            return Err(FsError::TooBig);
        }
        let (ino, mode, f) = self.handle(fh)?;
        if !mode.write {
            return Err(FsError::BadHandle);
        }
        let mut f = lock(&f);
        if !keep_size && end > f.size {
            f.truncate(&self.cfg.staging_dir, end, now_ns())?;
            self.content_changed(ino);
        }
        Ok(())
    }

    /// Whether this open of `ino` may let the kernel keep the pages it cached before: yes when
    /// nothing changed the content since an earlier open (see [`Inodes::keep_cache`]). A
    /// peer's change gives the path a new inode, and [`Fs::changed_remotely`] clears the old
    /// one too, so a file opened after one is read afresh.
    ///
    /// [`Inodes::keep_cache`]: crate::inodes::Inodes::keep_cache
    pub fn keep_cache(&self, ino: u64) -> bool {
        lock(&self.inodes).keep_cache(ino)
    }

    /// The content of `ino` changed here: the next open lets the kernel drop its cache.
    pub(super) fn content_changed(&self, ino: u64) {
        lock(&self.inodes).content_changed(ino);
    }

    /// Commits buffered writes (on every `close`).
    pub fn flush(&self, fh: u64) -> FsResult<()> {
        self.commit_handle(fh, false)
    }

    /// Records which process opened `fh`, for [`Fs::flush_from`].
    pub fn set_owner(&self, fh: u64, pid: u32) {
        if let Some(h) = lock(&self.handles).get_mut(&fh) {
            h.owner = Some(pid);
        }
    }

    /// A `close` of `fh` by process `pid`. The opener's close commits, like [`Fs::flush`]. A
    /// close by another process does not: that is a forked child dropping its inherited copy of
    /// a file the parent is still writing (every `fork` + `exec` does it), and committing then
    /// would publish a half-written file to peers. The last close commits anyway
    /// ([`Fs::release`]).
    pub fn flush_from(&self, fh: u64, pid: u32) -> FsResult<()> {
        let owner = lock(&self.handles).get(&fh).and_then(|h| h.owner);
        match owner {
            Some(o) if o != pid => Ok(()),
            _ => self.flush(fh),
        }
    }

    /// Commits buffered writes and makes them durable.
    pub fn fsync(&self, fh: u64) -> FsResult<()> {
        self.commit_handle(fh, true)?;
        Ok(self.store().sync()?)
    }

    fn commit_handle(&self, fh: u64, sync: bool) -> FsResult<()> {
        if crate::travel::is_synthetic(fh) {
            return Ok(());
        }
        let (ino, _, f) = self.handle(fh)?;
        let mut f = lock(&f);
        if f.modified {
            self.commit_file(ino, Some(&mut f), sync, |_| {})?;
        }
        Ok(())
    }

    /// Closes a handle: commits what is left and drops the open state with the last handle.
    pub fn release(&self, fh: u64) -> FsResult<()> {
        if crate::travel::is_synthetic(fh) {
            self.past_release(fh);
            return Ok(());
        }
        let result = self.commit_handle(fh, false);
        let Some(h) = lock(&self.handles).remove(&fh) else {
            return result;
        };
        let mut files = lock(&self.open_files);
        if let Some(f) = files.get(&h.ino).cloned() {
            let mut f = lock(&f);
            f.handles = f.handles.saturating_sub(1);
            if f.handles == 0 && !f.modified {
                files.remove(&h.ino);
            }
        }
        drop(files);
        if h.mode.write {
            self.fill.writer_closed(h.ino);
        }
        lock(&self.inodes).closed(h.ino);
        result
    }

    /// Commits every open file with pending writes (before unmount).
    pub fn flush_all(&self) -> FsResult<()> {
        let files: Vec<(u64, Arc<Mutex<OpenFile>>)> = lock(&self.open_files)
            .iter()
            .map(|(&i, f)| (i, f.clone()))
            .collect();
        for (ino, f) in files {
            let mut f = lock(&f);
            if f.modified {
                self.commit_file(ino, Some(&mut f), false, |_| {})?;
            }
        }
        Ok(self.store().sync()?)
    }
}
