//! The server's returned ciphertexts after extraction and modulus switching, and their
//! decryption by the client.
//!
//! Layout: `b[i]` (width `b_bits`) is coefficient `positions[i]` of `b`; `a` (width `a_bits`,
//! all `N` coefficients) is shared by all of them. In LWE terms, `(b[i], a)` is the extraction of
//! coefficient `positions[i]`: `phase_j = b_j + 2^(b_bits - a_bits) (a s)_j mod 2^b_bits`.
//! The positions are public (fixed by the protocol layout) and are not transmitted.
//!
//! Decryption: `(a s) mod 2^a_bits` exactly, by an NTT product over the first two primes
//! (`|a s| < N 2^a_bits < p_0 p_1 / 2`, checked by the builder) and CRT; then
//! `m_j = round(phase_j / 2^(b_bits - l)) mod 2^l`. Exact under the bound of [`crate::noise`].
//! Cost: 2 forward + 2 inverse NTTs per ciphertext plus `O(N)`.
//!
//! Bytes per returned ciphertext: `ceil((|positions| b_bits + N a_bits) / 8)` plus a 14-byte
//! header, i.e. per output element `b_bits/8 + N a_bits / (8 |positions|)`.

#![expect(
    clippy::indexing_slicing,
    reason = "limb 0/1 of s and of the product exist whenever the parameters have >= 2 primes, checked below; coefficient indices are < N by check_positions"
)]

use crate::error::{FheError, Result};
use crate::eval::check_positions;
use crate::keys::SecretKey;

/// Extracted, modulus-switched, flooded result of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputCiphertext {
    pub(crate) params_id: u64,
    pub(crate) b: Vec<u128>,
    pub(crate) a: Vec<u128>,
}

impl OutputCiphertext {
    /// Number of extracted coefficients.
    pub fn len(&self) -> usize {
        self.b.len()
    }

    /// Whether no coefficient was extracted (never true for a well-formed object).
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }

    /// Id of the parameters.
    pub fn params_id(&self) -> u64 {
        self.params_id
    }

    /// The switched `b` values (test and analysis use).
    pub fn b_values(&self) -> &[u128] {
        &self.b
    }
}

impl SecretKey {
    /// Decryption errors `phase_j - 2^(b_bits-l) m_j` (centered) for known messages `m` (tests).
    #[cfg(test)]
    pub(crate) fn output_errors_for_tests(
        &self,
        ct: &OutputCiphertext,
        positions: &[usize],
        expected: &[u64],
    ) -> Result<Vec<i128>> {
        let phases = self.output_phases(ct, positions)?;
        let kb = self.params.output_b_bits();
        let l = self.params.ring_bits();
        let kb_mask = (1u128 << kb) - 1;
        Ok(phases
            .iter()
            .zip(expected)
            .map(|(&ph, &m)| {
                let d = ph.wrapping_sub(u128::from(m) << (kb - l)) & kb_mask;
                if d >= 1u128 << (kb - 1) {
                    d as i128 - (1i128 << kb)
                } else {
                    d as i128
                }
            })
            .collect())
    }

    /// Decrypt the values at `positions` (the same list the server used).
    pub fn decrypt_output(&self, ct: &OutputCiphertext, positions: &[usize]) -> Result<Vec<u64>> {
        let shift = self.params.output_b_bits() - self.params.ring_bits();
        let plain_mask = u128::from(self.params.plain_mask());
        Ok(self
            .output_phases(ct, positions)?
            .into_iter()
            .map(|phase| ((phase.wrapping_add(1u128 << (shift - 1)) >> shift) & plain_mask) as u64)
            .collect())
    }

    /// `b_j + 2^(b_bits - a_bits) (a s)_j mod 2^b_bits` for each extracted coefficient.
    fn output_phases(&self, ct: &OutputCiphertext, positions: &[usize]) -> Result<Vec<u128>> {
        let params = &self.params;
        if ct.params_id != params.id() {
            return Err(FheError::ParameterMismatch {
                expected: params.id(),
                found: ct.params_id,
            });
        }
        let n = params.degree();
        check_positions(n, positions)?;
        if positions.len() != ct.b.len() || ct.a.len() != n {
            return Err(FheError::malformed(
                "output ciphertext",
                format!(
                    "{} b values / {} a values for {} positions, N = {n}",
                    ct.b.len(),
                    ct.a.len(),
                    positions.len()
                ),
            ));
        }
        let kb = params.output_b_bits();
        let ka = params.output_a_bits();
        let ctx = &params.ctx;
        let tables = ctx.tables();
        let used = tables.len().min(2);
        // exact a*s over the first `used` primes
        let mut prods: Vec<Vec<u64>> = Vec::with_capacity(used);
        for (i, t) in tables.iter().take(used).enumerate() {
            let p = t.modulus();
            let pp = u128::from(p);
            let mut buf: Vec<u64> =
                ct.a.iter()
                    .map(|&x| if x < pp { x as u64 } else { (x % pp) as u64 })
                    .collect();
            t.forward(&mut buf);
            let mut acc = vec![0u64; n];
            t.mul_acc(&mut acc, &buf, &self.ntt.limbs[i]);
            t.backward(&mut acc);
            prods.push(acc);
        }
        let big = ctx.garner2_modulus();
        let half = big / 2;
        let ka_mask = (1u128 << ka) - 1;
        let kb_mask = if kb >= 128 {
            u128::MAX
        } else {
            (1u128 << kb) - 1
        };
        let mut out = Vec::with_capacity(positions.len());
        for (&j, &bj) in positions.iter().zip(&ct.b) {
            let x = if used == 2 {
                ctx.garner2(prods[0][j], prods[1][j])
            } else {
                u128::from(prods[0][j])
            };
            // centered lift, then mod 2^ka
            let as_mod = if x > half { x.wrapping_sub(big) } else { x } & ka_mask;
            out.push(bj.wrapping_add(as_mod << (kb - ka)) & kb_mask);
        }
        Ok(out)
    }
}
