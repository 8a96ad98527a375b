//! The planner: per operator, the backend and variant that minimise the predicted latency of a
//! secure run on a given network, among those meeting an accuracy budget.
//!
//! Predicted latency of a node (the cost model, [`duet_protocols::cost_model`]):
//! `compute_s + bytes * 8 / rate + flights * rtt / 2`, with bytes and flights from the
//! protocols' exact formulas and compute from a calibrated [`MachineProfile`]
//! ([`mod@crate::secure::predict`] walks the graph exactly as the executor does).
//!
//! The choices, in order (each later one is made with the earlier ones fixed):
//! 1. the COT backend of every OT-based protocol: Ferret silent OT (few bytes, GGM-tree and
//!    LPN compute per iteration) or IKNP (about 16 bytes per COT, little compute); the whole
//!    plan is made for both and the faster kept;
//! 1. the ring width `l` of the activations and linear layers: every width from the narrowest
//!    the declared value ranges allow ([`SecureOptions::min_ring_bits`], 35 with the defaults)
//!    plus [`AccuracyBudget::ring_headroom_bits`] (1 by default) up to the base options' width
//!    (37 by default), compared on the whole model's predicted latency (the OT-based protocols' bytes grow with `l`, and so do the HE outputs' and the
//!    truncations');
//! 2. the approximation of each non-linear kind (GELU, SoftMax, LayerNorm/RMSNorm): every
//!    variant whose measured maximum error ([`measured_error`]) is within the budget;
//! 3. the backend of the attention products and, per linear layer, of each matmul: HE with
//!    the fewest bytes, the fewest key switches within 1.25x / 1.5x / 2x of the fewest bytes,
//!    or extraction-only outputs, or OT-based products
//!    (OT-based products with one operand known to the server, or both shared:
//!    no HE compute, but `n d k l(l+1)/16` bytes, so they win only for small products on fast
//!    networks);
//! 4. element-wise products (LLaMA's gate): Gilboa products from COTs or slot-encoded HE.
//!
//! Each choice keeps the candidate of least predicted latency, except that among candidates
//! within [`AccuracyBudget::latency_tolerance`] (5% by default) of the least it keeps the one
//! with the fewest bytes ([`pick`]): bytes are exact, latency is predicted within about 20%.
//!
//! Choices are evaluated node by node where nodes are independent (linear layers) and kind by
//! kind otherwise (a `ProtocolConfig` variant applies to every node of its kind); the COTs a
//! node consumes shift the Ferret iterations later nodes run, so the final prediction is made
//! again for the chosen plan.

use crate::graph::{Graph, Op};
use crate::secure::predict::{predict, Prediction};
use crate::secure::{MulBackend, OpKind, SecureOptions};
use crate::Result;
use duet_protocols::cost_model::{Estimate, MachineProfile};
use duet_protocols::nonlinear::activation::GeluApprox;
use duet_protocols::nonlinear::norm::NormPreset;
use duet_protocols::nonlinear::softmax::SoftmaxPreset;
use duet_protocols::LayoutPolicy;
use duet_protocols::{CotBackend, NlConfig};
use duet_transport::relay::NetProfile;
use serde::Serialize;

/// The largest error each non-linear kind may have (max abs for GELU and SoftMax, relative for
/// the norms). The defaults are issue 6's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AccuracyBudget {
    /// GELU, max abs error on `[-8, 8]`.
    pub gelu: f64,
    /// SoftMax, max abs error per entry (logits in `[-20, 20]`).
    pub softmax: f64,
    /// LayerNorm / RMSNorm, max relative error.
    pub norm: f64,
    /// Bits of headroom above [`SecureOptions::min_ring_bits`] the ring width keeps, for
    /// values beyond the declared ranges (queries, keys, scores and logits have no declared
    /// range of their own).
    pub ring_headroom_bits: u32,
    /// The planner's latency tolerance (a fraction): among the candidates whose predicted
    /// latency is within this fraction of the least, the one with the fewest bytes is kept
    /// ([`pick`]). Bytes are exact; latency is predicted within about 20% per operator kind
    /// (README, cost model), so a smaller difference in latency is not evidence that a plan
    /// is faster, while a difference in bytes is. `0.0` keeps the least predicted latency.
    pub latency_tolerance: f64,
}

impl Default for AccuracyBudget {
    fn default() -> Self {
        Self {
            gelu: 1.5e-2,
            softmax: 1e-2,
            norm: 2e-2,
            ring_headroom_bits: 1,
            latency_tolerance: 0.05,
        }
    }
}

/// A variant of a non-linear kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A GELU approximation.
    Gelu(GeluApprox),
    /// A SoftMax variant.
    Softmax(SoftmaxPreset),
    /// A LayerNorm / RMSNorm variant.
    Norm(NormPreset),
}

/// The largest error each variant showed (`protocols/NOTES-tables.md`: GELU 128x3072 on
/// `[-8, 8]`, SoftMax 12x128x128 on `[-20, 20]` (Duet: the worst of its test's row sets),
/// LayerNorm 128x768; the worst run where several were made). The planner keeps a variant only when this is within
/// the budget.
pub fn measured_error(v: Variant) -> f64 {
    match v {
        Variant::Gelu(g) => match g {
            GeluApprox::Duet => 8.0e-3,
            GeluApprox::Bolt => 1.0e-2,
            GeluApprox::BumbleBee => 1.25e-2,
            GeluApprox::Puma => 1.93e-2,
            GeluApprox::Iron => 1.16e-2,
        },
        Variant::Softmax(s) => match s {
            SoftmaxPreset::Duet => 4.2e-4,
            SoftmaxPreset::Bolt => 2.05e-3,
            SoftmaxPreset::BumbleBee => 5.4e-3,
            SoftmaxPreset::Puma => 5.3e-3,
            SoftmaxPreset::Iron => 5.1e-3,
        },
        Variant::Norm(n) => match n {
            NormPreset::Duet => 7.2e-4,
            NormPreset::BumbleBee => 9.9e-4,
            NormPreset::Puma => 9.2e-4,
            NormPreset::Bolt => 9.1e-4,
            NormPreset::Iron => 1.03e-3,
        },
    }
}

/// One decision of the planner: what was compared and what won.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The operator (a node name) or the kind the choice applies to.
    pub target: String,
    /// The candidates: label, predicted latency on the network (s), predicted bytes.
    pub candidates: Vec<(String, f64, u64)>,
    /// The chosen label.
    pub chosen: String,
}

/// The planner's result.
#[derive(Clone, Debug)]
pub struct PlannedRun {
    /// The options to run with (both parties).
    pub opts: SecureOptions,
    /// The decisions, in the order made.
    pub decisions: Vec<Decision>,
    /// The prediction of the chosen plan.
    pub prediction: Prediction,
    /// Its predicted latency on the network: setup plus every node.
    pub latency_s: f64,
}

fn layout_label(p: LayoutPolicy, base: u64) -> String {
    match p {
        LayoutPolicy::MinBytes => "he fewest-bytes".into(),
        LayoutPolicy::FewestKeySwitches { max_bytes } => format!(
            "he fewest-key-switches (<= {:.2}x bytes)",
            max_bytes as f64 / base.max(1) as f64
        ),
        LayoutPolicy::ExtractionOnly => "he extraction-only".into(),
    }
}

/// The traffic the attention layouts' byte budgets are relative to: the larger of the first
/// layer's two products (one product call) in `p`, a prediction with the fewest-bytes
/// attention layout.
pub fn attention_budget_bytes(p: &Prediction) -> u64 {
    p.nodes
        .iter()
        .filter(|n| n.1 == OpKind::AttentionMatmul)
        .take(2)
        .map(|n| n.2.bytes)
        .max()
        .unwrap_or(0)
}

/// The label of an OT-based matrix product among the candidates.
pub const OT_LABEL: &str = "ot (correlated OT, no HE)";

/// The candidate the planner keeps among `(label, predicted latency, bytes)`: the fewest bytes
/// among those whose latency is at most `(1 + tolerance)` times the least (ties: the lower
/// latency, then the first listed). `None` for no candidates or a latency that is not a
/// number.
pub fn pick(candidates: &[(String, f64, u64)], tolerance: f64) -> Option<usize> {
    let least = candidates
        .iter()
        .map(|c| c.1)
        .min_by(f64::total_cmp)
        .filter(|l| l.is_finite())?;
    let bound = least * (1.0 + tolerance.max(0.0));
    candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| c.1 <= bound)
        .min_by(|a, b| a.1 .2.cmp(&b.1 .2).then(a.1 .1.total_cmp(&b.1 .1)))
        .map(|(i, _)| i)
}

fn cot_label(c: CotBackend) -> &'static str {
    match c {
        CotBackend::Iknp => "iknp",
        CotBackend::Ferret(_) => "ferret",
    }
}

/// Online bytes of a prediction (every node).
pub fn total_bytes(p: &Prediction) -> u64 {
    p.nodes_total().bytes
}

/// Latency of a whole prediction (setup plus nodes; latency is linear in an estimate's parts,
/// so the latency of a sum is the sum of the latencies).
pub fn total_latency(p: &Prediction, net: &NetProfile) -> f64 {
    p.setup.latency(net) + p.nodes_total().latency(net)
}

fn kind_latency(p: &Prediction, kind: OpKind, net: &NetProfile) -> (f64, u64) {
    p.kind(kind).map_or((0.0, 0), |e| (e.latency(net), e.bytes))
}

struct Ctx<'a> {
    graph: &'a Graph,
    seq: usize,
    profile: &'a MachineProfile,
    net: &'a NetProfile,
    tolerance: f64,
}

impl Ctx<'_> {
    fn predict(&self, opts: &SecureOptions) -> Result<Prediction> {
        predict(self.graph, self.seq, opts, self.profile)
    }

    /// Picks, for one kind, the candidate option set with the least latency of that kind.
    fn choose_kind(
        &self,
        opts: &mut SecureOptions,
        kind: OpKind,
        target: &str,
        candidates: Vec<(String, SecureOptions)>,
        decisions: &mut Vec<Decision>,
    ) -> Result<()> {
        let mut listed = Vec::new();
        let mut options = Vec::new();
        for (label, o) in candidates {
            let p = self.predict(&o)?;
            let (lat, bytes) = kind_latency(&p, kind, self.net);
            listed.push((label, lat, bytes));
            options.push(o);
        }
        let Some(i) = pick(&listed, self.tolerance) else {
            return Ok(());
        };
        if let (Some(o), Some(l)) = (options.into_iter().nth(i), listed.get(i)) {
            *opts = o;
            decisions.push(Decision {
                target: target.into(),
                chosen: l.0.clone(),
                candidates: listed,
            });
        }
        Ok(())
    }
}

/// Plans a run of `graph` on `seq` tokens over `net` on a machine like `profile`, starting from
/// `base` (its ring, fixed point and embedding choices are kept).
pub fn plan(
    graph: &Graph,
    seq: usize,
    base: &SecureOptions,
    net: &NetProfile,
    profile: &MachineProfile,
    budget: &AccuracyBudget,
) -> Result<PlannedRun> {
    let ctx = Ctx {
        graph,
        seq,
        profile,
        net,
        tolerance: budget.latency_tolerance,
    };
    let mut runs = Vec::new();
    let mut backend_candidates = Vec::new();
    for cot in [NlConfig::default(), NlConfig::iknp()] {
        let mut opts = base.clone();
        opts.protocol.nl = cot;
        let run = plan_for_backend(&ctx, opts, budget)?;
        backend_candidates.push((
            cot_label(cot.cot).to_string(),
            run.latency_s,
            total_bytes(&run.prediction),
        ));
        runs.push(run);
    }
    let mut run = pick(&backend_candidates, ctx.tolerance)
        .and_then(|i| runs.into_iter().nth(i))
        .ok_or_else(|| crate::ModelError::Input("nothing to plan".into()))?;
    run.decisions.insert(
        0,
        Decision {
            target: "COT backend (every OT-based protocol)".into(),
            chosen: cot_label(run.opts.protocol.nl.cot).into(),
            candidates: backend_candidates,
        },
    );
    Ok(run)
}

fn plan_for_backend(
    ctx: &Ctx<'_>,
    mut opts: SecureOptions,
    budget: &AccuracyBudget,
) -> Result<PlannedRun> {
    let mut decisions = Vec::new();
    let has = |f: &dyn Fn(&Op) -> bool| ctx.graph.nodes.iter().any(|n| f(&n.op));
    // 1. ring width: the whole model's latency at each admissible width
    {
        let lowest = (opts.min_ring_bits() + budget.ring_headroom_bits)
            .max(24)
            .max(opts.frac + opts.weight_frac + 10);
        let widths = lowest.min(opts.ring_bits)..=opts.ring_bits.max(lowest);
        let mut listed = Vec::new();
        let mut bits = Vec::new();
        for l in widths {
            let o = SecureOptions {
                ring_bits: l,
                ..opts.clone()
            };
            let p = ctx.predict(&o)?;
            let lat = total_latency(&p, ctx.net);
            listed.push((format!("{l} bits"), lat, total_bytes(&p)));
            bits.push(l);
        }
        if let Some(l) = pick(&listed, ctx.tolerance).and_then(|i| bits.get(i).copied()) {
            opts.ring_bits = l;
            decisions.push(Decision {
                target: "ring width (activations and linear layers)".into(),
                candidates: listed,
                chosen: format!("{l} bits"),
            });
        }
    }
    // 2. approximations
    if has(&|op| matches!(op, Op::Activation(crate::config::Activation::GeluErf))) {
        let c = GeluApprox::ALL
            .into_iter()
            .filter(|g| measured_error(Variant::Gelu(*g)) <= budget.gelu)
            .map(|g| {
                let mut o = opts.clone();
                o.protocol.gelu = g;
                (format!("{g:?}"), o)
            })
            .collect();
        ctx.choose_kind(&mut opts, OpKind::Activation, "GELU", c, &mut decisions)?;
    }
    if has(&|op| matches!(op, Op::Attention { .. })) {
        let c = SoftmaxPreset::ALL
            .into_iter()
            .filter(|s| measured_error(Variant::Softmax(*s)) <= budget.softmax)
            .map(|s| {
                let mut o = opts.clone();
                o.protocol.softmax = s;
                (format!("{s:?}"), o)
            })
            .collect();
        ctx.choose_kind(&mut opts, OpKind::Softmax, "SoftMax", c, &mut decisions)?;
    }
    if has(&|op| matches!(op, Op::LayerNorm { .. } | Op::RmsNorm { .. })) {
        let c = NormPreset::ALL
            .into_iter()
            .filter(|n| measured_error(Variant::Norm(*n)) <= budget.norm)
            .map(|n| {
                let mut o = opts.clone();
                o.protocol.norm = n;
                (format!("{n:?}"), o)
            })
            .collect();
        ctx.choose_kind(&mut opts, OpKind::Norm, "LayerNorm", c, &mut decisions)?;
    }
    // 3. attention layout
    if has(&|op| matches!(op, Op::Attention { .. })) {
        // the budget is per product call: the larger of the first layer's two products at
        // their fewest bytes
        opts.plan.attention = LayoutPolicy::MinBytes;
        opts.plan.attention_ot = false;
        let base_bytes = attention_budget_bytes(&ctx.predict(&opts)?);
        let mut c: Vec<(String, SecureOptions)> = layout_candidates(base_bytes)
            .into_iter()
            .map(|(label, p)| {
                let mut o = opts.clone();
                o.plan.attention = p;
                o.plan.attention_ot = false;
                (label, o)
            })
            .collect();
        let mut o = opts.clone();
        o.plan.attention_ot = true;
        c.push((OT_LABEL.into(), o));
        ctx.choose_kind(
            &mut opts,
            OpKind::AttentionMatmul,
            "attention products",
            c,
            &mut decisions,
        )?;
    }
    // 3. linear layouts, node by node
    let linear: Vec<&str> = ctx
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::Linear { .. }))
        .map(|n| n.name.as_str())
        .collect();
    if !linear.is_empty() {
        opts.plan.default_linear = LayoutPolicy::MinBytes;
        opts.plan.linear.clear();
        opts.plan.ot_linear.clear();
        let min = ctx.predict(&opts)?;
        // per node: its fewest-bytes traffic sets the budgets of the other candidates
        let ext = {
            let mut o = opts.clone();
            o.plan.default_linear = LayoutPolicy::ExtractionOnly;
            ctx.predict(&o)?
        };
        // the units the walk runs as one product: a fused group (`a+b+c`: the linear layers
        // reading one input, same policy, none by OT) or one node; a unit is decided as a
        // whole, so its members keep one policy and stay fused
        let mut units: Vec<Vec<String>> = Vec::new();
        for name in &linear {
            if !units.iter().flatten().any(|m| m == name) {
                units.push(min.unit_of(name));
            }
        }
        let unit_bytes = |u: &[String]| min.node(&u.join("+")).map_or(0, |e| e.bytes);
        let mut per_factor = Vec::new();
        for f in [1.25, 1.5, 2.0] {
            let mut o = opts.clone();
            for u in &units {
                let max_bytes = (unit_bytes(u) as f64 * f) as u64;
                for name in u {
                    o.plan
                        .set_linear(name, LayoutPolicy::FewestKeySwitches { max_bytes });
                }
            }
            per_factor.push((o.clone(), ctx.predict(&o)?));
        }
        let by_ot = {
            let mut o = opts.clone();
            o.plan.ot_linear = linear.iter().map(|n| n.to_string()).collect();
            ctx.predict(&o)?
        };
        let mut plan = opts.plan.clone();
        for unit in &units {
            let (Some(first), label) = (unit.first(), unit.join("+")) else {
                continue;
            };
            let base_bytes = unit_bytes(unit);
            // `None`: the product by OT (every member alone)
            let mut cands: Vec<(Option<LayoutPolicy>, Estimate)> = Vec::new();
            if let Some(e) = min.node(&label) {
                cands.push((Some(LayoutPolicy::MinBytes), *e));
            }
            if let Some(e) = ext.node(&label) {
                cands.push((Some(LayoutPolicy::ExtractionOnly), *e));
            }
            for (o, p) in &per_factor {
                if let Some(e) = p.node(&label) {
                    cands.push((Some(o.plan.linear_policy(first)), *e));
                }
            }
            let by_ot_members: Option<Vec<Estimate>> =
                unit.iter().map(|m| by_ot.node(m).copied()).collect();
            if let Some(es) = by_ot_members {
                cands.push((None, es.into_iter().sum()));
            }
            let listed: Vec<(String, f64, u64)> = cands
                .iter()
                .map(|(p, e)| {
                    let label = p.map_or(OT_LABEL.into(), |p| layout_label(p, base_bytes));
                    (label, e.latency(ctx.net), e.bytes)
                })
                .collect();
            let Some(i) = pick(&listed, ctx.tolerance) else {
                continue;
            };
            if let (Some((p, _)), Some(l)) = (cands.get(i), listed.get(i)) {
                for name in unit {
                    match p {
                        None => plan.set_linear_ot(name, true),
                        Some(LayoutPolicy::MinBytes) => {}
                        Some(p) => plan.set_linear(name, *p),
                    }
                }
                decisions.push(Decision {
                    target: label.clone(),
                    chosen: l.0.clone(),
                    candidates: listed.clone(),
                });
            }
        }
        opts.plan = plan;
    }
    // 4. element-wise products
    if has(&|op| matches!(op, Op::Mul)) {
        let c = [MulBackend::Cot, MulBackend::He]
            .into_iter()
            .map(|m| {
                let mut o = opts.clone();
                o.plan.elementwise = m;
                (m.name().to_string(), o)
            })
            .collect();
        ctx.choose_kind(
            &mut opts,
            OpKind::Elementwise,
            "element-wise products",
            c,
            &mut decisions,
        )?;
    }
    let prediction = ctx.predict(&opts)?;
    let latency_s = total_latency(&prediction, ctx.net);
    Ok(PlannedRun {
        opts,
        decisions,
        prediction,
        latency_s,
    })
}

fn layout_candidates(base_bytes: u64) -> Vec<(String, LayoutPolicy)> {
    let mut v = vec![LayoutPolicy::MinBytes, LayoutPolicy::ExtractionOnly];
    for f in [1.25, 1.5, 2.0] {
        v.push(LayoutPolicy::FewestKeySwitches {
            max_bytes: (base_bytes as f64 * f) as u64,
        });
    }
    v.into_iter()
        .map(|p| (layout_label(p, base_bytes), p))
        .collect()
}
