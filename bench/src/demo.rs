//! `duet demo` and the two-machine `serve` / `connect` pair for the built-in payloads.

use crate::report::{peak_rss_bytes, Accuracy, Bytes, PeakRss, Report};
use crate::{share_demo, DuetError};
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::{Role, Session};
use std::net::SocketAddr;
use std::time::Instant;

/// Built-in payloads that need no files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Builtin {
    /// Secret-share one private tensor per party, add and scale, reveal to the client.
    ShareDemo,
}

impl Builtin {
    fn name(self) -> &'static str {
        match self {
            Builtin::ShareDemo => "share-demo",
        }
    }
}

/// Elements in the demo tensors.
pub const DEMO_LEN: usize = 4096;
const DEMO_SEED: u64 = 2026;

/// Both parties in one process over loopback QUIC (certificates generated and pinned
/// automatically). Returns the client's report.
pub fn run_demo(builtin: Builtin) -> Result<Report, DuetError> {
    let rt = QuicRuntime::new(2)?;
    let server_id = Identity::generate()?;
    let client_id = Identity::generate()?;
    let cfg = QuicConfig::default();
    let listener = QuicListener::bind(
        &rt,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &server_id,
        client_id.fingerprint(),
        cfg.clone(),
    )?;
    let addr = listener.local_addr()?;
    let x = share_demo::demo_input(Role::Client, DEMO_LEN, DEMO_SEED);
    let y = share_demo::demo_input(Role::Server, DEMO_LEN, DEMO_SEED);
    let t = Instant::now();
    let (server_res, client_res) = std::thread::scope(|s| {
        let server = s.spawn(|| -> Result<_, DuetError> {
            let session = listener.accept()?;
            share_demo::run(&session, Role::Server, &y)?;
            let stats = session.stats();
            session.close()?;
            Ok(stats)
        });
        let client = (|| -> Result<_, DuetError> {
            let session = connect(&rt, addr, &client_id, server_id.fingerprint(), cfg)?;
            let (out, ops) = share_demo::run(&session, Role::Client, &x)?;
            let stats = session.stats();
            session.close()?;
            Ok((out, ops, stats))
        })();
        let server = server
            .join()
            .map_err(|_| DuetError::ThreadPanicked("server"));
        (server, client)
    });
    let server_stats = server_res??;
    let (out, ops, stats) = client_res?;
    let wall = t.elapsed().as_secs_f64();
    let reference = share_demo::reference(&x, &y);
    let rss = peak_rss_bytes();
    Ok(Report {
        model: builtin.name().into(),
        seq_len: 0,
        protocol: "duet".into(),
        network: "loopback-quic".into(),
        wall_s: wall,
        offline_s: 0.0,
        online_s: wall,
        bytes: Bytes {
            client_to_server: stats.bytes_sent,
            server_to_client: stats.bytes_received,
            total: stats.total_bytes(),
            setup: 0,
            cached: 0,
        },
        // flights sent by each side: exact, unlike one endpoint's view
        rounds: stats.rounds + server_stats.rounds,
        peak_rss_bytes: PeakRss {
            server: rss,
            client: rss,
        },
        accuracy: accuracy(&out, &reference),
        ops,
    })
}

/// Max absolute error and cosine similarity; a length mismatch counts as total failure.
pub fn accuracy(out: &[f64], reference: &[f64]) -> Accuracy {
    if out.len() != reference.len() {
        return Accuracy {
            max_abs_err: f64::INFINITY,
            cosine_vs_reference: 0.0,
        };
    }
    let max_abs_err = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let dot: f64 = out.iter().zip(reference).map(|(a, b)| a * b).sum();
    let na: f64 = out.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nb: f64 = reference.iter().map(|a| a * a).sum::<f64>().sqrt();
    let cosine_vs_reference = if na == 0.0 || nb == 0.0 {
        if na == nb {
            1.0
        } else {
            0.0
        }
    } else {
        dot / (na * nb)
    };
    Accuracy {
        max_abs_err,
        cosine_vs_reference,
    }
}

/// One side of a two-machine run.
pub struct RemoteSide<'a> {
    /// This party's identity.
    pub identity: &'a Identity,
    /// The peer's pinned fingerprint.
    pub peer: Fingerprint,
    /// Transport settings.
    pub config: QuicConfig,
    /// Payload.
    pub builtin: Builtin,
}

/// `duet serve`: waits for one client, runs the server side, returns the server's report.
/// `on_listen` is called with the bound address once listening.
pub fn serve(
    side: RemoteSide<'_>,
    listen: SocketAddr,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<Report, DuetError> {
    let rt = QuicRuntime::new(2)?;
    let listener = QuicListener::bind(&rt, listen, side.identity, side.peer, side.config)?;
    on_listen(listener.local_addr()?);
    let session = listener.accept()?;
    let t = Instant::now();
    let y = share_demo::demo_input(Role::Server, DEMO_LEN, DEMO_SEED);
    let (_, ops) = share_demo::run(&session, Role::Server, &y)?;
    let stats = session.stats();
    session.close()?;
    Ok(remote_report(side.builtin, t, stats, ops, Role::Server))
}

/// `duet connect`: runs the client side against a server, returns the client's report.
pub fn connect_and_run(side: RemoteSide<'_>, addr: SocketAddr) -> Result<Report, DuetError> {
    let rt = QuicRuntime::new(2)?;
    let session = connect(&rt, addr, side.identity, side.peer, side.config)?;
    let t = Instant::now();
    let x = share_demo::demo_input(Role::Client, DEMO_LEN, DEMO_SEED);
    let (out, ops) = share_demo::run(&session, Role::Client, &x)?;
    let stats = session.stats();
    session.close()?;
    let mut r = remote_report(side.builtin, t, stats, ops, Role::Client);
    // Both sides derive their demo inputs from a public seed, so the client can check.
    let y = share_demo::demo_input(Role::Server, DEMO_LEN, DEMO_SEED);
    r.accuracy = accuracy(&out, &share_demo::reference(&x, &y));
    Ok(r)
}

fn remote_report(
    builtin: Builtin,
    t: Instant,
    stats: duet_transport::ChannelStats,
    ops: Vec<crate::report::OpReport>,
    role: Role,
) -> Report {
    let wall = t.elapsed().as_secs_f64();
    let (c2s, s2c) = match role {
        Role::Client => (stats.bytes_sent, stats.bytes_received),
        Role::Server => (stats.bytes_received, stats.bytes_sent),
    };
    let rss = peak_rss_bytes();
    Report {
        model: builtin.name().into(),
        seq_len: 0,
        protocol: "duet".into(),
        network: "quic".into(),
        wall_s: wall,
        offline_s: 0.0,
        online_s: wall,
        bytes: Bytes {
            client_to_server: c2s,
            server_to_client: s2c,
            total: stats.total_bytes(),
            setup: 0,
            cached: 0,
        },
        rounds: stats.total_rounds(),
        peak_rss_bytes: match role {
            Role::Server => PeakRss {
                server: rss,
                client: 0,
            },
            Role::Client => PeakRss {
                server: 0,
                client: rss,
            },
        },
        accuracy: Accuracy::default(),
        ops,
    }
}
