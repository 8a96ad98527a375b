//! The library's front door: a secure session between a [`Client`] (token ids, the model's
//! public config) and a [`Server`] (the weights), over any [`Channel`].
//!
//! A session is set up once (handshake, HE keys, base OTs and the Ferret setup) and then runs
//! any number of inputs: [`Client::infer`] runs one input from position 0 (an encoder's
//! embedding, a decoder's prompt), [`Client::extend`] continues the session's state (each
//! layer's keys and values stay shared on both sides), which is what generation does token by
//! token. The server answers each request in [`Server::serve`] until the client closes.
//!
//! ```
//! use duet_models::session::{Client, RunConfig, Server};
//! use duet_models::{BuiltinModel, Graph, RandomWeights};
//! use duet_transport::run_two_party;
//!
//! let graph = Graph::build(&BuiltinModel::BertTiny.config());
//! let weights = RandomWeights { seed: 1 };
//! let config = RunConfig::fixed("duet");
//! let (server, client) = run_two_party(
//!     |ch| -> duet_models::Result<()> {
//!         let mut server = Server::accept(ch, &graph, &weights, &config)?;
//!         server.serve()?;
//!         Ok(())
//!     },
//!     |ch| -> duet_models::Result<usize> {
//!         let mut client = Client::connect(ch, &graph, &config, 4)?;
//!         let (out, report) = client.infer(&[101, 7, 42, 102])?;
//!         client.close()?;
//!         assert!(report.online_bytes > 0);
//!         Ok(out.hidden.map_or(0, |h| h.rows))
//!     },
//! );
//! server?;
//! assert_eq!(client?, 4);
//! # Ok::<(), duet_models::ModelError>(())
//! ```
//!
//! # Handshake
//! The client sends a [`Hello`]: the options version, the model's public config, the
//! [`RunConfig`] (protocol preset and plan: fixed, or planned for a network), the token count
//! the plan is made for, and the [`SecureOptions`] it derived from them. The server derives its
//! own options from its own config (the planner is deterministic) and refuses any difference,
//! naming each differing field with both values; the refused client acknowledges the refusal
//! before either side closes, so both report the reason.
//!
//! # What each party learns
//! The server: the model's public config, the options, the number of tokens of each request
//! and the kind of output revealed (all public by the threat model). The client: the declared
//! output of each request (an encoder's last hidden state; a decoder's logits when the server
//! allows them), nothing else.

use crate::graph::Graph;
use crate::planner::{plan, AccuracyBudget};
use crate::reference::{Matrix, WeightSource};
use crate::walk::{walk, Progress, WalkOutput, WalkState};
use crate::{ModelConfig, ModelError, Result};
use duet_protocols::cost_model::MachineProfile;
pub use duet_protocols::nonlinear::token_choice::TokenChoice;
use duet_protocols::{
    differences, Backend, NodeRecord, OpKind, ProtocolConfig, ProtocolError, SecureBackend,
    SecureOptions, Tokens, OPTIONS_VERSION,
};
use duet_transport::relay::NetProfile;
use duet_transport::{Channel, ChannelStats, Role, TransportError};
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Most requests one session serves.
pub const MAX_REQUESTS: u64 = 1 << 20;

/// How both parties derive the run's [`SecureOptions`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// Protocol preset: `duet`, `iron`, `bolt`, `bumblebee`, `puma`.
    pub protocol: String,
    /// The plan: the preset's fixed choices, or the planner's for a network.
    pub plan: PlanMode,
}

/// Where the per-operator choices come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PlanMode {
    /// The preset's fixed choices.
    Fixed,
    /// The planner's choices for this network (`lan`, `wan`, ...), on the shipped machine
    /// profile (only the `duet` preset is planned; other presets keep their fixed choices).
    Planned {
        /// The network profile's name.
        net: String,
    },
    /// These options exactly (experiments and tests: both parties are given the same).
    Given(Box<SecureOptions>),
}

impl RunConfig {
    /// `protocol` with its fixed choices.
    pub fn fixed(protocol: &str) -> Self {
        Self {
            protocol: protocol.into(),
            plan: PlanMode::Fixed,
        }
    }

    /// `protocol` planned for network `net`.
    pub fn planned(protocol: &str, net: &str) -> Self {
        Self {
            protocol: protocol.into(),
            plan: PlanMode::Planned { net: net.into() },
        }
    }

    /// Exactly `opts` (its preset's name as the protocol).
    pub fn given(opts: &SecureOptions) -> Self {
        Self {
            protocol: opts.protocol.preset.name().into(),
            plan: PlanMode::Given(Box::new(opts.clone())),
        }
    }

    /// The plan's name in reports: `fixed`, `planned for NET` or `given`.
    pub fn plan_name(&self) -> String {
        match &self.plan {
            PlanMode::Fixed => "fixed".into(),
            PlanMode::Planned { net } => format!("planned for {net}"),
            PlanMode::Given(_) => "given".into(),
        }
    }

    /// The options for `graph` and a run of `seq` tokens, with the planner's decisions when
    /// planned (both parties compute the same: the planner is deterministic).
    pub fn options(
        &self,
        graph: &Graph,
        seq: usize,
    ) -> Result<(SecureOptions, Vec<crate::planner::Decision>)> {
        if let PlanMode::Given(o) = &self.plan {
            o.check().map_err(proto)?;
            return Ok((o.as_ref().clone(), Vec::new()));
        }
        let protocol = ProtocolConfig::from_name(&self.protocol).map_err(proto)?;
        let base = declared_ranges(SecureOptions::new(protocol), &graph.config);
        match &self.plan {
            PlanMode::Planned { net } if protocol.preset == duet_protocols::Preset::Duet => {
                let net = NetProfile::by_name(net)
                    .map_err(|e| ModelError::Input(format!("network {net:?}: {e}")))?;
                let profile = MachineProfile::default_profile().map_err(proto)?;
                let run = plan(
                    graph,
                    seq,
                    &base,
                    &net,
                    &profile,
                    &AccuracyBudget::default(),
                )?;
                Ok((run.opts, run.decisions))
            }
            _ => Ok((base, Vec::new())),
        }
    }
}

/// The value ranges a model family declares (public: both parties derive them from the
/// model's public config), with the ring widened to hold them plus one bit of headroom.
///
/// LLaMA-family decoders carry "massive activations" in a few residual channels (mostly at the
/// first position): SmolLM2-135M-Instruct's residual stream reaches 24,926 and its FFN's
/// down-projection inputs 3,065 on the reference prompts (README, value ranges), so their
/// normalisation inputs and linear outputs are declared below `2^15` and the activations'
/// inputs below `2^7` (SiLU inputs reach 50). Encoders and GPT-2 keep the defaults (MiniLM's
/// largest normalisation input is 221).
pub fn declared_ranges(mut opts: SecureOptions, config: &ModelConfig) -> SecureOptions {
    if config.arch == crate::Arch::Llama {
        opts.norm_in_bits = opts.norm_in_bits.max(15);
        opts.act_range_bits = opts.act_range_bits.max(7);
        opts.ring_bits = opts.ring_bits.max(opts.min_ring_bits() + 1);
    }
    opts
}

fn proto(e: ProtocolError) -> ModelError {
    ModelError::Secure {
        node: "setup".into(),
        source: e,
    }
}

fn transport(e: TransportError) -> ModelError {
    ModelError::Secure {
        node: "session".into(),
        source: e.into(),
    }
}

/// The client's opening message (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// [`OPTIONS_VERSION`].
    pub version: u32,
    /// The model's public config.
    pub model: ModelConfig,
    /// How the options were derived.
    pub config: RunConfig,
    /// The token count the plan was made for.
    pub plan_tokens: usize,
    /// The options.
    pub options: SecureOptions,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
enum Answer {
    Accepted,
    Refused(String),
}

/// What a request reveals to the client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reveal {
    /// The last hidden state of every position (encoders: their declared output).
    Hidden,
    /// The last position's next-token logits (decoders; reveals more about the weights than
    /// a token: the server must allow it).
    Logits,
    /// The next token chosen from the last position's logits on shares (decoders): greedy or
    /// sampled with the client's randomness; only the id is revealed, to the client
    /// ([`TokenChoice::reveals`]). The server receives [`TokenChoice::public`] (no seed).
    Token(TokenChoice),
}

impl Reveal {
    /// What the server may see of it (the sampling seed removed); a token choice of the
    /// logits is the logits.
    pub fn public(&self) -> Self {
        match self {
            Reveal::Token(TokenChoice::Logits) => Reveal::Logits,
            Reveal::Token(c) => Reveal::Token(c.public()),
            other => other.clone(),
        }
    }

    /// What the client learns from it.
    pub fn reveals(&self) -> &'static str {
        match self {
            Reveal::Hidden => "the last hidden state of every position (an encoder's output)",
            Reveal::Logits => TokenChoice::Logits.reveals(),
            Reveal::Token(c) => c.reveals(),
        }
    }
}

/// One request of a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
enum Request {
    /// A fresh input of `tokens` positions from position 0; `keep` keeps its keys and values
    /// for later [`Request::Extend`]s.
    Infer {
        tokens: u32,
        reveal: Reveal,
        keep: bool,
    },
    /// `tokens` more positions after the kept state.
    Extend { tokens: u32, reveal: Reveal },
    /// The end of the session.
    Close,
}

/// Traffic and time of one node or operator kind (this party's view: bytes sent plus
/// received).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OpRecord {
    /// The node (`layer0.attn.softmax.scores`), or the kind for per-kind totals.
    pub name: String,
    /// Operator kind (`embedding`, `linear`, `attention-matmul`, `softmax`, `activation`,
    /// `layernorm`, `elementwise`, `output`).
    pub kind: String,
    /// Nodes of this kind run.
    pub calls: u64,
    /// Payload bytes, both directions.
    pub bytes: u64,
    /// Message flights, both directions.
    pub rounds: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// What one party measured in one request of a session.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SecureReport {
    /// Tokens of the request.
    pub seq_len: usize,
    /// The session's setup (HE keys, OT base and Ferret setup), bytes both directions: in
    /// the session's first request only (0 in later ones).
    pub setup_bytes: u64,
    /// Setup seconds (first request only).
    pub setup_seconds: f64,
    /// Bytes a later session with the same model would not send again (the server-key
    /// embedding table, sent in the first request that needs it); excluded from
    /// `online_bytes`.
    pub cached_bytes: u64,
    /// Online bytes (both directions, every node of the request, except `cached_bytes`).
    pub online_bytes: u64,
    /// Online bytes this party sent.
    pub online_sent: u64,
    /// Online bytes this party received.
    pub online_received: u64,
    /// Online seconds.
    pub online_seconds: f64,
    /// Per operator kind, in first-use order.
    pub ops: Vec<OpRecord>,
    /// Per node (attention split into `.scores`, `.softmax`, `.context`), in execution order.
    pub nodes: Vec<OpRecord>,
}

/// What the client learns from one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SecureOutput {
    /// The last hidden state (`tokens x hidden`), when revealed.
    pub hidden: Option<Matrix>,
    /// The last position's next-token logits (`vocab`), when revealed.
    pub logits: Option<Vec<f64>>,
    /// The chosen next token, when a token was asked for.
    pub token: Option<u32>,
}

/// The records of one request as report rows: per node, and per kind in first-use order.
pub fn rows(records: &[NodeRecord]) -> (Vec<OpRecord>, Vec<OpRecord>) {
    let mut kinds: Vec<OpRecord> = Vec::new();
    let mut nodes = Vec::with_capacity(records.len());
    for r in records {
        let kind = r.kind.map_or("", OpKind::name);
        let row = OpRecord {
            name: r.name.clone(),
            kind: kind.into(),
            calls: 1,
            bytes: r.bytes,
            rounds: r.flights,
            seconds: r.seconds,
        };
        match kinds.iter_mut().find(|k| k.kind == kind) {
            Some(k) => {
                k.calls += r.calls;
                k.bytes += r.bytes;
                k.rounds += r.flights;
                k.seconds += r.seconds;
            }
            None => kinds.push(OpRecord {
                name: kind.into(),
                calls: r.calls,
                ..row.clone()
            }),
        }
        nodes.push(row);
    }
    (kinds, nodes)
}

/// Checks the reveal against the graph: encoders reveal their hidden state, decoders their
/// logits (never both, never a decoder's hidden state).
fn check_reveal(graph: &Graph, reveal: &Reveal) -> Result<()> {
    if let Reveal::Token(c) = reveal {
        c.validate().map_err(proto)?;
    }
    match (graph.logits.is_some(), reveal) {
        (false, Reveal::Hidden) | (true, Reveal::Logits) | (true, Reveal::Token(_)) => Ok(()),
        (true, Reveal::Hidden) => Err(ModelError::Input(
            "a decoder's hidden state is never revealed (it and the logits together reveal the \
             head's weights); ask for its logits or a token"
                .into(),
        )),
        (false, _) => Err(ModelError::Input(
            "the model has no language-model head".into(),
        )),
    }
}

/// One request on any backend: the walk, then the reveal, recorded as node `output`. Both the
/// secure session and the cost model run this.
pub fn run_request<B: Backend>(
    b: &mut B,
    graph: &Graph,
    weights: Option<&dyn WeightSource>,
    tokens: Tokens<'_>,
    state: Option<&mut WalkState<B::T>>,
    reveal: &Reveal,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<SecureOutput> {
    check_reveal(graph, reveal)?;
    let WalkOutput { hidden, logits } = walk(b, graph, weights, tokens, state, progress)?;
    let at = |e: ProtocolError| ModelError::Secure {
        node: "output".into(),
        source: e,
    };
    b.begin();
    let out = match (reveal, logits) {
        (Reveal::Hidden, _) => {
            let (rows, cols) = b.dims(&hidden);
            let v = b.reveal(&hidden).map_err(at)?;
            SecureOutput {
                hidden: v.map(|data| Matrix { rows, cols, data }),
                ..SecureOutput::default()
            }
        }
        (Reveal::Logits, Some(l)) => SecureOutput {
            logits: b.reveal(&l).map_err(at)?,
            ..SecureOutput::default()
        },
        (Reveal::Token(c), Some(l)) => {
            let outcome = b.choose_token(&l, c).map_err(at)?;
            SecureOutput {
                token: outcome.token(),
                logits: outcome.logits().map(<[f64]>::to_vec),
                ..SecureOutput::default()
            }
        }
        (_, None) => {
            return Err(ModelError::Input(
                "the model has no language-model head".into(),
            ))
        }
    };
    b.finish("output", OpKind::Output, 1);
    Ok(out)
}

/// What a party's session state is: the backend and the kept walk state.
struct Party<C: Channel> {
    b: SecureBackend<C>,
    state: WalkState<<SecureBackend<C> as Backend>::T>,
    requests: u64,
    setup_reported: bool,
    cached_reported: u64,
}

impl<C: Channel> Party<C> {
    fn report(&mut self, seq: usize, t: Instant, before: ChannelStats) -> SecureReport {
        let d = self.b.stats() - before;
        let records = self.b.take_records();
        let (ops, nodes) = rows(&records);
        let (setup_bytes, setup_seconds) = if self.setup_reported {
            (0, 0.0)
        } else {
            self.setup_reported = true;
            self.b.setup_cost()
        };
        let cached = self.b.cached_bytes() - self.cached_reported;
        self.cached_reported = self.b.cached_bytes();
        SecureReport {
            seq_len: seq,
            setup_bytes,
            setup_seconds,
            cached_bytes: cached,
            online_bytes: d.bytes_sent + d.bytes_received - cached,
            online_sent: d.bytes_sent,
            online_received: d.bytes_received,
            online_seconds: t.elapsed().as_secs_f64(),
            ops,
            nodes,
        }
    }
}

/// The server side of a session: holds the weights; learns only public shapes.
pub struct Server<'a, C: Channel> {
    party: Party<C>,
    graph: &'a Graph,
    weights: &'a dyn WeightSource,
    allow_logits: bool,
    reports: Vec<SecureReport>,
}

/// Most characters of a handshake refusal shown or sent (it names up to 8 differing fields
/// with both values).
const REFUSAL_MAX_CHARS: usize = 1200;

/// Receives the client's [`Hello`], compares it with this server's model and config, answers,
/// and on acceptance returns the options.
fn server_handshake<C: Channel>(
    ch: &mut C,
    graph: &Graph,
    config: &RunConfig,
) -> Result<SecureOptions> {
    let hello: Hello = ch.recv_msg().map_err(transport)?;
    let refuse = |ch: &mut C, why: String| -> Result<SecureOptions> {
        // `why` quotes the client's hello: filtered before it is sent back or logged
        let why = duet_transport::peer_text_max(why.as_bytes(), REFUSAL_MAX_CHARS);
        ch.send_msg(&Answer::Refused(why.clone()))
            .map_err(transport)?;
        ch.flush().map_err(transport)?;
        // the client acknowledges once it has read the refusal (or the channel fails)
        let _: std::result::Result<u8, _> = ch.recv_msg();
        Err(ModelError::Input(format!("refused the client: {why}")))
    };
    if hello.version != OPTIONS_VERSION {
        return refuse(
            ch,
            format!(
                "options version: server {OPTIONS_VERSION}, client {}",
                hello.version
            ),
        );
    }
    if hello.model != graph.config {
        let d = differences(&graph.config, &hello.model, 8).join("; ");
        return refuse(ch, format!("model config differs (server vs client): {d}"));
    }
    let same_source = hello.config.protocol == config.protocol
        && match (&hello.config.plan, &config.plan) {
            (PlanMode::Given(_), PlanMode::Given(_)) => true,
            (a, b) => a == b,
        };
    if !same_source {
        return refuse(
            ch,
            format!(
                "the server runs protocol {} ({}), the client asked for {} ({})",
                config.protocol,
                config.plan_name(),
                hello.config.protocol,
                hello.config.plan_name()
            ),
        );
    }
    if hello.plan_tokens == 0 || hello.plan_tokens > graph.config.max_positions {
        return refuse(
            ch,
            format!(
                "a plan for {} tokens (1..={})",
                hello.plan_tokens, graph.config.max_positions
            ),
        );
    }
    let (mine, _) = match config.options(graph, hello.plan_tokens) {
        Ok(o) => o,
        Err(e) => return refuse(ch, format!("the server cannot derive the options: {e}")),
    };
    if mine != hello.options {
        let d = differences(&mine, &hello.options, 8).join("; ");
        return refuse(ch, format!("options differ (server vs client): {d}"));
    }
    ch.send_msg(&Answer::Accepted).map_err(transport)?;
    ch.flush().map_err(transport)?;
    Ok(mine)
}

impl<'a, C: Channel> Server<'a, C> {
    /// Accepts a client on `ch`: handshake, then the session setup.
    pub fn accept(
        mut ch: C,
        graph: &'a Graph,
        weights: &'a dyn WeightSource,
        config: &RunConfig,
    ) -> Result<Self> {
        // options that do not depend on the client's request are checked before waiting
        if !matches!(config.plan, PlanMode::Planned { .. }) {
            config.options(graph, 1)?;
        }
        let opts = server_handshake(&mut ch, graph, config)?;
        let b = SecureBackend::setup(ch, Role::Server, &opts).map_err(proto)?;
        Ok(Self {
            party: Party {
                b,
                state: WalkState::new(),
                requests: 0,
                setup_reported: false,
                cached_reported: 0,
            },
            graph,
            weights,
            allow_logits: true,
            reports: Vec::new(),
        })
    }

    /// Whether a decoder's logits may be revealed to the client (default: yes; the README
    /// says what they reveal). With `false` such requests are refused.
    pub fn allow_logits(&mut self, allow: bool) {
        self.allow_logits = allow;
    }

    /// The options of the session.
    pub fn options(&self) -> &SecureOptions {
        self.party.b.options()
    }

    /// Serves requests until the client closes the session; returns one report per request.
    pub fn serve(&mut self) -> Result<Vec<SecureReport>> {
        self.serve_with(&mut |_| {})
    }

    /// [`Server::serve`] with a progress callback.
    pub fn serve_with(
        &mut self,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Vec<SecureReport>> {
        loop {
            let req: Request = self.party.b.channel().recv_msg().map_err(transport)?;
            self.party.requests += 1;
            if self.party.requests > MAX_REQUESTS {
                return Err(ModelError::Input(format!(
                    "the client sent more than {MAX_REQUESTS} requests"
                )));
            }
            let (tokens, reveal, keep, extend) = match req {
                Request::Close => return Ok(std::mem::take(&mut self.reports)),
                Request::Infer {
                    tokens,
                    reveal,
                    keep,
                } => (tokens, reveal, keep, false),
                Request::Extend { tokens, reveal } => (tokens, reveal, true, true),
            };
            let reveal = reveal.public();
            if reveal == Reveal::Logits && !self.allow_logits {
                return Err(ModelError::Input(
                    "the client asked for logits, which this server does not reveal".into(),
                ));
            }
            if extend && self.party.state.position() == 0 {
                return Err(ModelError::Input(
                    "the client continued a session that kept no state".into(),
                ));
            }
            let n = tokens as usize;
            let start = if extend {
                self.party.state.position()
            } else {
                0
            };
            if n == 0 || start + n > self.graph.config.max_positions {
                return Err(ModelError::Input(format!(
                    "the client asked for positions {start}..{} (the model takes {})",
                    start + n,
                    self.graph.config.max_positions
                )));
            }
            if !extend {
                self.party.state = WalkState::new();
            }
            let t = Instant::now();
            let before = self.party.b.stats();
            run_request(
                &mut self.party.b,
                self.graph,
                Some(self.weights),
                Tokens::Count(n),
                keep.then_some(&mut self.party.state),
                &reveal,
                progress,
            )?;
            let r = self.party.report(n, t, before);
            self.reports.push(r);
        }
    }
}

/// The client side of a session: holds the token ids and the model's public config.
pub struct Client<'a, C: Channel> {
    party: Party<C>,
    graph: &'a Graph,
    config: RunConfig,
}

impl<'a, C: Channel> Client<'a, C> {
    /// Connects on `ch`: derives the options for `config` (planned for runs of `plan_tokens`
    /// tokens), sends the [`Hello`], and on acceptance sets the session up.
    pub fn connect(
        mut ch: C,
        graph: &'a Graph,
        config: &RunConfig,
        plan_tokens: usize,
    ) -> Result<Self> {
        let (options, _) = config.options(graph, plan_tokens.max(1))?;
        let hello = Hello {
            version: OPTIONS_VERSION,
            model: graph.config.clone(),
            config: config.clone(),
            plan_tokens: plan_tokens.max(1),
            options: options.clone(),
        };
        ch.send_msg(&hello).map_err(transport)?;
        ch.flush().map_err(transport)?;
        match ch.recv_msg::<Answer>().map_err(transport)? {
            Answer::Accepted => {}
            Answer::Refused(why) => {
                // tell the server its refusal was read, so it can close
                let _ = ch.send_msg(&0u8);
                let _ = ch.flush();
                let why = duet_transport::peer_text_max(why.as_bytes(), REFUSAL_MAX_CHARS);
                return Err(ModelError::Input(format!("the server refused: {why}")));
            }
        }
        let b = SecureBackend::setup(ch, Role::Client, &options).map_err(proto)?;
        Ok(Self {
            party: Party {
                b,
                state: WalkState::new(),
                requests: 0,
                setup_reported: false,
                cached_reported: 0,
            },
            graph,
            config: config.clone(),
        })
    }

    /// The options of the session.
    pub fn options(&self) -> &SecureOptions {
        self.party.b.options()
    }

    /// How the options were derived.
    pub fn config(&self) -> &RunConfig {
        &self.config
    }

    /// The model's graph.
    pub fn graph(&self) -> &Graph {
        self.graph
    }

    /// Runs one input from position 0 and reveals its declared output (an encoder's last
    /// hidden state; a decoder's last-position logits).
    pub fn infer(&mut self, ids: &[u32]) -> Result<(SecureOutput, SecureReport)> {
        self.infer_with(ids, &mut |_| {})
    }

    /// [`Client::infer`] with a progress callback.
    pub fn infer_with(
        &mut self,
        ids: &[u32],
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(SecureOutput, SecureReport)> {
        let reveal = if self.graph.logits.is_some() {
            Reveal::Logits
        } else {
            Reveal::Hidden
        };
        self.request(ids, &reveal, false, progress)
    }

    /// Runs `ids` from position 0 of a decoder, keeping each layer's keys and values for
    /// [`Client::extend`], and reveals `reveal` (a token, or the logits where the server
    /// allows them).
    pub fn prefill(
        &mut self,
        ids: &[u32],
        reveal: &Reveal,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(SecureOutput, SecureReport)> {
        self.request(ids, reveal, false, progress)
    }

    /// Continues the session's kept state with `ids` (a decode step: usually the one token
    /// chosen last), revealing `reveal`. The server learns only the count.
    pub fn extend(
        &mut self,
        ids: &[u32],
        reveal: &Reveal,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(SecureOutput, SecureReport)> {
        if self.party.state.position() == 0 {
            return Err(ModelError::Input(
                "extend needs a prefill first (the session keeps no state)".into(),
            ));
        }
        self.request(ids, reveal, true, progress)
    }

    /// Positions the session holds (prompt and generated tokens so far).
    pub fn position(&self) -> usize {
        self.party.state.position()
    }

    fn request(
        &mut self,
        ids: &[u32],
        reveal: &Reveal,
        extend: bool,
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<(SecureOutput, SecureReport)> {
        check_reveal(self.graph, reveal)?;
        let start = if extend {
            self.party.state.position()
        } else {
            0
        };
        crate::reference::check_ids(&self.graph.config, ids)?;
        if start + ids.len() > self.graph.config.max_positions {
            return Err(ModelError::Input(format!(
                "positions {start}..{} beyond the model's {}",
                start + ids.len(),
                self.graph.config.max_positions
            )));
        }
        let tokens =
            u32::try_from(ids.len()).map_err(|_| ModelError::Input("too many tokens".into()))?;
        let req = if extend {
            Request::Extend {
                tokens,
                reveal: reveal.public(),
            }
        } else {
            Request::Infer {
                tokens,
                reveal: reveal.public(),
                keep: self.graph.logits.is_some(),
            }
        };
        let ch = self.party.b.channel();
        ch.send_msg(&req).map_err(transport)?;
        ch.flush().map_err(transport)?;
        if !extend {
            self.party.state = WalkState::new();
        }
        let keep = extend || self.graph.logits.is_some();
        let t = Instant::now();
        let before = self.party.b.stats();
        let out = run_request(
            &mut self.party.b,
            self.graph,
            None,
            Tokens::Ids(ids),
            keep.then_some(&mut self.party.state),
            reveal,
            progress,
        )?;
        let r = self.party.report(ids.len(), t, before);
        Ok((out, r))
    }

    /// Ends the session (the server's [`Server::serve`] returns).
    pub fn close(mut self) -> Result<()> {
        let ch = self.party.b.channel();
        ch.send_msg(&Request::Close).map_err(transport)?;
        ch.flush().map_err(transport)
    }
}
