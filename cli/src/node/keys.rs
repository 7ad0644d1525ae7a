//! The folder's keys on this device: a new key when a member is removed, later keys given to
//! members with the member list, and the key new chunks are sealed under.
//!
//! The member list decides ([`MemberLog::write_key`](fybrk_pair::members::MemberLog::write_key)):
//! nobody removed, the first key; otherwise the last rekey that postdates every removal and
//! whose key this device holds. When there is none (this device just removed someone, or
//! learnt of a removal no key covers yet) it makes a key, saves it in `folder.key` before
//! anything is sealed under it, adds a signed `Rekey` entry naming the key's public id, and
//! sends entry and key to every member it is linked to. Keys travel only inside a link's TLS,
//! to devices the member list names, never to a removed device (they are shut out before
//! anything is sent; a key postdating a removal was made by a device that knew of it).

use fybrk_net::identity::DeviceId;
use fybrk_pair::members::{Op, Signed, WriteKey};
use fybrk_store::{Crypto, FolderKey, FIRST_KEY};

use super::{lock, Shared};
use fybrk_store::keyfile as folder_keys;

/// The most later keys taken from one message (a folder gets one per removal; the member list
/// itself holds at most 4,096 entries).
const MAX_KEYS: usize = 4096;

impl Shared {
    /// Seals new chunks under the key the member list says; makes one when a removal is not
    /// covered yet. Called after every change of the list or the keys.
    pub(super) fn apply_keys(&self) {
        let store = self.fs.store();
        let held = store.key_ids();
        let (founded, choice) = {
            let log = lock(&self.members);
            (log.is_founded(), log.write_key(|id| held.contains(&id)))
        };
        if !founded {
            // No list yet (this device just joined): keep the newest key it was given.
            return;
        }
        let id = match choice {
            WriteKey::First => FIRST_KEY,
            WriteKey::Later(id) => id,
            WriteKey::NeedNew => match self.new_key() {
                Some((id, entry)) => {
                    self.broadcast_members(vec![entry], None);
                    id
                }
                None => return,
            },
        };
        if store.current_key() != id {
            if let Err(e) = store.use_key(id) {
                tracing::error!("cannot switch the folder key: {e}");
                return;
            }
            tracing::info!(key = %format!("{id:016x}"), "new files are sealed under this folder key");
        }
    }

    /// Makes a new folder key after a removal: saved first, then named in the member list by
    /// the returned entry (the caller sends it, and the key goes with it to every member). Its
    /// id, or `None` if it could not be saved (nothing is sealed under a key that could be lost).
    pub(super) fn new_key(&self) -> Option<(u64, Signed)> {
        let me = *self.id.as_bytes();
        if !lock(&self.members).is_member(&me) {
            return None;
        }
        let key = FolderKey::generate();
        let id = Crypto::new(&key).key_id();
        {
            let mut keys = lock(&self.folder_keys);
            keys.add_later(key.clone());
            if let Err(e) = folder_keys::write(&self.state.key(), &keys) {
                tracing::error!(
                    "cannot save the new folder key; new files stay under the old key: {e:#}"
                );
                keys.later.pop();
                return None;
            }
        }
        self.fs.store().add_key(&key);
        let made = {
            let mut log = lock(&self.members);
            let made = self.sign_entry(&mut log, Op::Rekey { key_id: id });
            if let Err(e) = self.save_members(&log) {
                tracing::error!("cannot save the member list: {e:#}");
            }
            made
        };
        let made = made?;
        tracing::warn!(
            key = %format!("{id:016x}"),
            "a member was removed: the folder has a new key, given only to the remaining members"
        );
        Some((id, made))
    }

    /// The later keys to send `peer` with member entries: all of them when the list names it
    /// a member, none otherwise.
    pub(super) fn keys_for(&self, peer: &DeviceId) -> Vec<[u8; 32]> {
        if lock(&self.members).is_member(peer.as_bytes()) {
            lock(&self.folder_keys).later_bytes()
        } else {
            Vec::new()
        }
    }

    /// Takes later keys `from` sent (only from a member); true when one was new here. A new
    /// key is saved in `folder.key` and opens the chunks sealed under it at once.
    pub(super) fn take_keys(&self, from: DeviceId, keys: Vec<[u8; 32]>) -> bool {
        if keys.is_empty() {
            return false;
        }
        if !lock(&self.members).is_member(from.as_bytes()) {
            tracing::warn!(peer = %from.abbrev(), "folder keys from a device that is not a member: ignored");
            return false;
        }
        let fresh: Vec<FolderKey> = {
            let mut held = lock(&self.folder_keys);
            let room = MAX_KEYS.saturating_sub(held.later.len());
            let fresh: Vec<FolderKey> = keys
                .into_iter()
                .map(FolderKey::from_bytes)
                .filter(|k| held.add_later(k.clone()))
                .take(room)
                .collect();
            if !fresh.is_empty() {
                if let Err(e) = folder_keys::write(&self.state.key(), &held) {
                    // Still used now; members send them again at the next connection.
                    tracing::error!("cannot save folder keys from {}: {e:#}", from.abbrev());
                }
            }
            fresh
        };
        let store = self.fs.store();
        for k in &fresh {
            store.add_key(k);
        }
        if !fresh.is_empty() {
            tracing::info!(peer = %from.abbrev(), keys = fresh.len(), "received the folder's newer keys");
        }
        !fresh.is_empty()
    }
}
