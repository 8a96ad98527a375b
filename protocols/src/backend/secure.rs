//! [`SecureBackend`]: the [`Backend`] operators run between the two parties.
//!
//! # Setup (once per session)
//! HE keys of the client for the linear layers (weights bounded by `2^weight_bits`) and for the
//! products of two shared operands (attention), both `N = 8192`, `log q = 200` (the 128-bit
//! row of the HomomorphicEncryption.org table, [`duet_fhe::Preset::N8192Q200Pack`]); the OT
//! session ([`NlSession`], Ferret silent OT by default). Keys used by some operators only (the
//! embedding lookup's, the HE element-wise product's, the server-key embedding table) are set
//! up at their first use and kept for the session; their traffic lands in that node.
//!
//! # Security
//! Each operator is one of the crate's protocols, each secure against a semi-honest peer (their
//! modules state the assumptions); composition is sequential, and every value passed between
//! operators is a uniformly random additive share. Only [`Backend::reveal`] opens a value, to
//! the client only.

mod kv;

pub(crate) use kv::kv_policy;

use super::{
    check_public_linear, logit_format, ActKind, Backend, NodeRecord, OpKind, QuantLinear, Tokens,
};
use crate::matmul::SharedShape;
use crate::nonlinear::activation::{gelu, gelu_new, silu, ActFormat};
use crate::nonlinear::gaussian_attn::{gaussian_attn, GaussShape, GaussianAttnConfig};
use crate::nonlinear::norm::{norm, NormKind, NormWeights};
use crate::nonlinear::softmax::softmax;
use crate::nonlinear::token_choice::{choose_token, TokenChoice, TokenOutcome};
use crate::options::{EmbeddingMode, SecureOptions};
use crate::plan::MulBackend;
use crate::{
    linear_params_with_terms, HeKvCache, HeLinear, KvSpec, LayoutPolicy, LinearPlan, LinearWeights,
};
use crate::{
    EmbeddingServerKeys, EmbeddingTable, EncryptedEmbeddingTable, HeClientSetup, HeElementwiseMul,
    HeMatMul, HeMatMulShared, HeMulClientSetup, HeMulServerSetup, HeServerSetup, HeWeights,
    MatmulShape, PrepareMode, PrivateEmbedding, ProtocolError, Result, ServerKeyEmbedding,
};
use duet_fhe::{
    MacTerms, Preset, RingBits, RlweParameters, RlweParametersBuilder, SlotParameters, WeightBound,
};
use duet_mpc::fixed_math::exp::add_const;
use duet_mpc::fixed_math::piecewise::Piecewise;
use duet_mpc::fixed_math::poly::{extend_nonneg, ShareExec};
use duet_mpc::nonlinear::{self as nl, NlSession, TruncMode};
use duet_mpc::{AShare, FixedPoint, Ring};
use duet_transport::{Channel, ChannelStats, Role};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

enum Keys {
    Client {
        lin: HeClientSetup,
        shared: HeClientSetup,
    },
    Server {
        lin: HeServerSetup,
        shared: HeServerSetup,
    },
}

enum HeMulKeys {
    Client(HeMulClientSetup),
    Server(HeMulServerSetup),
}

/// The embedding lookup's keys, by preset (kept for the session).
enum EmbedKeys {
    Client(usize, HeClientSetup),
    Server(usize, HeServerSetup),
}

/// The server-key embedding's state: the server's keys, or the client's encrypted table.
enum TableState {
    Server(EmbeddingServerKeys),
    Client(EncryptedEmbeddingTable),
}

/// The two-party interpreter of [`Backend`] over a channel (see the module documentation).
pub struct SecureBackend<C: Channel> {
    ch: C,
    role: Role,
    opts: SecureOptions,
    ring: Ring,
    nl: NlSession,
    keys: Keys,
    lin_params: Arc<RlweParameters>,
    he_mul: Option<HeMulKeys>,
    embed_keys: Option<EmbedKeys>,
    table: Option<TableState>,
    rng: ChaCha20Rng,
    cached_bytes: u64,
    setup_bytes: u64,
    setup_seconds: f64,
    mark: (Instant, ChannelStats),
    records: Vec<NodeRecord>,
    custom: Vec<(ActKind, Piecewise)>,
    /// Plans of the split-packing linear layers, by shape and layout.
    linear_plans: HashMap<(usize, usize, Vec<usize>, LayoutPolicy), Arc<LinearPlan>>,
    /// The encrypted KV caches of generation, by attention node.
    kv: HashMap<String, HeKvCache>,
    kv_rev: Option<kv::KvReverse>,
}

fn traffic(now: ChannelStats, then: ChannelStats) -> (u64, u64) {
    let d = now - then;
    (d.bytes_sent + d.bytes_received, d.total_rounds())
}

fn shape2(x: &AShare) -> (usize, usize) {
    match x.shape() {
        [r, c] => (*r, *c),
        [n] => (1, *n),
        _ => (1, x.len()),
    }
}

impl<C: Channel> SecureBackend<C> {
    /// Sets up a session on `ch` as `role` with `opts` (both parties the same): HE keys and
    /// the OT session. Randomness from the OS.
    pub fn setup(ch: C, role: Role, opts: &SecureOptions) -> Result<Self> {
        let rng = ChaCha20Rng::from_rng(rand::rngs::OsRng)
            .map_err(|e| ProtocolError::Config(format!("no OS randomness: {e}")))?;
        Self::setup_with_rng(ch, role, opts, rng)
    }

    /// [`SecureBackend::setup`] with a given random generator (tests).
    pub fn setup_with_rng(
        mut ch: C,
        role: Role,
        opts: &SecureOptions,
        mut rng: ChaCha20Rng,
    ) -> Result<Self> {
        opts.check()?;
        let t = Instant::now();
        let before = ch.stats();
        let ring = Ring::new(opts.ring_bits)?;
        let (lin_params, shared_params) = he_params(opts)?;
        let keys = match role {
            Role::Client => Keys::Client {
                lin: HeClientSetup::run(&mut ch, &lin_params, &mut rng)?,
                shared: HeClientSetup::run(&mut ch, &shared_params, &mut rng)?,
            },
            Role::Server => Keys::Server {
                lin: HeServerSetup::run(&mut ch, &lin_params)?,
                shared: HeServerSetup::run(&mut ch, &shared_params)?,
            },
        };
        let nl = NlSession::setup(&mut ch, role, &mut rng, opts.protocol.nl)?;
        let after = ch.stats();
        Ok(Self {
            role,
            opts: opts.clone(),
            ring,
            nl,
            keys,
            lin_params,
            he_mul: None,
            embed_keys: None,
            table: None,
            rng,
            cached_bytes: 0,
            setup_bytes: traffic(after, before).0,
            setup_seconds: t.elapsed().as_secs_f64(),
            mark: (Instant::now(), after),
            records: Vec::new(),
            custom: Vec::new(),
            linear_plans: HashMap::new(),
            kv: HashMap::new(),
            kv_rev: None,
            ch,
        })
    }

    /// Runs activation `kind` as the piecewise function `f` (on the activation's input, at
    /// `frac` fractional bits) instead of the configured approximation: how a new
    /// approximation is tried end to end (`examples/custom_gelu.rs`). Both parties must set
    /// the same function (it is a public protocol choice, like the options); the cost backend
    /// takes the same call ([`super::CostBackend::set_activation`]).
    pub fn set_activation(&mut self, kind: ActKind, f: Piecewise) {
        self.custom.retain(|(k, _)| *k != kind);
        self.custom.push((kind, f));
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The channel (for a session's own messages between runs).
    pub fn channel(&mut self) -> &mut C {
        &mut self.ch
    }

    /// The channel's counters.
    pub fn stats(&self) -> ChannelStats {
        self.ch.stats()
    }

    /// Setup bytes (both directions) and seconds.
    pub fn setup_cost(&self) -> (u64, f64) {
        (self.setup_bytes, self.setup_seconds)
    }

    /// Bytes sent so far that a later session with the same model would not send again (the
    /// server-key embedding table).
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    /// Takes the node records made so far (a run's report), leaving none.
    pub fn take_records(&mut self) -> Vec<NodeRecord> {
        std::mem::take(&mut self.records)
    }

    /// The non-linear session (for operators outside [`Backend`], e.g. the next-token choice).
    pub fn nl_and_channel(&mut self) -> (&mut NlSession, &mut C) {
        (&mut self.nl, &mut self.ch)
    }

    fn share(&self, rows: usize, cols: usize, data: Vec<u64>) -> Result<AShare> {
        Ok(AShare::new(self.ring, vec![rows, cols], data)?)
    }

    /// A value from another ring into the activation ring (exact within range): a local
    /// reduction from a wider ring; from a narrower one a signed extension, or the cheaper
    /// known-sign extension (one COT) when `nonneg`.
    fn convert(&mut self, x: AShare, nonneg: bool) -> Result<AShare> {
        let (from, to) = (x.ring().bits(), self.ring.bits());
        let y = if from == to {
            x
        } else if from > to {
            nl::reduce(&x, self.ring)?
        } else if nonneg {
            extend_nonneg(&mut self.nl, &mut self.ch, &x, self.ring)?
        } else {
            nl::extend(&mut self.nl, &mut self.ch, &x, self.ring, true)?
        };
        Ok(y)
    }

    fn he_mul(&mut self, a: &AShare, b: &AShare) -> Result<AShare> {
        if self.he_mul.is_none() {
            let params = SlotParameters::new(RingBits(self.ring.bits()))?;
            self.he_mul = Some(match self.role {
                Role::Client => {
                    HeMulKeys::Client(HeMulClientSetup::run(&mut self.ch, &params, &mut self.rng)?)
                }
                Role::Server => HeMulKeys::Server(HeMulServerSetup::run(&mut self.ch, &params)?),
            });
        }
        match &self.he_mul {
            Some(HeMulKeys::Client(k)) => {
                HeElementwiseMul::run_client(&mut self.ch, k, a, b, &mut self.rng)
            }
            Some(HeMulKeys::Server(k)) => {
                HeElementwiseMul::run_server(&mut self.ch, k, a, b, &mut self.rng)
            }
            None => Err(ProtocolError::Config("no HE product keys".into())),
        }
    }

    /// Linear layers sharing `x` by one [`HeLinear`] product (split packing): the client's or
    /// the server's share of `x [W_1 | ... | W_m] + [b_1 | ... | b_m]`, `n x sum k_i`
    /// row-major (not yet rescaled).
    fn linear_orbits(
        &mut self,
        node: &str,
        x: &AShare,
        ws: &[Option<&QuantLinear>],
        (n, d): (usize, usize),
        ks: &[usize],
        policy: LayoutPolicy,
    ) -> Result<Vec<u64>> {
        let key = (n, d, ks.to_vec(), policy);
        let plan = match self.linear_plans.get(&key) {
            Some(p) => Arc::clone(p),
            None => {
                let p = Arc::new(LinearPlan::new(&self.lin_params, n, d, ks, policy)?);
                self.linear_plans.insert(key, Arc::clone(&p));
                p
            }
        };
        let parts = match &self.keys {
            Keys::Client { lin, .. } => {
                HeLinear::run_client(&mut self.ch, lin, &plan, x.data(), &mut self.rng)?
            }
            Keys::Server { lin, .. } => {
                let mut mats = Vec::with_capacity(ws.len());
                for w in ws {
                    let w = w.ok_or_else(|| {
                        ProtocolError::Config(format!("{node}: the server has no weights"))
                    })?;
                    mats.push((&w.w[..], w.bias.as_deref()));
                }
                let lw = LinearWeights::new(&self.lin_params, d, mats)?;
                HeLinear::run_server(
                    &mut self.ch,
                    lin,
                    &plan,
                    &lw,
                    None,
                    Some(x.data()),
                    &mut self.rng,
                )?
            }
        };
        // rows of the concatenation
        let total: usize = ks.iter().sum();
        let mut y = Vec::with_capacity(n * total);
        for r in 0..n {
            for (part, &k) in parts.iter().zip(ks) {
                let row = part.get(r * k..(r + 1) * k).ok_or_else(|| {
                    ProtocolError::Config(format!("{node}: a linear output part is short"))
                })?;
                y.extend_from_slice(row);
            }
        }
        Ok(y)
    }

    /// The server's side of a linear layer by OT: its own share times `W` plus the bias
    /// locally, plus its share of the client's share times `W`.
    fn linear_ot_server(
        &mut self,
        x: &AShare,
        (n, d, k): (usize, usize, usize),
        w: &QuantLinear,
    ) -> Result<Vec<u64>> {
        let ring = self.ring;
        let wr: Vec<u64> = w.w.iter().map(|&v| ring.from_i64(v)).collect();
        let shape = nl::MatShape::new(1, n, d, k)?;
        let mut y =
            nl::matmul_known_holder(&mut self.nl, &mut self.ch, shape, &wr, ring)?.into_data();
        let local = nl::local_product(shape, x.data(), &wr);
        let bias: Vec<u64> = w
            .bias
            .as_deref()
            .map_or_else(Vec::new, |b| b.iter().map(|&v| ring.from_i64(v)).collect());
        for (o, (out, l)) in y.iter_mut().zip(&local).enumerate() {
            let b = bias.get(o % k.max(1)).copied().unwrap_or(0);
            *out = ring.add(*out, ring.reduce(l.wrapping_add(b)));
        }
        Ok(y)
    }

    fn embed_he(
        &mut self,
        tokens: Tokens<'_>,
        table: Option<&[i64]>,
        vocab: usize,
        h: usize,
    ) -> Result<Vec<u64>> {
        let n = tokens.len();
        let limit = 1u64 << (self.opts.weight_bits + self.opts.frac);
        let (preset, params) = PrivateEmbedding::best_params(self.ring.bits(), limit, n, vocab, h)?;
        let same = match &self.embed_keys {
            Some(EmbedKeys::Client(p, _)) | Some(EmbedKeys::Server(p, _)) => *p == preset,
            None => false,
        };
        if !same {
            self.embed_keys = Some(match self.role {
                Role::Client => EmbedKeys::Client(
                    preset,
                    HeClientSetup::run(&mut self.ch, &params, &mut self.rng)?,
                ),
                Role::Server => {
                    EmbedKeys::Server(preset, HeServerSetup::run(&mut self.ch, &params)?)
                }
            });
        }
        match (&self.embed_keys, tokens, table) {
            (Some(EmbedKeys::Client(_, keys)), Tokens::Ids(ids), _) => {
                PrivateEmbedding::run_client(&mut self.ch, keys, vocab, h, ids, &mut self.rng)
            }
            (Some(EmbedKeys::Server(_, keys)), _, Some(t)) => {
                let t = EmbeddingTable::new(&params, vocab, h, t.to_vec())?;
                PrivateEmbedding::run_server(&mut self.ch, keys, &t, n, &mut self.rng)
            }
            _ => Err(ProtocolError::Config(
                "embedding: the client needs its ids and the server its table".into(),
            )),
        }
    }

    fn embed_server_key(
        &mut self,
        tokens: Tokens<'_>,
        table: Option<&[i64]>,
        vocab: usize,
        h: usize,
    ) -> Result<Vec<u64>> {
        let params = ServerKeyEmbedding::params(self.ring.bits())?;
        if self.table.is_none() {
            let before = self.ch.stats();
            self.table = Some(match (self.role, table) {
                (Role::Server, Some(t)) => {
                    let keys = EmbeddingServerKeys::generate(&params, &mut self.rng);
                    ServerKeyEmbedding::send_table(
                        &mut self.ch,
                        &keys,
                        vocab,
                        h,
                        t,
                        &mut self.rng,
                    )?;
                    TableState::Server(keys)
                }
                (Role::Client, _) => TableState::Client(ServerKeyEmbedding::recv_table(
                    &mut self.ch,
                    &params,
                    vocab,
                    h,
                )?),
                (Role::Server, None) => {
                    return Err(ProtocolError::Config("embedding: no table".into()))
                }
            });
            self.cached_bytes += traffic(self.ch.stats(), before).0;
        }
        match (&self.table, tokens) {
            (Some(TableState::Client(model)), Tokens::Ids(ids)) => {
                if model.dims() != (vocab, h) {
                    return Err(ProtocolError::Config(
                        "embedding: the cached table has other dimensions".into(),
                    ));
                }
                ServerKeyEmbedding::run_client(&mut self.ch, model, ids, &mut self.rng)
            }
            (Some(TableState::Server(keys)), t) => {
                ServerKeyEmbedding::run_server(&mut self.ch, keys, h, t.len())
            }
            _ => Err(ProtocolError::Config(
                "embedding: the client has no ids".into(),
            )),
        }
    }
}

/// The column blocks of widths `ks` of `y` (`rows x sum ks`), by local gathers.
pub(crate) fn split_columns<B: Backend>(b: &mut B, y: &B::T, ks: &[usize]) -> Result<Vec<B::T>> {
    let (rows, total) = b.dims(y);
    let mut out = Vec::with_capacity(ks.len());
    let mut start = 0;
    for &k in ks {
        out.push(b.gather(y, rows, k, &|o| {
            (o / k.max(1)) * total + start + o % k.max(1)
        })?);
        start += k;
    }
    Ok(out)
}

impl<C: Channel> SecureBackend<C> {
    /// `x W (+ b)` on shares without the rescaling: HE or OT as the plan says for `node`
    /// ([`Backend::linear`] truncates it, [`Backend::matmul_known`] returns it as is).
    fn linear_product(
        &mut self,
        node: &str,
        x: &AShare,
        w: Option<&QuantLinear>,
        (d, k): (usize, usize),
    ) -> Result<AShare> {
        let (n, xd) = shape2(x);
        if xd != d {
            return Err(ProtocolError::Shape {
                what: "linear layer input width",
                expected: d,
                got: xd,
            });
        }
        let by_ot = self.opts.plan.linear_by_ot(node);
        let policy = self.opts.plan.linear_policy(node);
        if self.opts.plan.linear_orbits && !by_ot {
            let y = self.linear_orbits(node, x, &[w], (n, d), &[k], policy)?;
            return self.share(n, k, y);
        }
        let y = match (&self.keys, w) {
            (Keys::Client { .. }, _) if by_ot => {
                let shape = nl::MatShape::new(1, n, d, k)?;
                nl::matmul_known_chooser(&mut self.nl, &mut self.ch, shape, x.data(), self.ring)?
                    .into_data()
            }
            (Keys::Client { lin, .. }, _) => HeMatMul::run_client(
                &mut self.ch,
                lin,
                MatmulShape::new(n, d, k),
                policy,
                x.data(),
                &mut self.rng,
            )?,
            (Keys::Server { .. }, Some(w)) if by_ot => self.linear_ot_server(x, (n, d, k), w)?,
            (Keys::Server { lin, .. }, Some(w)) => {
                let mut hw =
                    HeWeights::new(&self.lin_params, d, k, w.w.clone(), w.bias.as_deref())?;
                hw.prepare(n, policy, PrepareMode::OnTheFly)?;
                HeMatMul::run_server(&mut self.ch, lin, &hw, n, Some(x.data()), &mut self.rng)?
            }
            (Keys::Server { .. }, None) => {
                return Err(ProtocolError::Config(format!(
                    "{node}: the server has no weights"
                )))
            }
        };
        self.share(n, k, y)
    }
}

/// The HE parameters of the linear layers and of the shared products for `opts`.
pub(crate) fn he_params(
    opts: &SecureOptions,
) -> Result<(Arc<RlweParameters>, Arc<RlweParameters>)> {
    let l = RingBits(opts.ring_bits);
    let bound = 1u64 << (opts.weight_bits + opts.weight_frac.max(opts.frac));
    // N = 8192, log q = 200: the 128-bit row of the HomomorphicEncryption.org table
    let n = Preset::N8192Q200Pack.degree().0;
    let lin = if opts.plan.linear_orbits {
        linear_params_with_terms(opts.ring_bits, bound, opts.max_inner.max(n))?
    } else if opts.max_inner > n {
        RlweParametersBuilder::from_preset(Preset::N8192Q200Pack)
            .ring_bits(l)
            .weight_bound(WeightBound::MaxAbs(bound))
            .mac_terms(MacTerms(opts.max_inner))
            .build()?
    } else {
        RlweParameters::preset(Preset::N8192Q200Pack, l, WeightBound::MaxAbs(bound))?
    };
    let shared = RlweParameters::preset(Preset::N8192Q200Pack, l, WeightBound::Uniform)?;
    Ok((lin, shared))
}

impl<C: Channel> Backend for SecureBackend<C> {
    type T = AShare;

    fn options(&self) -> &SecureOptions {
        &self.opts
    }

    fn ring(&self) -> Ring {
        self.ring
    }

    fn holds_weights(&self) -> bool {
        self.role == Role::Server
    }

    fn dims(&self, x: &AShare) -> (usize, usize) {
        shape2(x)
    }

    fn begin(&mut self) {
        self.mark = (Instant::now(), self.ch.stats());
    }

    fn finish(&mut self, name: &str, kind: OpKind, calls: u64) {
        let (bytes, flights) = traffic(self.ch.stats(), self.mark.1);
        self.records.push(NodeRecord {
            name: name.into(),
            kind: Some(kind),
            calls,
            bytes,
            flights,
            seconds: self.mark.0.elapsed().as_secs_f64(),
            estimate: None,
        });
    }

    fn records(&self) -> &[NodeRecord] {
        &self.records
    }

    fn add(&mut self, a: &AShare, b: &AShare) -> Result<AShare> {
        Ok(a.add(b)?)
    }

    fn gather(
        &mut self,
        x: &AShare,
        rows: usize,
        cols: usize,
        index: &dyn Fn(usize) -> usize,
    ) -> Result<AShare> {
        let src = x.data();
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| ProtocolError::Config("gather: size overflows".into()))?;
        let data = (0..n)
            .map(|i| {
                src.get(index(i)).copied().ok_or(ProtocolError::Shape {
                    what: "gather index",
                    expected: src.len(),
                    got: index(i),
                })
            })
            .collect::<Result<Vec<u64>>>()?;
        self.share(rows, cols, data)
    }

    fn concat_rows(&mut self, a: &AShare, b: &AShare) -> Result<AShare> {
        let ((ra, ca), (rb, cb)) = (shape2(a), shape2(b));
        if ca != cb || a.ring() != b.ring() {
            return Err(ProtocolError::Shape {
                what: "rows to append",
                expected: ca,
                got: cb,
            });
        }
        let mut data = Vec::with_capacity(a.len() + b.len());
        data.extend_from_slice(a.data());
        data.extend_from_slice(b.data());
        Ok(AShare::new(a.ring(), vec![ra + rb, ca], data)?)
    }

    fn combine_pairs(
        &mut self,
        x: &AShare,
        f: &dyn Fn(usize) -> ((usize, u64), (usize, u64)),
    ) -> Result<AShare> {
        let ring = x.ring();
        let src = x.data();
        let out = (0..src.len())
            .map(|i| {
                let ((j0, c0), (j1, c1)) = f(i);
                let a = src.get(j0).copied().unwrap_or(0);
                let b = src.get(j1).copied().unwrap_or(0);
                ring.add(ring.mul(a, c0), ring.mul(b, c1))
            })
            .collect();
        Ok(AShare::new(ring, x.shape().to_vec(), out)?)
    }

    fn add_server_constant(&mut self, x: &AShare, c: Option<&[u64]>) -> Result<AShare> {
        match (self.role, c) {
            (Role::Server, Some(c)) => {
                if c.len() != x.len() {
                    return Err(ProtocolError::Shape {
                        what: "server constant",
                        expected: x.len(),
                        got: c.len(),
                    });
                }
                let ring = x.ring();
                let data = x
                    .data()
                    .iter()
                    .zip(c)
                    .map(|(&a, &b)| ring.add(a, b))
                    .collect();
                Ok(AShare::new(ring, x.shape().to_vec(), data)?)
            }
            _ => Ok(x.clone()),
        }
    }

    fn embed(
        &mut self,
        tokens: Tokens<'_>,
        table: Option<&[i64]>,
        vocab: usize,
        hidden: usize,
    ) -> Result<AShare> {
        let n = tokens.len();
        if n == 0 {
            return Err(ProtocolError::Config("embedding of no tokens".into()));
        }
        let s = match self.opts.embedding {
            EmbeddingMode::HeLookup => self.embed_he(tokens, table, vocab, hidden)?,
            EmbeddingMode::ServerKey => self.embed_server_key(tokens, table, vocab, hidden)?,
        };
        self.share(n, hidden, s)
    }

    fn linear(
        &mut self,
        node: &str,
        x: &AShare,
        w: Option<&QuantLinear>,
        d: usize,
        k: usize,
    ) -> Result<AShare> {
        let y = self.linear_product(node, x, w, (d, k))?;
        let fw = self.opts.weight_frac;
        self.trunc(&y, fw)
    }

    fn matmul_known(
        &mut self,
        node: &str,
        x: &AShare,
        w: Option<&[i64]>,
        d: usize,
        k: usize,
    ) -> Result<AShare> {
        let w = w.map(|w| QuantLinear {
            w: w.to_vec(),
            bias: None,
        });
        self.linear_product(node, x, w.as_ref(), (d, k))
    }

    fn linear_public(
        &mut self,
        node: &str,
        x: &AShare,
        w: Option<&QuantLinear>,
        d: usize,
        k: usize,
    ) -> Result<AShare> {
        let (n, xd) = shape2(x);
        check_public_linear(xd, w, d, k)?;
        let Some(w) = w else {
            return Err(ProtocolError::Config(format!(
                "{node}: LoRA mode needs the public base model's weights on both sides"
            )));
        };
        let ring = self.ring;
        let wr: Vec<u64> = w.w.iter().map(|&v| ring.from_i64(v)).collect();
        let mut y = vec![0u64; n * k];
        for (xr, yr) in x.data().chunks_exact(d).zip(y.chunks_exact_mut(k)) {
            for (&xv, wrow) in xr.iter().zip(wr.chunks_exact(k)) {
                if xv == 0 {
                    continue;
                }
                for (acc, &wv) in yr.iter_mut().zip(wrow) {
                    *acc = acc.wrapping_add(xv.wrapping_mul(wv));
                }
            }
            if let (Role::Server, Some(b)) = (self.role, &w.bias) {
                for (acc, &bv) in yr.iter_mut().zip(b) {
                    *acc = acc.wrapping_add(ring.from_i64(bv));
                }
            }
            for acc in yr.iter_mut() {
                *acc = ring.reduce(*acc);
            }
        }
        let y = self.share(n, k, y)?;
        let fw = self.opts.weight_frac;
        self.trunc(&y, fw)
    }

    fn linear_many(
        &mut self,
        nodes: &[&str],
        x: &AShare,
        ws: &[Option<&QuantLinear>],
        d: usize,
        ks: &[usize],
    ) -> Result<Vec<AShare>> {
        let plan = &self.opts.plan;
        let first = nodes.first().copied().unwrap_or("");
        let fused = plan.fuses_linear(nodes) && nodes.len() == ks.len() && nodes.len() == ws.len();
        if !fused {
            return nodes
                .iter()
                .zip(ws)
                .zip(ks)
                .map(|((node, w), &k)| self.linear(node, x, *w, d, k))
                .collect();
        }
        let (n, xd) = shape2(x);
        if xd != d {
            return Err(ProtocolError::Shape {
                what: "linear layer input width",
                expected: d,
                got: xd,
            });
        }
        let policy = plan.linear_policy(first);
        let y = self.linear_orbits(first, x, ws, (n, d), ks, policy)?;
        let total: usize = ks.iter().sum();
        let y = self.share(n, total, y)?;
        let fw = self.opts.weight_frac;
        let y = self.trunc(&y, fw)?;
        split_columns(self, &y, ks)
    }

    fn matmul_shared(&mut self, shape: SharedShape, x: &AShare, y: &AShare) -> Result<AShare> {
        let policy = self.opts.plan.attention;
        let z = if self.opts.plan.attention_ot {
            let ms = nl::MatShape::new(shape.heads, shape.n, shape.d, shape.k)?;
            let xa = AShare::new(self.ring, vec![x.len()], x.data().to_vec())?;
            let ya = AShare::new(self.ring, vec![y.len()], y.data().to_vec())?;
            nl::matmul_shared(&mut self.nl, &mut self.ch, ms, &xa, &ya)?.into_data()
        } else {
            match &self.keys {
                Keys::Client { shared, .. } => HeMatMulShared::run_client(
                    &mut self.ch,
                    shared,
                    shape,
                    policy,
                    x.data(),
                    y.data(),
                    &mut self.rng,
                )?,
                Keys::Server { shared, .. } => HeMatMulShared::run_server(
                    &mut self.ch,
                    shared,
                    shape,
                    policy,
                    x.data(),
                    y.data(),
                    &mut self.rng,
                )?,
            }
        };
        self.share(shape.heads * shape.n, shape.k, z)
    }

    /// `x / 2^f` for signed `x` with `|x| < 2^{l-2}` (encoded): the server offsets by
    /// `2^{l-2}` so the value is non-negative with a public MSB 0, a known-MSB truncation (one
    /// COT over `Z_2^f` per element), and removes the offset: exact to one ulp.
    fn trunc(&mut self, x: &AShare, f: u32) -> Result<AShare> {
        if f == 0 {
            return Ok(x.clone());
        }
        let l = x.ring().bits();
        let off = 1i64 << (l - 2);
        let y = add_const(x, self.role, off)?;
        let t = nl::trunc(
            &mut self.nl,
            &mut self.ch,
            &y,
            f,
            TruncMode::KnownMsb(false),
        )?;
        Ok(add_const(&t, self.role, -(off >> f))?)
    }

    fn gaussian_kernel(
        &mut self,
        shape: GaussShape,
        q: &AShare,
        k: &AShare,
        qk: &AShare,
        scale: f64,
        mask: Option<&[bool]>,
    ) -> Result<(AShare, u32)> {
        let f = self.opts.frac;
        let cfg = GaussianAttnConfig::fit(shape, self.opts.act_range_bits, f, scale)?;
        let p = gaussian_attn(
            &mut self.nl,
            &mut self.ch,
            shape,
            q,
            k,
            qk,
            f,
            scale,
            mask,
            &cfg,
        )?;
        let p = self.convert(p, true)?;
        let p = AShare::new(p.ring(), qk.shape().to_vec(), p.into_data())?;
        Ok((p, cfg.exp.frac))
    }

    fn softmax(&mut self, s: &AShare, frac: u32, mask: Option<&[bool]>) -> Result<AShare> {
        let cfg = self.opts.protocol.softmax.config();
        let p = softmax(&mut self.nl, &mut self.ch, s, frac, mask, &cfg)?;
        self.convert(p, true)
    }

    fn norm(&mut self, kind: NormKind, x: &AShare, w: Option<&NormWeights>) -> Result<AShare> {
        let mut cfg = self.opts.protocol.norm.config(self.opts.frac);
        cfg.in_bits = self.opts.norm_in_bits;
        cfg.gamma_bits = self.opts.gamma_bits;
        let k = x.shape().last().copied().unwrap_or(1);
        cfg.ring_bits = cfg.ring_bits.max(cfg.min_ring_bits(k, self.opts.frac));
        cfg.out_bits = cfg.ring_bits.max(self.ring.bits());
        let y = norm(&mut self.nl, &mut self.ch, kind, x, self.opts.frac, w, &cfg)?;
        self.convert(y, false)
    }

    fn activation(&mut self, kind: ActKind, x: &AShare) -> Result<AShare> {
        if let Some((_, f)) = self.custom.iter().find(|(k, _)| *k == kind) {
            // the function runs in the narrowest ring that holds its intermediates (a signed
            // extension first when that is wider than the activation ring)
            let need = f.min_ring_bits()?;
            if need <= x.ring().bits() {
                return Ok(f.eval(&mut ShareExec::new(&mut self.nl, &mut self.ch), x)?);
            }
            let wide = Ring::new(need)?;
            let xw = nl::extend(&mut self.nl, &mut self.ch, x, wide, true)?;
            let yw = f.eval(&mut ShareExec::new(&mut self.nl, &mut self.ch), &xw)?;
            return Ok(nl::reduce(&yw, x.ring())?);
        }
        let fmt = ActFormat::new(self.ring, self.opts.frac, self.opts.act_range_bits)?;
        let p = self.opts.protocol;
        let y = match kind {
            ActKind::Gelu => gelu(&mut self.nl, &mut self.ch, x, fmt, p.gelu)?,
            ActKind::GeluTanh => gelu_new(&mut self.nl, &mut self.ch, x, fmt)?,
            ActKind::Silu => silu(&mut self.nl, &mut self.ch, x, fmt, p.silu)?,
        };
        self.convert(y, false)
    }

    fn mul(&mut self, a: &AShare, b: &AShare) -> Result<AShare> {
        let p = match self.opts.plan.elementwise {
            MulBackend::Cot => nl::mul(&mut self.nl, &mut self.ch, a, b)?,
            MulBackend::He => self.he_mul(a, b)?,
        };
        let f = self.opts.frac;
        self.trunc(&p, f)
    }

    fn kv_scores(
        &mut self,
        cache: &str,
        spec: KvSpec,
        start: usize,
        q: &AShare,
        k: &AShare,
        v: &AShare,
    ) -> Result<AShare> {
        self.kv_scores_shares(cache, spec, start, q, k, v)
    }

    fn kv_context(&mut self, cache: &str, p: &AShare) -> Result<AShare> {
        self.kv_context_shares(cache, p)
    }

    fn choose_token(&mut self, logits: &AShare, choice: &TokenChoice) -> Result<TokenOutcome> {
        let fmt = logit_format(self.ring, &self.opts)?;
        choose_token(&mut self.nl, &mut self.ch, logits, &fmt, choice)
    }

    fn reveal(&mut self, x: &AShare) -> Result<Option<Vec<f64>>> {
        match self.role {
            Role::Server => {
                self.ch.send_u64s(x.data())?;
                self.ch.flush()?;
                Ok(None)
            }
            Role::Client => {
                let theirs = self.ch.recv_u64s_exact(x.len())?;
                let theirs = AShare::new(x.ring(), x.shape().to_vec(), theirs)?;
                let plain = x.reconstruct(&theirs)?;
                let fp = FixedPoint::new(x.ring(), self.opts.frac)?;
                Ok(Some(fp.decode_all(&plain)))
            }
        }
    }
}
