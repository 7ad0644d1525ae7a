//! The page fill's wiring through `Fs`, without a mount: which reads offer their chunks, and
//! that every way a file's content changes refuses the pushes of what was read before it.

use std::ffi::OsStr;
use std::sync::mpsc::Receiver;

use crate::fill::Job;
use crate::fs::{Fs, OpenMode, SetAttr};
use crate::travel_tests::{fs_in, RW};
use crate::ROOT;

const SIZE: usize = 1 << 20;

/// `f` with SIZE bytes of a pattern no chunk repeats; returns its inode and content.
fn written(fs: &Fs) -> (u64, Vec<u8>) {
    let data: Vec<u8> = (0..SIZE as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 29) as u8)
        .collect();
    let (a, fh) = fs.create(ROOT, OsStr::new("f"), 0o644, RW).unwrap();
    fs.write(fh, 0, &data).unwrap();
    fs.release(fh).unwrap();
    (a.ino, data)
}

/// A 4 KiB read at `at` through a new read-only handle, its first read (random unless at 0).
fn read_at(fs: &Fs, ino: u64, at: u64) {
    let fh = fs.open(ino, OpenMode::default()).unwrap();
    assert!(!fs.read(fh, at, 4096).unwrap().is_empty());
    fs.release(fh).unwrap();
}

/// Whether the pusher would push `job` now.
fn pushes(fs: &Fs, job: &Job) -> bool {
    let mut pushed = false;
    fs.fill.push(job, |_| pushed = true);
    pushed
}

fn jobs(rx: &Receiver<Job>) -> Vec<Job> {
    rx.try_iter().collect()
}

#[test]
fn a_random_read_offers_the_whole_pages_of_its_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (ino, data) = written(&fs);
    read_at(&fs, ino, 512 << 10);
    assert!(
        jobs(&fs.fill.start()).is_empty(),
        "nothing before a pusher runs"
    );
    let rx = fs.fill.start();
    read_at(&fs, ino, 0);
    assert!(jobs(&rx).is_empty(), "a read at the start is sequential");
    read_at(&fs, ino, 512 << 10);
    let got = jobs(&rx);
    assert_eq!(got.len(), 1, "one chunk holds the 4 KiB");
    let j = &got[0];
    let at = j.offset as usize;
    assert!(at <= 512 << 10 && 512 << 10 < at + j.len, "the chunk read");
    assert!(
        j.offset.is_multiple_of(4096) && j.len.is_multiple_of(4096),
        "whole pages"
    );
    assert!(j.len > 4096, "more than the read itself");
    assert_eq!(j.bytes(), &data[at..at + j.len]);
    assert!(pushes(&fs, j));
}

#[test]
fn every_change_refuses_what_was_read_before_it() {
    type Change = fn(&Fs, u64);
    let changes: [(&str, Change); 3] = [
        ("open for writing", |fs, ino| {
            let fh = fs.open(ino, RW).unwrap();
            fs.write(fh, 0, b"new").unwrap();
            fs.release(fh).unwrap();
        }),
        ("truncate by path", |fs, ino| {
            let set = SetAttr {
                size: Some(1000),
                ..SetAttr::default()
            };
            fs.setattr(ino, set).unwrap();
        }),
        ("a peer's change", |fs, _| {
            fs.changed_remotely(&["f".to_string()]);
        }),
    ];
    for (what, change) in changes {
        let dir = tempfile::tempdir().unwrap();
        let fs = fs_in(&dir);
        let rx = fs.fill.start();
        let (ino, _) = written(&fs);
        read_at(&fs, ino, 300 << 10);
        let before = jobs(&rx);
        assert!(!before.is_empty(), "{what}: no offer");
        change(&fs, ino);
        for j in &before {
            assert!(!pushes(&fs, j), "{what}: pushed content read before it");
        }
        // The path may have a new inode now (a peer's version does).
        let ino = fs.lookup(ROOT, OsStr::new("f")).unwrap().ino;
        read_at(&fs, ino, 500);
        let after = jobs(&rx);
        assert!(!after.is_empty(), "{what}: nothing offered after it");
        for j in &after {
            assert!(pushes(&fs, j), "{what}: a read after it is refused");
        }
    }
}

#[test]
fn nothing_is_offered_while_a_handle_writes() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let rx = fs.fill.start();
    let (ino, _) = written(&fs);
    let w = fs.open(ino, RW).unwrap();
    read_at(&fs, ino, 300 << 10);
    assert!(jobs(&rx).is_empty(), "offered while a writer is open");
    fs.release(w).unwrap();
    read_at(&fs, ino, 300 << 10);
    assert!(!jobs(&rx).is_empty(), "nothing offered once it closed");
}
