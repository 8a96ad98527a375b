//! One Ferret iteration without I/O: multi-point COT with regular noise (`t` single-point COTs
//! from GGM trees, one per bin of `2^h` positions), then the LPN encoding.
//!
//! Base COTs of an iteration (`k + t·h`, with `Δ` of lsb 1 and the lsb convention of
//! [`super`]): `base[..k]` are the LPN secret, `base[k + j·h + l]` serves level `l + 1` of
//! tree `j`.
//!
//! Single-point COT of tree `j` (semi-honest Ferret, Yang et al. CCS'20, Fig. 6 with COT in
//! place of OT): the receiver picks the punctured leaf `α_j < 2^h`; for level `l` with
//! path bit `a_l` and base COT `(q, b, t = q ⊕ b·Δ)` it sends `d = b ⊕ a_l ⊕ 1`. The sender,
//! holding the level sums `K⁰_l, K¹_l` of its tree, answers `M⁰ = H(q ⊕ d·Δ) ⊕ K⁰_l` and
//! `M¹ = H(q ⊕ (1 ⊕ d)·Δ) ⊕ K¹_l`, where `H` is the tweakable correlation-robust hash
//! ([`crate::ot::aes::FixedKeyHash`]) with a tweak unique to (iteration, base COT); the
//! receiver opens `M^{1 ⊕ a_l}` with `H(t)` and never learns the other side (it would need
//! `H(t ⊕ Δ)`). With all leaves `v_i` (lsb cleared) the sender also sends
//! `c = Δ ⊕ ⊕_i v_i`; the receiver, holding every `v_i` but `v_α`, sets
//! `w_α = c ⊕ ⊕_{i≠α} v_i = v_α ⊕ Δ`. The sender learns nothing (`d` is a one-time pad of the
//! path under the uniform `b`).
//!
//! Messages: the receiver sends all `t·h` bits `d` at once ([`choice_msg_len`] bytes), the
//! sender answers in chunks of [`CHUNK_TREES`] trees (`(2h + 1) · 16` bytes per tree) so that
//! the receiver rebuilds a chunk while the sender expands the next.

#![expect(
    clippy::indexing_slicing,
    reason = "tree j < t and level l < h index base[k + j*h + l] with base.len() = k + t*h \
              (checked in new), seeds/alphas have length t, chunks are sliced to at most t trees"
)]

use super::ggm::TwoKeyPrg;
use super::lpn;
use super::params::LpnParams;
use crate::ot::aes::FixedKeyHash;
use crate::ot::Block;
use crate::{MpcError, Result};
use rayon::prelude::*;

/// Trees per sender message.
pub(crate) const CHUNK_TREES: usize = 128;

/// Tweak domain of the SPCOT hashes (top byte; distinct from the other OT domains).
const DOMAIN_FERRET: u128 = 0x46 << 120;

/// Mask clearing the lsb of a block.
pub(crate) const NOT_LSB: Block = !1;

/// Bytes of the receiver's choice message: `ceil(t·h / 8)`.
pub(crate) fn choice_msg_len(p: &LpnParams) -> usize {
    (p.t * p.h as usize).div_ceil(8)
}

/// Number of sender messages: `ceil(t / CHUNK_TREES)`.
pub(crate) fn chunks(p: &LpnParams) -> usize {
    p.t.div_ceil(CHUNK_TREES)
}

/// Trees in chunk `c`.
fn chunk_trees(p: &LpnParams, c: usize) -> std::ops::Range<usize> {
    let start = (c * CHUNK_TREES).min(p.t);
    start..(start + CHUNK_TREES).min(p.t)
}

/// Bytes of sender message `c`: its trees' parts.
pub(crate) fn chunk_msg_len(p: &LpnParams, c: usize) -> usize {
    chunk_trees(p, c).len() * tree_msg_len(p)
}

/// Bytes of one tree's part of a sender message: `(2h + 1) · 16`.
fn tree_msg_len(p: &LpnParams) -> usize {
    (2 * p.h as usize + 1) * 16
}

/// Bytes of all sender messages of an iteration: `t · (2h + 1) · 16`.
pub(crate) fn sender_bytes(p: &LpnParams) -> usize {
    p.t * tree_msg_len(p)
}

fn tweak(iter: u64, idx: usize) -> u128 {
    DOMAIN_FERRET | (u128::from(iter) << 40) | idx as u128
}

fn check_base(p: &LpnParams, base: &[Block]) -> Result<()> {
    if base.len() != p.base_cots() {
        return Err(MpcError::InvalidArgument {
            what: format!(
                "{} base COTs for an iteration that needs {}",
                base.len(),
                p.base_cots()
            ),
        });
    }
    Ok(())
}

fn read_block(bytes: &[u8]) -> Block {
    let mut b = [0u8; 16];
    for (d, s) in b.iter_mut().zip(bytes) {
        *d = *s;
    }
    u128::from_le_bytes(b)
}

/// The sender's side of one iteration.
pub(crate) struct SenderIter<'a> {
    p: LpnParams,
    delta: Block,
    iter: u64,
    base: &'a [Block],
    /// The receiver's bits `d`, one per (tree, level).
    d: Vec<bool>,
    seeds: Vec<Block>,
    prg: TwoKeyPrg,
    hash: FixedKeyHash,
}

impl<'a> SenderIter<'a> {
    /// Starts an iteration from the base COTs `base` (`k + t·h` of them), `t` fresh uniform
    /// tree seeds and the receiver's choice message. Errors if the message is malformed.
    pub(crate) fn new(
        p: LpnParams,
        delta: Block,
        iter: u64,
        base: &'a [Block],
        seeds: Vec<Block>,
        choice_msg: &[u8],
    ) -> Result<Self> {
        check_base(&p, base)?;
        let bits = p.t * p.h as usize;
        if choice_msg.len() != choice_msg_len(&p) {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "Ferret choice message of {} bytes, expected {}",
                    choice_msg.len(),
                    choice_msg_len(&p)
                ),
            });
        }
        let d: Vec<bool> = (0..bits)
            .map(|i| (choice_msg[i / 8] >> (i % 8)) & 1 == 1)
            .collect();
        let padding = choice_msg
            .last()
            .map_or(0, |&x| if bits % 8 == 0 { 0 } else { x >> (bits % 8) });
        if padding != 0 {
            return Err(MpcError::InvalidPeerData {
                what: "Ferret choice message with nonzero padding bits".into(),
            });
        }
        if seeds.len() != p.t {
            return Err(MpcError::InvalidArgument {
                what: format!("{} tree seeds for {} trees", seeds.len(), p.t),
            });
        }
        Ok(Self {
            p,
            delta,
            iter,
            base,
            d,
            seeds,
            prg: TwoKeyPrg::new(),
            hash: FixedKeyHash::new(),
        })
    }

    /// Expands the trees of chunk `c` into `out` (the whole iteration's `n` outputs) and
    /// returns the chunk's message.
    pub(crate) fn chunk(&self, c: usize, out: &mut [Block]) -> Vec<u8> {
        let p = &self.p;
        let (h, bin) = (p.h as usize, p.bin_size());
        let trees = chunk_trees(p, c);
        let nt = trees.len();
        let mut sums = vec![[0u128; 2]; nt * h];
        let mut last = vec![0u128; nt];
        let delta = self.delta;
        out[trees.start * bin..trees.end * bin]
            .par_chunks_mut(bin)
            .zip(sums.par_chunks_mut(h))
            .zip(last.par_iter_mut())
            .zip(self.seeds[trees.clone()].par_iter())
            .for_each(|(((leaves, s), c), &seed)| {
                self.prg.expand_tree(seed, leaves, s);
                let mut acc = delta;
                for x in leaves.iter_mut() {
                    *x &= NOT_LSB;
                    acc ^= *x;
                }
                *c = acc;
            });
        // Pads: H(q ⊕ d·Δ), H(q ⊕ (1 ⊕ d)·Δ) for every (tree, level) of the chunk.
        let first = p.k + trees.start * h;
        let mut pads = vec![0u128; 2 * nt * h];
        for (i, pad) in pads.chunks_exact_mut(2).enumerate() {
            let q = self.base[first + i];
            let d = self.d[trees.start * h + i];
            let (m0, m1) = if d { (q ^ delta, q) } else { (q, q ^ delta) };
            pad[0] = m0;
            pad[1] = m1;
        }
        let iter = self.iter;
        self.hash
            .hash_many(&mut pads, |i| tweak(iter, first + i / 2));
        let mut msg = Vec::with_capacity(nt * tree_msg_len(p));
        for (j, cj) in last.iter().enumerate() {
            for l in 0..h {
                let [k0, k1] = sums[j * h + l];
                let m0 = pads[2 * (j * h + l)] ^ k0;
                let m1 = pads[2 * (j * h + l) + 1] ^ k1;
                msg.extend_from_slice(&m0.to_le_bytes());
                msg.extend_from_slice(&m1.to_le_bytes());
            }
            msg.extend_from_slice(&cj.to_le_bytes());
        }
        msg
    }

    /// Applies the LPN encoding: `out` becomes the sender's `n` COTs `y = A·q_k ⊕ v`.
    pub(crate) fn finish(&self, out: &mut [Block]) {
        lpn::encode(self.iter, &self.base[..self.p.k], out);
    }
}

/// The receiver's side of one iteration.
pub(crate) struct ReceiverIter<'a> {
    p: LpnParams,
    iter: u64,
    base: &'a [Block],
    alphas: Vec<usize>,
    prg: TwoKeyPrg,
    hash: FixedKeyHash,
}

impl<'a> ReceiverIter<'a> {
    /// Starts an iteration from the base COTs `base` (`t_i`, choice bit in the lsb) and the
    /// punctured leaves `alphas` (`t` of them, each `< 2^h`); returns the state and the
    /// choice message for the sender.
    pub(crate) fn new(
        p: LpnParams,
        iter: u64,
        base: &'a [Block],
        alphas: Vec<usize>,
    ) -> Result<(Self, Vec<u8>)> {
        check_base(&p, base)?;
        if alphas.len() != p.t || alphas.iter().any(|&a| a >= p.bin_size()) {
            return Err(MpcError::InvalidArgument {
                what: format!(
                    "{} punctured leaves for {} trees of 2^{}",
                    alphas.len(),
                    p.t,
                    p.h
                ),
            });
        }
        let h = p.h as usize;
        let mut msg = vec![0u8; choice_msg_len(&p)];
        for (j, &a) in alphas.iter().enumerate() {
            for l in 0..h {
                let i = j * h + l;
                let b = (self::lsb(base[p.k + i])) as u8;
                let path = ((a >> (h - 1 - l)) & 1) as u8;
                msg[i / 8] |= (b ^ path ^ 1) << (i % 8);
            }
        }
        let st = Self {
            p,
            iter,
            base,
            alphas,
            prg: TwoKeyPrg::new(),
            hash: FixedKeyHash::new(),
        };
        Ok((st, msg))
    }

    /// Rebuilds the trees of chunk `c` from the sender's message into `out` (the whole
    /// iteration's `n` outputs). Errors if the message has the wrong length.
    pub(crate) fn chunk(&self, c: usize, msg: &[u8], out: &mut [Block]) -> Result<()> {
        let p = &self.p;
        let (h, bin) = (p.h as usize, p.bin_size());
        let trees = chunk_trees(p, c);
        let nt = trees.len();
        if msg.len() != nt * tree_msg_len(p) {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "Ferret tree message of {} bytes, expected {}",
                    msg.len(),
                    nt * tree_msg_len(p)
                ),
            });
        }
        let first = p.k + trees.start * h;
        let mut known: Vec<Block> = self.base[first..first + nt * h].to_vec();
        let iter = self.iter;
        self.hash.hash_many(&mut known, |i| tweak(iter, first + i));
        let mut lasts = vec![0u128; nt];
        for (j, tree_msg) in msg.chunks_exact(tree_msg_len(p)).enumerate() {
            let a = self.alphas[trees.start + j];
            for l in 0..h {
                let off = (2 * l + 1 - ((a >> (h - 1 - l)) & 1)) * 16;
                known[j * h + l] ^= read_block(&tree_msg[off..off + 16]);
            }
            lasts[j] = read_block(&tree_msg[2 * h * 16..]);
        }
        out[trees.start * bin..trees.end * bin]
            .par_chunks_mut(bin)
            .zip(known.par_chunks(h))
            .zip(lasts.par_iter())
            .zip(self.alphas[trees.clone()].par_iter())
            .for_each(|(((leaves, known), &c), &a)| {
                self.prg.punctured_tree(a, known, leaves);
                let mut acc = c;
                for x in leaves.iter_mut() {
                    *x &= NOT_LSB;
                    acc ^= *x;
                }
                leaves[a] = acc;
            });
        Ok(())
    }

    /// Applies the LPN encoding: `out` becomes the receiver's `n` COTs `z = A·t_k ⊕ w`.
    pub(crate) fn finish(&self, out: &mut [Block]) {
        lpn::encode(self.iter, &self.base[..self.p.k], out);
    }
}

/// The lsb of a block (the choice bit under the lsb convention).
#[inline]
pub(crate) fn lsb(x: Block) -> bool {
    x & 1 == 1
}
