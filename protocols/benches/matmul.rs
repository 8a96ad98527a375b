//! Criterion benches of the HE matrix products (both parties in this process, in-memory
//! channel; session setup and weight preparation outside the measured loop).
//!
//! `cargo bench -p duet-protocols --bench matmul` (shapes from the targets: 128x768x768 and
//! 12 heads of 128x64x128; set `DUET_BENCH_LARGE=1` to add 128x768x3072 and 128x3072x768).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use criterion::{criterion_group, criterion_main, Criterion};
use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::{memory_pair, Channel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::mpsc;

/// Runs `iters` products between a persistent server thread and the bench thread.
fn bench_matmul(c: &mut Criterion, shape: MatmulShape, policy: LayoutPolicy, name: &str) {
    let p = RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    let MatmulShape { n, d, k } = shape;
    let mask = p.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let x_c: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let w: Vec<i64> = (0..d * k)
        .map(|_| rng.gen_range(-(1 << 16)..=(1 << 16)))
        .collect();
    let mut hw = HeWeights::new(&p, d, k, w, None).unwrap();
    hw.prepare(n, policy, PrepareMode::default()).unwrap();
    let (mut sch, mut cch) = memory_pair();
    let (tx, rx) = mpsc::channel::<bool>();
    std::thread::scope(|s| {
        let p2 = p.clone();
        let hw = &hw;
        let x_s = &x_s;
        s.spawn(move || {
            let setup = HeServerSetup::run(&mut sch, &p2).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            while rx.recv().unwrap_or(false) {
                HeMatMul::run_server(&mut sch, &setup, hw, n, Some(x_s), &mut rng).unwrap();
            }
        });
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let setup = HeClientSetup::run(&mut cch, &p, &mut rng).unwrap();
        let mut g = c.benchmark_group("he_matmul");
        g.sample_size(10);
        g.bench_function(name, |b| {
            b.iter(|| {
                tx.send(true).unwrap();
                HeMatMul::run_client(&mut cch, &setup, shape, policy, &x_c, &mut rng).unwrap()
            })
        });
        g.finish();
        tx.send(false).unwrap();
        cch.flush().unwrap();
    });
}

fn bench_shared(c: &mut Criterion, shape: SharedShape, policy: LayoutPolicy, name: &str) {
    let p =
        RlweParameters::preset(Preset::N8192Q200Pack, RingBits(37), WeightBound::Uniform).unwrap();
    let SharedShape { heads, n, d, k } = shape;
    let mask = p.plain_mask();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut rand = |len: usize| -> Vec<u64> { (0..len).map(|_| rng.gen::<u64>() & mask).collect() };
    let (x_c, x_s, y_c, y_s) = (
        rand(heads * n * d),
        rand(heads * n * d),
        rand(heads * d * k),
        rand(heads * d * k),
    );
    let (mut sch, mut cch) = memory_pair();
    let (tx, rx) = mpsc::channel::<bool>();
    std::thread::scope(|s| {
        let p2 = p.clone();
        let (x_s, y_s) = (&x_s, &y_s);
        s.spawn(move || {
            let setup = HeServerSetup::run(&mut sch, &p2).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            while rx.recv().unwrap_or(false) {
                HeMatMulShared::run_server(&mut sch, &setup, shape, policy, x_s, y_s, &mut rng)
                    .unwrap();
            }
        });
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let setup = HeClientSetup::run(&mut cch, &p, &mut rng).unwrap();
        let mut g = c.benchmark_group("he_matmul_shared");
        g.sample_size(10);
        g.bench_function(name, |b| {
            b.iter(|| {
                tx.send(true).unwrap();
                HeMatMulShared::run_client(&mut cch, &setup, shape, policy, &x_c, &y_c, &mut rng)
                    .unwrap()
            })
        });
        g.finish();
        tx.send(false).unwrap();
    });
}

fn benches(c: &mut Criterion) {
    let lowks = LayoutPolicy::FewestKeySwitches {
        max_bytes: 6_000_000,
    };
    let s = MatmulShape::new(128, 768, 768);
    bench_matmul(c, s, LayoutPolicy::MinBytes, "128x768x768/min-bytes");
    bench_matmul(c, s, lowks, "128x768x768/fewest-ks-6MB");
    if std::env::var_os("DUET_BENCH_LARGE").is_some() {
        let budget = LayoutPolicy::FewestKeySwitches {
            max_bytes: 24_000_000,
        };
        bench_matmul(
            c,
            MatmulShape::new(128, 768, 3072),
            budget,
            "128x768x3072/fewest-ks-24MB",
        );
        bench_matmul(
            c,
            MatmulShape::new(128, 3072, 768),
            budget,
            "128x3072x768/fewest-ks-24MB",
        );
    }
    let sh = SharedShape::new(12, 128, 64, 128);
    bench_shared(c, sh, LayoutPolicy::MinBytes, "12x128x64x128/min-bytes");
    bench_shared(
        c,
        sh,
        LayoutPolicy::FewestKeySwitches {
            max_bytes: 20_000_000,
        },
        "12x128x64x128/fewest-ks-20MB",
    );
}

criterion_group!(matmul, benches);
criterion_main!(matmul);
