//! The argmax tournament: values compared and muxed level by level, the winner's index carried
//! as XOR-shared bits relative to its subtree (see the parent module's documentation).

use crate::Result;
use duet_mpc::nonlinear::{self as nl, BShare, Cost, NlConfig, NlSession};
use duet_mpc::{AShare, Ring};
use duet_transport::Channel;

/// This party's XOR shares of the index of the largest value of each row of `x` (`rows` rows
/// of `vocab` values, row-major, in the ring in which they are compared: every difference of
/// two values must lie in its signed range), the lowest index among ties, as `rows` words
/// holding `ceil(log2 vocab)` bits each. Cost: [`argmax_cost`].
pub(super) fn argmax<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    rows: usize,
    vocab: usize,
) -> Result<Vec<u64>> {
    let ring = x.ring();
    let mut cur = vocab;
    let mut vals = x.data().to_vec();
    let mut idx = vec![0u64; vals.len()];
    // index bits carried by every node
    let mut t = 0usize;
    while cur > 1 {
        let pairs = cur / 2;
        let next = cur.div_ceil(2);
        let np = rows * pairs;
        // 1{v_l < v_r} = MSB(v_l - v_r): a tie keeps the left (lower) index
        let diff: Vec<u64> = vals
            .chunks_exact(cur)
            .flat_map(|row| {
                row.chunks_exact(2)
                    .map(|p| match p {
                        [l, r] => ring.sub(*l, *r),
                        _ => 0,
                    })
                    .collect::<Vec<u64>>()
            })
            .collect();
        let c = nl::msb(s, ch, &AShare::new(ring, vec![np], diff.clone())?)?;
        // v_l + c (v_r - v_l), unless this is the last level
        let moved = if next > 1 {
            let up: Vec<u64> = diff.iter().map(|&d| ring.neg(d)).collect();
            Some(nl::mux(s, ch, &c, &AShare::new(ring, vec![np], up)?)?.into_data())
        } else {
            None
        };
        let cb = c.to_bits();
        // the lower t index bits: i_l ⊕ c ∧ (i_l ⊕ i_r)
        let sel = if t > 0 {
            let xs: Vec<bool> = cb.iter().flat_map(|&b| std::iter::repeat_n(b, t)).collect();
            let ys: Vec<bool> = idx
                .chunks_exact(cur)
                .flat_map(|row| {
                    row.chunks_exact(2)
                        .flat_map(|p| {
                            let d = match p {
                                [l, r] => l ^ r,
                                _ => 0,
                            };
                            (0..t).map(move |j| (d >> j) & 1 == 1)
                        })
                        .collect::<Vec<bool>>()
                })
                .collect();
            nl::and(s, ch, &BShare::from_bits(&xs), &BShare::from_bits(&ys))?.to_bits()
        } else {
            Vec::new()
        };
        let mut nv = Vec::with_capacity(rows * next);
        let mut ni = Vec::with_capacity(rows * next);
        let mut q = 0usize;
        for (row_v, row_i) in vals.chunks_exact(cur).zip(idx.chunks_exact(cur)) {
            for (pv, pi) in row_v.chunks_exact(2).zip(row_i.chunks_exact(2)) {
                let (vl, il) = (
                    pv.first().copied().unwrap_or(0),
                    pi.first().copied().unwrap_or(0),
                );
                let m = moved.as_ref().and_then(|m| m.get(q)).copied().unwrap_or(0);
                nv.push(ring.add(vl, m));
                let s_bits = sel
                    .get(q * t..(q + 1) * t)
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                    .fold(0u64, |a, (j, &b)| a | (u64::from(b) << j));
                let top = u64::from(cb.get(q).copied().unwrap_or(false)) << t;
                ni.push((il ^ s_bits) | top);
                q += 1;
            }
            // an odd last element passes through (index bit t = 0)
            if cur % 2 == 1 {
                nv.extend(row_v.last().copied());
                ni.extend(row_i.last().copied());
            }
        }
        vals = nv;
        idx = ni;
        t += 1;
        cur = next;
    }
    Ok(idx)
}

/// Exact bytes (flights: an upper bound) and COTs of [`argmax`]: per level with `P` pairs over
/// all rows, one comparison of `P` values of `ring`, a mux of `P` values (not at the last level)
/// and `P t` ANDs for the `t` index bits carried so far.
pub(super) fn argmax_cost(rows: usize, vocab: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut c = Cost::default();
    let mut cur = vocab;
    let mut t = 0usize;
    while cur > 1 {
        let np = rows * (cur / 2);
        let next = cur.div_ceil(2);
        c = c + nl::msb_cost(np, ring, cfg);
        if next > 1 {
            c = c + nl::mux_cost(np, ring, cfg);
        }
        if t > 0 {
            c = c + nl::and_cost(np * t, cfg);
        }
        t += 1;
        cur = next;
    }
    c
}
