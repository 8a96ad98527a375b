//! Online timing of one HeMatMul over the in-memory channel (both parties, this process):
//! `cargo run --release -p duet-protocols --example matmul_timing -- 128 768 768 [duet|lowks] [reps]`
//! or `-- shared [duet|lowks] [reps]` for 12 heads of 128x64x128. Prints wall and process CPU
//! seconds of the online phase (CPU / 2 approximates the wall time on two idle cores).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::run_two_party;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.get(1).map(String::as_str) == Some("shared") {
        return shared(&a);
    }
    let num = |i: usize, dflt: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(dflt);
    let (n, d, k) = (num(1, 128), num(2, 768), num(3, 768));
    let p = RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    let policy = match a.get(4).map(String::as_str) {
        Some("lowks") => LayoutPolicy::FewestKeySwitches {
            max_bytes: 6_000_000,
        },
        _ => LayoutPolicy::MinBytes,
    };
    let mask = p.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let x_c: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let w: Vec<i64> = (0..d * k)
        .map(|_| rng.gen_range(-(1 << 16)..=(1 << 16)))
        .collect();
    let mut hw = HeWeights::new(&p, d, k, w, None).unwrap();
    let t = Instant::now();
    hw.prepare(n, policy, PrepareMode::default()).unwrap();
    let cost = HeMatMul::cost(&p, MatmulShape::new(n, d, k), policy).unwrap();
    println!(
        "prepare {:.3}s cached {} MB; cost {cost:?}",
        t.elapsed().as_secs_f64(),
        hw.cached_bytes() >> 20
    );
    let shape = MatmulShape::new(n, d, k);
    let reps = num(5, 3);
    let (_, times) = run_two_party(
        |mut ch| {
            let setup = HeServerSetup::run(&mut ch, &p).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            for _ in 0..reps {
                HeMatMul::run_server(&mut ch, &setup, &hw, n, Some(&x_s), &mut rng).unwrap();
            }
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    let c0 = cpu_s();
                    HeMatMul::run_client(&mut ch, &setup, shape, policy, &x_c, &mut rng).unwrap();
                    (t.elapsed().as_secs_f64(), cpu_s() - c0)
                })
                .collect::<Vec<_>>()
        },
    );
    println!("online (wall s, process cpu s): {times:?}");
}

/// Process CPU time (user + system) from /proc/self/stat, in seconds.
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn shared(a: &[String]) {
    let p =
        RlweParameters::preset(Preset::N8192Q200Pack, RingBits(37), WeightBound::Uniform).unwrap();
    let policy = match a.get(2).map(String::as_str) {
        Some("lowks") => LayoutPolicy::FewestKeySwitches {
            max_bytes: 20_000_000,
        },
        _ => LayoutPolicy::MinBytes,
    };
    let reps: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let shape = SharedShape::new(12, 128, 64, 128);
    let mask = p.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut rand = |len: usize| -> Vec<u64> { (0..len).map(|_| rng.gen::<u64>() & mask).collect() };
    let (x_c, x_s, y_c, y_s) = (
        rand(12 * 8192),
        rand(12 * 8192),
        rand(12 * 8192),
        rand(12 * 8192),
    );
    println!(
        "cost {:?}",
        HeMatMulShared::cost(&p, shape, policy).unwrap()
    );
    let (_, times) = run_two_party(
        |mut ch| {
            let setup = HeServerSetup::run(&mut ch, &p).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            for _ in 0..reps {
                HeMatMulShared::run_server(&mut ch, &setup, shape, policy, &x_s, &y_s, &mut rng)
                    .unwrap();
            }
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
            (0..reps)
                .map(|_| {
                    let t = Instant::now();
                    let c0 = cpu_s();
                    HeMatMulShared::run_client(
                        &mut ch, &setup, shape, policy, &x_c, &y_c, &mut rng,
                    )
                    .unwrap();
                    (t.elapsed().as_secs_f64(), cpu_s() - c0)
                })
                .collect::<Vec<_>>()
        },
    );
    println!("online (wall s, process cpu s): {times:?}");
}
