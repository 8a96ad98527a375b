//! The public parameters of a call derived by both parties: rings, widths, the sampling and
//! nucleus plans, and the client's Gumbel noise.

use super::{LogitFormat, TokenChoice, TOP_P_DEFAULT_K};
use crate::{ProtocolError, Result};
use duet_mpc::fixed_math::exp::{ExpMethod, ExpParams};
use duet_mpc::Ring;
use rand::{RngCore, SeedableRng};

/// Lower clamp of the client's Gumbel samples (the 53-bit sampler reaches -3.62).
const GUMBEL_LO: f64 = -3.7;
/// Upper clamp of the client's Gumbel samples (the 53-bit sampler reaches 37.43).
const GUMBEL_HI: f64 = 37.5;
/// Fractional bits of `p` in the nucleus target `p Z`.
pub(super) const P_BITS: u32 = 16;
/// Relative precision of `1/T` in the exp's input scaling: `round(2^s / T) >= 2^SCALE_BITS`.
const SCALE_BITS: i32 = 16;

/// Rings and widths of a call (public, both parties derive the same).
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) rows: usize,
    pub(super) vocab: usize,
    /// `|x| < 2^mag`.
    pub(super) mag: u32,
    /// The ring of the logit comparisons (`mag + 2` bits, at least 16).
    pub(super) lc: Ring,
    /// The input ring (narrower than `lc`: one signed extension first).
    pub(super) input: Ring,
}

impl Plan {
    pub(super) fn new(rows: usize, vocab: usize, fmt: &LogitFormat) -> Result<Self> {
        fmt.validate()?;
        if vocab == 0 || vocab > u32::MAX as usize {
            return Err(ProtocolError::Config(format!(
                "token choice over a vocabulary of {vocab} (need 1..=2^32-1)"
            )));
        }
        let mag = fmt.magnitude_bits();
        Ok(Self {
            rows,
            vocab,
            mag,
            lc: ring_of(mag + 2)?,
            input: fmt.ring,
        })
    }

    pub(super) fn n(&self) -> usize {
        self.rows * self.vocab
    }

    /// Bits of the offset logits `x + 2^mag`.
    pub(super) fn w(&self) -> u32 {
        self.mag + 1
    }
}

/// The sampling part of a plan.
#[derive(Clone, Copy, Debug)]
pub(super) struct SamplePlan {
    /// The temperature `T` (the noise is `round(T (g - mid) 2^f)`).
    pub(super) temperature: f64,
    /// Noisy logits lie in `(-2^{ws-1}, 2^{ws-1})`; masked ones are `-2^{ws-1}`.
    pub(super) ws: u32,
    /// Their ring (`ws + 1` bits, at least 16).
    pub(super) ls: Ring,
    /// Top-k when it restricts (`k < V`), with the count ring.
    pub(super) top_k: Option<(u64, Ring)>,
    /// Top-p when it restricts (`p < 1`).
    pub(super) top_p: Option<TopP>,
}

/// The nucleus part of a plan.
#[derive(Clone, Copy, Debug)]
pub(super) struct TopP {
    /// `round(p 2^P_BITS)`.
    pub(super) p_q: u64,
    /// `round(2^s / T)`.
    pub(super) scale: u64,
    /// Fractional bits of the exp's input (`f + s`).
    pub(super) f_in: u32,
    /// The exp's parameters.
    pub(super) exp: ExpParams,
    /// The exp's ring.
    pub(super) le: Ring,
    /// The ring of the masses.
    pub(super) lm: Ring,
    /// The ring of the per-row product `p Z`.
    pub(super) lz: Ring,
}

fn ring_of(bits: u32) -> Result<Ring> {
    if bits > Ring::MAX_BITS {
        return Err(ProtocolError::Config(format!(
            "token choice needs a {bits}-bit ring (at most 64): narrow the declared range or \
             the temperature"
        )));
    }
    Ok(Ring::new(bits.max(Ring::MIN_BITS))?)
}

/// Bits of `x` (`x < 2^bits`).
fn bit_len(x: u64) -> u32 {
    u64::BITS - x.leading_zeros()
}

impl SamplePlan {
    pub(super) fn new(p: &Plan, fmt: &LogitFormat, choice: &TokenChoice) -> Result<Self> {
        let TokenChoice::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = choice
        else {
            return Err(ProtocolError::Config("not a sampling choice".into()));
        };
        let t = *temperature;
        let nmax = noise_bound(t, fmt.frac)?;
        let vmax = (1u64 << p.mag) + nmax;
        let ws = bit_len(vmax - 1) + 1;
        let ls = ring_of(ws + 1)?;
        let v = p.vocab as u64;
        let pv = top_p.filter(|&x| x < 1.0);
        let k = top_k.or(pv.map(|_| TOP_P_DEFAULT_K)).map(|k| k as u64);
        let count = ring_of(bit_len(v) + 1)?;
        let top_k = k.filter(|&k| k < v).map(|k| (k, count));
        let top_p = match pv {
            Some(pv) => Some(TopP::new(p, fmt, t, pv)?),
            None => None,
        };
        Ok(Self {
            temperature: t,
            ws,
            ls,
            top_k,
            top_p,
        })
    }

    pub(super) fn filters(&self) -> bool {
        self.top_k.is_some() || self.top_p.is_some()
    }
}

impl TopP {
    fn new(p: &Plan, fmt: &LogitFormat, t: f64, pv: f64) -> Result<Self> {
        // the row sum of the masses stays positive: the max's e = 1 outweighs one negative
        // ulp of rounding on every other logit
        let fe = if p.vocab <= 7 << 13 {
            16
        } else {
            bit_len(p.vocab as u64) + 1
        };
        let lm = ring_of(fe + bit_len(p.vocab as u64) + 2)?;
        // s >= 0 with round(2^s / T) >= 2^SCALE_BITS
        let s = (SCALE_BITS + t.log2().ceil() as i32).max(0) as u32;
        let scale = (2f64.powi(s as i32) / t).round();
        if !(1.0..(1u64 << 40) as f64).contains(&scale) {
            return Err(ProtocolError::Config(format!(
                "top-p at temperature {t}: the scaling by 1/T does not fit"
            )));
        }
        let scale = scale as u64;
        let f_in = fmt.frac + s;
        // |y| = (max - x) scale < 2^{mag + 1 + bits(scale)} <= 2^{le - 2}; the table exp
        // needs f_in + 6 <= le and F + 6 <= le
        let le = ring_of(
            (p.mag + 3 + bit_len(scale))
                .max(f_in + 6)
                .max(fe + 6)
                .max(lm.bits()),
        )?;
        let lz = ring_of(lm.bits() + P_BITS + 1)?;
        Ok(Self {
            p_q: (pv * f64::from(1u32 << P_BITS)).round() as u64,
            scale,
            f_in,
            exp: ExpParams {
                method: ExpMethod::DUET_LUT,
                frac: fe,
            },
            le,
            lm,
            lz,
        })
    }
}

/// `ceil(T (GUMBEL_HI - GUMBEL_LO) / 2 2^f) + 1`: the largest noise magnitude.
fn noise_bound(t: f64, frac: u32) -> Result<u64> {
    let b = (t * (GUMBEL_HI - GUMBEL_LO) / 2.0 * 2f64.powi(frac as i32)).ceil() + 1.0;
    if !(b.is_finite() && b < 2f64.powi(60)) {
        return Err(ProtocolError::Config(format!(
            "sampling temperature {t}: the Gumbel noise does not fit a 64-bit ring"
        )));
    }
    Ok(b as u64)
}

/// The client's Gumbel noise, `round(T (g - mid) 2^f)` for `n` draws from `seed`
/// (`mid` the centre of the clamp interval; see the module documentation).
pub(super) fn gumbel_noise(seed: u64, n: usize, t: f64, frac: u32) -> Vec<i64> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let mid = (GUMBEL_HI + GUMBEL_LO) / 2.0;
    let scale = t * 2f64.powi(frac as i32);
    (0..n)
        .map(|_| {
            let k = rng.next_u64() >> 11;
            let u = (k as f64 + 0.5) / (1u64 << 53) as f64;
            // -ln u, accurate near u = 1 too
            let nl = if u < 0.5 {
                -u.ln()
            } else {
                -(-(1.0 - u)).ln_1p()
            };
            let g = (-nl.ln()).clamp(GUMBEL_LO, GUMBEL_HI);
            ((g - mid) * scale).round() as i64
        })
        .collect()
}

/// The plans of a call, for the tests of the submodules.
#[cfg(test)]
pub(super) fn plans(
    rows: usize,
    vocab: usize,
    fmt: &LogitFormat,
    choice: &TokenChoice,
) -> (Plan, Option<SamplePlan>) {
    let p = Plan::new(rows, vocab, fmt).unwrap();
    let sp = SamplePlan::new(&p, fmt, choice).ok();
    (p, sp)
}

#[cfg(test)]
mod tests {
    use super::super::choose_token_cost;
    use super::*;
    use duet_mpc::nonlinear::NlConfig;

    #[test]
    fn gumbel_noise_is_bounded_and_gumbel() {
        let n = 200_000;
        let g = gumbel_noise(7, n, 1.0, 12);
        let b = noise_bound(1.0, 12).unwrap() as i64;
        assert!(g.iter().all(|&x| x.abs() <= b));
        // mean of the standard Gumbel: Euler's gamma
        let mid = (GUMBEL_HI + GUMBEL_LO) / 2.0;
        let mean = g.iter().map(|&x| x as f64 / 4096.0 + mid).sum::<f64>() / n as f64;
        assert!((mean - 0.577_215_664_9).abs() < 0.01, "{mean}");
        // P(g <= 0) = exp(-1)
        let below = g
            .iter()
            .filter(|&&x| (x as f64) / 4096.0 + mid <= 0.0)
            .count() as f64;
        assert!((below / n as f64 - (-1f64).exp()).abs() < 0.005);
    }

    #[test]
    fn plans_and_validation() {
        let fmt = LogitFormat::new(Ring::new(37).unwrap(), 12, 6).unwrap();
        let (p, _) = plans(1, 49_152, &fmt, &TokenChoice::Greedy);
        assert_eq!((p.mag, p.lc.bits()), (18, 20));
        let choice = TokenChoice::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(0.9),
            seed: 1,
        };
        let (_, sp) = plans(1, 49_152, &fmt, &choice);
        let sp = sp.unwrap();
        // 2^18 + 20.6 * 4096 < 2^19: 20 bits, ring of 21
        assert_eq!((sp.ws, sp.ls.bits()), (20, 21));
        assert_eq!(sp.top_k.map(|k| k.0), Some(64));
        assert!(sp.top_p.is_some());
        for bad in [
            TokenChoice::Sample {
                temperature: 0.0,
                top_k: None,
                top_p: None,
                seed: 0,
            },
            TokenChoice::Sample {
                temperature: f64::NAN,
                top_k: None,
                top_p: None,
                seed: 0,
            },
            TokenChoice::Sample {
                temperature: 1.0,
                top_k: Some(0),
                top_p: None,
                seed: 0,
            },
            TokenChoice::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(1.5),
                seed: 0,
            },
            TokenChoice::Sample {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.0),
                seed: 0,
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
            assert!(choose_token_cost(1, 10, &fmt, &bad, NlConfig::default()).is_err());
        }
        assert!(LogitFormat::new(Ring::new(64).unwrap(), 30, 31).is_err());
        assert!(LogitFormat::new(Ring::new(16).unwrap(), 15, 0).is_err());
    }
}
