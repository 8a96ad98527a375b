//! Model configuration from a HuggingFace `config.json` (GGUF metadata: [`crate::gguf`]): the
//! public shape both parties share, validated before any graph is built.

use crate::{ModelError, Result};
use serde_json::Value;
use std::path::Path;

/// Most transformer blocks a config may declare (LLaMA-2-70B has 80).
pub const MAX_LAYERS: usize = 1024;
/// Widest hidden size (LLaMA-2-70B: 8192).
pub const MAX_HIDDEN: usize = 1 << 16;
/// Most attention heads.
pub const MAX_HEADS: usize = 1024;
/// Widest feed-forward block (LLaMA-2-70B: 28,672).
pub const MAX_INTERMEDIATE: usize = 1 << 18;
/// Largest vocabulary (Gemma: 256,000).
pub const MAX_VOCAB: usize = 1 << 20;
/// Most positions.
pub const MAX_POSITIONS: usize = 1 << 20;
/// Most token types (BERT: 2).
pub const MAX_TOKEN_TYPES: usize = 1 << 10;

/// Transformer families Duet runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Arch {
    /// BERT encoders (post-LayerNorm, GELU, learned positions, token types): BERT, MiniLM.
    Bert,
    /// GPT-2 decoders (pre-LayerNorm, tanh GELU, learned positions, causal).
    Gpt2,
    /// LLaMA decoders (pre-RMSNorm, SiLU-gated FFN, rotary positions, causal).
    Llama,
}

/// The activation of the feed-forward block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Activation {
    /// x Phi(x) with the exact erf.
    GeluErf,
    /// The tanh approximation of GELU (GPT-2's `gelu_new`).
    GeluTanh,
    /// x sigmoid(x), gated (LLaMA).
    Silu,
}

/// What Duet needs from `config.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// Family.
    pub arch: Arch,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention); equals `heads` without GQA.
    pub kv_heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Longest sequence.
    pub max_positions: usize,
    /// Token types (BERT; 0 otherwise).
    pub type_vocab_size: usize,
    /// LayerNorm / RMSNorm epsilon.
    pub norm_eps: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Rotary base (LLaMA).
    pub rope_theta: f64,
    /// How attention scores become weights: SoftMax, or the Gaussian kernel for models
    /// fine-tuned with it (`config.json`: `"attention_kernel": "gaussian"`, optional
    /// `"gaussian_scale"`, default `1 / (2 sqrt(head_dim))`).
    #[serde(default)]
    pub attention_kernel: AttentionKernel,
}

pub use duet_protocols::AttentionKernel;

/// The attention kernel a `config.json` names (SoftMax when it names none).
fn attention_kernel(v: &Value, head_dim: usize, path: &Path) -> Result<AttentionKernel> {
    match v.get("attention_kernel").and_then(Value::as_str) {
        None | Some("softmax") => Ok(AttentionKernel::Softmax),
        Some("gaussian") => {
            let scale = get_f64(
                v,
                &["gaussian_scale"],
                0.5 / (head_dim.max(1) as f64).sqrt(),
            );
            Ok(AttentionKernel::Gaussian { scale })
        }
        Some(other) => Err(ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("attention_kernel {other:?}: softmax or gaussian"),
        }),
    }
}

fn get_usize(v: &Value, keys: &[&str], path: &Path) -> Result<usize> {
    for k in keys {
        if let Some(x) = v.get(k) {
            return x
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
                .ok_or_else(|| ModelError::Config {
                    path: path.to_path_buf(),
                    reason: format!("field {k:?} must be a positive integer, found {x}"),
                });
        }
    }
    Err(ModelError::Config {
        path: path.to_path_buf(),
        reason: format!("missing field {:?}", keys.first().copied().unwrap_or("?")),
    })
}

fn get_f64(v: &Value, keys: &[&str], default: f64) -> f64 {
    keys.iter()
        .find_map(|k| v.get(k).and_then(Value::as_f64))
        .unwrap_or(default)
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        let v: Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
            path: path.to_path_buf(),
            reason: format!("not valid JSON: {e}"),
        })?;
        Self::from_json(&v, path)
    }

    /// Interprets a parsed `config.json` (`path` is only used in errors).
    pub fn from_json(v: &Value, path: &Path) -> Result<Self> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase();
        let arch_name = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let arch = match model_type.as_str() {
            "bert" => Arch::Bert,
            "gpt2" => Arch::Gpt2,
            "llama" => Arch::Llama,
            _ if arch_name.starts_with("Bert") => Arch::Bert,
            _ if arch_name.starts_with("GPT2") => Arch::Gpt2,
            _ if arch_name.starts_with("Llama") => Arch::Llama,
            _ => {
                return Err(ModelError::UnknownArchitecture {
                    path: path.to_path_buf(),
                    name: if model_type.is_empty() {
                        arch_name
                    } else {
                        model_type
                    },
                })
            }
        };
        let cfg = match arch {
            Arch::Bert => {
                let act = v
                    .get("hidden_act")
                    .and_then(Value::as_str)
                    .unwrap_or("gelu");
                let activation = match act {
                    "gelu" => Activation::GeluErf,
                    "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
                    other => {
                        return Err(ModelError::Config {
                            path: path.to_path_buf(),
                            reason: format!("unsupported hidden_act {other:?} for BERT"),
                        })
                    }
                };
                let heads = get_usize(v, &["num_attention_heads"], path)?;
                Self {
                    arch,
                    vocab_size: get_usize(v, &["vocab_size"], path)?,
                    hidden: get_usize(v, &["hidden_size"], path)?,
                    layers: get_usize(v, &["num_hidden_layers"], path)?,
                    heads,
                    kv_heads: heads,
                    intermediate: get_usize(v, &["intermediate_size"], path)?,
                    max_positions: get_usize(v, &["max_position_embeddings"], path)?,
                    type_vocab_size: get_usize(v, &["type_vocab_size"], path).unwrap_or(2),
                    norm_eps: get_f64(v, &["layer_norm_eps"], 1e-12),
                    activation,
                    rope_theta: 0.0,
                    attention_kernel: AttentionKernel::Softmax,
                }
            }
            Arch::Gpt2 => {
                let hidden = get_usize(v, &["n_embd", "hidden_size"], path)?;
                let heads = get_usize(v, &["n_head", "num_attention_heads"], path)?;
                Self {
                    arch,
                    vocab_size: get_usize(v, &["vocab_size"], path)?,
                    hidden,
                    layers: get_usize(v, &["n_layer", "num_hidden_layers"], path)?,
                    heads,
                    kv_heads: heads,
                    intermediate: get_usize(v, &["n_inner"], path).unwrap_or(4 * hidden),
                    max_positions: get_usize(v, &["n_positions", "max_position_embeddings"], path)?,
                    type_vocab_size: 0,
                    norm_eps: get_f64(v, &["layer_norm_epsilon"], 1e-5),
                    activation: Activation::GeluTanh,
                    rope_theta: 0.0,
                    attention_kernel: AttentionKernel::Softmax,
                }
            }
            Arch::Llama => {
                let heads = get_usize(v, &["num_attention_heads"], path)?;
                Self {
                    arch,
                    vocab_size: get_usize(v, &["vocab_size"], path)?,
                    hidden: get_usize(v, &["hidden_size"], path)?,
                    layers: get_usize(v, &["num_hidden_layers"], path)?,
                    heads,
                    kv_heads: get_usize(v, &["num_key_value_heads"], path).unwrap_or(heads),
                    intermediate: get_usize(v, &["intermediate_size"], path)?,
                    max_positions: get_usize(v, &["max_position_embeddings"], path).unwrap_or(2048),
                    type_vocab_size: 0,
                    norm_eps: get_f64(v, &["rms_norm_eps"], 1e-6),
                    activation: Activation::Silu,
                    rope_theta: get_f64(v, &["rope_theta"], 10_000.0),
                    attention_kernel: AttentionKernel::Softmax,
                }
            }
        };
        let mut cfg = cfg;
        cfg.attention_kernel = attention_kernel(v, cfg.head_dim().max(1), path)?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    pub(crate) fn validate(&self, path: &Path) -> Result<()> {
        let bad = |reason: String| {
            Err(ModelError::Config {
                path: path.to_path_buf(),
                reason,
            })
        };
        let caps = [
            ("layers", self.layers, MAX_LAYERS),
            ("hidden size", self.hidden, MAX_HIDDEN),
            ("attention heads", self.heads, MAX_HEADS),
            ("key/value heads", self.kv_heads, MAX_HEADS),
            ("feed-forward width", self.intermediate, MAX_INTERMEDIATE),
            ("vocabulary", self.vocab_size, MAX_VOCAB),
            ("positions", self.max_positions, MAX_POSITIONS),
            ("token types", self.type_vocab_size, MAX_TOKEN_TYPES),
        ];
        for (what, v, cap) in caps {
            if v > cap {
                return bad(format!("{what} {v} above Duet's limit of {cap}"));
            }
        }
        if self.layers == 0 || self.hidden == 0 || self.heads == 0 || self.kv_heads == 0 {
            return bad("a zero dimension".into());
        }
        if !(self.rope_theta.is_finite() && self.rope_theta >= 0.0 && self.rope_theta < 1e12) {
            return bad(format!("rotary base {} out of range", self.rope_theta));
        }
        if let AttentionKernel::Gaussian { scale } = self.attention_kernel {
            if !(scale.is_finite() && scale > 0.0 && scale < 1e6) {
                return bad(format!("Gaussian attention scale {scale} out of range"));
            }
        }
        if self.hidden % self.heads != 0 {
            return bad(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden, self.heads
            ));
        }
        if self.heads % self.kv_heads != 0 {
            return bad(format!(
                "{} heads is not a multiple of {} key/value heads",
                self.heads, self.kv_heads
            ));
        }
        if self.arch == Arch::Llama && self.head_dim() % 2 != 0 {
            return bad("rotary embeddings need an even head width".into());
        }
        if !(self.norm_eps > 0.0 && self.norm_eps < 1.0) {
            return bad(format!(
                "normalisation epsilon {} out of range",
                self.norm_eps
            ));
        }
        Ok(())
    }
}
