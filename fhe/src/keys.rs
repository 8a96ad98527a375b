//! Secret and public keys.
//!
//! * [`SecretKey`]: uniform ternary `s` (the distribution the 128-bit table assumes), kept in
//!   coefficient form and in the NTT domain; wiped on drop. Cost: `L` NTTs to generate.
//! * [`PublicKey`]: a seeded encryption of zero, `(b = -a s + e, a = expand(seed))`; the server
//!   uses it only to re-randomize its results (`+ Enc_pk(0)`) so that the `a` part it returns is
//!   pseudorandom and does not reveal `sum_j a_j w_j` (which, with the client's known `a_j`, would
//!   leak the weights). Security: RLWE. Size: 32-byte seed + `N log2 q` bits (one-time setup
//!   traffic). Cost: `L` inverse NTTs to generate.

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroize;

use crate::arith::{add_mod, small_mod, sub_mod};
use crate::error::Result;
use crate::params::RlweParameters;
use crate::rns::RnsPoly;
use crate::sampling::{cbd, expand_uniform, fresh_seed, ternary, Seed};

/// The client's secret key.
pub struct SecretKey {
    pub(crate) params: Arc<RlweParameters>,
    pub(crate) coeffs: Vec<i8>,
    pub(crate) ntt: RnsPoly,
}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecretKey")
            .field("params_id", &self.params.id())
            .finish_non_exhaustive()
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.coeffs.zeroize();
        for limb in &mut self.ntt.limbs {
            limb.zeroize();
        }
    }
}

impl SecretKey {
    /// Sample a fresh ternary key.
    pub fn generate<R: RngCore + CryptoRng>(params: &Arc<RlweParameters>, rng: &mut R) -> Self {
        let ctx = &params.ctx;
        let coeffs = ternary(rng, params.degree());
        let mut ntt = ctx.zero();
        ntt.set_small(ctx, &coeffs);
        ctx.forward(&mut ntt);
        Self {
            params: Arc::clone(params),
            coeffs,
            ntt,
        }
    }

    /// Parameters of this key.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }

    /// `(seed, b)` with `b = -a s + e + plain` (coefficient domain), `a = expand(seed)`.
    /// `plain` (coefficient domain, already scaled) may be `None` for an encryption of zero.
    pub(crate) fn seeded_encrypt<R: RngCore + CryptoRng>(
        &self,
        plain: Option<&RnsPoly>,
        rng: &mut R,
    ) -> (Seed, RnsPoly) {
        let ctx = &self.params.ctx;
        let seed = fresh_seed(rng);
        let a = expand_uniform(ctx, &seed);
        let mut as_ = ctx.zero();
        ctx.mul_acc(&mut as_, &a, &self.ntt);
        ctx.backward(&mut as_);
        let e = cbd(rng, self.params.degree());
        for (i, (limb, &p)) in as_.limbs.iter_mut().zip(ctx.moduli()).enumerate() {
            // b = e - a s (+ plain)
            for (x, &ej) in limb.iter_mut().zip(&e) {
                *x = sub_mod(small_mod(ej, p), *x, p);
            }
            if let Some(pl) = plain.and_then(|pl| pl.limbs.get(i)) {
                for (x, &m) in limb.iter_mut().zip(pl) {
                    *x = add_mod(*x, m, p);
                }
            }
        }
        (seed, as_)
    }

    /// Derive a public key (a seeded encryption of zero).
    pub fn public_key<R: RngCore + CryptoRng>(&self, rng: &mut R) -> PublicKey {
        let (seed, b) = self.seeded_encrypt(None, rng);
        PublicKey::from_parts_unchecked(Arc::clone(&self.params), seed, b)
    }
}

/// The client's public key, held by the server for re-randomization.
#[derive(Clone, Debug)]
pub struct PublicKey {
    pub(crate) params: Arc<RlweParameters>,
    pub(crate) seed: Seed,
    /// Coefficient domain (what is serialized).
    pub(crate) b: RnsPoly,
    pub(crate) b_ntt: RnsPoly,
    pub(crate) a_ntt: RnsPoly,
}

impl PublicKey {
    pub(crate) fn from_parts_unchecked(
        params: Arc<RlweParameters>,
        seed: Seed,
        b: RnsPoly,
    ) -> Self {
        let ctx = &params.ctx;
        let mut b_ntt = b.clone();
        ctx.forward(&mut b_ntt);
        let a_ntt = expand_uniform(ctx, &seed);
        Self {
            params,
            seed,
            b,
            b_ntt,
            a_ntt,
        }
    }

    /// Parameters of this key.
    pub fn params(&self) -> &Arc<RlweParameters> {
        &self.params
    }

    /// Build from validated parts (used by deserialization).
    pub(crate) fn from_parts(params: Arc<RlweParameters>, seed: Seed, b: RnsPoly) -> Result<Self> {
        Ok(Self::from_parts_unchecked(params, seed, b))
    }
}
