//! Re-predicting recorded runs with another machine profile (`duet bench table --profile`):
//! a run report keeps its measured figures, and its per-operator predictions are computed
//! again from the typed options the run recorded ([`ModelReport::options`]).

use crate::harness::model_bench::{add_predictions, check_net};
use crate::model_report::ModelReport;
use crate::DuetError;
use duet_models::{BuiltinModel, Graph};
use duet_protocols::cost_model::MachineProfile;

/// Recomputes every operator row's `predicted_bytes` and `predicted_s` of `rep` (a run of a
/// built-in model) with `profile`, and records the profile in the report.
pub fn repredict(rep: &mut ModelReport, profile: &MachineProfile) -> Result<(), DuetError> {
    let b = BuiltinModel::from_name(&rep.report.model)?;
    let graph = Graph::build(&b.config());
    let opts = rep.options.clone().ok_or_else(|| {
        DuetError::Usage(format!(
            "the run of {} ({}, {}) recorded no options; re-run it with this version",
            rep.report.model, rep.report.protocol, rep.report.network
        ))
    })?;
    opts.check()?;
    let net = check_net(&rep.report.network)?;
    add_predictions(rep, &graph, &opts, &net, profile)
}
