//! One `n x d x k` product as `SecureBackend::linear` runs it today (`HeMatMul`, weights
//! cloned and encoded on the fly) or as `HeLinear` runs it (split packing), for profiling:
//!
//! `cargo run --release -p duet-protocols --example linear_profile -- n d k old|new [reps]`
//!
//! e.g. `perf record --call-graph dwarf ... -- 1 576 1536 old 6`. Prints the plan's cost and
//! the client's wall seconds per call (both parties in this process).

#![allow(clippy::unwrap_used, missing_docs)]

use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::run_two_party;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::time::Instant;

/// The allocator of the `duet` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let num = |i: usize, d: usize| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, d, k) = (num(1, 1), num(2, 576), num(3, 1536));
    let new = a.get(4).map(String::as_str) == Some("new");
    let reps = num(5, 5);
    let w_max = 1i64 << 16;
    let p = if new {
        linear_params(42, w_max as u64).unwrap()
    } else {
        RlweParameters::preset(
            Preset::N8192Q200Pack,
            RingBits(42),
            WeightBound::MaxAbs(w_max as u64),
        )
        .unwrap()
    };
    let mask = p.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let x_c: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let w: Vec<i64> = (0..d * k).map(|_| rng.gen_range(-w_max..=w_max)).collect();
    let shape = MatmulShape::new(n, d, k);
    let plan = LinearPlan::new(&p, n, d, &[k], LayoutPolicy::MinBytes).unwrap();
    if new {
        println!(
            "{:?} levels {} pack {}",
            plan.cost(),
            plan.levels(),
            plan.pack()
        );
    } else {
        println!(
            "{:?}",
            HeMatMul::cost(&p, shape, LayoutPolicy::MinBytes).unwrap()
        );
    }
    let (_, t) = run_two_party(
        |mut ch| {
            let setup = HeServerSetup::run(&mut ch, &p).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            for _ in 0..reps {
                if new {
                    let lw = LinearWeights::new(&p, d, vec![(&w[..], None)]).unwrap();
                    HeLinear::run_server(&mut ch, &setup, &plan, &lw, None, Some(&x_s), &mut rng)
                        .unwrap();
                } else {
                    let mut hw = HeWeights::new(&p, d, k, w.clone(), None).unwrap();
                    hw.prepare(n, LayoutPolicy::MinBytes, PrepareMode::OnTheFly)
                        .unwrap();
                    HeMatMul::run_server(&mut ch, &setup, &hw, n, Some(&x_s), &mut rng).unwrap();
                }
            }
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let setup = HeClientSetup::run(&mut ch, &p, &mut rng).unwrap();
            let t = Instant::now();
            for _ in 0..reps {
                if new {
                    HeLinear::run_client(&mut ch, &setup, &plan, &x_c, &mut rng).unwrap();
                } else {
                    HeMatMul::run_client(
                        &mut ch,
                        &setup,
                        shape,
                        LayoutPolicy::MinBytes,
                        &x_c,
                        &mut rng,
                    )
                    .unwrap();
                }
            }
            t.elapsed().as_secs_f64() / reps as f64
        },
    );
    println!("{n}x{d}x{k}: {t:.3} s wall per call");
}
