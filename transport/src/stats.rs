//! Traffic counters.

use std::ops::{Add, AddAssign, Sub};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

/// Traffic seen by one endpoint of a channel (or summed over several).
///
/// * `bytes_*` count message payload bytes. Each message also costs a fixed
///   [`FRAME_HEADER_BYTES`](crate::FRAME_HEADER_BYTES)-byte frame header on the wire, which is not
///   included here; [`ChannelStats::wire_bytes`] adds it.
/// * `rounds` counts the *flights* this endpoint sent: a send that is the first operation on the
///   channel, or that follows a receive, starts a new flight. For a sequential protocol between
///   two endpoints, the sum of both endpoints' `rounds` is the number of one-way message flights,
///   and half of it the number of round trips.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelStats {
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages received.
    pub messages_received: u64,
    /// Flights sent (changes of direction towards the peer).
    pub rounds: u64,
    /// Flights received: receives that are the first operation or follow a send. From one
    /// endpoint, `rounds + rounds_received` counts the flights of both directions.
    pub rounds_received: u64,
}

impl ChannelStats {
    /// Flights in both directions as seen from this endpoint.
    pub fn total_rounds(&self) -> u64 {
        self.rounds + self.rounds_received
    }

    /// Payload bytes in both directions.
    pub fn total_bytes(&self) -> u64 {
        self.bytes_sent + self.bytes_received
    }

    /// Bytes in both directions including frame headers.
    pub fn wire_bytes(&self) -> u64 {
        self.total_bytes()
            + crate::FRAME_HEADER_BYTES as u64 * (self.messages_sent + self.messages_received)
    }
}

impl Add for ChannelStats {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            bytes_sent: self.bytes_sent + o.bytes_sent,
            bytes_received: self.bytes_received + o.bytes_received,
            messages_sent: self.messages_sent + o.messages_sent,
            messages_received: self.messages_received + o.messages_received,
            rounds: self.rounds + o.rounds,
            rounds_received: self.rounds_received + o.rounds_received,
        }
    }
}

impl AddAssign for ChannelStats {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

impl Sub for ChannelStats {
    type Output = Self;
    /// The traffic between two snapshots (`later - earlier`); saturates at zero.
    fn sub(self, o: Self) -> Self {
        Self {
            bytes_sent: self.bytes_sent.saturating_sub(o.bytes_sent),
            bytes_received: self.bytes_received.saturating_sub(o.bytes_received),
            messages_sent: self.messages_sent.saturating_sub(o.messages_sent),
            messages_received: self.messages_received.saturating_sub(o.messages_received),
            rounds: self.rounds.saturating_sub(o.rounds),
            rounds_received: self.rounds_received.saturating_sub(o.rounds_received),
        }
    }
}

const LAST_NONE: u8 = 0;
const LAST_SEND: u8 = 1;
const LAST_RECV: u8 = 2;

/// Shared, thread-safe counters of one channel endpoint; a session keeps one per sub-channel so
/// that it can report per sub-channel and in total.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    rounds: AtomicU64,
    rounds_received: AtomicU64,
    last: AtomicU8,
}

impl Counters {
    /// Records one sent message of `len` payload bytes.
    pub fn on_send(&self, len: usize) {
        self.bytes_sent.fetch_add(len as u64, Ordering::Relaxed);
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
        if self.last.swap(LAST_SEND, Ordering::Relaxed) != LAST_SEND {
            self.rounds.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records one received message of `len` payload bytes.
    pub fn on_recv(&self, len: usize) {
        self.bytes_received.fetch_add(len as u64, Ordering::Relaxed);
        self.messages_received.fetch_add(1, Ordering::Relaxed);
        if self.last.swap(LAST_RECV, Ordering::Relaxed) != LAST_RECV {
            self.rounds_received.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A snapshot.
    pub fn snapshot(&self) -> ChannelStats {
        ChannelStats {
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_received: self.messages_received.load(Ordering::Relaxed),
            rounds: self.rounds.load(Ordering::Relaxed),
            rounds_received: self.rounds_received.load(Ordering::Relaxed),
        }
    }

    /// True before any message.
    pub fn is_fresh(&self) -> bool {
        self.last.load(Ordering::Relaxed) == LAST_NONE
    }
}
