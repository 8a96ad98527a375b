//! Block shapes, packing groups and exact traffic of one `n x d x k` HE product.
//!
//! The product is cut into `n_b x d_b x k_b` blocks ([`MatmulLayout`], `n_b d_b k_b <= N`). The
//! client encrypts one polynomial per (row block, inner block) of its matrix; the server
//! accumulates, for each (row block, column block), `sum_ib ct[rb][ib] * w[ib][cb]`, merges `pack`
//! consecutive column blocks of a row block into one ciphertext ([`duet_fhe::MacAccumulator::pack`]) and
//! returns one output ciphertext per such group with exactly the useful coefficients.

use std::sync::Arc;

use duet_fhe::{LayoutCost, MatmulLayout, RlweParameters, SeededCiphertext};

use super::Cost;
use crate::error::{ProtocolError, Result};

/// Dimensions of `X (n x d) . W (d x k)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MatmulShape {
    /// Rows of `X` (tokens).
    pub n: usize,
    /// Inner dimension.
    pub d: usize,
    /// Columns of `W`.
    pub k: usize,
}

impl MatmulShape {
    /// `n x d x k`.
    pub fn new(n: usize, d: usize, k: usize) -> Self {
        Self { n, d, k }
    }

    fn check(&self) -> Result<()> {
        if self.n == 0 || self.d == 0 || self.k == 0 {
            return Err(ProtocolError::Config(format!(
                "empty matrix product {}x{}x{}",
                self.n, self.d, self.k
            )));
        }
        Ok(())
    }
}

impl core::fmt::Display for MatmulShape {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}x{}x{}", self.n, self.d, self.k)
    }
}

/// How [`MatmulPlan::new`] picks the block shape. Both parties must use the same policy (it is
/// part of the public protocol configuration).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum LayoutPolicy {
    /// Fewest bytes ([`MatmulLayout::best`], packing as much as the parameters allow).
    #[default]
    MinBytes,
    /// Fewest server key switches (the dominant compute) among layouts whose total bytes stay
    /// within `max_bytes`; ties broken by bytes. For a batch of products
    /// ([`MatmulPlan::batch`]) the budget covers the whole batch.
    FewestKeySwitches {
        /// Byte budget of this product or batch (both directions).
        max_bytes: u64,
    },
    /// No packing: the layout with the fewest bytes when every block is returned by extraction
    /// alone (Cheetah-style output); used as the comparison baseline.
    ExtractionOnly,
}

/// Where one output value sits: coefficient `pos` of a group's ciphertext holds `(row, col)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub pos: usize,
    pub row: usize,
    pub col: usize,
}

/// A validated block plan of one `n x d x k` product under one parameter set.
#[derive(Clone, Debug)]
pub struct MatmulPlan {
    params: Arc<RlweParameters>,
    shape: MatmulShape,
    layout: MatmulLayout,
    pack: usize,
    layout_cost: LayoutCost,
}

impl MatmulPlan {
    /// Choose the block shape for `shape` under `policy`.
    pub fn new(
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        policy: LayoutPolicy,
    ) -> Result<Self> {
        shape.check()?;
        let key = search_key(params, shape, policy);
        if let Some((layout, pack, layout_cost)) = searched().get(&key) {
            return Ok(Self {
                params: Arc::clone(params),
                shape,
                layout,
                pack,
                layout_cost,
            });
        }
        let (layout, pack, layout_cost) = match policy {
            LayoutPolicy::MinBytes => {
                let (layout, c) = MatmulLayout::best(params, shape.n, shape.d, shape.k)?;
                (layout, c.pack, c)
            }
            LayoutPolicy::FewestKeySwitches { max_bytes } => search(params, shape, true, |c| {
                let bytes = (c.input_bytes + c.output_bytes) as u64;
                (bytes <= max_bytes).then_some((c.key_switches as u64, bytes))
            })?,
            LayoutPolicy::ExtractionOnly => search(params, shape, false, |c| {
                Some(((c.input_bytes + c.output_bytes) as u64, 0))
            })?,
        };
        searched().put(key, (layout, pack, layout_cost));
        Ok(Self {
            params: Arc::clone(params),
            shape,
            layout,
            pack,
            layout_cost,
        })
    }

    /// A plan with a given block shape and packing factor (`pack` a power of two dividing `d_b`,
    /// at most the parameters' `max_pack`).
    pub fn with_layout(
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        layout: MatmulLayout,
        pack: usize,
    ) -> Result<Self> {
        shape.check()?;
        let layout = MatmulLayout::new(params, layout.n_b, layout.d_b, layout.k_b)?;
        if !pack.is_power_of_two()
            || pack > params.max_pack()
            || layout.d_b % pack != 0
            || layout.k_b > shape.k
        {
            return Err(ProtocolError::Config(format!(
                "packing factor {pack} for blocks {}x{}x{}: need a power of two dividing d_b, <= {}, and k_b <= k",
                layout.n_b, layout.d_b, layout.k_b, params.max_pack()
            )));
        }
        let layout_cost = layout.cost(params, shape.n, shape.d, shape.k, pack);
        if layout_cost.mac_terms > params.mac_terms() {
            return Err(ProtocolError::Config(format!(
                "{} weight terms per output exceed the parameters' budget {}",
                layout_cost.mac_terms,
                params.mac_terms()
            )));
        }
        Ok(Self {
            params: Arc::clone(params),
            shape,
            layout,
            pack,
            layout_cost,
        })
    }

    /// Plans for a batch of products sent in the same flights. `MinBytes` and `ExtractionOnly`
    /// plan each product alone; `FewestKeySwitches { max_bytes }` starts every product at its
    /// fewest-bytes layout and then greedily moves products along their (bytes, key switches)
    /// Pareto frontier, taking the move that saves the most key switches per extra byte, while
    /// the batch total stays within `max_bytes`. Deterministic, so both parties agree.
    pub fn batch(
        params: &Arc<RlweParameters>,
        shapes: &[MatmulShape],
        policy: LayoutPolicy,
    ) -> Result<Vec<Self>> {
        let LayoutPolicy::FewestKeySwitches { max_bytes } = policy else {
            return shapes
                .iter()
                .map(|&s| Self::new(params, s, policy))
                .collect();
        };
        // one frontier per distinct shape
        let mut frontiers: Vec<(MatmulShape, Vec<Candidate>)> = Vec::new();
        for &s in shapes {
            if !frontiers.iter().any(|(t, _)| *t == s) {
                frontiers.push((s, frontier(params, s)?));
            }
        }
        let front_of = |s: &MatmulShape| {
            frontiers
                .iter()
                .find(|(t, _)| t == s)
                .map(|(_, f)| f.as_slice())
                .unwrap_or(&[])
        };
        let bytes = |c: &LayoutCost| (c.input_bytes + c.output_bytes) as u64;
        let mut at = vec![0usize; shapes.len()];
        let mut total: u64 = shapes
            .iter()
            .map(|s| front_of(s).first().map_or(0, |(_, _, c)| bytes(c)))
            .sum();
        if total > max_bytes {
            return Err(ProtocolError::Config(format!(
                "the batch needs at least {total} bytes, over the budget {max_bytes}"
            )));
        }
        loop {
            let mut best: Option<(f64, usize, u64)> = None;
            for (u, s) in shapes.iter().enumerate() {
                let f = front_of(s);
                let i = at.get(u).copied().unwrap_or(0);
                let (Some((_, _, cur)), Some((_, _, nxt))) = (f.get(i), f.get(i + 1)) else {
                    continue;
                };
                let extra = bytes(nxt).saturating_sub(bytes(cur));
                if total + extra > max_bytes {
                    continue;
                }
                let saved = cur.key_switches.saturating_sub(nxt.key_switches) as f64;
                let ratio = saved / (extra.max(1) as f64);
                if best.is_none_or(|(r, ..)| ratio > r) {
                    best = Some((ratio, u, extra));
                }
            }
            let Some((_, u, extra)) = best else { break };
            if let Some(i) = at.get_mut(u) {
                *i += 1;
            }
            total += extra;
        }
        shapes
            .iter()
            .zip(&at)
            .map(|(s, &i)| {
                let (layout, pack, layout_cost) = front_of(s)
                    .get(i)
                    .copied()
                    .ok_or_else(|| ProtocolError::Config(format!("no block layout for {s}")))?;
                Ok(Self {
                    params: Arc::clone(params),
                    shape: *s,
                    layout,
                    pack,
                    layout_cost,
                })
            })
            .collect()
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
    /// Column blocks merged per output ciphertext.
    pub fn pack(&self) -> usize {
        self.pack
    }
    /// The layout's cost breakdown.
    pub fn layout_cost(&self) -> LayoutCost {
        self.layout_cost
    }

    /// Exact online traffic: one flight of `input_count()` seeded ciphertexts from the client,
    /// one flight of `output_count()` output ciphertexts from the server.
    pub fn cost(&self) -> Cost {
        let c = &self.layout_cost;
        Cost {
            bytes: (c.input_bytes + c.output_bytes) as u64,
            rounds: 2,
            client_to_server: c.input_bytes as u64,
            server_to_client: c.output_bytes as u64,
            messages: (c.input_ciphertexts + c.output_ciphertexts) as u64,
            key_switches: c.key_switches as u64,
            products: (self.row_blocks() * self.inner_blocks() * self.col_blocks()) as u64,
        }
    }

    pub(crate) fn row_blocks(&self) -> usize {
        self.shape.n.div_ceil(self.layout.n_b)
    }
    pub(crate) fn inner_blocks(&self) -> usize {
        self.shape.d.div_ceil(self.layout.d_b)
    }
    pub(crate) fn col_blocks(&self) -> usize {
        self.shape.k.div_ceil(self.layout.k_b)
    }
    pub(crate) fn groups_per_row(&self) -> usize {
        self.col_blocks().div_ceil(self.pack)
    }
    /// Client messages: one seeded ciphertext per (row block, inner block).
    pub fn input_count(&self) -> usize {
        self.row_blocks() * self.inner_blocks()
    }
    /// Server messages: one output ciphertext per (row block, packing group).
    pub fn output_count(&self) -> usize {
        self.row_blocks() * self.groups_per_row()
    }
    /// Bytes of one input message.
    pub fn input_message_len(&self) -> usize {
        SeededCiphertext::serialized_len(&self.params)
    }

    /// Rows `[start, end)` of row block `rb`.
    pub(crate) fn rows(&self, rb: usize) -> (usize, usize) {
        let s = rb * self.layout.n_b;
        (s, (s + self.layout.n_b).min(self.shape.n))
    }
    /// Inner indices `[start, end)` of inner block `ib`.
    pub(crate) fn inner(&self, ib: usize) -> (usize, usize) {
        let s = ib * self.layout.d_b;
        (s, (s + self.layout.d_b).min(self.shape.d))
    }
    /// Columns `[start, end)` of column block `cb`.
    pub(crate) fn cols(&self, cb: usize) -> (usize, usize) {
        let s = cb * self.layout.k_b;
        (s, (s + self.layout.k_b).min(self.shape.k))
    }
    /// Column blocks `[start, end)` of packing group `g`.
    pub(crate) fn group_col_blocks(&self, g: usize) -> (usize, usize) {
        let s = g * self.pack;
        (s, (s + self.pack).min(self.col_blocks()))
    }

    /// Output group `o` as (row block, group within the row).
    pub(crate) fn split_output(&self, o: usize) -> (usize, usize) {
        let gpr = self.groups_per_row().max(1);
        (o / gpr, o % gpr)
    }

    /// Coefficient slots of output message `o`, in the order the values are sent.
    pub(crate) fn slots(&self, o: usize) -> Vec<Slot> {
        let (rb, g) = self.split_output(o);
        let (r0, r1) = self.rows(rb);
        let (cb0, cb1) = self.group_col_blocks(g);
        let mut out = Vec::new();
        for i in r0..r1 {
            for cb in cb0..cb1 {
                let (c0, c1) = self.cols(cb);
                for c in c0..c1 {
                    out.push(Slot {
                        pos: self
                            .layout
                            .packed_position(self.pack, cb - cb0, i - r0, c - c0),
                        row: i,
                        col: c,
                    });
                }
            }
        }
        out
    }
}

/// A block shape, its packing factor and its cost.
type Candidate = (MatmulLayout, usize, LayoutCost);

/// What a layout search depends on: the parameter set (its id, and the fields the costs read,
/// so an id collision cannot mix two sets), the shape and the policy.
type SearchKey = (u64, usize, usize, usize, MatmulShape, LayoutPolicy);

fn search_key(params: &RlweParameters, shape: MatmulShape, policy: LayoutPolicy) -> SearchKey {
    (
        params.id(),
        params.degree(),
        params.mac_terms(),
        params.max_pack(),
        shape,
        policy,
    )
}

/// The results of [`MatmulPlan::new`]'s searches in this process. A search enumerates every
/// block shape (tens of thousands for BERT's embedding table) and the planner and the cost
/// backend ask for the same (parameters, shape, policy) again and again: `duet plan` for
/// BERT-base at 128 tokens spent 86% of its 45 s in [`MatmulLayout::cost`]. Deterministic
/// results, so caching cannot change a plan; bounded (cleared when full).
struct SearchCache(std::sync::Mutex<std::collections::HashMap<SearchKey, Candidate>>);

const SEARCH_CACHE_ENTRIES: usize = 4096;

impl SearchCache {
    fn get(&self, key: &SearchKey) -> Option<Candidate> {
        self.0.lock().ok()?.get(key).copied()
    }
    fn put(&self, key: SearchKey, value: Candidate) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= SEARCH_CACHE_ENTRIES {
                m.clear();
            }
            m.insert(key, value);
        }
    }
}

fn searched() -> &'static SearchCache {
    static CACHE: std::sync::OnceLock<SearchCache> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| SearchCache(std::sync::Mutex::new(std::collections::HashMap::new())))
}

/// The (bytes, key switches) Pareto frontier of all admissible packed layouts, by increasing
/// bytes (and strictly decreasing key switches).
fn frontier(params: &Arc<RlweParameters>, shape: MatmulShape) -> Result<Vec<Candidate>> {
    let mut all = Vec::new();
    let nn = params.degree();
    for n_b in 1..=shape.n.min(nn) {
        for d_b in 1..=shape.d.min(nn / n_b) {
            let k_b = (nn / (n_b * d_b)).min(shape.k);
            if k_b == 0 {
                continue;
            }
            let layout = MatmulLayout::new(params, n_b, d_b, k_b)?;
            let pack = layout.pack_factor(params);
            let c = layout.cost(params, shape.n, shape.d, shape.k, pack);
            if c.mac_terms <= params.mac_terms() {
                all.push((layout, pack, c));
            }
        }
    }
    all.sort_by_key(|(l, _, c)| (c.input_bytes + c.output_bytes, c.key_switches, l.n_b, l.d_b));
    let mut out: Vec<Candidate> = Vec::new();
    for cand in all {
        if out
            .last()
            .is_none_or(|(_, _, c)| cand.2.key_switches < c.key_switches)
        {
            out.push(cand);
        }
    }
    if out.is_empty() {
        return Err(ProtocolError::Config(format!(
            "no block layout for {shape} fits the noise budget"
        )));
    }
    Ok(out)
}

/// Search all block shapes like [`MatmulLayout::best`], scoring each with `score` (lower is
/// better, `None` = not admissible).
fn search(
    params: &Arc<RlweParameters>,
    shape: MatmulShape,
    packing: bool,
    score: impl Fn(&LayoutCost) -> Option<(u64, u64)>,
) -> Result<(MatmulLayout, usize, LayoutCost)> {
    let nn = params.degree();
    let mut best: Option<((u64, u64), MatmulLayout, usize, LayoutCost)> = None;
    for n_b in 1..=shape.n.min(nn) {
        for d_b in 1..=shape.d.min(nn / n_b) {
            let k_b = (nn / (n_b * d_b)).min(shape.k);
            if k_b == 0 {
                continue;
            }
            let layout = MatmulLayout::new(params, n_b, d_b, k_b)?;
            let pack = if packing {
                layout.pack_factor(params)
            } else {
                1
            };
            let c = layout.cost(params, shape.n, shape.d, shape.k, pack);
            if c.mac_terms > params.mac_terms() {
                continue;
            }
            let Some(s) = score(&c) else { continue };
            if best.as_ref().is_none_or(|(b, ..)| s < *b) {
                best = Some((s, layout, pack, c));
            }
        }
    }
    best.map(|(_, l, p, c)| (l, p, c)).ok_or_else(|| {
        ProtocolError::Config(format!(
            "no block layout for {shape} fits the policy under parameters {}",
            params.id()
        ))
    })
}
