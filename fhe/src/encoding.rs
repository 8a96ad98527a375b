//! Coefficient encoding of `Z_{2^l}` values.
//!
//! * Messages (client input, server's additive plaintext): value `m_i in [0, t)` becomes
//!   coefficient `round(q m_i / t) mod q`, computed per prime as
//!   `floor(q/t) m_i + round((q mod t) m_i / t)` with `floor(q/t) mod p = -(q mod t) t^{-1} mod p`
//!   (since `q = 0 mod p`). The encoding error against the real `q/t * m` is at most `1/2` per
//!   coefficient and, crucially, never involves `(q mod t) * (product)` terms: after multiplying
//!   by weights the scale `q/t` stays exact, which is how `t = 2^l` not dividing `q` is handled.
//!   Cost: `2L` multiplications per coefficient.
//! * Weights ([`PlainWeights`]): signed integers (or ring elements, lifted to `(-t/2, t/2]`),
//!   reduced modulo each prime and transformed to the NTT domain once; the result can be cached
//!   and reused for every ciphertext it multiplies (weights are fixed across inferences).
//!   Cost: `L` forward NTTs. Memory: `8 N L` bytes.
//!
//! Messages are placed at coefficient `i` in the order given; the layout (Cheetah-style
//! `n_b x d_b x k_b` blocks) is chosen by the protocol that calls this crate.

#![expect(
    clippy::indexing_slicing,
    reason = "limb indices run over the moduli of the same parameters that shaped the polynomial"
)]

use std::sync::Arc;

use crate::arith::{add_mod, mul_mod_shoup, reduce_i128, shoup};
use crate::error::{FheError, Result};
use crate::params::RlweParameters;
use crate::rns::RnsPoly;

/// Encode `values` (each `< 2^l`, at most `N` of them; the rest are zero) as `round(q m / t)`.
pub(crate) fn encode_scaled(params: &RlweParameters, values: &[u64]) -> Result<RnsPoly> {
    let n = params.degree();
    if values.len() > n {
        return Err(FheError::range(
            "number of values",
            values.len(),
            format!("<= N = {n}"),
        ));
    }
    let mask = params.plain_mask();
    if let Some(bad) = values.iter().find(|&&v| v & !mask != 0) {
        return Err(FheError::range(
            "plaintext value",
            bad,
            format!("< 2^{}", params.ring_bits()),
        ));
    }
    let l = params.ring_bits();
    let r = u128::from(params.q_mod_t);
    let half = 1u128 << (l - 1);
    let ctx = &params.ctx;
    let mut poly = ctx.zero();
    for (i, &p) in ctx.moduli().iter().enumerate() {
        let delta = params.delta_mod_p[i];
        let delta_shoup = shoup(delta, p);
        let limb = &mut poly.limbs[i];
        for (dst, &m) in limb.iter_mut().zip(values) {
            // r * m + t/2 < 2^128 for r, m < 2^64; corr < 2^64
            let corr = ((r * u128::from(m) + half) >> l) as u64;
            let corr = if corr >= p { corr % p } else { corr };
            *dst = add_mod(mul_mod_shoup(m, delta, delta_shoup, p), corr, p);
        }
    }
    Ok(poly)
}

/// A weight polynomial in the NTT domain, ready for [`crate::MacAccumulator::mul_acc`].
#[derive(Clone, Debug)]
pub struct PlainWeights {
    pub(crate) params: Arc<RlweParameters>,
    pub(crate) ntt: RnsPoly,
    pub(crate) nnz: usize,
}

impl PlainWeights {
    /// From signed coefficients (length `<= N`), each `|w| <=` the parameters' weight bound.
    pub fn from_signed(params: &Arc<RlweParameters>, coeffs: &[i64]) -> Result<Self> {
        let wide: Vec<i128> = coeffs.iter().map(|&c| i128::from(c)).collect();
        Self::from_i128(params, &wide)
    }

    /// From ring elements of `Z_{2^l}` (length `<= N`), lifted to `(-2^(l-1), 2^(l-1)]`.
    pub fn from_ring(params: &Arc<RlweParameters>, coeffs: &[u64]) -> Result<Self> {
        let l = params.ring_bits();
        let mask = params.plain_mask();
        let half = 1i128 << (l - 1);
        let mut wide = Vec::with_capacity(coeffs.len());
        for &c in coeffs {
            if c & !mask != 0 {
                return Err(FheError::range("weight", c, format!("< 2^{l}")));
            }
            let v = i128::from(c);
            wide.push(if v > half { v - (1i128 << l) } else { v });
        }
        Self::from_i128(params, &wide)
    }

    fn from_i128(params: &Arc<RlweParameters>, coeffs: &[i128]) -> Result<Self> {
        let n = params.degree();
        if coeffs.len() > n {
            return Err(FheError::range(
                "number of weights",
                coeffs.len(),
                format!("<= N = {n}"),
            ));
        }
        let bound = params.max_weight_abs();
        if let Some(bad) = coeffs.iter().find(|&&c| c.unsigned_abs() > bound) {
            return Err(FheError::range(
                "weight magnitude",
                bad,
                format!("<= {bound} (the bound the noise budget was computed for)"),
            ));
        }
        let ctx = &params.ctx;
        let mut ntt = ctx.zero();
        for (limb, &p) in ntt.limbs.iter_mut().zip(ctx.moduli()) {
            for (dst, &c) in limb.iter_mut().zip(coeffs) {
                *dst = reduce_i128(c, p);
            }
        }
        ctx.forward(&mut ntt);
        Ok(Self {
            params: Arc::clone(params),
            ntt,
            nnz: coeffs.iter().filter(|&&c| c != 0).count(),
        })
    }

    /// Number of nonzero coefficients (counted against the parameters' `mac_terms` budget).
    pub fn nonzeros(&self) -> usize {
        self.nnz
    }
}
