//! The rotated residual stream (`duet_models::rotation`): the rotation is orthogonal, the
//! rotated weights compute the original logits (small LLaMA shapes with seeded random weights,
//! and SmolLM2-135M-Instruct where `../shared` has it), and the checks catch a wrong rotation
//! (mismatched seeds, unfolded norm scales).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common;

use duet_models::rotation::{RotatedWeights, Rotation};
use duet_models::{
    run_reference_outputs, BuiltinModel, GgufModel, Graph, ModelConfig, ModelError, RandomWeights,
    WeightSource,
};
use std::path::PathBuf;

/// Largest difference relative to the largest magnitude of `a`.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    common::max_abs(a, b) / scale
}

/// The small LLaMA shape of the secure tests (hidden 128, a power of two) and one whose hidden
/// width 96 = 32 x 3 uses the Kronecker construction.
fn configs() -> Vec<ModelConfig> {
    let a = common::small(BuiltinModel::Llama7bShape);
    let mut b = a.clone();
    b.hidden = 96;
    b.heads = 4;
    b.kv_heads = 2;
    b.intermediate = 160;
    vec![a, b]
}

fn ids(n: usize) -> Vec<u32> {
    (0..n).map(|i| (i * 37 % 1000) as u32).collect()
}

#[test]
fn rotation_is_orthogonal_and_spreads() {
    for n in [1, 2, 9, 12, 96, 128, 576, 1536] {
        let q = Rotation::new(n, 7).unwrap();
        assert_eq!(q.dim(), n);
        // rows of Q: e_i Q
        let mut rows = vec![0.0; n * n];
        for i in 0..n {
            rows[i * n + i] = 1.0;
        }
        q.apply_rows(&mut rows).unwrap();
        for i in 0..n {
            for j in 0..n {
                let dot: f64 = (0..n).map(|k| rows[i * n + k] * rows[j * n + k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (dot - want).abs() < 1e-12,
                    "n {n}: (Q Q^T)[{i},{j}] = {dot}"
                );
            }
        }
        // one large channel spreads over every coordinate
        if n >= 96 {
            let largest = rows.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(largest < 0.5, "n {n}: an entry of Q is {largest}");
            assert!(rows.iter().all(|v| v.abs() > 1e-9), "n {n}: Q has zeros");
        }
        // columns: Q^T X equals (X^T Q)^T
        let cols = 3;
        let x: Vec<f64> = (0..n * cols).map(|i| (i as f64 * 0.37).sin()).collect();
        let mut by_cols = x.clone();
        q.apply_columns(&mut by_cols, cols).unwrap();
        for c in 0..cols {
            let mut col: Vec<f64> = (0..n).map(|r| x[r * cols + c]).collect();
            q.apply(&mut col).unwrap();
            for r in 0..n {
                assert!((by_cols[r * cols + c] - col[r]).abs() < 1e-12);
            }
        }
    }
    let (a, b) = (
        Rotation::new(576, 1).unwrap(),
        Rotation::new(576, 2).unwrap(),
    );
    let (mut x, mut y) = (vec![1.0; 576], vec![1.0; 576]);
    a.apply(&mut x).unwrap();
    b.apply(&mut y).unwrap();
    assert!(common::max_abs(&x, &y) > 0.1, "the seed must matter");
    assert!(a.apply(&mut [0.0; 5]).is_err());
}

#[test]
fn rotated_random_llama_keeps_logits() {
    for c in configs() {
        let g = Graph::build(&c);
        let w = RandomWeights { seed: 3 };
        let rot = RotatedWeights::new(&w, &g, 11).unwrap();
        let (h0, l0) = run_reference_outputs(&g, &w, &ids(12)).unwrap();
        let (h1, l1) = run_reference_outputs(&g, &rot, &ids(12)).unwrap();
        let (l0, l1) = (l0.unwrap(), l1.unwrap());
        let e = rel(&l0, &l1);
        println!("hidden {}: logits relative difference {e:.2e}", c.hidden);
        assert!(e < 1e-6, "hidden {}: logits differ by {e}", c.hidden);
        // the last hidden state is RMSNorm(x) Q with a unit scale: (h0 / g) Q
        let gamma = w.get("model.norm.weight", &[c.hidden]).unwrap();
        let mut want = h0.data.clone();
        for row in want.chunks_exact_mut(c.hidden) {
            row.iter_mut().zip(&gamma).for_each(|(v, s)| *v /= s);
        }
        rot.rotation().apply_rows(&mut want).unwrap();
        assert!(rel(&want, &h1.data) < 1e-9);
        assert!(rel(&h0.data, &h1.data) > 0.1, "the stream must be rotated");
        // the norm scales are ones, the embedding rows keep their norms
        let ones = rot.get("model.layers.0.input_layernorm.weight", &[c.hidden]);
        assert!(ones.unwrap().iter().all(|&v| v == 1.0));
        let e0 = w
            .get("model.embed_tokens.weight", &[1000, c.hidden])
            .unwrap();
        let e1 = rot
            .get("model.embed_tokens.weight", &[1000, c.hidden])
            .unwrap();
        let n0: f64 = e0[..c.hidden].iter().map(|v| v * v).sum();
        let n1: f64 = e1[..c.hidden].iter().map(|v| v * v).sum();
        assert!((n0 - n1).abs() < 1e-12 * n0);
    }
}

/// Serves one tensor (or the tensors matching a predicate) from `other`, the rest from `main`.
struct Mixed<'a> {
    main: &'a dyn WeightSource,
    other: &'a dyn WeightSource,
    from_other: fn(&str) -> bool,
}

impl WeightSource for Mixed<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> duet_models::Result<Vec<f64>> {
        if (self.from_other)(name) {
            self.other.get(name, shape)
        } else {
            self.main.get(name, shape)
        }
    }
}

/// A wrong rotation is caught: the embedding rotated with another seed, or the norm scales
/// served as stored besides being folded into the readers, change the logits.
#[test]
fn wrong_rotations_change_logits() {
    let c = &configs()[1];
    let g = Graph::build(c);
    let w = RandomWeights { seed: 3 };
    let (_, want) = run_reference_outputs(&g, &w, &ids(12)).unwrap();
    let want = want.unwrap();
    let good = RotatedWeights::new(&w, &g, 11).unwrap();
    let other = RotatedWeights::new(&w, &g, 12).unwrap();
    let cases: [(&str, Mixed<'_>); 2] = [
        (
            "embedding from another seed",
            Mixed {
                main: &good,
                other: &other,
                from_other: |n| n == "model.embed_tokens.weight",
            },
        ),
        (
            "norm scales left in place (applied twice)",
            Mixed {
                main: &good,
                other: &w,
                from_other: |n| n.ends_with("norm.weight"),
            },
        ),
    ];
    for (what, src) in cases {
        let (_, got) = run_reference_outputs(&g, &src, &ids(12)).unwrap();
        let e = rel(&want, &got.unwrap());
        println!("{what}: logits relative difference {e:.2e}");
        assert!(e > 1e-2, "{what}: logits differ by only {e}");
    }
}

#[test]
fn graphs_the_rotation_cannot_keep_are_refused() {
    for b in [BuiltinModel::BertTiny, BuiltinModel::Gpt2] {
        let g = Graph::build(&common::small(b));
        let w = RandomWeights { seed: 1 };
        match RotatedWeights::new(&w, &g, 1) {
            Err(ModelError::Rotation(why)) => println!("{}: {why}", b.name()),
            Err(e) => panic!("{}: unexpected error {e}", b.name()),
            Ok(_) => panic!("{}: a LayerNorm model was accepted", b.name()),
        }
    }
}

/// SmolLM2-135M-Instruct (GGUF Q4_1, tied embeddings, hidden 576 = 64 x 9) on the shortest
/// reference prompt: the rotated weights give the same logits.
#[test]
fn rotated_smollm2_keeps_logits() {
    let shared = std::env::var_os("DUET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let file = shared.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !file.exists() {
        println!("SKIPPED: {} not found", file.display());
        return;
    }
    let m = GgufModel::open(&file).unwrap();
    let text = std::fs::read_to_string(shared.join("reference/smollm2/reference.json")).unwrap();
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let ids: Vec<u32> = entries
        .iter()
        .map(|e| {
            e["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect::<Vec<u32>>()
        })
        .min_by_key(Vec::len)
        .unwrap();
    let rot = RotatedWeights::new(&m, &m.graph, 1).unwrap();
    let (_, l0) = run_reference_outputs(&m.graph, &m, &ids).unwrap();
    let (_, l1) = run_reference_outputs(&m.graph, &rot, &ids).unwrap();
    let e = rel(&l0.unwrap(), &l1.unwrap());
    println!(
        "SmolLM2, {} tokens: logits relative difference {e:.2e}",
        ids.len()
    );
    assert!(e < 1e-6, "logits differ by {e}");
}
