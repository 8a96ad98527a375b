//! Seeded random LoRA adapters in PEFT's format, for tests and benchmarks (no real adapter is
//! needed to measure LoRA mode): [`write_seeded_adapter`] writes `adapter_config.json` and
//! `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight` `[r, in]`, `...lora_B.weight` `[out, r]`, F32)
//! for every linear layer of a graph whose module name ends with one of the targets.
//!
//! ```
//! use duet_models::lora::LoraAdapter;
//! use duet_models::lora_seeded::{write_seeded_adapter, SeededAdapter};
//! use duet_models::{BuiltinModel, Graph};
//!
//! let graph = Graph::build(&BuiltinModel::BertTiny.config());
//! let dir = tempfile::tempdir()?;
//! let spec = SeededAdapter::new(&["query", "value"]);
//! let modules = write_seeded_adapter(dir.path(), &graph, &spec)?;
//! assert_eq!(modules.len(), 4); // 2 layers x 2 targets
//! let adapter = LoraAdapter::open(dir.path(), &graph)?;
//! assert_eq!(adapter.layout().ranks.len(), 4);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::graph::{Graph, Op};
use crate::{ModelError, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// What [`write_seeded_adapter`] writes.
#[derive(Clone, Debug, PartialEq)]
pub struct SeededAdapter {
    /// Module names (last path component, e.g. `q_proj`) that get an adapter.
    pub targets: Vec<String>,
    /// The rank.
    pub rank: usize,
    /// `lora_alpha` (the update is scaled by `alpha / rank`).
    pub alpha: f64,
    /// Entries of `A` and `B` are uniform in `(-amp, amp)`.
    pub amp: f64,
    /// The seed.
    pub seed: u64,
}

impl SeededAdapter {
    /// Rank 8, alpha 16, amplitude 0.08, seed 42 on `targets`.
    pub fn new(targets: &[&str]) -> Self {
        Self {
            targets: targets.iter().map(|t| (*t).to_string()).collect(),
            rank: 8,
            alpha: 16.0,
            amp: 0.08,
            seed: 42,
        }
    }
}

fn io(dir: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Input(format!(
        "cannot write the adapter in {}: {e}",
        dir.display()
    ))
}

/// Writes the adapter `spec` for `graph` into `dir` (created if needed); returns the modules
/// that got one, in graph order. Errors if none matches.
pub fn write_seeded_adapter(
    dir: &Path,
    graph: &Graph,
    spec: &SeededAdapter,
) -> Result<Vec<String>> {
    if spec.rank == 0 || spec.rank > crate::lora::MAX_RANK || !spec.amp.is_finite() {
        return Err(ModelError::Input(format!(
            "a seeded adapter of rank {} and amplitude {}",
            spec.rank, spec.amp
        )));
    }
    let mut rng = ChaCha20Rng::seed_from_u64(spec.seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut modules: Vec<String> = Vec::new();
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
        let module = weight.strip_suffix(".weight").unwrap_or(weight).to_string();
        let last = module.rsplit('.').next().unwrap_or(&module);
        if !spec.targets.iter().any(|t| t == last) || modules.contains(&module) {
            continue;
        }
        let r = spec.rank.min(*in_dim).min(*out_total);
        let mut draw = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| ((rng.gen::<f64>() * 2.0 - 1.0) * spec.amp) as f32)
                .flat_map(f32::to_le_bytes)
                .collect()
        };
        let a = draw(r * in_dim);
        let b = draw(out_total * r);
        tensors.push((
            format!("base_model.model.{module}.lora_A.weight"),
            vec![r, *in_dim],
            a,
        ));
        tensors.push((
            format!("base_model.model.{module}.lora_B.weight"),
            vec![*out_total, r],
            b,
        ));
        modules.push(module);
    }
    if modules.is_empty() {
        return Err(ModelError::Input(format!(
            "no linear layer of the model is named like {:?}",
            spec.targets
        )));
    }
    let views = tensors
        .iter()
        .map(|(n, s, d)| {
            TensorView::new(Dtype::F32, s.clone(), d)
                .map(|v| (n.clone(), v))
                .map_err(|e| io(dir, e))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::tensor::serialize(views, None).map_err(|e| io(dir, e))?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).map_err(|e| io(dir, e))?;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "r": spec.rank,
        "lora_alpha": spec.alpha,
        "target_modules": spec.targets,
        "fan_in_fan_out": false,
        "bias": "none",
        "lora_dropout": 0.0,
        "duet_seeded": { "seed": spec.seed, "amp": spec.amp },
    });
    let text = serde_json::to_string_pretty(&config).map_err(|e| io(dir, e))?;
    std::fs::write(dir.join("adapter_config.json"), text).map_err(|e| io(dir, e))?;
    Ok(modules)
}
