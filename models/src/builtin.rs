//! Built-in model shapes with seeded random weights: benchmarks and demos without files.

use crate::config::{Activation, Arch, ModelConfig};
use crate::reference::WeightSource;
use crate::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// The built-in shapes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuiltinModel {
    /// BERT, 2 layers, hidden 128, 2 heads (google/bert_uncased_L-2_H-128_A-2).
    BertTiny,
    /// BERT-base: 12 layers, hidden 768, 12 heads, FFN 3072.
    BertBase,
    /// BERT-large: 24 layers, hidden 1024, 16 heads, FFN 4096.
    BertLarge,
    /// GPT-2 small: 12 layers, hidden 768, 12 heads.
    Gpt2,
    /// LLaMA-7B's shape: 32 layers, hidden 4096, 32 heads, FFN 11008.
    Llama7bShape,
}

impl BuiltinModel {
    /// Every built-in shape.
    pub const ALL: [BuiltinModel; 5] = [
        BuiltinModel::BertTiny,
        BuiltinModel::BertBase,
        BuiltinModel::BertLarge,
        BuiltinModel::Gpt2,
        BuiltinModel::Llama7bShape,
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            BuiltinModel::BertTiny => "bert-tiny",
            BuiltinModel::BertBase => "bert-base",
            BuiltinModel::BertLarge => "bert-large",
            BuiltinModel::Gpt2 => "gpt2",
            BuiltinModel::Llama7bShape => "llama-7b-shape",
        }
    }

    /// Parses a CLI name.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                ModelError::Input(format!(
                    "unknown built-in model {name:?}; choose one of {}",
                    Self::ALL.map(|b| b.name()).join(", ")
                ))
            })
    }

    /// Its configuration.
    pub fn config(self) -> ModelConfig {
        let bert = |hidden, layers, heads, intermediate| ModelConfig {
            arch: Arch::Bert,
            vocab_size: 30_522,
            hidden,
            layers,
            heads,
            kv_heads: heads,
            intermediate,
            max_positions: 512,
            type_vocab_size: 2,
            norm_eps: 1e-12,
            activation: Activation::GeluErf,
            rope_theta: 0.0,
            attention_kernel: crate::config::AttentionKernel::Softmax,
        };
        match self {
            BuiltinModel::BertTiny => bert(128, 2, 2, 512),
            BuiltinModel::BertBase => bert(768, 12, 12, 3072),
            BuiltinModel::BertLarge => bert(1024, 24, 16, 4096),
            BuiltinModel::Gpt2 => ModelConfig {
                arch: Arch::Gpt2,
                vocab_size: 50_257,
                hidden: 768,
                layers: 12,
                heads: 12,
                kv_heads: 12,
                intermediate: 3072,
                max_positions: 1024,
                type_vocab_size: 0,
                norm_eps: 1e-5,
                activation: Activation::GeluTanh,
                rope_theta: 0.0,
                attention_kernel: crate::config::AttentionKernel::Softmax,
            },
            BuiltinModel::Llama7bShape => ModelConfig {
                arch: Arch::Llama,
                vocab_size: 32_000,
                hidden: 4096,
                layers: 32,
                heads: 32,
                kv_heads: 32,
                intermediate: 11_008,
                max_positions: 4096,
                type_vocab_size: 0,
                norm_eps: 1e-6,
                activation: Activation::Silu,
                rope_theta: 10_000.0,
                attention_kernel: crate::config::AttentionKernel::Softmax,
            },
        }
    }
}

/// Deterministic random weights: each tensor is drawn from a ChaCha12 stream seeded by the
/// model seed and the tensor's name, so any tensor can be produced on its own, in any order.
///
/// Distributions follow common initialisations: norm scales `1 + U(-0.1, 0.1)`, norm shifts
/// and biases `U(-0.02, 0.02)`, matrices `U(-a, a)` with `a = sqrt(3 / fan_in)` (unit output
/// variance for unit input variance), embeddings `U(-0.1, 0.1)`.
#[derive(Clone, Copy, Debug)]
pub struct RandomWeights {
    /// The model seed.
    pub seed: u64,
}

impl WeightSource for RandomWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let mut key = [0u8; 32];
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ self.seed;
        for (i, b) in name.bytes().enumerate() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            if let Some(k) = key.get_mut(i % 24) {
                *k ^= b;
            }
        }
        key[24..].copy_from_slice(&h.to_le_bytes());
        let mut rng = ChaCha12Rng::from_seed(key);
        let n: usize = shape.iter().product();
        let lname = name.to_ascii_lowercase();
        let is_norm = lname.contains("norm") || lname.contains("ln_");
        let is_embedding =
            lname.contains("embed") || lname.starts_with("wte") || lname.starts_with("wpe");
        let (center, half_width) = if is_norm && lname.ends_with("weight") {
            (1.0, 0.1)
        } else if shape.len() == 1 {
            (0.0, 0.02)
        } else if is_embedding {
            (0.0, 0.1)
        } else {
            let fan_in =
                if lname.contains("c_attn") || lname.contains("c_fc") || lname.contains("c_proj") {
                    shape.first().copied().unwrap_or(1)
                } else {
                    shape.last().copied().unwrap_or(1)
                };
            (0.0, (3.0 / fan_in.max(1) as f64).sqrt())
        };
        Ok((0..n)
            .map(|_| center + rng.gen_range(-half_width..=half_width))
            .collect())
    }
}
