//! SmolLM2-135M-Instruct from its GGUF file (Q4_1 blocks, a Q8_0 embedding tied to the head)
//! against an independent implementation: candle's quantized LLaMA with every weight
//! dequantized to f32 (`../shared/reference/smollm2/README.md`).
//!
//! The files are found through `DUET_SMOLLM2_GGUF` and `DUET_SMOLLM2_REFERENCE`, else in
//! `../shared` beside the repository. Without them the tests say they are skipped; on CI
//! (`CI` set) they fail instead.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::gguf::GgmlType;
use duet_models::{run_reference_outputs, GgufModel};
use std::path::PathBuf;
use std::time::Instant;

/// One reference prompt.
#[derive(serde::Deserialize)]
struct Entry {
    question: Option<String>,
    chat: bool,
    text: String,
    input_ids: Vec<u32>,
    generated: Vec<u32>,
    margins: Vec<f64>,
    top10_after_prompt: Vec<(u32, f64)>,
}

/// Below this reference margin (largest minus second largest logit) another implementation
/// may pick the other token, and from there on sequences may diverge.
const MARGIN: f64 = 0.1;
/// Largest difference allowed between Duet's and the reference's logits.
const LOGIT_TOLERANCE: f64 = 1e-2;

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The model and the reference entries, or `None` (skipped) when the files are absent.
fn load() -> Option<(GgufModel, Vec<Entry>)> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let gguf = std::env::var_os("DUET_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            shared.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let reference = std::env::var_os("DUET_SMOLLM2_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared.join("reference/smollm2/reference.json"));
    if !gguf.exists() || !reference.exists() {
        let msg = format!(
            "SmolLM2 files not found ({} and {}; set DUET_SMOLLM2_GGUF and \
             DUET_SMOLLM2_REFERENCE)",
            gguf.display(),
            reference.display()
        );
        assert!(!on_ci(), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let model = GgufModel::open(&gguf).unwrap();
    let entries = serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    Some((model, entries))
}

/// The last position's logits after `ids`.
fn logits(model: &GgufModel, ids: &[u32]) -> Vec<f64> {
    run_reference_outputs(&model.graph, model, ids)
        .unwrap()
        .1
        .expect("a LLaMA graph has logits")
}

fn argmax(v: &[f64]) -> (u32, f64) {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    (order[0] as u32, v[order[0]] - v[order[1]])
}

/// Steps of `e` whose tokens every implementation must reproduce: those before the first
/// step with a margin below [`MARGIN`].
fn firm_steps(e: &Entry) -> usize {
    e.margins
        .iter()
        .position(|&m| m < MARGIN)
        .unwrap_or(e.margins.len())
}

/// Greedy generation with the reference executor (the whole sequence re-run every step);
/// returns the tokens and their margins.
fn greedy(model: &GgufModel, prompt: &[u32], steps: usize) -> Vec<(u32, f64)> {
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..steps {
        let (t, m) = argmax(&logits(model, &ids));
        out.push((t, m));
        ids.push(t);
    }
    out
}

#[test]
fn smollm2_config_and_tensors() {
    let Some((m, _)) = load() else { return };
    let c = &m.config;
    assert_eq!(
        (c.layers, c.hidden, c.intermediate, c.heads, c.kv_heads),
        (30, 576, 1536, 9, 3)
    );
    assert_eq!((c.vocab_size, c.max_positions), (49152, 8192));
    assert_eq!(c.rope_theta, 100_000.0);
    assert!((c.norm_eps - 1e-5).abs() < 1e-12);
    assert!(m.tied_head());
    let f = m.file();
    assert_eq!(f.version(), 3);
    assert_eq!(
        f.tensor("token_embd.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    assert_eq!(
        f.tensor("blk.7.ffn_down.weight").unwrap().ggml_type,
        GgmlType::Q4_1
    );
    assert_eq!(
        f.tensor("blk.7.attn_k.weight").unwrap().shape(),
        vec![192, 576]
    );
}

/// (a) The tokenizer from the metadata gives every prompt's ids; the chat template gives
/// every chat prompt's text.
#[test]
fn smollm2_tokenizer_and_chat_template() {
    let Some((m, entries)) = load() else { return };
    let tok = m.tokenizer().unwrap();
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    let chat = m.chat_template().unwrap();
    assert_eq!(
        chat.default_system(),
        Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
    );
    for e in &entries {
        assert_eq!(tok.encode(&e.text).unwrap(), e.input_ids, "{:?}", e.text);
        assert_eq!(tok.decode(&e.input_ids).unwrap(), e.text);
        if e.chat {
            assert_eq!(chat.render(e.question.as_deref().unwrap()), e.text);
        }
    }
    // digits one by one, runs of spaces, accented letters (ids of the SmolLM2 vocabulary)
    for (text, ids) in [
        ("Hello world! 123", vec![19556, 905, 17, 216, 33, 34, 35]),
        ("  multiple   spaces", vec![216, 2701, 256, 5600]),
        (
            "Café déjà vu.",
            vec![51, 1939, 2756, 32564, 90, 16739, 386, 101, 30],
        ),
    ] {
        assert_eq!(tok.encode(text).unwrap(), ids, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

/// (b) The plaintext reference executor on the GGUF weights gives the reference's ten
/// largest logits after every prompt within [`LOGIT_TOLERANCE`], and the same argmax.
#[test]
fn smollm2_logits_after_prompt() {
    let Some((m, entries)) = load() else { return };
    for e in &entries {
        let t = Instant::now();
        let l = logits(&m, &e.input_ids);
        assert_eq!(l.len(), 49152);
        let err = e
            .top10_after_prompt
            .iter()
            .map(|&(id, want)| (l[id as usize] - want).abs())
            .fold(0.0, f64::max);
        let (top, margin) = argmax(&l);
        println!(
            "{:>2} tokens: max |logit error| {err:.2e}, argmax {top} (reference {}), margin \
             {margin:.3}, {:.1} s",
            e.input_ids.len(),
            e.top10_after_prompt[0].0,
            t.elapsed().as_secs_f64()
        );
        assert!(err < LOGIT_TOLERANCE, "{:?}: logit error {err}", e.text);
        assert_eq!(top, e.top10_after_prompt[0].0, "{:?}", e.text);
    }
}

/// Checks a greedy generation against the reference up to its first low-margin step.
fn check_generation(m: &GgufModel, e: &Entry, steps: usize) -> (usize, Option<usize>) {
    let t = Instant::now();
    let got = greedy(m, &e.input_ids, steps);
    let firm = firm_steps(e);
    let first_diff = got.iter().zip(&e.generated).position(|((t, _), r)| t != r);
    println!(
        "{:?}: {} steps in {:.1} s; reference margins >= {MARGIN} for the first {firm}; first \
         difference at step {first_diff:?}; generated {:?}",
        e.question.as_deref().unwrap_or(&e.text),
        got.len(),
        t.elapsed().as_secs_f64(),
        got.iter().map(|g| g.0).collect::<Vec<_>>()
    );
    for (i, ((tok, _), want)) in got.iter().zip(&e.generated).take(firm).enumerate() {
        assert_eq!(tok, want, "{:?}: step {i}", e.text);
    }
    (firm, first_diff)
}

/// (c) Greedy generation reproduces the reference's tokens up to the first step whose
/// reference margin is below [`MARGIN`], for two prompts (a chat and a plain continuation;
/// the full run is `smollm2_greedy_generation_all_prompts`).
#[test]
fn smollm2_greedy_generation() {
    let Some((m, entries)) = load() else { return };
    for text in [
        "Name three primary colors.",
        "The three laws of motion were formulated by",
    ] {
        let e = entries
            .iter()
            .find(|e| e.question.as_deref() == Some(text) || e.text == text)
            .unwrap();
        let firm = firm_steps(e);
        assert!(firm >= 4, "the prompts chosen have at least 4 firm steps");
        check_generation(&m, e, firm);
    }
}

/// (c), every prompt, all 24 steps (a few minutes in release mode).
#[test]
#[ignore = "minutes: runs all 24 greedy steps of all 8 prompts"]
fn smollm2_greedy_generation_all_prompts() {
    let Some((m, entries)) = load() else { return };
    for e in &entries {
        let (firm, first_diff) = check_generation(&m, e, e.generated.len());
        if let Some(d) = first_diff {
            assert!(d >= firm);
        }
    }
}
