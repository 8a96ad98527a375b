//! The server-key ("Nimbus-style") direction: the **weight holder** owns the secret key and
//! encrypts its weights once; the **input holder** multiplies those ciphertexts by its plaintext
//! share and returns the result for the key holder to decrypt.
//!
//! Every primitive of the client-key direction is reused unchanged with the roles swapped:
//!
//! | step | client-key (`HeMatMul`) | server-key |
//! |---|---|---|
//! | key owner | client | server |
//! | ciphertext operand ([`crate::SeededCiphertext`]) | client's share `X_c` | weights `W` (sent once, cacheable) |
//! | plaintext operand ([`PlainWeights`]) | weights `W` (signed, bounded) | client's share `X_c` (uniform in `Z_{2^l}`) |
//! | evaluator ([`crate::MacAccumulator`], `pack`, `finalize`) | server | client |
//! | decryptor ([`crate::SecretKey::decrypt_output`]) | client | server |
//!
//! # Noise and flooding in this direction
//! The analysis of [`crate::noise`] holds verbatim with "weights" read as the plaintext
//! multiplier, i.e. the client's share: every coefficient of `X_c` is an element of `Z_{2^l}`
//! lifted to `(-2^(l-1), 2^(l-1)]`, so the parameters must be built with
//! [`crate::WeightBound::Uniform`] (`w = 2^(l-1)`) and `T` = the number of nonzero `X_c`
//! coefficients accumulated into one output ciphertext ([`crate::MacTerms`]). Then
//! `B_W = 2^(l-1) (T/2 + sqrt(eta T ln(2/delta))) + 1/2` bounds `sum_j (e_j + eps_j) x_j + eps_p`,
//! where `e_j` is the key holder's own encryption noise of `W` (known to it, which is why it
//! must be hidden) and `eps` the encoding roundings; re-randomization with the key holder's
//! public key adds `B_pk`, packing adds `B_pack` (the key-switch noise depends on the client's
//! `a`-parts, hence on `X_c`). All three are in `B_hide`, and the flooding
//! `B_f = ceil(2^(sigma - 1) B_hide)` added by [`crate::MacAccumulator::finalize`] makes every
//! returned coefficient's noise `2^-sigma`-close (`sigma = 40`) to a distribution independent
//! of `X_c`. The re-randomization makes the returned `a` pseudorandom (RLWE with the client's
//! fresh ternary `u`), so `sum_j a_j x_j` (the key holder knows every `a_j`) is hidden too. The
//! test below checks both claims statistically.
//!
//! # This file
//! [`PlainWeights::from_ring_sparse`]: the client's plaintext share from its nonzero
//! coefficients only (a Cheetah input block has `n_b d_b` of `N`), without the dense
//! intermediate vectors of [`PlainWeights::from_ring`]. Cost: `L` forward NTTs plus
//! `L * entries` reductions. Memory: `8 N L` bytes.

#![expect(
    clippy::indexing_slicing,
    reason = "positions are checked < N and limb vectors have N entries"
)]

use std::sync::Arc;

use crate::arith::{add_mod, reduce_i128};
use crate::encoding::PlainWeights;
use crate::error::{FheError, Result};
use crate::params::RlweParameters;

impl PlainWeights {
    /// A plaintext operand from `(position, value)` pairs: each value an element of `Z_{2^l}`
    /// (lifted to `(-2^(l-1), 2^(l-1)]`, so the parameters must allow that magnitude, i.e.
    /// [`crate::WeightBound::Uniform`] for arbitrary shares) at coefficient `position < N`;
    /// repeated positions add up. Equal to [`PlainWeights::from_ring`] on the dense vector.
    pub fn from_ring_sparse(
        params: &Arc<RlweParameters>,
        entries: &[(usize, u64)],
    ) -> Result<Self> {
        let n = params.degree();
        let l = params.ring_bits();
        let mask = params.plain_mask();
        let half = 1i128 << (l - 1);
        let bound = params.max_weight_abs();
        let mut lifted = Vec::with_capacity(entries.len());
        for &(pos, v) in entries {
            if pos >= n {
                return Err(FheError::range(
                    "coefficient position",
                    pos,
                    format!("< N = {n}"),
                ));
            }
            if v & !mask != 0 {
                return Err(FheError::range("plaintext value", v, format!("< 2^{l}")));
            }
            let c = i128::from(v);
            let c = if c > half { c - (1i128 << l) } else { c };
            if c.unsigned_abs() > bound {
                return Err(FheError::range(
                    "plaintext magnitude",
                    c,
                    format!("<= {bound} (the bound the noise budget was computed for)"),
                ));
            }
            lifted.push((pos, c));
        }
        let ctx = &params.ctx;
        let mut ntt = ctx.zero();
        for (limb, &p) in ntt.limbs.iter_mut().zip(ctx.moduli()) {
            for &(pos, c) in &lifted {
                limb[pos] = add_mod(limb[pos], reduce_i128(c, p), p);
            }
        }
        ctx.forward(&mut ntt);
        Ok(Self {
            params: Arc::clone(params),
            ntt,
            nnz: lifted.iter().filter(|(_, c)| *c != 0).count(),
        })
    }
}

#[cfg(test)]
mod tests {
    //! Statistical test of the flooding in the server-key direction: the key holder encrypts a
    //! fixed `W` once; the evaluator multiplies it by two very different plaintext shares
    //! (`X_c` all ones vs uniform in `Z_{2^24}`), re-randomizes and floods. The decryption
    //! errors the key holder can compute must not tell the two apart (two-sample KS at
    //! alpha = 1e-3), and the same statistic without flooding must separate them (power).

    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use crate::*;

    const D: usize = 768;
    const TRIALS: usize = 3;

    fn params() -> Arc<RlweParameters> {
        RlweParametersBuilder::from_preset(Preset::N4096Q109)
            .ring_bits(RingBits(24))
            .weight_bound(WeightBound::Uniform)
            .output_bits_for_tests(100, 94)
            .build()
            .unwrap()
    }

    fn product(x: &[u64], w: &[u64], n: usize, mask: u64) -> Vec<u64> {
        let mut out = vec![0u64; n];
        for (i, &xi) in x.iter().enumerate() {
            for (j, &wj) in w.iter().enumerate() {
                let p = xi.wrapping_mul(wj);
                let k = i + j;
                if k < n {
                    out[k] = out[k].wrapping_add(p);
                } else {
                    out[k - n] = out[k - n].wrapping_sub(p);
                }
            }
        }
        out.iter().map(|v| v & mask).collect()
    }

    /// Errors seen by the key holder for plaintext share `x` against the fixed `Enc(W)`.
    fn errors(params: &Arc<RlweParameters>, x: &[u64], flooded: bool, seed: u64) -> Vec<f64> {
        let n = params.degree();
        let mask = params.plain_mask();
        let mut fixed = ChaCha20Rng::seed_from_u64(99);
        let sk = SecretKey::generate(params, &mut fixed);
        let pk = sk.public_key(&mut fixed);
        let w: Vec<u64> = (0..D).map(|_| fixed.gen::<u64>() & mask).collect();
        // the cached encryption of W: the same ciphertext in every trial
        let ct_w = sk.encrypt(&w, &mut fixed).unwrap().expand(params).unwrap();
        let entries: Vec<(usize, u64)> = x.iter().copied().enumerate().collect();
        let plain = PlainWeights::from_ring_sparse(params, &entries).unwrap();
        assert_eq!(plain.ntt, PlainWeights::from_ring(params, x).unwrap().ntt);
        let expected = product(x, &w, n, mask);
        let positions: Vec<usize> = (0..n).collect();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut all = Vec::with_capacity(TRIALS * n);
        for _ in 0..TRIALS {
            let mut acc = MacAccumulator::new(params);
            acc.mul_acc(&ct_w, &plain).unwrap();
            let out = if flooded {
                acc.finalize(&pk, &[], &positions, &mut rng).unwrap()
            } else {
                acc.finalize_unflooded_for_tests(&pk, &[], &positions, &mut rng)
                    .unwrap()
            };
            assert_eq!(sk.decrypt_output(&out, &positions).unwrap(), expected);
            let errs = sk
                .output_errors_for_tests(&out, &positions, &expected)
                .unwrap();
            all.extend(errs.into_iter().map(|e| e as f64));
        }
        all
    }

    fn ks_distance(mut a: Vec<f64>, mut b: Vec<f64>) -> f64 {
        a.sort_by(f64::total_cmp);
        b.sort_by(f64::total_cmp);
        let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
        while i < a.len() && j < b.len() {
            if a[i] <= b[j] {
                i += 1;
            } else {
                j += 1;
            }
            d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
        }
        d
    }

    fn variance(v: &[f64]) -> f64 {
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64
    }

    #[test]
    fn flooded_noise_does_not_depend_on_the_plaintext_share() {
        let params = params();
        let n = params.degree();
        let mask = params.plain_mask();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let x0 = vec![1u64; D];
        let x1: Vec<u64> = (0..D).map(|_| rng.gen::<u64>() & mask).collect();
        let samples = (TRIALS * n) as f64;
        let critical = 1.95 * (2.0 / samples).sqrt();

        let e0 = errors(&params, &x0, true, 20);
        let e1 = errors(&params, &x1, true, 21);
        let d_flooded = ks_distance(e0.clone(), e1.clone());
        assert!(
            d_flooded < critical,
            "flooded KS distance {d_flooded} >= {critical}"
        );
        let ratio = variance(&e0) / variance(&e1);
        assert!((ratio - 1.0).abs() < 0.1, "flooded variance ratio {ratio}");
        let b = params.noise().flood_bound as f64;
        let v = variance(&e0) / (b * b / 3.0);
        assert!((v - 1.0).abs() < 0.1, "{v}");

        let u0 = errors(&params, &x0, false, 22);
        let u1 = errors(&params, &x1, false, 23);
        let d_unflooded = ks_distance(u0.clone(), u1.clone());
        assert!(
            d_unflooded > 10.0 * critical,
            "unflooded KS distance {d_unflooded} too small: test has no power"
        );
        assert!(variance(&u1) > 100.0 * variance(&u0));
    }

    #[test]
    fn sparse_operand_checks_its_inputs() {
        let params =
            RlweParameters::preset(Preset::N4096Q109, RingBits(16), WeightBound::Uniform).unwrap();
        let n = params.degree();
        assert!(PlainWeights::from_ring_sparse(&params, &[(n, 1)]).is_err());
        assert!(PlainWeights::from_ring_sparse(&params, &[(0, 1 << 16)]).is_err());
        let small = RlweParameters::preset(Preset::N4096Q109, RingBits(16), WeightBound::MaxAbs(3))
            .unwrap();
        // 0xfffc lifts to -4: over the bound
        assert!(PlainWeights::from_ring_sparse(&small, &[(0, 0xfffc)]).is_err());
        assert!(PlainWeights::from_ring_sparse(&small, &[(0, 0xfffd)]).is_ok());
        let a = PlainWeights::from_ring_sparse(&params, &[(3, 7), (3, 5), (9, 0)]).unwrap();
        let mut dense = vec![0u64; 10];
        dense[3] = 12;
        assert_eq!(a.ntt, PlainWeights::from_ring(&params, &dense).unwrap().ntt);
    }
}
