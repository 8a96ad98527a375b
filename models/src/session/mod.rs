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

mod config;
mod request;

pub use config::{declared_ranges, Hello, PlanMode, RunConfig};
pub use duet_protocols::nonlinear::token_choice::TokenChoice;
pub use request::{rows, run_request, OpRecord, Reveal, SecureOutput, SecureReport};

use crate::graph::Graph;
use crate::reference::WeightSource;
use crate::walk::{Progress, WalkState};
use crate::{ModelError, Result};
use config::{server_handshake, Answer};
use duet_protocols::{
    Backend, ProtocolError, SecureBackend, SecureOptions, Tokens, OPTIONS_VERSION,
};
use duet_transport::{Channel, ChannelStats, Role, TransportError};
use request::check_reveal;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Most requests one session serves.
pub const MAX_REQUESTS: u64 = 1 << 20;

/// The session's backend: randomness from the OS, or from `seed` (reproducible test runs).
/// A setup error that blames the peer's bytes names the peer.
fn backend<C: Channel>(
    ch: C,
    role: Role,
    opts: &SecureOptions,
    seed: Option<[u8; 32]>,
) -> Result<SecureBackend<C>> {
    let peer = ch.peer().to_string();
    match seed {
        None => SecureBackend::setup(ch, role, opts),
        Some(s) => SecureBackend::setup_with_rng(
            ch,
            role,
            opts,
            <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::from_seed(s),
        ),
    }
    .map_err(|e| proto(e.naming_peer(&peer)))
}

pub(crate) fn proto(e: ProtocolError) -> ModelError {
    ModelError::Secure {
        node: "setup".into(),
        source: e,
    }
}

pub(crate) fn transport(e: TransportError) -> ModelError {
    ModelError::Secure {
        node: "session".into(),
        source: e.into(),
    }
}

/// Names the peer in an error that blames its bytes ([`ProtocolError::naming_peer`]).
fn naming_peer(e: ModelError, peer: &str) -> ModelError {
    match e {
        ModelError::Secure { node, source } => ModelError::Secure {
            node,
            source: source.naming_peer(peer),
        },
        other => other,
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
    /// A public prefix (its ids, known to both): the server runs it in the clear and keeps its
    /// keys and values as the state that [`Request::Extend`]s continue; it answers with its
    /// plaintext seconds.
    Prefix { ids: Vec<u32> },
    /// The end of the session.
    Close,
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
    prefix_cache: Option<&'a crate::prefix::PrefixCache>,
}

impl<'a, C: Channel> Server<'a, C> {
    /// Keeps public prefixes' keys and values in `cache` (shared across the sessions of one
    /// model): a client that sends a prefix seen before skips its plaintext run.
    pub fn use_prefix_cache(&mut self, cache: &'a crate::prefix::PrefixCache) {
        self.prefix_cache = Some(cache);
    }

    /// Accepts a client on `ch`: handshake, then the session setup.
    pub fn accept(
        ch: C,
        graph: &'a Graph,
        weights: &'a dyn WeightSource,
        config: &RunConfig,
    ) -> Result<Self> {
        Self::accept_inner(ch, graph, weights, config, None)
    }

    /// [`Server::accept`] with every random choice of the server's side of the session drawn
    /// from `seed` instead of the operating system: a reproducible run, for tests that hold
    /// one party's randomness fixed (the leakage test). Never use a fixed seed in a real
    /// session: its HE keys, masks and flooding would repeat.
    pub fn accept_seeded(
        ch: C,
        graph: &'a Graph,
        weights: &'a dyn WeightSource,
        config: &RunConfig,
        seed: [u8; 32],
    ) -> Result<Self> {
        Self::accept_inner(ch, graph, weights, config, Some(seed))
    }

    fn accept_inner(
        mut ch: C,
        graph: &'a Graph,
        weights: &'a dyn WeightSource,
        config: &RunConfig,
        seed: Option<[u8; 32]>,
    ) -> Result<Self> {
        // options that do not depend on the client's request are checked before waiting
        if !matches!(config.plan, PlanMode::Planned { .. }) {
            config.options(graph, 1)?;
        }
        let opts = server_handshake(&mut ch, graph, weights, config)?;
        let b = backend(ch, Role::Server, &opts, seed)?;
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
            prefix_cache: None,
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
                Request::Prefix { ids } => {
                    crate::reference::check_ids(&self.graph.config, &ids)?;
                    let opts = self.party.b.options();
                    let (state, seconds) = match self.prefix_cache {
                        Some(c) => {
                            let (s, t, _) =
                                c.server_prefix(self.graph, self.weights, &ids, opts)?;
                            (s, t)
                        }
                        None => crate::prefix::server_prefix(self.graph, self.weights, &ids, opts)?,
                    };
                    self.party.state = state;
                    let ch = self.party.b.channel();
                    ch.send_msg(&seconds).map_err(transport)?;
                    ch.flush().map_err(transport)?;
                    continue;
                }
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
            let peer = self.party.b.channel().peer().to_string();
            run_request(
                &mut self.party.b,
                self.graph,
                Some(self.weights),
                Tokens::Count(n),
                keep.then_some(&mut self.party.state),
                &reveal,
                progress,
            )
            .map_err(|e| naming_peer(e, &peer))?;
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
    base: Option<&'a dyn WeightSource>,
}

impl<'a, C: Channel> Client<'a, C> {
    /// Connects on `ch`: derives the options for `config` (planned for runs of `plan_tokens`
    /// tokens), sends the [`Hello`], and on acceptance sets the session up.
    pub fn connect(
        ch: C,
        graph: &'a Graph,
        config: &RunConfig,
        plan_tokens: usize,
    ) -> Result<Self> {
        Self::open(ch, graph, config, plan_tokens, None, None)
    }

    /// [`Client::connect`] with every random choice of the client's side of the session drawn
    /// from `seed` instead of the operating system: a reproducible run, for tests that hold
    /// one party's randomness fixed (the leakage test). Never use a fixed seed in a real
    /// session: its HE keys and masks would repeat.
    pub fn connect_seeded(
        ch: C,
        graph: &'a Graph,
        config: &RunConfig,
        plan_tokens: usize,
        seed: [u8; 32],
    ) -> Result<Self> {
        Self::open(ch, graph, config, plan_tokens, None, Some(seed))
    }

    /// [`Client::connect`] in LoRA mode ([`SecureOptions::public_base`]): the client holds
    /// the public base model `base` and multiplies its shares by the base's linear layers
    /// locally. The hello carries the base's [`crate::lora::public_digest`]; the server
    /// refuses a base that differs from its own. Refused before anything is sent when the
    /// options are not in LoRA mode.
    pub fn connect_with_base(
        ch: C,
        graph: &'a Graph,
        config: &RunConfig,
        plan_tokens: usize,
        base: &'a dyn WeightSource,
    ) -> Result<Self> {
        Self::open(ch, graph, config, plan_tokens, Some(base), None)
    }

    fn open(
        mut ch: C,
        graph: &'a Graph,
        config: &RunConfig,
        plan_tokens: usize,
        base: Option<&'a dyn WeightSource>,
        seed: Option<[u8; 32]>,
    ) -> Result<Self> {
        let mut config = config.clone();
        let (mut options, _) = config.options(graph, plan_tokens.max(1))?;
        let base_digest = match (base, &options.public_base) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ModelError::Input(
                    "LoRA mode: the client needs the public base model \
                     (Client::connect_with_base)"
                        .into(),
                ))
            }
            // with the layout, or without it (the server then announces it)
            (Some(b), _) => Some(crate::lora::public_digest(graph, b)?),
        };
        let mut hello = Hello {
            version: OPTIONS_VERSION,
            model: graph.config.clone(),
            config: config.clone(),
            plan_tokens: plan_tokens.max(1),
            options: options.clone(),
            base_digest,
        };
        let mut announced = false;
        loop {
            ch.send_msg(&hello).map_err(transport)?;
            ch.flush().map_err(transport)?;
            match ch.recv_msg::<Answer>().map_err(transport)? {
                Answer::Accepted => break,
                Answer::Refused(why) => {
                    // tell the server its refusal was read, so it can close
                    let _ = ch.send_msg(&0u8);
                    let _ = ch.flush();
                    let why =
                        duet_transport::peer_text_max(why.as_bytes(), config::REFUSAL_MAX_CHARS);
                    return Err(ModelError::Input(format!("the server refused: {why}")));
                }
                Answer::Layout(l) => {
                    // the server's adapters' public layout, announced once, only to a client
                    // that holds the base and named no layout
                    if announced || base.is_none() || config.adapter.is_some() {
                        return Err(ModelError::Input(
                            "the server announced an adapter layout out of turn".into(),
                        ));
                    }
                    announced = true;
                    crate::lora::check_layout(&l, graph)?;
                    config.adapter = Some(l);
                    options = config.options(graph, plan_tokens.max(1))?.0;
                    hello.config = config.clone();
                    hello.options = options.clone();
                }
            }
        }
        let b = backend(ch, Role::Client, &options, seed)?;
        Ok(Self {
            party: Party {
                b,
                state: WalkState::new(),
                requests: 0,
                setup_reported: false,
                cached_reported: 0,
            },
            graph,
            config,
            base,
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

    /// Starts the session's state with a public prefix (ids both parties know: a system
    /// prompt, a shared document): the server runs it in the clear and keeps its keys and
    /// values; the private tokens that [`Client::extend`] sends next attend to them
    /// ([`crate::prefix`]). Returns the server's plaintext seconds for it (as it reports
    /// them). A decoder only; replaces any kept state.
    pub fn prefix(&mut self, ids: &[u32]) -> Result<f64> {
        crate::reference::check_ids(&self.graph.config, ids)?;
        let state = crate::prefix::public_prefix(self.graph, ids.len())?;
        if self.party.b.options().public_base.is_some() {
            return Err(ModelError::Input(
                "a public prefix in LoRA mode is not supported (run the adapters merged)".into(),
            ));
        }
        let ch = self.party.b.channel();
        ch.send_msg(&Request::Prefix { ids: ids.to_vec() })
            .map_err(transport)?;
        ch.flush().map_err(transport)?;
        let peer = ch.peer().to_string();
        let seconds: f64 = ch
            .recv_msg()
            .map_err(transport)
            .map_err(|e| naming_peer(e, &peer))?;
        if !seconds.is_finite() || seconds < 0.0 {
            return Err(naming_peer(
                ModelError::Input(format!("the server reported {seconds} s for the prefix")),
                &peer,
            ));
        }
        self.party.state = state;
        Ok(seconds)
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
        let peer = self.party.b.channel().peer().to_string();
        let out = run_request(
            &mut self.party.b,
            self.graph,
            self.base,
            Tokens::Ids(ids),
            keep.then_some(&mut self.party.state),
            reveal,
            progress,
        )
        .map_err(|e| naming_peer(e, &peer))?;
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
