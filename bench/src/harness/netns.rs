//! Network shaping between the two processes of `duet bench model`, outside the protocol code.
//!
//! Four modes ([`Shaping`]):
//!
//! * **netns** (root only): the server runs in its own network namespace `duet-s-<pid>-<n>`,
//!   joined to the root namespace by a veth pair (`dh<pid>x<n>` here, `dn<pid>x<n>` there) with
//!   private addresses `10.213.k.1/30` (root side) and `10.213.k.2/30` (server side). The
//!   kernel enforces the rate: a `tc tbf` qdisc on BOTH veth ends, i.e. on the egress of each
//!   direction. The delay is added by `tc netem` (a child of the tbf) where the kernel has it;
//!   otherwise (this machine's kernel, and most CI kernels, lack `sch_netem`) by the user-space
//!   UDP relay in delay-only mode (rate unshaped), in the root namespace in front of the veth.
//!   Everything is torn down by [`NetnsLink`]'s `Drop` (also on error and when the child
//!   fails); namespaces, veths and address reservations left by dead processes are removed
//!   at the start of the next run ([`cleanup_stale`]).
//! * **relay**: loopback QUIC through the user-space UDP relay, which adds the delay and
//!   enforces the rate ([`duet_transport::relay::UdpRelay`]).
//! * **none**: loopback QUIC, unshaped (the profile is not emulated).
//! * **auto** (the default): netns when running as root and `ip`/`tc` work, else relay.
//!
//! **tbf sizing** ([`Tbf::for_profile`]): tbf counts Ethernet frames on a veth (IP packet +
//! 14 bytes), the relay and the profiles count IP packets, so the tbf rate is the profile's
//! times 1514/1500 (exact for full-size packets). `burst` = max(64 KiB, 1 ms of the rate): at
//! least one full UDP GSO super-packet (QUIC sends up to 64 KiB at once with UDP GSO; a larger
//! one would be split by tbf in software), and enough tokens to cover the qdisc watchdog's
//! wake-up latency at high rates (375 kB at 3 Gbit/s). `limit` (bytes queued waiting for
//! tokens) = one bandwidth-delay product of the profile + `burst`, as the relay's queue: the
//! drop-tail queue QUIC's congestion control needs to find the rate without unbounded
//! queueing delay. The measured effect is in `bench/tests/netns.rs`.

use crate::DuetError;
use duet_transport::relay::{NetProfile, UdpRelay};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Prefix of the server namespaces' names (`duet-s-<pid>-<n>`).
pub const NS_PREFIX: &str = "duet-s-";
/// Folder of the address reservations (`slot-<k>` holds the owner's pid).
pub const SLOT_DIR: &str = "/run/duet-netns";
/// Ethernet header bytes a veth adds to each IP packet (what tbf counts on top of IP).
pub const ETH_HEADER_BYTES: u64 = 14;
/// The IP packet size for which the tbf rate equals the profile's exactly.
pub const FULL_IP_PACKET: u64 = 1500;

fn err(m: impl Into<String>) -> DuetError {
    DuetError::Usage(m.into())
}

/// How the network of a `duet bench model` run is shaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Shaping {
    /// netns when root and `ip`/`tc` work, else relay.
    #[default]
    Auto,
    /// Namespace + veth + kernel tbf (+ netem or relay delay); an error when unavailable.
    Netns,
    /// The user-space UDP relay (delay and rate).
    Relay,
    /// Loopback, unshaped.
    None,
}

impl FromStr for Shaping {
    type Err = DuetError;
    fn from_str(s: &str) -> Result<Self, DuetError> {
        match s {
            "auto" => Ok(Self::Auto),
            "netns" => Ok(Self::Netns),
            "relay" => Ok(Self::Relay),
            "none" => Ok(Self::None),
            other => Err(err(format!(
                "--shaping {other}: expected auto, netns, relay or none"
            ))),
        }
    }
}

impl fmt::Display for Shaping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Netns => "netns",
            Self::Relay => "relay",
            Self::None => "none",
        })
    }
}

/// Parameters of one `tc tbf` qdisc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tbf {
    /// Rate of Ethernet frames in bit/s (the profile's IP rate x 1514/1500).
    pub rate_bits_per_s: u64,
    /// Bucket size in bytes.
    pub burst_bytes: u64,
    /// Bytes that may wait for tokens before drop-tail.
    pub limit_bytes: u64,
}

impl Tbf {
    /// The tbf of a rate (IP-level bit/s) and round trip; see the module docs for the formula.
    pub fn for_profile(rate_bits_per_s: u64, rtt: Duration) -> Self {
        let rate = u128::from(rate_bits_per_s);
        let eth_rate =
            rate * u128::from(FULL_IP_PACKET + ETH_HEADER_BYTES) / u128::from(FULL_IP_PACKET);
        // one millisecond of the rate, in bytes, rounded up
        let per_ms = eth_rate.div_ceil(8_000);
        let burst = per_ms.max(64 << 10);
        let bdp = eth_rate * rtt.as_nanos() / 8_000_000_000;
        let sat = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        Self {
            rate_bits_per_s: sat(eth_rate),
            burst_bytes: sat(burst),
            limit_bytes: sat(bdp.saturating_add(burst)),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "tbf".into(),
            "rate".into(),
            format!("{}bit", self.rate_bits_per_s),
            "burst".into(),
            format!("{}b", self.burst_bytes),
            "limit".into(),
            format!("{}b", self.limit_bytes),
        ]
    }
}

/// Runs `prog args`; the trimmed stderr (or the spawn error) on failure.
fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let e = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`{prog} {}` failed: {}",
            args.join(" "),
            e.trim().lines().next().unwrap_or("no message")
        ))
    }
}

fn run_owned(prog: &str, args: &[String]) -> Result<String, String> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run(prog, &a)
}

/// Whether this process runs with effective uid 0 (from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Why the namespace path cannot run here (`Ok` when it should: root, `ip netns` and `tc`
/// answer).
pub fn netns_available() -> Result<(), String> {
    if !is_root() {
        return Err("not running as root".into());
    }
    run("ip", &["netns", "list"])?;
    run("tc", &["qdisc", "show", "dev", "lo"])?;
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in `duet-s-<pid>-<n>` or `dh<pid>x<n>` / `dn<pid>x<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = if let Some(r) = name.strip_prefix(NS_PREFIX) {
        r.split_once('-')?
    } else {
        let r = name
            .strip_prefix("dh")
            .or_else(|| name.strip_prefix("dn"))?;
        r.split_once('x')?
    };
    let (pid, n) = rest;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Removes the namespaces, host-side veths and address reservations whose owner process is
/// gone (a run killed before its `Drop` ran). Returns what was removed.
pub fn cleanup_stale() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if owner_pid(name).is_some_and(|p| !pid_alive(p))
                && run("ip", &["netns", "del", name]).is_ok()
            {
                removed.push(format!("netns {name}"));
            }
        }
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for l in links.lines() {
            // "12: dh123x0@if11: <...>"
            let Some(name) = l
                .split(": ")
                .nth(1)
                .and_then(|n| n.split('@').next())
                .filter(|n| n.starts_with("dh"))
            else {
                continue;
            };
            if owner_pid(name).is_some_and(|p| !pid_alive(p))
                && run("ip", &["link", "del", name]).is_ok()
            {
                removed.push(format!("veth {name}"));
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(SLOT_DIR) {
        for e in dir.flatten() {
            let owner = std::fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            if owner.is_none_or(|p| !pid_alive(p)) && std::fs::remove_file(e.path()).is_ok() {
                removed.push(format!("reservation {}", e.path().display()));
            }
        }
    }
    removed
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace for the server joined to this one by a shaped veth pair. Dropping it
/// deletes the veth pair, the namespace and the address reservation.
#[derive(Debug)]
pub struct NetnsLink {
    ns: String,
    host_if: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
    slot: Option<PathBuf>,
    tbf: Option<Tbf>,
    netem_delay: Option<Duration>,
    ns_created: bool,
    veth_created: bool,
}

impl NetnsLink {
    /// Creates the namespace and the veth pair, shaped by `profile`: tbf at its rate on both
    /// ends; its delay by netem when `try_netem` and the kernel has netem (see
    /// [`NetnsLink::kernel_delay`]), otherwise not at all (the caller adds it).
    pub fn create(profile: &NetProfile, try_netem: bool) -> Result<Self, DuetError> {
        netns_available().map_err(|why| err(format!("network namespaces unavailable: {why}")))?;
        cleanup_stale();
        let pid = std::process::id();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut link = Self {
            ns: format!("{NS_PREFIX}{pid}-{n}"),
            host_if: format!("dh{pid}x{n}"),
            host_ip: Ipv4Addr::UNSPECIFIED,
            ns_ip: Ipv4Addr::UNSPECIFIED,
            slot: None,
            tbf: None,
            netem_delay: None,
            ns_created: false,
            veth_created: false,
        };
        let ns_if = format!("dn{pid}x{n}");
        if link.host_if.len() > 15 {
            return Err(err(format!(
                "interface name {} is longer than 15 bytes",
                link.host_if
            )));
        }
        let k = reserve_slot(pid, n)?;
        link.slot = Some(Path::new(SLOT_DIR).join(format!("slot-{k}")));
        link.host_ip = Ipv4Addr::new(10, 213, k, 1);
        link.ns_ip = Ipv4Addr::new(10, 213, k, 2);
        let fail = |e: String| err(format!("cannot set up the network namespace: {e}"));
        run("ip", &["netns", "add", &link.ns]).map_err(fail)?;
        link.ns_created = true;
        run(
            "ip",
            &[
                "link",
                "add",
                &link.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &ns_if,
                "netns",
                &link.ns,
            ],
        )
        .map_err(fail)?;
        link.veth_created = true;
        let (h, s) = (format!("{}/30", link.host_ip), format!("{}/30", link.ns_ip));
        let ns = link.ns.clone();
        let host_if = link.host_if.clone();
        run("ip", &["addr", "add", &h, "dev", &host_if]).map_err(fail)?;
        run("ip", &["link", "set", &host_if, "up"]).map_err(fail)?;
        run("ip", &["-n", &ns, "addr", "add", &s, "dev", &ns_if]).map_err(fail)?;
        run("ip", &["-n", &ns, "link", "set", &ns_if, "up"]).map_err(fail)?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]).map_err(fail)?;
        // each direction's egress: host end (client -> server), namespace end (server -> client)
        let ends: [Vec<String>; 2] = [
            vec!["qdisc".into(), "add".into(), "dev".into(), host_if.clone()],
            vec![
                "-n".into(),
                ns.clone(),
                "qdisc".into(),
                "add".into(),
                "dev".into(),
                ns_if.clone(),
            ],
        ];
        if let Some(rate) = profile.rate_bits_per_s {
            let tbf = Tbf::for_profile(rate, profile.rtt);
            for end in &ends {
                let mut a = end.clone();
                a.extend(["root".into(), "handle".into(), "1:".into()]);
                a.extend(tbf.args());
                run_owned("tc", &a).map_err(fail)?;
            }
            link.tbf = Some(tbf);
        }
        let delay = profile.one_way_delay();
        if try_netem && !delay.is_zero() {
            let limit = profile.bdp_bytes().unwrap_or(0) / 1000 + 1000;
            let mut ok = 0;
            for end in &ends {
                let mut a = end.clone();
                if link.tbf.is_some() {
                    a.extend(["parent".into(), "1:1".into(), "handle".into(), "10:".into()]);
                } else {
                    a.extend(["root".into(), "handle".into(), "10:".into()]);
                }
                a.extend([
                    "netem".into(),
                    "delay".into(),
                    format!("{}us", delay.as_micros()),
                    "limit".into(),
                    limit.to_string(),
                ]);
                match run_owned("tc", &a) {
                    Ok(_) => ok += 1,
                    Err(e) if ok == 0 => {
                        // no netem in this kernel: the caller delays in user space
                        let _ = e;
                        break;
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            if ok == 2 {
                link.netem_delay = Some(delay);
            }
        }
        Ok(link)
    }

    /// The namespace's name.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The root-namespace end's address (`10.213.k.1`).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    /// The server's address inside the namespace (`10.213.k.2`).
    pub fn server_ip(&self) -> Ipv4Addr {
        self.ns_ip
    }

    /// The tbf on each end (none when the profile has no rate).
    pub fn tbf(&self) -> Option<Tbf> {
        self.tbf
    }

    /// The one-way delay netem adds on each end, when the kernel has netem.
    pub fn kernel_delay(&self) -> Option<Duration> {
        self.netem_delay
    }

    /// `ip netns exec <ns> <program>`: a command that runs `program` inside the namespace.
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }
}

impl Drop for NetnsLink {
    fn drop(&mut self) {
        // deleting one end of a veth pair deletes both (and their qdiscs)
        if self.veth_created {
            let _ = run("ip", &["link", "del", &self.host_if]);
        }
        if self.ns_created {
            let _ = run("ip", &["netns", "del", &self.ns]);
        }
        if let Some(s) = &self.slot {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Reserves a free `10.213.k.0/30` (k in 0..=255): a `slot-k` file created exclusively under
/// [`SLOT_DIR`] holding our pid, and no address of `10.213.k.*` in this namespace.
fn reserve_slot(pid: u32, n: u32) -> Result<u8, DuetError> {
    std::fs::create_dir_all(SLOT_DIR).map_err(|e| err(format!("cannot create {SLOT_DIR}: {e}")))?;
    let used = run("ip", &["-o", "-4", "addr", "show"]).map_err(err)?;
    let start = pid.wrapping_mul(7).wrapping_add(n.wrapping_mul(13)) % 256;
    for i in 0..256u32 {
        let Ok(k) = u8::try_from((start + i) % 256) else {
            continue;
        };
        if used.contains(&format!(" 10.213.{k}.")) {
            continue;
        }
        let path = Path::new(SLOT_DIR).join(format!("slot-{k}"));
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path);
        if let Ok(mut f) = created {
            use std::io::Write;
            let _ = writeln!(f, "{pid}");
            return Ok(k);
        }
    }
    Err(err(
        "no free 10.213.k.0/30 subnet for a network namespace (256 in use)",
    ))
}

/// The shaped network of one run: the namespace (when netns), the relay (when relay, or for
/// the delay when the kernel has no netem), and what to tell the report.
#[derive(Debug)]
pub struct ShapedNet {
    profile: NetProfile,
    // the relay is dropped before the namespace
    relay: Option<UdpRelay>,
    relay_profile: Option<NetProfile>,
    netns: Option<NetnsLink>,
    /// Short form for the report's `shaping` field, e.g. `netns+tbf, relay delay`.
    pub shaping: String,
    /// One sentence for the report's `network_note`.
    pub note: String,
}

fn mbit(rate: u64) -> String {
    let m = rate as f64 / 1e6;
    if m >= 1000.0 {
        format!("{:.1} Gbit/s", m / 1e3)
    } else {
        format!("{m:.0} Mbit/s")
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

impl ShapedNet {
    /// Sets up the shaping of `profile` by `mode` (the relay starts later, in
    /// [`ShapedNet::client_target`], once the server's address is known).
    pub fn setup(profile: &NetProfile, mode: Shaping) -> Result<Self, DuetError> {
        let rate_text = profile
            .rate_bits_per_s
            .map_or("unlimited rate".to_string(), mbit);
        let mut s = Self {
            profile: profile.clone(),
            relay: None,
            relay_profile: None,
            netns: None,
            shaping: String::new(),
            note: String::new(),
        };
        let use_netns = match mode {
            Shaping::None => {
                s.shaping = "none".into();
                s.note = format!(
                    "loopback QUIC, no shaping (--shaping none: the {} profile, {rate_text}, {} RTT, is not emulated)",
                    profile.name,
                    ms(profile.rtt)
                );
                return Ok(s);
            }
            Shaping::Relay => false,
            Shaping::Netns => {
                netns_available()
                    .map_err(|why| err(format!("--shaping netns is unavailable: {why}")))?;
                true
            }
            Shaping::Auto => netns_available().is_ok(),
        };
        if !use_netns {
            s.relay_profile = Some(profile.clone());
            s.shaping = "relay".into();
            s.note = format!(
                "loopback QUIC through the user-space UDP relay: {rate_text}, {} RTT ({}){}",
                ms(profile.rtt),
                profile.name,
                if mode == Shaping::Auto {
                    " (auto: no network namespaces here)"
                } else {
                    ""
                }
            );
            return Ok(s);
        }
        let link = NetnsLink::create(profile, true)?;
        let mut parts = vec!["netns".to_string()];
        let mut note = format!(
            "QUIC over a veth pair into network namespace {} ({} -> {})",
            link.namespace(),
            link.host_ip(),
            link.server_ip()
        );
        match link.tbf() {
            Some(t) => {
                parts.push("tbf".into());
                note.push_str(&format!(
                    "; rate {rate_text} by kernel tc tbf on both ends (rate {} bit/s of Ethernet frames, burst {} B, limit {} B)",
                    t.rate_bits_per_s, t.burst_bytes, t.limit_bytes
                ));
            }
            None => note.push_str("; rate unshaped"),
        }
        let mut short = parts.join("+");
        if let Some(d) = link.kernel_delay() {
            short.push_str("+netem");
            note.push_str(&format!(
                "; delay {} each way by tc netem ({} RTT, {})",
                ms(d),
                ms(profile.rtt),
                profile.name
            ));
        } else if !profile.rtt.is_zero() {
            short.push_str(", relay delay");
            s.relay_profile = Some(NetProfile {
                name: format!("{} delay only", profile.name),
                rate_bits_per_s: None,
                rtt: profile.rtt,
            });
            note.push_str(&format!(
                "; delay {} RTT ({}) by the user-space UDP relay in delay-only mode (this kernel has no netem)",
                ms(profile.rtt),
                profile.name
            ));
        }
        s.shaping = short;
        s.note = note;
        s.netns = Some(link);
        Ok(s)
    }

    /// The profile being emulated.
    pub fn profile(&self) -> &NetProfile {
        &self.profile
    }

    /// The namespace, when the kernel path is in use.
    pub fn netns(&self) -> Option<&NetnsLink> {
        self.netns.as_ref()
    }

    /// Where the server listens: `10.213.k.2:0` in the namespace, else `127.0.0.1:0`.
    pub fn server_listen(&self) -> SocketAddr {
        let ip = self
            .netns
            .as_ref()
            .map_or(Ipv4Addr::LOCALHOST, NetnsLink::server_ip);
        SocketAddr::V4(SocketAddrV4::new(ip, 0))
    }

    /// A command running `program` where the server belongs (inside the namespace or here).
    pub fn server_command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(l) => l.command(program),
            None => Command::new(program),
        }
    }

    /// Where the client connects for a server at `server`: the relay (started now) when it is
    /// part of the shaping, else the server itself.
    pub fn client_target(&mut self, server: SocketAddr) -> Result<SocketAddr, DuetError> {
        let Some(p) = self.relay_profile.clone() else {
            return Ok(server);
        };
        if let Some(r) = &self.relay {
            return Ok(r.local_addr());
        }
        let r = UdpRelay::start(SocketAddr::from(([127, 0, 0, 1], 0)), server, p)?;
        let a = r.local_addr();
        self.relay = Some(r);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_sizes_follow_the_documented_formula() {
        // wan: 400 Mbit/s, 10 ms
        let t = Tbf::for_profile(400_000_000, Duration::from_millis(10));
        assert_eq!(t.rate_bits_per_s, 403_733_333);
        assert_eq!(t.burst_bytes, 65_536);
        // bdp of the Ethernet rate over 10 ms, plus the burst
        assert_eq!(t.limit_bytes, 403_733_333 * 10 / 8_000 + 65_536);
        // lan: 3 Gbit/s: one millisecond of the rate beats 64 KiB
        let t = Tbf::for_profile(3_000_000_000, Duration::from_millis(1));
        assert_eq!(t.rate_bits_per_s, 3_028_000_000);
        assert_eq!(t.burst_bytes, 378_500);
        assert_eq!(t.limit_bytes, 2 * 378_500);
    }

    #[test]
    fn owner_pids_are_read_from_our_names_only() {
        assert_eq!(owner_pid("duet-s-1234-0"), Some(1234));
        assert_eq!(owner_pid("dh1234x7"), Some(1234));
        assert_eq!(owner_pid("dn99x0"), Some(99));
        assert_eq!(owner_pid("duet-s-abc-0"), None);
        assert_eq!(owner_pid("dhcp0"), None);
        assert_eq!(owner_pid("eth0"), None);
        assert_eq!(owner_pid("dh12x"), None);
    }

    #[test]
    fn shaping_modes_parse() {
        assert_eq!("auto".parse::<Shaping>().unwrap(), Shaping::Auto);
        assert_eq!("none".parse::<Shaping>().unwrap(), Shaping::None);
        assert!("tc".parse::<Shaping>().is_err());
    }
}
