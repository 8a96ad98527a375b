//! ggml tensor types and their dequantization to f32.
//!
//! A GGUF tensor is stored as a sequence of *blocks* along its innermost dimension; each block
//! holds a fixed number of values in a fixed number of bytes (all fields little-endian):
//!
//! | type | values | bytes | layout and value |
//! |---|---|---|---|
//! | F32 | 1 | 4 | IEEE binary32 |
//! | F16 | 1 | 2 | IEEE binary16 |
//! | BF16 | 1 | 2 | bfloat16 (the upper half of a binary32) |
//! | Q8_0 | 32 | 34 | f16 `d`, 32 x i8 `q`: `x = d q` |
//! | Q4_0 | 32 | 18 | f16 `d`, 16 bytes of nibbles: `x = d (q - 8)` |
//! | Q4_1 | 32 | 20 | f16 `d`, f16 `m`, 16 bytes of nibbles: `x = d q + m` |
//! | Q4_K | 256 | 144 | f16 `d`, f16 `dmin`, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles |
//! | Q5_K | 256 | 176 | as Q4_K plus 32 bytes holding the fifth bit of every value |
//! | Q6_K | 256 | 210 | 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 x i8 scales, f16 `d` |
//!
//! In the 4-bit types of 32 values, byte `j` of the nibbles holds value `j` in its low nibble
//! and value `j + 16` in its high nibble. The K-quants split a block of 256 into sub-blocks of
//! 32 (Q4_K, Q5_K: each with its own 6-bit scale and min, `x = d sc q - dmin m`) or of 16
//! (Q6_K: each with an 8-bit signed scale, `x = d sc (q - 32)`). The arithmetic follows the
//! format's definition in single precision (as ggml computes it), so the f32 values equal
//! those of other implementations bit for bit; callers widen them to f64.

use half::{bf16, f16};

/// The ggml tensor types Duet reads (the numeric ids are those of the GGUF format).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// 32-bit float (id 0).
    F32,
    /// 16-bit float (id 1).
    F16,
    /// bfloat16 (id 30).
    Bf16,
    /// 32 values: one f16 scale, 4-bit values offset by 8 (id 2).
    Q4_0,
    /// 32 values: f16 scale and minimum, 4-bit values (id 3).
    Q4_1,
    /// 32 values: one f16 scale, 8-bit signed values (id 8).
    Q8_0,
    /// 256 values in 8 sub-blocks of 32 with 6-bit scales and minimums, 4-bit values (id 12).
    Q4K,
    /// As [`GgmlType::Q4K`] with 5-bit values (id 13).
    Q5K,
    /// 256 values in 16 sub-blocks of 16 with 8-bit scales, 6-bit values (id 14).
    Q6K,
}

/// Values in a K-quant super-block.
pub const QK_K: usize = 256;
/// Values in a block of the 32-value quantizations.
pub const QK: usize = 32;

impl GgmlType {
    /// Every type Duet reads.
    pub const ALL: [GgmlType; 9] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// The type with GGUF id `id`, if Duet reads it.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// The GGUF id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4K => 12,
            GgmlType::Q5K => 13,
            GgmlType::Q6K => 14,
            GgmlType::Bf16 => 30,
        }
    }

    /// The name ggml gives the type.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::Bf16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_values(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => QK,
            GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K => QK_K,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::Bf16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4K => 144,
            GgmlType::Q5K => 176,
            GgmlType::Q6K => 210,
        }
    }

    /// Bytes that `values` values occupy, if `values` is a whole number of blocks and the
    /// size fits in a `u64`.
    pub fn bytes_for(self, values: u64) -> Option<u64> {
        let per = self.block_values() as u64;
        if values % per != 0 {
            return None;
        }
        (values / per).checked_mul(self.block_bytes() as u64)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Dequantizes `data` (whole blocks of type `ty`) into `out`, which must hold exactly the
/// blocks' values. A size mismatch is an error (the reader checks sizes before calling).
pub fn dequantize(ty: GgmlType, data: &[u8], out: &mut [f32]) -> Result<(), String> {
    let (bv, bb) = (ty.block_values(), ty.block_bytes());
    if out.len() % bv != 0 || data.len() != out.len() / bv * bb {
        return Err(format!(
            "{ty}: {} bytes cannot hold {} values",
            data.len(),
            out.len()
        ));
    }
    let blocks = data.chunks_exact(bb).zip(out.chunks_exact_mut(bv));
    match ty {
        GgmlType::F32 => blocks.for_each(|(b, o)| o.fill(f32_at(b))),
        GgmlType::F16 => blocks.for_each(|(b, o)| o.fill(f16_at(b))),
        GgmlType::Bf16 => blocks.for_each(|(b, o)| {
            o.fill(bf16::from_le_bytes(first::<2>(b)).to_f32());
        }),
        GgmlType::Q8_0 => blocks.for_each(|(b, o)| q8_0(b, o)),
        GgmlType::Q4_0 => blocks.for_each(|(b, o)| q4_0(b, o)),
        GgmlType::Q4_1 => blocks.for_each(|(b, o)| q4_1(b, o)),
        GgmlType::Q4K => blocks.for_each(|(b, o)| q4_k(b, o)),
        GgmlType::Q5K => blocks.for_each(|(b, o)| q5_k(b, o)),
        GgmlType::Q6K => blocks.for_each(|(b, o)| q6_k(b, o)),
    }
    Ok(())
}

/// [`dequantize`] straight into f64 (each value widened exactly), through a small f32
/// buffer so no f32 copy of the whole tensor is made.
pub fn dequantize_f64(ty: GgmlType, data: &[u8], out: &mut [f64]) -> Result<(), String> {
    let (bv, bb) = (ty.block_values(), ty.block_bytes());
    if out.len() % bv != 0 || data.len() != out.len() / bv * bb {
        return Err(format!(
            "{ty}: {} bytes cannot hold {} values",
            data.len(),
            out.len()
        ));
    }
    // 16 blocks of the largest type per step
    let per_step = 16 * QK_K / bv;
    let mut buf = [0f32; 16 * QK_K];
    for (d, o) in data
        .chunks(per_step * bb)
        .zip(out.chunks_mut(per_step * bv))
    {
        let b = buf.get_mut(..o.len()).ok_or("buffer too small")?;
        dequantize(ty, d, b)?;
        o.iter_mut()
            .zip(b.iter())
            .for_each(|(y, &x)| *y = f64::from(x));
    }
    Ok(())
}

/// The first `N` bytes of `b` (zeros past its end; block slices always have them).
fn first<const N: usize>(b: &[u8]) -> [u8; N] {
    b.first_chunk::<N>().copied().unwrap_or([0; N])
}

fn f32_at(b: &[u8]) -> f32 {
    f32::from_le_bytes(first::<4>(b))
}

fn f16_at(b: &[u8]) -> f32 {
    f16::from_le_bytes(first::<2>(b)).to_f32()
}

/// `b[from..]`, empty past the end.
fn tail(b: &[u8], from: usize) -> &[u8] {
    b.get(from..).unwrap_or(&[])
}

/// Q8_0: `x_i = d q_i`.
fn q8_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b);
    for (o, &q) in out.iter_mut().zip(tail(b, 2)) {
        *o = f32::from(q as i8) * d;
    }
}

/// Q4_0: `x_j = d (lo_j - 8)`, `x_{j+16} = d (hi_j - 8)`.
fn q4_0(b: &[u8], out: &mut [f32]) {
    let d = f16_at(b);
    let (lo, hi) = out.split_at_mut(QK / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(tail(b, 2)) {
        *l = f32::from(i16::from(q & 0x0F) - 8) * d;
        *h = f32::from(i16::from(q >> 4) - 8) * d;
    }
}

/// Q4_1: `x_j = d lo_j + m`, `x_{j+16} = d hi_j + m`.
fn q4_1(b: &[u8], out: &mut [f32]) {
    let (d, m) = (f16_at(b), f16_at(tail(b, 2)));
    let (lo, hi) = out.split_at_mut(QK / 2);
    for ((l, h), &q) in lo.iter_mut().zip(hi).zip(tail(b, 4)) {
        *l = f32::from(q & 0x0F) * d + m;
        *h = f32::from(q >> 4) * d + m;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block, packed in 12 bytes:
/// sub-blocks 0..4 keep theirs in the low 6 bits of bytes `j` (scale) and `j + 4` (min);
/// sub-blocks 4..8 take their low 4 bits from the nibbles of byte `j + 4` and their top 2
/// bits from the top bits of bytes `j - 4` (scale) and `j` (min).
pub fn k_scale_min(scales: &[u8; 12], j: usize) -> (u8, u8) {
    let at = |i: usize| scales.get(i).copied().unwrap_or(0);
    if j < 4 {
        (at(j) & 63, at(j + 4) & 63)
    } else {
        let sc = (at(j + 4) & 0x0F) | ((at(j - 4) >> 6) << 4);
        let m = (at(j + 4) >> 4) | ((at(j) >> 6) << 4);
        (sc, m)
    }
}

/// Q4_K and Q5_K: for each run of 64 values, sub-blocks `2i` (low nibbles of 32 bytes) and
/// `2i + 1` (high nibbles of the same bytes); in Q5_K bit `2i` (resp. `2i + 1`) of `qh[l]`
/// adds 16 to value `l` of the sub-block. `x = (d sc) q - (dmin m)`.
fn k_quant_4_5(b: &[u8], out: &mut [f32], five_bit: bool) {
    let d = f16_at(b);
    let dmin = f16_at(tail(b, 2));
    let scales: [u8; 12] = first::<12>(tail(b, 4));
    let (qh, qs) = if five_bit {
        (tail(b, 16).get(..32).unwrap_or(&[]), tail(b, 48))
    } else {
        (&[][..], tail(b, 16))
    };
    for (i, (run, q)) in out
        .chunks_exact_mut(64)
        .zip(qs.chunks_exact(32))
        .enumerate()
    {
        let (sc1, m1) = k_scale_min(&scales, 2 * i);
        let (sc2, m2) = k_scale_min(&scales, 2 * i + 1);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (lo, hi) = run.split_at_mut(32);
        for (l, ((a, z), &q)) in lo.iter_mut().zip(hi).zip(q).enumerate() {
            let h = qh.get(l).copied().unwrap_or(0);
            let bit = |k: usize| if (h >> k) & 1 == 1 { 16u8 } else { 0 };
            let (ql, qhi) = if five_bit {
                ((q & 0x0F) + bit(2 * i), (q >> 4) + bit(2 * i + 1))
            } else {
                (q & 0x0F, q >> 4)
            };
            *a = d1 * f32::from(ql) - min1;
            *z = d2 * f32::from(qhi) - min2;
        }
    }
}

fn q4_k(b: &[u8], out: &mut [f32]) {
    k_quant_4_5(b, out, false);
}

fn q5_k(b: &[u8], out: &mut [f32]) {
    k_quant_4_5(b, out, true);
}

/// Q6_K: two halves of 128 values, each from 64 bytes of `ql`, 32 bytes of `qh` and 8 scales.
/// For `l < 32`: values `l`, `l + 32`, `l + 64`, `l + 96` take the low nibble of `ql[l]`,
/// of `ql[l + 32]`, the high nibble of `ql[l]`, of `ql[l + 32]`, with bit pairs 0-1, 2-3,
/// 4-5, 6-7 of `qh[l]` on top; their scales are `sc[is]`, `sc[is + 2]`, `sc[is + 4]`,
/// `sc[is + 6]` with `is = l / 16`. `x = d sc (q - 32)`.
fn q6_k(b: &[u8], out: &mut [f32]) {
    let ql_all = b.get(..128).unwrap_or(&[]);
    let qh_all = tail(b, 128).get(..64).unwrap_or(&[]);
    let sc_all = tail(b, 192).get(..16).unwrap_or(&[]);
    let d = f16_at(tail(b, 208));
    let halves = out
        .chunks_exact_mut(128)
        .zip(ql_all.chunks_exact(64))
        .zip(qh_all.chunks_exact(32))
        .zip(sc_all.chunks_exact(8));
    for (((y, ql), qh), sc) in halves {
        let sc: [i8; 8] = first::<8>(sc).map(|s| s as i8);
        let (y01, y23) = y.split_at_mut(64);
        let (y0, y1) = y01.split_at_mut(32);
        let (y2, y3) = y23.split_at_mut(32);
        let (qa, qb) = ql.split_at(32);
        let outs = y0.iter_mut().zip(y1).zip(y2).zip(y3);
        for (l, ((((o0, o1), o2), o3), (&a, (&bq, &h)))) in
            outs.zip(qa.iter().zip(qb.iter().zip(qh))).enumerate()
        {
            let is = l / 16;
            let s = |k: usize| f32::from(sc.get(is + k).copied().unwrap_or(0));
            let q = |nib: u8, shift: u8| {
                let v = nib | (((h >> shift) & 3) << 4);
                f32::from(i16::from(v) - 32)
            };
            *o0 = d * s(0) * q(a & 0x0F, 0);
            *o1 = d * s(2) * q(bq & 0x0F, 2);
            *o2 = d * s(4) * q(a >> 4, 4);
            *o3 = d * s(6) * q(bq >> 4, 6);
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::needless_range_loop
)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    fn deq(ty: GgmlType, block: &[u8]) -> Vec<f32> {
        assert_eq!(block.len(), ty.block_bytes());
        let mut out = vec![0.0; ty.block_values()];
        dequantize(ty, block, &mut out).unwrap();
        out
    }

    #[test]
    fn plain_floats() {
        let vals = [1.5f32, -2.25, 0.0, 1e-3];
        let b: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut out = [0f32; 4];
        dequantize(GgmlType::F32, &b, &mut out).unwrap();
        assert_eq!(out, vals);
        let b: Vec<u8> = vals.iter().flat_map(|v| h(*v)).collect();
        dequantize(GgmlType::F16, &b, &mut out).unwrap();
        for (o, v) in out.iter().zip(vals) {
            assert_eq!(*o, f16::from_f32(v).to_f32());
        }
        let b: Vec<u8> = vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect();
        dequantize(GgmlType::Bf16, &b, &mut out).unwrap();
        for (o, v) in out.iter().zip(vals) {
            assert_eq!(*o, bf16::from_f32(v).to_f32());
        }
    }

    #[test]
    fn q8_0_block() {
        let mut b = h(0.5).to_vec();
        let q: Vec<i8> = (0..32).map(|i| (i * 9 - 128) as i8).collect();
        b.extend(q.iter().map(|&v| v as u8));
        let out = deq(GgmlType::Q8_0, &b);
        for i in 0..32 {
            assert_eq!(out[i], 0.5 * f32::from(q[i]));
        }
    }

    #[test]
    fn q4_0_block() {
        let mut b = h(0.25).to_vec();
        let q: Vec<u8> = (0..32).map(|i| ((i * 7) % 16) as u8).collect();
        for j in 0..16 {
            b.push(q[j] | (q[j + 16] << 4));
        }
        let out = deq(GgmlType::Q4_0, &b);
        for i in 0..32 {
            assert_eq!(out[i], 0.25 * (f32::from(q[i]) - 8.0), "value {i}");
        }
    }

    #[test]
    fn q4_1_block() {
        let mut b = h(0.125).to_vec();
        b.extend(h(-1.5));
        let q: Vec<u8> = (0..32).map(|i| ((i * 5 + 3) % 16) as u8).collect();
        for j in 0..16 {
            b.push(q[j] | (q[j + 16] << 4));
        }
        let out = deq(GgmlType::Q4_1, &b);
        for i in 0..32 {
            assert_eq!(out[i], 0.125 * f32::from(q[i]) - 1.5, "value {i}");
        }
    }

    /// Packs 8 six-bit scales and mins the way Q4_K/Q5_K store them.
    fn pack_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..4 {
            s[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            s[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
            s[j + 8] = (sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4);
        }
        s
    }

    #[test]
    fn k_scale_unpacking() {
        let sc = [1, 63, 17, 40, 33, 62, 5, 48];
        let m = [0, 12, 63, 31, 50, 7, 61, 16];
        let p = pack_scales(&sc, &m);
        for j in 0..8 {
            assert_eq!(k_scale_min(&p, j), (sc[j], m[j]), "sub-block {j}");
        }
    }

    fn k_block(five: bool) -> (Vec<u8>, Vec<f32>) {
        let (d, dmin) = (0.03125f32, 0.0625f32);
        let sc = [1u8, 63, 17, 40, 33, 62, 5, 48];
        let m = [0u8, 12, 63, 31, 50, 7, 61, 16];
        let top = if five { 32 } else { 16 };
        let q: Vec<u8> = (0..256).map(|i| ((i * 11 + 5) % top) as u8).collect();
        let mut b = h(d).to_vec();
        b.extend(h(dmin));
        b.extend(pack_scales(&sc, &m));
        if five {
            let mut qh = [0u8; 32];
            for (i, &v) in q.iter().enumerate() {
                if v >= 16 {
                    // value i sits in sub-block i / 32, at position i % 32
                    qh[i % 32] |= 1 << (i / 32);
                }
            }
            b.extend(qh);
        }
        for run in 0..4 {
            for l in 0..32 {
                let lo = q[run * 64 + l] & 0x0F;
                let hi = q[run * 64 + 32 + l] & 0x0F;
                b.push(lo | (hi << 4));
            }
        }
        let want = (0..256)
            .map(|i| {
                let s = i / 32;
                d * f32::from(sc[s]) * f32::from(q[i]) - dmin * f32::from(m[s])
            })
            .collect();
        (b, want)
    }

    #[test]
    fn q4_k_block() {
        let (b, want) = k_block(false);
        assert_eq!(deq(GgmlType::Q4K, &b), want);
    }

    #[test]
    fn q5_k_block() {
        let (b, want) = k_block(true);
        assert_eq!(deq(GgmlType::Q5K, &b), want);
    }

    #[test]
    fn q6_k_block() {
        let d = 0.0078125f32;
        let sc: Vec<i8> = (0..16).map(|i| (i * 13 - 100) as i8).collect();
        let q: Vec<u8> = (0..256).map(|i| ((i * 29 + 7) % 64) as u8).collect();
        let (mut ql, mut qh) = (vec![0u8; 128], vec![0u8; 64]);
        for i in 0..256 {
            let (half, r) = (i / 128, i % 128);
            let (quarter, l) = (r / 32, r % 32);
            // quarters 0/1 use low nibbles of ql[l] / ql[l+32], quarters 2/3 the high ones
            let byte = half * 64 + l + if quarter % 2 == 1 { 32 } else { 0 };
            let shift = if quarter >= 2 { 4 } else { 0 };
            ql[byte] |= (q[i] & 0x0F) << shift;
            qh[half * 32 + l] |= (q[i] >> 4) << (2 * quarter);
        }
        let mut b = ql;
        b.extend(qh);
        b.extend(sc.iter().map(|&s| s as u8));
        b.extend(h(d));
        let out = deq(GgmlType::Q6K, &b);
        for i in 0..256 {
            // scale index: 16-value groups in order
            let want = d * f32::from(sc[i / 16]) * (f32::from(q[i]) - 32.0);
            assert_eq!(out[i], want, "value {i}");
        }
    }

    #[test]
    fn f64_output_equals_widened_f32() {
        // 600 blocks: several steps of the f32 buffer, the last one partial
        for (ty, blocks) in [
            (GgmlType::Q8_0, 600),
            (GgmlType::Q6K, 37),
            (GgmlType::F16, 9000),
        ] {
            let bytes: Vec<u8> = (0..blocks * ty.block_bytes())
                .map(|i| (i * 7 + i / 3) as u8 & 0x3F)
                .collect();
            let n = blocks * ty.block_values();
            let mut a = vec![0f32; n];
            let mut b = vec![0f64; n];
            dequantize(ty, &bytes, &mut a).unwrap();
            dequantize_f64(ty, &bytes, &mut b).unwrap();
            assert!(a.iter().zip(&b).all(|(x, y)| f64::from(*x) == *y), "{ty}");
        }
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let mut out = [0f32; 32];
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 33], &mut out).is_err());
        let mut out = [0f32; 31];
        assert!(dequantize(GgmlType::Q8_0, &[0u8; 34], &mut out).is_err());
        assert_eq!(GgmlType::Q4K.bytes_for(255), None);
        assert_eq!(GgmlType::Q4K.bytes_for(512), Some(288));
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(6), None);
    }
}
