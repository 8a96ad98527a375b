//! The JSON report every `duet ... --json` prints (the schema in ARCHITECTURE.md; fields are
//! only added).

use serde::{Deserialize, Serialize};

/// Traffic of a run. `total` is online traffic in both directions; `setup` is one-time session
/// traffic (keys, base OTs); `cached` is traffic reusable across sessions.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bytes {
    /// Client to server, online.
    pub client_to_server: u64,
    /// Server to client, online.
    pub server_to_client: u64,
    /// Both directions, online.
    pub total: u64,
    /// One-time session traffic.
    pub setup: u64,
    /// Traffic reusable across sessions.
    pub cached: u64,
}

/// Peak resident memory of each party.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeakRss {
    /// Server.
    pub server: u64,
    /// Client.
    pub client: u64,
}

/// Accuracy against the plaintext reference.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Accuracy {
    /// Largest absolute error of any output value.
    pub max_abs_err: f64,
    /// Cosine similarity of the output with the reference.
    pub cosine_vs_reference: f64,
}

/// One operator's row.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct OpReport {
    /// Node name, e.g. `layer0.ffn.gelu`.
    pub name: String,
    /// Operator kind, e.g. `gelu`.
    pub kind: String,
    /// `he` or `mpc` (or `local`).
    pub backend: String,
    /// Online bytes, both directions.
    pub bytes: u64,
    /// Flights, both parties.
    pub rounds: u64,
    /// Wall time.
    pub wall_s: f64,
    /// The cost model's bytes.
    pub predicted_bytes: u64,
    /// The cost model's seconds.
    pub predicted_s: f64,
}

/// A run's report.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Model or payload name.
    pub model: String,
    /// Tokens.
    pub seq_len: usize,
    /// Protocol preset.
    pub protocol: String,
    /// Network profile or link.
    pub network: String,
    /// Wall time of the whole run.
    pub wall_s: f64,
    /// Offline (input-independent) phase.
    pub offline_s: f64,
    /// Online phase.
    pub online_s: f64,
    /// Traffic.
    pub bytes: Bytes,
    /// Flights of messages, both parties.
    pub rounds: u64,
    /// Peak RSS.
    pub peak_rss_bytes: PeakRss,
    /// Accuracy.
    pub accuracy: Accuracy,
    /// Per-operator rows.
    pub ops: Vec<OpReport>,
}

impl Report {
    /// A plain-text table for terminals.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "model {}  protocol {}  network {}  seq_len {}\n",
            self.model, self.protocol, self.network, self.seq_len
        ));
        s.push_str(&format!(
            "wall {:.3} s (offline {:.3} s, online {:.3} s)   rounds {}\n",
            self.wall_s, self.offline_s, self.online_s, self.rounds
        ));
        s.push_str(&format!(
            "bytes: client->server {}  server->client {}  total {}  setup {}  cached {}\n",
            human_bytes(self.bytes.client_to_server),
            human_bytes(self.bytes.server_to_client),
            human_bytes(self.bytes.total),
            human_bytes(self.bytes.setup),
            human_bytes(self.bytes.cached)
        ));
        s.push_str(&format!(
            "peak RSS: server {}  client {}\n",
            human_bytes(self.peak_rss_bytes.server),
            human_bytes(self.peak_rss_bytes.client)
        ));
        s.push_str(&format!(
            "accuracy: max |err| {:.3e}  cosine {:.6}\n",
            self.accuracy.max_abs_err, self.accuracy.cosine_vs_reference
        ));
        if !self.ops.is_empty() {
            s.push_str(&format!(
                "{:<28} {:<10} {:<7} {:>12} {:>7} {:>10}\n",
                "op", "kind", "backend", "bytes", "rounds", "wall s"
            ));
            for op in &self.ops {
                s.push_str(&format!(
                    "{:<28} {:<10} {:<7} {:>12} {:>7} {:>10.4}\n",
                    op.name, op.kind, op.backend, op.bytes, op.rounds, op.wall_s
                ));
            }
        }
        s
    }
}

/// Max absolute error and cosine similarity; a length mismatch counts as total failure.
pub fn accuracy(out: &[f64], reference: &[f64]) -> Accuracy {
    if out.len() != reference.len() {
        return Accuracy {
            max_abs_err: f64::INFINITY,
            cosine_vs_reference: 0.0,
        };
    }
    let max_abs_err = out
        .iter()
        .zip(reference)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let dot: f64 = out.iter().zip(reference).map(|(a, b)| a * b).sum();
    let na: f64 = out.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nb: f64 = reference.iter().map(|a| a * a).sum::<f64>().sqrt();
    let cosine_vs_reference = if na == 0.0 || nb == 0.0 {
        if na == nb {
            1.0
        } else {
            0.0
        }
    } else {
        dot / (na * nb)
    };
    Accuracy {
        max_abs_err,
        cosine_vs_reference,
    }
}

/// 1536 -> "1.50 KiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    match UNITS.get(u) {
        Some(unit) if u > 0 => format!("{v:.2} {unit}"),
        _ => format!("{b} B"),
    }
}

/// Peak resident set size of this process (Linux `VmHWM`), 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_field_names_are_stable() {
        let v = serde_json::to_value(Report::default()).unwrap();
        for k in [
            "model",
            "seq_len",
            "protocol",
            "network",
            "wall_s",
            "offline_s",
            "online_s",
            "bytes",
            "rounds",
            "peak_rss_bytes",
            "accuracy",
            "ops",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in [
            "client_to_server",
            "server_to_client",
            "total",
            "setup",
            "cached",
        ] {
            assert!(v["bytes"].get(k).is_some(), "missing bytes.{k}");
        }
        assert!(v["accuracy"].get("max_abs_err").is_some());
        assert!(v["peak_rss_bytes"].get("client").is_some());
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.50 KiB");
        assert_eq!(human_bytes(3 << 30), "3.00 GiB");
    }
}
