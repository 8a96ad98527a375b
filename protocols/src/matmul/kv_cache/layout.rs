//! Coefficient layout of the KV-cache products: where the blocks of a step ciphertext sit, which
//! key rows each score accumulator holds and where its outputs land, which heads each context
//! accumulator holds. Deterministic: both parties compute the same layout from public data.
//!
//! # Slots
//! The ring degree `N` is cut into `S = N / w` slots of `w` coefficients, `w` the head width
//! rounded up to a power of two. A block (one head's query, one key/value head's values) fills
//! the first `d` coefficients of a slot.
//!
//! # Scores (Cheetah alignment)
//! The step ciphertext holds query head `h` at slot `qs[h]` (coefficients `qs[h] w + i`) and
//! value head `g` at slot `vs[g]`. A *column* is one key row `t` of key head `g`, placed by the
//! computing party at slot `k` in reversed order (coefficient `k w + w - 1 - i` holds
//! `K[t][g][i]`). The product of block `b` with the column has, at coefficient
//! `(slot(b) + k) w + w - 1`, the inner product of the two (pairs with equal `i`), and elsewhere
//! only pairs with `i != j`, which land at coefficients `!= w - 1 (mod w)` ("non-aligned"). So
//! the product's aligned coefficients are, slot by slot, inner products of one block with one
//! column: **useful** when the block is a query head of the column's group (a score), **garbage**
//! otherwise (another group's query head, or a value block). A score accumulator is a set of
//! columns whose useful slots are distinct, never wrap (`slot + k < S`, so no sign flip) and never
//! coincide with a garbage slot of any column of the accumulator (garbage may wrap and may
//! overlap garbage). Only useful coefficients are ever sent.
//!
//! # Context (row copies)
//! Head `h` of group `g` gets output slot `tau[h]`; the weight polynomial of cached row `t` is
//! `sum_h P[h][t] X^((tau[h] - vs[g]) w)`, which copies every block of row `t`'s ciphertext, so
//! value block `g` lands on slot `tau[h]` (summed over the rows: `sum_t P[h][t] V[t][g]`) and every
//! other block of the row (its query blocks, the other value heads) lands on some other slot.
//! A context accumulator is a set of heads whose output slots are distinct and never hit by a
//! copy of another block; the copies are the same for every row, so the layout does not depend
//! on the context length.

use crate::error::{ProtocolError, Result};

/// Which blocks a step ciphertext holds and where; the context accumulators.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query heads per key/value head.
    pub group: usize,
    /// Head width `d`.
    pub d: usize,
    /// Ring degree `N`.
    pub n: usize,
    /// Slot width `w` (power of two, `>= d`).
    pub w: usize,
    /// Slots `S = N / w`.
    pub slots: usize,
    /// Slot of query head `h`.
    pub q_slot: Vec<usize>,
    /// Slot of value head `g`.
    pub v_slot: Vec<usize>,
    /// Context accumulators: `(head, output slot)` pairs.
    pub context: Vec<Vec<(usize, usize)>>,
}

/// One key row of one key head in a score accumulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Column {
    /// Key head.
    pub g: usize,
    /// Key row (position).
    pub t: usize,
    /// Slot of the reversed row.
    pub k: usize,
}

/// The columns of one score accumulator and its occupied slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScoreAcc {
    /// Columns, in placement order.
    pub cols: Vec<Column>,
    useful: Vec<bool>,
    garbage: Vec<bool>,
}

/// Score accumulators for the first `rows` key rows (columns placed row by row, key head by key
/// head, first fit over accumulators and slots): extending it row by row gives the same plan as
/// building it at once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ScorePlan {
    /// Accumulators.
    pub accs: Vec<ScoreAcc>,
    /// Key rows placed.
    pub rows: usize,
}

/// One output ciphertext of the scores: accumulators `start .. start + len` packed by factor
/// `pack` (`len <= pack`, both powers of two unless `len < pack` pads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Chunk {
    /// First accumulator.
    pub start: usize,
    /// Accumulators in the chunk.
    pub len: usize,
    /// Packing factor (1 = no packing).
    pub pack: usize,
}

fn cfg(msg: String) -> ProtocolError {
    ProtocolError::Config(msg)
}

/// Reference context for choosing the step layout.
const LAYOUT_REF_ROWS: usize = 24;

impl Layout {
    /// The layout for `heads` query heads over `kv_heads` key/value heads of width `d` in a ring
    /// of degree `n`: query blocks at slots `0 .. heads`, value blocks at the start (searched in
    /// a window near the end of the ring) that needs the fewest context accumulators, then the
    /// fewest score accumulators for [`LAYOUT_REF_ROWS`] rows, then the smallest start.
    pub fn new(heads: usize, kv_heads: usize, d: usize, n: usize) -> Result<Self> {
        if heads == 0 || kv_heads == 0 || d == 0 || heads % kv_heads != 0 {
            return Err(cfg(format!(
                "KV cache of {heads} query heads over {kv_heads} key/value heads of width {d}"
            )));
        }
        let w = d.next_power_of_two();
        if w > n || n % w != 0 {
            return Err(cfg(format!(
                "head width {d} does not fit the ring degree {n}"
            )));
        }
        let slots = n / w;
        if heads + kv_heads > slots {
            return Err(cfg(format!(
                "{heads} query and {kv_heads} value blocks of width {w} exceed the {slots} slots of the ring"
            )));
        }
        let lo = heads.max(slots.saturating_sub(2 * heads + 2 * kv_heads));
        let hi = slots - kv_heads;
        let mut best: Option<((usize, usize, usize), Layout)> = None;
        for v0 in lo..=hi {
            let mut l = Layout {
                heads,
                kv_heads,
                group: heads / kv_heads,
                d,
                n,
                w,
                slots,
                q_slot: (0..heads).collect(),
                v_slot: (v0..v0 + kv_heads).collect(),
                context: Vec::new(),
            };
            l.context = l.plan_context();
            let mut plan = ScorePlan::default();
            plan.extend(&l, LAYOUT_REF_ROWS)?;
            let key = (l.context.len(), plan.accs.len(), v0);
            if best.as_ref().is_none_or(|(k, _)| key < *k) {
                best = Some((key, l));
            }
        }
        best.map(|(_, l)| l)
            .ok_or_else(|| cfg("no slot layout for the KV cache".into()))
    }

    /// Blocks of a step ciphertext other than `skip`: `(slot, is query block of group g)`.
    fn blocks(&self) -> impl Iterator<Item = (usize, Option<usize>)> + '_ {
        let q = self
            .q_slot
            .iter()
            .enumerate()
            .map(|(h, &s)| (s, Some(h / self.group)));
        q.chain(self.v_slot.iter().map(|&s| (s, None)))
    }

    /// Greedy context accumulators (see the module documentation).
    fn plan_context(&self) -> Vec<Vec<(usize, usize)>> {
        let s = self.slots;
        // (heads with their output slot, output slots, garbage slots)
        type Acc = (Vec<(usize, usize)>, Vec<bool>, Vec<bool>);
        let mut accs: Vec<Acc> = Vec::new();
        for h in 0..self.heads {
            let g = h / self.group;
            let vg = self.v_slot.get(g).copied().unwrap_or(0);
            let garbage_of = |tau: usize| -> Vec<usize> {
                self.blocks()
                    .map(|(b, _)| b)
                    .filter(|&b| b != vg)
                    .map(|b| (b + s - vg + tau) % s)
                    .collect()
            };
            let fits = |out: &[bool], gar: &[bool], tau: usize| {
                !flag(out, tau) && !flag(gar, tau) && garbage_of(tau).iter().all(|&x| !flag(out, x))
            };
            let mut placed = false;
            for (heads, out, gar) in accs.iter_mut() {
                if let Some(tau) = (0..s).find(|&tau| fits(out, gar, tau)) {
                    set(out, tau);
                    for x in garbage_of(tau) {
                        set(gar, x);
                    }
                    heads.push((h, tau));
                    placed = true;
                    break;
                }
            }
            if !placed {
                let (mut out, mut gar) = (vec![false; s], vec![false; s]);
                // an empty accumulator always fits: no output slot is taken yet
                let tau = (0..s).find(|&tau| fits(&out, &gar, tau)).unwrap_or(0);
                set(&mut out, tau);
                for x in garbage_of(tau) {
                    set(&mut gar, x);
                }
                accs.push((vec![(h, tau)], out, gar));
            }
        }
        accs.into_iter().map(|(h, _, _)| h).collect()
    }

    /// Largest number of heads in one context accumulator.
    pub fn max_context_heads(&self) -> usize {
        self.context.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Coefficients of a step ciphertext's plaintext: query row `q` (`heads x d`) and value row
    /// `v` (`kv_heads x d`), both already checked.
    pub fn step_plain(&self, q: &[u64], v: &[u64]) -> Vec<u64> {
        let top = self
            .q_slot
            .iter()
            .chain(&self.v_slot)
            .max()
            .map_or(0, |&s| s * self.w + self.d);
        let mut out = vec![0u64; top];
        let d = self.d;
        let place = |out: &mut Vec<u64>, slot: usize, vals: &[u64]| {
            if let Some(dst) = out.get_mut(slot * self.w..slot * self.w + vals.len()) {
                dst.copy_from_slice(vals);
            }
        };
        for (&slot, row) in self.q_slot.iter().zip(q.chunks(d)) {
            place(&mut out, slot, row);
        }
        for (&slot, row) in self.v_slot.iter().zip(v.chunks(d)) {
            place(&mut out, slot, row);
        }
        out
    }

    /// Output coefficient of the score of query head `h` in column `c` (before packing).
    pub fn score_position(&self, h: usize, c: &Column) -> usize {
        let qs = self.q_slot.get(h).copied().unwrap_or(0);
        (qs + c.k) * self.w + self.w - 1
    }

    /// Query heads of key head `g`.
    pub fn heads_of(&self, g: usize) -> std::ops::Range<usize> {
        g * self.group..(g + 1) * self.group
    }

    /// The signed shift (in coefficients) that copies value block `g` to slot `tau`.
    pub fn copy_shift(&self, h: usize, tau: usize) -> i64 {
        let g = h / self.group;
        let vg = self.v_slot.get(g).copied().unwrap_or(0);
        (tau as i64 - vg as i64) * self.w as i64
    }
}

fn flag(v: &[bool], i: usize) -> bool {
    v.get(i).copied().unwrap_or(true)
}

fn set(v: &mut [bool], i: usize) {
    if let Some(x) = v.get_mut(i) {
        *x = true;
    }
}

impl ScoreAcc {
    fn new(slots: usize) -> Self {
        Self {
            cols: Vec::new(),
            useful: vec![false; slots],
            garbage: vec![false; slots],
        }
    }

    /// The smallest slot at which a column of key head `g` fits, if any.
    fn fit(&self, l: &Layout, g: usize) -> Option<usize> {
        let s = l.slots;
        'k: for k in 0..s {
            for h in l.heads_of(g) {
                let u = l.q_slot.get(h).copied().unwrap_or(s) + k;
                if u >= s {
                    // useful slots never wrap; larger k wraps too
                    return None;
                }
                if flag(&self.useful, u) || flag(&self.garbage, u) {
                    continue 'k;
                }
            }
            for (b, grp) in l.blocks() {
                if grp != Some(g) && flag(&self.useful, (b + k) % s) {
                    continue 'k;
                }
            }
            return Some(k);
        }
        None
    }

    fn add(&mut self, l: &Layout, c: Column) {
        let s = l.slots;
        for (b, grp) in l.blocks() {
            if grp == Some(c.g) {
                set(&mut self.useful, b + c.k);
            } else {
                set(&mut self.garbage, (b + c.k) % s);
            }
        }
        self.cols.push(c);
    }

    /// Scores this accumulator produces.
    pub fn outputs(&self, l: &Layout) -> usize {
        self.cols.len() * l.group
    }
}

impl ScorePlan {
    /// Place the columns of key rows `self.rows .. rows`.
    pub fn extend(&mut self, l: &Layout, rows: usize) -> Result<()> {
        for t in self.rows..rows {
            for g in 0..l.kv_heads {
                let mut done = false;
                for acc in self.accs.iter_mut() {
                    if let Some(k) = acc.fit(l, g) {
                        acc.add(l, Column { g, t, k });
                        done = true;
                        break;
                    }
                }
                if !done {
                    let mut acc = ScoreAcc::new(l.slots);
                    let k = acc.fit(l, g).ok_or_else(|| {
                        cfg(format!(
                            "a key head of {} query heads fits no slot",
                            l.group
                        ))
                    })?;
                    acc.add(l, Column { g, t, k });
                    self.accs.push(acc);
                }
            }
        }
        self.rows = self.rows.max(rows);
        Ok(())
    }

    /// The output ciphertexts: consecutive accumulators grouped by `max_pack`; the last group
    /// is padded to a power of two (`pad`: fewest ciphertexts) or split into powers of two
    /// (fewest key switches).
    pub fn chunks(&self, max_pack: usize, pad: bool) -> Vec<Chunk> {
        let max_pack = max_pack.max(1);
        let mut out = Vec::new();
        let mut start = 0;
        let total = self.accs.len();
        while start < total {
            let rest = total - start;
            let (len, pack) = if rest >= max_pack {
                (max_pack, max_pack)
            } else if pad {
                (rest, rest.next_power_of_two())
            } else {
                let p = 1usize << (usize::BITS - 1 - rest.leading_zeros());
                (p, p)
            };
            out.push(Chunk { start, len, pack });
            start += len;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;

    /// Brute-force check of a plan: every useful coefficient is hit by exactly its own pairs.
    fn check_scores(l: &Layout, plan: &ScorePlan) {
        for acc in &plan.accs {
            // message-level simulation with symbolic "which (block, column) pair" per slot
            let mut hits: Vec<Vec<(usize, usize)>> = vec![Vec::new(); l.slots];
            let blocks: Vec<(usize, Option<usize>)> = l.blocks().collect();
            for (ci, c) in acc.cols.iter().enumerate() {
                for (bi, (b, _)) in blocks.iter().enumerate() {
                    hits[(b + c.k) % l.slots].push((bi, ci));
                }
            }
            for (ci, c) in acc.cols.iter().enumerate() {
                for h in l.heads_of(c.g) {
                    let u = l.q_slot[h] + c.k;
                    assert!(u < l.slots);
                    assert_eq!(hits[u], vec![(h, ci)], "slot {u}");
                }
            }
        }
    }

    #[test]
    fn smollm2_and_gpt2_layouts_are_exact() {
        for (h, g) in [(9, 3), (12, 12), (8, 1), (4, 2)] {
            let l = Layout::new(h, g, 64, 8192).unwrap();
            let mut plan = ScorePlan::default();
            for rows in [1, 5, 40, 70] {
                plan.extend(&l, rows).unwrap();
                check_scores(&l, &plan);
                let mut fresh = ScorePlan::default();
                fresh.extend(&l, rows).unwrap();
                assert_eq!(fresh, plan, "incremental = at once");
            }
            let total: usize = plan.accs.iter().map(|a| a.outputs(&l)).sum();
            assert_eq!(total, 70 * h);
            // context: each head once, output slots never hit by another block's copy
            let mut seen = vec![false; h];
            for acc in &l.context {
                let mut owner = vec![None; l.slots];
                for &(head, tau) in acc {
                    seen[head] = true;
                    let g0 = head / l.group;
                    for (bi, (b, _)) in l.blocks().enumerate() {
                        let x = (b + l.slots - l.v_slot[g0] + tau) % l.slots;
                        let is_out = b == l.v_slot[g0];
                        if is_out {
                            assert_eq!(x, tau);
                        }
                        owner[x] = match owner[x] {
                            None => Some((head, bi, is_out)),
                            Some(o) => {
                                assert!(!o.2 && !is_out, "output slot {x} overwritten");
                                Some(o)
                            }
                        };
                    }
                }
            }
            assert!(seen.iter().all(|&s| s));
        }
    }

    #[test]
    fn chunks_pad_or_split() {
        let plan = ScorePlan {
            accs: vec![ScoreAcc::new(4); 13],
            rows: 0,
        };
        let pad = plan.chunks(16, true);
        assert_eq!(
            pad,
            vec![Chunk {
                start: 0,
                len: 13,
                pack: 16
            }]
        );
        let split = plan.chunks(16, false);
        assert_eq!(
            split,
            vec![
                Chunk {
                    start: 0,
                    len: 8,
                    pack: 8
                },
                Chunk {
                    start: 8,
                    len: 4,
                    pack: 4
                },
                Chunk {
                    start: 12,
                    len: 1,
                    pack: 1
                }
            ]
        );
        assert_eq!(plan.chunks(4, true).len(), 4);
    }
}
