//! Duet's command-line front end, experiment runner and reports.
//!
//! The binary `duet` (see `main.rs`) parses arguments; everything it runs lives here so that
//! tests and other programs can call it, grouped by concern:
//! - [`product`]: the product commands (`demo`, `infer`, `serve` / `connect`, `generate`,
//!   `plan`, `relay`) over the library's front door, `duet_models::session`;
//! - [`harness`]: the experiment harness (`bench model` in two processes with a shaped
//!   network, the results folder, re-prediction);
//! - [`ops`]: single-operator benchmarks (`bench op`, `bench transport`);
//! - [`calibrate`]: the machine profile of the cost model (`calibrate`);
//! - [`report`], [`model_report`]: the JSON reports;
//! - [`listen`], [`signals`]: how `serve` waits for its pinned client, and SIGINT / SIGTERM.

pub mod calibrate;
pub mod harness;
pub mod listen;
pub mod model_report;
pub mod ops;
pub mod product;
pub mod report;
pub mod signals;

use duet_transport::{Channel, ChannelStats};
use report::OpReport;
use std::time::Instant;

/// Errors of the front end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DuetError {
    /// The session's transport failed.
    #[error(transparent)]
    Transport(#[from] duet_transport::TransportError),
    /// An MPC protocol failed.
    #[error(transparent)]
    Mpc(#[from] duet_mpc::MpcError),
    /// A hybrid protocol (HE linear layer, ...) failed.
    #[error(transparent)]
    Protocol(#[from] duet_protocols::ProtocolError),
    /// A model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] duet_models::ModelError),
    /// Bad command-line usage.
    #[error("{0}")]
    Usage(String),
    /// Local I/O.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Report serialization.
    #[error("cannot write the report: {0}")]
    Json(#[from] serde_json::Error),
    /// A party's thread died.
    #[error("the {0} thread panicked")]
    ThreadPanicked(&'static str),
}

/// Measures one operator on one channel endpoint: traffic and wall time between `start` and
/// `finish`. From one endpoint, sent + received is the traffic of both directions.
#[derive(Debug)]
pub struct OpMeter {
    before: ChannelStats,
    t: Instant,
}

impl OpMeter {
    /// Snapshot now.
    pub fn start<C: Channel>(ch: &C) -> Self {
        Self {
            before: ch.stats(),
            t: Instant::now(),
        }
    }

    /// The row for what happened since `start`.
    pub fn finish<C: Channel>(self, ch: &C, name: &str, kind: &str, backend: &str) -> OpReport {
        let d = ch.stats() - self.before;
        OpReport {
            name: name.to_string(),
            kind: kind.to_string(),
            backend: backend.to_string(),
            bytes: d.total_bytes(),
            rounds: d.total_rounds(),
            wall_s: self.t.elapsed().as_secs_f64(),
            predicted_bytes: 0,
            predicted_s: 0.0,
        }
    }
}

/// Median of a sample (NaN for an empty one).
pub fn median(xs: &mut [f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    let hi = xs.get(n / 2).copied().unwrap_or(f64::NAN);
    if n % 2 == 1 {
        hi
    } else {
        (xs.get(n / 2 - 1).copied().unwrap_or(hi) + hi) / 2.0
    }
}
