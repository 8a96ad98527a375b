//! The tokenizer stored in a GGUF file's metadata, rebuilt as a `tokenizers::Tokenizer`.
//!
//! Keys read: `tokenizer.ggml.model` (`gpt2`: byte-level BPE; `llama`: SentencePiece BPE),
//! `tokenizer.ggml.tokens` (the vocabulary; a token's id is its index),
//! `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused,
//! 6 byte), `tokenizer.ggml.merges` (`gpt2`: `"left right"` in rank order),
//! `tokenizer.ggml.scores` (`llama`), `tokenizer.ggml.pre` (which pre-tokenizer split the
//! text before BPE), `tokenizer.ggml.{bos,eos,unknown}_token_id`,
//! `tokenizer.ggml.add_{bos,eos}_token` and `tokenizer.ggml.add_space_prefix`.
//!
//! Byte-level BPE: control and user-defined tokens are matched in the text first (so
//! `<|im_start|>` is one token); the rest is split by the pre-tokenizer's regular
//! expressions, applied one after the other as llama.cpp does (each splits the pieces of
//! the previous one, keeping both matches and the text between them); every piece's UTF-8
//! bytes are mapped to GPT-2's byte alphabet and merged by rank. The expressions are
//! llama.cpp's for the pre-tokenizer names below:
//! - `default` (and a missing name): punctuation runs, the GPT-2 pattern, digit runs, then
//!   groups of three ASCII digits;
//! - `gpt-2`, `mpt`, `olmo`, `jais`: the GPT-2 pattern;
//! - `smollm`, `starcoder`, `refact`, `command-r`, `codeshell`, `exaone`, `minerva-7b`: every
//!   digit alone, then the GPT-2 pattern;
//! - `llama3`, `llama-v3`, `llama-bpe`, `falcon3`, `dbrx`, `smaug-bpe`: LLaMA 3's pattern
//!   (digits in groups of up to three; whole pre-tokens found in the vocabulary skip the
//!   merges for the first four, as llama.cpp's `ignore_merges`);
//! - `qwen2`, `deepseek-r1-qwen`, `stablelm2`, `megrez`: LLaMA 3's pattern with single digits.
//!
//! SentencePiece (`llama`): spaces become `▁` (and one is prepended when
//! `add_space_prefix`, default true), pieces are merged pairwise, best score first, with
//! unknown characters falling back to `<0xXX>` byte tokens. The merge ranks are derived from
//! the scores (every split of a vocabulary piece into two vocabulary pieces, best merged
//! score first; pieces longer than [`MAX_MERGED_PIECE_BYTES`] are left out).

use super::GgufFile;
use crate::{ModelError, Result};
use std::collections::HashMap;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper};

/// GPT-2's pre-tokenizer pattern.
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// LLaMA 3's pattern (case-insensitive contractions spelled out).
pub const LLAMA3_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's pattern: LLaMA 3's with single digits.
pub const QWEN2_PATTERN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Longest SentencePiece piece (in bytes) that merges can produce.
pub const MAX_MERGED_PIECE_BYTES: usize = 256;

/// Token types of `tokenizer.ggml.token_type`.
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// The regular expressions (applied in order) and `ignore_merges` of a pre-tokenizer name.
fn pre_tokenizer(name: Option<&str>) -> Option<(Vec<&'static str>, bool)> {
    Some(match name.unwrap_or("default") {
        "default" => (
            vec![
                r"[\p{P}\$\+<=>\^~\|]+",
                GPT2_PATTERN,
                r"\p{N}+",
                r"[0-9][0-9][0-9]",
            ],
            false,
        ),
        "gpt-2" | "mpt" | "olmo" | "jais" => (vec![GPT2_PATTERN], false),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => {
            (vec![r"\p{N}", GPT2_PATTERN], false)
        }
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => (vec![LLAMA3_PATTERN], true),
        "dbrx" | "smaug-bpe" => (vec![LLAMA3_PATTERN], false),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" => (vec![QWEN2_PATTERN], false),
        _ => return None,
    })
}

/// A tokenizer rebuilt from GGUF metadata, with the special ids `encode` adds.
pub(crate) struct GgufTokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
}

fn special_id(
    file: &GgufFile,
    key: &str,
    n: usize,
    err: &dyn Fn(String) -> ModelError,
) -> Result<Option<u32>> {
    match file.get_u64(key)? {
        None => Ok(None),
        Some(id) if id < n as u64 => Ok(u32::try_from(id).ok()),
        Some(id) => Err(err(format!(
            "{key} = {id} lies outside the vocabulary of {n} tokens"
        ))),
    }
}

/// Builds the tokenizer of `file`.
pub(crate) fn build(file: &GgufFile) -> Result<GgufTokenizer> {
    let err = |reason: String| ModelError::Tokenizer {
        path: file.path().to_path_buf(),
        reason,
    };
    let model = file
        .get_str("tokenizer.ggml.model")?
        .ok_or_else(|| err("no tokenizer.ggml.model in the metadata".into()))?;
    let tokens = file
        .get_str_array("tokenizer.ggml.tokens")?
        .ok_or_else(|| err("no tokenizer.ggml.tokens in the metadata".into()))?;
    if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
        return Err(err(format!("vocabulary of {} tokens", tokens.len())));
    }
    let types = match file.get_int_array("tokenizer.ggml.token_type")? {
        Some(t) if t.len() != tokens.len() => {
            return Err(err(format!(
                "{} token types for {} tokens",
                t.len(),
                tokens.len()
            )))
        }
        t => t,
    };
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(tokens.len());
    for (id, t) in (0u32..).zip(tokens) {
        if t.is_empty() {
            return Err(err(format!("token {id} is empty")));
        }
        if let Some(prev) = vocab.insert(t, id) {
            return Err(err(format!(
                "token {t:?} appears twice (ids {prev} and {id})"
            )));
        }
    }
    let n = tokens.len();
    let bos = special_id(file, "tokenizer.ggml.bos_token_id", n, &err)?;
    let eos = special_id(file, "tokenizer.ggml.eos_token_id", n, &err)?;
    let unk = special_id(file, "tokenizer.ggml.unknown_token_id", n, &err)?;
    let pre = file.get_str("tokenizer.ggml.pre")?;
    let spm = match model {
        "gpt2" => false,
        "llama" => true,
        other => {
            return Err(err(format!(
                "unsupported tokenizer model {other:?} (supported: gpt2, llama)"
            )))
        }
    };
    let (mut inner, default_bos) = if spm {
        (sentencepiece(file, tokens, &vocab, unk, &err)?, true)
    } else {
        let (patterns, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| {
            err(format!(
                "unsupported pre-tokenizer {:?} (supported: default, gpt-2, smollm, llama3, \
                 llama-bpe, qwen2 and their aliases)",
                pre.unwrap_or_default()
            ))
        })?;
        (
            byte_level(file, tokens, patterns, ignore_merges, &err)?,
            ignore_merges,
        )
    };
    // control and user-defined tokens are matched in the text before splitting
    let mut special = Vec::new();
    let mut user = Vec::new();
    for (t, &ty) in tokens.iter().zip(types.unwrap_or(&[])) {
        match ty {
            TYPE_CONTROL => special.push(AddedToken::from(t.clone(), true)),
            TYPE_USER_DEFINED => user.push(AddedToken::from(t.clone(), false).normalized(false)),
            _ => {}
        }
    }
    inner.add_special_tokens(&special);
    inner.add_tokens(&user);
    let add_bos = file
        .get_bool("tokenizer.ggml.add_bos_token")?
        .unwrap_or(default_bos);
    let add_eos = file
        .get_bool("tokenizer.ggml.add_eos_token")?
        .unwrap_or(false);
    if add_bos && bos.is_none() {
        return Err(err(
            "add_bos_token is set but there is no bos_token_id".into()
        ));
    }
    if add_eos && eos.is_none() {
        return Err(err(
            "add_eos_token is set but there is no eos_token_id".into()
        ));
    }
    Ok(GgufTokenizer {
        inner,
        bos,
        eos,
        add_bos,
        add_eos,
    })
}

/// `{"vocab": ..., "merges": [[a, b], ...], ...}` deserialized into the
/// `tokenizers` BPE model (its builder takes a map type of another crate).
fn bpe(
    tokens: &[String],
    merges: Vec<(String, String)>,
    options: serde_json::Value,
    err: &dyn Fn(String) -> ModelError,
) -> Result<BPE> {
    let vocab: serde_json::Map<String, serde_json::Value> = (0u32..)
        .zip(tokens)
        .map(|(id, t)| (t.clone(), serde_json::Value::from(id)))
        .collect();
    let mut json = serde_json::json!({ "vocab": vocab, "merges": merges });
    if let (Some(obj), serde_json::Value::Object(opts)) = (json.as_object_mut(), options) {
        obj.extend(opts);
    }
    serde_json::from_value(json).map_err(|e| err(format!("cannot build the BPE model: {e}")))
}

fn byte_level(
    file: &GgufFile,
    tokens: &[String],
    patterns: Vec<&str>,
    ignore_merges: bool,
    err: &dyn Fn(String) -> ModelError,
) -> Result<tokenizers::Tokenizer> {
    let merges = file
        .get_str_array("tokenizer.ggml.merges")?
        .ok_or_else(|| err("no tokenizer.ggml.merges in the metadata".into()))?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() && !b.contains(' ') => {
                Ok((a.to_string(), b.to_string()))
            }
            _ => Err(err(format!(
                "merge {i} ({m:?}) is not two tokens separated by a space"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let model = bpe(
        tokens,
        merges,
        serde_json::json!({ "ignore_merges": ignore_merges }),
        err,
    )?;
    let mut pre: Vec<PreTokenizerWrapper> = Vec::new();
    for p in patterns {
        let split = Split::new(
            SplitPattern::Regex(p.to_string()),
            tokenizers::SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| err(format!("pre-tokenizer pattern: {e}")))?;
        pre.push(split.into());
    }
    pre.push(ByteLevel::new(false, false, false).into());
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Sequence::new(pre)));
    tok.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    Ok(tok)
}

fn sentencepiece(
    file: &GgufFile,
    tokens: &[String],
    vocab: &HashMap<&str, u32>,
    unk: Option<u32>,
    err: &dyn Fn(String) -> ModelError,
) -> Result<tokenizers::Tokenizer> {
    let scores = file
        .get_float_array("tokenizer.ggml.scores")?
        .ok_or_else(|| err("no tokenizer.ggml.scores in the metadata".into()))?;
    if scores.len() != tokens.len() {
        return Err(err(format!(
            "{} scores for {} tokens",
            scores.len(),
            tokens.len()
        )));
    }
    // every split of a piece into two vocabulary pieces is a merge, ranked by the merged
    // piece's score (best first), then by its id
    let mut merges: Vec<(f64, u32, String, String)> = Vec::new();
    for ((id, piece), &score) in (0u32..).zip(tokens).zip(scores) {
        // the work per piece grows with the square of its length: longer pieces (none in
        // real SentencePiece vocabularies, whose pieces are a few characters) are not merged
        if piece.len() > MAX_MERGED_PIECE_BYTES {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (a, b) = piece.split_at(cut);
            if vocab.contains_key(a) && vocab.contains_key(b) {
                merges.push((score, id, a.to_string(), b.to_string()));
            }
        }
    }
    merges.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    let merges = merges.into_iter().map(|(_, _, a, b)| (a, b)).collect();
    let mut options = serde_json::json!({ "byte_fallback": true, "fuse_unk": true });
    if let (Some(u), Some(o)) = (unk, options.as_object_mut()) {
        let text = tokens.get(u as usize).cloned().unwrap_or_default();
        o.insert("unk_token".into(), text.into());
    }
    let model = bpe(tokens, merges, options, err)?;
    let space_prefix = file
        .get_bool("tokenizer.ggml.add_space_prefix")?
        .unwrap_or(true);
    let mut norm: Vec<NormalizerWrapper> = Vec::new();
    if space_prefix {
        norm.push(Prepend::new("▁".into()).into());
    }
    norm.push(
        Replace::new(" ", "▁")
            .map_err(|e| err(e.to_string()))?
            .into(),
    );
    let mut dec: Vec<DecoderWrapper> = vec![
        Replace::new("▁", " ")
            .map_err(|e| err(e.to_string()))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if space_prefix {
        dec.push(Strip::new(' ', 1, 0).into());
    }
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_normalizer(Some(NormalizerSequence::new(norm)));
    tok.with_decoder(Some(DecoderSequence::new(dec)));
    Ok(tok)
}
