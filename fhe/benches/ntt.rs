//! NTT forward + inverse at N = 4096: tfhe-ntt (the backend `duet-fhe` uses) against a plain
//! scalar radix-2 negacyclic NTT with Shoup multiplication written here for comparison.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    missing_docs,
    reason = "benchmark harness code"
)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use duet_fhe::arith::ntt_primes;
use duet_fhe::ntt::NttTable;

/// Straightforward scalar negacyclic NTT (Cooley-Tukey forward, Gentleman-Sande inverse,
/// Shoup precomputed twiddles), the usual textbook/SEAL structure.
struct ScalarNtt {
    p: u64,
    n: usize,
    psi: Vec<(u64, u64)>,
    psi_inv: Vec<(u64, u64)>,
    n_inv: (u64, u64),
}

fn mulmod(a: u64, b: u64, p: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(p)) as u64
}
fn powmod(mut a: u64, mut e: u64, p: u64) -> u64 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = mulmod(r, a, p);
        }
        a = mulmod(a, a, p);
        e >>= 1;
    }
    r
}
fn shoup(w: u64, p: u64) -> (u64, u64) {
    (w, ((u128::from(w) << 64) / u128::from(p)) as u64)
}
#[inline(always)]
fn mul_shoup(a: u64, w: (u64, u64), p: u64) -> u64 {
    let q = ((u128::from(a) * u128::from(w.1)) >> 64) as u64;
    let r = a.wrapping_mul(w.0).wrapping_sub(q.wrapping_mul(p));
    if r >= p {
        r - p
    } else {
        r
    }
}

impl ScalarNtt {
    fn new(n: usize, p: u64) -> Self {
        let mut psi = 0;
        for x in 2u64.. {
            let c = powmod(x, (p - 1) / (2 * n as u64), p);
            if powmod(c, n as u64, p) == p - 1 {
                psi = c;
                break;
            }
        }
        let psi_inv = powmod(psi, p - 2, p);
        let bits = n.trailing_zeros();
        let rev = |k: usize| k.reverse_bits() >> (usize::BITS - bits);
        let fw = (0..n)
            .map(|k| shoup(powmod(psi, rev(k) as u64, p), p))
            .collect();
        let iv = (0..n)
            .map(|k| shoup(powmod(psi_inv, rev(k) as u64, p), p))
            .collect();
        Self {
            p,
            n,
            psi: fw,
            psi_inv: iv,
            n_inv: shoup(powmod(n as u64, p - 2, p), p),
        }
    }

    fn forward(&self, a: &mut [u64]) {
        let p = self.p;
        let mut t = self.n;
        let mut m = 1;
        while m < self.n {
            t >>= 1;
            for i in 0..m {
                let w = self.psi[m + i];
                let j1 = 2 * i * t;
                for j in j1..j1 + t {
                    let u = a[j];
                    let v = mul_shoup(a[j + t], w, p);
                    a[j] = if u + v >= p { u + v - p } else { u + v };
                    a[j + t] = if u >= v { u - v } else { u + p - v };
                }
            }
            m <<= 1;
        }
    }

    fn inverse(&self, a: &mut [u64]) {
        let p = self.p;
        let mut t = 1;
        let mut m = self.n;
        while m > 1 {
            let h = m / 2;
            let mut j1 = 0;
            for i in 0..h {
                let w = self.psi_inv[h + i];
                for j in j1..j1 + t {
                    let u = a[j];
                    let v = a[j + t];
                    a[j] = if u + v >= p { u + v - p } else { u + v };
                    a[j + t] = mul_shoup(if u >= v { u - v } else { u + p - v }, w, p);
                }
                j1 += 2 * t;
            }
            t <<= 1;
            m = h;
        }
        for x in a.iter_mut() {
            *x = mul_shoup(*x, self.n_inv, p);
        }
    }
}

fn bench(c: &mut Criterion) {
    let n = 4096;
    let mut group = c.benchmark_group("ntt_fwd_inv_n4096");
    for bits in [60u32, 50] {
        let p = ntt_primes(bits, n, 1).unwrap()[0];
        let data: Vec<u64> = (0..n as u64)
            .map(|i| (i * 0x9e37_79b9_7f4a_7c15) % p)
            .collect();
        let table = NttTable::new(n, p).unwrap();
        let mut buf = data.clone();
        table.forward(&mut buf);
        table.backward(&mut buf);
        assert_eq!(buf, data);
        group.bench_function(format!("tfhe-ntt/{bits}-bit"), |b| {
            b.iter(|| {
                table.forward(black_box(&mut buf));
                table.backward(black_box(&mut buf));
            })
        });
        let scalar = ScalarNtt::new(n, p);
        let mut buf2 = data.clone();
        scalar.forward(&mut buf2);
        // both produce bit-reversed negacyclic evaluations; check the scalar one round-trips
        scalar.inverse(&mut buf2);
        assert_eq!(buf2, data);
        group.bench_function(format!("scalar-shoup/{bits}-bit"), |b| {
            b.iter(|| {
                scalar.forward(black_box(&mut buf2));
                scalar.inverse(black_box(&mut buf2));
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench
}
criterion_main!(benches);
