//! Top-k and top-p keep masks: the offset logits are bit-decomposed once, then a threshold is
//! searched bit by bit from the top with shared per-logit state (see the parent module's
//! documentation).

use super::add_public;
use super::plan::{Plan, SamplePlan, TopP, P_BITS};
use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::exp::{exp, exp_cost, extend_pos, extend_pos_cost};
use duet_mpc::nonlinear::{self as nl, BShare, Cost, NlConfig, NlSession, TruncMode};
use duet_mpc::{AShare, Ring};
use duet_transport::{Channel, Role};

fn xor(a: &[bool], b: &[bool]) -> Vec<bool> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

fn and<C: Channel>(s: &mut NlSession, ch: &mut C, x: &[bool], y: &[bool]) -> Result<Vec<bool>> {
    Ok(nl::and(s, ch, &BShare::from_bits(x), &BShare::from_bits(y))?.to_bits())
}

/// This party's XOR shares of the bits `0..w` of the shared `u` (every value in `[0, 2^w)`),
/// bit `j` of all elements in entry `j`.
///
/// Protocol: a ripple-carry adder on the two shares (`u = a + b mod 2^w`): bit `j` is
/// `a_j ⊕ b_j ⊕ c_j` and the carry `c_{j+1} = maj(a_j, b_j, c_j) = a_j ⊕ (a_j ⊕ b_j) ∧ (a_j ⊕
/// c_j)`, one AND per element and bit (`w - 1` rounds). Cost: [`decompose_cost`].
fn decompose<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    u: &AShare,
    w: u32,
) -> Result<Vec<Vec<bool>>> {
    let server = s.role() == Role::Server;
    let n = u.len();
    let mut carry = vec![false; n];
    let mut out = Vec::with_capacity(w as usize);
    for j in 0..w {
        let a: Vec<bool> = u.data().iter().map(|&v| (v >> j) & 1 == 1).collect();
        out.push(xor(&a, &carry));
        if j + 1 < w {
            // (a_j ⊕ b_j): each party its own bit; (a_j ⊕ c_j): the server adds a_j
            let q = if server { xor(&a, &carry) } else { carry };
            let r = and(s, ch, &a, &q)?;
            carry = if server { xor(&a, &r) } else { r };
        }
    }
    Ok(out)
}

fn decompose_cost(n: usize, w: u32, cfg: NlConfig) -> Cost {
    (1..w).fold(Cost::default(), |c, _| c + nl::and_cost(n, cfg))
}

/// What the threshold search counts: the logits (top-k) or their masses (top-p).
enum Weights<'a> {
    /// `#{x_i >= t} >= k`, counted in `ring`.
    Count { k: u64, ring: Ring },
    /// `sum_{x_i >= t} e_i >= target` (one target per row), both in the ring of `e`.
    Mass { e: &'a AShare, target: &'a AShare },
}

/// Shares of `keep_i = 1{u_i >= θ}` where `θ` is the largest `t` with `weight{u >= t} >= target`
/// in the row of `i` (`bits`: the decomposition of `u`, the top bit last).
///
/// Protocol: `eq_i = 1`, `gt_i = 0`; for each bit `j` from the top: `e_i = eq_i ∧ u_ij` (an AND,
/// none at the top bit), the candidate's weight `sum_i (gt_i ⊕ e_i) w_i` per row (B2A of the
/// bits, or a mux of the masses), `t = 1{weight >= target}` (one comparison per row), then
/// `eq_i <- eq_i ⊕ e_i ⊕ t ∧ eq_i` and `gt_i <- gt_i ⊕ e_i ⊕ t ∧ e_i` (2 ANDs; one at the top
/// bit, where `eq = 1`); at the last bit directly `keep_i = gt_i ⊕ e_i ⊕ ¬t ∧ (eq_i ⊕ e_i)`.
/// Cost: [`search_cost`].
fn search<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    bits: &[Vec<bool>],
    rows: usize,
    vocab: usize,
    wts: &Weights<'_>,
) -> Result<BShare> {
    let server = s.role() == Role::Server;
    let n = rows * vocab;
    let w = bits.len();
    let mut eq = vec![server; n];
    let mut gt = vec![false; n];
    for (step, uj) in bits.iter().rev().enumerate() {
        let (fresh, last) = (step == 0, step + 1 == w);
        let e = if fresh {
            uj.clone()
        } else {
            and(s, ch, &eq, uj)?
        };
        let cand = BShare::from_bits(&xor(&gt, &e));
        let (ring, sums, target): (Ring, Vec<u64>, Vec<u64>) = match wts {
            Weights::Count { k, ring } => {
                let a = nl::b2a(s, ch, &cand, *ring)?;
                let kk = if server { ring.reduce(*k) } else { 0 };
                (*ring, row_sums(&a, vocab), vec![kk; rows])
            }
            Weights::Mass { e: ew, target } => {
                let a = nl::mux(s, ch, &cand, ew)?;
                (ew.ring(), row_sums(&a, vocab), target.data().to_vec())
            }
        };
        let d: Vec<u64> = sums
            .iter()
            .zip(&target)
            .map(|(&a, &b)| ring.sub(a, b))
            .collect();
        let t = nl::drelu(s, ch, &AShare::new(ring, vec![rows], d)?)?.to_bits();
        let tb: Vec<bool> = t
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, vocab))
            .collect();
        if last {
            let nt: Vec<bool> = tb.iter().map(|&b| b ^ server).collect();
            let z = and(s, ch, &nt, &xor(&eq, &e))?;
            return Ok(BShare::from_bits(&xor(&xor(&gt, &e), &z)));
        }
        if fresh {
            // eq = 1: t ∧ eq = t
            let te = and(s, ch, &tb, &e)?;
            eq = xor(&xor(&eq, &e), &tb);
            gt = xor(&xor(&gt, &e), &te);
        } else {
            let xs: Vec<bool> = tb.iter().chain(&tb).copied().collect();
            let ys: Vec<bool> = e.iter().chain(&eq).copied().collect();
            let z = and(s, ch, &xs, &ys)?;
            let (te, teq) = z.split_at(n);
            eq = xor(&xor(&eq, &e), teq);
            gt = xor(&xor(&gt, &e), te);
        }
    }
    Err(ProtocolError::Config(
        "threshold search over zero bits".into(),
    ))
}

fn search_cost(
    rows: usize,
    vocab: usize,
    w: u32,
    weights: Ring,
    mass: bool,
    cfg: NlConfig,
) -> Cost {
    let n = rows * vocab;
    let mut c = Cost::default();
    for step in 0..w {
        let (fresh, last) = (step == 0, step + 1 == w);
        if !fresh {
            c = c + nl::and_cost(n, cfg);
        }
        c = c + if mass {
            nl::mux_cost(n, weights, cfg)
        } else {
            nl::b2a_cost(n, weights, cfg)
        };
        c = c + nl::drelu_cost(rows, weights, cfg);
        c = c + if last || fresh {
            nl::and_cost(n, cfg)
        } else {
            nl::and_cost(2 * n, cfg)
        };
    }
    c
}

fn row_sums(a: &AShare, vocab: usize) -> Vec<u64> {
    let r = a.ring();
    a.data()
        .chunks(vocab)
        .map(|row| row.iter().fold(0u64, |acc, &v| r.add(acc, v)))
        .collect()
}

/// `x` (in `Z_2^l1`, non-negative below `2^{l1-1}`) in `to`: a reduction or [`extend_pos`].
fn to_ring<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, to: Ring) -> Result<AShare> {
    if to.bits() <= x.ring().bits() {
        Ok(nl::reduce(x, to)?)
    } else {
        Ok(extend_pos(s, ch, x, to)?)
    }
}

fn to_ring_cost(n: usize, from: Ring, to: Ring, cfg: NlConfig) -> Cost {
    if to.bits() <= from.bits() {
        Cost::default()
    } else {
        extend_pos_cost(n, from, to, cfg)
    }
}

/// Shares of `e_i = exp((x_i - max) / T)` at `F_e` fractional bits in the mass ring: the row max
/// ([`nl::max_axis`]), `max - x_i >= 0` extended to the exp's ring, scaled by `-round(2^s / T)`
/// (local), the table exp, reduced to the mass ring.
fn masses<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    p: &Plan,
    tp: &TopP,
) -> Result<AShare> {
    let lc = p.lc;
    let m = nl::max_axis(s, ch, x)?;
    let d: Vec<u64> = x
        .data()
        .chunks(p.vocab)
        .zip(m.data())
        .flat_map(|(row, &mv)| row.iter().map(move |&v| lc.sub(mv, v)))
        .collect();
    let d = to_ring(s, ch, &AShare::new(lc, vec![p.n()], d)?, tp.le)?;
    let scale = i64::try_from(tp.scale)
        .map_err(|_| ProtocolError::Config("top-p scale out of range".into()))?;
    let y = d.mul_public(-scale);
    let e = exp(s, ch, &y, tp.f_in, tp.exp)?;
    Ok(nl::reduce(&e, tp.lm)?)
}

fn masses_cost(p: &Plan, tp: &TopP, cfg: NlConfig) -> Cost {
    nl::max_axis_cost(p.rows, p.vocab, p.lc, cfg)
        + to_ring_cost(p.n(), p.lc, tp.le, cfg)
        + exp_cost(p.n(), tp.le, tp.f_in, tp.exp, cfg)
}

/// Shares of `p Z` per row (`Z` the row sum of `e`, non-negative): `Z` extended, multiplied by
/// `round(p 2^16)` and truncated by 16 bits (one ulp of error), back in the mass ring.
fn nucleus_target<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    e: &AShare,
    p: &Plan,
    tp: &TopP,
) -> Result<AShare> {
    let z = AShare::new(tp.lm, vec![p.rows], row_sums(e, p.vocab))?;
    let z = extend_pos(s, ch, &z, tp.lz)?;
    let pq = i64::try_from(tp.p_q)
        .map_err(|_| ProtocolError::Config("top-p value out of range".into()))?;
    let pz = nl::trunc(s, ch, &z.mul_public(pq), P_BITS, TruncMode::KnownMsb(false))?;
    Ok(nl::reduce(&pz, tp.lm)?)
}

fn nucleus_target_cost(p: &Plan, tp: &TopP, cfg: NlConfig) -> Cost {
    extend_pos_cost(p.rows, tp.lm, tp.lz, cfg)
        + nl::trunc_cost(p.rows, tp.lz, P_BITS, TruncMode::KnownMsb(false), cfg)
}

/// Shares of the keep mask of the top-k / top-p filters of `sp` for the logits `x` (in the
/// comparison ring, shape `[rows, V]`). Cost: [`keep_mask_cost`].
pub(super) fn keep_mask<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    p: &Plan,
    sp: &SamplePlan,
) -> Result<BShare> {
    let u = add_public(x, s.role(), 1i64 << p.mag)?;
    let bits = decompose(s, ch, &u, p.w())?;
    let keep_k = match sp.top_k {
        Some((k, ring)) => Some(search(
            s,
            ch,
            &bits,
            p.rows,
            p.vocab,
            &Weights::Count { k, ring },
        )?),
        None => None,
    };
    let Some(tp) = sp.top_p else {
        return keep_k.ok_or_else(|| ProtocolError::Config("no top-k or top-p filter".into()));
    };
    let e = masses(s, ch, x, p, &tp)?;
    let e = match &keep_k {
        Some(k) => nl::mux(s, ch, k, &e)?,
        None => e,
    };
    let target = nucleus_target(s, ch, &e, p, &tp)?;
    search(
        s,
        ch,
        &bits,
        p.rows,
        p.vocab,
        &Weights::Mass {
            e: &e,
            target: &target,
        },
    )
}

/// Exact bytes (flights: an upper bound) and COTs of [`keep_mask`].
pub(super) fn keep_mask_cost(p: &Plan, sp: &SamplePlan, cfg: NlConfig) -> Result<Cost> {
    let n = p.n();
    let mut c = decompose_cost(n, p.w(), cfg);
    if let Some((_, ring)) = sp.top_k {
        c = c + search_cost(p.rows, p.vocab, p.w(), ring, false, cfg);
    }
    if let Some(tp) = sp.top_p {
        c = c + masses_cost(p, &tp, cfg);
        if sp.top_k.is_some() {
            c = c + nl::mux_cost(n, tp.lm, cfg);
        }
        c = c
            + nucleus_target_cost(p, &tp, cfg)
            + search_cost(p.rows, p.vocab, p.w(), tp.lm, true, cfg);
    } else if sp.top_k.is_none() {
        return Err(ProtocolError::Config("no top-k or top-p filter".into()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::super::plan::plans;
    use super::super::{tournament, LogitFormat, TokenChoice};
    use super::*;

    /// Bytes and flights of each step of sampling with top-k 50 and top-p 0.9 at V = 49,152
    /// (Ferret COTs; from the cost formulas).
    #[test]
    #[ignore = "prints the cost breakdown"]
    fn print_breakdown() {
        let cfg = NlConfig::default();
        let fmt = LogitFormat::new(Ring::new(37).unwrap(), 12, 6).unwrap();
        let choice = TokenChoice::Sample {
            temperature: 0.8,
            top_k: Some(50),
            top_p: Some(0.9),
            seed: 0,
        };
        let (p, sp) = plans(1, 49_152, &fmt, &choice);
        let sp = sp.unwrap();
        let tp = sp.top_p.unwrap();
        let (_, count) = sp.top_k.unwrap();
        let n = p.n();
        let show = |what: &str, c: Cost| {
            eprintln!(
                "{what:28} {:>10} B {:>6.1} B/logit {:>5} flights",
                c.bytes,
                c.bytes as f64 / n as f64,
                c.rounds
            );
        };
        eprintln!(
            "rings: compare {}, noisy {}, count {}, exp {}, mass {}, exp frac {}",
            p.lc.bits(),
            sp.ls.bits(),
            count.bits(),
            tp.le.bits(),
            tp.lm.bits(),
            tp.exp.frac
        );
        eprintln!("exp error bound {:.2e}", tp.exp.error_bound());
        show("bit decomposition", decompose_cost(n, p.w(), cfg));
        show(
            "top-k search",
            search_cost(1, p.vocab, p.w(), count, false, cfg),
        );
        show("max", nl::max_axis_cost(1, p.vocab, p.lc, cfg));
        show(
            "extension to the exp ring",
            to_ring_cost(n, p.lc, tp.le, cfg),
        );
        show("exp", exp_cost(n, tp.le, tp.f_in, tp.exp, cfg));
        show("top-k mask of the masses", nl::mux_cost(n, tp.lm, cfg));
        show("p Z", nucleus_target_cost(&p, &tp, cfg));
        show(
            "top-p search",
            search_cost(1, p.vocab, p.w(), tp.lm, true, cfg),
        );
        show(
            "widening to the noisy ring",
            extend_pos_cost(n, p.lc, sp.ls, cfg),
        );
        show("mask of the noisy logits", nl::mux_cost(n, sp.ls, cfg));
        show(
            "tournament",
            tournament::argmax_cost(1, p.vocab, sp.ls, cfg),
        );
        show(
            "greedy tournament",
            tournament::argmax_cost(1, p.vocab, p.lc, cfg),
        );
    }
}
