//! Bit packing for the wire: values of (possibly varying) widths, little-endian bit order.

use crate::{MpcError, Result};

/// Packs value `i` into `width(i)` bits (1..=64), LSB first.
pub(crate) fn pack_var(values: &[u64], width: impl Fn(usize) -> u32) -> Vec<u8> {
    let total: usize = (0..values.len()).map(|i| width(i) as usize).sum();
    let mut out = Vec::with_capacity(total.div_ceil(8));
    let mut acc: u128 = 0;
    let mut fill = 0u32;
    for (i, &v) in values.iter().enumerate() {
        let w = width(i);
        let v = if w >= 64 { v } else { v & ((1u64 << w) - 1) };
        acc |= u128::from(v) << fill;
        fill += w;
        while fill >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            fill -= 8;
        }
    }
    if fill > 0 {
        out.push(acc as u8);
    }
    out
}

/// Unpacks `count` values of widths `width(i)`; the byte length must be exact.
pub(crate) fn unpack_var(
    bytes: &[u8],
    count: usize,
    width: impl Fn(usize) -> u32,
    what: &str,
) -> Result<Vec<u64>> {
    let total: usize = (0..count).map(|i| width(i) as usize).sum();
    if bytes.len() != total.div_ceil(8) {
        return Err(MpcError::InvalidPeerData {
            what: format!(
                "{what}: {} bytes, expected {}",
                bytes.len(),
                total.div_ceil(8)
            ),
        });
    }
    let mut out = Vec::with_capacity(count);
    let mut it = bytes.iter();
    let mut acc: u128 = 0;
    let mut fill = 0u32;
    for i in 0..count {
        let w = width(i);
        while fill < w {
            let b = it.next().copied().unwrap_or(0);
            acc |= u128::from(b) << fill;
            fill += 8;
        }
        let m = if w >= 64 { u64::MAX } else { (1u64 << w) - 1 };
        out.push(acc as u64 & m);
        acc >>= w;
        fill -= w;
    }
    Ok(out)
}

/// Packs bits (LSB first) into `ceil(n/8)` bytes.
pub(crate) fn pack_bits(bits: &[bool]) -> Vec<u8> {
    bits.chunks(8)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |a, (k, &b)| a | (u8::from(b) << k))
        })
        .collect()
}

/// Unpacks exactly `n` bits from `ceil(n/8)` bytes.
pub(crate) fn unpack_bits(bytes: &[u8], n: usize, what: &str) -> Result<Vec<bool>> {
    if bytes.len() != n.div_ceil(8) {
        return Err(MpcError::InvalidPeerData {
            what: format!("{what}: {} bytes, expected {}", bytes.len(), n.div_ceil(8)),
        });
    }
    Ok((0..n)
        .map(|i| bytes.get(i / 8).is_some_and(|b| (b >> (i % 8)) & 1 == 1))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let v: Vec<u64> = (0..100u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let w = |i: usize| (i % 64) as u32 + 1;
        let p = pack_var(&v, w);
        let u = unpack_var(&p, v.len(), w, "t").unwrap();
        for (i, (&a, &b)) in v.iter().zip(&u).enumerate() {
            let m = if w(i) == 64 {
                u64::MAX
            } else {
                (1 << w(i)) - 1
            };
            assert_eq!(a & m, b);
        }
        assert!(unpack_var(&p[1..], v.len(), w, "t").is_err());
        let bits: Vec<bool> = (0..77).map(|i| i % 3 == 0).collect();
        assert_eq!(unpack_bits(&pack_bits(&bits), 77, "b").unwrap(), bits);
        assert!(unpack_bits(&pack_bits(&bits), 81, "b").is_err());
    }
}
