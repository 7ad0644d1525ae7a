//! [`MemberLog`]: the entries a device holds and who is a member according to them (see the
//! rules in the module above).
//!
//! The decision is recomputed from all entries after each change: entries whose ancestors are
//! all present, in topological order, with each entry's ancestors as a bitset, so "was the
//! author a member as of what it had seen" and "had the remover seen this" are set lookups. The
//! log is bounded ([`MAX_ENTRIES`]), so the quadratic parts stay in the milliseconds.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use super::{device_id, Entry, EntryId, Op, Signed};

/// Entries a log holds at most. A folder gains a few per device it ever had; past this, new
/// entries are refused (with an error naming the limit) rather than growing without bound.
pub const MAX_ENTRIES: usize = 4096;

/// Why an entry was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// The signature is not the author's.
    #[error("the signature does not match the entry's author")]
    BadSignature,
    /// The bytes are not a well-formed entry.
    #[error("malformed member entry: {0}")]
    Malformed(String),
    /// The log is full.
    #[error("the member log holds {MAX_ENTRIES} entries already")]
    Full,
    /// A founding entry for another folder.
    #[error("a founding entry for another folder")]
    OtherFolder,
}

/// A member as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its device id.
    pub device: [u8; 32],
    /// Its name (from the latest entry that named it).
    pub name: String,
    /// Who added it (itself for the founder).
    pub added_by: [u8; 32],
    /// When, by the adder's clock (unix seconds).
    pub added_unix: u64,
}

/// A device removed from the folder, as the entry that removed it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// The removed device.
    pub device: [u8; 32],
    /// Its name, from the entries that added it (empty if none counts).
    pub name: String,
    /// Who removed it.
    pub by: [u8; 32],
    /// When, by the remover's clock (unix seconds).
    pub at_unix: u64,
}

/// One entry held, decoded.
#[derive(Debug, Clone)]
struct Held {
    signed: Signed,
    entry: Entry,
    author: [u8; 32],
}

/// The member list of one folder.
#[derive(Debug, Clone)]
pub struct MemberLog {
    folder: [u8; 16],
    held: HashMap<EntryId, Held>,
    /// Ids of the entries that count, from the last recomputation.
    valid: HashSet<EntryId>,
    members: Vec<Member>,
    removed: HashSet<[u8; 32]>,
    /// Every removal that counts, in the log's order.
    removals: Vec<Removal>,
    /// The rekeys that count, in the log's deterministic order, each with whether it covers
    /// every removal that counts.
    rekeys: Vec<(u64, bool)>,
    /// Whether any removal counts.
    any_removal: bool,
}

/// Which folder key new chunks are sealed under ([`MemberLog::write_key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKey {
    /// The folder's first key: nobody was ever removed.
    First,
    /// The later key with this id.
    Later(u64),
    /// A device was removed and no key this device holds postdates every removal: a member
    /// must make a new key (a [`Op::Rekey`]) before sealing anything new.
    NeedNew,
}

impl MemberLog {
    /// An empty log for folder `folder`.
    pub fn new(folder: [u8; 16]) -> MemberLog {
        MemberLog {
            folder,
            held: HashMap::new(),
            valid: HashSet::new(),
            members: Vec::new(),
            removed: HashSet::new(),
            removals: Vec::new(),
            rekeys: Vec::new(),
            any_removal: false,
        }
    }

    /// The ids of the later keys the log names (rekeys that count), oldest first.
    pub fn key_ids(&self) -> Vec<u64> {
        self.rekeys.iter().map(|(id, _)| *id).collect()
    }

    /// Which key new chunks are sealed under, given which later keys this device holds: the
    /// last rekey (in the log's order, the same on every device) that covers every removal and
    /// whose key is held; the first key while nobody was removed and no later key is held.
    pub fn write_key(&self, held: impl Fn(u64) -> bool) -> WriteKey {
        let newest = self
            .rekeys
            .iter()
            .rev()
            // Id 0 names the first key, which every device that ever paired holds: a rekey to
            // it (only a broken or hostile member writes one) never counts.
            .find(|(id, covers)| *covers && *id != 0 && held(*id));
        match newest {
            Some((id, _)) => WriteKey::Later(*id),
            None if self.any_removal => WriteKey::NeedNew,
            None => WriteKey::First,
        }
    }

    /// Takes `signed` (checked: decodes, within bounds, signed by its author). `Ok(true)` when
    /// it is new. The member list is recomputed; an entry whose parents have not arrived yet is
    /// held and counts once they do.
    pub fn insert(&mut self, signed: Signed) -> Result<bool, InsertError> {
        let added = self.take(signed)?;
        if added {
            self.recompute();
        }
        Ok(added)
    }

    /// [`MemberLog::insert`] for many entries, recomputing once. Returns how many were new and
    /// the first error (the other entries are still taken).
    pub fn insert_all(
        &mut self,
        entries: impl IntoIterator<Item = Signed>,
    ) -> (usize, Option<InsertError>) {
        let mut new = 0;
        let mut first_err = None;
        for s in entries {
            match self.take(s) {
                Ok(true) => new += 1,
                Ok(false) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if new > 0 {
            self.recompute();
        }
        (new, first_err)
    }

    fn take(&mut self, signed: Signed) -> Result<bool, InsertError> {
        let id = signed.id();
        if self.held.contains_key(&id) {
            return Ok(false);
        }
        if self.held.len() >= MAX_ENTRIES {
            return Err(InsertError::Full);
        }
        let entry = signed.open()?;
        if let Op::Found { folder, .. } = &entry.op {
            if *folder != self.folder {
                return Err(InsertError::OtherFolder);
            }
        }
        let author = device_id(&entry.author_key);
        self.held.insert(
            id,
            Held {
                signed,
                entry,
                author,
            },
        );
        Ok(true)
    }

    /// Writes an entry by the device with public key `author_key` on top of everything this log
    /// holds (its heads as parents), signed with `sign`, and takes it.
    pub fn append(
        &mut self,
        author_key: [u8; 32],
        op: Op,
        now_unix: u64,
        sign: impl FnOnce(&[u8]) -> [u8; 64],
    ) -> Result<Signed, InsertError> {
        let mut parents = self.heads();
        parents.truncate(super::MAX_PARENTS);
        let entry = Entry {
            parents,
            author_key,
            at_unix: now_unix,
            op,
        };
        let signed = Signed::new(&entry, sign);
        self.insert(signed.clone())?;
        Ok(signed)
    }

    /// Every entry held, for sending to a peer or saving (in an order a receiver can take them).
    pub fn entries(&self) -> Vec<Signed> {
        let mut out: Vec<(u64, EntryId, &Signed)> = self
            .held
            .iter()
            .map(|(id, h)| (h.entry.at_unix, *id, &h.signed))
            .collect();
        out.sort_by_key(|(at, id, _)| (*at, *id));
        out.into_iter().map(|(_, _, s)| s.clone()).collect()
    }

    /// Whether entry `id` is held (counted or not).
    pub fn holds(&self, id: &EntryId) -> bool {
        self.held.contains_key(id)
    }

    /// The members, founder first, then by the time they were added.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Whether `device` is a member now.
    pub fn is_member(&self, device: &[u8; 32]) -> bool {
        self.members.iter().any(|m| m.device == *device)
    }

    /// Every removal that counts (who, by whom, when), in the log's order.
    pub fn removals(&self) -> &[Removal] {
        &self.removals
    }

    /// Whether `device` was removed (it can never come back).
    pub fn is_removed(&self, device: &[u8; 32]) -> bool {
        self.removed.contains(device)
    }

    /// Whether the folder has a founding entry that counts.
    pub fn is_founded(&self) -> bool {
        !self.members.is_empty() || !self.removed.is_empty()
    }

    /// The valid entries no other valid entry names as a parent.
    pub fn heads(&self) -> Vec<EntryId> {
        let named: HashSet<&EntryId> = self
            .valid
            .iter()
            .filter_map(|id| self.held.get(id))
            .flat_map(|h| h.entry.parents.iter())
            .collect();
        let mut heads: Vec<EntryId> = self
            .valid
            .iter()
            .filter(|id| !named.contains(id))
            .copied()
            .collect();
        heads.sort_unstable();
        heads
    }

    /// [`MemberLog::recompute`], for timing it in tests.
    #[cfg(test)]
    pub(super) fn recompute_for_test(&mut self) {
        self.recompute();
    }

    /// Decides again which entries count and who is a member.
    fn recompute(&mut self) {
        let order = self.topological();
        let n = order.len();
        let index: HashMap<EntryId, usize> =
            order.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let words = n.div_ceil(64);
        // ancestors[i]: bitset of the entries i had seen (strictly before it).
        let mut ancestors = vec![vec![0u64; words]; n];
        for (i, id) in order.iter().enumerate() {
            let parents = &self.held[id].entry.parents;
            let mut set = vec![0u64; words];
            for p in parents {
                if let Some(&j) = index.get(p) {
                    set[j / 64] |= 1 << (j % 64);
                    for (w, a) in set.iter_mut().zip(&ancestors[j]) {
                        *w |= a;
                    }
                }
            }
            ancestors[i] = set;
        }
        let hs: Vec<&Held> = order.iter().map(|id| &self.held[id]).collect();
        let entry = |i: usize| hs[i];
        // Per device: the entries that make it a member or not (its founding, adds, removes),
        // and the entries it wrote; so each check looks at a few entries, not all of them.
        let mut about: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        let mut by_author: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
        for (i, h) in hs.iter().enumerate() {
            let subject = match &h.entry.op {
                Op::Found { .. } => Some(h.author),
                Op::Add { device, .. } | Op::Remove { device } => Some(*device),
                Op::Rekey { .. } => None,
            };
            if let Some(subject) = subject {
                about.entry(subject).or_default().push(i);
            }
            by_author.entry(h.author).or_default().push(i);
        }
        let none: Vec<usize> = Vec::new();

        // The root: the founding entry without parents with the smallest id.
        let root = (0..n)
            .filter(|&i| {
                matches!(entry(i).entry.op, Op::Found { .. }) && entry(i).entry.parents.is_empty()
            })
            .min_by_key(|&i| order[i]);
        let mut forced_out = vec![false; n];
        let mut valid = vec![false; n];
        loop {
            for i in 0..n {
                let e = entry(i);
                valid[i] = !forced_out[i]
                    && match (&e.entry.op, root) {
                        (Op::Found { .. }, Some(r)) => i == r,
                        (_, Some(r)) => {
                            has(&ancestors[i], r)
                                && member_in(
                                    &ancestors[i],
                                    &valid,
                                    &hs,
                                    about.get(&e.author).unwrap_or(&none),
                                )
                        }
                        (_, None) => false,
                    };
            }
            // Removal wins: what a removed device added without the remover having seen it
            // counts for nothing. Its removals still count, so two members removing each other
            // at once both end up out. Marks only accumulate: when a removal stops counting in
            // a later round (its author turns out to have been added by a removed device), what
            // it marked stays out: in doubt, out.
            let mut changed = false;
            for rm in (0..n).filter(|&i| valid[i]) {
                let Op::Remove { device } = entry(rm).entry.op else {
                    continue;
                };
                for &j in by_author.get(&device).unwrap_or(&none) {
                    let is_removal = matches!(entry(j).entry.op, Op::Remove { .. });
                    if j != rm && !is_removal && !forced_out[j] && !has(&ancestors[rm], j) {
                        forced_out[j] = true;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }

        let removals: Vec<usize> = (0..n)
            .filter(|&i| valid[i] && matches!(entry(i).entry.op, Op::Remove { .. }))
            .collect();
        let mut rekeys = Vec::new();
        let mut removed_by = Vec::new();
        let mut removed = HashSet::new();
        let mut added: Vec<Member> = Vec::new();
        for i in (0..n).filter(|&i| valid[i]) {
            let e = entry(i);
            match &e.entry.op {
                Op::Found { name, .. } => {
                    note_add(&mut added, e.author, name, e.author, e.entry.at_unix)
                }
                Op::Add { device, name } => {
                    note_add(&mut added, *device, name, e.author, e.entry.at_unix)
                }
                Op::Remove { device } => {
                    removed.insert(*device);
                    removed_by.push(Removal {
                        device: *device,
                        name: String::new(),
                        by: e.author,
                        at_unix: e.entry.at_unix,
                    });
                }
                Op::Rekey { key_id } => {
                    let covers = removals.iter().all(|&r| has(&ancestors[i], r));
                    rekeys.push((*key_id, covers));
                }
            }
        }
        for r in &mut removed_by {
            if let Some(m) = added.iter().find(|m| m.device == r.device) {
                r.name.clone_from(&m.name);
            }
        }
        added.retain(|m| !removed.contains(&m.device));
        self.removals = removed_by;
        self.rekeys = rekeys;
        self.any_removal = !removals.is_empty();
        self.valid = (0..n).filter(|&i| valid[i]).map(|i| order[i]).collect();
        self.members = added;
        self.removed = removed;
    }

    /// The held entries whose ancestors are all held, parents before children.
    fn topological(&self) -> Vec<EntryId> {
        let mut pending: HashMap<EntryId, usize> = HashMap::new();
        let mut children: HashMap<EntryId, Vec<EntryId>> = HashMap::new();
        let mut ready: Vec<EntryId> = Vec::new();
        for (id, h) in &self.held {
            let parents: HashSet<&EntryId> = h.entry.parents.iter().collect();
            if parents.iter().any(|p| !self.held.contains_key(*p)) {
                continue;
            }
            for p in &parents {
                children.entry(**p).or_default().push(*id);
            }
            if parents.is_empty() {
                ready.push(*id);
            } else {
                pending.insert(*id, parents.len());
            }
        }
        // Deterministic: the same entries give the same order on every device (smallest ready
        // id first).
        let mut ready: BinaryHeap<Reverse<EntryId>> = ready.into_iter().map(Reverse).collect();
        let mut order = Vec::with_capacity(self.held.len());
        while let Some(Reverse(id)) = ready.pop() {
            order.push(id);
            for c in children.get(&id).into_iter().flatten() {
                if let Some(n) = pending.get_mut(c) {
                    *n -= 1;
                    if *n == 0 {
                        pending.remove(c);
                        ready.push(Reverse(*c));
                    }
                }
            }
        }
        // Anything left in `pending` names a missing ancestor (or a cycle, which ids that
        // hash their parents make impossible): it waits.
        order
    }
}

/// Whether bit `j` is set in `set`.
fn has(set: &[u64], j: usize) -> bool {
    set[j / 64] & (1 << (j % 64)) != 0
}

/// Whether a device is a member as of the entries in `seen` (a bitset over `hs`) that count;
/// `about` lists the entries concerning that device.
fn member_in(seen: &[u64], valid: &[bool], hs: &[&Held], about: &[usize]) -> bool {
    let mut member = false;
    for &j in about.iter().filter(|&&j| has(seen, j) && valid[j]) {
        match &hs[j].entry.op {
            Op::Remove { .. } => return false,
            Op::Found { .. } | Op::Add { .. } => member = true,
            Op::Rekey { .. } => {}
        }
    }
    member
}

/// Records that `device` was added (keeps the first adder, takes the latest name).
fn note_add(added: &mut Vec<Member>, device: [u8; 32], name: &str, by: [u8; 32], at_unix: u64) {
    let name = crate::sanitize_name(name);
    match added.iter_mut().find(|m| m.device == device) {
        Some(m) => m.name = name,
        None => added.push(Member {
            device,
            name,
            added_by: by,
            added_unix: at_unix,
        }),
    }
}
