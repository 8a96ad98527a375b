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

use duet_mpc::nonlinear::{Cost, CotBackend, CotCount, LeafOt, NlConfig, NlSession};
use duet_mpc::ot::FerretParams;
use duet_mpc::{AShare, Prg, Ring};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};

/// COTs reserved per direction after setup with Ferret, so that the measured part is online
/// traffic only (every test needs fewer).
pub const RESERVE: u64 = 1_000_000;

/// Runs `f` for both parties after setup (and, with Ferret, a reservation of [`RESERVE`] COTs
/// per direction); returns (server output, client output, measured cost, COTs consumed by `f`
/// included).
pub fn run2<T, F>(cfg: NlConfig, f: F) -> (T, T, Cost)
where
    T: Send,
    F: Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
{
    let party = |role: Role, mut ch: MemoryChannel| {
        let mut rng = Prg::from_seed([role.index() as u8 + 1; 32]);
        let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
        if matches!(cfg.cot, CotBackend::Ferret(_)) {
            let need = CotCount {
                server_sends: RESERVE,
                client_sends: RESERVE,
            };
            s.reserve(&mut ch, need).unwrap();
            // end on a receive on both sides, as after setup, so flights count from fresh
            ch.send_bytes(&[0]).unwrap();
            ch.flush().unwrap();
            ch.recv_bytes().unwrap();
        }
        let before = ch.stats();
        let cots_before = s.cots_consumed();
        let out = f(role, &mut s, &mut ch);
        let cots = s.cots_consumed();
        let used = CotCount {
            server_sends: cots.server_sends - cots_before.server_sends,
            client_sends: cots.client_sends - cots_before.client_sends,
        };
        (out, ch.stats() - before, used)
    };
    let ((a, sa, ua), (b, sb, ub)) =
        run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
    assert_eq!(ua, ub, "both parties consumed the same COTs");
    let mut c = measured(sa, sb);
    c.cots = ua;
    (a, b, c)
}

/// Bytes and flights of both parties (no COT count).
pub fn measured(a: ChannelStats, b: ChannelStats) -> Cost {
    assert_eq!(a.bytes_sent, b.bytes_received);
    assert_eq!(b.bytes_sent, a.bytes_received);
    Cost {
        bytes: a.bytes_sent + b.bytes_sent,
        rounds: a.rounds + b.rounds,
        ..Cost::default()
    }
}

/// Fast Ferret for tests (insecure small LPN parameters from the `testing` feature).
pub fn ferret_test() -> CotBackend {
    CotBackend::Ferret(FerretParams::insecure_for_tests())
}

/// The default configuration with the test Ferret parameters.
pub fn default_cfg() -> NlConfig {
    NlConfig {
        cot: ferret_test(),
        ..NlConfig::default()
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
            for leaf_ot in [LeafOt::Kk13, LeafOt::Rot] {
                for cot in [CotBackend::Iknp, ferret_test()] {
                    v.push(NlConfig {
                        radix,
                        ot_sender,
                        leaf_ot,
                        cot,
                    });
                }
            }
        }
    }
    v
}

/// A channel that corrupts its `target`-th sent message (counting from 0 in `count`): one byte
/// short, or one byte long with `longer` (or when the message is empty).
pub struct Corrupt<'a> {
    /// The honest channel underneath.
    pub inner: &'a mut MemoryChannel,
    /// The message to corrupt.
    pub target: u64,
    /// Messages sent so far.
    pub count: u64,
    /// Lengthen instead of shorten.
    pub longer: bool,
}

impl Channel for Corrupt<'_> {
    fn send_bytes(&mut self, data: &[u8]) -> duet_transport::Result<()> {
        let hit = self.count == self.target;
        self.count += 1;
        if !hit {
            return self.inner.send_bytes(data);
        }
        let mut d = data.to_vec();
        if self.longer || d.is_empty() {
            d.push(0);
        } else {
            d.pop();
        }
        self.inner.send_bytes(&d)
    }
    fn recv_bytes_max(&mut self, max: usize) -> duet_transport::Result<Vec<u8>> {
        self.inner.recv_bytes_max(max)
    }
    fn max_frame(&self) -> u64 {
        self.inner.max_frame()
    }
    fn set_max_frame(&mut self, max: u64) {
        self.inner.set_max_frame(max)
    }
    fn flush(&mut self) -> duet_transport::Result<()> {
        self.inner.flush()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
    fn peer(&self) -> &str {
        self.inner.peer()
    }
}
