//! Noise flooding of the server's returned `b` coefficients.
//!
//! Algorithm: add an independent uniform integer `f in [-B_f, B_f]` to each coefficient modulo
//! `2^b_bits`. Security: for any integer offset `|x| <= B_hide`,
//! `SD(f, f + x) = |x| / (2 B_f + 1) <= 2^-sigma` when `B_f >= 2^(sigma-1) B_hide`; the
//! parameters set `B_f = ceil(2^(sigma-1) B_hide)` with `B_hide` the proven bound of
//! [`crate::noise`] on everything in the sent `b` that depends on the weights or on the
//! re-randomization secret. Cost: one rejection-sampled 128-bit draw per coefficient.

use rand_core::{CryptoRng, RngCore};

use crate::sampling::uniform_symmetric;

/// Add uniform `[-bound, bound]` noise to each value modulo `2^bits`.
pub(crate) fn flood<R: RngCore + CryptoRng>(
    values: &mut [u128],
    bits: u32,
    bound: u128,
    rng: &mut R,
) {
    let mask = if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    for v in values.iter_mut() {
        let f = uniform_symmetric(rng, bound);
        *v = v.wrapping_add(f as u128) & mask;
    }
}

#[cfg(test)]
mod tests {
    //! Statistical test: the decryption error of returned ciphertexts must not depend on the
    //! weights. Two weight sets (all ones vs uniform 24-bit), same client input, many trials;
    //! two-sample Kolmogorov-Smirnov distance on the per-coefficient errors. The same statistic on
    //! unflooded outputs must reject, which shows the test has power.

    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    use crate::*;

    const D: usize = 768;
    const TRIALS: usize = 3;

    fn params() -> Arc<RlweParameters> {
        // Wide outputs (b_bits = 100, a_bits = 94, far more than needed) so the weight-dependent
        // noise is well above the rounding terms when flooding is off; flooding is scaled to it.
        RlweParametersBuilder::from_preset(Preset::N4096Q109)
            .ring_bits(RingBits(24))
            .weight_bound(WeightBound::Uniform)
            .output_bits_for_tests(100, 94)
            .build()
            .unwrap()
    }

    /// Negacyclic product of `x` and `w` modulo 2^l.
    fn product(x: &[u64], w: &[u64], n: usize, mask: u64) -> Vec<u64> {
        let mut out = vec![0u64; n];
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0 {
                continue;
            }
            for (j, &wj) in w.iter().enumerate() {
                if wj == 0 {
                    continue;
                }
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

    fn errors(params: &Arc<RlweParameters>, w: &[u64], flooded: bool, seed: u64) -> Vec<f64> {
        let n = params.degree();
        let mask = params.plain_mask();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut fixed = ChaCha20Rng::seed_from_u64(99);
        let sk = SecretKey::generate(params, &mut fixed);
        let pk = sk.public_key(&mut fixed);
        let x: Vec<u64> = (0..D).map(|_| fixed.gen::<u64>() & mask).collect();
        let expected = product(&x, w, n, mask);
        let weights = PlainWeights::from_ring(params, w).unwrap();
        let positions: Vec<usize> = (0..n).collect();
        let mut all = Vec::with_capacity(TRIALS * n);
        for _ in 0..TRIALS {
            let ct = sk.encrypt(&x, &mut rng).unwrap().expand(params).unwrap();
            let mut acc = MacAccumulator::new(params);
            acc.mul_acc(&ct, &weights).unwrap();
            let out = if flooded {
                acc.finalize(&pk, &[], &positions, &mut rng).unwrap()
            } else {
                acc.finalize_unflooded_for_tests(&pk, &[], &positions, &mut rng)
                    .unwrap()
            };
            assert!(
                sk.decrypt_output(&out, &positions).unwrap() == expected,
                "decryption mismatch"
            );
            let errs = sk
                .output_errors_for_tests(&out, &positions, &expected)
                .unwrap();
            let half_step = 1i128 << (params.output_b_bits() - params.ring_bits() - 1);
            assert!(errs.iter().all(|e| e.abs() < half_step));
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
    fn flooded_noise_does_not_depend_on_weights() {
        let params = params();
        let n = params.degree();
        let mask = params.plain_mask();
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let kb = n / D;
        // W0: all ones in the Cheetah layout; W1: uniform 24-bit in the same layout.
        let mut w0 = vec![0u64; n];
        let mut w1 = vec![0u64; n];
        for i in 0..kb * D {
            w0[i] = 1;
            w1[i] = rng.gen::<u64>() & mask;
        }
        let samples = (TRIALS * n) as f64;
        // KS critical value at alpha = 1e-3: 1.95 sqrt(2/n)
        let critical = 1.95 * (2.0 / samples).sqrt();

        let e0 = errors(&params, &w0, true, 10);
        let e1 = errors(&params, &w1, true, 11);
        let d_flooded = ks_distance(e0.clone(), e1.clone());
        let ratio = variance(&e0) / variance(&e1);
        assert!(
            d_flooded < critical,
            "flooded KS distance {d_flooded} >= {critical}"
        );
        assert!((ratio - 1.0).abs() < 0.1, "flooded variance ratio {ratio}");
        // the flooding really is the dominant noise: uniform on [-B, B] has variance B^2/3
        let b = params.noise().flood_bound as f64;
        let v = variance(&e0) / (b * b / 3.0);
        assert!((v - 1.0).abs() < 0.1, "{v}");

        // Power check: without flooding the same statistic separates W0 from W1.
        let u0 = errors(&params, &w0, false, 12);
        let u1 = errors(&params, &w1, false, 13);
        let d_unflooded = ks_distance(u0.clone(), u1.clone());
        assert!(
            d_unflooded > 10.0 * critical,
            "unflooded KS distance {d_unflooded} too small: test has no power"
        );
        assert!(variance(&u1) > 100.0 * variance(&u0));
    }
}
