//! `exp(x)` for shared fixed-point `x <= 0`, plus the cheap products and conversions the
//! fixed-point math is built from: [`square`] (one cross term), [`mul_known`] (one factor
//! known to one party), [`trunc_pos`] (truncation of a value known to be non-negative) and
//! [`extend_pos`] (ring extension of a value known to be non-negative).
//!
//! The helper products should eventually live next to [`crate::nonlinear::mul`]; they are here
//! because this file is where they were first needed.

use crate::nonlinear::{self as nl, BShare, Cost, NlConfig, NlSession, Tape, TruncMode};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};
use rand::RngCore;

fn bad(what: String) -> MpcError {
    MpcError::InvalidArgument { what }
}

/// The cross term `x_S * x_R` (S the COT sender `sender`, R its peer) for every element, as
/// additive shares: party S provides `xs = Some(its values)`, party R its values as choice
/// bits. Gilboa one-directional: for every bit `k` of `x_R`, one COT over `Z_2^{l-k}` with
/// correlation `x_S`.
fn cross<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    ring: Ring,
    sender: Role,
    mine: &[u64],
) -> Result<Vec<u64>> {
    let l = ring.bits() as usize;
    let width = move |j: usize| (l - j % l) as u32;
    if s.role() == sender {
        let xs: Vec<u64> = mine
            .iter()
            .flat_map(|&v| (0..l).map(move |k| v & (ring.mask() >> k)))
            .collect();
        let a = s.cot_send(ch, &xs, width)?;
        Ok(a.chunks(l.max(1))
            .map(|ac| {
                let t = ac
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (k, &a)| acc.wrapping_add(a << k));
                ring.neg(ring.reduce(t))
            })
            .collect())
    } else {
        let choices: Vec<bool> = mine
            .iter()
            .flat_map(|&v| (0..l).map(move |k| (v >> k) & 1 == 1))
            .collect();
        let r = s.cot_recv(ch, &choices, width)?;
        Ok(r.chunks(l.max(1))
            .map(|rc| {
                let t = rc
                    .iter()
                    .enumerate()
                    .fold(0u64, |acc, (k, &r)| acc.wrapping_add(r << k));
                ring.reduce(t)
            })
            .collect())
    }
}

fn tape_cross(t: &mut Tape, n: usize, ring: Ring, sender: Role) {
    let l = ring.bits() as usize;
    NlSession::tape_cot(t, sender, n * l, l, |j| (l - j % l) as u32);
}

/// Shares of `x^2` (one cross term, half of [`nl::mul`]): [`super::poly::square`].
pub use super::poly::{square, square_cost, tape_square};

/// Shares of `x^2` (same ring `Z_2^L`, no truncation) for `x` known to lie in
/// `[0, 2^{m-1})`, `L/2 <= m < L - 1` (otherwise this is [`square`]): the square of a narrow
/// value, cheaper than [`square`].
///
/// Protocol (SIRNN-style mixed-width product): both parties keep their shares mod `2^m`
/// (`x_0 + x_1 = x + w 2^m` with the wrap `w = m_0 ∨ m_1` of the share MSBs, since `msb(x) = 0`),
/// so `x^2 = x_0^2 + x_1^2 + 2 x_0 x_1 - 2^{m+1} w (x_0 + x_1) mod 2^L`. The cross term by
/// one-directional Gilboa with the `m` bits of one share as choices (`m` COTs over
/// `Z_2^{L-k}` instead of `L`), the wrap term `w (x_0 + x_1) = m_0 x_0 + m_1 x_1 +
/// m_1 x_0 (1 - m_0) + m_0 x_1 (1 - m_1)` by one COT over `Z_2^{L-m-1}` in each direction.
/// Security: semi-honest, 128-bit. Cost: [`square_pos_cost`].
pub fn square_pos<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, m: u32) -> Result<AShare> {
    let ring = x.ring();
    let l = ring.bits();
    if m + 1 >= l || m < 2 || 2 * m < l {
        return square(s, ch, x);
    }
    if x.is_empty() {
        return Ok(x.clone());
    }
    s.reserve(ch, square_pos_cost(x.len(), ring, m, s.config()).cots)?;
    let mm = (1u64 << m) - 1;
    let xs: Vec<u64> = x.data().iter().map(|&v| v & mm).collect();
    let msb: Vec<bool> = xs.iter().map(|&v| (v >> (m - 1)) & 1 == 1).collect();
    let mu = m as usize;
    let ww = l - m - 1;
    let wm = (1u64 << ww) - 1;
    let first = s.config().ot_sender;
    let me_first = s.role() == first;
    // direction 1: `first` sends [x_S mod 2^{L-k} for k < m, x_S (1 - m_S)], the peer chooses
    // [bits of x_R, m_R]
    let width1 = move |j: usize| {
        let k = j % (mu + 1);
        if k < mu {
            l - k as u32
        } else {
            ww
        }
    };
    let width2 = move |_: usize| ww;
    let wrap_corr: Vec<u64> = xs
        .iter()
        .zip(&msb)
        .map(|(&v, &b)| if b { 0 } else { v & wm })
        .collect();
    let (cross_sh, wrap1): (Vec<u64>, Vec<u64>) = if me_first {
        let corr: Vec<u64> = xs
            .iter()
            .zip(&wrap_corr)
            .flat_map(|(&v, &w)| (0..mu).map(move |k| v & (ring.mask() >> k)).chain([w]))
            .collect();
        let a = s.cot_send(ch, &corr, width1)?;
        a.chunks(mu + 1)
            .map(|c| {
                let t = c
                    .iter()
                    .take(mu)
                    .enumerate()
                    .fold(0u64, |acc, (k, &a)| acc.wrapping_add(a << k));
                let w = c.get(mu).copied().unwrap_or(0);
                (ring.neg(ring.reduce(t)), w.wrapping_neg() & wm)
            })
            .unzip()
    } else {
        let ch_bits: Vec<bool> = xs
            .iter()
            .zip(&msb)
            .flat_map(|(&v, &b)| (0..mu).map(move |k| (v >> k) & 1 == 1).chain([b]))
            .collect();
        let r = s.cot_recv(ch, &ch_bits, width1)?;
        r.chunks(mu + 1)
            .map(|c| {
                let t = c
                    .iter()
                    .take(mu)
                    .enumerate()
                    .fold(0u64, |acc, (k, &r)| acc.wrapping_add(r << k));
                (ring.reduce(t), c.get(mu).copied().unwrap_or(0) & wm)
            })
            .unzip()
    };
    // direction 2: the peer sends x_R (1 - m_R), `first` chooses with m_S
    let wrap2: Vec<u64> = if me_first {
        let r = s.cot_recv(ch, &msb, width2)?;
        r.iter().map(|&v| v & wm).collect()
    } else {
        let a = s.cot_send(ch, &wrap_corr, width2)?;
        a.iter().map(|&v| v.wrapping_neg() & wm).collect()
    };
    let out = xs
        .iter()
        .zip(&msb)
        .zip(cross_sh.iter().zip(wrap1.iter().zip(&wrap2)))
        .map(|((&v, &b), (&c, (&w1, &w2)))| {
            let t = (if b { v } else { 0 }).wrapping_add(w1).wrapping_add(w2) & wm;
            let sq = ring.add(ring.mul(v, v), ring.add(c, c));
            ring.sub(sq, ring.reduce(t << (m + 1)))
        })
        .collect();
    AShare::new(ring, x.shape().to_vec(), out)
}

/// Exact cost of [`square_pos`] on `n` elements.
pub fn square_pos_cost(n: usize, ring: Ring, m: u32, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_square_pos(&mut t, n, ring, m, cfg);
    t.cost()
}

/// [`square_pos_cost`] on a tape.
pub fn tape_square_pos(t: &mut Tape, n: usize, ring: Ring, m: u32, cfg: NlConfig) {
    let l = ring.bits();
    if m + 1 >= l || m < 2 || 2 * m < l {
        return tape_square(t, n, ring, cfg);
    }
    if n == 0 {
        return;
    }
    let mu = m as usize;
    let ww = l - m - 1;
    NlSession::tape_cot(t, cfg.ot_sender, n * (mu + 1), mu + 1, move |j| {
        let k = j % (mu + 1);
        if k < mu {
            l - k as u32
        } else {
            ww
        }
    });
    NlSession::tape_cot(t, cfg.ot_sender.peer(), n, 1, move |_| ww);
}

/// Shares of `x y` (same ring `Z_2^L`, no truncation) for `x` in `[0, 2^{mx-1})` and `y` in
/// `[0, 2^{my-1})`, with `mx + my >= L` and both below `L - 1` (otherwise this is
/// [`nl::mul`]): the product of two narrow non-negative values, cheaper than [`nl::mul`].
///
/// Protocol (SIRNN-style mixed-width product): shares are kept mod `2^mx` and `2^my`; with the
/// wraps `w_x = a_0 ∨ a_1`, `w_y = b_0 ∨ b_1` of the share MSBs (known-MSB extension),
/// `x y = sum_i x_i y_i + x_0 y_1 + x_1 y_0 - 2^my w_y (x_0 + x_1) - 2^mx w_x (y_0 + y_1)
/// mod 2^L`. Each cross term by Gilboa with the `min(mx, my)` bits of the narrower factor as
/// choices (COTs over `Z_2^{L-k}`), each wrap term as in [`square_pos`] (one COT over
/// `Z_2^{L-my}` and one over `Z_2^{L-mx}` per direction). Security: semi-honest, 128-bit.
/// Cost: [`mul_pos_cost`].
pub fn mul_pos<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    mx: u32,
    y: &AShare,
    my: u32,
) -> Result<AShare> {
    let ring = x.ring();
    let l = ring.bits();
    if x.ring() != y.ring() || x.len() != y.len() {
        return Err(MpcError::ShapeMismatch {
            what: format!("product of {:?} and {:?}", x.shape(), y.shape()),
        });
    }
    if !mul_pos_applies(l, mx, my) {
        return nl::mul(s, ch, x, y);
    }
    // the narrower factor chooses
    let (x, mx, y, my) = if mx <= my {
        (x, mx, y, my)
    } else {
        (y, my, x, mx)
    };
    if x.is_empty() {
        return Ok(x.clone());
    }
    s.reserve(ch, mul_pos_cost(x.len(), ring, mx, my, s.config()).cots)?;
    let (xm, ym) = ((1u64 << mx) - 1, (1u64 << my) - 1);
    let (wy, wx) = (l - my, l - mx);
    let (wym, wxm) = ((1u64 << wy) - 1, (1u64 << wx) - 1);
    let mu = mx as usize;
    let per = mu + 2;
    let xs: Vec<u64> = x.data().iter().map(|&v| v & xm).collect();
    let ys: Vec<u64> = y.data().iter().map(|&v| v & ym).collect();
    let ax: Vec<bool> = xs.iter().map(|&v| (v >> (mx - 1)) & 1 == 1).collect();
    let ay: Vec<bool> = ys.iter().map(|&v| (v >> (my - 1)) & 1 == 1).collect();
    let mut corr = Vec::with_capacity(xs.len() * per);
    let mut choices = Vec::with_capacity(xs.len() * per);
    for i in 0..xs.len() {
        let (xv, yv) = (
            xs.get(i).copied().unwrap_or(0),
            ys.get(i).copied().unwrap_or(0),
        );
        let (a, b) = (
            ax.get(i).copied().unwrap_or(false),
            ay.get(i).copied().unwrap_or(false),
        );
        corr.extend((0..mu).map(|k| yv & (ring.mask() >> k)));
        corr.push(if b { 0 } else { xv & wym });
        corr.push(if a { 0 } else { yv & wxm });
        choices.extend((0..mu).map(|k| (xv >> k) & 1 == 1));
        choices.push(b);
        choices.push(a);
    }
    let width = move |j: usize| {
        let k = j % per;
        if k < mu {
            l - k as u32
        } else if k == mu {
            wy
        } else {
            wx
        }
    };
    let (sa, rr) = s.cot_both(ch, &corr, &choices, width)?;
    let out = sa
        .chunks(per)
        .zip(rr.chunks(per))
        .enumerate()
        .map(|(i, (sa, rr))| {
            let (xv, yv) = (
                xs.get(i).copied().unwrap_or(0),
                ys.get(i).copied().unwrap_or(0),
            );
            let (a, b) = (
                ax.get(i).copied().unwrap_or(false),
                ay.get(i).copied().unwrap_or(false),
            );
            let cross = sa
                .iter()
                .zip(rr)
                .take(mu)
                .enumerate()
                .fold(0u64, |acc, (k, (&sv, &rv))| {
                    acc.wrapping_add(rv.wrapping_sub(sv) << k)
                });
            let g = |k: usize| {
                rr.get(k)
                    .copied()
                    .unwrap_or(0)
                    .wrapping_sub(sa.get(k).copied().unwrap_or(0))
            };
            let ty = (if b { xv } else { 0 }).wrapping_add(g(mu)) & wym;
            let tx = (if a { yv } else { 0 }).wrapping_add(g(mu + 1)) & wxm;
            let v = ring.add(ring.mul(xv, yv), ring.reduce(cross));
            ring.sub(ring.sub(v, ring.reduce(ty << my)), ring.reduce(tx << mx))
        })
        .collect();
    AShare::new(ring, x.shape().to_vec(), out)
}

fn mul_pos_applies(l: u32, mx: u32, my: u32) -> bool {
    mx >= 2 && my >= 2 && mx + 1 < l && my + 1 < l && mx + my >= l
}

/// Exact cost of [`mul_pos`] on `n` elements.
pub fn mul_pos_cost(n: usize, ring: Ring, mx: u32, my: u32, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_mul_pos(&mut t, n, ring, mx, my, cfg);
    t.cost()
}

/// [`mul_pos_cost`] on a tape.
pub fn tape_mul_pos(t: &mut Tape, n: usize, ring: Ring, mx: u32, my: u32, cfg: NlConfig) {
    let l = ring.bits();
    if !mul_pos_applies(l, mx, my) {
        return nl::tape_mul(t, n, ring, cfg);
    }
    if n == 0 {
        return;
    }
    let (mx, my) = (mx.min(my), mx.max(my));
    let mu = mx as usize;
    let per = mu + 2;
    NlSession::tape_cot_both(t, cfg.ot_sender, n * per, per, move |j| {
        let k = j % per;
        if k < mu {
            l - k as u32
        } else if k == mu {
            l - my
        } else {
            l - mx
        }
    });
}

/// `v / 2^j` rounded to nearest, ties up (`up`) or down (`v` itself for `j = 0`). On
/// uniformly distributed low bits, ties up are `2^-(j+1)` too large on average and ties down
/// as much too small.
fn round_shift(v: u128, j: u32, up: bool) -> u128 {
    if j == 0 {
        v
    } else {
        (v + (1u128 << (j - 1)) - u128::from(!up)) >> j
    }
}

/// The tie rule of a rounded COT correlation `x / 2^j`: down for `j = 1`, up otherwise, so
/// that the average biases over `j = 1, 2, ..` nearly cancel (`-1/4 + 1/8 + 1/16 + ..`).
fn tie_up(j: u32) -> bool {
    j >= 2
}

fn square_trunc_applies(in_bits: u32, m: u32, lv: u32, d: u32) -> bool {
    (2..=31).contains(&m)
        && in_bits >= m
        && 2 * m >= lv
        && m + 1 < lv
        && lv <= 62
        && d <= m + 1
        && lv >= d + 16
}

/// Shares of `x^2 / 2^d` in `Z_2^{lv - d}` for `x` known to lie in `[0, 2^{m-1})` (shares in
/// any ring of at least `m` bits), with `m <= lv <= 2m`: the narrow square of [`square_pos`]
/// taken in the virtual ring `Z_2^lv` and divided by `2^d` inside the products (a fused
/// truncation). `d = 0` gives the exact `x^2 mod 2^lv`.
///
/// Protocol: as [`square_pos`] (shares kept mod `2^m`, wrap `w` of the share MSBs,
/// `x^2 = x_0^2 + x_1^2 + 2 x_0 x_1 - 2^{m+1} w (x_0 + x_1) mod 2^lv`), with every term divided
/// by `2^d` before it is shared: each party rounds its `x_i^2 / 2^d` locally; the cross term
/// `2 x_S x_R / 2^d` by one-directional Gilboa where the COT for bit `k` of `x_R` carries
/// `round(x_S / 2^{d-1-k})` over `Z_2^{lv-d}` when `k + 1 < d` and `x_S` over
/// `Z_2^{lv-d-(k+1-d)}` (shifted by `k + 1 - d`) otherwise; the wrap term is a multiple of
/// `2^{m+1} >= 2^d` and stays exact (one COT over `Z_2^{lv-m-1}` each way). So the COTs are
/// at most `lv - d` bits wide instead of `lv - k` (and the doubled cross term costs one bit less
/// per COT than [`square_pos`] even at `d = 0`).
/// Error: the `max(d - 1, 0) + 2` rounded terms add at most `(d + 1) / 2` units of `2^d` in
/// either direction (none for `d = 0`), on average `2^-d / 2` at most (ties: up at the server
/// and down at the client for the local terms, down for `round(x_S / 2)` and up for the
/// other correlations).
/// Security: semi-honest, 128-bit. Cost: [`square_trunc_cost`].
pub fn square_trunc<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    m: u32,
    lv: u32,
    d: u32,
) -> Result<AShare> {
    if !square_trunc_applies(x.ring().bits(), m, lv, d) {
        return Err(bad(format!(
            "square_trunc of {m}-bit values from Z_2^{} in Z_2^{lv} / 2^{d}",
            x.ring().bits()
        )));
    }
    let lo = lv - d;
    let out = Ring::new(lo)?;
    if x.is_empty() {
        return AShare::new(out, x.shape().to_vec(), vec![]);
    }
    s.reserve(ch, square_trunc_cost(x.len(), m, lv, d, s.config()).cots)?;
    let mm = (1u64 << m) - 1;
    let xs: Vec<u64> = x.data().iter().map(|&v| v & mm).collect();
    let msb: Vec<bool> = xs.iter().map(|&v| (v >> (m - 1)) & 1 == 1).collect();
    let mu = m as usize;
    let ww = lv - m - 1;
    let wm = (1u64 << ww) - 1;
    let shift = move |k: u32| (k + 1).saturating_sub(d);
    let width1 = move |j: usize| {
        let k = (j % (mu + 1)) as u32;
        if k < m {
            lo - shift(k)
        } else {
            ww
        }
    };
    let width2 = move |_: usize| ww;
    let first = s.config().ot_sender;
    let me_first = s.role() == first;
    let wrap_corr: Vec<u64> = xs
        .iter()
        .zip(&msb)
        .map(|(&v, &b)| if b { 0 } else { v & wm })
        .collect();
    let fold = |c: &[u64], sign: bool| {
        let t = c
            .iter()
            .take(mu)
            .enumerate()
            .fold(0u64, |acc, (k, &a)| acc.wrapping_add(a << shift(k as u32)));
        if sign {
            out.neg(out.reduce(t))
        } else {
            out.reduce(t)
        }
    };
    let (cross_sh, wrap1): (Vec<u64>, Vec<u64>) = if me_first {
        let corr: Vec<u64> = xs
            .iter()
            .zip(&wrap_corr)
            .flat_map(|(&v, &w)| {
                (0..m)
                    .map(move |k| {
                        let c = if k + 1 >= d {
                            u128::from(v)
                        } else {
                            round_shift(u128::from(v), d - 1 - k, tie_up(d - 1 - k))
                        };
                        (c as u64) & (out.mask() >> shift(k))
                    })
                    .chain([w])
            })
            .collect();
        let a = s.cot_send(ch, &corr, width1)?;
        a.chunks(mu + 1)
            .map(|c| {
                let w = c.get(mu).copied().unwrap_or(0);
                (fold(c, true), w.wrapping_neg() & wm)
            })
            .unzip()
    } else {
        let ch_bits: Vec<bool> = xs
            .iter()
            .zip(&msb)
            .flat_map(|(&v, &b)| (0..mu).map(move |k| (v >> k) & 1 == 1).chain([b]))
            .collect();
        let r = s.cot_recv(ch, &ch_bits, width1)?;
        r.chunks(mu + 1)
            .map(|c| (fold(c, false), c.get(mu).copied().unwrap_or(0) & wm))
            .unzip()
    };
    let wrap2: Vec<u64> = if me_first {
        let r = s.cot_recv(ch, &msb, width2)?;
        r.iter().map(|&v| v & wm).collect()
    } else {
        let a = s.cot_send(ch, &wrap_corr, width2)?;
        a.iter().map(|&v| v.wrapping_neg() & wm).collect()
    };
    // the local terms: ties up at the server, down at the client (opposite average biases)
    let up = s.role() == Role::Server;
    let res = xs
        .iter()
        .zip(&msb)
        .zip(cross_sh.iter().zip(wrap1.iter().zip(&wrap2)))
        .map(|((&v, &b), (&c, (&w1, &w2)))| {
            let t = (if b { v } else { 0 }).wrapping_add(w1).wrapping_add(w2) & wm;
            let sq = out.reduce(round_shift(u128::from(v) * u128::from(v), d, up) as u64);
            out.sub(out.add(sq, c), out.reduce(t << (m + 1 - d)))
        })
        .collect();
    AShare::new(out, x.shape().to_vec(), res)
}

/// Exact cost of [`square_trunc`] on `n` elements (zero when the parameters are rejected).
pub fn square_trunc_cost(n: usize, m: u32, lv: u32, d: u32, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_square_trunc(&mut t, n, m, lv, d, cfg);
    t.cost()
}

/// [`square_trunc_cost`] on a tape.
pub fn tape_square_trunc(t: &mut Tape, n: usize, m: u32, lv: u32, d: u32, cfg: NlConfig) {
    if !square_trunc_applies(m, m, lv, d) || n == 0 {
        return;
    }
    let mu = m as usize;
    let ww = lv - m - 1;
    let lo = lv - d;
    NlSession::tape_cot(t, cfg.ot_sender, n * (mu + 1), mu + 1, move |j| {
        let k = (j % (mu + 1)) as u32;
        if k < m {
            lo - (k + 1).saturating_sub(d)
        } else {
            ww
        }
    });
    NlSession::tape_cot(t, cfg.ot_sender.peer(), n, 1, move |_| ww);
}

fn mul_trunc_applies(bx: u32, by: u32, mx: u32, my: u32, lv: u32, d: u32) -> bool {
    (2..=31).contains(&mx)
        && (2..=31).contains(&my)
        && bx >= mx
        && by >= my
        && mx + 1 < lv
        && my + 1 < lv
        && mx + my >= lv
        && lv <= 62
        && d <= mx.min(my)
        && lv >= d + 16
}

/// Shares of `x y / 2^d` in `Z_2^{lv - d}` for `x` in `[0, 2^{mx-1})` and `y` in
/// `[0, 2^{my-1})` (shares in any rings of at least `mx` and `my` bits), `mx + my >= lv`:
/// the narrow product of [`mul_pos`] in the virtual ring `Z_2^lv` with a fused truncation by
/// `d <= min(mx, my)` bits.
///
/// Protocol: as [`mul_pos`] (`x y = sum_i x_i y_i + x_0 y_1 + x_1 y_0 - 2^my w_y (x_0 + x_1) -
/// 2^mx w_x (y_0 + y_1) mod 2^lv`), every term divided by `2^d` before it is shared: the local
/// products rounded locally; in each cross term (Gilboa, both directions, the bits of the
/// narrower factor choose) the COT for bit `k` carries `round(y_S / 2^{d-k})` over
/// `Z_2^{lv-d}` for `k < d` and `y_S` over `Z_2^{lv-k}` (shifted by `k - d`) otherwise; the
/// wrap terms are multiples of `2^{min(mx,my)} >= 2^d` and stay exact. Error: at most
/// `1 + min(d, mx, my)` units of `2^d` either way, on average below `2^-d` (ties as in
/// [`square_trunc`]).
/// Security: semi-honest, 128-bit. Cost: [`mul_trunc_cost`].
#[allow(clippy::too_many_arguments)]
pub fn mul_trunc<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    mx: u32,
    y: &AShare,
    my: u32,
    lv: u32,
    d: u32,
) -> Result<AShare> {
    mul_trunc_impl(s, ch, x, mx, y, my, lv, d, false)
}

/// [`mul_trunc`] with dithered correlations: each rounded COT correlation
/// `y_S / 2^{d-k}` is rounded down or up at random (a fresh uniform offset from the sender's
/// PRG, so its expectation is exact) instead of to nearest. Use it when the correlated factor
/// is the same for many elements (e.g. one reciprocal per SoftMax row): rounding to nearest
/// then errs the same way for all of them, up to `min(d, mx, my) / 4` units of `2^d` per
/// element on average, which adds up over a row sum; dithered, the errors are independent
/// with mean 0. Error: at most `1 + 2 min(d, mx, my)` units of `2^d` either way.
/// Security and cost: as [`mul_trunc`] ([`mul_trunc_cost`]).
#[allow(clippy::too_many_arguments)]
pub fn mul_trunc_dither<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    mx: u32,
    y: &AShare,
    my: u32,
    lv: u32,
    d: u32,
) -> Result<AShare> {
    mul_trunc_impl(s, ch, x, mx, y, my, lv, d, true)
}

#[allow(clippy::too_many_arguments)]
fn mul_trunc_impl<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    mx: u32,
    y: &AShare,
    my: u32,
    lv: u32,
    d: u32,
    dither: bool,
) -> Result<AShare> {
    if x.len() != y.len() {
        return Err(MpcError::ShapeMismatch {
            what: format!("product of {:?} and {:?}", x.shape(), y.shape()),
        });
    }
    if !mul_trunc_applies(x.ring().bits(), y.ring().bits(), mx, my, lv, d) {
        return Err(bad(format!(
            "mul_trunc of {mx}- and {my}-bit values in Z_2^{lv} / 2^{d}"
        )));
    }
    let (x, mx, y, my) = if mx <= my {
        (x, mx, y, my)
    } else {
        (y, my, x, mx)
    };
    let lo = lv - d;
    let out = Ring::new(lo)?;
    if x.is_empty() {
        return AShare::new(out, x.shape().to_vec(), vec![]);
    }
    s.reserve(ch, mul_trunc_cost(x.len(), mx, my, lv, d, s.config()).cots)?;
    let (xm, ym) = ((1u64 << mx) - 1, (1u64 << my) - 1);
    let (wy, wx) = (lv - my, lv - mx);
    let (wym, wxm) = ((1u64 << wy) - 1, (1u64 << wx) - 1);
    let mu = mx as usize;
    let per = mu + 2;
    let xs: Vec<u64> = x.data().iter().map(|&v| v & xm).collect();
    let ys: Vec<u64> = y.data().iter().map(|&v| v & ym).collect();
    let shift = move |k: u32| k.saturating_sub(d);
    let mut corr = Vec::with_capacity(xs.len() * per);
    let mut choices = Vec::with_capacity(xs.len() * per);
    for (&xv, &yv) in xs.iter().zip(&ys) {
        let (a, b) = ((xv >> (mx - 1)) & 1 == 1, (yv >> (my - 1)) & 1 == 1);
        for k in 0..mx {
            let c = if k >= d {
                u128::from(yv)
            } else if dither {
                let j = d - k;
                let t = u128::from(s.rng().next_u64()) & ((1u128 << j) - 1);
                (u128::from(yv) + t) >> j
            } else {
                round_shift(u128::from(yv), d - k, tie_up(d - k))
            };
            corr.push((c as u64) & (out.mask() >> shift(k)));
        }
        corr.push(if b { 0 } else { xv & wym });
        corr.push(if a { 0 } else { yv & wxm });
        choices.extend((0..mx).map(|k| (xv >> k) & 1 == 1));
        choices.push(b);
        choices.push(a);
    }
    let width = move |j: usize| {
        let k = j % per;
        if k < mu {
            lo - shift(k as u32)
        } else if k == mu {
            wy
        } else {
            wx
        }
    };
    let (sa, rr) = s.cot_both(ch, &corr, &choices, width)?;
    let up = s.role() == Role::Server;
    let res = sa
        .chunks(per)
        .zip(rr.chunks(per))
        .zip(xs.iter().zip(&ys))
        .map(|((sa, rr), (&xv, &yv))| {
            let (a, b) = ((xv >> (mx - 1)) & 1 == 1, (yv >> (my - 1)) & 1 == 1);
            let cross = sa
                .iter()
                .zip(rr)
                .take(mu)
                .enumerate()
                .fold(0u64, |acc, (k, (&sv, &rv))| {
                    acc.wrapping_add(rv.wrapping_sub(sv) << shift(k as u32))
                });
            let g = |k: usize| {
                rr.get(k)
                    .copied()
                    .unwrap_or(0)
                    .wrapping_sub(sa.get(k).copied().unwrap_or(0))
            };
            let ty = (if b { xv } else { 0 }).wrapping_add(g(mu)) & wym;
            let tx = (if a { yv } else { 0 }).wrapping_add(g(mu + 1)) & wxm;
            let p = out.reduce(round_shift(u128::from(xv) * u128::from(yv), d, up) as u64);
            let v = out.add(p, out.reduce(cross));
            out.sub(
                out.sub(v, out.reduce(ty << (my - d))),
                out.reduce(tx << (mx - d)),
            )
        })
        .collect();
    AShare::new(out, x.shape().to_vec(), res)
}

/// Exact cost of [`mul_trunc`] on `n` elements (zero when the parameters are rejected).
pub fn mul_trunc_cost(n: usize, mx: u32, my: u32, lv: u32, d: u32, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_mul_trunc(&mut t, n, mx, my, lv, d, cfg);
    t.cost()
}

/// [`mul_trunc_cost`] on a tape.
pub fn tape_mul_trunc(t: &mut Tape, n: usize, mx: u32, my: u32, lv: u32, d: u32, cfg: NlConfig) {
    if !mul_trunc_applies(mx.max(my), mx.max(my), mx, my, lv, d) || n == 0 {
        return;
    }
    let (mx, my) = (mx.min(my), mx.max(my));
    let mu = mx as usize;
    let per = mu + 2;
    let lo = lv - d;
    NlSession::tape_cot_both(t, cfg.ot_sender, n * per, per, move |j| {
        let k = j % per;
        if k < mu {
            lo - (k as u32).saturating_sub(d)
        } else if k == mu {
            lv - my
        } else {
            lv - mx
        }
    });
}

/// Unbiased rounding of `x / 2^f` for `x >= 1 - j 2^f` (shares, same ring; `x + j 2^f`
/// below `2^{l-1}`): [`trunc_pos`] of `x + j 2^f - 1`, minus `j`. The result is
/// `floor(x / 2^f)` or one more (so at least `-j`), and on uniformly random shares its
/// expectation is exactly `x / 2^f` ([`trunc_pos`] alone is `2^-f` too large on average: its
/// one-ulp correction comes with probability `(r + 1) / 2^f` for the remainder `r`).
/// Security: semi-honest. Cost: [`trunc_pos_cost`].
pub fn trunc_offset<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f: u32,
    j: i64,
) -> Result<AShare> {
    if f == 0 {
        return Ok(x.clone());
    }
    let t = trunc_pos(s, ch, &add_const(x, s.role(), (j << f) - 1)?, f)?;
    add_const(&t, s.role(), -j)
}

/// Shares of `c * x` (element-wise, no truncation) where the public-to-`holder` vector `c`
/// (e.g. LayerNorm's gamma held by the server) is known to `holder` only: `holder` passes
/// `Some(c)`, its peer `None`.
///
/// Protocol: `c x = c x_H + c x_P`; the holder computes the first term, the second is a
/// one-directional Gilboa product (the holder is the COT sender with correlation `c`, the peer
/// chooses with the bits of `x_P`): `l` COTs over `Z_2^{l-k}` per element, the cheapest product
/// with one private factor here (a symmetric [`nl::mul`] with a zero share would cost twice
/// as much; an HE product costs a ciphertext per 4,096 slots each way plus noise flooding,
/// more than `l(l+1)/16` bytes per element below `l = 40` with silent OT).
/// Security: semi-honest, 128-bit; `c` stays private to the holder.
/// Cost: [`mul_known_cost`], 2 flights.
pub fn mul_known<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    holder: Role,
    c: Option<&[u64]>,
) -> Result<AShare> {
    let ring = x.ring();
    if x.is_empty() {
        return Ok(x.clone());
    }
    s.reserve(ch, mul_known_cost(x.len(), ring, holder, s.config()).cots)?;
    if s.role() == holder {
        let c = c.ok_or_else(|| bad("mul_known: the holder must provide its factors".into()))?;
        if c.len() != x.len() {
            return Err(MpcError::ShapeMismatch {
                what: format!("{} factors for {} values", c.len(), x.len()),
            });
        }
        let cr: Vec<u64> = c.iter().map(|&v| ring.reduce(v)).collect();
        let t = cross(s, ch, ring, holder, &cr)?;
        let out = x
            .data()
            .iter()
            .zip(&cr)
            .zip(&t)
            .map(|((&v, &c), &t)| ring.add(ring.mul(v, c), t))
            .collect();
        AShare::new(ring, x.shape().to_vec(), out)
    } else {
        let t = cross(s, ch, ring, holder, x.data())?;
        AShare::new(ring, x.shape().to_vec(), t)
    }
}

/// Exact cost of [`mul_known`] on `n` elements.
pub fn mul_known_cost(n: usize, ring: Ring, holder: Role, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_mul_known(&mut t, n, ring, holder);
    t.cost()
}

/// [`mul_known_cost`] on a tape (the holder is the COT sender, whatever the configuration).
pub fn tape_mul_known(t: &mut Tape, n: usize, ring: Ring, holder: Role) {
    if n > 0 {
        tape_cross(t, n, ring, holder);
    }
}

/// Truncation by `f` bits of values known to be non-negative (below `2^{l-1}`), rounded
/// into `[floor(x / 2^f), floor(x / 2^f) + 1]` (never negative): [`TruncMode::KnownMsb`]
/// (`floor` or one less) plus one ulp added by the server.
/// Security: semi-honest. Cost: [`trunc_pos_cost`] (one COT over `Z_2^f` per element).
pub fn trunc_pos<C: Channel>(s: &mut NlSession, ch: &mut C, x: &AShare, f: u32) -> Result<AShare> {
    if f == 0 {
        return Ok(x.clone());
    }
    let t = nl::trunc(s, ch, x, f, TruncMode::KnownMsb(false))?;
    add_const(&t, s.role(), 1)
}

/// Exact cost of [`trunc_pos`].
pub fn trunc_pos_cost(n: usize, ring: Ring, f: u32, cfg: NlConfig) -> Cost {
    nl::trunc_cost(n, ring, f, TruncMode::KnownMsb(false), cfg)
}

/// [`trunc_pos_cost`] on a tape.
pub fn tape_trunc_pos(t: &mut Tape, n: usize, ring: Ring, f: u32, cfg: NlConfig) {
    nl::tape_trunc(t, n, ring, f, TruncMode::KnownMsb(false), cfg);
}

/// Shares of `x + c` for one public constant `c` (a signed ring element).
pub fn add_const(x: &AShare, role: Role, c: i64) -> Result<AShare> {
    let v = x.ring().from_i64(c);
    x.add_public(role, &vec![v; x.len()])
}

/// Exact extension from `Z_2^{l1}` to `Z_2^{l2}` of values known to lie in `[0, 2^{l1-1})`
/// (one COT over `Z_2^{l2-l1}` per element): [`super::poly::extend_nonneg`].
pub use super::poly::{
    extend_nonneg as extend_pos, extend_nonneg_cost as extend_pos_cost,
    tape_extend_nonneg as tape_extend_pos,
};

/// How `exp(x)` is approximated for `x <= 0`. Both variants clip the input at `-2^n` (one
/// ReLU: `u = ReLU(x + 2^n)`), reduce the range by scaling (`t = u / 2^n - 1 in [-1, 0]`,
/// free: the fixed-point scale changes) and square `n` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpMethod {
    /// `(1 + x/2^n)^(2^n)`, exactly 0 below `-2^n` (up to one ulp per squaring). The
    /// approximation of BumbleBee (NDSS'25) and PUMA (their `exp` for `x < 0` with clipping;
    /// PUMA uses `n = 8`, clipping at -14 is implied by `2^n` large enough). Approximation
    /// error at most `max_x e^x x^2 / 2^{n+1} = 0.271 / 2^n` (4.2e-3 for `n = 6`).
    Squaring {
        /// Squarings (`2^n` is the clipping bound).
        n: u32,
    },
    /// `(1 + t + t^2/2)^(2^n)` with `t = x / 2^n`: a degree-2 Taylor polynomial on the
    /// reduced range, then `n` squarings (the polynomial-after-range-reduction style of BOLT
    /// (S&P'24) and SIRNN/Iron, with reduction by scaling instead of by `ln 2`); one extra
    /// squaring buys two fewer squarings at equal error. Below `-2^n` it gives
    /// `0.5^(2^n)` (1.5e-5 for `n = 4`). Approximation error at most
    /// `max_x e^x |x|^3 / (6 * 4^n) = 0.224 / 4^n` (8.7e-4 for `n = 4`).
    Taylor2 {
        /// Squarings after the polynomial.
        n: u32,
    },
    /// Duet: `(1 - a s + c s^2)^(2^n)` with `s = -x / 2^n in [0, 1]` (clipped at `-2^n`),
    /// `a = a_q / 1024` and `c = (g_q / 1024)^2 / 2`: a degree-2 base fitted for SoftMax
    /// instead of Taylor's `a = 1, c = 1/2`. Taylor's base overestimates `e^t` by `|t|^3 / 6`,
    /// a relative error that the squarings multiply by `2^n` and that, summed over a row,
    /// shifts every SoftMax output the same way (the worst row, the max plus 127 logits 6
    /// below it, is off by 3.6e-2 at `n = 4`); the fitted base spreads the relative error
    /// over `t in [-1, 0]` with both signs (worst row 2.1e-3 at `n = 4` with
    /// [`ExpMethod::DUET`]), so one squaring fewer than Taylor2 suffices. Costs one
    /// truncation more than [`ExpMethod::Taylor2`] (the two scalings `a s` and `g s` share
    /// one batched [`trunc_pos`]).
    Fit2 {
        /// Squarings after the polynomial.
        n: u32,
        /// `a` in units of `2^-10` (below 1024).
        a_q: u16,
        /// `sqrt(2 c)` in units of `2^-10` (below 1024).
        g_q: u16,
    },
    /// Duet (table): range reduction on the shares themselves and a lookup table, no
    /// squarings. With `u = -x` (`f_in` fractional bits) and the split position
    /// `p = f_in + step`, each party splits its share `u_i = K_i 2^p + r_i`, `r_i < 2^p`
    /// (local); then `u = K' Δ + (r_0 + r_1) 2^-f_in` with `Δ = 2^step`, the exact integer sum
    /// `r_0 + r_1 < 2^{p+1}` and `K' ≡ K_0 + K_1` in `[-1, 2^{l-2-p})`, so
    /// `e^x = T[K'] B(r_0) C(r_1)` with `T[k] = e^{-(k+1)Δ}`, `B(r) = C(r) = e^{Δ/2 - r
    /// 2^-f_in}` in `(e^{-Δ/2}, e^{Δ/2}]`. The OT sender folds its own `B(r_S)` into a
    /// 1-out-of-`2^m` table lookup indexed by `K' mod 2^m` ([`crate::nonlinear::lut`]), the
    /// product with the receiver's own `C(r_R)` is one one-sided Gilboa product with a fused
    /// truncation ([`mul_held_trunc`]), and entries with `K' > 2^m - 2` are cut to 0 by one
    /// comparison on the `l - p - 1`-bit high parts (clipping error `e^{-(2^m - 1)Δ}`). The
    /// range reduction of BOLT (S&P'24) and SIRNN (a lookup table for the high part), with
    /// the low part's exponential made exact by splitting it across the shares instead of a
    /// polynomial.
    Lut {
        /// `log2` of the table step `Δ` (`-2..=3`).
        step: i8,
        /// Index bits `m` of the table (`1..=8`).
        index_bits: u8,
        /// Extra fractional bits of the table entries and of the receiver's factor (the
        /// product is taken at `F + guard` bits each, then rounded to `F`).
        guard: u8,
    },
}

/// Bits of the fixed-point coefficients of [`ExpMethod::Fit2`].
const FIT_BITS: u32 = 10;

impl ExpMethod {
    /// Duet's SoftMax exp: [`ExpMethod::Fit2`] with 4 squarings and `a = 1012 / 1024`,
    /// `c = (928 / 1024)^2 / 2 = 0.4106`, fitted (grid search over the quantised
    /// coefficients) to minimise the worst SoftMax error over rows made of the max and
    /// `m in {1, 4, 16, 127}` equal logits at any distance below it.
    pub const DUET: Self = Self::Fit2 {
        n: 4,
        a_q: 1012,
        g_q: 928,
    };

    /// Duet's table exp ([`ExpMethod::Lut`]): step `Δ = 2`, an 8-entry table (`K'` up to 6,
    /// clipping error `e^-14`), two guard bits. Chosen on SoftMax 12x128x128 (`explore_lut`
    /// in `protocols/src/nonlinear/softmax.rs`): `Δ = 1` with 16 entries costs 20 bytes per
    /// element more for the same error; `Δ = 4` with 4 entries saves 7.6 bytes at about the
    /// same error on the test rows but clips at `e^-12`, so a row of 127 logits 12 to 16
    /// below its max loses up to `127 e^-12 = 7.8e-4` of its sum (`Δ = 2`: `1.1e-4`).
    pub const DUET_LUT: Self = Self::Lut {
        step: 1,
        index_bits: 3,
        guard: 2,
    };

    /// The number of squarings after the base (0 for [`ExpMethod::Lut`]).
    pub fn squarings(self) -> u32 {
        match self {
            Self::Squaring { n } | Self::Taylor2 { n } | Self::Fit2 { n, .. } => n,
            Self::Lut { .. } => 0,
        }
    }

    /// A bound on the approximation error (before rounding errors) over `x <= 0`.
    pub fn approx_error(self) -> f64 {
        match self {
            Self::Squaring { n } => 0.271 / f64::from(1u32 << n.min(30)),
            Self::Taylor2 { n } => (0.224 / 4f64.powi(n as i32)).max(0.5f64.powi(1 << n.min(30))),
            Self::Fit2 { n, a_q, g_q } => {
                // the supremum over a grid of step 2^-10 on [-3 * 2^n, 0] (past the clipping
                // bound the value is constant), plus the largest change of either function
                // between grid points (both are increasing with slope at most
                // max(1, 2^n p'(t) p^{2^n - 1} / 2^n) <= 2 here): 2 * 2^-10
                let nn = f64::from(1u32 << n.min(16));
                let q = f64::from(1u32 << FIT_BITS);
                let (a, g) = (f64::from(a_q) / q, f64::from(g_q) / q);
                let c = g * g / 2.0;
                let steps = 3 * (1u32 << n.min(16)) * (1 << FIT_BITS);
                let sup = (0..=steps)
                    .map(|i| {
                        let x = -f64::from(i) / q;
                        let t = (x / nn).max(-1.0);
                        let p = 1.0 + a * t + c * t * t;
                        (p.powf(nn) - x.exp()).abs()
                    })
                    .fold(0.0, f64::max);
                sup + 2.0 / q
            }
            Self::Lut {
                step, index_bits, ..
            } => {
                // the clipped entries only
                let delta = 2f64.powi(i32::from(step));
                (-(f64::from((1u32 << index_bits.min(8)) - 1) * delta)).exp()
            }
        }
    }
}

/// Parameters of [`exp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExpParams {
    /// The approximation.
    pub method: ExpMethod,
    /// Fractional bits of the output and of every intermediate (`F`); the ring needs at least
    /// `2F + 2` bits.
    pub frac: u32,
}

impl ExpParams {
    /// A bound on the absolute error of [`exp`]: the approximation error plus one ulp per
    /// squaring amplified by the later squarings (`2^n` ulps at most) plus the base's
    /// rounding.
    pub fn error_bound(self) -> f64 {
        if let ExpMethod::Lut { .. } = self.method {
            // the table entry and the receiver factor, each rounded stochastically (below one
            // ulp of 2^-(F + g), times the other factor, at most e^{Δ/2}), the fused product
            // ((1 + min(d, mx)) / 2 units of 2^-(F + slack)), the final rounding (below one
            // ulp of 2^-F)
            let lp = LutPlan::of(self);
            let f = f64::from(self.frac);
            let h = lp.half_step_exp();
            let g = 2f64.powf(-(f + f64::from(lp.guard)));
            return self.method.approx_error()
                + 2.0 * h * g
                + g * g
                + f64::from(1 + lp.d.min(lp.mx)) / 2.0 * 2f64.powf(-(f + f64::from(LUT_SLACK)))
                + 2f64.powf(-f);
        }
        let n = self.method.squarings();
        // ulps of the base: 1 (Squaring, Taylor2) or below 3.3 (Fit2: `a s`, `g s` and
        // `c s^2` rounded, the fused square within 0.3), amplified by at most `2^n`, plus one
        // per squaring (Fit2: below 1.6 for a fused one); `2^n * base + 2` covers both:
        // Fit2 at n = 4 needs 3.3 * 16 + 1.6 * (8 + 4 + 2 + 1) = 76.8 <= 5 * 16 + 2
        let base = if matches!(self.method, ExpMethod::Fit2 { .. }) {
            5.0
        } else {
            2.0
        };
        self.method.approx_error()
            + (f64::from(1u32 << n.min(30)) * base + 2.0) / (1u64 << self.frac) as f64
    }

    fn check(self, ring: Ring, f_in: u32) -> Result<()> {
        let l = ring.bits();
        if let ExpMethod::Lut { .. } = self.method {
            return LutPlan::of(self).check(l, f_in);
        }
        let n = self.method.squarings();
        if 2 * self.frac + 2 > l || n > 16 || f_in + n + 2 > l {
            return Err(bad(format!(
                "exp with {} fractional bits, {n} squarings, input with {f_in} fractional bits \
                 in Z_2^{l}: need 2F + 2 <= l, n <= 16 and f_in + n + 2 <= l",
                self.frac
            )));
        }
        if let ExpMethod::Fit2 { a_q, g_q, .. } = self.method {
            let q = 1u16 << FIT_BITS;
            if self.frac + FIT_BITS + 2 > l
                || l > 2 * self.frac + 4
                || self.frac < 7
                || a_q >= q
                || g_q >= q
                || a_q == 0
                || g_q == 0
            {
                return Err(bad(format!(
                    "exp Fit2 with coefficients {a_q}, {g_q} (need 0 < q < 1024) and {} \
                     fractional bits in Z_2^{l} (need F >= 7, F + 12 <= l <= 2F + 4)",
                    self.frac
                )));
            }
        }
        Ok(())
    }
}

/// The fused squarings of [`ExpMethod::Fit2`]: virtual ring `2F + 2`, division by
/// `2^d` inside the products ([`square_trunc`], `d = min(F - 2, 2F - 14)` so that the
/// result ring has at least 16 bits: `d = 8` at `F = 11`), then an unbiased rounding by
/// `F - d` bits.
#[derive(Clone, Copy, Debug)]
struct Fuse {
    lv: u32,
    d: u32,
    frac: u32,
    /// The smallest value of the base `1 - a s + c s^2` on `s in [0, 1]`.
    p_min: f64,
}

impl Fuse {
    fn new(params: ExpParams) -> Self {
        let f = params.frac;
        let p_min = match params.method {
            ExpMethod::Fit2 { a_q, g_q, .. } => {
                let q = f64::from(1u32 << FIT_BITS);
                let (a, g) = (f64::from(a_q) / q, f64::from(g_q) / q);
                let c = g * g / 2.0;
                if a < 2.0 * c {
                    1.0 - a * a / (4.0 * c)
                } else {
                    1.0 - a + c
                }
            }
            _ => 0.0,
        };
        // the output ring Z_2^{lv - d} needs at least 16 bits
        Self {
            lv: 2 * f + 2,
            d: f.saturating_sub(2).min((2 * f + 2).saturating_sub(16)),
            frac: f,
            p_min,
        }
    }

    /// The offset (in units of the result) that keeps a fused square's value, at least
    /// `-(d + 1) / 2` units of `2^d`, non-negative before a truncation by `f - d` bits.
    fn j(&self, f: u32) -> i64 {
        let e = i64::from(self.d + 2) / 2 + 1;
        let u = 1i64 << (f - self.d);
        (e + u - 1) / u
    }

    /// Whether squaring `i` (0-based) may be fused: its input is at least
    /// `p_min^(2^i)` minus `4 * 2^i` ulps of rounding, and the square of that must exceed
    /// `2 (d + 1)` units of `2^d`, so that the fused (slightly inexact) result stays
    /// non-negative for the next narrow square (the last squarings, whose inputs may be near
    /// 0, are therefore exact).
    fn fused(&self, i: u32) -> bool {
        let one = f64::from(1u32 << self.frac.min(30));
        let lb = self.p_min.powi(1 << i.min(16)) * one - 4.0 * f64::from(1u32 << i.min(16));
        lb > 0.0 && lb * lb / f64::from(1u32 << self.d.min(30)) >= 2.0 * f64::from(self.d + 1)
    }
}

/// Shares of `exp(x)` (fractional bits `params.frac`, same ring) for shared `x <= 0` with
/// `f_in` fractional bits and `x >= -2^{l-2}` (one ring quarter, for the clipping ReLU).
/// Positive inputs are outside the domain (the result is then not meaningful).
///
/// Protocol: `u = ReLU(x + 2^n)` (clipping; DReLU + mux), reinterpretation of `u` as
/// `b = u / 2^n in [0, 1]` with `F` fractional bits (a [`trunc_pos`] when `f_in + n > F`,
/// a free shift otherwise); for [`ExpMethod::Taylor2`] `b <- b + (b-1)^2/2` (one [`square`],
/// one [`trunc_pos`]); then `n` times `b <- trunc_pos(square(b), F)`. Every intermediate is
/// non-negative, so each truncation is a single COT over `Z_2^F` ([`TruncMode::KnownMsb`]) and
/// each square a single one-directional Gilboa product: the cheapest available products.
/// For [`ExpMethod::Fit2`]: `s = 1 - b`, `a s` and `g s` (one batched [`trunc_pos`] by 10
/// bits), `b <- 1 - a s + (g s)^2 / 2` and the squarings by [`square_trunc`]: with a fused
/// truncation (`d = min(F - 2, 2F - 14)`, result ring `2F + 2 - d` bits, then an unbiased
/// [`trunc_offset`] by `F - d` bits) where a proven lower bound of the input keeps the
/// result non-negative (the base's square, and the first squarings), exact otherwise
/// (the last ones; one COT bit narrower than [`square_pos`]), the result extended back to
/// the input ring if it ended in the narrower one.
/// For [`ExpMethod::Lut`] (no clipping ReLU, no squarings): a split of the shares, one
/// comparison on their high parts, a 1-of-`2^m` table lookup and one one-sided product, see
/// there.
/// Error: at most [`ExpParams::error_bound`] (for `Fit2`: rounding of the fused squares
/// within `(d + 1) / 2` units of `2^d`, i.e. below one ulp each, counted in its base term).
/// Security: semi-honest, 128-bit. Cost: [`exp_cost`].
pub fn exp<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f_in: u32,
    params: ExpParams,
) -> Result<AShare> {
    let ring = x.ring();
    params.check(ring, f_in)?;
    if x.is_empty() {
        return Ok(x.clone());
    }
    if let ExpMethod::Lut { .. } = params.method {
        return exp_lut(s, ch, x, f_in, LutPlan::of(params));
    }
    let n = params.method.squarings();
    let ff = params.frac;
    let shifted = add_const(x, s.role(), 1i64 << (f_in + n))?;
    let u = nl::relu(s, ch, &shifted)?;
    // b = u / 2^n with F fractional bits
    let mut b = if f_in + n > ff {
        nl::trunc(s, ch, &u, f_in + n - ff, TruncMode::KnownMsb(false))?
    } else {
        u.mul_public(1i64 << (ff - f_in - n))
    };
    if let ExpMethod::Taylor2 { .. } = params.method {
        // (b - 1)^2 = (1 - b)^2 with 1 - b in [0, 1]
        let t = add_const(&b.neg(), s.role(), 1i64 << ff)?;
        let t2 = square_pos(s, ch, &t, ff + 2)?;
        let t2 = trunc_pos(s, ch, &t2, ff + 1)?;
        b = b.add(&t2)?;
    }
    if let ExpMethod::Fit2 { a_q, g_q, .. } = params.method {
        // s = 1 - b in [0, 1] (one ulp more when the truncation above gave -1); `a s` and
        // `g s` by public products and one batched truncation by 10 bits (both products
        // stay below 2^{F + 11} <= 2^{l-1}); then `c s^2 = (g s)^2 / 2` by a fused square
        // (exact to (d + 1) / 2 units of 2^d, possibly slightly negative near s = 0, which
        // is harmless: it is added to 1 - a s >= 1 - a)
        let fz = Fuse::new(params);
        let sv = add_const(&b.neg(), s.role(), 1i64 << ff)?;
        let both: Vec<u64> = sv
            .mul_public(i64::from(a_q))
            .data()
            .iter()
            .chain(sv.mul_public(i64::from(g_q)).data())
            .copied()
            .collect();
        let tr = trunc_pos(
            s,
            ch,
            &AShare::new(ring, vec![2 * x.len()], both)?,
            FIT_BITS,
        )?;
        let (a_s, g_s) = tr.data().split_at(x.len());
        let g_s = AShare::new(ring, vec![x.len()], g_s.to_vec())?;
        let sq = square_trunc(s, ch, &g_s, ff + 2, fz.lv, fz.d)?;
        let c_s2 = trunc_offset(s, ch, &sq, ff + 1 - fz.d, fz.j(ff + 1))?;
        let a_s = nl::reduce(
            &AShare::new(ring, vec![x.len()], a_s.to_vec())?,
            c_s2.ring(),
        )?;
        b = add_const(&c_s2.sub(&a_s)?, s.role(), 1i64 << ff)?;
        for i in 0..n {
            b = if fz.fused(i) {
                let sq = square_trunc(s, ch, &b, ff + 2, fz.lv, fz.d)?;
                trunc_offset(s, ch, &sq, ff - fz.d, fz.j(ff))?
            } else {
                let sq = square_trunc(s, ch, &b, ff + 2, ring.bits(), 0)?;
                trunc_pos(s, ch, &sq, ff)?
            };
        }
        if b.ring() != ring {
            b = extend_pos(s, ch, &b, ring)?;
        }
        return AShare::new(ring, x.shape().to_vec(), b.into_data());
    }
    for _ in 0..n {
        let sq = square_pos(s, ch, &b, ff + 2)?;
        b = trunc_pos(s, ch, &sq, ff)?;
    }
    Ok(b)
}

/// Exact bytes (rounds: an upper bound) of [`exp`] on `n` elements of `ring`.
pub fn exp_cost(n: usize, ring: Ring, f_in: u32, params: ExpParams, cfg: NlConfig) -> Cost {
    if n == 0 {
        return Cost::default();
    }
    if let ExpMethod::Lut { .. } = params.method {
        return exp_lut_cost(n, ring, f_in, LutPlan::of(params), cfg);
    }
    let k = params.method.squarings();
    let ff = params.frac;
    let mut c = nl::relu_cost(n, ring, cfg);
    if f_in + k > ff {
        c = c + nl::trunc_cost(n, ring, f_in + k - ff, TruncMode::KnownMsb(false), cfg);
    }
    if matches!(params.method, ExpMethod::Fit2 { .. }) {
        let fz = Fuse::new(params);
        let lo = Ring::new(fz.lv - fz.d).unwrap_or(ring);
        c = c
            + trunc_pos_cost(2 * n, ring, FIT_BITS, cfg)
            + square_trunc_cost(n, ff + 2, fz.lv, fz.d, cfg)
            + trunc_pos_cost(n, lo, ff + 1 - fz.d, cfg);
        let mut last = lo;
        for i in 0..k {
            if fz.fused(i) {
                c = c
                    + square_trunc_cost(n, ff + 2, fz.lv, fz.d, cfg)
                    + trunc_pos_cost(n, lo, ff - fz.d, cfg);
                last = lo;
            } else {
                c = c
                    + square_trunc_cost(n, ff + 2, ring.bits(), 0, cfg)
                    + trunc_pos_cost(n, ring, ff, cfg);
                last = ring;
            }
        }
        if last != ring {
            c = c + extend_pos_cost(n, last, ring, cfg);
        }
        return c;
    }
    let squares = k + u32::from(!matches!(params.method, ExpMethod::Squaring { .. }));
    for i in 0..squares {
        let f = if i == 0 && squares > k { ff + 1 } else { ff };
        c = c + square_pos_cost(n, ring, ff + 2, cfg) + trunc_pos_cost(n, ring, f, cfg);
    }
    c
}

/// The slack bits of [`ExpMethod::Lut`]'s product: `E' C` is divided by `2^d` inside the
/// product down to `F + LUT_SLACK` fractional bits, then rounded by `LUT_SLACK` bits.
const LUT_SLACK: u32 = 4;

/// The public sizes of [`ExpMethod::Lut`] (shared by the protocol, its cost and its bound).
#[derive(Clone, Copy, Debug)]
struct LutPlan {
    step: i32,
    m: u32,
    guard: u32,
    frac: u32,
    /// Fractional bits of the table entries and of the receiver's factor (`F + guard`).
    fe: u32,
    /// Bits of the narrow table value `E' < 2^{mx - 1}` (its shares are read mod `2^mx`).
    mx: u32,
    /// Fused truncation of the product (`2 fe - F - LUT_SLACK`).
    d: u32,
    /// The product's ring (`F + LUT_SLACK + 2` bits, at least 16).
    lo: u32,
}

impl LutPlan {
    fn of(params: ExpParams) -> Self {
        let (step, m, guard) = match params.method {
            ExpMethod::Lut {
                step,
                index_bits,
                guard,
            } => (i32::from(step), u32::from(index_bits), u32::from(guard)),
            _ => (0, 0, 0),
        };
        let frac = params.frac;
        let fe = frac + guard;
        // integer bits of e^{Δ/2} plus one rounding unit
        let h = (2f64.powi(step) / 2.0).exp() + 2f64.powi(-(fe.min(60) as i32));
        let ib = (h.log2().floor() as u32) + 1;
        let mx = fe + ib + 1;
        Self {
            step,
            m,
            guard,
            frac,
            fe,
            mx,
            d: (2 * fe).saturating_sub(frac + LUT_SLACK),
            lo: (frac + LUT_SLACK + 2).max(Ring::MIN_BITS),
        }
    }

    fn delta(&self) -> f64 {
        2f64.powi(self.step)
    }

    fn half_step_exp(&self) -> f64 {
        (self.delta() / 2.0).exp()
    }

    /// The split position `p = f_in + step` of the shares.
    fn split(&self, f_in: u32) -> Option<u32> {
        u32::try_from(i64::from(f_in) + i64::from(self.step))
            .ok()
            .filter(|&p| p >= 1)
    }

    fn check(&self, l: u32, f_in: u32) -> Result<()> {
        let p = self.split(f_in);
        let ok = (-2..=3).contains(&self.step)
            && (1..=8).contains(&self.m)
            && self.guard <= 8
            && self.frac >= 1
            && self.frac + 2 * self.guard >= LUT_SLACK
            && p.is_some_and(|p| p + self.m + 2 <= l)
            && self.lo <= l
            && self.mx <= 62
            && self.d <= self.mx
            && self.lo + self.d > self.mx;
        if !ok {
            return Err(bad(format!(
                "exp Lut with step {}, {} index bits, guard {}, F = {}, input with {f_in} \
                 fractional bits in Z_2^{l}: need step in -2..=3, 1 <= m <= 8, guard <= 8, \
                 f_in + step >= 1, f_in + step + m + 2 <= l, F + {} <= l",
                self.step,
                self.m,
                self.guard,
                self.frac,
                LUT_SLACK + 2
            )));
        }
        Ok(())
    }

    fn table_ring(&self) -> Result<Ring> {
        Ring::new(self.mx.max(Ring::MIN_BITS))
    }
}

/// [`exp`] with [`ExpMethod::Lut`] (see there for the method; `plan` already checked).
///
/// Protocol: `u = -x`; each party splits its share at `p = f_in + step`: `u_i = K_i 2^p +
/// r_i`. (1) Clip bit `b = 1{K' <= 2^m - 2} = MSB(K + 1 - 2^m)` in `Z_2^q`, `q = l - p - 1`
/// (enough for `K'` in `[-1, 2^{l-2-p})`): one [`nl::millionaire`] on the carry of the low
/// `q - 1` bits. (2) `E' = T[K' mod 2^m] B(r_S)` at `F + g` fractional bits by one
/// [`nl::lut`] (the OT sender's table rotated by its `K_S` and scaled by its `B(r_S)`).
/// (3) `E' C(r_R) / 2^d` by [`mul_held_trunc`] (`C` known to the OT receiver; `F + 4`
/// fractional bits in `Z_2^lo`). (4) [`trunc_offset`] by 4 bits (unbiased), [`nl::mux`] with
/// `b`, and [`extend_pos`] back to the input ring.
/// Security: semi-honest, 128-bit (every step's). Cost: [`exp_cost`].
fn exp_lut<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    f_in: u32,
    lp: LutPlan,
) -> Result<AShare> {
    let ring = x.ring();
    let l = ring.bits();
    let role = s.role();
    let p = lp
        .split(f_in)
        .ok_or_else(|| bad(format!("exp Lut: split of {f_in}-bit inputs")))?;
    let q = l - p - 1;
    let m = lp.m;
    let qm = (1u64 << q) - 1;
    let h = qm >> 1;
    let u: Vec<u64> = x.data().iter().map(|&v| ring.neg(v)).collect();
    // 1. the clip bit
    let w: Vec<u64> = u
        .iter()
        .map(|&v| {
            let k = v >> p;
            if role == Role::Server {
                k.wrapping_add(1).wrapping_sub(1u64 << m) & qm
            } else {
                k & qm
            }
        })
        .collect();
    let inp: Vec<u64> = w
        .iter()
        .map(|&v| {
            if role == Role::Server {
                h - (v & h)
            } else {
                v & h
            }
        })
        .collect();
    let carry = nl::millionaire(s, ch, &inp, q - 1, nl::CmpMode::Lt)?.to_bits();
    let b: Vec<bool> = carry
        .iter()
        .zip(&w)
        .map(|(&c, &v)| c ^ ((v >> (q - 1)) & 1 == 1))
        .collect();
    // 2. the table lookup
    let sender = s.config().ot_sender;
    let delta = lp.delta();
    let rmask = (1u64 << p) - 1;
    let unit = 2f64.powi(-(f_in as i32));
    let factor = move |v: u64| (delta / 2.0 - (v & rmask) as f64 * unit).exp();
    let big = 1u64 << m;
    let tab: Vec<f64> = (0..big)
        .map(|j| {
            let k = if j + 1 == big { -1.0 } else { j as f64 };
            (-(k + 1.0) * delta).exp()
        })
        .collect();
    let one = 2f64.powi(lp.fe as i32);
    let idx: Vec<u64> = u.iter().map(|&v| v >> p).collect();
    let tr = lp.table_ring()?;
    // stochastic rounding (a fresh uniform threshold per element, private to the party that
    // rounds): the rounded entries are unbiased, so that the many tiny entries of a row (a
    // fraction of an ulp each) do not all round the same way
    let nu: Vec<f64> = (0..u.len())
        .map(|_| (s.rng().next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .collect();
    let e = if role == sender {
        let bs: Vec<f64> = u.iter().map(|&v| factor(v) * one).collect();
        let t = |i: usize, j: u64| -> u64 {
            let bv = bs.get(i).copied().unwrap_or(0.0);
            let tv = tab.get(j as usize).copied().unwrap_or(0.0);
            (bv * tv + nu.get(i).copied().unwrap_or(0.0)).floor() as u64
        };
        nl::lut(s, ch, &idx, m, tr, Some(&t))?
    } else {
        nl::lut(s, ch, &idx, m, tr, None)?
    };
    // 3. the receiver's factor
    let cs: Option<Vec<u64>> = (role != sender).then(|| {
        u.iter()
            .zip(&nu)
            .map(|(&v, &t)| (factor(v) * one + t).floor() as u64)
            .collect()
    });
    let prod = mul_held_trunc(s, ch, &e, lp.mx, sender.peer(), cs.as_deref(), lp.lo, lp.d)?;
    // 4. rounding to F bits (result >= -1), the clip, back to the input ring
    let y = trunc_offset(s, ch, &prod, LUT_SLACK, 1)?;
    let y = nl::mux(s, ch, &BShare::from_bits(&b), &y)?;
    let y = if y.ring() == ring {
        y
    } else {
        add_const(
            &extend_pos(s, ch, &add_const(&y, role, 1)?, ring)?,
            role,
            -1,
        )?
    };
    AShare::new(ring, x.shape().to_vec(), y.into_data())
}

/// Exact bytes (rounds: an upper bound) of [`exp_lut`].
fn exp_lut_cost(n: usize, ring: Ring, f_in: u32, lp: LutPlan, cfg: NlConfig) -> Cost {
    let l = ring.bits();
    let (Some(p), Ok(tr), Ok(lo)) = (lp.split(f_in), lp.table_ring(), Ring::new(lp.lo)) else {
        return Cost::default();
    };
    if lp.check(l, f_in).is_err() {
        return Cost::default();
    }
    let q = l - p - 1;
    let mut c = nl::millionaire_cost(n, q - 1, nl::CmpMode::Lt, cfg)
        + nl::lut_cost(n, lp.m, tr, cfg)
        + mul_held_trunc_cost(n, lp.mx, cfg.ot_sender.peer(), lp.lo, lp.d, cfg)
        + trunc_pos_cost(n, lo, LUT_SLACK, cfg)
        + nl::mux_cost(n, lo, cfg);
    if lo != ring {
        c = c + extend_pos_cost(n, lo, ring, cfg);
    }
    c
}

fn mul_held_applies(bx: u32, mx: u32, lo: u32, d: u32) -> bool {
    (2..=62).contains(&mx)
        && bx >= mx
        && (Ring::MIN_BITS..=62).contains(&lo)
        && d <= mx
        && lo + d > mx
}

/// Shares of `x y / 2^d` in `Z_2^lo` for shared `x` in `[0, 2^{mx-1})` (shares in any ring of
/// at least `mx` bits) and `y` known to `holder` only (`holder` passes `Some(y)`, its peer
/// `None`; any `u64`, only `y mod 2^{lo + d}` matters): a product with one private factor and
/// a fused truncation, e.g. a table value times a factor that only one party can compute.
///
/// Protocol: with shares kept mod `2^mx` and the wrap `w = a_H ∨ a_O` of their MSBs (`x`
/// below `2^{mx-1}`), `x y = x_H y + x_O y - 2^mx (a_H y + (1 - a_H) a_O y)`. The holder `H`
/// computes its terms locally (`x_H y / 2^d` rounded); `x_O y / 2^d` by one-directional Gilboa:
/// for bit `k` of `x_O` one COT with `H` as sender carrying `round(y / 2^{d-k})` over `Z_2^lo`
/// (`k < d`) or `y` over `Z_2^{lo-(k-d)}` (shifted by `k - d`); the wrap term `(1 - a_H) y a_O`
/// by one COT over `Z_2^{lo+d-mx}` (`O` chooses with `a_O`). `mx + 1` COTs per element, all
/// with `H` as sender, one flight each way. Error: at most `(1 + min(d, mx)) / 2` units of
/// `2^d`, on average about 0 (ties as in [`mul_trunc`]); exact for `d = 0`.
/// Security: semi-honest, 128-bit (a COT per bit; `y` and `x_H` stay private).
/// Cost: [`mul_held_trunc_cost`].
#[allow(clippy::too_many_arguments)]
pub fn mul_held_trunc<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    mx: u32,
    holder: Role,
    y: Option<&[u64]>,
    lo: u32,
    d: u32,
) -> Result<AShare> {
    if !mul_held_applies(x.ring().bits(), mx, lo, d) {
        return Err(bad(format!(
            "mul_held_trunc of {mx}-bit values from Z_2^{} into Z_2^{lo} / 2^{d}",
            x.ring().bits()
        )));
    }
    let out = Ring::new(lo)?;
    let n = x.len();
    if s.role() == holder && y.is_none_or(|y| y.len() != n) {
        return Err(MpcError::ShapeMismatch {
            what: format!("mul_held_trunc: the holder's factors for {n} values"),
        });
    }
    if n == 0 {
        return AShare::new(out, x.shape().to_vec(), vec![]);
    }
    s.reserve(
        ch,
        mul_held_trunc_cost(n, mx, holder, lo, d, s.config()).cots,
    )?;
    let xm = (1u64 << mx) - 1;
    let xs: Vec<u64> = x.data().iter().map(|&v| v & xm).collect();
    let mu = mx as usize;
    let per = mu + 1;
    let ww = lo + d - mx;
    let wm = (1u64 << ww) - 1;
    let shift = move |k: u32| k.saturating_sub(d);
    let width = move |j: usize| {
        let k = (j % per) as u32;
        if k < mx {
            lo - shift(k)
        } else {
            ww
        }
    };
    let fold = |c: &[u64]| {
        c.iter()
            .take(mu)
            .enumerate()
            .fold(0u64, |acc, (k, &v)| acc.wrapping_add(v << shift(k as u32)))
    };
    let res: Vec<u64> = match (s.role() == holder, y) {
        (true, Some(y)) => {
            let mut corr = Vec::with_capacity(n * per);
            for (&xv, &yv) in xs.iter().zip(y) {
                let a = (xv >> (mx - 1)) & 1 == 1;
                corr.extend((0..mx).map(|k| {
                    let c = if k >= d {
                        u128::from(yv)
                    } else {
                        round_shift(u128::from(yv), d - k, tie_up(d - k))
                    };
                    (c as u64) & (out.mask() >> shift(k))
                }));
                corr.push(if a { 0 } else { yv & wm });
            }
            let sent = s.cot_send(ch, &corr, width)?;
            let up = s.role() == Role::Server;
            sent.chunks(per)
                .zip(xs.iter().zip(y))
                .map(|(a, (&xv, &yv))| {
                    let am = (xv >> (mx - 1)) & 1 == 1;
                    let wa = a.get(mu).copied().unwrap_or(0);
                    let t = (if am { yv } else { 0 }).wrapping_sub(wa) & wm;
                    let loc =
                        out.reduce(round_shift(u128::from(xv) * u128::from(yv), d, up) as u64);
                    out.sub(out.sub(loc, out.reduce(fold(a))), out.reduce(t << (mx - d)))
                })
                .collect()
        }
        _ => {
            let choices: Vec<bool> = xs
                .iter()
                .flat_map(|&v| {
                    (0..mx)
                        .map(move |k| (v >> k) & 1 == 1)
                        .chain([(v >> (mx - 1)) & 1 == 1])
                })
                .collect();
            let r = s.cot_recv(ch, &choices, width)?;
            r.chunks(per)
                .map(|c| {
                    let g = c.get(mu).copied().unwrap_or(0) & wm;
                    out.sub(out.reduce(fold(c)), out.reduce(g << (mx - d)))
                })
                .collect()
        }
    };
    AShare::new(out, x.shape().to_vec(), res)
}

/// Exact cost of [`mul_held_trunc`] on `n` elements (zero when the parameters are rejected).
pub fn mul_held_trunc_cost(
    n: usize,
    mx: u32,
    holder: Role,
    lo: u32,
    d: u32,
    cfg: NlConfig,
) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_mul_held_trunc(&mut t, n, mx, holder, lo, d);
    t.cost()
}

/// [`mul_held_trunc_cost`] on a tape (the holder is the COT sender).
pub fn tape_mul_held_trunc(t: &mut Tape, n: usize, mx: u32, holder: Role, lo: u32, d: u32) {
    if n == 0 || !mul_held_applies(mx, mx, lo, d) {
        return;
    }
    let per = mx as usize + 1;
    let ww = lo + d - mx;
    NlSession::tape_cot(t, holder, n * per, per, move |j| {
        let k = (j % per) as u32;
        if k < mx {
            lo - k.saturating_sub(d)
        } else {
            ww
        }
    });
}

/// Boolean shares of `1{x >= 2^j}` for every element and every `j` in `js` (element-major
/// within each `j`: result `[j_index * n + i]`), from one batched DReLU on `x - 2^j`; exact
/// for `0 <= x < 2^{l-1} - 2^j`.
pub(crate) fn geq_pow2<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    x: &AShare,
    js: &[u32],
) -> Result<BShare> {
    let ring = x.ring();
    let n = x.len();
    let mut all = Vec::with_capacity(n * js.len());
    for &j in js {
        let d = add_const(x, s.role(), -(1i64 << j))?;
        all.extend_from_slice(d.data());
    }
    let total = all.len();
    nl::drelu(s, ch, &AShare::new(ring, vec![total], all)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nonlinear::CotCount;
    use crate::{FixedPoint, Prg};
    use duet_transport::MemoryChannel;

    /// The one traffic-measuring helper of this file: runs `f` for both parties after setup.
    fn run2<T: Send>(
        cfg: NlConfig,
        need: CotCount,
        f: impl Fn(Role, &mut NlSession, &mut MemoryChannel) -> T + Sync,
    ) -> (T, T, Cost) {
        crate::nonlinear::run_measured(7, cfg, need, f)
    }

    fn cfgs() -> [NlConfig; 2] {
        [
            NlConfig::default(),
            NlConfig {
                ot_sender: Role::Client,
                ..NlConfig::default()
            },
        ]
    }

    fn pick<'a>(role: Role, a: &'a AShare, b: &'a AShare) -> &'a AShare {
        if role == Role::Server {
            a
        } else {
            b
        }
    }

    fn m2_of(l: u32) -> u32 {
        l - (l / 2 + 2) + 1 + (l % 3)
    }

    #[test]
    fn square_mul_known_extend_exact() {
        let mut prg = Prg::from_seed([3; 32]);
        type Case = (
            Ring,
            Ring,
            Vec<u64>,
            Vec<u64>,
            Vec<u64>,
            [AShare; 8],
            [Vec<u64>; 2],
        );
        let cases: Vec<Case> = [16u32, 29, 64]
            .iter()
            .map(|&l| {
                let ring = Ring::new(l).unwrap();
                let mut xs = prg.ring_elements(ring, 40);
                xs.extend([0, 1, ring.mask(), ring.mask() >> 1, 1 << (l - 1)]);
                let n = xs.len();
                let c = prg.ring_elements(ring, n);
                let (x0, x1) = AShare::share(ring, vec![n], &xs, &mut prg).unwrap();
                // non-negative values for extend_pos
                let pos: Vec<u64> = xs.iter().map(|&v| v & (ring.mask() >> 1)).collect();
                let (p0, p1) = AShare::share(ring, vec![n], &pos, &mut prg).unwrap();
                let to = Ring::new((l + 7).min(64)).unwrap();
                // narrow non-negative values for square_pos with m = l/2 + 2
                let m = l / 2 + 2;
                let narrow: Vec<u64> = xs.iter().map(|&v| v & ((1u64 << (m - 1)) - 1)).collect();
                let (q0, q1) = AShare::share(ring, vec![n], &narrow, &mut prg).unwrap();
                // a second narrow factor for mul_pos with m' = l - m + 1 + (l % 3)
                let m2 = l - m + 1 + (l % 3);
                let narrow2: Vec<u64> = c.iter().map(|&v| v & ((1u64 << (m2 - 1)) - 1)).collect();
                let (r0, r1) = AShare::share(ring, vec![n], &narrow2, &mut prg).unwrap();
                (
                    ring,
                    to,
                    xs,
                    c,
                    pos,
                    [x0, x1, p0, p1, q0, q1, r0, r1],
                    [narrow, narrow2],
                )
            })
            .collect();
        for cfg in cfgs() {
            let mut want = Cost::default();
            for (ring, to, xs, _, _, _, _) in &cases {
                let n = xs.len();
                want = want
                    + square_pos_cost(n, *ring, ring.bits() / 2 + 2, cfg)
                    + mul_pos_cost(n, *ring, ring.bits() / 2 + 2, m2_of(ring.bits()), cfg)
                    + square_cost(n, *ring, cfg)
                    + mul_known_cost(n, *ring, Role::Server, cfg)
                    + extend_pos_cost(n, *ring, *to, cfg);
            }
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                cases
                    .iter()
                    .map(|(ring, to, _, c, _, [x0, x1, p0, p1, q0, q1, r0, r1], _)| {
                        let m = ring.bits() / 2 + 2;
                        let sp = square_pos(s, ch, pick(role, q0, q1), m).unwrap();
                        let m2 = m2_of(ring.bits());
                        let mp =
                            mul_pos(s, ch, pick(role, q0, q1), m, pick(role, r0, r1), m2).unwrap();
                        let sq = square(s, ch, pick(role, x0, x1)).unwrap();
                        let cc = (role == Role::Server).then_some(c.as_slice());
                        let mk = mul_known(s, ch, pick(role, x0, x1), Role::Server, cc).unwrap();
                        let e = extend_pos(s, ch, pick(role, p0, p1), *to).unwrap();
                        (sq, mk, e, sp, mp)
                    })
                    .collect::<Vec<_>>()
            });
            for (k, (ring, _, xs, c, pos, _, [narrow, narrow2])) in cases.iter().enumerate() {
                let sp = a[k].3.reconstruct(&b[k].3).unwrap();
                let mp = a[k].4.reconstruct(&b[k].4).unwrap();
                let sq = a[k].0.reconstruct(&b[k].0).unwrap();
                let mk = a[k].1.reconstruct(&b[k].1).unwrap();
                let e = a[k].2.reconstruct(&b[k].2).unwrap();
                for i in 0..xs.len() {
                    assert_eq!(sq[i], ring.mul(xs[i], xs[i]));
                    assert_eq!(mk[i], ring.mul(xs[i], c[i]));
                    assert_eq!(e[i], pos[i]);
                    assert_eq!(sp[i], ring.mul(narrow[i], narrow[i]), "l {}", ring.bits());
                    assert_eq!(mp[i], ring.mul(narrow[i], narrow2[i]), "l {}", ring.bits());
                }
            }
            assert_eq!(cost.bytes, want.bytes);
            assert!(cost.rounds <= want.rounds);
        }
    }

    #[test]
    fn exp_accuracy_and_cost() {
        let mut prg = Prg::from_seed([4; 32]);
        let f_in = 12;
        let cases = [
            (ExpMethod::Squaring { n: 6 }, 14u32, 30u32),
            (ExpMethod::Taylor2 { n: 5 }, 11, 24),
            (ExpMethod::Squaring { n: 8 }, 16, 34),
            (ExpMethod::DUET, 11, 24),
            (ExpMethod::DUET, 10, 22),
            (ExpMethod::DUET_LUT, 15, 24),
            (
                ExpMethod::Lut {
                    step: 0,
                    index_bits: 4,
                    guard: 2,
                },
                13,
                24,
            ),
            (
                ExpMethod::Lut {
                    step: -1,
                    index_bits: 5,
                    guard: 0,
                },
                12,
                24,
            ),
        ];
        // inputs per case: a grid of [-40, 0], edge values, far below the clipping bound,
        // random values, all with uniformly random shares
        let inputs: Vec<(Vec<f64>, Vec<u64>, AShare, AShare)> = cases
            .iter()
            .map(|&(_, _, l)| {
                let ring = Ring::new(l).unwrap();
                let fx = FixedPoint::new(ring, f_in).unwrap();
                let mut xs: Vec<f64> = (0..200)
                    .map(|i| -(i as f64) * 0.2)
                    .chain([0.0, -1e-4, -0.69, -2.0, -3.0, -60.0, -1000.0])
                    .collect();
                xs.extend((0..100).map(|_| -((prg.ring_element(ring) % 40_000) as f64) / 1000.0));
                let enc = fx.encode_all(&xs);
                let (x0, x1) = AShare::share(ring, vec![enc.len()], &enc, &mut prg).unwrap();
                (xs, enc, x0, x1)
            })
            .collect();
        for cfg in cfgs() {
            let mut want = Cost::default();
            for (&(method, frac, l), (_, enc, _, _)) in cases.iter().zip(&inputs) {
                let params = ExpParams { method, frac };
                want = want + exp_cost(enc.len(), Ring::new(l).unwrap(), f_in, params, cfg);
            }
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                cases
                    .iter()
                    .zip(&inputs)
                    .map(|(&(method, frac, _), (_, _, x0, x1))| {
                        exp(s, ch, pick(role, x0, x1), f_in, ExpParams { method, frac }).unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            for (i, (&(method, frac, l), (xs, enc, _, _))) in cases.iter().zip(&inputs).enumerate()
            {
                let ring = Ring::new(l).unwrap();
                let fx = FixedPoint::new(ring, f_in).unwrap();
                let fo = FixedPoint::new(ring, frac).unwrap();
                let y = fo.decode_all(&a[i].reconstruct(&b[i]).unwrap());
                let bound = ExpParams { method, frac }.error_bound();
                let mut worst: f64 = 0.0;
                for (j, &x) in xs.iter().enumerate() {
                    let err = (y[j] - fx.decode(enc[j]).exp()).abs();
                    worst = worst.max(err);
                    assert!(
                        err <= bound,
                        "{method:?} x={x} got {} err {err} > {bound}",
                        y[j]
                    );
                }
                assert!(worst > 0.0);
            }
            assert_eq!(cost.bytes, want.bytes);
            assert!(cost.rounds <= want.rounds);
        }
    }

    /// `v` of `ring` as a signed integer.
    fn signed(ring: Ring, v: u64) -> i128 {
        let v = i128::from(ring.reduce(v));
        if v >= 1i128 << (ring.bits() - 1) {
            v - (1i128 << ring.bits())
        } else {
            v
        }
    }

    /// The fused products and the unbiased truncation: random narrow values plus the
    /// extremes (0, 1, the largest allowed), uniformly random shares in rings wider than the
    /// values; error bounds of the doc comments asserted (exact for `d = 0`), the average
    /// error of [`trunc_offset`] on a constant asserted below 0.03 ulp, bytes equal to cost.
    #[test]
    fn fused_products_and_trunc_offset() {
        let mut prg = Prg::from_seed([5; 32]);
        // (input ring bits, m, virtual ring, d)
        let sq_cases = [
            (24u32, 13u32, 24u32, 8u32),
            (16, 13, 24, 0),
            (40, 20, 40, 13),
        ];
        // (ring bits of x, mx, ring bits of y, my, virtual ring, d)
        let mul_cases = [
            (24u32, 13u32, 24u32, 18u32, 28u32, 11u32),
            (16, 13, 24, 18, 28, 0),
            (24, 18, 16, 13, 28, 7),
        ];
        let narrow = |prg: &mut Prg, m: u32, n: usize| -> Vec<u64> {
            let mut v: Vec<u64> = (0..n)
                .map(|_| prg.ring_element(Ring::z64()) & ((1u64 << (m - 1)) - 1))
                .collect();
            v.extend([0, 1, (1u64 << (m - 1)) - 1, 1u64 << (m - 2)]);
            v
        };
        let share = |prg: &mut Prg, bits: u32, v: &[u64]| {
            AShare::share(Ring::new(bits).unwrap(), vec![v.len()], v, prg).unwrap()
        };
        let sq_in: Vec<_> = sq_cases
            .iter()
            .map(|&(b, m, _, _)| {
                let v = narrow(&mut prg, m, 300);
                let sh = share(&mut prg, b, &v);
                (v, sh)
            })
            .collect();
        let mul_in: Vec<_> = mul_cases
            .iter()
            .map(|&(bx, mx, by, my, _, _)| {
                let (vx, vy) = (narrow(&mut prg, mx, 300), narrow(&mut prg, my, 300));
                let (sx, sy) = (share(&mut prg, bx, &vx), share(&mut prg, by, &vy));
                (vx, vy, sx, sy)
            })
            .collect();
        // trunc_offset: x = 5 - 16 (j = 1, f = 4: the smallest allowed is 1 - 16) and x = 5,
        // 2000 times each, in a 20-bit ring
        let tr = Ring::new(20).unwrap();
        let tv: Vec<u64> = (0..4000)
            .map(|i| if i % 2 == 0 { tr.from_i64(-11) } else { 5 })
            .collect();
        let tsh = share(&mut prg, 20, &tv);
        for cfg in cfgs() {
            let mut want = trunc_pos_cost(tv.len(), tr, 4, cfg);
            for (&(_, m, lv, d), (v, _)) in sq_cases.iter().zip(&sq_in) {
                want = want + square_trunc_cost(v.len(), m, lv, d, cfg);
            }
            for (&(_, mx, _, my, lv, d), (v, _, _, _)) in mul_cases.iter().zip(&mul_in) {
                want = want + mul_trunc_cost(v.len(), mx, my, lv, d, cfg);
            }
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                let i = usize::from(role != Role::Server);
                let sq: Vec<AShare> = sq_cases
                    .iter()
                    .zip(&sq_in)
                    .map(|(&(_, m, lv, d), (_, sh))| {
                        let x = if i == 0 { &sh.0 } else { &sh.1 };
                        square_trunc(s, ch, x, m, lv, d).unwrap()
                    })
                    .collect();
                let mu: Vec<AShare> = mul_cases
                    .iter()
                    .zip(&mul_in)
                    .map(|(&(_, mx, _, my, lv, d), (_, _, sx, sy))| {
                        let (x, y) = if i == 0 {
                            (&sx.0, &sy.0)
                        } else {
                            (&sx.1, &sy.1)
                        };
                        mul_trunc(s, ch, x, mx, y, my, lv, d).unwrap()
                    })
                    .collect();
                let x = if i == 0 { &tsh.0 } else { &tsh.1 };
                let t = trunc_offset(s, ch, x, 4, 1).unwrap();
                (sq, mu, t)
            });
            for (c, (&(_, _, lv, d), (v, _))) in sq_cases.iter().zip(&sq_in).enumerate() {
                let out = Ring::new(lv - d).unwrap();
                let got = a.0[c].reconstruct(&b.0[c]).unwrap();
                let bound = f64::from(d + 1) / 2.0;
                for (j, &x) in v.iter().enumerate() {
                    let exact = (x as f64) * (x as f64) / 2f64.powi(d as i32);
                    let fl = exact.floor();
                    let err =
                        (signed(out, got[j].wrapping_sub(fl as u64)) as f64 - (exact - fl)).abs();
                    if d == 0 {
                        assert_eq!(got[j], out.reduce(x.wrapping_mul(x)));
                    }
                    assert!(err <= bound, "square {x} d {d}: err {err}");
                }
            }
            for (c, (&(_, mx, _, my, lv, d), (vx, vy, _, _))) in
                mul_cases.iter().zip(&mul_in).enumerate()
            {
                let out = Ring::new(lv - d).unwrap();
                let got = a.1[c].reconstruct(&b.1[c]).unwrap();
                let bound = 1.0 + f64::from(d.min(mx).min(my));
                for j in 0..vx.len() {
                    let exact = (vx[j] as f64) * (vy[j] as f64) / 2f64.powi(d as i32);
                    let fl = exact.floor();
                    let err =
                        (signed(out, got[j].wrapping_sub(fl as u64)) as f64 - (exact - fl)).abs();
                    if d == 0 {
                        assert_eq!(got[j], out.reduce(vx[j].wrapping_mul(vy[j])));
                    }
                    assert!(err <= bound, "{} * {} d {d}: err {err}", vx[j], vy[j]);
                }
            }
            let t = a.2.reconstruct(&b.2).unwrap();
            let (mut s0, mut s1) = (0i128, 0i128);
            for (j, &v) in t.iter().enumerate() {
                let v = signed(tr, v);
                if j % 2 == 0 {
                    assert!(v == -1 || v == 0, "{v}");
                    s0 += v;
                } else {
                    assert!(v == 0 || v == 1, "{v}");
                    s1 += v;
                }
            }
            let (m0, m1) = (s0 as f64 / 2000.0, s1 as f64 / 2000.0);
            assert!((m0 + 11.0 / 16.0).abs() < 0.03, "mean {m0}");
            assert!((m1 - 5.0 / 16.0).abs() < 0.03, "mean {m1}");
            assert_eq!(cost.bytes, want.bytes);
            assert!(cost.rounds <= want.rounds);
        }
    }

    /// [`mul_held_trunc`] against plaintext: random narrow `x` with the extremes (0, 1, the
    /// largest allowed), uniformly random shares in rings wider than `mx`, random `y` of the
    /// holder (either party); exact for `d = 0`, within `(1 + min(d, mx)) / 2` units of `2^d`
    /// otherwise; bytes equal to the cost.
    #[test]
    fn mul_held_trunc_matches_plaintext() {
        let mut prg = Prg::from_seed([6; 32]);
        // (ring bits of x, mx, y bits, lo, d, holder)
        let cases = [
            (24u32, 17u32, 16u32, 19u32, 13u32, Role::Client),
            (20, 17, 16, 20, 0, Role::Server),
            (40, 30, 20, 16, 30, Role::Client),
            (17, 17, 17, 21, 14, Role::Server),
        ];
        let inputs: Vec<_> = cases
            .iter()
            .map(|&(bx, mx, yb, _, _, _)| {
                let mut v: Vec<u64> = (0..300)
                    .map(|_| prg.ring_element(Ring::z64()) & ((1u64 << (mx - 1)) - 1))
                    .collect();
                v.extend([0, 1, (1u64 << (mx - 1)) - 1, 1u64 << (mx - 2)]);
                let y: Vec<u64> = v
                    .iter()
                    .map(|_| prg.ring_element(Ring::z64()) & ((1u64 << yb) - 1))
                    .collect();
                let ring = Ring::new(bx).unwrap();
                let (x0, x1) = AShare::share(ring, vec![v.len()], &v, &mut prg).unwrap();
                (v, y, x0, x1)
            })
            .collect();
        for cfg in cfgs() {
            let mut want = Cost::default();
            for (&(_, mx, _, lo, d, holder), (v, _, _, _)) in cases.iter().zip(&inputs) {
                want = want + mul_held_trunc_cost(v.len(), mx, holder, lo, d, cfg);
            }
            let (a, b, cost) = run2(cfg, want.cots, |role, s, ch| {
                cases
                    .iter()
                    .zip(&inputs)
                    .map(|(&(_, mx, _, lo, d, holder), (_, y, x0, x1))| {
                        let yy = (role == holder).then_some(y.as_slice());
                        mul_held_trunc(s, ch, pick(role, x0, x1), mx, holder, yy, lo, d).unwrap()
                    })
                    .collect::<Vec<_>>()
            });
            for (c, (&(_, mx, _, lo, d, _), (v, y, _, _))) in cases.iter().zip(&inputs).enumerate()
            {
                let out = Ring::new(lo).unwrap();
                let got = a[c].reconstruct(&b[c]).unwrap();
                let bound = f64::from(1 + d.min(mx)) / 2.0;
                for j in 0..v.len() {
                    let exact = (v[j] as f64) * (y[j] as f64) / 2f64.powi(d as i32);
                    if d == 0 {
                        assert_eq!(got[j], out.reduce(v[j].wrapping_mul(y[j])));
                    }
                    let fl = exact.floor();
                    let err =
                        (signed(out, got[j].wrapping_sub(fl as u64)) as f64 - (exact - fl)).abs();
                    assert!(err <= bound, "{} * {} d {d}: err {err}", v[j], y[j]);
                }
            }
            assert_eq!(cost.bytes, want.bytes);
            assert!(cost.rounds <= want.rounds);
        }
    }

    /// The average error (bias) of [`ExpMethod::Lut`] on constant inputs with uniformly random
    /// shares (prints, in ulps of `2^-F`).
    #[test]
    #[ignore = "exploration, prints"]
    fn lut_bias() {
        let mut prg = Prg::from_seed([8; 32]);
        let f_in = 12;
        let ring = Ring::new(24).unwrap();
        let fx = FixedPoint::new(ring, f_in).unwrap();
        let v: Vec<i64> = std::env::var("LUT_CFG")
            .unwrap_or_else(|_| "0,4,2,13".into())
            .split(',')
            .map(|t| t.trim().parse().unwrap())
            .collect();
        let params = ExpParams {
            method: ExpMethod::Lut {
                step: v[0] as i8,
                index_bits: v[1] as u8,
                guard: v[2] as u8,
            },
            frac: v[3] as u32,
        };
        let vals = [0.0, -0.5, -1.0, -2.3, -5.0, -7.5, -10.0, -10.75, -11.75];
        let reps = 4000;
        let xs: Vec<f64> = vals
            .iter()
            .flat_map(|&v| std::iter::repeat_n(v, reps))
            .collect();
        let enc = fx.encode_all(&xs);
        let (x0, x1) = AShare::share(ring, vec![enc.len()], &enc, &mut prg).unwrap();
        let cfg = NlConfig::default();
        let want = exp_cost(enc.len(), ring, f_in, params, cfg);
        let (a, b, _) = run2(cfg, want.cots, |role, s, ch| {
            exp(s, ch, pick(role, &x0, &x1), f_in, params).unwrap()
        });
        let fo = FixedPoint::new(ring, params.frac).unwrap();
        let y = fo.decode_all(&a.reconstruct(&b).unwrap());
        for (i, &v) in vals.iter().enumerate() {
            let e = fx.decode(fx.encode(v)).exp();
            let part = &y[i * reps..(i + 1) * reps];
            let mean = part.iter().map(|y| y - e).sum::<f64>() / reps as f64;
            let worst = part.iter().map(|y| (y - e).abs()).fold(0.0, f64::max);
            eprintln!(
                "x {v}: mean error {:.3} ulp, worst {:.3} ulp",
                mean * 2f64.powi(params.frac as i32),
                worst * 2f64.powi(params.frac as i32)
            );
        }
    }

    #[test]
    fn exp_rejects_small_rings() {
        let ring = Ring::new(24).unwrap();
        let p = ExpParams {
            method: ExpMethod::Squaring { n: 6 },
            frac: 12,
        };
        assert!(p.check(ring, 12).is_err());
    }
}
