//! History: every version of every path this device has committed, kept until retention thins
//! it.
//!
//! Every commit ([`crate::Store::commit_changes`]) writes each new record twice: into `records`
//! (the newest version of each path, what the folder is now) and into `history` under
//! `path_key \0 seq`, together with when it was committed here, which device made it and what
//! happened ([`Event`]). A version's chunks are referenced by its history entry as well as by
//! the record while it is current, so replacing or deleting a file frees nothing: its chunks are
//! garbage only after retention ([`retention`]) removed every version that uses them.
//!
//! "The folder as it was at time T" is a lookup, not a rebuild (restic's and KBFS's immutable
//! trees, STYLE 15): for each path, the newest version committed at or before T.
//!
//! Times are this device's clock at commit: the history of a device is what that device held.
//! A version received from a peer is dated when it arrived here.

use serde::{Deserialize, Serialize};

use crate::record::{path_key, ShortId, VersionVector};
use crate::{FileRecord, Kind, Result, StoreError};

mod read;
mod restore;
pub mod retention;
#[cfg(test)]
mod tests;
mod thin;

pub use restore::RestoreError;
pub use retention::{Retention, KEEP_ALL};
pub use thin::ThinReport;

/// An empty file replaced by the same device within this long was one step of a save, not a
/// version (see `Store::commit_changes`): editors and `cp` create or truncate a file and write it
/// a moment later, and the empty step is noise in `fybrk log`.
pub const SAVE_STEP: std::time::Duration = std::time::Duration::from_secs(1);

/// What a version did to its path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// The path came into existence (or came back after a deletion).
    Create,
    /// New content or metadata for an existing path.
    Edit,
    /// The path was deleted (the version is a tombstone; the one before it has the content).
    Delete,
    /// The path was renamed to this one from `from`.
    RenameFrom(String),
    /// The path was renamed away to `to` (a tombstone here).
    RenameTo(String),
    /// A conflict copy: the losing side of concurrent edits, kept under this name.
    Conflict,
    /// An older version brought back by a restore.
    Restore,
}

impl Event {
    /// A word for `fybrk log`: `create`, `edit`, `delete`, `rename`, `conflict`, `restore`.
    pub fn word(&self) -> &'static str {
        match self {
            Event::Create => "create",
            Event::Edit => "edit",
            Event::Delete => "delete",
            Event::RenameFrom(_) | Event::RenameTo(_) => "rename",
            Event::Conflict => "conflict",
            Event::Restore => "restore",
        }
    }
}

/// One kept version of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// When this device committed it, nanoseconds since the Unix epoch.
    pub since_ns: i64,
    /// The device that made the change (for a version from a peer: the device whose counter
    /// the change advanced; 0 when that cannot be told).
    pub origin: ShortId,
    /// What happened.
    pub event: Event,
    /// The record as committed (its `seq` identifies the version on this device).
    pub record: FileRecord,
}

impl Version {
    /// The version's id on this device: its local sequence number.
    pub fn id(&self) -> u64 {
        self.record.seq
    }
}

/// `path_key(path) \0 seq`: all versions of a path are adjacent, oldest first, and all versions
/// of a directory's children share the directory's children prefix. Names never hold `\0`, so
/// the last nine bytes always split off cleanly.
pub(crate) fn history_key(path: &str, seq: u64) -> Vec<u8> {
    let mut key = path_key(path);
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Splits a history key into the path key and the sequence number.
pub(crate) fn split_key(key: &[u8]) -> Option<(&[u8], u64)> {
    let cut = key.len().checked_sub(9)?;
    let (path, tail) = key.split_at(cut);
    if tail[0] != 0 {
        return None;
    }
    let seq = u64::from_be_bytes(tail[1..].try_into().ok()?);
    Some((path, seq))
}

pub(crate) fn encode(v: &Version) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(|e| StoreError::CorruptRecord {
        key: format!("history/{}", v.record.path),
        reason: format!("cannot encode: {e}"),
    })
}

pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<Version> {
    postcard::from_bytes(value).map_err(|e| StoreError::CorruptRecord {
        key: format!(
            "history/{}",
            String::from_utf8_lossy(key).replace('\0', "/")
        ),
        reason: e.to_string(),
    })
}

/// Which device made `new` given the version it replaces: for a local change this device; for
/// a peer's version the one device whose counter advanced (0 when none or several did, as after
/// a merge).
pub(crate) fn origin_of(new: &VersionVector, old: Option<&VersionVector>) -> ShortId {
    let mut advanced = new
        .0
        .iter()
        .filter(|(d, c)| old.and_then(|o| o.0.get(d)).is_none_or(|oc| *c > oc))
        .map(|(d, _)| *d);
    match (advanced.next(), advanced.next()) {
        (Some(d), None) => d,
        _ => 0,
    }
}

/// What a version did, told from the version it replaces and, for the two halves of a rename
/// committed together, the other half's path.
pub(crate) fn event_of(
    new: &FileRecord,
    old: Option<&FileRecord>,
    renamed: Option<&str>,
    conflict: bool,
) -> Event {
    let existed = old.is_some_and(FileRecord::is_live);
    match (new.deleted, renamed) {
        (true, Some(to)) => Event::RenameTo(to.to_owned()),
        (true, None) => Event::Delete,
        (false, Some(from)) => Event::RenameFrom(from.to_owned()),
        (false, None) if conflict => Event::Conflict,
        (false, None) if existed => Event::Edit,
        (false, None) => Event::Create,
    }
}

/// Whether `gone` (a tombstone) and `new` (a live record) committed next to each other are the
/// two halves of one rename: same kind and the same content at another path.
pub(crate) fn is_rename_pair(
    gone: &FileRecord,
    before: Option<&FileRecord>,
    new: &FileRecord,
) -> bool {
    let Some(before) = before.filter(|b| b.is_live()) else {
        return false;
    };
    gone.deleted
        && !new.deleted
        && gone.path != new.path
        && before.kind == new.kind
        && before.size == new.size
        && before.target == new.target
        && (new.kind != Kind::File || before.chunks == new.chunks)
}

/// The wall clock, nanoseconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl crate::Store {
    /// Gives every record a history entry if the store was made before history existed (meta
    /// `history` unset): the records' chunks get the history entry's reference, as a commit
    /// would have given them. Runs once, at open.
    pub(crate) fn start_history(&self) -> Result<()> {
        use crate::db::{HISTORY, META, RECORDS};
        let db = &self.inner.db;
        if db.get_cf(self.cf(META), b"history")?.is_some() {
            return Ok(());
        }
        self.with_write_lock(|_| {
            let mut batch = rocksdb::WriteBatch::default();
            let mut refs = std::collections::HashMap::new();
            let mut delta: std::collections::HashMap<crate::ChunkId, i64> = Default::default();
            for item in db.iterator_cf(self.cf(RECORDS), rocksdb::IteratorMode::Start) {
                let (key, value) = item?;
                let record = crate::store::decode_record(&key, &value)?;
                for c in record.chunks.iter().filter(|c| !c.is_hole()) {
                    *delta.entry(c.id).or_default() += 1;
                }
                let v = Version {
                    // The best guess of when it was written; a tombstone's mtime is the time
                    // of the deletion.
                    since_ns: record.mtime_ns,
                    origin: origin_of(&record.version, None),
                    event: if record.deleted {
                        Event::Delete
                    } else {
                        Event::Create
                    },
                    record,
                };
                batch.put_cf(
                    self.cf(HISTORY),
                    history_key(&v.record.path, v.record.seq),
                    encode(&v)?,
                );
            }
            for (id, d) in delta {
                self.apply_ref_delta(&mut batch, &mut refs, &id, d)?;
            }
            batch.put_cf(self.cf(META), b"history", [1]);
            db.write(batch)?;
            Ok(())
        })
    }
}
