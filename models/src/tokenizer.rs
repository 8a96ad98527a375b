//! The client's tokenizer: HuggingFace `tokenizer.json`, or the tokenizer in a GGUF file's
//! metadata (see [`crate::gguf`]), through the `tokenizers` crate (pure-Rust regex backend).

use crate::gguf::{GgufFile, GgufModel};
use crate::{ModelError, Result};
use std::path::{Path, PathBuf};

/// A tokenizer that encodes one sentence at a time without padding.
pub struct TextTokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    /// Prepended by [`TextTokenizer::encode`] (GGUF `add_bos_token`).
    prepend: Option<u32>,
    /// Appended by [`TextTokenizer::encode`] (GGUF `add_eos_token`).
    append: Option<u32>,
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
            bos: None,
            eos: None,
            prepend: None,
            append: None,
        })
    }

    /// The tokenizer stored in a GGUF model's metadata (see [`crate::gguf`] for the keys
    /// and pre-tokenizers read).
    pub fn from_gguf(model: &GgufModel) -> Result<Self> {
        Self::from_gguf_file(model.file())
    }

    /// The tokenizer in a GGUF file's metadata, without loading the model.
    pub fn from_gguf_file(file: &GgufFile) -> Result<Self> {
        let t = crate::gguf::tokenizer::build(file)?;
        Ok(Self {
            path: file.path().to_path_buf(),
            inner: t.inner,
            bos: t.bos,
            eos: t.eos,
            prepend: t.bos.filter(|_| t.add_bos),
            append: t.eos.filter(|_| t.add_eos),
        })
    }

    /// The beginning-of-sequence token, if the tokenizer names one (GGUF metadata).
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the tokenizer names one (GGUF metadata): generation
    /// stops there.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// Number of token ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The text of token ids (byte-level tokens are turned back into their UTF-8 bytes;
    /// special tokens are written out; bytes that are not valid UTF-8 on their own, e.g.
    /// half a character, become U+FFFD). An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let n = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= n) {
            return Err(ModelError::Input(format!(
                "token id {bad} outside the vocabulary of {n}"
            )));
        }
        self.inner
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })
    }

    /// Token ids of `text` with the model's special tokens (`[CLS] ... [SEP]` for BERT; the
    /// BOS / EOS a GGUF file asks for). Special tokens written in the text (`<|im_start|>`)
    /// are recognised.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        let mut ids = Vec::with_capacity(enc.len() + 2);
        ids.extend(self.prepend);
        ids.extend_from_slice(enc.get_ids());
        ids.extend(self.append);
        Ok(ids)
    }
}
