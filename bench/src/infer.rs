//! Secure inference of a whole model: `duet infer` and `duet demo` (both parties in this
//! process over loopback QUIC), `duet serve` / `duet connect` with a model (two processes or
//! machines). The client only ever reads `config.json` and `tokenizer.json`.

use crate::model_bench::{
    builtin_references, client_runs, merge_reports, resolve_inputs, secure_options, serve_runs,
    top_logits, ClientModel, Input, InputArg, ModelArg, ModelReport, Output, ProgressLine,
    ServerModel,
};
use crate::report::{peak_rss_bytes, PeakRss};
use crate::DuetError;
use duet_models::secure::{SecureOutput, SecureReport};
use duet_models::{run_reference, sentence_embedding, BuiltinModel, Matrix};
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::Role;
use std::net::SocketAddr;
use std::time::Instant;

/// Arguments of `duet infer`.
#[derive(Clone, Debug)]
pub struct InferArgs {
    /// The model (both sides read it: the server its weights, the client config + tokenizer).
    pub model: ModelArg,
    /// The inputs.
    pub input: InputArg,
    /// Protocol preset.
    pub protocol: String,
    /// Progress bars on stderr (terminals only).
    pub progress: bool,
}

fn outputs(inputs: &[Input], hidden: &[&SecureOutput], refs: Option<&[Matrix]>) -> Vec<Output> {
    inputs
        .iter()
        .zip(hidden)
        .enumerate()
        .map(|(i, (input, h))| {
            let reference = refs.and_then(|r| r.get(i));
            let acc = reference.map(|r| crate::demo::accuracy(&h.hidden.data, &r.data));
            Output {
                text: input.text.clone(),
                input_ids: input.ids.clone(),
                embedding: sentence_embedding(&h.hidden),
                top_logits: h.logits.as_deref().map(|l| top_logits(l, 5)),
                cosine_vs_reference: acc.as_ref().map(|a| a.cosine_vs_reference),
                max_abs_err: acc.as_ref().map(|a| a.max_abs_err),
            }
        })
        .collect()
}

/// `duet infer`: both parties here over loopback QUIC, one secure run per input line; the
/// accuracy is measured against the plaintext reference executor (this process holds both
/// sides). Peak RSS is this one process's, reported for both parties.
pub fn infer(args: &InferArgs) -> Result<ModelReport, DuetError> {
    let opts = secure_options(&args.protocol)?;
    let server = ServerModel::open(&args.model)?;
    let need_tok = args.input.is_text() && matches!(args.model, ModelArg::Dir(_));
    let client = ClientModel::open(&args.model, need_tok)?;
    let inputs = resolve_inputs(&client, &args.input)?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(args.progress, "secure inference");
    let res = crate::demo::loopback(
        |s| serve_runs(s, &server, &opts, &mut |_| {}),
        |s| client_runs(s, &client, &inputs, &opts, &mut |p| bar.update(p)),
    );
    bar.finish();
    let (_, results) = res?;
    let wall = t.elapsed().as_secs_f64();
    let rss = peak_rss_bytes();
    let refs = inputs
        .iter()
        .map(|i| run_reference(&server.graph, &server.weights, &i.ids))
        .collect::<Result<Vec<_>, _>>()?;
    let reports: Vec<SecureReport> = results.iter().map(|(_, r)| r.clone()).collect();
    let mut rep = ModelReport::from_secure(
        &client.name,
        &args.protocol,
        "loopback-quic",
        wall,
        &merge_reports(&reports),
        Role::Client,
    );
    rep.runs = results.len();
    rep.network_note = "both parties in one process, no shaping".into();
    rep.report.peak_rss_bytes = PeakRss {
        server: rss,
        client: rss,
    };
    rep.set_accuracy(results.iter().map(|(o, _)| &o.hidden).zip(&refs));
    rep.reference = "f64 reference executor on the last hidden state".into();
    let hidden: Vec<&SecureOutput> = results.iter().map(|(o, _)| o).collect();
    rep.outputs = outputs(&inputs, &hidden, Some(&refs));
    Ok(rep)
}

/// Tokens of `duet demo`'s model run.
pub const DEMO_TOKENS: usize = 8;

/// `duet demo`: bert-tiny with seeded random weights on [`DEMO_TOKENS`] seeded token ids,
/// securely over loopback QUIC, checked against the reference executor.
pub fn demo(progress: bool) -> Result<ModelReport, DuetError> {
    infer(&InferArgs {
        model: ModelArg::Builtin(BuiltinModel::BertTiny),
        input: InputArg::SeqLen(DEMO_TOKENS),
        protocol: "duet".into(),
        progress,
    })
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
}

/// `duet serve` with a model: waits for one pinned client and serves its runs. Returns the
/// server's report (no outputs: the server learns none).
pub fn serve_model(
    link: Link<'_>,
    listen: SocketAddr,
    model: &ModelArg,
    protocol: &str,
    progress: bool,
    on_listen: impl FnOnce(SocketAddr),
) -> Result<ModelReport, DuetError> {
    let opts = secure_options(protocol)?;
    let server = ServerModel::open(model)?;
    let rt = QuicRuntime::recommended()?;
    let listener = QuicListener::bind(&rt, listen, link.identity, link.peer, link.config)?;
    on_listen(listener.local_addr()?);
    let session = listener.accept()?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(progress, "server");
    let res = serve_runs(&session, &server, &opts, &mut |p| bar.update(p));
    bar.finish();
    let reports = res?;
    session.close()?;
    let mut rep = ModelReport::from_secure(
        &server.name,
        protocol,
        "quic",
        t.elapsed().as_secs_f64(),
        &merge_reports(&reports),
        Role::Server,
    );
    rep.runs = reports.len();
    Ok(rep)
}

/// `duet connect` with a model: reads only `config.json` (and `tokenizer.json` for text) of
/// a folder, runs one secure inference per input against the server. For a built-in model
/// the weights are public (seeded), so the client also checks its result against the
/// reference executor; for a folder it cannot (it has no weights).
pub fn connect_model(
    link: Link<'_>,
    addr: SocketAddr,
    model: &ModelArg,
    input: &InputArg,
    protocol: &str,
    progress: bool,
) -> Result<ModelReport, DuetError> {
    let opts = secure_options(protocol)?;
    let need_tok = input.is_text() && matches!(model, ModelArg::Dir(_));
    let client = ClientModel::open(model, need_tok)?;
    let inputs = resolve_inputs(&client, input)?;
    let rt = QuicRuntime::recommended()?;
    let session = connect(&rt, addr, link.identity, link.peer, link.config)?;
    let t = Instant::now();
    let mut bar = ProgressLine::new(progress, "client");
    let res = client_runs(&session, &client, &inputs, &opts, &mut |p| bar.update(p));
    bar.finish();
    let results = res?;
    session.close()?;
    let reports: Vec<SecureReport> = results.iter().map(|(_, r)| r.clone()).collect();
    let mut rep = ModelReport::from_secure(
        &client.name,
        protocol,
        "quic",
        t.elapsed().as_secs_f64(),
        &merge_reports(&reports),
        Role::Client,
    );
    rep.runs = results.len();
    let refs = match model {
        ModelArg::Builtin(_) => {
            let refs = builtin_references(&client.graph, inputs.iter())?;
            rep.set_accuracy(results.iter().map(|(o, _)| &o.hidden).zip(&refs));
            rep.reference = "f64 reference executor on the public seeded weights".into();
            Some(refs)
        }
        ModelArg::Dir(_) => {
            rep.reference = "not measured: the client has no weights".into();
            None
        }
    };
    let hidden: Vec<&SecureOutput> = results.iter().map(|(o, _)| o).collect();
    rep.outputs = outputs(&inputs, &hidden, refs.as_deref());
    Ok(rep)
}
