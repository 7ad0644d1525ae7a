//! Inode numbers: local to this mount, mapped to the paths the store is keyed by.

use std::collections::HashMap;

use fybrk_store::{FileRecord, Pins, Store};

/// The last record of a name that was removed while the kernel still refers to its inode,
/// with its chunks pinned so it stays readable until the kernel forgets it.
pub(crate) struct Detached {
    record: FileRecord,
    _pins: Pins,
}

impl Detached {
    pub fn new(store: &Store, record: FileRecord) -> Detached {
        let pins = store.pin(record.chunks.iter().map(|c| c.id));
        Detached {
            record,
            _pins: pins,
        }
    }
}

/// The root directory's inode number (FUSE's convention).
pub const ROOT: u64 = 1;

struct Node {
    /// Current path; `None` once unlinked (open handles may still use the inode).
    path: Option<String>,
    /// Kernel references (lookups minus forgets).
    lookups: u64,
    /// Open handles on this inode.
    opens: u64,
    /// Set once unlinked.
    detached: Option<Detached>,
    /// The kernel's cached pages of this inode (if any) hold its current content: set at an
    /// open (which made the kernel drop or keep them), cleared by any change of the content.
    cached: bool,
}

/// Bidirectional map inode <-> path with kernel lookup counting.
pub(crate) struct Inodes {
    by_ino: HashMap<u64, Node>,
    by_path: HashMap<String, u64>,
    next: u64,
}

impl Inodes {
    pub fn new() -> Inodes {
        let mut by_ino = HashMap::new();
        by_ino.insert(
            ROOT,
            Node {
                path: Some(String::new()),
                lookups: 1,
                opens: 0,
                detached: None,
                cached: false,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), ROOT);
        Inodes {
            by_ino,
            by_path,
            next: ROOT + 1,
        }
    }

    /// The path of `ino`, or `None` for an unknown or unlinked inode.
    pub fn path(&self, ino: u64) -> Option<&str> {
        self.by_ino.get(&ino)?.path.as_deref()
    }

    /// Whether `ino` is still in use (named, looked up or open).
    pub fn exists(&self, ino: u64) -> bool {
        self.by_ino.contains_key(&ino)
    }

    /// The inode the kernel knows `path` by, if any.
    pub fn lookup_path(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The record an unlinked inode had when its name went away.
    pub fn detached(&self, ino: u64) -> Option<&FileRecord> {
        self.by_ino.get(&ino)?.detached.as_ref().map(|d| &d.record)
    }

    /// The inode of `path`, creating one if needed; counts a kernel lookup when `lookup`.
    pub fn get_or_insert(&mut self, path: &str, lookup: bool) -> u64 {
        let ino = match self.by_path.get(path) {
            Some(&ino) => ino,
            None => {
                let ino = self.next;
                self.next += 1;
                self.by_ino.insert(
                    ino,
                    Node {
                        path: Some(path.to_owned()),
                        lookups: 0,
                        opens: 0,
                        detached: None,
                        cached: false,
                    },
                );
                self.by_path.insert(path.to_owned(), ino);
                ino
            }
        };
        if lookup {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.lookups += 1;
            }
        }
        ino
    }

    /// Drops `n` kernel references; frees the inode when nothing uses it any more.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if let Some(node) = self.by_ino.get_mut(&ino) {
            node.lookups = node.lookups.saturating_sub(n);
        }
        self.maybe_free(ino);
    }

    /// Frees an inode nobody references (used for inodes handed out in directory listings).
    pub fn maybe_free(&mut self, ino: u64) {
        if ino == ROOT {
            return;
        }
        let Some(node) = self.by_ino.get(&ino) else {
            return;
        };
        if node.lookups == 0 && node.opens == 0 {
            if let Some(p) = &node.path {
                self.by_path.remove(p);
            }
            self.by_ino.remove(&ino);
        }
    }

    pub fn opened(&mut self, ino: u64) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.opens += 1;
        }
    }

    pub fn closed(&mut self, ino: u64) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.opens = n.opens.saturating_sub(1);
        }
        self.maybe_free(ino);
    }

    /// Whether an open of `ino` may let the kernel keep the pages it cached (`FOPEN_KEEP_CACHE`):
    /// only when nothing changed the content since an earlier open. An open without it makes the
    /// kernel drop them, so from here on what it caches is current, and the next open may keep.
    pub fn keep_cache(&mut self, ino: u64) -> bool {
        self.by_ino
            .get_mut(&ino)
            .is_some_and(|n| std::mem::replace(&mut n.cached, true))
    }

    /// The content of `ino` changed: the next open makes the kernel drop its cached pages.
    /// Writes and truncations through the kernel keep its cache right by themselves; this is
    /// belt and braces for those, and the only guard for changes it does not see.
    pub fn content_changed(&mut self, ino: u64) {
        if let Some(n) = self.by_ino.get_mut(&ino) {
            n.cached = false;
        }
    }

    /// Every inode's content may have changed (the store was swapped).
    pub fn all_content_changed(&mut self) {
        for n in self.by_ino.values_mut() {
            n.cached = false;
        }
    }

    /// The path was deleted: the inode lives on for its handles but has no name.
    pub fn unlink(&mut self, path: &str, detached: Option<Detached>) {
        if let Some(ino) = self.by_path.remove(path) {
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = None;
                n.detached = detached;
            }
            self.maybe_free(ino);
        }
    }

    /// `from` (and, for a directory, everything below it) is now at `to`.
    pub fn rename(&mut self, from: &str, to: &str, replaced: Option<Detached>) {
        self.unlink(to, replaced);
        let prefix = format!("{from}/");
        let moved: Vec<(String, u64)> = self
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&prefix))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        for (old, ino) in moved {
            self.by_path.remove(&old);
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(n) = self.by_ino.get_mut(&ino) {
                n.path = Some(new.clone());
            }
            self.by_path.insert(new, ino);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_descendants_and_replaces_target() {
        let mut t = Inodes::new();
        let d = t.get_or_insert("d", true);
        let f = t.get_or_insert("d/f", true);
        let other = t.get_or_insert("dd", true);
        let victim = t.get_or_insert("e", true);
        t.opened(victim);
        t.rename("d", "e", None);
        assert_eq!(t.path(d), Some("e"));
        assert_eq!(t.path(f), Some("e/f"));
        assert_eq!(t.path(other), Some("dd"));
        assert_eq!(t.path(victim), None);
        assert_eq!(t.by_path.get("e"), Some(&d));
        t.closed(victim);
        t.forget(victim, 1);
        assert!(!t.by_ino.contains_key(&victim));
    }

    #[test]
    fn the_kernel_keeps_its_cache_only_while_the_content_is_unchanged() {
        let mut t = Inodes::new();
        let f = t.get_or_insert("f", true);
        assert!(
            !t.keep_cache(f),
            "first open: nothing known about the kernel's pages"
        );
        assert!(t.keep_cache(f));
        t.content_changed(f);
        assert!(!t.keep_cache(f));
        assert!(t.keep_cache(f));
        t.all_content_changed();
        assert!(!t.keep_cache(f));
        assert!(!t.keep_cache(12345), "unknown inode");
    }
}
