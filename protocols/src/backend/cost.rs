//! [`CostBackend`]: the [`Backend`] operators replaced by their exact cost formulas.
//!
//! Every operator adds the bytes and flights its protocol's `cost` function gives and the
//! operation counts ([`Work`]) the [`MachineProfile`] turns into seconds. It keeps the same
//! state as [`super::SecureBackend`]: keys set up at their first use (the embedding lookup's,
//! the HE element-wise product's, the server-key table, whose bytes are also counted as
//! cached) and the two Ferret pools.
//!
//! Ferret: the non-linear protocols reserve exactly the COTs their cost formulas count
//! ([`nl::Cost::cots`]); a pool that runs short is refilled by main iterations, whose traffic
//! lands in the node that reserved. Both pools start with the setup iteration's output less
//! the next iteration's base COTs, and a pool never drops COTs, so after a cumulative
//! consumption `D` of one direction the iterations run are `ceil((D - P0) / C)` (`P0` the
//! initial pool, `C` [`FerretParams::cots_per_iteration`]). Predicted bytes are therefore
//! exact per node; flights are the sum of the parts' flight counts (the non-linear formulas'
//! rounds are upper bounds, and a Ferret iteration's flights may merge with its neighbours'),
//! so measured flights can be lower.
//!
//! [`MachineProfile`]: crate::cost_model::MachineProfile

use super::secure::{he_params, kv_policy, split_columns};
use super::{
    check_public_linear, logit_format, ActKind, Backend, NodeRecord, OpKind, QuantLinear, Tokens,
};
use crate::cost_model::{he_work, nl_work, Estimate, MachineProfile, Work};
use crate::embedding::EMBEDDING_POLICY;
use crate::matmul::SharedShape;
use crate::nonlinear::activation::{gelu_cost, gelu_new_cost, silu_cost, ActFormat};
use crate::nonlinear::gaussian_attn::{gaussian_attn_cost, GaussShape, GaussianAttnConfig};
use crate::nonlinear::norm::{norm_cost, NormKind, NormWeights};
use crate::nonlinear::softmax::softmax_cost;
use crate::nonlinear::token_choice::{choose_token_cost, TokenChoice, TokenOutcome};
use crate::options::{EmbeddingMode, SecureOptions};
use crate::plan::MulBackend;
use crate::{
    HeClientSetup, HeElementwiseMul, HeMatMulShared, HeMulClientSetup, LayoutPolicy, MatmulPlan,
    MatmulShape, PrivateEmbedding, ProtocolError, Result, ServerKeyEmbedding,
};
use crate::{HeKvCache, KvSpec, LinearPlan};
use duet_fhe::{RingBits, RlweParameters, SlotParameters};
use duet_mpc::fixed_math::piecewise::Piecewise;
use duet_mpc::fixed_math::poly::{extend_nonneg_cost, CostExec};
use duet_mpc::nonlinear::{self as nl, CotBackend, NlConfig, NlSession, TruncMode};
use duet_mpc::ot::ferret::iteration_cost;
use duet_mpc::ot::FerretParams;
use duet_mpc::Ring;
use duet_transport::Role;
use std::collections::HashMap;
use std::sync::Arc;

/// A value's stand-in: its shape and ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sym {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Ring.
    pub ring: Ring,
}

impl Sym {
    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// Traffic and work being accumulated.
#[derive(Clone, Copy, Debug, Default)]
struct Acc {
    bytes: u64,
    flights: u64,
    work: Work,
}

/// The two Ferret pools (server sending, client sending).
#[derive(Clone, Copy, Debug)]
struct Pools {
    params: FerretParams,
    initial: u64,
    per_iteration: u64,
    consumed: [u64; 2],
    iterations: [u64; 2],
}

impl Pools {
    fn new(params: FerretParams) -> Self {
        let s = params.setup();
        let initial = (s.n.saturating_sub(params.main().base_cots())) as u64;
        Self {
            params,
            initial,
            per_iteration: params.cots_per_iteration().max(1) as u64,
            consumed: [0; 2],
            iterations: [0; 2],
        }
    }

    /// Consumes `c`; returns the main iterations this ran.
    fn consume(&mut self, c: nl::CotCount) -> u64 {
        let mut new = 0;
        for (i, n) in [c.server_sends, c.client_sends].into_iter().enumerate() {
            if let (Some(d), Some(it)) = (self.consumed.get_mut(i), self.iterations.get_mut(i)) {
                *d += n;
                let need = d.saturating_sub(self.initial).div_ceil(self.per_iteration);
                if need > *it {
                    new += need - *it;
                    *it = need;
                }
            }
        }
        new
    }
}

/// The cost interpreter of [`Backend`] (see the module documentation).
#[derive(Clone, Debug)]
pub struct CostBackend {
    opts: SecureOptions,
    profile: MachineProfile,
    ring: Ring,
    nl: NlConfig,
    pools: Option<Pools>,
    lin: Arc<RlweParameters>,
    shared: Arc<RlweParameters>,
    he_mul_ready: bool,
    embed_preset: Option<usize>,
    table_sent: bool,
    cached_bytes: u64,
    setup: Estimate,
    acc: Acc,
    records: Vec<NodeRecord>,
    nl_memo: HashMap<String, (nl::Cost, Work)>,
    he_memo: HashMap<String, (u64, u64, Work)>,
    custom: Vec<(ActKind, Piecewise)>,
    /// The encrypted KV caches: shape and context length by attention node.
    kv: HashMap<String, (KvSpec, usize)>,
    kv_ready: bool,
}

impl CostBackend {
    /// A fresh session's cost model for `opts` on a machine like `profile` (the setup's cost
    /// is [`CostBackend::setup`]).
    pub fn new(opts: &SecureOptions, profile: &MachineProfile) -> Result<Self> {
        opts.check()?;
        let ring = Ring::new(opts.ring_bits)?;
        let (lin, shared) = he_params(opts)?;
        let nl_cfg = opts.protocol.nl;
        let mut setup = Acc::default();
        for p in [&lin, &shared] {
            let c = HeClientSetup::setup_cost(p);
            setup.bytes += c.bytes;
            setup.flights += c.rounds;
        }
        let s = NlSession::setup_cost(nl_cfg);
        setup.bytes += s.bytes;
        setup.flights += s.rounds;
        let pools = match nl_cfg.cot {
            CotBackend::Ferret(p) => {
                // the setup iterations of both directions and their base COTs
                setup.work.ferret_iterations += 2.0;
                Some(Pools::new(p))
            }
            CotBackend::Iknp => None,
        };
        let setup = estimate(&setup, profile);
        Ok(Self {
            opts: opts.clone(),
            profile: profile.clone(),
            ring,
            nl: nl_cfg,
            pools,
            lin,
            shared,
            he_mul_ready: false,
            embed_preset: None,
            table_sent: false,
            cached_bytes: 0,
            setup,
            acc: Acc::default(),
            records: Vec::new(),
            nl_memo: HashMap::new(),
            he_memo: HashMap::new(),
            custom: Vec::new(),
            kv: HashMap::new(),
            kv_ready: false,
        })
    }

    /// Prices activation `kind` as the piecewise function `f`, as
    /// [`super::SecureBackend::set_activation`] runs it.
    pub fn set_activation(&mut self, kind: ActKind, f: Piecewise) {
        self.custom.retain(|(k, _)| *k != kind);
        self.custom.push((kind, f));
    }

    /// The session setup's estimate (HE keys and the OT session).
    pub fn setup(&self) -> Estimate {
        self.setup
    }

    /// Bytes counted so far that a later session would not send again.
    pub fn cached_bytes(&self) -> u64 {
        self.cached_bytes
    }

    /// The cached bytes counted since the last call (a request's share of them).
    pub fn take_cached_bytes(&mut self) -> u64 {
        std::mem::take(&mut self.cached_bytes)
    }

    /// Takes the node records made so far, leaving none.
    pub fn take_records(&mut self) -> Vec<NodeRecord> {
        std::mem::take(&mut self.records)
    }

    /// Adds a non-linear protocol's cost (computed by `cost` for the configuration, memoised
    /// under `key`): its traffic, its work and the Ferret iterations its COTs trigger. For
    /// operators outside [`Backend`] (e.g. the next-token choice) that follow the same rules.
    pub fn add_nl<F>(&mut self, key: String, cost: F) -> Result<()>
    where
        F: Fn(NlConfig) -> Result<nl::Cost>,
    {
        let (c, w) = match self.nl_memo.get(&key) {
            Some(v) => *v,
            None => {
                let v = nl_work(self.nl, &cost)?;
                self.nl_memo.insert(key, v);
                v
            }
        };
        self.acc.bytes += c.bytes;
        self.acc.flights += c.rounds;
        self.acc.work += Work {
            bytes: 0.0,
            flights: 0.0,
            ..w
        };
        if let Some(p) = &mut self.pools {
            let it = p.consume(c.cots);
            if it > 0 {
                let one = iteration_cost(&p.params.main());
                self.acc.bytes += it * one.bytes();
                self.acc.flights += it * one.rounds();
                self.acc.work.ferret_iterations += it as f64;
            }
        }
        Ok(())
    }

    /// Adds plain traffic (a message the caller sends outside any protocol).
    pub fn add_traffic(&mut self, bytes: u64, flights: u64) {
        self.acc.bytes += bytes;
        self.acc.flights += flights;
    }

    fn he<F>(&mut self, key: String, make: F) -> Result<()>
    where
        F: FnOnce() -> Result<(u64, u64, Work)>,
    {
        let (bytes, flights, w) = match self.he_memo.get(&key) {
            Some(v) => *v,
            None => {
                let v = make()?;
                self.he_memo.insert(key, v);
                v
            }
        };
        self.acc.bytes += bytes;
        self.acc.flights += flights;
        self.acc.work += w;
        Ok(())
    }

    fn matmul(
        &mut self,
        tag: &str,
        params: &Arc<RlweParameters>,
        shape: MatmulShape,
        policy: LayoutPolicy,
    ) -> Result<()> {
        let key = format!("{tag} {} {} {} {policy:?}", shape.n, shape.d, shape.k);
        self.he(key, || {
            let plan = MatmulPlan::new(params, shape, policy)?;
            let c = plan.cost();
            Ok((c.bytes, c.rounds, he_work(&plan)))
        })
    }

    fn convert(&mut self, n: usize, from: Ring, nonneg: bool) -> Result<()> {
        let to = self.ring;
        if from.bits() < to.bits() {
            let key = format!("convert {n} {} {nonneg}", from.bits());
            self.add_nl(key, |cfg| {
                Ok(if nonneg {
                    extend_nonneg_cost(n, from, to, cfg)
                } else {
                    nl::extend_cost(n, from, to, cfg)
                })
            })?;
        }
        Ok(())
    }

    fn sym(&self, rows: usize, cols: usize) -> Sym {
        Sym {
            rows,
            cols,
            ring: self.ring,
        }
    }
}

fn estimate(acc: &Acc, profile: &MachineProfile) -> Estimate {
    let mut w = acc.work;
    w.bytes = acc.bytes as f64;
    w.flights = acc.flights as f64;
    profile.estimate(&w)
}

fn same_shape(what: &'static str, a: &Sym, b: &Sym) -> Result<()> {
    if a.len() != b.len() {
        return Err(ProtocolError::Shape {
            what,
            expected: a.len(),
            got: b.len(),
        });
    }
    Ok(())
}

impl Backend for CostBackend {
    type T = Sym;

    fn options(&self) -> &SecureOptions {
        &self.opts
    }

    fn ring(&self) -> Ring {
        self.ring
    }

    fn holds_weights(&self) -> bool {
        false
    }

    fn dims(&self, x: &Sym) -> (usize, usize) {
        (x.rows, x.cols)
    }

    fn begin(&mut self) {
        self.acc = Acc::default();
    }

    fn finish(&mut self, name: &str, kind: OpKind, calls: u64) {
        let e = estimate(&self.acc, &self.profile);
        self.records.push(NodeRecord {
            name: name.into(),
            kind: Some(kind),
            calls,
            bytes: e.bytes,
            flights: e.flights,
            seconds: e.compute_s,
            estimate: Some(e),
        });
        self.acc = Acc::default();
    }

    fn records(&self) -> &[NodeRecord] {
        &self.records
    }

    fn add(&mut self, a: &Sym, b: &Sym) -> Result<Sym> {
        same_shape("sum", a, b)?;
        Ok(*a)
    }

    fn gather(
        &mut self,
        _x: &Sym,
        rows: usize,
        cols: usize,
        _index: &dyn Fn(usize) -> usize,
    ) -> Result<Sym> {
        Ok(self.sym(rows, cols))
    }

    fn concat_rows(&mut self, a: &Sym, b: &Sym) -> Result<Sym> {
        if a.cols != b.cols {
            return Err(ProtocolError::Shape {
                what: "rows to append",
                expected: a.cols,
                got: b.cols,
            });
        }
        Ok(Sym {
            rows: a.rows + b.rows,
            ..*a
        })
    }

    fn combine_pairs(
        &mut self,
        x: &Sym,
        _f: &dyn Fn(usize) -> ((usize, u64), (usize, u64)),
    ) -> Result<Sym> {
        Ok(*x)
    }

    fn add_server_constant(&mut self, x: &Sym, _c: Option<&[u64]>) -> Result<Sym> {
        Ok(*x)
    }

    fn embed(
        &mut self,
        tokens: Tokens<'_>,
        _table: Option<&[i64]>,
        vocab: usize,
        h: usize,
    ) -> Result<Sym> {
        let seq = tokens.len();
        let ring = self.ring;
        match self.opts.embedding {
            EmbeddingMode::HeLookup => {
                let limit = 1u64 << (self.opts.weight_bits + self.opts.frac);
                let (preset, params) =
                    PrivateEmbedding::best_params(ring.bits(), limit, seq, vocab, h)?;
                if self.embed_preset != Some(preset) {
                    // the key flight travels with the lookup's first flight
                    self.acc.bytes += HeClientSetup::setup_cost(&params).bytes;
                    self.embed_preset = Some(preset);
                }
                self.matmul(
                    "embedding",
                    &params,
                    MatmulShape::new(seq, vocab, h),
                    EMBEDDING_POLICY,
                )?;
            }
            EmbeddingMode::ServerKey => {
                let params = ServerKeyEmbedding::params(ring.bits())?;
                let (online, cached) = ServerKeyEmbedding::cost(&params, seq, vocab, h)?;
                self.acc.bytes += online.bytes;
                self.acc.flights += online.rounds;
                let scale = params.degree() as f64 / 8192.0;
                let small = params.degree() == 4096;
                if !self.table_sent {
                    self.table_sent = true;
                    self.acc.bytes += cached.bytes;
                    self.acc.flights += cached.rounds;
                    self.cached_bytes += cached.bytes;
                    let cts = ServerKeyEmbedding::table_ciphertexts(&params, vocab, h)?;
                    // the table's encryption (server)
                    self.acc.work.encryptions += cts as f64 * scale;
                }
                // per token one product (client) and one decryption (server)
                let products = if small {
                    &mut self.acc.work.he_products_4096
                } else {
                    &mut self.acc.work.he_products
                };
                *products += seq as f64 * if small { 1.0 } else { scale };
                self.acc.work.decryptions += seq as f64 * scale;
            }
        }
        Ok(self.sym(seq, h))
    }

    fn linear(
        &mut self,
        node: &str,
        x: &Sym,
        w: Option<&QuantLinear>,
        d: usize,
        k: usize,
    ) -> Result<Sym> {
        let y = self.matmul_known(node, x, w.map(|w| w.w.as_slice()), d, k)?;
        let fw = self.opts.weight_frac;
        self.trunc(&y, fw)
    }

    fn matmul_known(
        &mut self,
        node: &str,
        x: &Sym,
        _w: Option<&[i64]>,
        d: usize,
        k: usize,
    ) -> Result<Sym> {
        let n = x.rows;
        if x.cols != d {
            return Err(ProtocolError::Shape {
                what: "linear layer input width",
                expected: d,
                got: x.cols,
            });
        }
        if self.opts.plan.linear_by_ot(node) {
            let ring = self.ring;
            let shape = nl::MatShape::new(1, n, d, k)?;
            self.add_nl(format!("ot linear {n} {d} {k}"), |cfg| {
                Ok(nl::matmul_known_cost(shape, ring, cfg, Role::Server))
            })?;
            self.acc.work.ot_matmul_words += nl::matmul_known_words(shape, ring) as f64;
        } else if self.opts.plan.linear_orbits {
            let lin = Arc::clone(&self.lin);
            let policy = self.opts.plan.linear_policy(node);
            self.he(format!("orbit linear {n} {d} {k} {policy:?}"), || {
                let plan = LinearPlan::new(&lin, n, d, &[k], policy)?;
                let c = plan.cost();
                Ok((c.bytes, c.rounds, plan.work()))
            })?;
        } else {
            let lin = Arc::clone(&self.lin);
            let policy = self.opts.plan.linear_policy(node);
            self.matmul("linear", &lin, MatmulShape::new(n, d, k), policy)?;
        }
        Ok(self.sym(n, k))
    }

    fn linear_public(
        &mut self,
        _node: &str,
        x: &Sym,
        w: Option<&QuantLinear>,
        d: usize,
        k: usize,
    ) -> Result<Sym> {
        check_public_linear(x.cols, w, d, k)?;
        let y = self.sym(x.rows, k);
        let fw = self.opts.weight_frac;
        self.trunc(&y, fw)
    }

    fn linear_many(
        &mut self,
        nodes: &[&str],
        x: &Sym,
        ws: &[Option<&QuantLinear>],
        d: usize,
        ks: &[usize],
    ) -> Result<Vec<Sym>> {
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
        if x.cols != d {
            return Err(ProtocolError::Shape {
                what: "linear layer input width",
                expected: d,
                got: x.cols,
            });
        }
        let n = x.rows;
        let policy = plan.linear_policy(first);
        let lin = Arc::clone(&self.lin);
        let parts = ks.to_vec();
        self.he(format!("orbit linear {n} {d} {ks:?} {policy:?}"), || {
            let plan = LinearPlan::new(&lin, n, d, &parts, policy)?;
            let c = plan.cost();
            Ok((c.bytes, c.rounds, plan.work()))
        })?;
        let y = self.sym(n, ks.iter().sum());
        let fw = self.opts.weight_frac;
        let y = self.trunc(&y, fw)?;
        split_columns(self, &y, ks)
    }

    fn matmul_shared(&mut self, shape: SharedShape, _x: &Sym, _y: &Sym) -> Result<Sym> {
        if self.opts.plan.attention_ot {
            let ring = self.ring;
            let ms = nl::MatShape::new(shape.heads, shape.n, shape.d, shape.k)?;
            self.add_nl(format!("ot shared {shape:?}"), |cfg| {
                Ok(nl::matmul_shared_cost(ms, ring, cfg))
            })?;
            self.acc.work.ot_matmul_words += 2.0 * nl::matmul_known_words(ms, ring) as f64;
        } else {
            let policy = self.opts.plan.attention;
            let params = Arc::clone(&self.shared);
            self.he(format!("shared {shape:?} {policy:?}"), || {
                let plans = HeMatMulShared::plans(&params, shape, policy)?;
                let total = HeMatMulShared::cost(&params, shape, policy)?;
                let w = plans
                    .iter()
                    .map(he_work)
                    .fold(Work::default(), |a, b| a + b);
                // all heads in one exchange
                Ok((total.bytes, total.rounds, w))
            })?;
        }
        Ok(self.sym(shape.heads * shape.n, shape.k))
    }

    fn trunc(&mut self, x: &Sym, f: u32) -> Result<Sym> {
        if f == 0 {
            return Ok(*x);
        }
        let (n, ring) = (x.len(), x.ring);
        self.add_nl(format!("trunc {n} {} {f}", ring.bits()), |cfg| {
            Ok(nl::trunc_cost(n, ring, f, TruncMode::KnownMsb(false), cfg))
        })?;
        Ok(*x)
    }

    fn gaussian_kernel(
        &mut self,
        shape: GaussShape,
        _q: &Sym,
        _k: &Sym,
        qk: &Sym,
        scale: f64,
        _mask: Option<&[bool]>,
    ) -> Result<(Sym, u32)> {
        let f = self.opts.frac;
        let cfg = GaussianAttnConfig::fit(shape, self.opts.act_range_bits, f, scale)?;
        let ring = self.ring;
        self.add_nl(format!("gaussian {shape:?} {scale} {f}"), |nc| {
            gaussian_attn_cost(shape, ring, f, scale, &cfg, nc)
        })?;
        let n = shape.heads * shape.queries * shape.keys;
        self.convert(n, Ring::new(cfg.ring_bits)?, true)?;
        Ok((self.sym(qk.rows, qk.cols), cfg.exp.frac))
    }

    fn softmax(&mut self, s: &Sym, frac: u32, _mask: Option<&[bool]>) -> Result<Sym> {
        let cfg = self.opts.protocol.softmax.config();
        let (rows, cols, ring) = (s.rows, s.cols, s.ring);
        self.add_nl(format!("softmax {rows} {cols} {frac}"), |nc| {
            softmax_cost(&[rows, cols], ring, frac, &cfg, nc)
        })?;
        let out_ring = Ring::new(cfg.out_bits)?;
        self.convert(s.len(), out_ring, true)?;
        Ok(self.sym(rows, cols))
    }

    fn norm(&mut self, kind: NormKind, x: &Sym, _w: Option<&NormWeights>) -> Result<Sym> {
        let o = &self.opts;
        let mut cfg = o.protocol.norm.config(o.frac);
        cfg.in_bits = o.norm_in_bits;
        cfg.gamma_bits = o.gamma_bits;
        let k = x.cols;
        cfg.ring_bits = cfg.ring_bits.max(cfg.min_ring_bits(k, self.opts.frac));
        cfg.out_bits = cfg.ring_bits.max(self.ring.bits());
        let (n, k, ring, frac) = (x.rows, x.cols, x.ring, o.frac);
        self.add_nl(format!("norm {kind:?} {n} {k}"), |nc| {
            norm_cost(kind, &[n, k], ring, frac, &cfg, nc)
        })?;
        // the output ring is at least the activation ring: a local reduction
        Ok(self.sym(n, k))
    }

    fn activation(&mut self, kind: ActKind, x: &Sym) -> Result<Sym> {
        if let Some((_, f)) = self.custom.iter().find(|(k, _)| *k == kind) {
            let f = f.clone();
            let (n, ring) = (x.len(), x.ring);
            let need = f.min_ring_bits()?;
            self.add_nl(format!("custom act {kind:?} {n} {f:?}"), |cfg| {
                let mut e = CostExec::new(cfg);
                if need <= ring.bits() {
                    f.eval(&mut e, &duet_mpc::fixed_math::poly::Sym { ring, n })?;
                    return Ok(e.cost());
                }
                let wide = Ring::new(need)?;
                f.eval(&mut e, &duet_mpc::fixed_math::poly::Sym { ring: wide, n })?;
                Ok(nl::extend_cost(n, ring, wide, cfg) + e.cost())
            })?;
            return Ok(*x);
        }
        let fmt = ActFormat::new(self.ring, self.opts.frac, self.opts.act_range_bits)?;
        let p = self.opts.protocol;
        let n = x.len();
        self.add_nl(format!("act {kind:?} {n}"), |nc| match kind {
            ActKind::Gelu => gelu_cost(n, fmt, p.gelu, nc),
            ActKind::GeluTanh => gelu_new_cost(n, fmt, nc),
            ActKind::Silu => silu_cost(n, fmt, p.silu, nc),
        })?;
        // activations return shares in the activation ring: no conversion
        Ok(*x)
    }

    fn mul(&mut self, a: &Sym, b: &Sym) -> Result<Sym> {
        same_shape("product", a, b)?;
        let (n, ring) = (a.len(), self.ring);
        match self.opts.plan.elementwise {
            MulBackend::Cot => {
                self.add_nl(format!("mul {n}"), |nc| Ok(nl::mul_cost(n, ring, nc)))?;
            }
            MulBackend::He => {
                let params = SlotParameters::new(RingBits(ring.bits()))?;
                if !self.he_mul_ready {
                    // the key flight travels with the product's first flight
                    self.acc.bytes += HeMulClientSetup::setup_cost(&params).bytes;
                    self.he_mul_ready = true;
                }
                let cost = HeElementwiseMul::cost(n, &params);
                self.acc.bytes += cost.bytes;
                self.acc.flights += cost.rounds;
                self.acc.work.slot_products += cost.products as f64;
            }
        }
        let f = self.opts.frac;
        self.trunc(a, f)
    }

    fn kv_scores(
        &mut self,
        cache: &str,
        spec: KvSpec,
        start: usize,
        q: &Sym,
        k: &Sym,
        v: &Sym,
    ) -> Result<Sym> {
        let policy = kv_policy(self.opts.plan.kv_cache)?;
        let r = k.rows;
        if q.rows != spec.heads * r || q.cols != spec.head_dim || v.rows != r {
            return Err(ProtocolError::Config(format!(
                "{cache}: queries {}x{} and {r} key rows for {} heads of width {}",
                q.rows, q.cols, spec.heads, spec.head_dim
            )));
        }
        if !self.kv_ready {
            // the reverse key setup, once per session
            let c = HeKvCache::setup_cost(&self.shared);
            self.acc.bytes += c.bytes;
            self.acc.flights += c.rounds;
            self.kv_ready = true;
        }
        let held = self.kv.get(cache).map_or(0, |&(_, n)| n);
        if start != 0 && held != start {
            return Err(ProtocolError::Config(format!(
                "{cache}: the encrypted cache holds {held} positions, the block starts at {start}"
            )));
        }
        let ctx = start + r;
        self.kv.insert(cache.to_string(), (spec, ctx));
        let params = Arc::clone(&self.shared);
        self.he(format!("kv scores {spec:?} {policy:?} {ctx} {r}"), || {
            let c = HeKvCache::scores_cost(spec, policy, &params, ctx, r)?;
            Ok((c.traffic.bytes, c.traffic.rounds, c.per_party.to_work()))
        })?;
        Ok(self.sym(spec.heads * r, ctx))
    }

    fn kv_context(&mut self, cache: &str, p: &Sym) -> Result<Sym> {
        let policy = kv_policy(self.opts.plan.kv_cache)?;
        let (spec, ctx) = self
            .kv
            .get(cache)
            .copied()
            .ok_or_else(|| ProtocolError::Config(format!("{cache}: no encrypted cache")))?;
        let r = p.rows / spec.heads.max(1);
        let params = Arc::clone(&self.shared);
        self.he(format!("kv context {spec:?} {policy:?} {ctx} {r}"), || {
            let c = HeKvCache::context_cost(spec, policy, &params, ctx, r)?;
            Ok((c.traffic.bytes, c.traffic.rounds, c.per_party.to_work()))
        })?;
        Ok(self.sym(spec.heads * r, spec.head_dim))
    }

    fn choose_token(&mut self, logits: &Sym, choice: &TokenChoice) -> Result<TokenOutcome> {
        let fmt = logit_format(self.ring, &self.opts)?;
        let public = choice.public();
        let (rows, vocab) = (logits.rows, logits.cols);
        self.add_nl(format!("token {rows} {vocab} {public:?}"), |cfg| {
            choose_token_cost(rows, vocab, &fmt, &public, cfg)
        })?;
        Ok(TokenOutcome::Nothing)
    }

    fn reveal(&mut self, x: &Sym) -> Result<Option<Vec<f64>>> {
        self.acc.bytes += 8 * x.len() as u64;
        self.acc.flights += 1;
        Ok(None)
    }
}
