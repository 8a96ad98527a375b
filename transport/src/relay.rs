//! Network emulation in user space: a UDP relay that adds a round-trip delay and shapes the rate.
//!
//! [`UdpRelay`] sits between a QUIC client and a QUIC server (or any UDP peers): the client
//! sends to the relay's [`UdpRelay::local_addr`], the relay forwards to the upstream address,
//! and the upstream's replies go back to the client that spoke last. Each direction is an
//! independent emulated link of the [`NetProfile`]:
//!
//! * **rate**: a serialization queue. A datagram of `n` bytes occupies the link for
//!   `(n + 28) * 8 / rate` seconds (28 = IPv4 + UDP headers, so the rate is that of IP packets,
//!   as `tc tbf` counts them); it starts when the link is free, so a datagram leaves when the
//!   link would have finished sending it. The queue is bounded (drop-tail, default one
//!   bandwidth-delay product plus 64 KiB), which is what lets QUIC's congestion control find
//!   the rate instead of building an unbounded queue.
//! * **delay**: every datagram is delivered `rtt / 2` after it left the queue.
//!
//! Timing uses plain threads sleeping on the kernel's high-resolution timers (`nanosleep`,
//! default timer slack 50 us), not tokio's millisecond timer wheel, and nothing spins. Four
//! threads per relay: a receiver and a sender per direction. Delivery times grow
//! monotonically within a direction, so each sender only ever waits for the head of a FIFO.

use crate::{Result, TransportError};
use std::fmt;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bytes of IPv4 + UDP headers added to each datagram when it is charged against the rate.
pub const IP_UDP_HEADER_BYTES: u64 = 28;
/// Largest datagram the relay forwards (the largest UDP payload).
const MAX_DATAGRAM: usize = 65_535;
/// Most datagrams waiting in one direction (queue plus delay line) before drop-tail.
const MAX_QUEUED_DATAGRAMS: usize = 1 << 17;
/// How often an idle receiver looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);

/// An emulated network: a rate limit (none = unshaped) and a round-trip time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetProfile {
    /// `lan`, `wan`, `wan-slow`, or the custom spec it was parsed from.
    pub name: String,
    /// Link rate in bits per second, each direction; `None` leaves the rate unshaped.
    pub rate_bits_per_s: Option<u64>,
    /// Round-trip time added by the network (half each way).
    pub rtt: Duration,
}

impl NetProfile {
    /// The named profiles: `lan` (3 Gbit/s, 1 ms), `wan` (400 Mbit/s, 10 ms),
    /// `wan-slow` (100 Mbit/s, 80 ms).
    pub fn named(name: &str) -> Option<Self> {
        let (rate, rtt_ms) = match name {
            "lan" => (3_000_000_000, 1),
            "wan" => (400_000_000, 10),
            "wan-slow" => (100_000_000, 80),
            _ => return None,
        };
        Some(Self {
            name: name.to_string(),
            rate_bits_per_s: Some(rate),
            rtt: Duration::from_millis(rtt_ms),
        })
    }

    /// A named profile, or a custom spec such as `rate=400mbit,rtt=10ms` (see
    /// [`NetProfile::parse_custom`]).
    pub fn by_name(name: &str) -> Result<Self> {
        match Self::named(name) {
            Some(p) => Ok(p),
            None => Self::parse_custom(name),
        }
    }

    /// Parses `key=value` pairs separated by commas or colons (the CLI takes comma lists of
    /// profiles, so `rate=400mbit:rtt=10ms` there): `rate=` a number with unit `bit`, `kbit`,
    /// `mbit` or `gbit` (powers of 1000, as `tc` spells them) or `none`; `rtt=` a number with
    /// unit `us`, `ms` or `s`. `rtt` is required, `rate` defaults to `none`. Decimals are
    /// allowed (`rtt=0.5ms`, `rate=1.5gbit`).
    pub fn parse_custom(spec: &str) -> Result<Self> {
        let bad = |why: String| {
            TransportError::Config(format!(
                "network profile {spec:?}: {why} (expected lan, wan, wan-slow or \
                 rate=<n>{{bit,kbit,mbit,gbit}}|none,rtt=<n>{{us,ms,s}})"
            ))
        };
        let mut rate: Option<Option<u64>> = None;
        let mut rtt: Option<Duration> = None;
        for part in spec.split([',', ':']) {
            let part = part.trim();
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not key=value")))?;
            match key.trim() {
                "rate" => {
                    if rate.is_some() {
                        return Err(bad("rate given twice".into()));
                    }
                    rate = Some(parse_rate(value.trim()).map_err(bad)?);
                }
                "rtt" => {
                    if rtt.is_some() {
                        return Err(bad("rtt given twice".into()));
                    }
                    rtt = Some(parse_duration(value.trim()).map_err(bad)?);
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        let rtt = rtt.ok_or_else(|| bad("rtt is missing".into()))?;
        Ok(Self {
            name: spec.to_string(),
            rate_bits_per_s: rate.unwrap_or(None),
            rtt,
        })
    }

    /// Delay added in each direction: half the round trip.
    pub fn one_way_delay(&self) -> Duration {
        self.rtt / 2
    }

    /// Bandwidth-delay product in bytes (`None` when the rate is unshaped).
    pub fn bdp_bytes(&self) -> Option<u64> {
        let rate = self.rate_bits_per_s?;
        let bytes = u128::from(rate) * self.rtt.as_nanos() / 8_000_000_000;
        Some(u64::try_from(bytes).unwrap_or(u64::MAX))
    }

    /// The relay's default queue bound per direction: one bandwidth-delay product plus 64 KiB
    /// (`None` when the rate is unshaped: then nothing queues).
    pub fn default_queue_bytes(&self) -> Option<u64> {
        self.bdp_bytes().map(|b| b.saturating_add(64 << 10))
    }
}

impl FromStr for NetProfile {
    type Err = TransportError;
    fn from_str(s: &str) -> Result<Self> {
        Self::by_name(s)
    }
}

impl fmt::Display for NetProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rate_bits_per_s {
            Some(r) => write!(
                f,
                "{} ({} Mbit/s, rtt {:?})",
                self.name,
                r as f64 / 1e6,
                self.rtt
            ),
            None => write!(f, "{} (unshaped rate, rtt {:?})", self.name, self.rtt),
        }
    }
}

/// Splits `"12.5mbit"` into `(12.5, "mbit")`.
fn split_number(s: &str) -> std::result::Result<(f64, &str), String> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s:?} is not a finite non-negative number"));
    }
    Ok((v, unit))
}

fn parse_rate(s: &str) -> std::result::Result<Option<u64>, String> {
    if s == "none" {
        return Ok(None);
    }
    let (v, unit) = split_number(s)?;
    let mul = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "" => return Err(format!("rate {s:?} has no unit (bit, kbit, mbit, gbit)")),
        u => {
            return Err(format!(
                "rate unit {u:?} is not one of bit, kbit, mbit, gbit"
            ))
        }
    };
    let bits = (v * mul).round();
    if !(1.0..=1e13).contains(&bits) {
        return Err(format!("rate {s:?} is outside 1 bit/s to 10 Tbit/s"));
    }
    // in range and integral, so the conversion is exact
    Ok(Some(bits as u64))
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (v, unit) = split_number(s)?;
    let secs = match unit {
        "us" => v / 1e6,
        "ms" => v / 1e3,
        "s" => v,
        "" => return Err(format!("rtt {s:?} has no unit (us, ms, s)")),
        u => return Err(format!("rtt unit {u:?} is not one of us, ms, s")),
    };
    if secs > 3600.0 {
        return Err(format!("rtt {s:?} is above an hour"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("rtt {s:?}: {e}"))
}

/// Settings of a relay beyond its profile.
#[derive(Clone, Debug, Default)]
pub struct RelayOptions {
    /// Queue bound per direction in bytes (as charged against the rate, headers included);
    /// datagrams that would exceed it are dropped. `None`: [`NetProfile::default_queue_bytes`].
    pub queue_bytes: Option<u64>,
}

/// Counters of one direction of the relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams delivered.
    pub datagrams: u64,
    /// UDP payload bytes delivered.
    pub bytes: u64,
    /// Datagrams dropped because the queue was full.
    pub dropped: u64,
    /// Datagrams lost to a local socket error (or a reply before any client spoke).
    pub errors: u64,
    /// Sum over delivered datagrams of how late each left the relay, in nanoseconds (timer
    /// and scheduling latency of the relay itself; divide by `datagrams` for the mean).
    pub late_ns: u64,
}

/// Counters of both directions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Client to upstream.
    pub to_upstream: DirectionStats,
    /// Upstream to client.
    pub to_client: DirectionStats,
}

#[derive(Default)]
struct Counters {
    datagrams: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
    errors: AtomicU64,
    late_ns: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> DirectionStats {
        DirectionStats {
            datagrams: self.datagrams.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            late_ns: self.late_ns.load(Ordering::Relaxed),
        }
    }
}

/// One emulated link: serialization queue with drop-tail, then a fixed delay.
struct Link {
    rate: Option<u64>,
    delay: Duration,
    queue_bytes: u64,
    busy_until: Instant,
}

impl Link {
    /// When a datagram of `len` bytes arriving at `now` is delivered, or `None` if it is
    /// dropped because the queue is full.
    fn admit(&mut self, now: Instant, len: usize) -> Option<Instant> {
        let Some(rate) = self.rate else {
            return Some(now + self.delay);
        };
        let wire = (len as u64).saturating_add(IP_UDP_HEADER_BYTES);
        let start = self.busy_until.max(now);
        let backlog_ns = (start - now).as_nanos();
        let queued = backlog_ns * u128::from(rate) / 8_000_000_000;
        if queued + u128::from(wire) > u128::from(self.queue_bytes) {
            return None;
        }
        let tx_ns = u128::from(wire) * 8_000_000_000 / u128::from(rate.max(1));
        let tx = Duration::from_nanos(u64::try_from(tx_ns).unwrap_or(u64::MAX));
        self.busy_until = start + tx;
        Some(self.busy_until + self.delay)
    }
}

struct Packet {
    deliver_at: Instant,
    data: Vec<u8>,
    to: Option<SocketAddr>,
}

/// A running user-space network emulator between one client and one upstream UDP address.
/// Stops on [`UdpRelay::shutdown`] or drop.
pub struct UdpRelay {
    local: SocketAddr,
    profile: NetProfile,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    up: Arc<Counters>,
    down: Arc<Counters>,
}

impl fmt::Debug for UdpRelay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpRelay")
            .field("local", &self.local)
            .field("profile", &self.profile)
            .finish_non_exhaustive()
    }
}

impl UdpRelay {
    /// Binds `listen` (port 0 picks a free port) and relays to `upstream` with `profile`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr, profile: NetProfile) -> Result<Self> {
        Self::start_with(listen, upstream, profile, RelayOptions::default())
    }

    /// [`UdpRelay::start`] with explicit options.
    pub fn start_with(
        listen: SocketAddr,
        upstream: SocketAddr,
        profile: NetProfile,
        options: RelayOptions,
    ) -> Result<Self> {
        if profile.rate_bits_per_s == Some(0) {
            return Err(TransportError::Config("relay rate of 0 bit/s".into()));
        }
        let queue_bytes = options
            .queue_bytes
            .or_else(|| profile.default_queue_bytes())
            .unwrap_or(u64::MAX);
        if queue_bytes < 2048 {
            return Err(TransportError::Config(format!(
                "relay queue of {queue_bytes} bytes cannot hold one datagram"
            )));
        }
        let client_sock = UdpSocket::bind(listen)
            .map_err(|e| TransportError::Config(format!("relay cannot bind {listen}: {e}")))?;
        let local = client_sock.local_addr()?;
        let any: SocketAddr = if upstream.is_ipv6() {
            SocketAddr::from(([0u16; 8], 0))
        } else {
            SocketAddr::from(([0u8; 4], 0))
        };
        let up_sock = UdpSocket::bind(any)?;
        up_sock.connect(upstream).map_err(|e| {
            TransportError::Config(format!("relay cannot reach upstream {upstream}: {e}"))
        })?;
        enlarge_buffers(&[&client_sock, &up_sock]);
        client_sock.set_read_timeout(Some(POLL))?;
        up_sock.set_read_timeout(Some(POLL))?;
        let client_sock = Arc::new(client_sock);
        let up_sock = Arc::new(up_sock);
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (up, down) = (Arc::new(Counters::default()), Arc::new(Counters::default()));
        let link = || Link {
            rate: profile.rate_bits_per_s,
            delay: profile.one_way_delay(),
            queue_bytes,
            busy_until: Instant::now(),
        };

        let mut threads = Vec::with_capacity(4);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(format!("duet-relay-{name}"))
                .spawn(f)
                .map_err(TransportError::Io)
        };
        // client -> upstream
        let (tx_up, rx_up) = mpsc::sync_channel::<Packet>(MAX_QUEUED_DATAGRAMS);
        {
            let (sock, stop, counters, client) = (
                client_sock.clone(),
                stop.clone(),
                up.clone(),
                client.clone(),
            );
            let mut link = link();
            threads.push(spawn(
                "rx-up",
                Box::new(move || {
                    receive_loop(&sock, &stop, &counters, &mut link, &tx_up, |from| {
                        if let Ok(mut c) = client.lock() {
                            *c = Some(from);
                        }
                        Some(None)
                    })
                }),
            )?);
        }
        {
            let (sock, stop, counters) = (up_sock.clone(), stop.clone(), up.clone());
            threads.push(spawn(
                "tx-up",
                Box::new(move || {
                    send_loop(&stop, &counters, &rx_up, |p| sock.send(&p.data).map(|_| ()))
                }),
            )?);
        }
        // upstream -> client
        let (tx_down, rx_down) = mpsc::sync_channel::<Packet>(MAX_QUEUED_DATAGRAMS);
        {
            let (sock, stop, counters, client) =
                (up_sock.clone(), stop.clone(), down.clone(), client.clone());
            let mut link = link();
            threads.push(spawn(
                "rx-down",
                Box::new(move || {
                    receive_loop(&sock, &stop, &counters, &mut link, &tx_down, |_| {
                        // replies go to the client that spoke last; none yet: nowhere to go
                        client.lock().ok().and_then(|c| *c).map(Some)
                    })
                }),
            )?);
        }
        {
            let (sock, stop, counters) = (client_sock.clone(), stop.clone(), down.clone());
            threads.push(spawn(
                "tx-down",
                Box::new(move || {
                    send_loop(&stop, &counters, &rx_down, |p| match p.to {
                        Some(to) => sock.send_to(&p.data, to).map(|_| ()),
                        None => Err(std::io::ErrorKind::NotConnected.into()),
                    })
                }),
            )?);
        }
        Ok(Self {
            local,
            profile,
            stop,
            threads,
            up,
            down,
        })
    }

    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The emulated network.
    pub fn profile(&self) -> &NetProfile {
        &self.profile
    }

    /// Datagrams and bytes delivered and dropped so far, per direction.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            to_upstream: self.up.snapshot(),
            to_client: self.down.snapshot(),
        }
    }

    /// Stops forwarding and joins the relay's threads (within about 20 ms plus the longest
    /// pending delivery). Returns the final counters.
    pub fn shutdown(mut self) -> RelayStats {
        self.stop_threads();
        self.stats()
    }

    fn stop_threads(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            // a relay thread does not panic; if one did, there is nothing left to clean up
            let _ = t.join();
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// Socket buffers of the relay: a receiver descheduled for a few milliseconds on a busy
/// machine must not lose datagrams in the kernel (that would be loss the profile does not
/// have). The kernel caps the request at `net.core.rmem_max` / `wmem_max`.
const SOCKET_BUFFER_BYTES: usize = 8 << 20;

/// Asks for [`SOCKET_BUFFER_BYTES`] of receive and send buffer on each socket; failures only
/// leave the default (std has no setter; quinn's re-exported `quinn-udp` does, through a
/// state object of a throwaway socket, since its constructor would also switch on UDP GRO,
/// which plain `recv_from` cannot use). The QUIC endpoints would profit from the same (see
/// the report of issue 8: a starved endpoint runtime drops datagrams in a 208 KiB buffer).
pub(crate) fn enlarge_buffers(sockets: &[&UdpSocket]) {
    let Ok(probe) = UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))) else {
        return;
    };
    let Ok(state) = quinn::udp::UdpSocketState::new((&probe).into()) else {
        return;
    };
    for s in sockets {
        let _ = state.set_recv_buffer_size((*s).into(), SOCKET_BUFFER_BYTES);
        let _ = state.set_send_buffer_size((*s).into(), SOCKET_BUFFER_BYTES);
    }
}

/// Receives datagrams, admits them to the link and queues them for the sender.
/// `route(from)` returns `Some(destination)` to forward (`Some(None)`: the socket's connected
/// peer) or `None` to count an error and drop.
fn receive_loop(
    sock: &UdpSocket,
    stop: &AtomicBool,
    counters: &Counters,
    link: &mut Link,
    queue: &SyncSender<Packet>,
    mut route: impl FnMut(SocketAddr) -> Option<Option<SocketAddr>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => {
                // e.g. ICMP port unreachable from a peer that is not listening yet
                counters.errors.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
        };
        let now = Instant::now();
        let Some(to) = route(from) else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let data = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
        let Some(deliver_at) = link.admit(now, n) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match queue.try_send(Packet {
            deliver_at,
            data,
            to,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Below this much remaining wait an isolated datagram is timed by yielding instead of
/// sleeping: `nanosleep` wakes 50-150 us late (timer slack plus wake-up), which would add up
/// to a third of a millisecond to every round trip.
const SPIN_BELOW: Duration = Duration::from_micros(250);

/// Sleeps until `at`. An isolated datagram (`precise`) sleeps to `SPIN_BELOW` before the
/// deadline and yields the rest, so a lone ping is delayed by the profile and not by the
/// timer's slack; under load (a backlog behind it) plain sleep is accurate enough on average
/// and yielding would burn a core.
fn wait_until(at: Instant, precise: bool) {
    let now = Instant::now();
    if at <= now {
        return;
    }
    let left = at - now;
    if !precise {
        std::thread::sleep(left);
        return;
    }
    if left > SPIN_BELOW {
        std::thread::sleep(left - SPIN_BELOW);
    }
    while Instant::now() < at {
        std::thread::yield_now();
    }
}

/// Waits for each queued datagram's delivery time and sends it.
fn send_loop(
    stop: &AtomicBool,
    counters: &Counters,
    queue: &Receiver<Packet>,
    mut send: impl FnMut(&Packet) -> std::io::Result<()>,
) {
    let mut backlog = std::collections::VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        if backlog.is_empty() {
            match queue.recv_timeout(POLL) {
                Ok(p) => backlog.push_back(p),
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        backlog.extend(queue.try_iter());
        let Some(p) = backlog.pop_front() else {
            continue;
        };
        wait_until(p.deliver_at, backlog.is_empty());
        let late = Instant::now().saturating_duration_since(p.deliver_at);
        match send(&p) {
            Ok(()) => {
                counters.late_ns.fetch_add(
                    u64::try_from(late.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
                counters.datagrams.fetch_add(1, Ordering::Relaxed);
                counters
                    .bytes
                    .fetch_add(p.data.len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profiles() {
        let wan = NetProfile::by_name("wan").unwrap();
        assert_eq!(wan.rate_bits_per_s, Some(400_000_000));
        assert_eq!(wan.rtt, Duration::from_millis(10));
        assert_eq!(wan.bdp_bytes(), Some(500_000));
        let lan = NetProfile::by_name("lan").unwrap();
        assert_eq!(lan.rate_bits_per_s, Some(3_000_000_000));
        assert_eq!(lan.rtt, Duration::from_millis(1));
        let slow: NetProfile = "wan-slow".parse().unwrap();
        assert_eq!(slow.rate_bits_per_s, Some(100_000_000));
        assert_eq!(slow.rtt, Duration::from_millis(80));
        assert_eq!(slow.one_way_delay(), Duration::from_millis(40));
    }

    #[test]
    fn custom_profiles_parse() {
        let p = NetProfile::by_name("rate=400mbit,rtt=10ms").unwrap();
        assert_eq!(p.rate_bits_per_s, Some(400_000_000));
        assert_eq!(p.rtt, Duration::from_millis(10));
        let p = NetProfile::by_name(" rtt = 250us , rate = 1.5gbit ").unwrap();
        assert_eq!(p.rate_bits_per_s, Some(1_500_000_000));
        assert_eq!(p.rtt, Duration::from_micros(250));
        let p = NetProfile::by_name("rtt=0.5s").unwrap();
        assert_eq!(p.rate_bits_per_s, None);
        assert_eq!(p.rtt, Duration::from_millis(500));
        let p = NetProfile::by_name("rate=none,rtt=0ms").unwrap();
        assert_eq!((p.rate_bits_per_s, p.rtt), (None, Duration::ZERO));
        let p = NetProfile::by_name("rate=64kbit,rtt=1s").unwrap();
        assert_eq!(p.rate_bits_per_s, Some(64_000));
        assert_eq!(p.bdp_bytes(), Some(8_000));
    }

    #[test]
    fn bad_profiles_are_errors() {
        for bad in [
            "",
            "lan2",
            "WAN",
            "rate=400mbit",
            "rtt=10",
            "rtt=10min",
            "rtt=-1ms",
            "rtt=ms",
            "rtt=1e3ms",
            "rate=400,rtt=10ms",
            "rate=400mbps,rtt=10ms",
            "rate=0mbit,rtt=10ms",
            "rate=0.1bit,rtt=10ms",
            "rate=99999tbit,rtt=10ms",
            "rate=400mbit,rtt=10ms,rtt=20ms",
            "rate=1mbit,rate=2mbit,rtt=1ms",
            "rate=400mbit;rtt=10ms",
            "rtt=10ms,loss=1",
            "rtt=2h",
            "rtt=99999999s",
            "rtt=nanms",
        ] {
            let err = NetProfile::by_name(bad);
            assert!(
                matches!(err, Err(TransportError::Config(_))),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn link_serializes_and_drops_tail() {
        let t0 = Instant::now();
        // 8 Mbit/s: 1 byte per microsecond; queue of 3 000 bytes
        let mut link = Link {
            rate: Some(8_000_000),
            delay: Duration::from_millis(5),
            queue_bytes: 3_000,
            busy_until: t0,
        };
        let a = link.admit(t0, 972).unwrap(); // 1 000 bytes on the wire
        assert_eq!(a - t0, Duration::from_micros(5_000 + 1_000));
        let b = link.admit(t0, 972).unwrap();
        assert_eq!(b - t0, Duration::from_micros(5_000 + 2_000));
        let c = link.admit(t0, 972).unwrap();
        assert_eq!(c - t0, Duration::from_micros(5_000 + 3_000));
        assert!(
            link.admit(t0, 972).is_none(),
            "queue of 3 000 bytes is full"
        );
        // after the link drained 1 000 bytes there is room again
        let d = link.admit(t0 + Duration::from_micros(1_000), 972).unwrap();
        assert_eq!(d - t0, Duration::from_micros(5_000 + 4_000));
        // an idle link sends at once
        let e = link.admit(t0 + Duration::from_millis(100), 72).unwrap();
        assert_eq!(e - t0, Duration::from_micros(100_000 + 5_000 + 100));
    }
}
