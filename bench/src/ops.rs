//! `duet bench op KIND --shape DIMS`: one operator between two parties on random inputs.

use crate::report::Report;
use crate::DuetError;

/// Runs operator `kind` on `shape` (e.g. `128x768x768`) with protocol preset `protocol`.
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    Err(DuetError::Usage(format!(
        "unknown operator {kind:?} (shape {shape}, protocol {protocol}); none is available yet"
    )))
}
