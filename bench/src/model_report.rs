//! The report of whole-model runs (`duet infer`, `connect`, `demo`, `bench model`,
//! `generate`): the common schema ([`crate::report::Report`]) plus per-kind totals, the run's
//! typed options and plan, and the outputs. `duet bench table` reads it back.

use crate::product::inputs::Reference;
use crate::report::{
    accuracy, human_bytes, peak_rss_bytes, Accuracy, Bytes, OpReport, PeakRss, Report,
};
use duet_models::secure::{OpRecord, SecureOptions, SecureOutput, SecureReport};
use duet_transport::Role;
use serde::{Deserialize, Serialize};

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

/// One output of `duet infer` / `duet connect`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Output {
    /// The line of text (absent for `--seq-len`).
    pub text: Option<String>,
    /// Its token ids.
    pub input_ids: Vec<u32>,
    /// Sentence embedding of the last hidden state: mean over tokens, then L2 normalised
    /// (encoders; a decoder's hidden state is never revealed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
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

/// The accuracy of what a request revealed (its hidden state, else its logits) against the
/// reference's same output; `None` when nothing comparable was revealed.
pub fn output_accuracy(got: &SecureOutput, want: &Reference) -> Option<Accuracy> {
    match (&got.hidden, &got.logits, &want.logits) {
        (Some(h), _, _) => Some(accuracy(&h.data, &want.hidden.data)),
        (None, Some(l), Some(r)) => Some(accuracy(l, r)),
        _ => None,
    }
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

/// The report of whole-model runs: the ARCHITECTURE.md schema plus per-kind totals and outputs.
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
    /// The planner's choices, for reading (target, then the chosen variant).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<String>,
    /// Where the options came from: `fixed`, `planned for NET` or `given`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plan_name: String,
    /// The options the run used (typed; what `duet bench table` re-predicts with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<SecureOptions>,
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
            plan_name: String::new(),
            options: None,
            profile: String::new(),
            outputs: Vec::new(),
            machine_check: None,
        }
    }

    /// Sets the accuracy from what each request revealed against the reference: the worst
    /// of each figure over the requests (hidden states for encoders, logits for decoders).
    pub fn set_accuracy(&mut self, pairs: &[(&SecureOutput, &Reference)]) {
        let mut acc = Accuracy {
            max_abs_err: 0.0,
            cosine_vs_reference: 1.0,
        };
        let mut any = false;
        for (got, want) in pairs {
            if let Some(a) = output_accuracy(got, want) {
                acc.max_abs_err = acc.max_abs_err.max(a.max_abs_err);
                acc.cosine_vs_reference = acc.cosine_vs_reference.min(a.cosine_vs_reference);
                any = true;
            }
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
