//! [`Plan`]: the per-operator protocol choices of a secure run that are not approximation
//! variants (those live in [`duet_protocols::ProtocolConfig`]): the HE matmul layout of each
//! linear layer and of the attention products, and the backend of element-wise products.
//!
//! Both parties must use the same plan (it is part of the handshake's public view). The
//! presets' plans ([`Plan::for_preset`]) reproduce their systems' choices on Duet's blocks;
//! the planner (`crate::planner`) picks a plan per network for the `duet` preset.

use duet_protocols::{LayoutPolicy, Preset};
use serde::{Deserialize, Serialize};

/// How an element-wise product of two shared tensors (LLaMA's gate) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MulBackend {
    /// Gilboa products from correlated OTs (two COT batches of `l` bits per element), then a
    /// truncation: few bytes per element for small tensors, no HE keys.
    #[default]
    Cot,
    /// Slot-encoded BFV products ([`duet_protocols::HeElementwiseMul`]): one flight each way,
    /// about 131 B per element at `l = 37` for large tensors, plus its own key setup the first
    /// time (counted in that node).
    He,
}

impl MulBackend {
    /// Report name.
    pub fn name(self) -> &'static str {
        match self {
            MulBackend::Cot => "cot",
            MulBackend::He => "he",
        }
    }
}

/// The per-operator choices of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The layout of every linear layer not listed in [`Plan::linear`].
    pub default_linear: LayoutPolicy,
    /// Per linear node (by graph node name), overriding [`Plan::default_linear`].
    pub linear: Vec<(String, LayoutPolicy)>,
    /// The layout of both attention products (`Q K^T`, `P V`).
    pub attention: LayoutPolicy,
    /// Element-wise products of two shared tensors.
    pub elementwise: MulBackend,
}

impl Default for Plan {
    fn default() -> Self {
        Self::for_preset(Preset::Duet)
    }
}

impl Plan {
    /// The fixed plan of `preset`:
    /// - `duet` (before planning), `bumblebee`, `puma`: the fewest-bytes layouts (BumbleBee's
    ///   interleaved output packing is what [`LayoutPolicy::MinBytes`] does; PUMA multiplies
    ///   locally on replicated shares in three-party MPC, which has no two-party counterpart,
    ///   so its preset uses the same HE products).
    /// - `iron`, `bolt`: [`LayoutPolicy::ExtractionOnly`], coefficient-encoded products whose
    ///   output ciphertexts are returned by extraction without packing, as in Iron (and
    ///   Cheetah). BOLT packs with slot encoding and rotations, which Duet does not implement;
    ///   its preset uses the same extraction-only layout (deviation, documented in the README).
    /// - element-wise products by COT in every preset.
    pub fn for_preset(preset: Preset) -> Self {
        let layout = match preset {
            Preset::Duet | Preset::BumbleBee | Preset::Puma => LayoutPolicy::MinBytes,
            Preset::Iron | Preset::Bolt => LayoutPolicy::ExtractionOnly,
        };
        Self {
            default_linear: layout,
            linear: Vec::new(),
            attention: layout,
            elementwise: MulBackend::Cot,
        }
    }

    /// The layout of linear node `node`.
    pub fn linear_policy(&self, node: &str) -> LayoutPolicy {
        self.linear
            .iter()
            .find(|(n, _)| n == node)
            .map_or(self.default_linear, |(_, p)| *p)
    }

    /// Sets the layout of linear node `node`.
    pub fn set_linear(&mut self, node: &str, policy: LayoutPolicy) {
        match self.linear.iter_mut().find(|(n, _)| n == node) {
            Some((_, p)) => *p = policy,
            None => self.linear.push((node.to_string(), policy)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_node_layouts_override_the_default() {
        let mut p = Plan::for_preset(Preset::Iron);
        assert_eq!(p.linear_policy("layer0.q"), LayoutPolicy::ExtractionOnly);
        p.set_linear("layer0.q", LayoutPolicy::MinBytes);
        p.set_linear("layer0.q", LayoutPolicy::MinBytes);
        assert_eq!(p.linear.len(), 1);
        assert_eq!(p.linear_policy("layer0.q"), LayoutPolicy::MinBytes);
        assert_eq!(p.linear_policy("layer0.k"), LayoutPolicy::ExtractionOnly);
        assert_eq!(Plan::default().attention, LayoutPolicy::MinBytes);
    }
}
