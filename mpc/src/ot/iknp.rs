//! IKNP OT extension (Ishai, Kilian, Nissim, Petrank, Crypto 2003) to correlated OT.
//!
//! Setup: 128 base OTs in the reverse direction ([`super::base`]): the extension receiver is the
//! base-OT sender with seed pairs `(k_j^0, k_j^1)`, the extension sender is the base-OT receiver
//! choosing with the bits `s_j` of its `Δ` and learning `k_j^{s_j}`.
//!
//! Extension of `n` COTs with receiver choices `r` (`w = ceil(n/64)` words per column):
//! the receiver computes columns `t_j = G(k_j^0)` and sends `u_j = t_j ⊕ G(k_j^1) ⊕ r`
//! (`G` = AES-CTR keyed by the seed, [`AesPrg`], the streams continuing across calls); the sender
//! computes `q_j = G(k_j^{s_j}) ⊕ s_j·u_j = t_j ⊕ s_j·r`. Transposing the 128 x n bit
//! matrices gives rows with `t_i = q_i ⊕ r_i·Δ`.
//!
//! Security: semi-honest, 128-bit (AES as a PRG and the base OT), for any number of COTs;
//! the receiver's message is a one-time pad of its choices under PRG output the sender lacks.
//! The outputs are correlated, not random: hash them ([`super::rot`]) before using them as keys.
//!
//! Cost: receiver → sender `8 · 128 · ceil(m/64)` bytes per chunk of `m <= CHUNK` COTs (16 bytes
//! per COT when `m` is a multiple of 64), one message per chunk, one flight; nothing back. See
//! [`extend_cost`]. Compute: the receiver stretches 256 seeds and the sender 128 (one AES block
//! per 128 bits each), then both transpose.

#![expect(
    clippy::indexing_slicing,
    reason = "column slices j*w..(j+1)*w with j < 128 of buffers of 128*w words"
)]

use super::aes::AesPrg;
use super::base::{base_ot_cost, simplest_ot_receive, SessionId, SimplestOtSender};
use super::bits::words_to_bools;
use super::transpose::transpose_128xn_into;
use super::{Block, CotReceiver, CotSender, OtCost, OtSide, Traffic, PAR_MIN_WORDS};
use crate::{MpcError, Prg, Result};
use duet_transport::Channel;
use rand::{CryptoRng, RngCore};
use rayon::prelude::*;
use std::collections::VecDeque;

/// Number of base OTs and width of the correlation: the computational security parameter.
pub const KAPPA: usize = 128;

/// COTs per extension message: larger batches are split so that the two parties overlap their
/// work and memory stays bounded (1 MiB per message).
pub const CHUNK: usize = 1 << 16;

/// The exact cost of extending `n` COTs (all sent by the receiver).
pub fn extend_cost(n: usize) -> OtCost {
    let full = n / CHUNK;
    let rest = n % CHUNK;
    let words = full * KAPPA * (CHUNK / 64) + KAPPA * rest.div_ceil(64);
    OtCost::one_way(
        OtSide::Receiver,
        Traffic {
            bytes: 8 * words as u64,
            messages: n.div_ceil(CHUNK) as u64,
            flights: u64::from(n > 0),
        },
    )
}

/// The exact cost of the one-direction setup (the 128 base OTs, run by
/// [`IknpSender::setup`] and [`IknpReceiver::setup`]): the extension receiver sends 32 bytes,
/// the extension sender `32 · 128 = 4096` bytes, one flight each.
pub fn setup_cost() -> OtCost {
    base_ot_cost(KAPPA).swapped()
}

/// The IKNP sender before its base OTs: it has chosen `Δ` and waits for the base-OT sender's
/// first message.
#[derive(Debug)]
pub struct IknpSenderSetup {
    delta: Block,
}

impl IknpSenderSetup {
    /// A uniform `Δ`.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut b = [0u8; 16];
        rng.fill_bytes(&mut b);
        Self::with_delta(u128::from_le_bytes(b))
    }

    /// A given `Δ` (must be uniform and secret for security; fixed values are for tests).
    pub fn with_delta(delta: Block) -> Self {
        Self { delta }
    }

    /// Runs the base-OT receiver with the bits of `Δ` as choices: returns the answer to send
    /// (4096 bytes) and the ready sender. Errors on a malformed base-OT message.
    pub fn receive_base<R: RngCore + CryptoRng>(
        self,
        rng: &mut R,
        sid: SessionId,
        base_msg: &[u8],
    ) -> Result<(Vec<u8>, IknpSender)> {
        let choices: Vec<bool> = (0..KAPPA).map(|j| (self.delta >> j) & 1 == 1).collect();
        let (msg, keys) = simplest_ot_receive(rng, sid, &choices, base_msg)?;
        let sender = IknpSender {
            delta: self.delta,
            prgs: keys.into_iter().map(AesPrg::new).collect(),
            block_ctr: 0,
            consumed: 0,
            pool: VecDeque::new(),
            scratch: Vec::new(),
        };
        Ok((msg, sender))
    }
}

/// The IKNP receiver before its base OTs: it has sent the base-OT sender's first message.
#[derive(Debug)]
pub struct IknpReceiverSetup {
    base: SimplestOtSender,
    choice_seed: crate::Seed,
}

impl IknpReceiverSetup {
    /// Starts the base OTs: returns the state and the 32-byte message to send.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R, sid: SessionId) -> (Self, [u8; 32]) {
        let (base, a) = SimplestOtSender::new(rng, sid, KAPPA);
        let mut choice_seed = [0u8; 32];
        rng.fill_bytes(&mut choice_seed);
        (Self { base, choice_seed }, a)
    }

    /// Finishes the base OTs with the sender's answer. Errors on a malformed answer.
    pub fn finish(self, base_answer: &[u8]) -> Result<IknpReceiver> {
        let keys = self.base.finish(base_answer)?;
        Ok(IknpReceiver {
            prgs: keys
                .into_iter()
                .map(|[k0, k1]| [AesPrg::new(k0), AesPrg::new(k1)])
                .collect(),
            block_ctr: 0,
            consumed: 0,
            rng: Prg::from_seed(self.choice_seed),
            pool_b: VecDeque::new(),
            pool_t: VecDeque::new(),
            scratch_t: Vec::new(),
            scratch_u: Vec::new(),
        })
    }
}

/// The IKNP sender after setup: holds `Δ`, its 128 seeds and a pool of precomputed COTs.
pub struct IknpSender {
    delta: Block,
    prgs: Vec<AesPrg>,
    block_ctr: u64,
    consumed: u64,
    pool: VecDeque<Block>,
    scratch: Vec<u64>,
}

impl std::fmt::Debug for IknpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IknpSender")
            .field("consumed", &self.consumed)
            .field("pooled", &self.pool.len())
            .finish_non_exhaustive()
    }
}

impl IknpSender {
    /// Driver: runs the base OTs as their receiver over `ch` (see [`setup_cost`]).
    pub fn setup<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        rng: &mut R,
        sid: SessionId,
    ) -> Result<Self> {
        let a = ch.recv_bytes_max(crate::ot::base::POINT_BYTES)?;
        let (msg, sender) = IknpSenderSetup::new(rng).receive_base(rng, sid, &a)?;
        ch.send_bytes(&msg)?;
        ch.flush()?;
        Ok(sender)
    }

    /// Core: the `n` COTs `q_i` from the receiver's message (`128 · ceil(n/64)` words).
    /// Errors, without changing state, if the message has the wrong length.
    pub fn extend_core(&mut self, n: usize, receiver_msg: &[u64]) -> Result<Vec<Block>> {
        let mut out = vec![0u128; n];
        self.extend_core_into(receiver_msg, &mut out)?;
        Ok(out)
    }

    /// Core: as [`IknpSender::extend_core`] for `n = out.len()`, writing into `out` and
    /// reusing internal scratch space.
    pub fn extend_core_into(&mut self, receiver_msg: &[u64], out: &mut [Block]) -> Result<()> {
        let n = out.len();
        let w = n.div_ceil(64);
        if receiver_msg.len() != KAPPA * w {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "IKNP message of {} words for {n} OTs, expected {}",
                    receiver_msg.len(),
                    KAPPA * w
                ),
            });
        }
        if n == 0 {
            return Ok(());
        }
        let Self {
            delta,
            prgs,
            block_ctr,
            scratch,
            ..
        } = self;
        if scratch.len() < KAPPA * w {
            scratch.resize(KAPPA * w, 0);
        }
        let cols = &mut scratch[..KAPPA * w];
        let (ctr, delta) = (*block_ctr, *delta);
        let column = |(j, (col, prg)): (usize, (&mut [u64], &AesPrg))| {
            prg.fill_words(ctr, col);
            if (delta >> j) & 1 == 1 {
                for (q, u) in col.iter_mut().zip(&receiver_msg[j * w..(j + 1) * w]) {
                    *q ^= u;
                }
            }
        };
        if w >= PAR_MIN_WORDS {
            cols.par_chunks_exact_mut(w)
                .zip(prgs.par_iter())
                .enumerate()
                .for_each(column);
        } else {
            cols.chunks_exact_mut(w)
                .zip(prgs.iter())
                .enumerate()
                .for_each(column);
        }
        *block_ctr += w.div_ceil(2) as u64;
        transpose_128xn_into(cols, out)
    }

    /// Driver: extends `n` fresh COTs (bypassing the pool), receiving `ceil(n / CHUNK)`
    /// messages. Cost: [`extend_cost`]`(n)`.
    pub fn extend<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<Block>> {
        let mut out = vec![0u128; n];
        for chunk in out.chunks_mut(CHUNK) {
            // the receiver's message: KAPPA columns of ceil(len / 64) words
            let msg = ch.recv_u64s_max(KAPPA * chunk.len().div_ceil(64))?;
            self.extend_core_into(&msg, chunk)?;
        }
        Ok(out)
    }

    /// Offline phase: extends `n` COTs into the pool, to be consumed by later calls.
    /// Cost: [`extend_cost`]`(n)`; the receiver must call [`IknpReceiver::precompute`]`(n)`.
    pub fn precompute<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        let fresh = self.extend(ch, n)?;
        self.pool.extend(fresh);
        Ok(())
    }

    /// COTs waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }
}

impl CotSender for IknpSender {
    fn delta(&self) -> Block {
        self.delta
    }

    fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes from the pool first and extends the shortfall (cost [`extend_cost`] of it).
    fn send_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<Block>> {
        let from_pool = n.min(self.pool.len());
        let out = if from_pool == 0 {
            self.extend(ch, n)?
        } else {
            let mut out: Vec<Block> = self.pool.drain(..from_pool).collect();
            if from_pool < n {
                out.extend(self.extend(ch, n - from_pool)?);
            }
            out
        };
        self.consumed += n as u64;
        Ok(out)
    }

    fn cot_cost(&self, n: usize) -> OtCost {
        extend_cost(n.saturating_sub(self.pool.len()))
    }
}

/// The IKNP receiver after setup: holds its 128 seed pairs, a PRG for random choices and a
/// pool of precomputed COTs.
pub struct IknpReceiver {
    prgs: Vec<[AesPrg; 2]>,
    block_ctr: u64,
    consumed: u64,
    rng: Prg,
    pool_b: VecDeque<bool>,
    pool_t: VecDeque<Block>,
    scratch_t: Vec<u64>,
    scratch_u: Vec<u64>,
}

impl std::fmt::Debug for IknpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IknpReceiver")
            .field("consumed", &self.consumed)
            .field("pooled", &self.pool_t.len())
            .finish_non_exhaustive()
    }
}

impl IknpReceiver {
    /// Driver: runs the base OTs as their sender over `ch` (see [`setup_cost`]).
    pub fn setup<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        rng: &mut R,
        sid: SessionId,
    ) -> Result<Self> {
        let (state, a) = IknpReceiverSetup::new(rng, sid);
        ch.send_bytes(&a)?;
        ch.flush()?;
        let answer = ch.recv_bytes_max(crate::ot::base::POINT_BYTES * KAPPA)?;
        state.finish(&answer)
    }

    /// Core: `n` COTs with choices packed in `ceil(n/64)` words (bit `i` of the choices is bit
    /// `i % 64` of word `i / 64`). Returns the message for the sender (`128 · ceil(n/64)` words)
    /// and the `t_i`.
    pub fn extend_core(&mut self, choices: &[u64], n: usize) -> Result<(Vec<u64>, Vec<Block>)> {
        let mut out = vec![0u128; n];
        let msg = self.extend_core_into(choices, &mut out)?.to_vec();
        Ok((msg, out))
    }

    /// Core: as [`IknpReceiver::extend_core`] for `n = out.len()`, writing the `t_i` into
    /// `out` and returning the message from internal scratch space.
    pub fn extend_core_into(&mut self, choices: &[u64], out: &mut [Block]) -> Result<&[u64]> {
        let n = out.len();
        let w = n.div_ceil(64);
        if choices.len() != w {
            return Err(MpcError::InvalidArgument {
                what: format!("{} choice words for {n} OTs, expected {w}", choices.len()),
            });
        }
        let Self {
            prgs,
            block_ctr,
            scratch_t,
            scratch_u,
            ..
        } = self;
        if n == 0 {
            return Ok(&scratch_u[..0]);
        }
        for buf in [&mut *scratch_t, &mut *scratch_u] {
            if buf.len() < KAPPA * w {
                buf.resize(KAPPA * w, 0);
            }
        }
        let tcols = &mut scratch_t[..KAPPA * w];
        let u = &mut scratch_u[..KAPPA * w];
        let ctr = *block_ctr;
        let column = |((tcol, ucol), [p0, p1]): ((&mut [u64], &mut [u64]), &[AesPrg; 2])| {
            p0.fill_words(ctr, tcol);
            p1.fill_words(ctr, ucol);
            for ((x, t), r) in ucol.iter_mut().zip(tcol.iter()).zip(choices) {
                *x ^= t ^ r;
            }
        };
        if w >= PAR_MIN_WORDS {
            tcols
                .par_chunks_exact_mut(w)
                .zip(u.par_chunks_exact_mut(w))
                .zip(prgs.par_iter())
                .for_each(column);
        } else {
            tcols
                .chunks_exact_mut(w)
                .zip(u.chunks_exact_mut(w))
                .zip(prgs.iter())
                .for_each(column);
        }
        *block_ctr += w.div_ceil(2) as u64;
        transpose_128xn_into(tcols, out)?;
        Ok(u)
    }

    /// Driver: `n` fresh COTs with the given choices (bypassing the pool).
    /// Cost: [`extend_cost`]`(n)`.
    pub fn extend<C: Channel>(&mut self, ch: &mut C, choices: &[bool]) -> Result<Vec<Block>> {
        let mut out = vec![0u128; choices.len()];
        for (chunk, t) in choices.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            let mut words = vec![0u64; chunk.len().div_ceil(64)];
            for (i, &b) in chunk.iter().enumerate() {
                words[i / 64] |= u64::from(b) << (i % 64);
            }
            let msg = self.extend_core_into(&words, t)?;
            ch.send_u64s(msg)?;
        }
        ch.flush()?;
        Ok(out)
    }

    /// Driver: `n` fresh COTs with uniform choices (bypassing the pool).
    /// Cost: [`extend_cost`]`(n)`.
    pub fn extend_random<C: Channel>(
        &mut self,
        ch: &mut C,
        n: usize,
    ) -> Result<(Vec<bool>, Vec<Block>)> {
        let mut bits = Vec::with_capacity(n);
        let mut out = vec![0u128; n];
        for t in out.chunks_mut(CHUNK) {
            let mut words = vec![0u64; t.len().div_ceil(64)];
            self.rng.fill_bytes(bytemuck::cast_slice_mut(&mut words));
            bits.extend(words_to_bools(&words, t.len()));
            let msg = self.extend_core_into(&words, t)?;
            ch.send_u64s(msg)?;
        }
        ch.flush()?;
        Ok((bits, out))
    }

    /// Offline phase: extends `n` COTs with random choices into the pool.
    /// Cost: [`extend_cost`]`(n)`; the sender must call [`IknpSender::precompute`]`(n)`.
    pub fn precompute<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        let (b, t) = self.extend_random(ch, n)?;
        self.pool_b.extend(b);
        self.pool_t.extend(t);
        Ok(())
    }

    /// COTs waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool_t.len()
    }
}

impl CotReceiver for IknpReceiver {
    fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes from the pool first and extends the shortfall (cost [`extend_cost`] of it).
    fn recv_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<(Vec<bool>, Vec<Block>)> {
        let from_pool = n.min(self.pool_t.len());
        let (b, t) = if from_pool == 0 {
            self.extend_random(ch, n)?
        } else {
            let mut b: Vec<bool> = self.pool_b.drain(..from_pool).collect();
            let mut t: Vec<Block> = self.pool_t.drain(..from_pool).collect();
            if from_pool < n {
                let (b2, t2) = self.extend_random(ch, n - from_pool)?;
                b.extend(b2);
                t.extend(t2);
            }
            (b, t)
        };
        self.consumed += n as u64;
        Ok((b, t))
    }

    fn cot_cost(&self, n: usize) -> OtCost {
        extend_cost(n.saturating_sub(self.pool_t.len()))
    }
}
