//! Reading history: the versions of a path, and the folder as it was at a time.

use std::collections::BTreeMap;

use rocksdb::{Direction, IteratorMode};

use super::{decode, history_key, split_key, Version};
use crate::db::HISTORY;
use crate::record::{children_prefix, path_key};
use crate::{FileRecord, Result, Store, StoreError};

/// A raw RocksDB key and value.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The newest entry of one path at or before a time, while scanning its versions oldest first.
fn newest_at(versions: impl Iterator<Item = Version>, at_ns: i64) -> Option<Version> {
    // Versions are in commit (sequence) order; a clock step backwards could make a later one
    // look older, so keep scanning instead of stopping at the first one past `at_ns`.
    versions.filter(|v| v.since_ns <= at_ns).last()
}

impl Store {
    fn history_iter<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        self.inner
            .db
            .iterator_cf(
                self.cf(HISTORY),
                IteratorMode::From(prefix, Direction::Forward),
            )
            .take_while(move |item| match item {
                Ok((k, _)) => k.starts_with(prefix),
                Err(_) => true,
            })
            .map(|item| item.map_err(StoreError::from))
    }

    /// Every kept version of `path`, newest first (the first is the current record, when the
    /// path has one).
    pub fn versions(&self, path: &str) -> Result<Vec<Version>> {
        let mut prefix = path_key(path);
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.history_iter(&prefix) {
            let (key, value) = item?;
            // `a\0b\0` is also a prefix of nothing else: names hold no `\0`, and the nine-byte
            // tail check keeps `a\0b` from matching `a\0b\0...` of another shape.
            if key.len() != prefix.len() + 8 {
                continue;
            }
            out.push(decode(&key, &value)?);
        }
        out.reverse();
        Ok(out)
    }

    /// One version of `path` by its id (see [`Version::id`]).
    pub fn version(&self, path: &str, id: u64) -> Result<Option<Version>> {
        let key = history_key(path, id);
        match self.inner.db.get_pinned_cf(self.cf(HISTORY), &key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }

    /// The record `path` had at `at_ns` (nanoseconds since the Unix epoch), tombstones included:
    /// `None` when the path did not exist yet (or its versions from then were thinned away).
    pub fn get_at(&self, path: &str, at_ns: i64) -> Result<Option<FileRecord>> {
        let versions = self.versions(path)?;
        Ok(newest_at(versions.into_iter().rev(), at_ns).map(|v| v.record))
    }

    /// The live entries directly inside `dir` as they were at `at_ns`, in key order.
    pub fn list_dir_at(&self, dir: &str, at_ns: i64) -> Result<Vec<FileRecord>> {
        let prefix = children_prefix(dir);
        // Per child, the newest version at or before `at_ns`. One scan over the directory's
        // children's versions; a child's versions are adjacent and oldest first.
        let mut newest: BTreeMap<Vec<u8>, Version> = BTreeMap::new();
        for item in self.history_iter(&prefix) {
            let (key, value) = item?;
            let Some((path, _)) = split_key(&key) else {
                continue;
            };
            // Only direct children: the rest of the key after `dir\0` is one name (a deeper
            // path's key starts with `dir/sub\0`, not `dir\0`).
            if path[prefix.len()..].contains(&0) {
                continue;
            }
            let v = decode(&key, &value)?;
            if v.since_ns <= at_ns {
                newest.insert(path.to_vec(), v);
            }
        }
        Ok(newest
            .into_values()
            .map(|v| v.record)
            .filter(FileRecord::is_live)
            .collect())
    }

    /// Every path that has history under `dir` (itself included), recursively: what a restore
    /// of a directory tree or a `log` looks at, sorted. Three prefix scans (the path's
    /// own versions, its children `dir\0`, deeper descendants `dir/`), not the whole history.
    pub fn history_paths_under(&self, dir: &str) -> Result<Vec<String>> {
        let mut own = path_key(dir);
        own.push(0);
        let prefixes: Vec<Vec<u8>> = if dir.is_empty() {
            vec![Vec::new()]
        } else {
            vec![own, children_prefix(dir), format!("{dir}/").into_bytes()]
        };
        let mut out = std::collections::BTreeSet::new();
        for prefix in &prefixes {
            let mut last: Option<Vec<u8>> = None;
            for item in self.history_iter(prefix) {
                let (key, value) = item?;
                let Some((path, _)) = split_key(&key) else {
                    continue;
                };
                if last.as_deref() == Some(path) {
                    continue;
                }
                last = Some(path.to_vec());
                out.insert(decode(&key, &value)?.record.path);
            }
        }
        Ok(out.into_iter().collect())
    }
}
