//! Regular-noise LPN parameters for Ferret, the vetted presets and the security check.
//!
//! One LPN instance ([`LpnParams`]) is `(n, k, t)` with `n = t · 2^h`: the code maps `k`
//! secret bits to `n` outputs, and the noise is regular, one nonzero position in each of the
//! `t` bins of `2^h` positions (a bin is one GGM tree of depth `h`). An iteration consumes
//! `k + t·h` base COTs ([`LpnParams::base_cots`]).
//!
//! Source of the presets: the parameter sets of the Ferret authors' implementation (emp-ot,
//! `emp-ot/ferret/constants.h`, `ferret_b13`, `ferret_b12`, `ferret_b11`), each a main
//! iteration plus the setup (bootstrapping) iteration that produces its first base COTs, chosen
//! for 128-bit security against the attacks analysed in Yang, Weng, Lan, Zhang, Wang (Ferret,
//! CCS 2020, Section 6, regular-LPN estimates). The main set of `ferret_b13` is the one with
//! `k = 452,000` and `t = 1,280` (`n = 1,280 · 8,192 = 10,485,760`).
//!
//! [`LpnParams::check_security`] refuses a set unless it is one of the vetted sets **and** it
//! passes the stated bound: the Pooled-Gauss attack (guess `k` noise-free coordinates and
//! solve; the attack that sets these parameters in the Ferret analysis), with the regular-noise
//! reduction `(n, k, t) → (n − t, k − t, t)`, costs
//! `log2 (1 − t/(n−t))^{−(k−t)} + 2.8 · log2 (k−t)` bits of work, which must be at least 128.

use crate::{MpcError, Result};

/// The computational security level required of every parameter set, in bits.
pub const SECURITY_BITS: f64 = 128.0;

/// Exponent of Gaussian elimination (Strassen) in the Pooled-Gauss estimate.
const GAUSS_EXPONENT: f64 = 2.8;

/// One regular-noise LPN instance: `n = t · 2^h` outputs, `k` secret bits, `t` noise bins of
/// `2^h` positions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LpnParams {
    /// Output length.
    pub n: usize,
    /// Secret (dimension) length.
    pub k: usize,
    /// Noise weight: the number of bins, one GGM tree each.
    pub t: usize,
    /// Depth of each GGM tree: a bin has `2^h` positions.
    pub h: u32,
}

impl LpnParams {
    /// Base COTs one iteration consumes: `k` for the LPN secret, `h` per tree.
    pub const fn base_cots(&self) -> usize {
        self.k + self.t * self.h as usize
    }

    /// Positions in one bin (leaves of one tree): `2^h`.
    pub const fn bin_size(&self) -> usize {
        1 << self.h
    }

    /// The Pooled-Gauss cost estimate in bits with the regular-noise reduction (see the module
    /// documentation); `0.0` for malformed sets.
    pub fn pooled_gauss_bits(&self) -> f64 {
        if self.t == 0 || self.k <= self.t || self.n <= self.k {
            return 0.0;
        }
        let (n, k, t) = (
            (self.n - self.t) as f64,
            (self.k - self.t) as f64,
            self.t as f64,
        );
        let per_sample = -(1.0 - t / n).log2();
        k * per_sample + GAUSS_EXPONENT * k.log2()
    }

    /// Structural constraints: `t ≥ 1`, `1 ≤ h ≤ 24`, `n = t · 2^h`, `0 < k < n`.
    pub fn check_shape(&self) -> Result<()> {
        let bad = |what: String| Err(MpcError::InvalidArgument { what });
        if self.t == 0 || self.h == 0 || self.h > 24 {
            return bad(format!(
                "LPN parameters {self:?}: need t >= 1 and 1 <= h <= 24"
            ));
        }
        if self.t.checked_mul(self.bin_size()) != Some(self.n) {
            return bad(format!("LPN parameters {self:?}: n must equal t * 2^h"));
        }
        if self.k == 0 || self.k >= self.n {
            return bad(format!("LPN parameters {self:?}: need 0 < k < n"));
        }
        Ok(())
    }

    /// Refuses the set unless it is well formed, in the vetted list ([`VETTED`]) and its
    /// Pooled-Gauss estimate reaches [`SECURITY_BITS`].
    pub fn check_security(&self) -> Result<()> {
        self.check_shape()?;
        let vetted = VETTED.iter().any(|f| f.main == *self || f.setup == *self);
        if !vetted {
            return Err(MpcError::InvalidArgument {
                what: format!(
                    "LPN parameters {self:?} are not a vetted 128-bit regular-LPN set \
                     (see ferret::params::VETTED)"
                ),
            });
        }
        let bits = self.pooled_gauss_bits();
        if bits < SECURITY_BITS {
            return Err(MpcError::InvalidArgument {
                what: format!(
                    "LPN parameters {self:?}: Pooled-Gauss estimate {bits:.1} bits < \
                     {SECURITY_BITS} bits"
                ),
            });
        }
        Ok(())
    }
}

/// A Ferret configuration: the main iteration and the setup iteration that bootstraps it (the
/// setup iteration runs once, on base COTs from IKNP, and its output holds the main
/// iteration's first `main.base_cots()` base COTs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FerretParams {
    main: LpnParams,
    setup: LpnParams,
}

/// The vetted sets (emp-ot `ferret_b13`, `ferret_b12`, `ferret_b11`).
pub const VETTED: [FerretParams; 3] = [FerretParams::B13, FerretParams::B12, FerretParams::B11];

impl FerretParams {
    /// emp-ot `ferret_b13`: main `n = 10,485,760, k = 452,000, t = 1,280` (trees of depth 13),
    /// setup `n = 470,016, k = 32,768, t = 918` (depth 9). About 10.0 million COTs per main
    /// iteration for 555,040 bytes. The default.
    pub const B13: Self = Self {
        main: LpnParams {
            n: 10_485_760,
            k: 452_000,
            t: 1_280,
            h: 13,
        },
        setup: LpnParams {
            n: 470_016,
            k: 32_768,
            t: 918,
            h: 9,
        },
    };

    /// emp-ot `ferret_b12`: main `n = 10,268,672, k = 238,000, t = 2,507` (depth 12), setup
    /// `n = 268,800, k = 17,384, t = 1,050` (depth 8).
    pub const B12: Self = Self {
        main: LpnParams {
            n: 10_268_672,
            k: 238_000,
            t: 2_507,
            h: 12,
        },
        setup: LpnParams {
            n: 268_800,
            k: 17_384,
            t: 1_050,
            h: 8,
        },
    };

    /// emp-ot `ferret_b11`: main `n = 10,180,608, k = 124,000, t = 4,971` (depth 11), setup
    /// `n = 178,944, k = 17,384, t = 699` (depth 8).
    pub const B11: Self = Self {
        main: LpnParams {
            n: 10_180_608,
            k: 124_000,
            t: 4_971,
            h: 11,
        },
        setup: LpnParams {
            n: 178_944,
            k: 17_384,
            t: 699,
            h: 8,
        },
    };

    /// A configuration from two sets, refused unless both pass
    /// [`LpnParams::check_security`], the setup output covers the main iteration's base COTs,
    /// and the main iteration produces more COTs than it consumes.
    pub fn new(main: LpnParams, setup: LpnParams) -> Result<Self> {
        let p = Self { main, setup };
        p.check()?;
        Ok(p)
    }

    /// Re-checks this configuration (see [`FerretParams::new`]).
    pub fn check(&self) -> Result<()> {
        self.main.check_security()?;
        self.setup.check_security()?;
        self.check_chain()
    }

    /// The bootstrapping constraints alone.
    fn check_chain(&self) -> Result<()> {
        if self.setup.n < self.main.base_cots() || self.main.n <= self.main.base_cots() {
            return Err(MpcError::InvalidArgument {
                what: format!(
                    "Ferret parameters {self:?}: the setup output ({}) must cover the main \
                     iteration's {} base COTs, and the main iteration must produce more",
                    self.setup.n,
                    self.main.base_cots()
                ),
            });
        }
        Ok(())
    }

    /// The main iteration's set.
    pub fn main(&self) -> LpnParams {
        self.main
    }

    /// The setup iteration's set.
    pub fn setup(&self) -> LpnParams {
        self.setup
    }

    /// COTs a main iteration adds to the pool: `n − k − t·h`.
    pub fn cots_per_iteration(&self) -> usize {
        self.main.n - self.main.base_cots()
    }

    /// Insecure small parameters for tests only (compiled only under `cfg(test)` or the
    /// `testing` feature, which only the crates' dev-dependencies enable; the CLI cannot reach
    /// it):
    /// main `n = 16,384, k = 2,048, t = 64, h = 8`, setup `n = 4,096, k = 512, t = 32, h = 7`.
    #[cfg(any(test, feature = "testing"))]
    pub fn insecure_for_tests() -> Self {
        Self {
            main: LpnParams {
                n: 16_384,
                k: 2_048,
                t: 64,
                h: 8,
            },
            setup: LpnParams {
                n: 4_096,
                k: 512,
                t: 32,
                h: 7,
            },
        }
    }
}

/// Ferret parameters travel (handshakes, reports) by name only: `b13`, `b12`, `b11`; a
/// deserialized value is always one of the vetted sets, so a peer or a file can never select
/// unvetted LPN parameters.
impl serde::Serialize for FerretParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match VETTED.iter().position(|v| v == self) {
            Some(i) => s.serialize_str(VETTED_NAMES.get(i).copied().unwrap_or("?")),
            None => Err(serde::ser::Error::custom(
                "only the vetted Ferret parameter sets can be serialized",
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for FerretParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        VETTED_NAMES
            .iter()
            .position(|n| *n == name)
            .and_then(|i| VETTED.get(i).copied())
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown Ferret parameter set {name:?} (expected b13, b12 or b11)"
                ))
            })
    }
}

/// The names of [`VETTED`], in order.
pub const VETTED_NAMES: [&str; 3] = ["b13", "b12", "b11"];

impl Default for FerretParams {
    /// [`FerretParams::B13`].
    fn default() -> Self {
        Self::B13
    }
}
