//! LoRA mode on a real LLaMA-family base: SmolLM2-135M-Instruct (GGUF Q4_1, public, both
//! parties hold it) with a seeded rank-8 PEFT adapter on `q_proj`, `v_proj`, `o_proj`,
//! `gate_proj`, `up_proj` and `down_proj` (private, the server's). The secure run's greedy
//! tokens equal the plaintext reference executor's with the adapters merged (`W + s B A`) on
//! every step above the 0.1 margin, and the adapter is strong enough to change the base
//! model's greedy continuation of the reference prompt. Skipped (with a message) where the
//! files are absent, a failure on CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::{smollm2_shared as shared, SMOLLM2_GGUF as GGUF};
use duet_models::generate::GenerateOptions;
use duet_models::lora::{LoraAdapter, LoraWeights, MergedWeights};
use duet_models::lora_seeded::{write_seeded_adapter, SeededAdapter};
use duet_models::session::{Client, RunConfig, Server};
use duet_models::{run_reference_outputs, GgufModel, WeightSource};
use duet_transport::run_two_party;

#[derive(serde::Deserialize)]
struct Entry {
    input_ids: Vec<u32>,
    generated: Vec<u32>,
}

/// The greedy continuation of `prompt` under `w` (plaintext reference executor), with each
/// step's top-1/top-2 margin.
fn greedy(model: &GgufModel, w: &impl WeightSource, prompt: &[u32], n: usize) -> Vec<(u32, f64)> {
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let (_, l) = run_reference_outputs(&model.graph, w, &ids).unwrap();
        let l = l.unwrap();
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        out.push((idx[0] as u32, l[idx[0]] - l[idx[1]]));
        ids.push(idx[0] as u32);
    }
    out
}

/// The adapter's targets (the six projections).
const TARGETS: [&str; 6] = [
    "q_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Amplitude of the seeded adapter's entries: large enough to change the base's greedy
/// continuation, small enough to keep the activations within the family's declared ranges.
const AMP: f64 = 0.15;

#[test]
fn smollm2_lora_mode_follows_the_merged_reference() {
    let Some(dir) = shared() else { return };
    let model = GgufModel::open(&dir.join(GGUF)).unwrap();
    let text = std::fs::read_to_string(dir.join("reference/smollm2/reference.json")).unwrap();
    let entries: Vec<Entry> = serde_json::from_str(&text).unwrap();
    let steps: usize = std::env::var("DUET_SMOLLM2_LORA_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let e = &entries[7];
    let adir = tempfile::tempdir().unwrap();
    let spec = SeededAdapter {
        amp: AMP,
        ..SeededAdapter::new(&TARGETS)
    };
    let modules = write_seeded_adapter(adir.path(), &model.graph, &spec).unwrap();
    assert_eq!(modules.len(), 6 * model.graph.config.layers);
    let ad = LoraAdapter::open(adir.path(), &model.graph).unwrap();
    let merged = MergedWeights {
        base: &model,
        adapter: &ad,
    };
    let want = greedy(&model, &merged, &e.input_ids, steps);
    // the base's own continuation (the independent reference's) is changed by the adapter
    let base_tokens: Vec<u32> = e.generated.iter().take(steps).copied().collect();
    let merged_tokens: Vec<u32> = want.iter().map(|w| w.0).collect();
    println!("base {base_tokens:?}, with the adapter merged {want:?}");
    assert_ne!(
        merged_tokens, base_tokens,
        "the adapter must change the continuation"
    );

    let server_w = LoraWeights {
        base: &model,
        adapter: &ad,
    };
    let mut config = RunConfig::fixed("duet");
    config.adapter = Some(ad.layout());
    let t = std::time::Instant::now();
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, &model.graph, &server_w, &config)?.serve(),
        |ch| {
            let mut client =
                Client::connect_with_base(ch, &model.graph, &config, e.input_ids.len(), &model)?;
            let out = client.generate(
                &e.input_ids,
                &GenerateOptions::greedy(steps, Vec::new()),
                &mut |_| {},
                &mut |_| {},
            )?;
            client.close()?;
            Ok::<_, duet_models::ModelError>(out)
        },
    );
    s.unwrap();
    let g = c.unwrap();
    println!(
        "{} prompt tokens: LoRA-mode prefill {} B online in {:.1} s (wall {:.1} s for {steps} \
         tokens); secure tokens {:?}",
        e.input_ids.len(),
        g.prefill.online_bytes,
        g.prefill.online_seconds,
        t.elapsed().as_secs_f64(),
        g.tokens
    );
    for (i, (&got, &(tok, margin))) in g.tokens.iter().zip(&want).enumerate() {
        if margin < 0.1 {
            println!("step {i}: margin {margin:.3} below 0.1, stopping the comparison");
            break;
        }
        assert_eq!(got, tok, "step {i} (margin {margin:.3})");
    }
}
