//! The block layout computes an exact matrix product through the whole pipeline, and the byte
//! search returns the documented figures for the target shape.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

#[test]
fn blocked_matmul_is_exact() {
    // 6x40 . 40x7 with blocks 4x16x5 (N = 4096 allows much more; edges exercise partial blocks)
    let params = RlweParameters::preset(
        Preset::N4096Q109,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    let mask = params.plain_mask();
    let (n, d, k) = (6usize, 40usize, 7usize);
    let layout = MatmulLayout::new(&params, 4, 16, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let sk = SecretKey::generate(&params, &mut rng);
    let pk = sk.public_key(&mut rng);
    let x: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let w: Vec<i64> = (0..d * k)
        .map(|_| rng.gen_range(-(1i64 << 16)..=(1i64 << 16)))
        .collect();
    let r: Vec<u64> = (0..n * k).map(|_| rng.gen::<u64>() & mask).collect(); // server mask
    let mut y = vec![0u64; n * k];
    for rb in 0..n.div_ceil(layout.n_b) {
        let rows = layout.n_b.min(n - rb * layout.n_b);
        // client: encrypt each inner block of this row block
        let cts: Vec<Ciphertext> = (0..d.div_ceil(layout.d_b))
            .map(|ib| {
                let cols = layout.d_b.min(d - ib * layout.d_b);
                let block: Vec<u64> = (0..rows)
                    .flat_map(|i| (0..cols).map(move |j| (rb * 4 + i, ib * 16 + j)))
                    .map(|(i, j)| x[i * d + j])
                    .collect();
                let poly = layout.input_poly(&block, rows, cols).unwrap();
                sk.encrypt(&poly, &mut rng)
                    .unwrap()
                    .expand(&params)
                    .unwrap()
            })
            .collect();
        for cb in 0..k.div_ceil(layout.k_b) {
            let cols_out = layout.k_b.min(k - cb * layout.k_b);
            let mut acc = MacAccumulator::new(&params);
            for (ib, ct) in cts.iter().enumerate() {
                let rows_w = layout.d_b.min(d - ib * layout.d_b);
                let block: Vec<i64> = (0..rows_w)
                    .flat_map(|j| (0..cols_out).map(move |c| (ib * 16 + j, cb * 5 + c)))
                    .map(|(j, c)| w[j * k + c])
                    .collect();
                let wp = PlainWeights::from_signed(
                    &params,
                    &layout.weight_poly(&block, rows_w, cols_out).unwrap(),
                )
                .unwrap();
                acc.mul_acc(ct, &wp).unwrap();
            }
            let positions = layout.output_positions(rows, cols_out).unwrap();
            let mut plain = vec![0u64; params.degree()];
            for (idx, &p) in positions.iter().enumerate() {
                let (i, c) = (rb * 4 + idx / cols_out, cb * 5 + idx % cols_out);
                plain[p] = r[i * k + c].wrapping_neg() & mask; // server adds -R
            }
            let out = acc.finalize(&pk, &plain, &positions, &mut rng).unwrap();
            let vals = sk.decrypt_output(&out, &positions).unwrap();
            for (idx, v) in vals.into_iter().enumerate() {
                let (i, c) = (rb * 4 + idx / cols_out, cb * 5 + idx % cols_out);
                y[i * k + c] = v;
            }
        }
    }
    for i in 0..n {
        for c in 0..k {
            let mut want = 0u64;
            for j in 0..d {
                want = want.wrapping_add(x[i * d + j].wrapping_mul(w[j * k + c] as u64));
            }
            // client share + server share R reconstructs X W
            assert_eq!(
                y[i * k + c].wrapping_add(r[i * k + c]) & mask,
                want & mask,
                "({i},{c})"
            );
        }
    }
}

#[test]
fn layout_rejects_bad_shapes() {
    let params = RlweParameters::preset(
        Preset::N4096Q109,
        RingBits(32),
        WeightBound::MaxAbs(1 << 12),
    )
    .unwrap();
    assert!(MatmulLayout::new(&params, 64, 64, 2).is_err());
    assert!(MatmulLayout::new(&params, 0, 1, 1).is_err());
    assert!(MatmulLayout::new(&params, usize::MAX, 2, 2).is_err());
    let l = MatmulLayout::new(&params, 4, 8, 4).unwrap();
    assert!(l.input_poly(&[1, 2, 3], 2, 2).is_err());
    assert!(l.input_poly(&[0; 10], 5, 2).is_err());
    assert!(l.weight_poly(&[0; 10], 2, 5).is_err());
    assert!(l.output_positions(5, 1).is_err());
    assert_eq!(l.output_positions(2, 2).unwrap(), vec![7, 15, 39, 47]);
}

/// `cargo test -p duet-fhe --release --test suite layout:: -- --nocapture` prints the figures in NOTES.md.
#[test]
fn bert_base_shape_costs() {
    let cases = [
        (37u32, WeightBound::MaxAbs(1 << 16), Preset::N4096Q109),
        (41, WeightBound::MaxAbs(1 << 12), Preset::N4096Q109),
        (64, WeightBound::Uniform, Preset::N8192Q186),
        (37, WeightBound::MaxAbs(1 << 16), Preset::N8192Q200Pack),
        (41, WeightBound::MaxAbs(1 << 16), Preset::N8192Q200Pack),
        (64, WeightBound::MaxAbs(1 << 16), Preset::N8192Q200Pack),
    ];
    for (l, wb, preset) in cases {
        let params = RlweParameters::preset(preset, RingBits(l), wb).unwrap();
        for (n, d, k) in [
            (128usize, 768usize, 768usize),
            (128, 3072, 768),
            (128, 768, 3072),
        ] {
            let (layout, c) = MatmulLayout::best(&params, n, d, k).unwrap();
            let total = c.input_bytes + c.output_bytes;
            println!(
                "l={l} {} {n}x{d}x{k}: blocks {}x{}x{} pack {} ({} key switches) in={} cts {:.2} MB ({:.1} B/elt) out={} cts {:.2} MB ({:.1} B/elt) total {:.2} MB",
                preset.name(),
                layout.n_b,
                layout.d_b,
                layout.k_b,
                c.pack,
                c.key_switches,
                c.input_ciphertexts,
                c.input_bytes as f64 / 1e6,
                c.input_bytes as f64 / (n * d) as f64,
                c.output_ciphertexts,
                c.output_bytes as f64 / 1e6,
                c.output_bytes as f64 / (n * k) as f64,
                total as f64 / 1e6
            );
            assert!(c.mac_terms <= params.mac_terms());
            if preset == Preset::N8192Q200Pack && (n, d, k) == (128, 768, 768) {
                assert!(
                    total < 6_000_000,
                    "packed 128x768x768 must fit the 6 MB target: {total}"
                );
            }
        }
    }
}
