//! `setattr` on files with writes pending, called without a mount: what `cp -a` does to every
//! file it copies (times and mode set on the open descriptor, a chown to the same owner) costs
//! no commit of its own, shows at once, and lands with the content at the close.

use std::ffi::OsStr;

use crate::fs::{OpenMode, SetAttr};
use crate::travel_tests::{fs_in, RW};
use crate::ROOT;

#[test]
fn times_and_mode_set_while_writes_are_pending_commit_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let fs = fs_in(&dir);
    let (a, fh) = fs.create(ROOT, OsStr::new("f"), 0o600, RW).unwrap();
    fs.write(fh, 0, b"copied bytes").unwrap();
    // Every commit of the record gives it a new sequence number.
    let commits = || fs.store().get("f").unwrap().unwrap().seq;
    let before = commits();
    let set = |s: SetAttr| fs.setattr(a.ino, s).unwrap();
    let t = 1_600_000_000_123_456_789;
    let got = set(SetAttr {
        mtime_ns: Some(t),
        ..SetAttr::default()
    });
    assert_eq!(got.mtime_ns, t);
    let got = set(SetAttr {
        mode: Some(0o100644),
        ..SetAttr::default()
    });
    assert_eq!(got.perm, 0o644);
    let got = set(SetAttr {
        uid: Some(0),
        gid: Some(0),
        ..SetAttr::default()
    });
    assert_eq!((got.perm, got.mtime_ns), (0o644, t), "a chown to the owner");
    assert_eq!(commits(), before, "committed before the close");
    assert_eq!(fs.getattr(a.ino).unwrap().perm, 0o644, "shown at once");
    fs.flush(fh).unwrap();
    fs.release(fh).unwrap();
    let r = fs.store().get("f").unwrap().unwrap();
    assert_eq!((r.mode, r.mtime_ns, r.size), (0o644, t, 12));
    assert_eq!(
        commits(),
        before + 1,
        "one commit for content, time and mode"
    );

    // With nothing pending, each change is committed at once, as before.
    let fh = fs.open(a.ino, OpenMode::default()).unwrap();
    set(SetAttr {
        mode: Some(0o100600),
        ..SetAttr::default()
    });
    assert_eq!(fs.store().get("f").unwrap().unwrap().mode, 0o600);
    fs.release(fh).unwrap();
    set(SetAttr {
        uid: Some(0),
        ..SetAttr::default()
    });
    assert_eq!(commits(), before + 2, "a chown to the owner is no version");
}
