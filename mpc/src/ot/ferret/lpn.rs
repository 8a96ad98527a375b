//! The LPN encoding with a local linear code: output `i` is `out[i] ⊕ ⊕_{r<10} s[idx(i, r)]`.
//!
//! The code is public: the `D = 10` positions of row `i` in `0..k` come from AES-128 in counter
//! mode under a public per-iteration key (both parties derive it from the iteration number), one
//! 32-bit word per position mapped to `0..k` by `⌊w · k / 2^32⌋`; rows `4g..4g+4` use the 40
//! words of counter blocks `10g..10g+10`. Sparse random codes of this shape are the ones the
//! Ferret analysis (and emp-ot) uses for primal regular LPN.
//!
//! Applied to the sender's `(q_k, v)` and the receiver's `(t_k, w)`, where `t_k = q_k ⊕ u·Δ`
//! and `w = v ⊕ e·Δ`, it gives `z = y ⊕ (A·u ⊕ e)·Δ`: COTs with choice bits `x = A·u ⊕ e`,
//! pseudorandom under LPN with regular noise `e`.
//!
//! Cost: `n/4 · 10` AES blocks and `10 n` random reads of `k` blocks, in parallel over rows.

#![expect(
    clippy::indexing_slicing,
    reason = "positions are floor(w * k / 2^32) < k = secret.len(); word and block buffers are \
              indexed below their fixed sizes ROWS_PER_TASK * 10 / 4 blocks"
)]

use crate::ot::Block;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128Enc;
use rayon::prelude::*;

/// Nonzeros per row of the code.
pub(crate) const D: usize = 10;

/// Rows per parallel task (a multiple of 4).
const ROWS_PER_TASK: usize = 2048;

/// Counter blocks per group of 4 rows (`4 · D` 32-bit words).
const BLOCKS_PER_GROUP: usize = D;

/// The public code key of iteration `iter`.
fn code_key(iter: u64) -> [u8; 16] {
    let mut key = *b"duet ferret lpn\0";
    for (b, x) in key.iter_mut().zip(iter.to_le_bytes()) {
        *b ^= x;
    }
    key
}

/// XORs into each `out[i]` the `D` entries of `secret` picked by row `i` of the code of
/// iteration `iter`. `secret` must be non-empty.
pub(crate) fn encode(iter: u64, secret: &[Block], out: &mut [Block]) {
    let k = secret.len() as u64;
    if k == 0 {
        return;
    }
    let cipher = Aes128Enc::new(&code_key(iter).into());
    out.par_chunks_mut(ROWS_PER_TASK)
        .enumerate()
        .for_each(|(task, rows)| {
            let groups = rows.len().div_ceil(4);
            let first_block = (task * ROWS_PER_TASK / 4 * BLOCKS_PER_GROUP) as u128;
            let mut blocks = vec![aes::Block::default(); groups * BLOCKS_PER_GROUP];
            for (j, b) in blocks.iter_mut().enumerate() {
                *b = aes::Block::from((first_block + j as u128).to_le_bytes());
            }
            cipher.encrypt_blocks(&mut blocks);
            let mut idx = vec![0u32; groups * BLOCKS_PER_GROUP * 4];
            for (b, w) in blocks.iter().zip(idx.chunks_exact_mut(4)) {
                for (x, c) in w.iter_mut().zip(b.chunks_exact(4)) {
                    let r = u64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                    *x = ((r * k) >> 32) as u32;
                }
            }
            for (row, pos) in rows.iter_mut().zip(idx.chunks_exact(D)) {
                let mut acc = *row;
                for &p in pos {
                    acc ^= secret[p as usize];
                }
                *row = acc;
            }
        });
}
