//! ReLU and max over the last axis.

use super::batch::{batch_sizes, ranges, slice_a};
use super::compare::msb_many;
use super::cost::Tape;
use super::millionaire::{millionaire_last, tape_millionaire, CmpMode};
use super::{mux, BShare, Cost, NlConfig, NlSession};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};

/// ReLU: shares of `max(x, 0)` (signed), exact for every `x`.
///
/// Protocol: DReLU (`¬MSB(x)`, one millionaire on `l-1` bits) then [`mux`].
/// Security: semi-honest, 128-bit. Cost: [`relu_cost`] (about 585 + 2 x 20.75 bytes for
/// `l = 37`).
pub fn relu<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare) -> Result<AShare> {
    if let Some(rs) = ranges(x.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(relu(s, ch, &slice_a(x, &r)?)?.into_data());
        }
        return AShare::new(x.ring(), x.shape().to_vec(), out);
    }
    s.reserve(ch, relu_cost(x.len(), x.ring(), s.config()).cots)?;
    if x.is_empty() {
        return Ok(x.clone());
    }
    let (m, _, _) = msb_many(s, ch, x.ring(), x.data(), 0)?;
    let d = BShare::from_bits(&m).not(s.role());
    // the mux's first choice comes from the party that sent the comparison's last flight
    let cfg = s.config();
    let last = millionaire_last(cfg, &[(x.len(), x.ring().bits() - 1)], CmpMode::Lt);
    let sender = last.map_or(cfg.ot_sender, Role::peer);
    s.with_ot_sender(sender, |s| mux(s, ch, &d, x))
}

/// [`relu_cost`] on a tape.
pub fn tape_relu(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    if n == 0 {
        return;
    }
    for m in batch_sizes(n) {
        tape_millionaire(t, cfg, &[(m, ring.bits() - 1)], CmpMode::Lt, 0);
        let c = t.chain(cfg);
        NlSession::tape_cot_both(t, c.ot_sender, m, 1, |_| ring.bits());
    }
}

/// Exact cost of [`relu`] on `n` elements.
pub fn relu_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_relu(&mut t, n, ring, cfg);
    t.cost()
}

/// Maximum over the last axis of length `k` (rows are contiguous): shares of shape
/// `shape[..-1]`.
///
/// Protocol: a tree of `ceil(log2 k)` levels, each one batched `max(a, b) = a + ReLU(b - a)`
/// over all pairs of all rows. Exact when differences of values in a row do not overflow the
/// signed range (e.g. all values in `[-2^{l-2}, 2^{l-2})`).
/// Security: semi-honest, 128-bit. Cost: [`max_axis_cost`].
pub fn max_axis<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare) -> Result<AShare> {
    let ring = x.ring();
    let (&k, outer) = x
        .shape()
        .split_last()
        .ok_or_else(|| MpcError::ShapeMismatch {
            what: "max over the last axis of a scalar".into(),
        })?;
    if k == 0 {
        return Err(MpcError::ShapeMismatch {
            what: "max over an empty axis".into(),
        });
    }
    let base = s.config();
    s.reserve(ch, max_axis_cost(x.len() / k, k, ring, base).cots)?;
    let mut rows: Vec<Vec<u64>> = x.data().chunks(k).map(<[u64]>::to_vec).collect();
    let mut cur = k;
    // each level starts with the party that sent the previous one's last flight
    let mut tp = Tape::with_config(base);
    while cur > 1 {
        let (mut a, mut d) = (Vec::new(), Vec::new());
        for r in &rows {
            for p in r.chunks_exact(2) {
                if let [lo, hi] = p {
                    a.push(*lo);
                    d.push(ring.sub(*hi, *lo));
                }
            }
        }
        let dn = d.len();
        let c = tp.chain(base);
        let rl = s.with_ot_sender(c.ot_sender, |s| {
            relu(s, ch, &AShare::new(ring, vec![dn], d)?)
        })?;
        tape_relu(&mut tp, dn, ring, c);
        let mut it = a.iter().zip(rl.data()).map(|(&a, &r)| ring.add(a, r));
        for r in rows.iter_mut() {
            let odd = (r.len() % 2 == 1).then(|| r.last().copied()).flatten();
            let mut next: Vec<u64> = it.by_ref().take(r.len() / 2).collect();
            next.extend(odd);
            *r = next;
        }
        cur = cur.div_ceil(2);
    }
    AShare::new(ring, outer.to_vec(), rows.into_iter().flatten().collect())
}

/// Exact cost of [`max_axis`] on `rows` rows of length `k`.
pub fn max_axis_cost(rows: usize, k: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_max_axis(&mut t, rows, k, ring, cfg);
    t.cost()
}

/// [`max_axis_cost`] on a tape.
pub fn tape_max_axis(t: &mut Tape, rows: usize, k: usize, ring: Ring, cfg: NlConfig) {
    let mut cur = k;
    while cur > 1 {
        let c = t.chain(cfg);
        tape_relu(t, rows * (cur / 2), ring, c);
        cur = cur.div_ceil(2);
    }
}
