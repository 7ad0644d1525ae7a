//! The chunk log: sealed chunks of large writes, appended to files of their own beside the
//! database instead of passing through RocksDB.
//!
//! A write batch of chunks once went into a RocksDB `WriteBatch`, then a memtable, then a blob
//! file written by the flush thread: three copies in user space, a CRC per byte, 8 MiB of
//! memtables on the heap and 260 blob files for 1 GiB. Here a batch is one `pwritev` from the
//! sealed buffers into the active file, and the `chunks` column family keeps a 17-byte
//! [`Location`] per chunk instead of its bytes. Small files' chunks still commit inline with
//! their record (one write batch, the write-ahead log), and stores written before the log
//! read as they are: a sealed chunk is never 17 bytes long, so the two kinds of value cannot
//! be confused.
//!
//! Files are `NNNNNNNN.chunks`, appended to until they pass [`FILE_BYTES`], then left alone
//! ("sealed") until compaction (`store::compact`) moves their live chunks out and deletes them.
//! Durability: appends are not synced; the store syncs the log ([`ChunkLog::sync`]) before
//! any index entry pointing into it becomes durable, so a crash leaves at worst unreferenced
//! bytes at the tail, which compaction reclaims.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Result;

/// A file is sealed once it holds this many bytes: small enough that a half-dead file is
/// worth rewriting soon (an on-demand device's disk stays near its budget), large enough that
/// a 1 GiB write makes 32 files, not hundreds.
pub const FILE_BYTES: u64 = 32 << 20;

/// Open files kept for reads.
const READERS: usize = 16;

/// The first byte of an index value that is a [`Location`].
const TAG: u8 = 0xFC;

/// Where a chunk's sealed bytes lie in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: u32,
    pub offset: u64,
    pub len: u32,
}

impl Location {
    pub const ENCODED_LEN: usize = 17;

    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[0] = TAG;
        out[1..5].copy_from_slice(&self.file.to_le_bytes());
        out[5..13].copy_from_slice(&self.offset.to_le_bytes());
        out[13..17].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// The location in an index value, or `None` when the value is the sealed chunk itself
    /// (always at least 28 bytes: nonce and tag).
    pub fn decode(value: &[u8]) -> Option<Location> {
        if value.len() != Self::ENCODED_LEN || value[0] != TAG {
            return None;
        }
        Some(Location {
            file: u32::from_le_bytes(value[1..5].try_into().ok()?),
            offset: u64::from_le_bytes(value[5..13].try_into().ok()?),
            len: u32::from_le_bytes(value[13..17].try_into().ok()?),
        })
    }
}

/// The file being appended to.
struct Active {
    number: u32,
    file: Arc<File>,
    len: u64,
    /// Appended to since the last sync.
    dirty: bool,
}

/// See the module doc. One per store; appends are serialised by its own lock.
pub struct ChunkLog {
    dir: PathBuf,
    /// [`FILE_BYTES`], smaller in tests.
    file_bytes: u64,
    active: Mutex<Active>,
    readers: Mutex<HashMap<u32, Arc<File>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data (offsets, open files): a panic elsewhere leaves nothing half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn file_name(number: u32) -> String {
    format!("{number:08}.chunks")
}

/// The number of a log file's name, or `None` for any other file.
fn parse_name(name: &str) -> Option<u32> {
    let digits = name.strip_suffix(".chunks")?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl ChunkLog {
    /// Opens the log in `dir` (created if missing) and appends to its newest file.
    pub fn open(dir: &Path) -> Result<ChunkLog> {
        Self::open_with(dir, FILE_BYTES)
    }

    fn open_with(dir: &Path, file_bytes: u64) -> Result<ChunkLog> {
        std::fs::create_dir_all(dir)?;
        let newest = list(dir)?.into_iter().map(|(n, _)| n).max().unwrap_or(1);
        let active = open_append(dir, newest)?;
        Ok(ChunkLog {
            dir: dir.to_path_buf(),
            file_bytes,
            active: Mutex::new(active),
            readers: Mutex::new(HashMap::new()),
        })
    }

    /// The file appended to now; compaction leaves it (and any later one) alone.
    pub fn active_file(&self) -> u32 {
        lock(&self.active).number
    }

    /// Appends `chunks` (sealed bytes) and returns where each landed, in order. A failed or
    /// short write (a full disk) is cut back off the file, so it leaves nothing behind, and
    /// nothing was appended.
    pub fn append(&self, chunks: &[&[u8]]) -> Result<Vec<Location>> {
        let mut a = lock(&self.active);
        if a.len >= self.file_bytes {
            self.roll(&mut a)?;
        }
        let start = a.len;
        let mut out = Vec::with_capacity(chunks.len());
        let mut at = start;
        for c in chunks {
            let len = u32::try_from(c.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "chunk over 4 GiB"))?;
            out.push(Location {
                file: a.number,
                offset: at,
                len,
            });
            at += u64::from(len);
        }
        if let Err(e) = write_all_vectored_at(&a.file, chunks, start) {
            // Best effort: were the truncate to fail too, the next append still starts at
            // `start` and overwrites what this one left.
            let _ = a.file.set_len(start);
            return Err(e.into());
        }
        a.len = at;
        a.dirty = true;
        Ok(out)
    }

    /// Seals the active file and starts the next. The sealed file is synced first: only the
    /// active file can then hold unsynced bytes, and [`ChunkLog::sync`] needs to sync only it.
    fn roll(&self, a: &mut Active) -> Result<()> {
        if a.dirty {
            a.file.sync_data()?;
        }
        let next = open_append(&self.dir, a.number + 1)?;
        // The new file's name must survive a crash before any index entry names it.
        File::open(&self.dir)?.sync_all()?;
        *a = next;
        Ok(())
    }

    /// Starts a new active file now (compaction does, so a mostly dead active file can be
    /// reclaimed).
    pub fn roll_now(&self) -> Result<()> {
        let mut a = lock(&self.active);
        if a.len > 0 {
            self.roll(&mut a)?;
        }
        Ok(())
    }

    /// Makes every appended byte durable.
    pub fn sync(&self) -> Result<()> {
        let mut a = lock(&self.active);
        if a.dirty {
            a.file.sync_data()?;
            a.dirty = false;
        }
        Ok(())
    }

    /// The sealed bytes at `loc`. A file that is gone (compaction moved its chunks and deleted
    /// it after the caller looked the location up) is `NotFound`: look up again.
    pub fn read(&self, loc: &Location) -> io::Result<Vec<u8>> {
        let file = self.reader(loc.file)?;
        let mut buf = vec![0u8; loc.len as usize];
        file.read_exact_at(&mut buf, loc.offset)?;
        Ok(buf)
    }

    /// An open file to read `number` from; the active one too is opened again for reading, so
    /// reads never wait for an append in flight.
    fn reader(&self, number: u32) -> io::Result<Arc<File>> {
        let mut readers = lock(&self.readers);
        if let Some(f) = readers.get(&number) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(self.dir.join(file_name(number)))?);
        if readers.len() >= READERS {
            // Any one: reads of a file come in runs, and reopening costs one syscall.
            if let Some(k) = readers.keys().next().copied() {
                readers.remove(&k);
            }
        }
        readers.insert(number, f.clone());
        Ok(f)
    }

    /// Every log file and its size, oldest first.
    pub fn files(&self) -> Result<Vec<(u32, u64)>> {
        list(&self.dir)
    }

    /// Deletes sealed file `number` (nothing may point into it any more). Its open reader goes
    /// too, so the space is freed now, not when the reader would have been evicted.
    pub fn remove(&self, number: u32) -> Result<()> {
        if number >= self.active_file() {
            return Ok(());
        }
        lock(&self.readers).remove(&number);
        match std::fs::remove_file(self.dir.join(file_name(number))) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

fn open_append(dir: &Path, number: u32) -> Result<Active> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(file_name(number)))?;
    let len = file.metadata()?.len();
    Ok(Active {
        number,
        file: Arc::new(file),
        len,
        dirty: false,
    })
}

fn list(dir: &Path) -> Result<Vec<(u32, u64)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Some(n) = e.file_name().to_str().and_then(parse_name) {
            out.push((n, e.metadata()?.len()));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// `pwritev` until every byte of `bufs` is written at `offset` on (the kernel may write less
/// than asked, e.g. at a signal).
fn write_all_vectored_at(file: &File, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut done = 0usize;
    while done < total {
        // The buffers from `done` on, the first one cut where the last write stopped.
        let mut skip = done;
        let mut iov = Vec::with_capacity(bufs.len());
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            iov.push(IoSlice::new(&b[skip..]));
            skip = 0;
            // Linux takes at most IOV_MAX (1024) buffers per call.
            if iov.len() == 1024 {
                break;
            }
        }
        let at = offset + done as u64;
        let off = libc_off(at)?;
        match nix::sys::uio::pwritev(file, &iov, off) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => done += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn libc_off(at: u64) -> io::Result<i64> {
    i64::try_from(at).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))
}

#[cfg(test)]
mod tests;
