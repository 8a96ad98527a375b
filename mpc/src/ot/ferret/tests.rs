//! Unit tests on the insecure small parameters ([`FerretParams::insecure_for_tests`]), which
//! exist only under `cfg(test)`.

use super::ggm::TwoKeyPrg;
use super::mpcot::{self, ReceiverIter, SenderIter};
use super::*;
use crate::ot::{Block, CotReceiver, CotSender, OtCost, OtPair};
use crate::{MpcError, Prg};
use duet_transport::{run_two_party, Channel, ChannelStats, Role};
use rand::RngCore;

fn block(rng: &mut Prg) -> Block {
    u128::from(rng.next_u64()) | (u128::from(rng.next_u64()) << 64)
}

/// Base COTs from a trusted dealer under the lsb convention: (q, t).
fn dealer(rng: &mut Prg, delta: Block, m: usize) -> (Vec<Block>, Vec<Block>) {
    let q: Vec<Block> = (0..m).map(|_| block(rng) & !1).collect();
    let t = q
        .iter()
        .map(|&q| {
            if rng.next_u32() & 1 == 1 {
                q ^ delta
            } else {
                q
            }
        })
        .collect();
    (q, t)
}

#[test]
fn ferret_ggm_punctured_tree_matches_full_tree() {
    let prg = TwoKeyPrg::new();
    let mut rng = Prg::from_seed([1; 32]);
    for h in [1usize, 2, 5, 8] {
        let seed = block(&mut rng);
        let mut full = vec![0u128; 1 << h];
        let mut sums = vec![[0u128; 2]; h];
        prg.expand_tree(seed, &mut full, &mut sums);
        // Level sums really are the XOR of the left / right leaves at the last level.
        let (mut l, mut r) = (0u128, 0u128);
        for (i, x) in full.iter().enumerate() {
            if i % 2 == 0 {
                l ^= x
            } else {
                r ^= x
            }
        }
        assert_eq!(sums[h - 1], [l, r]);
        for alpha in 0..(1usize << h) {
            let known: Vec<Block> = (0..h)
                .map(|lvl| sums[lvl][1 - ((alpha >> (h - 1 - lvl)) & 1)])
                .collect();
            let mut part = vec![7u128; 1 << h];
            prg.punctured_tree(alpha, &known, &mut part);
            for (i, (a, b)) in full.iter().zip(&part).enumerate() {
                if i == alpha {
                    assert_eq!(*b, 0);
                } else {
                    assert_eq!(a, b, "h={h} alpha={alpha} leaf {i}");
                }
            }
        }
    }
}

/// Runs one iteration's cores without the LPN step and checks `v ⊕ w = e·Δ` with regular `e`.
#[test]
fn ferret_mpcot_gives_regular_noise_times_delta() {
    let p = FerretParams::insecure_for_tests().main();
    let mut rng = Prg::from_seed([2; 32]);
    let delta = block(&mut rng) | 1;
    let (q, t) = dealer(&mut rng, delta, p.base_cots());
    let alphas: Vec<usize> = (0..p.t)
        .map(|_| rng.next_u32() as usize % p.bin_size())
        .collect();
    let seeds: Vec<Block> = (0..p.t).map(|_| block(&mut rng)).collect();
    let (r, choice) = ReceiverIter::new(p, 3, &t, alphas.clone()).unwrap();
    let s = SenderIter::new(p, delta, 3, &q, seeds, &choice).unwrap();
    let (mut v, mut w) = (vec![0u128; p.n], vec![0u128; p.n]);
    for c in 0..mpcot::chunks(&p) {
        let msg = s.chunk(c, &mut v);
        r.chunk(c, &msg, &mut w).unwrap();
    }
    for (i, (a, b)) in v.iter().zip(&w).enumerate() {
        let (j, pos) = (i / p.bin_size(), i % p.bin_size());
        let expect = if pos == alphas[j] { delta } else { 0 };
        assert_eq!(a ^ b, expect, "position {i}");
        assert_eq!(a & 1, 0);
    }
    // The LPN step keeps the correlation, with the choice bit in the receiver's lsb.
    s.finish(&mut v);
    r.finish(&mut w);
    for (a, b) in v.iter().zip(&w) {
        assert_eq!(a ^ b, if b & 1 == 1 { delta } else { 0 });
    }
    // A wrong delta on the sender's side breaks it (the check can fail).
    let s2 = SenderIter::new(p, delta ^ 2, 3, &q, vec![1; p.t], &choice).unwrap();
    let mut v2 = vec![0u128; p.n];
    let msg = s2.chunk(0, &mut v2);
    let mut w2 = vec![0u128; p.n];
    r.chunk(0, &msg, &mut w2).unwrap();
    assert!(v2
        .iter()
        .zip(&w2)
        .any(|(a, b)| a ^ b != 0 && a ^ b != delta));
}

/// Both parties over IKNP with the insecure test parameters; returns what each closure returns.
fn ferret_session<A: Send, B: Send>(
    sender: impl FnOnce(&mut FerretSender, &mut duet_transport::MemoryChannel) -> A + Send,
    receiver: impl FnOnce(&mut FerretReceiver, &mut duet_transport::MemoryChannel) -> B + Send,
) -> (A, B) {
    let params = FerretParams::insecure_for_tests();
    run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([3; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
            let mut s = FerretSender::setup(&mut ch, pair.sender(), params, &mut rng).unwrap();
            sender(&mut s, &mut ch)
        },
        |mut ch| {
            let mut rng = Prg::from_seed([4; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
            let mut r = FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).unwrap();
            receiver(&mut r, &mut ch)
        },
    )
}

#[test]
fn ferret_correlation_holds_across_bootstrapped_iterations() {
    let per = FerretParams::insecure_for_tests().cots_per_iteration();
    let sizes = [1usize, 1000, per, 3 * per + 17, 5];
    let ((delta, q, iters_s), (b, t, iters_r)) = ferret_session(
        |s, ch| {
            let mut all = Vec::new();
            for n in sizes {
                all.extend(s.send_cot(ch, n).unwrap());
            }
            assert_eq!(s.consumed(), all.len() as u64);
            (s.delta(), all, s.iterations())
        },
        |r, ch| {
            let (mut b, mut t) = (Vec::new(), Vec::new());
            for n in sizes {
                let (b1, t1) = r.recv_cot(ch, n).unwrap();
                b.extend(b1);
                t.extend(t1);
            }
            (b, t, r.iterations())
        },
    );
    assert_eq!(iters_s, iters_r);
    assert!(iters_s >= 5, "{iters_s} iterations");
    assert_eq!(delta & 1, 1, "Δ has lsb 1");
    assert_eq!(q.len(), sizes.iter().sum::<usize>());
    for (i, ((q, t), b)) in q.iter().zip(&t).zip(&b).enumerate() {
        assert_eq!(*q ^ *t, if *b { delta } else { 0 }, "COT {i}");
        assert_eq!(q & 1, 0);
        assert_eq!(t & 1 == 1, *b);
    }
    let ones = b.iter().filter(|&&x| x).count() as f64;
    let n = b.len() as f64;
    // 6 standard deviations.
    assert!(
        (ones - n / 2.0).abs() < 6.0 * (n / 4.0).sqrt(),
        "{ones} ones of {n}"
    );
    // No two outputs repeat (a broken expansion or code would repeat blocks).
    let mut sorted = q.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), q.len());
}

fn diff(a: ChannelStats, b: ChannelStats) -> (u64, u64, u64) {
    (
        b.bytes_sent - a.bytes_sent,
        b.messages_sent - a.messages_sent,
        b.rounds - a.rounds,
    )
}

#[test]
fn ferret_measured_bytes_equal_cot_cost_and_pool_refills() {
    let params = FerretParams::insecure_for_tests();
    let per = params.cots_per_iteration();
    let pooled0 = params.setup().n - params.main().base_cots();
    // Served from the setup leftovers, then crossing one refill, then two at once.
    let sizes = [pooled0, 1, 10, per, 2 * per];
    let expect_iters = [0u64, 1, 0, 1, 2];
    let check = |costs: Vec<(OtCost, (u64, u64, u64))>, sender: bool| {
        for (i, (c, m)) in costs.into_iter().enumerate() {
            let t = if sender { c.sender } else { c.receiver };
            assert_eq!((t.bytes, t.messages, t.flights), m, "call {i}");
            let it = crate::ot::ferret::iteration_cost(&params.main());
            assert_eq!(c.bytes(), expect_iters[i] * it.bytes(), "call {i}");
        }
    };
    let (s, r) = ferret_session(
        |s, ch| {
            let mut v = Vec::new();
            for n in sizes {
                let cost = s.cot_cost(n);
                let before = ch.stats();
                s.send_cot(ch, n).unwrap();
                v.push((cost, diff(before, ch.stats())));
            }
            v
        },
        |r, ch| {
            let mut v = Vec::new();
            for n in sizes {
                let cost = r.cot_cost(n);
                let before = ch.stats();
                r.recv_cot(ch, n).unwrap();
                v.push((cost, diff(before, ch.stats())));
            }
            v
        },
    );
    check(s, true);
    check(r, false);
}

#[test]
fn ferret_setup_cost_is_exact() {
    let params = FerretParams::insecure_for_tests();
    let (s, r) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([5; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
            let cost = FerretSender::setup_cost(pair.sender(), &params);
            let before = ch.stats();
            FerretSender::setup(&mut ch, pair.sender(), params, &mut rng).unwrap();
            (cost, diff(before, ch.stats()))
        },
        |mut ch| {
            let mut rng = Prg::from_seed([6; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
            let cost = FerretReceiver::setup_cost(pair.receiver(), &params);
            let before = ch.stats();
            FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).unwrap();
            (cost, diff(before, ch.stats()))
        },
    );
    assert_eq!(s.0, r.0);
    let c = s.0;
    assert_eq!((c.sender.bytes, c.sender.messages), (s.1 .0, s.1 .1));
    assert_eq!((c.receiver.bytes, c.receiver.messages), (r.1 .0, r.1 .1));
    assert_eq!(c.sender.flights, s.1 .2);
    assert_eq!(c.receiver.flights, r.1 .2);
}

#[test]
fn ferret_insecure_test_parameters_are_refused() {
    let p = FerretParams::insecure_for_tests();
    assert!(p.check().is_err());
    assert!(FerretParams::new(p.main(), p.setup()).is_err());
    assert!(matches!(
        p.main().check_security(),
        Err(MpcError::InvalidArgument { .. })
    ));
}

#[test]
fn ferret_malformed_choice_message_is_an_error() {
    let p = FerretParams::insecure_for_tests().setup();
    let q = vec![0u128; p.base_cots()];
    let len = mpcot::choice_msg_len(&p);
    for bad in [vec![0u8; len - 1], vec![0u8; len + 1], vec![]] {
        let r = SenderIter::new(p, 1, 0, &q, vec![0; p.t], &bad);
        assert!(matches!(r, Err(MpcError::InvalidPeerData { .. })));
    }
    let good = vec![0u8; len];
    assert!(SenderIter::new(p, 1, 0, &q, vec![0; p.t], &good).is_ok());
    // Nonzero padding bits: B13's setup set has t·h = 8,262 bits, 2 of padding.
    let b = FerretParams::B13.setup();
    let qb = vec![0u128; b.base_cots()];
    let mut msg = vec![0u8; mpcot::choice_msg_len(&b)];
    assert!(SenderIter::new(b, 1, 0, &qb, vec![0; b.t], &msg).is_ok());
    if let Some(x) = msg.last_mut() {
        *x = 0x80;
    }
    let r = SenderIter::new(b, 1, 0, &qb, vec![0; b.t], &msg);
    assert!(matches!(r, Err(MpcError::InvalidPeerData { .. })));
}

#[test]
fn ferret_malformed_tree_message_is_an_error() {
    let p = FerretParams::insecure_for_tests().main();
    let t = vec![0u128; p.base_cots()];
    let (r, _) = ReceiverIter::new(p, 0, &t, vec![0; p.t]).unwrap();
    let mut out = vec![0u128; p.n];
    let good_len = p.t.min(mpcot::CHUNK_TREES) * (2 * p.h as usize + 1) * 16;
    for len in [0, 16, good_len - 1, good_len + 16] {
        let msg = vec![0xa5u8; len];
        assert!(matches!(
            r.chunk(0, &msg, &mut out),
            Err(MpcError::InvalidPeerData { .. })
        ));
    }
    assert!(r.chunk(0, &vec![0xa5u8; good_len], &mut out).is_ok());
}

/// A peer that sends a short setup conversion message gets an error, not a panic.
#[test]
fn ferret_malformed_setup_message_is_an_error() {
    let params = FerretParams::insecure_for_tests();
    let m0 = params.setup().base_cots();
    let (_, r) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([7; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
            pair.sender().send_rot(&mut ch, m0).unwrap();
            ch.send_bytes(&vec![0u8; 16 * m0 - 3]).unwrap();
            ch.flush().unwrap();
        },
        |mut ch| {
            let mut rng = Prg::from_seed([8; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
            FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).map(|_| ())
        },
    );
    assert!(matches!(r, Err(MpcError::InvalidPeerData { .. })), "{r:?}");
}
