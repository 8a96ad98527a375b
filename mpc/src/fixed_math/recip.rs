//! Reciprocal `1/x` of shared positive fixed-point values with a known range, by Newton's
//! iteration after normalising by the MSB position (the shared machinery is also used by
//! [`super::rsqrt`]).

use super::exp::{
    extend_pos, extend_pos_cost, geq_pow2, square, square_cost, trunc_pos, trunc_pos_cost,
};
use crate::nonlinear::{self as nl, BShare, Cost, NlConfig, NlSession};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};

/// Parameters of the Newton iteration of [`recip`] and [`super::rsqrt::rsqrt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NewtonParams {
    /// Newton iterations after the linear initial guess (the relative error of the guess,
    /// 7.2% for the reciprocal and 2.3% for rsqrt, squares with every iteration).
    pub iters: u32,
    /// Fractional bits `G` of the iteration (its internal ring has `2G + 3` bits or more).
    pub frac: u32,
}

impl Default for NewtonParams {
    fn default() -> Self {
        Self { iters: 2, frac: 16 }
    }
}

/// Which function of the normalised value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Recip,
    Rsqrt,
}

/// The public description of one normalised evaluation (shared by the protocol and its cost).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    kind: Kind,
    f_in: u32,
    lo: u32,
    hi: u32,
    f_out: u32,
    p: NewtonParams,
    /// Internal ring.
    li: Ring,
    /// Final truncation.
    d: u32,
}

impl Plan {
    /// `2^E(p)` is the factor taking `y = f(w)` (fractional bits `G`) to the output (fractional
    /// bits `f_out`) for MSB position `p`.
    fn exponent(&self, p: u32) -> f64 {
        let (fi, fo, g) = (
            f64::from(self.f_in),
            f64::from(self.f_out),
            f64::from(self.p.frac),
        );
        let p = f64::from(p);
        match self.kind {
            Kind::Recip => fi + fo - p - 1.0 - g,
            Kind::Rsqrt => fo + (fi - p - 1.0) / 2.0 - g,
        }
    }

    fn coeff(&self, p: u32) -> u64 {
        2f64.powf(self.exponent(p) + f64::from(self.d)).round() as u64
    }

    pub(crate) fn new(
        kind: Kind,
        ring: Ring,
        f_in: u32,
        (lo, hi): (u32, u32),
        f_out: u32,
        p: NewtonParams,
    ) -> Result<Self> {
        let l = ring.bits();
        if lo >= hi || hi + 2 > l || p.frac < 4 || p.frac > 28 || p.iters > 8 {
            return Err(MpcError::InvalidArgument {
                what: format!(
                    "normalised {kind:?}: range [2^{lo}, 2^{hi}) in Z_2^{l}, {} fractional bits, \
                     {} iterations (need lo < hi, hi + 2 <= l, 4 <= G <= 28, iters <= 8)",
                    p.frac, p.iters
                ),
            });
        }
        let mut plan = Self {
            kind,
            f_in,
            lo,
            hi,
            f_out,
            p,
            li: ring,
            d: 0,
        };
        // exact powers of two for the reciprocal; 14 bits of precision for rsqrt's constants
        let prec = match kind {
            Kind::Recip => 0.0,
            Kind::Rsqrt => 14.0,
        };
        let min_e = plan.exponent(hi - 1).min(plan.exponent(lo));
        plan.d = (prec - min_e).ceil().max(0.0) as u32;
        let top = f64::from(p.frac) + 1.0 + plan.exponent(lo) + f64::from(plan.d);
        let li = (2 * p.frac + 3)
            .max(hi + 2)
            .max(top.ceil() as u32 + 2)
            .max(l);
        // the output must fit the caller's ring
        let out_top = match kind {
            Kind::Recip => f64::from(f_out) + f64::from(f_in) - f64::from(lo),
            Kind::Rsqrt => f64::from(f_out) + (f64::from(f_in) - f64::from(lo)) / 2.0,
        };
        if li > 64 || out_top + 2.0 > f64::from(l) {
            return Err(MpcError::InvalidArgument {
                what: format!(
                    "normalised {kind:?}: needs a {li}-bit internal ring and outputs up to \
                     2^{out_top} in Z_2^{l}"
                ),
            });
        }
        plan.li = Ring::new(li)?;
        Ok(plan)
    }

    fn positions(&self) -> usize {
        (self.hi - self.lo) as usize
    }

    /// Exact bytes (rounds: an upper bound) on `n` elements of `ring`.
    pub(crate) fn cost(&self, n: usize, ring: Ring, cfg: NlConfig) -> Cost {
        if n == 0 {
            return Cost::default();
        }
        let li = self.li;
        let g = self.p.frac;
        let k = self.positions();
        let mut c = nl::drelu_cost(n * (k - 1), ring, cfg)
            + extend_pos_cost(n, ring, li, cfg)
            + nl::mux_cost(n * k, li, cfg);
        if self.hi > g {
            c = c + trunc_pos_cost(n, li, self.hi - g, cfg);
        }
        match self.kind {
            Kind::Recip => {
                for _ in 0..self.p.iters {
                    c = c + nl::mul_cost(n, li, cfg) + trunc_pos_cost(n, li, g, cfg);
                    c = c + nl::mul_cost(n, li, cfg) + trunc_pos_cost(n, li, g, cfg);
                }
            }
            Kind::Rsqrt => {
                c = c + trunc_pos_cost(n, li, RSQRT_SLOPE_BITS, cfg);
                for _ in 0..self.p.iters {
                    c = c + square_cost(n, li, cfg) + trunc_pos_cost(n, li, g, cfg);
                    c = c + nl::mul_cost(n, li, cfg) + trunc_pos_cost(n, li, g, cfg);
                    c = c + nl::mul_cost(n, li, cfg) + trunc_pos_cost(n, li, g + 1, cfg);
                }
            }
        }
        c = c + nl::mux_cost(n * k, li, cfg);
        if self.d > 0 {
            c = c + trunc_pos_cost(n, li, self.d, cfg);
        }
        c
    }

    /// Runs the evaluation (see [`recip`] for the protocol).
    pub(crate) fn run<C: Channel>(
        &self,
        s: &mut NlSession,
        ch: &mut C,
        x: &AShare,
    ) -> Result<AShare> {
        let ring = x.ring();
        let n = x.len();
        if n == 0 {
            return Ok(x.clone());
        }
        let (lo, hi, g) = (self.lo, self.hi, self.p.frac);
        let li = self.li;
        let k = self.positions();
        let role = s.role();
        // c_j = 1{x >= 2^j} for lo < j < hi (c_lo = 1, c_hi = 0 are public)
        let js: Vec<u32> = (lo + 1..hi).collect();
        let c = geq_pow2(s, ch, x, &js)?.to_bits();
        let cbit = |j: u32, i: usize| -> bool {
            if j == lo {
                role == Role::Server
            } else if j >= hi {
                false
            } else {
                c.get((j - lo - 1) as usize * n + i)
                    .copied()
                    .unwrap_or(false)
            }
        };
        // one-hot e_p = c_p xor c_{p+1}, layout [(p - lo) * n + i]
        let mut e = Vec::with_capacity(n * k);
        for j in lo..hi {
            for i in 0..n {
                e.push(cbit(j, i) ^ cbit(j + 1, i));
            }
        }
        let e = BShare::from_bits(&e);
        let xi = extend_pos(s, ch, x, li)?;
        // z = x 2^{hi-1-p} in [2^{hi-1}, 2^hi): w = z / 2^hi in [1/2, 1)
        let mut big = Vec::with_capacity(n * k);
        for j in lo..hi {
            let sh = xi.mul_public(1i64 << (hi - 1 - j));
            big.extend_from_slice(sh.data());
        }
        let m = nl::mux(s, ch, &e, &AShare::new(li, vec![n * k], big)?)?;
        let z = sum_blocks(li, m.data(), n);
        let z = AShare::new(li, vec![n], z)?;
        let w = if hi > g {
            trunc_pos(s, ch, &z, hi - g)?
        } else {
            z.mul_public(1i64 << (g - hi))
        };
        let one = 1i64 << g;
        let y = match self.kind {
            Kind::Recip => {
                // y0 = 2.928 - 2 w: relative error at most 7.2% on [1/2, 1)
                let mut y = add(&w.mul_public(-2), role, (2.928 * one as f64).round() as i64)?;
                for _ in 0..self.p.iters {
                    let t = nl::mul(s, ch, &w, &y)?;
                    let t = trunc_pos(s, ch, &t, g)?;
                    let u = add(&t.neg(), role, 2 * one)?;
                    let t = nl::mul(s, ch, &y, &u)?;
                    y = trunc_pos(s, ch, &t, g)?;
                }
                y
            }
            Kind::Rsqrt => {
                // y0 = 1.8016 - (53/64) w: relative error at most 2.3% on [1/2, 1)
                let bw = trunc_pos(s, ch, &w.mul_public(53), RSQRT_SLOPE_BITS)?;
                let mut y = add(&bw.neg(), role, (1.8016 * one as f64).round() as i64)?;
                for _ in 0..self.p.iters {
                    let y2 = square(s, ch, &y)?;
                    let y2 = trunc_pos(s, ch, &y2, g)?;
                    let t = nl::mul(s, ch, &w, &y2)?;
                    let t = trunc_pos(s, ch, &t, g)?;
                    let u = add(&t.neg(), role, 3 * one)?;
                    let t = nl::mul(s, ch, &y, &u)?;
                    y = trunc_pos(s, ch, &t, g + 1)?;
                }
                y
            }
        };
        // out = sum_p e_p C_p y, then / 2^D
        let mut big = Vec::with_capacity(n * k);
        for j in lo..hi {
            big.extend(y.data().iter().map(|&v| li.mul(v, self.coeff(j))));
        }
        let m = nl::mux(s, ch, &e, &AShare::new(li, vec![n * k], big)?)?;
        let out = AShare::new(li, vec![n], sum_blocks(li, m.data(), n))?;
        let out = if self.d > 0 {
            trunc_pos(s, ch, &out, self.d)?
        } else {
            out
        };
        nl::reduce(&AShare::new(li, x.shape().to_vec(), out.into_data())?, ring)
    }
}

/// Bits of the rsqrt initial guess's slope `53 / 2^6`.
const RSQRT_SLOPE_BITS: u32 = 6;

fn add(x: &AShare, role: Role, c: i64) -> Result<AShare> {
    super::exp::add_const(x, role, c)
}

/// Sums `k` consecutive blocks of `n` values.
fn sum_blocks(ring: Ring, data: &[u64], n: usize) -> Vec<u64> {
    let mut z = vec![0u64; n];
    for blk in data.chunks(n.max(1)) {
        for (a, &b) in z.iter_mut().zip(blk) {
            *a = ring.add(*a, b);
        }
    }
    z
}

/// Shares of `1/x` with `f_out` fractional bits (same ring) for shared `x` with `f_in`
/// fractional bits whose integer encoding lies in `[2^lo, 2^hi)` (`range = (lo, hi)`, public).
///
/// Protocol (normalise, iterate, scale back):
/// 1. the one-hot MSB position `p` from `hi - lo - 1` batched DReLUs `1{x >= 2^j}` (the XOR
///    of neighbours is local);
/// 2. `z = sum_p e_p x 2^{hi-1-p}` (`hi - lo` muxes after an [`extend_pos`] to the internal
///    ring of `max(2G + 3, ..)` bits), i.e. `w = x / 2^{p+1}` in `[1/2, 1)`;
/// 3. `y0 = 2.928 - 2w` (relative error 7.2%) and `iters` Newton steps
///    `y <- y (2 - w y)` (two Gilboa products, each followed by a one-COT truncation of a
///    positive value);
/// 4. `1/x = y 2^{f_in - p - 1}`: `hi - lo` muxes of `y` times public powers of two, a final
///    truncation, reduction to the caller's ring.
///
/// Error: relative `0.072^(2^iters)` plus a few ulps of `2^-G`, plus half an ulp of the output.
/// Security: semi-honest, 128-bit. Cost: [`recip_cost`] (per element about `2 (hi - lo)` muxes,
/// `hi - lo` DReLUs and `2 iters` products; meant for one value per row, e.g. SoftMax's
/// denominators).
pub fn recip<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f_in: u32,
    range: (u32, u32),
    f_out: u32,
    params: NewtonParams,
) -> Result<AShare> {
    Plan::new(Kind::Recip, x.ring(), f_in, range, f_out, params)?.run(s, ch, x)
}

/// Exact bytes (rounds: an upper bound) of [`recip`] on `n` elements of `ring`.
pub fn recip_cost(
    n: usize,
    ring: Ring,
    f_in: u32,
    range: (u32, u32),
    f_out: u32,
    params: NewtonParams,
    cfg: NlConfig,
) -> Result<Cost> {
    Ok(Plan::new(Kind::Recip, ring, f_in, range, f_out, params)?.cost(n, ring, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_math::rsqrt::{rsqrt, rsqrt_cost};
    use crate::nonlinear::CotCount;
    use crate::{FixedPoint, Prg};
    use duet_transport::MemoryChannel;

    /// The one traffic-measuring helper of this file.
    fn run2<T: Send>(
        cfg: NlConfig,
        need: CotCount,
        f: impl Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        crate::nonlinear::run_measured(9, cfg, need, f)
    }

    #[test]
    fn recip_and_rsqrt_over_the_whole_range() {
        let mut prg = Prg::from_seed([5; 32]);
        let ring = Ring::new(32).unwrap();
        let f = 12;
        let fx = FixedPoint::new(ring, f).unwrap();
        let (lo, hi) = (0u32, 22u32);
        // every MSB position, both ends of each octave, random values
        let mut enc: Vec<u64> = (lo..hi)
            .flat_map(|j| [1u64 << j, (2u64 << j) - 1])
            .collect();
        enc.extend((0..40).map(|_| 1 + prg.ring_element(ring) % ((1 << hi) - 1)));
        let n = enc.len();
        let (x0, x1) = AShare::share(ring, vec![n], &enc, &mut prg).unwrap();
        let p = NewtonParams::default();
        for cfg in [
            NlConfig::default(),
            NlConfig {
                ot_sender: Role::Client,
                ..NlConfig::default()
            },
        ] {
            let fo_r = 8;
            let fo_s = 12;
            let want = recip_cost(n, ring, f, (lo, hi), fo_r, p, cfg).unwrap()
                + rsqrt_cost(n, ring, f, (lo, hi), fo_s, p, cfg).unwrap();
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                let x = if role == Role::Server { &x0 } else { &x1 };
                let r = recip(s, ch, x, f, (lo, hi), fo_r, p).unwrap();
                let q = rsqrt(s, ch, x, f, (lo, hi), fo_s, p).unwrap();
                (r, q)
            });
            let r = FixedPoint::new(ring, fo_r)
                .unwrap()
                .decode_all(&a.0.reconstruct(&b.0).unwrap());
            let q = FixedPoint::new(ring, fo_s)
                .unwrap()
                .decode_all(&a.1.reconstruct(&b.1).unwrap());
            for i in 0..n {
                let x = fx.decode(enc[i]);
                // relative 1e-4 or one output ulp
                let er = (r[i] - 1.0 / x).abs();
                assert!(
                    er <= 1e-4 / x + 1.0 / 256.0,
                    "recip({x}) = {} err {er}",
                    r[i]
                );
                let eq = (q[i] - 1.0 / x.sqrt()).abs();
                assert!(
                    eq <= 1e-4 / x.sqrt() + 1.0 / 4096.0,
                    "rsqrt({x}) = {} err {eq}",
                    q[i]
                );
            }
            assert_eq!(cost.bytes, want.bytes);
            assert!(cost.rounds <= want.rounds);
        }
    }

    #[test]
    fn bad_ranges_are_errors() {
        let ring = Ring::new(24).unwrap();
        let p = NewtonParams::default();
        assert!(Plan::new(Kind::Recip, ring, 12, (5, 5), 12, p).is_err());
        assert!(Plan::new(Kind::Recip, ring, 12, (0, 23), 12, p).is_err());
        // 1/2^-12 = 4096 does not fit 12 output fractional bits in 24 bits
        assert!(Plan::new(Kind::Recip, ring, 12, (0, 20), 12, p).is_err());
    }
}
