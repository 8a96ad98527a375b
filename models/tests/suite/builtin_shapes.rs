//! The built-in shapes build, and the GPT-2 and LLaMA graphs behave as decoders should.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::{run_reference, BuiltinModel, Graph, ModelConfig, RandomWeights};

/// A 2-layer, narrow version of a built-in shape (same architecture, small dims).
fn small(b: BuiltinModel) -> ModelConfig {
    let mut c = b.config();
    c.layers = 2;
    c.hidden = 64;
    c.heads = 4;
    c.kv_heads = 4;
    c.intermediate = 128;
    c.vocab_size = 100;
    c.max_positions = 32;
    c
}

#[test]
fn every_builtin_has_a_consistent_graph() {
    for b in BuiltinModel::ALL {
        let c = b.config();
        let g = Graph::build(&c);
        assert!(g.nodes.len() > c.layers * 8, "{}", b.name());
        assert_eq!(BuiltinModel::from_name(b.name()).unwrap(), b);
        // every weight has a plausible shape
        for (name, shape) in g.weight_shapes() {
            assert!(shape.iter().all(|&d| d > 0), "{name}");
        }
    }
    assert!(BuiltinModel::from_name("bert-huge").is_err());
    // BERT-base has about 110M parameters with its embeddings
    let params: usize = Graph::build(&BuiltinModel::BertBase.config())
        .weight_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    assert!((108_000_000..111_000_000).contains(&params), "{params}");
}

#[test]
fn decoders_are_causal_and_encoders_are_not() {
    let w = RandomWeights { seed: 7 };
    for b in [
        BuiltinModel::Gpt2,
        BuiltinModel::Llama7bShape,
        BuiltinModel::BertTiny,
    ] {
        let c = small(b);
        let g = Graph::build(&c);
        let a = run_reference(&g, &w, &[3, 14, 15, 92, 65]).unwrap();
        let z = run_reference(&g, &w, &[3, 14, 15, 92, 35]).unwrap();
        assert!(a.data.iter().all(|x| x.is_finite()));
        // changing the last token changes the last row...
        assert_ne!(a.row(4), z.row(4), "{}", b.name());
        // ...and earlier rows only for a bidirectional encoder
        let causal = c.arch != duet_models::Arch::Bert;
        assert_eq!(a.row(0) == z.row(0), causal, "{}", b.name());
    }
}

#[test]
fn rotary_positions_make_llama_order_sensitive() {
    let w = RandomWeights { seed: 3 };
    let mut c = small(BuiltinModel::Llama7bShape);
    c.layers = 1;
    let g = Graph::build(&c);
    // LLaMA has no position table. In one layer without rotary embeddings the last token
    // attends to the same set of keys and values for [a, b, c] and [b, a, c], so its output
    // would be the same up to rounding; with them the order matters.
    let x = run_reference(&g, &w, &[5, 9, 7]).unwrap();
    let y = run_reference(&g, &w, &[9, 5, 7]).unwrap();
    let diff = x
        .row(2)
        .iter()
        .zip(y.row(2))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(diff > 1e-3, "max difference {diff}");
}

#[test]
fn random_weights_are_deterministic_per_name() {
    use duet_models::WeightSource;
    let w = RandomWeights { seed: 1 };
    let a = w.get("h.0.attn.c_attn.weight", &[4, 12]).unwrap();
    assert_eq!(a, w.get("h.0.attn.c_attn.weight", &[4, 12]).unwrap());
    assert_ne!(a, w.get("h.1.attn.c_attn.weight", &[4, 12]).unwrap());
    assert_ne!(
        a,
        RandomWeights { seed: 2 }
            .get("h.0.attn.c_attn.weight", &[4, 12])
            .unwrap()
    );
    let g = w.get("ln_f.weight", &[8]).unwrap();
    assert!(g.iter().all(|x| (0.9..=1.1).contains(x)));
}
