//! A hostile or misconfigured peer: wrong certificates are refused with a reason the other
//! side prints, the server goes on to serve its pinned client, and an interrupted peer's
//! reason reaches the other side.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::{Channel, Session, TransportError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn listener(rt: &QuicRuntime, id: &Identity, pin: Fingerprint) -> QuicListener {
    QuicListener::bind(
        rt,
        "127.0.0.1:0".parse().unwrap(),
        id,
        pin,
        QuicConfig::default(),
    )
    .unwrap()
}

#[test]
fn a_stranger_learns_why_and_the_server_then_serves_its_pinned_client() {
    let rt = QuicRuntime::new(2).unwrap();
    let (sid, cid, stranger) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let l = listener(&rt, &sid, cid.fingerprint());
    let addr = l.local_addr().unwrap();
    let refusals = Arc::new(Mutex::new(Vec::<String>::new()));
    std::thread::scope(|s| {
        let seen = refusals.clone();
        let server = s.spawn(move || {
            let session = l
                .accept_pinned(&mut |e| seen.lock().unwrap().push(e.to_string()))
                .unwrap();
            let mut ch = session.channel(0).unwrap();
            let v: String = ch.recv_msg().unwrap();
            ch.send_msg(&format!("{v} back")).unwrap();
            ch.flush().unwrap();
            drop(ch);
            session.close().unwrap();
        });
        // three strangers, one after the other: each is told why
        for _ in 0..3 {
            let t = Instant::now();
            let err = connect(
                &rt,
                addr,
                &stranger,
                sid.fingerprint(),
                QuicConfig::default(),
            )
            .unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, TransportError::Refused { .. }), "{text}");
            assert!(
                text.contains("the server pins another client certificate")
                    && text.contains(&cid.fingerprint().to_string())
                    && text.contains(&stranger.fingerprint().to_string())
                    && text.contains("127.0.0.1"),
                "{text}"
            );
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        }
        // then the pinned client is served
        let session = connect(&rt, addr, &cid, sid.fingerprint(), QuicConfig::default()).unwrap();
        let mut ch = session.channel(0).unwrap();
        ch.send_msg(&"ping".to_string()).unwrap();
        ch.flush().unwrap();
        assert_eq!(ch.recv_msg::<String>().unwrap(), "ping back");
        drop(ch);
        session.close().unwrap();
        server.join().unwrap();
    });
    let refusals = refusals.lock().unwrap();
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| r.contains(&stranger.fingerprint().to_string())),
        "{refusals:?}"
    );
}

#[test]
fn accept_once_refuses_a_stranger_with_its_reason_and_returns() {
    let rt = QuicRuntime::new(2).unwrap();
    let (sid, cid, stranger) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let l = listener(&rt, &sid, cid.fingerprint());
    let addr = l.local_addr().unwrap();
    let (server, client) = std::thread::scope(|s| {
        let h = s.spawn(|| l.accept());
        let c = connect(
            &rt,
            addr,
            &stranger,
            sid.fingerprint(),
            QuicConfig::default(),
        );
        (h.join().unwrap(), c)
    });
    assert!(
        matches!(server, Err(TransportError::FingerprintMismatch { .. })),
        "{server:?}"
    );
    let err = client.unwrap_err();
    assert!(
        err.to_string()
            .contains("the server pins another client certificate"),
        "{err}"
    );
}

#[test]
fn a_server_the_client_does_not_pin_learns_why() {
    let rt = QuicRuntime::new(2).unwrap();
    let (sid, cid, other) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    let l = listener(&rt, &sid, cid.fingerprint());
    let addr = l.local_addr().unwrap();
    let (server, client) = std::thread::scope(|s| {
        let h = s.spawn(|| l.accept());
        let c = connect(&rt, addr, &cid, other.fingerprint(), QuicConfig::default());
        (h.join().unwrap(), c)
    });
    assert!(
        matches!(client, Err(TransportError::FingerprintMismatch { .. })),
        "{client:?}"
    );
    let err = server.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, TransportError::Refused { .. }), "{text}");
    assert!(
        text.contains("the client pins another server certificate")
            && text.contains(&sid.fingerprint().to_string()),
        "{text}"
    );
}

/// A peer that drops its session after an error (without the orderly close) tells the other
/// side, which prints the reason at once instead of waiting for a timeout.
#[test]
fn a_peer_that_drops_its_session_after_an_error_says_so() {
    let rt = QuicRuntime::new(2).unwrap();
    let (sid, cid) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let l = listener(&rt, &sid, cid.fingerprint());
    let addr = l.local_addr().unwrap();
    let (server, client) = std::thread::scope(|s| {
        let h = s.spawn(|| l.accept().unwrap());
        let c = connect(&rt, addr, &cid, sid.fingerprint(), QuicConfig::default()).unwrap();
        (h.join().unwrap(), c)
    });
    let mut ch = client.channel(0).unwrap();
    let _server_ch = server.channel(0).unwrap();
    drop(server); // an error on the server's side: the session is dropped, not closed
    let t = Instant::now();
    let err = ch.recv_bytes().unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(5));
    let text = err.to_string();
    assert!(matches!(err, TransportError::PeerEnded { .. }), "{text}");
    assert!(
        text.contains("127.0.0.1") && text.contains("stopped on an error"),
        "{text}"
    );
}

const CHILD_ENV: &str = "DUET_TEST_INTERRUPTED_PEER";

/// Run only as a child process by `an_interrupted_peer_names_its_reason`: connects, says
/// hello, then is "interrupted" (what the CLI's signal handler does) and exits.
#[test]
#[ignore = "child process of another test"]
fn interrupted_peer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.split(',');
    let addr = parts.next().unwrap().parse().unwrap();
    let fp: Fingerprint = parts.next().unwrap().parse().unwrap();
    let state = parts.next().unwrap();
    let rt = QuicRuntime::new(1).unwrap();
    let id = Identity::load_or_create(std::path::Path::new(state)).unwrap();
    let session = connect(&rt, addr, &id, fp, QuicConfig::default()).unwrap();
    let mut ch = session.channel(0).unwrap();
    ch.send_bytes(b"hello").unwrap();
    ch.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let told = duet_transport::quic::interrupt_all(
        "the peer was interrupted (SIGINT)",
        Duration::from_secs(1),
    );
    assert_eq!(told, 1);
    // calls on the closed connection fail at once, naming the peer
    let err = ch.recv_bytes().unwrap_err();
    assert!(matches!(err, TransportError::ClosedLocally { .. }), "{err}");
    std::process::exit(0);
}

#[test]
fn an_interrupted_peer_names_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let child_id = Identity::load_or_create(dir.path()).unwrap();
    let rt = QuicRuntime::new(1).unwrap();
    let server_id = Identity::generate().unwrap();
    let l = listener(&rt, &server_id, child_id.fingerprint());
    let spec = format!(
        "{},{},{}",
        l.local_addr().unwrap(),
        server_id.fingerprint(),
        dir.path().display()
    );
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "interrupted_peer_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, spec)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let session = l.accept().unwrap();
    let mut ch = session.channel(0).unwrap();
    assert_eq!(ch.recv_bytes().unwrap(), b"hello");
    let t = Instant::now();
    let err = ch.recv_bytes().unwrap_err();
    let waited = t.elapsed();
    assert!(child.wait().unwrap().success());
    let text = err.to_string();
    assert!(matches!(err, TransportError::PeerEnded { .. }), "{text}");
    assert!(
        text.contains("the peer was interrupted (SIGINT)") && text.contains("127.0.0.1"),
        "{text}"
    );
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
}
