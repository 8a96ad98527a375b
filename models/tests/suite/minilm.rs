//! all-MiniLM-L6-v2 (real weights in ../shared/models) against embeddings an independent
//! implementation computed (../shared/reference/minilm).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::{reference, shared};
use duet_models::reference::cosine;
use duet_models::{run_reference, sentence_embedding, ModelDir};

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
