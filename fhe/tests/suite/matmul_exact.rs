//! Exactness of the full server pipeline (encrypt, serialize, expand, multiply-accumulate,
//! plaintext add, re-randomize, extract, modulus switch, flood, serialize, decrypt) against a
//! plaintext reference in wrapping `u64` arithmetic masked to `l` bits.
//!
//! Layout (Cheetah-style, one row): `x` occupies coefficients `0..d`; weight column `c` is placed
//! at `c*d + d-1-j` for row `j`, so output `c` lands at coefficient `c*d + d-1`. With
//! `k_b = floor(N/d)` columns the weight polynomial is as full as the layout allows (worst case
//! for the noise).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

enum Weights {
    /// Uniform in Z_{2^l}.
    Uniform,
    /// Signed, |w| <= bound, biased to negative values.
    SmallSigned(i64),
}

struct Case {
    params: std::sync::Arc<RlweParameters>,
    d: usize,
    weights: Weights,
    /// number of input ciphertexts accumulated (d split across them)
    chunks: usize,
}

fn run(case: &Case, seed: u64) {
    let params = &case.params;
    let n = params.degree();
    let l = params.ring_bits();
    let mask = params.plain_mask();
    let d = case.d;
    let per = d / case.chunks;
    let kb = n / per;
    assert!(kb >= 1);
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sk = SecretKey::generate(params, &mut rng);
    let pk = PublicKey::from_bytes(params, &sk.public_key(&mut rng).to_bytes()).unwrap();
    let x: Vec<u64> = (0..d).map(|_| rng.gen::<u64>() & mask).collect();
    let w_ring: Vec<Vec<u64>> = (0..d)
        .map(|_| {
            (0..kb)
                .map(|_| match case.weights {
                    Weights::Uniform => rng.gen::<u64>() & mask,
                    Weights::SmallSigned(b) => (rng.gen_range(-b..=b / 4) as u64) & mask,
                })
                .collect()
        })
        .collect();
    let positions: Vec<usize> = (0..kb).map(|c| c * per + per - 1).collect();
    let server_plain: Vec<u64> = (0..n).map(|_| rng.gen::<u64>() & mask).collect();
    let mut plain_at = vec![0u64; n];
    for &p in &positions {
        plain_at[p] = server_plain[p];
    }
    let mut acc = MacAccumulator::new(params);
    for chunk in 0..case.chunks {
        let xs = &x[chunk * per..(chunk + 1) * per];
        let ct = sk.encrypt(xs, &mut rng).unwrap();
        let bytes = ct.to_bytes(params).unwrap();
        assert_eq!(bytes.len(), SeededCiphertext::serialized_len(params));
        let ct = SeededCiphertext::from_bytes(params, &bytes)
            .unwrap()
            .expand(params)
            .unwrap();
        let w_poly = match case.weights {
            Weights::Uniform => {
                let mut coeffs = vec![0u64; n];
                for c in 0..kb {
                    for j in 0..per {
                        coeffs[c * per + per - 1 - j] = w_ring[chunk * per + j][c];
                    }
                }
                PlainWeights::from_ring(params, &coeffs).unwrap()
            }
            Weights::SmallSigned(_) => {
                let mut coeffs = vec![0i64; n];
                for c in 0..kb {
                    for j in 0..per {
                        let v = w_ring[chunk * per + j][c];
                        let signed = if v > mask / 2 {
                            (v as i128 - (mask as i128 + 1)) as i64
                        } else {
                            v as i64
                        };
                        coeffs[c * per + per - 1 - j] = signed;
                    }
                }
                PlainWeights::from_signed(params, &coeffs).unwrap()
            }
        };
        acc.mul_acc(&ct, &w_poly).unwrap();
    }
    let out = acc.finalize(&pk, &plain_at, &positions, &mut rng).unwrap();
    let bytes = out.to_bytes(params).unwrap();
    assert_eq!(
        bytes.len(),
        OutputCiphertext::serialized_len(params, positions.len())
    );
    let out = OutputCiphertext::from_bytes(params, &bytes, positions.len()).unwrap();
    let got = sk.decrypt_output(&out, &positions).unwrap();
    for (c, &p) in positions.iter().enumerate() {
        let mut want = 0u64;
        for j in 0..d {
            want = want.wrapping_add(x[j].wrapping_mul(w_ring[j][c]));
        }
        want = want.wrapping_add(server_plain[p]) & mask;
        assert_eq!(got[c], want, "l={l} N={n} d={d} column {c}");
    }
}

#[test]
fn worst_case_uniform_weights_every_width_d768() {
    for (i, l) in [16u32, 32, 37, 41, 64].into_iter().enumerate() {
        let params = RlweParameters::recommended(RingBits(l), WeightBound::Uniform).unwrap();
        let case = Case {
            params,
            d: 768,
            weights: Weights::Uniform,
            chunks: 1,
        };
        run(&case, 100 + i as u64);
    }
}

#[test]
fn small_negative_weights_every_width_d768() {
    for (i, (l, wb)) in [
        (16u32, 1i64 << 14),
        (32, 1 << 16),
        (37, 1 << 16),
        (41, 1 << 14),
        (64, 1 << 16),
    ]
    .into_iter()
    .enumerate()
    {
        let params =
            RlweParameters::recommended(RingBits(l), WeightBound::MaxAbs(wb as u64)).unwrap();
        if l <= 41 {
            assert_eq!(
                params.degree(),
                4096,
                "small weights at l={l} should fit N=4096"
            );
        }
        let case = Case {
            params,
            d: 768,
            weights: Weights::SmallSigned(wb),
            chunks: 1,
        };
        run(&case, 200 + i as u64);
    }
}

#[test]
fn d3072_in_one_polynomial_and_split_accumulation() {
    for (i, l) in [16u32, 37, 64].into_iter().enumerate() {
        let params = RlweParameters::recommended(RingBits(l), WeightBound::Uniform).unwrap();
        run(
            &Case {
                params: params.clone(),
                d: 3072,
                weights: Weights::Uniform,
                chunks: 1,
            },
            300 + i as u64,
        );
    }
    // d = 3072 split over 4 ciphertexts of 768: 4 * 768 * 5 = 15360 > N terms -> needs a larger
    // mac_terms budget, which the builder must accept only if q allows it.
    let params = RlweParametersBuilder::from_preset(Preset::N8192Q186)
        .ring_bits(RingBits(37))
        .weight_bound(WeightBound::Uniform)
        .mac_terms(MacTerms(4 * 8192))
        .build()
        .unwrap();
    run(
        &Case {
            params,
            d: 3072,
            weights: Weights::Uniform,
            chunks: 4,
        },
        400,
    );
}

#[test]
fn accumulator_enforces_term_budget() {
    let params =
        RlweParameters::preset(Preset::N4096Q109, RingBits(16), WeightBound::Uniform).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let sk = SecretKey::generate(&params, &mut rng);
    let ct = sk
        .encrypt(&[1, 2, 3], &mut rng)
        .unwrap()
        .expand(&params)
        .unwrap();
    let w = PlainWeights::from_ring(&params, &vec![1u64; 4096]).unwrap();
    let mut acc = MacAccumulator::new(&params);
    acc.mul_acc(&ct, &w).unwrap();
    let e = acc.mul_acc(&ct, &w).unwrap_err();
    assert!(matches!(e, FheError::NoiseBudget { .. }), "{e}");
}

#[test]
fn fresh_encrypt_decrypt_exact() {
    for l in [16u32, 32, 37, 41, 64] {
        let params = RlweParameters::recommended(RingBits(l), WeightBound::Uniform).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(u64::from(l));
        let sk = SecretKey::generate(&params, &mut rng);
        let mask = params.plain_mask();
        let m: Vec<u64> = (0..params.degree())
            .map(|_| rng.gen::<u64>() & mask)
            .collect();
        let ct = sk.encrypt(&m, &mut rng).unwrap().expand(&params).unwrap();
        assert_eq!(sk.decrypt(&ct).unwrap(), m);
        // edge values
        let edge = vec![0, 1, mask, mask - 1, mask / 2, mask / 2 + 1];
        let ct = sk
            .encrypt(&edge, &mut rng)
            .unwrap()
            .expand(&params)
            .unwrap();
        assert_eq!(&sk.decrypt(&ct).unwrap()[..6], &edge[..]);
    }
}

#[test]
fn input_validation() {
    let params =
        RlweParameters::preset(Preset::N4096Q109, RingBits(32), WeightBound::MaxAbs(100)).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let sk = SecretKey::generate(&params, &mut rng);
    let pk = sk.public_key(&mut rng);
    assert!(sk.encrypt(&[1u64 << 32], &mut rng).is_err());
    assert!(sk.encrypt(&vec![0u64; 4097], &mut rng).is_err());
    assert!(PlainWeights::from_signed(&params, &[101]).is_err());
    assert!(PlainWeights::from_signed(&params, &[-101]).is_err());
    assert!(PlainWeights::from_signed(&params, &[-100, 100]).is_ok());
    let ct = sk.encrypt(&[1], &mut rng).unwrap().expand(&params).unwrap();
    let w = PlainWeights::from_signed(&params, &[1]).unwrap();
    for bad in [vec![], vec![4096], vec![3, 3]] {
        let mut acc = MacAccumulator::new(&params);
        acc.mul_acc(&ct, &w).unwrap();
        assert!(acc.finalize(&pk, &[], &bad, &mut rng).is_err(), "{bad:?}");
    }
    let mut acc = MacAccumulator::new(&params);
    acc.mul_acc(&ct, &w).unwrap();
    assert!(acc.finalize(&pk, &[1u64 << 33], &[0], &mut rng).is_err());
    // other parameters
    let other =
        RlweParameters::preset(Preset::N4096Q109, RingBits(33), WeightBound::MaxAbs(100)).unwrap();
    let w_other = PlainWeights::from_signed(&other, &[1]).unwrap();
    let mut acc = MacAccumulator::new(&params);
    assert!(matches!(
        acc.mul_acc(&ct, &w_other),
        Err(FheError::ParameterMismatch { .. })
    ));
    let out = {
        let mut acc = MacAccumulator::new(&params);
        acc.mul_acc(&ct, &w).unwrap();
        acc.finalize(&pk, &[], &[0, 1], &mut rng).unwrap()
    };
    assert!(sk.decrypt_output(&out, &[0]).is_err());
    assert_eq!(sk.decrypt_output(&out, &[0, 1]).unwrap(), vec![1, 0]);
}
