//! [`ReplicaStore`] for the RocksDB [`Store`]: plain delegation. The staging area is a
//! [`ChunkWriter`], whose pins and unlogged chunk batches already do what [`Staging`] asks.

use fybrk_store::{ChunkId, ChunkRef, ChunkWriter, FileRecord, Store, StoreError, Versioning};

use super::{ReplicaStore, Staging};

impl ReplicaStore for Store {
    type Staging = ChunkWriter;

    fn sequence(&self) -> u64 {
        Store::sequence(self)
    }

    fn get(&self, path: &str) -> Result<Option<FileRecord>, StoreError> {
        Store::get(self, path)
    }

    fn changes_since(&self, since: u64) -> Result<Vec<FileRecord>, StoreError> {
        Store::changes_since(self, since)
    }

    fn has_chunk(&self, id: &ChunkId) -> Result<bool, StoreError> {
        Store::has_chunk(self, id)
    }

    fn read_sealed(&self, id: &ChunkId) -> Result<Option<Vec<u8>>, StoreError> {
        Store::read_sealed(self, id)
    }

    fn staging(&self) -> ChunkWriter {
        Store::writer(self)
    }

    fn commit_changes(
        &self,
        changes: Vec<(FileRecord, Versioning)>,
        staging: &mut ChunkWriter,
    ) -> Result<(), StoreError> {
        // Not synced here: the driver syncs before it persists progress (or leaves that to
        // its owner), which batches many applied records into one fsync.
        Store::commit_changes(self, changes, Some(staging), false).map(drop)
    }

    fn sync(&self) -> Result<(), StoreError> {
        Store::sync(self)
    }

    fn on_demand(&self) -> bool {
        Store::on_demand(self)
    }

    fn is_pinned(&self, path: &str) -> Result<bool, StoreError> {
        Store::is_pinned(self, path)
    }

    fn keeps(&self, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError> {
        Store::keeps(self, ids)
    }

    fn only_here(&self, limit: usize) -> Result<Vec<ChunkId>, StoreError> {
        Store::only_here(self, limit)
    }

    fn mark_elsewhere(&self, ids: &[ChunkId]) -> Result<(), StoreError> {
        Store::mark_elsewhere(self, ids).map(drop)
    }
}

impl Staging for ChunkWriter {
    fn pin(&mut self, chunks: &[ChunkRef]) {
        self.reuse(chunks);
    }

    fn add_sealed(&mut self, id: &ChunkId, sealed: Vec<u8>) -> Result<(), StoreError> {
        ChunkWriter::add_sealed(self, id, sealed).map(drop)
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        ChunkWriter::flush(self)
    }
}
