//! One test suite run over every channel kind: in-memory and loopback QUIC.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use duet_transport::quic::QuicConfig;
use duet_transport::{memory_session_pair, Channel, ChannelStats, Session, TransportError};
use std::time::Duration;

/// A fixed message pattern; returns (server stats, client stats) of sub-channel 0.
fn counters_pattern<S: Session>(server: &S, client: &S) -> (ChannelStats, ChannelStats) {
    std::thread::scope(|sc| {
        let hs = sc.spawn(|| {
            let mut ch = server.channel(0).unwrap();
            // flight 1: two messages, 10 + 24 bytes
            ch.send_bytes(&[7u8; 10]).unwrap();
            ch.send_u64s(&[1, 2, 3]).unwrap();
            ch.flush().unwrap();
            // receive 5 bytes
            assert_eq!(ch.recv_bytes().unwrap(), vec![9u8; 5]);
            // flight 2: an empty message
            ch.send_bytes(&[]).unwrap();
            ch.flush().unwrap();
            assert_eq!(ch.recv_u64s_exact(2).unwrap(), vec![u64::MAX, 0]);
            ch.stats()
        });
        let hc = sc.spawn(|| {
            let mut ch = client.channel(0).unwrap();
            assert_eq!(ch.recv_bytes().unwrap(), vec![7u8; 10]);
            assert_eq!(ch.recv_u64s().unwrap(), vec![1, 2, 3]);
            ch.send_bytes(&[9u8; 5]).unwrap();
            assert_eq!(ch.recv_bytes().unwrap(), Vec::<u8>::new());
            ch.send_u64s(&[u64::MAX, 0]).unwrap();
            ch.flush().unwrap();
            ch.stats()
        });
        (hs.join().unwrap(), hc.join().unwrap())
    })
}

fn check_counters(s: ChannelStats, c: ChannelStats) {
    let expect_server = ChannelStats {
        bytes_sent: 34,
        bytes_received: 21,
        messages_sent: 3,
        messages_received: 2,
        rounds: 2,
        rounds_received: 2,
    };
    let expect_client = ChannelStats {
        bytes_sent: 21,
        bytes_received: 34,
        messages_sent: 2,
        messages_received: 3,
        rounds: 2,
        rounds_received: 2,
    };
    assert_eq!(s, expect_server);
    assert_eq!(c, expect_client);
    assert_eq!(s.wire_bytes(), 55 + 8 * 5);
}

/// Several sub-channels used at once from different threads, with interleaved traffic.
fn concurrent_subchannels<S: Session>(server: &S, client: &S) {
    const K: u32 = 6;
    const ROUNDS: u64 = 50;
    std::thread::scope(|sc| {
        for id in 0..K {
            sc.spawn(move || {
                let mut ch = server.channel(id + 1).unwrap();
                for r in 0..ROUNDS {
                    let v: Vec<u64> = (0..(id as u64 * 1000 + r))
                        .map(|i| i ^ (id as u64))
                        .collect();
                    ch.send_u64s(&v).unwrap();
                    let back = ch.recv_u64s().unwrap();
                    assert_eq!(
                        back,
                        v.iter()
                            .map(|x| x.wrapping_add(id as u64))
                            .collect::<Vec<_>>()
                    );
                }
            });
            sc.spawn(move || {
                let mut ch = client.channel(id + 1).unwrap();
                for r in 0..ROUNDS {
                    let v = ch.recv_u64s().unwrap();
                    assert_eq!(
                        v.len() as u64,
                        id as u64 * 1000 + r,
                        "sub-channel {id} mixed up"
                    );
                    assert!(v
                        .iter()
                        .enumerate()
                        .all(|(i, &x)| x == (i as u64) ^ (id as u64)));
                    ch.send_u64s(
                        &v.iter()
                            .map(|x| x.wrapping_add(id as u64))
                            .collect::<Vec<_>>(),
                    )
                    .unwrap();
                }
            });
        }
    });
    let per = server.stats_by_channel();
    for id in 1..=K {
        let s = per.iter().find(|(i, _)| *i == id).unwrap().1;
        assert_eq!(s.messages_sent, ROUNDS);
        assert_eq!(s.rounds, ROUNDS);
    }
}

/// Garbage for typed receives gives errors, not panics.
fn garbage<S: Session>(server: &S, client: &S) {
    std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut ch = server.channel(100).unwrap();
            ch.send_bytes(&[0xff; 7]).unwrap(); // not u64-aligned
            ch.send_bytes(&[0xff; 3]).unwrap(); // not a bincode (u64, String)
            ch.send_msg(&(5u32, 6u32)).unwrap(); // trailing bytes for a u32
            ch.send_u64s(&[1, 2]).unwrap(); // wrong length
            ch.flush().unwrap();
            let _ = ch.recv_bytes();
        });
        let mut ch = client.channel(100).unwrap();
        assert!(matches!(
            ch.recv_u64s(),
            Err(TransportError::Malformed { .. })
        ));
        assert!(matches!(
            ch.recv_msg::<(u64, String)>(),
            Err(TransportError::Malformed { .. })
        ));
        assert!(matches!(
            ch.recv_msg::<u32>(),
            Err(TransportError::Malformed { .. })
        ));
        assert!(matches!(
            ch.recv_u64s_exact(3),
            Err(TransportError::LengthMismatch {
                expected: 3,
                got: 2,
                ..
            })
        ));
        ch.send_bytes(b"done").unwrap();
        ch.flush().unwrap();
    });
}

/// A peer that drops its end: the next receive is an error naming the peer, no hang.
fn peer_drop<S: Session>(server: &S, client: &S) {
    let ch = server.channel(200).unwrap();
    let mut cc = client.channel(200).unwrap();
    drop(ch);
    let err = cc.recv_bytes().unwrap_err();
    assert!(matches!(err, TransportError::PeerClosed { .. }), "{err}");
    assert!(err.to_string().contains(cc.peer()));
}

fn suite<S: Session>(server: S, client: S) {
    let (s, c) = counters_pattern(&server, &client);
    check_counters(s, c);
    concurrent_subchannels(&server, &client);
    garbage(&server, &client);
    peer_drop(&server, &client);
    // session totals are the sum of the sub-channels
    let sum = server
        .stats_by_channel()
        .into_iter()
        .fold(ChannelStats::default(), |a, (_, s)| a + s);
    assert_eq!(server.stats(), sum);
    // opening an id twice is refused
    assert!(server.channel(0).is_err());
}

#[test]
fn memory_suite() {
    let (s, c) = memory_session_pair();
    suite(s, c);
}

#[test]
fn quic_suite() {
    let (s, c) = common::quic_pair(QuicConfig::default());
    suite(s, c);
}

#[test]
fn typed_messages_roundtrip_over_quic() {
    let (s, c) = common::quic_pair(QuicConfig::default());
    let mut a = s.channel(0).unwrap();
    let mut b = c.channel(0).unwrap();
    let big: Vec<u64> = (0..3_000_000u64).collect(); // 24 MB, above the send buffer
    std::thread::scope(|sc| {
        sc.spawn(|| {
            a.send_msg(&("hello".to_string(), vec![1u32, 2, 3]))
                .unwrap();
            a.send_u64s(&big).unwrap();
            a.flush().unwrap();
        });
        let m: (String, Vec<u32>) = b.recv_msg().unwrap();
        assert_eq!(m, ("hello".to_string(), vec![1, 2, 3]));
        assert_eq!(b.recv_u64s().unwrap(), big);
    });
}

#[test]
fn oversize_frames_are_refused_before_allocation() {
    let cfg = QuicConfig {
        max_frame_bytes: 1 << 20,
        ..QuicConfig::default()
    };
    let (s, c) = common::quic_pair(cfg);
    let mut a = s.channel(0).unwrap();
    let mut b = c.channel(0).unwrap();
    a.send_bytes(&vec![0u8; (1 << 20) + 1]).unwrap();
    a.flush().unwrap();
    let err = b.recv_bytes().unwrap_err();
    assert!(
        matches!(err, TransportError::FrameTooLarge { len, limit, .. } if len == (1 << 20) + 1 && limit == 1 << 20),
        "{err}"
    );
    // in-memory channels enforce the same limit
    let (mut x, mut y) = duet_transport::memory_pair_with(Duration::from_secs(5), 16);
    x.send_bytes(&[0; 17]).unwrap();
    assert!(matches!(
        y.recv_bytes(),
        Err(TransportError::FrameTooLarge { .. })
    ));
}

#[test]
fn silent_peer_times_out() {
    let cfg = QuicConfig {
        recv_timeout: Duration::from_millis(500),
        ..QuicConfig::default()
    };
    let (s, c) = common::quic_pair(cfg);
    let _a = s.channel(0).unwrap();
    let mut b = c.channel(0).unwrap();
    let t = std::time::Instant::now();
    let err = b.recv_bytes().unwrap_err();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5));
    let (_x, mut y) = duet_transport::memory_pair_with(Duration::from_millis(100), 1 << 20);
    assert!(matches!(
        y.recv_bytes(),
        Err(TransportError::Timeout { .. })
    ));
}

#[test]
fn quic_channel_inside_an_async_runtime_is_an_error_not_a_panic() {
    let (s, _c) = common::quic_pair(QuicConfig::default());
    let mut ch = s.channel(0).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let r = rt.block_on(async { ch.recv_bytes() });
    assert!(matches!(r, Err(TransportError::Config(_))), "{r:?}");
}

#[test]
fn a_send_window_below_the_minimum_is_refused() {
    use duet_transport::quic::{Identity, QuicListener, QuicRuntime, MIN_SEND_WINDOW};
    let rt = QuicRuntime::new(1).unwrap();
    let (id, peer) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    for w in [0, MIN_SEND_WINDOW - 1] {
        let cfg = QuicConfig {
            send_window: w,
            ..QuicConfig::default()
        };
        let Err(err) = QuicListener::bind(
            &rt,
            "127.0.0.1:0".parse().unwrap(),
            &id,
            peer.fingerprint(),
            cfg,
        ) else {
            panic!("a send window of {w} bytes must be refused");
        };
        assert!(
            matches!(&err, TransportError::Config(m) if m.contains("send window")),
            "{err}"
        );
    }
    let cfg = QuicConfig {
        send_window: MIN_SEND_WINDOW,
        ..QuicConfig::default()
    };
    assert!(QuicListener::bind(
        &rt,
        "127.0.0.1:0".parse().unwrap(),
        &id,
        peer.fingerprint(),
        cfg
    )
    .is_ok());
}
