//! Helpers shared by the integration tests: the small model shapes of the secure-executor
//! tests, and the ../shared folder (MiniLM weights and the independent reference embeddings).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers"
)]

pub mod gguf_writer;

use duet_models::{Arch, BuiltinModel, ModelConfig};
use std::path::{Path, PathBuf};

/// The shared folder: `DUET_SHARED_DIR`, else `../shared` beside the repository, when it holds
/// `file` (`what` names it in messages). On CI (`CI=true`) a missing file is a failure,
/// elsewhere the test says it is skipped.
pub fn shared_with(file: &str, what: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DUET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir.join(file).exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{what} not found at {} (set DUET_SHARED_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: {what} not found at {} (set DUET_SHARED_DIR)",
        dir.display()
    );
    None
}

/// The shared folder with the MiniLM weights ([`shared_with`]).
pub fn shared() -> Option<PathBuf> {
    shared_with(
        "models/all-MiniLM-L6-v2/model.safetensors",
        "MiniLM weights",
    )
}

/// SmolLM2-135M-Instruct's GGUF file in the shared folder.
pub const SMOLLM2_GGUF: &str = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The shared folder with SmolLM2 ([`shared_with`]).
pub fn smollm2_shared() -> Option<PathBuf> {
    shared_with(SMOLLM2_GGUF, "SmolLM2")
}

/// One sentence of ../shared/reference/minilm.
#[derive(serde::Deserialize)]
pub struct RefEntry {
    /// The sentence.
    pub text: String,
    /// Its token ids.
    pub input_ids: Vec<u32>,
    /// The independent implementation's sentence embedding.
    pub embedding: Vec<f64>,
}

/// Every reference sentence.
pub fn reference(shared: &Path) -> Vec<RefEntry> {
    let text = std::fs::read_to_string(shared.join("reference/minilm/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The small shapes the secure-executor tests run: 2 layers, vocabulary 1000, hidden 128
/// (BERT / GPT-2: 2 heads, FFN 512; LLaMA: 4 query heads over 2 key heads, FFN 256).
pub fn small(b: BuiltinModel) -> ModelConfig {
    let mut c = b.config();
    c.layers = 2;
    c.vocab_size = 1000;
    c.max_positions = c.max_positions.min(64);
    match c.arch {
        Arch::Llama => {
            c.hidden = 128;
            c.heads = 4;
            c.kv_heads = 2;
            c.intermediate = 256;
        }
        _ => {
            c.hidden = 128;
            c.heads = 2;
            c.kv_heads = 2;
            c.intermediate = 512;
        }
    }
    c
}

/// Largest absolute difference of two equally long vectors.
pub fn max_abs(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Checks secure greedy `tokens` after `prompt` against the reference executor on `w`, step by
/// step, up to the first step whose top-1/top-2 margin is below `min_margin` (fixed point may
/// pick the other token there; from then on the sequences may differ).
pub fn assert_follows_reference<W: duet_models::WeightSource>(
    g: &duet_models::Graph,
    w: &W,
    prompt: &[u32],
    tokens: &[u32],
    min_margin: f64,
) {
    let mut ids = prompt.to_vec();
    for (i, &got) in tokens.iter().enumerate() {
        let (_, l) = duet_models::run_reference_outputs(g, w, &ids).unwrap();
        let l = l.unwrap();
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        let margin = l[idx[0]] - l[idx[1]];
        if margin < min_margin {
            println!("step {i}: margin {margin:.3}, stopping the comparison");
            break;
        }
        assert_eq!(got, idx[0] as u32, "step {i} (margin {margin:.3})");
        ids.push(got);
    }
}

/// One prompt of ../shared/reference/smollm2: the independent implementation's ids, greedy
/// continuation, its top-1/top-2 margins and the 10 largest logits after the prompt.
#[derive(serde::Deserialize)]
pub struct SmolEntry {
    /// The prompt's ids.
    pub input_ids: Vec<u32>,
    /// The greedy continuation.
    pub generated: Vec<u32>,
    /// Each step's top-1/top-2 logit margin.
    pub margins: Vec<f64>,
    /// `(id, logit)` of the 10 largest logits after the prompt.
    pub top10_after_prompt: Vec<(u32, f64)>,
}

/// Every SmolLM2 reference prompt.
pub fn smollm2_entries(shared: &Path) -> Vec<SmolEntry> {
    let text = std::fs::read_to_string(shared.join("reference/smollm2/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}
