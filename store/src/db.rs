//! RocksDB layout and tuning.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `chunks` | chunk id | sealed chunk (blob files): small files' chunks, and every chunk of stores from before the chunk log |
//! | `places` | chunk id | [`crate::chunklog::Location`]: where a chunk lies in the chunk log |
//! | `refs` | chunk id | [`RefEntry`]: reference count + sealed length (+ the key it is sealed under, when not the first) (+ flags: not held here, held by a peer) |
//! | `orphans` | chunk id | empty: the chunk's count reached 0, GC should look at it |
//! | `records` | [`crate::record::path_key`] | postcard [`crate::FileRecord`] |
//! | `log` | local sequence number (big endian) | path key of the record it changed |
//! | `history` | `path_key \0 seq` (big endian) | postcard [`crate::history::Version`]: every kept version |
//! | `meta` | name | folder id, device id, key check, sequence, stats, history size |

use std::path::Path;

use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, DB};

use crate::keys::{KeyId, FIRST_KEY};
use crate::Result;

pub(crate) const CHUNKS: &str = "chunks";
pub(crate) const PLACES: &str = "places";
pub(crate) const REFS: &str = "refs";
pub(crate) const ORPHANS: &str = "orphans";
pub(crate) const RECORDS: &str = "records";
pub(crate) const LOG: &str = "log";
pub(crate) const META: &str = "meta";
pub(crate) const HISTORY: &str = "history";

/// Per-chunk bookkeeping: how many record slots use it, how many bytes it takes on disk,
/// which of the folder's keys seals it, and whether its bytes are here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RefEntry {
    pub count: u64,
    /// Sealed bytes; for a chunk that is [`RefEntry::ABSENT`], what a peer's record claims
    /// (checked when the bytes arrive).
    pub sealed_len: u32,
    /// For an absent chunk, unknown until the bytes arrive: [`FIRST_KEY`] meanwhile.
    pub key: KeyId,
    pub flags: u8,
}

impl RefEntry {
    /// Referenced by records here but not stored here (an on-demand device's remote content,
    /// or content it evicted): reads fetch it from a peer.
    pub const ABSENT: u8 = 1;
    /// Another device has it: fetched from a peer that held it, or a full peer said it keeps
    /// it. Only such chunks may be evicted (a chunk only this device has is never dropped).
    pub const ELSEWHERE: u8 = 2;

    /// 12 bytes under the folder's first key with no flags (the layout from before keys
    /// rotated, so those stores read as they are), 20 with a later key's id; a flags byte
    /// makes them 13 and 21.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(21);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.sealed_len.to_le_bytes());
        if self.key != FIRST_KEY {
            out.extend_from_slice(&self.key.to_le_bytes());
        }
        if self.flags != 0 {
            out.push(self.flags);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<RefEntry> {
        let count = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let sealed_len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
        let (key, flags) = match bytes.get(12..)? {
            [] => (FIRST_KEY, 0),
            [f] => (FIRST_KEY, *f),
            k if k.len() == 8 => (u64::from_le_bytes(k.try_into().ok()?), 0),
            k if k.len() == 9 => (u64::from_le_bytes(k[..8].try_into().ok()?), k[8]),
            _ => return None,
        };
        Some(RefEntry {
            count,
            sealed_len,
            key,
            flags,
        })
    }

    /// True when the chunk's bytes are stored here.
    pub fn is_here(&self) -> bool {
        self.flags & Self::ABSENT == 0
    }

    /// True when another device is known to have the chunk.
    pub fn is_elsewhere(&self) -> bool {
        self.flags & Self::ELSEWHERE != 0
    }
}

/// Opens (or creates) the database with memory bounded for a desktop daemon: the chunk
/// memtables hold whole chunk values (small files') until they are flushed to blob files, so
/// they are kept small.
pub(crate) fn open(dir: &Path) -> Result<DB> {
    let cache = Cache::new_lru_cache(4 << 20);
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache);
    // Most point reads ask for keys that are not there (a new file name, a chunk not stored
    // yet): a bloom filter per table answers those from memory instead of reading a block of
    // every level (about 1.25 bytes of filter per key).
    table.set_bloom_filter(10.0, false);

    let small = |write_buffer: usize| {
        let mut o = Options::default();
        o.set_write_buffer_size(write_buffer);
        o.set_max_write_buffer_number(2);
        o.set_block_based_table_factory(&table);
        o
    };
    let mut chunks = small(4 << 20);
    // Chunks are tens of KiB: integrated blob files keep them out of LSM compaction, which would
    // otherwise rewrite every chunk several times. Blob GC stays off in normal operation: with it
    // on, every background compaction relocated the live blobs of the oldest files, and that
    // rewriting took 70 % of the daemon's CPU during a 1 GiB write. A blob file goes once all of
    // its chunks are deleted. Large writes' chunks do not come here at all (the chunk log,
    // `crate::chunklog`, which compacts itself).
    chunks.set_enable_blob_files(true);
    chunks.set_min_blob_size(4096);
    chunks.set_blob_file_size(128 << 20);
    chunks.set_enable_blob_gc(false);
    chunks.set_blob_gc_age_cutoff(1.0);

    let cfs = vec![
        ColumnFamilyDescriptor::new(CHUNKS, chunks),
        ColumnFamilyDescriptor::new(PLACES, small(2 << 20)),
        ColumnFamilyDescriptor::new(REFS, small(4 << 20)),
        ColumnFamilyDescriptor::new(ORPHANS, small(1 << 20)),
        ColumnFamilyDescriptor::new(RECORDS, small(4 << 20)),
        ColumnFamilyDescriptor::new(LOG, small(2 << 20)),
        ColumnFamilyDescriptor::new(META, small(1 << 20)),
        ColumnFamilyDescriptor::new(HISTORY, small(4 << 20)),
    ];
    let mut db_opts = Options::default();
    db_opts.create_if_missing(true);
    db_opts.create_missing_column_families(true);
    db_opts.set_max_background_jobs(2);
    db_opts.set_db_write_buffer_size(24 << 20);
    db_opts.set_max_total_wal_size(96 << 20);
    db_opts.set_keep_log_file_num(3);
    Ok(DB::open_cf_descriptors(&db_opts, dir, cfs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_entry_round_trip() {
        let e = RefEntry {
            count: 7,
            sealed_len: 65_564,
            key: FIRST_KEY,
            flags: 0,
        };
        assert_eq!(
            e.encode().len(),
            12,
            "stores from before rotation read unchanged"
        );
        assert_eq!(RefEntry::decode(&e.encode()), Some(e));
        let later = RefEntry {
            key: 0xabcd_0001,
            ..e
        };
        assert_eq!(RefEntry::decode(&later.encode()), Some(later));
        assert_eq!(RefEntry::decode(&[1, 2]), None);
        assert_eq!(RefEntry::decode(&[0; 15]), None, "a torn key id");
        for flags in [RefEntry::ABSENT, RefEntry::ELSEWHERE, 3] {
            for key in [FIRST_KEY, 0xabcd_0001] {
                let f = RefEntry { flags, key, ..e };
                assert_eq!(RefEntry::decode(&f.encode()), Some(f));
            }
        }
        assert!(
            RefEntry {
                flags: RefEntry::ABSENT,
                ..e
            }
            .encode()
            .len()
                == 13
        );
    }

    proptest::proptest! {
        /// A damaged refs value is refused or read as some entry; it never panics.
        #[test]
        fn ref_entry_decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..32)) {
            if let Some(e) = RefEntry::decode(&bytes) {
                proptest::prop_assert_eq!(RefEntry::decode(&e.encode()), Some(e));
            }
        }
    }
}
