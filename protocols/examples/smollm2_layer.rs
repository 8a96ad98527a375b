//! The linear layers of one SmolLM2-135M layer (q, k, v, o, gate, up, down; optionally the
//! 576 x 49152 head) between two parties over the in-memory pair, the old way (one
//! `HeMatMul` per matrix, weights encoded on the fly, as `SecureBackend::linear` runs them)
//! and the new way (`HeLinear`: q|k|v and gate|up fused, split packing), with bytes and
//! seconds:
//!
//! `cargo run --release -p duet-protocols --example smollm2_layer -- [n] [reps] [new|old|both] [head] [cache] [fast]`
//!
//! `n` rows (1: a decode step; 37: the prefill of a 37-token prompt). Random weights of the
//! model's ranges (`|w| < 16` at 12 fractional bits, so `|w| <= 2^16`), activations as
//! uniform shares of a 42-bit ring. `cache` also runs the new way with the node weights
//! prepared beforehand (`PreparedLinear`, memory printed); `fast` also runs it with the layouts of
//! least estimated compute within 20% more bytes than the fewest. Prints per product and per layer:
//! bytes (both directions), wall seconds and the process CPU seconds (both parties).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::too_many_arguments,
    missing_docs
)]

use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::*;
use duet_transport::{run_two_party, Channel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

/// The allocator of the `duet` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const L: u32 = 42;
const W: i64 = 1 << 16;

/// Process CPU seconds (user + system) from /proc/self/stat.
fn cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

struct Mat {
    name: &'static str,
    d: usize,
    k: usize,
    w: Vec<i64>,
}

/// Groups of matrices sharing an input: (name, d, indices into the matrices).
fn groups(head: bool) -> Vec<(&'static str, usize, Vec<usize>)> {
    let mut g = vec![
        ("q|k|v", 576, vec![0, 1, 2]),
        ("o", 576, vec![3]),
        ("gate|up", 576, vec![4, 5]),
        ("down", 1536, vec![6]),
    ];
    if head {
        g.push(("head", 576, vec![7]));
    }
    g
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n: usize = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(1);
    let reps: usize = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let which = a.get(3).cloned().unwrap_or_else(|| "both".into());
    let head = a.iter().any(|s| s == "head");
    let cache = a.iter().any(|s| s == "cache");
    let fast = a.iter().any(|s| s == "fast");
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let shapes: [(&str, usize, usize); 8] = [
        ("q", 576, 576),
        ("k", 576, 192),
        ("v", 576, 192),
        ("o", 576, 576),
        ("gate", 576, 1536),
        ("up", 576, 1536),
        ("down", 1536, 576),
        ("head", 576, 49152),
    ];
    let mats: Vec<Mat> = shapes
        .iter()
        .take(if head { 8 } else { 7 })
        .map(|&(name, d, k)| Mat {
            name,
            d,
            k,
            w: (0..d * k).map(|_| rng.gen_range(-W..=W)).collect(),
        })
        .collect();
    let old_p = RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(L),
        WeightBound::MaxAbs(W as u64),
    )
    .unwrap();
    let new_p = linear_params(L, W as u64).unwrap();
    let mask = new_p.plain_mask();
    // one input share pair per group (d = 576 or 1536)
    let xs: Vec<(Vec<u64>, Vec<u64>)> = groups(head)
        .iter()
        .map(|(_, d, _)| {
            let c = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
            let s = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
            (c, s)
        })
        .collect();
    println!(
        "SmolLM2 layer linear products, n = {n}, l = {L}, |w| <= 2^16, {} threads; load: {}",
        rayon::current_num_threads(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if which == "old" || which == "both" {
        run_old(&old_p, &mats, &xs, n, reps, head);
    }
    if which == "new" || which == "both" {
        run_new(&new_p, &mats, &xs, n, reps, head, false, false);
        if fast {
            run_new(&new_p, &mats, &xs, n, reps, head, false, true);
        }
        if cache {
            run_new(&new_p, &mats, &xs, n, reps, head, true, false);
        }
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    println!(
        "peak RSS of this process (both parties and all weights): {}; load at the end: {}",
        hwm.trim_start_matches("VmHWM:").trim(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

fn run_old(
    p: &Arc<RlweParameters>,
    mats: &[Mat],
    xs: &[(Vec<u64>, Vec<u64>)],
    n: usize,
    reps: usize,
    head: bool,
) {
    let gs = groups(head);
    let policy = LayoutPolicy::MinBytes;
    let ((), rows) = run_two_party(
        |mut ch| {
            let setup = HeServerSetup::run(&mut ch, p).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            for _ in 0..reps {
                for (gi, (_, _, members)) in gs.iter().enumerate() {
                    for &m in members {
                        let mat = &mats[m];
                        // as SecureBackend::linear: weights cloned, encoded on the fly
                        let mut hw = HeWeights::new(p, mat.d, mat.k, mat.w.clone(), None).unwrap();
                        hw.prepare(n, policy, PrepareMode::OnTheFly).unwrap();
                        HeMatMul::run_server(&mut ch, &setup, &hw, n, Some(&xs[gi].1), &mut rng)
                            .unwrap();
                    }
                }
            }
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let setup = HeClientSetup::run(&mut ch, p, &mut rng).unwrap();
            let mut rows = Vec::new();
            for rep in 0..reps {
                for (gi, (_, _, members)) in gs.iter().enumerate() {
                    for &m in members {
                        let mat = &mats[m];
                        let (t, c0, s0) = (Instant::now(), cpu_s(), ch.stats());
                        HeMatMul::run_client(
                            &mut ch,
                            &setup,
                            MatmulShape::new(n, mat.d, mat.k),
                            policy,
                            &xs[gi].0,
                            &mut rng,
                        )
                        .unwrap();
                        let bytes = (ch.stats() - s0).total_bytes();
                        let cost =
                            HeMatMul::cost(p, MatmulShape::new(n, mat.d, mat.k), policy).unwrap();
                        assert_eq!(bytes, cost.bytes);
                        rows.push((
                            rep,
                            mat.name.to_string(),
                            bytes,
                            cost.key_switches,
                            t.elapsed().as_secs_f64(),
                            cpu_s() - c0,
                        ));
                    }
                }
            }
            rows
        },
    );
    report("old: HeMatMul per matrix, on the fly", &rows, reps);
}

fn run_new(
    p: &Arc<RlweParameters>,
    mats: &[Mat],
    xs: &[(Vec<u64>, Vec<u64>)],
    n: usize,
    reps: usize,
    head: bool,
    cache: bool,
    fast: bool,
) {
    let gs = groups(head);
    let plans: Vec<LinearPlan> = gs
        .iter()
        .map(|(_, d, members)| {
            let parts: Vec<usize> = members.iter().map(|&m| mats[m].k).collect();
            let min = LinearPlan::new(p, n, *d, &parts, LayoutPolicy::MinBytes).unwrap();
            if fast {
                let max_bytes = min.cost().bytes + min.cost().bytes / 5;
                LinearPlan::new(
                    p,
                    n,
                    *d,
                    &parts,
                    LayoutPolicy::FewestKeySwitches { max_bytes },
                )
                .unwrap()
            } else {
                min
            }
        })
        .collect();
    let weights: Vec<LinearWeights<'_>> = gs
        .iter()
        .map(|(_, d, members)| {
            LinearWeights::new(
                p,
                *d,
                members.iter().map(|&m| (&mats[m].w[..], None)).collect(),
            )
            .unwrap()
        })
        .collect();
    let prepared: Vec<Option<PreparedLinear>> = if cache {
        let t = Instant::now();
        let v: Vec<_> = plans
            .iter()
            .zip(&weights)
            .map(|(pl, w)| Some(PreparedLinear::new(pl, w).unwrap()))
            .collect();
        let mb: u64 = plans.iter().map(PreparedLinear::memory_bytes).sum::<u64>() >> 20;
        println!(
            "prepared node weights: {mb} MB in {:.2} s (offline)",
            t.elapsed().as_secs_f64()
        );
        v
    } else {
        plans.iter().map(|_| None).collect()
    };
    let ((), rows) = run_two_party(
        |mut ch| {
            let setup = HeServerSetup::run(&mut ch, p).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(2);
            for _ in 0..reps {
                for (gi, plan) in plans.iter().enumerate() {
                    HeLinear::run_server(
                        &mut ch,
                        &setup,
                        plan,
                        &weights[gi],
                        prepared[gi].as_ref(),
                        Some(&xs[gi].1),
                        &mut rng,
                    )
                    .unwrap();
                }
            }
        },
        |mut ch| {
            let mut rng = ChaCha20Rng::seed_from_u64(3);
            let setup = HeClientSetup::run(&mut ch, p, &mut rng).unwrap();
            let mut rows = Vec::new();
            for rep in 0..reps {
                for (gi, plan) in plans.iter().enumerate() {
                    let (t, c0, s0) = (Instant::now(), cpu_s(), ch.stats());
                    HeLinear::run_client(&mut ch, &setup, plan, &xs[gi].0, &mut rng).unwrap();
                    let bytes = (ch.stats() - s0).total_bytes();
                    assert_eq!(bytes, plan.cost().bytes);
                    rows.push((
                        rep,
                        format!(
                            "{} [{}x{}x{} D={} ell={}]",
                            gs[gi].0,
                            plan.layout().n_b,
                            plan.layout().d_b,
                            plan.layout().k_b,
                            plan.pack(),
                            plan.levels()
                        ),
                        bytes,
                        plan.cost().key_switches,
                        t.elapsed().as_secs_f64(),
                        cpu_s() - c0,
                    ));
                }
            }
            rows
        },
    );
    let title = match (cache, fast) {
        (true, _) => "new: HeLinear fused, split packing, prepared weights",
        (false, true) => "new: HeLinear fused, least compute within +20% bytes, on the fly",
        (false, false) => "new: HeLinear fused, split packing, on the fly",
    };
    report(title, &rows, reps);
}

type Row = (usize, String, u64, u64, f64, f64);

fn report(title: &str, rows: &[Row], reps: usize) {
    println!("== {title}");
    let per_rep = rows.len() / reps.max(1);
    for r in rows.iter().take(per_rep) {
        let same: Vec<&Row> = rows.iter().filter(|x| x.1 == r.1).collect();
        let wall = same.iter().map(|x| x.4).sum::<f64>() / same.len() as f64;
        let cpu = same.iter().map(|x| x.5).sum::<f64>() / same.len() as f64;
        println!(
            "  {:34} {:>10} B {:>5} KS {:8.3} s wall {:8.3} s cpu",
            r.1, r.2, r.3, wall, cpu
        );
    }
    let bytes: u64 = rows.iter().take(per_rep).map(|x| x.2).sum();
    let ks: u64 = rows.iter().take(per_rep).map(|x| x.3).sum();
    let wall = rows.iter().map(|x| x.4).sum::<f64>() / reps as f64;
    let cpu = rows.iter().map(|x| x.5).sum::<f64>() / reps as f64;
    println!(
        "  {:34} {:>10} B {:>5} KS {:8.3} s wall {:8.3} s cpu  (mean of {reps})",
        "layer total", bytes, ks, wall, cpu
    );
}
