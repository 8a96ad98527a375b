//! Non-linear two-party protocols on secret shares over `Z_2^l` (`l` in `16..=64`), in the
//! style of CrypTFlow2 (SCI) and Cheetah, built on the OT layer of [`crate::ot`]:
//!
//! | protocol | function | main cost per element |
//! |---|---|---|
//! | [`and`] | `x ∧ y` on [`BShare`]s (Beaver bit triples from random OT) | 2 COTs + 4 bits |
//! | [`millionaire`] | `1{x_S < x_C}` / `1{x_S = x_C}` of private inputs | `ceil(b/m)` KK13 1-of-`2^m` OTs + ANDs |
//! | [`msb`], [`drelu`], [`lt`], [`lt_public`], [`lt_bounded`], [`eq`] | comparisons of shared values | one millionaire on `l-1` (or `l`) bits |
//! | [`b2a`] | boolean bit to arithmetic share | 1 COT over `Z_2^l` |
//! | [`mux`] | `c · x` for a shared bit `c` | 2 COTs over `Z_2^l` |
//! | [`mul`] | `x · y` element-wise | `2 l` COTs over `Z_2^{l-k}` (Gilboa) |
//! | [`trunc`] | `x >> f` (faithful, one-bit error, known MSB) | a millionaire + one table OT |
//! | [`relu`], [`max_axis`] | ReLU, max over the last axis | DReLU + mux |
//! | [`extend`], [`reduce`] | ring-width change `l1 -> l2` | a millionaire + table OT / local |
//! | [`lut`] | `T[i]` for an index shared mod `2^m` (table public or the OT sender's) | one 1-of-`2^m` OT of `2^m` entries |
//! | [`matmul_known_holder`] / [`matmul_known_chooser`], [`matmul_shared`] | `X W` for `W` known to one party (or both operands shared) | per element of `X`: `l` COTs + `k l(l+1)/2` bits |
//!
//! Every protocol runs batched over a whole tensor and has an exact `*_cost` function giving
//! [`Cost`] `{ bytes, rounds }` (both parties' payload bytes and flights summed, as counted
//! by [`duet_transport::ChannelStats`]); tests check the measured traffic against it.
//!
//! Security: semi-honest (honest-but-curious) server and client, 128-bit computational
//! security inherited from the OTs (Ferret with 128-bit LPN parameters or IKNP, KK13, base OT
//! over Ristretto255), no statistical
//! leakage: every message is masked by a uniform OT pad or a uniform triple share.
//!
//! COTs come from the session's [`CotBackend`]: Ferret silent OT by default (pooled ahead: each
//! protocol first reserves the COTs its [`Cost::cots`] says it consumes, see
//! [`NlSession::reserve`]), or IKNP inline. Calls larger than [`MAX_BATCH`] elements run in
//! batches.
//!
//! Both directions of OT are used: the asymmetric steps (millionaire leaves, B2A, table OTs)
//! take their OT sender from [`NlConfig::ot_sender`]; the symmetric ones (AND triples, mux,
//! multiplication) use both directions, the configured one first. Both parties must make the
//! same calls in the same order with the same public arguments.

mod and;
mod arith;
mod batch;
mod boolean;
mod compare;
mod cost;
mod cots;
mod lut;
mod millionaire;
mod ot_matmul;
mod otx;
mod relu;
mod trunc;
mod wire;

pub use and::{and, and_cost, tape_and};
pub use arith::{b2a, b2a_cost, mul, mul_cost, mux, mux_cost, tape_b2a, tape_mul, tape_mux};
pub use batch::MAX_BATCH;
pub use boolean::BShare;
pub use compare::{
    drelu, drelu_cost, eq, eq_cost, lt, lt_bounded, lt_bounded_cost, lt_cost, lt_public,
    lt_public_cost, msb, msb_cost, tape_eq, tape_lt, tape_lt_public, tape_msb,
};
pub use cost::{Cost, Tape};
pub use cots::{CotBackend, CotCount};
pub use lut::{lut, lut_cost, tape_lut, LutTable};
pub use millionaire::{
    millionaire, millionaire_cost, tape_millionaire_cmp, tape_millionaire_groups, CmpMode,
    PP_MAX_ELEMS,
};
pub(crate) use millionaire::{millionaire_groups, millionaire_last_of};
pub use ot_matmul::{
    local_product, matmul_known_chooser, matmul_known_cost, matmul_known_holder,
    matmul_known_words, matmul_shared, matmul_shared_cost, MatShape, CORR_CHUNK_BYTES,
    MAX_PRODUCTS, RUN_COTS,
};
pub use relu::{max_axis, max_axis_cost, relu, relu_cost, tape_max_axis, tape_relu};
pub use trunc::{
    extend, extend_cost, reduce, tape_extend, tape_trunc, trunc, trunc_cost, TruncMode,
};

use crate::ot::{FerretReceiver, FerretSender, KkReceiver, KkSender, OtCost, OtPair};
use crate::{MpcError, Prg, Result};
use cots::{RecvSource, SendSource};
use duet_transport::{Channel, Role};
use rand::{CryptoRng, RngCore};

/// Public configuration of the non-linear protocols (both parties must use the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NlConfig {
    /// Digit width `m` of the millionaires' protocol (`1..=8`): leaves are 1-of-`2^m` OTs.
    /// With IKNP and KK13, 4 minimizes bytes (CrypTFlow2's choice); with Ferret, 2 or 3.
    pub radix: u32,
    /// The party that plays OT sender in the asymmetric steps and goes first in the symmetric
    /// ones.
    pub ot_sender: Role,
    /// How the millionaire's leaf 1-of-`2^m` OTs are made.
    pub leaf_ot: LeafOt,
    /// Where the correlated OTs come from.
    pub cot: CotBackend,
}

/// The 1-out-of-`2^m` OT used for the millionaire's leaves.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum LeafOt {
    /// KK13 ([`crate::ot::kk13`]): `32 + 2^m w / 8` bytes per leaf, the fewest bytes with
    /// IKNP COTs for `m >= 2`; the sender hashes `2^m` rows with SHA-256 per leaf. Its own
    /// extension, whatever [`NlConfig::cot`] says.
    Kk13,
    /// `m` random OTs per leaf from the session's COT source ([`crate::ot::rot`]):
    /// `m/8 + 2^m w / 8` bytes with Ferret (the fewest), plus `16 m` with IKNP; fixed-key AES
    /// only.
    #[default]
    Rot,
}

impl Default for NlConfig {
    /// Radix 3, the server as OT sender, Ferret COTs
    /// ([`FerretParams::B13`](crate::ot::FerretParams::B13)) and random-OT leaves (Cheetah's
    /// choices). With Ferret, radix 3 costs 35.8 bytes per 37-bit comparison in 9 flights
    /// against 45.5 for radix 4 (same flights) and 34.0 for radix 2 (11 flights), and its
    /// leaves take half the AES calls of radix 4's.
    fn default() -> Self {
        Self {
            radix: 3,
            ot_sender: Role::Server,
            leaf_ot: LeafOt::Rot,
            cot: CotBackend::default(),
        }
    }
}

impl NlConfig {
    /// CrypTFlow2's choices: IKNP COTs and KK13 leaves, radix 4, the server as OT sender.
    pub fn iknp() -> Self {
        Self {
            radix: 4,
            leaf_ot: LeafOt::Kk13,
            cot: CotBackend::Iknp,
            ..Self::default()
        }
    }

    /// Checks the radix. (Ferret parameters are checked when they are made: every
    /// [`FerretParams`](crate::ot::FerretParams) value is a vetted 128-bit set, or a test set
    /// that exists only under `cfg(test)` or the `testing` feature.)
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.radix) {
            return Err(MpcError::InvalidArgument {
                what: format!("millionaire radix {} bits, supported 1..=8", self.radix),
            });
        }
        Ok(())
    }
}

/// One party's state for the non-linear protocols: a COT source in each direction (IKNP or
/// Ferret, [`NlConfig::cot`]), KK13 1-of-N OT in both directions, a local PRG and the
/// configuration.
///
/// Setup ([`NlSession::setup`], cost [`NlSession::setup_cost`]): the 2 x 128 base OTs of
/// [`OtPair`] (8,256 bytes), 2 x 256 IKNP random OTs seeding KK13 (8,192 bytes), and with
/// Ferret both Ferret bootstraps (about 1.6 MB per direction for B13).
/// Security: semi-honest, 128-bit.
pub struct NlSession {
    role: Role,
    cfg: NlConfig,
    cot_s: SendSource,
    cot_r: RecvSource,
    kk_s: KkSender,
    kk_r: KkReceiver,
    kk_s_next: u64,
    kk_r_next: u64,
    rng: Prg,
}

impl std::fmt::Debug for NlSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NlSession")
            .field("role", &self.role)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl NlSession {
    /// Runs the session setup over `ch` (both parties call it with the same `cfg`; see
    /// [`NlSession::setup_cost`]). The COT backend is fixed here: [`NlSession::set_config`]
    /// cannot change it.
    pub fn setup<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        role: Role,
        rng: &mut R,
        cfg: NlConfig,
    ) -> Result<Self> {
        cfg.validate()?;
        let pair = OtPair::setup(ch, role, rng)?;
        let (mut ot_s, mut ot_r) = pair.into_parts();
        let kk_s = KkSender::setup(&mut ot_r, ch)?;
        // the session's generator (seeded by the OS in a real session, by the test in a
        // reproducible one) draws the precomputed instances' random choices
        let kk_r = KkReceiver::setup_with_rng(&mut ot_s, ch, rng)?;
        let (cot_s, cot_r) = match cfg.cot {
            CotBackend::Iknp => (
                SendSource::Iknp(Box::new(ot_s)),
                RecvSource::Iknp(Box::new(ot_r)),
            ),
            CotBackend::Ferret(p) => {
                // the server's sending direction first on both sides
                let (fs, fr) = if role == Role::Server {
                    let fs = FerretSender::setup(ch, &mut ot_s, p, rng)?;
                    (fs, FerretReceiver::setup(ch, &mut ot_r, p, rng)?)
                } else {
                    let fr = FerretReceiver::setup(ch, &mut ot_r, p, rng)?;
                    (FerretSender::setup(ch, &mut ot_s, p, rng)?, fr)
                };
                (
                    SendSource::Ferret(Box::new(fs)),
                    RecvSource::Ferret(Box::new(fr)),
                )
            }
        };
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(Self {
            role,
            cfg,
            cot_s,
            cot_r,
            kk_s,
            kk_r,
            kk_s_next: 0,
            kk_r_next: 0,
            rng: Prg::from_seed(seed),
        })
    }

    /// Exact bytes of [`NlSession::setup`] with `cfg` (both parties summed) and its flights:
    /// 16,448 bytes and 6 flights with IKNP; with Ferret plus both directions'
    /// [`FerretPair::setup_cost_after_base`](crate::ot::FerretPair::setup_cost_after_base).
    pub fn setup_cost(cfg: NlConfig) -> Cost {
        let mut t = Tape::new();
        let base = OtPair::setup_cost();
        t.exchange(32, 1, 32, 1);
        t.exchange(base.bytes - 32, 1, base.bytes - 32, 1);
        let (b, m) = cost::iknp_msg(crate::ot::kk13::CODE_BITS);
        t.exchange(b, m, b, m);
        let mut c = t.cost();
        if let CotBackend::Ferret(p) = cfg.cot {
            // The server's sending direction is set up first, then the client's; the previous
            // phase ended with both parties receiving.
            // (in the server's terms: the server is the OT sender of the first direction and
            // the OT receiver of the second)
            let one = crate::ot::FerretPair::setup_cost_after_base(&p);
            let both = one + one.swapped();
            c = c + ot_cost(both);
        }
        c
    }

    /// Makes sure the COT pools hold `need` (Ferret; IKNP makes its COTs inline and this is a
    /// no-op). Both parties call it at the same point with the same `need`, between protocols.
    /// Every protocol reserves what it needs by itself; calling this first moves the Ferret
    /// iterations, and their traffic ([`NlSession::reserve_cost`]), out of the protocol's
    /// measured online part.
    pub fn reserve<C: Channel>(&mut self, ch: &mut C, need: CotCount) -> Result<()> {
        let mine = usize::try_from(need.sent_by(self.role)).map_err(|_| too_many(need))?;
        let theirs = usize::try_from(need.sent_by(self.role.peer())).map_err(|_| too_many(need))?;
        // the server's sending direction first on both sides
        if self.role == Role::Server {
            self.cot_s.reserve(ch, mine)?;
            self.cot_r.reserve(ch, theirs)
        } else {
            self.cot_r.reserve(ch, theirs)?;
            self.cot_s.reserve(ch, mine)
        }
    }

    /// Bytes and flights of [`NlSession::reserve`]`(need)` in the current state, both parties.
    pub fn reserve_cost(&self, need: CotCount) -> Cost {
        let mine = usize::try_from(need.sent_by(self.role)).unwrap_or(usize::MAX);
        let theirs = usize::try_from(need.sent_by(self.role.peer())).unwrap_or(usize::MAX);
        ot_cost(self.cot_s.reserve_cost(mine)) + ot_cost(self.cot_r.reserve_cost(theirs))
    }

    /// COTs consumed so far by direction (KK13 leaves, which have their own extension, are not
    /// counted): what [`Cost::cots`] predicts.
    pub fn cots_consumed(&self) -> CotCount {
        let mine = crate::ot::CotSender::consumed(&self.cot_s);
        let theirs = crate::ot::CotReceiver::consumed(&self.cot_r);
        match self.role {
            Role::Server => CotCount {
                server_sends: mine,
                client_sends: theirs,
            },
            Role::Client => CotCount {
                server_sends: theirs,
                client_sends: mine,
            },
        }
    }

    /// COTs pooled ahead: (this party sending, this party receiving).
    pub fn pooled(&self) -> (usize, usize) {
        (self.cot_s.pooled(), self.cot_r.pooled())
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> NlConfig {
        self.cfg
    }

    /// Changes the configuration (both parties must do the same between calls); the COT
    /// backend must stay the one the session was set up with.
    pub fn set_config(&mut self, cfg: NlConfig) -> Result<()> {
        cfg.validate()?;
        if cfg.cot != self.cfg.cot {
            return Err(MpcError::InvalidArgument {
                what: "the COT backend is fixed at session setup".into(),
            });
        }
        self.cfg = cfg;
        Ok(())
    }

    /// Runs `f` with `sender` as the OT sender ([`NlConfig::ot_sender`]) and restores the
    /// configuration (both parties must do the same): composite protocols choose each step's
    /// direction so that its first message goes in the flight of the previous step's last one
    /// (see [`Tape::chain`]).
    pub fn with_ot_sender<T>(
        &mut self,
        sender: Role,
        f: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let old = self.cfg.ot_sender;
        self.cfg.ot_sender = sender;
        let out = f(self);
        self.cfg.ot_sender = old;
        out
    }

    /// Runs one step of a composite protocol: `real` with the OT sender that
    /// [`Tape::chain`] picks from the steps so far (`tp`, replayed by both parties), then the
    /// step's tape `tape` on `tp` with the same configuration. The cost formula of the
    /// composite replays the same steps with [`Tape::step`].
    pub fn step<C: Channel, T>(
        &mut self,
        ch: &mut C,
        tp: &mut Tape,
        real: impl FnOnce(&mut Self, &mut C) -> Result<T>,
        tape: impl FnOnce(&mut Tape, NlConfig),
    ) -> Result<T> {
        let c = tp.chain(self.cfg);
        let out = self.with_ot_sender(c.ot_sender, |s| real(s, ch))?;
        tape(tp, c);
        Ok(out)
    }

    pub(crate) fn is_ot_sender(&self) -> bool {
        self.role == self.cfg.ot_sender
    }

    pub(crate) fn rng(&mut self) -> &mut Prg {
        &mut self.rng
    }
}

fn too_many(need: CotCount) -> MpcError {
    MpcError::InvalidArgument {
        what: format!("COT reservation of {need:?} does not fit in memory"),
    }
}

/// Bytes and flights of both parties in an [`OtCost`].
fn ot_cost(c: OtCost) -> Cost {
    Cost {
        bytes: c.bytes(),
        rounds: c.rounds(),
        cots: CotCount::default(),
    }
}

/// Test helper of the protocols built on [`NlSession`]: sets up both parties (generators
/// seeded from `seed` and the role), reserves `need` COTs, then runs `f` for both over the
/// in-memory pair and returns both results with the traffic of `f` alone (bytes sent by both,
/// flights seen by both).
#[cfg(test)]
pub(crate) fn run_measured<T: Send>(
    seed: u8,
    cfg: NlConfig,
    need: CotCount,
    f: impl Fn(Role, &mut NlSession, &mut duet_transport::MemoryChannel) -> T + Sync,
) -> (T, T, Cost) {
    use duet_transport::{run_two_party, MemoryChannel};
    let party = |role: Role, mut ch: MemoryChannel| {
        let mut rng = Prg::from_seed([role.index() as u8 + seed; 32]);
        let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
        s.reserve(&mut ch, need).unwrap();
        // end on a receive on both sides, as after setup, so that flights count from fresh (as
        // the cost formulas' tapes do)
        ch.send_bytes(&[0]).unwrap();
        ch.flush().unwrap();
        ch.recv_bytes().unwrap();
        let before = ch.stats();
        let out = f(role, &mut s, &mut ch);
        (out, ch.stats() - before)
    };
    let ((a, sa), (b, sb)) =
        run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
    let c = Cost {
        bytes: sa.bytes_sent + sb.bytes_sent,
        rounds: sa.rounds + sb.rounds,
        ..Cost::default()
    };
    (a, b, c)
}
