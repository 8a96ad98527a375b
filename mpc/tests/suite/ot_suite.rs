//! The generic OT test suite: every check runs over the `CotSender` / `CotReceiver` traits and
//! is instantiated for IKNP in both directions (server as sender, client as sender) and for an
//! ideal (trusted-dealer, insecure) COT that exists only here to check the suite itself. Flawed
//! ideal variants show that the checks can fail.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test and bench code outside #[test] functions: a failed unwrap is a failed test"
)]

use duet_mpc::ot::base::SessionId;
use duet_mpc::ot::rot::{
    chosen_cost, chosen_receiver_finish, chosen_receiver_message, cot_ring_cost, one_of_n_cost,
};
use duet_mpc::ot::{
    Block, CotReceiver, CotSender, FerretPair, FerretParams, FerretReceiver, FerretSender,
    IknpReceiver, IknpSender, OtCost, OtPair, Traffic,
};
use duet_mpc::{Prg, Result, Ring};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// How to make a connected (sender, receiver) pair of COT sources.
trait Fixture: Sync {
    type S: CotSender + Send;
    type R: CotReceiver + Send;
    /// Which party is the OT sender.
    fn sender_role(&self) -> Role;
    fn make_sender(&self, ch: &mut MemoryChannel) -> Self::S;
    fn make_receiver(&self, ch: &mut MemoryChannel) -> Self::R;
}

/// IKNP through `OtPair` (both directions set up, one used).
struct Iknp(Role);

impl Fixture for Iknp {
    type S = IknpSender;
    type R = IknpReceiver;
    fn sender_role(&self) -> Role {
        self.0
    }
    fn make_sender(&self, ch: &mut MemoryChannel) -> IknpSender {
        let mut rng = Prg::from_seed([11; 32]);
        OtPair::setup(ch, self.0, &mut rng).unwrap().into_parts().0
    }
    fn make_receiver(&self, ch: &mut MemoryChannel) -> IknpReceiver {
        let mut rng = Prg::from_seed([22; 32]);
        OtPair::setup(ch, self.0.peer(), &mut rng)
            .unwrap()
            .into_parts()
            .1
    }
}

/// Ferret silent COT (both directions set up from IKNP, one used), real B13 parameters.
struct Ferret(Role);

impl Fixture for Ferret {
    type S = FerretSender;
    type R = FerretReceiver;
    fn sender_role(&self) -> Role {
        self.0
    }
    fn make_sender(&self, ch: &mut MemoryChannel) -> FerretSender {
        let mut rng = Prg::from_seed([33; 32]);
        let mut pair = OtPair::setup(ch, self.0, &mut rng).unwrap();
        FerretPair::from_ot_pair(ch, &mut pair, FerretParams::default(), &mut rng)
            .unwrap()
            .into_parts()
            .0
    }
    fn make_receiver(&self, ch: &mut MemoryChannel) -> FerretReceiver {
        let mut rng = Prg::from_seed([44; 32]);
        let mut pair = OtPair::setup(ch, self.0.peer(), &mut rng).unwrap();
        FerretPair::from_ot_pair(ch, &mut pair, FerretParams::default(), &mut rng)
            .unwrap()
            .into_parts()
            .1
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    None,
    /// Δ = 0: both random-OT keys coincide, so the receiver learns both messages.
    ZeroDelta,
    /// One output in the middle breaks the correlation.
    FlipOne,
}

/// A trusted dealer: both sides expand the same seed into `Δ` and the `q_i`; the receiver adds
/// its own choice bits. No communication, no security. Test-only by construction (it lives in
/// an integration test).
struct Ideal(Flaw);

struct IdealSender {
    delta: Block,
    dealer: ChaCha8Rng,
    consumed: u64,
    flaw: Flaw,
}

struct IdealReceiver {
    delta: Block,
    dealer: ChaCha8Rng,
    own: ChaCha8Rng,
    consumed: u64,
}

fn ideal_dealer(flaw: Flaw) -> (Block, ChaCha8Rng) {
    let mut d = ChaCha8Rng::seed_from_u64(99);
    let delta = if flaw == Flaw::ZeroDelta { 0 } else { d.gen() };
    (delta, d)
}

impl CotSender for IdealSender {
    fn delta(&self) -> Block {
        self.delta
    }
    fn consumed(&self) -> u64 {
        self.consumed
    }
    fn send_cot<C: Channel>(&mut self, _ch: &mut C, n: usize) -> Result<Vec<Block>> {
        let mut q: Vec<Block> = (0..n).map(|_| self.dealer.gen()).collect();
        if self.flaw == Flaw::FlipOne && n > 1000 {
            q[n / 2] ^= 1 << 77;
        }
        self.consumed += n as u64;
        Ok(q)
    }
    fn cot_cost(&self, _n: usize) -> OtCost {
        OtCost::default()
    }
}

impl CotReceiver for IdealReceiver {
    fn consumed(&self) -> u64 {
        self.consumed
    }
    fn recv_cot<C: Channel>(&mut self, _ch: &mut C, n: usize) -> Result<(Vec<bool>, Vec<Block>)> {
        let b: Vec<bool> = (0..n).map(|_| self.own.gen()).collect();
        let t = b
            .iter()
            .map(|&bi| {
                let q: Block = self.dealer.gen();
                if bi {
                    q ^ self.delta
                } else {
                    q
                }
            })
            .collect();
        self.consumed += n as u64;
        Ok((b, t))
    }
    fn cot_cost(&self, _n: usize) -> OtCost {
        OtCost::default()
    }
}

impl Fixture for Ideal {
    type S = IdealSender;
    type R = IdealReceiver;
    fn sender_role(&self) -> Role {
        Role::Server
    }
    fn make_sender(&self, _ch: &mut MemoryChannel) -> IdealSender {
        let (delta, dealer) = ideal_dealer(self.0);
        IdealSender {
            delta,
            dealer,
            consumed: 0,
            flaw: self.0,
        }
    }
    fn make_receiver(&self, _ch: &mut MemoryChannel) -> IdealReceiver {
        let (delta, dealer) = ideal_dealer(self.0);
        IdealReceiver {
            delta,
            dealer,
            own: ChaCha8Rng::seed_from_u64(5),
            consumed: 0,
        }
    }
}

/// Runs `s` as the OT sender and `r` as the OT receiver, each on its own thread, in the roles
/// the fixture says.
fn run<F, A, B>(
    f: &F,
    s: impl FnOnce(&mut F::S, &mut MemoryChannel) -> A + Send,
    r: impl FnOnce(&mut F::R, &mut MemoryChannel) -> B + Send,
) -> (A, B)
where
    F: Fixture,
    A: Send,
    B: Send,
{
    let sender_side = |mut ch: MemoryChannel| {
        let mut x = f.make_sender(&mut ch);
        s(&mut x, &mut ch)
    };
    let receiver_side = |mut ch: MemoryChannel| {
        let mut x = f.make_receiver(&mut ch);
        r(&mut x, &mut ch)
    };
    match f.sender_role() {
        Role::Server => run_two_party(sender_side, receiver_side),
        Role::Client => {
            let (b, a) = run_two_party(receiver_side, sender_side);
            (a, b)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The generic checks

fn check_correlation<F: Fixture>(f: &F) {
    // Not a multiple of the 64 Ki chunk nor of 64; two calls so that streams continue.
    let sizes = [150_003usize, 77];
    let (s, r) = run(
        f,
        |s, ch| {
            let q: Vec<Vec<Block>> = sizes.iter().map(|&n| s.send_cot(ch, n).unwrap()).collect();
            (s.delta(), q)
        },
        |r, ch| {
            sizes
                .iter()
                .map(|&n| r.recv_cot(ch, n).unwrap())
                .collect::<Vec<_>>()
        },
    );
    let (delta, qs) = s;
    assert_ne!(delta, 0, "Δ must not be zero");
    let mut ones = 0usize;
    let mut total = 0usize;
    for (q, (b, t)) in qs.iter().zip(&r) {
        assert_eq!(q.len(), t.len());
        assert_eq!(b.len(), t.len());
        for (i, ((qi, &bi), ti)) in q.iter().zip(b).zip(t).enumerate() {
            let expect = if bi { qi ^ delta } else { *qi };
            assert_eq!(*ti, expect, "correlation broken at COT {i}");
        }
        ones += b.iter().filter(|&&x| x).count();
        total += b.len();
    }
    // Choice bits look uniform, and outputs are not a constant.
    let frac = ones as f64 / total as f64;
    assert!((0.48..0.52).contains(&frac), "choice bit frequency {frac}");
    let first = &qs[0];
    let distinct: std::collections::HashSet<_> = first.iter().take(10_000).collect();
    assert_eq!(distinct.len(), 10_000.min(first.len()));
}

fn check_rot<F: Fixture>(f: &F) {
    let n = 5_000;
    let (k, (b, kb)) = run(
        f,
        |s, ch| s.send_rot(ch, n).unwrap(),
        |r, ch| r.recv_rot(ch, n).unwrap(),
    );
    for i in 0..n {
        let c = usize::from(b[i]);
        assert_eq!(kb[i], k[i][c], "ROT {i}: wrong key");
        assert_ne!(kb[i], k[i][1 - c], "ROT {i}: receiver has the other key");
    }
}

/// Chosen OT: correctness, and the receiver's view (its random-OT keys, hence its `t_i`, and
/// the masked messages) does not give the other message.
fn check_chosen_ot_privacy<F: Fixture>(f: &F) {
    let n = 4_000;
    let w = 64;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let msgs: Vec<[u64; 2]> = (0..n).map(|_| [rng.gen(), rng.gen()]).collect();
    let choices: Vec<bool> = (0..n).map(|_| rng.gen()).collect();
    let (_, (got, y, keys, start)) = run(
        f,
        |s, ch| s.send_chosen(ch, &msgs, w).unwrap(),
        |r, ch| {
            // The receiver's side step by step, to keep its whole view.
            let start = r.consumed();
            let (c, keys) = r.recv_rot(ch, n).unwrap();
            ch.send_bytes(&chosen_receiver_message(&c, &choices).unwrap())
                .unwrap();
            let y = ch.recv_bytes().unwrap();
            let got = chosen_receiver_finish(&keys, &choices, &y, w).unwrap();
            (got, y, keys, start)
        },
    );
    assert_eq!(y.len(), 16 * n);
    let hash = duet_mpc::ot::aes::FixedKeyHash::new();
    for i in 0..n {
        let b = usize::from(choices[i]);
        assert_eq!(got[i], msgs[i][b], "chosen OT {i}: wrong message");
        let y_other = u64::from_le_bytes(y[16 * i + 8 * (1 - b)..][..8].try_into().unwrap());
        // What the receiver can derive from its key for the other slot...
        assert_ne!(
            y_other ^ keys[i] as u64,
            msgs[i][1 - b],
            "OT {i}: other message leaks"
        );
        // ...or from re-hashing its key with neighbouring tweaks.
        for tweak in [start + i as u64 + 1, start + i as u64 + n as u64] {
            let h = hash.hash(tweak.into(), keys[i]);
            assert_ne!(
                y_other ^ h as u64,
                msgs[i][1 - b],
                "OT {i}: leaks via tweak"
            );
        }
        assert_ne!(
            y_other,
            msgs[i][1 - b],
            "OT {i}: other message in the clear"
        );
    }
}

fn check_chosen_ot_widths<F: Fixture>(f: &F) {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let cases: Vec<(usize, u32)> = vec![(1, 1), (9, 3), (1000, 8), (777, 37), (130, 64)];
    let inputs: Vec<(Vec<[u64; 2]>, Vec<bool>)> = cases
        .iter()
        .map(|&(n, w)| {
            let m = u64::MAX >> (64 - w);
            (
                (0..n)
                    .map(|_| [rng.gen::<u64>() & m, rng.gen::<u64>() & m])
                    .collect(),
                (0..n).map(|_| rng.gen()).collect(),
            )
        })
        .collect();
    let (_, got) = run(
        f,
        |s, ch| {
            for ((_, w), (m, _)) in cases.iter().zip(&inputs) {
                s.send_chosen(ch, m, *w).unwrap();
            }
        },
        |r, ch| {
            cases
                .iter()
                .zip(&inputs)
                .map(|((_, w), (_, c))| r.recv_chosen(ch, c, *w).unwrap())
                .collect::<Vec<_>>()
        },
    );
    for ((m, c), g) in inputs.iter().zip(&got) {
        let want: Vec<u64> = m.iter().zip(c).map(|(p, &b)| p[usize::from(b)]).collect();
        assert_eq!(&want, g);
    }
}

fn check_one_of_n<F: Fixture>(f: &F) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // Every l from 1 (N = 2) to 8 (N = 256); every choice 0..N-1 appears, plus random ones.
    let cases: Vec<(u32, u32)> = vec![
        (1, 1),
        (2, 2),
        (3, 7),
        (4, 2),
        (5, 64),
        (6, 5),
        (7, 13),
        (8, 4),
    ];
    let inputs: Vec<(Vec<u64>, Vec<u8>)> = cases
        .iter()
        .map(|&(l, w)| {
            let big_n = 1usize << l;
            let mut choices: Vec<u8> = (0..big_n).map(|v| v as u8).collect();
            choices.extend((0..50).map(|_| (rng.gen::<u32>() % big_n as u32) as u8));
            let m = u64::MAX >> (64 - w);
            let msgs = (0..choices.len() * big_n)
                .map(|_| rng.gen::<u64>() & m)
                .collect();
            (msgs, choices)
        })
        .collect();
    let (_, got) = run(
        f,
        |s, ch| {
            for (&(l, w), (m, _)) in cases.iter().zip(&inputs) {
                s.send_one_of_n(ch, m, l, w).unwrap();
            }
        },
        |r, ch| {
            cases
                .iter()
                .zip(&inputs)
                .map(|(&(l, w), (_, c))| r.recv_one_of_n(ch, c, l, w).unwrap())
                .collect::<Vec<_>>()
        },
    );
    for (&(l, _), ((m, c), g)) in cases.iter().zip(inputs.iter().zip(&got)) {
        let big_n = 1usize << l;
        for (i, (&v, &gi)) in c.iter().zip(g).enumerate() {
            assert_eq!(
                gi,
                m[i * big_n + usize::from(v)],
                "1-of-{big_n} OT {i}, choice {v}"
            );
        }
    }
}

/// Ring COT: the receiver's output minus the sender's is `b · x` in the ring, with chosen and
/// with random choice bits, and the sender's outputs are not constant.
fn check_cot_ring<F: Fixture>(f: &F) {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let rings = [Ring::new(37).unwrap(), Ring::z64(), Ring::new(16).unwrap()];
    let n = 3_000;
    let inputs: Vec<(Vec<u64>, Vec<bool>)> = rings
        .iter()
        .map(|r| {
            (
                (0..n).map(|_| rng.gen::<u64>() & r.mask()).collect(),
                (0..n).map(|_| rng.gen()).collect(),
            )
        })
        .collect();
    let (s, r) = run(
        f,
        |s, ch| {
            rings
                .iter()
                .zip(&inputs)
                .map(|(&ring, (xs, _))| {
                    (
                        s.send_cot_ring(ch, xs, ring).unwrap(),
                        s.send_cot_ring_random(ch, xs, ring).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        },
        |r, ch| {
            rings
                .iter()
                .zip(&inputs)
                .map(|(&ring, (_, b))| {
                    (
                        r.recv_cot_ring(ch, b, ring).unwrap(),
                        r.recv_cot_ring_random(ch, n, ring).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
        },
    );
    for (((ring, (xs, b)), (a1, a2)), (o1, (b2, o2))) in rings.iter().zip(&inputs).zip(s).zip(r) {
        for i in 0..n {
            let want1 = if b[i] { xs[i] } else { 0 };
            assert_eq!(ring.sub(o1[i], a1[i]), want1, "chosen ring COT {i}");
            let want2 = if b2[i] { xs[i] } else { 0 };
            assert_eq!(ring.sub(o2[i], a2[i]), want2, "random ring COT {i}");
            assert!(ring.contains(a1[i]) && ring.contains(o1[i]));
        }
        let distinct: std::collections::HashSet<_> = a1.iter().collect();
        assert!(distinct.len() > n * 9 / 10);
    }
}

/// Each party's traffic between two snapshots, after a barrier so that the next send opens a
/// flight (as the cost formulas assume).
fn barrier(ch: &mut MemoryChannel) -> ChannelStats {
    ch.send_bytes(&[0]).unwrap();
    ch.recv_bytes().unwrap();
    ch.stats()
}

fn assert_traffic(label: &str, before: ChannelStats, after: ChannelStats, want: Traffic) {
    let d = after - before;
    assert_eq!(
        (d.bytes_sent, d.messages_sent, d.rounds),
        (want.bytes, want.messages, want.flights),
        "{label}: measured (bytes, messages, flights) differ from cost()"
    );
}

/// Measured traffic equals `cost()` exactly for COTs (on demand and pooled), chosen OT and
/// 1-of-N OT, on both sides.
fn check_costs<F: Fixture>(f: &F) {
    let cot_n = [1usize, 64, 1000, 70_000];
    let (w, chosen_n) = (13u32, 3_001usize);
    let (l, w1, n1) = (4u32, 2u32, 999usize);
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let msgs: Vec<[u64; 2]> = (0..chosen_n)
        .map(|_| [rng.gen::<u64>() & 0x1fff, 3])
        .collect();
    let choices: Vec<bool> = (0..chosen_n).map(|_| rng.gen()).collect();
    let msgs1: Vec<u64> = (0..n1 << l).map(|_| rng.gen::<u64>() & 3).collect();
    let choices1: Vec<u8> = (0..n1).map(|_| rng.gen::<u8>() & 15).collect();
    let ring = Ring::new(41).unwrap();
    let xs: Vec<u64> = (0..1_234).map(|_| rng.gen::<u64>() & ring.mask()).collect();
    let (s_log, r_log) = run(
        f,
        |s, ch| {
            let mut log = Vec::new();
            for &n in &cot_n {
                let (c, b) = (s.cot_cost(n), barrier(ch));
                s.send_cot(ch, n).unwrap();
                log.push((format!("cot {n}"), c, b, ch.stats()));
            }
            let (c, b) = (s.cot_cost(chosen_n) + chosen_cost(chosen_n, w), barrier(ch));
            s.send_chosen(ch, &msgs, w).unwrap();
            log.push(("chosen".to_string(), c, b, ch.stats()));
            let (c, b) = (
                s.cot_cost(n1 * l as usize) + one_of_n_cost(n1, l, w1),
                barrier(ch),
            );
            s.send_one_of_n(ch, &msgs1, l, w1).unwrap();
            log.push(("1-of-16".into(), c, b, ch.stats()));
            for chosen in [true, false] {
                let c = s.cot_cost(xs.len()) + cot_ring_cost(xs.len(), ring, chosen);
                let b = barrier(ch);
                if chosen {
                    s.send_cot_ring(ch, &xs, ring).unwrap();
                } else {
                    s.send_cot_ring_random(ch, &xs, ring).unwrap();
                }
                log.push((format!("ring COT chosen={chosen}"), c, b, ch.stats()));
            }
            log
        },
        |r, ch| {
            let mut log = Vec::new();
            for &n in &cot_n {
                let (c, b) = (r.cot_cost(n), barrier(ch));
                r.recv_cot(ch, n).unwrap();
                log.push((c, b, ch.stats()));
            }
            let (c, b) = (r.cot_cost(chosen_n) + chosen_cost(chosen_n, w), barrier(ch));
            r.recv_chosen(ch, &choices, w).unwrap();
            log.push((c, b, ch.stats()));
            let (c, b) = (
                r.cot_cost(n1 * l as usize) + one_of_n_cost(n1, l, w1),
                barrier(ch),
            );
            r.recv_one_of_n(ch, &choices1, l, w1).unwrap();
            log.push((c, b, ch.stats()));
            for chosen in [true, false] {
                let c = r.cot_cost(xs.len()) + cot_ring_cost(xs.len(), ring, chosen);
                let b = barrier(ch);
                if chosen {
                    r.recv_cot_ring(ch, &choices[..xs.len()], ring).unwrap();
                } else {
                    r.recv_cot_ring_random(ch, xs.len(), ring).unwrap();
                }
                log.push((c, b, ch.stats()));
            }
            log
        },
    );
    for ((label, sc, sb, sa), (rc, rb, ra)) in s_log.into_iter().zip(r_log) {
        assert_eq!(sc, rc, "{label}: both sides predict the same cost");
        assert_traffic(&format!("{label} (sender)"), sb, sa, sc.sender);
        assert_traffic(&format!("{label} (receiver)"), rb, ra, rc.receiver);
    }
}

macro_rules! suite {
    ($name:ident, $fixture:expr) => {
        mod $name {
            use super::*;
            #[test]
            fn correlation_holds_for_every_output() {
                check_correlation(&$fixture);
            }
            #[test]
            fn random_ot_keys() {
                check_rot(&$fixture);
            }
            #[test]
            fn chosen_ot_correct_and_other_message_hidden() {
                check_chosen_ot_privacy(&$fixture);
            }
            #[test]
            fn chosen_ot_all_widths() {
                check_chosen_ot_widths(&$fixture);
            }
            #[test]
            fn one_of_n_every_choice() {
                check_one_of_n(&$fixture);
            }
            #[test]
            fn ring_cot_gives_additive_correlation() {
                check_cot_ring(&$fixture);
            }
            #[test]
            fn measured_traffic_equals_cost() {
                check_costs(&$fixture);
            }
        }
    };
}

suite!(ot_iknp_server_sends, Iknp(Role::Server));
suite!(ot_iknp_client_sends, Iknp(Role::Client));
suite!(ot_ideal, Ideal(Flaw::None));
suite!(ot_ferret_server_sends, Ferret(Role::Server));
suite!(ot_ferret_client_sends, Ferret(Role::Client));

// The suite can fail: flawed COTs are caught.
#[test]
#[should_panic(expected = "other message leaks")]
fn ot_suite_catches_zero_delta() {
    check_chosen_ot_privacy(&Ideal(Flaw::ZeroDelta));
}

#[test]
#[should_panic(expected = "Δ must not be zero")]
fn ot_suite_catches_zero_delta_in_correlation() {
    check_correlation(&Ideal(Flaw::ZeroDelta));
}

#[test]
#[should_panic(expected = "correlation broken")]
fn ot_suite_catches_a_broken_correlation() {
    check_correlation(&Ideal(Flaw::FlipOne));
}

// ---------------------------------------------------------------------------------------------
// IKNP-specific: setup and offline-phase costs, pool consumption.

#[test]
fn ot_iknp_setup_and_precompute_cost() {
    let n_pre = 100_000;
    let ((s_setup, s_pre, s_on), (r_setup, r_pre, r_on)) = run_two_party(
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([1; 32])).unwrap();
            let setup = ch.stats();
            let b = barrier(&mut ch);
            pair.sender().precompute(&mut ch, n_pre).unwrap();
            let pre = ch.stats() - b;
            assert_eq!(pair.sender().pooled(), n_pre);
            assert_eq!(pair.sender().cot_cost(n_pre), OtCost::default());
            let b = barrier(&mut ch);
            let q = pair.sender().send_cot(&mut ch, n_pre - 1000).unwrap();
            let on = ch.stats() - b;
            // The last 1000 pooled COTs serve a chosen OT: only its online messages are sent.
            let b = barrier(&mut ch);
            let msgs: Vec<[u64; 2]> = (0..1000).map(|i| [i, i + 5000]).collect();
            pair.sender().send_chosen(&mut ch, &msgs, 16).unwrap();
            let chosen = ch.stats() - b;
            assert_eq!(chosen.bytes_sent, chosen_cost(1000, 16).sender.bytes);
            assert_eq!(pair.sender().pooled(), 0);
            ch.send_msg(&(pair.sender().delta(), q)).unwrap();
            (setup, pre, on)
        },
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([2; 32])).unwrap();
            let setup = ch.stats();
            let b = barrier(&mut ch);
            pair.receiver().precompute(&mut ch, n_pre).unwrap();
            let pre = ch.stats() - b;
            let b = barrier(&mut ch);
            let (bits, t) = pair.receiver().recv_cot(&mut ch, n_pre - 1000).unwrap();
            let on = ch.stats() - b;
            let b = barrier(&mut ch);
            let choices: Vec<bool> = (0..1000).map(|i| i % 3 == 0).collect();
            let got = pair.receiver().recv_chosen(&mut ch, &choices, 16).unwrap();
            let chosen = ch.stats() - b;
            assert_eq!(chosen.bytes_sent, chosen_cost(1000, 16).receiver.bytes);
            for (i, (&g, &c)) in got.iter().zip(&choices).enumerate() {
                assert_eq!(g, i as u64 + if c { 5000 } else { 0 });
            }
            let (delta, q): (Block, Vec<Block>) = ch.recv_msg().unwrap();
            for i in 0..n_pre - 1000 {
                assert_eq!(t[i], if bits[i] { q[i] ^ delta } else { q[i] });
            }
            (setup, pre, on)
        },
    );
    let want_setup = OtPair::setup_cost();
    for st in [s_setup, r_setup] {
        assert_eq!(
            (st.bytes_sent, st.messages_sent, st.rounds),
            (want_setup.bytes, want_setup.messages, want_setup.flights)
        );
    }
    let pre = duet_mpc::ot::iknp::extend_cost(n_pre);
    assert_eq!(s_pre.bytes_sent, 0);
    assert_eq!(r_pre.bytes_sent, pre.receiver.bytes);
    assert_eq!(r_pre.messages_sent, pre.receiver.messages);
    assert_eq!(pre.receiver.bytes, 16 * 100_032);
    // Pooled COTs cost nothing online.
    assert_eq!((s_on.bytes_sent, r_on.bytes_sent), (0, 0));
}

#[test]
fn ot_iknp_one_direction_setup_cost() {
    let sid: SessionId = [3; 32];
    let (s, r) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([4; 32]);
            IknpSender::setup(&mut ch, &mut rng, sid).unwrap();
            ch.stats()
        },
        |mut ch| {
            let mut rng = Prg::from_seed([5; 32]);
            IknpReceiver::setup(&mut ch, &mut rng, sid).unwrap();
            ch.stats()
        },
    );
    let c = duet_mpc::ot::iknp::setup_cost();
    assert_eq!(
        (s.bytes_sent, s.messages_sent, s.rounds),
        (c.sender.bytes, 1, 1)
    );
    assert_eq!(
        (r.bytes_sent, r.messages_sent, r.rounds),
        (c.receiver.bytes, 1, 1)
    );
    assert_eq!(c.bytes(), 32 + 4096);
    assert_eq!(c.rounds(), 2);
}
