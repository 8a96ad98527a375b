//! Ferret COT at the real (vetted, 128-bit) parameters: correlation across bootstrapped
//! iterations, exact costs, both directions under the generic OT API, the parameter check and
//! malformed peer messages.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code outside #[test] functions: a failed unwrap is a failed test"
)]

use duet_mpc::ot::ferret::{bootstrap_cost, iteration_cost, LpnParams};
use duet_mpc::ot::{
    CotReceiver, CotSender, FerretPair, FerretParams, FerretReceiver, FerretSender, IknpReceiver,
    IknpSender, OtPair,
};
use duet_mpc::{MpcError, Prg, Ring};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};
use std::time::Instant;

fn setup_sender(ch: &mut MemoryChannel) -> (FerretSender, IknpSender) {
    let mut rng = Prg::from_seed([1; 32]);
    let (mut s, r) = OtPair::setup(ch, Role::Server, &mut rng)
        .unwrap()
        .into_parts();
    drop(r);
    let f = FerretSender::setup(ch, &mut s, FerretParams::B13, &mut rng).unwrap();
    (f, s)
}

fn setup_receiver(ch: &mut MemoryChannel) -> (FerretReceiver, IknpReceiver) {
    let mut rng = Prg::from_seed([2; 32]);
    let (s, mut r) = OtPair::setup(ch, Role::Client, &mut rng)
        .unwrap()
        .into_parts();
    drop(s);
    let f = FerretReceiver::setup(ch, &mut r, FerretParams::B13, &mut rng).unwrap();
    (f, r)
}

fn sent(a: ChannelStats, b: ChannelStats) -> (u64, u64) {
    (
        b.bytes_sent - a.bytes_sent,
        b.messages_sent - a.messages_sent,
    )
}

/// Two main iterations at B13 (about 20 million COTs per party), checked output by output.
#[test]
fn ferret_real_params_correlation_and_cost_across_two_iterations() {
    let params = FerretParams::B13;
    let per = params.cots_per_iteration();
    let start = Instant::now();
    let ((delta, q, s_costs), (b, t, r_costs)) = run_two_party(
        |mut ch| {
            let (mut f, _) = setup_sender(&mut ch);
            let pooled = f.pooled();
            let mut costs = Vec::new();
            let mut q = Vec::new();
            // The setup leftovers, then one call spanning two main iterations.
            for n in [pooled, per + 1000] {
                let c = f.cot_cost(n);
                let before = ch.stats();
                q.extend(f.send_cot(&mut ch, n).unwrap());
                costs.push((c, sent(before, ch.stats())));
            }
            assert_eq!(f.iterations(), 3);
            (f.delta(), q, costs)
        },
        |mut ch| {
            let (mut f, _) = setup_receiver(&mut ch);
            let pooled = f.pooled();
            let mut costs = Vec::new();
            let (mut b, mut t) = (Vec::new(), Vec::new());
            for n in [pooled, per + 1000] {
                let c = f.cot_cost(n);
                let before = ch.stats();
                let (b1, t1) = f.recv_cot(&mut ch, n).unwrap();
                b.extend(b1);
                t.extend(t1);
                costs.push((c, sent(before, ch.stats())));
            }
            (b, t, costs)
        },
    );
    eprintln!("two B13 iterations + setup: {:?}", start.elapsed());
    assert_eq!(delta & 1, 1);
    assert_eq!(q.len(), t.len());
    let mut ones = 0usize;
    for (i, ((q, t), b)) in q.iter().zip(&t).zip(&b).enumerate() {
        assert_eq!(q ^ t, if *b { delta } else { 0 }, "COT {i}");
        ones += usize::from(*b);
    }
    let n = b.len() as f64;
    assert!((ones as f64 - n / 2.0).abs() < 6.0 * (n / 4.0).sqrt());
    // Exact costs: nothing for pooled COTs, two main iterations for the second call.
    let it = iteration_cost(&params.main());
    assert_eq!(it.bytes(), 2_080 + 552_960);
    for (i, ((cs, ms), (cr, mr))) in s_costs.iter().zip(&r_costs).enumerate() {
        assert_eq!(cs, cr);
        assert_eq!((cs.sender.bytes, cs.sender.messages), *ms, "call {i}");
        assert_eq!((cr.receiver.bytes, cr.receiver.messages), *mr, "call {i}");
    }
    assert_eq!(s_costs[0].0.bytes(), 0);
    assert_eq!(s_costs[1].0.bytes(), 2 * it.bytes());
}

/// Both directions from one `FerretPair`, used through the generic OT API (chosen-message,
/// 1-out-of-N and ring COT are provided trait methods), served from the setup leftovers.
#[test]
fn ferret_pair_both_directions_run_generic_ot() {
    let params = FerretParams::B13;
    let ring = Ring::new(32).unwrap();
    let msgs: Vec<[u64; 2]> = (0..500u64).map(|i| [i, i ^ 0xdead_beef]).collect();
    let choices: Vec<bool> = (0..500).map(|i| i % 3 == 0).collect();
    // 1-of-16 OT of 4-bit messages, 100 instances.
    let table: Vec<u64> = (0..1600u64).map(|i| (i * 7) % 16).collect();
    let picks: Vec<u8> = (0..100u8).map(|i| i % 16).collect();
    let xs: Vec<u64> = (0..300u64).map(|i| i * 12_345).collect();
    let setup = |ch: &mut MemoryChannel, role: Role| {
        let mut rng = Prg::from_seed([role.index() as u8 + 10; 32]);
        FerretPair::setup(ch, role, params, &mut rng).unwrap()
    };
    let ((got, a), (got2, picked, with_b)) = run_two_party(
        |mut ch| {
            let mut p = setup(&mut ch, Role::Server);
            let before = ch.stats();
            p.sender().send_chosen(&mut ch, &msgs, 32).unwrap();
            let got = p.receiver().recv_chosen(&mut ch, &choices, 32).unwrap();
            p.sender().send_one_of_n(&mut ch, &table, 4, 4).unwrap();
            let a = p.sender().send_cot_ring(&mut ch, &xs, ring).unwrap();
            // 1,200 COTs per direction, served from the 1,376 pooled at setup: no Ferret iteration, only the protocols' own messages.
            assert_eq!(p.sender().iterations(), 1);
            assert_eq!(p.receiver().iterations(), 1);
            assert!(ch.stats().bytes_sent - before.bytes_sent < 20_000);
            (got, a)
        },
        |mut ch| {
            let mut p = setup(&mut ch, Role::Client);
            let got = p.receiver().recv_chosen(&mut ch, &choices, 32).unwrap();
            p.sender().send_chosen(&mut ch, &msgs, 32).unwrap();
            let picked = p.receiver().recv_one_of_n(&mut ch, &picks, 4, 4).unwrap();
            let with_b = p
                .receiver()
                .recv_cot_ring(&mut ch, &choices[..300], ring)
                .unwrap();
            (got, picked, with_b)
        },
    );
    for g in [&got, &got2] {
        for (i, x) in g.iter().enumerate() {
            assert_eq!(*x, msgs[i][usize::from(choices[i])] & 0xffff_ffff);
        }
    }
    for (i, (&c, &x)) in picks.iter().zip(&picked).enumerate() {
        assert_eq!(x, table[16 * i + usize::from(c)]);
    }
    for i in 0..300 {
        let expect = if choices[i] {
            ring.add(a[i], xs[i])
        } else {
            a[i]
        };
        assert_eq!(with_b[i], ring.reduce(expect), "ring COT {i}");
    }
}

#[test]
fn ferret_setup_cost_is_exact_at_real_params() {
    let params = FerretParams::B13;
    let m0 = params.setup().base_cots();
    assert_eq!(m0, 32_768 + 918 * 9);
    let (s, r) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([3; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
            let c = FerretSender::setup_cost(pair.sender(), &params);
            let before = ch.stats();
            FerretSender::setup(&mut ch, pair.sender(), params, &mut rng).unwrap();
            (c, sent(before, ch.stats()))
        },
        |mut ch| {
            let mut rng = Prg::from_seed([4; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
            let c = FerretReceiver::setup_cost(pair.receiver(), &params);
            let before = ch.stats();
            FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).unwrap();
            (c, sent(before, ch.stats()))
        },
    );
    assert_eq!(s.0, r.0);
    assert_eq!((s.0.sender.bytes, s.0.sender.messages), s.1);
    assert_eq!((r.0.receiver.bytes, r.0.receiver.messages), r.1);
    assert_eq!(
        s.0,
        duet_mpc::ot::iknp::extend_cost(m0) + bootstrap_cost(&params)
    );
    assert_eq!(FerretPair::setup_cost_after_base(&params), s.0);
    eprintln!(
        "B13 setup after base OTs: {} bytes (IKNP {} + bootstrap {})",
        s.0.bytes(),
        duet_mpc::ot::iknp::extend_cost(m0).bytes(),
        bootstrap_cost(&params).bytes()
    );
}

#[test]
fn ferret_lpn_check_refuses_sets_below_128_bits() {
    for p in [FerretParams::B13, FerretParams::B12, FerretParams::B11] {
        p.check().unwrap();
        for s in [p.main(), p.setup()] {
            s.check_security().unwrap();
            assert!(s.pooled_gauss_bits() >= 128.0, "{s:?}");
        }
        FerretParams::new(p.main(), p.setup()).unwrap();
    }
    let m = FerretParams::B13.main();
    let refused = |s: LpnParams| {
        assert!(
            matches!(s.check_security(), Err(MpcError::InvalidArgument { .. })),
            "{s:?} accepted"
        );
        assert!(FerretParams::new(s, FerretParams::B13.setup()).is_err());
    };
    // Sparser noise (half the bins, twice as large) or a shorter secret: below 128 bits.
    let weak = [
        LpnParams {
            t: 640,
            n: 640 << 14,
            h: 14,
            ..m
        },
        LpnParams { k: 200_000, ..m },
    ];
    for s in weak {
        assert!(s.pooled_gauss_bits() < 128.0, "{s:?}");
        refused(s);
    }
    // Well-formed and above the bound but not vetted: refused too.
    let unvetted = LpnParams { k: 460_000, ..m };
    assert!(unvetted.pooled_gauss_bits() > 128.0);
    refused(unvetted);
    // Malformed shapes.
    refused(LpnParams { n: m.n + 1, ..m });
    refused(LpnParams { k: 0, ..m });
    refused(LpnParams { h: 0, ..m });
    // A vetted main set whose setup set cannot bootstrap it.
    assert!(FerretParams::new(FerretParams::B13.main(), FerretParams::B11.setup()).is_err());
}

fn peer_error<T: std::fmt::Debug>(r: duet_mpc::Result<T>) {
    assert!(
        matches!(
            r,
            Err(MpcError::InvalidPeerData { .. }) | Err(MpcError::Transport(_))
        ),
        "expected a peer-data error, got {r:?}"
    );
}

/// A sender that answers the choice bits with a truncated or oversized tree message.
#[test]
fn ferret_malformed_peer_messages_give_errors() {
    let params = FerretParams::B13;
    let m0 = params.setup().base_cots();
    let good = 128 * (2 * 9 + 1) * 16usize;
    for len in [0, 16, good - 1, good + 16] {
        let (_, r) = run_two_party(
            |mut ch| {
                let mut rng = Prg::from_seed([5; 32]);
                let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
                pair.sender().send_rot(&mut ch, m0).unwrap();
                ch.send_bytes(&vec![7u8; 16 * m0]).unwrap();
                ch.flush().unwrap();
                let _choices = ch.recv_bytes().unwrap();
                ch.send_bytes(&vec![9u8; len]).unwrap();
                ch.flush().unwrap();
            },
            |mut ch| {
                let mut rng = Prg::from_seed([6; 32]);
                let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
                FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).map(|_| ())
            },
        );
        peer_error(r);
    }
    // A receiver whose choice message has the wrong length, or nonzero padding bits.
    let len = (918 * 9usize).div_ceil(8);
    for bad in [vec![0u8; len - 1], vec![0u8; len + 8], vec![0xffu8; len]] {
        let (s, _) = run_two_party(
            |mut ch| {
                let mut rng = Prg::from_seed([7; 32]);
                let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
                FerretSender::setup(&mut ch, pair.sender(), params, &mut rng).map(|_| ())
            },
            |mut ch| {
                let mut rng = Prg::from_seed([8; 32]);
                let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
                pair.receiver().recv_rot(&mut ch, m0).unwrap();
                let _conv = ch.recv_bytes().unwrap();
                ch.send_bytes(&bad).unwrap();
                ch.flush().unwrap();
            },
        );
        peer_error(s);
    }
    // A peer that hangs up mid-iteration: a transport error on the other side.
    let (_, r) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([9; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
            pair.sender().send_rot(&mut ch, m0).unwrap();
        },
        |mut ch| {
            let mut rng = Prg::from_seed([10; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
            FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).map(|_| ())
        },
    );
    peer_error(r);
}
