//! Moving this device into a joined folder: the records of the current store are copied into
//! a store of the new folder, the filesystem switches to it, and the switch is made durable
//! (or finished at the next start after a crash).

use anyhow::{bail, Context, Result};
use fybrk_fs::FsError;
use fybrk_store::{Kind, Store, StoreOptions};

use super::{commit_watcher, lock, Shared};
use crate::state::StateDir;
use fybrk_store::keyfile::{self as folder_keys, FolderKeys};

/// Chunks copied into a new store before they are written out, when joining a folder.
const ADOPT_FLUSH_CHUNKS: usize = 64;

impl Shared {
    /// Moves this device into the folder `keys` open: copies every record of the current
    /// store into a new store of that folder, switches the filesystem to it, and makes the
    /// switch durable. Blocking (it copies file contents).
    pub(super) fn adopt_folder(&self, keys: FolderKeys) -> Result<()> {
        let _one = lock(&self.joining);
        let old = self.fs.store();
        if old.folder_id() == keys.folder_id {
            return Ok(());
        }
        // From here a crash is finished at the next start (see `finish_join`).
        folder_keys::write(&self.state.joining_key(), &keys)?;
        let budget = old.cache_usage().map(|(_, budget)| budget);
        let new = open_store(&self.state, &keys, old.device(), budget)?;
        new.set_remote(Some(self.demands.clone()));
        new.on_fresh_chunks(Some(self.fresh.hook()));
        new.on_commit(commit_watcher(
            self.local_seq.clone(),
            self.invalidate.clone(),
            self.mass.clone(),
        ));
        let op = crate::operations::start("join");
        let mut copied_to = 0;
        loop {
            let target = old.sequence();
            copy_records(&old, &new, copied_to, &|done, total| op.set(done, total))?;
            copied_to = target;
            match self
                .fs
                .replace_store(new.clone(), |cur| cur.sequence() == target)
            {
                Ok(Some(_)) => break,
                // Written to meanwhile: copy what changed, try again.
                Ok(None) => continue,
                Err(FsError::Busy) => bail!(
                    "files in the folder are open; close them (and any shell inside the folder \
                     is fine) and run `fybrk pair-with` again"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        new.sync()?;
        folder_keys::write(&self.state.key(), &keys)?;
        std::fs::remove_file(self.state.joining_key())?;
        *lock(&self.folder_keys) = keys;
        lock(&self.book).reset_progress();
        self.local_seq.send_replace(new.sequence());
        let old_dir = self.state.db_for(old.folder_id());
        drop(old);
        // Other threads may hold the old store for a moment (a status call); unlinked files
        // stay readable to them.
        if let Err(e) = std::fs::remove_dir_all(&old_dir) {
            tracing::warn!(dir = %old_dir.display(), error = %e, "cannot remove the old store");
        }
        tracing::info!("now syncing the joined folder");
        Ok(())
    }
}

/// Opens (creating) the store of the folder `keys` open in `state`; `cache_budget` as in
/// [`StoreOptions`].
pub fn open_store(
    state: &StateDir,
    keys: &FolderKeys,
    device: u64,
    cache_budget: Option<u64>,
) -> Result<Store> {
    let dir = state.db(keys);
    keys.open_store(
        &dir,
        StoreOptions {
            device: Some(device),
            cache_budget,
            ..StoreOptions::default()
        },
    )
    .with_context(|| format!("cannot open the store in {}", dir.display()))
}

/// Copies every change of `from` after sequence `since` into `to` as local changes: file
/// contents are re-encrypted chunk by chunk (same boundaries, the new folder's ids).
/// `progress` hears the records copied so far and how many there are.
pub fn copy_records(
    from: &Store,
    to: &Store,
    since: u64,
    progress: &dyn Fn(u64, u64),
) -> Result<()> {
    let changes = from.changes_since(since)?;
    let total = changes.len() as u64;
    for (n, r) in changes.into_iter().enumerate() {
        progress(n as u64, total);
        let exists = to.get(&r.path)?.is_some_and(|t| t.is_live());
        if !r.is_live() {
            if exists {
                let mut gone = r.clone();
                gone.version = Default::default();
                to.commit(vec![gone], None, false)?;
            }
            continue;
        }
        let mut rec = r.clone();
        rec.version = Default::default();
        if r.kind != Kind::File {
            to.commit(vec![rec], None, false)?;
            continue;
        }
        let mut writer = to.writer();
        rec.chunks.clear();
        for (i, c) in r.chunks.iter().enumerate() {
            // A hole has no content to copy: it stays a hole of the same length.
            if c.is_hole() {
                rec.chunks.push(*c);
                continue;
            }
            let data = from.read_chunk(&c.id)?;
            rec.chunks.push(writer.add(&data)?);
            if i % ADOPT_FLUSH_CHUNKS == ADOPT_FLUSH_CHUNKS - 1 {
                writer.flush()?;
            }
        }
        to.commit(vec![rec], Some(&mut writer), false)?;
    }
    Ok(())
}

/// Finishes a join a crash interrupted: `folder.key.join` exists, so the folder switch was not
/// made durable. Copies the old folder's records into the new store again (copying is
/// idempotent) and switches.
pub fn finish_join(state: &StateDir, device: u64) -> Result<()> {
    let Some(new_keys) = folder_keys::read(&state.joining_key())? else {
        return Ok(());
    };
    tracing::warn!("finishing an interrupted join");
    let new = open_store(state, &new_keys, device, None)?;
    if let Some(old_keys) = folder_keys::read(&state.key())? {
        let old_dir = state.db(&old_keys);
        if old_dir.exists() && old_dir != state.db(&new_keys) {
            let old = open_store(state, &old_keys, device, None)?;
            copy_records(&old, &new, 0, &|_, _| {})?;
            drop(old);
            new.sync()?;
            folder_keys::write(&state.key(), &new_keys)?;
            std::fs::remove_dir_all(&old_dir)?;
        }
    }
    folder_keys::write(&state.key(), &new_keys)?;
    std::fs::remove_file(state.joining_key())?;
    Ok(())
}
