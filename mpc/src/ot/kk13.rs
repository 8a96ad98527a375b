//! 1-out-of-N OT extension of Kolesnikov and Kumaresan (Crypto 2013) for `N = 2^l <= 256`.
//!
//! IKNP with the repetition code replaced by the 256-bit Walsh–Hadamard code
//! `C(v)_j = parity(v & j)` (`j < 256`), whose distinct codewords differ in exactly 128 bits:
//! * setup: 256 random OTs from an existing IKNP direction in which the 1-of-N *receiver* is
//!   the COT sender (it gets seed pairs `(k_j^0, k_j^1)`) and the 1-of-N *sender* the COT
//!   receiver (it gets its random choice bits `s_j` and `k_j^{s_j}`); no public-key work;
//! * the receiver with choices `r_i` sends the 256 columns `u_j = G(k_j^0) ⊕ G(k_j^1) ⊕ C(r)_j`
//!   (32 bytes per instance); the sender's rows are `q_i = t_i ⊕ (C(r_i) ∧ s)`;
//! * the key of message `x` of instance `i` is `H(i, q_i ⊕ (C(x) ∧ s))`, which for `x = r_i` is
//!   the receiver's `H(i, t_i)`; for any other `x` it differs from `t_i` by 128 bits of `s`
//!   the receiver does not know; the sender sends every message masked with its key (`N w`
//!   bits per instance).
//!
//! `H` is SHA-256 over a label, the global instance index and the 256-bit row (one compression
//! per hash): a random oracle, so the 256-bit correlations need no extra assumption.
//!
//! Security: semi-honest, 128-bit, random-oracle model (and AES as a PRG, IKNP for the base
//! OTs). Bytes per instance: 32 (receiver, `n` a multiple of 64) + `N w / 8` (sender), against
//! `16 l + l/8 + N w / 8` for the construction from `l` 1-out-of-2 OTs in [`super::rot`]: this
//! one is smaller for `N >= 4` (l = 1 should use the latter). Compute: the sender hashes `N`
//! rows per instance.
//!
//! Offline/online: [`KkReceiver::precompute`] extends instances with uniform random choices
//! `r_i < 256` (32 bytes each); online the receiver sends `e_i = v_i ⊕ r_i` (1 byte) and the
//! sender masks message `x` with the key of codeword `x ⊕ e_i`, which for `x = v_i` is the
//! receiver's `r_i`. The low `l` bits of `e_i` are uniform whatever `v_i` is.

#![expect(
    clippy::indexing_slicing,
    reason = "column slices j*w..(j+1)*w with j < 256 of buffers of 256*w words, code tables of 256 entries indexed by u8 or j < 256"
)]

use super::aes::AesPrg;
use super::bits::{low_mask, packed_len, unpack, BitWriter};
use super::rot::{check_one_of_n, one_of_n_instances};
use super::transpose::transpose_128xn;
use super::{Block, CotReceiver, CotSender, OtCost, OtSide, Traffic};
use crate::{MpcError, Prg, Result};
use duet_transport::{Channel, TransportError};
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// Width of the code and number of base OTs.
pub const CODE_BITS: usize = 256;

/// Instances per extension message (2 MiB).
pub const KK_CHUNK: usize = 1 << 16;

/// A 256-bit row.
pub type Row = [Block; 2];

/// The Walsh–Hadamard codeword of `v`: bit `j` is the parity of `v & j`.
pub fn codeword(v: u8) -> Row {
    let mut out = [0u128; 2];
    for j in 0..CODE_BITS {
        let bit = ((v as usize & j).count_ones() & 1) as u128;
        out[j / 128] |= bit << (j % 128);
    }
    out
}

fn row_hash(index: u64, x: &Row) -> Block {
    let mut h = Sha256::new();
    h.update(b"duet/ot/kk13/v1");
    h.update(index.to_le_bytes());
    h.update(x[0].to_le_bytes());
    h.update(x[1].to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// Exact cost of the setup: the 256 IKNP COTs it consumes, i.e. `cot_cost(256)` of the
/// direction used (4,096 bytes from the 1-of-N sender, who is the COT receiver, unless
/// pooled), with the roles swapped so that [`OtCost::sender`] is the 1-of-N sender.
pub fn setup_cost<R: CotReceiver>(cot_receiver: &R) -> OtCost {
    cot_receiver.cot_cost(CODE_BITS).swapped()
}

/// Exact cost of `n` 1-out-of-`2^l` OTs of `w`-bit messages: the receiver sends
/// `8 · 256 · ceil(m/64)` bytes per chunk of `m <= KK_CHUNK` instances, then the sender
/// `ceil(n 2^l w / 8)` bytes in one message.
pub fn extend_cost(n: usize, l: u32, w: u32) -> OtCost {
    if n == 0 {
        return OtCost::default();
    }
    let full = n / KK_CHUNK;
    let rest = n % KK_CHUNK;
    let words = full * CODE_BITS * (KK_CHUNK / 64) + CODE_BITS * rest.div_ceil(64);
    OtCost::request_response(
        OtSide::Receiver,
        Traffic {
            bytes: 8 * words as u64,
            messages: n.div_ceil(KK_CHUNK) as u64,
            flights: 1,
        },
        Traffic {
            bytes: packed_len(n << l, w) as u64,
            messages: 1,
            flights: 1,
        },
    )
}

/// Exact cost of [`KkSender::precompute`]`(n)`: the receiver's extension messages only
/// (`8 · 256 · ceil(m/64)` bytes per chunk of `m <= KK_CHUNK` instances).
pub fn precompute_cost(n: usize) -> OtCost {
    let full = n / KK_CHUNK;
    let rest = n % KK_CHUNK;
    let words = full * CODE_BITS * (KK_CHUNK / 64) + CODE_BITS * rest.div_ceil(64);
    OtCost::one_way(
        OtSide::Receiver,
        Traffic {
            bytes: 8 * words as u64,
            messages: n.div_ceil(KK_CHUNK) as u64,
            flights: u64::from(n > 0),
        },
    )
}

/// Exact online cost of [`KkSender::send_pooled`] for `n` instances: the receiver sends `n`
/// bytes, the sender `ceil(n 2^l w / 8)` bytes.
pub fn pooled_cost(n: usize, l: u32, w: u32) -> OtCost {
    OtCost::request_response(
        OtSide::Receiver,
        Traffic {
            bytes: n as u64,
            messages: 1,
            flights: 1,
        },
        Traffic {
            bytes: packed_len(n << l, w) as u64,
            messages: 1,
            flights: 1,
        },
    )
}

fn rows_of(cols: &[u64], n: usize) -> Result<Vec<Row>> {
    let w = n.div_ceil(64);
    let lo = transpose_128xn(&cols[..128 * w], n)?;
    let hi = transpose_128xn(&cols[128 * w..], n)?;
    Ok(lo.into_iter().zip(hi).map(|(a, b)| [a, b]).collect())
}

/// The KK13 sender (holds the messages): the code mask `s` and its 256 seeds.
pub struct KkSender {
    s: Row,
    /// `C(y) ∧ s` for every `y < 256`.
    masks: Vec<Row>,
    prgs: Vec<AesPrg>,
    block_ctr: u64,
    /// Rows extended so far: the hash index of the next one.
    extended: u64,
    pool: VecDeque<(u64, Row)>,
}

impl std::fmt::Debug for KkSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KkSender")
            .field("extended", &self.extended)
            .field("pooled", &self.pool.len())
            .finish_non_exhaustive()
    }
}

impl KkSender {
    /// Setup from 256 random OTs in which this party is the COT receiver (see
    /// [`setup_cost`]); the peer runs [`KkReceiver::setup`] on its matching COT sender.
    pub fn setup<R: CotReceiver, C: Channel>(cot: &mut R, ch: &mut C) -> Result<Self> {
        let (bits, keys) = cot.recv_rot(ch, CODE_BITS)?;
        let mut s = [0u128; 2];
        for (j, &b) in bits.iter().enumerate() {
            s[j / 128] |= u128::from(b) << (j % 128);
        }
        let masks = (0..=255u8)
            .map(|y| {
                let c = codeword(y);
                [c[0] & s[0], c[1] & s[1]]
            })
            .collect();
        Ok(Self {
            s,
            masks,
            prgs: keys.into_iter().map(AesPrg::new).collect(),
            block_ctr: 0,
            extended: 0,
            pool: VecDeque::new(),
        })
    }

    /// Core: the rows `q_i` of `n` instances from the receiver's message (`256 · ceil(n/64)`
    /// words). Errors, without changing state, on a wrong length.
    pub fn extend_core(&mut self, n: usize, receiver_msg: &[u64]) -> Result<Vec<Row>> {
        let w = n.div_ceil(64);
        if receiver_msg.len() != CODE_BITS * w {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "KK13 message of {} words for {n} OTs, expected {}",
                    receiver_msg.len(),
                    CODE_BITS * w
                ),
            });
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut cols = vec![0u64; CODE_BITS * w];
        let mut used = 0;
        for (j, (col, prg)) in cols.chunks_exact_mut(w).zip(&self.prgs).enumerate() {
            used = prg.fill_words(self.block_ctr, col);
            if (self.s[j / 128] >> (j % 128)) & 1 == 1 {
                for (q, u) in col.iter_mut().zip(&receiver_msg[j * w..(j + 1) * w]) {
                    *q ^= u;
                }
            }
        }
        self.block_ctr += used;
        self.extended += n as u64;
        rows_of(&cols, n)
    }

    /// Core: masks all `2^l` messages of each instance with the row keys; `ceil(n 2^l w / 8)`
    /// bytes. `start` is the global index of the first instance.
    pub fn respond(
        &self,
        rows: &[Row],
        start: u64,
        msgs: &[u64],
        l: u32,
        w: u32,
    ) -> Result<Vec<u8>> {
        let n = one_of_n_instances(msgs.len(), l, w)?;
        if rows.len() != n {
            return Err(MpcError::InvalidArgument {
                what: format!("{} KK13 rows for {n} instances", rows.len()),
            });
        }
        let rows: Vec<(u64, Row, u8)> = rows
            .iter()
            .enumerate()
            .map(|(i, q)| (start + i as u64, *q, 0u8))
            .collect();
        Ok(self.mask_messages(&rows, msgs, l, w))
    }

    /// Masks message `x` of each instance `(index, q, e)` with `H(index, q ⊕ (C(x ⊕ e) ∧ s))`.
    /// Large batches are hashed on rayon's pool, 64 instances per task (whose packed output is
    /// a whole number of words, so the parts concatenate).
    fn mask_messages(&self, rows: &[(u64, Row, u8)], msgs: &[u64], l: u32, w: u32) -> Vec<u8> {
        const GROUP: usize = 64;
        let big_n = 1usize << l;
        let group = |(rs, ms): (&[(u64, Row, u8)], &[u64])| {
            let mut out = BitWriter::new(w, ms.len());
            for ((index, q, e), inst) in rs.iter().zip(ms.chunks_exact(big_n)) {
                for (x, m) in inst.iter().enumerate() {
                    let cm = &self.masks[x ^ usize::from(*e)];
                    let key = row_hash(*index, &[q[0] ^ cm[0], q[1] ^ cm[1]]);
                    out.push(m ^ key as u64);
                }
            }
            out.into_words()
        };
        let parts: Vec<Vec<u64>> = if rows.len() >= 16 * GROUP {
            rows.par_chunks(GROUP)
                .zip(msgs.par_chunks(GROUP * big_n))
                .map(group)
                .collect()
        } else {
            rows.chunks(GROUP)
                .zip(msgs.chunks(GROUP * big_n))
                .map(group)
                .collect()
        };
        let words: Vec<u64> = parts.concat();
        let mut out: Vec<u8> = bytemuck::cast_slice(&words).to_vec();
        out.truncate(packed_len(msgs.len(), w));
        out
    }

    /// Driver: `n = msgs.len() / 2^l` 1-out-of-`2^l` OTs of `w`-bit messages (`l` in
    /// `1..=8`, `w` in `1..=64`), extended now. Cost: [`extend_cost`].
    pub fn send<C: Channel>(&mut self, ch: &mut C, msgs: &[u64], l: u32, w: u32) -> Result<()> {
        let n = one_of_n_instances(msgs.len(), l, w)?;
        let start = self.extended;
        let rows = self.extend_rows(ch, n)?;
        let y = self.respond(&rows, start, msgs, l, w)?;
        if n > 0 {
            ch.send_bytes(&y)?;
            ch.flush()?;
        }
        Ok(())
    }

    fn extend_rows<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(n);
        let mut left = n;
        while left > 0 {
            let m = left.min(KK_CHUNK);
            let msg = ch.recv_u64s_max(CODE_BITS * m.div_ceil(64))?;
            rows.extend(self.extend_core(m, &msg)?);
            left -= m;
        }
        Ok(rows)
    }

    /// Offline phase: extends `n` instances with the receiver's random choices into the pool
    /// (the receiver calls [`KkReceiver::precompute`]). Cost: [`precompute_cost`].
    pub fn precompute<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        let start = self.extended;
        let rows = self.extend_rows(ch, n)?;
        self.pool.extend((start..).zip(rows));
        Ok(())
    }

    /// Instances waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// Online phase: 1-out-of-`2^l` OTs from pooled instances: receives one byte per instance
    /// (the receiver's choice xor its random choice) and sends the masked messages.
    /// Cost: [`pooled_cost`]. Errors if fewer than `n` instances are pooled.
    pub fn send_pooled<C: Channel>(
        &mut self,
        ch: &mut C,
        msgs: &[u64],
        l: u32,
        w: u32,
    ) -> Result<()> {
        let n = one_of_n_instances(msgs.len(), l, w)?;
        if self.pool.len() < n {
            return Err(MpcError::InvalidArgument {
                what: format!("{n} KK13 instances asked, {} pooled", self.pool.len()),
            });
        }
        // a longer message is refused before it is read, as a wrong length like a shorter one
        let e = match ch.recv_bytes_max(n) {
            Err(TransportError::TooLong { len, .. }) => {
                return Err(MpcError::InvalidPeerData {
                    what: format!("KK13 choice message of {len} bytes, expected {n}"),
                })
            }
            other => other?,
        };
        if e.len() != n {
            return Err(MpcError::InvalidPeerData {
                what: format!("KK13 choice message of {} bytes, expected {n}", e.len()),
            });
        }
        let rows: Vec<(u64, Row)> = self.pool.drain(..n).collect();
        let rows: Vec<(u64, Row, u8)> = rows
            .into_iter()
            .zip(e)
            .map(|((i, q), e)| (i, q, e))
            .collect();
        let y = self.mask_messages(&rows, msgs, l, w);
        ch.send_bytes(&y)?;
        ch.flush()?;
        Ok(())
    }
}

/// The KK13 receiver (holds the choices): its 256 seed pairs.
pub struct KkReceiver {
    prgs: Vec<[AesPrg; 2]>,
    block_ctr: u64,
    /// Rows extended so far: the hash index of the next one.
    extended: u64,
    rng: Prg,
    pool: VecDeque<(u64, u8, Row)>,
}

impl std::fmt::Debug for KkReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KkReceiver")
            .field("extended", &self.extended)
            .field("pooled", &self.pool.len())
            .finish_non_exhaustive()
    }
}

impl KkReceiver {
    /// Setup from 256 random OTs in which this party is the COT sender. The random choices of
    /// precomputed instances are drawn from a PRG seeded by the operating system.
    pub fn setup<S: CotSender, C: Channel>(cot: &mut S, ch: &mut C) -> Result<Self> {
        Self::setup_with_rng(cot, ch, &mut Prg::from_entropy())
    }

    /// As [`KkReceiver::setup`], with `rng` seeding the random choices of precomputed
    /// instances (for reproducible runs).
    pub fn setup_with_rng<S: CotSender, C: Channel, R: RngCore + CryptoRng>(
        cot: &mut S,
        ch: &mut C,
        rng: &mut R,
    ) -> Result<Self> {
        let keys = cot.send_rot(ch, CODE_BITS)?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Ok(Self {
            prgs: keys
                .into_iter()
                .map(|[k0, k1]| [AesPrg::new(k0), AesPrg::new(k1)])
                .collect(),
            block_ctr: 0,
            extended: 0,
            rng: Prg::from_seed(seed),
            pool: VecDeque::new(),
        })
    }

    /// Core: for choices `r_i < 2^l`, the message for the sender (`256 · ceil(n/64)` words) and
    /// the rows `t_i`.
    pub fn extend_core(&mut self, choices: &[u8]) -> Result<(Vec<u64>, Vec<Row>)> {
        let n = choices.len();
        if n == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let w = n.div_ceil(64);
        // Bit-columns of the choices, then the code columns C(r)_j = xor of the bit-columns
        // selected by the bits of j (each from a smaller j with one more bit).
        let mut bitcols = vec![0u64; 8 * w];
        for (i, &r) in choices.iter().enumerate() {
            for k in 0..8 {
                bitcols[k * w + i / 64] |= u64::from((r >> k) & 1) << (i % 64);
            }
        }
        let mut code = vec![0u64; CODE_BITS * w];
        for j in 1..CODE_BITS {
            let low = j.trailing_zeros() as usize;
            let prev = j & (j - 1);
            for x in 0..w {
                code[j * w + x] = code[prev * w + x] ^ bitcols[low * w + x];
            }
        }
        let mut tcols = vec![0u64; CODE_BITS * w];
        let mut u = code;
        let mut g1 = vec![0u64; w];
        let mut used = 0;
        for ((tcol, ucol), [p0, p1]) in tcols
            .chunks_exact_mut(w)
            .zip(u.chunks_exact_mut(w))
            .zip(&self.prgs)
        {
            p0.fill_words(self.block_ctr, tcol);
            used = p1.fill_words(self.block_ctr, &mut g1);
            for ((x, t), g) in ucol.iter_mut().zip(tcol.iter()).zip(&g1) {
                *x ^= t ^ g;
            }
        }
        self.block_ctr += used;
        self.extended += n as u64;
        Ok((u, rows_of(&tcols, n)?))
    }

    /// Core: unmasks the chosen message of each instance. `start` as in
    /// [`KkSender::respond`].
    pub fn finish(
        &self,
        rows: &[Row],
        start: u64,
        choices: &[u8],
        y_msg: &[u8],
        l: u32,
        w: u32,
    ) -> Result<Vec<u64>> {
        check_one_of_n(choices, l, w)?;
        if rows.len() != choices.len() {
            return Err(MpcError::InvalidArgument {
                what: format!("{} KK13 rows for {} choices", rows.len(), choices.len()),
            });
        }
        let big_n = 1usize << l;
        let y = unpack(y_msg, choices.len() * big_n, w, "KK13 masked messages")?;
        let mask = low_mask(w);
        Ok(rows
            .iter()
            .zip(choices)
            .zip(y.chunks_exact(big_n))
            .enumerate()
            .map(|(i, ((t, &v), inst))| {
                let key = row_hash(start + i as u64, t);
                (inst[usize::from(v)] ^ key as u64) & mask
            })
            .collect())
    }

    /// Driver: receives message `choices[i]` of each instance, extended now.
    /// Cost: [`extend_cost`].
    pub fn receive<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[u8],
        l: u32,
        w: u32,
    ) -> Result<Vec<u64>> {
        check_one_of_n(choices, l, w)?;
        if choices.is_empty() {
            return Ok(Vec::new());
        }
        let start = self.extended;
        let rows = self.extend_rows(ch, choices)?;
        let y = ch.recv_bytes_max(((choices.len() << l) * w as usize).div_ceil(8))?;
        self.finish(&rows, start, choices, &y, l, w)
    }

    fn extend_rows<C: Channel>(&mut self, ch: &mut C, choices: &[u8]) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(choices.len());
        for chunk in choices.chunks(KK_CHUNK) {
            let (msg, t) = self.extend_core(chunk)?;
            ch.send_u64s(&msg)?;
            rows.extend(t);
        }
        ch.flush()?;
        Ok(rows)
    }

    /// Offline phase: extends `n` instances with uniform random choices in `0..256` into the
    /// pool (the sender calls [`KkSender::precompute`]). Cost: [`precompute_cost`].
    pub fn precompute<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        let mut r = vec![0u8; n];
        self.rng.fill_bytes(&mut r);
        let start = self.extended;
        let rows = self.extend_rows(ch, &r)?;
        self.pool
            .extend((start..).zip(r).zip(rows).map(|((i, r), t)| (i, r, t)));
        Ok(())
    }

    /// Instances waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// Online phase: receives message `choices[i]` of each instance from pooled instances,
    /// sending `choices[i] ⊕ r_i` (one byte; its high bits are those of the random `r_i`, which
    /// are independent of the choice). Cost: [`pooled_cost`]. Errors if fewer than
    /// `choices.len()` instances are pooled.
    pub fn receive_pooled<C: Channel>(
        &mut self,
        ch: &mut C,
        choices: &[u8],
        l: u32,
        w: u32,
    ) -> Result<Vec<u64>> {
        check_one_of_n(choices, l, w)?;
        let n = choices.len();
        if self.pool.len() < n {
            return Err(MpcError::InvalidArgument {
                what: format!("{n} KK13 instances asked, {} pooled", self.pool.len()),
            });
        }
        let entries: Vec<(u64, u8, Row)> = self.pool.drain(..n).collect();
        let e: Vec<u8> = entries
            .iter()
            .zip(choices)
            .map(|((_, r, _), v)| r ^ v)
            .collect();
        ch.send_bytes(&e)?;
        ch.flush()?;
        let big_n = 1usize << l;
        let y = ch.recv_bytes_max((n * big_n * w as usize).div_ceil(8))?;
        let y = unpack(&y, n * big_n, w, "KK13 masked messages")?;
        let mask = low_mask(w);
        Ok(entries
            .iter()
            .zip(choices)
            .zip(y.chunks_exact(big_n))
            .map(|(((index, _, t), &v), inst)| {
                (inst[usize::from(v)] ^ row_hash(*index, t) as u64) & mask
            })
            .collect())
    }
}
