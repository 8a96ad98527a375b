//! `duet bench op embedding --shape SEQxVOCABxHIDDEN [--protocol P]`: the private token-embedding
//! lookup, both parties in this process on two threads over the in-memory channel.
//! `P` = `duet` ([`duet_protocols::PrivateEmbedding`], client-key HE product with the
//! protocol's own parameter choice), `n4096` / `n8192` / `n8192-pack` (the same, forcing a
//! 128-bit preset), or `duet-serverkey` ([`duet_protocols::ServerKeyEmbedding`]: the table
//! encrypted once under the server's key and cached by the client; `bytes.cached` is that
//! transfer, `offline_s` its time).
//!
//! Inputs: a random table with entries in `[-2^12, 2^12]` (BERT weights at 12 fractional bits;
//! the first row is all `+2^12`, the last all `-2^12`), random ids (the first and last id and one
//! repeated id included), shares in `Z_2^37`. `bytes.total` is the online traffic of both
//! directions, `bytes.setup` the key setup, `online_s` the slower party's online time (after a
//! barrier), `offline_s` the server's table preparation, `accuracy.max_abs_err` the largest
//! reconstruction error against the plaintext lookup (0: exact), `ops[0].predicted_bytes` the
//! exact cost formula. `peak_rss_bytes` is the process peak (both parties together).

use std::sync::Arc;
use std::time::Instant;

use crate::report::{Accuracy, Bytes, OpReport, PeakRss, Report};
use crate::DuetError;
use duet_fhe::{Preset, RlweParameters};
use duet_protocols::{
    EmbeddingServerKeys, EmbeddingTable, HeClientSetup, HeServerSetup, PrivateEmbedding,
    ServerKeyEmbedding,
};
use duet_transport::{run_two_party, Channel, ChannelStats, MemoryChannel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Share width of the benchmark.
pub const BITS: u32 = 37;
/// Table entry bound (fixed point with 12 fractional bits).
pub const BOUND: i64 = 1 << 12;

/// What one party returns: output share, setup traffic, online traffic, online seconds.
type PartyOut = (Vec<u64>, ChannelStats, ChannelStats, f64);

fn barrier(ch: &mut MemoryChannel) -> Result<(), DuetError> {
    ch.send_bytes(&[0])?;
    ch.flush()?;
    ch.recv_bytes()?;
    Ok(())
}

fn dims(shape: &str) -> Result<[usize; 3], DuetError> {
    let parts: Vec<usize> = shape
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| DuetError::Usage(format!("bad shape {shape:?}: {e}")))?;
    let arr: [usize; 3] = parts
        .try_into()
        .map_err(|_| DuetError::Usage(format!("shape {shape:?}: expected SEQxVOCABxHIDDEN")))?;
    if arr.contains(&0) || arr.iter().any(|&v| v > 1 << 20) {
        return Err(DuetError::Usage(format!(
            "shape {shape:?}: dimensions must be in 1..=2^20"
        )));
    }
    Ok(arr)
}

fn preset(protocol: &str) -> Result<Option<Preset>, DuetError> {
    match protocol {
        "duet" => Ok(None),
        "n4096" => Ok(Some(Preset::N4096Q109)),
        "n8192" => Ok(Some(Preset::N8192Q186)),
        "n8192-pack" => Ok(Some(Preset::N8192Q200Pack)),
        other => Err(DuetError::Usage(format!(
            "unknown protocol {other:?} for embedding: expected duet, n4096, n8192 or n8192-pack"
        ))),
    }
}

/// Random table (first row `+BOUND`, last `-BOUND`) and ids (first and last id, a repeat).
fn inputs(seq: usize, vocab: usize, hidden: usize) -> (Vec<i64>, Vec<u32>) {
    let mut rng = ChaCha20Rng::from_entropy();
    let mut table: Vec<i64> = (0..vocab * hidden)
        .map(|_| rng.gen_range(-BOUND..=BOUND))
        .collect();
    for (i, t) in table.iter_mut().enumerate() {
        if i < hidden {
            *t = BOUND;
        } else if i >= (vocab - 1) * hidden {
            *t = -BOUND;
        }
    }
    let mut ids: Vec<u32> = (0..seq).map(|_| rng.gen_range(0..vocab as u32)).collect();
    if let Some(v) = ids.first_mut() {
        *v = 0;
    }
    if let Some(v) = ids.last_mut() {
        *v = (vocab - 1) as u32;
    }
    if seq > 3 {
        let a = ids.get(1).copied().unwrap_or(0);
        if let Some(b) = ids.get_mut(2) {
            *b = a;
        }
    }
    (table, ids)
}

/// Largest `|share_s + share_c - T[id]|` (centered in `Z_2^l`).
fn max_err(zs: &[u64], zc: &[u64], table: &[i64], ids: &[u32], hidden: usize, mask: u64) -> f64 {
    let mut max_abs_err = 0.0f64;
    for (r, &id) in ids.iter().enumerate() {
        for c in 0..hidden {
            let idx = r * hidden + c;
            let got = zs
                .get(idx)
                .zip(zc.get(idx))
                .map(|(a, b)| a.wrapping_add(*b) & mask)
                .unwrap_or(u64::MAX);
            let want = table
                .get(id as usize * hidden + c)
                .map(|&t| (t as u64) & mask)
                .unwrap_or(0);
            let diff = got.wrapping_sub(want) & mask;
            let err = diff.min(mask.wrapping_sub(diff).wrapping_add(1) & mask) as f64;
            max_abs_err = max_abs_err.max(err);
        }
    }
    max_abs_err
}

/// Runs the private embedding lookup (`kind` must be `embedding`).
pub fn run(kind: &str, shape: &str, protocol: &str) -> Result<Report, DuetError> {
    if kind != "embedding" {
        return Err(DuetError::Usage(format!("not an embedding kind: {kind:?}")));
    }
    let [seq, vocab, hidden] = dims(shape)?;
    if protocol == "duet-serverkey" {
        return run_server_key(seq, vocab, hidden, protocol);
    }
    let params: Arc<RlweParameters> = match preset(protocol)? {
        None => PrivateEmbedding::params(BITS, BOUND as u64, vocab)?,
        Some(p) => PrivateEmbedding::params_with(p, BITS, BOUND as u64, vocab)?,
    };
    let predicted = PrivateEmbedding::cost(&params, seq, vocab, hidden)?;
    let (table, ids) = inputs(seq, vocab, hidden);
    let tab = EmbeddingTable::new(&params, vocab, hidden, table.clone())?;
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |mut ch| -> Result<PartyOut, DuetError> {
            let mut rng = ChaCha20Rng::from_entropy();
            let setup = HeServerSetup::run(&mut ch, &params)?;
            let setup_stats = ch.stats();
            barrier(&mut ch)?;
            let before = ch.stats();
            let t = Instant::now();
            let z = PrivateEmbedding::run_server(&mut ch, &setup, &tab, seq, &mut rng)?;
            let secs = t.elapsed().as_secs_f64();
            Ok((z, setup_stats, ch.stats() - before, secs))
        },
        |mut ch| -> Result<PartyOut, DuetError> {
            let mut rng = ChaCha20Rng::from_entropy();
            let setup = HeClientSetup::run(&mut ch, &params, &mut rng)?;
            let setup_stats = ch.stats();
            barrier(&mut ch)?;
            let before = ch.stats();
            let t = Instant::now();
            let z = PrivateEmbedding::run_client(&mut ch, &setup, vocab, hidden, &ids, &mut rng)?;
            let secs = t.elapsed().as_secs_f64();
            Ok((z, setup_stats, ch.stats() - before, secs))
        },
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let ((zs, setup_s, st_s, ts), (zc, setup_c, st_c, tc)) = (rs?, rc?);
    let err = max_err(&zs, &zc, &table, &ids, hidden, params.plain_mask());
    Ok(report(
        format!(
            "op:embedding {seq}x{vocab}x{hidden} l={BITS} N={}",
            params.degree()
        ),
        (seq, vocab, hidden),
        protocol,
        (wall_s, 0.0, ts.max(tc)),
        (&st_c, &st_s),
        setup_s.bytes_sent + setup_c.bytes_sent,
        0,
        err,
        predicted.bytes,
    ))
}

/// The server-key direction: cached phase (keys and encrypted table), then one online flight.
fn run_server_key(
    seq: usize,
    vocab: usize,
    hidden: usize,
    protocol: &str,
) -> Result<Report, DuetError> {
    let params = ServerKeyEmbedding::params(BITS)?;
    let (online, cached) = ServerKeyEmbedding::cost(&params, seq, vocab, hidden)?;
    let (table, ids) = inputs(seq, vocab, hidden);
    let wall = Instant::now();
    let (rs, rc) = run_two_party(
        |mut ch| -> Result<(PartyOut, f64), DuetError> {
            let mut rng = ChaCha20Rng::from_entropy();
            let t = Instant::now();
            let keys = EmbeddingServerKeys::generate(&params, &mut rng);
            ServerKeyEmbedding::send_table(&mut ch, &keys, vocab, hidden, &table, &mut rng)?;
            barrier(&mut ch)?;
            let offline = t.elapsed().as_secs_f64();
            let cached_stats = ch.stats();
            barrier(&mut ch)?;
            let before = ch.stats();
            let t = Instant::now();
            let z = ServerKeyEmbedding::run_server(&mut ch, &keys, hidden, seq)?;
            let secs = t.elapsed().as_secs_f64();
            Ok(((z, cached_stats, ch.stats() - before, secs), offline))
        },
        |mut ch| -> Result<PartyOut, DuetError> {
            let mut rng = ChaCha20Rng::from_entropy();
            let model = ServerKeyEmbedding::recv_table(&mut ch, &params, vocab, hidden)?;
            barrier(&mut ch)?;
            let cached_stats = ch.stats();
            barrier(&mut ch)?;
            let before = ch.stats();
            let t = Instant::now();
            let z = ServerKeyEmbedding::run_client(&mut ch, &model, &ids, &mut rng)?;
            let secs = t.elapsed().as_secs_f64();
            Ok((z, cached_stats, ch.stats() - before, secs))
        },
    );
    let wall_s = wall.elapsed().as_secs_f64();
    let (((zs, cached_s, st_s, ts), offline), (zc, cached_c, st_c, tc)) = (rs?, rc?);
    let err = max_err(&zs, &zc, &table, &ids, hidden, params.plain_mask());
    // the barriers add one byte each way per barrier to the cached counts
    let cached_bytes = cached.bytes;
    let _ = (cached_s, cached_c);
    Ok(report(
        format!(
            "op:embedding {seq}x{vocab}x{hidden} l={BITS} N={} server-key",
            params.degree()
        ),
        (seq, vocab, hidden),
        protocol,
        (wall_s, offline, ts.max(tc)),
        (&st_c, &st_s),
        0,
        cached_bytes,
        err,
        online.bytes,
    ))
}

#[allow(clippy::too_many_arguments)]
fn report(
    model: String,
    (seq, vocab, hidden): (usize, usize, usize),
    protocol: &str,
    (wall_s, offline_s, online_s): (f64, f64, f64),
    (st_c, st_s): (&ChannelStats, &ChannelStats),
    setup: u64,
    cached: u64,
    max_abs_err: f64,
    predicted_bytes: u64,
) -> Report {
    let total = st_s.bytes_sent + st_c.bytes_sent;
    let rounds = st_s.rounds + st_c.rounds;
    let rss = crate::report::peak_rss_bytes();
    Report {
        model,
        seq_len: seq,
        protocol: protocol.to_string(),
        network: "memory".into(),
        wall_s,
        offline_s,
        online_s,
        bytes: Bytes {
            client_to_server: st_c.bytes_sent,
            server_to_client: st_s.bytes_sent,
            total,
            setup,
            cached,
        },
        rounds,
        peak_rss_bytes: PeakRss {
            server: rss,
            client: rss,
        },
        accuracy: Accuracy {
            max_abs_err,
            cosine_vs_reference: 1.0,
        },
        ops: vec![OpReport {
            name: format!("embedding[{seq}x{vocab}x{hidden}]"),
            kind: "embedding".into(),
            backend: "he".into(),
            bytes: total,
            rounds,
            wall_s: online_s,
            predicted_bytes,
            predicted_s: 0.0,
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_run_is_exact_and_matches_cost() {
        let r = run("embedding", "5x300x20", "duet").unwrap();
        assert_eq!(r.accuracy.max_abs_err, 0.0);
        assert_eq!(r.bytes.total, r.ops[0].predicted_bytes);
        assert_eq!(r.rounds, 2);
        assert!(r.bytes.setup > 0);
        let r = run("embedding", "5x300x20", "duet-serverkey").unwrap();
        assert_eq!(r.accuracy.max_abs_err, 0.0);
        assert_eq!(r.bytes.total, r.ops[0].predicted_bytes);
        assert_eq!(r.rounds, 1);
        assert!(r.bytes.cached > 0);
        assert!(run("embedding", "5x300", "duet").is_err());
        assert!(run("embedding", "5x300x20", "nope").is_err());
        assert!(run("embedding", "5x300x0", "duet").is_err());
    }
}
