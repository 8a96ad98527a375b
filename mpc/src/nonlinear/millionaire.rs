//! The millionaires' protocol of CrypTFlow2 (Rathee et al., CCS 2020), batched.

use super::and::{and_pp, and_round, tape_and_pp, tape_and_round, AndJobs};
use super::batch::{batch_sizes, ranges};
use super::cost::{kk_answer, kk_msg, Tape};
use super::otx::Triples;
use super::{BShare, Cost, LeafOt, NlConfig, NlSession};
use crate::{MpcError, Result};
use duet_transport::{Channel, Role};
use rand::RngCore;

/// What the millionaires' protocol computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpMode {
    /// `1{x_server < x_client}`.
    Lt,
    /// `1{x_server = x_client}`.
    Eq,
}

#[derive(Clone, Debug, Default)]
struct Node {
    lt: Vec<bool>,
    eq: Vec<bool>,
}

/// Per level of the combining tree of `q` digits: (single ANDs, double ANDs) per element.
fn plan(q: usize, mode: CmpMode) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut k = q;
    while k > 1 {
        let kn = k.div_ceil(2);
        let pairs = k / 2;
        match mode {
            CmpMode::Eq => out.push((pairs, 0)),
            CmpMode::Lt => {
                let doubles = (0..pairs).filter(|&i| i > 0 && kn > 1).count();
                out.push((pairs - doubles, doubles));
            }
        }
        k = kn;
    }
    out
}

fn digits(bits: u32, m: u32) -> usize {
    bits.div_ceil(m) as usize
}

/// Calls of at most this many elements (all groups together) combine their digits by
/// ping-pong AND levels ([`super::and::and_pp`]: one flight per level, 7 bits per double
/// AND); larger ones by Beaver triples made in the leaf flight ([`super::and::and_round`]:
/// two flights per level, 6 bits per double), where bandwidth, not latency, dominates.
pub const PP_MAX_ELEMS: usize = 1 << 15;

/// Whether a call on `n` elements (all groups) uses the ping-pong tree.
pub(crate) fn pp_tree(n: usize) -> bool {
    n <= PP_MAX_ELEMS
}

/// The chooser of ping-pong level `lv` (0-based): the leaf OT sender first (its leaf shares are
/// its own pads), then alternating.
fn pp_chooser(cfg: NlConfig, lv: usize) -> Role {
    if lv % 2 == 0 {
        cfg.ot_sender
    } else {
        cfg.ot_sender.peer()
    }
}

fn check_groups(groups: &[(&[u64], u32)]) -> Result<()> {
    for (g, &(vals, bits)) in groups.iter().enumerate() {
        if !(1..=64).contains(&bits) {
            return Err(MpcError::InvalidArgument {
                what: format!("millionaire group {g}: {bits} bits, supported 1..=64"),
            });
        }
        if bits < 64 && vals.iter().any(|&v| v >> bits != 0) {
            return Err(MpcError::InvalidArgument {
                what: format!("millionaire group {g}: an input exceeds {bits} bits"),
            });
        }
    }
    Ok(())
}

/// The core of [`millionaire`] over several groups at once (each group its own bit width,
/// all leaves in one OT call, the trees combined level by level in the same AND rounds),
/// plus `extra` triple pairs made in the same exchange and returned with their offset.
pub(crate) fn millionaire_groups<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    groups: &[(&[u64], u32)],
    mode: CmpMode,
    extra: usize,
) -> Result<(Vec<Vec<bool>>, Triples, usize)> {
    check_groups(groups)?;
    let m = s.config().radix;
    let big_n = 1usize << m;
    let dmask = (big_n - 1) as u64;
    let w = match mode {
        CmpMode::Lt => 2,
        CmpMode::Eq => 1,
    };
    let qs: Vec<usize> = groups.iter().map(|&(_, b)| digits(b, m)).collect();
    let nl: usize = groups.iter().zip(&qs).map(|(g, q)| g.0.len() * q).sum();
    let pp = pp_tree(groups.iter().map(|g| g.0.len()).sum());
    if pp && extra > 0 {
        return Err(MpcError::InvalidArgument {
            what: "millionaire: extra triples with the ping-pong tree".into(),
        });
    }
    let tree_triples: usize = if pp {
        0
    } else {
        groups
            .iter()
            .zip(&qs)
            .map(|(g, &q)| g.0.len() * plan(q, mode).iter().map(|(a, b)| a + b).sum::<usize>())
            .sum()
    };
    let nt = tree_triples + extra;
    // Leaf digits, instance (group, digit j, element e) at offset_g + j n_g + e.
    let mut my_digits = Vec::with_capacity(nl);
    for (&(vals, _), &q) in groups.iter().zip(&qs) {
        for j in 0..q {
            let sh = (j as u32) * m;
            my_digits.extend(vals.iter().map(|&v| ((v >> sh) & dmask) as u8));
        }
    }
    let sender = s.is_ot_sender();
    let server_is_sender = s.config().ot_sender == Role::Server;
    let leaf_ot = s.config().leaf_ot;
    let (leaf, t) = if sender {
        let mut r = vec![0u8; nl];
        s.rng().fill_bytes(&mut r);
        let mask_w = (1u8 << w) - 1;
        r.iter_mut().for_each(|x| *x &= mask_w);
        let (dg, rr) = (&my_digits, &r);
        let msg = move |i: usize, v: usize| {
            let a = dg.get(i).copied().unwrap_or(0);
            let rb = rr.get(i).copied().unwrap_or(0);
            let v = v as u8;
            let lt = if server_is_sender { a < v } else { v < a };
            let bits = match mode {
                CmpMode::Lt => u8::from(lt) | (u8::from(a == v) << 1),
                CmpMode::Eq => u8::from(a == v),
            };
            u64::from(bits ^ rb)
        };
        let t = match leaf_ot {
            LeafOt::Kk13 => {
                let recv = s.triples_begin(ch, nt)?;
                let t = s.triples_end(ch, nt, recv)?;
                s.kk_send(ch, nl, m, w, msg)?;
                t
            }
            LeafOt::Rot => s.rot_leaf_send(ch, nt, nl, m, w, msg)?,
        };
        (r, t)
    } else {
        match leaf_ot {
            LeafOt::Kk13 => {
                let recv = s.triples_begin(ch, nt)?;
                let rows = s.kk_recv_begin(ch, &my_digits)?;
                ch.flush()?;
                let t = s.triples_end(ch, nt, recv)?;
                let out = s.kk_recv_end(ch, &rows, &my_digits, m, w)?;
                (out.into_iter().map(|x| x as u8).collect(), t)
            }
            LeafOt::Rot => {
                let (out, t) = s.rot_leaf_recv(ch, nt, &my_digits, m, w)?;
                (out.into_iter().map(|x| x as u8).collect(), t)
            }
        }
    };
    let tree = if pp { Tree::PingPong } else { Tree::Beaver(t) };
    finish(s, ch, groups, &qs, mode, leaf, tree)
}

/// How the digit results are combined.
enum Tree {
    /// Beaver ANDs on triples made in the leaf flight (two flights per level).
    Beaver(Triples),
    /// Ping-pong AND levels (one flight per level).
    PingPong,
}

#[allow(clippy::too_many_arguments)]
fn finish<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    groups: &[(&[u64], u32)],
    qs: &[usize],
    mode: CmpMode,
    leaf: Vec<u8>,
    tree: Tree,
) -> Result<(Vec<Vec<bool>>, Triples, usize)> {
    let cfg = s.config();
    // Build the leaf nodes of each group.
    let mut trees: Vec<Vec<Node>> = Vec::with_capacity(groups.len());
    let mut it = leaf.into_iter();
    for (&(vals, _), &q) in groups.iter().zip(qs) {
        let n = vals.len();
        let mut nodes = Vec::with_capacity(q);
        for _ in 0..q {
            let bits: Vec<u8> = it.by_ref().take(n).collect();
            let node = match mode {
                CmpMode::Lt => Node {
                    lt: bits.iter().map(|b| b & 1 == 1).collect(),
                    eq: bits.iter().map(|b| b & 2 == 2).collect(),
                },
                CmpMode::Eq => Node {
                    lt: Vec::new(),
                    eq: bits.iter().map(|b| b & 1 == 1).collect(),
                },
            };
            nodes.push(node);
        }
        trees.push(nodes);
    }
    let mut off = 0usize;
    let mut lv = 0usize;
    while trees.iter().any(|t| t.len() > 1) {
        let mut jobs = AndJobs::default();
        for nodes in &trees {
            let k = nodes.len();
            let kn = k.div_ceil(2);
            for (i, pair) in nodes.chunks_exact(2).enumerate() {
                let (lo, hi) = match pair {
                    [lo, hi] => (lo, hi),
                    _ => continue,
                };
                match mode {
                    CmpMode::Eq => {
                        jobs.sx.extend(&hi.eq);
                        jobs.sy.extend(&lo.eq);
                    }
                    CmpMode::Lt if i > 0 && kn > 1 => {
                        jobs.dc.extend(&hi.eq);
                        jobs.da.extend(&lo.lt);
                        jobs.db.extend(&lo.eq);
                    }
                    CmpMode::Lt => {
                        jobs.sx.extend(&hi.eq);
                        jobs.sy.extend(&lo.lt);
                    }
                }
            }
        }
        let (zs, za, zb) = match &tree {
            Tree::Beaver(t) => and_round(s.role(), ch, &jobs, t, off)?,
            Tree::PingPong => and_pp(s, ch, pp_chooser(cfg, lv), &jobs)?,
        };
        off += jobs.triples();
        lv += 1;
        let (mut is, mut id) = (zs.into_iter(), za.into_iter().zip(zb));
        for nodes in trees.iter_mut() {
            let k = nodes.len();
            if k <= 1 {
                continue;
            }
            let kn = k.div_ceil(2);
            let old = std::mem::take(nodes);
            let mut old_it = old.into_iter();
            let mut i = 0usize;
            while let Some(lo) = old_it.next() {
                let Some(hi) = old_it.next() else {
                    nodes.push(lo);
                    break;
                };
                let n = lo.eq.len().max(lo.lt.len());
                let node = match mode {
                    CmpMode::Eq => Node {
                        lt: Vec::new(),
                        eq: is.by_ref().take(n).collect(),
                    },
                    CmpMode::Lt if i > 0 && kn > 1 => {
                        let (p, e): (Vec<bool>, Vec<bool>) = id.by_ref().take(n).unzip();
                        Node {
                            lt: hi.lt.iter().zip(&p).map(|(a, b)| a ^ b).collect(),
                            eq: e,
                        }
                    }
                    CmpMode::Lt => {
                        let p: Vec<bool> = is.by_ref().take(n).collect();
                        Node {
                            lt: hi.lt.iter().zip(&p).map(|(a, b)| a ^ b).collect(),
                            eq: Vec::new(),
                        }
                    }
                };
                nodes.push(node);
                i += 1;
            }
        }
    }
    let out = trees
        .into_iter()
        .map(|mut nodes| {
            let root = nodes.pop().unwrap_or_default();
            match mode {
                CmpMode::Lt => root.lt,
                CmpMode::Eq => root.eq,
            }
        })
        .collect();
    let t = match tree {
        Tree::Beaver(t) => t,
        Tree::PingPong => Triples::default(),
    };
    Ok((out, t, off))
}

/// The tape of [`millionaire_groups`] for groups of (count, bits).
pub(crate) fn tape_millionaire(
    tape: &mut Tape,
    cfg: NlConfig,
    groups: &[(usize, u32)],
    mode: CmpMode,
    extra: usize,
) {
    let m = cfg.radix;
    let w = match mode {
        CmpMode::Lt => 2,
        CmpMode::Eq => 1,
    };
    let plans: Vec<(usize, Vec<(usize, usize)>)> = groups
        .iter()
        .map(|&(n, b)| (n, plan(digits(b, m), mode)))
        .collect();
    let nl: usize = groups.iter().map(|&(n, b)| n * digits(b, m)).sum();
    let pp = pp_tree(groups.iter().map(|g| g.0).sum());
    let nt: usize = if pp {
        0
    } else {
        plans
            .iter()
            .map(|(n, p)| n * p.iter().map(|(a, b)| a + b).sum::<usize>())
            .sum::<usize>()
    } + extra;
    let sender = cfg.ot_sender;
    // the leaf sender receives `nt` COTs for the triples
    let (tb, tm) = tape.cots(sender.peer(), nt);
    // the sender's and the receiver's part of the first flight, then the sender's answer
    let (s_part, r_part, answer) = match cfg.leaf_ot {
        LeafOt::Kk13 => {
            let (kb, km) = if nl > 0 { kk_msg(nl) } else { (0, 0) };
            let (rb, rm) = tape.cots(sender, nt);
            ((tb, tm), (rb + kb, rm + km), kk_answer(nl, m, w))
        }
        LeafOt::Rot => {
            let rots = nt + nl * m as usize;
            let (rb, rm) = tape.cots(sender, rots);
            let e = if nl > 0 {
                ((nl * m as usize).div_ceil(8) as u64, 1)
            } else {
                (0, 0)
            };
            let ans = if nl > 0 {
                (((nl << m) * w as usize).div_ceil(8) as u64, 1)
            } else {
                (0, 0)
            };
            ((tb, tm), (rb + e.0, rm + e.1), ans)
        }
    };
    let (sb, sm, cb, cm) = match sender {
        Role::Server => (s_part.0, s_part.1, r_part.0, r_part.1),
        Role::Client => (r_part.0, r_part.1, s_part.0, s_part.1),
    };
    tape.exchange(sb, sm, cb, cm);
    tape.send(sender, answer.0, answer.1);
    let levels = plans.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    for lv in 0..levels {
        if pp {
            let (n1, n2) = plans.iter().fold((0, 0), |(x, y), (n, p)| {
                let (a, b) = p.get(lv).copied().unwrap_or((0, 0));
                (x + n * a, y + n * b)
            });
            tape_and_pp(tape, pp_chooser(cfg, lv), n1, n2);
        } else {
            let bits: usize = plans
                .iter()
                .map(|(n, p)| p.get(lv).map_or(0, |&(a, b)| n * (2 * a + 3 * b)))
                .sum();
            tape_and_round(tape, bits);
        }
    }
}

/// The millionaires' protocol: boolean shares of `1{x_S < x_C}` ([`CmpMode::Lt`]) or
/// `1{x_S = x_C}` ([`CmpMode::Eq`]) for the server's private `b`-bit inputs `x_S` and the
/// client's `x_C` (each party passes its own `inputs`, all below `2^bits`).
///
/// Protocol (CrypTFlow2): split both inputs into `q = ceil(b/m)` digits of `m =`
/// [`NlConfig::radix`] bits; for each digit the OT sender offers, for every possible digit `v`
/// of the receiver, its random shares masked onto `(1{digit < v}, 1{digit = v})` in a KK13
/// 1-out-of-`2^m` OT of 2-bit messages (32 + `2^m`/4 bytes); the digit results are combined up a
/// binary tree with `lt = lt_hi ⊕ eq_hi ∧ lt_lo`, `eq = eq_hi ∧ eq_lo` (AND with bit triples
/// from random OT, the two ANDs sharing `eq_hi` use one triple pair). The triples are made in
/// the same flight as the leaf OTs.
/// Security: semi-honest, 128-bit (KK13, IKNP).
/// Cost: [`millionaire_cost`]; for `b = 36`, `m = 4`: 9 leaves (324 bytes) + 8 triple pairs
/// (256 bytes) + openings, about 585 bytes, `2 + 2 ceil(log2 q)` flights.
pub fn millionaire<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    inputs: &[u64],
    bits: u32,
    mode: CmpMode,
) -> Result<BShare> {
    if let Some(rs) = ranges(inputs.len()) {
        let mut out = Vec::with_capacity(inputs.len());
        for r in rs {
            let part = inputs.get(r).unwrap_or_default();
            out.extend(millionaire(s, ch, part, bits, mode)?.to_bits());
        }
        return Ok(BShare::from_bits(&out));
    }
    s.reserve(
        ch,
        millionaire_cost(inputs.len(), bits, mode, s.config()).cots,
    )?;
    if inputs.is_empty() {
        return Ok(BShare::zeros(0));
    }
    let (mut out, _, _) = millionaire_groups(s, ch, &[(inputs, bits)], mode, 0)?;
    Ok(BShare::from_bits(&out.pop().unwrap_or_default()))
}

/// Exact cost of [`millionaire`] on `n` inputs of `bits` bits.
pub fn millionaire_cost(n: usize, bits: u32, mode: CmpMode, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_millionaire_cmp(&mut t, n, bits, mode, cfg);
    t.cost()
}

/// [`millionaire_cost`] on a tape.
pub fn tape_millionaire_cmp(t: &mut Tape, n: usize, bits: u32, mode: CmpMode, cfg: NlConfig) {
    if n == 0 {
        return;
    }
    for m in batch_sizes(n) {
        tape_millionaire(t, cfg, &[(m, bits)], mode, 0);
    }
}

/// [`millionaire_last`] in [`CmpMode::Lt`].
pub(crate) fn millionaire_last_of(cfg: NlConfig, groups: &[(usize, u32)]) -> Option<Role> {
    millionaire_last(cfg, groups, CmpMode::Lt)
}

/// The tape of a [`millionaire`] batch of several groups of (count, bits) in one call (one
/// leaf flight, the trees combined level by level).
pub fn tape_millionaire_groups(
    t: &mut Tape,
    cfg: NlConfig,
    groups: &[(usize, u32)],
    mode: CmpMode,
) {
    tape_millionaire(t, cfg, groups, mode, 0);
}

/// The party that sent last in [`millionaire_groups`] on groups of (count, bits) (see
/// [`Tape::last_sender`]), from a replay of its tape.
pub(crate) fn millionaire_last(
    cfg: NlConfig,
    groups: &[(usize, u32)],
    mode: CmpMode,
) -> Option<Role> {
    let mut t = Tape::with_config(cfg);
    tape_millionaire(&mut t, cfg, groups, mode, 0);
    t.last_sender()
}
