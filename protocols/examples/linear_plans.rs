//! Prints the HeLinear plans of SmolLM2-135M's linear layers (decode n = 1 and a prefill):
//! `cargo run --release -p duet-protocols --example linear_plans -- [n]`.

#![allow(clippy::unwrap_used, missing_docs)]

use duet_protocols::*;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let p = linear_params(42, 1 << 16).unwrap();
    println!(
        "params: orbit levels {}, b_bits {}, a_bits {}",
        p.orbit_levels(),
        p.output_b_bits(),
        p.output_a_bits()
    );
    let old_p = duet_fhe::RlweParameters::preset(
        duet_fhe::Preset::N8192Q200Pack,
        duet_fhe::RingBits(42),
        duet_fhe::WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    let sk_p = server_key_params(
        duet_fhe::Preset::N8192Q200Pack,
        duet_fhe::RingBits(42),
        duet_fhe::MacTerms(1536 * n.min(8)),
    );
    let mut sk_totals = (0u64, 0u64, 0u64, 0u64);
    for (name, d, parts) in [
        ("qkv", 576usize, vec![576usize, 192, 192]),
        ("o", 576, vec![576]),
        ("gate|up", 576, vec![1536, 1536]),
        ("down", 1536, vec![576]),
        ("head", 576, vec![49152]),
    ] {
        let plan = LinearPlan::new(&p, n, d, &parts, LayoutPolicy::MinBytes).unwrap();
        let c = plan.cost();
        let old: Vec<Cost> = parts
            .iter()
            .map(|&k| {
                HeMatMul::cost(&old_p, MatmulShape::new(n, d, k), LayoutPolicy::MinBytes).unwrap()
            })
            .collect();
        let ob: u64 = old.iter().map(|c| c.bytes).sum();
        let oks: u64 = old.iter().map(|c| c.key_switches).sum();
        let op: u64 = old.iter().map(|c| c.products).sum();
        println!(
            "{name:8} {n}x{d}x{parts:?}: blocks {}x{}x{} pack {} levels {}: {} B, {} KS, {} products, est {:.0} ms, cache {} MB | old {} B, {} KS, {} products",
            plan.layout().n_b, plan.layout().d_b, plan.layout().k_b, plan.pack(), plan.levels(),
            c.bytes, c.key_switches, c.products, plan.estimate_us() / 1000.0,
            PreparedLinear::memory_bytes(&plan) >> 20, ob, oks, op
        );
        if let Ok(sk_p) = &sk_p {
            let k: usize = parts.iter().sum();
            if let Ok(skp) =
                ServerKeyPlan::new(sk_p, MatmulShape::new(n, d, k), ServerKeyPolicy::MinBytes)
            {
                let sc = skp.cost();
                let times = if name == "head" { 1 } else { 30 };
                sk_totals.0 += times * sc.online.bytes;
                sk_totals.1 += times * sc.cached_weight_bytes;
                sk_totals.2 += times * sc.client_model_memory;
                sk_totals.3 += times * sc.online.key_switches;
                println!(
                    "         server-key (Nimbus) mode: online {} B, {} client KS, cached weights {} B, client memory {} MB",
                    sc.online.bytes, sc.online.key_switches, sc.cached_weight_bytes, sc.client_model_memory >> 20
                );
            }
        }
        let budget = c.bytes + c.bytes / 5;
        let fast = LinearPlan::new(
            &p,
            n,
            d,
            &parts,
            LayoutPolicy::FewestKeySwitches { max_bytes: budget },
        )
        .unwrap();
        let f = fast.cost();
        println!(
            "         least compute within +20% bytes: blocks {}x{}x{} pack {} levels {}: {} B, {} KS, {} products, est {:.0} ms",
            fast.layout().n_b, fast.layout().d_b, fast.layout().k_b, fast.pack(), fast.levels(),
            f.bytes, f.key_switches, f.products, fast.estimate_us() / 1000.0
        );
    }
    println!(
        "server-key mode, 30 layers + head: online {} MB, client KS {}, cached weights {} MB, client memory {} MB (expanded) / {} MB (seed + b only)",
        sk_totals.0 >> 20, sk_totals.3, sk_totals.1 >> 20, sk_totals.2 >> 20, sk_totals.1 >> 20
    );
}
