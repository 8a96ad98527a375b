//! Ferret: correlated OT from regular-noise LPN (Yang, Weng, Lan, Zhang, Wang, CCS 2020),
//! semi-honest version, implementing [`CotSender`](super::CotSender) /
//! [`CotReceiver`](super::CotReceiver) so every protocol built on the traits runs on it.
//!
//! # Protocol
//! One iteration with LPN parameters `(n, k, t)`, `n = t · 2^h` ([`LpnParams`]) turns
//! `k + t·h` base COTs into `n` COTs:
//! 1. **Multi-point COT with regular noise** ([`mpcot`](self)): `t` single-point COTs, one per
//!    bin of `2^h` positions, each from a GGM tree (a puncturable PRF over a fixed-key-AES
//!    length-doubling PRG) whose `h` level sums travel under `h` base COTs: the sender gets
//!    `v ∈ F_{2^128}^n`, the receiver a regular noise vector `e` (one 1 per bin) and
//!    `w = v ⊕ e·Δ`.
//! 2. **LPN encoding** with a public local linear code `A` (10 nonzeros per output row, from
//!    AES-CTR under a public key): sender `y = A·q_k ⊕ v`, receiver `z = A·t_k ⊕ w`, choice bits
//!    `x = A·u ⊕ e`; so `z = y ⊕ x·Δ`, and `x` is pseudorandom under regular LPN.
//!
//! **Bootstrapping**: the first `k + t·h` outputs of each main iteration are reserved as the
//! base COTs of the next; the rest go to the pool. The very first base COTs come from a
//! *setup iteration* (a smaller vetted set) whose base COTs are random OTs from IKNP (or any
//! [`CotSender`](super::CotSender)), converted to Ferret's `Δ` by sending `k⁰ ⊕ k¹ ⊕ Δ`.
//!
//! **Pool**: [`FerretSender::send_cot`](super::CotSender::send_cot) hands out pooled COTs and
//! runs a main iteration (about ten million COTs with [`FerretParams::B13`]) whenever the pool
//! runs out, transparently; `cot_cost(n)` is exact: zero while the pool covers `n`, else one
//! [`iteration_cost`] per iteration it triggers. [`FerretSender::refill`] runs one ahead of use.
//!
//! **lsb convention**: `Δ` has lsb 1, the sender's `q_j` have lsb 0, and the receiver's choice
//! bit `b_j` is the lsb of `t_j` (as in emp-ot; it costs nothing: clearing the lsb of both
//! sides and setting the receiver's to `b` preserves `t = q ⊕ b·Δ`). `Δ` thus has 127 uniform
//! bits.
//!
//! # Security
//! Semi-honest parties. 128-bit computational security under: regular-noise LPN with the
//! vetted parameters of [`params`] ([`LpnParams::check_security`] refuses anything else), AES
//! as a PRG/PRF with fixed public keys in the random-permutation model (GGM expansion and the
//! correlation-robust hash of the level pads), and the base OT / IKNP of the setup. Malformed
//! peer messages give [`MpcError::InvalidPeerData`](crate::MpcError::InvalidPeerData) or a
//! transport error, never a panic.
//!
//! # Cost
//! Per main iteration ([`iteration_cost`]): receiver → sender `ceil(t·h/8)` bytes (one message),
//! sender → receiver `t · (2h + 1) · 16` bytes (in `ceil(t/128)` messages, pipelined); one round
//! trip. [`FerretParams::B13`]: 555,040 bytes for 10,017,120 COTs (0.44 bits per COT). One-time
//! setup ([`FerretSender::setup_cost`]), after the base OTs of [`OtPair`](super::OtPair): the
//! IKNP extension of `k₀ + t₀·h₀` COTs (41,030 for B13: 657,408 bytes), 16 bytes each to
//! convert them to Ferret's `Δ` (656,480 bytes) and the setup iteration (280,105 bytes), in all
//! 1,593,993 bytes per direction. Compute: about `2n` AES calls for the trees
//! and `2.5n` AES calls + `10n` random reads for the encoding per party per iteration.

mod cot;
mod ggm;
mod lpn;
mod mpcot;
pub mod params;
#[cfg(test)]
mod tests;

pub use cot::{bootstrap_cost, iteration_cost, FerretPair, FerretReceiver, FerretSender};
pub use params::{FerretParams, LpnParams};
