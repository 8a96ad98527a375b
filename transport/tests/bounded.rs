//! Bounded receives: an announced length above the receiver's bound or the channel's frame
//! limit is refused before anything of that size is allocated, on QUIC and in memory, and a
//! control message's declared lengths cannot make the decoder allocate.
//!
//! A counting allocator records the largest single allocation made on the receiving thread
//! while a receive runs (QUIC's own buffers live on the runtime's threads).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unsafe_code
)]

mod common;

use duet_transport::quic::QuicConfig;
use duet_transport::{wire, Channel, Session, TransportError, MAX_CONTROL_MESSAGE_BYTES};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes in a
// thread-local cell (const-initialized, so recording never allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(layout.size())));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(new_size)));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The largest single allocation on this thread while `f` runs.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

const MIB: usize = 1 << 20;

#[test]
fn quic_refuses_a_frame_above_the_channel_limit_without_allocating_it() {
    let (s, c) = common::quic_pair(QuicConfig::default());
    let mut a = s.channel(0).unwrap();
    let mut b = c.channel(0).unwrap();
    b.set_max_frame(MIB as u64);
    assert_eq!(b.max_frame(), MIB as u64);
    std::thread::scope(|sc| {
        sc.spawn(|| {
            // 64 MiB announced and sent; the receiver must not take it
            let _ = a.send_bytes(&vec![7u8; 64 * MIB]);
            let _ = a.flush();
        });
        let (r, largest) = largest_allocation(|| b.recv_bytes());
        let err = r.unwrap_err();
        assert!(
            matches!(err, TransportError::FrameTooLarge { len, limit, .. }
                if len == 64 * MIB as u64 && limit == MIB as u64),
            "{err}"
        );
        assert!(largest < 256 << 10, "largest allocation {largest} bytes");
        // the sub-channel is failed now: no further reads of that stream
        assert!(b.recv_bytes().is_err());
    });
}

#[test]
fn quic_bounded_receives_skip_a_long_message_and_stay_aligned() {
    let (s, c) = common::quic_pair(QuicConfig::default());
    let mut a = s.channel(0).unwrap();
    let mut b = c.channel(0).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            a.send_bytes(&vec![1u8; 16 * MIB]).unwrap();
            a.send_u64s(&vec![2u64; 2 * MIB]).unwrap();
            a.send_u64s(&[3, 4, 5]).unwrap();
            a.send_bytes(b"tail").unwrap();
            a.flush().unwrap();
        });
        let (r, largest) = largest_allocation(|| b.recv_bytes_max(1000));
        assert!(
            matches!(r, Err(TransportError::TooLong { len, max: 1000, .. }) if len == 16 * MIB as u64),
            "{r:?}"
        );
        assert!(largest < 256 << 10, "largest allocation {largest} bytes");
        let (r, largest) = largest_allocation(|| b.recv_u64s_exact(3));
        assert!(
            matches!(r, Err(TransportError::LengthMismatch { expected: 3, got, .. }) if got == 2 * MIB),
            "{r:?}"
        );
        assert!(largest < 256 << 10, "largest allocation {largest} bytes");
        assert_eq!(b.recv_u64s_exact(3).unwrap(), vec![3, 4, 5]);
        assert_eq!(b.recv_bytes_exact(4).unwrap(), b"tail");
    });
}

#[test]
fn memory_channels_bound_receives_the_same_way() {
    let (mut x, mut y) = duet_transport::memory_pair_with(Duration::from_secs(5), 1 << 30);
    x.send_bytes(&vec![0u8; 4 * MIB]).unwrap();
    x.send_u64s(&[1, 2, 3, 4]).unwrap();
    x.send_bytes(&[9; 10]).unwrap();
    x.send_bytes(&[8; 10]).unwrap();
    let (r, largest) = largest_allocation(|| y.recv_bytes_max(MIB));
    assert!(matches!(r, Err(TransportError::TooLong { .. })), "{r:?}");
    assert!(largest < 64 << 10, "largest allocation {largest} bytes");
    assert!(matches!(
        y.recv_u64s_exact(3),
        Err(TransportError::LengthMismatch {
            expected: 3,
            got: 4,
            ..
        })
    ));
    assert!(matches!(
        y.recv_bytes_exact(11),
        Err(TransportError::LengthMismatch {
            expected: 11,
            got: 10,
            ..
        })
    ));
    y.set_max_frame(5);
    assert!(matches!(
        y.recv_bytes(),
        Err(TransportError::FrameTooLarge { limit: 5, .. })
    ));
}

#[test]
fn announced_lengths_are_checked_before_allocating() {
    for len in [u64::MAX, 1 << 40, (1 << 30) + 1] {
        let mut frame = len.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0u8; 64]);
        let (r, largest) = largest_allocation(|| wire::parse_frame(&frame, 1 << 30, usize::MAX));
        assert!(
            matches!(r, Err(TransportError::FrameTooLarge { .. })),
            "{r:?}"
        );
        assert!(largest < 4096, "largest allocation {largest} bytes");
    }
    // within the limit but above the receiver's bound: skipped, not allocated (the frame is
    // short here, so skipping it finds the peer gone)
    let frame = (512u64 << 20).to_le_bytes();
    let (r, largest) = largest_allocation(|| wire::parse_frame(&frame, 1 << 30, 1024));
    assert!(matches!(r, Err(TransportError::PeerClosed { .. })), "{r:?}");
    assert!(largest <= 64 << 10, "largest allocation {largest} bytes");
}

#[test]
fn declared_lengths_inside_a_control_message_cannot_allocate() {
    // bincode 2, standard config: a varint length 253 = u64 follows
    for declared in [u64::MAX, 1 << 40, (MAX_CONTROL_MESSAGE_BYTES as u64) + 1] {
        let mut msg = vec![253u8];
        msg.extend_from_slice(&declared.to_le_bytes());
        msg.extend_from_slice(&[1u8; 32]);
        let (r, largest) =
            largest_allocation(|| wire::decode_control::<Vec<u64>>(&msg, "test peer"));
        assert!(matches!(r, Err(TransportError::Malformed { .. })), "{r:?}");
        let (r2, largest2) =
            largest_allocation(|| wire::decode_control::<Vec<String>>(&msg, "test peer"));
        assert!(
            matches!(r2, Err(TransportError::Malformed { .. })),
            "{r2:?}"
        );
        let (r3, largest3) =
            largest_allocation(|| wire::decode_control::<String>(&msg, "test peer"));
        assert!(
            matches!(r3, Err(TransportError::Malformed { .. })),
            "{r3:?}"
        );
        let most = largest.max(largest2).max(largest3);
        assert!(most < 2 * MIB, "largest allocation {most} bytes");
    }
    // and a control message frame above the control limit is refused before it is read
    let (s, c) = common::quic_pair(QuicConfig::default());
    let mut a = s.channel(0).unwrap();
    let mut b = c.channel(0).unwrap();
    std::thread::scope(|sc| {
        sc.spawn(|| {
            a.send_bytes(&vec![0u8; MAX_CONTROL_MESSAGE_BYTES + 1])
                .unwrap();
            a.flush().unwrap();
        });
        let (r, largest) = largest_allocation(|| b.recv_msg::<Vec<u8>>());
        assert!(matches!(r, Err(TransportError::TooLong { .. })), "{r:?}");
        assert!(largest < 256 << 10, "largest allocation {largest} bytes");
    });
}
