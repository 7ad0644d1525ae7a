//! Files larger than 4 GiB: exact bytes with a daemon whose memory does not grow with the file,
//! and a 5 GiB sparse file whose holes read as zeros.
//!
//! Its own test binary (cargo runs test binaries one after another), and the two tests take a
//! lock so they never run at the same time either: each alone keeps both cores busy.

// Test code: an unwrap that fails is a failing test, and test helpers need no API docs.
#![allow(clippy::unwrap_used, missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fybrk_tests::{rss_bytes, Gen, Mount};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// The daemon's resident set must stay below this whatever the file size: memtables, the chunk
/// cache and per-handle buffers are bounded; 4.5 GiB of data must not sit in memory.
const RSS_LIMIT: u64 = 200 * MIB;

static HEAVY: Mutex<()> = Mutex::new(());

/// Samples a process's VmRSS every 50 ms until dropped; keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl RssSampler {
    fn start(pid: i32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            let mut samples = 0;
            while !s.load(Ordering::Relaxed) {
                if let Some(r) = rss_bytes(pid) {
                    p.fetch_max(r, Ordering::Relaxed);
                    samples += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        RssSampler {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns (peak bytes, number of samples).
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let n = self.thread.take().unwrap().join().unwrap();
        (self.peak.load(Ordering::Relaxed), n)
    }

    fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn four_and_a_half_gib_file_with_bounded_daemon_memory() {
    let _heavy = lock();
    let Some(mut m) = Mount::start() else { return };
    let total: u64 = 4 * GIB + GIB / 2;
    let p = m.path("big.bin");
    let mut g = Gen::new(4242);
    let mut block = vec![0u8; MIB as usize];
    let mut want = blake3::Hasher::new();

    let sampler = RssSampler::start(m.pid());
    let t = Instant::now();
    let mut f = m.ok(File::create(&p), "create big.bin");
    for i in 0..total / MIB {
        g.fill(&mut block);
        want.update(&block);
        m.ok(f.write_all(&block), format!("write block {i}"));
        if i % 512 == 511 {
            eprintln!(
                "wrote {} MiB in {:?}, daemon rss peak {} MiB",
                i + 1,
                t.elapsed(),
                sampler.peak() >> 20
            );
        }
    }
    m.ok(f.sync_all(), "fsync big.bin");
    drop(f);
    let (write_peak, samples) = sampler.finish();
    let want = want.finalize();
    eprintln!(
        "wrote + closed {} GiB in {:?}; daemon rss peak {} MiB over {samples} samples",
        total as f64 / GIB as f64,
        t.elapsed(),
        write_peak >> 20
    );
    m.check(samples > 10, || {
        format!("only {samples} RSS samples of pid {}", m.pid())
    });
    m.check(write_peak < RSS_LIMIT, || {
        format!(
            "daemon RSS peaked at {} MiB while writing (limit {} MiB)",
            write_peak >> 20,
            RSS_LIMIT >> 20
        )
    });

    let size = m.ok(fs::metadata(&p), "stat").len();
    m.check(size == total, || format!("st_size {size}, want {total}"));

    // Read back through a fresh mount, so the kernel's page cache cannot answer for the daemon.
    m.remount();
    let size = m.ok(fs::metadata(&p), "stat after remount").len();
    m.check(size == total, || {
        format!("st_size after remount {size}, want {total}")
    });
    let sampler = RssSampler::start(m.pid());
    let t = Instant::now();
    let mut f = m.ok(File::open(&p), "open big.bin");
    let mut got = blake3::Hasher::new();
    let mut read = 0u64;
    loop {
        let n = m.ok(f.read(&mut block), format!("read at {read}"));
        if n == 0 {
            break;
        }
        got.update(&block[..n]);
        read += n as u64;
    }
    let (read_peak, _) = sampler.finish();
    eprintln!(
        "read {read} bytes in {:?}; daemon rss peak {} MiB",
        t.elapsed(),
        read_peak >> 20
    );
    m.check(read == total, || format!("read {read} bytes, want {total}"));
    m.check(got.finalize() == want, || {
        "checksum of the data read back differs from what was written".into()
    });
    m.check(read_peak < RSS_LIMIT, || {
        format!(
            "daemon RSS peaked at {} MiB while reading (limit {} MiB)",
            read_peak >> 20,
            RSS_LIMIT >> 20
        )
    });
}

#[test]
fn five_gib_sparse_file_reads_zeros_in_holes() {
    let _heavy = lock();
    let Some(mut m) = Mount::start() else { return };
    let size: u64 = 5 * GIB;
    let tail = Gen::new(5005).bytes(MIB as usize);
    let p = m.path("sparse.bin");
    let stored0 = m.status_json().stored_bytes;

    let sampler = RssSampler::start(m.pid());
    let t = Instant::now();
    let mut f = m.ok(
        OpenOptions::new().write(true).create_new(true).open(&p),
        "create",
    );
    m.ok(f.seek(SeekFrom::Start(size - MIB)), "seek to 5 GiB - 1 MiB");
    m.ok(f.write_all(&tail), "write the last MiB");
    m.ok(f.sync_all(), "fsync");
    drop(f);
    let (peak, _) = sampler.finish();
    eprintln!(
        "sparse file written and closed in {:?}; daemon rss peak {} MiB",
        t.elapsed(),
        peak >> 20
    );
    m.check(peak < RSS_LIMIT, || {
        format!(
            "daemon RSS peaked at {} MiB for a sparse file (limit {} MiB)",
            peak >> 20,
            RSS_LIMIT >> 20
        )
    });

    let check = |m: &Mount, when: &str| {
        let md = m.ok(fs::metadata(&p), "stat");
        m.check(md.len() == size, || {
            format!("{when}: st_size {}, want {size}", md.len())
        });
        let f = m.ok(File::open(&p), "open");
        let mut buf = vec![0u8; 64 * 1024];
        for off in [
            0,
            4096 * 1000 + 17,
            GIB,
            2 * GIB + GIB / 2 + 7,
            4 * GIB + 3,
            size - MIB - buf.len() as u64,
        ] {
            m.ok(
                f.read_exact_at(&mut buf, off),
                format!("{when}: read hole at {off}"),
            );
            let nz = buf.iter().position(|&b| b != 0);
            m.check(nz.is_none(), || {
                format!("{when}: hole at {off} has a non-zero byte at +{nz:?}")
            });
        }
        let mut end = vec![0u8; MIB as usize];
        m.ok(
            f.read_exact_at(&mut end, size - MIB),
            format!("{when}: read the tail"),
        );
        m.check(end == tail, || {
            format!(
                "{when}: tail differs: {:?}",
                fybrk_tests::diff_bytes(&tail, &end)
            )
        });
        let mut past = [0u8; 16];
        let n = m.ok(f.read_at(&mut past, size), "read at EOF");
        m.check(n == 0, || format!("{when}: read at EOF returned {n} bytes"));
    };
    check(&m, "before remount");
    let grown = m.status_json().stored_bytes.saturating_sub(stored0);
    m.check(grown < 64 * MIB, || {
        format!(
            "a 5 GiB file with 1 MiB of data grew stored_bytes by {} MiB",
            grown >> 20
        )
    });
    m.remount();
    check(&m, "after remount");
}
