//! Non-linear protocols on one million elements of `Z_2^37`, both parties in one process on
//! two threads over the in-memory channel: comparison (`MSB(x - y)`, the CrypTFlow2
//! millionaire), element-wise multiplication (Gilboa), faithful truncation by 12 bits.
//!
//! `cargo bench -p duet-mpc --bench nonlinear` (`DUET_NL_N=100000` for a quicker run). Each
//! sample runs the session setup untimed, then times `iters` calls after a barrier (the slower
//! party's time). Bytes per element are printed once per protocol from the exact cost formulas
//! (checked against measured traffic by the tests).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "bench code outside #[test] functions: a failed unwrap is a failed bench"
)]
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use duet_mpc::nonlinear::{self as nl, NlConfig, NlSession, TruncMode};
use duet_mpc::{AShare, Prg, Ring};
use duet_transport::{run_two_party, Channel, MemoryChannel, Role};
use std::time::{Duration, Instant};

type Op = fn(&mut NlSession, &mut MemoryChannel, &AShare, &AShare);

fn timed(iters: u64, x: &(AShare, AShare), y: &(AShare, AShare), op: Op) -> Duration {
    let party = |role: Role, mut ch: MemoryChannel| {
        let mut s = NlSession::setup(
            &mut ch,
            role,
            &mut Prg::from_seed([role.index() as u8; 32]),
            NlConfig::default(),
        )
        .unwrap();
        let (xs, ys) = match role {
            Role::Server => (&x.0, &y.0),
            Role::Client => (&x.1, &y.1),
        };
        ch.send_bytes(&[0]).unwrap();
        ch.recv_bytes().unwrap();
        let t = Instant::now();
        for _ in 0..iters {
            op(&mut s, &mut ch, xs, ys);
        }
        t.elapsed()
    };
    let (a, b) = run_two_party(|ch| party(Role::Server, ch), |ch| party(Role::Client, ch));
    a.max(b)
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("DUET_NL_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let ring = Ring::new(37).unwrap();
    let cfg = NlConfig::default();
    let mut prg = Prg::from_seed([9; 32]);
    let xv: Vec<u64> = prg
        .ring_elements(ring, n)
        .into_iter()
        .map(|v| v >> 2)
        .collect();
    let yv = prg.ring_elements(ring, n);
    let x = AShare::share(ring, vec![n], &xv, &mut prg).unwrap();
    let y = AShare::share(ring, vec![n], &yv, &mut prg).unwrap();
    let mut g = c.benchmark_group("nonlinear");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(1));
    g.warm_up_time(Duration::from_millis(1));
    g.throughput(Throughput::Elements(n as u64));
    let cases: [(&str, Op, nl::Cost); 3] = [
        (
            "compare_l37",
            |s, ch, x, y| drop(nl::lt_bounded(s, ch, x, y).unwrap()),
            nl::lt_bounded_cost(n, ring, cfg),
        ),
        (
            "mul_l37",
            |s, ch, x, y| drop(nl::mul(s, ch, x, y).unwrap()),
            nl::mul_cost(n, ring, cfg),
        ),
        (
            "trunc_faithful_l37_f12",
            |s, ch, x, _| drop(nl::trunc(s, ch, x, 12, TruncMode::Faithful).unwrap()),
            nl::trunc_cost(n, ring, 12, TruncMode::Faithful, cfg),
        ),
    ];
    for (name, op, cost) in cases {
        eprintln!(
            "{name}: {n} elements, {:.1} bytes/element, {} flights",
            cost.bytes as f64 / n as f64,
            cost.rounds
        );
        g.bench_function(name, |b| b.iter_custom(|iters| timed(iters, &x, &y, op)));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
