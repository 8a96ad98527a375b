//! Opening a model for one side of a session: [`ModelSpec`] names it (a HuggingFace folder or
//! a built-in shape), [`PublicModel`] is what the client reads (the public config, the graph,
//! the tokenizer; never the weights), [`ServerModel`] adds the weights.
//!
//! ```
//! use duet_models::open::{ModelSpec, PublicModel, ServerModel};
//!
//! let spec = ModelSpec::parse("bert-tiny")?; // a built-in: seeded random weights, no files
//! let client = PublicModel::open(&spec, false)?;
//! let server = ServerModel::open(&spec)?;
//! assert_eq!(client.graph, server.graph);
//! # Ok::<(), duet_models::ModelError>(())
//! ```

use crate::builtin::{BuiltinModel, RandomWeights};
use crate::gguf::{ChatTemplate, GgufModel};
use crate::graph::Graph;
use crate::lora::{AdapterLayout, LoraAdapter, LoraWeights, MergedWeights};
use crate::reference::WeightSource;
use crate::tokenizer::TextTokenizer;
use crate::{ModelDir, ModelError, ModelWeights, Result};
use std::path::{Path, PathBuf};

/// Seed of the built-in models' random weights. It is public: the weights of a built-in model
/// are not a secret, which lets a client check its result against the reference.
pub const BUILTIN_SEED: u64 = 2026;

/// Which model: a HuggingFace folder, a GGUF file or a built-in shape with seeded random
/// weights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSpec {
    /// A folder with `config.json` (both sides), `model.safetensors` (server) and
    /// `tokenizer.json` (client, for text).
    Dir(PathBuf),
    /// A `.gguf` file (llama.cpp): config, tokenizer and chat template from its metadata
    /// (both sides), weights dequantized one tensor at a time (server).
    Gguf(PathBuf),
    /// A built-in shape.
    Builtin(BuiltinModel),
}

impl ModelSpec {
    /// A built-in's name (`bert-tiny`, ...) or else a path (a `.gguf` file or a folder).
    pub fn parse(s: &str) -> Result<Self> {
        match BuiltinModel::from_name(s) {
            Ok(b) => Ok(Self::Builtin(b)),
            Err(_) if Path::new(s).exists() => Ok(Self::path(PathBuf::from(s))),
            Err(e) => Err(e),
        }
    }

    /// A path: a file is read as GGUF, a folder as HuggingFace's.
    pub fn path(p: PathBuf) -> Self {
        if p.is_file() {
            Self::Gguf(p)
        } else {
            Self::Dir(p)
        }
    }

    /// The name reports carry: the folder's name or the built-in's.
    pub fn name(&self) -> String {
        match self {
            ModelSpec::Dir(d) | ModelSpec::Gguf(d) => d
                .file_name()
                .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into()),
            ModelSpec::Builtin(b) => b.name().into(),
        }
    }

    fn open_dir(d: &Path) -> Result<ModelDir> {
        if !d.is_dir() {
            return Err(ModelError::Input(format!(
                "model folder {} not found",
                d.display()
            )));
        }
        ModelDir::open(d)
    }
}

/// The client's view of a model: the public config and the tokenizer, never the weights.
#[derive(Debug)]
pub struct PublicModel {
    /// Report name.
    pub name: String,
    /// The graph built from the public config.
    pub graph: Graph,
    /// The tokenizer, when text is to be tokenized (a built-in has none).
    pub tokenizer: Option<TextTokenizer>,
    /// The chat template (GGUF files that carry one).
    pub chat: Option<ChatTemplate>,
}

impl PublicModel {
    /// Reads `config.json` (and `tokenizer.json` when `need_tokenizer`) of a folder; a
    /// built-in needs no file.
    pub fn open(spec: &ModelSpec, need_tokenizer: bool) -> Result<Self> {
        match spec {
            ModelSpec::Dir(d) => {
                let m = ModelSpec::open_dir(d)?;
                let tokenizer = if need_tokenizer {
                    Some(m.tokenizer()?)
                } else {
                    None
                };
                Ok(Self {
                    name: spec.name(),
                    graph: m.graph,
                    tokenizer,
                    chat: None,
                })
            }
            ModelSpec::Gguf(f) => {
                // the client reads the metadata; the weights stay unread
                let m = GgufModel::open(f)?;
                let tokenizer = if need_tokenizer {
                    Some(m.tokenizer()?)
                } else {
                    None
                };
                Ok(Self {
                    name: spec.name(),
                    chat: m.chat_template().ok(),
                    graph: m.graph.clone(),
                    tokenizer,
                })
            }
            ModelSpec::Builtin(b) => Ok(Self {
                name: spec.name(),
                graph: Graph::build(&b.config()),
                tokenizer: None,
                chat: None,
            }),
        }
    }
}

/// The server's weights.
#[derive(Debug)]
pub enum Weights {
    /// `model.safetensors` of a folder.
    File(ModelWeights),
    /// A GGUF file.
    Gguf(Box<GgufModel>),
    /// A built-in's seeded random weights.
    Random(RandomWeights),
}

impl WeightSource for Weights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        match self {
            Weights::File(w) => w.get(name, shape),
            Weights::Gguf(w) => w.get(name, shape),
            Weights::Random(w) => w.get(name, shape),
        }
    }
}

/// The role a tensor plays, for its declared range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A weight matrix or an embedding table: `|w| < 2^weight_bits`.
    Weight,
    /// A bias or a norm shift: bounded like the values it is added to.
    Shift,
    /// A norm scale: `|gamma| < 2^gamma_bits`.
    Scale,
}

/// The server's model: config and weights.
#[derive(Debug)]
pub struct ServerModel {
    /// Report name.
    pub name: String,
    /// The graph.
    pub graph: Graph,
    /// The weights (with an adapter: the base model's).
    pub weights: Weights,
    /// PEFT adapters over the weights, if any.
    pub adapter: Option<LoraAdapter>,
    /// With an adapter: `true` merges it into private weights (every weight private, the
    /// fully private run); `false` runs LoRA mode (the base public, only the adapters private).
    pub merged: bool,
    /// Public prefixes' keys and values kept across this model's sessions
    /// ([`crate::prefix::PrefixCache`]).
    pub prefix_cache: crate::prefix::PrefixCache,
}

/// A PEFT adapter folder for the server, and how it runs (see [`ServerModel::merged`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterSpec {
    /// The folder (`adapter_config.json`, `adapter_model.safetensors`).
    pub dir: PathBuf,
    /// Merge the adapters into private weights instead of LoRA mode.
    pub merged: bool,
}

/// The weights a server's session reads: the model's own, the base with its adapters beside
/// (LoRA mode), or the base with the adapters merged in.
pub enum SessionWeights<'a> {
    /// No adapter.
    Plain(&'a Weights),
    /// LoRA mode.
    Lora(LoraWeights<'a>),
    /// Merged.
    Merged(MergedWeights<'a>),
}

impl WeightSource for SessionWeights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        match self {
            SessionWeights::Plain(w) => w.get(name, shape),
            SessionWeights::Lora(w) => w.get(name, shape),
            SessionWeights::Merged(w) => w.get(name, shape),
        }
    }

    fn lora_pair(&self, weight: &str) -> Result<Option<crate::lora::LoraPair>> {
        match self {
            SessionWeights::Lora(w) => w.lora_pair(weight),
            _ => Ok(None),
        }
    }
}

impl ServerModel {
    /// Checks every tensor of the model (streamed, one at a time) before any session: finite,
    /// and within the ranges `opts` declares (weights and embedding tables `|w| <
    /// 2^weight_bits`, norm scales `< 2^gamma_bits`, biases and norm shifts below the bound of
    /// the values they are added to, `2^max(norm_in_bits, act_range_bits)`). The error names
    /// the tensor; it stays on the server (the client of a session never sees it).
    pub fn check_ranges(&self, opts: &duet_protocols::SecureOptions) -> Result<()> {
        use crate::graph::Op;
        let mut roles: Vec<(String, Vec<usize>, Role)> = Vec::new();
        let shapes = self.graph.weight_shapes();
        let shape_of = |n: &str| {
            shapes
                .iter()
                .find(|(m, _)| m == n)
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        };
        let mut add = |name: &str, role: Role| {
            if !roles.iter().any(|(n, _, _)| n == name) {
                roles.push((name.to_string(), shape_of(name), role));
            }
        };
        for n in &self.graph.nodes {
            match &n.op {
                Op::Embedding {
                    word,
                    position,
                    token_type,
                } => {
                    add(word, Role::Weight);
                    for t in [position, token_type].into_iter().flatten() {
                        add(t, Role::Weight);
                    }
                }
                Op::Linear { weight, bias, .. } => {
                    add(weight, Role::Weight);
                    if let Some(b) = bias {
                        add(b, Role::Shift);
                    }
                }
                Op::LayerNorm { gamma, beta, .. } => {
                    add(gamma, Role::Scale);
                    add(beta, Role::Shift);
                }
                Op::RmsNorm { gamma, .. } => add(gamma, Role::Scale),
                _ => {}
            }
        }
        let bits = |r: Role| match r {
            Role::Weight => opts.weight_bits,
            Role::Scale => opts.gamma_bits,
            Role::Shift => opts.norm_in_bits.max(opts.act_range_bits),
        };
        for (name, shape, role) in roles {
            let limit = (1u64 << bits(role)) as f64;
            let v = self.session_weights().get(&name, &shape)?;
            if let Some(&bad) = v.iter().find(|x| !x.is_finite() || x.abs() >= limit) {
                return Err(ModelError::WeightRange {
                    name,
                    value: bad,
                    limit,
                });
            }
        }
        // LoRA mode: the adapters run as private weights `A` and `s B`
        if let (Some(ad), false) = (&self.adapter, self.merged) {
            let limit = (1u64 << opts.weight_bits) as f64;
            for (weight, _) in ad.layout().ranks {
                let Some(p) = ad.pair(&weight)? else { continue };
                let bad =
                    p.a.iter()
                        .copied()
                        .chain(p.b.iter().map(|v| v * p.scale))
                        .find(|x| !x.is_finite() || x.abs() >= limit);
                if let Some(bad) = bad {
                    return Err(ModelError::WeightRange {
                        name: format!("{weight} (LoRA adapter)"),
                        value: bad,
                        limit,
                    });
                }
            }
        }
        Ok(())
    }

    /// [`ServerModel::open`], then the PEFT adapter `adapter` (if any) for the model's graph.
    pub fn open_with(spec: &ModelSpec, adapter: Option<&AdapterSpec>) -> Result<Self> {
        let mut m = Self::open(spec)?;
        if let Some(a) = adapter {
            m.adapter = Some(LoraAdapter::open(&a.dir, &m.graph)?);
            m.merged = a.merged;
        }
        Ok(m)
    }

    /// In LoRA mode, the adapters' public layout (what [`crate::session::RunConfig::adapter`]
    /// names); `None` without an adapter or merged.
    pub fn adapter_layout(&self) -> Option<AdapterLayout> {
        match (&self.adapter, self.merged) {
            (Some(a), false) => Some(a.layout()),
            _ => None,
        }
    }

    /// The weights the server's session reads (see [`SessionWeights`]).
    pub fn session_weights(&self) -> SessionWeights<'_> {
        match (&self.adapter, self.merged) {
            (None, _) => SessionWeights::Plain(&self.weights),
            (Some(a), false) => SessionWeights::Lora(LoraWeights {
                base: &self.weights,
                adapter: a,
            }),
            (Some(a), true) => SessionWeights::Merged(MergedWeights {
                base: &self.weights,
                adapter: a,
            }),
        }
    }

    /// The weights of the model the client's output should match: the model's own, or with
    /// an adapter (in either mode) the base with the adapters merged in.
    pub fn reference_weights(&self) -> SessionWeights<'_> {
        match &self.adapter {
            None => SessionWeights::Plain(&self.weights),
            Some(a) => SessionWeights::Merged(MergedWeights {
                base: &self.weights,
                adapter: a,
            }),
        }
    }

    /// Opens `config.json` and `model.safetensors` (every tensor's presence and shape
    /// checked), or a built-in.
    pub fn open(spec: &ModelSpec) -> Result<Self> {
        match spec {
            ModelSpec::Dir(d) => {
                let m = ModelSpec::open_dir(d)?;
                let weights = Weights::File(m.open_weights()?);
                Ok(Self {
                    name: spec.name(),
                    graph: m.graph,
                    weights,
                    adapter: None,
                    merged: false,
                    prefix_cache: crate::prefix::PrefixCache::default(),
                })
            }
            ModelSpec::Gguf(f) => {
                let m = GgufModel::open(f)?;
                Ok(Self {
                    name: spec.name(),
                    graph: m.graph.clone(),
                    weights: Weights::Gguf(Box::new(m)),
                    adapter: None,
                    merged: false,
                    prefix_cache: crate::prefix::PrefixCache::default(),
                })
            }
            ModelSpec::Builtin(b) => Ok(Self {
                name: spec.name(),
                graph: Graph::build(&b.config()),
                weights: Weights::Random(RandomWeights { seed: BUILTIN_SEED }),
                adapter: None,
                merged: false,
                prefix_cache: crate::prefix::PrefixCache::default(),
            }),
        }
    }
}
