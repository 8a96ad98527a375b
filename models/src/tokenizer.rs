//! The client's tokenizer: HuggingFace `tokenizer.json` through the `tokenizers` crate
//! (pure-Rust regex backend).

use crate::{ModelError, Result};
use std::path::{Path, PathBuf};

/// A tokenizer that encodes one sentence at a time without padding.
pub struct TextTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; padding is switched off (the bundled MiniLM one pads to 128).
    pub fn from_file(path: &Path) -> Result<Self> {
        let err = |reason: String| ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        if !path.exists() {
            return Err(err("file not found".into()));
        }
        let mut inner = tokenizers::Tokenizer::from_file(path).map_err(|e| err(e.to_string()))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| err(e.to_string()))?;
        Ok(Self {
            path: path.to_path_buf(),
            inner,
        })
    }

    /// Token ids of `text` with the model's special tokens ([CLS] ... [SEP] for BERT).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }
}
