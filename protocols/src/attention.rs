//! Multi-head attention as one operator over any [`Backend`]: a query block of `q` rows at
//! positions `p .. p + q` against `k = p + q` keys (the block's own and, for generation, those
//! of earlier positions kept in a [`KvCache`]), so a prefill is `p = 0, k = q` and a decode
//! step `q = 1, k = p + 1`.
//!
//! # Protocol
//! 1. Rotary positions (LLaMA), if any: each party rotates its share of the queries and keys by
//!    the public angles of their positions (encoded at `f` bits), then one truncation by `f`.
//! 2. The keys and values of the block are appended to the cache (shares; never revealed).
//! 3. Scores `Q K^T` per head by [`Backend::matmul_shared`] (the server folded `1/sqrt(d)` into
//!    the query weights), `2f` fractional bits, truncated to `score_frac`. Grouped-query
//!    attention reads key head `h / (heads / kv_heads)` for query head `h` (a local
//!    selection).
//! 4. SoftMax over each row, with the causal mask (key `j` hidden from query `i` when
//!    `j > p + i`) for decoders.
//! 5. Context `P V` per head, truncated back to `f`, and the heads laid side by side.
//!
//! Recorded as three nodes: `NAME.scores` (steps 1-3), `NAME.softmax` (4) and `NAME.context`
//! (5).
//!
//! # Security
//! Every step is a [`Backend`] operator on shares (semi-honest, composed sequentially); the
//! positions, the mask and the cache length are public (the sequence length is).
//!
//! # Cost
//! Per layer: the truncations of `q + k_new` rotated rows, two shared products of
//! `heads x q x d x k` and `heads x q x k x d`, a SoftMax of `heads q` rows of `k`, and three
//! truncations; [`crate::backend::CostBackend`] gives them exactly.

use crate::backend::{Backend, OpKind};
use crate::matmul::{KvSpec, SharedShape};
use crate::nonlinear::gaussian_attn::GaussShape;
use crate::plan::KvCacheMode;
use crate::prefix::{self, PrefixKv};
use crate::{ProtocolError, Result};
use duet_mpc::FixedPoint;
use serde::{Deserialize, Serialize};

/// The public shape of an attention block.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttentionSpec {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention); divides `heads`.
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Mask future positions (decoders).
    pub causal: bool,
    /// Rotary base, if rotary positions are used.
    pub rope_theta: Option<f64>,
    /// How scores become attention weights.
    #[serde(default)]
    pub kernel: AttentionKernel,
}

/// How attention scores become weights (public: part of the model's config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum AttentionKernel {
    /// `softmax(q k^T / sqrt(d))` per row (the server folds `1/sqrt(d)` into the queries'
    /// weights).
    #[default]
    Softmax,
    /// `exp(-scale ||q_i - k_j||^2)`, no normalisation: the Gaussian kernel of
    /// "Encryption-Friendly LLM Architecture" (Rho et al., ICLR'25), for models fine-tuned with
    /// it ([`crate::nonlinear::gaussian_attn`]; no max, no row sum, no reciprocal).
    Gaussian {
        /// The kernel's scale (e.g. `1 / (2 sqrt d)`).
        scale: f64,
    },
}

impl AttentionSpec {
    fn check(&self) -> Result<()> {
        let bad_kernel = match self.kernel {
            AttentionKernel::Softmax => false,
            AttentionKernel::Gaussian { scale } => !(scale.is_finite() && scale > 0.0),
        };
        if self.kv_heads == 0
            || self.heads % self.kv_heads != 0
            || self.head_dim == 0
            || self.rope_theta.is_some() && self.head_dim % 2 != 0
            || bad_kernel
        {
            return Err(ProtocolError::Config(format!(
                "attention of {} heads over {} key heads of width {}",
                self.heads, self.kv_heads, self.head_dim
            )));
        }
        Ok(())
    }
}

/// One layer's keys (after rotary positions) and values of the positions seen so far: rows
/// are positions, columns `kv_heads x head_dim`. Shares on both parties; never revealed.
#[derive(Clone, Debug)]
pub struct KvCache<T> {
    k: Option<T>,
    v: Option<T>,
    len: usize,
    prefix: PrefixKv,
}

impl<T> Default for KvCache<T> {
    fn default() -> Self {
        Self::with_prefix(PrefixKv::default())
    }
}

impl<T> KvCache<T> {
    /// A cache whose first positions are a public prefix ([`crate::prefix`]): its keys and
    /// values are the server's plaintext, the positions after it shared.
    pub fn with_prefix(prefix: PrefixKv) -> Self {
        Self {
            k: None,
            v: None,
            len: 0,
            prefix,
        }
    }

    /// Positions held (the public prefix's and the shared ones).
    pub fn len(&self) -> usize {
        self.len + self.prefix.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The public prefix (empty without one).
    pub fn prefix(&self) -> &PrefixKv {
        &self.prefix
    }
}

/// Rotary positions on a `rows x heads*hd` value at positions `offset + row`: the local
/// rotation by public angles (HuggingFace's rotate-half pairs `(i, i + hd/2)`), then one
/// truncation by `f`.
fn rope<B: Backend>(
    b: &mut B,
    x: &B::T,
    heads: usize,
    hd: usize,
    theta: f64,
    offset: usize,
) -> Result<B::T> {
    let ring = b.ring();
    let f = b.options().frac;
    let fp = FixedPoint::new(ring, f)?;
    let (rows, _) = b.dims(x);
    let half = hd / 2;
    let width = heads * hd;
    let freq: Vec<f64> = (0..half)
        .map(|i| theta.powf(-2.0 * i as f64 / hd as f64))
        .collect();
    // encoded (cos, sin) per (row, i)
    let angles: Vec<(u64, u64)> = (0..rows)
        .flat_map(|r| {
            freq.iter().map(move |&w| {
                let (s, c) = ((offset + r) as f64 * w).sin_cos();
                (c, s)
            })
        })
        .map(|(c, s)| (fp.encode(c), fp.encode(s)))
        .collect();
    let neg = |v: u64| ring.neg(v);
    let y = b.combine_pairs(x, &|idx| {
        let (r, col) = (idx / width.max(1), idx % width.max(1));
        let (h, j) = (col / hd, col % hd);
        let i = j % half.max(1);
        let (c, s) = angles.get(r * half + i).copied().unwrap_or((0, 0));
        let base = r * width + h * hd;
        if j < half {
            // x_a cos - x_b sin
            ((base + i, c), (base + i + half, neg(s)))
        } else {
            // x_b cos + x_a sin
            ((base + i + half, c), (base + i, s))
        }
    })?;
    b.trunc(&y, f)
}

/// `n x heads*hd` queries laid out as `heads x n x hd` (a local gather).
fn heads_first<B: Backend>(b: &mut B, q: &B::T, heads: usize, hd: usize) -> Result<B::T> {
    let (n, qw) = b.dims(q);
    b.gather(q, heads * n, hd, &|o| {
        let (h, i, j) = (o / (n * hd), (o / hd) % n, o % hd);
        i * qw + h * hd + j
    })
}

/// `heads x n x hd` back to `n x heads*hd` (a local gather).
fn heads_back<B: Backend>(b: &mut B, z: &B::T, n: usize, qw: usize, hd: usize) -> Result<B::T> {
    b.gather(z, n, qw, &|o| {
        let (i, c) = (o / qw, o % qw);
        let (h, j) = (c / hd, c % hd);
        h * n * hd + i * hd + j
    })
}

/// The public causal mask of `heads x n x kv` scores (`true`: key `j` is hidden from query `i`,
/// `j > start + i`), or none for an encoder.
fn causal_mask(spec: &AttentionSpec, n: usize, kv: usize, start: usize) -> Option<Vec<bool>> {
    spec.causal.then(|| {
        (0..spec.heads * n * kv)
            .map(|idx| {
                let (i, j) = ((idx / kv) % n, idx % kv);
                j > start + i
            })
            .collect()
    })
}

/// Step 4, recorded as `NAME.softmax`: SoftMax over the `heads n` rows of `kv` scores (at
/// `score_frac` bits), key `j` hidden from query `i` when `j > start + i` for causal
/// attention. Returns the probabilities and their fractional bits.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's operands and context"
)]
fn softmax_node<B: Backend>(
    b: &mut B,
    name: &str,
    spec: &AttentionSpec,
    s: &B::T,
    n: usize,
    kv: usize,
    start: usize,
) -> Result<(B::T, u32)> {
    b.begin();
    let mask = causal_mask(spec, n, kv, start);
    let fs = b.options().score_frac;
    let p = b.softmax(s, fs, mask.as_deref())?;
    let fp = b.options().protocol.softmax.config().exp.frac;
    b.finish(&format!("{name}.softmax"), OpKind::Softmax, 1);
    Ok((p, fp))
}

/// Runs attention on `q` (`rows x heads*hd`), `k` and `v` (`rows x kv_heads*hd`) of a block at
/// positions `offset ..`, against the cached positions when `cache` is given (its length must
/// be `offset`, and the block's keys and values are appended to it). Records `NAME.scores`,
/// `NAME.softmax`, `NAME.context`; returns `rows x heads*hd`.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's operands and context"
)]
pub fn attention<B: Backend>(
    b: &mut B,
    name: &str,
    spec: &AttentionSpec,
    q: &B::T,
    k: &B::T,
    v: &B::T,
    offset: usize,
    cache: Option<&mut KvCache<B::T>>,
) -> Result<B::T> {
    spec.check()?;
    let (heads, kvh, hd) = (spec.heads, spec.kv_heads, spec.head_dim);
    let group = heads / kvh;
    let (n, qw) = b.dims(q);
    let (nk, kw) = b.dims(k);
    if qw != heads * hd || kw != kvh * hd || nk != n || b.dims(v) != (nk, kw) {
        return Err(ProtocolError::Config(format!(
            "{name}: queries {n}x{qw}, keys {nk}x{kw} for {heads} heads over {kvh} of width {hd}"
        )));
    }
    let f = b.options().frac;
    let fs = b.options().score_frac;
    b.begin();
    let (q, k) = match spec.rope_theta {
        Some(t) => (
            rope(b, q, heads, hd, t, offset)?,
            rope(b, k, kvh, hd, t, offset)?,
        ),
        None => (q.clone(), k.clone()),
    };
    if let (Some(c), AttentionKernel::Gaussian { .. }) = (cache.as_deref(), spec.kernel) {
        if !c.prefix.is_empty() {
            return Err(ProtocolError::Config(format!(
                "{name}: Gaussian-kernel attention does not take a public prefix"
            )));
        }
    }
    if let (Some(_), KvCacheMode::Encrypted(_), AttentionKernel::Gaussian { .. }) =
        (cache.as_deref(), b.options().plan.kv_cache, spec.kernel)
    {
        return Err(ProtocolError::Config(format!(
            "{name}: Gaussian-kernel attention runs on a KV cache of shares (the plan asks for \
             the encrypted cache)"
        )));
    }
    if let Some(c) = cache.as_deref() {
        if c.len() != offset {
            return Err(ProtocolError::Config(format!(
                "{name}: the cache holds {} positions, the block starts at {offset}",
                c.len()
            )));
        }
    }
    let pre = cache
        .as_deref()
        .map(|c| c.prefix.clone())
        .unwrap_or_default();
    if let (Some(_), KvCacheMode::Encrypted(_)) = (cache.as_deref(), b.options().plan.kv_cache) {
        return encrypted_cache(b, name, spec, &q, &k, v, offset, cache, &pre);
    }
    // the keys and values of every position seen, and where the block starts among them
    let (keys, values, start) = match cache {
        Some(c) => {
            let keys = match &c.k {
                Some(old) => b.concat_rows(old, &k)?,
                None => k,
            };
            let values = match &c.v {
                Some(old) => b.concat_rows(old, v)?,
                None => v.clone(),
            };
            c.k = Some(keys.clone());
            c.v = Some(values.clone());
            c.len += n;
            (keys, values, offset)
        }
        None => (k, v.clone(), 0),
    };
    let (kv, _) = b.dims(&keys);
    let xq = heads_first(b, &q, heads, hd)?;
    let yk = b.gather(&keys, heads * hd, kv, &|o| {
        let (h, j, i) = (o / (hd * kv), (o / kv) % hd, o % kv);
        i * kw + (h / group) * hd + j
    })?;
    let s = b.matmul_shared(SharedShape::new(heads, n, hd, kv), &xq, &yk)?;
    let (p, fp) = match spec.kernel {
        AttentionKernel::Softmax => {
            let s = if pre.is_empty() {
                s
            } else {
                let sp = prefix::scores(b, name, &pre, &xq, (heads, kvh, hd))?;
                prefix::concat_cols(b, &sp, &s)?
            };
            let s = b.trunc(&s, 2 * f - fs)?;
            b.finish(&format!("{name}.scores"), OpKind::AttentionMatmul, 1);
            softmax_node(b, name, spec, &s, n, pre.len() + kv, start)?
        }
        AttentionKernel::Gaussian { scale } => {
            // q k^T at f bits, and the keys per query head (`heads x kv x hd`) for their norms
            let qk = b.trunc(&s, f)?;
            let kh = b.gather(&keys, heads * kv, hd, &|o| {
                let (h, i, j) = (o / (kv * hd), (o / hd) % kv, o % hd);
                i * kw + (h / group) * hd + j
            })?;
            b.finish(&format!("{name}.scores"), OpKind::AttentionMatmul, 1);
            b.begin();
            let mask = causal_mask(spec, n, kv, start);
            let shape = GaussShape {
                heads,
                queries: n,
                keys: kv,
                dim: hd,
            };
            let p = b.gaussian_kernel(shape, &xq, &kh, &qk, scale, mask.as_deref())?;
            b.finish(&format!("{name}.softmax"), OpKind::Softmax, 1);
            p
        }
    };

    b.begin();
    let yv = b.gather(&values, heads * kv, hd, &|o| {
        let (h, i, j) = (o / (kv * hd), (o / hd) % kv, o % hd);
        i * kw + (h / group) * hd + j
    })?;
    let z = if pre.is_empty() {
        b.matmul_shared(SharedShape::new(heads, n, kv, hd), &p, &yv)?
    } else {
        let pp = prefix::columns(b, &p, 0, pre.len())?;
        let ps = prefix::columns(b, &p, pre.len(), kv)?;
        let zs = b.matmul_shared(SharedShape::new(heads, n, kv, hd), &ps, &yv)?;
        let zp = prefix::context(b, name, &pre, &pp, (kvh, hd))?;
        b.add(&zp, &zs)?
    };
    let z = b.trunc(&z, fp)?;
    let out = heads_back(b, &z, n, qw, hd)?;
    b.finish(&format!("{name}.context"), OpKind::AttentionMatmul, 0);
    Ok(out)
}

/// Steps 2-5 against the encrypted cache ([`Backend::kv_scores`], [`Backend::kv_context`]):
/// the block's rotated keys and its values join the cache held by the backend (encrypted at
/// the peer), the scores and the context are its products; the SoftMax and the truncations
/// are those of the shared path. `cache` only counts positions here.
#[allow(
    clippy::too_many_arguments,
    reason = "the operator's operands and context"
)]
fn encrypted_cache<B: Backend>(
    b: &mut B,
    name: &str,
    spec: &AttentionSpec,
    q: &B::T,
    k: &B::T,
    v: &B::T,
    offset: usize,
    cache: Option<&mut KvCache<B::T>>,
    pre: &PrefixKv,
) -> Result<B::T> {
    let (heads, hd) = (spec.heads, spec.head_dim);
    let (n, qw) = b.dims(q);
    let f = b.options().frac;
    let fs = b.options().score_frac;
    let xq = heads_first(b, q, heads, hd)?;
    // the encrypted cache holds the private positions only, from 0
    let shared_start = offset - pre.len();
    let s = b.kv_scores(name, KvSpec::from_attention(spec), shared_start, &xq, k, v)?;
    if let Some(c) = cache {
        c.len += n;
    }
    let s = if pre.is_empty() {
        s
    } else {
        let sp = prefix::scores(b, name, pre, &xq, (heads, spec.kv_heads, hd))?;
        prefix::concat_cols(b, &sp, &s)?
    };
    let kv = offset + n;
    let s = b.trunc(&s, 2 * f - fs)?;
    b.finish(&format!("{name}.scores"), OpKind::AttentionMatmul, 1);

    let (p, fp) = softmax_node(b, name, spec, &s, n, kv, offset)?;

    b.begin();
    let z = if pre.is_empty() {
        b.kv_context(name, &p)?
    } else {
        let pp = prefix::columns(b, &p, 0, pre.len())?;
        let ps = prefix::columns(b, &p, pre.len(), kv - pre.len())?;
        let zs = b.kv_context(name, &ps)?;
        let zp = prefix::context(b, name, pre, &pp, (spec.kv_heads, hd))?;
        b.add(&zp, &zs)?
    };
    let z = b.trunc(&z, fp)?;
    let out = heads_back(b, &z, n, qw, hd)?;
    b.finish(&format!("{name}.context"), OpKind::AttentionMatmul, 0);
    Ok(out)
}
