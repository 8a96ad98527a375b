//! The Ferret COT sources: drivers over a [`Channel`], the pool and the cost formulas.

use super::mpcot::{self, ReceiverIter, SenderIter, NOT_LSB};
use super::params::{FerretParams, LpnParams};
use crate::ot::{Block, CotReceiver, CotSender, OtCost, OtPair, OtSide, Traffic};
use crate::{MpcError, Prg, Result};
use duet_transport::{Channel, Role};
use rand::{CryptoRng, RngCore};

/// The exact traffic of one iteration with `p`: the receiver's choice bits
/// (`ceil(t·h/8)` bytes, one message), then the sender's trees (`t · (2h + 1) · 16` bytes in
/// `ceil(t / 128)` messages). For [`FerretParams::B13`]'s main set: 2,080 + 552,960 bytes.
pub fn iteration_cost(p: &LpnParams) -> OtCost {
    OtCost::request_response(
        OtSide::Receiver,
        Traffic {
            bytes: mpcot::choice_msg_len(p) as u64,
            messages: 1,
            flights: 1,
        },
        Traffic {
            bytes: mpcot::sender_bytes(p) as u64,
            messages: mpcot::chunks(p) as u64,
            flights: 1,
        },
    )
}

/// The traffic of the bootstrapping part of the setup, after the base COTs: the sender's
/// `Δ` conversion message (16 bytes per base COT) and the setup iteration.
pub fn bootstrap_cost(params: &FerretParams) -> OtCost {
    let m0 = params.setup().base_cots();
    OtCost::one_way(
        OtSide::Sender,
        Traffic {
            bytes: 16 * m0 as u64,
            messages: 1,
            flights: 1,
        },
    ) + iteration_cost(&params.setup())
}

/// The exact traffic of `n` more COTs when `pooled` are waiting: zero if they suffice, else
/// one main iteration per `params.cots_per_iteration()` missing COTs.
fn pool_cost(params: &FerretParams, pooled: usize, n: usize) -> OtCost {
    (0..missing_iterations(params, pooled, n)).fold(OtCost::default(), |acc, _| {
        acc + iteration_cost(&params.main())
    })
}

/// The pool's size after [`FerretSender::reserve`]`(n)` from `pooled` COTs: allocated once
/// up front, so the pool does not grow by doubling (each growth copied it into fresh pages:
/// with GELU's 46.8 M COTs, a third of the COT generation's time went to the kernel zeroing
/// those pages and to the copies).
fn reserve_capacity(params: &FerretParams, pooled: usize, n: usize) -> usize {
    missing_iterations(params, pooled, n)
        .saturating_mul(params.cots_per_iteration())
        .saturating_add(pooled)
}

/// Main iterations needed to have `n` COTs pooled when `pooled` are.
fn missing_iterations(params: &FerretParams, pooled: usize, n: usize) -> usize {
    n.saturating_sub(pooled)
        .div_ceil(params.cots_per_iteration().max(1))
}

/// Random 128-bit block.
fn random_block<R: RngCore>(rng: &mut R) -> Block {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    u128::from_le_bytes(b)
}

/// The pool of one party: the last iteration's outputs after the reserved prefix.
#[derive(Default)]
struct Pool {
    buf: Vec<Block>,
    pos: usize,
}

impl Pool {
    fn available(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Appends up to `n` pooled blocks to `out`; returns how many.
    fn take(&mut self, n: usize, out: &mut Vec<Block>) -> usize {
        let take = n.min(self.available());
        if let Some(s) = self.buf.get(self.pos..self.pos + take) {
            out.extend_from_slice(s);
        }
        self.pos += take;
        take
    }
}

/// Splits an iteration's output into the reserved base COTs of the next iteration (the first
/// `m`) and the pool (the rest).
fn split_output(out: Vec<Block>, m: usize, base: &mut Vec<Block>) -> Result<Pool> {
    let reserved = out.get(..m).ok_or_else(|| MpcError::InvalidArgument {
        what: format!("iteration output of {} COTs, {m} to reserve", out.len()),
    })?;
    base.clear();
    base.extend_from_slice(reserved);
    Ok(Pool { buf: out, pos: m })
}

/// The Ferret COT sender: holds `Δ` (lsb 1), the reserved base COTs of its next iteration and
/// a pool of COTs; implements [`CotSender`]. See the [module documentation](super).
pub struct FerretSender {
    params: FerretParams,
    delta: Block,
    rng: Prg,
    iter: u64,
    base: Vec<Block>,
    pool: Pool,
    consumed: u64,
}

impl std::fmt::Debug for FerretSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FerretSender")
            .field("params", &self.params)
            .field("iterations", &self.iter)
            .field("consumed", &self.consumed)
            .field("pooled", &self.pool.available())
            .finish_non_exhaustive()
    }
}

impl FerretSender {
    /// Setup: takes `params.setup().base_cots()` random OTs from `base` (e.g. an
    /// [`IknpSender`](crate::ot::IknpSender)), turns them into COTs under a fresh `Δ` with lsb 1
    /// (sending `k⁰ ⊕ k¹ ⊕ Δ` for each), runs the setup iteration and keeps its output: the
    /// first `params.main().base_cots()` as the next iteration's base, the rest pooled.
    /// The peer runs [`FerretReceiver::setup`]. Cost: [`FerretSender::setup_cost`].
    pub fn setup<C: Channel, S: CotSender, R: RngCore + CryptoRng>(
        ch: &mut C,
        base: &mut S,
        params: FerretParams,
        rng: &mut R,
    ) -> Result<Self> {
        let delta = random_block(rng) | 1;
        let m0 = params.setup().base_cots();
        let keys = base.send_rot(ch, m0)?;
        let mut msg = Vec::with_capacity(16 * m0);
        let mut base0 = Vec::with_capacity(m0);
        for [k0, k1] in keys {
            msg.extend_from_slice(&(k0 ^ k1 ^ delta).to_le_bytes());
            base0.push(k0 & NOT_LSB);
        }
        ch.send_bytes(&msg)?;
        ch.flush()?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut s = Self {
            params,
            delta,
            rng: Prg::from_seed(seed),
            iter: 0,
            base: Vec::new(),
            pool: Pool::default(),
            consumed: 0,
        };
        let out = s.iteration(ch, &params.setup(), &base0)?;
        s.pool = split_output(out, params.main().base_cots(), &mut s.base)?;
        Ok(s)
    }

    /// The exact traffic of [`FerretSender::setup`] over `base` in its current state:
    /// `base.cot_cost(m0)` (`m0 = params.setup().base_cots()`) + [`bootstrap_cost`].
    pub fn setup_cost<S: CotSender>(base: &S, params: &FerretParams) -> OtCost {
        base.cot_cost(params.setup().base_cots()) + bootstrap_cost(params)
    }

    /// One iteration on `base`: returns its `p.n` outputs.
    fn iteration<C: Channel>(
        &mut self,
        ch: &mut C,
        p: &LpnParams,
        base: &[Block],
    ) -> Result<Vec<Block>> {
        let choice = ch.recv_bytes_max(mpcot::choice_msg_len(p))?;
        let seeds = (0..p.t).map(|_| random_block(&mut self.rng)).collect();
        let it = SenderIter::new(*p, self.delta, self.iter, base, seeds, &choice)?;
        // Every position is overwritten by its tree: the old pool's allocation is reused.
        let mut out = std::mem::take(&mut self.pool).buf;
        out.resize(p.n, 0);
        for c in 0..mpcot::chunks(p) {
            let msg = it.chunk(c, &mut out);
            ch.send_bytes(&msg)?;
        }
        ch.flush()?;
        it.finish(&mut out);
        self.iter += 1;
        Ok(out)
    }

    /// Runs one main iteration now, replacing the pool (pooled COTs left are dropped; call
    /// when the pool is empty to lose none). Cost: [`iteration_cost`] of the main set.
    pub fn refill<C: Channel>(&mut self, ch: &mut C) -> Result<()> {
        let base = std::mem::take(&mut self.base);
        let p = self.params.main();
        let out = self.iteration(ch, &p, &base)?;
        self.base = base;
        self.pool = split_output(out, p.base_cots(), &mut self.base)?;
        Ok(())
    }

    /// Makes sure at least `n` COTs are pooled, running as many main iterations as needed now
    /// and keeping the COTs already pooled (none is handed out twice or dropped). The peer
    /// calls the same on its half with the same `n`. Cost: [`Self::reserve_cost`].
    pub fn reserve<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        if self.pool.available() >= n {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(reserve_capacity(&self.params, self.pool.available(), n));
        self.pool.take(self.pool.available(), &mut kept);
        while kept.len() < n {
            self.refill(ch)?;
            self.pool.take(self.pool.available(), &mut kept);
        }
        self.pool = Pool { buf: kept, pos: 0 };
        Ok(())
    }

    /// The exact traffic of [`Self::reserve`]`(n)` in the current state: one main iteration
    /// per missing [`FerretParams::cots_per_iteration`] (zero if `n` are pooled).
    pub fn reserve_cost(&self, n: usize) -> OtCost {
        pool_cost(&self.params, self.pool.available(), n)
    }

    /// COTs waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.available()
    }

    /// Iterations run so far (the setup iteration included).
    pub fn iterations(&self) -> u64 {
        self.iter
    }

    /// The parameters.
    pub fn params(&self) -> &FerretParams {
        &self.params
    }
}

impl CotSender for FerretSender {
    fn delta(&self) -> Block {
        self.delta
    }

    fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Hands out pooled COTs; when the pool runs dry, runs main iterations (each refilling
    /// the pool) until `n` are served. The sender's `q_j` have lsb 0.
    fn send_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<Vec<Block>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pool.available() == 0 {
                self.refill(ch)?;
            }
            self.pool.take(n - out.len(), &mut out);
        }
        self.consumed += n as u64;
        Ok(out)
    }

    /// Zero when the pool holds `n`; else the main iterations `send_cot(n)` runs.
    fn cot_cost(&self, n: usize) -> OtCost {
        pool_cost(&self.params, self.pool.available(), n)
    }
}

/// The Ferret COT receiver: holds the reserved base COTs of its next iteration and a pool of
/// COTs whose choice bit is the lsb of `t_j`; implements [`CotReceiver`].
pub struct FerretReceiver {
    params: FerretParams,
    rng: Prg,
    iter: u64,
    base: Vec<Block>,
    pool: Pool,
    consumed: u64,
}

impl std::fmt::Debug for FerretReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FerretReceiver")
            .field("params", &self.params)
            .field("iterations", &self.iter)
            .field("consumed", &self.consumed)
            .field("pooled", &self.pool.available())
            .finish_non_exhaustive()
    }
}

impl FerretReceiver {
    /// Setup, the peer of [`FerretSender::setup`]: random OTs from `base` (e.g. an
    /// [`IknpReceiver`](crate::ot::IknpReceiver)), converted to COTs under the sender's `Δ`
    /// with the receiver's choice bit in the lsb, then the setup iteration. Errors on a
    /// malformed sender message. Cost: [`FerretReceiver::setup_cost`].
    pub fn setup<C: Channel, S: CotReceiver, R: RngCore + CryptoRng>(
        ch: &mut C,
        base: &mut S,
        params: FerretParams,
        rng: &mut R,
    ) -> Result<Self> {
        let m0 = params.setup().base_cots();
        let (bits, keys) = base.recv_rot(ch, m0)?;
        let msg = ch.recv_bytes_max(16 * m0)?;
        if msg.len() != 16 * m0 || bits.len() != m0 || keys.len() != m0 {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "Ferret setup message of {} bytes, expected {}",
                    msg.len(),
                    16 * m0
                ),
            });
        }
        let base0: Vec<Block> = msg
            .chunks_exact(16)
            .zip(bits.iter().zip(&keys))
            .map(|(d, (&b, &k))| {
                let mut d16 = [0u8; 16];
                d16.copy_from_slice(d);
                let d = u128::from_le_bytes(d16);
                let t = if b { k ^ d } else { k };
                (t & NOT_LSB) | Block::from(b)
            })
            .collect();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut s = Self {
            params,
            rng: Prg::from_seed(seed),
            iter: 0,
            base: Vec::new(),
            pool: Pool::default(),
            consumed: 0,
        };
        let out = s.iteration(ch, &params.setup(), &base0)?;
        s.pool = split_output(out, params.main().base_cots(), &mut s.base)?;
        Ok(s)
    }

    /// The exact traffic of [`FerretReceiver::setup`] over `base` in its current state.
    pub fn setup_cost<S: CotReceiver>(base: &S, params: &FerretParams) -> OtCost {
        base.cot_cost(params.setup().base_cots()) + bootstrap_cost(params)
    }

    fn iteration<C: Channel>(
        &mut self,
        ch: &mut C,
        p: &LpnParams,
        base: &[Block],
    ) -> Result<Vec<Block>> {
        let mask = p.bin_size() - 1;
        let alphas = (0..p.t)
            .map(|_| (self.rng.next_u64() as usize) & mask)
            .collect();
        let (it, choice) = ReceiverIter::new(*p, self.iter, base, alphas)?;
        ch.send_bytes(&choice)?;
        ch.flush()?;
        // Every position is overwritten by its tree: the old pool's allocation is reused.
        let mut out = std::mem::take(&mut self.pool).buf;
        out.resize(p.n, 0);
        for c in 0..mpcot::chunks(p) {
            let msg = ch.recv_bytes_max(mpcot::chunk_msg_len(p, c))?;
            it.chunk(c, &msg, &mut out)?;
        }
        it.finish(&mut out);
        self.iter += 1;
        Ok(out)
    }

    /// Runs one main iteration now (see [`FerretSender::refill`]).
    pub fn refill<C: Channel>(&mut self, ch: &mut C) -> Result<()> {
        let base = std::mem::take(&mut self.base);
        let p = self.params.main();
        let out = self.iteration(ch, &p, &base)?;
        self.base = base;
        self.pool = split_output(out, p.base_cots(), &mut self.base)?;
        Ok(())
    }

    /// Makes sure at least `n` COTs are pooled, running as many main iterations as needed now
    /// and keeping the COTs already pooled (none is handed out twice or dropped). The peer
    /// calls the same on its half with the same `n`. Cost: [`Self::reserve_cost`].
    pub fn reserve<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<()> {
        if self.pool.available() >= n {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(reserve_capacity(&self.params, self.pool.available(), n));
        self.pool.take(self.pool.available(), &mut kept);
        while kept.len() < n {
            self.refill(ch)?;
            self.pool.take(self.pool.available(), &mut kept);
        }
        self.pool = Pool { buf: kept, pos: 0 };
        Ok(())
    }

    /// The exact traffic of [`Self::reserve`]`(n)` in the current state: one main iteration
    /// per missing [`FerretParams::cots_per_iteration`] (zero if `n` are pooled).
    pub fn reserve_cost(&self, n: usize) -> OtCost {
        pool_cost(&self.params, self.pool.available(), n)
    }

    /// COTs waiting in the pool.
    pub fn pooled(&self) -> usize {
        self.pool.available()
    }

    /// Iterations run so far (the setup iteration included).
    pub fn iterations(&self) -> u64 {
        self.iter
    }

    /// The parameters.
    pub fn params(&self) -> &FerretParams {
        &self.params
    }
}

impl CotReceiver for FerretReceiver {
    fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Hands out pooled COTs (choice bit = lsb of `t_j`), running main iterations as needed.
    fn recv_cot<C: Channel>(&mut self, ch: &mut C, n: usize) -> Result<(Vec<bool>, Vec<Block>)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.pool.available() == 0 {
                self.refill(ch)?;
            }
            self.pool.take(n - out.len(), &mut out);
        }
        self.consumed += n as u64;
        let bits = out.iter().map(|&t| mpcot::lsb(t)).collect();
        Ok((bits, out))
    }

    fn cot_cost(&self, n: usize) -> OtCost {
        pool_cost(&self.params, self.pool.available(), n)
    }
}

/// Both Ferret directions of a session, bootstrapped from an [`OtPair`]: this party's
/// [`FerretSender`] (the peer receives) and [`FerretReceiver`] (the peer sends).
///
/// The server sets up its sender first, then its receiver; the client the reverse, so the two
/// directions pair up over one channel.
#[derive(Debug)]
pub struct FerretPair {
    role: Role,
    sender: FerretSender,
    receiver: FerretReceiver,
}

impl FerretPair {
    /// Runs [`OtPair::setup`] and then both Ferret setups over `ch`.
    /// Cost: [`OtPair::setup_cost`] + [`FerretPair::setup_cost_after_base`].
    pub fn setup<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        role: Role,
        params: FerretParams,
        rng: &mut R,
    ) -> Result<Self> {
        let mut pair = OtPair::setup(ch, role, rng)?;
        Self::from_ot_pair(ch, &mut pair, params, rng)
    }

    /// Both Ferret setups on the IKNP directions of `pair` (which must be fresh on both sides
    /// or in matching states).
    pub fn from_ot_pair<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        pair: &mut OtPair,
        params: FerretParams,
        rng: &mut R,
    ) -> Result<Self> {
        let role = pair.role();
        let (sender, receiver) = if role == Role::Server {
            let s = FerretSender::setup(ch, pair.sender(), params, rng)?;
            let r = FerretReceiver::setup(ch, pair.receiver(), params, rng)?;
            (s, r)
        } else {
            let r = FerretReceiver::setup(ch, pair.receiver(), params, rng)?;
            let s = FerretSender::setup(ch, pair.sender(), params, rng)?;
            (s, r)
        };
        Ok(Self {
            role,
            sender,
            receiver,
        })
    }

    /// The exact traffic of the Ferret setup of one direction on a fresh IKNP direction (after
    /// [`OtPair::setup`]): the IKNP extension of the base COTs plus [`bootstrap_cost`]. The
    /// direction in which this party sends costs this; the other costs the same with the
    /// roles swapped ([`OtCost::swapped`]). For [`FerretParams::B13`]: 1,593,993 bytes.
    pub fn setup_cost_after_base(params: &FerretParams) -> OtCost {
        let m0 = params.setup().base_cots();
        crate::ot::iknp::extend_cost(m0) + bootstrap_cost(params)
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The direction in which this party is the OT sender.
    pub fn sender(&mut self) -> &mut FerretSender {
        &mut self.sender
    }

    /// The direction in which this party is the OT receiver.
    pub fn receiver(&mut self) -> &mut FerretReceiver {
        &mut self.receiver
    }

    /// Splits into the two directions.
    pub fn into_parts(self) -> (FerretSender, FerretReceiver) {
        (self.sender, self.receiver)
    }
}
