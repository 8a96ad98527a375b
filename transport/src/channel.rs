//! The [`Channel`] trait: a blocking, message-oriented, counted connection to the peer.

use crate::wire::{bincode_config, decode_control};
use crate::{ChannelStats, Result, TransportError};
use serde::{de::DeserializeOwned, Serialize};

/// Upper bound on a bincode-encoded control message (bulk data goes through
/// [`Channel::send_u64s`] / [`Channel::send_bytes`] instead). [`Channel::recv_msg`] refuses a
/// longer frame before reading it, and decodes with this bincode size limit, so no declared
/// length inside a message can make the receiver allocate more.
pub const MAX_CONTROL_MESSAGE_BYTES: usize = 16 << 20;

/// A blocking, ordered, reliable message channel to the peer.
///
/// Implementations provide whole-message byte I/O with a receive bound, `flush`, counters and
/// the frame limit; the typed helpers are default methods (as in swanky's `AbstractChannel`).
/// Messages are framed: one `send_bytes` is one receive on the other side. Protocol code is
/// synchronous and may use rayon; any error is fatal to the session and names the peer.
///
/// **Bounded receives.** A peer decides how long its messages are. Every receive is bounded
/// twice before anything is allocated: by the channel's frame limit ([`Channel::max_frame`],
/// set per channel by the session) and by the receiver's own bound, which protocol code should
/// give whenever it knows the size it expects: [`Channel::recv_bytes_max`] /
/// [`Channel::recv_bytes_exact`] / [`Channel::recv_u64s_max`] / [`Channel::recv_u64s_exact`].
/// The unbounded [`Channel::recv_bytes`] / [`Channel::recv_u64s`] are bounded by the frame
/// limit only.
pub trait Channel: Send {
    /// Queues one message. It may be buffered until [`Channel::flush`] or the next receive.
    fn send_bytes(&mut self, data: &[u8]) -> Result<()>;

    /// Receives one whole message of at most `max` bytes. Flushes pending sends first so that
    /// a request–response pattern never deadlocks. The announced length is checked before
    /// anything is allocated: above `max` it is [`TransportError::TooLong`] (the message is
    /// skipped), above the channel's frame limit [`TransportError::FrameTooLarge`] (the
    /// channel is then unusable).
    fn recv_bytes_max(&mut self, max: usize) -> Result<Vec<u8>>;

    /// Receives one whole message, bounded only by the channel's frame limit. Prefer
    /// [`Channel::recv_bytes_max`] where the protocol knows the size it expects.
    fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_bytes_max(usize::MAX)
    }

    /// Receives one message of exactly `n` bytes ([`TransportError::LengthMismatch`]
    /// otherwise; a longer one is refused before allocating).
    fn recv_bytes_exact(&mut self, n: usize) -> Result<Vec<u8>> {
        let v = match self.recv_bytes_max(n) {
            Err(TransportError::TooLong { peer, len, .. }) => {
                return Err(TransportError::LengthMismatch {
                    peer,
                    expected: n,
                    got: usize::try_from(len).unwrap_or(usize::MAX),
                })
            }
            other => other?,
        };
        if v.len() != n {
            return Err(TransportError::LengthMismatch {
                peer: self.peer().to_string(),
                expected: n,
                got: v.len(),
            });
        }
        Ok(v)
    }

    /// Pushes buffered messages to the peer.
    fn flush(&mut self) -> Result<()>;

    /// Counters of this channel endpoint.
    fn stats(&self) -> ChannelStats;

    /// How this channel names its peer in errors.
    fn peer(&self) -> &str;

    /// The largest message payload this channel accepts, in bytes.
    fn max_frame(&self) -> u64;

    /// Sets the largest message payload this channel accepts from now on (a session that
    /// knows its shapes lowers it; see [`crate::DEFAULT_MAX_FRAME_BYTES`]).
    fn set_max_frame(&mut self, max: u64);

    /// Sends a slice of `u64` as one message without copying it (little-endian bytes).
    fn send_u64s(&mut self, data: &[u64]) -> Result<()> {
        self.send_bytes(bytemuck::cast_slice(data))
    }

    /// Receives one message of at most `max` `u64`s; fails if its length is not a multiple
    /// of 8. Checked before allocating, as [`Channel::recv_bytes_max`].
    fn recv_u64s_max(&mut self, max: usize) -> Result<Vec<u64>> {
        let bytes = self.recv_bytes_max(max.saturating_mul(8))?;
        bytes_to_u64s(&bytes, self.peer())
    }

    /// Receives one message of `u64`s, bounded only by the channel's frame limit. Prefer
    /// [`Channel::recv_u64s_exact`] / [`Channel::recv_u64s_max`].
    fn recv_u64s(&mut self) -> Result<Vec<u64>> {
        self.recv_u64s_max(usize::MAX)
    }

    /// Receives one message of exactly `n` `u64`s ([`TransportError::LengthMismatch`]
    /// otherwise; a longer one is refused before allocating).
    fn recv_u64s_exact(&mut self, n: usize) -> Result<Vec<u64>> {
        let v = match self.recv_u64s_max(n) {
            Err(TransportError::TooLong { peer, len, .. }) => {
                return Err(TransportError::LengthMismatch {
                    peer,
                    expected: n,
                    got: usize::try_from(len / 8).unwrap_or(usize::MAX),
                })
            }
            other => other?,
        };
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

    /// Receives a control message: at most [`MAX_CONTROL_MESSAGE_BYTES`], decoded with that
    /// bincode size limit; bytes that do not decode exactly are an error.
    fn recv_msg<T: DeserializeOwned>(&mut self) -> Result<T> {
        let bytes = self.recv_bytes_max(MAX_CONTROL_MESSAGE_BYTES)?;
        decode_control(&bytes, self.peer())
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
            fn recv_bytes_max(&mut self, max: usize) -> Result<Vec<u8>> {
                (**self).recv_bytes_max(max)
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
            fn recv_u64s_max(&mut self, max: usize) -> Result<Vec<u64>> {
                (**self).recv_u64s_max(max)
            }
            fn recv_u64s(&mut self) -> Result<Vec<u64>> {
                (**self).recv_u64s()
            }
            fn max_frame(&self) -> u64 {
                (**self).max_frame()
            }
            fn set_max_frame(&mut self, max: u64) {
                (**self).set_max_frame(max)
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
