use super::*;

fn chunk(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| n.wrapping_add(i as u8)).collect()
}

#[test]
fn appended_chunks_read_back_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = ChunkLog::open_with(dir.path(), 1 << 20).unwrap();
    let (a, b) = (chunk(1, 70_000), chunk(2, 30_000));
    let locs = log.append(&[&a, &b]).unwrap();
    assert_eq!(locs[0].offset, 0);
    assert_eq!(locs[1].offset, 70_000);
    assert_eq!(log.read(&locs[0]).unwrap(), a);
    assert_eq!(log.read(&locs[1]).unwrap(), b);
    log.sync().unwrap();
    drop(log);
    let log = ChunkLog::open_with(dir.path(), 1 << 20).unwrap();
    assert_eq!(log.read(&locs[1]).unwrap(), b);
    let c = chunk(3, 100);
    let more = log.append(&[&c]).unwrap();
    assert_eq!(more[0].offset, 100_000, "appends continue at the end");
    assert_eq!(log.read(&more[0]).unwrap(), c);
}

#[test]
fn files_roll_at_their_size_and_sealed_ones_can_go() {
    let dir = tempfile::tempdir().unwrap();
    let log = ChunkLog::open_with(dir.path(), 100_000).unwrap();
    let mut locs = Vec::new();
    for n in 0..5u8 {
        locs.extend(log.append(&[&chunk(n, 60_000)]).unwrap());
    }
    let files: Vec<u32> = log.files().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(files, vec![1, 2, 3], "two 60 kB appends per 100 kB file");
    assert_eq!(log.active_file(), 3);
    assert_eq!(locs[4].file, 3);
    // A reader of file 1 is open; removing the file drops it and the bytes are gone.
    assert_eq!(log.read(&locs[0]).unwrap(), chunk(0, 60_000));
    log.remove(1).unwrap();
    assert_eq!(
        log.read(&locs[0]).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    log.remove(3).unwrap();
    assert_eq!(
        log.read(&locs[4]).unwrap(),
        chunk(4, 60_000),
        "the active file stays"
    );
    log.roll_now().unwrap();
    assert_eq!(log.active_file(), 4);
    log.remove(3).unwrap();
    assert_eq!(
        log.files()
            .unwrap()
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>(),
        vec![2, 4]
    );
}

#[test]
fn a_read_past_the_end_fails_instead_of_returning_short() {
    let dir = tempfile::tempdir().unwrap();
    let log = ChunkLog::open(dir.path()).unwrap();
    let loc = log.append(&[&chunk(1, 1000)]).unwrap()[0];
    let torn = Location { len: 2000, ..loc };
    assert_eq!(
        log.read(&torn).unwrap_err().kind(),
        io::ErrorKind::UnexpectedEof
    );
}

#[test]
fn other_files_in_the_directory_are_not_log_files() {
    assert_eq!(parse_name("00000007.chunks"), Some(7));
    for name in [
        "7.chunks",
        "0000000x.chunks",
        "00000007.chunk",
        "000000007.chunks",
        "",
    ] {
        assert_eq!(parse_name(name), None, "{name}");
    }
}

#[test]
fn many_small_buffers_are_written_whole() {
    // More than IOV_MAX buffers in one append: written in several calls.
    let dir = tempfile::tempdir().unwrap();
    let log = ChunkLog::open(dir.path()).unwrap();
    let bufs: Vec<Vec<u8>> = (0..3000u32)
        .map(|i| chunk(i as u8, 3 + (i % 7) as usize))
        .collect();
    let refs: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
    let locs = log.append(&refs).unwrap();
    for (b, l) in bufs.iter().zip(&locs) {
        assert_eq!(&log.read(l).unwrap(), b);
    }
}

proptest::proptest! {
    /// Any index value decodes as a location or as inline bytes, never panics; a location
    /// round-trips; a sealed chunk (28 bytes or more) is never taken for a location.
    #[test]
    fn location_decode_is_total(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                                file in 0u32.., offset in 0u64.., len in 0u32..) {
        if let Some(l) = Location::decode(&bytes) {
            proptest::prop_assert_eq!(l.encode().to_vec(), bytes.clone());
        }
        if bytes.len() >= 28 {
            proptest::prop_assert!(Location::decode(&bytes).is_none());
        }
        let l = Location { file, offset, len };
        proptest::prop_assert_eq!(Location::decode(&l.encode()), Some(l));
    }
}
