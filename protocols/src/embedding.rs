//! `PrivateEmbedding`: private token-embedding lookup, the server's table `T` (`vocab x hidden`)
//! indexed by the client's token ids, ending in additive shares of the rows `T[id_r]`.
//!
//! # Protocol (semi-honest, RLWE with coefficient encoding, after [`HeClientSetup`])
//! The client turns its `seq` ids into the one-hot matrix `X` (`seq x vocab`, `X[r][id_r] = 1`),
//! which it holds entirely, and the two parties run [`HeMatMul`] on `X T` with the client holding
//! all of `X` (`x_s = None`, no bias):
//!
//! 1. Client -> server (one flight): one seeded RLWE ciphertext per (row block, inner block) of
//!    `X` under the client's key.
//! 2. Server: multiply-accumulates against `T`'s blocks, packs (for packing parameters), draws a
//!    uniform mask `R` (`seq x hidden`), adds `-R`, re-randomizes with the public key, switches
//!    modulus and floods (40-bit statistical); server -> client (one flight): the output
//!    ciphertexts.
//! 3. Client: decrypts `X T - R`, i.e. `T[id_r] - R_r` for every row `r`; the server's share is `R`.
//!
//! Ids are checked (`< vocab`) by the client before anything is sent. Position and token-type
//! embeddings are not part of this protocol: positions are public, so the server adds those rows
//! to its share locally.
//!
//! The block plan is [`EMBEDDING_POLICY`] (fewest bytes) on the parameters of
//! [`PrivateEmbedding::params`]; both parties derive it from the public `(seq, vocab, hidden)`.
//!
//! # Security
//! The server sees only RLWE ciphertexts under the client's key (IND-CPA; the parameters are a
//! row of the HomomorphicEncryption.org 128-bit table, see [`PrivateEmbedding::params`]): it
//! learns nothing about the ids, not even whether two are equal (the encryptions are fresh).
//! The client receives re-randomized ciphertexts carrying only the output coefficients, their
//! table-dependent noise flooded with 40-bit statistical security, and decrypts `T[id] - R` with
//! `R` uniform: a uniform share. Both shares are uniform in `Z_{2^l}`.
//!
//! # Cost
//! [`PrivateEmbedding::cost`] (exact): two flights; client -> server `seq * vocab / (n_b d_b)`
//! seeded ciphertexts (rounded up per block), server -> client the output ciphertexts of the
//! `seq x hidden` result. Server compute: `seq vocab hidden / (n_b d_b k_b)` polynomial products
//! (the whole table is touched once per token, as any lookup that hides the ids from the server
//! must), `D - 1` key switches per packing group. The table's weight polynomials are prepared
//! on the fly (cached they would take `N L 8` bytes per block of `d_b k_b` weights).
//! Client memory: the one-hot matrix, `8 seq vocab` bytes (31 MB for 128 x 30522).
//!
//! Figures (`duet bench op embedding`, 2 shared and busy cores, both parties in one process,
//! `l = 37`, `|t| <= 2^12`, `N = 4096`): 128 x 30522 x 768 (BERT-base) 73.1 MB online
//! (53.3 MB up, 19.8 MB down), 55 KB setup, about 76 s, 0.64 GB peak RSS; 16 x 30522 x 384
//! (MiniLM) 16.2 MB. The server's work, `seq vocab hidden / N` products, dominates.
//!
//! # Alternative: [`ServerKeyEmbedding`]
//! For repeated sessions with one model, the server-key direction moves the table once
//! (encrypted under the server's key, cached by the client: 341 MB for BERT-base, 171 MB for
//! MiniLM) and then needs one flight of `seq` small ciphertexts per lookup (BERT-base 128
//! tokens: 4.1 MB, about 0.5 s) and no per-session key setup. See its documentation.

use std::sync::Arc;

use duet_fhe::{
    MacAccumulator, MacTerms, OutputCiphertext, PlainWeights, Preset as HePreset, PublicKey,
    RingBits, RlweParameters, RlweParametersBuilder, SecretKey, SeededCiphertext, WeightBound,
};
use duet_transport::Channel;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rayon::prelude::*;

use crate::error::{ProtocolError, Result};
use crate::matmul::{
    Cost, HeClientSetup, HeMatMul, HeServerSetup, HeWeights, LayoutPolicy, MatmulShape,
};

/// The block-plan policy of the lookup (public, both parties use it).
pub const EMBEDDING_POLICY: LayoutPolicy = LayoutPolicy::MinBytes;

/// The preferred HE parameter preset of the lookup: `N = 4096`, `log2 q = 109`
/// (HomomorphicEncryption.org 128-bit table row `N = 4096, log2 q <= 109`): the fastest and,
/// for BERT's table, the fewest bytes, and its setup is a public key only (55 KB).
pub const EMBEDDING_PRESET: HePreset = HePreset::N4096Q109;

/// The presets [`PrivateEmbedding::params`] tries, in order: [`EMBEDDING_PRESET`], then
/// `N = 8192` with packing (row `N = 8192, log2 (q P) <= 218`), then `N = 8192, log2 q = 186`
/// (same row), for workloads (wide shares, large tables) the smaller ring cannot decrypt.
pub const EMBEDDING_PRESETS: [HePreset; 3] = [
    EMBEDDING_PRESET,
    HePreset::N8192Q200Pack,
    HePreset::N8192Q186,
];

/// The server's embedding table `T` (`vocab x hidden`, row-major, signed fixed-point integers with
/// `|t| <=` the parameters' weight bound). Nothing in it is ever sent in the clear.
#[derive(Debug)]
pub struct EmbeddingTable {
    params: Arc<RlweParameters>,
    vocab: usize,
    hidden: usize,
    /// The table as the matmul's weights (`vocab x hidden`), kept once: each lookup prepares
    /// its weight polynomials on the fly from it.
    weights: HeWeights,
}

impl EmbeddingTable {
    /// Validates the shape (`table.len() == vocab * hidden`, both nonzero), the bound (`|t| <=`
    /// `params.max_weight_abs()`) and that `vocab` fits the parameters' term budget.
    pub fn new(
        params: &Arc<RlweParameters>,
        vocab: usize,
        hidden: usize,
        table: Vec<i64>,
    ) -> Result<Self> {
        if vocab == 0 || hidden == 0 || table.len() != vocab.saturating_mul(hidden) {
            return Err(ProtocolError::Shape {
                what: "embedding table",
                expected: vocab.saturating_mul(hidden),
                got: table.len(),
            });
        }
        if vocab > params.mac_terms() {
            return Err(ProtocolError::Config(format!(
                "vocabulary {vocab} exceeds the parameters' mac_terms {} (use PrivateEmbedding::params)",
                params.mac_terms()
            )));
        }
        let bound = params.max_weight_abs();
        if let Some(bad) = table.iter().find(|v| u128::from(v.unsigned_abs()) > bound) {
            return Err(ProtocolError::Config(format!(
                "table entry {bad} exceeds the parameters' weight bound {bound}"
            )));
        }
        let weights = HeWeights::new(params, vocab, hidden, table, None)?;
        Ok(Self {
            params: Arc::clone(params),
            vocab,
            hidden,
            weights,
        })
    }

    /// `(vocab, hidden)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.vocab, self.hidden)
    }
}

/// Private embedding lookup. See the module documentation (`embedding.rs`) for the protocol,
/// its security and its cost.
#[derive(Clone, Copy, Debug)]
pub struct PrivateEmbedding;

impl PrivateEmbedding {
    /// The parameters of the lookup for share width `ring_bits` (`l`), table entries with
    /// `|t| <= max_abs`, and vocabularies up to `max_vocab` (the number of weight terms per
    /// output): the first of [`EMBEDDING_PRESETS`] whose noise budget decrypts this workload
    /// exactly (e.g. `N = 4096` for `l = 37`, `|t| <= 2^12`, BERT's 30522 tokens).
    pub fn params(ring_bits: u32, max_abs: u64, max_vocab: usize) -> Result<Arc<RlweParameters>> {
        let mut last = None;
        for preset in EMBEDDING_PRESETS {
            match Self::params_with(preset, ring_bits, max_abs, max_vocab) {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ProtocolError::Config("no embedding preset".into())))
    }

    /// [`Self::params`] on another 128-bit preset (for comparisons).
    pub fn params_with(
        preset: HePreset,
        ring_bits: u32,
        max_abs: u64,
        max_vocab: usize,
    ) -> Result<Arc<RlweParameters>> {
        let n = preset.degree().0;
        Ok(RlweParametersBuilder::from_preset(preset)
            .ring_bits(RingBits(ring_bits))
            .weight_bound(WeightBound::MaxAbs(max_abs))
            .mac_terms(MacTerms(max_vocab.max(n)))
            .build()?)
    }

    /// The preset (its index in [`EMBEDDING_PRESETS`]) and parameters with the fewest bytes
    /// (key setup plus lookup) for a lookup of `seq` ids: what both parties of a model walk
    /// use, derived from public values only.
    pub fn best_params(
        ring_bits: u32,
        max_abs: u64,
        seq: usize,
        vocab: usize,
        hidden: usize,
    ) -> Result<(usize, Arc<RlweParameters>)> {
        let mut best: Option<(u64, usize, Arc<RlweParameters>)> = None;
        for (i, preset) in EMBEDDING_PRESETS.into_iter().enumerate() {
            let Ok(params) = Self::params_with(preset, ring_bits, max_abs, vocab) else {
                continue;
            };
            let bytes = Self::cost(&params, seq, vocab, hidden)?.bytes
                + HeClientSetup::setup_cost(&params).bytes;
            if best.as_ref().is_none_or(|(b, _, _)| bytes < *b) {
                best = Some((bytes, i, params));
            }
        }
        best.map(|(_, i, p)| (i, p))
            .ok_or_else(|| ProtocolError::Config("no HE parameters fit the embedding table".into()))
    }

    fn shape(seq: usize, vocab: usize, hidden: usize) -> MatmulShape {
        MatmulShape::new(seq, vocab, hidden)
    }

    /// Exact online traffic of one lookup of `seq` ids (setup excluded:
    /// [`HeClientSetup::setup_cost`]).
    pub fn cost(
        params: &Arc<RlweParameters>,
        seq: usize,
        vocab: usize,
        hidden: usize,
    ) -> Result<Cost> {
        HeMatMul::cost(params, Self::shape(seq, vocab, hidden), EMBEDDING_POLICY)
    }

    /// Client driver: checks every id (`< vocab`, before anything is sent), sends the encrypted
    /// one-hot rows, returns its share of the rows `T[id_r]` (row-major `ids.len() x hidden`).
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeClientSetup,
        vocab: usize,
        hidden: usize,
        ids: &[u32],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let x = one_hot(ids, vocab)?;
        HeMatMul::run_client(
            ch,
            setup,
            Self::shape(ids.len(), vocab, hidden),
            EMBEDDING_POLICY,
            &x,
            rng,
        )
    }

    /// Server driver: answers the client's encrypted one-hot rows, returns its share `R`
    /// (uniform, row-major `seq x hidden`).
    pub fn run_server<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeServerSetup,
        table: &EmbeddingTable,
        seq: usize,
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        if seq == 0 {
            return Err(ProtocolError::Config("empty token sequence".into()));
        }
        if setup.params().id() != table.params.id() {
            return Err(ProtocolError::Config(
                "the table was made for other parameters than the session".into(),
            ));
        }
        // weight polynomials are prepared on the fly (a cache would take N L 8 bytes per
        // block: far over the table itself for the fewest-bytes layout)
        HeMatMul::run_server(ch, setup, &table.weights, seq, None, rng)
    }
}

/// The server's key pair of [`ServerKeyEmbedding`] (the server owns the secret key; the public
/// key is part of the cached model).
#[derive(Debug)]
pub struct EmbeddingServerKeys {
    params: Arc<RlweParameters>,
    sk: SecretKey,
    pk: PublicKey,
}

impl EmbeddingServerKeys {
    /// Generate a key pair for `params` (from [`ServerKeyEmbedding::params`]).
    pub fn generate<R: RngCore + CryptoRng>(params: &Arc<RlweParameters>, rng: &mut R) -> Self {
        let sk = SecretKey::generate(params, rng);
        let pk = sk.public_key(rng);
        Self {
            params: Arc::clone(params),
            sk,
            pk,
        }
    }
    /// The parameters.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }
}

/// The client's cached copy of the encrypted table of [`ServerKeyEmbedding`]: the server's public
/// key and `ceil(vocab / rows_per_ct)` seeded ciphertexts (kept compact, expanded per lookup).
#[derive(Debug)]
pub struct EncryptedEmbeddingTable {
    params: Arc<RlweParameters>,
    vocab: usize,
    hidden: usize,
    pk: PublicKey,
    cts: Vec<SeededCiphertext>,
}

impl EncryptedEmbeddingTable {
    /// `(vocab, hidden)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.vocab, self.hidden)
    }
}

/// Private embedding lookup in the server-key direction, for repeated sessions with one model:
/// the server encrypts its table once under its own key and the client caches it; each lookup is
/// then one flight of `seq` small ciphertexts and almost no computation.
///
/// # Protocol (semi-honest)
/// * Cached phase (once per model and client, server -> client): the server's public key and
///   the table, `p = floor(N / hidden)` rows per RLWE ciphertext (row `o` of ciphertext `j`,
///   i.e. token `j p + o`, at coefficients `o hidden .. (o+1) hidden`), seeded, under the server's
///   secret key.
/// * Online (one flight, client -> server): for each position `r` with id `v = j p + o`, the
///   client multiplies ciphertext `j` by the monomial `x^(-o hidden)` (moving row `o` to
///   coefficients `0..hidden`), adds a uniform mask `U_r` (its share is `-U_r`), re-randomizes
///   with the server's public key, switches modulus, floods the noise (40-bit statistical) and
///   sends `b` at coefficients `0..hidden` only ([`duet_fhe::MacAccumulator::finalize`]).
///   The server decrypts `T[v] + U_r`: its share.
///
/// # Security
/// The client sees only RLWE ciphertexts under the server's key (IND-CPA, 128-bit parameters,
/// see [`Self::params`]): nothing about `T`. The server sees, per position, a ciphertext whose
/// `a` is re-randomized (pseudorandom by RLWE with the client's fresh ternary `u`), whose noise
/// (which would otherwise reveal which of its own ciphertexts was used) is flooded to within
/// `2^-40` of a distribution independent of the ids, and whose decrypted values `T[v] + U_r`
/// are uniform; only the `hidden` output coefficients are sent, so the other rows of the chosen
/// ciphertext never reach the server. So the server learns nothing about the ids (nor whether
/// two are equal), and both shares are uniform.
///
/// # Cost ([`Self::cost`], exact)
/// Cached: the public key plus `ceil(vocab / p)` seeded ciphertexts (BERT's 30522 x 768 at
/// `N = 4096`: 6105 ciphertexts, 336 MB; the client keeps them in about the same memory).
/// Online: one flight of `seq` output ciphertexts with `hidden` values each. Client compute per
/// position: one expansion, one plaintext-ciphertext product, one finalize; server: one
/// decryption per position.
#[derive(Clone, Copy, Debug)]
pub struct ServerKeyEmbedding;

impl ServerKeyEmbedding {
    /// Parameters for share width `ring_bits`: the first of [`EMBEDDING_PRESETS`] that decrypts
    /// exactly with a monomial (`|w| = 1`, one term) as the plaintext multiplier.
    pub fn params(ring_bits: u32) -> Result<Arc<RlweParameters>> {
        let mut last = None;
        for preset in EMBEDDING_PRESETS {
            let built = RlweParametersBuilder::from_preset(preset)
                .ring_bits(RingBits(ring_bits))
                .weight_bound(WeightBound::MaxAbs(1))
                .mac_terms(MacTerms(1))
                .build();
            match built {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(ProtocolError::from(e)),
            }
        }
        Err(last.unwrap_or_else(|| ProtocolError::Config("no embedding preset".into())))
    }

    /// Rows per table ciphertext.
    fn rows_per_ct(params: &RlweParameters, hidden: usize) -> Result<usize> {
        let n = params.degree();
        if hidden == 0 || hidden > n {
            return Err(ProtocolError::Config(format!(
                "hidden size {hidden} must be in 1..={n} (the ring degree)"
            )));
        }
        Ok(n / hidden)
    }

    /// Number of table ciphertexts.
    pub fn table_ciphertexts(
        params: &RlweParameters,
        vocab: usize,
        hidden: usize,
    ) -> Result<usize> {
        if vocab == 0 {
            return Err(ProtocolError::Config("empty vocabulary".into()));
        }
        Ok(vocab.div_ceil(Self::rows_per_ct(params, hidden)?))
    }

    /// Exact traffic: `(online, cached)`. Online: one client flight of `seq` messages; cached:
    /// one server flight (public key, then the table ciphertexts). No per-session setup.
    pub fn cost(
        params: &Arc<RlweParameters>,
        seq: usize,
        vocab: usize,
        hidden: usize,
    ) -> Result<(Cost, Cost)> {
        if seq == 0 {
            return Err(ProtocolError::Config("empty token sequence".into()));
        }
        let cts = Self::table_ciphertexts(params, vocab, hidden)?;
        let up = (seq * OutputCiphertext::serialized_len(params, hidden)) as u64;
        let online = Cost {
            bytes: up,
            rounds: 1,
            client_to_server: up,
            messages: seq as u64,
            ..Cost::default()
        };
        let down = (PublicKey::serialized_len(params)
            + cts * SeededCiphertext::serialized_len(params)) as u64;
        let cached = Cost {
            bytes: down,
            rounds: 1,
            server_to_client: down,
            messages: 1 + cts as u64,
            ..Cost::default()
        };
        Ok((online, cached))
    }

    /// Server, cached phase: send the public key and the encrypted table `T` (`vocab x hidden`,
    /// row-major; entries taken mod `2^l`), flushed.
    pub fn send_table<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        keys: &EmbeddingServerKeys,
        vocab: usize,
        hidden: usize,
        table: &[i64],
        rng: &mut R,
    ) -> Result<()> {
        let params = &keys.params;
        if vocab == 0 || hidden == 0 || table.len() != vocab.saturating_mul(hidden) {
            return Err(ProtocolError::Shape {
                what: "embedding table",
                expected: vocab.saturating_mul(hidden),
                got: table.len(),
            });
        }
        let p = Self::rows_per_ct(params, hidden)?;
        let mask = params.plain_mask();
        let raw = table;
        ch.send_bytes(&keys.pk.to_bytes())?;
        let count = Self::table_ciphertexts(params, vocab, hidden)?;
        let seeds: Vec<[u8; 32]> = (0..count)
            .map(|_| {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                s
            })
            .collect();
        // encrypt in parallel batches, send in order
        for chunk in seeds.chunks(256).enumerate() {
            let (c, batch) = chunk;
            let msgs: Vec<Result<Vec<u8>>> = batch
                .par_iter()
                .enumerate()
                .map(|(i, seed)| {
                    let j = c * 256 + i;
                    let rows = raw
                        .get(j * p * hidden..((j + 1) * p * hidden).min(vocab * hidden))
                        .ok_or_else(|| ProtocolError::Config("table index".into()))?;
                    let vals: Vec<u64> = rows.iter().map(|&t| (t as u64) & mask).collect();
                    let mut rng = ChaCha20Rng::from_seed(*seed);
                    Ok(keys.sk.encrypt(&vals, &mut rng)?.to_bytes(params)?)
                })
                .collect();
            for m in msgs {
                ch.send_bytes(&m?)?;
            }
        }
        ch.flush()?;
        Ok(())
    }

    /// Client, cached phase: receive and parse the public key and the encrypted table.
    pub fn recv_table<C: Channel>(
        ch: &mut C,
        params: &Arc<RlweParameters>,
        vocab: usize,
        hidden: usize,
    ) -> Result<EncryptedEmbeddingTable> {
        let count = Self::table_ciphertexts(params, vocab, hidden)?;
        let pk = PublicKey::from_bytes(
            params,
            &ch.recv_bytes_max(PublicKey::serialized_len(params))?,
        )?;
        let mut cts = Vec::with_capacity(count);
        let len = SeededCiphertext::serialized_len(params);
        for _ in 0..count {
            cts.push(SeededCiphertext::from_bytes(
                params,
                &ch.recv_bytes_max(len)?,
            )?);
        }
        Ok(EncryptedEmbeddingTable {
            params: Arc::clone(params),
            vocab,
            hidden,
            pk,
            cts,
        })
    }

    /// Client driver: checks the ids (before anything is sent), sends one flight, returns its
    /// share (row-major `ids.len() x hidden`).
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        model: &EncryptedEmbeddingTable,
        ids: &[u32],
        rng: &mut R,
    ) -> Result<Vec<u64>> {
        let params = &model.params;
        let (vocab, hidden) = (model.vocab, model.hidden);
        if ids.is_empty() {
            return Err(ProtocolError::Config("empty token sequence".into()));
        }
        if let Some((r, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(ProtocolError::Config(format!(
                "token id {id} at position {r} is outside the vocabulary of {vocab}"
            )));
        }
        let p = Self::rows_per_ct(params, hidden)?;
        let n = params.degree();
        let mask = params.plain_mask();
        let positions: Vec<usize> = (0..hidden).collect();
        let seeds: Vec<[u8; 32]> = ids
            .iter()
            .map(|_| {
                let mut s = [0u8; 32];
                rng.fill_bytes(&mut s);
                s
            })
            .collect();
        let out: Vec<Result<(Vec<u64>, Vec<u8>)>> = ids
            .par_iter()
            .zip(seeds)
            .map(|(&id, seed)| {
                let id = id as usize;
                let (j, o) = (id / p, id % p);
                let ct = model
                    .cts
                    .get(j)
                    .ok_or_else(|| ProtocolError::Config("table index".into()))?
                    .expand(params)?;
                // x^(-o hidden) = -x^(N - o hidden) for o > 0
                let mono = if o == 0 {
                    (0, 1)
                } else {
                    (n - o * hidden, mask)
                };
                let w = PlainWeights::from_ring_sparse(params, &[mono])?;
                let mut acc = MacAccumulator::new(params);
                acc.mul_acc(&ct, &w)?;
                let mut rng = ChaCha20Rng::from_seed(seed);
                let u: Vec<u64> = (0..hidden).map(|_| rng.next_u64() & mask).collect();
                let msg = acc.finalize(&model.pk, &u, &positions, &mut rng)?;
                let share = u.iter().map(|&v| v.wrapping_neg() & mask).collect();
                Ok((share, msg.to_bytes(params)?))
            })
            .collect();
        let mut share = Vec::with_capacity(ids.len() * hidden);
        for r in out {
            let (s, m) = r?;
            ch.send_bytes(&m)?;
            share.extend(s);
        }
        ch.flush()?;
        Ok(share)
    }

    /// Server driver: receives `seq` ciphertexts, decrypts its share (row-major `seq x hidden`).
    pub fn run_server<C: Channel>(
        ch: &mut C,
        keys: &EmbeddingServerKeys,
        hidden: usize,
        seq: usize,
    ) -> Result<Vec<u64>> {
        let params = &keys.params;
        if seq == 0 {
            return Err(ProtocolError::Config("empty token sequence".into()));
        }
        Self::rows_per_ct(params, hidden)?;
        let mut msgs = Vec::with_capacity(seq);
        let len = OutputCiphertext::serialized_len(params, hidden);
        for _ in 0..seq {
            msgs.push(ch.recv_bytes_max(len)?);
        }
        let positions: Vec<usize> = (0..hidden).collect();
        let rows: Vec<Result<Vec<u64>>> = msgs
            .par_iter()
            .map(|m| {
                let ct = OutputCiphertext::from_bytes(params, m, hidden)?;
                Ok(keys.sk.decrypt_output(&ct, &positions)?)
            })
            .collect();
        let mut out = Vec::with_capacity(seq * hidden);
        for r in rows {
            out.extend(r?);
        }
        Ok(out)
    }
}

/// The one-hot matrix of `ids` (row-major `ids.len() x vocab`); an id `>= vocab` is an error.
fn one_hot(ids: &[u32], vocab: usize) -> Result<Vec<u64>> {
    if ids.is_empty() {
        return Err(ProtocolError::Config("empty token sequence".into()));
    }
    let mut x = vec![0u64; ids.len() * vocab];
    for (r, &id) in ids.iter().enumerate() {
        let id = usize::try_from(id).unwrap_or(usize::MAX);
        if id >= vocab {
            return Err(ProtocolError::Config(format!(
                "token id {id} at position {r} is outside the vocabulary of {vocab}"
            )));
        }
        if let Some(v) = x.get_mut(r * vocab + id) {
            *v = 1;
        }
    }
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_transport::run_two_party;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    const L: u32 = 37;
    const BOUND: i64 = 1 << 12;

    /// A `vocab x hidden` table with random entries in `[-BOUND, BOUND]`, the first row all
    /// `+BOUND` and the last all `-BOUND`.
    fn table(vocab: usize, hidden: usize, seed: u64) -> Vec<i64> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        (0..vocab * hidden)
            .map(|i| {
                if i < hidden {
                    BOUND
                } else if i >= (vocab - 1) * hidden {
                    -BOUND
                } else {
                    rng.gen_range(-BOUND..=BOUND)
                }
            })
            .collect()
    }

    type Run = (
        Result<(Vec<u64>, duet_transport::ChannelStats, u64)>,
        Result<(Vec<u64>, duet_transport::ChannelStats, u64)>,
    );

    fn run(
        params: &Arc<RlweParameters>,
        tab: &EmbeddingTable,
        vocab: usize,
        hidden: usize,
        ids: &[u32],
    ) -> Run {
        run_two_party(
            |mut ch| {
                let setup = HeServerSetup::run(&mut ch, params)?;
                let before = ch.stats();
                let mut rng = ChaCha20Rng::seed_from_u64(11);
                let r = PrivateEmbedding::run_server(&mut ch, &setup, tab, ids.len(), &mut rng)?;
                Ok((r, ch.stats() - before, ch.stats().rounds))
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(12);
                let setup = HeClientSetup::run(&mut ch, params, &mut rng)?;
                let before = ch.stats();
                let y =
                    PrivateEmbedding::run_client(&mut ch, &setup, vocab, hidden, ids, &mut rng)?;
                Ok((y, ch.stats() - before, ch.stats().rounds))
            },
        )
    }

    fn check(params: &Arc<RlweParameters>, vocab: usize, hidden: usize, ids: &[u32], seed: u64) {
        let t = table(vocab, hidden, seed);
        let tab = EmbeddingTable::new(params, vocab, hidden, t.clone()).unwrap();
        let (s, c) = run(params, &tab, vocab, hidden, ids);
        let ((r, st_s, rounds_s), (y, st_c, rounds_c)) = (s.unwrap(), c.unwrap());
        let mask = params.plain_mask();
        assert_eq!(r.len(), ids.len() * hidden);
        assert_eq!(y.len(), ids.len() * hidden);
        for (row, &id) in ids.iter().enumerate() {
            for col in 0..hidden {
                let got = r[row * hidden + col].wrapping_add(y[row * hidden + col]) & mask;
                let want = (t[id as usize * hidden + col] as u64) & mask;
                assert_eq!(
                    got, want,
                    "row {row} (id {id}) col {col}: exact lookup expected"
                );
            }
        }
        // the server's share is its uniform mask: no zero rows, repeated ids get unrelated shares
        assert!(r.iter().all(|&v| v <= mask));
        assert!(r.chunks(hidden).all(|row| row.iter().any(|&v| v != 0)));
        // measured traffic == cost, both parties
        let cost = PrivateEmbedding::cost(params, ids.len(), vocab, hidden).unwrap();
        assert_eq!(st_c.bytes_sent, cost.client_to_server);
        assert_eq!(st_s.bytes_sent, cost.server_to_client);
        assert_eq!(st_c.bytes_received, cost.server_to_client);
        assert_eq!(st_s.bytes_received, cost.client_to_server);
        assert_eq!(st_c.bytes_sent + st_s.bytes_sent, cost.bytes);
        assert_eq!(st_c.messages_sent + st_s.messages_sent, cost.messages);
        // flights of the whole session: the client's online flight follows its setup flight
        // with no reply in between (one flight, as `HeClientSetup::setup_cost` says)
        assert_eq!(rounds_c + rounds_s, cost.rounds);
    }

    #[test]
    fn lookup_is_exact_with_extreme_values_repeats_and_edge_ids() {
        let (vocab, hidden) = (1000, 64);
        let p = PrivateEmbedding::params(L, BOUND as u64, vocab).unwrap();
        // first and last id, repeats (adjacent and apart), extreme rows
        let ids = [0u32, 999, 5, 5, 17, 0, 999, 500, 5, 998];
        check(&p, vocab, hidden, &ids, 1);
        // a single token
        check(&p, vocab, hidden, &[999], 2);
    }

    #[test]
    fn lookup_on_other_widths_and_presets() {
        // share width 64 and the packing preset (a vocabulary over N)
        let (vocab, hidden) = (9000, 16);
        let p = PrivateEmbedding::params(64, BOUND as u64, vocab).unwrap();
        assert_ne!(p.degree(), 4096, "l = 64 needs a larger ring");
        check(&p, vocab, hidden, &[8999, 0, 4321, 4321], 3);
        let p = PrivateEmbedding::params(L, BOUND as u64, vocab).unwrap();
        assert_eq!(p.degree(), 4096);
        check(&p, vocab, hidden, &[8999, 0, 4321, 4321], 3);
        let p =
            PrivateEmbedding::params_with(HePreset::N8192Q200Pack, L, BOUND as u64, vocab).unwrap();
        check(&p, vocab, hidden, &[8999, 0, 4321, 4321, 7], 4);
    }

    #[test]
    fn bad_ids_are_refused_before_anything_is_sent() {
        let (vocab, hidden) = (1000, 8);
        let p = PrivateEmbedding::params(L, BOUND as u64, vocab).unwrap();
        let (_, client) = run_two_party(
            |mut ch| HeServerSetup::run(&mut ch, &p).map(|_| ()),
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(3);
                let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
                let before = ch.stats();
                let bad = PrivateEmbedding::run_client(
                    &mut ch,
                    &setup,
                    vocab,
                    hidden,
                    &[0, 1000],
                    &mut rng,
                );
                let empty =
                    PrivateEmbedding::run_client(&mut ch, &setup, vocab, hidden, &[], &mut rng);
                let huge = PrivateEmbedding::run_client(
                    &mut ch,
                    &setup,
                    vocab,
                    hidden,
                    &[u32::MAX],
                    &mut rng,
                );
                (bad, empty, huge, (ch.stats() - before).bytes_sent)
            },
        );
        let (bad, empty, huge, sent) = client;
        let e = bad.unwrap_err().to_string();
        assert!(e.contains("1000") && e.contains("vocabulary"), "{e}");
        assert!(empty.is_err());
        assert!(huge.is_err());
        assert_eq!(sent, 0, "nothing may be sent for a bad id");
    }

    #[test]
    fn tables_and_parameters_are_validated() {
        let p = PrivateEmbedding::params(L, BOUND as u64, 1000).unwrap();
        assert!(
            EmbeddingTable::new(&p, 10, 4, vec![0; 39]).is_err(),
            "shape"
        );
        assert!(EmbeddingTable::new(&p, 0, 4, vec![]).is_err(), "empty");
        let mut t = vec![0i64; 40];
        t[7] = BOUND + 1;
        assert!(EmbeddingTable::new(&p, 10, 4, t.clone()).is_err(), "bound");
        t[7] = -BOUND - 1;
        assert!(EmbeddingTable::new(&p, 10, 4, t.clone()).is_err(), "bound");
        t[7] = -BOUND;
        assert!(EmbeddingTable::new(&p, 10, 4, t).is_ok());
        // a vocabulary over the parameters' term budget
        assert!(EmbeddingTable::new(&p, 5000, 1, vec![0; 5000]).is_err());
        // no 128-bit preset handles a vocabulary over 64 N
        assert!(PrivateEmbedding::params(L, BOUND as u64, 1 << 20).is_err());
        assert!(PrivateEmbedding::cost(&p, 0, 10, 4).is_err());
    }

    #[test]
    fn malformed_peer_messages_are_errors() {
        let (vocab, hidden, seq) = (300, 8, 3);
        let p = PrivateEmbedding::params(L, BOUND as u64, vocab).unwrap();
        let tab = EmbeddingTable::new(&p, vocab, hidden, table(vocab, hidden, 5)).unwrap();
        let cost = PrivateEmbedding::cost(&p, seq, vocab, hidden).unwrap();
        let up =
            HeMatMul::cost(&p, MatmulShape::new(seq, vocab, hidden), EMBEDDING_POLICY).unwrap();
        assert_eq!(cost, up);
        let inputs =
            crate::MatmulPlan::new(&p, MatmulShape::new(seq, vocab, hidden), EMBEDDING_POLICY)
                .unwrap();
        let (n_in, n_out, len_in) = (
            inputs.input_count(),
            inputs.output_count(),
            inputs.input_message_len(),
        );
        // a client sending garbage of the right count and length
        let (server, _) = run_two_party(
            |mut ch| {
                let setup = HeServerSetup::run(&mut ch, &p)?;
                let mut rng = ChaCha20Rng::seed_from_u64(1);
                PrivateEmbedding::run_server(&mut ch, &setup, &tab, seq, &mut rng)
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let _setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
                for _ in 0..n_in {
                    ch.send_bytes(&vec![0xAB; len_in]).unwrap();
                }
                ch.flush().unwrap();
                let _ = ch.recv_bytes();
            },
        );
        assert!(server.is_err());
        // a server answering with garbage
        let (_, client) = run_two_party(
            |mut ch| {
                let _setup = HeServerSetup::run(&mut ch, &p).unwrap();
                for _ in 0..n_in {
                    let _ = ch.recv_bytes();
                }
                for _ in 0..n_out {
                    let _ = ch.send_bytes(&[0x5A; 100]);
                }
                let _ = ch.flush();
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
                PrivateEmbedding::run_client(&mut ch, &setup, vocab, hidden, &[1, 2, 3], &mut rng)
            },
        );
        assert!(client.is_err());
    }

    // ---------- server-key direction ----------

    /// The server's share, its cached-phase traffic and its online traffic.
    type SkServer = Result<(
        Vec<u64>,
        duet_transport::ChannelStats,
        duet_transport::ChannelStats,
    )>;

    fn sk_run(
        vocab: usize,
        hidden: usize,
        ids: &[u32],
        t: &[i64],
    ) -> (SkServer, Result<Vec<u64>>, Arc<RlweParameters>) {
        let p = ServerKeyEmbedding::params(L).unwrap();
        let seq = ids.len();
        let (s, c) = run_two_party(
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(21);
                let keys = EmbeddingServerKeys::generate(&p, &mut rng);
                ServerKeyEmbedding::send_table(&mut ch, &keys, vocab, hidden, t, &mut rng)?;
                let cached = ch.stats();
                let share = ServerKeyEmbedding::run_server(&mut ch, &keys, hidden, seq)?;
                Ok((share, cached, ch.stats() - cached))
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(22);
                let model = ServerKeyEmbedding::recv_table(&mut ch, &p, vocab, hidden)?;
                ServerKeyEmbedding::run_client(&mut ch, &model, ids, &mut rng)
            },
        );
        (s, c, p)
    }

    #[test]
    fn server_key_lookup_is_exact_and_matches_cost() {
        for (vocab, hidden) in [(1000, 64), (301, 100)] {
            let t = table(vocab, hidden, 7);
            let last = (vocab - 1) as u32;
            let ids = [0u32, last, 5, 5, 63, 64, 0, last, 40, 39, 41];
            let (s, c, p) = sk_run(vocab, hidden, &ids, &t);
            let ((r, cached, online), y) = (s.unwrap(), c.unwrap());
            let mask = p.plain_mask();
            assert_eq!(r.len(), ids.len() * hidden);
            assert_eq!(y.len(), ids.len() * hidden);
            for (row, &id) in ids.iter().enumerate() {
                for col in 0..hidden {
                    let got = r[row * hidden + col].wrapping_add(y[row * hidden + col]) & mask;
                    let want = (t[id as usize * hidden + col] as u64) & mask;
                    assert_eq!(got, want, "{vocab}x{hidden}: row {row} (id {id}) col {col}");
                }
            }
            let (on, ca) = ServerKeyEmbedding::cost(&p, ids.len(), vocab, hidden).unwrap();
            assert_eq!(cached.bytes_sent, ca.server_to_client);
            assert_eq!(cached.bytes_sent, ca.bytes);
            assert_eq!(cached.messages_sent, ca.messages);
            assert_eq!(cached.bytes_received, 0);
            assert_eq!(online.bytes_received, on.client_to_server);
            assert_eq!(online.bytes_received, on.bytes);
            assert_eq!(online.messages_received, on.messages);
            assert_eq!(online.bytes_sent, 0);
        }
    }

    #[test]
    fn server_key_bad_ids_and_malformed_messages_are_errors() {
        let (vocab, hidden) = (200, 32);
        let t = table(vocab, hidden, 8);
        let p = ServerKeyEmbedding::params(L).unwrap();
        // a bad id: error on the client before it sends anything
        let (server, client) = run_two_party(
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(1);
                let keys = EmbeddingServerKeys::generate(&p, &mut rng);
                ServerKeyEmbedding::send_table(&mut ch, &keys, vocab, hidden, &t, &mut rng)?;
                let before = ch.stats();
                let r = ServerKeyEmbedding::run_server(&mut ch, &keys, hidden, 2);
                Ok::<_, ProtocolError>((r.is_err(), (ch.stats() - before).bytes_received))
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let model = ServerKeyEmbedding::recv_table(&mut ch, &p, vocab, hidden).unwrap();
                let e = ServerKeyEmbedding::run_client(&mut ch, &model, &[3, 200], &mut rng);
                let empty = ServerKeyEmbedding::run_client(&mut ch, &model, &[], &mut rng);
                drop(ch);
                (e, empty)
            },
        );
        let (e, empty) = client;
        assert!(e.unwrap_err().to_string().contains("vocabulary"));
        assert!(empty.is_err());
        let (server_failed, received) = server.unwrap();
        assert!(server_failed, "the server sees the hang-up, not a result");
        assert_eq!(received, 0);
        // garbage ciphertexts from the client
        for corrupt in [
            (|m: Vec<u8>| vec![0xAB; m.len()]) as fn(Vec<u8>) -> Vec<u8>,
            |mut m: Vec<u8>| {
                m.pop();
                m
            },
            |_| Vec::new(),
        ] {
            let (server, _) = run_two_party(
                |mut ch| {
                    let mut rng = ChaCha20Rng::seed_from_u64(1);
                    let keys = EmbeddingServerKeys::generate(&p, &mut rng);
                    ServerKeyEmbedding::send_table(&mut ch, &keys, vocab, hidden, &t, &mut rng)?;
                    ServerKeyEmbedding::run_server(&mut ch, &keys, hidden, 2)
                },
                |mut ch| {
                    let (model, mut rng) = (
                        ServerKeyEmbedding::recv_table(&mut ch, &p, vocab, hidden).unwrap(),
                        ChaCha20Rng::seed_from_u64(2),
                    );
                    let (mut a, mut b) = run_two_party(|c2| c2, |c2| c2);
                    // compute honest messages on a side channel, then corrupt them
                    let _ =
                        ServerKeyEmbedding::run_client(&mut a, &model, &[1, 2], &mut rng).unwrap();
                    for _ in 0..2 {
                        let m = b.recv_bytes().unwrap();
                        ch.send_bytes(&corrupt(m)).unwrap();
                    }
                    ch.flush().unwrap();
                },
            );
            assert!(server.is_err());
        }
        // a garbled table from the server
        let (_, client) = run_two_party(
            |mut ch| {
                let _ = ch.send_bytes(&[7u8; 40]);
                let _ = ch.flush();
            },
            |mut ch| ServerKeyEmbedding::recv_table(&mut ch, &p, vocab, hidden).map(|_| ()),
        );
        assert!(client.is_err());
        // shapes
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let keys = EmbeddingServerKeys::generate(&p, &mut rng);
        let (mut a, _b) = run_two_party(|c| c, |c| c);
        assert!(
            ServerKeyEmbedding::send_table(&mut a, &keys, vocab, hidden, &t[1..], &mut rng)
                .is_err()
        );
        assert!(ServerKeyEmbedding::cost(&p, 1, 10, p.degree() + 1).is_err());
    }
}
