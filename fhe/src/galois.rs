//! Automorphisms `X -> X^k` of `Z_q[X]/(X^N+1)` and hybrid key switching with one special prime,
//! used by [`crate::pack`].
//!
//! # Key switching (from `s'` to `s`)
//! With `q = p_0 ... p_{L-1}` and special prime `P >= max p_i`, the key for `s'` is, for every digit
//! `i < L`, an RLWE sample modulo `qP`: `ksk_i = (-a_i s + e_i + P g_i s', a_i)` where
//! `g_i = (q/p_i) [(q/p_i)^{-1}]_{p_i}` (so `P g_i = P mod p_i` on limb `i` and 0 on every other
//! limb), `a_i` expanded from a seed. To switch `c` (decrypting under `s'` as `c s'`):
//! `(beta, alpha) = round( sum_i [c]_{p_i} ksk_i / P )`, giving
//! `beta + alpha s = c s' + sum_i [c]_{p_i} e_i / P + r_0 + r_1 s` with rounding `|r| <= 1/2`.
//! Noise bound (worst case): `B_ks = L N max(p_i) eta / P + N/2 + 1`.
//! [`crate::pack`] evaluates it in the NTT domain and postpones the division by `P` (and its
//! rounding) to the end of a whole packing tree; the automorphism is then a slot permutation
//! ([`SlotTables`]). Cost per key switch: `L` inverse and `L^2` forward NTTs plus
//! `2L(L+1)N` multiply-adds.
//! Security: the keys are RLWE samples modulo `qP` with the same secret; `log2(qP)` is within the
//! 128-bit table bound (checked by the builder). Circular security of `s(X^k)` under `s` is the
//! standard assumption of every rotation/packing scheme (SEAL, Cheetah, BumbleBee).
//!
//! Key size: per automorphism, `L` seeds and `L` polynomials modulo `qP`.

#![expect(
    clippy::indexing_slicing,
    reason = "limb and coefficient indices are bounded by the number of moduli / N of the same context, fixed at construction"
)]

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};

use crate::arith::{add_mod, inv_mod_prime, mul_mod, small_mod, sub_mod};
use crate::error::{FheError, Result};
use crate::keys::SecretKey;
use crate::params::RlweParameters;
use crate::rns::{RnsContext, RnsPoly};
use crate::sampling::{cbd, expand_uniform, fresh_seed, Seed};

/// RNS context over `q P` plus the mod-down constants.
#[derive(Clone, Debug)]
pub(crate) struct KeySwitchContext {
    /// Context over `p_0, ..., p_{L-1}, P`.
    pub(crate) qp: RnsContext,
    special: u64,
    /// `P^{-1} mod p_j`.
    p_inv: Vec<u64>,
    /// `P mod p_j`.
    pub(crate) p_mod: Vec<u64>,
    /// `N P^{-1} mod p_j` repeated `N` times: multiplying by `P^{-1}` with
    /// [`crate::ntt::NttTable::mul_scaled`].
    pub(crate) p_inv_scaled: Vec<Vec<u64>>,
}

impl KeySwitchContext {
    pub(crate) fn new(degree: usize, moduli: &[u64], special: u64) -> Result<Self> {
        let mut all = moduli.to_vec();
        all.push(special);
        let qp = RnsContext::new(degree, &all)?;
        let p_inv = moduli
            .iter()
            .map(|&p| {
                inv_mod_prime(special % p, p)
                    .ok_or_else(|| FheError::param("special_prime", special, "not invertible"))
            })
            .collect::<Result<Vec<_>>>()?;
        let p_mod = moduli.iter().map(|&p| special % p).collect();
        let p_inv_scaled = p_inv
            .iter()
            .zip(qp.tables())
            .map(|(&w, t)| vec![t.scale_for_mul(w); degree])
            .collect();
        Ok(Self {
            qp,
            special,
            p_inv,
            p_mod,
            p_inv_scaled,
        })
    }

    pub(crate) fn special_prime(&self) -> u64 {
        self.special
    }

    pub(crate) fn num_q(&self) -> usize {
        self.p_inv.len()
    }
}

/// Apply `X -> X^k` (`k` odd) to a coefficient-domain polynomial (the reference the slot
/// tables are tested against).
#[cfg(test)]
pub(crate) fn automorphism(ctx: &RnsContext, poly: &RnsPoly, k: usize) -> RnsPoly {
    let n = ctx.degree();
    let two_n = 2 * n;
    let mut out = ctx.zero();
    for (dst, (src, &p)) in out
        .limbs
        .iter_mut()
        .zip(poly.limbs.iter().zip(ctx.moduli()))
    {
        for (i, &c) in src.iter().enumerate() {
            let j = (i * k) & (two_n - 1);
            if j < n {
                dst[j] = c;
            } else {
                dst[j - n] = crate::arith::neg_mod(c, p);
            }
        }
    }
    out
}

/// Multiply a coefficient-domain polynomial by `X^e` (`0 <= e < 2N`), negacyclically.
#[cfg(test)]
pub(crate) fn mul_monomial(ctx: &RnsContext, poly: &RnsPoly, e: usize) -> RnsPoly {
    automorphism_shift(ctx, poly, e % (2 * ctx.degree()))
}

#[cfg(test)]
fn automorphism_shift(ctx: &RnsContext, poly: &RnsPoly, e: usize) -> RnsPoly {
    let n = ctx.degree();
    let mut out = ctx.zero();
    for (dst, (src, &p)) in out
        .limbs
        .iter_mut()
        .zip(poly.limbs.iter().zip(ctx.moduli()))
    {
        for (i, &c) in src.iter().enumerate() {
            let j = (i + e) & (2 * n - 1);
            if j < n {
                dst[j] = c;
            } else {
                dst[j - n] = crate::arith::neg_mod(c, p);
            }
        }
    }
    out
}

/// Key-switching key for one automorphism `X -> X^k`.
#[derive(Clone, Debug)]
pub(crate) struct GaloisKey {
    pub(crate) k: usize,
    seeds: Vec<Seed>,
    /// `b_i`, NTT domain modulo `qP`.
    pub(crate) b: Vec<RnsPoly>,
    /// `a_i`, NTT domain modulo `qP` (expanded from `seeds`).
    pub(crate) a: Vec<RnsPoly>,
    /// Public tables to apply the automorphism and the packing shift in the NTT domain.
    pub(crate) slots: SlotTables,
}

/// The NTT-domain form of `X -> X^k` and of the multiplication by `X^s` (`s = N / (k - 1)`,
/// the shift that goes with `k` in [`crate::pack`]), modulo every prime of `qP`.
///
/// The NTT ([`crate::ntt`]) evaluates a polynomial at the `N` primitive `2N`-th roots of unity
/// `w_i`; `sigma_k(f)(w_i) = f(w_i^k)` and `w_i^k` is again a root `w_j`, so the automorphism
/// is the slot permutation `perm[i] = j`, found by matching `NTT(X^k)` against `NTT(X)` (one
/// forward NTT each; the slot order of the transform is the same for every prime, which is
/// checked). `X^s` becomes the pointwise product with `NTT(X^s)`. Cost to build: three NTTs
/// per prime; memory `4 N (L + 1) + 8 N (L + 1)` bytes per key.
#[derive(Clone, Debug)]
pub(crate) struct SlotTables {
    /// Slot `i` of `NTT(sigma_k(f))` is slot `perm[i]` of `NTT(f)`.
    pub(crate) perm: Vec<u32>,
    /// `N NTT(X^s)` per prime of `qP` (the form [`crate::ntt::NttTable::mul_scaled`] takes).
    pub(crate) x_s: RnsPoly,
}

/// The NTT (slot values) of the monomial `X^e`, `0 <= e < 2N`, modulo every prime of `ctx`.
pub(crate) fn monomial_ntt(ctx: &RnsContext, e: usize) -> RnsPoly {
    let n = ctx.degree();
    let e = e % (2 * n);
    let mut poly = ctx.zero();
    for (limb, &p) in poly.limbs.iter_mut().zip(ctx.moduli()) {
        if e < n {
            limb[e] = 1;
        } else {
            limb[e - n] = p - 1;
        }
    }
    ctx.forward(&mut poly);
    poly
}

impl SlotTables {
    /// Tables for `X -> X^k` (`k` odd, `1 < k < 2N`) and the shift `X^s`.
    pub(crate) fn new(qp: &RnsContext, k: usize, s: usize) -> Result<Self> {
        let n = qp.degree();
        let roots = monomial_ntt(qp, 1);
        let powers = monomial_ntt(qp, k);
        let mut perm: Option<Vec<u32>> = None;
        for (w, wk) in roots.limbs.iter().zip(&powers.limbs) {
            let index: std::collections::HashMap<u64, u32> =
                w.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect();
            let this = wk
                .iter()
                .map(|v| index.get(v).copied())
                .collect::<Option<Vec<u32>>>()
                .filter(|_| index.len() == n)
                .ok_or_else(|| {
                    FheError::param("galois key", k, "the NTT slots are not the 2N-th roots")
                })?;
            match &perm {
                Some(p) if *p != this => {
                    return Err(FheError::param(
                        "galois key",
                        k,
                        "the NTT slot order differs between primes",
                    ))
                }
                Some(_) => {}
                None => perm = Some(this),
            }
        }
        let mut x_s = monomial_ntt(qp, s);
        for (limb, t) in x_s.limbs.iter_mut().zip(qp.tables()) {
            for v in limb.iter_mut() {
                *v = t.scale_for_mul(*v);
            }
        }
        Ok(Self {
            perm: perm.unwrap_or_default(),
            x_s,
        })
    }
}

/// The Galois keys needed to pack up to `max_pack` ciphertexts (one key per packing level).
#[derive(Clone, Debug)]
pub struct GaloisKeys {
    pub(crate) params: Arc<RlweParameters>,
    pub(crate) keys: Vec<GaloisKey>,
}

/// Automorphism index used at packing level `t` (1-based) for packing factor `d`:
/// `k_t = 1 + N 2^t / d`.
pub(crate) fn pack_index(n: usize, d: usize, t: u32) -> usize {
    1 + (n << t) / d
}

/// The shift `s = N / (k - 1)` that goes with automorphism `k = 1 + N / s` in packing.
pub(crate) fn pack_shift(n: usize, k: usize) -> usize {
    n / (k - 1).max(1)
}

impl SecretKey {
    /// Generate the Galois keys for packing (client, setup traffic). Cost: per key, `L` key
    /// switching keys, each `(L+1)` NTTs.
    pub fn galois_keys<R: RngCore + CryptoRng>(&self, rng: &mut R) -> Result<GaloisKeys> {
        let params = &self.params;
        let ks = params.ks.as_ref().ok_or_else(|| {
            FheError::param(
                "special_prime",
                "none",
                "these parameters do not support packing",
            )
        })?;
        let n = params.degree();
        let d = params.max_pack();
        let qp = &ks.qp;
        let mut s_qp = qp.zero();
        s_qp.set_small(qp, &self.coeffs);
        qp.forward(&mut s_qp);
        let mut keys = Vec::new();
        for t in 1..=d.trailing_zeros() {
            let k = pack_index(n, d, t);
            // s(X^k) in coefficient form, then NTT modulo qP
            let mut sk_coeff = vec![0i8; n];
            for (i, &c) in self.coeffs.iter().enumerate() {
                let j = (i * k) % (2 * n);
                if j < n {
                    sk_coeff[j] = c;
                } else {
                    sk_coeff[j - n] = -c;
                }
            }
            let mut s_k = qp.zero();
            s_k.set_small(qp, &sk_coeff);
            qp.forward(&mut s_k);
            let mut seeds = Vec::new();
            let mut bs = Vec::new();
            let mut as_ = Vec::new();
            for i in 0..ks.num_q() {
                let seed = fresh_seed(rng);
                let a = expand_uniform(qp, &seed);
                let e = cbd(rng, n);
                let mut b = qp.zero();
                for (limb, &p) in b.limbs.iter_mut().zip(qp.moduli()) {
                    for (x, &ej) in limb.iter_mut().zip(&e) {
                        *x = small_mod(ej, p);
                    }
                }
                qp.forward(&mut b);
                for (j, &p) in qp.moduli().iter().enumerate() {
                    for n_ in 0..n {
                        let mut v = sub_mod(
                            b.limbs[j][n_],
                            mul_mod(a.limbs[j][n_], s_qp.limbs[j][n_], p),
                            p,
                        );
                        if j == i {
                            v = add_mod(v, mul_mod(ks.p_mod[i], s_k.limbs[j][n_], p), p);
                        }
                        b.limbs[j][n_] = v;
                    }
                }
                seeds.push(seed);
                bs.push(b);
                as_.push(a);
            }
            keys.push(GaloisKey {
                k,
                seeds,
                b: bs,
                a: as_,
                slots: SlotTables::new(qp, k, pack_shift(n, k))?,
            });
        }
        Ok(GaloisKeys {
            params: Arc::clone(params),
            keys,
        })
    }
}

impl GaloisKeys {
    pub(crate) fn key_for(&self, k: usize) -> Result<&GaloisKey> {
        self.keys
            .iter()
            .find(|g| g.k == k)
            .ok_or_else(|| FheError::param("galois key", k, "no key for this automorphism"))
    }

    /// Number of automorphism keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys (packing factor 1).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seeds and `b` polynomials, for serialization.
    pub(crate) fn parts(&self) -> impl Iterator<Item = (&Seed, &RnsPoly)> {
        self.keys.iter().flat_map(|g| g.seeds.iter().zip(&g.b))
    }

    /// Rebuild from serialized parts (`b` in the NTT domain modulo `qP`).
    pub(crate) fn from_parts(
        params: &Arc<RlweParameters>,
        parts: Vec<(Seed, RnsPoly)>,
    ) -> Result<Self> {
        let ks = params.ks.as_ref().ok_or_else(|| {
            FheError::param(
                "special_prime",
                "none",
                "these parameters do not support packing",
            )
        })?;
        let n = params.degree();
        let d = params.max_pack();
        let per = ks.num_q();
        let levels = d.trailing_zeros() as usize;
        if parts.len() != per * levels {
            return Err(FheError::malformed(
                "galois keys",
                format!("{} parts, expected {}", parts.len(), per * levels),
            ));
        }
        let mut keys = Vec::with_capacity(levels);
        let mut it = parts.into_iter();
        for t in 1..=d.trailing_zeros() {
            let mut seeds = Vec::with_capacity(per);
            let mut bs = Vec::with_capacity(per);
            let mut as_ = Vec::with_capacity(per);
            for _ in 0..per {
                let (seed, b) = it
                    .next()
                    .ok_or_else(|| FheError::malformed("galois keys", "truncated"))?;
                as_.push(expand_uniform(&ks.qp, &seed));
                seeds.push(seed);
                bs.push(b);
            }
            let k = pack_index(n, d, t);
            keys.push(GaloisKey {
                k,
                seeds,
                b: bs,
                a: as_,
                slots: SlotTables::new(&ks.qp, k, pack_shift(n, k))?,
            });
        }
        Ok(Self {
            params: Arc::clone(params),
            keys,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Preset, RingBits, WeightBound};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// The slot tables agree with the coefficient-domain automorphism and shift for every
    /// packing key.
    #[test]
    fn slot_tables_match_coefficient_automorphisms() {
        let params = RlweParameters::preset(
            Preset::N8192Q200Pack,
            RingBits(37),
            WeightBound::MaxAbs(1 << 16),
        )
        .unwrap();
        let ks = params.ks.as_ref().unwrap();
        let qp = &ks.qp;
        let n = params.degree();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut f = qp.zero();
        for (limb, &p) in f.limbs.iter_mut().zip(qp.moduli()) {
            for v in limb.iter_mut() {
                *v = rng.gen_range(0..p);
            }
        }
        let mut f_ntt = f.clone();
        qp.forward(&mut f_ntt);
        let d = params.max_pack();
        for t in 1..=d.trailing_zeros() {
            let k = pack_index(n, d, t);
            let s = pack_shift(n, k);
            let tabs = SlotTables::new(qp, k, s).unwrap();
            let mut want = automorphism(qp, &f, k);
            qp.forward(&mut want);
            for (j, limb) in want.limbs.iter().enumerate() {
                for (i, &v) in limb.iter().enumerate() {
                    assert_eq!(f_ntt.limbs[j][tabs.perm[i] as usize], v, "k={k}");
                }
            }
            let mut want = mul_monomial(qp, &f, s);
            qp.forward(&mut want);
            let mut got = f_ntt.clone();
            for ((limb, t), tab) in got.limbs.iter_mut().zip(qp.tables()).zip(&tabs.x_s.limbs) {
                t.mul_scaled(limb, tab);
            }
            assert_eq!(got, want, "s={s}");
        }
    }
}
