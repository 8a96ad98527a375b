//! `duet bench model`: a whole built-in model between two processes (the server a child of
//! this one, so that each party's peak RSS is its own), the network shaped as the profile
//! says, one [`ModelReport`] with every node's predicted bytes and seconds beside the measured.

use crate::harness::netns::{ShapedNet, Shaping};
use crate::model_report::ModelReport;
use crate::product::inputs::{builtin_references, resolve_inputs, InputArg, ProgressLine};
use crate::product::session::{client_model_session, serve_model_session};
use crate::report::{peak_rss_bytes, PeakRss};
use crate::DuetError;
use duet_models::open::{ModelSpec, PublicModel};
use duet_models::secure::predict::predict;
use duet_models::secure::{SecureOptions, SecureReport};
use duet_models::session::RunConfig;
use duet_models::{BuiltinModel, Graph};
use duet_protocols::cost_model::MachineProfile;
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::relay::NetProfile;
use duet_transport::Role;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Instant;

fn usage(m: impl Into<String>) -> DuetError {
    DuetError::Usage(m.into())
}

/// The run configuration of `--protocol P` and `--plan planned|fixed` on network `net`:
/// `duet` planned for the network, every other preset (and `fixed`) its fixed choices.
pub fn run_config(protocol: &str, planned: bool, net: &str) -> Result<RunConfig, DuetError> {
    duet_protocols::ProtocolConfig::from_name(protocol)?;
    Ok(if planned {
        RunConfig::planned(protocol, net)
    } else {
        RunConfig::fixed(protocol)
    })
}

/// The options of a run and the planner's decisions as report lines.
pub fn options_and_choices(
    config: &RunConfig,
    graph: &Graph,
    seq: usize,
) -> Result<(SecureOptions, Vec<String>), DuetError> {
    let (opts, decisions) = config.options(graph, seq)?;
    let choices = decisions
        .iter()
        .map(|d| format!("{}: {}", d.target, d.chosen))
        .collect();
    Ok((opts, choices))
}

/// Fills each operator row's `predicted_bytes` and `predicted_s` (latency on `net`: compute
/// on `profile` plus bytes over the rate plus half an RTT per flight) from the cost model,
/// matching rows to predicted nodes by name, and records the profile in the report.
pub fn add_predictions(
    rep: &mut ModelReport,
    graph: &Graph,
    opts: &SecureOptions,
    net: &NetProfile,
    profile: &MachineProfile,
) -> Result<(), DuetError> {
    let p = predict(graph, rep.report.seq_len, opts, profile)?;
    for op in &mut rep.report.ops {
        if let Some(e) = p.node(&op.name) {
            op.predicted_bytes = e.bytes;
            op.predicted_s = e.latency(net);
        }
    }
    rep.profile.clone_from(&profile.measured);
    Ok(())
}

/// Arguments of `duet bench model`.
#[derive(Clone, Debug)]
pub struct BenchModelArgs {
    /// The built-in shape.
    pub builtin: BuiltinModel,
    /// Tokens.
    pub seq_len: usize,
    /// Protocol preset.
    pub protocol: String,
    /// Network profile: `lan`, `wan`, `wan-slow` or a custom spec.
    pub net: String,
    /// How the profile is emulated.
    pub shaping: Shaping,
    /// `duet` runs the planner's choices for the network (else the preset's fixed
    /// fewest-bytes choices); other presets always run their fixed choices.
    pub planned: bool,
    /// Show a progress bar (stderr, terminals only).
    pub progress: bool,
}

/// The network profile `--net NET` names: `lan` (3 Gbit/s, 1 ms RTT), `wan` (400 Mbit/s,
/// 10 ms), `wan-slow` (100 Mbit/s, 80 ms) or a custom `rate=..:rtt=..`. How it is emulated is
/// [`Shaping`]'s choice (see [`crate::harness::netns`]).
pub fn check_net(net: &str) -> Result<NetProfile, DuetError> {
    NetProfile::by_name(net).map_err(|e| usage(format!("--net {net}: {e}")))
}

/// The reference is computed when parameters x tokens stays below this (bert-base at 128
/// tokens is 1.1e10: seconds).
const REFERENCE_BUDGET: f64 = 2e10;

/// What the server child prints once listening.
#[derive(Debug, Serialize, Deserialize)]
struct ChildHello {
    addr: SocketAddr,
    fingerprint: String,
}

/// What the server child prints when done.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChildDone {
    /// Its peak RSS.
    pub peak_rss_bytes: u64,
    /// Its online bytes (both directions), to cross-check the client's.
    pub online_bytes: u64,
    /// Its setup bytes.
    pub setup_bytes: u64,
}

/// Kills the child on early return (it is ours: spawned by us, killed by its own handle).
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The hidden `duet bench-server` child: binds `listen` (127.0.0.1:0 by default; an address in
/// its network namespace under netns shaping), prints its address and fingerprint as one JSON
/// line, serves one client pinned to `peer` (any number of requests of one session), prints
/// [`ChildDone`].
pub fn bench_server_child(
    model: &ModelSpec,
    adapter: Option<&duet_models::open::AdapterSpec>,
    config: &RunConfig,
    peer: Fingerprint,
    listen: SocketAddr,
) -> Result<(), DuetError> {
    end_with_the_parent();
    let mut config = config.clone();
    let config = &mut config;
    let model = crate::product::session::open_server_model(model, adapter, config)?;
    let rt = QuicRuntime::recommended()?;
    let id = Identity::generate()?;
    let listener = QuicListener::bind(&rt, listen, &id, peer, QuicConfig::default())?;
    let hello = ChildHello {
        addr: listener.local_addr()?,
        fingerprint: id.fingerprint().to_string(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&hello)?)?;
    out.flush()?;
    let session = listener.accept()?;
    let reports = serve_model_session(&session, &model, config, &mut |_| {})?;
    session.close()?;
    let m = crate::model_report::merge_reports(&reports);
    CHILD_DONE.store(true, std::sync::atomic::Ordering::SeqCst);
    let done = ChildDone {
        peak_rss_bytes: peak_rss_bytes(),
        online_bytes: m.online_bytes,
        setup_bytes: m.setup_bytes,
    };
    writeln!(out, "{}", serde_json::to_string(&done)?)?;
    out.flush()?;
    Ok(())
}

/// Set once the child has served its session: the end of stdin is then the parent waiting.
static CHILD_DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The parent holds the write end of our stdin: when it ends (however it dies), stdin reaches
/// its end and this child closes its connections and exits instead of waiting for a client.
fn end_with_the_parent() {
    let _ = std::thread::Builder::new()
        .name("duet-parent-watch".into())
        .spawn(|| {
            let mut buf = [0u8; 64];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            if CHILD_DONE.load(std::sync::atomic::Ordering::SeqCst) {
                // the parent closes our stdin when it waits for our exit
                return;
            }
            duet_transport::quic::interrupt_all(
                "the peer's parent process ended",
                std::time::Duration::from_secs(1),
            );
            // stderr is the parent's pipe, likely closed with it: a failed write is no panic
            let _ = writeln!(
                std::io::stderr(),
                "duet: error: the parent process (duet bench) ended"
            );
            std::process::exit(1);
        });
}

/// The server child of a harness run and the network it is reached through.
pub struct ChildServer {
    guard: ChildGuard,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// Its address as the client reaches it.
    pub addr: SocketAddr,
    /// Its fingerprint.
    pub fingerprint: Fingerprint,
}

impl ChildServer {
    /// Starts `exe bench-server` for `model` (`--builtin NAME` or `--model PATH` arguments) and
    /// `config`, pinned to `client`, in `net`; waits for its address.
    pub fn start(
        exe: &Path,
        net: &mut ShapedNet,
        model_args: &[String],
        config: &RunConfig,
        client: &Identity,
    ) -> Result<Self, DuetError> {
        let mut cmd = net.server_command(exe);
        cmd.arg("bench-server")
            .args(model_args)
            .args(["--protocol", &config.protocol]);
        if let duet_models::session::PlanMode::Planned { net: n } = &config.plan {
            cmd.args(["--net", n]);
        }
        let mut child = cmd
            .args(["--peer-fingerprint", &client.fingerprint().to_string()])
            .args(["--listen", &net.server_listen().to_string()])
            // the child watches this pipe: it ends when we do, even killed before connecting
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| usage(format!("cannot start the server process: {e}")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().map(|mut e| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = e.read_to_string(&mut s);
                s
            })
        });
        let mut guard = ChildGuard(Some(child));
        let Some(stdout) = stdout else {
            return Err(child_failure(&mut guard, stderr));
        };
        let mut lines = BufReader::new(stdout).lines();
        let hello: ChildHello = match lines.next() {
            Some(Ok(l)) => serde_json::from_str(&l)?,
            _ => return Err(child_failure(&mut guard, stderr)),
        };
        Ok(Self {
            fingerprint: hello.fingerprint.parse()?,
            addr: net.client_target(hello.addr)?,
            guard,
            stdout: lines,
            stderr,
        })
    }

    /// The child's own reason when the client's run failed.
    pub fn failure(mut self, e: DuetError) -> DuetError {
        let child_err = child_failure(&mut self.guard, self.stderr.take());
        usage(format!("{e} ({child_err})"))
    }

    /// Waits for the child's [`ChildDone`] and its exit.
    pub fn finish(mut self) -> Result<ChildDone, DuetError> {
        let done: ChildDone = match self.stdout.next() {
            Some(Ok(l)) => serde_json::from_str(&l)?,
            _ => return Err(child_failure(&mut self.guard, self.stderr.take())),
        };
        if let Some(mut c) = self.guard.0.take() {
            let status = c.wait()?;
            if !status.success() {
                self.guard.0 = Some(c);
                return Err(child_failure(&mut self.guard, self.stderr.take()));
            }
        }
        Ok(done)
    }
}

/// The last non-empty line a failed child wrote to stderr.
fn child_failure(
    guard: &mut ChildGuard,
    stderr: Option<std::thread::JoinHandle<String>>,
) -> DuetError {
    if let Some(c) = guard.0.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    guard.0 = None;
    let text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("it exited without a message")
        .trim_start_matches("duet: error: ")
        .to_string();
    usage(format!("the server process failed: {line}"))
}

/// `duet bench model`: the server as a child process of `exe` (this executable), the client
/// here; one report. The client's peak RSS is read before the reference executor runs.
pub fn bench_model(args: &BenchModelArgs, exe: &Path) -> Result<ModelReport, DuetError> {
    let profile = check_net(&args.net)?;
    let client = PublicModel::open(&ModelSpec::Builtin(args.builtin), false)?;
    let config = run_config(&args.protocol, args.planned, &args.net)?;
    let (opts, choices) = options_and_choices(&config, &client.graph, args.seq_len)?;
    let inputs = resolve_inputs(&client, &InputArg::SeqLen(args.seq_len))?;
    let id = Identity::generate()?;
    // declared before the child: the namespace and relay outlive the child
    let mut net = ShapedNet::setup(&profile, args.shaping)?;
    let model_args = vec!["--builtin".to_string(), args.builtin.name().to_string()];
    let child = ChildServer::start(exe, &mut net, &model_args, &config, &id)?;
    let rt = QuicRuntime::recommended()?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(args.progress, "client");
    let run = (|| -> Result<_, DuetError> {
        let session = connect(
            &rt,
            child.addr,
            &id,
            child.fingerprint,
            QuicConfig::default(),
        )?;
        let out =
            client_model_session(&session, &client.graph, &inputs, &config, None, &mut |p| {
                bar.update(p)
            })?;
        session.close()?;
        Ok(out)
    })();
    bar.finish();
    let wall = t.elapsed().as_secs_f64();
    let client_rss = peak_rss_bytes();
    let results = match run {
        Ok(r) => r,
        // the child's reason is the better one when it refused (e.g. a weight range)
        Err(e) => return Err(child.failure(e)),
    };
    let done = child.finish()?;
    let reports: Vec<SecureReport> = results.iter().map(|(_, r)| r.clone()).collect();
    let merged = crate::model_report::merge_reports(&reports);
    if done.online_bytes != merged.online_bytes {
        return Err(usage(format!(
            "the parties count different online traffic: server {} B, client {} B",
            done.online_bytes, merged.online_bytes
        )));
    }
    let mut rep = ModelReport::from_secure(
        args.builtin.name(),
        &args.protocol,
        &args.net,
        wall,
        &merged,
        Role::Client,
    );
    rep.network_note.clone_from(&net.note);
    rep.shaping.clone_from(&net.shaping);
    rep.plan = choices;
    rep.plan_name = config.plan_name();
    rep.options = Some(opts.clone());
    add_predictions(
        &mut rep,
        &client.graph,
        &opts,
        &profile,
        &MachineProfile::default_profile()?,
    )?;
    rep.report.peak_rss_bytes = PeakRss {
        server: done.peak_rss_bytes,
        client: client_rss,
    };
    let params: f64 = client
        .graph
        .weight_shapes()
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as f64)
        .sum();
    if params * args.seq_len as f64 <= REFERENCE_BUDGET {
        let refs = builtin_references(&client.graph, inputs.iter())?;
        let pairs: Vec<_> = results.iter().map(|(o, _)| o).zip(&refs).collect();
        rep.set_accuracy(&pairs);
        rep.reference =
            "f64 reference executor on the same seeded weights (after the RSS was read)".into();
    } else {
        rep.reference = format!(
            "skipped: {params:.2e} parameters x {} tokens is above the budget of {REFERENCE_BUDGET:.0e}",
            args.seq_len
        );
    }
    Ok(rep)
}
