//! OT-based matrix products (`matmul_known_*`, `matmul_shared`): exact equality with the
//! plaintext product mod `2^l` on random, extreme and negative values, several shapes (one
//! spanning several COT chunks, one several correction messages, one several runs), both
//! holders, both COT backends, rings 24/37/64; measured traffic equal to the cost formulas;
//! malformed peer messages and bad arguments give errors.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests"
)]

use crate::common;
use common::*;
use duet_mpc::nonlinear::{self as nl, Cost, CotBackend, MatShape, NlConfig, NlSession};
use duet_mpc::{AShare, MpcError, Prg, Result, Ring};
use duet_transport::{run_two_party, Channel, MemoryChannel, Role};

fn cfg(cot: CotBackend, ot_sender: Role) -> NlConfig {
    NlConfig {
        ot_sender,
        cot,
        ..NlConfig::default()
    }
}

fn backends() -> [CotBackend; 2] {
    [ferret_test(), CotBackend::Iknp]
}

/// `X_b W_b` mod `2^l` in the clear.
fn plain(sh: MatShape, ring: Ring, x: &[u64], w: &[u64]) -> Vec<u64> {
    let (n, d, k) = (sh.n(), sh.d(), sh.k());
    let mut z = vec![0u64; sh.out_len()];
    for b in 0..sh.batch() {
        for r in 0..n {
            for c in 0..k {
                let mut acc = 0u64;
                for i in 0..d {
                    acc = acc
                        .wrapping_add(x[(b * n + r) * d + i].wrapping_mul(w[(b * d + i) * k + c]));
                }
                z[(b * n + r) * k + c] = ring.reduce(acc);
            }
        }
    }
    z
}

/// Runs the known-matrix product with `holder` holding `w`; returns the reconstructed output
/// and the measured traffic (with the COTs consumed).
fn known(
    c: NlConfig,
    sh: MatShape,
    ring: Ring,
    holder: Role,
    x: &[u64],
    w: &[u64],
) -> (Vec<u64>, Cost) {
    let (a, b, cost) = run2(c, |role, s, ch| {
        if role == holder {
            nl::matmul_known_holder(s, ch, sh, w, ring).unwrap()
        } else {
            nl::matmul_known_chooser(s, ch, sh, x, ring).unwrap()
        }
    });
    assert_eq!(a.shape(), &[sh.batch(), sh.n(), sh.k()]);
    (a.reconstruct(&b).unwrap(), cost)
}

/// Checks a product against the plaintext one.
fn check(got: &[u64], want: &[u64], what: &str) {
    assert_eq!(got, want, "{what}");
}

fn shape(b: usize, n: usize, d: usize, k: usize) -> MatShape {
    MatShape::new(b, n, d, k).unwrap()
}

/// Matrices cycling through `vals`, offset so that X and W differ.
fn cycle(vals: &[u64], len: usize, off: usize) -> Vec<u64> {
    (0..len).map(|i| vals[(i * 7 + off) % vals.len()]).collect()
}

#[test]
fn known_product_random_extreme_negative_both_holders_both_backends() {
    let mut prg = Prg::from_seed([31; 32]);
    for l in [37u32, 24, 64] {
        let ring = Ring::new(l).unwrap();
        let half = 1u64 << (l - 1);
        let w_ext = [half - 1, ring.neg(half - 1), ring.mask(), 0, half, 1];
        let x_ext = [ring.mask(), half, 0, 1, half - 1, ring.neg(5)];
        for sh in [shape(1, 1, 1, 1), shape(1, 3, 5, 7), shape(3, 2, 4, 5)] {
            let cases: Vec<(&str, Vec<u64>, Vec<u64>)> = vec![
                (
                    "random",
                    prg.ring_elements(ring, sh.x_len()),
                    prg.ring_elements(ring, sh.w_len()),
                ),
                (
                    "extreme",
                    cycle(&x_ext, sh.x_len(), 0),
                    cycle(&w_ext, sh.w_len(), 1),
                ),
                (
                    "small signed",
                    (0..sh.x_len())
                        .map(|i| ring.from_i64(i as i64 % 9 - 4))
                        .collect(),
                    (0..sh.w_len())
                        .map(|i| ring.from_i64(3 - (i as i64 * 5) % 11))
                        .collect(),
                ),
            ];
            for (name, x, w) in &cases {
                let want = plain(sh, ring, x, w);
                if *name == "small signed" && sh.d() > 1 {
                    assert!(want.iter().any(|&v| ring.to_i64(v) < 0));
                }
                for cot in backends() {
                    for holder in [Role::Server, Role::Client] {
                        let c = cfg(cot, Role::Server);
                        let (got, cost) = known(c, sh, ring, holder, x, w);
                        let what = format!("l {l} {sh:?} {name} {cot:?} holder {holder:?}");
                        check(&got, &want, &what);
                        assert_eq!(cost, nl::matmul_known_cost(sh, ring, c, holder), "{what}");
                        assert_eq!(cost.rounds, 2, "{what}");
                        assert_eq!(
                            cost.cots.sent_by(holder),
                            (sh.x_len() * l as usize) as u64,
                            "{what}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn small_signed_values_give_the_integer_product() {
    let ring = Ring::new(37).unwrap();
    let sh = shape(2, 3, 4, 2);
    let x: Vec<i64> = (0..sh.x_len() as i64).map(|i| (i % 7) - 3).collect();
    let w: Vec<i64> = (0..sh.w_len() as i64).map(|i| 2 - (i * 3) % 9).collect();
    let xr: Vec<u64> = x.iter().map(|&v| ring.from_i64(v)).collect();
    let wr: Vec<u64> = w.iter().map(|&v| ring.from_i64(v)).collect();
    let (got, _) = known(default_cfg(), sh, ring, Role::Client, &xr, &wr);
    for b in 0..2 {
        for r in 0..3 {
            for c in 0..2 {
                let want: i64 = (0..4)
                    .map(|i| x[(b * 3 + r) * 4 + i] * w[(b * 4 + i) * 2 + c])
                    .sum();
                assert_eq!(ring.to_i64(got[(b * 3 + r) * 2 + c]), want);
            }
        }
    }
}

#[test]
fn shapes_spanning_several_cot_chunks_and_correction_messages() {
    let mut prg = Prg::from_seed([32; 32]);
    // 1,953 elements at l = 37: 72,261 COTs, two COT chunks (65,536 + 6,725)
    // 150 elements of k = 4,096 at l = 24: 1,228,800 bits each, corrections in messages of
    // 104 + 46 elements (16 MiB limit)
    for (sh, l) in [(shape(3, 31, 21, 3), 37u32), (shape(1, 3, 50, 4096), 24)] {
        let ring = Ring::new(l).unwrap();
        let x = prg.ring_elements(ring, sh.x_len());
        let w = prg.ring_elements(ring, sh.w_len());
        let want = plain(sh, ring, &x, &w);
        for (cot, holder) in [
            (ferret_test(), Role::Client),
            (CotBackend::Iknp, Role::Server),
        ] {
            let c = cfg(cot, Role::Server);
            let (got, cost) = known(c, sh, ring, holder, &x, &w);
            check(&got, &want, &format!("{sh:?} {cot:?}"));
            assert_eq!(cost, nl::matmul_known_cost(sh, ring, c, holder));
            assert_eq!(cost.rounds, 2, "one flight each way");
        }
    }
    // the cost formula splits the corrections as described
    let sh = shape(1, 3, 50, 4096);
    let ring = Ring::new(24).unwrap();
    let c = nl::matmul_known_cost(sh, ring, default_cfg(), Role::Server);
    assert_eq!(c.bytes, (150 * 24u64).div_ceil(8) + 150 * 4096 * 300 / 8);
}

#[test]
fn product_over_several_runs_iknp() {
    // l = 64: runs of 65,536 elements; 65,538 elements make two runs
    let ring = Ring::z64();
    let sh = shape(2, 3, 10_923, 1);
    let mut prg = Prg::from_seed([33; 32]);
    let x = prg.ring_elements(ring, sh.x_len());
    let w = prg.ring_elements(ring, sh.w_len());
    let want = plain(sh, ring, &x, &w);
    let c = cfg(CotBackend::Iknp, Role::Client);
    let (got, cost) = known(c, sh, ring, Role::Client, &x, &w);
    check(&got, &want, "two runs");
    assert_eq!(cost, nl::matmul_known_cost(sh, ring, c, Role::Client));
    assert_eq!(cost.rounds, 4, "two runs of two flights");
    // the shared product over two runs: measured against its cost (the second run's first
    // flight merges with the first run's last)
    let mut prg = Prg::from_seed([35; 32]);
    let y = prg.ring_elements(ring, sh.w_len());
    let want = plain(sh, ring, &x, &y);
    let (x0, x1) = AShare::share(ring, vec![sh.x_len()], &x, &mut prg).unwrap();
    let (y0, y1) = AShare::share(ring, vec![sh.w_len()], &y, &mut prg).unwrap();
    let (a, b, cost) = run2(c, |role, s, ch| {
        nl::matmul_shared(s, ch, sh, by_role(role, &x0, &x1), by_role(role, &y0, &y1)).unwrap()
    });
    let got: Vec<u64> = a
        .data()
        .iter()
        .zip(b.data())
        .map(|(&u, &v)| ring.add(u, v))
        .collect();
    check(&got, &want, "shared, two runs");
    assert_eq!(cost, nl::matmul_shared_cost(sh, ring, c));
    assert_eq!(cost.rounds, 5, "3 flights, then 2 for the second run");
}

#[test]
fn shared_product_equals_the_plaintext_product() {
    let mut prg = Prg::from_seed([34; 32]);
    for l in [37u32, 24] {
        let ring = Ring::new(l).unwrap();
        for sh in [shape(1, 1, 1, 1), shape(2, 3, 5, 7), shape(1, 4, 9, 2)] {
            let x = prg.ring_elements(ring, sh.x_len());
            let w = prg.ring_elements(ring, sh.w_len());
            let want = plain(sh, ring, &x, &w);
            let (x0, x1) = AShare::share(ring, vec![sh.x_len()], &x, &mut prg).unwrap();
            let (y0, y1) = AShare::share(ring, vec![sh.w_len()], &w, &mut prg).unwrap();
            for cot in backends() {
                for first in [Role::Server, Role::Client] {
                    let c = cfg(cot, first);
                    let (a, b, cost) = run2(c, |role, s, ch| {
                        let before = ch.stats().rounds;
                        let z = nl::matmul_shared(
                            s,
                            ch,
                            sh,
                            by_role(role, &x0, &x1),
                            by_role(role, &y0, &y1),
                        )
                        .unwrap();
                        (z, ch.stats().rounds - before)
                    });
                    let what = format!("l {l} {sh:?} {cot:?} first {first:?}");
                    check(&a.0.reconstruct(&b.0).unwrap(), &want, &what);
                    // the ot_sender is the first holder: it answers once (its corrections and
                    // its choice bits of the second direction in one flight)
                    let (mine, peer) = if first == Role::Server {
                        (a.1, b.1)
                    } else {
                        (b.1, a.1)
                    };
                    assert_eq!((mine, peer), (1, 2), "{what}");
                    assert_eq!(cost, nl::matmul_shared_cost(sh, ring, c), "{what}");
                    assert_eq!(cost.rounds, 3, "{what}");
                    let one = nl::matmul_known_cost(sh, ring, c, first);
                    assert_eq!(cost.bytes, 2 * one.bytes, "{what}");
                }
            }
        }
    }
}

#[test]
fn cost_formula_numbers() {
    let ring = Ring::new(37).unwrap();
    let ferret = default_cfg();
    let iknp = cfg(CotBackend::Iknp, Role::Server);
    let small = shape(1, 1, 64, 64);
    // 64 elements: 37 choice bits and 64 * 703 correction bits each
    let f = nl::matmul_known_cost(small, ring, ferret, Role::Server);
    assert_eq!(f.bytes, (64 * 37u64).div_ceil(8) + 64 * 64 * 703 / 8);
    assert_eq!(f.rounds, 2);
    assert_eq!(f.cots.server_sends, 64 * 37);
    assert_eq!(f.cots.client_sends, 0);
    let i = nl::matmul_known_cost(small, ring, iknp, Role::Server);
    // IKNP: 128 columns of ceil(2,368 / 64) words
    assert_eq!(i.bytes - f.bytes, 128 * 37 * 8);
    assert_eq!(nl::matmul_known_words(small, ring), 64 * 37 * 64);
    let big = shape(1, 128, 768, 768);
    let f = nl::matmul_known_cost(big, ring, ferret, Role::Client);
    assert_eq!(f.bytes, 98_304 * 37 / 8 + 98_304 * 768 * 703 / 8);
    assert_eq!(f.cots.client_sends, 98_304 * 37);
    for sh in [small, shape(1, 16, 768, 768), big] {
        let f = nl::matmul_known_cost(sh, ring, ferret, Role::Server);
        let i = nl::matmul_known_cost(sh, ring, iknp, Role::Server);
        println!("{sh:?}: Ferret {} B, IKNP {} B", f.bytes, i.bytes);
    }
}

/// The protocols of the malformed-message test: known product with the server or the client
/// as holder, shared product.
fn call<C: Channel>(proto: usize, s: &mut NlSession, ch: &mut C, role: Role) -> Result<AShare> {
    let ring = Ring::new(37).unwrap();
    let sh = shape(1, 3, 5, 7);
    let mut prg = Prg::from_seed([role.index() as u8 + 50; 32]);
    let x = AShare::new(ring, vec![sh.x_len()], prg.ring_elements(ring, sh.x_len())).unwrap();
    let w = AShare::new(ring, vec![sh.w_len()], prg.ring_elements(ring, sh.w_len())).unwrap();
    match proto {
        0 | 1 => {
            let holder = if proto == 0 {
                Role::Server
            } else {
                Role::Client
            };
            if role == holder {
                nl::matmul_known_holder(s, ch, sh, w.data(), ring)
            } else {
                nl::matmul_known_chooser(s, ch, sh, x.data(), ring)
            }
        }
        _ => nl::matmul_shared(s, ch, sh, &x, &w),
    }
}

#[test]
fn every_corrupted_message_is_an_error() {
    for cot in backends() {
        let c = cfg(cot, Role::Client);
        for proto in 0..3 {
            // clean run: how many messages each party sends
            let (ms, mc, _) = run2(c, |role, s, ch| {
                let before = ch.stats().messages_sent;
                call(proto, s, ch, role).unwrap();
                ch.stats().messages_sent - before
            });
            for bad in [Role::Server, Role::Client] {
                let total = if bad == Role::Server { ms } else { mc };
                assert!(total > 0, "proto {proto} {cot:?}: {bad:?} sends nothing");
                for target in 0..total {
                    for longer in [false, true] {
                        let run = |role: Role, mut ch: MemoryChannel| {
                            let mut rng = Prg::from_seed([role.index() as u8 + 1; 32]);
                            let mut s = NlSession::setup(&mut ch, role, &mut rng, c).unwrap();
                            if role == bad {
                                let mut cc = Corrupt {
                                    inner: &mut ch,
                                    target,
                                    count: 0,
                                    longer,
                                };
                                let _ = call(proto, &mut s, &mut cc, role);
                                None
                            } else {
                                Some(call(proto, &mut s, &mut ch, role).is_err())
                            }
                        };
                        let (a, b) =
                            run_two_party(|ch| run(Role::Server, ch), |ch| run(Role::Client, ch));
                        assert!(
                            a.or(b).unwrap(),
                            "proto {proto} {cot:?}: corrupted message {target} of {bad:?} accepted"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_truncated_corrections_message_names_the_corrections() {
    // Ferret: the holder (server) sends exactly one message, the corrections
    let c = default_cfg();
    let run = |role: Role, mut ch: MemoryChannel| {
        let mut rng = Prg::from_seed([role.index() as u8 + 1; 32]);
        let mut s = NlSession::setup(&mut ch, role, &mut rng, c).unwrap();
        if role == Role::Server {
            let mut cc = Corrupt {
                inner: &mut ch,
                target: 0,
                count: 0,
                longer: false,
            };
            let _ = call(0, &mut s, &mut cc, role);
            None
        } else {
            Some(call(0, &mut s, &mut ch, role))
        }
    };
    let (_, b) = run_two_party(|ch| run(Role::Server, ch), |ch| run(Role::Client, ch));
    let Some(Err(e)) = b else {
        panic!("a truncated corrections message was accepted")
    };
    assert!(matches!(e, MpcError::InvalidPeerData { .. }), "{e}");
    assert!(e.to_string().contains("corrections"), "{e}");
}

#[test]
fn bad_shapes_and_arguments_are_errors() {
    assert!(MatShape::new(0, 1, 1, 1).is_err());
    assert!(MatShape::new(1, 1, 0, 1).is_err());
    assert!(MatShape::new(1, 1, 1, 0).is_err());
    assert!(MatShape::new(usize::MAX, 2, 1, 1).is_err());
    assert!(MatShape::new(1 << 20, 1 << 20, 1 << 10, 1).is_err());
    assert!(MatShape::new(1 << 16, 1 << 16, 1 << 8, 1 << 8).is_ok());
    let (a, b, cost) = run2(default_cfg(), |_, s, ch| {
        let ring = Ring::new(37).unwrap();
        let sh = shape(1, 2, 3, 4);
        let big = vec![1u64 << 40; sh.w_len()];
        let x6 = vec![0u64; 6];
        let x0 = AShare::new(ring, vec![6], x6.clone()).unwrap();
        let y12 = AShare::new(ring, vec![12], vec![0; 12]).unwrap();
        let y11 = AShare::new(ring, vec![11], vec![0; 11]).unwrap();
        let y64 = AShare::new(Ring::z64(), vec![12], vec![0; 12]).unwrap();
        [
            nl::matmul_known_holder(s, ch, sh, &[0; 11], ring).is_err(),
            nl::matmul_known_holder(s, ch, sh, &big, ring).is_err(),
            nl::matmul_known_chooser(s, ch, sh, &[0; 5], ring).is_err(),
            nl::matmul_known_chooser(s, ch, sh, &[1 << 37; 6], ring).is_err(),
            nl::matmul_shared(s, ch, sh, &x0, &y11).is_err(),
            nl::matmul_shared(s, ch, sh, &x0, &y64).is_err(),
            nl::matmul_shared(s, ch, shape(1, 2, 3, 5), &x0, &y12).is_err(),
        ]
    });
    assert!(a.iter().chain(&b).all(|&e| e));
    assert_eq!(
        cost.bytes, 0,
        "argument errors are found before any message"
    );
}

/// Wall time of the products on the in-memory pair (release: `cargo test --release -p
/// duet-mpc --test suite nl_ot_matmul:: -- --ignored --nocapture`).
#[test]
#[ignore = "timing, run by hand"]
fn timing() {
    let ring = Ring::new(37).unwrap();
    let mut prg = Prg::from_seed([35; 32]);
    for sh in [shape(1, 1, 64, 64), shape(1, 16, 768, 768)] {
        let x = prg.ring_elements(ring, sh.x_len());
        let w = prg.ring_elements(ring, sh.w_len());
        for c in [default_cfg(), cfg(CotBackend::Iknp, Role::Server)] {
            let (a, b, cost) = run2(c, |role, s, ch| {
                let t = std::time::Instant::now();
                let r = if role == Role::Server {
                    nl::matmul_known_holder(s, ch, sh, &w, ring).unwrap()
                } else {
                    nl::matmul_known_chooser(s, ch, sh, &x, ring).unwrap()
                };
                (r, t.elapsed())
            });
            assert_eq!(a.0.reconstruct(&b.0).unwrap(), plain(sh, ring, &x, &w));
            assert_eq!(cost, nl::matmul_known_cost(sh, ring, c, Role::Server));
            println!(
                "{sh:?} {:?}: holder {:.3} s, chooser {:.3} s, {} B, {} flights",
                c.cot,
                a.1.as_secs_f64(),
                b.1.as_secs_f64(),
                cost.bytes,
                cost.rounds
            );
        }
    }
}
