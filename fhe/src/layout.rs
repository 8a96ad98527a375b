//! Cheetah-style coefficient layout of a matrix product in one polynomial product, and its
//! byte cost. The protocol crate uses this to cut `X (n x d) . W (d x k)` into blocks.
//!
//! A block of `n_b` rows, `d_b` inner and `k_b` output columns (`n_b d_b k_b <= N`) is laid out as
//!
//! * input  `x(X)  = sum_{i<n_b, j<d_b} x[i][j] X^(i d_b k_b + j)`,
//! * weight `w(X)  = sum_{j<d_b, c<k_b} w[j][c] X^(c d_b + d_b - 1 - j)`,
//! * output `y[i][c]` = coefficient `i d_b k_b + c d_b + d_b - 1` of `x(X) w(X)` in
//!   `Z[X]/(X^N + 1)`.
//!
//! Correctness: the term `x[i][j] w[j'][c']` lands at `i d_b k_b + c' d_b + d_b - 1 + (j - j')`;
//! with `|j - j'| < d_b` this equals an output position `i' d_b k_b + c d_b + d_b - 1` only for
//! `i = i'`, `c = c'`, `j = j'`. The largest degree is `n_b d_b k_b + d_b - 2 < N + d_b - 1`, so
//! wrapped (negated) terms land in `[0, d_b - 2]`, below every output position.
//!
//! Noise: each output coefficient of one product sees `nnz(w) <= d_b k_b` weight terms; a full
//! inner dimension `d` accumulated over `ceil(d/d_b)` products sees `d k_b` terms, which must not
//! exceed the parameters' `mac_terms` (the accumulator enforces it).
//!
//! Bytes: `ceil(n/n_b) ceil(d/d_b)` seeded input ciphertexts and `ceil(n/n_b) ceil(k/k_b)` output
//! ciphertexts with `n_b k_b` extracted coefficients each, or, with packing factor `D`
//! ([`crate::pack`]), `D` times fewer output ciphertexts carrying `D n_b k_b` values each. [`MatmulLayout::best`] searches all
//! blocks for the fewest total bytes.

#![expect(
    clippy::indexing_slicing,
    reason = "indices are < n_b d_b k_b <= N by the checks in MatmulLayout::new and the block-shape checks at each entry point"
)]

use crate::ciphertext::SeededCiphertext;
use crate::error::{FheError, Result};
use crate::output::OutputCiphertext;
use crate::params::RlweParameters;

/// Block shape of one polynomial product.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatmulLayout {
    /// Rows of `X` per block.
    pub n_b: usize,
    /// Inner dimension per block.
    pub d_b: usize,
    /// Columns of `W` per block.
    pub k_b: usize,
    degree: usize,
}

/// Traffic of a whole `n x d x k` product under a layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutCost {
    /// Client-to-server ciphertexts.
    pub input_ciphertexts: usize,
    /// Server-to-client ciphertexts.
    pub output_ciphertexts: usize,
    /// Client-to-server bytes.
    pub input_bytes: usize,
    /// Server-to-client bytes.
    pub output_bytes: usize,
    /// Weight terms per output coefficient (`d k_b`), to compare with `mac_terms`.
    pub mac_terms: usize,
    /// Packing factor used for the outputs (1 = extraction only).
    pub pack: usize,
    /// Key switches the server spends on packing.
    pub key_switches: usize,
}

impl MatmulLayout {
    /// Validate a block shape for degree `N`.
    pub fn new(params: &RlweParameters, n_b: usize, d_b: usize, k_b: usize) -> Result<Self> {
        let n = params.degree();
        let vol = n_b.checked_mul(d_b).and_then(|v| v.checked_mul(k_b));
        match vol {
            Some(v) if n_b > 0 && d_b > 0 && k_b > 0 && v <= n => Ok(Self {
                n_b,
                d_b,
                k_b,
                degree: n,
            }),
            _ => Err(FheError::param(
                "layout",
                format!("{n_b}x{d_b}x{k_b}"),
                format!("need positive n_b d_b k_b <= N = {n}"),
            )),
        }
    }

    /// Input polynomial of a row-major `rows x cols` block of `X` (`rows <= n_b`, `cols <= d_b`).
    pub fn input_poly(&self, block: &[u64], rows: usize, cols: usize) -> Result<Vec<u64>> {
        self.check_block(block.len(), rows, cols, self.n_b, self.d_b, "input block")?;
        let mut out = vec![0u64; self.degree];
        for i in 0..rows {
            for j in 0..cols {
                out[i * self.d_b * self.k_b + j] = block[i * cols + j];
            }
        }
        Ok(out)
    }

    /// Weight polynomial of a row-major `rows x cols` block of `W` (`rows <= d_b`, `cols <= k_b`).
    pub fn weight_poly(&self, block: &[i64], rows: usize, cols: usize) -> Result<Vec<i64>> {
        self.check_block(block.len(), rows, cols, self.d_b, self.k_b, "weight block")?;
        let mut out = vec![0i64; self.degree];
        for j in 0..rows {
            for c in 0..cols {
                out[c * self.d_b + self.d_b - 1 - j] = block[j * cols + c];
            }
        }
        Ok(out)
    }

    /// Coefficient positions of the `rows x cols` outputs of a block, row-major.
    pub fn output_positions(&self, rows: usize, cols: usize) -> Result<Vec<usize>> {
        if rows == 0 || cols == 0 || rows > self.n_b || cols > self.k_b {
            return Err(FheError::range(
                "output block",
                format!("{rows}x{cols}"),
                format!("1..={} x 1..={}", self.n_b, self.k_b),
            ));
        }
        Ok((0..rows)
            .flat_map(|i| {
                (0..cols).map(move |c| i * self.d_b * self.k_b + c * self.d_b + self.d_b - 1)
            })
            .collect())
    }

    fn check_block(
        &self,
        len: usize,
        rows: usize,
        cols: usize,
        max_r: usize,
        max_c: usize,
        what: &'static str,
    ) -> Result<()> {
        if rows == 0
            || cols == 0
            || rows > max_r
            || cols > max_c
            || rows.checked_mul(cols) != Some(len)
        {
            return Err(FheError::range(
                what,
                format!("{len} values as {rows}x{cols}"),
                format!("rows*cols values, 1..={max_r} x 1..={max_c}"),
            ));
        }
        Ok(())
    }

    /// Largest usable packing factor for this layout: the largest power of two dividing `d_b`
    /// and at most the parameters' `max_pack`.
    pub fn pack_factor(&self, params: &RlweParameters) -> usize {
        let pow2_div = 1usize << self.d_b.trailing_zeros();
        pow2_div.min(params.max_pack()).max(1)
    }

    /// Position of output `(i, c)` of the `r`-th of `pack` packed accumulators (`pack` a power of
    /// two dividing `d_b`), i.e. `p - offset + r` with `p` its unpacked position and
    /// `offset = (d_b - 1) mod pack` (the `offset` to pass to [`crate::MacAccumulator::pack`]).
    pub fn packed_position(&self, pack: usize, r: usize, i: usize, c: usize) -> usize {
        let p = i * self.d_b * self.k_b + c * self.d_b + self.d_b - 1;
        p - (self.d_b - 1) % pack.max(1) + r
    }

    /// Traffic of `n x d x k` under this layout, packing `pack` consecutive column blocks of a
    /// row block into one ciphertext (`pack = 1`: extraction only). Edge blocks are counted
    /// exactly.
    pub fn cost(
        &self,
        params: &RlweParameters,
        n: usize,
        d: usize,
        k: usize,
        pack: usize,
    ) -> LayoutCost {
        let pack = pack.max(1);
        let row_blocks = n.div_ceil(self.n_b);
        let inner_blocks = d.div_ceil(self.d_b);
        let col_blocks = k.div_ceil(self.k_b);
        let input_ciphertexts = row_blocks * inner_blocks;
        let mut output_ciphertexts = 0;
        let mut output_bytes = 0;
        let mut key_switches = 0;
        // row blocks come in at most two sizes: full (n_b rows) and one edge block
        let full_rows = n / self.n_b;
        let edge_rows = n % self.n_b;
        for (rows, count) in [
            (self.n_b, full_rows),
            (edge_rows, usize::from(edge_rows > 0)),
        ] {
            if count == 0 {
                continue;
            }
            for group in 0..col_blocks.div_ceil(pack) {
                let members = pack.min(col_blocks - group * pack);
                let cols: usize = (group * pack..group * pack + members)
                    .map(|cb| self.k_b.min(k - cb * self.k_b))
                    .sum();
                output_ciphertexts += count;
                output_bytes += count * OutputCiphertext::serialized_len(params, rows * cols);
                if pack > 1 {
                    key_switches += count * (pack - 1);
                }
            }
        }
        LayoutCost {
            input_ciphertexts,
            output_ciphertexts,
            input_bytes: input_ciphertexts * SeededCiphertext::serialized_len(params),
            output_bytes,
            mac_terms: d.saturating_mul(self.k_b.min(k)),
            pack,
            key_switches,
        }
    }

    /// The block shape with the fewest total bytes (packing as much as the parameters allow)
    /// whose `d k_b` fits the parameters' `mac_terms` budget. Cost: `O(min(n,N) min(d,N))` cost evaluations.
    pub fn best(
        params: &RlweParameters,
        n: usize,
        d: usize,
        k: usize,
    ) -> Result<(Self, LayoutCost)> {
        let nn = params.degree();
        let mut best: Option<(Self, LayoutCost)> = None;
        for n_b in 1..=n.min(nn) {
            for d_b in 1..=d.min(nn / n_b) {
                let k_b = (nn / (n_b * d_b)).min(k);
                if k_b == 0 {
                    continue;
                }
                let layout = Self::new(params, n_b, d_b, k_b)?;
                let c = layout.cost(params, n, d, k, layout.pack_factor(params));
                if c.mac_terms > params.mac_terms() {
                    continue;
                }
                let better = best.as_ref().is_none_or(|(_, b)| {
                    c.input_bytes + c.output_bytes < b.input_bytes + b.output_bytes
                });
                if better {
                    best = Some((layout, c));
                }
            }
        }
        best.ok_or_else(|| FheError::NoiseBudget {
            reason: format!(
                "no layout for {n}x{d}x{k} fits mac_terms = {}",
                params.mac_terms()
            ),
        })
    }
}
