//! `duet bench op {compare|mul|trunc|relu|ot} --shape N`: one non-linear MPC protocol of
//! duet-mpc on `N` random elements, both parties in this process on two threads over the
//! in-memory channel.
//!
//! Values live in `Z_2^37` with 12 fractional bits (the CrypTFlow2 / Cheetah benchmark width).
//! * `compare`: `1{x < y}` as `MSB(x - y)` (the DReLU / millionaire cost of CrypTFlow2).
//! * `mul`: element-wise product of two shared tensors (Gilboa, COT over the ring).
//! * `trunc`: faithful truncation by 12 bits.
//! * `relu`: DReLU + mux.
//! * `ot`: `N` correlated OTs from the Ferret pool (silent OT; `--protocol iknp` for IKNP), each
//!   checked (`t = q xor b Delta`); setup (base OTs, Ferret bootstrap) is reported apart.
//!
//! The report's `bytes.total` is the online traffic of both directions, `bytes.setup` the base
//! OT and KK13 setup, `accuracy.max_abs_err` the largest error against plaintext (0 for exact
//! protocols), `ops[0].predicted_bytes` the protocol's exact cost formula.

use crate::report::{Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;
use duet_mpc::nonlinear::{self as nl, NlConfig, NlSession, TruncMode};
use duet_mpc::ot::{CotReceiver, CotSender};
use duet_mpc::{AShare, Prg, Ring};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};
use std::time::Instant;

/// Fixed-point fractional bits of the benchmark.
pub const FRAC: u32 = 12;
/// Ring width of the benchmark.
pub const BITS: u32 = 37;

/// What one party returns: its output share (ring values, or bits as 0/1), setup, offline and
/// online traffic, offline and online seconds.
type PartyOut = (Vec<u64>, ChannelStats, ChannelStats, ChannelStats, f64, f64);

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

/// The configuration named by `protocol`: `duet` (the default: Ferret silent COTs, random-OT
/// leaves, radix 4, server as OT sender) or `iknp` (CrypTFlow2's: IKNP COTs, KK13 leaves), with
/// optional `:`-separated overrides `radix=M`, `sender=client|server`, `leaf=kk13|rot` and
/// `cot=ferret|iknp`, e.g. `duet:radix=3:leaf=kk13`.
pub fn config(protocol: &str) -> Result<NlConfig, DuetError> {
    let mut parts = protocol.split(':');
    let mut cfg = match parts.next() {
        Some("duet") | Some("") | None => NlConfig::default(),
        Some("iknp") | Some("cryptflow2") => NlConfig::iknp(),
        Some(other) => {
            return Err(DuetError::Usage(format!(
                "unknown protocol {other:?}: expected duet or iknp"
            )))
        }
    };
    for part in parts {
        match part.split_once('=') {
            Some(("radix", v)) => {
                cfg.radix = v
                    .parse()
                    .map_err(|_| DuetError::Usage(format!("bad radix {v:?}")))?
            }
            Some(("sender", "client")) => cfg.ot_sender = Role::Client,
            Some(("sender", "server")) => cfg.ot_sender = Role::Server,
            Some(("leaf", "kk13")) => cfg.leaf_ot = nl::LeafOt::Kk13,
            Some(("leaf", "rot")) => cfg.leaf_ot = nl::LeafOt::Rot,
            Some(("cot", "iknp")) => cfg.cot = nl::CotBackend::Iknp,
            Some(("cot", "ferret")) => cfg.cot = nl::CotBackend::default(),
            _ => {
                return Err(DuetError::Usage(format!(
                    "unknown protocol option {part:?}"
                )))
            }
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

fn party(
    role: Role,
    cfg: NlConfig,
    need: nl::CotCount,
    mut ch: MemoryChannel,
    kind: &str,
    x: &(AShare, AShare),
    y: &(AShare, AShare),
) -> Result<PartyOut, DuetError> {
    let mut rng = Prg::from_entropy();
    let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg)?;
    let setup = ch.stats();
    // offline: the COTs the operator will consume (Ferret iterations; nothing with IKNP)
    let t_off = Instant::now();
    s.reserve(&mut ch, need)?;
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    let offline = ch.stats() - setup;
    let offline_s = t_off.elapsed().as_secs_f64();
    let pick = |p: &(AShare, AShare)| match role {
        Role::Server => p.0.clone(),
        Role::Client => p.1.clone(),
    };
    let (xs, ys) = (pick(x), pick(y));
    // barrier so that both parties start the clock together
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    let before = ch.stats();
    let t = Instant::now();
    let out: Vec<u64> = match kind {
        "compare" => nl::lt_bounded(&mut s, &mut ch, &xs, &ys)?
            .to_bits()
            .into_iter()
            .map(u64::from)
            .collect(),
        "mul" => nl::mul(&mut s, &mut ch, &xs, &ys)?.into_data(),
        "trunc" => nl::trunc(&mut s, &mut ch, &xs, FRAC, TruncMode::Faithful)?.into_data(),
        "relu" => nl::relu(&mut s, &mut ch, &xs)?.into_data(),
        other => {
            return Err(DuetError::Usage(format!(
                "unknown MPC operator {other:?}: expected compare, mul, trunc, relu or ot"
            )))
        }
    };
    let secs = t.elapsed().as_secs_f64();
    Ok((out, setup, offline, ch.stats() - before, offline_s, secs))
}

/// The `ops` row of an operator's offline phase: the Ferret iterations that made the `need`
/// COTs it consumes (nothing with IKNP), both parties' traffic `off_s` + `off_c`.
pub(crate) fn offline_row(
    need: nl::CotCount,
    cfg: NlConfig,
    off_s: &ChannelStats,
    off_c: &ChannelStats,
    secs: f64,
) -> OpReport {
    OpReport {
        name: format!("offline.cots[{}+{}]", need.server_sends, need.client_sends),
        kind: "offline".into(),
        backend: match cfg.cot {
            nl::CotBackend::Iknp => "iknp".into(),
            nl::CotBackend::Ferret(_) => "ferret".into(),
        },
        bytes: off_s.bytes_sent + off_c.bytes_sent,
        rounds: off_s.rounds + off_c.rounds,
        wall_s: secs,
        predicted_bytes: 0,
        predicted_s: 0.0,
    }
}

/// Runs operator `kind` on `shape` (`N` or `AxB`, the element count) with protocol preset
/// `protocol` (see [`config`]). The COTs the operator consumes are reserved first (offline,
/// reported as `offline_s` and an `offline` row in `ops`); `bytes.total` is the online part.
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    let n = parse_n(shape)?;
    if kind == "ot" {
        return run_cot(n, protocol);
    }
    let ring = Ring::new(BITS)?;
    let cfg = config(protocol)?;
    let predicted = match kind {
        "compare" => nl::lt_bounded_cost(n, ring, cfg),
        "mul" => nl::mul_cost(n, ring, cfg),
        "trunc" => nl::trunc_cost(n, ring, FRAC, TruncMode::Faithful, cfg),
        "relu" => nl::relu_cost(n, ring, cfg),
        other => {
            return Err(DuetError::Usage(format!(
                "unknown MPC operator {other:?}: expected compare, mul, trunc, relu or ot"
            )))
        }
    };
    let mut prg = Prg::from_entropy();
    // Inputs: signed values of magnitude below 2^(BITS-3) so that x - y never overflows.
    let bound = 1u64 << (BITS - 3);
    let gen = |prg: &mut Prg| -> Vec<u64> {
        prg.ring_elements(Ring::z64(), n)
            .into_iter()
            .map(|r| ring.from_i64((r % (2 * bound)) as i64 - bound as i64))
            .collect()
    };
    let xv = gen(&mut prg);
    let yv = gen(&mut prg);
    let x = AShare::share(ring, vec![n], &xv, &mut prg)?;
    let y = AShare::share(ring, vec![n], &yv, &mut prg)?;
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |ch| party(Role::Server, cfg, predicted.cots, ch, kind, &x, &y),
        |ch| party(Role::Client, cfg, predicted.cots, ch, kind, &x, &y),
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let ((os, setup_s, off_s, st_s, toff_s, ts), (oc, setup_c, off_c, st_c, toff_c, tc)) =
        (rs?, rc?);
    let offline_secs = toff_s.max(toff_c);
    let err = |a: u64, b: u64| (a as f64 - b as f64).abs();
    let max_abs_err = match kind {
        "compare" => os
            .iter()
            .zip(&oc)
            .zip(xv.iter().zip(&yv))
            .map(|((&a, &b), (&xa, &yb))| {
                let want = u64::from(ring.to_i64(xa) < ring.to_i64(yb));
                err(a ^ b, want)
            })
            .fold(0.0, f64::max),
        _ => os
            .iter()
            .zip(&oc)
            .enumerate()
            .map(|(i, (&a, &b))| {
                let got = ring.to_i64(ring.add(a, b));
                let (xa, yb) = (
                    ring.to_i64(xv.get(i).copied().unwrap_or(0)),
                    ring.to_i64(yv.get(i).copied().unwrap_or(0)),
                );
                let want = match kind {
                    "mul" => ring.to_i64(ring.from_i64(xa.wrapping_mul(yb))),
                    "trunc" => xa >> FRAC,
                    _ => xa.max(0),
                };
                (got as f64 - want as f64).abs()
            })
            .fold(0.0, f64::max),
    };
    let total = st_s.bytes_sent + st_c.bytes_sent;
    let rounds = st_s.rounds + st_c.rounds;
    let online_s = ts.max(tc);
    Ok(Report {
        model: format!("op:{kind}"),
        seq_len: n,
        protocol: protocol.to_string(),
        network: "memory".into(),
        wall_s,
        offline_s: offline_secs,
        online_s,
        bytes: Bytes {
            client_to_server: st_c.bytes_sent,
            server_to_client: st_s.bytes_sent,
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
            cosine_vs_reference: 1.0,
        },
        ops: vec![
            OpReport {
                name: format!("{kind}[{n}]"),
                kind: kind.to_string(),
                backend: "mpc".into(),
                bytes: total,
                rounds,
                wall_s: online_s,
                predicted_bytes: predicted.bytes,
                predicted_s: 0.0,
            },
            offline_row(predicted.cots, cfg, &off_s, &off_c, offline_secs),
        ],
    })
}

/// One party's COT run: its outputs (`q` for the sender; `b`, `t` for the receiver), the
/// sender's `Delta`, setup traffic, online traffic, online seconds.
type CotOut = (
    Vec<u128>,
    Vec<bool>,
    u128,
    ChannelStats,
    ChannelStats,
    f64,
    u64,
);

fn cot_party(
    role: Role,
    silent: bool,
    n: usize,
    mut ch: MemoryChannel,
) -> Result<CotOut, DuetError> {
    use duet_mpc::ot::{FerretPair, FerretParams, OtPair};
    let mut rng = Prg::from_entropy();
    let mut pair = OtPair::setup(&mut ch, role, &mut rng)?;
    let mut ferret = if silent {
        Some(FerretPair::from_ot_pair(
            &mut ch,
            &mut pair,
            FerretParams::default(),
            &mut rng,
        )?)
    } else {
        None
    };
    let setup = ch.stats();
    // exact traffic of the request in the current pool state (both directions)
    let predicted = match ferret.as_mut() {
        Some(f) if role == Role::Server => f.sender().cot_cost(n).bytes(),
        Some(f) => f.receiver().cot_cost(n).bytes(),
        None if role == Role::Server => pair.sender().cot_cost(n).bytes(),
        None => pair.receiver().cot_cost(n).bytes(),
    };
    let t = Instant::now();
    let out = match (role, ferret.as_mut()) {
        (Role::Server, Some(f)) => {
            let q = f.sender().send_cot(&mut ch, n)?;
            (q, Vec::new(), f.sender().delta())
        }
        (Role::Server, None) => {
            let q = pair.sender().send_cot(&mut ch, n)?;
            (q, Vec::new(), pair.sender().delta())
        }
        (Role::Client, Some(f)) => {
            let (b, t) = f.receiver().recv_cot(&mut ch, n)?;
            (t, b, 0)
        }
        (Role::Client, None) => {
            let (b, t) = pair.receiver().recv_cot(&mut ch, n)?;
            (t, b, 0)
        }
    };
    ch.flush()?;
    let secs = t.elapsed().as_secs_f64();
    Ok((
        out.0,
        out.1,
        out.2,
        setup,
        ch.stats() - setup,
        secs,
        predicted,
    ))
}

/// `bench op ot`: `n` COTs with the server as sender, every output checked.
fn run_cot(n: usize, protocol: &str) -> Result<Report, DuetError> {
    let silent = !protocol.starts_with("iknp");
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |ch| cot_party(Role::Server, silent, n, ch),
        |ch| cot_party(Role::Client, silent, n, ch),
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let ((q, _, delta, setup_s, on_s, ts, predicted), (t, b, _, setup_c, on_c, tc, _)) = (rs?, rc?);
    // every correlation: t_i = q_i xor b_i * Delta
    let wrong = q
        .iter()
        .zip(&t)
        .zip(&b)
        .filter(|((&q, &t), &b)| t != q ^ if b { delta } else { 0 })
        .count()
        + n.abs_diff(q.len())
        + n.abs_diff(t.len());
    let total = on_s.bytes_sent + on_c.bytes_sent;
    let rounds = on_s.rounds + on_c.rounds;
    let online_s = ts.max(tc);
    let kind = if silent { "cot-ferret" } else { "cot-iknp" };
    Ok(Report {
        model: format!("op:ot ({kind})"),
        seq_len: n,
        protocol: protocol.to_string(),
        network: "memory".into(),
        wall_s,
        offline_s: 0.0,
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
            max_abs_err: wrong as f64,
            cosine_vs_reference: 1.0,
        },
        ops: vec![OpReport {
            name: format!("ot[{n}]"),
            kind: kind.into(),
            backend: "mpc".into(),
            bytes: total,
            rounds,
            wall_s: online_s,
            predicted_bytes: predicted,
            predicted_s: 0.0,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_runs_exactly_at_its_predicted_cost() {
        for kind in ["compare", "mul", "trunc", "relu", "ot"] {
            let r = run(kind, "1000", "duet").unwrap();
            assert_eq!(r.accuracy.max_abs_err, 0.0, "{kind}");
            assert_eq!(r.bytes.total, r.ops[0].predicted_bytes, "{kind}");
            assert!(r.bytes.setup > 0);
            if kind != "ot" {
                // Ferret: the COTs were made offline, in one main iteration or more
                assert!(r.ops[1].bytes > 0, "{kind}");
            }
        }
        assert!(run("gelu", "10", "duet").is_err());
        assert!(run("mul", "0", "duet").is_err());
        assert!(run("compare", "10", "duet:radix=9").is_err());
        for proto in [
            "duet:radix=2:sender=client:leaf=kk13",
            "iknp",
            "iknp:leaf=rot:sender=client",
        ] {
            let r = run("compare", "100", proto).unwrap();
            assert_eq!(r.accuracy.max_abs_err, 0.0, "{proto}");
            assert_eq!(r.bytes.total, r.ops[0].predicted_bytes, "{proto}");
        }
        assert!(run("compare", "10", "nope").is_err());
        assert!(run("compare", "10", "duet:cot=magic").is_err());
        // IKNP: 16 bytes per COT, every correlation checked
        let r = run("ot", "4096", "iknp").unwrap();
        assert_eq!(r.accuracy.max_abs_err, 0.0);
        assert_eq!(r.bytes.total, 16 * 4096);
        assert_eq!(r.bytes.total, r.ops[0].predicted_bytes);
    }
}

#[cfg(test)]
mod million {
    /// `cargo test -p duet-bench --release --lib ops_mpc::million -- --ignored --nocapture`
    #[test]
    #[ignore = "one million elements per operator: run by hand"]
    fn one_million_each() {
        let kinds = std::env::var("DUET_OPS").unwrap_or_else(|_| "compare,trunc,mul,relu".into());
        for kind in kinds.split(',') {
            let proto = std::env::var("DUET_PROTO").unwrap_or_else(|_| "duet".into());
            let r = super::run(kind, "1000000", &proto).unwrap();
            println!(
                "{kind}: {} B total = {:.1} B/elem, predicted {} B, rounds {}, online {:.2} s, wall {:.2} s, err {}, rss {} MiB",
                r.bytes.total,
                r.bytes.total as f64 / 1e6,
                r.ops[0].predicted_bytes,
                r.rounds,
                r.online_s,
                r.wall_s,
                r.accuracy.max_abs_err,
                r.peak_rss_bytes.server >> 20
            );
        }
    }
}

#[cfg(test)]
mod radix_table {
    use duet_mpc::nonlinear as nl;
    use duet_mpc::Ring;
    use duet_transport::Role;

    /// Prints bytes per comparison by radix and ring (for the report).
    #[test]
    #[ignore = "prints a table"]
    fn bytes_per_comparison() {
        for l in [32u32, 37, 64] {
            for radix in 1..=8 {
                let cfg = nl::NlConfig {
                    radix,
                    ot_sender: Role::Server,
                    ..nl::NlConfig::default()
                };
                let c = nl::msb_cost(1 << 20, Ring::new(l).unwrap(), cfg);
                println!(
                    "l {l} radix {radix}: {:.1} B/cmp, {} rounds",
                    c.bytes as f64 / f64::from(1 << 20),
                    c.rounds
                );
            }
        }
    }
}

#[cfg(test)]
mod cost_table {
    use duet_mpc::nonlinear::{self as nl, NlConfig, TruncMode};
    use duet_mpc::Ring;

    /// Prints bytes per element of every protocol at `l = 37` (for the report).
    #[test]
    #[ignore = "prints a table"]
    fn bytes_per_element() {
        let n = 1 << 20;
        let r = Ring::new(37).unwrap();
        let rows_of = |c: NlConfig| {
            [
                ("and", nl::and_cost(n, c)),
                ("msb/drelu/lt_bounded", nl::msb_cost(n, r, c)),
                ("lt (exact)", nl::lt_cost(n, r, c)),
                ("lt_public (exact)", nl::lt_public_cost(n, r, c)),
                ("eq", nl::eq_cost(n, r, c)),
                ("b2a", nl::b2a_cost(n, r, c)),
                ("mux", nl::mux_cost(n, r, c)),
                ("mul", nl::mul_cost(n, r, c)),
                (
                    "trunc faithful f=12",
                    nl::trunc_cost(n, r, 12, TruncMode::Faithful, c),
                ),
                (
                    "trunc one-bit f=12",
                    nl::trunc_cost(n, r, 12, TruncMode::OneBit, c),
                ),
                (
                    "trunc known-msb f=12",
                    nl::trunc_cost(n, r, 12, TruncMode::KnownMsb(false), c),
                ),
                ("relu", nl::relu_cost(n, r, c)),
                (
                    "extend 37->64 signed",
                    nl::extend_cost(n, r, Ring::z64(), c),
                ),
                ("max over 8 (per row)", nl::max_axis_cost(n / 8, 8, r, c)),
            ]
        };
        println!("| protocol | Ferret B/elem | COTs/elem | IKNP+KK13 B/elem | rounds |");
        for ((name, f), (_, i)) in rows_of(NlConfig::default())
            .into_iter()
            .zip(rows_of(NlConfig::iknp()))
        {
            let per = if name.starts_with("max") { n / 8 } else { n } as f64;
            println!(
                "| {name} | {:.2} | {:.1} | {:.2} | {} |",
                f.bytes as f64 / per,
                f.cots.total() as f64 / per,
                i.bytes as f64 / per,
                f.rounds
            );
        }
    }
}
