//! Randomness: ternary secrets, centered binomial errors, uniform polynomials expanded from a
//! 32-byte seed, and uniform flooding noise.
//!
//! * Seed expansion: ChaCha20 (`rand_chacha::ChaCha20Rng`) keyed by the seed; residues mod each
//!   prime by rejection sampling on `ceil(log2 p)`-bit words, prime after prime, slot after slot.
//!   The polynomial is produced directly in the NTT domain: the NTT is a bijection of `Z_p^N`, so a
//!   uniform vector of NTT slots is a uniform polynomial and no transform is spent on `a`.
//!   Security: pseudorandom under the ChaCha20 PRF assumption (the seed is uniform and never
//!   reused by honest parties). Cost: about `N L` 64-bit ChaCha outputs.
//! * Ternary: uniform on `{-1, 0, 1}` (rejection on bytes `< 255`, then `mod 3`).
//! * Centered binomial `eta = 21`: difference of the popcounts of two 21-bit uniform words.
//!   Exactly bounded by 21; variance 10.5.
//! * Flooding: uniform on the integers of `[-B, B]` by rejection on `ceil(log2(2B+1))`-bit words.
//!
//! All samplers take a caller-provided `RngCore + CryptoRng`; tests pass seeded ChaCha.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

use crate::noise::CBD_ETA;
use crate::rns::{RnsContext, RnsPoly};

/// A 32-byte seed from which the uniform `a` polynomial of a ciphertext is expanded.
pub type Seed = [u8; 32];

/// Draw a fresh seed.
pub fn fresh_seed<R: RngCore + CryptoRng>(rng: &mut R) -> Seed {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// `n` uniform ternary coefficients.
pub(crate) fn ternary<R: RngCore + CryptoRng>(rng: &mut R, n: usize) -> Vec<i8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let bytes = rng.next_u64().to_le_bytes();
        for &b in &bytes {
            if b < 255 && out.len() < n {
                out.push((b % 3) as i8 - 1);
            }
        }
    }
    out
}

/// `n` centered binomial (`eta = 21`) coefficients.
pub(crate) fn cbd<R: RngCore + CryptoRng>(rng: &mut R, n: usize) -> Vec<i64> {
    let mask = (1u64 << CBD_ETA) - 1;
    (0..n)
        .map(|_| {
            let r = rng.next_u64();
            i64::from((r & mask).count_ones()) - i64::from(((r >> CBD_ETA) & mask).count_ones())
        })
        .collect()
}

/// Uniform polynomial (NTT domain) expanded from `seed`.
pub(crate) fn expand_uniform(ctx: &RnsContext, seed: &Seed) -> RnsPoly {
    let mut rng = ChaCha20Rng::from_seed(*seed);
    let mut poly = ctx.zero();
    for (limb, &p) in poly.limbs.iter_mut().zip(ctx.moduli()) {
        let bits = 64 - (p - 1).leading_zeros();
        let mask = if bits == 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        for slot in limb.iter_mut() {
            loop {
                let v = rng.next_u64() & mask;
                if v < p {
                    *slot = v;
                    break;
                }
            }
        }
    }
    poly
}

/// Uniform integer in `[-bound, bound]` (`bound < 2^126`).
pub(crate) fn uniform_symmetric<R: RngCore + CryptoRng>(rng: &mut R, bound: u128) -> i128 {
    let range = 2 * bound + 1; // fits: bound < 2^126
    let bits = 128 - range.leading_zeros();
    let mask = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let v = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if v < range {
            return v as i128 - bound as i128;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_expected_moments() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let t = ternary(&mut rng, 30000);
        assert!(t.iter().all(|&x| (-1..=1).contains(&x)));
        let zeros = t.iter().filter(|&&x| x == 0).count() as f64 / 30000.0;
        assert!((zeros - 1.0 / 3.0).abs() < 0.02);
        let e = cbd(&mut rng, 30000);
        assert!(e.iter().all(|&x| x.abs() <= 21));
        let var = e.iter().map(|&x| (x * x) as f64).sum::<f64>() / 30000.0;
        assert!((var - 10.5).abs() < 0.5, "{var}");
        for _ in 0..1000 {
            let f = uniform_symmetric(&mut rng, 5);
            assert!((-5..=5).contains(&f));
        }
    }

    #[test]
    fn seed_expansion_is_deterministic() {
        let ps = crate::arith::ntt_primes(50, 16, 2).unwrap();
        let ctx = RnsContext::new(16, &ps).unwrap();
        let a = expand_uniform(&ctx, &[9u8; 32]);
        let b = expand_uniform(&ctx, &[9u8; 32]);
        let c = expand_uniform(&ctx, &[8u8; 32]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
