//! Noise analysis: the bounds that make decryption exact and flooding sound, and the choice of
//! the output (modulus-switched) widths derived from them.
//!
//! # Notation
//! `N` ring degree, `q = prod p_i`, `t = 2^l`, `eta = 21` (centered binomial error, variance
//! `eta/2 = 10.5`, `|e| <= eta`), `s` ternary secret (`||s||_1 <= N`), `T` the number of nonzero
//! weight coefficients that can meet one output coefficient over a whole multiply-accumulate
//! (`T <= N` for one product), `w` the largest weight magnitude (centered lift), `sigma` the
//! statistical security parameter (40), `delta = 2^-64` the per-coefficient failure probability of
//! the tail bound.
//!
//! # Fresh ciphertext
//! A fresh encryption of `m in Z_t^N` is `(b, a)` with `b + a s = round(q m / t) + e (mod q)`,
//! i.e. `q/t * m + e + eps` with `|eps_i| <= 1/2` (the encoding rounding; this is how `q mod t != 0`
//! is handled: no `q mod t` term ever multiplies the message).
//!
//! # After the multiply-accumulate and the plaintext addition
//! `sum_j ct_j * w_j + encode(p)` has phase `q/t * M + E_W (mod q)` where
//! `M = sum_j m_j w_j + p` is computed over the integers, so `q/t * M = q/t * (M mod t) (mod q)`
//! exactly, and `E_W = sum_j (e_j + eps_j) * w_j + eps_p`. Bound (per coefficient):
//!
//! * `|sum_j eps_j * w_j| <= T w / 2` (worst case, any message);
//! * `sum_j e_j * w_j` is a sum of `<= T` independent centered-binomial variables scaled by
//!   `|coefficient| <= w`; centered binomial with parameter `eta` is `eta/2`-sub-Gaussian, so
//!   `Pr[|.| > w * sqrt(eta T ln(2/delta))] <= delta`;
//! * `|eps_p| <= 1/2`.
//!
//! `B_W = w (T/2 + sqrt(eta T ln(2/delta))) + 1/2`.
//!
//! # Re-randomization with the public key
//! The server adds `Enc_pk(0) = (u pk_b + e_1, u pk_a + e_2)` (`u` ternary, `e_i` binomial) so
//! the returned `a` is pseudorandom under RLWE and does not reveal `sum_j a_j w_j`. Its phase
//! noise is `u e_pk + e_1 + e_2 s`, `|.| <= B_pk = (2N + 1) eta` (worst case).
//!
//! # Modulus switching, flooding, decryption
//! `b` (only the extracted coefficients) is rounded to `2^kb`, `a` to `2^ka`, both with the
//! rounding of [`crate::rns::Pow2Rounder`] (error `<= 1/2 + 2^-64`), then uniform flooding
//! `f in [-B_f, B_f]` is added to each sent `b` coefficient. The client computes
//! `b + 2^(kb-ka) a s (mod 2^kb) = 2^kb/t * M + Err` with
//!
//! `|Err| <= 2^kb/q (B_W + B_pk) + (1/2 + 2^-64) + 2^(kb-ka) B_as + B_f`
//!
//! and decryption `round(t * phase / 2^kb) mod t` is exact iff `|Err| < 2^kb / (2t)`.
//! The `a`-rounding term uses a tail bound instead of `N/2`: the switched `a'` never involves `s`
//! (it is `sum_j a_j w_j + u pk_a + e_2` with `pk_a` uniform), so the rounding errors
//! `|r_i| <= 1/2 + 2^-64` are independent of the uniform ternary `s`, and Hoeffding gives
//! `Pr[|(r s)_j| > sqrt(N ln(2/delta) / 2)] <= delta` (about `2^8.2` instead of `2^11` at
//! `N = 4096`). Below, `B_as = min(N/2, sqrt(N ln(2/delta)/2)) (1 + 2^-60)`.
//!
//! **Flooding bound.** The part of `Err` that depends on the weights (and on the server's
//! randomness `u`, which the re-randomization must keep hidden) is, as an integer offset of the
//! sent `b`, at most `B_hide = 2^kb/q (B_W + B_pk) + 1` in absolute value (rounding a shifted real
//! moves the integer by at most the shift plus one). For uniform `f` on `2B_f+1` integers and any
//! fixed `|x| <= B_hide`, `SD(f, f + x) = |x| / (2B_f + 1)`. With `B_f = ceil(2^(sigma-1) B_hide)`
//! the statistical distance per sent coefficient is `<= 2^-sigma + delta`; for `m` coefficients
//! sent under one key it is at most `m (2^-sigma + delta)` (union bound). Set `sigma` higher in the
//! builder to cover a session's coefficient count under a per-session budget.
//!
//! **Width choice.** Writing everything relative to `H = 2^kb/(2t)`:
//! `f1 = 2t (B_W + B_pk)(1 + 2^(sigma-1)) / q` (independent of the widths),
//! `f3 = 2t B_as / 2^ka`, `f2 = 2t (2^(sigma-1) + 2 + 2^-64) / 2^kb`.
//! We require `f1 <= 1/2` (else the modulus `q` is too small: error), then take the smallest `ka`
//! with `f3 <= (1 - f1)/2` and the smallest `kb` with `f2 <= 1 - f1 - f3 - 2^-20`. The margin
//! reported is `-log2(f1 + f2 + f3)` bits. All of this runs in `f64` on logarithm-sized numbers;
//! the `2^-20` slack covers its rounding.

use crate::error::{FheError, Result};

/// Centered binomial parameter of every error polynomial (`|e| <= 21`, variance 10.5, standard
/// deviation 3.24, matching the HomomorphicEncryption.org table's `sigma = 3.2`).
pub const CBD_ETA: u32 = 21;

/// `-log2` of the per-coefficient failure probability of the sub-Gaussian tail bound.
pub const TAIL_BITS: u32 = 64;

/// Inputs of the analysis.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseInputs {
    /// Ring degree `N`.
    pub degree: usize,
    /// `log2 q`.
    pub log2_q: f64,
    /// Plaintext bits `l` (`t = 2^l`).
    pub plain_bits: u32,
    /// `log2` of the largest weight magnitude `w`.
    pub log2_weight: f64,
    /// Nonzero weight coefficients meeting one output coefficient (`T`).
    pub mac_terms: usize,
    /// Statistical security `sigma` of the flooding.
    pub stat_bits: u32,
    /// Further weight-independent noise at modulus `q` that the flooding must also cover (the
    /// packing key-switch noise of [`crate::pack`]; 0 without packing).
    pub extra_noise: f64,
    /// Force the output widths `(b_bits, a_bits)` instead of taking the smallest valid ones
    /// (still checked against the bound). `None` in normal use.
    pub output_bits: Option<(u32, u32)>,
}

/// Result of the analysis (see the module documentation for every symbol).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseReport {
    /// `log2 B_W`: the weight-dependent noise at modulus `q`.
    pub log2_weight_noise: f64,
    /// `log2 B_pk`: the re-randomization noise at modulus `q`.
    pub log2_rerand_noise: f64,
    /// Width of the sent `b` coefficients (`kb`).
    pub b_bits: u32,
    /// Width of the sent `a` coefficients (`ka`).
    pub a_bits: u32,
    /// `log2 B_hide` at modulus `2^kb`.
    pub log2_hidden: f64,
    /// Flooding bound `B_f`.
    pub flood_bound: u128,
    /// `-log2(f1 + f2 + f3)`: how many bits of slack remain before decryption could fail.
    pub margin_bits: f64,
    /// `-log2(f1)`: slack of the modulus `q` alone.
    pub q_margin_bits: f64,
}

/// Run the analysis; refuses (with the numbers) when `q` is too small.
pub fn analyze(inp: &NoiseInputs) -> Result<NoiseReport> {
    let n = inp.degree as f64;
    let t = f64::from(inp.plain_bits).exp2();
    let eta = f64::from(CBD_ETA);
    let terms = inp.mac_terms as f64;
    let ln_2_over_delta = f64::from(TAIL_BITS + 1) * core::f64::consts::LN_2;
    let w = inp.log2_weight.exp2();
    let b_w = w * (terms / 2.0 + (eta * terms * ln_2_over_delta).sqrt()) + 0.5;
    let b_pk = (2.0 * n + 1.0) * eta;
    let b_e = b_w + b_pk + inp.extra_noise.max(0.0);
    let flood_mult = f64::from(inp.stat_bits.saturating_sub(1)).exp2();
    let f1 = (2.0 * t * b_e * (1.0 + flood_mult)).log2() - inp.log2_q;
    if f1 > -1.0 {
        let need = (2.0 * t * b_e * (1.0 + flood_mult)).log2() + 1.0;
        return Err(FheError::NoiseBudget {
            reason: format!(
                "log2 q = {:.1} but exact decryption with {}-bit flooding needs log2 q >= {:.1} \
                 (l = {}, log2 |w| = {:.1}, {} weight terms per output: weight noise 2^{:.1})",
                inp.log2_q,
                inp.stat_bits,
                need,
                inp.plain_bits,
                inp.log2_weight,
                inp.mac_terms,
                b_w.log2()
            ),
        });
    }
    let f1 = f1.exp2();
    let rest = 1.0 - f1;
    let b_as = (n / 2.0).min((n * ln_2_over_delta / 2.0).sqrt()) * (1.0 + 1e-18);
    // smallest ka with 2t (N/2)(1+2^-60) / 2^ka <= rest/2
    let ka_real = (2.0 * t * b_as * 2.0 / rest).log2();
    let ka = ka_real.ceil().max(1.0) as u32;
    let f3 = 2.0 * t * b_as / f64::from(ka).exp2();
    let budget2 = rest - f3 - 1e-6;
    let kb_real = (2.0 * t * (flood_mult + 2.0 + 1e-18) / budget2).log2();
    let kb = kb_real.ceil() as u32;
    if kb > 127 {
        return Err(FheError::NoiseBudget {
            reason: format!("output width {kb} bits exceeds 127"),
        });
    }
    let ka = ka.min(kb);
    let (kb, ka) = match inp.output_bits {
        Some((b, a)) if (1..=127).contains(&b) && (1..=b).contains(&a) => (b, a),
        Some((b, a)) => {
            return Err(FheError::param(
                "output bits",
                format!("({b}, {a})"),
                "need 1 <= a_bits <= b_bits <= 127",
            ))
        }
        None => (kb, ka),
    };
    let f3 = 2.0 * t * b_as / f64::from(ka).exp2();
    let f2 = 2.0 * t * (flood_mult + 2.0) / f64::from(kb).exp2();
    let total = f1 + f2 + f3;
    if total >= 1.0 - 1e-6 {
        return Err(FheError::NoiseBudget {
            reason: format!(
                "no output width satisfies the bound (f1={f1:e}, f2={f2:e}, f3={f3:e})"
            ),
        });
    }
    let hidden = f64::from(kb).exp2() / inp.log2_q.exp2() * b_e + 1.0;
    let flood = (hidden * flood_mult).ceil();
    // flood < 2^kb / (2t) <= 2^126, representable
    let flood_bound = if flood >= 2f64.powi(127) {
        u128::MAX >> 1
    } else {
        flood as u128
    };
    Ok(NoiseReport {
        log2_weight_noise: b_w.log2(),
        log2_rerand_noise: b_pk.log2(),
        b_bits: kb,
        a_bits: ka,
        log2_hidden: hidden.log2(),
        flood_bound,
        margin_bits: -total.log2(),
        q_margin_bits: -f1.log2(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_weights_fit_4096() {
        let r = analyze(&NoiseInputs {
            degree: 4096,
            log2_q: 108.9,
            plain_bits: 37,
            log2_weight: 15.0,
            mac_terms: 4096,
            stat_bits: 40,
            extra_noise: 0.0,
            output_bits: None,
        })
        .unwrap();
        assert!(r.margin_bits > 0.0);
        assert!(r.b_bits >= 37 + 40);
        assert!(r.a_bits >= 37 + 9);
    }

    #[test]
    fn uniform_weights_refused_at_4096() {
        let e = analyze(&NoiseInputs {
            degree: 4096,
            log2_q: 108.9,
            plain_bits: 37,
            log2_weight: 36.0,
            mac_terms: 4096,
            stat_bits: 40,
            extra_noise: 0.0,
            output_bits: None,
        })
        .unwrap_err();
        assert!(matches!(e, FheError::NoiseBudget { .. }));
    }
}
