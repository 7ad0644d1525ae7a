//! What survives an unmount: every file's bytes and metadata, nothing in plaintext on disk, and
//! identical content stored once.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use fybrk_tests::{chmod, diff_trees, set_mtime, snapshot, write_file, Compare, Gen, Mount};

const MIB: u64 = 1024 * 1024;

/// Builds the same small but varied tree under `root` (the mount, or a native dir as reference).
fn build_tree(root: &Path) -> std::io::Result<()> {
    let mut g = Gen::new(42);
    for d in ["docs", "docs/deep/er", "empty-dir", "media", "modes"] {
        fs::create_dir_all(root.join(d))?;
    }
    let files: [(&str, Vec<u8>); 7] = [
        ("docs/a.txt", b"plain text\n".to_vec()),
        ("docs/x", g.bytes(4095)),
        ("docs/deep/er/b.bin", g.bytes(300 * 1024)),
        ("media/big.bin", g.bytes(5 * MIB as usize + 3)),
        ("zero-len", Vec::new()),
        ("modes/exec", b"#!/bin/sh\necho hi\n".to_vec()),
        ("modes/private", b"secret-ish".to_vec()),
    ];
    for (rel, data) in &files {
        write_file(&root.join(rel), data)?;
    }
    chmod(&root.join("modes/exec"), 0o755)?;
    chmod(&root.join("modes/private"), 0o600)?;
    chmod(&root.join("docs/x"), 0o444)?;
    std::os::unix::fs::symlink("docs/a.txt", root.join("link-rel"))?;
    std::os::unix::fs::symlink("../media/big.bin", root.join("docs/link-up"))?;
    std::os::unix::fs::symlink("nowhere/at/all", root.join("dangling"))?;
    // mtimes last, children before parents: creating entries changes a directory's mtime.
    let mut t = 1_500_000_000i64;
    for (rel, _) in &files {
        set_mtime(&root.join(rel), t, 0)?;
        t += 1111;
    }
    chmod(&root.join("empty-dir"), 0o700)?;
    for d in [
        "docs/deep/er",
        "docs/deep",
        "docs",
        "empty-dir",
        "media",
        "modes",
    ] {
        set_mtime(&root.join(d), t, 0)?;
        t += 777;
    }
    Ok(())
}

#[test]
fn remount_keeps_bytes_modes_mtimes_symlinks_and_dirs() {
    let Some(mut m) = Mount::start() else { return };
    let reference = m.root().join("reference");
    fs::create_dir(&reference).unwrap();
    build_tree(&reference).expect("build the reference tree on the native disk");
    m.ok(build_tree(&m.mnt), "build the tree in the mount");
    let want = snapshot(&reference).unwrap();
    let all = Compare {
        file_mtime: true,
        dir_mtime: true,
    };

    let before = m.ok(snapshot(&m.mnt), "snapshot before unmount");
    if let Some(d) = diff_trees(&want, &before, all) {
        m.fail(&format!(
            "the mount differs from the reference before any unmount: {d}"
        ));
    }

    m.unmount();
    // verify without a daemon.
    m.assert_verify_ok();
    m.mount();
    let after = m.ok(snapshot(&m.mnt), "snapshot after remount");
    if let Some(d) = diff_trees(&want, &after, all) {
        m.fail(&format!("after unmount + remount: {d}"));
    }
    // verify with the daemon running.
    m.assert_verify_ok();

    // A second cycle after more changes (the store is reopened, not recreated).
    m.ok(fs::remove_file(m.path("docs/a.txt")), "unlink");
    m.ok(fs::rename(m.path("media"), m.path("media2")), "rename dir");
    m.ok(write_file(&m.path("media2/new"), b"new file"), "write");
    let before = m.ok(snapshot(&m.mnt), "snapshot");
    m.remount();
    let after = m.ok(snapshot(&m.mnt), "snapshot");
    let files_only = Compare {
        file_mtime: true,
        dir_mtime: false,
    };
    if let Some(d) = diff_trees(&before, &after, files_only) {
        m.fail(&format!("second remount: {d}"));
    }
    m.assert_verify_ok();
}

/// 1 MiB+ of text made of unique, recognisable lines.
fn marker_text() -> Vec<u8> {
    let mut g = Gen::new(7);
    let mut out = Vec::with_capacity(MIB as usize + 128);
    let mut i = 0u64;
    while (out.len() as u64) < MIB {
        writeln!(
            out,
            "fybrk-marker line {i:07} {:016x} {:016x} plaintext must never hit the disk",
            g.next_u64(),
            g.next_u64()
        )
        .unwrap();
        i += 1;
    }
    out
}

const WINDOW: usize = 32;
const BASE: u64 = 0x100_0000_01b3;

/// Polynomial hashes of every `WINDOW`-byte window of `text` -> one position with that hash.
fn window_index(text: &[u8]) -> HashMap<u64, usize> {
    let pow = (0..WINDOW - 1).fold(1u64, |p, _| p.wrapping_mul(BASE));
    let mut idx = HashMap::with_capacity(text.len());
    let mut h = 0u64;
    for (i, &b) in text.iter().enumerate() {
        if i >= WINDOW {
            h = h.wrapping_sub((text[i - WINDOW] as u64).wrapping_mul(pow));
        }
        h = h.wrapping_mul(BASE).wrapping_add(b as u64);
        if i + 1 >= WINDOW {
            idx.entry(h).or_insert(i + 1 - WINDOW);
        }
    }
    idx
}

/// First offset in `hay` where some `WINDOW`-byte window of `text` occurs, if any.
fn find_any_window(hay: &[u8], text: &[u8], idx: &HashMap<u64, usize>) -> Option<(usize, usize)> {
    let pow = (0..WINDOW - 1).fold(1u64, |p, _| p.wrapping_mul(BASE));
    let mut h = 0u64;
    for (i, &b) in hay.iter().enumerate() {
        if i >= WINDOW {
            h = h.wrapping_sub((hay[i - WINDOW] as u64).wrapping_mul(pow));
        }
        h = h.wrapping_mul(BASE).wrapping_add(b as u64);
        if i + 1 >= WINDOW {
            if let Some(&pos) = idx.get(&h) {
                let at = i + 1 - WINDOW;
                if hay[at..at + WINDOW] == text[pos..pos + WINDOW] {
                    return Some((at, pos));
                }
            }
        }
    }
    None
}

fn files_below(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            files_below(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

#[test]
fn no_plaintext_reaches_the_store() {
    let Some(mut m) = Mount::start() else { return };
    let text = marker_text();
    let idx = window_index(&text);

    // The scanner itself must find a planted copy, or a pass below proves nothing.
    let mut planted = Gen::new(9).bytes(100_000);
    planted.extend_from_slice(&text[500_000..500_000 + 40]);
    planted.extend_from_slice(&Gen::new(10).bytes(1000));
    assert!(
        find_any_window(&planted, &text, &idx).is_some(),
        "scanner self-test failed"
    );

    let stored0 = m.status_json().stored_bytes;
    m.ok(
        fybrk_tests::write_file_synced(&m.path("secret.txt"), &text),
        "write secret.txt",
    );
    let st = m.wait_status("secret.txt stored", |v| v.files == 1);
    let stored1 = st.stored_bytes;
    m.check(stored1 >= stored0 + text.len() as u64, || {
        format!(
            "stored_bytes grew by {} for a {}-byte file: was it stored at all? status: {st:?}",
            stored1.saturating_sub(stored0),
            text.len()
        )
    });
    m.check(
        m.ok(fs::read(m.path("secret.txt")), "read back") == text,
        || "read back differs".into(),
    );

    m.unmount();
    let mut files = Vec::new();
    files_below(&m.state, &mut files);
    m.check(
        files
            .iter()
            .any(|f| f.starts_with(fybrk_tests::store_dir(&m.state))),
        || format!("no files under the store dir STATE/db-*: {files:?}"),
    );
    let mut scanned = 0u64;
    for f in &files {
        let bytes = fs::read(f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
        scanned += bytes.len() as u64;
        if let Some((at, pos)) = find_any_window(&bytes, &text, &idx) {
            let shown =
                String::from_utf8_lossy(&bytes[at..(at + 64).min(bytes.len())]).into_owned();
            m.fail(&format!(
                "plaintext found in {} at offset {at} (plaintext offset {pos}): {shown:?}",
                f.display()
            ));
        }
    }
    m.check(scanned >= text.len() as u64, || {
        format!(
            "only {scanned} bytes on disk for a {}-byte file",
            text.len()
        )
    });
    // The data is still there after all that.
    m.mount();
    m.check(
        m.ok(fs::read(m.path("secret.txt")), "read after remount") == text,
        || "secret.txt after remount".into(),
    );
}

#[test]
fn identical_content_is_stored_once() {
    let Some(m) = Mount::start() else { return };
    let size = 50 * MIB as usize;
    let data = Gen::new(50).bytes(size);
    // Typed: `status_json` fails if `stored_bytes` or `logical_bytes` is missing.
    let s0 = m.status_json();
    let stored0 = s0.stored_bytes;
    let logical0 = s0.logical_bytes;

    m.ok(
        fybrk_tests::write_file_synced(&m.path("a.bin"), &data),
        "write a.bin",
    );
    let s1 = m.wait_status("a.bin counted", |v| {
        v.logical_bytes >= logical0 + size as u64
    });
    let stored1 = s1.stored_bytes;

    m.ok(fs::create_dir(m.path("copy")), "mkdir");
    m.ok(
        fybrk_tests::write_file_synced(&m.path("copy/b.bin"), &data),
        "write copy/b.bin",
    );
    let s2 = m.wait_status("b.bin counted", |v| {
        v.logical_bytes >= logical0 + 2 * size as u64
    });
    let stored2 = s2.stored_bytes;

    let growth = stored2.saturating_sub(stored0);
    let second = stored2.saturating_sub(stored1);
    m.check(growth >= 45 * MIB, || {
        format!("stored_bytes grew by only {growth} for 50 MiB of random data; status {s2:?}")
    });
    m.check(growth < 60 * MIB, || {
        format!("stored_bytes grew by {growth} (>= 60 MiB) for two copies of 50 MiB; status {s2:?}")
    });
    m.check(second < 5 * MIB, || {
        format!("the second copy added {second} stored bytes; status {s2:?}")
    });
    let ratio = s2.dedup_ratio;
    m.check(ratio >= 1.8, || {
        format!("dedup_ratio {ratio} < 1.8; status {s2:?}")
    });
    m.check(s2.files == 2, || format!("files != 2: {s2:?}"));

    for p in ["a.bin", "copy/b.bin"] {
        let back = m.ok(fs::read(m.path(p)), format!("read {p}"));
        m.check(back == data, || {
            format!("{p}: {:?}", fybrk_tests::diff_bytes(&data, &back))
        });
    }
    m.assert_verify_ok();
}
