//! HeLinear: fused products sharing one input against the plaintext product on uniformly random
//! shares with extreme values (shares and weights at their bounds), every policy and split,
//! a prepared cache, the client-holds-X variant, measured bytes == cost, and malformed peer
//! messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use std::sync::Arc;

use duet_fhe::{MatmulLayout, RlweParameters};
use duet_protocols::*;
use duet_transport::{run_two_party, Channel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const L: u32 = 42;
const W_BOUND: i64 = 1 << 16;

fn params() -> Arc<RlweParameters> {
    linear_params(L, W_BOUND as u64).unwrap()
}

/// Uniform ring elements, with the extremes `0`, `1`, `2^l - 1` and `2^(l-1)` mixed in.
fn ring_values(rng: &mut ChaCha20Rng, len: usize, mask: u64) -> Vec<u64> {
    (0..len)
        .map(|i| match i % 7 {
            0 => mask,
            1 => 0,
            2 => (mask >> 1) + 1,
            3 => 1,
            _ => rng.gen::<u64>() & mask,
        })
        .collect()
}

/// Weights: `+-bound`, zero and uniform within the bound.
fn weights(rng: &mut ChaCha20Rng, len: usize) -> Vec<i64> {
    (0..len)
        .map(|i| match i % 5 {
            0 => W_BOUND,
            1 => -W_BOUND,
            2 => 0,
            _ => rng.gen_range(-W_BOUND..=W_BOUND),
        })
        .collect()
}

struct Case {
    n: usize,
    d: usize,
    parts: Vec<usize>,
    shared: bool,
    prepared: bool,
}

/// Runs one call; checks every part against the plaintext product and the measured bytes,
/// messages and flights against the plan.
fn run(p: &Arc<RlweParameters>, plan: &LinearPlan, case: &Case, seed: u64) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mask = p.plain_mask();
    let (n, d) = (case.n, case.d);
    let x = ring_values(&mut rng, n * d, mask);
    let (x_c, x_s): (Vec<u64>, Option<Vec<u64>>) = if case.shared {
        let s = ring_values(&mut rng, n * d, mask);
        let c = x
            .iter()
            .zip(&s)
            .map(|(a, b)| a.wrapping_sub(*b) & mask)
            .collect();
        (c, Some(s))
    } else {
        (x.clone(), None)
    };
    let ws: Vec<Vec<i64>> = case
        .parts
        .iter()
        .map(|&k| weights(&mut rng, d * k))
        .collect();
    let bs: Vec<Vec<i64>> = case
        .parts
        .iter()
        .map(|&k| {
            (0..k)
                .map(|i| if i == 0 { i64::MIN / 2 } else { rng.gen() })
                .collect()
        })
        .collect();
    let lw = LinearWeights::new(
        p,
        d,
        ws.iter()
            .zip(&bs)
            .map(|(w, b)| (&w[..], Some(&b[..])))
            .collect(),
    )
    .unwrap();
    let prepared = case
        .prepared
        .then(|| PreparedLinear::new(plan, &lw).unwrap());
    let (server, client) = run_two_party(
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
            let setup = HeServerSetup::run(&mut ch, p)?;
            HeLinear::run_server(
                &mut ch,
                &setup,
                plan,
                &lw,
                prepared.as_ref(),
                x_s.as_deref(),
                &mut rng,
            )
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(seed + 2);
            let setup = HeClientSetup::run(&mut ch, p, &mut rng)?;
            let before = ch.stats();
            let y = HeLinear::run_client(&mut ch, &setup, plan, &x_c, &mut rng)?;
            let online = ch.stats() - before;
            // the setup flight and the input flight go the same way: one flight in all
            Ok::<_, ProtocolError>((y, online, ch.stats().total_rounds()))
        },
    );
    let r = server.unwrap();
    let (yc, online, rounds) = client.unwrap();
    let cost = plan.cost();
    let what = format!(
        "{n}x{d}x{:?} blocks {:?} pack {} levels {}",
        case.parts,
        plan.layout(),
        plan.pack(),
        plan.levels()
    );
    assert_eq!(online.total_bytes(), cost.bytes, "{what}: bytes");
    assert_eq!(
        online.messages_sent + online.messages_received,
        cost.messages,
        "{what}: messages"
    );
    assert_eq!(rounds, cost.rounds, "{what}: flights");
    for (i, &k) in case.parts.iter().enumerate() {
        for row in 0..n {
            for c in 0..k {
                let mut want = bs[i][c] as u64;
                for j in 0..d {
                    want = want.wrapping_add(x[row * d + j].wrapping_mul(ws[i][j * k + c] as u64));
                }
                let got = yc[i][row * k + c].wrapping_add(r[i][row * k + c]) & mask;
                assert_eq!(got, want & mask, "{what}: part {i} ({row}, {c})");
            }
        }
    }
}

#[test]
fn decode_shapes_every_split() {
    // one row (a decode step), a q|k|v-like fused product with a partial last group
    let p = params();
    let case = Case {
        n: 1,
        d: 96,
        parts: vec![600, 200, 64],
        shared: true,
        prepared: false,
    };
    let layout = MatmulLayout::new(&p, 1, 96, 80).unwrap();
    for levels in [0u32, 2, 5] {
        let plan = LinearPlan::with_layout(&p, 1, 96, &case.parts, layout, 32, levels).unwrap();
        run(&p, &plan, &case, 10 + u64::from(levels));
    }
    // several row blocks (the last partial) and inner blocks (the last partial), prepared
    let case2 = Case {
        n: 5,
        d: 300,
        parts: vec![100, 45],
        shared: true,
        prepared: true,
    };
    let blocks = MatmulLayout::new(&p, 2, 128, 16).unwrap();
    let plan = LinearPlan::with_layout(&p, 5, 300, &case2.parts, blocks, 16, 2).unwrap();
    run(&p, &plan, &case2, 30);
    // the inner dimension padded with zero rows (96 -> 128) for 128 blocks per ciphertext
    let padded = MatmulLayout::new(&p, 1, 128, 64).unwrap();
    let plan = LinearPlan::with_layout(&p, 1, 96, &case.parts, padded, 128, 6).unwrap();
    run(&p, &plan, &case, 20);
}

#[test]
fn planned_policies_prefill_and_client_held_input() {
    let p = params();
    let cases = [
        // several row and inner blocks, planned by bytes
        (
            Case {
                n: 5,
                d: 300,
                parts: vec![40, 33],
                shared: true,
                prepared: false,
            },
            LayoutPolicy::MinBytes,
        ),
        // the client holds X (first layer); fewest key switches within a budget; cached
        (
            Case {
                n: 3,
                d: 64,
                parts: vec![700],
                shared: false,
                prepared: true,
            },
            LayoutPolicy::FewestKeySwitches {
                max_bytes: 4_000_000,
            },
        ),
        // no packing at all
        (
            Case {
                n: 2,
                d: 20,
                parts: vec![9, 1],
                shared: true,
                prepared: true,
            },
            LayoutPolicy::ExtractionOnly,
        ),
    ];
    for (i, (case, policy)) in cases.iter().enumerate() {
        let plan = LinearPlan::new(&p, case.n, case.d, &case.parts, *policy).unwrap();
        run(&p, &plan, case, 100 + i as u64);
    }
}

#[test]
fn a_smollm2_decode_plan_is_cheap() {
    // the plans of one SmolLM2 layer's decode step: bytes at most the matmul plans' (fewer
    // with a padded inner block and 128 blocks per ciphertext), key switches far fewer
    let p = params();
    for (d, parts, max_ks) in [
        (576usize, vec![576usize, 192, 192], 20u64),
        (576, vec![576], 20),
        (576, vec![1536, 1536], 40),
        (1536, vec![576], 40),
        (576, vec![49152], 140),
    ] {
        let plan = LinearPlan::new(&p, 1, d, &parts, LayoutPolicy::MinBytes).unwrap();
        let k: usize = parts.iter().sum();
        let old = HeMatMul::cost(&p, MatmulShape::new(1, d, k), LayoutPolicy::MinBytes).unwrap();
        let c = plan.cost();
        assert!(c.bytes <= old.bytes, "{d}x{parts:?}");
        assert!(c.key_switches <= max_ks, "{d}x{parts:?}: {c:?}");
        assert!(plan.work().key_switches <= max_ks as f64);
    }
}

#[test]
fn weights_and_shapes_are_checked() {
    let p = params();
    let w = [W_BOUND + 1; 6];
    assert!(LinearWeights::new(&p, 3, vec![(&w[..], None)]).is_err());
    let w = [1i64; 6];
    assert!(LinearWeights::new(&p, 4, vec![(&w[..], None)]).is_err());
    let b = [0i64; 3];
    assert!(LinearWeights::new(&p, 3, vec![(&w[..], Some(&b[..]))]).is_err());
    let plan = LinearPlan::new(&p, 1, 3, &[3], LayoutPolicy::MinBytes).unwrap();
    let lw = LinearWeights::new(&p, 3, vec![(&w[..], None)]).unwrap();
    let setup_params = linear_params(L, 4).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let client = HeClientSetup::generate(&setup_params, &mut rng).unwrap();
    assert!(HeLinearClient::new(&client, &plan).is_err());
    let _ = lw;
    assert!(LinearPlan::new(&p, 0, 3, &[3], LayoutPolicy::MinBytes).is_err());
    assert!(LinearPlan::new(&p, 1, 3, &[3, 0], LayoutPolicy::MinBytes).is_err());
    assert_eq!(
        split_parts(&[1, 2, 3, 4, 5, 6], 2, &[1, 2]).unwrap(),
        vec![vec![1, 4], vec![2, 3, 5, 6]]
    );
}

fn server_against(corrupt: fn(Vec<u8>) -> Vec<u8>) -> duet_protocols::Result<Vec<Vec<u64>>> {
    let p = params();
    let plan = LinearPlan::new(&p, 2, 7, &[3, 2], LayoutPolicy::MinBytes).unwrap();
    let w1 = [1i64; 21];
    let w2 = [-1i64; 14];
    let lw = LinearWeights::new(&p, 7, vec![(&w1[..], None), (&w2[..], None)]).unwrap();
    let (server, _client) = run_two_party(
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(1);
            let setup = HeServerSetup::run(&mut ch, &p)?;
            HeLinear::run_server(&mut ch, &setup, &plan, &lw, None, None, &mut rng)
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
            let core = HeLinearClient::new(&setup, &plan).unwrap();
            for m in core.encrypt(&[3; 14], &mut rng).unwrap() {
                ch.send_bytes(&corrupt(m)).unwrap();
            }
            ch.flush().unwrap();
            let _ = ch.recv_bytes();
        },
    );
    server
}

#[test]
fn malformed_messages_are_rejected() {
    assert!(server_against(|m| m).is_ok());
    assert!(server_against(|mut m| {
        m.pop();
        m
    })
    .is_err());
    assert!(server_against(|m| vec![0xAB; m.len()]).is_err());
    assert!(server_against(|_| Vec::new()).is_err());
    // a client given too few or malformed outputs
    let p = params();
    let plan = LinearPlan::new(&p, 1, 7, &[5], LayoutPolicy::MinBytes).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let setup = HeClientSetup::generate(&p, &mut rng).unwrap();
    let core = HeLinearClient::new(&setup, &plan).unwrap();
    assert!(core.decrypt(&[]).is_err());
    assert!(core.decrypt(&[vec![0x5A; 100]]).is_err());
}
