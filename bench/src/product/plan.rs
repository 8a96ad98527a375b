//! `duet plan`: the planner's per-operator choices for a model on a network, with the
//! predicted bytes, flights, compute and latency per operator kind, beside the fixed presets'
//! predictions.

use crate::DuetError;
use duet_models::open::{ModelSpec, PublicModel};
use duet_models::planner::{plan, total_bytes, total_latency, AccuracyBudget, Decision};
use duet_models::secure::predict::{predict, Prediction};
use duet_models::session::RunConfig;
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::Preset;
use duet_transport::relay::NetProfile;
use serde::Serialize;
use std::path::Path;

/// One operator kind's predicted totals.
#[derive(Clone, Debug, Serialize)]
pub struct KindPrediction {
    /// Operator kind.
    pub kind: String,
    /// Payload bytes, both directions.
    pub bytes: u64,
    /// One-way flights.
    pub flights: u64,
    /// Compute seconds.
    pub compute_s: f64,
    /// Latency on the network (compute + bytes / rate + flights x rtt / 2).
    pub latency_s: f64,
}

/// A whole run's predicted totals.
#[derive(Clone, Debug, Serialize)]
pub struct RunPrediction {
    /// `duet (planned)` or a preset's name.
    pub protocol: String,
    /// Online bytes (setup apart).
    pub online_bytes: u64,
    /// Setup bytes.
    pub setup_bytes: u64,
    /// Predicted latency, setup included.
    pub latency_s: f64,
    /// Per kind.
    pub kinds: Vec<KindPrediction>,
}

/// What `duet plan --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    /// Model name.
    pub model: String,
    /// Tokens.
    pub seq_len: usize,
    /// Network profile.
    pub network: String,
    /// Its rate (bit/s, absent when unlimited) and RTT (s).
    pub rate_bits_per_s: Option<u64>,
    /// RTT in seconds.
    pub rtt_s: f64,
    /// The machine profile used.
    pub machine: String,
    /// The accuracy budget.
    pub budget: AccuracyBudget,
    /// The planner's decisions.
    pub decisions: Vec<Decision>,
    /// The planned run, then each preset's fixed choices.
    pub runs: Vec<RunPrediction>,
}

/// Per-kind totals of a prediction on `net`.
pub fn summarize(protocol: &str, p: &Prediction, net: &NetProfile) -> RunPrediction {
    let kinds = p
        .kinds
        .iter()
        .map(|(kind, e)| KindPrediction {
            kind: kind.name().into(),
            bytes: e.bytes,
            flights: e.flights,
            compute_s: e.compute_s,
            latency_s: e.latency(net),
        })
        .collect();
    RunPrediction {
        protocol: protocol.into(),
        online_bytes: total_bytes(p),
        setup_bytes: p.setup.bytes,
        latency_s: total_latency(p, net),
        kinds,
    }
}

/// The machine profile: `path`, or the shipped default.
pub fn load_profile(path: Option<&Path>) -> Result<MachineProfile, DuetError> {
    Ok(match path {
        Some(p) => MachineProfile::load(p)?,
        None => MachineProfile::default_profile()?,
    })
}

/// `duet plan`.
pub fn run_plan(
    model: &ModelSpec,
    seq_len: usize,
    net: &str,
    profile: Option<&Path>,
) -> Result<PlanReport, DuetError> {
    let client = PublicModel::open(model, false)?;
    let graph = &client.graph;
    if seq_len == 0 || seq_len > graph.config.max_positions {
        return Err(DuetError::Usage(format!(
            "--seq-len {seq_len}: the model takes 1..={} tokens",
            graph.config.max_positions
        )));
    }
    let net_p =
        NetProfile::by_name(net).map_err(|e| DuetError::Usage(format!("--net {net}: {e}")))?;
    let machine = load_profile(profile)?;
    let budget = AccuracyBudget::default();
    // the options every run of this model starts from (the family's declared ranges, a
    // decoder's embedding and cache modes), as `bench model` and `generate` plan them
    let base = RunConfig::fixed("duet").base_options(graph)?;
    let planned = plan(graph, seq_len, &base, &net_p, &machine, &budget)?;
    let mut runs = vec![summarize("duet (planned)", &planned.prediction, &net_p)];
    for p in Preset::ALL {
        let opts = RunConfig::fixed(p.name()).base_options(graph)?;
        let pred = predict(graph, seq_len, &opts, &machine)?;
        runs.push(summarize(p.name(), &pred, &net_p));
    }
    Ok(PlanReport {
        model: client.name,
        seq_len,
        network: net_p.name.clone(),
        rate_bits_per_s: net_p.rate_bits_per_s,
        rtt_s: net_p.rtt.as_secs_f64(),
        machine: format!("{} ({})", machine.machine, machine.measured),
        budget,
        decisions: planned.decisions,
        runs,
    })
}

fn mb(b: u64) -> String {
    format!("{:.1}", b as f64 / 1e6)
}

impl PlanReport {
    /// The human-readable form.
    pub fn text(&self) -> String {
        let mut s = format!(
            "plan for {} at {} tokens on {} ({}, {:.1} ms RTT); machine {}\n\n",
            self.model,
            self.seq_len,
            self.network,
            self.rate_bits_per_s
                .map_or("unlimited rate".into(), |r| format!(
                    "{:.0} Mbit/s",
                    r as f64 / 1e6
                )),
            self.rtt_s * 1e3,
            self.machine
        );
        s += "choices (predicted latency on this network, bytes):\n";
        // decisions with the same candidates and choice (layers of one shape) print once
        let mut groups: Vec<(&Decision, usize)> = Vec::new();
        for d in &self.decisions {
            match groups
                .iter_mut()
                .find(|(g, _)| g.chosen == d.chosen && g.candidates == d.candidates)
            {
                Some((_, n)) => *n += 1,
                None => groups.push((d, 1)),
            }
        }
        for (d, n) in groups {
            let target = if n > 1 {
                format!("{} (and {} alike)", d.target, n - 1)
            } else {
                d.target.clone()
            };
            s += &format!("  {target:<34} -> {}\n", d.chosen);
            for (label, lat, bytes) in &d.candidates {
                let mark = if *label == d.chosen { "*" } else { " " };
                s += &format!(
                    "     {mark} {label:<44} {lat:>9.3} s {:>10} MB\n",
                    mb(*bytes)
                );
            }
        }
        s += "\npredicted totals:\n";
        s += &format!(
            "  {:<16} {:>12} {:>10} {:>12}\n",
            "protocol", "online MB", "setup MB", "latency s"
        );
        for r in &self.runs {
            s += &format!(
                "  {:<16} {:>12} {:>10} {:>12.1}\n",
                r.protocol,
                mb(r.online_bytes),
                mb(r.setup_bytes),
                r.latency_s
            );
        }
        if let Some(r) = self.runs.first() {
            s += &format!("\nper kind ({}):\n", r.protocol);
            s += &format!(
                "  {:<18} {:>10} {:>8} {:>10} {:>10}\n",
                "kind", "MB", "flights", "compute s", "latency s"
            );
            for k in &r.kinds {
                s += &format!(
                    "  {:<18} {:>10} {:>8} {:>10.2} {:>10.2}\n",
                    k.kind,
                    mb(k.bytes),
                    k.flights,
                    k.compute_s,
                    k.latency_s
                );
            }
        }
        s
    }
}
