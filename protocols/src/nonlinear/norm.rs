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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormKind {
    /// `gamma (x - mean) / sqrt(var + eps) + beta` (BERT, GPT-2).
    LayerNorm,
    /// `gamma x / sqrt(mean(x^2) + eps)` (LLaMA).
    RmsNorm,
}

/// The published styles (ring widths and precisions) and Duet's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum NormPreset {
    /// Duet: variance from `d` rounded to 10 fractional bits (squares in a 38-bit ring), the
    /// rest in a 36-bit ring (16 fractional bits for `1/sqrt(var)`), gamma with 8, two Newton
    /// steps.
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
        };
        match self {
            Self::Duet => NormConfig {
                ring_bits: 36,
                out_bits: 36,
                var_frac: f.min(10),
                rsqrt_frac: 16,
                gamma_frac: 8,
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
            .max(self.gamma_bits + ya + f + self.gamma_frac + 2);
        let lv = 2 * (da + fv) + 2;
        if fv > f || need > self.ring_bits || self.out_bits < self.ring_bits || lv > 64 {
            return Err(ProtocolError::Config(format!(
                "norm: {} fractional bits in, {fv} for the variance, a {}-bit ring (needs {need}), \
                 a {}-bit output ring, a {lv}-bit variance ring",
                f, self.ring_bits, self.out_bits
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
    let r = nl::reduce(&r, ring)?;
    // 5. y = d r, z = gamma y + beta
    let rb: Vec<u64> = r
        .data()
        .iter()
        .flat_map(|&v| std::iter::repeat_n(v, k))
        .collect();
    // (d + O) r by the narrow product, then d r = (d + O) r - O r (local)
    let rb = AShare::new(ring, vec![n], rb)?;
    let od = 1i64 << (p.da + f);
    let dpos = add_const(&d, role, od)?;
    let y = mul_pos(s, ch, &dpos, p.da + f + 2, &rb, p.r_bits + fr + 1)?;
    let y = y.sub(&rb.mul_public(od))?;
    let yo = 1i64 << (p.ya + f + fr);
    let y = trunc_pos(s, ch, &add_const(&y, role, yo)?, fr)?;
    let y = add_const(&y, role, -(yo >> fr))?;
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
    let fg = cfg.gamma_frac;
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
    if kind == NormKind::LayerNorm {
        c = c + nl::extend_cost(rows, ring, p.wide, nl_cfg);
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
    c = c
        + mul_pos_cost(n, ring, p.da + f + 2, my, nl_cfg)
        + trunc_pos_cost(n, ring, cfg.rsqrt_frac, nl_cfg);
    c = c
        + mul_known_cost(n, ring, Role::Server, nl_cfg)
        + trunc_pos_cost(n, ring, cfg.gamma_frac, nl_cfg);
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
                        err <= 2e-2,
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
            }
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
