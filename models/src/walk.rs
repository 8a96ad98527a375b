//! The model walk: a [`Graph`] run node by node on any [`Backend`], written once.
//!
//! With [`duet_protocols::SecureBackend`] it is the secure run between the two parties (the
//! server passes its weights, the client its token ids); with [`duet_protocols::CostBackend`]
//! it is the cost model's prediction of that run, exact in bytes because it is the same walk
//! over the same operators ([`mod@crate::secure::predict`]). The walk owns what is model-specific:
//! which tensor each node reads and how it is laid out (`[out, in]` or `[in, out]`, fused
//! query/key/value columns), the fixed-point encoding of the server's weights (with their range
//! checks), the attention scale folded into the query weights, positions and token types; the
//! operators are `duet-protocols`'.
//!
//! A [`WalkState`] carries what persists between the runs of a session: each attention
//! layer's [`KvCache`] and the position of the next token, so generation is a prefill walk
//! followed by one walk per new token.

use crate::config::Activation;
use crate::graph::{Graph, Node, NodeId, Op, WeightLayout};
use crate::reference::WeightSource;
use crate::{ModelError, Result};
use duet_protocols::nonlinear::norm::{NormKind, NormWeights};
use duet_protocols::{
    attention, ActKind, AttentionSpec, Backend, KvCache, OpKind, ProtocolError, QuantLinear, Tokens,
};

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

/// What persists between the walks of one session (generation): each attention layer's keys
/// and values, and the number of positions seen.
#[derive(Debug)]
pub struct WalkState<T> {
    caches: Vec<KvCache<T>>,
    position: usize,
}

impl<T> WalkState<T> {
    /// A fresh state (no positions seen).
    pub fn new() -> Self {
        Self {
            caches: Vec::new(),
            position: 0,
        }
    }

    /// A state after a public prefix of `len` positions: one cache per attention layer, in
    /// order, each starting with that layer's prefix ([`crate::prefix`]).
    pub fn with_prefix(layers: Vec<duet_protocols::PrefixKv>, len: usize) -> Self {
        Self {
            caches: layers.into_iter().map(KvCache::with_prefix).collect(),
            position: len,
        }
    }

    /// Positions seen so far (the next token's position).
    pub fn position(&self) -> usize {
        self.position
    }
}

impl<T> Default for WalkState<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The values a walk leaves: the last hidden state and, for graphs with a language-model
/// head, the last position's logits (both still shared).
#[derive(Clone, Debug)]
pub struct WalkOutput<T> {
    /// `rows x hidden`.
    pub hidden: T,
    /// `1 x vocab`.
    pub logits: Option<T>,
}

fn at(node: &str) -> impl FnOnce(ProtocolError) -> ModelError + '_ {
    move |e| ModelError::Secure {
        node: node.to_string(),
        source: e,
    }
}

/// The plan names only linear nodes of `graph` (a misspelt name would silently run the
/// default).
pub fn check_plan(graph: &Graph, plan: &duet_protocols::Plan) -> Result<()> {
    for n in plan.named_nodes() {
        let linear = graph
            .nodes
            .iter()
            .any(|m| m.name == n && matches!(m.op, Op::Linear { .. }));
        if !linear {
            return Err(ModelError::Input(format!(
                "secure options: the plan names {n:?}, which is not a linear layer of the model"
            )));
        }
    }
    Ok(())
}

/// Per node: the factor the server folds into a linear layer's weights (`1/sqrt(d)` for the
/// queries of an attention).
fn weight_factors(graph: &Graph) -> Result<Vec<f64>> {
    let mut scale = vec![1.0; graph.nodes.len()];
    for n in &graph.nodes {
        if let Op::Attention {
            head_dim,
            kernel: duet_protocols::AttentionKernel::Softmax,
            ..
        } = n.op
        {
            let q = n.inputs.first().copied().unwrap_or(usize::MAX);
            match (graph.nodes.get(q).map(|m| &m.op), scale.get_mut(q)) {
                (Some(Op::Linear { .. }), Some(s)) => *s = 1.0 / (head_dim as f64).sqrt(),
                _ => {
                    return Err(ModelError::Input(format!(
                        "{}: the secure walk needs the queries from a linear layer",
                        n.name
                    )))
                }
            }
        }
    }
    Ok(scale)
}

/// Encodes reals at `frac` bits, refusing `|v| >= 2^bits` and non-finite values.
fn quantise(name: &str, v: &[f64], frac: u32, factor: f64, bits: u32) -> Result<Vec<i64>> {
    let limit = (1u64 << bits) as f64;
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

struct Walker<'a, B: Backend> {
    b: &'a mut B,
    graph: &'a Graph,
    weights: Option<&'a dyn WeightSource>,
    factor: Vec<f64>,
}

impl<B: Backend> Walker<'_, B> {
    fn weight(&self, name: &str, shape: &[usize]) -> Result<Option<Vec<f64>>> {
        match (self.b.holds_weights(), self.weights) {
            (true, Some(w)) => Ok(Some(w.get(name, shape)?)),
            (true, None) => Err(ModelError::Input("the server has no weights".into())),
            (false, _) => Ok(None),
        }
    }

    /// The server's `d x k` weights (inputs x used outputs) and bias of a linear node.
    #[allow(clippy::too_many_arguments, reason = "the node's fields")]
    fn linear_weights(
        &self,
        i: NodeId,
        weight: &str,
        bias: Option<&str>,
        d: usize,
        out_total: usize,
        (start, count): (usize, usize),
        layout: WeightLayout,
    ) -> Result<Option<QuantLinear>> {
        let Some(raw) = self.weight(weight, &layout.shape(d, out_total))? else {
            return Ok(None);
        };
        let braw = match bias {
            Some(b) => self.weight(b, &[out_total])?,
            None => None,
        };
        self.quant_linear(
            i,
            (weight, bias),
            raw,
            braw,
            d,
            out_total,
            (start, count),
            layout,
        )
        .map(Some)
    }

    /// A linear node's public base weights (LoRA mode: both parties hold the base model),
    /// quantised as the server would; `None` without a weight source (the cost model).
    #[allow(clippy::too_many_arguments, reason = "the node's fields")]
    fn public_linear_weights(
        &self,
        i: NodeId,
        weight: &str,
        bias: Option<&str>,
        d: usize,
        out_total: usize,
        cols: (usize, usize),
        layout: WeightLayout,
    ) -> Result<Option<QuantLinear>> {
        let Some(src) = self.weights else {
            return Ok(None);
        };
        let raw = src.get(weight, &layout.shape(d, out_total))?;
        let braw = bias.map(|b| src.get(b, &[out_total])).transpose()?;
        self.quant_linear(i, (weight, bias), raw, braw, d, out_total, cols, layout)
            .map(Some)
    }

    /// The server's adapter on a linear node (LoRA mode) as two private linear layers:
    /// `A^T` (`d x r`) and `factor s B^T` restricted to the node's columns (`r x count`);
    /// `(None, None)` on the client.
    fn adapter_weights(
        &self,
        i: NodeId,
        weight: &str,
        (d, out_total, r): (usize, usize, usize),
        (start, count): (usize, usize),
    ) -> Result<(Option<QuantLinear>, Option<QuantLinear>)> {
        if !self.b.holds_weights() {
            return Ok((None, None));
        }
        let pair = match self.weights {
            Some(w) => w.lora_pair(weight)?,
            None => None,
        };
        let Some(pair) = pair else {
            return Err(ModelError::Input(format!(
                "LoRA mode: the layout names an adapter on {weight} that the server does not have"
            )));
        };
        if Some(pair.a.len()) != r.checked_mul(d)
            || Some(pair.b.len()) != out_total.checked_mul(r)
            || start + count > out_total
        {
            return Err(ModelError::Input(format!(
                "LoRA mode: the adapter on {weight} is not of rank {r} for {d} inputs and {out_total} outputs"
            )));
        }
        let o = self.b.options();
        let factor = self.factor.get(i).copied().unwrap_or(1.0);
        let mut a = vec![0.0; d * r];
        let mut b = vec![0.0; r * count];
        for c in 0..r {
            for j in 0..d {
                if let (Some(dst), Some(&v)) = (a.get_mut(j * r + c), pair.a.get(c * d + j)) {
                    *dst = v;
                }
            }
            for oo in 0..count {
                if let (Some(dst), Some(&v)) =
                    (b.get_mut(c * count + oo), pair.b.get((start + oo) * r + c))
                {
                    *dst = v;
                }
            }
        }
        let aq = quantise(
            &format!("{weight} (lora_A)"),
            &a,
            o.weight_frac,
            1.0,
            o.weight_bits,
        )?;
        let bq = quantise(
            &format!("{weight} (lora_B)"),
            &b,
            o.weight_frac,
            factor * pair.scale,
            o.weight_bits,
        )?;
        Ok((
            Some(QuantLinear { w: aq, bias: None }),
            Some(QuantLinear { w: bq, bias: None }),
        ))
    }

    /// Slices a linear node's columns out of its raw tensor and quantises weights and bias.
    #[allow(clippy::too_many_arguments, reason = "the node's fields")]
    fn quant_linear(
        &self,
        i: NodeId,
        (weight, bias): (&str, Option<&str>),
        raw: Vec<f64>,
        braw: Option<Vec<f64>>,
        d: usize,
        out_total: usize,
        (start, count): (usize, usize),
        layout: WeightLayout,
    ) -> Result<QuantLinear> {
        let o = self.b.options();
        let factor = self.factor.get(i).copied().unwrap_or(1.0);
        let k = count;
        let mut w = vec![0.0; d * k];
        for r in 0..d {
            for c in 0..k {
                let v = match layout {
                    WeightLayout::OutIn => raw.get((start + c) * d + r),
                    WeightLayout::InOut => raw.get(r * out_total + start + c),
                };
                if let (Some(dst), Some(&v)) = (w.get_mut(r * k + c), v) {
                    *dst = v;
                }
            }
        }
        drop(raw);
        let wq = quantise(weight, &w, o.weight_frac, factor, o.weight_bits)?;
        let bias = match braw {
            Some(all) => {
                let used = all.get(start..start + k).unwrap_or(&[]);
                // the bias is added at frac + weight_frac bits; it is bounded like a value
                // there (|b| < 2^max(norm_in, act_range))
                let bits = o.norm_in_bits.max(o.act_range_bits);
                Some(quantise(
                    bias.unwrap_or(""),
                    used,
                    o.frac + o.weight_frac,
                    factor,
                    bits,
                )?)
            }
            None => None,
        };
        Ok(QuantLinear { w: wq, bias })
    }

    fn norm_weights(&self, gamma: &str, beta: Option<&str>) -> Result<Option<NormWeights>> {
        let h = self.graph.config.hidden;
        let Some(g) = self.weight(gamma, &[h])? else {
            return Ok(None);
        };
        let o = self.b.options();
        let limit = (1u64 << o.gamma_bits) as f64;
        if let Some(&bad) = g.iter().find(|v| !v.is_finite() || v.abs() >= limit) {
            return Err(ModelError::WeightRange {
                name: gamma.into(),
                value: bad,
                limit,
            });
        }
        let beta = match beta {
            Some(b) => {
                let v = self.weight(b, &[h])?.unwrap_or_default();
                let limit = (1u64 << o.norm_in_bits.max(o.act_range_bits)) as f64;
                if let Some(&bad) = v.iter().find(|x| !x.is_finite() || x.abs() >= limit) {
                    return Err(ModelError::WeightRange {
                        name: b.into(),
                        value: bad,
                        limit,
                    });
                }
                v
            }
            None => Vec::new(),
        };
        Ok(Some(NormWeights { gamma: g, beta }))
    }

    /// The token embedding, plus learned positions `offset ..` and token type 0 (public rows
    /// added to the server's share).
    fn embedding(
        &mut self,
        name: &str,
        (word, position, token_type): (&str, Option<&str>, Option<&str>),
        tokens: Tokens<'_>,
        offset: usize,
    ) -> Result<B::T> {
        let c = &self.graph.config;
        let (n, vocab, h) = (tokens.len(), c.vocab_size, c.hidden);
        if offset + n > c.max_positions {
            return Err(ModelError::Input(format!(
                "positions {offset}..{} beyond the model's {}",
                offset + n,
                c.max_positions
            )));
        }
        let o = self.b.options().clone();
        let table = match self.weight(word, &[vocab, h])? {
            Some(t) => Some(quantise(word, &t, o.frac, 1.0, o.weight_bits)?),
            None => None,
        };
        let s = self
            .b
            .embed(tokens, table.as_deref(), vocab, h)
            .map_err(at(name))?;
        drop(table);
        let ring = self.b.ring();
        let scale = (1u64 << o.frac) as f64;
        let encode = |v: f64| ring.from_i64((v * scale).round() as i64);
        let mut add: Option<Vec<u64>> = None;
        if let Some(p) = position {
            if let Some(pos) = self.weight(p, &[c.max_positions, h])? {
                let rows = pos.get(offset * h..(offset + n) * h).unwrap_or(&[]);
                let acc = add.get_or_insert_with(|| vec![0; n * h]);
                for (a, &v) in acc.iter_mut().zip(rows) {
                    *a = ring.add(*a, encode(v));
                }
            }
        }
        if let Some(t) = token_type {
            if let Some(types) = self.weight(t, &[c.type_vocab_size, h])? {
                let row = types.get(..h).unwrap_or(&[]);
                let acc = add.get_or_insert_with(|| vec![0; n * h]);
                for (k, a) in acc.iter_mut().enumerate() {
                    *a = ring.add(*a, encode(row.get(k % h).copied().unwrap_or(0.0)));
                }
            }
        }
        self.b
            .add_server_constant(&s, add.as_deref())
            .map_err(at(name))
    }
}

/// Walks `graph` on `tokens` (the client's ids, or their count) with `b`: the server passes
/// its `weights`. With a `state`, the tokens are positions `state.position() ..` and every
/// attention layer reads and extends its cache (generation); without, they are positions
/// `0 ..` and nothing is kept. Every node is recorded on `b` under its name (attention as
/// three parts); `progress` is called after each.
pub fn walk<B: Backend>(
    b: &mut B,
    graph: &Graph,
    weights: Option<&dyn WeightSource>,
    tokens: Tokens<'_>,
    mut state: Option<&mut WalkState<B::T>>,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<WalkOutput<B::T>> {
    check_plan(graph, &b.options().plan)?;
    if tokens.is_empty() {
        return Err(ModelError::Input("no tokens".into()));
    }
    let offset = state.as_ref().map_or(0, |s| s.position);
    let factor = weight_factors(graph)?;
    let mut w = Walker {
        b,
        graph,
        weights,
        factor,
    };
    let mut last_use = vec![0usize; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &j in &n.inputs {
            if let Some(l) = last_use.get_mut(j) {
                *l = i;
            }
        }
    }
    let mut vals: Vec<Option<B::T>> = vec![None; graph.nodes.len()];
    let mut layer = 0usize;
    let total = graph.nodes.len();
    for (i, node) in graph.nodes.iter().enumerate() {
        let input = |k: usize| -> Result<&B::T> {
            node.inputs
                .get(k)
                .and_then(|&j| vals.get(j))
                .and_then(Option::as_ref)
                .ok_or_else(|| ModelError::Input(format!("node {} lacks input {k}", node.name)))
        };
        let out = match &node.op {
            Op::Input => None,
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                causal,
                rope_theta,
                kernel,
            } => {
                let spec = AttentionSpec {
                    heads: *heads,
                    kv_heads: *kv_heads,
                    head_dim: *head_dim,
                    causal: *causal,
                    rope_theta: *rope_theta,
                    kernel: *kernel,
                };
                let (q, k, v) = (input(0)?.clone(), input(1)?.clone(), input(2)?.clone());
                let cache = match state.as_deref_mut() {
                    Some(s) => {
                        if s.caches.len() <= layer {
                            s.caches.resize_with(layer + 1, KvCache::default);
                        }
                        s.caches.get_mut(layer)
                    }
                    None => None,
                };
                layer += 1;
                Some(
                    attention(w.b, &node.name, &spec, &q, &k, &v, offset, cache)
                        .map_err(at(&node.name))?,
                )
            }
            _ if vals.get(i).is_some_and(Option::is_some) => {
                // computed with an earlier node (a fused linear group)
                vals.get_mut(i).and_then(Option::take)
            }
            Op::Linear { .. }
                if w.b.options().public_base.is_none()
                    && fused_group(graph, i, &w.b.options().plan).len() > 1 =>
            {
                let group = fused_group(graph, i, &w.b.options().plan);
                let x = input(0)?.clone();
                let names: Vec<&str> = group.iter().map(|&j| node_name(graph, j)).collect();
                let joined = names.join("+");
                w.b.begin();
                let ys = fused_linears(&mut w, &group, &x)?;
                w.b.finish(&joined, OpKind::Linear, group.len() as u64);
                let mut ys = ys.into_iter();
                let first = ys.next();
                for (&j, y) in group.iter().skip(1).zip(ys) {
                    if let Some(v) = vals.get_mut(j) {
                        *v = Some(y);
                    }
                }
                first
            }
            _ => {
                w.b.begin();
                let (kind, y) = node_op(&mut w, i, node, &vals, tokens, offset)?;
                w.b.finish(&node.name, kind, 1);
                Some(y)
            }
        };
        if let Some(v) = vals.get_mut(i) {
            *v = out;
        }
        for &j in &node.inputs {
            if last_use.get(j) == Some(&i) && j != graph.output && Some(j) != graph.logits {
                if let Some(v) = vals.get_mut(j) {
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
    if let Some(s) = state {
        s.position += tokens.len();
    }
    let take = |id: NodeId, vals: &mut Vec<Option<B::T>>| {
        vals.get_mut(id)
            .and_then(Option::take)
            .ok_or_else(|| ModelError::Input("the graph produced no output".into()))
    };
    let logits = match graph.logits {
        Some(l) => Some(take(l, &mut vals)?),
        None => None,
    };
    Ok(WalkOutput {
        hidden: take(graph.output, &mut vals)?,
        logits,
    })
}

fn node_name(graph: &Graph, j: NodeId) -> &str {
    graph.nodes.get(j).map_or("", |n| n.name.as_str())
}

/// The linear nodes from `i` on that run as one fused product: consecutive linear nodes
/// reading the same input, when the plan runs linear layers with split packing and none of
/// them by OT (`[i]` alone otherwise).
fn fused_group(graph: &Graph, i: NodeId, plan: &duet_protocols::Plan) -> Vec<NodeId> {
    let first = match graph.nodes.get(i) {
        Some(n) if matches!(n.op, Op::Linear { .. }) => n,
        _ => return vec![i],
    };
    if !plan.fuses_linear(&[first.name.as_str()]) {
        return vec![i];
    }
    let policy = plan.linear_policy(&first.name);
    let mut group = vec![i];
    for (j, n) in graph.nodes.iter().enumerate().skip(i + 1) {
        let same = matches!(
            (&n.op, &first.op),
            (Op::Linear { in_dim: a, .. }, Op::Linear { in_dim: b, .. }) if a == b
        ) && n.inputs == first.inputs
            && !plan.linear_by_ot(&n.name)
            && plan.linear_policy(&n.name) == policy;
        if !same {
            break;
        }
        group.push(j);
    }
    group
}

/// The fused product of a group from [`fused_group`]: every node's weights, one
/// [`Backend::linear_many`] call.
fn fused_linears<B: Backend>(
    w: &mut Walker<'_, B>,
    group: &[NodeId],
    x: &B::T,
) -> Result<Vec<B::T>> {
    let mut names = Vec::with_capacity(group.len());
    let mut weights = Vec::with_capacity(group.len());
    let mut ks = Vec::with_capacity(group.len());
    let mut d = 0;
    for &j in group {
        let Some(Node {
            name,
            op:
                Op::Linear {
                    weight,
                    bias,
                    in_dim,
                    out_total,
                    cols,
                    layout,
                },
            ..
        }) = w.graph.nodes.get(j)
        else {
            return Err(ModelError::Input(format!("node {j} is not a linear layer")));
        };
        names.push(name.as_str());
        weights.push(w.linear_weights(
            j,
            weight,
            bias.as_deref(),
            *in_dim,
            *out_total,
            *cols,
            *layout,
        )?);
        ks.push(cols.1);
        d = *in_dim;
    }
    let refs: Vec<Option<&QuantLinear>> = weights.iter().map(Option::as_ref).collect();
    w.b.linear_many(&names, x, &refs, d, &ks)
        .map_err(at(&names.join("+")))
}

/// One node other than the input and attention: its kind and value.
fn node_op<B: Backend>(
    w: &mut Walker<'_, B>,
    i: NodeId,
    node: &Node,
    vals: &[Option<B::T>],
    tokens: Tokens<'_>,
    offset: usize,
) -> Result<(OpKind, B::T)> {
    let name = node.name.as_str();
    let input = |k: usize| -> Result<&B::T> {
        node.inputs
            .get(k)
            .and_then(|&j| vals.get(j))
            .and_then(Option::as_ref)
            .ok_or_else(|| ModelError::Input(format!("node {name} lacks input {k}")))
    };
    Ok(match &node.op {
        Op::Embedding {
            word,
            position,
            token_type,
        } => (
            OpKind::Embedding,
            w.embedding(
                name,
                (word, position.as_deref(), token_type.as_deref()),
                tokens,
                offset,
            )?,
        ),
        Op::Linear {
            weight,
            bias,
            in_dim,
            out_total,
            cols,
            layout,
        } if w.b.options().public_base.is_some() => {
            let x = input(0)?;
            let base = w.public_linear_weights(
                i,
                weight,
                bias.as_deref(),
                *in_dim,
                *out_total,
                *cols,
                *layout,
            )?;
            let y =
                w.b.linear_public(name, x, base.as_ref(), *in_dim, cols.1)
                    .map_err(at(name))?;
            drop(base);
            let rank =
                w.b.options()
                    .public_base
                    .as_ref()
                    .and_then(|l| l.rank(weight));
            let y = match rank {
                Some(r) => {
                    let (a, sb) = w.adapter_weights(i, weight, (*in_dim, *out_total, r), *cols)?;
                    let u =
                        w.b.linear(&format!("{name}.lora_a"), x, a.as_ref(), *in_dim, r)
                            .map_err(at(name))?;
                    let v =
                        w.b.linear(&format!("{name}.lora_b"), &u, sb.as_ref(), r, cols.1)
                            .map_err(at(name))?;
                    w.b.add(&y, &v).map_err(at(name))?
                }
                None => y,
            };
            (OpKind::Linear, y)
        }
        Op::Linear {
            weight,
            bias,
            in_dim,
            out_total,
            cols,
            layout,
        } => {
            let q = w.linear_weights(
                i,
                weight,
                bias.as_deref(),
                *in_dim,
                *out_total,
                *cols,
                *layout,
            )?;
            let x = input(0)?;
            (
                OpKind::Linear,
                w.b.linear(name, x, q.as_ref(), *in_dim, cols.1)
                    .map_err(at(name))?,
            )
        }
        Op::LayerNorm { gamma, beta, .. } => {
            let nw = w.norm_weights(gamma, Some(beta))?;
            let x = input(0)?;
            (
                OpKind::Norm,
                w.b.norm(NormKind::LayerNorm, x, nw.as_ref())
                    .map_err(at(name))?,
            )
        }
        Op::RmsNorm { gamma, .. } => {
            let nw = w.norm_weights(gamma, None)?;
            let x = input(0)?;
            (
                OpKind::Norm,
                w.b.norm(NormKind::RmsNorm, x, nw.as_ref())
                    .map_err(at(name))?,
            )
        }
        Op::Activation(a) => {
            let kind = match a {
                Activation::GeluErf => ActKind::Gelu,
                Activation::GeluTanh => ActKind::GeluTanh,
                Activation::Silu => ActKind::Silu,
            };
            let x = input(0)?;
            (
                OpKind::Activation,
                w.b.activation(kind, x).map_err(at(name))?,
            )
        }
        Op::LastRow => {
            let x = input(0)?;
            let (rows, cols) = w.b.dims(x);
            let last = rows.saturating_sub(1) * cols;
            (
                OpKind::Linear,
                w.b.gather(x, 1, cols, &|j| last + j).map_err(at(name))?,
            )
        }
        Op::Add => {
            let (a, c) = (input(0)?, input(1)?);
            (OpKind::Elementwise, w.b.add(a, c).map_err(at(name))?)
        }
        Op::Mul => {
            let (a, c) = (input(0)?, input(1)?);
            (OpKind::Elementwise, w.b.mul(a, c).map_err(at(name))?)
        }
        Op::Input | Op::Attention { .. } => {
            return Err(ModelError::Input(format!("{name}: not a plain node")))
        }
    })
}
