//! Seeded fuzzing of every decoder of peer bytes in the transport: the frame parser (bytes and
//! `u64` frames, with the channel's limit and the receiver's bound), the sub-channel stream
//! header, bincode control messages of many shapes, and the filter for peer text. Inputs are
//! random bytes, valid frames and messages, and those truncated, extended, bit-flipped or with
//! their announced length changed. Each decoder must return (no panic) and allocate within its
//! bound (a counting allocator records the largest single allocation of each call).
//!
//! Cases: `DUET_FUZZ_CASES` (default 2,000); seed: `DUET_FUZZ_SEED` (default 1).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unsafe_code
)]

use duet_transport::{
    peer_text, wire, ChannelStats, Role, TransportError, MAX_CONTROL_MESSAGE_BYTES,
    PEER_TEXT_MAX_CHARS,
};
use serde::{Deserialize, Serialize};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Instant;

struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; only records sizes in a
// const-initialized thread-local cell.
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

fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// splitmix64: a small seeded generator (the transport has no rand dependency).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn len(&mut self) -> usize {
        // mostly short, sometimes long
        match self.below(10) {
            0 => self.below(64 << 10),
            1..=3 => self.below(4096),
            _ => self.below(96),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
enum Msg {
    Unit,
    Tuple(u32, String),
    Struct { ids: Vec<u32>, name: String },
    Nested(Vec<Vec<u64>>),
}

/// A valid control message of a random shape, encoded.
fn valid_control(r: &mut Rng) -> Vec<u8> {
    let cfg = bincode::config::standard();
    let n = r.below(40);
    let s: String = (0..n)
        .map(|_| char::from(b'a' + (r.next() % 26) as u8))
        .collect();
    let v = match r.below(6) {
        0 => bincode::serde::encode_to_vec(r.next(), cfg),
        1 => bincode::serde::encode_to_vec(&s, cfg),
        2 => bincode::serde::encode_to_vec((0..n as u64).collect::<Vec<_>>(), cfg),
        3 => bincode::serde::encode_to_vec(
            Msg::Struct {
                ids: vec![1, 2, 3],
                name: s,
            },
            cfg,
        ),
        4 => bincode::serde::encode_to_vec(Msg::Nested(vec![vec![r.next(); n]; 3]), cfg),
        _ => bincode::serde::encode_to_vec(Role::Client, cfg),
    };
    v.unwrap()
}

/// A valid frame (header + payload) of `len` random bytes.
fn frame(r: &mut Rng, len: usize) -> Vec<u8> {
    let mut f = (len as u64).to_le_bytes().to_vec();
    f.extend(r.bytes(len));
    f
}

fn mutate(r: &mut Rng, mut b: Vec<u8>) -> Vec<u8> {
    match r.below(7) {
        0 => b.truncate(r.below(b.len() + 1)),
        1 => {
            let extra = r.len();
            b.extend(r.bytes(extra));
        }
        2 => {
            for _ in 0..=r.below(8) {
                if !b.is_empty() {
                    let i = r.below(b.len());
                    b[i] ^= 1 << r.below(8);
                }
            }
        }
        3 if b.len() >= 8 => {
            // change the announced length
            let old = u64::from_le_bytes(b[..8].try_into().unwrap());
            let new = match r.below(4) {
                0 => old.wrapping_add(1 + r.below(16) as u64),
                1 => old.saturating_sub(1 + r.below(16) as u64),
                2 => r.next(),
                _ => 1u64 << r.below(64),
            };
            b[..8].copy_from_slice(&new.to_le_bytes());
        }
        4 if !b.is_empty() => {
            // a bincode varint length marker somewhere, followed by a huge length
            let i = r.below(b.len());
            b[i] = 251 + r.below(5) as u8;
            b.splice(i + 1..i + 1, r.next().to_le_bytes());
        }
        _ => {}
    }
    b
}

fn input(r: &mut Rng) -> Vec<u8> {
    match r.below(5) {
        0 => {
            let n = r.len();
            r.bytes(n)
        }
        1 => {
            let n = r.len();
            let f = frame(r, n);
            mutate(r, f)
        }
        2 => {
            // several frames back to back, mutated
            let mut f = Vec::new();
            for _ in 0..=r.below(4) {
                let n = r.below(200);
                f.extend(frame(r, n));
            }
            mutate(r, f)
        }
        3 => {
            let c = valid_control(r);
            mutate(r, c)
        }
        _ => {
            let mut h = b"DUET".to_vec();
            let n = 4 + r.below(8);
            h.extend(r.bytes(n));
            mutate(r, h)
        }
    }
}

const LIMITS: [u64; 6] = [0, 8, 1024, 1 << 16, 1 << 20, 1 << 30];
const BOUNDS: [usize; 5] = [0, 7, 100, 1 << 20, usize::MAX];
/// What a skip may use on top of the payload: the skip buffer.
const SLACK: usize = 64 << 10;

fn check_frames(r: &mut Rng, bytes: &[u8], stats: &mut Stats) {
    let limit = LIMITS[r.below(LIMITS.len())];
    let max = BOUNDS[r.below(BOUNDS.len())];
    // a payload buffer grows with the bytes present (doubling past the eager size)
    let present = wire::EAGER_BYTES.max(2 * bytes.len());
    let bound = (limit.min(max as u64) as usize)
        .min(present)
        .saturating_add(SLACK);
    // every frame of the buffer, as a channel reads them one after the other
    let mut rest = bytes;
    loop {
        let (res, largest) = largest_allocation(|| wire::parse_frame(rest, limit, max));
        assert!(
            largest <= bound,
            "frame parser allocated {largest} > {bound}"
        );
        stats.largest_frame = stats.largest_frame.max(largest);
        match res {
            Ok((payload, used)) => {
                stats.frames_ok += 1;
                assert!(payload.len() as u64 <= limit && payload.len() <= max);
                assert_eq!(used, 8 + payload.len());
                rest = &rest[used..];
            }
            Err(TransportError::TooLong { .. } | TransportError::Malformed { .. }) => {
                // skipped: the stream is still aligned only if the payload was there
                stats.frames_refused += 1;
                break;
            }
            Err(TransportError::FrameTooLarge { .. } | TransportError::PeerClosed { .. }) => {
                stats.frames_refused += 1;
                break;
            }
            Err(e) => panic!("unexpected frame error {e}"),
        }
        if rest.is_empty() {
            break;
        }
    }
    let words = BOUNDS[r.below(BOUNDS.len())];
    let bound = (limit.min((words as u64).saturating_mul(8)) as usize)
        .min(present)
        .saturating_add(SLACK);
    let (res, largest) = largest_allocation(|| wire::parse_u64_frame(bytes, limit, words));
    assert!(
        largest <= bound,
        "u64 frame parser allocated {largest} > {bound}"
    );
    if let Ok((w, used)) = res {
        assert!(w.len() <= words && (w.len() * 8) as u64 <= limit);
        assert_eq!(used, 8 + w.len() * 8);
    }
}

fn check_control(bytes: &[u8], stats: &mut Stats) {
    // bincode's limit bounds what declared lengths may claim; serde preallocates at most
    // about 1 MiB per container
    let bound = MAX_CONTROL_MESSAGE_BYTES + (1 << 20);
    macro_rules! decode {
        ($($t:ty),*) => {$(
            let (res, largest) =
                largest_allocation(|| wire::decode_control::<$t>(bytes, "fuzz peer"));
            assert!(largest <= bound, "{} allocated {largest}", stringify!($t));
            stats.largest_control = stats.largest_control.max(largest);
            match res {
                Ok(_) => stats.control_ok += 1,
                Err(TransportError::Malformed { what, .. }) => {
                    stats.control_refused += 1;
                    assert!(!what.chars().any(char::is_control), "{what:?}");
                }
                Err(e) => panic!("unexpected control error {e}"),
            }
        )*};
    }
    decode!(
        u8,
        u32,
        u64,
        i64,
        bool,
        f64,
        char,
        String,
        Vec<u8>,
        Vec<u64>,
        Vec<String>,
        (u64, String),
        Option<Vec<u32>>,
        BTreeMap<String, Vec<u64>>,
        [u8; 32],
        Role,
        ChannelStats,
        Msg
    );
}

fn check_text(bytes: &[u8]) {
    let t = peer_text(bytes);
    assert!(
        !t.chars()
            .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
        "{t:?}"
    );
    // each shown character escapes to at most 10 (\u{10ffff}), plus the note
    assert!(t.chars().count() <= PEER_TEXT_MAX_CHARS * 10 + 40);
}

#[derive(Default, Debug)]
struct Stats {
    frames_ok: u64,
    frames_refused: u64,
    control_ok: u64,
    control_refused: u64,
    headers: u64,
    largest_frame: usize,
    largest_control: usize,
}

#[test]
fn every_decoder_of_peer_bytes_survives_random_and_mangled_input() {
    let cases: u64 = std::env::var("DUET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("DUET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut r = Rng(seed);
    let mut stats = Stats::default();
    let t = Instant::now();
    for _ in 0..cases {
        let bytes = input(&mut r);
        check_frames(&mut r, &bytes, &mut stats);
        check_control(&bytes, &mut stats);
        if let Some(id) = wire::parse_stream_header(&bytes) {
            stats.headers += 1;
            assert_eq!(&bytes[..4], b"DUET");
            assert_eq!(id.to_le_bytes(), bytes[4..8]);
        }
        check_text(&bytes);
    }
    eprintln!(
        "fuzzed {cases} cases (seed {seed}) in {:.1} s: {stats:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(stats.frames_ok > 0 && stats.frames_refused > 0);
    assert!(stats.control_ok > 0 && stats.control_refused > 0);
}
