//! Helpers shared by the integration tests that need ../shared (MiniLM weights and the
//! independent reference embeddings).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// The shared folder: `DUET_SHARED_DIR`, else `../shared` beside the repository. On CI
/// (`CI=true`) a missing folder is a failure, elsewhere the test says it is skipped.
pub fn shared() -> Option<PathBuf> {
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
