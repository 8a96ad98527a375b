//! Packing of `w`-bit values and choice bits into bytes for the wire (little-endian bit order).

#![expect(
    clippy::indexing_slicing,
    reason = "word indices are below ceil(count * w / 64), the length of the buffer"
)]

use crate::{MpcError, Result};

/// Mask of the low `w` bits (`w` in `1..=64`).
#[inline]
pub(crate) fn low_mask(w: u32) -> u64 {
    u64::MAX >> (64 - w)
}

/// Bytes taken by `count` values of `w` bits: `ceil(count * w / 8)`.
pub(crate) fn packed_len(count: usize, w: u32) -> usize {
    (count * w as usize).div_ceil(8)
}

/// Packs the low `w` bits of each value (`w` in `1..=64`), LSB first, into
/// [`packed_len`]`(values.len(), w)` bytes.
pub(crate) fn pack(values: &[u64], w: u32) -> Vec<u8> {
    let total = values.len() * w as usize;
    let mut words = vec![0u64; total.div_ceil(64) + 1];
    let mask = low_mask(w);
    let mut pos = 0usize;
    for &v in values {
        let v = v & mask;
        let (i, s) = (pos / 64, pos % 64);
        words[i] |= v << s;
        if s != 0 && s + w as usize > 64 {
            words[i + 1] |= v >> (64 - s);
        }
        pos += w as usize;
    }
    let mut out: Vec<u8> = words.iter().flat_map(|x| x.to_le_bytes()).collect();
    out.truncate(packed_len(values.len(), w));
    out
}

/// A streaming packer of `w`-bit values (the same layout as [`pack`]).
pub(crate) struct BitWriter {
    words: Vec<u64>,
    acc: u64,
    fill: u32,
    w: u32,
    mask: u64,
    count: usize,
}

impl BitWriter {
    /// A writer for about `capacity` values of `w` bits (`w` in `1..=64`).
    pub(crate) fn new(w: u32, capacity: usize) -> Self {
        Self {
            words: Vec::with_capacity((capacity * w as usize).div_ceil(64)),
            acc: 0,
            fill: 0,
            w,
            mask: low_mask(w),
            count: 0,
        }
    }

    /// Appends the low `w` bits of `v`.
    #[inline]
    pub(crate) fn push(&mut self, v: u64) {
        let v = v & self.mask;
        self.acc |= v << self.fill;
        self.fill += self.w;
        if self.fill >= 64 {
            self.words.push(self.acc);
            self.fill -= 64;
            // The bits of v that did not fit (none if v ended exactly at the word boundary).
            self.acc = if self.fill == 0 {
                0
            } else {
                v >> (self.w - self.fill)
            };
        }
        self.count += 1;
    }

    /// The packed bytes, `ceil(count * w / 8)` of them.
    pub(crate) fn finish(self) -> Vec<u8> {
        let len = packed_len(self.count, self.w);
        let mut out: Vec<u8> = bytemuck::cast_slice(&self.into_words()).to_vec();
        out.truncate(len);
        out
    }

    /// The packed words (the last one zero-padded): whole when `count * w` is a multiple of
    /// 64, so that the words of consecutive writers concatenate.
    pub(crate) fn into_words(mut self) -> Vec<u64> {
        if self.fill > 0 {
            self.words.push(self.acc);
        }
        self.words
    }
}

/// Unpacks `count` values of `w` bits; the length must be exact and padding bits zero.
pub(crate) fn unpack(bytes: &[u8], count: usize, w: u32, what: &str) -> Result<Vec<u64>> {
    let expected = packed_len(count, w);
    if bytes.len() != expected {
        return Err(MpcError::InvalidPeerData {
            what: format!("{what}: {} bytes, expected {expected}", bytes.len()),
        });
    }
    let total = count * w as usize;
    if total % 8 != 0 {
        let last = bytes.last().copied().unwrap_or(0);
        if last >> (total % 8) != 0 {
            return Err(MpcError::InvalidPeerData {
                what: format!("{what}: non-zero padding bits"),
            });
        }
    }
    let mut words = vec![0u64; total.div_ceil(64) + 1];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks(8)) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_le_bytes(b);
    }
    let mask = low_mask(w);
    let mut out = Vec::with_capacity(count);
    let mut pos = 0usize;
    for _ in 0..count {
        let (i, s) = (pos / 64, pos % 64);
        let mut v = words[i] >> s;
        if s != 0 && s + w as usize > 64 {
            v |= words[i + 1] << (64 - s);
        }
        out.push(v & mask);
        pos += w as usize;
    }
    Ok(out)
}

/// Packs booleans into bytes, LSB first.
pub(crate) fn pack_bools(bits: impl ExactSizeIterator<Item = bool>) -> Vec<u8> {
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.enumerate() {
        out[i / 8] |= u8::from(b) << (i % 8);
    }
    out
}

/// Unpacks exactly `count` booleans; the length must be exact and padding bits zero.
pub(crate) fn unpack_bools(bytes: &[u8], count: usize, what: &str) -> Result<Vec<bool>> {
    Ok(unpack(bytes, count, 1, what)?
        .into_iter()
        .map(|b| b != 0)
        .collect())
}

/// The bits `0..n` of little-endian packed words as booleans.
pub(crate) fn words_to_bools(words: &[u64], n: usize) -> Vec<bool> {
    (0..n)
        .map(|i| (words[i / 64] >> (i % 64)) & 1 == 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn pack_roundtrip_all_widths() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for w in 1..=64u32 {
            for count in [0usize, 1, 7, 8, 9, 63, 64, 65, 130] {
                let v: Vec<u64> = (0..count).map(|_| rng.gen::<u64>() & low_mask(w)).collect();
                let p = pack(&v, w);
                assert_eq!(p.len(), packed_len(count, w));
                assert_eq!(unpack(&p, count, w, "t").unwrap(), v);
            }
        }
        assert!(unpack(&[0xff], 1, 4, "t").is_err());
        assert!(unpack(&[0x0f, 0], 1, 4, "t").is_err());
        for w in 1..=64u32 {
            let v: Vec<u64> = (0..333).map(|_| rng.gen::<u64>() & low_mask(w)).collect();
            let mut bw = BitWriter::new(w, 10);
            v.iter().for_each(|&x| bw.push(x));
            assert_eq!(bw.finish(), pack(&v, w), "w = {w}");
        }
        let b = vec![true, false, true, true, false, false, false, true, true];
        assert_eq!(
            unpack_bools(&pack_bools(b.iter().copied()), 9, "t").unwrap(),
            b
        );
    }
}
