//! Polynomials ([`PolyPlan::Powers`]) and piecewise functions (one or two polynomial pieces,
//! sharing their powers) on uniformly random shares against the float polynomials, over the
//! whole domain (negative values included), in every ring from `Z_2^20` up: a ring narrower
//! than [`Poly::min_ring_bits`] (or [`Piecewise::min_ring_bits`]) must be refused with
//! [`MpcError::RingTooNarrow`] (by the secure run and the cost count alike, before any
//! traffic), and the narrowest ring accepted must give results within [`ulps_bound`] and the
//! traffic the cost count predicts.
//!
//! Regression: a PUMA-like GELU piece (degree 6, 12 fractional bits, coefficients with at least
//! 20, on `[-3, 3]`) evaluated in `Z_2^37` returned values 4.0 (`2^14` ulps) or 8.0 low. Its
//! coefficients are rounded to 23 fractional bits (so that rounding them costs at most a
//! quarter ulp), the final sum is held at `12 + 23 = 35` fractional bits, where `|P| <= 3.02`
//! reaches `2^36.6` and the offset that makes it non-negative is `2^37`: that offset is 0 in
//! `Z_2^37` (the known-MSB truncation then sees negative or too large values), and subtracting
//! it back (`2^37 >> 23 = 2^14`) is not. The plan needs `Z_2^39`.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use crate::common;
use common::*;
use duet_mpc::fixed_math::piecewise::{Piece, Piecewise};
use duet_mpc::fixed_math::poly::{
    grid, plain, BoundsExec, CostExec, Exec, Poly, PolyPlan, ShareExec, Sym,
};
use duet_mpc::nonlinear::{Cost, NlConfig};
use duet_mpc::{AShare, MpcError, Prg, Ring};
use duet_transport::Role;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Error bound (ulps of `f` fractional bits) of the powers plan at `x`, against the float
/// polynomial at the (exact) fixed-point input: every truncation is at most two ulps low (the
/// floor, and the secure known-MSB truncation may be one less), and its error propagates
/// through the powers (`x^{a+b} = x^a x^b`, `x^{2a} = (x^a)^2`, `a = k / 2`):
/// `e_1 = 0`, `e_{a+b} = |x|^a e_b + |x|^b e_a + e_a e_b 2^{-f} + 2`; the sum carries
/// `sum |a_k| e_k`, the rounding of the coefficients at most a quarter ulp (plus a quarter for
/// the rounded coefficients times the powers' errors) and the final truncation two ulps.
fn ulps_bound(coeffs: &[f64], x: f64, f: u32) -> f64 {
    fn err(k: usize, x: f64, f: u32) -> f64 {
        if k <= 1 {
            return 0.0;
        }
        let (a, b) = (k / 2, k - k / 2);
        let (ea, eb) = (err(a, x, f), err(b, x, f));
        x.powi(a as i32) * eb + x.powi(b as i32) * ea + ea * eb / (1u64 << f) as f64 + 2.0
    }
    let powers: f64 = coeffs
        .iter()
        .enumerate()
        .skip(1)
        .map(|(k, a)| a.abs() * err(k, x.abs(), f))
        .sum();
    2.5 + powers
}

/// Polynomial pieces on contiguous domains, between a zero piece and the identity.
#[derive(Clone, Debug)]
struct Case {
    /// `(coefficients, lo, hi)`, `hi` of one the `lo` of the next.
    pieces: Vec<(Vec<f64>, f64, f64)>,
    frac: u32,
    coeff_frac: u32,
}

/// The reported case, a PUMA-like GELU (two pieces sharing their powers) and random ones
/// (seeded: one or two pieces of degrees 2 to 6, some zero coefficients, domains around 0 up to
/// 4 on either side, 8 to 12 fractional bits).
fn cases() -> Vec<Case> {
    let mut v = vec![
        Case {
            pieces: vec![(
                vec![
                    0.0084531062076436,
                    0.5,
                    0.3607528978943427,
                    0.0,
                    -0.03784845173189846,
                    0.0,
                    0.0018197683208039973,
                ],
                -3.0,
                3.0,
            )],
            frac: 12,
            coeff_frac: 20,
        },
        Case {
            pieces: vec![
                (
                    vec![
                        -0.5054031199708174,
                        -0.42226581151983866,
                        -0.11807612951181953,
                        -0.011034134030615728,
                    ],
                    -4.0,
                    -1.953125,
                ),
                (
                    vec![
                        0.008526321541038084,
                        0.5,
                        0.3603292692789629,
                        0.0,
                        -0.037688200365904236,
                        0.0,
                        0.0018067462606141187,
                    ],
                    -1.953125,
                    3.0,
                ),
            ],
            frac: 10,
            coeff_frac: 11,
        },
    ];
    let mut rng = ChaCha20Rng::seed_from_u64(0x5eed_0001);
    for _ in 0..6 {
        let frac = [8, 10, 12][rng.gen_range(0..3)];
        // on the fixed-point grid: the breakpoints are compared as fixed-point values
        let mut at = |a: f64, b: f64| (rng.gen_range(a..b) * 64.0f64).round() / 64.0;
        let lo = -at(0.5, 4.0);
        let hi = at(0.5, 4.0);
        let mid = at(lo + 0.25, hi - 0.25);
        let spans = if rng.gen_bool(0.5) {
            vec![(lo, hi)]
        } else {
            vec![(lo, mid), (mid, hi)]
        };
        let pieces = spans
            .into_iter()
            .map(|(a, b)| {
                let d = rng.gen_range(2..=6usize);
                let mut fact = 1.0;
                let coeffs = (0..=d)
                    .map(|k| {
                        fact *= k.max(1) as f64;
                        if k > 1 && k < d && rng.gen_bool(0.3) {
                            0.0
                        } else {
                            rng.gen_range(-2.0..2.0) / fact
                        }
                    })
                    .collect();
                (coeffs, a, b)
            })
            .collect();
        v.push(Case {
            pieces,
            frac,
            coeff_frac: [frac, 16, 20][rng.gen_range(0..3)],
        });
    }
    v
}

/// A function under test: the piecewise one, or one of its polynomials alone.
enum Fun {
    Pw(Piecewise),
    Poly(Poly),
}

impl Fun {
    fn min_ring_bits(&self) -> u32 {
        match self {
            Fun::Pw(p) => p.min_ring_bits().unwrap(),
            Fun::Poly(p) => p.min_ring_bits().unwrap(),
        }
    }

    fn eval<E: Exec>(&self, e: &mut E, x: &E::T) -> duet_mpc::Result<E::T> {
        match self {
            Fun::Pw(p) => p.eval(e, x),
            Fun::Poly(p) => p.eval(e, x),
        }
    }
}

/// One party's output for one function: the ring accepted, the output, the predicted cost,
/// the widths refused.
type Out = (Ring, AShare, Cost, Vec<u32>);

#[test]
fn powers_plan_is_right_or_refused_in_every_ring() {
    let first = 20u32;
    let rings: Vec<Ring> = (first..=64).map(|b| Ring::new(b).unwrap()).collect();
    let mut prg = Prg::from_seed([11; 32]);
    for cfg in [
        default_cfg(),
        NlConfig {
            ot_sender: Role::Client,
            ..NlConfig::iknp()
        },
    ] {
        // the functions, their inputs (the domain on a 1/32 grid with its ends, one ulp
        // either side of the breakpoints, and points outside) and their shares in every ring
        let mut work = Vec::new();
        for c in cases() {
            let polys: Vec<Poly> = c
                .pieces
                .iter()
                .map(|(a, lo, hi)| {
                    Poly::new(a, PolyPlan::Powers, c.frac, c.coeff_frac, *lo, *hi).unwrap()
                })
                .collect();
            let mut breaks: Vec<f64> = c.pieces.iter().map(|p| p.1).collect();
            let (lo, hi) = (breaks[0], c.pieces.last().unwrap().2);
            breaks.push(hi);
            let mut pieces = vec![Piece::Zero];
            pieces.extend(polys.iter().cloned().map(Piece::Poly));
            pieces.push(Piece::Identity);
            let pw = Piecewise::new(&breaks, pieces, c.frac).unwrap();
            let sc = (1u64 << c.frac) as f64;
            let ulp = 1.0 / sc;
            let mut xs = grid(lo, hi, ((hi - lo) * 32.0).ceil() as usize);
            for b in &breaks {
                xs.extend([b - ulp, *b, b + ulp]);
            }
            xs.extend([0.0, ulp, -ulp, lo - 1.0, hi + 1.0, -7.5, 7.5]);
            let enc: Vec<i64> = xs.iter().map(|x| (x * sc).round() as i64).collect();
            let shares: Vec<(AShare, AShare)> = rings
                .iter()
                .map(|&r| {
                    let v: Vec<u64> = enc.iter().map(|&e| r.from_i64(e)).collect();
                    share(r, &v, &mut prg)
                })
                .collect();
            let mut funs = vec![Fun::Pw(pw)];
            funs.extend(polys.into_iter().map(Fun::Poly));
            work.push((c, funs, enc, shares));
        }
        let (a, b, measured) = run2(cfg, |role, s, ch| {
            let mut outs: Vec<Vec<Out>> = Vec::new();
            for (_, funs, enc, shares) in &work {
                let n = enc.len();
                let mut case_outs = Vec::new();
                for fun in funs {
                    let mut refused = Vec::new();
                    let mut done = None;
                    for (ring, (x0, x1)) in rings.iter().zip(shares) {
                        let mut ce = CostExec::new(cfg);
                        let predicted = fun.eval(&mut ce, &Sym { ring: *ring, n });
                        let mut e = ShareExec::new(s, ch);
                        match fun.eval(&mut e, by_role(role, x0, x1)) {
                            Ok(y) => {
                                predicted.unwrap();
                                done = Some((*ring, y, ce.cost(), refused));
                                break;
                            }
                            Err(MpcError::RingTooNarrow { bits, need, what }) => {
                                assert_eq!(bits, ring.bits());
                                assert!(need > bits, "{need} <= {bits}: {what}");
                                // refused alike by the cost count
                                assert!(matches!(predicted, Err(MpcError::RingTooNarrow { .. })));
                                refused.push(bits);
                            }
                            Err(other) => panic!("Z_2^{}: {other}", ring.bits()),
                        }
                    }
                    case_outs.push(done.expect("no ring accepted"));
                }
                outs.push(case_outs);
            }
            outs
        });
        let mut predicted = Cost::default();
        for (i, ((c, funs, enc, _), (oa, ob))) in work.iter().zip(a.iter().zip(&b)).enumerate() {
            let sc = (1u64 << c.frac) as f64;
            for (fun, ((ring, ya, cost, refused), (rb, yb, _, _))) in
                funs.iter().zip(oa.iter().zip(ob))
            {
                assert_eq!(ring, rb);
                predicted = predicted + *cost;
                // the first ring accepted is the one the plan says, every narrower one was
                // refused
                assert_eq!(ring.bits(), fun.min_ring_bits().max(first), "{c:?}");
                assert_eq!(*refused, (first..ring.bits()).collect::<Vec<_>>());
                let y = ya.reconstruct(yb).unwrap();
                let mut worst = 0.0f64;
                for (&e, &y) in enc.iter().zip(&y) {
                    let x = e as f64 / sc;
                    let y = ring.to_i64(y) as f64 / sc;
                    // the piece that gives the value (the polynomial alone: on its domain)
                    let piece = match fun {
                        Fun::Pw(pw) => {
                            let seg = pw.breaks().iter().filter(|&&b| x >= b).count();
                            match &pw.pieces()[seg] {
                                Piece::Poly(p) => p,
                                other => {
                                    // zero or the identity, exactly
                                    assert_eq!(y, other.eval_f64(x), "{c:?} at {x}");
                                    continue;
                                }
                            }
                        }
                        Fun::Poly(p) => {
                            let (lo, hi) = p.domain();
                            if x < lo || x > hi {
                                continue;
                            }
                            p
                        }
                    };
                    let bound = ulps_bound(piece.coeffs(), x, c.frac);
                    let want = piece.eval_f64(x);
                    let err = (y - want).abs() * sc;
                    assert!(
                        err <= bound,
                        "Z_2^{}: {y} at {x}, want {want}: {err} ulps > {bound} ({c:?})",
                        ring.bits()
                    );
                    worst = worst.max(err / bound);
                }
                if let Fun::Poly(p) = fun {
                    // the plaintext check of the domain's samples agrees in the ring accepted
                    let (lo, hi) = p.domain();
                    let mut bx = BoundsExec::new();
                    p.eval(&mut bx, &plain(*ring, c.frac, &grid(lo, hi, 2000)))
                        .unwrap();
                    assert!(bx.violations().is_empty(), "{:?}", bx.violations());
                }
                if i == 0 {
                    assert!(refused.contains(&37), "Z_2^37 is too narrow for {c:?}");
                }
                println!(
                    "case {i} {}: Z_2^{}, worst error {worst:.2} of the bound",
                    if matches!(fun, Fun::Pw(_)) {
                        "piecewise"
                    } else {
                        "polynomial"
                    },
                    ring.bits(),
                );
            }
        }
        assert_eq!(measured.bytes, predicted.bytes);
        assert!(measured.rounds <= predicted.rounds);
    }
}
