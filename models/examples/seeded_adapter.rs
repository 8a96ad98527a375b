//! Writes a seeded random PEFT adapter for a model (for benchmarks of LoRA mode):
//!
//! ```text
//! cargo run --release -p duet-models --example seeded_adapter -- MODEL OUT_DIR [AMP] [TARGETS]
//! ```
//!
//! `MODEL` is a GGUF file, a HuggingFace folder or a built-in name; `AMP` the amplitude of the
//! entries of `A` and `B` (default 0.15); `TARGETS` comma-separated module names (default the
//! LLaMA projections `q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj`). Rank 8, alpha 16,
//! seed 42.

use duet_models::lora_seeded::{write_seeded_adapter, SeededAdapter};
use duet_models::open::{ModelSpec, PublicModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(model), Some(out)) = (args.first(), args.get(1)) else {
        return Err("usage: seeded_adapter MODEL OUT_DIR [AMP] [TARGETS]".into());
    };
    let amp: f64 = match args.get(2) {
        Some(a) => a.parse()?,
        None => 0.15,
    };
    let targets = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "q_proj,v_proj,o_proj,gate_proj,up_proj,down_proj".into());
    let targets: Vec<&str> = targets.split(',').map(str::trim).collect();
    let graph = PublicModel::open(&ModelSpec::parse(model)?, false)?.graph;
    let spec = SeededAdapter {
        amp,
        ..SeededAdapter::new(&targets)
    };
    let modules = write_seeded_adapter(std::path::Path::new(out), &graph, &spec)?;
    println!("wrote an adapter on {} modules into {out}", modules.len());
    Ok(())
}
