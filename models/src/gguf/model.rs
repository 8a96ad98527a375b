//! A LLaMA-family model from a GGUF file: its [`ModelConfig`], its [`Graph`] and its weights
//! behind the [`WeightSource`] the executors read.
//!
//! The graph names tensors as HuggingFace does (`model.layers.3.self_attn.q_proj.weight`);
//! [`gguf_tensor_name`] maps them to llama.cpp's names (`blk.3.attn_q.weight`). GGUF lists
//! dimensions innermost first, so a stored `[in, out]` is HuggingFace's row-major `[out, in]`
//! with the same bytes. llama.cpp's converter permutes the rows of `q_proj` and `k_proj`
//! within every head (for its interleaved rotary layout: HF row `h d + s d/2 + i` is stored
//! as row `h d + 2 i + s`, `s` in {0, 1}, `d` the head width); [`GgufModel`] undoes that, so
//! the weights it returns are the HuggingFace model's and the graph's rotate-half rotary
//! embedding computes what HuggingFace computes.

use super::{ChatTemplate, GgufFile};
use crate::config::{Activation, Arch, ModelConfig};
use crate::graph::{self, Graph};
use crate::reference::WeightSource;
use crate::{ModelError, Result, TextTokenizer};
use std::path::Path;

/// Most transformer blocks accepted from `llama.block_count`.
pub const MAX_LAYERS: u64 = 1 << 10;
/// Largest width (hidden, feed-forward, vocabulary, context) accepted from the metadata.
pub const MAX_WIDTH: u64 = 1 << 24;

/// A GGUF model: the mapped file, the config and graph read from its metadata. Every tensor
/// the graph reads was checked at open (present, right shape, a type Duet dequantizes).
#[derive(Debug)]
pub struct GgufModel {
    file: GgufFile,
    /// The configuration from the metadata.
    pub config: ModelConfig,
    /// The graph built from it (HuggingFace tensor names).
    pub graph: Graph,
    tied_head: bool,
}

/// The GGUF tensor holding HuggingFace tensor `hf` of a LLaMA graph, if there is one
/// (`lm_head.weight` maps to `output.weight`; a file without it ties the head to
/// `token_embd.weight`, which [`GgufModel`] handles).
pub fn gguf_tensor_name(hf: &str) -> Option<String> {
    match hf {
        graph::LLAMA_TIED_HEAD => return Some("token_embd.weight".into()),
        graph::LLAMA_HEAD => return Some("output.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    if layer.is_empty() || !layer.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let g = match part {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.weight"))
}

impl GgufModel {
    /// Opens `path`, reads the config from its metadata and checks every tensor the graph
    /// needs.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_file(GgufFile::open(path)?)
    }

    /// The model in an already parsed file.
    pub fn from_file(file: GgufFile) -> Result<Self> {
        let config = read_config(&file)?;
        let graph = Graph::build(&config);
        let tied_head = file.tensor("output.weight").is_none();
        let model = Self {
            file,
            config,
            graph,
            tied_head,
        };
        for (name, shape) in model.graph.weight_shapes() {
            let stored = model.stored_name(&name)?;
            let info = model
                .file
                .tensor(&stored)
                .ok_or_else(|| ModelError::MissingTensor {
                    path: model.file.path().to_path_buf(),
                    name: stored.clone(),
                })?;
            let got = info.shape();
            if got != shape {
                return Err(ModelError::Shape {
                    path: model.file.path().to_path_buf(),
                    name: stored,
                    expected: shape,
                    got,
                });
            }
        }
        Ok(model)
    }

    /// The parsed file (metadata, tensor infos).
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Whether the output head reads the token embedding (the file has no `output.weight`).
    pub fn tied_head(&self) -> bool {
        self.tied_head
    }

    /// The tokenizer from the file's metadata.
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::from_gguf(self)
    }

    /// The chat template from `tokenizer.chat_template` (ChatML templates only).
    pub fn chat_template(&self) -> Result<ChatTemplate> {
        let text = self
            .file
            .get_str("tokenizer.chat_template")?
            .ok_or_else(|| self.file.err("no tokenizer.chat_template in the metadata"))?;
        ChatTemplate::parse(text)
            .map_err(|r| self.file.err(format!("tokenizer.chat_template: {r}")))
    }

    fn stored_name(&self, hf: &str) -> Result<String> {
        let hf = if hf == graph::LLAMA_HEAD && self.tied_head {
            graph::LLAMA_TIED_HEAD
        } else {
            hf
        };
        gguf_tensor_name(hf).ok_or_else(|| ModelError::MissingTensor {
            path: self.file.path().to_path_buf(),
            name: hf.to_string(),
        })
    }

    /// Heads whose rows llama.cpp permuted in tensor `hf`, if any.
    fn permuted_heads(&self, hf: &str) -> Option<usize> {
        if hf.ends_with("self_attn.q_proj.weight") {
            Some(self.config.heads)
        } else if hf.ends_with("self_attn.k_proj.weight") {
            Some(self.config.kv_heads)
        } else {
            None
        }
    }
}

/// Undoes llama.cpp's per-head row permutation of a `[heads * d, cols]` matrix: stored row
/// `h d + 2 i + s` becomes row `h d + s d/2 + i`.
pub(crate) fn unpermute_rows<T: Copy + Default>(
    w: &[T],
    heads: usize,
    cols: usize,
) -> Option<Vec<T>> {
    let rows = w.len().checked_div(cols)?;
    let d = rows.checked_div(heads)?;
    if d % 2 != 0 || heads * d * cols != w.len() {
        return None;
    }
    let half = d / 2;
    let mut out = vec![T::default(); w.len()];
    for (r, dst) in out.chunks_exact_mut(cols).enumerate() {
        let (h, within) = (r / d, r % d);
        let (s, i) = (within / half, within % half);
        let src = h * d + 2 * i + s;
        dst.copy_from_slice(w.get(src * cols..(src + 1) * cols)?);
    }
    Some(out)
}

impl WeightSource for GgufModel {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let stored = self.stored_name(name)?;
        let info = self
            .file
            .tensor(&stored)
            .ok_or_else(|| ModelError::MissingTensor {
                path: self.file.path().to_path_buf(),
                name: stored.clone(),
            })?;
        if info.shape() != shape {
            return Err(ModelError::Shape {
                path: self.file.path().to_path_buf(),
                name: stored,
                expected: shape.to_vec(),
                got: info.shape(),
            });
        }
        let mut w = self.file.read_f64(&stored)?;
        if let (Some(heads), Some(&cols)) = (self.permuted_heads(name), shape.get(1)) {
            w = unpermute_rows(&w, heads, cols).ok_or_else(|| {
                self.file.err(format!(
                    "tensor {stored:?} of shape {shape:?} cannot be split into {heads} heads \
                     of even width"
                ))
            })?;
        }
        Ok(w)
    }
}

/// A positive integer key, at most `max`.
fn positive(file: &GgufFile, key: &str, max: u64) -> Result<Option<usize>> {
    match file.get_u64(key)? {
        None => Ok(None),
        Some(v) if v == 0 || v > max => {
            Err(file.err(format!("metadata {key:?} is {v}, expected 1 to {max}")))
        }
        Some(v) => usize::try_from(v)
            .map(Some)
            .map_err(|_| file.err(format!("metadata {key:?} is too large"))),
    }
}

fn required(file: &GgufFile, key: &str, max: u64) -> Result<usize> {
    positive(file, key, max)?.ok_or_else(|| file.err(format!("missing metadata {key:?}")))
}

/// The [`ModelConfig`] of a `general.architecture = llama` file.
fn read_config(file: &GgufFile) -> Result<ModelConfig> {
    let arch = file
        .get_str("general.architecture")?
        .ok_or_else(|| file.err("missing metadata \"general.architecture\""))?;
    if arch != "llama" {
        return Err(file.err(format!(
            "general.architecture {arch:?} is not supported (GGUF models must be llama)"
        )));
    }
    let layers = required(file, "llama.block_count", MAX_LAYERS)?;
    let hidden = required(file, "llama.embedding_length", MAX_WIDTH)?;
    let intermediate = required(file, "llama.feed_forward_length", MAX_WIDTH)?;
    let heads = required(file, "llama.attention.head_count", MAX_WIDTH)?;
    let kv_heads = positive(file, "llama.attention.head_count_kv", MAX_WIDTH)?.unwrap_or(heads);
    let max_positions = positive(file, "llama.context_length", MAX_WIDTH)?.unwrap_or(2048);
    let vocab_size = match file.get_str_array("tokenizer.ggml.tokens")? {
        Some(t) if !t.is_empty() => t.len(),
        _ => required(file, "llama.vocab_size", MAX_WIDTH)?,
    };
    let norm_eps = file
        .get_f64("llama.attention.layer_norm_rms_epsilon")?
        .unwrap_or(1e-5);
    let rope_theta = file.get_f64("llama.rope.freq_base")?.unwrap_or(10_000.0);
    if !(rope_theta.is_finite() && rope_theta > 1.0) {
        return Err(file.err(format!("llama.rope.freq_base {rope_theta} out of range")));
    }
    if hidden % heads != 0 {
        return Err(file.err(format!(
            "embedding length {hidden} is not a multiple of {heads} heads"
        )));
    }
    let head_dim = hidden / heads;
    // what Duet's graph does not model is refused rather than computed differently
    for key in [
        "llama.rope.dimension_count",
        "llama.attention.key_length",
        "llama.attention.value_length",
    ] {
        if let Some(v) = file.get_u64(key)? {
            if v != head_dim as u64 {
                return Err(file.err(format!(
                    "{key} = {v} differs from the head width {head_dim} (not supported)"
                )));
            }
        }
    }
    if let Some(t) = file.get_str("llama.rope.scaling.type")? {
        let factor = file.get_f64("llama.rope.scaling.factor")?.unwrap_or(1.0);
        if t != "none" && factor != 1.0 {
            return Err(file.err(format!(
                "rotary scaling {t:?} (factor {factor}) is not supported"
            )));
        }
    }
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(file.err("per-frequency rotary scaling (rope_freqs.weight) is not supported"));
    }
    if file.get_u64("llama.expert_count")?.unwrap_or(0) > 0 {
        return Err(file.err("mixture-of-experts models are not supported"));
    }
    let config = ModelConfig {
        arch: Arch::Llama,
        vocab_size,
        hidden,
        layers,
        heads,
        kv_heads,
        intermediate,
        max_positions,
        type_vocab_size: 0,
        norm_eps,
        activation: Activation::Silu,
        rope_theta,
        attention_kernel: crate::config::AttentionKernel::Softmax,
    };
    config.validate(file.path())?;
    Ok(config)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        let cases = [
            ("model.embed_tokens.weight", "token_embd.weight"),
            ("lm_head.weight", "output.weight"),
            ("model.norm.weight", "output_norm.weight"),
            (
                "model.layers.0.input_layernorm.weight",
                "blk.0.attn_norm.weight",
            ),
            (
                "model.layers.12.self_attn.q_proj.weight",
                "blk.12.attn_q.weight",
            ),
            (
                "model.layers.1.self_attn.k_proj.weight",
                "blk.1.attn_k.weight",
            ),
            (
                "model.layers.1.self_attn.v_proj.weight",
                "blk.1.attn_v.weight",
            ),
            (
                "model.layers.1.self_attn.o_proj.weight",
                "blk.1.attn_output.weight",
            ),
            (
                "model.layers.2.post_attention_layernorm.weight",
                "blk.2.ffn_norm.weight",
            ),
            (
                "model.layers.2.mlp.gate_proj.weight",
                "blk.2.ffn_gate.weight",
            ),
            ("model.layers.2.mlp.up_proj.weight", "blk.2.ffn_up.weight"),
            (
                "model.layers.2.mlp.down_proj.weight",
                "blk.2.ffn_down.weight",
            ),
        ];
        for (hf, g) in cases {
            assert_eq!(gguf_tensor_name(hf).as_deref(), Some(g), "{hf}");
        }
        assert_eq!(gguf_tensor_name("model.layers.x.mlp.up_proj.weight"), None);
        assert_eq!(gguf_tensor_name("model.layers.1.mlp.up_proj.bias"), None);
    }

    /// llama.cpp's converter: rows viewed as `[heads, 2, d/2]`, the last two axes swapped.
    fn permute(w: &[f32], heads: usize, cols: usize) -> Vec<f32> {
        let rows = w.len() / cols;
        let d = rows / heads;
        let mut out = vec![0.0; w.len()];
        for h in 0..heads {
            for s in 0..2 {
                for i in 0..d / 2 {
                    let src = h * d + s * d / 2 + i;
                    let dst = h * d + 2 * i + s;
                    out[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&w[src * cols..(src + 1) * cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_inverts_the_converter() {
        let (heads, d, cols) = (3, 8, 5);
        let w: Vec<f32> = (0..heads * d * cols).map(|i| i as f32).collect();
        let p = permute(&w, heads, cols);
        assert_ne!(p, w);
        assert_eq!(unpermute_rows(&p, heads, cols).unwrap(), w);
        assert!(unpermute_rows(&p, 5, cols).is_none());
        assert!(unpermute_rows(&p, 0, cols).is_none());
    }
}
