//! The HE work of the KV-cache protocol, for either party: encrypt its step ciphertexts, answer
//! the peer's with masked, flooded products against its own shares, decrypt the peer's answers.
//! No I/O.

use std::sync::Arc;

use duet_fhe::{
    Ciphertext, MacAccumulator, OutputCiphertext, PlainWeights, RlweParameters, SeededCiphertext,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rayon::prelude::*;

use super::layout::{Chunk, Layout, ScorePlan};
use crate::error::{ProtocolError, Result};
use crate::matmul::engine::seeds;
use crate::matmul::setup::{HeClientSetup, HeServerSetup};

/// One answer message and the masks it used: `(head, query row, index, mask)`.
type Answer = (Vec<u8>, Vec<(usize, usize, usize, u64)>);

/// Rows whose weight polynomials are prepared together in a context product (bounds the
/// transient memory to this many `N L 8`-byte polynomials).
const CONTEXT_BATCH: usize = 32;

/// A cached row of the peer: its step ciphertext, expanded (NTT form) or as received.
#[derive(Clone, Debug)]
pub(crate) enum PeerRow {
    /// `2 N L 8` bytes; used as is.
    Expanded(Ciphertext),
    /// `N L 8` bytes plus a seed; expanded at each use.
    Compact(SeededCiphertext),
}

impl PeerRow {
    fn expanded(&self, params: &Arc<RlweParameters>) -> Result<std::borrow::Cow<'_, Ciphertext>> {
        Ok(match self {
            PeerRow::Expanded(c) => std::borrow::Cow::Borrowed(c),
            PeerRow::Compact(s) => std::borrow::Cow::Owned(s.expand(params)?),
        })
    }
}

fn internal(what: &str) -> ProtocolError {
    ProtocolError::Config(format!("KV cache: {what} outside the plan"))
}

/// One step ciphertext per query row `rho < r`: query heads `q[h][rho]` (`q` is
/// `heads x r x d`) and value row `v[rho]` (`v` is `r x kv_heads d`), encrypted under `own`.
pub(crate) fn encrypt_steps<R: RngCore + CryptoRng>(
    own: &HeClientSetup,
    l: &Layout,
    q: &[u64],
    v: &[u64],
    r: usize,
    rng: &mut R,
) -> Result<Vec<Vec<u8>>> {
    let (h, d, gd) = (l.heads, l.d, l.kv_heads * l.d);
    seeds(rng, r)
        .into_par_iter()
        .enumerate()
        .map(|(rho, seed)| {
            let mut qrow = Vec::with_capacity(h * d);
            for head in 0..h {
                let at = (head * r + rho) * d;
                qrow.extend_from_slice(q.get(at..at + d).ok_or_else(|| internal("query"))?);
            }
            let vrow = v
                .get(rho * gd..(rho + 1) * gd)
                .ok_or_else(|| internal("value row"))?;
            let plain = l.step_plain(&qrow, vrow);
            let mut rng = ChaCha20Rng::from_seed(seed);
            Ok(own.sk.encrypt(&plain, &mut rng)?.to_bytes(&own.params)?)
        })
        .collect()
}

/// Parse the peer's step ciphertexts (length, version and parameter id checked).
pub(crate) fn parse_steps(
    params: &Arc<RlweParameters>,
    msgs: &[Vec<u8>],
    compact: bool,
) -> Result<Vec<PeerRow>> {
    msgs.par_iter()
        .map(|m| {
            let s = SeededCiphertext::from_bytes(params, m)?;
            Ok(if compact {
                PeerRow::Compact(s)
            } else {
                PeerRow::Expanded(s.expand(params)?)
            })
        })
        .collect()
}

/// `(coefficient, head, key row)` of every score of chunk `c`, in the order they are sent.
pub(crate) fn chunk_outputs(l: &Layout, plan: &ScorePlan, c: &Chunk) -> Vec<(usize, usize, usize)> {
    let shift = (l.w - 1) % c.pack;
    let mut out = Vec::new();
    for (j, acc) in plan.accs.iter().skip(c.start).take(c.len).enumerate() {
        for col in &acc.cols {
            for h in l.heads_of(col.g) {
                out.push((l.score_position(h, col) - shift + j, h, col.t));
            }
        }
    }
    out
}

/// Weight polynomial of score accumulator `a`: its key rows (own share, `ctx x kv_heads d`)
/// reversed at their slots.
fn score_weights(
    params: &Arc<RlweParameters>,
    l: &Layout,
    plan: &ScorePlan,
    a: usize,
    k: &[u64],
) -> Result<PlainWeights> {
    let acc = plan.accs.get(a).ok_or_else(|| internal("accumulator"))?;
    let top = acc.cols.iter().map(|c| (c.k + 1) * l.w).max().unwrap_or(0);
    let mut poly = vec![0u64; top];
    let gd = l.kv_heads * l.d;
    for c in &acc.cols {
        let row = k
            .get(c.t * gd + c.g * l.d..c.t * gd + (c.g + 1) * l.d)
            .ok_or_else(|| internal("key row"))?;
        for (i, &x) in row.iter().enumerate() {
            *poly
                .get_mut(c.k * l.w + l.w - 1 - i)
                .ok_or_else(|| internal("key coefficient"))? = x;
        }
    }
    Ok(PlainWeights::from_ring(params, &poly)?)
}

/// The masked, flooded scores the peer's step ciphertexts `xs` (one per query row) give against
/// the own key rows `k` (`ctx x kv_heads d`): one output message per (query row, chunk), and the
/// masks `R` (`heads x r x ctx`, the own share of these cross terms).
#[allow(clippy::too_many_arguments, reason = "the product's operands and plan")]
pub(crate) fn score_responses<R: RngCore + CryptoRng>(
    peer: &HeServerSetup,
    l: &Layout,
    plan: &ScorePlan,
    chunks: &[Chunk],
    xs: &[Ciphertext],
    k: &[u64],
    ctx: usize,
    rng: &mut R,
) -> Result<(Vec<Vec<u8>>, Vec<u64>)> {
    let params = &peer.params;
    let mask = params.plain_mask();
    let weights: Vec<PlainWeights> = (0..plan.accs.len())
        .into_par_iter()
        .map(|a| score_weights(params, l, plan, a, k))
        .collect::<Result<_>>()?;
    let r = xs.len();
    let tasks: Vec<(usize, usize)> = (0..r)
        .flat_map(|rho| (0..chunks.len()).map(move |c| (rho, c)))
        .collect();
    let task_seeds = seeds(rng, tasks.len());
    let results: Vec<Answer> = tasks
        .par_iter()
        .zip(task_seeds)
        .map(|(&(rho, ci), seed)| {
            let c = chunks.get(ci).ok_or_else(|| internal("chunk"))?;
            let x = xs.get(rho).ok_or_else(|| internal("step ciphertext"))?;
            let mut accs = Vec::with_capacity(c.pack);
            for a in c.start..c.start + c.len {
                let mut acc = MacAccumulator::new(params);
                acc.mul_acc(x, weights.get(a).ok_or_else(|| internal("weights"))?)?;
                accs.push(acc);
            }
            accs.resize_with(c.pack, || MacAccumulator::new(params));
            let packed = if c.pack == 1 {
                accs.pop().ok_or_else(|| internal("accumulator"))?
            } else {
                let gk = peer.gk.as_ref().ok_or_else(|| {
                    ProtocolError::Config("packing needs the peer's Galois keys".into())
                })?;
                MacAccumulator::pack(accs, l.w - 1, gk)?
            };
            let outs = chunk_outputs(l, plan, c);
            let mut rng = ChaCha20Rng::from_seed(seed);
            let top = outs.iter().map(|o| o.0 + 1).max().unwrap_or(0);
            let mut poly = vec![0u64; top];
            let mut masks = Vec::with_capacity(outs.len());
            for &(pos, h, t) in &outs {
                let m = rng.next_u64() & mask;
                *poly.get_mut(pos).ok_or_else(|| internal("output"))? = m.wrapping_neg() & mask;
                masks.push((h, rho, t, m));
            }
            let positions: Vec<usize> = outs.iter().map(|o| o.0).collect();
            let out = packed.finalize(&peer.pk, &poly, &positions, &mut rng)?;
            Ok((out.to_bytes(params)?, masks))
        })
        .collect::<Result<_>>()?;
    let mut r_share = vec![0u64; l.heads * r * ctx];
    let mut msgs = Vec::with_capacity(results.len());
    for (m, masks) in results {
        msgs.push(m);
        for (h, rho, t, v) in masks {
            *r_share
                .get_mut((h * r + rho) * ctx + t)
                .ok_or_else(|| internal("score"))? = v;
        }
    }
    Ok((msgs, r_share))
}

/// Decrypt the peer's score messages (one per (query row, chunk)) into `heads x r x ctx`.
pub(crate) fn decrypt_scores(
    own: &HeClientSetup,
    l: &Layout,
    plan: &ScorePlan,
    chunks: &[Chunk],
    msgs: &[Vec<u8>],
    r: usize,
    ctx: usize,
) -> Result<Vec<u64>> {
    if msgs.len() != r * chunks.len() {
        return Err(ProtocolError::Protocol(format!(
            "{} score ciphertexts, expected {}",
            msgs.len(),
            r * chunks.len()
        )));
    }
    let outs: Vec<Vec<(usize, usize, usize)>> =
        chunks.iter().map(|c| chunk_outputs(l, plan, c)).collect();
    let parts: Vec<Vec<(usize, u64)>> = msgs
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let (rho, ci) = (i / chunks.len().max(1), i % chunks.len().max(1));
            let o = outs.get(ci).ok_or_else(|| internal("chunk"))?;
            let ct = OutputCiphertext::from_bytes(&own.params, m, o.len())?;
            let positions: Vec<usize> = o.iter().map(|x| x.0).collect();
            let vals = own.sk.decrypt_output(&ct, &positions)?;
            Ok(o.iter()
                .zip(vals)
                .map(|(&(_, h, t), v)| ((h * r + rho) * ctx + t, v))
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut out = vec![0u64; l.heads * r * ctx];
    for (idx, v) in parts.into_iter().flatten() {
        *out.get_mut(idx).ok_or_else(|| internal("score"))? = v;
    }
    Ok(out)
}

/// `(coefficient, head, column i)` of every context value of accumulator `a`.
pub(crate) fn context_outputs(l: &Layout, a: usize) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    if let Some(acc) = l.context.get(a) {
        for &(h, tau) in acc {
            for i in 0..l.d {
                out.push((tau * l.w + i, h, i));
            }
        }
    }
    out
}

/// Weight polynomial of cached row `t` for context accumulator `a` and query row `rho`:
/// `sum_h P[h][rho][t] X^(copy shift of h)` (`p` is `heads x r x ctx`).
#[allow(
    clippy::too_many_arguments,
    reason = "indices of one weight polynomial"
)]
fn context_weights(
    params: &Arc<RlweParameters>,
    l: &Layout,
    a: usize,
    p: &[u64],
    r: usize,
    rho: usize,
    ctx: usize,
    t: usize,
) -> Result<PlainWeights> {
    let mask = params.plain_mask();
    let n = l.n as i64;
    let mut poly = vec![0u64; l.n];
    for &(h, tau) in l
        .context
        .get(a)
        .ok_or_else(|| internal("context accumulator"))?
    {
        let c = *p
            .get((h * r + rho) * ctx + t)
            .ok_or_else(|| internal("probability"))?;
        let s = l.copy_shift(h, tau);
        // X^s = -X^(N+s) for s < 0
        let (at, v) = if s >= 0 {
            (s, c)
        } else {
            (n + s, c.wrapping_neg() & mask)
        };
        let slot = poly
            .get_mut(usize::try_from(at).map_err(|_| internal("shift"))?)
            .ok_or_else(|| internal("shift"))?;
        *slot = slot.wrapping_add(v) & mask;
    }
    Ok(PlainWeights::from_ring(params, &poly)?)
}

/// The masked, flooded context values the peer's cached rows give against the own
/// probabilities `p` (`heads x r x ctx`): one output message per (query row, context
/// accumulator), and the masks (`heads x r x d`).
pub(crate) fn context_responses<R: RngCore + CryptoRng>(
    peer: &HeServerSetup,
    l: &Layout,
    rows: &[PeerRow],
    p: &[u64],
    r: usize,
    rng: &mut R,
) -> Result<(Vec<Vec<u8>>, Vec<u64>)> {
    let params = &peer.params;
    let mask = params.plain_mask();
    let ctx = rows.len();
    let tasks: Vec<(usize, usize)> = (0..r)
        .flat_map(|rho| (0..l.context.len()).map(move |a| (rho, a)))
        .collect();
    let task_seeds = seeds(rng, tasks.len());
    let results: Vec<Answer> = tasks
        .par_iter()
        .zip(task_seeds)
        .map(|(&(rho, a), seed)| {
            let mut acc = MacAccumulator::new(params);
            for start in (0..ctx).step_by(CONTEXT_BATCH) {
                let end = (start + CONTEXT_BATCH).min(ctx);
                let prepared: Vec<(PlainWeights, std::borrow::Cow<'_, Ciphertext>)> = (start..end)
                    .into_par_iter()
                    .map(|t| {
                        let w = context_weights(params, l, a, p, r, rho, ctx, t)?;
                        let row = rows.get(t).ok_or_else(|| internal("row"))?;
                        Ok((w, row.expanded(params)?))
                    })
                    .collect::<Result<_>>()?;
                for (w, row) in &prepared {
                    acc.mul_acc(row, w)?;
                }
            }
            let outs = context_outputs(l, a);
            let mut rng = ChaCha20Rng::from_seed(seed);
            let top = outs.iter().map(|o| o.0 + 1).max().unwrap_or(0);
            let mut poly = vec![0u64; top];
            let mut masks = Vec::with_capacity(outs.len());
            for &(pos, h, i) in &outs {
                let m = rng.next_u64() & mask;
                *poly.get_mut(pos).ok_or_else(|| internal("output"))? = m.wrapping_neg() & mask;
                masks.push((h, rho, i, m));
            }
            let positions: Vec<usize> = outs.iter().map(|o| o.0).collect();
            let out = acc.finalize(&peer.pk, &poly, &positions, &mut rng)?;
            Ok((out.to_bytes(params)?, masks))
        })
        .collect::<Result<_>>()?;
    let d = l.d;
    let mut r_share = vec![0u64; l.heads * r * d];
    let mut msgs = Vec::with_capacity(results.len());
    for (m, masks) in results {
        msgs.push(m);
        for (h, rho, i, v) in masks {
            *r_share
                .get_mut((h * r + rho) * d + i)
                .ok_or_else(|| internal("context value"))? = v;
        }
    }
    Ok((msgs, r_share))
}

/// Decrypt the peer's context messages (one per (query row, accumulator)) into
/// `heads x r x d`.
pub(crate) fn decrypt_context(
    own: &HeClientSetup,
    l: &Layout,
    msgs: &[Vec<u8>],
    r: usize,
) -> Result<Vec<u64>> {
    let na = l.context.len();
    if msgs.len() != r * na {
        return Err(ProtocolError::Protocol(format!(
            "{} context ciphertexts, expected {}",
            msgs.len(),
            r * na
        )));
    }
    let d = l.d;
    let parts: Vec<Vec<(usize, u64)>> = msgs
        .par_iter()
        .enumerate()
        .map(|(idx, m)| {
            let (rho, a) = (idx / na.max(1), idx % na.max(1));
            let o = context_outputs(l, a);
            let ct = OutputCiphertext::from_bytes(&own.params, m, o.len())?;
            let positions: Vec<usize> = o.iter().map(|x| x.0).collect();
            let vals = own.sk.decrypt_output(&ct, &positions)?;
            Ok(o.iter()
                .zip(vals)
                .map(|(&(_, h, i), v)| ((h * r + rho) * d + i, v))
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut out = vec![0u64; l.heads * r * d];
    for (idx, v) in parts.into_iter().flatten() {
        *out.get_mut(idx).ok_or_else(|| internal("context value"))? = v;
    }
    Ok(out)
}
