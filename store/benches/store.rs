//! Store micro-benchmarks: chunking, hashing + sealing, opening, and a full write/read round
//! trip through RocksDB. Run: `cargo bench -p fybrk-store --bench store`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fybrk_store::{chunker, Crypto, FileRecord, FolderKey, Kind, Store, StoreOptions};

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = data(16 << 20);
    let crypto = Crypto::new(&FolderKey::from_bytes([5; 32]));
    let mut g = c.benchmark_group("store");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.sample_size(10);

    g.bench_function("fastcdc", |b| {
        b.iter(|| chunker::chunks(&input[..]).count())
    });
    g.bench_function("blake3_keyed", |b| b.iter(|| crypto.chunk_id(&input)));
    let chunk = &input[..64 * 1024];
    let id = crypto.chunk_id(chunk);
    let sealed = crypto.seal(&id, chunk);
    g.throughput(Throughput::Bytes(chunk.len() as u64));
    g.bench_function("seal_64k", |b| b.iter(|| crypto.seal(&id, chunk)));
    g.bench_function("open_64k", |b| {
        b.iter(|| crypto.open(&id, &sealed).map(|v| v.len()))
    });
    // The same AES-256-GCM through the aes-gcm crate, which sealed chunks before ring did.
    let reference = {
        use aes_gcm::aead::KeyInit;
        aes_gcm::Aes256Gcm::new(&[7u8; 32].into())
    };
    g.bench_function("seal_64k_aes_gcm_crate", |b| {
        use aes_gcm::aead::AeadInOut;
        b.iter(|| {
            let mut buf = chunk.to_vec();
            let tag = reference
                .encrypt_inout_detached(&[1u8; 12].into(), &id.0, buf.as_mut_slice().into())
                .expect("seal");
            buf.len() + tag.len()
        })
    });

    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(
        dir.path(),
        &FolderKey::from_bytes([5; 32]),
        StoreOptions {
            cache_bytes: 0,
            device: None,
            folder_id: None,
            cache_budget: None,
        },
    )
    .expect("open");
    g.throughput(Throughput::Bytes(input.len() as u64));
    let mut n = 0u64;
    g.bench_function("write_16m_file", |b| {
        b.iter(|| {
            n += 1;
            // After the first iteration every chunk is already stored, so this measures the
            // dedup path: chunking, hashing and the commit.
            store
                .write_file(&format!("f{n}"), &input, 0o644, 0)
                .expect("write")
        })
    });
    // Written here too: a filter may have skipped the benchmark above.
    store.write_file("f0", &input, 0o644, 0).expect("write");
    let rec = store.get("f0").expect("get").expect("written above");
    g.bench_function("read_16m_file", |b| {
        b.iter(|| {
            rec.chunks
                .iter()
                .map(|c| store.read_chunk(&c.id).expect("read").len())
                .sum::<usize>()
        })
    });
    g.finish();

    // What one small file costs the store, in the steps a create + write + close makes.
    let mut g = c.benchmark_group("small_file");
    g.sample_size(20);
    store
        .commit(vec![FileRecord::new("d", Kind::Dir, 0o755, 0)], None, false)
        .expect("dir");
    let small = data(1024);
    let mut i = 0u64;
    let mut next = || {
        i += 1;
        (format!("d/s{i}"), i as i64)
    };
    g.bench_function("create_empty_and_dir", |b| {
        b.iter(|| {
            let (p, t) = next();
            let mut dir = store.get("d").expect("get").expect("dir");
            dir.mtime_ns = t;
            dir.version = Default::default();
            store
                .commit(
                    vec![FileRecord::new(&p, Kind::File, 0o644, t), dir],
                    None,
                    false,
                )
                .expect("commit")
        })
    });
    g.bench_function("create_empty", |b| {
        b.iter(|| {
            let (p, t) = next();
            store
                .commit(vec![FileRecord::new(&p, Kind::File, 0o644, t)], None, false)
                .expect("commit")
        })
    });
    g.bench_function("content_1k", |b| {
        b.iter(|| {
            let (p, t) = next();
            let mut data = small.clone();
            data[..8].copy_from_slice(&t.to_le_bytes());
            let mut w = store.writer();
            let c = w.add(&data).expect("add");
            let mut r = FileRecord::new(&p, Kind::File, 0o644, t);
            r.size = 1024;
            r.chunks = vec![c];
            store.commit(vec![r], Some(&mut w), false).expect("commit")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
