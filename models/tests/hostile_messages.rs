//! A hostile peer, message by message (issue 20, item 5): a small end-to-end session (bert-tiny's
//! shape, and a 2-layer LLaMA that prefills and decodes one token) in which one party's channel
//! is wrapped by [`Hostile`], which at its `i`-th sent message (counting that party's sends:
//! `send_bytes` and `send_u64s`, i.e. one receive on the other side each)
//!
//! * truncates it (one byte or word fewer, or half of it),
//! * extends it (one byte or word more, or twice as long),
//! * flips one to three bits of it,
//! * replays an earlier message in its place (the latest earlier one of the same length and
//!   kind, else the one before),
//! * goes silent (sends nothing more, keeps the connection open), or
//! * disconnects (drops its end).
//!
//! Both directions are attacked: a hostile server against an honest client and a hostile
//! client against an honest server. Every case must end without a panic, an abort or a hang
//! (each party runs on its own thread; the harness waits up to a deadline). The honest side:
//!
//! * for truncate, extend, silent and disconnect must return an error, whose text names the
//!   peer, within 5 s of the attack (silent: within the configured receive timeout
//!   ([`silent_timeout`]: 1.5 s, 4 s with Ferret) plus 5 s, counted from the attack);
//! * for a bit flip or a replay may instead finish: in a semi-honest protocol a flipped bit or
//!   a replayed block inside a secret-shared value or a ciphertext is undetectable (the output
//!   is just wrong). Such cases are counted apart ("accepted"), with whether the client's
//!   output changed, and are not asserted to fail. Where the flip or the replay hits framing, a
//!   length, a header or a control message, the error must name the peer as above.
//!
//! Memory: a counting global allocator records, per case, the peak of live bytes (both parties
//! share the process) and the largest single allocation; neither may exceed the clean run's
//! by more than a quarter plus [`MEMORY_SLACK`] (so no announced length or replayed message
//! makes a receiver allocate beyond what the protocol expects; the in-memory channel moves
//! messages, so a longer one than expected is refused before it is copied).
//!
//! What runs: the clean run of each model is made once, recording every message each party
//! sends and the protocol step it belongs to (its *site*: the phase and the last finished
//! graph node with layer numbers erased, the message kind and its length).
//!
//! * CI (default; one layer of each model): every message of the session setup (handshake, HE
//!   keys, base OTs) with one kind each in turn, and all six kinds at one seeded index of the
//!   rest, per direction and model: 48 cases (`DUET_HOSTILE_EXTRA=n` seeded indices instead of
//!   one), about 35 s on 2 cores; in the last run 37 ended with an error and 11 were accepted
//!   flips or replays (2 of them changed the client's output).
//! * `DUET_HOSTILE_SITES=1` (two layers): the first message of every site, one kind per site
//!   in turn, so that every kind meets every part of the protocol over the sites: 1,178
//!   cases in 26 min on 2 cores; in the last run 863 ended with an error naming the peer and
//!   315 were accepted flips or replays (82 of them changed the client's output), no failure.
//! * `DUET_HOSTILE_ALL=1` (two layers): every message index times every kind (about 25,000
//!   cases: hours on 2 cores).
//!
//! The runs use IKNP OT extension instead of the preset's Ferret silent OT, whose batch of
//! ten million COTs at the first non-linear layer costs 2.6 s and 160 MiB per run (and only
//! vetted Ferret parameter sets go in a session's hello, so a small test set cannot be used);
//! every other message is the `duet` preset's. `DUET_HOSTILE_FERRET=1` runs the preset as is.
//!
//! A second test cuts either side's connection at 20 seeded random points of a run (a random
//! send or receive of that party, after a random delay of up to 100 ms, as a process killed
//! mid-computation would): the other side must end with an error naming the peer within 5 s.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unsafe_code
)]

#[path = "suite/common/mod.rs"]
mod common;

use common::small;
use duet_models::session::{Client, Reveal, RunConfig, Server, TokenChoice};
use duet_models::{BuiltinModel, Graph, ModelError, RandomWeights};
use duet_mpc::nonlinear::CotBackend;
use duet_transport::{
    memory_pair_with, Channel, ChannelStats, MemoryChannel, TransportError, DEFAULT_MAX_FRAME_BYTES,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Counting allocator

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize, size: usize) {
    let live = LIVE.fetch_add(by, Relaxed).saturating_add(by);
    PEAK.fetch_max(live, Relaxed);
    LARGEST.fetch_max(size, Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only updates atomic counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size(), layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size(), layout.size());
        }
        p
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size(), new_size);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Relaxed);
            }
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Memory a case may use beyond the clean run's peak (and its largest allocation).
const MEMORY_SLACK: usize = 64 << 20;

fn memory_reset() -> usize {
    let live = LIVE.load(Relaxed);
    PEAK.store(live, Relaxed);
    LARGEST.store(0, Relaxed);
    live
}

/// (peak live bytes above `base`, largest single allocation) since [`memory_reset`].
fn memory_since(base: usize) -> (usize, usize) {
    (
        PEAK.load(Relaxed).saturating_sub(base),
        LARGEST.load(Relaxed),
    )
}

// ---------------------------------------------------------------------------------------------
// The hostile channel

/// Receive timeout of both ends in a silent case (and the clean runs): what the honest side
/// waits before giving up. With Ferret a party waits up to 0.8 s while the other makes its
/// batch of COTs, so the timeout is longer there.
fn silent_timeout() -> Duration {
    if ferret() {
        Duration::from_secs(4)
    } else {
        Duration::from_millis(1500)
    }
}
/// Receive timeout of the other cases: long, so an honest side that waits instead of failing
/// is seen (it would end only after this, far beyond the 5 s allowed).
const LONG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the attack the honest side has to end with an error.
const WITHIN: Duration = Duration::from_secs(5);
/// Longest a case may take after its attack before it counts as a hang.
const HANG: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Truncate,
    Extend,
    Flip,
    Replay,
    Silent,
    Disconnect,
}

const KINDS: [Kind; 6] = [
    Kind::Truncate,
    Kind::Extend,
    Kind::Flip,
    Kind::Replay,
    Kind::Silent,
    Kind::Disconnect,
];

impl Kind {
    /// Whether the honest side may finish (an undetectable change of a shared value).
    fn may_pass(self) -> bool {
        matches!(self, Kind::Flip | Kind::Replay)
    }
}

/// What the wrapper does, and when.
#[derive(Clone, Debug)]
enum Attack {
    /// Mutate this party's `at`-th sent message.
    Message {
        at: usize,
        kind: Kind,
        seed: u64,
        /// For a replay: which earlier message is sent instead.
        replay_of: usize,
    },
    /// At this party's `op`-th channel operation (send or receive), wait `delay`, then drop
    /// the connection.
    Cut { op: usize, delay: Duration },
}

/// One message a party sent (clean runs).
#[derive(Clone, Debug)]
struct Sent {
    len: usize,
    words: bool,
    site: String,
    /// When, after the party's start.
    at: Duration,
}

/// State shared between a wrapper and the harness.
#[derive(Default)]
struct Shared {
    sends: Mutex<Vec<Sent>>,
    ops: AtomicUsize,
    longest_wait: Mutex<Duration>,
    fired: Mutex<Option<Instant>>,
    /// A silent party stays connected (and blocked) until this is set.
    release: AtomicBool,
    /// The party's current protocol step, set by its progress callbacks.
    site: Mutex<String>,
    /// When the party started.
    start: OnceLock<Instant>,
}

impl Shared {
    fn set_site(&self, s: String) {
        *self.site.lock().unwrap() = s;
    }
    fn fire(&self) {
        self.fired.lock().unwrap().get_or_insert_with(Instant::now);
    }
}

/// A message on its way out.
enum Msg {
    Bytes(Vec<u8>),
    Words(Vec<u64>),
}

impl Msg {
    fn to_bytes(&self) -> Vec<u8> {
        match self {
            Msg::Bytes(b) => b.clone(),
            Msg::Words(w) => w.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
    fn from_bytes(b: Vec<u8>, words: bool) -> Self {
        if words {
            Msg::Words(
                b.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
            )
        } else {
            Msg::Bytes(b)
        }
    }
}

/// splitmix64.
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
}

/// Applies a message mutation.
fn mutate(msg: Msg, kind: Kind, seed: u64, replay: Option<&Msg>) -> Msg {
    let mut rng = Rng(seed);
    let words = matches!(msg, Msg::Words(_));
    let unit = if words { 8 } else { 1 };
    let mut b = msg.to_bytes();
    let units = b.len() / unit;
    match kind {
        Kind::Truncate => {
            let keep = if seed % 2 == 0 {
                units.saturating_sub(1)
            } else {
                units / 2
            };
            b.truncate(keep * unit);
        }
        Kind::Extend => {
            let more = if seed % 2 == 0 {
                1
            } else {
                units.clamp(1, 1 << 17)
            };
            for _ in 0..more * unit {
                b.push(rng.next() as u8);
            }
        }
        Kind::Flip => {
            for _ in 0..1 + rng.below(3) {
                let bit = rng.below(b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
        }
        Kind::Replay => {
            return match replay.expect("a replay has its earlier message") {
                Msg::Bytes(b) => Msg::Bytes(b.clone()),
                Msg::Words(w) => Msg::Words(w.clone()),
            }
        }
        Kind::Silent | Kind::Disconnect => unreachable!(),
    }
    Msg::from_bytes(b, words)
}

const GONE: &str = "the hostile wrapper's own end (already dropped)";

/// Wraps one party's channel; see the module doc.
struct Hostile<C: Channel> {
    inner: Option<C>,
    attack: Option<Attack>,
    sent: usize,
    kept: Option<Msg>,
    silent: bool,
    shared: Arc<Shared>,
}

impl<C: Channel> Hostile<C> {
    fn new(inner: C, attack: Option<Attack>, shared: Arc<Shared>) -> Self {
        shared.start.get_or_init(Instant::now);
        Self {
            inner: Some(inner),
            attack,
            sent: 0,
            kept: None,
            silent: false,
            shared,
        }
    }

    fn gone() -> TransportError {
        TransportError::ClosedLocally { peer: GONE.into() }
    }

    /// Counts one operation; performs a cut scheduled for it.
    fn op(&mut self) -> duet_transport::Result<()> {
        let n = self.shared.ops.fetch_add(1, Relaxed);
        if let Some(Attack::Cut { op, delay }) = self.attack {
            if n == op {
                std::thread::sleep(delay);
                self.shared.fire();
                self.inner = None;
            }
        }
        if self.inner.is_none() {
            return Err(Self::gone());
        }
        Ok(())
    }

    /// Blocks a silent party until the harness releases it (the honest side has ended).
    fn stay_silent(&self) -> TransportError {
        let t = Instant::now();
        while !self.shared.release.load(Relaxed) && t.elapsed() < HANG {
            std::thread::sleep(Duration::from_millis(5));
        }
        Self::gone()
    }

    fn send(&mut self, msg: Msg) -> duet_transport::Result<()> {
        self.op()?;
        let i = self.sent;
        self.sent += 1;
        let (len, words) = match &msg {
            Msg::Bytes(b) => (b.len(), false),
            Msg::Words(w) => (w.len() * 8, true),
        };
        let site = self.shared.site.lock().unwrap().clone();
        let at = self.shared.start.get_or_init(Instant::now).elapsed();
        self.shared.sends.lock().unwrap().push(Sent {
            len,
            words,
            site,
            at,
        });
        if self.silent {
            return Ok(());
        }
        let msg = match self.attack.clone() {
            Some(Attack::Message {
                at,
                kind,
                seed,
                replay_of,
            }) => {
                if kind == Kind::Replay && i == replay_of {
                    self.kept = Some(match &msg {
                        Msg::Bytes(b) => Msg::Bytes(b.clone()),
                        Msg::Words(w) => Msg::Words(w.clone()),
                    });
                }
                if i != at {
                    msg
                } else {
                    self.shared.fire();
                    match kind {
                        Kind::Silent => {
                            self.silent = true;
                            return Ok(());
                        }
                        Kind::Disconnect => {
                            self.inner = None;
                            return Err(Self::gone());
                        }
                        _ => mutate(msg, kind, seed, self.kept.as_ref()),
                    }
                }
            }
            _ => msg,
        };
        let inner = self.inner.as_mut().ok_or_else(Self::gone)?;
        match msg {
            Msg::Bytes(b) => inner.send_bytes(&b),
            Msg::Words(w) => inner.send_u64s(&w),
        }
    }

    fn recv<T>(
        &mut self,
        f: impl FnOnce(&mut C) -> duet_transport::Result<T>,
    ) -> duet_transport::Result<T> {
        self.op()?;
        if self.silent {
            return Err(self.stay_silent());
        }
        let inner = self.inner.as_mut().ok_or_else(Self::gone)?;
        let t = Instant::now();
        let r = f(inner);
        let mut w = self.shared.longest_wait.lock().unwrap();
        *w = (*w).max(t.elapsed());
        r
    }
}

impl<C: Channel> Channel for Hostile<C> {
    fn send_bytes(&mut self, data: &[u8]) -> duet_transport::Result<()> {
        self.send(Msg::Bytes(data.to_vec()))
    }
    fn send_u64s(&mut self, data: &[u64]) -> duet_transport::Result<()> {
        self.send(Msg::Words(data.to_vec()))
    }
    fn recv_bytes_max(&mut self, max: usize) -> duet_transport::Result<Vec<u8>> {
        self.recv(|c| c.recv_bytes_max(max))
    }
    fn recv_u64s_max(&mut self, max: usize) -> duet_transport::Result<Vec<u64>> {
        self.recv(|c| c.recv_u64s_max(max))
    }
    fn flush(&mut self) -> duet_transport::Result<()> {
        if self.silent {
            return Ok(());
        }
        self.inner.as_mut().ok_or_else(Self::gone)?.flush()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.as_ref().map(Channel::stats).unwrap_or_default()
    }
    fn peer(&self) -> &str {
        self.inner.as_ref().map_or(GONE, |c| c.peer())
    }
    fn max_frame(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(DEFAULT_MAX_FRAME_BYTES, Channel::max_frame)
    }
    fn set_max_frame(&mut self, max: u64) {
        if let Some(c) = self.inner.as_mut() {
            c.set_max_frame(max);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The two parties

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Side {
    Server,
    Client,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
}

/// One of the two small models and its clean transcript.
struct Model {
    name: &'static str,
    graph: Graph,
    /// The `duet` preset's options for it, with small (insecure) Ferret parameters.
    config: RunConfig,
    decoder: bool,
    /// Messages each side sends in a clean run.
    sends: BTreeMap<Side, Vec<Sent>>,
    /// Channel operations of each side in a clean run.
    ops: BTreeMap<Side, usize>,
    /// The client's output of the clean run.
    output: Vec<f64>,
    /// Peak live bytes and largest allocation of the clean run.
    memory: (usize, usize),
    /// Wall time of the clean run.
    wall: Duration,
}

const WEIGHTS: RandomWeights = RandomWeights { seed: 5 };
const BERT_IDS: [u32; 4] = [101, 7, 42, 102];
const PROMPT: [u32; 3] = [3, 999, 17];

fn layerless(node: &str) -> String {
    node.chars()
        .map(|c| if c.is_ascii_digit() { '#' } else { c })
        .collect()
}

fn run_server<C: Channel>(ch: C, m: &Model, shared: &Shared) -> Result<(), ModelError> {
    shared.set_site("setup".into());
    let mut server = Server::accept(ch, &m.graph, &WEIGHTS, &m.config)?;
    let mut request = 0usize;
    let mut last = usize::MAX;
    shared.set_site("request".into());
    server.serve_with(&mut |p| {
        if p.done < last && last != usize::MAX {
            request += 1;
        }
        last = p.done;
        let phase = if request == 0 {
            "request"
        } else {
            "later request"
        };
        shared.set_site(format!("{phase} after {}", layerless(p.node)));
    })?;
    Ok(())
}

/// The client's revealed output as numbers (hidden state, or the chosen tokens).
fn run_client<C: Channel>(ch: C, m: &Model, shared: &Shared) -> Result<Vec<f64>, ModelError> {
    shared.set_site("setup".into());
    let decoder = m.decoder;
    let tokens = if decoder {
        PROMPT.len()
    } else {
        BERT_IDS.len()
    };
    let mut client = Client::connect(ch, &m.graph, &m.config, tokens)?;
    let progress = |phase: &'static str| {
        move |p: duet_models::walk::Progress<'_>| {
            shared.set_site(format!("{phase} after {}", layerless(p.node)))
        }
    };
    let out = if decoder {
        let greedy = Reveal::Token(TokenChoice::Greedy);
        shared.set_site("prefill".into());
        let (o, _) = client.prefill(&PROMPT, &greedy, &mut progress("prefill"))?;
        let first = o.token.expect("a token");
        shared.set_site("extend".into());
        let (o, _) = client.extend(&[first], &greedy, &mut progress("extend"))?;
        vec![f64::from(first), f64::from(o.token.expect("a token"))]
    } else {
        shared.set_site("infer".into());
        let (o, _) = client.infer_with(&BERT_IDS, &mut progress("infer"))?;
        o.hidden.expect("an encoder reveals its hidden state").data
    };
    shared.set_site("close".into());
    client.close()?;
    Ok(out)
}

/// How one case ended.
struct CaseEnd {
    /// The honest side's result (its output if the client), or why it did not end.
    honest: Result<Result<Vec<f64>, String>, String>,
    /// When the honest side ended, after the attack (or the start when none fired).
    honest_after: Option<Duration>,
    /// Whether the attack fired.
    fired: bool,
    /// Panics of either side, hangs.
    faults: Vec<String>,
    memory: (usize, usize),
    shared: Arc<Shared>,
    wall: Duration,
}

type PartyResult = std::thread::Result<Result<Vec<f64>, String>>;

/// Runs one session with `hostile`'s channel wrapped (both wrapped when `attack` is `None`:
/// the clean run records both transcripts).
fn run_case(
    model: &'static Model,
    hostile: Side,
    attack: Option<Attack>,
    timeout: Duration,
) -> (CaseEnd, Arc<Shared>) {
    let base = memory_reset();
    let start = Instant::now();
    let (a, b) = memory_pair_with(timeout, DEFAULT_MAX_FRAME_BYTES);
    let hs = Arc::new(Shared::default());
    let other = Arc::new(Shared::default());
    let (tx, rx) = mpsc::channel::<(Side, PartyResult, Instant)>();
    let spawn = |side: Side, ch: MemoryChannel| {
        let tx = tx.clone();
        let mine = if side == hostile {
            hs.clone()
        } else {
            other.clone()
        };
        let wrap = side == hostile || attack.is_none();
        let attack = if side == hostile {
            attack.clone()
        } else {
            None
        };
        std::thread::Builder::new()
            .name(format!("hostile-{side}"))
            .spawn(move || {
                let r = catch_unwind(AssertUnwindSafe(|| {
                    let res = match (side, wrap) {
                        (Side::Server, true) => {
                            run_server(Hostile::new(ch, attack, mine.clone()), model, &mine)
                                .map(|()| Vec::new())
                        }
                        (Side::Server, false) => run_server(ch, model, &mine).map(|()| Vec::new()),
                        (Side::Client, true) => {
                            run_client(Hostile::new(ch, attack, mine.clone()), model, &mine)
                        }
                        (Side::Client, false) => run_client(ch, model, &mine),
                    };
                    res.map_err(|e| e.to_string())
                }));
                let _ = tx.send((side, r, Instant::now()));
            })
            .unwrap();
    };
    spawn(Side::Server, a);
    spawn(Side::Client, b);
    drop(tx);
    let honest = match hostile {
        Side::Server => Side::Client,
        Side::Client => Side::Server,
    };
    let mut faults = Vec::new();
    let mut honest_res: Option<(PartyResult, Instant)> = None;
    let mut ended = 0;
    while ended < 2 {
        let fired = *hs.fired.lock().unwrap();
        let deadline = fired.unwrap_or(start)
            + HANG
            + if fired.is_none() {
                HANG
            } else {
                Duration::ZERO
            };
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok((side, r, at)) => {
                ended += 1;
                if let Err(p) = &r {
                    let what = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    faults.push(format!("the {side} panicked: {what}"));
                }
                if side == honest {
                    // release a silent hostile party once the honest one has ended
                    hs.release.store(true, Relaxed);
                    honest_res = Some((r, at));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    faults.push(format!(
                        "hang: {} of 2 parties ended {:?} after the {}",
                        ended,
                        HANG,
                        if fired.is_some() { "attack" } else { "start" }
                    ));
                    hs.release.store(true, Relaxed);
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let fired = *hs.fired.lock().unwrap();
    let (honest, honest_after) = match honest_res {
        Some((Ok(r), at)) => (Ok(r), Some(at - fired.unwrap_or(start))),
        Some((Err(_), at)) => (Err("panicked".into()), Some(at - fired.unwrap_or(start))),
        None => (Err("did not end".into()), None),
    };
    let end = CaseEnd {
        honest,
        honest_after,
        fired: fired.is_some(),
        faults,
        memory: memory_since(base),
        shared: hs.clone(),
        wall: start.elapsed(),
    };
    (end, other)
}

fn env_is_1(k: &str) -> bool {
    std::env::var_os(k).is_some_and(|v| v == "1")
}

/// Whether a local sweep (`DUET_HOSTILE_ALL=1` or `DUET_HOSTILE_SITES=1`) runs: two layers.
fn local_sweep() -> bool {
    env_is_1("DUET_HOSTILE_ALL") || env_is_1("DUET_HOSTILE_SITES")
}

/// Whether the runs use the `duet` preset's Ferret silent OT as it is (`DUET_HOSTILE_FERRET=1`)
/// rather than IKNP extension. Ferret makes ten million COTs in one batch at the first
/// non-linear layer (2.6 s and 160 MiB per run on 2 cores, and only vetted parameter sets go
/// in a session's hello), which would allow about fifteen cases in CI's minute; with IKNP a
/// run takes a fraction of that and every other message is the same protocol's.
fn ferret() -> bool {
    env_is_1("DUET_HOSTILE_FERRET")
}

fn build_model(name: &'static str, b: BuiltinModel) -> Model {
    // bert-tiny's shape (2 layers, hidden 128, 2 heads, FFN 512) and a 2-layer LLaMA (4 query
    // heads over 2 key heads), both with a vocabulary of 1,000; one layer of each on CI (the
    // second layer repeats the first one's messages)
    let decoder = b != BuiltinModel::BertTiny;
    let mut config = small(b);
    if !local_sweep() {
        config.layers = 1;
    }
    let graph = Graph::build(&config);
    let tokens = if decoder {
        PROMPT.len()
    } else {
        BERT_IDS.len()
    };
    let (mut opts, _) = RunConfig::fixed("duet").options(&graph, tokens).unwrap();
    if !ferret() {
        opts.protocol.nl.cot = CotBackend::Iknp;
    }
    Model {
        name,
        graph,
        config: RunConfig::given(&opts),
        decoder,
        sends: BTreeMap::new(),
        ops: BTreeMap::new(),
        output: Vec::new(),
        memory: (0, 0),
        wall: Duration::ZERO,
    }
}

/// The two models with their clean transcripts (made once per test binary).
fn models() -> &'static [Model] {
    static OWNED: OnceLock<Vec<Model>> = OnceLock::new();
    OWNED.get_or_init(|| {
        let mut out = Vec::new();
        for (name, b) in [
            ("bert-tiny", BuiltinModel::BertTiny),
            ("llama-2l", BuiltinModel::Llama7bShape),
        ] {
            // the clean run needs the model by 'static reference: leak a copy for it
            let m: &'static Model = Box::leak(Box::new(build_model(name, b)));
            let (end, client_shared) = run_case(m, Side::Server, None, silent_timeout());
            assert!(end.faults.is_empty(), "{name} clean run: {:?}", end.faults);
            let output = match end.honest {
                Ok(Ok(o)) => o,
                other => panic!("{name} clean run failed: {other:?}"),
            };
            let server = end.shared.sends.lock().unwrap().clone();
            let client = client_shared.sends.lock().unwrap().clone();
            let longest = (*end.shared.longest_wait.lock().unwrap())
                .max(*client_shared.longest_wait.lock().unwrap());
            let mut model = build_model(name, b);
            model.ops.insert(Side::Server, end.shared.ops.load(Relaxed));
            model
                .ops
                .insert(Side::Client, client_shared.ops.load(Relaxed));
            model.sends.insert(Side::Server, server);
            model.sends.insert(Side::Client, client);
            model.output = output;
            model.memory = end.memory;
            model.wall = end.wall;
            println!(
                "{name}: clean run {:.2?}: server sends {} messages ({} channel ops), client {} \
                 ({} ops); longest wait for the peer {longest:.2?}; peak {} MiB, largest \
                 allocation {} MiB",
                end.wall,
                model.sends[&Side::Server].len(),
                model.ops[&Side::Server],
                model.sends[&Side::Client].len(),
                model.ops[&Side::Client],
                end.memory.0 >> 20,
                end.memory.1 >> 20,
            );
            for side in [Side::Server, Side::Client] {
                let mut phases: Vec<(String, usize, Duration)> = Vec::new();
                for s in &model.sends[&side] {
                    let phase = if std::env::var_os("DUET_HOSTILE_TIMELINE").is_some() {
                        s.site.clone()
                    } else {
                        s.site.split(' ').next().unwrap_or("").to_string()
                    };
                    match phases.last_mut() {
                        Some(p) if p.0 == phase => p.1 += 1,
                        _ => phases.push((phase, 1, s.at)),
                    }
                }
                println!("  {side} phases (name, messages, first at): {phases:?}");
            }
            assert!(
                longest < silent_timeout() / 2,
                "{name}: a clean wait of {longest:?} is too close to the silent timeout"
            );
            out.push(model);
        }
        out
    })
}

// ---------------------------------------------------------------------------------------------
// Cases

/// Only one case at a time in this binary: timings and memory are per case.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether an error text names the peer: the transport's errors name it as the channel does
/// ("in-memory peer"; an address on QUIC), the session's refusals by its role.
fn names_peer(text: &str, honest: Side) -> bool {
    let t = text.to_lowercase();
    t.contains("in-memory peer")
        || match honest {
            Side::Server => t.contains("client"),
            Side::Client => t.contains("server"),
        }
}

#[derive(Default)]
struct Tally {
    cases: usize,
    refused: usize,
    accepted_same: usize,
    accepted_changed: usize,
    by_kind: BTreeMap<Kind, (usize, usize)>,
    slowest: Duration,
    failures: Vec<String>,
}

impl Tally {
    fn fail(&mut self, case: &str, why: String) {
        eprintln!("FAIL {case}: {why}");
        self.failures.push(format!("{case}: {why}"));
    }
}

/// The latest earlier message of the same length and kind, else the one before.
fn replay_source(sends: &[Sent], at: usize) -> Option<usize> {
    let s = sends.get(at)?;
    (0..at)
        .rev()
        .find(|&j| sends[j].len == s.len && sends[j].words == s.words)
        .or(at.checked_sub(1))
}

/// The attack on message `at`, or `None` where the kind does not apply (nothing to flip or
/// truncate in an empty message, nothing earlier to replay).
fn message_attack(sends: &[Sent], at: usize, kind: Kind, seed: u64) -> Option<Attack> {
    let s = sends.get(at)?;
    let unit = if s.words { 8 } else { 1 };
    let ok = match kind {
        Kind::Truncate | Kind::Flip => s.len >= unit,
        Kind::Replay => at > 0,
        _ => true,
    };
    ok.then(|| Attack::Message {
        at,
        kind,
        seed,
        replay_of: replay_source(sends, at).unwrap_or(0),
    })
}

fn run_attack(model: &'static Model, hostile: Side, attack: Attack, t: &mut Tally) {
    let (kind, at) = match &attack {
        Attack::Message { kind, at, .. } => (Some(*kind), *at),
        Attack::Cut { op, .. } => (None, *op),
    };
    let sends = &model.sends[&hostile];
    let site = match &attack {
        Attack::Message { at, .. } => {
            let s = &sends[*at];
            format!(
                "{} {} B{} at {}",
                if s.words { "u64s" } else { "bytes" },
                s.len,
                "",
                s.site
            )
        }
        Attack::Cut { delay, .. } => format!("channel op, after {delay:?}"),
    };
    let case = format!(
        "{} hostile {hostile} {} #{at} ({site})",
        model.name,
        kind.map_or("cut".to_string(), |k| format!("{k:?}").to_lowercase())
    );
    let timeout = if kind == Some(Kind::Silent) {
        silent_timeout()
    } else {
        LONG_TIMEOUT
    };
    let honest = match hostile {
        Side::Server => Side::Client,
        Side::Client => Side::Server,
    };
    let (end, _) = run_case(model, hostile, Some(attack), timeout);
    t.cases += 1;
    for f in &end.faults {
        t.fail(&case, f.clone());
    }
    if !end.fired {
        t.fail(&case, "the attack never fired (the run changed?)".into());
        return;
    }
    let (peak, largest) = end.memory;
    let cap = |clean: usize| clean + clean / 4 + MEMORY_SLACK;
    if peak > cap(model.memory.0) || largest > cap(model.memory.1) {
        t.fail(
            &case,
            format!(
                "memory: peak {} MiB, largest allocation {} MiB (clean run {} / {} MiB)",
                peak >> 20,
                largest >> 20,
                model.memory.0 >> 20,
                model.memory.1 >> 20
            ),
        );
    }
    let after = end.honest_after.unwrap_or(HANG);
    let limit = if kind == Some(Kind::Silent) {
        silent_timeout() + WITHIN
    } else {
        WITHIN
    };
    let entry = t
        .by_kind
        .entry(kind.unwrap_or(Kind::Disconnect))
        .or_default();
    match &end.honest {
        Ok(Err(text)) => {
            entry.0 += 1;
            t.refused += 1;
            t.slowest = t.slowest.max(after);
            if !names_peer(text, honest) {
                t.fail(
                    &case,
                    format!("the honest {honest}'s error names no peer: {text}"),
                );
            }
            if after > limit {
                t.fail(
                    &case,
                    format!("the honest {honest} ended {after:.2?} after the attack: {text}"),
                );
            }
            if std::env::var_os("DUET_HOSTILE_VERBOSE").is_some() {
                println!("{case}: {after:.2?}: {text}");
            }
        }
        Ok(Ok(out)) => {
            entry.1 += 1;
            if !kind.is_some_and(Kind::may_pass) {
                t.fail(
                    &case,
                    format!("the honest {honest} finished without an error"),
                );
            } else {
                let same = honest == Side::Server
                    || (out.len() == model.output.len()
                        && out
                            .iter()
                            .zip(&model.output)
                            .all(|(a, b)| (a - b).abs() < 1e-2));
                if same {
                    t.accepted_same += 1;
                } else {
                    t.accepted_changed += 1;
                }
            }
        }
        Err(why) => t.fail(&case, format!("the honest {honest} {why}")),
    }
    let _ = end.wall;
}

fn report(name: &str, t: &Tally, wall: Duration) {
    println!(
        "{name}: {} cases in {wall:.1?}: {} ended with an error naming the peer (slowest \
         {:.2?} after the attack), {} accepted (a flipped or replayed shared value: {} with the \
         clean output, {} with another); per kind (errors, accepted): {:?}",
        t.cases,
        t.refused,
        t.slowest,
        t.accepted_same + t.accepted_changed,
        t.accepted_same,
        t.accepted_changed,
        t.by_kind
    );
    assert!(
        t.failures.is_empty(),
        "{} of {} cases failed:\n{}",
        t.failures.len(),
        t.cases,
        t.failures.join("\n")
    );
}

/// Every site of one direction: the first message of each (protocol step, kind, length), one
/// attack kind per site in turn (kinds that do not apply move to the next).
fn site_cases(sends: &[Sent], seed: u64) -> Vec<Attack> {
    let mut rng = Rng(seed);
    let mut first: BTreeMap<(String, bool, usize), usize> = BTreeMap::new();
    for (i, s) in sends.iter().enumerate() {
        first.entry((s.site.clone(), s.words, s.len)).or_insert(i);
    }
    let mut firsts: Vec<usize> = first.into_values().collect();
    firsts.sort_unstable();
    rotating(sends, &firsts, &mut rng)
}

fn rotating(sends: &[Sent], at: &[usize], rng: &mut Rng) -> Vec<Attack> {
    let mut out = Vec::new();
    for (n, &i) in at.iter().enumerate() {
        for k in 0..KINDS.len() {
            if let Some(a) = message_attack(sends, i, KINDS[(n + k) % KINDS.len()], rng.next()) {
                out.push(a);
                break;
            }
        }
    }
    out
}

/// The CI selection of one direction: every message of the session setup (handshake, HE keys,
/// base OTs), one kind each in turn, and every kind at `extra` seeded indices of the rest.
fn ci_cases(sends: &[Sent], seed: u64, extra: usize) -> Vec<Attack> {
    let mut rng = Rng(seed);
    let setup: Vec<usize> = (0..sends.len())
        .filter(|&i| sends[i].site == "setup")
        .collect();
    let mut out = rotating(sends, &setup, &mut rng);
    let rest = sends.len() - setup.len();
    for _ in 0..extra {
        let at = setup.len() + rng.below(rest);
        for kind in KINDS {
            out.extend(message_attack(sends, at, kind, rng.next()));
        }
    }
    out
}

#[test]
fn every_message_truncated_extended_flipped_replayed_or_withheld() {
    let _g = serial();
    let (all, sites) = (env_is_1("DUET_HOSTILE_ALL"), env_is_1("DUET_HOSTILE_SITES"));
    let extra: usize = std::env::var("DUET_HOSTILE_EXTRA")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let start = Instant::now();
    let mut t = Tally::default();
    for model in models() {
        for hostile in [Side::Server, Side::Client] {
            let sends = &model.sends[&hostile];
            let attacks: Vec<Attack> = if all {
                let mut rng = Rng(42);
                (0..sends.len())
                    .flat_map(|at| KINDS.map(|k| (at, k)))
                    .filter_map(|(at, k)| message_attack(sends, at, k, rng.next()))
                    .collect()
            } else if sites {
                site_cases(sends, 7 + hostile as u64)
            } else {
                ci_cases(sends, 7 + hostile as u64, extra)
            };
            println!(
                "{}: hostile {hostile}: {} messages, {} cases",
                model.name,
                sends.len(),
                attacks.len()
            );
            for a in attacks {
                run_attack(model, hostile, a, &mut t);
            }
        }
    }
    report("per-message attacks", &t, start.elapsed());
}

#[test]
fn either_side_cut_at_twenty_random_points() {
    let _g = serial();
    let start = Instant::now();
    let mut rng = Rng(2026);
    let mut t = Tally::default();
    let ms = models();
    for p in 0..20 {
        let model = &ms[p % ms.len()];
        let hostile = if rng.next() % 2 == 0 {
            Side::Server
        } else {
            Side::Client
        };
        let op = rng.below(model.ops[&hostile]);
        let delay = Duration::from_millis(rng.below(100) as u64);
        run_attack(model, hostile, Attack::Cut { op, delay }, &mut t);
    }
    assert_eq!(t.cases, 20);
    report("cuts", &t, start.elapsed());
}
