//! HeMatMul / HeMatMulShared: exactness over every supported ring width, worst-case inputs,
//! odd shapes, the client-holds-X variant, measured bytes == cost, and malformed peer messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use std::sync::Arc;

use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::{run_two_party, Channel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn params(preset: Preset, l: u32, wb: WeightBound) -> Arc<RlweParameters> {
    RlweParameters::preset(preset, RingBits(l), wb).unwrap()
}

/// Weights: worst case mix of +-bound, zero and random within the bound.
fn weights(rng: &mut ChaCha20Rng, len: usize, bound: i64) -> Vec<i64> {
    (0..len)
        .map(|i| match i % 5 {
            0 => bound,
            1 => -bound,
            2 => 0,
            _ => rng.gen_range(-bound..=bound),
        })
        .collect()
}

fn reference(
    x: &[u64],
    w: &[i64],
    bias: &[i64],
    n: usize,
    d: usize,
    k: usize,
    mask: u64,
) -> Vec<u64> {
    let mut y = vec![0u64; n * k];
    for i in 0..n {
        for c in 0..k {
            let mut acc = bias[c] as u64;
            for j in 0..d {
                acc = acc.wrapping_add(x[i * d + j].wrapping_mul(w[j * k + c] as u64));
            }
            y[i * k + c] = acc & mask;
        }
    }
    y
}

struct Outcome {
    got: Vec<u64>,
    want: Vec<u64>,
    measured_online: u64,
    measured_setup: u64,
    rounds: u64,
    cost: Cost,
}

/// Runs one HeMatMul between two threads; `shared`: X split into uniform shares, else the
/// client holds all of X.
fn run_matmul(
    p: &Arc<RlweParameters>,
    shape: MatmulShape,
    policy: LayoutPolicy,
    bound: i64,
    shared: bool,
    seed: u64,
) -> Outcome {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mask = p.plain_mask();
    let MatmulShape { n, d, k } = shape;
    let x: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let (x_c, x_s): (Vec<u64>, Option<Vec<u64>>) = if shared {
        let s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
        (
            x.iter()
                .zip(&s)
                .map(|(a, b)| a.wrapping_sub(*b) & mask)
                .collect(),
            Some(s),
        )
    } else {
        (x.clone(), None)
    };
    let w = weights(&mut rng, d * k, bound);
    let bias: Vec<i64> = (0..k).map(|_| rng.gen_range(-1000..1000)).collect();
    let mut hw = HeWeights::new(p, d, k, w.clone(), Some(&bias)).unwrap();
    hw.prepare(n, policy, PrepareMode::default()).unwrap();
    let (server, client) = run_two_party(
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
            let setup = HeServerSetup::run(&mut ch, p)?;
            HeMatMul::run_server(&mut ch, &setup, &hw, n, x_s.as_deref(), &mut rng)
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 2);
            let setup = HeClientSetup::run(&mut ch, p, &mut rng)?;
            let before = ch.stats();
            let y = HeMatMul::run_client(&mut ch, &setup, shape, policy, &x_c, &mut rng)?;
            let online = ch.stats() - before;
            // the setup flight and the input flight go the same way: one flight in all
            Ok::<_, ProtocolError>((
                y,
                before.total_bytes(),
                online.total_bytes(),
                ch.stats().total_rounds(),
            ))
        },
    );
    let r = server.unwrap();
    let (yc, setup_bytes, online, rounds) = client.unwrap();
    Outcome {
        got: yc
            .iter()
            .zip(&r)
            .map(|(a, b)| a.wrapping_add(*b) & mask)
            .collect(),
        want: reference(&x, &w, &bias, n, d, k, mask),
        measured_online: online,
        measured_setup: setup_bytes,
        rounds,
        cost: HeMatMul::cost(p, shape, policy).unwrap(),
    }
}

fn check(o: &Outcome, what: &str) {
    assert_eq!(o.got.len(), o.want.len(), "{what}: length");
    let bad = o.got.iter().zip(&o.want).filter(|(a, b)| a != b).count();
    assert_eq!(bad, 0, "{what}: {bad} wrong outputs");
    assert_eq!(
        o.measured_online, o.cost.bytes,
        "{what}: measured bytes != cost"
    );
    assert_eq!(o.rounds, o.cost.rounds, "{what}: rounds");
}

#[test]
fn exact_every_ring_width_small_shape() {
    let cases: [(Preset, u32, WeightBound, i64); 6] = [
        (Preset::N4096Q109, 16, WeightBound::Uniform, 1 << 15),
        (Preset::N4096Q109, 32, WeightBound::MaxAbs(1 << 16), 1 << 16),
        (Preset::N4096Q109, 37, WeightBound::MaxAbs(1 << 16), 1 << 16),
        (Preset::N4096Q109, 41, WeightBound::MaxAbs(1 << 14), 1 << 14),
        (
            Preset::N8192Q200Pack,
            41,
            WeightBound::MaxAbs(1 << 16),
            1 << 16,
        ),
        (Preset::N8192Q186, 64, WeightBound::Uniform, i64::MAX),
    ];
    for (i, (preset, l, wb, bound)) in cases.into_iter().enumerate() {
        let p = params(preset, l, wb);
        let o = run_matmul(
            &p,
            MatmulShape::new(5, 7, 3),
            LayoutPolicy::MinBytes,
            bound,
            true,
            10 + i as u64,
        );
        check(&o, &format!("{} l={l}", preset.name()));
    }
}

#[test]
fn exact_packed_odd_shape_and_setup_cost() {
    // 130 x 70 x 20: edge blocks in every dimension, packing with partial groups
    let p = params(Preset::N8192Q200Pack, 37, WeightBound::MaxAbs(1 << 16));
    let o = run_matmul(
        &p,
        MatmulShape::new(130, 70, 20),
        LayoutPolicy::MinBytes,
        1 << 16,
        true,
        3,
    );
    check(&o, "130x70x20 packed");
    assert!(
        HeMatMul::cost(&p, MatmulShape::new(130, 70, 20), LayoutPolicy::MinBytes)
            .unwrap()
            .key_switches
            > 0
    );
    assert_eq!(o.measured_setup, HeClientSetup::setup_cost(&p).bytes);
}

#[test]
fn exact_l64_packed_small_weights() {
    let p = params(Preset::N8192Q200Pack, 64, WeightBound::MaxAbs(1 << 16));
    let o = run_matmul(
        &p,
        MatmulShape::new(9, 66, 5),
        LayoutPolicy::MinBytes,
        1 << 16,
        true,
        4,
    );
    check(&o, "l=64 packed");
}

#[test]
fn exact_client_holds_all_of_x() {
    let p = params(Preset::N4096Q109, 37, WeightBound::MaxAbs(1 << 16));
    let o = run_matmul(
        &p,
        MatmulShape::new(130, 70, 20),
        LayoutPolicy::MinBytes,
        1 << 16,
        false,
        5,
    );
    check(&o, "client-held X");
}

#[test]
fn exact_under_other_policies() {
    let p = params(Preset::N8192Q200Pack, 37, WeightBound::MaxAbs(1 << 16));
    let shape = MatmulShape::new(16, 64, 24);
    let min = HeMatMul::cost(&p, shape, LayoutPolicy::MinBytes).unwrap();
    let budget = LayoutPolicy::FewestKeySwitches {
        max_bytes: 2 * min.bytes,
    };
    let fk = HeMatMul::cost(&p, shape, budget).unwrap();
    assert!(fk.key_switches <= min.key_switches && fk.bytes <= 2 * min.bytes);
    for (i, policy) in [budget, LayoutPolicy::ExtractionOnly]
        .into_iter()
        .enumerate()
    {
        let o = run_matmul(&p, shape, policy, 1 << 16, true, 20 + i as u64);
        check(&o, &format!("{policy:?}"));
    }
    let ex = HeMatMul::cost(&p, shape, LayoutPolicy::ExtractionOnly).unwrap();
    assert_eq!(ex.key_switches, 0);
}

#[test]
fn weights_outside_the_bound_are_refused() {
    let p = params(Preset::N4096Q109, 37, WeightBound::MaxAbs(1 << 16));
    assert!(HeWeights::new(&p, 2, 2, vec![0, 1, (1 << 16) + 1, 0], None).is_err());
    assert!(HeWeights::new(&p, 2, 2, vec![0, 1, -(1 << 16) - 1, 0], None).is_err());
    assert!(HeWeights::new(&p, 2, 2, vec![0, 1, 0], None).is_err());
    assert!(HeWeights::new(&p, 2, 2, vec![0; 4], Some(&[1])).is_err());
}

// ---------- shared x shared ----------

fn run_shared(p: &Arc<RlweParameters>, shape: SharedShape, policy: LayoutPolicy, seed: u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mask = p.plain_mask();
    let SharedShape { heads, n, d, k } = shape;
    let rand = |rng: &mut ChaCha20Rng, len: usize| -> Vec<u64> {
        (0..len).map(|_| rng.gen::<u64>() & mask).collect()
    };
    let (x_c, x_s) = (rand(&mut rng, heads * n * d), rand(&mut rng, heads * n * d));
    let (y_c, y_s) = (rand(&mut rng, heads * d * k), rand(&mut rng, heads * d * k));
    let (server, client) = run_two_party(
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
            let setup = HeServerSetup::run(&mut ch, p)?;
            HeMatMulShared::run_server(&mut ch, &setup, shape, policy, &x_s, &y_s, &mut rng)
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 2);
            let setup = HeClientSetup::run(&mut ch, p, &mut rng)?;
            let before = ch.stats();
            let z =
                HeMatMulShared::run_client(&mut ch, &setup, shape, policy, &x_c, &y_c, &mut rng)?;
            let online = ch.stats() - before;
            Ok::<_, ProtocolError>((z, online, ch.stats().total_rounds()))
        },
    );
    let zs = server.unwrap();
    let (zc, online, rounds) = client.unwrap();
    let cost = HeMatMulShared::cost(p, shape, policy).unwrap();
    assert_eq!(
        online.total_bytes(),
        cost.bytes,
        "shared: measured bytes != cost"
    );
    assert_eq!(rounds, cost.rounds);
    for h in 0..heads {
        for i in 0..n {
            for c in 0..k {
                let mut want = 0u64;
                for j in 0..d {
                    let x = x_c[h * n * d + i * d + j].wrapping_add(x_s[h * n * d + i * d + j]);
                    let y = y_c[h * d * k + j * k + c].wrapping_add(y_s[h * d * k + j * k + c]);
                    want = want.wrapping_add(x.wrapping_mul(y));
                }
                let idx = h * n * k + i * k + c;
                assert_eq!(
                    zc[idx].wrapping_add(zs[idx]) & mask,
                    want & mask,
                    "head {h} ({i},{c})"
                );
            }
        }
    }
}

#[test]
fn shared_exact_packed_l37() {
    let p = params(Preset::N8192Q200Pack, 37, WeightBound::Uniform);
    run_shared(
        &p,
        SharedShape::new(2, 9, 16, 11),
        LayoutPolicy::MinBytes,
        40,
    );
}

#[test]
fn shared_exact_l32_l41_packed() {
    for (l, seed) in [(32, 44), (41, 45)] {
        let p = params(Preset::N8192Q200Pack, l, WeightBound::Uniform);
        run_shared(
            &p,
            SharedShape::new(2, 5, 9, 3),
            LayoutPolicy::MinBytes,
            seed,
        );
    }
}

#[test]
fn shared_exact_l64_and_l16() {
    let p = params(Preset::N8192Q186, 64, WeightBound::Uniform);
    run_shared(&p, SharedShape::new(2, 5, 7, 3), LayoutPolicy::MinBytes, 41);
    let p = params(Preset::N4096Q109, 16, WeightBound::Uniform);
    run_shared(&p, SharedShape::new(3, 6, 5, 4), LayoutPolicy::MinBytes, 42);
}

// ---------- malformed messages from the peer ----------

/// A fake client: honest setup, then `corrupt` applied to each honest input message.
fn server_against(corrupt: fn(Vec<u8>) -> Vec<u8>) -> duet_protocols::Result<Vec<u64>> {
    let p = params(Preset::N4096Q109, 37, WeightBound::MaxAbs(1 << 16));
    let shape = MatmulShape::new(5, 7, 3);
    let mut hw = HeWeights::new(&p, 7, 3, vec![1; 21], None).unwrap();
    hw.prepare(5, LayoutPolicy::MinBytes, PrepareMode::Cache)
        .unwrap();
    let (server, _client) = run_two_party(
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            let setup = HeServerSetup::run(&mut ch, &p)?;
            HeMatMul::run_server(&mut ch, &setup, &hw, 5, None, &mut rng)
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
            let core = HeMatMulClient::new(&setup, shape, LayoutPolicy::MinBytes).unwrap();
            for m in core.encrypt(&vec![3; 35], &mut rng).unwrap() {
                ch.send_bytes(&corrupt(m)).unwrap();
            }
            ch.flush().unwrap();
            // the server hangs up on error; the client's receive then fails
            let _ = ch.recv_bytes();
        },
    );
    server
}

#[test]
fn malformed_input_ciphertexts_are_rejected() {
    assert!(server_against(|m| m).is_ok());
    assert!(
        server_against(|mut m| {
            m.pop();
            m
        })
        .is_err(),
        "truncated"
    );
    assert!(
        server_against(|mut m| {
            m.push(0);
            m
        })
        .is_err(),
        "extra byte"
    );
    assert!(server_against(|m| vec![0xAB; m.len()]).is_err(), "garbage");
    assert!(server_against(|_| Vec::new()).is_err(), "empty");
    // corrupted body with an intact header: must not panic (the result is garbage or an error)
    let _ = server_against(|mut m| {
        let len = m.len();
        for b in &mut m[len / 2..] {
            *b = 0xFF;
        }
        m
    });
}

#[test]
fn malformed_output_ciphertexts_are_rejected() {
    let p = params(Preset::N4096Q109, 37, WeightBound::MaxAbs(1 << 16));
    let shape = MatmulShape::new(5, 7, 3);
    for corrupt in [
        (|m: Vec<u8>| vec![0x5A; m.len()]) as fn(Vec<u8>) -> Vec<u8>,
        |mut m: Vec<u8>| {
            m.truncate(m.len() - 3);
            m
        },
        |mut m: Vec<u8>| {
            m.extend_from_slice(&[1, 2]);
            m
        },
    ] {
        let (_server, client) = run_two_party(
            |mut ch| {
                let setup = HeServerSetup::run(&mut ch, &p).unwrap();
                let mut hw = HeWeights::new(&p, 7, 3, vec![2; 21], None).unwrap();
                hw.prepare(5, LayoutPolicy::MinBytes, PrepareMode::OnTheFly)
                    .unwrap();
                let core = HeMatMulServer::new(&setup, &hw, 5).unwrap();
                let mut msgs = Vec::new();
                for _ in 0..core.plan().input_count() {
                    msgs.push(ch.recv_bytes().unwrap());
                }
                let cts = core.absorb(&msgs).unwrap();
                let mut rng = ChaCha20Rng::seed_from_u64(9);
                let (_r, plain) = core.mask_and_plain(None, &mut rng).unwrap();
                for o in 0..core.plan().output_count() {
                    let m = core.respond(&cts, &plain, o, [7; 32]).unwrap();
                    ch.send_bytes(&corrupt(m)).unwrap();
                }
                ch.flush().unwrap();
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
                HeMatMul::run_client(
                    &mut ch,
                    &setup,
                    shape,
                    LayoutPolicy::MinBytes,
                    &vec![1; 35],
                    &mut rng,
                )
            },
        );
        assert!(client.is_err());
    }
}

#[test]
fn wrong_message_count_and_bad_setup_are_errors() {
    let p = params(Preset::N8192Q200Pack, 37, WeightBound::MaxAbs(1 << 16));
    assert!(HeServerSetup::from_messages(&p, &[]).is_err());
    assert!(HeServerSetup::from_messages(&p, &[vec![0; 10], vec![0; 10]]).is_err());
    let q = params(Preset::N4096Q109, 37, WeightBound::MaxAbs(1 << 16));
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let setup = HeClientSetup::generate(&q, &mut rng).unwrap();
    let client =
        HeMatMulClient::new(&setup, MatmulShape::new(5, 7, 3), LayoutPolicy::MinBytes).unwrap();
    assert!(client.decrypt(&[]).is_err());
    assert!(client.encrypt(&[0; 34], &mut rng).is_err());
    assert!(client.encrypt(&[u64::MAX; 35], &mut rng).is_err());
    // keys for other parameters
    let msgs = setup.setup_messages();
    assert!(HeServerSetup::from_messages(&p, &msgs).is_err());
}

#[test]
fn shared_exact_with_batch_budget() {
    // the batch planner gives different heads different layouts within one byte budget
    let p = params(Preset::N8192Q200Pack, 37, WeightBound::Uniform);
    let shape = SharedShape::new(3, 16, 64, 16);
    let min = HeMatMulShared::cost(&p, shape, LayoutPolicy::MinBytes).unwrap();
    let policy = LayoutPolicy::FewestKeySwitches {
        max_bytes: min.bytes * 3 / 2,
    };
    let plans = HeMatMulShared::plans(&p, shape, policy).unwrap();
    let cost = HeMatMulShared::cost(&p, shape, policy).unwrap();
    assert!(cost.bytes <= min.bytes * 3 / 2);
    assert!(cost.key_switches < min.key_switches);
    let layouts: std::collections::HashSet<_> = plans.iter().map(|q| q.layout()).collect();
    assert!(layouts.len() > 1, "expected mixed layouts: {layouts:?}");
    run_shared(&p, shape, policy, 43);
    // a budget below the minimum is refused
    let tight = LayoutPolicy::FewestKeySwitches {
        max_bytes: min.bytes - 1,
    };
    assert!(HeMatMulShared::cost(&p, shape, tight).is_err());
}

#[test]
fn plan_cost_matches_layout_cost() {
    let p = params(Preset::N8192Q200Pack, 37, WeightBound::MaxAbs(1 << 16));
    for shape in [
        MatmulShape::new(5, 7, 3),
        MatmulShape::new(130, 70, 20),
        MatmulShape::new(128, 768, 768),
    ] {
        let plan = MatmulPlan::new(&p, shape, LayoutPolicy::MinBytes).unwrap();
        let c = plan.cost();
        let lc = plan.layout_cost();
        assert_eq!(c.bytes, (lc.input_bytes + lc.output_bytes) as u64);
        assert_eq!(
            c.messages,
            (plan.input_count() + plan.output_count()) as u64
        );
        assert!(c.products as usize * 8192 >= shape.n * shape.d * shape.k);
    }
    // the extraction-only baseline of the target shape (Cheetah-style output)
    let base = HeMatMul::cost(
        &p,
        MatmulShape::new(128, 768, 768),
        LayoutPolicy::ExtractionOnly,
    )
    .unwrap();
    let packed =
        HeMatMul::cost(&p, MatmulShape::new(128, 768, 768), LayoutPolicy::MinBytes).unwrap();
    assert!(packed.bytes * 3 < base.bytes);
}

#[test]
fn exact_on_the_fly_and_for_another_row_count() {
    // weights prepared for n = 5 (cached) but called with n = 9, and weights never cached
    let p = params(Preset::N4096Q109, 32, WeightBound::MaxAbs(1 << 16));
    let mask = p.plain_mask();
    let (d, k) = (20, 6);
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let w = weights(&mut rng, d * k, 1 << 16);
    for (mode, n) in [(PrepareMode::Cache, 9), (PrepareMode::OnTheFly, 5)] {
        let mut hw = HeWeights::new(&p, d, k, w.clone(), None).unwrap();
        hw.prepare(5, LayoutPolicy::MinBytes, mode).unwrap();
        assert_eq!(hw.is_cached(), mode == PrepareMode::Cache);
        let x: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
        let (server, client) = run_two_party(
            |mut ch| {
                let setup = HeServerSetup::run(&mut ch, &p)?;
                let mut rng = ChaCha20Rng::seed_from_u64(1);
                HeMatMul::run_server(&mut ch, &setup, &hw, n, None, &mut rng)
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let setup = HeClientSetup::run(&mut ch, &p, &mut rng)?;
                let shape = MatmulShape::new(n, d, k);
                HeMatMul::run_client(&mut ch, &setup, shape, LayoutPolicy::MinBytes, &x, &mut rng)
            },
        );
        let (r, yc) = (server.unwrap(), client.unwrap());
        let got: Vec<u64> = yc
            .iter()
            .zip(&r)
            .map(|(a, b)| a.wrapping_add(*b) & mask)
            .collect();
        assert_eq!(
            got,
            reference(&x, &w, &vec![0; k], n, d, k, mask),
            "{mode:?} n={n}"
        );
    }
}

#[test]
fn shared_rejects_malformed_and_short_input() {
    let p = params(Preset::N4096Q109, 16, WeightBound::Uniform);
    let shape = SharedShape::new(2, 4, 3, 5);
    let policy = LayoutPolicy::MinBytes;
    let zeros = vec![0u64; 2 * 4 * 3];
    let zeros_y = vec![0u64; 2 * 3 * 5];
    for mode in 0..2 {
        let (server, _) = run_two_party(
            |mut ch| {
                let setup = HeServerSetup::run(&mut ch, &p)?;
                let mut rng = ChaCha20Rng::seed_from_u64(1);
                HeMatMulShared::run_server(
                    &mut ch, &setup, shape, policy, &zeros, &zeros_y, &mut rng,
                )
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
                let plans = HeMatMulShared::plans(&p, shape, policy).unwrap();
                let mut msgs = HeMatMulShared::client_messages(
                    &setup, shape, &plans, &zeros, &zeros_y, &mut rng,
                )
                .unwrap();
                if mode == 0 {
                    msgs.pop(); // one message short, then hang up
                } else if let Some(m) = msgs.last_mut() {
                    m.truncate(m.len() / 2);
                }
                for m in msgs {
                    ch.send_bytes(&m).unwrap();
                }
                ch.flush().unwrap();
            },
        );
        assert!(server.is_err(), "mode {mode}");
    }
}
