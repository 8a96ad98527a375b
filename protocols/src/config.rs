//! [`ProtocolConfig`]: every protocol choice of a secure run, typed, and the named presets that
//! reproduce published systems on Duet's building blocks.
//!
//! | preset | COTs / leaves | GELU | SoftMax (exp, reciprocal) | LayerNorm | element-wise products |
//! |---|---|---|---|---|---|
//! | `duet` | Ferret, random-OT leaves, radix 3 | [`GeluApprox::Duet`] | [`SoftmaxPreset::Duet`] | [`NormPreset::Duet`] | COT (Gilboa) |
//! | `iron` | IKNP, KK13 leaves, radix 4 | [`GeluApprox::Iron`] | [`SoftmaxPreset::Iron`] | [`NormPreset::Iron`] | COT (Gilboa) |
//! | `bolt` | IKNP, KK13 leaves, radix 4 | [`GeluApprox::Bolt`] | [`SoftmaxPreset::Bolt`] | [`NormPreset::Bolt`] | COT (Gilboa) |
//! | `bumblebee` | Ferret, random-OT leaves, radix 4 | [`GeluApprox::BumbleBee`] | [`SoftmaxPreset::BumbleBee`] | [`NormPreset::BumbleBee`] | COT (Gilboa) |
//! | `puma` | Ferret, random-OT leaves, radix 4 | [`GeluApprox::Puma`] | [`SoftmaxPreset::Puma`] | [`NormPreset::Puma`] | COT (Gilboa) |
//!
//! Deviations from the papers (documented where each approximation is defined): Iron's and
//! BOLT's OT is IKNP as in their code bases (EMP / SCI); PUMA is a three-party replicated-sharing
//! system, here only its approximations run, in our two-party setting; the linear layers of every
//! preset use Duet's HE matmul (the planner of issue 8 will choose per preset).

use crate::nonlinear::activation::{GeluApprox, SiluApprox, TanhApprox};
use crate::nonlinear::norm::NormPreset;
use crate::nonlinear::softmax::SoftmaxPreset;
use crate::{ProtocolError, Result};
use duet_mpc::nonlinear::{CotBackend, LeafOt, NlConfig};

/// A named protocol preset.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Preset {
    /// Duet's own choices: the fewest bytes at the stated accuracy.
    #[default]
    Duet,
    /// Iron (Hao et al., NeurIPS'22).
    Iron,
    /// BOLT (Pang et al., S&P'24).
    Bolt,
    /// BumbleBee (Lu et al., NDSS'25).
    BumbleBee,
    /// PUMA's approximations (Dong et al., 2023) in the two-party setting.
    Puma,
}

impl Preset {
    /// Every preset.
    pub const ALL: [Preset; 5] = [
        Preset::Duet,
        Preset::Iron,
        Preset::Bolt,
        Preset::BumbleBee,
        Preset::Puma,
    ];

    /// The `--protocol` name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Duet => "duet",
            Preset::Iron => "iron",
            Preset::Bolt => "bolt",
            Preset::BumbleBee => "bumblebee",
            Preset::Puma => "puma",
        }
    }

    /// The preset of a `--protocol` name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| {
                ProtocolError::Config(format!(
                    "unknown protocol preset {name:?}: expected duet, iron, bolt, bumblebee or puma"
                ))
            })
    }
}

/// The typed protocol choices of a run (both parties must use the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtocolConfig {
    /// The preset these choices came from (informational).
    pub preset: Preset,
    /// The OT-based building blocks: COT backend, millionaire radix and leaves, OT sender.
    pub nl: NlConfig,
    /// GELU approximation.
    pub gelu: GeluApprox,
    /// SiLU approximation (LLaMA).
    pub silu: SiluApprox,
    /// tanh approximation (GPT-2's `gelu_new`).
    pub tanh: TanhApprox,
    /// SoftMax exp / reciprocal variant and its ring widths.
    pub softmax: SoftmaxPreset,
    /// LayerNorm / RMSNorm variant and its ring widths.
    pub norm: NormPreset,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        Self::preset(Preset::Duet)
    }
}

impl ProtocolConfig {
    /// The choices of `preset` (see the module table).
    pub fn preset(preset: Preset) -> Self {
        let ferret = |radix| NlConfig {
            radix,
            leaf_ot: LeafOt::Rot,
            cot: CotBackend::default(),
            ..NlConfig::default()
        };
        let (nl, gelu, softmax, norm) = match preset {
            Preset::Duet => (
                NlConfig::default(),
                GeluApprox::Duet,
                SoftmaxPreset::Duet,
                NormPreset::Duet,
            ),
            Preset::Iron => (
                NlConfig::iknp(),
                GeluApprox::Iron,
                SoftmaxPreset::Iron,
                NormPreset::Iron,
            ),
            Preset::Bolt => (
                NlConfig::iknp(),
                GeluApprox::Bolt,
                SoftmaxPreset::Bolt,
                NormPreset::Bolt,
            ),
            Preset::BumbleBee => (
                ferret(4),
                GeluApprox::BumbleBee,
                SoftmaxPreset::BumbleBee,
                NormPreset::BumbleBee,
            ),
            Preset::Puma => (
                ferret(4),
                GeluApprox::Puma,
                SoftmaxPreset::Puma,
                NormPreset::Puma,
            ),
        };
        Self {
            preset,
            nl,
            gelu,
            silu: SiluApprox::Duet,
            tanh: TanhApprox::Duet,
            softmax,
            norm,
        }
    }

    /// The preset named `name` (`duet`, `iron`, `bolt`, `bumblebee`, `puma`).
    pub fn from_name(name: &str) -> Result<Self> {
        Ok(Self::preset(Preset::from_name(name)?))
    }

    /// The same choices with another COT backend (e.g. test parameters, or IKNP to compare).
    pub fn with_cot(mut self, cot: CotBackend) -> Self {
        self.nl.cot = cot;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_by_name_and_differ() {
        for p in Preset::ALL {
            let c = ProtocolConfig::from_name(p.name()).unwrap();
            assert_eq!(c.preset, p);
            assert!(c.nl.validate().is_ok());
        }
        assert!(ProtocolConfig::from_name("cheetah").is_err());
        assert_eq!(ProtocolConfig::default().gelu, GeluApprox::Duet);
        assert_eq!(
            ProtocolConfig::preset(Preset::Iron).nl.cot,
            CotBackend::Iknp
        );
        assert_ne!(
            ProtocolConfig::preset(Preset::Bolt).gelu,
            ProtocolConfig::preset(Preset::Puma).gelu
        );
    }
}
