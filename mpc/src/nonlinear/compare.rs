//! Comparisons of shared values: MSB, DReLU, less-than (exact and bounded), equality.

use super::and::{and_pp, and_round, tape_and_pp, tape_and_round, AndJobs};
use super::batch::{batch_sizes, ranges, slice_a};
use super::cost::Tape;
use super::millionaire::{
    millionaire_groups, millionaire_last, pp_tree, tape_millionaire, CmpMode,
};
use super::otx::Triples;
use super::{BShare, Cost, NlConfig, NlSession};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};

fn same(x: &AShare, y: &AShare) -> Result<()> {
    if x.ring() != y.ring() || x.len() != y.len() {
        return Err(MpcError::ShapeMismatch {
            what: format!(
                "Z_2^{} x {} vs Z_2^{} x {}",
                x.ring().bits(),
                x.len(),
                y.ring().bits(),
                y.len()
            ),
        });
    }
    Ok(())
}

/// Millionaire inputs for the MSB of shared `data`: the carry of the low `l-1` bits is
/// `1{(2^{l-1}-1 - low(x0)) < low(x1)}`.
pub(crate) fn carry_inputs(role: Role, ring: Ring, data: &[u64]) -> Vec<u64> {
    let h = ring.mask() >> 1;
    match role {
        Role::Server => data.iter().map(|&v| h - (v & h)).collect(),
        Role::Client => data.iter().map(|&v| v & h).collect(),
    }
}

/// MSBs of many shared values (one millionaire), with `extra` triple pairs.
pub(crate) fn msb_many<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    ring: Ring,
    data: &[u64],
    extra: usize,
) -> Result<(Vec<bool>, Triples, usize)> {
    let inp = carry_inputs(s.role(), ring, data);
    let (mut out, t, off) =
        millionaire_groups(s, ch, &[(&inp, ring.bits() - 1)], CmpMode::Lt, extra)?;
    let carry = out.pop().unwrap_or_default();
    let msb = carry
        .iter()
        .zip(data)
        .map(|(&c, &v)| c ^ ring.msb(v))
        .collect();
    Ok((msb, t, off))
}

/// Boolean shares of the most significant bit of `x` (its sign under the signed reading),
/// exact for every `x` in `Z_2^l`.
///
/// Protocol (CrypTFlow2 DReLU): `MSB(x) = msb(x0) ⊕ msb(x1) ⊕ carry`, the carry of the low
/// `l-1` bits from one [`super::millionaire`] on `l-1` bits.
/// Security: semi-honest, 128-bit. Cost: [`msb_cost`] (about 585 bytes for `l = 37`).
pub fn msb<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare) -> Result<BShare> {
    if let Some(rs) = ranges(x.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(msb(s, ch, &slice_a(x, &r)?)?.to_bits());
        }
        return Ok(BShare::from_bits(&out));
    }
    s.reserve(ch, msb_cost(x.len(), x.ring(), s.config()).cots)?;
    if x.is_empty() {
        return Ok(BShare::zeros(0));
    }
    let (m, _, _) = msb_many(s, ch, x.ring(), x.data(), 0)?;
    Ok(BShare::from_bits(&m))
}

/// Exact cost of [`msb`] on `n` elements of `ring`.
pub fn msb_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_msb(&mut t, n, ring, cfg);
    t.cost()
}

/// [`msb_cost`] on a tape (also [`drelu`]'s and [`lt_bounded`]'s).
pub fn tape_msb(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    if n == 0 {
        return;
    }
    for m in batch_sizes(n) {
        tape_millionaire(t, cfg, &[(m, ring.bits() - 1)], CmpMode::Lt, 0);
    }
}

/// DReLU: boolean shares of `1{x >= 0}` (signed), i.e. `¬MSB(x)`. Protocol, security and cost
/// as [`msb`] ([`drelu_cost`]).
pub fn drelu<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare) -> Result<BShare> {
    Ok(msb(s, ch, x)?.not(s.role()))
}

/// Exact cost of [`drelu`].
pub fn drelu_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    msb_cost(n, ring, cfg)
}

/// `1{x < y}` (signed) as `MSB(x - y)`: exact whenever `x - y` does not overflow the signed
/// range (e.g. both in `[-2^{l-2}, 2^{l-2})`); the usual "comparison" of CrypTFlow2/Cheetah.
/// Security: semi-honest. Cost: [`lt_bounded_cost`] = [`msb_cost`].
pub fn lt_bounded<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    y: &AShare,
) -> Result<BShare> {
    same(x, y)?;
    msb(s, ch, &x.sub(y)?)
}

/// Exact cost of [`lt_bounded`].
pub fn lt_bounded_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    msb_cost(n, ring, cfg)
}

/// `1{x < y}` for signed `x, y`, exact over the whole range `[-2^{l-1}, 2^{l-1})`.
///
/// Protocol: with `s_x, s_y, s_d` the MSBs of `x`, `y`, `d = x - y` (one millionaire batch of
/// `3n`), `x < y  ⟺  s_d ⊕ (s_x ⊕ s_y) ∧ (s_x ⊕ s_d)` (if the signs differ the negative one is
/// smaller, otherwise `d` does not overflow); one more AND round, its triples made with the
/// millionaire's. Security: semi-honest. Cost: [`lt_cost`] (about 3 x [`msb_cost`]).
pub fn lt<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, y: &AShare) -> Result<BShare> {
    if let (Some(rs), true) = (ranges(x.len()), x.ring() == y.ring() && x.len() == y.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(lt(s, ch, &slice_a(x, &r)?, &slice_a(y, &r)?)?.to_bits());
        }
        return Ok(BShare::from_bits(&out));
    }
    s.reserve(ch, lt_cost(x.len(), x.ring(), s.config()).cots)?;
    same(x, y)?;
    let n = x.len();
    if n == 0 {
        return Ok(BShare::zeros(0));
    }
    let d = x.sub(y)?;
    let mut all = Vec::with_capacity(3 * n);
    all.extend_from_slice(x.data());
    all.extend_from_slice(y.data());
    all.extend_from_slice(d.data());
    let pp = pp_tree(3 * n);
    let (m, t, off) = msb_many(s, ch, x.ring(), &all, if pp { 0 } else { n })?;
    let (sx, rest) = m.split_at(n);
    let (sy, sd) = rest.split_at(n);
    let jobs = AndJobs {
        sx: sx.iter().zip(sy).map(|(a, b)| a ^ b).collect(),
        sy: sx.iter().zip(sd).map(|(a, b)| a ^ b).collect(),
        ..Default::default()
    };
    let (p, _, _) = final_and(s, ch, &jobs, &t, off, &[(3 * n, x.ring().bits() - 1)])?;
    Ok(BShare::from_bits(
        &sd.iter().zip(&p).map(|(a, b)| a ^ b).collect::<Vec<_>>(),
    ))
}

/// Exact cost of [`lt`].
pub fn lt_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_lt(&mut t, n, ring, cfg);
    t.cost()
}

/// [`lt_cost`] on a tape.
pub fn tape_lt(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    for m in batch_sizes(n).into_iter().filter(|&m| m > 0) {
        tape_final_and(t, cfg, &[(3 * m, ring.bits() - 1)], m);
    }
}

/// The AND after a millionaire batch `groups` (one AND per element of `jobs`): a ping-pong
/// level chosen by the party that sent last, or a Beaver round on the `extra` triples the
/// batch made (`t[off..]`).
fn final_and<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    jobs: &AndJobs,
    t: &Triples,
    off: usize,
    groups: &[(usize, u32)],
) -> Result<(Vec<bool>, Vec<bool>, Vec<bool>)> {
    let n: usize = groups.iter().map(|g| g.0).sum();
    if pp_tree(n) {
        let cfg = s.config();
        let chooser = millionaire_last(cfg, groups, CmpMode::Lt).unwrap_or(cfg.ot_sender);
        and_pp(s, ch, chooser, jobs)
    } else {
        and_round(s.role(), ch, jobs, t, off)
    }
}

/// Tape of a millionaire batch `groups` followed by `ands` ANDs ([`final_and`]).
fn tape_final_and(t: &mut Tape, cfg: NlConfig, groups: &[(usize, u32)], ands: usize) {
    let n: usize = groups.iter().map(|g| g.0).sum();
    if pp_tree(n) {
        tape_millionaire(t, cfg, groups, CmpMode::Lt, 0);
        let chooser = t.last_sender().unwrap_or(cfg.ot_sender);
        tape_and_pp(t, chooser, ands, 0);
    } else {
        tape_millionaire(t, cfg, groups, CmpMode::Lt, ands);
        tape_and_round(t, 2 * ands);
    }
}

/// `1{x < c}` for shared signed `x` and public `c` (ring elements, signed reading), exact
/// over the whole range: as [`lt`] with `s_y = msb(c)` public, so two MSBs per element.
/// Security: semi-honest. Cost: [`lt_public_cost`].
pub fn lt_public<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    c: &[u64],
) -> Result<BShare> {
    if let (Some(rs), true) = (ranges(x.len()), c.len() == x.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            let cs = c.get(r.clone()).unwrap_or_default();
            out.extend(lt_public(s, ch, &slice_a(x, &r)?, cs)?.to_bits());
        }
        return Ok(BShare::from_bits(&out));
    }
    s.reserve(ch, lt_public_cost(x.len(), x.ring(), s.config()).cots)?;
    let n = x.len();
    if c.len() != n {
        return Err(MpcError::ShapeMismatch {
            what: format!("{} public values for {n} shared ones", c.len()),
        });
    }
    if n == 0 {
        return Ok(BShare::zeros(0));
    }
    let ring = x.ring();
    let neg: Vec<u64> = c.iter().map(|&v| ring.neg(ring.reduce(v))).collect();
    let d = x.add_public(s.role(), &neg)?;
    let mut all = Vec::with_capacity(2 * n);
    all.extend_from_slice(x.data());
    all.extend_from_slice(d.data());
    let pp = pp_tree(2 * n);
    let (m, t, off) = msb_many(s, ch, ring, &all, if pp { 0 } else { n })?;
    let (sx, sd) = m.split_at(n);
    let server = s.role() == Role::Server;
    let jobs = AndJobs {
        sx: sx
            .iter()
            .zip(c)
            .map(|(&a, &cv)| a ^ (server && ring.msb(ring.reduce(cv))))
            .collect(),
        sy: sx.iter().zip(sd).map(|(a, b)| a ^ b).collect(),
        ..Default::default()
    };
    let (p, _, _) = final_and(s, ch, &jobs, &t, off, &[(2 * n, ring.bits() - 1)])?;
    Ok(BShare::from_bits(
        &sd.iter().zip(&p).map(|(a, b)| a ^ b).collect::<Vec<_>>(),
    ))
}

/// Exact cost of [`lt_public`].
pub fn lt_public_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_lt_public(&mut t, n, ring, cfg);
    t.cost()
}

/// [`lt_public_cost`] on a tape.
pub fn tape_lt_public(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    for m in batch_sizes(n).into_iter().filter(|&m| m > 0) {
        tape_final_and(t, cfg, &[(2 * m, ring.bits() - 1)], m);
    }
}

/// `1{x = y}`: the millionaires' protocol in equality mode on `x0 - y0` against
/// `y1 - x1` (`l` bits; leaves 1-bit, tree of single ANDs).
/// Security: semi-honest. Cost: [`eq_cost`].
pub fn eq<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, y: &AShare) -> Result<BShare> {
    if let (Some(rs), true) = (ranges(x.len()), x.ring() == y.ring() && x.len() == y.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(eq(s, ch, &slice_a(x, &r)?, &slice_a(y, &r)?)?.to_bits());
        }
        return Ok(BShare::from_bits(&out));
    }
    s.reserve(ch, eq_cost(x.len(), x.ring(), s.config()).cots)?;
    same(x, y)?;
    if x.is_empty() {
        return Ok(BShare::zeros(0));
    }
    let ring = x.ring();
    let d = x.sub(y)?;
    let inp: Vec<u64> = match s.role() {
        Role::Server => d.data().to_vec(),
        Role::Client => d.data().iter().map(|&v| ring.neg(v)).collect(),
    };
    let (mut out, _, _) = millionaire_groups(s, ch, &[(&inp, ring.bits())], CmpMode::Eq, 0)?;
    Ok(BShare::from_bits(&out.pop().unwrap_or_default()))
}

/// Exact cost of [`eq`].
pub fn eq_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_eq(&mut t, n, ring, cfg);
    t.cost()
}

/// [`eq_cost`] on a tape.
pub fn tape_eq(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    if n == 0 {
        return;
    }
    for m in batch_sizes(n) {
        tape_millionaire(t, cfg, &[(m, ring.bits())], CmpMode::Eq, 0);
    }
}
