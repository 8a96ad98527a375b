//! LoRA adapters in PEFT's format over a public base model: the server's private adapters
//! ([`LoraAdapter`]: `adapter_config.json` and `adapter_model.safetensors`), their public
//! layout ([`AdapterLayout`]: which linear layers carry one and its rank, what the client learns),
//! and the merged weights ([`MergedWeights`]: `W + s B A`, the fully private run and the
//! plaintext reference).
//!
//! PEFT names a LoRA pair after the HuggingFace module it adapts:
//! `base_model.model.<module>.lora_A.weight` (`[r, in]`) and `...lora_B.weight` (`[out, r]`),
//! with `<module>` e.g. `model.layers.3.self_attn.q_proj` (a task head's prefix such as
//! `bert.` or `transformer.` may precede it); the update is `ΔW = s B A` with
//! `s = lora_alpha / r` (`lora_alpha / sqrt(r)` with `use_rslora`; `alpha_pattern` overrides
//! per module). Duet's graphs name the base tensors with HuggingFace's names (GGUF files
//! included), so a graph linear node's weight `<module>.weight` finds its pair by suffix. A
//! fused GPT-2 `c_attn` pair serves the query, key and value nodes, each with its rows of `B`.
//!
//! Only plain LoRA is read: adapter biases (`bias` other than `none`), `modules_to_save`,
//! DoRA and other PEFT types are refused with a clear error.

use crate::graph::{Graph, Op, WeightLayout};
use crate::reference::WeightSource;
use crate::weights::WeightFile;
use crate::{ModelError, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Largest LoRA rank read (published adapters use 4 to 256).
pub const MAX_RANK: usize = 1024;

pub use duet_protocols::AdapterLayout;

/// Checks an adapter layout against `graph` (it may come from the peer): every tensor is a
/// linear weight of the graph, ranks within `1..=min(MAX_RANK, in, out)`.
pub fn check_layout(layout: &AdapterLayout, graph: &Graph) -> Result<()> {
    if layout.ranks.len() > graph.nodes.len() {
        return Err(ModelError::Input(format!(
            "an adapter layout of {} tensors for a graph of {} nodes",
            layout.ranks.len(),
            graph.nodes.len()
        )));
    }
    for (w, r) in &layout.ranks {
        let dims = graph.nodes.iter().find_map(|n| match &n.op {
            Op::Linear {
                weight,
                in_dim,
                out_total,
                ..
            } if weight == w => Some((*in_dim, *out_total)),
            _ => None,
        });
        match dims {
            Some((i, o)) if *r >= 1 && *r <= MAX_RANK.min(i).min(o) => {}
            Some(_) => return Err(ModelError::Input(format!("adapter of rank {r} on {w:?}"))),
            None => {
                return Err(ModelError::Input(format!(
                    "the adapter layout names {w:?}, which is not a linear weight of the model"
                )))
            }
        }
    }
    Ok(())
}

/// `adapter_config.json`: what Duet reads of it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    /// Default rank.
    pub r: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// Module names (last components, e.g. `q_proj`) that carry adapters.
    pub target_modules: Vec<String>,
    /// Whether the base layers store `[in, out]` (GPT-2's Conv1D): informational here (A
    /// and B are stored `[r, in]` and `[out, r]` either way).
    pub fan_in_fan_out: bool,
    /// `lora_alpha / sqrt(r)` instead of `/ r`.
    pub use_rslora: bool,
    /// Per-module alpha overrides (`alpha_pattern`, by module name suffix).
    pub alpha_pattern: Vec<(String, f64)>,
}

fn cfg_err(path: &Path, reason: impl Into<String>) -> ModelError {
    ModelError::Config {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl LoraConfig {
    /// Reads and checks `adapter_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if text.len() > 1 << 20 {
            return Err(cfg_err(path, "more than 1 MiB"));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| cfg_err(path, format!("not valid JSON: {e}")))?;
        let peft = v.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if peft != "LORA" {
            return Err(cfg_err(
                path,
                format!("PEFT type {peft:?}: only LORA is read"),
            ));
        }
        if v.get("use_dora").and_then(Value::as_bool) == Some(true) {
            return Err(cfg_err(path, "DoRA adapters are not supported"));
        }
        let bias = v.get("bias").and_then(Value::as_str).unwrap_or("none");
        if bias != "none" {
            return Err(cfg_err(
                path,
                format!("adapter bias {bias:?}: only \"none\" is read"),
            ));
        }
        if v.get("modules_to_save")
            .is_some_and(|m| !m.is_null() && m.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(cfg_err(
                path,
                "modules_to_save (fully trained modules) are not supported",
            ));
        }
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .and_then(|r| usize::try_from(r).ok())
            .filter(|r| (1..=MAX_RANK).contains(r))
            .ok_or_else(|| cfg_err(path, format!("r must be in 1..={MAX_RANK}")))?;
        let alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .filter(|a| a.is_finite() && *a > 0.0 && *a < 1e6)
            .ok_or_else(|| cfg_err(path, "lora_alpha must be a positive number"))?;
        let target_modules = match v.get("target_modules") {
            Some(Value::Array(a)) if a.len() <= 1024 => a
                .iter()
                .map(|m| {
                    m.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| cfg_err(path, "target_modules must be strings"))
                })
                .collect::<Result<Vec<_>>>()?,
            Some(Value::String(s)) if s.len() <= 256 => vec![s.clone()],
            _ => {
                return Err(cfg_err(
                    path,
                    "target_modules must be a list of module names",
                ))
            }
        };
        let alpha_pattern = match v.get("alpha_pattern") {
            Some(Value::Object(m)) if m.len() <= 1024 => m
                .iter()
                .map(|(k, a)| {
                    a.as_f64()
                        .filter(|a| a.is_finite() && *a > 0.0)
                        .map(|a| (k.clone(), a))
                        .ok_or_else(|| cfg_err(path, "alpha_pattern values must be numbers"))
                })
                .collect::<Result<Vec<_>>>()?,
            None | Some(Value::Null) => Vec::new(),
            Some(_) => return Err(cfg_err(path, "alpha_pattern must be an object")),
        };
        Ok(Self {
            r,
            alpha,
            target_modules,
            fan_in_fan_out: v
                .get("fan_in_fan_out")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            use_rslora: v
                .get("use_rslora")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            alpha_pattern,
        })
    }

    /// The scale `s` of a module with rank `r`.
    fn scale(&self, module: &str, r: usize) -> f64 {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(k, _)| module == k || module.ends_with(&format!(".{k}")))
            .map_or(self.alpha, |(_, a)| *a);
        if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        }
    }
}

/// One adapted base tensor: the adapter's tensors and its scale.
#[derive(Clone, Debug)]
struct Pair {
    weight: String,
    a: String,
    b: String,
    rank: usize,
    in_dim: usize,
    out_total: usize,
    scale: f64,
}

/// The server's adapters (see the module documentation).
#[derive(Debug)]
pub struct LoraAdapter {
    dir: PathBuf,
    config: LoraConfig,
    file: WeightFile,
    pairs: Vec<Pair>,
}

/// The module path of a base tensor name (`x.y.q_proj.weight` -> `x.y.q_proj`).
fn module_of(weight: &str) -> &str {
    weight.strip_suffix(".weight").unwrap_or(weight)
}

impl LoraAdapter {
    /// Opens a PEFT adapter folder for `graph`: every LoRA pair in the file must adapt a
    /// linear weight of the graph with matching shapes, and its module must be one of the
    /// config's `target_modules`.
    pub fn open(dir: &Path, graph: &Graph) -> Result<Self> {
        let config = LoraConfig::from_file(&dir.join("adapter_config.json"))?;
        let path = dir.join("adapter_model.safetensors");
        let file = WeightFile::open(&path)?;
        let names = file.names();
        let mut pairs = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for n in &graph.nodes {
            let Op::Linear {
                weight,
                in_dim,
                out_total,
                ..
            } = &n.op
            else {
                continue;
            };
            if seen.contains(weight) {
                continue;
            }
            seen.push(weight.clone());
            let module = module_of(weight);
            let suffix_a = format!(".{module}.lora_A.weight");
            let found: Vec<&String> = names
                .iter()
                .filter(|k| k.ends_with(&suffix_a) || *k == &format!("{module}.lora_A.weight"))
                .collect();
            let a = match found.as_slice() {
                [] => continue,
                [one] => (*one).clone(),
                _ => {
                    return Err(cfg_err(
                        &path,
                        format!("several LoRA pairs name module {module:?}"),
                    ))
                }
            };
            let b = a.replace(".lora_A.weight", ".lora_B.weight");
            let last = module.rsplit('.').next().unwrap_or(module);
            if !config
                .target_modules
                .iter()
                .any(|t| t == last || module.ends_with(t.as_str()))
            {
                return Err(cfg_err(
                    &path,
                    format!("{module:?} carries an adapter but is not in target_modules"),
                ));
            }
            let sa = file.shape(&a)?;
            let sb = file.shape(&b)?;
            let rank = match (sa.as_slice(), sb.as_slice()) {
                ([r, i], [o, r2]) if r == r2 && i == in_dim && o == out_total => *r,
                _ => {
                    return Err(cfg_err(
                        &path,
                        format!(
                            "{module:?}: lora_A {sa:?} and lora_B {sb:?} do not fit a {in_dim} -> \
                             {out_total} layer"
                        ),
                    ))
                }
            };
            if !(1..=MAX_RANK).contains(&rank) {
                return Err(cfg_err(&path, format!("{module:?}: rank {rank}")));
            }
            pairs.push(Pair {
                weight: weight.clone(),
                a,
                b,
                rank,
                in_dim: *in_dim,
                out_total: *out_total,
                scale: config.scale(module, rank),
            });
        }
        let used = pairs.len() * 2;
        let lora_keys = names.iter().filter(|k| k.contains(".lora_")).count();
        if used != lora_keys {
            return Err(cfg_err(
                &path,
                format!(
                    "{lora_keys} LoRA tensors, of which {used} adapt a layer of the model (the \
                     adapter was made for another model?)"
                ),
            ));
        }
        if pairs.is_empty() {
            return Err(cfg_err(&path, "no LoRA pair adapts a layer of the model"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            file,
            pairs,
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed `adapter_config.json`.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The public layout.
    pub fn layout(&self) -> AdapterLayout {
        AdapterLayout {
            ranks: self
                .pairs
                .iter()
                .map(|p| (p.weight.clone(), p.rank))
                .collect(),
        }
    }

    /// The adapter on base tensor `weight`, if it has one.
    pub fn pair(&self, weight: &str) -> Result<Option<LoraPair>> {
        let Some(p) = self.pairs.iter().find(|p| p.weight == weight) else {
            return Ok(None);
        };
        Ok(Some(LoraPair {
            a: self.file.read_f64(&p.a, &[p.rank, p.in_dim])?,
            b: self.file.read_f64(&p.b, &[p.out_total, p.rank])?,
            scale: p.scale,
        }))
    }
}

/// The digest that names a public base model in the handshake: SHA-256 over every weight tensor
/// `graph` reads (in [`Graph::weight_shapes`] order: name, shape, then the values as
/// little-endian f64), as hex. Two sources agree exactly when the walk would read the same
/// values from both, whatever their file formats. Cost: one pass over the weights (dequantized
/// one tensor at a time).
pub fn public_digest(graph: &Graph, weights: &dyn WeightSource) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, shape) in graph.weight_shapes() {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((shape.len() as u64).to_le_bytes());
        for d in &shape {
            h.update((*d as u64).to_le_bytes());
        }
        for v in weights.get(&name, &shape)? {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// One adapted tensor's low-rank update `scale B A`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraPair {
    /// `A`: `[r, in]`, row-major.
    pub a: Vec<f64>,
    /// `B`: `[out, r]` (all outputs of the base tensor), row-major.
    pub b: Vec<f64>,
    /// `alpha / r` (or `alpha / sqrt(r)` with rsLoRA).
    pub scale: f64,
}

/// The server's weights in LoRA mode: the public base's tensors, and the private adapters
/// ([`WeightSource::lora_pair`]) that the walk runs beside each adapted base layer.
pub struct LoraWeights<'a> {
    /// The public base model (the client holds the same).
    pub base: &'a (dyn WeightSource + Sync),
    /// The server's adapters.
    pub adapter: &'a LoraAdapter,
}

impl WeightSource for LoraWeights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        self.base.get(name, shape)
    }

    fn lora_pair(&self, weight: &str) -> Result<Option<LoraPair>> {
        self.adapter.pair(weight)
    }
}

/// The base weights with every adapter merged in (`W + s B A`, in the base tensor's own
/// layout): the fully private run of an adapted model, and its plaintext reference.
pub struct MergedWeights<'a> {
    /// The base weights.
    pub base: &'a (dyn WeightSource + Sync),
    /// The adapters.
    pub adapter: &'a LoraAdapter,
}

impl WeightSource for MergedWeights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let mut w = self.base.get(name, shape)?;
        let Some(LoraPair { a, b, scale: s }) = self.adapter.pair(name)? else {
            return Ok(w);
        };
        let Some(p) = self.adapter.pairs.iter().find(|p| p.weight == name) else {
            return Ok(w);
        };
        let (i, o, r) = (p.in_dim, p.out_total, p.rank);
        // [out, in] (nn.Linear) or [in, out] (Conv1D)
        let layout = if shape == [o, i] {
            WeightLayout::OutIn
        } else {
            WeightLayout::InOut
        };
        for oo in 0..o {
            for ii in 0..i {
                let mut d = 0.0;
                for k in 0..r {
                    d += b.get(oo * r + k).copied().unwrap_or(0.0)
                        * a.get(k * i + ii).copied().unwrap_or(0.0);
                }
                let idx = match layout {
                    WeightLayout::OutIn => oo * i + ii,
                    WeightLayout::InOut => ii * o + oo,
                };
                if let Some(v) = w.get_mut(idx) {
                    *v += s * d;
                }
            }
        }
        Ok(w)
    }
}
