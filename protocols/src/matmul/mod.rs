//! HE matrix products that end in additive shares.
//!
//! * [`HeMatMul`] (`he_matmul.rs`): `X W + b`, `X` shared or client-held, `W`, `b` server-held.
//! * [`HeMatMulShared`] (`he_matmul_shared.rs`): `X Y`, both shared, batched over heads.
//! * [`HeKvCache`] (`kv_cache.rs`): attention products of generation steps against a KV cache
//!   kept encrypted at the peer.
//! * [`HeLinear`] (`linear.rs`, plan in `linear_plan.rs`): `X W_i + b_i` for matrices sharing
//!   `X`, fused into one product, with split packing (few key switches): the linear layers of
//!   generation.
//! * [`MatmulPlan`] (`plan.rs`): block shapes, packing groups and the exact byte [`Cost`].
//! * [`HeClientSetup`] / [`HeServerSetup`] (`setup.rs`): per-session keys.

mod engine;
mod he_matmul;
mod he_matmul_shared;
mod kv_cache;
mod linear;
mod linear_plan;
mod plan;
mod ring;
mod server_key;
mod setup;

pub use he_matmul::{HeMatMul, HeMatMulClient, HeMatMulServer, HeWeights, PrepareMode};
pub use he_matmul_shared::{HeMatMulShared, HeMatMulSharedServer, SharedInputs, SharedShape};
pub use kv_cache::{
    HeKvCache, KvCost, KvKeys, KvPolicy, KvSpec, KvStorage, KvWork, KV_MAX_CONTEXT,
};
pub use linear::{
    linear_params, linear_params_with_terms, split_parts, HeLinear, HeLinearClient, HeLinearServer,
    LinearWeights, PreparedLinear, LINEAR_MAX_PACK, LINEAR_ORBIT_LEVELS,
};
pub use linear_plan::{
    LinearPlan, EST_ENCODE_US, EST_INPUT_US, EST_ORBIT_KS_US, EST_OUTPUT_US, EST_PACK_KS_US,
    EST_PRODUCT_US,
};
pub use plan::{LayoutPolicy, MatmulPlan, MatmulShape};
pub use server_key::{
    server_key_params, ServerKeyClient, ServerKeyCost, ServerKeyMatMul, ServerKeyModel,
    ServerKeyPlan, ServerKeyPolicy, ServerKeyServer, ServerKeySetup, ServerKeyWeights,
};
pub use setup::{HeClientSetup, HeServerSetup};

/// The longest single ciphertext message an HE protocol over `params` receives: an output
/// ciphertext with all `N` coefficients extracted, a seeded ciphertext or a public key,
/// whichever is longest. Receives of ciphertexts are bounded by it (or by their exact size)
/// before anything is allocated; Galois keys are received with their own exact size.
pub fn max_ciphertext_bytes(params: &duet_fhe::RlweParameters) -> usize {
    duet_fhe::OutputCiphertext::serialized_len(params, params.degree())
        .max(duet_fhe::SeededCiphertext::serialized_len(params))
        .max(duet_fhe::PublicKey::serialized_len(params))
}

/// Communication of one protocol run, exactly as the transport counts it (message payload bytes;
/// each message additionally costs a fixed 8-byte frame header on the wire, not included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cost {
    /// Payload bytes in both directions.
    pub bytes: u64,
    /// One-way message flights (both directions).
    pub rounds: u64,
    /// Client-to-server payload bytes.
    pub client_to_server: u64,
    /// Server-to-client payload bytes.
    pub server_to_client: u64,
    /// Messages in both directions.
    pub messages: u64,
    /// Key switches the server spends on packing (the dominant server compute).
    pub key_switches: u64,
    /// Plaintext-ciphertext polynomial products the server computes.
    pub products: u64,
}

impl core::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            bytes: self.bytes + o.bytes,
            rounds: self.rounds.max(o.rounds),
            client_to_server: self.client_to_server + o.client_to_server,
            server_to_client: self.server_to_client + o.server_to_client,
            messages: self.messages + o.messages,
            key_switches: self.key_switches + o.key_switches,
            products: self.products + o.products,
        }
    }
}
