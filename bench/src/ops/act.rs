//! `duet bench op {gelu|silu|tanh} --shape DIMS --protocol P`: one activation of
//! duet-protocols on random inputs, both parties in this process on two threads over the
//! in-memory channel.
//!
//! Inputs are uniform on `[-8, 8]`, fixed point in `Z_2^37` with 12 fractional bits (declared
//! range `|x| < 2^7`), shared uniformly at random. `--protocol` picks the approximation:
//! `duet` (default), `bumblebee`, `puma`, `bolt`, `iron` for GELU (only `duet` for SiLU and
//! tanh), optionally followed by `:iknp` for IKNP COTs instead of Ferret silent OT.
//!
//! Report: `bytes.total` is the online traffic of the operator (both directions) and
//! `ops[0].predicted_bytes` its exact cost formula; the correlated OTs it consumes are made
//! first (Ferret iterations, input-independent: offline), reported as `offline_s` and the
//! `offline` row of `ops`; `bytes.setup` is the session setup (base OTs, Ferret bootstrap);
//! `accuracy.max_abs_err` is the largest error against the exact function in `f64` (erf GELU,
//! `x σ(x)`, `tanh`).

use crate::report::{Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;
use duet_mpc::nonlinear::{self as nl, Cost, NlConfig, NlSession};
use duet_mpc::{AShare, Prg, Ring};
use duet_protocols::nonlinear::activation::{self as act, ActFormat, GeluApprox};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};
use std::time::Instant;

/// Which activation and approximation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Gelu(GeluApprox),
    Silu,
    Tanh,
}

fn parse(kind: &str, protocol: &str) -> Result<(Kind, NlConfig), DuetError> {
    let mut parts = protocol.split(':');
    let name = parts.next().unwrap_or("duet");
    let name = if name.is_empty() { "duet" } else { name };
    let mut cfg = NlConfig::default();
    for p in parts {
        match p {
            "iknp" | "cot=iknp" => cfg = NlConfig::iknp(),
            "ferret" | "cot=ferret" => cfg = NlConfig::default(),
            other => {
                return Err(DuetError::Usage(format!(
                    "unknown protocol option {other:?}: expected iknp or ferret"
                )))
            }
        }
    }
    let k = match kind {
        "gelu" => Kind::Gelu(GeluApprox::from_name(name).ok_or_else(|| {
            DuetError::Usage(format!(
                "unknown GELU protocol {name:?}: expected duet, bumblebee, puma, bolt or iron"
            ))
        })?),
        "silu" | "tanh" if name == "duet" => {
            if kind == "silu" {
                Kind::Silu
            } else {
                Kind::Tanh
            }
        }
        "silu" | "tanh" => {
            return Err(DuetError::Usage(format!(
                "{kind} has only the duet approximation, not {name:?}"
            )))
        }
        other => {
            return Err(DuetError::Usage(format!(
                "unknown activation {other:?}: expected gelu, silu or tanh"
            )))
        }
    };
    Ok((k, cfg))
}

fn parse_n(shape: &str) -> Result<usize, DuetError> {
    let n = shape
        .split('x')
        .map(|d| d.trim().parse::<usize>())
        .try_fold(1usize, |acc, d| d.ok().and_then(|d| acc.checked_mul(d)))
        .ok_or_else(|| DuetError::Usage(format!("bad shape {shape:?}: expected N or AxB")))?;
    if n == 0 {
        return Err(DuetError::Usage("empty shape".into()));
    }
    Ok(n)
}

fn cost(k: Kind, n: usize, fmt: ActFormat, cfg: NlConfig) -> Result<Cost, DuetError> {
    Ok(match k {
        Kind::Gelu(a) => act::gelu_cost(n, fmt, a, cfg)?,
        Kind::Silu => act::silu_cost(n, fmt, act::SiluApprox::Duet, cfg)?,
        Kind::Tanh => act::tanh_cost(n, fmt, act::TanhApprox::Duet, cfg)?,
    })
}

fn exact(k: Kind, x: f64) -> f64 {
    match k {
        Kind::Gelu(_) => act::gelu_exact(x),
        Kind::Silu => act::silu_exact(x),
        Kind::Tanh => x.tanh(),
    }
}

/// One party's output share, setup / offline / online traffic, offline and online seconds.
type PartyOut = (AShare, ChannelStats, ChannelStats, ChannelStats, f64, f64);

fn party(
    role: Role,
    cfg: NlConfig,
    need: nl::CotCount,
    k: Kind,
    fmt: ActFormat,
    mut ch: MemoryChannel,
    x: &AShare,
) -> Result<PartyOut, DuetError> {
    let mut rng = Prg::from_entropy();
    let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg)?;
    let setup = ch.stats();
    let t_off = Instant::now();
    s.reserve(&mut ch, need)?;
    // barrier so that both parties start the online clock together
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    let offline = ch.stats() - setup;
    let offline_s = t_off.elapsed().as_secs_f64();
    let before = ch.stats();
    let t = Instant::now();
    let y = match k {
        Kind::Gelu(a) => act::gelu(&mut s, &mut ch, x, fmt, a)?,
        Kind::Silu => act::silu(&mut s, &mut ch, x, fmt, act::SiluApprox::Duet)?,
        Kind::Tanh => act::tanh(&mut s, &mut ch, x, fmt, act::TanhApprox::Duet)?,
    };
    let secs = t.elapsed().as_secs_f64();
    Ok((y, setup, offline, ch.stats() - before, offline_s, secs))
}

/// Runs `kind` (`gelu`, `silu`, `tanh`) on `shape` with `protocol` (see the module docs).
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    let (k, cfg) = parse(kind, protocol)?;
    let n = parse_n(shape)?;
    let fmt = ActFormat::new(Ring::new(37)?, 12, 7)?;
    let fp = fmt.fixed()?;
    let predicted = cost(k, n, fmt, cfg)?;
    let mut prg = Prg::from_entropy();
    let xs: Vec<f64> = prg
        .ring_elements(Ring::z64(), n)
        .into_iter()
        .map(|r| (r >> 11) as f64 / (1u64 << 53) as f64 * 16.0 - 8.0)
        .collect();
    let shape_v: Vec<usize> = shape
        .split('x')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    let (x0, x1) = AShare::share(fmt.ring, shape_v, &fp.encode_all(&xs), &mut prg)?;
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |ch| party(Role::Server, cfg, predicted.cots, k, fmt, ch, &x0),
        |ch| party(Role::Client, cfg, predicted.cots, k, fmt, ch, &x1),
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let ((ys, setup_s, off_s, on_s, toff_s, ts), (yc, setup_c, off_c, on_c, toff_c, tc)) =
        (rs?, rc?);
    let got = fp.decode_all(&ys.reconstruct(&yc)?);
    let (mut max_abs_err, mut dot, mut na, mut nb) = (0.0f64, 0.0, 0.0, 0.0);
    for (&x, &g) in xs.iter().zip(&got) {
        let w = exact(k, x);
        max_abs_err = max_abs_err.max((g - w).abs());
        dot += g * w;
        na += g * g;
        nb += w * w;
    }
    let total = on_s.bytes_sent + on_c.bytes_sent;
    let rounds = on_s.rounds + on_c.rounds;
    let online_s = ts.max(tc);
    let offline_s = toff_s.max(toff_c);
    let name = match k {
        Kind::Gelu(a) => format!("gelu.{}[{n}]", a.name()),
        Kind::Silu => format!("silu.duet[{n}]"),
        Kind::Tanh => format!("tanh.duet[{n}]"),
    };
    Ok(Report {
        model: format!("op:{kind}"),
        seq_len: n,
        protocol: protocol.to_string(),
        network: "memory".into(),
        wall_s,
        offline_s,
        online_s,
        bytes: Bytes {
            client_to_server: on_c.bytes_sent,
            server_to_client: on_s.bytes_sent,
            total,
            setup: setup_s.bytes_sent + setup_c.bytes_sent,
            cached: 0,
        },
        rounds,
        peak_rss_bytes: PeakRss {
            server: crate::report::peak_rss_bytes(),
            client: crate::report::peak_rss_bytes(),
        },
        accuracy: Accuracy {
            max_abs_err,
            cosine_vs_reference: if na > 0.0 && nb > 0.0 {
                dot / (na.sqrt() * nb.sqrt())
            } else {
                1.0
            },
        },
        ops: vec![
            OpReport {
                name,
                kind: kind.to_string(),
                backend: "mpc".into(),
                bytes: total,
                rounds,
                wall_s: online_s,
                predicted_bytes: predicted.bytes,
                predicted_s: 0.0,
            },
            crate::ops::mpc::offline_row(predicted.cots, cfg, &off_s, &off_c, offline_s),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_arm_runs_at_its_predicted_cost() {
        for (kind, proto) in [
            ("gelu", "duet"),
            ("gelu", "bumblebee:iknp"),
            ("gelu", "puma:iknp"),
            ("gelu", "bolt:iknp"),
            ("gelu", "iron:iknp"),
            ("silu", "duet:iknp"),
            ("tanh", "duet:iknp"),
        ] {
            let r = run(kind, "20x25", proto).unwrap();
            assert_eq!(r.bytes.total, r.ops[0].predicted_bytes, "{kind} {proto}");
            let bound = match GeluApprox::from_name(proto.split(':').next().unwrap()) {
                Some(a) if kind == "gelu" => a.error_bound(),
                _ => 1.5e-2,
            };
            assert!(r.accuracy.max_abs_err <= bound, "{kind} {proto}");
        }
        assert!(run("gelu", "10", "nope").is_err());
        assert!(run("silu", "10", "puma").is_err());
        assert!(run("gelu", "0", "duet").is_err());
        assert!(run("gelu", "10", "duet:magic").is_err());
        assert!(run("relu6", "10", "duet").is_err());
    }
}
