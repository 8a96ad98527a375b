//! Exact traffic of the non-linear protocols: [`Cost`] and the flight simulator behind it.
//!
//! A protocol's cost is computed by replaying its message pattern on a [`Tape`]: which party
//! sends how many bytes in how many messages, in program order. A flight is counted, as by
//! [`ChannelStats`](duet_transport::ChannelStats), when a party sends as its first operation or
//! after having received; `rounds` is the sum of both parties' flights.

use super::{CotBackend, CotCount, NlConfig};
use crate::ot::{iknp, kk13};
use duet_transport::Role;

/// Exact online traffic of a protocol run: payload bytes of both parties summed and one-way
/// flights of both parties summed (what the two endpoints' `stats()` report together), and the
/// correlated OTs it consumes by direction (with Ferret they are made ahead, by
/// [`NlSession::reserve`](super::NlSession::reserve), and their traffic is not in `bytes`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cost {
    /// Payload bytes, both directions.
    pub bytes: u64,
    /// Flights, both parties (a round trip is two).
    pub rounds: u64,
    /// COTs consumed, by direction.
    pub cots: CotCount,
}

impl std::ops::Add for Cost {
    type Output = Self;
    /// Plain sum (no flight merging; use a [`Tape`] for exact composition).
    fn add(self, o: Self) -> Self {
        Self {
            bytes: self.bytes + o.bytes,
            rounds: self.rounds + o.rounds,
            cots: self.cots + o.cots,
        }
    }
}

/// What a party did last on the channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Last {
    #[default]
    Nothing,
    Sent,
    Received,
}

/// A replay of a protocol's message pattern that counts bytes, messages and flights exactly.
#[derive(Clone, Debug, Default)]
pub struct Tape {
    bytes: [u64; 2],
    messages: [u64; 2],
    flights: [u64; 2],
    last: [Last; 2],
    ferret: bool,
    cots: CotCount,
}

fn idx(r: Role) -> usize {
    match r {
        Role::Server => 0,
        Role::Client => 1,
    }
}

impl Tape {
    /// An empty tape (both parties fresh) of protocols whose COTs come from IKNP.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tape of protocols run with `cfg` (its COT backend decides what COTs cost).
    pub fn with_config(cfg: NlConfig) -> Self {
        Self {
            ferret: matches!(cfg.cot, CotBackend::Ferret(_)),
            ..Self::default()
        }
    }

    /// Records `n` COTs with `sender` as COT sender and returns the online bytes and messages
    /// the COT receiver sends for them: the IKNP extension message, or nothing with Ferret
    /// (pooled ahead).
    pub(crate) fn cots(&mut self, sender: Role, n: usize) -> (u64, u64) {
        if n == 0 {
            return (0, 0);
        }
        self.cots = self.cots + CotCount::from(sender, n as u64);
        if self.ferret {
            (0, 0)
        } else {
            iknp_msg(n)
        }
    }

    fn put(&mut self, from: Role, bytes: u64, messages: u64) {
        if messages == 0 {
            return;
        }
        let i = idx(from);
        if let (Some(b), Some(m)) = (self.bytes.get_mut(i), self.messages.get_mut(i)) {
            *b += bytes;
            *m += messages;
        }
        if self.last.get(i) != Some(&Last::Sent) {
            if let Some(f) = self.flights.get_mut(i) {
                *f += 1;
            }
        }
        if let Some(l) = self.last.get_mut(i) {
            *l = Last::Sent;
        }
    }

    fn got(&mut self, who: Role) {
        if let Some(l) = self.last.get_mut(idx(who)) {
            *l = Last::Received;
        }
    }

    /// `from` sends `bytes` in `messages` messages; the peer receives them before it sends again.
    pub fn send(&mut self, from: Role, bytes: u64, messages: u64) {
        if messages == 0 {
            return;
        }
        self.put(from, bytes, messages);
        self.got(from.peer());
    }

    /// Both parties send (server `s` bytes in `sm` messages, client `c` in `cm`) before either
    /// receives.
    pub fn exchange(&mut self, s: u64, sm: u64, c: u64, cm: u64) {
        self.put(Role::Server, s, sm);
        self.put(Role::Client, c, cm);
        if cm > 0 {
            self.got(Role::Server);
        }
        if sm > 0 {
            self.got(Role::Client);
        }
    }

    /// Bytes sent by `r`.
    pub fn bytes_of(&self, r: Role) -> u64 {
        self.bytes.get(idx(r)).copied().unwrap_or(0)
    }

    /// Messages sent by `r`.
    pub fn messages_of(&self, r: Role) -> u64 {
        self.messages.get(idx(r)).copied().unwrap_or(0)
    }

    /// The party that sent last while its peer's last action was a receive: the party that
    /// is "ahead" in a ping-pong (its output of the last step is known one flight before its
    /// peer's). `None` when fresh or after a simultaneous exchange.
    pub fn last_sender(&self) -> Option<Role> {
        match (self.last.first(), self.last.get(1)) {
            (Some(Last::Sent), Some(l)) if *l != Last::Sent => Some(Role::Server),
            (Some(l), Some(Last::Sent)) if *l != Last::Sent => Some(Role::Client),
            _ => None,
        }
    }

    /// `cfg` with the OT sender chosen so that the next step's first message comes from the
    /// party that sent last (its peer becomes the OT sender): the two flights merge. Unchanged
    /// when no party is ahead ([`Tape::last_sender`] is `None`).
    pub fn chain(&self, cfg: NlConfig) -> NlConfig {
        match self.last_sender() {
            Some(r) => NlConfig {
                ot_sender: r.peer(),
                ..cfg
            },
            None => cfg,
        }
    }

    /// Replays one step of a composite protocol with the configuration [`Tape::chain`] picks
    /// from `base` (what [`NlSession::step`](super::NlSession::step) runs).
    pub fn step(&mut self, base: NlConfig, f: impl FnOnce(&mut Tape, NlConfig)) {
        let c = self.chain(base);
        f(self, c);
    }

    /// The totals.
    pub fn cost(&self) -> Cost {
        Cost {
            bytes: self.bytes.iter().sum(),
            rounds: self.flights.iter().sum(),
            cots: self.cots,
        }
    }
}

/// Bytes and messages of an IKNP extension of `n` COTs (sent by the COT receiver).
pub(crate) fn iknp_msg(n: usize) -> (u64, u64) {
    let c = iknp::extend_cost(n);
    (c.receiver.bytes, c.receiver.messages)
}

/// Bytes and messages of the KK13 receiver's extension message for `n` instances.
pub(crate) fn kk_msg(n: usize) -> (u64, u64) {
    let c = kk13::extend_cost(n, 1, 1);
    (c.receiver.bytes, c.receiver.messages)
}

/// Bytes and messages of the KK13 sender's answer (one message per chunk of
/// [`kk13::KK_CHUNK`] instances) for `n` instances of `2^l` messages of `w` bits.
pub(crate) fn kk_answer(n: usize, l: u32, w: u32) -> (u64, u64) {
    let mut bytes = 0u64;
    let mut left = n;
    while left > 0 {
        let m = left.min(kk13::KK_CHUNK);
        bytes += ((m << l) * w as usize).div_ceil(8) as u64;
        left -= m;
    }
    (bytes, n.div_ceil(kk13::KK_CHUNK) as u64)
}
