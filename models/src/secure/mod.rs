//! The secure run of a model, kept as the one-request form of a [`crate::session`]:
//! [`run_server`] / [`run_client`] open a session, run one input and close it, and
//! [`predict()`] is the same request on the cost backend.
//!
//! What runs is the model walk ([`crate::walk`]) on [`duet_protocols::SecureBackend`]: the
//! private embedding lookup (HE: the client's one-hot rows times the server's table);
//! positions and token types added to the server's share (public indices); linear layers by
//! HE matmul (client-key, weights prepared on the fly so the server's memory stays at one
//! matrix) or OT as the plan says; attention ([`mod@duet_protocols::attention`]); GELU / SiLU /
//! tanh-GELU, SoftMax, LayerNorm / RMSNorm as configured in
//! [`duet_protocols::ProtocolConfig`]; residual sums locally. Only the client learns the
//! declared output: an encoder's last hidden state, a decoder's last-position logits.
//!
//! Fixed point: activations in `Z_2^l` (`l = 37` by default) with `f = 12` fractional bits,
//! weights with `f_w = 12`; every rescaling is a truncation of a value offset to be
//! non-negative (one COT over `Z_2^f` per element, exact to one ulp within the declared
//! ranges). The attention scale `1/sqrt(d)` is folded into the query weights by the server.
//!
//! # Security
//! See [`crate::session`] (what each party learns) and [`duet_protocols::backend`] (the
//! composition of the operators).

pub mod predict;

use crate::graph::Graph;
use crate::reference::{Matrix, WeightSource};
use crate::session::{Client, RunConfig, Server};
use crate::Result;
use duet_transport::Channel;

pub use crate::session::{OpRecord, SecureOutput, SecureReport};
pub use crate::walk::Progress;
pub use duet_protocols::{EmbeddingMode, MulBackend, OpKind, Plan, SecureOptions};
pub use predict::{predict, Prediction};

/// The server side of a one-request session with exactly `opts`: holds `weights`, learns the
/// sequence length only. Returns its report.
pub fn run_server<C: Channel, W: WeightSource>(
    ch: C,
    graph: &Graph,
    weights: &W,
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SecureReport> {
    let mut s = Server::accept(ch, graph, weights, &RunConfig::given(opts))?;
    let mut reports = s.serve_with(progress)?;
    reports
        .pop()
        .ok_or_else(|| crate::ModelError::Input("the client ran nothing".into()))
}

/// The client side of a one-request session with exactly `opts` (holds the token ids and
/// only the model's public config); gets the declared output and its report.
pub fn run_client_outputs<C: Channel>(
    ch: C,
    graph: &Graph,
    ids: &[u32],
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(SecureOutput, SecureReport)> {
    crate::reference::check_ids(&graph.config, ids)?;
    let mut c = Client::connect(ch, graph, &RunConfig::given(opts), ids.len())?;
    let out = c.infer_with(ids, progress)?;
    c.close()?;
    Ok(out)
}

/// [`run_client_outputs`] for an encoder: the last hidden state (`ids.len() x hidden`).
pub fn run_client<C: Channel>(
    ch: C,
    graph: &Graph,
    ids: &[u32],
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<(Matrix, SecureReport)> {
    let (out, report) = run_client_outputs(ch, graph, ids, opts, progress)?;
    let hidden = out
        .hidden
        .ok_or_else(|| crate::ModelError::Input("the model reveals no hidden state".into()))?;
    Ok((hidden, report))
}
