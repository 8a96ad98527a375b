//! The [`Channel`] trait: a blocking, message-oriented, counted connection to the peer.

use crate::{ChannelStats, Result, TransportError};
use serde::{de::DeserializeOwned, Serialize};

/// Upper bound on a bincode-encoded control message (bulk data goes through
/// [`Channel::send_u64s`] / [`Channel::send_bytes`] instead).
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 16 << 20;

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CONTROL_MESSAGE_BYTES>()
}

/// A blocking, ordered, reliable message channel to the peer.
///
/// Implementations only provide whole-message byte I/O, `flush` and counters; the typed helpers
/// are default methods (as in swanky's `AbstractChannel`). Messages are framed: one
/// `send_bytes` is one `recv_bytes` on the other side. Protocol code is synchronous and may use
/// rayon; any error is fatal to the session and names the peer.
pub trait Channel: Send {
    /// Queues one message. It may be buffered until [`Channel::flush`] or the next receive.
    fn send_bytes(&mut self, data: &[u8]) -> Result<()>;

    /// Receives one whole message. Flushes pending sends first so that a request–response
    /// pattern never deadlocks.
    fn recv_bytes(&mut self) -> Result<Vec<u8>>;

    /// Pushes buffered messages to the peer.
    fn flush(&mut self) -> Result<()>;

    /// Counters of this channel endpoint.
    fn stats(&self) -> ChannelStats;

    /// How this channel names its peer in errors.
    fn peer(&self) -> &str;

    /// Sends a slice of `u64` as one message without copying it (little-endian bytes).
    fn send_u64s(&mut self, data: &[u64]) -> Result<()> {
        self.send_bytes(bytemuck::cast_slice(data))
    }

    /// Receives one message of `u64`s; fails if its length is not a multiple of 8.
    fn recv_u64s(&mut self) -> Result<Vec<u64>> {
        let bytes = self.recv_bytes()?;
        bytes_to_u64s(&bytes, self.peer())
    }

    /// Receives one message of exactly `n` `u64`s.
    fn recv_u64s_exact(&mut self, n: usize) -> Result<Vec<u64>> {
        let v = self.recv_u64s()?;
        if v.len() != n {
            return Err(TransportError::LengthMismatch {
                peer: self.peer().to_string(),
                expected: n,
                got: v.len(),
            });
        }
        Ok(v)
    }

    /// Sends a control message encoded with bincode 2 (serde).
    fn send_msg<T: Serialize>(&mut self, msg: &T) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(msg, bincode_config())
            .map_err(|e| TransportError::Encode(e.to_string()))?;
        self.send_bytes(&bytes)
    }

    /// Receives a control message; bytes that do not decode exactly are an error.
    fn recv_msg<T: DeserializeOwned>(&mut self) -> Result<T> {
        let bytes = self.recv_bytes()?;
        let malformed = |what: String| TransportError::Malformed {
            peer: self.peer().to_string(),
            what,
        };
        let (msg, used) = bincode::serde::decode_from_slice::<T, _>(&bytes, bincode_config())
            .map_err(|e| malformed(format!("undecodable control message: {e}")))?;
        if used != bytes.len() {
            return Err(malformed(format!(
                "{} trailing bytes after a control message",
                bytes.len() - used
            )));
        }
        Ok(msg)
    }

    /// Sends then receives a value of the same type: a simultaneous exchange.
    fn exchange_msg<T: Serialize + DeserializeOwned>(&mut self, msg: &T) -> Result<T> {
        self.send_msg(msg)?;
        self.flush()?;
        self.recv_msg()
    }
}

/// Reinterprets little-endian bytes as `u64`s (one copy into an aligned buffer).
pub(crate) fn bytes_to_u64s(bytes: &[u8], peer: &str) -> Result<Vec<u64>> {
    if bytes.len() % 8 != 0 {
        return Err(TransportError::Malformed {
            peer: peer.to_string(),
            what: format!("{} bytes is not a whole number of u64 words", bytes.len()),
        });
    }
    let mut out = vec![0u64; bytes.len() / 8];
    bytemuck::cast_slice_mut::<u64, u8>(&mut out).copy_from_slice(bytes);
    Ok(out)
}

/// Forwards every method (including the overridable bulk ones) to the pointee.
macro_rules! forward_channel {
    ($ty:ty) => {
        impl<C: Channel + ?Sized> Channel for $ty {
            fn send_bytes(&mut self, data: &[u8]) -> Result<()> {
                (**self).send_bytes(data)
            }
            fn recv_bytes(&mut self) -> Result<Vec<u8>> {
                (**self).recv_bytes()
            }
            fn flush(&mut self) -> Result<()> {
                (**self).flush()
            }
            fn stats(&self) -> ChannelStats {
                (**self).stats()
            }
            fn peer(&self) -> &str {
                (**self).peer()
            }
            fn send_u64s(&mut self, data: &[u64]) -> Result<()> {
                (**self).send_u64s(data)
            }
            fn recv_u64s(&mut self) -> Result<Vec<u64>> {
                (**self).recv_u64s()
            }
        }
    };
}

forward_channel!(&mut C);
forward_channel!(Box<C>);

/// A source of independent sub-channels to one peer (QUIC streams, or in-memory pairs).
///
/// Both parties ask for the same `id`s; sub-channel `id` of one side talks to sub-channel `id`
/// of the other. Each sub-channel is owned by one thread at a time, and different sub-channels
/// may be used from different threads at once so independent operators run in parallel.
pub trait Session: Send + Sync {
    /// The sub-channel type.
    type Chan: Channel + 'static;
    /// Opens sub-channel `id` (each id at most once per session and side).
    fn channel(&self, id: u32) -> Result<Self::Chan>;
    /// Traffic summed over every sub-channel opened so far.
    fn stats(&self) -> ChannelStats;
    /// Traffic of each sub-channel opened so far, by id.
    fn stats_by_channel(&self) -> Vec<(u32, ChannelStats)>;
    /// How the peer is named in errors.
    fn peer(&self) -> &str;
}
