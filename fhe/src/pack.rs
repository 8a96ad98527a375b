//! Packing: merge `D` sparse results into one dense ciphertext before [`MacAccumulator::finalize`],
//! so the returned `a` polynomial is shared by `N` useful values instead of `N / d_b`.
//!
//! # Algorithm (a strided variant of PackLWEs, Chen-Dai-Kim-Song 2020, as used by BumbleBee)
//! Input: `D = 2^ell` accumulators whose useful coefficients sit at positions `p = offset mod D`
//! (e.g. the [`crate::MatmulLayout`] outputs `i d_b k_b + c d_b + d_b - 1`, `offset = d_b - 1`,
//! `D <= d_b`). Each is multiplied by `D^{-1} mod q` (exact in `Z_q`; `q` is odd) and by
//! `X^{-offset}`, so useful values sit at multiples of `D`. Level `t = 1..ell` merges, for
//! `s = D / 2^t`, ciphertexts `A = C_r` and `B = C_{r+s}`:
//!
//! `R = (A + X^s B) + sigma_k(A - X^s B)`, `k = 1 + N / s`,
//!
//! where `sigma_k` fixes `X^(2s m)` and negates `X^(2s m + s)`: `R` keeps `2A` at multiples of `2s`,
//! gets `2B` at `2s m + s`, and every other coefficient of `A`, `B` at those positions cancels
//! exactly. After `ell` levels position `D m + r` holds `D * D^{-1} * (C_r at D m) = C_r at D m`:
//! **the value of input `r` at position `p` ends at position `p - offset + r`.**
//! `D - 1` automorphisms, each evaluated with one key switch ([`crate::galois`]).
//!
//! # Noise
//! Useful coefficients keep their original noise exactly (the `D^{-1}` scaling is undone exactly).
//! Each key switch adds at most `B_ks`; a merge maps noise bounds `(E_A, E_B)` to
//! `2 E_A + 2 E_B + B_ks`, so after `ell` levels the added noise is at most
//! `(4^ell - 1)/3 * B_ks` (`B_pack`, included in the parameters' budget for `max_pack`). It depends
//! on the ciphertexts, hence on the weights, and is covered by the flooding like everything else.
//!
//! # Cost
//! Merges of one level run in parallel on the rayon pool.
//! `D - 1` key switches (`L(L+1)` forward + `2(L+1)` inverse NTTs each) plus `2D` inverse and 2
//! forward NTTs; for `N = 8192`, `L = 3` about 0.6 ms per merged ciphertext.

#![expect(
    clippy::indexing_slicing,
    reason = "the level loop only touches indices r and r + s < 2s = cur.len(), halving each level"
)]

use crate::arith::{add_mod, inv_mod_prime, mul_mod_shoup, shoup, sub_mod};
use crate::ciphertext::check_params;
use crate::error::{FheError, Result};
use crate::eval::MacAccumulator;
use crate::galois::{automorphism, key_switch, mul_monomial, pack_index, GaloisKeys};
use crate::rns::{RnsContext, RnsPoly};
use rayon::prelude::*;

fn combine(ctx: &RnsContext, x: &RnsPoly, y: &RnsPoly, subtract: bool) -> RnsPoly {
    let mut out = x.clone();
    for ((o, yl), &p) in out.limbs.iter_mut().zip(&y.limbs).zip(ctx.moduli()) {
        for (a, &b) in o.iter_mut().zip(yl) {
            *a = if subtract {
                sub_mod(*a, b, p)
            } else {
                add_mod(*a, b, p)
            };
        }
    }
    out
}

impl MacAccumulator {
    /// Merge `accs` (`D` of them, a power of two `<= max_pack`) whose useful coefficients are at
    /// positions `= offset (mod D)`; the value of `accs[r]` at position `p` ends up at position
    /// `p - offset + r` of the result. See the module documentation.
    pub fn pack(
        accs: Vec<MacAccumulator>,
        offset: usize,
        keys: &GaloisKeys,
    ) -> Result<MacAccumulator> {
        let d = accs.len();
        let first = accs.first().ok_or_else(|| {
            FheError::range("number of ciphertexts to pack", 0, "a power of two >= 1")
        })?;
        let params = std::sync::Arc::clone(&first.params);
        if !d.is_power_of_two() || d > params.max_pack() {
            return Err(FheError::range(
                "number of ciphertexts to pack",
                d,
                format!("a power of two <= {}", params.max_pack()),
            ));
        }
        if d == 1 {
            return accs.into_iter().next().ok_or_else(|| {
                FheError::range("number of ciphertexts to pack", 0, "a power of two >= 1")
            });
        }
        check_params(&params, &keys.params)?;
        for acc in &accs {
            check_params(&params, &acc.params)?;
        }
        let ks = params.ks.as_ref().ok_or_else(|| {
            FheError::param(
                "special_prime",
                "none",
                "these parameters do not support packing",
            )
        })?;
        let ctx = &params.ctx;
        let n = params.degree();
        let offset = offset % d;
        let terms = accs.iter().map(|a| a.terms).max().unwrap_or(0);
        let d_inv: Vec<u64> = ctx
            .moduli()
            .iter()
            .map(|&p| inv_mod_prime(d as u64 % p, p).unwrap_or(0))
            .collect();
        // coefficient domain, scaled by D^{-1}, shifted by X^{-offset}
        let mut cur: Vec<(RnsPoly, RnsPoly)> = accs
            .into_iter()
            .map(|acc| {
                let mut pair = (acc.b, acc.a);
                for poly in [&mut pair.0, &mut pair.1] {
                    ctx.backward(poly);
                    for ((limb, &p), &di) in poly.limbs.iter_mut().zip(ctx.moduli()).zip(&d_inv) {
                        let di_s = shoup(di, p);
                        for x in limb.iter_mut() {
                            *x = mul_mod_shoup(*x, di, di_s, p);
                        }
                    }
                    *poly = mul_monomial(ctx, poly, 2 * n - offset);
                }
                pair
            })
            .collect();
        for t in 1..=d.trailing_zeros() {
            let s = d >> t;
            let key = keys.key_for(pack_index(n, d, t))?;
            let k = key.k;
            // merges within a level are independent: run them on the rayon pool
            let merged: Vec<(RnsPoly, RnsPoly)> = (0..s)
                .into_par_iter()
                .map(|r| {
                    let (ab, aa) = &cur[r];
                    let (bb, ba) = &cur[r + s];
                    let xb = mul_monomial(ctx, bb, s);
                    let xa = mul_monomial(ctx, ba, s);
                    let sum_b = combine(ctx, ab, &xb, false);
                    let sum_a = combine(ctx, aa, &xa, false);
                    let dif_b = automorphism(ctx, &combine(ctx, ab, &xb, true), k);
                    let dif_a = automorphism(ctx, &combine(ctx, aa, &xa, true), k);
                    let (beta, alpha) = key_switch(&params, ks, key, &dif_a);
                    let rb = combine(ctx, &combine(ctx, &sum_b, &dif_b, false), &beta, false);
                    let ra = combine(ctx, &sum_a, &alpha, false);
                    (rb, ra)
                })
                .collect();
            let next = merged;
            cur = next;
        }
        let (mut b, mut a) = cur
            .into_iter()
            .next()
            .ok_or_else(|| FheError::range("number of ciphertexts to pack", d, "a power of two"))?;
        ctx.forward(&mut b);
        ctx.forward(&mut a);
        Ok(MacAccumulator {
            params,
            b,
            a,
            terms,
        })
    }
}
