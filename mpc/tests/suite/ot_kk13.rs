//! KK13 1-out-of-N OT: every choice of every N, both directions, exact cost, privacy of the
//! other messages against what the receiver can derive, malformed messages.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code outside #[test] functions: a failed unwrap is a failed test"
)]

use duet_mpc::ot::kk13::{
    codeword, extend_cost, pooled_cost, precompute_cost, setup_cost, KkReceiver, KkSender,
};
use duet_mpc::ot::OtPair;
use duet_mpc::{MpcError, Prg};
use duet_transport::{run_two_party, Channel, MemoryChannel, Role};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Runs `s` on the 1-of-N sender and `r` on the receiver; `sender` says which party sends.
fn run<A: Send, B: Send>(
    sender: Role,
    s: impl FnOnce(&mut KkSender, &mut MemoryChannel) -> A + Send,
    r: impl FnOnce(&mut KkReceiver, &mut MemoryChannel) -> B + Send,
) -> (A, B) {
    let sender_side = |mut ch: MemoryChannel| {
        let mut pair = OtPair::setup(&mut ch, sender, &mut Prg::from_seed([1; 32])).unwrap();
        let mut kk = KkSender::setup(pair.receiver(), &mut ch).unwrap();
        s(&mut kk, &mut ch)
    };
    let receiver_side = |mut ch: MemoryChannel| {
        let mut pair = OtPair::setup(&mut ch, sender.peer(), &mut Prg::from_seed([2; 32])).unwrap();
        let mut kk =
            KkReceiver::setup_with_rng(pair.sender(), &mut ch, &mut Prg::from_seed([9; 32]))
                .unwrap();
        r(&mut kk, &mut ch)
    };
    match sender {
        Role::Server => run_two_party(sender_side, receiver_side),
        Role::Client => {
            let (b, a) = run_two_party(receiver_side, sender_side);
            (a, b)
        }
    }
}

#[test]
fn ot_kk13_codewords_have_distance_128() {
    for a in 0..=255u8 {
        for b in (0..=255u8).step_by(7) {
            let (x, y) = (codeword(a), codeword(b));
            let d = (x[0] ^ y[0]).count_ones() + (x[1] ^ y[1]).count_ones();
            assert_eq!(d, if a == b { 0 } else { 128 }, "{a} vs {b}");
        }
    }
}

#[test]
fn ot_kk13_every_choice_both_directions() {
    for sender in [Role::Server, Role::Client] {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let cases: Vec<(u32, u32)> = (1..=8)
            .map(|l| (l, [1, 2, 64, 7][l as usize % 4]))
            .collect();
        let inputs: Vec<(Vec<u64>, Vec<u8>)> = cases
            .iter()
            .map(|&(l, w)| {
                let big_n = 1usize << l;
                let mut c: Vec<u8> = (0..big_n).map(|v| v as u8).collect();
                c.extend((0..70).map(|_| (rng.gen::<u32>() % big_n as u32) as u8));
                let m = u64::MAX >> (64 - w);
                (
                    (0..c.len() * big_n).map(|_| rng.gen::<u64>() & m).collect(),
                    c,
                )
            })
            .collect();
        let (_, got) = run(
            sender,
            |s, ch| {
                for (&(l, w), (m, _)) in cases.iter().zip(&inputs) {
                    s.send(ch, m, l, w).unwrap();
                }
            },
            |r, ch| {
                cases
                    .iter()
                    .zip(&inputs)
                    .map(|(&(l, w), (_, c))| r.receive(ch, c, l, w).unwrap())
                    .collect::<Vec<_>>()
            },
        );
        for (&(l, _), ((m, c), g)) in cases.iter().zip(inputs.iter().zip(&got)) {
            let big_n = 1usize << l;
            for (i, (&v, &gi)) in c.iter().zip(g).enumerate() {
                assert_eq!(
                    gi,
                    m[i * big_n + usize::from(v)],
                    "{sender} sends: 1-of-{big_n} #{i} choice {v}"
                );
            }
        }
    }
}

#[test]
fn ot_kk13_other_messages_hidden_from_receiver_view() {
    // The receiver's view: its rows t_i and all masked messages. Its own key H(i, t_i) must
    // unmask only its choice; checked with 64-bit messages on every instance.
    let (l, w, n) = (4u32, 64u32, 500usize);
    let big_n = 1usize << l;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let msgs: Vec<u64> = (0..n * big_n).map(|_| rng.gen()).collect();
    let choices: Vec<u8> = (0..n).map(|i| (i % big_n) as u8).collect();
    let (_, (got, y, rows)) = run(
        Role::Server,
        |s, ch| s.send(ch, &msgs, l, w).unwrap(),
        |r, ch| {
            let (u, rows) = r.extend_core(&choices).unwrap();
            ch.send_u64s(&u).unwrap();
            let y = ch.recv_bytes().unwrap();
            (r.finish(&rows, 0, &choices, &y, l, w).unwrap(), y, rows)
        },
    );
    for i in 0..n {
        let v = usize::from(choices[i]);
        assert_eq!(got[i], msgs[i * big_n + v]);
        for x in (0..big_n).filter(|&x| x != v) {
            let yx = u64::from_le_bytes(y[8 * (i * big_n + x)..][..8].try_into().unwrap());
            // Unmasking with its own key, or with its row xored with x's codeword (what it
            // could try without s), never gives the other message.
            let own = r_key(i as u64, &rows[i]);
            assert_ne!(
                yx ^ own,
                msgs[i * big_n + x],
                "instance {i} message {x} leaks"
            );
            let c = codeword(x as u8);
            let guess = r_key(i as u64, &[rows[i][0] ^ c[0], rows[i][1] ^ c[1]]);
            assert_ne!(
                yx ^ guess,
                msgs[i * big_n + x],
                "instance {i} message {x} leaks"
            );
        }
    }
}

/// The receiver-side key derivation, recomputed here from the documented hash.
fn r_key(i: u64, row: &[u128; 2]) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"duet/ot/kk13/v1");
    h.update(i.to_le_bytes());
    h.update(row[0].to_le_bytes());
    h.update(row[1].to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().unwrap())
}

#[test]
fn ot_kk13_measured_traffic_equals_cost() {
    let (l, w, n) = (4u32, 2u32, 70_000usize);
    let msgs = vec![1u64; n << l];
    let choices = vec![3u8; n];
    let barrier = |ch: &mut MemoryChannel| {
        ch.send_bytes(&[0]).unwrap();
        ch.recv_bytes().unwrap();
        ch.stats()
    };
    let ((s_setup, s_run, setup_c), r_run) = run_two_party(
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([1; 32])).unwrap();
            let setup_c = setup_cost(pair.receiver());
            let b = barrier(&mut ch);
            let mut kk = KkSender::setup(pair.receiver(), &mut ch).unwrap();
            let s_setup = ch.stats() - b;
            let b = barrier(&mut ch);
            kk.send(&mut ch, &msgs, l, w).unwrap();
            (s_setup, ch.stats() - b, setup_c)
        },
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([2; 32])).unwrap();
            barrier(&mut ch);
            let mut kk =
                KkReceiver::setup_with_rng(pair.sender(), &mut ch, &mut Prg::from_seed([9; 32]))
                    .unwrap();
            let b = barrier(&mut ch);
            let out = kk.receive(&mut ch, &choices, l, w).unwrap();
            assert!(out.iter().all(|&x| x == 1));
            ch.stats() - b
        },
    );
    assert_eq!(
        (s_setup.bytes_sent, s_setup.messages_sent, s_setup.rounds),
        (
            setup_c.sender.bytes,
            setup_c.sender.messages,
            setup_c.sender.flights
        )
    );
    assert_eq!(setup_c.bytes(), 4096);
    let c = extend_cost(n, l, w);
    assert_eq!(
        (s_run.bytes_sent, s_run.messages_sent, s_run.rounds),
        (c.sender.bytes, c.sender.messages, c.sender.flights)
    );
    assert_eq!(
        (r_run.bytes_sent, r_run.messages_sent, r_run.rounds),
        (c.receiver.bytes, c.receiver.messages, c.receiver.flights)
    );
    // 32 bytes per instance (n rounded up to 64) plus 16 * 2 bits.
    assert_eq!(c.receiver.bytes, 32 * 70_016);
    assert_eq!(c.sender.bytes, 4 * 70_000);
}

#[test]
fn ot_kk13_rejects_malformed_messages() {
    let (s, r) = run(
        Role::Server,
        |s, ch| {
            assert!(matches!(
                s.extend_core(10, &[0u64; 255]),
                Err(MpcError::InvalidPeerData { .. })
            ));
            let a = s.send(ch, &[0u64; 16 * 10], 4, 8);
            let b = s.send(ch, &[0u64; 16], 4, 8);
            // Answer the receiver's last request with a short message.
            let _ = ch.recv_u64s().unwrap();
            ch.send_bytes(&[0u8; 3]).unwrap();
            (a, b)
        },
        |r, ch| {
            ch.send_u64s(&[0u64; 256 - 8]).unwrap();
            let (u, _) = r.extend_core(&[1]).unwrap();
            ch.send_u64s(&u).unwrap();
            let _ = ch.recv_bytes().unwrap();
            r.receive(ch, &[1, 2], 4, 8)
        },
    );
    assert!(matches!(s.0, Err(MpcError::InvalidPeerData { .. })));
    assert!(s.1.is_ok());
    assert!(matches!(
        r,
        Err(MpcError::InvalidPeerData { .. }) | Err(MpcError::Transport(_))
    ));
}

#[test]
fn ot_kk13_pooled_offline_online_both_directions_and_cost() {
    for sender in [Role::Server, Role::Client] {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // 1-of-16 (2-bit) then 1-of-2 (64-bit) then 1-of-256 (3-bit), all from one pool,
        // mixed with a direct (non-pooled) batch in between.
        let cases: Vec<(u32, u32, usize)> = vec![(4, 2, 3_000), (1, 64, 500), (8, 3, 300)];
        let total: usize = cases.iter().map(|c| c.2).sum();
        let inputs: Vec<(Vec<u64>, Vec<u8>)> = cases
            .iter()
            .map(|&(l, w, n)| {
                let big_n = 1usize << l;
                let m = u64::MAX >> (64 - w);
                let c: Vec<u8> = (0..n).map(|i| (i % big_n) as u8).collect();
                ((0..n * big_n).map(|_| rng.gen::<u64>() & m).collect(), c)
            })
            .collect();
        let barrier = |ch: &mut MemoryChannel| {
            ch.send_bytes(&[0]).unwrap();
            ch.recv_bytes().unwrap();
            ch.stats()
        };
        let (s_stats, (got, r_stats)) = run(
            sender,
            |s, ch| {
                let mut stats = Vec::new();
                let b = barrier(ch);
                s.precompute(ch, total).unwrap();
                stats.push(ch.stats() - b);
                assert_eq!(s.pooled(), total);
                for (i, (&(l, w, _), (m, _))) in cases.iter().zip(&inputs).enumerate() {
                    let b = barrier(ch);
                    s.send_pooled(ch, m, l, w).unwrap();
                    stats.push(ch.stats() - b);
                    if i == 0 {
                        s.send(ch, &[5u64; 16], 4, 8).unwrap();
                    }
                }
                assert_eq!(s.pooled(), 0);
                stats
            },
            |r, ch| {
                let mut stats = Vec::new();
                let b = barrier(ch);
                r.precompute(ch, total).unwrap();
                stats.push(ch.stats() - b);
                let mut got = Vec::new();
                for (i, (&(l, w, _), (_, c))) in cases.iter().zip(&inputs).enumerate() {
                    let b = barrier(ch);
                    got.push(r.receive_pooled(ch, c, l, w).unwrap());
                    stats.push(ch.stats() - b);
                    if i == 0 {
                        assert_eq!(r.receive(ch, &[7], 4, 8).unwrap(), vec![5]);
                    }
                }
                (got, stats)
            },
        );
        for (&(l, _, _), ((m, c), g)) in cases.iter().zip(inputs.iter().zip(&got)) {
            let big_n = 1usize << l;
            for (i, (&v, &gi)) in c.iter().zip(g).enumerate() {
                assert_eq!(
                    gi,
                    m[i * big_n + usize::from(v)],
                    "{sender}: pooled 1-of-{big_n} #{i}"
                );
            }
        }
        let pre = precompute_cost(total);
        assert_eq!(
            (s_stats[0].bytes_sent, r_stats[0].bytes_sent),
            (0, pre.receiver.bytes)
        );
        assert_eq!(r_stats[0].messages_sent, pre.receiver.messages);
        for (k, &(l, w, n)) in cases.iter().enumerate() {
            let c = pooled_cost(n, l, w);
            let (s, r) = (s_stats[k + 1], r_stats[k + 1]);
            assert_eq!(
                (s.bytes_sent, s.messages_sent, s.rounds),
                (c.sender.bytes, 1, 1)
            );
            assert_eq!(
                (r.bytes_sent, r.messages_sent, r.rounds),
                (c.receiver.bytes, 1, 1)
            );
        }
    }
}

#[test]
fn ot_kk13_pooled_errors() {
    let (s, r) = run(
        Role::Server,
        |s, ch| {
            let short = s.send_pooled(ch, &[0u64; 16], 4, 8);
            s.precompute(ch, 2).unwrap();
            // The receiver sends 3 choice bytes for 2 instances.
            let bad = s.send_pooled(ch, &[0u64; 32], 4, 8);
            (short, bad)
        },
        |r, ch| {
            let short = r.receive_pooled(ch, &[1], 4, 8);
            r.precompute(ch, 2).unwrap();
            ch.send_bytes(&[0u8; 3]).unwrap();
            short
        },
    );
    assert!(matches!(s.0, Err(MpcError::InvalidArgument { .. })));
    assert!(matches!(s.1, Err(MpcError::InvalidPeerData { .. })));
    assert!(matches!(r, Err(MpcError::InvalidArgument { .. })));
}
