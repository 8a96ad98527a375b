//! A public prefix in attention: the keys (after rotary positions) and values of positions
//! `0 .. P` that both parties know to be a public text, computed **in the clear by the server**
//! (it holds the weights and the prefix is public), so the private positions after it attend
//! to them with products in which one operand is known to one party.
//!
//! # Protocol
//! For a block of `q` private query rows (shared, `heads x q x d`) and the prefix's `P` keys
//! `K` and values `V` (the server's plaintext, `P x kv_heads d`):
//! 1. **Scores** `q K^T` per key/value head `g`: the query rows of the heads that read `g`
//!    (grouped-query attention: a contiguous block of `heads / kv_heads` heads) times the
//!    server's `d x P` matrix `K_g^T` by [`Backend::matmul_known`] (HE or OT as the plan says
//!    for node `NAME.prefix`), never a product of two shared operands. The prefix's columns
//!    are laid before the private positions' scores; one SoftMax covers both (the prefix is
//!    never masked: it precedes every private position).
//! 2. **Context** `P_prefix V`: the probabilities' prefix columns (shared) times the server's
//!    `P x d` matrix `V_g`, again by [`Backend::matmul_known`], added to the private
//!    positions' context before its truncation.
//!
//! `K` and `V` are encoded at `frac - PREFIX_KV_SHIFT` fractional bits, so that keys and values
//! up to `2^(weight_bits + PREFIX_KV_SHIFT)` (LLaMA keys reach 29 on SmolLM2) fit the HE
//! parameters' weight bound; both parties scale the products by `2^PREFIX_KV_SHIFT` locally
//! (exact on shares), so they carry the fractional bits of the shared products they join.
//!
//! # Security
//! The server's `K`, `V` enter only as the known operand of [`Backend::matmul_known`] (the
//! security of a private-weight linear layer: the client sees RLWE ciphertexts or OT messages
//! and uniform shares). The server learns nothing it did not know: the prefix is public.
//! Public: the prefix's length (and text), the shapes. A prefix key or value beyond the declared
//! range is refused by the server before the session uses it (the message does not say which).
//!
//! # Cost
//! Per layer and block: `kv_heads` known-operand products of `(heads/kv_heads) q x d x P` and
//! as many of `(heads/kv_heads) q x P x d` (the cost backend prices them exactly), plus the
//! SoftMax's `P` extra columns per row. The server's plaintext work for the prefix (a forward
//! pass of `P` tokens) is not in the cost model: it is reported apart.

use crate::backend::Backend;
use crate::options::SecureOptions;
use crate::{ProtocolError, Result};
use std::sync::Arc;

/// Fractional bits the prefix's keys and values give up to fit the HE weight bound (see the
/// module documentation).
pub const PREFIX_KV_SHIFT: u32 = 2;

/// Most prefix positions.
pub const MAX_PREFIX: usize = 1 << 17;

/// One key/value head's operands, as the products read them: `K_g^T` (`d x len`) and `V_g`
/// (`len x d`), encoded.
type HeadKv = (Vec<i64>, Vec<i64>);

/// One layer's public-prefix keys and values: the server holds them (per key/value head,
/// encoded at `frac - PREFIX_KV_SHIFT` bits, laid out once for every step's products); the
/// client and the cost model only the length.
#[derive(Clone, Debug, Default)]
pub struct PrefixKv {
    len: usize,
    kv: Option<Arc<Vec<HeadKv>>>,
}

impl PrefixKv {
    /// A prefix of `len` positions whose keys and values this party does not hold.
    pub fn public(len: usize) -> Self {
        Self { len, kv: None }
    }

    /// The server's prefix: `len x width` keys (after rotary positions) and values as reals
    /// (`width` = key/value heads x `head_dim`), checked finite and below `2^(weight_bits +
    /// max(weight_frac, frac) - frac + PREFIX_KV_SHIFT)`, encoded at `frac - PREFIX_KV_SHIFT`
    /// bits.
    pub fn encode(
        opts: &SecureOptions,
        len: usize,
        (width, head_dim): (usize, usize),
        keys: &[f64],
        values: &[f64],
    ) -> Result<Self> {
        let size = len.checked_mul(width);
        if len == 0
            || len > MAX_PREFIX
            || head_dim == 0
            || width % head_dim != 0
            || size != Some(keys.len())
            || size != Some(values.len())
        {
            return Err(ProtocolError::Config(format!(
                "a prefix of {len} positions of width {width} ({} keys, {} values)",
                keys.len(),
                values.len()
            )));
        }
        let frac = opts.frac.saturating_sub(PREFIX_KV_SHIFT);
        let bound = (1u64 << (opts.weight_bits + opts.weight_frac.max(opts.frac))) as f64;
        let scale = (1u64 << frac) as f64;
        let enc = |x: &[f64]| -> Result<Vec<i64>> {
            x.iter()
                .map(|&v| {
                    let e = (v * scale).round();
                    if e.is_finite() && e.abs() <= bound {
                        Ok(e as i64)
                    } else {
                        Err(ProtocolError::Config(format!(
                            "the public prefix's keys or values exceed the declared range \
                             (|x| < {})",
                            bound / scale
                        )))
                    }
                })
                .collect()
        };
        let (k, v) = (enc(keys)?, enc(values)?);
        let d = head_dim;
        let at = |src: &[i64], t: usize, g: usize, j: usize| {
            src.get(t * width + g * d + j).copied().unwrap_or(0)
        };
        let heads = (0..width / d)
            .map(|g| {
                let kt = (0..d * len).map(|o| at(&k, o % len, g, o / len)).collect();
                let vg = (0..len * d).map(|o| at(&v, o / d, g, o % d)).collect();
                (kt, vg)
            })
            .collect();
        Ok(Self {
            len,
            kv: Some(Arc::new(heads)),
        })
    }

    /// Positions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether this party holds the keys and values.
    pub fn holds(&self) -> bool {
        self.kv.is_some()
    }

    /// Key/value head `g`'s keys as a `d x len` matrix (`K_g^T`), or its values as `len x d`.
    fn head(&self, g: usize, values: bool) -> Option<&[i64]> {
        let (kt, v) = self.kv.as_ref()?.get(g)?;
        Some(if values { v } else { kt })
    }
}

/// `x 2^PREFIX_KV_SHIFT` (a local scaling of both shares).
fn rescale<B: Backend>(b: &mut B, x: &B::T) -> Result<B::T> {
    let c = 1u64 << PREFIX_KV_SHIFT;
    b.combine_pairs(x, &|i| ((i, c), (i, 0)))
}

/// The rows of query heads `g*group .. (g+1)*group` of a `heads x n x cols` value (a
/// contiguous block).
fn group_rows<B: Backend>(b: &mut B, x: &B::T, g: usize, rows: usize) -> Result<B::T> {
    let (_, cols) = b.dims(x);
    let first = g * rows * cols;
    b.gather(x, rows, cols, &|o| first + o)
}

/// Step 1: the prefix's scores `q K^T` for the queries `xq` (`heads x n x d`), as `(heads n) x
/// P` with `2 frac` fractional bits (those of the shared scores).
pub(crate) fn scores<B: Backend>(
    b: &mut B,
    name: &str,
    prefix: &PrefixKv,
    xq: &B::T,
    (heads, kv_heads, d): (usize, usize, usize),
) -> Result<B::T> {
    let (rows, _) = b.dims(xq);
    let per = rows / kv_heads.max(1);
    let node = format!("{name}.prefix");
    let mut out: Option<B::T> = None;
    for g in 0..kv_heads {
        let x = group_rows(b, xq, g, per)?;
        let s = b.matmul_known(&node, &x, prefix.head(g, false), d, prefix.len)?;
        out = Some(match out {
            Some(o) => b.concat_rows(&o, &s)?,
            None => s,
        });
    }
    let out = out.ok_or_else(|| ProtocolError::Config(format!("{name}: {heads} heads")))?;
    rescale(b, &out)
}

/// Step 2: `P_prefix V` for the probabilities' prefix columns `p` (`(heads n) x P`), as
/// `(heads n) x d` with the probabilities' fractional bits plus `frac`.
pub(crate) fn context<B: Backend>(
    b: &mut B,
    name: &str,
    prefix: &PrefixKv,
    p: &B::T,
    (kv_heads, d): (usize, usize),
) -> Result<B::T> {
    let (rows, _) = b.dims(p);
    let per = rows / kv_heads.max(1);
    let node = format!("{name}.prefix");
    let mut out: Option<B::T> = None;
    for g in 0..kv_heads {
        let x = group_rows(b, p, g, per)?;
        let z = b.matmul_known(&node, &x, prefix.head(g, true), prefix.len, d)?;
        out = Some(match out {
            Some(o) => b.concat_rows(&o, &z)?,
            None => z,
        });
    }
    let out = out.ok_or_else(|| ProtocolError::Config(format!("{name}: no key heads")))?;
    rescale(b, &out)
}

/// `[a | c]`: the columns of `a` then of `c` (same rows; local).
pub(crate) fn concat_cols<B: Backend>(b: &mut B, a: &B::T, c: &B::T) -> Result<B::T> {
    let ((ra, ca), (rc, cc)) = (b.dims(a), b.dims(c));
    if ra != rc {
        return Err(ProtocolError::Shape {
            what: "rows of the columns to join",
            expected: ra,
            got: rc,
        });
    }
    let fa = b.gather(a, ra * ca, 1, &|o| o)?;
    let fc = b.gather(c, rc * cc, 1, &|o| o)?;
    let both = b.concat_rows(&fa, &fc)?;
    let w = ca + cc;
    b.gather(&both, ra, w, &|o| {
        let (r, j) = (o / w, o % w);
        if j < ca {
            r * ca + j
        } else {
            ra * ca + r * cc + (j - ca)
        }
    })
}

/// Columns `from .. from + count` of `x` (local).
pub(crate) fn columns<B: Backend>(b: &mut B, x: &B::T, from: usize, count: usize) -> Result<B::T> {
    let (rows, cols) = b.dims(x);
    if from + count > cols {
        return Err(ProtocolError::Shape {
            what: "columns",
            expected: cols,
            got: from + count,
        });
    }
    b.gather(x, rows, count, &|o| (o / count) * cols + from + o % count)
}
