//! In-memory channels between two threads of one process, for tests and local runs.

use crate::channel::bytes_to_u64s;
use crate::{Channel, ChannelStats, Counters, Result, Session, TransportError};
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PEER: &str = "in-memory peer";

/// Default receive timeout of in-memory channels: generous, but a deadlocked test ends.
pub const DEFAULT_MEMORY_TIMEOUT: Duration = Duration::from_secs(300);

enum Payload {
    Bytes(Vec<u8>),
    Words(Vec<u64>),
}

impl Payload {
    fn byte_len(&self) -> usize {
        match self {
            Payload::Bytes(b) => b.len(),
            Payload::Words(w) => w.len() * 8,
        }
    }
}

/// One end of an in-memory channel. Messages are moved, not serialized; `u64` bulk data is not
/// copied on receipt. Dropping one end makes the other end's receive fail with
/// [`TransportError::PeerClosed`].
pub struct MemoryChannel {
    tx: Sender<Payload>,
    rx: Receiver<Payload>,
    counters: Arc<Counters>,
    timeout: Duration,
    max_frame: u64,
}

impl std::fmt::Debug for MemoryChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryChannel")
            .field("stats", &self.counters.snapshot())
            .finish()
    }
}

/// A connected pair of in-memory channel ends, with the default timeout.
pub fn memory_pair() -> (MemoryChannel, MemoryChannel) {
    memory_pair_with(DEFAULT_MEMORY_TIMEOUT, crate::DEFAULT_MAX_FRAME_BYTES)
}

/// A connected pair with a given receive timeout and frame-size limit.
pub fn memory_pair_with(timeout: Duration, max_frame: u64) -> (MemoryChannel, MemoryChannel) {
    let (a_tx, b_rx) = mpsc::channel();
    let (b_tx, a_rx) = mpsc::channel();
    let mk = |tx, rx| MemoryChannel {
        tx,
        rx,
        counters: Arc::new(Counters::default()),
        timeout,
        max_frame,
    };
    (mk(a_tx, a_rx), mk(b_tx, b_rx))
}

impl MemoryChannel {
    fn push(&mut self, p: Payload) -> Result<()> {
        let len = p.byte_len();
        self.tx.send(p).map_err(|_| TransportError::PeerClosed {
            peer: PEER.to_string(),
        })?;
        self.counters.on_send(len);
        Ok(())
    }

    /// Takes the next message if its length is within the frame limit and `max` bytes. The
    /// message is moved from the peer, so nothing is allocated for a refused one (it is
    /// dropped: the channel stays at a message boundary).
    fn pull(&mut self, max: u64) -> Result<Payload> {
        let p = self.rx.recv_timeout(self.timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => TransportError::Timeout {
                peer: PEER.to_string(),
                after: self.timeout,
            },
            RecvTimeoutError::Disconnected => TransportError::PeerClosed {
                peer: PEER.to_string(),
            },
        })?;
        let len = p.byte_len() as u64;
        if len > self.max_frame {
            return Err(TransportError::FrameTooLarge {
                peer: PEER.to_string(),
                len,
                limit: self.max_frame,
            });
        }
        if len > max {
            return Err(TransportError::TooLong {
                peer: PEER.to_string(),
                len,
                max,
            });
        }
        self.counters.on_recv(p.byte_len());
        Ok(p)
    }

    /// The shared counters of this end.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

impl Channel for MemoryChannel {
    fn send_bytes(&mut self, data: &[u8]) -> Result<()> {
        self.push(Payload::Bytes(data.to_vec()))
    }

    fn recv_bytes_max(&mut self, max: usize) -> Result<Vec<u8>> {
        match self.pull(max as u64)? {
            Payload::Bytes(b) => Ok(b),
            Payload::Words(w) => Ok(bytemuck::cast_slice(&w).to_vec()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> ChannelStats {
        self.counters.snapshot()
    }

    fn peer(&self) -> &str {
        PEER
    }

    fn send_u64s(&mut self, data: &[u64]) -> Result<()> {
        self.push(Payload::Words(data.to_vec()))
    }

    fn recv_u64s_max(&mut self, max: usize) -> Result<Vec<u64>> {
        match self.pull((max as u64).saturating_mul(8))? {
            Payload::Words(w) => Ok(w),
            Payload::Bytes(b) => bytes_to_u64s(&b, PEER),
        }
    }

    fn max_frame(&self) -> u64 {
        self.max_frame
    }

    fn set_max_frame(&mut self, max: u64) {
        self.max_frame = max;
    }
}

/// Ends created by one side and not yet claimed by the other, keyed by (claiming side, id).
type Pending = HashMap<(usize, u32), MemoryChannel>;

/// One side of an in-memory session: sub-channel `id` of one side is connected to sub-channel
/// `id` of the other, created on first request by either side.
pub struct MemorySession {
    side: usize,
    pending: Arc<Mutex<Pending>>,
    opened: Mutex<Vec<(u32, Arc<Counters>)>>,
}

/// Two connected in-memory sessions.
pub fn memory_session_pair() -> (MemorySession, MemorySession) {
    let pending = Arc::new(Mutex::new(HashMap::new()));
    let mk = |side| MemorySession {
        side,
        pending: pending.clone(),
        opened: Mutex::new(Vec::new()),
    };
    (mk(0), mk(1))
}

fn poisoned() -> TransportError {
    TransportError::Config("in-memory session state poisoned by a panicked thread".into())
}

impl Session for MemorySession {
    type Chan = MemoryChannel;

    fn channel(&self, id: u32) -> Result<MemoryChannel> {
        let mut opened = self.opened.lock().map_err(|_| poisoned())?;
        if opened.iter().any(|(i, _)| *i == id) {
            return Err(TransportError::Config(format!(
                "sub-channel {id} opened twice"
            )));
        }
        let mut pending = self.pending.lock().map_err(|_| poisoned())?;
        let mine = match pending.remove(&(self.side, id)) {
            Some(c) => c,
            None => {
                let (a, b) = memory_pair();
                pending.insert((1 - self.side, id), b);
                a
            }
        };
        opened.push((id, mine.counters()));
        Ok(mine)
    }

    fn stats(&self) -> ChannelStats {
        self.stats_by_channel()
            .into_iter()
            .fold(ChannelStats::default(), |acc, (_, s)| acc + s)
    }

    fn stats_by_channel(&self) -> Vec<(u32, ChannelStats)> {
        match self.opened.lock() {
            Ok(o) => o.iter().map(|(i, c)| (*i, c.snapshot())).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn peer(&self) -> &str {
        PEER
    }
}
