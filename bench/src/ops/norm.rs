//! `duet bench op {softmax|layernorm|rmsnorm|gaussian-attn} --shape ... --protocol P`: one
//! normalisation operator of `duet_protocols::nonlinear` on random inputs, both parties in this
//! process on two threads over the in-memory channel.
//!
//! * `softmax --shape HxQxK` (or `QxK`): logits uniform in `[-20, 20]`, no mask.
//! * `layernorm` / `rmsnorm --shape RxK`: rows `N(0, 1)` with a per-row offset uniform in
//!   `[-2, 2]` (LayerNorm) and scale in `[0.5, 3]`; gamma in `[0.5, 1.5]`, beta in
//!   `[-0.5, 0.5]` (server).
//! * `gaussian-attn --shape HxNxD` (or `HxNxMxD`): q, k uniform in `[-2, 2]`, scale
//!   `1 / (2 sqrt D)`; the shared `q k^T` is an input (computed by the caller's matmul).
//!
//! Inputs are 37-bit shares with 12 fractional bits. `P` is `duet` (default), `bumblebee`,
//! `puma`, `bolt` or `iron` (the operator's approximation preset), optionally followed by the
//! MPC options of [`crate::ops::mpc::config`], e.g. `puma:cot=iknp`. The COTs the operator
//! consumes are reserved first (offline row); `bytes.total` is the online traffic,
//! `ops[0].predicted_bytes` the operator's exact cost formula, `accuracy.max_abs_err` the
//! largest error against f64 (LayerNorm/RMSNorm: relative to `max(1, |y|)`).

use crate::report::{Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;
use duet_mpc::nonlinear::{CotCount, NlConfig, NlSession};
use duet_mpc::{AShare, FixedPoint, Prg, Ring};
use duet_protocols::nonlinear::gaussian_attn::{
    gaussian_attn, gaussian_attn_cost, GaussShape, GaussianAttnConfig,
};
use duet_protocols::nonlinear::norm::{norm, norm_cost, NormKind, NormPreset, NormWeights};
use duet_protocols::nonlinear::softmax::{softmax, softmax_cost, SoftmaxPreset};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel, Role};
use std::time::Instant;

const FRAC: u32 = 12;
const BITS: u32 = 37;

/// The operator preset named by the first part of `protocol`.
#[derive(Clone, Copy, Debug)]
enum Preset {
    Duet,
    BumbleBee,
    Puma,
    Bolt,
    Iron,
}

fn parse(protocol: &str) -> Result<(Preset, NlConfig), DuetError> {
    let (name, rest) = protocol.split_once(':').unwrap_or((protocol, ""));
    let p = match name {
        "duet" | "" => Preset::Duet,
        "bumblebee" => Preset::BumbleBee,
        "puma" => Preset::Puma,
        "bolt" => Preset::Bolt,
        "iron" => Preset::Iron,
        other => {
            return Err(DuetError::Usage(format!(
                "unknown protocol {other:?}: expected duet, bumblebee, puma, bolt or iron"
            )))
        }
    };
    let cfg = if rest.is_empty() {
        crate::ops::mpc::config("duet")?
    } else {
        crate::ops::mpc::config(&format!("duet:{rest}"))?
    };
    Ok((p, cfg))
}

fn softmax_preset(p: Preset) -> SoftmaxPreset {
    match p {
        Preset::Duet => SoftmaxPreset::Duet,
        Preset::BumbleBee => SoftmaxPreset::BumbleBee,
        Preset::Puma => SoftmaxPreset::Puma,
        Preset::Bolt => SoftmaxPreset::Bolt,
        Preset::Iron => SoftmaxPreset::Iron,
    }
}

fn norm_preset(p: Preset) -> NormPreset {
    match p {
        Preset::Duet => NormPreset::Duet,
        Preset::BumbleBee => NormPreset::BumbleBee,
        Preset::Puma => NormPreset::Puma,
        Preset::Bolt => NormPreset::Bolt,
        Preset::Iron => NormPreset::Iron,
    }
}

fn dims(shape: &str) -> Result<Vec<usize>, DuetError> {
    let d: Option<Vec<usize>> = shape
        .split('x')
        .map(|v| v.trim().parse::<usize>().ok().filter(|&v| v > 0))
        .collect();
    d.ok_or_else(|| DuetError::Usage(format!("bad shape {shape:?}")))
}

fn unif(prg: &mut Prg) -> f64 {
    (prg.ring_element(Ring::z64()) >> 11) as f64 / (1u64 << 53) as f64
}

fn gauss(prg: &mut Prg) -> f64 {
    let (u1, u2) = (unif(prg).max(1e-300), unif(prg));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One party's result: output share, setup, offline and online traffic, offline and online
/// seconds.
type PartyOut = (Vec<u64>, ChannelStats, ChannelStats, ChannelStats, f64, f64);

fn barrier(ch: &mut MemoryChannel) -> Result<(), DuetError> {
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    Ok(())
}

fn party<F>(
    role: Role,
    cfg: NlConfig,
    need: CotCount,
    mut ch: MemoryChannel,
    f: &F,
) -> Result<PartyOut, DuetError>
where
    F: Fn(Role, &mut NlSession, &mut MemoryChannel) -> Result<Vec<u64>, DuetError>,
{
    let mut rng = Prg::from_entropy();
    let mut s = NlSession::setup(&mut ch, role, &mut rng, cfg)?;
    let setup = ch.stats();
    let t_off = Instant::now();
    s.reserve(&mut ch, need)?;
    barrier(&mut ch)?;
    let offline = ch.stats() - setup;
    let offline_s = t_off.elapsed().as_secs_f64();
    barrier(&mut ch)?;
    let before = ch.stats();
    let t = Instant::now();
    let out = f(role, &mut s, &mut ch)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((out, setup, offline, ch.stats() - before, offline_s, secs))
}

/// Runs `duet bench op KIND --shape SHAPE --protocol PROTOCOL` for this file's operators.
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    let (preset, cfg) = parse(protocol)?;
    let d = dims(shape)?;
    let in_ring = Ring::new(BITS)?;
    let fx = FixedPoint::new(in_ring, FRAC)?;
    let mut prg = Prg::from_entropy();
    let share =
        |v: &[f64], prg: &mut Prg| AShare::share(in_ring, vec![v.len()], &fx.encode_all(v), prg);
    let n: usize;
    let predicted;
    // (reference outputs, output format, relative error?)
    let want: Vec<f64>;
    let out_fmt: FixedPoint;
    let relative: bool;
    type Job =
        Box<dyn Fn(Role, &mut NlSession, &mut MemoryChannel) -> Result<Vec<u64>, DuetError> + Sync>;
    let job: Job = match kind {
        "softmax" => {
            let (rows, k) = match d.as_slice() {
                [h, q, k] => (h * q, *k),
                [q, k] => (*q, *k),
                _ => return Err(DuetError::Usage("softmax shape HxQxK or QxK".into())),
            };
            n = rows * k;
            let x: Vec<f64> = (0..n).map(|_| 40.0 * unif(&mut prg) - 20.0).collect();
            let xq = fx.decode_all(&fx.encode_all(&x));
            want = xq
                .chunks(k)
                .flat_map(|r| {
                    let m = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = r.iter().map(|v| (v - m).exp()).sum();
                    r.iter().map(move |v| (v - m).exp() / s)
                })
                .collect();
            let scfg = softmax_preset(preset).config();
            predicted = softmax_cost(&[rows, k], in_ring, FRAC, &scfg, cfg)?;
            out_fmt = FixedPoint::new(Ring::new(scfg.out_bits)?, scfg.exp.frac)?;
            relative = false;
            let (x0, x1) = share(&x, &mut prg)?;
            let (x0, x1) = (
                AShare::new(in_ring, vec![rows, k], x0.into_data())?,
                AShare::new(in_ring, vec![rows, k], x1.into_data())?,
            );
            Box::new(move |role, s, ch| {
                let x = if role == Role::Server { &x0 } else { &x1 };
                Ok(softmax(s, ch, x, FRAC, None, &scfg)?.into_data())
            })
        }
        "layernorm" | "rmsnorm" => {
            let (rows, k) = match d.as_slice() {
                [r, k] => (*r, *k),
                _ => return Err(DuetError::Usage(format!("{kind} shape RxK"))),
            };
            let nk = if kind == "layernorm" {
                NormKind::LayerNorm
            } else {
                NormKind::RmsNorm
            };
            n = rows * k;
            let mut x = Vec::with_capacity(n);
            for _ in 0..rows {
                let off = if nk == NormKind::LayerNorm {
                    4.0 * unif(&mut prg) - 2.0
                } else {
                    0.0
                };
                let sc = 0.5 + 2.5 * unif(&mut prg);
                x.extend((0..k).map(|_| off + sc * gauss(&mut prg)));
            }
            let w = NormWeights {
                gamma: (0..k).map(|_| 0.5 + unif(&mut prg)).collect(),
                beta: if nk == NormKind::LayerNorm {
                    (0..k).map(|_| unif(&mut prg) - 0.5).collect()
                } else {
                    Vec::new()
                },
            };
            let xq = fx.decode_all(&fx.encode_all(&x));
            let eps = 2f64.powi(-17);
            want = xq
                .chunks(k)
                .flat_map(|r| {
                    let mu = if nk == NormKind::LayerNorm {
                        r.iter().sum::<f64>() / k as f64
                    } else {
                        0.0
                    };
                    let var = r.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / k as f64;
                    let rs = 1.0 / (var + eps).sqrt();
                    let w = &w;
                    r.iter().enumerate().map(move |(j, v)| {
                        (v - mu) * rs * w.gamma.get(j).copied().unwrap_or(0.0)
                            + w.beta.get(j).copied().unwrap_or(0.0)
                    })
                })
                .collect();
            let ncfg = norm_preset(preset).config(FRAC);
            predicted = norm_cost(nk, &[rows, k], in_ring, FRAC, &ncfg, cfg)?;
            out_fmt = FixedPoint::new(Ring::new(ncfg.out_bits)?, FRAC)?;
            relative = true;
            let (x0, x1) = share(&x, &mut prg)?;
            let (x0, x1) = (
                AShare::new(in_ring, vec![rows, k], x0.into_data())?,
                AShare::new(in_ring, vec![rows, k], x1.into_data())?,
            );
            Box::new(move |role, s, ch| {
                let (x, wt) = if role == Role::Server {
                    (&x0, Some(&w))
                } else {
                    (&x1, None)
                };
                Ok(norm(s, ch, nk, x, FRAC, wt, &ncfg)?.into_data())
            })
        }
        "gaussian-attn" => {
            let (h, nq, m, dd) = match d.as_slice() {
                [h, nq, dd] => (*h, *nq, *nq, *dd),
                [h, nq, m, dd] => (*h, *nq, *m, *dd),
                _ => {
                    return Err(DuetError::Usage(
                        "gaussian-attn shape HxNxD or HxNxMxD".into(),
                    ))
                }
            };
            let gs = GaussShape {
                heads: h,
                queries: nq,
                keys: m,
                dim: dd,
            };
            n = h * nq * m;
            let q: Vec<f64> = (0..h * nq * dd)
                .map(|_| 4.0 * unif(&mut prg) - 2.0)
                .collect();
            let k: Vec<f64> = (0..h * m * dd)
                .map(|_| 4.0 * unif(&mut prg) - 2.0)
                .collect();
            let (q, k) = (
                fx.decode_all(&fx.encode_all(&q)),
                fx.decode_all(&fx.encode_all(&k)),
            );
            let scale = 1.0 / (2.0 * (dd as f64).sqrt());
            let mut qk = Vec::with_capacity(n);
            let mut wv = Vec::with_capacity(n);
            for hh in 0..h {
                for i in 0..nq {
                    let qi = q
                        .get((hh * nq + i) * dd..(hh * nq + i + 1) * dd)
                        .unwrap_or(&[]);
                    for j in 0..m {
                        let kj = k
                            .get((hh * m + j) * dd..(hh * m + j + 1) * dd)
                            .unwrap_or(&[]);
                        qk.push(qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>());
                        let dist: f64 = qi.iter().zip(kj).map(|(a, b)| (a - b).powi(2)).sum();
                        wv.push((-scale * dist).exp());
                    }
                }
            }
            want = wv;
            let gcfg = GaussianAttnConfig::default();
            predicted = gaussian_attn_cost(gs, in_ring, FRAC, scale, &gcfg, cfg)?;
            out_fmt = FixedPoint::new(Ring::new(gcfg.ring_bits)?, gcfg.exp.frac)?;
            relative = false;
            let (q0, q1) = share(&q, &mut prg)?;
            let (k0, k1) = share(&k, &mut prg)?;
            let (p0, p1) = share(&qk, &mut prg)?;
            Box::new(move |role, s, ch| {
                let (q, k, p) = if role == Role::Server {
                    (&q0, &k0, &p0)
                } else {
                    (&q1, &k1, &p1)
                };
                Ok(gaussian_attn(s, ch, gs, q, k, p, FRAC, scale, None, &gcfg)?.into_data())
            })
        }
        other => {
            return Err(DuetError::Usage(format!(
                "unknown operator {other:?}: expected softmax, layernorm, rmsnorm or gaussian-attn"
            )))
        }
    };
    let need = predicted.cots;
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |ch| party(Role::Server, cfg, need, ch, &job),
        |ch| party(Role::Client, cfg, need, ch, &job),
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let ((os, setup_s, off_s, st_s, toff_s, ts), (oc, setup_c, off_c, st_c, toff_c, tc)) =
        (rs?, rc?);
    let ring = out_fmt.ring();
    let got: Vec<f64> = os
        .iter()
        .zip(&oc)
        .map(|(&a, &b)| out_fmt.decode(ring.add(a, b)))
        .collect();
    let max_abs_err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| {
            let e = (g - w).abs();
            if relative {
                e / w.abs().max(1.0)
            } else {
                e
            }
        })
        .fold(0.0, f64::max);
    let dot: f64 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
    let na: f64 = got.iter().map(|a| a * a).sum::<f64>().sqrt();
    let nb: f64 = want.iter().map(|a| a * a).sum::<f64>().sqrt();
    let total = st_s.bytes_sent + st_c.bytes_sent;
    let rounds = st_s.rounds + st_c.rounds;
    let online_s = ts.max(tc);
    let offline_secs = toff_s.max(toff_c);
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
            cosine_vs_reference: if na > 0.0 && nb > 0.0 {
                dot / (na * nb)
            } else {
                1.0
            },
        },
        ops: vec![
            OpReport {
                name: format!("{kind}[{shape}]"),
                kind: kind.to_string(),
                backend: "mpc".into(),
                bytes: total,
                rounds,
                wall_s: online_s,
                predicted_bytes: predicted.bytes,
                predicted_s: 0.0,
            },
            crate::ops::mpc::offline_row(need, cfg, &off_s, &off_c, offline_secs),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operator and preset on a tiny shape: the measured online bytes equal the cost
    /// formula and the error is within the operator's bound.
    #[test]
    fn every_kind_runs_at_its_predicted_cost() {
        let all: &[&str] = &["duet", "bumblebee", "puma", "bolt", "iron"];
        for (kind, shape, bound, presets) in [
            ("softmax", "2x4x16", 1e-2, all),
            ("layernorm", "4x16", 2e-2, &["duet", "puma"][..]),
            ("rmsnorm", "4x16", 2e-2, &["duet"][..]),
            // head dimension 64 as in BERT; at d = 8 the error reaches 1.07e-2 (noted in
            // protocols/NOTES-norm.md as an open accuracy issue)
            ("gaussian-attn", "1x4x64", 1e-2, &["duet"][..]),
        ] {
            for protocol in presets {
                let r = run(kind, shape, protocol).unwrap();
                let op = r.ops.first().unwrap();
                assert_eq!(op.bytes, op.predicted_bytes, "{kind} {protocol}");
                assert!(r.bytes.total > 0);
                assert!(
                    r.accuracy.max_abs_err <= bound,
                    "{kind} {protocol}: {}",
                    r.accuracy.max_abs_err
                );
            }
        }
        assert!(run("softmax", "4x4", "nope").is_err());
        assert!(run("layernorm", "4x4x4", "duet").is_err());
        assert!(run("median", "4", "duet").is_err());
    }
}
