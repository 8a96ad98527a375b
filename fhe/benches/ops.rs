//! Per-operation costs of the HE matmul building blocks, for both presets.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark harness code"
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn bench(c: &mut Criterion) {
    let cases = [
        (
            "n4096-l37-small",
            Preset::N4096Q109,
            37u32,
            WeightBound::MaxAbs(1 << 16),
        ),
        (
            "n8192-l64-uniform",
            Preset::N8192Q186,
            64,
            WeightBound::Uniform,
        ),
    ];
    for (name, preset, l, wb) in cases {
        let params = RlweParameters::preset(preset, RingBits(l), wb).unwrap();
        run(c, name, params, l);
    }
    // Comparison: the same ring with three IFMA-friendly (< 2^50) primes instead of two ~55-bit.
    let params = RlweParametersBuilder::new()
        .degree(PolyDegree(4096))
        .moduli_bits(&[37, 36, 36])
        .ring_bits(RingBits(37))
        .weight_bound(WeightBound::MaxAbs(1 << 16))
        .build()
        .unwrap();
    run(c, "n4096-3x36bit-l37-small", params, 37);
    let params = RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(37),
        WeightBound::MaxAbs(1 << 16),
    )
    .unwrap();
    run(c, "n8192-pack-l37-small", params.clone(), 37);
    pack(c, params);
}

fn pack(c: &mut Criterion, params: std::sync::Arc<RlweParameters>) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let sk = SecretKey::generate(&params, &mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let x: Vec<u64> = (0..params.degree())
        .map(|_| rng.gen::<u64>() & params.plain_mask())
        .collect();
    let ct = sk.encrypt(&x, &mut rng).unwrap().expand(&params).unwrap();
    let w = PlainWeights::from_signed(&params, &[3, -2, 1]).unwrap();
    let mut acc = MacAccumulator::new(&params);
    acc.mul_acc(&ct, &w).unwrap();
    let mut g = c.benchmark_group("n8192-pack-l37-small");
    g.sample_size(10);
    for d in [2usize, 64] {
        g.bench_function(
            format!("pack {d} accumulators ({} key switches)", d - 1),
            |b| b.iter(|| MacAccumulator::pack(vec![acc.clone(); d], 63, &gk).unwrap()),
        );
    }
    g.bench_function("galois keys generation (client)", |b| {
        b.iter(|| sk.galois_keys(&mut rng).unwrap())
    });
    g.finish();
}

fn run(c: &mut Criterion, name: &str, params: std::sync::Arc<RlweParameters>, _l: u32) {
    {
        let n = params.degree();
        let mask = params.plain_mask();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let sk = SecretKey::generate(&params, &mut rng);
        let pk = sk.public_key(&mut rng);
        let x: Vec<u64> = (0..n).map(|_| rng.gen::<u64>() & mask).collect();
        let w: Vec<i64> = (0..n)
            .map(|_| rng.gen_range(-(1i64 << 15)..(1i64 << 15)))
            .collect();
        let weights = PlainWeights::from_signed(&params, &w).unwrap();
        let seeded = sk.encrypt(&x, &mut rng).unwrap();
        let ct = seeded.expand(&params).unwrap();
        let mut g = c.benchmark_group(name);
        g.bench_function("encrypt", |b| {
            b.iter(|| sk.encrypt(black_box(&x), &mut rng).unwrap())
        });
        g.bench_function("serialize+deserialize+expand input", |b| {
            b.iter(|| {
                let bytes = seeded.to_bytes(&params).unwrap();
                SeededCiphertext::from_bytes(&params, &bytes)
                    .unwrap()
                    .expand(&params)
                    .unwrap()
            })
        });
        g.bench_function("prepare weights (NTT)", |b| {
            b.iter(|| PlainWeights::from_signed(&params, black_box(&w)).unwrap())
        });
        let mut acc = MacAccumulator::new(&params);
        g.bench_function("mul_acc one poly", |b| {
            b.iter(|| {
                acc = MacAccumulator::new(&params);
                acc.mul_acc(black_box(&ct), black_box(&weights)).unwrap();
            })
        });
        let few: Vec<usize> = (0..n / 768).map(|c| c * 768 + 767).collect();
        let all: Vec<usize> = (0..n).collect();
        for (pname, positions) in [("5 positions", &few), ("all positions", &all)] {
            g.bench_function(
                format!("finalize (rerand+switch+flood) + serialize, {pname}"),
                |b| {
                    b.iter(|| {
                        let mut acc = MacAccumulator::new(&params);
                        acc.mul_acc(&ct, &weights).unwrap();
                        let out = acc.finalize(&pk, &[], positions, &mut rng).unwrap();
                        out.to_bytes(&params).unwrap()
                    })
                },
            );
        }
        let mut acc = MacAccumulator::new(&params);
        acc.mul_acc(&ct, &weights).unwrap();
        let out = acc.finalize(&pk, &[], &all, &mut rng).unwrap();
        g.bench_function("decrypt_output all positions", |b| {
            b.iter(|| sk.decrypt_output(black_box(&out), &all).unwrap())
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
