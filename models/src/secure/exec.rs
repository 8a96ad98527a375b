//! The node-by-node engine of the secure executor (both parties run the same walk).

use super::{
    EmbeddingMode, MulBackend, OpRecord, Progress, SecureOptions, SecureOutput, SecureReport,
};
use crate::config::Activation;
use crate::graph::{Graph, Node, NodeId, Op, WeightLayout};
use crate::reference::{Matrix, WeightSource};
use crate::{ModelError, Result};
use duet_fhe::{Preset, RingBits, RlweParameters, SlotParameters, WeightBound};
use duet_mpc::fixed_math::exp::add_const;
use duet_mpc::fixed_math::poly::extend_nonneg;
use duet_mpc::nonlinear::{self as nl, NlSession, TruncMode};
use duet_mpc::{AShare, FixedPoint, Ring};
use duet_protocols::nonlinear::activation::{gelu, gelu_new, silu, ActFormat};
use duet_protocols::nonlinear::norm::{norm, NormKind, NormWeights};
use duet_protocols::nonlinear::softmax::softmax;
use duet_protocols::{
    EmbeddingServerKeys, EmbeddingTable, HeClientSetup, HeElementwiseMul, HeMatMul, HeMatMulShared,
    HeMulClientSetup, HeMulServerSetup, HeServerSetup, HeWeights, MatmulShape, PrepareMode,
    PrivateEmbedding, ProtocolError, ServerKeyEmbedding, SharedShape,
};
use duet_transport::{Channel, ChannelStats, Role, TransportError};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::sync::Arc;
use std::time::Instant;

/// The operator kinds the report groups traffic by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Private token embedding lookup plus positions.
    Embedding,
    /// Linear layers (HE matmul with the server's weights) and their rescaling.
    Linear,
    /// `Q K^T` and `P V` (HE, both operands shared), rotary positions and rescaling.
    AttentionMatmul,
    /// SoftMax.
    Softmax,
    /// GELU, tanh-GELU, SiLU.
    Activation,
    /// LayerNorm / RMSNorm.
    Norm,
    /// Residual sums and gated products.
    Elementwise,
    /// Revealing the output to the client.
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

/// A transport failure outside any node.
pub(crate) fn transport(e: TransportError) -> ModelError {
    ModelError::Secure {
        node: "handshake".into(),
        source: e.into(),
    }
}

fn at<E: Into<ProtocolError>>(node: &str) -> impl FnOnce(E) -> ModelError + '_ {
    move |e| ModelError::Secure {
        node: node.to_string(),
        source: e.into(),
    }
}

/// The keys of the HE element-wise product, set up at the first such product.
enum HeMulKeys {
    Client(HeMulClientSetup),
    Server(HeMulServerSetup),
}

enum Keys {
    Client {
        lin: HeClientSetup,
        shared: HeClientSetup,
    },
    Server {
        lin: HeServerSetup,
        shared: HeServerSetup,
    },
}

pub(crate) struct Engine<'a, C: Channel> {
    ch: &'a mut C,
    role: Role,
    graph: &'a Graph,
    seq: usize,
    opts: SecureOptions,
    ring: Ring,
    nl: NlSession,
    keys: Keys,
    he_mul: Option<HeMulKeys>,
    lin_params: Arc<RlweParameters>,
    rng: ChaCha20Rng,
    vals: Vec<Option<AShare>>,
    cached_bytes: u64,
    /// Per node: the factor folded into a linear layer's weights (`1/sqrt(d)` for queries).
    scale: Vec<f64>,
    records: Vec<(OpKind, OpRecord)>,
    nodes: Vec<OpRecord>,
    setup_bytes: u64,
    setup_seconds: f64,
    online_start: Instant,
    online_stats: ChannelStats,
}

fn traffic(now: ChannelStats, then: ChannelStats) -> (u64, u64) {
    let d = now - then;
    (d.bytes_sent + d.bytes_received, d.total_rounds())
}

impl<'a, C: Channel> Engine<'a, C> {
    pub(crate) fn setup(
        ch: &'a mut C,
        role: Role,
        graph: &'a Graph,
        seq: usize,
        opts: &SecureOptions,
    ) -> Result<Self> {
        let t = Instant::now();
        let before = ch.stats();
        let mut rng = ChaCha20Rng::from_rng(rand::rngs::OsRng).map_err(|e| ModelError::Secure {
            node: "setup".into(),
            source: ProtocolError::Config(format!("no OS randomness: {e}")),
        })?;
        let ring = Ring::new(opts.ring_bits).map_err(at("setup"))?;
        let l = RingBits(opts.ring_bits);
        let bound = 1u64 << (opts.weight_bits + opts.weight_frac.max(opts.frac));
        // N = 8192, log q = 200: the 128-bit row of the HomomorphicEncryption.org table
        let lin_params =
            RlweParameters::preset(Preset::N8192Q200Pack, l, WeightBound::MaxAbs(bound))
                .map_err(at("setup"))?;
        let shared_params = RlweParameters::preset(Preset::N8192Q200Pack, l, WeightBound::Uniform)
            .map_err(at("setup"))?;
        let keys = match role {
            Role::Client => Keys::Client {
                lin: HeClientSetup::run(ch, &lin_params, &mut rng).map_err(at("setup"))?,
                shared: HeClientSetup::run(ch, &shared_params, &mut rng).map_err(at("setup"))?,
            },
            Role::Server => Keys::Server {
                lin: HeServerSetup::run(ch, &lin_params).map_err(at("setup"))?,
                shared: HeServerSetup::run(ch, &shared_params).map_err(at("setup"))?,
            },
        };
        let nl = NlSession::setup(ch, role, &mut rng, opts.protocol.nl).map_err(at("setup"))?;
        let mut scale = vec![1.0; graph.nodes.len()];
        for n in &graph.nodes {
            if let Op::Attention { head_dim, .. } = n.op {
                let q = n.inputs.first().copied().unwrap_or(usize::MAX);
                match graph.nodes.get(q).map(|m| &m.op) {
                    Some(Op::Linear { .. }) => {
                        if let Some(s) = scale.get_mut(q) {
                            *s = 1.0 / (head_dim as f64).sqrt();
                        }
                    }
                    _ => {
                        return Err(ModelError::Input(format!(
                            "{}: the secure executor needs the queries from a linear layer",
                            n.name
                        )))
                    }
                }
            }
        }
        let after = ch.stats();
        Ok(Self {
            role,
            graph,
            seq,
            opts: opts.clone(),
            ring,
            nl,
            keys,
            he_mul: None,
            lin_params,
            rng,
            vals: vec![None; graph.nodes.len()],
            cached_bytes: 0,
            scale,
            records: Vec::new(),
            nodes: Vec::new(),
            setup_bytes: traffic(after, before).0,
            setup_seconds: t.elapsed().as_secs_f64(),
            online_start: Instant::now(),
            online_stats: after,
            ch,
        })
    }

    fn record(&mut self, node: &str, kind: OpKind, since: (Instant, ChannelStats), calls: u64) {
        let (bytes, rounds) = traffic(self.ch.stats(), since.1);
        let seconds = since.0.elapsed().as_secs_f64();
        self.nodes.push(OpRecord {
            name: node.into(),
            kind: kind.name().into(),
            calls: 1,
            bytes,
            rounds,
            seconds,
        });
        match self.records.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, r)) => {
                r.calls += calls;
                r.bytes += bytes;
                r.rounds += rounds;
                r.seconds += seconds;
            }
            None => self.records.push((
                kind,
                OpRecord {
                    name: kind.name().into(),
                    kind: kind.name().into(),
                    calls,
                    bytes,
                    rounds,
                    seconds,
                },
            )),
        }
    }

    fn mark(&self) -> (Instant, ChannelStats) {
        (Instant::now(), self.ch.stats())
    }

    /// Runs every node. The server passes its weights, the client its token ids.
    pub(crate) fn run<W: WeightSource>(
        &mut self,
        weights: Option<&W>,
        ids: Option<&[u32]>,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<()> {
        self.online_start = Instant::now();
        self.online_stats = self.ch.stats();
        let graph = self.graph;
        let mut last_use = vec![0usize; graph.nodes.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            for &j in &n.inputs {
                if let Some(l) = last_use.get_mut(j) {
                    *l = i;
                }
            }
        }
        let total = graph.nodes.len();
        for (i, node) in graph.nodes.iter().enumerate() {
            let out = self.node(i, node, weights, ids)?;
            if let Some(v) = self.vals.get_mut(i) {
                *v = out;
            }
            for &j in &node.inputs {
                if last_use.get(j) == Some(&i) && j != graph.output && Some(j) != graph.logits {
                    if let Some(v) = self.vals.get_mut(j) {
                        *v = None;
                    }
                }
            }
            progress(Progress {
                done: i + 1,
                total,
                node: &node.name,
            });
        }
        Ok(())
    }

    fn input(&self, node: &Node, k: usize) -> Result<&AShare> {
        node.inputs
            .get(k)
            .and_then(|&j: &NodeId| self.vals.get(j))
            .and_then(Option::as_ref)
            .ok_or_else(|| ModelError::Input(format!("node {} lacks input {k}", node.name)))
    }

    fn weight<W: WeightSource>(
        weights: Option<&W>,
        name: &str,
        shape: &[usize],
    ) -> Result<Vec<f64>> {
        weights
            .ok_or_else(|| ModelError::Input("the client holds no weights".into()))?
            .get(name, shape)
    }

    /// Encodes reals at `frac` bits, refusing `|v| >= 2^weight_bits`.
    fn quantise(&self, name: &str, v: &[f64], frac: u32, factor: f64) -> Result<Vec<i64>> {
        let limit = (1u64 << self.opts.weight_bits) as f64;
        let s = (1u64 << frac) as f64;
        v.iter()
            .map(|&x| {
                let y = x * factor;
                if !y.is_finite() || y.abs() >= limit {
                    return Err(ModelError::WeightRange {
                        name: name.into(),
                        value: y,
                        limit,
                    });
                }
                Ok((y * s).round() as i64)
            })
            .collect()
    }

    fn node<W: WeightSource>(
        &mut self,
        i: NodeId,
        node: &Node,
        weights: Option<&W>,
        ids: Option<&[u32]>,
    ) -> Result<Option<AShare>> {
        let name = node.name.as_str();
        let since = self.mark();
        let (kind, out) = match &node.op {
            Op::Input => return Ok(None),
            Op::Embedding {
                word,
                position,
                token_type,
            } => (
                OpKind::Embedding,
                self.embedding(
                    name,
                    word,
                    position.as_deref(),
                    token_type.as_deref(),
                    weights,
                    ids,
                )?,
            ),
            Op::Linear {
                weight,
                bias,
                in_dim,
                out_total,
                cols,
                layout,
            } => {
                let x = self.input(node, 0)?.clone();
                let factor = self.scale.get(i).copied().unwrap_or(1.0);
                let spec = LinearSpec {
                    weight,
                    bias: bias.as_deref(),
                    in_dim: *in_dim,
                    out_total: *out_total,
                    cols: *cols,
                    layout: *layout,
                    factor,
                };
                (OpKind::Linear, self.linear(name, &x, &spec, weights)?)
            }
            Op::LayerNorm { gamma, beta, .. } => {
                let x = self.input(node, 0)?.clone();
                let w = match weights {
                    Some(_) => Some(NormWeights {
                        gamma: self.norm_scale(gamma, weights)?,
                        beta: Self::weight(weights, beta, &[self.graph.config.hidden])?,
                    }),
                    None => None,
                };
                (
                    OpKind::Norm,
                    self.norm(name, NormKind::LayerNorm, &x, w.as_ref())?,
                )
            }
            Op::RmsNorm { gamma, .. } => {
                let x = self.input(node, 0)?.clone();
                let w = match weights {
                    Some(_) => Some(NormWeights {
                        gamma: self.norm_scale(gamma, weights)?,
                        beta: Vec::new(),
                    }),
                    None => None,
                };
                (
                    OpKind::Norm,
                    self.norm(name, NormKind::RmsNorm, &x, w.as_ref())?,
                )
            }
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                causal,
                rope_theta,
            } => {
                let q = self.input(node, 0)?.clone();
                let k = self.input(node, 1)?.clone();
                let v = self.input(node, 2)?.clone();
                let spec = AttnSpec {
                    heads: *heads,
                    kv_heads: *kv_heads,
                    hd: *head_dim,
                    causal: *causal,
                    rope_theta: *rope_theta,
                };
                let out = self.attention(name, &q, &k, &v, &spec)?;
                // the attention records its parts itself
                return Ok(Some(out));
            }
            Op::Activation(a) => {
                let x = self.input(node, 0)?.clone();
                let fmt = ActFormat::new(self.ring, self.opts.frac, self.opts.act_range_bits)
                    .map_err(at(name))?;
                let p = self.opts.protocol;
                let y = match a {
                    Activation::GeluErf => gelu(&mut self.nl, self.ch, &x, fmt, p.gelu),
                    Activation::GeluTanh => gelu_new(&mut self.nl, self.ch, &x, fmt),
                    Activation::Silu => silu(&mut self.nl, self.ch, &x, fmt, p.silu),
                }
                .map_err(at(name))?;
                (OpKind::Activation, self.convert(name, y, false)?)
            }
            Op::LastRow => {
                let x = self.input(node, 0)?;
                let cols = x.shape().get(1).copied().unwrap_or(0);
                let rows = x.shape().first().copied().unwrap_or(0);
                let last = x
                    .data()
                    .get(rows.saturating_sub(1) * cols..rows * cols)
                    .unwrap_or(&[])
                    .to_vec();
                (OpKind::Linear, self.share(name, 1, cols, last)?)
            }
            Op::Add => {
                let (a, b) = (self.input(node, 0)?, self.input(node, 1)?);
                (OpKind::Elementwise, a.add(b).map_err(at(name))?)
            }
            Op::Mul => {
                let (a, b) = (self.input(node, 0)?.clone(), self.input(node, 1)?.clone());
                let p = match self.opts.plan.elementwise {
                    MulBackend::Cot => nl::mul(&mut self.nl, self.ch, &a, &b).map_err(at(name))?,
                    MulBackend::He => self.he_mul(name, &a, &b)?,
                };
                (
                    OpKind::Elementwise,
                    self.trunc_signed(name, &p, self.opts.frac)?,
                )
            }
        };
        self.record(name, kind, since, 1);
        Ok(Some(out))
    }

    /// `a * b` by slot-encoded HE, setting up the client's product key the first time.
    fn he_mul(&mut self, node: &str, a: &AShare, b: &AShare) -> Result<AShare> {
        if self.he_mul.is_none() {
            let params = SlotParameters::new(RingBits(self.ring.bits())).map_err(at(node))?;
            self.he_mul = Some(match self.role {
                Role::Client => HeMulKeys::Client(
                    HeMulClientSetup::run(self.ch, &params, &mut self.rng).map_err(at(node))?,
                ),
                Role::Server => {
                    HeMulKeys::Server(HeMulServerSetup::run(self.ch, &params).map_err(at(node))?)
                }
            });
        }
        match &self.he_mul {
            Some(HeMulKeys::Client(k)) => {
                HeElementwiseMul::run_client(self.ch, k, a, b, &mut self.rng)
            }
            Some(HeMulKeys::Server(k)) => {
                HeElementwiseMul::run_server(self.ch, k, a, b, &mut self.rng)
            }
            None => Err(ProtocolError::Config("no HE product keys".into())),
        }
        .map_err(at(node))
    }

    fn norm_scale<W: WeightSource>(&self, gamma: &str, weights: Option<&W>) -> Result<Vec<f64>> {
        let g = Self::weight(weights, gamma, &[self.graph.config.hidden])?;
        let limit = (1u64 << self.opts.gamma_bits) as f64;
        if let Some(&bad) = g.iter().find(|v| !v.is_finite() || v.abs() >= limit) {
            return Err(ModelError::WeightRange {
                name: gamma.into(),
                value: bad,
                limit,
            });
        }
        Ok(g)
    }

    /// `x / 2^f` for signed `x` with `|x| < 2^{l-2}` (encoded): the server offsets by `2^{l-2}`
    /// so the value is non-negative with a public MSB 0, a known-MSB truncation (one COT over
    /// `Z_2^f` per element), and removes the offset: exact to one ulp.
    fn trunc_signed(&mut self, node: &str, x: &AShare, f: u32) -> Result<AShare> {
        if f == 0 {
            return Ok(x.clone());
        }
        let l = x.ring().bits();
        let off = 1i64 << (l - 2);
        let y = add_const(x, self.role, off).map_err(at(node))?;
        let t = nl::trunc(&mut self.nl, self.ch, &y, f, TruncMode::KnownMsb(false))
            .map_err(at(node))?;
        add_const(&t, self.role, -(off >> f)).map_err(at(node))
    }

    /// A value from another ring into the activation ring (exact within range): a local
    /// reduction from a wider ring; from a narrower one a signed extension, or the cheaper
    /// known-sign extension (one COT) when `nonneg` (the value is below half its ring).
    fn convert(&mut self, node: &str, x: AShare, nonneg: bool) -> Result<AShare> {
        let (from, to) = (x.ring().bits(), self.ring.bits());
        if from == to {
            Ok(x)
        } else if from > to {
            nl::reduce(&x, self.ring).map_err(at(node))
        } else if nonneg {
            extend_nonneg(&mut self.nl, self.ch, &x, self.ring).map_err(at(node))
        } else {
            nl::extend(&mut self.nl, self.ch, &x, self.ring, true).map_err(at(node))
        }
    }

    fn share(&self, node: &str, rows: usize, cols: usize, data: Vec<u64>) -> Result<AShare> {
        AShare::new(self.ring, vec![rows, cols], data).map_err(at(node))
    }

    #[allow(clippy::too_many_arguments, reason = "the node's fields")]
    fn embedding<W: WeightSource>(
        &mut self,
        node: &str,
        word: &str,
        position: Option<&str>,
        token_type: Option<&str>,
        weights: Option<&W>,
        ids: Option<&[u32]>,
    ) -> Result<AShare> {
        let c = &self.graph.config;
        let (n, vocab, h) = (self.seq, c.vocab_size, c.hidden);
        let f = self.opts.frac;
        let limit = 1u64 << (self.opts.weight_bits + f);
        let he_params = || -> Result<Arc<RlweParameters>> {
            // the preset with the fewest bytes (setup + lookup) for this shape
            let mut best: Option<(u64, Arc<RlweParameters>)> = None;
            for p in duet_protocols::embedding::EMBEDDING_PRESETS {
                let Ok(params) = PrivateEmbedding::params_with(p, self.ring.bits(), limit, vocab)
                else {
                    continue;
                };
                let bytes = PrivateEmbedding::cost(&params, n, vocab, h)
                    .map_err(at(node))?
                    .bytes
                    + HeClientSetup::setup_cost(&params).bytes;
                if best.as_ref().is_none_or(|(b, _)| bytes < *b) {
                    best = Some((bytes, params));
                }
            }
            best.map(|(_, p)| p).ok_or_else(|| ModelError::Secure {
                node: node.into(),
                source: ProtocolError::Config("no HE parameters fit the embedding table".into()),
            })
        };
        let mut s = match (self.opts.embedding, &self.keys, ids) {
            (EmbeddingMode::HeLookup, Keys::Client { .. }, Some(ids)) => {
                let params = he_params()?;
                let keys = HeClientSetup::run(self.ch, &params, &mut self.rng).map_err(at(node))?;
                PrivateEmbedding::run_client(self.ch, &keys, vocab, h, ids, &mut self.rng)
                    .map_err(at(node))?
            }
            (EmbeddingMode::HeLookup, Keys::Server { .. }, _) => {
                let params = he_params()?;
                let keys = HeServerSetup::run(self.ch, &params).map_err(at(node))?;
                let table = Self::weight(weights, word, &[vocab, h])?;
                let t = self.quantise(word, &table, f, 1.0)?;
                drop(table);
                let t = EmbeddingTable::new(&params, vocab, h, t).map_err(at(node))?;
                PrivateEmbedding::run_server(self.ch, &keys, &t, n, &mut self.rng)
                    .map_err(at(node))?
            }
            (EmbeddingMode::ServerKey, Keys::Client { .. }, Some(ids)) => {
                let params = ServerKeyEmbedding::params(self.ring.bits()).map_err(at(node))?;
                let before = self.ch.stats();
                let model =
                    ServerKeyEmbedding::recv_table(self.ch, &params, vocab, h).map_err(at(node))?;
                self.cached_bytes += traffic(self.ch.stats(), before).0;
                ServerKeyEmbedding::run_client(self.ch, &model, ids, &mut self.rng)
                    .map_err(at(node))?
            }
            (EmbeddingMode::ServerKey, Keys::Server { .. }, _) => {
                let params = ServerKeyEmbedding::params(self.ring.bits()).map_err(at(node))?;
                let keys = EmbeddingServerKeys::generate(&params, &mut self.rng);
                let table = Self::weight(weights, word, &[vocab, h])?;
                let t = self.quantise(word, &table, f, 1.0)?;
                drop(table);
                let before = self.ch.stats();
                ServerKeyEmbedding::send_table(self.ch, &keys, vocab, h, &t, &mut self.rng)
                    .map_err(at(node))?;
                self.cached_bytes += traffic(self.ch.stats(), before).0;
                ServerKeyEmbedding::run_server(self.ch, &keys, h, n).map_err(at(node))?
            }
            _ => return Err(ModelError::Input("embedding: the client has no ids".into())),
        };
        if weights.is_some() {
            {
                // public positions and token type 0: added to the server's share
                let ring = self.ring;
                let fp = FixedPoint::new(ring, f).map_err(at(node))?;
                let mut add_rows = |table: &[f64], row_of: &dyn Fn(usize) -> usize| {
                    for r in 0..n {
                        let src = table.get(row_of(r) * h..(row_of(r) + 1) * h).unwrap_or(&[]);
                        if let Some(dst) = s.get_mut(r * h..(r + 1) * h) {
                            for (d, &v) in dst.iter_mut().zip(src) {
                                *d = ring.add(*d, fp.encode(v));
                            }
                        }
                    }
                };
                if let Some(p) = position {
                    let pos = Self::weight(weights, p, &[c.max_positions, h])?;
                    add_rows(&pos, &|r| r);
                }
                if let Some(tt) = token_type {
                    let types = Self::weight(weights, tt, &[c.type_vocab_size, h])?;
                    add_rows(&types, &|_| 0);
                }
            }
        }
        self.share(node, n, h, s)
    }

    fn linear<W: WeightSource>(
        &mut self,
        node: &str,
        x: &AShare,
        spec: &LinearSpec<'_>,
        weights: Option<&W>,
    ) -> Result<AShare> {
        let n = x.shape().first().copied().unwrap_or(0);
        let (d, k) = (spec.in_dim, spec.cols.1);
        let (f, fw) = (self.opts.frac, self.opts.weight_frac);
        let by_ot = self.opts.plan.linear_by_ot(node);
        let y = match &self.keys {
            Keys::Client { .. } if by_ot => {
                let shape = nl::MatShape::new(1, n, d, k).map_err(at(node))?;
                nl::matmul_known_chooser(&mut self.nl, self.ch, shape, x.data(), self.ring)
                    .map_err(at(node))?
                    .into_data()
            }
            Keys::Client { lin, .. } => HeMatMul::run_client(
                self.ch,
                lin,
                MatmulShape::new(n, d, k),
                self.opts.plan.linear_policy(node),
                x.data(),
                &mut self.rng,
            )
            .map_err(at(node))?,
            Keys::Server { lin, .. } => {
                let raw =
                    Self::weight(weights, spec.weight, &spec.layout.shape(d, spec.out_total))?;
                let (start, count) = spec.cols;
                // W as d x k (inputs x used outputs)
                let mut w = vec![0.0; d * k];
                for r in 0..d {
                    for o in 0..count {
                        let v = match spec.layout {
                            WeightLayout::OutIn => raw.get((start + o) * d + r),
                            WeightLayout::InOut => raw.get(r * spec.out_total + start + o),
                        };
                        if let (Some(dst), Some(&v)) = (w.get_mut(r * k + o), v) {
                            *dst = v;
                        }
                    }
                }
                drop(raw);
                let wq = self.quantise(spec.weight, &w, fw, spec.factor)?;
                drop(w);
                let bias = match spec.bias {
                    Some(b) => {
                        let all = Self::weight(weights, b, &[spec.out_total])?;
                        let used = all.get(start..start + count).unwrap_or(&[]);
                        let s = (1u64 << (f + fw)) as f64;
                        Some(
                            used.iter()
                                .map(|&v| (v * spec.factor * s).round() as i64)
                                .collect::<Vec<_>>(),
                        )
                    }
                    None => None,
                };
                if by_ot {
                    return self.linear_ot_server(node, x, (n, d, k), &wq, bias.as_deref());
                }
                let mut hw = HeWeights::new(&self.lin_params, d, k, wq, bias.as_deref())
                    .map_err(at(node))?;
                hw.prepare(n, self.opts.plan.linear_policy(node), PrepareMode::OnTheFly)
                    .map_err(at(node))?;
                HeMatMul::run_server(self.ch, lin, &hw, n, Some(x.data()), &mut self.rng)
                    .map_err(at(node))?
            }
        };
        let y = self.share(node, n, k, y)?;
        self.trunc_signed(node, &y, fw)
    }

    /// The server's side of a linear layer by OT: its own share times `W` plus the bias
    /// locally, plus its share of the client's share times `W` (the server holds `W`, the
    /// client's share bits choose), then the rescaling.
    fn linear_ot_server(
        &mut self,
        node: &str,
        x: &AShare,
        (n, d, k): (usize, usize, usize),
        wq: &[i64],
        bias: Option<&[i64]>,
    ) -> Result<AShare> {
        let ring = self.ring;
        let w: Vec<u64> = wq.iter().map(|&v| ring.from_i64(v)).collect();
        let shape = nl::MatShape::new(1, n, d, k).map_err(at(node))?;
        let mut y = nl::matmul_known_holder(&mut self.nl, self.ch, shape, &w, ring)
            .map_err(at(node))?
            .into_data();
        let local = nl::local_product(shape, x.data(), &w);
        let bias: Vec<u64> =
            bias.map_or_else(Vec::new, |b| b.iter().map(|&v| ring.from_i64(v)).collect());
        for (o, (out, l)) in y.iter_mut().zip(&local).enumerate() {
            let b = bias.get(o % k.max(1)).copied().unwrap_or(0);
            *out = ring.add(*out, ring.reduce(l.wrapping_add(b)));
        }
        let y = self.share(node, n, k, y)?;
        self.trunc_signed(node, &y, self.opts.weight_frac)
    }

    fn norm(
        &mut self,
        node: &str,
        kind: NormKind,
        x: &AShare,
        w: Option<&NormWeights>,
    ) -> Result<AShare> {
        let mut cfg = self.opts.protocol.norm.config(self.opts.frac);
        cfg.in_bits = self.opts.norm_in_bits;
        cfg.gamma_bits = self.opts.gamma_bits;
        cfg.out_bits = cfg.ring_bits.max(self.ring.bits());
        let y = norm(&mut self.nl, self.ch, kind, x, self.opts.frac, w, &cfg).map_err(at(node))?;
        self.convert(node, y, false)
    }

    /// `x` (`n x heads*hd`, row-major) to `heads x n x hd` (`transpose`: `heads x hd x n`),
    /// head `h` taken from source head `h / group`.
    fn per_head(
        x: &AShare,
        n: usize,
        heads: usize,
        group: usize,
        hd: usize,
        transpose: bool,
    ) -> Vec<u64> {
        let src_heads = heads / group.max(1);
        let width = src_heads * hd;
        let data = x.data();
        let mut out = vec![0u64; heads * n * hd];
        for h in 0..heads {
            let sh = h / group.max(1);
            for i in 0..n {
                for j in 0..hd {
                    let v = data.get(i * width + sh * hd + j).copied().unwrap_or(0);
                    let dst = if transpose {
                        h * hd * n + j * n + i
                    } else {
                        h * n * hd + i * hd + j
                    };
                    if let Some(o) = out.get_mut(dst) {
                        *o = v;
                    }
                }
            }
        }
        out
    }

    /// Rotary positions on shares: each party rotates its share by the public angles
    /// (encoded at `f` bits), then one truncation by `f`.
    fn rope(
        &mut self,
        node: &str,
        x: &AShare,
        heads: usize,
        hd: usize,
        theta: f64,
    ) -> Result<AShare> {
        let n = self.seq;
        let ring = self.ring;
        let fp = FixedPoint::new(ring, self.opts.frac).map_err(at(node))?;
        let half = hd / 2;
        let width = heads * hd;
        let src = x.data();
        let mut out = vec![0u64; src.len()];
        for p in 0..n {
            for h in 0..heads {
                for i in 0..half {
                    let freq = theta.powf(-2.0 * i as f64 / hd as f64);
                    let (sin, cos) = (p as f64 * freq).sin_cos();
                    let (c, s) = (fp.encode(cos), fp.encode(sin));
                    let (a, b) = (p * width + h * hd + i, p * width + h * hd + i + half);
                    let (xa, xb) = (
                        src.get(a).copied().unwrap_or(0),
                        src.get(b).copied().unwrap_or(0),
                    );
                    if let Some(o) = out.get_mut(a) {
                        *o = ring.sub(ring.mul(xa, c), ring.mul(xb, s));
                    }
                    if let Some(o) = out.get_mut(b) {
                        *o = ring.add(ring.mul(xb, c), ring.mul(xa, s));
                    }
                }
            }
        }
        let y = AShare::new(ring, x.shape().to_vec(), out).map_err(at(node))?;
        self.trunc_signed(node, &y, self.opts.frac)
    }

    fn shared_matmul(
        &mut self,
        node: &str,
        shape: SharedShape,
        x: &[u64],
        y: &[u64],
    ) -> Result<Vec<u64>> {
        // the plan's layout (fewest bytes by default: BERT-base attention 19.1 MB per layer
        // against 23.7 MB for the fewest key switches within 1.25x of it)
        let policy = self.opts.plan.attention;
        if self.opts.plan.attention_ot {
            let ms = nl::MatShape::new(shape.heads, shape.n, shape.d, shape.k).map_err(at(node))?;
            let xa = AShare::new(self.ring, vec![x.len()], x.to_vec()).map_err(at(node))?;
            let ya = AShare::new(self.ring, vec![y.len()], y.to_vec()).map_err(at(node))?;
            return Ok(nl::matmul_shared(&mut self.nl, self.ch, ms, &xa, &ya)
                .map_err(at(node))?
                .into_data());
        }
        match &self.keys {
            Keys::Client { shared, .. } => {
                HeMatMulShared::run_client(self.ch, shared, shape, policy, x, y, &mut self.rng)
            }
            Keys::Server { shared, .. } => {
                HeMatMulShared::run_server(self.ch, shared, shape, policy, x, y, &mut self.rng)
            }
        }
        .map_err(at(node))
    }

    fn attention(
        &mut self,
        node: &str,
        q: &AShare,
        k: &AShare,
        v: &AShare,
        a: &AttnSpec,
    ) -> Result<AShare> {
        let (n, hd, heads) = (self.seq, a.hd, a.heads);
        let f = self.opts.frac;
        if a.kv_heads == 0 || heads % a.kv_heads != 0 || hd == 0 {
            return Err(ModelError::Input(format!(
                "{node}: {heads} heads over {} key heads",
                a.kv_heads
            )));
        }
        let group = heads / a.kv_heads;
        let since = self.mark();
        let (q, k) = match a.rope_theta {
            Some(t) => (
                self.rope(node, q, heads, hd, t)?,
                self.rope(node, k, a.kv_heads, hd, t)?,
            ),
            None => (q.clone(), k.clone()),
        };
        // scores (the server folded 1/sqrt(d) into the query weights): 2f fractional bits
        let xq = Self::per_head(&q, n, heads, 1, hd, false);
        let yk = Self::per_head(&k, n, heads, group, hd, true);
        let s = self.shared_matmul(node, SharedShape::new(heads, n, hd, n), &xq, &yk)?;
        let s = AShare::new(self.ring, vec![heads * n, n], s).map_err(at(node))?;
        let fs = self.opts.score_frac;
        let s = self.trunc_signed(node, &s, 2 * f - fs)?;
        self.record(&format!("{node}.scores"), OpKind::AttentionMatmul, since, 1);
        let since = self.mark();
        let mask: Option<Vec<bool>> = a.causal.then(|| {
            (0..heads * n * n)
                .map(|idx| (idx % n) > ((idx / n) % n))
                .collect()
        });
        let cfg = self.opts.protocol.softmax.config();
        let p = softmax(&mut self.nl, self.ch, &s, fs, mask.as_deref(), &cfg).map_err(at(node))?;
        let fp = cfg.exp.frac;
        let p = self.convert(node, p, true)?;
        self.record(&format!("{node}.softmax"), OpKind::Softmax, since, 1);
        let since = self.mark();
        let yv = Self::per_head(v, n, heads, group, hd, false);
        let z = self.shared_matmul(node, SharedShape::new(heads, n, n, hd), p.data(), &yv)?;
        let z = AShare::new(self.ring, vec![heads * n * hd], z).map_err(at(node))?;
        let z = self.trunc_signed(node, &z, fp)?;
        // heads x n x hd back to n x heads*hd
        let zd = z.data();
        let mut out = vec![0u64; n * heads * hd];
        for h in 0..heads {
            for i in 0..n {
                for j in 0..hd {
                    if let (Some(o), Some(&v)) = (
                        out.get_mut(i * heads * hd + h * hd + j),
                        zd.get(h * n * hd + i * hd + j),
                    ) {
                        *o = v;
                    }
                }
            }
        }
        self.record(
            &format!("{node}.context"),
            OpKind::AttentionMatmul,
            since,
            0,
        );
        self.share(node, n, heads * hd, out)
    }

    fn report(&self) -> SecureReport {
        let d = self.ch.stats() - self.online_stats;
        let online_bytes = d.bytes_sent + d.bytes_received - self.cached_bytes;
        SecureReport {
            cached_bytes: self.cached_bytes,
            online_sent: d.bytes_sent,
            online_received: d.bytes_received,
            nodes: self.nodes.clone(),
            seq_len: self.seq,
            setup_bytes: self.setup_bytes,
            setup_seconds: self.setup_seconds,
            online_bytes,
            online_seconds: self.online_start.elapsed().as_secs_f64(),
            ops: self.records.iter().map(|(_, r)| r.clone()).collect(),
        }
    }

    fn logits_share(&self) -> Result<Option<&AShare>> {
        match self.graph.logits {
            None => Ok(None),
            Some(l) => self
                .vals
                .get(l)
                .and_then(Option::as_ref)
                .map(Some)
                .ok_or_else(|| ModelError::Input("graph produced no logits".into())),
        }
    }

    fn output_share(&self) -> Result<&AShare> {
        self.vals
            .get(self.graph.output)
            .and_then(Option::as_ref)
            .ok_or_else(|| ModelError::Input("graph produced no output".into()))
    }

    /// The server sends its output share to the client.
    pub(crate) fn finish_server(mut self) -> Result<SecureReport> {
        let since = self.mark();
        let share = self.output_share()?.data().to_vec();
        self.ch.send_u64s(&share).map_err(at("output"))?;
        if let Some(l) = self.logits_share()? {
            let l = l.data().to_vec();
            self.ch.send_u64s(&l).map_err(at("output"))?;
        }
        self.ch.flush().map_err(at("output"))?;
        self.record("output", OpKind::Output, since, 1);
        Ok(self.report())
    }

    /// The client adds the server's share to its own and decodes.
    pub(crate) fn finish_client(mut self) -> Result<(SecureOutput, SecureReport)> {
        let since = self.mark();
        let mine = self.output_share()?.clone();
        let theirs = self.ch.recv_u64s_exact(mine.len()).map_err(at("output"))?;
        let theirs =
            AShare::new(mine.ring(), mine.shape().to_vec(), theirs).map_err(at("output"))?;
        let plain = mine.reconstruct(&theirs).map_err(at("output"))?;
        let fp = FixedPoint::new(self.ring, self.opts.frac).map_err(at("output"))?;
        let cols = mine.shape().get(1).copied().unwrap_or(1);
        let logits = match self.logits_share()?.cloned() {
            None => None,
            Some(mine) => {
                let theirs = self.ch.recv_u64s_exact(mine.len()).map_err(at("output"))?;
                let theirs = AShare::new(mine.ring(), mine.shape().to_vec(), theirs)
                    .map_err(at("output"))?;
                Some(fp.decode_all(&mine.reconstruct(&theirs).map_err(at("output"))?))
            }
        };
        self.record("output", OpKind::Output, since, 1);
        let hidden = Matrix {
            rows: self.seq,
            cols,
            data: fp.decode_all(&plain),
        };
        Ok((SecureOutput { hidden, logits }, self.report()))
    }
}

struct LinearSpec<'s> {
    weight: &'s str,
    bias: Option<&'s str>,
    in_dim: usize,
    out_total: usize,
    cols: (usize, usize),
    layout: WeightLayout,
    factor: f64,
}

struct AttnSpec {
    heads: usize,
    kv_heads: usize,
    hd: usize,
    causal: bool,
    rope_theta: Option<f64>,
}
