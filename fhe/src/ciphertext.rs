//! Symmetric RLWE encryption with seeded `a`, its server-side expansion, and decryption.
//!
//! Encryption of `m in Z_t^N` under ternary `s`: `a = expand(seed)` (uniform, NTT domain),
//! `e <- CBD(21)^N`, `b = -a s + e + round(q m / t)`. The client sends only `(seed, b)`:
//! `32 + N sum_i ceil(log2 p_i) / 8` bytes instead of twice that. Security: RLWE with ternary
//! secret at the parameters' table row, plus the PRF security of ChaCha20 for `a`.
//! Cost: `L` inverse NTTs (the product `a s` is taken slot-wise; `a` needs no transform).
//!
//! Decryption of a full-modulus ciphertext: `m = round(t (b + a s) / q) mod t`, via
//! [`crate::rns::Pow2Rounder`] with `k = l`; exact while `|noise| < q/(2t)`. The client normally
//! decrypts the server's switched results instead ([`crate::output`]); this path is for fresh
//! ciphertexts and tests.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};

use crate::encoding::encode_scaled;
use crate::error::{FheError, Result};
use crate::keys::SecretKey;
use crate::params::RlweParameters;
use crate::rns::RnsPoly;
use crate::sampling::{expand_uniform, Seed};

/// A fresh encryption as sent by the client: seed of `a` plus `b` in coefficient form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededCiphertext {
    pub(crate) params_id: u64,
    pub(crate) seed: Seed,
    pub(crate) b: RnsPoly,
}

/// A ciphertext `(b, a)` in the NTT domain, ready for multiply-accumulate (server side).
#[derive(Clone, Debug)]
pub struct Ciphertext {
    pub(crate) params: Arc<RlweParameters>,
    pub(crate) b: RnsPoly,
    pub(crate) a: RnsPoly,
}

impl SecretKey {
    /// Encrypt up to `N` values of `Z_{2^l}` placed at coefficients `0..values.len()`.
    pub fn encrypt<R: RngCore + CryptoRng>(
        &self,
        values: &[u64],
        rng: &mut R,
    ) -> Result<SeededCiphertext> {
        let plain = encode_scaled(&self.params, values)?;
        let (seed, b) = self.seeded_encrypt(Some(&plain), rng);
        Ok(SeededCiphertext {
            params_id: self.params.id(),
            seed,
            b,
        })
    }

    /// Decrypt a full-modulus ciphertext into its `N` coefficients in `Z_{2^l}`.
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Vec<u64>> {
        check_params(&self.params, &ct.params)?;
        let ctx = &self.params.ctx;
        let mut phase = ct.b.clone();
        ctx.mul_acc(&mut phase, &ct.a, &self.ntt);
        ctx.backward(&mut phase);
        let r = &self.params.rounder_plain;
        Ok((0..self.params.degree())
            .map(|j| r.round_coeff(&phase, j) as u64)
            .collect())
    }
}

impl SeededCiphertext {
    /// Expand `a` from the seed and move `b` to the NTT domain. Cost: `L` forward NTTs.
    pub fn expand(&self, params: &Arc<RlweParameters>) -> Result<Ciphertext> {
        if self.params_id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: self.params_id,
            });
        }
        let ctx = &params.ctx;
        let mut b = self.b.clone();
        ctx.forward(&mut b);
        Ok(Ciphertext {
            params: Arc::clone(params),
            b,
            a: expand_uniform(ctx, &self.seed),
        })
    }

    /// Id of the parameters this ciphertext was made for.
    pub fn params_id(&self) -> u64 {
        self.params_id
    }
}

impl Ciphertext {
    /// Parameters of this ciphertext.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }
}

pub(crate) fn check_params(expected: &RlweParameters, found: &RlweParameters) -> Result<()> {
    if expected.id() == found.id() {
        Ok(())
    } else {
        Err(FheError::ParameterMismatch {
            expected: expected.id(),
            found: found.id(),
        })
    }
}
