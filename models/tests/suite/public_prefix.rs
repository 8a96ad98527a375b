//! Generation after a public prefix (the server runs it in the clear; the private prompt
//! attends to its keys and values with known-operand products) on small decoder shapes with
//! random weights: the logits equal the reference executor's on the concatenated prompt within
//! 0.1 (the bound of plain generation), greedy tokens follow it, the cost model's prediction
//! equals the measured bytes node by node, in both KV-cache modes; malformed prefixes are
//! refused; and SmolLM2 with a public chat prefix against the independent reference.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::{
    assert_follows_reference, max_abs, small, smollm2_entries, smollm2_shared as shared,
    SMOLLM2_GGUF as GGUF,
};
use duet_models::generate::{predict_generation_after, GenerateOptions, Generation};
use duet_models::session::{Client, RunConfig, Server, TokenChoice};
use duet_models::{run_reference_outputs, BuiltinModel, Graph, ModelError, RandomWeights};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{KvCacheMode, KvPolicy, SecureOptions};
use duet_transport::run_two_party;

const SEED: u64 = 11;

fn run(
    g: &Graph,
    prefix: &[u32],
    prompt: &[u32],
    opts: &GenerateOptions,
    secure: &SecureOptions,
) -> Result<Generation, ModelError> {
    let w = RandomWeights { seed: SEED };
    run_on(
        g,
        &w,
        &RunConfig::given(secure),
        None,
        (prefix, prompt),
        opts,
    )
}

/// One session on `w` (the server keeping prefixes in `cache`, if given): generation after
/// the public `prefix`.
fn run_on(
    g: &Graph,
    w: &(dyn duet_models::WeightSource + Sync),
    config: &RunConfig,
    cache: Option<&duet_models::prefix::PrefixCache>,
    (prefix, prompt): (&[u32], &[u32]),
    opts: &GenerateOptions,
) -> Result<Generation, ModelError> {
    let (s, c) = run_two_party(
        |ch| {
            let mut server = Server::accept(ch, g, w, config)?;
            if let Some(c) = cache {
                server.use_prefix_cache(c);
            }
            server.serve()
        },
        |ch| {
            let mut client = Client::connect(ch, g, config, prompt.len())?;
            let out = client.generate_after(prefix, prompt, opts, &mut |_| {}, &mut |_| {})?;
            client.close()?;
            Ok::<_, ModelError>(out)
        },
    );
    let gen = c?;
    s?;
    Ok(gen)
}

fn encrypted_cache() -> SecureOptions {
    let mut o = SecureOptions::default();
    o.plan.linear_orbits = true;
    o.plan.kv_cache = KvCacheMode::Encrypted(KvPolicy::default());
    o
}

/// A prefix whose ids span the vocabulary (extreme ids included) and a private prompt.
fn inputs() -> (Vec<u32>, Vec<u32>) {
    let prefix: Vec<u32> = (0..13u32)
        .map(|i| (i * 331 + 7) % 1000)
        .chain([0, 999])
        .collect();
    (prefix, vec![3, 999, 17, 500])
}

fn check(b: BuiltinModel, secure: &SecureOptions) {
    let g = Graph::build(&small(b));
    let (prefix, prompt) = inputs();
    let w = RandomWeights { seed: SEED };
    // logits of the first two steps against the reference on prefix + prompt (+ token)
    let logits = GenerateOptions {
        max_new_tokens: 2,
        choice: TokenChoice::Logits,
        stop: Vec::new(),
    };
    let gen = run(&g, &prefix, &prompt, &logits, secure).unwrap();
    assert_eq!(gen.prefix_len, prefix.len());
    let mut ids = [prefix.clone(), prompt.clone()].concat();
    for (step, l) in gen.logits.iter().enumerate() {
        let (_, want) = run_reference_outputs(&g, &w, &ids).unwrap();
        let err = max_abs(l, &want.unwrap());
        println!("{}: step {step}: logits error {err:.4}", b.name());
        assert!(err < 0.1, "{}: step {step}: logits error {err}", b.name());
        ids.push(gen.tokens[step]);
    }
    // greedy tokens follow the reference; the prediction equals the measured bytes
    let n = 3;
    let gen = run(
        &g,
        &prefix,
        &prompt,
        &GenerateOptions::greedy(n, Vec::new()),
        secure,
    )
    .unwrap();
    let all = [prefix.clone(), prompt.clone()].concat();
    assert_follows_reference(&g, &w, &all, &gen.tokens, 0.05);
    let p = predict_generation_after(
        &g,
        prefix.len(),
        prompt.len(),
        n,
        secure,
        &TokenChoice::Greedy,
        &MachineProfile::default_profile().unwrap(),
    )
    .unwrap();
    let measured: Vec<_> = std::iter::once(&gen.prefill).chain(&gen.steps).collect();
    let predicted: Vec<_> = std::iter::once(&p.prefill).chain(&p.steps).collect();
    assert_eq!(measured.len(), predicted.len());
    for (k, (m, pr)) in measured.iter().zip(&predicted).enumerate() {
        for (node, (name, _, e)) in m.nodes.iter().zip(&pr.nodes) {
            assert_eq!(&node.name, name, "step {k}");
            assert_eq!(node.bytes, e.bytes, "step {k}: bytes of {name}");
        }
        assert_eq!(pr.nodes_total().bytes, m.online_bytes, "step {k}");
    }
    println!(
        "{}: prefix {} + prompt {}: prefill {} B, steps {:?} B",
        b.name(),
        prefix.len(),
        prompt.len(),
        gen.prefill.online_bytes,
        gen.steps.iter().map(|s| s.online_bytes).collect::<Vec<_>>()
    );
}

#[test]
fn llama_prefix_shared_cache() {
    check(BuiltinModel::Llama7bShape, &SecureOptions::default());
}

#[test]
fn llama_prefix_encrypted_cache() {
    check(BuiltinModel::Llama7bShape, &encrypted_cache());
}

#[test]
fn gpt2_prefix_encrypted_cache() {
    check(BuiltinModel::Gpt2, &encrypted_cache());
}

/// A prefix attends like the same tokens sent privately, at a fraction of the bytes of
/// sending them privately (the prefix's own layers run in the clear).
#[test]
fn a_prefix_costs_less_than_the_same_tokens_private() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let (prefix, prompt) = inputs();
    let opts = encrypted_cache();
    let profile = MachineProfile::default_profile().unwrap();
    let with = predict_generation_after(
        &g,
        prefix.len(),
        prompt.len(),
        2,
        &opts,
        &TokenChoice::Greedy,
        &profile,
    )
    .unwrap();
    let private = predict_generation_after(
        &g,
        0,
        prefix.len() + prompt.len(),
        2,
        &opts,
        &TokenChoice::Greedy,
        &profile,
    )
    .unwrap();
    let (a, b) = (
        with.prefill.nodes_total().bytes,
        private.prefill.nodes_total().bytes,
    );
    println!("prefill after a public prefix {a} B, all private {b} B");
    assert!(a < b, "{a} vs {b}");
}

/// The server's cache of prefixes across sessions: a second session with the same prefix is a
/// hit and gives the same logits; another prefix or another format is a miss; the least
/// recently used prefix is dropped beyond the capacity.
#[test]
fn the_prefix_cache_serves_later_sessions() {
    use duet_models::prefix::PrefixCache;
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let w = RandomWeights { seed: SEED };
    let (prefix, prompt) = inputs();
    let secure = SecureOptions::default();
    let cache = PrefixCache::new(2);
    let config = RunConfig::given(&secure);
    let opts = GenerateOptions {
        max_new_tokens: 1,
        choice: TokenChoice::Logits,
        stop: Vec::new(),
    };
    let session = || {
        run_on(&g, &w, &config, Some(&cache), (&prefix, &prompt), &opts)
            .unwrap()
            .logits
            .remove(0)
    };
    let first = session();
    assert_eq!(cache.len(), 1);
    let second = session();
    assert_eq!(cache.len(), 1, "the same prefix is one entry");
    let (_, want) =
        run_reference_outputs(&g, &w, &[prefix.clone(), prompt.clone()].concat()).unwrap();
    let want = want.unwrap();
    assert!(max_abs(&first, &want) < 0.1 && max_abs(&second, &want) < 0.1);
    // direct use: hit, miss on another prefix and on another format, eviction
    let hit = |ids: &[u32], o: &SecureOptions| cache.server_prefix::<()>(&g, &w, ids, o).unwrap().2;
    assert!(hit(&prefix, &secure));
    assert!(!hit(&prefix[1..], &secure));
    let mut other = secure.clone();
    other.frac += 1;
    other.ring_bits += 1;
    assert!(!hit(&prefix, &other));
    assert_eq!(cache.len(), 2);
    assert!(!hit(&prefix, &secure), "dropped as the least recently used");
}

#[test]
fn malformed_prefixes_are_refused() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let opts = SecureOptions::default();
    let greedy = GenerateOptions::greedy(1, Vec::new());
    let max = g.config.max_positions;
    // a prefix that leaves no room for the prompt
    let long: Vec<u32> = (0..max as u32).map(|i| i % 1000).collect();
    let e = run(&g, &long, &[1], &greedy, &opts).unwrap_err();
    assert!(e.to_string().contains("prefix"), "{e}");
    // an id outside the vocabulary
    let e = run(&g, &[1, 1000], &[1], &greedy, &opts).unwrap_err();
    assert!(e.to_string().contains("vocabulary"), "{e}");
    // an encoder has no prefix
    let bert = Graph::build(&small(BuiltinModel::BertBase));
    let e = run(&bert, &[1, 2], &[1], &greedy, &opts).unwrap_err();
    assert!(!e.to_string().is_empty());
}

/// The cost model's prediction for SmolLM2-135M-Instruct with a public prefix beside the
/// private prompt alone (the shape by default: 2048 + 32 tokens, 16 new ones; env
/// `DUET_PREFIX`, `DUET_PROMPT`, `DUET_NEW`), with the decoder options of `duet generate`
/// (fixed `duet` preset): `cargo test --release -p duet-models --test suite public_prefix:: --
/// --ignored --nocapture smollm2_prefix_prediction`.
#[test]
#[ignore = "prints a prediction"]
fn smollm2_prefix_prediction() {
    let Some(dir) = shared() else { return };
    let m = duet_models::GgufModel::open(&dir.join(GGUF)).unwrap();
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (pre, prompt, new) = (
        env("DUET_PREFIX", 2048),
        env("DUET_PROMPT", 32),
        env("DUET_NEW", 16),
    );
    let (opts, _) = RunConfig::fixed("duet").options(&m.graph, 1).unwrap();
    let profile = MachineProfile::default_profile().unwrap();
    let lan = duet_transport::relay::NetProfile::by_name("lan").unwrap();
    for p in [0, pre] {
        let g = predict_generation_after(
            &m.graph,
            p,
            prompt,
            new,
            &opts,
            &TokenChoice::Greedy,
            &profile,
        )
        .unwrap();
        let pf = g.prefill.nodes_total();
        let steps: u64 = g.steps.iter().map(|s| s.nodes_total().bytes).sum();
        let steps_s: f64 = g.steps.iter().map(|s| s.nodes_total().latency(&lan)).sum();
        println!(
            "prefix {p} + prompt {prompt} + {new} new: prefill {:.1} MB {:.1} s, decode {:.1} MB {:.1} s, total {:.1} MB {:.1} s",
            pf.bytes as f64 / 1e6,
            pf.latency(&lan),
            steps as f64 / 1e6,
            steps_s,
            (pf.bytes + steps) as f64 / 1e6,
            pf.latency(&lan) + steps_s
        );
        for (name, _, e) in g
            .prefill
            .nodes
            .iter()
            .filter(|n| n.0.starts_with("layer0."))
        {
            println!("  {name:32} {:>12} B", e.bytes);
        }
    }
}

// ---- SmolLM2-135M-Instruct (GGUF Q4_1) on a reference chat prompt whose first tokens are a
// public prefix the server runs in the clear, the rest private: the logits after the prompt
// within 0.1 of the independent implementation's top 10 (`reference/smollm2/reference.json`),
// the tokens equal to its greedy continuation on the steps whose reference margin is at least
// 0.1. Skipped (with a message) where the files are absent, a failure on CI.

#[test]
fn smollm2_public_prefix_follows_the_reference() {
    let Some(dir) = shared() else { return };
    let model = duet_models::GgufModel::open(&dir.join(GGUF)).unwrap();
    let entries = smollm2_entries(&dir);
    // entry 1: a 35-token chat prompt (system turn, user turn, assistant header); its first 5
    // reference steps have margins above 0.1 (2 are checked: CI time). The private tail is the
    // user's last words and the assistant header.
    let e = &entries[1];
    let (prefix, prompt) = e.input_ids.split_at(28);
    let steps = e.margins.iter().take_while(|&&m| m >= 0.1).count().min(2);
    assert_eq!(steps, 2, "the entry gives 2 checked steps");
    let opts = GenerateOptions {
        max_new_tokens: steps,
        choice: TokenChoice::Logits,
        stop: Vec::new(),
    };
    let config = RunConfig::fixed("duet");
    let t = std::time::Instant::now();
    let g = run_on(&model.graph, &model, &config, None, (prefix, prompt), &opts).unwrap();
    let mut worst: f64 = 0.0;
    for &(id, want) in &e.top10_after_prompt {
        worst = worst.max((g.logits[0][id as usize] - want).abs());
    }
    println!(
        "prefix {} (server in the clear {:.2} s) + private {}: prefill {:.1} MB, steps {:?} MB; \
         worst top-10 logit error {worst:.4}; {:.1} s in all",
        prefix.len(),
        g.prefix_seconds,
        prompt.len(),
        g.prefill.online_bytes as f64 / 1e6,
        g.steps
            .iter()
            .map(|s| (s.online_bytes as f64 / 1e5).round() / 10.0)
            .collect::<Vec<_>>(),
        t.elapsed().as_secs_f64()
    );
    assert!(worst <= 0.1, "top-10 logits off by {worst}");
    assert_eq!(g.tokens, e.generated[..steps], "greedy continuation");
}

/// Accuracy with position 0 public: SmolLM2's top-10 logits after reference prompt 7 (the
/// prompt of `smollm2.rs`'s logits test) with its first `DUET_PUBLIC` tokens (default 1) a
/// public prefix, against the independent implementation. Position 0 carries the model's
/// massive activations (README, value ranges); run in the clear, they leave the secure run:
/// `cargo test --release -p duet-models --test suite public_prefix:: -- --ignored --nocapture
/// smollm2_position0_public`.
#[test]
#[ignore = "prints an accuracy comparison"]
fn smollm2_position0_public() {
    let Some(dir) = shared() else { return };
    let model = duet_models::GgufModel::open(&dir.join(GGUF)).unwrap();
    let e = &smollm2_entries(&dir)[7];
    let public: usize = std::env::var("DUET_PUBLIC")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (prefix, prompt) = e.input_ids.split_at(public);
    let opts = GenerateOptions {
        max_new_tokens: 1,
        choice: TokenChoice::Logits,
        stop: Vec::new(),
    };
    let g = run_on(
        &model.graph,
        &model,
        &RunConfig::fixed("duet"),
        None,
        (prefix, prompt),
        &opts,
    )
    .unwrap();
    let worst = e
        .top10_after_prompt
        .iter()
        .map(|&(id, want)| (g.logits[0][id as usize] - want).abs())
        .fold(0.0, f64::max);
    println!(
        "{public} public + {} private: worst top-10 logit error {worst:.4}, prefill {:.1} MB",
        prompt.len(),
        g.prefill.online_bytes as f64 / 1e6
    );
}
