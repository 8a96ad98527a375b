//! `HeMatMul`: `Y = X W + b` from additive shares of `X` and the server's clear `W`, `b`, to
//! fresh additive shares of `Y`.
//!
//! # Protocol (semi-honest, RLWE with coefficient encoding, after [`super::HeClientSetup`])
//! The client holds `X_c`, the server `X_s`, `X = X_c + X_s` in `Z_{2^l}` (`n x d`); the server
//! holds `W` (`d x k`, signed integers with `|w| <=` the parameters' weight bound) and `b`
//! (`k`). With the block plan [`MatmulPlan`] (`n_b x d_b x k_b`, packing factor `D`):
//!
//! 1. Client -> server (one flight): one seeded ciphertext of `X_c` per (row block, inner block).
//! 2. Server: for each (row block, column block) `acc = sum_ib ct * w_poly`; merges `D` column
//!    blocks into one ciphertext (`D - 1` key switches); draws a uniform mask `R` (`n x k`) and
//!    finalizes each group with the plaintext `X_s W + b - R` at exactly the useful
//!    coefficients (re-randomization with the public key, modulus switching, 40-bit noise
//!    flooding). Server -> client (one flight): one output ciphertext per group.
//! 3. Client: decrypts `X_c W + X_s W + b - R = X W + b - R`, its share; the server's share is `R`.
//!
//! With the client holding all of `X` (first layer) the server's share is zero and its plaintext
//! product is skipped (`x_s = None`).
//!
//! # Security
//! The server sees only RLWE ciphertexts under the client's key (IND-CPA, 128-bit parameters),
//! so it learns nothing about `X_c`. The client learns `X W + b - R` with `R` uniform, i.e. a
//! uniform share; the ciphertexts it receives are re-randomized, carry only output coefficients
//! (never partial inner products), and their weight-dependent noise is flooded with 40-bit
//! statistical security. Both output shares are uniform in `Z_{2^l}`.
//!
//! # Cost
//! [`HeMatMul::cost`]: two flights; bytes = `ceil(n/n_b) ceil(d/d_b)` seeded ciphertexts plus
//! one output ciphertext per packing group with exactly its output values (exact, see
//! [`MatmulPlan::cost`]). Server compute: `n d k / (n_b d_b k_b)` polynomial products,
//! `D - 1` key switches per group; weight polynomials are prepared once per weight matrix
//! ([`HeWeights`], offline).

use std::sync::Arc;
use std::time::Instant;

use duet_fhe::{PlainWeights, RlweParameters};
use duet_transport::Channel;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

use super::engine::{
    decrypt_outputs, encrypt_inputs, fresh_seed, no_seed, parse_inputs, prepare_all, respond_group,
    seeds, stream_ordered, Operand,
};
use super::plan::{LayoutPolicy, MatmulPlan, MatmulShape};
use super::ring::{check_ring, matmul_wrapping, WeightSrc};
use super::setup::{HeClientSetup, HeServerSetup};
use super::Cost;
use crate::error::{ProtocolError, Result};

/// When [`HeWeights::prepare`] converts the weight blocks to the NTT domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareMode {
    /// Prepare every block now and keep it (`N L 8` bytes per block: 196 KB at `N = 8192`,
    /// three primes; 1.8 GB for a `768 x 768` matrix with `128 x 64 x 1` blocks).
    Cache,
    /// Keep only the raw weights and prepare each block during the online phase.
    OnTheFly,
    /// [`PrepareMode::Cache`] if the cache fits in `max_cache_bytes`, else
    /// [`PrepareMode::OnTheFly`].
    Auto {
        /// Memory budget of the cache.
        max_cache_bytes: u64,
    },
}

impl Default for PrepareMode {
    fn default() -> Self {
        PrepareMode::Auto {
            max_cache_bytes: 4 << 30,
        }
    }
}

/// The server's weight matrix `W` (`d x k`, signed) and bias `b` (`k`), with its weight
/// polynomials prepared once for a block plan (offline, cacheable across calls with the same
/// plan). Only the server ever holds this; nothing in it is sent. Preparation cost:
/// `ceil(d/d_b) ceil(k/k_b)` weight encodings (`L` forward NTTs each), memory `N L 8` bytes each
/// when cached.
#[derive(Debug)]
pub struct HeWeights {
    params: Arc<RlweParameters>,
    d: usize,
    k: usize,
    w: Vec<i64>,
    bias: Vec<u64>,
    policy: LayoutPolicy,
    plan: Option<MatmulPlan>,
    prepared: Vec<PlainWeights>,
    prepare_s: f64,
}

impl HeWeights {
    /// `w` row-major `d x k`, every `|w| <=` the parameters' weight bound; `bias` of length `k`
    /// (taken mod `2^l`) or `None` for zero. Nothing is prepared yet (see [`Self::prepare`]).
    pub fn new(
        params: &Arc<RlweParameters>,
        d: usize,
        k: usize,
        w: Vec<i64>,
        bias: Option<&[i64]>,
    ) -> Result<Self> {
        if w.len() != d * k || d == 0 || k == 0 {
            return Err(ProtocolError::Shape {
                what: "weights",
                expected: d * k,
                got: w.len(),
            });
        }
        let bound = params.max_weight_abs();
        if let Some(bad) = w.iter().find(|v| u128::from(v.unsigned_abs()) > bound) {
            return Err(ProtocolError::Config(format!(
                "weight {bad} exceeds the parameters' weight bound {bound}"
            )));
        }
        let mask = params.plain_mask();
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
        Ok(Self {
            params: Arc::clone(params),
            d,
            k,
            w,
            bias,
            policy: LayoutPolicy::MinBytes,
            plan: None,
            prepared: Vec::new(),
            prepare_s: 0.0,
        })
    }

    /// Offline: choose the plan for `n` rows under `policy` and (per `mode`) prepare all weight
    /// polynomials (parallel). Returns the preparation time in seconds.
    pub fn prepare(&mut self, n: usize, policy: LayoutPolicy, mode: PrepareMode) -> Result<f64> {
        let t = Instant::now();
        let plan = MatmulPlan::new(&self.params, MatmulShape::new(n, self.d, self.k), policy)?;
        let blocks = (plan.inner_blocks() * plan.col_blocks()) as u64;
        let per_block = (self.params.degree() * self.params.moduli().len() * 8) as u64;
        let cache = match mode {
            PrepareMode::Cache => true,
            PrepareMode::OnTheFly => false,
            PrepareMode::Auto { max_cache_bytes } => blocks * per_block <= max_cache_bytes,
        };
        self.prepared = if cache {
            prepare_all(&plan, WeightSrc::Signed(&self.w))?
        } else {
            Vec::new()
        };
        self.policy = policy;
        self.plan = Some(plan);
        self.prepare_s = t.elapsed().as_secs_f64();
        Ok(self.prepare_s)
    }

    /// Seconds the last [`Self::prepare`] took.
    pub fn prepare_seconds(&self) -> f64 {
        self.prepare_s
    }
    /// Whether prepared polynomials are cached.
    pub fn is_cached(&self) -> bool {
        !self.prepared.is_empty()
    }
    /// Memory held by the cache.
    pub fn cached_bytes(&self) -> u64 {
        (self.prepared.len() * self.params.degree() * self.params.moduli().len() * 8) as u64
    }
    /// `(d, k)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.d, self.k)
    }
    /// The layout policy the weights were prepared for.
    pub fn policy(&self) -> LayoutPolicy {
        self.policy
    }
}

/// The client's I/O-free core of one [`HeMatMul`] call: [`Self::encrypt`] produces the
/// client's only flight (`plan().input_count()` seeded ciphertexts of its share, IND-CPA under its
/// key), [`Self::decrypt`] turns the server's flight into the client's uniform output share.
/// Client compute: one encryption per input message, one decryption per output message.
#[derive(Debug)]
pub struct HeMatMulClient<'a> {
    setup: &'a HeClientSetup,
    plan: MatmulPlan,
}

impl<'a> HeMatMulClient<'a> {
    /// Plan `shape` under `policy` (the server must use the same policy).
    pub fn new(setup: &'a HeClientSetup, shape: MatmulShape, policy: LayoutPolicy) -> Result<Self> {
        let plan = MatmulPlan::new(&setup.params, shape, policy)?;
        Ok(Self { setup, plan })
    }
    /// The block plan.
    pub fn plan(&self) -> &MatmulPlan {
        &self.plan
    }
    /// Message out: the encrypted blocks of the client's share `x_c` (row-major `n x d` in
    /// `Z_{2^l}`), in order.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        x_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let s = self.plan.shape();
        check_ring(
            "client share",
            x_c,
            s.n * s.d,
            self.setup.params.plain_mask(),
        )?;
        encrypt_inputs(self.setup, &self.plan, x_c, rng)
    }
    /// Message in: the server's output messages; returns the client's share of `X W + b`
    /// (row-major `n x k`). Malformed bytes are an error.
    pub fn decrypt(&self, msgs: &[Vec<u8>]) -> Result<Vec<u64>> {
        decrypt_outputs(self.setup, &self.plan, msgs)
    }
}

/// The server's I/O-free core of one [`HeMatMul`] call: [`Self::mask_and_plain`] (local: mask
/// `R`, its own product), [`Self::absorb`] (message in), [`Self::respond`] (message out, one per
/// packing group, re-randomized and flooded with 40-bit statistical security so the client
/// learns only `X W + b - R`). Server compute per group: `D * ceil(d/d_b)` polynomial products,
/// `D - 1` key switches, one finalize.
#[derive(Debug)]
pub struct HeMatMulServer<'a> {
    setup: &'a HeServerSetup,
    weights: &'a HeWeights,
    plan: MatmulPlan,
    use_cache: bool,
}

impl<'a> HeMatMulServer<'a> {
    /// A call on `n` rows. Uses the weights' cache if it was prepared for this plan, else
    /// prepares blocks on the fly.
    pub fn new(setup: &'a HeServerSetup, weights: &'a HeWeights, n: usize) -> Result<Self> {
        if setup.params.id() != weights.params.id() {
            return Err(ProtocolError::Config(
                "weights were made for other parameters than the session".into(),
            ));
        }
        let shape = MatmulShape::new(n, weights.d, weights.k);
        let plan = match &weights.plan {
            Some(p) if p.shape() == shape => p.clone(),
            _ => MatmulPlan::new(&setup.params, shape, weights.policy)?,
        };
        let use_cache = weights.is_cached()
            && weights
                .plan
                .as_ref()
                .is_some_and(|p| p.layout() == plan.layout() && p.pack() == plan.pack());
        Ok(Self {
            setup,
            weights,
            plan,
            use_cache,
        })
    }
    /// The block plan.
    pub fn plan(&self) -> &MatmulPlan {
        &self.plan
    }
    /// Local step: draw the mask `R` (the server's output share, uniform `n x k`) and compute the
    /// plaintext `X_s W + b - R` (or `b - R` if the client holds all of `X`).
    /// Returns `(R, plaintext)`.
    pub fn mask_and_plain<R: RngCore + CryptoRng>(
        &self,
        x_s: Option<&[u64]>,
        rng: &mut R,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let s = self.plan.shape();
        let mask = self.setup.params.plain_mask();
        let mut r = vec![0u64; s.n * s.k];
        for v in &mut r {
            *v = rng.next_u64() & mask;
        }
        let xw = match x_s {
            Some(x) => {
                check_ring("server share", x, s.n * s.d, mask)?;
                let w: Vec<u64> = self.weights.w.iter().map(|&v| v as u64).collect();
                matmul_wrapping(x, &w, s.d, s.k)
            }
            None => vec![0u64; s.n * s.k],
        };
        let plain = xw
            .iter()
            .zip(&r)
            .enumerate()
            .map(|(idx, (&p, &m))| {
                let b = self.weights.bias.get(idx % s.k).copied().unwrap_or(0);
                p.wrapping_add(b).wrapping_sub(m) & mask
            })
            .collect();
        Ok((r, plain))
    }
    /// Message in: parse and expand the client's input messages.
    pub fn absorb(&self, msgs: &[Vec<u8>]) -> Result<Vec<duet_fhe::Ciphertext>> {
        parse_inputs(&self.plan, msgs)
    }
    /// Message out: output message `o` (`0..plan.output_count()`), using `plain` from
    /// [`Self::mask_and_plain`] and a fresh `seed` for re-randomization and flooding.
    pub fn respond(
        &self,
        cts: &[duet_fhe::Ciphertext],
        plain: &[u64],
        o: usize,
        seed: [u8; 32],
    ) -> Result<Vec<u8>> {
        let operand = if self.use_cache {
            Operand::Prepared(&self.weights.prepared)
        } else {
            Operand::Raw(WeightSrc::Signed(&self.weights.w))
        };
        respond_group(self.setup, &self.plan, cts, operand, plain, o, seed)
    }
}

/// `Y = X W + b` with HE, ending in additive shares. See the module documentation
/// (`he_matmul.rs`) for the protocol, its security and its cost.
#[derive(Clone, Copy, Debug)]
pub struct HeMatMul;

impl HeMatMul {
    /// Exact online traffic of one call (setup excluded: [`HeClientSetup::setup_cost`]).
    pub fn cost(
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        policy: LayoutPolicy,
    ) -> Result<Cost> {
        Ok(MatmulPlan::new(params, shape, policy)?.cost())
    }

    /// Client driver: sends the encrypted blocks of `x_c` (its share, or all of `X`), receives
    /// the results, returns its share of `X W + b` (row-major `n x k`).
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeClientSetup,
        shape: MatmulShape,
        policy: LayoutPolicy,
        x_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let core = HeMatMulClient::new(setup, shape, policy)?;
        for m in core.encrypt(x_c, rng)? {
            ch.send_bytes(&m)?;
        }
        ch.flush()?;
        let mut msgs = Vec::with_capacity(core.plan.output_count());
        let max = super::max_ciphertext_bytes(&setup.params);
        for _ in 0..core.plan.output_count() {
            msgs.push(ch.recv_bytes_max(max)?);
        }
        core.decrypt(&msgs)
    }

    /// Server driver: receives the client's blocks, answers them (packing groups in parallel,
    /// sent in order as they complete, overlapping compute and transfer), returns its share `R`.
    /// `x_s = None` when the client holds all of `X`.
    pub fn run_server<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeServerSetup,
        weights: &HeWeights,
        n: usize,
        x_s: Option<&[u64]>,
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let core = HeMatMulServer::new(setup, weights, n)?;
        let group_seeds = seeds(rng, core.plan.output_count());
        let mut local_rng = ChaCha20Rng::from_seed(fresh_seed(rng));
        // the plaintext product overlaps with receiving the client's ciphertexts
        let (local, msgs) = std::thread::scope(|s| {
            let local = s.spawn(|| core.mask_and_plain(x_s, &mut local_rng));
            let mut msgs = Vec::with_capacity(core.plan.input_count());
            let recv = (|| -> Result<()> {
                let len = core.plan.input_message_len();
                for _ in 0..core.plan.input_count() {
                    msgs.push(ch.recv_bytes_max(len)?);
                }
                Ok(())
            })();
            let local = local.join().map_err(|_| ProtocolError::WorkerPanicked);
            (local, recv.map(|()| msgs))
        });
        let (r, plain) = local??;
        let cts = core.absorb(&msgs?)?;
        stream_ordered(
            core.plan.output_count(),
            |o| {
                let seed = group_seeds.get(o).copied().ok_or_else(no_seed)?;
                core.respond(&cts, &plain, o, seed)
            },
            |_, bytes| Ok(ch.send_bytes(&bytes)?),
        )?;
        ch.flush()?;
        Ok(r)
    }
}
