//! Minimal fixed-width 256-bit unsigned arithmetic (little-endian `u64` limbs, wrapping), used
//! only by the RNS-to-power-of-two rounding in [`crate::rns`]. Every function is a fixed loop
//! over four limbs.

/// A 256-bit unsigned integer, little-endian limbs, arithmetic modulo 2^256.
pub(crate) type U256 = [u64; 4];

/// `x * y mod 2^256`.
#[inline]
pub(crate) fn mul_small(x: &U256, y: u64) -> U256 {
    let mut out = [0u64; 4];
    let mut carry = 0u128;
    for (o, &limb) in out.iter_mut().zip(x.iter()) {
        let t = u128::from(limb) * u128::from(y) + carry;
        *o = t as u64;
        carry = t >> 64;
    }
    out
}

/// `acc += x mod 2^256`.
#[inline]
pub(crate) fn add_assign(acc: &mut U256, x: &U256) {
    let mut carry = 0u128;
    for (a, &b) in acc.iter_mut().zip(x.iter()) {
        let t = u128::from(*a) + u128::from(b) + carry;
        *a = t as u64;
        carry = t >> 64;
    }
}

/// `floor(2^e / p)` for `e < 256` and `p >= 2` (schoolbook division, limb by limb).
pub(crate) fn pow2_div(e: u32, p: u64) -> U256 {
    let mut dividend = [0u64; 4];
    let limb = (e / 64) as usize;
    if let Some(l) = dividend.get_mut(limb) {
        *l = 1u64 << (e % 64);
    }
    let mut quotient = [0u64; 4];
    let mut rem = 0u128;
    let p = u128::from(p.max(2));
    for (q, &d) in quotient.iter_mut().zip(dividend.iter()).rev() {
        let cur = (rem << 64) | u128::from(d);
        *q = (cur / p) as u64;
        rem = cur % p;
    }
    quotient
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_matches_u128() {
        for e in [0u32, 5, 63, 64, 100, 127] {
            for p in [3u64, 97, (1 << 61) - 1] {
                let q = pow2_div(e, p);
                let expect = (1u128 << e) / u128::from(p);
                assert_eq!(q[0], expect as u64);
                assert_eq!(q[1], (expect >> 64) as u64);
                assert_eq!(q[2], 0);
            }
        }
        // 2^200 / 2 = 2^199
        let q = pow2_div(200, 2);
        assert_eq!(q, [0, 0, 0, 1 << (199 - 192)]);
    }

    #[test]
    fn mul_add() {
        let x = [u64::MAX, u64::MAX, 0, 0];
        let y = mul_small(&x, 2);
        assert_eq!(y, [u64::MAX - 1, u64::MAX, 1, 0]);
        let mut acc = [u64::MAX, 0, 0, 0];
        add_assign(&mut acc, &[1, 0, 0, 0]);
        assert_eq!(acc, [0, 1, 0, 0]);
    }
}
