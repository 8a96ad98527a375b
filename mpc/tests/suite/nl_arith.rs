//! B2A, mux, multiplication (Gilboa against an ideal insecure product), truncation variants
//! with their error bounds, ReLU, max, ring extension / reduction: plaintext checks over edge
//! and random values, uniformly random shares, rings 16/32/37/64, both OT directions, and
//! exact traffic against the cost formulas.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]

use crate::common;
use common::*;
use duet_mpc::nonlinear::{self as nl, BShare, LeafOt, NlConfig, NlSession, TruncMode};
use duet_mpc::{AShare, Prg, Result, Ring};
use duet_transport::{MemoryChannel, Role};

/// Ferret with random-OT leaves (the default), IKNP with random-OT leaves, and Ferret with
/// KK13 leaves, with both OT senders.
fn both() -> [NlConfig; 3] {
    [
        NlConfig {
            radix: 4,
            ot_sender: Role::Server,
            ..default_cfg()
        },
        NlConfig {
            radix: 3,
            ot_sender: Role::Client,
            leaf_ot: LeafOt::Rot,
            cot: duet_mpc::nonlinear::CotBackend::Iknp,
        },
        NlConfig {
            radix: 4,
            ot_sender: Role::Client,
            leaf_ot: LeafOt::Kk13,
            ..default_cfg()
        },
    ]
}

fn rec(a: &AShare, b: &AShare) -> Vec<u64> {
    a.reconstruct(b).unwrap()
}

#[test]
fn b2a_and_mux() {
    let mut prg = Prg::from_seed([8; 32]);
    for l in RINGS {
        let ring = Ring::new(l).unwrap();
        for cfg in both() {
            let xs = edge_values(ring, &mut prg, 50);
            let n = xs.len();
            let bits: Vec<bool> = (0..2 * n).map(|_| prg.next_u64_bit()).collect();
            let (c0, c1) = (BShare::from_bits(&bits[..n]), BShare::from_bits(&bits[n..]));
            let c = c0.reconstruct(&c1).unwrap();
            let (x0, x1) = share(ring, &xs, &mut prg);
            let (r0, r1, cost) = run2(cfg, |role, s, ch| {
                let b = nl::b2a(s, ch, by_role(role, &c0, &c1), ring).unwrap();
                let m = nl::mux(s, ch, by_role(role, &c0, &c1), by_role(role, &x0, &x1)).unwrap();
                (b, m)
            });
            let b = rec(&r0.0, &r1.0);
            let m = rec(&r0.1, &r1.1);
            for i in 0..n {
                assert_eq!(b[i], u64::from(c[i]));
                assert_eq!(m[i], if c[i] { xs[i] } else { 0 });
            }
            let want_b = nl::b2a_cost(n, ring, cfg);
            let want_m = nl::mux_cost(n, ring, cfg);
            assert_eq!(cost.bytes, want_b.bytes + want_m.bytes);
            // no flight merges at the seam: mux starts with the b2a receiver sending
            assert_eq!(cost.rounds, want_b.rounds + want_m.rounds);
        }
    }
}

trait NextBit {
    fn next_u64_bit(&mut self) -> bool;
}
impl NextBit for Prg {
    fn next_u64_bit(&mut self) -> bool {
        self.ring_element(Ring::z64()) & 1 == 1
    }
}

/// The multiplication suite, instantiated for Gilboa and for an ideal (insecure) product.
trait Multiplier: Sync {
    fn mul(
        &self,
        s: &mut NlSession,
        ch: &mut MemoryChannel,
        x: &AShare,
        y: &AShare,
    ) -> Result<AShare>;
}
struct Gilboa;
impl Multiplier for Gilboa {
    fn mul(
        &self,
        s: &mut NlSession,
        ch: &mut MemoryChannel,
        x: &AShare,
        y: &AShare,
    ) -> Result<AShare> {
        nl::mul(s, ch, x, y)
    }
}
/// Insecure: the parties reveal their shares to each other (tests only).
struct Ideal;
impl Multiplier for Ideal {
    fn mul(
        &self,
        s: &mut NlSession,
        ch: &mut MemoryChannel,
        x: &AShare,
        y: &AShare,
    ) -> Result<AShare> {
        use duet_transport::Channel;
        let r = x.ring();
        ch.send_u64s(x.data())?;
        ch.send_u64s(y.data())?;
        let ox = ch.recv_u64s()?;
        let oy = ch.recv_u64s()?;
        let v: Vec<u64> = (0..x.len())
            .map(|i| r.mul(r.add(x.data()[i], ox[i]), r.add(y.data()[i], oy[i])))
            .collect();
        let out = if s.role() == Role::Server {
            v
        } else {
            vec![0; x.len()]
        };
        AShare::new(r, x.shape().to_vec(), out)
    }
}

fn mul_suite(m: &dyn Multiplier, check_cost: bool) {
    let mut prg = Prg::from_seed([9; 32]);
    for l in RINGS {
        let ring = Ring::new(l).unwrap();
        for cfg in both() {
            let e = edge_values(ring, &mut prg, 30);
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for &a in &e {
                for &b in &e[..12] {
                    xs.push(a);
                    ys.push(b);
                }
            }
            let n = xs.len();
            let (x0, x1) = share(ring, &xs, &mut prg);
            let (y0, y1) = share(ring, &ys, &mut prg);
            let (a, b, cost) = run2(cfg, |role, s, ch| {
                m.mul(s, ch, by_role(role, &x0, &x1), by_role(role, &y0, &y1))
                    .unwrap()
            });
            let z = rec(&a, &b);
            for i in 0..n {
                assert_eq!(z[i], ring.mul(xs[i], ys[i]), "l {l}");
            }
            if check_cost {
                assert_eq!(cost, nl::mul_cost(n, ring, cfg), "l {l}");
            }
        }
    }
}

#[test]
fn multiplication_gilboa() {
    mul_suite(&Gilboa, true);
}

#[test]
fn multiplication_ideal_checks_the_suite() {
    mul_suite(&Ideal, false);
}

#[test]
fn truncation_variants_within_their_bounds() {
    let mut prg = Prg::from_seed([10; 32]);
    for l in RINGS {
        let ring = Ring::new(l).unwrap();
        for cfg in both() {
            let xs = edge_values(ring, &mut prg, 200);
            let n = xs.len();
            let (x0, x1) = share(ring, &xs, &mut prg);
            for f in [1u32, 12, l / 2, l - 1] {
                for mode in [TruncMode::Faithful, TruncMode::OneBit] {
                    let (a, b, cost) = run2(cfg, |role, s, ch| {
                        nl::trunc(s, ch, by_role(role, &x0, &x1), f, mode).unwrap()
                    });
                    let z = rec(&a, &b);
                    for i in 0..n {
                        let want = ring.to_i64(xs[i]) >> f;
                        let got = ring.to_i64(z[i]);
                        match mode {
                            TruncMode::Faithful => {
                                assert_eq!(got, want, "l {l} f {f} x {}", ring.to_i64(xs[i]))
                            }
                            _ => {
                                assert!(got == want || got == want - 1, "l {l} f {f} {got} {want}")
                            }
                        }
                    }
                    assert_eq!(
                        cost,
                        nl::trunc_cost(n, ring, f, mode, cfg),
                        "l {l} f {f} {mode:?}"
                    );
                }
                // known MSB: split the values by sign
                for mu in [false, true] {
                    let sel: Vec<u64> = xs.iter().copied().filter(|&v| ring.msb(v) == mu).collect();
                    let (s0, s1) = share(ring, &sel, &mut prg);
                    let mode = TruncMode::KnownMsb(mu);
                    let (a, b, cost) = run2(cfg, |role, s, ch| {
                        nl::trunc(s, ch, by_role(role, &s0, &s1), f, mode).unwrap()
                    });
                    let z = rec(&a, &b);
                    for i in 0..sel.len() {
                        let want = ring.to_i64(sel[i]) >> f;
                        let got = ring.to_i64(z[i]);
                        assert!(
                            got == want || got == want - 1,
                            "known l {l} f {f} {got} {want}"
                        );
                    }
                    assert_eq!(cost, nl::trunc_cost(sel.len(), ring, f, mode, cfg));
                }
            }
        }
    }
}

#[test]
fn one_bit_truncation_does_err_sometimes() {
    // The bound is tight: the one-bit variant is not secretly exact (so the test above can fail).
    let ring = Ring::new(32).unwrap();
    let mut prg = Prg::from_seed([11; 32]);
    let xs = prg.ring_elements(ring, 500);
    let (x0, x1) = share(ring, &xs, &mut prg);
    let (a, b, _) = run2(default_cfg(), |role, s, ch| {
        nl::trunc(s, ch, by_role(role, &x0, &x1), 12, TruncMode::OneBit).unwrap()
    });
    let z = rec(&a, &b);
    assert!((0..500).any(|i| ring.to_i64(z[i]) != ring.to_i64(xs[i]) >> 12));
}

#[test]
fn relu_and_max() {
    let mut prg = Prg::from_seed([12; 32]);
    for l in RINGS {
        let ring = Ring::new(l).unwrap();
        for cfg in both() {
            let xs = edge_values(ring, &mut prg, 40);
            let n = xs.len();
            let (x0, x1) = share(ring, &xs, &mut prg);
            let (a, b, cost) = run2(cfg, |role, s, ch| {
                nl::relu(s, ch, by_role(role, &x0, &x1)).unwrap()
            });
            let z = rec(&a, &b);
            for i in 0..n {
                assert_eq!(ring.to_i64(z[i]), ring.to_i64(xs[i]).max(0));
            }
            assert_eq!(cost, nl::relu_cost(n, ring, cfg));
            // max over rows of 7 of bounded values
            let (rows, k) = (9usize, 7usize);
            let q = 1i64 << (l - 3);
            let vals: Vec<u64> = (0..rows * k)
                .map(|i| match i % 5 {
                    0 => ring.from_i64(-q),
                    1 => ring.from_i64(q - 1),
                    _ => ring.from_i64((prg.ring_element(Ring::z64()) as i64) % q),
                })
                .collect();
            let (v0, v1) = AShare::share(ring, vec![rows, k], &vals, &mut prg).unwrap();
            let (a, b, cost) = run2(cfg, |role, s, ch| {
                nl::max_axis(s, ch, by_role(role, &v0, &v1)).unwrap()
            });
            assert_eq!(a.shape(), &[rows]);
            let z = rec(&a, &b);
            for r in 0..rows {
                let want = vals[r * k..(r + 1) * k]
                    .iter()
                    .map(|&v| ring.to_i64(v))
                    .max()
                    .unwrap();
                assert_eq!(ring.to_i64(z[r]), want);
            }
            assert_eq!(cost, nl::max_axis_cost(rows, k, ring, cfg));
        }
    }
}

#[test]
fn ring_extension_and_reduction() {
    let mut prg = Prg::from_seed([13; 32]);
    for (l1, l2) in [(16u32, 32u32), (32, 37), (37, 64), (16, 64), (63, 64)] {
        let (r1, r2) = (Ring::new(l1).unwrap(), Ring::new(l2).unwrap());
        for cfg in both() {
            let xs = edge_values(r1, &mut prg, 60);
            let n = xs.len();
            let (x0, x1) = share(r1, &xs, &mut prg);
            for signed in [false, true] {
                let (a, b, cost) = run2(cfg, |role, s, ch| {
                    nl::extend(s, ch, by_role(role, &x0, &x1), r2, signed).unwrap()
                });
                let z = rec(&a, &b);
                for i in 0..n {
                    if signed {
                        assert_eq!(r2.to_i64(z[i]), r1.to_i64(xs[i]), "{l1}->{l2}");
                    } else {
                        assert_eq!(z[i], xs[i], "{l1}->{l2}");
                    }
                }
                assert_eq!(cost, nl::extend_cost(n, r1, r2, cfg));
                // and back down: local
                let d = nl::reduce(&a, r1)
                    .unwrap()
                    .reconstruct(&nl::reduce(&b, r1).unwrap())
                    .unwrap();
                assert_eq!(d, xs);
            }
        }
    }
}

#[test]
fn cot_batches_spanning_chunks() {
    // More ring COTs than one chunk (65,536): mul with 2,000 x 37 COTs per direction, b2a
    // and mux on 70,000 elements; ragged last chunks.
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([14; 32]);
    for cfg in both() {
        let n = 2000;
        let xs = prg.ring_elements(ring, n);
        let ys = prg.ring_elements(ring, n);
        let (x0, x1) = share(ring, &xs, &mut prg);
        let (y0, y1) = share(ring, &ys, &mut prg);
        let (a, b, cost) = run2(cfg, |role, s, ch| {
            nl::mul(s, ch, by_role(role, &x0, &x1), by_role(role, &y0, &y1)).unwrap()
        });
        let z = rec(&a, &b);
        assert!((0..n).all(|i| z[i] == ring.mul(xs[i], ys[i])));
        assert_eq!(cost, nl::mul_cost(n, ring, cfg));
        let m = 70_000;
        let bits: Vec<bool> = (0..2 * m).map(|_| prg.next_u64_bit()).collect();
        let (c0, c1) = (BShare::from_bits(&bits[..m]), BShare::from_bits(&bits[m..]));
        let c = c0.reconstruct(&c1).unwrap();
        let vs = prg.ring_elements(ring, m);
        let (v0, v1) = share(ring, &vs, &mut prg);
        let (r0, r1, cost) = run2(cfg, |role, s, ch| {
            let c = by_role(role, &c0, &c1);
            (
                nl::b2a(s, ch, c, ring).unwrap(),
                nl::mux(s, ch, c, by_role(role, &v0, &v1)).unwrap(),
            )
        });
        let (bb, mm) = (rec(&r0.0, &r1.0), rec(&r0.1, &r1.1));
        assert!((0..m).all(|i| bb[i] == u64::from(c[i])));
        assert!((0..m).all(|i| mm[i] == if c[i] { vs[i] } else { 0 }));
        let (wb, wm) = (nl::b2a_cost(m, ring, cfg), nl::mux_cost(m, ring, cfg));
        assert_eq!(cost.bytes, wb.bytes + wm.bytes);
        assert_eq!(cost.rounds, wb.rounds + wm.rounds);
    }
}
