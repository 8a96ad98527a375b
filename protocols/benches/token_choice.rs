//! Criterion bench of the private next-token choice at `V = 49,152` (one row, logits in
//! Z_2^37 with 12 fractional bits, `|logit| < 64`, Ferret COTs): greedy, and sampling with
//! top-k 50 and top-p 0.9 at T = 0.8. Both parties in this process over the in-memory
//! channel; session setup outside the measured loop, the COTs of each call pooled before its
//! timed part (Ferret's silent extension is offline traffic). Prints the measured bytes and
//! flights of one call next to the cost formula.
//!
//! `cargo bench -p duet-protocols --bench token_choice`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use criterion::{criterion_group, criterion_main, Criterion};
use duet_mpc::nonlinear::{NlConfig, NlSession};
use duet_mpc::{AShare, Prg, Ring};
use duet_protocols::nonlinear::token_choice::{
    choose_token, choose_token_cost, LogitFormat, TokenChoice,
};
use duet_transport::{memory_pair, Channel, ChannelStats, MemoryChannel, Role};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const V: usize = 49_152;

fn logits(fmt: &LogitFormat) -> (AShare, AShare) {
    let mut prg = Prg::from_seed([9; 32]);
    let vals: Vec<u64> = (0..V)
        .map(|_| {
            let s: i64 = (0..4)
                .map(|_| (prg.ring_element(Ring::z64()) % (14 << 12)) as i64 - (7 << 12))
                .sum();
            fmt.ring.from_i64(s / 2)
        })
        .collect();
    AShare::share(fmt.ring, vec![1, V], &vals, &mut prg).unwrap()
}

fn bench(c: &mut Criterion) {
    let fmt = LogitFormat::new(Ring::new(37).unwrap(), 12, 6).unwrap();
    let cfg = NlConfig::default();
    let (x0, x1) = logits(&fmt);
    let choices = [
        ("greedy", TokenChoice::Greedy),
        (
            "sample_t0.8_k50_p0.9",
            TokenChoice::Sample {
                temperature: 0.8,
                top_k: Some(50),
                top_p: Some(0.9),
                seed: 1,
            },
        ),
    ];
    let (mut sch, mut cch) = memory_pair();
    let (tx, rx) = mpsc::channel::<Option<TokenChoice>>();
    // the server's traffic of each call, for the report
    let (stx, srx) = mpsc::channel::<ChannelStats>();
    std::thread::scope(|s| {
        let x0 = &x0;
        s.spawn(move || {
            let mut rng = Prg::from_seed([1; 32]);
            let mut sess = NlSession::setup(&mut sch, Role::Server, &mut rng, cfg).unwrap();
            while let Ok(Some(choice)) = rx.recv() {
                let need = choose_token_cost(1, V, &fmt, &choice, cfg).unwrap();
                sess.reserve(&mut sch, need.cots).unwrap();
                let before = sch.stats();
                choose_token(&mut sess, &mut sch, x0, &fmt, &choice).unwrap();
                stx.send(sch.stats() - before).unwrap();
            }
        });
        let mut rng = Prg::from_seed([2; 32]);
        let mut sess = NlSession::setup(&mut cch, Role::Client, &mut rng, cfg).unwrap();
        let mut g = c.benchmark_group("token_choice_v49152");
        g.sample_size(10);
        for (name, choice) in &choices {
            let need = choose_token_cost(1, V, &fmt, choice, cfg).unwrap();
            let run = |sess: &mut NlSession,
                       cch: &mut MemoryChannel|
             -> (Duration, ChannelStats, ChannelStats) {
                tx.send(Some(choice.public())).unwrap();
                sess.reserve(cch, need.cots).unwrap();
                let before = cch.stats();
                let t = Instant::now();
                choose_token(sess, cch, &x1, &fmt, choice).unwrap();
                let secs = t.elapsed();
                (secs, cch.stats() - before, srx.recv().unwrap())
            };
            // one call to report the traffic: bytes and flights sent by both parties (what
            // `Cost` counts)
            let (secs, dc, ds) = run(&mut sess, &mut cch);
            eprintln!(
                "{name}: {} bytes ({} predicted), {} flights (bound {}), COTs {:?}, {:.3} s",
                dc.bytes_sent + ds.bytes_sent,
                need.bytes,
                dc.rounds + ds.rounds,
                need.rounds,
                need.cots,
                secs.as_secs_f64()
            );
            g.bench_function(*name, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| run(&mut sess, &mut cch).0).sum())
            });
        }
        g.finish();
        tx.send(None).unwrap();
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
