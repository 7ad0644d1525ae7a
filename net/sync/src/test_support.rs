//! Helpers shared by the driver tests that run against real stores.

use fybrk_store::{FileRecord, Store};
use rand::{RngCore, SeedableRng};

/// `len` seeded pseudo-random bytes.
pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Writes `data` as the file at `path`, as a local change.
pub(crate) fn write_file(store: &Store, path: &str, data: &[u8], mtime_ns: i64) -> FileRecord {
    store.write_file(path, data, 0o644, mtime_ns).unwrap()
}

/// The whole content of the live file at `path`.
pub(crate) fn read_file(store: &Store, path: &str) -> Vec<u8> {
    store
        .read_file(path)
        .unwrap()
        .unwrap_or_else(|| panic!("{path} is missing or deleted"))
}
