//! `duet bench op mul --shape N --protocol he[:bits=L]`: the HE-based element-wise product of
//! two shared tensors ([`duet_protocols::HeElementwiseMul`], slot-encoded BFV with prime
//! plaintext moduli), both parties in this process on two threads over the in-memory channel.
//!
//! Inputs: uniformly random secrets and uniformly random shares in `Z_2^37` (`bits=L` picks
//! another width in `16..=64`). The report's `bytes.total` is the online traffic of both
//! directions, `bytes.setup` the public key, `rounds` the online flights, `online_s` the slower
//! party's online time (after a barrier), `accuracy.max_abs_err` the largest error of the
//! reconstructed product against plaintext (0: the protocol is exact), and
//! `ops[0].predicted_bytes` the protocol's exact cost formula.

use std::sync::Arc;
use std::time::Instant;

use crate::report::{Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;
use duet_fhe::{RingBits, SlotParameters};
use duet_mpc::{AShare, Prg, Ring};
use duet_protocols::{HeElementwiseMul, HeMulClientSetup, HeMulServerSetup, ProtocolError};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Default share width of the benchmark (the CrypTFlow2 / Cheetah width).
pub const BITS: u32 = 37;

/// What one party returns: output share, setup traffic, online traffic, online seconds.
type PartyOut = (AShare, ChannelStats, ChannelStats, f64);

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

/// `he` or `he:bits=L`.
fn parse_bits(protocol: &str) -> Result<u32, DuetError> {
    let mut parts = protocol.split(':');
    if parts.next() != Some("he") {
        return Err(DuetError::Usage(format!(
            "unknown protocol {protocol:?} for the HE element-wise product: expected he[:bits=L]"
        )));
    }
    let mut bits = BITS;
    for part in parts {
        match part.split_once('=') {
            Some(("bits", v)) => {
                bits = v
                    .parse()
                    .map_err(|_| DuetError::Usage(format!("bad bits {v:?}")))?
            }
            _ => {
                return Err(DuetError::Usage(format!(
                    "unknown protocol option {part:?}"
                )))
            }
        }
    }
    Ok(bits)
}

fn barrier(ch: &mut MemoryChannel) -> Result<(), DuetError> {
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    Ok(())
}

fn server(
    mut ch: MemoryChannel,
    params: &Arc<SlotParameters>,
    x: &AShare,
    y: &AShare,
) -> Result<PartyOut, DuetError> {
    let mut rng = ChaCha20Rng::from_entropy();
    let setup = HeMulServerSetup::run(&mut ch, params)?;
    let setup_stats = ch.stats();
    barrier(&mut ch)?;
    let before = ch.stats();
    let t = Instant::now();
    let z = HeElementwiseMul::run_server(&mut ch, &setup, x, y, &mut rng)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((z, setup_stats, ch.stats() - before, secs))
}

fn client(
    mut ch: MemoryChannel,
    params: &Arc<SlotParameters>,
    x: &AShare,
    y: &AShare,
) -> Result<PartyOut, DuetError> {
    let mut rng = ChaCha20Rng::from_entropy();
    let setup = HeMulClientSetup::run(&mut ch, params, &mut rng)?;
    let setup_stats = ch.stats();
    barrier(&mut ch)?;
    let before = ch.stats();
    let t = Instant::now();
    let z = HeElementwiseMul::run_client(&mut ch, &setup, x, y, &mut rng)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((z, setup_stats, ch.stats() - before, secs))
}

/// Runs the HE element-wise product (`kind` must be `mul`) on `shape` elements.
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    if kind != "mul" {
        return Err(DuetError::Usage(format!(
            "the he protocols implement only `mul`, not {kind:?}"
        )));
    }
    let n = parse_n(shape)?;
    let bits = parse_bits(protocol)?;
    let ring = Ring::new(bits)?;
    let params = SlotParameters::new(RingBits(bits)).map_err(ProtocolError::from)?;
    let predicted = HeElementwiseMul::cost(n, &params);
    let mut prg = Prg::from_entropy();
    let xv = prg.ring_elements(ring, n);
    let yv = prg.ring_elements(ring, n);
    let x = AShare::share(ring, vec![n], &xv, &mut prg)?;
    let y = AShare::share(ring, vec![n], &yv, &mut prg)?;
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |ch| server(ch, &params, &x.0, &y.0),
        |ch| client(ch, &params, &x.1, &y.1),
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let ((zs, setup_s, st_s, ts), (zc, setup_c, st_c, tc)) = (rs?, rc?);
    let z = zs.reconstruct(&zc)?;
    let max_abs_err = z
        .iter()
        .zip(xv.iter().zip(&yv))
        .map(|(&got, (&a, &b))| {
            let want = ring.mul(a, b);
            (ring.to_i64(ring.sub(got, want)) as f64).abs()
        })
        .fold(0.0, f64::max);
    let total = st_s.bytes_sent + st_c.bytes_sent;
    let rounds = st_s.rounds + st_c.rounds;
    let online_s = ts.max(tc);
    Ok(Report {
        model: format!("op:{kind}"),
        seq_len: n,
        protocol: protocol.to_string(),
        network: "memory".into(),
        wall_s,
        offline_s: 0.0,
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
        ops: vec![OpReport {
            name: format!("{kind}[{n}]"),
            kind: kind.to_string(),
            backend: "he".into(),
            bytes: total,
            rounds,
            wall_s: online_s,
            predicted_bytes: predicted.bytes,
            predicted_s: 0.0,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_is_exact_and_matches_cost() {
        let r = run("mul", "100", "he").unwrap();
        assert_eq!(r.accuracy.max_abs_err, 0.0);
        assert_eq!(r.bytes.total, r.ops[0].predicted_bytes);
        assert_eq!(r.rounds, 2);
        assert!(r.bytes.setup > 0);
        let r = run("mul", "10", "he:bits=64").unwrap();
        assert_eq!(r.accuracy.max_abs_err, 0.0);
        assert!(run("mul", "10", "he:bits=8").is_err());
        assert!(run("relu", "10", "he").is_err());
        assert!(run("mul", "10", "hex").is_err());
    }
}
