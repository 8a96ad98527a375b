//! The hybrid operators of a model walk behind one interface, [`Backend`], with two
//! interpreters: [`SecureBackend`] runs them between the two parties over a
//! [`Channel`](duet_transport::Channel), [`CostBackend`] predicts exactly what the secure one
//! will spend (bytes, flights and the operation counts that the [`MachineProfile`] turns into
//! seconds) without running anything.
//!
//! This is `duet_mpc`'s `Exec` idea (one activation description run by a share, a cost and a
//! bounds interpreter) one level up: code written once against [`Backend`] (the attention
//! operator [`mod@crate::attention`], the model walk of `duet_models::walk`) is the secure run and
//! its cost model at the same time, so the prediction cannot drift from the execution. Both
//! interpreters are stateful in the same way (the Ferret pools, the HE keys set up at first use,
//! the server-key embedding table sent once per session), so a session of many runs or decode
//! steps is predicted exactly as well.
//!
//! Values are row-major matrices (`rows x cols`): additive shares in [`SecureBackend`], their
//! shape and ring in [`CostBackend`]. Operators are recorded per node: the walk calls
//! [`Backend::begin`] before a node's operators and [`Backend::finish`] after them, and both
//! backends keep one [`NodeRecord`] per call, measured or predicted, with the same names.
//!
//! [`MachineProfile`]: crate::cost_model::MachineProfile

mod cost;
mod secure;

pub use cost::{CostBackend, Sym};
pub use secure::SecureBackend;

use crate::cost_model::Estimate;
use crate::matmul::{KvSpec, SharedShape};
use crate::nonlinear::norm::{NormKind, NormWeights};
use crate::nonlinear::token_choice::{LogitFormat, TokenChoice, TokenOutcome};
use crate::options::SecureOptions;
use crate::ProtocolError;
use crate::Result;
use duet_mpc::Ring;
use serde::{Deserialize, Serialize};

/// The operator kinds reports group traffic by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Private token embedding lookup plus positions.
    Embedding,
    /// Linear layers (HE or OT matmul with the server's weights) and their rescaling.
    Linear,
    /// `Q K^T` and `P V` (both operands shared), rotary positions and rescaling.
    AttentionMatmul,
    /// SoftMax (or the Gaussian kernel).
    Softmax,
    /// GELU, tanh-GELU, SiLU.
    Activation,
    /// LayerNorm / RMSNorm.
    Norm,
    /// Residual sums and gated products.
    Elementwise,
    /// Revealing the output (or the chosen token) to the client.
    Output,
}

impl OpKind {
    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Embedding => "embedding",
            OpKind::Linear => "linear",
            OpKind::AttentionMatmul => "attention-matmul",
            OpKind::Softmax => "softmax",
            OpKind::Activation => "activation",
            OpKind::Norm => "layernorm",
            OpKind::Elementwise => "elementwise",
            OpKind::Output => "output",
        }
    }
}

/// The element-wise activation of a feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActKind {
    /// `x Phi(x)` (the configured [`crate::nonlinear::activation::GeluApprox`]).
    Gelu,
    /// GPT-2's tanh form of GELU.
    GeluTanh,
    /// `x sigmoid(x)` (the configured SiLU approximation).
    Silu,
}

/// One recorded node: what a backend measured (secure) or predicted (cost).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node (`layer0.attn.softmax.scores`).
    pub name: String,
    /// Its kind.
    pub kind: Option<OpKind>,
    /// Nodes of this kind it counts as (attention's three parts count once).
    pub calls: u64,
    /// Payload bytes, both directions.
    pub bytes: u64,
    /// Message flights, both directions.
    pub flights: u64,
    /// Seconds (measured wall time, or the predicted compute).
    pub seconds: f64,
    /// The prediction's full estimate (cost backend only).
    #[serde(skip)]
    pub estimate: Option<Estimate>,
}

/// A linear layer's weights as the server holds them: `W` as `d x k` (inputs x outputs),
/// row-major, at `weight_frac` fractional bits, and the bias at `frac + weight_frac`.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantLinear {
    /// `d x k` weights.
    pub w: Vec<i64>,
    /// `k` biases, if any.
    pub bias: Option<Vec<i64>>,
}

/// Checks a public linear layer's shapes: `x` is `n x d`, `w` holds `d x k` weights and at
/// most `k` biases.
pub(crate) fn check_public_linear(
    cols: usize,
    w: Option<&QuantLinear>,
    d: usize,
    k: usize,
) -> Result<()> {
    if d == 0 || k == 0 {
        return Err(ProtocolError::Config(format!(
            "a public linear layer of {d} inputs and {k} outputs"
        )));
    }
    if cols != d {
        return Err(ProtocolError::Shape {
            what: "public linear layer input width",
            expected: d,
            got: cols,
        });
    }
    let Some(w) = w else {
        return Ok(());
    };
    if Some(w.w.len()) != d.checked_mul(k) {
        return Err(ProtocolError::Shape {
            what: "public linear layer weights",
            expected: d.saturating_mul(k),
            got: w.w.len(),
        });
    }
    if let Some(b) = &w.bias {
        if b.len() != k {
            return Err(ProtocolError::Shape {
                what: "public linear layer biases",
                expected: k,
                got: b.len(),
            });
        }
    }
    Ok(())
}

/// The client's private token ids, or (for the server and the cost model) only their count.
#[derive(Clone, Copy, Debug)]
pub enum Tokens<'a> {
    /// The client's ids.
    Ids(&'a [u32]),
    /// How many (all the other side may know).
    Count(usize),
}

impl Tokens<'_> {
    /// The number of tokens.
    pub fn len(&self) -> usize {
        match self {
            Tokens::Ids(i) => i.len(),
            Tokens::Count(n) => *n,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The operators a model walk is written against (see the module documentation).
///
/// Every method is called by both parties in the same order with the same public arguments;
/// arguments only one party has (`weights`, ids) are `Option`s that party fills. Methods that
/// run a protocol record nothing themselves: the caller brackets nodes with
/// [`Backend::begin`] / [`Backend::finish`].
pub trait Backend {
    /// A shared `rows x cols` matrix (or its stand-in).
    type T: Clone;

    /// The run's options.
    fn options(&self) -> &SecureOptions;
    /// The activation ring.
    fn ring(&self) -> Ring;
    /// Whether this party holds the weights (the walk loads and encodes them only then).
    fn holds_weights(&self) -> bool;
    /// `(rows, cols)` of a value.
    fn dims(&self, x: &Self::T) -> (usize, usize);

    /// Starts measuring a node.
    fn begin(&mut self);
    /// Records what was spent since [`Backend::begin`] as node `name` of `kind`.
    fn finish(&mut self, name: &str, kind: OpKind, calls: u64);
    /// Every node recorded so far.
    fn records(&self) -> &[NodeRecord];

    // ---- local operations (no communication)

    /// `a + b`.
    fn add(&mut self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// A `rows x cols` value whose element `i` is element `index(i)` of `x` (a public
    /// permutation, selection or repetition).
    fn gather(
        &mut self,
        x: &Self::T,
        rows: usize,
        cols: usize,
        index: &dyn Fn(usize) -> usize,
    ) -> Result<Self::T>;
    /// `[a; b]` (rows of `a`, then of `b`; same columns).
    fn concat_rows(&mut self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Element `i` of the result is `c0 x[j0] + c1 x[j1]` for `((j0, c0), (j1, c1)) = f(i)`,
    /// with public ring coefficients (rotary positions).
    fn combine_pairs(
        &mut self,
        x: &Self::T,
        f: &dyn Fn(usize) -> ((usize, u64), (usize, u64)),
    ) -> Result<Self::T>;
    /// `x + c` for a constant known to the server (encoded in the activation ring; `None` on
    /// the other party).
    fn add_server_constant(&mut self, x: &Self::T, c: Option<&[u64]>) -> Result<Self::T>;

    // ---- protocols
    /// Gaussian-kernel attention weights `exp(-scale ||q_i - k_j||^2)` (masked ones 0) from the
    /// queries `q` (`heads x n x d`), the keys per query head `k` (`heads x m x d`) and `q k^T`
    /// (`heads x n x m`), all at `frac` bits ([`crate::nonlinear::gaussian_attn`], its ring
    /// fitted by [`crate::nonlinear::gaussian_attn::GaussianAttnConfig::fit`] for inputs below
    /// `2^act_range_bits`), back in the activation ring. Returns the weights and their
    /// fractional bits.
    fn gaussian_kernel(
        &mut self,
        shape: crate::nonlinear::gaussian_attn::GaussShape,
        q: &Self::T,
        k: &Self::T,
        qk: &Self::T,
        scale: f64,
        mask: Option<&[bool]>,
    ) -> Result<(Self::T, u32)>;

    /// The private embedding lookup: rows of the server's `vocab x hidden` table (encoded at
    /// `frac`) for the client's ids.
    fn embed(
        &mut self,
        tokens: Tokens<'_>,
        table: Option<&[i64]>,
        vocab: usize,
        hidden: usize,
    ) -> Result<Self::T>;
    /// `x W + b`, rescaled to `frac` (HE or OT as the plan says for `node`).
    fn linear(
        &mut self,
        node: &str,
        x: &Self::T,
        w: Option<&QuantLinear>,
        d: usize,
        k: usize,
    ) -> Result<Self::T>;
    /// `x W` for a `d x k` matrix `W` known to the server only (ring elements, e.g. a public
    /// prefix's keys or values computed by the server in the clear): the product of
    /// [`Backend::linear`] (HE or OT as the plan says for `node`) without bias and without the
    /// rescaling, so the result carries the sum of both operands' fractional bits. Security and
    /// cost are [`Backend::linear`]'s less one truncation. `w` is `None` on the client and the
    /// cost backend.
    fn matmul_known(
        &mut self,
        node: &str,
        x: &Self::T,
        w: Option<&[i64]>,
        d: usize,
        k: usize,
    ) -> Result<Self::T>;
    /// `x W + b` for a public `W` (a base model's layer in LoRA mode: both parties hold it and
    /// pass it), rescaled to `frac`. Protocol: each party multiplies its own share by `W`
    /// locally (exact mod `2^l`: the shares' products sum to `x W`), the server adds the bias,
    /// then one truncation by `weight_frac` ([`Backend::trunc`]). Security: nothing is sent but
    /// the truncation's messages, so it reveals nothing beyond the truncation's. Cost: the
    /// truncation of `n x k` values (bytes, flights); `n d k` ring products per party (local
    /// compute, not in the cost model's time).
    /// `w` is `None` only on the cost backend (shapes are enough); the secure backend
    /// refuses `None`.
    fn linear_public(
        &mut self,
        node: &str,
        x: &Self::T,
        w: Option<&QuantLinear>,
        d: usize,
        k: usize,
    ) -> Result<Self::T>;
    /// Linear layers that read the same `x`: `x W_i + b_i` for every node, each rescaled to
    /// `frac` (`ws[i]` the server's weights, `d x ks[i]`). One fused product with split
    /// packing when the plan runs linear layers that way ([`crate::Plan::linear_orbits`]:
    /// one input encryption and output packing across the matrices, one truncation); else one
    /// [`Backend::linear`] per node.
    fn linear_many(
        &mut self,
        nodes: &[&str],
        x: &Self::T,
        ws: &[Option<&QuantLinear>],
        d: usize,
        ks: &[usize],
    ) -> Result<Vec<Self::T>>;
    /// `heads` products of two shared operands (`x`: `heads x n x d`, `y`: `heads x d x k`,
    /// flattened); the result is `(heads n) x k` with `2 frac` fractional bits.
    fn matmul_shared(&mut self, shape: SharedShape, x: &Self::T, y: &Self::T) -> Result<Self::T>;
    /// `x / 2^f` for signed `x` (exact to one ulp within the declared ranges).
    fn trunc(&mut self, x: &Self::T, f: u32) -> Result<Self::T>;
    /// SoftMax over rows of logits with `frac` fractional bits (masked entries get 0); the
    /// result is in the activation ring with the SoftMax's output fractional bits
    /// ([`crate::nonlinear::softmax::SoftmaxConfig`]'s `exp.frac`).
    fn softmax(&mut self, s: &Self::T, frac: u32, mask: Option<&[bool]>) -> Result<Self::T>;
    /// LayerNorm / RMSNorm over rows (the server's scales and shifts).
    fn norm(&mut self, kind: NormKind, x: &Self::T, w: Option<&NormWeights>) -> Result<Self::T>;
    /// An element-wise activation.
    fn activation(&mut self, kind: ActKind, x: &Self::T) -> Result<Self::T>;
    /// `a * b` element-wise, rescaled to `frac`.
    fn mul(&mut self, a: &Self::T, b: &Self::T) -> Result<Self::T>;
    /// Reveals `x` to the client: the client gets the decoded values (at `frac`), the
    /// server `None`.
    fn reveal(&mut self, x: &Self::T) -> Result<Option<Vec<f64>>>;
    /// Generation's scores against the encrypted KV cache `cache` (one per attention node,
    /// [`crate::HeKvCache`]; only when the plan's [`crate::KvCacheMode`] is `Encrypted`):
    /// appends the block's keys `k` (after rotary positions) and values `v` (`rows x kv_heads
    /// head_dim`) at position `start` (0 starts a new cache) and returns `q K^T` for the
    /// queries `q` (`heads x rows x head_dim`) as `(heads rows) x ctx`, `ctx = start + rows`,
    /// with `2 frac` fractional bits.
    fn kv_scores(
        &mut self,
        cache: &str,
        spec: KvSpec,
        start: usize,
        q: &Self::T,
        k: &Self::T,
        v: &Self::T,
    ) -> Result<Self::T>;
    /// `P V` against the values of the same cache for the probabilities `p` (`(heads rows) x
    /// ctx`, after [`Backend::kv_scores`]): `(heads rows) x head_dim`.
    fn kv_context(&mut self, cache: &str, p: &Self::T) -> Result<Self::T>;
    /// The private next-token choice on `rows x vocab` logits
    /// ([`crate::nonlinear::token_choice`]): the client gets the chosen ids (or, for
    /// [`TokenChoice::Logits`], the logits), the server [`TokenOutcome::Nothing`]. The client
    /// passes its full choice (with its seed), the server [`TokenChoice::public`].
    fn choose_token(&mut self, logits: &Self::T, choice: &TokenChoice) -> Result<TokenOutcome>;
}

/// The format of the logits a model walk produces: the activation ring at `frac` bits,
/// bounded like every linear output by the declared ranges (`|x| < 2^max(norm_in,
/// act_range)`).
pub fn logit_format(ring: Ring, opts: &SecureOptions) -> Result<LogitFormat> {
    LogitFormat::new(ring, opts.frac, opts.norm_in_bits.max(opts.act_range_bits))
}
