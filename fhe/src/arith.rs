//! Scalar modular arithmetic on `u64` moduli below 2^62, deterministic primality testing and
//! generation of NTT-friendly primes.
//!
//! Timing: these routines are not hardened against timing side channels (conditional
//! subtractions, hardware division); timing attacks are outside the semi-honest threat model of
//! the design. Primality testing only ever runs on public moduli.

use crate::error::{FheError, Result};

/// Largest supported prime: the RNS switching code needs `sum(y_i) < 2^64` for up to four
/// residues, and the NTT backend's fast path needs `p < 2^62`.
pub const MAX_PRIME_BITS: u32 = 62;
/// Smallest supported prime size (smaller primes waste RNS limbs).
pub const MIN_PRIME_BITS: u32 = 20;

/// `a * b mod p`. Cost: one 128-bit multiply and one 128-by-64 division.
#[inline]
pub(crate) fn mul_mod(a: u64, b: u64, p: u64) -> u64 {
    ((u128::from(a) * u128::from(b)) % u128::from(p)) as u64
}

/// `a + b mod p` for `a, b < p < 2^63`.
#[inline]
pub(crate) fn add_mod(a: u64, b: u64, p: u64) -> u64 {
    let s = a + b;
    if s >= p {
        s - p
    } else {
        s
    }
}

/// `a - b mod p` for `a, b < p`.
#[inline]
pub(crate) fn sub_mod(a: u64, b: u64, p: u64) -> u64 {
    if a >= b {
        a - b
    } else {
        a + p - b
    }
}

/// `-a mod p` for `a < p`.
#[inline]
pub(crate) fn neg_mod(a: u64, p: u64) -> u64 {
    if a == 0 {
        0
    } else {
        p - a
    }
}

/// Reduce a signed integer into `[0, p)` (fast path for `|x| < p`, the common case).
#[inline]
pub(crate) fn reduce_i128(x: i128, p: u64) -> u64 {
    let pp = i128::from(p);
    if x >= 0 && x < pp {
        x as u64
    } else if x < 0 && x > -pp {
        (x + pp) as u64
    } else {
        x.rem_euclid(pp) as u64
    }
}

/// Reduce a small signed integer (`|x| < p`) into `[0, p)`.
#[inline]
pub(crate) fn small_mod(x: i64, p: u64) -> u64 {
    if x < 0 {
        p - x.unsigned_abs()
    } else {
        x as u64
    }
}

/// Shoup precomputation for multiplying by the constant `w < p`: `floor(w 2^64 / p)`.
#[inline]
pub(crate) fn shoup(w: u64, p: u64) -> u64 {
    ((u128::from(w) << 64) / u128::from(p)) as u64
}

/// `a * w mod p` for any `a < 2^64`, `w < p < 2^63`, with `w_shoup = shoup(w, p)`: two word
/// multiplications and one conditional subtraction instead of a 128-bit division.
#[inline]
pub(crate) fn mul_mod_shoup(a: u64, w: u64, w_shoup: u64, p: u64) -> u64 {
    let q = ((u128::from(a) * u128::from(w_shoup)) >> 64) as u64;
    let r = a.wrapping_mul(w).wrapping_sub(q.wrapping_mul(p));
    if r >= p {
        r - p
    } else {
        r
    }
}

/// `a^e mod p` by square and multiply. Cost: `O(log e)` [`mul_mod`]s.
pub(crate) fn pow_mod(mut a: u64, mut e: u64, p: u64) -> u64 {
    let mut r = 1 % p;
    a %= p;
    while e > 0 {
        if e & 1 == 1 {
            r = mul_mod(r, a, p);
        }
        a = mul_mod(a, a, p);
        e >>= 1;
    }
    r
}

/// Inverse of `a` modulo the prime `p` (Fermat). Returns `None` for `a = 0 mod p`.
pub(crate) fn inv_mod_prime(a: u64, p: u64) -> Option<u64> {
    if a % p == 0 {
        None
    } else {
        Some(pow_mod(a, p - 2, p))
    }
}

/// Deterministic Miller-Rabin for all `u64` (the first twelve primes are a complete witness set
/// below 3.3 * 10^24). Cost: 12 modular exponentiations.
pub fn is_prime(n: u64) -> bool {
    const WITNESSES: [u64; 12] = [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37];
    if n < 2 {
        return false;
    }
    for &w in &WITNESSES {
        if n % w == 0 {
            return n == w;
        }
    }
    let mut d = n - 1;
    let mut s = 0;
    while d % 2 == 0 {
        d /= 2;
        s += 1;
    }
    'witness: for &w in &WITNESSES {
        let mut x = pow_mod(w, d, n);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mul_mod(x, x, n);
            if x == n - 1 {
                continue 'witness;
            }
        }
        return false;
    }
    true
}

/// The `count` largest primes `p < 2^bits` with `p = 1 mod 2n` (so `Z_p` has a primitive
/// `2n`-th root of unity and the negacyclic NTT of size `n` exists), in decreasing order.
///
/// Cost: about `count * bits * ln 2` candidates tested on average.
pub fn ntt_primes(bits: u32, degree: usize, count: usize) -> Result<Vec<u64>> {
    if !(MIN_PRIME_BITS..=MAX_PRIME_BITS).contains(&bits) {
        return Err(FheError::param(
            "prime bits",
            bits,
            format!("must be in {MIN_PRIME_BITS}..={MAX_PRIME_BITS}"),
        ));
    }
    if !degree.is_power_of_two() || degree < 2 {
        return Err(FheError::param(
            "degree",
            degree,
            "must be a power of two >= 2",
        ));
    }
    let two_n = 2 * degree as u64;
    let top = 1u64 << bits;
    // Largest value below 2^bits that is 1 mod 2n.
    let mut cand = (top - 1) / two_n * two_n + 1;
    if cand >= top {
        cand = cand.saturating_sub(two_n);
    }
    let mut out = Vec::with_capacity(count);
    let floor = 1u64 << (bits - 1);
    while out.len() < count {
        if cand <= floor {
            return Err(FheError::param(
                "prime bits",
                bits,
                format!("not enough {bits}-bit primes = 1 mod {two_n}"),
            ));
        }
        if is_prime(cand) {
            out.push(cand);
        }
        cand -= two_n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primality_small_and_known() {
        let primes: Vec<u64> = (0..60).filter(|&n| is_prime(n)).collect();
        assert_eq!(
            primes,
            vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59]
        );
        assert!(is_prime(0xffff_ffff_ffff_ffc5)); // largest 64-bit prime
        assert!(!is_prime(3_215_031_751)); // strong pseudoprime to bases 2,3,5,7
        assert!(is_prime((1u64 << 61) - 1));
    }

    #[test]
    fn generated_primes_are_ntt_friendly() {
        let ps = ntt_primes(55, 4096, 3).unwrap();
        for &p in &ps {
            assert!(is_prime(p));
            assert_eq!(p % 8192, 1);
            assert!(p < 1 << 55 && p > 1 << 54);
        }
        assert!(ps.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn shoup_matches_plain() {
        let p = ntt_primes(62, 16, 1).unwrap()[0];
        for (a, w) in [
            (0u64, 5u64),
            (u64::MAX, p - 1),
            (p - 1, p - 1),
            (123_456_789_012_345, 987_654_321),
        ] {
            assert_eq!(mul_mod_shoup(a, w, shoup(w, p), p), mul_mod(a % p, w, p));
        }
        for x in [
            0i128,
            1,
            -1,
            i128::from(p),
            -i128::from(p),
            i128::from(p) * 3 + 2,
            -(1i128 << 100),
        ] {
            assert_eq!(reduce_i128(x, p), x.rem_euclid(i128::from(p)) as u64);
        }
    }

    #[test]
    fn inverse() {
        let p = 0x3fff_ffff_fffc_0001u64; // any odd prime works here
        if is_prime(p) {
            let a = 123_456_789u64;
            assert_eq!(mul_mod(a, inv_mod_prime(a, p).unwrap(), p), 1);
        }
        assert_eq!(mul_mod(5, inv_mod_prime(5, 17).unwrap(), 17), 1);
        assert!(inv_mod_prime(34, 17).is_none());
    }
}
