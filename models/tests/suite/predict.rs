//! The cost model's per-node prediction against measured secure runs: predicted bytes equal the
//! measured bytes of every node and every kind (and of the setup), for every preset and the
//! plan's other layouts and backends, on small BERT, GPT-2 and LLaMA shapes (2 layers,
//! vocabulary 1000). Flights are predicted as an upper bound (the parts' flights summed);
//! their difference is printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use common::small;
use duet_models::secure::{
    predict, run_client_outputs, run_server, EmbeddingMode, MulBackend, SecureOptions, SecureReport,
};
use duet_models::{BuiltinModel, Graph, RandomWeights};
use duet_protocols::{LayoutPolicy, MachineProfile, Preset, ProtocolConfig};
use duet_transport::run_two_party;

fn run(g: &Graph, ids: &[u32], opts: &SecureOptions) -> (SecureReport, SecureReport) {
    let w = RandomWeights { seed: 5 };
    let (s, c) = run_two_party(
        |ch| run_server(ch, g, &w, opts, &mut |_| {}),
        |ch| run_client_outputs(ch, g, ids, opts, &mut |_| {}),
    );
    (s.unwrap(), c.unwrap().1)
}

/// Runs `b` on `seq` tokens with `opts` and checks every byte figure of the prediction.
fn check(label: &str, b: BuiltinModel, seq: usize, opts: &SecureOptions) {
    let g = Graph::build(&small(b));
    // extreme ids: first, last, repeated
    let ids: Vec<u32> = [0u32, 999, 5, 5, 123, 998, 1, 500]
        .into_iter()
        .cycle()
        .take(seq)
        .collect();
    let profile = MachineProfile::default_profile().unwrap();
    let p = predict(&g, seq, opts, &profile).unwrap();
    let (server, client) = run(&g, &ids, opts);
    for r in [&server, &client] {
        assert_eq!(p.setup.bytes, r.setup_bytes, "{label}: setup bytes");
        assert_eq!(p.cached_bytes, r.cached_bytes, "{label}: cached bytes");
        let names: Vec<&str> = r.nodes.iter().map(|n| n.name.as_str()).collect();
        let predicted: Vec<&str> = p.nodes.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            predicted, names,
            "{label}: the same nodes in the same order"
        );
        for ((name, kind, e), m) in p.nodes.iter().zip(&r.nodes) {
            assert_eq!(kind.name(), m.kind, "{label}: kind of {name}");
            assert_eq!(e.bytes, m.bytes, "{label}: bytes of {name}");
        }
        assert_eq!(p.kinds.len(), r.ops.len(), "{label}: kinds");
        for ((kind, e), m) in p.kinds.iter().zip(&r.ops) {
            assert_eq!(kind.name(), m.kind, "{label}: kind order");
            assert_eq!(e.bytes, m.bytes, "{label}: bytes of kind {}", m.kind);
        }
        assert_eq!(
            p.nodes_total().bytes - p.cached_bytes,
            r.online_bytes,
            "{label}: online bytes"
        );
    }
    // flights: the prediction sums its parts' flights (an upper bound up to merging)
    let measured: u64 = client.nodes.iter().map(|n| n.rounds).sum();
    let predicted = p.nodes_total().flights;
    println!(
        "{label}: {} nodes, online {} B exact; flights predicted {predicted}, measured {measured}; setup flights predicted {}",
        p.nodes.len(),
        client.online_bytes,
        p.setup.flights
    );
    for ((name, _, e), m) in p.nodes.iter().zip(&client.nodes) {
        if e.flights != m.rounds {
            println!(
                "  {name}: flights predicted {} measured {}",
                e.flights, m.rounds
            );
        }
    }
}

fn preset(p: Preset) -> SecureOptions {
    SecureOptions::new(ProtocolConfig::preset(p))
}

#[test]
fn predicted_bytes_equal_measured_for_duet_and_iron() {
    check(
        "bert duet",
        BuiltinModel::BertTiny,
        8,
        &preset(Preset::Duet),
    );
    check(
        "bert iron",
        BuiltinModel::BertTiny,
        6,
        &preset(Preset::Iron),
    );
}

#[test]
fn predicted_bytes_equal_measured_for_bolt_bumblebee_puma() {
    check(
        "bert bolt",
        BuiltinModel::BertTiny,
        4,
        &preset(Preset::Bolt),
    );
    check(
        "bert bumblebee",
        BuiltinModel::BertTiny,
        4,
        &preset(Preset::BumbleBee),
    );
    check(
        "bert puma",
        BuiltinModel::BertTiny,
        4,
        &preset(Preset::Puma),
    );
}

#[test]
fn predicted_bytes_equal_measured_for_decoders_and_plan_variants() {
    // GPT-2: tanh-GELU, causal attention, the LM head
    check("gpt2 duet", BuiltinModel::Gpt2, 4, &preset(Preset::Duet));
    // LLaMA: rotary positions, grouped keys, HE gate products, other layouts
    let mut opts = preset(Preset::Duet);
    opts.plan.elementwise = MulBackend::He;
    opts.plan.attention = LayoutPolicy::FewestKeySwitches { max_bytes: 1 << 30 };
    opts.plan
        .set_linear("layer0.attn.q", LayoutPolicy::ExtractionOnly);
    opts.plan.set_linear(
        "layer1.ffn.down",
        LayoutPolicy::FewestKeySwitches { max_bytes: 1 << 30 },
    );
    check("llama he-mul", BuiltinModel::Llama7bShape, 4, &opts);
    // BERT with the server-key embedding (cached table) and extraction-only layouts
    let mut opts = preset(Preset::Duet);
    opts.embedding = EmbeddingMode::ServerKey;
    opts.plan.default_linear = LayoutPolicy::ExtractionOnly;
    check("bert server-key", BuiltinModel::BertTiny, 4, &opts);
}

/// OT-based matrix products: two linear layers and the attention products by COT (Ferret and
/// IKNP), the rest by HE; the Ferret iterations their COTs trigger land in their nodes.
#[test]
fn predicted_bytes_equal_measured_for_ot_matmuls() {
    for p in [Preset::Duet, Preset::Iron] {
        let mut opts = preset(p);
        opts.plan.set_linear_ot("layer0.attn.q", true);
        opts.plan.set_linear_ot("layer1.ffn.down", true);
        opts.plan.attention_ot = true;
        check(
            &format!("bert ot-matmul {p:?}"),
            BuiltinModel::BertTiny,
            3,
            &opts,
        );
    }
}

/// BERT-base (`DUET_LAYERS` layers, default 1) on `DUET_SEQ` tokens (default 32): bytes
/// exact per node, and the predicted compute seconds per kind against the measured ones
/// (printed; the default profile was measured on the CI machine).
#[test]
#[ignore = "tens of seconds: cargo test --release -p duet-models --test suite predict::bert_base -- --ignored --nocapture"]
fn bert_base_predicted_seconds_per_kind() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (layers, seq) = (env("DUET_LAYERS", 1), env("DUET_SEQ", 32));
    let mut c = BuiltinModel::BertBase.config();
    c.layers = layers;
    let g = Graph::build(&c);
    let ids: Vec<u32> = (0..seq).map(|i| (i * 7919 % 30522) as u32).collect();
    // the prediction of the full model is cheap (the planner calls it many times)
    let full = Graph::build(&BuiltinModel::BertBase.config());
    let profile = MachineProfile::default_profile().unwrap();
    for p in Preset::ALL {
        let t = std::time::Instant::now();
        let e = predict(&full, 128, &preset(p), &profile).unwrap();
        let lan = duet_transport::relay::NetProfile::named("lan").unwrap();
        let wan = duet_transport::relay::NetProfile::named("wan").unwrap();
        let total = e.nodes_total();
        println!(
            "bert-base 12 layers, 128 tokens, {}: predicted setup {} B, online {} B, {} flights, compute {:.1} s, lan {:.1} s, wan {:.1} s (predict took {:.2} s)",
            p.name(),
            e.setup.bytes,
            total.bytes,
            total.flights,
            total.compute_s,
            total.latency(&lan),
            total.latency(&wan),
            t.elapsed().as_secs_f64()
        );
        for (k, e) in &e.kinds {
            println!(
                "  {:18} bytes {:12} flights {:5} compute {:8.2} s",
                k.name(),
                e.bytes,
                e.flights,
                e.compute_s
            );
        }
    }
    for p in [Preset::Duet, Preset::Iron] {
        let opts = preset(p);
        let pred = predict(&g, seq, &opts, &MachineProfile::default_profile().unwrap()).unwrap();
        let w = RandomWeights { seed: 1 };
        let (s, cl) = run_two_party(
            |ch| run_server(ch, &g, &w, &opts, &mut |_| {}),
            |ch| run_client_outputs(ch, &g, &ids, &opts, &mut |_| {}),
        );
        let (_, cl) = (s.unwrap(), cl.unwrap().1);
        println!(
            "bert-base {layers} layers, {seq} tokens, {}: setup {} B predicted {} B",
            p.name(),
            cl.setup_bytes,
            pred.setup.bytes
        );
        for ((kind, e), m) in pred.kinds.iter().zip(&cl.ops) {
            assert_eq!(kind.name(), m.kind);
            assert_eq!(e.bytes, m.bytes, "{}", m.kind);
            println!(
                "  {:18} bytes {:12} flights {:5}/{:5} seconds predicted {:8.3} measured {:8.3} ratio {:.2}",
                m.kind,
                m.bytes,
                e.flights,
                m.rounds,
                e.compute_s,
                m.seconds,
                e.compute_s / m.seconds
            );
        }
    }
}
