//! Secure inference of a whole model: `duet infer` and `duet demo` (both parties in this
//! process over loopback QUIC), `duet serve` / `duet connect` with a model (two processes or
//! machines). Each runs one session (set up once) and one request per input line; the options
//! are the planner's for `--net` (default `lan`) unless `--plan fixed`. The client only ever
//! reads `config.json` and `tokenizer.json`.

use crate::harness::model_bench::{add_predictions, check_net, options_and_choices, run_config};
use crate::model_report::{merge_reports, output_accuracy, top_logits, ModelReport, Output};
use crate::product::inputs::{
    builtin_references, references, resolve_inputs, Input, InputArg, ProgressLine, Reference,
};
use crate::product::session::{
    client_model_session, loopback_config, loopback_with, open_server_model, serve_model_session,
};
use crate::report::{peak_rss_bytes, PeakRss};
use crate::DuetError;
use duet_models::open::{AdapterSpec, ModelSpec, PublicModel};
use duet_models::secure::{SecureOutput, SecureReport};
use duet_models::sentence_embedding;
use duet_models::session::RunConfig;
use duet_protocols::cost_model::MachineProfile;
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::Role;
use std::net::SocketAddr;
use std::time::Instant;

/// Arguments of `duet infer`.
#[derive(Clone, Debug)]
pub struct InferArgs {
    /// The model (both sides read it: the server its weights, the client config + tokenizer).
    pub model: ModelSpec,
    /// The inputs.
    pub input: InputArg,
    /// Protocol preset.
    pub protocol: String,
    /// The network the plan is made for (`lan`, `wan`, ...).
    pub net: String,
    /// Whether the `duet` preset runs the planner's choices (else the preset's fixed ones).
    pub planned: bool,
    /// Progress bars on stderr (terminals only).
    pub progress: bool,
    /// Longest wait for one message from the other party.
    pub recv_timeout: std::time::Duration,
    /// The server's PEFT adapter over the model: LoRA mode (the model a public base both
    /// sides hold) or merged (every weight private).
    pub adapter: Option<AdapterSpec>,
}

impl InferArgs {
    /// The defaults for a model and inputs: `duet`, planned for `lan`.
    pub fn new(model: ModelSpec, input: InputArg) -> Self {
        Self {
            model,
            input,
            protocol: "duet".into(),
            net: "lan".into(),
            planned: true,
            progress: false,
            recv_timeout: QuicConfig::default().recv_timeout,
            adapter: None,
        }
    }

    fn config(&self) -> Result<RunConfig, DuetError> {
        check_net(&self.net)?;
        run_config(&self.protocol, self.planned, &self.net)
    }
}

fn outputs(inputs: &[Input], outs: &[&SecureOutput], refs: Option<&[Reference]>) -> Vec<Output> {
    inputs
        .iter()
        .zip(outs)
        .enumerate()
        .map(|(i, (input, o))| {
            let acc = refs
                .and_then(|r| r.get(i))
                .and_then(|r| output_accuracy(o, r));
            Output {
                text: input.text.clone(),
                input_ids: input.ids.clone(),
                embedding: o
                    .hidden
                    .as_ref()
                    .map(sentence_embedding)
                    .unwrap_or_default(),
                top_logits: o.logits.as_deref().map(|l| top_logits(l, 5)),
                cosine_vs_reference: acc.as_ref().map(|a| a.cosine_vs_reference),
                max_abs_err: acc.as_ref().map(|a| a.max_abs_err),
            }
        })
        .collect()
}

/// The report of one session's requests from `role`'s side.
#[allow(clippy::too_many_arguments, reason = "the report's parts")]
fn session_report(
    name: &str,
    config: &RunConfig,
    network: &str,
    wall: f64,
    reports: &[SecureReport],
    role: Role,
    graph: &duet_models::Graph,
    seq_for_plan: usize,
) -> Result<ModelReport, DuetError> {
    let (opts, choices) = options_and_choices(config, graph, seq_for_plan)?;
    let mut rep = ModelReport::from_secure(
        name,
        &config.protocol,
        network,
        wall,
        &merge_reports(reports),
        role,
    );
    rep.runs = reports.len();
    rep.plan = choices;
    rep.plan_name = config.plan_name();
    rep.options = Some(opts);
    Ok(rep)
}

/// `duet infer`: both parties here over loopback QUIC, one session with one request per
/// input line; the accuracy is measured against the plaintext reference executor (this
/// process holds both sides). Peak RSS is this one process's, reported for both parties.
pub fn infer(args: &InferArgs) -> Result<ModelReport, DuetError> {
    let mut config = args.config()?;
    let server = open_server_model(&args.model, args.adapter.as_ref(), &mut config)?;
    // LoRA mode: the client holds the same public base (in this process, the same file)
    let base = config
        .adapter
        .is_some()
        .then_some(&server.weights as &(dyn duet_models::WeightSource + Sync));
    let need_tok = args.input.is_text() && !matches!(args.model, ModelSpec::Builtin(_));
    let client = PublicModel::open(&args.model, need_tok)?;
    let inputs = resolve_inputs(&client, &args.input)?;
    let longest = inputs.iter().map(|i| i.ids.len()).max().unwrap_or(1);
    let t = Instant::now();
    let mut bar = ProgressLine::new(args.progress, "secure inference");
    let res = loopback_with(
        loopback_config(args.recv_timeout),
        |s| serve_model_session(s, &server, &config, &mut |_| {}),
        |s| {
            client_model_session(s, &client.graph, &inputs, &config, base, &mut |p| {
                bar.update(p)
            })
        },
    );
    bar.finish();
    let (_, results) = res?;
    let wall = t.elapsed().as_secs_f64();
    let rss = peak_rss_bytes();
    let refs = references(&server.graph, &server.reference_weights(), inputs.iter())?;
    let reports: Vec<SecureReport> = results.iter().map(|(_, r)| r.clone()).collect();
    let mut rep = session_report(
        &client.name,
        &config,
        "loopback-quic",
        wall,
        &reports,
        Role::Client,
        &client.graph,
        longest,
    )?;
    rep.network_note = format!(
        "both parties in one process, no shaping; options {} (net {})",
        config.plan_name(),
        args.net
    );
    rep.report.peak_rss_bytes = PeakRss {
        server: rss,
        client: rss,
    };
    let pairs: Vec<_> = results.iter().map(|(o, _)| o).zip(&refs).collect();
    rep.set_accuracy(&pairs);
    rep.reference = "f64 reference executor on the revealed output".into();
    let outs: Vec<&SecureOutput> = results.iter().map(|(o, _)| o).collect();
    rep.outputs = outputs(&inputs, &outs, Some(&refs));
    if let Some(opts) = rep.options.clone() {
        if let (Ok(net), Ok(profile)) = (check_net(&args.net), MachineProfile::default_profile()) {
            if inputs.len() == 1 {
                add_predictions(&mut rep, &client.graph, &opts, &net, &profile)?;
            }
        }
    }
    Ok(rep)
}

/// Tokens of `duet demo`'s model run.
pub const DEMO_TOKENS: usize = 8;

/// `duet demo`: bert-tiny with seeded random weights on [`DEMO_TOKENS`] seeded token ids,
/// securely over loopback QUIC with the plan for `lan`, checked against the reference
/// executor.
pub fn demo(progress: bool) -> Result<ModelReport, DuetError> {
    let mut args = InferArgs::new(
        ModelSpec::Builtin(duet_models::BuiltinModel::BertTiny),
        InputArg::SeqLen(DEMO_TOKENS),
    );
    args.progress = progress;
    infer(&args)
}

/// One party's link to the other machine.
#[derive(Debug)]
pub struct Link<'a> {
    /// This party's identity.
    pub identity: &'a Identity,
    /// The peer's pinned fingerprint.
    pub peer: Fingerprint,
    /// Transport settings.
    pub config: QuicConfig,
    /// `serve` only: the first connection attempt decides (else strangers are refused and
    /// the server waits on for its pinned client).
    pub once: bool,
}

/// `duet serve` with a model: waits for one pinned client and serves its session. Returns
/// the server's report (no outputs: the server learns none).
pub fn serve_model(
    link: Link<'_>,
    listen: SocketAddr,
    model: &ModelSpec,
    adapter: Option<&AdapterSpec>,
    config: &RunConfig,
    progress: bool,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<ModelReport, DuetError> {
    let mut config = config.clone();
    let config = &mut config;
    let server = open_server_model(model, adapter, config)?;
    let rt = QuicRuntime::recommended()?;
    let listener = QuicListener::bind(&rt, listen, link.identity, link.peer, link.config)?;
    on_listen(listener.local_addr()?);
    let session = crate::listen::accept_client(&listener, link.once)?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(progress, "server");
    let res = serve_model_session(&session, &server, config, &mut |p| bar.update(p));
    bar.finish();
    let reports = res?;
    session.close()?;
    let longest = reports.iter().map(|r| r.seq_len).max().unwrap_or(1);
    session_report(
        &server.name,
        config,
        "quic",
        t.elapsed().as_secs_f64(),
        &reports,
        Role::Server,
        &server.graph,
        longest,
    )
}

/// `duet connect` with a model: reads only `config.json` (and `tokenizer.json` for text) of
/// a folder, runs one session with one request per input against the server. For a built-in
/// model the weights are public (seeded), so the client also checks its result against the
/// reference executor; for a folder it cannot (it has no weights).
pub fn connect_model(
    link: Link<'_>,
    addr: SocketAddr,
    model: &ModelSpec,
    input: &InputArg,
    config: &RunConfig,
    public_base: bool,
    progress: bool,
) -> Result<ModelReport, DuetError> {
    let need_tok = input.is_text() && !matches!(model, ModelSpec::Builtin(_));
    let client = PublicModel::open(model, need_tok)?;
    // LoRA mode: the client holds the public base (the server announces its adapters' layout)
    let base = if public_base {
        Some(duet_models::open::ServerModel::open(model)?)
    } else {
        None
    };
    let inputs = resolve_inputs(&client, input)?;
    let longest = inputs.iter().map(|i| i.ids.len()).max().unwrap_or(1);
    let rt = QuicRuntime::recommended()?;
    let session = connect(&rt, addr, link.identity, link.peer, link.config)?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(progress, "client");
    let base_weights = base
        .as_ref()
        .map(|b| &b.weights as &(dyn duet_models::WeightSource + Sync));
    let res = client_model_session(
        &session,
        &client.graph,
        &inputs,
        config,
        base_weights,
        &mut |p| bar.update(p),
    );
    bar.finish();
    let results = res?;
    session.close()?;
    let reports: Vec<SecureReport> = results.iter().map(|(_, r)| r.clone()).collect();
    let mut rep = session_report(
        &client.name,
        config,
        "quic",
        t.elapsed().as_secs_f64(),
        &reports,
        Role::Client,
        &client.graph,
        longest,
    )?;
    let refs = match model {
        ModelSpec::Builtin(_) => {
            let refs = builtin_references(&client.graph, inputs.iter())?;
            let pairs: Vec<_> = results.iter().map(|(o, _)| o).zip(&refs).collect();
            rep.set_accuracy(&pairs);
            rep.reference = "f64 reference executor on the public seeded weights".into();
            Some(refs)
        }
        ModelSpec::Dir(_) | ModelSpec::Gguf(_) => {
            rep.reference = "not measured: the client has no weights".into();
            None
        }
    };
    let outs: Vec<&SecureOutput> = results.iter().map(|(o, _)| o).collect();
    rep.outputs = outputs(&inputs, &outs, refs.as_deref());
    Ok(rep)
}
