//! Little-endian bit packing of unsigned values of a fixed width (1..=128 bits).
//!
//! The reader rejects (never panics on) truncated input and non-zero padding bits, so every byte
//! string has at most one valid decoding.

use crate::error::{FheError, Result};

/// Appends values of arbitrary width to a byte vector.
pub(crate) struct BitWriter {
    out: Vec<u8>,
    acc: u128,
    nbits: u32,
}

impl BitWriter {
    pub(crate) fn new(out: Vec<u8>) -> Self {
        Self {
            out,
            acc: 0,
            nbits: 0,
        }
    }

    fn put64(&mut self, v: u64, width: u32) {
        // nbits < 8 here, so nbits + width <= 71 fits in u128
        let v = if width >= 64 {
            v
        } else {
            v & ((1u64 << width) - 1)
        };
        self.acc |= u128::from(v) << self.nbits;
        self.nbits += width;
        while self.nbits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
    }

    /// Write the low `width` bits of `v`.
    pub(crate) fn put(&mut self, v: u128, width: u32) {
        if width > 64 {
            self.put64(v as u64, 64);
            self.put64((v >> 64) as u64, width - 64);
        } else {
            self.put64(v as u64, width);
        }
    }

    /// Flush the partial byte (zero padded).
    pub(crate) fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// Reads values written by [`BitWriter`].
pub(crate) struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u128,
    nbits: u32,
    what: &'static str,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Self {
            bytes,
            pos: 0,
            acc: 0,
            nbits: 0,
            what,
        }
    }

    fn get64(&mut self, width: u32) -> Result<u64> {
        while self.nbits < width {
            let byte = self
                .bytes
                .get(self.pos)
                .ok_or_else(|| FheError::malformed(self.what, "truncated"))?;
            self.acc |= u128::from(*byte) << self.nbits;
            self.pos += 1;
            self.nbits += 8;
        }
        let mask = if width >= 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let v = (self.acc as u64) & mask;
        self.acc >>= width;
        self.nbits -= width;
        Ok(v)
    }

    /// Read one `width`-bit value.
    pub(crate) fn get(&mut self, width: u32) -> Result<u128> {
        if width > 64 {
            let lo = self.get64(64)?;
            let hi = self.get64(width - 64)?;
            Ok(u128::from(lo) | (u128::from(hi) << 64))
        } else {
            Ok(u128::from(self.get64(width)?))
        }
    }

    /// Require that all input was consumed and the padding bits are zero.
    pub(crate) fn finish(self) -> Result<()> {
        if self.acc != 0 {
            return Err(FheError::malformed(self.what, "non-zero padding bits"));
        }
        if self.pos != self.bytes.len() {
            return Err(FheError::malformed(
                self.what,
                format!("{} trailing bytes", self.bytes.len() - self.pos),
            ));
        }
        Ok(())
    }
}

/// Bytes needed for `count` values of `width` bits.
pub(crate) fn packed_len(count: usize, width: u32) -> usize {
    (count * width as usize).div_ceil(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_mixed_widths() {
        let vals: Vec<(u128, u32)> = vec![
            (5, 3),
            (u128::MAX >> 1, 127),
            (0xabcdef, 24),
            (1, 1),
            (u64::MAX.into(), 64),
            (7, 65),
        ];
        let mut w = BitWriter::new(Vec::new());
        for &(v, b) in &vals {
            w.put(v, b);
        }
        let bytes = w.finish();
        let total: u32 = vals.iter().map(|v| v.1).sum();
        assert_eq!(bytes.len(), (total as usize).div_ceil(8));
        let mut r = BitReader::new(&bytes, "test");
        for &(v, b) in &vals {
            assert_eq!(r.get(b).unwrap(), v);
        }
        r.finish().unwrap();
        let mut r = BitReader::new(&bytes[..bytes.len() - 1], "test");
        let mut err = None;
        for &(_, b) in &vals {
            if let Err(e) = r.get(b) {
                err = Some(e);
                break;
            }
        }
        assert!(err.is_some());
    }
}
