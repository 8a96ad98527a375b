//! Per-phase timings of one HE matrix product's building blocks (one thread):
//! `RAYON_NUM_THREADS=1 cargo run --release -p duet-fhe --example phase_profile -- [l] [log2 w]`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use duet_fhe::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::time::Instant;

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

/// Microseconds of CPU per call (repeats until at least 0.3 s of CPU are spent).
fn time<T>(_reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let c0 = cpu_s();
    let t = Instant::now();
    let mut reps = 0usize;
    while cpu_s() - c0 < 0.3 || reps < 2 {
        std::hint::black_box(f());
        reps += 1;
    }
    let _ = t;
    (cpu_s() - c0) / reps as f64 * 1e6
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let l: u32 = a.get(1).and_then(|s| s.parse().ok()).unwrap_or(42);
    let wb: u32 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let p = RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(l),
        WeightBound::MaxAbs(1 << wb),
    )
    .unwrap();
    let n = p.degree();
    println!(
        "N={n} l={l} b_bits={} a_bits={} margin={:.1}",
        p.output_b_bits(),
        p.output_a_bits(),
        p.noise().margin_bits
    );
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let sk = SecretKey::generate(&p, &mut rng);
    let pk = sk.public_key(&mut rng);
    let gk = sk.galois_keys(&mut rng).unwrap();
    let mask = p.plain_mask();
    let t0 = &p.rns().tables()[0];
    let mut buf: Vec<u64> = (0..n).map(|_| rng.gen::<u64>() % t0.modulus()).collect();
    println!("ntt fwd  {:8.1} us", time(200, || t0.forward(&mut buf)));
    println!("ntt inv  {:8.1} us", time(200, || t0.backward(&mut buf)));
    let w: Vec<i64> = (0..8064)
        .map(|_| rng.gen_range(-(1i64 << wb)..(1i64 << wb)))
        .collect();
    println!(
        "weights prep (8064 coeffs) {:8.1} us",
        time(50, || PlainWeights::from_signed(&p, &w).unwrap())
    );
    let pw = PlainWeights::from_signed(&p, &w).unwrap();
    let x: Vec<u64> = (0..576).map(|_| rng.gen::<u64>() & mask).collect();
    println!(
        "encrypt   {:8.1} us",
        time(20, || sk.encrypt(&x, &mut rng).unwrap())
    );
    let sct = sk.encrypt(&x, &mut rng).unwrap();
    println!(
        "ct to_bytes {:8.1} us ({} B)",
        time(20, || sct.to_bytes(&p).unwrap()),
        sct.to_bytes(&p).unwrap().len()
    );
    let bytes = sct.to_bytes(&p).unwrap();
    println!(
        "ct parse+expand {:8.1} us",
        time(20, || SeededCiphertext::from_bytes(&p, &bytes)
            .unwrap()
            .expand(&p)
            .unwrap())
    );
    let ct = SeededCiphertext::from_bytes(&p, &bytes)
        .unwrap()
        .expand(&p)
        .unwrap();
    let mut acc = MacAccumulator::new(&p);
    println!(
        "mul_acc   {:8.1} us",
        time(50, || {
            let mut a = MacAccumulator::new(&p);
            a.mul_acc(&ct, &pw).unwrap();
            a
        })
    );
    acc.mul_acc(&ct, &pw).unwrap();
    for d in [2usize, 16, 64] {
        let accs: Vec<_> = (0..d).map(|_| acc.clone()).collect();
        let clone = time(3, || accs.clone());
        let us = time(3, || MacAccumulator::pack(accs.clone(), 575, &gk).unwrap()) - clone;
        println!(
            "pack {d:2}   {:8.1} us  ({:.1} us per key switch)",
            us,
            us / (d - 1) as f64
        );
    }
    let pos: Vec<usize> = (0..896).map(|i| i * 9).collect();
    let plain = vec![0u64; 896 * 9];
    println!(
        "finalize(896) {:8.1} us",
        time(10, || acc
            .clone()
            .finalize(&pk, &plain, &pos, &mut rng)
            .unwrap())
    );
    // split packing: orbit of one input, node weights from 64 leaves
    for lv in [0u32, 3, 6] {
        let po = RlweParametersBuilder::from_preset(Preset::N8192Q200Pack)
            .ring_bits(RingBits(l))
            .weight_bound(WeightBound::MaxAbs(1 << wb))
            .orbit_levels(lv)
            .build()
            .unwrap();
        println!(
            "orbit levels {lv}: b_bits={} a_bits={} margin={:.1} q-margin={:.1} log2 B_f={:.1}",
            po.output_b_bits(),
            po.output_a_bits(),
            po.noise().margin_bits,
            po.noise().q_margin_bits,
            (po.noise().flood_bound as f64).log2()
        );
        if lv == 0 {
            continue;
        }
        let sk = SecretKey::generate(&po, &mut rng);
        let gk = sk.galois_keys(&mut rng).unwrap();
        let ct = sk.encrypt(&x, &mut rng).unwrap().expand(&po).unwrap();
        let us = time(3, || InputOrbit::new(&ct, 64, lv, &gk).unwrap());
        println!(
            "  orbit of one input  {us:8.1} us ({:.1} us per key switch)",
            us / ((1u32 << lv) - 1) as f64
        );
        let leaves: Vec<Vec<i64>> = (0..1usize << lv)
            .map(|_| {
                let mut v = vec![0i64; 8192];
                v[..8064].copy_from_slice(&w);
                v
            })
            .collect();
        let refs: Vec<Option<&[i64]>> = leaves.iter().map(|l| Some(&l[..])).collect();
        let us = time(3, || OrbitWeights::new(&po, &refs, 64, lv, 575).unwrap());
        println!(
            "  node weights  {us:8.1} us ({:.1} us per leaf)",
            us / (1u32 << lv) as f64
        );
        let orbit = InputOrbit::new(&ct, 64, lv, &gk).unwrap();
        let ow = OrbitWeights::new(&po, &refs, 64, lv, 575).unwrap().unwrap();
        let us = time(3, || {
            let mut a = MacAccumulator::new(&po);
            a.mul_acc_orbit(&orbit, &ow).unwrap();
            a
        });
        println!(
            "  node products {us:8.1} us ({:.1} us per leaf)",
            us / (1u32 << lv) as f64
        );
    }
    let out = acc.clone().finalize(&pk, &plain, &pos, &mut rng).unwrap();
    println!(
        "out to_bytes {:8.1} us",
        time(10, || out.to_bytes(&p).unwrap())
    );
    let ob = out.to_bytes(&p).unwrap();
    println!(
        "out parse+decrypt {:8.1} us ({} B)",
        time(10, || {
            let o = OutputCiphertext::from_bytes(&p, &ob, 896).unwrap();
            sk.decrypt_output(&o, &pos).unwrap()
        }),
        ob.len()
    );
}
