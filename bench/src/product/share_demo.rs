//! The built-in `share-demo` payload: each party secret-shares a private tensor, both compute
//! shares of `3 * (x + y)` locally, and only the client learns the result.
//!
//! Client input x, server input y (fixed point in Z_2^64, 16 fractional bits). Cost: one
//! simultaneous flight of `8 n` bytes each way for the input shares, then `8 n` bytes server to
//! client for the output. The server learns nothing (it sees a uniform share of x); the client
//! learns `3 (x + y)` and nothing else about y.

use crate::{DuetError, OpMeter};
use duet_mpc::{AShare, FixedPoint, Prg, Ring};
use duet_transport::{Channel, Role, Session};

/// Fixed-point format of the demo: Z_2^64 with 16 fractional bits.
pub fn format() -> Result<FixedPoint, DuetError> {
    Ok(FixedPoint::new(Ring::z64(), 16)?)
}

/// Demo inputs of `n` values for a role, seeded (deterministic, both signs, some extremes).
pub fn demo_input(role: Role, n: usize, seed: u64) -> Vec<f64> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(seed ^ role.index() as u64);
    (0..n)
        .map(|i| match i {
            0 => 0.0,
            1 => -1.0,
            2 => 1e6,
            3 => -1e6,
            _ => rng.gen_range(-100.0..100.0),
        })
        .collect()
}

/// Runs one party's side. Returns the revealed output (client) or an empty vector (server),
/// and the per-operator rows measured on this side.
pub fn run<S: Session>(
    session: &S,
    role: Role,
    input: &[f64],
) -> Result<(Vec<f64>, Vec<crate::report::OpReport>), DuetError> {
    let fp = format()?;
    let ring = fp.ring();
    let n = input.len();
    let mut ch = session.channel(0)?;
    let mut prg = Prg::from_entropy();
    let mut ops = Vec::new();

    // 1. share inputs: keep one share, send the other; receive the peer's share of its input.
    let m = OpMeter::start(&ch);
    let (mine, theirs) = AShare::share(ring, vec![n], &fp.encode_all(input), &mut prg)?;
    ch.send_u64s(theirs.data())?;
    ch.flush()?;
    let peer_share = ch.recv_u64s_exact(n)?;
    ring.check_all(&peer_share)?;
    let peer_share = AShare::new(ring, vec![n], peer_share)?;
    ops.push(m.finish(&ch, "input.share", "share", "mpc"));

    // 2. local: 3 * (x + y)
    let m = OpMeter::start(&ch);
    let z = mine.add(&peer_share)?.mul_public(3);
    ops.push(m.finish(&ch, "add_scale", "linear", "local"));

    // 3. reveal to the client only
    let m = OpMeter::start(&ch);
    let out = match role {
        Role::Server => {
            ch.send_u64s(z.data())?;
            ch.flush()?;
            Vec::new()
        }
        Role::Client => {
            let other = ch.recv_u64s_exact(n)?;
            ring.check_all(&other)?;
            let other = AShare::new(ring, vec![n], other)?;
            fp.decode_all(&z.reconstruct(&other)?)
        }
    };
    ops.push(m.finish(&ch, "output.reveal", "reveal", "mpc"));
    Ok((out, ops))
}

/// Plaintext reference.
pub fn reference(x: &[f64], y: &[f64]) -> Vec<f64> {
    x.iter().zip(y).map(|(a, b)| 3.0 * (a + b)).collect()
}
