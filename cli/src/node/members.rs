//! The folder's member list on this device (`fybrk_pair::members` decides who counts): kept in
//! `STATE/members.log`, extended when a person approves a join, exchanged with every linked
//! device, and applied to who may connect.
//!
//! Exchange: when a link comes up each side sends every entry it holds on a unidirectional
//! stream; a new entry (made here or learnt from one peer) goes to every other link at once, so
//! a change crosses a mesh in one hop per device and a device that was offline catches up at
//! its next connection. Entries are self-certifying (signed, and counted only by the rules), so
//! whoever forwards them need not be trusted.
//!
//! Applying: members may connect (even ones this device never paired with itself: a member
//! added by another device); a removed device is refused, its link closed, its peer entry
//! dropped. A member that pairs a device, or finds a paired device missing from the list (a
//! folder from before the list existed), adds it, so every device converges on one list.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{Context, Result};
use fybrk_control::{MemberChange, MemberChangeKind, MemberInfo, MembersReply};
use fybrk_net::identity::DeviceId;
use fybrk_net::transport::CLOSE_NOT_PAIRED;
use fybrk_pair::members::{MemberLog, Op, Signed};
use serde::{Deserialize, Serialize};

use super::{lock, names_device, unix_now, Node, Shared};

/// The largest member message read from a peer: a full log (4,096 entries of ~200 bytes) with
/// room to spare. Bigger is refused (and logged), never buffered.
const MAX_MESSAGE: usize = 4 << 20;

/// What one member stream carries: entries, and the folder's later keys when the receiver is a
/// member (see `keys`).
#[derive(Serialize, Deserialize)]
struct Message {
    entries: Vec<Signed>,
    keys: Vec<[u8; 32]>,
}

/// `STATE/members.log`: the folder it is for, whether this device may found its list, and the
/// entries.
#[derive(Serialize, Deserialize)]
struct File {
    folder: [u8; 16],
    may_found: bool,
    entries: Vec<Signed>,
}

/// Loads the member list of folder `folder` from `path`, and whether this device may found it:
/// an empty list that may be founded when the file is missing (a new folder, or one from
/// before the list existed); an empty one that waits for its members' list when the file is
/// for another folder (this device joined this one).
pub(super) fn load(path: &std::path::Path, folder: [u8; 16]) -> Result<(MemberLog, bool)> {
    let mut log = MemberLog::new(folder);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((log, true)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let file: File = postcard::from_bytes(&bytes).with_context(|| {
        format!(
            "{} is damaged; move it away to start the list again",
            path.display()
        )
    })?;
    if file.folder != folder {
        return Ok((log, false));
    }
    let (_, err) = log.insert_all(file.entries);
    if let Some(e) = err {
        tracing::warn!(file = %path.display(), "an entry of the member list was refused: {e}");
    }
    Ok((log, file.may_found))
}

/// How long `status` shows a member change.
const CHANGES_SHOWN_SECS: u64 = 24 * 3600;

impl Node {
    /// The members, with how each is connected now.
    pub fn members(&self) -> MembersReply {
        self.shared.members_reply()
    }

    /// Members added or removed in the last day, oldest first, for `status`.
    pub fn member_changes(&self) -> Vec<MemberChange> {
        let log = lock(&self.shared.members);
        let name_of = |d: &[u8; 32]| -> String {
            let member = log.members().iter().find(|m| m.device == *d);
            let removed = log.removals().iter().find(|r| r.device == *d);
            member
                .map(|m| m.name.clone())
                .or_else(|| removed.map(|r| r.name.clone()))
                .unwrap_or_default()
        };
        let since = unix_now().saturating_sub(CHANGES_SHOWN_SECS);
        let change = |change, device: &[u8; 32], name: &str, by: &[u8; 32], at_unix| MemberChange {
            change,
            id: DeviceId::from_bytes(*device).to_string(),
            name: name.to_owned(),
            by_id: DeviceId::from_bytes(*by).to_string(),
            by_name: name_of(by),
            at_unix,
        };
        let added = log
            .members()
            .iter()
            .filter(|m| m.added_by != m.device)
            .map(|m| {
                change(
                    MemberChangeKind::Added,
                    &m.device,
                    &m.name,
                    &m.added_by,
                    m.added_unix,
                )
            });
        let removed = log.removals().iter().map(|r| {
            change(
                MemberChangeKind::Removed,
                &r.device,
                &r.name,
                &r.by,
                r.at_unix,
            )
        });
        let mut out: Vec<MemberChange> = added
            .chain(removed)
            .filter(|c| c.at_unix >= since)
            .collect();
        out.sort_by_key(|c| c.at_unix);
        out
    }
}

impl Shared {
    fn members_reply(&self) -> MembersReply {
        // Taken first: it locks the links and the book itself.
        let net = self.status();
        let log = lock(&self.members);
        let book = lock(&self.book);
        let links = lock(&self.links);
        let name_of = |d: &[u8; 32]| -> String {
            log.members()
                .iter()
                .find(|m| m.device == *d)
                .map(|m| m.name.clone())
                .unwrap_or_default()
        };
        let store = self.fs.store();
        MembersReply {
            keys: store.key_ids().len() as u64,
            current_key: format!("{:016x}", store.current_key()),
            founded: log.is_founded(),
            members: log
                .members()
                .iter()
                .map(|m| {
                    let id = DeviceId::from_bytes(m.device);
                    let link = net
                        .peers
                        .iter()
                        .find(|p| p.connected && p.id == id.to_string());
                    MemberInfo {
                        path: link.and_then(|p| p.path),
                        quality: link.and_then(|p| p.quality),
                        rtt_ms: link.and_then(|p| p.rtt_ms),
                        id: id.to_string(),
                        name: m.name.clone(),
                        added_by: DeviceId::from_bytes(m.added_by).to_string(),
                        added_by_name: name_of(&m.added_by),
                        added_unix: m.added_unix,
                        this_device: id == self.id,
                        connected: links.contains_key(&id),
                        last_seen_unix: book.get(&id).and_then(|p| p.last_seen_unix),
                    }
                })
                .collect(),
        }
    }

    /// Writes `STATE/members.log` (atomically: a crash leaves the old list or the new one).
    pub(super) fn save_members(&self, log: &MemberLog) -> Result<()> {
        let path = self.state.members();
        let file = File {
            folder: self.fs.store().folder_id(),
            may_found: self.may_found.load(Ordering::SeqCst),
            entries: log.entries(),
        };
        let tmp = path.with_extension("log.tmp");
        let bytes = postcard::to_stdvec(&file).context("cannot encode the member list")?;
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        crate::state::sync_dir(&path)
    }

    /// Makes sure the list is founded and names every paired device: founds the folder when
    /// this device has no peer (a new folder) or is the smallest id among its peers (a folder
    /// from before the list existed), and adds paired devices the list lacks once this device
    /// is a member. Called at start and after every change.
    pub(super) fn reconcile_members(self: &Arc<Self>) {
        let book_ids: Vec<DeviceId> = lock(&self.book).iter().map(|(id, _)| *id).collect();
        let mut made = Vec::new();
        {
            let mut log = lock(&self.members);
            let me = *self.id.as_bytes();
            if !log.is_founded() {
                let smallest = book_ids.iter().all(|p| self.id.as_bytes() < p.as_bytes());
                if self.may_found.load(Ordering::SeqCst) && (book_ids.is_empty() || smallest) {
                    let op = Op::Found {
                        folder: self.fs.store().folder_id(),
                        name: self.name.clone(),
                    };
                    match self.sign_entry(&mut log, op) {
                        Some(s) => made.push(s),
                        None => return,
                    }
                }
            }
            if log.is_member(&me) {
                for p in &book_ids {
                    let d = *p.as_bytes();
                    if log.is_member(&d) || log.is_removed(&d) {
                        continue;
                    }
                    let name = lock(&self.book)
                        .get(p)
                        .map(|x| x.name.clone())
                        .unwrap_or_default();
                    if let Some(s) = self.sign_entry(&mut log, Op::Add { device: d, name }) {
                        made.push(s);
                    }
                }
            }
            if !made.is_empty() {
                if let Err(e) = self.save_members(&log) {
                    tracing::error!("cannot save the member list: {e:#}");
                }
            }
        }
        if !made.is_empty() {
            self.broadcast_members(made, None);
        }
        self.apply_members();
    }

    /// Appends an entry by this device (signed with its key) to `log`.
    pub(super) fn sign_entry(&self, log: &mut MemberLog, op: Op) -> Option<Signed> {
        let key = &self.device_key;
        match log.append(key.public_key(), op, unix_now(), |m| key.sign(m)) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!("cannot extend the member list: {e}");
                None
            }
        }
    }

    /// This device joined another folder (its store already switched): the list starts empty
    /// and comes from the folder's members; this device never founds it.
    pub(super) fn joined_folder(&self) {
        self.may_found.store(false, Ordering::SeqCst);
        let mut log = lock(&self.members);
        *log = MemberLog::new(self.fs.store().folder_id());
        if let Err(e) = self.save_members(&log) {
            tracing::error!("cannot save the member list: {e:#}");
        }
    }

    /// Removes the device `query` names (an id, a unique prefix, a name; a member or a paired
    /// device) from the folder, for every member.
    pub(super) fn remove_member(self: &Arc<Self>, query: &str) -> Result<fybrk_control::PeerRef> {
        let q = query.trim();
        let mut candidates: Vec<(DeviceId, String)> = lock(&self.members)
            .members()
            .iter()
            .map(|m| (DeviceId::from_bytes(m.device), m.name.clone()))
            .collect();
        for (id, p) in lock(&self.book).iter() {
            if !candidates.iter().any(|(c, _)| c == id) {
                candidates.push((*id, p.name.clone()));
            }
        }
        let hits: Vec<(DeviceId, String)> = candidates
            .into_iter()
            .filter(|(id, name)| names_device(q, id, name))
            .collect();
        let (id, name) = match hits.as_slice() {
            [one] => one.clone(),
            [] => anyhow::bail!("no member matches {q:?}: `fybrk members` lists them"),
            _ => anyhow::bail!("several members match {q:?}: give more of the id"),
        };
        if id == self.id {
            anyhow::bail!("this is this device; remove it from another member");
        }
        let made = {
            let mut log = lock(&self.members);
            let made = self.sign_entry(
                &mut log,
                Op::Remove {
                    device: *id.as_bytes(),
                },
            );
            if let Err(e) = self.save_members(&log) {
                tracing::error!("cannot save the member list: {e:#}");
            }
            made
        };
        // The new key goes with the removal, in one message: a member never sees the removal
        // without the key made for it (and so never makes a second one).
        let rekey = self.new_key().map(|(_, entry)| entry);
        // Everyone else hears first; then the link to the removed device goes.
        self.broadcast_members(made.into_iter().chain(rekey).collect(), Some(id));
        {
            let mut book = lock(&self.book);
            book.remove(&id);
            self.fs.store().sync()?;
            book.save()?;
        }
        self.allow.remove(&id);
        if let Some(link) = lock(&self.links).remove(&id) {
            link.conn
                .close(CLOSE_NOT_PAIRED, b"removed from the folder");
        }
        if let Some(wake) = lock(&self.dialers).remove(&id) {
            wake.notify_one();
        }
        self.apply_members();
        tracing::warn!(peer = %id, %name, "removed from the folder");
        Ok(fybrk_control::PeerRef {
            id: id.to_string(),
            name,
        })
    }

    /// Records that a person approved `device` (named `name`) joining: it becomes a member on
    /// every device.
    pub(super) fn member_added(self: &Arc<Self>, device: DeviceId, name: &str) {
        let made = {
            let mut log = lock(&self.members);
            if log.is_member(device.as_bytes()) {
                return;
            }
            let op = Op::Add {
                device: *device.as_bytes(),
                name: name.to_owned(),
            };
            let made = self.sign_entry(&mut log, op);
            if let Err(e) = self.save_members(&log) {
                tracing::error!("cannot save the member list: {e:#}");
            }
            made
        };
        if let Some(s) = made {
            self.broadcast_members(vec![s], None);
        }
        self.apply_members();
    }

    /// Starts the exchange on a new link: sends everything, then takes what the peer sends
    /// until the connection ends.
    pub(super) fn start_member_exchange(self: &Arc<Self>, peer: DeviceId, conn: quinn::Connection) {
        let entries = lock(&self.members).entries();
        send(conn.clone(), peer, entries, self.keys_for(&peer));
        let sh = self.clone();
        tokio::spawn(async move {
            while let Ok(mut recv) = conn.accept_uni().await {
                let bytes = match recv.read_to_end(MAX_MESSAGE).await {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::warn!(peer = %peer.abbrev(), "member list message refused: {e}");
                        continue;
                    }
                };
                match postcard::from_bytes::<Message>(&bytes) {
                    Ok(m) => sh.merge_members(peer, m.entries, m.keys),
                    Err(e) => {
                        tracing::warn!(peer = %peer.abbrev(), "undecodable member list message: {e}")
                    }
                }
            }
        });
    }

    /// Takes entries and keys a peer sent; new entries are saved, announced, applied and passed
    /// on. Keys are taken before anything is decided, so a removal and the key made for it
    /// arriving together never look like a removal without a key.
    fn merge_members(self: &Arc<Self>, from: DeviceId, entries: Vec<Signed>, keys: Vec<[u8; 32]>) {
        let (fresh, before, after) = {
            let mut log = lock(&self.members);
            let before: Vec<_> = log.members().to_vec();
            // What is new here (and taken) is what gets passed on.
            let mut fresh: Vec<Signed> = entries
                .iter()
                .filter(|s| !log.holds(&s.id()))
                .cloned()
                .collect();
            let (n, err) = log.insert_all(entries);
            if let Some(e) = err {
                tracing::warn!(peer = %from.abbrev(), "a member entry from this peer was refused: {e}");
            }
            fresh.retain(|s| log.holds(&s.id()));
            drop(log);
            let new_keys = self.take_keys(from, keys);
            let log = lock(&self.members);
            if n == 0 {
                drop(log);
                if new_keys {
                    self.apply_keys();
                }
                return;
            }
            if let Err(e) = self.save_members(&log) {
                tracing::error!("cannot save the member list: {e:#}");
            }
            (fresh, before, log.members().to_vec())
        };
        for m in after
            .iter()
            .filter(|m| !before.iter().any(|b| b.device == m.device))
        {
            let by = after.iter().find(|x| x.device == m.added_by).map_or_else(
                || DeviceId::from_bytes(m.added_by).abbrev(),
                |x| x.name.clone(),
            );
            tracing::info!(member = %DeviceId::from_bytes(m.device), "{} added by {by}", m.name);
        }
        for m in before
            .iter()
            .filter(|b| !after.iter().any(|m| m.device == b.device))
        {
            tracing::warn!(member = %DeviceId::from_bytes(m.device), "{} was removed from the folder", m.name);
        }
        self.broadcast_members(fresh, Some(from));
        self.reconcile_members();
    }

    /// Sends `entries` to every linked peer except `except`.
    pub(super) fn broadcast_members(&self, entries: Vec<Signed>, except: Option<DeviceId>) {
        if entries.is_empty() {
            return;
        }
        let links: Vec<(DeviceId, quinn::Connection)> = lock(&self.links)
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .map(|(id, l)| (*id, l.conn.clone()))
            .collect();
        for (peer, conn) in links {
            send(conn, peer, entries.clone(), self.keys_for(&peer));
        }
    }

    /// Lets members connect and shuts removed devices out.
    fn apply_members(&self) {
        let removed: Vec<DeviceId> = {
            // The allow list changes under the list's lock: two changes applied at once (a
            // removal here, entries merged from a peer there) must land in the list's order, or
            // the older one re-admits a device just removed (a dial still in flight then brings
            // its link back).
            let log = lock(&self.members);
            for m in log.members() {
                let id = DeviceId::from_bytes(m.device);
                if id != self.id {
                    self.allow.add(id);
                }
            }
            let book: Vec<DeviceId> = lock(&self.book).iter().map(|(id, _)| *id).collect();
            let removed: Vec<DeviceId> = book
                .into_iter()
                .filter(|id| log.is_removed(id.as_bytes()))
                .collect();
            for id in &removed {
                self.allow.remove(id);
            }
            removed
        };
        for id in removed {
            if let Some(peer) = lock(&self.book).remove(&id) {
                tracing::warn!(peer = %id, name = %peer.name, "removed from the folder: no longer accepted");
            }
            if let Some(link) = lock(&self.links).remove(&id) {
                link.conn
                    .close(CLOSE_NOT_PAIRED, b"removed from the folder");
            }
            if let Some(wake) = lock(&self.dialers).remove(&id) {
                wake.notify_one();
            }
        }
        self.apply_keys();
    }
}

/// Sends `entries` (and `keys`) to `peer` on a stream of their own (in the background).
fn send(conn: quinn::Connection, peer: DeviceId, entries: Vec<Signed>, keys: Vec<[u8; 32]>) {
    tokio::spawn(async move {
        let bytes = match postcard::to_stdvec(&Message { entries, keys }) {
            Ok(b) => b,
            Err(e) => return tracing::error!("cannot encode member entries: {e}"),
        };
        let sent = async {
            let mut stream = conn.open_uni().await?;
            stream.write_all(&bytes).await?;
            stream.finish()?;
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = sent.await {
            tracing::debug!(peer = %peer.abbrev(), "cannot send member entries: {e}");
        }
    });
}
