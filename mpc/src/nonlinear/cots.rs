//! The COT source of a [`NlSession`](super::NlSession): IKNP extension (16 bytes per COT, made
//! inline with each protocol's messages) or Ferret silent OT (well under a bit per COT, made
//! ahead in large batches and pooled).
//!
//! With Ferret, a protocol never runs a Ferret iteration in the middle of its own messages:
//! every public protocol of [`super`] first reserves the COTs its cost formula says it will
//! consume ([`Cost::cots`](super::Cost)), at a point where both parties' channels are drained,
//! so a pool that runs dry is refilled transparently and in the same order on both sides. The
//! reservation's traffic is the offline (preprocessing) traffic, reported apart from the
//! protocol's online [`Cost`](super::Cost); callers that want it out of the measured online
//! part call [`NlSession::reserve`](super::NlSession::reserve) first.

use crate::ot::{
    Block, CotReceiver, CotSender, FerretParams, FerretReceiver, FerretSender, IknpReceiver,
    IknpSender, OtCost,
};
use crate::{MpcError, Result};
use duet_transport::{Channel, Role};

/// Which correlated-OT generator the non-linear protocols consume.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CotBackend {
    /// IKNP OT extension: 128 bits per COT sent with the protocol's own messages. What
    /// CrypTFlow2 and Iron use.
    Iknp,
    /// Ferret silent OT (Yang et al., CCS'20) with the given LPN parameters: COTs are made
    /// in batches of about ten million ahead of use. What Cheetah and BumbleBee use.
    Ferret(FerretParams),
}

impl Default for CotBackend {
    /// Ferret with [`FerretParams::B13`].
    fn default() -> Self {
        Self::Ferret(FerretParams::B13)
    }
}

/// Numbers of COTs by direction: those in which the server is the COT sender and those in
/// which the client is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CotCount {
    /// COTs with the server as sender.
    pub server_sends: u64,
    /// COTs with the client as sender.
    pub client_sends: u64,
}

impl CotCount {
    /// `n` COTs with `sender` as COT sender.
    pub fn from(sender: Role, n: u64) -> Self {
        match sender {
            Role::Server => Self {
                server_sends: n,
                client_sends: 0,
            },
            Role::Client => Self {
                server_sends: 0,
                client_sends: n,
            },
        }
    }

    /// COTs in which `r` is the sender.
    pub fn sent_by(&self, r: Role) -> u64 {
        match r {
            Role::Server => self.server_sends,
            Role::Client => self.client_sends,
        }
    }

    /// Both directions together.
    pub fn total(&self) -> u64 {
        self.server_sends + self.client_sends
    }
}

impl std::ops::Add for CotCount {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            server_sends: self.server_sends + o.server_sends,
            client_sends: self.client_sends + o.client_sends,
        }
    }
}

fn short(n: usize, pooled: usize) -> MpcError {
    MpcError::InvalidArgument {
        what: format!(
            "{n} Ferret COTs asked for with {pooled} pooled: the protocol's COT reservation \
             was short (a bug in its cost formula)"
        ),
    }
}

/// This party's sending COT direction.
pub(crate) enum SendSource {
    Iknp(Box<IknpSender>),
    Ferret(Box<FerretSender>),
}

/// This party's receiving COT direction.
pub(crate) enum RecvSource {
    Iknp(Box<IknpReceiver>),
    Ferret(Box<FerretReceiver>),
}

impl SendSource {
    /// Ferret: refill to at least `n` pooled (no-op for IKNP).
    pub(crate) fn reserve<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        match self {
            Self::Iknp(_) => Ok(()),
            Self::Ferret(f) => f.reserve(ch, n),
        }
    }

    /// Traffic of [`SendSource::reserve`].
    pub(crate) fn reserve_cost(&self, n: usize) -> OtCost {
        match self {
            Self::Iknp(_) => OtCost::default(),
            Self::Ferret(f) => f.reserve_cost(n),
        }
    }

    pub(crate) fn pooled(&self) -> usize {
        match self {
            Self::Iknp(s) => s.pooled(),
            Self::Ferret(f) => f.pooled(),
        }
    }
}

impl RecvSource {
    /// Ferret: refill to at least `n` pooled (no-op for IKNP).
    pub(crate) fn reserve<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        match self {
            Self::Iknp(_) => Ok(()),
            Self::Ferret(f) => f.reserve(ch, n),
        }
    }

    /// Traffic of [`RecvSource::reserve`].
    pub(crate) fn reserve_cost(&self, n: usize) -> OtCost {
        match self {
            Self::Iknp(_) => OtCost::default(),
            Self::Ferret(f) => f.reserve_cost(n),
        }
    }

    pub(crate) fn pooled(&self) -> usize {
        match self {
            Self::Iknp(r) => r.pooled(),
            Self::Ferret(f) => f.pooled(),
        }
    }
}

impl CotSender for SendSource {
    fn delta(&self) -> Block {
        match self {
            Self::Iknp(s) => s.delta(),
            Self::Ferret(f) => f.delta(),
        }
    }

    fn consumed(&self) -> u64 {
        match self {
            Self::Iknp(s) => CotSender::consumed(s.as_ref()),
            Self::Ferret(f) => CotSender::consumed(f.as_ref()),
        }
    }

    /// IKNP extends now; Ferret hands out reserved COTs and refuses to run an iteration here.
    fn send_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<Block>> {
        match self {
            Self::Iknp(s) => s.send_cot(ch, n),
            Self::Ferret(f) => {
                if f.pooled() < n {
                    return Err(short(n, f.pooled()));
                }
                f.send_cot(ch, n)
            }
        }
    }

    fn cot_cost(&self, n: usize) -> OtCost {
        match self {
            Self::Iknp(s) => s.cot_cost(n),
            Self::Ferret(f) => f.cot_cost(n),
        }
    }
}

impl CotReceiver for RecvSource {
    fn consumed(&self) -> u64 {
        match self {
            Self::Iknp(r) => CotReceiver::consumed(r.as_ref()),
            Self::Ferret(f) => CotReceiver::consumed(f.as_ref()),
        }
    }

    /// IKNP extends now; Ferret hands out reserved COTs and refuses to run an iteration here.
    fn recv_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<(Vec<bool>, Vec<Block>)> {
        match self {
            Self::Iknp(r) => r.recv_cot(ch, n),
            Self::Ferret(f) => {
                if f.pooled() < n {
                    return Err(short(n, f.pooled()));
                }
                f.recv_cot(ch, n)
            }
        }
    }

    fn cot_cost(&self, n: usize) -> OtCost {
        match self {
            Self::Iknp(r) => r.cot_cost(n),
            Self::Ferret(f) => f.cot_cost(n),
        }
    }
}
