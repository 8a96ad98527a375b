//! OT plumbing shared by the non-linear protocols: parallel KK13 drivers with split phases,
//! correlated OT over `Z_2^w` for any width `w` in `1..=64` (per-instance widths), and bit
//! triples from random OTs. Everything here is driven by [`NlSession`].

use super::cost::{kk_answer, kk_msg, Tape};
use super::wire::{pack_bits, pack_var, unpack_bits, unpack_var};
use super::NlSession;
use crate::ot::kk13::{Row, KK_CHUNK};
use crate::ot::{rot, Block, CotReceiver, CotSender};
use crate::{MpcError, Result};
use duet_transport::{Channel, Role};
use rayon::prelude::*;

/// Instances per parallel task of the KK13 sender's answer (its bit length is a multiple of 8
/// for any `2^l w`).
const SUB: usize = 4096;

/// Ring COTs per chunk of [`NlSession::cot_send`] (one IKNP extension message each).
pub(crate) const COT_CHUNK: usize = crate::ot::iknp::CHUNK;

fn mask(w: u32) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

impl NlSession {
    /// KK13 receiver, first half: sends the extension messages for `choices` (one per chunk of
    /// [`KK_CHUNK`]), returns the rows. Does not flush.
    pub(crate) fn kk_recv_begin<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[u8],
    ) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(choices.len());
        for chunk in choices.chunks(KK_CHUNK) {
            let (msg, t) = self.kk_r.extend_core(chunk)?;
            ch.send_u64s(&msg)?;
            rows.extend(t);
        }
        Ok(rows)
    }

    /// KK13 receiver, second half: receives the answers and unmasks message `choices[i]`.
    pub(crate) fn kk_recv_end<C: Channel>(
        &mut self,
        ch: &mut C,
        rows: &[Row],
        choices: &[u8],
        l: u32,
        w: u32,
    ) -> Result<Vec<u64>> {
        let start = self.kk_r_next;
        let mut out = Vec::with_capacity(choices.len());
        for (ci, (crow, cch)) in rows
            .chunks(KK_CHUNK)
            .zip(choices.chunks(KK_CHUNK))
            .enumerate()
        {
            let expect = ((cch.len() << l) * w as usize).div_ceil(8);
            let y = ch.recv_bytes_max(expect)?;
            if y.len() != expect {
                return Err(MpcError::InvalidPeerData {
                    what: format!("KK13 answer of {} bytes, expected {expect}", y.len()),
                });
            }
            let sub_bytes = (SUB << l) * w as usize / 8;
            let base = start + (ci * KK_CHUNK) as u64;
            let parts: Vec<Result<Vec<u64>>> = crow
                .par_chunks(SUB)
                .zip(cch.par_chunks(SUB))
                .zip(y.par_chunks(sub_bytes))
                .enumerate()
                .map(|(si, ((r, c), yb))| {
                    self.kk_r.finish(r, base + (si * SUB) as u64, c, yb, l, w)
                })
                .collect();
            for p in parts {
                out.extend(p?);
            }
        }
        self.kk_r_next += choices.len() as u64;
        Ok(out)
    }

    /// KK13 sender: receives the extension messages of `n` instances, answers each chunk with
    /// the `2^l` messages `msg(i, x)` of instance `i` (computed in parallel) and sends the
    /// answers (one message per chunk) after all extension messages arrived.
    pub(crate) fn kk_send<C: Channel>(
        &mut self,
        ch: &mut C,
        n: usize,
        l: u32,
        w: u32,
        msg: impl Fn(usize, usize) -> u64 + Sync,
    ) -> Result<()> {
        let start = self.kk_s_next;
        let big_n = 1usize << l;
        let mut answers = Vec::with_capacity(n.div_ceil(KK_CHUNK));
        let mut done = 0usize;
        while done < n {
            let m = (n - done).min(KK_CHUNK);
            let u = ch.recv_u64s_max(crate::ot::kk13::CODE_BITS * m.div_ceil(64))?;
            let rows = self.kk_s.extend_core(m, &u)?;
            let kk = &self.kk_s;
            let parts: Vec<Result<Vec<u8>>> = rows
                .par_chunks(SUB)
                .enumerate()
                .map(|(si, r)| {
                    let first = done + si * SUB;
                    let msgs: Vec<u64> = (0..r.len() * big_n)
                        .map(|j| msg(first + j / big_n, j % big_n))
                        .collect();
                    kk.respond(r, start + first as u64, &msgs, l, w)
                })
                .collect();
            let mut ans = Vec::with_capacity(((m << l) * w as usize).div_ceil(8));
            for p in parts {
                ans.extend(p?);
            }
            answers.push(ans);
            done += m;
        }
        for a in &answers {
            ch.send_bytes(a)?;
        }
        ch.flush()?;
        self.kk_s_next += n as u64;
        Ok(())
    }

    /// Correlated OT over `Z_2^{w_j}` as the OT sender: for correlations `xs` returns `a_j`; the
    /// receiver gets `a_j + c_j x_j mod 2^{w_j}` for its chosen `c_j`.
    ///
    /// Processed in chunks of [`COT_CHUNK`] so that memory stays bounded: per chunk the
    /// receiver sends its IKNP message and its derandomization bits; the sender keeps only the
    /// packed corrections and sends them all (one message per chunk) after the last chunk, so
    /// the whole call is still one flight each way.
    pub(crate) fn cot_send<C: Channel>(
        &mut self,
        ch: &mut C,
        xs: &[u64],
        width: impl Fn(usize) -> u32 + Sync,
    ) -> Result<Vec<u64>> {
        self.cot_send_impl(ch, xs, width, false)
    }

    /// XOR-correlated OT of `w_j`-bit strings as the OT sender: returns `a_j`; the receiver
    /// gets `a_j ⊕ c_j x_j` (the boolean counterpart of [`NlSession::cot_send`], same
    /// messages and cost: [`NlSession::tape_cot`]).
    pub(crate) fn xot_send<C: Channel>(
        &mut self,
        ch: &mut C,
        xs: &[u64],
        width: impl Fn(usize) -> u32 + Sync,
    ) -> Result<Vec<u64>> {
        self.cot_send_impl(ch, xs, width, true)
    }

    /// XOR-correlated OT as the receiver (see [`NlSession::xot_send`]).
    pub(crate) fn xot_recv<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[bool],
        width: impl Fn(usize) -> u32 + Sync,
    ) -> Result<Vec<u64>> {
        self.cot_recv_impl(ch, choices, width, true)
    }

    fn cot_send_impl<C: Channel>(
        &mut self,
        ch: &mut C,
        xs: &[u64],
        width: impl Fn(usize) -> u32 + Sync,
        xor: bool,
    ) -> Result<Vec<u64>> {
        let mut a = Vec::with_capacity(xs.len());
        let mut ds = Vec::with_capacity(xs.len().div_ceil(COT_CHUNK));
        for (ci, xc) in xs.chunks(COT_CHUNK).enumerate() {
            let base = ci * COT_CHUNK;
            let keys = self.cot_s.send_rot(ch, xc.len())?;
            let e = unpack_bits(
                &ch.recv_bytes_max(xc.len().div_ceil(8))?,
                xc.len(),
                "ring-COT choice bits",
            )?;
            let (ac, d): (Vec<u64>, Vec<u64>) = keys
                .par_iter()
                .zip(xc.par_iter())
                .zip(e.par_iter())
                .enumerate()
                .map(|(j, ((k, &x), &e))| {
                    let (k0, k1) = if e { (k[1], k[0]) } else { (k[0], k[1]) };
                    let m = mask(width(base + j));
                    let a = k0 as u64 & m;
                    let d = if xor {
                        (k1 as u64) ^ a ^ x
                    } else {
                        (k1 as u64).wrapping_sub(a).wrapping_sub(x)
                    };
                    (a, d & m)
                })
                .unzip();
            a.extend(ac);
            ds.push(pack_var(&d, |j| width(base + j)));
        }
        for d in &ds {
            ch.send_bytes(d)?;
        }
        ch.flush()?;
        Ok(a)
    }

    /// Correlated OT over `Z_2^{w_j}` as the OT receiver with choices `c_j` (see
    /// [`NlSession::cot_send`]).
    pub(crate) fn cot_recv<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[bool],
        width: impl Fn(usize) -> u32 + Sync,
    ) -> Result<Vec<u64>> {
        self.cot_recv_impl(ch, choices, width, false)
    }

    fn cot_recv_impl<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[bool],
        width: impl Fn(usize) -> u32 + Sync,
        xor: bool,
    ) -> Result<Vec<u64>> {
        let mut kept: Vec<u64> = Vec::with_capacity(choices.len());
        for (ci, cc) in choices.chunks(COT_CHUNK).enumerate() {
            let base = ci * COT_CHUNK;
            let (b, keys) = self.cot_r.recv_rot(ch, cc.len())?;
            let e: Vec<bool> = b.iter().zip(cc).map(|(x, y)| x ^ y).collect();
            ch.send_bytes(&pack_bits(&e))?;
            kept.extend(
                keys.iter()
                    .enumerate()
                    .map(|(j, &k)| k as u64 & mask(width(base + j))),
            );
        }
        ch.flush()?;
        let mut out = Vec::with_capacity(choices.len());
        for (ci, (cc, kc)) in choices
            .chunks(COT_CHUNK)
            .zip(kept.chunks(COT_CHUNK))
            .enumerate()
        {
            let base = ci * COT_CHUNK;
            // every width is at most 64 bits
            let d = unpack_var(
                &ch.recv_bytes_max(cc.len() * 8)?,
                cc.len(),
                |j| width(base + j),
                "ring-COT corrections",
            )?;
            out.par_extend(
                kc.par_iter()
                    .zip(cc.par_iter())
                    .zip(d.par_iter())
                    .enumerate()
                    .map(|(j, ((&kb, &c), &dj))| {
                        if c && xor {
                            (kb ^ dj) & mask(width(base + j))
                        } else if c {
                            kb.wrapping_sub(dj) & mask(width(base + j))
                        } else {
                            kb
                        }
                    }),
            );
        }
        Ok(out)
    }

    /// Correlated OT in both directions, the configured OT sender's direction first: this
    /// party sends correlations `xs` and chooses with `choices` (same length `n`). Returns
    /// (`a` as sender, output as receiver).
    pub(crate) fn cot_both<C: Channel>(
        &mut self,
        ch: &mut C,
        xs: &[u64],
        choices: &[bool],
        width: impl Fn(usize) -> u32 + Sync + Copy,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        if self.is_ot_sender() {
            let a = self.cot_send(ch, xs, width)?;
            let y = self.cot_recv(ch, choices, width)?;
            Ok((a, y))
        } else {
            let y = self.cot_recv(ch, choices, width)?;
            let a = self.cot_send(ch, xs, width)?;
            Ok((a, y))
        }
    }

    /// Bit triples, first half: random OTs as receiver (sends the IKNP message).
    pub(crate) fn triples_begin<C: Channel>(
        &mut self,
        ch: &mut C,
        n: usize,
    ) -> Result<(Vec<bool>, Vec<Block>)> {
        if n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        self.cot_r.recv_rot(ch, n)
    }

    /// Bit triples, second half: random OTs as sender (receives the peer's IKNP message),
    /// then the local derivation (see [`Triples`]).
    pub(crate) fn triples_end<C: Channel>(
        &mut self,
        ch: &mut C,
        n: usize,
        recv: (Vec<bool>, Vec<Block>),
    ) -> Result<Triples> {
        if n == 0 {
            return Ok(Triples::default());
        }
        let keys = self.cot_s.send_rot(ch, n)?;
        Ok(derive_triples(&keys, recv))
    }

    /// IKNP 1-of-`2^l` OT (from `l` random OTs, [`crate::ot::rot`]), sender side, with `nt`
    /// triple pairs made in the same flight (see [`NlSession::rot_leaf_recv`]): receives the
    /// peer's IKNP message for `nt + n l` random OTs and the derandomization bits, answers with
    /// all `2^l` masked messages `msg(i, x)` (parallel), one message. Returns the triples.
    pub(crate) fn rot_leaf_send<C: Channel>(
        &mut self,
        ch: &mut C,
        nt: usize,
        n: usize,
        l: u32,
        w: u32,
        msg: impl Fn(usize, usize) -> u64 + Sync,
    ) -> Result<Triples> {
        let recv = self.triples_begin(ch, nt)?;
        let lu = l as usize;
        let keys = self.cot_s.send_rot(ch, nt + n * lu)?;
        let (tk, lk) = keys.split_at(nt.min(keys.len()));
        let t = if nt > 0 {
            derive_triples(tk, recv)
        } else {
            Triples::default()
        };
        if n == 0 {
            return Ok(t);
        }
        let e = ch.recv_bytes_max((n * lu).div_ceil(8))?;
        if e.len() != (n * lu).div_ceil(8) {
            return Err(MpcError::InvalidPeerData {
                what: format!("1-of-N choice bits: {} bytes for {n} OTs", e.len()),
            });
        }
        let big_n = 1usize << l;
        let parts: Vec<Result<Vec<u8>>> = lk
            .par_chunks(SUB * lu)
            .zip(e.par_chunks(SUB * lu / 8))
            .enumerate()
            .map(|(si, (k, eb))| {
                let first = si * SUB;
                let cnt = k.len() / lu;
                let msgs: Vec<u64> = (0..cnt * big_n)
                    .map(|j| msg(first + j / big_n, j % big_n))
                    .collect();
                rot::one_of_n_sender_respond(k, eb, &msgs, l, w)
            })
            .collect();
        let mut y = Vec::with_capacity(((n << l) * w as usize).div_ceil(8));
        for p in parts {
            y.extend(p?);
        }
        ch.send_bytes(&y)?;
        ch.flush()?;
        Ok(t)
    }

    /// IKNP 1-of-`2^l` OT, receiver side (see [`NlSession::rot_leaf_send`]): returns the
    /// chosen messages and the triples.
    pub(crate) fn rot_leaf_recv<C: Channel>(
        &mut self,
        ch: &mut C,
        nt: usize,
        choices: &[u8],
        l: u32,
        w: u32,
    ) -> Result<(Vec<u64>, Triples)> {
        let n = choices.len();
        let lu = l as usize;
        let (b, k) = if nt + n * lu > 0 {
            self.cot_r.recv_rot(ch, nt + n * lu)?
        } else {
            (Vec::new(), Vec::new())
        };
        let split = nt.min(b.len());
        let (tb, lb) = b.split_at(split);
        let (tk, lk) = k.split_at(split);
        if n > 0 {
            let e = rot::one_of_n_receiver_message(lb, choices, l)?;
            ch.send_bytes(&e)?;
        }
        ch.flush()?;
        let t = if nt > 0 {
            let keys = self.cot_s.send_rot(ch, nt)?;
            derive_triples(&keys, (tb.to_vec(), tk.to_vec()))
        } else {
            Triples::default()
        };
        if n == 0 {
            return Ok((Vec::new(), t));
        }
        let expect = ((n << l) * w as usize).div_ceil(8);
        let y = ch.recv_bytes_max(expect)?;
        if y.len() != expect {
            return Err(MpcError::InvalidPeerData {
                what: format!("1-of-N answer of {} bytes, expected {expect}", y.len()),
            });
        }
        let sub_bytes = (SUB << l) * w as usize / 8;
        let parts: Vec<Result<Vec<u64>>> = lk
            .par_chunks(SUB * lu)
            .zip(choices.par_chunks(SUB))
            .zip(y.par_chunks(sub_bytes))
            .map(|((k, c), yb)| rot::one_of_n_receiver_finish(k, c, yb, l, w))
            .collect();
        let mut out = Vec::with_capacity(n);
        for p in parts {
            out.extend(p?);
        }
        Ok((out, t))
    }
}

/// The local derivation of [`Triples`] from this party's random OTs as sender (`keys`) and
/// as receiver (`recv` = choice bits and keys).
pub(crate) fn derive_triples(keys: &[[Block; 2]], recv: (Vec<bool>, Vec<Block>)) -> Triples {
    {
        let n = keys.len();
        let (b, v) = recv;
        let mut t = Triples {
            a: Vec::with_capacity(n),
            b,
            c: Vec::with_capacity(n),
        };
        for ((k, vb), &bb) in keys.iter().zip(&v).zip(&t.b) {
            let alpha = ((k[0] ^ k[1]) & 3) as u8;
            let u = (k[0] & 3) as u8;
            let vv = (*vb & 3) as u8;
            let ab = if bb { alpha } else { 0 };
            t.a.push(alpha);
            t.c.push(ab ^ u ^ vv);
        }
        t
    }
}

/// Sums of COT widths over index ranges for [`NlSession::tape_cot`]: from the prefix sums of
/// one period when the pattern is periodic, else directly.
struct RangeBits {
    /// `prefix[i]` = widths of `0..i`, `i <= period` (empty: sum directly).
    prefix: Vec<u64>,
}

impl RangeBits {
    fn new(n: usize, period: usize, width: &impl Fn(usize) -> u32) -> Self {
        if period == 0 || period >= n {
            return Self { prefix: Vec::new() };
        }
        let mut prefix = Vec::with_capacity(period + 1);
        let mut acc = 0u64;
        prefix.push(acc);
        for j in 0..period {
            acc += u64::from(width(j));
            prefix.push(acc);
        }
        Self { prefix }
    }

    /// Widths of `0..j`.
    fn upto(&self, j: usize) -> Option<u64> {
        let p = self.prefix.len().checked_sub(1).filter(|&p| p > 0)?;
        let whole = *self.prefix.get(p)?;
        Some((j / p) as u64 * whole + *self.prefix.get(j % p)?)
    }

    /// Widths of `s..e`.
    fn over(&self, s: usize, e: usize, width: &impl Fn(usize) -> u32) -> u64 {
        match (self.upto(e), self.upto(s)) {
            (Some(a), Some(b)) => a - b,
            _ => (s..e).map(|j| u64::from(width(j))).sum(),
        }
    }
}

impl NlSession {
    /// Tape of `n` ring COTs of widths `width(j)` with `sender` as OT sender (see
    /// [`NlSession::cot_send`]). `width(j)` must depend on `j % period` only (the per-element
    /// pattern of the caller, `1` for a constant width): each chunk's bits are then summed from
    /// the pattern's prefix sums, `O(period)` work instead of `O(n)` (the planner prices
    /// millions of COTs per operator many times). A `period` of `n` or more sums directly.
    pub(crate) fn tape_cot(
        tape: &mut Tape,
        sender: Role,
        n: usize,
        period: usize,
        width: impl Fn(usize) -> u32,
    ) {
        if n == 0 {
            return;
        }
        let chunks = n.div_ceil(COT_CHUNK) as u64;
        let (b, m) = tape.cots(sender, n);
        let e: u64 = (0..n)
            .step_by(COT_CHUNK)
            .map(|s| ((n - s).min(COT_CHUNK)).div_ceil(8) as u64)
            .sum();
        tape.send(sender.peer(), b + e, m + chunks);
        let bits = RangeBits::new(n, period, &width);
        let d: u64 = (0..n)
            .step_by(COT_CHUNK)
            .map(|s| bits.over(s, (s + COT_CHUNK).min(n), &width).div_ceil(8))
            .sum();
        tape.send(sender, d, chunks);
    }

    /// Tape of [`NlSession::cot_both`] (`period` as in [`NlSession::tape_cot`]).
    pub(crate) fn tape_cot_both(
        tape: &mut Tape,
        first: Role,
        n: usize,
        period: usize,
        width: impl Fn(usize) -> u32 + Copy,
    ) {
        Self::tape_cot(tape, first, n, period, width);
        Self::tape_cot(tape, first.peer(), n, period, width);
    }

    /// Tape of a standalone KK13 call (`n` instances of 1-of-`2^l`, `w`-bit messages).
    pub(crate) fn tape_kk(tape: &mut Tape, sender: Role, n: usize, l: u32, w: u32) {
        if n == 0 {
            return;
        }
        let (b, m) = kk_msg(n);
        tape.send(sender.peer(), b, m);
        let (b, m) = kk_answer(n, l, w);
        tape.send(sender, b, m);
    }
}

/// One party's half of `n` pairs of bit triples sharing their `b` operand:
/// `(a ⊕ a') (b ⊕ b') = c ⊕ c'` for bit 0 and bit 1 of `a`/`c` with the same `b`.
///
/// Made from one random OT in each direction (Beaver / Gilboa for bits): in the direction in
/// which party `i` is the ROT sender with keys `k0, k1` and party `j` the receiver with bit
/// `β` and key `k_β`, `k0 ⊕ k_β = β (k0 ⊕ k1)`, so `a_i = k0 ⊕ k1` (2 bits) and `b_j = β`
/// give a share `u_i = k0`, `v_j = k_β` of the cross product `a_i b_j`; then
/// `c_i = a_i b_i ⊕ u_i ⊕ v_i`. Cost: 2 COTs (32 bytes with IKNP) per pair, one exchange.
#[derive(Clone, Debug, Default)]
pub(crate) struct Triples {
    /// Two `a` bits (bit 0, bit 1).
    pub a: Vec<u8>,
    /// The shared `b` bit.
    pub b: Vec<bool>,
    /// Two `c` bits.
    pub c: Vec<u8>,
}

#[cfg(test)]
mod tape_tests {
    use super::*;
    use crate::nonlinear::cost::Tape;

    /// The periodic sum equals the direct one, across chunk boundaries and partial periods.
    #[test]
    fn periodic_widths_price_like_the_direct_sum() {
        for (n, p) in [
            (1, 1),
            (7, 3),
            (COT_CHUNK, 37),
            (COT_CHUNK + 1, 37),
            (3 * COT_CHUNK + 12345, 41),
            (2 * COT_CHUNK - 5, 64),
            (100, 1000),
        ] {
            let width = move |j: usize| ((j % p) * 7 % 53 + 1) as u32;
            let mut a = Tape::new();
            NlSession::tape_cot(&mut a, Role::Server, n, p, width);
            let mut b = Tape::new();
            NlSession::tape_cot(&mut b, Role::Server, n, n, width);
            assert_eq!(a.cost(), b.cost(), "n {n} period {p}");
        }
    }
}
