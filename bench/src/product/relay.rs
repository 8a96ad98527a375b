//! `duet relay --listen ADDR --upstream ADDR --net PROFILE [--seconds N]`: the user-space
//! network emulator between a `duet connect` client and a `duet serve` server.
//!
//! The client connects to the relay's `--listen` address instead of the server; the relay
//! forwards to `--upstream` (the server) adding the profile's round-trip time (half each way)
//! and shaping each direction to its rate (see `duet_transport::relay`). It prints which
//! shaping it applies, then its counters every 10 s, and runs until killed or for `--seconds`.

use crate::DuetError;
use duet_transport::relay::{NetProfile, UdpRelay};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often the counters are printed.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Runs the relay; `seconds = None` runs until the process is killed.
pub fn run_relay(
    listen: SocketAddr,
    upstream: SocketAddr,
    net: &str,
    seconds: Option<u64>,
) -> Result<(), DuetError> {
    let profile = NetProfile::by_name(net)?;
    let relay = UdpRelay::start(listen, upstream, profile.clone())?;
    let rate = profile
        .rate_bits_per_s
        .map_or("rate unshaped".to_string(), |r| {
            format!("rate {} Mbit/s each way", r as f64 / 1e6)
        });
    eprintln!(
        "duet relay: {} -> {upstream}, network {}: shaping by user-space UDP relay \
         ({rate}, delay {:?} each way, drop-tail queue of {} bytes)",
        relay.local_addr(),
        profile.name,
        profile.one_way_delay(),
        profile
            .default_queue_bytes()
            .map_or("unbounded".to_string(), |b| b.to_string()),
    );
    let start = Instant::now();
    let end = seconds.map(|s| start + Duration::from_secs(s));
    loop {
        let now = Instant::now();
        let next = now + REPORT_EVERY;
        let wake = end.map_or(next, |e| e.min(next));
        std::thread::sleep(wake.saturating_duration_since(now));
        let s = relay.stats();
        eprintln!(
            "duet relay: {:.0} s: to upstream {} datagrams {} bytes {} dropped; \
             to client {} datagrams {} bytes {} dropped",
            start.elapsed().as_secs_f64(),
            s.to_upstream.datagrams,
            s.to_upstream.bytes,
            s.to_upstream.dropped,
            s.to_client.datagrams,
            s.to_client.bytes,
            s.to_client.dropped,
        );
        if end.is_some_and(|e| Instant::now() >= e) {
            relay.shutdown();
            return Ok(());
        }
    }
}
