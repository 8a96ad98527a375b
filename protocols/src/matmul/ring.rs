//! Plaintext arithmetic in `Z_{2^l}` (row-major matrices, wrapping `u64`, masked by the caller)
//! and the placement of server operands into weight polynomials.

use duet_fhe::{MatmulLayout, PlainWeights, RlweParameters};
use rayon::prelude::*;
use std::sync::Arc;

use crate::error::{ProtocolError, Result};

/// `X (n x d) . W (d x k)` with wrapping `u64` arithmetic (exact mod `2^64`, hence mod `2^l`);
/// parallel over rows. Lengths must have been checked by the caller.
pub(crate) fn matmul_wrapping(x: &[u64], w: &[u64], d: usize, k: usize) -> Vec<u64> {
    let n = x.len().checked_div(d).unwrap_or(0);
    let mut y = vec![0u64; n * k];
    if k == 0 || d == 0 {
        return y;
    }
    y.par_chunks_mut(k)
        .zip(x.par_chunks(d))
        .for_each(|(yrow, xrow)| {
            for (&xv, wrow) in xrow.iter().zip(w.chunks(k)) {
                if xv == 0 {
                    continue;
                }
                for (yv, &wv) in yrow.iter_mut().zip(wrow) {
                    *yv = yv.wrapping_add(xv.wrapping_mul(wv));
                }
            }
        });
    y
}

/// Transpose of a row-major `rows x cols` matrix.
pub(crate) fn transpose(m: &[u64], rows: usize, cols: usize) -> Vec<u64> {
    let mut out = vec![0u64; m.len()];
    if rows == 0 || cols == 0 {
        return out;
    }
    for (i, row) in m.chunks(cols).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            if let Some(dst) = out.get_mut(c * rows + i) {
                *dst = v;
            }
        }
    }
    out
}

/// Checks that `data` has `len` values, all in `Z_{2^l}` (`mask = 2^l - 1`).
pub(crate) fn check_ring(what: &'static str, data: &[u64], len: usize, mask: u64) -> Result<()> {
    if data.len() != len {
        return Err(ProtocolError::Shape {
            what,
            expected: len,
            got: data.len(),
        });
    }
    if let Some(bad) = data.iter().find(|&&v| v & !mask != 0) {
        return Err(ProtocolError::Config(format!(
            "{what}: value {bad:#x} is not an element of Z_2^{}",
            mask.count_ones()
        )));
    }
    Ok(())
}

/// The server operand of a product (row-major `d x k`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum WeightSrc<'a> {
    /// Signed integers within the parameters' weight bound.
    Signed(&'a [i64]),
    /// Elements of `Z_{2^l}` (lifted to the centered range; needs `WeightBound::Uniform` unless
    /// small).
    Ring(&'a [u64]),
}

/// The weight polynomial of block `(ib, cb)`: rows `[j0, j1)`, columns `[c0, c1)` of a `d x k`
/// operand, placed as [`MatmulLayout::weight_poly`] does
/// (`w[j][c]` at coefficient `c d_b + d_b - 1 - j`).
pub(crate) fn weight_block(
    params: &Arc<RlweParameters>,
    layout: &MatmulLayout,
    src: WeightSrc<'_>,
    k: usize,
    (j0, j1): (usize, usize),
    (c0, c1): (usize, usize),
) -> Result<PlainWeights> {
    let cols = c1 - c0;
    let d_b = layout.d_b;
    if j1 - j0 > d_b || cols > layout.k_b || j1 < j0 || c1 < c0 {
        return Err(ProtocolError::Config(
            "weight block larger than the layout".into(),
        ));
    }
    // only the first `cols d_b` coefficients can be nonzero: pass just those, so the encoder
    // reduces `cols d_b` values instead of `N`
    let len = cols * d_b;
    match src {
        WeightSrc::Signed(w) => {
            let poly = place(w, k, (j0, j1), (c0, c1), d_b, len)?;
            Ok(PlainWeights::from_signed(params, &poly)?)
        }
        WeightSrc::Ring(w) => {
            let poly = place(w, k, (j0, j1), (c0, c1), d_b, len)?;
            Ok(PlainWeights::from_ring(params, &poly)?)
        }
    }
}

/// `w[j][c]` of the block at coefficient `(c - c0) d_b + d_b - 1 - (j - j0)`.
fn place<T: Copy + Default>(
    w: &[T],
    k: usize,
    (j0, j1): (usize, usize),
    (c0, c1): (usize, usize),
    d_b: usize,
    len: usize,
) -> Result<Vec<T>> {
    let bad = || ProtocolError::Config("weight block outside the operand".into());
    let mut poly = vec![T::default(); len];
    for (jj, j) in (j0..j1).enumerate() {
        let row = w.get(j * k + c0..j * k + c1).ok_or_else(bad)?;
        for (cc, &v) in row.iter().enumerate() {
            *poly.get_mut(cc * d_b + d_b - 1 - jj).ok_or_else(bad)? = v;
        }
    }
    Ok(poly)
}
