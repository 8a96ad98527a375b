//! Piecewise functions on shared fixed-point values: public breakpoints `b_1 < ... < b_k`
//! split the line into `k + 1` segments, each with its own piece (zero, the identity or a
//! [`Poly`]).
//!
//! Protocol: with `c_i = 1{x >= b_i}` and `P_0 .. P_k` the pieces evaluated on `x`,
//! `f(x) = P_0(x) + sum_i c_i (P_i(x) - P_{i-1}(x))` (the sum telescopes to `P_j(x)` on
//! segment `j`; it telescopes exactly in the ring, so a piece's arbitrary value outside its
//! segment cancels out). Work is shared: one batched MSB call for all `k` comparisons
//! (`c_i = ¬MSB(x - b_i)`, one millionaire per breakpoint), one evaluation of the powers of `x`
//! for all [`PolyPlan::Powers`] pieces ([`eval_many`]), and one batched [`Exec::mux`] for the
//! `k` differences (skipped where both neighbours are zero). The comparisons are exact when
//! `x - b_i` does not overflow the ring, i.e. `|x| < 2^{l-2-frac}` (callers size the ring for
//! their input range).
//! Security: semi-honest, 128-bit (comparisons, products and muxes of [`crate::nonlinear`]).
//! Cost: run [`Piecewise::eval`] on a [`super::poly::CostExec`]: `k` MSBs + the pieces + up to
//! `k` muxes on `l`-bit values.

use super::poly::{eval_many, need_many, Exec, Need, Poly, PolyPlan};
use crate::{MpcError, Result};

fn bad(what: impl Into<String>) -> MpcError {
    MpcError::InvalidArgument { what: what.into() }
}

/// One segment's function.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// `0` (free).
    Zero,
    /// `x` (free).
    Identity,
    /// A polynomial (must have the piecewise function's fraction).
    Poly(Poly),
}

impl Piece {
    /// The piece in `f64`.
    pub fn eval_f64(&self, x: f64) -> f64 {
        match self {
            Piece::Zero => 0.0,
            Piece::Identity => x,
            Piece::Poly(p) => p.eval_f64(x),
        }
    }
}

/// A piecewise function with public breakpoints (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct Piecewise {
    breaks: Vec<f64>,
    pieces: Vec<Piece>,
    frac: u32,
}

impl Piecewise {
    /// `pieces[0]` on `x < breaks[0]`, `pieces[i]` on `[breaks[i-1], breaks[i])`, the last
    /// piece on `x >= breaks[k-1]`; input and output with `frac` fractional bits.
    pub fn new(breaks: &[f64], pieces: Vec<Piece>, frac: u32) -> Result<Self> {
        if pieces.len() != breaks.len() + 1 {
            return Err(bad(format!(
                "{} pieces for {} breakpoints",
                pieces.len(),
                breaks.len()
            )));
        }
        if breaks.windows(2).any(|w| !matches!(w, [a, b] if a < b))
            || breaks.iter().any(|b| !b.is_finite())
        {
            return Err(bad("breakpoints must be finite and increasing"));
        }
        if pieces
            .iter()
            .any(|p| matches!(p, Piece::Poly(q) if q.frac() != frac))
        {
            return Err(bad("a piece with another fraction"));
        }
        Ok(Self {
            breaks: breaks.to_vec(),
            pieces,
            frac,
        })
    }

    /// The breakpoints.
    pub fn breaks(&self) -> &[f64] {
        &self.breaks
    }

    /// The pieces.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// The function in `f64` (the approximation, not the function it approximates).
    pub fn eval_f64(&self, x: f64) -> f64 {
        let seg = self.breaks.iter().filter(|&&b| x >= b).count();
        self.pieces.get(seg).map_or(0.0, |p| p.eval_f64(x))
    }

    /// The narrowest ring (bits) in which every piece is evaluated correctly on its segment
    /// ([`Poly::min_ring_bits`], with the powers of the [`PolyPlan::Powers`] pieces shared as in
    /// [`Piecewise::eval`]); the comparisons further need `|x| < 2^{l-2-frac}` for the inputs
    /// (see the module documentation).
    pub fn min_ring_bits(&self) -> Result<u32> {
        Ok(self.need()?.ring_bits())
    }

    fn shared(&self) -> Vec<&Poly> {
        self.pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Poly(q) if q.plan() == PolyPlan::Powers => Some(q),
                _ => None,
            })
            .collect()
    }

    fn need(&self) -> Result<Need> {
        let shared = self.shared();
        let xmax = shared
            .iter()
            .map(|q| q.domain().0.abs().max(q.domain().1.abs()))
            .fold(0.0, f64::max);
        let mut need = need_many(&shared, xmax)?;
        for p in &self.pieces {
            if let Piece::Poly(q) = p {
                if q.plan() != PolyPlan::Powers {
                    need.join(q.need()?);
                }
            }
        }
        Ok(need)
    }

    /// Evaluates on `x` (fixed point with `frac` fractional bits, in `x`'s ring). A ring
    /// narrower than [`Piecewise::min_ring_bits`] is refused
    /// ([`MpcError::RingTooNarrow`]) before any traffic.
    pub fn eval<E: Exec>(&self, e: &mut E, x: &E::T) -> Result<E::T> {
        self.need()?.check(e.ring_of(x))?;
        let sc = (1u128 << self.frac) as f64;
        // comparisons: c_i = 1{x >= b_i} = ¬MSB(x - b_i), one batch
        let mut diffs = Vec::with_capacity(self.breaks.len());
        for b in &self.breaks {
            let k = (b * sc).round();
            if k.is_nan() || k.abs() >= 9.0e18 {
                return Err(bad("breakpoint out of range"));
            }
            diffs.push(e.lin(&[(1, x)], -(k as i64))?);
        }
        let msbs = if diffs.is_empty() {
            Vec::new()
        } else {
            e.msb(&diffs.iter().collect::<Vec<_>>())?
        };
        let bits: Vec<E::B> = msbs.iter().map(|m| e.not(m)).collect();
        // pieces: shared powers for the powers-plan polynomials
        let shared = self.shared();
        let mut shared_vals = eval_many(e, x, &shared)?.into_iter();
        let mut vals = Vec::with_capacity(self.pieces.len());
        for p in &self.pieces {
            vals.push(match p {
                Piece::Zero => None,
                Piece::Identity => Some(x.clone()),
                Piece::Poly(q) if q.plan() == PolyPlan::Powers => Some(
                    shared_vals
                        .next()
                        .ok_or_else(|| bad("missing shared polynomial"))?,
                ),
                Piece::Poly(q) => Some(q.eval(e, x)?),
            });
        }
        // differences and one batch of muxes
        let mut dv = Vec::new();
        let mut db = Vec::new();
        for (i, b) in bits.iter().enumerate() {
            let prev = vals.get(i).cloned().flatten();
            let cur = vals.get(i + 1).cloned().flatten();
            let d = match (cur, prev) {
                (None, None) => continue,
                (Some(c), None) => c,
                (None, Some(p)) => e.lin(&[(-1, &p)], 0)?,
                (Some(c), Some(p)) => e.lin(&[(1, &c), (-1, &p)], 0)?,
            };
            dv.push(d);
            db.push(b.clone());
        }
        let muxed = if dv.is_empty() {
            Vec::new()
        } else {
            e.mux(
                &db.iter().collect::<Vec<_>>(),
                &dv.iter().collect::<Vec<_>>(),
            )?
        };
        let mut terms: Vec<(i64, &E::T)> = muxed.iter().map(|m| (1, m)).collect();
        let first = vals.first().cloned().flatten();
        if let Some(p0) = first.as_ref() {
            terms.push((1, p0));
        }
        if terms.is_empty() {
            terms.push((0, x));
        }
        e.lin(&terms, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixed_math::poly::{grid, CostExec, ShareExec, Sym};
    use crate::nonlinear::{Cost, NlConfig, NlSession};
    use crate::{AShare, Prg, Ring};
    use duet_transport::{run_two_party, Channel, MemoryChannel, Role};

    /// Both parties after setup; the measured online traffic.
    fn two<T: Send>(
        cfg: NlConfig,
        need: crate::nonlinear::CotCount,
        f: impl Fn(&mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        let party = |role: Role, mut ch: MemoryChannel| {
            let mut rng = Prg::from_seed([role.index() as u8 + 9; 32]);
            let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
            s.reserve(&mut ch, need).unwrap();
            let before = ch.stats();
            let out = f(&mut s, &mut ch);
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

    #[test]
    fn piecewise_selects_the_right_piece_everywhere() {
        let f = 10;
        let p =
            |c: &[f64], lo, hi| Piece::Poly(Poly::new(c, PolyPlan::Powers, f, 12, lo, hi).unwrap());
        let q = Poly::new(
            &[0.5, 0.25, -0.5, 0.0, 0.125],
            PolyPlan::QuarticBySquares,
            f,
            12,
            -1.0,
            2.0,
        )
        .unwrap();
        let pw = Piecewise::new(
            &[-3.0, -1.0, 2.0, 5.0],
            vec![
                Piece::Zero,
                p(&[1.0, 0.5, 0.1], -3.0, -1.0),
                Piece::Poly(q),
                p(&[-1.0, 0.0, 0.0, 0.05], 2.0, 5.0),
                Piece::Identity,
            ],
            f,
        )
        .unwrap();
        // sized for the pieces (coefficients with 18 fractional bits for x^3 on [2, 5]) and
        // the input range (|x| < 2^7)
        let ring = Ring::new(36).unwrap();
        let range = 100.0;
        let mut xs = grid(-6.0, 7.0, 400);
        // extremes of the input range, the breakpoints and their neighbours
        xs.extend([-range, range - 0.01, -3.0, -1.0, 2.0, 5.0, 0.0]);
        xs.extend([-3.0, -1.0, 2.0, 5.0].map(|b| b - 1.0 / 1024.0));
        let sc = (1u64 << f) as f64;
        let enc: Vec<u64> = xs
            .iter()
            .map(|x| ring.from_i64((x * sc).round() as i64))
            .collect();
        let n = xs.len();
        let mut prg = Prg::from_seed([4; 32]);
        let (x0, x1) = AShare::share(ring, vec![n], &enc, &mut prg).unwrap();
        for cfg in [
            NlConfig {
                cot: crate::nonlinear::CotBackend::Ferret(
                    crate::ot::FerretParams::insecure_for_tests(),
                ),
                ..NlConfig::default()
            },
            NlConfig::iknp(),
        ] {
            let mut ce = CostExec::new(cfg);
            pw.eval(&mut ce, &Sym { ring, n }).unwrap();
            let (a, b, cost) = two(cfg, ce.cost().cots, |s, ch| {
                let x = if s.role() == Role::Server { &x0 } else { &x1 };
                let mut e = ShareExec::new(s, ch);
                pw.eval(&mut e, x).unwrap()
            });
            let got = a.reconstruct(&b).unwrap();
            for (x, g) in xs.iter().zip(&got) {
                let xq = (x * sc).round() / sc;
                let want = pw.eval_f64(xq);
                let g = ring.to_i64(*g) as f64 / sc;
                assert!((g - want).abs() <= 0.02, "x={x}: {g} vs {want}");
            }
            assert_eq!(cost.bytes, ce.cost().bytes);
            assert!(cost.rounds <= ce.cost().rounds);
        }
        assert!(Piecewise::new(&[1.0, 0.0], vec![Piece::Zero; 3], f).is_err());
        assert!(Piecewise::new(&[1.0], vec![Piece::Zero; 3], f).is_err());
    }
}
