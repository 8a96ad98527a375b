//! ServerKeyMatMul: exactness over the supported ring widths with worst-case inputs (uniform
//! shares, extreme share values, largest and negative weights), odd shapes, the
//! client-holds-X variant, a row count other than the planned one, measured bytes == cost
//! (online, setup and cached apart), and malformed peer messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use std::sync::Arc;

use duet_fhe::{MacTerms, Preset, RingBits, RlweParameters};
use duet_protocols::*;
use duet_transport::{run_two_party, Channel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn params(preset: Preset, l: u32, terms: usize) -> Arc<RlweParameters> {
    server_key_params(preset, RingBits(l), MacTerms(terms)).unwrap()
}

/// Weights: the message of the server's ciphertexts, so any i64 (used mod 2^l): extremes,
/// zero, negatives and random values.
fn weights(rng: &mut ChaCha20Rng, len: usize) -> Vec<i64> {
    (0..len)
        .map(|i| match i % 7 {
            0 => i64::MAX,
            1 => i64::MIN,
            2 => 0,
            3 => -1,
            4 => -(1 << 16),
            _ => rng.gen(),
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Input {
    /// X uniform, split into uniform shares.
    Shared,
    /// The client's share is the worst case for the noise: every coefficient lifts to
    /// magnitude `2^(l-1)` or `2^(l-1) - 1`.
    SharedExtreme,
    /// The client holds all of X (uniform).
    ClientHoldsX,
}

fn reference(x: &[u64], w: &[i64], bias: &[i64], d: usize, k: usize, mask: u64) -> Vec<u64> {
    let n = x.len() / d;
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

struct Measured {
    got: Vec<u64>,
    want: Vec<u64>,
    cached: u64,
    online: u64,
    online_rounds: u64,
    client_to_server: u64,
    server_online_received: u64,
    cost: ServerKeyCost,
}

fn run(
    p: &Arc<RlweParameters>,
    planned: MatmulShape,
    n: usize,
    policy: ServerKeyPolicy,
    input: Input,
    seed: u64,
) -> Measured {
    let plan = ServerKeyPlan::new(p, planned, policy).unwrap();
    run_plan(p, plan, n, input, seed)
}

fn run_plan(
    p: &Arc<RlweParameters>,
    plan: ServerKeyPlan,
    n: usize,
    input: Input,
    seed: u64,
) -> Measured {
    let planned = plan.shape();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mask = p.plain_mask();
    let MatmulShape { d, k, .. } = planned;
    let half = 1u64 << (p.ring_bits() - 1);
    let (x, x_c, x_s) = match input {
        Input::ClientHoldsX => {
            let x: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
            (x.clone(), x, None)
        }
        Input::Shared | Input::SharedExtreme => {
            let x_c: Vec<u64> = (0..n * d)
                .map(|i| match input {
                    Input::SharedExtreme if i % 2 == 0 => half,
                    Input::SharedExtreme => (half + 1) & mask,
                    _ => rng.gen::<u64>() & mask,
                })
                .collect();
            let x_s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
            let x = x_c
                .iter()
                .zip(&x_s)
                .map(|(a, b)| a.wrapping_add(*b) & mask)
                .collect();
            (x, x_c, Some(x_s))
        }
    };
    let w = weights(&mut rng, d * k);
    let bias: Vec<i64> = (0..k).map(|_| rng.gen()).collect();
    let cost = plan.with_rows(n).unwrap().cost();
    let sw = ServerKeyWeights::new(plan.clone(), w.clone(), Some(&bias)).unwrap();
    let (server, client) = run_two_party(
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
            let setup = ServerKeySetup::generate(p, &mut rng)?;
            ServerKeyMatMul::send_model(&mut ch, &setup, &sw, &mut rng)?;
            let before = ch.stats();
            let y = ServerKeyMatMul::run_server(&mut ch, &setup, &sw, n, x_s.as_deref())?;
            Ok::<_, ProtocolError>((y, ch.stats() - before))
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 2);
            let model = ServerKeyMatMul::recv_model(&mut ch, plan.clone())?;
            let cached = ch.stats();
            let r = ServerKeyMatMul::run_client(&mut ch, &model, n, &x_c, &mut rng)?;
            Ok::<_, ProtocolError>((r, cached, ch.stats() - cached))
        },
    );
    let (y_s, s_online) = server.unwrap();
    let (r, cached, online) = client.unwrap();
    Measured {
        got: r
            .iter()
            .zip(&y_s)
            .map(|(a, b)| a.wrapping_add(*b) & mask)
            .collect(),
        want: reference(&x, &w, &bias, d, k, mask),
        cached: cached.total_bytes(),
        online: online.total_bytes(),
        online_rounds: online.rounds + s_online.rounds,
        client_to_server: online.bytes_sent,
        server_online_received: s_online.bytes_received,
        cost,
    }
}

fn check(m: &Measured, what: &str) {
    assert_eq!(m.got.len(), m.want.len(), "{what}: length");
    let bad = m.got.iter().zip(&m.want).filter(|(a, b)| a != b).count();
    assert_eq!(bad, 0, "{what}: {bad} wrong outputs");
    assert_eq!(
        m.online, m.cost.online.bytes,
        "{what}: online bytes != cost"
    );
    assert_eq!(m.client_to_server, m.cost.online.client_to_server, "{what}");
    assert_eq!(
        m.server_online_received, m.online,
        "{what}: one direction only"
    );
    assert_eq!(m.online_rounds, m.cost.online.rounds, "{what}: rounds");
    assert_eq!(m.cost.online.rounds, 1, "{what}: one flight");
    assert_eq!(
        m.cached, m.cost.cached.bytes,
        "{what}: cached bytes != cost"
    );
    assert_eq!(
        m.cost.setup,
        Cost::default(),
        "{what}: no per-session setup"
    );
}

#[test]
fn exact_every_ring_width_worst_case_inputs() {
    // l = 16, 37 with packing (n8192-q200-pack); l = 64 needs the larger q of n8192-q186 for
    // uniform shares (no packing there).
    let cases = [
        (Preset::N8192Q200Pack, 16u32),
        (Preset::N8192Q200Pack, 37),
        (Preset::N8192Q186, 64),
    ];
    for (i, (preset, l)) in cases.into_iter().enumerate() {
        let p = params(preset, l, 8192);
        for (j, input) in [Input::Shared, Input::SharedExtreme]
            .into_iter()
            .enumerate()
        {
            let shape = MatmulShape::new(5, 7, 3);
            let m = run(
                &p,
                shape,
                5,
                ServerKeyPolicy::MinBytes,
                input,
                100 + 10 * i as u64 + j as u64,
            );
            check(&m, &format!("{} l={l} {input:?}", preset.name()));
        }
    }
}

#[test]
fn exact_packed_odd_shape_with_edges_and_partial_groups() {
    // 130 x 70 x 20: edge blocks in every dimension; the plan packs (checked below)
    let p = params(Preset::N8192Q200Pack, 37, 4 * 8192);
    let shape = MatmulShape::new(130, 70, 20);
    let m = run(
        &p,
        shape,
        130,
        ServerKeyPolicy::MinBytes,
        Input::SharedExtreme,
        7,
    );
    check(&m, "130x70x20 extreme shares");
    // explicit packed layouts: 2-D groups with partial groups in both directions and edge
    // blocks in every dimension
    for (n_b, d_b, k_b, pr, pc) in [(16, 16, 8, 4, 4), (3, 32, 6, 8, 2), (1, 64, 16, 32, 2)] {
        let layout = duet_fhe::MatmulLayout::new(&p, n_b, d_b, k_b).unwrap();
        let plan = ServerKeyPlan::with_layout(&p, shape, layout, pr, pc).unwrap();
        let m = run_plan(&p, plan, 130, Input::SharedExtreme, 20 + n_b as u64);
        check(
            &m,
            &format!("130x70x20 blocks {n_b}x{d_b}x{k_b} pack {pr}x{pc}"),
        );
        assert_eq!(
            m.cost.online.key_switches,
            m.cost.online.messages * (pr * pc - 1) as u64
        );
    }
    let m = run(
        &p,
        shape,
        130,
        ServerKeyPolicy::Fastest {
            max_cached_bytes: 8 << 20,
        },
        Input::Shared,
        8,
    );
    check(&m, "130x70x20 fastest");
    assert!(m.cost.cached_weight_bytes <= 8 << 20);
}

#[test]
fn exact_client_holds_all_of_x_and_other_row_counts() {
    let p = params(Preset::N8192Q200Pack, 37, 4 * 8192);
    let planned = MatmulShape::new(32, 40, 24);
    let m = run(
        &p,
        planned,
        32,
        ServerKeyPolicy::MinBytes,
        Input::ClientHoldsX,
        9,
    );
    check(&m, "client-held X");
    // the cached weights serve any row count
    for n in [1usize, 33] {
        let m = run(
            &p,
            planned,
            n,
            ServerKeyPolicy::MinBytes,
            Input::Shared,
            10 + n as u64,
        );
        check(&m, &format!("n = {n}"));
    }
}

#[test]
fn plans_respect_budgets() {
    let p = params(Preset::N8192Q200Pack, 37, 8 * 8192);
    let shape = MatmulShape::new(128, 768, 768);
    let min = ServerKeyPlan::new(&p, shape, ServerKeyPolicy::MinBytes).unwrap();
    let fast = ServerKeyPlan::new(
        &p,
        shape,
        ServerKeyPolicy::Fastest {
            max_cached_bytes: 64 << 20,
        },
    )
    .unwrap();
    assert!(fast.cost().cached_weight_bytes <= 64 << 20);
    assert!(fast.estimate_us() <= min.estimate_us());
    assert!(fast.cost().online.bytes as f64 <= 1.05 * min.cost().online.bytes as f64);
    // dense output: at most 16 bytes per output element at l = 37
    assert!(
        min.cost().online.bytes <= 16 * 128 * 768,
        "{:?}",
        min.cost()
    );
    // mac_terms is enforced: n_b d must fit
    let tight = params(Preset::N8192Q200Pack, 37, 768);
    let plan = ServerKeyPlan::new(&tight, shape, ServerKeyPolicy::MinBytes).unwrap();
    assert_eq!(plan.layout().n_b, 1);
    assert!(ServerKeyPlan::new(
        &tight,
        shape,
        ServerKeyPolicy::Fastest {
            max_cached_bytes: 1
        }
    )
    .is_err());
    assert!(ServerKeyPlan::new(&p, MatmulShape::new(0, 3, 3), ServerKeyPolicy::MinBytes).is_err());
}

#[test]
fn malformed_messages_are_errors() {
    let p = params(Preset::N8192Q200Pack, 16, 8192);
    let shape = MatmulShape::new(6, 9, 5);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let plan = ServerKeyPlan::new(&p, shape, ServerKeyPolicy::MinBytes).unwrap();
    let w: Vec<i64> = (0..9 * 5).map(|_| rng.gen()).collect();
    let sw = ServerKeyWeights::new(plan.clone(), w.clone(), None).unwrap();
    let setup = ServerKeySetup::generate(&p, &mut rng).unwrap();
    let mut model_msgs = setup.key_messages();
    model_msgs.extend(sw.encrypt(&setup, &mut rng).unwrap());
    // model: wrong count, truncated, corrupted header
    assert!(ServerKeyModel::from_messages(plan.clone(), &model_msgs[1..]).is_err());
    let mut bad = model_msgs.clone();
    bad.last_mut().unwrap().pop();
    assert!(ServerKeyModel::from_messages(plan.clone(), &bad).is_err());
    let mut bad = model_msgs.clone();
    bad[0][0] ^= 0xff;
    assert!(ServerKeyModel::from_messages(plan.clone(), &bad).is_err());
    let model = ServerKeyModel::from_messages(plan.clone(), &model_msgs).unwrap();
    assert!(model.memory_bytes() > 0);

    let client = ServerKeyClient::new(&model, 6).unwrap();
    let mask = p.plain_mask();
    let x: Vec<u64> = (0..6 * 9).map(|_| rng.gen::<u64>() & mask).collect();
    assert!(client.respond(&x[1..], &mut rng).is_err());
    let mut out_of_ring = x.clone();
    out_of_ring[3] = mask + 1;
    assert!(client.respond(&out_of_ring, &mut rng).is_err());
    let (r, msgs) = client.respond(&x, &mut rng).unwrap();
    let server = ServerKeyServer::new(&setup, &sw, 6).unwrap();
    let local = server.local(None).unwrap();
    let y = server.finish(&local, &msgs).unwrap();
    let want = reference(&x, &w, &[0; 5], 9, 5, mask);
    for ((v, a), b) in want.iter().zip(&r).zip(&y) {
        assert_eq!(*v, a.wrapping_add(*b) & mask);
    }
    // server: wrong count, truncated, extended, flipped version, other parameters
    assert!(server.finish(&local, &msgs[1..]).is_err());
    let mut extra = msgs.clone();
    extra.push(msgs[0].clone());
    assert!(server.finish(&local, &extra).is_err());
    let mut bad = msgs.clone();
    bad[0].pop();
    assert!(server.finish(&local, &bad).is_err());
    let mut bad = msgs.clone();
    bad[0].push(0);
    assert!(server.finish(&local, &bad).is_err());
    let mut bad = msgs.clone();
    bad[0][0] ^= 1;
    assert!(server.finish(&local, &bad).is_err());
    let other = params(Preset::N8192Q200Pack, 17, 8192);
    let other_plan = ServerKeyPlan::new(&other, shape, ServerKeyPolicy::MinBytes).unwrap();
    let other_sw = ServerKeyWeights::new(other_plan, vec![0; 45], None).unwrap();
    let other_setup = ServerKeySetup::generate(&other, &mut rng).unwrap();
    let other_server = ServerKeyServer::new(&other_setup, &other_sw, 6).unwrap();
    assert!(other_server.finish(&local, &msgs).is_err());
    assert!(ServerKeyServer::new(&setup, &other_sw, 6).is_err());
    // shapes of the server's own inputs
    assert!(ServerKeyWeights::new(plan.clone(), vec![0; 44], None).is_err());
    assert!(ServerKeyWeights::new(plan, vec![0; 45], Some(&[1, 2])).is_err());
    assert!(server.local(Some(&x[1..])).is_err());

    // a peer that closes early is a transport error, not a hang
    let (srv, _cli) = run_two_party(
        |mut ch| ServerKeyMatMul::run_server(&mut ch, &setup, &sw, 6, None),
        drop,
    );
    assert!(srv.is_err());
}
