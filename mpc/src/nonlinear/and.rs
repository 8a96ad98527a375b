//! AND of boolean shares with Beaver bit triples made from random OT.

#![expect(
    clippy::indexing_slicing,
    reason = "triple indices are below the triple count, which the callers size to the jobs"
)]

use super::batch::{batch_sizes, ranges, slice_b};
use super::cost::Tape;
use super::otx::Triples;
use super::wire::{pack_bits, unpack_bits};
use super::{BShare, Cost, NlConfig, NlSession};
use crate::{MpcError, Result};
use duet_transport::{Channel, Role};

/// A batch of AND jobs for one round: `singles` are `x ∧ y`; `doubles` are
/// `(c ∧ a, c ∧ b)` with a common operand `c` (one triple pair with a shared `b`, 3 opened bits
/// per party instead of 4).
#[derive(Clone, Debug, Default)]
pub(crate) struct AndJobs {
    pub sx: Vec<bool>,
    pub sy: Vec<bool>,
    pub dc: Vec<bool>,
    pub da: Vec<bool>,
    pub db: Vec<bool>,
}

impl AndJobs {
    pub(crate) fn triples(&self) -> usize {
        self.sx.len() + self.dc.len()
    }
    pub(crate) fn open_bits(&self) -> usize {
        2 * self.sx.len() + 3 * self.dc.len()
    }
}

/// One AND round on triples `t[off..]`: one simultaneous exchange of the opened bits.
/// Returns (singles, doubles-a, doubles-b).
pub(crate) fn and_round<C: Channel>(
    role: Role,
    ch: &mut C,
    jobs: &AndJobs,
    t: &Triples,
    off: usize,
) -> Result<(Vec<bool>, Vec<bool>, Vec<bool>)> {
    let (n1, n2) = (jobs.sx.len(), jobs.dc.len());
    if n1 + n2 == 0 {
        return Ok(Default::default());
    }
    if t.b.len() < off + n1 + n2
        || jobs.sy.len() != n1
        || jobs.da.len() != n2
        || jobs.db.len() != n2
    {
        return Err(MpcError::InvalidArgument {
            what: "AND jobs do not match their triples".into(),
        });
    }
    let a0 = |i: usize| t.a[off + i] & 1 == 1;
    let a1 = |i: usize| t.a[off + i] & 2 == 2;
    let b = |i: usize| t.b[off + i];
    let mut open = Vec::with_capacity(jobs.open_bits());
    open.extend((0..n1).map(|i| jobs.sx[i] ^ a0(i)));
    open.extend((0..n1).map(|i| jobs.sy[i] ^ b(i)));
    open.extend((0..n2).map(|i| jobs.dc[i] ^ b(n1 + i)));
    open.extend((0..n2).map(|i| jobs.da[i] ^ a0(n1 + i)));
    open.extend((0..n2).map(|i| jobs.db[i] ^ a1(n1 + i)));
    ch.send_bytes(&pack_bits(&open))?;
    ch.flush()?;
    let theirs = unpack_bits(
        &ch.recv_bytes_max(open.len().div_ceil(8))?,
        open.len(),
        "AND openings",
    )?;
    let o: Vec<bool> = open.iter().zip(&theirs).map(|(x, y)| x ^ y).collect();
    let server = role == Role::Server;
    let c0 = |i: usize| t.c[off + i] & 1 == 1;
    let c1 = |i: usize| t.c[off + i] & 2 == 2;
    let zs = (0..n1)
        .map(|i| {
            let (d, e) = (o[i], o[n1 + i]);
            c0(i) ^ (d & b(i)) ^ (e & a0(i)) ^ (server & d & e)
        })
        .collect();
    let base = 2 * n1;
    let mut za = Vec::with_capacity(n2);
    let mut zb = Vec::with_capacity(n2);
    for i in 0..n2 {
        let j = n1 + i;
        let e = o[base + i];
        let d1 = o[base + n2 + i];
        let d2 = o[base + 2 * n2 + i];
        za.push(c0(j) ^ (d1 & b(j)) ^ (e & a0(j)) ^ (server & d1 & e));
        zb.push(c1(j) ^ (d2 & b(j)) ^ (e & a1(j)) ^ (server & d2 & e));
    }
    Ok((zs, za, zb))
}

/// Tape of one [`and_round`] with `bits` opened bits per party.
pub(crate) fn tape_and_round(tape: &mut Tape, bits: usize) {
    if bits == 0 {
        return;
    }
    let b = bits.div_ceil(8) as u64;
    tape.exchange(b, 1, b, 1);
}

/// Tape of making `n` triple pairs in their own exchange.
pub(crate) fn tape_triples(tape: &mut Tape, n: usize) {
    if n == 0 {
        return;
    }
    // each party sends the extension message of the direction in which it receives
    let (sb, sm) = tape.cots(Role::Client, n);
    let (cb, cm) = tape.cots(Role::Server, n);
    tape.exchange(sb, sm, cb, cm);
}

/// `x ∧ y` element-wise on boolean shares.
///
/// Protocol: Beaver's multiplication with bit triples `(a, b, c = ab)`; the triples come from
/// one IKNP random OT in each direction per triple (see the crate docs of `otx::Triples`), made in
/// one exchange; then each party opens `d = x ⊕ a`, `e = y ⊕ b` and outputs
/// `c ⊕ d b ⊕ e a (⊕ d e for the server)`.
/// Security: semi-honest; `d`, `e` are one-time padded by uniform triple shares.
/// Cost: [`and_cost`]: 32 bytes (IKNP) + 4 bits per AND, 4 flights.
pub fn and<C: Channel>(s: &mut NlSession, ch: &mut C, x: &BShare, y: &BShare) -> Result<BShare> {
    if let (Some(rs), true) = (ranges(x.len()), x.len() == y.len()) {
        let (xb, yb) = (x.to_bits(), y.to_bits());
        let mut out = Vec::with_capacity(x.len());
        for r in rs {
            out.extend(and(s, ch, &slice_b(&xb, &r), &slice_b(&yb, &r))?.to_bits());
        }
        return Ok(BShare::from_bits(&out));
    }
    s.reserve(ch, and_cost(x.len(), s.config()).cots)?;
    if x.len() != y.len() {
        return Err(MpcError::ShapeMismatch {
            what: format!("AND of {} and {} bits", x.len(), y.len()),
        });
    }
    let n = x.len();
    if n == 0 {
        return Ok(BShare::zeros(0));
    }
    let recv = s.triples_begin(ch, n)?;
    let t = s.triples_end(ch, n, recv)?;
    let jobs = AndJobs {
        sx: x.to_bits(),
        sy: y.to_bits(),
        ..Default::default()
    };
    let (z, _, _) = and_round(s.role(), ch, &jobs, &t, 0)?;
    Ok(BShare::from_bits(&z))
}

/// Exact cost of [`and`] on `n` bits: each party sends the IKNP message of `n` COTs
/// (16 bytes each) and `ceil(2n/8)` opening bytes; 4 flights.
pub fn and_cost(n: usize, cfg: NlConfig) -> Cost {
    let mut t = Tape::with_config(cfg);
    tape_and(&mut t, n, cfg);
    t.cost()
}

/// [`and_cost`] on a tape.
pub fn tape_and(t: &mut Tape, n: usize, cfg: NlConfig) {
    let _ = cfg;
    for m in batch_sizes(n) {
        tape_triples(t, m);
        tape_and_round(t, 2 * m);
    }
}

/// Widths of the XOR-OTs of [`and_pp`] for `n1` single and `n2` double jobs: per single two
/// 1-bit OTs, per double one 2-bit and two 1-bit OTs.
fn pp_width(n1: usize) -> impl Fn(usize) -> u32 + Copy + Sync {
    move |j: usize| {
        if j < 2 * n1 || (j - 2 * n1) % 3 != 0 {
            1
        } else {
            2
        }
    }
}

/// XOR-OTs of [`and_pp`].
pub(crate) fn pp_ots(jobs: &AndJobs) -> usize {
    2 * jobs.sx.len() + 3 * jobs.dc.len()
}

/// One AND level in a single direction (a ping-pong step): `chooser` sends one derandomisation
/// bit per XOR-OT, its peer answers with the corrections; returns (singles, doubles-a,
/// doubles-b) like [`and_round`].
///
/// Protocol: `x ∧ y = x_X y_X ⊕ x_Y y_Y ⊕ x_X y_Y ⊕ x_Y y_X` for the chooser `X` and its peer
/// `Y`; each cross term is one XOR-correlated OT with `X` choosing with its bit and `Y`
/// offering its bit as correlation (Gilboa for bits). A double `(c ∧ a, c ∧ b)` shares the OT
/// chosen by `c_X` (a 2-bit correlation `(a_Y, b_Y)`) and takes one OT each for `a_X c_Y`,
/// `b_X c_Y`. `Y`'s output is its OT pads (known before the step), `X`'s needs the answer: a
/// following step chosen by `Y` goes in the same flight as the answer, so a chain of levels
/// costs one flight per level (against two for [`and_round`]'s simultaneous openings).
/// Bytes: 4 bits per single (as [`and_round`]), 7 per double (6). Security: semi-honest,
/// 128-bit; the corrections are masked by the OT pads, the choices by the random OT choices.
pub(crate) fn and_pp<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    chooser: Role,
    jobs: &AndJobs,
) -> Result<(Vec<bool>, Vec<bool>, Vec<bool>)> {
    let (n1, n2) = (jobs.sx.len(), jobs.dc.len());
    if n1 + n2 == 0 {
        return Ok(Default::default());
    }
    if jobs.sy.len() != n1 || jobs.da.len() != n2 || jobs.db.len() != n2 {
        return Err(MpcError::InvalidArgument {
            what: "AND jobs of different lengths".into(),
        });
    }
    let width = pp_width(n1);
    let n = pp_ots(jobs);
    let mine = if s.role() == chooser {
        let mut c = Vec::with_capacity(n);
        for i in 0..n1 {
            c.push(jobs.sx[i]);
            c.push(jobs.sy[i]);
        }
        for i in 0..n2 {
            c.push(jobs.dc[i]);
            c.push(jobs.da[i]);
            c.push(jobs.db[i]);
        }
        s.xot_recv(ch, &c, width)?
    } else {
        let mut x = Vec::with_capacity(n);
        for i in 0..n1 {
            x.push(u64::from(jobs.sy[i]));
            x.push(u64::from(jobs.sx[i]));
        }
        for i in 0..n2 {
            x.push(u64::from(jobs.da[i]) | (u64::from(jobs.db[i]) << 1));
            x.push(u64::from(jobs.dc[i]));
            x.push(u64::from(jobs.dc[i]));
        }
        s.xot_send(ch, &x, width)?
    };
    if mine.len() != n {
        return Err(MpcError::InvalidArgument {
            what: "AND OT outputs".into(),
        });
    }
    let bit = |j: usize, k: u32| (mine[j] >> k) & 1 == 1;
    let zs = (0..n1)
        .map(|i| (jobs.sx[i] & jobs.sy[i]) ^ bit(2 * i, 0) ^ bit(2 * i + 1, 0))
        .collect();
    let b = 2 * n1;
    let za = (0..n2)
        .map(|i| (jobs.dc[i] & jobs.da[i]) ^ bit(b + 3 * i, 0) ^ bit(b + 3 * i + 1, 0))
        .collect();
    let zb = (0..n2)
        .map(|i| (jobs.dc[i] & jobs.db[i]) ^ bit(b + 3 * i, 1) ^ bit(b + 3 * i + 2, 0))
        .collect();
    Ok((zs, za, zb))
}

/// Tape of one [`and_pp`] with `n1` singles and `n2` doubles chosen by `chooser`.
pub(crate) fn tape_and_pp(tape: &mut Tape, chooser: Role, n1: usize, n2: usize) {
    let n = 2 * n1 + 3 * n2;
    if n == 0 {
        return;
    }
    // periodic only after the singles: summed directly
    NlSession::tape_cot(tape, chooser.peer(), n, n, pp_width(n1));
}
