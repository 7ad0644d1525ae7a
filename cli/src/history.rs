//! The daemon's history commands: `gc` with retention, `log` and `restore`, as typed replies
//! built from the store's history (`fybrk_store::history`).

use anyhow::{Context, Result};
use fybrk_control::{GcReply, Log, LogEntry, LogReply, Restore, RestoreReply};
use fybrk_store::history::{now_ns, Event, Retention, Version};
use fybrk_store::naming::device_tag;
use fybrk_store::{Kind, Store};

/// At most this many paths are listed in a restore's reply (the counts are always complete).
const LISTED: usize = 1000;

/// Applies retention, then frees the chunks nothing references any more.
pub fn collect(store: &Store, retention: &Retention) -> Result<GcReply> {
    let thin = store
        .apply_retention(retention, now_ns())
        .context("applying history retention")?;
    let gc = store.gc()?;
    Ok(GcReply {
        freed_chunks: gc.freed_chunks,
        freed_bytes: gc.freed_bytes,
        pinned: gc.pinned,
        versions_dropped: thin.dropped,
        history_bytes: thin.history_bytes,
    })
}

fn entry(store: &Store, v: &Version) -> LogEntry {
    let (renamed_from, renamed_to) = match &v.event {
        Event::RenameFrom(p) => (Some(p.clone()), None),
        Event::RenameTo(p) => (None, Some(p.clone())),
        _ => (None, None),
    };
    LogEntry {
        id: v.id(),
        path: v.record.path.clone(),
        time_ns: v.since_ns,
        device: (v.origin != 0).then(|| device_tag(v.origin)),
        this_device: v.origin == store.device(),
        event: v.event.word().to_string(),
        renamed_from,
        renamed_to,
        kind: match v.record.kind {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
        }
        .to_string(),
        size: if v.record.deleted { 0 } else { v.record.size },
        deleted: v.record.deleted,
    }
}

/// `log`: the versions of `req.path`, and for a directory (now or ever) of everything under it,
/// newest first.
pub fn log(store: &Store, req: &Log) -> Result<LogReply> {
    let mut versions = Vec::new();
    for path in store.history_paths_under(&req.path)? {
        versions.extend(store.versions(&path)?);
    }
    if !req.path.is_empty() && versions.is_empty() {
        anyhow::bail!(
            "{:?} has no history here: it never existed on this device, or retention dropped it",
            req.path
        );
    }
    versions.sort_by_key(|v| std::cmp::Reverse((v.since_ns, v.id())));
    if let Some(limit) = req.limit {
        versions.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(LogReply {
        path: req.path.clone(),
        versions: versions.iter().map(|v| entry(store, v)).collect(),
    })
}

/// `restore`: plans and commits in one step (the commit is atomic, so a restore of a tree
/// lands whole or not at all).
pub fn restore(store: &Store, req: &Restore) -> Result<RestoreReply> {
    let plan = match (req.at_ns, req.version) {
        (Some(at), None) => store.plan_restore_at(&req.path, at, req.to.as_deref())?,
        (None, Some(id)) => store.plan_restore_version(&req.path, id, req.to.as_deref())?,
        _ => anyhow::bail!("a restore needs exactly one of --at TIME and --version ID"),
    };
    let mut reply = RestoreReply::default();
    for r in &plan {
        if r.deleted {
            reply.deleted += 1;
        } else {
            reply.restored += 1;
            reply.bytes += r.size;
        }
        if reply.paths.len() < LISTED {
            reply.paths.push(r.path.clone());
        }
    }
    if !plan.is_empty() {
        store.commit_restore(plan)?;
    }
    Ok(reply)
}

/// `path` (absolute, or relative to the current directory; it need not exist) as a path inside
/// the folder the daemon behind `client` has mounted: `/`-separated, no leading slash, "" for
/// the root. Resolved without following the last components (they may be deleted): the
/// current directory is canonical, `.` and `..` are applied by hand. `/` alone means the
/// folder's root.
pub fn folder_path(client: &fybrk_control::Client, path: &std::path::Path) -> Result<String> {
    use std::path::Component;
    // `/` alone is the whole folder (`fybrk restore / --at 2h`), as the README promises.
    if path == std::path::Path::new("/") {
        return Ok(String::new());
    }
    let status = client.call(fybrk_control::Status, None)?;
    let mount = std::fs::canonicalize(&status.mount_point).unwrap_or(status.mount_point);
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .and_then(std::fs::canonicalize)
            .context("reading the current directory")?
            .join(path)
    };
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for c in full.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => parts.clear(),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(p) => parts.push(p),
        }
    }
    let normal: std::path::PathBuf = std::iter::once(std::ffi::OsStr::new("/"))
        .chain(parts)
        .collect();
    let inside = normal.strip_prefix(&mount).map_err(|_| {
        anyhow::anyhow!(
            "{} is not inside the folder mounted at {}",
            path.display(),
            mount.display()
        )
    })?;
    let s = inside
        .to_str()
        .with_context(|| format!("{} is not valid UTF-8", inside.display()))?;
    if s.split('/').any(|c| c == ".fybrk") {
        anyhow::bail!(
            "{} is inside the time-travel tree, not the folder",
            path.display()
        );
    }
    Ok(s.to_string())
}
