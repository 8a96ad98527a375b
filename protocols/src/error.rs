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

impl ProtocolError {
    /// This error with the peer named, where it blames bytes the peer sent: a ciphertext or key
    /// that does not decode or was made for other parameters, a value outside the protocol's
    /// range, a message that does not fit the protocol state. Those are raised by the HE and
    /// MPC cores, below the channel that alone knows the peer's name, so the session names it
    /// here ([`TransportError::Malformed`], quoting this error). Other errors come back
    /// unchanged.
    pub fn naming_peer(self, peer: &str) -> Self {
        let blames_peer = matches!(
            self,
            ProtocolError::Fhe(
                FheError::Malformed { .. }
                    | FheError::ParameterMismatch { .. }
                    | FheError::UnsupportedVersion { .. }
            ) | ProtocolError::Mpc(MpcError::InvalidPeerData { .. })
                | ProtocolError::Protocol(_)
        );
        if blames_peer {
            ProtocolError::Transport(TransportError::Malformed {
                peer: peer.to_string(),
                what: self.to_string(),
            })
        } else {
            self
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = core::result::Result<T, ProtocolError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_blame_the_peers_bytes_name_it_and_others_stay() {
        let peer = "192.0.2.7:4433";
        let blaming = [
            ProtocolError::Fhe(FheError::Malformed {
                what: "output ciphertext",
                reason: "length 3 bytes, expected 4".into(),
            }),
            ProtocolError::Mpc(MpcError::InvalidPeerData {
                what: "ring-COT corrections".into(),
            }),
            ProtocolError::Protocol("a second reveal".into()),
        ];
        for e in blaming {
            let before = e.to_string();
            let after = e.naming_peer(peer);
            assert!(
                matches!(
                    &after,
                    ProtocolError::Transport(TransportError::Malformed { .. })
                ),
                "{after:?}"
            );
            let text = after.to_string();
            assert!(text.contains(peer) && text.contains(&before), "{text}");
        }
        let local = ProtocolError::Config("a local setting".into()).naming_peer(peer);
        assert!(matches!(local, ProtocolError::Config(_)), "{local:?}");
        assert!(!local.to_string().contains(peer));
    }
}
