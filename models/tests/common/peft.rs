//! A seeded PEFT adapter writer for tests: `adapter_config.json` and
//! `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight` `[r, in]`, `...lora_B.weight` `[out, r]`, F32).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use duet_models::graph::{Graph, Op};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use safetensors::tensor::{Dtype, TensorView};
use std::path::Path;

/// Writes a rank-`r` adapter with `lora_alpha = alpha` on every linear weight of `graph` whose
/// module name ends with one of `targets` (e.g. `q_proj`), entries of `A` and `B` uniform in
/// `(-amp, amp)` from `seed`. Returns the modules written.
pub fn write_adapter(
    dir: &Path,
    graph: &Graph,
    targets: &[&str],
    r: usize,
    alpha: f64,
    amp: f64,
    seed: u64,
) -> Vec<String> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut modules = Vec::new();
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
        let module = weight.strip_suffix(".weight").unwrap().to_string();
        let last = module.rsplit('.').next().unwrap();
        if !targets.contains(&last) || modules.contains(&module) {
            continue;
        }
        let mut draw = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| ((rng.gen::<f64>() * 2.0 - 1.0) * amp) as f32)
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
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).unwrap();
    let config = serde_json::json!({
        "peft_type": "LORA",
        "r": r,
        "lora_alpha": alpha,
        "target_modules": targets,
        "fan_in_fan_out": false,
        "bias": "none",
        "lora_dropout": 0.0,
    });
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&config).unwrap(),
    )
    .unwrap();
    modules
}
