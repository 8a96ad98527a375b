//! Ferret COT throughput and traffic, both parties in one process on two threads over the
//! in-memory channel.
//!
//! `cargo bench -p duet-mpc --bench ferret`. Each sample runs the one-time setup untimed (base
//! OTs, IKNP base COTs, the setup iteration), then times 10,000,000 COTs on both threads after a
//! barrier (the slower party's time is reported); the traffic of the timed part and of the
//! setup is printed once.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test and bench code outside #[test] functions: a failed unwrap is a failed test"
)]
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use duet_mpc::ot::{CotReceiver, CotSender, FerretParams, FerretReceiver, FerretSender, OtPair};
use duet_mpc::Prg;
use duet_transport::{run_two_party, Channel, MemoryChannel, Role};
use std::hint::black_box;
use std::sync::Once;
use std::time::{Duration, Instant};

const N: usize = 10_000_000;

fn barrier(ch: &mut MemoryChannel) {
    ch.send_bytes(&[0]).unwrap();
    ch.recv_bytes().unwrap();
}

static REPORT: Once = Once::new();

/// One sample: untimed setup, then `iters` batches of `N` COTs.
fn sample(iters: u64) -> Duration {
    let params = FerretParams::B13;
    let ((ts, setup_s, timed_s), (tr, setup_r, timed_r)) = run_two_party(
        |mut ch| {
            let mut rng = Prg::from_seed([1; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Server, &mut rng).unwrap();
            let base = ch.stats();
            let mut f = FerretSender::setup(&mut ch, pair.sender(), params, &mut rng).unwrap();
            let setup = ch.stats().bytes_sent - base.bytes_sent;
            barrier(&mut ch);
            let before = ch.stats();
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f.send_cot(&mut ch, N).unwrap());
            }
            (
                t.elapsed(),
                setup,
                ch.stats().bytes_sent - before.bytes_sent,
            )
        },
        |mut ch| {
            let mut rng = Prg::from_seed([2; 32]);
            let mut pair = OtPair::setup(&mut ch, Role::Client, &mut rng).unwrap();
            let base = ch.stats();
            let mut f = FerretReceiver::setup(&mut ch, pair.receiver(), params, &mut rng).unwrap();
            let setup = ch.stats().bytes_sent - base.bytes_sent;
            barrier(&mut ch);
            let before = ch.stats();
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f.recv_cot(&mut ch, N).unwrap());
            }
            (
                t.elapsed(),
                setup,
                ch.stats().bytes_sent - before.bytes_sent,
            )
        },
    );
    REPORT.call_once(|| {
        eprintln!(
            "ferret B13: {iters} x {N} COTs: {} bytes in total (sender {timed_s}, receiver \
             {timed_r}); one-time setup after the 256 base OTs: {} bytes (sender {setup_s}, \
             receiver {setup_r}); OtPair base OTs: {} bytes per party",
            timed_s + timed_r,
            setup_s + setup_r,
            OtPair::setup_cost().bytes
        );
    });
    ts.max(tr)
}

fn bench_ferret(c: &mut Criterion) {
    let mut g = c.benchmark_group("ot/ferret");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("cot_10m_b13", |b| b.iter_custom(sample));
    g.finish();
}

criterion_group!(benches, bench_ferret);
criterion_main!(benches);
