//! Large element-wise calls run as consecutive batches of at most [`MAX_BATCH`] elements, so
//! that the OT keys and messages of one batch (tens of bytes per element per COT) stay in a
//! bounded, reused working set instead of gigabytes of freshly faulted pages. Each batch is a
//! complete run of the protocol (its own COT reservation and flights); the `*_cost` formulas
//! replay the same batches on their [`Tape`](super::Tape), so they stay exact.

use super::BShare;
use crate::{AShare, Result};
use std::ops::Range;

/// Largest number of elements one protocol run handles at once (131,072).
pub const MAX_BATCH: usize = 1 << 17;

/// The batch sizes of a call on `n` elements (`[n]` when it fits one batch).
pub(crate) fn batch_sizes(n: usize) -> Vec<usize> {
    if n <= MAX_BATCH {
        return vec![n];
    }
    (0..n)
        .step_by(MAX_BATCH)
        .map(|s| (n - s).min(MAX_BATCH))
        .collect()
}

/// The batches of a call on `n` elements, or `None` when it fits one batch.
pub(crate) fn ranges(n: usize) -> Option<Vec<Range<usize>>> {
    (n > MAX_BATCH).then(|| {
        (0..n)
            .step_by(MAX_BATCH)
            .map(|s| s..(s + MAX_BATCH).min(n))
            .collect()
    })
}

/// Elements `r` of `x` as a flat share.
pub(crate) fn slice_a(x: &AShare, r: &Range<usize>) -> Result<AShare> {
    let data = x.data().get(r.clone()).unwrap_or_default().to_vec();
    AShare::new(x.ring(), vec![data.len()], data)
}

/// Bits `r` of `bits` (the caller unpacks its [`BShare`] once per call) as a share.
pub(crate) fn slice_b(bits: &[bool], r: &Range<usize>) -> BShare {
    BShare::from_bits(bits.get(r.clone()).unwrap_or_default())
}
