//! The CLI side of `pin`, `unpin`, `free` and `ls`: paths resolved against the mount, the
//! daemon asked, the answer printed (or its JSON, the types in `fybrk_control::storage`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use fybrk_control::Client;

use crate::human::human_bytes;
use crate::state::StateDir;

/// Folder paths of `paths` (see [`crate::history::folder_path`]).
fn folder_paths(client: &Client, paths: &[PathBuf]) -> Result<Vec<String>> {
    paths
        .iter()
        .map(|p| crate::history::folder_path(client, p))
        .collect()
}

/// `"docs"`, or `the whole folder` for `""`.
fn shown(p: &str) -> String {
    if p.is_empty() {
        "the whole folder".into()
    } else {
        p.into()
    }
}

/// `fybrk pin`.
pub fn pin(state: &StateDir, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let client = Client::new(state.socket());
    let paths = folder_paths(&client, paths)?;
    let r = crate::progress::with_progress(state, "pin", || {
        client.call(
            fybrk_control::Pin { paths },
            Some(Duration::from_secs(24 * 3600)),
        )
    })?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "pinned: {}; fetched {} ({} chunks)",
            r.pinned
                .iter()
                .map(|p| shown(p))
                .collect::<Vec<_>>()
                .join(", "),
            human_bytes(r.fetched_bytes),
            r.fetched_chunks
        );
        if r.missing_chunks > 0 {
            println!(
                "{} chunks could not be fetched now (no connected device has them); they are fetched when a device that has them connects, or run `fybrk pin` again",
                r.missing_chunks
            );
        }
    }
    Ok(if r.missing_chunks > 0 {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// `fybrk unpin`.
pub fn unpin(state: &StateDir, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let client = Client::new(state.socket());
    let paths = folder_paths(&client, paths)?;
    let r = client.call(fybrk_control::Unpin { paths }, None)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
    } else if r.pinned.is_empty() {
        println!("nothing is pinned now");
    } else {
        let list: Vec<String> = r.pinned.iter().map(|p| shown(p)).collect();
        println!("still pinned: {}", list.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk free`.
pub fn free(state: &StateDir, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let client = Client::new(state.socket());
    let paths = folder_paths(&client, paths)?;
    let r = client.call(
        fybrk_control::Free { paths },
        Some(Duration::from_secs(3600)),
    )?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "freed {} ({} chunks)",
        human_bytes(r.freed_bytes),
        r.freed_chunks
    );
    if r.kept_only_here > 0 {
        println!(
            "kept {} chunks no other device has yet (they go once one does)",
            r.kept_only_here
        );
    }
    if r.kept_pinned > 0 {
        println!("kept {} chunks of open or pinned files", r.kept_pinned);
    }
    Ok(ExitCode::SUCCESS)
}

/// `fybrk ls`.
pub fn ls(state: &StateDir, path: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let client = Client::new(state.socket());
    let path = crate::history::folder_path(&client, path.as_deref().unwrap_or(Path::new(".")))?;
    let r = client.call(fybrk_control::Ls { path }, None)?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &r.entries {
        let name = e.path.rsplit('/').next().unwrap_or(&e.path);
        let suffix = if e.kind == "dir" { "/" } else { "" };
        let pin = if e.pinned { " pinned" } else { "" };
        if e.kind == "file" {
            println!(
                "{:<8}{:>10}  {name}{suffix}{pin}",
                e.state,
                human_bytes(e.size)
            );
        } else {
            println!("{:<8}{:>10}  {name}{suffix}{pin}", "", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}
