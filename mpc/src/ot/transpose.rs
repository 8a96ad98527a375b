//! Bit-matrix transposition for IKNP: 128 columns of `n` bits into `n` rows of 128 bits.
//!
//! Safe Rust, no SIMD intrinsics: each 64x64 bit block is transposed in place with the
//! recursive block-swap method (six passes of shift/xor/and over 64 words, about 1,200 word
//! operations per 4,096 bits), so a 128-bit row costs about 40 word operations.

#![expect(
    clippy::indexing_slicing,
    reason = "indices are bounded by construction: 64-word blocks, 128 columns of `words` words"
)]

use super::Block;
use crate::{MpcError, Result};
use rayon::prelude::*;

/// Transposes a 64x64 bit matrix in place: on entry bit `c` of `a[r]` is entry (r, c), on exit
/// bit `r` of `a[c]` is.
#[inline]
pub fn transpose64(a: &mut [u64; 64]) {
    let mut j = 32usize;
    let mut m: u64 = 0x0000_0000_FFFF_FFFF;
    while j != 0 {
        let mut k = 0usize;
        while k < 64 {
            for r in k..k + j {
                let t = ((a[r] >> j) ^ a[r + j]) & m;
                a[r] ^= t << j;
                a[r + j] ^= t;
            }
            k += 2 * j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

/// Transposes 128 columns of `n` bits into `n` rows of 128 bits.
///
/// `cols` holds column `j` at words `j * w .. (j + 1) * w` with `w = ceil(n / 64)`, bit `i` of a
/// column being bit `i % 64` of its word `i / 64`. Row `i` of the result has bit `j` equal to
/// bit `i` of column `j`. Bits of the last word beyond `n` are ignored.
pub fn transpose_128xn(cols: &[u64], n: usize) -> Result<Vec<Block>> {
    let mut rows = vec![0u128; n];
    transpose_128xn_into(cols, &mut rows)?;
    Ok(rows)
}

/// [`transpose_128xn`] into a caller's buffer of `n = rows.len()` rows (overwritten).
pub fn transpose_128xn_into(cols: &[u64], rows: &mut [Block]) -> Result<()> {
    let n = rows.len();
    let w = n.div_ceil(64);
    if cols.len() != 128 * w {
        return Err(MpcError::InvalidArgument {
            what: format!(
                "transpose of {n} bits needs 128 columns of {w} words, got {} words",
                cols.len()
            ),
        });
    }
    // Row block b (rows 64b .. 64b + 64, the last one possibly shorter).
    let block = |b: usize, out: &mut [u128]| {
        let mut a = [0u64; 64];
        for (c, word) in a.iter_mut().enumerate() {
            *word = cols[c * w + b];
        }
        transpose64(&mut a);
        for (row, word) in out.iter_mut().zip(a.iter()) {
            *row = u128::from(*word);
        }
        for (c, word) in a.iter_mut().enumerate() {
            *word = cols[(64 + c) * w + b];
        }
        transpose64(&mut a);
        for (row, word) in out.iter_mut().zip(a.iter()) {
            *row |= u128::from(*word) << 64;
        }
    };
    if w >= super::PAR_MIN_WORDS {
        // Groups of 16 row blocks (1,024 rows) per task.
        rows.par_chunks_mut(64 * 16)
            .enumerate()
            .for_each(|(g, group)| {
                for (b, out) in group.chunks_mut(64).enumerate() {
                    block(g * 16 + b, out);
                }
            });
    } else {
        for (b, out) in rows.chunks_mut(64).enumerate() {
            block(b, out);
        }
    }
    Ok(())
}

/// The reference transposition, one bit at a time (for tests and as a specification).
pub fn transpose_128xn_naive(cols: &[u64], n: usize) -> Result<Vec<Block>> {
    let w = n.div_ceil(64);
    if cols.len() != 128 * w {
        return Err(MpcError::InvalidArgument {
            what: format!("naive transpose: {} words for {n} bits", cols.len()),
        });
    }
    Ok((0..n)
        .map(|i| {
            (0..128).fold(0u128, |row, j| {
                let bit = (cols[j * w + i / 64] >> (i % 64)) & 1;
                row | (u128::from(bit) << j)
            })
        })
        .collect())
}
