//! Boolean-to-arithmetic conversion, multiplexer and element-wise multiplication from
//! correlated OT over the ring.

use super::batch::{batch_sizes, ranges, slice_a, slice_b};
use super::cost::Tape;
use super::{BShare, Cost, NlConfig, NlSession};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::Channel;

/// Arithmetic shares over `ring` of the bits `b` (`b = b0 ⊕ b1 = b0 + b1 - 2 b0 b1`).
///
/// Protocol (CrypTFlow2): one correlated OT over `Z_2^l`, the OT sender (see
/// [`NlConfig::ot_sender`]) with correlation `b_S`, the receiver choosing `b_R`, gives shares
/// of `b_S b_R`. Security: semi-honest, 128-bit. Cost: [`b2a_cost`]: `16 + 1/8 + l/8` bytes
/// per bit (IKNP), 2 flights.
pub fn b2a<C: Channel>(s: &mut NlSession, ch: &mut C, b: &BShare, ring: Ring) -> Result<AShare> {
    if let Some(rs) = ranges(b.len()) {
        let bits = b.to_bits();
        let mut out = Vec::with_capacity(b.len());
        for r in rs {
            out.extend(b2a(s, ch, &slice_b(&bits, &r), ring)?.into_data());
        }
        return AShare::new(ring, vec![b.len()], out);
    }
    s.reserve(ch, b2a_cost(b.len(), ring, s.config()).cots)?;
    let bits = b.to_bits();
    let l = ring.bits();
    let out = if s.is_ot_sender() {
        let xs: Vec<u64> = bits.iter().map(|&x| u64::from(x)).collect();
        let a = s.cot_send(ch, &xs, |_| l)?;
        xs.iter()
            .zip(&a)
            .map(|(&x, &a)| ring.add(x, ring.add(a, a)))
            .collect()
    } else {
        let y = s.cot_recv(ch, &bits, |_| l)?;
        bits.iter()
            .zip(&y)
            .map(|(&x, &y)| ring.sub(u64::from(x), ring.add(y, y)))
            .collect()
    };
    AShare::new(ring, vec![bits.len()], out)
}

/// Exact cost of [`b2a`] on `n` bits.
pub fn b2a_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_b2a(&mut t, n, ring, cfg);
    t.cost()
}

/// [`b2a_cost`] on a tape.
pub fn tape_b2a(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    for m in batch_sizes(n) {
        NlSession::tape_cot(t, cfg.ot_sender, m, 1, |_| ring.bits());
    }
}

/// Multiplexer: shares of `c · x` for shared bits `c` and shared ring values `x`.
///
/// Protocol (CrypTFlow2): `c x_i = c_i x_i + c_j (1 - 2 c_i) x_i`; party `i` is the sender of a
/// correlated OT over `Z_2^l` with correlation `(1 - 2 c_i) x_i` and the peer chooses with
/// `c_j`; both directions, the configured OT sender's first.
/// Security: semi-honest, 128-bit. Cost: [`mux_cost`]: 2 ring COTs, `2 (16 + 1/8 + l/8)`
/// bytes per element, 3 flights.
pub fn mux<C: Channel>(s: &mut NlSession, ch: &mut C, c: &BShare, x: &AShare) -> Result<AShare> {
    if let (Some(rs), true) = (ranges(x.len()), c.len() == x.len()) {
        let bits = c.to_bits();
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(mux(s, ch, &slice_b(&bits, &r), &slice_a(x, &r)?)?.into_data());
        }
        return AShare::new(x.ring(), x.shape().to_vec(), out);
    }
    s.reserve(ch, mux_cost(x.len(), x.ring(), s.config()).cots)?;
    if c.len() != x.len() {
        return Err(MpcError::ShapeMismatch {
            what: format!("mux of {} bits and {} values", c.len(), x.len()),
        });
    }
    let ring = x.ring();
    let l = ring.bits();
    let bits = c.to_bits();
    let xs: Vec<u64> = bits
        .iter()
        .zip(x.data())
        .map(|(&b, &v)| if b { ring.neg(v) } else { v })
        .collect();
    let (a, y) = s.cot_both(ch, &xs, &bits, |_| l)?;
    let out = bits
        .iter()
        .zip(x.data())
        .zip(a.iter().zip(&y))
        .map(|((&b, &v), (&a, &y))| ring.add(ring.sub(if b { v } else { 0 }, a), y))
        .collect();
    AShare::new(ring, x.shape().to_vec(), out)
}

/// Exact cost of [`mux`] on `n` elements.
pub fn mux_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_mux(&mut t, n, ring, cfg);
    t.cost()
}

/// [`mux_cost`] on a tape.
pub fn tape_mux(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    for m in batch_sizes(n) {
        NlSession::tape_cot_both(t, cfg.ot_sender, m, 1, |_| ring.bits());
    }
}

/// Element-wise product of two shared tensors.
///
/// Protocol (Gilboa's OT multiplication with CrypTFlow2's width trick):
/// `xy = x0 y0 + x1 y1 + x0 y1 + x1 y0`; for the cross term `x_i y_j` party `j` chooses with
/// each bit `k` of `y_j` in a correlated OT with correlation `x_i` over `Z_2^{l-k}` (the term
/// is scaled by `2^k`, so its high `k` bits vanish mod `2^l`), both directions.
/// An HE-based variant (one party encrypts its shares under duet-fhe, the other multiplies
/// and masks) trades the `2 l` COTs for ciphertext traffic: `HeElementwiseMul` in
/// duet-protocols (mpc does not depend on fhe).
/// Security: semi-honest, 128-bit.
/// Cost: [`mul_cost`]: `2 l` COTs plus `2 (l/8 + l(l+1)/16)` bytes per element (185 bytes
/// for `l = 37` with Ferret COTs; 1,369 with IKNP's 16 bytes per COT), 3 flights.
pub fn mul<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, y: &AShare) -> Result<AShare> {
    if let (Some(rs), true) = (
        ranges(x.len()),
        x.ring() == y.ring() && x.shape() == y.shape(),
    ) {
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(mul(s, ch, &slice_a(x, &r)?, &slice_a(y, &r)?)?.into_data());
        }
        return AShare::new(x.ring(), x.shape().to_vec(), out);
    }
    s.reserve(ch, mul_cost(x.len(), x.ring(), s.config()).cots)?;
    if x.ring() != y.ring() || x.shape() != y.shape() {
        return Err(MpcError::ShapeMismatch {
            what: format!("product of {:?} and {:?}", x.shape(), y.shape()),
        });
    }
    let ring = x.ring();
    let l = ring.bits() as usize;
    let n = x.len();
    let mut xs = Vec::with_capacity(n * l);
    let mut choices = Vec::with_capacity(n * l);
    for (&xv, &yv) in x.data().iter().zip(y.data()) {
        for k in 0..l {
            xs.push(xv & (ring.mask() >> k));
            choices.push((yv >> k) & 1 == 1);
        }
    }
    let width = move |j: usize| (l - j % l) as u32;
    let (a, r) = s.cot_both(ch, &xs, &choices, width)?;
    let out = x
        .data()
        .iter()
        .zip(y.data())
        .zip(a.chunks(l.max(1)).zip(r.chunks(l.max(1))))
        .map(|((&xv, &yv), (ac, rc))| {
            let cross = ac
                .iter()
                .zip(rc)
                .enumerate()
                .fold(0u64, |acc, (k, (&a, &r))| {
                    acc.wrapping_add(r.wrapping_sub(a) << k)
                });
            ring.add(ring.mul(xv, yv), ring.reduce(cross))
        })
        .collect();
    AShare::new(ring, x.shape().to_vec(), out)
}

/// Exact cost of [`mul`] on `n` elements.
pub fn mul_cost(n: usize, ring: Ring, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_mul(&mut t, n, ring, cfg);
    t.cost()
}

/// [`mul_cost`] on a tape.
pub fn tape_mul(t: &mut Tape, n: usize, ring: Ring, cfg: NlConfig) {
    let l = ring.bits() as usize;
    for m in batch_sizes(n) {
        NlSession::tape_cot_both(t, cfg.ot_sender, m * l, l, |j| (l - j % l) as u32);
    }
}
