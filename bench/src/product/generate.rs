//! `duet generate`: secure text generation with both parties in this process over loopback
//! QUIC (and the client side of `duet connect --prompt`): the prompt (text, optionally in the
//! model's chat template, or seeded ids), a prefill, then one decode step per token, each
//! token printed as it comes. The report has the prompt and generated ids and text, and the
//! prefill and every step apart, measured beside the cost model's prediction.

use crate::harness::model_bench::{check_net, options_and_choices, run_config};
use crate::model_report::ModelReport;
use crate::product::inputs::{seeded_ids, ProgressLine};
use crate::product::session::{
    check_payload, loopback_config, loopback_with, open_server_model, serve_model_session,
    MODEL_CHANNEL, MODEL_PAYLOAD, PAYLOAD_CHANNEL,
};
use crate::report::{peak_rss_bytes, PeakRss};
use crate::DuetError;
use duet_models::generate::{predict_generation_after, GenerateOptions, Generation, StopReason};
use duet_models::open::{AdapterSpec, ModelSpec, PublicModel};
use duet_models::secure::{Prediction, SecureReport};
use duet_models::session::{Client, RunConfig, TokenChoice};
use duet_models::WeightSource;
use duet_protocols::cost_model::MachineProfile;
use duet_transport::relay::NetProfile;
use duet_transport::{Role, Session};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

fn usage(m: impl Into<String>) -> DuetError {
    DuetError::Usage(m.into())
}

/// Where the prompt comes from.
#[derive(Clone, Debug)]
pub enum PromptArg {
    /// `--prompt T`.
    Text(String),
    /// `--prompt-file F`.
    File(PathBuf),
    /// `--prompt-len N`: `N` ids drawn from a public seed (benchmarks).
    Len(usize),
}

/// Arguments of `duet generate` (and the client side of `connect --prompt`).
#[derive(Clone, Debug)]
pub struct GenerateArgs {
    /// The model.
    pub model: ModelSpec,
    /// The prompt.
    pub prompt: PromptArg,
    /// Wrap the prompt in the model's chat template (one user message, then the assistant's
    /// turn).
    pub chat: bool,
    /// Most new tokens.
    pub max_new_tokens: usize,
    /// How tokens are chosen.
    pub choice: TokenChoice,
    /// Stop at the tokenizer's end-of-sequence token (telling the server the output's length).
    pub stop_at_eos: bool,
    /// Protocol preset.
    pub protocol: String,
    /// The network the plan is made for.
    pub net: String,
    /// Planned (else the preset's fixed choices).
    pub planned: bool,
    /// Print tokens as they come (stdout) and a progress bar (stderr).
    pub stream: bool,
    /// Longest wait for one message from the other party.
    pub recv_timeout: std::time::Duration,
    /// The server's PEFT adapter over the model: LoRA mode (the model a public base both
    /// sides hold) or merged (every weight private).
    pub adapter: Option<AdapterSpec>,
    /// A public prefix before the prompt (text both parties know, or seeded ids): the server
    /// runs it in the clear ([`duet_models::prefix`]).
    pub prefix: Option<PromptArg>,
}

impl GenerateArgs {
    /// Greedy, 32 tokens, stopping at EOS, `duet` planned for `lan`.
    pub fn new(model: ModelSpec, prompt: PromptArg) -> Self {
        Self {
            model,
            prompt,
            chat: false,
            max_new_tokens: 32,
            choice: TokenChoice::Greedy,
            stop_at_eos: true,
            protocol: "duet".into(),
            net: "lan".into(),
            planned: true,
            stream: false,
            recv_timeout: duet_transport::quic::QuicConfig::default().recv_timeout,
            adapter: None,
            prefix: None,
        }
    }

    /// The run configuration.
    pub fn config(&self) -> Result<RunConfig, DuetError> {
        check_net(&self.net)?;
        run_config(&self.protocol, self.planned, &self.net)
    }
}

/// `greedy`, `logits` or `sample:t=0.8,top_k=40,top_p=0.9,seed=7` (any subset of the keys;
/// `t` defaults to 1, `seed` to 0).
pub fn parse_choice(s: &str) -> Result<TokenChoice, DuetError> {
    let bad = |why: String| usage(format!("--choice {s:?}: {why}"));
    let c = match s {
        "greedy" => TokenChoice::Greedy,
        "logits" => TokenChoice::Logits,
        _ => {
            let rest = s
                .strip_prefix("sample")
                .ok_or_else(|| bad("expected greedy, logits or sample:...".into()))?;
            let (mut temperature, mut top_k, mut top_p, mut seed) = (1.0, None, None, 0u64);
            for kv in rest
                .trim_start_matches(':')
                .split(',')
                .filter(|p| !p.is_empty())
            {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad(format!("{kv:?} is not key=value")))?;
                let num = |what: &str| bad(format!("{k}: {v:?} is not {what}"));
                match k {
                    "t" | "temperature" => temperature = v.parse().map_err(|_| num("a number"))?,
                    "top_k" | "k" => top_k = Some(v.parse().map_err(|_| num("an integer"))?),
                    "top_p" | "p" => top_p = Some(v.parse().map_err(|_| num("a number"))?),
                    "seed" => seed = v.parse().map_err(|_| num("an integer"))?,
                    other => return Err(bad(format!("unknown key {other:?}"))),
                }
            }
            TokenChoice::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            }
        }
    };
    c.validate().map_err(|e| bad(e.to_string()))?;
    Ok(c)
}

/// One phase (the prefill or a decode step), measured and predicted.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct PhaseReport {
    /// Tokens processed.
    pub tokens: usize,
    /// Online bytes, both directions.
    pub bytes: u64,
    /// Flights.
    pub rounds: u64,
    /// Wall seconds.
    pub wall_s: f64,
    /// The cost model's online bytes (as `bytes`: the cached server-key table apart).
    pub predicted_bytes: u64,
    /// The cost model's latency on the network.
    pub predicted_s: f64,
    /// Per operator kind: (kind, bytes, seconds, flights).
    pub kinds: Vec<(String, u64, f64, u64)>,
    /// Per node in execution order: (name, bytes, seconds, flights).
    #[serde(default)]
    pub nodes: Vec<(String, u64, f64, u64)>,
}

impl PhaseReport {
    fn new(r: &SecureReport, p: Option<&Prediction>, net: &NetProfile) -> Self {
        Self {
            tokens: r.seq_len,
            bytes: r.online_bytes,
            rounds: r.nodes.iter().map(|n| n.rounds).sum(),
            wall_s: r.online_seconds,
            // online bytes, like `bytes` (the cached server-key table apart)
            predicted_bytes: p.map_or(0, |p| p.nodes_total().bytes.saturating_sub(p.cached_bytes)),
            predicted_s: p.map_or(0.0, |p| p.nodes_total().latency(net)),
            kinds: r
                .ops
                .iter()
                .map(|k| (k.kind.clone(), k.bytes, k.seconds, k.rounds))
                .collect(),
            nodes: r
                .nodes
                .iter()
                .map(|k| (k.name.clone(), k.bytes, k.seconds, k.rounds))
                .collect(),
        }
    }
}

/// What `duet generate --json` prints: the model report (totals over the whole generation)
/// plus the generation's own fields.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GenerateReport {
    /// Totals, options, plan.
    #[serde(flatten)]
    pub run: ModelReport,
    /// The public prefix's length (0: none).
    #[serde(default)]
    pub prefix_len: usize,
    /// The server's plaintext seconds for the public prefix (its forward pass in the clear).
    #[serde(default)]
    pub prefix_seconds: f64,
    /// The prompt's ids (the private part).
    pub prompt_ids: Vec<u32>,
    /// The generated ids.
    pub generated_ids: Vec<u32>,
    /// The generated text (when the model has a tokenizer).
    pub text: String,
    /// What the client learned per step.
    pub reveals: String,
    /// Why generation stopped.
    pub stop: String,
    /// The prefill.
    pub prefill: PhaseReport,
    /// Each decode step.
    pub steps: Vec<PhaseReport>,
}

impl GenerateReport {
    /// Median seconds and bytes of the decode steps.
    pub fn decode_medians(&self) -> Option<(f64, u64)> {
        if self.steps.is_empty() {
            return None;
        }
        let mut s: Vec<f64> = self.steps.iter().map(|p| p.wall_s).collect();
        let mut b: Vec<u64> = self.steps.iter().map(|p| p.bytes).collect();
        b.sort_unstable();
        Some((
            crate::median(&mut s),
            b.get(b.len() / 2).copied().unwrap_or(0),
        ))
    }
}

/// The public prefix's ids (none without `--public-prefix`): text tokenized as it is (no
/// chat template), or seeded ids (another seed than the prompt's).
pub fn prefix_ids(model: &PublicModel, args: &GenerateArgs) -> Result<Vec<u32>, DuetError> {
    let vocab = model.graph.config.vocab_size;
    let text = match &args.prefix {
        None => return Ok(Vec::new()),
        Some(PromptArg::Len(n)) => {
            let v = u32::try_from(vocab).unwrap_or(u32::MAX).max(1);
            // the prompt's seeded ids reversed and shifted: another sequence, still public
            return Ok(seeded_ids(*n, vocab)?
                .into_iter()
                .rev()
                .map(|t| (t + 7) % v)
                .collect());
        }
        Some(PromptArg::Text(t)) => t.clone(),
        Some(PromptArg::File(f)) => std::fs::read_to_string(f).map_err(|e| {
            usage(format!(
                "cannot read the public prefix file {}: {e}",
                f.display()
            ))
        })?,
    };
    let ids = match &model.tokenizer {
        Some(t) => t
            .encode(&text)
            .map_err(|e| usage(format!("the public prefix cannot be tokenized: {e}")))?,
        None => text
            .bytes()
            .map(|b| u32::from(b) % u32::try_from(vocab).unwrap_or(u32::MAX).max(1))
            .collect(),
    };
    duet_models::prefix::check_prefix_len(&model.graph, ids.len())?;
    Ok(ids)
}

/// The prompt's ids: text (through the chat template when `chat`) tokenized by the model's
/// tokenizer (a built-in has none: UTF-8 bytes modulo the vocabulary), or seeded ids.
pub fn prompt_ids(model: &PublicModel, args: &GenerateArgs) -> Result<Vec<u32>, DuetError> {
    let vocab = model.graph.config.vocab_size;
    let text = match &args.prompt {
        PromptArg::Len(n) => return seeded_ids(*n, vocab),
        PromptArg::Text(t) => t.clone(),
        PromptArg::File(f) => std::fs::read_to_string(f)
            .map_err(|e| usage(format!("cannot read the prompt file {}: {e}", f.display())))?,
    };
    let text = if args.chat {
        model
            .chat
            .as_ref()
            .ok_or_else(|| usage("--chat: the model has no chat template"))?
            .render(&text)
    } else {
        text
    };
    let ids = match &model.tokenizer {
        // the tokenizer's message may quote the prompt, which is private
        Some(t) => t
            .encode(&text)
            .map_err(|_| usage("the prompt cannot be tokenized by the model's tokenizer"))?,
        None => text
            .bytes()
            .map(|b| u32::from(b) % u32::try_from(vocab).unwrap_or(u32::MAX).max(1))
            .collect(),
    };
    if ids.is_empty() || ids.len() >= model.graph.config.max_positions {
        return Err(usage(format!(
            "the prompt is {} tokens; the model takes 1 to {}",
            ids.len(),
            model.graph.config.max_positions - 1
        )));
    }
    Ok(ids)
}

fn generate_options(model: &PublicModel, args: &GenerateArgs) -> GenerateOptions {
    let stop = match (&model.tokenizer, args.stop_at_eos) {
        (Some(t), true) => t.eos().into_iter().collect(),
        _ => Vec::new(),
    };
    GenerateOptions {
        max_new_tokens: args.max_new_tokens,
        choice: args.choice.clone(),
        stop,
    }
}

/// Prints each new piece of the decoded text as tokens come.
struct Printer<'a> {
    model: &'a PublicModel,
    ids: Vec<u32>,
    shown: String,
    on: bool,
}

impl Printer<'_> {
    fn token(&mut self, t: u32) {
        self.ids.push(t);
        if !self.on {
            return;
        }
        let text = match &self.model.tokenizer {
            Some(tok) => tok.decode(&self.ids).unwrap_or_default(),
            None => format!(
                "{} ",
                self.ids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        };
        let mut out = std::io::stdout().lock();
        // a failed write to the terminal only loses the echo
        let _ = match text.strip_prefix(self.shown.as_str()) {
            Some(new) => write!(out, "{new}"),
            None => write!(out, "\n{text}"),
        };
        let _ = out.flush();
        self.shown = text;
    }
}

/// The client's generation on an established session.
pub fn client_generate<S: Session>(
    session: &S,
    model: &PublicModel,
    prefix: &[u32],
    prompt: &[u32],
    args: &GenerateArgs,
    config: &RunConfig,
    base: Option<&(dyn WeightSource + Sync)>,
) -> Result<Generation, DuetError> {
    {
        let mut ch = session.channel(PAYLOAD_CHANNEL)?;
        check_payload(&mut ch, MODEL_PAYLOAD)?;
    }
    let ch = session.channel(MODEL_CHANNEL)?;
    // a generation's cost is its decode steps (one token each, `max_new_tokens` of them):
    // the plan is made for one-token requests, and the prefill runs under the same plan
    let mut client = match base {
        Some(b) => Client::connect_with_base(ch, &model.graph, config, PLAN_TOKENS, b)?,
        None => Client::connect(ch, &model.graph, config, PLAN_TOKENS)?,
    };
    let mut printer = Printer {
        model,
        ids: Vec::new(),
        shown: String::new(),
        on: args.stream,
    };
    let bar = std::cell::RefCell::new(ProgressLine::new(args.stream, "prefill"));
    let gen = client.generate_after(
        prefix,
        prompt,
        &generate_options(model, args),
        &mut |t| {
            // the bar shows the prefill only: the first token ends it
            let mut b = bar.borrow_mut();
            b.finish();
            *b = ProgressLine::new(false, "");
            printer.token(t)
        },
        &mut |p| bar.borrow_mut().update(p),
    )?;
    if args.stream {
        println!();
    }
    client.close()?;
    Ok(gen)
}

/// The token count a generation's plan is made for: its cost is its decode steps, one token
/// each, and the prefill runs under the same plan. The session and its report both use it.
pub const PLAN_TOKENS: usize = 1;

/// The report of a generation from the client's side.
pub fn generate_report(
    model: &PublicModel,
    args: &GenerateArgs,
    config: &RunConfig,
    gen: &Generation,
    wall: f64,
    network: &str,
) -> Result<GenerateReport, DuetError> {
    let net = check_net(&args.net)?;
    // the options the session ran under: planned for one-token requests (`PLAN_TOKENS`), not
    // for the prompt's length (a plan for 8 tokens may pick another COT backend than the
    // run's, and the prediction would price a run that did not happen)
    let (opts, choices) = options_and_choices(config, &model.graph, PLAN_TOKENS)?;
    let reports: Vec<SecureReport> = std::iter::once(gen.prefill.clone())
        .chain(gen.steps.iter().cloned())
        .collect();
    let mut run = ModelReport::from_secure(
        &model.name,
        &config.protocol,
        network,
        wall,
        &crate::model_report::merge_reports(&reports),
        Role::Client,
    );
    run.report.seq_len = gen.prompt.len();
    if let Some(a) = &args.adapter {
        // the two adapter modes of one model are told apart in tables and file names
        let mode = if a.merged { "merged" } else { "lora" };
        run.report.model = format!("{}+{mode}", model.name);
    }
    run.runs = reports.len();
    run.plan = choices;
    run.plan_name = config.plan_name();
    run.options = Some(opts.clone());
    let pred = predict_generation_after(
        &model.graph,
        gen.prefix_len,
        gen.prompt.len(),
        gen.tokens.len(),
        &opts,
        &args.choice,
        &MachineProfile::default_profile()?,
    )?;
    let text = match &model.tokenizer {
        Some(t) => t.decode(&gen.tokens)?,
        None => String::new(),
    };
    Ok(GenerateReport {
        prefix_len: gen.prefix_len,
        prefix_seconds: gen.prefix_seconds,
        prompt_ids: gen.prompt.clone(),
        generated_ids: gen.tokens.clone(),
        text,
        reveals: args.choice.reveals().into(),
        stop: match gen.stop {
            StopReason::StopToken => "end-of-sequence token",
            StopReason::MaxTokens => "max new tokens",
            StopReason::Context => "context full",
        }
        .into(),
        prefill: PhaseReport::new(&gen.prefill, Some(&pred.prefill), &net),
        steps: gen
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| PhaseReport::new(s, pred.steps.get(i), &net))
            .collect(),
        run,
    })
}

/// `duet generate`: both parties here over loopback QUIC.
pub fn generate(args: &GenerateArgs) -> Result<GenerateReport, DuetError> {
    let mut config = args.config()?;
    let server = open_server_model(&args.model, args.adapter.as_ref(), &mut config)?;
    // LoRA mode: the client holds the same public base (in this process, the same file)
    let base = config
        .adapter
        .is_some()
        .then_some(&server.weights as &(dyn WeightSource + Sync));
    let need_tok = !matches!(args.prompt, PromptArg::Len(_))
        || matches!(args.prefix, Some(PromptArg::Text(_) | PromptArg::File(_)))
        || args.stream;
    let client = PublicModel::open(
        &args.model,
        need_tok && !matches!(args.model, ModelSpec::Builtin(_)),
    )?;
    let prompt = prompt_ids(&client, args)?;
    let prefix = prefix_ids(&client, args)?;
    let t = Instant::now();
    let (_, gen) = loopback_with(
        loopback_config(args.recv_timeout),
        |s| serve_model_session(s, &server, &config, &mut |_| {}),
        |s| client_generate(s, &client, &prefix, &prompt, args, &config, base),
    )?;
    let wall = t.elapsed().as_secs_f64();
    let rss = peak_rss_bytes();
    let mut rep = generate_report(&client, args, &config, &gen, wall, "loopback-quic")?;
    rep.run.network_note = format!(
        "both parties in one process, no shaping; options {} (net {})",
        config.plan_name(),
        args.net
    );
    rep.run.report.peak_rss_bytes = PeakRss {
        server: rss,
        client: rss,
    };
    Ok(rep)
}
