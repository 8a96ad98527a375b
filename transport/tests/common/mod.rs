#![allow(
    dead_code,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use duet_transport::quic::{connect, Identity, QuicConfig, QuicListener, QuicRuntime, QuicSession};
use duet_transport::Result;

/// A connected loopback QUIC pair (server, client) with the given config.
pub fn quic_pair(cfg: QuicConfig) -> (QuicSession, QuicSession) {
    let rt = QuicRuntime::new(2).unwrap();
    let (s_id, c_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let listener = QuicListener::bind(
        &rt,
        "127.0.0.1:0".parse().unwrap(),
        &s_id,
        c_id.fingerprint(),
        cfg.clone(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, client) = std::thread::scope(|s| {
        let h = s.spawn(|| listener.accept());
        let c = connect(&rt, addr, &c_id, s_id.fingerprint(), cfg);
        (h.join().unwrap(), c)
    });
    (server.unwrap(), client.unwrap())
}

pub fn quic_pair_result(
    cfg: QuicConfig,
    server_pins_right: bool,
    client_pins_right: bool,
) -> (Result<QuicSession>, Result<QuicSession>) {
    let rt = QuicRuntime::new(2).unwrap();
    let (s_id, c_id, other) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let server_pin = if server_pins_right {
        c_id.fingerprint()
    } else {
        other.fingerprint()
    };
    let client_pin = if client_pins_right {
        s_id.fingerprint()
    } else {
        other.fingerprint()
    };
    let listener = QuicListener::bind(
        &rt,
        "127.0.0.1:0".parse().unwrap(),
        &s_id,
        server_pin,
        cfg.clone(),
    )
    .unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| listener.accept());
        let c = connect(&rt, addr, &c_id, client_pin, cfg);
        (h.join().unwrap(), c)
    })
}
