//! OT throughput with both parties in one process on two threads over the in-memory channel.
//!
//! `cargo bench -p duet-mpc --bench ot`. Each sample runs the session setup untimed, then times
//! `iters` batches on both threads after a barrier (the slower party's time is reported).

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test and bench code outside #[test] functions: a failed unwrap is a failed test"
)]
#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented public function"
)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use duet_mpc::ot::{
    CotReceiver, CotSender, IknpReceiver, IknpSender, KkReceiver, KkSender, OtPair,
};
use duet_mpc::Prg;
use duet_transport::{run_two_party, Channel, MemoryChannel, Role};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn barrier(ch: &mut MemoryChannel) {
    ch.send_bytes(&[0]).unwrap();
    ch.recv_bytes().unwrap();
}

/// Runs `iters` rounds of `s` (OT sender) and `r` (OT receiver) after an untimed setup.
fn timed<S, R>(iters: u64, s: S, r: R) -> Duration
where
    S: Fn(&mut IknpSender, &mut MemoryChannel) + Send + Sync,
    R: Fn(&mut IknpReceiver, &mut MemoryChannel) + Send + Sync,
{
    let (a, b) = run_two_party(
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([1; 32])).unwrap();
            barrier(&mut ch);
            let t = Instant::now();
            for _ in 0..iters {
                s(pair.sender(), &mut ch);
            }
            t.elapsed()
        },
        |mut ch| {
            let mut pair =
                OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([2; 32])).unwrap();
            barrier(&mut ch);
            let t = Instant::now();
            for _ in 0..iters {
                r(pair.receiver(), &mut ch);
            }
            t.elapsed()
        },
    );
    a.max(b)
}

fn bench_base(c: &mut Criterion) {
    let mut g = c.benchmark_group("ot/base");
    g.sample_size(10);
    g.bench_function("otpair_setup_both_directions_256_base_ots", |bch| {
        bch.iter_custom(|iters| {
            let (a, b) = run_two_party(
                |mut ch| {
                    let t = Instant::now();
                    for i in 0..iters {
                        black_box(
                            OtPair::setup(
                                &mut ch,
                                Role::Server,
                                &mut Prg::from_seed([i as u8; 32]),
                            )
                            .unwrap(),
                        );
                    }
                    t.elapsed()
                },
                |mut ch| {
                    let t = Instant::now();
                    for i in 0..iters {
                        black_box(
                            OtPair::setup(
                                &mut ch,
                                Role::Client,
                                &mut Prg::from_seed([!(i as u8); 32]),
                            )
                            .unwrap(),
                        );
                    }
                    t.elapsed()
                },
            );
            a.max(b)
        })
    });
    g.bench_function("iknp_setup_one_direction_128_base_ots", |bch| {
        bch.iter_custom(|iters| {
            let (a, b) = run_two_party(
                |mut ch| {
                    let t = Instant::now();
                    for i in 0..iters {
                        black_box(
                            IknpSender::setup(&mut ch, &mut Prg::from_seed([i as u8; 32]), [0; 32])
                                .unwrap(),
                        );
                    }
                    t.elapsed()
                },
                |mut ch| {
                    let t = Instant::now();
                    for i in 0..iters {
                        black_box(
                            IknpReceiver::setup(
                                &mut ch,
                                &mut Prg::from_seed([!(i as u8); 32]),
                                [0; 32],
                            )
                            .unwrap(),
                        );
                    }
                    t.elapsed()
                },
            );
            a.max(b)
        })
    });
    g.finish();
}

fn bench_extension(c: &mut Criterion) {
    let mut g = c.benchmark_group("ot/iknp");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    let n = 1usize << 21;
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("cot", n), |bch| {
        bch.iter_custom(|iters| {
            timed(
                iters,
                |s, ch| {
                    black_box(s.send_cot(ch, n).unwrap());
                },
                |r, ch| {
                    black_box(r.recv_cot(ch, n).unwrap());
                },
            )
        })
    });
    g.bench_function(BenchmarkId::new("rot", n), |bch| {
        bch.iter_custom(|iters| {
            timed(
                iters,
                |s, ch| {
                    black_box(s.send_rot(ch, n).unwrap());
                },
                |r, ch| {
                    black_box(r.recv_rot(ch, n).unwrap());
                },
            )
        })
    });
    let msgs: Vec<[u64; 2]> = (0..n as u64).map(|i| [i, !i]).collect();
    let choices: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    g.bench_function(BenchmarkId::new("chosen_64bit", n), |bch| {
        bch.iter_custom(|iters| {
            timed(
                iters,
                |s, ch| s.send_chosen(ch, &msgs, 64).unwrap(),
                |r, ch| {
                    black_box(r.recv_chosen(ch, &choices, 64).unwrap());
                },
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("ot/one_of_n");
    g.sample_size(10);
    let n = 1usize << 17;
    g.throughput(Throughput::Elements(n as u64));
    for (l, w) in [(4u32, 2u32), (8, 2)] {
        let msgs: Vec<u64> = (0..n << l).map(|i| i as u64 & 3).collect();
        let choices: Vec<u8> = (0..n).map(|i| (i % (1 << l)) as u8).collect();
        g.bench_function(
            BenchmarkId::new(format!("1_of_{}_w{w}", 1 << l), n),
            |bch| {
                bch.iter_custom(|iters| {
                    timed(
                        iters,
                        |s, ch| s.send_one_of_n(ch, &msgs, l, w).unwrap(),
                        |r, ch| {
                            black_box(r.recv_one_of_n(ch, &choices, l, w).unwrap());
                        },
                    )
                })
            },
        );
    }
    for (l, w) in [(4u32, 2u32), (8, 2)] {
        let msgs: Vec<u64> = (0..n << l).map(|i| i as u64 & 3).collect();
        let choices: Vec<u8> = (0..n).map(|i| (i % (1 << l)) as u8).collect();
        g.bench_function(
            BenchmarkId::new(format!("kk13_1_of_{}_w{w}", 1 << l), n),
            |bch| {
                bch.iter_custom(|iters| {
                    let (a, b) = run_two_party(
                        |mut ch| {
                            let mut pair =
                                OtPair::setup(&mut ch, Role::Server, &mut Prg::from_seed([1; 32]))
                                    .unwrap();
                            let mut kk = KkSender::setup(pair.receiver(), &mut ch).unwrap();
                            barrier(&mut ch);
                            let t = Instant::now();
                            for _ in 0..iters {
                                kk.send(&mut ch, &msgs, l, w).unwrap();
                            }
                            t.elapsed()
                        },
                        |mut ch| {
                            let mut pair =
                                OtPair::setup(&mut ch, Role::Client, &mut Prg::from_seed([2; 32]))
                                    .unwrap();
                            let mut kk = KkReceiver::setup(pair.sender(), &mut ch).unwrap();
                            barrier(&mut ch);
                            let t = Instant::now();
                            for _ in 0..iters {
                                black_box(kk.receive(&mut ch, &choices, l, w).unwrap());
                            }
                            t.elapsed()
                        },
                    );
                    a.max(b)
                })
            },
        );
    }
    g.finish();
}

fn bench_primitives(c: &mut Criterion) {
    let mut g = c.benchmark_group("ot/primitives");
    g.sample_size(10);
    let n = 1usize << 16;
    g.throughput(Throughput::Elements(n as u64));
    let h = duet_mpc::ot::aes::FixedKeyHash::new();
    let mut xs: Vec<u128> = (0..n as u128).collect();
    g.bench_function("tccr_hash", |b| {
        b.iter(|| h.hash_many(black_box(&mut xs), |j| j as u128))
    });
    let prg = duet_mpc::ot::aes::AesPrg::new(7);
    let mut words = vec![0u64; 2 * n];
    g.bench_function("aes_prg_block", |b| {
        b.iter(|| prg.fill_words(0, black_box(&mut words)))
    });
    let cols: Vec<u64> = (0..128 * n as u64 / 64).collect();
    g.bench_function("transpose_128xn_row", |b| {
        b.iter(|| duet_mpc::ot::transpose::transpose_128xn(black_box(&cols), n).unwrap())
    });
    let keys: Vec<[u128; 2]> = (0..n as u128 * 4).map(|i| [i, !i]).collect();
    let e = vec![0u8; n * 4 / 8];
    let msgs1: Vec<u64> = (0..n * 16).map(|i| i as u64 & 3).collect();
    g.bench_function("one_of_16_sender_respond", |b| {
        b.iter(|| {
            duet_mpc::ot::rot::one_of_n_sender_respond(&keys, &e, black_box(&msgs1), 4, 2).unwrap()
        })
    });
    g.bench_function("rot_sender_keys", |b| {
        b.iter(|| duet_mpc::ot::rot::rot_sender_keys(5, 0, black_box(&xs)))
    });
    g.finish();
}

criterion_group!(benches, bench_primitives, bench_base, bench_extension);
criterion_main!(benches);
