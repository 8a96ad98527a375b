//! The private next-token choice of secure text generation: greedy (secure argmax), sampling
//! with the client's randomness (temperature, top-k, top-p) and, on explicit opt-in, the
//! logits themselves. Only the chosen token id is revealed, to the client only.
//!
//! # Input and range precondition
//! The logits of `rows` positions over a vocabulary of `V` tokens are additively shared in
//! `Z_2^l` with `f` fractional bits ([`LogitFormat`]); the caller declares
//! `|logit| < 2^range_bits`, i.e. `|x| < 2^M` for the encoded integers with
//! `M = min(range_bits + f, l - 1)`. Every comparison runs on `w + 1 = M + 2` bits (at least
//! 16): the shares are reduced to that ring locally when `l >= M + 2`, else extended once
//! (signed, one millionaire per logit). The precondition cannot be checked on secret values;
//! it only matters for correctness: a logit outside the declared range can make the result a
//! wrong (but always valid, `< V`) id, and reveals nothing more (every selection below is an
//! exact mux, so the revealed index is always one of the candidates').
//!
//! # Protocols (semi-honest, 128-bit, all on [`duet_mpc::nonlinear`])
//! * **Greedy** ([`TokenChoice::Greedy`]): a tournament of `ceil(log2 V)` levels over all rows
//!   at once. A level compares all pairs `(2j, 2j+1)` in one batch (`c = 1{v_l < v_r}`, the MSB
//!   of the difference: one millionaire on `M + 1` bits), keeps `v_l + c (v_r - v_l)` (one
//!   [`nl::mux`], skipped at the last level) and the winner's index as XOR-shared bits relative
//!   to its subtree: the new top bit is `c` itself, the lower `t` bits are
//!   `i_l ⊕ c ∧ (i_l ⊕ i_r)` (`t` boolean ANDs per pair at level `t + 1`, a fraction of a byte
//!   each with silent OT). An odd last element passes through with a public 0 bit. Ties keep
//!   the left element, so the result is the **lowest index among the maxima** (numpy's rule).
//!   Finally the server sends its shares of the index bits (8 bytes per row) and the client
//!   XORs its own: the server's shares are uniform (fresh AND / comparison outputs), so the
//!   client learns the index and nothing else. Carrying the index in the low bits of the
//!   values instead (`v 2^b + (2^b - 1 - i)`, one comparison and one mux of a single value per
//!   pair) widens every comparison and every mux by `b = ceil(log2 V)` bits: 1.72 times the
//!   bytes at `V = 49,152` (2.21 MB against 1.28 MB, from the exact cost formulas; see the
//!   tests).
//! * **Sampling** ([`TokenChoice::Sample`]) by the Gumbel-max trick: `argmax_i (x_i / T + g_i)
//!   = argmax_i (x_i + T g_i)` with `g_i` standard Gumbel drawn by the client from its seed,
//!   `round(T (g_i - 16.9) 2^f)` added to its own share (local; the common shift does not
//!   change the argmax). The client's sampler `g = -ln(-ln u)`, `u = (k + 1/2) 2^-53` with `k`
//!   uniform on 53 bits, lies in `[-3.62, 37.43]` by construction (and is clamped to
//!   `[-3.7, 37.5]`), so the noise is bounded, `|T (g - 16.9)| <= 20.6 T`: the noisy values
//!   lie below `2^M + 20.6 T 2^f + 1` in magnitude and are compared in a ring of
//!   `ceil(log2(2^M + 20.6 T 2^f + 1)) + 2` bits, which the logits reach by a cheap extension
//!   (one COT per logit). The range precondition of the noisy values therefore holds with
//!   probability 1 whenever the logits' does. The 53-bit `u` cuts the Gumbel tail at 37.43
//!   (mass `2^-54` per draw), and the noise's rounding to `2^-f` changes the argmax only when
//!   two noisy logits are within `2^-f` of each other (total variation from `softmax(x / T)` of
//!   the encoded logits of the order of `2^-f / T`). Then the tournament above on the noisy
//!   values (ties: lowest index).
//! * **Top-k**: the kept set is `{i : x_i >= θ_k}` with `θ_k` the `k`-th largest logit (ties at
//!   the threshold are kept, as HuggingFace's `TopKLogitsWarper` does). `θ_k` is never
//!   computed: the offset logits `u_i = x_i + 2^M` are bit-decomposed once (a ripple-carry
//!   adder on the two shares, `w - 1` rounds of one AND per logit) and the threshold is
//!   searched bit by bit from the top, keeping per logit the shared bits `eq_i` (prefix equal
//!   to the threshold's so far) and `gt_i` (prefix above it): the candidate bit 1 is taken iff
//!   `#{gt_i ∨ (eq_i ∧ u_ij)} >= k` (B2A of one bit per logit, a local sum per row, one
//!   comparison per row), then `eq`, `gt` are updated with the shared decision (2 ANDs per
//!   logit). At the end `keep_i = gt_i ∨ eq_i`. Cost per logit: `w` times (a B2A and 3 ANDs),
//!   independent of `k`; no comparison per logit at all. The dropped logits become
//!   `-2^{w_s - 1}` (one mux per logit), below every noisy logit, before the tournament.
//! * **Top-p** (nucleus, after top-k as in HuggingFace): with `q_i = softmax(x / T)` over the
//!   top-k set, the nucleus is again a threshold: `{i : x_i >= θ_p}` with `θ_p = max{t :
//!   sum_{x_j >= t} q_j >= p}` (keep `i` iff the mass strictly above `x_i` is below `p`, as
//!   HuggingFace's `TopPLogitsWarper`; ties kept together). So the same bit search runs with
//!   the masses: `e_i = exp((x_i - max) / T)` ([`nl::max_axis`], a cheap extension, a public
//!   scaling by `round(2^s / T) >= 2^16` and the table exp
//!   [`ExpMethod::DUET_LUT`](duet_mpc::fixed_math::exp::ExpMethod::DUET_LUT) at `F_e = 16`
//!   fractional bits, more above 57,344 tokens, for every logit), masked to the top-k set (one
//!   mux), `Z = sum e_i`, `p Z` (one extension, a public product and a truncation per row),
//!   then per bit a mux of `e_i` by the candidate bit instead of the B2A. **Top-p needs a
//!   bounded candidate set**: the masses of all `V` logits would add `V` rounding errors; so
//!   top-p without `top_k` runs within the top [`TOP_P_DEFAULT_K`] = 64 logits (the mass beyond
//!   them is ignored: this differs from HuggingFace's top-p alone when the nucleus would hold
//!   more than 64 tokens). The masses carry the exp's error (about `4.5e-5` each), so the
//!   nucleus boundary can differ from the float one when the cumulative mass is within about
//!   `k 4.5e-5` of `p`; `p = 1` is a no-op. Not done: compacting the top-k candidates first
//!   (the exp and the nucleus would then cost `O(k^2)` instead of `O(V w)`): an oblivious
//!   compaction of `V` logits takes `O(V log V)` muxes and `O(log^2 V)` rounds, about the
//!   bytes of the steps it would replace and more rounds.
//! * **Logits** (opt-in, [`TokenChoice::Logits`]): the server sends its shares, the client
//!   adds them.
//!
//! Public: `V`, `rows`, the format and the choice's `T`, `k`, `p` (both parties call with the
//! same values). The seed is the client's only; the server never uses it. What the client
//! learns per mode: [`TokenChoice::reveals`]; the server learns nothing in every mode (it
//! receives only OT messages and AND openings, all masked by uniform pads).
//!
//! # Cost
//! [`choose_token_cost`]: bytes exact (measured = predicted in the tests), flights an upper
//! bound (the sum of the steps'), COTs by direction ([`Cost::cots`]) for the Ferret pools.
//! At `V = 49,152`, 12 fractional bits, `|logit| < 64` (20-bit comparisons), Ferret, one row:
//! greedy 1.28 MB (26 bytes and 37 COTs per logit) in at most 188 flights; sampling 1.31 MB;
//! with top-k 5.45 MB (the bit decomposition 9 and the search 70 bytes per logit); with top-k
//! and top-p 21.6 MB (the exp of every logit 99, the mass search 193 bytes per logit) in at
//! most 946 flights. Measured figures: `protocols/tests/suite/token_choice.rs` and the bench
//! `protocols/benches/token_choice.rs`.

mod plan;
mod threshold;
mod tournament;

use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::exp::{extend_pos, extend_pos_cost};
use duet_mpc::nonlinear::{self as nl, Cost, NlConfig, NlSession};
use duet_mpc::{AShare, Ring};
use duet_transport::{Channel, Role};
use plan::{gumbel_noise, Plan, SamplePlan};
use serde::{Deserialize, Serialize};

/// Top-p without `top_k` runs within this many largest logits (see the module documentation).
pub const TOP_P_DEFAULT_K: usize = 64;

/// How the shared logits are encoded: ring, fractional bits and the declared range
/// `|logit| < 2^range_bits` (in real units; see the module documentation for what it
/// guarantees).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogitFormat {
    /// The ring of the shares.
    pub ring: Ring,
    /// Fractional bits `f` of the fixed-point encoding.
    pub frac: u32,
    /// The declared range: every logit lies in `(-2^range_bits, 2^range_bits)`.
    pub range_bits: u32,
}

impl LogitFormat {
    /// A checked format.
    pub fn new(ring: Ring, frac: u32, range_bits: u32) -> Result<Self> {
        let f = Self {
            ring,
            frac,
            range_bits,
        };
        f.validate()?;
        Ok(f)
    }

    /// Checks that the fractional bits fit the ring and that the comparisons (`range_bits +
    /// frac + 2` bits) fit in 62 bits.
    pub fn validate(&self) -> Result<()> {
        if self.frac + 2 > self.ring.bits() || self.range_bits + self.frac + 2 > 62 {
            return Err(ProtocolError::Config(format!(
                "token choice: logits with {} fractional bits and range 2^{} in Z_2^{} \
                 (need f + 2 <= l and range_bits + f + 2 <= 62)",
                self.frac,
                self.range_bits,
                self.ring.bits()
            )));
        }
        Ok(())
    }

    /// `M`: the encoded logits satisfy `|x| < 2^M`.
    fn magnitude_bits(&self) -> u32 {
        (self.range_bits + self.frac).min(self.ring.bits() - 1)
    }
}

/// How the next token is chosen (public to both parties except the client's `seed`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TokenChoice {
    /// The largest logit (lowest index among ties).
    Greedy,
    /// A sample from `softmax(logits / temperature)`, restricted to the `top_k` largest logits
    /// and then to the nucleus of mass `top_p` (HuggingFace's order), drawn with the client's
    /// randomness.
    Sample {
        /// `T > 0`, finite.
        temperature: f64,
        /// Keep the logits at least as large as the `k`-th largest (`k >= 1`; ties kept).
        top_k: Option<usize>,
        /// Keep the smallest set of largest logits whose probability reaches `p`
        /// (`0 < p <= 1`; within the top [`TOP_P_DEFAULT_K`] when `top_k` is `None`).
        top_p: Option<f64>,
        /// The client's seed of the Gumbel noise (the server's value is ignored; use a fresh
        /// seed per token).
        seed: u64,
    },
    /// Reveal the logits to the client (explicit opt-in).
    Logits,
}

impl TokenChoice {
    /// Checks the public parameters: `T > 0` finite, `k >= 1`, `0 < p <= 1`.
    pub fn validate(&self) -> Result<()> {
        if let Self::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = self
        {
            if !(temperature.is_finite() && *temperature > 0.0) {
                return Err(ProtocolError::Config(format!(
                    "sampling temperature {temperature} (need a finite T > 0)"
                )));
            }
            if *top_k == Some(0) {
                return Err(ProtocolError::Config(
                    "top-k with k = 0 (need k >= 1)".into(),
                ));
            }
            if let Some(p) = top_p {
                if !(*p > 0.0 && *p <= 1.0) {
                    return Err(ProtocolError::Config(format!(
                        "top-p with p = {p} (need 0 < p <= 1)"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The choice as the server must know it: the seed replaced by 0.
    pub fn public(&self) -> Self {
        match self {
            Self::Sample {
                temperature,
                top_k,
                top_p,
                ..
            } => Self::Sample {
                temperature: *temperature,
                top_k: *top_k,
                top_p: *top_p,
                seed: 0,
            },
            other => other.clone(),
        }
    }

    /// What the client learns in this mode (the server learns nothing in every mode).
    pub fn reveals(&self) -> &'static str {
        match self {
            Self::Greedy => {
                "the client learns the index of the largest logit of each row (the lowest \
                 index among equal maxima) and nothing else: not the logits, not the maximum, \
                 not the ranking; the server learns nothing"
            }
            Self::Sample { .. } => {
                "the client learns the sampled token id of each row and nothing else about the \
                 logits beyond what that id implies together with its own Gumbel noise (which \
                 it knows: the id is the argmax of logit + T g over the top-k / top-p set), as \
                 with any sampler whose randomness the client chooses; use a fresh seed per \
                 token; the server learns nothing"
            }
            Self::Logits => {
                "the client learns every logit (fixed point, f fractional bits): an explicit \
                 opt-in that reveals much more than a token; the server learns nothing"
            }
        }
    }
}

/// The result of [`choose_token`] for one party.
#[derive(Clone, Debug, PartialEq)]
pub enum TokenOutcome {
    /// The server's result: it learns nothing.
    Nothing,
    /// The client's chosen token ids, one per row.
    Tokens(Vec<u32>),
    /// The client's logits (decoded, row-major) for [`TokenChoice::Logits`].
    Logits(Vec<f64>),
}

impl TokenOutcome {
    /// The first row's token id (client, greedy or sampling).
    pub fn token(&self) -> Option<u32> {
        self.tokens().and_then(|t| t.first().copied())
    }

    /// The token ids (client, greedy or sampling).
    pub fn tokens(&self) -> Option<&[u32]> {
        match self {
            Self::Tokens(t) => Some(t),
            _ => None,
        }
    }

    /// The revealed logits (client, [`TokenChoice::Logits`]).
    pub fn logits(&self) -> Option<&[f64]> {
        match self {
            Self::Logits(l) => Some(l),
            _ => None,
        }
    }
}

fn rows_vocab(shape: &[usize]) -> Result<(usize, usize)> {
    match shape.split_last() {
        Some((&v, outer)) if v > 0 => Ok((outer.iter().product(), v)),
        _ => Err(ProtocolError::Config(format!(
            "token choice over the last axis of shape {shape:?}"
        ))),
    }
}

/// Adds the public `c` (signed) to every element (the server's share only).
fn add_public(x: &AShare, role: Role, c: i64) -> Result<AShare> {
    if role == Role::Client {
        return Ok(x.clone());
    }
    let r = x.ring();
    let cv = r.from_i64(c);
    Ok(AShare::new(
        r,
        x.shape().to_vec(),
        x.data().iter().map(|&v| r.add(v, cv)).collect(),
    )?)
}

/// The logits in the comparison ring `lc` (local reduction, or one signed extension when the
/// input ring is narrower).
fn to_compare_ring<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    p: &Plan,
) -> Result<AShare> {
    let y = if p.lc.bits() <= p.input.bits() {
        nl::reduce(x, p.lc)?
    } else {
        nl::extend(s, ch, x, p.lc, true)?
    };
    Ok(AShare::new(p.lc, vec![p.rows, p.vocab], y.into_data())?)
}

fn to_compare_ring_cost(p: &Plan, cfg: NlConfig) -> Cost {
    if p.lc.bits() <= p.input.bits() {
        Cost::default()
    } else {
        nl::extend_cost(p.n(), p.input, p.lc, cfg)
    }
}

/// `x` (in `lc`, `|x| < 2^mag`) in the ring `to`: a reduction, or the extension of the
/// non-negative `x + 2^mag` (one COT of `to - lc` bits per element).
fn widen<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    mag: u32,
    to: Ring,
) -> Result<AShare> {
    if to.bits() <= x.ring().bits() {
        return Ok(nl::reduce(x, to)?);
    }
    let role = s.role();
    let off = 1i64 << mag;
    let u = extend_pos(s, ch, &add_public(x, role, off)?, to)?;
    add_public(&u, role, -off)
}

fn widen_cost(n: usize, from: Ring, to: Ring, cfg: NlConfig) -> Cost {
    if to.bits() <= from.bits() {
        Cost::default()
    } else {
        extend_pos_cost(n, from, to, cfg)
    }
}

/// Opens the index shares to the client: the server sends its `rows` words, the client XORs
/// and checks every index against the vocabulary.
fn open_index<C: Channel>(
    role: Role,
    ch: &mut C,
    mine: &[u64],
    vocab: usize,
) -> Result<TokenOutcome> {
    match role {
        Role::Server => {
            ch.send_u64s(mine)?;
            ch.flush()?;
            Ok(TokenOutcome::Nothing)
        }
        Role::Client => {
            let theirs = ch.recv_u64s_exact(mine.len())?;
            let ids = mine
                .iter()
                .zip(&theirs)
                .map(|(&a, &b)| {
                    let i = a ^ b;
                    u32::try_from(i)
                        .ok()
                        .filter(|&i| (i as usize) < vocab)
                        .ok_or_else(|| {
                            ProtocolError::Protocol(format!(
                                "the opened token index {i} is outside the vocabulary of {vocab}"
                            ))
                        })
                })
                .collect::<Result<Vec<u32>>>()?;
            Ok(TokenOutcome::Tokens(ids))
        }
    }
}

fn open_cost(words: usize) -> Cost {
    Cost {
        bytes: 8 * words as u64,
        rounds: u64::from(words > 0),
        ..Cost::default()
    }
}

/// Chooses the next token of every row of `logits` (shape `[.., V]`, shares in `fmt.ring`) as
/// `choice` says; the client gets the ids ([`TokenOutcome::Tokens`]) or, for
/// [`TokenChoice::Logits`], the logits; the server gets [`TokenOutcome::Nothing`]. Both parties
/// call it with the same shape, format and public choice ([`TokenChoice::public`]); only the
/// client's seed is used. See the module documentation for the protocols, what each party
/// learns ([`TokenChoice::reveals`]) and the range precondition. Reserves the COTs of
/// [`choose_token_cost`] first. Cost: [`choose_token_cost`].
pub fn choose_token<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    logits: &AShare,
    fmt: &LogitFormat,
    choice: &TokenChoice,
) -> Result<TokenOutcome> {
    choice.validate()?;
    if logits.ring() != fmt.ring {
        return Err(ProtocolError::Config(format!(
            "logits in Z_2^{} for a format in Z_2^{}",
            logits.ring().bits(),
            fmt.ring.bits()
        )));
    }
    let (rows, vocab) = rows_vocab(logits.shape())?;
    let p = Plan::new(rows, vocab, fmt)?;
    let role = s.role();
    if rows == 0 {
        return Ok(match (role, choice) {
            (Role::Server, _) => TokenOutcome::Nothing,
            (Role::Client, TokenChoice::Logits) => TokenOutcome::Logits(Vec::new()),
            (Role::Client, _) => TokenOutcome::Tokens(Vec::new()),
        });
    }
    if let TokenChoice::Logits = choice {
        return match role {
            Role::Server => {
                ch.send_u64s(logits.data())?;
                ch.flush()?;
                Ok(TokenOutcome::Nothing)
            }
            Role::Client => {
                let theirs = ch.recv_u64s_exact(logits.len())?;
                let r = fmt.ring;
                if !theirs.iter().all(|&v| r.contains(v)) {
                    return Err(ProtocolError::Protocol(
                        "a logit share outside the ring".into(),
                    ));
                }
                let scale = 2f64.powi(-(fmt.frac as i32));
                Ok(TokenOutcome::Logits(
                    logits
                        .data()
                        .iter()
                        .zip(&theirs)
                        .map(|(&a, &b)| r.to_i64(r.add(a, b)) as f64 * scale)
                        .collect(),
                ))
            }
        };
    }
    let need = choose_token_cost(rows, vocab, fmt, choice, s.config())?;
    s.reserve(ch, need.cots)?;
    if vocab == 1 {
        return Ok(match role {
            Role::Server => TokenOutcome::Nothing,
            Role::Client => TokenOutcome::Tokens(vec![0; rows]),
        });
    }
    let x = to_compare_ring(s, ch, logits, &p)?;
    let values = match choice {
        TokenChoice::Sample { seed, .. } => {
            let sp = SamplePlan::new(&p, fmt, choice)?;
            let keep = if sp.filters() {
                Some(threshold::keep_mask(s, ch, &x, &p, &sp)?)
            } else {
                None
            };
            let v = widen(s, ch, &x, p.mag, sp.ls)?;
            let r = sp.ls;
            let v = if role == Role::Client {
                let noise = gumbel_noise(*seed, p.n(), sp.temperature, fmt.frac);
                AShare::new(
                    r,
                    v.shape().to_vec(),
                    v.data()
                        .iter()
                        .zip(&noise)
                        .map(|(&a, &g)| r.add(a, r.from_i64(g)))
                        .collect(),
                )?
            } else {
                v
            };
            match keep {
                // v <- -2^{ws-1} + keep (v + 2^{ws-1})
                Some(k) => {
                    let off = 1i64 << (sp.ws - 1);
                    let m = nl::mux(s, ch, &k, &add_public(&v, role, off)?)?;
                    add_public(&m, role, -off)?
                }
                None => v,
            }
        }
        _ => x,
    };
    let idx = tournament::argmax(s, ch, &values, rows, vocab)?;
    open_index(role, ch, &idx, vocab)
}

/// Exact bytes (flights: an upper bound) and COTs of [`choose_token`] on `rows` rows of `vocab`
/// logits in `fmt` with `choice` and `cfg` (the COT reservation's own traffic excluded).
pub fn choose_token_cost(
    rows: usize,
    vocab: usize,
    fmt: &LogitFormat,
    choice: &TokenChoice,
    cfg: NlConfig,
) -> Result<Cost> {
    choice.validate()?;
    let p = Plan::new(rows, vocab, fmt)?;
    if let TokenChoice::Logits = choice {
        return Ok(Cost {
            bytes: 8 * p.n() as u64,
            rounds: u64::from(p.n() > 0),
            ..Cost::default()
        });
    }
    if vocab == 1 || rows == 0 {
        return Ok(Cost::default());
    }
    let mut c = to_compare_ring_cost(&p, cfg);
    let lv = match choice {
        TokenChoice::Sample { .. } => {
            let sp = SamplePlan::new(&p, fmt, choice)?;
            if sp.filters() {
                c = c + threshold::keep_mask_cost(&p, &sp, cfg)?;
            }
            c = c + widen_cost(p.n(), p.lc, sp.ls, cfg);
            if sp.filters() {
                c = c + nl::mux_cost(p.n(), sp.ls, cfg);
            }
            sp.ls
        }
        _ => p.lc,
    };
    Ok(c + tournament::argmax_cost(rows, vocab, lv, cfg) + open_cost(rows))
}
