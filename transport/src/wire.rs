//! Decoders of the bytes a peer sends, written once and used by the channels: frame headers
//! and payloads, sub-channel stream headers, and bincode control messages.
//!
//! Everything here treats its input as hostile. A frame's announced length is checked against
//! the channel's frame limit and the receiver's own bound *before* anything is allocated; a
//! control message is decoded with a bincode size limit, so a huge declared `Vec` length is an
//! error, not an allocation. The functions on byte slices ([`parse_frame`],
//! [`parse_u64_frame`], [`parse_stream_header`], [`decode_control`]) run exactly the code the
//! QUIC channel runs on its streams; they exist for tests, fuzzing and tools.

use crate::{Result, TransportError, FRAME_HEADER_BYTES, MAX_CONTROL_MESSAGE_BYTES};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Magic before each QUIC stream's sub-channel id.
pub(crate) const STREAM_MAGIC: [u8; 4] = *b"DUET";

/// Bytes of a stream header: [`STREAM_MAGIC`] then the sub-channel id (little-endian `u32`).
pub const STREAM_HEADER_BYTES: usize = 8;

/// Skipped frames are read through a buffer of this many bytes, never allocated whole.
const SKIP_CHUNK: usize = 64 << 10;

/// A frame's buffer is allocated whole up to this size; a larger one grows (doubling) as its
/// bytes arrive.
pub const EAGER_BYTES: usize = 4 << 20;

pub(crate) fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_CONTROL_MESSAGE_BYTES>()
}

/// A source of a peer's bytes: a QUIC stream, or a slice in tests.
pub(crate) trait FrameSource {
    /// Fills `buf` or fails (a source that ends early fails with an error naming the peer).
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<()>;
}

/// Why a frame was not delivered.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The frame was refused and skipped whole: the stream is still at a frame boundary.
    Skipped(TransportError),
    /// The stream is no longer usable (broken, or a frame above the channel's limit that is
    /// not read at all).
    Broken(TransportError),
}

impl FrameError {
    pub(crate) fn into_inner(self) -> TransportError {
        match self {
            FrameError::Skipped(e) | FrameError::Broken(e) => e,
        }
    }
}

/// Checks an announced frame length: above `limit` (the channel's frame limit) the stream is
/// abandoned; above `max` (the receiver's bound, in bytes) or not a whole number of `unit`-byte
/// words the frame is skipped. Returns the payload length when it is acceptable.
pub(crate) fn check_len(
    len: u64,
    limit: u64,
    max: u64,
    unit: usize,
    peer: &str,
) -> std::result::Result<usize, FrameError> {
    if len > limit {
        return Err(FrameError::Broken(TransportError::FrameTooLarge {
            peer: peer.to_string(),
            len,
            limit,
        }));
    }
    if len > max {
        return Err(FrameError::Skipped(TransportError::TooLong {
            peer: peer.to_string(),
            len,
            max,
        }));
    }
    if unit == 0 || len % unit as u64 != 0 {
        return Err(FrameError::Skipped(TransportError::Malformed {
            peer: peer.to_string(),
            what: format!("a frame of {len} bytes is not a whole number of {unit}-byte words"),
        }));
    }
    usize::try_from(len).map_err(|_| {
        FrameError::Broken(TransportError::FrameTooLarge {
            peer: peer.to_string(),
            len,
            limit,
        })
    })
}

/// Reads one frame of `T` words (`T` is `u8` or `u64`) from `src`: the header, the checks of
/// [`check_len`], then exactly the payload into a buffer of the announced size.
pub(crate) async fn read_frame<S: FrameSource, T: bytemuck::Pod>(
    src: &mut S,
    limit: u64,
    max_bytes: u64,
    peer: &str,
) -> std::result::Result<Vec<T>, FrameError> {
    let unit = std::mem::size_of::<T>();
    let mut h = [0u8; FRAME_HEADER_BYTES];
    src.read_exact(&mut h).await.map_err(FrameError::Broken)?;
    let announced = u64::from_le_bytes(h);
    let len = match check_len(announced, limit, max_bytes, unit, peer) {
        Ok(len) => len,
        Err(FrameError::Skipped(e)) => {
            skip(src, announced).await.map_err(FrameError::Broken)?;
            return Err(FrameError::Skipped(e));
        }
        Err(broken) => return Err(broken),
    };
    // The buffer grows with the bytes that actually arrive (doubling from EAGER_BYTES), so a
    // peer that announces a large frame and then stalls holds little of our memory.
    let total = len / unit.max(1);
    let mut step = total.min(EAGER_BYTES / unit.max(1)).max(1);
    let mut buf: Vec<T> = Vec::new();
    while buf.len() < total {
        let start = buf.len();
        buf.resize(start + step.min(total - start), T::zeroed());
        let fresh = buf.get_mut(start..).unwrap_or_default();
        src.read_exact(bytemuck::cast_slice_mut(fresh))
            .await
            .map_err(FrameError::Broken)?;
        step = buf.len();
    }
    Ok(buf)
}

/// Reads and drops `len` bytes through a small buffer.
async fn skip<S: FrameSource>(src: &mut S, mut len: u64) -> Result<()> {
    let mut chunk = vec![0u8; SKIP_CHUNK.min(usize::try_from(len).unwrap_or(SKIP_CHUNK))];
    while len > 0 {
        let n = usize::try_from(len).map_or(chunk.len(), |l| l.min(chunk.len()));
        let part = chunk.get_mut(..n).unwrap_or_default();
        src.read_exact(part).await?;
        len -= n as u64;
    }
    Ok(())
}

/// Decodes a control message: bincode 2 with a size limit of [`MAX_CONTROL_MESSAGE_BYTES`]
/// (a declared length above it is refused before allocating), and no trailing bytes.
pub fn decode_control<T: DeserializeOwned>(bytes: &[u8], peer: &str) -> Result<T> {
    let malformed = |what: String| TransportError::Malformed {
        peer: peer.to_string(),
        what,
    };
    let (msg, used) =
        bincode::serde::decode_from_slice::<T, _>(bytes, bincode_config()).map_err(|e| {
            // bincode's and serde's messages can quote the peer's bytes
            let text = crate::peer_text(e.to_string().as_bytes());
            malformed(format!("undecodable control message: {text}"))
        })?;
    if used != bytes.len() {
        return Err(malformed(format!(
            "{} trailing bytes after a control message",
            bytes.len() - used
        )));
    }
    Ok(msg)
}

/// The sub-channel id of a stream header, or `None` when the magic is wrong or the header is
/// short.
pub fn parse_stream_header(header: &[u8]) -> Option<u32> {
    let magic = header.get(..4)?;
    let id: [u8; 4] = header.get(4..STREAM_HEADER_BYTES)?.try_into().ok()?;
    (magic == STREAM_MAGIC).then(|| u32::from_le_bytes(id))
}

/// A stream header for sub-channel `id`.
pub(crate) fn stream_header(id: u32) -> [u8; STREAM_HEADER_BYTES] {
    let mut h = [0u8; STREAM_HEADER_BYTES];
    let (magic, rest) = h.split_at_mut(4);
    magic.copy_from_slice(&STREAM_MAGIC);
    rest.copy_from_slice(&id.to_le_bytes());
    h
}

/// A slice as a [`FrameSource`]; running out is the peer closing mid-frame.
struct SliceSource<'a> {
    rest: &'a [u8],
    peer: &'a str,
}

impl FrameSource for SliceSource<'_> {
    async fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        if self.rest.len() < buf.len() {
            self.rest = &[];
            return Err(TransportError::PeerClosed {
                peer: self.peer.to_string(),
            });
        }
        let (head, tail) = self.rest.split_at(buf.len());
        buf.copy_from_slice(head);
        self.rest = tail;
        Ok(())
    }
}

/// Runs a future that never waits (its source is a slice) to completion.
fn run_now<F: Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn parse<T: bytemuck::Pod>(
    bytes: &[u8],
    limit: u64,
    max_bytes: u64,
    peer: &str,
) -> Result<(Vec<T>, usize)> {
    let mut src = SliceSource { rest: bytes, peer };
    let out = run_now(read_frame::<_, T>(&mut src, limit, max_bytes, peer))
        .ok_or_else(|| TransportError::Config("a slice source waited".into()))?;
    let used = bytes.len() - src.rest.len();
    out.map(|v| (v, used)).map_err(FrameError::into_inner)
}

/// Parses one frame from the start of `bytes` as a channel with frame limit `limit` does on
/// `recv_bytes_max(max)`: returns the payload and the bytes used (header included). A frame
/// that ends early is [`TransportError::PeerClosed`].
pub fn parse_frame(bytes: &[u8], limit: u64, max: usize) -> Result<(Vec<u8>, usize)> {
    parse::<u8>(bytes, limit, max as u64, "slice")
}

/// [`parse_frame`] for a frame of `u64` words received with `recv_u64s_max(max_words)`.
pub fn parse_u64_frame(bytes: &[u8], limit: u64, max_words: usize) -> Result<(Vec<u64>, usize)> {
    parse::<u64>(bytes, limit, (max_words as u64).saturating_mul(8), "slice")
}
