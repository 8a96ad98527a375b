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
//! Cost: `L (L+1)` forward and `2(L+1)` inverse NTTs plus `2L(L+1)N` multiply-adds.
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

use crate::arith::{
    add_mod, inv_mod_prime, mul_mod, mul_mod_shoup, neg_mod, shoup, small_mod, sub_mod,
};
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
    /// Shoup companions of `p_inv`.
    p_inv_shoup: Vec<u64>,
    /// `P mod p_j`.
    p_mod: Vec<u64>,
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
        let p_inv_shoup = p_inv
            .iter()
            .zip(moduli)
            .map(|(&w, &p)| shoup(w, p))
            .collect();
        Ok(Self {
            qp,
            special,
            p_inv,
            p_inv_shoup,
            p_mod,
        })
    }

    pub(crate) fn special_prime(&self) -> u64 {
        self.special
    }

    fn num_q(&self) -> usize {
        self.p_inv.len()
    }

    /// `round(x / P)` from `qP` (coefficient domain) to `q`.
    fn mod_down(&self, x: &RnsPoly, q_ctx: &RnsContext) -> RnsPoly {
        let l = self.num_q();
        let sp = self.special;
        let half = sp / 2;
        let mut out = q_ctx.zero();
        for j in 0..l {
            let p = q_ctx.moduli()[j];
            let (pinv, pinv_s, pm) = (self.p_inv[j], self.p_inv_shoup[j], self.p_mod[j]);
            for n in 0..x.limbs[j].len() {
                let xp = x.limbs[l][n];
                // centered representative of x mod P, reduced mod p_j
                let xp_mod = if xp > half {
                    sub_mod(xp % p, pm, p) // xp - P
                } else {
                    xp % p
                };
                out.limbs[j][n] = mul_mod_shoup(sub_mod(x.limbs[j][n], xp_mod, p), pinv, pinv_s, p);
            }
        }
        out
    }
}

/// Apply `X -> X^k` (`k` odd) to a coefficient-domain polynomial.
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
                dst[j - n] = neg_mod(c, p);
            }
        }
    }
    out
}

/// Multiply a coefficient-domain polynomial by `X^e` (`0 <= e < 2N`), negacyclically.
pub(crate) fn mul_monomial(ctx: &RnsContext, poly: &RnsPoly, e: usize) -> RnsPoly {
    automorphism_shift(ctx, poly, e % (2 * ctx.degree()))
}

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
                dst[j - n] = neg_mod(c, p);
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
    b: Vec<RnsPoly>,
    /// `a_i`, NTT domain modulo `qP` (expanded from `seeds`).
    a: Vec<RnsPoly>,
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
            keys.push(GaloisKey {
                k: pack_index(n, d, t),
                seeds,
                b: bs,
                a: as_,
            });
        }
        Ok(Self {
            params: Arc::clone(params),
            keys,
        })
    }
}

/// Key switch `c` (coefficient domain modulo `q`, decrypting as `c s'`) to `(beta, alpha)` with
/// `beta + alpha s ~ c s'` (coefficient domain modulo `q`).
pub(crate) fn key_switch(
    params: &RlweParameters,
    ks: &KeySwitchContext,
    key: &GaloisKey,
    c: &RnsPoly,
) -> (RnsPoly, RnsPoly) {
    let qp = &ks.qp;
    let l = ks.num_q();
    let mut acc_b = qp.zero();
    let mut acc_a = qp.zero();
    for i in 0..l {
        let mut digit = qp.zero();
        for (limb, &m) in digit.limbs.iter_mut().zip(qp.moduli()) {
            for (dst, &v) in limb.iter_mut().zip(&c.limbs[i]) {
                *dst = if v < m { v } else { v % m };
            }
        }
        qp.forward(&mut digit);
        qp.mul_acc(&mut acc_b, &digit, &key.b[i]);
        qp.mul_acc(&mut acc_a, &digit, &key.a[i]);
    }
    qp.backward(&mut acc_b);
    qp.backward(&mut acc_a);
    (
        ks.mod_down(&acc_b, &params.ctx),
        ks.mod_down(&acc_a, &params.ctx),
    )
}
