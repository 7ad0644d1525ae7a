//! Content-defined chunking (FastCDC 2020).
//!
//! Cut points depend only on the bytes since the previous cut point, so an edit in the middle of
//! a file changes the chunks around the edit and leaves the others (and their ids) intact. That
//! is what makes both deduplication and small re-syncs work.

use std::io::Read;

use fastcdc::v2020::{ChunkData, FastCDC, StreamCDC};

/// Smallest chunk FastCDC will cut (except at end of file).
pub const MIN_CHUNK: u32 = 16 * 1024;
/// Target average chunk size: small enough that an edit re-sends little, large enough that a
/// 4 GiB file is ~65k chunks (index entries stay cheap).
pub const AVG_CHUNK: u32 = 64 * 1024;
/// Largest chunk; bounds the memory one chunk needs in flight.
pub const MAX_CHUNK: u32 = 256 * 1024;

/// Splits a byte stream into chunks with fybrk's parameters.
pub fn chunks<R: Read>(source: R) -> impl Iterator<Item = std::io::Result<ChunkData>> {
    StreamCDC::new(source, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK).map(|r| {
        r.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

/// The length of the first chunk of `data` if it is already decided: FastCDC cuts within
/// [`MAX_CHUNK`] bytes, so with that many bytes in hand (or at the end of the input) the first
/// cut is the one a pass over the whole file makes. This lets a writer chunk a file as it
/// arrives, with at most one chunk of look-ahead.
pub fn first_cut(data: &[u8], eof: bool) -> Option<usize> {
    if data.is_empty() || (!eof && data.len() < MAX_CHUNK as usize) {
        return None;
    }
    FastCDC::new(data, MIN_CHUNK, AVG_CHUNK, MAX_CHUNK)
        .next()
        .map(|c| c.length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng};
    use std::collections::HashSet;

    fn lens(data: &[u8]) -> Vec<(u64, usize)> {
        chunks(data)
            .map(|c| c.unwrap())
            .map(|c| (c.offset, c.length))
            .collect()
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
        v
    }

    #[test]
    fn chunks_cover_the_input_within_bounds() {
        let data = random(3 << 20, 1);
        let cuts = lens(&data);
        let mut pos = 0;
        for (i, (off, len)) in cuts.iter().enumerate() {
            assert_eq!(*off, pos);
            assert!(*len <= MAX_CHUNK as usize);
            if i + 1 < cuts.len() {
                assert!(*len >= MIN_CHUNK as usize);
            }
            pos += *len as u64;
        }
        assert_eq!(pos, data.len() as u64);
    }

    #[test]
    fn incremental_cuts_match_a_full_pass() {
        let data = random(5 << 20, 77);
        let full = lens(&data);
        let mut pos = 0usize;
        let mut incremental = Vec::new();
        // Feed the data in odd-sized pieces, cutting whenever a cut is decided.
        let mut avail = 0usize;
        while pos < data.len() {
            avail = (avail + 300_001).min(data.len());
            let eof = avail == data.len();
            while let Some(n) = first_cut(&data[pos..avail], eof) {
                incremental.push((pos as u64, n));
                pos += n;
            }
        }
        assert_eq!(incremental, full);
    }

    /// On average an insertion costs only a few chunks.
    #[test]
    fn insertions_cost_few_chunks_on_average() {
        let mut total = 0;
        let runs = 40;
        for seed in 0..runs {
            let data = random(2 << 20, seed);
            let at = 300_000 + (seed as usize * 37_111) % 1_400_000;
            let mut edited = data[..at].to_vec();
            edited.extend(random(1 + (seed as usize * 7919) % 60_000, seed + 1000));
            edited.extend_from_slice(&data[at..]);
            let set =
                |d: &[u8]| -> HashSet<Vec<u8>> { chunks(d).map(|c| c.unwrap().data).collect() };
            let after = set(&edited);
            total += set(&data).difference(&after).count();
        }
        let mean = total as f64 / runs as f64;
        eprintln!("mean chunks lost per insertion: {mean:.2}");
        assert!(mean <= 4.0, "mean {mean}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Inserting bytes in the middle of a file keeps most chunks: all but a few around the
        /// insertion point are found again.
        #[test]
        fn boundaries_survive_an_insertion(
            seed in any::<u64>(),
            at_frac in 0.1f64..0.9,
            insert_len in 1usize..100_000,
        ) {
            let data = random(4 << 20, seed);
            let at = (data.len() as f64 * at_frac) as usize;
            let mut edited = data[..at].to_vec();
            edited.extend(random(insert_len, seed ^ 0xabc));
            edited.extend_from_slice(&data[at..]);

            let chunk_set = |d: &[u8]| -> HashSet<Vec<u8>> {
                chunks(d).map(|c| c.unwrap().data).collect()
            };
            let before = chunk_set(&data);
            let after = chunk_set(&edited);
            let lost = before.difference(&after).count();
            // The insertion touches one chunk; FastCDC then needs a cut or two to fall back into
            // step (longer when a max-size cut intervenes). Everything else is found again.
            prop_assert!(lost * 100 <= before.len() * 20, "{} of {} chunks changed", lost, before.len());
        }
    }
}
