//! The daemon's side of on-demand devices: the evictor thread, and `pin`, `unpin`, `free`,
//! `ls` and `status`'s `storage` section. The rules live in the store (`fybrk_store`'s
//! `evict`) and the fetching in the replication sessions (`fybrk_net::sync::demand`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use fybrk_control::{FreeReply, LsEntry, LsReply, PinReply, StorageStatus, UnreadableFile};
use fybrk_fs::Fs;
use fybrk_store::{ChunkId, FileRecord, Kind, Store};

/// How long the evictor sleeps when nothing wakes it (it is woken as soon as the chunks held
/// pass the budget; this only bounds how late it notices anything else, such as the store
/// swapped by joining a folder).
const EVICT_IDLE: Duration = Duration::from_millis(500);

/// How soon the evictor looks again when nothing could go (open, pinned or only here).
const STUCK_RETRY: Duration = Duration::from_millis(50);

/// Chunks asked for ahead of the one `pin` waits for.
const PIN_WINDOW: usize = 64;

/// `status` is asked every second by `status --watch`; the byte counts need a walk over every
/// file, so they are reused for this long.
const LOCALITY_TTL: Duration = Duration::from_secs(10);

/// Keeps the store within its budget for as long as the daemon runs: evicts whenever the
/// store says it is over (it wakes this thread at once), not on a timer that lets it overshoot.
pub fn evict_forever(fs: &Fs) {
    let mut warned = false;
    loop {
        let store = fs.store();
        match store.evict() {
            Ok(r) if r.evicted_chunks == 0 && (r.kept_only_here > 0 || r.kept_pinned > 0) => {
                // Over the budget with nothing that may go now: what is left is open, pinned,
                // or only here. Look again soon (a file closes, a peer confirms), not in a spin.
                if r.kept_only_here > 0 && !warned {
                    tracing::info!(
                        kept = r.kept_only_here,
                        "over the cache budget, but the content left is only on this device; it is kept until another device has it"
                    );
                    warned = true;
                }
                std::thread::sleep(STUCK_RETRY);
                continue;
            }
            Ok(r) => warned &= r.evicted_chunks == 0,
            Err(e) => {
                tracing::warn!(error = %e, "eviction failed");
                std::thread::sleep(EVICT_IDLE);
            }
        }
        // Short: joining a folder swaps the store, whose budget this waits on.
        store.wait_over_budget(EVICT_IDLE);
    }
}

/// How long a full device waits before it tries again to fetch content it lacks (no connected
/// device had it).
const FILL_RETRY: Duration = Duration::from_secs(30);

/// A full device that holds records without their content (it was on-demand before, or
/// evicted with `free`) fetches all of it, in the background, until nothing is missing: a
/// full device keeps everything. Runs until done; each round that could not finish waits for
/// devices to connect.
pub fn fill_forever(fs: &Fs) {
    loop {
        let store = fs.store();
        match store.may_lack_content() {
            Ok(false) => return,
            Ok(true) if store.on_demand() => return,
            Ok(true) => {}
            Err(e) => tracing::warn!(error = %e, "cannot tell whether content is missing"),
        }
        let absent = match store.absent_chunks("") {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list content this device lacks");
                std::thread::sleep(FILL_RETRY);
                continue;
            }
        };
        if absent.is_empty() {
            if let Err(e) = store.holds_everything() {
                tracing::warn!(error = %e, "cannot record that every file's content is here");
            }
            return;
        }
        tracing::info!(
            chunks = absent.len(),
            "this device keeps every file's content now; fetching what it lacks"
        );
        let op = crate::operations::start("fill");
        let (fetched, missing) = fetch_all(&store, &absent, &op);
        drop(op);
        if missing == 0 {
            tracing::info!(chunks = fetched, "every file's content is on this device");
            continue;
        }
        tracing::info!(
            fetched,
            missing,
            "some content could not be fetched yet; trying again later"
        );
        std::thread::sleep(FILL_RETRY);
    }
}

/// Fetches `ids` with a window of prefetches ahead; returns how many were fetched and missed.
fn fetch_all(store: &Store, ids: &[ChunkId], op: &crate::operations::Operation) -> (u64, u64) {
    let (mut fetched, mut missing) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        if i % PIN_WINDOW == 0 {
            let ahead = &ids[i..(i + 2 * PIN_WINDOW).min(ids.len())];
            if let Err(e) = store.prefetch(ahead) {
                tracing::debug!(error = %e, "prefetch failed");
            }
        }
        match store.fetch(id) {
            Ok(()) => fetched += 1,
            Err(e) => {
                tracing::debug!(chunk = %id, error = %e, "cannot fetch a chunk now");
                missing += 1;
            }
        }
        op.set(i as u64 + 1, ids.len() as u64);
    }
    (fetched, missing)
}

/// A path as the user gave it, relative to the folder: `""`, `"docs"`, `"docs/a.txt"`.
fn folder_path(store: &Store, p: &str) -> Result<String> {
    let p = p.trim_matches('/');
    if p.split('/').any(|c| c == "." || c == "..") {
        bail!("{p:?}: use a path inside the folder, without . or ..");
    }
    if !p.is_empty() && store.get(p)?.filter(FileRecord::is_live).is_none() {
        bail!("{p}: no such file or directory in the folder");
    }
    Ok(p.to_string())
}

/// `pin`: keeps `paths` here and fetches what they lack, counting progress in `status`.
pub fn pin(store: &Store, paths: &[String]) -> Result<PinReply> {
    let mut reply = PinReply::default();
    let mut wanted: Vec<ChunkId> = Vec::new();
    for p in paths {
        let p = folder_path(store, p)?;
        store.set_pinned(&p, true)?;
        wanted.extend(store.absent_chunks(&p)?);
    }
    wanted.sort_by_key(|c| c.0);
    wanted.dedup();
    let op = crate::operations::start("pin");
    let (fetched, missing) = fetch_all(store, &wanted, &op);
    reply.fetched_chunks = fetched;
    reply.missing_chunks = missing;
    for id in &wanted {
        reply.fetched_bytes += store.chunk_len(id)?.unwrap_or(0);
    }
    reply.pinned = store.pinned_paths()?;
    Ok(reply)
}

/// `unpin`.
pub fn unpin(store: &Store, paths: &[String]) -> Result<PinReply> {
    for p in paths {
        store.set_pinned(p.trim_matches('/'), false)?;
    }
    Ok(PinReply {
        pinned: store.pinned_paths()?,
        ..PinReply::default()
    })
}

/// `free`: on-demand devices only (a full device would fetch it all back).
pub fn free(store: &Store, paths: &[String]) -> Result<FreeReply> {
    if !store.on_demand() {
        bail!("this device keeps every file (a full device); mount it with --on-demand to free content");
    }
    let paths = paths
        .iter()
        .map(|p| folder_path(store, p))
        .collect::<Result<Vec<_>>>()?;
    let r = store.free(&paths)?;
    Ok(FreeReply {
        freed_bytes: r.evicted_bytes,
        freed_chunks: r.evicted_chunks,
        kept_only_here: r.kept_only_here,
        kept_pinned: r.kept_pinned,
    })
}

/// `ls`: a directory's entries (or one file) with where their content is.
pub fn ls(store: &Store, path: &str) -> Result<LsReply> {
    let path = folder_path(store, path)?;
    let records = match store.get(&path)?.filter(FileRecord::is_live) {
        Some(r) if r.kind != Kind::Dir => vec![r],
        _ => store.list_dir(&path)?,
    };
    let pinned = store.pinned_paths()?;
    let mut entries = Vec::with_capacity(records.len());
    for r in records {
        let l = store.locality(&r)?;
        let state = if l.local_bytes == l.total_bytes {
            "local"
        } else if l.local_bytes == 0 {
            "remote"
        } else {
            "partial"
        };
        entries.push(LsEntry {
            kind: match r.kind {
                Kind::File => "file",
                Kind::Dir => "dir",
                Kind::Symlink => "symlink",
            }
            .into(),
            size: if r.kind == Kind::File { r.size } else { 0 },
            local_bytes: l.local_bytes,
            state: state.into(),
            pinned: pinned
                .iter()
                .any(|p| fybrk_store::record::is_under(&r.path, p)),
            path: r.path,
        });
    }
    Ok(LsReply { entries })
}

/// Bytes of content held here, of all content, and under pinned paths, with when counted.
static LOCALITY: Mutex<Option<(Instant, [u64; 3])>> = Mutex::new(None);

/// `status`'s `storage` section.
pub fn status(fs: &Fs) -> Result<StorageStatus> {
    let store = fs.store();
    let pinned = store.pinned_paths()?;
    let [local_bytes, total_bytes, pinned_bytes] = {
        let mut cached = LOCALITY.lock().unwrap_or_else(|p| p.into_inner());
        match *cached {
            Some((at, v)) if at.elapsed() < LOCALITY_TTL => v,
            _ => {
                let v = count(&store, &pinned)?;
                *cached = Some((Instant::now(), v));
                v
            }
        }
    };
    let usage = store.cache_usage();
    Ok(StorageStatus {
        mode: if store.on_demand() {
            "on_demand"
        } else {
            "full"
        }
        .into(),
        local_bytes,
        total_bytes,
        cache_budget: usage.map(|(_, b)| b),
        cache_used: usage.map(|(u, _)| u),
        pinned,
        pinned_bytes,
        unreadable: fs
            .unreadable()
            .into_iter()
            .map(|u| UnreadableFile {
                path: u.path,
                at_ns: u.at_ns,
                reason: u.why,
            })
            .collect(),
    })
}

/// Local, total and pinned content bytes over every live file.
fn count(store: &Store, pinned: &[String]) -> Result<[u64; 3]> {
    let mut out = [0u64; 3];
    for r in store.files_under("")? {
        let l = store.locality(&r)?;
        out[0] += l.local_bytes;
        out[1] += l.total_bytes;
        if pinned
            .iter()
            .any(|p| fybrk_store::record::is_under(&r.path, p))
        {
            out[2] += l.total_bytes;
        }
    }
    Ok(out)
}
