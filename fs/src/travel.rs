//! The time-travel tree: `.fybrk/at/<TIME>/...` at the root of the mount, a read-only view of
//! the folder as it was at TIME, answered from the store's history (`get_at`, `list_dir_at`).
//!
//! Nothing here is stored or synced: the entries are synthetic inodes in a range of their own
//! (high bit set), mapped to (time, path) in a bounded table.

use std::collections::HashMap;

use fybrk_store::{FileRecord, Kind};

/// Synthetic inode numbers and handles have this bit set; real ones never do.
pub const SYNTHETIC: u64 = 1 << 63;
/// The hidden directory's name at the root.
pub const DOT: &str = ".fybrk";
/// Most synthetic inodes kept at once; past it, the ones the kernel has forgotten go first.
const MAX_NODES: usize = 65_536;

/// Whether `ino` (or a handle) belongs to the time-travel tree.
pub fn is_synthetic(ino: u64) -> bool {
    ino & SYNTHETIC != 0
}

/// What a synthetic inode stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Node {
    /// `.fybrk`.
    Dot,
    /// `.fybrk/at`.
    At,
    /// `.fybrk/at/<TIME>/<path>` (`path` empty: the folder's root at that time).
    Past {
        /// The time, nanoseconds since the epoch.
        at_ns: i64,
        /// The path in the folder.
        path: String,
    },
}

struct Entry {
    node: Node,
    lookups: u64,
}

/// The synthetic inode table.
pub struct Table {
    by_ino: HashMap<u64, Entry>,
    by_node: HashMap<Node, u64>,
    next: u64,
}

impl Default for Table {
    fn default() -> Table {
        Table::new()
    }
}

impl Table {
    /// An empty table (`.fybrk` and `.fybrk/at` get fixed inodes).
    pub fn new() -> Table {
        let mut t = Table {
            by_ino: HashMap::new(),
            by_node: HashMap::new(),
            next: SYNTHETIC | 3,
        };
        for (ino, node) in [(SYNTHETIC | 1, Node::Dot), (SYNTHETIC | 2, Node::At)] {
            t.by_ino.insert(
                ino,
                Entry {
                    node: node.clone(),
                    lookups: 1,
                },
            );
            t.by_node.insert(node, ino);
        }
        t
    }

    /// The node behind `ino`.
    pub fn node(&self, ino: u64) -> Option<Node> {
        self.by_ino.get(&ino).map(|e| e.node.clone())
    }

    /// The inode of `node`, made if new; `lookup` counts a kernel reference.
    pub fn get_or_insert(&mut self, node: Node, lookup: bool) -> u64 {
        let ino = match self.by_node.get(&node) {
            Some(&ino) => ino,
            None => {
                if self.by_ino.len() >= MAX_NODES {
                    self.shrink();
                }
                let ino = self.next;
                self.next = SYNTHETIC | (self.next.wrapping_add(1) & !SYNTHETIC).max(3);
                self.by_ino.insert(
                    ino,
                    Entry {
                        node: node.clone(),
                        lookups: 0,
                    },
                );
                self.by_node.insert(node, ino);
                ino
            }
        };
        if lookup {
            if let Some(e) = self.by_ino.get_mut(&ino) {
                e.lookups += 1;
            }
        }
        ino
    }

    /// The kernel dropped `n` references to `ino`.
    pub fn forget(&mut self, ino: u64, n: u64) {
        let Some(e) = self.by_ino.get_mut(&ino) else {
            return;
        };
        if matches!(e.node, Node::Dot | Node::At) {
            return;
        }
        e.lookups = e.lookups.saturating_sub(n);
        if e.lookups == 0 {
            if let Some(e) = self.by_ino.remove(&ino) {
                self.by_node.remove(&e.node);
            }
        }
    }

    /// Drops the entries the kernel holds no reference to (listed but never looked up).
    fn shrink(&mut self) {
        let idle: Vec<u64> = self
            .by_ino
            .iter()
            .filter(|(_, e)| e.lookups == 0)
            .map(|(&i, _)| i)
            .collect();
        for ino in idle {
            if let Some(e) = self.by_ino.remove(&ino) {
                self.by_node.remove(&e.node);
            }
        }
    }
}

/// A record as shown in the past: read-only.
pub fn read_only(mut r: FileRecord) -> FileRecord {
    r.mode &= !0o222;
    if r.kind == Kind::Dir {
        r.size = 4096;
    }
    r
}
