//! Seeded pseudo-random generators.

use crate::{Result, Ring};
use duet_transport::Channel;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// A 32-byte PRG seed.
pub type Seed = [u8; 32];

/// A deterministic PRG (ChaCha12) from a 32-byte seed.
///
/// Two parties holding the same seed draw the same stream, which is how correlated masks are
/// made without sending them: e.g. the client's share of a tensor can be expanded from a seed
/// instead of being sent. ChaCha12 is a 128-bit-secure PRG (and the cipher `rand` uses for
/// `StdRng`).
#[derive(Clone, Debug)]
pub struct Prg(ChaCha12Rng);

impl Prg {
    /// From a seed.
    pub fn from_seed(seed: Seed) -> Self {
        Self(ChaCha12Rng::from_seed(seed))
    }

    /// A seed from the operating system's entropy.
    pub fn fresh_seed() -> Seed {
        let mut s = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut s);
        s
    }

    /// A PRG seeded from the operating system's entropy.
    pub fn from_entropy() -> Self {
        Self::from_seed(Self::fresh_seed())
    }

    /// A new independent seed drawn from this PRG (for sub-protocols).
    pub fn fork_seed(&mut self) -> Seed {
        let mut s = [0u8; 32];
        self.0.fill_bytes(&mut s);
        s
    }

    /// One uniform element of `ring`.
    pub fn ring_element(&mut self, ring: Ring) -> u64 {
        self.0.next_u64() & ring.mask()
    }

    /// `n` uniform elements of `ring`.
    pub fn ring_elements(&mut self, ring: Ring, n: usize) -> Vec<u64> {
        let mut v = vec![0u64; n];
        self.fill_ring(ring, &mut v);
        v
    }

    /// Fills `out` with uniform elements of `ring`.
    pub fn fill_ring(&mut self, ring: Ring, out: &mut [u64]) {
        self.0.fill_bytes(bytemuck::cast_slice_mut(out));
        let m = ring.mask();
        out.iter_mut().for_each(|x| *x &= m);
    }
}

impl RngCore for Prg {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl rand::CryptoRng for Prg {}

/// Agrees on a common seed: each party contributes `mine` and the seed is the XOR of both.
///
/// Semi-honest security: the seed is uniform as long as either party's contribution is. One
/// round (both send at once), 32 bytes each way.
pub fn agree_seed<C: Channel>(ch: &mut C, mine: Seed) -> Result<Seed> {
    ch.send_bytes(&mine)?;
    ch.flush()?;
    let theirs = ch.recv_bytes_max(32)?;
    let theirs: Seed =
        theirs
            .as_slice()
            .try_into()
            .map_err(|_| crate::MpcError::InvalidPeerData {
                what: format!("seed of {} bytes, expected 32", theirs.len()),
            })?;
    let mut out = [0u8; 32];
    for ((o, a), b) in out.iter_mut().zip(mine).zip(theirs) {
        *o = a ^ b;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_transport::run_two_party;

    #[test]
    fn same_seed_same_stream_and_ring_masked() {
        let r = Ring::new(37).unwrap();
        let a = Prg::from_seed([7; 32]).ring_elements(r, 1000);
        let b = Prg::from_seed([7; 32]).ring_elements(r, 1000);
        let c = Prg::from_seed([8; 32]).ring_elements(r, 1000);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(r.check_all(&a).is_ok());
        // high bit of the ring is used (not a constant-zero bug)
        assert!(a.iter().any(|&x| r.msb(x)));
    }

    #[test]
    fn agreed_seed_is_common_and_depends_on_both() {
        let (s, c) = run_two_party(
            |mut ch| agree_seed(&mut ch, [1; 32]).unwrap(),
            |mut ch| agree_seed(&mut ch, [2; 32]).unwrap(),
        );
        assert_eq!(s, c);
        assert_eq!(s, [3; 32]);
    }
}
