//! Reciprocal square root `1/sqrt(x)` of shared positive fixed-point values with a known range
//! (LayerNorm / RMSNorm), by Newton's iteration after normalising by the MSB position.

use super::recip::{Kind, NewtonParams, Plan};
use crate::nonlinear::{Cost, NlConfig, NlSession};
use crate::{AShare, Result, Ring};
use duet_transport::Channel;

/// Shares of `1/sqrt(x)` with `f_out` fractional bits (same ring) for shared `x` with `f_in`
/// fractional bits whose integer encoding lies in `[2^lo, 2^hi)` (`range = (lo, hi)`, public).
///
/// Protocol: as [`super::recip::recip`] (one-hot MSB position `p` from `hi - lo - 1` batched
/// DReLUs, `w = x / 2^{p+1}` in `[1/2, 1)` by `hi - lo` muxes), then `y0 = 1.8016 - (53/64) w`
/// (relative error 2.3%) and `iters` Newton steps `y <- y (3 - w y^2) / 2` (one square and two
/// Gilboa products, each followed by a one-COT truncation of a positive value), and the scale
/// back `1/sqrt(x) = y 2^{(f_in - p - 1)/2}` with 14-bit public constants in `hi - lo` muxes.
///
/// Error: relative `1.5 (0.023)^(2^iters)`-ish plus a few ulps of `2^-G` plus `2^-14`, plus
/// half an ulp of the output. Security: semi-honest, 128-bit. Cost: [`rsqrt_cost`] (meant for
/// one value per row, e.g. LayerNorm's variance).
pub fn rsqrt<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f_in: u32,
    range: (u32, u32),
    f_out: u32,
    params: NewtonParams,
) -> Result<AShare> {
    Plan::new(Kind::Rsqrt, x.ring(), f_in, range, f_out, params)?.run(s, ch, x)
}

/// Exact bytes (rounds: an upper bound) of [`rsqrt`] on `n` elements of `ring`.
pub fn rsqrt_cost(
    n: usize,
    ring: Ring,
    f_in: u32,
    range: (u32, u32),
    f_out: u32,
    params: NewtonParams,
    cfg: NlConfig,
) -> Result<Cost> {
    Ok(Plan::new(Kind::Rsqrt, ring, f_in, range, f_out, params)?.cost(n, ring, cfg))
}
