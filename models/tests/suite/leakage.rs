//! Leakage test (issue 20, item 6): what each party receives is statistically independent of
//! the other party's private data, beyond what the threat model declares public (shapes) or
//! revealed (the client's declared output).
//!
//! # Reading of "with the server's and client's randomness fixed"
//! Both parties' randomness is seeded ([`Server::accept_seeded`], [`Client::connect_seeded`]:
//! every random choice of a side, HE keys, OT choices, masks, flooding, comes from its seed),
//! so every run is reproducible and a failure can be replayed. A transcript with *both* seeds
//! fixed is a deterministic function of the inputs, so independence is tested as the
//! simulation definition asks: the **observer's** seed is held fixed for every run (its view
//! is then its fixed coins plus what it receives), the **other** party's seed varies from run
//! to run (seeds derived from a fixed master seed, different in the two groups), and the
//! observer's received messages under private data A and under private data B must have the
//! same distribution. Holding the observer's coins fixed matters: a message masked only by the
//! observer's own randomness (`x + r` where the observer knows `r`) looks uniform over the
//! observer's coins but is a constant per input once they are fixed, and is caught here.
//! The test first checks that the seeding really reaches every random choice: two runs with
//! the same two seeds give byte-identical transcripts.
//!
//! # The statistic
//! Each party's channel is wrapped in a recorder that logs every received message's bytes.
//! 1. Shapes: the sequence of received message sizes is identical in every run of both groups
//!    (the message count and each message's length depend only on public shapes).
//! 2. Contents: for **every bit of every received message** (no sampling) the number of runs in
//!    which it is 1 under A (`n_A` of `R`) and under B (`n_B` of `R`) are compared by Fisher's
//!    exact test (two-sided, conditional on `n_A + n_B`; exact for any distribution of the
//!    bit: under the null the `2R` runs are i.i.d., hence exchangeable). Each bit is flagged
//!    when its p-value is below `ALPHA / N`, `N` the number of bits tested (Bonferroni; the
//!    union bound needs no independence between bits). Family-wise false-positive rate: at
//!    most `ALPHA` = 1e-4 per comparison, whatever the correlations inside a message.
//! 3. Uniformity: in bulk messages (at least 1 KiB) the low byte of each 8-byte word, bits
//!    the encoding fixes left out, is balanced as a uniformly masked message's would be; see
//!    [`uniformity`] for exactly what is asserted and why.
//!
//! The server's view: fixed server seed and weights (`RandomWeights { seed: 1 }`), client
//! inputs `X1` and `X2` (extreme ids 0 and 255 = vocabulary - 1). The client's view: fixed
//! client seed and input, weights `RandomWeights` seeds 1 and 2; the declared output (the
//! request's last message, the server's share of the hidden state, checked to be exactly that
//! size) is left out, everything else, HE results under the client's own key included, is
//! tested.
//!
//! Power. A bit that is constant within each group and different between them (an unmasked
//! share of the input or of a weight, or a value masked only by the observer's own fixed
//! randomness) has `p = 2 / C(2R, R)`: 6.2e-14 at R = 24 against thresholds of 1.0e-12
//! (server view, 1.0e8 bits) and 4.7e-12 (client view, 2.1e7 bits). R = 22 is the smallest R
//! at which the test can flag anything over this many bits (9.5e-13 for a full separation;
//! R = 20 only 1.5e-11); the CI default R = 24 keeps a margin. At R = 24 only (nearly)
//! deterministic differences are detectable (1 of 24 against 23 of 24: p = 3.6e-11, not
//! flagged); at R = 40 a bit moving from 0.05 to 0.95 is (2 of 40 against 38: p = 1.1e-17).
//! Not detectable: small biases of single bits (0.5 to 0.6 needs R in the thousands), and
//! leaks visible only after the client decrypts an HE ciphertext under its own key (the
//! flooded noise's distribution): the raw ciphertext bytes are tested, not the plaintexts or
//! their noise.
//!
//! # Negative control
//! The server-view test also runs the same statistic on what a leaky channel would deliver
//! from the same sessions: one that writes the client's first token id into bytes 0..2 of the
//! client's first bulk message of the request (an unmasked share of the input, as a forgotten
//! mask would send; `X1[0] = 0`, `X2[0] = 255`). It must flag exactly the eight bits of that
//! byte, and nothing else. `negative_control_end_to_end` (ignored on CI: `2R` more sessions)
//! sends the leak for real through a client channel wrapper, the server computing on it.
//!
//! # Cost and runs
//! `DUET_LEAK_RUNS` runs per group (default 24); `DUET_LEAK_COT` chooses the COT backend
//! (default IKNP; `b11`, `b13`: Ferret, see [`run_config`]). Each test runs `2R` sessions of a
//! one-layer BERT (hidden 64, 2 heads, FFN 128, vocabulary 256, 4 tokens): the server receives
//! 425 messages (12.5 MB, 7.4 MB of it the client's HE keys), the client 334 (2.6 MB). On a
//! 2-core machine shared with other builds (load 5 to 7), R = 24: 150 s wall for the three
//! tests, 86 s of CPU (one session about 0.45 s of CPU, about 1 s wall under that load).
//!
//! Results. R = 24 (CI default, IKNP): server view 0 of 99,785,360 bits flagged (smallest p
//! 3.7e-8), 224 bulk messages uniform; client view 0 of 21,126,136 flagged (smallest p
//! 2.2e-7), 142 uniform; negative control: exactly the 8 leaked bits flagged (p = 6.2e-14).
//! Once locally, R = 40 (`DUET_LEAK_RUNS=40 ... --include-ignored`, IKNP, 561 s wall for the
//! four tests under that load): server view 0 of 99,785,360 bits flagged (smallest p 2.8e-8),
//! 224 bulk messages uniform; client view 0 of 21,126,136 flagged (smallest p 9.5e-8), 142
//! uniform; negative control in transit and end to end: exactly the 8 leaked bits flagged
//! (p = 1.9e-23 each), nothing else (the server computing on the corrupted share changed no
//! distribution of what it received afterwards).
//! Once locally with Ferret, R = 24 (`DUET_LEAK_COT=b11`, 677 s wall for the two view tests):
//! server view 0 of 103,443,016 bits flagged (smallest p 2.3e-8), 109 bulk messages uniform;
//! client view 0 of 31,697,776 flagged (smallest p 2.2e-7), 118 uniform; negative control:
//! exactly the 8 leaked bits (p = 6.2e-14).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use duet_models::session::{Client, RunConfig, Server};
use duet_models::{BuiltinModel, Graph, ModelConfig, RandomWeights};
use duet_mpc::ot::ferret::FerretParams;
use duet_protocols::CotBackend;
use duet_transport::{run_two_party, Channel, ChannelStats, Result as TResult};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Family-wise false-positive rate of one comparison.
const ALPHA: f64 = 1e-4;

/// Messages at least this long are bulk data (shares, OT, ciphertexts), tested for uniformity.
const BULK_BYTES: usize = 1024;

fn runs() -> usize {
    std::env::var("DUET_LEAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

/// A one-layer BERT small enough for many sessions.
fn config() -> ModelConfig {
    let mut c = BuiltinModel::BertTiny.config();
    c.layers = 1;
    c.hidden = 64;
    c.heads = 2;
    c.kv_heads = 2;
    c.intermediate = 128;
    c.vocab_size = 256;
    c.max_positions = 16;
    c
}

type Log = Arc<Mutex<Vec<Vec<u8>>>>;

/// Overwrites bytes `0..2` of the `send`-th message this side sends with `value` (an unmasked
/// input, as a forgotten mask would send): the negative control.
#[derive(Clone, Copy, Debug)]
struct Leak {
    send: usize,
    value: u16,
}

/// A channel that logs every message it receives, and optionally leaks.
struct Recorder<C> {
    inner: C,
    log: Log,
    sent: usize,
    leak: Option<Leak>,
}

impl<C: Channel> Channel for Recorder<C> {
    fn send_bytes(&mut self, data: &[u8]) -> TResult<()> {
        let i = self.sent;
        self.sent += 1;
        match self.leak {
            Some(l) if l.send == i && data.len() >= 2 => {
                let mut d = data.to_vec();
                d[..2].copy_from_slice(&l.value.to_le_bytes());
                self.inner.send_bytes(&d)
            }
            _ => self.inner.send_bytes(data),
        }
    }
    fn recv_bytes_max(&mut self, max: usize) -> TResult<Vec<u8>> {
        let v = self.inner.recv_bytes_max(max)?;
        self.log.lock().unwrap().push(v.clone());
        Ok(v)
    }
    fn flush(&mut self) -> TResult<()> {
        self.inner.flush()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
    fn peer(&self) -> &str {
        self.inner.peer()
    }
    fn max_frame(&self) -> u64 {
        self.inner.max_frame()
    }
    fn set_max_frame(&mut self, max: u64) {
        self.inner.set_max_frame(max)
    }
}

fn recorder<C: Channel>(inner: C, leak: Option<Leak>) -> (Recorder<C>, Log) {
    let log = Log::default();
    (
        Recorder {
            inner,
            log: log.clone(),
            sent: 0,
            leak,
        },
        log,
    )
}

/// What each side received in one session.
struct Transcript {
    server: Vec<Vec<u8>>,
    client: Vec<Vec<u8>>,
    /// Index in `client` of the declared output (the server's share of the hidden state).
    output: usize,
    /// Lengths of what the client sent (to place the negative control's leak).
    client_sent: Vec<usize>,
    /// How many of them the session's setup sent (before the request).
    client_setup_sends: usize,
}

struct Run<'a> {
    graph: &'a Graph,
    weights: RandomWeights,
    ids: &'a [u32],
    server_seed: [u8; 32],
    client_seed: [u8; 32],
    leak: Option<Leak>,
    config: &'a RunConfig,
}

fn seed(tag: u8, i: usize) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[0] = tag;
    s[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    s
}

fn session(r: &Run<'_>) -> Transcript {
    let config = r.config;
    let (server, (client, output, client_sent, client_setup_sends)) = run_two_party(
        |ch| {
            let (ch, log) = recorder(ch, None);
            let mut s =
                Server::accept_seeded(ch, r.graph, &r.weights, config, r.server_seed).unwrap();
            s.serve().unwrap();
            drop(s);
            let v = std::mem::take(&mut *log.lock().unwrap());
            v
        },
        |ch| {
            let (ch, log) = recorder(ch, r.leak);
            let sent = Arc::new(Mutex::new(Vec::new()));
            let ch = SentLens {
                inner: ch,
                lens: sent.clone(),
            };
            let t = Instant::now();
            let mut c =
                Client::connect_seeded(ch, r.graph, config, r.ids.len(), r.client_seed).unwrap();
            let setup = t.elapsed().as_secs_f64();
            let setup_sends = sent.lock().unwrap().len();
            let (out, _) = c.infer(r.ids).unwrap();
            if std::env::var_os("DUET_LEAK_TIMES").is_some() {
                println!(
                    "setup {setup:.2} s, request {:.2} s",
                    t.elapsed().as_secs_f64() - setup
                );
            }
            let h = out.hidden.expect("an encoder reveals its hidden state");
            let output = log.lock().unwrap().len() - 1;
            assert_eq!(
                log.lock().unwrap()[output].len(),
                h.rows * h.cols * 8,
                "the last message of a request is the server's share of the output"
            );
            c.close().unwrap();
            let v = std::mem::take(&mut *log.lock().unwrap());
            let s = std::mem::take(&mut *sent.lock().unwrap());
            (v, output, s, setup_sends)
        },
    );
    Transcript {
        server,
        client,
        output,
        client_sent,
        client_setup_sends,
    }
}

/// Logs the lengths of what this side sends (outermost wrapper: before any leak).
struct SentLens<C> {
    inner: C,
    lens: Arc<Mutex<Vec<usize>>>,
}

impl<C: Channel> Channel for SentLens<C> {
    fn send_bytes(&mut self, data: &[u8]) -> TResult<()> {
        self.lens.lock().unwrap().push(data.len());
        self.inner.send_bytes(data)
    }
    fn recv_bytes_max(&mut self, max: usize) -> TResult<Vec<u8>> {
        self.inner.recv_bytes_max(max)
    }
    fn flush(&mut self) -> TResult<()> {
        self.inner.flush()
    }
    fn stats(&self) -> ChannelStats {
        self.inner.stats()
    }
    fn peer(&self) -> &str {
        self.inner.peer()
    }
    fn max_frame(&self) -> u64 {
        self.inner.max_frame()
    }
    fn set_max_frame(&mut self, max: u64) {
        self.inner.set_max_frame(max)
    }
}

/// Per-bit counts of ones over the runs of one group, and the message sizes every run shares.
struct Tally {
    lens: Vec<usize>,
    ones: Vec<Vec<u16>>,
    runs: usize,
}

impl Tally {
    fn new() -> Self {
        Self {
            lens: Vec::new(),
            ones: Vec::new(),
            runs: 0,
        }
    }

    /// Adds one run's received messages (`skip`: indices left out, the declared output).
    fn add(&mut self, msgs: &[Vec<u8>], skip: Option<usize>, what: &str) {
        let lens: Vec<usize> = msgs.iter().map(Vec::len).collect();
        if self.runs == 0 {
            self.lens = lens;
            self.ones = self.lens.iter().map(|&n| vec![0u16; n * 8]).collect();
        } else {
            // shapes-only leakage: the count and sizes never change
            assert_eq!(
                lens.len(),
                self.lens.len(),
                "{what}: the number of received messages changed between runs"
            );
            if let Some(i) = lens.iter().zip(&self.lens).position(|(a, b)| a != b) {
                panic!(
                    "{what}: received message {i} is {} bytes in one run and {} in another",
                    lens[i], self.lens[i]
                );
            }
        }
        for (i, (m, ones)) in msgs.iter().zip(&mut self.ones).enumerate() {
            if Some(i) == skip {
                continue;
            }
            for (byte, o) in m.iter().zip(ones.chunks_exact_mut(8)) {
                for (b, c) in o.iter_mut().enumerate() {
                    *c += u16::from((byte >> b) & 1);
                }
            }
        }
        self.runs += 1;
    }
}

/// Two-sided Fisher exact p-values for `2r` runs split `r`/`r`: `table[k][a]` is the p-value
/// of `a` ones among group A's `r` runs given `k` ones in all.
fn fisher_table(r: usize) -> Vec<Vec<f64>> {
    let n = 2 * r;
    let lf: Vec<f64> = (0..=n)
        .scan(0.0f64, |acc, i| {
            if i > 0 {
                *acc += (i as f64).ln();
            }
            Some(*acc)
        })
        .collect();
    let lc = |a: usize, b: usize| lf[a] - lf[b] - lf[a - b];
    (0..=n)
        .map(|k| {
            let lo = k.saturating_sub(r);
            let hi = k.min(r);
            let prob: Vec<f64> = (0..=r)
                .map(|a| {
                    if a < lo || a > hi {
                        0.0
                    } else {
                        (lc(r, a) + lc(r, k - a) - lc(n, k)).exp()
                    }
                })
                .collect();
            (0..=r)
                .map(|a| {
                    let pa = prob[a] * (1.0 + 1e-9);
                    prob.iter().filter(|&&p| p <= pa).sum::<f64>().min(1.0)
                })
                .collect()
        })
        .collect()
}

/// The most significant bit of a comparison.
#[derive(Clone, Debug)]
#[allow(dead_code, reason = "read through Debug in failure messages")]
struct Finding {
    msg: usize,
    len: usize,
    byte: usize,
    bit: usize,
    ones: (u16, u16),
    p: f64,
}

struct Comparison {
    bits: usize,
    threshold: f64,
    flagged: Vec<Finding>,
    min: Option<Finding>,
}

/// Fisher's exact test on every bit of every message (except `skip`), Bonferroni over bits.
fn compare(a: &Tally, b: &Tally, skip: Option<usize>) -> Comparison {
    assert_eq!(a.runs, b.runs);
    assert_eq!(
        a.lens, b.lens,
        "message sizes differ between the two groups"
    );
    let table = fisher_table(a.runs);
    let bits: usize = a
        .lens
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != skip)
        .map(|(_, n)| n * 8)
        .sum();
    let threshold = ALPHA / bits as f64;
    let mut flagged = Vec::new();
    let mut min: Option<Finding> = None;
    for (msg, (oa, ob)) in a.ones.iter().zip(&b.ones).enumerate() {
        if Some(msg) == skip {
            continue;
        }
        for (j, (&x, &y)) in oa.iter().zip(ob).enumerate() {
            let k = usize::from(x) + usize::from(y);
            if k == 0 || k == 2 * a.runs {
                continue;
            }
            let p = table[k][usize::from(x)];
            let better = min.as_ref().is_none_or(|m| p < m.p);
            if better || p < threshold {
                let f = Finding {
                    msg,
                    len: a.lens[msg],
                    byte: j / 8,
                    bit: j % 8,
                    ones: (x, y),
                    p,
                };
                if p < threshold {
                    flagged.push(f.clone());
                }
                if better {
                    min = Some(f);
                }
            }
        }
    }
    Comparison {
        bits,
        threshold,
        flagged,
        min,
    }
}

/// Uniformity of bulk messages, pooled over both groups.
///
/// A uniformly masked message (a share of `Z_2^l`, an OT or Ferret message, a ciphertext's
/// uniform part, a curve point's encoding) has every bit 1 in about half the runs, except bits
/// its encoding fixes (the high bytes of `Z_2^l` elements stored in `u64`s, headers, lengths,
/// the sign bit of a Ristretto point's encoding) and the top bits of coefficients mod `q`
/// (biased, since `q` is not a power of two). So the assertion is: in every received message
/// of at least [`BULK_BYTES`], among the bits of the low byte of each 8-byte word that are not
/// fixed (constant over all `2R` runs), each bit position has frequency in `[0.45, 0.55]`
/// (at least 128 R cells per bit position in the smallest bulk message: 0.05 is more than 4
/// standard deviations at R = 24). Returns the messages' frequency lines for the log.
fn uniformity(a: &Tally, b: &Tally, skip: Option<usize>, what: &str) -> Vec<String> {
    let runs = a.runs + b.runs;
    let mut lines = Vec::new();
    for (msg, (oa, ob)) in a.ones.iter().zip(&b.ones).enumerate() {
        let len = a.lens[msg];
        if Some(msg) == skip || len < BULK_BYTES {
            continue;
        }
        let mut freqs = [None::<f64>; 8];
        for (bit, f) in freqs.iter_mut().enumerate() {
            let (mut ones, mut cells) = (0u64, 0u64);
            for w in 0..len / 8 {
                let k = usize::from(oa[w * 64 + bit]) + usize::from(ob[w * 64 + bit]);
                if k != 0 && k != runs {
                    ones += k as u64;
                    cells += runs as u64;
                }
            }
            if cells > 0 {
                *f = Some(ones as f64 / cells as f64);
            }
        }
        let bad: Vec<(usize, f64)> = freqs
            .iter()
            .enumerate()
            .filter_map(|(b, f)| f.filter(|f| !(0.45..=0.55).contains(f)).map(|f| (b, f)))
            .collect();
        lines.push(format!(
            "{what} msg {msg} ({len} B): low-byte bit frequencies {:?}",
            freqs.map(|f| f.map(|f| (f * 1000.0).round() / 1000.0))
        ));
        assert!(
            bad.is_empty(),
            "{what}: received message {msg} ({len} bytes) is not uniform in its words' low \
             byte: bits (bit, frequency) {bad:?}"
        );
    }
    lines
}

/// Where the in-transit leak goes: the client's first bulk message of `u64` words in the
/// request (after the setup), found in an honest transcript.
fn leak_position(t: &Transcript) -> usize {
    (t.client_setup_sends..t.client_sent.len())
        .find(|&i| t.client_sent[i] >= BULK_BYTES && t.client_sent[i] % 8 == 0)
        .expect("the request sends a bulk message")
}

/// The observer's received messages of `r` sessions per group, in two tallies; for the server's
/// view also two tallies of a leaky channel's deliveries (see [`leaky_delivery`]).
struct Tallies {
    a: Tally,
    b: Tally,
    leaky: Option<(Tally, Tally, usize)>,
    skip: Option<usize>,
    secs: f64,
}

/// What the server would receive over a channel that writes the client's first token id into
/// bytes `0..2` of message `at` in transit: an unmasked share of the input, as a forgotten
/// mask would send. The same sessions' transcripts serve the honest test and this control.
fn leaky_delivery(server: &[Vec<u8>], at: usize, ids: &[u32]) -> Vec<Vec<u8>> {
    let mut v = server.to_vec();
    v[at][..2].copy_from_slice(&u16::try_from(ids[0]).unwrap().to_le_bytes());
    v
}

fn tallies<'g>(
    r: usize,
    make: &dyn Fn(usize, bool) -> Run<'g>,
    observer_is_server: bool,
) -> Tallies {
    let t = Instant::now();
    let mut out = Tallies {
        a: Tally::new(),
        b: Tally::new(),
        leaky: None,
        skip: None,
        secs: 0.0,
    };
    for i in 0..r {
        for second in [false, true] {
            let run = make(i, second);
            let tr = session(&run);
            let tally = if second { &mut out.b } else { &mut out.a };
            if observer_is_server {
                tally.add(&tr.server, None, "server view");
                let at = match &out.leaky {
                    Some((_, _, at)) => *at,
                    None => leak_position(&tr),
                };
                let (la, lb, _) = out
                    .leaky
                    .get_or_insert_with(|| (Tally::new(), Tally::new(), at));
                let l = if second { lb } else { la };
                l.add(&leaky_delivery(&tr.server, at, run.ids), None, "leaky");
            } else {
                // everything the client receives except the declared output
                assert!(out.skip.is_none_or(|s| s == tr.output));
                out.skip = Some(tr.output);
                tally.add(&tr.client, out.skip, "client view");
            }
        }
    }
    out.secs = t.elapsed().as_secs_f64();
    out
}

/// The negative control on `leaky` tallies: the statistic must flag exactly the leaked byte.
fn assert_leak_detected(a: &Tally, b: &Tally, at: usize, secs: f64) {
    let c = compare(a, b, None);
    report("negative control", &c, a.runs, secs);
    assert!(
        !c.flagged.is_empty(),
        "the statistic missed an unmasked input (smallest p {:?})",
        c.min
    );
    // X1[0] = 0 and X2[0] = 255: the low byte's eight bits of the message leaked into
    for f in &c.flagged {
        assert_eq!((f.msg, f.byte), (at, 0), "flagged elsewhere: {f:?}");
    }
    assert_eq!(c.flagged.len(), 8, "{:?}", c.flagged);
}

fn assert_independent(what: &str, a: &Tally, b: &Tally, skip: Option<usize>, secs: f64) {
    let c = compare(a, b, skip);
    report(what, &c, a.runs, secs);
    assert!(
        c.flagged.is_empty(),
        "{what}: {} bits distinguish the two groups (threshold p < {:.2e}); first: {:?}",
        c.flagged.len(),
        c.threshold,
        &c.flagged[..c.flagged.len().min(8)]
    );
    let lines = uniformity(a, b, skip, what);
    println!("{what}: {} bulk messages uniform", lines.len());
    if std::env::var_os("DUET_LEAK_VERBOSE").is_some() {
        for line in lines {
            println!("{line}");
        }
    }
}

/// The server's view (fixed server seed and weights) under client inputs X1 and X2 (client
/// seeds vary): same sizes, no bit distinguishes them, bulk messages uniform.
#[test]
fn server_view_is_independent_of_the_client_input() {
    let g = Graph::build(&config());
    let rc = run_config();
    let make = |i: usize, second: bool| Run {
        graph: &g,
        weights: RandomWeights { seed: 1 },
        ids: if second { &X2 } else { &X1 },
        server_seed: seed(1, 0),
        client_seed: seed(if second { 11 } else { 10 }, i),
        leak: None,
        config: &rc,
    };
    let t = tallies(runs(), &make, true);
    assert_independent("server view", &t.a, &t.b, t.skip, t.secs);
    let (la, lb, at) = t.leaky.as_ref().unwrap();
    assert_leak_detected(la, lb, *at, t.secs);
}

/// The client's view (fixed client seed and input) under two weight sets (server seeds vary):
/// same sizes, no bit of anything but the declared output distinguishes them, bulk messages
/// uniform.
#[test]
#[ignore = "the CI budget (25 min for the whole suite) holds one view: run with --include-ignored (passed at R = 24 and 40, see above)"]
fn client_view_is_independent_of_the_weights() {
    let g = Graph::build(&config());
    let rc = run_config();
    let make = |i: usize, second: bool| Run {
        graph: &g,
        weights: RandomWeights {
            seed: if second { 2 } else { 1 },
        },
        ids: &X1,
        server_seed: seed(if second { 21 } else { 20 }, i),
        client_seed: seed(2, 0),
        leak: None,
        config: &rc,
    };
    let t = tallies(runs(), &make, false);
    assert!(t.skip.is_some());
    assert_independent("client view", &t.a, &t.b, t.skip, t.secs);
}

/// The negative control end to end: a client whose channel really sends its first token id
/// unmasked (two bytes of its first bulk message of the request overwritten) is caught by the
/// same statistic at the same message; the server computes on the corrupted message, so
/// later messages may differ too, which the statistic may flag as well. Costs another `2R`
/// sessions, so it is not run on CI (the server-view test runs the same control on the
/// deliveries of a leaky channel).
#[test]
#[ignore = "2R more sessions; the server-view test runs the control in transit"]
fn negative_control_end_to_end() {
    let g = Graph::build(&config());
    let rc = run_config();
    let honest = session(&Run {
        graph: &g,
        weights: RandomWeights { seed: 1 },
        ids: &X1,
        server_seed: seed(1, 0),
        client_seed: seed(12, 0),
        leak: None,
        config: &rc,
    });
    let at = leak_position(&honest);
    let make = |i: usize, second: bool| {
        let ids: &[u32] = if second { &X2 } else { &X1 };
        Run {
            graph: &g,
            weights: RandomWeights { seed: 1 },
            ids,
            server_seed: seed(1, 0),
            client_seed: seed(if second { 11 } else { 10 }, i),
            leak: Some(Leak {
                send: at,
                value: u16::try_from(ids[0]).unwrap(),
            }),
            config: &rc,
        }
    };
    let t = tallies(runs(), &make, true);
    let c = compare(&t.a, &t.b, None);
    report("negative control end to end", &c, t.a.runs, t.secs);
    assert!(
        c.flagged.iter().any(|f| (f.msg, f.byte) == (at, 0)),
        "the statistic missed an unmasked input at message {at} (smallest p {:?})",
        c.min
    );
}

fn report(what: &str, c: &Comparison, r: usize, secs: f64) {
    println!(
        "{what}: R = {r} runs per group, {} bits tested, threshold p < {:.2e}, {} flagged, \
         smallest p {:?}, {secs:.1} s",
        c.bits,
        c.threshold,
        c.flagged.len(),
        c.min
    );
}

/// Client inputs: extreme ids (0 and vocabulary - 1), repeated; the two first ids differ in
/// every bit of their low byte (the negative control writes the first id).
const X1: [u32; 4] = [0, 0, 255, 0];
const X2: [u32; 4] = [255, 17, 0, 255];

/// The `duet` preset with the IKNP COT backend on CI (`DUET_LEAK_COT=b11` or `b13`: Ferret
/// silent OT with that LPN set; `b13` is the preset's own). Ferret's extension runs inside the
/// request and makes a session of this size about 3x slower; the protocols above the COTs are
/// the same code for both backends.
fn run_config() -> RunConfig {
    let cot = match std::env::var("DUET_LEAK_COT").as_deref() {
        Ok("b13") => CotBackend::Ferret(FerretParams::B13),
        Ok("b11") => CotBackend::Ferret(FerretParams::B11),
        _ => CotBackend::Iknp,
    };
    let mut opts = RunConfig::fixed("duet")
        .base_options(&Graph::build(&config()))
        .unwrap();
    opts.protocol = opts.protocol.with_cot(cot);
    RunConfig::given(&opts)
}

/// The seeds reach every random choice: the same two seeds give byte-identical transcripts,
/// another client seed another one.
#[test]
fn seeded_sessions_are_reproducible() {
    let g = Graph::build(&config());
    let rc = run_config();
    let run = Run {
        config: &rc,
        graph: &g,
        weights: RandomWeights { seed: 1 },
        ids: &X1,
        server_seed: seed(1, 0),
        client_seed: seed(2, 0),
        leak: None,
    };
    let t = Instant::now();
    let a = session(&run);
    println!("one session: {:.2} s", t.elapsed().as_secs_f64());
    let b = session(&run);
    assert!(a.server == b.server, "same seeds, different server view");
    assert!(a.client == b.client, "same seeds, different client view");
    let c = session(&Run {
        client_seed: seed(2, 1),
        ..run
    });
    assert!(a.server != c.server, "the client's seed changes nothing");
    let sizes: usize = a.server.iter().map(Vec::len).sum();
    let sizec: usize = a.client.iter().map(Vec::len).sum();
    println!(
        "server receives {} messages ({sizes} B), client {} ({sizec} B)",
        a.server.len(),
        a.client.len(),
    );
}
