//! Duet models: HuggingFace configs, safetensors weights and tokenizers; GGUF files
//! ([`gguf`]); a transformer as a graph of operators; the plaintext f64 reference executor; the
//! model walk ([`walk`]) that runs a graph on any `duet_protocols::Backend` (securely between
//! two parties, or as its own cost model); and the front door, [`session`]: a
//! [`session::Server`] and a [`session::Client`] that set up once and run any number of
//! inputs.

pub mod builtin;
pub mod config;
mod error;
pub mod generate;
pub mod gguf;
pub mod graph;
pub mod lora;
pub mod lora_seeded;
pub mod open;
pub mod planner;
pub mod prefix;
pub mod reference;
pub mod rotation;
pub mod secure;
pub mod session;
pub mod tokenizer;
pub mod walk;
pub mod weights;

pub use builtin::{BuiltinModel, RandomWeights};
pub use config::{Activation, Arch, ModelConfig};
pub use error::{ModelError, Result};
pub use gguf::{ChatTemplate, GgufFile, GgufModel};
pub use graph::{Graph, Node, NodeId, Op};
pub use reference::{
    run_reference, run_reference_outputs, run_reference_traced, sentence_embedding, Matrix,
    WeightSource,
};
pub use tokenizer::TextTokenizer;
pub use weights::WeightFile;

use std::path::{Path, PathBuf};

/// A model's weight file with the tensor-name prefix its checkpoint uses.
#[derive(Debug)]
pub struct ModelWeights {
    /// The mapped file.
    pub file: WeightFile,
    /// Prefix in front of the graph's tensor names (often empty).
    pub prefix: String,
}

impl ModelWeights {
    /// The stored tensor for a graph name: a LLaMA checkpoint with tied embeddings has no
    /// `lm_head.weight` and reads the token embedding instead.
    fn stored(&self, name: &str) -> String {
        let full = format!("{}{name}", self.prefix);
        if name == graph::LLAMA_HEAD && !self.file.contains(&full) {
            return format!("{}{}", self.prefix, graph::LLAMA_TIED_HEAD);
        }
        full
    }
}

impl WeightSource for ModelWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        self.file.read_f64(&self.stored(name), shape)
    }
}

/// A HuggingFace model folder: `config.json`, `model.safetensors`, optionally `tokenizer.json`.
#[derive(Debug)]
pub struct ModelDir {
    /// The folder.
    pub dir: PathBuf,
    /// Parsed config.
    pub config: ModelConfig,
    /// The graph built from it.
    pub graph: Graph,
}

impl ModelDir {
    /// Reads `config.json` and builds the graph (weights are opened separately, server side).
    pub fn open(dir: &Path) -> Result<Self> {
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let graph = Graph::build(&config);
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            graph,
        })
    }

    /// Opens `model.safetensors` and checks every tensor the graph needs: present, right
    /// shape. Checkpoints saved from a model with a head name their tensors with a prefix
    /// (`bert.`, `transformer.`); it is detected here.
    pub fn open_weights(&self) -> Result<ModelWeights> {
        let file = WeightFile::open(&self.dir.join("model.safetensors"))?;
        let shapes = self.graph.weight_shapes();
        let probe = shapes
            .iter()
            .map(|(n, _)| n.clone())
            .find(|n| n != graph::LLAMA_HEAD)
            .unwrap_or_default();
        let prefix = ["", "bert.", "transformer.", "model."]
            .into_iter()
            .find(|p| file.contains(&format!("{p}{probe}")))
            .unwrap_or("")
            .to_string();
        let weights = ModelWeights { file, prefix };
        for (name, shape) in shapes {
            let full = weights.stored(&name);
            let file = &weights.file;
            let got = file.shape(&full)?;
            if got != shape {
                return Err(ModelError::Shape {
                    path: file.path().to_path_buf(),
                    name: full,
                    expected: shape,
                    got,
                });
            }
        }
        Ok(weights)
    }

    /// The tokenizer (client side).
    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::from_file(&self.dir.join("tokenizer.json"))
    }
}
