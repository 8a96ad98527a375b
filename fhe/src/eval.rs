//! Server-side evaluation: plaintext x ciphertext multiply-accumulate in the NTT domain, then
//! [`MacAccumulator::finalize`], the only way to produce something the server may send.
//!
//! # Multiply-accumulate
//! `acc += ct_j * w_j` slot-wise for both `b` and `a` (weights prepared once with
//! [`PlainWeights`]). Cost per product: `2 N L` modular multiply-adds; no NTT (inputs are
//! expanded once, weights cached). The accumulator counts the weight terms it absorbed and
//! refuses to exceed the `mac_terms` budget its parameters were validated for, so the noise
//! analysis cannot be silently violated.
//!
//! # Finalize (re-randomize, add plaintext, switch, extract, flood)
//! 1. `acc += Enc_pk(0)`: `u` ternary, `acc_b += u pk_b`, `acc_a += u pk_a` (in the NTT domain,
//!    cost `L` forward NTTs), then inverse NTT (`2L`) and `b += e_1 + round(q p / t)`,
//!    `a += e_2`. `p` is the server's plaintext (its share's product minus its mask).
//! 2. Extraction: only the coefficients at `positions` of `b` are kept; all `N` coefficients of
//!    `a` are kept (every extracted LWE sample shares this `a`). Per returned ciphertext:
//!    `|positions| * b_bits + N * a_bits` bits.
//! 3. Modulus switching: `b_j -> round(2^b_bits b_j / q)`, `a -> round(2^a_bits a / q)`.
//!    Power-of-two targets: nothing smaller satisfies the decryption bound (see [`crate::noise`]),
//!    a power of two makes the client's decoding a shift, bit-packing exact (no wasted fraction of
//!    a bit per coefficient, unlike a prime), and lets `a` use fewer bits than `b`: `a`'s rounding
//!    error is multiplied only by the ternary `s` and needs `~l + log2 N + 2` bits, whereas `b`
//!    must also carry the 40-bit flooding.
//! 4. Flooding: each kept `b` coefficient gets `+f`, `f` uniform in `[-B_f, B_f]`,
//!    `B_f = ceil(2^39 B_hide)`; see [`crate::noise`] for the bound `B_hide` on the weight-
//!    dependent noise it hides and the resulting `2^-40` statistical distance per coefficient.
//!
//! Security: after step 1 the `a` part is pseudorandom (RLWE with secret `u`), after step 4 the
//! `b` part's noise is statistically independent of the weights; the client learns only
//! `M = X_c W + p` in the extracted slots (the garbage slots are never sent).

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};

use crate::arith::{add_mod, small_mod};
use crate::ciphertext::{check_params, Ciphertext};
use crate::encoding::{encode_scaled, PlainWeights};
use crate::error::{FheError, Result};
use crate::flooding::flood;
use crate::keys::PublicKey;
use crate::output::OutputCiphertext;
use crate::params::RlweParameters;
use crate::rns::RnsPoly;
use crate::sampling::{cbd, ternary};

/// Accumulates `sum_j ct_j * w_j` in the NTT domain.
#[derive(Clone, Debug)]
pub struct MacAccumulator {
    pub(crate) params: Arc<RlweParameters>,
    pub(crate) b: RnsPoly,
    pub(crate) a: RnsPoly,
    pub(crate) terms: usize,
}

impl MacAccumulator {
    /// An empty (zero) accumulator.
    pub fn new(params: &Arc<RlweParameters>) -> Self {
        Self {
            params: Arc::clone(params),
            b: params.ctx.zero(),
            a: params.ctx.zero(),
            terms: 0,
        }
    }

    /// Weight terms absorbed so far.
    pub fn terms(&self) -> usize {
        self.terms
    }

    /// `self += ct * w`.
    pub fn mul_acc(&mut self, ct: &Ciphertext, w: &PlainWeights) -> Result<()> {
        check_params(&self.params, &ct.params)?;
        check_params(&self.params, &w.params)?;
        let terms = self.terms.saturating_add(w.nnz);
        if terms > self.params.mac_terms() {
            return Err(FheError::NoiseBudget {
                reason: format!(
                    "accumulating {terms} weight terms per output coefficient, parameters allow {}",
                    self.params.mac_terms()
                ),
            });
        }
        let ctx = &self.params.ctx;
        ctx.mul_acc(&mut self.b, &ct.b, &w.ntt);
        ctx.mul_acc(&mut self.a, &ct.a, &w.ntt);
        self.terms = terms;
        Ok(())
    }

    /// Re-randomize with `pk`, add the plaintext `plain` (values of `Z_{2^l}` at coefficients
    /// `0..plain.len()`), keep `b` only at `positions`, switch modulus and flood.
    ///
    /// **`positions` must list only true output slots.** The other coefficients of a product hold
    /// partial inner products of the client's input with the weights; sending them would leak
    /// weight information (flooding hides noise, not messages).
    pub fn finalize<R: RngCore + CryptoRng>(
        self,
        pk: &PublicKey,
        plain: &[u64],
        positions: &[usize],
        rng: &mut R,
    ) -> Result<OutputCiphertext> {
        self.finalize_inner(pk, plain, positions, rng, true)
    }

    /// Test-only: the same without flooding, to show the flooding test has power.
    #[cfg(test)]
    pub(crate) fn finalize_unflooded_for_tests<R: RngCore + CryptoRng>(
        self,
        pk: &PublicKey,
        plain: &[u64],
        positions: &[usize],
        rng: &mut R,
    ) -> Result<OutputCiphertext> {
        self.finalize_inner(pk, plain, positions, rng, false)
    }

    fn finalize_inner<R: RngCore + CryptoRng>(
        mut self,
        pk: &PublicKey,
        plain: &[u64],
        positions: &[usize],
        rng: &mut R,
        do_flood: bool,
    ) -> Result<OutputCiphertext> {
        let params = Arc::clone(&self.params);
        check_params(&params, &pk.params)?;
        check_positions(params.degree(), positions)?;
        let encoded = encode_scaled(&params, plain)?;
        let ctx = &params.ctx;
        let n = params.degree();
        // 1. + Enc_pk(0)
        let u = ternary(rng, n);
        let mut u_ntt = ctx.zero();
        u_ntt.set_small(ctx, &u);
        ctx.forward(&mut u_ntt);
        ctx.mul_acc(&mut self.b, &u_ntt, &pk.b_ntt);
        ctx.mul_acc(&mut self.a, &u_ntt, &pk.a_ntt);
        ctx.backward(&mut self.b);
        ctx.backward(&mut self.a);
        let e1 = cbd(rng, n);
        let e2 = cbd(rng, n);
        for (((bl, al), el), &p) in self
            .b
            .limbs
            .iter_mut()
            .zip(self.a.limbs.iter_mut())
            .zip(&encoded.limbs)
            .zip(ctx.moduli())
        {
            for ((x, &m), &e) in bl.iter_mut().zip(el).zip(&e1) {
                *x = add_mod(add_mod(*x, m, p), small_mod(e, p), p);
            }
            for (x, &e) in al.iter_mut().zip(&e2) {
                *x = add_mod(*x, small_mod(e, p), p);
            }
        }
        // 2.-3. extract and switch
        let rb = &params.rounder_b;
        let ra = &params.rounder_a;
        let mut b: Vec<u128> = positions
            .iter()
            .map(|&j| rb.round_coeff(&self.b, j))
            .collect();
        let a: Vec<u128> = (0..n).map(|j| ra.round_coeff(&self.a, j)).collect();
        // 4. flood
        if do_flood {
            flood(
                &mut b,
                params.output_b_bits(),
                params.noise().flood_bound,
                rng,
            );
        }
        Ok(OutputCiphertext {
            params_id: params.id(),
            b,
            a,
        })
    }
}

/// Positions must be distinct and `< N`.
pub(crate) fn check_positions(n: usize, positions: &[usize]) -> Result<()> {
    if positions.is_empty() || positions.len() > n {
        return Err(FheError::range(
            "number of positions",
            positions.len(),
            format!("1..={n}"),
        ));
    }
    let mut sorted = positions.to_vec();
    sorted.sort_unstable();
    if let Some(&last) = sorted.last() {
        if last >= n {
            return Err(FheError::range("position", last, format!("< N = {n}")));
        }
    }
    if sorted.windows(2).any(|w| matches!(w, [x, y] if x == y)) {
        return Err(FheError::range(
            "positions",
            "duplicate",
            "distinct coefficients",
        ));
    }
    Ok(())
}
