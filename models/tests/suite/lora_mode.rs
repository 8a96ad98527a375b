//! LoRA mode (a public base model, private PEFT adapters): the secure run against the
//! plaintext reference with the adapters merged (`W + s B A`), on small LLaMA and BERT shapes
//! with random base weights and seeded adapters; the cost model's bytes against the measured
//! ones; generation; and the refusals.
//!
//! Error bound: the same as the fully private runs of these shapes (`tests/secure.rs`: 0.1
//! absolute on logits or hidden state, cosine >= 0.999): the adapter path adds two
//! truncations per adapted layer at 12 fractional bits (about `2^-12` each).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::{max_abs, small};
use duet_models::generate::{predict_generation, GenerateOptions};
use duet_models::lora::{LoraAdapter, LoraWeights, MergedWeights};
use duet_models::lora_seeded::{write_seeded_adapter, SeededAdapter};
use duet_models::secure::predict;
use duet_models::session::{Client, RunConfig, SecureOutput, SecureReport, Server, TokenChoice};
use duet_models::{run_reference_outputs, BuiltinModel, Graph, RandomWeights};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{KvCacheMode, KvPolicy, SecureOptions};
use duet_transport::run_two_party;

const LLAMA_TARGETS: [&str; 6] = [
    "q_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

fn adapter(g: &Graph, targets: &[&str], amp: f64) -> (tempfile::TempDir, LoraAdapter) {
    let dir = tempfile::tempdir().unwrap();
    let spec = SeededAdapter {
        amp,
        ..SeededAdapter::new(targets)
    };
    let written = write_seeded_adapter(dir.path(), g, &spec).unwrap();
    assert!(!written.is_empty());
    let a = LoraAdapter::open(dir.path(), g).unwrap();
    assert_eq!(a.layout().ranks.len(), written.len());
    (dir, a)
}

/// One secure request in LoRA mode: the server holds base + adapters, the client the base.
fn lora_run(
    g: &Graph,
    base: &RandomWeights,
    ad: &LoraAdapter,
    ids: &[u32],
    opts: &SecureOptions,
) -> (SecureOutput, SecureReport, SecureReport) {
    let server_w = LoraWeights { base, adapter: ad };
    let config = RunConfig::given(opts);
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, g, &server_w, &config)?.serve(),
        |ch| {
            let mut client = Client::connect_with_base(ch, g, &config, ids.len(), base)?;
            let out = client.infer(ids)?;
            client.close()?;
            Ok::<_, duet_models::ModelError>(out)
        },
    );
    let mut s = s.unwrap();
    let (out, c) = c.unwrap();
    assert_eq!(s.len(), 1);
    (out, s.remove(0), c)
}

fn lora_options(ad: &LoraAdapter) -> SecureOptions {
    SecureOptions {
        public_base: Some(ad.layout()),
        ..SecureOptions::default()
    }
}

/// The secure LoRA run's output against the merged reference, the adapters' effect well above
/// the bound, every node's bytes as predicted, and fewer bytes than the fully private run.
fn check_model(b: BuiltinModel, targets: &[&str], amp: f64) {
    let g = Graph::build(&small(b));
    let base = RandomWeights { seed: 7 };
    let (_dir, ad) = adapter(&g, targets, amp);
    let merged = MergedWeights {
        base: &base,
        adapter: &ad,
    };
    // extreme ids: first, last, repeated
    let ids: Vec<u32> = vec![0, 999, 5, 5, 123, 998, 1, 500];
    let flat = |h: Option<duet_models::Matrix>, l: Option<Vec<f64>>| match l {
        Some(l) => l,
        None => h.unwrap().data,
    };
    let (h, l) = run_reference_outputs(&g, &merged, &ids).unwrap();
    let want = flat(Some(h), l);
    let (h0, l0) = run_reference_outputs(&g, &base, &ids).unwrap();
    let base_out = flat(Some(h0), l0);
    let effect = max_abs(&want, &base_out);

    let opts = lora_options(&ad);
    let (out, s, c) = lora_run(&g, &base, &ad, &ids, &opts);
    // a decoder reveals only its logits, an encoder only its hidden state
    assert_eq!(out.logits.is_some(), g.logits.is_some());
    assert_eq!(out.hidden.is_some(), g.logits.is_none());
    let got = flat(out.hidden, out.logits);
    let err = max_abs(&got, &want);
    let cos = duet_models::reference::cosine(&got, &want);
    println!(
        "{}: LoRA mode max abs err {err:.3e} (adapters move the output by {effect:.3}), cosine \
         {cos:.6}, online {} B",
        b.name(),
        c.online_bytes
    );
    assert!(effect > 10.0 * 0.1, "the adapters must matter: {effect}");
    assert!(err <= 0.1, "{}: max abs err {err}", b.name());
    assert!(cos >= 0.999, "{}: cosine {cos}", b.name());
    assert_eq!(s.online_bytes, c.online_bytes, "both parties count alike");

    // the cost model: every node's bytes, and the setup
    let p = predict(
        &g,
        ids.len(),
        &opts,
        &MachineProfile::default_profile().unwrap(),
    )
    .unwrap();
    assert_eq!(p.setup.bytes, c.setup_bytes, "setup bytes");
    let names: Vec<&str> = c.nodes.iter().map(|n| n.name.as_str()).collect();
    let pnames: Vec<&str> = p.nodes.iter().map(|n| n.0.as_str()).collect();
    assert_eq!(names, pnames, "the same nodes");
    for ((name, _, e), m) in p.nodes.iter().zip(&c.nodes) {
        assert_eq!(e.bytes, m.bytes, "bytes of {name}");
    }
    // a base layer without an adapter costs only its truncation: far less than the private
    // product (on these small shapes the adapted layers cost about what private ones do: two
    // rank-r products in place of one, see README's LoRA section)
    let private = predict(
        &g,
        ids.len(),
        &SecureOptions::default(),
        &MachineProfile::default_profile().unwrap(),
    )
    .unwrap();
    let layout = ad.layout();
    let bare = g
        .nodes
        .iter()
        .find_map(|n| match &n.op {
            duet_models::Op::Linear { weight, .. } if layout.rank(weight).is_none() => {
                Some(n.name.clone())
            }
            _ => None,
        })
        .expect("a linear layer without an adapter");
    let bytes_of = |p: &duet_models::secure::Prediction, name: &str| {
        p.nodes.iter().find(|n| n.0 == name).unwrap().2.bytes
    };
    let (lb, pb) = (bytes_of(&p, &bare), bytes_of(&private, &bare));
    println!(
        "{}: {bare} (public, no adapter) {lb} B vs private {pb} B; online bytes LoRA mode {} vs \
         fully private {}",
        b.name(),
        p.nodes_total().bytes,
        private.nodes_total().bytes
    );
    assert!(4 * lb < pb, "{bare}: {lb} B public vs {pb} B private");
}

#[test]
fn llama_lora_mode_matches_the_merged_reference() {
    check_model(BuiltinModel::Llama7bShape, &LLAMA_TARGETS, 0.08);
}

#[test]
fn bert_lora_mode_matches_the_merged_reference() {
    check_model(BuiltinModel::BertTiny, &["query", "value", "dense"], 0.15);
}

/// Generation in LoRA mode on the decode plan (KV cache encrypted at the peer): the greedy
/// tokens of the merged reference (up to a step of small margin), each step's bytes as
/// predicted.
#[test]
fn llama_lora_generation_follows_the_merged_reference() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let base = RandomWeights { seed: 7 };
    let (_dir, ad) = adapter(&g, &LLAMA_TARGETS, 0.08);
    let mut opts = lora_options(&ad);
    opts.plan.linear_orbits = true;
    opts.plan.kv_cache = KvCacheMode::Encrypted(KvPolicy::default());
    let prompt = [3u32, 999, 17, 17, 500];
    let n = 3;
    let server_w = LoraWeights {
        base: &base,
        adapter: &ad,
    };
    let config = RunConfig::given(&opts);
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, &g, &server_w, &config)?.serve(),
        |ch| {
            let mut client = Client::connect_with_base(ch, &g, &config, prompt.len(), &base)?;
            let out = client.generate(
                &prompt,
                &GenerateOptions::greedy(n, Vec::new()),
                &mut |_| {},
                &mut |_| {},
            )?;
            client.close()?;
            Ok::<_, duet_models::ModelError>(out)
        },
    );
    s.unwrap();
    let gen = c.unwrap();
    let merged = MergedWeights {
        base: &base,
        adapter: &ad,
    };
    common::assert_follows_reference(&g, &merged, &prompt, &gen.tokens, 0.05);
    let p = predict_generation(
        &g,
        prompt.len(),
        n,
        &opts,
        &TokenChoice::Greedy,
        &MachineProfile::default_profile().unwrap(),
    )
    .unwrap();
    let measured: Vec<&SecureReport> = std::iter::once(&gen.prefill).chain(&gen.steps).collect();
    let predicted: Vec<&duet_models::secure::Prediction> =
        std::iter::once(&p.prefill).chain(&p.steps).collect();
    assert_eq!(measured.len(), predicted.len());
    for (k, (m, pr)) in measured.iter().zip(&predicted).enumerate() {
        assert_eq!(
            pr.nodes_total().bytes,
            m.online_bytes,
            "step {k}: online bytes"
        );
    }
    println!(
        "LoRA generation: prefill {} B, steps {:?} B",
        gen.prefill.online_bytes,
        gen.steps.iter().map(|s| s.online_bytes).collect::<Vec<_>>()
    );
}

/// The refusals: a client holding a base outside LoRA mode (before anything is sent), a
/// client without the base in LoRA mode, a base that differs from the server's (the handshake's
/// digest, both sides told why), a server without the adapter the layout names, and a layout
/// naming a layer the model lacks.
#[test]
fn lora_mode_refusals() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let base = RandomWeights { seed: 7 };
    let (_dir, ad) = adapter(&g, &["q_proj"], 0.08);
    let plain = RunConfig::given(&SecureOptions::default());
    let lora = RunConfig::given(&lora_options(&ad));
    let ids = [1u32, 2, 3];
    let server_w = LoraWeights {
        base: &base,
        adapter: &ad,
    };
    // a base outside LoRA mode: the server refuses, both say why
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, &g, &base, &plain).map(|_| ()),
        |ch| Client::connect_with_base(ch, &g, &plain, 4, &base).map(|_| ()),
    );
    let (se, ce) = (s.unwrap_err().to_string(), c.unwrap_err().to_string());
    assert!(se.contains("not in LoRA mode"), "{se}");
    assert!(ce.contains("not in LoRA mode"), "{ce}");
    // no base in LoRA mode: refused before anything is sent
    let (_, c) = run_two_party(
        |_ch| Ok::<_, duet_models::ModelError>(()),
        |ch| Client::connect(ch, &g, &lora, 4).map(|_| ()),
    );
    let e = c.unwrap_err().to_string();
    assert!(e.contains("needs the public base"), "{e}");
    // another base: both sides say why
    let other = RandomWeights { seed: 8 };
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, &g, &server_w, &lora).map(|_| ()),
        |ch| Client::connect_with_base(ch, &g, &lora, 4, &other).map(|_| ()),
    );
    let (se, ce) = (s.unwrap_err().to_string(), c.unwrap_err().to_string());
    assert!(se.contains("public base models differ"), "{se}");
    assert!(ce.contains("public base models differ"), "{ce}");
    // the layout names q_proj, the server's weights carry no adapter
    let (s, _c) = run_two_party(
        |ch| Server::accept(ch, &g, &base, &lora)?.serve(),
        |ch| {
            let mut client = Client::connect_with_base(ch, &g, &lora, ids.len(), &base)?;
            client.infer(&ids).map(|_| ())
        },
    );
    let e = s.unwrap_err().to_string();
    assert!(e.contains("does not have"), "{e}");
    // a layout naming a tensor that is not a linear weight of the model
    let mut bad = ad.layout();
    bad.ranks.push(("model.norm.weight".into(), 4));
    assert!(duet_models::lora::check_layout(&bad, &g).is_err());
}

/// A client that holds the base but not the adapters (the `connect` side of a two-machine run)
/// learns the adapters' public layout from the server in the handshake and runs in LoRA mode.
#[test]
fn the_server_announces_the_adapter_layout() {
    let g = Graph::build(&small(BuiltinModel::Llama7bShape));
    let base = RandomWeights { seed: 7 };
    let (_dir, ad) = adapter(&g, &["q_proj", "down_proj"], 0.08);
    let server_w = LoraWeights {
        base: &base,
        adapter: &ad,
    };
    let mut server_config = RunConfig::fixed("duet");
    server_config.adapter = Some(ad.layout());
    let client_config = RunConfig::fixed("duet");
    let ids = [4u32, 8, 15];
    let (s, c) = run_two_party(
        |ch| Server::accept(ch, &g, &server_w, &server_config)?.serve(),
        |ch| {
            let mut client = Client::connect_with_base(ch, &g, &client_config, ids.len(), &base)?;
            let layout = client.options().public_base.clone();
            let out = client.infer(&ids)?;
            client.close()?;
            Ok::<_, duet_models::ModelError>((layout, out.0))
        },
    );
    s.unwrap();
    let (layout, out) = c.unwrap();
    assert_eq!(layout, Some(ad.layout()));
    let merged = MergedWeights {
        base: &base,
        adapter: &ad,
    };
    let (_, want) = run_reference_outputs(&g, &merged, &ids).unwrap();
    let err = max_abs(&out.logits.unwrap(), &want.unwrap());
    assert!(err <= 0.1, "max abs err {err}");
}
