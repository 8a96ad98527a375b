//! Compact, versioned, validating serialization.
//!
//! Every object starts with a 10-byte header: format version (`u8`), kind (`u8`), parameter id
//! (`u64` little-endian, see [`crate::RlweParameters::id`]). Payloads are bit-packed
//! ([`crate::bitpack`]):
//!
//! | kind | payload | bytes (N = 4096, preset n4096-q109) |
//! |---|---|---|
//! | 1 seeded ciphertext | 32-byte seed, `b` residues at `ceil(log2 p_i)` bits | 10 + 32 + 55,808 = 55,850 |
//! | 2 public key | same as 1 | 55,850 |
//! | 3 output ciphertext | `u32` count `m`, `m` values at `b_bits`, `N` values at `a_bits` | 14 + ceil((m b_bits + N a_bits)/8) |
//!
//! Decoding checks, in order: exact total length for the parameters (and the count for kind 3),
//! version, kind, parameter id, each residue `< p_i`, zero padding bits. Any failure is a
//! [`FheError`], never a panic.

use std::sync::Arc;

use crate::bitpack::{packed_len, BitReader, BitWriter};
use crate::ciphertext::SeededCiphertext;
use crate::error::{FheError, Result};
use crate::galois::GaloisKeys;
use crate::keys::PublicKey;
use crate::output::OutputCiphertext;
use crate::params::RlweParameters;
use crate::rns::RnsPoly;
use crate::sampling::Seed;

/// Serialization format version written and accepted by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Header size in bytes.
pub const HEADER_LEN: usize = 10;

const KIND_SEEDED: u8 = 1;
const KIND_PUBLIC_KEY: u8 = 2;
const KIND_OUTPUT: u8 = 3;
const KIND_GALOIS: u8 = 4;

fn header(out: &mut Vec<u8>, kind: u8, id: u64) {
    out.push(FORMAT_VERSION);
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
}

fn check_header<'a>(
    params: &RlweParameters,
    bytes: &'a [u8],
    kind: u8,
    what: &'static str,
) -> Result<&'a [u8]> {
    let (head, rest) = bytes.split_at_checked(HEADER_LEN).ok_or_else(|| {
        FheError::malformed(
            what,
            format!("{} bytes is shorter than the header", bytes.len()),
        )
    })?;
    let (ver, head) = head
        .split_first()
        .ok_or_else(|| FheError::malformed(what, "empty"))?;
    if *ver != FORMAT_VERSION {
        return Err(FheError::UnsupportedVersion {
            found: *ver,
            supported: FORMAT_VERSION,
        });
    }
    let (k, id_bytes) = head
        .split_first()
        .ok_or_else(|| FheError::malformed(what, "empty"))?;
    if *k != kind {
        return Err(FheError::malformed(
            what,
            format!("object kind {k}, expected {kind}"),
        ));
    }
    let id = u64::from_le_bytes(
        id_bytes
            .try_into()
            .map_err(|_| FheError::malformed(what, "bad header"))?,
    );
    if id != params.id() {
        return Err(FheError::ParameterMismatch {
            expected: params.id(),
            found: id,
        });
    }
    Ok(rest)
}

fn widths(moduli: &[u64]) -> Vec<u32> {
    moduli
        .iter()
        .map(|&p| 64 - (p - 1).leading_zeros())
        .collect()
}

fn poly_len(params: &RlweParameters) -> usize {
    poly_len_for(params.degree(), params.moduli())
}

fn poly_len_for(n: usize, moduli: &[u64]) -> usize {
    widths(moduli).iter().map(|&w| packed_len(n, w)).sum()
}

fn write_poly(out: &mut Vec<u8>, params: &RlweParameters, poly: &RnsPoly) {
    write_poly_for(out, params.moduli(), poly);
}

fn write_poly_for(out: &mut Vec<u8>, moduli: &[u64], poly: &RnsPoly) {
    for (limb, w) in poly.limbs.iter().zip(widths(moduli)) {
        let mut bw = BitWriter::new(core::mem::take(out));
        for &x in limb {
            bw.put(u128::from(x), w);
        }
        *out = bw.finish();
    }
}

fn read_poly(params: &RlweParameters, bytes: &[u8], what: &'static str) -> Result<RnsPoly> {
    read_poly_for(&params.ctx, bytes, what)
}

fn read_poly_for(
    ctx: &crate::rns::RnsContext,
    mut bytes: &[u8],
    what: &'static str,
) -> Result<RnsPoly> {
    let mut poly = ctx.zero();
    for ((limb, w), &p) in poly
        .limbs
        .iter_mut()
        .zip(widths(ctx.moduli()))
        .zip(ctx.moduli())
    {
        let len = packed_len(ctx.degree(), w);
        let (mine, rest) = bytes
            .split_at_checked(len)
            .ok_or_else(|| FheError::malformed(what, "truncated polynomial"))?;
        let mut r = BitReader::new(mine, what);
        for dst in limb.iter_mut() {
            let v = r.get(w)? as u64;
            if v >= p {
                return Err(FheError::malformed(
                    what,
                    format!("residue {v} not below its modulus {p}"),
                ));
            }
            *dst = v;
        }
        r.finish()?;
        bytes = rest;
    }
    Ok(poly)
}

fn seeded_from_bytes(
    params: &RlweParameters,
    bytes: &[u8],
    kind: u8,
    what: &'static str,
) -> Result<(Seed, RnsPoly)> {
    let expected = HEADER_LEN + 32 + poly_len(params);
    if bytes.len() != expected {
        return Err(FheError::malformed(
            what,
            format!("length {} bytes, expected {expected}", bytes.len()),
        ));
    }
    let rest = check_header(params, bytes, kind, what)?;
    let (seed, rest) = rest
        .split_at_checked(32)
        .ok_or_else(|| FheError::malformed(what, "truncated seed"))?;
    let seed: Seed = seed
        .try_into()
        .map_err(|_| FheError::malformed(what, "truncated seed"))?;
    Ok((seed, read_poly(params, rest, what)?))
}

impl SeededCiphertext {
    /// Serialized size for `params`.
    pub fn serialized_len(params: &RlweParameters) -> usize {
        HEADER_LEN + 32 + poly_len(params)
    }

    /// Serialize (`params` must be the ones it was made with).
    pub fn to_bytes(&self, params: &RlweParameters) -> Result<Vec<u8>> {
        if self.params_id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: self.params_id,
            });
        }
        let mut out = Vec::with_capacity(Self::serialized_len(params));
        header(&mut out, KIND_SEEDED, params.id());
        out.extend_from_slice(&self.seed);
        write_poly(&mut out, params, &self.b);
        Ok(out)
    }

    /// Parse and validate.
    pub fn from_bytes(params: &RlweParameters, bytes: &[u8]) -> Result<Self> {
        let (seed, b) = seeded_from_bytes(params, bytes, KIND_SEEDED, "seeded ciphertext")?;
        Ok(Self {
            params_id: params.id(),
            seed,
            b,
        })
    }
}

impl PublicKey {
    /// Serialized size for `params`.
    pub fn serialized_len(params: &RlweParameters) -> usize {
        HEADER_LEN + 32 + poly_len(params)
    }

    /// Serialize.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::serialized_len(&self.params));
        header(&mut out, KIND_PUBLIC_KEY, self.params.id());
        out.extend_from_slice(&self.seed);
        write_poly(&mut out, &self.params, &self.b);
        out
    }

    /// Parse and validate.
    pub fn from_bytes(params: &Arc<RlweParameters>, bytes: &[u8]) -> Result<Self> {
        let (seed, b) = seeded_from_bytes(params, bytes, KIND_PUBLIC_KEY, "public key")?;
        PublicKey::from_parts(Arc::clone(params), seed, b)
    }
}

impl OutputCiphertext {
    /// Serialized size of an output with `count` extracted coefficients.
    pub fn serialized_len(params: &RlweParameters, count: usize) -> usize {
        HEADER_LEN
            + 4
            + (count * params.output_b_bits() as usize
                + params.degree() * params.output_a_bits() as usize)
                .div_ceil(8)
    }

    /// Serialize.
    pub fn to_bytes(&self, params: &RlweParameters) -> Result<Vec<u8>> {
        if self.params_id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: self.params_id,
            });
        }
        let count = u32::try_from(self.b.len())
            .map_err(|_| FheError::range("output count", self.b.len(), "< 2^32"))?;
        let mut out = Vec::with_capacity(Self::serialized_len(params, self.b.len()));
        header(&mut out, KIND_OUTPUT, params.id());
        out.extend_from_slice(&count.to_le_bytes());
        let mut w = BitWriter::new(out);
        for &v in &self.b {
            w.put(v, params.output_b_bits());
        }
        for &v in &self.a {
            w.put(v, params.output_a_bits());
        }
        Ok(w.finish())
    }

    /// Parse and validate, expecting exactly `count` extracted coefficients.
    pub fn from_bytes(params: &RlweParameters, bytes: &[u8], count: usize) -> Result<Self> {
        const WHAT: &str = "output ciphertext";
        let n = params.degree();
        if count == 0 || count > n {
            return Err(FheError::range("output count", count, format!("1..={n}")));
        }
        let expected = Self::serialized_len(params, count);
        if bytes.len() != expected {
            return Err(FheError::malformed(
                WHAT,
                format!("length {} bytes, expected {expected}", bytes.len()),
            ));
        }
        let rest = check_header(params, bytes, KIND_OUTPUT, WHAT)?;
        let (cnt, rest) = rest
            .split_at_checked(4)
            .ok_or_else(|| FheError::malformed(WHAT, "truncated count"))?;
        let cnt = u32::from_le_bytes(
            cnt.try_into()
                .map_err(|_| FheError::malformed(WHAT, "truncated count"))?,
        );
        if cnt as usize != count {
            return Err(FheError::malformed(
                WHAT,
                format!("count {cnt}, expected {count}"),
            ));
        }
        let mut r = BitReader::new(rest, WHAT);
        let b = (0..count)
            .map(|_| r.get(params.output_b_bits()))
            .collect::<Result<Vec<_>>>()?;
        let a = (0..n)
            .map(|_| r.get(params.output_a_bits()))
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        Ok(Self {
            params_id: params.id(),
            b,
            a,
        })
    }
}

impl GaloisKeys {
    /// Serialized size for `params` (0 if the parameters do not support packing).
    pub fn serialized_len(params: &RlweParameters) -> usize {
        match &params.ks {
            Some(ks) => {
                let parts = params.moduli().len() * params.max_pack().trailing_zeros() as usize;
                HEADER_LEN + parts * (32 + poly_len_for(params.degree(), ks.qp.moduli()))
            }
            None => 0,
        }
    }

    /// Serialize (seeds plus `b` polynomials modulo `qP`, NTT domain).
    pub fn to_bytes(&self) -> Vec<u8> {
        let params = &self.params;
        let mut out = Vec::with_capacity(Self::serialized_len(params));
        header(&mut out, KIND_GALOIS, params.id());
        if let Some(ks) = &params.ks {
            for (seed, b) in self.parts() {
                out.extend_from_slice(seed);
                write_poly_for(&mut out, ks.qp.moduli(), b);
            }
        }
        out
    }

    /// Parse and validate.
    pub fn from_bytes(params: &Arc<RlweParameters>, bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "galois keys";
        let ks = params.ks.as_ref().ok_or_else(|| {
            FheError::param(
                "special_prime",
                "none",
                "these parameters do not support packing",
            )
        })?;
        let expected = Self::serialized_len(params);
        if bytes.len() != expected {
            return Err(FheError::malformed(
                WHAT,
                format!("length {} bytes, expected {expected}", bytes.len()),
            ));
        }
        let mut rest = check_header(params, bytes, KIND_GALOIS, WHAT)?;
        let plen = poly_len_for(params.degree(), ks.qp.moduli());
        let mut parts = Vec::new();
        while !rest.is_empty() {
            let (seed, tail) = rest
                .split_at_checked(32)
                .ok_or_else(|| FheError::malformed(WHAT, "truncated seed"))?;
            let (poly, tail) = tail
                .split_at_checked(plen)
                .ok_or_else(|| FheError::malformed(WHAT, "truncated polynomial"))?;
            let seed: Seed = seed
                .try_into()
                .map_err(|_| FheError::malformed(WHAT, "truncated seed"))?;
            parts.push((seed, read_poly_for(&ks.qp, poly, WHAT)?));
            rest = tail;
        }
        GaloisKeys::from_parts(params, parts)
    }
}
