//! Split packing ([`duet_fhe::orbit`]): a row times a matrix with the first levels of the
//! packing tree on the plaintext side equals the plain product, for every split, with absent
//! leaves, partial blocks, several inner blocks and the largest weights.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::too_many_arguments,
    clippy::needless_range_loop,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

fn params(levels: u32) -> Arc<RlweParameters> {
    RlweParametersBuilder::from_preset(Preset::N8192Q200Pack)
        .ring_bits(RingBits(42))
        .weight_bound(WeightBound::MaxAbs(1 << 16))
        .orbit_levels(levels)
        .build()
        .unwrap()
}

/// `x (1 x d) . W (d x k)` with blocks `1 x d_b x k_b`, packing `pack` column blocks per
/// ciphertext with `levels` plaintext levels; returns the decrypted outputs and the expected.
fn run(
    p: &Arc<RlweParameters>,
    d: usize,
    k: usize,
    d_b: usize,
    k_b: usize,
    pack: usize,
    levels: u32,
    seed: u64,
) -> (Vec<u64>, Vec<u64>) {
    let n = p.degree();
    let mask = p.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let sk = SecretKey::generate(p, &mut rng);
    let pk = sk.public_key(&mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let layout = MatmulLayout::new(p, 1, d_b, k_b).unwrap();
    let w_max = 1i64 << 16;
    let x: Vec<u64> = (0..d)
        .map(|i| {
            if i % 3 == 0 {
                mask
            } else {
                rng.gen::<u64>() & mask
            }
        })
        .collect();
    let w: Vec<i64> = (0..d * k)
        .map(|i| match i % 5 {
            0 => w_max,
            1 => -w_max,
            _ => rng.gen_range(-w_max..=w_max),
        })
        .collect();
    let ibs = d.div_ceil(d_b);
    let cbs = k.div_ceil(k_b);
    let orbits: Vec<InputOrbit> = (0..ibs)
        .map(|ib| {
            let (j0, j1) = (ib * d_b, ((ib + 1) * d_b).min(d));
            let poly = layout.input_poly(&x[j0..j1], 1, j1 - j0).unwrap();
            let ct = sk.encrypt(&poly, &mut rng).unwrap().expand(p).unwrap();
            InputOrbit::new(&ct, pack, levels, &gk).unwrap()
        })
        .collect();
    let block = |ib: usize, cb: usize| -> Vec<i64> {
        let (j0, j1) = (ib * d_b, ((ib + 1) * d_b).min(d));
        let (c0, c1) = (cb * k_b, ((cb + 1) * k_b).min(k));
        let mut b = Vec::new();
        for j in j0..j1 {
            for c in c0..c1 {
                b.push(w[j * k + c]);
            }
        }
        layout.weight_poly(&b, j1 - j0, c1 - c0).unwrap()
    };
    let d_out = pack >> levels;
    let offset = d_b - 1;
    let mut got = vec![0u64; k];
    for g in 0..cbs.div_ceil(pack) {
        let members = (cbs - g * pack).min(pack);
        let leaf_of = |j: usize| pack::bitrev_index(pack, j);
        let nodes: Vec<Option<MacAccumulator>> = (0..d_out)
            .map(|r| {
                let mut acc: Option<MacAccumulator> = None;
                for ib in 0..ibs {
                    let blocks: Vec<Option<Vec<i64>>> = (0..1usize << levels)
                        .map(|j| {
                            let leaf = r + j * d_out;
                            let cb = pack::bitrev_index(pack, leaf);
                            (cb < members).then(|| block(ib, g * pack + cb))
                        })
                        .collect();
                    let refs: Vec<Option<&[i64]>> = blocks.iter().map(|b| b.as_deref()).collect();
                    if let Some(wts) = OrbitWeights::new(p, &refs, pack, levels, offset).unwrap() {
                        acc.get_or_insert_with(|| MacAccumulator::new(p))
                            .mul_acc_orbit(&orbits[ib], &wts)
                            .unwrap();
                    }
                }
                acc
            })
            .collect();
        let packed = MacAccumulator::pack_sparse(nodes, 0, &gk).unwrap();
        let mut positions = Vec::new();
        let mut cols = Vec::new();
        for j in 0..members {
            let cb = g * pack + j;
            for c in 0..k_b.min(k - cb * k_b) {
                let pos = c * d_b + d_b - 1;
                positions.push(pos - offset % pack + leaf_of(j));
                cols.push(cb * k_b + c);
            }
        }
        assert!(positions.iter().all(|&q| q < n));
        let out = packed.finalize(&pk, &[], &positions, &mut rng).unwrap();
        for (c, v) in cols
            .iter()
            .zip(sk.decrypt_output(&out, &positions).unwrap())
        {
            got[*c] = v;
        }
    }
    let want: Vec<u64> = (0..k)
        .map(|c| {
            (0..d).fold(0u64, |a, j| {
                a.wrapping_add(x[j].wrapping_mul(w[j * k + c] as u64))
            }) & mask
        })
        .collect();
    (got, want)
}

#[test]
fn split_packing_matches_the_plain_product() {
    let p = params(6);
    // one inner block, D = 8 with every split; 5 of 8 column blocks present in the last group
    for levels in 0..=3 {
        let (got, want) = run(
            &p,
            64,
            8 * 8 + 5 * 8 - 3,
            64,
            8,
            8,
            levels,
            u64::from(levels),
        );
        assert_eq!(got, want, "levels {levels}");
    }
    // two inner blocks (the second partial), D = 64 split 6 (no output key switch) and 4
    for levels in [4u32, 6] {
        let (got, want) = run(&p, 200, 2100, 128, 32, 64, levels, 10 + u64::from(levels));
        assert_eq!(got, want, "levels {levels}");
    }
}

#[test]
fn orbits_need_parameters_that_allow_them() {
    let p = params(2);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&p, &mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let ct = sk
        .encrypt(&[1, 2, 3], &mut rng)
        .unwrap()
        .expand(&p)
        .unwrap();
    assert!(InputOrbit::new(&ct, 8, 2, &gk).is_ok());
    assert!(InputOrbit::new(&ct, 8, 3, &gk).is_err());
    assert!(InputOrbit::new(&ct, 2, 2, &gk).is_err());
    let leaf: Vec<i64> = vec![1, 2, 3];
    assert!(OrbitWeights::new(&p, &[Some(&leaf[..]), None], 8, 2, 0).is_err());
    assert!(OrbitWeights::new(&p, &[None, None, None, None], 8, 2, 0)
        .unwrap()
        .is_none());
    let big: Vec<i64> = vec![(1 << 16) + 1];
    assert!(OrbitWeights::new(&p, &[Some(&big[..]), None, None, None], 8, 2, 0).is_err());
    // the 128-bit parameters hold six orbit levels at l = 42 with 16-bit weights
    let six = params(6);
    assert!(six.noise().margin_bits > 0.0);
    assert!(RlweParametersBuilder::from_preset(Preset::N8192Q200Pack)
        .ring_bits(RingBits(42))
        .weight_bound(WeightBound::MaxAbs(1 << 16))
        .orbit_levels(7)
        .build()
        .is_err());
}
