//! One decode step of one layer against an encrypted KV cache ([`HeKvCache`]: append, scores,
//! context), SmolLM2-135M shapes (9 query heads over 3 key/value heads of width 64, `l = 37`,
//! `N = 8192`), at contexts 40 and 60, for three packing policies; beside the same step with
//! [`HeMatMulShared`] (both products re-encrypting the whole cache).
//!
//! `cargo bench -p duet-protocols --bench kv_cache` prints, per configuration, the measured bytes
//! and flights of the step (both directions) with the predicted ones and the per-party HE work,
//! then criterion's time for the whole step (both parties in this process, in-memory channel:
//! the two parties share the machine's cores). `DUET_BENCH_BASELINE=1` also times one
//! `HeMatMulShared` step (two products) at each context.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::sync::{mpsc, Arc};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::{memory_pair, Channel, ChannelStats, MemoryChannel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

const SPEC: KvSpec = KvSpec {
    heads: 9,
    kv_heads: 3,
    head_dim: 64,
};

struct Keys {
    a: HeClientSetup,
    b: HeClientSetup,
    a_peer: HeServerSetup,
    b_peer: HeServerSetup,
}

fn keys(p: &Arc<RlweParameters>) -> Keys {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let a = HeClientSetup::generate(p, &mut rng).unwrap();
    let b = HeClientSetup::generate(p, &mut rng).unwrap();
    let a_peer = HeServerSetup::from_messages(p, &b.setup_messages()).unwrap();
    let b_peer = HeServerSetup::from_messages(p, &a.setup_messages()).unwrap();
    Keys {
        a,
        b,
        a_peer,
        b_peer,
    }
}

/// One party's inputs for one step with `r` rows at context `ctx` (after the step).
struct Inputs {
    k: Vec<u64>,
    v: Vec<u64>,
    q: Vec<u64>,
    p: Vec<u64>,
}

fn inputs(rng: &mut ChaCha20Rng, mask: u64, r: usize, ctx: usize) -> Inputs {
    let mut rand = |n: usize| -> Vec<u64> { (0..n).map(|_| rng.gen::<u64>() & mask).collect() };
    let w = SPEC.row_width();
    Inputs {
        k: rand(r * w),
        v: rand(r * w),
        q: rand(SPEC.heads * r * SPEC.head_dim),
        p: rand(SPEC.heads * r * ctx),
    }
}

fn step<C: Channel>(
    ch: &mut C,
    cache: &mut HeKvCache,
    keys: &KvKeys<'_>,
    x: &Inputs,
    rng: &mut ChaCha20Rng,
) -> (f64, f64) {
    cache.append(&x.k, &x.v).unwrap();
    let t = Instant::now();
    cache.scores(ch, keys, &x.q, rng).unwrap();
    let ts = t.elapsed().as_secs_f64();
    let t = Instant::now();
    cache.context(ch, keys, &x.p, rng).unwrap();
    (ts, t.elapsed().as_secs_f64())
}

/// Both caches filled to `ctx` positions by prefill steps of up to 16 rows.
fn prefill(
    p: &Arc<RlweParameters>,
    k: &Keys,
    policy: KvPolicy,
    ctx: usize,
) -> (HeKvCache, HeKvCache) {
    let mask = p.plain_mask();
    let mut sizes = Vec::new();
    let mut left = ctx;
    while left > 0 {
        sizes.push(left.min(16));
        left -= left.min(16);
    }
    let run = |ch: &mut MemoryChannel, keys: KvKeys<'_>, seed: u64| {
        let mut cache = HeKvCache::new(SPEC, policy, p).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut at = 0;
        for &r in &sizes {
            at += r;
            let x = inputs(&mut rng, mask, r, at);
            step(ch, &mut cache, &keys, &x, &mut rng);
        }
        cache
    };
    let (mut ca, mut cb) = memory_pair();
    std::thread::scope(|s| {
        let b = s.spawn(|| run(&mut cb, KvKeys::new(&k.b, &k.b_peer).unwrap(), 2));
        let a = run(&mut ca, KvKeys::new(&k.a, &k.a_peer).unwrap(), 1);
        (a, b.join().unwrap())
    })
}

fn traffic(s: ChannelStats) -> (u64, u64) {
    (s.bytes_sent + s.bytes_received, s.total_rounds())
}

fn bench_step(
    c: &mut Criterion,
    p: &Arc<RlweParameters>,
    k: &Keys,
    ctx: usize,
    policy: KvPolicy,
    name: &str,
) {
    let mask = p.plain_mask();
    let (a0, b0) = prefill(p, k, policy, ctx - 1);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let (xa, xb) = (
        inputs(&mut rng, mask, 1, ctx),
        inputs(&mut rng, mask, 1, ctx),
    );
    let (mut cha, mut chb) = memory_pair();
    let (tx, rx) = mpsc::channel::<bool>();
    std::thread::scope(|s| {
        let (b0, xb) = (&b0, &xb);
        s.spawn(move || {
            let keys = KvKeys::new(&k.b, &k.b_peer).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(12);
            let mut next = b0.clone();
            while rx.recv().unwrap_or(false) {
                step(&mut chb, &mut next, &keys, xb, &mut rng);
                next = b0.clone();
            }
        });
        let keys = KvKeys::new(&k.a, &k.a_peer).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        // one step for the figures (after a warm-up step)
        let mut a = a0.clone();
        tx.send(true).unwrap();
        step(&mut cha, &mut a, &keys, &xa, &mut rng);
        let mut a = a0.clone();
        let before = cha.stats();
        tx.send(true).unwrap();
        let (ts, tc) = step(&mut cha, &mut a, &keys, &xa, &mut rng);
        let (bytes, flights) = traffic(cha.stats() - before);
        let cs = HeKvCache::scores_cost(SPEC, policy, p, ctx, 1).unwrap();
        let cc = HeKvCache::context_cost(SPEC, policy, p, ctx, 1).unwrap();
        let total = cs + cc;
        let (accs, cts) = a.score_layout();
        println!(
            "kv_cache {name}: measured {bytes} B in {flights} flights (predicted {} B, {} flights); \
             scores {} B + context {} B; {accs} score accumulators in {cts} answer ciphertext(s); \
             per party: {} products, {} weight polys, {} key switches, {} encryptions, {} finalizes, \
             {} decryptions; one run: scores {:.3} s, context {:.3} s; peer rows held {:.1} MB",
            total.traffic.bytes,
            total.traffic.rounds,
            cs.traffic.bytes,
            cc.traffic.bytes,
            total.per_party.products,
            total.per_party.weight_polys,
            total.per_party.key_switches,
            total.per_party.encryptions,
            total.per_party.finalizes,
            total.per_party.decryptions,
            ts,
            tc,
            a.peer_memory_bytes() as f64 / 1e6,
        );
        let mut g = c.benchmark_group("kv_cache");
        g.sample_size(10);
        g.bench_function(name, |bch| {
            bch.iter_batched(
                || a0.clone(),
                |mut a| {
                    tx.send(true).unwrap();
                    step(&mut cha, &mut a, &keys, &xa, &mut rng)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
        tx.send(false).unwrap();
    });
}

/// The same step with `HeMatMulShared` (the cache re-encrypted for every product): predicted
/// bytes, and with `DUET_BENCH_BASELINE=1` one timed run.
fn baseline(p: &Arc<RlweParameters>, ctx: usize) {
    let policy = LayoutPolicy::MinBytes;
    let s1 = SharedShape::new(SPEC.heads, 1, SPEC.head_dim, ctx);
    let s2 = SharedShape::new(SPEC.heads, 1, ctx, SPEC.head_dim);
    let c1 = HeMatMulShared::cost(p, s1, policy).unwrap();
    let c2 = HeMatMulShared::cost(p, s2, policy).unwrap();
    let mut line = format!(
        "he_matmul_shared ctx {ctx}: predicted {} B in {} flights ({} + {} B), {} key switches, {} products",
        c1.bytes + c2.bytes,
        c1.rounds + c2.rounds,
        c1.bytes,
        c2.bytes,
        c1.key_switches + c2.key_switches,
        c1.products + c2.products
    );
    if std::env::var_os("DUET_BENCH_BASELINE").is_some() {
        let mask = p.plain_mask();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut rand = |n: usize| -> Vec<u64> { (0..n).map(|_| rng.gen::<u64>() & mask).collect() };
        let (h, d) = (SPEC.heads, SPEC.head_dim);
        let (x1c, x1s) = (rand(h * d), rand(h * d));
        let (y1c, y1s) = (rand(h * d * ctx), rand(h * d * ctx));
        let (x2c, x2s) = (rand(h * ctx), rand(h * ctx));
        let (y2c, y2s) = (rand(h * ctx * d), rand(h * ctx * d));
        let (mut cch, mut sch) = memory_pair();
        std::thread::scope(|s| {
            s.spawn(|| {
                let setup = HeServerSetup::run(&mut sch, p).unwrap();
                let mut rng = ChaCha20Rng::seed_from_u64(6);
                HeMatMulShared::run_server(&mut sch, &setup, s1, policy, &x1s, &y1s, &mut rng)
                    .unwrap();
                HeMatMulShared::run_server(&mut sch, &setup, s2, policy, &x2s, &y2s, &mut rng)
                    .unwrap();
            });
            let mut rng = ChaCha20Rng::seed_from_u64(7);
            let setup = HeClientSetup::run(&mut cch, p, &mut rng).unwrap();
            let t0 = Instant::now();
            let before = cch.stats();
            HeMatMulShared::run_client(&mut cch, &setup, s1, policy, &x1c, &y1c, &mut rng).unwrap();
            HeMatMulShared::run_client(&mut cch, &setup, s2, policy, &x2c, &y2c, &mut rng).unwrap();
            let (b, f) = traffic(cch.stats() - before);
            line += &format!(
                "; measured {b} B in {f} flights, one run {:.3} s",
                t0.elapsed().as_secs_f64()
            );
        });
    }
    println!("{line}");
}

fn benches(c: &mut Criterion) {
    let p =
        RlweParameters::preset(Preset::N8192Q200Pack, RingBits(37), WeightBound::Uniform).unwrap();
    let k = keys(&p);
    println!(
        "kv_cache setup (the server's keys, once per session): {} B",
        HeKvCache::setup_cost(&p).bytes
    );
    let policies = [
        ("pack16", KvPolicy::default()),
        (
            "pack16-split",
            KvPolicy {
                pad: false,
                ..KvPolicy::default()
            },
        ),
        (
            "no-pack",
            KvPolicy {
                pack: 1,
                ..KvPolicy::default()
            },
        ),
    ];
    for ctx in [40, 60] {
        baseline(&p, ctx);
        for (pname, policy) in policies {
            bench_step(c, &p, &k, ctx, policy, &format!("decode-ctx{ctx}/{pname}"));
        }
    }
}

criterion_group!(kv_cache, benches);
criterion_main!(kv_cache);
