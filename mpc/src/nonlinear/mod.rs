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
//!
//! Every protocol runs batched over a whole tensor and has an exact `*_cost` function giving
//! [`Cost`] `{ bytes, rounds }` (both parties' payload bytes and flights summed, as counted
//! by [`duet_transport::ChannelStats`]); tests check the measured traffic against it.
//!
//! Security: semi-honest (honest-but-curious) server and client, 128-bit computational
//! security inherited from the OTs (IKNP, KK13, base OT over Ristretto255), no statistical
//! leakage: every message is masked by a uniform OT pad or a uniform triple share.
//!
//! Both directions of OT are used: the asymmetric steps (millionaire leaves, B2A, table OTs)
//! take their OT sender from [`NlConfig::ot_sender`]; the symmetric ones (AND triples, mux,
//! multiplication) use both directions, the configured one first. Both parties must make the
//! same calls in the same order with the same public arguments.

mod and;
mod arith;
mod boolean;
mod compare;
mod cost;
mod millionaire;
mod otx;
mod relu;
mod trunc;
mod wire;

pub use and::{and, and_cost};
pub use arith::{b2a, b2a_cost, mul, mul_cost, mux, mux_cost};
pub use boolean::BShare;
pub use compare::{
    drelu, drelu_cost, eq, eq_cost, lt, lt_bounded, lt_bounded_cost, lt_cost, lt_public,
    lt_public_cost, msb, msb_cost,
};
pub use cost::{Cost, Tape};
pub use millionaire::{millionaire, millionaire_cost, CmpMode};
pub use relu::{max_axis, max_axis_cost, relu, relu_cost};
pub use trunc::{extend, extend_cost, reduce, trunc, trunc_cost, TruncMode};

use crate::ot::{IknpReceiver, IknpSender, KkReceiver, KkSender, OtPair};
use crate::{MpcError, Prg, Result};
use duet_transport::{Channel, Role};
use rand::{CryptoRng, RngCore};

/// Public configuration of the non-linear protocols (both parties must use the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NlConfig {
    /// Digit width `m` of the millionaires' protocol (`1..=8`): leaves are 1-of-`2^m` OTs.
    /// 4 minimizes bytes (CrypTFlow2's choice).
    pub radix: u32,
    /// The party that plays OT sender in the asymmetric steps and goes first in the symmetric
    /// ones.
    pub ot_sender: Role,
    /// How the millionaire's leaf 1-of-`2^m` OTs are made.
    pub leaf_ot: LeafOt,
}

/// The 1-out-of-`2^m` OT used for the millionaire's leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum LeafOt {
    /// KK13 ([`crate::ot::kk13`]): `32 + 2^m w / 8` bytes per leaf, the fewest bytes for
    /// `m >= 2`; the sender hashes `2^m` rows with SHA-256 per leaf.
    #[default]
    Kk13,
    /// `m` IKNP random OTs per leaf ([`crate::ot::rot`]): `16 m + m/8 + 2^m w / 8` bytes,
    /// fixed-key AES only (faster to compute, more bytes).
    Iknp,
}

impl Default for NlConfig {
    fn default() -> Self {
        Self {
            radix: 4,
            ot_sender: Role::Server,
            leaf_ot: LeafOt::Kk13,
        }
    }
}

impl NlConfig {
    /// Checks the radix.
    pub fn validate(&self) -> Result<()> {
        if !(1..=8).contains(&self.radix) {
            return Err(MpcError::InvalidArgument {
                what: format!("millionaire radix {} bits, supported 1..=8", self.radix),
            });
        }
        Ok(())
    }
}

/// One party's state for the non-linear protocols: IKNP in both directions, KK13 1-of-N OT in
/// both directions, a local PRG and the configuration.
///
/// Setup ([`NlSession::setup`], cost [`NlSession::setup_cost`]): the 2 x 128 base OTs of
/// [`OtPair`] (8,256 bytes) and 2 x 256 IKNP random OTs seeding KK13 (8,192 bytes), 6 flights.
/// Security: semi-honest, 128-bit.
pub struct NlSession {
    role: Role,
    cfg: NlConfig,
    ot_s: IknpSender,
    ot_r: IknpReceiver,
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
    /// Runs the session setup over `ch` (both parties call it; see [`NlSession::setup_cost`]).
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
        let kk_r = KkReceiver::setup(&mut ot_s, ch)?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(Self {
            role,
            cfg,
            ot_s,
            ot_r,
            kk_s,
            kk_r,
            kk_s_next: 0,
            kk_r_next: 0,
            rng: Prg::from_seed(seed),
        })
    }

    /// Exact cost of [`NlSession::setup`]: 16,448 bytes, 6 flights.
    pub fn setup_cost() -> Cost {
        let mut t = Tape::new();
        let base = OtPair::setup_cost();
        t.exchange(32, 1, 32, 1);
        t.exchange(base.bytes - 32, 1, base.bytes - 32, 1);
        let (b, m) = cost::iknp_msg(crate::ot::kk13::CODE_BITS);
        t.exchange(b, m, b, m);
        t.cost()
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> NlConfig {
        self.cfg
    }

    /// Changes the configuration (both parties must do the same between calls).
    pub fn set_config(&mut self, cfg: NlConfig) -> Result<()> {
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// The IKNP directions (e.g. to precompute COTs into their pools offline; the `*_cost`
    /// formulas assume empty pools).
    pub fn iknp(&mut self) -> (&mut IknpSender, &mut IknpReceiver) {
        (&mut self.ot_s, &mut self.ot_r)
    }

    pub(crate) fn is_ot_sender(&self) -> bool {
        self.role == self.cfg.ot_sender
    }

    pub(crate) fn rng(&mut self) -> &mut Prg {
        &mut self.rng
    }
}
