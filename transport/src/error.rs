//! The transport's error type.

use std::time::Duration;

/// Everything that can go wrong while two parties talk.
///
/// Every variant that concerns the peer names it (`peer`: its address, or `"in-memory peer"`),
/// so that a session that ends names who it lost. A transport error is fatal to the session:
/// protocols report it upward and never retry silently.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The peer closed the channel or the connection in an orderly way.
    #[error("peer {peer} closed the connection")]
    PeerClosed {
        /// Who closed.
        peer: String,
    },
    /// The peer refused the connection and said why: it pins another certificate, it speaks
    /// another wire version, or it refused the TLS handshake. `reason` is the peer's text,
    /// filtered ([`crate::peer_text`]).
    #[error("peer {peer} refused the connection: {reason}")]
    Refused {
        /// Who refused.
        peer: String,
        /// The peer's reason (filtered: printable, at most [`crate::PEER_TEXT_MAX_CHARS`]).
        reason: String,
    },
    /// The peer ended the session before its orderly close and said why (it was interrupted,
    /// or its side failed). `reason` is the peer's text, filtered ([`crate::peer_text`]).
    #[error("peer {peer} ended the session: {reason}")]
    PeerEnded {
        /// Who ended it.
        peer: String,
        /// The peer's reason (filtered).
        reason: String,
    },
    /// This side closed the connection (an interrupt, or a closed listener) while a call was
    /// still using it.
    #[error("the connection to peer {peer} was closed by this side")]
    ClosedLocally {
        /// The peer of the closed connection.
        peer: String,
    },
    /// The connection broke (reset, refused, closed with an error code, transport error).
    #[error("connection to peer {peer} lost: {reason}")]
    ConnectionLost {
        /// Who we lost.
        peer: String,
        /// What the QUIC layer reported.
        reason: String,
    },
    /// Nothing arrived from the peer within the configured timeout.
    #[error("peer {peer} sent nothing for {after:?} (timeout)")]
    Timeout {
        /// Who went silent.
        peer: String,
        /// The timeout that expired.
        after: Duration,
    },
    /// A frame header announced more bytes than the configured limit; refused before allocating.
    #[error("peer {peer} announced a frame of {len} bytes, above the limit of {limit} bytes")]
    FrameTooLarge {
        /// Who sent it.
        peer: String,
        /// Announced length.
        len: u64,
        /// Configured limit.
        limit: u64,
    },
    /// A message longer than the receiver expects at this point of the protocol (the bound
    /// given to [`crate::Channel::recv_bytes_max`]); refused before allocating, and the
    /// message is skipped.
    #[error("peer {peer} sent a message of {len} bytes where at most {max} bytes were expected")]
    TooLong {
        /// Who sent it.
        peer: String,
        /// Announced length in bytes.
        len: u64,
        /// The receiver's bound in bytes.
        max: u64,
    },
    /// Bytes from the peer that do not decode as what the protocol expects.
    #[error("malformed message from peer {peer}: {what}")]
    Malformed {
        /// Who sent it.
        peer: String,
        /// What was wrong.
        what: String,
    },
    /// A message whose element count differs from what the protocol expects.
    #[error("peer {peer} sent {got} elements where {expected} were expected")]
    LengthMismatch {
        /// Who sent it.
        peer: String,
        /// Expected count.
        expected: usize,
        /// Received count.
        got: usize,
    },
    /// The peer's certificate does not match the pinned fingerprint.
    #[error("peer {peer} presented certificate fingerprint {seen}, expected {expected}")]
    FingerprintMismatch {
        /// Who connected.
        peer: String,
        /// The pinned fingerprint.
        expected: String,
        /// The fingerprint it presented.
        seen: String,
    },
    /// The peer speaks another version of the Duet wire protocol or has the same role.
    #[error("peer {peer} is incompatible: {reason}")]
    Incompatible {
        /// Who.
        peer: String,
        /// What differs.
        reason: String,
    },
    /// Local message could not be encoded (e.g. above the frame limit).
    #[error("cannot send message: {0}")]
    Encode(String),
    /// A bad local setting (address, certificate, state directory, key file).
    #[error("transport configuration: {0}")]
    Config(String),
    /// Local I/O (state directory, sockets).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Result alias of this crate.
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
