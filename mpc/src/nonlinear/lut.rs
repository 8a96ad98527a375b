//! Table lookup on a shared small index: arithmetic shares of `T_i[(j_0 + j_1) mod 2^m]` for
//! an index `j` shared additively mod `2^m` and a table `T_i` (one per element) known to the
//! OT sender, e.g. a public table or one that depends on the sender's private data.
//!
//! Protocol (the OT-based lookup of CrypTFlow2/SIRNN, "one-time truth tables"): the configured
//! OT sender [`NlConfig::ot_sender`] draws a fresh uniform `ρ_i` in `Z_2^w` and offers, for
//! every value `v` of the receiver's share, the message `T_i[(j_S + v) mod 2^m] - ρ_i` in a
//! 1-out-of-`2^m` OT ([`NlConfig::leaf_ot`]: `m` random OTs from the session's COT source, or
//! KK13); the receiver chooses with its share `j_R` and keeps the message, the sender keeps
//! `ρ_i`.
//! Security: semi-honest, 128-bit (the OT's): the receiver sees one message masked by a
//! uniform `ρ_i`, the sender learns nothing about `j_R` (OT receiver privacy); the index
//! itself is never opened (each party holds a uniform share of it).
//! Cost ([`lut_cost`]): per element `m` random OTs (with Ferret pooled ahead, so online only
//! `m/8` bytes of derandomisation bits) plus `2^m w / 8` bytes of masked table, 2 flights;
//! calls larger than [`super::MAX_BATCH`] run in batches.

use super::batch::{batch_sizes, ranges};
use super::cost::Tape;
use super::{Cost, LeafOt, NlConfig, NlSession};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::Channel;
use rand::RngCore;

/// The sender's table: `table(i, v)` is entry `v` (`0 <= v < 2^m`) of element `i`'s table.
pub type LutTable<'a> = &'a (dyn Fn(usize, u64) -> u64 + Sync);

fn check(m: u32) -> Result<()> {
    if !(1..=8).contains(&m) {
        return Err(MpcError::InvalidArgument {
            what: format!("table lookup with {m} index bits (supported 1..=8)"),
        });
    }
    Ok(())
}

/// Shares in `out` of `T_i[(j_0 + j_1) mod 2^m]` for every element `i`, where each party passes
/// its share `idx[i]` of the index (only its low `m` bits are used) and the configured OT
/// sender passes `Some(table)` ([`LutTable`]; the receiver passes `None`). Entries are
/// reduced mod `2^{out.bits()}`. See the module documentation for protocol, security and cost.
pub fn lut<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    idx: &[u64],
    m: u32,
    out: Ring,
    table: Option<LutTable<'_>>,
) -> Result<AShare> {
    check(m)?;
    if s.is_ot_sender() && table.is_none() {
        return Err(MpcError::InvalidArgument {
            what: "table lookup: the OT sender must provide the table".into(),
        });
    }
    let mut res = Vec::with_capacity(idx.len());
    match ranges(idx.len()) {
        Some(rs) => {
            for r in rs {
                let start = r.start;
                let part = idx.get(r).unwrap_or_default();
                let shifted = table.map(|t| move |i: usize, v: u64| t(start + i, v));
                let tb = shifted.as_ref().map(|f| f as LutTable<'_>);
                res.extend(lut_batch(s, ch, part, m, out, tb)?);
            }
        }
        None => res = lut_batch(s, ch, idx, m, out, table)?,
    }
    AShare::new(out, vec![idx.len()], res)
}

fn lut_batch<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    idx: &[u64],
    m: u32,
    out: Ring,
    table: Option<LutTable<'_>>,
) -> Result<Vec<u64>> {
    s.reserve(ch, lut_cost(idx.len(), m, out, s.config()).cots)?;
    if idx.is_empty() {
        return Ok(Vec::new());
    }
    let w = out.bits();
    let mm = (1u64 << m) - 1;
    let mine: Vec<u8> = idx.iter().map(|&v| (v & mm) as u8).collect();
    if let (true, Some(t)) = (s.is_ot_sender(), table) {
        let rho: Vec<u64> = (0..idx.len())
            .map(|_| out.reduce(s.rng().next_u64()))
            .collect();
        let (js, rr) = (&mine, &rho);
        let msg = move |i: usize, v: usize| {
            let j = u64::from(js.get(i).copied().unwrap_or(0));
            let e = t(i, (j + v as u64) & mm);
            out.sub(out.reduce(e), rr.get(i).copied().unwrap_or(0))
        };
        match s.config().leaf_ot {
            LeafOt::Kk13 => s.kk_send(ch, mine.len(), m, w, msg)?,
            LeafOt::Rot => {
                s.rot_leaf_send(ch, 0, mine.len(), m, w, msg)?;
            }
        }
        Ok(rho)
    } else {
        match s.config().leaf_ot {
            LeafOt::Kk13 => {
                let rows = s.kk_recv_begin(ch, &mine)?;
                ch.flush()?;
                s.kk_recv_end(ch, &rows, &mine, m, w)
            }
            LeafOt::Rot => Ok(s.rot_leaf_recv(ch, 0, &mine, m, w)?.0),
        }
    }
}

/// Exact cost of [`lut`] on `n` elements (bytes exact, flights summed over the batches).
pub fn lut_cost(n: usize, m: u32, out: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_lut(&mut t, n, m, out, cfg);
    t.cost()
}

/// [`lut_cost`] on a tape.
pub fn tape_lut(t: &mut Tape, n: usize, m: u32, out: Ring, cfg: NlConfig) {
    if n == 0 || check(m).is_err() {
        return;
    }
    for b in batch_sizes(n) {
        NlSession::tape_table(t, cfg, b, m, out.bits());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nonlinear::CotCount;
    use crate::Prg;
    use duet_transport::{MemoryChannel, Role};

    /// The one traffic-measuring helper of this file: runs `f` for both parties after setup
    /// and the COT reservation.
    fn run2<T: Send>(
        cfg: NlConfig,
        need: CotCount,
        f: impl Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        crate::nonlinear::run_measured(21, cfg, need, f)
    }

    fn configs() -> Vec<NlConfig> {
        vec![
            NlConfig::default(),
            NlConfig {
                ot_sender: Role::Client,
                ..NlConfig::default()
            },
            NlConfig::iknp(),
        ]
    }

    /// Every index value (each one many times) and the edge shares (0, 2^m - 1, values with
    /// high bits set that must be ignored), uniformly random shares, against plaintext:
    /// a public table (m = 1, 4, 8) and a per-element table that depends on the sender's
    /// private data (m = 3); measured bytes equal [`lut_cost`].
    #[test]
    fn lut_matches_plaintext_on_every_index() {
        let mut prg = Prg::from_seed([9; 32]);
        let cases: [(u32, u32); 4] = [(1, 16), (4, 20), (8, 64), (3, 37)];
        // (index values, server shares, client shares, per-element secret, public table)
        type Case = (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>);
        let inputs: Vec<Case> = cases
            .iter()
            .map(|&(m, w)| {
                let ring = Ring::new(w).unwrap();
                let big = 1u64 << m;
                let mut j: Vec<u64> = (0..big).flat_map(|v| [v, v, v]).collect();
                j.extend((0..50).map(|_| prg.ring_element(Ring::z64()) % big));
                let mut s0: Vec<u64> = j.iter().map(|_| prg.ring_element(Ring::z64())).collect();
                let edge = [0, big - 1, u64::MAX, 1 << 63, big];
                s0.iter_mut()
                    .zip(edge.iter().cycle())
                    .take(2 * edge.len())
                    .for_each(|(s, &e)| *s = e);
                // client share: j - s0 mod 2^m plus garbage high bits
                let s1: Vec<u64> = j
                    .iter()
                    .zip(&s0)
                    .map(|(&v, &a)| {
                        (v.wrapping_sub(a) & (big - 1)) | (prg.ring_element(Ring::z64()) << m)
                    })
                    .collect();
                let secret = prg.ring_elements(ring, j.len());
                let table = prg.ring_elements(Ring::z64(), big as usize);
                (j, s0, s1, secret, table)
            })
            .collect();
        for cfg in configs() {
            let mut want = Cost::default();
            for (&(m, w), inp) in cases.iter().zip(&inputs) {
                want = want + lut_cost(inp.0.len(), m, Ring::new(w).unwrap(), cfg);
            }
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                cases
                    .iter()
                    .zip(&inputs)
                    .map(|(&(m, w), (_, s0, s1, secret, table))| {
                        let mine = if role == Role::Server { s0 } else { s1 };
                        let per = |i: usize, v: u64| secret[i].wrapping_mul(v + 1);
                        let public = |_: usize, v: u64| table[v as usize];
                        let t: LutTable<'_> = if m == 3 { &per } else { &public };
                        let sender = s.config().ot_sender == role;
                        lut(s, ch, mine, m, Ring::new(w).unwrap(), sender.then_some(t)).unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            for (c, (&(m, w), (j, _, _, secret, table))) in cases.iter().zip(&inputs).enumerate() {
                let ring = Ring::new(w).unwrap();
                let got = a[c].reconstruct(&b[c]).unwrap();
                for (i, &v) in j.iter().enumerate() {
                    let e = if m == 3 {
                        secret[i].wrapping_mul(v + 1)
                    } else {
                        table[v as usize]
                    };
                    assert_eq!(got[i], ring.reduce(e), "m {m} index {v} element {i}");
                }
                // the shares themselves are not the value (the sender's share is uniform)
                assert!(a[c].data().iter().zip(&got).any(|(x, y)| x != y));
            }
            assert_eq!(cost.bytes, want.bytes, "{cfg:?}");
            assert!(cost.rounds <= want.rounds);
        }
    }

    #[test]
    fn lut_rejects_bad_arguments() {
        let cfg = NlConfig::default();
        assert_eq!(lut_cost(10, 0, Ring::z64(), cfg), Cost::default());
        assert_eq!(lut_cost(10, 9, Ring::z64(), cfg), Cost::default());
        let (a, b, _) = run2(cfg, CotCount::default(), |role, s, ch| {
            let bad_m = lut(s, ch, &[1, 2], 9, Ring::z64(), None).is_err();
            // the sender without a table
            let no_table = role == Role::Server && lut(s, ch, &[1], 2, Ring::z64(), None).is_err();
            (bad_m, no_table)
        });
        assert!(a.0 && b.0 && a.1);
    }
}
