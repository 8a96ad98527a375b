//! How both parties derive a session's options ([`RunConfig`], the family's declared ranges)
//! and the handshake that checks they agree ([`Hello`]).

use super::{proto, transport};
use crate::graph::Graph;
use crate::planner::{plan, AccuracyBudget};
use crate::{ModelConfig, ModelError, Result};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{differences, ProtocolConfig, SecureOptions, OPTIONS_VERSION};
use duet_transport::relay::NetProfile;
use duet_transport::Channel;
use serde::{Deserialize, Serialize};

/// How both parties derive the run's [`SecureOptions`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Protocol preset: `duet`, `iron`, `bolt`, `bumblebee`, `puma`.
    pub protocol: String,
    /// The plan: the preset's fixed choices, or the planner's for a network.
    pub plan: PlanMode,
    /// LoRA mode: the public layout of the server's adapters over a public base model
    /// ([`SecureOptions::public_base`]); `None`: every weight is private. A client that holds
    /// the base but not the adapters learns the layout from the server in the handshake.
    #[serde(default)]
    pub adapter: Option<duet_protocols::AdapterLayout>,
}

/// Where the per-operator choices come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlanMode {
    /// The preset's fixed choices.
    Fixed,
    /// The planner's choices for this network (`lan`, `wan`, ...), on the shipped machine
    /// profile (only the `duet` preset is planned; other presets keep their fixed choices).
    Planned {
        /// The network profile's name.
        net: String,
    },
    /// These options exactly (experiments and tests: both parties are given the same).
    Given(Box<SecureOptions>),
}

impl RunConfig {
    /// `protocol` with its fixed choices.
    pub fn fixed(protocol: &str) -> Self {
        Self {
            protocol: protocol.into(),
            plan: PlanMode::Fixed,
            adapter: None,
        }
    }

    /// `protocol` planned for network `net`.
    pub fn planned(protocol: &str, net: &str) -> Self {
        Self {
            protocol: protocol.into(),
            plan: PlanMode::Planned { net: net.into() },
            adapter: None,
        }
    }

    /// Exactly `opts` (its preset's name as the protocol).
    pub fn given(opts: &SecureOptions) -> Self {
        Self {
            protocol: opts.protocol.preset.name().into(),
            plan: PlanMode::Given(Box::new(opts.clone())),
            adapter: opts.public_base.clone(),
        }
    }

    /// The plan's name in reports: `fixed`, `planned for NET` or `given`.
    pub fn plan_name(&self) -> String {
        match &self.plan {
            PlanMode::Fixed => "fixed".into(),
            PlanMode::Planned { net } => format!("planned for {net}"),
            PlanMode::Given(_) => "given".into(),
        }
    }

    /// The options before planning: the preset's (or the given ones) with the model family's
    /// declared ranges. The ranges, fixed point and embedding mode are those of every plan.
    pub fn base_options(&self, graph: &Graph) -> Result<SecureOptions> {
        if let PlanMode::Given(o) = &self.plan {
            o.check().map_err(proto)?;
            let mut o = o.as_ref().clone();
            if let Some(l) = &self.adapter {
                crate::lora::check_layout(l, graph)?;
                o.public_base = Some(l.clone());
            }
            return Ok(o);
        }
        let protocol = ProtocolConfig::from_name(&self.protocol).map_err(proto)?;
        let mut base = declared_ranges(SecureOptions::new(protocol), &graph.config);
        if graph.logits.is_some() && protocol.preset == duet_protocols::Preset::Duet {
            // a decoder looks up one token per decode step: the table encrypted once under
            // the server's key (cached by the client) costs a small ciphertext per token,
            // where the client-key lookup makes the server touch the whole table every step
            base.embedding = duet_protocols::EmbeddingMode::ServerKey;
            // one-row products: split packing keeps the key switches of a linear layer to
            // a few per input ciphertext; the keys and values stay encrypted at the peer, so
            // a step sends one fresh ciphertext per party instead of the whole cache
            base.plan.linear_orbits = true;
            // (the Gaussian kernel needs the keys themselves for their norms: shared cache)
            if graph.config.attention_kernel == duet_protocols::AttentionKernel::Softmax {
                base.plan.kv_cache =
                    duet_protocols::KvCacheMode::Encrypted(duet_protocols::KvPolicy::default());
            }
        }
        if let Some(l) = &self.adapter {
            crate::lora::check_layout(l, graph)?;
            base.public_base = Some(l.clone());
        }
        Ok(base)
    }

    /// The options for `graph` and a run of `seq` tokens, with the planner's decisions when
    /// planned (both parties compute the same: the planner is deterministic).
    pub fn options(
        &self,
        graph: &Graph,
        seq: usize,
    ) -> Result<(SecureOptions, Vec<crate::planner::Decision>)> {
        let base = self.base_options(graph)?;
        let protocol = base.protocol;
        match &self.plan {
            PlanMode::Planned { net } if protocol.preset == duet_protocols::Preset::Duet => {
                let net = NetProfile::by_name(net)
                    .map_err(|e| ModelError::Input(format!("network {net:?}: {e}")))?;
                let profile = MachineProfile::default_profile().map_err(proto)?;
                let run = plan(
                    graph,
                    seq,
                    &base,
                    &net,
                    &profile,
                    &AccuracyBudget::default(),
                )?;
                Ok((run.opts, run.decisions))
            }
            _ => Ok((base, Vec::new())),
        }
    }
}

/// The value ranges a model family declares (public: both parties derive them from the
/// model's public config), with the ring widened to hold them plus one bit of headroom.
///
/// LLaMA-family decoders carry "massive activations" in a few residual channels (mostly at the
/// first position): SmolLM2-135M-Instruct's residual stream reaches 24,926 and its FFN's
/// down-projection inputs 3,065 on the reference prompts (README, value ranges), so their
/// normalisation inputs and linear outputs are declared below `2^15` and the activations'
/// inputs below `2^7` (SiLU inputs reach 50). Their activations and weights carry 14
/// fractional bits instead of 12: 30 layers amplify every rounding, and SmolLM2's top-10
/// logits after reference prompt 7 were off by 0.05-0.13 with `f = 13, f_w = 12` (after the
/// two-piece SiLU; 0.05-0.20 before it), by 0.02-0.07 at 14 and 14 (six runs; two bits more
/// in the ring, 3.5% more bytes). Encoders and GPT-2 keep the defaults (MiniLM's largest
/// normalisation input is 221).
pub fn declared_ranges(mut opts: SecureOptions, config: &ModelConfig) -> SecureOptions {
    // the linear layers' accumulation budget (changes nothing at or below N = 8192)
    opts.max_inner = opts.max_inner.max(config.hidden).max(config.intermediate);
    if config.arch == crate::Arch::Llama {
        opts.norm_in_bits = opts.norm_in_bits.max(15);
        opts.act_range_bits = opts.act_range_bits.max(7);
        opts.frac = opts.frac.max(14);
        opts.weight_frac = opts.weight_frac.max(14);
        opts.ring_bits = opts.ring_bits.max(opts.min_ring_bits() + 1);
    }
    opts
}

/// The client's opening message (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`OPTIONS_VERSION`].
    pub version: u32,
    /// The model's public config.
    pub model: ModelConfig,
    /// How the options were derived.
    pub config: RunConfig,
    /// The token count the plan was made for.
    pub plan_tokens: usize,
    /// The options.
    pub options: SecureOptions,
    /// In LoRA mode, the client's [`crate::lora::public_digest`] of the public base model (the
    /// server refuses a base that differs from its own); `None` otherwise.
    pub base_digest: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) enum Answer {
    Accepted,
    Refused(String),
    /// LoRA mode, to a client that holds the base but not the adapters: the adapters' public
    /// layout, after which the client sends its hello again with the layout in its config.
    Layout(duet_protocols::AdapterLayout),
}

/// Most characters of a handshake refusal shown or sent (it names up to 8 differing fields
/// with both values).
pub(super) const REFUSAL_MAX_CHARS: usize = 1200;

/// Receives the client's [`Hello`], compares it with this server's model and config, answers,
/// and on acceptance returns the options.
pub(super) fn server_handshake<C: Channel>(
    ch: &mut C,
    graph: &Graph,
    weights: &dyn crate::reference::WeightSource,
    config: &RunConfig,
) -> Result<SecureOptions> {
    let mut hello: Hello = ch.recv_msg().map_err(transport)?;
    if let (Some(l), None, Some(_)) = (&config.adapter, &hello.config.adapter, &hello.base_digest) {
        // the client holds the base but not the layout: announce it (it is public), once
        ch.send_msg(&Answer::Layout(l.clone())).map_err(transport)?;
        ch.flush().map_err(transport)?;
        hello = ch.recv_msg().map_err(transport)?;
    }
    let refuse = |ch: &mut C, why: String| -> Result<SecureOptions> {
        // `why` quotes the client's hello: filtered before it is sent back or logged
        let why = duet_transport::peer_text_max(why.as_bytes(), REFUSAL_MAX_CHARS);
        ch.send_msg(&Answer::Refused(why.clone()))
            .map_err(transport)?;
        ch.flush().map_err(transport)?;
        // the client acknowledges once it has read the refusal (or the channel fails)
        let _: std::result::Result<u8, _> = ch.recv_msg();
        Err(ModelError::Input(format!("refused the client: {why}")))
    };
    if hello.version != OPTIONS_VERSION {
        return refuse(
            ch,
            format!(
                "options version: server {OPTIONS_VERSION}, client {}",
                hello.version
            ),
        );
    }
    if hello.model != graph.config {
        let d = differences(&graph.config, &hello.model, 8).join("; ");
        return refuse(ch, format!("model config differs (server vs client): {d}"));
    }
    let same_source = hello.config.protocol == config.protocol
        && match (&hello.config.plan, &config.plan) {
            (PlanMode::Given(_), PlanMode::Given(_)) => true,
            (a, b) => a == b,
        };
    if !same_source {
        return refuse(
            ch,
            format!(
                "the server runs protocol {} ({}), the client asked for {} ({})",
                config.protocol,
                config.plan_name(),
                hello.config.protocol,
                hello.config.plan_name()
            ),
        );
    }
    if hello.plan_tokens == 0 || hello.plan_tokens > graph.config.max_positions {
        return refuse(
            ch,
            format!(
                "a plan for {} tokens (1..={})",
                hello.plan_tokens, graph.config.max_positions
            ),
        );
    }
    let (mine, _) = match config.options(graph, hello.plan_tokens) {
        Ok(o) => o,
        Err(e) => return refuse(ch, format!("the server cannot derive the options: {e}")),
    };
    if mine != hello.options {
        let d = differences(&mine, &hello.options, 8).join("; ");
        return refuse(ch, format!("options differ (server vs client): {d}"));
    }
    // what is public must be checked to be public: in LoRA mode both hold the same base
    match (&mine.public_base, &hello.base_digest) {
        (None, None) => {}
        (None, Some(_)) => {
            return refuse(
                ch,
                "the client holds a public base model, but the session is not in LoRA mode".into(),
            )
        }
        (Some(_), None) => {
            return refuse(
                ch,
                "LoRA mode: the client named no public base model".into(),
            )
        }
        (Some(_), Some(theirs)) => {
            let ours = match crate::lora::public_digest(graph, weights) {
                Ok(d) => d,
                Err(e) => {
                    // the client learns only that; the reason (which may name a tensor) stays
                    // in the server's error
                    let _ = refuse(ch, "the server cannot read its public base model".into());
                    return Err(ModelError::Input(format!(
                        "refused the client: the server cannot read its public base model: {e}"
                    )));
                }
            };
            if &ours != theirs {
                let short = |s: &str| s.chars().take(16).collect::<String>();
                return refuse(
                    ch,
                    format!(
                        "the public base models differ (SHA-256 of the weights: server {}..., \
                         client {}...)",
                        short(&ours),
                        short(theirs)
                    ),
                );
            }
        }
    }
    ch.send_msg(&Answer::Accepted).map_err(transport)?;
    ch.flush().map_err(transport)?;
    Ok(mine)
}
