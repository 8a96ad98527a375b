//! `duet bench op KIND --shape DIMS`: one operator between two parties on random inputs.
//!
//! HE linear layers run here (both parties in this process over loopback QUIC):
//! * `matmul --shape NxDxK`: [`HeMatMul`] with `X` secret-shared, `W` (`|w| <= 2^16`) and a bias
//!   held by the server, `l = 37`, parameters `n8192-q200-pack`.
//! * `matmul-shared --shape HxNxDxK`: [`HeMatMulShared`], both operands shared, `l = 37`,
//!   uniform shares.
//!
//! `--protocol`: `duet-minbytes` (fewest bytes), `duet-lowks` (fewest key switches within a byte
//! budget: 6 MB per 128 x 768 output elements of a matmul, at least the shape's fewest bytes;
//! 20 MB per shared batch), `duet` (= `duet-minbytes` for `matmul`, `duet-lowks` for
//! `matmul-shared`), `cheetah` (no packing, `n4096-q109` for `matmul`:
//! the unpacked baseline, actually run). Every other kind goes to [`crate::ops::mpc`].
//! `duet-serverkey` (`matmul` only): [`ServerKeyMatMul`], the weights encrypted once under the
//! server's key and cached by the client (`bytes.cached`), online only the client's packed
//! output ciphertexts (`bytes.total`); blocks chosen for the lowest compute estimate within
//! 80 B of encrypted weights per weight (`duet-serverkey-lean`: 20 B; `duet-serverkey-minbytes`:
//! fewest online bytes, then the smallest model). `duet-auto` (`matmul`): server-key when it
//! has fewer online bytes than `duet` and its client model fits `DUET_SERVERKEY_MODEL_GIB`
//! (default 4), else `duet`.
//!
//! The server's prepared weights are cached (offline) when they fit `DUET_WEIGHT_CACHE_GIB`
//! (default 4 GiB; 1.7 GiB for 768 x 768), else prepared during the online phase.
//!
//! Report: `bytes.total` online traffic (both directions), `bytes.setup` the key material
//! (public key, Galois keys), `offline_s` weight preparation plus key setup, `online_s` the
//! operator, `accuracy.max_abs_err` the largest ring distance to the plaintext result (0 = exact).
//! The first `ops` row is the run (its `predicted_bytes` is the cost model's exact figure); the
//! second row is not run: the bytes a Cheetah-style unpacked output would need for the same
//! shape (extraction only, fewest-bytes blocks, the `cheetah` parameters: `n4096-q109` for
//! `matmul`, `n8192-q186` for `matmul-shared`), from the exact layout cost.

pub mod act;
pub mod embedding;
pub mod he_mul;
pub mod mpc;
pub mod norm;
pub mod transport;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use duet_fhe::{MacTerms, Preset, RingBits, RlweParameters, WeightBound};
use duet_protocols::{
    server_key_params, Cost, HeClientSetup, HeMatMul, HeMatMulShared, HeServerSetup, HeWeights,
    LayoutPolicy, MatmulShape, PrepareMode, ServerKeyMatMul, ServerKeyPlan, ServerKeyPolicy,
    ServerKeySetup, ServerKeyWeights, SharedShape,
};
use duet_transport::quic::{connect, Identity, QuicChannel, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::{Channel, ChannelStats, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::report::{peak_rss_bytes, Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;

/// Ring width of the HE benchmarks.
pub const RING_BITS: u32 = 37;
/// Weight magnitude bound of `matmul` (fixed-point weights with up to 16 bits).
pub const WEIGHT_BOUND: i64 = 1 << 16;
const SEED: u64 = 2026;

/// Runs operator `kind` on `shape` (e.g. `128x768x768`) with protocol preset `protocol`.
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    match kind {
        "matmul" => {
            let [n, d, k] = dims::<3>(shape)?;
            run_matmul(MatmulShape::new(n, d, k), protocol)
        }
        "matmul-shared" => {
            let [h, n, d, k] = dims::<4>(shape)?;
            run_shared(SharedShape::new(h, n, d, k), protocol)
        }
        "gelu" | "silu" | "tanh" => crate::ops::act::run(kind, shape, protocol),
        "softmax" | "layernorm" | "rmsnorm" | "gaussian-attn" => {
            crate::ops::norm::run(kind, shape, protocol)
        }
        "embedding" => crate::ops::embedding::run(kind, shape, protocol),
        "mul" if protocol.starts_with("he") => crate::ops::he_mul::run(kind, shape, protocol),
        _ => crate::ops::mpc::run(kind, shape, protocol),
    }
}

fn dims<const M: usize>(shape: &str) -> Result<[usize; M], DuetError> {
    let parts: Vec<usize> = shape
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| DuetError::Usage(format!("bad shape {shape:?}: {e}")))?;
    let arr: [usize; M] = parts
        .try_into()
        .map_err(|_| DuetError::Usage(format!("shape {shape:?}: expected {M} dimensions")))?;
    if arr.contains(&0) || arr.iter().any(|&v| v > 1 << 16) {
        return Err(DuetError::Usage(format!(
            "shape {shape:?}: dimensions must be in 1..=65536"
        )));
    }
    Ok(arr)
}

/// The protocol configuration of `matmul` / `matmul-shared`.
struct HeConfig {
    params: Arc<RlweParameters>,
    policy: LayoutPolicy,
}

fn he_config(protocol: &str, shared: bool, budget: u64) -> Result<HeConfig, DuetError> {
    let wb = if shared {
        WeightBound::Uniform
    } else {
        WeightBound::MaxAbs(WEIGHT_BOUND as u64)
    };
    let lean = LayoutPolicy::FewestKeySwitches { max_bytes: budget };
    let (preset, policy) = match protocol {
        // matmul: fewest bytes (meets both targets); shared: fewest key switches within the
        // 20 MB budget (fewest bytes needs 3.6x the key switches and misses the time target)
        "duet" if !shared => (Preset::N8192Q200Pack, LayoutPolicy::MinBytes),
        "duet" | "duet-lowks" => (Preset::N8192Q200Pack, lean),
        "duet-minbytes" => (Preset::N8192Q200Pack, LayoutPolicy::MinBytes),
        "cheetah" if !shared => (Preset::N4096Q109, LayoutPolicy::ExtractionOnly),
        "cheetah" => (Preset::N8192Q186, LayoutPolicy::ExtractionOnly),
        other => {
            return Err(DuetError::Usage(format!(
                "unknown protocol {other:?} for HE matmul: expected duet, duet-lowks, duet-minbytes or cheetah"
            )))
        }
    };
    Ok(HeConfig {
        params: RlweParameters::preset(preset, RingBits(RING_BITS), wb)
            .map_err(duet_protocols::ProtocolError::from)?,
        policy,
    })
}

/// What the client's thread measured.
struct Side<T> {
    out: T,
    setup: ChannelStats,
    online: ChannelStats,
    setup_s: f64,
    online_s: f64,
}

fn barrier<C: Channel>(ch: &mut C) -> Result<(), DuetError> {
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    Ok(())
}

/// Loopback QUIC endpoints for both parties.
struct Loopback {
    rt: QuicRuntime,
    server_id: Identity,
    client_id: Identity,
    listener: QuicListener,
    addr: SocketAddr,
}

impl Loopback {
    fn new() -> Result<Self, DuetError> {
        let rt = QuicRuntime::recommended()?;
        let server_id = Identity::generate()?;
        let client_id = Identity::generate()?;
        let listener = QuicListener::bind(
            &rt,
            SocketAddr::from(([127, 0, 0, 1], 0)),
            &server_id,
            client_id.fingerprint(),
            QuicConfig::default(),
        )?;
        let addr = listener.local_addr()?;
        Ok(Self {
            rt,
            server_id,
            client_id,
            listener,
            addr,
        })
    }
}

fn ring_err(a: &[u64], b: &[u64], l: u32) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let modulus = 1u128 << l;
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = (u128::from(x).wrapping_sub(u128::from(y))) % modulus;
            d.min(modulus - d) as f64
        })
        .fold(0.0, f64::max)
}

#[allow(clippy::too_many_arguments)]
fn report(
    model: String,
    seq_len: usize,
    protocol: &str,
    wall_s: f64,
    offline_s: f64,
    c: &Side<Vec<u64>>,
    s_online: &ChannelStats,
    s_setup: &ChannelStats,
    max_abs_err: f64,
    op: OpReport,
    baseline: Option<OpReport>,
) -> Report {
    let rss = peak_rss_bytes();
    let mut ops = vec![op];
    ops.extend(baseline);
    Report {
        model,
        seq_len,
        protocol: protocol.to_string(),
        network: "loopback-quic".into(),
        wall_s,
        offline_s,
        online_s: c.online_s,
        bytes: Bytes {
            client_to_server: c.online.bytes_sent,
            server_to_client: c.online.bytes_received,
            total: c.online.total_bytes(),
            setup: c.setup.total_bytes(),
            cached: 0,
        },
        rounds: c.online.rounds + s_online.rounds,
        peak_rss_bytes: PeakRss {
            server: rss,
            client: rss,
        },
        accuracy: Accuracy {
            max_abs_err,
            cosine_vs_reference: if max_abs_err == 0.0 { 1.0 } else { f64::NAN },
        },
        ops: {
            let _ = s_setup;
            ops
        },
    }
}

fn op_row(
    name: String,
    kind: &str,
    backend: &str,
    c: &Side<Vec<u64>>,
    s: &ChannelStats,
    cost: &Cost,
) -> OpReport {
    OpReport {
        name,
        kind: kind.into(),
        backend: backend.into(),
        bytes: c.online.total_bytes(),
        rounds: c.online.rounds + s.rounds,
        wall_s: c.online_s,
        predicted_bytes: cost.bytes,
        predicted_s: 0.0,
    }
}

fn baseline_row(kind: &str, cost: Option<Cost>) -> Option<OpReport> {
    cost.map(|c| OpReport {
        name: "baseline.cheetah-unpacked(predicted,not-run)".into(),
        kind: kind.into(),
        backend: "he-extract".into(),
        bytes: c.bytes,
        rounds: c.rounds,
        wall_s: 0.0,
        predicted_bytes: c.bytes,
        predicted_s: 0.0,
    })
}

/// The server's result of [`run_he_pair`]: its output share, setup and online traffic.
type ServerSide = (Vec<u64>, ChannelStats, ChannelStats);

/// Both parties over loopback QUIC: key setup (client keys to the server), then one online HE
/// operation per side (`server_op`, `client_op`), each side's traffic measured between
/// barriers so that setup and online traffic are told apart.
fn run_he_pair<FS, FC>(
    params: &Arc<RlweParameters>,
    server_op: FS,
    client_op: FC,
) -> Result<(ServerSide, Side<Vec<u64>>), DuetError>
where
    FS: FnOnce(&mut QuicChannel, &HeServerSetup, &mut ChaCha20Rng) -> Result<Vec<u64>, DuetError>
        + Send,
    FC: FnOnce(&mut QuicChannel, &HeClientSetup, &mut ChaCha20Rng) -> Result<Vec<u64>, DuetError>,
{
    let lb = Loopback::new()?;
    let (srv, cli) = std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<ServerSide, DuetError> {
            let session = lb.listener.accept()?;
            let mut ch = session.channel(0)?;
            let mut rng = ChaCha20Rng::from_entropy();
            let setup = HeServerSetup::run(&mut ch, params)?;
            let setup_stats = ch.stats();
            barrier(&mut ch)?;
            let before = ch.stats();
            let out = server_op(&mut ch, &setup, &mut rng)?;
            let online = ch.stats() - before;
            barrier(&mut ch)?;
            session.close()?;
            Ok((out, setup_stats, online))
        });
        let client = (|| -> Result<Side<Vec<u64>>, DuetError> {
            let session = connect(
                &lb.rt,
                lb.addr,
                &lb.client_id,
                lb.server_id.fingerprint(),
                QuicConfig::default(),
            )?;
            let mut ch = session.channel(0)?;
            let mut rng = ChaCha20Rng::from_entropy();
            let t = Instant::now();
            let setup = HeClientSetup::run(&mut ch, params, &mut rng)?;
            let setup_stats = ch.stats();
            barrier(&mut ch)?;
            let setup_s = t.elapsed().as_secs_f64();
            let before = ch.stats();
            let t = Instant::now();
            let out = client_op(&mut ch, &setup, &mut rng)?;
            let online_s = t.elapsed().as_secs_f64();
            let online = ch.stats() - before;
            barrier(&mut ch)?;
            session.close()?;
            Ok(Side {
                out,
                setup: setup_stats,
                online,
                setup_s,
                online_s,
            })
        })();
        let server = server
            .join()
            .map_err(|_| DuetError::ThreadPanicked("server"));
        (server, client)
    });
    Ok((srv??, cli?))
}

fn run_matmul(shape: MatmulShape, protocol: &str) -> Result<Report, DuetError> {
    if protocol.starts_with("duet-serverkey") {
        return run_matmul_serverkey(shape, protocol);
    }
    if protocol == "duet-auto" {
        let mut r = match auto_choice(shape)? {
            AutoChoice::ServerKey => run_matmul_serverkey(shape, "duet-serverkey")?,
            AutoChoice::ClientKey => run_matmul(shape, "duet")?,
        };
        r.protocol = protocol.to_string();
        return Ok(r);
    }
    // duet-lowks budget: the target's 6 MB per 128 x 768 outputs, scaled by the output count,
    // and never below the fewest bytes possible for the shape
    let scaled = (6_000_000u128 * (shape.n * shape.k) as u128 / (128 * 768)) as u64;
    let floor = he_config("duet", false, 0)
        .and_then(|c| Ok(HeMatMul::cost(&c.params, shape, LayoutPolicy::MinBytes)?.bytes))?;
    let cfg = he_config(protocol, false, scaled.max(floor))?;
    let params = cfg.params;
    let policy = cfg.policy;
    let cost = HeMatMul::cost(&params, shape, policy)?;
    let baseline = he_config("cheetah", false, 0)
        .ok()
        .and_then(|c| HeMatMul::cost(&c.params, shape, c.policy).ok());
    let mask = params.plain_mask();
    let MatmulShape { n, d, k } = shape;
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    let x: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_c: Vec<u64> = x
        .iter()
        .zip(&x_s)
        .map(|(a, b)| a.wrapping_sub(*b) & mask)
        .collect();
    let w: Vec<i64> = (0..d * k)
        .map(|_| rng.gen_range(-WEIGHT_BOUND..=WEIGHT_BOUND))
        .collect();
    let bias: Vec<i64> = (0..k)
        .map(|_| rng.gen_range(-(1 << 20)..(1 << 20)))
        .collect();
    let t_all = Instant::now();
    let mut weights = HeWeights::new(&params, d, k, w.clone(), Some(&bias))?;
    let prep_s = weights.prepare(n, policy, cache_mode())?;
    let ((r, s_setup, s_online), cli) = run_he_pair(
        &params,
        |ch, setup, rng| {
            Ok(HeMatMul::run_server(
                ch,
                setup,
                &weights,
                n,
                Some(&x_s),
                rng,
            )?)
        },
        |ch, setup, rng| Ok(HeMatMul::run_client(ch, setup, shape, policy, &x_c, rng)?),
    )?;
    let wall = t_all.elapsed().as_secs_f64();
    let got: Vec<u64> = cli
        .out
        .iter()
        .zip(&r)
        .map(|(a, b)| a.wrapping_add(*b) & mask)
        .collect();
    let want = plain_matmul(&x, &w, &bias, n, d, k, mask);
    let err = ring_err(&got, &want, params.ring_bits());
    let op = op_row(
        format!("matmul[{shape}]"),
        "matmul",
        "he",
        &cli,
        &s_online,
        &cost,
    );
    Ok(report(
        format!(
            "op:matmul {shape} l={} {} key_switches={}",
            params.ring_bits(),
            params_name(&params),
            cost.key_switches
        ),
        n,
        protocol,
        wall,
        prep_s + cli.setup_s,
        &cli,
        &s_online,
        &s_setup,
        err,
        op,
        baseline_row("matmul", baseline),
    ))
}

/// Encrypted-weight budget of `duet-serverkey` per weight (bytes on the wire): 80 B allows
/// blocks of up to 4 rows (`n_b <= 4`; 18.8 B per weight and row). `duet-serverkey-lean`: 20 B
/// (`n_b = 1`, the smallest model).
const SERVERKEY_CACHE_PER_WEIGHT: u64 = 80;
const SERVERKEY_LEAN_CACHE_PER_WEIGHT: u64 = 20;

/// What `duet-auto` runs for a `matmul` shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AutoChoice {
    ServerKey,
    ClientKey,
}

/// `duet-auto`: the server-key protocol when its online bytes are below the client-key
/// protocol's (`duet`) and its client model memory (`2.56x` its cached weight bytes) stays
/// within `DUET_SERVERKEY_MODEL_GIB` (default 4 GiB); else the client-key protocol. Both
/// costs are exact layout costs (nothing is run to decide).
fn auto_choice(shape: MatmulShape) -> Result<AutoChoice, DuetError> {
    let client_key = he_config("duet", false, 0)
        .and_then(|c| Ok(HeMatMul::cost(&c.params, shape, c.policy)?.bytes))?;
    let (params, policy) = serverkey_config(shape, "duet-serverkey")?;
    let server_key = ServerKeyPlan::new(&params, shape, policy)?.cost();
    let gib = std::env::var("DUET_SERVERKEY_MODEL_GIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(4);
    Ok(
        if server_key.online.bytes < client_key && server_key.client_model_memory <= gib << 30 {
            AutoChoice::ServerKey
        } else {
            AutoChoice::ClientKey
        },
    )
}

/// The parameters of the server-key protocol: `n8192-q200-pack` (table row N = 8192,
/// log2 qP <= 218), `l = 37`, the client's share as a uniform plaintext multiplier with up to
/// `8 N` nonzero share coefficients per output (blocks of `n_b` rows need `n_b d` of them).
fn serverkey_config(
    shape: MatmulShape,
    protocol: &str,
) -> Result<(Arc<RlweParameters>, ServerKeyPolicy), DuetError> {
    let params = server_key_params(
        Preset::N8192Q200Pack,
        RingBits(RING_BITS),
        MacTerms(8 * 8192),
    )?;
    let weights = (shape.d * shape.k) as u64;
    // never below the smallest model among the fewest-bytes plans (small matrices)
    let floor = ServerKeyPlan::new(&params, shape, ServerKeyPolicy::MinBytes)?
        .cost()
        .cached_weight_bytes;
    let policy = match protocol {
        "duet-serverkey" => ServerKeyPolicy::Fastest {
            max_cached_bytes: (SERVERKEY_CACHE_PER_WEIGHT * weights).max(floor),
        },
        "duet-serverkey-lean" => ServerKeyPolicy::Fastest {
            max_cached_bytes: (SERVERKEY_LEAN_CACHE_PER_WEIGHT * weights).max(floor),
        },
        "duet-serverkey-minbytes" => ServerKeyPolicy::MinBytes,
        other => {
            return Err(DuetError::Usage(format!(
                "unknown protocol {other:?}: expected duet-serverkey, duet-serverkey-lean or duet-serverkey-minbytes"
            )))
        }
    };
    Ok((params, policy))
}

/// `matmul` with [`ServerKeyMatMul`] (Nimbus-style: weights encrypted once under the server's
/// key and cached by the client; online only the client's output ciphertexts travel).
/// `bytes.cached` is the model transfer (server keys + encrypted weights), `bytes.setup` is 0,
/// `bytes.total` the online flight; `offline_s` is the server's key generation, weight
/// encryption and the client's expansion; `online_s` runs from the client's start to the
/// server's decrypted share (one barrier after it).
fn run_matmul_serverkey(shape: MatmulShape, protocol: &str) -> Result<Report, DuetError> {
    let (params, policy) = serverkey_config(shape, protocol)?;
    let plan = ServerKeyPlan::new(&params, shape, policy)?;
    let cost = plan.cost();
    let mask = params.plain_mask();
    let MatmulShape { n, d, k } = shape;
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    let x: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_s: Vec<u64> = (0..n * d).map(|_| rng.gen::<u64>() & mask).collect();
    let x_c: Vec<u64> = x
        .iter()
        .zip(&x_s)
        .map(|(a, b)| a.wrapping_sub(*b) & mask)
        .collect();
    let w: Vec<i64> = (0..d * k)
        .map(|_| rng.gen_range(-WEIGHT_BOUND..=WEIGHT_BOUND))
        .collect();
    let bias: Vec<i64> = (0..k)
        .map(|_| rng.gen_range(-(1 << 20)..(1 << 20)))
        .collect();
    let t_all = Instant::now();
    let weights = ServerKeyWeights::new(plan.clone(), w.clone(), Some(&bias))?;
    let lb = Loopback::new()?;
    let (srv, cli) = std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<(Vec<u64>, ChannelStats, f64), DuetError> {
            let session = lb.listener.accept()?;
            let mut ch = session.channel(0)?;
            let mut rng = ChaCha20Rng::from_entropy();
            let t = Instant::now();
            let setup = ServerKeySetup::generate(&params, &mut rng)?;
            ServerKeyMatMul::send_model(&mut ch, &setup, &weights, &mut rng)?;
            let keygen_s = t.elapsed().as_secs_f64();
            barrier(&mut ch)?;
            let before = ch.stats();
            let y = ServerKeyMatMul::run_server(&mut ch, &setup, &weights, n, Some(&x_s))?;
            let online = ch.stats() - before;
            barrier(&mut ch)?;
            session.close()?;
            Ok((y, online, keygen_s))
        });
        let client = (|| -> Result<(Side<Vec<u64>>, u64), DuetError> {
            let session = connect(
                &lb.rt,
                lb.addr,
                &lb.client_id,
                lb.server_id.fingerprint(),
                QuicConfig::default(),
            )?;
            let mut ch = session.channel(0)?;
            let mut rng = ChaCha20Rng::from_entropy();
            let t = Instant::now();
            let model = ServerKeyMatMul::recv_model(&mut ch, plan.clone())?;
            let cached = ch.stats();
            barrier(&mut ch)?;
            let setup_s = t.elapsed().as_secs_f64();
            let before = ch.stats();
            let t = Instant::now();
            let out = ServerKeyMatMul::run_client(&mut ch, &model, n, &x_c, &mut rng)?;
            let online = ch.stats() - before;
            barrier(&mut ch)?;
            let online_s = t.elapsed().as_secs_f64();
            let mem = model.memory_bytes();
            session.close()?;
            Ok((
                Side {
                    out,
                    setup: cached,
                    online,
                    setup_s,
                    online_s,
                },
                mem,
            ))
        })();
        let server = server
            .join()
            .map_err(|_| DuetError::ThreadPanicked("server"));
        (server, client)
    });
    let (y_s, s_online, _keygen_s) = srv??;
    let (cli, client_mem) = cli?;
    let wall = t_all.elapsed().as_secs_f64();
    let got: Vec<u64> = cli
        .out
        .iter()
        .zip(&y_s)
        .map(|(a, b)| a.wrapping_add(*b) & mask)
        .collect();
    let want = plain_matmul(&x, &w, &bias, n, d, k, mask);
    let err = ring_err(&got, &want, params.ring_bits());
    let lay = plan.layout();
    let (pr, pc) = plan.pack_grid();
    let op = op_row(
        format!("matmul[{shape}]"),
        "matmul",
        "he-serverkey",
        &cli,
        &s_online,
        &cost.online,
    );
    let mut r = report(
        format!(
            "op:matmul {shape} l={} {} serverkey blocks={}x{}x{} pack={pr}x{pc} key_switches={} client_model_mem={}",
            params.ring_bits(),
            params_name(&params),
            lay.n_b,
            lay.d_b,
            lay.k_b,
            cost.online.key_switches,
            client_mem
        ),
        n,
        protocol,
        wall,
        cli.setup_s,
        &cli,
        &s_online,
        &ChannelStats::default(),
        err,
        op,
        None,
    );
    r.bytes.setup = 0;
    r.bytes.cached = cli.setup.total_bytes();
    Ok(r)
}

/// Weight cache budget: `DUET_WEIGHT_CACHE_GIB` (default 4): larger matrices prepare their
/// blocks during the online phase instead.
fn cache_mode() -> PrepareMode {
    let gib = std::env::var("DUET_WEIGHT_CACHE_GIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(4);
    PrepareMode::Auto {
        max_cache_bytes: gib << 30,
    }
}

fn params_name(p: &RlweParameters) -> String {
    format!("N={} logq={:.0}", p.degree(), p.log2_q())
}

fn plain_matmul(
    x: &[u64],
    w: &[i64],
    bias: &[i64],
    n: usize,
    d: usize,
    k: usize,
    mask: u64,
) -> Vec<u64> {
    let mut y: Vec<u64> = (0..n * k)
        .map(|i| bias.get(i % k).copied().unwrap_or(0) as u64)
        .collect();
    for (yrow, xrow) in y.chunks_mut(k).zip(x.chunks(d)) {
        for (&xv, wrow) in xrow.iter().zip(w.chunks(k)) {
            for (yv, &wv) in yrow.iter_mut().zip(wrow) {
                *yv = yv.wrapping_add(xv.wrapping_mul(wv as u64));
            }
        }
    }
    y.iter().map(|v| v & mask).collect()
}

fn run_shared(shape: SharedShape, protocol: &str) -> Result<Report, DuetError> {
    let budget = 20_000_000;
    let cfg = he_config(protocol, true, budget)?;
    let params = cfg.params;
    let policy = cfg.policy;
    let cost = HeMatMulShared::cost(&params, shape, policy)?;
    let baseline = he_config("cheetah", true, 0)
        .ok()
        .and_then(|c| HeMatMulShared::cost(&c.params, shape, c.policy).ok());
    let mask = params.plain_mask();
    let SharedShape { heads, n, d, k } = shape;
    let mut rng = ChaCha20Rng::seed_from_u64(SEED);
    let mut rand = |len: usize| -> Vec<u64> { (0..len).map(|_| rng.gen::<u64>() & mask).collect() };
    let (x_c, x_s, y_c, y_s) = (
        rand(heads * n * d),
        rand(heads * n * d),
        rand(heads * d * k),
        rand(heads * d * k),
    );
    let t_all = Instant::now();
    let ((zs, s_setup, s_online), cli) = run_he_pair(
        &params,
        |ch, setup, rng| {
            Ok(HeMatMulShared::run_server(
                ch, setup, shape, policy, &x_s, &y_s, rng,
            )?)
        },
        |ch, setup, rng| {
            Ok(HeMatMulShared::run_client(
                ch, setup, shape, policy, &x_c, &y_c, rng,
            )?)
        },
    )?;
    let wall = t_all.elapsed().as_secs_f64();
    let got: Vec<u64> = cli
        .out
        .iter()
        .zip(&zs)
        .map(|(a, b)| a.wrapping_add(*b) & mask)
        .collect();
    let mut want = Vec::with_capacity(heads * n * k);
    for h in 0..heads {
        let x: Vec<u64> = slice(&x_c, h, n * d)
            .iter()
            .zip(slice(&x_s, h, n * d))
            .map(|(a, b)| a.wrapping_add(*b))
            .collect();
        let y: Vec<i64> = slice(&y_c, h, d * k)
            .iter()
            .zip(slice(&y_s, h, d * k))
            .map(|(a, b)| a.wrapping_add(*b) as i64)
            .collect();
        want.extend(plain_matmul(&x, &y, &vec![0; k], n, d, k, mask));
    }
    let err = ring_err(&got, &want, params.ring_bits());
    let op = op_row(
        format!("matmul-shared[{heads}x{n}x{d}x{k}]"),
        "matmul-shared",
        "he",
        &cli,
        &s_online,
        &cost,
    );
    Ok(report(
        format!(
            "op:matmul-shared {heads}x{n}x{d}x{k} l={} {} key_switches={}",
            params.ring_bits(),
            params_name(&params),
            cost.key_switches
        ),
        n,
        protocol,
        wall,
        cli.setup_s,
        &cli,
        &s_online,
        &s_setup,
        err,
        op,
        baseline_row("matmul-shared", baseline),
    ))
}

fn slice(v: &[u64], h: usize, len: usize) -> &[u64] {
    v.get(h * len..(h + 1) * len).unwrap_or(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_ops_are_exact_and_match_their_cost() {
        for (kind, shape) in [("matmul", "5x7x3"), ("matmul-shared", "2x5x7x3")] {
            let r = run(kind, shape, "duet").unwrap();
            assert_eq!(r.accuracy.max_abs_err, 0.0, "{kind}");
            assert_eq!(r.ops[0].bytes, r.ops[0].predicted_bytes, "{kind}");
            assert_eq!(r.bytes.total, r.ops[0].bytes);
            assert_eq!(r.rounds, 2);
            assert!(r.bytes.setup > 0);
        }
        assert!(run("matmul", "5x7", "duet").is_err());
        assert!(run("matmul", "5x0x3", "duet").is_err());
        assert!(run("matmul", "5x7x3", "nope").is_err());
    }

    #[test]
    fn serverkey_matmul_is_exact_and_matches_its_cost() {
        for protocol in [
            "duet-serverkey",
            "duet-serverkey-lean",
            "duet-serverkey-minbytes",
        ] {
            let r = run("matmul", "9x70x20", protocol).unwrap();
            assert_eq!(r.accuracy.max_abs_err, 0.0, "{protocol}");
            assert_eq!(r.ops[0].bytes, r.ops[0].predicted_bytes, "{protocol}");
            assert_eq!(r.bytes.total, r.ops[0].bytes);
            assert_eq!(r.bytes.server_to_client, 0);
            assert_eq!(r.rounds, 1);
            assert_eq!(r.bytes.setup, 0);
            assert!(r.bytes.cached > 0);
        }
        assert!(run("matmul", "9x70x20", "duet-serverkey-nope").is_err());
        // the target shapes: server-key has fewer online bytes and a model that fits
        for s in [(128, 768, 768), (128, 768, 3072), (128, 3072, 768)] {
            let shape = MatmulShape::new(s.0, s.1, s.2);
            assert_eq!(
                auto_choice(shape).unwrap(),
                AutoChoice::ServerKey,
                "{shape}"
            );
        }
        let r = run("matmul", "9x70x20", "duet-auto").unwrap();
        assert_eq!(r.accuracy.max_abs_err, 0.0);
        assert_eq!(r.protocol, "duet-auto");
    }
}
