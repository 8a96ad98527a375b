//! Boolean (XOR) secret shares of bit vectors, packed 64 to a word.

use crate::{MpcError, Result};
use duet_transport::Role;

/// One party's XOR share of a vector of bits: the secret bit `i` is `mine_i ⊕ theirs_i`.
/// A single share is uniform and reveals nothing. Bits are packed LSB first into `u64` words;
/// the unused high bits of the last word are zero.
///
/// Local operations (free, no communication): [`BShare::xor`], [`BShare::not`] (only the
/// server flips), [`BShare::xor_public`], [`BShare::and_public`]. AND of two shared vectors is
/// the interactive [`super::and`] (Beaver bit triples).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BShare {
    len: usize,
    words: Vec<u64>,
}

impl BShare {
    /// All-zero share of `len` bits.
    pub fn zeros(len: usize) -> Self {
        Self {
            len,
            words: vec![0; len.div_ceil(64)],
        }
    }

    /// From one bit per element.
    pub fn from_bits(bits: &[bool]) -> Self {
        let mut words = vec![0u64; bits.len().div_ceil(64)];
        for (w, chunk) in words.iter_mut().zip(bits.chunks(64)) {
            *w = chunk
                .iter()
                .enumerate()
                .fold(0u64, |a, (k, &b)| a | (u64::from(b) << k));
        }
        Self {
            len: bits.len(),
            words,
        }
    }

    /// From packed words; checks the length and clears nothing (high bits must be zero).
    pub fn from_words(len: usize, words: Vec<u64>) -> Result<Self> {
        if words.len() != len.div_ceil(64) {
            return Err(MpcError::ShapeMismatch {
                what: format!("{} words for {len} bits", words.len()),
            });
        }
        let s = Self { len, words };
        if s.clone().cleared() != s {
            return Err(MpcError::InvalidArgument {
                what: "bits set beyond the length of a boolean share".into(),
            });
        }
        Ok(s)
    }

    fn cleared(mut self) -> Self {
        let r = self.len % 64;
        if r != 0 {
            if let Some(w) = self.words.last_mut() {
                *w &= (1u64 << r) - 1;
            }
        }
        self
    }

    /// One bit per element.
    pub fn to_bits(&self) -> Vec<bool> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// Bit `i` of this share (false beyond the length).
    pub fn get(&self, i: usize) -> bool {
        i < self.len
            && self
                .words
                .get(i / 64)
                .is_some_and(|w| (w >> (i % 64)) & 1 == 1)
    }

    /// Number of bits.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The packed words.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn check(&self, o: &Self) -> Result<()> {
        if self.len != o.len {
            return Err(MpcError::ShapeMismatch {
                what: format!("boolean shares of {} and {} bits", self.len, o.len),
            });
        }
        Ok(())
    }

    /// Share of `x ⊕ y` (local).
    pub fn xor(&self, o: &Self) -> Result<Self> {
        self.check(o)?;
        Ok(Self {
            len: self.len,
            words: self
                .words
                .iter()
                .zip(&o.words)
                .map(|(a, b)| a ^ b)
                .collect(),
        })
    }

    /// Share of `¬x` (local: the server flips its share, the client keeps it).
    pub fn not(&self, role: Role) -> Self {
        match role {
            Role::Client => self.clone(),
            Role::Server => Self {
                len: self.len,
                words: self.words.iter().map(|w| !w).collect(),
            }
            .cleared(),
        }
    }

    /// Share of `x ⊕ c` for public bits `c` (local: only the server adds them).
    pub fn xor_public(&self, role: Role, c: &[bool]) -> Result<Self> {
        let c = Self::from_bits(c);
        self.check(&c)?;
        Ok(match role {
            Role::Client => self.clone(),
            Role::Server => self.xor(&c)?,
        })
    }

    /// Share of `x ∧ c` for public bits `c` (local: both parties mask their shares).
    pub fn and_public(&self, c: &[bool]) -> Result<Self> {
        let c = Self::from_bits(c);
        self.check(&c)?;
        Ok(Self {
            len: self.len,
            words: self
                .words
                .iter()
                .zip(&c.words)
                .map(|(a, b)| a & b)
                .collect(),
        })
    }

    /// Recombines two shares into the secret bits.
    pub fn reconstruct(&self, o: &Self) -> Result<Vec<bool>> {
        Ok(self.xor(o)?.to_bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ops() {
        let x: Vec<bool> = (0..130).map(|i| i % 3 == 0).collect();
        let r: Vec<bool> = (0..130).map(|i| i % 5 < 2).collect();
        let x0 = BShare::from_bits(&r);
        let x1 = BShare::from_bits(&x).xor(&x0).unwrap();
        assert_eq!(x0.reconstruct(&x1).unwrap(), x);
        let n = x0
            .not(Role::Server)
            .reconstruct(&x1.not(Role::Client))
            .unwrap();
        assert!(n.iter().zip(&x).all(|(a, b)| *a != *b));
        let c: Vec<bool> = (0..130).map(|i| i % 2 == 0).collect();
        let a = x0
            .and_public(&c)
            .unwrap()
            .reconstruct(&x1.and_public(&c).unwrap())
            .unwrap();
        assert!((0..130).all(|i| a[i] == (x[i] & c[i])));
        assert!(x0.xor(&BShare::zeros(3)).is_err());
        assert!(BShare::from_words(3, vec![0b1000]).is_err());
        assert!(BShare::from_words(3, vec![0b100]).is_ok());
    }
}
