//! Additive secret shares of tensors over Z_2^l.

use crate::{MpcError, Prg, Result, Ring};
use duet_transport::Role;

/// One party's additive share of a tensor over Z_2^l: the secret is `mine + theirs mod 2^l`,
/// elementwise. A single share is uniformly distributed and reveals nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AShare {
    ring: Ring,
    shape: Vec<usize>,
    data: Vec<u64>,
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

impl AShare {
    /// Wraps a share; checks that `data` fills `shape` and lies in the ring.
    pub fn new(ring: Ring, shape: Vec<usize>, data: Vec<u64>) -> Result<Self> {
        if numel(&shape) != Some(data.len()) {
            return Err(MpcError::ShapeMismatch {
                what: format!("{} values do not fill shape {shape:?}", data.len()),
            });
        }
        ring.check_all(&data)?;
        Ok(Self { ring, shape, data })
    }

    /// The all-zero share.
    pub fn zeros(ring: Ring, shape: Vec<usize>) -> Result<Self> {
        let n = numel(&shape).ok_or_else(|| MpcError::ShapeMismatch {
            what: format!("shape {shape:?} overflows"),
        })?;
        Ok(Self {
            ring,
            shape,
            data: vec![0; n],
        })
    }

    /// Splits a secret into two shares: `(secret - r, r)` with `r` drawn from `prg`.
    /// Whoever holds the secret keeps the first and sends the second (or its seed).
    pub fn share(
        ring: Ring,
        shape: Vec<usize>,
        secret: &[u64],
        prg: &mut Prg,
    ) -> Result<(Self, Self)> {
        let mask = prg.ring_elements(ring, secret.len());
        let mine: Vec<u64> = secret
            .iter()
            .zip(&mask)
            .map(|(&s, &r)| ring.sub(ring.reduce(s), r))
            .collect();
        Ok((
            Self::new(ring, shape.clone(), mine)?,
            Self::new(ring, shape, mask)?,
        ))
    }

    /// Recombines two shares into the secret.
    pub fn reconstruct(&self, other: &Self) -> Result<Vec<u64>> {
        self.check_same(other)?;
        Ok(self
            .data
            .iter()
            .zip(&other.data)
            .map(|(&a, &b)| self.ring.add(a, b))
            .collect())
    }

    fn check_same(&self, other: &Self) -> Result<()> {
        if self.ring != other.ring || self.shape != other.shape {
            return Err(MpcError::ShapeMismatch {
                what: format!(
                    "Z_2^{} {:?} vs Z_2^{} {:?}",
                    self.ring.bits(),
                    self.shape,
                    other.ring.bits(),
                    other.shape
                ),
            });
        }
        Ok(())
    }

    /// Share of x + y (local).
    pub fn add(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, |r, a, b| r.add(a, b))
    }

    /// Share of x - y (local).
    pub fn sub(&self, other: &Self) -> Result<Self> {
        self.zip_with(other, |r, a, b| r.sub(a, b))
    }

    fn zip_with(&self, other: &Self, f: impl Fn(Ring, u64, u64) -> u64) -> Result<Self> {
        self.check_same(other)?;
        let r = self.ring;
        Ok(Self {
            ring: r,
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(&other.data)
                .map(|(&a, &b)| f(r, a, b))
                .collect(),
        })
    }

    /// Share of c * x for a public integer c (local, exact mod 2^l).
    pub fn mul_public(&self, c: i64) -> Self {
        let r = self.ring;
        let c = r.from_i64(c);
        self.map(|x| r.mul(x, c))
    }

    /// Share of -x (local).
    pub fn neg(&self) -> Self {
        let r = self.ring;
        self.map(|x| r.neg(x))
    }

    /// Share of x + c for a public tensor c: only the server adds it (local).
    pub fn add_public(&self, role: Role, c: &[u64]) -> Result<Self> {
        if c.len() != self.data.len() {
            return Err(MpcError::ShapeMismatch {
                what: format!(
                    "public tensor of {} values for shape {:?}",
                    c.len(),
                    self.shape
                ),
            });
        }
        if role == Role::Client {
            return Ok(self.clone());
        }
        let r = self.ring;
        Ok(Self {
            ring: r,
            shape: self.shape.clone(),
            data: self
                .data
                .iter()
                .zip(c)
                .map(|(&a, &b)| r.add(a, r.reduce(b)))
                .collect(),
        })
    }

    fn map(&self, f: impl Fn(u64) -> u64) -> Self {
        Self {
            ring: self.ring,
            shape: self.shape.clone(),
            data: self.data.iter().map(|&x| f(x)).collect(),
        }
    }

    /// The ring.
    pub fn ring(&self) -> Ring {
        self.ring
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The share values, row-major.
    pub fn data(&self) -> &[u64] {
        &self.data
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Consumes the share, returning its values.
    pub fn into_data(self) -> Vec<u64> {
        self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worst_case_values(r: Ring) -> Vec<u64> {
        let half = 1u64 << (r.bits() - 1);
        vec![0, 1, r.neg(1), 2, r.neg(2), half, half - 1, r.mask(), 12345]
    }

    #[test]
    fn share_reconstruct_and_linear_ops() {
        for l in [16u32, 32, 37, 64] {
            let r = Ring::new(l).unwrap();
            let mut prg = Prg::from_seed([l as u8; 32]);
            let x = worst_case_values(r);
            let mut y = prg.ring_elements(r, x.len());
            y[0] = r.mask();
            let shape = vec![3, 3];
            let (x0, x1) = AShare::share(r, shape.clone(), &x, &mut prg).unwrap();
            let (y0, y1) = AShare::share(r, shape.clone(), &y, &mut prg).unwrap();
            // a single share is not the secret
            assert_ne!(x0.data(), &x[..]);
            assert_eq!(x0.reconstruct(&x1).unwrap(), x);
            let sum = x0
                .add(&y0)
                .unwrap()
                .reconstruct(&x1.add(&y1).unwrap())
                .unwrap();
            let diff = x0
                .sub(&y0)
                .unwrap()
                .reconstruct(&x1.sub(&y1).unwrap())
                .unwrap();
            for i in 0..x.len() {
                assert_eq!(sum[i], r.add(x[i], y[i]));
                assert_eq!(diff[i], r.sub(x[i], y[i]));
            }
            for c in [0i64, 1, -1, 3, -7, i64::MAX, i64::MIN] {
                let p = x0.mul_public(c).reconstruct(&x1.mul_public(c)).unwrap();
                for i in 0..x.len() {
                    assert_eq!(p[i], r.mul(x[i], r.from_i64(c)));
                }
            }
            let n = x0.neg().reconstruct(&x1.neg()).unwrap();
            assert!(n.iter().zip(&x).all(|(&a, &b)| a == r.neg(b)));
            let c = prg.ring_elements(r, x.len());
            let s = x0
                .add_public(Role::Server, &c)
                .unwrap()
                .reconstruct(&x1.add_public(Role::Client, &c).unwrap())
                .unwrap();
            assert!((0..x.len()).all(|i| s[i] == r.add(x[i], c[i])));
        }
    }

    #[test]
    fn mismatches_are_errors() {
        let r = Ring::new(32).unwrap();
        assert!(AShare::new(r, vec![2, 2], vec![0; 3]).is_err());
        assert!(AShare::new(r, vec![1], vec![1 << 32]).is_err());
        let a = AShare::zeros(r, vec![2]).unwrap();
        let b = AShare::zeros(Ring::new(33).unwrap(), vec![2]).unwrap();
        assert!(a.add(&b).is_err());
        assert!(AShare::zeros(r, vec![usize::MAX, 2]).is_err());
    }
}
