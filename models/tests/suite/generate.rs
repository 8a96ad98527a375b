//! Secure generation on small decoder shapes (GPT-2 and LLaMA, 2 layers, random weights)
//! against the plaintext reference executor, and the cost model's prediction of the prefill
//! and of every decode step against the measured bytes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::small;
use duet_models::generate::{predict_generation, GenerateOptions, Generation, StopReason};
use duet_models::session::{Client, RunConfig, Server, TokenChoice};
use duet_models::{run_reference_outputs, BuiltinModel, Graph, RandomWeights};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{KvCacheMode, KvPolicy, SecureOptions};
use duet_transport::run_two_party;

fn generate(g: &Graph, prompt: &[u32], opts: &GenerateOptions) -> (Generation, Vec<u64>) {
    generate_with(g, prompt, opts, &SecureOptions::default())
}

fn generate_with(
    g: &Graph,
    prompt: &[u32],
    opts: &GenerateOptions,
    secure: &SecureOptions,
) -> (Generation, Vec<u64>) {
    let w = RandomWeights { seed: 11 };
    let config = RunConfig::given(secure);
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, g, &w, &config)?.serve(),
        |ch| {
            let mut client = Client::connect(ch, g, &config, prompt.len())?;
            let mut seen = Vec::new();
            let out = client.generate(prompt, opts, &mut |t| seen.push(t), &mut |_| {})?;
            client.close()?;
            assert_eq!(seen, out.tokens, "tokens are reported as they come");
            Ok::<_, duet_models::ModelError>(out)
        },
    );
    let server = s.unwrap();
    (c.unwrap(), server.iter().map(|r| r.online_bytes).collect())
}

/// The reference's greedy continuation, with the top-1/top-2 margin of each step.
fn reference_greedy(g: &Graph, prompt: &[u32], n: usize) -> Vec<(u32, f64, Vec<f64>)> {
    let w = RandomWeights { seed: 11 };
    let mut ids = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let (_, logits) = run_reference_outputs(g, &w, &ids).unwrap();
        let l = logits.unwrap();
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_by(|&a, &b| l[b].total_cmp(&l[a]).then(a.cmp(&b)));
        let t = idx[0] as u32;
        out.push((t, l[idx[0]] - l[idx[1]], l));
        ids.push(t);
    }
    out
}

/// The decode plan of the `duet` preset for decoders: split-packing linear layers and the KV
/// cache encrypted at the peer.
fn decode_options() -> SecureOptions {
    let mut o = SecureOptions::default();
    o.plan.linear_orbits = true;
    o.plan.kv_cache = KvCacheMode::Encrypted(KvPolicy::default());
    o
}

fn check_greedy(b: BuiltinModel) {
    check_greedy_with(b, &SecureOptions::default());
}

fn check_greedy_with(b: BuiltinModel, secure: &SecureOptions) {
    let g = Graph::build(&small(b));
    let prompt = [3u32, 999, 17, 17, 500];
    let n = 4;
    let (gen, server_bytes) =
        generate_with(&g, &prompt, &GenerateOptions::greedy(n, Vec::new()), secure);
    assert_eq!(gen.tokens.len(), n);
    assert_eq!(gen.stop, StopReason::MaxTokens);
    assert_eq!(gen.steps.len(), n - 1);
    let reference = reference_greedy(&g, &prompt, n);
    // equal up to the first step whose reference margin is small (fixed point may pick the
    // other token there; from then on the sequences may differ)
    for (i, (&got, (want, margin, _))) in gen.tokens.iter().zip(&reference).enumerate() {
        if *margin < 0.05 {
            println!(
                "{}: step {i}: margin {margin:.3}, stopping the comparison",
                b.name()
            );
            break;
        }
        assert_eq!(got, *want, "{}: step {i} (margin {margin:.3})", b.name());
    }
    // predicted bytes of the prefill and of every step equal the measured (both parties)
    let p = predict_generation(
        &g,
        prompt.len(),
        n,
        secure,
        &TokenChoice::Greedy,
        &MachineProfile::default_profile().unwrap(),
    )
    .unwrap();
    let measured: Vec<&duet_models::session::SecureReport> =
        std::iter::once(&gen.prefill).chain(&gen.steps).collect();
    let predicted: Vec<&duet_models::secure::Prediction> =
        std::iter::once(&p.prefill).chain(&p.steps).collect();
    assert_eq!(p.setup.bytes, gen.prefill.setup_bytes, "setup");
    for (k, (m, pr)) in measured.iter().zip(&predicted).enumerate() {
        let names: Vec<&str> = m.nodes.iter().map(|n| n.name.as_str()).collect();
        let pnames: Vec<&str> = pr.nodes.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(names, pnames, "step {k}: the same nodes");
        for (node, (name, _, e)) in m.nodes.iter().zip(&pr.nodes) {
            assert_eq!(node.bytes, e.bytes, "step {k}: bytes of {name}");
        }
        assert_eq!(
            m.online_bytes, server_bytes[k],
            "step {k}: both parties count alike"
        );
        assert_eq!(
            pr.nodes_total().bytes,
            m.online_bytes,
            "step {k}: online bytes"
        );
    }
    println!(
        "{}: prefill {} B, decode steps {:?} B",
        b.name(),
        gen.prefill.online_bytes,
        gen.steps.iter().map(|s| s.online_bytes).collect::<Vec<_>>()
    );
}

#[test]
fn llama_greedy_generation_matches_reference_and_prediction() {
    check_greedy(BuiltinModel::Llama7bShape);
}

#[test]
fn gpt2_greedy_generation_matches_reference_and_prediction() {
    check_greedy(BuiltinModel::Gpt2);
}

/// Logits mode: every step's logits within 0.1 of the reference on the same sequence, and
/// stopping at a stop token.
#[test]
fn llama_generation_with_the_encrypted_cache_and_split_linear_layers() {
    check_greedy_with(BuiltinModel::Llama7bShape, &decode_options());
}

#[test]
fn gpt2_generation_with_the_encrypted_cache_and_split_linear_layers() {
    check_greedy_with(BuiltinModel::Gpt2, &decode_options());
}

#[test]
fn logits_mode_and_stop_tokens() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let prompt = [1u32, 2, 3];
    let opts = GenerateOptions {
        max_new_tokens: 3,
        choice: TokenChoice::Logits,
        stop: Vec::new(),
    };
    let (gen, _) = generate(&g, &prompt, &opts);
    assert_eq!(gen.logits.len(), 3);
    let mut ids = prompt.to_vec();
    for (step, l) in gen.logits.iter().enumerate() {
        let (_, want) = run_reference_outputs(&g, &RandomWeights { seed: 11 }, &ids).unwrap();
        let want = want.unwrap();
        let err = l
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(err < 0.1, "step {step}: logits error {err}");
        ids.push(gen.tokens[step]);
    }
    // a stop token: the first generated token ends generation at once
    let first = gen.tokens[0];
    let (gen2, _) = generate(&g, &prompt, &GenerateOptions::greedy(5, vec![first]));
    assert_eq!(gen2.tokens, vec![first]);
    assert_eq!(gen2.stop, StopReason::StopToken);
    assert!(gen2.steps.is_empty());
}

/// Sampling: only ids come back, different seeds can give different continuations, the same
/// seed the same one.
#[test]
fn sampling_is_reproducible_from_the_client_seed() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let prompt = [5u32, 6];
    let sample = |seed| GenerateOptions {
        max_new_tokens: 2,
        choice: TokenChoice::Sample {
            temperature: 1.5,
            top_k: Some(20),
            top_p: None,
            seed,
        },
        stop: Vec::new(),
    };
    let (a, _) = generate(&g, &prompt, &sample(1));
    let (b, _) = generate(&g, &prompt, &sample(1));
    assert_eq!(a.tokens, b.tokens);
    assert!(a.logits.is_empty());
    assert!(a.tokens.iter().all(|&t| (t as usize) < g.config.vocab_size));
}
