//! Fixed-point encoding of reals in Z_2^l.

use crate::{MpcError, Result, Ring};

/// Reals encoded as round(x * 2^frac) in Z_2^l, two's complement.
///
/// Representable range: [-2^(l-1-frac), 2^(l-1-frac)); resolution 2^-frac. Encoding saturates
/// at the range ends (a real outside the range is clipped, never wrapped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FixedPoint {
    ring: Ring,
    frac: u32,
}

impl FixedPoint {
    /// A format with `frac` fractional bits; needs at least one integer bit besides the sign.
    pub fn new(ring: Ring, frac: u32) -> Result<Self> {
        if frac + 2 > ring.bits() {
            return Err(MpcError::InvalidFixedPoint {
                bits: ring.bits(),
                frac,
                reason: "need frac + 2 <= l (a sign bit and an integer bit)".into(),
            });
        }
        if frac > 52 {
            return Err(MpcError::InvalidFixedPoint {
                bits: ring.bits(),
                frac,
                reason: "more fractional bits than an f64 mantissa holds".into(),
            });
        }
        Ok(Self { ring, frac })
    }

    /// The ring.
    pub fn ring(self) -> Ring {
        self.ring
    }

    /// Fractional bits.
    pub fn frac(self) -> u32 {
        self.frac
    }

    /// 2^frac.
    pub fn scale(self) -> f64 {
        (1u64 << self.frac) as f64
    }

    /// Largest representable real.
    pub fn max_value(self) -> f64 {
        (self.ring.to_i64(self.ring.mask() >> 1)) as f64 / self.scale()
    }

    /// Encodes a real (NaN encodes as 0; out-of-range values saturate).
    pub fn encode(self, x: f64) -> u64 {
        let half = (self.ring.mask() >> 1) as f64;
        let v = (x * self.scale()).round();
        let v = if v.is_nan() {
            0.0
        } else {
            v.clamp(-half - 1.0, half)
        };
        self.ring.from_i64(v as i64)
    }

    /// Decodes an element to a real.
    pub fn decode(self, x: u64) -> f64 {
        self.ring.to_i64(x) as f64 / self.scale()
    }

    /// Encodes a slice.
    pub fn encode_all(self, xs: &[f64]) -> Vec<u64> {
        xs.iter().map(|&x| self.encode(x)).collect()
    }

    /// Decodes a slice.
    pub fn decode_all(self, xs: &[u64]) -> Vec<f64> {
        xs.iter().map(|&x| self.decode(x)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_within_half_ulp_and_saturates() {
        for (l, f) in [(16u32, 8u32), (32, 12), (37, 12), (64, 20)] {
            let fp = FixedPoint::new(Ring::new(l).unwrap(), f).unwrap();
            let max = fp.max_value();
            for &x in &[0.0, 1.0, -1.0, 0.333, -2.75, max * 0.99, -max * 0.99] {
                let err = (fp.decode(fp.encode(x)) - x).abs();
                assert!(
                    err <= 0.5 / fp.scale() + 1e-12,
                    "l={l} f={f} x={x} err={err}"
                );
            }
            assert!((fp.decode(fp.encode(max * 4.0)) - max).abs() <= 1.0 / fp.scale());
            // saturates to the most negative element, -2^(l-1-frac)
            let min = -((1u128 << (l - 1 - f)) as f64);
            assert_eq!(fp.decode(fp.encode(-max * 4.0)), min);
            assert_eq!(fp.encode(f64::NAN), 0);
        }
        assert!(FixedPoint::new(Ring::new(16).unwrap(), 15).is_err());
    }
}
