//! [`SecureOptions`]: every public choice of a secure model run that both parties must share
//! (protocol variants, the per-operator [`Plan`], fixed-point formats and declared value ranges),
//! typed and serializable, so that the handshake, the reports and `duet bench table` exchange
//! the struct itself (never a printed form of it).

use crate::plan::Plan;
use crate::{ProtocolConfig, ProtocolError, Result};
use serde::{Deserialize, Serialize};

/// Version of the serialized [`SecureOptions`] (and of the session handshake that carries
/// them); a peer or a report with another version is refused by name.
pub const OPTIONS_VERSION: u32 = 4;

/// How the private embedding lookup runs (both hide the ids from the server and the table
/// from the client).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum EmbeddingMode {
    /// Client-key HE on the one-hot ids ([`crate::PrivateEmbedding`]): no cached state, the
    /// server touches the whole table per token.
    #[default]
    HeLookup,
    /// The table encrypted once under the server's key and sent to the client (reported as
    /// `cached`, once per session), then one small ciphertext per token
    /// ([`crate::ServerKeyEmbedding`]).
    ServerKey,
}

/// A public base model with private LoRA adapters: which base tensors carry an adapter and its
/// rank (public shapes; the adapters' values are the server's secret).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdapterLayout {
    /// `(base weight tensor, rank)`.
    pub ranks: Vec<(String, usize)>,
}

impl AdapterLayout {
    /// The rank of the adapter on base tensor `weight`, if it has one.
    pub fn rank(&self, weight: &str) -> Option<usize> {
        self.ranks
            .iter()
            .find(|(w, _)| w == weight)
            .map(|(_, r)| *r)
    }
}

/// The largest [`SecureOptions::max_inner`] accepted (the HE parameters allow at most
/// `64 N` accumulated terms).
pub const MAX_INNER: usize = 1 << 16;

/// Public fixed-point and range choices of a secure run (both parties the same).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SecureOptions {
    /// Protocol choices (preset): OT backend and approximation variants.
    pub protocol: ProtocolConfig,
    /// Per-operator layouts and backends.
    pub plan: Plan,
    /// The embedding lookup.
    pub embedding: EmbeddingMode,
    /// Ring width `l` of the activations and linear layers.
    pub ring_bits: u32,
    /// Fractional bits `f` of the activations.
    pub frac: u32,
    /// Fractional bits of the weights.
    pub weight_frac: u32,
    /// Weights (and embedding tables) satisfy `|w| < 2^weight_bits` as reals; larger ones
    /// are refused when the model is opened.
    pub weight_bits: u32,
    /// Activation inputs (GELU, SiLU) satisfy `|x| < 2^act_range_bits`.
    pub act_range_bits: u32,
    /// Normalisation inputs satisfy `|x| < 2^norm_in_bits`.
    pub norm_in_bits: u32,
    /// Norm scales satisfy `|gamma| < 2^gamma_bits`.
    pub gamma_bits: u32,
    /// Fractional bits of the attention logits fed to SoftMax.
    pub score_frac: u32,
    /// `Some`: the base model is public (both parties hold it) and only these adapters are
    /// private (LoRA mode); `None`: every weight is private.
    #[serde(default)]
    pub public_base: Option<AdapterLayout>,
    /// The largest inner dimension of the model's linear layers (0: unknown). Above the HE
    /// degree `N = 8192` (LLaMA-7B's feed-forward down projection has 11,008) the linear
    /// layers' parameters accumulate that many terms per output instead of `N` (their noise
    /// budget grows by `log2(max_inner / N)` bits); at or below `N` nothing changes.
    #[serde(default)]
    pub max_inner: usize,
}

impl Default for SecureOptions {
    fn default() -> Self {
        Self::new(ProtocolConfig::default())
    }
}

impl SecureOptions {
    /// The defaults for `protocol`: `l = 37`, `f = f_w = 12`, weights below 16, activation
    /// inputs below 64, normalisation inputs below 512 (all-MiniLM-L6-v2 reaches 221), norm
    /// scales below 8 (MiniLM's largest is 1.55; a wider bound needs a wider LayerNorm ring),
    /// logits with 10 fractional bits.
    pub fn new(protocol: ProtocolConfig) -> Self {
        Self {
            plan: Plan::for_preset(protocol.preset),
            protocol,
            embedding: EmbeddingMode::HeLookup,
            ring_bits: 37,
            frac: 12,
            weight_frac: 12,
            weight_bits: 4,
            act_range_bits: 6,
            norm_in_bits: 9,
            gamma_bits: 3,
            score_frac: 10,
            public_base: None,
            max_inner: 0,
        }
    }

    /// The narrowest ring the declared ranges allow:
    /// `frac + weight_frac + max(norm_in_bits, act_range_bits) + 2`.
    ///
    /// Values held at `frac + weight_frac` fractional bits before a rescaling (every linear
    /// layer's output, the attention scores before their truncation) must satisfy
    /// `|x| < 2^max(norm_in_bits, act_range_bits)`: the ranges declared for the activations'
    /// and norms' inputs, which most of those values feed, taken as the bound of all of them.
    /// The rescaling (a known-MSB truncation of the value offset by `2^(l-2)`) is exact for
    /// `|x| < 2^(l-2)` encoded: one bit for the sign and one for its non-negative offset. A
    /// narrower ring is refused.
    pub fn min_ring_bits(&self) -> u32 {
        self.frac + self.weight_frac + self.norm_in_bits.max(self.act_range_bits) + 2
    }

    /// Checks every field (the options may come from the peer or from a file).
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(ProtocolError::Config(format!("secure options: {m}")));
        if !(24..=62).contains(&self.ring_bits) {
            return bad(format!("ring of {} bits (24..=62)", self.ring_bits));
        }
        if self.frac > 30 || self.weight_frac > 30 || self.act_range_bits > 30 {
            return bad("fractional bits or ranges above 30".into());
        }
        if self.max_inner > MAX_INNER {
            return bad(format!(
                "an inner dimension of {} (at most {MAX_INNER})",
                self.max_inner
            ));
        }
        if self.norm_in_bits > 30 || self.score_frac > 60 {
            return bad("norm-input range or score precision out of range".into());
        }
        if self.ring_bits < self.min_ring_bits() {
            return bad(format!(
                "a ring of {} bits is narrower than the {} the declared ranges need \
                 (frac {} + weight frac {} + max(norm input {}, activation input {}) bits + 2)",
                self.ring_bits,
                self.min_ring_bits(),
                self.frac,
                self.weight_frac,
                self.norm_in_bits,
                self.act_range_bits
            ));
        }
        if self.frac + self.weight_frac + 10 > self.ring_bits || self.frac < 6 {
            return bad(format!(
                "{} + {} fractional bits in a {}-bit ring",
                self.frac, self.weight_frac, self.ring_bits
            ));
        }
        if self.weight_frac + self.weight_bits > 30
            || self.frac + self.weight_bits > 40
            || self.gamma_bits > 16
            || self.score_frac > 2 * self.frac
        {
            return bad("weight, norm-scale or score precision out of range".into());
        }
        self.protocol
            .nl
            .validate()
            .map_err(|e| ProtocolError::Config(format!("secure options: {e}")))?;
        if let Some(l) = &self.public_base {
            if l.ranks.len() > crate::plan::MAX_PLAN_ENTRIES
                || l.ranks
                    .iter()
                    .any(|(n, r)| n.len() > 256 || *r == 0 || *r > 4096)
            {
                return bad("an adapter layout out of range".into());
            }
        }
        self.plan.check()
    }
}

/// The fields in which two serializable values differ, as `path: ours vs theirs` (at most
/// `limit` of them): what a refusal names so that both sides see both values.
pub fn differences<T: Serialize>(ours: &T, theirs: &T, limit: usize) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(ours), serde_json::to_value(theirs)) else {
        return vec!["(values that cannot be shown)".into()];
    };
    let mut out = Vec::new();
    diff_values("", &a, &b, limit, &mut out);
    out
}

/// A value for a difference line: at most 80 characters, invisible ones escaped (one side's
/// values come from the peer).
fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        let head: String = s.chars().take(77).collect();
        format!("{}...", duet_transport::peer_text_max(head.as_bytes(), 77))
    } else {
        duet_transport::peer_text_max(s.as_bytes(), 80)
    }
}

fn diff_values(
    path: &str,
    a: &serde_json::Value,
    b: &serde_json::Value,
    limit: usize,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match y.get(k) {
                    Some(vb) => diff_values(&p, va, vb, limit, out),
                    None => out.push(format!("{p}: {} vs (absent)", short(va))),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) && out.len() < limit {
                    let k = duet_transport::peer_text_max(k.as_bytes(), 80);
                    out.push(format!("{path}.{k}: (absent) vs {}", short(vb)));
                }
            }
        }
        _ => out.push(format!(
            "{}: {} vs {}",
            if path.is_empty() { "value" } else { path },
            short(a),
            short(b)
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::Preset;

    #[test]
    fn options_round_trip_through_json_and_bincode_like_serde() {
        for p in Preset::ALL {
            let o = SecureOptions::new(ProtocolConfig::preset(p));
            o.check().unwrap();
            let s = serde_json::to_string(&o).unwrap();
            let back: SecureOptions = serde_json::from_str(&s).unwrap();
            assert_eq!(back, o);
        }
    }

    #[test]
    fn differences_name_the_field_and_both_values() {
        let a = SecureOptions::default();
        let mut b = a.clone();
        b.ring_bits = 40;
        b.protocol.gelu = crate::nonlinear::activation::GeluApprox::Puma;
        let d = differences(&a, &b, 10);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|l| l == "ring_bits: 37 vs 40"), "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("protocol.gelu:")), "{d:?}");
        assert!(differences(&a, &a, 10).is_empty());
    }

    #[test]
    fn a_ring_narrower_than_the_ranges_is_refused() {
        let mut o = SecureOptions::default();
        o.ring_bits = o.min_ring_bits() - 1;
        assert!(o.check().is_err());
        o.ring_bits = 63;
        assert!(o.check().is_err());
    }
}
