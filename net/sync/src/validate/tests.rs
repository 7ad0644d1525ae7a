use fybrk_store::{ChunkId, ChunkRef, FileRecord, Kind};
use proptest::prelude::*;

use super::*;

const NOW: i64 = 1_800_000_000 * 1_000_000_000;

fn chunk(len: u32) -> ChunkRef {
    ChunkRef {
        id: ChunkId([7; 32]),
        len,
    }
}

fn file(path: &str, lens: &[u32]) -> FileRecord {
    let mut r = FileRecord::new(path, Kind::File, 0o644, NOW);
    r.chunks = lens.iter().map(|&l| chunk(l)).collect();
    r.size = lens.iter().map(|&l| u64::from(l)).sum();
    r.version.bump(1, 1);
    r
}

fn check(r: &FileRecord) -> Result<(), Invalid> {
    check_record(r, NOW)
}

#[test]
fn valid_records_pass() {
    assert_eq!(check(&file("a/b.c/.d", &[100, MAX_CHUNK])), Ok(()));
    assert_eq!(check(&file("..a", &[])), Ok(()));
    let mut holes = file("sparse", &[10]);
    holes.chunks.push(ChunkRef::hole(u32::MAX));
    holes.size += u64::from(u32::MAX);
    assert_eq!(check(&holes), Ok(()));
    let mut d = FileRecord::new("d", Kind::Dir, 0o1777, NOW);
    d.version.bump(9, MAX_COUNTER);
    assert_eq!(check(&d), Ok(()));
    let mut l = FileRecord::new("l", Kind::Symlink, 0o777, NOW);
    l.target = Some("../x".into());
    assert_eq!(check(&l), Ok(()));
    assert_eq!(check(&file(".fybrkx/y", &[])), Ok(()));
    assert_eq!(check(&file("x/.fybrk", &[])), Ok(()));
}

#[test]
fn bad_paths_are_refused() {
    let long_name = "n".repeat(MAX_NAME + 1);
    let deep = vec!["d"; MAX_DEPTH + 1].join("/");
    let long = vec!["a".repeat(200); 21].join("/");
    let cases: Vec<(&str, Invalid)> = vec![
        ("", Invalid::EmptyPath),
        ("/etc/passwd", Invalid::EmptyComponent),
        ("a/", Invalid::EmptyComponent),
        ("a//b", Invalid::EmptyComponent),
        ("a/../../b", Invalid::DotComponent),
        ("./a", Invalid::DotComponent),
        ("a\0b", Invalid::NulInPath),
        (&long_name, Invalid::NameTooLong(MAX_NAME + 1)),
        (&deep, Invalid::PathTooDeep(MAX_DEPTH + 1)),
        (&long, Invalid::PathTooLong(long.len())),
        (".fybrk", Invalid::Reserved),
        (".fybrk/at/x", Invalid::Reserved),
    ];
    for (p, want) in cases {
        assert_eq!(check(&file(p, &[])), Err(want), "{p:?}");
    }
    assert_eq!(check(&file(&vec!["d"; MAX_DEPTH].join("/"), &[])), Ok(()));
}

#[test]
fn bad_modes_are_refused() {
    for mode in [0o4755, 0o2755, 0o100644, 0o20644] {
        let mut r = file("f", &[1]);
        r.mode = mode;
        assert_eq!(check(&r), Err(Invalid::BadMode(mode)));
    }
}

#[test]
fn chunk_lists_must_add_up() {
    let mut r = file("f", &[10, 20]);
    r.size = 31;
    assert_eq!(check(&r), Err(Invalid::SizeMismatch { size: 31, sum: 30 }));
    r.size = 29;
    assert!(matches!(check(&r), Err(Invalid::SizeMismatch { .. })));
    assert_eq!(check(&file("f", &[10, 0])), Err(Invalid::EmptyChunk));
    assert_eq!(
        check(&file("f", &[MAX_CHUNK + 1])),
        Err(Invalid::ChunkTooLong(MAX_CHUNK + 1))
    );
    let mut huge = file("f", &[]);
    huge.size = MAX_FILE_SIZE + 1;
    assert_eq!(check(&huge), Err(Invalid::TooLarge(MAX_FILE_SIZE + 1)));
    // Sums that would overflow a u64 saturate instead of wrapping to the claimed size.
    let mut wrap = file("f", &[]);
    wrap.chunks = vec![ChunkRef::hole(u32::MAX); 4];
    wrap.size = 4 * u64::from(u32::MAX);
    assert_eq!(check(&wrap), Ok(()));
}

#[test]
fn dirs_and_symlinks_have_no_chunks() {
    let mut d = FileRecord::new("d", Kind::Dir, 0o755, NOW);
    d.chunks.push(chunk(1));
    assert_eq!(check(&d), Err(Invalid::ChunksOnNonFile));
    for target in [
        None,
        Some(String::new()),
        Some("a\0b".into()),
        Some("x".repeat(MAX_TARGET + 1)),
    ] {
        let mut l = FileRecord::new("l", Kind::Symlink, 0o777, NOW);
        l.target = target;
        assert_eq!(check(&l), Err(Invalid::BadTarget));
    }
}

#[test]
fn versions_are_bounded() {
    let mut r = file("f", &[]);
    r.version.0.insert(5, 0);
    assert_eq!(check(&r), Err(Invalid::BadCounter(0)));
    let mut r = file("f", &[]);
    r.version.bump(5, u64::MAX);
    assert_eq!(check(&r), Err(Invalid::BadCounter(u64::MAX)));
    let mut r = file("f", &[]);
    for d in 0..=MAX_VERSION_ENTRIES as u64 {
        r.version.bump(d + 100, 1);
    }
    assert!(matches!(check(&r), Err(Invalid::VersionTooWide(_))));
}

#[test]
fn mtimes_are_bounded() {
    let mut r = file("f", &[]);
    r.mtime_ns = NOW + MAX_FUTURE_NS + 1;
    assert_eq!(check(&r), Err(Invalid::FutureMtime));
    r.mtime_ns = NOW + MAX_FUTURE_NS;
    assert_eq!(check(&r), Ok(()));
    r.mtime_ns = MIN_MTIME_NS - 1;
    assert_eq!(check(&r), Err(Invalid::AncientMtime));
    r.mtime_ns = i64::MAX;
    assert_eq!(check_record(&r, i64::MAX), Ok(()));
}

#[test]
fn tombstones_check_only_path_and_version() {
    let mut r = file("f", &[1]);
    r.deleted = true;
    r.size = 99;
    r.mode = 0o4777;
    r.mtime_ns = i64::MAX;
    assert_eq!(check(&r), Ok(()));
    r.path = "../x".into();
    assert_eq!(check(&r), Err(Invalid::DotComponent));
}

fn arb_record() -> impl Strategy<Value = FileRecord> {
    let kind = prop_oneof![Just(Kind::File), Just(Kind::Dir), Just(Kind::Symlink)];
    let chunks = prop::collection::vec(
        (any::<bool>(), any::<u32>()).prop_map(|(hole, len)| {
            if hole {
                ChunkRef::hole(len)
            } else {
                chunk(len)
            }
        }),
        0..8,
    );
    let version = prop::collection::btree_map(any::<u64>(), any::<u64>(), 0..4);
    (
        kind,
        any::<bool>(),
        ".{0,40}",
        any::<u32>(),
        any::<i64>(),
        any::<u64>(),
        chunks,
        prop::option::of(".{0,10}"),
        version,
    )
        .prop_map(
            |(kind, deleted, path, mode, mtime_ns, size, chunks, target, version)| FileRecord {
                kind,
                deleted,
                path,
                mode,
                mtime_ns,
                size,
                chunks,
                target,
                version: fybrk_store::VersionVector(version),
                seq: 1,
            },
        )
}

proptest! {
    #[test]
    fn arbitrary_records_never_panic(r in arb_record(), now in any::<i64>()) {
        let _ = check_record(&r, now);
    }
}
