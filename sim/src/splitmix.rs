//! SplitMix64 (Steele, Lea, Flood 2014; constants of Vigna's `splitmix64.c`): the one
//! source of derived pseudo-random values in the project. The synthetic oracle
//! (`crate::oracle`), the builder searches (`crate::builders`) and the fuzz-domain
//! draws all use it, and `conformance/vllm/oracle.py` reimplements [`splitmix`] bit for
//! bit, so its outputs must never change (committed traces depend on them).

/// The golden-ratio increment of the SplitMix64 state.
pub const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// One SplitMix64 output from state `x`: advance by [`GAMMA`], then the finalizer.
/// Also used as a stateless hash (`splitmix(seed ^ token)` chains in the oracle).
pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The SplitMix64 generator: output `i` is `splitmix(seed + i·GAMMA)`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        let out = splitmix(self.0);
        self.0 = self.0.wrapping_add(GAMMA);
        out
    }

    /// Uniform (up to modulo bias) in `lo..=hi` (`lo <= hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        match (hi - lo).checked_add(1) {
            Some(span) => lo + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// Fills `buf` with random bytes (little-endian words).
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of Vigna's reference `splitmix64.c` seeded with 0.
    #[test]
    fn matches_the_reference_implementation() {
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
        assert_eq!(splitmix(0), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn range_covers_its_bounds_and_the_full_span() {
        let mut r = Rng::new(9);
        let draws: Vec<u64> = (0..200).map(|_| r.range(3, 5)).collect();
        assert!(draws.iter().all(|&x| (3..=5).contains(&x)));
        assert!([3, 4, 5].iter().all(|x| draws.contains(x)));
        // lo..=u64::MAX has no representable span; it must not overflow.
        let _ = r.range(0, u64::MAX);
        let mut buf = [0u8; 11];
        r.fill(&mut buf);
        assert!(buf.iter().any(|&b| b != 0));
    }
}
