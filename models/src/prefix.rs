//! A public prefix before a private prompt (a system prompt, a shared document): the server,
//! which holds the weights, runs the prefix in the clear ([`crate::run_reference_traced`])
//! and keeps each attention layer's keys (after rotary positions) and values; the private
//! positions then attend to them with known-operand products ([`duet_protocols::prefix`]).
//! Both parties know the prefix's ids; the client holds only its length.
//!
//! The prefix's hidden states never enter the secure run: in a causal decoder a later position
//! reads earlier ones only through their keys and values.

use crate::graph::{Graph, Op};
use crate::reference::{run_reference_traced, WeightSource};
use crate::walk::WalkState;
use crate::{ModelError, Result};
use duet_protocols::{PrefixKv, SecureOptions, MAX_PREFIX};
use std::time::Instant;

/// `(kv_heads * head_dim, head_dim, rope theta)` of every attention node, in order.
fn attention_shapes(graph: &Graph) -> Vec<(usize, usize, Option<f64>)> {
    graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Attention {
                kv_heads,
                head_dim,
                rope_theta,
                ..
            } => Some((kv_heads * head_dim, *head_dim, *rope_theta)),
            _ => None,
        })
        .collect()
}

/// Checks a prefix of `len` positions against the model: a decoder, below its context less
/// one position.
pub fn check_prefix_len(graph: &Graph, len: usize) -> Result<()> {
    let causal = graph
        .nodes
        .iter()
        .any(|n| matches!(n.op, Op::Attention { causal: true, .. }));
    if graph.logits.is_none() || !causal {
        return Err(ModelError::Input(
            "a public prefix needs a decoder (causal attention)".into(),
        ));
    }
    let max = graph.config.max_positions.min(MAX_PREFIX + 1);
    if len == 0 || len >= max {
        return Err(ModelError::Input(format!(
            "a public prefix of {len} tokens (1..{max})"
        )));
    }
    Ok(())
}

/// The walk state of a party that does not hold the weights (the client, the cost model):
/// the prefix's length per layer.
pub fn public_prefix<T>(graph: &Graph, len: usize) -> Result<WalkState<T>> {
    check_prefix_len(graph, len)?;
    let layers = attention_shapes(graph)
        .into_iter()
        .map(|(w, _, _)| PrefixKv::public(len, w))
        .collect();
    Ok(WalkState::with_prefix(layers, len))
}

/// Rotary positions on `rows x width` keys in the clear (HuggingFace's rotate-half pairs, the
/// rotation of [`duet_protocols::attention`]).
fn rope(keys: &mut [f64], width: usize, hd: usize, theta: f64) {
    let half = hd / 2;
    for (t, row) in keys.chunks_exact_mut(width.max(1)).enumerate() {
        for head in row.chunks_exact_mut(hd.max(1)) {
            for i in 0..half {
                let w = theta.powf(-2.0 * i as f64 / hd as f64);
                let (s, c) = (t as f64 * w).sin_cos();
                if let (Some(&a), Some(&b)) = (head.get(i), head.get(i + half)) {
                    if let Some(x) = head.get_mut(i) {
                        *x = a * c - b * s;
                    }
                    if let Some(x) = head.get_mut(i + half) {
                        *x = b * c + a * s;
                    }
                }
            }
        }
    }
}

/// The server's walk state for a public prefix `ids`: the prefix run in the clear with its
/// weights, each layer's keys (rotated) and values encoded for `opts`. Returns it and the
/// plaintext seconds.
pub fn server_prefix<T>(
    graph: &Graph,
    weights: &dyn WeightSource,
    ids: &[u32],
    opts: &SecureOptions,
) -> Result<(WalkState<T>, f64)> {
    check_prefix_len(graph, ids.len())?;
    if opts.public_base.is_some() {
        return Err(ModelError::Input(
            "a public prefix in LoRA mode is not supported (run the adapters merged)".into(),
        ));
    }
    let t = Instant::now();
    let shapes = attention_shapes(graph);
    let mut kv: Vec<(Vec<f64>, Vec<f64>)> = Vec::with_capacity(shapes.len());
    let mut failed: Option<ModelError> = None;
    run_reference_traced(graph, &Src(weights), ids, &mut |node, ins, _| {
        if let (Op::Attention { .. }, [_, k, v]) = (&node.op, ins) {
            kv.push((k.data.clone(), v.data.clone()));
        } else if matches!(node.op, Op::Attention { .. }) && failed.is_none() {
            failed = Some(ModelError::Input(format!("{}: no keys or values", node.name)));
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    if kv.len() != shapes.len() {
        return Err(ModelError::Input(format!(
            "the prefix run gave {} attention layers of {}",
            kv.len(),
            shapes.len()
        )));
    }
    let n = ids.len();
    let layers = kv
        .into_iter()
        .zip(shapes)
        .map(|((mut k, v), (width, hd, theta))| {
            if let Some(theta) = theta {
                rope(&mut k, width, hd, theta);
            }
            PrefixKv::encode(opts, n, width, &k, &v).map_err(|e| ModelError::Secure {
                node: "public prefix".into(),
                source: e,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((WalkState::with_prefix(layers, n), t.elapsed().as_secs_f64()))
}

/// A `&dyn WeightSource` as a sized one.
struct Src<'a>(&'a dyn WeightSource);

impl WeightSource for Src<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        self.0.get(name, shape)
    }
}
