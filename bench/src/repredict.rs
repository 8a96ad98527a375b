//! Re-predicting recorded runs with another machine profile (`duet bench table --profile`):
//! a run report keeps its measured figures, and its per-operator predictions are computed
//! again from the options the run used, rebuilt from the preset and the planner's recorded
//! choices ([`options_from_plan`]).

use crate::model_bench::{add_predictions, check_net, secure_options, ModelReport};
use crate::DuetError;
use duet_models::planner::{attention_budget_bytes, OT_LABEL};
use duet_models::secure::predict::predict;
use duet_models::secure::{MulBackend, SecureOptions};
use duet_models::{BuiltinModel, Graph, Op};
use duet_mpc::nonlinear::NlConfig;
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::nonlinear::activation::GeluApprox;
use duet_protocols::nonlinear::norm::NormPreset;
use duet_protocols::nonlinear::softmax::SoftmaxPreset;
use duet_protocols::LayoutPolicy;

fn bad(what: String) -> DuetError {
    DuetError::Usage(format!("cannot rebuild the run's options: {what}"))
}

/// A layout label of the planner (`he fewest-bytes`, `he extraction-only`,
/// `he fewest-key-switches (<= F x bytes)` with `F` times `base` bytes); `None` for OT.
fn layout(label: &str, base: u64) -> Result<Option<LayoutPolicy>, DuetError> {
    if label == OT_LABEL {
        return Ok(None);
    }
    if label == "he fewest-bytes" {
        return Ok(Some(LayoutPolicy::MinBytes));
    }
    if label == "he extraction-only" {
        return Ok(Some(LayoutPolicy::ExtractionOnly));
    }
    let f = label
        .strip_prefix("he fewest-key-switches (<= ")
        .and_then(|r| r.strip_suffix("x bytes)"))
        .and_then(|f| f.parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f > 0.0)
        .ok_or_else(|| bad(format!("unknown layout {label:?}")))?;
    Ok(Some(LayoutPolicy::FewestKeySwitches {
        max_bytes: (base as f64 * f) as u64,
    }))
}

fn variant<T: Copy + std::fmt::Debug>(all: &[T], label: &str) -> Result<T, DuetError> {
    all.iter()
        .copied()
        .find(|v| format!("{v:?}") == label)
        .ok_or_else(|| bad(format!("unknown variant {label:?}")))
}

/// The options of a run of `protocol` on `graph` and `seq` tokens whose planner choices were
/// `plan` (`target: chosen`, as [`ModelReport::plan`] records them; empty: the preset's fixed
/// choices). The byte budgets of the fewest-key-switch layouts are rebuilt as the planner
/// made them (a factor of the node's fewest-bytes traffic).
pub fn options_from_plan(
    protocol: &str,
    plan: &[String],
    graph: &Graph,
    seq: usize,
) -> Result<SecureOptions, DuetError> {
    let mut opts = secure_options(protocol)?;
    let pairs: Vec<(&str, &str)> = plan
        .iter()
        .map(|c| {
            c.split_once(": ")
                .ok_or_else(|| bad(format!("choice {c:?} has no target")))
        })
        .collect::<Result<_, _>>()?;
    // the global choices first: they change every node's bytes
    let mut layouts = Vec::new();
    for &(target, chosen) in &pairs {
        match target {
            "COT backend (every OT-based protocol)" => {
                opts.protocol.nl = match chosen {
                    "ferret" => NlConfig::default(),
                    "iknp" => NlConfig::iknp(),
                    other => return Err(bad(format!("COT backend {other:?}"))),
                }
            }
            "ring width (activations and linear layers)" => {
                opts.ring_bits = chosen
                    .strip_suffix(" bits")
                    .and_then(|b| b.parse().ok())
                    .ok_or_else(|| bad(format!("ring width {chosen:?}")))?;
            }
            "GELU" => opts.protocol.gelu = variant(&GeluApprox::ALL, chosen)?,
            "SoftMax" => opts.protocol.softmax = variant(&SoftmaxPreset::ALL, chosen)?,
            "LayerNorm" => opts.protocol.norm = variant(&NormPreset::ALL, chosen)?,
            "element-wise products" => {
                opts.plan.elementwise = match chosen {
                    "cot" => MulBackend::Cot,
                    "he" => MulBackend::He,
                    other => return Err(bad(format!("element-wise backend {other:?}"))),
                }
            }
            _ => layouts.push((target, chosen)),
        }
    }
    if layouts.is_empty() {
        return Ok(opts);
    }
    // the planner's byte budgets: fewest-bytes traffic with every layout at fewest bytes
    let profile = MachineProfile::default_profile()?;
    let mut min = opts.clone();
    min.plan.attention = LayoutPolicy::MinBytes;
    min.plan.attention_ot = false;
    min.plan.default_linear = LayoutPolicy::MinBytes;
    min.plan.linear.clear();
    min.plan.ot_linear.clear();
    let base = predict(graph, seq, &min, &profile)?;
    opts.plan.default_linear = LayoutPolicy::MinBytes;
    opts.plan.linear.clear();
    for (target, chosen) in layouts {
        if target == "attention products" {
            match layout(chosen, attention_budget_bytes(&base))? {
                Some(p) => opts.plan.attention = p,
                None => opts.plan.attention_ot = true,
            }
            continue;
        }
        let linear = graph
            .nodes
            .iter()
            .any(|n| n.name == target && matches!(n.op, Op::Linear { .. }));
        if !linear {
            return Err(bad(format!("{target:?} is not a linear node of the model")));
        }
        let b = base.node(target).map_or(0, |e| e.bytes);
        match layout(chosen, b)? {
            Some(LayoutPolicy::MinBytes) => {}
            Some(p) => opts.plan.set_linear(target, p),
            None => opts.plan.set_linear_ot(target, true),
        }
    }
    Ok(opts)
}

/// Recomputes every operator row's `predicted_bytes` and `predicted_s` of `rep` (a run of a
/// built-in model) with `profile`, and records the profile in the report.
pub fn repredict(rep: &mut ModelReport, profile: &MachineProfile) -> Result<(), DuetError> {
    let b = BuiltinModel::from_name(&rep.report.model)?;
    let graph = Graph::build(&b.config());
    let seq = rep.report.seq_len;
    let opts = options_from_plan(&rep.report.protocol, &rep.plan, &graph, seq)?;
    let net = check_net(&rep.report.network)?;
    add_predictions(rep, &graph, &opts, &net, profile)
}
