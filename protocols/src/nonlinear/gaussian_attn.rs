//! Gaussian-kernel attention scores `exp(-scale ||q_i - k_j||^2)` on additive shares, the
//! SoftMax replacement of "Encryption-Friendly LLM Architecture" (Rho et al., ICLR'25): no
//! max, no row sum, no reciprocal, only one exp per score.
//!
//! Protocol (semi-honest, 128-bit): `||q - k||^2 = ||q||^2 + ||k||^2 - 2 q.k`; the caller
//! provides the shared `q.k` (its share x share matmul, e.g. HE), this operator computes
//! 1. `||q_i||^2`, `||k_j||^2`: every element squared ([`square`]: one cross term, the
//!    cheapest product of a value with itself), truncated by `f` (one COT, positive values),
//!    summed (local);
//! 2. `x_ij = -(||q_i||^2 + ||k_j||^2 - 2 q.k_ij) round(scale 2^t)` (local) with `f + t`
//!    fractional bits;
//! 3. `exp(x)` ([`exp`], the clipping ReLU makes far pairs exactly (or nearly) 0); masked
//!    scores set to 0 (local, public mask).
//!
//! Error: the exp error ([`ExpParams::error_bound`]) plus the rounding of the distance
//! (`2^-f` per norm, amplified by `scale` and the exp's slope, at most 1). Cost:
//! [`gaussian_attn_cost`] (bytes exact, rounds an upper bound).

use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::exp::{
    exp, exp_cost, square, square_cost, trunc_pos, trunc_pos_cost, ExpMethod, ExpParams,
};
use duet_mpc::nonlinear::{self as nl, Cost, NlConfig, NlSession};
use duet_mpc::{AShare, Ring};
use duet_transport::Channel;

/// Configuration of [`gaussian_attn`] (public).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GaussianAttnConfig {
    /// The exp approximation and the output's fractional bits `F`.
    pub exp: ExpParams,
    /// Operator ring width `L` (at least `2 (a + f) + 2` and `2F + 2`).
    pub ring_bits: u32,
    /// `a`: `|q|, |k| < 2^a` elementwise (public bound).
    pub in_bits: u32,
    /// Fractional bits `t` of the public scale.
    pub scale_bits: u32,
}

impl Default for GaussianAttnConfig {
    /// Duet's default: a degree-2 Taylor base and 4 squarings ([`ExpMethod::Taylor2`],
    /// approximation error at most 8.7e-4 absolute; no normalisation follows, so fewer
    /// squarings than SoftMax's suffice), 13 fractional bits, `|q|, |k| < 8`, a 33-bit ring (enough for 12 fractional input
    /// bits and `scale d <= 4`, e.g. `d = 64` with `scale = 1 / (2 sqrt d)`).
    fn default() -> Self {
        Self {
            exp: ExpParams {
                method: ExpMethod::Taylor2 { n: 4 },
                frac: 13,
            },
            ring_bits: 33,
            in_bits: 3,
            scale_bits: 6,
        }
    }
}

impl GaussianAttnConfig {
    /// The configuration for a model's attention: a degree-2 Taylor base and 6 squarings
    /// (error at most 5.5e-5 per weight), for inputs `|q|, |k| < 2^in_bits` at `f`
    /// fractional bits and `scale`:
    /// the scale's fractional bits `t` such that rounding it errs by at most `2^-10` relative
    /// (at least the default 6), then the narrowest operator ring (from 33 bits up) that
    /// `shape` admits.
    pub fn fit(shape: GaussShape, in_bits: u32, f: u32, scale: f64) -> Result<Self> {
        let mut cfg = Self {
            in_bits,
            ..Self::default()
        };
        // in a model the weights are not normalised: each one's exp error reaches the output
        // (summed over the keys), so two squarings more than the operator's default (Taylor2
        // error 5.5e-5 instead of 8.7e-4; a small LLaMA's logits 0.06 off instead of 0.19)
        cfg.exp.method = ExpMethod::Taylor2 { n: 6 };
        if scale.is_finite() && scale > 0.0 {
            while cfg.scale_bits < 24 {
                let c = (scale * 2f64.powi(cfg.scale_bits as i32)).round();
                if (c / 2f64.powi(cfg.scale_bits as i32) - scale).abs() <= scale / 1024.0 {
                    break;
                }
                cfg.scale_bits += 1;
            }
        }
        for l in 33..=62 {
            cfg.ring_bits = l;
            if shape.check(&cfg, f, scale).is_ok() {
                return Ok(cfg);
            }
        }
        shape.check(&cfg, f, scale).map(|_| cfg)
    }
}

/// Shapes `[h, n, d]` (queries), `[h, m, d]` (keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GaussShape {
    /// Heads.
    pub heads: usize,
    /// Queries per head.
    pub queries: usize,
    /// Keys per head.
    pub keys: usize,
    /// Head dimension.
    pub dim: usize,
}

impl GaussShape {
    fn check(&self, cfg: &GaussianAttnConfig, f: u32, scale: f64) -> Result<Ring> {
        let l = cfg.ring_bits;
        let a = cfg.in_bits;
        let dmax = 4.0 * self.dim as f64 * 4f64.powi(a as i32);
        let xbits = (dmax * scale * 2f64.powi((f + cfg.scale_bits) as i32)).log2();
        let n = cfg.exp.method.squarings();
        let ok = 2 * (a + f) + 2 <= l
            && 2 * cfg.exp.frac + 2 <= l
            && xbits + 2.0 < f64::from(l)
            && f + cfg.scale_bits + n + 2 <= l
            && scale.is_finite()
            && scale > 0.0
            && self.dim > 0;
        if !ok {
            return Err(ProtocolError::Config(format!(
                "gaussian attention: {self:?}, scale {scale}, {f} fractional bits, {cfg:?}: the \
                 ring needs 2(a + f) + 2, 2F + 2 and {xbits:.1} + 2 bits"
            )));
        }
        Ok(Ring::new(l)?)
    }
}

fn to_ring<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, ring: Ring) -> Result<AShare> {
    Ok(if x.ring().bits() >= ring.bits() {
        nl::reduce(x, ring)?
    } else {
        nl::extend(s, ch, x, ring, true)?
    })
}

/// Shares of `exp(-scale ||q_i - k_j||^2)` (`[h, n, m]`, `F` fractional bits, operator
/// ring) from shares of `q` (`[h, n, d]`), `k` (`[h, m, d]`) and `qk = q k^T` (`[h, n, m]`), all
/// with `f` fractional bits; `mask` (public, `true` = masked out) gives exactly 0.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's public parameters"
)]
pub fn gaussian_attn<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    shape: GaussShape,
    q: &AShare,
    k: &AShare,
    qk: &AShare,
    f: u32,
    scale: f64,
    mask: Option<&[bool]>,
    cfg: &GaussianAttnConfig,
) -> Result<AShare> {
    let ring = shape.check(cfg, f, scale)?;
    let GaussShape {
        heads: h,
        queries: n,
        keys: m,
        dim: d,
    } = shape;
    for (what, t, want) in [
        ("queries", q, h * n * d),
        ("keys", k, h * m * d),
        ("q k^T", qk, h * n * m),
    ] {
        if t.len() != want {
            return Err(ProtocolError::Shape {
                what,
                expected: want,
                got: t.len(),
            });
        }
    }
    if mask.is_some_and(|mk| mk.len() != h * n * m) {
        return Err(ProtocolError::Shape {
            what: "gaussian attention mask",
            expected: h * n * m,
            got: mask.map_or(0, <[bool]>::len),
        });
    }
    // 1. squared norms of q and k rows (one batch)
    let mut both = to_ring(s, ch, q, ring)?.into_data();
    both.extend(to_ring(s, ch, k, ring)?.into_data());
    let total = both.len();
    let sq = square(s, ch, &AShare::new(ring, vec![total], both)?)?;
    let sq = trunc_pos(s, ch, &sq, f)?;
    let norms: Vec<u64> = sq
        .data()
        .chunks(d)
        .map(|r| r.iter().fold(0u64, |a, &v| ring.add(a, v)))
        .collect();
    let (nq, nk) = norms.split_at(h * n);
    // 2. x = -(|q|^2 + |k|^2 - 2 qk) c
    let qk = to_ring(s, ch, qk, ring)?;
    let c = (scale * 2f64.powi(cfg.scale_bits as i32)).round() as i64;
    let cr = ring.from_i64(c);
    let mut x = Vec::with_capacity(h * n * m);
    for (idx, &v) in qk.data().iter().enumerate() {
        let (hh, i, j) = (idx / (n * m), (idx / m) % n, idx % m);
        let a = nq.get(hh * n + i).copied().unwrap_or(0);
        let b = nk.get(hh * m + j).copied().unwrap_or(0);
        let dist = ring.sub(ring.add(a, b), ring.add(v, v));
        x.push(ring.neg(ring.mul(dist, cr)));
    }
    // 3. exp, masked to 0
    let e = exp(
        s,
        ch,
        &AShare::new(ring, vec![h * n * m], x)?,
        f + cfg.scale_bits,
        cfg.exp,
    )?;
    let out: Vec<u64> = e
        .data()
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            if mask.and_then(|mk| mk.get(i).copied()).unwrap_or(false) {
                0
            } else {
                v
            }
        })
        .collect();
    Ok(AShare::new(ring, vec![h, n, m], out)?)
}

/// Exact bytes (rounds: an upper bound) of [`gaussian_attn`] with input ring `in_ring`.
pub fn gaussian_attn_cost(
    shape: GaussShape,
    in_ring: Ring,
    f: u32,
    scale: f64,
    cfg: &GaussianAttnConfig,
    nl_cfg: NlConfig,
) -> Result<Cost> {
    let ring = shape.check(cfg, f, scale)?;
    let GaussShape {
        heads: h,
        queries: n,
        keys: m,
        dim: d,
    } = shape;
    let mut c = Cost::default();
    if in_ring.bits() < ring.bits() {
        c = c
            + nl::extend_cost(h * n * d, in_ring, ring, nl_cfg)
            + nl::extend_cost(h * m * d, in_ring, ring, nl_cfg);
    }
    let total = h * (n + m) * d;
    c = c + square_cost(total, ring, nl_cfg) + trunc_pos_cost(total, ring, f, nl_cfg);
    if in_ring.bits() < ring.bits() {
        c = c + nl::extend_cost(h * n * m, in_ring, ring, nl_cfg);
    }
    c = c + exp_cost(h * n * m, ring, f + cfg.scale_bits, cfg.exp, nl_cfg);
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_mpc::nonlinear::CotCount;
    use duet_mpc::{FixedPoint, Prg};
    use duet_transport::{run_two_party, MemoryChannel, Role};

    /// The one traffic-measuring helper of this file (COTs reserved before the measured part).
    fn run2<T: Send>(
        need: CotCount,
        f: impl Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        let party = |role: Role, mut ch: MemoryChannel| {
            let mut rng = Prg::from_seed([role.index() as u8 + 31; 32]);
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

    /// 2 heads, 8 queries, 8 keys, dimension 16, q and k uniform in (-2, 2) plus identical
    /// and opposite extreme pairs (|q|, |k| close to 8); scale 1/(2 sqrt(d)); causal mask on
    /// head 1. Bound: 1e-2 absolute per score, masked exactly 0, bytes equal to the cost.
    #[test]
    fn scores_match_the_kernel() {
        let mut prg = Prg::from_seed([32; 32]);
        let in_ring = Ring::new(37).unwrap();
        let f = 12;
        let fx = FixedPoint::new(in_ring, f).unwrap();
        let shape = GaussShape {
            heads: 2,
            queries: 8,
            keys: 8,
            dim: 16,
        };
        let (h, n, m, d) = (2usize, 8usize, 8usize, 16usize);
        let unif =
            |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let mut q: Vec<f64> = (0..h * n * d).map(|_| 4.0 * unif(&mut prg) - 2.0).collect();
        let mut k: Vec<f64> = (0..h * m * d).map(|_| 4.0 * unif(&mut prg) - 2.0).collect();
        // query 0 = key 0 (distance 0), query 1 = -key 1 at the bound
        for j in 0..d {
            k[j] = q[j];
            q[d + j] = 7.9;
            k[d + j] = -7.9;
        }
        let (q, k) = (
            fx.decode_all(&fx.encode_all(&q)),
            fx.decode_all(&fx.encode_all(&k)),
        );
        let mut qk = Vec::with_capacity(h * n * m);
        for hh in 0..h {
            for i in 0..n {
                for j in 0..m {
                    let dot: f64 = (0..d)
                        .map(|t| q[(hh * n + i) * d + t] * k[(hh * m + j) * d + t])
                        .sum();
                    qk.push(dot);
                }
            }
        }
        let qk = fx.decode_all(&fx.encode_all(&qk));
        let scale = 1.0 / (2.0 * (d as f64).sqrt());
        let mask: Vec<bool> = (0..h * n * m)
            .map(|i| i / (n * m) == 1 && i % m > (i / m) % n)
            .collect();
        let want: Vec<f64> = (0..h * n * m)
            .map(|idx| {
                let (hh, i, j) = (idx / (n * m), (idx / m) % n, idx % m);
                let dist: f64 = (0..d)
                    .map(|t| (q[(hh * n + i) * d + t] - k[(hh * m + j) * d + t]).powi(2))
                    .sum();
                if mask[idx] {
                    0.0
                } else {
                    (-scale * dist).exp()
                }
            })
            .collect();
        let share = |v: &[f64], prg: &mut Prg| {
            AShare::share(in_ring, vec![v.len()], &fx.encode_all(v), prg).unwrap()
        };
        let (q0, q1) = share(&q, &mut prg);
        let (k0, k1) = share(&k, &mut prg);
        let (p0, p1) = share(&qk, &mut prg);
        let cfg = GaussianAttnConfig::default();
        let cost = gaussian_attn_cost(shape, in_ring, f, scale, &cfg, NlConfig::default()).unwrap();
        let (a, b, got) = run2(cost.cots, |role, s, ch| {
            let (q, k, p) = if role == Role::Server {
                (&q0, &k0, &p0)
            } else {
                (&q1, &k1, &p1)
            };
            gaussian_attn(s, ch, shape, q, k, p, f, scale, Some(&mask), &cfg).unwrap()
        });
        let raw = a.reconstruct(&b).unwrap();
        let fo = FixedPoint::new(Ring::new(cfg.ring_bits).unwrap(), cfg.exp.frac).unwrap();
        let y = fo.decode_all(&raw);
        let mut worst: f64 = 0.0;
        for i in 0..y.len() {
            if mask[i] {
                assert_eq!(raw[i], 0);
            }
            let err = (y[i] - want[i]).abs();
            worst = worst.max(err);
            assert!(
                err <= 1e-2,
                "score {i}: {} want {} err {err}",
                y[i],
                want[i]
            );
        }
        assert!((y[0] - 1.0).abs() <= 1e-2, "identical pair gives {}", y[0]);
        assert!(worst > 0.0);
        assert_eq!(got.bytes, cost.bytes);
        assert!(got.rounds <= cost.rounds);
    }
}
