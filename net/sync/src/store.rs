//! What replication needs from a store, as a small trait: [`ReplicaStore`] for records, the
//! change log and the conditional commit of remote versions, and [`Staging`] for the chunks of
//! a remote record on their way in (pinned until the record commits).
//!
//! [`crate::store_driver::StoreReplica`] runs against this trait only. Two implementations:
//!
//! - `rocks`: the production one, thin delegation to [`fybrk_store::Store`] and its
//!   [`fybrk_store::ChunkWriter`].
//! - `mem` (tests only): an in-memory store with the same contract, which the simulator (`sim`)
//!   runs the real driver against: conditional commits that fail with [`StoreError::Changed`],
//!   pins that garbage collection respects, chunks verified against their ids.
//!
//! Errors are [`StoreError`]s: the driver tells a chunk that failed verification
//! ([`StoreError::CorruptChunk`]) and a stale decision ([`StoreError::Changed`]) from a store
//! that failed (everything else, which ends the session).

use fybrk_store::{ChunkId, ChunkRef, FileRecord, StoreError, Versioning};

#[cfg(test)]
pub(crate) mod mem;
mod rocks;

/// A folder's store as replication sees it. Every method takes `&self`: a store is a shared
/// handle (one per session, all clones of one store), and local writes may land between any
/// two calls.
pub trait ReplicaStore {
    /// Chunks of one remote record being received, pinned until the record commits.
    type Staging: Staging;

    /// The last local sequence number (the change log's head).
    fn sequence(&self) -> u64;

    /// The record at `path`, live or a tombstone.
    fn get(&self, path: &str) -> Result<Option<FileRecord>, StoreError>;

    /// Every record changed after sequence `since`, oldest first.
    fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>, StoreError>;

    /// True when the store holds chunk `id` (committed, or written ahead of a commit and
    /// pinned).
    fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError>;

    /// Chunk `id` sealed as stored (what a peer is sent), `None` when the store lacks it.
    fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError>;

    /// An empty staging area. Dropping it releases its pins (and the chunks it held back that
    /// no commit took).
    fn staging(&self) -> Self::Staging;

    /// Commits `changes` in one atomic batch together with the chunks `staging` holds. A
    /// [`Versioning::Remote`] record keeps its version vector and fails the whole commit with
    /// [`StoreError::Changed`] (nothing written) when the record at its path is no longer the
    /// one with sequence `based_on`; a [`Versioning::Local`] one is bumped for this device.
    /// A live file record whose chunks the store does not hold fails with
    /// [`StoreError::MissingChunk`]; a remote one whose chunk list claims a length other than
    /// a chunk's own fails with [`StoreError::ChunkLength`] (nothing written). Not necessarily
    /// durable: see [`ReplicaStore::sync`].
    fn commit_changes(
        &self,
        changes: Vec<(FileRecord, Versioning)>,
        staging: &mut Self::Staging,
    ) -> Result<(), StoreError>;

    /// Makes every commit so far durable.
    fn sync(&self) -> Result<(), StoreError>;

    /// True for an on-demand device: peers' records are taken without their content (except
    /// under pinned paths, [`ReplicaStore::is_pinned`]), which is fetched when read.
    fn on_demand(&self) -> bool {
        false
    }

    /// True when `path` is kept on this device whatever its mode (`fybrk pin`).
    fn is_pinned(&self, _path: &str) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// For each id, whether this device keeps the chunk (a full device that holds and uses
    /// it): the answer to a peer's [`crate::Message::KeepsQuery`].
    fn keeps(&self, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        ids.iter().map(|id| self.has_chunk(id)).collect()
    }

    /// Chunks held here that no other device is known to keep (up to `limit`): what an
    /// on-demand device asks its peers about.
    fn only_here(&self, _limit: usize) -> Result<Vec<ChunkId>, StoreError> {
        Ok(Vec::new())
    }

    /// Another device keeps these chunks.
    fn mark_elsewhere(&self, _ids: &[ChunkId]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Chunks of a remote record on their way into the store. Everything it holds or pins stays
/// safe from garbage collection until it is dropped.
pub trait Staging {
    /// Pins chunks the record shares with what the store already has, so GC cannot free them
    /// between the lookup and the commit. Pin before looking them up.
    fn pin(&mut self, chunks: &[ChunkRef]);

    /// Verifies sealed bytes received for chunk `id` and keeps them (pinned) for the commit.
    /// Bytes that do not authenticate or do not match `id` fail with
    /// [`StoreError::CorruptChunk`] and are not kept.
    fn add_sealed(&mut self, id: &ChunkId, sealed: Vec<u8>) -> Result<(), StoreError>;

    /// Writes the chunks held back so far into the store now (still pinned, unreferenced until
    /// a commit uses them), so [`ReplicaStore::has_chunk`] sees them.
    fn flush(&mut self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use fybrk_store::record::VersionVector;
    use fybrk_store::{FolderKey, Kind, Store, StoreOptions};

    use super::mem::MemStore;
    use super::*;

    const PEER: u64 = 0x9999_9999_9999_9999;

    fn remote_dir(path: &str, counter: u64) -> FileRecord {
        let mut r = FileRecord::new(path, Kind::Dir, 0o755, 1);
        r.version = VersionVector([(PEER, counter)].into_iter().collect());
        r
    }

    fn remote(r: FileRecord, based_on: Option<u64>) -> Vec<(FileRecord, Versioning)> {
        vec![(r, Versioning::Remote { based_on })]
    }

    /// The part of the contract the driver's re-decisions and verification rely on, checked
    /// the same way on both implementations. `local_mkdir` makes a local change at a path,
    /// `local_write` writes a local file of one chunk.
    fn conditional_commits<S: ReplicaStore>(
        store: &S,
        local_mkdir: impl Fn(&str),
        local_write: impl Fn(&str, &[u8]),
    ) {
        let mut staging = store.staging();
        store
            .commit_changes(remote(remote_dir("a", 1), None), &mut staging)
            .unwrap();
        let a = store.get("a").unwrap().unwrap();
        assert_eq!(a.seq, store.sequence());
        assert_eq!(
            a.version,
            remote_dir("a", 1).version,
            "a remote vector is kept"
        );

        // Decided against "no record": stale now.
        let stale = store.commit_changes(remote(remote_dir("a", 2), None), &mut staging);
        assert!(
            matches!(stale, Err(StoreError::Changed { .. })),
            "{stale:?}"
        );
        // A local write lands after the decision against `a`.
        local_mkdir("a");
        let before = store.sequence();
        let stale = store.commit_changes(remote(remote_dir("a", 2), Some(a.seq)), &mut staging);
        assert!(
            matches!(stale, Err(StoreError::Changed { .. })),
            "{stale:?}"
        );
        assert_eq!(store.sequence(), before, "a refused commit writes nothing");
        let now = store.get("a").unwrap().unwrap().seq;
        store
            .commit_changes(remote(remote_dir("a", 2), Some(now)), &mut staging)
            .unwrap();
        assert_eq!(store.changes_since(before).unwrap().len(), 1);

        // A live file needs its chunks; bytes that do not match their id are refused.
        let missing = ChunkId([9; 32]);
        let mut file = FileRecord::new("f", Kind::File, 0o644, 1);
        file.chunks = vec![ChunkRef {
            id: missing,
            len: 3,
        }];
        file.size = 3;
        let r = store.commit_changes(vec![(file, Versioning::Local)], &mut staging);
        assert!(
            matches!(r, Err(StoreError::MissingChunk(id)) if id == missing),
            "{r:?}"
        );
        // A remote record's chunk lengths are checked against the chunks themselves: a claim
        // longer or shorter than the real chunk is refused and nothing is written.
        local_write("data", b"0123456789");
        let real = store.get("data").unwrap().unwrap().chunks[0];
        assert_eq!(real.len, 10);
        let a_seq = store.get("a").unwrap().unwrap().seq;
        for claimed in [real.len - 1, real.len + 1] {
            let before = store.sequence();
            let mut lying = remote_dir("a", 3);
            lying.kind = Kind::File;
            lying.chunks = vec![
                ChunkRef::hole(2),
                ChunkRef {
                    len: claimed,
                    ..real
                },
            ];
            lying.size = 2 + u64::from(claimed);
            let r = store.commit_changes(remote(lying, Some(a_seq)), &mut staging);
            assert!(
                matches!(&r, Err(StoreError::ChunkLength { path, claimed: c, actual, .. })
                    if path == "a" && *c == claimed && *actual == u64::from(real.len)),
                "{r:?}"
            );
            assert_eq!(store.sequence(), before, "a refused commit writes nothing");
        }

        // An envelope naming the folder's first key (0), then bytes that are not the chunk.
        let r = staging.add_sealed(&missing, [&[0u8; 8][..], b"not the chunk"].concat());
        assert!(matches!(r, Err(StoreError::CorruptChunk(..))), "{r:?}");
        assert!(!store.has_chunk(&missing).unwrap());
        assert_eq!(store.read_sealed(&missing).unwrap(), None);
    }

    #[test]
    fn the_rocksdb_store_keeps_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            &FolderKey::from_bytes([7; 32]),
            StoreOptions::default(),
        )
        .unwrap();
        conditional_commits(
            &store,
            |p| {
                let dir = FileRecord::new(p, Kind::Dir, 0o700, 2);
                store.commit(vec![dir], None, false).unwrap();
            },
            |p, data| {
                store.write_file(p, data, 0o644, 2).unwrap();
            },
        );
    }

    #[test]
    fn the_in_memory_store_keeps_the_contract() {
        let store = MemStore::new(0x1111_1111_1111_1111);
        conditional_commits(
            &store,
            |p| {
                let dir = FileRecord::new(p, Kind::Dir, 0o700, 2);
                store.commit_local(vec![dir], Vec::new());
            },
            |p, data| {
                let mut file = FileRecord::new(p, Kind::File, 0o644, 2);
                file.chunks = vec![ChunkRef {
                    id: super::mem::chunk_id(data),
                    len: data.len() as u32,
                }];
                file.size = data.len() as u64;
                store.commit_local(vec![file], vec![data.to_vec()]);
            },
        );
        assert_eq!(store.counters().changed, 2);
    }
}
