//! QUIC transport: quinn 0.11 + rustls 0.23 (ring provider), mutual authentication by pinned
//! self-signed certificates, one unidirectional QUIC stream each way per sub-channel.
//!
//! A background tokio runtime ([`QuicRuntime`]) drives the connection; channels are blocking
//! and may be used from any thread that is not a runtime thread, one sub-channel per thread at
//! a time. After the TLS handshake both sides exchange a hello on a reserved sub-channel
//! (wire version and role), so a refused certificate or an incompatible peer is reported by
//! [`QuicListener::accept`] / [`connect`] rather than at the first protocol message.
//!
//! Security: TLS 1.3 only; each side checks the SHA-256 fingerprint of the peer's certificate
//! against its pin and the handshake signature against that certificate's key (see `verify`).

mod channel;
mod identity;
mod live;
mod verify;

pub use channel::QuicChannel;
use channel::RecvState;
pub use identity::{Fingerprint, Identity};
pub use live::{interrupt_all, on_connection_lost};

use crate::wire::{parse_stream_header, stream_header, STREAM_HEADER_BYTES, STREAM_MAGIC};
use crate::{
    peer_text_max, Channel, ChannelStats, Counters, Result, Role, Session, TransportError,
};
use live::Registration;
use quinn::{RecvStream, VarInt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use verify::{Pin, PinnedVerifier};

/// ALPN and hello version of the Duet wire protocol.
const ALPN: &[u8] = b"duet/1";
const WIRE_VERSION: u32 = 1;
/// Sub-channel id reserved for the session hello.
const HELLO_CHANNEL: u32 = u32::MAX;

/// Application close codes (QUIC `CONNECTION_CLOSE`, type 0x1d), each with a reason string.
/// 0: the orderly end of a session.
const CLOSE_DONE: u32 = 0;
/// The session was dropped after an error on this side.
const CLOSE_ABORTED: u32 = 1;
/// The connection is refused (a certificate that is not the pinned one, an incompatible
/// hello, a listener that stopped); the peer reports [`TransportError::Refused`].
const CLOSE_REFUSED: u32 = 2;
/// Most characters of a peer's close reason shown (a refusal names two fingerprints; a
/// close frame holds at most about a thousand bytes anyway).
const CLOSE_REASON_MAX_CHARS: usize = 400;
/// Stream stop code of a sub-channel whose receive side failed (a refused frame, a timeout).
pub(crate) const STOP_FAILED: u32 = 3;

/// Most TLS handshakes [`QuicListener::accept_pinned`] runs at once; further connection
/// attempts are refused at once until one ends, so stalled handshakes cannot pile up.
pub const MAX_PENDING_HANDSHAKES: usize = 32;

/// Settings of a QUIC session.
#[derive(Clone, Debug)]
pub struct QuicConfig {
    /// The connection ends when nothing at all arrives for this long (keep-alives are sent at a
    /// quarter of it, so only a dead or unreachable peer trips it). Default 60 s.
    pub idle_timeout: Duration,
    /// Longest wait for one message (including the wait for the peer to compute it).
    /// Default 10 minutes.
    pub recv_timeout: Duration,
    /// Largest accepted message payload of each sub-channel (changeable per channel with
    /// [`Channel::set_max_frame`]); larger announced frames are refused before any
    /// allocation. Default [`crate::DEFAULT_MAX_FRAME_BYTES`] (256 MiB).
    pub max_frame_bytes: u64,
    /// Per-stream flow-control window. Default 64 MiB.
    pub stream_window: u32,
    /// Connection flow-control window (what the peer may send us unread). Default 256 MiB.
    pub connection_window: u32,
    /// Most bytes this end keeps between its oldest unacknowledged byte and its write head
    /// (quinn's `send_window`). Default 3 MiB.
    ///
    /// This bounds the data in flight, and so the holes a burst of losses can leave in the
    /// peer's reassembly buffer: quinn ends the connection ("too many gaps in stream buffer")
    /// when one stream's buffer holds more than 1 024 separate spans. With the old 64 MiB a
    /// slow-start overshoot into a tail-dropping 400 Mbit/s queue did exactly that; 3 MiB of
    /// full-size packets is about 2 100 datagrams, so even a loss of every second one leaves
    /// about 1 050 holes, and realistic drop patterns far fewer. The price is a ceiling on
    /// goodput of about `send_window / (RTT + recovery)`: measured through the namespace
    /// harness, wan (400 Mbit/s, 10 ms) gives 350-378 Mbit/s and wan-slow (100 Mbit/s, 80 ms)
    /// 95.8 Mbit/s, as with 64 MiB, where 2 MiB cost wan-slow 5-15%. Raise it for long fat
    /// links (e.g. 16 MiB for 1 Gbit/s at 100 ms).
    pub send_window: u32,
    /// Upper bound for path-MTU discovery (UDP payload). Default 1 452, the largest payload
    /// that fits a 1 500-byte Ethernet MTU over IPv4 and IPv6; raise it for jumbo-frame links.
    pub max_udp_payload: u16,
}

/// Smallest accepted [`QuicConfig::send_window`] (64 KiB).
pub const MIN_SEND_WINDOW: u32 = 64 << 10;

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(60),
            recv_timeout: Duration::from_secs(600),
            max_frame_bytes: crate::DEFAULT_MAX_FRAME_BYTES,
            stream_window: 64 << 20,
            connection_window: 256 << 20,
            send_window: 3 << 20,
            max_udp_payload: 1452,
        }
    }
}

impl QuicConfig {
    fn transport(&self) -> Result<quinn::TransportConfig> {
        let mut t = quinn::TransportConfig::default();
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout)
            .map_err(|e| TransportError::Config(format!("idle timeout: {e}")))?;
        t.max_idle_timeout(Some(idle));
        t.keep_alive_interval(Some(self.idle_timeout / 4));
        t.stream_receive_window(VarInt::from_u32(self.stream_window));
        t.receive_window(VarInt::from_u32(self.connection_window));
        if self.send_window < MIN_SEND_WINDOW {
            // a window below a few datagrams would stall every large message
            return Err(TransportError::Config(format!(
                "send window of {} bytes: at least {MIN_SEND_WINDOW} bytes",
                self.send_window
            )));
        }
        t.send_window(u64::from(self.send_window));
        t.max_concurrent_uni_streams(VarInt::from_u32(4096));
        t.max_concurrent_bidi_streams(VarInt::from_u32(0));
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(self.max_udp_payload);
        t.mtu_discovery_config(Some(mtu));
        Ok(t)
    }

    fn endpoint(&self) -> Result<quinn::EndpointConfig> {
        let mut e = quinn::EndpointConfig::default();
        e.max_udp_payload_size(self.max_udp_payload.max(1200))
            .map_err(|e| TransportError::Config(format!("max UDP payload: {e}")))?;
        Ok(e)
    }
}

/// The background tokio runtime that drives QUIC connections. Cheap to clone; one per process
/// is plenty (both ends of `duet demo` share one).
#[derive(Clone, Debug)]
pub struct QuicRuntime {
    rt: Arc<tokio::runtime::Runtime>,
}

impl QuicRuntime {
    /// A runtime with `threads` worker threads (at least 1).
    pub fn new(threads: usize) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("duet-quic")
            .enable_all()
            .build()?;
        Ok(Self { rt: Arc::new(rt) })
    }

    /// The runtime Duet's binaries use: one worker thread. Measured on loopback (2 idle cores,
    /// `duet bench transport`, medians of per-run medians): 8-byte round trip 105-137 us with
    /// one worker against 147 us with two (a second worker adds a cross-thread wake-up per
    /// packet); bulk throughput 4.3 Gbit/s against 4.9 Gbit/s. One worker also leaves the
    /// cores to the protocols' rayon pool.
    pub fn recommended() -> Result<Self> {
        Self::new(1)
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.rt.handle().clone()
    }
}

/// How errors name the peer: its socket address.
#[derive(Clone, Debug)]
pub(crate) struct PeerName(pub(crate) String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> TransportError {
    TransportError::Config(format!("TLS configuration: {e}"))
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Hello {
    magic: [u8; 4],
    version: u32,
    role: Role,
}

/// A listening server endpoint.
pub struct QuicListener {
    rt: QuicRuntime,
    endpoint: quinn::Endpoint,
    expected: Fingerprint,
    config: QuicConfig,
    _live: Registration,
}

impl std::fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicListener")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl QuicListener {
    /// Binds `addr` (port 0 picks a free port) and accepts only the client whose certificate
    /// has fingerprint `peer`.
    pub fn bind(
        rt: &QuicRuntime,
        addr: SocketAddr,
        identity: &Identity,
        peer: Fingerprint,
        config: QuicConfig,
    ) -> Result<Self> {
        let provider = provider();
        let (verifier, _) = PinnedVerifier::new(peer, Pin::Deferred, provider.clone());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![identity.cert()], identity.key_der())
            .map_err(tls_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(Arc::new(config.transport()?));
        let socket = std::net::UdpSocket::bind(addr)
            .map_err(|e| TransportError::Config(format!("cannot bind {addr}: {e}")))?;
        // 8 MiB socket buffers (the kernel caps them at rmem_max/wmem_max): a busy receiver
        // must not drop datagrams on a long fat path (measured through the relay at 400 Mbit/s)
        crate::relay::enlarge_buffers(&[&socket]);
        let _guard = rt.rt.enter();
        let endpoint = quinn::Endpoint::new(
            config.endpoint()?,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        let _live = Registration::new(&endpoint);
        Ok(Self {
            rt: rt.clone(),
            endpoint,
            expected: peer,
            config,
            _live,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.endpoint.local_addr()?)
    }

    /// Stops listening: a pending or later [`QuicListener::accept`] returns an error instead
    /// of waiting for a client (for a caller whose own connection attempt failed).
    pub fn close(&self) {
        self.endpoint.close(
            VarInt::from_u32(CLOSE_REFUSED),
            b"the server stopped listening",
        );
    }

    /// Takes the first connection attempt, completes its handshake and hello, and returns the
    /// session. A client with another certificate is refused with an application close whose
    /// reason it prints ("the server pins another client certificate (expected ..., seen
    /// ...)"), and this side gets [`TransportError::FingerprintMismatch`]. For a server that
    /// must outlast strangers, see [`QuicListener::accept_pinned`].
    pub fn accept(&self) -> Result<QuicSession> {
        let endpoint = self.endpoint.clone();
        let expected = self.expected;
        let conn = block_on(&self.rt.handle(), async move {
            let incoming = endpoint.accept().await.ok_or_else(listener_closed)?;
            let res = handshake(incoming, expected).await;
            if res.is_err() {
                // the caller may end the process next: give the refusal's close time to leave
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
            }
            res
        })??;
        self.start(conn)
    }

    /// Accepts until the pinned client has completed its handshake and hello, and returns its
    /// session. Every other attempt (another certificate, a failed handshake, an incompatible
    /// hello) is refused with its reason sent to it, reported to `on_refused`, and the
    /// listener goes on. Handshakes run concurrently (at most [`MAX_PENDING_HANDSHAKES`]), so
    /// a stalled one does not hold up the pinned client. Ends with an error only when the
    /// listener is closed (e.g. by [`interrupt_all`]).
    pub fn accept_pinned(
        &self,
        on_refused: &mut dyn FnMut(&TransportError),
    ) -> Result<QuicSession> {
        loop {
            let conn = block_on(&self.rt.handle(), self.next_pinned(&mut *on_refused))??;
            match self.start(conn) {
                Ok(session) => return Ok(session),
                Err(e) => on_refused(&e),
            }
        }
    }

    /// The next connection whose handshake succeeds with the pinned certificate.
    async fn next_pinned(
        &self,
        on_refused: &mut dyn FnMut(&TransportError),
    ) -> Result<quinn::Connection> {
        let mut pending = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                incoming = self.endpoint.accept() => {
                    let incoming = incoming.ok_or_else(listener_closed)?;
                    if pending.len() >= MAX_PENDING_HANDSHAKES {
                        let peer = incoming.remote_address().to_string();
                        incoming.refuse();
                        on_refused(&TransportError::ConnectionLost {
                            peer,
                            reason: format!(
                                "refused: {MAX_PENDING_HANDSHAKES} handshakes already under way"
                            ),
                        });
                        continue;
                    }
                    pending.spawn(handshake(incoming, self.expected));
                }
                Some(done) = pending.join_next(), if !pending.is_empty() => match done {
                    Ok(Ok(conn)) => return Ok(conn),
                    Ok(Err(e)) => on_refused(&e),
                    Err(e) => on_refused(&TransportError::Config(format!(
                        "a handshake task failed: {e}"
                    ))),
                },
            }
        }
    }

    fn start(&self, conn: quinn::Connection) -> Result<QuicSession> {
        QuicSession::start(
            self.rt.clone(),
            self.endpoint.clone(),
            conn,
            Role::Server,
            &self.config,
            None,
        )
    }
}

fn listener_closed() -> TransportError {
    TransportError::Config("the listening endpoint was closed".into())
}

/// The fingerprint of the certificate the peer presented in the handshake.
fn peer_fingerprint(conn: &quinn::Connection) -> Option<Fingerprint> {
    let any = conn.peer_identity()?;
    let certs = any
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    certs.first().map(|c| Fingerprint::of_der(c))
}

/// The server's handshake with one connection attempt, then its pin check: a certificate
/// other than the pinned one is refused with an application close that says why, before
/// anything else happens on the connection.
async fn handshake(incoming: quinn::Incoming, expected: Fingerprint) -> Result<quinn::Connection> {
    let peer = PeerName(incoming.remote_address().to_string());
    let connecting = incoming
        .accept()
        .map_err(|e| TransportError::ConnectionLost {
            peer: peer.0.clone(),
            reason: e.to_string(),
        })?;
    let conn = connecting
        .await
        .map_err(|e| map_connection_error(e, &peer))?;
    match peer_fingerprint(&conn) {
        Some(seen) if seen == expected => Ok(conn),
        seen => {
            let seen = seen.map_or_else(|| "no certificate".to_string(), |s| s.to_string());
            let reason = format!(
                "the server pins another client certificate (expected {expected}, seen {seen})"
            );
            conn.close(VarInt::from_u32(CLOSE_REFUSED), reason.as_bytes());
            Err(TransportError::FingerprintMismatch {
                peer: peer.0,
                expected: expected.to_string(),
                seen,
            })
        }
    }
}

fn pin_error(
    seen: &Mutex<Option<Fingerprint>>,
    expected: Fingerprint,
    remote: SocketAddr,
    e: quinn::ConnectionError,
) -> TransportError {
    let seen = seen.lock().ok().and_then(|s| *s);
    match seen {
        Some(s) if s != expected => TransportError::FingerprintMismatch {
            peer: remote.to_string(),
            expected: expected.to_string(),
            seen: s.to_string(),
        },
        _ => map_connection_error(e, &PeerName(remote.to_string())),
    }
}

/// Connects to a server at `addr` whose certificate has fingerprint `peer`, authenticating
/// with `identity`. Returns after the handshake and the hello.
pub fn connect(
    rt: &QuicRuntime,
    addr: SocketAddr,
    identity: &Identity,
    peer: Fingerprint,
    config: QuicConfig,
) -> Result<QuicSession> {
    let provider = provider();
    let (verifier, seen) = PinnedVerifier::new(peer, Pin::InHandshake, provider.clone());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![identity.cert()], identity.key_der())
        .map_err(tls_err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(config.transport()?));
    let local: SocketAddr = if addr.is_ipv6() {
        SocketAddr::from(([0u16; 8], 0))
    } else {
        SocketAddr::from(([0u8; 4], 0))
    };
    let socket = std::net::UdpSocket::bind(local)?;
    crate::relay::enlarge_buffers(&[&socket]);
    let endpoint = {
        let _guard = rt.rt.enter();
        quinn::Endpoint::new(
            config.endpoint()?,
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?
    };
    let live = Registration::new(&endpoint);
    let conn = block_on(&rt.handle(), async {
        let connecting = endpoint
            .connect_with(client, addr, "duet")
            .map_err(|e| TransportError::Config(format!("cannot connect to {addr}: {e}")))?;
        connecting
            .await
            .map_err(|e| pin_error(&seen, peer, addr, e))
    })??;
    QuicSession::start(
        rt.clone(),
        endpoint,
        conn,
        Role::Client,
        &config,
        Some(live),
    )
}

enum Slot {
    Arrived(RecvStream),
    Waiting(oneshot::Sender<RecvStream>),
}

type Incoming = Arc<Mutex<HashMap<u32, Slot>>>;

/// An authenticated QUIC connection to the peer, handing out sub-channels.
pub struct QuicSession {
    rt: QuicRuntime,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    incoming: Incoming,
    opened: Mutex<Vec<(u32, Arc<Counters>)>>,
    peer: PeerName,
    config: QuicConfig,
    role: Role,
    closed: bool,
    _live: Registration,
}

impl Drop for QuicSession {
    /// A session dropped without [`QuicSession::close`] (an error on this side) tells the peer
    /// at once, so its next receive fails with `PeerClosed` instead of waiting for the idle
    /// timeout.
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        self.abort(
            CLOSE_ABORTED,
            "its side stopped on an error (its own output says which)",
        );
    }
}

impl std::fmt::Debug for QuicSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicSession")
            .field("peer", &self.peer.0)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl QuicSession {
    fn start(
        rt: QuicRuntime,
        endpoint: quinn::Endpoint,
        conn: quinn::Connection,
        role: Role,
        config: &QuicConfig,
        live: Option<Registration>,
    ) -> Result<Self> {
        let peer = PeerName(conn.remote_address().to_string());
        let incoming: Incoming = Arc::new(Mutex::new(HashMap::new()));
        rt.rt.spawn(accept_streams(conn.clone(), incoming.clone()));
        rt.rt.spawn(live::watch(conn.clone(), peer.clone()));
        let _live = live.unwrap_or_else(|| Registration::new(&endpoint));
        let mut session = Self {
            rt,
            endpoint,
            conn,
            incoming,
            opened: Mutex::new(Vec::new()),
            peer,
            config: config.clone(),
            role,
            closed: false,
            _live,
        };
        if let Err((e, why)) = session.hello() {
            if let Some(why) = why {
                session.abort(CLOSE_REFUSED, &why);
            }
            return Err(e);
        }
        Ok(session)
    }

    /// Exchanges the hellos; on an incompatible peer, also the reason to send it.
    fn hello(&self) -> std::result::Result<(), (TransportError, Option<String>)> {
        let mut ch = self.open(HELLO_CHANNEL, false).map_err(|e| (e, None))?;
        let theirs: Hello = ch
            .exchange_msg(&Hello {
                magic: STREAM_MAGIC,
                version: WIRE_VERSION,
                role: self.role,
            })
            .map_err(|e| (e, None))?;
        let incompatible = |reason: String, to_peer: String| {
            (
                TransportError::Incompatible {
                    peer: self.peer.0.clone(),
                    reason,
                },
                Some(to_peer),
            )
        };
        if theirs.magic != STREAM_MAGIC || theirs.version != WIRE_VERSION {
            return Err(incompatible(
                format!("wire version {} (we speak {WIRE_VERSION})", theirs.version),
                format!(
                    "it speaks wire version {WIRE_VERSION}, this side {}",
                    theirs.version
                ),
            ));
        }
        if theirs.role != self.role.peer() {
            return Err(incompatible(
                format!(
                    "it is also a {}; one side must serve and the other connect",
                    theirs.role
                ),
                format!(
                    "both sides are a {}; one side must serve and the other connect",
                    theirs.role
                ),
            ));
        }
        Ok(())
    }

    /// Closes the connection at once with `code` and a reason the peer prints, and gives the
    /// close a moment to leave.
    fn abort(&mut self, code: u32, reason: &str) {
        self.closed = true;
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
        let endpoint = self.endpoint.clone();
        let _ = block_on(&self.rt.handle(), async move {
            let _ = tokio::time::timeout(Duration::from_millis(300), endpoint.wait_idle()).await;
        });
    }

    /// This side's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// Orderly end of the session, after which neither side loses data in flight:
    /// the client says goodbye, the server answers once it has read that goodbye, and the
    /// client closes the connection once it has read the answer. The server waits (up to 5 s)
    /// for that close. A goodbye means "I have received everything I need".
    pub fn close(mut self) -> Result<()> {
        self.closed = true;
        let bye = self.open(HELLO_CHANNEL - 1, false).and_then(|mut ch| {
            match self.role {
                Role::Client => {
                    ch.send_msg(&0u8)?;
                    ch.flush()?;
                    let _: u8 = ch.recv_msg()?;
                }
                Role::Server => {
                    let _: u8 = ch.recv_msg()?;
                    ch.send_msg(&0u8)?;
                    ch.flush()?;
                }
            }
            Ok(())
        });
        let conn = self.conn.clone();
        let endpoint = self.endpoint.clone();
        let wait_for_client = self.role == Role::Server && bye.is_ok();
        let _ = block_on(&self.rt.handle(), async move {
            if wait_for_client {
                let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            }
            conn.close(VarInt::from_u32(CLOSE_DONE), b"done");
            let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        });
        bye
    }

    fn open(&self, id: u32, count: bool) -> Result<QuicChannel> {
        let handle = self.rt.handle();
        let peer = self.peer.clone();
        let conn = self.conn.clone();
        let incoming = self.incoming.clone();
        let (send, recv) = block_on(&handle, async {
            let mut send = conn
                .open_uni()
                .await
                .map_err(|e| map_connection_error(e, &peer))?;
            send.write_all(&stream_header(id))
                .await
                .map_err(|e| map_write_error(e, &peer))?;
            let mut map = incoming.lock().map_err(|_| poisoned())?;
            let recv = match map.remove(&id) {
                Some(Slot::Arrived(r)) => RecvState::Ready(r),
                Some(waiting @ Slot::Waiting(_)) => {
                    // keep the first opener's claim intact
                    map.insert(id, waiting);
                    return Err(TransportError::Config(format!(
                        "sub-channel {id} opened twice"
                    )));
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    map.insert(id, Slot::Waiting(tx));
                    RecvState::Pending(rx)
                }
            };
            Ok((send, recv))
        })??;
        let counters = Arc::new(Counters::default());
        if count {
            self.opened
                .lock()
                .map_err(|_| poisoned())?
                .push((id, counters.clone()));
        }
        Ok(QuicChannel {
            id,
            send,
            recv,
            handle,
            counters,
            peer: self.peer.clone(),
            max_frame: self.config.max_frame_bytes,
            recv_timeout: self.config.recv_timeout,
            out: Vec::new(),
            conn: self.conn.clone(),
        })
    }
}

impl Session for QuicSession {
    type Chan = QuicChannel;

    /// Opens sub-channel `id` (ids `u32::MAX - 1` and `u32::MAX` are reserved for the session).
    fn channel(&self, id: u32) -> Result<QuicChannel> {
        if id >= HELLO_CHANNEL - 1 {
            return Err(TransportError::Config(format!(
                "sub-channel id {id} is reserved"
            )));
        }
        if self
            .opened
            .lock()
            .map_err(|_| poisoned())?
            .iter()
            .any(|(i, _)| *i == id)
        {
            return Err(TransportError::Config(format!(
                "sub-channel {id} opened twice"
            )));
        }
        self.open(id, true)
    }

    fn stats(&self) -> ChannelStats {
        self.stats_by_channel()
            .into_iter()
            .fold(ChannelStats::default(), |a, (_, s)| a + s)
    }

    fn stats_by_channel(&self) -> Vec<(u32, ChannelStats)> {
        match self.opened.lock() {
            Ok(o) => o.iter().map(|(i, c)| (*i, c.snapshot())).collect(),
            Err(_) => Vec::new(),
        }
    }

    fn peer(&self) -> &str {
        &self.peer.0
    }
}

/// Runs a future to completion on the transport runtime from a plain (non-async) thread.
/// Called from inside an async runtime this would panic in tokio, so it is an error instead.
pub(crate) fn block_on<F: std::future::Future>(
    handle: &tokio::runtime::Handle,
    fut: F,
) -> Result<F::Output> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(TransportError::Config(
            "a blocking Duet channel was used from inside an async runtime; call it from a \
             plain thread (e.g. inside tokio::task::spawn_blocking)"
                .into(),
        ));
    }
    Ok(handle.block_on(fut))
}

fn poisoned() -> TransportError {
    TransportError::Config("QUIC session state poisoned by a panicked thread".into())
}

/// Accepts the peer's streams and routes each to the sub-channel named in its header.
/// Streams with a bad header are dropped (and the peer's channel then fails on its side).
async fn accept_streams(conn: quinn::Connection, incoming: Incoming) {
    while let Ok(mut recv) = conn.accept_uni().await {
        let incoming = incoming.clone();
        tokio::spawn(async move {
            let mut header = [0u8; STREAM_HEADER_BYTES];
            let ok = tokio::time::timeout(Duration::from_secs(30), recv.read_exact(&mut header))
                .await
                .is_ok_and(|r| r.is_ok());
            let Some(id) = parse_stream_header(&header).filter(|_| ok) else {
                let _ = recv.stop(VarInt::from_u32(1));
                return;
            };
            let Ok(mut map) = incoming.lock() else { return };
            match map.remove(&id) {
                Some(Slot::Waiting(tx)) => {
                    let _ = tx.send(recv);
                }
                Some(Slot::Arrived(old)) => {
                    // The peer opened the same sub-channel twice: keep the first.
                    map.insert(id, Slot::Arrived(old));
                    let _ = recv.stop(VarInt::from_u32(2));
                }
                None => {
                    map.insert(id, Slot::Arrived(recv));
                }
            }
        });
    }
    // Connection over: wake every waiter with an error by dropping the senders.
    if let Ok(mut map) = incoming.lock() {
        map.retain(|_, s| matches!(s, Slot::Arrived(_)));
    }
}

pub(crate) fn map_connection_error(e: quinn::ConnectionError, peer: &PeerName) -> TransportError {
    use quinn::ConnectionError as E;
    let peer = peer.0.clone();
    match e {
        E::ApplicationClosed(c) => {
            let reason = peer_text_max(&c.reason, CLOSE_REASON_MAX_CHARS);
            match u32::try_from(c.error_code.into_inner()) {
                Ok(CLOSE_DONE) => TransportError::PeerClosed { peer },
                Ok(CLOSE_REFUSED) => TransportError::Refused { peer, reason },
                Ok(code) if reason.is_empty() => TransportError::PeerEnded {
                    peer,
                    reason: format!("close code {code}"),
                },
                _ => TransportError::PeerEnded { peer, reason },
            }
        }
        E::ConnectionClosed(c) => {
            let code = u64::from(c.error_code);
            let text = peer_text_max(&c.reason, CLOSE_REASON_MAX_CHARS);
            // rustls prefixes a verifier's own message
            let text = text
                .strip_prefix("unexpected error: ")
                .map(str::to_string)
                .unwrap_or(text);
            if (0x100..0x200).contains(&code) {
                // a TLS alert: the peer refused the handshake
                TransportError::Refused {
                    peer,
                    reason: if text.is_empty() {
                        c.error_code.to_string()
                    } else {
                        text
                    },
                }
            } else {
                TransportError::ConnectionLost {
                    peer,
                    reason: format!("the peer closed it: {} {text}", c.error_code)
                        .trim_end()
                        .to_string(),
                }
            }
        }
        E::LocallyClosed => TransportError::ClosedLocally { peer },
        E::TimedOut => TransportError::ConnectionLost {
            peer,
            reason: "idle timeout: nothing arrived from the peer".into(),
        },
        E::Reset => TransportError::ConnectionLost {
            peer,
            reason: "the peer reset the connection (it restarted or lost its state)".into(),
        },
        other => TransportError::ConnectionLost {
            peer,
            reason: other.to_string(),
        },
    }
}

pub(crate) fn map_read_error(e: quinn::ReadExactError, peer: &PeerName) -> TransportError {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => TransportError::PeerClosed {
            peer: peer.0.clone(),
        },
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
            map_connection_error(c, peer)
        }
        quinn::ReadExactError::ReadError(other) => TransportError::ConnectionLost {
            peer: peer.0.clone(),
            reason: other.to_string(),
        },
    }
}

pub(crate) fn map_write_error(e: quinn::WriteError, peer: &PeerName) -> TransportError {
    match e {
        quinn::WriteError::ConnectionLost(c) => map_connection_error(c, peer),
        other => TransportError::ConnectionLost {
            peer: peer.0.clone(),
            reason: other.to_string(),
        },
    }
}
