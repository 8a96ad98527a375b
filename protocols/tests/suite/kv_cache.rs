//! HeKvCache: decode steps and prefills against the plaintext products on uniformly random
//! shares (extreme values included), for SmolLM2's grouped-query shape and GPT-2's, measured
//! bytes and flights == cost for every call, the packing policies, and malformed peer messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    missing_docs,
    reason = "test helpers outside #[test] fns; a failure here is a test failure"
)]

use std::sync::Arc;

use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::{run_two_party, Channel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn params(l: u32) -> Arc<RlweParameters> {
    RlweParameters::preset(Preset::N8192Q200Pack, RingBits(l), WeightBound::Uniform).unwrap()
}

/// Both parties' keys: `(own, peer's public)` for party A and for party B.
struct Keys {
    a: HeClientSetup,
    b: HeClientSetup,
    a_peer: HeServerSetup,
    b_peer: HeServerSetup,
}

fn keys(p: &Arc<RlweParameters>, seed: u64) -> Keys {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
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

/// A value of `Z_2^l`, with extreme values mixed in when `extreme`.
fn elem(rng: &mut ChaCha20Rng, mask: u64, extreme: bool) -> u64 {
    if extreme {
        match rng.gen_range(0..8) {
            0 => return 0,
            1 => return mask,
            2 => return mask >> 1,
            3 => return (mask >> 1) + 1,
            4 => return 1,
            _ => {}
        }
    }
    rng.gen::<u64>() & mask
}

/// `n` secret values and their two shares.
fn shared(rng: &mut ChaCha20Rng, n: usize, mask: u64, extreme: bool) -> [Vec<u64>; 3] {
    let x: Vec<u64> = (0..n).map(|_| elem(rng, mask, extreme)).collect();
    let a: Vec<u64> = (0..n).map(|_| elem(rng, mask, extreme)).collect();
    let b = x
        .iter()
        .zip(&a)
        .map(|(x, a)| x.wrapping_sub(*a) & mask)
        .collect();
    [x, a, b]
}

/// The inputs of one step.
struct Step {
    r: usize,
    k: [Vec<u64>; 3],
    v: [Vec<u64>; 3],
    q: [Vec<u64>; 3],
    p: [Vec<u64>; 3],
}

/// One party's results of one step: (scores share, context share, scores traffic, context
/// traffic) with traffic = (bytes both ways, flights both ways) from this endpoint.
type Got = (Vec<u64>, Vec<u64>, (u64, u64), (u64, u64));

fn party<C: Channel>(
    ch: &mut C,
    cache: &mut HeKvCache,
    keys: KvKeys<'_>,
    steps: &[Step],
    side: usize,
    seed: u64,
) -> Result<Vec<Got>> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for s in steps {
        cache.append(&s.k[side], &s.v[side])?;
        let before = ch.stats();
        let sc = cache.scores(ch, &keys, &s.q[side], &mut rng)?;
        let mid = ch.stats();
        let cx = cache.context(ch, &keys, &s.p[side], &mut rng)?;
        let after = ch.stats();
        let t =
            |x: duet_transport::ChannelStats| (x.bytes_sent + x.bytes_received, x.total_rounds());
        out.push((sc, cx, t(mid - before), t(after - mid)));
    }
    Ok(out)
}

/// Runs `rows` steps (query rows per step) between two threads and checks every result against
/// the plaintext products, and measured traffic against the cost functions.
fn run(spec: KvSpec, policy: KvPolicy, l: u32, rows: &[usize], extreme: bool, seed: u64) {
    let p = params(l);
    let mask = p.plain_mask();
    let keys = keys(&p, seed);
    let mut rng = ChaCha20Rng::seed_from_u64(seed + 100);
    let (h, d, w) = (spec.heads, spec.head_dim, spec.row_width());
    let mut steps = Vec::new();
    let mut ctx = 0;
    for &r in rows {
        ctx += r;
        steps.push(Step {
            r,
            k: shared(&mut rng, r * w, mask, extreme),
            v: shared(&mut rng, r * w, mask, extreme),
            q: shared(&mut rng, h * r * d, mask, extreme),
            p: shared(&mut rng, h * r * ctx, mask, extreme),
        });
    }
    let mut ca = HeKvCache::new(spec, policy, &p).unwrap();
    let mut cb = ca.empty_like();
    let (ra, rb) = run_two_party(
        |mut ch| {
            party(
                &mut ch,
                &mut ca,
                KvKeys::new(&keys.a, &keys.a_peer).unwrap(),
                &steps,
                1,
                seed + 1,
            )
        },
        |mut ch| {
            party(
                &mut ch,
                &mut cb,
                KvKeys::new(&keys.b, &keys.b_peer).unwrap(),
                &steps,
                2,
                seed + 2,
            )
        },
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let (mut kx, mut vx) = (Vec::new(), Vec::new());
    let mut ctx = 0;
    for (i, s) in steps.iter().enumerate() {
        let r = s.r;
        ctx += r;
        kx.extend_from_slice(&s.k[0]);
        vx.extend_from_slice(&s.v[0]);
        // plaintext products, heads x r x ctx and heads x r x d
        let g_of = |hh: usize| hh / (h / spec.kv_heads);
        let mut want_s = Vec::with_capacity(h * r * ctx);
        for hh in 0..h {
            for rho in 0..r {
                let qrow = &s.q[0][(hh * r + rho) * d..(hh * r + rho + 1) * d];
                for t in 0..ctx {
                    let krow = &kx[t * w + g_of(hh) * d..t * w + (g_of(hh) + 1) * d];
                    let v = qrow
                        .iter()
                        .zip(krow)
                        .fold(0u64, |a, (x, y)| a.wrapping_add(x.wrapping_mul(*y)));
                    want_s.push(v & mask);
                }
            }
        }
        let mut want_c = Vec::with_capacity(h * r * d);
        for hh in 0..h {
            for rho in 0..r {
                for j in 0..d {
                    let mut acc = 0u64;
                    for t in 0..ctx {
                        acc = acc.wrapping_add(
                            s.p[0][(hh * r + rho) * ctx + t]
                                .wrapping_mul(vx[t * w + g_of(hh) * d + j]),
                        );
                    }
                    want_c.push(acc & mask);
                }
            }
        }
        let (sa, ca_, ta_s, ta_c) = &ra[i];
        let (sb, cb_, tb_s, tb_c) = &rb[i];
        let got_s: Vec<u64> = sa
            .iter()
            .zip(sb)
            .map(|(a, b)| a.wrapping_add(*b) & mask)
            .collect();
        let got_c: Vec<u64> = ca_
            .iter()
            .zip(cb_)
            .map(|(a, b)| a.wrapping_add(*b) & mask)
            .collect();
        assert!(
            got_s == want_s,
            "step {i} (ctx {ctx}, r {r}): scores differ"
        );
        assert!(
            got_c == want_c,
            "step {i} (ctx {ctx}, r {r}): context differs"
        );
        let cs = HeKvCache::scores_cost(spec, policy, &p, ctx, r).unwrap();
        let cc = HeKvCache::context_cost(spec, policy, &p, ctx, r).unwrap();
        for (ts, tc) in [(ta_s, ta_c), (tb_s, tb_c)] {
            assert_eq!(ts.0, cs.traffic.bytes, "step {i}: scores bytes");
            assert_eq!(ts.1, cs.traffic.rounds, "step {i}: scores flights");
            assert_eq!(tc.0, cc.traffic.bytes, "step {i}: context bytes");
            assert_eq!(tc.1, cc.traffic.rounds, "step {i}: context flights");
        }
    }
}

fn smollm2() -> KvSpec {
    KvSpec::new(9, 3, 64)
}

#[test]
fn smollm2_decode_steps_ctx_1_to_70() {
    run(smollm2(), KvPolicy::default(), 37, &[1; 70], false, 1);
}

#[test]
fn smollm2_prefill_r8_then_decode_extreme_values() {
    run(
        smollm2(),
        KvPolicy::default(),
        37,
        &[8, 8, 1, 1, 8, 1],
        true,
        2,
    );
}

#[test]
fn gpt2_shape_prefill_then_decode() {
    run(
        KvSpec::new(12, 12, 64),
        KvPolicy::default(),
        37,
        &[8, 1, 1, 1],
        true,
        3,
    );
}

#[test]
fn policies_and_ring_widths() {
    // no packing; split packing groups; compact storage; l = 41 and l = 36
    let split = KvPolicy {
        pack: 4,
        pad: false,
        storage: KvStorage::Compact,
    };
    let none = KvPolicy {
        pack: 1,
        ..KvPolicy::default()
    };
    run(smollm2(), split, 41, &[8, 8, 1, 1], true, 4);
    run(smollm2(), none, 36, &[1, 1, 8, 1], true, 5);
    // an odd shape: 8 query heads over 2 key heads of width 48
    run(
        KvSpec::new(8, 2, 48),
        KvPolicy::default(),
        37,
        &[5, 1, 1],
        true,
        6,
    );
}

#[test]
fn cost_of_the_next_call_matches_the_static_cost() {
    let p = params(37);
    let spec = smollm2();
    let policy = KvPolicy::default();
    let mut c = HeKvCache::new(spec, policy, &p).unwrap();
    let w = spec.row_width();
    c.append(&vec![0; 3 * w], &vec![0; 3 * w]).unwrap();
    assert_eq!(
        c.next_scores_cost(3).unwrap(),
        HeKvCache::scores_cost(spec, policy, &p, 3, 3).unwrap()
    );
    assert_eq!(
        c.next_context_cost(3),
        HeKvCache::context_cost(spec, policy, &p, 3, 3).unwrap()
    );
    // decode at ctx 40 / 60: fewer score ciphertexts with packing, key switches instead
    for ctx in [40, 60] {
        let packed = HeKvCache::scores_cost(spec, policy, &p, ctx, 1).unwrap();
        let none =
            HeKvCache::scores_cost(spec, KvPolicy { pack: 1, ..policy }, &p, ctx, 1).unwrap();
        assert!(packed.traffic.bytes < none.traffic.bytes);
        assert!(packed.per_party.key_switches > 0 && none.per_party.key_switches == 0);
    }
}

#[test]
fn bounds_shapes_and_order_are_checked() {
    let p = params(37);
    let spec = smollm2();
    let w = spec.row_width();
    let mut c = HeKvCache::new(spec, KvPolicy::default(), &p).unwrap();
    let max = c.max_context();
    assert!((70..=KV_MAX_CONTEXT).contains(&max));
    // wrong shapes, values outside the ring, too long a context
    assert!(c.append(&vec![0; w + 1], &vec![0; w + 1]).is_err());
    assert!(c.append(&vec![0; w], &vec![0; 2 * w]).is_err());
    assert!(c.append(&vec![1 << 40; w], &vec![0; w]).is_err());
    assert!(c
        .append(&vec![0; (max + 1) * w], &vec![0; (max + 1) * w])
        .is_err());
    assert!(c.is_empty());
    // out of order: context before scores, append twice
    let k = keys(&p, 9);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    assert!(c.context_respond(&k.a_peer, &[], &mut rng).is_err());
    c.append(&vec![0; w], &vec![0; w]).unwrap();
    assert!(c.append(&vec![0; w], &vec![0; w]).is_err());
    // queries of the wrong shape
    assert!(c.scores_request(&k.a, &[0; 5], &mut rng).is_err());
    // bad policies and parameters
    let bad = |pack| KvPolicy {
        pack,
        ..KvPolicy::default()
    };
    assert!(HeKvCache::new(spec, bad(3), &p).is_err());
    assert!(HeKvCache::new(spec, bad(128), &p).is_err());
    let small = RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(37),
        WeightBound::MaxAbs(100),
    )
    .unwrap();
    assert!(HeKvCache::new(spec, KvPolicy::default(), &small).is_err());
    assert!(HeKvCache::new(KvSpec::new(9, 2, 64), KvPolicy::default(), &p).is_err());
    // keys of other parameters
    let other = params(41);
    let ko = keys(&other, 3);
    assert!(KvKeys::new(&k.a, &ko.a_peer).is_err());
}

/// Party A honest up to its step ciphertexts, which it corrupts; party B must fail cleanly.
fn against_corrupted_steps(corrupt: fn(Vec<u8>) -> Vec<u8>) -> Result<Vec<u64>> {
    let p = params(37);
    let spec = smollm2();
    let k = keys(&p, 11);
    let w = spec.row_width();
    let q = vec![3u64; spec.heads * spec.head_dim];
    let (b, _a) = run_two_party(
        |mut ch| {
            let mut c = HeKvCache::new(spec, KvPolicy::default(), &p)?;
            c.append(&vec![1; w], &vec![2; w])?;
            let keys = KvKeys::new(&k.b, &k.b_peer)?;
            c.scores(&mut ch, &keys, &q, &mut ChaCha20Rng::seed_from_u64(1))
        },
        |mut ch| {
            let mut c = HeKvCache::new(spec, KvPolicy::default(), &p).unwrap();
            c.append(&vec![1; w], &vec![2; w]).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            for m in c.scores_request(&k.a, &q, &mut rng).unwrap() {
                ch.send_bytes(&corrupt(m)).unwrap();
            }
            ch.flush().unwrap();
            let _ = ch.recv_bytes();
        },
    );
    b
}

#[test]
fn corrupted_step_ciphertexts_are_errors() {
    assert!(
        against_corrupted_steps(|m| m).is_err(),
        "the honest half then hangs up"
    );
    for (what, f) in [
        (
            "truncated",
            (|mut m: Vec<u8>| {
                m.pop();
                m
            }) as fn(Vec<u8>) -> Vec<u8>,
        ),
        ("extra byte", |mut m: Vec<u8>| {
            m.push(0);
            m
        }),
        ("garbage", |m: Vec<u8>| vec![0xA5; m.len()]),
        ("empty", |_| Vec::new()),
        ("other parameters", |mut m: Vec<u8>| {
            m[3] ^= 1;
            m
        }),
    ] {
        let e = against_corrupted_steps(f).unwrap_err();
        // a message longer than a step ciphertext is refused by the bounded receive before it
        // is read; every other corruption reaches the decoder
        let expected = if what == "extra byte" {
            matches!(
                e,
                ProtocolError::Transport(duet_transport::TransportError::TooLong { .. })
            )
        } else {
            matches!(e, ProtocolError::Fhe(_))
        };
        assert!(
            expected,
            "{what}: expected a refusal of the message, got {e}"
        );
    }
}

#[test]
fn corrupted_answers_are_errors() {
    let p = params(37);
    let spec = smollm2();
    let k = keys(&p, 12);
    let w = spec.row_width();
    let q = vec![3u64; spec.heads * spec.head_dim];
    for corrupt in [
        (|m: Vec<u8>| vec![0x5A; m.len()]) as fn(Vec<u8>) -> Vec<u8>,
        |mut m: Vec<u8>| {
            m.truncate(m.len() - 3);
            m
        },
        |mut m: Vec<u8>| {
            m.extend_from_slice(&[1, 2]);
            m
        },
    ] {
        let (b, _a) = run_two_party(
            |mut ch| {
                let mut c = HeKvCache::new(spec, KvPolicy::default(), &p)?;
                c.append(&vec![1; w], &vec![2; w])?;
                let keys = KvKeys::new(&k.b, &k.b_peer)?;
                c.scores(&mut ch, &keys, &q, &mut ChaCha20Rng::seed_from_u64(1))
            },
            |mut ch| {
                let mut c = HeKvCache::new(spec, KvPolicy::default(), &p).unwrap();
                c.append(&vec![1; w], &vec![2; w]).unwrap();
                let mut rng = ChaCha20Rng::seed_from_u64(2);
                let mine = c.scores_request(&k.a, &q, &mut rng).unwrap();
                for m in &mine {
                    ch.send_bytes(m).unwrap();
                }
                ch.flush().unwrap();
                let theirs: Vec<Vec<u8>> =
                    (0..mine.len()).map(|_| ch.recv_bytes().unwrap()).collect();
                for m in c.scores_respond(&k.a_peer, &theirs, &mut rng).unwrap() {
                    ch.send_bytes(&corrupt(m)).unwrap();
                }
                ch.flush().unwrap();
            },
        );
        assert!(b.is_err());
    }
}

/// `cargo test --release -p duet-protocols --test suite kv_cache:: -- --ignored --nocapture cost_table`:
/// bytes and work of one decode step of one layer (SmolLM2 shape, l = 37) by context, beside
/// `HeMatMulShared` for the same two products.
#[test]
#[ignore]
fn cost_table() {
    let p = params(37);
    let spec = smollm2();
    let pol = |pack, pad| KvPolicy {
        pack,
        pad,
        ..KvPolicy::default()
    };
    println!("ctx | accs | pack16 pad: bytes, KS | pack16 split: bytes, KS | no packing: bytes | HeMatMulShared bytes");
    for ctx in [8, 16, 24, 32, 40, 48, 60, 64, 70, 96, 128, 256, 512] {
        let step = |policy| {
            let s = HeKvCache::scores_cost(spec, policy, &p, ctx, 1).unwrap();
            let c = HeKvCache::context_cost(spec, policy, &p, ctx, 1).unwrap();
            s + c
        };
        let (a, b, n) = (
            step(pol(16, true)),
            step(pol(16, false)),
            step(pol(1, true)),
        );
        let base =
            HeMatMulShared::cost(&p, SharedShape::new(9, 1, 64, ctx), LayoutPolicy::MinBytes)
                .unwrap()
                .bytes
                + HeMatMulShared::cost(&p, SharedShape::new(9, 1, ctx, 64), LayoutPolicy::MinBytes)
                    .unwrap()
                    .bytes;
        let accs =
            a.per_party.weight_polys - a.per_party.products + a.per_party.products - ctx as u64;
        println!(
            "{ctx} | {accs} | {} {} | {} {} | {} | {base}",
            a.traffic.bytes,
            a.per_party.key_switches,
            b.traffic.bytes,
            b.per_party.key_switches,
            n.traffic.bytes
        );
    }
}

#[test]
fn layout_and_cost_are_cheap() {
    let p = params(37);
    let t = std::time::Instant::now();
    for _ in 0..5 {
        HeKvCache::new(smollm2(), KvPolicy::default(), &p).unwrap();
    }
    let per_new = t.elapsed().as_secs_f64() / 5.0;
    let t = std::time::Instant::now();
    HeKvCache::scores_cost(smollm2(), KvPolicy::default(), &p, 512, 1).unwrap();
    let cost512 = t.elapsed().as_secs_f64();
    println!("layout {per_new:.4} s, scores cost at ctx 512 {cost512:.4} s");
    assert!(per_new < 1.0 && cost512 < 2.0);
}

#[test]
fn n4096_is_refused_for_uniform_multipliers() {
    for l in 36..=42 {
        assert!(
            RlweParameters::preset(Preset::N4096Q109, RingBits(l), WeightBound::Uniform).is_err()
        );
        assert!(
            RlweParameters::preset(Preset::N8192Q200Pack, RingBits(l), WeightBound::Uniform)
                .is_ok()
        );
    }
}
