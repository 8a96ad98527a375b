//! `c / x` and `c / sqrt(x)` of shared positive fixed-point values with a known range in few
//! flights, for a few values at a time (one per row of a LayerNorm, RMSNorm or SoftMax): the
//! position of the leading bit and the exact mantissa index from one batch of comparisons,
//! then one table lookup per position in each direction giving a line fitted to the function on
//! the mantissa interval. No Newton iteration.
//!
//! # Protocol
//! For `X` (the encoded integer) in `[2^lo, 2^hi)`, shares read in `Z_2^{hi+1}`:
//! 1. one [`millionaire`](crate::nonlinear::millionaire) batch: `c_j = 1{X >= 2^j}` for
//!    `lo < j < hi` (the MSB of `X - 2^j`) and, for every position `p`, the carry `κ_p` of the
//!    shares' low `t_p = p - m` bits; the one-hot position is `e_p = c_p ⊕ c_{p+1}`
//!    (`c_lo = 1`, `c_hi = 0`) and the mantissa index `J_p = (X >> t_p) mod 2^m` is
//!    `(x_0 >> t_p) + (x_1 >> t_p) + κ_p mod 2^m`, exact;
//! 2. per position, a 1-of-`2^{m+3}` table lookup chosen by the party that sent the batch's
//!    last flight with its bits `(J_p share, κ_p share, e_p share, share MSB)`, its peer
//!    offering `e_p (a_{p,J} + round(b_{p,J} x_peer / 2^D) - round(b_{p,J} 2^{hi+1} / 2^D) w)`
//!    (`w` the wrap of the shares, from the two share MSBs) less a fresh pad, and a 1-of-`2^{m+2}`
//!    lookup the other way for `e_p round(b_{p,J} x_own / 2^D)`: the sum over positions is
//!    `a_{p,J} + b_{p,J} X` on the line of `X`'s interval, both lookups in two flights after
//!    the batch (the first goes in the batch's last flight).
//!
//! The line `a + b X` on the interval `I_{p,J} = [2^p + J 2^{p-m}, 2^p + (J+1) 2^{p-m})` is the
//! secant shifted by half its largest deviation (the minimax line of a convex function), so the
//! relative error is at most about `f''/f h^2 / 16` for the interval's relative width
//! `h = 2^-m`: `3/64 4^-m` for `1/sqrt` (`4.6e-5` at `m = 5`) and `1/8 4^-m` for `1/x`
//! (`1.2e-4`), plus three units of `2^-f_out` of rounding ([`TabFn::error_bound`]).
//!
//! # Cost
//! Per value: `hi - lo - 1` comparisons on `hi` bits and `hi - lo` carries (a few bytes each),
//! and `hi - lo` pairs of lookups of `(2^{m+3} + 2^{m+2}) w / 8` bytes for a `w`-bit output:
//! 9.6 KB per value for 54 positions at `m = 5`, `w = 48` (against some 2 KB for the Newton
//! evaluation of [`super::recip`]), in the flights of one comparison plus two. Meant for a few
//! values per call (decode steps); [`tab_eval_cost`] is exact in bytes and flights.
//!
//! Security: semi-honest, 128-bit: the comparisons' and the lookups' (every lookup answer is
//! masked by a fresh uniform pad, the choices by the random OTs).

use crate::nonlinear::{self as nl, Cost, NlConfig, NlSession, Tape};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};

/// Which function of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TabKind {
    /// `c / x`.
    Recip,
    /// `c / sqrt(x)`.
    Rsqrt,
}

/// The public description of one tabulated evaluation.
#[derive(Clone, Debug)]
pub struct TabFn {
    kind: TabKind,
    f_in: u32,
    lo: u32,
    hi: u32,
    f_out: u32,
    scale: f64,
    m: u32,
    out: Ring,
    /// Per position and interval: `(a, b_int, D, wrap)` with the slope `b = b_int / 2^D`.
    lines: Vec<Line>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Line {
    /// Intercept in output units, rounded.
    a: i128,
    /// Slope times `2^d`, rounded.
    b: i128,
    d: u32,
    /// `round(b 2^{hi+1})` (the wrap correction) in output units.
    w: i128,
}

/// Largest mantissa bits: the first lookup has `m + 3` index bits, at most 8.
pub const TAB_MAX_M: u32 = 5;

impl TabFn {
    /// `scale · f(x)` with `f_out` fractional bits in the ring `out`, for `x` with `f_in`
    /// fractional bits whose encoding lies in `[2^lo, 2^hi)`, with `m` mantissa bits.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: TabKind,
        f_in: u32,
        (lo, hi): (u32, u32),
        f_out: u32,
        scale: f64,
        m: u32,
        out: Ring,
    ) -> Result<Self> {
        let bad = |what: String| MpcError::InvalidArgument { what };
        if lo >= hi || hi > 62 || !(1..=TAB_MAX_M).contains(&m) || scale.is_nan() || scale <= 0.0 {
            return Err(bad(format!(
                "tabulated {kind:?}: range [2^{lo}, 2^{hi}) (need lo < hi <= 62), {m} mantissa \
                 bits (1..={TAB_MAX_M}), scale {scale}"
            )));
        }
        let mut t = Self {
            kind,
            f_in,
            lo,
            hi,
            f_out,
            scale,
            m,
            out,
            lines: Vec::new(),
        };
        // the largest output (at X = 2^lo) must fit the output ring with a sign bit to spare
        let top = t.g(2f64.powi(lo as i32));
        if !top.is_finite() || top + 8.0 >= 2f64.powi(out.bits() as i32 - 1) {
            return Err(bad(format!(
                "tabulated {kind:?}: outputs up to {top:.3e} do not fit Z_2^{}",
                out.bits()
            )));
        }
        let l2 = t.cmp_ring_bits();
        for p in lo..hi {
            for j in 0..(1u64 << m) {
                t.lines.push(t.fit(p, j, l2));
            }
        }
        Ok(t)
    }

    /// The function in output units at the encoded integer `x`.
    fn g(&self, x: f64) -> f64 {
        let v = x * 2f64.powi(-(self.f_in as i32));
        let f = match self.kind {
            TabKind::Recip => 1.0 / v,
            TabKind::Rsqrt => 1.0 / v.sqrt(),
        };
        self.scale * f * 2f64.powi(self.f_out as i32)
    }

    /// Bits of the ring the shares are read in (`hi + 1`, at least 16).
    fn cmp_ring_bits(&self) -> u32 {
        (self.hi + 1).max(Ring::MIN_BITS)
    }

    /// The minimax line of the (convex, decreasing) function on interval `j` of position `p`.
    fn fit(&self, p: u32, j: u64, l2: u32) -> Line {
        let (x0, x1) = interval(p, j, self.m);
        let (g0, g1) = (self.g(x0), self.g(x1));
        let b = (g1 - g0) / (x1 - x0);
        // the secant lies above a convex function: shift it down by half the largest gap
        let gap = (0..=64)
            .map(|i| {
                let x = x0 + (x1 - x0) * f64::from(i) / 64.0;
                g0 + b * (x - x0) - self.g(x)
            })
            .fold(0.0, f64::max);
        let a = g0 - b * x0 - gap / 2.0;
        // the slope with about 40 significant bits: |b| 2^d in [2^40, 2^41)
        let d = if b == 0.0 {
            0
        } else {
            (40.0 - b.abs().log2().floor()).clamp(0.0, 110.0) as u32
        };
        let bi = (b * 2f64.powi(d as i32)).round() as i128;
        Line {
            a: a.round() as i128,
            b: bi,
            d,
            w: round_shift(bi << l2, d),
        }
    }

    fn line(&self, p: u32, j: u64) -> Line {
        let idx = (p - self.lo) as usize * (1usize << self.m) + j as usize;
        self.lines.get(idx).copied().unwrap_or_default()
    }

    /// Positions `p` in `[lo, hi)`.
    fn positions(&self) -> usize {
        (self.hi - self.lo) as usize
    }

    /// Low bits of the mantissa split at position `p` (0: no carry).
    fn low_bits(&self, p: u32) -> u32 {
        p.saturating_sub(self.m)
    }

    /// The millionaire groups: (count, bits) of the comparisons and of each position's carry.
    fn groups(&self, n: usize) -> Vec<(usize, u32)> {
        let l2 = self.cmp_ring_bits();
        let mut g = Vec::new();
        if self.hi - self.lo > 1 {
            g.push((n * (self.hi - self.lo - 1) as usize, l2 - 1));
        }
        for p in self.lo..self.hi {
            let t = self.low_bits(p);
            if t > 0 {
                g.push((n, t));
            }
        }
        g
    }

    /// A bound on the error relative to the exact value: the line's (sampled, with margin) and
    /// three units of `2^-f_out` relative to the smallest output.
    pub fn error_bound(&self) -> f64 {
        let rel = match self.kind {
            TabKind::Recip => 0.125,
            TabKind::Rsqrt => 3.0 / 64.0,
        } * 4f64.powi(-(self.m as i32));
        let smallest = self.g(2f64.powi(self.hi as i32));
        1.1 * rel + 3.0 / smallest
    }

    /// The output ring.
    pub fn out(&self) -> Ring {
        self.out
    }
}

/// The interval `[x0, x1)` of mantissa index `j` at position `p` with `m` bits (real-valued).
fn interval(p: u32, j: u64, m: u32) -> (f64, f64) {
    let w = 2f64.powi(p as i32 - m as i32);
    let x0 = 2f64.powi(p as i32) + j as f64 * w;
    (x0, x0 + w)
}

/// `round(v / 2^d)` (ties up), `d < 127`.
fn round_shift(v: i128, d: u32) -> i128 {
    if d == 0 {
        v
    } else {
        (v + (1i128 << (d - 1))) >> d
    }
}

/// `round(b x / 2^d)` for a share `x < 2^64`.
fn scaled(line: &Line, x: u64) -> i128 {
    // |b| < 2^41, x < 2^64: the product fits i128
    round_shift(line.b.saturating_mul(i128::from(x)), line.d)
}

fn to_ring(out: Ring, v: i128) -> u64 {
    out.reduce(v as u64)
}

/// Shares of `scale · f(x)` ([`TabFn`]) for shared `x` (any ring of at least `hi + 1` bits, the
/// encoding in `[2^lo, 2^hi)`), in the ring [`TabFn::out`]. See the module documentation.
/// Cost: [`tab_eval_cost`].
pub fn tab_eval<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f: &TabFn,
) -> Result<AShare> {
    let l2 = f.cmp_ring_bits();
    if x.ring().bits() < l2 {
        return Err(MpcError::InvalidArgument {
            what: format!(
                "tabulated evaluation of values below 2^{} read in Z_2^{}",
                f.hi,
                x.ring().bits()
            ),
        });
    }
    let n = x.len();
    let out = f.out;
    if n == 0 {
        return AShare::new(out, x.shape().to_vec(), Vec::new());
    }
    let cfg = s.config();
    s.reserve(ch, tab_eval_cost(n, f, cfg).cots)?;
    let role = s.role();
    let server = role == Role::Server;
    let r2 = Ring::new(l2)?;
    let xs: Vec<u64> = x.data().iter().map(|&v| r2.reduce(v)).collect();
    let h = r2.mask() >> 1;
    // 1. the comparisons and the carries
    let (lo, hi, m) = (f.lo, f.hi, f.m);
    let mut cmp_in = Vec::with_capacity(n * (hi - lo) as usize);
    let mut cmp_msb = Vec::with_capacity(n * (hi - lo) as usize);
    for j in lo + 1..hi {
        for &v in &xs {
            let d = if server { r2.sub(v, 1u64 << j) } else { v };
            cmp_msb.push(r2.msb(d));
            cmp_in.push(if server { h - (d & h) } else { d & h });
        }
    }
    let mut carry_in: Vec<Vec<u64>> = Vec::new();
    for p in lo..hi {
        let t = f.low_bits(p);
        if t > 0 {
            let tm = (1u64 << t) - 1;
            carry_in.push(
                xs.iter()
                    .map(|&v| if server { tm - (v & tm) } else { v & tm })
                    .collect(),
            );
        }
    }
    let mut groups: Vec<(&[u64], u32)> = Vec::new();
    if hi - lo > 1 {
        groups.push((&cmp_in, l2 - 1));
    }
    let mut ti = lo..hi;
    for c in &carry_in {
        let p = ti.by_ref().find(|&p| f.low_bits(p) > 0).unwrap_or(lo);
        groups.push((c, f.low_bits(p)));
    }
    let (outs, _, _) = nl::millionaire_groups(s, ch, &groups, nl::CmpMode::Lt, 0)?;
    let mut outs = outs.into_iter();
    let cmp_carry = if hi - lo > 1 {
        outs.next().unwrap_or_default()
    } else {
        Vec::new()
    };
    // c_j (j in lo..=hi): 1{X >= 2^j} = ¬MSB(X - 2^j)
    let cbit = |j: u32, i: usize| -> bool {
        if j == lo {
            server
        } else if j >= hi {
            false
        } else {
            let k = (j - lo - 1) as usize * n + i;
            let msb = cmp_carry.get(k).copied().unwrap_or(false)
                ^ cmp_msb.get(k).copied().unwrap_or(false);
            msb ^ server
        }
    };
    let mut kappa: Vec<Vec<bool>> = Vec::with_capacity(f.positions());
    for p in lo..hi {
        if f.low_bits(p) > 0 {
            kappa.push(outs.next().unwrap_or_default());
        } else {
            kappa.push(vec![false; n]);
        }
    }
    let mm = (1u64 << m) - 1;
    // per instance (p, i) at p_index * n + i: (J share, κ share, e share)
    let np = n * f.positions();
    let mut jv = Vec::with_capacity(np);
    let mut kv = Vec::with_capacity(np);
    let mut ev = Vec::with_capacity(np);
    for (pi, p) in (lo..hi).enumerate() {
        let t = f.low_bits(p);
        for (i, &v) in xs.iter().enumerate() {
            let j = if t > 0 {
                (v >> t) & mm
            } else {
                (v << (m - p)) & mm
            };
            jv.push(j);
            kv.push(
                kappa
                    .get(pi)
                    .and_then(|k| k.get(i))
                    .copied()
                    .unwrap_or(false),
            );
            ev.push(cbit(p, i) ^ cbit(p + 1, i));
        }
    }
    let msbs: Vec<bool> = xs.iter().map(|&v| r2.msb(v)).collect();
    // 2. the lookups: the first chosen by the party that sent the batch's last flight
    let groups_n: Vec<(usize, u32)> = f.groups(n);
    let first = nl::millionaire_last_of(cfg, &groups_n).unwrap_or(cfg.ot_sender.peer());
    let line_of = |inst: usize, jj: u64| -> Line {
        let p = lo + (inst / n) as u32;
        f.line(p, jj & mm)
    };
    let index = |inst: usize, with_msb: bool| -> u64 {
        let i = inst % n;
        let mut v = jv.get(inst).copied().unwrap_or(0)
            | (u64::from(kv.get(inst).copied().unwrap_or(false)) << m)
            | (u64::from(ev.get(inst).copied().unwrap_or(false)) << (m + 1));
        if with_msb {
            v |= u64::from(msbs.get(i).copied().unwrap_or(false)) << (m + 2);
        }
        v
    };
    // the peer's entry for the chooser's raw bits v: (J, e, wrap) from both parties' bits
    let decode = |inst: usize, v: u64| -> (u64, bool, bool) {
        let i = inst % n;
        let jo = jv.get(inst).copied().unwrap_or(0);
        let ko = kv.get(inst).copied().unwrap_or(false);
        let eo = ev.get(inst).copied().unwrap_or(false);
        let mo = msbs.get(i).copied().unwrap_or(false);
        let kk = ko ^ ((v >> m) & 1 == 1);
        let jj = (jo + (v & mm) + u64::from(kk)) & mm;
        let e = eo ^ ((v >> (m + 1)) & 1 == 1);
        let w = mo || (v >> (m + 2)) & 1 == 1;
        (jj, e, w)
    };
    let zeros = vec![0u64; np];
    // lookup 1: chooser `first` (bits with its share MSB), its peer offers the intercept, its
    // own slope term and the wrap correction
    let t1 = |inst: usize, v: u64| -> u64 {
        let (jj, e, w) = decode(inst, v);
        if !e {
            return 0;
        }
        let ln = line_of(inst, jj);
        let xo = xs.get(inst % n).copied().unwrap_or(0);
        let val = ln.a + scaled(&ln, xo) - if w { ln.w } else { 0 };
        to_ring(out, val)
    };
    // lookup 2: chooser the peer, `first` offers its own slope term
    let t2 = |inst: usize, v: u64| -> u64 {
        let (jj, e, _) = decode(inst, v);
        if !e {
            return 0;
        }
        let ln = line_of(inst, jj);
        let xo = xs.get(inst % n).copied().unwrap_or(0);
        to_ring(out, scaled(&ln, xo))
    };
    let me_first = role == first;
    let idx1: Vec<u64> = if me_first {
        (0..np).map(|k| index(k, true)).collect()
    } else {
        zeros.clone()
    };
    let y1 = s.with_ot_sender(first.peer(), |s| {
        nl::lut(
            s,
            ch,
            &idx1,
            m + 3,
            out,
            (!me_first).then_some(&t1 as nl::LutTable<'_>),
        )
    })?;
    let idx2: Vec<u64> = if me_first {
        zeros
    } else {
        (0..np).map(|k| index(k, false)).collect()
    };
    let y2 = s.with_ot_sender(first, |s| {
        nl::lut(
            s,
            ch,
            &idx2,
            m + 2,
            out,
            me_first.then_some(&t2 as nl::LutTable<'_>),
        )
    })?;
    let mut res = vec![0u64; n];
    for (k, (&a, &b)) in y1.data().iter().zip(y2.data()).enumerate() {
        if let Some(r) = res.get_mut(k % n) {
            *r = out.add(*r, out.add(a, b));
        }
    }
    AShare::new(out, x.shape().to_vec(), res)
}

/// Exact bytes and flights of [`tab_eval`] on `n` values.
pub fn tab_eval_cost(n: usize, f: &TabFn, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_tab_eval(&mut t, n, f, cfg);
    t.cost()
}

/// [`tab_eval_cost`] on a tape.
pub fn tape_tab_eval(t: &mut Tape, n: usize, f: &TabFn, cfg: NlConfig) {
    if n == 0 {
        return;
    }
    nl::tape_millionaire_groups(t, cfg, &f.groups(n), nl::CmpMode::Lt);
    let np = n * f.positions();
    let c1 = t.chain(cfg);
    nl::tape_lut(t, np, f.m + 3, f.out, c1);
    let c2 = t.chain(cfg);
    nl::tape_lut(t, np, f.m + 2, f.out, c2);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nonlinear::CotCount;
    use crate::{FixedPoint, Prg};
    use duet_transport::MemoryChannel;

    fn run2<T: Send>(
        cfg: NlConfig,
        need: CotCount,
        f: impl Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        crate::nonlinear::run_measured(13, cfg, need, f)
    }

    /// Every position (both ends of each octave and random values), both functions, both OT
    /// directions: relative error within the bound, bytes and flights as predicted.
    #[test]
    fn tabulated_recip_and_rsqrt_over_the_whole_range() {
        let mut prg = Prg::from_seed([17; 32]);
        let ring = Ring::new(40).unwrap();
        let f_in = 12;
        let (lo, hi) = (2u32, 36u32);
        let mut enc: Vec<u64> = (lo..hi)
            .flat_map(|j| [1u64 << j, (2u64 << j) - 1, (3u64 << j) / 2])
            .collect();
        enc.extend((0..30).map(|_| (1 << lo) + prg.ring_element(ring) % ((1 << hi) - (1 << lo))));
        let n = enc.len();
        let (x0, x1) = AShare::share(ring, vec![n], &enc, &mut prg).unwrap();
        let out = Ring::new(48).unwrap();
        let fr = TabFn::new(TabKind::Recip, f_in, (lo, hi), 20, 3.0, 5, out).unwrap();
        let fs = TabFn::new(TabKind::Rsqrt, f_in, (lo, hi), 24, 24.0, 5, out).unwrap();
        for cfg in [
            NlConfig::default(),
            NlConfig {
                ot_sender: Role::Client,
                ..NlConfig::default()
            },
        ] {
            let want = tab_eval_cost(n, &fr, cfg) + tab_eval_cost(n, &fs, cfg);
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                let x = if role == Role::Server { &x0 } else { &x1 };
                let r = tab_eval(s, ch, x, &fr).unwrap();
                let q = tab_eval(s, ch, x, &fs).unwrap();
                (r, q)
            });
            let dr = FixedPoint::new(out, 20)
                .unwrap()
                .decode_all(&a.0.reconstruct(&b.0).unwrap());
            let dq = FixedPoint::new(out, 24)
                .unwrap()
                .decode_all(&a.1.reconstruct(&b.1).unwrap());
            let fx = FixedPoint::new(ring, f_in).unwrap();
            let (mut wr, mut wq) = (0f64, 0f64);
            for i in 0..n {
                let x = fx.decode(enc[i]);
                let er = (dr[i] * x / 3.0 - 1.0).abs();
                let eq = (dq[i] * x.sqrt() / 24.0 - 1.0).abs();
                assert!(
                    er <= fr.error_bound(),
                    "recip({x}) = {} rel err {er:.2e}",
                    dr[i]
                );
                assert!(
                    eq <= fs.error_bound(),
                    "rsqrt({x}) = {} rel err {eq:.2e}",
                    dq[i]
                );
                wr = wr.max(er);
                wq = wq.max(eq);
            }
            eprintln!(
                "{cfg:?}: recip {wr:.2e} (bound {:.2e}), rsqrt {wq:.2e} (bound {:.2e}), {} B, {} flights",
                fr.error_bound(),
                fs.error_bound(),
                cost.bytes,
                cost.rounds
            );
            // two calls back to back: bytes add exactly, flights may merge at the seam
            assert_eq!(cost.bytes, want.bytes);
            assert!(cost.rounds <= want.rounds);
        }
    }

    /// One call on its own (a decode step's row: one value): bytes and flights exactly as
    /// [`tab_eval_cost`] (one comparison batch plus two), the value within the bound.
    #[test]
    fn one_call_costs_exactly_its_formula() {
        let mut prg = Prg::from_seed([19; 32]);
        let ring = Ring::new(44).unwrap();
        let out = Ring::new(48).unwrap();
        let f = TabFn::new(TabKind::Rsqrt, 12, (3, 40), 24, 24.0, 5, out).unwrap();
        for (enc, ot_sender) in [(8u64, Role::Server), ((1u64 << 40) - 1, Role::Client)] {
            let cfg = NlConfig {
                ot_sender,
                ..NlConfig::default()
            };
            let (x0, x1) = AShare::share(ring, vec![1], &[enc], &mut prg).unwrap();
            let want = tab_eval_cost(1, &f, cfg);
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                tab_eval(s, ch, if role == Role::Server { &x0 } else { &x1 }, &f).unwrap()
            });
            assert_eq!(cost.bytes, want.bytes, "{cfg:?}");
            assert_eq!(cost.rounds, want.rounds, "{cfg:?}");
            let mut cmp = Tape::with_config(cfg);
            nl::tape_millionaire_groups(&mut cmp, cfg, &f.groups(1), nl::CmpMode::Lt);
            assert_eq!(want.rounds, cmp.cost().rounds + 2);
            let y = FixedPoint::new(out, 24)
                .unwrap()
                .decode(a.reconstruct(&b).unwrap()[0]);
            let x = FixedPoint::new(ring, 12).unwrap().decode(enc);
            let e = (y * x.sqrt() / 24.0 - 1.0).abs();
            assert!(e <= f.error_bound(), "rsqrt({x}) = {y}, rel err {e:.2e}");
        }
    }
}
