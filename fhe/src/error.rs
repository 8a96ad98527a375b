//! The crate-wide error type.

use thiserror::Error;

/// Every failure `duet-fhe` can report.
///
/// Nothing that comes from outside the process (bytes from the peer, a file, a CLI flag) can make
/// this crate panic: it returns one of these variants instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FheError {
    /// A parameter was refused by the builder (insecure, unsupported or inconsistent).
    #[error("invalid parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Parameter name as spelled in the builder.
        name: &'static str,
        /// The refused value, rendered.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The parameters cannot guarantee exact decryption for the requested workload.
    #[error("noise budget exceeded: {reason}")]
    NoiseBudget {
        /// What does not fit, with the numbers.
        reason: String,
    },
    /// Bytes (or a structure built from them) are not a valid encoding.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which object was being decoded.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// An object was produced for different parameters than the ones used now.
    #[error("parameter mismatch: expected parameter id {expected:#018x}, found {found:#018x}")]
    ParameterMismatch {
        /// Id of the parameters in use.
        expected: u64,
        /// Id carried by the object.
        found: u64,
    },
    /// Unsupported serialization format version.
    #[error("unsupported format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version read.
        found: u8,
        /// Version this build understands.
        supported: u8,
    },
    /// A value or length supplied by the caller is out of range.
    #[error("{what} out of range: {value} (allowed: {allowed})")]
    OutOfRange {
        /// Which value.
        what: &'static str,
        /// The value, rendered.
        value: String,
        /// The allowed range, rendered.
        allowed: String,
    },
    /// The NTT backend refused a (degree, prime) pair.
    #[error("no NTT plan for degree {degree} and modulus {modulus}")]
    NttUnavailable {
        /// Ring degree.
        degree: usize,
        /// Prime modulus.
        modulus: u64,
    },
}

/// Result alias for this crate.
pub type Result<T> = core::result::Result<T, FheError>;

impl FheError {
    pub(crate) fn param(
        name: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self::InvalidParameter {
            name,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn malformed(what: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            reason: reason.into(),
        }
    }

    pub(crate) fn range(
        what: &'static str,
        value: impl ToString,
        allowed: impl Into<String>,
    ) -> Self {
        Self::OutOfRange {
            what,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}
