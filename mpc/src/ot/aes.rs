//! Fixed-key AES primitives: the tweakable correlation-robust hash used to turn correlated OT
//! into random OT, and the AES-CTR PRG that stretches base-OT seeds into IKNP matrix columns.
//!
//! Both use the `aes` crate, which selects AES-NI at run time when the CPU has it.

#![expect(
    clippy::indexing_slicing,
    reason = "batch buffers are sliced to the length of a chunk of at most BATCH blocks"
)]

use super::Block;
use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128Enc;

/// Blocks processed per AES batch call (enough to fill the AES-NI pipeline many times over).
const BATCH: usize = 64;

/// The public key of the fixed-key permutation π (the first 16 bytes of the SHA-256 digest of
/// "duet fixed-key AES v1"; any public constant works in the random-permutation model).
const FIXED_KEY: [u8; 16] = [
    0x3c, 0x5e, 0x9b, 0x21, 0x84, 0x0f, 0xd7, 0x6a, 0x12, 0xe9, 0x47, 0xb0, 0x5d, 0xc3, 0x78, 0x1f,
];

/// Tweak domain (top byte of a 128-bit tweak) of the hashes that turn COTs into random OTs.
pub(crate) const DOMAIN_ROT: u128 = 1 << 120;
/// Tweak domain of the PRF evaluations of the 1-out-of-N construction.
pub(crate) const DOMAIN_ONE_OF_N: u128 = 2 << 120;

fn to_ga(x: Block) -> aes::Block {
    aes::Block::from(x.to_le_bytes())
}

fn from_ga(b: &aes::Block) -> Block {
    let bytes: [u8; 16] = (*b).into();
    u128::from_le_bytes(bytes)
}

/// The tweakable circular-correlation-robust hash of Guo, Katz, Wang and Yu (S&P 2020) from a
/// fixed-key AES permutation π: `H(i, x) = π(π(x) ⊕ i) ⊕ π(x)`.
///
/// Security: in the random-permutation model for π, `x ↦ H(i, x ⊕ Δ)` is indistinguishable from
/// random for an unknown uniform 128-bit Δ as long as every (tweak, input-correlation) pair is
/// queried once, which is how IKNP random OT uses it (the tweak is the global OT index). This is
/// the "MMO with a tweak" hash. Cost: two AES-128 calls per hash, pipelined in batches.
#[derive(Clone)]
pub struct FixedKeyHash {
    pi: Aes128Enc,
}

impl std::fmt::Debug for FixedKeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FixedKeyHash")
    }
}

impl Default for FixedKeyHash {
    fn default() -> Self {
        Self::new()
    }
}

impl FixedKeyHash {
    /// The hash with the public fixed key.
    pub fn new() -> Self {
        Self {
            pi: Aes128Enc::new(&FIXED_KEY.into()),
        }
    }

    /// Applies the fixed-key permutation `π` to every block in place (for callers that reuse
    /// `π(x)` across several tweaks: `H(i, x) = π(π(x) ⊕ i) ⊕ π(x)`).
    pub fn permute_many(&self, xs: &mut [Block]) {
        let mut a = [aes::Block::default(); BATCH];
        for chunk in xs.chunks_mut(BATCH) {
            let a = &mut a[..chunk.len()];
            for (ga, x) in a.iter_mut().zip(chunk.iter()) {
                *ga = to_ga(*x);
            }
            self.pi.encrypt_blocks(a);
            for (x, ga) in chunk.iter_mut().zip(a.iter()) {
                *x = from_ga(ga);
            }
        }
    }

    /// `H(tweak, x)` for one input.
    pub fn hash(&self, tweak: u128, x: Block) -> Block {
        let mut out = [x];
        self.hash_many(&mut out, |_| tweak);
        let [h] = out;
        h
    }

    /// Replaces every `xs[j]` by `H(tweak(j), xs[j])`, in batches of 64 blocks.
    pub fn hash_many(&self, xs: &mut [Block], tweak: impl Fn(usize) -> u128) {
        let mut a = [aes::Block::default(); BATCH];
        let mut b = [aes::Block::default(); BATCH];
        for (c, chunk) in xs.chunks_mut(BATCH).enumerate() {
            let len = chunk.len();
            let (a, b) = (&mut a[..len], &mut b[..len]);
            for (ga, x) in a.iter_mut().zip(chunk.iter()) {
                *ga = to_ga(*x);
            }
            self.pi.encrypt_blocks(a);
            for (j, (gb, ga)) in b.iter_mut().zip(a.iter()).enumerate() {
                *gb = to_ga(from_ga(ga) ^ tweak(c * BATCH + j));
            }
            self.pi.encrypt_blocks(b);
            for ((x, ga), gb) in chunk.iter_mut().zip(a.iter()).zip(b.iter()) {
                *x = from_ga(ga) ^ from_ga(gb);
            }
        }
    }
}

/// A PRG from a 128-bit seed: AES-128 keyed by the seed in counter mode.
///
/// Security: AES-128 as a PRF (128-bit security). Output block `c` is `AES_seed(c)`; a caller
/// keeps its own block counter so that both parties stretch the same seed identically.
#[derive(Clone)]
pub struct AesPrg {
    cipher: Aes128Enc,
}

impl std::fmt::Debug for AesPrg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesPrg")
    }
}

impl AesPrg {
    /// The PRG of `seed`.
    pub fn new(seed: Block) -> Self {
        Self {
            cipher: Aes128Enc::new(&seed.to_le_bytes().into()),
        }
    }

    /// Writes the stream from block `first_block` on into `out` as little-endian `u64` words
    /// (two per block; an odd tail uses the low half of one more block). Returns the number of
    /// blocks used, `ceil(out.len() / 2)`.
    pub fn fill_words(&self, first_block: u64, out: &mut [u64]) -> u64 {
        let mut buf = [aes::Block::default(); BATCH];
        let mut ctr = u128::from(first_block);
        for chunk in out.chunks_mut(2 * BATCH) {
            let blocks = chunk.len().div_ceil(2);
            let buf = &mut buf[..blocks];
            for g in buf.iter_mut() {
                *g = to_ga(ctr);
                ctr += 1;
            }
            self.cipher.encrypt_blocks(buf);
            for (pair, g) in chunk.chunks_mut(2).zip(buf.iter()) {
                let v = from_ga(g);
                for (w, half) in pair.iter_mut().zip([v as u64, (v >> 64) as u64]) {
                    *w = half;
                }
            }
        }
        out.len().div_ceil(2) as u64
    }
}
