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
//! **Absent members** ([`MacAccumulator::pack_sparse`]): a member may be `None` (zero). A merge
//! of two absent members is absent and costs nothing; any other merge costs one key switch. With
//! `m` present members at indices `bitrev(0), ..., bitrev(m - 1)` (bit reversal over `ell` bits)
//! the key switches are `sum_t ceil(m / 2^t)` (`t = 1..ell`), about `m`, instead of `D - 1`:
//! [`sparse_key_switches`].
//!
//! # Evaluation (NTT domain, modulus `qP`, the division by `P` postponed)
//! The inputs are NTT-domain accumulators modulo `q`. They are lifted to `qP` as `P C_r` (limbs
//! `p_j` times `P`, limb `P` zero), and every merge works on `P`-scaled ciphertexts:
//! `X^s B` is a pointwise product with `NTT(X^s)`, `sigma_k` a slot permutation
//! ([`crate::galois::SlotTables`]), and the key switch of `c = sigma_k(A - X^s B)` adds
//! `sum_i [c']_{p_i} ksk_i` **without** dividing by `P`, where `c' = round(c_a / P) mod q` (the
//! `a` part, taken to the coefficient domain on all `L + 1` limbs and divided with rounding,
//! since earlier key switches left it `P`-scaled only up to their noise): the result is
//! `P R` plus noise. The `b` parts are never divided until the packed ciphertext is (once, at
//! the end). Per key switch: `L + 1` inverse and `L (L + 1)` forward NTTs plus
//! `2 L (L + 1)` pointwise products; per packed ciphertext two inverse and `2L` forward NTTs
//! for the final division (the coefficient-domain evaluation it replaces took
//! `L (L + 1) + 2 (L + 1)` NTTs per key switch, a division per key switch, plus `2L` per
//! member).
//!
//! # Noise
//! Useful coefficients keep their original noise exactly (the `D^{-1}` scaling is undone exactly).
//! Each key switch adds at most `B_ks = L N max(p_i) eta / P + N/2 + 1` ([`crate::galois`]:
//! the digit noise, and the rounding of `c'` times the ternary key), and the final division
//! adds a rounding `|r_0 + r_1 s| <= (N + 1)/2` that the per-switch `N/2 + 1` already covers
//! for the first switch of the tree. A merge maps noise bounds `(E_A, E_B)` to
//! `2 E_A + 2 E_B + B_ks`, so after `ell` levels the added noise is at most
//! `(4^ell - 1)/3 * B_ks` (`B_pack`, included in the parameters' budget for `max_pack`). It
//! depends on the ciphertexts, hence on the weights, and is covered by the flooding like
//! everything else.
//!
//! # Cost
//! Merges of one level run in parallel on the rayon pool. For `N = 8192`, `L = 3` about
//! 0.25 ms per key switch on one idle core.

#![expect(
    clippy::indexing_slicing,
    reason = "limb indices are < L + 1 (the qP context's primes) and slot indices < N: every polynomial here comes from the same context; permutation entries are < N by construction"
)]

use std::sync::Arc;

use crate::arith::{add_mod, inv_mod_prime, mul_mod_shoup, shoup, sub_mod};
use crate::ciphertext::check_params;
use crate::error::{FheError, Result};
use crate::eval::MacAccumulator;
use crate::galois::{monomial_ntt, pack_index, GaloisKey, GaloisKeys, KeySwitchContext};
use crate::params::RlweParameters;
use crate::rns::RnsPoly;
use rayon::prelude::*;

/// A `P`-scaled ciphertext modulo `qP` (NTT domain): `(b, a)`.
type Lifted = (RnsPoly, RnsPoly);

/// Key switches [`MacAccumulator::pack_sparse`] spends on `present` members of a group of
/// `d` (a power of two) placed at the bit-reversed indices of `0..present` (see
/// [`bitrev_index`]): `sum_{t=1..log2 d} ceil(present / 2^t)`, and 0 when `present <= 1`
/// (for `d = 1` or one member the member is returned as it is).
pub fn sparse_key_switches(d: usize, present: usize) -> usize {
    if present <= 1 || d <= 1 {
        return 0;
    }
    (1..=d.trailing_zeros())
        .map(|t| present.div_ceil(1 << t))
        .sum()
}

/// Index `bitrev(j)` over `log2 d` bits: where the `j`-th present member of a group of `d`
/// goes so that a sparse pack costs [`sparse_key_switches`].
pub fn bitrev_index(d: usize, j: usize) -> usize {
    let bits = d.trailing_zeros();
    if bits == 0 {
        return 0;
    }
    j.reverse_bits() >> (usize::BITS - bits)
}

/// `v mod m` for `v < 2^64`, fast when `v < 2m` (primes of one parameter set have close sizes).
#[inline]
pub(crate) fn reduce(v: u64, m: u64) -> u64 {
    if v < m {
        v
    } else if v - m < m {
        v - m
    } else {
        v % m
    }
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
        if accs.is_empty() {
            return Err(FheError::range(
                "number of ciphertexts to pack",
                0,
                "a power of two >= 1",
            ));
        }
        Self::pack_sparse(accs.into_iter().map(Some).collect(), offset, keys)
    }

    /// [`MacAccumulator::pack`] where `None` members are zero: merges of two absent members are
    /// skipped (no key switch). `members.len()` is the packing factor `D` (a power of two
    /// `<= max_pack`). With no member present the result is zero; with `D = 1` the member
    /// itself.
    pub fn pack_sparse(
        members: Vec<Option<MacAccumulator>>,
        offset: usize,
        keys: &GaloisKeys,
    ) -> Result<MacAccumulator> {
        let d = members.len();
        let params = Arc::clone(&keys.params);
        if d == 0 || !d.is_power_of_two() || d > params.max_pack().max(1) {
            return Err(FheError::range(
                "number of ciphertexts to pack",
                d,
                format!("a power of two <= {}", params.max_pack()),
            ));
        }
        for acc in members.iter().flatten() {
            check_params(&params, &acc.params)?;
        }
        let terms = members.iter().flatten().map(|a| a.terms).max().unwrap_or(0);
        let present = members.iter().filter(|m| m.is_some()).count();
        if present <= 1 {
            // nothing to merge: the member moves by X^(r - offset mod D) (zero if none)
            let Some((r, mut acc)) = members
                .into_iter()
                .enumerate()
                .find_map(|(r, m)| m.map(|a| (r, a)))
            else {
                return Ok(MacAccumulator::new(&params));
            };
            let n = params.degree();
            let e = (2 * n + r - offset % d) % (2 * n);
            if e != 0 {
                let ones = vec![1u64; params.moduli().len()];
                let tab = monomial_table(&params, e, &ones);
                for poly in [&mut acc.b, &mut acc.a] {
                    for ((limb, t), tl) in poly
                        .limbs
                        .iter_mut()
                        .zip(params.ctx.tables())
                        .zip(&tab.limbs)
                    {
                        t.mul_scaled(limb, tl);
                    }
                }
            }
            return Ok(acc);
        }
        let ks = params.ks.as_ref().ok_or_else(|| {
            FheError::param(
                "special_prime",
                "none",
                "these parameters do not support packing",
            )
        })?;
        let lift = lift_table(&params, ks, d, offset)?;
        let mut cur: Vec<Option<Lifted>> = members
            .into_par_iter()
            .map(|m| m.map(|acc| lift_member(ks, &lift, acc)))
            .collect();
        let n = params.degree();
        for t in 1..=d.trailing_zeros() {
            let s = d >> t;
            let key = keys.key_for(pack_index(n, d, t))?;
            let hi = cur.split_off(s);
            cur = cur
                .into_par_iter()
                .zip(hi)
                .map(|(a, b)| merge(ks, key, a, b))
                .collect::<Result<_>>()?;
        }
        let (b, a) =
            cur.into_iter().next().flatten().ok_or_else(|| {
                FheError::range("number of ciphertexts to pack", d, "a power of two")
            })?;
        Ok(MacAccumulator {
            b: mod_down(ks, b),
            a: mod_down(ks, a),
            params,
            terms,
        })
    }
}

/// `N f_j NTT(X^e)` modulo each prime `p_j` of `q`: multiplying by `f_j X^e` with
/// [`crate::ntt::NttTable::mul_scaled`].
fn monomial_table(params: &RlweParameters, e: usize, factors: &[u64]) -> RnsPoly {
    let ctx = &params.ctx;
    let mut mono = monomial_ntt(ctx, e);
    for ((limb, t), (&p, &f)) in mono
        .limbs
        .iter_mut()
        .zip(ctx.tables())
        .zip(ctx.moduli().iter().zip(factors))
    {
        let c = t.scale_for_mul(f);
        let c_s = shoup(c, p);
        for v in limb.iter_mut() {
            *v = mul_mod_shoup(*v, c, c_s, p);
        }
    }
    mono
}

/// `N P D^{-1} NTT(X^{-offset})` modulo each prime of `q`: lifting a member to `qP`, scaled by
/// `P`, divided by `D` and shifted (the form [`crate::ntt::NttTable::mul_scaled`] takes).
fn lift_table(
    params: &RlweParameters,
    ks: &KeySwitchContext,
    d: usize,
    offset: usize,
) -> Result<RnsPoly> {
    let n = params.degree();
    let factors = params
        .moduli()
        .iter()
        .zip(&ks.p_mod)
        .map(|(&p, &pm)| {
            inv_mod_prime(d as u64 % p, p)
                .map(|d_inv| crate::arith::mul_mod(d_inv, pm, p))
                .ok_or_else(|| FheError::param("moduli", p, "must not divide the packing factor"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(monomial_table(params, 2 * n - offset % d, &factors))
}

/// `P D^{-1} X^{-offset} acc` modulo `qP` (the `P` limb is zero).
fn lift_member(ks: &KeySwitchContext, lift: &RnsPoly, acc: MacAccumulator) -> Lifted {
    let n = ks.qp.degree();
    let lift_poly = |mut poly: RnsPoly| {
        for ((limb, t), tab) in poly.limbs.iter_mut().zip(ks.qp.tables()).zip(&lift.limbs) {
            t.mul_scaled(limb, tab);
        }
        poly.limbs.push(vec![0u64; n]);
        poly
    };
    (lift_poly(acc.b), lift_poly(acc.a))
}

/// `x *= X^s` (pointwise, every limb of `qP`).
fn shift(ks: &KeySwitchContext, key: &GaloisKey, x: &mut Lifted) {
    for poly in [&mut x.0, &mut x.1] {
        for ((limb, t), tab) in poly
            .limbs
            .iter_mut()
            .zip(ks.qp.tables())
            .zip(&key.slots.x_s.limbs)
        {
            t.mul_scaled(limb, tab);
        }
    }
}

/// One merge `R = (A + X^s B) + sigma_k(A - X^s B)` on `P`-scaled ciphertexts (absent = zero).
fn merge(
    ks: &KeySwitchContext,
    key: &GaloisKey,
    a: Option<Lifted>,
    b: Option<Lifted>,
) -> Result<Option<Lifted>> {
    let moduli = ks.qp.moduli();
    // (sum, dif) = (A + X^s B, A - X^s B)
    let (mut sum, dif) = match (a, b) {
        (None, None) => return Ok(None),
        (Some(a), None) => {
            let dif = a.clone();
            (a, dif)
        }
        (None, Some(mut b)) => {
            shift(ks, key, &mut b);
            let mut neg = b.clone();
            for poly in [&mut neg.0, &mut neg.1] {
                for (limb, &p) in poly.limbs.iter_mut().zip(moduli) {
                    for v in limb.iter_mut() {
                        *v = if *v == 0 { 0 } else { p - *v };
                    }
                }
            }
            (b, neg)
        }
        (Some(mut a), Some(mut b)) => {
            shift(ks, key, &mut b);
            for (pa, pb) in [(&mut a.0, &mut b.0), (&mut a.1, &mut b.1)] {
                for ((la, lb), &p) in pa.limbs.iter_mut().zip(pb.limbs.iter_mut()).zip(moduli) {
                    for (x, y) in la.iter_mut().zip(lb.iter_mut()) {
                        let (s, t) = (add_mod(*x, *y, p), sub_mod(*x, *y, p));
                        *x = s;
                        *y = t;
                    }
                }
            }
            (a, b)
        }
    };
    let perm = &key.slots.perm;
    // + sigma_k(dif).b
    for ((dst, src), &p) in sum.0.limbs.iter_mut().zip(&dif.0.limbs).zip(moduli) {
        for (x, &i) in dst.iter_mut().zip(perm) {
            *x = add_mod(*x, src[i as usize], p);
        }
    }
    // + the key switch of sigma_k(dif).a, left multiplied by P. Its digits are those of
    // round(sigma_k(dif).a / P) modulo q (dif is P-scaled up to the noise of earlier key
    // switches, so the division must round): coefficient domain, every limb of qP.
    let l = ks.num_q();
    let n = ks.qp.degree();
    let tables = ks.qp.tables();
    let mut coeffs: Vec<Vec<u64>> = dif
        .1
        .limbs
        .iter()
        .zip(tables)
        .map(|(src, t)| {
            let mut c: Vec<u64> = perm.iter().map(|&j| src[j as usize]).collect();
            t.backward(&mut c);
            c
        })
        .collect();
    let top = coeffs.pop().unwrap_or_default();
    let sp = ks.special_prime();
    let half = sp / 2;
    for (j, c) in coeffs.iter_mut().enumerate() {
        let (p, pm) = (moduli[j], ks.p_mod[j]);
        for (x, &v) in c.iter_mut().zip(&top) {
            let v_p = if v > half {
                sub_mod(reduce(v, p), pm, p)
            } else {
                reduce(v, p)
            };
            *x = sub_mod(*x, v_p, p);
        }
        tables[j].mul_scaled(c, &ks.p_inv_scaled[j]);
    }
    let mut other = vec![0u64; n];
    for (i, c) in coeffs.iter().enumerate().take(l) {
        let (kb, ka) = (&key.b[i], &key.a[i]);
        for (m, (t, &pm)) in tables.iter().zip(moduli).enumerate() {
            for (o, &v) in other.iter_mut().zip(c) {
                *o = reduce(v, pm);
            }
            t.forward(&mut other);
            t.mul_acc(&mut sum.0.limbs[m], &other, &kb.limbs[m]);
            t.mul_acc(&mut sum.1.limbs[m], &other, &ka.limbs[m]);
        }
    }
    Ok(Some(sum))
}

/// `round(x / P)` from `qP` to `q`, NTT domain in and out.
pub(crate) fn mod_down(ks: &KeySwitchContext, mut x: RnsPoly) -> RnsPoly {
    let l = ks.num_q();
    let tables = ks.qp.tables();
    let sp = ks.special_prime();
    let half = sp / 2;
    let mut top = x.limbs.pop().unwrap_or_default();
    if let Some(t) = tables.get(l) {
        t.backward(&mut top);
    }
    let mut tmp = vec![0u64; top.len()];
    for (j, limb) in x.limbs.iter_mut().enumerate() {
        let (t, p, pm) = (&tables[j], ks.qp.moduli()[j], ks.p_mod[j]);
        // centered representative of x mod P, reduced mod p_j
        for (o, &v) in tmp.iter_mut().zip(&top) {
            *o = if v > half {
                sub_mod(reduce(v, p), pm, p)
            } else {
                reduce(v, p)
            };
        }
        t.forward(&mut tmp);
        for (o, &v) in limb.iter_mut().zip(&tmp) {
            *o = sub_mod(*o, v, p);
        }
        t.mul_scaled(limb, &ks.p_inv_scaled[j]);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_key_switch_counts() {
        assert_eq!(sparse_key_switches(64, 64), 63);
        assert_eq!(sparse_key_switches(64, 46), 23 + 12 + 6 + 3 + 2 + 1);
        assert_eq!(sparse_key_switches(16, 14), 7 + 4 + 2 + 1);
        assert_eq!(sparse_key_switches(8, 5), 3 + 2 + 1);
        assert_eq!(sparse_key_switches(8, 1), 0);
        assert_eq!(sparse_key_switches(1, 1), 0);
        let idx: Vec<usize> = (0..8).map(|j| bitrev_index(8, j)).collect();
        assert_eq!(idx, vec![0, 4, 2, 6, 1, 5, 3, 7]);
        assert_eq!(bitrev_index(1, 0), 0);
    }
}
