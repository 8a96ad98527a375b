//! The secure executor against the plaintext reference executor on the same graph: small
//! BERT, GPT-2 and LLaMA shapes with random weights (2 layers), and all-MiniLM-L6-v2's real
//! weights on CI.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::{reference, shared, small};
use duet_models::reference::cosine;
use duet_models::secure::MulBackend;
use duet_models::secure::{
    run_client, run_client_outputs, run_server, EmbeddingMode, SecureOptions, SecureOutput,
    SecureReport,
};
use duet_models::{
    run_reference, run_reference_outputs, sentence_embedding, BuiltinModel, Graph, Matrix,
    ModelDir, RandomWeights, WeightSource,
};
use duet_protocols::{LayoutPolicy, Preset, ProtocolConfig};
use duet_transport::run_two_party;

fn secure_outputs<W: WeightSource + Sync>(
    graph: &Graph,
    w: &W,
    ids: &[u32],
    opts: &SecureOptions,
) -> (SecureOutput, SecureReport, SecureReport) {
    let (s, c) = run_two_party(
        |ch| run_server(ch, graph, w, opts, &mut |_| {}),
        |ch| run_client_outputs(ch, graph, ids, opts, &mut |_| {}),
    );
    let s = s.unwrap();
    let (m, c) = c.unwrap();
    (m, s, c)
}

fn secure<W: WeightSource + Sync>(
    graph: &Graph,
    w: &W,
    ids: &[u32],
    opts: &SecureOptions,
) -> (Matrix, SecureReport, SecureReport) {
    let (o, s, c) = secure_outputs(graph, w, ids, opts);
    (o.hidden.expect("an encoder reveals its hidden state"), s, c)
}

/// Max abs error and cosine of the flattened outputs.
fn compare(a: &Matrix, b: &Matrix) -> (f64, f64) {
    assert_eq!((a.rows, a.cols), (b.rows, b.cols));
    let err = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    (err, cosine(&a.data, &b.data))
}

fn check_random(b: BuiltinModel, max_err: f64) {
    check_random_with(b, max_err, &SecureOptions::default());
}

fn node_bytes(r: &SecureReport, name: &str) -> u64 {
    r.nodes.iter().find(|n| n.name == name).unwrap().bytes
}

fn check_random_with(b: BuiltinModel, max_err: f64, opts: &SecureOptions) -> SecureReport {
    let c = small(b);
    let g = Graph::build(&c);
    let w = RandomWeights { seed: 7 };
    // extreme ids: first, last, repeated
    let ids: Vec<u32> = vec![0, 999, 5, 5, 123, 998, 1, 500];
    let (plain, plain_logits) = run_reference_outputs(&g, &w, &ids).unwrap();
    let (out, s, cl) = secure_outputs(&g, &w, &ids, opts);
    // an encoder reveals its hidden state, a decoder only its last position's logits (never
    // both: together they would reveal the head's weights)
    assert_eq!(out.logits.is_some(), g.logits.is_some());
    assert_eq!(out.hidden.is_some(), g.logits.is_none());
    let (err, cos) = match &out.hidden {
        Some(h) => compare(h, &plain),
        None => {
            let want = plain_logits.as_ref().unwrap();
            let got = out.logits.as_ref().unwrap();
            let m = |v: &Vec<f64>| Matrix {
                rows: 1,
                cols: v.len(),
                data: v.clone(),
            };
            compare(&m(got), &m(want))
        }
    };
    println!(
        "{}: max abs err {err:.3e}, cosine {cos:.6}, online {} B (server view {} B)",
        b.name(),
        cl.online_bytes,
        s.online_bytes
    );
    if let (Some(got), Some(want)) = (&out.logits, &plain_logits) {
        assert_eq!(got.len(), c.vocab_size);
        let e = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        println!("{}: logits max abs err {e:.3e}", b.name());
        assert!(e <= max_err, "{}: logits error {e}", b.name());
    }
    assert_eq!(
        s.online_bytes, cl.online_bytes,
        "both parties count the same traffic"
    );
    assert!(
        err <= max_err,
        "{}: max abs error {err} > {max_err}",
        b.name()
    );
    assert!(cos >= 0.999, "{}: cosine {cos}", b.name());
    cl
}

#[test]
fn bert_secure_matches_reference() {
    check_random(BuiltinModel::BertTiny, 0.1);
}

#[test]
fn gpt2_secure_matches_reference() {
    check_random(BuiltinModel::Gpt2, 0.1);
}

#[test]
fn llama_secure_matches_reference() {
    check_random(BuiltinModel::Llama7bShape, 0.1);
}

/// The plan's other layouts and backends: LLaMA with HE element-wise gate products and
/// extraction-only attention; BERT with Iron's preset (IKNP, extraction-only layouts) and one
/// linear layer with the fewest key switches.
#[test]
fn plan_variants_match_reference() {
    let mut opts = SecureOptions::default();
    opts.plan.elementwise = MulBackend::He;
    opts.plan.attention = LayoutPolicy::ExtractionOnly;
    check_random_with(BuiltinModel::Llama7bShape, 0.1, &opts);
    let mut iron = SecureOptions::new(ProtocolConfig::preset(Preset::Iron));
    iron.plan.set_linear(
        "layer1.ffn.up",
        LayoutPolicy::FewestKeySwitches { max_bytes: 1 << 30 },
    );
    let r = check_random_with(BuiltinModel::BertTiny, 0.1, &iron);
    // the override took effect: same shape, other layout, other traffic
    assert_ne!(
        node_bytes(&r, "layer0.ffn.up"),
        node_bytes(&r, "layer1.ffn.up")
    );
}

/// OT-based matrix products instead of HE: BERT's query projection and FFN down-projection
/// of each layer and every attention product by COT (Ferret), and LLaMA's gate projection and
/// attention by COT with IKNP (rotary positions, grouped keys).
#[test]
fn ot_matmuls_match_reference() {
    let mut opts = SecureOptions::default();
    for l in ["layer0", "layer1"] {
        opts.plan.set_linear_ot(&format!("{l}.attn.q"), true);
        opts.plan.set_linear_ot(&format!("{l}.ffn.down"), true);
    }
    opts.plan.attention_ot = true;
    check_random_with(BuiltinModel::BertTiny, 0.1, &opts);
    let mut opts = SecureOptions::new(ProtocolConfig::preset(Preset::Iron));
    opts.plan.set_linear_ot("layer0.ffn.gate", true);
    opts.plan.attention_ot = true;
    check_random_with(BuiltinModel::Llama7bShape, 0.1, &opts);
    // a plan naming a node the model does not have is refused by both parties
    let g = Graph::build(&small(BuiltinModel::BertTiny));
    let mut typo = SecureOptions::default();
    typo.plan.set_linear_ot("layer0.attn.query", true);
    let w = RandomWeights { seed: 7 };
    let (s, c) = run_two_party(
        |ch| run_server(ch, &g, &w, &typo, &mut |_| {}),
        |ch| run_client(ch, &g, &[1, 2], &typo, &mut |_| {}),
    );
    for e in [s.unwrap_err().to_string(), c.unwrap_err().to_string()] {
        assert!(e.contains("\"layer0.attn.query\""), "{e}");
    }
}

#[test]
fn server_key_embedding_gives_the_same_model_output() {
    let c = small(BuiltinModel::BertTiny);
    let g = Graph::build(&c);
    let w = RandomWeights { seed: 3 };
    let ids: Vec<u32> = vec![999, 0, 17, 17];
    let plain = run_reference(&g, &w, &ids).unwrap();
    let opts = SecureOptions {
        embedding: EmbeddingMode::ServerKey,
        ..SecureOptions::default()
    };
    let (got, s, cl) = secure(&g, &w, &ids, &opts);
    let (err, cos) = compare(&got, &plain);
    assert!(err <= 0.1 && cos >= 0.999, "err {err}, cosine {cos}");
    assert!(cl.cached_bytes > 0 && cl.cached_bytes == s.cached_bytes);
    let (_, _, he) = secure(&g, &w, &ids, &SecureOptions::default());
    assert_eq!(he.cached_bytes, 0);
    assert!(cl.online_bytes < he.online_bytes);
}

#[test]
fn mismatched_options_are_refused_by_both() {
    let c = small(BuiltinModel::BertTiny);
    let g = Graph::build(&c);
    let w = RandomWeights { seed: 7 };
    let other = SecureOptions {
        frac: 11,
        ..SecureOptions::default()
    };
    let (s, cl) = run_two_party(
        |ch| run_server(ch, &g, &w, &SecureOptions::default(), &mut |_| {}),
        |ch| run_client(ch, &g, &[1, 2, 3], &other, &mut |_| {}),
    );
    // both sides name the differing field with both values
    let (s, cl) = (s.unwrap_err().to_string(), cl.unwrap_err().to_string());
    assert!(
        s.contains("refused the client") && s.contains("frac: 12 vs 11"),
        "{s}"
    );
    assert!(
        cl.contains("server refused") && cl.contains("frac: 12 vs 11"),
        "{cl}"
    );
}

#[test]
fn bad_ids_fail_before_anything_is_sent() {
    let c = small(BuiltinModel::BertTiny);
    let g = Graph::build(&c);
    let (_, cl) = run_two_party(
        |_ch| (),
        |ch| run_client(ch, &g, &[1, 1000], &SecureOptions::default(), &mut |_| {}),
    );
    assert!(cl
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
}

/// The narrowest ring the declared ranges allow (what the planner picks): every decoder's
/// operators (tanh-GELU, SiLU, RMSNorm, rotary positions, gate products) still match.
#[test]
fn narrowest_ring_matches_reference() {
    for b in [BuiltinModel::Gpt2, BuiltinModel::Llama7bShape] {
        let mut opts = SecureOptions::default();
        opts.ring_bits = opts.min_ring_bits();
        assert!(opts.ring_bits < SecureOptions::default().ring_bits);
        check_random_with(b, 0.1, &opts);
    }
}

fn minilm(count: usize, opts: &SecureOptions) {
    let Some(shared) = shared() else { return };
    let model = ModelDir::open(&shared.join("models/all-MiniLM-L6-v2")).unwrap();
    let weights = model.open_weights().unwrap();
    let refs = reference(&shared);
    let opts = opts.clone();
    for r in refs.iter().take(count) {
        let (hidden, _, c) = secure(&model.graph, &weights, &r.input_ids, &opts);
        let emb = sentence_embedding(&hidden);
        let cos = cosine(&emb, &r.embedding);
        println!(
            "MiniLM secure cosine {cos:.6} ({} tokens, {} B online, {:.1} s): {:?}",
            r.input_ids.len(),
            c.online_bytes,
            c.online_seconds,
            r.text
        );
        assert!(cos >= 0.999, "{:?}: cosine {cos}", r.text);
    }
}

#[test]
fn minilm_secure_embeddings_match_the_reference() {
    minilm(3, &SecureOptions::default());
}

/// Real weights at the narrowest ring the declared ranges allow (the planner's choice):
/// MiniLM's largest norm input, 221, is within the declared 512.
#[test]
fn minilm_secure_at_the_narrowest_ring() {
    let mut opts = SecureOptions::default();
    opts.ring_bits = opts.min_ring_bits();
    minilm(2, &opts);
}

#[test]
#[ignore = "all 13 sentences: cargo test --release -p duet-models --test suite secure:: -- --ignored --nocapture"]
fn minilm_secure_all_sentences() {
    minilm(usize::MAX, &SecureOptions::default());
}

/// BERT-base at 128 tokens in one process (both parties): the per-kind figures.
#[test]
#[ignore = "minutes: cargo test --release -p duet-models --test suite secure::bert_base -- --ignored --nocapture"]
fn bert_base_figures() {
    let seq: usize = std::env::var("DUET_SEQ")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let layers: usize = std::env::var("DUET_LAYERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let mut c = BuiltinModel::BertBase.config();
    c.layers = layers;
    let g = Graph::build(&c);
    let w = RandomWeights { seed: 1 };
    let ids: Vec<u32> = (0..seq).map(|i| (i * 7919 % 30522) as u32).collect();
    let t = std::time::Instant::now();
    let (got, s, cl) = secure(&g, &w, &ids, &SecureOptions::default());
    let wall = t.elapsed().as_secs_f64();
    let plain = run_reference(&g, &w, &ids).unwrap();
    let (err, cos) = compare(&got, &plain);
    println!("bert-base {layers} layers, {seq} tokens: wall {wall:.1} s, setup {} B, online {} B, err {err:.3e}, cosine {cos:.6}", cl.setup_bytes, cl.online_bytes);
    for r in &cl.ops {
        println!(
            "  {:18} calls {:4} bytes {:14} rounds {:6} client {:8.2} s",
            r.kind, r.calls, r.bytes, r.rounds, r.seconds
        );
    }
    assert_eq!(s.online_bytes, cl.online_bytes);
}
