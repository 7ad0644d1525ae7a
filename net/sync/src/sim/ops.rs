//! What a user does on one device, as local commits to its store: write, delete, rename, mkdir.
//! Each returns the file content it overwrote or deleted, which is then allowed to disappear.

use fybrk_store::{ChunkId, ChunkRef, FileRecord, Kind};

use crate::store::mem::{chunk_id, MemStore};

/// A user operation on one device.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Write(String),
    Delete(String),
    Rename(String, String),
    Mkdir(String),
}

/// Applies `op` to `store` at `mtime_ns`; `tag` names new content. Returns the chunk ids of the
/// file content it overwrote or deleted, if any.
pub(crate) fn apply(store: &MemStore, op: &Op, mtime_ns: i64, tag: u64) -> Option<Vec<ChunkId>> {
    let old = match op {
        Op::Write(p) => write(store, p, mtime_ns, tag).flatten(),
        Op::Delete(p) => delete(store, p, mtime_ns),
        Op::Rename(from, to) => {
            rename(store, from, to, mtime_ns);
            None
        }
        Op::Mkdir(p) => {
            mkdir(store, p, mtime_ns);
            None
        }
    };
    old.filter(|c| !c.is_empty())
        .map(|c| c.iter().map(|c| c.id).collect())
}

fn live(store: &MemStore, path: &str) -> Option<FileRecord> {
    store.record(path).filter(|r| r.is_live())
}

/// Content `tag`, part `i`.
fn content(tag: u64, i: u32) -> Vec<u8> {
    format!("content {tag}/{i}").into_bytes()
}

/// Creates or overwrites a file with new content `tag` (an edit keeps the first chunk, like an
/// append-style change that dedups). `None` if `path` is a live directory.
fn write(store: &MemStore, path: &str, mtime_ns: i64, tag: u64) -> Option<Option<Vec<ChunkRef>>> {
    let old = match live(store, path) {
        Some(r) if r.kind == Kind::Dir => return None,
        Some(r) => Some(r.chunks),
        None => None,
    };
    let data = content(tag, 1);
    let mut chunks: Vec<ChunkRef> = old.iter().flat_map(|c| c.first().copied()).collect();
    chunks.push(ChunkRef {
        id: chunk_id(&data),
        len: data.len() as u32,
    });
    let mut r = FileRecord::new(path, Kind::File, 0o644, mtime_ns);
    r.size = chunks.iter().map(|c| u64::from(c.len)).sum();
    r.chunks = chunks;
    store.commit_local(vec![r], vec![data]);
    Some(old)
}

/// Deletes a live file or directory; returns the file content it deleted.
fn delete(store: &MemStore, path: &str, mtime_ns: i64) -> Option<Vec<ChunkRef>> {
    let old = live(store, path)?;
    let mut r = FileRecord::new(path, old.kind, old.mode, mtime_ns);
    r.deleted = true;
    store.commit_local(vec![r], Vec::new());
    Some(old.chunks)
}

/// Renames a live file to a free name: tombstone + new record reusing the chunks.
fn rename(store: &MemStore, from: &str, to: &str, mtime_ns: i64) -> bool {
    let Some(old) = live(store, from).filter(|r| r.kind == Kind::File) else {
        return false;
    };
    if from == to || live(store, to).is_some() {
        return false;
    }
    let mut gone = FileRecord::new(from, Kind::File, old.mode, mtime_ns);
    gone.deleted = true;
    let mut moved = old;
    moved.path = to.to_owned();
    moved.version = Default::default();
    // Two commits: peers see the tombstone first either way (it has the lower sequence).
    store.commit_local(vec![gone], Vec::new());
    store.commit_local(vec![moved], Vec::new());
    true
}

/// Makes a directory at a free name.
fn mkdir(store: &MemStore, path: &str, mtime_ns: i64) -> bool {
    if live(store, path).is_some() {
        return false;
    }
    store.commit_local(
        vec![FileRecord::new(path, Kind::Dir, 0o755, mtime_ns)],
        Vec::new(),
    );
    true
}
