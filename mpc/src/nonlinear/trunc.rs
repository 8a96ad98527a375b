//! Truncation by `f` bits (fixed point) and ring-width change, from the wrap bit of the
//! shares: `x = x0 + x1 - w 2^l` with `w = m0 m1 ⊕ c (m0 ⊕ m1)` for the share MSBs `m_i` and
//! the carry `c` of the low `l-1` bits (one millionaire), followed by one table OT that turns
//! the parties' private bits into an arithmetic share of the correction.

use super::batch::{batch_sizes, ranges, slice_a};
use super::compare::carry_inputs;
use super::cost::Tape;
use super::millionaire::{millionaire_groups, millionaire_last, tape_millionaire, CmpMode};
use super::{Cost, LeafOt, NlConfig, NlSession};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};
use rand::RngCore;

/// Which truncation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TruncMode {
    /// Exact arithmetic shift `floor(x / 2^f)` of the signed value, for any `x`.
    Faithful,
    /// The arithmetic shift or one less (error at most 1 ulp, from the dropped carry of the
    /// low `f` bits), for any `x`.
    OneBit,
    /// As [`TruncMode::OneBit`] when the MSB (sign) of `x` is public and equal to the given
    /// bit: no millionaire, one correlated OT over `Z_2^f`.
    KnownMsb(bool),
}

fn wmask(w: u32) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

impl NlSession {
    /// Table OT: arithmetic shares mod `2^width` of `F(sender bits, receiver bits)` where each
    /// party holds `k` private bits per element (`my_bits`); KK13 1-of-`2^k` with `width`-bit
    /// messages, the configured OT sender offering `F(s, v) - ρ` for every `v`.
    pub(crate) fn table_ot<C: Channel>(
        &mut self,
        ch: &mut C,
        my_bits: &[u8],
        k: u32,
        width: u32,
        f: impl Fn(u8, u8) -> u64 + Sync,
    ) -> Result<Vec<u64>> {
        let m = wmask(width);
        if self.is_ot_sender() {
            let rho: Vec<u64> = (0..my_bits.len())
                .map(|_| self.rng().next_u64() & m)
                .collect();
            let (sb, r) = (my_bits, &rho);
            let msg = |i: usize, v: usize| {
                let s = sb.get(i).copied().unwrap_or(0);
                f(s, v as u8).wrapping_sub(r.get(i).copied().unwrap_or(0)) & m
            };
            match self.config().leaf_ot {
                LeafOt::Kk13 => self.kk_send(ch, my_bits.len(), k, width, msg)?,
                LeafOt::Rot => {
                    self.rot_leaf_send(ch, 0, my_bits.len(), k, width, msg)?;
                }
            }
            Ok(rho)
        } else {
            match self.config().leaf_ot {
                LeafOt::Kk13 => {
                    let rows = self.kk_recv_begin(ch, my_bits)?;
                    ch.flush()?;
                    self.kk_recv_end(ch, &rows, my_bits, k, width)
                }
                LeafOt::Rot => Ok(self.rot_leaf_recv(ch, 0, my_bits, k, width)?.0),
            }
        }
    }

    /// Tape of a standalone [`NlSession::table_ot`] (`n` instances of 1-of-`2^k`, `w`-bit
    /// messages): KK13, or `k` random OTs per instance from the COT source.
    pub(crate) fn tape_table(tape: &mut Tape, cfg: NlConfig, n: usize, k: u32, w: u32) {
        if n == 0 {
            return;
        }
        match cfg.leaf_ot {
            LeafOt::Kk13 => Self::tape_kk(tape, cfg.ot_sender, n, k, w),
            LeafOt::Rot => {
                let sender = cfg.ot_sender;
                let rots = n * k as usize;
                let (b, msgs) = tape.cots(sender, rots);
                tape.send(sender.peer(), b + rots.div_ceil(8) as u64, msgs + 1);
                tape.send(sender, ((n << k) * w as usize).div_ceil(8) as u64, 1);
            }
        }
    }
}

/// `-(w + msb(x)) mod 2^width` from the two parties' (share msb, carry share) bits packed as
/// `m | c << 1`: with `t = m0 ⊕ m1`, `w + msb = t ? 1 : m0 + c`.
fn neg_w_plus_msb(sb: u8, rb: u8) -> u64 {
    let t = (sb ^ rb) & 1;
    let c = ((sb ^ rb) >> 1) & 1;
    let g = if t == 1 {
        1
    } else {
        u64::from(sb & 1) + u64::from(c)
    };
    g.wrapping_neg()
}

/// Truncation of shared fixed-point values by `f` bits (`0 <= f < l`).
///
/// Protocol: `ASR(x, f) = (x0 >> f) + (x1 >> f) + c_f - (w + msb(x)) 2^{l-f}` with `w` the
/// wrap bit of the shares and `c_f` the carry of their low `f` bits.
/// * [`TruncMode::Faithful`]: one millionaire batch on `l-1` bits (for `w`, `msb`) and on `f`
///   bits (for `c_f`), then a 1-of-8 table OT with `l`-bit messages. Exact.
/// * [`TruncMode::OneBit`]: the millionaire on `l-1` bits and a 1-of-4 table OT with `f`-bit
///   messages; drops `c_f` (result may be 1 too small).
/// * [`TruncMode::KnownMsb`]: `w + msb = t ? 1 : m0 + msb` is a function of the share MSBs
///   only: one correlated OT over `Z_2^f`. Error at most 1.
///
/// Security: semi-honest, 128-bit. Cost: [`trunc_cost`].
pub fn trunc<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f: u32,
    mode: TruncMode,
) -> Result<AShare> {
    if let Some(rs) = ranges(x.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(trunc(s, ch, &slice_a(x, &r)?, f, mode)?.into_data());
        }
        return AShare::new(x.ring(), x.shape().to_vec(), out);
    }
    s.reserve(ch, trunc_cost(x.len(), x.ring(), f, mode, s.config()).cots)?;
    let ring = x.ring();
    let l = ring.bits();
    if f >= l {
        return Err(MpcError::InvalidArgument {
            what: format!("truncation by {f} bits in Z_2^{l}"),
        });
    }
    if f == 0 || x.is_empty() {
        return Ok(x.clone());
    }
    let data = x.data();
    let shifted = data.iter().map(|&v| v >> f);
    let msbs: Vec<u8> = data.iter().map(|&v| u8::from(ring.msb(v))).collect();
    let out: Vec<u64> = match mode {
        TruncMode::KnownMsb(mu) => {
            let fm = wmask(f);
            let g = move |m0: u8, m1: u8| -> u64 {
                let w = if m0 != m1 {
                    1
                } else {
                    u64::from(m0) + u64::from(mu)
                };
                w.wrapping_neg() & fm
            };
            let share: Vec<u64> = if s.is_ot_sender() {
                let corr: Vec<u64> = msbs
                    .iter()
                    .map(|&m| g(m, 1).wrapping_sub(g(m, 0)) & fm)
                    .collect();
                let a = s.cot_send(ch, &corr, |_| f)?;
                msbs.iter()
                    .zip(&a)
                    .map(|(&m, &a)| g(m, 0).wrapping_sub(a) & fm)
                    .collect()
            } else {
                let ch_bits: Vec<bool> = msbs.iter().map(|&m| m == 1).collect();
                s.cot_recv(ch, &ch_bits, |_| f)?
            };
            shifted
                .zip(share)
                .map(|(v, sh)| ring.add(v, ring.reduce(sh << (l - f))))
                .collect()
        }
        TruncMode::OneBit => {
            let inp = carry_inputs(s.role(), ring, data);
            let (mut c, _, _) = millionaire_groups(s, ch, &[(&inp, l - 1)], CmpMode::Lt, 0)?;
            let c = c.pop().unwrap_or_default();
            let bits: Vec<u8> = msbs
                .iter()
                .zip(&c)
                .map(|(&m, &c)| m | (u8::from(c) << 1))
                .collect();
            let fm = wmask(f);
            let ts = table_sender(s.config(), &[(x.len(), l - 1)]);
            let share = s.with_ot_sender(ts, |s| {
                s.table_ot(ch, &bits, 2, f, move |sb, rb| neg_w_plus_msb(sb, rb) & fm)
            })?;
            shifted
                .zip(share)
                .map(|(v, sh)| ring.add(v, ring.reduce(sh << (l - f))))
                .collect()
        }
        TruncMode::Faithful => {
            let inp = carry_inputs(s.role(), ring, data);
            let lf = wmask(f);
            let low: Vec<u64> = match s.role() {
                Role::Server => data.iter().map(|&v| lf - (v & lf)).collect(),
                Role::Client => data.iter().map(|&v| v & lf).collect(),
            };
            let (c, _, _) = millionaire_groups(s, ch, &[(&inp, l - 1), (&low, f)], CmpMode::Lt, 0)?;
            let (cw, cf) = match c.as_slice() {
                [a, b] => (a, b),
                _ => {
                    return Err(MpcError::InvalidArgument {
                        what: "millionaire groups".into(),
                    })
                }
            };
            let bits: Vec<u8> = msbs
                .iter()
                .zip(cw.iter().zip(cf))
                .map(|(&m, (&c, &d))| m | (u8::from(c) << 1) | (u8::from(d) << 2))
                .collect();
            let ts = table_sender(s.config(), &[(x.len(), l - 1), (x.len(), f)]);
            let share = s.with_ot_sender(ts, |s| {
                s.table_ot(ch, &bits, 3, l, move |sb, rb| {
                    let cfb = u64::from(((sb ^ rb) >> 2) & 1);
                    ring.add(cfb, ring.reduce(neg_w_plus_msb(sb & 3, rb & 3) << (l - f)))
                })
            })?;
            shifted.zip(share).map(|(v, sh)| ring.add(v, sh)).collect()
        }
    };
    AShare::new(ring, x.shape().to_vec(), out)
}

/// Exact cost of [`trunc`] on `n` elements.
pub fn trunc_cost(n: usize, ring: Ring, f: u32, mode: TruncMode, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_trunc(&mut t, n, ring, f, mode, cfg);
    t.cost()
}

/// [`trunc_cost`] on a tape.
pub fn tape_trunc(t: &mut Tape, n: usize, ring: Ring, f: u32, mode: TruncMode, cfg: NlConfig) {
    let l = ring.bits();
    if n == 0 || f == 0 || f >= l {
        return;
    }
    for n in batch_sizes(n) {
        match mode {
            TruncMode::KnownMsb(_) => NlSession::tape_cot(t, cfg.ot_sender, n, 1, |_| f),
            TruncMode::OneBit => {
                tape_millionaire(t, cfg, &[(n, l - 1)], CmpMode::Lt, 0);
                let c = t.chain(cfg);
                NlSession::tape_table(t, c, n, 2, f);
            }
            TruncMode::Faithful => {
                tape_millionaire(t, cfg, &[(n, l - 1), (n, f)], CmpMode::Lt, 0);
                let c = t.chain(cfg);
                NlSession::tape_table(t, c, n, 3, l);
            }
        }
    }
}

/// The OT sender of the table OT that follows a millionaire batch on `groups`: the peer of the
/// party that sent the batch's last flight (so that the table's choices go in that flight).
fn table_sender(cfg: NlConfig, groups: &[(usize, u32)]) -> Role {
    millionaire_last(cfg, groups, CmpMode::Lt).map_or(cfg.ot_sender, Role::peer)
}

/// Reduces shares of `x` in `Z_2^{l1}` to `Z_2^{l2}` (`l2 <= l1`): local, exact (`x mod 2^{l2}`).
pub fn reduce(x: &AShare, to: Ring) -> Result<AShare> {
    if to.bits() > x.ring().bits() {
        return Err(MpcError::InvalidArgument {
            what: format!("reduce from Z_2^{} to Z_2^{}", x.ring().bits(), to.bits()),
        });
    }
    AShare::new(
        to,
        x.shape().to_vec(),
        x.data().iter().map(|&v| to.reduce(v)).collect(),
    )
}

/// Exact ring extension from `Z_2^{l1}` to `Z_2^{l2}` (`l2 >= l1`): unsigned (the value in
/// `[0, 2^{l1})`) or signed (two's complement, in `[-2^{l1-1}, 2^{l1-1})`). For `l2 < l1`
/// this is [`reduce`] (local).
///
/// Protocol: `x = x0 + x1 - w 2^{l1}`; the wrap `w = t ? c : m0` (`t = m0 ⊕ m1`, `c` the carry
/// of the low `l1-1` bits from one millionaire) is turned into a share mod `2^{l2-l1}` by a
/// 1-of-4 table OT; signed values are offset by `2^{l1-1}` first (SecureML / CrypTFlow2).
/// Security: semi-honest, 128-bit. Cost: [`extend_cost`].
pub fn extend<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    to: Ring,
    signed: bool,
) -> Result<AShare> {
    if let Some(rs) = ranges(x.len()) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(extend(s, ch, &slice_a(x, &r)?, to, signed)?.into_data());
        }
        return AShare::new(to, x.shape().to_vec(), out);
    }
    s.reserve(ch, extend_cost(x.len(), x.ring(), to, s.config()).cots)?;
    let from = x.ring();
    let (l1, l2) = (from.bits(), to.bits());
    if l2 <= l1 {
        return reduce(x, to);
    }
    if x.is_empty() {
        return AShare::new(to, x.shape().to_vec(), Vec::new());
    }
    let server = s.role() == Role::Server;
    let half = 1u64 << (l1 - 1);
    let data: Vec<u64> = if signed && server {
        x.data().iter().map(|&v| from.add(v, half)).collect()
    } else {
        x.data().to_vec()
    };
    let inp = carry_inputs(s.role(), from, &data);
    let (mut c, _, _) = millionaire_groups(s, ch, &[(&inp, l1 - 1)], CmpMode::Lt, 0)?;
    let c = c.pop().unwrap_or_default();
    let bits: Vec<u8> = data
        .iter()
        .zip(&c)
        .map(|(&v, &c)| u8::from(from.msb(v)) | (u8::from(c) << 1))
        .collect();
    let dw = l2 - l1;
    let dm = wmask(dw);
    let ts = table_sender(s.config(), &[(x.len(), l1 - 1)]);
    let share = s.with_ot_sender(ts, |s| {
        s.table_ot(ch, &bits, 2, dw, move |sb, rb| {
            let t = (sb ^ rb) & 1;
            let w = if t == 1 { ((sb ^ rb) >> 1) & 1 } else { sb & 1 };
            u64::from(w).wrapping_neg() & dm
        })
    })?;
    let out = data
        .iter()
        .zip(share)
        .map(|(&v, sh)| {
            let y = to.add(v, to.reduce(sh << l1));
            if signed && server {
                to.sub(y, half)
            } else {
                y
            }
        })
        .collect();
    AShare::new(to, x.shape().to_vec(), out)
}

/// Exact cost of [`extend`] on `n` elements from `from` to `to`.
pub fn extend_cost(n: usize, from: Ring, to: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_extend(&mut t, n, from, to, cfg);
    t.cost()
}

/// [`extend_cost`] on a tape.
pub fn tape_extend(t: &mut Tape, n: usize, from: Ring, to: Ring, cfg: NlConfig) {
    let (l1, l2) = (from.bits(), to.bits());
    if n == 0 || l2 <= l1 {
        return;
    }
    for n in batch_sizes(n) {
        tape_millionaire(t, cfg, &[(n, l1 - 1)], CmpMode::Lt, 0);
        let c = t.chain(cfg);
        NlSession::tape_table(t, c, n, 2, l2 - l1);
    }
}
