//! `duet bench transport`: bulk throughput and small-message round trips, in-memory and over
//! loopback QUIC. Medians over repeated runs.

use crate::{median, DuetError};
use duet_transport::quic::{connect, Identity, QuicConfig, QuicListener, QuicRuntime, QuicSession};
use duet_transport::{memory_pair, Channel, Session};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Instant;

/// Figures for one channel kind.
#[derive(Clone, Debug, Serialize)]
pub struct LinkFigures {
    /// Channel kind.
    pub kind: String,
    /// Size of each bulk message.
    pub message_bytes: u64,
    /// Bulk messages sent.
    pub messages: usize,
    /// Median throughput of one bulk message (send + 1-byte ack), Gbit/s.
    pub throughput_gbit_s_median: f64,
    /// Same in GB/s (10^9 bytes).
    pub throughput_gbyte_s_median: f64,
    /// Ping-pong round trips measured.
    pub pings: usize,
    /// Median round trip of an 8-byte message and its echo, microseconds.
    pub ping_pong_rtt_us_median: f64,
}

/// The report of `duet bench transport`.
#[derive(Clone, Debug, Serialize)]
pub struct TransportReport {
    /// What ran.
    pub bench: &'static str,
    /// Per channel kind.
    pub links: Vec<LinkFigures>,
}

/// Settings.
#[derive(Clone, Copy, Debug)]
pub struct TransportBenchArgs {
    /// Bulk message size in bytes.
    pub message_bytes: usize,
    /// Bulk messages.
    pub messages: usize,
    /// Ping-pongs.
    pub pings: usize,
}

fn measure<C: Channel>(
    kind: &str,
    mut a: C,
    mut b: C,
    args: TransportBenchArgs,
) -> Result<LinkFigures, DuetError> {
    let payload = vec![0x5Au8; args.message_bytes];
    let total = args.messages + args.pings;
    // bulk messages may exceed the default frame limit (up to 1 GiB here)
    b.set_max_frame(b.max_frame().max(args.message_bytes as u64));
    let echo = std::thread::scope(|s| -> Result<(Vec<f64>, Vec<f64>), DuetError> {
        let peer = s.spawn(move || -> Result<(), DuetError> {
            for _ in 0..total {
                let m = b.recv_bytes_max(args.message_bytes.max(8))?;
                if m.len() > 8 {
                    b.send_bytes(&[1])?;
                } else {
                    b.send_bytes(&m)?;
                }
                b.flush()?;
            }
            Ok(())
        });
        let mut bulk = Vec::with_capacity(args.messages);
        for _ in 0..args.messages {
            let t = Instant::now();
            a.send_bytes(&payload)?;
            a.flush()?;
            a.recv_bytes()?;
            bulk.push(t.elapsed().as_secs_f64());
        }
        let mut pings = Vec::with_capacity(args.pings);
        for i in 0..args.pings {
            let t = Instant::now();
            a.send_bytes(&(i as u64).to_le_bytes())?;
            a.flush()?;
            a.recv_bytes()?;
            pings.push(t.elapsed().as_secs_f64());
        }
        peer.join()
            .map_err(|_| DuetError::ThreadPanicked("echo"))??;
        Ok((bulk, pings))
    })?;
    let (mut bulk, mut pings) = echo;
    let t_bulk = median(&mut bulk);
    let bytes = args.message_bytes as f64;
    Ok(LinkFigures {
        kind: kind.into(),
        message_bytes: args.message_bytes as u64,
        messages: args.messages,
        throughput_gbit_s_median: bytes * 8.0 / t_bulk / 1e9,
        throughput_gbyte_s_median: bytes / t_bulk / 1e9,
        pings: args.pings,
        ping_pong_rtt_us_median: median(&mut pings) * 1e6,
    })
}

/// A QUIC connection over loopback between two ends in this process (fresh identities, each
/// pinning the other's; Duet's default transport configuration): the server's session and the
/// client's.
pub fn quic_loopback(rt: &QuicRuntime) -> Result<(QuicSession, QuicSession), DuetError> {
    let (sid, cid) = (Identity::generate()?, Identity::generate()?);
    let cfg = QuicConfig::default();
    let listener = QuicListener::bind(
        rt,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &sid,
        cid.fingerprint(),
        cfg.clone(),
    )?;
    let addr = listener.local_addr()?;
    let (server, client) = std::thread::scope(|s| {
        let h = s.spawn(|| listener.accept());
        let c = connect(rt, addr, &cid, sid.fingerprint(), cfg);
        if c.is_err() {
            // the accept would otherwise wait for a client that never comes
            listener.close();
        }
        (h.join(), c)
    });
    let server = server.map_err(|_| DuetError::ThreadPanicked("accept"))??;
    Ok((server, client?))
}

/// Runs the benchmark on both channel kinds.
pub fn run(args: TransportBenchArgs) -> Result<TransportReport, DuetError> {
    let mut links = Vec::new();
    let (a, b) = memory_pair();
    links.push(measure("memory", a, b, args)?);

    let rt = QuicRuntime::recommended()?;
    let (server, client) = quic_loopback(&rt)?;
    let a = client.channel(0)?;
    let b = server.channel(0)?;
    links.push(measure("quic-loopback", a, b, args)?);
    std::thread::scope(|s| {
        s.spawn(|| server.close());
        client.close()
    })?;
    Ok(TransportReport {
        bench: "transport",
        links,
    })
}
