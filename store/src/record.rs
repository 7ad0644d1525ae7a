//! The folder index: file records, version vectors and how paths become keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ChunkId;

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A regular file; its content is the record's chunk list.
    File,
    /// A directory.
    Dir,
    /// A symbolic link; its target is in [`FileRecord::target`].
    Symlink,
}

/// One chunk of a file: its id and plaintext length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// Keyed BLAKE3 of the plaintext.
    pub id: ChunkId,
    /// Plaintext length in bytes.
    pub len: u32,
}

impl ChunkRef {
    /// `len` zero bytes that are not stored anywhere (see [`ChunkId::HOLE`]).
    pub fn hole(len: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::HOLE,
            len,
        }
    }

    /// True for a hole: zeros, no chunk behind it.
    pub fn is_hole(&self) -> bool {
        self.id.is_hole()
    }
}

/// Short device id used inside version vectors (the first 64 bits of the device id).
pub type ShortId = u64;

/// A version vector: per device, the counter of the last change that device made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<ShortId, u64>);

/// How two version vectors relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ordering {
    /// Same version.
    Equal,
    /// The left one is older (the right one has seen everything it has).
    Before,
    /// The left one is newer.
    After,
    /// Neither has seen the other: a conflict.
    Concurrent,
}

impl VersionVector {
    /// Records a new change by `device` with counter `counter` (must exceed every counter the
    /// vector holds for that device).
    pub fn bump(&mut self, device: ShortId, counter: u64) {
        let slot = self.0.entry(device).or_insert(0);
        *slot = (*slot).max(counter);
    }

    /// Compares two vectors.
    pub fn compare(&self, other: &VersionVector) -> Ordering {
        let mut less = false;
        let mut greater = false;
        let keys = self.0.keys().chain(other.0.keys());
        for k in keys {
            let a = self.0.get(k).copied().unwrap_or(0);
            let b = other.0.get(k).copied().unwrap_or(0);
            less |= a < b;
            greater |= a > b;
        }
        match (less, greater) {
            (false, false) => Ordering::Equal,
            (true, false) => Ordering::Before,
            (false, true) => Ordering::After,
            (true, true) => Ordering::Concurrent,
        }
    }

    /// Whether `self` holds a change by a device other than `me` that `base` has not seen:
    /// a peer's version landed since `base`.
    pub fn changed_elsewhere(&self, base: &VersionVector, me: ShortId) -> bool {
        self.0
            .iter()
            .any(|(d, c)| *d != me && *c > base.0.get(d).copied().unwrap_or(0))
    }

    /// The element-wise maximum of both vectors.
    pub fn merge(&mut self, other: &VersionVector) {
        for (k, v) in &other.0 {
            let slot = self.0.entry(*k).or_insert(0);
            *slot = (*slot).max(*v);
        }
    }
}

/// Everything the folder knows about one path. Field order matters: `kind` and `deleted` come
/// first so `peek_live_dir` can read them without decoding the chunk list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// File, directory or symlink.
    pub kind: Kind,
    /// A tombstone: the path was deleted at this version.
    pub deleted: bool,
    /// Path relative to the folder root, `/`-separated, no leading slash.
    pub path: String,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Logical size in bytes (for a symlink: the target's length).
    pub size: u64,
    /// The file's content in order. Empty for directories and symlinks.
    pub chunks: Vec<ChunkRef>,
    /// Symlink target.
    pub target: Option<String>,
    /// Which changes this version has seen.
    pub version: VersionVector,
    /// Local sequence number of the change that produced this record (its change-log key).
    pub seq: u64,
}

impl FileRecord {
    /// A new record with no version yet; [`crate::Store::commit`] fills version and seq.
    pub fn new(path: &str, kind: Kind, mode: u32, mtime_ns: i64) -> FileRecord {
        FileRecord {
            kind,
            deleted: false,
            path: path.to_owned(),
            mode,
            mtime_ns,
            size: 0,
            chunks: Vec::new(),
            target: None,
            version: VersionVector::default(),
            seq: 0,
        }
    }

    /// True for a live (not deleted) record.
    pub fn is_live(&self) -> bool {
        !self.deleted
    }
}

/// The database key of a path: `parent \0 name`. All children of a directory share the prefix
/// `dir \0`, so listing a directory is one prefix scan that touches only its own entries.
pub fn path_key(path: &str) -> Vec<u8> {
    let (parent, name) = split_parent(path);
    let mut key = Vec::with_capacity(path.len() + 1);
    key.extend_from_slice(parent.as_bytes());
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The key prefix shared by all children of `dir` ("" is the root).
pub fn children_prefix(dir: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(dir.len() + 1);
    key.extend_from_slice(dir.as_bytes());
    key.push(0);
    key
}

/// Splits `a/b/c` into (`a/b`, `c`); a top-level name has parent "".
pub fn split_parent(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// True when `path` is `root` or inside it (`root` "" is the whole folder).
pub fn is_under(path: &str, root: &str) -> bool {
    root.is_empty()
        || path == root
        || path
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Joins a directory path and a name.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Reads `kind == Dir && !deleted` from an encoded record without decoding the rest.
/// postcard writes an enum's variant index as a varint (one byte for < 128) and a bool as one
/// byte, in field order.
pub(crate) fn peek_live_dir(encoded: &[u8]) -> bool {
    matches!(encoded, [1, 0, ..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_group_children() {
        assert_eq!(path_key("a"), b"\0a");
        assert_eq!(path_key("a/b/c"), b"a/b\0c");
        assert!(path_key("a/b/c").starts_with(&children_prefix("a/b")));
        assert!(!path_key("ab/c").starts_with(&children_prefix("a")));
    }

    #[test]
    fn peek_matches_full_decode() {
        for (kind, deleted) in [
            (Kind::File, false),
            (Kind::Dir, false),
            (Kind::Dir, true),
            (Kind::Symlink, false),
        ] {
            let mut r = FileRecord::new("x/y", kind, 0o755, 1);
            r.deleted = deleted;
            let enc = postcard::to_allocvec(&r).unwrap();
            assert_eq!(peek_live_dir(&enc), kind == Kind::Dir && !deleted);
        }
    }

    #[test]
    fn version_vectors_order() {
        let mut a = VersionVector::default();
        a.bump(1, 1);
        let mut b = a.clone();
        b.bump(2, 5);
        assert_eq!(a.compare(&b), Ordering::Before);
        assert_eq!(b.compare(&a), Ordering::After);
        let mut c = a.clone();
        c.bump(1, 2);
        assert_eq!(b.compare(&c), Ordering::Concurrent);
        let mut m = b.clone();
        m.merge(&c);
        assert_eq!(m.compare(&b), Ordering::After);
        assert_eq!(m.compare(&c), Ordering::After);
        assert_eq!(a.compare(&a.clone()), Ordering::Equal);
    }
}
