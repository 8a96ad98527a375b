//! Oblivious transfer: base OT, IKNP extension, random / chosen-message / 1-out-of-N OT and
//! correlated OT over the ring.
//!
//! Layers, each an I/O-free core plus a thin driver over a [`Channel`]:
//! * [`base`]: Chou–Orlandi "Simplest OT" over Ristretto255, 128 OTs in one message each way,
//!   run once per session per direction.
//! * [`iknp`]: IKNP extension to correlated OT (COT): the sender holds a global `Δ` and gets
//!   `q_i`, the receiver gets random choice bits `b_i` and `t_i = q_i ⊕ b_i·Δ` (128-bit blocks).
//!   COTs can be generated ahead into a pool ([`IknpSender::precompute`]) and consumed later;
//!   the phases are types ([`IknpSenderSetup`] → [`IknpSender`]).
//! * [`OtPair`]: a per-session object holding an IKNP sender and an IKNP receiver, so either
//!   party can be the OT sender.
//! * [`CotSender`] / [`CotReceiver`]: the traits every COT source implements; random OT,
//!   chosen-message OT, 1-out-of-N OT (from `log N` OTs) and correlated OT over `Z_2^l` are
//!   built on them as provided methods, with their I/O-free cores in [`rot`].
//! * [`kk13`]: 1-out-of-N OT extension for `N <= 256` (Kolesnikov–Kumaresan), set up from 256
//!   IKNP random OTs; fewer bytes than the `log N` construction for `N >= 4`; instances can
//!   be precomputed offline with random choices and consumed online.
//!
//! Security of everything here: semi-honest (honest-but-curious) parties, 128-bit computational
//! security, in the random-oracle model (SHA-256 for base OT and KK13) and the
//! random-permutation model for fixed-key AES (the correlation-robust hash of
//! [`aes::FixedKeyHash`]).
//!
//! Costs are exact and given as [`OtCost`]: payload bytes, messages and flights of each party,
//! matching [`ChannelStats`](duet_transport::ChannelStats) (a flight is counted when a party
//! sends after having received, or sends first; the formulas assume each party's previous
//! operation on the channel was a receive or nothing, and `+` on [`OtCost`] merges the flights
//! of phases run back to back). Base OT setup: [`OtPair::setup_cost`] (4,128 bytes from each
//! party, 2 flights each), or [`iknp::setup_cost`] for one direction (32 + 4,096 bytes).
//!
//! | protocol (per OT) | bytes (COT part can be precomputed offline) | flights |
//! |---|---|---|
//! | COT ([`iknp::extend_cost`], `n` a multiple of 64) | 16 | 1 |
//! | random OT | 16 (the COT; hashing is local) | 1 |
//! | chosen-message OT, `w`-bit messages ([`rot::chosen_cost`]) | 16 + 1/8 + 2w/8 | 2 |
//! | 1-of-`N` OT from `l = log N` OTs ([`rot::one_of_n_cost`]) | 16 l + l/8 + N w/8 | 2 |
//! | 1-of-`N` OT, KK13 ([`kk13::extend_cost`]) | 32 + N w/8 | 2 |
//! | 1-of-`N` OT, KK13 precomputed ([`kk13::precompute_cost`] + [`kk13::pooled_cost`]) | 32 offline + 1 + N w/8 online | 1 + 2 |
//! | COT over `Z_2^l`, chosen bits ([`rot::cot_ring_cost`]) | 16 + 1/8 + l/8 | 2 |
//! | COT over `Z_2^l`, random bits | 16 + l/8 | 1–2 |
//!
//! For example a 1-of-16 OT of 2-bit messages (the CrypTFlow2 millionaires' leaf) costs
//! 68.5 bytes from 4 OTs and 36 bytes with KK13.

pub mod aes;
pub mod base;
mod bits;
pub mod ferret;
pub mod iknp;
pub mod kk13;
mod pair;
pub mod rot;
pub mod transpose;

pub use ferret::{FerretPair, FerretParams, FerretReceiver, FerretSender};
pub use iknp::{IknpReceiver, IknpReceiverSetup, IknpSender, IknpSenderSetup};
pub use kk13::{KkReceiver, KkSender};
pub use pair::OtPair;

use crate::{Result, Ring};
use duet_transport::Channel;

/// Column length (in 64-bit words) from which the extension cores spread the seed expansion and
/// the transposition over rayon's pool (16,384 OTs): below it the work is too small to share.
pub(crate) const PAR_MIN_WORDS: usize = 256;

/// A 128-bit OT block (keys, correlations, hash outputs).
pub type Block = u128;

/// Traffic of one party in a protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Traffic {
    /// Payload bytes sent.
    pub bytes: u64,
    /// Messages sent.
    pub messages: u64,
    /// Flights sent (see the module documentation).
    pub flights: u64,
}

impl std::ops::Add for Traffic {
    type Output = Self;
    /// The sum of two traffics (flights are simply added; [`OtCost`]'s `Add` merges flights).
    fn add(self, o: Self) -> Self {
        Self {
            bytes: self.bytes + o.bytes,
            messages: self.messages + o.messages,
            flights: self.flights + o.flights,
        }
    }
}

/// One side of an OT protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OtSide {
    /// The OT sender.
    Sender,
    /// The OT receiver.
    Receiver,
}

/// The exact traffic of an OT protocol: what the OT sender and the OT receiver each send, and
/// which side sends the first and the last message (so that phases compose exactly).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OtCost {
    /// Sent by the OT sender.
    pub sender: Traffic,
    /// Sent by the OT receiver.
    pub receiver: Traffic,
    /// Who sends the first message (`None` if nothing is sent).
    pub first: Option<OtSide>,
    /// Who sends the last message (`None` if nothing is sent).
    pub last: Option<OtSide>,
}

impl OtCost {
    /// A phase in which only `side` sends.
    pub fn one_way(side: OtSide, t: Traffic) -> Self {
        if t.messages == 0 {
            return Self::default();
        }
        let (sender, receiver) = match side {
            OtSide::Sender => (t, Traffic::default()),
            OtSide::Receiver => (Traffic::default(), t),
        };
        Self {
            sender,
            receiver,
            first: Some(side),
            last: Some(side),
        }
    }

    /// A phase in which `first` sends `a`, then the other side answers with `b`.
    pub fn request_response(first: OtSide, a: Traffic, b: Traffic) -> Self {
        let other = match first {
            OtSide::Sender => OtSide::Receiver,
            OtSide::Receiver => OtSide::Sender,
        };
        Self::one_way(first, a) + Self::one_way(other, b)
    }

    /// Payload bytes in both directions.
    pub fn bytes(&self) -> u64 {
        self.sender.bytes + self.receiver.bytes
    }

    /// One-way flights in total (the sum of both parties' flight counters).
    pub fn rounds(&self) -> u64 {
        self.sender.flights + self.receiver.flights
    }

    /// The same cost with the roles of the two parties swapped.
    pub fn swapped(self) -> Self {
        let flip = |s: Option<OtSide>| {
            s.map(|s| match s {
                OtSide::Sender => OtSide::Receiver,
                OtSide::Receiver => OtSide::Sender,
            })
        };
        Self {
            sender: self.receiver,
            receiver: self.sender,
            first: flip(self.first),
            last: flip(self.last),
        }
    }
}

impl std::ops::Add for OtCost {
    type Output = Self;
    /// Two phases one after the other. If the side that sends last in `self` also sends first
    /// in `o`, those two sends are one flight, so its flight count drops by one.
    fn add(self, o: Self) -> Self {
        if self.first.is_none() {
            return o;
        }
        if o.first.is_none() {
            return self;
        }
        let mut sum = Self {
            sender: self.sender + o.sender,
            receiver: self.receiver + o.receiver,
            first: self.first,
            last: o.last,
        };
        match (self.last, o.first) {
            (Some(OtSide::Sender), Some(OtSide::Sender)) => {
                sum.sender.flights = sum.sender.flights.saturating_sub(1)
            }
            (Some(OtSide::Receiver), Some(OtSide::Receiver)) => {
                sum.receiver.flights = sum.receiver.flights.saturating_sub(1)
            }
            _ => {}
        }
        sum
    }
}

/// The sending side of a source of random correlated OTs (COTs) with a fixed global `Δ`.
///
/// Contract: for the `j`-th COT handed out (counting from 0 over the object's life, see
/// [`CotSender::consumed`]) the sender holds `q_j` and the receiver holds a uniform choice bit
/// `b_j` and `t_j = q_j ⊕ b_j·Δ`; the two sides ask for the same counts in the same order.
/// The provided methods build random, chosen-message and 1-out-of-N OT on it (semi-honest,
/// 128-bit, fixed-key AES in the random-permutation model).
pub trait CotSender {
    /// The global correlation `Δ`.
    fn delta(&self) -> Block;

    /// COTs handed out so far: the index of the next one (used as a hash tweak).
    fn consumed(&self) -> u64;

    /// The next `n` COTs: the sender's `q_j`.
    fn send_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<Block>>;

    /// The exact traffic of `send_cot(n)` in the current state (e.g. zero if pooled).
    fn cot_cost(&self, n: usize) -> OtCost;

    /// `n` random OTs: pairs of uniform keys `(k_j^0, k_j^1) = (H(j, q_j), H(j, q_j ⊕ Δ))`.
    /// Cost: that of `send_cot(n)` (hashing is local).
    fn send_rot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<[Block; 2]>> {
        let start = self.consumed();
        let q = self.send_cot(ch, n)?;
        Ok(rot::rot_sender_keys(self.delta(), start, &q))
    }

    /// Chosen-message OT of `w`-bit messages (`w` in `1..=64`): the receiver learns
    /// `msgs[j][b_j]` for its chosen `b_j` and nothing about the other message.
    /// Cost: [`CotSender::cot_cost`]`(n)` + [`rot::chosen_cost`]`(n, w)`.
    fn send_chosen<C: Channel>(&mut self, ch: &mut C, msgs: &[[u64; 2]], w: u32) -> Result<()> {
        rot::check_width(w)?;
        let keys = self.send_rot(ch, msgs.len())?;
        let e = ch.recv_bytes_max(msgs.len().div_ceil(8))?;
        let y = rot::chosen_sender_respond(&keys, &e, msgs, w)?;
        ch.send_bytes(&y)?;
        ch.flush()?;
        Ok(())
    }

    /// 1-out-of-`N` OT with `N = 2^l` (`l` in `1..=8`) of `w`-bit messages: `msgs` holds `N`
    /// messages per instance (instance-major); the receiver learns one per instance.
    /// Cost: [`CotSender::cot_cost`]`(n l)` + [`rot::one_of_n_cost`]`(n, l, w)`.
    fn send_one_of_n<C: Channel>(
        &mut self,
        ch: &mut C,
        msgs: &[u64],
        l: u32,
        w: u32,
    ) -> Result<()> {
        let n = rot::one_of_n_instances(msgs.len(), l, w)?;
        let keys = self.send_rot(ch, n * l as usize)?;
        let e = ch.recv_bytes_max((n * l as usize).div_ceil(8))?;
        let y = rot::one_of_n_sender_respond(&keys, &e, msgs, l, w)?;
        ch.send_bytes(&y)?;
        ch.flush()?;
        Ok(())
    }

    /// Correlated OT over the ring `Z_2^l` with the receiver's chosen bits: for correlations
    /// `xs` returns the sender's uniform `a_j`; the receiver gets `a_j + b_j · x_j`.
    /// Cost: [`CotSender::cot_cost`]`(n)` + [`rot::cot_ring_cost`]`(n, ring, true)`.
    fn send_cot_ring<C: Channel>(
        &mut self,
        ch: &mut C,
        xs: &[u64],
        ring: Ring,
    ) -> Result<Vec<u64>> {
        let keys = self.send_rot(ch, xs.len())?;
        let e = ch.recv_bytes_max(xs.len().div_ceil(8))?;
        let (a, d) = rot::cot_ring_sender(&keys, Some(&e), xs, ring)?;
        ch.send_bytes(&d)?;
        ch.flush()?;
        Ok(a)
    }

    /// Correlated OT over `Z_2^l` with the receiver's random bits (one message, sender to
    /// receiver): as [`CotSender::send_cot_ring`] but the receiver's `b_j` are uniform and
    /// returned to it. Cost: [`CotSender::cot_cost`]`(n)` + [`rot::cot_ring_cost`]`(n, ring,
    /// false)`.
    fn send_cot_ring_random<C: Channel>(
        &mut self,
        ch: &mut C,
        xs: &[u64],
        ring: Ring,
    ) -> Result<Vec<u64>> {
        let keys = self.send_rot(ch, xs.len())?;
        let (a, d) = rot::cot_ring_sender(&keys, None, xs, ring)?;
        ch.send_bytes(&d)?;
        ch.flush()?;
        Ok(a)
    }
}

/// The receiving side of a source of random COTs (see [`CotSender`] for the contract).
pub trait CotReceiver {
    /// COTs handed out so far: the index of the next one.
    fn consumed(&self) -> u64;

    /// The next `n` COTs: uniform choice bits `b_j` and `t_j = q_j ⊕ b_j·Δ`.
    fn recv_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<(Vec<bool>, Vec<Block>)>;

    /// The exact traffic of `recv_cot(n)` in the current state.
    fn cot_cost(&self, n: usize) -> OtCost;

    /// `n` random OTs with random choices: `(b_j, H(j, t_j))`, the sender's key `k_j^{b_j}`.
    fn recv_rot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<(Vec<bool>, Vec<Block>)> {
        let start = self.consumed();
        let (b, t) = self.recv_cot(ch, n)?;
        Ok((b, rot::rot_receiver_keys(start, t)))
    }

    /// Chosen-message OT: returns `msgs[j][choices[j]]` of the sender's `w`-bit messages.
    fn recv_chosen<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[bool],
        w: u32,
    ) -> Result<Vec<u64>> {
        rot::check_width(w)?;
        let (c, keys) = self.recv_rot(ch, choices.len())?;
        let e = rot::chosen_receiver_message(&c, choices)?;
        ch.send_bytes(&e)?;
        ch.flush()?;
        let y = ch.recv_bytes_max((2 * choices.len() * w as usize).div_ceil(8))?;
        rot::chosen_receiver_finish(&keys, choices, &y, w)
    }

    /// 1-out-of-`N` OT, `N = 2^l`: returns message `choices[i]` of each instance.
    fn recv_one_of_n<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[u8],
        l: u32,
        w: u32,
    ) -> Result<Vec<u64>> {
        rot::check_one_of_n(choices, l, w)?;
        let (c, keys) = self.recv_rot(ch, choices.len() * l as usize)?;
        let e = rot::one_of_n_receiver_message(&c, choices, l)?;
        ch.send_bytes(&e)?;
        ch.flush()?;
        let y = ch.recv_bytes_max(((choices.len() << l) * w as usize).div_ceil(8))?;
        rot::one_of_n_receiver_finish(&keys, choices, &y, l, w)
    }

    /// Correlated OT over `Z_2^l` (see [`CotSender::send_cot_ring`]): returns
    /// `a_j + b_j · x_j` for the chosen bits `b_j`.
    fn recv_cot_ring<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[bool],
        ring: Ring,
    ) -> Result<Vec<u64>> {
        let (c, keys) = self.recv_rot(ch, choices.len())?;
        let e = rot::chosen_receiver_message(&c, choices)?;
        ch.send_bytes(&e)?;
        ch.flush()?;
        let d = ch.recv_bytes_max((choices.len() * ring.bits() as usize).div_ceil(8))?;
        rot::cot_ring_receiver_finish(&keys, choices, &d, ring)
    }

    /// Correlated OT over `Z_2^l` with random bits (see [`CotSender::send_cot_ring_random`]):
    /// returns the uniform bits `b_j` and `a_j + b_j · x_j`.
    fn recv_cot_ring_random<C: Channel>(
        &mut self,
        ch: &mut C,
        n: usize,
        ring: Ring,
    ) -> Result<(Vec<bool>, Vec<u64>)> {
        let (b, keys) = self.recv_rot(ch, n)?;
        let d = ch.recv_bytes_max((n * ring.bits() as usize).div_ceil(8))?;
        let out = rot::cot_ring_receiver_finish(&keys, &b, &d, ring)?;
        Ok((b, out))
    }
}
