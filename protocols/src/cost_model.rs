//! The cost model: predicted bytes, flights and compute seconds of an operator, and the
//! per-machine constants ([`MachineProfile`]) that turn operation counts into seconds.
//!
//! An operator's [`Estimate`] has three parts:
//! - `bytes`: payload bytes of both directions, from the operator's exact `cost()` formula
//!   (what [`duet_transport::ChannelStats`] counts: payload, no frame headers);
//! - `flights`: one-way message flights of both directions (a round trip is **two** flights),
//!   as [`duet_transport::ChannelStats::total_rounds`] counts them from one endpoint;
//! - `compute_s`: local compute of both parties on the critical path, `sum(count x constant)`
//!   over the counts of a [`Work`] and the constants of a [`MachineProfile`].
//!
//! Its latency on a network ([`Estimate::latency`]) is
//! `compute_s + bytes * 8 / rate + flights * rtt / 2`: each flight pays half a round trip
//! (one-way delay), and all bytes pass one link of `rate` bits per second (an unlimited
//! rate has no bandwidth term). The named networks are those of
//! [`NetProfile::named`]: `lan` 3 Gbit/s and 1 ms RTT, `wan` 400 Mbit/s and 10 ms,
//! `wan-slow` 100 Mbit/s and 80 ms.
//!
//! The counts come from the same formulas as the bytes ([`he_work`] for HE matmul plans,
//! [`nl_work`] for the OT-based protocols); the constants are fitted by `duet calibrate`
//! (`duet_bench::calibrate`) with non-negative least squares, so a constant whose count is
//! nearly collinear with others in the samples (e.g. encryptions with products) may come out
//! as zero, its time carried by the others. On the in-memory pair the fitted model predicts
//! a 128x768x768 matmul, GELU 128x3072, SoftMax 12x128x128 and LayerNorm 128x768 (Ferret and
//! IKNP) within 30% of their measured time on the machine it was fitted on.
//!
//! A default profile ships ([`MachineProfile::default_profile`], `protocols/profiles/default.json`,
//! made by `duet calibrate` in release mode on the machine and date it names); another
//! machine's profile is loaded with [`MachineProfile::load`].

use crate::{ProtocolError, Result};
use duet_mpc::nonlinear::{Cost as NlCost, CotBackend, LeafOt, NlConfig};
use duet_transport::relay::NetProfile;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The JSON of the shipped default profile.
pub const DEFAULT_PROFILE_JSON: &str = include_str!("../profiles/default.json");

/// Per-machine constants, in seconds per counted operation (both parties' compute summed
/// where they work one after the other, as in every Duet protocol).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachineProfile {
    /// The machine it was measured on (CPU, cores).
    pub machine: String,
    /// When (ISO date) and how (load, build) it was measured.
    pub measured: String,
    /// Plaintext-ciphertext polynomial product at `N = 8192`, including the server's
    /// on-the-fly weight encoding and NTT (scaled linearly by `N / 8192` for other degrees).
    pub he_product_s: f64,
    /// Plaintext-ciphertext product at `N = 4096` (the embedding lookup's parameters, whose
    /// products accumulate a whole vocabulary), including the weight encoding.
    pub he_product_4096_s: f64,
    /// One key switch of the packing (server) at `N = 8192`.
    pub key_switch_s: f64,
    /// The client's encryption of one input polynomial (and the server's decoding of it) at
    /// `N = 8192`.
    pub he_encrypt_s: f64,
    /// One output ciphertext: the server's flooding and serialisation and the client's
    /// decryption, at `N = 8192`.
    pub he_decrypt_s: f64,
    /// One slot-encoded element-wise product polynomial (encryption, product, decryption).
    pub slot_product_s: f64,
    /// One correlated OT consumed from a Ferret pool by an OT-based protocol (the
    /// protocol's local hashing / AES per COT).
    pub cot_s: f64,
    /// One Ferret main iteration (both parties: GGM trees and LPN encoding).
    pub ferret_iteration_s: f64,
    /// One IKNP COT (extension, transpose, hashing), consumed inline.
    pub iknp_cot_s: f64,
    /// One KK13 1-of-`2^m` leaf OT of a millionaire (the sender hashes `2^m` rows), with
    /// [`LeafOt::Kk13`].
    pub kk13_leaf_s: f64,
    /// One word of an OT-based matrix product (both parties: pad expansion by AES, the
    /// holder's corrections, the chooser's unmasking), counted by
    /// [`duet_mpc::nonlinear::matmul_known_words`].
    pub ot_matmul_word_s: f64,
    /// Per byte of protocol traffic (local serialisation, copying, hashing of messages).
    pub byte_s: f64,
    /// Per flight on the in-memory pair (thread hand-over), also paid on a real network.
    pub flight_s: f64,
    /// How much longer the compute takes when the two parties run as two processes (each with
    /// its own thread pool, on the same machine's cores, as `duet bench model` runs them) than
    /// as two threads of the calibration's process: a factor on `sum(count x constant)`
    /// (1: the same). Fitted by `duet calibrate --harness`.
    pub party_factor: f64,
    /// A further factor on the Ferret work (`cot_s` per pooled COT consumed and
    /// `ferret_iteration_s` per iteration) in that setting: the GGM and LPN passes of two
    /// processes contend for memory bandwidth as two threads of one process do not (1: none).
    /// Fitted by `duet calibrate --harness`.
    pub ferret_factor: f64,
    /// Seconds per payload byte the transport between the two processes needs whatever the
    /// link's rate (QUIC's encryption and packet handling, the emulated link's forwarding):
    /// a link carries a byte in the larger of this and `8 / rate`. Fitted by
    /// `duet calibrate --harness`.
    pub transport_byte_s: f64,
    /// Seconds per flight beyond the network's one-way delay (QUIC, forwarding, waking the
    /// receiver). Fitted by `duet calibrate --harness`.
    pub transport_flight_s: f64,
}

/// Operation counts of one operator run (fractional: counts at other ring degrees are scaled).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Work {
    /// Plaintext-ciphertext products (`N = 8192` equivalents).
    pub he_products: f64,
    /// Plaintext-ciphertext products at `N = 4096`.
    pub he_products_4096: f64,
    /// Key switches.
    pub key_switches: f64,
    /// Input polynomials encrypted.
    pub encryptions: f64,
    /// Output ciphertexts decrypted.
    pub decryptions: f64,
    /// Slot-encoded element-wise product polynomials.
    pub slot_products: f64,
    /// COTs consumed from a Ferret pool.
    pub cots: f64,
    /// Ferret main iterations run.
    pub ferret_iterations: f64,
    /// IKNP COTs.
    pub iknp_cots: f64,
    /// KK13 leaf OTs.
    pub kk13_leaves: f64,
    /// Words of OT-based matrix products.
    pub ot_matmul_words: f64,
    /// Payload bytes.
    pub bytes: f64,
    /// Flights.
    pub flights: f64,
}

impl std::ops::Add for Work {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        let v = self.values();
        let w = o.values();
        let mut out = [0.0; WORK_FEATURES];
        for ((o, a), b) in out.iter_mut().zip(v).zip(w) {
            *o = a + b;
        }
        Self::from_values(out)
    }
}

impl std::ops::AddAssign for Work {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

/// Number of counts in a [`Work`] (and constants in a [`MachineProfile`]).
pub const WORK_FEATURES: usize = 13;

/// The deployment constants of a [`MachineProfile`] (not multiplied by a [`Work`] count):
/// their JSON keys, in the order of [`MachineProfile::deployment`].
pub const DEPLOYMENT_NAMES: [&str; 4] = [
    "party_factor",
    "ferret_factor",
    "transport_byte_s",
    "transport_flight_s",
];

/// The names of the counts, in the order of [`Work::values`].
pub const WORK_NAMES: [&str; WORK_FEATURES] = [
    "he_product_s",
    "he_product_4096_s",
    "key_switch_s",
    "he_encrypt_s",
    "he_decrypt_s",
    "slot_product_s",
    "cot_s",
    "ferret_iteration_s",
    "iknp_cot_s",
    "kk13_leaf_s",
    "ot_matmul_word_s",
    "byte_s",
    "flight_s",
];

impl Work {
    /// The counts as an array (order of [`WORK_NAMES`]).
    pub fn values(&self) -> [f64; WORK_FEATURES] {
        [
            self.he_products,
            self.he_products_4096,
            self.key_switches,
            self.encryptions,
            self.decryptions,
            self.slot_products,
            self.cots,
            self.ferret_iterations,
            self.iknp_cots,
            self.kk13_leaves,
            self.ot_matmul_words,
            self.bytes,
            self.flights,
        ]
    }

    /// The inverse of [`Work::values`].
    pub fn from_values(v: [f64; WORK_FEATURES]) -> Self {
        let [he_products, he_products_4096, key_switches, encryptions, decryptions, slot_products, cots, ferret_iterations, iknp_cots, kk13_leaves, ot_matmul_words, bytes, flights] =
            v;
        Self {
            he_products,
            he_products_4096,
            key_switches,
            encryptions,
            decryptions,
            slot_products,
            cots,
            ferret_iterations,
            iknp_cots,
            kk13_leaves,
            ot_matmul_words,
            bytes,
            flights,
        }
    }

    /// The same work `times` times.
    pub fn scaled(&self, times: f64) -> Self {
        let mut v = self.values();
        for x in &mut v {
            *x *= times;
        }
        Self::from_values(v)
    }
}

/// The HE work of one matmul plan: its products (at `N = 4096` apart, else scaled to
/// `N = 8192`), key switches, input encryptions and output decryptions (scaled to `N = 8192`).
/// Traffic is not included.
pub fn he_work(plan: &crate::MatmulPlan) -> Work {
    let c = plan.cost();
    let n = plan.params().degree();
    let scale = n as f64 / 8192.0;
    let mut w = Work {
        key_switches: c.key_switches as f64 * scale,
        encryptions: plan.input_count() as f64 * scale,
        decryptions: plan.output_count() as f64 * scale,
        ..Work::default()
    };
    if n == 4096 {
        w.he_products_4096 = c.products as f64;
    } else {
        w.he_products = c.products as f64 * scale;
    }
    w
}

/// The work of a non-linear protocol run with `cfg` whose exact cost (as a function of the
/// configuration) is `cost`: its bytes and flights, its COTs (Ferret or IKNP by `cfg.cot`),
/// and with [`LeafOt::Kk13`] its KK13 leaf OTs, counted as the COTs the same protocol would
/// take with random-OT leaves instead (`m` per leaf of radix `m`) less those it takes. The
/// Ferret iterations that refill the pools depend on the session's state and are not counted
/// here. Returns the cost too.
pub fn nl_work<F>(cfg: NlConfig, cost: F) -> Result<(NlCost, Work)>
where
    F: Fn(NlConfig) -> Result<NlCost>,
{
    let c = cost(cfg)?;
    let mut w = Work {
        bytes: c.bytes as f64,
        flights: c.rounds as f64,
        ..Work::default()
    };
    let cots = c.cots.total() as f64;
    match cfg.cot {
        CotBackend::Ferret(_) => w.cots = cots,
        CotBackend::Iknp => w.iknp_cots = cots,
    }
    if cfg.leaf_ot == LeafOt::Kk13 && c.cots.total() > 0 {
        let rot = cost(NlConfig {
            leaf_ot: LeafOt::Rot,
            ..cfg
        })?;
        w.kk13_leaves =
            (rot.cots.total().saturating_sub(c.cots.total()) / u64::from(cfg.radix.max(1))) as f64;
    }
    Ok((c, w))
}

impl MachineProfile {
    /// The shipped profile (`protocols/profiles/default.json`).
    pub fn default_profile() -> Result<Self> {
        Self::from_json(DEFAULT_PROFILE_JSON)
            .map_err(|e| ProtocolError::Config(format!("the shipped default profile: {e}")))
    }

    /// Reads a profile written by `duet calibrate` (JSON object with every constant).
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ProtocolError::Config(format!(
                "cannot read machine profile {}: {e}",
                path.display()
            ))
        })?;
        Self::from_json(&text)
            .map_err(|e| ProtocolError::Config(format!("machine profile {}: {e}", path.display())))
    }

    /// Parses a profile from JSON: a flat object with the string fields `machine` and
    /// `measured` and a finite non-negative number for every constant. Unknown keys are
    /// refused, so a typo cannot silently leave a constant at zero.
    pub fn from_json(text: &str) -> std::result::Result<Self, String> {
        let fields = flat_json::parse(text)?;
        let mut machine = None;
        let mut measured = None;
        let mut consts: [Option<f64>; WORK_FEATURES] = [None; WORK_FEATURES];
        let mut deploy: [Option<f64>; 4] = [None; 4];
        for (k, v) in fields {
            match (k.as_str(), v) {
                ("machine", flat_json::Value::Str(s)) => machine = Some(s),
                ("measured", flat_json::Value::Str(s)) => measured = Some(s),
                (name, flat_json::Value::Num(x)) => {
                    if !x.is_finite() || x < 0.0 {
                        return Err(format!("{name} = {x}: must be finite and >= 0"));
                    }
                    let slot = match WORK_NAMES.iter().position(|n| *n == name) {
                        Some(i) => consts.get_mut(i),
                        None => DEPLOYMENT_NAMES
                            .iter()
                            .position(|n| *n == name)
                            .and_then(|i| deploy.get_mut(i)),
                    };
                    *slot.ok_or_else(|| format!("unknown key {name:?}"))? = Some(x);
                }
                (name, _) => return Err(format!("key {name:?} has the wrong type")),
            }
        }
        let mut v = [0.0; WORK_FEATURES];
        for ((dst, c), name) in v.iter_mut().zip(consts).zip(WORK_NAMES) {
            *dst = c.ok_or_else(|| format!("missing constant {name:?}"))?;
        }
        let mut d = [0.0; 4];
        for ((dst, c), name) in d.iter_mut().zip(deploy).zip(DEPLOYMENT_NAMES) {
            *dst = c.ok_or_else(|| format!("missing constant {name:?}"))?;
        }
        let mut p = Self::from_constants(v);
        let [party_factor, ferret_factor, transport_byte_s, transport_flight_s] = d;
        if party_factor <= 0.0 || ferret_factor <= 0.0 {
            return Err(format!(
                "party_factor = {party_factor}, ferret_factor = {ferret_factor}: must be > 0"
            ));
        }
        p.party_factor = party_factor;
        p.ferret_factor = ferret_factor;
        p.transport_byte_s = transport_byte_s;
        p.transport_flight_s = transport_flight_s;
        p.machine = machine.ok_or("missing \"machine\"")?;
        p.measured = measured.ok_or("missing \"measured\"")?;
        Ok(p)
    }

    /// The profile as pretty JSON (what [`MachineProfile::from_json`] reads).
    pub fn to_json(&self) -> String {
        let mut s = String::from("{\n");
        s.push_str(&format!(
            "  \"machine\": {},\n",
            flat_json::quote(&self.machine)
        ));
        s.push_str(&format!(
            "  \"measured\": {}",
            flat_json::quote(&self.measured)
        ));
        for (name, v) in WORK_NAMES.iter().zip(self.constants()) {
            s.push_str(&format!(",\n  \"{name}\": {v:e}"));
        }
        for (name, v) in DEPLOYMENT_NAMES.iter().zip(self.deployment()) {
            s.push_str(&format!(",\n  \"{name}\": {v:e}"));
        }
        s.push_str("\n}\n");
        s
    }

    /// The constants (order of [`WORK_NAMES`]).
    pub fn constants(&self) -> [f64; WORK_FEATURES] {
        [
            self.he_product_s,
            self.he_product_4096_s,
            self.key_switch_s,
            self.he_encrypt_s,
            self.he_decrypt_s,
            self.slot_product_s,
            self.cot_s,
            self.ferret_iteration_s,
            self.iknp_cot_s,
            self.kk13_leaf_s,
            self.ot_matmul_word_s,
            self.byte_s,
            self.flight_s,
        ]
    }

    /// The deployment constants (order of [`DEPLOYMENT_NAMES`]).
    pub fn deployment(&self) -> [f64; 4] {
        [
            self.party_factor,
            self.ferret_factor,
            self.transport_byte_s,
            self.transport_flight_s,
        ]
    }

    /// A profile with constants `v` (order of [`WORK_NAMES`]), neutral deployment constants
    /// (factor 1, no transport cost) and empty descriptions.
    pub fn from_constants(v: [f64; WORK_FEATURES]) -> Self {
        let [he_product_s, he_product_4096_s, key_switch_s, he_encrypt_s, he_decrypt_s, slot_product_s, cot_s, ferret_iteration_s, iknp_cot_s, kk13_leaf_s, ot_matmul_word_s, byte_s, flight_s] =
            v;
        Self {
            machine: String::new(),
            measured: String::new(),
            he_product_s,
            he_product_4096_s,
            key_switch_s,
            he_encrypt_s,
            he_decrypt_s,
            slot_product_s,
            cot_s,
            ferret_iteration_s,
            iknp_cot_s,
            kk13_leaf_s,
            ot_matmul_word_s,
            byte_s,
            flight_s,
            party_factor: 1.0,
            ferret_factor: 1.0,
            transport_byte_s: 0.0,
            transport_flight_s: 0.0,
        }
    }

    /// The estimate of `w` when the parties run as two processes: compute
    /// `party_factor x (sum(count x constant) + (ferret_factor - 1) x ferret) + flights x
    /// transport_flight_s` (`ferret`: the Ferret part of the sum, [`Self::ferret_seconds`]),
    /// and the transport's own time `bytes x transport_byte_s` (see [`Estimate::latency`]).
    pub fn estimate(&self, w: &Work) -> Estimate {
        let bytes = w.bytes.max(0.0).round() as u64;
        let flights = w.flights.max(0.0).round() as u64;
        let compute = self.seconds(w) + (self.ferret_factor - 1.0) * self.ferret_seconds(w);
        Estimate {
            bytes,
            flights,
            compute_s: self.party_factor * compute + flights as f64 * self.transport_flight_s,
            transport_s: bytes as f64 * self.transport_byte_s,
        }
    }

    /// The Ferret part of [`Self::seconds`]: pooled COTs consumed and main iterations.
    pub fn ferret_seconds(&self, w: &Work) -> f64 {
        w.cots * self.cot_s + w.ferret_iterations * self.ferret_iteration_s
    }

    /// Compute seconds of `w` in the calibration's setting (both parties in one process):
    /// `sum(count x constant)`.
    pub fn seconds(&self, w: &Work) -> f64 {
        w.values()
            .iter()
            .zip(self.constants())
            .map(|(c, k)| c * k)
            .sum()
    }
}

/// Predicted traffic and compute of an operator (or a sum of them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Payload bytes, both directions.
    pub bytes: u64,
    /// One-way flights, both directions (a round trip is two).
    pub flights: u64,
    /// Compute seconds (both parties, critical path; with a profile's deployment constants,
    /// the two-process factor applied and each flight's `transport_flight_s` included).
    pub compute_s: f64,
    /// The transport's own time for the bytes (`bytes x transport_byte_s`), paid instead of
    /// the link's time when it is the larger.
    pub transport_s: f64,
}

impl std::ops::Add for Estimate {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            bytes: self.bytes + o.bytes,
            flights: self.flights + o.flights,
            compute_s: self.compute_s + o.compute_s,
            transport_s: self.transport_s + o.transport_s,
        }
    }
}

impl std::ops::AddAssign for Estimate {
    fn add_assign(&mut self, o: Self) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Estimate {
    fn sum<I: Iterator<Item = Self>>(it: I) -> Self {
        it.fold(Self::default(), |a, b| a + b)
    }
}

impl Estimate {
    /// An estimate from `work` (bytes and flights taken from it) on `profile`
    /// ([`MachineProfile::estimate`]).
    pub fn from_work(work: &Work, profile: &MachineProfile) -> Self {
        profile.estimate(work)
    }

    /// Predicted wall seconds on `net`:
    /// `compute_s + max(bytes * 8 / rate, transport_s) + flights * rtt / 2`.
    /// A flight is one direction, so a round trip costs one RTT. The bytes take the link's
    /// time or the transport's own time, whichever is longer (the transport works while the
    /// link carries earlier packets); an unlimited rate leaves only the transport's time.
    /// Both terms are proportional to the bytes, so the latency of a sum of estimates is the
    /// sum of their latencies.
    pub fn latency(&self, net: &NetProfile) -> f64 {
        let link = match net.rate_bits_per_s {
            Some(r) if r > 0 => self.bytes as f64 * 8.0 / r as f64,
            _ => 0.0,
        };
        self.compute_s
            + link.max(self.transport_s)
            + self.flights as f64 * net.rtt.as_secs_f64() / 2.0
    }
}

/// A minimal reader of flat JSON objects (string and number values), enough for profiles.
mod flat_json {
    pub enum Value {
        Str(String),
        Num(f64),
    }

    pub fn quote(s: &str) -> String {
        let mut o = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o.push('"');
        o
    }

    struct P<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl P<'_> {
        fn ws(&mut self) {
            while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
                self.i += 1;
            }
        }
        fn peek(&mut self) -> Option<u8> {
            self.ws();
            self.s.get(self.i).copied()
        }
        fn eat(&mut self, c: u8) -> Result<(), String> {
            if self.peek() == Some(c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected '{}' at byte {}", c as char, self.i))
            }
        }
        fn string(&mut self) -> Result<String, String> {
            self.eat(b'"')?;
            let mut out = Vec::new();
            loop {
                let c = *self.s.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match c {
                    b'"' => break,
                    b'\\' => {
                        let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                        self.i += 1;
                        match e {
                            b'"' | b'\\' | b'/' => out.push(e),
                            b'n' => out.push(b'\n'),
                            b't' => out.push(b'\t'),
                            b'r' => out.push(b'\r'),
                            b'u' => {
                                let hex = self
                                    .s
                                    .get(self.i..self.i + 4)
                                    .and_then(|h| std::str::from_utf8(h).ok())
                                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                                    .and_then(char::from_u32)
                                    .ok_or("bad \\u escape")?;
                                self.i += 4;
                                let mut b = [0u8; 4];
                                out.extend_from_slice(hex.encode_utf8(&mut b).as_bytes());
                            }
                            _ => return Err(format!("bad escape at byte {}", self.i)),
                        }
                    }
                    c => out.push(c),
                }
            }
            String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string())
        }
        fn number(&mut self) -> Result<f64, String> {
            self.ws();
            let start = self.i;
            while self
                .s
                .get(self.i)
                .is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c))
            {
                self.i += 1;
            }
            let t = self
                .s
                .get(start..self.i)
                .and_then(|t| std::str::from_utf8(t).ok())
                .unwrap_or("");
            t.parse::<f64>()
                .map_err(|_| format!("expected a number at byte {start}"))
        }
    }

    /// The `(key, value)` pairs of a flat object, in order.
    pub fn parse(text: &str) -> Result<Vec<(String, Value)>, String> {
        let mut p = P {
            s: text.as_bytes(),
            i: 0,
        };
        p.eat(b'{')?;
        let mut out = Vec::new();
        if p.peek() == Some(b'}') {
            p.i += 1;
        } else {
            loop {
                let k = p.string()?;
                p.eat(b':')?;
                let v = if p.peek() == Some(b'"') {
                    Value::Str(p.string()?)
                } else {
                    Value::Num(p.number()?)
                };
                if out.iter().any(|(o, _): &(String, Value)| *o == k) {
                    return Err(format!("duplicate key {k:?}"));
                }
                out.push((k, v));
                match p.peek() {
                    Some(b',') => p.i += 1,
                    Some(b'}') => {
                        p.i += 1;
                        break;
                    }
                    _ => return Err(format!("expected ',' or '}}' at byte {}", p.i)),
                }
            }
        }
        if p.peek().is_some() {
            return Err(format!("trailing characters at byte {}", p.i));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn default_profile_loads_and_round_trips() {
        let p = MachineProfile::default_profile().unwrap();
        assert!(!p.machine.is_empty());
        assert!(p.he_product_s > 0.0 && p.cot_s > 0.0);
        let back = MachineProfile::from_json(&p.to_json()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let p = MachineProfile::default_profile().unwrap();
        let j = p.to_json();
        let e = MachineProfile::from_json(&j.replace("\"cot_s\"", "\"cots\"")).unwrap_err();
        assert!(e.contains("unknown key"), "{e}");
        let e = MachineProfile::from_json(&j.replace("\"byte_s\": ", "\"byte_s\": -")).unwrap_err();
        assert!(e.contains("byte_s"), "{e}");
        assert!(MachineProfile::from_json("{\"machine\": \"x\"").is_err());
        assert!(MachineProfile::from_json("[]").is_err());
        let e = MachineProfile::load(Path::new("/nonexistent/profile.json")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/profile.json"));
    }

    #[test]
    fn latency_adds_bandwidth_and_half_rtt_per_flight() {
        let e = Estimate {
            bytes: 1_000_000,
            flights: 4,
            compute_s: 0.5,
            transport_s: 0.0,
        };
        let wan = NetProfile::named("wan").unwrap();
        // 8 Mbit at 400 Mbit/s = 0.02 s; 4 flights = 2 round trips = 20 ms
        assert!((e.latency(&wan) - (0.5 + 0.02 + 0.02)).abs() < 1e-12);
        let unlimited = NetProfile {
            name: "x".into(),
            rate_bits_per_s: None,
            rtt: Duration::from_millis(2),
        };
        assert!((e.latency(&unlimited) - 0.504).abs() < 1e-12);
        let w = Work {
            he_products: 2.0,
            bytes: 10.0,
            ..Work::default()
        };
        let p = MachineProfile::from_constants([1.0; WORK_FEATURES]);
        assert_eq!(p.seconds(&(w + w)), 24.0);
        assert_eq!(Estimate::from_work(&w, &p).bytes, 10);
    }

    /// The deployment constants: compute scaled, a per-flight cost added, and the bytes take
    /// the longer of the link's time and the transport's own.
    #[test]
    fn latency_takes_the_longer_of_link_and_transport() {
        let mut p = MachineProfile::from_constants([0.0; WORK_FEATURES]);
        p.he_product_s = 1.0;
        p.party_factor = 1.5;
        p.ferret_factor = 2.0;
        p.cot_s = 1e-3;
        p.transport_byte_s = 5e-9;
        p.transport_flight_s = 1e-3;
        let w = Work {
            he_products: 2.0,
            cots: 1000.0,
            bytes: 1e6,
            flights: 4.0,
            ..Work::default()
        };
        let e = p.estimate(&w);
        // 1.5 x (2 s of products + 2 x 1 s of COTs) + 4 flights x 1 ms
        assert!((e.compute_s - (6.0 + 0.004)).abs() < 1e-12);
        assert!((e.transport_s - 0.005).abs() < 1e-15);
        // lan: 8 Mbit at 3 Gbit/s = 2.67 ms < 5 ms of transport; 2 round trips of 1 ms
        let lan = NetProfile::named("lan").unwrap();
        assert!((e.latency(&lan) - (6.004 + 0.005 + 0.002)).abs() < 1e-12);
        // wan: the link's 20 ms is the longer
        let wan = NetProfile::named("wan").unwrap();
        assert!((e.latency(&wan) - (6.004 + 0.02 + 0.02)).abs() < 1e-12);
        // linear in the estimate: the latency of a sum is the sum of the latencies, also for
        // estimates of different sizes (the transport's time is per byte, like the link's)
        let small = p.estimate(&Work {
            bytes: 1e3,
            flights: 1.0,
            ..Work::default()
        });
        for net in [&lan, &wan] {
            let sum = (e + small).latency(net);
            assert!((sum - (e.latency(net) + small.latency(net))).abs() < 1e-12);
        }
        let back = MachineProfile::from_json(&p.to_json()).unwrap();
        assert_eq!(back.deployment(), p.deployment());
        let e = MachineProfile::from_json(
            &p.to_json()
                .replace("\"party_factor\": 1.5e0", "\"party_factor\": 0e0"),
        )
        .unwrap_err();
        assert!(e.contains("party_factor"), "{e}");
    }
}
