//! The secure executor: runs a [`Graph`] between a client (token ids) and a server (weights)
//! with the `duet-protocols` operators, every activation staying additively shared between
//! nodes; only the client learns the last hidden state.
//!
//! # Protocol (semi-honest client and server)
//! 1. **Handshake.** The client sends its public view (model config, sequence length, options);
//!    the server refuses a mismatch with an error naming both values. The sequence length is
//!    public, as in every system of this kind.
//! 2. **Setup.** HE keys of the client for the linear layers (weights bounded by
//!    `2^weight_bits`) and for the products of two shared operands (attention), both
//!    `N = 8192`, `log q = 200` (the 128-bit row of the HomomorphicEncryption.org table, see
//!    `duet_fhe::Preset::N8192Q200Pack`); the OT session ([`NlSession`], Ferret silent OT by
//!    default). Reported apart as `setup`.
//! 3. **Nodes in order** ([`exec`]): the private embedding lookup (HE: the client's one-hot
//!    rows times the server's table, [`duet_protocols::embedding`]); positions and token types
//!    added to the server's share (public indices); linear layers by [`HeMatMul`] (client-key,
//!    weights prepared on the fly so the server's memory stays at one matrix); the attention
//!    products by [`HeMatMulShared`]; GELU / SiLU / tanh-GELU, SoftMax, LayerNorm / RMSNorm as
//!    configured in [`ProtocolConfig`]; residual sums locally; rotary positions locally (public
//!    angles) plus one truncation.
//! 4. **Output.** The server sends its share of the last hidden state (and, for GPT-2 and
//!    LLaMA, of the last position's logits: one more HE linear layer with the head's weights)
//!    to the client only.
//!
//! Fixed point: activations in `Z_2^l` (`l = 37`) with `f = 12` fractional bits, weights with
//! `f_w = 12`; every rescaling is a truncation of a value offset to be non-negative
//! ([`exec`]`::trunc_signed`: one COT over `Z_2^f` per element, exact to one ulp for
//! `|x| < 2^{l-2}` encoded). The attention scale `1/sqrt(d)` is folded into the query weights
//! by the server.
//!
//! # Security
//! Each step is one of the protocols named above, each secure against a semi-honest peer
//! (their modules state the proofs' assumptions); composition is sequential, and every value
//! passed between steps is a uniformly random additive share. The server learns the sequence
//! length; the client learns the output and the public model shape.
//!
//! [`HeMatMul`]: duet_protocols::HeMatMul
//! [`HeMatMulShared`]: duet_protocols::HeMatMulShared
//! [`NlSession`]: duet_mpc::nonlinear::NlSession

mod exec;
pub mod plan;
pub mod predict;

use crate::graph::{Graph, Op};
use crate::reference::{Matrix, WeightSource};
use crate::{ModelError, Result};
use duet_protocols::ProtocolConfig;
use duet_transport::{Channel, Role};
use serde::Serialize;

pub use exec::OpKind;
pub use plan::{MulBackend, Plan};
pub use predict::{predict, Prediction};

/// How the private embedding lookup runs (both hide the ids from the server and the table
/// from the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EmbeddingMode {
    /// Client-key HE on the one-hot ids ([`duet_protocols::PrivateEmbedding`]): no cached
    /// state, the server touches the whole table per token.
    #[default]
    HeLookup,
    /// The table encrypted once under the server's key and sent to the client (reported as
    /// `cached`), then one small ciphertext per token ([`duet_protocols::ServerKeyEmbedding`]).
    ServerKey,
}

/// Public fixed-point and range choices of a secure run (both parties the same).
#[derive(Clone, Debug, PartialEq)]
pub struct SecureOptions {
    /// Protocol choices (preset): OT backend and approximation variants.
    pub protocol: ProtocolConfig,
    /// Per-operator layouts and backends.
    pub plan: Plan,
    /// The embedding lookup.
    pub embedding: EmbeddingMode,
    /// Ring width `l` of the activations and linear layers.
    pub ring_bits: u32,
    /// Fractional bits `f` of the activations.
    pub frac: u32,
    /// Fractional bits of the weights.
    pub weight_frac: u32,
    /// Weights (and embedding tables) satisfy `|w| < 2^weight_bits` as reals; larger ones
    /// are refused with an error naming the tensor.
    pub weight_bits: u32,
    /// Activation inputs (GELU, SiLU) satisfy `|x| < 2^act_range_bits`.
    pub act_range_bits: u32,
    /// Normalisation inputs satisfy `|x| < 2^norm_in_bits`.
    pub norm_in_bits: u32,
    /// Norm scales satisfy `|gamma| < 2^gamma_bits`.
    pub gamma_bits: u32,
    /// Fractional bits of the attention logits fed to SoftMax.
    pub score_frac: u32,
}

impl Default for SecureOptions {
    fn default() -> Self {
        Self::new(ProtocolConfig::default())
    }
}

impl SecureOptions {
    /// The defaults for `protocol`: `l = 37`, `f = f_w = 12`, weights below 16, activation
    /// inputs below 64, normalisation inputs below 512 (all-MiniLM-L6-v2 reaches 221), norm
    /// scales below 8 (MiniLM's largest is 1.55; a wider bound needs a wider LayerNorm ring),
    /// logits with 10 fractional bits.
    pub fn new(protocol: ProtocolConfig) -> Self {
        Self {
            plan: Plan::for_preset(protocol.preset),
            protocol,
            embedding: EmbeddingMode::HeLookup,
            ring_bits: 37,
            frac: 12,
            weight_frac: 12,
            weight_bits: 4,
            act_range_bits: 6,
            norm_in_bits: 9,
            gamma_bits: 3,
            score_frac: 10,
        }
    }

    /// The narrowest ring the declared ranges allow:
    /// `frac + weight_frac + max(norm_in_bits, act_range_bits) + 2`.
    ///
    /// Values held at `frac + weight_frac` fractional bits before a rescaling (every linear
    /// layer's output, the attention scores before their truncation) must satisfy
    /// `|x| < 2^max(norm_in_bits, act_range_bits)`: the ranges declared for the activations'
    /// and norms' inputs, which most of those values feed, taken as the bound of all of them
    /// (queries, keys, values, scores and logits have no range of their own). The rescaling
    /// ([`exec`]`::trunc_signed`) is exact for `|x| < 2^(l-2)` encoded: one bit for the sign
    /// and one for its non-negative offset. A narrower ring is refused. The defaults give 35;
    /// the default ring, 37, leaves two bits of headroom for values beyond the bound, and the
    /// planner keeps [`crate::planner::AccuracyBudget::ring_headroom_bits`] of them.
    pub fn min_ring_bits(&self) -> u32 {
        self.frac + self.weight_frac + self.norm_in_bits.max(self.act_range_bits) + 2
    }

    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::Input(format!("secure options: {m}")));
        if !(24..=62).contains(&self.ring_bits) {
            return bad(format!("ring of {} bits (24..=62)", self.ring_bits));
        }
        if self.ring_bits < self.min_ring_bits() {
            return bad(format!(
                "a ring of {} bits is narrower than the {} the declared ranges need \
                 (frac {} + weight frac {} + max(norm input {}, activation input {}) bits + 2)",
                self.ring_bits,
                self.min_ring_bits(),
                self.frac,
                self.weight_frac,
                self.norm_in_bits,
                self.act_range_bits
            ));
        }
        if self.frac + self.weight_frac + 10 > self.ring_bits || self.frac < 6 {
            return bad(format!(
                "{} + {} fractional bits in a {}-bit ring",
                self.frac, self.weight_frac, self.ring_bits
            ));
        }
        if self.weight_frac + self.weight_bits > 30
            || self.frac + self.weight_bits > 40
            || self.gamma_bits > 16
            || self.score_frac > 2 * self.frac
        {
            return bad("weight, norm-scale or score precision out of range".into());
        }
        Ok(())
    }
}

/// Traffic and time of one operator kind (this party's view: bytes sent plus received).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OpRecord {
    /// The node (`layer0.attention.softmax`), or the kind for per-kind totals.
    pub name: String,
    /// Operator kind (`embedding`, `linear`, `attention-matmul`, `softmax`, `activation`,
    /// `layernorm`, `elementwise`, `output`).
    pub kind: String,
    /// Nodes of this kind run.
    pub calls: u64,
    /// Payload bytes, both directions.
    pub bytes: u64,
    /// Message flights, both directions.
    pub rounds: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// What one party measured in a secure run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecureReport {
    /// Tokens.
    pub seq_len: usize,
    /// Setup (HE keys, OT base and Ferret setup): bytes both directions.
    pub setup_bytes: u64,
    /// Setup seconds.
    pub setup_seconds: f64,
    /// Bytes a repeated session with the same model would not send again (the encrypted
    /// table of [`EmbeddingMode::ServerKey`]); excluded from `online_bytes`.
    pub cached_bytes: u64,
    /// Online bytes (both directions, everything after setup, except `cached_bytes`).
    pub online_bytes: u64,
    /// Online bytes this party sent.
    pub online_sent: u64,
    /// Online bytes this party received.
    pub online_received: u64,
    /// Online seconds.
    pub online_seconds: f64,
    /// Per operator kind, in first-use order.
    pub ops: Vec<OpRecord>,
    /// Per node (attention split into `.scores`, `.softmax`, `.context`), in execution order.
    pub nodes: Vec<OpRecord>,
}

/// What the client learns.
#[derive(Clone, Debug, PartialEq)]
pub struct SecureOutput {
    /// The last hidden state (`seq x hidden`).
    pub hidden: Matrix,
    /// The last position's next-token logits (`vocab`), for graphs with a language-model
    /// head (GPT-2, LLaMA).
    pub logits: Option<Vec<f64>>,
}

/// One step of progress: `done` of `total` nodes, the node just finished.
#[derive(Clone, Copy, Debug)]
pub struct Progress<'a> {
    /// Nodes finished.
    pub done: usize,
    /// Nodes in the graph.
    pub total: usize,
    /// The node's name (`layer3.attention`).
    pub node: &'a str,
}

/// The public view both parties must share, sent by the client in the handshake.
fn public_view(graph: &Graph, seq: usize, opts: &SecureOptions) -> String {
    format!("{:?} | seq {seq} | {opts:?}", graph.config)
}

/// The plan names only linear nodes of `graph` (a misspelt name would silently run the
/// default).
fn check_plan(graph: &Graph, opts: &SecureOptions) -> Result<()> {
    let linear = |name: &str| {
        graph
            .nodes
            .iter()
            .any(|n| n.name == name && matches!(n.op, Op::Linear { .. }))
    };
    let named = opts
        .plan
        .linear
        .iter()
        .map(|(n, _)| n)
        .chain(&opts.plan.ot_linear);
    for n in named {
        if !linear(n) {
            return Err(ModelError::Input(format!(
                "secure options: the plan names {n:?}, which is not a linear layer of the model"
            )));
        }
    }
    Ok(())
}

fn check_ids(graph: &Graph, ids: &[u32]) -> Result<()> {
    crate::reference::check_ids(&graph.config, ids)?;
    if !graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Embedding { .. }))
    {
        return Err(ModelError::Input("the graph has no embedding".into()));
    }
    Ok(())
}

/// The server side: holds `weights`, learns the sequence length only. Returns its report.
pub fn run_server<C: Channel, W: WeightSource>(
    ch: &mut C,
    graph: &Graph,
    weights: &W,
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SecureReport> {
    opts.check()?;
    check_plan(graph, opts)?;
    let view: String = ch.recv_msg().map_err(exec::transport)?;
    let seq = view
        .split(" | seq ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<usize>().ok())
        .ok_or_else(|| ModelError::Input("malformed handshake from the client".into()))?;
    let mine = public_view(graph, seq, opts);
    if view != mine || seq == 0 || seq > graph.config.max_positions {
        let answer = format!(
            "the server runs {mine} but the client asked for {view}; both parties need the same model config and options"
        );
        ch.send_msg(&Some(answer.clone()))
            .map_err(exec::transport)?;
        ch.flush().map_err(exec::transport)?;
        return Err(ModelError::Input(answer));
    }
    ch.send_msg(&None::<String>).map_err(exec::transport)?;
    ch.flush().map_err(exec::transport)?;
    let mut e = exec::Engine::setup(ch, Role::Server, graph, seq, opts)?;
    e.run(Some(weights), None, progress)?;
    e.finish_server()
}

/// The client side: holds the token ids (and only the model's public config); gets the last
/// hidden state (`ids.len() x hidden`) and its report.
pub fn run_client<C: Channel>(
    ch: &mut C,
    graph: &Graph,
    ids: &[u32],
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Matrix, SecureReport)> {
    let (out, report) = run_client_outputs(ch, graph, ids, opts, progress)?;
    Ok((out.hidden, report))
}

/// [`run_client`] returning every output the client learns (the logits too, for graphs with
/// a language-model head).
pub fn run_client_outputs<C: Channel>(
    ch: &mut C,
    graph: &Graph,
    ids: &[u32],
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(SecureOutput, SecureReport)> {
    opts.check()?;
    check_plan(graph, opts)?;
    check_ids(graph, ids)?;
    ch.send_msg(&public_view(graph, ids.len(), opts))
        .map_err(exec::transport)?;
    ch.flush().map_err(exec::transport)?;
    let answer: Option<String> = ch.recv_msg().map_err(exec::transport)?;
    if let Some(why) = answer {
        return Err(ModelError::Input(format!("the server refused: {why}")));
    }
    let mut e = exec::Engine::setup(ch, Role::Client, graph, ids.len(), opts)?;
    e.run(None::<&crate::RandomWeights>, Some(ids), progress)?;
    e.finish_client()
}
