//! (in progress)

use crate::report::Report;
use crate::DuetError;

/// Runs `duet bench op KIND --shape SHAPE --protocol PROTOCOL` for this file's operators.
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    Err(DuetError::Usage(format!(
        "bench op {kind} (shape {shape}, protocol {protocol}) is not built yet"
    )))
}
