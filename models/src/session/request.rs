//! One request of a session on any backend ([`run_request`]): the walk, then the reveal of
//! the declared output; and what a request reports.

use super::proto;
use crate::graph::Graph;
use crate::reference::{Matrix, WeightSource};
use crate::walk::{walk, Progress, WalkOutput, WalkState};
use crate::{ModelError, Result};
use duet_protocols::nonlinear::token_choice::TokenChoice;
use duet_protocols::{Backend, NodeRecord, OpKind, ProtocolError, Tokens};
use serde::{Deserialize, Serialize};

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
pub(super) fn check_reveal(graph: &Graph, reveal: &Reveal) -> Result<()> {
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
