//! Fixed-point math on arithmetic shares, protocol-agnostic above [`crate::nonlinear`]:
//! polynomial evaluation, exp for `x <= 0`, reciprocal, reciprocal square root and piecewise
//! selection. Each function documents its approximation, its error bound and its exact cost.

pub mod exp;
pub mod normtab;
pub mod piecewise;
pub mod poly;
pub mod recip;
pub mod rsqrt;
