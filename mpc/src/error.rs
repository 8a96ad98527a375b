//! The MPC error type.

use duet_transport::TransportError;

/// Errors of the MPC layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MpcError {
    /// The channel failed; the session is over.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A ring width outside what is supported.
    #[error("invalid ring width {bits}: supported widths are {min}..={max} bits")]
    InvalidRing {
        /// Requested width.
        bits: u32,
        /// Smallest supported.
        min: u32,
        /// Largest supported.
        max: u32,
    },
    /// Fixed-point parameters that do not fit the ring.
    #[error("invalid fixed-point format: {frac} fractional bits in a {bits}-bit ring ({reason})")]
    InvalidFixedPoint {
        /// Ring width.
        bits: u32,
        /// Fractional bits.
        frac: u32,
        /// Why.
        reason: String,
    },
    /// Two operands whose shapes or rings differ, or data that does not fill its shape.
    #[error("shape mismatch: {what}")]
    ShapeMismatch {
        /// What differed.
        what: String,
    },
    /// A value from the peer outside the ring or protocol range.
    #[error("invalid value from peer: {what}")]
    InvalidPeerData {
        /// What was wrong.
        what: String,
    },
    /// A ring too narrow for the values a computation holds on its domain: run in it, the
    /// computation would return wrong values, so it refuses to start.
    #[error("Z_2^{bits} is too narrow for {what}: it needs Z_2^{need} or wider")]
    RingTooNarrow {
        /// Ring width.
        bits: u32,
        /// Narrowest width that works.
        need: u32,
        /// Which value does not fit.
        what: String,
    },
    /// A protocol was called with arguments it cannot accept.
    #[error("invalid argument: {what}")]
    InvalidArgument {
        /// What was wrong.
        what: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = MpcError> = std::result::Result<T, E>;
