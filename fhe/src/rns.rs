//! Residue-number-system (RNS) polynomials modulo `q = p_0 * ... * p_{L-1}` and the two exact
//! conversions out of RNS this crate needs.
//!
//! * [`Pow2Rounder`]: `x -> round(2^k * x / q) mod 2^k` for `x` given by its residues, `k <= 127`.
//!   Algorithm: with `y_i = x_i * (q/p_i)^{-1} mod p_i` we have `x = sum_i y_i * q/p_i - v*q` for
//!   an integer `v`, so `2^k x / q = sum_i y_i * 2^k / p_i - v * 2^k`, and the last term vanishes
//!   modulo `2^k`. Each `2^k / p_i` is precomputed as the fixed-point integer
//!   `c_i = floor(2^(k+128) / p_i)`; then `round(2^k x/q) mod 2^k` is bits `128..128+k` of
//!   `sum_i y_i c_i + 2^127` (computed mod 2^256, which keeps every bit we need because
//!   `k + 128 <= 255`). The truncation of each `c_i` is below 1, so the computed sum is below the
//!   exact one by at most `sum_i y_i < L * 2^62 <= 2^64` units of `2^-128`: the result is the exact
//!   rounding except when the exact value is within `2^-64` of a half-integer, i.e. the rounding
//!   error is at most `1/2 + 2^-64` in absolute value. Cost per coefficient: `L` modular
//!   multiplications and `4L` word multiplications.
//!   This single routine serves BFV decryption (`k = l`, giving `round(t x/q) mod t`) and
//!   modulus switching to a power of two (`k` = output width).
//! * [`RnsContext::garner2`]: exact CRT of two residues into `[0, p_0 p_1)` as a `u128`.
//!
//! Security: public arithmetic; running time depends only on public sizes.

#![expect(
    clippy::indexing_slicing,
    reason = "every limb vector has exactly `degree` entries and there is one per modulus; both are checked when an RnsContext/RnsPoly is built, so indices are bounded by construction"
)]

use crate::arith::{inv_mod_prime, mul_mod, mul_mod_shoup, shoup};
use crate::error::{FheError, Result};
use crate::ntt::NttTable;
use crate::wide::{add_assign, mul_small, pow2_div, U256};

/// Moduli, NTT tables and CRT constants for one ring `Z_q[X]/(X^N+1)`.
#[derive(Clone, Debug)]
pub struct RnsContext {
    degree: usize,
    moduli: Vec<u64>,
    tables: Vec<NttTable>,
    /// `(q/p_i)^{-1} mod p_i`.
    q_hat_inv: Vec<u64>,
    /// Shoup companions of `q_hat_inv`.
    q_hat_inv_shoup: Vec<u64>,
    /// `p_0^{-1} mod p_1` (0 when `L = 1`).
    p0_inv_mod_p1: u64,
    /// Shoup companion of `p0_inv_mod_p1`.
    p0_inv_mod_p1_shoup: u64,
}

impl RnsContext {
    /// Build NTT tables and CRT constants. The moduli must be distinct NTT-friendly primes.
    pub fn new(degree: usize, moduli: &[u64]) -> Result<Self> {
        if moduli.is_empty() || moduli.len() > 4 {
            return Err(FheError::param(
                "moduli",
                moduli.len(),
                "need between 1 and 4 primes",
            ));
        }
        let tables = moduli
            .iter()
            .map(|&p| NttTable::new(degree, p))
            .collect::<Result<Vec<_>>>()?;
        let mut q_hat_inv = Vec::with_capacity(moduli.len());
        for (i, &p) in moduli.iter().enumerate() {
            let mut prod = 1u64;
            for (j, &pj) in moduli.iter().enumerate() {
                if i != j {
                    prod = mul_mod(prod, pj % p, p);
                }
            }
            let inv = inv_mod_prime(prod, p)
                .ok_or_else(|| FheError::param("moduli", p, "moduli must be distinct primes"))?;
            q_hat_inv.push(inv);
        }
        let p0_inv_mod_p1 = match moduli {
            [p0, p1, ..] => inv_mod_prime(*p0 % *p1, *p1)
                .ok_or_else(|| FheError::param("moduli", p0, "moduli must be distinct primes"))?,
            _ => 0,
        };
        let q_hat_inv_shoup = q_hat_inv
            .iter()
            .zip(moduli)
            .map(|(&w, &p)| shoup(w, p))
            .collect();
        Ok(Self {
            degree,
            moduli: moduli.to_vec(),
            tables,
            q_hat_inv,
            q_hat_inv_shoup,
            p0_inv_mod_p1,
            p0_inv_mod_p1_shoup: match moduli {
                [_, p1, ..] => shoup(p0_inv_mod_p1, *p1),
                _ => 0,
            },
        })
    }

    /// Ring degree `N`.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// The primes `p_i`.
    pub fn moduli(&self) -> &[u64] {
        &self.moduli
    }

    /// NTT tables, one per prime.
    pub fn tables(&self) -> &[NttTable] {
        &self.tables
    }

    /// `log2(q)`.
    pub fn log2_q(&self) -> f64 {
        self.moduli.iter().map(|&p| (p as f64).log2()).sum()
    }

    /// A zero polynomial with the right shape.
    pub fn zero(&self) -> RnsPoly {
        RnsPoly {
            limbs: vec![vec![0u64; self.degree]; self.moduli.len()],
        }
    }

    /// Forward NTT of every limb.
    pub fn forward(&self, poly: &mut RnsPoly) {
        for (limb, t) in poly.limbs.iter_mut().zip(&self.tables) {
            t.forward(limb);
        }
    }

    /// Inverse NTT (with `1/N`) of every limb.
    pub fn backward(&self, poly: &mut RnsPoly) {
        for (limb, t) in poly.limbs.iter_mut().zip(&self.tables) {
            t.backward(limb);
        }
    }

    /// `acc += a * b` slot-wise (NTT domain).
    pub fn mul_acc(&self, acc: &mut RnsPoly, a: &RnsPoly, b: &RnsPoly) {
        for (((acc, a), b), t) in acc
            .limbs
            .iter_mut()
            .zip(&a.limbs)
            .zip(&b.limbs)
            .zip(&self.tables)
        {
            t.mul_acc(acc, a, b);
        }
    }

    /// Exact CRT of `(x mod p_0, x mod p_1)` into `[0, p_0 p_1)` (Garner). With one modulus,
    /// returns `x_0`. Cost: two modular multiplications.
    #[inline]
    pub fn garner2(&self, x0: u64, x1: u64) -> u128 {
        match self.moduli[..] {
            [p0, p1, ..] => {
                let d = crate::arith::sub_mod(x1, x0 % p1, p1);
                let h = mul_mod_shoup(d, self.p0_inv_mod_p1, self.p0_inv_mod_p1_shoup, p1);
                u128::from(x0) + u128::from(p0) * u128::from(h)
            }
            _ => u128::from(x0),
        }
    }

    /// `p_0 * p_1` (or `p_0` with one modulus): the range of [`RnsContext::garner2`].
    pub fn garner2_modulus(&self) -> u128 {
        match self.moduli[..] {
            [p0, p1, ..] => u128::from(p0) * u128::from(p1),
            [p0] => u128::from(p0),
            [] => 1,
        }
    }

    /// Precompute the rounding `x -> round(2^k x / q) mod 2^k`.
    pub fn pow2_rounder(&self, k: u32) -> Result<Pow2Rounder> {
        if !(1..=127).contains(&k) {
            return Err(FheError::param("output bits", k, "must be in 1..=127"));
        }
        let c = self.moduli.iter().map(|&p| pow2_div(k + 128, p)).collect();
        Ok(Pow2Rounder {
            k,
            c,
            q_hat_inv: self.q_hat_inv.clone(),
            q_hat_inv_shoup: self.q_hat_inv_shoup.clone(),
            moduli: self.moduli.clone(),
        })
    }
}

/// Precomputed `x -> round(2^k * x / q) mod 2^k` (see the module documentation).
#[derive(Clone, Debug)]
pub struct Pow2Rounder {
    k: u32,
    c: Vec<U256>,
    q_hat_inv: Vec<u64>,
    q_hat_inv_shoup: Vec<u64>,
    moduli: Vec<u64>,
}

impl Pow2Rounder {
    /// Output width `k`.
    pub fn bits(&self) -> u32 {
        self.k
    }

    /// Round coefficient `j` of `poly` (coefficient domain). Panics never; `j < N` is the
    /// caller's invariant (checked by the public entry points).
    #[inline]
    pub fn round_coeff(&self, poly: &RnsPoly, j: usize) -> u128 {
        // Start from 2^127 (one half in the 2^-128 fixed point) so truncation rounds to nearest.
        let mut acc: U256 = [0, 1u64 << 63, 0, 0];
        for i in 0..self.moduli.len() {
            let p = self.moduli[i];
            let y = mul_mod_shoup(
                poly.limbs[i][j],
                self.q_hat_inv[i],
                self.q_hat_inv_shoup[i],
                p,
            );
            add_assign(&mut acc, &mul_small(&self.c[i], y));
        }
        let v = u128::from(acc[2]) | (u128::from(acc[3]) << 64);
        v & ((1u128 << self.k) - 1)
    }
}

/// A polynomial of `Z_q[X]/(X^N+1)` in RNS form: one vector of `N` residues per prime.
/// Whether it holds coefficients or NTT slots is tracked by the owning type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RnsPoly {
    pub(crate) limbs: Vec<Vec<u64>>,
}

impl RnsPoly {
    /// Residues modulo prime `i`.
    pub fn limb(&self, i: usize) -> Option<&[u64]> {
        self.limbs.get(i).map(Vec::as_slice)
    }

    /// Number of limbs (primes).
    pub fn num_limbs(&self) -> usize {
        self.limbs.len()
    }

    /// Overwrite every limb with the reduction of small signed coefficients (`|c| < p`).
    pub(crate) fn set_small(&mut self, ctx: &RnsContext, coeffs: &[i8]) {
        for (limb, &p) in self.limbs.iter_mut().zip(ctx.moduli()) {
            for (dst, &c) in limb.iter_mut().zip(coeffs) {
                *dst = crate::arith::small_mod(i64::from(c), p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arith::ntt_primes;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn garner_with_62_bit_primes() {
        let ps = ntt_primes(62, 16, 2).unwrap();
        let ctx = RnsContext::new(16, &ps).unwrap();
        let q = u128::from(ps[0]) * u128::from(ps[1]);
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        for x in [0u128, 1, q - 1, q / 2]
            .into_iter()
            .chain((0..1000).map(|_| rng.gen_range(0..q)))
        {
            let x0 = (x % u128::from(ps[0])) as u64;
            let x1 = (x % u128::from(ps[1])) as u64;
            assert_eq!(ctx.garner2(x0, x1), x);
        }
    }

    #[test]
    fn pow2_rounding_matches_bigint_for_two_primes() {
        let ps = ntt_primes(50, 16, 2).unwrap();
        let ctx = RnsContext::new(16, &ps).unwrap();
        let q = u128::from(ps[0]) * u128::from(ps[1]);
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for k in [1u32, 16, 37, 64] {
            let r = ctx.pow2_rounder(k).unwrap();
            let mut poly = ctx.zero();
            let xs: Vec<u128> = (0..16).map(|_| rng.gen_range(0..q)).collect();
            for (j, &x) in xs.iter().enumerate() {
                poly.limbs[0][j] = (x % u128::from(ps[0])) as u64;
                poly.limbs[1][j] = (x % u128::from(ps[1])) as u64;
                assert_eq!(ctx.garner2(poly.limbs[0][j], poly.limbs[1][j]), x);
            }
            for (j, &x) in xs.iter().enumerate() {
                // exact: floor((2^k x + q/2) / q) mod 2^k, with x < 2^100 and k <= 64 -> use
                // splitting to stay in u128: 2^k x / q = (x / q) * 2^k ... compute via f64-free path
                let exact = {
                    // long division of (x << k) + q/2 by q using 256-bit via two u128 steps
                    let shifted_hi = if k == 0 { 0 } else { x >> (128 - k) };
                    let shifted_lo = x << k;
                    let (lo, carry) = shifted_lo.overflowing_add(q / 2);
                    let hi = shifted_hi + u128::from(carry);
                    // divide (hi:lo) by q bit by bit
                    let mut rem: u128 = 0;
                    let mut quo: u128 = 0;
                    for bit in (0..256).rev() {
                        let b = if bit >= 128 {
                            (hi >> (bit - 128)) & 1
                        } else {
                            (lo >> bit) & 1
                        };
                        rem = (rem << 1) | b;
                        quo <<= 1;
                        if rem >= q {
                            rem -= q;
                            quo |= 1;
                        }
                    }
                    quo & ((1u128 << k) - 1)
                };
                assert_eq!(r.round_coeff(&poly, j), exact, "k={k} x={x}");
            }
        }
    }
}
