//! Predicted bytes, flights and compute seconds of every node of a secure request, without
//! running it: the same walk and output step ([`crate::session::run_request`]) on
//! [`CostBackend`], whose operators are the protocols' exact cost formulas (see
//! [`duet_protocols::backend`] for the Ferret pool accounting). Bytes are therefore exactly
//! what the secure run measures; flights are the sum of the parts (an upper bound).

use crate::graph::Graph;
use crate::session::{run_request, Reveal};
use crate::walk::WalkState;
use crate::{ModelError, Result};
use duet_protocols::cost_model::{Estimate, MachineProfile};
use duet_protocols::{CostBackend, OpKind, SecureOptions, Tokens};

/// The prediction of a secure request.
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

    /// The members of the product node `name` runs in: a fused group's (`a+b+c`, the linear
    /// layers reading one input, run as one product) or `name` alone.
    pub fn unit_of(&self, name: &str) -> Vec<String> {
        self.nodes
            .iter()
            .find(|(n, _, _)| n.split('+').any(|p| p == name))
            .map_or_else(
                || vec![name.to_string()],
                |(n, _, _)| n.split('+').map(str::to_string).collect(),
            )
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

    /// Adds the records a cost backend made (in order) to the prediction.
    pub fn add_records(&mut self, b: &mut CostBackend) {
        for r in b.take_records() {
            let (Some(kind), Some(e)) = (r.kind, r.estimate) else {
                continue;
            };
            match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, t)) => *t += e,
                None => self.kinds.push((kind, e)),
            }
            self.nodes.push((r.name, kind, e));
        }
        self.cached_bytes += b.take_cached_bytes();
    }
}

/// Predicts every node of a secure request of `graph` on `seq` tokens with `opts` in a fresh
/// session (see the module documentation): bytes exactly as the secure run's report measures
/// them, flights as the sum of the parts (an upper bound), compute seconds from `profile`.
pub fn predict(
    graph: &Graph,
    seq: usize,
    opts: &SecureOptions,
    profile: &MachineProfile,
) -> Result<Prediction> {
    if seq == 0 || seq > graph.config.max_positions {
        return Err(ModelError::Input(format!(
            "sequence of {seq} tokens (1..={})",
            graph.config.max_positions
        )));
    }
    let mut b = CostBackend::new(opts, profile).map_err(|e| ModelError::Secure {
        node: "setup".into(),
        source: e,
    })?;
    let reveal = if graph.logits.is_some() {
        Reveal::Logits
    } else {
        Reveal::Hidden
    };
    let mut state = WalkState::new();
    let keep = graph.logits.is_some();
    run_request(
        &mut b,
        graph,
        None,
        Tokens::Count(seq),
        keep.then_some(&mut state),
        &reveal,
        &mut |_| {},
    )?;
    let mut p = Prediction {
        setup: b.setup(),
        ..Prediction::default()
    };
    p.add_records(&mut b);
    Ok(p)
}
