//! The ring Z_2^l on native `u64` wrapping arithmetic.

use crate::{MpcError, Result};

/// The ring Z_2^l for `l` in `16..=64`, elements stored in the low `l` bits of a `u64`.
///
/// Arithmetic wraps in `u64` and is masked to `l` bits; since 2^l divides 2^64, reducing after
/// every `u64` wrapping operation gives the exact result mod 2^l.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Ring {
    bits: u32,
}

impl Ring {
    /// Smallest supported width.
    pub const MIN_BITS: u32 = 16;
    /// Largest supported width.
    pub const MAX_BITS: u32 = 64;

    /// Z_2^bits; refuses widths outside `16..=64`.
    pub fn new(bits: u32) -> Result<Self> {
        if !(Self::MIN_BITS..=Self::MAX_BITS).contains(&bits) {
            return Err(MpcError::InvalidRing {
                bits,
                min: Self::MIN_BITS,
                max: Self::MAX_BITS,
            });
        }
        Ok(Self { bits })
    }

    /// Z_2^64.
    pub const fn z64() -> Self {
        Self { bits: 64 }
    }

    /// The width l.
    pub fn bits(self) -> u32 {
        self.bits
    }

    /// 2^l - 1.
    #[inline]
    pub fn mask(self) -> u64 {
        u64::MAX >> (64 - self.bits)
    }

    /// Reduces a `u64` mod 2^l.
    #[inline]
    pub fn reduce(self, x: u64) -> u64 {
        x & self.mask()
    }

    /// Whether `x` is a canonical element (below 2^l).
    #[inline]
    pub fn contains(self, x: u64) -> bool {
        x & !self.mask() == 0
    }

    /// a + b.
    #[inline]
    pub fn add(self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b) & self.mask()
    }

    /// a - b.
    #[inline]
    pub fn sub(self, a: u64, b: u64) -> u64 {
        a.wrapping_sub(b) & self.mask()
    }

    /// a * b.
    #[inline]
    pub fn mul(self, a: u64, b: u64) -> u64 {
        a.wrapping_mul(b) & self.mask()
    }

    /// -a.
    #[inline]
    pub fn neg(self, a: u64) -> u64 {
        a.wrapping_neg() & self.mask()
    }

    /// Embeds a signed integer (two's complement mod 2^l).
    #[inline]
    pub fn from_i64(self, x: i64) -> u64 {
        (x as u64) & self.mask()
    }

    /// Reads an element as a signed integer in [-2^(l-1), 2^(l-1)).
    #[inline]
    pub fn to_i64(self, x: u64) -> i64 {
        let shift = 64 - self.bits;
        ((x << shift) as i64) >> shift
    }

    /// The most significant bit (the sign under the signed reading).
    #[inline]
    pub fn msb(self, x: u64) -> bool {
        (x >> (self.bits - 1)) & 1 == 1
    }

    /// Checks that every value is canonical; used on data received from the peer.
    pub fn check_all(self, xs: &[u64]) -> Result<()> {
        match xs.iter().position(|&x| !self.contains(x)) {
            None => Ok(()),
            Some(i) => Err(MpcError::InvalidPeerData {
                what: format!(
                    "element {i} is {:#x}, outside Z_2^{}",
                    xs.get(i).copied().unwrap_or_default(),
                    self.bits
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_are_validated() {
        assert!(Ring::new(15).is_err());
        assert!(Ring::new(65).is_err());
        for l in 16..=64 {
            assert_eq!(Ring::new(l).unwrap().bits(), l);
        }
    }

    #[test]
    fn arithmetic_matches_i128_reference() {
        let vals: [i64; 9] = [0, 1, -1, 2, -2, i64::MAX, i64::MIN, 12345, -98765];
        for l in [16u32, 17, 32, 37, 63, 64] {
            let r = Ring::new(l).unwrap();
            let m = 1i128 << l;
            let canon = |x: i128| x.rem_euclid(m) as u64;
            for &a in &vals {
                for &b in &vals {
                    let (ea, eb) = (r.from_i64(a), r.from_i64(b));
                    assert_eq!(r.add(ea, eb), canon(a as i128 + b as i128));
                    assert_eq!(r.sub(ea, eb), canon(a as i128 - b as i128));
                    assert_eq!(r.mul(ea, eb), canon(a as i128 * b as i128));
                    assert_eq!(r.neg(ea), canon(-(a as i128)));
                }
            }
            // signed reading at the boundaries
            let half = 1i64.checked_shl(l - 1).unwrap_or(i64::MIN);
            assert_eq!(r.to_i64(r.from_i64(-1)), -1);
            assert_eq!(
                r.to_i64(r.from_i64(half.wrapping_neg())),
                half.wrapping_neg()
            );
            assert_eq!(
                r.to_i64(r.from_i64(half.wrapping_sub(1))),
                half.wrapping_sub(1)
            );
            assert!(r.msb(r.from_i64(-1)));
            assert!(!r.msb(r.from_i64(half.wrapping_sub(1))));
        }
    }

    #[test]
    fn check_all_rejects_out_of_ring() {
        let r = Ring::new(20).unwrap();
        assert!(r.check_all(&[0, (1 << 20) - 1]).is_ok());
        assert!(r.check_all(&[0, 1 << 20]).is_err());
    }
}
