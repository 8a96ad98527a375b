//! Value ranges per operator kind (what the secure executor's fixed-point formats must cover):
//! `cargo test --release -p duet-models --test suite ranges:: -- --ignored --nocapture`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::{
    run_reference_traced, BuiltinModel, Graph, ModelDir, Op, RandomWeights, WeightSource,
};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn kind(op: &Op) -> String {
    match op {
        Op::Input => "input".into(),
        Op::Embedding { .. } => "embedding".into(),
        Op::Linear { .. } => "linear".into(),
        Op::LayerNorm { .. } => "layernorm".into(),
        Op::RmsNorm { .. } => "rmsnorm".into(),
        Op::Attention { .. } => "attention".into(),
        Op::Activation(a) => format!("{a:?}"),
        Op::Add => "add".into(),
        Op::Mul => "mul".into(),
        Op::LastRow => "last-row".into(),
    }
}

fn report(name: &str, graph: &Graph, w: &impl WeightSource, ids: &[u32]) {
    let mut m: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    run_reference_traced(graph, w, ids, &mut |node, ins, out| {
        let k = kind(&node.op);
        if k == "attention" {
            // queries, keys, values apart (a public prefix's keys and values are the server's
            // operands of the known-operand products)
            for (j, i) in ins.iter().enumerate() {
                let e = m.entry(format!("attention.in{j}")).or_insert((0.0, 0.0));
                e.0 = i.data.iter().fold(e.0, |a, v| a.max(v.abs()));
            }
        }
        let e = m.entry(k).or_insert((0.0, 0.0));
        for i in ins {
            e.0 = i.data.iter().fold(e.0, |a, v| a.max(v.abs()));
        }
        e.1 = out.data.iter().fold(e.1, |a, v| a.max(v.abs()));
    })
    .unwrap();
    println!("{name}: max |input|, max |output| per kind");
    for (k, (i, o)) in m {
        println!("  {k:12} {i:10.3} {o:10.3}");
    }
}

#[test]
#[ignore = "prints a report"]
fn value_ranges() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/all-MiniLM-L6-v2");
    if dir.exists() {
        let m = ModelDir::open(&dir).unwrap();
        let w = m.open_weights().unwrap();
        let tok = m.tokenizer().unwrap();
        let ids = tok
            .encode("The quick brown fox jumps over the lazy dog near the river bank.")
            .unwrap();
        report("minilm", &m.graph, &w, &ids);
    }
    for b in [BuiltinModel::BertBase, BuiltinModel::Gpt2] {
        let mut c = b.config();
        c.layers = 12;
        let g = Graph::build(&c);
        let ids: Vec<u32> = (0..32).map(|i| (i * 97 % 1000) as u32).collect();
        report(b.name(), &g, &RandomWeights { seed: 1 }, &ids);
    }
    let mut c = BuiltinModel::Llama7bShape.config();
    c.layers = 4;
    c.hidden = 512;
    c.heads = 8;
    c.kv_heads = 8;
    c.intermediate = 1376;
    let g = Graph::build(&c);
    let ids: Vec<u32> = (0..32).map(|i| (i * 97 % 1000) as u32).collect();
    report("llama-small", &g, &RandomWeights { seed: 1 }, &ids);
}

/// SmolLM2-135M-Instruct (GGUF) on the reference prompts: activation ranges per kind and the
/// weights' largest magnitudes per tensor kind (what `SecureOptions` must declare).
#[test]
#[ignore = "prints a report"]
fn smollm2_ranges() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let file = shared.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !file.exists() {
        println!("SKIPPED: {} not found", file.display());
        return;
    }
    let m = duet_models::GgufModel::open(&file).unwrap();
    let mut wmax: BTreeMap<String, f64> = BTreeMap::new();
    for (name, shape) in m.graph.weight_shapes() {
        let v = m.get(&name, &shape).unwrap();
        let k = name
            .split('.')
            .filter(|p| p.parse::<usize>().is_err())
            .collect::<Vec<_>>()
            .join(".");
        let e = wmax.entry(k).or_insert(0.0);
        *e = v.iter().fold(*e, |a, x| a.max(x.abs()));
    }
    println!("smollm2 weights: max |w| per tensor kind");
    for (k, v) in &wmax {
        println!("  {k:48} {v:10.4}");
    }
    let text = std::fs::read_to_string(shared.join("reference/smollm2/reference.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    for e in entries.iter().take(3) {
        let ids: Vec<u32> = e["input_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        report(&format!("smollm2 {} tokens", ids.len()), &m.graph, &m, &ids);
    }
}
