//! A small seeded PRNG (SplitMix64). The search must give the same trials for the same
//! `RandomSeed` on every machine and run, so it owns its generator instead of taking one from
//! the platform.

/// What a stream of random numbers is for, so that one trial's streams never overlap.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    /// A configuration drawn uniformly (Random, Hyperband and the Bayesian start).
    Uniform = 1,
    /// The Bayesian candidates and their perturbations.
    Candidates = 2,
}

pub(super) struct Rng(u64);

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator that depends only on the tuning job's seed, the trial's index and the
    /// purpose: never on timing or on how many numbers another trial drew.
    pub(super) fn new(seed: u64, index: u32, stream: Stream) -> Rng {
        let a = mix(seed.wrapping_add(GOLDEN));
        let b = mix(u64::from(index).wrapping_mul(GOLDEN) ^ a);
        Rng(mix(b ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)))
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        mix(self.0)
    }

    /// Uniform in [0, 1).
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in 0..n (n > 0).
    pub(super) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    pub(super) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: ln stays finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_seed_index_and_purpose() {
        let draw = |s, i, k| Rng::new(s, i, k).next_u64();
        assert_eq!(draw(7, 3, Stream::Uniform), draw(7, 3, Stream::Uniform));
        assert_ne!(draw(7, 3, Stream::Uniform), draw(8, 3, Stream::Uniform));
        assert_ne!(draw(7, 3, Stream::Uniform), draw(7, 4, Stream::Uniform));
        assert_ne!(draw(7, 3, Stream::Uniform), draw(7, 3, Stream::Candidates));
    }

    #[test]
    fn unit_and_below_stay_in_range_and_spread() {
        let mut r = Rng::new(1, 0, Stream::Uniform);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let u = r.unit();
            assert!((0.0..1.0).contains(&u));
            buckets[r.below(10) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
        let mean: f64 = (0..10_000).map(|_| r.normal()).sum::<f64>() / 10_000.0;
        assert!(mean.abs() < 0.05, "{mean}");
    }
}
