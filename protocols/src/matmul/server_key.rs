//! `ServerKeyMatMul`: `Y = X W + b` with the weights encrypted once under the **server's** key
//! (Nimbus-style, "Nimbus: Secure and Efficient Two-Party Inference for Transformers",
//! NeurIPS'24), ending in fresh additive shares. Online, only output ciphertexts travel.
//!
//! # Protocol (semi-honest; RLWE, coefficient encoding; the roles of [`super::HeMatMul`] swapped)
//! The client holds `X_c`, the server `X_s` (`X = X_c + X_s` in `Z_{2^l}`, `n x d`), or the
//! client holds all of `X` (`X_s = 0`); the server holds `W` (`d x k`, any `i64`, used mod
//! `2^l`) and `b` (`k`). A [`ServerKeyPlan`] fixes Cheetah blocks `n_b x d_b x k_b`
//! ([`duet_fhe::MatmulLayout`]: `X` in the input layout, `W` in the weight layout) and a
//! packing factor `D`.
//!
//! * **Model setup (cached, server -> client, once per model and server key):** the server
//!   generates `sk_S`, sends its public key and (packing parameters) its Galois keys, and one
//!   seeded symmetric encryption `Enc_S(W_poly[ib][cb])` (half size: seed + `b`) per weight
//!   block. The client expands them once (NTT domain) and keeps them ([`ServerKeyModel`]).
//! * **Online (one flight, client -> server):** the client draws its output share `R`
//!   (uniform `n x k`). For every row block it prepares each plaintext block `X_c[rb][ib]`
//!   once (NTT, [`duet_fhe::PlainWeights::from_ring_sparse`]), accumulates
//!   `acc[cb] = sum_ib Enc_S(W[ib][cb]) * X_c[rb][ib]`, packs `D` column blocks
//!   ([`duet_fhe::MacAccumulator::pack`] with the server's Galois keys), and finalizes with the
//!   plaintext `-R` at exactly the output coefficients: re-randomization with the server's
//!   public key, extraction, modulus switching and noise flooding. It sends one output
//!   ciphertext per (row block, packing group).
//! * **Server:** decrypts `X_c W - R` and outputs `Y_s = X_c W - R + X_s W + b`; the client
//!   outputs `Y_c = R`. `Y_c + Y_s = X W + b`.
//!
//! # Security
//! The client sees only RLWE ciphertexts and public/Galois keys under the server's key
//! (IND-CPA at the parameters' 128-bit table row; circular security for the Galois keys, as
//! in every packing scheme): nothing about `W` (nor `b`, which never leaves the server).
//! The server decrypts `X_c W - R` with `R` uniform and fresh, i.e. a uniform value. What it
//! could learn beyond the message is in the returned ciphertext's randomness: the `a` part is
//! `sum a_j x_j + u pk_a + e_2` with the client's fresh ternary `u`, pseudorandom under RLWE
//! (the server knows every `a_j`, so without re-randomization it could solve for `X_c`); the
//! decryption noise contains `sum_j e_j x_j` (the server knows its own `e_j`), the encoding
//! roundings times `X_c`, the packing key-switch noise and the re-randomization noise. The
//! parameters are built with [`WeightBound::Uniform`] (`|x| <= 2^(l-1)` for the client's
//! share, the plaintext multiplier here) and `T` = the nonzero share coefficients per output
//! (`min(n_b, n) d`, checked by [`ServerKeyPlan`] and by the accumulator), so
//! [`duet_fhe::noise`] bounds all of it by `B_hide` and the flooding `B_f = 2^39 B_hide`
//! gives `2^-40` statistical distance per returned coefficient from a distribution that does
//! not depend on `X_c` (see `duet-fhe`'s `server_key.rs`, whose test checks it). Only output
//! coefficients are returned (partial inner products of `X_c` are never sent).
//!
//! # Cost
//! [`ServerKeyMatMul::cost`] (exact, checked against measured traffic in the tests):
//! * online: one client flight, `output_count()` output ciphertexts of
//!   `14 + ceil((m b_bits + N a_bits) / 8)` bytes (`m` values each; dense after packing:
//!   `(b_bits + a_bits) / 8` bytes per output element, 15.75 B at `l = 37`);
//! * setup (per session): nothing;
//! * cached (per model, server -> client): public key, Galois keys (packing parameters),
//!   `ceil(d/d_b) ceil(k/k_b)` seeded ciphertexts.
//!
//! Client compute: `ceil(n/n_b) ceil(d/d_b) ceil(k/k_b)` polynomial products,
//! `ceil(n/n_b) ceil(d/d_b)` share preparations (`L` NTTs each), `D - 1` key switches and one
//! finalize per output ciphertext. Client memory for the model: `2 N L 8` bytes per weight
//! block ([`ServerKeyModel::memory_bytes`]). Server compute: one decryption per output
//! ciphertext and the plaintext product `X_s W`.

use std::sync::Arc;

use duet_fhe::{
    Ciphertext, GaloisKeys, MacAccumulator, MacTerms, MatmulLayout, OutputCiphertext, PlainWeights,
    Preset, PublicKey, RingBits, RlweParameters, RlweParametersBuilder, SecretKey,
    SeededCiphertext, WeightBound,
};
use duet_transport::Channel;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rayon::prelude::*;

use super::engine::seeds;
use super::plan::MatmulShape;
use super::ring::{check_ring, matmul_wrapping};
use super::Cost;
use crate::error::{ProtocolError, Result};

/// Client compute model used to rank layouts (microseconds, one core of the development
/// machine, `N = 8192`, three 50-bit primes; see `protocols/NOTES.md`): one polynomial product.
pub const EST_PRODUCT_US: f64 = 54.0;
/// One share preparation ([`PlainWeights::from_ring_sparse`]: `L` forward NTTs).
pub const EST_PREPARE_US: f64 = 110.0;
/// One key switch of packing.
pub const EST_KEY_SWITCH_US: f64 = 3200.0;
/// One finalize + serialize (client) plus parse + decrypt (server), per output ciphertext.
pub const EST_OUTPUT_US: f64 = 2200.0;

/// Online bytes may exceed the fewest possible by this factor when [`ServerKeyPolicy::Fastest`]
/// trades them for compute.
const BYTE_SLACK: f64 = 1.05;

/// How [`ServerKeyPlan::new`] picks the block shape (part of the public configuration: both
/// parties must use the same policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ServerKeyPolicy {
    /// Fewest online bytes; ties broken by the client compute estimate.
    #[default]
    MinBytes,
    /// Lowest client compute estimate (`EST_*` constants) among layouts whose online bytes are
    /// within 5% of the fewest and whose encrypted weights (cached bytes) fit
    /// `max_cached_bytes`.
    Fastest {
        /// Budget for the encrypted weights of this matrix (bytes on the wire).
        max_cached_bytes: u64,
    },
}

/// Parameters for the server-key direction: `preset` at plaintext width `l`, with the client's
/// share as the (uniform) plaintext multiplier and `mac_terms` nonzero share coefficients per
/// output (must cover `min(n_b, n) d` of the plans used with them).
pub fn server_key_params(
    preset: Preset,
    l: RingBits,
    mac_terms: MacTerms,
) -> Result<Arc<RlweParameters>> {
    Ok(RlweParametersBuilder::from_preset(preset)
        .ring_bits(l)
        .weight_bound(WeightBound::Uniform)
        .mac_terms(mac_terms)
        .build()?)
}

/// Traffic of one [`ServerKeyMatMul`], split as the report schema does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerKeyCost {
    /// Online: the client's output ciphertexts (one flight).
    pub online: Cost,
    /// Per-session setup: none (all key material is the server's and cached).
    pub setup: Cost,
    /// Reusable across sessions (server -> client): keys plus encrypted weights.
    pub cached: Cost,
    /// Of `cached`: the server's public and Galois keys.
    pub cached_key_bytes: u64,
    /// Of `cached`: the encrypted weight blocks.
    pub cached_weight_bytes: u64,
    /// Client memory holding the expanded encrypted weights.
    pub client_model_memory: u64,
    /// Share preparations (NTTs of plaintext blocks) on the client.
    pub prepares: u64,
}

/// A validated block plan of one `n x d x k` server-key product.
///
/// Blocks are `n_b x d_b x k_b` ([`MatmulLayout`]); a packing group merges `pack_rows`
/// consecutive row blocks times `pack_cols` consecutive column blocks (`pack = pack_rows
/// pack_cols`, a power of two dividing `d_b`) into one output ciphertext, so the output is dense
/// even when `k / k_b` is small: accumulator `r = rr pack_cols + cc` of a group is row block
/// `rr`, column block `cc` of the group.
#[derive(Clone, Debug)]
pub struct ServerKeyPlan {
    params: Arc<RlweParameters>,
    shape: MatmulShape,
    layout: MatmulLayout,
    pack_rows: usize,
    pack_cols: usize,
    output_bytes: u64,
}

impl ServerKeyPlan {
    /// Choose the block shape and packing groups for `shape` under `policy`.
    pub fn new(
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        policy: ServerKeyPolicy,
    ) -> Result<Self> {
        check_shape(shape)?;
        let nn = params.degree();
        let mut all = Vec::new();
        for n_b in 1..=shape.n.min(nn) {
            let max_db = shape.d.min(nn / n_b);
            let pow2 = (0..usize::BITS)
                .map(|e| 1usize << e)
                .take_while(|&v| v <= max_db);
            let whole = (shape.d <= max_db && !shape.d.is_power_of_two()).then_some(shape.d);
            for d_b in pow2.chain(whole) {
                let k_b = (nn / (n_b * d_b)).min(shape.k);
                if k_b == 0 {
                    continue;
                }
                let layout = MatmulLayout::new(params, n_b, d_b, k_b)?;
                let rbs = shape.n.div_ceil(n_b).next_power_of_two();
                let cbs = shape.k.div_ceil(k_b).next_power_of_two();
                let max_pack = layout.pack_factor(params);
                let packs = (0..usize::BITS)
                    .map(|e| 1usize << e)
                    .take_while(|&v| v <= max_pack);
                for pack in packs {
                    let splits = (0..usize::BITS)
                        .map(|e| 1usize << e)
                        .take_while(|&v| v <= pack);
                    for pc in splits {
                        let pr = pack / pc;
                        if pc > cbs || pr > rbs {
                            continue; // only padding would fill the group
                        }
                        if let Ok(plan) = Self::with_layout(params, shape, layout, pr, pc) {
                            all.push(plan);
                        }
                    }
                }
            }
        }
        let min_bytes = all
            .iter()
            .map(|p| p.output_bytes)
            .min()
            .ok_or_else(|| no_layout(params, shape))?;
        let key = |p: &Self, first: f64, second: f64| (first, second, p.cached_weight_bytes());
        let best = match policy {
            ServerKeyPolicy::MinBytes => all.into_iter().min_by(|a, b| {
                key(a, a.output_bytes as f64, a.cached_weight_bytes() as f64)
                    .partial_cmp(&key(
                        b,
                        b.output_bytes as f64,
                        b.cached_weight_bytes() as f64,
                    ))
                    .unwrap_or(core::cmp::Ordering::Equal)
            }),
            ServerKeyPolicy::Fastest { max_cached_bytes } => all
                .into_iter()
                .filter(|p| {
                    p.output_bytes as f64 <= min_bytes as f64 * BYTE_SLACK
                        && p.cached_weight_bytes() <= max_cached_bytes
                })
                .min_by(|a, b| {
                    key(a, a.estimate_us(), a.output_bytes as f64)
                        .partial_cmp(&key(b, b.estimate_us(), b.output_bytes as f64))
                        .unwrap_or(core::cmp::Ordering::Equal)
                }),
        };
        best.ok_or_else(|| no_layout(params, shape))
    }

    /// A plan with a given block shape and packing groups of `pack_rows x pack_cols` blocks
    /// (`pack_rows pack_cols` a power of two dividing `d_b`, at most the parameters'
    /// `max_pack`); refused if `min(n_b, n) d` exceeds the parameters' `mac_terms`.
    pub fn with_layout(
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        layout: MatmulLayout,
        pack_rows: usize,
        pack_cols: usize,
    ) -> Result<Self> {
        check_shape(shape)?;
        let layout = MatmulLayout::new(params, layout.n_b, layout.d_b, layout.k_b)?;
        let pack = pack_rows.saturating_mul(pack_cols);
        if !pack_rows.is_power_of_two()
            || !pack_cols.is_power_of_two()
            || pack > params.max_pack()
            || layout.d_b % pack != 0
            || layout.k_b > shape.k
            || layout.d_b > shape.d
        {
            return Err(ProtocolError::Config(format!(
                "packing {pack_rows}x{pack_cols} for blocks {}x{}x{}: need powers of two with a product dividing d_b, <= {}, d_b <= d and k_b <= k",
                layout.n_b, layout.d_b, layout.k_b, params.max_pack()
            )));
        }
        let terms = layout.n_b.min(shape.n).saturating_mul(shape.d);
        if terms > params.mac_terms() {
            return Err(ProtocolError::Config(format!(
                "{terms} share coefficients per output exceed the parameters' budget {}",
                params.mac_terms()
            )));
        }
        let mut plan = Self {
            params: Arc::clone(params),
            shape,
            layout,
            pack_rows,
            pack_cols,
            output_bytes: 0,
        };
        // groups come in at most 2 x 2 sizes: full or last in rows, full or last in columns
        let (gr, gc) = (pack_rows * layout.n_b, pack_cols * layout.k_b);
        let mut bytes = 0u64;
        for (rows, rcount) in [
            (gr, shape.n / gr),
            (shape.n % gr, usize::from(shape.n % gr > 0)),
        ] {
            for (cols, ccount) in [
                (gc, shape.k / gc),
                (shape.k % gc, usize::from(shape.k % gc > 0)),
            ] {
                if rcount > 0 && ccount > 0 {
                    let len = OutputCiphertext::serialized_len(params, rows * cols) as u64;
                    bytes += (rcount * ccount) as u64 * len;
                }
            }
        }
        plan.output_bytes = bytes;
        Ok(plan)
    }

    /// The same blocks and groups for another row count (the cached weights do not depend on
    /// `n`).
    pub fn with_rows(&self, n: usize) -> Result<Self> {
        Self::with_layout(
            &self.params,
            MatmulShape::new(n, self.shape.d, self.shape.k),
            self.layout,
            self.pack_rows,
            self.pack_cols,
        )
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }
    /// The product's dimensions.
    pub fn shape(&self) -> MatmulShape {
        self.shape
    }
    /// The block shape.
    pub fn layout(&self) -> MatmulLayout {
        self.layout
    }
    /// Blocks merged per output ciphertext (`pack_rows * pack_cols`).
    pub fn pack(&self) -> usize {
        self.pack_rows * self.pack_cols
    }
    /// `(pack_rows, pack_cols)`: row blocks and column blocks per packing group.
    pub fn pack_grid(&self) -> (usize, usize) {
        (self.pack_rows, self.pack_cols)
    }

    fn row_blocks(&self) -> usize {
        self.shape.n.div_ceil(self.layout.n_b)
    }
    fn inner_blocks(&self) -> usize {
        self.shape.d.div_ceil(self.layout.d_b)
    }
    fn col_blocks(&self) -> usize {
        self.shape.k.div_ceil(self.layout.k_b)
    }
    /// Row super-blocks (groups of `pack_rows` row blocks): the client's unit of work.
    fn super_blocks(&self) -> usize {
        self.row_blocks().div_ceil(self.pack_rows)
    }
    fn col_groups(&self) -> usize {
        self.col_blocks().div_ceil(self.pack_cols)
    }
    /// Encrypted weight blocks (cached messages after the keys).
    pub fn weight_count(&self) -> usize {
        self.inner_blocks() * self.col_blocks()
    }
    /// Online messages (client -> server): one per packing group.
    pub fn output_count(&self) -> usize {
        self.super_blocks() * self.col_groups()
    }
    /// Bytes of the encrypted weights.
    pub fn cached_weight_bytes(&self) -> u64 {
        (self.weight_count() * SeededCiphertext::serialized_len(&self.params)) as u64
    }
    /// Products, preparations and key switches of the client.
    fn work(&self) -> (u64, u64, u64) {
        let rbs = self.row_blocks() as u64;
        let ibs = self.inner_blocks() as u64;
        let cbs = self.col_blocks() as u64;
        let ks = self.output_count() as u64 * (self.pack() as u64 - 1);
        (rbs * ibs * cbs, rbs * ibs, ks)
    }
    /// Estimated client + server compute (microseconds, one core) from the `EST_*` constants.
    pub fn estimate_us(&self) -> f64 {
        let (products, prepares, ks) = self.work();
        products as f64 * EST_PRODUCT_US
            + prepares as f64 * EST_PREPARE_US
            + ks as f64 * EST_KEY_SWITCH_US
            + self.output_count() as f64 * EST_OUTPUT_US
    }

    /// Exact traffic (see the module documentation).
    pub fn cost(&self) -> ServerKeyCost {
        let (products, prepares, ks) = self.work();
        let online = Cost {
            bytes: self.output_bytes,
            rounds: 1,
            client_to_server: self.output_bytes,
            server_to_client: 0,
            messages: self.output_count() as u64,
            key_switches: ks,
            products,
        };
        let key_bytes = ServerKeySetup::key_bytes(&self.params);
        let weight_bytes = self.cached_weight_bytes();
        let cached = Cost {
            bytes: key_bytes + weight_bytes,
            rounds: 1,
            client_to_server: 0,
            server_to_client: key_bytes + weight_bytes,
            messages: (ServerKeySetup::key_message_count(&self.params) + self.weight_count())
                as u64,
            key_switches: 0,
            products: 0,
        };
        let n = self.params.degree() as u64;
        let limbs = self.params.moduli().len() as u64;
        ServerKeyCost {
            online,
            setup: Cost::default(),
            cached,
            cached_key_bytes: key_bytes,
            cached_weight_bytes: weight_bytes,
            client_model_memory: self.weight_count() as u64 * 2 * n * limbs * 8,
            prepares,
        }
    }

    fn rows(&self, rb: usize) -> (usize, usize) {
        let s = rb * self.layout.n_b;
        (s, (s + self.layout.n_b).min(self.shape.n))
    }
    fn inner(&self, ib: usize) -> (usize, usize) {
        let s = ib * self.layout.d_b;
        (s, (s + self.layout.d_b).min(self.shape.d))
    }
    fn cols(&self, cb: usize) -> (usize, usize) {
        let s = cb * self.layout.k_b;
        (s, (s + self.layout.k_b).min(self.shape.k))
    }
    /// Coefficient slots `(pos, row, col)` of output message `o` (super-block major), in
    /// sending order.
    fn slots(&self, o: usize) -> Vec<(usize, usize, usize)> {
        let cgs = self.col_groups().max(1);
        let (sb, g) = (o / cgs, o % cgs);
        let pack = self.pack();
        let mut out = Vec::new();
        for rr in 0..self.pack_rows {
            let rb = sb * self.pack_rows + rr;
            if rb >= self.row_blocks() {
                break;
            }
            let (r0, r1) = self.rows(rb);
            for i in r0..r1 {
                for cc in 0..self.pack_cols {
                    let cb = g * self.pack_cols + cc;
                    if cb >= self.col_blocks() {
                        break;
                    }
                    let (c0, c1) = self.cols(cb);
                    for c in c0..c1 {
                        let r = rr * self.pack_cols + cc;
                        let pos = self.layout.packed_position(pack, r, i - r0, c - c0);
                        out.push((pos, i, c));
                    }
                }
            }
        }
        out
    }
}

fn check_shape(shape: MatmulShape) -> Result<()> {
    if shape.n == 0 || shape.d == 0 || shape.k == 0 {
        return Err(ProtocolError::Config(format!(
            "empty matrix product {shape}"
        )));
    }
    Ok(())
}

fn no_layout(params: &RlweParameters, shape: MatmulShape) -> ProtocolError {
    ProtocolError::Config(format!(
        "no server-key block layout for {shape} fits the policy under parameters {:#x} (mac_terms {})",
        params.id(),
        params.mac_terms()
    ))
}

fn missing() -> ProtocolError {
    ProtocolError::Config("block index outside the plan".into())
}

/// The server's key material (secret key, public key, Galois keys for packing parameters).
/// Its public part is cached by clients.
#[derive(Debug)]
pub struct ServerKeySetup {
    params: Arc<RlweParameters>,
    sk: SecretKey,
    pk: PublicKey,
    gk: Option<GaloisKeys>,
}

impl ServerKeySetup {
    /// Generate the server's keys (Galois keys only if the parameters support packing).
    pub fn generate<R: RngCore + CryptoRng>(
        params: &Arc<RlweParameters>,
        rng: &mut R,
    ) -> Result<Self> {
        let sk = SecretKey::generate(params, rng);
        let pk = sk.public_key(rng);
        let gk = if params.max_pack() > 1 {
            Some(sk.galois_keys(rng)?)
        } else {
            None
        };
        Ok(Self {
            params: Arc::clone(params),
            sk,
            pk,
            gk,
        })
    }
    /// The parameters.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }
    /// The key messages, in order: public key, then Galois keys if any.
    pub fn key_messages(&self) -> Vec<Vec<u8>> {
        let mut out = vec![self.pk.to_bytes()];
        if let Some(gk) = &self.gk {
            out.push(gk.to_bytes());
        }
        out
    }
    /// Number of key messages for `params`.
    pub fn key_message_count(params: &RlweParameters) -> usize {
        if params.max_pack() > 1 {
            2
        } else {
            1
        }
    }
    /// Bytes of the key messages for `params`.
    pub fn key_bytes(params: &RlweParameters) -> u64 {
        let mut b = PublicKey::serialized_len(params) as u64;
        if params.max_pack() > 1 {
            b += GaloisKeys::serialized_len(params) as u64;
        }
        b
    }
}

/// The server's clear weights `W` (`d x k`) and bias `b` with the plan the encrypted blocks are
/// laid out for. Nothing in it is sent except through [`Self::encrypt`].
#[derive(Debug)]
pub struct ServerKeyWeights {
    plan: ServerKeyPlan,
    w: Vec<i64>,
    bias: Vec<u64>,
}

impl ServerKeyWeights {
    /// `w` row-major `d x k` (any `i64`, used mod `2^l`), `bias` of length `k` or `None`;
    /// `plan` chosen for the expected row count (any `n` can be used online).
    pub fn new(plan: ServerKeyPlan, w: Vec<i64>, bias: Option<&[i64]>) -> Result<Self> {
        let MatmulShape { d, k, .. } = plan.shape();
        if w.len() != d * k {
            return Err(ProtocolError::Shape {
                what: "weights",
                expected: d * k,
                got: w.len(),
            });
        }
        let mask = plan.params.plain_mask();
        let bias = match bias {
            None => vec![0; k],
            Some(b) if b.len() == k => b.iter().map(|&v| (v as u64) & mask).collect(),
            Some(b) => {
                return Err(ProtocolError::Shape {
                    what: "bias",
                    expected: k,
                    got: b.len(),
                })
            }
        };
        Ok(Self { plan, w, bias })
    }

    /// The plan of the encrypted blocks.
    pub fn plan(&self) -> &ServerKeyPlan {
        &self.plan
    }

    /// The encrypted weight messages (cached by the client): one seeded ciphertext per
    /// (inner block, column block), inner block major. Cost: one encryption per block.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        setup: &ServerKeySetup,
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let plan = &self.plan;
        if setup.params.id() != plan.params.id() {
            return Err(ProtocolError::Config(
                "weights were planned for other parameters than the server key".into(),
            ));
        }
        let cbs = plan.col_blocks();
        let k = plan.shape.k;
        let d_b = plan.layout.d_b;
        let mask = plan.params.plain_mask();
        seeds(rng, plan.weight_count())
            .into_par_iter()
            .enumerate()
            .map(|(idx, seed)| {
                let (ib, cb) = (idx / cbs, idx % cbs);
                let (j0, j1) = plan.inner(ib);
                let (c0, c1) = plan.cols(cb);
                let mut poly = vec![0u64; (c1 - c0) * d_b];
                for (jj, j) in (j0..j1).enumerate() {
                    let row = self.w.get(j * k + c0..j * k + c1).ok_or_else(missing)?;
                    for (cc, &v) in row.iter().enumerate() {
                        *poly.get_mut(cc * d_b + d_b - 1 - jj).ok_or_else(missing)? =
                            (v as u64) & mask;
                    }
                }
                let ct = setup.sk.encrypt(&poly, &mut ChaCha20Rng::from_seed(seed))?;
                Ok(ct.to_bytes(&plan.params)?)
            })
            .collect()
    }
}

/// The client's cached copy of the server's model: its public and Galois keys and the
/// expanded encrypted weight blocks (NTT domain, `2 N L 8` bytes each).
#[derive(Debug)]
pub struct ServerKeyModel {
    plan: ServerKeyPlan,
    pk: PublicKey,
    gk: Option<GaloisKeys>,
    cts: Vec<Ciphertext>,
}

impl ServerKeyModel {
    /// Parse the cached messages (keys, then `plan.weight_count()` weight blocks). Wrong count,
    /// length, version or parameter id are errors.
    pub fn from_messages(plan: ServerKeyPlan, msgs: &[Vec<u8>]) -> Result<Self> {
        let params = Arc::clone(&plan.params);
        let nkeys = ServerKeySetup::key_message_count(&params);
        if msgs.len() != nkeys + plan.weight_count() {
            return Err(ProtocolError::Protocol(format!(
                "{} model messages, expected {}",
                msgs.len(),
                nkeys + plan.weight_count()
            )));
        }
        let (keys, weights) = msgs.split_at(nkeys);
        let pk = PublicKey::from_bytes(&params, keys.first().ok_or_else(missing)?)?;
        let gk = match keys.get(1) {
            Some(b) => Some(GaloisKeys::from_bytes(&params, b)?),
            None => None,
        };
        let cts = weights
            .par_iter()
            .map(|m| Ok(SeededCiphertext::from_bytes(&params, m)?.expand(&params)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { plan, pk, gk, cts })
    }

    /// The plan the weights are laid out for.
    pub fn plan(&self) -> &ServerKeyPlan {
        &self.plan
    }

    /// Memory held by the expanded encrypted weights.
    pub fn memory_bytes(&self) -> u64 {
        let p = &self.plan.params;
        (self.cts.len() * 2 * p.degree() * p.moduli().len() * 8) as u64
    }
}

/// The client's I/O-free core of one online call: [`Self::respond`] returns its output share
/// `R` and its only flight (the flooded, packed output ciphertexts).
#[derive(Debug)]
pub struct ServerKeyClient<'a> {
    model: &'a ServerKeyModel,
    plan: ServerKeyPlan,
}

impl<'a> ServerKeyClient<'a> {
    /// A call on `n` rows with the cached `model`.
    pub fn new(model: &'a ServerKeyModel, n: usize) -> Result<Self> {
        Ok(Self {
            model,
            plan: model.plan.with_rows(n)?,
        })
    }
    /// The plan of this call.
    pub fn plan(&self) -> &ServerKeyPlan {
        &self.plan
    }

    /// Message out: `(R, messages)` for the client's share `x_c` (row-major `n x d` in
    /// `Z_{2^l}`; all of `X` in the client-holds-X variant). `R` is the client's output share.
    pub fn respond<R: RngCore + CryptoRng>(
        &self,
        x_c: &[u64],
        rng: &mut R,
    ) -> Result<(Vec<u64>, Vec<Vec<u8>>)> {
        let plan = &self.plan;
        let params = &plan.params;
        let MatmulShape { n, d, k } = plan.shape;
        let mask = params.plain_mask();
        check_ring("client share", x_c, n * d, mask)?;
        let mut r = vec![0u64; n * k];
        for v in &mut r {
            *v = rng.next_u64() & mask;
        }
        let sb_seeds = seeds(rng, plan.super_blocks());
        let per_sb: Vec<Vec<Vec<u8>>> = sb_seeds
            .into_par_iter()
            .enumerate()
            .map(|(sb, seed)| self.super_block(x_c, &r, sb, seed))
            .collect::<Result<_>>()?;
        Ok((r, per_sb.into_iter().flatten().collect()))
    }

    /// `acc[rr][cb] = sum_ib Enc(W[ib][cb]) * X_c[rb0 + rr][ib]` for row blocks `rb0..rb1` and
    /// every column block. Each encrypted weight block is loaded once per super-block and
    /// applied to all its row blocks (the model is streamed from memory `super_blocks()` times,
    /// not `row_blocks()` times).
    fn accumulate(&self, x_c: &[u64], rb0: usize, rb1: usize) -> Result<Vec<Vec<MacAccumulator>>> {
        let plan = &self.plan;
        let params = &plan.params;
        let d = plan.shape.d;
        let lay = plan.layout;
        let cbs = plan.col_blocks();
        let mut accs: Vec<Vec<MacAccumulator>> = (rb0..rb1)
            .map(|_| (0..cbs).map(|_| MacAccumulator::new(params)).collect())
            .collect();
        for ib in 0..plan.inner_blocks() {
            let (j0, j1) = plan.inner(ib);
            let plains = (rb0..rb1)
                .map(|rb| {
                    let (r0, r1) = plan.rows(rb);
                    let mut entries = Vec::with_capacity((r1 - r0) * (j1 - j0));
                    for i in r0..r1 {
                        let row = x_c.get(i * d + j0..i * d + j1).ok_or_else(missing)?;
                        let base = (i - r0) * lay.d_b * lay.k_b;
                        entries.extend(row.iter().enumerate().map(|(jj, &v)| (base + jj, v)));
                    }
                    Ok(PlainWeights::from_ring_sparse(params, &entries)?)
                })
                .collect::<Result<Vec<_>>>()?;
            for cb in 0..cbs {
                let ct = self.model.cts.get(ib * cbs + cb).ok_or_else(missing)?;
                for (row, plain) in accs.iter_mut().zip(&plains) {
                    row.get_mut(cb).ok_or_else(missing)?.mul_acc(ct, plain)?;
                }
            }
        }
        Ok(accs)
    }

    /// All output messages of row super-block `sb` (its `pack_rows` row blocks).
    fn super_block(
        &self,
        x_c: &[u64],
        r: &[u64],
        sb: usize,
        seed: [u8; 32],
    ) -> Result<Vec<Vec<u8>>> {
        let plan = &self.plan;
        let params = &plan.params;
        let k = plan.shape.k;
        let (pr, pc) = (plan.pack_rows, plan.pack_cols);
        let rb0 = sb * pr;
        let rb1 = (rb0 + pr).min(plan.row_blocks());
        // accs[rr][cb]; rows past the end of the matrix are padding (empty accumulators)
        let mut accs: Vec<Vec<Option<MacAccumulator>>> = self
            .accumulate(x_c, rb0, rb1)?
            .into_iter()
            .map(|row| row.into_iter().map(Some).collect())
            .collect();
        let mut rng = ChaCha20Rng::from_seed(seed);
        let cgs = plan.col_groups();
        let mut out = Vec::with_capacity(cgs);
        for g in 0..cgs {
            let mut group = Vec::with_capacity(pr * pc);
            for rr in 0..pr {
                for cc in 0..pc {
                    let taken = accs
                        .get_mut(rr)
                        .and_then(|row| row.get_mut(g * pc + cc))
                        .and_then(Option::take);
                    group.push(taken.unwrap_or_else(|| MacAccumulator::new(params)));
                }
            }
            let packed = if group.len() == 1 {
                group.into_iter().next().ok_or_else(missing)?
            } else {
                let gk = self.model.gk.as_ref().ok_or_else(|| {
                    ProtocolError::Config("packing needs the server's Galois keys".into())
                })?;
                MacAccumulator::pack(group, plan.layout.d_b - 1, gk)?
            };
            let slots = plan.slots(sb * cgs + g);
            let top = slots.iter().map(|s| s.0 + 1).max().unwrap_or(0);
            let mut poly = vec![0u64; top];
            let mask = params.plain_mask();
            for &(pos, i, c) in &slots {
                let v = r.get(i * k + c).ok_or_else(missing)?;
                *poly.get_mut(pos).ok_or_else(missing)? = v.wrapping_neg() & mask;
            }
            let positions: Vec<usize> = slots.iter().map(|s| s.0).collect();
            let ct = packed.finalize(&self.model.pk, &poly, &positions, &mut rng)?;
            out.push(ct.to_bytes(params)?);
        }
        Ok(out)
    }
}

/// The server's I/O-free core of one online call: [`Self::local`] (its own product and bias),
/// [`Self::finish`] (message in: decrypt and add), giving its output share.
#[derive(Debug)]
pub struct ServerKeyServer<'a> {
    setup: &'a ServerKeySetup,
    weights: &'a ServerKeyWeights,
    plan: ServerKeyPlan,
}

impl<'a> ServerKeyServer<'a> {
    /// A call on `n` rows.
    pub fn new(setup: &'a ServerKeySetup, weights: &'a ServerKeyWeights, n: usize) -> Result<Self> {
        if setup.params.id() != weights.plan.params.id() {
            return Err(ProtocolError::Config(
                "weights were planned for other parameters than the server key".into(),
            ));
        }
        Ok(Self {
            setup,
            weights,
            plan: weights.plan.with_rows(n)?,
        })
    }
    /// The plan of this call.
    pub fn plan(&self) -> &ServerKeyPlan {
        &self.plan
    }

    /// Local step: `X_s W + b` (or `b` when the client holds all of `X`), row-major `n x k`.
    pub fn local(&self, x_s: Option<&[u64]>) -> Result<Vec<u64>> {
        let MatmulShape { n, d, k } = self.plan.shape;
        let mask = self.plan.params.plain_mask();
        let xw = match x_s {
            Some(x) => {
                check_ring("server share", x, n * d, mask)?;
                let w: Vec<u64> = self.weights.w.iter().map(|&v| v as u64).collect();
                matmul_wrapping(x, &w, d, k)
            }
            None => vec![0u64; n * k],
        };
        Ok(xw
            .iter()
            .enumerate()
            .map(|(idx, &p)| {
                let b = self.weights.bias.get(idx % k).copied().unwrap_or(0);
                p.wrapping_add(b) & mask
            })
            .collect())
    }

    /// Message in: decrypt the client's output messages and add `local` (from
    /// [`Self::local`]); returns the server's output share. Malformed bytes are an error.
    pub fn finish(&self, local: &[u64], msgs: &[Vec<u8>]) -> Result<Vec<u64>> {
        let plan = &self.plan;
        let params = &plan.params;
        let MatmulShape { n, k, .. } = plan.shape;
        if msgs.len() != plan.output_count() {
            return Err(ProtocolError::Protocol(format!(
                "{} output ciphertexts, expected {}",
                msgs.len(),
                plan.output_count()
            )));
        }
        if local.len() != n * k {
            return Err(ProtocolError::Shape {
                what: "server local product",
                expected: n * k,
                got: local.len(),
            });
        }
        let parts: Vec<Vec<(usize, u64)>> = msgs
            .par_iter()
            .enumerate()
            .map(|(o, m)| {
                let slots = plan.slots(o);
                let ct = OutputCiphertext::from_bytes(params, m, slots.len())?;
                let positions: Vec<usize> = slots.iter().map(|s| s.0).collect();
                let vals = self.setup.sk.decrypt_output(&ct, &positions)?;
                Ok(slots
                    .iter()
                    .zip(vals)
                    .map(|(&(_, i, c), v)| (i * k + c, v))
                    .collect())
            })
            .collect::<Result<_>>()?;
        let mask = params.plain_mask();
        let mut y = local.to_vec();
        for (idx, v) in parts.into_iter().flatten() {
            let dst = y.get_mut(idx).ok_or_else(missing)?;
            *dst = dst.wrapping_add(v) & mask;
        }
        Ok(y)
    }
}

/// `Y = X W + b` with the weights encrypted under the server's key. See the module
/// documentation (`server_key.rs`) for the protocol, its security and its cost.
#[derive(Clone, Copy, Debug)]
pub struct ServerKeyMatMul;

impl ServerKeyMatMul {
    /// Exact traffic of one call (online, setup and cached apart).
    pub fn cost(
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        policy: ServerKeyPolicy,
    ) -> Result<ServerKeyCost> {
        Ok(ServerKeyPlan::new(params, shape, policy)?.cost())
    }

    /// Server driver of the cached phase: sends its keys and encrypted weights (flushed).
    pub fn send_model<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &ServerKeySetup,
        weights: &ServerKeyWeights,
        rng: &mut R,
    ) -> Result<()> {
        for m in setup.key_messages() {
            ch.send_bytes(&m)?;
        }
        for m in weights.encrypt(setup, rng)? {
            ch.send_bytes(&m)?;
        }
        ch.flush()?;
        Ok(())
    }

    /// Client driver of the cached phase: receives and expands the model for `plan` (derived by
    /// the client from the public configuration, e.g. [`ServerKeyPlan::new`]).
    pub fn recv_model<C: Channel>(ch: &mut C, plan: ServerKeyPlan) -> Result<ServerKeyModel> {
        let count = ServerKeySetup::key_message_count(&plan.params) + plan.weight_count();
        let mut msgs = Vec::with_capacity(count);
        // keys (a public key, Galois keys) then seeded ciphertexts
        let max =
            super::max_ciphertext_bytes(&plan.params).max(GaloisKeys::serialized_len(&plan.params));
        for _ in 0..count {
            msgs.push(ch.recv_bytes_max(max)?);
        }
        ServerKeyModel::from_messages(plan, &msgs)
    }

    /// Client driver: sends its output ciphertexts for `x_c` (`n x d`), returns its share `R`.
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        model: &ServerKeyModel,
        n: usize,
        x_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let core = ServerKeyClient::new(model, n)?;
        let (r, msgs) = core.respond(x_c, rng)?;
        for m in msgs {
            ch.send_bytes(&m)?;
        }
        ch.flush()?;
        Ok(r)
    }

    /// Server driver: computes `X_s W + b` while the client's messages arrive, then decrypts;
    /// returns its share. `x_s = None` when the client holds all of `X`.
    pub fn run_server<C: Channel>(
        ch: &mut C,
        setup: &ServerKeySetup,
        weights: &ServerKeyWeights,
        n: usize,
        x_s: Option<&[u64]>,
    ) -> Result<Vec<u64>> {
        let core = ServerKeyServer::new(setup, weights, n)?;
        let count = core.plan.output_count();
        let (local, msgs) = std::thread::scope(|s| {
            let local = s.spawn(|| core.local(x_s));
            let mut msgs = Vec::with_capacity(count);
            let max = super::max_ciphertext_bytes(&setup.params);
            let recv = (|| -> Result<()> {
                for _ in 0..count {
                    msgs.push(ch.recv_bytes_max(max)?);
                }
                Ok(())
            })();
            let local = local.join().map_err(|_| ProtocolError::WorkerPanicked);
            (local, recv.map(|()| msgs))
        });
        core.finish(&local??, &msgs?)
    }
}
