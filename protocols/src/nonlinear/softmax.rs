//! SoftMax over the last axis on additive shares, with max subtraction, a public attention mask
//! (masked positions give exactly 0) and one reciprocal per row.
//!
//! Protocol (both parties, semi-honest, 128-bit; every step from [`duet_mpc`]):
//! 1. the logits (`f_in` fractional bits) move to the operator ring `Z_2^L` (`L = 2F + 2` or
//!    more): a local reduction from a wider ring (exact for logits below `2^{L-4-f_in}` in
//!    magnitude), a signed extension from a narrower one; masked logits are replaced by the
//!    public `-2^{L-4}` (local);
//! 2. `m = max` over the row ([`nl::max_axis`]: a tree of ReLUs), `d = x - m <= 0` (local);
//! 3. `e = exp(d)` ([`exp`], see [`ExpMethod`]: clipping ReLU, range reduction by scaling,
//!    squarings; or for the Duet preset [`ExpMethod::Lut`]: a split of the shares, a
//!    1-of-8 table lookup and one one-sided product), at `F + exp_extra` fractional bits;
//!    masked `e` set to 0 (local);
//! 4. `S = sum e` per row (local) and `r = 1/S` once per row ([`recip`]: `S` lies in
//!    `[1/2, 2k]`, so the MSB search covers `log2 k + 2` positions; the sums are extended
//!    to a wider ring first when that range needs it, one COT per row);
//! 5. `e` and `r` extended to the output ring ([`extend_pos`], one COT each, non-negative
//!    values), `y = e r` by [`mul_pos`] (Gilboa with the `F + 2` bits of `e`'s narrow shares
//!    as choices plus two wrap corrections: the cheapest product of two private values here;
//!    both factors are shared, so the one-sided
//!    [`mul_known`](duet_mpc::fixed_math::exp::mul_known) does not apply, a full-width
//!    [`nl::mul`] costs 25% more and an HE product more still below 40-bit rings), then a
//!    truncation of a positive value (one COT); masked `y` set to 0 (local).
//!    With [`SoftmaxConfig::fused_product`] (the Duet preset) instead: `e r / 2^d` down to
//!    `F + 4` fractional bits by [`mul_trunc_dither`] (the same narrow product with the
//!    truncation fused into the COTs, which are then at most `out_bits - F_r + 4` bits wide;
//!    `e` and `r` are read mod `2^m` from their rings, no extension; the rounded
//!    correlations dithered, since `r` is the same for a whole row), an unbiased rounding by
//!    4 bits ([`trunc_offset`]) and one extension of `y + 1 >= 0` to the output ring.
//!
//! Error: the exp error (see [`ExpParams::error_bound`]) divided by the row sum (at least
//! about 1), plus the reciprocal's relative error and one ulp `2^-F`; measured per preset in
//! the tests and in `protocols/NOTES-norm.md`. Cost: [`softmax_cost`] (bytes exact, rounds an
//! upper bound).

use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::exp::{
    add_const, exp, exp_cost, extend_pos, extend_pos_cost, mul_pos, mul_pos_cost, mul_trunc_cost,
    mul_trunc_dither, trunc_offset, trunc_pos, trunc_pos_cost, ExpMethod, ExpParams,
};
use duet_mpc::fixed_math::recip::{recip, recip_cost, NewtonParams};
use duet_mpc::nonlinear::{self as nl, Cost, NlConfig, NlSession};
use duet_mpc::{AShare, Ring};
use duet_transport::{Channel, Role};

/// The published SoftMax styles (exp approximation, ring and precision) and Duet's default.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum SoftmaxPreset {
    /// Duet: the table exp ([`ExpMethod::DUET_LUT`]: range reduction on the shares, an
    /// 8-entry lookup table and one one-sided product, no squarings) at `F + 3 = 15`
    /// fractional bits in a 24-bit ring, the row sums and the reciprocal (16 fractional
    /// bits) in a 26-bit ring, the product with `1/sum` by [`mul_trunc_dither`], output at
    /// 12 fractional bits in a 30-bit ring: the fewest bytes of the presets (43.2 MB on
    /// 12x128x128, BOLT 102 MB) and the smallest error (about 3e-4 against BOLT's 1.5e-3 ..
    /// 1.8e-3, also on rows of equal logits). Before 2026-11-21: [`ExpMethod::DUET`] (a
    /// fitted degree-2 base and 4 squarings, `F = 11`), 57.5 MB, 3.6e-3 .. 4.7e-3.
    #[default]
    Duet,
    /// BumbleBee (NDSS'25): `(1 + x/2^n)^(2^n)` with clipping ([`ExpMethod::Squaring`]),
    /// `n = 8`, 15 fractional bits in a 32-bit ring.
    BumbleBee,
    /// PUMA (2023): `(1 + x/2^8)^(2^8)` with clipping, 17 fractional bits (36-bit ring; PUMA
    /// itself runs on 64-bit replicated shares with 18).
    Puma,
    /// BOLT (S&P'24): polynomial after range reduction, here a degree-2 Taylor base on
    /// `x / 32` then 5 squarings, 14 fractional bits in a 30-bit ring (BOLT reduces by `ln 2`
    /// with a lookup; the reduction by scaling keeps the same polynomial degree).
    Bolt,
    /// Iron (NeurIPS'22, SIRNN's math): `(1 + x/2^8)^(2^8)`, 16 fractional bits in Iron's
    /// 37-bit ring, three Newton steps for the reciprocal.
    Iron,
}

impl SoftmaxPreset {
    /// Every preset.
    pub const ALL: [Self; 5] = [
        Self::Duet,
        Self::BumbleBee,
        Self::Puma,
        Self::Bolt,
        Self::Iron,
    ];

    /// The operator configuration of this preset.
    pub fn config(self) -> SoftmaxConfig {
        let (method, frac, bits) = match self {
            Self::Duet => (ExpMethod::DUET_LUT, 12, 24),
            Self::BumbleBee => (ExpMethod::Squaring { n: 8 }, 15, 32),
            Self::Puma => (ExpMethod::Squaring { n: 8 }, 17, 36),
            Self::Bolt => (ExpMethod::Taylor2 { n: 5 }, 14, 30),
            Self::Iron => (ExpMethod::Squaring { n: 8 }, 16, 37),
        };
        let iters = if self == Self::Iron { 3 } else { 2 };
        SoftmaxConfig {
            exp: ExpParams { method, frac },
            recip: NewtonParams {
                iters,
                ..NewtonParams::default()
            },
            recip_frac: frac + 4,
            ring_bits: bits,
            out_bits: bits.max(2 * frac + 6),
            fused_product: self == Self::Duet,
            exp_extra: if self == Self::Duet { 3 } else { 0 },
        }
    }
}

/// Configuration of [`softmax`] (public, both parties the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SoftmaxConfig {
    /// The exp approximation and its fractional bits `F` (also the output's).
    pub exp: ExpParams,
    /// The per-row reciprocal.
    pub recip: NewtonParams,
    /// Fractional bits `F_r` of the reciprocal (at most `L - 3`); the row sums' error is
    /// about `k 2^-F_r`, so `F_r = F + 4` for rows of 128.
    pub recip_frac: u32,
    /// Width `L` of the operator ring (max, exp, reciprocal; at least `2F + 2`).
    pub ring_bits: u32,
    /// Width of the output ring, where the product `e r` is taken (at least `L` and
    /// `F + F_r + 2`).
    pub out_bits: u32,
    /// Take `e r` by [`mul_trunc_dither`] (the narrow product with a fused truncation down
    /// to `F + 4` fractional bits, COTs at most `out_bits - F_r + 4` bits wide) instead of
    /// [`mul_pos`] followed by a truncation by `F_r` bits (Duet's choice; the published
    /// presets keep the plain product).
    pub fused_product: bool,
    /// Extra fractional bits of `e` and of the row sums beyond the output's `F` (the exp runs
    /// at `F + exp_extra` bits; only with [`SoftmaxConfig::fused_product`]): the rounding
    /// noise of many tiny entries in a row sum then stays below the output's ulp.
    pub exp_extra: u32,
}

/// The slack bits kept by the fused product of [`SoftmaxConfig::fused_product`]: `e r` is
/// divided by `2^{F_r - PRODUCT_SLACK}` inside the product, then rounded by `PRODUCT_SLACK`
/// bits.
const PRODUCT_SLACK: u32 = 4;

impl SoftmaxConfig {
    fn rings(&self) -> Result<(Ring, Ring)> {
        let f = self.exp.frac;
        if self.out_bits < self.ring_bits
            || self.out_bits < f + self.recip_frac + 2
            || self.recip_frac + 3 > self.ring_bits
            || (self.fused_product && self.recip_frac < PRODUCT_SLACK + 1)
            || (self.exp_extra > 0 && !self.fused_product)
            || self.exp_extra > 8
        {
            return Err(ProtocolError::Config(format!(
                "softmax: output ring of {} bits, operator ring of {}, {} and {} fractional                  bits (need out >= L, out >= F + F_r + 2, F_r + 3 <= L)",
                self.out_bits, self.ring_bits, f, self.recip_frac
            )));
        }
        Ok((Ring::new(self.ring_bits)?, Ring::new(self.out_bits)?))
    }

    /// The exp's parameters (at `F + exp_extra` fractional bits).
    fn exp_params(&self) -> ExpParams {
        ExpParams {
            frac: self.exp.frac + self.exp_extra,
            ..self.exp
        }
    }

    /// The row sum's range `[2^lo, 2^hi)` as encoded integers for rows of `k`.
    fn sum_range(&self, k: usize) -> (u32, u32) {
        let f = self.exp.frac + self.exp_extra;
        let kb = usize::BITS - k.leading_zeros();
        (f - 1, f + kb + 1)
    }

    /// The ring of the row sums and the reciprocal: the operator ring, or wider when the
    /// reciprocal's range needs it (`hi + 2` bits; the sums are extended, one COT per row).
    fn recip_ring(&self, ring: Ring, k: usize) -> Result<Ring> {
        let (_, hi) = self.sum_range(k);
        Ok(Ring::new(ring.bits().max(hi + 2))?)
    }
}

fn row_len(shape: &[usize]) -> Result<usize> {
    match shape.last() {
        Some(&k) if k > 0 => Ok(k),
        _ => Err(ProtocolError::Config(format!(
            "softmax over the last axis of shape {shape:?}"
        ))),
    }
}

/// Shares of `softmax(x)` over the last axis, `F = cfg.exp.frac` fractional bits in the ring
/// of `cfg.out_bits` bits. `x` has `f_in` fractional bits in any ring; `mask` (public, one
/// flag per element, `true` = masked out) gives exactly 0 at masked positions, and a fully
/// masked row gives all zeros. See the module documentation for the protocol.
pub fn softmax<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f_in: u32,
    mask: Option<&[bool]>,
    cfg: &SoftmaxConfig,
) -> Result<AShare> {
    let (ring, out_ring) = cfg.rings()?;
    let k = row_len(x.shape())?;
    let n = x.len();
    let rows = n / k;
    if let Some(m) = mask {
        if m.len() != n {
            return Err(ProtocolError::Shape {
                what: "softmax mask",
                expected: n,
                got: m.len(),
            });
        }
    }
    let masked = |i: usize| mask.and_then(|m| m.get(i).copied()).unwrap_or(false);
    let role = s.role();
    let ff = cfg.exp.frac;
    let fe = ff + cfg.exp_extra;
    // 1. to the operator ring; masked logits to -2^{L-4}
    let xr = if x.ring().bits() > ring.bits() {
        nl::reduce(x, ring)?
    } else {
        nl::extend(s, ch, x, ring, true)?
    };
    let sentinel = ring.neg(1u64 << (ring.bits() - 4));
    let xd: Vec<u64> = xr
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| match (masked(i), role) {
            (false, _) => v,
            (true, Role::Server) => sentinel,
            (true, Role::Client) => 0,
        })
        .collect();
    let xr = AShare::new(ring, vec![rows, k], xd)?;
    // 2. max subtraction
    let m = nl::max_axis(s, ch, &xr)?;
    let d: Vec<u64> = xr
        .data()
        .chunks(k)
        .zip(m.data())
        .flat_map(|(r, &mv)| r.iter().map(move |&v| ring.sub(v, mv)))
        .collect();
    // 3. exp, masked to 0
    let e = exp(
        s,
        ch,
        &AShare::new(ring, vec![n], d)?,
        f_in,
        cfg.exp_params(),
    )?;
    let e = zero_masked(&e, &masked)?;
    // 4. one reciprocal per row; fully masked rows get the public denominator 1
    let sums: Vec<u64> = e
        .data()
        .chunks(k)
        .enumerate()
        .map(|(r, c)| {
            if (0..k).all(|j| masked(r * k + j)) {
                if role == Role::Server {
                    1u64 << fe
                } else {
                    0
                }
            } else {
                c.iter().fold(0u64, |a, &v| ring.add(a, v))
            }
        })
        .collect();
    let fr = cfg.recip_frac;
    let rr = cfg.recip_ring(ring, k)?;
    let sums = AShare::new(ring, vec![rows], sums)?;
    let sums = if rr == ring {
        sums
    } else {
        // the sums are positive (at least the max's e^0 = 1)
        extend_pos(s, ch, &sums, rr)?
    };
    let r = recip(s, ch, &sums, fe, cfg.sum_range(k), fr, cfg.recip)?;
    // 5. y = e r in the output ring
    if cfg.fused_product {
        let rb: Vec<u64> = r
            .data()
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, k))
            .collect();
        let rb = AShare::new(rr, vec![n], rb)?;
        // e < 2^{F_e+1}, r <= 2 + ulp < 2^{F_r + 2}; y r / 2^d within 1 + d units of 2^d,
        // F + 4 fractional bits in Z_2^{lv - d} (lv - d = out_bits - F_r + 4)
        let d = fr - PRODUCT_SLACK + cfg.exp_extra;
        let lv = out_ring.bits() + cfg.exp_extra;
        // dithered: `r` is the same for the whole row (see [`mul_trunc_dither`])
        let p = mul_trunc_dither(s, ch, &e, fe + 2, &rb, fr + 3, lv, d)?;
        // |error| <= 1 + d units of 2^d, below 2^PRODUCT_SLACK - 1
        let y = trunc_offset(s, ch, &p, PRODUCT_SLACK, 1)?;
        // y >= -1 (tiny entries): extend y + 1 >= 0
        let y = add_const(
            &extend_pos(s, ch, &add_const(&y, role, 1)?, out_ring)?,
            role,
            -1,
        )?;
        let y = zero_masked(&y, &masked)?;
        return Ok(AShare::new(out_ring, x.shape().to_vec(), y.into_data())?);
    }
    let r = extend_pos(s, ch, &r, out_ring)?;
    let e = extend_pos(s, ch, &e, out_ring)?;
    let rb: Vec<u64> = r
        .data()
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, k))
        .collect();
    // e < 2^{F+1}, r <= 2 + ulp < 2^{F_r + 2}: the narrow product
    let p = mul_pos(
        s,
        ch,
        &e,
        fe + 2,
        &AShare::new(out_ring, vec![n], rb)?,
        fr + 3,
    )?;
    let y = trunc_pos(s, ch, &p, fr)?;
    let y = zero_masked(&y, &masked)?;
    Ok(AShare::new(out_ring, x.shape().to_vec(), y.into_data())?)
}

fn zero_masked(x: &AShare, masked: &impl Fn(usize) -> bool) -> Result<AShare> {
    let d = x
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| if masked(i) { 0 } else { v })
        .collect();
    Ok(AShare::new(x.ring(), x.shape().to_vec(), d)?)
}

/// Exact bytes (rounds: an upper bound) of [`softmax`] on `shape` with input ring `in_ring`.
pub fn softmax_cost(
    shape: &[usize],
    in_ring: Ring,
    f_in: u32,
    cfg: &SoftmaxConfig,
    nl_cfg: NlConfig,
) -> Result<Cost> {
    let (ring, out_ring) = cfg.rings()?;
    let k = row_len(shape)?;
    let n: usize = shape.iter().product();
    let rows = n / k;
    let fe = cfg.exp.frac + cfg.exp_extra;
    let mut c = Cost::default();
    if in_ring.bits() < ring.bits() {
        c = c + nl::extend_cost(n, in_ring, ring, nl_cfg);
    }
    c = c + nl::max_axis_cost(rows, k, ring, nl_cfg);
    c = c + exp_cost(n, ring, f_in, cfg.exp_params(), nl_cfg);
    let fr = cfg.recip_frac;
    let rr = cfg.recip_ring(ring, k)?;
    if rr != ring {
        c = c + extend_pos_cost(rows, ring, rr, nl_cfg);
    }
    c = c + recip_cost(rows, rr, fe, cfg.sum_range(k), fr, cfg.recip, nl_cfg)?;
    if cfg.fused_product {
        let d = fr - PRODUCT_SLACK + cfg.exp_extra;
        let lv = out_ring.bits() + cfg.exp_extra;
        let lo = Ring::new(lv - d)?;
        return Ok(c
            + mul_trunc_cost(n, fe + 2, fr + 3, lv, d, nl_cfg)
            + trunc_pos_cost(n, lo, PRODUCT_SLACK, nl_cfg)
            + extend_pos_cost(n, lo, out_ring, nl_cfg));
    }
    c = c
        + extend_pos_cost(rows, ring, out_ring, nl_cfg)
        + extend_pos_cost(n, ring, out_ring, nl_cfg);
    c = c
        + mul_pos_cost(n, out_ring, fe + 2, fr + 3, nl_cfg)
        + trunc_pos_cost(n, out_ring, fr, nl_cfg);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_mpc::nonlinear::CotCount;
    use duet_mpc::{FixedPoint, Prg};
    use duet_transport::{run_two_party, MemoryChannel};

    /// The one traffic-measuring helper of this file (COTs reserved before the measured part).
    fn run2<T: Send>(
        need: CotCount,
        f: impl Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        let party = |role: Role, mut ch: MemoryChannel| {
            let mut rng = Prg::from_seed([role.index() as u8 + 11; 32]);
            let mut s = NlSession::setup(&mut ch, role, &mut rng, NlConfig::default()).unwrap();
            s.reserve(&mut ch, need).unwrap();
            let before = ch.stats();
            let out = f(role, &mut s, &mut ch);
            (out, ch.stats() - before)
        };
        let ((a, sa), (b, sb)) =
            run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
        let c = Cost {
            bytes: sa.bytes_sent + sb.bytes_sent,
            rounds: sa.rounds + sb.rounds,
            ..Cost::default()
        };
        (a, b, c)
    }

    fn reference(x: &[f64], k: usize, mask: &[bool]) -> Vec<f64> {
        let mut out = vec![0.0; x.len()];
        for (r, row) in x.chunks(k).enumerate() {
            let keep = |j: usize| !mask[r * k + j];
            let m = (0..k)
                .filter(|&j| keep(j))
                .map(|j| row[j])
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = (0..k)
                .filter(|&j| keep(j))
                .map(|j| (row[j] - m).exp())
                .sum();
            for j in (0..k).filter(|&j| keep(j)) {
                out[r * k + j] = (row[j] - m).exp() / s;
            }
        }
        out
    }

    /// Every preset on 4 x 4 x 128 logits: uniform in [-20, 20], BERT-like N(0, 3), rows with
    /// one dominant logit, constant rows, a causal mask plus a fully masked row; uniformly
    /// random shares of a 37-bit input ring. Bound: 1e-2 per entry, rows sum to 1 +- 1e-2,
    /// masked entries exactly 0, measured bytes equal to the cost.
    /// The test logits (see [`every_preset_is_accurate_and_costs_what_it_says`]): values,
    /// mask, shape.
    fn inputs(prg: &mut Prg) -> (Vec<f64>, Vec<bool>, [usize; 3]) {
        let (h, q, k) = (4usize, 4usize, 128usize);
        let n = h * q * k;
        let unif =
            |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let mut x: Vec<f64> = Vec::with_capacity(n);
        for i in 0..n {
            let head = i / (q * k);
            let row = (i / k) % q;
            x.push(match head {
                0 => 40.0 * unif(prg) - 20.0,
                1 => {
                    // Box-Muller N(0, sd) with sd 3, 1, 0.5, 2 by row
                    let sd = [3.0, 1.0, 0.5, 2.0][row];
                    let (u1, u2) = (unif(prg).max(1e-12), unif(prg));
                    sd * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
                }
                2 if row % 2 == 0 => {
                    if i % k == row {
                        20.0
                    } else {
                        -20.0
                    }
                }
                2 => 7.5,
                _ => 40.0 * unif(prg) - 20.0,
            });
        }
        // a causal-like mask on head 3, and its row 2 fully masked
        let mask: Vec<bool> = (0..n)
            .map(|i| {
                let (head, row, col) = (i / (q * k), (i / k) % q, i % k);
                head == 3 && (col > 40 * row || row == 2)
            })
            .collect();
        (x, mask, [h, q, k])
    }

    /// Runs `cfg` on the test inputs: (max abs error, worst row-sum deviation, measured
    /// cost, predicted cost); asserts that masked entries are exactly 0.
    fn measure(cfg: &SoftmaxConfig) -> (f64, f64, Cost, Cost) {
        let mut prg = Prg::from_seed([12; 32]);
        let in_ring = Ring::new(37).unwrap();
        let f_in = 12;
        let fx = FixedPoint::new(in_ring, f_in).unwrap();
        let (x, mask, shape) = inputs(&mut prg);
        let k = shape[2];
        let enc = fx.encode_all(&x);
        let want = reference(&fx.decode_all(&enc), k, &mask);
        let (x0, x1) = AShare::share(in_ring, shape.to_vec(), &enc, &mut prg).unwrap();
        let cost = softmax_cost(&shape, in_ring, f_in, cfg, NlConfig::default()).unwrap();
        let (a, b, got) = run2(cost.cots, |role, s, ch| {
            let x = if role == Role::Server { &x0 } else { &x1 };
            softmax(s, ch, x, f_in, Some(&mask), cfg).unwrap()
        });
        let fo = FixedPoint::new(Ring::new(cfg.out_bits).unwrap(), cfg.exp.frac).unwrap();
        let raw = a.reconstruct(&b).unwrap();
        let y = fo.decode_all(&raw);
        let mut worst: f64 = 0.0;
        for i in 0..y.len() {
            if mask[i] {
                assert_eq!(raw[i], 0, "{cfg:?}: masked entry {i} not exactly 0");
            }
            worst = worst.max((y[i] - want[i]).abs());
        }
        let mut sum_dev: f64 = 0.0;
        for (r, row) in y.chunks(k).enumerate() {
            let s: f64 = row.iter().sum();
            let fully = (0..k).all(|j| mask[r * k + j]);
            sum_dev = sum_dev.max((s - if fully { 0.0 } else { 1.0 }).abs());
        }
        (worst, sum_dev, got, cost)
    }

    /// Every preset on 4 x 4 x 128 logits: uniform in [-20, 20], BERT-like N(0, sd) rows
    /// (sd 0.5 to 3), rows with one dominant logit, constant rows, a causal-like mask plus a
    /// fully masked row; uniformly random shares of a 37-bit input ring. Bound: 1e-2 per
    /// entry, rows sum to 1 +- 1e-2 (0 when fully masked), masked entries exactly 0,
    /// measured bytes equal to the cost.
    #[test]
    fn every_preset_is_accurate_and_costs_what_it_says() {
        let mut bytes = Vec::new();
        for preset in SoftmaxPreset::ALL {
            let (err, dev, got, cost) = measure(&preset.config());
            bytes.push((preset, got.bytes));
            assert!(err <= 1e-2, "{preset:?}: max error {err}");
            assert!(dev <= 1e-2, "{preset:?}: a row sum is off by {dev}");
            assert!(err > 0.0);
            assert_eq!(got.bytes, cost.bytes, "{preset:?}");
            assert!(got.rounds <= cost.rounds, "{preset:?}");
            eprintln!(
                "{preset:?}: max err {err:.2e}, row sums within {dev:.2e}, {} B",
                got.bytes
            );
        }
        // the Duet default is the cheapest preset (and within the same bounds)
        let duet = bytes.first().map(|b| b.1).unwrap();
        for (preset, b) in &bytes {
            assert!(duet <= *b, "Duet {duet} B vs {preset:?} {b} B");
        }
    }

    /// Max abs error on 2 x 128 x 128 logits uniform in [-20, 20] (the bench's inputs).
    fn uniform_err(cfg: &SoftmaxConfig) -> f64 {
        let mut prg = Prg::from_seed([44; 32]);
        let in_ring = Ring::new(37).unwrap();
        let f_in = 12;
        let fx = FixedPoint::new(in_ring, f_in).unwrap();
        let shape = [2usize, 128, 128];
        let n = shape.iter().product::<usize>();
        let x: Vec<f64> = (0..n)
            .map(|_| {
                40.0 * ((prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64) - 20.0
            })
            .collect();
        let mask = vec![false; n];
        let enc = fx.encode_all(&x);
        let want = reference(&fx.decode_all(&enc), 128, &mask);
        let (x0, x1) = AShare::share(in_ring, shape.to_vec(), &enc, &mut prg).unwrap();
        let cost = softmax_cost(&shape, in_ring, f_in, cfg, NlConfig::default()).unwrap();
        let (a, b, _) = run2(cost.cots, |role, s, ch| {
            let x = if role == Role::Server { &x0 } else { &x1 };
            softmax(s, ch, x, f_in, None, cfg).unwrap()
        });
        let fo = FixedPoint::new(Ring::new(cfg.out_bits).unwrap(), cfg.exp.frac).unwrap();
        let y = fo.decode_all(&a.reconstruct(&b).unwrap());
        y.iter()
            .zip(&want)
            .map(|(y, w)| (y - w).abs())
            .fold(0.0, f64::max)
    }

    /// Rows made of the max and `m` logits at one distance `t` below it, the rest far below
    /// (`m` in {1, 4, 16, 127}, `t` on a grid of [0, 12] with step 0.5; the rows on which
    /// a systematic relative error of `exp` or a row-correlated rounding shows most), 100 x 128:
    /// (max abs error, worst row-sum deviation).
    fn adversarial_err(cfg: &SoftmaxConfig) -> (f64, f64) {
        let mut prg = Prg::from_seed([45; 32]);
        let in_ring = Ring::new(37).unwrap();
        let f_in = 12;
        let fx = FixedPoint::new(in_ring, f_in).unwrap();
        let k = 128usize;
        let mut x = Vec::new();
        for m in [1usize, 4, 16, 127] {
            for ti in 0..25 {
                let t = f64::from(ti) * 0.5;
                let base = 40.0
                    * ((prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64)
                    - 20.0;
                for j in 0..k {
                    x.push(if j == 0 {
                        base
                    } else if j <= m {
                        base - t
                    } else {
                        base - 30.0
                    });
                }
            }
        }
        let n = x.len();
        let shape = [n / k, k];
        let mask = vec![false; n];
        let enc = fx.encode_all(&x);
        let want = reference(&fx.decode_all(&enc), k, &mask);
        let (x0, x1) = AShare::share(in_ring, shape.to_vec(), &enc, &mut prg).unwrap();
        let cost = softmax_cost(&shape, in_ring, f_in, cfg, NlConfig::default()).unwrap();
        let (a, b, got) = run2(cost.cots, |role, s, ch| {
            let x = if role == Role::Server { &x0 } else { &x1 };
            softmax(s, ch, x, f_in, None, cfg).unwrap()
        });
        assert_eq!(got.bytes, cost.bytes);
        let fo = FixedPoint::new(Ring::new(cfg.out_bits).unwrap(), cfg.exp.frac).unwrap();
        let y = fo.decode_all(&a.reconstruct(&b).unwrap());
        let err = y
            .iter()
            .zip(&want)
            .map(|(y, w)| (y - w).abs())
            .fold(0.0, f64::max);
        let dev = y
            .chunks(k)
            .map(|r| (r.iter().sum::<f64>() - 1.0).abs())
            .fold(0.0, f64::max);
        (err, dev)
    }

    /// The Duet preset against every other on the test rows, on the bench's uniform
    /// [-20, 20] logits and on the adversarial rows of [`adversarial_err`] (the max plus `m`
    /// logits at one distance): Duet's max abs error at most 8e-4 on each (measured 2.6e-4,
    /// 3.0e-4, 4.2e-4; target 1.2e-3) and below every other preset's on each (BOLT, the most
    /// accurate of them: 2.9e-3, 1.4e-3, 7.5e-3; the others 6.0e-3, 3.8e-3 .. 4.0e-3,
    /// 1.3e-2), row sums within 1e-2, and the fewest bytes on 12x128x128 (at most 60 MB).
    #[test]
    fn duet_is_the_most_accurate_and_cheapest() {
        let big = |c: &SoftmaxConfig| {
            softmax_cost(
                &[12, 128, 128],
                Ring::new(37).unwrap(),
                12,
                c,
                NlConfig::default(),
            )
            .unwrap()
            .bytes
        };
        let duet = SoftmaxPreset::Duet.config();
        let (t, tdev, _, _) = measure(&duet);
        let u = uniform_err(&duet);
        let (a, adev) = adversarial_err(&duet);
        eprintln!(
            "Duet: test {t:.2e} (sums {tdev:.2e}), uniform {u:.2e}, \
             adversarial {a:.2e} (sums {adev:.2e}), {} B",
            big(&duet)
        );
        assert!(t <= 8e-4 && u <= 8e-4 && a <= 8e-4, "{t} {u} {a}");
        assert!(tdev <= 1e-2 && adev <= 1e-2, "{tdev} {adev}");
        assert!(big(&duet) <= 60_000_000);
        for preset in SoftmaxPreset::ALL.into_iter().skip(1) {
            let c = preset.config();
            let (pt, _, _, _) = measure(&c);
            let pu = uniform_err(&c);
            let (pa, _) = adversarial_err(&c);
            eprintln!(
                "{preset:?}: test {pt:.2e}, uniform {pu:.2e}, adversarial {pa:.2e}, {} B",
                big(&c)
            );
            assert!(t < pt && u < pu && a < pa, "{preset:?}: {pt} {pu} {pa}");
            assert!(big(&duet) < big(&c), "{preset:?}");
        }
    }

    /// The table exp ([`ExpMethod::Lut`]) configurations: bytes and errors (prints).
    #[test]
    #[ignore = "exploration, prints"]
    fn explore_lut() {
        let list = std::env::var("LUT_CFGS").unwrap_or_else(|_| "0,4,2,13".into());
        for item in list.split(';') {
            let v: Vec<i64> = item.split(',').map(|t| t.trim().parse().unwrap()).collect();
            let (step, m, guard, frac) = (v[0] as i8, v[1] as u8, v[2] as u8, v[3] as u32);
            let ring_bits = v.get(4).map_or(24, |&b| b as u32);
            let cfg = SoftmaxConfig {
                exp: ExpParams {
                    method: ExpMethod::Lut {
                        step,
                        index_bits: m,
                        guard,
                    },
                    frac,
                },
                recip: NewtonParams::default(),
                recip_frac: frac + 4,
                ring_bits,
                out_bits: ring_bits.max(2 * frac + 6),
                fused_product: true,
                exp_extra: v.get(5).map_or(0, |&b| b as u32),
            };
            let big = softmax_cost(
                &[12, 128, 128],
                Ring::new(37).unwrap(),
                12,
                &cfg,
                NlConfig::default(),
            )
            .unwrap();
            let n = 12 * 128 * 128;
            let e = exp_cost(
                n,
                Ring::new(ring_bits).unwrap(),
                12,
                cfg.exp_params(),
                NlConfig::default(),
            );
            let (err, dev, got, cost) = measure(&cfg);
            assert_eq!(got.bytes, cost.bytes);
            let uerr = uniform_err(&cfg);
            let (aerr, adev) = adversarial_err(&cfg);
            eprintln!(
                "Lut step {step} m {m} g {guard} F {frac} L {ring_bits}: {:.2} MB ({:.1} B/elem, \
                 exp {:.1}); test err {err:.2e} sums {dev:.2e}; uniform {uerr:.2e}; \
                 adversarial {aerr:.2e} sums {adev:.2e}",
                big.bytes as f64 / 1e6,
                big.bytes as f64 / n as f64,
                e.bytes as f64 / n as f64,
            );
        }
    }

    /// Exploration of other configurations (prints error and bytes per element).
    #[test]
    #[ignore = "exploration, prints"]
    fn explore_configs() {
        for (method, frac) in [
            (ExpMethod::Taylor2 { n: 5 }, 10),
            (ExpMethod::Taylor2 { n: 5 }, 11),
            (ExpMethod::Taylor2 { n: 4 }, 11),
            (ExpMethod::Squaring { n: 8 }, 13),
            (ExpMethod::DUET, 10),
            (ExpMethod::DUET, 11),
            (ExpMethod::DUET, 12),
            (ExpMethod::DUET, 13),
            (
                ExpMethod::Fit2 {
                    n: 5,
                    a_q: 1020,
                    g_q: 1000,
                },
                11,
            ),
            (
                ExpMethod::Fit2 {
                    n: 5,
                    a_q: 1020,
                    g_q: 1000,
                },
                12,
            ),
        ] {
            let cfg = SoftmaxConfig {
                exp: ExpParams { method, frac },
                recip: NewtonParams::default(),
                recip_frac: frac + 4,
                ring_bits: 2 * frac + 2,
                out_bits: 2 * frac + 6,
                fused_product: matches!(method, ExpMethod::Fit2 { .. }),
                exp_extra: 0,
            };
            let (err, dev, got, _) = measure(&cfg);
            let uerr = uniform_err(&cfg);
            eprintln!("{method:?} F={frac}: uniform [-20, 20] 2x128x128 max abs err {uerr:.2e}");
            let big = softmax_cost(
                &[12, 128, 128],
                Ring::new(37).unwrap(),
                12,
                &cfg,
                NlConfig::default(),
            )
            .unwrap();
            eprintln!(
                "{method:?} F={frac}: err {err:.2e} sums {dev:.2e}, {:.1} B/elem, {:.2} MB at 12x128x128",
                got.bytes as f64 / 2048.0,
                big.bytes as f64 / 1e6
            );
        }
    }

    /// Bytes per element of each step of the Duet preset on 12 x 128 x 128 (from the cost
    /// formulas, Ferret COTs).
    #[test]
    #[ignore = "prints the cost breakdown"]
    fn print_breakdown() {
        use duet_mpc::fixed_math::exp::{square_cost, trunc_pos_cost};
        let cfg = SoftmaxPreset::Duet.config();
        let nl_cfg = NlConfig::default();
        let (rows, k) = (12 * 128, 128);
        let n = rows * k;
        let ring = Ring::new(cfg.ring_bits).unwrap();
        let out = Ring::new(cfg.out_bits).unwrap();
        let per = |c: Cost| c.bytes as f64 / n as f64;
        let ff = cfg.exp_params().frac;
        eprintln!(
            "max      {:.1}",
            per(nl::max_axis_cost(rows, k, ring, nl_cfg))
        );
        eprintln!("relu     {:.1}", per(nl::relu_cost(n, ring, nl_cfg)));
        eprintln!("square   {:.1}", per(square_cost(n, ring, nl_cfg)));
        eprintln!("trunc    {:.1}", per(trunc_pos_cost(n, ring, ff, nl_cfg)));
        eprintln!(
            "exp      {:.1}",
            per(exp_cost(n, ring, 12, cfg.exp_params(), nl_cfg))
        );
        let rc = recip_cost(
            rows,
            cfg.recip_ring(ring, k).unwrap(),
            ff,
            cfg.sum_range(k),
            cfg.recip_frac,
            cfg.recip,
            nl_cfg,
        );
        eprintln!("recip    {:.1}", per(rc.unwrap()));
        // the parts of the Duet table exp (Δ = 2: split at 13 bits, clip compare on 9 bits,
        // table values of 20 bits, product ring 21 bits with d = 15)
        let r21 = Ring::new(21).unwrap();
        let parts = [
            ("clip", nl::millionaire_cost(n, 9, nl::CmpMode::Lt, nl_cfg)),
            ("lut", nl::lut_cost(n, 3, Ring::new(20).unwrap(), nl_cfg)),
            (
                "mul_held",
                duet_mpc::fixed_math::exp::mul_held_trunc_cost(n, 20, Role::Client, 21, 15, nl_cfg),
            ),
            ("round", trunc_pos_cost(n, r21, 4, nl_cfg)),
            ("mux", nl::mux_cost(n, r21, nl_cfg)),
            ("ext", extend_pos_cost(n, r21, ring, nl_cfg)),
        ];
        for (name, c) in parts {
            eprintln!("  {name:8} {:.2}", per(c));
        }
        eprintln!("extend   {:.1}", per(extend_pos_cost(n, ring, out, nl_cfg)));
        eprintln!("mul      {:.1}", per(nl::mul_cost(n, out, nl_cfg)));
        let mp = mul_pos_cost(n, out, ff + 2, cfg.recip_frac + 3, nl_cfg);
        eprintln!("mul_pos  {:.1}", per(mp));
        let total = softmax_cost(&[rows, k], Ring::new(37).unwrap(), 12, &cfg, nl_cfg).unwrap();
        eprintln!("total    {:.1}", per(total));
    }

    #[test]
    fn bad_shapes_and_configs_are_errors() {
        let ring = Ring::new(37).unwrap();
        let mut cfg = SoftmaxPreset::Duet.config();
        assert!(softmax_cost(&[4, 0], ring, 12, &cfg, NlConfig::default()).is_err());
        cfg.out_bits = cfg.ring_bits;
        assert!(softmax_cost(&[4, 4], ring, 12, &cfg, NlConfig::default()).is_err());
    }
}
