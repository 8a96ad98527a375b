//! Shared harness of the non-linear protocol tests: both parties on two threads over the
//! in-memory channel, with traffic measured after the session setup.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    dead_code,
    reason = "test helpers: a failed unwrap is a failed test"
)]

use duet_mpc::nonlinear::{Cost, LeafOt, NlConfig, NlSession};
use duet_mpc::{AShare, Prg, Ring};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};

/// Runs `f` for both parties after setup; returns (server output, client output, measured cost).
pub fn run2<T, F>(cfg: NlConfig, f: F) -> (T, T, Cost)
where
    T: Send,
    F: Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
{
    let party = |role: Role, mut ch: MemoryChannel| {
        let mut rng = Prg::from_seed([role.index() as u8 + 1; 32]);
        let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
        let before = ch.stats();
        let out = f(role, &mut s, &mut ch);
        (out, ch.stats() - before)
    };
    let ((a, sa), (b, sb)) =
        run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
    (a, b, measured(sa, sb))
}

pub fn measured(a: ChannelStats, b: ChannelStats) -> Cost {
    assert_eq!(a.bytes_sent, b.bytes_received);
    assert_eq!(b.bytes_sent, a.bytes_received);
    Cost {
        bytes: a.bytes_sent + b.bytes_sent,
        rounds: a.rounds + b.rounds,
    }
}

/// Edge values of the signed range plus random ones.
pub fn edge_values(ring: Ring, prg: &mut Prg, random: usize) -> Vec<u64> {
    let half = 1u64 << (ring.bits() - 1);
    let mut v = vec![
        0,
        1,
        ring.neg(1),
        2,
        ring.neg(2),
        half,
        half - 1,
        half + 1,
        half - 2,
        ring.mask(),
        3,
        ring.neg(3),
    ];
    v.extend(prg.ring_elements(ring, random));
    v
}

/// Uniformly random shares of `x`.
pub fn share(ring: Ring, x: &[u64], prg: &mut Prg) -> (AShare, AShare) {
    AShare::share(ring, vec![x.len()], x, prg).unwrap()
}

pub fn by_role<'a, T>(role: Role, s: &'a T, c: &'a T) -> &'a T {
    match role {
        Role::Server => s,
        Role::Client => c,
    }
}

pub const RINGS: [u32; 4] = [16, 32, 37, 64];

pub fn cfgs() -> Vec<NlConfig> {
    let mut v = Vec::new();
    for radix in [1u32, 2, 4, 8] {
        for ot_sender in [Role::Server, Role::Client] {
            for leaf_ot in [LeafOt::Kk13, LeafOt::Iknp] {
                v.push(NlConfig {
                    radix,
                    ot_sender,
                    leaf_ot,
                });
            }
        }
    }
    v
}
