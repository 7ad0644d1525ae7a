//! What must hold when the network is quiet: (a) every device holds the same records, every
//! live file's chunks are present and intact, every session is idle and caught up; (b) no file
//! content was lost that no user overwrote or deleted.

use std::collections::{BTreeMap, HashSet};

use fybrk_store::{ChunkId, FileRecord, Kind};

use super::world::{Device, World};
use crate::store::mem::chunk_id;

impl World {
    /// Live files on every device: `(device, path, chunk ids)`.
    pub(crate) fn live_contents(&self) -> Vec<(usize, String, Vec<ChunkId>)> {
        let mut out = Vec::new();
        for (d, dev) in self.devices.iter().enumerate() {
            for r in dev
                .records()
                .into_values()
                .filter(|r| r.is_live() && r.kind == Kind::File)
            {
                out.push((d, r.path.clone(), r.chunks.iter().map(|c| c.id).collect()));
            }
        }
        out
    }

    /// (a) Every device holds the same records (sequence numbers aside), every live file's
    /// chunks are present and intact, and every live session is idle and caught up.
    pub(crate) fn assert_converged(&self) {
        let view = |d: &Device| -> BTreeMap<String, FileRecord> {
            d.records()
                .into_iter()
                .map(|(p, r)| (p, FileRecord { seq: 0, ..r }))
                .collect()
        };
        let first = view(&self.devices[0]);
        for (i, dev) in self.devices.iter().enumerate().skip(1) {
            let other = view(dev);
            if other != first {
                let paths: BTreeMap<&String, (Option<&FileRecord>, Option<&FileRecord>)> = first
                    .keys()
                    .chain(other.keys())
                    .filter(|p| first.get(*p) != other.get(*p))
                    .map(|p| (p, (first.get(p), other.get(p))))
                    .collect();
                panic!("device {i} differs from device 0: {paths:#?}");
            }
        }
        for dev in &self.devices {
            for r in dev.records().values().filter(|r| r.is_live()) {
                for c in &r.chunks {
                    let data = dev
                        .store
                        .chunk(&c.id)
                        .unwrap_or_else(|| panic!("{} lacks a chunk", r.path));
                    assert_eq!(chunk_id(&data), c.id, "corrupt chunk stored for {}", r.path);
                }
            }
        }
        for link in &self.links {
            let Some(conn) = &link.conn else { continue };
            for side in 0..2 {
                let s = &conn.ends[side].session;
                let peer = &self.devices[link.ends[1 - side]];
                assert!(s.is_idle(), "session not idle at quiescence: {s:#?}");
                assert_eq!(s.peer_seen(), peer.seq(), "progress not caught up");
            }
        }
    }

    /// (b) Every file content in `snapshot` that no user overwrote or deleted is still live
    /// somewhere in device 0's tree (under its name, a new name or a conflict copy).
    pub(crate) fn assert_nothing_lost(&self, snapshot: &[(usize, String, Vec<ChunkId>)]) {
        let live: HashSet<Vec<ChunkId>> = self
            .live_contents()
            .into_iter()
            .filter(|(d, ..)| *d == 0)
            .map(|(.., c)| c)
            .collect();
        let superseded = self.superseded.borrow();
        for (d, path, content) in snapshot {
            if !superseded.contains(content) && !live.contains(content) {
                panic!(
                    "version of {path} last seen on device {d} is lost: {:#?}",
                    self.devices[0].records()
                );
            }
        }
    }
}
