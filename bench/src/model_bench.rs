//! Whole-model secure runs from the command line: choosing the model and the inputs, running
//! the secure executor on one session, turning its reports into the DESIGN.md schema, and
//! `duet bench model`, whose server runs in a child process so that each party's peak RSS is
//! its own.

use crate::demo::{accuracy, check_payload};
use crate::netns::{ShapedNet, Shaping};
use crate::report::{human_bytes, peak_rss_bytes, Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;
use duet_models::planner::{plan, AccuracyBudget};
use duet_models::secure::predict::predict;
use duet_models::secure::{
    run_client_outputs, run_server, OpRecord, Progress, SecureOptions, SecureOutput, SecureReport,
};
use duet_models::{
    run_reference, BuiltinModel, Graph, Matrix, ModelDir, ModelWeights, RandomWeights,
    TextTokenizer, WeightSource,
};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{Preset, ProtocolConfig};
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::relay::NetProfile;
use duet_transport::{Channel, Role, Session};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Instant;

/// Seed of the built-in models' random weights. It is public: the weights of a built-in model
/// are not a secret, which lets a client check its result against the reference.
pub const BUILTIN_SEED: u64 = 2026;
/// Seed of the token ids `--seq-len N` draws.
pub const IDS_SEED: u64 = 7;
/// Payload name both sides agree on before secure model runs.
pub const MODEL_PAYLOAD: &str = "secure-model";
/// Sub-channel of the payload agreement (the demo payloads use the same one).
pub const PAYLOAD_CHANNEL: u32 = 1000;
/// Secure run `i` of a session runs on sub-channel `RUN_CHANNEL_BASE + i`.
pub const RUN_CHANNEL_BASE: u32 = 1001;
/// Most secure runs (input lines) one session accepts from a peer.
pub const MAX_RUNS: u32 = 100_000;

fn usage(m: impl Into<String>) -> DuetError {
    DuetError::Usage(m.into())
}

/// Which model: a HuggingFace folder or a built-in shape with seeded random weights.
#[derive(Clone, Debug)]
pub enum ModelArg {
    /// A folder with `config.json` (both sides), `model.safetensors` (server) and
    /// `tokenizer.json` (client, for text).
    Dir(PathBuf),
    /// A built-in shape.
    Builtin(BuiltinModel),
}

impl ModelArg {
    /// From `--model DIR` / `--builtin NAME` (exactly one).
    pub fn from_cli(dir: Option<PathBuf>, builtin: Option<&str>) -> Result<Self, DuetError> {
        match (dir, builtin) {
            (Some(d), None) => Ok(Self::Dir(d)),
            (None, Some(b)) => Ok(Self::Builtin(BuiltinModel::from_name(b)?)),
            _ => Err(usage("give exactly one of --model DIR or --builtin NAME")),
        }
    }

    /// The name reports carry: the folder's name or the built-in's.
    pub fn name(&self) -> String {
        match self {
            ModelArg::Dir(d) => d
                .file_name()
                .map_or_else(|| d.display().to_string(), |n| n.to_string_lossy().into()),
            ModelArg::Builtin(b) => b.name().into(),
        }
    }

    fn open_dir(d: &Path) -> Result<ModelDir, DuetError> {
        if !d.is_dir() {
            return Err(usage(format!("model folder {} not found", d.display())));
        }
        Ok(ModelDir::open(d)?)
    }
}

/// The client's view of the model: the public config and the tokenizer, never the weights.
#[derive(Debug)]
pub struct ClientModel {
    /// Report name.
    pub name: String,
    /// The graph built from the public config.
    pub graph: Graph,
    /// `tokenizer.json` of a folder, when text is to be tokenized.
    pub tokenizer: Option<TextTokenizer>,
}

impl ClientModel {
    /// Reads `config.json` (and `tokenizer.json` when `need_tokenizer`) of a folder; a
    /// built-in needs no file.
    pub fn open(arg: &ModelArg, need_tokenizer: bool) -> Result<Self, DuetError> {
        match arg {
            ModelArg::Dir(d) => {
                let m = ModelArg::open_dir(d)?;
                let tokenizer = if need_tokenizer {
                    Some(m.tokenizer()?)
                } else {
                    None
                };
                Ok(Self {
                    name: arg.name(),
                    graph: m.graph,
                    tokenizer,
                })
            }
            ModelArg::Builtin(b) => Ok(Self {
                name: arg.name(),
                graph: Graph::build(&b.config()),
                tokenizer: None,
            }),
        }
    }
}

/// The server's weights.
#[derive(Debug)]
pub enum ServerWeights {
    /// `model.safetensors` of a folder.
    File(ModelWeights),
    /// A built-in's seeded random weights.
    Random(RandomWeights),
}

impl WeightSource for ServerWeights {
    fn get(&self, name: &str, shape: &[usize]) -> duet_models::Result<Vec<f64>> {
        match self {
            ServerWeights::File(w) => w.get(name, shape),
            ServerWeights::Random(w) => w.get(name, shape),
        }
    }
}

/// The server's model: config and weights.
#[derive(Debug)]
pub struct ServerModel {
    /// Report name.
    pub name: String,
    /// The graph.
    pub graph: Graph,
    /// The weights.
    pub weights: ServerWeights,
}

impl ServerModel {
    /// Opens `config.json` and `model.safetensors` (every tensor checked), or a built-in.
    pub fn open(arg: &ModelArg) -> Result<Self, DuetError> {
        match arg {
            ModelArg::Dir(d) => {
                let m = ModelArg::open_dir(d)?;
                let weights = ServerWeights::File(m.open_weights()?);
                Ok(Self {
                    name: arg.name(),
                    graph: m.graph,
                    weights,
                })
            }
            ModelArg::Builtin(b) => Ok(Self {
                name: arg.name(),
                graph: Graph::build(&b.config()),
                weights: ServerWeights::Random(RandomWeights { seed: BUILTIN_SEED }),
            }),
        }
    }
}

/// Where the client's inputs come from.
#[derive(Clone, Debug)]
pub enum InputArg {
    /// `--text T`: one run per line of `T`.
    Text(String),
    /// `--text-file F`: one run per non-empty line of `F`.
    TextFile(PathBuf),
    /// `--seq-len N`: one run on `N` token ids drawn from a public seed.
    SeqLen(usize),
}

impl InputArg {
    /// From `--text` / `--text-file` / `--seq-len` (exactly one).
    pub fn from_cli(
        text: Option<String>,
        text_file: Option<PathBuf>,
        seq_len: Option<usize>,
    ) -> Result<Self, DuetError> {
        match (text, text_file, seq_len) {
            (Some(t), None, None) => Ok(Self::Text(t)),
            (None, Some(f), None) => Ok(Self::TextFile(f)),
            (None, None, Some(n)) => Ok(Self::SeqLen(n)),
            _ => Err(usage(
                "give exactly one of --text T, --text-file F or --seq-len N",
            )),
        }
    }

    /// Whether text is given (a model folder then needs its tokenizer).
    pub fn is_text(&self) -> bool {
        !matches!(self, InputArg::SeqLen(_))
    }
}

/// One input of a secure run.
#[derive(Clone, Debug)]
pub struct Input {
    /// The line of text, if the input was text.
    pub text: Option<String>,
    /// Its token ids.
    pub ids: Vec<u32>,
}

/// `n` token ids uniform in the vocabulary, from the public seed [`IDS_SEED`].
pub fn seeded_ids(n: usize, vocab: usize) -> Result<Vec<u32>, DuetError> {
    let vocab = u32::try_from(vocab)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| usage(format!("vocabulary of {vocab} tokens")))?;
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(IDS_SEED);
    Ok((0..n).map(|_| rng.gen_range(0..vocab)).collect())
}

/// The inputs, one per line of text (blank lines skipped). Text is tokenized with the
/// folder's `tokenizer.json`; a built-in model has no tokenizer, so each UTF-8 byte `b` of the
/// line becomes token id `b mod vocab` (every built-in's vocabulary exceeds 256, so ids are
/// the bytes themselves).
pub fn resolve_inputs(model: &ClientModel, arg: &InputArg) -> Result<Vec<Input>, DuetError> {
    let c = &model.graph.config;
    let text = match arg {
        InputArg::SeqLen(n) => {
            if *n == 0 || *n > c.max_positions {
                return Err(usage(format!(
                    "--seq-len {n}: the model takes 1 to {} tokens",
                    c.max_positions
                )));
            }
            return Ok(vec![Input {
                text: None,
                ids: seeded_ids(*n, c.vocab_size)?,
            }]);
        }
        InputArg::Text(t) => t.clone(),
        InputArg::TextFile(f) => std::fs::read_to_string(f)
            .map_err(|e| usage(format!("cannot read the text file {}: {e}", f.display())))?,
    };
    let vocab = u32::try_from(c.vocab_size)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| usage(format!("vocabulary of {} tokens", c.vocab_size)))?;
    let mut out = Vec::new();
    for line in text.lines().map(|l| l.trim_end_matches('\r')) {
        if line.trim().is_empty() {
            continue;
        }
        let ids = match &model.tokenizer {
            Some(t) => t.encode(line)?,
            None => line.bytes().map(|b| u32::from(b) % vocab).collect(),
        };
        if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
            return Err(usage(format!(
                "the tokenizer gave id {bad} for {line:?}, outside the model's vocabulary of {vocab}; tokenizer.json and config.json do not match"
            )));
        }
        if ids.is_empty() || ids.len() > c.max_positions {
            return Err(usage(format!(
                "the line {line:?} is {} tokens; the model takes 1 to {}",
                ids.len(),
                c.max_positions
            )));
        }
        out.push(Input {
            text: Some(line.to_string()),
            ids,
        });
    }
    if out.is_empty() {
        return Err(usage("no input: the text has no non-empty line"));
    }
    if out.len() > MAX_RUNS as usize {
        return Err(usage(format!("more than {MAX_RUNS} input lines")));
    }
    Ok(out)
}

/// The protocol options of `--protocol P`: the preset's fixed choices.
pub fn secure_options(protocol: &str) -> Result<SecureOptions, DuetError> {
    Ok(SecureOptions::new(ProtocolConfig::from_name(protocol)?))
}

/// The options of a `duet bench model` run: `duet` runs the planner's choices for the graph,
/// the sequence length and the network on the shipped machine profile (both processes compute
/// the same plan: the planner is deterministic); the other presets their fixed choices.
pub fn planned_options(
    protocol: &str,
    graph: &Graph,
    seq: usize,
    net: &NetProfile,
) -> Result<(SecureOptions, Vec<String>), DuetError> {
    let opts = secure_options(protocol)?;
    if opts.protocol.preset != Preset::Duet {
        return Ok((opts, Vec::new()));
    }
    let profile = MachineProfile::default_profile()?;
    let run = plan(graph, seq, &opts, net, &profile, &AccuracyBudget::default())?;
    let choices = run
        .decisions
        .iter()
        .map(|d| format!("{}: {}", d.target, d.chosen))
        .collect();
    Ok((run.opts, choices))
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

/// A one-line progress bar on stderr, shown only when stderr is a terminal (the `indicatif`
/// crate is not in the offline registry, so this is a minimal one of our own).
#[derive(Debug)]
pub struct ProgressLine {
    enabled: bool,
    label: String,
}

impl ProgressLine {
    /// A bar labelled `label`; `wanted = false` (e.g. under `--json`) silences it.
    pub fn new(wanted: bool, label: &str) -> Self {
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            label: label.to_string(),
        }
    }

    /// Draws the state after one node.
    pub fn update(&mut self, p: Progress<'_>) {
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let filled = (p.done * WIDTH)
            .checked_div(p.total)
            .unwrap_or(WIDTH)
            .min(WIDTH);
        let mut err = std::io::stderr().lock();
        // A failed write to the terminal only loses the bar.
        let _ = write!(
            err,
            "\r\x1b[2K{} [{}{}] {}/{} {}",
            self.label,
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            p.done,
            p.total,
            p.node
        );
        let _ = err.flush();
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// The server side of a session of secure model runs: agrees on the payload, learns how many
/// runs the client wants, runs them. Returns one report per run.
pub fn serve_runs<S: Session>(
    session: &S,
    model: &ServerModel,
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<SecureReport>, DuetError> {
    let runs = {
        let mut ch = session.channel(PAYLOAD_CHANNEL)?;
        check_payload(&mut ch, MODEL_PAYLOAD)?;
        let runs: u32 = ch.exchange_msg(&0u32)?;
        if runs == 0 || runs > MAX_RUNS {
            return Err(usage(format!(
                "the client asked for {runs} runs (1 to {MAX_RUNS})"
            )));
        }
        runs
    };
    let mut out = Vec::new();
    for i in 0..runs {
        let mut ch = session.channel(RUN_CHANNEL_BASE + i)?;
        out.push(run_server(
            &mut ch,
            &model.graph,
            &model.weights,
            opts,
            progress,
        )?);
    }
    Ok(out)
}

/// The client side of a session of secure model runs, one per input. Returns each input's last
/// hidden state and report.
pub fn client_runs<S: Session>(
    session: &S,
    model: &ClientModel,
    inputs: &[Input],
    opts: &SecureOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<(SecureOutput, SecureReport)>, DuetError> {
    let runs = u32::try_from(inputs.len())
        .ok()
        .filter(|&r| r > 0 && r <= MAX_RUNS)
        .ok_or_else(|| usage(format!("{} inputs (1 to {MAX_RUNS})", inputs.len())))?;
    {
        let mut ch = session.channel(PAYLOAD_CHANNEL)?;
        check_payload(&mut ch, MODEL_PAYLOAD)?;
        let _: u32 = ch.exchange_msg(&runs)?;
    }
    let mut out = Vec::new();
    for (i, input) in (0..runs).zip(inputs) {
        let mut ch = session.channel(RUN_CHANNEL_BASE + i)?;
        out.push(run_client_outputs(
            &mut ch,
            &model.graph,
            &input.ids,
            opts,
            progress,
        )?);
    }
    Ok(out)
}

/// `he` for the HE linear layers, `mpc` for the OT-based ones, `local` for steps without
/// traffic.
pub fn backend_of(kind: &str, bytes: u64) -> &'static str {
    match kind {
        "embedding" | "linear" | "attention-matmul" => "he",
        _ if bytes == 0 => "local",
        _ => "mpc",
    }
}

/// Sums the reports of several runs of the same graph (node rows by position and name).
pub fn merge_reports(reports: &[SecureReport]) -> SecureReport {
    let mut it = reports.iter();
    let Some(first) = it.next() else {
        return SecureReport::default();
    };
    let mut m = first.clone();
    let add = |rows: &mut Vec<OpRecord>, more: &[OpRecord]| {
        for r in more {
            match rows.iter_mut().find(|x| x.name == r.name) {
                Some(x) => {
                    x.calls += r.calls;
                    x.bytes += r.bytes;
                    x.rounds += r.rounds;
                    x.seconds += r.seconds;
                }
                None => rows.push(r.clone()),
            }
        }
    };
    for r in it {
        m.seq_len = m.seq_len.max(r.seq_len);
        m.setup_bytes += r.setup_bytes;
        m.setup_seconds += r.setup_seconds;
        m.online_bytes += r.online_bytes;
        m.online_sent += r.online_sent;
        m.online_received += r.online_received;
        m.online_seconds += r.online_seconds;
        add(&mut m.ops, &r.ops);
        add(&mut m.nodes, &r.nodes);
    }
    m
}

/// The f64 reference executor's last hidden states for a built-in model's public seeded
/// weights ([`BUILTIN_SEED`]), one per input.
pub fn builtin_references<'a>(
    graph: &duet_models::Graph,
    inputs: impl Iterator<Item = &'a Input>,
) -> Result<Vec<Matrix>, DuetError> {
    let w = RandomWeights { seed: BUILTIN_SEED };
    Ok(inputs
        .map(|i| run_reference(graph, &w, &i.ids))
        .collect::<Result<Vec<_>, _>>()?)
}

/// One output of `duet infer` / `duet connect`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// The line of text (absent for `--seq-len`).
    pub text: Option<String>,
    /// Its token ids.
    pub input_ids: Vec<u32>,
    /// Sentence embedding of the last hidden state: mean over tokens, then L2 normalised.
    pub embedding: Vec<f64>,
    /// Cosine of the secure last hidden state with the reference executor's (when known).
    pub cosine_vs_reference: Option<f64>,
    /// Largest absolute error of the secure last hidden state (when known).
    pub max_abs_err: Option<f64>,
    /// For models with a language-model head: the five largest next-token logits of the last
    /// position, as `(token id, logit)`.
    #[serde(default)]
    pub top_logits: Option<Vec<(u32, f64)>>,
}

/// The `k` largest logits as `(token id, logit)`, largest first.
pub fn top_logits(logits: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut v: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (u32::try_from(i).unwrap_or(u32::MAX), x))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    v.truncate(k);
    v
}

/// The report of whole-model runs: the DESIGN.md schema plus per-kind totals and outputs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelReport {
    /// The common schema.
    #[serde(flatten)]
    pub report: Report,
    /// What the network profile means in this build.
    pub network_note: String,
    /// What shaped the network of the run, in short: `netns+tbf+netem`, `netns+tbf, relay
    /// delay`, `relay` or `none` (empty for runs without a network profile).
    #[serde(default)]
    pub shaping: String,
    /// Whether (and why not) the accuracy was measured.
    pub reference: String,
    /// Secure runs (input lines) summed in this report.
    pub runs: usize,
    /// Totals per operator kind (name = kind).
    pub kinds: Vec<KindTotal>,
    /// The planner's choices (`duet` under `bench model`: target, then the chosen variant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
    /// The machine profile of the predictions (its `measured` line; empty: not recorded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// One per input (infer, connect, demo).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<Output>,
    /// `duet bench model --machine-check`: the median predicted / measured seconds of the
    /// calibration's check operators against the shipped profile just before the run (near 1:
    /// the machine was in the state the profile describes; 0.5: it ran the work twice as
    /// slowly).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_check: Option<f64>,
}

/// Totals of one operator kind.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KindTotal {
    /// Kind.
    pub kind: String,
    /// `he`, `mpc` or `local`.
    pub backend: String,
    /// Nodes of this kind.
    pub calls: u64,
    /// Online bytes, both directions.
    pub bytes: u64,
    /// Flights, both directions.
    pub rounds: u64,
    /// Wall seconds.
    pub wall_s: f64,
}

impl ModelReport {
    /// From one party's (merged) secure report. `role` is the party whose view it is.
    pub fn from_secure(
        model: &str,
        protocol: &str,
        network: &str,
        wall_s: f64,
        r: &SecureReport,
        role: Role,
    ) -> Self {
        let (c2s, s2c) = match role {
            Role::Client => (r.online_sent, r.online_received),
            Role::Server => (r.online_received, r.online_sent),
        };
        let ops: Vec<OpReport> = r
            .nodes
            .iter()
            .map(|n| OpReport {
                name: n.name.clone(),
                kind: n.kind.clone(),
                backend: backend_of(&n.kind, n.bytes).into(),
                bytes: n.bytes,
                rounds: n.rounds,
                wall_s: n.seconds,
                predicted_bytes: 0,
                predicted_s: 0.0,
            })
            .collect();
        let kinds = r
            .ops
            .iter()
            .map(|k| KindTotal {
                kind: k.kind.clone(),
                backend: backend_of(&k.kind, k.bytes).into(),
                calls: k.calls,
                bytes: k.bytes,
                rounds: k.rounds,
                wall_s: k.seconds,
            })
            .collect();
        let rss = peak_rss_bytes();
        Self {
            report: Report {
                model: model.into(),
                seq_len: r.seq_len,
                protocol: protocol.into(),
                network: network.into(),
                wall_s,
                offline_s: r.setup_seconds,
                online_s: r.online_seconds,
                bytes: Bytes {
                    client_to_server: c2s,
                    server_to_client: s2c,
                    total: r.online_bytes,
                    setup: r.setup_bytes,
                    cached: r.cached_bytes,
                },
                rounds: r.nodes.iter().map(|n| n.rounds).sum(),
                peak_rss_bytes: match role {
                    Role::Client => PeakRss {
                        server: 0,
                        client: rss,
                    },
                    Role::Server => PeakRss {
                        server: rss,
                        client: 0,
                    },
                },
                accuracy: Accuracy {
                    max_abs_err: f64::NAN,
                    cosine_vs_reference: f64::NAN,
                },
                ops,
            },
            network_note: String::new(),
            shaping: String::new(),
            reference: "not measured".into(),
            runs: 1,
            kinds,
            plan: Vec::new(),
            profile: String::new(),
            outputs: Vec::new(),
            machine_check: None,
        }
    }

    /// Sets the accuracy from (secure, reference) hidden-state pairs: the worst of each.
    pub fn set_accuracy<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a Matrix, &'a Matrix)>) {
        let mut acc = Accuracy {
            max_abs_err: 0.0,
            cosine_vs_reference: 1.0,
        };
        let mut any = false;
        for (got, want) in pairs {
            let a = accuracy(&got.data, &want.data);
            acc.max_abs_err = acc.max_abs_err.max(a.max_abs_err);
            acc.cosine_vs_reference = acc.cosine_vs_reference.min(a.cosine_vs_reference);
            any = true;
        }
        if any {
            self.report.accuracy = acc;
        }
    }

    /// A short plain-text summary (with the operator rows when `ops`).
    pub fn summary(&self, ops: bool) -> String {
        let r = &self.report;
        let mut s = format!(
            "{} ({} run{}, {} tokens max), protocol {}, network {}{}\n",
            r.model,
            self.runs,
            if self.runs == 1 { "" } else { "s" },
            r.seq_len,
            r.protocol,
            r.network,
            if self.network_note.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.network_note)
            }
        );
        s.push_str(&format!(
            "wall {:.2} s (setup {:.2} s, online {:.2} s), {} rounds\n",
            r.wall_s, r.offline_s, r.online_s, r.rounds
        ));
        s.push_str(&format!(
            "traffic online {} (client->server {}, server->client {}), setup {}\n",
            human_bytes(r.bytes.total),
            human_bytes(r.bytes.client_to_server),
            human_bytes(r.bytes.server_to_client),
            human_bytes(r.bytes.setup)
        ));
        if r.peak_rss_bytes.server > 0 || r.peak_rss_bytes.client > 0 {
            s.push_str(&format!(
                "peak RSS: server {}, client {}\n",
                human_bytes(r.peak_rss_bytes.server),
                human_bytes(r.peak_rss_bytes.client)
            ));
        }
        if r.accuracy.max_abs_err.is_finite() {
            s.push_str(&format!(
                "vs the plaintext reference: max |err| {:.3e}, cosine {:.6}\n",
                r.accuracy.max_abs_err, r.accuracy.cosine_vs_reference
            ));
        } else {
            s.push_str(&format!("accuracy: {}\n", self.reference));
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let head: Vec<String> = o
                .embedding
                .iter()
                .take(4)
                .map(|x| format!("{x:.4}"))
                .collect();
            s.push_str(&format!(
                "output {i}: {} tokens, embedding [{}, ...] ({} dims){}{}\n",
                o.input_ids.len(),
                head.join(", "),
                o.embedding.len(),
                o.cosine_vs_reference
                    .map_or(String::new(), |c| format!(", cosine {c:.6}")),
                o.text
                    .as_ref()
                    .map_or(String::new(), |t| format!(": {t:?}"))
            ));
        }
        if ops {
            s.push_str(&format!(
                "{:<18} {:<7} {:>6} {:>12} {:>8} {:>10}\n",
                "kind", "backend", "calls", "bytes", "rounds", "wall s"
            ));
            for k in &self.kinds {
                s.push_str(&format!(
                    "{:<18} {:<7} {:>6} {:>12} {:>8} {:>10.3}\n",
                    k.kind, k.backend, k.calls, k.bytes, k.rounds, k.wall_s
                ));
            }
        }
        s
    }
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
/// [`Shaping`]'s choice (see [`crate::netns`]).
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
/// line, serves one client pinned to `peer`, prints [`ChildDone`].
pub fn bench_server_child(
    builtin: BuiltinModel,
    protocol: &str,
    peer: Fingerprint,
    listen: SocketAddr,
    planned_for: Option<(usize, &str)>,
) -> Result<(), DuetError> {
    let model = ServerModel::open(&ModelArg::Builtin(builtin))?;
    let opts = match planned_for {
        Some((seq, net)) => planned_options(protocol, &model.graph, seq, &check_net(net)?)?.0,
        None => secure_options(protocol)?,
    };
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
    let reports = serve_runs(&session, &model, &opts, &mut |_| {})?;
    session.close()?;
    let m = merge_reports(&reports);
    let done = ChildDone {
        peak_rss_bytes: peak_rss_bytes(),
        online_bytes: m.online_bytes,
        setup_bytes: m.setup_bytes,
    };
    writeln!(out, "{}", serde_json::to_string(&done)?)?;
    out.flush()?;
    Ok(())
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
    let client = ClientModel::open(&ModelArg::Builtin(args.builtin), false)?;
    let (opts, choices) = if args.planned {
        planned_options(&args.protocol, &client.graph, args.seq_len, &profile)?
    } else {
        (secure_options(&args.protocol)?, Vec::new())
    };
    let inputs = resolve_inputs(&client, &InputArg::SeqLen(args.seq_len))?;
    let id = Identity::generate()?;
    // declared before the child's guard: the namespace and relay outlive the child
    let mut net = ShapedNet::setup(&profile, args.shaping)?;
    let mut child = net
        .server_command(exe)
        .args(["bench-server", "--builtin", args.builtin.name()])
        .args(["--protocol", &args.protocol])
        .args(if args.planned {
            vec![
                "--seq-len".to_string(),
                args.seq_len.to_string(),
                "--net".into(),
                args.net.clone(),
            ]
        } else {
            Vec::new()
        })
        .args(["--peer-fingerprint", &id.fingerprint().to_string()])
        .args(["--listen", &net.server_listen().to_string()])
        .stdin(Stdio::null())
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
    let server_fp: Fingerprint = hello.fingerprint.parse()?;
    let server_addr = net.client_target(hello.addr)?;
    let rt = QuicRuntime::recommended()?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(args.progress, "client");
    let run = (|| -> Result<_, DuetError> {
        let session = connect(&rt, server_addr, &id, server_fp, QuicConfig::default())?;
        let out = client_runs(&session, &client, &inputs, &opts, &mut |p| bar.update(p))?;
        session.close()?;
        Ok(out)
    })();
    bar.finish();
    let wall = t.elapsed().as_secs_f64();
    let client_rss = peak_rss_bytes();
    let results = match run {
        Ok(r) => r,
        Err(e) => {
            // the child's reason is the better one when it refused (e.g. a weight range)
            let child_err = child_failure(&mut guard, stderr);
            return Err(usage(format!("{e} ({child_err})")));
        }
    };
    let done: ChildDone = match lines.next() {
        Some(Ok(l)) => serde_json::from_str(&l)?,
        _ => return Err(child_failure(&mut guard, stderr)),
    };
    if let Some(mut c) = guard.0.take() {
        let status = c.wait()?;
        if !status.success() {
            guard.0 = Some(c);
            return Err(child_failure(&mut guard, stderr));
        }
    }
    let reports: Vec<SecureReport> = results.iter().map(|(_, r)| r.clone()).collect();
    let merged = merge_reports(&reports);
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
        rep.set_accuracy(results.iter().map(|(o, _)| &o.hidden).zip(&refs));
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
