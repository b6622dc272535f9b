//! A small deterministic PRNG: PCG32 (XSH RR), seeded through SplitMix64.
//!
//! Devices and the simulator draw noise and jitter from it. Each device gets its own
//! stream from `(seed, stream)`, so adding a device or a fault to one device never changes
//! the numbers another device draws: two simulated counties that differ by one injected
//! fault stay identical everywhere else.
//!
//! Not for cryptography.

/// PCG32 generator (O'Neill 2014), 64-bit state, 32-bit output.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    inc: u64,
}

const MULTIPLIER: u64 = 6_364_136_223_846_793_005;

/// SplitMix64 step: spreads a poor seed (0, 1, 2 ...) over the whole state space.
const fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator for `stream` under `seed`; different streams are independent sequences.
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng { state: 0, inc: (splitmix64(stream ^ 0x5851_F42D_4C95_7F2D) << 1) | 1 };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(splitmix64(seed));
        rng.next_u32();
        rng
    }

    /// The next 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// Uniform in `[0, 1)`.
    pub fn f32(&mut self) -> f32 {
        // 24 bits fill an f32 mantissa exactly.
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// Uniform in `[0, 1)` with double precision.
    pub fn f64(&mut self) -> f64 {
        let hi = u64::from(self.next_u32() >> 5);
        let lo = u64::from(self.next_u32() >> 6);
        ((hi << 26) | lo) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.f32()
    }

    /// Uniform integer in `0..n` (0 when `n` is 0), without modulo bias worth noticing
    /// for the small `n` devices use.
    pub fn below(&mut self, n: u32) -> u32 {
        ((u64::from(self.next_u32()) * u64::from(n)) >> 32) as u32
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    /// Standard normal deviate (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = 1.0 - self.f32(); // (0, 1], so the log is finite
        let u2 = self.f32();
        libm::sqrtf(-2.0 * libm::logf(u1)) * libm::cosf(core::f32::consts::TAU * u2)
    }

    /// Normal with mean `mean` and standard deviation `sd`.
    pub fn gauss(&mut self, mean: f32, sd: f32) -> f32 {
        mean + sd * self.normal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_stream_give_the_same_sequence() {
        let mut a = Rng::new(42, 7);
        let mut b = Rng::new(42, 7);
        for _ in 0..100 {
            assert_eq!(a.next_u32(), b.next_u32());
        }
    }

    #[test]
    fn different_streams_differ() {
        let mut a = Rng::new(42, 1);
        let mut b = Rng::new(42, 2);
        let same = (0..100).filter(|_| a.next_u32() == b.next_u32()).count();
        assert!(same < 3);
    }

    #[test]
    fn uniform_and_normal_draws_have_the_right_moments() {
        let mut r = Rng::new(1, 1);
        let n = 20_000;
        let (mut sum, mut sum_sq, mut usum) = (0.0_f64, 0.0_f64, 0.0_f64);
        for _ in 0..n {
            let x = f64::from(r.normal());
            sum += x;
            sum_sq += x * x;
            let u = r.f32();
            assert!((0.0..1.0).contains(&u));
            usum += f64::from(u);
        }
        let mean = sum / f64::from(n);
        let var = sum_sq / f64::from(n) - mean * mean;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
        assert!((usum / f64::from(n) - 0.5).abs() < 0.01);
        for _ in 0..1000 {
            assert!(r.below(10) < 10);
            let d = r.f64();
            assert!((0.0..1.0).contains(&d));
        }
    }
}
