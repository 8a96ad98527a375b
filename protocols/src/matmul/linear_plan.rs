//! [`LinearPlan`]: the public plan of one [`super::HeLinear`] call, `n x d` times the
//! concatenation of the server's matrices `W_1 | ... | W_m` (`d x k_i`, sharing the input),
//! with split packing ([`duet_fhe::orbit`]).
//!
//! # What it fixes
//! * Blocks `n_b x d_b x k_b` ([`MatmulLayout`]) and the packing factor `D` of every output
//!   ciphertext: a packing group is `D` consecutive column blocks of one row block, as in
//!   [`super::MatmulPlan`], so the **bytes are exactly those of a [`super::MatmulPlan`] with the
//!   same layout** (`k = sum k_i`): one seeded ciphertext per (row block, inner block), one
//!   output ciphertext per (row block, group) carrying exactly its values.
//! * Member `j` of a group (column block `g D + j`) is leaf `bitrev(j)` of the group's packing
//!   tree ([`duet_fhe::pack::bitrev_index`]), so a partial last group costs about as many key
//!   switches as it has members, not `D - 1`.
//! * `levels` (`ell`): the first `ell` tree levels run on the plaintext side
//!   ([`duet_fhe::InputOrbit`], [`duet_fhe::OrbitWeights`]): `2^ell - 1` key switches per input
//!   ciphertext, and per group only a pack of its `ceil(m / 2^ell)` nodes over the remaining
//!   levels ([`duet_fhe::pack::sparse_key_switches`]). `ell` is chosen to minimise the
//!   server's estimated compute (deterministic: both parties derive the same plan).
//!
//! # Layout choice ([`LayoutPolicy`])
//! Every block shape `n_b x d_b x k_b` with `n_b d_b k_b <= N` and `d k_b` within the noise
//! budget, `d_b <= d` or `d_b` the inner dimension padded with zero rows to a multiple of
//! `2^e` (one inner block whose packing factor `2^e` is larger than `d`'s), is scored by its exact bytes and its estimated server compute (the `EST_*`
//! constants: relative costs measured on the development machine, they only rank
//! candidates): `MinBytes` takes the fewest bytes (then the least compute),
//! `FewestKeySwitches { max_bytes }` the least compute within `max_bytes`, `ExtractionOnly`
//! the fewest bytes without packing.
//!
//! # Cost
//! [`LinearPlan::cost`]: exact bytes, two flights, messages, and the server's products and key
//! switches; [`LinearPlan::work`]: the [`Work`] counts of the cost model.

use std::sync::Arc;

use duet_fhe::pack::{bitrev_index, sparse_key_switches};
use duet_fhe::{MatmulLayout, RlweParameters, SeededCiphertext};

use super::plan::{LayoutPolicy, MatmulShape};
use super::Cost;
use crate::cost_model::Work;
use crate::error::{ProtocolError, Result};

/// Server CPU microseconds per weight encoding on the fly (a leaf block through the
/// butterflies and `L` NTTs), one core of the development machine under load: these constants
/// rank layouts only (the cost model's seconds come from [`LinearPlan::work`]).
pub const EST_ENCODE_US: f64 = 90.0;
/// Per plaintext-ciphertext product.
pub const EST_PRODUCT_US: f64 = 40.0;
/// Per key switch of an input orbit.
pub const EST_ORBIT_KS_US: f64 = 1000.0;
/// Per key switch of an output pack.
pub const EST_PACK_KS_US: f64 = 900.0;
/// Per output ciphertext (finalize, serialize, the client's decryption).
pub const EST_OUTPUT_US: f64 = 1300.0;
/// Per input ciphertext (the client's encryption, the server's expansion).
pub const EST_INPUT_US: f64 = 800.0;

/// Where one output value sits: coefficient `pos` of a message holds `(row, col)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LinearSlot {
    pub pos: usize,
    pub row: usize,
    pub col: usize,
}

/// The plan of one fused linear call (see the module documentation).
#[derive(Clone, Debug)]
pub struct LinearPlan {
    params: Arc<RlweParameters>,
    shape: MatmulShape,
    parts: Vec<usize>,
    layout: MatmulLayout,
    pack: usize,
    levels: u32,
}

/// Counts of one candidate.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    bytes: u64,
    input_bytes: u64,
    output_bytes: u64,
    inputs: u64,
    outputs: u64,
    products: u64,
    encodes: u64,
    orbit_ks: u64,
    pack_ks: u64,
}

impl Counts {
    fn estimate_us(&self) -> f64 {
        self.products as f64 * EST_PRODUCT_US
            + self.encodes as f64 * EST_ENCODE_US
            + self.orbit_ks as f64 * EST_ORBIT_KS_US
            + self.pack_ks as f64 * EST_PACK_KS_US
            + self.outputs as f64 * EST_OUTPUT_US
            + self.inputs as f64 * EST_INPUT_US
    }
}

impl LinearPlan {
    /// The plan for `n` rows times `d x k_i` matrices (`parts = [k_1, ..]`) under `policy`.
    pub fn new(
        params: &Arc<RlweParameters>,
        n: usize,
        d: usize,
        parts: &[usize],
        policy: LayoutPolicy,
    ) -> Result<Self> {
        let k: usize = parts.iter().sum();
        if n == 0 || d == 0 || parts.is_empty() || parts.contains(&0) {
            return Err(ProtocolError::Config(format!(
                "empty linear product {n}x{d}x{parts:?}"
            )));
        }
        let shape = MatmulShape::new(n, d, k);
        let nn = params.degree();
        let mut best: Option<((u64, f64), Self)> = None;
        // the fewest bytes of all: the fallback of a byte cap no layout meets (the planner
        // sets the cap for one node's shape; a fused group or a decode step may differ)
        let mut fewest: Option<((u64, f64), Self)> = None;
        for n_b in 1..=n.min(nn) {
            // every inner block size up to d, and d padded with zero rows to a multiple of a
            // power of two (a larger packing factor; one inner block)
            let max_db = nn / n_b;
            let padded = (1..=params.max_pack().max(1).trailing_zeros())
                .map(|e| d.next_multiple_of(1 << e))
                .filter(move |&p| p > d && p <= max_db);
            let mut sizes: Vec<usize> = (1..=d.min(max_db)).chain(padded).collect();
            sizes.dedup();
            for d_b in sizes {
                let k_b = (nn / (n_b * d_b)).min(k);
                if k_b == 0 || d.saturating_mul(k_b) > params.mac_terms() {
                    continue;
                }
                let layout = MatmulLayout::new(params, n_b, d_b, k_b)?;
                let pack = match policy {
                    LayoutPolicy::ExtractionOnly => 1,
                    _ => layout.pack_factor(params),
                };
                let mut plan = Self {
                    params: Arc::clone(params),
                    shape,
                    parts: parts.to_vec(),
                    layout,
                    pack,
                    levels: 0,
                };
                let (levels, c) = plan.best_levels();
                plan.levels = levels;
                let bytes_first = (c.bytes, c.estimate_us());
                if fewest.as_ref().is_none_or(|(b, _)| {
                    bytes_first.0 < b.0 || (bytes_first.0 == b.0 && bytes_first.1 < b.1)
                }) {
                    fewest = Some((bytes_first, plan.clone()));
                }
                let score = match policy {
                    LayoutPolicy::MinBytes | LayoutPolicy::ExtractionOnly => {
                        (c.bytes, c.estimate_us())
                    }
                    LayoutPolicy::FewestKeySwitches { max_bytes } => {
                        if c.bytes > max_bytes {
                            continue;
                        }
                        (0, c.estimate_us())
                    }
                };
                let better = best
                    .as_ref()
                    .is_none_or(|(b, _)| score.0 < b.0 || (score.0 == b.0 && score.1 < b.1));
                if better {
                    best = Some((score, plan));
                }
            }
        }
        let best = match (best, policy) {
            (None, LayoutPolicy::FewestKeySwitches { .. }) => fewest,
            (b, _) => b,
        };
        best.map(|(_, p)| p).ok_or_else(|| {
            ProtocolError::Config(format!(
                "no block layout for {shape} fits the policy under parameters {}",
                params.id()
            ))
        })
    }

    /// A plan with a given block shape, packing factor and orbit levels (`pack` a power of two
    /// dividing `d_b`, at most the parameters' `max_pack`; `2^levels <= pack`, at most the
    /// parameters' orbit levels).
    pub fn with_layout(
        params: &Arc<RlweParameters>,
        n: usize,
        d: usize,
        parts: &[usize],
        layout: MatmulLayout,
        pack: usize,
        levels: u32,
    ) -> Result<Self> {
        let k: usize = parts.iter().sum();
        if n == 0 || d == 0 || parts.is_empty() || parts.contains(&0) {
            return Err(ProtocolError::Config(format!(
                "empty linear product {n}x{d}x{parts:?}"
            )));
        }
        let layout = MatmulLayout::new(params, layout.n_b, layout.d_b, layout.k_b)?;
        if !pack.is_power_of_two()
            || pack > params.max_pack().max(1)
            || layout.d_b % pack != 0
            || layout.k_b > k
            || levels > pack.trailing_zeros()
            || levels > params.orbit_levels()
            || d.saturating_mul(layout.k_b) > params.mac_terms()
        {
            return Err(ProtocolError::Config(format!(
                "linear plan {}x{}x{} blocks, pack {pack}, {levels} orbit levels: not admissible",
                layout.n_b, layout.d_b, layout.k_b
            )));
        }
        Ok(Self {
            params: Arc::clone(params),
            shape: MatmulShape::new(n, d, k),
            parts: parts.to_vec(),
            layout,
            pack,
            levels,
        })
    }

    /// The orbit levels with the least estimated compute, and the counts.
    fn best_levels(&self) -> (u32, Counts) {
        let max = self.pack.trailing_zeros().min(self.params.orbit_levels());
        let mut best = (0, self.counts(0));
        for lv in 1..=max {
            let c = self.counts(lv);
            if c.estimate_us() < best.1.estimate_us() {
                best = (lv, c);
            }
        }
        best
    }

    fn counts(&self, levels: u32) -> Counts {
        let p = &self.params;
        let rbs = self.row_blocks() as u64;
        let ibs = self.inner_blocks() as u64;
        let inputs = rbs * ibs;
        let orbit = 1u64 << levels;
        let d_out = self.pack >> levels;
        // bytes and messages are those of the matmul layout with this packing factor (its
        // groups are ours: `D` consecutive column blocks of a row block, the last partial)
        let lc = self
            .layout
            .cost(p, self.shape.n, self.shape.d, self.shape.k, self.pack);
        let mut c = Counts {
            inputs,
            input_bytes: inputs * SeededCiphertext::serialized_len(p) as u64,
            output_bytes: lc.output_bytes as u64,
            outputs: lc.output_ciphertexts as u64,
            orbit_ks: inputs * (orbit - 1),
            ..Counts::default()
        };
        // groups: all full but the last
        let cbs = self.col_blocks();
        let (full, last) = (cbs / self.pack, cbs % self.pack);
        for (m, count) in [(self.pack, full), (last, usize::from(last > 0))] {
            if count == 0 {
                continue;
            }
            let nodes = m.div_ceil(1 << levels) as u64;
            let count = count as u64;
            c.encodes += count * nodes * orbit * ibs;
            c.products += count * nodes * orbit * ibs * rbs;
            c.pack_ks += count * rbs * sparse_key_switches(d_out, nodes as usize) as u64;
        }
        c.bytes = c.input_bytes + c.output_bytes;
        c
    }

    /// Exact online traffic and the server's operation counts of one call.
    pub fn cost(&self) -> Cost {
        let c = self.counts(self.levels);
        Cost {
            bytes: c.bytes,
            rounds: 2,
            client_to_server: c.input_bytes,
            server_to_client: c.output_bytes,
            messages: c.inputs + c.outputs,
            key_switches: c.orbit_ks + c.pack_ks,
            products: c.products,
        }
    }

    /// The cost model's counts: products (each with its weight encoding when not cached),
    /// key switches (orbits and packs), input encryptions, output decryptions, at `N = 8192`
    /// equivalents.
    pub fn work(&self) -> Work {
        let c = self.counts(self.levels);
        let scale = self.params.degree() as f64 / 8192.0;
        let mut w = Work {
            key_switches: (c.orbit_ks + c.pack_ks) as f64 * scale,
            encryptions: c.inputs as f64 * scale,
            decryptions: c.outputs as f64 * scale,
            ..Work::default()
        };
        if self.params.degree() == 4096 {
            w.he_products_4096 = c.products as f64;
        } else {
            w.he_products = c.products as f64 * scale;
        }
        w
    }

    /// The server's estimated compute in microseconds (the `EST_*` constants).
    pub fn estimate_us(&self) -> f64 {
        self.counts(self.levels).estimate_us()
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }
    /// `n x d x sum k_i`.
    pub fn shape(&self) -> MatmulShape {
        self.shape
    }
    /// The output widths `k_i` of the fused matrices.
    pub fn parts(&self) -> &[usize] {
        &self.parts
    }
    /// The block shape.
    pub fn layout(&self) -> MatmulLayout {
        self.layout
    }
    /// Column blocks per output ciphertext (`D`).
    pub fn pack(&self) -> usize {
        self.pack
    }
    /// Packing levels on the plaintext side (`ell`).
    pub fn levels(&self) -> u32 {
        self.levels
    }
    /// Client messages: one seeded ciphertext per (row block, inner block).
    pub fn input_count(&self) -> usize {
        self.row_blocks() * self.inner_blocks()
    }
    /// Server messages: one output ciphertext per (group, row block), group-major.
    pub fn output_count(&self) -> usize {
        self.row_blocks() * self.groups()
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
    pub(crate) fn groups(&self) -> usize {
        self.col_blocks().div_ceil(self.pack)
    }
    /// Column blocks of group `g`.
    pub(crate) fn group_members(&self, g: usize) -> usize {
        self.pack
            .min(self.col_blocks().saturating_sub(g * self.pack))
    }
    /// Nodes of group `g` that hold a member (the first `ceil(m / 2^ell)` in bit-reversed
    /// order over `D / 2^ell`).
    pub(crate) fn group_nodes(&self, g: usize) -> usize {
        self.group_members(g).div_ceil(1 << self.levels)
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
    /// Output message `o` as (group, row block).
    pub(crate) fn split_output(&self, o: usize) -> (usize, usize) {
        let rbs = self.row_blocks().max(1);
        (o / rbs, o % rbs)
    }
    /// The member (column block index within its group) at tree leaf `leaf`, if any.
    pub(crate) fn member_at_leaf(&self, g: usize, leaf: usize) -> Option<usize> {
        let j = bitrev_index(self.pack, leaf);
        (j < self.group_members(g)).then_some(j)
    }

    /// Coefficient slots of output message `o`, in the order the values are sent.
    pub(crate) fn slots(&self, o: usize) -> Vec<LinearSlot> {
        let (g, rb) = self.split_output(o);
        let (r0, r1) = self.rows(rb);
        let mut out = Vec::new();
        for i in r0..r1 {
            for j in 0..self.group_members(g) {
                let leaf = bitrev_index(self.pack, j);
                let (c0, c1) = self.cols(g * self.pack + j);
                for c in c0..c1 {
                    out.push(LinearSlot {
                        pos: self.layout.packed_position(self.pack, leaf, i - r0, c - c0),
                        row: i,
                        col: c,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_fhe::{Preset, RingBits, RlweParametersBuilder, WeightBound};

    fn params(levels: u32) -> Arc<RlweParameters> {
        RlweParametersBuilder::from_preset(Preset::N8192Q200Pack)
            .ring_bits(RingBits(42))
            .weight_bound(WeightBound::MaxAbs(1 << 16))
            .orbit_levels(levels)
            .build()
            .unwrap()
    }

    #[test]
    fn bytes_equal_the_matmul_plan_of_the_same_layout() {
        let p = params(6);
        for (n, d, parts) in [
            (1usize, 576usize, vec![576usize, 192, 192]),
            (1, 576, vec![1536, 1536]),
            (1, 1536, vec![576]),
            (37, 576, vec![1536]),
            (5, 100, vec![7, 30]),
        ] {
            let plan = LinearPlan::new(&p, n, d, &parts, LayoutPolicy::MinBytes).unwrap();
            let k = parts.iter().sum();
            let base = super::super::MatmulPlan::with_layout(
                &p,
                MatmulShape::new(n, d, k),
                plan.layout(),
                plan.pack(),
            )
            .unwrap();
            let (a, b) = (plan.cost(), base.cost());
            assert_eq!(
                (a.bytes, a.messages),
                (b.bytes, b.messages),
                "{n}x{d}x{parts:?}"
            );
            // never more key switches than the matmul plan's packing
            assert!(a.key_switches <= b.key_switches, "{n}x{d}x{parts:?}");
            let min = super::super::MatmulPlan::new(
                &p,
                MatmulShape::new(n, d, k),
                LayoutPolicy::MinBytes,
            )
            .unwrap()
            .cost();
            assert!(a.bytes <= min.bytes, "{n}x{d}x{parts:?}");
        }
    }

    /// A byte cap no layout meets (the planner's cap was set for another shape: a fused
    /// group, a decode step) falls back to the fewest bytes instead of failing the run (it
    /// failed SmolLM2's planned generation at the fused q+k+v of a decode step).
    #[test]
    fn an_unmet_byte_cap_falls_back_to_the_fewest_bytes() {
        let p = params(6);
        let parts = [576usize, 192, 192];
        let min = LinearPlan::new(&p, 1, 576, &parts, LayoutPolicy::MinBytes).unwrap();
        let capped = LinearPlan::new(
            &p,
            1,
            576,
            &parts,
            LayoutPolicy::FewestKeySwitches { max_bytes: 1 },
        )
        .unwrap();
        assert_eq!(capped.cost().bytes, min.cost().bytes);
        // a cap that some layout meets still picks by key switches within it
        let roomy = LinearPlan::new(
            &p,
            1,
            576,
            &parts,
            LayoutPolicy::FewestKeySwitches {
                max_bytes: 2 * min.cost().bytes,
            },
        )
        .unwrap();
        assert!(roomy.cost().bytes <= 2 * min.cost().bytes);
        assert!(roomy.cost().key_switches <= min.cost().key_switches);
    }

    #[test]
    fn slots_are_distinct_and_cover_the_output() {
        let p = params(6);
        let plan = LinearPlan::new(&p, 3, 40, &[50, 13], LayoutPolicy::MinBytes).unwrap();
        let mut seen = [false; 3 * 63];
        for o in 0..plan.output_count() {
            let slots = plan.slots(o);
            let mut pos: Vec<usize> = slots.iter().map(|s| s.pos).collect();
            pos.sort_unstable();
            pos.dedup();
            assert_eq!(pos.len(), slots.len());
            assert!(pos.iter().all(|&q| q < p.degree()));
            for s in slots {
                assert!(!seen[s.row * 63 + s.col]);
                seen[s.row * 63 + s.col] = true;
            }
        }
        assert!(seen.iter().all(|&b| b));
    }
}
