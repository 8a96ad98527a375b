//! RLWE parameters: dimension newtypes, the validated [`RlweParametersBuilder`], and the named
//! 128-bit [`Preset`]s.
//!
//! # Security
//! Every parameter set accepted by the builder (outside the `testing` feature) has a ring degree
//! `N` and a total modulus `log2 q` within the HomomorphicEncryption.org standard's 128-bit
//! classical security bound for a uniform ternary secret and error standard deviation ~3.2
//! (here: centered binomial with `eta = 21`, standard deviation 3.24):
//!
//! | N | max log2 q |
//! |---|---|
//! | 1024 | 27 | 2048 | 54 | 4096 | 109 | 8192 | 218 | 16384 | 438 | 32768 | 881 |
//!
//! # Correctness
//! The builder runs [`crate::noise::analyze`] for the declared workload (plaintext bits `l`,
//! weight magnitude, number of weight terms per output coefficient, flooding security) and
//! refuses parameters whose noise budget cannot guarantee exact decryption after the
//! multiply-accumulate, re-randomization, modulus switch and flooding. It also derives the output
//! widths (`b_bits`, `a_bits`) and the flooding bound from that analysis.

use std::sync::Arc;

use crate::arith::{
    inv_mod_prime, is_prime, mul_mod, neg_mod, ntt_primes, MAX_PRIME_BITS, MIN_PRIME_BITS,
};
use crate::error::{FheError, Result};
use crate::galois::KeySwitchContext;
use crate::noise::{analyze, NoiseInputs, NoiseReport, CBD_ETA};
use crate::rns::{Pow2Rounder, RnsContext};

/// Ring degree `N` of `Z_q[X]/(X^N+1)`: the number of coefficients per polynomial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolyDegree(pub usize);

/// Plaintext width `l`: messages live in `Z_{2^l}` (plaintext modulus `t = 2^l`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RingBits(pub u32);

/// Number of nonzero weight coefficients that may contribute to one output coefficient, summed
/// over everything accumulated into one ciphertext (`<= N` for a single product).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacTerms(pub usize);

/// What the server's plaintext (weight) coefficients may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightBound {
    /// Any element of `Z_{2^l}` (worst case; centered lift `|w| <= 2^(l-1)`).
    Uniform,
    /// Signed integers with `|w| <= max_abs` (e.g. fixed-point weights).
    MaxAbs(u64),
}

/// Accepted plaintext widths.
pub const RING_BITS_RANGE: core::ops::RangeInclusive<u32> = 16..=64;

/// Default statistical security of the flooding, per sent coefficient.
pub const DEFAULT_STAT_BITS: u32 = 40;

/// Format/parameter-set version mixed into the parameter id.
pub const PARAMS_VERSION: u8 = 1;

/// HomomorphicEncryption.org 128-bit classical bound on `log2 q` for a ternary secret.
pub fn max_log_q_128(degree: usize) -> Option<u32> {
    match degree {
        1024 => Some(27),
        2048 => Some(54),
        4096 => Some(109),
        8192 => Some(218),
        16384 => Some(438),
        32768 => Some(881),
        _ => None,
    }
}

/// Named 128-bit parameter sets. Each fixes `N` and the primes; the workload (`l`, weights) is
/// supplied at lookup and validated against the noise budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Preset {
    /// `N = 4096`, `q` = a 55-bit and a 54-bit prime, `log2 q = 108.99`.
    /// Table row: (N = 4096, log2 q <= 109).
    /// For small signed weights: exact for `l + log2|w| <= ~56` at `T = N` (e.g. `l = 37` with
    /// `|w| < 2^19`, `l = 41` with `|w| < 2^15`, `l = 16` even with uniform weights).
    N4096Q109,
    /// `N = 8192`, `q` = three 62-bit primes, `log2 q = 186.0`.
    /// Table row: (N = 8192, log2 q <= 218).
    /// Worst case: uniformly random weights in `Z_{2^l}` for every `l <= 64` at `T = N`.
    N8192Q186,
    /// `N = 8192`, `q` = three 50-bit primes (`log2 q = 150`) plus a 50-bit special prime for
    /// key switching: `log2 (q P) = 200`. Table row: (N = 8192, log2 q <= 218).
    /// All primes are below 2^50 so the NTT uses AVX-512 IFMA (about 2x faster key switching than
    /// with 53/57-bit primes). Supports packing up to 64 outputs into one dense ciphertext
    /// ([`crate::pack`]); exact for small weights at every `l <= 64` and uniform weights up to
    /// `l ~ 48`.
    N8192Q200Pack,
}

/// Primes of [`Preset::N4096Q109`]: the largest 55-bit and 54-bit primes `= 1 mod 8192`.
pub const N4096Q109_PRIMES: [u64; 2] = [36_028_797_018_652_673, 18_014_398_509_309_953];
/// Primes of `q` for [`Preset::N8192Q200Pack`]: the 2nd to 4th largest 50-bit primes `= 1 mod 16384`.
pub const N8192Q200_PRIMES: [u64; 3] = [
    1_125_899_906_629_633,
    1_125_899_905_744_897,
    1_125_899_905_351_681,
];
/// Special prime of [`Preset::N8192Q200Pack`]: the largest 50-bit prime `= 1 mod 16384` (it
/// must be at least every prime of `q`).
pub const N8192Q200_SPECIAL: u64 = 1_125_899_906_826_241;
/// Primes of [`Preset::N8192Q186`]: the three largest primes below `2^62` that are `= 1 mod 16384`.
pub const N8192Q186_PRIMES: [u64; 3] = [
    4_611_686_018_427_322_369,
    4_611_686_018_427_289_601,
    4_611_686_018_426_454_017,
];

impl Preset {
    /// All presets, cheapest first.
    pub const ALL: [Preset; 3] = [Preset::N4096Q109, Preset::N8192Q186, Preset::N8192Q200Pack];

    /// Ring degree of the preset.
    pub fn degree(self) -> PolyDegree {
        match self {
            Preset::N4096Q109 => PolyDegree(4096),
            Preset::N8192Q186 | Preset::N8192Q200Pack => PolyDegree(8192),
        }
    }

    /// Primes of the preset.
    pub fn moduli(self) -> &'static [u64] {
        match self {
            Preset::N4096Q109 => &N4096Q109_PRIMES,
            Preset::N8192Q186 => &N8192Q186_PRIMES,
            Preset::N8192Q200Pack => &N8192Q200_PRIMES,
        }
    }

    /// Stable name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::N4096Q109 => "n4096-q109",
            Preset::N8192Q186 => "n8192-q186",
            Preset::N8192Q200Pack => "n8192-q200-pack",
        }
    }

    /// Special prime for key switching, if the preset supports packing.
    pub fn special_prime(self) -> Option<u64> {
        match self {
            Preset::N8192Q200Pack => Some(N8192Q200_SPECIAL),
            _ => None,
        }
    }

    /// Largest packing factor the preset's noise budget covers.
    pub fn max_pack(self) -> usize {
        match self {
            Preset::N8192Q200Pack => 64,
            _ => 1,
        }
    }
}

/// Validated builder for [`RlweParameters`].
#[derive(Clone, Debug)]
pub struct RlweParametersBuilder {
    degree: Option<PolyDegree>,
    moduli: Vec<u64>,
    moduli_bits: Vec<u32>,
    ring: Option<RingBits>,
    weights: WeightBound,
    mac_terms: Option<MacTerms>,
    stat_bits: u32,
    output_bits: Option<(u32, u32)>,
    special_prime: Option<u64>,
    special_prime_bits: Option<u32>,
    max_pack: usize,
    orbit_levels: u32,
    insecure: bool,
}

impl Default for RlweParametersBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RlweParametersBuilder {
    /// Empty builder (uniform weights, `T = N`, 40-bit flooding by default).
    pub fn new() -> Self {
        Self {
            degree: None,
            moduli: Vec::new(),
            moduli_bits: Vec::new(),
            ring: None,
            weights: WeightBound::Uniform,
            mac_terms: None,
            stat_bits: DEFAULT_STAT_BITS,
            output_bits: None,
            special_prime: None,
            special_prime_bits: None,
            max_pack: 1,
            orbit_levels: 0,
            insecure: false,
        }
    }

    /// Start from a preset's degree, primes and packing support.
    pub fn from_preset(preset: Preset) -> Self {
        let b = Self::new().degree(preset.degree()).moduli(preset.moduli());
        match preset.special_prime() {
            Some(p) => b.special_prime(p).max_pack(preset.max_pack()),
            None => b,
        }
    }

    /// Special prime `P` for key switching (needed for packing). It counts towards the
    /// security bound and must be at least as large as every prime of `q`.
    pub fn special_prime(mut self, p: u64) -> Self {
        self.special_prime = Some(p);
        self.special_prime_bits = None;
        self
    }

    /// Generate the special prime (largest prime of this size `= 1 mod 2N` not used in `q`).
    pub fn special_prime_bits(mut self, bits: u32) -> Self {
        self.special_prime_bits = Some(bits);
        self.special_prime = None;
        self
    }

    /// Largest number of output ciphertexts packed into one (a power of two; 1 = no packing).
    /// The noise budget accounts for the key-switching noise of packing this many.
    pub fn max_pack(mut self, d: usize) -> Self {
        self.max_pack = d;
        self
    }

    /// Allow [`crate::InputOrbit`]s of up to `levels` automorphism levels (split packing, see
    /// [`crate::orbit`]; `2^levels <= max_pack`). The budget then also covers the orbit's
    /// key-switch noise times the combined weights, [`orbit_noise`]. Default 0 (none).
    pub fn orbit_levels(mut self, levels: u32) -> Self {
        self.orbit_levels = levels;
        self
    }

    /// Ring degree `N` (power of two in the 128-bit table).
    pub fn degree(mut self, n: PolyDegree) -> Self {
        self.degree = Some(n);
        self
    }

    /// Explicit primes (distinct, `= 1 mod 2N`, 20..=62 bits).
    pub fn moduli(mut self, moduli: &[u64]) -> Self {
        self.moduli = moduli.to_vec();
        self.moduli_bits.clear();
        self
    }

    /// Generate primes of the given sizes (largest primes of each size `= 1 mod 2N`).
    pub fn moduli_bits(mut self, bits: &[u32]) -> Self {
        self.moduli_bits = bits.to_vec();
        self.moduli.clear();
        self
    }

    /// Plaintext width `l` (16..=64).
    pub fn ring_bits(mut self, l: RingBits) -> Self {
        self.ring = Some(l);
        self
    }

    /// Weight magnitude model.
    pub fn weight_bound(mut self, w: WeightBound) -> Self {
        self.weights = w;
        self
    }

    /// Weight terms per output coefficient (default `N`).
    pub fn mac_terms(mut self, t: MacTerms) -> Self {
        self.mac_terms = Some(t);
        self
    }

    /// Statistical security of the flooding per sent coefficient (40..=80, default 40).
    pub fn stat_security_bits(mut self, bits: u32) -> Self {
        self.stat_bits = bits;
        self
    }

    /// Skip the security-table check so tiny rings can be tested. INSECURE.
    #[cfg(any(test, feature = "testing"))]
    pub fn insecure_allow_small_ring_for_tests(mut self) -> Self {
        self.insecure = true;
        self
    }

    /// Force wider-than-necessary output widths `(b_bits, a_bits)` (still validated). Test-only:
    /// used to make the weight-dependent noise visible in the flooding test.
    #[cfg(any(test, feature = "testing"))]
    pub fn output_bits_for_tests(mut self, b_bits: u32, a_bits: u32) -> Self {
        self.output_bits = Some((b_bits, a_bits));
        self
    }

    /// Validate everything and build.
    pub fn build(self) -> Result<Arc<RlweParameters>> {
        let degree = self
            .degree
            .ok_or_else(|| FheError::param("degree", "unset", "the ring degree is required"))?;
        let n = degree.0;
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
        let moduli = if self.moduli_bits.is_empty() {
            self.moduli.clone()
        } else {
            let mut out: Vec<u64> = Vec::new();
            for &b in &self.moduli_bits {
                let have = out.iter().filter(|&&p| 64 - p.leading_zeros() == b).count();
                let ps = ntt_primes(b, n, have + 1)?;
                out.push(ps.last().copied().unwrap_or(0));
            }
            out
        };
        if moduli.is_empty() || moduli.len() > 4 {
            return Err(FheError::param(
                "moduli",
                moduli.len(),
                "need between 1 and 4 primes",
            ));
        }
        for (i, &p) in moduli.iter().enumerate() {
            let bits = 64 - p.leading_zeros();
            if !(MIN_PRIME_BITS..=MAX_PRIME_BITS).contains(&bits) {
                return Err(FheError::param(
                    "moduli",
                    p,
                    format!("primes must have {MIN_PRIME_BITS}..={MAX_PRIME_BITS} bits"),
                ));
            }
            if !is_prime(p) {
                return Err(FheError::param("moduli", p, "not prime"));
            }
            if p % (2 * n as u64) != 1 {
                return Err(FheError::param(
                    "moduli",
                    p,
                    format!("not NTT-friendly: p != 1 mod 2N = {}", 2 * n),
                ));
            }
            if moduli.iter().take(i).any(|&o| o == p) {
                return Err(FheError::param("moduli", p, "primes must be distinct"));
            }
        }
        let log2_q: f64 = moduli.iter().map(|&p| (p as f64).log2()).sum();
        let special = match (self.special_prime, self.special_prime_bits) {
            (Some(p), _) => Some(p),
            (None, Some(bits)) => {
                let ps = ntt_primes(bits, n, moduli.len() + 1)?;
                ps.into_iter().find(|p| !moduli.contains(p))
            }
            (None, None) => None,
        };
        if let Some(sp) = special {
            let max_p = moduli.iter().copied().max().unwrap_or(0);
            if !is_prime(sp)
                || sp % (2 * n as u64) != 1
                || moduli.contains(&sp)
                || sp < max_p
                || 64 - sp.leading_zeros() > MAX_PRIME_BITS
            {
                return Err(FheError::param(
                    "special_prime",
                    sp,
                    "must be an NTT-friendly prime (= 1 mod 2N, <= 62 bits), distinct from and at least as large as every prime of q",
                ));
            }
            if moduli.len() > 3 {
                return Err(FheError::param(
                    "moduli",
                    moduli.len(),
                    "at most 3 primes with a special prime",
                ));
            }
        }
        if !self.max_pack.is_power_of_two() || self.max_pack > n / 2 {
            return Err(FheError::param(
                "max_pack",
                self.max_pack,
                "must be a power of two <= N/2",
            ));
        }
        if self.max_pack > 1 && special.is_none() {
            return Err(FheError::param(
                "max_pack",
                self.max_pack,
                "packing needs a special prime",
            ));
        }
        let log2_qp = log2_q + special.map_or(0.0, |p| (p as f64).log2());
        if let Some(max) = table {
            if log2_qp > f64::from(max) && !self.insecure {
                return Err(FheError::param(
                    "moduli",
                    format!("log2 (q P) = {log2_qp:.2}"),
                    format!("exceeds the 128-bit bound {max} for N = {n} (HomomorphicEncryption.org table)"),
                ));
            }
        }
        let ring = self.ring.ok_or_else(|| {
            FheError::param("ring_bits", "unset", "the plaintext width l is required")
        })?;
        if !RING_BITS_RANGE.contains(&ring.0) {
            return Err(FheError::param("ring_bits", ring.0, "l must be in 16..=64"));
        }
        let l = ring.0;
        let log2_weight = match self.weights {
            WeightBound::Uniform => f64::from(l - 1),
            WeightBound::MaxAbs(0) => {
                return Err(FheError::param("weight_bound", 0, "must be >= 1"))
            }
            WeightBound::MaxAbs(w) => {
                if l < 64 && w > (1u64 << (l - 1)) {
                    return Err(FheError::param(
                        "weight_bound",
                        w,
                        format!(
                            "larger than the centered ring bound 2^{} (use Uniform)",
                            l - 1
                        ),
                    ));
                }
                (w as f64).log2()
            }
        };
        let mac_terms = self.mac_terms.unwrap_or(MacTerms(n));
        if mac_terms.0 == 0 || mac_terms.0 > 64 * n {
            return Err(FheError::param(
                "mac_terms",
                mac_terms.0,
                "must be in 1..=64N",
            ));
        }
        let stat_ok = (40..=80).contains(&self.stat_bits) || (self.insecure && self.stat_bits >= 1);
        if !stat_ok {
            return Err(FheError::param(
                "stat_security_bits",
                self.stat_bits,
                "must be in 40..=80",
            ));
        }
        if self.orbit_levels > 0 && (1usize << self.orbit_levels.min(30)) > self.max_pack {
            return Err(FheError::param(
                "orbit_levels",
                self.orbit_levels,
                format!("2^levels must be at most max_pack = {}", self.max_pack),
            ));
        }
        let extra = special.map_or(0.0, |sp| {
            pack_noise(n, &moduli, sp, self.max_pack)
                + orbit_noise(
                    n,
                    &moduli,
                    sp,
                    self.orbit_levels,
                    log2_weight.exp2(),
                    mac_terms.0,
                )
        });
        let noise = analyze(&NoiseInputs {
            degree: n,
            log2_q,
            plain_bits: l,
            log2_weight,
            mac_terms: mac_terms.0,
            stat_bits: self.stat_bits,
            extra_noise: extra,
            output_bits: self.output_bits,
        })?;
        let ctx = RnsContext::new(n, &moduli)?;
        let ks = match special {
            Some(sp) => Some(KeySwitchContext::new(n, &moduli, sp)?),
            None => None,
        };
        // Client-side output decryption needs the exact product a*s, |a*s| < N 2^ka, recovered by
        // CRT from the first (at most two) primes.
        let crt_bits = (ctx.garner2_modulus() as f64).log2();
        let need_bits = (2.0 * n as f64).log2() + f64::from(noise.a_bits) + 1.0;
        if crt_bits < need_bits {
            return Err(FheError::param(
                "moduli",
                format!("log2(p0 p1) = {crt_bits:.1}"),
                format!("output decryption needs >= {need_bits:.1} bits in the first two primes"),
            ));
        }
        let rounder_b = ctx.pow2_rounder(noise.b_bits)?;
        let rounder_a = ctx.pow2_rounder(noise.a_bits)?;
        let rounder_plain = ctx.pow2_rounder(l)?;
        // Encoding constants: round(q m / t) = floor(q/t) m + round((q mod t) m / t).
        let mask = if l == 64 { u64::MAX } else { (1u64 << l) - 1 };
        let q_mod_t = moduli.iter().fold(1u64, |acc, &p| acc.wrapping_mul(p)) & mask;
        let mut delta_mod_p = Vec::with_capacity(moduli.len());
        for &p in &moduli {
            let t_mod_p = ((1u128 << l) % u128::from(p)) as u64;
            let t_inv = inv_mod_prime(t_mod_p, p)
                .ok_or_else(|| FheError::param("moduli", p, "must not divide t"))?;
            delta_mod_p.push(mul_mod(neg_mod(q_mod_t % p, p), t_inv, p));
        }
        let id = param_id(
            n,
            &moduli,
            l,
            &noise,
            self.stat_bits,
            (special, self.max_pack, self.orbit_levels),
        );
        Ok(Arc::new(RlweParameters {
            degree,
            moduli,
            ring,
            weights: self.weights,
            mac_terms,
            stat_bits: self.stat_bits,
            noise,
            ctx,
            rounder_b,
            rounder_a,
            rounder_plain,
            delta_mod_p,
            q_mod_t,
            ks,
            max_pack: self.max_pack,
            orbit_levels: self.orbit_levels,
            id,
            insecure: self.insecure,
        }))
    }
}

/// FNV-1a over everything that changes the meaning of a serialized object. Not cryptographic;
/// it only detects a peer or file using different parameters.
fn param_id(
    n: usize,
    moduli: &[u64],
    l: u32,
    noise: &NoiseReport,
    stat: u32,
    (special, max_pack, orbit_levels): (Option<u64>, usize, u32),
) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&[PARAMS_VERSION]);
    eat(&(n as u64).to_le_bytes());
    for p in moduli {
        eat(&p.to_le_bytes());
    }
    eat(&l.to_le_bytes());
    eat(&noise.b_bits.to_le_bytes());
    eat(&noise.a_bits.to_le_bytes());
    eat(&noise.flood_bound.to_le_bytes());
    eat(&stat.to_le_bytes());
    eat(&CBD_ETA.to_le_bytes());
    eat(&special.unwrap_or(0).to_le_bytes());
    eat(&(max_pack as u64).to_le_bytes());
    if orbit_levels > 0 {
        // (absent for 0, so the ids of parameter sets without orbits are unchanged)
        eat(&orbit_levels.to_le_bytes());
    }
    h
}

/// Worst-case key-switching noise of packing `d` ciphertexts (see [`crate::pack`]):
/// `B_ks = L N max(p_i) eta / P + N/2 + 1` per key switch, `B_pack = (4^log2(d) - 1)/3 B_ks`.
pub(crate) fn pack_noise(n: usize, moduli: &[u64], special: u64, d: usize) -> f64 {
    if d <= 1 {
        return 0.0;
    }
    let max_p = moduli.iter().copied().max().unwrap_or(0) as f64;
    let b_ks = moduli.len() as f64 * n as f64 * max_p * f64::from(CBD_ETA) / special as f64
        + n as f64 / 2.0
        + 1.0;
    let levels = d.trailing_zeros() as i32;
    (4f64.powi(levels) - 1.0) / 3.0 * b_ks
}

/// Worst-case noise an [`crate::InputOrbit`] of `levels` levels adds to an output coefficient
/// (see [`crate::orbit`]): every orbit element carries at most `levels` key switches of
/// `B_ks = L N max(p_i) eta / P + N/2 + 1` each; it multiplies a combined weight polynomial of
/// `l1` norm at most `2^levels` times that of one block, and `2^levels` elements are summed, so
/// with `T` weight terms of magnitude `w` per output coefficient the bound is
/// `4^levels levels B_ks w T` (0 without orbits).
pub fn orbit_noise(
    n: usize,
    moduli: &[u64],
    special: u64,
    levels: u32,
    weight: f64,
    terms: usize,
) -> f64 {
    if levels == 0 {
        return 0.0;
    }
    let max_p = moduli.iter().copied().max().unwrap_or(0) as f64;
    let b_ks = moduli.len() as f64 * n as f64 * max_p * f64::from(CBD_ETA) / special as f64
        + n as f64 / 2.0
        + 1.0;
    4f64.powi(levels as i32) * f64::from(levels) * b_ks * weight * terms as f64
}

/// A validated parameter set with its precomputed tables. Shared as `Arc<RlweParameters>`.
#[derive(Debug)]
pub struct RlweParameters {
    degree: PolyDegree,
    moduli: Vec<u64>,
    ring: RingBits,
    weights: WeightBound,
    mac_terms: MacTerms,
    stat_bits: u32,
    noise: NoiseReport,
    pub(crate) ctx: RnsContext,
    pub(crate) rounder_b: Pow2Rounder,
    pub(crate) rounder_a: Pow2Rounder,
    pub(crate) rounder_plain: Pow2Rounder,
    /// `floor(q/t) mod p_i`.
    pub(crate) delta_mod_p: Vec<u64>,
    /// `q mod t`.
    pub(crate) q_mod_t: u64,
    /// Key-switching context (special prime), when packing is supported.
    pub(crate) ks: Option<KeySwitchContext>,
    max_pack: usize,
    orbit_levels: u32,
    id: u64,
    insecure: bool,
}

impl RlweParameters {
    /// Largest number of ciphertexts [`crate::MacAccumulator::pack`] may merge (1 = no packing).
    pub fn max_pack(&self) -> usize {
        self.max_pack
    }
    /// Most automorphism levels an [`crate::InputOrbit`] may have (0: none).
    pub fn orbit_levels(&self) -> u32 {
        self.orbit_levels
    }
    /// The special prime, if the parameters support packing.
    pub fn special_prime(&self) -> Option<u64> {
        self.ks.as_ref().map(KeySwitchContext::special_prime)
    }
    /// Look up a preset for a workload; fails with [`FheError::NoiseBudget`] if the preset cannot
    /// decrypt that workload exactly.
    pub fn preset(preset: Preset, ring: RingBits, weights: WeightBound) -> Result<Arc<Self>> {
        RlweParametersBuilder::from_preset(preset)
            .ring_bits(ring)
            .weight_bound(weights)
            .build()
    }

    /// The cheapest preset that handles the workload (`T = N`, 40-bit flooding).
    pub fn recommended(ring: RingBits, weights: WeightBound) -> Result<Arc<Self>> {
        let mut last = None;
        for p in Preset::ALL {
            match Self::preset(p, ring, weights) {
                Ok(params) => return Ok(params),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| FheError::param("preset", "none", "no presets")))
    }

    /// Ring degree `N`.
    pub fn degree(&self) -> usize {
        self.degree.0
    }
    /// The primes of `q`.
    pub fn moduli(&self) -> &[u64] {
        &self.moduli
    }
    /// `log2 q`.
    pub fn log2_q(&self) -> f64 {
        self.ctx.log2_q()
    }
    /// Plaintext width `l`.
    pub fn ring_bits(&self) -> u32 {
        self.ring.0
    }
    /// `2^l - 1`.
    pub fn plain_mask(&self) -> u64 {
        if self.ring.0 == 64 {
            u64::MAX
        } else {
            (1u64 << self.ring.0) - 1
        }
    }
    /// Weight model the budget was computed for.
    pub fn weight_bound(&self) -> WeightBound {
        self.weights
    }
    /// Largest accepted weight magnitude.
    pub fn max_weight_abs(&self) -> u128 {
        match self.weights {
            WeightBound::Uniform => 1u128 << (self.ring.0 - 1),
            WeightBound::MaxAbs(w) => u128::from(w),
        }
    }
    /// Weight terms per output coefficient the budget covers.
    pub fn mac_terms(&self) -> usize {
        self.mac_terms.0
    }
    /// Flooding statistical security per sent coefficient.
    pub fn stat_security_bits(&self) -> u32 {
        self.stat_bits
    }
    /// The noise analysis, including output widths and the flooding bound.
    pub fn noise(&self) -> &NoiseReport {
        &self.noise
    }
    /// Width of sent `b` coefficients after modulus switching.
    pub fn output_b_bits(&self) -> u32 {
        self.noise.b_bits
    }
    /// Width of sent `a` coefficients after modulus switching.
    pub fn output_a_bits(&self) -> u32 {
        self.noise.a_bits
    }
    /// Identifier written into every serialized object.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// Whether this set skipped the security checks (test-only builds).
    pub fn is_insecure(&self) -> bool {
        self.insecure
    }
    /// The RNS context (moduli, NTT tables).
    pub fn rns(&self) -> &RnsContext {
        &self.ctx
    }
}

/// Small INSECURE parameters for fast tests. Not reachable from any preset lookup.
#[cfg(any(test, feature = "testing"))]
pub fn insecure_test_parameters(
    degree: usize,
    ring: u32,
    weights: WeightBound,
) -> Result<Arc<RlweParameters>> {
    RlweParametersBuilder::new()
        .degree(PolyDegree(degree))
        .moduli_bits(&[60, 60])
        .ring_bits(RingBits(ring))
        .weight_bound(weights)
        .insecure_allow_small_ring_for_tests()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_primes_are_the_documented_ones() {
        assert_eq!(ntt_primes(55, 4096, 1).unwrap()[0], N4096Q109_PRIMES[0]);
        assert_eq!(ntt_primes(54, 4096, 1).unwrap()[0], N4096Q109_PRIMES[1]);
        assert_eq!(ntt_primes(62, 8192, 3).unwrap(), N8192Q186_PRIMES.to_vec());
        let p50 = ntt_primes(50, 8192, 4).unwrap();
        assert_eq!(p50[0], N8192Q200_SPECIAL);
        assert_eq!(&p50[1..], &N8192Q200_PRIMES[..]);
        for p in Preset::ALL {
            let n = p.degree().0;
            let log_q: f64 = p
                .moduli()
                .iter()
                .chain(p.special_prime().as_ref())
                .map(|&x| (x as f64).log2())
                .sum();
            assert!(log_q <= f64::from(max_log_q_128(n).unwrap()), "{p:?}");
        }
    }

    #[test]
    fn builder_refusals() {
        let base = || RlweParametersBuilder::from_preset(Preset::N4096Q109).ring_bits(RingBits(16));
        assert!(base().build().is_ok());
        let e = base().degree(PolyDegree(3000)).build().unwrap_err();
        assert!(matches!(
            e,
            FheError::InvalidParameter { name: "degree", .. }
        ));
        let e = base().degree(PolyDegree(512)).build().unwrap_err();
        assert!(matches!(
            e,
            FheError::InvalidParameter { name: "degree", .. }
        ));
        let e = base().ring_bits(RingBits(8)).build().unwrap_err();
        assert!(matches!(
            e,
            FheError::InvalidParameter {
                name: "ring_bits",
                ..
            }
        ));
        let e = base().ring_bits(RingBits(65)).build().unwrap_err();
        assert!(matches!(
            e,
            FheError::InvalidParameter {
                name: "ring_bits",
                ..
            }
        ));
        // duplicate prime
        let p = N4096Q109_PRIMES[0];
        let e = base().moduli(&[p, p]).build().unwrap_err();
        assert!(
            matches!(e, FheError::InvalidParameter { name: "moduli", .. }),
            "{e}"
        );
        // not NTT friendly (prime but != 1 mod 8192)
        let e = base().moduli(&[(1u64 << 61) - 1]).build().unwrap_err();
        assert!(
            matches!(e, FheError::InvalidParameter { name: "moduli", .. }),
            "{e}"
        );
        // composite
        let e = base()
            .moduli(&[N4096Q109_PRIMES[0] + 8192])
            .build()
            .unwrap_err();
        assert!(
            matches!(e, FheError::InvalidParameter { name: "moduli", .. }),
            "{e}"
        );
        // too much modulus for N = 4096 (insecure)
        let e = base().moduli_bits(&[60, 60]).build().unwrap_err();
        assert!(e.to_string().contains("128-bit"), "{e}");
        // too little modulus for the noise
        let e = RlweParametersBuilder::from_preset(Preset::N4096Q109)
            .ring_bits(RingBits(37))
            .weight_bound(WeightBound::Uniform)
            .build()
            .unwrap_err();
        assert!(matches!(e, FheError::NoiseBudget { .. }), "{e}");
        // stat bits
        let e = base().stat_security_bits(20).build().unwrap_err();
        assert!(matches!(
            e,
            FheError::InvalidParameter {
                name: "stat_security_bits",
                ..
            }
        ));
    }

    /// `cargo test -p duet-fhe --release preset_table -- --nocapture` prints the table in NOTES.md.
    #[test]
    fn preset_table() {
        for (wname, wb) in [
            ("uniform", None),
            ("|w|<=2^16", Some(1u64 << 16)),
            ("|w|<=2^14", Some(1u64 << 14)),
        ] {
            for l in [16u32, 32, 37, 41, 64] {
                let w = wb.map_or(WeightBound::Uniform, WeightBound::MaxAbs);
                for p in Preset::ALL {
                    match RlweParameters::preset(p, RingBits(l), w) {
                        Ok(params) => {
                            let r = params.noise();
                            println!(
                                "{wname:>10} l={l:2} {:>11}: b_bits={} a_bits={} log2 B_W={:.1} log2 B_f={:.1} margin={:.2} bits q-margin={:.2} bits",
                                p.name(),
                                r.b_bits,
                                r.a_bits,
                                r.log2_weight_noise,
                                (r.flood_bound as f64).log2(),
                                r.margin_bits,
                                r.q_margin_bits
                            );
                        }
                        Err(e) => println!("{wname:>10} l={l:2} {:>11}: refused ({e})", p.name()),
                    }
                }
            }
        }
    }

    /// `cargo test -p duet-fhe --release preset_table_per_key_set -- --nocapture`: the same
    /// presets with the flooding sized per key set (`40 + 34` bits: `2^-40` over `2^34` flooded
    /// coefficients by the union bound) beside today's per-coefficient 40 bits (fhe/NOTES.md).
    #[test]
    fn preset_table_per_key_set() {
        for stat in [DEFAULT_STAT_BITS, DEFAULT_STAT_BITS + 34] {
            for (wname, wb) in [("uniform", None), ("|w|<=2^16", Some(1u64 << 16))] {
                for l in [37u32, 41, 43] {
                    let w = wb.map_or(WeightBound::Uniform, WeightBound::MaxAbs);
                    for p in Preset::ALL {
                        let built = RlweParametersBuilder::from_preset(p)
                            .ring_bits(RingBits(l))
                            .weight_bound(w)
                            .stat_security_bits(stat)
                            .build();
                        match built {
                            Ok(params) => {
                                let r = params.noise();
                                println!(
                                    "stat={stat} {wname:>10} l={l:2} {:>15}: b_bits={} a_bits={} q-margin={:.1} bits",
                                    p.name(),
                                    r.b_bits,
                                    r.a_bits,
                                    r.q_margin_bits
                                );
                            }
                            Err(_) => {
                                println!(
                                    "stat={stat} {wname:>10} l={l:2} {:>15}: refused",
                                    p.name()
                                )
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn insecure_parameters_are_separate() {
        let p = insecure_test_parameters(256, 16, WeightBound::MaxAbs(8)).unwrap();
        assert!(p.is_insecure());
        // the same request without the test-only switch is refused
        let e = RlweParametersBuilder::new()
            .degree(PolyDegree(256))
            .moduli_bits(&[60, 60])
            .ring_bits(RingBits(16))
            .build()
            .unwrap_err();
        assert!(matches!(
            e,
            FheError::InvalidParameter { name: "degree", .. }
        ));
        for preset in Preset::ALL {
            for l in [16u32, 37, 64] {
                if let Ok(p) = RlweParameters::preset(preset, RingBits(l), WeightBound::MaxAbs(8)) {
                    assert!(!p.is_insecure());
                }
            }
        }
    }

    #[test]
    fn presets_cover_every_width() {
        for l in [16u32, 32, 37, 41, 64] {
            let p = RlweParameters::recommended(RingBits(l), WeightBound::Uniform).unwrap();
            assert!(!p.is_insecure());
            assert!(p.noise().margin_bits > 0.0);
            let small =
                RlweParameters::recommended(RingBits(l), WeightBound::MaxAbs(1 << 12)).unwrap();
            assert!(small.noise().margin_bits > 0.0);
        }
        let p = RlweParameters::preset(
            Preset::N4096Q109,
            RingBits(37),
            WeightBound::MaxAbs(1 << 18),
        )
        .unwrap();
        assert_eq!(p.degree(), 4096);
    }
}
