//! Predicted bytes, flights and compute seconds of every node of a secure run, without running
//! it: the same walk as the executor (`exec.rs`), node by node, with every protocol replaced
//! by its exact cost formula.
//!
//! What it mirrors: the setup (two HE key sets of `N = 8192`, the OT session), the embedding
//! (the HE preset with the fewest bytes, or the server-key table whose cached bytes are in the
//! node, as measured), every linear layer ([`duet_protocols::HeMatMul::cost`] with the plan's layout) and its
//! truncation (or, for nodes the plan runs by OT, [`nl::matmul_known_cost`]), the norms,
//! activations and their ring conversions, the attention (rotary
//! truncations, `Q K^T` with [`HeMatMulShared::cost`] or [`nl::matmul_shared_cost`] and its truncation as `.scores`, SoftMax
//! and its conversion as `.softmax`, `P V` and its truncation as `.context`), element-wise
//! products (COT or HE, with the HE key setup at the first one), the LM head (last row, then a
//! linear layer) and the output message.
//!
//! Ferret: the non-linear protocols reserve exactly the COTs their cost formulas count
//! ([`nl::Cost::cots`]); a pool that runs short is refilled by main iterations, whose traffic
//! lands in the node that reserved. Both pools start with the setup iteration's output less
//! the next iteration's base COTs, and a pool never drops COTs, so after a cumulative
//! consumption `D` of one direction the iterations run are `ceil((D - P0) / C)` (`P0` the
//! initial pool, `C` [`FerretParams::cots_per_iteration`]). Predicted bytes are therefore
//! exact per node; flights are the sum of the parts' flight counts (the non-linear formulas'
//! rounds are upper bounds, and a Ferret iteration's flights may merge with its neighbours'),
//! so measured flights can be lower.

use super::{EmbeddingMode, MulBackend, OpKind, SecureOptions};
use crate::config::Activation;
use crate::graph::{Graph, Op};
use crate::{ModelError, Result};
use duet_fhe::{Preset, RingBits, RlweParameters, SlotParameters, WeightBound};
use duet_mpc::fixed_math::poly::extend_nonneg_cost;
use duet_mpc::nonlinear::{self as nl, CotBackend, NlConfig, NlSession, TruncMode};
use duet_mpc::ot::ferret::iteration_cost;
use duet_mpc::ot::FerretParams;
use duet_mpc::Ring;
use duet_protocols::cost_model::{he_work, nl_work, Estimate, MachineProfile, Work};
use duet_protocols::embedding::EMBEDDING_POLICY;
use duet_protocols::nonlinear::activation::{gelu_cost, gelu_new_cost, silu_cost, ActFormat};
use duet_protocols::nonlinear::norm::{norm_cost, NormKind};
use duet_protocols::nonlinear::softmax::softmax_cost;
use duet_protocols::{
    HeClientSetup, HeElementwiseMul, HeMatMulShared, HeMulClientSetup, LayoutPolicy, MatmulPlan,
    MatmulShape, PrivateEmbedding, ProtocolError, ServerKeyEmbedding, SharedShape,
};
use duet_transport::Role;
use std::collections::HashMap;
use std::sync::Arc;

/// The prediction of a secure run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prediction {
    /// Setup: HE keys and the OT session (what `SecureReport::setup_bytes` measures).
    pub setup: Estimate,
    /// Per node, in execution order, with the names of `SecureReport::nodes` (the attention
    /// split into `.scores`, `.softmax`, `.context`; the last entry is `output`).
    pub nodes: Vec<(String, OpKind, Estimate)>,
    /// Per operator kind, in first-use order (as `SecureReport::ops`).
    pub kinds: Vec<(OpKind, Estimate)>,
    /// The part of the nodes' bytes that is cached across sessions (the server-key embedding
    /// table), as `SecureReport::cached_bytes`.
    pub cached_bytes: u64,
}

impl Prediction {
    /// Every node summed (online plus cached traffic).
    pub fn nodes_total(&self) -> Estimate {
        self.nodes.iter().map(|(_, _, e)| *e).sum()
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&Estimate> {
        self.nodes
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, e)| e)
    }

    /// The kind `kind`.
    pub fn kind(&self, kind: OpKind) -> Option<&Estimate> {
        self.kinds.iter().find(|(k, _)| *k == kind).map(|(_, e)| e)
    }
}

fn cfg_err(node: &str, what: impl Into<String>) -> ModelError {
    ModelError::Secure {
        node: node.into(),
        source: ProtocolError::Config(what.into()),
    }
}

fn at<E: Into<ProtocolError>>(node: &str) -> impl FnOnce(E) -> ModelError + '_ {
    move |e| ModelError::Secure {
        node: node.to_string(),
        source: e.into(),
    }
}

/// Traffic and work of one node being accumulated.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    bytes: u64,
    flights: u64,
    work: Work,
}

impl Acc {
    fn estimate(&self, profile: &MachineProfile) -> Estimate {
        let mut w = self.work;
        w.bytes = self.bytes as f64;
        w.flights = self.flights as f64;
        profile.estimate(&w)
    }
}

/// The two Ferret pools (server sending, client sending).
#[derive(Clone, Copy, Debug)]
struct Pools {
    params: FerretParams,
    initial: u64,
    per_iteration: u64,
    consumed: [u64; 2],
    iterations: [u64; 2],
}

impl Pools {
    fn new(params: FerretParams) -> Self {
        let s = params.setup();
        let initial = (s.n.saturating_sub(params.main().base_cots())) as u64;
        Self {
            params,
            initial,
            per_iteration: params.cots_per_iteration().max(1) as u64,
            consumed: [0; 2],
            iterations: [0; 2],
        }
    }

    /// Consumes `c`; returns the main iterations this ran.
    fn consume(&mut self, c: nl::CotCount) -> u64 {
        let mut new = 0;
        for (i, n) in [c.server_sends, c.client_sends].into_iter().enumerate() {
            if let (Some(d), Some(it)) = (self.consumed.get_mut(i), self.iterations.get_mut(i)) {
                *d += n;
                let need = d.saturating_sub(self.initial).div_ceil(self.per_iteration);
                if need > *it {
                    new += need - *it;
                    *it = need;
                }
            }
        }
        new
    }
}

struct Sim<'a> {
    opts: &'a SecureOptions,
    ring: Ring,
    nl: NlConfig,
    pools: Option<Pools>,
    lin: Arc<RlweParameters>,
    shared: Arc<RlweParameters>,
    he_mul_ready: bool,
    /// Costs by operator and shape (the layers repeat: each is computed once).
    nl_memo: HashMap<String, (nl::Cost, Work)>,
    he_memo: HashMap<String, (u64, u64, Work)>,
}

impl Sim<'_> {
    /// A non-linear protocol (`cost` as a function of the configuration): its traffic, its
    /// COTs and KK13 leaves, and the Ferret iterations its COTs trigger.
    fn nl<F>(&mut self, node: &str, key: String, acc: &mut Acc, cost: F) -> Result<()>
    where
        F: Fn(NlConfig) -> std::result::Result<nl::Cost, ProtocolError>,
    {
        let (c, w) = match self.nl_memo.get(&key) {
            Some(v) => *v,
            None => {
                let v = nl_work(self.nl, cost).map_err(at(node))?;
                self.nl_memo.insert(key, v);
                v
            }
        };
        acc.bytes += c.bytes;
        acc.flights += c.rounds;
        acc.work += Work {
            bytes: 0.0,
            flights: 0.0,
            ..w
        };
        if let Some(p) = &mut self.pools {
            let it = p.consume(c.cots);
            if it > 0 {
                let one = iteration_cost(&p.params.main());
                acc.bytes += it * one.bytes();
                acc.flights += it * one.rounds();
                acc.work.ferret_iterations += it as f64;
            }
        }
        Ok(())
    }

    /// An HE matmul (`key` names its parameters, shape and layout): bytes, flights and HE
    /// work from `make` the first time.
    fn he<F>(&mut self, node: &str, key: String, acc: &mut Acc, make: F) -> Result<()>
    where
        F: FnOnce() -> std::result::Result<(u64, u64, Work), ProtocolError>,
    {
        let (bytes, flights, w) = match self.he_memo.get(&key) {
            Some(v) => *v,
            None => {
                let v = make().map_err(at(node))?;
                self.he_memo.insert(key, v);
                v
            }
        };
        acc.bytes += bytes;
        acc.flights += flights;
        acc.work += w;
        Ok(())
    }

    /// A linear layer's HE matmul (or the embedding lookup's).
    fn matmul(
        &mut self,
        node: &str,
        tag: &str,
        acc: &mut Acc,
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        policy: LayoutPolicy,
    ) -> Result<()> {
        let key = format!("{tag} {} {} {} {policy:?}", shape.n, shape.d, shape.k);
        self.he(node, key, acc, || {
            let plan = MatmulPlan::new(params, shape, policy)?;
            let c = plan.cost();
            Ok((c.bytes, c.rounds, he_work(&plan)))
        })
    }

    /// A linear layer's product by OT (the server holds `W`): traffic, COTs and the words
    /// of the pads.
    fn ot_matmul(&mut self, node: &str, acc: &mut Acc, n: usize, d: usize, k: usize) -> Result<()> {
        let ring = self.ring;
        let shape = nl::MatShape::new(1, n, d, k).map_err(at(node))?;
        self.nl(node, format!("ot linear {n} {d} {k}"), acc, |cfg| {
            Ok(nl::matmul_known_cost(shape, ring, cfg, Role::Server))
        })?;
        acc.work.ot_matmul_words += nl::matmul_known_words(shape, ring) as f64;
        Ok(())
    }

    fn shared_matmul(&mut self, node: &str, acc: &mut Acc, shape: SharedShape) -> Result<()> {
        if self.opts.plan.attention_ot {
            let ring = self.ring;
            let ms = nl::MatShape::new(shape.heads, shape.n, shape.d, shape.k).map_err(at(node))?;
            self.nl(node, format!("ot shared {shape:?}"), acc, |cfg| {
                Ok(nl::matmul_shared_cost(ms, ring, cfg))
            })?;
            acc.work.ot_matmul_words += 2.0 * nl::matmul_known_words(ms, ring) as f64;
            return Ok(());
        }
        let policy = self.opts.plan.attention;
        let params = Arc::clone(&self.shared);
        let key = format!("shared {shape:?} {policy:?}");
        self.he(node, key, acc, || {
            let plans = HeMatMulShared::plans(&params, shape, policy)?;
            let total = HeMatMulShared::cost(&params, shape, policy)?;
            let w = plans
                .iter()
                .map(he_work)
                .fold(Work::default(), |a, b| a + b);
            // all heads in one exchange
            Ok((total.bytes, total.rounds, w))
        })
    }

    fn trunc_signed(&mut self, node: &str, acc: &mut Acc, n: usize, f: u32) -> Result<()> {
        if f == 0 {
            return Ok(());
        }
        let ring = self.ring;
        self.nl(node, format!("trunc {n} {f}"), acc, |cfg| {
            Ok(nl::trunc_cost(n, ring, f, TruncMode::KnownMsb(false), cfg))
        })
    }

    /// `convert` of the executor: `n` elements from `from` into the activation ring.
    fn convert(
        &mut self,
        node: &str,
        acc: &mut Acc,
        n: usize,
        from: Ring,
        nonneg: bool,
    ) -> Result<()> {
        let to = self.ring;
        if from.bits() < to.bits() {
            let key = format!("convert {n} {} {nonneg}", from.bits());
            self.nl(node, key, acc, |cfg| {
                Ok(if nonneg {
                    extend_nonneg_cost(n, from, to, cfg)
                } else {
                    nl::extend_cost(n, from, to, cfg)
                })
            })?;
        }
        Ok(())
    }
}

/// Predicts every node of a secure run of `graph` on `seq` tokens with `opts` (see the
/// module documentation): bytes exactly as the executor's report measures them, flights as
/// the sum of the parts (an upper bound), compute seconds from `profile`.
pub fn predict(
    graph: &Graph,
    seq: usize,
    opts: &SecureOptions,
    profile: &MachineProfile,
) -> Result<Prediction> {
    opts.check()?;
    super::check_plan(graph, opts)?;
    if seq == 0 || seq > graph.config.max_positions {
        return Err(ModelError::Input(format!(
            "sequence of {seq} tokens (1..={})",
            graph.config.max_positions
        )));
    }
    let ring = Ring::new(opts.ring_bits).map_err(at("setup"))?;
    let l = RingBits(opts.ring_bits);
    let bound = 1u64 << (opts.weight_bits + opts.weight_frac.max(opts.frac));
    let lin = RlweParameters::preset(Preset::N8192Q200Pack, l, WeightBound::MaxAbs(bound))
        .map_err(at("setup"))?;
    let shared = RlweParameters::preset(Preset::N8192Q200Pack, l, WeightBound::Uniform)
        .map_err(at("setup"))?;
    let nl_cfg = opts.protocol.nl;
    let mut setup = Acc::default();
    for p in [&lin, &shared] {
        let c = HeClientSetup::setup_cost(p);
        setup.bytes += c.bytes;
        setup.flights += c.rounds;
    }
    let s = NlSession::setup_cost(nl_cfg);
    setup.bytes += s.bytes;
    setup.flights += s.rounds;
    let pools = match nl_cfg.cot {
        CotBackend::Ferret(p) => {
            // the setup iterations of both directions and their base COTs
            setup.work.ferret_iterations += 2.0;
            Some(Pools::new(p))
        }
        CotBackend::Iknp => None,
    };
    let mut sim = Sim {
        opts,
        ring,
        nl: nl_cfg,
        pools,
        lin,
        shared,
        he_mul_ready: false,
        nl_memo: HashMap::new(),
        he_memo: HashMap::new(),
    };
    let mut out = Prediction {
        setup: setup.estimate(profile),
        ..Prediction::default()
    };
    let push = |out: &mut Prediction, name: String, kind: OpKind, acc: &Acc| {
        let e = acc.estimate(profile);
        out.nodes.push((name, kind, e));
        match out.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, t)) => *t += e,
            None => out.kinds.push((kind, e)),
        }
    };
    let c = &graph.config;
    // (rows, cols) of every node's output
    let mut dims: Vec<(usize, usize)> = vec![(0, 0); graph.nodes.len()];
    let dim_of = |dims: &[(usize, usize)], node: &crate::graph::Node, k: usize| {
        node.inputs
            .get(k)
            .and_then(|&j| dims.get(j))
            .copied()
            .unwrap_or((0, 0))
    };
    for (i, node) in graph.nodes.iter().enumerate() {
        let name = node.name.as_str();
        let mut acc = Acc::default();
        let (kind, d) = match &node.op {
            Op::Input => continue,
            Op::Embedding { .. } => {
                let (vocab, h) = (c.vocab_size, c.hidden);
                match opts.embedding {
                    EmbeddingMode::HeLookup => {
                        let limit = 1u64 << (opts.weight_bits + opts.frac);
                        let mut best: Option<(u64, Arc<RlweParameters>)> = None;
                        for p in duet_protocols::embedding::EMBEDDING_PRESETS {
                            let Ok(params) =
                                PrivateEmbedding::params_with(p, ring.bits(), limit, vocab)
                            else {
                                continue;
                            };
                            let bytes = PrivateEmbedding::cost(&params, seq, vocab, h)
                                .map_err(at(name))?
                                .bytes
                                + HeClientSetup::setup_cost(&params).bytes;
                            if best.as_ref().is_none_or(|(b, _)| bytes < *b) {
                                best = Some((bytes, params));
                            }
                        }
                        let (_, params) = best.ok_or_else(|| {
                            cfg_err(name, "no HE parameters fit the embedding table")
                        })?;
                        // the key flight travels with the lookup's first flight
                        acc.bytes += HeClientSetup::setup_cost(&params).bytes;
                        sim.matmul(
                            name,
                            "embedding",
                            &mut acc,
                            &params,
                            MatmulShape::new(seq, vocab, h),
                            EMBEDDING_POLICY,
                        )?;
                    }
                    EmbeddingMode::ServerKey => {
                        let params = ServerKeyEmbedding::params(ring.bits()).map_err(at(name))?;
                        let (online, cached) =
                            ServerKeyEmbedding::cost(&params, seq, vocab, h).map_err(at(name))?;
                        acc.bytes += online.bytes + cached.bytes;
                        acc.flights += online.rounds + cached.rounds;
                        out.cached_bytes += cached.bytes;
                        let scale = params.degree() as f64 / 8192.0;
                        let products = if params.degree() == 4096 {
                            &mut acc.work.he_products_4096
                        } else {
                            &mut acc.work.he_products
                        };
                        *products += seq as f64 * if params.degree() == 4096 { 1.0 } else { scale };
                        let cts = ServerKeyEmbedding::table_ciphertexts(&params, vocab, h)
                            .map_err(at(name))?;
                        // the table's encryption (server) and per token one product (client)
                        // and one decryption (server)
                        acc.work.encryptions += cts as f64 * scale;
                        acc.work.decryptions += seq as f64 * scale;
                    }
                }
                (OpKind::Embedding, (seq, h))
            }
            Op::Linear { in_dim, cols, .. } => {
                let (n, _) = dim_of(&dims, node, 0);
                let k = cols.1;
                if opts.plan.linear_by_ot(name) {
                    sim.ot_matmul(name, &mut acc, n, *in_dim, k)?;
                } else {
                    let lin = Arc::clone(&sim.lin);
                    sim.matmul(
                        name,
                        "linear",
                        &mut acc,
                        &lin,
                        MatmulShape::new(n, *in_dim, k),
                        opts.plan.linear_policy(name),
                    )?;
                }
                sim.trunc_signed(name, &mut acc, n * k, opts.weight_frac)?;
                (OpKind::Linear, (n, k))
            }
            Op::LayerNorm { .. } | Op::RmsNorm { .. } => {
                let (n, k) = dim_of(&dims, node, 0);
                let kind = if matches!(node.op, Op::LayerNorm { .. }) {
                    NormKind::LayerNorm
                } else {
                    NormKind::RmsNorm
                };
                let mut cfg = opts.protocol.norm.config(opts.frac);
                cfg.in_bits = opts.norm_in_bits;
                cfg.gamma_bits = opts.gamma_bits;
                cfg.out_bits = cfg.ring_bits.max(ring.bits());
                sim.nl(name, format!("norm {kind:?} {n} {k}"), &mut acc, |nc| {
                    norm_cost(kind, &[n, k], ring, opts.frac, &cfg, nc)
                })?;
                // the output ring is at least the activation ring: a local reduction
                (OpKind::Norm, (n, k))
            }
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                rope_theta,
                ..
            } => {
                let (n, hd, heads) = (seq, *head_dim, *heads);
                if *kv_heads == 0 || heads % kv_heads != 0 || hd == 0 {
                    return Err(ModelError::Input(format!(
                        "{name}: {heads} heads over {kv_heads} key heads"
                    )));
                }
                let f = opts.frac;
                if rope_theta.is_some() {
                    sim.trunc_signed(name, &mut acc, n * heads * hd, f)?;
                    sim.trunc_signed(name, &mut acc, n * kv_heads * hd, f)?;
                }
                sim.shared_matmul(name, &mut acc, SharedShape::new(heads, n, hd, n))?;
                let fs = opts.score_frac;
                sim.trunc_signed(name, &mut acc, heads * n * n, 2 * f - fs)?;
                push(
                    &mut out,
                    format!("{name}.scores"),
                    OpKind::AttentionMatmul,
                    &acc,
                );
                let mut acc = Acc::default();
                let cfg = opts.protocol.softmax.config();
                sim.nl(name, format!("softmax {heads} {n}"), &mut acc, |nc| {
                    softmax_cost(&[heads * n, n], ring, fs, &cfg, nc)
                })?;
                let out_ring = Ring::new(cfg.out_bits).map_err(at(name))?;
                sim.convert(name, &mut acc, heads * n * n, out_ring, true)?;
                push(&mut out, format!("{name}.softmax"), OpKind::Softmax, &acc);
                let mut acc = Acc::default();
                sim.shared_matmul(name, &mut acc, SharedShape::new(heads, n, n, hd))?;
                sim.trunc_signed(name, &mut acc, heads * n * hd, cfg.exp.frac)?;
                push(
                    &mut out,
                    format!("{name}.context"),
                    OpKind::AttentionMatmul,
                    &acc,
                );
                if let Some(d) = dims.get_mut(i) {
                    *d = (n, heads * hd);
                }
                continue;
            }
            Op::Activation(a) => {
                let (r, k) = dim_of(&dims, node, 0);
                let fmt = ActFormat::new(ring, opts.frac, opts.act_range_bits).map_err(at(name))?;
                let p = opts.protocol;
                let n = r * k;
                sim.nl(name, format!("act {a:?} {n}"), &mut acc, |nc| match a {
                    Activation::GeluErf => gelu_cost(n, fmt, p.gelu, nc),
                    Activation::GeluTanh => gelu_new_cost(n, fmt, nc),
                    Activation::Silu => silu_cost(n, fmt, p.silu, nc),
                })?;
                // activations return shares in the activation ring: no conversion
                (OpKind::Activation, (r, k))
            }
            Op::LastRow => {
                let (_, k) = dim_of(&dims, node, 0);
                (OpKind::Linear, (1, k))
            }
            Op::Add => (OpKind::Elementwise, dim_of(&dims, node, 0)),
            Op::Mul => {
                let (r, k) = dim_of(&dims, node, 0);
                let n = r * k;
                match opts.plan.elementwise {
                    MulBackend::Cot => {
                        sim.nl(name, format!("mul {n}"), &mut acc, |nc| {
                            Ok(nl::mul_cost(n, ring, nc))
                        })?;
                    }
                    MulBackend::He => {
                        let params =
                            SlotParameters::new(RingBits(ring.bits())).map_err(at(name))?;
                        if !sim.he_mul_ready {
                            // the key flight travels with the product's first flight
                            acc.bytes += HeMulClientSetup::setup_cost(&params).bytes;
                            sim.he_mul_ready = true;
                        }
                        let cost = HeElementwiseMul::cost(n, &params);
                        acc.bytes += cost.bytes;
                        acc.flights += cost.rounds;
                        acc.work.slot_products += cost.products as f64;
                    }
                }
                sim.trunc_signed(name, &mut acc, n, opts.frac)?;
                (OpKind::Elementwise, (r, k))
            }
        };
        if let Some(slot) = dims.get_mut(i) {
            *slot = d;
        }
        push(&mut out, node.name.clone(), kind, &acc);
    }
    // the output: the server's share of the last hidden state, and of the logits
    let mut acc = Acc::default();
    let elems = |id: usize| dims.get(id).map_or(0, |(r, c)| r * c) as u64;
    acc.bytes += 8 * elems(graph.output);
    acc.flights += 1;
    if let Some(l) = graph.logits {
        acc.bytes += 8 * elems(l);
    }
    push(&mut out, "output".into(), OpKind::Output, &acc);
    Ok(out)
}
