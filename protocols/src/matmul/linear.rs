//! `HeLinear`: `Y_i = X W_i + b_i` for several server matrices that share one input `X`
//! (LLaMA's `q, k, v` and `gate, up`), as **one** HE product on `W_1 | ... | W_m`, with split
//! packing, ending in fresh additive shares of every `Y_i`. The layer-by-layer successor of
//! [`super::HeMatMul`] for generation: same messages and bytes per layout, far fewer key
//! switches.
//!
//! # Protocol (semi-honest; after [`super::HeClientSetup`] with parameters that allow orbits,
//! [`linear_params`])
//! The client holds `X_c`, the server `X_s` (`X = X_c + X_s` in `Z_{2^l}`, `n x d`), or the
//! client all of `X`; the server holds `W_i` (`d x k_i`, `|w| <=` the parameters' weight bound)
//! and `b_i`. With the public [`LinearPlan`] (blocks, packing factor `D`, orbit levels `ell`):
//!
//! 1. Client -> server (one flight): one seeded ciphertext of `X_c` per (row block, inner
//!    block), exactly as in [`super::HeMatMul`].
//! 2. Server: scales each input by `2^-ell`, computes its orbit ([`InputOrbit`]: `2^ell - 1`
//!    key switches); for every packing group of `D` column blocks and every node of its tree
//!    holding a member, accumulates `sum_ib sum_h h(ct_ib) W_h` ([`OrbitWeights`] made from the
//!    node's weight blocks, or taken from a [`PreparedLinear`] cache); packs the nodes over
//!    the remaining `log2 D - ell` levels ([`MacAccumulator::pack_sparse`]); draws the mask `R`
//!    (uniform `n x k`) and finalizes each (group, row block) with the plaintext
//!    `X_s W + b - R` at exactly the output coefficients (re-randomization with the public
//!    key, modulus switching, 40-bit flooding). Server -> client (one flight): one output
//!    ciphertext per (group, row block).
//! 3. Client: decrypts `X W + b - R`, its share; the server's share is `R`. Both split the
//!    `n x sum k_i` result into the parts ([`split_parts`]).
//!
//! # Security
//! As [`super::HeMatMul`]: the server sees only RLWE ciphertexts under the client's key
//! (IND-CPA at the 128-bit parameters; the orbit's key switches use the packing Galois keys the
//! session already holds, under the same circular-security assumption). The client learns
//! `X W + b - R` with `R` uniform; the returned ciphertexts are re-randomized, carry only output
//! coefficients, and their weight-dependent noise, which now includes the orbit's key-switch
//! noise times the combined weights, is flooded with 40-bit statistical security: the
//! parameters' budget covers it ([`duet_fhe::RlweParametersBuilder::orbit_levels`]), so the
//! flooding bound is computed for it.
//!
//! # Cost
//! [`LinearPlan::cost`] (exact, two flights; bytes equal to a [`super::MatmulPlan`] of the same
//! layout) and [`LinearPlan::work`]. Server: `2^ell - 1` key switches per input ciphertext,
//! about `ceil(m / 2^ell)` per group of `m` column blocks, one product per (leaf, inner block,
//! row block) and one weight encoding per (leaf, inner block) unless cached.

use std::sync::Arc;

use duet_fhe::{
    mul_acc_node, Ciphertext, InputOrbit, MacAccumulator, MacTerms, OrbitWeights, OutputCiphertext,
    Preset, RingBits, RlweParameters, RlweParametersBuilder, SeededCiphertext, WeightBound,
};
use duet_transport::Channel;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rayon::prelude::*;

use super::engine::{fresh_seed, no_seed, seeds, stream_ordered};
use super::linear_plan::LinearPlan;
use super::ring::check_ring;
use super::setup::{HeClientSetup, HeServerSetup};
use super::Cost;
use crate::error::{ProtocolError, Result};

/// Orbit levels [`linear_params`] asks for.
pub const LINEAR_ORBIT_LEVELS: u32 = 6;

/// Packing factor [`linear_params`] allows: 128 column blocks per output ciphertext (the
/// preset's 64 doubled; one more Galois key in the setup, and the packing noise of seven
/// levels in the budget), so that a one-row product's outputs fill twice as many coefficients
/// of a returned ciphertext when the inner block is padded to a multiple of 128.
pub const LINEAR_MAX_PACK: usize = 128;

/// The linear layers' parameters: [`Preset::N8192Q200Pack`] at `l` bits with weights
/// `|w| <= max_weight`, packing up to [`LINEAR_MAX_PACK`] and allowing [`InputOrbit`]s of up
/// to [`LINEAR_ORBIT_LEVELS`] levels (or as many as the noise budget holds, at least 0). The
/// same keys serve [`super::HeMatMul`] (its budget is only more conservative), so a session
/// needs one key set for both.
pub fn linear_params(ring_bits: u32, max_weight: u64) -> Result<Arc<RlweParameters>> {
    linear_params_with_terms(ring_bits, max_weight, Preset::N8192Q200Pack.degree().0)
}

/// [`linear_params`] accumulating up to `mac_terms` weight terms per output (the largest
/// inner dimension of the model's linear layers, at least `N`; [`linear_params`] uses `N`).
pub fn linear_params_with_terms(
    ring_bits: u32,
    max_weight: u64,
    mac_terms: usize,
) -> Result<Arc<RlweParameters>> {
    let mut last = None;
    for levels in (0..=LINEAR_ORBIT_LEVELS).rev() {
        match RlweParametersBuilder::from_preset(Preset::N8192Q200Pack)
            .ring_bits(RingBits(ring_bits))
            .weight_bound(WeightBound::MaxAbs(max_weight))
            .mac_terms(MacTerms(mac_terms))
            .max_pack(LINEAR_MAX_PACK)
            .orbit_levels(levels)
            .build()
        {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || ProtocolError::Config("no linear parameters".into()),
        ProtocolError::from,
    ))
}

/// The server's matrices of one call, borrowed: part `i` is `W_i` (`d x k_i`, row-major) and
/// its bias (`k_i` values, taken mod `2^l`) or `None`.
#[derive(Clone, Debug)]
pub struct LinearWeights<'a> {
    d: usize,
    parts: Vec<(&'a [i64], Option<&'a [i64]>)>,
    /// First global column of each part, and `k` at the end.
    starts: Vec<usize>,
}

impl<'a> LinearWeights<'a> {
    /// Checks shapes and the parameters' weight bound.
    pub fn new(
        params: &RlweParameters,
        d: usize,
        parts: Vec<(&'a [i64], Option<&'a [i64]>)>,
    ) -> Result<Self> {
        let bound = params.max_weight_abs();
        let mut starts = vec![0usize];
        for (w, b) in &parts {
            if d == 0 || w.is_empty() || w.len() % d != 0 {
                return Err(ProtocolError::Shape {
                    what: "linear weights",
                    expected: d,
                    got: w.len(),
                });
            }
            let k = w.len() / d;
            if let Some(b) = b {
                if b.len() != k {
                    return Err(ProtocolError::Shape {
                        what: "linear bias",
                        expected: k,
                        got: b.len(),
                    });
                }
            }
            if let Some(bad) = w.iter().find(|v| u128::from(v.unsigned_abs()) > bound) {
                return Err(ProtocolError::Config(format!(
                    "weight {bad} exceeds the parameters' weight bound {bound}"
                )));
            }
            let last = starts.last().copied().unwrap_or(0);
            starts.push(last + k);
        }
        if parts.is_empty() {
            return Err(ProtocolError::Config(
                "a linear call without matrices".into(),
            ));
        }
        Ok(Self { d, parts, starts })
    }

    /// The output widths `k_i`.
    pub fn part_widths(&self) -> Vec<usize> {
        self.starts
            .iter()
            .zip(self.starts.iter().skip(1))
            .map(|(a, b)| b - a)
            .collect()
    }

    /// The weight blocks of the members of group `g` for inner block `ib` (index = member),
    /// each placed as [`duet_fhe::MatmulLayout::weight_poly`] does: `w[j][c]` at
    /// `(c - c0) d_b + d_b - 1 - (j - j0)`. One pass over the rows, reading each row's columns
    /// of the group contiguously.
    fn group_leaves(
        &self,
        plan: &LinearPlan,
        g: usize,
        ib: usize,
    ) -> Result<Vec<Option<Vec<i64>>>> {
        let bad = || ProtocolError::Config("weight block outside the matrices".into());
        let d_b = plan.layout().d_b;
        let (j0, j1) = plan.inner(ib);
        let first = g * plan.pack();
        let blocks: Vec<(usize, usize)> = (0..plan.group_members(g))
            .map(|m| plan.cols(first + m))
            .collect();
        let mut polys: Vec<Option<Vec<i64>>> = blocks
            .iter()
            .map(|&(c0, c1)| Some(vec![0i64; (c1 - c0) * d_b]))
            .collect();
        for (poly, &(b0, b1)) in polys.iter_mut().flatten().zip(&blocks) {
            // the parts overlapping the block's columns
            for (i, (w, _)) in self.parts.iter().enumerate() {
                let (s0, s1) = (
                    *self.starts.get(i).ok_or_else(bad)?,
                    *self.starts.get(i + 1).ok_or_else(bad)?,
                );
                let (c0, c1) = (b0.max(s0), b1.min(s1));
                if c0 >= c1 {
                    continue;
                }
                let k = s1 - s0;
                for j in j0..j1 {
                    let row = w.get(j * k + c0 - s0..j * k + c1 - s0).ok_or_else(bad)?;
                    let base = (c0 - b0) * d_b + d_b - 1 - (j - j0);
                    for (dst, &v) in poly
                        .get_mut(base..)
                        .unwrap_or_default()
                        .iter_mut()
                        .step_by(d_b)
                        .zip(row)
                    {
                        *dst = v;
                    }
                }
            }
        }
        Ok(polys)
    }
}

/// The node weights of one plan, prepared once (NTT domain) and kept: the offline half of
/// [`HeLinear::run_server`] for weights that are used again (`PrepareMode::Cache` of
/// [`super::HeWeights`]). Memory: [`PreparedLinear::memory_bytes`].
#[derive(Debug)]
pub struct PreparedLinear {
    signature: (usize, usize, usize, usize, usize, usize, u32),
    /// Index `(g, node, ib)` in [`node_index`] order.
    nodes: Vec<Option<OrbitWeights>>,
}

/// Position of `(g, node, ib)` in a [`PreparedLinear`].
fn node_index(plan: &LinearPlan, g: usize, node: usize, ib: usize) -> usize {
    let d_out = plan.pack() >> plan.levels();
    (g * d_out + node) * plan.inner_blocks() + ib
}

fn signature(plan: &LinearPlan) -> (usize, usize, usize, usize, usize, usize, u32) {
    let l = plan.layout();
    let s = plan.shape();
    (s.d, s.k, l.n_b, l.d_b, l.k_b, plan.pack(), plan.levels())
}

impl PreparedLinear {
    /// Prepares every node of `plan` (parallel).
    pub fn new(plan: &LinearPlan, weights: &LinearWeights<'_>) -> Result<Self> {
        let d_out = plan.pack() >> plan.levels();
        let ibs = plan.inner_blocks();
        let mut nodes: Vec<Option<OrbitWeights>> = Vec::new();
        for g in 0..plan.groups() {
            let per_ib: Vec<Vec<Option<Vec<i64>>>> = (0..ibs)
                .map(|ib| weights.group_leaves(plan, g, ib))
                .collect::<Result<_>>()?;
            let made: Vec<Option<OrbitWeights>> = (0..d_out * ibs)
                .into_par_iter()
                .map(|idx| {
                    let (node, ib) = (idx / ibs, idx % ibs);
                    let members = per_ib.get(ib).map_or(&[][..], Vec::as_slice);
                    let leaves: Vec<Option<&[i64]>> = node_members(plan, g, node)
                        .into_iter()
                        .map(|m| m.and_then(|m| members.get(m)?.as_deref()))
                        .collect();
                    Ok(OrbitWeights::new(
                        plan.params(),
                        &leaves,
                        plan.pack(),
                        plan.levels(),
                        plan.layout().d_b - 1,
                    )?)
                })
                .collect::<Result<_>>()?;
            nodes.extend(made);
        }
        Ok(Self {
            signature: signature(plan),
            nodes,
        })
    }

    /// Memory the cache of `plan` takes: `N L 8` bytes per encoded leaf.
    pub fn memory_bytes(plan: &LinearPlan) -> u64 {
        let p = plan.params();
        let per = (p.degree() * p.moduli().len() * 8) as u64;
        let encodes: u64 = (0..plan.groups())
            .map(|g| (plan.group_nodes(g) << plan.levels()) as u64)
            .sum();
        encodes * plan.inner_blocks() as u64 * per
    }

    /// Whether it was prepared for `plan`'s shape and layout.
    pub fn matches(&self, plan: &LinearPlan) -> bool {
        self.signature == signature(plan)
    }
}

/// The member index of leaf `j` of node `node` (tree leaf `node + j D / 2^ell`), if any.
fn node_members(plan: &LinearPlan, g: usize, node: usize) -> Vec<Option<usize>> {
    let d_out = plan.pack() >> plan.levels();
    (0..1usize << plan.levels())
        .map(|j| plan.member_at_leaf(g, node + j * d_out))
        .collect()
}

/// Splits a row-major `n x sum k_i` result into the parts' `n x k_i` matrices.
pub fn split_parts(y: &[u64], n: usize, parts: &[usize]) -> Result<Vec<Vec<u64>>> {
    let k: usize = parts.iter().sum();
    if y.len() != n * k {
        return Err(ProtocolError::Shape {
            what: "linear result",
            expected: n * k,
            got: y.len(),
        });
    }
    let mut out: Vec<Vec<u64>> = parts.iter().map(|&p| Vec::with_capacity(n * p)).collect();
    for row in y.chunks(k.max(1)) {
        let mut rest = row;
        for (dst, &p) in out.iter_mut().zip(parts) {
            let (mine, tail) = rest.split_at(p.min(rest.len()));
            dst.extend_from_slice(mine);
            rest = tail;
        }
    }
    Ok(out)
}

/// The client's I/O-free core: [`Self::encrypt`] (its only flight) and [`Self::decrypt`].
#[derive(Debug)]
pub struct HeLinearClient<'a> {
    setup: &'a HeClientSetup,
    plan: &'a LinearPlan,
}

impl<'a> HeLinearClient<'a> {
    /// A call under `plan` (made for the session's parameters).
    pub fn new(setup: &'a HeClientSetup, plan: &'a LinearPlan) -> Result<Self> {
        if setup.params.id() != plan.params().id() {
            return Err(ProtocolError::Config(
                "the linear plan was made for other parameters than the session".into(),
            ));
        }
        Ok(Self { setup, plan })
    }

    /// Message out: the seeded ciphertexts of `x_c` (row-major `n x d` in `Z_{2^l}`), one per
    /// (row block, inner block), row block major.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        x_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let plan = self.plan;
        let s = plan.shape();
        let params = plan.params();
        check_ring("client share", x_c, s.n * s.d, params.plain_mask())?;
        let ibs = plan.inner_blocks();
        let layout = plan.layout();
        seeds(rng, plan.input_count())
            .into_par_iter()
            .enumerate()
            .map(|(idx, seed)| {
                let (rb, ib) = (idx / ibs, idx % ibs);
                let (r0, r1) = plan.rows(rb);
                let (j0, j1) = plan.inner(ib);
                let mut block = Vec::with_capacity((r1 - r0) * (j1 - j0));
                for i in r0..r1 {
                    block.extend_from_slice(x_c.get(i * s.d + j0..i * s.d + j1).ok_or(
                        ProtocolError::Shape {
                            what: "client matrix",
                            expected: s.n * s.d,
                            got: x_c.len(),
                        },
                    )?);
                }
                let poly = layout.input_poly(&block, r1 - r0, j1 - j0)?;
                let ct = self
                    .setup
                    .sk
                    .encrypt(&poly, &mut ChaCha20Rng::from_seed(seed))?;
                Ok(ct.to_bytes(params)?)
            })
            .collect()
    }

    /// Message in: the server's output messages; returns the client's share of
    /// `X (W_1 | ..) + (b_1 | ..)` (row-major `n x sum k_i`; [`split_parts`] splits it).
    pub fn decrypt(&self, msgs: &[Vec<u8>]) -> Result<Vec<u64>> {
        let plan = self.plan;
        if msgs.len() != plan.output_count() {
            return Err(ProtocolError::Protocol(format!(
                "{} output ciphertexts, expected {}",
                msgs.len(),
                plan.output_count()
            )));
        }
        let params = plan.params();
        let k = plan.shape().k;
        let parts: Vec<Vec<(usize, u64)>> = msgs
            .par_iter()
            .enumerate()
            .map(|(o, m)| {
                let slots = plan.slots(o);
                let ct = OutputCiphertext::from_bytes(params, m, slots.len())?;
                let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
                let vals = self.setup.sk.decrypt_output(&ct, &positions)?;
                Ok(slots
                    .iter()
                    .zip(vals)
                    .map(|(s, v)| (s.row * k + s.col, v))
                    .collect())
            })
            .collect::<Result<_>>()?;
        let mut y = vec![0u64; plan.shape().n * k];
        for (idx, v) in parts.into_iter().flatten() {
            if let Some(dst) = y.get_mut(idx) {
                *dst = v;
            }
        }
        Ok(y)
    }
}

/// The server's I/O-free core: [`Self::mask_and_plain`] (local), [`Self::absorb`] (message
/// in: inputs and their orbits), [`Self::respond`] (message out: one packing group, every row
/// block).
#[derive(Debug)]
pub struct HeLinearServer<'a> {
    setup: &'a HeServerSetup,
    plan: &'a LinearPlan,
    weights: &'a LinearWeights<'a>,
    prepared: Option<&'a PreparedLinear>,
}

impl<'a> HeLinearServer<'a> {
    /// A call under `plan` with `weights` (and their cache, if it was prepared for `plan`).
    pub fn new(
        setup: &'a HeServerSetup,
        plan: &'a LinearPlan,
        weights: &'a LinearWeights<'a>,
        prepared: Option<&'a PreparedLinear>,
    ) -> Result<Self> {
        if setup.params.id() != plan.params().id() {
            return Err(ProtocolError::Config(
                "the linear plan was made for other parameters than the session".into(),
            ));
        }
        if weights.part_widths() != plan.parts() || weights.d != plan.shape().d {
            return Err(ProtocolError::Config(
                "the weights do not have the plan's shape".into(),
            ));
        }
        Ok(Self {
            setup,
            plan,
            weights,
            prepared: prepared.filter(|p| p.matches(plan)),
        })
    }

    /// Local step: the mask `R` (the server's output share, uniform `n x k`) and the plaintext
    /// `X_s W + b - R` (`b - R` when the client holds all of `X`). Returns `(R, plaintext)`.
    pub fn mask_and_plain<R: RngCore + CryptoRng>(
        &self,
        x_s: Option<&[u64]>,
        rng: &mut R,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let s = self.plan.shape();
        let mask = self.plan.params().plain_mask();
        let mut r = vec![0u64; s.n * s.k];
        for v in &mut r {
            *v = rng.next_u64() & mask;
        }
        let mut plain = vec![0u64; s.n * s.k];
        if let Some(x) = x_s {
            check_ring("server share", x, s.n * s.d, mask)?;
        }
        for ((w, b), &c0) in self.weights.parts.iter().zip(&self.weights.starts) {
            let k = w.len() / s.d;
            plain
                .par_chunks_mut(s.k.max(1))
                .enumerate()
                .for_each(|(i, row)| {
                    let dst = row.get_mut(c0..c0 + k).unwrap_or_default();
                    if let Some(x) = x_s {
                        let xrow = x.get(i * s.d..(i + 1) * s.d).unwrap_or_default();
                        for (&xv, wrow) in xrow.iter().zip(w.chunks(k)) {
                            if xv == 0 {
                                continue;
                            }
                            for (y, &wv) in dst.iter_mut().zip(wrow) {
                                *y = y.wrapping_add(xv.wrapping_mul(wv as u64));
                            }
                        }
                    }
                    if let Some(b) = b {
                        for (y, &bv) in dst.iter_mut().zip(b.iter()) {
                            *y = y.wrapping_add(bv as u64);
                        }
                    }
                });
        }
        for (p, &m) in plain.iter_mut().zip(&r) {
            *p = p.wrapping_sub(m) & mask;
        }
        Ok((r, plain))
    }

    /// Message in: parse and expand the client's inputs, scale and take their orbits
    /// (index `rb * inner_blocks + ib`).
    pub fn absorb(&self, msgs: &[Vec<u8>]) -> Result<Vec<InputOrbit>> {
        let plan = self.plan;
        if msgs.len() != plan.input_count() {
            return Err(ProtocolError::Protocol(format!(
                "{} input ciphertexts, expected {}",
                msgs.len(),
                plan.input_count()
            )));
        }
        let params = plan.params();
        let gk = self.galois()?;
        let cts: Vec<Ciphertext> = msgs
            .par_iter()
            .map(|m| Ok(SeededCiphertext::from_bytes(params, m)?.expand(params)?))
            .collect::<Result<_>>()?;
        cts.iter()
            .map(|ct| Ok(InputOrbit::new(ct, plan.pack(), plan.levels(), gk)?))
            .collect()
    }

    fn galois(&self) -> Result<&duet_fhe::GaloisKeys> {
        self.setup.gk.as_ref().ok_or_else(|| {
            ProtocolError::Config("packing needs Galois keys in the session setup".into())
        })
    }

    /// Message out: the output ciphertexts of group `g`, one per row block (in order), from the
    /// orbits of [`Self::absorb`], `plain` of [`Self::mask_and_plain`] and a fresh `seed`.
    pub fn respond(
        &self,
        orbits: &[InputOrbit],
        plain: &[u64],
        g: usize,
        seed: [u8; 32],
    ) -> Result<Vec<Vec<u8>>> {
        let plan = self.plan;
        let params = plan.params();
        let gk = self.galois()?;
        let (rbs, ibs) = (plan.row_blocks(), plan.inner_blocks());
        let d_out = plan.pack() >> plan.levels();
        let missing = || ProtocolError::Config("block index outside the plan".into());
        let nodes: Vec<usize> = (0..plan.group_nodes(g))
            .map(|j| duet_fhe::pack::bitrev_index(d_out, j))
            .collect();
        // accumulators per (node, row block); inner blocks one after the other, the nodes of
        // the group in parallel
        let mut accs: Vec<Vec<MacAccumulator>> = nodes
            .iter()
            .map(|_| (0..rbs).map(|_| MacAccumulator::new(params)).collect())
            .collect();
        let offset = plan.layout().d_b - 1;
        for ib in 0..ibs {
            // on the fly: every node takes its own members' blocks (each member is in one node)
            let mut node_blocks: Vec<Vec<Option<Vec<i64>>>> = match self.prepared {
                Some(_) => nodes.iter().map(|_| Vec::new()).collect(),
                None => {
                    let mut members = self.weights.group_leaves(plan, g, ib)?;
                    nodes
                        .iter()
                        .map(|&node| {
                            node_members(plan, g, node)
                                .into_iter()
                                .map(|m| m.and_then(|m| members.get_mut(m)?.take()))
                                .collect()
                        })
                        .collect()
                }
            };
            nodes
                .par_iter()
                .zip(accs.par_iter_mut())
                .zip(node_blocks.par_iter_mut())
                .try_for_each(|((&node, node_accs), blocks)| -> Result<()> {
                    let mut targets = node_accs
                        .iter_mut()
                        .enumerate()
                        .map(|(rb, acc)| {
                            let orbit = orbits.get(rb * ibs + ib).ok_or_else(missing)?;
                            Ok((acc, orbit))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    match self.prepared {
                        Some(p) => {
                            let w = p
                                .nodes
                                .get(node_index(plan, g, node, ib))
                                .ok_or_else(missing)?;
                            if let Some(w) = w {
                                for (acc, orbit) in targets.iter_mut() {
                                    acc.mul_acc_orbit(orbit, w)?;
                                }
                            }
                        }
                        None => {
                            mul_acc_node(
                                params,
                                &mut targets,
                                core::mem::take(blocks),
                                plan.pack(),
                                plan.levels(),
                                offset,
                            )?;
                        }
                    }
                    Ok(())
                })?;
        }
        let mut per_rb: Vec<Vec<Option<MacAccumulator>>> = (0..rbs)
            .map(|_| (0..d_out).map(|_| None).collect())
            .collect();
        for (&node, accs) in nodes.iter().zip(accs) {
            for (rb, acc) in accs.into_iter().enumerate() {
                let slot = per_rb
                    .get_mut(rb)
                    .and_then(|v| v.get_mut(node))
                    .ok_or_else(missing)?;
                *slot = Some(acc);
            }
        }
        let k = plan.shape().k;
        let mut rng = ChaCha20Rng::from_seed(seed);
        let seeds: Vec<[u8; 32]> = (0..rbs).map(|_| fresh_seed(&mut rng)).collect();
        per_rb
            .into_par_iter()
            .zip(seeds)
            .enumerate()
            .map(|(rb, (members, seed))| {
                let packed = MacAccumulator::pack_sparse(members, 0, gk)?;
                let slots = plan.slots(g * rbs + rb);
                let top = slots.iter().map(|s| s.pos + 1).max().unwrap_or(0);
                let mut poly = vec![0u64; top];
                for s in &slots {
                    let v = plain.get(s.row * k + s.col).ok_or_else(missing)?;
                    *poly.get_mut(s.pos).ok_or_else(missing)? = *v;
                }
                let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
                let out = packed.finalize(
                    &self.setup.pk,
                    &poly,
                    &positions,
                    &mut ChaCha20Rng::from_seed(seed),
                )?;
                Ok(out.to_bytes(params)?)
            })
            .collect()
    }
}

/// `Y_i = X W_i + b_i` for matrices sharing `X`, with HE and split packing, ending in shares.
/// See the module documentation (`linear.rs`) for the protocol, its security and its cost.
#[derive(Clone, Copy, Debug)]
pub struct HeLinear;

impl HeLinear {
    /// Exact online traffic of one call under `plan` (setup excluded).
    pub fn cost(plan: &LinearPlan) -> Cost {
        plan.cost()
    }

    /// Client driver: sends the encrypted blocks of `x_c` (its share, or all of `X`), receives
    /// the results, returns its shares of every part (`n x k_i` each).
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeClientSetup,
        plan: &LinearPlan,
        x_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<Vec<u64>>> {
        let core = HeLinearClient::new(setup, plan)?;
        for m in core.encrypt(x_c, rng)? {
            ch.send_bytes(&m)?;
        }
        ch.flush()?;
        let mut msgs = Vec::with_capacity(plan.output_count());
        let max = super::max_ciphertext_bytes(&setup.params);
        for _ in 0..plan.output_count() {
            msgs.push(ch.recv_bytes_max(max)?);
        }
        split_parts(&core.decrypt(&msgs)?, plan.shape().n, plan.parts())
    }

    /// Server driver: receives the client's blocks (its plaintext product overlapping), answers
    /// group by group (groups in parallel, nodes within a group in parallel, sent in order as
    /// they complete), returns its shares `R` of every part. `x_s = None` when the client holds
    /// all of `X`; `prepared` is used when it was made for `plan`.
    pub fn run_server<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeServerSetup,
        plan: &LinearPlan,
        weights: &LinearWeights<'_>,
        prepared: Option<&PreparedLinear>,
        x_s: Option<&[u64]>,
        rng: &mut R,
    ) -> Result<Vec<Vec<u64>>> {
        let core = HeLinearServer::new(setup, plan, weights, prepared)?;
        let group_seeds = seeds(rng, plan.groups());
        let mut local_rng = ChaCha20Rng::from_seed(fresh_seed(rng));
        let (local, msgs) = std::thread::scope(|s| {
            let local = s.spawn(|| core.mask_and_plain(x_s, &mut local_rng));
            let mut msgs = Vec::with_capacity(plan.input_count());
            let recv = (|| -> Result<()> {
                let len = SeededCiphertext::serialized_len(plan.params());
                for _ in 0..plan.input_count() {
                    msgs.push(ch.recv_bytes_max(len)?);
                }
                Ok(())
            })();
            let local = local.join().map_err(|_| ProtocolError::WorkerPanicked);
            (local, recv.map(|()| msgs))
        });
        let (r, plain) = local??;
        let orbits = core.absorb(&msgs?)?;
        stream_ordered(
            plan.groups(),
            |g| {
                let seed = group_seeds.get(g).copied().ok_or_else(no_seed)?;
                core.respond(&orbits, &plain, g, seed)
            },
            |_, msgs| {
                for m in msgs {
                    ch.send_bytes(&m)?;
                }
                Ok(())
            },
        )?;
        ch.flush()?;
        split_parts(&r, plan.shape().n, plan.parts())
    }
}
