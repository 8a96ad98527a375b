//! Element-wise activations on additive shares: GELU (five approximations, [`GeluApprox`]),
//! GPT-2's tanh-form GELU ([`gelu_new`]), SiLU ([`silu`], LLaMA) and tanh ([`tanh`]).
//!
//! # Formats
//! Inputs and outputs are fixed point in the linear layers' ring ([`ActFormat`]: ring `L`,
//! `frac` fractional bits) with a declared input range `|x| < 2^range_bits`. The non-linear
//! math runs on smaller rings with fewer fractional bits (`work_frac`); the conversions are
//! exact up to one truncation: a ring reduction is local and exact for values in range, a
//! truncation or extension of a value whose sign is known costs one correlated OT
//! ([`duet_mpc::fixed_math::poly::trunc_bounded`], [`extend_nonneg`](duet_mpc::fixed_math::poly::extend_nonneg)).
//! Every ring is the smallest that holds every intermediate on the approximation's domain,
//! found by running the operator on plaintext samples ([`BoundsExec`]).
//!
//! # The Duet form
//! GELU, SiLU and GPT-2's GELU all satisfy `f(x) = ReLU(x) - g(|x|)` with `g` even-extended,
//! small and fast-decaying (`g(t) = t Φ(-t)` for GELU, `t σ(-t)` for SiLU). So:
//! 1. `b = MSB(x)` on `range_bits + frac + 1` bits (exact for inputs in range), then one mux in
//!    the big ring gives `ReLU(x)` exactly and `|x| = 2 ReLU(x) - x` locally;
//! 2. `t = |x|` truncated to `work_frac` bits (known sign: one COT);
//! 3. `c = 1{t < T}` (one comparison on a 16..20-bit ring);
//! 4. `g(t) ≈ P(t)` with `P` of degree 4 by two squares ([`PolyPlan::QuarticBySquares`]) or
//!    degree 6 by three cross terms ([`PolyPlan::SexticBySquares`]);
//! 5. `c P(t)` (one mux on the small ring), extended to the big ring with a known sign (one
//!    COT), and `f(x) = ReLU(x) - c P(t)`.
//!
//! Multiplications: wherever a product is a square it is a
//! [`square`](duet_mpc::fixed_math::poly::square): one Gilboa cross term (`l` COTs of widths
//! `l..1`), half of a general product, the cheapest shared x shared product this layer has
//! (no HE product: `mpc` does not depend on `fhe`); a shared bit times a shared value is the
//! 2-COT [`nl::mux`](duet_mpc::nonlinear::mux); public coefficients are local. Duet GELU,
//! gelu_new and tanh need no general product; SiLU's degree 6 needs one (`x^3 = x x^2`), the
//! presets' powers plans one per odd power, Iron-style one more (`x (1 + tanh u)`).
//!
//! Security: semi-honest, 128-bit, from [`duet_mpc::nonlinear`]; every output is a fresh
//! additive share, nothing is revealed (the comparisons' outputs stay shared).
//!
//! Cost: every operator has an exact `*_cost` function (bytes exact; rounds the plain sum of
//! the batches, an upper bound), computed by running the same code on a [`CostExec`].

use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::piecewise::{Piece, Piecewise};
use duet_mpc::fixed_math::poly::{
    eval_many_in, grid, plain, BoundsExec, CostExec, Exec, Plain, Poly, PolyPlan, ShareExec, Sym,
};
use duet_mpc::nonlinear::{Cost, NlConfig, NlSession};
use duet_mpc::{AShare, FixedPoint, Ring};
use duet_transport::Channel;

fn cfg_err(what: impl Into<String>) -> ProtocolError {
    ProtocolError::Config(what.into())
}

/// Fixed-point format of an activation's input and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActFormat {
    /// The linear layers' ring.
    pub ring: Ring,
    /// Fractional bits.
    pub frac: u32,
    /// Inputs satisfy `|x| < 2^range_bits` (larger inputs give undefined outputs).
    pub range_bits: u32,
}

impl ActFormat {
    /// A format; checks that the range fits the ring.
    pub fn new(ring: Ring, frac: u32, range_bits: u32) -> Result<Self> {
        let f = Self {
            ring,
            frac,
            range_bits,
        };
        FixedPoint::new(ring, frac)?;
        if range_bits + frac + 3 > ring.bits() || range_bits > 20 {
            return Err(cfg_err(format!(
                "inputs below 2^{range_bits} with {frac} fractional bits do not fit Z_2^{}",
                ring.bits()
            )));
        }
        Ok(f)
    }

    /// The default of the benchmarks: `Z_2^37`, 12 fractional bits, `|x| < 2^7`.
    pub fn default_37() -> Self {
        Self {
            ring: Ring::new(37).unwrap_or(Ring::z64()),
            frac: 12,
            range_bits: 7,
        }
    }

    /// The fixed-point codec.
    pub fn fixed(&self) -> Result<FixedPoint> {
        Ok(FixedPoint::new(self.ring, self.frac)?)
    }

    /// Bits of the ring in which the sign of an in-range input is exact.
    fn sign_bits(&self) -> u32 {
        (self.range_bits + self.frac + 1).clamp(Ring::MIN_BITS, self.ring.bits())
    }
}

/// GELU approximations (all against the exact erf GELU `x Φ(x)`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum GeluApprox {
    /// Duet: `ReLU(x) - 1{|x| < 3.3} P(|x|)` with `P` a degree-4 minimax fit of `t Φ(-t)` on
    /// `[0, 3.3]` evaluated by two squares; 8 fractional bits for the non-linear math.
    #[default]
    Duet,
    /// BumbleBee-style (Lu et al., NDSS'25) segments: 0 below -5, a degree-3 polynomial on
    /// `[-5, -1.97)`, `0.5 x` plus an even degree-6 polynomial on `[-1.97, 3)`, `x` above
    /// (coefficients: our minimax fits on these segments).
    BumbleBee,
    /// PUMA's four pieces (Dong et al., 2023): 0 below -4, its degree-3 polynomial on
    /// `[-4, -1.95)`, its degree-6 polynomial on `[-1.95, 3]`, `x` above (PUMA's coefficients).
    Puma,
    /// BOLT (Pang et al., S&P'24): `0.5 x + P4(|x|)` for `|x| <= 2.7` with BOLT's degree-4
    /// coefficients, `ReLU(x)` beyond; powers evaluated as BOLT does (products, no square
    /// trick).
    Bolt,
    /// Iron-style (Hao et al., NeurIPS'22): Iron evaluates the tanh form
    /// `0.5 x (1 + tanh(√(2/π)(x + 0.044715 x^3)))` with SIRNN's exp/reciprocal library. We keep
    /// its structure (input clipped to `[-4, 4]` for the cube, the cube, a tanh, a product
    /// with `x`) and compute tanh with our quartic ([`tanh`]); Iron's real tanh costs more.
    Iron,
}

impl GeluApprox {
    /// All variants.
    pub const ALL: [GeluApprox; 5] = [
        GeluApprox::Duet,
        GeluApprox::BumbleBee,
        GeluApprox::Puma,
        GeluApprox::Bolt,
        GeluApprox::Iron,
    ];

    /// The `--protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            GeluApprox::Duet => "duet",
            GeluApprox::BumbleBee => "bumblebee",
            GeluApprox::Puma => "puma",
            GeluApprox::Bolt => "bolt",
            GeluApprox::Iron => "iron",
        }
    }

    /// From a `--protocol` name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Fractional bits of the non-linear math.
    pub fn work_frac(self) -> u32 {
        match self {
            GeluApprox::Duet | GeluApprox::Bolt => 8,
            GeluApprox::BumbleBee | GeluApprox::Puma | GeluApprox::Iron => 10,
        }
    }

    /// Worst-case absolute error against the exact GELU on `[-8, 8]` asserted by the tests
    /// (float approximation error plus fixed-point error).
    pub fn error_bound(self) -> f64 {
        match self {
            GeluApprox::Duet => 1.0e-2,
            GeluApprox::BumbleBee => 1.5e-2,
            GeluApprox::Puma => 2.5e-2,
            GeluApprox::Bolt => 1.5e-2,
            GeluApprox::Iron => 1.5e-2,
        }
    }
}

/// SiLU approximations.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum SiluApprox {
    /// Duet: `ReLU(x) - g(|x|)` with `g(t) = t σ(-t)` in two pieces, a degree-6 minimax fit on
    /// `[0, 4)` ([`PolyPlan::SexticBySquares`]) and a degree-4 fit on `[4, 12)`
    /// ([`PolyPlan::QuarticBySquares`]), each in a centred variable, 0 beyond; 10 fractional
    /// bits. Plaintext model on inputs ~ N(0, 2): max error 8.3e-4, rms 2.5e-4, mean -9e-5.
    ///
    /// (Until 2026-12 one degree-6 fit of `8s σ(-8s)` on `s = t/8 in [0, 1]` at 8 bits: 40%
    /// fewer bytes, but coefficients up to 47 amplified the rounding to max 7.7e-3, rms 2.8e-3,
    /// mean -1.7e-3, and that error alone moved SmolLM2's logits by up to 0.18.)
    #[default]
    Duet,
}

/// tanh approximations.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum TanhApprox {
    /// Duet: `sign(x) (1 + 1{|x| < 3} (P(|x|) - 1))` with `P` a degree-4 minimax fit of
    /// `tanh` on `[0, 3]` by two squares; 8 fractional bits.
    #[default]
    Duet,
}

// --- the approximations (public coefficients) ------------------------------------------------

/// `t Φ(-t)` on `[0, 3.3]`, degree 4 (minimax, Lawson's iteration; fit error 2.0e-3, tail
/// `g(3.3) = 1.6e-3`).
const G_GELU: [f64; 5] = [
    -0.000_309_845_405_441_153,
    0.531_587_009_681_382_2,
    -0.533_398_707_406_178_2,
    0.180_453_485_486_434_53,
    -0.020_495_012_073_635_55,
];
const T_GELU: f64 = 3.3;

/// GPT-2's `t - gelu_new(t)` on `[0, 3.3]`, degree 4 (fit 1.9e-3, tail 1.3e-3).
const G_GELU_NEW: [f64; 5] = [
    -0.000_393_198_237_727_289_55,
    0.531_611_337_577_27,
    -0.532_668_536_922_450_6,
    0.179_861_092_450_587,
    -0.020_384_405_934_767_88,
];

/// SiLU's `g(t) = t σ(-t)` near zero: `t in [0, 4]` read as `u = t/2 - 1 in [-1, 1]`,
/// degree 6 (minimax, Lawson's iteration; fit error 1.9e-4). Centred, so the coefficients are
/// below 0.25 and the evaluation's rounding is not amplified.
const G_SILU_NEAR: [f64; 7] = [
    0.238_420_627_748_374_44,
    -0.182_960_268_465_045_6,
    -0.100_494_801_964_068_78,
    0.228_454_950_898_418_44,
    -0.130_346_345_728_594_85,
    -0.009_331_633_746_114_78,
    0.028_392_940_229_634_39,
];
/// SiLU's `g` on `t in [4, 12]` read as `u = t/4 - 2 in [-1, 1]`, degree 4 (fit 5.5e-4, tail
/// `g(12) = 7.4e-5`).
const G_SILU_FAR: [f64; 5] = [
    0.002_827_579_564_816_209_6,
    -0.006_717_985_365_717_502,
    0.014_092_738_677_077_228,
    -0.028_673_291_350_916_782,
    0.019_088_965_679_364_203,
];
/// SiLU's pieces: `[0, SILU_NEAR)` and `[SILU_NEAR, SILU_T)` (`g = 0` beyond).
const SILU_NEAR: i64 = 4;
const SILU_T: i64 = 12;

/// `tanh` on `[0, 3]`, degree 4 (fit 6.9e-3, tail `1 - tanh 3 = 4.9e-3`).
const P_TANH: [f64; 5] = [
    -0.006_859_249_753_827_1,
    1.135_872_848_509_703_2,
    -0.414_007_403_348_802_37,
    0.036_538_426_618_044_06,
    0.004_205_940_203_089_094,
];
const T_TANH: f64 = 3.0;

/// PUMA's pieces.
const PUMA_F0: [f64; 4] = [
    -0.505_403_119_970_817_4,
    -0.422_265_811_519_838_66,
    -0.118_076_129_511_819_53,
    -0.011_034_134_030_615_728,
];
const PUMA_F1: [f64; 7] = [
    0.008_526_321_541_038_084,
    0.5,
    0.360_329_269_278_962_9,
    0.0,
    -0.037_688_200_365_904_236,
    0.0,
    0.001_806_746_260_614_118_7,
];

/// BumbleBee-style pieces (our fits: 1.5e-3 and 9.2e-3).
const BB_P3: [f64; 4] = [
    -0.385_764_124_048_536_3,
    -0.293_541_056_296_301,
    -0.073_584_460_638_479_34,
    -0.006_073_152_297_712_132,
];
const BB_P6: [f64; 7] = [
    0.009_225_984_684_578_057,
    0.5,
    0.357_911_561_958_123_85,
    0.0,
    -0.036_637_897_118_137_02,
    0.0,
    0.001_704_199_839_349_105,
];

/// BOLT's `P4(|x|)` (GELU ≈ `0.5 x + P4(|x|)` on `|x| <= 2.7`).
const BOLT_P4: [f64; 5] = [
    0.001_620_808_531_841_547,
    -0.037_981_646_127_141_54,
    0.541_055_016_636_838_1,
    -0.183_525_061_270_827_27,
    0.020_848_611_754_127_593,
];
const T_BOLT: f64 = 2.7;

/// Coefficient fractional bits.
const COEFF_FRAC: u32 = 11;

/// The exact GELU `x Φ(x)` (reference).
pub fn gelu_exact(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// GPT-2's `gelu_new` (reference).
pub fn gelu_new_exact(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044_715 * x * x * x)).tanh())
}

/// SiLU `x σ(x)` (reference).
pub fn silu_exact(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// `erf` (Abramowitz-Stegun 7.1.26 refined by one Newton step: error below 1e-12).
pub fn erf(x: f64) -> f64 {
    // series for small |x|, continued fraction complement for large |x|
    let a = x.abs();
    let v = if a < 2.5 {
        // Maclaurin series
        let mut term = a;
        let mut sum = a;
        let x2 = a * a;
        let mut n = 0.0;
        while term.abs() > 1e-17 * sum.abs() && n < 200.0 {
            n += 1.0;
            term *= -x2 / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // erfc by Lentz's continued fraction
        let x2 = a * a;
        let mut f = a;
        let mut c = a;
        let mut d = 0.0;
        for i in 1..300 {
            let an = i as f64 / 2.0;
            d = a + an * d;
            d = if d == 0.0 { 1e-300 } else { 1.0 / d };
            c = a + an / c;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 {
        -v
    } else {
        v
    }
}

// --- generic building blocks ------------------------------------------------------------------

fn ring(bits: u32) -> Result<Ring> {
    Ok(Ring::new(bits)?)
}

fn one<T>(mut v: Vec<T>) -> Result<T> {
    v.pop()
        .ok_or_else(|| ProtocolError::Protocol("empty batch".into()))
}

/// The two results of a batch of two.
fn two<T>(v: Vec<T>) -> Result<(T, T)> {
    let mut it = v.into_iter();
    match (it.next(), it.next()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(ProtocolError::Protocol("short batch".into())),
    }
}

/// `(b = MSB(x), ReLU(x), |x|)` with `ReLU` and `|x|` in the big ring.
fn sign_relu_abs<E: Exec>(e: &mut E, x: &E::T, fmt: ActFormat) -> Result<(E::B, E::T, E::T)> {
    let xm = e.reduce(x, ring(fmt.sign_bits())?)?;
    let b = one(e.msb(&[&xm])?)?;
    let nb = e.not(&b);
    let r = one(e.mux(&[&nb], &[x])?)?;
    let a = e.lin(&[(2, &r), (-1, x)], 0)?;
    Ok((b, r, a))
}

/// `v` (big ring, `fmt.frac` bits, `0 <= v < 2^range`) to ring `to` with `wf` fractional bits:
/// local reduction plus one known-sign truncation.
fn nonneg_to_work<E: Exec>(e: &mut E, v: &E::T, fmt: ActFormat, wf: u32, to: Ring) -> Result<E::T> {
    let need = fmt.range_bits + fmt.frac + 2;
    let mid = ring(need.max(to.bits()).clamp(Ring::MIN_BITS, fmt.ring.bits()))?;
    let vm = e.reduce(v, mid)?;
    let t = if fmt.frac > wf {
        // round to nearest: + 2^{k-1} (v + half stays below 2^{range+frac+1}, ring `mid`)
        let k = fmt.frac - wf;
        let vh = e.lin(&[(1, &vm)], 1i64 << (k - 1))?;
        one(e.trunc_nonneg(&[&vh], k)?)?
    } else {
        vm
    };
    if to.bits() < mid.bits() {
        Ok(e.reduce(&t, to)?)
    } else if to.bits() > mid.bits() {
        Ok(e.extend_nonneg(&t, to)?)
    } else {
        Ok(t)
    }
}

/// Signed `x` (big ring, `|x| < 2^range`) to ring `to` with `wf` fractional bits.
fn signed_to_work<E: Exec>(e: &mut E, x: &E::T, fmt: ActFormat, wf: u32, to: Ring) -> Result<E::T> {
    let ob = fmt.range_bits + fmt.frac;
    let off = 1i64 << ob;
    let shifted = e.lin(&[(1, x)], off)?;
    let f2 = ActFormat {
        range_bits: fmt.range_bits + 1,
        ..fmt
    };
    let t = nonneg_to_work(e, &shifted, f2, wf, to)?;
    let back = off >> fmt.frac.saturating_sub(wf);
    Ok(e.lin(&[(1, &t)], -back)?)
}

/// `z` (ring `from`, `wf` fractional bits, `z > -2^lo_bits` real) to the big ring with
/// `fmt.frac` bits: offset, known-sign extension (one COT), scale.
fn work_to_big<E: Exec>(
    e: &mut E,
    z: &E::T,
    wf: u32,
    lo_bits: u32,
    fmt: ActFormat,
) -> Result<E::T> {
    let off = 1i64 << (lo_bits + wf);
    let zo = e.lin(&[(1, z)], off)?;
    let ext = if e.ring_of(&zo).bits() < fmt.ring.bits() {
        e.extend_nonneg(&zo, fmt.ring)?
    } else {
        e.reduce(&zo, fmt.ring)?
    };
    if fmt.frac >= wf {
        let k = 1i64 << (fmt.frac - wf);
        Ok(e.lin(&[(k, &ext)], -(off * k))?)
    } else {
        Err(cfg_err("work precision above the format's"))
    }
}

/// Which activation, as the generic code sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Gelu(GeluApprox),
    GeluNew,
    Silu,
    Tanh,
}

/// The ring plan of an activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Rings {
    /// Comparison ring of the work value.
    cmp: Ring,
    /// Polynomial ring.
    poly: Ring,
}

/// `ReLU(x)` in the big ring (exact) and `t = |x|` at `wf` bits in the comparison and the
/// polynomial rings: the start of every Duet-form activation.
fn relu_and_work_abs<E: Exec>(
    e: &mut E,
    x: &E::T,
    fmt: ActFormat,
    wf: u32,
    rings: Rings,
) -> Result<(E::T, E::T, E::T)> {
    let (_, r, a) = sign_relu_abs(e, x, fmt)?;
    let wide = ring(rings.cmp.bits().max(rings.poly.bits()))?;
    let t = nonneg_to_work(e, &a, fmt, wf, wide)?;
    let tc = e.reduce(&t, rings.cmp)?;
    let tp = e.reduce(&t, rings.poly)?;
    Ok((r, tc, tp))
}

/// `ReLU(x) - 1{|x| < T} P(|x|)` (the Duet form; BOLT's formula is the same shape).
fn relu_minus<E: Exec>(
    e: &mut E,
    x: &E::T,
    fmt: ActFormat,
    p: &Poly,
    t_max: f64,
    wf: u32,
    rings: Rings,
) -> Result<E::T> {
    let (r, tc, tp) = relu_and_work_abs(e, x, fmt, wf, rings)?;
    let k = (t_max * (1u64 << wf) as f64).round() as i64;
    let d = e.lin(&[(1, &tc)], -k)?;
    let inside = one(e.msb(&[&d])?)?;
    let pv = p.eval(e, &tp)?;
    let z = one(e.mux(&[&inside], &[&pv])?)?;
    // z has p.frac() bits (wf, or more for a scaled variable)
    let zb = work_to_big(e, &z, p.frac(), 0, fmt)?;
    Ok(e.lin(&[(1, &r), (-1, &zb)], 0)?)
}

/// SiLU's two pieces of `g` ([`G_SILU_NEAR`] at `wf + 1` fractional bits, [`G_SILU_FAR`] at
/// `wf + 2`: the work value `t` read as `t/2` and `t/4`).
fn silu_polys(wf: u32) -> Result<[Poly; 2]> {
    Ok([
        Poly::new(
            &G_SILU_NEAR,
            PolyPlan::SexticBySquares,
            wf + 1,
            COEFF_FRAC,
            -1.0,
            1.0,
        )?,
        Poly::new(
            &G_SILU_FAR,
            PolyPlan::QuarticBySquares,
            wf + 2,
            COEFF_FRAC,
            -1.0,
            1.0,
        )?,
    ])
}

/// SiLU in the Duet form with `g` in two pieces: `ReLU(x) - (n (P_near - P_far) + i P_far)`
/// where `n = 1{t < 4}`, `i = 1{t < 12}` (`n` implies `i`, so the sum is `P_near` near zero,
/// `P_far` on `[4, 12)` and 0 beyond), `t = |x|` at `wf` bits. Both comparisons are one
/// batched MSB, both selections one batched mux; each piece reads `t` in its own centred
/// variable (a local shift of the same integer).
fn silu_two_piece<E: Exec>(
    e: &mut E,
    x: &E::T,
    fmt: ActFormat,
    wf: u32,
    rings: Rings,
) -> Result<E::T> {
    let [near, far] = silu_polys(wf)?;
    let (r, tc, tp) = relu_and_work_abs(e, x, fmt, wf, rings)?;
    let unit = 1i64 << wf;
    let dn = e.lin(&[(1, &tc)], -SILU_NEAR * unit)?;
    let di = e.lin(&[(1, &tc)], -SILU_T * unit)?;
    let (bn, bi) = two(e.msb(&[&dn, &di])?)?;
    // t/2 - 1 at wf + 1 bits and t/4 - 2 at wf + 2 bits: the same integer, shifted
    let un = e.lin(&[(1, &tp)], -(1i64 << (wf + 1)))?;
    let uf = e.lin(&[(1, &tp)], -(2i64 << (wf + 2)))?;
    let pn = near.eval(e, &un)?;
    let pf = far.eval(e, &uf)?;
    // both at wf + 2 bits
    let diff = e.lin(&[(2, &pn), (-1, &pf)], 0)?;
    let (zn, zf) = two(e.mux(&[&bn, &bi], &[&diff, &pf])?)?;
    let zs = e.lin(&[(1, &zn), (1, &zf)], 0)?;
    let zb = work_to_big(e, &zs, wf + 2, 0, fmt)?;
    Ok(e.lin(&[(1, &r), (-1, &zb)], 0)?)
}

fn poly_of(act: Act, wf: u32) -> Result<(Poly, f64)> {
    Ok(match act {
        Act::Gelu(GeluApprox::Duet) => (
            Poly::new(
                &G_GELU,
                PolyPlan::QuarticBySquares,
                wf,
                COEFF_FRAC,
                0.0,
                T_GELU,
            )?,
            T_GELU,
        ),
        Act::GeluNew => (
            Poly::new(
                &G_GELU_NEW,
                PolyPlan::QuarticBySquares,
                wf,
                COEFF_FRAC,
                0.0,
                T_GELU,
            )?,
            T_GELU,
        ),
        Act::Gelu(GeluApprox::Bolt) => {
            // g(t) = 0.5 t - P4(t)
            let mut c: Vec<f64> = BOLT_P4.iter().map(|a| -a).collect();
            if let Some(c1) = c.get_mut(1) {
                *c1 += 0.5;
            }
            (
                Poly::new(&c, PolyPlan::Powers, wf, COEFF_FRAC, 0.0, T_BOLT)?,
                T_BOLT,
            )
        }
        Act::Tanh => (
            Poly::new(
                &P_TANH,
                PolyPlan::QuarticBySquares,
                wf,
                COEFF_FRAC,
                0.0,
                T_TANH,
            )?,
            T_TANH,
        ),
        _ => return Err(cfg_err("no single polynomial for this approximation")),
    })
}

fn work_frac(act: Act) -> u32 {
    match act {
        Act::Gelu(a) => a.work_frac(),
        Act::GeluNew => 8,
        Act::Silu => 10,
        Act::Tanh => 10,
    }
}

fn piecewise_of(a: GeluApprox, wf: u32) -> Result<Piecewise> {
    let p = |c: &[f64], lo: f64, hi: f64| -> Result<Piece> {
        Ok(Piece::Poly(Poly::new(
            c,
            PolyPlan::Powers,
            wf,
            COEFF_FRAC,
            lo,
            hi,
        )?))
    };
    Ok(match a {
        GeluApprox::Puma => Piecewise::new(
            &[-4.0, -1.95, 3.0],
            vec![
                Piece::Zero,
                p(&PUMA_F0, -4.0, -1.95)?,
                p(&PUMA_F1, -1.95, 3.0)?,
                Piece::Identity,
            ],
            wf,
        )?,
        GeluApprox::BumbleBee => Piecewise::new(
            &[-5.0, -1.97, 3.0],
            vec![
                Piece::Zero,
                p(&BB_P3, -5.0, -1.97)?,
                p(&BB_P6, -1.97, 3.0)?,
                Piece::Identity,
            ],
            wf,
        )?,
        _ => return Err(cfg_err("not a piecewise approximation")),
    })
}

/// Piecewise GELU on `x` itself (PUMA, BumbleBee).
fn piecewise_gelu<E: Exec>(
    e: &mut E,
    x: &E::T,
    fmt: ActFormat,
    pw: &Piecewise,
    wf: u32,
    rings: Rings,
) -> Result<E::T> {
    let xw = signed_to_work(e, x, fmt, wf, rings.poly)?;
    let y = pw.eval(e, &xw)?;
    work_to_big(e, &y, wf, 0, fmt)
}

/// Iron-style: `0.5 x (1 + tanh(u))`, `u = √(2/π)(xc + 0.044715 xc^3)`, `xc = clip(x, ±4)`.
fn iron_gelu<E: Exec>(e: &mut E, x: &E::T, fmt: ActFormat, wf: u32, rings: Rings) -> Result<E::T> {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    let xw = signed_to_work(e, x, fmt, wf, rings.poly)?;
    let k = |v: f64| Poly::new(&[v], PolyPlan::Powers, wf, COEFF_FRAC, v, v);
    let clip = Piecewise::new(
        &[-4.0, 4.0],
        vec![Piece::Poly(k(-4.0)?), Piece::Identity, Piece::Poly(k(4.0)?)],
        wf,
    )?;
    let xc = clip.eval(e, &xw)?;
    let u = Poly::new(
        &[0.0, c, 0.0, c * 0.044_715],
        PolyPlan::Powers,
        wf,
        COEFF_FRAC,
        -4.0,
        4.0,
    )?
    .eval(e, &xc)?;
    // tanh(u) with the Duet tanh on the work ring (|u| <= 5.1)
    let (tp, _) = poly_of(Act::Tanh, wf)?;
    let b = one(e.msb(&[&u])?)?;
    let mu = one(e.mux(&[&b], &[&u])?)?;
    let t = e.lin(&[(1, &u), (-2, &mu)], 0)?;
    let kk = (T_TANH * (1u64 << wf) as f64).round() as i64;
    let d = e.lin(&[(1, &t)], -kk)?;
    let inside = one(e.msb(&[&d])?)?;
    let pv = tp.eval(e, &t)?;
    let one_w = 1i64 << wf;
    let pm1 = e.lin(&[(1, &pv)], -one_w)?;
    let z = one(e.mux(&[&inside], &[&pm1])?)?;
    let m = e.lin(&[(1, &z)], one_w)?; // |tanh u|
    let sm = one(e.mux(&[&b], &[&m])?)?;
    // 1 + tanh(u) = 1 + m - 2 b m
    let y = e.lin(&[(1, &m), (-2, &sm)], one_w)?;
    let prod = one(e.mul(&[&xw], &[&y])?)?; // x (1 + tanh u), 2 wf bits
                                            // 0.5 x (1 + tanh u): truncate by wf + 1 (|value| < 2^(range+1))
    let bound = (1u128 << (fmt.range_bits + 1 + 2 * wf)) as f64;
    let out = one(duet_mpc::fixed_math::poly::trunc_bounded(
        e,
        &[&prod],
        wf + 1,
        bound,
    )?)?;
    work_to_big(e, &out, wf, 0, fmt)
}

/// tanh: `m = 1 + 1{t < 3}(P(t) - 1)`, `tanh x = m - 2 b m`.
fn tanh_gen<E: Exec>(e: &mut E, x: &E::T, fmt: ActFormat, rings: Rings) -> Result<E::T> {
    let wf = work_frac(Act::Tanh);
    let (p, tmax) = poly_of(Act::Tanh, wf)?;
    // one bit above the sign ring: |x| plus the rounding half stays non-negative
    let xm = e.reduce(x, ring((fmt.sign_bits() + 1).min(fmt.ring.bits()))?)?;
    let b = one(e.msb(&[&xm])?)?;
    let mb = one(e.mux(&[&b], &[&xm])?)?;
    let a = e.lin(&[(1, &xm), (-2, &mb)], 0)?;
    let wide = ring(rings.cmp.bits().max(rings.poly.bits()))?;
    let f2 = ActFormat {
        ring: e.ring_of(&a),
        ..fmt
    };
    let t = nonneg_to_work(e, &a, f2, wf, wide)?;
    let tc = e.reduce(&t, rings.cmp)?;
    let tp = e.reduce(&t, rings.poly)?;
    let k = (tmax * (1u64 << wf) as f64).round() as i64;
    let d = e.lin(&[(1, &tc)], -k)?;
    let inside = one(e.msb(&[&d])?)?;
    let pv = p.eval(e, &tp)?;
    let one_w = 1i64 << wf;
    let pm1 = e.lin(&[(1, &pv)], -one_w)?;
    let z = one(e.mux(&[&inside], &[&pm1])?)?;
    let m = e.lin(&[(1, &z)], one_w)?;
    // the sign bit lives in the sign ring; the mux runs on the polynomial ring
    let sm = one(e.mux(&[&b], &[&m])?)?;
    let y = e.lin(&[(1, &m), (-2, &sm)], 0)?;
    work_to_big(e, &y, wf, 1, fmt)
}

fn run_act<E: Exec>(e: &mut E, x: &E::T, fmt: ActFormat, act: Act, rings: Rings) -> Result<E::T> {
    let wf = work_frac(act);
    match act {
        Act::Gelu(GeluApprox::Duet | GeluApprox::Bolt) | Act::GeluNew => {
            let (p, tmax) = poly_of(act, wf)?;
            relu_minus(e, x, fmt, &p, tmax, wf, rings)
        }
        Act::Silu => silu_two_piece(e, x, fmt, wf, rings),
        Act::Gelu(a @ (GeluApprox::Puma | GeluApprox::BumbleBee)) => {
            let pw = piecewise_of(a, wf)?;
            piecewise_gelu(e, x, fmt, &pw, wf, rings)
        }
        Act::Gelu(GeluApprox::Iron) => iron_gelu(e, x, fmt, wf, rings),
        Act::Tanh => tanh_gen(e, x, fmt, rings),
    }
}

/// Plaintext samples covering the approximation's domain and the declared input range.
fn samples(fmt: ActFormat) -> Vec<f64> {
    let r = (1u64 << fmt.range_bits) as f64;
    let mut v = grid(-8.5, 8.5, 3400);
    v.extend(grid(-r + 1e-3, r - 1e-3, 400));
    v
}

/// Whether `p` evaluates on a grid of `[lo, hi]` in `ring` without leaving it.
fn fits_on(b: &mut BoundsExec, ring: Ring, p: &Poly, lo: f64, hi: f64) -> bool {
    let xs = plain(ring, p.frac(), &grid(lo, hi, 2000));
    p.eval(b, &xs).is_ok()
}

/// Whether the approximation's core fits `rings` on its domain (outside its domain a piece's
/// value is arbitrary and selected away, so only the domain is checked; the conversions and
/// comparisons are sized analytically from the input range).
fn core_fits(fmt: ActFormat, act: Act, rings: Rings) -> Result<bool> {
    let wf = work_frac(act);
    let mut b = BoundsExec::new();
    let ok = match act {
        Act::Gelu(GeluApprox::Duet | GeluApprox::Bolt) | Act::GeluNew | Act::Tanh => {
            let (p, _) = poly_of(act, wf)?;
            let (lo, hi) = p.domain();
            fits_on(&mut b, rings.poly, &p, lo, hi + (hi - lo) * 0.02)
        }
        Act::Silu => silu_polys(wf)?
            .iter()
            .all(|p| fits_on(&mut b, rings.poly, p, -1.0, 1.02)),
        Act::Gelu(a @ (GeluApprox::Puma | GeluApprox::BumbleBee)) => {
            // each piece on its own domain, sized as in the shared evaluation
            let pw = piecewise_of(a, wf)?;
            let polys: Vec<&Poly> = pw
                .pieces()
                .iter()
                .filter_map(|p| match p {
                    Piece::Poly(q) => Some(q),
                    _ => None,
                })
                .collect();
            let xmax = polys
                .iter()
                .map(|q| q.domain().0.abs().max(q.domain().1.abs()))
                .fold(0.0, f64::max);
            let mut ok = true;
            for q in polys {
                let (lo, hi) = q.domain();
                let xs = plain(rings.poly, wf, &grid(lo, hi, 1000));
                ok &= eval_many_in(&mut b, &xs, &[q], xmax).is_ok();
            }
            ok
        }
        Act::Gelu(GeluApprox::Iron) => {
            let xs = plain(fmt.ring, fmt.frac, &samples(fmt));
            run_act(&mut b, &xs, fmt, act, rings).is_ok()
        }
    };
    Ok(ok && b.violations().is_empty())
}

/// Smallest rings in which every intermediate fits.
fn plan_rings(fmt: ActFormat, act: Act) -> Result<Rings> {
    let wf = work_frac(act);
    // the comparison ring holds t (or x) with wf bits plus a sign: range + wf + 2
    let cmp = ring((fmt.range_bits + wf + 2).max(Ring::MIN_BITS))?;
    for bits in cmp.bits()..=Ring::MAX_BITS {
        let rings = Rings {
            cmp,
            poly: ring(bits)?,
        };
        if core_fits(fmt, act, rings)? {
            return Ok(rings);
        }
    }
    Err(cfg_err(format!(
        "{act:?} does not fit Z_2^{} with {} fractional bits and inputs below 2^{}",
        fmt.ring.bits(),
        fmt.frac,
        fmt.range_bits
    )))
}

fn run_shares<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    fmt: ActFormat,
    act: Act,
) -> Result<AShare> {
    if x.ring() != fmt.ring {
        return Err(cfg_err(format!(
            "input in Z_2^{}, format says Z_2^{}",
            x.ring().bits(),
            fmt.ring.bits()
        )));
    }
    if x.is_empty() {
        return Ok(x.clone());
    }
    let rings = plan_rings(fmt, act)?;
    let mut e = ShareExec::new(s, ch);
    run_act(&mut e, x, fmt, act, rings)
}

fn cost_of(n: usize, fmt: ActFormat, act: Act, cfg: NlConfig) -> Result<Cost> {
    if n == 0 {
        return Ok(Cost::default());
    }
    let rings = plan_rings(fmt, act)?;
    let mut e = CostExec::new(cfg);
    run_act(&mut e, &Sym { ring: fmt.ring, n }, fmt, act, rings)?;
    Ok(e.cost())
}

/// What the secure protocol computes, in plaintext (fixed point, exact floors): for tests and
/// for the benchmarks' accuracy columns.
fn plain_of(xs: &[f64], fmt: ActFormat, act: Act) -> Result<Vec<f64>> {
    let rings = plan_rings(fmt, act)?;
    let mut b = BoundsExec::new();
    let y: Plain = run_act(&mut b, &plain(fmt.ring, fmt.frac, xs), fmt, act, rings)?;
    let sc = (1u64 << fmt.frac) as f64;
    Ok(y.v.iter().map(|v| v / sc).collect())
}

/// GELU of shared `x` (see the module documentation and [`GeluApprox`]).
/// Security: semi-honest, 128-bit. Cost: [`gelu_cost`].
pub fn gelu<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    fmt: ActFormat,
    approx: GeluApprox,
) -> Result<AShare> {
    run_shares(s, ch, x, fmt, Act::Gelu(approx))
}

/// Exact traffic of [`gelu`] on `n` elements (bytes exact, rounds an upper bound).
pub fn gelu_cost(n: usize, fmt: ActFormat, approx: GeluApprox, cfg: NlConfig) -> Result<Cost> {
    cost_of(n, fmt, Act::Gelu(approx), cfg)
}

/// The fixed-point function [`gelu`] computes, in plaintext (up to the one-ulp truncation
/// errors of the secure protocol).
pub fn gelu_plain(xs: &[f64], fmt: ActFormat, approx: GeluApprox) -> Result<Vec<f64>> {
    plain_of(xs, fmt, Act::Gelu(approx))
}

/// GPT-2's tanh-form GELU (`gelu_new`) by the Duet form with `g` fitted to it.
/// Security: semi-honest, 128-bit. Cost: [`gelu_new_cost`].
pub fn gelu_new<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    fmt: ActFormat,
) -> Result<AShare> {
    run_shares(s, ch, x, fmt, Act::GeluNew)
}

/// Exact traffic of [`gelu_new`].
pub fn gelu_new_cost(n: usize, fmt: ActFormat, cfg: NlConfig) -> Result<Cost> {
    cost_of(n, fmt, Act::GeluNew, cfg)
}

/// SiLU `x σ(x)` of shared `x` ([`SiluApprox`]).
/// Security: semi-honest, 128-bit. Cost: [`silu_cost`].
pub fn silu<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    fmt: ActFormat,
    approx: SiluApprox,
) -> Result<AShare> {
    let SiluApprox::Duet = approx;
    run_shares(s, ch, x, fmt, Act::Silu)
}

/// Exact traffic of [`silu`].
pub fn silu_cost(n: usize, fmt: ActFormat, approx: SiluApprox, cfg: NlConfig) -> Result<Cost> {
    let SiluApprox::Duet = approx;
    cost_of(n, fmt, Act::Silu, cfg)
}

/// tanh of shared `x` ([`TanhApprox`]): output in `[-1, 1]` with `fmt.frac` bits (8 of them
/// significant).
/// Security: semi-honest, 128-bit. Cost: [`tanh_cost`].
pub fn tanh<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    fmt: ActFormat,
    approx: TanhApprox,
) -> Result<AShare> {
    let TanhApprox::Duet = approx;
    run_shares(s, ch, x, fmt, Act::Tanh)
}

/// Exact traffic of [`tanh`].
pub fn tanh_cost(n: usize, fmt: ActFormat, approx: TanhApprox, cfg: NlConfig) -> Result<Cost> {
    let TanhApprox::Duet = approx;
    cost_of(n, fmt, Act::Tanh, cfg)
}

/// Plaintext fixed-point model of [`silu`], [`tanh`] and [`gelu_new`] (`which`: `"silu"`,
/// `"tanh"`, `"gelu_new"`).
pub fn act_plain(which: &str, xs: &[f64], fmt: ActFormat) -> Result<Vec<f64>> {
    let act = match which {
        "silu" => Act::Silu,
        "tanh" => Act::Tanh,
        "gelu_new" => Act::GeluNew,
        other => return Err(cfg_err(format!("unknown activation {other:?}"))),
    };
    plain_of(xs, fmt, act)
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_mpc::nonlinear::{CotCount, NlConfig};
    use duet_mpc::Prg;
    use duet_transport::{run_two_party, MemoryChannel, Role};

    /// Both parties after setup and a COT reservation of `need` (Ferret makes COTs ahead);
    /// returns both outputs and the measured online traffic (the only measuring helper here).
    fn two<T: Send>(
        cfg: NlConfig,
        need: CotCount,
        f: impl Fn(&mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        let party = |role: Role, mut ch: MemoryChannel| {
            let mut rng = Prg::from_seed([role.index() as u8 + 11; 32]);
            let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg).unwrap();
            s.reserve(&mut ch, need).unwrap();
            let before = ch.stats();
            let out = f(&mut s, &mut ch);
            (out, ch.stats() - before)
        };
        let ((a, sa), (b, sb)) =
            run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
        assert_eq!(sa.bytes_sent, sb.bytes_received);
        let c = Cost {
            bytes: sa.bytes_sent + sb.bytes_sent,
            rounds: sa.rounds + sb.rounds,
            ..Cost::default()
        };
        (a, b, c)
    }

    fn fmt() -> ActFormat {
        ActFormat::default_37()
    }

    /// Worst-case inputs: uniform on [-8, 8], BERT-like (normal, sd 2), the extremes of the
    /// declared range, zero, one ulp either side of zero and of every breakpoint.
    fn inputs(prg: &mut Prg, n: usize) -> Vec<f64> {
        let f = fmt();
        let ulp = 1.0 / (1u64 << f.frac) as f64;
        let r = (1u64 << f.range_bits) as f64;
        let u = |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let mut v = vec![0.0, ulp, -ulp, r - ulp, -r + ulp, 8.0, -8.0, 20.0, -20.0];
        for b in [2.7, 3.0, 3.3, 1.95, 1.97, 4.0, 5.0, 8.0, 12.0] {
            for s in [-1.0, 1.0] {
                v.extend([s * b, s * b + ulp, s * b - ulp]);
            }
        }
        while v.len() < n / 2 {
            v.push(16.0 * u(prg) - 8.0);
        }
        while v.len() < n {
            v.push(normal_sd2(prg));
        }
        v
    }

    /// A sample of N(0, 2^2) (Box-Muller), like BERT's GELU and LLaMA's SiLU inputs.
    fn normal_sd2(prg: &mut Prg) -> f64 {
        let u = |prg: &mut Prg| (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let (a, b) = (u(prg).max(1e-12), u(prg));
        2.0 * (-2.0 * a.ln()).sqrt() * (2.0 * std::f64::consts::PI * b).cos()
    }

    fn run_secure(
        xs: &[f64],
        cfg: NlConfig,
        cost: Cost,
        op: impl Fn(&mut NlSession, &mut MemoryChannel, &AShare) -> AShare + Sync,
    ) -> Vec<f64> {
        let f = fmt();
        let fp = f.fixed().unwrap();
        let enc = fp.encode_all(xs);
        let mut prg = Prg::from_seed([5; 32]);
        let (x0, x1) = AShare::share(f.ring, vec![xs.len()], &enc, &mut prg).unwrap();
        let (a, b, measured) = two(cfg, cost.cots, |s, ch| {
            let x = if s.role() == Role::Server { &x0 } else { &x1 };
            op(s, ch, x)
        });
        assert_eq!(measured.bytes, cost.bytes, "bytes against cost()");
        assert!(measured.rounds <= cost.rounds, "rounds against cost()");
        fp.decode_all(&a.reconstruct(&b).unwrap())
    }

    fn worst(xs: &[f64], ys: &[f64], exact: impl Fn(f64) -> f64) -> (f64, f64) {
        xs.iter()
            .zip(ys)
            .map(|(&x, &y)| ((y - exact(x)).abs(), x))
            .fold((0.0, 0.0), |a, b| if b.0 > a.0 { b } else { a })
    }

    #[test]
    fn fixed_point_models_meet_their_bounds() {
        let xs = {
            let mut v = grid(-8.0, 8.0, 8000);
            v.extend([127.9, -127.9, 30.0, -30.0]);
            v
        };
        for a in GeluApprox::ALL {
            let y = gelu_plain(&xs, fmt(), a).unwrap();
            let (e, at) = worst(&xs, &y, gelu_exact);
            assert!(e <= a.error_bound(), "{a:?}: {e} at {at}");
        }
        for (which, exact, bound) in [
            ("silu", silu_exact as fn(f64) -> f64, 1.5e-3),
            ("tanh", f64::tanh, 1.5e-2),
            ("gelu_new", gelu_new_exact, 1.0e-2),
        ] {
            let y = act_plain(which, &xs, fmt()).unwrap();
            let (e, at) = worst(&xs, &y, exact);
            assert!(e <= bound, "{which}: {e} at {at}");
        }
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
        assert!((erf(-3.0) + 0.999_977_909_503_001_4).abs() < 1e-12);
    }

    #[test]
    fn secure_gelu_every_preset_accuracy_and_cost() {
        let mut prg = Prg::from_seed([6; 32]);
        let xs = inputs(&mut prg, 1200);
        let cfg = NlConfig::iknp();
        for a in GeluApprox::ALL {
            let cost = gelu_cost(xs.len(), fmt(), a, cfg).unwrap();
            let y = run_secure(&xs, cfg, cost, |s, ch, x| gelu(s, ch, x, fmt(), a).unwrap());
            let (e, at) = worst(&xs, &y, gelu_exact);
            assert!(e <= a.error_bound(), "{a:?}: {e} at {at}");
        }
    }

    #[test]
    fn secure_duet_gelu_with_ferret_is_the_cheapest_at_its_accuracy() {
        let mut prg = Prg::from_seed([7; 32]);
        let xs = inputs(&mut prg, 600);
        let cfg = NlConfig::default();
        let cost = gelu_cost(xs.len(), fmt(), GeluApprox::Duet, cfg).unwrap();
        let y = run_secure(&xs, cfg, cost, |s, ch, x| {
            gelu(s, ch, x, fmt(), GeluApprox::Duet).unwrap()
        });
        let (e, at) = worst(&xs, &y, gelu_exact);
        assert!(e <= GeluApprox::Duet.error_bound(), "{e} at {at}");
        for a in GeluApprox::ALL {
            for c in [cfg, NlConfig::iknp()] {
                let duet = gelu_cost(100_000, fmt(), GeluApprox::Duet, c).unwrap();
                let other = gelu_cost(100_000, fmt(), a, c).unwrap();
                assert!(
                    duet.bytes <= other.bytes,
                    "{a:?}: {} > {}",
                    duet.bytes,
                    other.bytes
                );
            }
        }
    }

    /// SiLU's plaintext fixed-point model on inputs like an LLM's gate values (~ N(0, 2)):
    /// small and unbiased (a bias adds up coherently in the down projection).
    #[test]
    fn silu_error_is_small_and_unbiased() {
        let mut prg = Prg::from_seed([21; 32]);
        let xs: Vec<f64> = (0..20_000).map(|_| normal_sd2(&mut prg)).collect();
        let y = act_plain("silu", &xs, fmt()).unwrap();
        let errs: Vec<f64> = xs.iter().zip(&y).map(|(x, y)| y - silu_exact(*x)).collect();
        let n = errs.len() as f64;
        let max = errs.iter().fold(0.0f64, |m, e| m.max(e.abs()));
        let rms = (errs.iter().map(|e| e * e).sum::<f64>() / n).sqrt();
        let mean = errs.iter().sum::<f64>() / n;
        assert!(max <= 1.5e-3, "max {max}");
        assert!(rms <= 4e-4, "rms {rms}");
        assert!(mean.abs() <= 2e-4, "mean {mean}");
    }

    #[test]
    fn secure_silu_tanh_gelu_new() {
        let mut prg = Prg::from_seed([8; 32]);
        let xs = inputs(&mut prg, 800);
        let cfg = NlConfig::iknp();
        let n = xs.len();
        let c = silu_cost(n, fmt(), SiluApprox::Duet, cfg).unwrap();
        let y = run_secure(&xs, cfg, c, |s, ch, x| {
            silu(s, ch, x, fmt(), SiluApprox::Duet).unwrap()
        });
        let (e, at) = worst(&xs, &y, silu_exact);
        assert!(e <= 2e-3, "silu {e} at {at}");
        let c = tanh_cost(n, fmt(), TanhApprox::Duet, cfg).unwrap();
        let y = run_secure(&xs, cfg, c, |s, ch, x| {
            tanh(s, ch, x, fmt(), TanhApprox::Duet).unwrap()
        });
        let (e, at) = worst(&xs, &y, f64::tanh);
        assert!(e <= 1.5e-2, "tanh {e} at {at}");
        let c = gelu_new_cost(n, fmt(), cfg).unwrap();
        let y = run_secure(&xs, cfg, c, |s, ch, x| gelu_new(s, ch, x, fmt()).unwrap());
        let (e, at) = worst(&xs, &y, gelu_new_exact);
        assert!(e <= 1.0e-2, "gelu_new {e} at {at}");
    }

    #[test]
    #[ignore = "prints the ring plans (for the notes)"]
    fn print_models() {
        let xs = [
            1.0 / 4096.0,
            0.0,
            -1.0 / 4096.0,
            0.5,
            1.0,
            2.0,
            2.9,
            3.1,
            -0.5,
        ];
        for w in ["tanh", "silu", "gelu_new"] {
            let y = act_plain(w, &xs, fmt()).unwrap();
            println!("{w}: {y:?}");
        }
        for a in GeluApprox::ALL {
            println!("{a:?}: {:?}", plan_rings(fmt(), Act::Gelu(a)).unwrap());
        }
        println!("{:?}", plan_rings(fmt(), Act::Tanh).unwrap());
        println!("{:?}", plan_rings(fmt(), Act::Silu).unwrap());
    }

    #[test]
    fn formats_and_names() {
        assert!(ActFormat::new(Ring::new(20).unwrap(), 12, 7).is_err());
        assert!(ActFormat::new(Ring::new(37).unwrap(), 12, 7).is_ok());
        for a in GeluApprox::ALL {
            assert_eq!(GeluApprox::from_name(a.name()), Some(a));
        }
        assert_eq!(GeluApprox::from_name("nope"), None);
    }
}
