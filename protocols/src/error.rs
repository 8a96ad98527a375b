//! The crate-wide error type.

use duet_fhe::FheError;
use duet_mpc::MpcError;
use duet_transport::TransportError;

/// Every failure a `duet-protocols` operator can report.
///
/// Nothing received from the peer can make an operator panic: bytes that do not decode, have the
/// wrong length or were made for other parameters come back as [`ProtocolError::Fhe`] (decoding)
/// or [`ProtocolError::Transport`] (framing), and a transport error ends the session.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The HE layer refused an input, a parameter set or bytes from the peer.
    #[error(transparent)]
    Fhe(#[from] FheError),
    /// The MPC layer failed.
    #[error(transparent)]
    Mpc(#[from] MpcError),
    /// The channel failed; the session is over.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A tensor does not have the shape the operator was called with.
    #[error("shape mismatch for {what}: expected {expected} values, got {got}")]
    Shape {
        /// Which operand.
        what: &'static str,
        /// Expected number of values.
        expected: usize,
        /// Number supplied.
        got: usize,
    },
    /// A dimension or option that the operator cannot run with.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The peer's message is well-formed but does not fit the protocol state.
    #[error("protocol violation by the peer: {0}")]
    Protocol(String),
    /// A worker thread panicked (a bug, not a peer error).
    #[error("a worker thread panicked")]
    WorkerPanicked,
}

/// Result alias for this crate.
pub type Result<T> = core::result::Result<T, ProtocolError>;
