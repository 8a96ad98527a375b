//! `HeMatMulShared`: `Z = X Y` with both operands additively shared, batched over heads
//! (attention `Q K^T` and `P V`).
//!
//! # Protocol (semi-honest)
//! Per head, with `X = X_c + X_s` (`n x d`) and `Y = Y_c + Y_s` (`d x k`) in `Z_{2^l}`:
//! `XY = X_c Y_c + X_s Y_s + X_c Y_s + X_s Y_c`. The first is computed by the client, the
//! second by the server, locally. Each cross term is an [`super::HeMatMul`]-style product whose
//! server operand is its (uniform) share, so the parameters use `WeightBound::Uniform`:
//!
//! * `T1 = X_c Y_s` (`n x d x k`): the client encrypts `X_c`, the server multiplies by `Y_s` and
//!   finalizes with the plaintext `X_s Y_s - R_1` (its local product folded in);
//! * `T2 = (X_s Y_c)^T = Y_c^T X_s^T` (`k x d x n`): the client encrypts `Y_c^T`, the server
//!   multiplies by `X_s^T` and finalizes with `-R_2`.
//!
//! Client share: `X_c Y_c + [T1 + X_s Y_s - R_1] + [T2 - R_2]^T`; server share: `R_1 + R_2^T`.
//! All heads and both terms travel in the same two flights (client -> server, server -> client).
//!
//! # Security
//! As for [`super::HeMatMul`]: the server sees only ciphertexts under the client's key; the
//! client receives re-randomized, flooded ciphertexts of values masked by the uniform `R_1`,
//! `R_2`, i.e. uniform shares; the weight-dependent (here: share-dependent) noise is flooded
//! with 40-bit statistical security.
//!
//! # Cost
//! [`HeMatMulShared::cost`]: `heads` times the cost of the two cross products, two flights.

use std::sync::Arc;

use duet_fhe::{Ciphertext, RlweParameters};
use duet_transport::Channel;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

use super::engine::{
    decrypt_outputs, encrypt_inputs, fresh_seed, no_seed, parse_inputs, respond_group, seeds,
    stream_ordered, Operand,
};
use super::plan::{LayoutPolicy, MatmulPlan, MatmulShape};
use super::ring::{check_ring, matmul_wrapping, transpose, WeightSrc};
use super::setup::{HeClientSetup, HeServerSetup};
use super::Cost;
use crate::error::{ProtocolError, Result};

/// `heads` independent products `(n x d) . (d x k)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct SharedShape {
    /// Number of heads (batch).
    pub heads: usize,
    /// Rows of `X`.
    pub n: usize,
    /// Inner dimension.
    pub d: usize,
    /// Columns of `Y`.
    pub k: usize,
}

impl SharedShape {
    /// `heads x n x d x k`.
    pub fn new(heads: usize, n: usize, d: usize, k: usize) -> Self {
        Self { heads, n, d, k }
    }
    fn check(&self) -> Result<()> {
        if self.heads == 0 {
            return Err(ProtocolError::Config("zero heads".into()));
        }
        Ok(())
    }
}

/// Both operands shared: `Z = X Y` per head. See the module documentation
/// (`he_matmul_shared.rs`).
#[derive(Clone, Copy, Debug)]
pub struct HeMatMulShared;

impl HeMatMulShared {
    /// The plans of the cross terms, per head: `[T1 (n x d x k), T2 (k x d x n)]` for head 0,
    /// then head 1, ... A byte budget in `policy` covers the whole batch
    /// ([`MatmulPlan::batch`]).
    pub fn plans(
        params: &Arc<RlweParameters>,
        shape: SharedShape,
        policy: LayoutPolicy,
    ) -> Result<Vec<MatmulPlan>> {
        shape.check()?;
        let t1 = MatmulShape::new(shape.n, shape.d, shape.k);
        let t2 = MatmulShape::new(shape.k, shape.d, shape.n);
        let shapes: Vec<MatmulShape> = (0..shape.heads).flat_map(|_| [t1, t2]).collect();
        MatmulPlan::batch(params, &shapes, policy)
    }

    /// Exact online traffic (two flights for all heads).
    pub fn cost(
        params: &Arc<RlweParameters>,
        shape: SharedShape,
        policy: LayoutPolicy,
    ) -> Result<Cost> {
        Ok(Self::plans(params, shape, policy)?
            .iter()
            .map(MatmulPlan::cost)
            .fold(Cost::default(), |a, c| a + c))
    }

    /// Client core, message out: for each head, the ciphertexts of `X_c` then of `Y_c^T`.
    /// `x_c` is `heads x n x d`, `y_c` is `heads x d x k` (row-major, in `Z_{2^l}`).
    pub fn client_messages<R: RngCore + CryptoRng>(
        setup: &HeClientSetup,
        shape: SharedShape,
        plans: &[MatmulPlan],
        x_c: &[u64],
        y_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let mask = setup.params.plain_mask();
        let (nd, dk) = (shape.n * shape.d, shape.d * shape.k);
        check_ring("client share of X", x_c, shape.heads * nd, mask)?;
        check_ring("client share of Y", y_c, shape.heads * dk, mask)?;
        check_plans(shape, plans)?;
        let mut out = Vec::new();
        for ((x, y), p) in x_c.chunks(nd).zip(y_c.chunks(dk)).zip(plans.chunks(2)) {
            let [p1, p2] = p else { continue };
            out.extend(encrypt_inputs(setup, p1, x, rng)?);
            let yt = transpose(y, shape.d, shape.k);
            out.extend(encrypt_inputs(setup, p2, &yt, rng)?);
        }
        Ok(out)
    }

    /// Client core, message in: the server's outputs; returns the client's share of `X Y`
    /// (`heads x n x k`).
    pub fn client_finish(
        setup: &HeClientSetup,
        shape: SharedShape,
        plans: &[MatmulPlan],
        x_c: &[u64],
        y_c: &[u64],
        msgs: &[Vec<u8>],
    ) -> Result<Vec<u64>> {
        check_plans(shape, plans)?;
        let want: usize = plans.iter().map(MatmulPlan::output_count).sum();
        if msgs.len() != want {
            return Err(ProtocolError::Protocol(format!(
                "{} output ciphertexts, expected {want}",
                msgs.len()
            )));
        }
        let mask = setup.params.plain_mask();
        let (nd, dk) = (shape.n * shape.d, shape.d * shape.k);
        let mut z = Vec::with_capacity(shape.heads * shape.n * shape.k);
        let mut rest = msgs;
        for ((x, y), p) in x_c.chunks(nd).zip(y_c.chunks(dk)).zip(plans.chunks(2)) {
            let [p1, p2] = p else { continue };
            let (m1, r) = rest.split_at(p1.output_count().min(rest.len()));
            let (m2, r) = r.split_at(p2.output_count().min(r.len()));
            rest = r;
            let t1 = decrypt_outputs(setup, p1, m1)?;
            let t2 = transpose(&decrypt_outputs(setup, p2, m2)?, shape.k, shape.n);
            let local = matmul_wrapping(x, y, shape.d, shape.k);
            z.extend(
                local
                    .iter()
                    .zip(&t1)
                    .zip(&t2)
                    .map(|((&a, &b), &c)| a.wrapping_add(b).wrapping_add(c) & mask),
            );
        }
        Ok(z)
    }

    /// Client driver: returns the client's share of `X Y` (`heads x n x k`).
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeClientSetup,
        shape: SharedShape,
        policy: LayoutPolicy,
        x_c: &[u64],
        y_c: &[u64],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let plans = Self::plans(&setup.params, shape, policy)?;
        for m in Self::client_messages(setup, shape, &plans, x_c, y_c, rng)? {
            ch.send_bytes(&m)?;
        }
        ch.flush()?;
        let count: usize = plans.iter().map(MatmulPlan::output_count).sum();
        let mut msgs = Vec::with_capacity(count);
        let max = super::max_ciphertext_bytes(&setup.params);
        for _ in 0..count {
            msgs.push(ch.recv_bytes_max(max)?);
        }
        Self::client_finish(setup, shape, &plans, x_c, y_c, &msgs)
    }

    /// Server driver: `x_s` is `heads x n x d`, `y_s` is `heads x d x k`; returns the server's
    /// share of `X Y` (`heads x n x k`). The local part overlaps with receiving; output groups
    /// of all heads and both terms are computed in parallel and sent in order; the server's
    /// operands (its shares) are prepared on the fly.
    pub fn run_server<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeServerSetup,
        shape: SharedShape,
        policy: LayoutPolicy,
        x_s: &[u64],
        y_s: &[u64],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let plans = Self::plans(&setup.params, shape, policy)?;
        let mut local_rng = ChaCha20Rng::from_seed(fresh_seed(rng));
        let count: usize = plans.iter().map(MatmulPlan::input_count).sum();
        let (core, msgs) = std::thread::scope(|s| {
            let core = s
                .spawn(|| HeMatMulSharedServer::new(setup, shape, plans, x_s, y_s, &mut local_rng));
            let recv = (|| -> Result<Vec<Vec<u8>>> {
                let mut msgs = Vec::with_capacity(count);
                let len = duet_fhe::SeededCiphertext::serialized_len(&setup.params);
                for _ in 0..count {
                    msgs.push(ch.recv_bytes_max(len)?);
                }
                Ok(msgs)
            })();
            let core = core.join().map_err(|_| ProtocolError::WorkerPanicked);
            (core, recv)
        });
        let core = core??;
        let inputs = core.absorb(&msgs?)?;
        let group_seeds = seeds(rng, core.output_count());
        stream_ordered(
            core.output_count(),
            |idx| {
                let seed = group_seeds.get(idx).copied().ok_or_else(no_seed)?;
                core.respond(&inputs, idx, seed)
            },
            |_, bytes| Ok(ch.send_bytes(&bytes)?),
        )?;
        ch.flush()?;
        Ok(core.into_share())
    }
}

/// The client's encrypted blocks of one batch, parsed and expanded (one list per cross product).
#[derive(Debug)]
pub struct SharedInputs(Vec<Vec<Ciphertext>>);

/// The server's I/O-free core of one [`HeMatMulShared`] batch: [`Self::new`] does the local part
/// (masks `R_1`, `R_2`, `X_s Y_s`, `X_s^T`), [`Self::absorb`] takes the client's flight,
/// [`Self::respond`] makes output message `idx` (re-randomized, flooded: the client learns only
/// masked values), [`Self::into_share`] gives the server's share `R_1 + R_2^T`.
#[derive(Debug)]
pub struct HeMatMulSharedServer<'a> {
    setup: &'a HeServerSetup,
    shape: SharedShape,
    plans: Vec<MatmulPlan>,
    y_s: &'a [u64],
    heads: Vec<HeadLocal>,
    /// `(cross product, output group)` of every output message, in sending order.
    items: Vec<(usize, usize)>,
}

impl<'a> HeMatMulSharedServer<'a> {
    /// Local step for `plans` (from [`HeMatMulShared::plans`]): checks the shares, draws the
    /// masks, computes the server's plaintexts.
    pub fn new<R: RngCore + CryptoRng>(
        setup: &'a HeServerSetup,
        shape: SharedShape,
        plans: Vec<MatmulPlan>,
        x_s: &[u64],
        y_s: &'a [u64],
        rng: &mut R,
    ) -> Result<Self> {
        check_plans(shape, &plans)?;
        let mask = setup.params.plain_mask();
        let (n, d, k) = (shape.n, shape.d, shape.k);
        check_ring("server share of X", x_s, shape.heads * n * d, mask)?;
        check_ring("server share of Y", y_s, shape.heads * d * k, mask)?;
        let heads = server_local(shape, x_s, y_s, mask, rng)?;
        let items = plans
            .iter()
            .enumerate()
            .flat_map(|(u, p)| (0..p.output_count()).map(move |o| (u, o)))
            .collect();
        Ok(Self {
            setup,
            shape,
            plans,
            y_s,
            heads,
            items,
        })
    }

    /// Number of client messages expected.
    pub fn input_count(&self) -> usize {
        self.plans.iter().map(MatmulPlan::input_count).sum()
    }

    /// Number of output messages.
    pub fn output_count(&self) -> usize {
        self.items.len()
    }

    /// Message in: parse and expand the client's flight (count, lengths, versions and parameter
    /// ids are checked).
    pub fn absorb(&self, msgs: &[Vec<u8>]) -> Result<SharedInputs> {
        if msgs.len() != self.input_count() {
            return Err(ProtocolError::Protocol(format!(
                "{} input ciphertexts, expected {}",
                msgs.len(),
                self.input_count()
            )));
        }
        let mut rest = msgs;
        let mut cts = Vec::with_capacity(self.plans.len());
        for p in &self.plans {
            let (m, r) = rest.split_at(p.input_count().min(rest.len()));
            rest = r;
            cts.push(parse_inputs(p, m)?);
        }
        Ok(SharedInputs(cts))
    }

    /// Message out: output message `idx` (`0..output_count()`), with a fresh `seed` for
    /// re-randomization and flooding.
    pub fn respond(&self, inputs: &SharedInputs, idx: usize, seed: [u8; 32]) -> Result<Vec<u8>> {
        let missing = || ProtocolError::Config("work item outside the batch".into());
        let &(u, o) = self.items.get(idx).ok_or_else(missing)?;
        let (h, term) = (u / 2, u % 2);
        let plan = self.plans.get(u).ok_or_else(missing)?;
        let c = inputs.0.get(u).ok_or_else(missing)?;
        let hl = self.heads.get(h).ok_or_else(missing)?;
        if term == 0 {
            let dk = self.shape.d * self.shape.k;
            let y = self.y_s.get(h * dk..(h + 1) * dk).ok_or_else(missing)?;
            let op = Operand::Raw(WeightSrc::Ring(y));
            respond_group(self.setup, plan, c, op, &hl.plain1, o, seed)
        } else {
            let op = Operand::Raw(WeightSrc::Ring(&hl.x_t));
            respond_group(self.setup, plan, c, op, &hl.plain2, o, seed)
        }
    }

    /// The server's share of `X Y` (`heads x n x k`).
    pub fn into_share(self) -> Vec<u64> {
        self.heads.into_iter().flat_map(|h| h.share).collect()
    }
}

fn check_plans(shape: SharedShape, plans: &[MatmulPlan]) -> Result<()> {
    let ok = plans.len() == 2 * shape.heads
        && plans.chunks(2).all(|p| {
            matches!(p, [a, b] if a.shape() == MatmulShape::new(shape.n, shape.d, shape.k)
                && b.shape() == MatmulShape::new(shape.k, shape.d, shape.n))
        });
    if ok {
        Ok(())
    } else {
        Err(ProtocolError::Config(
            "plans do not match the shared product's shape".into(),
        ))
    }
}

/// The server's local values of one head.
#[derive(Debug)]
struct HeadLocal {
    /// `X_s^T` (`d x n`): the server operand of `T2`.
    x_t: Vec<u64>,
    /// `X_s Y_s - R_1` (`n x k`).
    plain1: Vec<u64>,
    /// `-R_2` (`k x n`).
    plain2: Vec<u64>,
    /// `R_1 + R_2^T` (`n x k`): the server's output share.
    share: Vec<u64>,
}

fn server_local<R: RngCore>(
    shape: SharedShape,
    x_s: &[u64],
    y_s: &[u64],
    mask: u64,
    rng: &mut R,
) -> Result<Vec<HeadLocal>> {
    let (n, d, k) = (shape.n, shape.d, shape.k);
    let mut out = Vec::with_capacity(shape.heads);
    for (x, y) in x_s.chunks(n * d).zip(y_s.chunks(d * k)) {
        let r1: Vec<u64> = (0..n * k).map(|_| rng.next_u64() & mask).collect();
        let r2: Vec<u64> = (0..n * k).map(|_| rng.next_u64() & mask).collect();
        let xy = matmul_wrapping(x, y, d, k);
        let plain1 = xy
            .iter()
            .zip(&r1)
            .map(|(&a, &r)| a.wrapping_sub(r) & mask)
            .collect();
        let plain2 = r2.iter().map(|&r| r.wrapping_neg() & mask).collect();
        let r2t = transpose(&r2, k, n);
        let share = r1
            .iter()
            .zip(&r2t)
            .map(|(&a, &b)| a.wrapping_add(b) & mask)
            .collect();
        out.push(HeadLocal {
            x_t: transpose(x, n, d),
            plain1,
            plain2,
            share,
        });
    }
    Ok(out)
}
