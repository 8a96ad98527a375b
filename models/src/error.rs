//! The models crate's error type.

use std::path::PathBuf;

/// What can go wrong loading or running a model. Errors name the file and the tensor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `config.json` is missing a field, has a bad value, or is not JSON.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An architecture Duet does not implement.
    #[error("{path}: unknown architecture {name:?} (supported: BERT, GPT-2, LLaMA)")]
    UnknownArchitecture {
        /// The config file.
        path: PathBuf,
        /// What it declared.
        name: String,
    },
    /// The safetensors file is truncated or its header is malformed.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A GGUF file that is truncated, malformed, or outside what Duet reads (names the fault).
    #[error("{path}: invalid GGUF file: {reason}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{path}: missing tensor {name:?}")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
    },
    /// A tensor with another shape than the config implies.
    #[error("{path}: tensor {name:?} has shape {got:?}, expected {expected:?}")]
    Shape {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// From the config.
        expected: Vec<usize>,
        /// In the file.
        got: Vec<usize>,
    },
    /// A tensor in a dtype Duet does not read.
    #[error("{path}: tensor {name:?} has dtype {dtype}; supported: F32, F16, BF16")]
    Dtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor.
        name: String,
        /// Its dtype.
        dtype: String,
    },
    /// Tokenizer loading or encoding failed.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Input the model cannot take (too long, token id out of range, empty).
    #[error("invalid input: {0}")]
    Input(String),
    /// A secure protocol step failed (the node is named; the cause may be the peer).
    #[error("secure execution failed at {node}: {source}")]
    Secure {
        /// The graph node (or `setup`, `handshake`, `output`).
        node: String,
        /// The protocol's error (transport errors name the peer).
        source: duet_protocols::ProtocolError,
    },
    /// A graph or weight source that [`crate::rotation::RotatedWeights`] cannot rotate
    /// (e.g. a LayerNorm reading the residual stream, a bias on a residual writer).
    #[error("rotation: {0}")]
    Rotation(String),
    /// A weight outside the fixed-point range the secure run was configured for.
    #[error("tensor {name:?}: value {value} outside the secure fixed-point range (|w| < {limit})")]
    WeightRange {
        /// The tensor.
        name: String,
        /// The offending value.
        value: f64,
        /// The bound.
        limit: f64,
    },
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
