//! SIMD ("slot") BFV over prime plaintext moduli, for element-wise products of secret-shared
//! vectors of `Z_{2^l}`.
//!
//! The rest of this crate encodes messages in coefficients modulo `t = 2^l` (Cheetah style),
//! which makes polynomial products, not element-wise products. Here the plaintext modulus is a
//! prime `t = 1 mod 2N`: then `X^N + 1` splits into `N` linear factors modulo `t` and
//! `Z_t[X]/(X^N+1) = Z_t^N` (the negacyclic NTT modulo `t`), so a plaintext-ciphertext product
//! multiplies `N` values slot by slot.
//!
//! # What it computes
//! The application ([`SlotParameters`] docs): the client holds `x_c, y_c`, the server `x_s, y_s`
//! (vectors of `Z_{2^l}`); the server wants to hand the client `D = x_c y_s + y_c x_s + r`
//! **as an integer** (`r` its mask), so that both can reduce modulo `2^l`. The integer range
//! `D < 2^(2l+2+sigma)` exceeds any single prime below `2^62`, so the plaintext space is a
//! product of `k` primes `T = t_0 ... t_{k-1} >= 2^(2l+2+sigma)`, one ciphertext per prime
//! ("component"), all in one ring `Z_q[X]/(X^N+1)` under one secret key (the RLWE samples do not
//! depend on `t`; only the message scaling does). The client recombines the `k` residues of `D`
//! with Garner's mixed-radix CRT ([`SlotParameters::combine_mod_2_64`]).
//!
//! # Scheme (per component `t`)
//! * Slot encoding: `encode(v) = NTT_t^{-1}(v mod t)` (coefficients in `[0, t)`), decoding the
//!   forward transform. `encode(u) * encode(v) = encode(u . v)` in `Z_t[X]/(X^N+1)`.
//! * Encryption (client, [`SecretKey::encrypt_slots`]): the seeded symmetric RLWE encryption of
//!   this crate with message `round(q m / t)` (exactly as [`crate::SecretKey::encrypt`], with
//!   `t` prime). Sent as a [`SeededCiphertext`] of the ring.
//! * Evaluation (server, [`SlotAccumulator`]): `ct_x * encode(y_s) + ct_y * encode(x_s)` with the
//!   plaintext polynomials lifted to `(-t/2, t/2]`; at most 2 products per accumulator (the
//!   noise budget of the parameters).
//! * [`SlotAccumulator::finalize`]: add `round(q encode(r) / t)`, re-randomize with the public
//!   key, switch `b` to `2^kb` and `a` to `2^ka`, flood `b` with uniform `[-B_f, B_f]`: the same
//!   steps, bounds and proofs as [`crate::MacAccumulator::finalize`] ([`crate::noise`]), with all
//!   `N` coefficients of `b` sent (every slot is an output).
//! * Decryption (client, [`SecretKey::decrypt_slots`]): `phase = b + 2^(kb-ka) a s mod 2^kb`,
//!   `m = round(t phase / 2^kb) mod t` (256-bit arithmetic), slots `= NTT_t(m)`.
//!
//! # Noise (why the parameters are what they are)
//! With `w = t/2` the largest plaintext coefficient and `T = 2N` terms (two products), the
//! weight-dependent noise is `B_W = w (N + sqrt(2 eta N ln(2/delta))) + 1/2` (the bound of
//! [`crate::noise`] with `T = 2N`): about `t 2^12.6` at `N = 8192`. The analysis of
//! [`crate::noise::analyze`] is run with `plain_bits = ceil(log2 t)` (it assumes
//! `t = 2^plain_bits >= t`, which only makes every term larger) and needs
//! `log2 q >= 2 log2 t + ~55` for 40-bit flooding; e.g. `t < 2^59` needs `log2 q >= 172`.
//! Output widths: `kb ~ log2 t + 43` and `ka ~ log2 t + 12`.
//!
//! # Parameters and security
//! [`SlotParameters::new`]: `N = 8192`, `q` three equal-size NTT primes, the smallest size the
//! noise analysis accepts (`l = 37`: 3 x 58 bits, `log2 q = 174`; `l = 64`: 3 x 57 bits, `log2 q = 171`).
//! HomomorphicEncryption.org 128-bit row **(N = 8192, log2 q <= 218)**, ternary secret, error
//! standard deviation 3.24 (centered binomial 21). `k = ceil((2l+2+sigma)/61)` plaintext primes
//! of `ceil((2l+2+sigma)/k) + 1` bits each (so their product is `>= 2^(2l+2+sigma)`):
//! `l = 37`: two 59-bit primes; `l = 64`: three 58-bit primes.
//!
//! # Cost (per component and `N` elements)
//! Client: 2 encryptions (`L` NTTs each plus one NTT mod `t`), one decryption (2 NTTs per prime
//! of the first two, one NTT mod `t`). Server: 2 seed expansions + `2L` NTTs, 2 plaintext
//! encodings (`1 + L` NTTs each), 4 `N L` multiply-adds, re-randomization (`3L` NTTs), `2N`
//! roundings. Bytes: up `2 (42 + N sum_i ceil(log2 p_i) / 8)`, down
//! `11 + ceil(N (kb + ka) / 8)` ([`SlotOutput::serialized_len`]).

#![expect(
    clippy::indexing_slicing,
    reason = "limb vectors have one entry per modulus of the ring and N entries each (checked at construction); component indices are checked against the parameters by every public entry point"
)]

use std::sync::Arc;

use rand_core::{CryptoRng, RngCore};

use crate::arith::{
    add_mod, inv_mod_prime, mul_mod, mul_mod_shoup, neg_mod, ntt_primes, reduce_i128, shoup,
    small_mod,
};
use crate::bitpack::{BitReader, BitWriter};
use crate::ciphertext::{check_params, Ciphertext, SeededCiphertext};
use crate::error::{FheError, Result};
use crate::flooding::flood;
use crate::keys::{PublicKey, SecretKey};
use crate::noise::{analyze, NoiseInputs, NoiseReport};
use crate::ntt::NttTable;
use crate::params::{
    max_log_q_128, PolyDegree, RingBits, RlweParameters, RlweParametersBuilder, WeightBound,
    DEFAULT_STAT_BITS,
};
use crate::rns::{Pow2Rounder, RnsPoly};
use crate::sampling::{cbd, ternary};
use crate::serialize::{FORMAT_VERSION, HEADER_LEN};
use crate::wide::{add_assign, mul_small, U256};

/// Serialization kind byte of a [`SlotOutput`] (distinct from the kinds of `serialize.rs`).
const KIND_SLOT_OUTPUT: u8 = 0x10;
/// Largest plaintext prime size.
const MAX_T_BITS: u32 = 62;
/// Plaintext-ciphertext products one accumulator may absorb (the noise budget covers two).
pub const SLOT_MAX_PRODUCTS: usize = 2;

/// One plaintext prime `t` with its slot transform and encoding constants.
#[derive(Clone, Debug)]
struct PlainModulus {
    t: u64,
    table: NttTable,
    /// `q mod t`.
    q_mod_t: u64,
    /// `floor(q/t) mod p_i` and its Shoup companion, per prime of `q`.
    delta: Vec<(u64, u64)>,
}

/// Validated builder for [`SlotParameters`].
#[derive(Clone, Debug)]
pub struct SlotParametersBuilder {
    degree: PolyDegree,
    ring_bits: Option<RingBits>,
    stat_bits: u32,
    q_bits: Option<Vec<u32>>,
    output_bits: Option<(u32, u32)>,
    insecure: bool,
}

impl Default for SlotParametersBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl SlotParametersBuilder {
    /// `N = 8192`, 40-bit statistical security, `q` chosen by the noise analysis.
    pub fn new() -> Self {
        Self {
            degree: PolyDegree(8192),
            ring_bits: None,
            stat_bits: DEFAULT_STAT_BITS,
            q_bits: None,
            output_bits: None,
            insecure: false,
        }
    }

    /// Ring degree `N` (power of two in the 128-bit table).
    pub fn degree(mut self, n: PolyDegree) -> Self {
        self.degree = n;
        self
    }

    /// Share width `l` (16..=64).
    pub fn ring_bits(mut self, l: RingBits) -> Self {
        self.ring_bits = Some(l);
        self
    }

    /// Statistical security `sigma` of the flooding and of the protocol mask (40..=80).
    pub fn stat_security_bits(mut self, bits: u32) -> Self {
        self.stat_bits = bits;
        self
    }

    /// Explicit sizes of the primes of `q` (default: the smallest three equal sizes that the
    /// noise analysis accepts).
    pub fn q_bits(mut self, bits: &[u32]) -> Self {
        self.q_bits = Some(bits.to_vec());
        self
    }

    /// Skip the security-table check so tiny rings can be tested. INSECURE.
    #[cfg(any(test, feature = "testing"))]
    pub fn insecure_allow_small_ring_for_tests(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Force wider output widths `(b_bits, a_bits)` (still validated). Test-only: makes the
    /// plaintext-dependent noise visible in the flooding test.
    #[cfg(any(test, feature = "testing"))]
    pub fn output_bits_for_tests(mut self, b_bits: u32, a_bits: u32) -> Self {
        self.output_bits = Some((b_bits, a_bits));
        self
    }

    fn ring(&self, n: usize, q_bits: &[u32]) -> Result<Arc<RlweParameters>> {
        // The ring's own (coefficient-encoding) workload is irrelevant here; a trivial one is
        // declared so that its builder only checks the ring and the security table.
        let b = RlweParametersBuilder::new()
            .degree(PolyDegree(n))
            .moduli_bits(q_bits)
            .ring_bits(RingBits(16))
            .weight_bound(WeightBound::MaxAbs(1));
        #[cfg(any(test, feature = "testing"))]
        let b = if self.insecure {
            b.insecure_allow_small_ring_for_tests()
        } else {
            b
        };
        b.build()
    }

    fn noise(&self, n: usize, log2_q: f64, t_bits: u32) -> Result<NoiseReport> {
        analyze(&NoiseInputs {
            degree: n,
            log2_q,
            plain_bits: t_bits,
            log2_weight: f64::from(t_bits - 1),
            mac_terms: SLOT_MAX_PRODUCTS * n,
            stat_bits: self.stat_bits,
            extra_noise: 0.0,
            output_bits: self.output_bits,
        })
    }

    /// Validate everything and build.
    pub fn build(self) -> Result<Arc<SlotParameters>> {
        let n = self.degree.0;
        let l = self
            .ring_bits
            .ok_or_else(|| FheError::param("ring_bits", "unset", "the share width l is required"))?
            .0;
        if !(16..=64).contains(&l) {
            return Err(FheError::param("ring_bits", l, "l must be in 16..=64"));
        }
        let stat_ok = (40..=80).contains(&self.stat_bits) || (self.insecure && self.stat_bits >= 1);
        if !stat_ok {
            return Err(FheError::param(
                "stat_security_bits",
                self.stat_bits,
                "must be in 40..=80",
            ));
        }
        if !n.is_power_of_two() || n < 16 {
            return Err(FheError::param("degree", n, "must be a power of two >= 16"));
        }
        let table = max_log_q_128(n);
        if table.is_none() && !self.insecure {
            return Err(FheError::param(
                "degree",
                n,
                "not in the HomomorphicEncryption.org 128-bit table (1024..=32768)",
            ));
        }
        // Plaintext space: D = cross + r < 2^(2l+1) + 2^(2l+1+sigma) <= 2^(2l+2+sigma).
        let need = 2 * l + 2 + self.stat_bits;
        let k = need.div_ceil(MAX_T_BITS - 1);
        let t_bits = need.div_ceil(k) + 1;
        if k > 4 || t_bits > MAX_T_BITS {
            return Err(FheError::param(
                "ring_bits",
                l,
                format!(
                    "needs {k} plaintext primes of {t_bits} bits (at most 4 of <= {MAX_T_BITS})"
                ),
            ));
        }
        // Ciphertext modulus.
        let (ring, noise) = match &self.q_bits {
            Some(bits) => {
                let ring = self.ring(n, bits)?;
                let noise = self.noise(n, ring.log2_q(), t_bits)?;
                (ring, noise)
            }
            None => {
                let max = f64::from(table.unwrap_or(881));
                let mut found = None;
                for b in 30..=62u32 {
                    let bits = [b, b, b];
                    let est = 3.0 * f64::from(b);
                    if est > max + 1.0 && !self.insecure {
                        break;
                    }
                    if self.noise(n, est - 0.01, t_bits).is_err() {
                        continue;
                    }
                    let ring = self.ring(n, &bits)?;
                    if let Ok(noise) = self.noise(n, ring.log2_q(), t_bits) {
                        found = Some((ring, noise));
                        break;
                    }
                }
                match found {
                    Some(x) => x,
                    None => {
                        // report the analysis' reason at the largest admissible q
                        let b = (max / 3.0).floor().min(62.0) as u32;
                        self.noise(n, 3.0 * f64::from(b), t_bits)?;
                        return Err(FheError::NoiseBudget {
                            reason: format!("no q of three equal primes fits l = {l} at N = {n}"),
                        });
                    }
                }
            }
        };
        let ctx = ring.rns();
        let moduli = ctx.moduli().to_vec();
        // exact a*s for decryption: |a s| < N 2^ka, recovered from the fewest primes whose
        // product P has P >= 8 N 2^ka (so the top mixed-radix digit tells the sign)
        let need_crt = (n as f64).log2() + f64::from(noise.a_bits) + 3.0;
        let mut as_primes = 0;
        let mut log_p = 0.0;
        for &p in &moduli {
            as_primes += 1;
            log_p += (p as f64).log2();
            if log_p >= need_crt {
                break;
            }
        }
        if log_p < need_crt {
            return Err(FheError::param(
                "q_bits",
                format!("log2 q = {log_p:.1}"),
                format!("slot decryption needs >= {need_crt:.1} bits"),
            ));
        }
        let mut as_inv = Vec::with_capacity(as_primes);
        for (i, &pi) in moduli.iter().take(as_primes).enumerate() {
            let prod = moduli
                .iter()
                .take(i)
                .fold(1u64, |acc, &pj| mul_mod(acc, pj % pi, pi));
            as_inv.push(
                inv_mod_prime(prod, pi)
                    .ok_or_else(|| FheError::param("q_bits", pi, "primes must be distinct"))?,
            );
        }
        // Plaintext primes, distinct from q's.
        let ts: Vec<u64> = ntt_primes(t_bits, n, k as usize + moduli.len())?
            .into_iter()
            .filter(|p| !moduli.contains(p))
            .take(k as usize)
            .collect();
        if ts.len() != k as usize {
            return Err(FheError::param("t", t_bits, "not enough plaintext primes"));
        }
        let mut plains = Vec::with_capacity(ts.len());
        for &t in &ts {
            let q_mod_t = moduli.iter().fold(1u64, |acc, &p| mul_mod(acc, p % t, t));
            let mut delta = Vec::with_capacity(moduli.len());
            for &p in &moduli {
                let t_inv = inv_mod_prime(t % p, p)
                    .ok_or_else(|| FheError::param("t", t, "must not be a prime of q"))?;
                let d = mul_mod(neg_mod(q_mod_t % p, p), t_inv, p);
                delta.push((d, shoup(d, p)));
            }
            plains.push(PlainModulus {
                t,
                table: NttTable::new(n, t)?,
                q_mod_t,
                delta,
            });
        }
        // Garner: inverse of t_0 ... t_{i-1} modulo t_i.
        let mut garner_inv = Vec::with_capacity(ts.len());
        for (i, &ti) in ts.iter().enumerate() {
            let prod = ts
                .iter()
                .take(i)
                .fold(1u64, |acc, &tj| mul_mod(acc, tj % ti, ti));
            garner_inv
                .push(inv_mod_prime(prod, ti).ok_or_else(|| {
                    FheError::param("t", ti, "plaintext primes must be distinct")
                })?);
        }
        let rounder_b = ctx.pow2_rounder(noise.b_bits)?;
        let rounder_a = ctx.pow2_rounder(noise.a_bits)?;
        let id = slot_id(ring.id(), l, self.stat_bits, &ts, &noise);
        Ok(Arc::new(SlotParameters {
            ring,
            ring_bits: l,
            stat_bits: self.stat_bits,
            t_bits,
            plains,
            garner_inv,
            as_primes,
            as_inv,
            noise,
            rounder_b,
            rounder_a,
            id,
            insecure: self.insecure,
        }))
    }
}

fn slot_id(ring: u64, l: u32, stat: u32, ts: &[u64], noise: &NoiseReport) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(b"duet-slots-v1");
    eat(&ring.to_le_bytes());
    eat(&l.to_le_bytes());
    eat(&stat.to_le_bytes());
    for t in ts {
        eat(&t.to_le_bytes());
    }
    eat(&noise.b_bits.to_le_bytes());
    eat(&noise.a_bits.to_le_bytes());
    eat(&noise.flood_bound.to_le_bytes());
    h
}

/// Validated parameters for slot-encoded BFV with `k` prime plaintext moduli (see the module
/// documentation for the scheme, the noise analysis and the security row).
#[derive(Debug)]
pub struct SlotParameters {
    ring: Arc<RlweParameters>,
    ring_bits: u32,
    stat_bits: u32,
    t_bits: u32,
    plains: Vec<PlainModulus>,
    garner_inv: Vec<u64>,
    /// Primes of `q` used for the exact `a s` at decryption, and their Garner inverses.
    as_primes: usize,
    as_inv: Vec<u64>,
    noise: NoiseReport,
    rounder_b: Pow2Rounder,
    rounder_a: Pow2Rounder,
    id: u64,
    insecure: bool,
}

impl SlotParameters {
    /// The 128-bit parameters for shares of width `l` (`N = 8192`, 40-bit statistical security).
    pub fn new(l: RingBits) -> Result<Arc<Self>> {
        SlotParametersBuilder::new().ring_bits(l).build()
    }

    /// The ciphertext ring (keys, seeded ciphertexts and their serialization live there).
    pub fn ring(&self) -> &Arc<RlweParameters> {
        &self.ring
    }
    /// Ring degree `N` = slots per ciphertext.
    pub fn degree(&self) -> usize {
        self.ring.degree()
    }
    /// Share width `l`.
    pub fn ring_bits(&self) -> u32 {
        self.ring_bits
    }
    /// Statistical security `sigma`.
    pub fn stat_security_bits(&self) -> u32 {
        self.stat_bits
    }
    /// Size bound of each plaintext prime (`t_i < 2^t_bits`).
    pub fn t_bits(&self) -> u32 {
        self.t_bits
    }
    /// Number of plaintext primes `k` (ciphertexts per encrypted vector).
    pub fn components(&self) -> usize {
        self.plains.len()
    }
    /// The plaintext primes.
    pub fn plain_moduli(&self) -> Vec<u64> {
        self.plains.iter().map(|p| p.t).collect()
    }
    /// `log2` of the plaintext space `T = prod t_i`.
    pub fn log2_plain_space(&self) -> f64 {
        self.plains.iter().map(|p| (p.t as f64).log2()).sum()
    }
    /// The noise analysis (output widths, flooding bound).
    pub fn noise(&self) -> &NoiseReport {
        &self.noise
    }
    /// Width of sent `b` coefficients.
    pub fn output_b_bits(&self) -> u32 {
        self.noise.b_bits
    }
    /// Width of sent `a` coefficients.
    pub fn output_a_bits(&self) -> u32 {
        self.noise.a_bits
    }
    /// Identifier written into serialized [`SlotOutput`]s.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Whether the security checks were skipped (test-only builds).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }

    fn plain(&self, comp: usize) -> Result<&PlainModulus> {
        self.plains
            .get(comp)
            .ok_or_else(|| FheError::range("component", comp, format!("< {}", self.plains.len())))
    }

    /// Slot vector -> coefficients modulo `t` (values reduced mod `t`, zero padded to `N`).
    fn slots_to_coeffs(&self, pm: &PlainModulus, values: &[u64]) -> Result<Vec<u64>> {
        let n = self.degree();
        if values.len() > n {
            return Err(FheError::range(
                "number of slot values",
                values.len(),
                format!("<= N = {n}"),
            ));
        }
        let mut buf = vec![0u64; n];
        for (d, &v) in buf.iter_mut().zip(values) {
            *d = v % pm.t;
        }
        pm.table.backward(&mut buf);
        Ok(buf)
    }

    /// `round(q m / t)` in RNS for coefficients `m < t`.
    fn encode_scaled(&self, pm: &PlainModulus, coeffs: &[u64]) -> RnsPoly {
        let ctx = self.ring.rns();
        let mut poly = ctx.zero();
        let r = u128::from(pm.q_mod_t);
        let t = u128::from(pm.t);
        for ((limb, &p), &(d, d_shoup)) in poly.limbs.iter_mut().zip(ctx.moduli()).zip(&pm.delta) {
            for (dst, &m) in limb.iter_mut().zip(coeffs) {
                // r, m < t < 2^62: r m + t/2 < 2^125
                let corr = ((r * u128::from(m) + t / 2) / t) as u64;
                let corr = if corr >= p { corr % p } else { corr };
                *dst = add_mod(mul_mod_shoup(m, d, d_shoup, p), corr, p);
            }
        }
        poly
    }

    /// Residues modulo each `t_i` of the integer with little-endian 64-bit limbs `limbs`.
    pub fn residues_of(&self, limbs: &[u64]) -> Vec<u64> {
        self.plains
            .iter()
            .map(|pm| {
                let t = u128::from(pm.t);
                limbs
                    .iter()
                    .rev()
                    .fold(0u128, |acc, &x| ((acc << 64) | u128::from(x)) % t) as u64
            })
            .collect()
    }

    /// Garner CRT: from the residues `residues[i][j] = D_j mod t_i` (one vector per component,
    /// equal lengths) recover `D_j mod 2^64` for the unique `D_j in [0, prod t_i)`.
    /// Cost: `O(k^2)` modular multiplications per element.
    #[expect(
        clippy::needless_range_loop,
        reason = "j indexes the k residue vectors at once"
    )]
    pub fn combine_mod_2_64(&self, residues: &[Vec<u64>]) -> Result<Vec<u64>> {
        let k = self.plains.len();
        if residues.len() != k {
            return Err(FheError::range(
                "number of components",
                residues.len(),
                format!("{k}"),
            ));
        }
        let len = residues.first().map_or(0, Vec::len);
        if residues.iter().any(|r| r.len() != len) {
            return Err(FheError::malformed(
                "slot residues",
                "components of different lengths",
            ));
        }
        let ts: Vec<u64> = self.plains.iter().map(|p| p.t).collect();
        for (r, &t) in residues.iter().zip(&ts) {
            if let Some(bad) = r.iter().find(|&&v| v >= t) {
                return Err(FheError::range("slot residue", bad, format!("< {t}")));
            }
        }
        let mut out = Vec::with_capacity(len);
        let mut digits = vec![0u64; k];
        for j in 0..len {
            for i in 0..k {
                let ti = ts[i];
                // value of the digits so far modulo t_i
                let mut acc = 0u64;
                let mut radix = 1u64;
                for (m, &dm) in digits.iter().enumerate().take(i) {
                    acc = add_mod(acc, mul_mod(dm % ti, radix, ti), ti);
                    radix = mul_mod(radix, ts[m] % ti, ti);
                }
                let d = crate::arith::sub_mod(residues[i][j], acc, ti);
                digits[i] = mul_mod(d, self.garner_inv[i], ti);
            }
            let mut v = 0u64;
            let mut radix = 1u64;
            for (m, &dm) in digits.iter().enumerate() {
                v = v.wrapping_add(dm.wrapping_mul(radix));
                radix = radix.wrapping_mul(ts[m]);
            }
            out.push(v);
        }
        Ok(out)
    }
}

impl SecretKey {
    /// Encrypt up to `N` slot values (taken modulo `t_comp`) for component `comp`. The key must
    /// belong to `params.ring()`.
    pub fn encrypt_slots<R: RngCore + CryptoRng>(
        &self,
        params: &SlotParameters,
        comp: usize,
        values: &[u64],
        rng: &mut R,
    ) -> Result<SeededCiphertext> {
        check_params(params.ring(), &self.params)?;
        let pm = params.plain(comp)?;
        let coeffs = params.slots_to_coeffs(pm, values)?;
        let plain = params.encode_scaled(pm, &coeffs);
        let (seed, b) = self.seeded_encrypt(Some(&plain), rng);
        Ok(SeededCiphertext {
            params_id: self.params.id(),
            seed,
            b,
        })
    }

    /// Decrypt a [`SlotOutput`]: its `N` slot values modulo `t_comp`.
    pub fn decrypt_slots(&self, params: &SlotParameters, out: &SlotOutput) -> Result<Vec<u64>> {
        let pm = params.plain(out.comp)?;
        let mut m: Vec<u64> = self
            .slot_coeffs(params, out)?
            .into_iter()
            .map(|c| c.0)
            .collect();
        pm.table.forward(&mut m);
        Ok(m)
    }

    /// `m_j = round(t phase_j / 2^kb) mod t` (the decrypted coefficients) and the exact
    /// rounding remainders `t phase_j - 2^kb round(t phase_j / 2^kb)`.
    fn slot_coeffs(&self, params: &SlotParameters, out: &SlotOutput) -> Result<Vec<(u64, i128)>> {
        let pm = params.plain(out.comp)?;
        let kb = params.output_b_bits();
        let phases = self.slot_phases(params, out)?;
        Ok(phases
            .into_iter()
            .map(|ph| round_scaled(ph, pm.t, kb))
            .collect())
    }

    /// `b_j + 2^(kb - ka) (a s)_j mod 2^kb` for all `N` coefficients.
    fn slot_phases(&self, params: &SlotParameters, out: &SlotOutput) -> Result<Vec<u128>> {
        check_params(params.ring(), &self.params)?;
        if out.params_id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: out.params_id,
            });
        }
        let n = params.degree();
        if out.b.len() != n || out.a.len() != n {
            return Err(FheError::malformed(
                "slot output",
                format!("{} b / {} a values, N = {n}", out.b.len(), out.a.len()),
            ));
        }
        let kb = params.output_b_bits();
        let ka = params.output_a_bits();
        let ctx = params.ring().rns();
        let used = params.as_primes;
        let moduli = ctx.moduli();
        // exact a*s over the first `used` primes, mixed-radix digits, centered by the top digit
        let mut prods: Vec<Vec<u64>> = Vec::with_capacity(used);
        for (i, t) in ctx.tables().iter().take(used).enumerate() {
            let pp = u128::from(t.modulus());
            let mut buf: Vec<u64> = out.a.iter().map(|&x| (x % pp) as u64).collect();
            t.forward(&mut buf);
            let mut acc = vec![0u64; n];
            t.mul_acc(&mut acc, &buf, &self.ntt.limbs[i]);
            t.backward(&mut acc);
            prods.push(acc);
        }
        let big = moduli
            .iter()
            .take(used)
            .fold(1u128, |acc, &p| acc.wrapping_mul(u128::from(p)));
        let top = moduli[used - 1];
        let ka_mask = (1u128 << ka) - 1;
        let kb_mask = if kb >= 128 {
            u128::MAX
        } else {
            (1u128 << kb) - 1
        };
        let mut digits = vec![0u64; used];
        Ok((0..n)
            .zip(&out.b)
            .map(|(j, &bj)| {
                for i in 0..used {
                    let pi = moduli[i];
                    let mut acc = 0u64;
                    let mut radix = 1u64;
                    for (m, &dm) in digits.iter().enumerate().take(i) {
                        acc = add_mod(acc, mul_mod(dm % pi, radix, pi), pi);
                        radix = mul_mod(radix, moduli[m] % pi, pi);
                    }
                    let d = crate::arith::sub_mod(prods[i][j], acc, pi);
                    digits[i] = mul_mod(d, params.as_inv[i], pi);
                }
                let mut x = 0u128;
                let mut radix = 1u128;
                for (m, &dm) in digits.iter().enumerate() {
                    x = x.wrapping_add(u128::from(dm).wrapping_mul(radix));
                    radix = radix.wrapping_mul(u128::from(moduli[m]));
                }
                if digits[used - 1] > top / 2 {
                    x = x.wrapping_sub(big);
                }
                bj.wrapping_add((x & ka_mask) << (kb - ka)) & kb_mask
            })
            .collect())
    }

    /// Test-only: the exact decryption errors `t phase_j - 2^kb m_j` (centered), i.e. `t`
    /// times the noise of the phase.
    #[cfg(test)]
    pub(crate) fn slot_errors_for_tests(
        &self,
        params: &SlotParameters,
        out: &SlotOutput,
    ) -> Result<Vec<f64>> {
        Ok(self
            .slot_coeffs(params, out)?
            .into_iter()
            .map(|(_, e)| e as f64)
            .collect())
    }
}

/// For `x = t ph + 2^(kb-1)` (256-bit): `(floor(x / 2^kb) mod t, (x mod 2^kb) - 2^(kb-1))`, i.e.
/// the rounded message and the exact remainder `t ph - 2^kb round(t ph / 2^kb)`.
fn round_scaled(ph: u128, t: u64, kb: u32) -> (u64, i128) {
    let mut x = mul_small(&[ph as u64, (ph >> 64) as u64, 0, 0], t);
    let mut half: U256 = [0; 4];
    if let Some(h) = half.get_mut(((kb - 1) / 64) as usize) {
        *h = 1u64 << ((kb - 1) % 64);
    }
    add_assign(&mut x, &half);
    let low = (u128::from(x[0]) | (u128::from(x[1]) << 64)) & ((1u128 << kb) - 1);
    let rem = low as i128 - (1i128 << (kb - 1));
    (shr_mod(&x, kb, t), rem)
}

/// `floor(x / 2^k) mod t` for a 256-bit `x`, `1 <= k <= 127`.
fn shr_mod(x: &U256, k: u32, t: u64) -> u64 {
    let limb = (k / 64) as usize;
    let sh = k % 64;
    let mut words = [0u64; 4];
    for (i, w) in words.iter_mut().enumerate() {
        let lo = x.get(i + limb).copied().unwrap_or(0);
        let hi = x.get(i + limb + 1).copied().unwrap_or(0);
        *w = if sh == 0 {
            lo
        } else {
            (lo >> sh) | (hi << (64 - sh))
        };
    }
    let tt = u128::from(t);
    words
        .iter()
        .rev()
        .fold(0u128, |acc, &w| ((acc << 64) | u128::from(w)) % tt) as u64
}

/// A server plaintext in the ring's NTT domain: the slot encoding of a vector modulo `t_comp`,
/// lifted to `(-t/2, t/2]`. Cost: one NTT mod `t` and `L` NTTs.
#[derive(Clone, Debug)]
pub struct SlotPlain {
    params_id: u64,
    comp: usize,
    ntt: RnsPoly,
}

impl SlotPlain {
    /// Encode up to `N` values (taken modulo `t_comp`, zero padded).
    pub fn encode(params: &SlotParameters, comp: usize, values: &[u64]) -> Result<Self> {
        let pm = params.plain(comp)?;
        let coeffs = params.slots_to_coeffs(pm, values)?;
        let ctx = params.ring().rns();
        let half = pm.t / 2;
        let mut ntt = ctx.zero();
        for (limb, &p) in ntt.limbs.iter_mut().zip(ctx.moduli()) {
            for (dst, &c) in limb.iter_mut().zip(&coeffs) {
                let v = if c > half {
                    i128::from(c) - i128::from(pm.t)
                } else {
                    i128::from(c)
                };
                *dst = reduce_i128(v, p);
            }
        }
        ctx.forward(&mut ntt);
        Ok(Self {
            params_id: params.id(),
            comp,
            ntt,
        })
    }
}

/// Server-side accumulator of `sum ct_j * plain_j` for one component (at most
/// [`SLOT_MAX_PRODUCTS`] products), finalized into a sendable [`SlotOutput`].
#[derive(Clone, Debug)]
pub struct SlotAccumulator {
    params: Arc<SlotParameters>,
    comp: usize,
    b: RnsPoly,
    a: RnsPoly,
    products: usize,
}

impl SlotAccumulator {
    /// An empty accumulator for component `comp`.
    pub fn new(params: &Arc<SlotParameters>, comp: usize) -> Result<Self> {
        params.plain(comp)?;
        let ctx = params.ring().rns();
        Ok(Self {
            params: Arc::clone(params),
            comp,
            b: ctx.zero(),
            a: ctx.zero(),
            products: 0,
        })
    }

    /// `self += ct * plain` (slot-wise product). `ct` must be an expanded ciphertext of the ring
    /// encrypted for the same component.
    pub fn mul_acc(&mut self, ct: &Ciphertext, plain: &SlotPlain) -> Result<()> {
        check_params(self.params.ring(), &ct.params)?;
        if plain.params_id != self.params.id() || plain.comp != self.comp {
            return Err(FheError::ParameterMismatch {
                expected: self.params.id(),
                found: plain.params_id,
            });
        }
        if self.products >= SLOT_MAX_PRODUCTS {
            return Err(FheError::NoiseBudget {
                reason: format!("a slot accumulator holds at most {SLOT_MAX_PRODUCTS} products"),
            });
        }
        let ctx = self.params.ring().rns();
        ctx.mul_acc(&mut self.b, &ct.b, &plain.ntt);
        ctx.mul_acc(&mut self.a, &ct.a, &plain.ntt);
        self.products += 1;
        Ok(())
    }

    /// Add the slot values `mask` (residues `< t_comp`, at most `N`, zero padded), re-randomize
    /// with `pk`, switch modulus and flood every coefficient of `b`.
    pub fn finalize<R: RngCore + CryptoRng>(
        self,
        pk: &PublicKey,
        mask: &[u64],
        rng: &mut R,
    ) -> Result<SlotOutput> {
        self.finalize_inner(pk, mask, rng, true)
    }

    /// Test-only: the same without flooding, to show the flooding test has power.
    #[cfg(test)]
    pub(crate) fn finalize_unflooded_for_tests<R: RngCore + CryptoRng>(
        self,
        pk: &PublicKey,
        mask: &[u64],
        rng: &mut R,
    ) -> Result<SlotOutput> {
        self.finalize_inner(pk, mask, rng, false)
    }

    fn finalize_inner<R: RngCore + CryptoRng>(
        mut self,
        pk: &PublicKey,
        mask: &[u64],
        rng: &mut R,
        do_flood: bool,
    ) -> Result<SlotOutput> {
        let params = Arc::clone(&self.params);
        check_params(params.ring(), &pk.params)?;
        let pm = params.plain(self.comp)?;
        if let Some(bad) = mask.iter().find(|&&v| v >= pm.t) {
            return Err(FheError::range("mask residue", bad, format!("< {}", pm.t)));
        }
        let coeffs = params.slots_to_coeffs(pm, mask)?;
        let encoded = params.encode_scaled(pm, &coeffs);
        let ctx = params.ring().rns();
        let n = params.degree();
        let u = ternary(rng, n);
        let mut u_ntt = ctx.zero();
        u_ntt.set_small(ctx, &u);
        ctx.forward(&mut u_ntt);
        ctx.mul_acc(&mut self.b, &u_ntt, &pk.b_ntt);
        ctx.mul_acc(&mut self.a, &u_ntt, &pk.a_ntt);
        ctx.backward(&mut self.b);
        ctx.backward(&mut self.a);
        let e1 = cbd(rng, n);
        let e2 = cbd(rng, n);
        for (((bl, al), el), &p) in self
            .b
            .limbs
            .iter_mut()
            .zip(self.a.limbs.iter_mut())
            .zip(&encoded.limbs)
            .zip(ctx.moduli())
        {
            for ((x, &m), &e) in bl.iter_mut().zip(el).zip(&e1) {
                *x = add_mod(add_mod(*x, m, p), small_mod(e, p), p);
            }
            for (x, &e) in al.iter_mut().zip(&e2) {
                *x = add_mod(*x, small_mod(e, p), p);
            }
        }
        let mut b: Vec<u128> = (0..n)
            .map(|j| params.rounder_b.round_coeff(&self.b, j))
            .collect();
        let a: Vec<u128> = (0..n)
            .map(|j| params.rounder_a.round_coeff(&self.a, j))
            .collect();
        if do_flood {
            flood(
                &mut b,
                params.output_b_bits(),
                params.noise.flood_bound,
                rng,
            );
        }
        Ok(SlotOutput {
            params_id: params.id(),
            comp: self.comp,
            b,
            a,
        })
    }
}

/// The server's result for one component: all `N` coefficients of `b` (width `kb`) and of `a`
/// (width `ka`), modulus-switched and flooded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotOutput {
    params_id: u64,
    comp: usize,
    b: Vec<u128>,
    a: Vec<u128>,
}

impl SlotOutput {
    /// The component (plaintext prime index).
    pub fn component(&self) -> usize {
        self.comp
    }

    /// Serialized size: 10-byte header, component byte, `N (kb + ka)` bits.
    pub fn serialized_len(params: &SlotParameters) -> usize {
        HEADER_LEN
            + 1
            + (params.degree() * (params.output_b_bits() + params.output_a_bits()) as usize)
                .div_ceil(8)
    }

    /// Serialize.
    pub fn to_bytes(&self, params: &SlotParameters) -> Result<Vec<u8>> {
        if self.params_id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: self.params_id,
            });
        }
        let comp = u8::try_from(self.comp)
            .map_err(|_| FheError::range("component", self.comp, "< 256"))?;
        let mut out = Vec::with_capacity(Self::serialized_len(params));
        out.push(FORMAT_VERSION);
        out.push(KIND_SLOT_OUTPUT);
        out.extend_from_slice(&params.id().to_le_bytes());
        out.push(comp);
        let mut w = BitWriter::new(out);
        for &v in &self.b {
            w.put(v, params.output_b_bits());
        }
        for &v in &self.a {
            w.put(v, params.output_a_bits());
        }
        Ok(w.finish())
    }

    /// Parse and validate, expecting component `comp`.
    pub fn from_bytes(params: &SlotParameters, bytes: &[u8], comp: usize) -> Result<Self> {
        const WHAT: &str = "slot output";
        let expected = Self::serialized_len(params);
        if bytes.len() != expected {
            return Err(FheError::malformed(
                WHAT,
                format!("length {} bytes, expected {expected}", bytes.len()),
            ));
        }
        let (head, rest) = bytes
            .split_at_checked(HEADER_LEN + 1)
            .ok_or_else(|| FheError::malformed(WHAT, "truncated header"))?;
        let (ver, kind, id, c) = match head {
            [ver, kind, id @ .., c] => (*ver, *kind, id, *c),
            _ => return Err(FheError::malformed(WHAT, "truncated header")),
        };
        if ver != FORMAT_VERSION {
            return Err(FheError::UnsupportedVersion {
                found: ver,
                supported: FORMAT_VERSION,
            });
        }
        if kind != KIND_SLOT_OUTPUT {
            return Err(FheError::malformed(
                WHAT,
                format!("object kind {kind}, expected {KIND_SLOT_OUTPUT}"),
            ));
        }
        let id = u64::from_le_bytes(
            id.try_into()
                .map_err(|_| FheError::malformed(WHAT, "bad header"))?,
        );
        if id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: id,
            });
        }
        if usize::from(c) != comp {
            return Err(FheError::malformed(
                WHAT,
                format!("component {c}, expected {comp}"),
            ));
        }
        params.plain(comp)?;
        let n = params.degree();
        let mut r = BitReader::new(rest, WHAT);
        let b = (0..n)
            .map(|_| r.get(params.output_b_bits()))
            .collect::<Result<Vec<_>>>()?;
        let a = (0..n)
            .map(|_| r.get(params.output_a_bits()))
            .collect::<Result<Vec<_>>>()?;
        r.finish()?;
        Ok(Self {
            params_id: params.id(),
            comp,
            b,
            a,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// One run of the element-wise protocol flow for `count` elements; returns the client's
    /// recombined `D mod 2^64` and the expected `x_c y_s + y_c x_s + r` (mod 2^64).
    fn cross_product(
        params: &Arc<SlotParameters>,
        xc: &[u64],
        yc: &[u64],
        xs: &[u64],
        ys: &[u64],
        seed: u64,
    ) -> (Vec<u64>, Vec<u64>) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ring = params.ring();
        let sk = SecretKey::generate(ring, &mut rng);
        let pk = sk.public_key(&mut rng);
        let l = params.ring_bits();
        let mask_bits = 2 * l + 1 + params.stat_security_bits();
        // r < 2^mask_bits as three limbs
        let rs: Vec<[u64; 3]> = (0..xc.len())
            .map(|_| {
                let mut r = [rng.gen::<u64>(), rng.gen::<u64>(), rng.gen::<u64>()];
                for (i, limb) in r.iter_mut().enumerate() {
                    let lo = 64 * i as u32;
                    if mask_bits <= lo {
                        *limb = 0;
                    } else if mask_bits - lo < 64 {
                        *limb &= (1u64 << (mask_bits - lo)) - 1;
                    }
                }
                r
            })
            .collect();
        let mut residues = Vec::new();
        for comp in 0..params.components() {
            let cx = sk.encrypt_slots(params, comp, xc, &mut rng).unwrap();
            let cy = sk.encrypt_slots(params, comp, yc, &mut rng).unwrap();
            // through the wire format
            let cx = SeededCiphertext::from_bytes(ring, &cx.to_bytes(ring).unwrap())
                .unwrap()
                .expand(ring)
                .unwrap();
            let cy = SeededCiphertext::from_bytes(ring, &cy.to_bytes(ring).unwrap())
                .unwrap()
                .expand(ring)
                .unwrap();
            let mut acc = SlotAccumulator::new(params, comp).unwrap();
            acc.mul_acc(&cx, &SlotPlain::encode(params, comp, ys).unwrap())
                .unwrap();
            acc.mul_acc(&cy, &SlotPlain::encode(params, comp, xs).unwrap())
                .unwrap();
            let mask: Vec<u64> = rs.iter().map(|r| params.residues_of(r)[comp]).collect();
            let out = acc.finalize(&pk, &mask, &mut rng).unwrap();
            let bytes = out.to_bytes(params).unwrap();
            assert_eq!(bytes.len(), SlotOutput::serialized_len(params));
            let out = SlotOutput::from_bytes(params, &bytes, comp).unwrap();
            let mut slots = sk.decrypt_slots(params, &out).unwrap();
            slots.truncate(xc.len());
            residues.push(slots);
        }
        let got = params.combine_mod_2_64(&residues).unwrap();
        let want = (0..xc.len())
            .map(|i| {
                xc[i]
                    .wrapping_mul(ys[i])
                    .wrapping_add(yc[i].wrapping_mul(xs[i]))
                    .wrapping_add(rs[i][0])
            })
            .collect();
        (got, want)
    }

    fn inputs(l: u32, n: usize, rng: &mut ChaCha20Rng) -> Vec<Vec<u64>> {
        let mask = if l == 64 { u64::MAX } else { (1u64 << l) - 1 };
        let extremes = [0, 1, mask, mask >> 1, (mask >> 1) + 1, mask - 1];
        (0..4)
            .map(|k| {
                (0..n)
                    .map(|i| {
                        if i < 36 {
                            extremes[(i / 6 + k * i) % 6]
                        } else {
                            rng.gen::<u64>() & mask
                        }
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn exact_integer_cross_terms_small_ring() {
        for l in [16u32, 37, 64] {
            let params = SlotParametersBuilder::new()
                .degree(PolyDegree(256))
                .ring_bits(RingBits(l))
                .insecure_allow_small_ring_for_tests()
                .build()
                .unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(u64::from(l));
            let v = inputs(l, 256, &mut rng);
            let (got, want) = cross_product(&params, &v[0], &v[1], &v[2], &v[3], 5);
            assert_eq!(got, want, "l = {l}");
            // fewer values than slots
            let (got, want) =
                cross_product(&params, &v[0][..7], &v[1][..7], &v[2][..7], &v[3][..7], 6);
            assert_eq!(got, want, "l = {l}");
        }
    }

    #[test]
    fn exact_with_128_bit_parameters() {
        let params = SlotParameters::new(RingBits(37)).unwrap();
        assert!(!params.is_insecure());
        assert_eq!(params.degree(), 8192);
        assert!(params.ring().log2_q() <= 218.0);
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let v = inputs(37, 8192, &mut rng);
        let (got, want) = cross_product(&params, &v[0], &v[1], &v[2], &v[3], 10);
        assert_eq!(got, want);
    }

    /// `cargo test -p duet-fhe --release slot_parameter_table -- --nocapture` prints the table
    /// quoted in protocols/NOTES.md.
    #[test]
    fn slot_parameter_table() {
        for l in [16u32, 32, 37, 41, 48, 64] {
            let p = SlotParameters::new(RingBits(l)).unwrap();
            let up = 2 * p.components() * SeededCiphertext::serialized_len(p.ring());
            let down = p.components() * SlotOutput::serialized_len(&p);
            println!(
                "l={l:2} k={} t_bits={} log2 T={:.1} q={:?} log2 q={:.1} kb={} ka={} margin={:.2} bytes/elem up {:.1} down {:.1} total {:.1}",
                p.components(),
                p.t_bits(),
                p.log2_plain_space(),
                p.ring()
                    .moduli()
                    .iter()
                    .map(|&x| 64 - x.leading_zeros())
                    .collect::<Vec<_>>(),
                p.ring().log2_q(),
                p.output_b_bits(),
                p.output_a_bits(),
                p.noise().margin_bits,
                up as f64 / 8192.0,
                down as f64 / 8192.0,
                (up + down) as f64 / 8192.0
            );
            assert!(p.log2_plain_space() >= f64::from(2 * l + 42));
            assert!(p.ring().log2_q() <= f64::from(max_log_q_128(8192).unwrap()));
            assert!(p.noise().margin_bits > 0.0);
        }
        // refusals
        assert!(SlotParametersBuilder::new().build().is_err());
        assert!(SlotParametersBuilder::new()
            .ring_bits(RingBits(37))
            .stat_security_bits(20)
            .build()
            .is_err());
        assert!(SlotParametersBuilder::new()
            .ring_bits(RingBits(37))
            .degree(PolyDegree(256))
            .build()
            .is_err());
        let e = SlotParametersBuilder::new()
            .ring_bits(RingBits(37))
            .q_bits(&[50, 50, 50])
            .build()
            .unwrap_err();
        assert!(matches!(e, FheError::NoiseBudget { .. }), "{e}");
        // N = 4096 (log2 q <= 109) cannot hold the products of 59-bit primes
        assert!(SlotParametersBuilder::new()
            .ring_bits(RingBits(37))
            .degree(PolyDegree(4096))
            .build()
            .is_err());
    }

    #[test]
    fn garner_matches_u128() {
        let params = SlotParametersBuilder::new()
            .degree(PolyDegree(256))
            .ring_bits(RingBits(37))
            .insecure_allow_small_ring_for_tests()
            .build()
            .unwrap();
        let ts = params.plain_moduli();
        assert_eq!(ts.len(), 2);
        let big = u128::from(ts[0]) * u128::from(ts[1]);
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let xs: Vec<u128> = [0, 1, big - 1, big / 2]
            .into_iter()
            .chain((0..200).map(|_| rng.gen_range(0..big)))
            .collect();
        let res: Vec<Vec<u64>> = ts
            .iter()
            .map(|&t| xs.iter().map(|&x| (x % u128::from(t)) as u64).collect())
            .collect();
        let got = params.combine_mod_2_64(&res).unwrap();
        for (g, x) in got.iter().zip(&xs) {
            assert_eq!(*g, *x as u64);
        }
        for x in xs.iter().take(20) {
            let limbs = [*x as u64, (*x >> 64) as u64];
            let r = params.residues_of(&limbs);
            assert_eq!(r[0], (x % u128::from(ts[0])) as u64);
            assert_eq!(r[1], (x % u128::from(ts[1])) as u64);
        }
        // out-of-range residues and wrong shapes are refused
        assert!(params.combine_mod_2_64(&res[..1]).is_err());
        let mut bad = res.clone();
        bad[1][0] = ts[1];
        assert!(params.combine_mod_2_64(&bad).is_err());
    }

    #[test]
    fn malformed_outputs_are_rejected() {
        let params = SlotParametersBuilder::new()
            .degree(PolyDegree(256))
            .ring_bits(RingBits(37))
            .insecure_allow_small_ring_for_tests()
            .build()
            .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let sk = SecretKey::generate(params.ring(), &mut rng);
        let pk = sk.public_key(&mut rng);
        let ct = sk
            .encrypt_slots(&params, 1, &[1, 2, 3], &mut rng)
            .unwrap()
            .expand(params.ring())
            .unwrap();
        let mut acc = SlotAccumulator::new(&params, 1).unwrap();
        let plain = SlotPlain::encode(&params, 1, &[4, 5, 6]).unwrap();
        acc.mul_acc(&ct, &plain).unwrap();
        // the budget is two products
        let mut over = acc.clone();
        over.mul_acc(&ct, &plain).unwrap();
        assert!(matches!(
            over.mul_acc(&ct, &plain),
            Err(FheError::NoiseBudget { .. })
        ));
        // a plaintext of another component is refused
        let other = SlotPlain::encode(&params, 0, &[4, 5, 6]).unwrap();
        assert!(acc.clone().mul_acc(&ct, &other).is_err());
        let out = acc.finalize(&pk, &[], &mut rng).unwrap();
        let slots = sk.decrypt_slots(&params, &out).unwrap();
        assert_eq!(&slots[..4], &[4, 10, 18, 0]);
        let good = out.to_bytes(&params).unwrap();
        assert!(SlotOutput::from_bytes(&params, &good, 1).is_ok());
        // wrong component expected
        assert!(SlotOutput::from_bytes(&params, &good, 0).is_err());
        // truncated, extended
        assert!(SlotOutput::from_bytes(&params, &good[..good.len() - 1], 1).is_err());
        let mut long = good.clone();
        long.push(0);
        assert!(SlotOutput::from_bytes(&params, &long, 1).is_err());
        assert!(SlotOutput::from_bytes(&params, &[], 1).is_err());
        // version, kind, id
        for (pos, what) in [(0usize, "version"), (1, "kind"), (2, "id")] {
            let mut b = good.clone();
            b[pos] ^= 0x55;
            assert!(SlotOutput::from_bytes(&params, &b, 1).is_err(), "{what}");
        }
        // non-zero padding bits (N (kb + ka) is a multiple of 8 only by luck: check either way)
        let total_bits = 256 * (params.output_b_bits() + params.output_a_bits()) as usize;
        if total_bits % 8 != 0 {
            let mut b = good.clone();
            *b.last_mut().unwrap() |= 0x80;
            assert!(SlotOutput::from_bytes(&params, &b, 1).is_err());
        }
        // garbage of the right length with a valid header decodes (any bits are a valid
        // ciphertext) but never panics
        let mut g = good.clone();
        for x in g.iter_mut().skip(HEADER_LEN + 1) {
            *x = 0xff;
        }
        if let Ok(o) = SlotOutput::from_bytes(&params, &g, 1) {
            sk.decrypt_slots(&params, &o).unwrap();
        }
        // a client ciphertext with a residue >= p is refused by the ring's decoder
        let cbytes = sk
            .encrypt_slots(&params, 0, &[1], &mut rng)
            .unwrap()
            .to_bytes(params.ring())
            .unwrap();
        let mut cb = cbytes.clone();
        for x in cb.iter_mut().skip(HEADER_LEN + 32).take(16) {
            *x = 0xff;
        }
        assert!(SeededCiphertext::from_bytes(params.ring(), &cb).is_err());
        assert!(SeededCiphertext::from_bytes(params.ring(), &cbytes[..100]).is_err());
        // out-of-range arguments
        assert!(SlotAccumulator::new(&params, 2).is_err());
        assert!(sk.encrypt_slots(&params, 0, &[0; 257], &mut rng).is_err());
        assert!(SlotPlain::encode(&params, 5, &[1]).is_err());
    }

    /// Statistical test: the decryption error of returned ciphertexts must not depend on the
    /// server's plaintexts. Plaintext `encode(1, ..., 1)` = the constant 1 (tiny noise) vs
    /// uniformly random slots (coefficients uniform mod `t`, the largest noise); same client
    /// input; two-sample Kolmogorov-Smirnov distance on the exact per-coefficient errors. The same
    /// statistic on unflooded outputs must reject, which shows the test has power. Wide outputs
    /// (kb = 127, ka = 120) so the plaintext-dependent noise is above the rounding terms.
    #[test]
    fn flooded_noise_does_not_depend_on_server_plaintexts() {
        const TRIALS: usize = 2;
        let params = SlotParametersBuilder::new()
            .ring_bits(RingBits(37))
            .output_bits_for_tests(127, 120)
            .build()
            .unwrap();
        let n = params.degree();
        let comp = 0;
        let t = params.plain_moduli()[comp];
        let mut fixed = ChaCha20Rng::seed_from_u64(99);
        let sk = SecretKey::generate(params.ring(), &mut fixed);
        let pk = sk.public_key(&mut fixed);
        let x: Vec<u64> = (0..n)
            .map(|_| fixed.gen::<u64>() & ((1 << 37) - 1))
            .collect();
        let ones = vec![1u64; n];
        let uniform: Vec<u64> = (0..n).map(|_| fixed.gen_range(0..t)).collect();
        let errors = |w: &[u64], flooded: bool, seed: u64| -> Vec<f64> {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            let plain = SlotPlain::encode(&params, comp, w).unwrap();
            let mut all = Vec::new();
            for _ in 0..TRIALS {
                let ct = sk
                    .encrypt_slots(&params, comp, &x, &mut rng)
                    .unwrap()
                    .expand(params.ring())
                    .unwrap();
                let mut acc = SlotAccumulator::new(&params, comp).unwrap();
                acc.mul_acc(&ct, &plain).unwrap();
                let out = if flooded {
                    acc.finalize(&pk, &[], &mut rng).unwrap()
                } else {
                    acc.finalize_unflooded_for_tests(&pk, &[], &mut rng)
                        .unwrap()
                };
                let got = sk.decrypt_slots(&params, &out).unwrap();
                let want: Vec<u64> = x
                    .iter()
                    .zip(w)
                    .map(|(&a, &b)| ((u128::from(a) * u128::from(b)) % u128::from(t)) as u64)
                    .collect();
                assert!(got == want, "decryption mismatch");
                all.extend(sk.slot_errors_for_tests(&params, &out).unwrap());
            }
            all
        };
        let ks = |mut a: Vec<f64>, mut b: Vec<f64>| {
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
            while i < a.len() && j < b.len() {
                if a[i] <= b[j] {
                    i += 1;
                } else {
                    j += 1;
                }
                d = d.max((i as f64 / a.len() as f64 - j as f64 / b.len() as f64).abs());
            }
            d
        };
        let variance = |v: &[f64]| {
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64
        };
        let samples = (TRIALS * n) as f64;
        let critical = 1.95 * (2.0 / samples).sqrt();
        let e0 = errors(&ones, true, 10);
        let e1 = errors(&uniform, true, 11);
        let d = ks(e0.clone(), e1.clone());
        assert!(d < critical, "flooded KS distance {d} >= {critical}");
        let ratio = variance(&e0) / variance(&e1);
        assert!((ratio - 1.0).abs() < 0.1, "flooded variance ratio {ratio}");
        // the flooding dominates: errors are t * f with f uniform on [-B, B], variance t^2 B^2/3
        let b = params.noise().flood_bound as f64 * t as f64;
        let v = variance(&e0) / (b * b / 3.0);
        assert!((v - 1.0).abs() < 0.1, "{v}");
        // power: without flooding the statistic separates the two plaintexts
        let u0 = errors(&ones, false, 12);
        let u1 = errors(&uniform, false, 13);
        let du = ks(u0.clone(), u1.clone());
        assert!(du > 10.0 * critical, "unflooded KS distance {du}: no power");
        assert!(variance(&u1) > 100.0 * variance(&u0));
    }
}
