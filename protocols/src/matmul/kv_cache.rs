//! [`HeKvCache`]: the attention products of generation (`scores = q K^T`, `context = P V`)
//! against a key/value cache kept **encrypted at the peer**, so that a decode step sends one
//! fresh ciphertext per party instead of re-encrypting the whole cache.
//!
//! # Setting
//! One layer, `H` query heads over `G` key/value heads of width `d` (grouped-query attention:
//! query head `h` reads key/value head `h / (H/G)`). Every value is an additive share in
//! `Z_{2^l}`: the queries `q` (`H x r x d`, `r` query rows: 1 for a decode step, more for a
//! prefill), the keys and values of every cached position (`ctx x G d`, after rotary positions),
//! the probabilities `P` (`H x r x ctx`). Both parties hold the same state object, one per layer:
//! the protocol is **symmetric**. Each party `A` owns an RLWE key (`N = 8192`,
//! `log q = 150 + 50`, [`duet_fhe::Preset::N8192Q200Pack`]) and holds the peer's public and
//! Galois keys: the client's are the session's keys for shared products, the server's are sent
//! once (the reverse of the session's key setup, [`HeKvCache::setup_cost`]).
//!
//! # Protocol (semi-honest)
//! `q K^T = q_A K_A^T + q_B K_B^T + q_A K_B^T + q_B K_A^T` and the same for `P V`: each party
//! computes its own product locally and one cross term for the peer.
//!
//! * **Step ciphertext** ([`HeKvCache::append`] stores the new rows; [`HeKvCache::scores`] sends):
//!   for each query row, party `A` encrypts under its key one polynomial holding its query share
//!   `q_A` (all heads) and its value share of the new row `V_A[t]`
//!   ([`layout`](self::layout): query head `h` in slot `h`, value head `g` in a slot near the end
//!   of the ring). Seeded: `N log q / 8` bytes. Both parties send theirs in the same flight.
//! * **Scores**: `B` multiplies `A`'s step ciphertext by its own key rows `K_B` (plaintext, all
//!   `ctx` rows, placed as reversed columns): each product coefficient at offset `w - 1` of a slot
//!   is the inner product of one query head with one key row (Cheetah alignment). Columns are
//!   grouped into accumulators so that every score coefficient is hit by exactly its own pairs;
//!   `B` merges up to [`KvPolicy::pack`] accumulators into one ciphertext with the peer's Galois
//!   keys ([`duet_fhe::MacAccumulator::pack`]), adds `-R_B` (fresh uniform mask) at exactly the
//!   score coefficients, re-randomizes with `A`'s public key, keeps only those coefficients,
//!   switches modulus and floods ([`duet_fhe::MacAccumulator::finalize`]). `A` decrypts
//!   `q_A K_B^T - R_B`. Both parties answer in the same flight. `A`'s share:
//!   `q_A K_A^T + R_A + (q_A K_B^T - R_B)`.
//! * **Context**: the step ciphertexts `B` received are its cache of `A`'s values. For every
//!   cached row `t`, `B` multiplies it by `sum_h P_B[h][t] X^(s_h)`, which copies value head
//!   `g(h)` of row `t` into head `h`'s output slot (the other blocks of the row land on slots that
//!   are never sent); summed over the rows that is `P_B V_A` at the output slots. Masked,
//!   re-randomized, extracted, switched and flooded like the scores; one flight both ways.
//!
//! So a decode step costs three flights of each party (step ciphertexts, scores, context), with
//! the SoftMax between the last two.
//!
//! # Parameters
//! The multipliers are uniform shares (`|w| <= 2^(l-1)`), so the flooding of `sum w e` needs
//! `log q >= l + log2 |w| + log2 T + ~45`: `N = 4096` (`log q <= 109`) is refused for every
//! `l >= 29` (test `n4096_is_refused_for_uniform_multipliers`). Splitting the multipliers into
//! digits would fit `N = 4096` but multiplies the blocks of the step ciphertext by the number of
//! digits, and every block meets every column: the score accumulators would hold a few scores
//! each and, without a special prime at `N = 4096`, could not be packed. The session's
//! `N = 8192` packing parameters are used instead; every exchange stays far below the QUIC
//! stream window (64 MiB), so the simultaneous sends of both parties cannot block.
//!
//! # Security
//! Each party sees only (1) the peer's step ciphertexts: RLWE encryptions under the peer's key
//! at a 128-bit row of the HomomorphicEncryption.org table (IND-CPA; the cached ones are never
//! decrypted by anyone), (2) the peer's public and Galois keys (circular security of the
//! automorphic key images, as in every packing scheme), and (3) the peer's answers, which decrypt
//! to its own share times the peer's share minus the peer's fresh uniform mask, i.e. uniform
//! values. The answers are re-randomized with the receiver's public key (their `a` part is
//! pseudorandom: it does not reveal the sender's shares through the receiver's known `a`), carry
//! only score / context coefficients (never partial products of other heads or rows), and
//! their noise, which depends on the sender's shares and on the packing key switches, is flooded
//! with 40-bit statistical security per sent coefficient: the multipliers are uniform shares
//! (the parameters are built for `WeightBound::Uniform`) and every accumulator absorbs at most the
//! parameters' `mac_terms` weight terms (checked by the accumulator; this bounds the context
//! length, [`HeKvCache::max_context`]). Public: the shapes, the context length, the number of
//! query rows, the policy and hence the layout.
//!
//! # Cost
//! Exact, both directions ([`HeKvCache::scores_cost`], [`HeKvCache::context_cost`]; the tests
//! check measured bytes and flights against them). With `r` query rows, `ctx` keys, `C` score
//! ciphertexts per query row and `A_c` context accumulators, each party sends
//!
//! * scores: `r` seeded ciphertexts (`42 + N sum_i ceil(log2 p_i) / 8` = 153,642 bytes) and
//!   `r C` output ciphertexts of `14 + ceil((m b + N a) / 8)` bytes (`m` scores each; `b`, `a` the
//!   output widths: 78 and 48 bits at `l = 37`, so 49,166 bytes plus 9.75 per score);
//!   4 flights (two simultaneous exchanges);
//! * context: `r A_c` output ciphertexts with `d` values per head; 2 flights.
//!
//! Per party work ([`KvWork`], [`KvWork::to_work`]): scores: `r` encryptions and expansions, one
//! weight polynomial per score accumulator, `r` products per accumulator, `r sum (pack - 1)`
//! key switches, `r C` finalizations and decryptions; context: `r A_c ctx` weight polynomials
//! and products, `r A_c` finalizations and decryptions. Memory: the peer's rows, `2 N L 8 =
//! 393,216` bytes each expanded ([`KvStorage::Expanded`]) or half of it compact (expanded at each
//! use).
//!
//! The layout ([`layout`](self::layout)) puts 54 scores in a score accumulator for SmolLM2's
//! shape (9 query heads over 3 key/value heads of width 64: 10 accumulators at `ctx = 60`), 6
//! to 7 for GPT-2's (12 heads, no grouping: every key row meets every query head of the step
//! ciphertext, 11 of 12 pairs are garbage), and all 9 (resp. 7) heads in one context
//! accumulator. One decode step of one SmolLM2 layer (`r = 1`, `l = 37`, both directions;
//! `cargo test --release -p duet-protocols --test suite kv_cache:: -- --ignored --nocapture cost_table`):
//!
//! | ctx | score accumulators | `pack 16`, padded: bytes, key switches per party | `pack 16`, split | no packing | [`super::HeMatMulShared`] (both products) |
//! |---|---|---|---|---|---|
//! | 40 | 7 | 522,200 B, 7 | 718,864 B, 4 | 1,112,198 B | 7,319,340 B |
//! | 60 | 10 | 525,710 B, 15 | 624,042 B, 8 | 1,410,708 B | 7,322,850 B |
//! | 128 | 22 | 635,976 B, 22 | 734,308 B, 19 | 2,602,638 B | 7,334,784 B |
//! | 512 | 86 | 1,096,696 B, 82 | 1,195,028 B, 79 | 8,963,342 B | 15,698,844 B |
//!
//! So 30 layers cost about 15.7 MB per token at `ctx` 40 to 60 instead of 220 MB, in 6 flights
//! per layer instead of 8; setup adds the server's keys once (3,840,628 bytes). Measured (bench
//! `kv_cache`, both parties in one process on the shared 2-core machine at load average 9,
//! so every figure is inflated several times): a whole step of one layer takes 209 ms
//! (`ctx` 40) and 361 ms (`ctx` 60) with `pack 16` padded, 168 and 241 ms split into powers of
//! two, 154 and 186 ms without packing, against 8.9 s and 8.1 s for the two
//! [`super::HeMatMulShared`] products in the same conditions.
//!
//! # Use
//! One [`HeKvCache`] per layer and party; per step: [`HeKvCache::append`] (the new key and value
//! rows, after rotary positions), [`HeKvCache::scores`], the SoftMax on the shares,
//! [`HeKvCache::context`].

mod he;
mod layout;

use std::sync::Arc;

use duet_fhe::{OutputCiphertext, RlweParameters, SeededCiphertext, WeightBound};
use duet_transport::Channel;
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};

use self::he::PeerRow;
use self::layout::{Layout, ScorePlan};
use super::ring::check_ring;
use super::setup::{HeClientSetup, HeServerSetup};
use super::Cost;
use crate::attention::AttentionSpec;
use crate::cost_model::Work;
use crate::error::{ProtocolError, Result};

/// Largest context (cached positions) a [`HeKvCache`] accepts; the noise budget may lower it
/// ([`HeKvCache::max_context`]).
pub const KV_MAX_CONTEXT: usize = 512;

/// The public shape of one layer's cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvSpec {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl KvSpec {
    /// `heads` query heads over `kv_heads` key/value heads of width `head_dim`.
    pub fn new(heads: usize, kv_heads: usize, head_dim: usize) -> Self {
        Self {
            heads,
            kv_heads,
            head_dim,
        }
    }

    /// The cache shape of an attention block.
    pub fn from_attention(spec: &AttentionSpec) -> Self {
        Self::new(spec.heads, spec.kv_heads, spec.head_dim)
    }

    /// Values per cached row (`kv_heads x head_dim`).
    pub fn row_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Where a party keeps the peer's cached rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvStorage {
    /// NTT form, `2 N L 8` bytes per row: fastest.
    #[default]
    Expanded,
    /// As received, `N L 8` bytes per row; expanded at each context product.
    Compact,
}

/// Public protocol choices (both parties must use the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KvPolicy {
    /// Most score accumulators merged into one returned ciphertext (a power of two, at most the
    /// slot width and the parameters' `max_pack`); 1 = no packing. Merging `D` accumulators
    /// takes `D - 1` key switches (about 2 ms each at `N = 8192` on one quiet core) and saves
    /// `D - 1` ciphertexts (49,152 bytes of `a` each at `l = 37`).
    pub pack: usize,
    /// For a last group of a number of accumulators that is not a power of two: pad it to the
    /// next power of two (one ciphertext, but the padding's merges still cost key switches) or
    /// split it into powers of two (more ciphertexts, one key switch per ciphertext saved).
    pub pad: bool,
    /// Storage of the peer's rows.
    pub storage: KvStorage,
}

impl Default for KvPolicy {
    fn default() -> Self {
        Self {
            pack: 16,
            pad: true,
            storage: KvStorage::Expanded,
        }
    }
}

/// A party's keys for the protocol: its own (encrypts its step ciphertexts, decrypts the peer's
/// answers) and the peer's public and Galois keys (re-randomize and pack the answers).
#[derive(Clone, Copy, Debug)]
pub struct KvKeys<'a> {
    /// Own key material.
    pub own: &'a HeClientSetup,
    /// The peer's public material.
    pub peer: &'a HeServerSetup,
}

impl<'a> KvKeys<'a> {
    /// Both halves for the same parameters.
    pub fn new(own: &'a HeClientSetup, peer: &'a HeServerSetup) -> Result<Self> {
        if own.params.id() != peer.params.id() {
            return Err(ProtocolError::Config(
                "KV cache keys: own and peer keys are for different parameters".into(),
            ));
        }
        Ok(Self { own, peer })
    }
}

/// HE work of one party in one call (both parties do the same).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWork {
    /// Step ciphertexts encrypted.
    pub encryptions: u64,
    /// Plaintext polynomials prepared (`L` NTTs each).
    pub weight_polys: u64,
    /// Plaintext-ciphertext products.
    pub products: u64,
    /// Key switches of packing.
    pub key_switches: u64,
    /// Answers finalized (re-randomize, extract, switch, flood).
    pub finalizes: u64,
    /// Answers decrypted.
    pub decryptions: u64,
    /// Received ciphertexts expanded (`L` NTTs and a seed expansion each).
    pub expansions: u64,
}

impl core::ops::Add for KvWork {
    type Output = KvWork;
    fn add(self, o: KvWork) -> KvWork {
        KvWork {
            encryptions: self.encryptions + o.encryptions,
            weight_polys: self.weight_polys + o.weight_polys,
            products: self.products + o.products,
            key_switches: self.key_switches + o.key_switches,
            finalizes: self.finalizes + o.finalizes,
            decryptions: self.decryptions + o.decryptions,
            expansions: self.expansions + o.expansions,
        }
    }
}

impl KvWork {
    /// The cost model's work of one party (`N = 8192`): products, with each prepared weight
    /// polynomial counted as one more product (a comparable `L`-NTT step); key switches;
    /// encryptions, with each expansion counted as one more (the same NTTs); decryptions,
    /// with each finalize counted as one more (a comparable fixed step). Traffic is not
    /// included.
    pub fn to_work(&self) -> Work {
        Work {
            he_products: (self.products + self.weight_polys) as f64,
            key_switches: self.key_switches as f64,
            encryptions: (self.encryptions + self.expansions) as f64,
            decryptions: (self.decryptions + self.finalizes) as f64,
            ..Work::default()
        }
    }
}

/// Exact cost of one call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvCost {
    /// Traffic of both directions (each party sends half); `key_switches` and `products` are
    /// both parties' totals.
    pub traffic: Cost,
    /// Work of each party.
    pub per_party: KvWork,
}

impl core::ops::Add for KvCost {
    type Output = KvCost;
    fn add(self, o: KvCost) -> KvCost {
        let mut traffic = self.traffic + o.traffic;
        traffic.rounds = self.traffic.rounds + o.traffic.rounds;
        KvCost {
            traffic,
            per_party: self.per_party + o.per_party,
        }
    }
}

/// Where a party is in a step.
#[derive(Clone, Debug)]
enum Phase {
    /// Ready for new rows.
    Idle,
    /// `r` rows appended, scores not yet requested.
    Appended { r: usize },
    /// Step ciphertexts sent; the queries kept for the local product.
    Requested { r: usize, q: Vec<u64> },
    /// Answers sent; own product plus own masks kept.
    ScoresAnswered { r: usize, partial: Vec<u64> },
    /// Scores done; context expected.
    Scored { r: usize },
    /// Context answers sent.
    ContextAnswered { r: usize, partial: Vec<u64> },
}

/// One layer's KV cache at one party: its own key and value shares (plaintext), the peer's
/// step ciphertexts (its encrypted value rows), and the step protocol. The protocol, its
/// security and its cost are documented in `protocols/src/matmul/kv_cache.rs`. Calls must come
/// in the order append, scores, context (an out-of-order call is an error and changes nothing);
/// an error in the middle of a step (a malformed peer message, a transport failure) leaves the
/// cache unusable, as it ends the session. Cloning copies the whole state (shares and the
/// peer's rows).
#[derive(Clone, Debug)]
pub struct HeKvCache {
    spec: KvSpec,
    policy: KvPolicy,
    params: Arc<RlweParameters>,
    layout: Arc<Layout>,
    max_context: usize,
    k: Vec<u64>,
    v: Vec<u64>,
    peer: Vec<PeerRow>,
    plan: ScorePlan,
    phase: Phase,
}

fn cfg(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::Config(msg.into())
}

/// Sends `mine`, receives `expect` messages of at most `max` bytes each (checked before
/// allocating: the peer decides the lengths).
fn exchange<C: Channel>(
    ch: &mut C,
    mine: &[Vec<u8>],
    expect: usize,
    max: usize,
) -> Result<Vec<Vec<u8>>> {
    for m in mine {
        ch.send_bytes(m)?;
    }
    ch.flush()?;
    let mut theirs = Vec::with_capacity(expect);
    for _ in 0..expect {
        theirs.push(ch.recv_bytes_max(max)?);
    }
    Ok(theirs)
}

fn add_mod(a: &[u64], b: &[u64], mask: u64) -> Vec<u64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.wrapping_add(*y) & mask)
        .collect()
}

impl HeKvCache {
    /// An empty cache for `spec` under `params` (the parameters of both parties' keys: built for
    /// uniform multipliers, e.g. `RlweParameters::preset(N8192Q200Pack, l, Uniform)`).
    pub fn new(spec: KvSpec, policy: KvPolicy, params: &Arc<RlweParameters>) -> Result<Self> {
        let layout = Arc::new(Layout::new(
            spec.heads,
            spec.kv_heads,
            spec.head_dim,
            params.degree(),
        )?);
        Self::with_layout(spec, policy, params, layout)
    }

    fn with_layout(
        spec: KvSpec,
        policy: KvPolicy,
        params: &Arc<RlweParameters>,
        layout: Arc<Layout>,
    ) -> Result<Self> {
        if params.weight_bound() != WeightBound::Uniform {
            return Err(cfg(
                "KV cache: the parameters must be built for uniform multipliers (shares)",
            ));
        }
        let p = policy.pack;
        if !p.is_power_of_two() || p > layout.w || p > params.max_pack() {
            return Err(cfg(format!(
                "KV cache: packing factor {p} must be a power of two <= {} (slot width) and <= {} (parameters)",
                layout.w,
                params.max_pack()
            )));
        }
        let max_context =
            KV_MAX_CONTEXT.min(params.mac_terms() / layout.max_context_heads().max(1));
        if max_context == 0 {
            return Err(cfg("KV cache: no context fits the noise budget"));
        }
        Ok(Self {
            spec,
            policy,
            params: Arc::clone(params),
            layout,
            max_context,
            k: Vec::new(),
            v: Vec::new(),
            peer: Vec::new(),
            plan: ScorePlan::default(),
            phase: Phase::Idle,
        })
    }

    /// An empty cache with the same spec, policy, parameters and layout (another layer).
    pub fn empty_like(&self) -> Self {
        Self {
            spec: self.spec,
            policy: self.policy,
            params: Arc::clone(&self.params),
            layout: Arc::clone(&self.layout),
            max_context: self.max_context,
            k: Vec::new(),
            v: Vec::new(),
            peer: Vec::new(),
            plan: ScorePlan::default(),
            phase: Phase::Idle,
        }
    }

    /// The shape.
    pub fn spec(&self) -> KvSpec {
        self.spec
    }
    /// The policy.
    pub fn policy(&self) -> KvPolicy {
        self.policy
    }
    /// Positions held (own rows).
    pub fn len(&self) -> usize {
        self.k.len() / self.spec.row_width().max(1)
    }
    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.k.is_empty()
    }
    /// Largest context accepted: [`KV_MAX_CONTEXT`], or less if `max_context x` (heads of a
    /// context accumulator) would exceed the parameters' `mac_terms`.
    pub fn max_context(&self) -> usize {
        self.max_context
    }
    /// Bytes held for the peer's rows.
    pub fn peer_memory_bytes(&self) -> u64 {
        let per = (self.params.degree() * self.params.moduli().len() * 8) as u64;
        self.peer
            .iter()
            .map(|r| match r {
                PeerRow::Expanded(_) => 2 * per,
                PeerRow::Compact(_) => per,
            })
            .sum()
    }

    fn check_keys(&self, keys: &KvKeys<'_>) -> Result<()> {
        if keys.own.params.id() != self.params.id() || keys.peer.params.id() != self.params.id() {
            return Err(cfg(
                "KV cache: keys made for other parameters than the cache",
            ));
        }
        Ok(())
    }

    fn phase_error(&self, want: &str) -> ProtocolError {
        cfg(format!(
            "KV cache: {want} called out of order (state {:?})",
            match &self.phase {
                Phase::Idle => "idle",
                Phase::Appended { .. } => "rows appended",
                Phase::Requested { .. } => "scores requested",
                Phase::ScoresAnswered { .. } => "scores answered",
                Phase::Scored { .. } => "scores done",
                Phase::ContextAnswered { .. } => "context answered",
            }
        ))
    }

    /// Stores this party's shares of the new rows: `k` and `v` are `r x kv_heads d` (keys after
    /// rotary positions). Local; the values travel with the next [`Self::scores`]. Refuses a
    /// context above [`Self::max_context`] and calls out of order.
    pub fn append(&mut self, k: &[u64], v: &[u64]) -> Result<()> {
        if !matches!(self.phase, Phase::Idle) {
            return Err(self.phase_error("append"));
        }
        let w = self.spec.row_width();
        if k.is_empty() || k.len() % w != 0 {
            return Err(ProtocolError::Shape {
                what: "key rows",
                expected: w,
                got: k.len(),
            });
        }
        let r = k.len() / w;
        let mask = self.params.plain_mask();
        check_ring("key rows", k, r * w, mask)?;
        check_ring("value rows", v, r * w, mask)?;
        if self.len() + r > self.max_context {
            return Err(cfg(format!(
                "KV cache: context {} exceeds the maximum {}",
                self.len() + r,
                self.max_context
            )));
        }
        self.k.extend_from_slice(k);
        self.v.extend_from_slice(v);
        self.phase = Phase::Appended { r };
        Ok(())
    }

    /// Core, message out: this party's step ciphertexts for its query shares `q`
    /// (`heads x r x d`, `r` the rows of the last append).
    pub fn scores_request<R: RngCore + CryptoRng>(
        &mut self,
        own: &HeClientSetup,
        q: &[u64],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let Phase::Appended { r } = self.phase else {
            return Err(self.phase_error("scores"));
        };
        if own.params.id() != self.params.id() {
            return Err(cfg("KV cache: own key made for other parameters"));
        }
        let (h, d, w) = (self.spec.heads, self.spec.head_dim, self.spec.row_width());
        check_ring("queries", q, h * r * d, self.params.plain_mask())?;
        let from = self.v.len() - r * w;
        let v = self
            .v
            .get(from..)
            .ok_or_else(|| cfg("KV cache: value rows"))?;
        let msgs = he::encrypt_steps(own, &self.layout, q, v, r, rng)?;
        self.phase = Phase::Requested { r, q: q.to_vec() };
        Ok(msgs)
    }

    /// Query rows of the current step (0 when none).
    pub fn step_rows(&self) -> usize {
        match self.phase {
            Phase::Idle => 0,
            Phase::Appended { r }
            | Phase::Requested { r, .. }
            | Phase::ScoresAnswered { r, .. }
            | Phase::Scored { r }
            | Phase::ContextAnswered { r, .. } => r,
        }
    }

    /// Core, message in and out: absorbs the peer's step ciphertexts (count, length, version
    /// and parameters checked; stored as the peer's new rows) and answers them with the masked
    /// products against this party's key rows (one message per query row and score chunk).
    pub fn scores_respond<R: RngCore + CryptoRng>(
        &mut self,
        peer: &HeServerSetup,
        msgs: &[Vec<u8>],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let Phase::Requested { r, ref q } = self.phase else {
            return Err(self.phase_error("scores_respond"));
        };
        if peer.params.id() != self.params.id() {
            return Err(cfg("KV cache: peer keys made for other parameters"));
        }
        if msgs.len() != r {
            return Err(ProtocolError::Protocol(format!(
                "{} step ciphertexts, expected {r}",
                msgs.len()
            )));
        }
        let compact = self.policy.storage == KvStorage::Compact;
        let rows = he::parse_steps(&self.params, msgs, compact)?;
        let xs = rows
            .iter()
            .map(|row| match row {
                PeerRow::Expanded(c) => Ok(c.clone()),
                PeerRow::Compact(s) => Ok(s.expand(&self.params)?),
            })
            .collect::<Result<Vec<_>>>()?;
        let ctx = self.len();
        if self.peer.len() + r != ctx {
            return Err(cfg("KV cache: the peer's rows and the own rows disagree"));
        }
        self.plan.extend(&self.layout, ctx)?;
        let chunks = self.plan.chunks(self.policy.pack, self.policy.pad);
        let (out, masks) = he::score_responses(
            peer,
            &self.layout,
            &self.plan,
            &chunks,
            &xs,
            &self.k,
            ctx,
            rng,
        )?;
        let local = self.scores_local(q, r, ctx);
        let partial = add_mod(&local, &masks, self.params.plain_mask());
        self.peer.extend(rows);
        self.phase = Phase::ScoresAnswered { r, partial };
        Ok(out)
    }

    /// Core, message in: the peer's score answers; returns this party's share of `q K^T`
    /// (`heads x r x ctx`).
    pub fn scores_finish(&mut self, own: &HeClientSetup, msgs: &[Vec<u8>]) -> Result<Vec<u64>> {
        let Phase::ScoresAnswered { r, ref partial } = self.phase else {
            return Err(self.phase_error("scores_finish"));
        };
        let ctx = self.len();
        let chunks = self.plan.chunks(self.policy.pack, self.policy.pad);
        let got = he::decrypt_scores(own, &self.layout, &self.plan, &chunks, msgs, r, ctx)?;
        let share = add_mod(partial, &got, self.params.plain_mask());
        self.phase = Phase::Scored { r };
        Ok(share)
    }

    /// Core, message out: the masked context products of this party's probability shares `p`
    /// (`heads x r x ctx`) with the peer's cached value rows.
    pub fn context_respond<R: RngCore + CryptoRng>(
        &mut self,
        peer: &HeServerSetup,
        p: &[u64],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>> {
        let Phase::Scored { r } = self.phase else {
            return Err(self.phase_error("context"));
        };
        if peer.params.id() != self.params.id() {
            return Err(cfg("KV cache: peer keys made for other parameters"));
        }
        let ctx = self.len();
        check_ring(
            "probabilities",
            p,
            self.spec.heads * r * ctx,
            self.params.plain_mask(),
        )?;
        let (out, masks) = he::context_responses(peer, &self.layout, &self.peer, p, r, rng)?;
        let local = self.context_local(p, r, ctx);
        let partial = add_mod(&local, &masks, self.params.plain_mask());
        self.phase = Phase::ContextAnswered { r, partial };
        Ok(out)
    }

    /// Core, message in: the peer's context answers; returns this party's share of `P V`
    /// (`heads x r x d`).
    pub fn context_finish(&mut self, own: &HeClientSetup, msgs: &[Vec<u8>]) -> Result<Vec<u64>> {
        let Phase::ContextAnswered { r, ref partial } = self.phase else {
            return Err(self.phase_error("context_finish"));
        };
        let got = he::decrypt_context(own, &self.layout, msgs, r)?;
        let share = add_mod(partial, &got, self.params.plain_mask());
        self.phase = Phase::Idle;
        Ok(share)
    }

    /// The longest answer message of the peer: an output ciphertext with all `N` coefficients.
    fn answer_max_bytes(&self) -> usize {
        OutputCiphertext::serialized_len(&self.params, self.params.degree())
    }

    /// Messages of each party in the scores' second flight (after the step ciphertexts).
    pub fn score_answer_count(&self) -> usize {
        self.step_rows() * self.plan.chunks(self.policy.pack, self.policy.pad).len()
    }

    /// Driver: sends this party's step ciphertexts for `q` (`heads x r x d`), answers the
    /// peer's, returns this party's share of `q K^T` (`heads x r x ctx`). Two simultaneous
    /// exchanges.
    pub fn scores<C: Channel, R: RngCore + CryptoRng>(
        &mut self,
        ch: &mut C,
        keys: &KvKeys<'_>,
        q: &[u64],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        self.check_keys(keys)?;
        let mine = self.scores_request(keys.own, q, rng)?;
        // step ciphertexts are seeded; answers are output ciphertexts (at most N coefficients)
        let step_len = SeededCiphertext::serialized_len(&self.params);
        let theirs = exchange(ch, &mine, mine.len(), step_len)?;
        let answers = self.scores_respond(keys.peer, &theirs, rng)?;
        let got = exchange(ch, &answers, answers.len(), self.answer_max_bytes())?;
        self.scores_finish(keys.own, &got)
    }

    /// Driver: answers with this party's probability shares `p` (`heads x r x ctx`), returns
    /// its share of `P V` (`heads x r x d`). One simultaneous exchange.
    pub fn context<C: Channel, R: RngCore + CryptoRng>(
        &mut self,
        ch: &mut C,
        keys: &KvKeys<'_>,
        p: &[u64],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        self.check_keys(keys)?;
        let answers = self.context_respond(keys.peer, p, rng)?;
        let got = exchange(ch, &answers, answers.len(), self.answer_max_bytes())?;
        self.context_finish(keys.own, &got)
    }

    /// `q_own K_own^T`: `heads x r x ctx`.
    fn scores_local(&self, q: &[u64], r: usize, ctx: usize) -> Vec<u64> {
        let (d, w, grp) = (self.spec.head_dim, self.spec.row_width(), self.layout.group);
        let mask = self.params.plain_mask();
        let mut out = Vec::with_capacity(self.spec.heads * r * ctx);
        for (hr, qrow) in q.chunks(d).enumerate() {
            let g = (hr / r.max(1)) / grp.max(1);
            for t in 0..ctx {
                let krow = self
                    .k
                    .get(t * w + g * d..t * w + (g + 1) * d)
                    .unwrap_or(&[]);
                let s = qrow
                    .iter()
                    .zip(krow)
                    .fold(0u64, |a, (x, y)| a.wrapping_add(x.wrapping_mul(*y)));
                out.push(s & mask);
            }
        }
        out
    }

    /// `P_own V_own`: `heads x r x d`.
    fn context_local(&self, p: &[u64], r: usize, ctx: usize) -> Vec<u64> {
        let (d, w, grp) = (self.spec.head_dim, self.spec.row_width(), self.layout.group);
        let mask = self.params.plain_mask();
        let mut out = Vec::with_capacity(self.spec.heads * r * d);
        for (hr, prow) in p.chunks(ctx.max(1)).enumerate() {
            let g = (hr / r.max(1)) / grp.max(1);
            let mut acc = vec![0u64; d];
            for (t, &pv) in prow.iter().enumerate() {
                let vrow = self
                    .v
                    .get(t * w + g * d..t * w + (g + 1) * d)
                    .unwrap_or(&[]);
                for (a, &x) in acc.iter_mut().zip(vrow) {
                    *a = a.wrapping_add(pv.wrapping_mul(x));
                }
            }
            out.extend(acc.into_iter().map(|x| x & mask));
        }
        out
    }

    /// Setup traffic of the protocol beyond the session's shared-product keys: the server's
    /// public and Galois keys, sent once (the server runs [`HeClientSetup::run`], the client
    /// [`HeServerSetup::run`], with the same parameters).
    pub fn setup_cost(params: &RlweParameters) -> Cost {
        HeClientSetup::setup_cost(params)
    }

    /// Exact cost of [`Self::scores`] with `r` query rows against `ctx` keys (the rows
    /// included).
    pub fn scores_cost(
        spec: KvSpec,
        policy: KvPolicy,
        params: &Arc<RlweParameters>,
        ctx: usize,
        r: usize,
    ) -> Result<KvCost> {
        let layout = Layout::new(spec.heads, spec.kv_heads, spec.head_dim, params.degree())?;
        let mut plan = ScorePlan::default();
        plan.extend(&layout, ctx)?;
        Ok(Self::scores_cost_of(&layout, &plan, policy, params, r))
    }

    fn scores_cost_of(
        l: &Layout,
        plan: &ScorePlan,
        policy: KvPolicy,
        params: &RlweParameters,
        r: usize,
    ) -> KvCost {
        let chunks = plan.chunks(policy.pack, policy.pad);
        let r64 = r as u64;
        let step = SeededCiphertext::serialized_len(params) as u64;
        let answers: u64 = chunks
            .iter()
            .map(|c| {
                let m: usize = plan
                    .accs
                    .iter()
                    .skip(c.start)
                    .take(c.len)
                    .map(|a| a.outputs(l))
                    .sum();
                OutputCiphertext::serialized_len(params, m) as u64
            })
            .sum();
        let per_party = r64 * (step + answers);
        let ks: u64 = chunks.iter().map(|c| (c.pack - 1) as u64).sum();
        let work = KvWork {
            encryptions: r64,
            weight_polys: plan.accs.len() as u64,
            products: r64 * plan.accs.len() as u64,
            key_switches: r64 * ks,
            finalizes: r64 * chunks.len() as u64,
            decryptions: r64 * chunks.len() as u64,
            expansions: r64,
        };
        KvCost {
            traffic: Cost {
                bytes: 2 * per_party,
                rounds: 4,
                client_to_server: per_party,
                server_to_client: per_party,
                messages: 2 * r64 * (1 + chunks.len() as u64),
                key_switches: 2 * work.key_switches,
                products: 2 * work.products,
            },
            per_party: work,
        }
    }

    /// Exact cost of [`Self::context`] with `r` query rows against `ctx` cached rows.
    pub fn context_cost(
        spec: KvSpec,
        policy: KvPolicy,
        params: &Arc<RlweParameters>,
        ctx: usize,
        r: usize,
    ) -> Result<KvCost> {
        let layout = Layout::new(spec.heads, spec.kv_heads, spec.head_dim, params.degree())?;
        Ok(Self::context_cost_of(&layout, policy, params, ctx, r))
    }

    fn context_cost_of(
        l: &Layout,
        policy: KvPolicy,
        params: &RlweParameters,
        ctx: usize,
        r: usize,
    ) -> KvCost {
        let (r64, c64) = (r as u64, ctx as u64);
        let accs = l.context.len() as u64;
        let answers: u64 = l
            .context
            .iter()
            .map(|a| OutputCiphertext::serialized_len(params, a.len() * l.d) as u64)
            .sum();
        let per_party = r64 * answers;
        let work = KvWork {
            weight_polys: r64 * accs * c64,
            products: r64 * accs * c64,
            finalizes: r64 * accs,
            decryptions: r64 * accs,
            expansions: if policy.storage == KvStorage::Compact {
                r64 * accs * c64
            } else {
                0
            },
            ..KvWork::default()
        };
        KvCost {
            traffic: Cost {
                bytes: 2 * per_party,
                rounds: 2,
                client_to_server: per_party,
                server_to_client: per_party,
                messages: 2 * r64 * accs,
                key_switches: 0,
                products: 2 * work.products,
            },
            per_party: work,
        }
    }

    /// Exact cost of the next [`Self::scores`] of this cache for `r` query rows (after an
    /// append of `r` rows).
    pub fn next_scores_cost(&self, r: usize) -> Result<KvCost> {
        let mut plan = self.plan.clone();
        plan.extend(&self.layout, self.len())?;
        Ok(Self::scores_cost_of(
            &self.layout,
            &plan,
            self.policy,
            &self.params,
            r,
        ))
    }

    /// Exact cost of the next [`Self::context`] of this cache for `r` query rows.
    pub fn next_context_cost(&self, r: usize) -> KvCost {
        Self::context_cost_of(&self.layout, self.policy, &self.params, self.len(), r)
    }

    /// Score accumulators and answer ciphertexts per query row for the current context.
    pub fn score_layout(&self) -> (usize, usize) {
        let mut plan = self.plan.clone();
        if plan.extend(&self.layout, self.len()).is_err() {
            return (0, 0);
        }
        (
            plan.accs.len(),
            plan.chunks(self.policy.pack, self.policy.pad).len(),
        )
    }
}
