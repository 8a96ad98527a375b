//! # duet-fhe
//!
//! RLWE homomorphic encryption specialised for the linear layers of two-party inference
//! (Cheetah-style coefficient encoding, no rotations, no I/O).
//!
//! The client holds a share `X_c` of `X` in `Z_{2^l}`, the server the other share `X_s` and the
//! weights `W`. The flow this crate supports:
//!
//! 1. Client: [`SecretKey::generate`], [`SecretKey::public_key`] (setup, sent once), then
//!    [`SecretKey::encrypt`] its share polynomials ([`SeededCiphertext`]: seed + `b`, half size).
//! 2. Server: [`SeededCiphertext::expand`]; weights prepared once as [`PlainWeights`] (NTT
//!    domain, cacheable); [`MacAccumulator::mul_acc`] for `sum_j ct_j * w_j`;
//!    [`MacAccumulator::finalize`] with its plaintext `X_s W - R` (its own share's product minus
//!    its output mask `R`), which re-randomizes with the public key, extracts the useful
//!    coefficients, switches to power-of-two moduli and floods: the only way to get a sendable
//!    [`OutputCiphertext`].
//! 3. Client: [`SecretKey::decrypt_output`] gives `X W - R` in the extracted slots; the server's
//!    output share is `R`.
//!
//! Dense outputs: with the packing preset ([`Preset::N8192Q200Pack`]) the client also sends
//! [`SecretKey::galois_keys`] once, and the server merges up to 64 sparse accumulators with
//! [`MacAccumulator::pack`] before `finalize`, so every returned coefficient is useful
//! ([`pack`]). [`MatmulLayout`] places matrix blocks into polynomials and
//! [`MatmulLayout::best`] picks the block shape with the fewest bytes: for `128x768 . 768x768`
//! at `l = 37` that is 3.4 MB with packing versus 11.0 MB with extraction alone
//! (see `fhe/NOTES.md`).
//!
//! Parameters come from [`RlweParameters::preset`] / [`RlweParameters::recommended`] or the
//! validated [`RlweParametersBuilder`]; the noise analysis behind them is in [`noise`].
//!
//! ```
//! use duet_fhe::*;
//! use rand_chacha::ChaCha20Rng;
//! use rand_core::SeedableRng;
//!
//! let params = RlweParameters::preset(Preset::N4096Q109, RingBits(32), WeightBound::MaxAbs(1 << 12))?;
//! let mut rng = ChaCha20Rng::seed_from_u64(1);
//! let sk = SecretKey::generate(&params, &mut rng);
//! let pk = sk.public_key(&mut rng);
//! // client: x = (3, 5) at coefficients 0, 1
//! let ct = sk.encrypt(&[3, 5], &mut rng)?;
//! let bytes = ct.to_bytes(&params)?;
//! // server: w = 7 + 2X, so coefficient 1 of x*w is 3*2 + 5*7 = 41; add plaintext 100 there
//! let ct = SeededCiphertext::from_bytes(&params, &bytes)?.expand(&params)?;
//! let w = PlainWeights::from_signed(&params, &[7, 2])?;
//! let mut acc = MacAccumulator::new(&params);
//! acc.mul_acc(&ct, &w)?;
//! let out = acc.finalize(&pk, &[0, 100], &[1], &mut rng)?;
//! // client
//! assert_eq!(sk.decrypt_output(&out, &[1])?, vec![141]);
//! # Ok::<(), FheError>(())
//! ```

pub mod arith;
mod bitpack;
mod ciphertext;
mod encoding;
mod error;
mod eval;
mod flooding;
pub mod galois;
mod keys;
mod layout;
pub mod noise;
pub mod ntt;
pub mod orbit;
mod output;
pub mod pack;
mod params;
pub mod rns;
mod sampling;
mod serialize;
mod server_key;
mod slots;
mod wide;

pub use ciphertext::{Ciphertext, SeededCiphertext};
pub use encoding::PlainWeights;
pub use error::{FheError, Result};
pub use eval::MacAccumulator;
pub use galois::GaloisKeys;
pub use keys::{PublicKey, SecretKey};
pub use layout::{LayoutCost, MatmulLayout};
pub use noise::NoiseReport;
pub use orbit::{mul_acc_node, InputOrbit, OrbitWeights};
pub use output::OutputCiphertext;
#[cfg(any(test, feature = "testing"))]
pub use params::insecure_test_parameters;
pub use params::{
    max_log_q_128, orbit_noise, MacTerms, PolyDegree, Preset, RingBits, RlweParameters,
    RlweParametersBuilder, WeightBound, DEFAULT_STAT_BITS, N4096Q109_PRIMES, N8192Q186_PRIMES,
    N8192Q200_PRIMES, N8192Q200_SPECIAL, RING_BITS_RANGE,
};
pub use sampling::{fresh_seed, Seed};
pub use serialize::{FORMAT_VERSION, HEADER_LEN};
pub use slots::{
    SlotAccumulator, SlotOutput, SlotParameters, SlotParametersBuilder, SlotPlain,
    SLOT_MAX_PRODUCTS,
};
