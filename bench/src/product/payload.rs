//! `duet demo` and the two-machine `serve` / `connect` pair for the built-in payloads.

use crate::product::session::{check_payload, loopback, PAYLOAD_CHANNEL};
use crate::product::{linear_demo, share_demo};
use crate::report::{accuracy, peak_rss_bytes, Accuracy, Bytes, PeakRss, Report};
use crate::DuetError;
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::{Role, Session};
use std::net::SocketAddr;
use std::time::Instant;

/// Built-in payloads that need no files (besides the built-in models).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Builtin {
    /// One secure linear layer: the client's 16x64 input times the server's 64x32 weights
    /// (HE matmul), revealed to the client.
    LinearDemo,
    /// Secret-share one private tensor per party, add and scale, reveal to the client.
    ShareDemo,
}

impl Builtin {
    /// The payload named `name`, if it is one of these.
    pub fn from_name(name: &str) -> Option<Self> {
        [Builtin::LinearDemo, Builtin::ShareDemo]
            .into_iter()
            .find(|b| b.name() == name)
    }

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::LinearDemo => "linear-demo",
            Builtin::ShareDemo => "share-demo",
        }
    }

    /// The plaintext result both parties' inputs give (demo inputs come from a public seed).
    fn reference(self) -> Vec<f64> {
        match self {
            Builtin::LinearDemo => {
                let (x, w, b) = linear_demo::demo_data(DEMO_SEED);
                linear_demo::reference(&x, &w, &b)
            }
            Builtin::ShareDemo => share_demo::reference(
                &share_demo::demo_input(Role::Client, DEMO_LEN, DEMO_SEED),
                &share_demo::demo_input(Role::Server, DEMO_LEN, DEMO_SEED),
            ),
        }
    }
}

/// What one side of a built-in run produced.
struct SideOut {
    out: Vec<f64>,
    ops: Vec<crate::report::OpReport>,
    setup: duet_transport::ChannelStats,
    total: duet_transport::ChannelStats,
}

/// Runs `role`'s side of `builtin` on `session` with the seeded demo inputs of that role only.
fn run_side<S: Session>(builtin: Builtin, session: &S, role: Role) -> Result<SideOut, DuetError> {
    // Both sides must run the same payload: say which, before anything else.
    {
        let mut ch = session.channel(PAYLOAD_CHANNEL)?;
        check_payload(&mut ch, builtin.name())?;
    }
    let (out, ops, setup) = match builtin {
        Builtin::LinearDemo => {
            let (x, w, b) = linear_demo::demo_data(DEMO_SEED);
            let run = match role {
                Role::Server => linear_demo::run(session, role, None, Some((&w, &b)))?,
                Role::Client => linear_demo::run(session, role, Some(&x), None)?,
            };
            (run.y, run.ops, run.setup)
        }
        Builtin::ShareDemo => {
            let input = share_demo::demo_input(role, DEMO_LEN, DEMO_SEED);
            let (out, ops) = share_demo::run(session, role, &input)?;
            (out, ops, duet_transport::ChannelStats::default())
        }
    };
    Ok(SideOut {
        out,
        ops,
        setup,
        total: session
            .stats_by_channel()
            .into_iter()
            .filter(|(id, _)| *id != PAYLOAD_CHANNEL)
            .fold(duet_transport::ChannelStats::default(), |a, (_, s)| a + s),
    })
}

/// Elements in the demo tensors.
pub const DEMO_LEN: usize = 4096;
const DEMO_SEED: u64 = 2026;

/// Both parties in one process over loopback QUIC (certificates generated and pinned
/// automatically). Returns the client's report.
pub fn run_demo(builtin: Builtin) -> Result<Report, DuetError> {
    let t = Instant::now();
    let (server, client) = loopback(
        |session| run_side(builtin, session, Role::Server),
        |session| run_side(builtin, session, Role::Client),
    )?;
    let wall = t.elapsed().as_secs_f64();
    let rss = peak_rss_bytes();
    let mut r = side_report(builtin, wall, &client, Role::Client);
    // Flights sent by each side over the whole session: exact, unlike one endpoint's view. Key
    // setup travels in the same flight as the client's first online message, so setup and
    // online flights are not told apart.
    r.rounds = client.total.rounds + server.total.rounds;
    r.peak_rss_bytes = PeakRss {
        server: rss,
        client: rss,
    };
    r.network = "loopback-quic".into();
    r.accuracy = accuracy(&client.out, &builtin.reference());
    Ok(r)
}

fn side_report(builtin: Builtin, wall: f64, side: &SideOut, role: Role) -> Report {
    let online = side.total - side.setup;
    let (c2s, s2c) = match role {
        Role::Client => (online.bytes_sent, online.bytes_received),
        Role::Server => (online.bytes_received, online.bytes_sent),
    };
    let rss = peak_rss_bytes();
    Report {
        model: builtin.name().into(),
        seq_len: match builtin {
            Builtin::LinearDemo => linear_demo::N,
            Builtin::ShareDemo => 0,
        },
        protocol: "duet".into(),
        network: "quic".into(),
        wall_s: wall,
        offline_s: 0.0,
        online_s: wall,
        bytes: Bytes {
            client_to_server: c2s,
            server_to_client: s2c,
            total: online.total_bytes(),
            setup: side.setup.total_bytes(),
            cached: 0,
        },
        rounds: online.total_rounds(),
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
        ops: side.ops.clone(),
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
    /// `serve` only: the first connection attempt decides (else strangers are refused and
    /// the server waits on for its pinned client).
    pub once: bool,
}

/// `duet serve`: waits for one client, runs the server side, returns the server's report.
/// `on_listen` is called with the bound address once listening.
pub fn serve(
    side: RemoteSide<'_>,
    listen: SocketAddr,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<Report, DuetError> {
    let rt = QuicRuntime::recommended()?;
    let listener = QuicListener::bind(&rt, listen, side.identity, side.peer, side.config)?;
    on_listen(listener.local_addr()?);
    let session = crate::listen::accept_client(&listener, side.once)?;
    let t = Instant::now();
    let side = run_side(side.builtin, &session, Role::Server).map(|o| (o, side.builtin))?;
    session.close()?;
    Ok(side_report(
        side.1,
        t.elapsed().as_secs_f64(),
        &side.0,
        Role::Server,
    ))
}

/// `duet connect`: runs the client side against a server, returns the client's report.
pub fn connect_and_run(side: RemoteSide<'_>, addr: SocketAddr) -> Result<Report, DuetError> {
    let rt = QuicRuntime::recommended()?;
    let session = connect(&rt, addr, side.identity, side.peer, side.config)?;
    let t = Instant::now();
    let out = run_side(side.builtin, &session, Role::Client)?;
    session.close()?;
    let mut r = side_report(side.builtin, t.elapsed().as_secs_f64(), &out, Role::Client);
    // Demo inputs come from a public seed, so the client can check its result.
    r.accuracy = accuracy(&out.out, &side.builtin.reference());
    Ok(r)
}
