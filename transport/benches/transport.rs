//! Transport throughput and latency: in-memory pair and loopback QUIC.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use duet_transport::quic::{connect, Identity, QuicConfig, QuicListener, QuicRuntime, QuicSession};
use duet_transport::{memory_pair, Channel, Session};
use std::sync::mpsc;
use std::time::Duration;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BIG: usize = 64 << 20;

fn quic_pair() -> (QuicSession, QuicSession) {
    let rt = QuicRuntime::recommended().unwrap();
    let (s_id, c_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let cfg = QuicConfig::default();
    let l = QuicListener::bind(
        &rt,
        "127.0.0.1:0".parse().unwrap(),
        &s_id,
        c_id.fingerprint(),
        cfg.clone(),
    )
    .unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| l.accept().unwrap());
        let c = connect(&rt, addr, &c_id, s_id.fingerprint(), cfg).unwrap();
        (h.join().unwrap(), c)
    })
}

/// A peer thread that echoes a 1-byte ack for each bulk message, or echoes small messages.
fn bench_pair<C: Channel + 'static>(c: &mut Criterion, name: &str, mut a: C, mut b: C) {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        while let Ok(m) = b.recv_bytes() {
            if m.len() > 8 {
                b.send_bytes(&[1]).unwrap();
            } else {
                b.send_bytes(&m).unwrap();
            }
            b.flush().unwrap();
            if stop_rx.try_recv().is_ok() {
                break;
            }
        }
    });
    let payload = vec![0xA5u8; BIG];
    let mut g = c.benchmark_group(name);
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(BIG as u64));
    g.bench_function("64MiB", |bn| {
        bn.iter(|| {
            a.send_bytes(&payload).unwrap();
            a.flush().unwrap();
            a.recv_bytes().unwrap();
        })
    });
    g.throughput(Throughput::Elements(1));
    g.sample_size(50).measurement_time(Duration::from_secs(3));
    g.bench_function("ping_pong_8B", |bn| {
        bn.iter(|| {
            a.send_bytes(&[7u8; 8]).unwrap();
            a.flush().unwrap();
            a.recv_bytes().unwrap();
        })
    });
    g.finish();
    let _ = stop_tx.send(());
    a.send_bytes(&[0]).unwrap();
    a.flush().unwrap();
    let _ = a.recv_bytes();
    drop(a);
    let _ = peer.join();
}

fn transport(c: &mut Criterion) {
    let (a, b) = memory_pair();
    bench_pair(c, "memory", a, b);
    let (s, cl) = quic_pair();
    let a = s.channel(0).unwrap();
    let b = cl.channel(0).unwrap();
    bench_pair(c, "quic_loopback", a, b);
}

criterion_group!(benches, transport);
criterion_main!(benches);
