//! The conflict rules: what a device does with a remote record for a path it also has.
//!
//! These are pure functions of the two records, and symmetric: the device holding A that
//! receives B writes the same record at the path, and keeps the same loser under the same
//! name, as the device holding B that receives A. That is what lets every device converge
//! without talking about the conflict.
//!
//! # The rules
//!
//! Version vectors decide first ([`VersionVector::compare`]):
//!
//! - remote dominates (local is `Before`): take the remote record;
//! - local dominates (`After`), or the vectors are `Equal` and the records identical: keep local;
//! - otherwise (`Concurrent`, or `Equal` vectors with different contents, which only happens
//!   when two devices resolved the same versions in different orders) the records are ranked,
//!   and the higher one keeps the path with the element-wise maximum of both vectors, so every
//!   device ends with the same record. The ranking, first difference wins:
//!   1. a live record beats a tombstone: an edit beats a concurrent delete;
//!   2. a live directory beats a live file or symlink: the directory's children stay valid;
//!   3. the newer mtime;
//!   4. the larger short id of the *last modifier* (see [`last_modifier`]);
//!   5. a fixed order of the contents (chunk ids, target, mode, size), so even identical
//!      mtimes from identical vectors give one answer everywhere.
//!
//! The loser is kept as a conflict copy ([`crate::naming`]) unless nothing would be lost:
//! a tombstone (two concurrent deletes are not a conflict), a directory (two concurrent
//! directory records only merge their vectors), or the same data as the winner.
//!
//! # The copy is a new local file, not the loser's vector under a new name
//!
//! The copy is committed like a file the user just created: the loser's chunks, mode and mtime
//! under the new path, with a fresh version (the store bumps the committing device's counter),
//! at the first candidate name that is free or already holds the same data
//! ([`ConflictCopy::place`]). It then syncs like any file. It must not carry the loser's
//! vector: that vector belongs to the *original* path, and once a loser has absorbed other
//! versions through merges, two different contents can end up with the same copy name (same
//! second, a tag derived differently on different devices) where one copy's vector dominates
//! the other's, and the dominated content is silently replaced. The simulation found exactly
//! that (three concurrent edits of `.bashrc` relayed through one device). A fresh vector only
//! dominates what the committing device had at that path, which it never overwrites unless it
//! is a tombstone or the same data. The price: devices that resolve the same conflict each
//! commit the copy; the records carry the same data, so they merge without a further conflict.
//!
//! # Why the last modifier is not "the highest counter in the vector"
//!
//! Counters are each device's own sequence numbers, so the highest counter in a vector says
//! which device is busiest, not which changed the file last: after A (at counter 1000) and B
//! (at counter 6) both edit `{A: 900}`, the highest counter of both versions is A's. What the
//! vector does say is which devices made the changes the other side has not seen: the entries
//! larger than the other vector's. The last modifier of one version relative to the other is
//! the device with the highest counter among those entries (ties: the larger id). The two sets
//! are disjoint, so for concurrent versions rule 4 always decides a tie on mtime. When there is
//! no such entry (equal vectors), it falls back to the highest counter of the whole vector.

use std::cmp::Ordering as Cmp;

use fybrk_store::record::{Ordering, ShortId};
use fybrk_store::{FileRecord, Kind, VersionVector};

use super::naming::numbered_copy_path;

/// Which of the two records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The record this device has.
    Local,
    /// The record the peer sent.
    Remote,
}

/// What to do with a remote record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The local record is the same or newer: nothing to write.
    KeepLocal,
    /// The remote record is newer: write it as it is.
    TakeRemote,
    /// Concurrent, but nothing would be lost (a tombstone, a directory or the same data lost):
    /// the winner's record with the merged version vector keeps the path; no copy.
    Merge {
        /// Whose record keeps the path.
        winner: Side,
    },
    /// A real conflict: the winner keeps the path with the merged version vector, the loser is
    /// kept as a new file at `loser_copy_path` (or a numbered variant if that name holds a
    /// different file, see [`ConflictCopy::place`]).
    Conflict {
        /// Whose record keeps the path.
        winner: Side,
        /// Where the loser is kept.
        loser_copy_path: String,
    },
}

/// The records a decision writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    /// What was decided.
    pub decision: Decision,
    /// The record to commit at the remote record's path, if it changes. Its version vector is
    /// final: commit it without bumping. `seq` is 0; the store assigns the local sequence.
    pub write: Option<FileRecord>,
    /// The conflict copy to create, if any (see [`ConflictCopy::place`]).
    pub copy: Option<ConflictCopy>,
}

/// A losing version to keep as a new file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictCopy {
    /// The loser's record at the first candidate path, with an empty version vector: commit it
    /// as a *local* change (the store merges the vector of whatever is at the path and bumps
    /// this device's counter), never as is.
    pub record: FileRecord,
    /// The path the loser had.
    origin: String,
    /// The device named in the copy's name.
    device: ShortId,
}

/// What a candidate path holds, for a conflict copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Nothing, or a tombstone: the copy goes here.
    Free,
    /// A live record with the same data: the version is already kept; nothing to write.
    Present,
    /// A different live record (or a directory): try the next candidate.
    Taken,
}

impl ConflictCopy {
    /// Candidate path number `n` (0 is `record.path`).
    pub fn candidate(&self, n: u32) -> String {
        numbered_copy_path(&self.origin, self.record.mtime_ns, self.device, n)
    }

    /// What `existing` (the record at a candidate path) means for this copy.
    pub fn slot(&self, existing: Option<&FileRecord>) -> Slot {
        match existing {
            None => Slot::Free,
            Some(e) if !e.is_live() => Slot::Free,
            Some(e) if same_data(e, &self.record) => Slot::Present,
            Some(_) => Slot::Taken,
        }
    }

    /// The record to commit (as a local change), at the first candidate that is free; `None`
    /// when a candidate already holds the same data. `lookup` reads the record at a path
    /// (tombstones included); call this under the store's write lock so the answer holds.
    pub fn place<E>(
        &self,
        mut lookup: impl FnMut(&str) -> Result<Option<FileRecord>, E>,
    ) -> Result<Option<FileRecord>, E> {
        // Terminates: each candidate is a distinct name and the store holds finitely many.
        for n in 0..=u32::MAX {
            let path = self.candidate(n);
            match self.slot(lookup(&path)?.as_ref()) {
                Slot::Free => {
                    return Ok(Some(FileRecord {
                        path,
                        ..self.record.clone()
                    }))
                }
                Slot::Present => return Ok(None),
                Slot::Taken => {}
            }
        }
        unreachable!("u32 candidates exhausted")
    }
}

/// Decides what to do with `remote` given the `local` record for the same path (tombstones
/// included; `None` when this device never had the path).
pub fn decide(local: Option<&FileRecord>, remote: &FileRecord) -> Decision {
    let Some(local) = local else {
        // Tombstones are taken too: a device that never had the file still passes the delete on
        // to peers that did.
        return Decision::TakeRemote;
    };
    match local.version.compare(&remote.version) {
        Ordering::Before => Decision::TakeRemote,
        Ordering::After => Decision::KeepLocal,
        Ordering::Equal if identical(local, remote) => Decision::KeepLocal,
        Ordering::Equal | Ordering::Concurrent => {
            let (winner, w, l) = if rank(local, remote) == Cmp::Less {
                (Side::Remote, remote, local)
            } else {
                (Side::Local, local, remote)
            };
            if l.is_live() && l.kind != Kind::Dir && !same_data(w, l) {
                let device = last_modifier(&l.version, &w.version);
                Decision::Conflict {
                    winner,
                    loser_copy_path: numbered_copy_path(&remote.path, l.mtime_ns, device, 0),
                }
            } else {
                Decision::Merge { winner }
            }
        }
    }
}

/// Decides (see [`decide`]) and builds the records to write.
pub fn resolve(local: Option<&FileRecord>, remote: &FileRecord) -> Resolution {
    let decision = decide(local, remote);
    let (write, copy) = match (&decision, local) {
        (Decision::KeepLocal, _) => (None, None),
        (Decision::TakeRemote, _) => (Some(uncommitted(remote.clone())), None),
        (Decision::Merge { winner } | Decision::Conflict { winner, .. }, Some(local)) => {
            let (w, l) = match winner {
                Side::Local => (local, remote),
                Side::Remote => (remote, local),
            };
            let mut merged = uncommitted(w.clone());
            merged.version.merge(&l.version);
            let unchanged = *winner == Side::Local && merged.version == local.version;
            let copy = match &decision {
                Decision::Conflict {
                    loser_copy_path, ..
                } => {
                    let mut record = uncommitted(l.clone());
                    record.path.clone_from(loser_copy_path);
                    record.version = VersionVector::default();
                    let device = last_modifier(&l.version, &w.version);
                    Some(ConflictCopy {
                        record,
                        origin: remote.path.clone(),
                        device,
                    })
                }
                _ => None,
            };
            ((!unchanged).then_some(merged), copy)
        }
        // `decide` only merges or conflicts when there is a local record.
        (Decision::Merge { .. } | Decision::Conflict { .. }, None) => {
            (Some(uncommitted(remote.clone())), None)
        }
    };
    Resolution {
        decision,
        write,
        copy,
    }
}

/// The device that made the changes in `v` that `other` has not seen: among the entries of `v`
/// larger than `other`'s, the one with the highest counter (ties: the larger id); with no such
/// entry, the highest counter of `v`; 0 for an empty vector. See the module doc for why.
pub fn last_modifier(v: &VersionVector, other: &VersionVector) -> ShortId {
    let highest = |it: &mut dyn Iterator<Item = (&ShortId, &u64)>| {
        it.max_by_key(|(id, counter)| (**counter, **id))
            .map(|(id, _)| *id)
    };
    let unseen = &mut v
        .0
        .iter()
        .filter(|(id, c)| **c > other.0.get(id).copied().unwrap_or(0));
    highest(unseen)
        .or_else(|| highest(&mut v.0.iter()))
        .unwrap_or(0)
}

/// Orders two records of the same path for the rules above (`Greater`: `a` keeps the path).
fn rank(a: &FileRecord, b: &FileRecord) -> Cmp {
    let live_dir = |r: &FileRecord| r.is_live() && r.kind == Kind::Dir;
    a.is_live()
        .cmp(&b.is_live())
        .then_with(|| live_dir(a).cmp(&live_dir(b)))
        .then_with(|| a.mtime_ns.cmp(&b.mtime_ns))
        .then_with(|| {
            last_modifier(&a.version, &b.version).cmp(&last_modifier(&b.version, &a.version))
        })
        .then_with(|| content_order(a, b))
}

/// A fixed total order of everything in a record but its path, version and seq.
fn content_order(a: &FileRecord, b: &FileRecord) -> Cmp {
    let kind = |k: Kind| match k {
        Kind::File => 0u8,
        Kind::Dir => 1,
        Kind::Symlink => 2,
    };
    let chunks = |r: &FileRecord| r.chunks.iter().map(|c| (c.id.0, c.len)).collect::<Vec<_>>();
    kind(a.kind)
        .cmp(&kind(b.kind))
        .then_with(|| a.deleted.cmp(&b.deleted))
        .then_with(|| chunks(a).cmp(&chunks(b)))
        .then_with(|| a.target.cmp(&b.target))
        .then_with(|| a.mode.cmp(&b.mode))
        .then_with(|| a.size.cmp(&b.size))
}

/// Same bytes (or same target, or both tombstones / both directories): dropping one of the two
/// loses nothing but metadata.
fn same_data(a: &FileRecord, b: &FileRecord) -> bool {
    a.kind == b.kind && a.deleted == b.deleted && a.chunks == b.chunks && a.target == b.target
}

/// Equal in everything but path, version and seq.
fn identical(a: &FileRecord, b: &FileRecord) -> bool {
    same_data(a, b) && a.mode == b.mode && a.mtime_ns == b.mtime_ns && a.size == b.size
}

/// A record about to be committed: the store assigns its local sequence number.
fn uncommitted(mut r: FileRecord) -> FileRecord {
    r.seq = 0;
    r
}

#[cfg(test)]
mod tests;
