//! `duet calibrate`: measures this machine's constants of the cost model
//! ([`MachineProfile`]) with micro-benchmarks, then checks the fitted model on a few operators.
//!
//! Every benchmark runs both parties in this process on two threads over the in-memory pair
//! (no network; `--link quic`: a fresh loopback QUIC connection per run instead), starts both
//! clocks after a barrier and takes the slower party's time; each figure is the median of a
//! few repetitions. The deployment constants (two processes, a shaped network) are fitted
//! separately by `duet calibrate --harness` ([`crate::calibrate::harness`]); this step writes
//! them neutral (factor 1, no transport cost). The constants are fitted one group at a time,
//! each on what is left after the constants already known:
//! 1. `flight_s`: ping-pong of one-byte messages (seconds per one-way flight);
//! 2. `byte_s`: one-way bulk transfer of 1 MiB messages (seconds per payload byte);
//! 3. `ferret_iteration_s`: a reservation that runs exactly one main iteration per direction;
//! 4. `cot_s` (Ferret, COTs pooled ahead) and `iknp_cot_s`: truncations, comparisons and
//!    products, `(t - bytes byte_s - flights flight_s) / COTs` summed over the runs;
//!    then `ot_matmul_word_s`: OT-based matrix products (Ferret COTs pooled ahead) on what
//!    the constants before leave;
//! 5. `he_product_s`, `key_switch_s`, `he_encrypt_s`, `he_decrypt_s`: HE matmuls of several
//!    shapes and layouts (the server's weights encoded on the fly, as the executor does),
//!    including one with many inputs and one output and one with the reverse (so that the
//!    encryption and decryption counts are not collinear), fitted by non-negative least
//!    squares;
//! 6. `slot_product_s`: slot-encoded element-wise products.
//!
//! The check runs a 128x768x768 matmul, GELU on 128x3072, SoftMax on 12x128x128 and LayerNorm
//! on 128x768 (Duet's approximations, Ferret and IKNP COTs) from a fresh session (the Ferret
//! iterations an operator triggers are in its time and in its prediction) and prints predicted
//! over measured seconds.

pub mod harness;
use crate::{median, DuetError};
use duet_fhe::{Preset as HePreset, RingBits, RlweParameters, SlotParameters, WeightBound};
use duet_mpc::nonlinear::{self as nl, CotBackend, CotCount, NlConfig, NlSession, TruncMode};
use duet_mpc::ot::ferret::iteration_cost;
use duet_mpc::{AShare, FixedPoint, Prg, Ring};
use duet_protocols::cost_model::{
    he_work, nl_work, MachineProfile, Work, WORK_FEATURES, WORK_NAMES,
};
use duet_protocols::embedding::EMBEDDING_POLICY;
use duet_protocols::nonlinear::activation::{gelu, gelu_cost, ActFormat, GeluApprox};
use duet_protocols::nonlinear::norm::{norm, norm_cost, NormKind, NormWeights};
use duet_protocols::nonlinear::softmax::{softmax, softmax_cost};
use duet_protocols::{
    HeClientSetup, HeElementwiseMul, HeMatMul, HeMulClientSetup, HeMulServerSetup, HeServerSetup,
    HeWeights, LayoutPolicy, MatmulPlan, MatmulShape, PrepareMode, Preset, PrivateEmbedding,
    ProtocolConfig,
};
use duet_transport::quic::{QuicChannel, QuicRuntime};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role, Session};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::Arc;
use std::time::Instant;

const BITS: u32 = 37;
const FRAC: u32 = 12;

/// One check: an operator's predicted and measured seconds on the in-memory pair.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Operator, shape and COT backend.
    pub name: String,
    /// `compute_s` of the cost model (plus its flights and bytes at the in-memory constants).
    pub predicted_s: f64,
    /// Median measured seconds.
    pub measured_s: f64,
}

impl Check {
    /// Predicted over measured.
    pub fn ratio(&self) -> f64 {
        self.predicted_s / self.measured_s
    }
}

fn ring() -> Result<Ring, DuetError> {
    Ok(Ring::new(BITS)?)
}

fn barrier(ch: &mut Ch) -> Result<(), DuetError> {
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    Ok(())
}

/// Runs `f` after a barrier; its seconds and traffic.
fn timed<T>(
    ch: &mut Ch,
    f: impl FnOnce(&mut Ch) -> Result<T, DuetError>,
) -> Result<(f64, ChannelStats, T), DuetError> {
    barrier(ch)?;
    let before = ch.stats();
    let t = Instant::now();
    let out = f(ch)?;
    Ok((t.elapsed().as_secs_f64(), ch.stats() - before, out))
}

type Timed = Result<(f64, ChannelStats), DuetError>;

/// The channel of a benchmark party: the in-memory pair or a loopback QUIC connection.
enum Ch {
    Memory(MemoryChannel),
    Quic(QuicChannel),
}

/// Forwards a call to the channel inside a [`Ch`].
macro_rules! on_ch {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            Ch::Memory($c) => $e,
            Ch::Quic($c) => $e,
        }
    };
}

impl Channel for Ch {
    fn send_bytes(&mut self, data: &[u8]) -> duet_transport::Result<()> {
        on_ch!(self, c => c.send_bytes(data))
    }
    fn recv_bytes_max(&mut self, max: usize) -> duet_transport::Result<Vec<u8>> {
        on_ch!(self, c => c.recv_bytes_max(max))
    }
    fn recv_bytes(&mut self) -> duet_transport::Result<Vec<u8>> {
        on_ch!(self, c => c.recv_bytes())
    }
    fn flush(&mut self) -> duet_transport::Result<()> {
        on_ch!(self, c => c.flush())
    }
    fn max_frame(&self) -> u64 {
        on_ch!(self, c => c.max_frame())
    }
    fn set_max_frame(&mut self, max: u64) {
        on_ch!(self, c => c.set_max_frame(max))
    }
    fn stats(&self) -> ChannelStats {
        on_ch!(self, c => c.stats())
    }
    fn peer(&self) -> &str {
        on_ch!(self, c => c.peer())
    }
    fn send_u64s(&mut self, data: &[u64]) -> duet_transport::Result<()> {
        on_ch!(self, c => c.send_u64s(data))
    }
    fn recv_u64s_max(&mut self, max: usize) -> duet_transport::Result<Vec<u64>> {
        on_ch!(self, c => c.recv_u64s_max(max))
    }
    fn recv_u64s(&mut self) -> duet_transport::Result<Vec<u64>> {
        on_ch!(self, c => c.recv_u64s())
    }
}

/// Where the two parties of every calibration benchmark talk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Link {
    /// The in-memory pair (two threads, no transport).
    #[default]
    Memory,
    /// A QUIC connection over loopback between two threads of this process (a fresh
    /// connection per benchmark run): the transport's CPU per byte and per flight are in
    /// every measured time, as in a run between two processes.
    QuicLoopback,
}

impl Link {
    /// The name used on the command line and in the profile.
    pub fn name(self) -> &'static str {
        match self {
            Link::Memory => "memory",
            Link::QuicLoopback => "quic",
        }
    }

    /// Parses a `--link` value.
    pub fn from_name(s: &str) -> Result<Self, DuetError> {
        match s {
            "memory" => Ok(Link::Memory),
            "quic" => Ok(Link::QuicLoopback),
            other => Err(DuetError::Usage(format!(
                "unknown calibration link {other:?} (memory or quic)"
            ))),
        }
    }
}

/// Both parties; the slower party's seconds and the client's view of the traffic.
fn pair<S, C>(link: Link, server: S, client: C) -> Result<(f64, ChannelStats), DuetError>
where
    S: FnOnce(Ch) -> Timed + Send,
    C: FnOnce(Ch) -> Timed + Send,
{
    let (s, c) = match link {
        Link::Memory => run_two_party(|ch| server(Ch::Memory(ch)), |ch| client(Ch::Memory(ch))),
        Link::QuicLoopback => quic_pair(server, client)?,
    };
    let ((ts, _), (tc, stats)) = (s?, c?);
    Ok((ts.max(tc), stats))
}

/// Runs `server` and `client` on two threads joined by a fresh loopback QUIC connection
/// (Duet's transport with its default configuration), then closes it.
fn quic_pair<S, C>(server: S, client: C) -> Result<(Timed, Timed), DuetError>
where
    S: FnOnce(Ch) -> Timed + Send,
    C: FnOnce(Ch) -> Timed + Send,
{
    let rt = QuicRuntime::recommended()?;
    let (ss, cs) = crate::ops::transport::quic_loopback(&rt)?;
    std::thread::scope(|scope| {
        let s = scope.spawn(move || -> Result<Timed, DuetError> {
            let out = server(Ch::Quic(ss.channel(0)?));
            ss.close()?;
            Ok(out)
        });
        let c = (|| -> Result<Timed, DuetError> {
            let out = client(Ch::Quic(cs.channel(0)?));
            cs.close()?;
            Ok(out)
        })();
        let s = s
            .join()
            .map_err(|_| DuetError::ThreadPanicked("calibration server"))?;
        Ok((s?, c?))
    })
}

/// Median seconds of `reps` runs of `run` (and the traffic of the last).
fn med(
    reps: usize,
    mut run: impl FnMut() -> Result<(f64, ChannelStats), DuetError>,
) -> Result<(f64, ChannelStats), DuetError> {
    let mut ts = Vec::new();
    let mut last = ChannelStats::default();
    for _ in 0..reps.max(1) {
        let (t, s) = run()?;
        ts.push(t);
        last = s;
    }
    Ok((median(&mut ts), last))
}

fn traffic_work(s: &ChannelStats) -> Work {
    Work {
        bytes: s.total_bytes() as f64,
        flights: s.total_rounds() as f64,
        ..Work::default()
    }
}

/// Random shares of values uniform in `[-a, a]` at `f` fractional bits.
fn shares(n: usize, a: f64, f: u32, seed: u64) -> Result<(AShare, AShare), DuetError> {
    let r = ring()?;
    let fp = FixedPoint::new(r, f)?;
    let mut prg = Prg::from_seed(seed_of(seed));
    let mut xs = Vec::with_capacity(n);
    let mut cs = Vec::with_capacity(n);
    for _ in 0..n {
        let u = (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64;
        let x = fp.encode((2.0 * u - 1.0) * a);
        let c = prg.ring_element(r);
        xs.push(r.sub(x, c));
        cs.push(c);
    }
    Ok((AShare::new(r, vec![n], xs)?, AShare::new(r, vec![n], cs)?))
}

fn seed_of(s: u64) -> duet_mpc::Seed {
    let mut b = [0u8; 32];
    for (d, v) in b.iter_mut().zip(s.to_le_bytes()) {
        *d = v;
    }
    b
}

fn flight_s(link: Link, reps: usize) -> Result<f64, DuetError> {
    const N: usize = 2000;
    let ping = |first: bool| {
        move |mut ch: Ch| -> Timed {
            let (t, s, _) = timed(&mut ch, |ch| {
                for _ in 0..N {
                    if first {
                        ch.send_bytes(&[1])?;
                        ch.flush()?;
                        ch.recv_bytes()?;
                    } else {
                        ch.recv_bytes()?;
                        ch.send_bytes(&[1])?;
                        ch.flush()?;
                    }
                }
                Ok(())
            })?;
            Ok((t, s))
        }
    };
    let (t, _) = med(reps, || pair(link, ping(true), ping(false)))?;
    Ok(t / (2 * N) as f64)
}

fn byte_s(link: Link, reps: usize, flight: f64) -> Result<f64, DuetError> {
    const MSG: usize = 1 << 20;
    const COUNT: usize = 64;
    let (t, s) = med(reps, || {
        pair(
            link,
            |mut ch| {
                let buf = vec![7u8; MSG];
                let (t, s, _) = timed(&mut ch, |ch| {
                    for _ in 0..COUNT {
                        ch.send_bytes(&buf)?;
                    }
                    ch.flush()?;
                    ch.recv_bytes()?;
                    Ok(())
                })?;
                Ok((t, s))
            },
            |mut ch| {
                let (t, s, _) = timed(&mut ch, |ch| {
                    for _ in 0..COUNT {
                        ch.recv_bytes()?;
                    }
                    ch.send_bytes(&[1])?;
                    ch.flush()?;
                    Ok(())
                })?;
                Ok((t, s))
            },
        )
    })?;
    Ok(((t - 2.0 * flight) / s.total_bytes().max(1) as f64).max(0.0))
}

/// A fresh session with `cfg`, then `op` timed (after reserving `reserve` COTs untimed).
fn nl_pair<F>(
    link: Link,
    cfg: NlConfig,
    reserve: CotCount,
    op: F,
) -> Result<(f64, ChannelStats), DuetError>
where
    F: Fn(Role, &mut NlSession, &mut Ch) -> Result<(), DuetError> + Sync,
{
    let party = |role: Role| {
        let op = &op;
        move |mut ch: Ch| -> Timed {
            let mut rng = ChaCha20Rng::from_entropy();
            let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg)?;
            s.reserve(&mut ch, reserve)?;
            let (t, st, _) = timed(&mut ch, |ch| op(role, &mut s, ch))?;
            Ok((t, st))
        }
    };
    pair(link, party(Role::Server), party(Role::Client))
}

fn ferret_iteration_s(link: Link, reps: usize) -> Result<f64, DuetError> {
    let cfg = NlConfig::default();
    let CotBackend::Ferret(p) = cfg.cot else {
        return Ok(0.0);
    };
    let c = p.cots_per_iteration() as u64;
    let need = CotCount {
        server_sends: c,
        client_sends: c,
    };
    let (t, _) = med(reps, || {
        nl_pair(link, cfg, CotCount::default(), |_, s, ch| {
            s.reserve(ch, need)?;
            Ok(())
        })
    })?;
    Ok(t / 2.0)
}

/// A non-linear operator of the calibration and the check (Duet's approximations and the
/// executor's formats).
#[derive(Clone, Copy, Debug)]
enum NlOp {
    /// Known-MSB truncation by `f` of `n` offset values (the executor's rescaling).
    Trunc(usize),
    /// GELU on `n` values in `[-8, 8]`.
    Gelu(usize),
    /// SoftMax on `rows x k` scores with 10 fractional bits.
    Softmax(usize, usize),
    /// LayerNorm on `rows x k` values in `[-4, 4]`.
    Norm(usize, usize),
}

impl NlOp {
    fn name(self) -> String {
        match self {
            NlOp::Trunc(n) => format!("trunc {n}"),
            NlOp::Gelu(n) => format!("gelu {n}"),
            NlOp::Softmax(r, k) => format!("softmax {r}x{k}"),
            NlOp::Norm(r, k) => format!("layernorm {r}x{k}"),
        }
    }

    fn fmt() -> Result<ActFormat, DuetError> {
        Ok(ActFormat::new(ring()?, FRAC, 6)?)
    }

    fn norm_cfg() -> duet_protocols::nonlinear::norm::NormConfig {
        let mut c = ProtocolConfig::preset(Preset::Duet).norm.config(FRAC);
        c.in_bits = 9;
        c.gamma_bits = 3;
        c.out_bits = c.ring_bits.max(BITS);
        c
    }

    fn cost(self, cfg: NlConfig) -> Result<nl::Cost, DuetError> {
        let r = ring()?;
        let duet = ProtocolConfig::preset(Preset::Duet);
        Ok(match self {
            NlOp::Trunc(n) => nl::trunc_cost(n, r, FRAC, TruncMode::KnownMsb(false), cfg),
            NlOp::Gelu(n) => gelu_cost(n, Self::fmt()?, GeluApprox::Duet, cfg)?,
            NlOp::Softmax(rows, k) => softmax_cost(&[rows, k], r, 10, &duet.softmax.config(), cfg)?,
            NlOp::Norm(rows, k) => norm_cost(
                NormKind::LayerNorm,
                &[rows, k],
                r,
                FRAC,
                &Self::norm_cfg(),
                cfg,
            )?,
        })
    }

    fn run(self, role: Role, s: &mut NlSession, ch: &mut Ch) -> Result<(), DuetError> {
        let r = ring()?;
        let pick = |(a, b): (AShare, AShare)| if role == Role::Server { a } else { b };
        match self {
            NlOp::Trunc(n) => {
                let x = pick(shares(n, 100.0, FRAC, 11)?);
                // offset to be non-negative, as the executor's truncations
                let y = duet_mpc::fixed_math::exp::add_const(&x, role, 1 << (BITS - 2))?;
                nl::trunc(s, ch, &y, FRAC, TruncMode::KnownMsb(false))?;
            }
            NlOp::Gelu(n) => {
                let x = pick(shares(n, 8.0, FRAC, 21)?);
                gelu(s, ch, &x, Self::fmt()?, GeluApprox::Duet)?;
            }
            NlOp::Softmax(rows, k) => {
                let x = pick(shares(rows * k, 8.0, 10, 22)?);
                let x = AShare::new(r, vec![rows, k], x.into_data())?;
                let cfg = ProtocolConfig::preset(Preset::Duet).softmax.config();
                softmax(s, ch, &x, 10, None, &cfg)?;
            }
            NlOp::Norm(rows, k) => {
                let x = pick(shares(rows * k, 4.0, FRAC, 23)?);
                let x = AShare::new(r, vec![rows, k], x.into_data())?;
                let w = NormWeights {
                    gamma: vec![1.0; k],
                    beta: vec![0.0; k],
                };
                let w = (role == Role::Server).then_some(&w);
                norm(s, ch, NormKind::LayerNorm, &x, FRAC, w, &Self::norm_cfg())?;
            }
        }
        Ok(())
    }
}

/// Samples of the non-linear operators with `cfg` (COTs pooled ahead, so no Ferret
/// iteration is timed): seconds and work.
fn nl_samples(
    link: Link,
    cfg: NlConfig,
    quick: bool,
    reps: usize,
) -> Result<Vec<(f64, Work)>, DuetError> {
    let s = if quick { 1 } else { 2 };
    let ops = [
        NlOp::Trunc(s << 18),
        NlOp::Gelu(s * 16 * 3072),
        NlOp::Softmax(s * 2 * 128, 128),
        NlOp::Norm(s * 16, 768),
    ];
    let mut out = Vec::new();
    for op in ops {
        let (c, w) = nl_work(cfg, |nc| op.cost(nc).map_err(to_protocol))?;
        let (t, st) = med(reps, || {
            nl_pair(link, cfg, c.cots, |role, s, ch| op.run(role, s, ch))
        })?;
        eprintln!(
            "calibrate: {} ({}): {t:.3} s, {} COTs, {} KK13 leaves, {} B",
            op.name(),
            if cfg.cot == CotBackend::Iknp {
                "iknp"
            } else {
                "ferret"
            },
            c.cots.total(),
            w.kk13_leaves,
            st.total_bytes()
        );
        out.push((
            t,
            Work {
                bytes: st.total_bytes() as f64,
                flights: st.total_rounds() as f64,
                ..w
            },
        ));
    }
    Ok(out)
}

/// OT-based matrix products (the server holds the matrix, COTs pooled ahead as the
/// executor's reservation does): seconds and work, for fitting `ot_matmul_word_s`.
fn ot_matmul_samples(link: Link, quick: bool, reps: usize) -> Result<Vec<(f64, Work)>, DuetError> {
    let cfg = NlConfig::default();
    let r = ring()?;
    let shapes: &[(usize, usize, usize)] = if quick {
        &[(4, 768, 768), (16, 128, 128)]
    } else {
        &[(8, 768, 768), (2, 768, 3072), (64, 128, 128)]
    };
    let mut out = Vec::new();
    for &(n, d, k) in shapes {
        let shape = nl::MatShape::new(1, n, d, k)?;
        let (c, w) = nl_work(cfg, |nc| {
            Ok(nl::matmul_known_cost(shape, r, nc, Role::Server))
        })?;
        let (xs, _) = shares(n * d, 4.0, FRAC, 31)?;
        let (ws, _) = shares(d * k, 4.0, FRAC, 32)?;
        let (t, st) = med(reps, || {
            nl_pair(link, cfg, c.cots, |role, s, ch| {
                if role == Role::Server {
                    nl::matmul_known_holder(s, ch, shape, ws.data(), r)?;
                } else {
                    nl::matmul_known_chooser(s, ch, shape, xs.data(), r)?;
                }
                Ok(())
            })
        })?;
        let words = nl::matmul_known_words(shape, r) as f64;
        eprintln!(
            "calibrate: ot matmul {n}x{d}x{k}: {t:.3} s, {} COTs, {words} words, {} B",
            c.cots.total(),
            st.total_bytes()
        );
        out.push((
            t,
            Work {
                bytes: st.total_bytes() as f64,
                flights: st.total_rounds() as f64,
                ot_matmul_words: words,
                ..w
            },
        ));
    }
    Ok(out)
}

/// One HE matmul of `shape` with `policy`: seconds, traffic and the HE counts.
fn he_matmul_sample(
    link: Link,
    params: &Arc<RlweParameters>,
    shape: MatmulShape,
    policy: LayoutPolicy,
    reps: usize,
) -> Result<(f64, Work), DuetError> {
    let plan = MatmulPlan::new(params, shape, policy)?;
    let (xs, xc) = shares(shape.n * shape.d, 4.0, FRAC, 3)?;
    let (xs, xc) = (xs.data().to_vec(), xc.data().to_vec());
    let mut prg = Prg::from_seed(seed_of(5));
    let w: Vec<i64> = (0..shape.d * shape.k)
        .map(|_| (prg.ring_element(Ring::z64()) % 8191) as i64 - 4095)
        .collect();
    let (t, st) = med(reps, || {
        pair(
            link,
            |mut ch| {
                let setup = HeServerSetup::run(&mut ch, params)?;
                let mut rng = ChaCha20Rng::from_entropy();
                let (t, s, _) = timed(&mut ch, |ch| {
                    let mut hw = HeWeights::new(params, shape.d, shape.k, w.clone(), None)?;
                    hw.prepare(shape.n, policy, PrepareMode::OnTheFly)?;
                    HeMatMul::run_server(ch, &setup, &hw, shape.n, Some(&xs), &mut rng)?;
                    Ok(())
                })?;
                Ok((t, s))
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::from_entropy();
                let setup = HeClientSetup::run(&mut ch, params, &mut rng)?;
                let (t, s, _) = timed(&mut ch, |ch| {
                    HeMatMul::run_client(ch, &setup, shape, policy, &xc, &mut rng)?;
                    Ok(())
                })?;
                Ok((t, s))
            },
        )
    })?;
    Ok((t, he_work(&plan) + traffic_work(&st)))
}

fn lin_params() -> Result<Arc<RlweParameters>, DuetError> {
    // the executor's linear layers: weights below 2^(4 + 12)
    Ok(RlweParameters::preset(
        HePreset::N8192Q200Pack,
        RingBits(BITS),
        WeightBound::MaxAbs(1 << 16),
    )
    .map_err(duet_protocols::ProtocolError::from)?)
}

/// Non-negative least squares for the constants named `names` on what `known` (zero for
/// those constants) leaves of each sample's seconds (active set: the most negative
/// coefficient is dropped and the rest refitted).
fn fit(samples: &[(f64, Work)], known: &MachineProfile, names: &[&str]) -> Vec<f64> {
    let cols: Vec<usize> = names
        .iter()
        .filter_map(|n| WORK_NAMES.iter().position(|w| w == n))
        .collect();
    let mut active = vec![true; cols.len()];
    loop {
        let idx: Vec<usize> = (0..cols.len())
            .filter(|&i| active.get(i) == Some(&true))
            .collect();
        let m = idx.len();
        let mut a = vec![vec![0.0; m + 1]; m];
        for (t, w) in samples {
            let v = w.values();
            let f = |i: usize| cols.get(i).and_then(|&c| v.get(c)).copied().unwrap_or(0.0);
            let y = t - known.seconds(w);
            for (r, &i) in idx.iter().enumerate() {
                if let Some(row) = a.get_mut(r) {
                    for (c, &j) in idx.iter().enumerate() {
                        if let Some(x) = row.get_mut(c) {
                            *x += f(i) * f(j);
                        }
                    }
                    if let Some(x) = row.get_mut(m) {
                        *x += f(i) * y;
                    }
                }
            }
        }
        let x = solve(a);
        let worst = x
            .iter()
            .enumerate()
            .filter(|(_, v)| **v < 0.0)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(r, _)| r);
        match worst.and_then(|r| idx.get(r)) {
            Some(&i) => {
                if let Some(a) = active.get_mut(i) {
                    *a = false;
                }
            }
            None => {
                let mut out = vec![0.0; cols.len()];
                for (r, &i) in idx.iter().enumerate() {
                    if let Some(o) = out.get_mut(i) {
                        *o = x.get(r).copied().unwrap_or(0.0);
                    }
                }
                return out;
            }
        }
    }
}

const HE_NAMES: [&str; 4] = [
    "he_product_s",
    "key_switch_s",
    "he_encrypt_s",
    "he_decrypt_s",
];

/// Gaussian elimination with partial pivoting on an augmented `m x (m+1)` system (singular
/// columns give 0).
fn solve(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let m = a.len();
    for col in 0..m {
        let piv = (col..m).max_by(|&i, &j| {
            let vi = a.get(i).and_then(|r| r.get(col)).map_or(0.0, |v| v.abs());
            let vj = a.get(j).and_then(|r| r.get(col)).map_or(0.0, |v| v.abs());
            vi.total_cmp(&vj)
        });
        let Some(piv) = piv else { continue };
        a.swap(col, piv);
        let p_row = a.get(col).cloned().unwrap_or_default();
        let p = p_row.get(col).copied().unwrap_or(0.0);
        if p.abs() < 1e-300 {
            continue;
        }
        for (i, row) in a.iter_mut().enumerate() {
            if i == col {
                continue;
            }
            let f = row.get(col).copied().unwrap_or(0.0) / p;
            for (v, pv) in row.iter_mut().zip(&p_row) {
                *v -= f * pv;
            }
        }
    }
    (0..m)
        .map(|i| {
            let row = a.get(i);
            let d = row.and_then(|r| r.get(i)).copied().unwrap_or(0.0);
            let b = row.and_then(|r| r.get(m)).copied().unwrap_or(0.0);
            if d.abs() < 1e-300 {
                0.0
            } else {
                b / d
            }
        })
        .collect()
}

fn slot_sample(link: Link, n: usize, reps: usize) -> Result<(f64, Work), DuetError> {
    let params =
        SlotParameters::new(RingBits(BITS)).map_err(duet_protocols::ProtocolError::from)?;
    let (xs, xc) = shares(n, 4.0, FRAC, 9)?;
    let (t, st) = med(reps, || {
        pair(
            link,
            |mut ch| {
                let k = HeMulServerSetup::run(&mut ch, &params)?;
                let mut rng = ChaCha20Rng::from_entropy();
                let (t, s, _) = timed(&mut ch, |ch| {
                    HeElementwiseMul::run_server(ch, &k, &xs, &xs, &mut rng)?;
                    Ok(())
                })?;
                Ok((t, s))
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::from_entropy();
                let k = HeMulClientSetup::run(&mut ch, &params, &mut rng)?;
                let (t, s, _) = timed(&mut ch, |ch| {
                    HeElementwiseMul::run_client(ch, &k, &xc, &xc, &mut rng)?;
                    Ok(())
                })?;
                Ok((t, s))
            },
        )
    })?;
    let c = HeElementwiseMul::cost(n, &params);
    Ok((
        t,
        Work {
            slot_products: c.products as f64,
            ..traffic_work(&st)
        },
    ))
}

/// The work of a non-linear operator run from a fresh session (its Ferret iterations
/// included: both pools start with the setup iteration's leftover).
fn fresh_work(op: NlOp, cfg: NlConfig) -> Result<Work, DuetError> {
    let (c, mut w) = nl_work(cfg, |nc| op.cost(nc).map_err(to_protocol))?;
    if let CotBackend::Ferret(p) = cfg.cot {
        let p0 = p.setup().n.saturating_sub(p.main().base_cots()) as u64;
        let per = p.cots_per_iteration().max(1) as u64;
        let it: u64 = [c.cots.server_sends, c.cots.client_sends]
            .iter()
            .map(|&d| d.saturating_sub(p0).div_ceil(per))
            .sum();
        let one = iteration_cost(&p.main());
        w.ferret_iterations = it as f64;
        w.bytes += (it * one.bytes()) as f64;
        w.flights += (it * one.rounds()) as f64;
    }
    Ok(w)
}

fn to_protocol(e: DuetError) -> duet_protocols::ProtocolError {
    match e {
        DuetError::Protocol(p) => p,
        DuetError::Mpc(m) => m.into(),
        other => duet_protocols::ProtocolError::Config(other.to_string()),
    }
}

/// The operators of the check, with Ferret and with IKNP.
fn checks(link: Link, profile: &MachineProfile, reps: usize) -> Result<Vec<Check>, DuetError> {
    let mut out = Vec::new();
    // matmul 128x768x768 (fewest bytes, as `duet`)
    let params = lin_params()?;
    let shape = MatmulShape::new(128, 768, 768);
    let (t, _) = he_matmul_sample(link, &params, shape, LayoutPolicy::MinBytes, reps)?;
    let plan = MatmulPlan::new(&params, shape, LayoutPolicy::MinBytes)?;
    let c = plan.cost();
    let pw = he_work(&plan)
        + Work {
            bytes: c.bytes as f64,
            flights: c.rounds as f64,
            ..Work::default()
        };
    out.push(Check {
        name: "matmul 128x768x768".into(),
        predicted_s: profile.seconds(&pw),
        measured_s: t,
    });
    for (label, cfg) in [("ferret", NlConfig::default()), ("iknp", NlConfig::iknp())] {
        for op in [
            NlOp::Gelu(128 * 3072),
            NlOp::Softmax(12 * 128, 128),
            NlOp::Norm(128, 768),
        ] {
            // from a fresh session: the Ferret iterations it triggers are timed and predicted
            let (t, _) = med(reps, || {
                nl_pair(link, cfg, CotCount::default(), |role, s, ch| {
                    op.run(role, s, ch)
                })
            })?;
            let w = fresh_work(op, cfg)?;
            eprintln!(
                "check: {} {label}: {} COTs, {} KK13 leaves, {} Ferret iterations, {} B",
                op.name(),
                w.cots + w.iknp_cots,
                w.kk13_leaves,
                w.ferret_iterations,
                w.bytes
            );
            out.push(Check {
                name: format!("{} {label}", op.name()),
                predicted_s: profile.seconds(&w),
                measured_s: t,
            });
        }
    }
    Ok(out)
}

/// Measures this machine's profile (`quick`: fewer repetitions and smaller samples) and runs
/// the check; prints progress and the check's ratios to stderr.
pub fn calibrate_with_checks(
    link: Link,
    quick: bool,
) -> Result<(MachineProfile, Vec<Check>), DuetError> {
    let reps = if quick { 1 } else { 3 };
    let mut v = [0.0; WORK_FEATURES];
    let set = |v: &mut [f64; WORK_FEATURES], name: &str, x: f64| {
        if let Some(i) = WORK_NAMES.iter().position(|n| *n == name) {
            if let Some(d) = v.get_mut(i) {
                *d = x;
            }
        }
        eprintln!("calibrate: {name} = {x:.3e}");
    };
    let flight = flight_s(link, reps.max(3))?;
    set(&mut v, "flight_s", flight);
    set(&mut v, "byte_s", byte_s(link, reps.max(3), flight)?);
    set(
        &mut v,
        "ferret_iteration_s",
        ferret_iteration_s(link, reps)?,
    );
    let known = MachineProfile::from_constants(v);
    let ferret = nl_samples(link, NlConfig::default(), quick, reps)?;
    for (name, x) in ["cot_s"].iter().zip(fit(&ferret, &known, &["cot_s"])) {
        set(&mut v, name, x);
    }
    let iknp = nl_samples(link, NlConfig::iknp(), quick, reps)?;
    let names = ["iknp_cot_s", "kk13_leaf_s"];
    for (name, x) in names.iter().zip(fit(&iknp, &known, &names)) {
        set(&mut v, name, x);
    }
    let known = MachineProfile::from_constants(v);
    let ot = ot_matmul_samples(link, quick, reps)?;
    let names = ["ot_matmul_word_s"];
    for (name, x) in names.iter().zip(fit(&ot, &known, &names)) {
        set(&mut v, name, x);
    }
    let known = MachineProfile::from_constants(v);
    let params = lin_params()?;
    let shapes: Vec<(MatmulShape, LayoutPolicy)> = {
        let m = |n, d, k| MatmulShape::new(n, d, k);
        let fks = LayoutPolicy::FewestKeySwitches { max_bytes: 1 << 30 };
        let mut s = vec![
            (m(16, 768, 768), LayoutPolicy::MinBytes),
            (m(16, 768, 768), LayoutPolicy::ExtractionOnly),
            (m(64, 768, 768), LayoutPolicy::MinBytes),
            (m(64, 768, 768), fks),
            (m(4, 128, 3072), LayoutPolicy::MinBytes),
            // encryptions without decryptions (12 inputs, 1 output) and the reverse (1 input,
            // 12 outputs): in the layouts above the two counts grow together (about 1 : 4 in
            // the extraction-only ones), so without these the fit cannot tell them apart
            (m(128, 768, 64), LayoutPolicy::MinBytes),
            (m(128, 64, 768), LayoutPolicy::MinBytes),
        ];
        if !quick {
            s.push((m(128, 768, 768), LayoutPolicy::ExtractionOnly));
            s.push((m(32, 3072, 768), LayoutPolicy::MinBytes));
        }
        s
    };
    let mut samples = Vec::new();
    for (shape, policy) in shapes {
        samples.push(he_matmul_sample(link, &params, shape, policy, reps)?);
    }
    for (name, x) in HE_NAMES.iter().zip(fit(&samples, &known, &HE_NAMES)) {
        set(&mut v, name, x);
    }
    let known = MachineProfile::from_constants(v);
    // the embedding lookup's products at N = 4096 (a vocabulary of 4096 or 8192 rows)
    let emb = PrivateEmbedding::params(BITS, 1 << 16, 1 << 15)?;
    let vocab = if quick { 4096 } else { 8192 };
    let sample = he_matmul_sample(
        link,
        &emb,
        MatmulShape::new(8, vocab, 768),
        EMBEDDING_POLICY,
        reps,
    )?;
    for (name, x) in
        ["he_product_4096_s"]
            .iter()
            .zip(fit(&[sample], &known, &["he_product_4096_s"]))
    {
        set(&mut v, name, x);
    }
    let known = MachineProfile::from_constants(v);
    let (t, w) = slot_sample(link, if quick { 1 << 14 } else { 1 << 16 }, reps)?;
    let slot = ((t - known.seconds(&w)) / w.slot_products.max(1.0)).max(0.0);
    set(&mut v, "slot_product_s", slot);
    let mut profile = MachineProfile::from_constants(v);
    profile.machine = machine_name();
    profile.measured = format!(
        "{} by `duet calibrate --link {}`{} (release build: {}), load average at start {}",
        today(),
        link.name(),
        if quick { " --quick" } else { "" },
        !cfg!(debug_assertions),
        load_average()
    );
    let checks = printed_checks(link, &profile, reps)?;
    Ok((profile, checks))
}

/// `duet calibrate --check`: runs the check operators (module docs) on this machine now and
/// compares them with `profile`'s compute constants, without measuring new ones: whether the
/// machine is in the state the profile describes (a shared or throttled machine can run the
/// same work 1.5-2x slower for hours; predictions with a profile of another state are off by
/// as much). Prints each check and returns them.
pub fn check_profile(
    link: Link,
    profile: &MachineProfile,
    quick: bool,
) -> Result<Vec<Check>, DuetError> {
    printed_checks(link, profile, if quick { 1 } else { 3 })
}

/// [`checks`], each printed to stderr.
fn printed_checks(
    link: Link,
    profile: &MachineProfile,
    reps: usize,
) -> Result<Vec<Check>, DuetError> {
    let checks = checks(link, profile, reps)?;
    for c in &checks {
        eprintln!(
            "check: {:28} predicted {:8.3} s measured {:8.3} s ratio {:.2}",
            c.name,
            c.predicted_s,
            c.measured_s,
            c.ratio()
        );
    }
    Ok(checks)
}

/// The range of predicted / measured in which every check must lie for a machine to be in a
/// profile's state (`duet calibrate --check`).
pub const CHECK_BOUNDS: (f64, f64) = (0.8, 1.25);

/// The verdict on [`check_profile`]'s checks: the median ratio of predicted over measured
/// seconds, and whether every ratio lies in `[lo, hi]`.
pub fn check_verdict(checks: &[Check], lo: f64, hi: f64) -> (f64, bool) {
    let mut r: Vec<f64> = checks.iter().map(Check::ratio).collect();
    let all = !r.is_empty() && r.iter().all(|x| (lo..=hi).contains(x));
    (median(&mut r), all)
}

/// `duet calibrate [--quick]`: this machine's [`MachineProfile`] (see the module docs).
pub fn calibrate(link: Link, quick: bool) -> Result<MachineProfile, DuetError> {
    Ok(calibrate_with_checks(link, quick)?.0)
}

fn machine_name() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{cpu}, {cores} threads available")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // civil date from days since 1970-01-01 (Howard Hinnant's algorithm)
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_verdict_takes_the_median_and_needs_every_ratio_in_bounds() {
        let c = |p: f64, m: f64| Check {
            name: String::new(),
            predicted_s: p,
            measured_s: m,
        };
        let (median, all) = check_verdict(&[c(1.0, 1.0), c(0.9, 1.0), c(1.1, 1.0)], 0.8, 1.25);
        assert!((median - 1.0).abs() < 1e-12);
        assert!(all);
        // a machine running the work twice as slow as the profile says
        let (median, all) = check_verdict(&[c(1.0, 2.0), c(1.1, 2.2), c(1.0, 1.0)], 0.8, 1.25);
        assert!((median - 0.5).abs() < 1e-12, "{median}");
        assert!(!all);
        let (median, all) = check_verdict(&[], 0.8, 1.25);
        assert!(median.is_nan() && !all);
    }

    #[test]
    fn least_squares_recovers_constants_and_stays_non_negative() {
        let truth = [2e-3, 5e-3, 1e-3, 0.0];
        let known = MachineProfile::from_constants([0.0; WORK_FEATURES]);
        let pts = [
            [10.0, 2.0, 3.0, 4.0],
            [20.0, 0.0, 5.0, 9.0],
            [5.0, 7.0, 1.0, 2.0],
            [40.0, 1.0, 9.0, 1.0],
            [8.0, 3.0, 2.0, 7.0],
        ];
        let samples: Vec<(f64, Work)> = pts
            .iter()
            .map(|p| {
                let w = Work {
                    he_products: p[0],
                    key_switches: p[1],
                    encryptions: p[2],
                    decryptions: p[3],
                    ..Work::default()
                };
                let t: f64 = p.iter().zip(truth).map(|(a, b)| a * b).sum();
                (t, w)
            })
            .collect();
        let x = fit(&samples, &known, &HE_NAMES);
        for (a, b) in x.iter().zip(truth) {
            assert!((a - b).abs() < 1e-9, "{x:?}");
        }
        // a negative direction is dropped, not returned
        let samples: Vec<(f64, Work)> = samples
            .iter()
            .map(|(t, w)| (t - 1e-3 * w.decryptions, *w))
            .collect();
        assert!(fit(&samples, &known, &HE_NAMES).iter().all(|v| *v >= 0.0));
        assert_eq!(today().len(), 10);
    }

    /// Writes the profile: `DUET_PROFILE_OUT=protocols/profiles/default.json cargo test
    /// --release -p duet-bench --lib calibrate::tests::run_calibration -- --ignored --nocapture`
    /// (`DUET_CALIBRATE_QUICK=1` for the quick version).
    #[test]
    #[ignore = "minutes of benchmarks; run in release on a quiet machine"]
    fn run_calibration() {
        let quick = std::env::var("DUET_CALIBRATE_QUICK").is_ok();
        let (p, checks) = calibrate_with_checks(Link::Memory, quick).unwrap();
        println!("{}", p.to_json());
        for c in &checks {
            println!("{}: ratio {:.2}", c.name, c.ratio());
        }
        if let Ok(path) = std::env::var("DUET_PROFILE_OUT") {
            std::fs::write(&path, p.to_json()).unwrap();
            assert_eq!(
                MachineProfile::load(std::path::Path::new(&path)).unwrap(),
                p
            );
        }
    }
}
