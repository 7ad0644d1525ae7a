//! Planning a restore: which records bring a path, or a whole tree, back to how it was.
//!
//! The plan is a list of records to commit with [`Store::commit_restore`]: old versions under
//! their old or new names, tombstones for what did not exist then (only when restoring in place:
//! a copy `--to` elsewhere never deletes), and the parent directories a restored path needs.

use crate::record::split_parent;
use crate::{FileRecord, Kind, Store, StoreError, VersionVector};

/// Why a restore cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Nothing existed at the path at that time (or its versions from then were thinned).
    #[error(
        "{path:?} did not exist at that time (or retention has dropped its versions from then)"
    )]
    NothingThen {
        /// The path asked for.
        path: String,
    },
    /// No version with that id.
    #[error("{path:?} has no version {id}: `fybrk log` lists the versions kept")]
    NoSuchVersion {
        /// The path asked for.
        path: String,
        /// The id asked for.
        id: u64,
    },
    /// The version asked for is a deletion.
    #[error("version {id} of {path:?} is its deletion; restore the version before it")]
    Deletion {
        /// The path asked for.
        path: String,
        /// The id asked for.
        id: u64,
    },
    /// `--to` inside the tree being restored, or the same path.
    #[error("cannot restore {from:?} into {to:?}: the destination is inside what is restored")]
    IntoItself {
        /// What is restored.
        from: String,
        /// Where to.
        to: String,
    },
    /// The destination's parent is not a directory now.
    #[error("{0:?} is not a directory: create it first or choose another destination")]
    NoParent(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether two records have the same content and metadata (a restore skips paths already as
/// they were).
fn same(a: &FileRecord, b: &FileRecord) -> bool {
    a.kind == b.kind
        && a.deleted == b.deleted
        && a.mode == b.mode
        && a.size == b.size
        && a.chunks == b.chunks
        && a.target == b.target
}

/// `old` as a fresh local record at `path`: the commit gives it a version on top of whatever
/// is at `path` now.
fn revive(old: &FileRecord, path: &str) -> FileRecord {
    FileRecord {
        path: path.to_owned(),
        version: VersionVector::default(),
        seq: 0,
        deleted: false,
        ..old.clone()
    }
}

impl Store {
    /// The records that bring `path` ("" = the whole folder) back to how it was at `at_ns`, at
    /// `to` (`None`: in place). Empty when everything already is as it was.
    pub fn plan_restore_at(
        &self,
        path: &str,
        at_ns: i64,
        to: Option<&str>,
    ) -> std::result::Result<Vec<FileRecord>, RestoreError> {
        let dest = to.unwrap_or(path);
        if to.is_some() && !path.is_empty() && crate::record::is_under(dest, path) || to == Some("")
        {
            return Err(RestoreError::IntoItself {
                from: path.to_owned(),
                to: dest.to_owned(),
            });
        }
        let then = if path.is_empty() {
            None
        } else {
            match self.get_at(path, at_ns)? {
                Some(r) if r.is_live() => Some(r),
                _ => {
                    return Err(RestoreError::NothingThen {
                        path: path.to_owned(),
                    })
                }
            }
        };
        let mut live = Vec::new();
        let mut gone = Vec::new();
        let rename = |p: &str| format!("{dest}{}", &p[path.len()..]);
        if then.as_ref().is_some_and(|r| r.kind != Kind::Dir) {
            let r = then.as_ref().map(|r| revive(r, dest));
            live.extend(r);
        } else {
            for p in self.history_paths_under(path)? {
                let old = self.get_at(&p, at_ns)?.filter(FileRecord::is_live);
                let target = if to.is_some() { rename(&p) } else { p.clone() };
                let now = self.get(&target)?.filter(FileRecord::is_live);
                match (old, now) {
                    (Some(old), Some(now)) if same(&old, &now) => {}
                    (Some(old), _) => live.push(revive(&old, &target)),
                    (None, Some(now)) if to.is_none() && !p.is_empty() => {
                        let mut t = now;
                        t.deleted = true;
                        gone.push(t);
                    }
                    (None, _) => {}
                }
            }
        }
        // Parents first for what comes back; deepest first for what goes.
        live.sort_by_key(|r| r.path.matches('/').count());
        gone.sort_by_key(|r| std::cmp::Reverse(r.path.matches('/').count()));
        // The destination's missing ancestors: as they were then where history has them (in
        // place), else a plain directory.
        let mut parents = Vec::new();
        let mut dir = split_parent(dest).0.to_owned();
        while !dir.is_empty() {
            if self.get(&dir)?.is_some_and(|r| r.is_live()) {
                if self.get(&dir)?.is_some_and(|r| r.kind != Kind::Dir) {
                    return Err(RestoreError::NoParent(dir));
                }
                break;
            }
            if to.is_some() {
                return Err(RestoreError::NoParent(dir));
            }
            let rec = match self.get_at(&dir, at_ns)?.filter(|r| r.is_live()) {
                Some(r) => revive(&r, &dir),
                None => FileRecord::new(&dir, Kind::Dir, 0o755, crate::history::now_ns()),
            };
            if rec.kind != Kind::Dir {
                return Err(RestoreError::NoParent(dir));
            }
            parents.push(rec);
            dir = split_parent(&dir).0.to_owned();
        }
        parents.reverse();
        parents.extend(live);
        parents.extend(gone);
        Ok(parents)
    }

    /// The record that brings back version `id` of `path`, at `to` (`None`: in place).
    pub fn plan_restore_version(
        &self,
        path: &str,
        id: u64,
        to: Option<&str>,
    ) -> std::result::Result<Vec<FileRecord>, RestoreError> {
        let v = self
            .version(path, id)?
            .ok_or_else(|| RestoreError::NoSuchVersion {
                path: path.to_owned(),
                id,
            })?;
        if v.record.deleted {
            return Err(RestoreError::Deletion {
                path: path.to_owned(),
                id,
            });
        }
        let dest = to.unwrap_or(path);
        let (parent, _) = split_parent(dest);
        if !parent.is_empty()
            && !self
                .get(parent)?
                .is_some_and(|r| r.is_live() && r.kind == Kind::Dir)
        {
            return Err(RestoreError::NoParent(parent.to_owned()));
        }
        Ok(vec![revive(&v.record, dest)])
    }
}
