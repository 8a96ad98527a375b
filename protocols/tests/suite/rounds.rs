//! Flights and bytes of the non-linear operators on the decode shapes of SmolLM2-135M and on
//! the BERT-base prefill shapes, from the exact cost formulas (bytes exact, flights an upper
//! bound). `cargo test --release -p duet-protocols --test suite rounds:: -- --nocapture` prints the
//! table.

#![allow(clippy::unwrap_used, reason = "tests")]

use duet_mpc::nonlinear::{Cost, NlConfig};
use duet_mpc::Ring;
use duet_protocols::nonlinear::activation::{
    gelu_cost, silu_cost, ActFormat, GeluApprox, SiluApprox,
};
use duet_protocols::nonlinear::norm::{norm_cost, NormKind, NormPreset};
use duet_protocols::nonlinear::softmax::{softmax_cost, SoftmaxPreset};
use duet_protocols::nonlinear::token_choice::{choose_token_cost, LogitFormat, TokenChoice};

fn ring(b: u32) -> Ring {
    Ring::new(b).unwrap()
}

/// The norm configuration the backend uses (`protocols/src/backend`): the preset's, with the
/// declared ranges and the ring widened to what the row needs.
fn norm_of(k: usize, in_bits: u32, ring_bits: u32) -> duet_protocols::nonlinear::norm::NormConfig {
    let mut cfg = NormPreset::Duet.config(12);
    cfg.in_bits = in_bits;
    cfg.gamma_bits = 3;
    cfg.ring_bits = cfg.ring_bits.max(cfg.min_ring_bits(k, 12));
    cfg.out_bits = cfg.ring_bits.max(ring_bits);
    cfg
}

/// (name, cost) of every operator on its decode shape.
fn decode_costs(nl: NlConfig) -> Vec<(String, Cost)> {
    let l = 42;
    let mut v = Vec::new();
    let c = norm_cost(
        NormKind::RmsNorm,
        &[1, 576],
        ring(l),
        12,
        &norm_of(576, 15, l),
        nl,
    )
    .unwrap();
    v.push(("rmsnorm 1x576".to_string(), c));
    for k in [40usize, 60] {
        let cfg = SoftmaxPreset::Duet.config();
        let c = softmax_cost(&[9, k], ring(l), 10, &cfg, nl).unwrap();
        v.push((format!("softmax 9x{k}"), c));
    }
    let fmt = ActFormat::new(ring(l), 12, 7).unwrap();
    let c = silu_cost(1536, fmt, SiluApprox::Duet, nl).unwrap();
    v.push(("silu 1x1536".to_string(), c));
    let lf = LogitFormat {
        ring: ring(l),
        frac: 12,
        range_bits: 15,
    };
    let c = choose_token_cost(1, 49_152, &lf, &TokenChoice::Greedy, nl).unwrap();
    v.push(("argmax 49152".to_string(), c));
    v
}

/// (name, cost) of every operator on the BERT-base prefill shapes (128 tokens).
fn bert_costs(nl: NlConfig) -> Vec<(String, Cost)> {
    let l = 37;
    let mut v = Vec::new();
    let c = norm_cost(
        NormKind::LayerNorm,
        &[128, 768],
        ring(l),
        12,
        &norm_of(768, 9, l),
        nl,
    )
    .unwrap();
    v.push(("layernorm 128x768".to_string(), c));
    let cfg = SoftmaxPreset::Duet.config();
    let c = softmax_cost(&[12 * 128, 128], ring(l), 10, &cfg, nl).unwrap();
    v.push(("softmax 12x128x128".to_string(), c));
    let fmt = ActFormat::new(ring(l), 12, 6).unwrap();
    let c = gelu_cost(128 * 3072, fmt, GeluApprox::Duet, nl).unwrap();
    v.push(("gelu 128x3072".to_string(), c));
    v
}

fn print(title: &str, rows: &[(String, Cost)]) {
    eprintln!("{title}");
    eprintln!("{:<22} {:>8} {:>14}", "operator", "flights", "bytes");
    for (n, c) in rows {
        eprintln!("{n:<22} {:>8} {:>14}", c.rounds, c.bytes);
    }
}

#[test]
fn print_the_flight_table() {
    let nl = NlConfig::default();
    print("decode (SmolLM2-135M, ring 42)", &decode_costs(nl));
    print("prefill (BERT-base, 128 tokens, ring 37)", &bert_costs(nl));
}
