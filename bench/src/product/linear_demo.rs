//! The built-in `linear-demo` payload: one secure linear layer `Y = X W + b`.
//!
//! The client holds a private `16 x 64` real matrix `X`, the server a private `64 x 32` weight
//! matrix `W` and bias `b`. Both are encoded in fixed point (12 fractional bits) in Z_2^64; the
//! product is computed with [`HeMatMul`] (RLWE, coefficient encoding, packed outputs, 40-bit
//! noise flooding; the client holds all of `X`, as in a first layer), which leaves additive
//! shares of `X W + b` (24 fractional bits). The server then sends its share so that the client,
//! and only the client, learns `Y`.
//!
//! Setup traffic: the client's public and Galois keys (once per session). Online: the client's
//! encrypted rows, the server's packed results, then the server's output share.

use crate::report::OpReport;
use crate::{DuetError, OpMeter};
use duet_fhe::{Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::{
    HeClientSetup, HeMatMul, HeServerSetup, HeWeights, LayoutPolicy, MatmulShape, PrepareMode,
};
use duet_transport::{Channel, ChannelStats, Role, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;

/// Rows of `X` (tokens).
pub const N: usize = 16;
/// Inner dimension.
pub const D: usize = 64;
/// Output features.
pub const K: usize = 32;
/// Fractional bits of `X` and `W`.
pub const FRAC: u32 = 12;

/// The demo's parameters: the packing preset (N = 8192, log qP = 200 <= 218, the
/// HomomorphicEncryption.org 128-bit row for N = 8192) over Z_2^64 with weights below 2^16.
pub fn params() -> Result<Arc<RlweParameters>, DuetError> {
    Ok(RlweParameters::preset(
        Preset::N8192Q200Pack,
        RingBits(64),
        WeightBound::MaxAbs(1 << 16),
    )
    .map_err(duet_protocols::ProtocolError::from)?)
}

/// Seeded demo data: `(X, W, b)` as reals.
pub fn demo_data(seed: u64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let x = (0..N * D).map(|_| rng.gen_range(-4.0..4.0)).collect();
    let w = (0..D * K).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let b = (0..K).map(|_| rng.gen_range(-1.0..1.0)).collect();
    (x, w, b)
}

fn encode(v: f64, frac: u32) -> i64 {
    (v * (1u64 << frac) as f64).round() as i64
}

/// What one party measured.
#[derive(Debug)]
pub struct LinearRun {
    /// The client's output `Y` (empty on the server).
    pub y: Vec<f64>,
    /// Operator rows.
    pub ops: Vec<OpReport>,
    /// Setup traffic of this side's channel.
    pub setup: ChannelStats,
}

/// Runs one side. The server passes `(W, b)`, the client `X`.
pub fn run<S: Session>(
    session: &S,
    role: Role,
    x: Option<&[f64]>,
    wb: Option<(&[f64], &[f64])>,
) -> Result<LinearRun, DuetError> {
    let params = params()?;
    let shape = MatmulShape::new(N, D, K);
    let mut ch = session.channel(0)?;
    let mut rng = ChaCha20Rng::from_entropy();
    let mut ops = Vec::new();
    let mask = params.plain_mask();
    let proto = |e: duet_protocols::ProtocolError| DuetError::from(e);
    match role {
        Role::Server => {
            let (w, b) = wb.ok_or_else(|| DuetError::Usage("server needs weights".into()))?;
            let wi: Vec<i64> = w.iter().map(|&v| encode(v, FRAC)).collect();
            let bi: Vec<i64> = b.iter().map(|&v| encode(v, 2 * FRAC)).collect();
            let mut weights = HeWeights::new(&params, D, K, wi, Some(&bi)).map_err(proto)?;
            weights
                .prepare(N, LayoutPolicy::MinBytes, PrepareMode::Cache)
                .map_err(proto)?;
            let setup = HeServerSetup::run(&mut ch, &params).map_err(proto)?;
            let setup_stats = ch.stats();
            let m = OpMeter::start(&ch);
            let r = HeMatMul::run_server(&mut ch, &setup, &weights, N, None, &mut rng)
                .map_err(proto)?;
            ops.push(m.finish(&ch, "linear.matmul", "matmul", "he"));
            let m = OpMeter::start(&ch);
            ch.send_u64s(&r)?;
            ch.flush()?;
            ops.push(m.finish(&ch, "output.reveal", "reveal", "mpc"));
            Ok(LinearRun {
                y: Vec::new(),
                ops,
                setup: setup_stats,
            })
        }
        Role::Client => {
            let x = x.ok_or_else(|| DuetError::Usage("client needs an input".into()))?;
            let xi: Vec<u64> = x.iter().map(|&v| encode(v, FRAC) as u64 & mask).collect();
            let setup = HeClientSetup::run(&mut ch, &params, &mut rng).map_err(proto)?;
            let setup_stats = ch.stats();
            let m = OpMeter::start(&ch);
            let y_c = HeMatMul::run_client(
                &mut ch,
                &setup,
                shape,
                LayoutPolicy::MinBytes,
                &xi,
                &mut rng,
            )
            .map_err(proto)?;
            ops.push(m.finish(&ch, "linear.matmul", "matmul", "he"));
            let m = OpMeter::start(&ch);
            let r = ch.recv_u64s_exact(N * K)?;
            ops.push(m.finish(&ch, "output.reveal", "reveal", "mpc"));
            let scale = (1u64 << (2 * FRAC)) as f64;
            let y = y_c
                .iter()
                .zip(&r)
                .map(|(a, b)| (a.wrapping_add(*b) as i64) as f64 / scale)
                .collect();
            Ok(LinearRun {
                y,
                ops,
                setup: setup_stats,
            })
        }
    }
}

/// Plaintext reference `X W + b` in f64.
pub fn reference(x: &[f64], w: &[f64], b: &[f64]) -> Vec<f64> {
    let mut y = Vec::with_capacity(N * K);
    for i in 0..N {
        for j in 0..K {
            let mut acc = b.get(j).copied().unwrap_or(0.0);
            for t in 0..D {
                acc += x.get(i * D + t).copied().unwrap_or(0.0)
                    * w.get(t * K + j).copied().unwrap_or(0.0);
            }
            y.push(acc);
        }
    }
    y
}
