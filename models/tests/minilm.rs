//! all-MiniLM-L6-v2 (real weights in ../shared/models) against embeddings an independent
//! implementation computed (../shared/reference/minilm).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::reference::cosine;
use duet_models::{run_reference, sentence_embedding, ModelDir};
use std::path::PathBuf;

/// The shared folder: `DUET_SHARED_DIR`, else `../shared` beside the repository. On CI
/// (`CI=true`) a missing folder is a failure, elsewhere the test says it is skipped.
fn shared() -> Option<PathBuf> {
    let dir = std::env::var_os("DUET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    if dir
        .join("models/all-MiniLM-L6-v2/model.safetensors")
        .exists()
    {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "shared models not found at {} (set DUET_SHARED_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "SKIPPED: MiniLM weights not found at {} (set DUET_SHARED_DIR)",
        dir.display()
    );
    None
}

#[derive(serde::Deserialize)]
struct RefEntry {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn reference(shared: &std::path::Path) -> Vec<RefEntry> {
    let text = std::fs::read_to_string(shared.join("reference/minilm/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn tokenizer_matches_the_reference_ids() {
    let Some(shared) = shared() else { return };
    let model = ModelDir::open(&shared.join("models/all-MiniLM-L6-v2")).unwrap();
    let tok = model.tokenizer().unwrap();
    for r in reference(&shared) {
        assert_eq!(tok.encode(&r.text).unwrap(), r.input_ids, "{:?}", r.text);
    }
}

#[test]
fn reference_executor_matches_the_independent_embeddings() {
    let Some(shared) = shared() else { return };
    let model = ModelDir::open(&shared.join("models/all-MiniLM-L6-v2")).unwrap();
    let weights = model.open_weights().unwrap();
    let refs = reference(&shared);
    assert!(refs.len() >= 3);
    let mut worst = 1.0f64;
    for r in &refs {
        let hidden = run_reference(&model.graph, &weights, &r.input_ids).unwrap();
        assert_eq!(hidden.rows, r.input_ids.len());
        let emb = sentence_embedding(&hidden);
        let c = cosine(&emb, &r.embedding);
        eprintln!("cosine {c:.9}  {}", r.text);
        worst = worst.min(c);
    }
    assert!(worst >= 0.99999, "worst cosine {worst}");
}
