//! Polynomials with public coefficients on shared fixed-point values, the cheap building
//! blocks they need (a square with one cross term, truncation and ring extension of values whose
//! sign is known), and [`Exec`], the executor abstraction that lets one piece of operator code
//! run on shares ([`ShareExec`]), count its exact traffic ([`CostExec`]) or check every
//! intermediate against its ring on plaintext samples ([`BoundsExec`]).
//!
//! # Evaluation plans ([`PolyPlan`])
//! * [`PolyPlan::Powers`]: the powers `x^2 .. x^d` that have a non-zero coefficient (and what
//!   they need) by repeated squaring: `x^{2k} = (x^k)^2` is a [`square`] (one cross term),
//!   `x^{2k+1} = x^k x^{k+1}` a Gilboa product (two cross terms), all powers of one level in one
//!   batch; then `sum a_k x^k` locally and one truncation. Several polynomials on the same `x`
//!   share their powers ([`eval_many`]): this is what a piecewise approximation needs.
//! * [`PolyPlan::QuarticBySquares`]: a degree-4 polynomial as
//!   `a4 (x^2 + p x + q)^2 + c2 x^2 + c1 x + c0` (Knuth's adaptation of coefficients with
//!   `p = a3 / (2 a4)` and `q` centring the inner quadratic on the domain): two squares, no
//!   product, i.e. two cross terms instead of the four of the powers plan (`x^2`, `x^3`, `x^4`).
//! * [`PolyPlan::SexticBySquares`]: degree 6 as `a6 (x^3 + al x^2 + be x + ga)^2 + cubic`:
//!   `x^2` (square), `x^3` (product) and one square: four cross terms instead of seven.
//!
//! Horner's rule needs `d` sequential full products (each followed by a truncation), and
//! Paterson-Stockmeyer saves products only from degree 8 on, so neither is used: the plans above
//! need the fewest cross terms for the degrees our approximations use (at most 6).
//!
//! # Truncations
//! A product of two values with `f` fractional bits has `2f`; it is truncated back with
//! [`TruncMode::KnownMsb`] (one correlated OT of `f` bits per element, error at most one ulp)
//! because the sign is known: squares are non-negative, and any other value whose magnitude is
//! bounded on the polynomial's domain is made non-negative by a public offset first
//! ([`trunc_bounded`]). Outside the domain the result is an arbitrary (but well-defined) ring
//! value: callers select it away (see [`super::piecewise`]).
//!
//! # Rings
//! Every intermediate must fit the ring of `x` on the domain: squares below `2^{l-1}`, a value
//! of magnitude below `2^b` with its offset `2^b` below `2^{l-1}` (`l >= b + 2`), and the final
//! sum, held at `frac + fc` fractional bits (`fc >= coeff_frac`, see [`Poly`]), likewise. The
//! bounds are analytic (the domain, the rounding of the coefficients and the truncation errors
//! propagated through the powers), fixed before any traffic: [`Poly::eval`] and
//! [`eval_many_in`] refuse a narrower ring with [`MpcError::RingTooNarrow`] instead of
//! returning wrong values, and [`Poly::min_ring_bits`] (or [`min_ring_bits_many`]) gives the
//! narrowest ring that works. A [`BoundsExec`] run on samples checks the same values
//! empirically.
//!
//! Security: semi-honest, 128-bit, inherited from the OTs of [`crate::nonlinear`]; every
//! building block outputs fresh additive shares and reveals nothing.

use crate::nonlinear::{self as nl, BShare, Cost, NlConfig, NlSession, Tape, TruncMode};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};

fn bad(what: impl Into<String>) -> MpcError {
    MpcError::InvalidArgument { what: what.into() }
}

// ---------------------------------------------------------------------------------------------
// Square and known-sign extension (new protocols on the crate's OT plumbing)
// ---------------------------------------------------------------------------------------------

/// Element-wise square `x^2 mod 2^l` of a shared tensor, exact.
///
/// Protocol: `x^2 = x0^2 + x1^2 + 2 x0 x1`; the only cross term `x_S x_R` is one Gilboa
/// product in one direction: for each bit `k` of the OT receiver's share the OT sender offers
/// the correlation `x_S mod 2^{l-k}` in a correlated OT over `Z_2^{l-k}` (CrypTFlow2's width
/// trick). Half the COTs of [`nl::mul`].
/// Security: semi-honest, 128-bit (the receiver's choices are hidden by the OT, the sender's
/// correlation by the OT pads). Cost: [`square_cost`]: `l` COTs of widths `l..1` per element,
/// 2 flights.
pub fn square<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare) -> Result<AShare> {
    let ring = x.ring();
    let l = ring.bits() as usize;
    if x.is_empty() {
        return Ok(x.clone());
    }
    s.reserve(ch, square_cost(x.len(), ring, s.config()).cots)?;
    let width = move |j: usize| (l - j % l) as u32;
    let cross: Vec<u64> = if s.role() == s.config().ot_sender {
        let corr: Vec<u64> = x
            .data()
            .iter()
            .flat_map(|&v| (0..l).map(move |k| v & (ring.mask() >> k)))
            .collect();
        let a = s.cot_send(ch, &corr, width)?;
        a.chunks(l)
            .map(|ac| {
                ring.neg(
                    ac.iter()
                        .enumerate()
                        .fold(0u64, |acc, (k, &a)| acc.wrapping_add(a << k)),
                )
            })
            .collect()
    } else {
        let choices: Vec<bool> = x
            .data()
            .iter()
            .flat_map(|&v| (0..l).map(move |k| (v >> k) & 1 == 1))
            .collect();
        let y = s.cot_recv(ch, &choices, width)?;
        y.chunks(l)
            .map(|yc| {
                ring.reduce(
                    yc.iter()
                        .enumerate()
                        .fold(0u64, |acc, (k, &y)| acc.wrapping_add(y << k)),
                )
            })
            .collect()
    };
    let out = x
        .data()
        .iter()
        .zip(&cross)
        .map(|(&v, &c)| ring.add(ring.mul(v, v), ring.add(c, c)))
        .collect();
    AShare::new(ring, x.shape().to_vec(), out)
}

/// Exact cost of [`square`] on `n` elements.
pub fn square_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_square(&mut t, n, ring, cfg);
    t.cost()
}

/// [`square_cost`] on a tape.
pub fn tape_square(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    let l = ring.bits() as usize;
    NlSession::tape_cot(t, cfg.ot_sender, n * l, l, |j| (l - j % l) as u32);
}

/// Ring extension `Z_2^{l1} -> Z_2^{l2}` (`l2 > l1`) of values known to lie in
/// `[0, 2^{l1-1})`.
///
/// Protocol: `x = x0 + x1 - w 2^{l1}` and, because the MSB of `x` is 0, the wrap is
/// `w = m0 ∨ m1` (the share MSBs); one correlated OT over `Z_2^{l2-l1}` (sender correlation
/// `g(m_S, 1) - g(m_S, 0)`, receiver choice `m_R`) shares `-w`. Exact, no millionaire (compare
/// [`nl::extend`]). Security: semi-honest, 128-bit. Cost: [`extend_nonneg_cost`]: one COT of
/// `l2 - l1` bits per element, 2 flights.
pub fn extend_nonneg<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    to: Ring,
) -> Result<AShare> {
    let from = x.ring();
    let (l1, l2) = (from.bits(), to.bits());
    if l2 <= l1 {
        return nl::reduce(x, to);
    }
    if x.is_empty() {
        return AShare::new(to, x.shape().to_vec(), Vec::new());
    }
    s.reserve(ch, extend_nonneg_cost(x.len(), from, to, s.config()).cots)?;
    let dw = l2 - l1;
    let dm = to.mask() >> l1;
    let g = move |a: bool, b: bool| u64::from(a || b).wrapping_neg() & dm;
    let msbs: Vec<bool> = x.data().iter().map(|&v| from.msb(v)).collect();
    let share: Vec<u64> = if s.role() == s.config().ot_sender {
        let corr: Vec<u64> = msbs
            .iter()
            .map(|&m| g(m, true).wrapping_sub(g(m, false)) & dm)
            .collect();
        let a = s.cot_send(ch, &corr, |_| dw)?;
        msbs.iter()
            .zip(&a)
            .map(|(&m, &a)| g(m, false).wrapping_sub(a) & dm)
            .collect()
    } else {
        s.cot_recv(ch, &msbs, |_| dw)?
    };
    let out = x
        .data()
        .iter()
        .zip(share)
        .map(|(&v, sh)| to.add(v, to.reduce(sh << l1)))
        .collect();
    AShare::new(to, x.shape().to_vec(), out)
}

/// Exact cost of [`extend_nonneg`] on `n` elements.
pub fn extend_nonneg_cost(n: usize, from: Ring, to: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_extend_nonneg(&mut t, n, from, to, cfg);
    t.cost()
}

/// [`extend_nonneg_cost`] on a tape.
pub fn tape_extend_nonneg(t: &mut Tape, n: usize, from: Ring, to: Ring, cfg: NlConfig) {
    if n == 0 || to.bits() <= from.bits() {
        return;
    }
    let dw = to.bits() - from.bits();
    NlSession::tape_cot(t, cfg.ot_sender, n, 1, |_| dw);
}

// ---------------------------------------------------------------------------------------------
// The executor abstraction
// ---------------------------------------------------------------------------------------------

/// What operator code needs from the two-party layer, batched over tensors.
///
/// Operator code written once against this trait runs on shares ([`ShareExec`]), predicts its
/// exact traffic ([`CostExec`]: bytes are exact because the same batches are costed; rounds are
/// the plain sum of the batches' flights, an upper bound) and checks every intermediate against
/// its ring on plaintext samples ([`BoundsExec`]). Batched calls take several tensors of one ring
/// and run them as one protocol call.
pub trait Exec {
    /// A shared tensor (or its stand-in).
    type T: Clone;
    /// A shared bit vector (or its stand-in).
    type B: Clone;
    /// The ring of a tensor.
    fn ring_of(&self, t: &Self::T) -> Ring;
    /// `x^2` ([`square`]).
    fn square(&mut self, xs: &[&Self::T]) -> Result<Vec<Self::T>>;
    /// `x y` ([`nl::mul`]).
    fn mul(&mut self, xs: &[&Self::T], ys: &[&Self::T]) -> Result<Vec<Self::T>>;
    /// `x >> f` for `x` in `[0, 2^{l-1})` ([`TruncMode::KnownMsb`]`(false)`, error at most one
    /// ulp).
    fn trunc_nonneg(&mut self, xs: &[&Self::T], f: u32) -> Result<Vec<Self::T>>;
    /// Shared MSBs (`1{x < 0}`) ([`nl::msb`]).
    fn msb(&mut self, xs: &[&Self::T]) -> Result<Vec<Self::B>>;
    /// `b x` ([`nl::mux`]).
    fn mux(&mut self, bs: &[&Self::B], xs: &[&Self::T]) -> Result<Vec<Self::T>>;
    /// Extension of values in `[0, 2^{l-1})` to a wider ring ([`extend_nonneg`]).
    fn extend_nonneg(&mut self, x: &Self::T, to: Ring) -> Result<Self::T>;
    /// `¬b` (local).
    fn not(&self, b: &Self::B) -> Self::B;
    /// `sum c_i x_i + c` with public integers (local; all `x_i` in one ring).
    fn lin(&mut self, terms: &[(i64, &Self::T)], c: i64) -> Result<Self::T>;
    /// `x mod 2^{l'}` for a narrower ring (local, exact when the value fits).
    fn reduce(&mut self, x: &Self::T, to: Ring) -> Result<Self::T>;
}

fn one_ring<T>(ring_of: impl Fn(&T) -> Ring, xs: &[&T]) -> Result<Option<Ring>> {
    let mut r = None;
    for x in xs {
        let rx = ring_of(x);
        if r.is_some_and(|r| r != rx) {
            return Err(MpcError::ShapeMismatch {
                what: "a batch mixes rings".into(),
            });
        }
        r = Some(rx);
    }
    Ok(r)
}

/// [`Exec`] on real shares over a channel.
///
/// Every step takes as its OT sender the peer of the party that sent the previous step's last
/// flight ([`Tape::chain`], replayed on a tape of the steps so far), so that consecutive steps
/// share a flight; [`CostExec`] replays the same choices.
pub struct ShareExec<'a, C: Channel> {
    s: &'a mut NlSession,
    ch: &'a mut C,
    base: NlConfig,
    tp: Tape,
}

impl<'a, C: Channel> ShareExec<'a, C> {
    /// Wraps a session and its channel.
    pub fn new(s: &'a mut NlSession, ch: &'a mut C) -> Self {
        let base = s.config();
        Self {
            s,
            ch,
            base,
            tp: Tape::with_config(base),
        }
    }

    /// The configuration of the next step (see [`Tape::chain`]).
    fn next(&self) -> NlConfig {
        self.tp.chain(self.base)
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.s.role()
    }
}

/// Shapes and lengths of the tensors of a batch.
type Parts = Vec<(Vec<usize>, usize)>;

fn concat(xs: &[&AShare]) -> Result<(AShare, Parts)> {
    let ring = one_ring(AShare::ring, xs)?.unwrap_or(Ring::z64());
    let mut data = Vec::with_capacity(xs.iter().map(|x| x.len()).sum());
    let mut parts = Vec::with_capacity(xs.len());
    for x in xs {
        data.extend_from_slice(x.data());
        parts.push((x.shape().to_vec(), x.len()));
    }
    let n = data.len();
    Ok((AShare::new(ring, vec![n], data)?, parts))
}

fn split(all: AShare, parts: &[(Vec<usize>, usize)]) -> Result<Vec<AShare>> {
    let ring = all.ring();
    let mut it = all.into_data().into_iter();
    parts
        .iter()
        .map(|(shape, n)| AShare::new(ring, shape.clone(), it.by_ref().take(*n).collect()))
        .collect()
}

fn concat_bits(bs: &[&BShare]) -> BShare {
    let bits: Vec<bool> = bs.iter().flat_map(|b| b.to_bits()).collect();
    BShare::from_bits(&bits)
}

impl<C: Channel> Exec for ShareExec<'_, C> {
    type T = AShare;
    type B = BShare;

    fn ring_of(&self, t: &AShare) -> Ring {
        t.ring()
    }

    fn square(&mut self, xs: &[&AShare]) -> Result<Vec<AShare>> {
        let (all, parts) = concat(xs)?;
        let c = self.next();
        let ch = &mut *self.ch;
        let y = self
            .s
            .with_ot_sender(c.ot_sender, |s| square(s, ch, &all))?;
        tape_square(&mut self.tp, all.len(), all.ring(), c);
        split(y, &parts)
    }

    fn mul(&mut self, xs: &[&AShare], ys: &[&AShare]) -> Result<Vec<AShare>> {
        let (a, parts) = concat(xs)?;
        let (b, _) = concat(ys)?;
        let c = self.next();
        let ch = &mut *self.ch;
        let y = self
            .s
            .with_ot_sender(c.ot_sender, |s| nl::mul(s, ch, &a, &b))?;
        nl::tape_mul(&mut self.tp, a.len(), a.ring(), c);
        split(y, &parts)
    }

    fn trunc_nonneg(&mut self, xs: &[&AShare], f: u32) -> Result<Vec<AShare>> {
        let (a, parts) = concat(xs)?;
        let c = self.next();
        let ch = &mut *self.ch;
        let y = self.s.with_ot_sender(c.ot_sender, |s| {
            nl::trunc(s, ch, &a, f, TruncMode::KnownMsb(false))
        })?;
        nl::tape_trunc(
            &mut self.tp,
            a.len(),
            a.ring(),
            f,
            TruncMode::KnownMsb(false),
            c,
        );
        split(y, &parts)
    }

    fn msb(&mut self, xs: &[&AShare]) -> Result<Vec<BShare>> {
        let (a, parts) = concat(xs)?;
        let c = self.next();
        let ch = &mut *self.ch;
        let bits = self
            .s
            .with_ot_sender(c.ot_sender, |s| nl::msb(s, ch, &a))?
            .to_bits();
        nl::tape_msb(&mut self.tp, a.len(), a.ring(), c);
        let mut it = bits.into_iter();
        Ok(parts
            .iter()
            .map(|(_, n)| BShare::from_bits(&it.by_ref().take(*n).collect::<Vec<_>>()))
            .collect())
    }

    fn mux(&mut self, bs: &[&BShare], xs: &[&AShare]) -> Result<Vec<AShare>> {
        let (a, parts) = concat(xs)?;
        let b = concat_bits(bs);
        let c = self.next();
        let ch = &mut *self.ch;
        let y = self
            .s
            .with_ot_sender(c.ot_sender, |s| nl::mux(s, ch, &b, &a))?;
        nl::tape_mux(&mut self.tp, a.len(), a.ring(), c);
        split(y, &parts)
    }

    fn extend_nonneg(&mut self, x: &AShare, to: Ring) -> Result<AShare> {
        let c = self.next();
        let ch = &mut *self.ch;
        let y = self
            .s
            .with_ot_sender(c.ot_sender, |s| extend_nonneg(s, ch, x, to))?;
        tape_extend_nonneg(&mut self.tp, x.len(), x.ring(), to, c);
        Ok(y)
    }

    fn not(&self, b: &BShare) -> BShare {
        b.not(self.s.role())
    }

    fn lin(&mut self, terms: &[(i64, &AShare)], c: i64) -> Result<AShare> {
        let first = terms
            .first()
            .ok_or_else(|| bad("linear combination of no terms"))?
            .1;
        let ring = first.ring();
        let mut acc = vec![0u64; first.len()];
        for (k, t) in terms {
            if t.ring() != ring || t.len() != acc.len() {
                return Err(MpcError::ShapeMismatch {
                    what: "linear combination of different tensors".into(),
                });
            }
            let k = ring.from_i64(*k);
            for (a, &v) in acc.iter_mut().zip(t.data()) {
                *a = ring.add(*a, ring.mul(k, v));
            }
        }
        if self.s.role() == Role::Server {
            let c = ring.from_i64(c);
            for a in acc.iter_mut() {
                *a = ring.add(*a, c);
            }
        }
        AShare::new(ring, first.shape().to_vec(), acc)
    }

    fn reduce(&mut self, x: &AShare, to: Ring) -> Result<AShare> {
        nl::reduce(x, to)
    }
}

/// A tensor stand-in for [`CostExec`]: ring and element count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    /// Ring.
    pub ring: Ring,
    /// Elements.
    pub n: usize,
}

/// [`Exec`] that replays every batch on one [`Tape`]: bytes exact, and flights exact for the
/// steps' composition (each step's direction chosen as [`ShareExec`] chooses it).
#[derive(Clone, Debug)]
pub struct CostExec {
    cfg: NlConfig,
    tape: Tape,
}

impl CostExec {
    /// A fresh counter for configuration `cfg`.
    pub fn new(cfg: NlConfig) -> Self {
        Self {
            cfg,
            tape: Tape::with_config(cfg),
        }
    }

    /// The cost so far.
    pub fn cost(&self) -> Cost {
        self.tape.cost()
    }

    /// The configuration of the next step (see [`Tape::chain`]).
    fn next(&self) -> NlConfig {
        self.tape.chain(self.cfg)
    }

    fn batch(xs: &[&Sym]) -> Result<(Ring, usize)> {
        let ring = one_ring(|s: &Sym| s.ring, xs)?.unwrap_or(Ring::z64());
        Ok((ring, xs.iter().map(|x| x.n).sum()))
    }
}

impl Exec for CostExec {
    type T = Sym;
    type B = usize;

    fn ring_of(&self, t: &Sym) -> Ring {
        t.ring
    }

    fn square(&mut self, xs: &[&Sym]) -> Result<Vec<Sym>> {
        let (r, n) = Self::batch(xs)?;
        let c = self.next();
        tape_square(&mut self.tape, n, r, c);
        Ok(xs.iter().map(|x| **x).collect())
    }

    fn mul(&mut self, xs: &[&Sym], ys: &[&Sym]) -> Result<Vec<Sym>> {
        let (r, n) = Self::batch(xs)?;
        let (r2, n2) = Self::batch(ys)?;
        if r != r2 || n != n2 {
            return Err(MpcError::ShapeMismatch {
                what: "product of different tensors".into(),
            });
        }
        let c = self.next();
        nl::tape_mul(&mut self.tape, n, r, c);
        Ok(xs.iter().map(|x| **x).collect())
    }

    fn trunc_nonneg(&mut self, xs: &[&Sym], f: u32) -> Result<Vec<Sym>> {
        let (r, n) = Self::batch(xs)?;
        let c = self.next();
        nl::tape_trunc(&mut self.tape, n, r, f, TruncMode::KnownMsb(false), c);
        Ok(xs.iter().map(|x| **x).collect())
    }

    fn msb(&mut self, xs: &[&Sym]) -> Result<Vec<usize>> {
        let (r, n) = Self::batch(xs)?;
        let c = self.next();
        nl::tape_msb(&mut self.tape, n, r, c);
        Ok(xs.iter().map(|x| x.n).collect())
    }

    fn mux(&mut self, bs: &[&usize], xs: &[&Sym]) -> Result<Vec<Sym>> {
        let (r, n) = Self::batch(xs)?;
        if bs.iter().copied().sum::<usize>() != n {
            return Err(MpcError::ShapeMismatch {
                what: "mux of different lengths".into(),
            });
        }
        let c = self.next();
        nl::tape_mux(&mut self.tape, n, r, c);
        Ok(xs.iter().map(|x| **x).collect())
    }

    fn extend_nonneg(&mut self, x: &Sym, to: Ring) -> Result<Sym> {
        let c = self.next();
        tape_extend_nonneg(&mut self.tape, x.n, x.ring, to, c);
        Ok(Sym { ring: to, n: x.n })
    }

    fn not(&self, b: &usize) -> usize {
        *b
    }

    fn lin(&mut self, terms: &[(i64, &Sym)], _c: i64) -> Result<Sym> {
        let first = *terms
            .first()
            .ok_or_else(|| bad("linear combination of no terms"))?
            .1;
        if terms.iter().any(|(_, t)| **t != first) {
            return Err(MpcError::ShapeMismatch {
                what: "linear combination of different tensors".into(),
            });
        }
        Ok(first)
    }

    fn reduce(&mut self, x: &Sym, to: Ring) -> Result<Sym> {
        if to.bits() > x.ring.bits() {
            return Err(bad("reduce to a wider ring"));
        }
        Ok(Sym { ring: to, n: x.n })
    }
}

/// A tensor stand-in for [`BoundsExec`]: plaintext values in ring units (`value * 2^frac`,
/// held exactly as `f64` integers) and their ring.
#[derive(Clone, Debug, PartialEq)]
pub struct Plain {
    /// Ring.
    pub ring: Ring,
    /// Values (signed integers).
    pub v: Vec<f64>,
}

/// [`Exec`] on plaintext integers that records every value that would not fit its ring (or
/// that violates a known-sign precondition): run operator code over samples of its domain to
/// check (or size) its rings. Truncation is the exact floor (the secure one may be one less).
#[derive(Clone, Debug, Default)]
pub struct BoundsExec {
    violations: Vec<String>,
    max_bits: u32,
}

fn fits(ring: Ring, v: f64) -> bool {
    let h = (1u128 << (ring.bits() - 1)) as f64;
    v >= -h && v < h
}

fn bits_of(v: f64) -> u32 {
    // bits of a signed integer of magnitude |v| (sign included)
    let a = v.abs();
    let mut b = 1;
    while b < 127 && (1u128 << (b - 1)) as f64 <= a {
        b += 1;
    }
    b
}

impl BoundsExec {
    /// A fresh checker.
    pub fn new() -> Self {
        Self::default()
    }

    /// What went out of range (empty when everything fits).
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// The widest signed value seen, in bits (the smallest ring that would hold everything).
    pub fn max_bits(&self) -> u32 {
        self.max_bits
    }

    fn record(&mut self, what: &str, t: &Plain) {
        for &v in &t.v {
            self.max_bits = self.max_bits.max(bits_of(v));
            if !fits(t.ring, v) {
                if self.violations.len() < 16 {
                    self.violations
                        .push(format!("{what}: {v} does not fit Z_2^{}", t.ring.bits()));
                }
                break;
            }
        }
    }

    fn out(&mut self, what: &str, t: Plain) -> Plain {
        self.record(what, &t);
        t
    }
}

impl Exec for BoundsExec {
    type T = Plain;
    type B = Vec<bool>;

    fn ring_of(&self, t: &Plain) -> Ring {
        t.ring
    }

    fn square(&mut self, xs: &[&Plain]) -> Result<Vec<Plain>> {
        one_ring(|p: &Plain| p.ring, xs)?;
        Ok(xs
            .iter()
            .map(|x| {
                let t = Plain {
                    ring: x.ring,
                    v: x.v.iter().map(|v| v * v).collect(),
                };
                self.out("square", t)
            })
            .collect())
    }

    fn mul(&mut self, xs: &[&Plain], ys: &[&Plain]) -> Result<Vec<Plain>> {
        one_ring(|p: &Plain| p.ring, xs)?;
        xs.iter()
            .zip(ys)
            .map(|(x, y)| {
                if x.v.len() != y.v.len() || x.ring != y.ring {
                    return Err(MpcError::ShapeMismatch {
                        what: "product of different tensors".into(),
                    });
                }
                let t = Plain {
                    ring: x.ring,
                    v: x.v.iter().zip(&y.v).map(|(a, b)| a * b).collect(),
                };
                Ok(self.out("product", t))
            })
            .collect()
    }

    fn trunc_nonneg(&mut self, xs: &[&Plain], f: u32) -> Result<Vec<Plain>> {
        one_ring(|p: &Plain| p.ring, xs)?;
        let d = (1u64 << f) as f64;
        Ok(xs
            .iter()
            .map(|x| {
                if x.v.iter().any(|&v| v < 0.0) && self.violations.len() < 16 {
                    self.violations
                        .push("truncation with a known MSB of a negative value".into());
                }
                let t = Plain {
                    ring: x.ring,
                    v: x.v.iter().map(|v| (v / d).floor()).collect(),
                };
                self.out("truncation", t)
            })
            .collect())
    }

    fn msb(&mut self, xs: &[&Plain]) -> Result<Vec<Vec<bool>>> {
        Ok(xs
            .iter()
            .map(|x| x.v.iter().map(|&v| v < 0.0).collect())
            .collect())
    }

    fn mux(&mut self, bs: &[&Vec<bool>], xs: &[&Plain]) -> Result<Vec<Plain>> {
        xs.iter()
            .zip(bs)
            .map(|(x, b)| {
                if b.len() != x.v.len() {
                    return Err(MpcError::ShapeMismatch {
                        what: "mux of different lengths".into(),
                    });
                }
                Ok(Plain {
                    ring: x.ring,
                    v: x.v
                        .iter()
                        .zip(b.iter())
                        .map(|(&v, &b)| if b { v } else { 0.0 })
                        .collect(),
                })
            })
            .collect()
    }

    fn extend_nonneg(&mut self, x: &Plain, to: Ring) -> Result<Plain> {
        if x.v.iter().any(|&v| v < 0.0) && self.violations.len() < 16 {
            self.violations
                .push("extension with a known MSB of a negative value".into());
        }
        Ok(self.out(
            "extension",
            Plain {
                ring: to,
                v: x.v.clone(),
            },
        ))
    }

    fn not(&self, b: &Vec<bool>) -> Vec<bool> {
        b.iter().map(|x| !x).collect()
    }

    fn lin(&mut self, terms: &[(i64, &Plain)], c: i64) -> Result<Plain> {
        let first = terms
            .first()
            .ok_or_else(|| bad("linear combination of no terms"))?
            .1;
        let mut acc = vec![c as f64; first.v.len()];
        for (k, t) in terms {
            if t.v.len() != acc.len() || t.ring != first.ring {
                return Err(MpcError::ShapeMismatch {
                    what: "linear combination of different tensors".into(),
                });
            }
            for (a, &v) in acc.iter_mut().zip(&t.v) {
                *a += *k as f64 * v;
            }
        }
        let ring = first.ring;
        Ok(self.out("linear combination", Plain { ring, v: acc }))
    }

    fn reduce(&mut self, x: &Plain, to: Ring) -> Result<Plain> {
        Ok(self.out(
            "reduction",
            Plain {
                ring: to,
                v: x.v.clone(),
            },
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Ring requirements and bounded truncation
// ---------------------------------------------------------------------------------------------

/// What a computation needs of its ring: the narrowest width and the value that sets it.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Need {
    /// Narrowest width (0: anything).
    pub(crate) bits: u32,
    /// The value that sets it.
    pub(crate) what: String,
}

impl Need {
    /// Adds a requirement; keeps the widest.
    pub(crate) fn add(&mut self, bits: u32, what: impl FnOnce() -> String) {
        if bits > self.bits {
            self.bits = bits;
            self.what = what();
        }
    }

    /// Adds all of `other`'s requirement.
    pub(crate) fn join(&mut self, other: Need) {
        if other.bits > self.bits {
            *self = other;
        }
    }

    /// Refuses a ring narrower than the requirement ([`MpcError::RingTooNarrow`]).
    pub(crate) fn check(&self, ring: Ring) -> Result<()> {
        if ring.bits() < self.bits {
            return Err(MpcError::RingTooNarrow {
                bits: ring.bits(),
                need: self.bits,
                what: self.what.clone(),
            });
        }
        Ok(())
    }

    /// The requirement as a ring width (at least [`Ring::MIN_BITS`]).
    pub(crate) fn ring_bits(&self) -> u32 {
        self.bits.max(Ring::MIN_BITS)
    }
}

/// Ring width that holds the non-negative values up to `m` (ring units) below the sign bit,
/// as a known-MSB truncation needs: the smallest `l` with `m < 2^{l-1}`.
fn nonneg_need(m: f64) -> u32 {
    let mut l = 1;
    while l < 128 && scale(l - 1) <= m {
        l += 1;
    }
    l
}

/// The smallest power of two `2^b` with `2^b > bound` and `b >= f` (an offset that makes a
/// value of magnitude at most `bound` non-negative and is a multiple of `2^f`).
///
/// The offset value `2^b + x` then lies in `(0, 2^{b+1})`: a known-MSB truncation of it needs
/// a ring of at least `b + 2` bits (with `b + 1` bits, or fewer, the offset itself is at or
/// beyond the sign bit and the result is wrong).
pub fn offset_bits(bound: f64, f: u32) -> u32 {
    let mut b = f;
    let bound = bound + (1u128 << f) as f64;
    while b < 126 && ((1u128 << b) as f64) <= bound {
        b += 1;
    }
    b
}

/// `x / 2^f` rounded, for values of magnitude at most `bound` (ring units): with
/// `b = offset_bits(bound, f)`, `((x + 2^b + 2^{f-1}) >> f) - 2^{b-f}` with a known-MSB
/// truncation (one COT of `f` bits; the result is the nearest integer or one less). Needs a
/// ring of at least `b + 2` bits: narrower rings are refused ([`MpcError::RingTooNarrow`]).
/// Values outside the bound give an arbitrary result.
pub fn trunc_bounded<E: Exec>(e: &mut E, xs: &[&E::T], f: u32, bound: f64) -> Result<Vec<E::T>> {
    let b = offset_bits(bound, f);
    if f == 0 {
        return Ok(xs.iter().map(|x| (*x).clone()).collect());
    }
    let mut need = Need::default();
    need.add(b + 2, || {
        format!("a truncation by {f} bits of values of magnitude up to {bound:.4e} (offset 2^{b})")
    });
    for x in xs {
        need.check(e.ring_of(x))?;
    }
    let off = i64::try_from(1u128 << b).map_err(|_| bad("offset beyond 63 bits"))?;
    // + 2^{f-1}: round to nearest instead of flooring (error in (-1.5, 0.5] ulp)
    let half = 1i64 << (f - 1);
    let mut shifted = Vec::with_capacity(xs.len());
    for x in xs {
        shifted.push(e.lin(&[(1, *x)], off + half)?);
    }
    let refs: Vec<&E::T> = shifted.iter().collect();
    let t = e.trunc_nonneg(&refs, f)?;
    let back = off >> f;
    let mut out = Vec::with_capacity(t.len());
    for x in &t {
        out.push(e.lin(&[(1, x)], -back)?);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Polynomials
// ---------------------------------------------------------------------------------------------

/// How a [`Poly`] is evaluated (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum PolyPlan {
    /// Powers by squaring and products, shared between polynomials; any degree.
    #[default]
    Powers,
    /// Degree 4 with two squares (Knuth's adaptation of coefficients).
    QuarticBySquares,
    /// Degree 6 with `x^2`, `x^3` and one square.
    SexticBySquares,
}

/// A public polynomial `sum a_k x^k` on a fixed-point input with `frac` fractional bits, valid
/// for `x` in `[lo, hi]`; the output has `frac` fractional bits too.
///
/// Coefficients are rounded to `fc >= coeff_frac` fractional bits: more than `coeff_frac`
/// when the terms are large on the domain, so that rounding them costs at most a quarter ulp of
/// the output in total. The final sum `sum round(a_k 2^fc) x^k` is held at `frac + fc`
/// fractional bits, so the ring must hold `|P| 2^{frac + fc}` (plus an offset of the same
/// size): [`Poly::min_ring_bits`] is the narrowest ring in which every intermediate fits, and
/// [`Poly::eval`] refuses narrower rings ([`MpcError::RingTooNarrow`]) instead of returning
/// wrong values.
#[derive(Clone, Debug, PartialEq)]
pub struct Poly {
    coeffs: Vec<f64>,
    plan: PolyPlan,
    frac: u32,
    coeff_frac: u32,
    lo: f64,
    hi: f64,
}

fn round_i(v: f64) -> Result<i64> {
    let r = v.round();
    if !r.is_finite() || r.abs() >= 9.0e18 {
        return Err(bad(format!("coefficient {v} out of range")));
    }
    Ok(r as i64)
}

fn scale(f: u32) -> f64 {
    (1u128 << f) as f64
}

/// Fractional bits of the coefficients: at least `min`, and enough that rounding them costs
/// at most a quarter ulp of the output in total (`0.5 2^{-fc} sum m_j <= 2^{-f-2}` for terms of
/// magnitude at most `m_j`).
fn coeff_bits(min: u32, f: u32, mags: impl Iterator<Item = f64>) -> u32 {
    let total: f64 = mags.map(|m| m.max(0.0)).sum::<f64>().max(1.0);
    let mut b = f + 1;
    while b < 40 && ((1u64 << (b - f - 1)) as f64) < total {
        b += 1;
    }
    b.max(min)
}

/// Bound (ring units at `f + fc` fractional bits) of `sum k_j t_j + k_0` when `|P| <= out`:
/// the terms `t_j` (magnitude at most `m_j` reals, error at most `e_j` ulps of `f` bits,
/// counted as at least the two of one truncation) carry the coefficients `a_j` rounded to `fc`
/// bits (`k_j = a_j 2^fc + ε_j`, `|ε_j| <= 1/2`), so `sum - P 2^{f+fc}` is at most
/// `sum_j (|ε_j| (m_j 2^f + e_j) + |a_j| 2^fc e_j) + 1/2` in magnitude.
fn sum_bound(out: f64, terms: impl Iterator<Item = (f64, f64, f64)>, f: u32, fc: u32) -> f64 {
    let slack: f64 = terms
        .map(|(a, m, e)| {
            let e = e.max(2.0);
            0.5 * (m * scale(f) + e) + (a.abs() * scale(fc) + 1.0) * e
        })
        .sum();
    (out * scale(f + fc) + slack + 1.0) * 1.01
}

/// Bound (ulps of `f` bits) of the error of the powers plan's `x^k` for `|x| <= xm`: `x` is
/// exact, every truncation is at most two ulps low (the floor, and the secure truncation may
/// be one less), and `x^{a+b} = x^a x^b` (or `(x^a)^2`) carries the factors' errors:
/// `e_{a+b} = xm^a e_b + xm^b e_a + e_a e_b 2^{-f} + 2`.
fn power_err(k: usize, xm: f64, f: u32) -> f64 {
    if k <= 1 {
        return 0.0;
    }
    let (a, b) = (k / 2, k - k / 2);
    let (ea, eb) = (power_err(a, xm, f), power_err(b, xm, f));
    xm.powi(a as i32) * eb + xm.powi(b as i32) * ea + ea * eb / scale(f) + 2.0
}

/// The powers `x^k` (`k >= 2`) the powers plan makes for `coeffs`: those with a non-zero
/// coefficient and, recursively, the factors `x^{k/2}`, `x^{k - k/2}` of each.
fn needed_powers(coeffs: &[f64]) -> Vec<bool> {
    let d = coeffs.len().saturating_sub(1);
    let mut need: Vec<bool> = coeffs
        .iter()
        .enumerate()
        .map(|(k, a)| k >= 2 && *a != 0.0)
        .collect();
    for k in (2..=d).rev() {
        if need.get(k) == Some(&true) {
            for j in [k / 2, k - k / 2] {
                if let (true, Some(n)) = (j >= 2, need.get_mut(j)) {
                    *n = true;
                }
            }
        }
    }
    need
}

/// The constants of a [`PolyPlan::QuarticBySquares`] evaluation and its ring requirement.
struct Quartic {
    /// `w = x^2 + p x + q` in `[-wb, wb]` on the domain.
    p: f64,
    q: f64,
    /// Offset bits of `w`'s truncation.
    bw: u32,
    /// `a4 w^2 + c2 x^2 + c1 x + c0`: `c0` and the terms `(a4, ..), (c2, ..), (c1, ..)` as
    /// `(coefficient, magnitude, error)` for [`Poly::finish`].
    c0: f64,
    terms: [(f64, f64, f64); 3],
    need: Need,
}

/// The constants of a [`PolyPlan::SexticBySquares`] evaluation and its ring requirement.
struct Sextic {
    /// `v = x^3 + al x^2 + be x + ga` in `[-vb, vb]` on the domain.
    al: f64,
    be: f64,
    ga: f64,
    /// Bounds (ring units at `2f` bits) of the truncations of `x^3` and `v`.
    x3b: f64,
    vbound: f64,
    /// `a6 v^2 + c3 x^3 + c2 x^2 + c1 x + c0`: `c0` and the terms `(a6, ..), (c3, ..), ...`.
    c0: f64,
    terms: [(f64, f64, f64); 4],
    need: Need,
}

impl Poly {
    /// A polynomial with coefficients `a_0, a_1, ...` (power basis), evaluated with `plan`.
    pub fn new(
        coeffs: &[f64],
        plan: PolyPlan,
        frac: u32,
        coeff_frac: u32,
        lo: f64,
        hi: f64,
    ) -> Result<Self> {
        let mut c = coeffs.to_vec();
        while c.len() > 1 && c.last() == Some(&0.0) {
            c.pop();
        }
        if c.is_empty() || c.iter().any(|a| !a.is_finite()) {
            return Err(bad("polynomial without finite coefficients"));
        }
        if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
            return Err(bad(format!("polynomial domain [{lo}, {hi}]")));
        }
        if frac > 24 || coeff_frac > 24 {
            return Err(bad("more than 24 fractional bits"));
        }
        let d = c.len() - 1;
        let need = match plan {
            PolyPlan::Powers => None,
            PolyPlan::QuarticBySquares => Some(4),
            PolyPlan::SexticBySquares => Some(6),
        };
        if let Some(k) = need {
            if d != k {
                return Err(bad(format!("{plan:?} needs degree {k}, got {d}")));
            }
        }
        Ok(Self {
            coeffs: c,
            plan,
            frac,
            coeff_frac,
            lo,
            hi,
        })
    }

    /// The degree.
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }

    /// The coefficients.
    pub fn coeffs(&self) -> &[f64] {
        &self.coeffs
    }

    /// The plan.
    pub fn plan(&self) -> PolyPlan {
        self.plan
    }

    /// Fractional bits of input and output.
    pub fn frac(&self) -> u32 {
        self.frac
    }

    /// The domain.
    pub fn domain(&self) -> (f64, f64) {
        (self.lo, self.hi)
    }

    /// The polynomial in `f64`.
    pub fn eval_f64(&self, x: f64) -> f64 {
        self.coeffs.iter().rev().fold(0.0, |acc, &a| acc * x + a)
    }

    /// `the degree-d polynomial on [lo, hi] (plan)`, for messages.
    fn describe(&self) -> String {
        format!(
            "the degree-{} polynomial on [{}, {}] ({:?})",
            self.degree(),
            self.lo,
            self.hi,
            self.plan
        )
    }

    fn xmax(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    /// Largest `|P(x)|` on the domain (sampled, with a margin).
    fn out_bound(&self) -> f64 {
        let n = 4096;
        let m = (0..=n)
            .map(|i| self.lo + (self.hi - self.lo) * i as f64 / n as f64)
            .map(|x| self.eval_f64(x).abs())
            .fold(0.0, f64::max);
        m * 1.05 + 0.5
    }

    /// The narrowest ring (bits, at least [`Ring::MIN_BITS`]) in which [`Poly::eval`] is
    /// correct on the domain: every power, every known-sign truncation with its offset and the
    /// final sum at `frac + fc` fractional bits fit (see [`Poly`]). `eval` refuses narrower
    /// rings. (For [`PolyPlan::Powers`] polynomials evaluated together, see
    /// [`min_ring_bits_many`].)
    pub fn min_ring_bits(&self) -> Result<u32> {
        Ok(self.need()?.ring_bits())
    }

    /// The ring requirement of [`Poly::eval`].
    pub(crate) fn need(&self) -> Result<Need> {
        Ok(match self.plan {
            PolyPlan::Powers => powers_layout(&[self], self.xmax())?.need,
            PolyPlan::QuarticBySquares => self.quartic()?.need,
            PolyPlan::SexticBySquares => self.sextic()?.need,
        })
    }

    /// Evaluates on `x` (fixed point with [`Poly::frac`] fractional bits) in `x`'s ring: the
    /// polynomial for `x` in the domain, an arbitrary ring value elsewhere. A ring narrower
    /// than [`Poly::min_ring_bits`] is refused ([`MpcError::RingTooNarrow`]) before any
    /// traffic. Cost: run it on a [`CostExec`].
    pub fn eval<E: Exec>(&self, e: &mut E, x: &E::T) -> Result<E::T> {
        match self.plan {
            PolyPlan::Powers => eval_many(e, x, &[self])?
                .pop()
                .ok_or_else(|| bad("no polynomial")),
            PolyPlan::QuarticBySquares => self.eval_quartic(e, x),
            PolyPlan::SexticBySquares => self.eval_sextic(e, x),
        }
    }

    /// Coefficient fraction `fc`, bound and offset bits of the final sum
    /// `sum a_j t_j + a_0` (terms `(a_j, magnitude m_j, error e_j)`, see [`sum_bound`]).
    fn finish_sizes(&self, terms: &[(f64, f64, f64)]) -> (u32, f64, u32) {
        let f = self.frac;
        let fc = coeff_bits(self.coeff_frac, f, terms.iter().map(|t| t.1));
        let bound = sum_bound(self.out_bound(), terms.iter().copied(), f, fc);
        (fc, bound, offset_bits(bound, fc))
    }

    /// The final sum's ring requirement.
    fn finish_need(&self, need: &mut Need, terms: &[(f64, f64, f64)]) {
        let (fc, _, b) = self.finish_sizes(terms);
        let f = self.frac;
        need.add(b + 2, || {
            format!(
                "the sum of the terms of {} at {} fractional bits ({f} of x, {fc} of the \
                 coefficients; offset 2^{b})",
                self.describe(),
                f + fc
            )
        });
    }

    /// `sum k_j t_j + k_0` at fraction `frac + fc`, truncated by `fc` with the output bound.
    fn finish<E: Exec>(
        &self,
        e: &mut E,
        sizes: &[(f64, f64, f64)],
        ts: &[&E::T],
        a0: f64,
    ) -> Result<E::T> {
        let (fc, bound, _) = self.finish_sizes(sizes);
        let f = self.frac;
        let ks: Vec<(i64, &E::T)> = sizes
            .iter()
            .zip(ts)
            .map(|((a, _, _), t)| Ok((round_i(a * scale(fc))?, *t)))
            .collect::<Result<_>>()?;
        let c0 = round_i(a0 * scale(f + fc))?;
        let sum = e.lin(&ks, c0)?;
        trunc_bounded(e, &[&sum], fc, bound)?
            .pop()
            .ok_or_else(|| bad("trunc"))
    }

    fn quartic(&self) -> Result<Quartic> {
        let (f, a) = (self.frac, &self.coeffs);
        let g = |k: usize| a.get(k).copied().unwrap_or(0.0);
        let a4 = g(4);
        if a4 == 0.0 {
            return Err(bad("quartic plan with a zero leading coefficient"));
        }
        let p = g(3) / (2.0 * a4);
        // centre w = x^2 + p x + q on the domain
        let (lo, hi) = (self.lo, self.hi);
        let w = |x: f64| x * x + p * x;
        let mut cands = vec![w(lo), w(hi)];
        if -p / 2.0 > lo && -p / 2.0 < hi {
            cands.push(w(-p / 2.0));
        }
        let wmin = cands.iter().copied().fold(f64::INFINITY, f64::min);
        let wmax = cands.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let q = -(wmin + wmax) / 2.0;
        let wb = (wmax - wmin) / 2.0;
        let xm = self.xmax();
        // w at 2f: x^2 2^2f + round(p 2^f) x 2^f + round(q 2^2f), error 0.5 xm 2^f + 0.5;
        // truncated to f bits (two ulps more)
        let ew = 0.5 * xm + 0.5 / scale(f) + 2.0;
        let bw = offset_bits(((wb + 1.0) * scale(2 * f) + 0.5 * xm * scale(f)) * 1.01, f);
        let e4 = 2.0 * wb * ew + ew * ew / scale(f) + 2.0;
        let terms = [
            (a4, (wb + 1.0).powi(2), e4),
            (g(2) - a4 * (p * p + 2.0 * q), xm * xm, 2.0),
            (g(1) - 2.0 * a4 * p * q, xm, 0.0),
        ];
        let mut need = Need::default();
        need.add(nonneg_need((xm * scale(f)).powi(2)), || {
            format!("x^2 at {} fractional bits for |x| <= {xm}", 2 * f)
        });
        need.add(bw + 2, || {
            format!(
                "w = x^2 + p x + q at {} fractional bits (|w| <= {wb:.4}, offset 2^{bw})",
                2 * f
            )
        });
        need.add(nonneg_need((wb * scale(f) + ew).powi(2)), || {
            format!("w^2 at {} fractional bits (|w| <= {wb:.4})", 2 * f)
        });
        self.finish_need(&mut need, &terms);
        Ok(Quartic {
            p,
            q,
            bw,
            c0: g(0) - a4 * q * q,
            terms,
            need,
        })
    }

    fn eval_quartic<E: Exec>(&self, e: &mut E, x: &E::T) -> Result<E::T> {
        let f = self.frac;
        let Quartic {
            p,
            q,
            bw,
            c0,
            terms,
            need,
        } = self.quartic()?;
        need.check(e.ring_of(x))?;
        let s1 = e.square(&[x])?.pop().ok_or_else(|| bad("square"))?;
        let pk = round_i(p * scale(f))?;
        let qk = round_i(q * scale(2 * f))?;
        let w2 = e.lin(&[(1, &s1), (pk, x)], qk)?;
        // w and x^2 truncated in one batch: w with an offset, x^2 as it is (non-negative)
        let off = i64::try_from(1u128 << bw).map_err(|_| bad("offset beyond 63 bits"))?;
        let w2o = e.lin(&[(1, &w2)], off)?;
        let mut t = e.trunc_nonneg(&[&w2o, &s1], f)?;
        let u2 = t.pop().ok_or_else(|| bad("trunc"))?;
        let wo = t.pop().ok_or_else(|| bad("trunc"))?;
        let wv = e.lin(&[(1, &wo)], -(off >> f))?;
        let s2 = e.square(&[&wv])?.pop().ok_or_else(|| bad("square"))?;
        let u4 = e
            .trunc_nonneg(&[&s2], f)?
            .pop()
            .ok_or_else(|| bad("trunc"))?;
        self.finish(e, &terms, &[&u4, &u2, x], c0)
    }

    fn sextic(&self) -> Result<Sextic> {
        let (f, a) = (self.frac, &self.coeffs);
        let g = |k: usize| a.get(k).copied().unwrap_or(0.0);
        let a6 = g(6);
        if a6 == 0.0 {
            return Err(bad("sextic plan with a zero leading coefficient"));
        }
        let al = g(5) / (2.0 * a6);
        let be = (g(4) / a6 - al * al) / 2.0;
        let v = |x: f64| x * x * x + al * x * x + be * x;
        let n = 4096;
        let (mut vmin, mut vmax) = (f64::INFINITY, f64::NEG_INFINITY);
        for i in 0..=n {
            let y = v(self.lo + (self.hi - self.lo) * i as f64 / n as f64);
            vmin = vmin.min(y);
            vmax = vmax.max(y);
        }
        let ga = -(vmin + vmax) / 2.0;
        let vb = (vmax - vmin) / 2.0;
        let xm = self.xmax();
        // |v| <= vs on the domain: the samples' extremes plus |v''| h^2 / 8 between samples
        let h = (self.hi - self.lo) / n as f64;
        let vs = vb + (6.0 * xm + 2.0 * al.abs()) * h * h / 8.0;
        // x^3 = x u2: error 2 xm ulps from u2, plus the rounded truncation
        let e3 = 2.0 * xm + 2.0;
        let x3b = (xm.powi(3) * scale(2 * f) + 2.0 * xm * scale(f)) * 1.01 + scale(f + 1);
        // v at 2f: errors of u3 (scaled by 2^f), of u2 and x times the rounded al, be, and of ga
        let ev = e3 + 2.0 * al.abs() + 0.5 * (xm * xm + xm) + 1.5 / scale(f);
        let vbound = ((vs + 1.0) * scale(2 * f) + ev * scale(f)) * 1.01;
        let evv = ev + 2.0;
        let e6 = 2.0 * vs * evv + evv * evv / scale(f) + 2.0;
        let c3 = g(3) - a6 * (2.0 * ga + 2.0 * al * be);
        let c2 = g(2) - a6 * (be * be + 2.0 * al * ga);
        let c1 = g(1) - 2.0 * a6 * be * ga;
        let terms = [
            (a6, (vb + 1.0).powi(2), e6),
            (c3, xm.powi(3), e3),
            (c2, xm * xm, 2.0),
            (c1, xm, 0.0),
        ];
        let mut need = Need::default();
        need.add(nonneg_need((xm * scale(f)).powi(2)), || {
            format!("x^2 at {} fractional bits for |x| <= {xm}", 2 * f)
        });
        for (what, bound) in [("x^3", x3b), ("v = x^3 + al x^2 + be x + ga", vbound)] {
            let b = offset_bits(bound, f);
            need.add(b + 2, || {
                format!("{what} at {} fractional bits (offset 2^{b})", 2 * f)
            });
        }
        need.add(nonneg_need((vs * scale(f) + evv).powi(2)), || {
            format!("v^2 at {} fractional bits (|v| <= {vs:.4})", 2 * f)
        });
        self.finish_need(&mut need, &terms);
        Ok(Sextic {
            al,
            be,
            ga,
            x3b,
            vbound,
            c0: g(0) - a6 * ga * ga,
            terms,
            need,
        })
    }

    fn eval_sextic<E: Exec>(&self, e: &mut E, x: &E::T) -> Result<E::T> {
        let f = self.frac;
        let s = self.sextic()?;
        s.need.check(e.ring_of(x))?;
        let s1 = e.square(&[x])?.pop().ok_or_else(|| bad("square"))?;
        let u2 = e
            .trunc_nonneg(&[&s1], f)?
            .pop()
            .ok_or_else(|| bad("trunc"))?;
        let p3 = e.mul(&[x], &[&u2])?.pop().ok_or_else(|| bad("mul"))?;
        let u3 = trunc_bounded(e, &[&p3], f, s.x3b)?
            .pop()
            .ok_or_else(|| bad("trunc"))?;
        // v at 2f: x^3 2^f + al x^2 2^f + be x 2^f + ga 2^{2f}
        let v2 = e.lin(
            &[
                (round_i(scale(f))?, &u3),
                (round_i(s.al * scale(f))?, &u2),
                (round_i(s.be * scale(f))?, x),
            ],
            round_i(s.ga * scale(2 * f))?,
        )?;
        let vv = trunc_bounded(e, &[&v2], f, s.vbound)?
            .pop()
            .ok_or_else(|| bad("trunc"))?;
        let s2 = e.square(&[&vv])?.pop().ok_or_else(|| bad("square"))?;
        let u6 = e
            .trunc_nonneg(&[&s2], f)?
            .pop()
            .ok_or_else(|| bad("trunc"))?;
        self.finish(e, &s.terms, &[&u6, &u3, &u2, x], s.c0)
    }
}

/// The sizes of a shared powers evaluation ([`eval_many_in`]), all fixed (and the ring
/// checked) before any traffic.
struct PowersLayout {
    /// Which powers are made (`x^0`, `x^1` not included).
    made: Vec<bool>,
    /// Offset bits of each odd power's truncation (0 for the others).
    prod_b: Vec<u32>,
    /// Coefficient fraction of the final sums (one for all: they are truncated in one batch).
    fc: u32,
    /// Offset bits of each polynomial's final sum.
    sum_b: Vec<u32>,
    need: Need,
}

/// Sizes [`eval_many_in`]: powers bounded by `xmax` (at least the polynomials' domains) for
/// the offsets and the coefficient fraction, by the domains of the polynomials that need them
/// for the squares; each polynomial's final sum on its own domain.
fn powers_layout(polys: &[&Poly], xmax: f64) -> Result<PowersLayout> {
    let Some(first) = polys.first() else {
        return Ok(PowersLayout {
            made: Vec::new(),
            prod_b: Vec::new(),
            fc: 0,
            sum_b: Vec::new(),
            need: Need::default(),
        });
    };
    if polys
        .iter()
        .any(|p| p.frac != first.frac || p.plan != PolyPlan::Powers)
    {
        return Err(bad("shared powers need one fraction and the powers plan"));
    }
    let xmax = polys.iter().map(|p| p.xmax()).fold(xmax, f64::max);
    let f = first.frac;
    let dmax = polys.iter().map(|p| p.degree()).max().unwrap_or(0);
    let mut made = vec![false; dmax + 1];
    // the widest domain among the polynomials that need each power
    let mut xk = vec![0.0f64; dmax + 1];
    for p in polys {
        for (k, n) in needed_powers(&p.coeffs).into_iter().enumerate() {
            if n {
                if let (Some(m), Some(x)) = (made.get_mut(k), xk.get_mut(k)) {
                    *m = true;
                    *x = x.max(p.xmax());
                }
            }
        }
    }
    let mut need = Need::default();
    let mut prod_b = vec![0u32; dmax + 1];
    for k in 2..=dmax {
        if made.get(k) != Some(&true) {
            continue;
        }
        let (a, b) = (k / 2, k - k / 2);
        if a == b {
            // (x^a)^2, truncated with a known sign: below 2^{l-1} on the domains that need it
            let xs = xk.get(k).copied().unwrap_or(xmax);
            let m = xs.powi(a as i32) * scale(f) + power_err(a, xs, f);
            need.add(nonneg_need(m * m), || {
                format!(
                    "x^{k} = (x^{a})^2 at {} fractional bits for |x| <= {xs}",
                    2 * f
                )
            });
        } else {
            let (ea, eb) = (power_err(a, xmax, f), power_err(b, xmax, f));
            let pa = xmax.powi(a as i32);
            let pb = xmax.powi(b as i32);
            let bound =
                (xmax.powi(k as i32) * scale(2 * f) + (pa * eb + pb * ea) * scale(f) + ea * eb)
                    * 1.01
                    + scale(f + 1);
            let ob = offset_bits(bound, f);
            if let Some(slot) = prod_b.get_mut(k) {
                *slot = ob;
            }
            need.add(ob + 2, || {
                format!(
                    "x^{k} = x^{a} x^{b} at {} fractional bits for |x| <= {xmax} (offset 2^{ob})",
                    2 * f
                )
            });
        }
    }
    let fc = polys
        .iter()
        .map(|p| {
            coeff_bits(
                p.coeff_frac,
                f,
                p.coeffs
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, a)| **a != 0.0)
                    .map(|(k, _)| xmax.powi(k as i32)),
            )
        })
        .max()
        .unwrap_or(first.coeff_frac);
    let mut sum_b = Vec::with_capacity(polys.len());
    for p in polys {
        let bound = sum_bound(
            p.out_bound(),
            p.coeffs.iter().enumerate().skip(1).map(|(k, &a)| {
                let e = if a == 0.0 {
                    0.0
                } else {
                    power_err(k, p.xmax(), f)
                };
                (a, xmax.powi(k as i32), e)
            }),
            f,
            fc,
        );
        let b = offset_bits(bound, fc);
        need.add(b + 2, || {
            format!(
                "the sum of the terms of {} at {} fractional bits ({f} of x, {fc} of the \
                 coefficients; offset 2^{b})",
                p.describe(),
                f + fc
            )
        });
        sum_b.push(b);
    }
    Ok(PowersLayout {
        made,
        prod_b,
        fc,
        sum_b,
        need,
    })
}

/// The narrowest ring (bits) in which [`eval_many_in`] of `polys` with powers sized for
/// `|x| <= xmax` is correct on every polynomial's domain (it refuses narrower rings).
pub fn min_ring_bits_many(polys: &[&Poly], xmax: f64) -> Result<u32> {
    Ok(powers_layout(polys, xmax)?.need.ring_bits())
}

/// The ring requirement of [`eval_many_in`].
pub(crate) fn need_many(polys: &[&Poly], xmax: f64) -> Result<Need> {
    Ok(powers_layout(polys, xmax)?.need)
}

/// Evaluates several [`PolyPlan::Powers`] polynomials on the same `x` (same `frac`), sharing
/// the powers: every power `x^k` (`k >= 2`) that some polynomial needs is made once, level by
/// level (all squares of a level in one batch, all products in one, all truncations in one).
/// Powers are bounded by the largest domain. Refuses a ring narrower than
/// [`min_ring_bits_many`] before any traffic. Cost: run on a [`CostExec`].
pub fn eval_many<E: Exec>(e: &mut E, x: &E::T, polys: &[&Poly]) -> Result<Vec<E::T>> {
    let xmax = polys.iter().map(|p| p.xmax()).fold(0.0, f64::max);
    eval_many_in(e, x, polys, xmax)
}

/// [`eval_many`] with the powers sized for `|x| <= xmax` (at least the polynomials' domains):
/// checking one polynomial of a shared evaluation on its own domain (with a
/// [`BoundsExec`]) needs the sizes of the shared run.
pub fn eval_many_in<E: Exec>(e: &mut E, x: &E::T, polys: &[&Poly], xmax: f64) -> Result<Vec<E::T>> {
    let Some(first) = polys.first() else {
        return Ok(Vec::new());
    };
    let lay = powers_layout(polys, xmax)?;
    lay.need.check(e.ring_of(x))?;
    let f = first.frac;
    let dmax = lay.made.len().saturating_sub(1);
    let mut pw: Vec<Option<E::T>> = vec![None; dmax + 1];
    if let Some(p1) = pw.get_mut(1) {
        *p1 = Some(x.clone());
    }
    loop {
        let ready: Vec<usize> = (2..=dmax)
            .filter(|&k| lay.made.get(k) == Some(&true) && pw.get(k).is_some_and(Option::is_none))
            .filter(|&k| {
                let (a, b) = (k / 2, k - k / 2);
                pw.get(a).is_some_and(Option::is_some) && pw.get(b).is_some_and(Option::is_some)
            })
            .collect();
        if ready.is_empty() {
            break;
        }
        let get = |pw: &[Option<E::T>], k: usize| -> Result<E::T> {
            pw.get(k)
                .cloned()
                .flatten()
                .ok_or_else(|| bad("missing power"))
        };
        let (sq, pr): (Vec<usize>, Vec<usize>) = ready.iter().partition(|&&k| k % 2 == 0);
        let sq_in: Vec<E::T> = sq.iter().map(|&k| get(&pw, k / 2)).collect::<Result<_>>()?;
        let pa: Vec<E::T> = pr.iter().map(|&k| get(&pw, k / 2)).collect::<Result<_>>()?;
        let pb: Vec<E::T> = pr
            .iter()
            .map(|&k| get(&pw, k - k / 2))
            .collect::<Result<_>>()?;
        let sq_out = if sq.is_empty() {
            Vec::new()
        } else {
            e.square(&sq_in.iter().collect::<Vec<_>>())?
        };
        let pr_out = if pr.is_empty() {
            Vec::new()
        } else {
            e.mul(
                &pa.iter().collect::<Vec<_>>(),
                &pb.iter().collect::<Vec<_>>(),
            )?
        };
        // truncate all of the level at once: even powers as they are, odd ones with an offset
        let mut pre = Vec::new();
        let mut offs = Vec::new();
        for (&k, v) in sq.iter().zip(&sq_out) {
            pre.push(v.clone());
            offs.push((k, 0i64));
        }
        for (&k, v) in pr.iter().zip(&pr_out) {
            let b = lay.prod_b.get(k).copied().unwrap_or(0);
            let off = i64::try_from(1u128 << b).map_err(|_| bad("offset beyond 63 bits"))?;
            pre.push(e.lin(&[(1, v)], off)?);
            offs.push((k, off));
        }
        let t = e.trunc_nonneg(&pre.iter().collect::<Vec<_>>(), f)?;
        for ((k, off), v) in offs.into_iter().zip(t) {
            let v = if off == 0 {
                v
            } else {
                e.lin(&[(1, &v)], -(off >> f))?
            };
            if let Some(slot) = pw.get_mut(k) {
                *slot = Some(v);
            }
        }
    }
    // final sums, truncated in one batch
    let fc = lay.fc;
    let mut sums = Vec::with_capacity(polys.len());
    let mut offs = Vec::with_capacity(polys.len());
    for (p, &b) in polys.iter().zip(&lay.sum_b) {
        let mut terms = Vec::new();
        for (k, &a) in p.coeffs.iter().enumerate().skip(1) {
            if a != 0.0 {
                let t = pw
                    .get(k)
                    .and_then(Option::as_ref)
                    .ok_or_else(|| bad("missing power"))?;
                terms.push((round_i(a * scale(fc))?, t));
            }
        }
        let c0 = round_i(p.coeffs.first().copied().unwrap_or(0.0) * scale(f + fc))?;
        if terms.is_empty() {
            terms.push((0, x));
        }
        let sum = e.lin(&terms, c0)?;
        let off = i64::try_from(1u128 << b).map_err(|_| bad("offset beyond 63 bits"))?;
        sums.push(e.lin(&[(1, &sum)], off)?);
        offs.push(off);
    }
    let t = e.trunc_nonneg(&sums.iter().collect::<Vec<_>>(), fc)?;
    t.iter()
        .zip(offs)
        .map(|(v, off)| e.lin(&[(1, v)], -(off >> fc)))
        .collect()
}

/// Plaintext stand-in of `x` (reals) for a [`BoundsExec`] run: `round(x 2^frac)`.
pub fn plain(ring: Ring, frac: u32, xs: &[f64]) -> Plain {
    Plain {
        ring,
        v: xs.iter().map(|x| (x * scale(frac)).round()).collect(),
    }
}

/// Samples of `[lo, hi]` (`n + 1` points, ends included).
pub fn grid(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let n = n.max(1);
    (0..=n)
        .map(|i| lo + (hi - lo) * i as f64 / n as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Prg;
    #[allow(unused_imports)]
    use duet_transport::Channel as _;
    use duet_transport::{run_two_party, MemoryChannel};

    /// Runs `f` for both parties after the session setup; returns both outputs and the
    /// measured online traffic (the one place where traffic is measured in this file).
    pub(crate) fn two<T: Send>(
        cfg: NlConfig,
        need: crate::nonlinear::CotCount,
        f: impl Fn(&mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        let party = |role: Role, mut ch: MemoryChannel| {
            let mut rng = Prg::from_seed([role.index() as u8 + 7; 32]);
            let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
            // Ferret: make the COTs ahead so that the measured part is the protocol alone
            s.reserve(&mut ch, need).unwrap();
            let before = ch.stats();
            let out = f(&mut s, &mut ch);
            (out, ch.stats() - before)
        };
        let ((a, sa), (b, sb)) =
            run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
        assert_eq!(sa.bytes_sent, sb.bytes_received);
        let c = Cost {
            bytes: sa.bytes_sent + sb.bytes_sent,
            rounds: sa.rounds + sb.rounds,
            ..Cost::default()
        };
        (a, b, c)
    }

    fn cfgs() -> [NlConfig; 3] {
        let ferret = NlConfig {
            cot: crate::nonlinear::CotBackend::Ferret(crate::ot::FerretParams::insecure_for_tests()),
            ..NlConfig::default()
        };
        [
            ferret,
            NlConfig::iknp(),
            NlConfig {
                ot_sender: Role::Client,
                ..NlConfig::iknp()
            },
        ]
    }

    fn test_cfg() -> NlConfig {
        cfgs()[0]
    }

    fn edge(ring: Ring, prg: &mut Prg, n: usize) -> Vec<u64> {
        let half = 1u64 << (ring.bits() - 1);
        let mut v = vec![0, 1, ring.neg(1), half, half - 1, half + 1, ring.mask(), 3];
        v.extend(prg.ring_elements(ring, n));
        v
    }

    #[test]
    fn square_and_extension_are_exact_at_their_cost() {
        let mut prg = Prg::from_seed([1; 32]);
        for l in [16u32, 21, 37, 64] {
            let ring = Ring::new(l).unwrap();
            for cfg in cfgs() {
                let xs = edge(ring, &mut prg, 200);
                let n = xs.len();
                let (x0, x1) = AShare::share(ring, vec![n], &xs, &mut prg).unwrap();
                let need = square_cost(n, ring, cfg).cots;
                let (a, b, cost) = two(cfg, need, |s, ch| {
                    let x = if s.role() == Role::Server { &x0 } else { &x1 };
                    square(s, ch, x).unwrap()
                });
                let got = a.reconstruct(&b).unwrap();
                for (g, x) in got.iter().zip(&xs) {
                    assert_eq!(*g, ring.mul(*x, *x));
                }
                assert_eq!(cost.bytes, square_cost(n, ring, cfg).bytes);
                assert!(cost.rounds <= square_cost(n, ring, cfg).rounds);
                // half the bytes of a general product, up to the IKNP framing
                assert!(2 * cost.bytes <= nl::mul_cost(n, ring, cfg).bytes + 64);
            }
        }
        // extension of non-negative values, all of [0, 2^(l-1)) edges included
        for (l1, l2) in [(16u32, 37u32), (21, 64), (37, 38)] {
            let (r1, r2) = (Ring::new(l1).unwrap(), Ring::new(l2).unwrap());
            for cfg in cfgs() {
                let half = 1u64 << (l1 - 1);
                let mut xs = vec![0, 1, half - 1, half - 2, 12345 % half];
                xs.extend(prg.ring_elements(r1, 200).into_iter().map(|v| v % half));
                let n = xs.len();
                let (x0, x1) = AShare::share(r1, vec![n], &xs, &mut prg).unwrap();
                let need = extend_nonneg_cost(n, r1, r2, cfg).cots;
                let (a, b, cost) = two(cfg, need, |s, ch| {
                    let x = if s.role() == Role::Server { &x0 } else { &x1 };
                    extend_nonneg(s, ch, x, r2).unwrap()
                });
                assert_eq!(a.ring(), r2);
                assert_eq!(a.reconstruct(&b).unwrap(), xs);
                let want = extend_nonneg_cost(n, r1, r2, cfg);
                assert_eq!(cost.bytes, want.bytes);
                // a flight may merge with the reservation's last one
                assert!(cost.rounds <= want.rounds && cost.rounds + 1 >= want.rounds);
            }
        }
    }

    /// Secure evaluation of `poly` on reals `xs` (random shares); returns the outputs as reals
    /// and checks the traffic against the [`CostExec`] prediction.
    fn run_poly(poly: &Poly, ring: Ring, xs: &[f64], prg: &mut Prg) -> Vec<f64> {
        let f = poly.frac();
        let sc = (1u64 << f) as f64;
        let enc: Vec<u64> = xs
            .iter()
            .map(|x| ring.from_i64((x * sc).round() as i64))
            .collect();
        let n = xs.len();
        let (x0, x1) = AShare::share(ring, vec![n], &enc, prg).unwrap();
        let cfg = test_cfg();
        let mut ce = CostExec::new(cfg);
        poly.eval(&mut ce, &Sym { ring, n }).unwrap();
        let (a, b, cost) = two(cfg, ce.cost().cots, |s, ch| {
            let x = if s.role() == Role::Server { &x0 } else { &x1 };
            let mut e = ShareExec::new(s, ch);
            poly.eval(&mut e, x).unwrap()
        });
        assert_eq!(cost.bytes, ce.cost().bytes);
        assert!(cost.rounds <= ce.cost().rounds);
        a.reconstruct(&b)
            .unwrap()
            .into_iter()
            .map(|v| ring.to_i64(v) as f64 / sc)
            .collect()
    }

    #[test]
    fn polynomial_plans_match_the_float_polynomial() {
        let mut prg = Prg::from_seed([2; 32]);
        let q4 = [0.1, -0.7, 0.45, 0.2, -0.05];
        let q6 = [0.3, 0.5, -0.25, 0.1, 0.05, -0.02, 0.004];
        let cases = [
            (q4.to_vec(), PolyPlan::QuarticBySquares, -3.0, 3.0),
            (q4.to_vec(), PolyPlan::Powers, -3.0, 3.0),
            (q6.to_vec(), PolyPlan::SexticBySquares, -2.5, 2.0),
            (q6.to_vec(), PolyPlan::Powers, -2.5, 2.0),
            (vec![0.25, -1.5, 0.0, 0.125], PolyPlan::Powers, -4.0, 4.0),
        ];
        for (c, plan, lo, hi) in cases {
            let f = 12;
            let poly = Poly::new(&c, plan, f, 14, lo, hi).unwrap();
            // size the ring on the domain: narrower rings are refused, and in the narrowest
            // one accepted the samples fit
            let ring = Ring::new(poly.min_ring_bits().unwrap()).unwrap();
            for bits in 16..ring.bits() {
                let mut b = BoundsExec::new();
                let narrow = plain(Ring::new(bits).unwrap(), f, &grid(lo, hi, 500));
                assert!(matches!(
                    poly.eval(&mut b, &narrow),
                    Err(MpcError::RingTooNarrow { .. })
                ));
            }
            let mut b = BoundsExec::new();
            poly.eval(&mut b, &plain(ring, f, &grid(lo, hi, 500)))
                .unwrap();
            assert!(b.violations().is_empty(), "{:?}", b.violations());
            let mut xs = grid(lo, hi, 300);
            xs.extend([lo, hi, 0.0, 1.0 / 4096.0, -1.0 / 4096.0]);
            let got = run_poly(&poly, ring, &xs, &mut prg);
            let bound = 1e-2 * (1.0 + c.iter().map(|a| a.abs()).sum::<f64>());
            let worst = xs
                .iter()
                .zip(&got)
                .map(|(x, g)| (g - poly.eval_f64(*x)).abs())
                .fold(0.0, f64::max);
            assert!(
                worst <= bound,
                "{plan:?} Z_2^{}: error {worst}",
                ring.bits()
            );
            // squares-only plans are cheaper than the powers plan of the same polynomial
            let n = 1000;
            let mut a = CostExec::new(NlConfig::default());
            poly.eval(&mut a, &Sym { ring, n }).unwrap();
            let powers = Poly::new(&c, PolyPlan::Powers, f, 14, lo, hi).unwrap();
            let mut b = CostExec::new(NlConfig::default());
            powers.eval(&mut b, &Sym { ring, n }).unwrap();
            assert!(a.cost().bytes <= b.cost().bytes, "{plan:?}");
        }
        assert!(Poly::new(&[1.0, 2.0], PolyPlan::QuarticBySquares, 8, 8, 0.0, 1.0).is_err());
        assert!(Poly::new(&[f64::NAN], PolyPlan::Powers, 8, 8, 0.0, 1.0).is_err());
        assert!(Poly::new(&[1.0], PolyPlan::Powers, 8, 8, 1.0, 0.0).is_err());
    }

    #[test]
    fn bounded_truncation_handles_negative_values() {
        let mut prg = Prg::from_seed([3; 32]);
        let ring = Ring::new(24).unwrap();
        let bound = (1u64 << 20) as f64;
        let mut xs: Vec<i64> = vec![0, 1, -1, (1 << 20) - 1, -(1 << 20) + 1, 255, -256, 256];
        xs.extend(
            prg.ring_elements(ring, 300)
                .into_iter()
                .map(|v| (v % (1 << 21)) as i64 - (1 << 20)),
        );
        let enc: Vec<u64> = xs.iter().map(|&x| ring.from_i64(x)).collect();
        let n = enc.len();
        let (x0, x1) = AShare::share(ring, vec![n], &enc, &mut prg).unwrap();
        let cfg = test_cfg();
        let need = nl::trunc_cost(n, ring, 8, TruncMode::KnownMsb(false), cfg).cots;
        let (a, b, cost) = two(cfg, need, |s, ch| {
            let x = if s.role() == Role::Server { &x0 } else { &x1 };
            let mut e = ShareExec::new(s, ch);
            trunc_bounded(&mut e, &[x], 8, bound)
                .unwrap()
                .pop()
                .unwrap()
        });
        for (g, x) in a.reconstruct(&b).unwrap().iter().zip(&xs) {
            // rounded to nearest, or one less
            let d = ring.to_i64(*g) - ((x + 128) >> 8);
            assert!(d == 0 || d == -1, "{x}: {}", ring.to_i64(*g));
        }
        assert_eq!(
            cost.bytes,
            nl::trunc_cost(n, ring, 8, TruncMode::KnownMsb(false), cfg).bytes
        );
    }
}
