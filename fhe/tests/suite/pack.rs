//! Packing sparse results into dense ciphertexts: exactness, key serialization, and the byte
//! saving on a blocked matrix product.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn params() -> std::sync::Arc<RlweParameters> {
    RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap()
}

#[test]
fn pack_moves_strided_values_exactly() {
    let params = params();
    let n = params.degree();
    let mask = params.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&params, &mut rng);
    let pk = sk.public_key(&mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let gk = GaloisKeys::from_bytes(&params, &gk.to_bytes()).unwrap();
    for (d, offset) in [(1usize, 0usize), (2, 1), (4, 3), (8, 5)] {
        let xs: Vec<Vec<u64>> = (0..d)
            .map(|_| (0..n).map(|_| rng.gen::<u64>() & mask).collect())
            .collect();
        let one = PlainWeights::from_signed(&params, &[1]).unwrap();
        let accs: Vec<MacAccumulator> = xs
            .iter()
            .map(|x| {
                let ct = sk.encrypt(x, &mut rng).unwrap().expand(&params).unwrap();
                let mut acc = MacAccumulator::new(&params);
                acc.mul_acc(&ct, &one).unwrap();
                acc
            })
            .collect();
        let packed = MacAccumulator::pack(accs, offset, &gk).unwrap();
        let positions: Vec<usize> = (0..n).collect();
        let out = packed.finalize(&pk, &[], &positions, &mut rng).unwrap();
        let got = sk.decrypt_output(&out, &positions).unwrap();
        for (r, x) in xs.iter().enumerate() {
            for p in (0..n).filter(|p| p % d == offset % d) {
                assert_eq!(got[p - offset % d + r], x[p], "d={d} r={r} p={p}");
            }
        }
    }
}

#[test]
fn packed_blocked_matmul_is_exact_and_dense() {
    // 16x64 . 64x512 with blocks 16x64x8 (= N): 64 sparse results packed into one ciphertext.
    let params = params();
    let n = params.degree();
    let mask = params.plain_mask();
    let (rows, d, k) = (16usize, 64usize, 512usize);
    let layout = MatmulLayout::new(&params, 16, 64, 8).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let sk = SecretKey::generate(&params, &mut rng);
    let pk = sk.public_key(&mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let x: Vec<u64> = (0..rows * d).map(|_| rng.gen::<u64>() & mask).collect();
    let w: Vec<i64> = (0..d * k)
        .map(|_| rng.gen_range(-(1i64 << 16)..=(1i64 << 16)))
        .collect();
    let r_mask: Vec<u64> = (0..rows * k).map(|_| rng.gen::<u64>() & mask).collect();
    let ct = sk
        .encrypt(&layout.input_poly(&x, rows, d).unwrap(), &mut rng)
        .unwrap()
        .expand(&params)
        .unwrap();
    let blocks = k / layout.k_b;
    let accs: Vec<MacAccumulator> = (0..blocks)
        .map(|cb| {
            let block: Vec<i64> = (0..d)
                .flat_map(|j| (0..8).map(move |c| (j, cb * 8 + c)))
                .map(|(j, c)| w[j * k + c])
                .collect();
            let wp = PlainWeights::from_signed(&params, &layout.weight_poly(&block, d, 8).unwrap())
                .unwrap();
            let mut acc = MacAccumulator::new(&params);
            acc.mul_acc(&ct, &wp).unwrap();
            acc
        })
        .collect();
    let packed = MacAccumulator::pack(accs, layout.d_b - 1, &gk).unwrap();
    // value (i, c) of block cb sits at d_b (i k_b + c) + cb
    let mut plain = vec![0u64; n];
    let mut where_: Vec<(usize, usize, usize)> = Vec::new();
    for cb in 0..blocks {
        for i in 0..rows {
            for c in 0..8 {
                let pos = layout.d_b * (i * layout.k_b + c) + cb;
                plain[pos] = r_mask[i * k + cb * 8 + c].wrapping_neg() & mask;
                where_.push((pos, i, cb * 8 + c));
            }
        }
    }
    let positions: Vec<usize> = (0..n).collect();
    let out = packed.finalize(&pk, &plain, &positions, &mut rng).unwrap();
    let bytes = out.to_bytes(&params).unwrap();
    // dense: one ciphertext for all 8192 outputs
    assert_eq!(bytes.len(), OutputCiphertext::serialized_len(&params, n));
    let out = OutputCiphertext::from_bytes(&params, &bytes, n).unwrap();
    let got = sk.decrypt_output(&out, &positions).unwrap();
    for (pos, i, c) in where_ {
        let mut want = 0u64;
        for j in 0..d {
            want = want.wrapping_add(x[i * d + j].wrapping_mul(w[j * k + c] as u64));
        }
        assert_eq!(
            got[pos].wrapping_add(r_mask[i * k + c]) & mask,
            want & mask,
            "({i},{c})"
        );
    }
}

#[test]
fn pack_rejects_bad_input() {
    let params = params();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sk = SecretKey::generate(&params, &mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let accs = |m: usize| {
        (0..m)
            .map(|_| MacAccumulator::new(&params))
            .collect::<Vec<_>>()
    };
    assert!(MacAccumulator::pack(accs(0), 0, &gk).is_err());
    assert!(MacAccumulator::pack(accs(3), 0, &gk).is_err());
    assert!(MacAccumulator::pack(accs(128), 0, &gk).is_err());
    let bytes = gk.to_bytes();
    assert_eq!(bytes.len(), GaloisKeys::serialized_len(&params));
    assert!(GaloisKeys::from_bytes(&params, &bytes[..bytes.len() - 1]).is_err());
    let mut bad = bytes.clone();
    bad[1] = 1;
    assert!(GaloisKeys::from_bytes(&params, &bad).is_err());
    // parameters without a special prime cannot make Galois keys
    let plain = RlweParameters::preset(
        Preset::N4096Q109,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    let sk2 = SecretKey::generate(&plain, &mut rng);
    assert!(sk2.galois_keys(&mut rng).is_err());
}

/// Absent members cost no key switch and leave the present ones exact, at any subset of
/// indices (the bit-reversed placement of the protocols and irregular ones), including a
/// single member moved by a pure shift.
#[test]
fn sparse_pack_is_exact() {
    let params = params();
    let n = params.degree();
    let mask = params.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let sk = SecretKey::generate(&params, &mut rng);
    let pk = sk.public_key(&mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let one = PlainWeights::from_signed(&params, &[1]).unwrap();
    let cases: Vec<(usize, usize, Vec<usize>)> = vec![
        (8, 7, (0..5).map(|j| pack::bitrev_index(8, j)).collect()),
        (16, 3, vec![5]),
        (4, 0, vec![2, 3]),
        (64, 63, (0..46).map(|j| pack::bitrev_index(64, j)).collect()),
    ];
    for (d, offset, present) in cases {
        let xs: Vec<Vec<u64>> = (0..d)
            .map(|_| (0..n).map(|_| rng.gen::<u64>() & mask).collect())
            .collect();
        let members: Vec<Option<MacAccumulator>> = (0..d)
            .map(|r| {
                present.contains(&r).then(|| {
                    let ct = sk
                        .encrypt(&xs[r], &mut rng)
                        .unwrap()
                        .expand(&params)
                        .unwrap();
                    let mut acc = MacAccumulator::new(&params);
                    acc.mul_acc(&ct, &one).unwrap();
                    acc
                })
            })
            .collect();
        let packed = MacAccumulator::pack_sparse(members, offset, &gk).unwrap();
        let mut positions = Vec::new();
        let mut want = Vec::new();
        for &r in &present {
            for p in (0..n).filter(|p| p % d == offset % d) {
                positions.push(p - offset % d + r);
                want.push(xs[r][p]);
            }
        }
        let out = packed.finalize(&pk, &[], &positions, &mut rng).unwrap();
        assert_eq!(sk.decrypt_output(&out, &positions).unwrap(), want, "d={d}");
    }
    assert_eq!(pack::sparse_key_switches(64, 46), 47);
}
