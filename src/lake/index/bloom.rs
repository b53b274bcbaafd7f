//! A blocked bloom filter over 128-bit keys that are already uniform hashes.
//!
//! In: keys (the xxh3-128 hash of a resource id). Out: "maybe present" or
//! "certainly absent", and a versioned little-endian byte form that
//! [`Bloom::from_bytes`] checks before trusting. It does not hash: see below.
//!
//! Each key sets `probes` bits inside one 512-bit (cache-line) block, so a
//! probe touches one cache line. At 10 bits per key (6 probes) the measured
//! false-positive rate is about 0.9% (test `false_positive_rate`).
//!
//! # Why the key's own bits are used, without rehashing
//!
//! Keys are xxh3-128 outputs, so every bit is uniform and independent of the
//! others for non-adversarial ids. The filter takes disjoint bit fields of the
//! key for its two choices, so they are independent of each other:
//!
//! ```text
//! bit  127 ........ 96 | 95 ..... 64 | 63 ...... 32 | 31 ...... 0
//!      (never used)    | probes hi   | block        | probes lo
//! ```
//!
//! The top 32 bits are left alone on purpose: a run produced by a
//! range-partitioned compaction covers a narrow key range, which fixes the
//! top bits of all its keys; were those bits used, all its keys would land in
//! a few blocks. Only a partition into more than 2^32 ranges would reach the
//! bits used here. An adversary who can choose ids that collide under xxh3
//! can only raise the false-positive rate (cost, never a wrong answer).
//!
//! The block is `(bits 32..64) * blocks >> 32` (multiply-shift, no modulo).
//! That mapping lets [`Bloom::shrink_to_fit`] fold a filter sized for an
//! upper bound down to the keys actually inserted: with `blocks = d * f`,
//! block `b` of the large filter maps to block `b / f` of the small one, so
//! OR-ing each group of `f` adjacent blocks gives exactly the filter that
//! inserting the keys into `d` blocks would have built.

use std::fmt;

/// Bits per key that give about 1% false positives.
pub const DEFAULT_BITS_PER_KEY: u32 = 10;

const BLOCK_BITS: u64 = 512;
const BLOCK_BYTES: usize = 64;
/// Probes take 9 bits each from a 64-bit field of the key.
const MAX_PROBES: u32 = 7;
const MAX_BITS_PER_KEY: u32 = 64;
const MAGIC: [u8; 4] = *b"FLKB";
const VERSION: u8 = 1;
/// magic, version, probes, bits per key, reserved (zero), block count (u32).
pub const HEADER_LEN: usize = 12;

/// One cache line of filter bits.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
#[repr(align(64))]
struct Block([u64; 8]);

/// A blocked bloom filter; see the module documentation for the bit layout.
///
/// Invariant: `1 <= blocks.len() <= u32::MAX` and `1 <= probes <= 7`.
#[derive(Clone, PartialEq, Eq)]
pub struct Bloom {
    blocks: Vec<Block>,
    probes: u32,
    bits_per_key: u32,
}

/// Why a byte buffer is not a bloom filter this build can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BloomError {
    #[error("bloom filter is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    Short { len: usize },
    #[error("bloom filter starts with {found:02x?}, not the magic \"FLKB\"")]
    Magic { found: [u8; 4] },
    #[error("bloom filter format version {found} is not supported (this build reads {VERSION})")]
    Version { found: u8 },
    #[error("bloom filter header is invalid: {what}")]
    Header { what: &'static str },
    #[error("bloom filter of {blocks} blocks should be {expected} bytes, but is {len}")]
    Length {
        blocks: u32,
        expected: usize,
        len: usize,
    },
}

impl fmt::Debug for Bloom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bloom")
            .field("blocks", &self.blocks.len())
            .field("probes", &self.probes)
            .field("bits_per_key", &self.bits_per_key)
            .finish()
    }
}

impl Bloom {
    /// A filter for up to `keys` distinct keys at `bits_per_key` (clamped to
    /// 1..=64; [`DEFAULT_BITS_PER_KEY`] gives ~1% false positives). More keys
    /// than `keys` only raise the false-positive rate; fewer can be folded
    /// away with [`Bloom::shrink_to_fit`].
    pub fn with_capacity(keys: usize, bits_per_key: u32) -> Self {
        let bits_per_key = bits_per_key.clamp(1, MAX_BITS_PER_KEY);
        let blocks = foldable(blocks_needed(keys, bits_per_key));
        // A flat filter's optimum is bits * ln 2 (6.9 for 10). Cache-line
        // blocks favour a little fewer: at 10 bits a key, 6 probes measured
        // the same 0.97% as 7 (5: 1.05%), and each probe costs a load.
        let probes = ((f64::from(bits_per_key) * std::f64::consts::LN_2).floor() as u32)
            .clamp(1, MAX_PROBES);
        Self::with_blocks(blocks, probes, bits_per_key)
    }

    fn with_blocks(blocks: u32, probes: u32, bits_per_key: u32) -> Self {
        debug_assert!(blocks >= 1 && (1..=MAX_PROBES).contains(&probes));
        Bloom {
            blocks: vec![Block::default(); blocks as usize],
            probes,
            bits_per_key,
        }
    }

    /// Adds `key`; afterwards `may_contain(key)` is true.
    pub fn insert(&mut self, key: u128) {
        let block = self.block_of(key);
        let block = &mut self.blocks[block].0;
        let mut bits = probe_bits(key);
        for _ in 0..self.probes {
            let bit = bits % BLOCK_BITS;
            block[(bit / 64) as usize] |= 1 << (bit % 64);
            bits >>= 9;
        }
    }

    /// False only if `key` was never inserted.
    #[inline]
    pub fn may_contain(&self, key: u128) -> bool {
        let block = &self.blocks[self.block_of(key)].0;
        // Unrolled for the common counts; the loads are independent and there is
        // no early exit, which would mispredict half the time for absent keys.
        match self.probes {
            6 => test_bits::<6>(block, probe_bits(key)),
            7 => test_bits::<7>(block, probe_bits(key)),
            probes => (0..probes).fold(true, |all, i| {
                all & test_bit(block, probe_bits(key) >> (9 * i))
            }),
        }
    }

    #[inline]
    fn block_of(&self, key: u128) -> usize {
        let field = u64::from((key >> 32) as u32);
        ((field * self.blocks.len() as u64) >> 32) as usize
    }

    /// Folds the filter to the fewest blocks that still give `keys` keys the
    /// configured bits per key, as far as the block count's divisors allow
    /// (a filter from [`Bloom::with_capacity`] gets within 2x of that, or
    /// to at most 64 blocks, 4 KiB).
    /// The result is the filter that inserting the same keys into the smaller
    /// size would have built, so nothing inserted is lost.
    pub fn shrink_to_fit(&mut self, keys: usize) {
        let have = self.blocks.len();
        let want = blocks_needed(keys, self.bits_per_key) as usize;
        let Some(factor) = (2..=have / want).rev().find(|&f| have.is_multiple_of(f)) else {
            return;
        };
        let folded = self
            .blocks
            .chunks_exact(factor)
            .map(|group| {
                let mut block = Block::default();
                for b in group {
                    for (word, w) in block.0.iter_mut().zip(b.0) {
                        *word |= w;
                    }
                }
                block
            })
            .collect();
        self.blocks = folded;
    }

    /// Bytes of filter bits held in memory.
    pub fn memory_bytes(&self) -> usize {
        self.blocks.len() * BLOCK_BYTES
    }

    #[cfg(test)]
    pub fn blocks(&self) -> usize {
        self.blocks.len()
    }

    #[cfg(test)]
    pub fn probes(&self) -> u32 {
        self.probes
    }

    /// Length of [`Bloom::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.memory_bytes()
    }

    #[cfg(test)]
    /// The filter as bytes: a [`HEADER_LEN`]-byte header, then each block's
    /// eight words, little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_to(&mut out);
        out
    }

    /// Appends [`Bloom::to_bytes`] to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        // The invariants keep these in range: probes <= 7, bits <= 64.
        out.extend_from_slice(&[VERSION, self.probes as u8, self.bits_per_key as u8, 0]);
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for block in &self.blocks {
            for word in block.0 {
                out.extend_from_slice(&word.to_le_bytes());
            }
        }
    }

    /// Parses [`Bloom::to_bytes`]; `bytes` must be exactly one filter. The
    /// header is checked against the length before anything is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BloomError> {
        let Some((header, body)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(BloomError::Short { len: bytes.len() });
        };
        let [
            m0,
            m1,
            m2,
            m3,
            version,
            probes,
            bits_per_key,
            reserved,
            b0,
            b1,
            b2,
            b3,
        ] = *header;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(BloomError::Magic {
                found: [m0, m1, m2, m3],
            });
        }
        if version != VERSION {
            return Err(BloomError::Version { found: version });
        }
        if !(1..=MAX_PROBES).contains(&u32::from(probes)) {
            return Err(BloomError::Header {
                what: "probe count outside 1..=7",
            });
        }
        if !(1..=MAX_BITS_PER_KEY).contains(&u32::from(bits_per_key)) {
            return Err(BloomError::Header {
                what: "bits per key outside 1..=64",
            });
        }
        if reserved != 0 {
            return Err(BloomError::Header {
                what: "reserved byte is not zero",
            });
        }
        let blocks = u32::from_le_bytes([b0, b1, b2, b3]);
        if blocks == 0 {
            return Err(BloomError::Header {
                what: "zero blocks",
            });
        }
        let expected = (blocks as usize)
            .checked_mul(BLOCK_BYTES)
            .and_then(|n| n.checked_add(HEADER_LEN));
        if expected != Some(bytes.len()) {
            return Err(BloomError::Length {
                blocks,
                expected: expected.unwrap_or(usize::MAX),
                len: bytes.len(),
            });
        }
        let blocks = body
            .chunks_exact(BLOCK_BYTES)
            .map(|chunk| {
                let mut block = Block::default();
                for (word, w) in block.0.iter_mut().zip(chunk.chunks_exact(8)) {
                    *word = u64::from_le_bytes(w.try_into().expect("chunks of 8"));
                }
                block
            })
            .collect();
        Ok(Bloom {
            blocks,
            probes: u32::from(probes),
            bits_per_key: u32::from(bits_per_key),
        })
    }
}

#[inline]
fn test_bit(block: &[u64; 8], bits: u64) -> bool {
    let bit = bits % BLOCK_BITS;
    block[(bit / 64) as usize] >> (bit % 64) & 1 == 1
}

#[inline]
fn test_bits<const PROBES: u32>(block: &[u64; 8], bits: u64) -> bool {
    (0..PROBES).fold(true, |all, i| all & test_bit(block, bits >> (9 * i)))
}

/// The 64 bits the probes take 9 at a time: key bits 0..32 and 64..96.
#[inline]
fn probe_bits(key: u128) -> u64 {
    u64::from(key as u32) | (u64::from((key >> 64) as u32) << 32)
}

/// Blocks that give `keys` keys `bits_per_key` bits each (at least one,
/// at most `u32::MAX`: 256 GiB of filter).
fn blocks_needed(keys: usize, bits_per_key: u32) -> u32 {
    let bits = keys as u128 * u128::from(bits_per_key);
    bits.div_ceil(u128::from(BLOCK_BITS))
        .clamp(1, u128::from(u32::MAX)) as u32
}

/// Rounds `blocks` up (by at most 1/32) to a multiple of a power of two, so
/// that [`Bloom::shrink_to_fit`] can halve it repeatedly.
fn foldable(blocks: u32) -> u32 {
    let step = (blocks / 32).checked_ilog2().map_or(1, |p| 1u32 << p);
    blocks.checked_next_multiple_of(step).unwrap_or(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// splitmix64: a deterministic stream of uniform keys.
    struct Keys(u64);

    impl Keys {
        fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn next_key(&mut self) -> u128 {
            (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
        }
    }

    fn filled(keys: &[u128], bits_per_key: u32) -> Bloom {
        let mut bloom = Bloom::with_capacity(keys.len(), bits_per_key);
        for &k in keys {
            bloom.insert(k);
        }
        bloom
    }

    fn fp_rate(bloom: &Bloom, probes: &mut Keys, n: usize) -> f64 {
        let hits = (0..n)
            .filter(|_| bloom.may_contain(probes.next_key()))
            .count();
        hits as f64 / n as f64
    }

    #[test]
    fn no_false_negatives() {
        let mut rng = Keys(1);
        for n in [0, 1, 2, 100, 10_000] {
            let keys: Vec<u128> = (0..n).map(|_| rng.next_key()).collect();
            let bloom = filled(&keys, DEFAULT_BITS_PER_KEY);
            assert!(keys.iter().all(|&k| bloom.may_contain(k)), "n = {n}");
        }
    }

    #[test]
    fn false_positive_rate() {
        let mut rng = Keys(2);
        let keys: Vec<u128> = (0..1_000_000).map(|_| rng.next_key()).collect();
        let bloom = filled(&keys, DEFAULT_BITS_PER_KEY);
        let rate = fp_rate(&bloom, &mut rng, 1_000_000);
        println!(
            "bloom: 1M keys, {} bits/key, {} probes, {} bytes ({:.3} bytes/key): \
             false positives {:.3}% over 1M absent keys",
            DEFAULT_BITS_PER_KEY,
            bloom.probes(),
            bloom.memory_bytes(),
            bloom.memory_bytes() as f64 / 1e6,
            rate * 100.0
        );
        assert!(rate < 0.0125, "false-positive rate {rate}");
        for bits in [6, 8, 12, 16] {
            let bloom = filled(&keys[..200_000], bits);
            let rate = fp_rate(&bloom, &mut rng, 200_000);
            println!(
                "bloom: {bits} bits/key, {} probes: {:.3}%",
                bloom.probes(),
                rate * 100.0
            );
        }
    }

    /// Keys of a narrow key range (top 32 bits fixed, as in a range-partitioned
    /// run) filter as well as keys spread over the whole space.
    #[test]
    fn narrow_key_range_filters_as_well() {
        let mut rng = Keys(3);
        let prefix = u128::from(0xdead_beef_u32) << 96;
        let narrow = |k: u128| prefix | (k & (u128::MAX >> 32));
        let keys: Vec<u128> = (0..200_000).map(|_| narrow(rng.next_key())).collect();
        let bloom = filled(&keys, DEFAULT_BITS_PER_KEY);
        let hits = (0..200_000)
            .filter(|_| bloom.may_contain(narrow(rng.next_key())))
            .count();
        assert!(hits < 2_500, "{hits} false positives in 200k");
    }

    #[test]
    fn shrink_equals_building_small() {
        let mut rng = Keys(4);
        let keys: Vec<u128> = (0..3_000).map(|_| rng.next_key()).collect();
        let mut big = Bloom::with_capacity(100_000, DEFAULT_BITS_PER_KEY);
        for &k in &keys {
            big.insert(k);
        }
        let before = big.blocks();
        big.shrink_to_fit(keys.len());
        let needed = blocks_needed(keys.len(), DEFAULT_BITS_PER_KEY) as usize;
        assert!(
            big.blocks() >= needed && big.blocks() < 2 * needed,
            "{before} -> {big:?}"
        );
        let mut small = Bloom::with_blocks(big.blocks() as u32, big.probes(), DEFAULT_BITS_PER_KEY);
        for &k in &keys {
            small.insert(k);
        }
        assert_eq!(big, small);
        assert!(keys.iter().all(|&k| big.may_contain(k)));

        // Already the right size: nothing changes.
        let mut exact = filled(&keys, DEFAULT_BITS_PER_KEY);
        let copy = exact.clone();
        exact.shrink_to_fit(keys.len());
        assert_eq!(exact, copy);
    }

    #[test]
    fn sizing() {
        for keys in [0, 1, 51, 52, 1_000, 123_457, 1_000_000, 10_000_000] {
            let bloom = Bloom::with_capacity(keys, DEFAULT_BITS_PER_KEY);
            let needed = blocks_needed(keys, DEFAULT_BITS_PER_KEY) as usize;
            assert!(bloom.blocks() >= needed, "{keys}");
            assert!(
                bloom.blocks() <= needed + needed / 32 + 1,
                "{keys}: {}",
                bloom.blocks()
            );
        }
        assert_eq!(Bloom::with_capacity(0, 0).blocks(), 1);
    }

    #[test]
    fn bytes_round_trip() {
        let mut rng = Keys(5);
        let keys: Vec<u128> = (0..5_000).map(|_| rng.next_key()).collect();
        let bloom = filled(&keys, 12);
        let bytes = bloom.to_bytes();
        assert_eq!(bytes.len(), bloom.encoded_len());
        assert_eq!(Bloom::from_bytes(&bytes).unwrap(), bloom);
    }

    #[test]
    fn bad_bytes_are_errors() {
        let bloom = filled(&[1, 2, 3], DEFAULT_BITS_PER_KEY);
        let bytes = bloom.to_bytes();
        for len in 0..bytes.len() {
            assert!(
                Bloom::from_bytes(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            Bloom::from_bytes(&longer),
            Err(BloomError::Length { .. })
        ));
        // Every header byte matters; filter bits are covered by the run's checksum.
        for i in 0..HEADER_LEN {
            let mut bad = bytes.clone();
            bad[i] ^= 0xff;
            assert!(Bloom::from_bytes(&bad).is_err(), "header byte {i}");
        }
        let mut huge = bytes[..HEADER_LEN].to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Bloom::from_bytes(&huge),
            Err(BloomError::Length { .. })
        ));
    }

    /// Prints the probe rate; timing is reported, never asserted.
    #[test]
    #[ignore = "a measurement, printed: cargo test --release -- --ignored"]
    fn probe_speed() {
        let mut rng = Keys(6);
        let keys: Vec<u128> = (0..1_000_000).map(|_| rng.next_key()).collect();
        let bloom = filled(&keys, DEFAULT_BITS_PER_KEY);
        let probes: Vec<u128> = (0..1 << 20)
            .map(|i| {
                if i % 2 == 0 {
                    keys[i % keys.len()]
                } else {
                    rng.next_key()
                }
            })
            .collect();
        let rounds = 10;
        let start = Instant::now();
        let mut hits = 0usize;
        for _ in 0..rounds {
            hits += probes.iter().filter(|&&k| bloom.may_contain(k)).count();
        }
        let elapsed = start.elapsed();
        let n = rounds * probes.len();
        println!(
            "bloom: {n} probes of a {} KiB filter in {elapsed:?}: {:.1} ns/probe ({hits} hits)",
            bloom.memory_bytes() / 1024,
            elapsed.as_nanos() as f64 / n as f64
        );
    }
}
