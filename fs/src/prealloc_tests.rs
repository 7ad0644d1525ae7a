//! `fallocate` and preallocated files, called without a mount: which modes and ranges are
//! taken, and that the size and content come out as a local disk gives them.

use std::ffi::OsStr;

use crate::error::FsError;
use crate::fs::{OpenMode, SetAttr};
use crate::travel_tests::{fs_in, RW};
use crate::{MAX_FILE_SIZE, ROOT};

#[test]
fn fallocate_grows_the_size_or_only_checks_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, OsStr::new("f"), 0o644, RW).unwrap();
    fs.write(fh, 0, b"head").unwrap();
    fs.fallocate(fh, 0, 3 << 20, false).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().size, 3 << 20);
    // Inside the file, or with KEEP_SIZE: nothing changes.
    fs.fallocate(fh, 10, 100, false).unwrap();
    fs.fallocate(fh, 0, 5 << 20, true).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().size, 3 << 20);
    fs.release(fh).unwrap();
    let fh = fs.open(a.ino, OpenMode::default()).unwrap();
    let got = fs.read(fh, 0, 1 << 20).unwrap();
    assert_eq!(&got[..4], b"head");
    assert!(got[4..].iter().all(|&b| b == 0));
    assert_eq!(fs.getattr(a.ino).unwrap().size, 3 << 20);
    // Read-only handle: EBADF, as fallocate(2) says.
    assert!(matches!(
        fs.fallocate(fh, 0, 1, false),
        Err(FsError::BadHandle)
    ));
    fs.release(fh).unwrap();
}

#[test]
fn fallocate_refuses_bad_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, OsStr::new("f"), 0o644, RW).unwrap();
    let bad = |off, len| fs.fallocate(fh, off, len, false).map_err(|e| e.errno());
    assert_eq!(bad(0, 0), Err(libc::EINVAL));
    assert_eq!(bad(u64::MAX, 2), Err(libc::EFBIG));
    assert_eq!(bad(MAX_FILE_SIZE, 1), Err(libc::EFBIG));
    assert_eq!(bad(MAX_FILE_SIZE - 1, 1), Ok(()));
    assert_eq!(fs.getattr(a.ino).unwrap().size, MAX_FILE_SIZE);
    fs.release(fh).unwrap();
}

/// The writes into a preallocated file, committed and read back, with a hole after them.
#[test]
fn preallocated_then_written_in_order_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, OsStr::new("f"), 0o644, RW).unwrap();
    let size = SetAttr {
        size: Some(6 << 20),
        ..SetAttr::default()
    };
    fs.setattr(a.ino, size).unwrap();
    let data: Vec<u8> = (0..(3u32 << 20) + 77).map(|i| (i % 253) as u8).collect();
    for (i, piece) in data.chunks(1 << 20).enumerate() {
        fs.write(fh, (i as u64) << 20, piece).unwrap();
    }
    fs.fsync(fh).unwrap();
    fs.release(fh).unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().size, 6 << 20);
    let fh = fs.open(a.ino, OpenMode::default()).unwrap();
    assert_eq!(fs.read(fh, 0, data.len() as u32).unwrap(), data);
    let rest = fs.read(fh, data.len() as u64, 4 << 20).unwrap();
    assert_eq!(rest.len(), (6 << 20) - data.len());
    assert!(rest.iter().all(|&b| b == 0));
    fs.release(fh).unwrap();
}
