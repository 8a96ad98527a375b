//! # duet-protocols
//!
//! Hybrid two-party operators of Duet. The client holds the private input, the server the
//! private weights; both are semi-honest.
//!
//! * Linear algebra under RLWE (coefficient encoding, [`duet_fhe`]): [`HeMatMul`] (`Y = X W + b`
//!   with `X` shared or client-held, `W` the server's), [`HeMatMulShared`] (both operands
//!   shared: attention), [`ServerKeyMatMul`] (weights encrypted once under the server's key),
//!   [`HeElementwiseMul`] (slot BFV), the private embedding lookup ([`PrivateEmbedding`],
//!   [`ServerKeyEmbedding`]).
//! * Non-linear operators on OT-based shares ([`nonlinear`]): GELU / SiLU / tanh-GELU,
//!   SoftMax, LayerNorm / RMSNorm, Gaussian-kernel attention, and the private next-token
//!   choice (greedy, sampling, logits).
//! * [`mod@attention`]: multi-head attention as one operator with a KV cache.
//! * [`backend`]: the [`Backend`] interface a model walk is written against, with a secure
//!   interpreter ([`SecureBackend`]) and an exact cost interpreter ([`CostBackend`]).
//! * [`ProtocolConfig`] presets (duet, iron, bolt, bumblebee, puma), [`SecureOptions`] and
//!   [`Plan`] (typed, serializable: both parties share them), the [`cost_model`].
//!
//! Every operator has an I/O-free core per party or a thin driver over a
//! [`duet_transport::Channel`]; its traffic is predicted exactly by a `cost` function, and
//! tests check measured bytes against it. Per-session key material is set up once
//! ([`HeClientSetup`], [`HeServerSetup`]) and reported apart from the online traffic.
//!
//! Security model: semi-honest client and server, 128-bit RLWE parameters, statistical
//! flooding of everything the server sends; each operator's module documents what each party
//! learns and its exact cost.
//!
//! ```
//! use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
//! use duet_protocols::*;
//! use duet_transport::run_two_party;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let params = RlweParameters::preset(Preset::N4096Q109, RingBits(32), WeightBound::MaxAbs(100))?;
//! let shape = MatmulShape::new(2, 3, 2);
//! // server: W = [[1, 2], [3, 4], [5, -6]], b = [10, 20], prepared once (offline)
//! let mut w = HeWeights::new(&params, 3, 2, vec![1, 2, 3, 4, 5, -6], Some(&[10, 20]))?;
//! w.prepare(2, LayoutPolicy::MinBytes, PrepareMode::Cache)?;
//! // the client holds all of X = [[1, 1, 1], [0, 2, 0]] (first layer)
//! let x = [1, 1, 1, 0, 2, 0];
//! let (server, client) = run_two_party(
//!     |mut ch| {
//!         let setup = HeServerSetup::run(&mut ch, &params)?;
//!         HeMatMul::run_server(&mut ch, &setup, &w, 2, None, &mut ChaCha20Rng::seed_from_u64(1))
//!     },
//!     |mut ch| {
//!         let mut rng = ChaCha20Rng::seed_from_u64(2);
//!         let setup = HeClientSetup::run(&mut ch, &params, &mut rng)?;
//!         HeMatMul::run_client(&mut ch, &setup, shape, LayoutPolicy::MinBytes, &x, &mut rng)
//!     },
//! );
//! let (r, y_c) = (server?, client?);
//! let y: Vec<u64> = y_c.iter().zip(&r).map(|(a, b)| a.wrapping_add(*b) & params.plain_mask()).collect();
//! let ring = |v: i64| (v as u64) & params.plain_mask();
//! assert_eq!(y, vec![19, 20, 16, 28].into_iter().map(ring).collect::<Vec<_>>());
//! # Ok::<(), ProtocolError>(())
//! ```

pub mod attention;
pub mod backend;
pub mod config;
pub mod cost_model;
pub mod elementwise;
mod error;
pub mod matmul;
pub mod nonlinear;
pub mod options;
pub mod plan;
pub mod prefix;

pub use attention::{attention, AttentionKernel, AttentionSpec, KvCache};
pub use backend::{
    ActKind, Backend, CostBackend, NodeRecord, OpKind, QuantLinear, SecureBackend, Sym, Tokens,
};
pub use config::{Preset, ProtocolConfig};
pub use cost_model::{Estimate, MachineProfile, Work};
/// The building blocks' public configuration types, re-exported for the model layer.
pub use duet_mpc::nonlinear::{CotBackend, NlConfig};
/// The ring of the shares.
pub use duet_mpc::Ring;
pub use elementwise::{HeElementwiseClient, HeElementwiseMul, HeMulClientSetup, HeMulServerSetup};
pub use error::{ProtocolError, Result};
pub use matmul::{
    linear_params, linear_params_with_terms, split_parts, HeLinear, HeLinearClient, HeLinearServer,
    LinearPlan, LinearWeights, PreparedLinear,
};
pub use matmul::{
    server_key_params, ServerKeyClient, ServerKeyCost, ServerKeyMatMul, ServerKeyModel,
    ServerKeyPlan, ServerKeyPolicy, ServerKeyServer, ServerKeySetup, ServerKeyWeights,
};
pub use matmul::{
    Cost, HeClientSetup, HeKvCache, HeMatMul, HeMatMulClient, HeMatMulServer, HeMatMulShared,
    HeMatMulSharedServer, HeServerSetup, HeWeights, KvCost, KvKeys, KvPolicy, KvSpec, KvStorage,
    KvWork, LayoutPolicy, MatmulPlan, MatmulShape, PrepareMode, SharedInputs, SharedShape,
    KV_MAX_CONTEXT,
};
pub use options::{differences, AdapterLayout, EmbeddingMode, SecureOptions, OPTIONS_VERSION};
pub use plan::{KvCacheMode, MulBackend, Plan};
pub use prefix::{PrefixKv, MAX_PREFIX, PREFIX_KV_SHIFT};
pub mod embedding;
pub use embedding::{
    EmbeddingServerKeys, EmbeddingTable, EncryptedEmbeddingTable, PrivateEmbedding,
    ServerKeyEmbedding,
};
