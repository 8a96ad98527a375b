//! [`Plan`]: the per-operator protocol choices of a secure run that are not approximation
//! variants (those live in [`crate::ProtocolConfig`]): for each linear layer and for
//! the attention products, HE (with its matmul layout) or OT-based products, and the backend
//! of element-wise products.
//!
//! Both parties must use the same plan (it is part of the handshake's public view). The
//! presets' plans ([`Plan::for_preset`]) reproduce their systems' choices on Duet's blocks;
//! the planner (`duet_models::planner`) picks a plan per network for the `duet` preset.

use crate::{LayoutPolicy, Preset, ProtocolError, Result};
use serde::{Deserialize, Serialize};

/// How an element-wise product of two shared tensors (LLaMA's gate) runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MulBackend {
    /// Gilboa products from correlated OTs (two COT batches of `l` bits per element), then a
    /// truncation: few bytes per element for small tensors, no HE keys.
    #[default]
    Cot,
    /// Slot-encoded BFV products ([`crate::HeElementwiseMul`]): one flight each way,
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

/// Where the keys and values of generation live between steps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KvCacheMode {
    /// Additive shares at both parties; every step's attention products run over the whole
    /// cache with [`Plan::attention`]'s shared products (re-encrypting it each step).
    #[default]
    Shares,
    /// Shares plus each party's value rows encrypted at the peer ([`crate::HeKvCache`]): a
    /// step sends one fresh ciphertext per party and answers that grow slowly with the
    /// context (used for generation only; a walk without a cache uses the shared products).
    Encrypted(crate::KvPolicy),
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
    /// Linear nodes whose product runs by correlated OT instead of HE
    /// ([`duet_mpc::nonlinear::matmul_known_holder`]: the server's weight rows are the OT
    /// correlations, the client's share bits choose; `n d l` COTs and `n d k l(l+1)/16` bytes,
    /// no HE): their layout is then unused.
    pub ot_linear: Vec<String>,
    /// Whether the attention products (`Q K^T`, `P V`) run by correlated OT
    /// ([`duet_mpc::nonlinear::matmul_shared`], both cross terms) instead of HE.
    pub attention_ot: bool,
    /// Whether HE linear layers run with split packing ([`crate::HeLinear`]: key switches on
    /// the input side, parameters with orbits and packing up to 128
    /// column blocks) instead of [`crate::HeMatMul`]: the same bytes for a
    /// layout, far fewer key switches; the session's linear keys then include the extra
    /// Galois keys.
    #[serde(default)]
    pub linear_orbits: bool,
    /// The KV cache of generation.
    #[serde(default)]
    pub kv_cache: KvCacheMode,
}

/// Most nodes a plan may name.
pub const MAX_PLAN_ENTRIES: usize = 100_000;

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
    /// - element-wise products by COT in every preset; every matrix product by HE (Iron, BOLT,
    ///   BumbleBee and Cheetah-style systems all use lattice HE for them).
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
            ot_linear: Vec::new(),
            attention_ot: false,
            linear_orbits: false,
            kv_cache: KvCacheMode::Shares,
        }
    }

    /// Checks the plan's size (it may come from the peer or a file): at most
    /// [`MAX_PLAN_ENTRIES`] named nodes, names of at most 256 bytes. Whether the names are
    /// nodes of the model is checked against the graph by the model walk.
    pub fn check(&self) -> Result<()> {
        let names = self
            .linear
            .iter()
            .map(|(n, _)| n)
            .chain(&self.ot_linear)
            .collect::<Vec<_>>();
        if names.len() > MAX_PLAN_ENTRIES {
            return Err(ProtocolError::Config(format!(
                "the plan names {} nodes (at most {MAX_PLAN_ENTRIES})",
                names.len()
            )));
        }
        if let Some(n) = names.iter().find(|n| n.len() > 256) {
            return Err(ProtocolError::Config(format!(
                "the plan names a node of {} bytes (at most 256)",
                n.len()
            )));
        }
        Ok(())
    }

    /// Every node the plan names.
    pub fn named_nodes(&self) -> impl Iterator<Item = &str> {
        self.linear
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(self.ot_linear.iter().map(String::as_str))
    }

    /// Whether linear nodes `nodes` (sharing an input) run as one fused split-packing product:
    /// [`Plan::linear_orbits`] is set and none of them runs by OT.
    pub fn fuses_linear(&self, nodes: &[&str]) -> bool {
        self.linear_orbits && nodes.iter().all(|n| !self.linear_by_ot(n))
    }

    /// Whether linear node `node` runs by OT (else by HE with [`Plan::linear_policy`]).
    pub fn linear_by_ot(&self, node: &str) -> bool {
        self.ot_linear.iter().any(|n| n == node)
    }

    /// Runs linear node `node` by OT (`true`) or by HE (`false`).
    pub fn set_linear_ot(&mut self, node: &str, ot: bool) {
        self.ot_linear.retain(|n| n != node);
        if ot {
            self.ot_linear.push(node.to_string());
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

    #[test]
    fn ot_linear_nodes_are_listed_once() {
        let mut p = Plan::default();
        assert!(!p.linear_by_ot("layer0.q"));
        p.set_linear_ot("layer0.q", true);
        p.set_linear_ot("layer0.q", true);
        assert_eq!(p.ot_linear.len(), 1);
        assert!(p.linear_by_ot("layer0.q") && !p.linear_by_ot("layer0.k"));
        p.set_linear_ot("layer0.q", false);
        assert!(!p.linear_by_ot("layer0.q") && p.ot_linear.is_empty());
    }
}
