//! Comparison family: millionaire (lt / eq), MSB, DReLU, lt, lt_public, lt_bounded, eq, AND,
//! for radix 1, 2, 4, 8, both OT directions and rings of 16, 32, 37, 64 bits; each checks the
//! plaintext result and that the measured traffic equals the cost formula exactly.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use crate::common;
use common::*;
use duet_mpc::nonlinear::{self as nl, BShare, CmpMode, NlConfig};
use duet_mpc::{Prg, Ring};
use duet_transport::Role;

fn bits_of(a: &BShare, b: &BShare) -> Vec<bool> {
    a.reconstruct(b).unwrap()
}

#[test]
fn millionaire_all_radixes_and_directions() {
    let mut prg = Prg::from_seed([3; 32]);
    for cfg in cfgs() {
        for bits in [1u32, 5, 15, 36, 63, 64] {
            let m = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            let mut xs: Vec<u64> = vec![0, 0, 1, m, m, m - 1, 5 & m, 0];
            let mut ys: Vec<u64> = vec![0, 1, 0, m, m - 1, m, 5 & m, m];
            for _ in 0..40 {
                let a = prg.ring_element(Ring::z64()) & m;
                xs.push(a);
                ys.push(match prg.ring_element(Ring::z64()) % 3 {
                    0 => a,
                    1 => a.wrapping_add(1) & m,
                    _ => prg.ring_element(Ring::z64()) & m,
                });
            }
            for mode in [CmpMode::Lt, CmpMode::Eq] {
                let (a, b, c) = run2(cfg, |role, s, ch| {
                    let inp = by_role(role, &xs, &ys);
                    nl::millionaire(s, ch, inp, bits, mode).unwrap()
                });
                let got = bits_of(&a, &b);
                for i in 0..xs.len() {
                    let want = match mode {
                        CmpMode::Lt => xs[i] < ys[i],
                        CmpMode::Eq => xs[i] == ys[i],
                    };
                    assert_eq!(got[i], want, "{cfg:?} bits {bits} {mode:?} i {i}");
                }
                assert_eq!(
                    c,
                    nl::millionaire_cost(xs.len(), bits, mode, cfg),
                    "{cfg:?} {bits}"
                );
            }
        }
    }
}

#[test]
fn comparisons_of_shared_values_all_rings() {
    let mut prg = Prg::from_seed([4; 32]);
    for l in RINGS {
        let ring = Ring::new(l).unwrap();
        for cfg in [
            NlConfig {
                radix: 4,
                ot_sender: Role::Server,
                ..default_cfg()
            },
            NlConfig {
                radix: 3,
                ot_sender: Role::Client,
                leaf_ot: nl::LeafOt::Rot,
                cot: nl::CotBackend::Iknp,
            },
        ] {
            let e = edge_values(ring, &mut prg, 20);
            // all pairs of edge values plus x = y, x = y +- 1
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for &a in &e {
                for &b in &e[..12] {
                    xs.push(a);
                    ys.push(b);
                }
                xs.extend([a, a, a]);
                ys.extend([a, ring.add(a, 1), ring.sub(a, 1)]);
            }
            let (x0, x1) = share(ring, &xs, &mut prg);
            let (y0, y1) = share(ring, &ys, &mut prg);
            let n = xs.len();
            let sg = |v: u64| ring.to_i64(v);
            let (r0, r1, c) = run2(cfg, |role, s, ch| {
                let (x, y) = (by_role(role, &x0, &x1), by_role(role, &y0, &y1));
                let m = nl::msb(s, ch, x).unwrap();
                let d = nl::drelu(s, ch, x).unwrap();
                let lt = nl::lt(s, ch, x, y).unwrap();
                let ltp = nl::lt_public(s, ch, x, &ys).unwrap();
                let eq = nl::eq(s, ch, x, y).unwrap();
                let ltb = nl::lt_bounded(s, ch, x, y).unwrap();
                (m, d, lt, ltp, eq, ltb)
            });
            let want_cost = [
                nl::msb_cost(n, ring, cfg),
                nl::drelu_cost(n, ring, cfg),
                nl::lt_cost(n, ring, cfg),
                nl::lt_public_cost(n, ring, cfg),
                nl::eq_cost(n, ring, cfg),
                nl::lt_bounded_cost(n, ring, cfg),
            ];
            let total = want_cost
                .iter()
                .fold((0, 0), |a, c| (a.0 + c.bytes, a.1 + c.rounds));
            // The calls run back to back: bytes add exactly; flights may merge at the seams.
            assert_eq!(c.bytes, total.0, "l {l}");
            assert!(c.rounds <= total.1 && c.rounds + 6 >= total.1, "l {l}");
            let (m, d, lt, ltp, eq, ltb) = (
                bits_of(&r0.0, &r1.0),
                bits_of(&r0.1, &r1.1),
                bits_of(&r0.2, &r1.2),
                bits_of(&r0.3, &r1.3),
                bits_of(&r0.4, &r1.4),
                bits_of(&r0.5, &r1.5),
            );
            for i in 0..n {
                let (a, b) = (sg(xs[i]), sg(ys[i]));
                assert_eq!(m[i], a < 0, "msb l {l} x {a}");
                assert_eq!(d[i], a >= 0, "drelu l {l} x {a}");
                assert_eq!(lt[i], a < b, "lt l {l} {a} {b}");
                assert_eq!(ltp[i], a < b, "lt_public l {l} {a} {b}");
                assert_eq!(eq[i], a == b, "eq l {l} {a} {b}");
                let diff = i128::from(a) - i128::from(b);
                if diff.abs() < 1i128 << (l - 1) {
                    assert_eq!(ltb[i], a < b, "lt_bounded l {l} {a} {b}");
                }
            }
        }
    }
}

#[test]
fn each_comparison_cost_is_exact() {
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([5; 32]);
    let xs = prg.ring_elements(ring, 1000);
    let (x0, x1) = share(ring, &xs, &mut prg);
    for cfg in [
        default_cfg(),
        NlConfig {
            radix: 2,
            ot_sender: Role::Client,
            ..default_cfg()
        },
    ] {
        type F = fn(&mut nl::NlSession, &mut duet_transport::MemoryChannel, &duet_mpc::AShare);
        let cases: [(F, nl::Cost); 4] = [
            (
                |s, ch, x| drop(nl::msb(s, ch, x).unwrap()),
                nl::msb_cost(1000, ring, cfg),
            ),
            (
                |s, ch, x| drop(nl::lt(s, ch, x, x).unwrap()),
                nl::lt_cost(1000, ring, cfg),
            ),
            (
                |s, ch, x| drop(nl::eq(s, ch, x, x).unwrap()),
                nl::eq_cost(1000, ring, cfg),
            ),
            (
                |s, ch, x| drop(nl::lt_public(s, ch, x, x.data()).unwrap()),
                nl::lt_public_cost(1000, ring, cfg),
            ),
        ];
        for (f, want) in cases {
            let (_, _, c) = run2(cfg, |role, s, ch| f(s, ch, by_role(role, &x0, &x1)));
            assert_eq!(c, want, "{cfg:?}");
        }
    }
}

#[test]
fn and_is_correct_and_cost_exact() {
    let mut prg = Prg::from_seed([6; 32]);
    for (ot_sender, cot) in [
        (Role::Server, ferret_test()),
        (Role::Client, ferret_test()),
        (Role::Client, nl::CotBackend::Iknp),
    ] {
        let cfg = NlConfig {
            radix: 4,
            ot_sender,
            cot,
            ..default_cfg()
        };
        let n = 1000;
        let r: Vec<bool> = (0..4 * n)
            .map(|_| prg.ring_element(Ring::z64()) & 1 == 1)
            .collect();
        let (x0, x1, y0, y1) = (
            BShare::from_bits(&r[..n]),
            BShare::from_bits(&r[n..2 * n]),
            BShare::from_bits(&r[2 * n..3 * n]),
            BShare::from_bits(&r[3 * n..]),
        );
        let (a, b, c) = run2(cfg, |role, s, ch| {
            nl::and(s, ch, by_role(role, &x0, &x1), by_role(role, &y0, &y1)).unwrap()
        });
        let z = bits_of(&a, &b);
        let x = bits_of(&x0, &x1);
        let y = bits_of(&y0, &y1);
        for i in 0..n {
            assert_eq!(z[i], x[i] & y[i]);
        }
        assert_eq!(c, nl::and_cost(n, cfg));
    }
}

#[test]
fn large_batch_spanning_chunks() {
    // More leaves than one KK13 / IKNP chunk (65,536), with a ragged last chunk.
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([7; 32]);
    let n = 9000;
    let xs = prg.ring_elements(ring, n);
    let (x0, x1) = share(ring, &xs, &mut prg);
    for cfg in [
        default_cfg(),
        NlConfig {
            leaf_ot: nl::LeafOt::Rot,
            ot_sender: Role::Client,
            ..default_cfg()
        },
    ] {
        let (a, b, c) = run2(cfg, |role, s, ch| {
            nl::msb(s, ch, by_role(role, &x0, &x1)).unwrap()
        });
        let m = bits_of(&a, &b);
        assert!((0..n).all(|i| m[i] == ring.msb(xs[i])));
        assert_eq!(c, nl::msb_cost(n, ring, cfg));
    }
}

#[test]
fn setup_cost_is_exact() {
    for cfg in [NlConfig::iknp(), default_cfg()] {
        let (a, b) = duet_transport::run_two_party(
            |mut ch| {
                let mut rng = Prg::from_seed([1; 32]);
                nl::NlSession::setup(&mut ch, Role::Server, &mut rng, cfg).unwrap();
                duet_transport::Channel::stats(&ch)
            },
            |mut ch| {
                let mut rng = Prg::from_seed([2; 32]);
                nl::NlSession::setup(&mut ch, Role::Client, &mut rng, cfg).unwrap();
                duet_transport::Channel::stats(&ch)
            },
        );
        assert_eq!(measured(a, b), nl::NlSession::setup_cost(cfg));
    }
    assert_eq!(nl::NlSession::setup_cost(NlConfig::iknp()).bytes, 16_448);
}

/// The real default (Ferret with the B13 parameters): a protocol reserves its COTs by itself,
/// transparently (the first call runs a main Ferret iteration of about ten million COTs),
/// results are right, and once reserved the online traffic is the formula's.
#[test]
fn default_config_real_ferret_reserves_transparently() {
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([9; 32]);
    let x = edge_values(ring, &mut prg, 500);
    let y: Vec<u64> = prg.ring_elements(ring, x.len());
    let (x0, x1) = share(ring, &x, &mut prg);
    let (y0, y1) = share(ring, &y, &mut prg);
    let n = x.len();
    let cfg = NlConfig::default();
    let ((m0, online0), (m1, _)) = duet_transport::run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([1; 32]);
            let mut s = nl::NlSession::setup(&mut ch, Role::Server, &mut rng, cfg).unwrap();
            // first call: reserves (a Ferret iteration) inside
            let first = nl::lt_bounded(&mut s, &mut ch, &x0, &y0).unwrap();
            assert!(s.pooled().0 > 1_000_000, "a main iteration ran");
            let before = duet_transport::Channel::stats(&ch);
            let again = nl::lt_bounded(&mut s, &mut ch, &x0, &y0).unwrap();
            let online = duet_transport::Channel::stats(&ch) - before;
            (vec![first, again], online)
        },
        |mut ch| {
            let mut rng = Prg::from_seed([2; 32]);
            let mut s = nl::NlSession::setup(&mut ch, Role::Client, &mut rng, cfg).unwrap();
            let first = nl::lt_bounded(&mut s, &mut ch, &x1, &y1).unwrap();
            let again = nl::lt_bounded(&mut s, &mut ch, &x1, &y1).unwrap();
            (vec![first, again], duet_transport::ChannelStats::default())
        },
    );
    let want: Vec<bool> = x
        .iter()
        .zip(&y)
        .map(|(&a, &b)| ring.to_i64(ring.sub(a, b)) < 0)
        .collect();
    for (a, b) in m0.iter().zip(&m1) {
        assert_eq!(bits_of(a, b), want);
    }
    let c = nl::lt_bounded_cost(n, ring, cfg);
    // online: the server's own sent bytes and those it received
    assert_eq!(online0.bytes_sent + online0.bytes_received, c.bytes);
}

/// `lt` and `lt_public` on batches above [`nl::PP_MAX_ELEMS`] comparisons: the millionaire tree
/// and the final AND on Beaver triples made in the leaf flight (small calls take the ping-pong
/// tree). Edge values against edge values and random pairs, both OT directions, cost exact.
#[test]
fn lt_on_the_beaver_tree_is_exact() {
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([8; 32]);
    let n = 16_500;
    let e = edge_values(ring, &mut prg, 0);
    let mut xs = Vec::with_capacity(n);
    let mut ys = Vec::with_capacity(n);
    for &a in &e {
        for &b in &e {
            xs.push(a);
            ys.push(b);
        }
    }
    xs.extend(prg.ring_elements(ring, n - xs.len()));
    ys.extend(prg.ring_elements(ring, n - ys.len()));
    // ping-pong for neither call
    assert!(2 * n > nl::PP_MAX_ELEMS && n <= nl::MAX_BATCH);
    let (x0, x1) = share(ring, &xs, &mut prg);
    let (y0, y1) = share(ring, &ys, &mut prg);
    let sg = |v: u64| ring.to_i64(v);
    // IKNP: the COTs of these calls exceed the Ferret reservation of `run2`
    for (ot_sender, leaf_ot) in [
        (Role::Server, nl::LeafOt::Rot),
        (Role::Client, nl::LeafOt::Kk13),
    ] {
        let cfg = NlConfig {
            ot_sender,
            leaf_ot,
            cot: nl::CotBackend::Iknp,
            ..default_cfg()
        };
        let (a, b, c) = run2(cfg, |role, s, ch| {
            let (x, y) = (by_role(role, &x0, &x1), by_role(role, &y0, &y1));
            nl::lt(s, ch, x, y).unwrap()
        });
        assert_eq!(c, nl::lt_cost(n, ring, cfg), "lt {cfg:?}");
        let lt = bits_of(&a, &b);
        let (a, b, c) = run2(cfg, |role, s, ch| {
            nl::lt_public(s, ch, by_role(role, &x0, &x1), &ys).unwrap()
        });
        assert_eq!(c, nl::lt_public_cost(n, ring, cfg), "lt_public {cfg:?}");
        let ltp = bits_of(&a, &b);
        for i in 0..n {
            let (p, q) = (sg(xs[i]), sg(ys[i]));
            assert_eq!(lt[i], p < q, "lt {p} {q}");
            assert_eq!(ltp[i], p < q, "lt_public {p} {q}");
        }
    }
}
