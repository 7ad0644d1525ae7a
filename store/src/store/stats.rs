//! [`Stats`]: totals over the live folder, persisted with every commit.

use serde::{Deserialize, Serialize};

use crate::{FileRecord, Kind};

/// Totals over the live folder, kept up to date by every commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Live regular files.
    pub files: u64,
    /// Live directories (the root not counted).
    pub dirs: u64,
    /// Live symbolic links.
    pub symlinks: u64,
    /// Sum of live file sizes.
    pub logical_bytes: u64,
    /// Distinct chunks stored.
    pub chunks: u64,
    /// Bytes of sealed chunks stored (ciphertext + nonce + tag).
    pub stored_bytes: u64,
}

impl Stats {
    /// Adds (`sign` > 0) or removes (`sign` < 0) one live record.
    pub(super) fn count(&mut self, r: &FileRecord, sign: i64) {
        if r.deleted {
            return;
        }
        let add = |v: &mut u64, d: u64| {
            *v = if sign > 0 {
                v.saturating_add(d)
            } else {
                v.saturating_sub(d)
            };
        };
        match r.kind {
            Kind::File => {
                add(&mut self.files, 1);
                add(&mut self.logical_bytes, r.size);
            }
            Kind::Dir => add(&mut self.dirs, 1),
            Kind::Symlink => add(&mut self.symlinks, 1),
        }
    }
}
