//! GGM trees: the puncturable PRF behind single-point COT.
//!
//! A tree of depth `h` expands a 128-bit seed into `2^h` leaves with the length-doubling PRG
//! `G(x) = (π₀(x) ⊕ x, π₁(x) ⊕ x)`, where `π₀`, `π₁` are AES-128 under two fixed public keys
//! (the two-key construction of emp-ot's `TwoKeyPRP`; a PRG in the random-permutation model
//! for the fixed-key permutations, 128-bit security). Level `l` (1..=h) holds `2^l` nodes; the
//! sender also outputs the XOR of the left (even) and of the right (odd) nodes of every level.
//!
//! A receiver that knows, for every level `l`, the XOR of the side *not* on the path to a leaf
//! `α` rebuilds every node off that path, hence every leaf except leaf `α` (which it leaves at
//! zero): at each level it expands the nodes it knows, and the node beside the path is the
//! received XOR minus the other nodes of its side.
//!
//! Cost: `2^{h+1} − 2` AES calls per tree for either party, level by level in batches.

#![expect(
    clippy::indexing_slicing,
    reason = "levels are expanded in place in a buffer of 2^h nodes: parents i < 2^l and \
              children 2i, 2i+1 < 2^(l+1) <= 2^h; batch arrays are indexed below BATCH"
)]

use crate::ot::Block;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128Enc;

/// Parents per batch (32 AES blocks per batch: the AES-NI pipeline stays full).
const BATCH: usize = 16;

/// The public fixed keys of `π₀` and `π₁`.
const KEY0: [u8; 16] = *b"duet ferret ggm0";
const KEY1: [u8; 16] = *b"duet ferret ggm1";

fn to_ga(x: Block) -> aes::Block {
    aes::Block::from(x.to_le_bytes())
}

fn from_ga(b: &aes::Block) -> Block {
    let bytes: [u8; 16] = (*b).into();
    u128::from_le_bytes(bytes)
}

/// The length-doubling PRG `G(x) = (π₀(x) ⊕ x, π₁(x) ⊕ x)` (see the module docs).
#[derive(Clone)]
pub(crate) struct TwoKeyPrg {
    pi0: Aes128Enc,
    pi1: Aes128Enc,
}

impl std::fmt::Debug for TwoKeyPrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TwoKeyPrg")
    }
}

impl TwoKeyPrg {
    pub(crate) fn new() -> Self {
        Self {
            pi0: Aes128Enc::new(&KEY0.into()),
            pi1: Aes128Enc::new(&KEY1.into()),
        }
    }

    /// Expands the `m` nodes `buf[..m]` in place into their `2m` children `buf[..2m]`
    /// (children of node `i` at `2i`, `2i + 1`) and returns the XOR of the left and of the
    /// right children. Requires `buf.len() >= 2m`.
    fn expand_level(&self, buf: &mut [Block], m: usize) -> [Block; 2] {
        let mut sums = [0u128; 2];
        let mut a = [aes::Block::default(); BATCH];
        let mut b = [aes::Block::default(); BATCH];
        let mut p = [0u128; BATCH];
        // From the back, so that children (index >= 2 * start) never overwrite a parent that
        // is still to be read (index < start).
        let mut end = m;
        while end > 0 {
            let start = end.saturating_sub(BATCH);
            let len = end - start;
            for i in 0..len {
                p[i] = buf[start + i];
                a[i] = to_ga(p[i]);
            }
            b[..len].copy_from_slice(&a[..len]);
            self.pi0.encrypt_blocks(&mut a[..len]);
            self.pi1.encrypt_blocks(&mut b[..len]);
            for i in 0..len {
                let c0 = from_ga(&a[i]) ^ p[i];
                let c1 = from_ga(&b[i]) ^ p[i];
                buf[2 * (start + i)] = c0;
                buf[2 * (start + i) + 1] = c1;
                sums[0] ^= c0;
                sums[1] ^= c1;
            }
            end = start;
        }
        sums
    }

    /// The sender's tree: fills `leaves` (length `2^h`) from `seed` and `sums[l]` with the
    /// XOR of the left / right nodes of level `l + 1` (`sums.len() == h`).
    pub(crate) fn expand_tree(&self, seed: Block, leaves: &mut [Block], sums: &mut [[Block; 2]]) {
        leaves[0] = seed;
        for (l, s) in sums.iter_mut().enumerate() {
            *s = self.expand_level(leaves, 1 << l);
        }
    }

    /// The receiver's punctured tree: `known[l]` is the XOR of the nodes of level `l + 1` on
    /// the side off the path to leaf `alpha` (`known.len() == h`, `alpha < 2^h`). Fills every
    /// leaf but `alpha`, which is set to zero.
    pub(crate) fn punctured_tree(&self, alpha: usize, known: &[Block], leaves: &mut [Block]) {
        let h = known.len();
        leaves[0] = 0;
        let mut path = 0usize;
        for (l, k) in known.iter().enumerate() {
            let mut sums = self.expand_level(leaves, 1 << l);
            // The two children of the unknown node are garbage: take them out of the sums.
            sums[0] ^= leaves[2 * path];
            sums[1] ^= leaves[2 * path + 1];
            let next = alpha >> (h - 1 - l);
            let sibling = next ^ 1;
            leaves[sibling] = k ^ sums[sibling & 1];
            leaves[next] = 0;
            path = next;
        }
    }
}
