//! A public prefix before a private prompt (a system prompt, a shared document): the server,
//! which holds the weights, runs the prefix in the clear ([`crate::run_reference_traced`])
//! and keeps each attention layer's keys (after rotary positions) and values; the private
//! positions then attend to them with known-operand products ([`duet_protocols::prefix`]).
//! Both parties know the prefix's ids; the client holds only its length.
//!
//! The prefix's hidden states never enter the secure run: in a causal decoder a later position
//! reads earlier ones only through their keys and values.

use crate::graph::{Graph, Op};
use crate::reference::{rope, run_reference_traced, Matrix, WeightSource};
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
        .map(|_| PrefixKv::public(len))
        .collect();
    Ok(WalkState::with_prefix(layers, len))
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
    let (layers, seconds) = server_prefix_layers(graph, weights, ids, opts)?;
    Ok((WalkState::with_prefix(layers, ids.len()), seconds))
}

/// Most prefixes a [`PrefixCache`] keeps by default.
pub const DEFAULT_PREFIX_CACHE: usize = 4;

/// The keys and values of public prefixes a server keeps across sessions of one model,
/// keyed by a SHA-256 of the prefix's ids and the fixed-point format they were encoded for;
/// the least recently used is dropped beyond its capacity. A hit skips the plaintext run.
#[derive(Debug)]
pub struct PrefixCache {
    cap: usize,
    entries: std::sync::Mutex<Vec<([u8; 32], Vec<PrefixKv>)>>,
}

impl Default for PrefixCache {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX_CACHE)
    }
}

impl PrefixCache {
    /// A cache of at most `cap` prefixes (0: keeps none).
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            entries: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn key(ids: &[u32], opts: &SecureOptions) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for v in [opts.frac, opts.weight_frac, opts.weight_bits] {
            h.update(v.to_le_bytes());
        }
        h.update((ids.len() as u64).to_le_bytes());
        for id in ids {
            h.update(id.to_le_bytes());
        }
        h.finalize().into()
    }

    /// [`server_prefix`] through the cache: the state, the seconds spent (the plaintext run,
    /// or the lookup on a hit) and whether it was a hit.
    pub fn server_prefix<T>(
        &self,
        graph: &Graph,
        weights: &dyn WeightSource,
        ids: &[u32],
        opts: &SecureOptions,
    ) -> Result<(WalkState<T>, f64, bool)> {
        let t = Instant::now();
        let key = Self::key(ids, opts);
        let hit = {
            let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let at = e.iter().position(|(k, _)| *k == key);
            at.map(|i| {
                let entry = e.remove(i);
                let layers = entry.1.clone();
                e.push(entry);
                layers
            })
        };
        if let Some(layers) = hit {
            let s = t.elapsed().as_secs_f64();
            return Ok((WalkState::with_prefix(layers, ids.len()), s, true));
        }
        let (layers, seconds) = server_prefix_layers(graph, weights, ids, opts)?;
        if self.cap > 0 {
            let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            while e.len() >= self.cap {
                e.remove(0);
            }
            e.push((key, layers.clone()));
        }
        Ok((WalkState::with_prefix(layers, ids.len()), seconds, false))
    }

    /// Prefixes held.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Each attention layer's prefix keys and values (see [`server_prefix`]) and the seconds.
fn server_prefix_layers(
    graph: &Graph,
    weights: &dyn WeightSource,
    ids: &[u32],
    opts: &SecureOptions,
) -> Result<(Vec<PrefixKv>, f64)> {
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
            failed = Some(ModelError::Input(format!(
                "{}: no keys or values",
                node.name
            )));
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
                let mut m = Matrix {
                    rows: n,
                    cols: width,
                    data: std::mem::take(&mut k),
                };
                rope(&mut m, width / hd.max(1), hd, theta);
                k = m.data;
            }
            PrefixKv::encode(opts, n, (width, hd), &k, &v).map_err(|e| ModelError::Secure {
                node: "public prefix".into(),
                source: e,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((layers, t.elapsed().as_secs_f64()))
}

/// A `&dyn WeightSource` as a sized one.
struct Src<'a>(&'a dyn WeightSource);

impl WeightSource for Src<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        self.0.get(name, shape)
    }
}
