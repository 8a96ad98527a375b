//! LayerNorm and RMSNorm over the last axis on additive shares, with the affine weights
//! (`gamma`, `beta`) held by the server in clear.
//!
//! Protocol (semi-honest, 128-bit; rows of `k`, input with `f` fractional bits, `|x| < 2^a`):
//! 1. the input moves to the operator ring `Z_2^L` (local reduction from a wider ring, signed
//!    extension from a narrower one);
//! 2. LayerNorm only: the row sum (local) is extended to `Z_2^64` (one per row), multiplied by
//!    the public `round(2^24 / k)` and truncated: the mean `mu`; `d = x - mu` (local);
//!    RMSNorm: `d = x`;
//! 3. the variance path at `fv <= f` fractional bits: `d + 2^{a+1}` (positive) truncated by
//!    `f - fv` (one COT) and moved to `Z_2^{Lv}`, `Lv = 2 (a + 1 + fv) + 2` ([`extend_pos`]),
//!    squared by [`square_pos`] (the square of a narrow non-negative value: one cross term
//!    with `a + fv + 3` choice bits, the cheapest square here), the offset removed locally
//!    (`d^2 = (d + O)^2 - 2 O (d + O) + O^2`), truncated by `ceil(log2 k)` bits (one COT)
//!    and summed per row (local): `S ~ k var`;
//! 4. per row: `S` extended to `Z_2^64` ([`extend_pos`]), `+ max(1, eps k)`, [`rsqrt`]
//!    (MSB normalisation and Newton), times the public `sqrt(k)`: `r = 1/sqrt(var + eps)`;
//! 5. `y = d r` as `(d + O) r - O r` with [`mul_pos`] (both factors shared, narrow and
//!    non-negative: Gilboa with `a + f + 3` choice bits per direction, cheaper than the
//!    full-width [`nl::mul`]), truncation by the offset trick (one COT); `z = gamma y`
//!    ([`mul_known`]: gamma is the server's, so one direction of Gilboa suffices, half of a
//!    shared product and cheaper than HE below 40-bit rings), truncation, `+ beta` (the server
//!    adds it locally); optionally an extension to a wider output ring (offset,
//!    [`extend_pos`]: one COT per element).
//!
//! Duet variant of step 5 ([`NormConfig::mean_extra`] `= e > 0`, LayerNorm): the mean is
//! also truncated to `f + e` fractional bits (per row), `m = mu r` per row by [`mul_pos`] in
//! `Z_2^64` plus a truncation by `e` (one COT), and `y = (x + O) r - O r - m` (the same
//! narrow product as `d r`: `|x| < 2^a` like `d`; the wrap of `x r` cancels mod `2^L`).
//! Cost: two per-row truncations and one per-row product more, nothing per element.
//! [`NormConfig::y_extra`] `= g` keeps `g` more fractional bits in `y` (truncation by
//! `F_r - g`, then by `gamma_frac + g`: the same number of COTs).
//!
//! Error: dominated by the variance path's `2^-fv` rounding of `d` and the final truncations;
//! measured per preset in the tests and in `protocols/NOTES-norm.md`. Cost: [`norm_cost`]
//! (bytes exact, rounds an upper bound).

use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::exp::{
    add_const, extend_pos, extend_pos_cost, mul_known, mul_known_cost, mul_pos, mul_pos_cost,
    square_pos, square_pos_cost, trunc_pos, trunc_pos_cost,
};
use duet_mpc::fixed_math::recip::NewtonParams;
use duet_mpc::fixed_math::rsqrt::{rsqrt, rsqrt_cost};
use duet_mpc::nonlinear::{self as nl, Cost, NlConfig, NlSession};
use duet_mpc::{AShare, Ring};
use duet_transport::{Channel, Role};

/// Which normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum NormKind {
    /// `gamma (x - mean) / sqrt(var + eps) + beta` (BERT, GPT-2).
    LayerNorm,
    /// `gamma x / sqrt(mean(x^2) + eps)` (LLaMA).
    RmsNorm,
}

/// The published styles (ring widths and precisions) and Duet's default.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum NormPreset {
    /// Duet: variance from `d` rounded to 10 fractional bits (squares in a 38-bit ring), the
    /// rest in a 36-bit ring (16 fractional bits for `1/sqrt(var)`), two Newton steps; the
    /// product as `x r - mu r` with the mean at `f + 6` fractional bits (one narrow product
    /// per row instead of a mean off by up to one ulp of `2^-f` times `r`), `y` kept with one
    /// extra fractional bit and gamma with 12. Fewer bytes than every published preset and a
    /// smaller error than each of them (`protocols/NOTES-norm.md`).
    #[default]
    Duet,
    /// BumbleBee (NDSS'25): full precision throughout a 37-bit ring (squares in a 42-bit
    /// one), two Newton steps.
    BumbleBee,
    /// PUMA: full precision, a wider ring (48 bits), 20 fractional bits for `1/sqrt(var)`,
    /// two Newton steps.
    Puma,
    /// BOLT (S&P'24): full precision in a 37-bit ring, three Newton steps.
    Bolt,
    /// Iron (NeurIPS'22, SIRNN's rsqrt): full precision in a 37-bit ring, three Newton steps.
    Iron,
}

impl NormPreset {
    /// Every preset.
    pub const ALL: [Self; 5] = [
        Self::Duet,
        Self::BumbleBee,
        Self::Puma,
        Self::Bolt,
        Self::Iron,
    ];

    /// The operator configuration of this preset for inputs with `f` fractional bits.
    pub fn config(self, f: u32) -> NormConfig {
        let base = NormConfig {
            ring_bits: 37,
            out_bits: 37,
            in_bits: 7,
            var_frac: f,
            rsqrt_frac: 16,
            gamma_frac: 12,
            gamma_bits: 3,
            rsqrt: NewtonParams::default(),
            eps_pow2: 17,
            mean_extra: 0,
            y_extra: 0,
        };
        match self {
            Self::Duet => NormConfig {
                ring_bits: 36,
                out_bits: 36,
                var_frac: f.min(10),
                rsqrt_frac: 16,
                gamma_frac: 12,
                mean_extra: 6,
                y_extra: 1,
                ..base
            },
            Self::BumbleBee => base,
            Self::Puma => NormConfig {
                ring_bits: 48,
                out_bits: 48,
                rsqrt_frac: 20,
                gamma_frac: 16,
                ..base
            },
            Self::Bolt | Self::Iron => NormConfig {
                rsqrt: NewtonParams {
                    iters: 3,
                    ..NewtonParams::default()
                },
                ..base
            },
        }
    }
}

/// Configuration of [`norm`] (public, both parties the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NormConfig {
    /// Operator ring width `L`.
    pub ring_bits: u32,
    /// Output ring width (at least `L`).
    pub out_bits: u32,
    /// `a`: inputs satisfy `|x| < 2^a` (public bound).
    pub in_bits: u32,
    /// `fv`: fractional bits of the variance path (at most the input's).
    pub var_frac: u32,
    /// Fractional bits of `1/sqrt(var + eps)`.
    pub rsqrt_frac: u32,
    /// Fractional bits of the encoded gamma.
    pub gamma_frac: u32,
    /// `|gamma| < 2^gamma_bits` (public bound).
    pub gamma_bits: u32,
    /// The rsqrt's Newton iteration.
    pub rsqrt: NewtonParams,
    /// `eps = 2^-eps_pow2` (the `1e-5` of BERT/LLaMA is about `2^-17`; smaller eps is clamped
    /// to one ulp of the variance).
    pub eps_pow2: u32,
    /// LayerNorm: extra fractional bits `e` of the mean in the product (0: `y = d r` with the
    /// mean at `f` bits, the published way). With `e > 0`, `y = x r - (mu r)` where `mu` has
    /// `f + e` fractional bits and `mu r` is one narrow product per row (Duet).
    pub mean_extra: u32,
    /// Extra fractional bits `g` of `y = d r` before the product with gamma (0: `f`, the
    /// published way; the final truncation removes `gamma_frac + g`).
    pub y_extra: u32,
}

/// Bits of `ceil(log2 k)`.
fn log2_ceil(k: usize) -> u32 {
    usize::BITS - k.saturating_sub(1).leading_zeros()
}

/// The public plan of one call.
#[derive(Clone, Copy, Debug)]
struct Plan {
    ring: Ring,
    out: Ring,
    var_ring: Ring,
    wide: Ring,
    k: usize,
    rows: usize,
    /// Offset bits of `d` (`|d| < 2^da`, fractional bits not included).
    da: u32,
    /// Truncation of the squares.
    tv: u32,
    /// Offset bits of `y` (`|y| < 2^ya`).
    ya: u32,
    /// rsqrt input range.
    hi: u32,
    /// `1/sqrt(var + eps) < 2^r_bits` (from the variance's ulp floor).
    r_bits: u32,
}

const MEAN_BITS: u32 = 24;
const SQRT_K_BITS: u32 = 8;

impl NormConfig {
    /// The narrowest operator ring this configuration needs for rows of `k` values with `f`
    /// fractional bits (the preset's ring may be narrower for wide rows or wide input ranges:
    /// callers widen it to this).
    pub fn min_ring_bits(&self, k: usize, f: u32) -> u32 {
        let lb = log2_ceil(k);
        let da = self.in_bits + 1;
        let ya = lb.div_ceil(2) + 1;
        (da + f + 2)
            .max(ya + f + self.rsqrt_frac + 2)
            .max(self.gamma_bits + ya + f + self.y_extra + self.gamma_frac + 2)
    }

    fn plan(&self, shape: &[usize], f: u32) -> Result<Plan> {
        let k = match shape.last() {
            Some(&k) if k >= 4 => k,
            _ => {
                return Err(ProtocolError::Config(format!(
                    "norm over the last axis of shape {shape:?} (rows of at least 4)"
                )))
            }
        };
        let n: usize = shape.iter().product();
        let lb = log2_ceil(k);
        let da = self.in_bits + 1;
        let ya = lb.div_ceil(2) + 1;
        let fv = self.var_frac;
        let need = (da + f + 2)
            .max(ya + f + self.rsqrt_frac + 2)
            .max(self.gamma_bits + ya + f + self.y_extra + self.gamma_frac + 2);
        let lv = 2 * (da + fv) + 2;
        if fv > f || need > self.ring_bits || self.out_bits < self.ring_bits || lv > 64 {
            return Err(ProtocolError::Config(format!(
                "norm: {} fractional bits in, {fv} for the variance, a {}-bit ring (needs {need}), \
                 a {}-bit output ring, a {lv}-bit variance ring",
                f, self.ring_bits, self.out_bits
            )));
        }
        if self.mean_extra > 8 || self.y_extra > self.rsqrt_frac {
            return Err(ProtocolError::Config(format!(
                "norm: {} extra fractional bits of the mean (at most 8)",
                self.mean_extra
            )));
        }
        let tv = lb;
        let hi = 2 * (da + fv) + 2;
        // r <= sqrt(k) 2^{fs/2} (the variance sum is at least one ulp of 2^-fs)
        let fs = 2 * fv - tv;
        let r_bits = ((k as f64).sqrt().log2() + f64::from(fs) / 2.0 + 0.01).ceil() as u32;
        Ok(Plan {
            ring: Ring::new(self.ring_bits)?,
            out: Ring::new(self.out_bits)?,
            var_ring: Ring::new(lv.max(Ring::MIN_BITS))?,
            wide: Ring::z64(),
            k,
            rows: n / k,
            da,
            tv,
            ya,
            hi,
            r_bits,
        })
    }
}

/// The server's affine weights (real values; encoded inside).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NormWeights {
    /// Scale per column (`k` values), `|gamma| < 2^gamma_bits`.
    pub gamma: Vec<f64>,
    /// Shift per column (`k` values), LayerNorm only (empty for none).
    pub beta: Vec<f64>,
}

fn enc(ring: Ring, v: f64, frac: u32) -> u64 {
    ring.from_i64((v * (1u64 << frac) as f64).round() as i64)
}

/// Shares of the normalised `x` (`f` fractional bits in, the same out, in the ring of
/// `cfg.out_bits` bits). The server passes `Some(weights)`, the client `None`.
/// See the module documentation for the protocol.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's public parameters"
)]
pub fn norm<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    kind: NormKind,
    x: &AShare,
    f: u32,
    weights: Option<&NormWeights>,
    cfg: &NormConfig,
) -> Result<AShare> {
    let p = cfg.plan(x.shape(), f)?;
    let shape = x.shape().to_vec();
    let role = s.role();
    let (ring, k, n) = (p.ring, p.k, x.len());
    // the server checks its weights before any traffic
    let w = if role == Role::Server {
        let w =
            weights.ok_or_else(|| ProtocolError::Config("norm: the server needs gamma".into()))?;
        let beta_ok = w.beta.is_empty() || (kind == NormKind::LayerNorm && w.beta.len() == k);
        if w.gamma.len() != k || !beta_ok {
            return Err(ProtocolError::Shape {
                what: "norm gamma/beta",
                expected: k,
                got: w.gamma.len(),
            });
        }
        let gb = (1u64 << cfg.gamma_bits) as f64;
        if w.gamma.iter().any(|g| !g.is_finite() || g.abs() >= gb) {
            return Err(ProtocolError::Config(format!(
                "norm: a gamma outside (-2^{0}, 2^{0})",
                cfg.gamma_bits
            )));
        }
        Some(w)
    } else {
        None
    };
    // 1. to the operator ring
    let x = if x.ring().bits() >= ring.bits() {
        nl::reduce(x, ring)?
    } else {
        nl::extend(s, ch, x, ring, true)?
    };
    // 2. centre
    let e = if kind == NormKind::LayerNorm {
        cfg.mean_extra
    } else {
        0
    };
    let mut mu_fine = None;
    let d = match kind {
        NormKind::RmsNorm => AShare::new(ring, vec![n], x.data().to_vec())?,
        NormKind::LayerNorm => {
            let sums: Vec<u64> = x
                .data()
                .chunks(k)
                .map(|r| r.iter().fold(0u64, |a, &v| ring.add(a, v)))
                .collect();
            let sums = AShare::new(ring, vec![p.rows], sums)?;
            let wide = nl::extend(s, ch, &sums, p.wide, true)?;
            let c = ((1u64 << MEAN_BITS) as f64 / k as f64).round() as i64;
            let off = 1i64 << (p.da + f + MEAN_BITS);
            let t = add_const(&wide.mul_public(c), role, off)?;
            if e > 0 {
                // the mean with f + e fractional bits, kept in the wide ring
                let mf = trunc_pos(s, ch, &t, MEAN_BITS - e)?;
                mu_fine = Some(add_const(&mf, role, -(off >> (MEAN_BITS - e)))?);
            }
            let mu = trunc_pos(s, ch, &t, MEAN_BITS)?;
            let mu = add_const(&mu, role, -(off >> MEAN_BITS))?;
            let mu = nl::reduce(&mu, ring)?;
            let md: Vec<u64> = x
                .data()
                .chunks(k)
                .zip(mu.data())
                .flat_map(|(r, &m)| r.iter().map(move |&v| ring.sub(v, m)))
                .collect();
            AShare::new(ring, vec![n], md)?
        }
    };
    // 3. variance path: dv = d / 2^{f - fv} + 2^{da + fv} >= 0, in Z_2^{Lv}, then the offset
    //    is removed
    let fv = cfg.var_frac;
    let off = 1i64 << (p.da + f);
    let dpos = add_const(&d, role, off)?;
    let dv = if fv < f {
        trunc_pos(s, ch, &dpos, f - fv)?
    } else {
        dpos
    };
    let dv = extend_pos(s, ch, &dv, p.var_ring)?;
    // (d + O)^2 by the narrow square, then d^2 = (d + O)^2 - 2 O (d + O) + O^2 (local)
    let ov = 1i64 << (p.da + fv);
    let sq = square_pos(s, ch, &dv, p.da + fv + 2)?;
    let sq = sq.sub(&dv.mul_public(2 * ov))?;
    let sq = add_const(&sq, role, ov.wrapping_mul(ov))?;
    let sq = trunc_pos(s, ch, &sq, p.tv)?;
    let vr = p.var_ring;
    let sums: Vec<u64> = sq
        .data()
        .chunks(k)
        .map(|r| r.iter().fold(0u64, |a, &v| vr.add(a, v)))
        .collect();
    // 4. per row: r = sqrt(k) / sqrt(S + eps k)
    let fs = 2 * fv - p.tv;
    let sums = extend_pos(s, ch, &AShare::new(vr, vec![p.rows], sums)?, p.wide)?;
    let eps = ((k as f64) * 2f64.powi(fs as i32 - cfg.eps_pow2 as i32))
        .round()
        .max(1.0) as i64;
    let v = add_const(&sums, role, eps)?;
    let fr = cfg.rsqrt_frac;
    let r = rsqrt(s, ch, &v, fs, (0, p.hi), fr + SQRT_K_BITS, cfg.rsqrt)?;
    let sk = ((k as f64).sqrt() * (1u64 << SQRT_K_BITS) as f64).round() as i64;
    let r = trunc_pos(s, ch, &r.mul_public(sk), 2 * SQRT_K_BITS)?;
    let my = p.r_bits + fr + 1;
    // 5a. with the fine mean: m = mu r per row (narrow product in the wide ring, f + fr
    //     fractional bits after a truncation by e), subtracted from x r below
    let m_rows = match &mu_fine {
        Some(mf) => {
            let om = 1i64 << (p.da + f + e);
            let mp = add_const(mf, role, om)?;
            let m = mul_pos(s, ch, &mp, p.da + f + e + 2, &r, my)?;
            let m = m.sub(&r.mul_public(om))?;
            let mo = 1i64 << (p.da + f + e + my);
            let m = trunc_pos(s, ch, &add_const(&m, role, mo)?, e)?;
            Some(nl::reduce(&add_const(&m, role, -(mo >> e))?, ring)?)
        }
        None => None,
    };
    let r = nl::reduce(&r, ring)?;
    // 5. y = d r, z = gamma y + beta
    let bcast = |v: &AShare| -> Result<AShare> {
        let b: Vec<u64> = v
            .data()
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, k))
            .collect();
        Ok(AShare::new(ring, vec![n], b)?)
    };
    let rb = bcast(&r)?;
    // (d + O) r by the narrow product, then d r = (d + O) r - O r (local); with the fine
    // mean, (x + O) r - O r - mu r instead (the same bound on x, the same cost)
    let od = 1i64 << (p.da + f);
    let dpos = match &m_rows {
        Some(_) => add_const(&AShare::new(ring, vec![n], x.data().to_vec())?, role, od)?,
        None => add_const(&d, role, od)?,
    };
    let y = mul_pos(s, ch, &dpos, p.da + f + 2, &rb, my)?;
    let y = y.sub(&rb.mul_public(od))?;
    let y = match &m_rows {
        Some(m) => y.sub(&bcast(m)?)?,
        None => y,
    };
    let yo = 1i64 << (p.ya + f + fr);
    let g = cfg.y_extra;
    let y = trunc_pos(s, ch, &add_const(&y, role, yo)?, fr - g)?;
    let y = add_const(&y, role, -(yo >> (fr - g)))?;
    let gamma: Option<Vec<u64>> = w.map(|w| {
        (0..n)
            .map(|i| {
                enc(
                    ring,
                    w.gamma.get(i % k).copied().unwrap_or(0.0),
                    cfg.gamma_frac,
                )
            })
            .collect()
    });
    let z = mul_known(s, ch, &y, Role::Server, gamma.as_deref())?;
    let fg = cfg.gamma_frac + g;
    let zo = 1i64 << (cfg.gamma_bits + p.ya + f + fg);
    let z = trunc_pos(s, ch, &add_const(&z, role, zo)?, fg)?;
    let z = add_const(&z, role, -(zo >> fg))?;
    let z = match w {
        Some(w) if !w.beta.is_empty() => {
            let b: Vec<u64> = (0..n)
                .map(|i| enc(ring, w.beta.get(i % k).copied().unwrap_or(0.0), f))
                .collect();
            z.add_public(role, &b)?
        }
        _ => z,
    };
    let z = if p.out.bits() > ring.bits() {
        let off = 1i64 << (ring.bits() - 2);
        let e = extend_pos(s, ch, &add_const(&z, role, off)?, p.out)?;
        add_const(&e, role, -off)?
    } else {
        z
    };
    Ok(AShare::new(p.out, shape, z.into_data())?)
}

/// Exact bytes (rounds: an upper bound) of [`norm`] on `shape` with input ring `in_ring`.
pub fn norm_cost(
    kind: NormKind,
    shape: &[usize],
    in_ring: Ring,
    f: u32,
    cfg: &NormConfig,
    nl_cfg: NlConfig,
) -> Result<Cost> {
    let p = cfg.plan(shape, f)?;
    let (ring, n, rows) = (p.ring, p.rows * p.k, p.rows);
    let mut c = Cost::default();
    if in_ring.bits() < ring.bits() {
        c = c + nl::extend_cost(n, in_ring, ring, nl_cfg);
    }
    let e = if kind == NormKind::LayerNorm {
        cfg.mean_extra
    } else {
        0
    };
    if kind == NormKind::LayerNorm {
        c = c + nl::extend_cost(rows, ring, p.wide, nl_cfg);
        if e > 0 {
            c = c + trunc_pos_cost(rows, p.wide, MEAN_BITS - e, nl_cfg);
        }
        c = c + trunc_pos_cost(rows, p.wide, MEAN_BITS, nl_cfg);
    }
    if cfg.var_frac < f {
        c = c + trunc_pos_cost(n, ring, f - cfg.var_frac, nl_cfg);
    }
    c = c + extend_pos_cost(n, ring, p.var_ring, nl_cfg);
    c = c
        + square_pos_cost(n, p.var_ring, p.da + cfg.var_frac + 2, nl_cfg)
        + trunc_pos_cost(n, p.var_ring, p.tv, nl_cfg);
    c = c + extend_pos_cost(rows, p.var_ring, p.wide, nl_cfg);
    let fs = 2 * cfg.var_frac - p.tv;
    c = c + rsqrt_cost(
        rows,
        p.wide,
        fs,
        (0, p.hi),
        cfg.rsqrt_frac + SQRT_K_BITS,
        cfg.rsqrt,
        nl_cfg,
    )?;
    c = c + trunc_pos_cost(rows, p.wide, 2 * SQRT_K_BITS, nl_cfg);
    let my = p.r_bits + cfg.rsqrt_frac + 1;
    if e > 0 {
        c = c
            + mul_pos_cost(rows, p.wide, p.da + f + e + 2, my, nl_cfg)
            + trunc_pos_cost(rows, p.wide, e, nl_cfg);
    }
    c = c
        + mul_pos_cost(n, ring, p.da + f + 2, my, nl_cfg)
        + trunc_pos_cost(n, ring, cfg.rsqrt_frac - cfg.y_extra, nl_cfg);
    c = c
        + mul_known_cost(n, ring, Role::Server, nl_cfg)
        + trunc_pos_cost(n, ring, cfg.gamma_frac + cfg.y_extra, nl_cfg);
    c = c + extend_pos_cost(n, ring, p.out, nl_cfg);
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
            let mut rng = Prg::from_seed([role.index() as u8 + 21; 32]);
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

    pub(crate) fn reference(kind: NormKind, x: &[f64], k: usize, w: &NormWeights) -> Vec<f64> {
        let eps = 2f64.powi(-17);
        x.chunks(k)
            .flat_map(|r| {
                let mu = match kind {
                    NormKind::LayerNorm => r.iter().sum::<f64>() / k as f64,
                    NormKind::RmsNorm => 0.0,
                };
                let var = r.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / k as f64;
                let rs = 1.0 / (var + eps).sqrt();
                r.iter()
                    .enumerate()
                    .map(|(j, v)| {
                        (v - mu) * rs * w.gamma[j] + w.beta.get(j).copied().unwrap_or(0.0)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Every preset, LayerNorm and RMSNorm, on 8 rows of 32: BERT-like N(0, 1) rows with an
    /// outlier, wide uniform rows in (-100, 100), small-variance rows (sd 0.05 and 0.2);
    /// gamma in (-4, 4), beta in (-1, 1); uniformly random shares of a 37-bit ring.
    /// Bound: |err| <= 2e-2 max(1, |y|) per entry; measured bytes equal to the cost.
    #[test]
    fn every_preset_is_accurate_and_costs_what_it_says() {
        let mut prg = Prg::from_seed([22; 32]);
        let in_ring = Ring::new(37).unwrap();
        let f = 12;
        let fx = FixedPoint::new(in_ring, f).unwrap();
        let (rows, k) = (8usize, 32usize);
        let n = rows * k;
        let unif =
            |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let mut x = Vec::with_capacity(n);
        for i in 0..n {
            let (r, j) = (i / k, i % k);
            let (u1, u2) = (unif(&mut prg).max(1e-12), unif(&mut prg));
            let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            x.push(match r {
                0 | 1 => g + if j == 3 { 20.0 } else { 0.0 },
                2 | 3 => 200.0 * unif(&mut prg) - 100.0,
                4 | 5 => 3.0 + 0.05 * g,
                6 => -1.5 + 0.2 * g,
                _ => 120.0 * (unif(&mut prg) - 0.5),
            });
        }
        let w = NormWeights {
            gamma: (0..k).map(|_| 8.0 * unif(&mut prg) - 4.0).collect(),
            beta: (0..k).map(|_| 2.0 * unif(&mut prg) - 1.0).collect(),
        };
        let enc = fx.encode_all(&x);
        let xq = fx.decode_all(&enc);
        let (x0, x1) = AShare::share(in_ring, vec![rows, k], &enc, &mut prg).unwrap();
        for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
            let mut wk = w.clone();
            if kind == NormKind::RmsNorm {
                wk.beta.clear();
            }
            let want = reference(kind, &xq, k, &wk);
            let mut results = Vec::new();
            for preset in NormPreset::ALL {
                let cfg = preset.config(f);
                let cost =
                    norm_cost(kind, &[rows, k], in_ring, f, &cfg, NlConfig::default()).unwrap();
                let (a, b, got) = run2(cost.cots, |role, s, ch| {
                    let (x, wt) = if role == Role::Server {
                        (&x0, Some(&wk))
                    } else {
                        (&x1, None)
                    };
                    norm(s, ch, kind, x, f, wt, &cfg).unwrap()
                });
                let fo = FixedPoint::new(Ring::new(cfg.out_bits).unwrap(), f).unwrap();
                let y = fo.decode_all(&a.reconstruct(&b).unwrap());
                let mut worst: f64 = 0.0;
                let mut at = 0;
                for i in 0..n {
                    let err = (y[i] - want[i]).abs() / want[i].abs().max(1.0);
                    if err > worst {
                        at = i;
                    }
                    worst = worst.max(err);
                    assert!(
                        err <= bound(kind, preset),
                        "{kind:?} {preset:?}: entry {i} = {} want {} (x = {})",
                        y[i],
                        want[i],
                        xq[i]
                    );
                }
                assert!(worst > 0.0);
                assert_eq!(got.bytes, cost.bytes, "{kind:?} {preset:?}");
                assert!(got.rounds <= cost.rounds);
                eprintln!(
                    "{kind:?} {preset:?}: max rel err {worst:.2e} (row {}), {} B",
                    at / k,
                    got.bytes
                );
                results.push((preset, worst, got.bytes));
            }
            duet_is_no_worse(kind, &results);
        }
    }

    /// Per-preset bound of the relative error on the test rows: 2e-2 (the issue's) for the
    /// published presets; the Duet preset's measured 3.5e-3 (LayerNorm, the sd-0.05 rows with
    /// gamma up to 4) and 5.6e-4 (RMSNorm) with margin.
    fn bound(kind: NormKind, preset: NormPreset) -> f64 {
        match (preset, kind) {
            (NormPreset::Duet, NormKind::LayerNorm) => 5e-3,
            (NormPreset::Duet, NormKind::RmsNorm) => 1e-3,
            _ => 2e-2,
        }
    }

    /// Duet costs no more bytes than every other preset and is at least as accurate as the
    /// cheapest other one.
    fn duet_is_no_worse(kind: NormKind, results: &[(NormPreset, f64, u64)]) {
        let duet = results.iter().find(|r| r.0 == NormPreset::Duet).unwrap();
        let cheapest = results
            .iter()
            .filter(|r| r.0 != NormPreset::Duet)
            .min_by_key(|r| r.2)
            .unwrap();
        for r in results {
            assert!(
                duet.2 <= r.2,
                "{kind:?}: duet {} B, {:?} {} B",
                duet.2,
                r.0,
                r.2
            );
        }
        assert!(
            duet.1 <= cheapest.1,
            "{kind:?}: duet err {:.2e}, cheapest other ({:?}) {:.2e}",
            duet.1,
            cheapest.0,
            cheapest.1
        );
    }

    /// BERT-like rows of 768 as in `duet bench op layernorm|rmsnorm` (8 rows here): Duet at
    /// most 8.4e-4 relative (measured 5.7e-4 .. 6.4e-4 LayerNorm, 5.0e-4 .. 5.2e-4 RMSNorm on
    /// 128x768 in the bench), no more bytes than any other preset (at 128 x 768) and at least as
    /// accurate as the cheapest other one on the same inputs.
    #[test]
    fn duet_is_no_worse_on_bench_rows() {
        let mut prg = Prg::from_seed([31; 32]);
        let k = 768;
        let (x, w) = bench_rows(&mut prg, 8, k);
        let in_ring = Ring::new(37).unwrap();
        for kind in [NormKind::LayerNorm, NormKind::RmsNorm] {
            let mut results = Vec::new();
            for preset in [NormPreset::Duet, NormPreset::BumbleBee, NormPreset::Bolt] {
                let cfg = preset.config(12);
                let (err, _) = rel_err(kind, &x, k, &w, &cfg, 3);
                let big = norm_cost(kind, &[128, k], in_ring, 12, &cfg, NlConfig::default())
                    .unwrap()
                    .bytes;
                eprintln!(
                    "{kind:?} {preset:?}: bench rows max rel err {err:.2e}, {big} B at 128x768"
                );
                results.push((preset, err, big));
            }
            // Puma and Iron cost more than BumbleBee and Bolt: their bytes only
            for preset in [NormPreset::Puma, NormPreset::Iron] {
                let cfg = preset.config(12);
                let big = norm_cost(kind, &[128, k], in_ring, 12, &cfg, NlConfig::default())
                    .unwrap()
                    .bytes;
                results.push((preset, f64::INFINITY, big));
            }
            let duet = results.first().unwrap().1;
            assert!(duet <= 8.4e-4, "{kind:?}: duet {duet:.2e}");
            duet_is_no_worse(kind, &results);
        }
    }

    /// The main test's rows (8 x 32) and weights.
    fn test_rows(prg: &mut Prg) -> (Vec<f64>, NormWeights) {
        let (rows, k) = (8usize, 32usize);
        let n = rows * k;
        let unif =
            |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let mut x = Vec::with_capacity(n);
        for i in 0..n {
            let (r, j) = (i / k, i % k);
            let (u1, u2) = (unif(prg).max(1e-12), unif(prg));
            let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            x.push(match r {
                0 | 1 => g + if j == 3 { 20.0 } else { 0.0 },
                2 | 3 => 200.0 * unif(prg) - 100.0,
                4 | 5 => 3.0 + 0.05 * g,
                6 => -1.5 + 0.2 * g,
                _ => 120.0 * (unif(prg) - 0.5),
            });
        }
        let w = NormWeights {
            gamma: (0..k).map(|_| 8.0 * unif(prg) - 4.0).collect(),
            beta: (0..k).map(|_| 2.0 * unif(prg) - 1.0).collect(),
        };
        (x, w)
    }

    /// Bench-like rows (N(0, s^2) + offset, s in [0.5, 3], offset in [-2, 2], gamma in
    /// [0.5, 1.5], beta in [-0.5, 0.5]), `rows x k`.
    fn bench_rows(prg: &mut Prg, rows: usize, k: usize) -> (Vec<f64>, NormWeights) {
        let unif =
            |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let mut x = Vec::with_capacity(rows * k);
        for _ in 0..rows {
            let off = 4.0 * unif(prg) - 2.0;
            let sc = 0.5 + 2.5 * unif(prg);
            for _ in 0..k {
                let (u1, u2) = (unif(prg).max(1e-12), unif(prg));
                let g = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                x.push(off + sc * g);
            }
        }
        let w = NormWeights {
            gamma: (0..k).map(|_| 0.5 + unif(prg)).collect(),
            beta: (0..k).map(|_| unif(prg) - 0.5).collect(),
        };
        (x, w)
    }

    /// Max relative error of `cfg` on `x` (`rows x k`) against the float reference.
    fn rel_err(
        kind: NormKind,
        x: &[f64],
        k: usize,
        w: &NormWeights,
        cfg: &NormConfig,
        seed: u8,
    ) -> (f64, u64) {
        let mut prg = Prg::from_seed([seed; 32]);
        let in_ring = Ring::new(37).unwrap();
        let f = 12;
        let fx = FixedPoint::new(in_ring, f).unwrap();
        let rows = x.len() / k;
        let enc = fx.encode_all(x);
        let xq = fx.decode_all(&enc);
        let mut wk = w.clone();
        if kind == NormKind::RmsNorm {
            wk.beta.clear();
        }
        let want = reference(kind, &xq, k, &wk);
        let (x0, x1) = AShare::share(in_ring, vec![rows, k], &enc, &mut prg).unwrap();
        let cost = norm_cost(kind, &[rows, k], in_ring, f, cfg, NlConfig::default()).unwrap();
        let (a, b, got) = run2(cost.cots, |role, s, ch| {
            let (x, wt) = if role == Role::Server {
                (&x0, Some(&wk))
            } else {
                (&x1, None)
            };
            norm(s, ch, kind, x, f, wt, cfg).unwrap()
        });
        assert_eq!(got.bytes, cost.bytes);
        let fo = FixedPoint::new(Ring::new(cfg.out_bits).unwrap(), f).unwrap();
        let y = fo.decode_all(&a.reconstruct(&b).unwrap());
        let worst = y
            .iter()
            .zip(&want)
            .map(|(y, w)| (y - w).abs() / w.abs().max(1.0))
            .fold(0.0, f64::max);
        (worst, got.bytes)
    }

    #[test]
    #[ignore = "exploration"]
    fn explore_duet_norm() {
        let mut prg = Prg::from_seed([5; 32]);
        let k = 768;
        let (x, w) = bench_rows(&mut prg, 32, k);
        let in_ring = Ring::new(37).unwrap();
        let d = NormPreset::Duet.config(12);
        let mut cands = vec![("bumblebee", NormPreset::BumbleBee.config(12)), ("duet", d)];
        for (fg, e, g, fv) in [
            (12u32, 4u32, 0u32, 10u32),
            (12, 4, 1, 10),
            (11, 4, 2, 10),
            (12, 6, 1, 10),
            (12, 4, 1, 11),
            (12, 4, 1, 12),
        ] {
            cands.push((
                "var",
                NormConfig {
                    gamma_frac: fg,
                    mean_extra: e,
                    var_frac: fv,
                    y_extra: g,
                    ..d
                },
            ));
        }
        let mut tprg = Prg::from_seed([22; 32]);
        let (tx, tw) = test_rows(&mut tprg);
        for (name, c) in cands {
            if c.plan(&[128, k], 12).is_err() {
                continue;
            }
            let big = norm_cost(
                NormKind::LayerNorm,
                &[128, k],
                in_ring,
                12,
                &c,
                NlConfig::default(),
            )
            .unwrap();
            let bigr = norm_cost(
                NormKind::RmsNorm,
                &[128, k],
                in_ring,
                12,
                &c,
                NlConfig::default(),
            )
            .unwrap();
            let (e1, _) = rel_err(NormKind::LayerNorm, &x, k, &w, &c, 1);
            let (e2, _) = rel_err(NormKind::RmsNorm, &x, k, &w, &c, 1);
            let (e3, _) = rel_err(NormKind::LayerNorm, &tx, 32, &tw, &c, 1);
            let (e4, _) = rel_err(NormKind::RmsNorm, &tx, 32, &tw, &c, 1);
            eprintln!(
                "{name} ring {} fv {} fr {} fg {} e {} g {}: LN {:.3} MB RMS {:.3} MB, bench-like LN {e1:.2e} RMS {e2:.2e}; test LN {e3:.2e} RMS {e4:.2e}",
                c.ring_bits, c.var_frac, c.rsqrt_frac, c.gamma_frac, c.mean_extra, c.y_extra,
                big.bytes as f64 / 1e6, bigr.bytes as f64 / 1e6
            );
        }
    }

    #[test]
    fn bad_configs_are_errors() {
        let mut cfg = NormPreset::Duet.config(12);
        assert!(cfg.plan(&[4, 2], 12).is_err());
        cfg.ring_bits = 24;
        assert!(cfg.plan(&[4, 768], 12).is_err());
    }
}
