//! The fast 128 x n bit transpose against the bit-by-bit reference on random matrices.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test and bench code outside #[test] functions: a failed unwrap is a failed test"
)]

use duet_mpc::ot::transpose::{transpose64, transpose_128xn, transpose_128xn_naive};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn ot_transpose64_is_an_involution_and_matches_definition() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let orig: [u64; 64] = std::array::from_fn(|_| rng.gen());
    let mut a = orig;
    transpose64(&mut a);
    for (r, row) in orig.iter().enumerate() {
        for (c, col) in a.iter().enumerate() {
            assert_eq!((col >> r) & 1, (row >> c) & 1, "entry ({r}, {c})");
        }
    }
    transpose64(&mut a);
    assert_eq!(a, orig);
}

#[test]
fn ot_transpose_matches_naive_on_random_matrices() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for n in [
        1usize,
        2,
        63,
        64,
        65,
        127,
        128,
        129,
        200,
        1000,
        4097,
        65_536 + 77,
    ] {
        let w = n.div_ceil(64);
        let cols: Vec<u64> = (0..128 * w).map(|_| rng.gen()).collect();
        let fast = transpose_128xn(&cols, n).unwrap();
        let slow = transpose_128xn_naive(&cols, n).unwrap();
        assert_eq!(fast.len(), n);
        assert_eq!(fast, slow, "n = {n}");
    }
    // A single set bit lands in the right place.
    let n = 300usize;
    let w = n.div_ceil(64);
    let mut cols = vec![0u64; 128 * w];
    cols[77 * w + 4] = 1 << 3; // column 77, row 4 * 64 + 3 = 259
    let rows = transpose_128xn(&cols, n).unwrap();
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(*r, if i == 259 { 1u128 << 77 } else { 0 }, "row {i}");
    }
}

#[test]
fn ot_transpose_rejects_wrong_sizes() {
    assert!(transpose_128xn(&[0u64; 127], 64).is_err());
    assert!(transpose_128xn(&[0u64; 256], 64).is_err());
    assert!(transpose_128xn(&[], 0).unwrap().is_empty());
}
