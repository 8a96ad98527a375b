//! Matrix products by correlated OT with vector correlations: Gilboa's multiplication with
//! CrypTFlow2's width trick, as in SCI's OT-based linear layers.
//!
//! # Protocol
//!
//! For `batch` independent products the *holder* knows `W_b` (`d x k`) and the *chooser*
//! knows `X_b` (`n x d`), all over `Z_2^l`, row-major; the output is additive shares of
//! `X_b W_b` (`n x k`). Write every chooser element `x = X[r][i]` in binary,
//! `x = sum_j 2^j x_j` (`j < l`); then `x W[i][:] = sum_j 2^j x_j W[i][:]` and
//! `2^j v mod 2^l` depends only on `v mod 2^{l-j}`. So for each element and each bit `j` the
//! parties run one correlated OT over `Z_2^{l-j}` whose correlation is the whole row
//! `W[i][:]` (`k` values):
//!
//! 1. From a random COT of the session ([`NlSession`]'s COT source, IKNP or Ferret) the holder
//!    gets two random-OT keys `k_0, k_1` (128 bits) and the chooser `k_b` for a random bit `b`;
//!    the chooser sends `e = b xor x_j` (one bit) and the holder orders its keys as
//!    `K_0 = k_e`, `K_1 = k_{1-e}`, so that the chooser holds `K_{x_j}`.
//! 2. Both keys are stretched into `k` values by AES-128 in counter mode keyed by the key,
//!    cut into lanes of 1, 2, 4 or 8 bytes (the smallest holding `l-j` bits):
//!    `A = G(K_0)`, `B = G(K_1)`. The holder sends the corrections
//!    `D = B - A - W[i][:] mod 2^{l-j}` (`k (l-j)` bits) and keeps `-2^j A` as its share.
//! 3. The chooser expands `Y = G(K_{x_j})` and keeps `2^j Y` if `x_j = 0`, `2^j (Y - D)`
//!    (`= 2^j (A + W[i][:])`) if `x_j = 1`.
//!
//! Summing over `i` and `j` gives shares of `X W`. All chooser messages of a run (the choice
//! bits, and with IKNP the extension messages) go in one flight; the holder then streams the
//! corrections in messages of at most [`CORR_CHUNK_BYTES`] (whole groups of 8 chooser
//! elements, computed in parallel), all in one flight, and the chooser consumes them one
//! message at a time: the `k`-word pads are never all in memory. A run covers at most
//! [`RUN_COTS`] COTs (`RUN_COTS / l` chooser elements, rounded down to a multiple of 8): the
//! parties keep 16 bytes per COT of the run (the holder its COT `q`, the chooser its `t`) and
//! larger products run as several runs of 2 flights each.
//!
//! [`matmul_shared`] multiplies shared `X` and `Y`: `X Y = X_S Y_S + X_C Y_C + X_S Y_C +
//! X_C Y_S`; each party computes its local product and the two cross terms run as above,
//! one with each party as holder, the configured [`NlConfig::ot_sender`] first as holder, so
//! that its corrections and its choice bits of the second direction share a flight (3 flights
//! for one run, as `cot_both`, and 2 more per further run).
//!
//! # Security
//!
//! Semi-honest, 128-bit computational, from the COTs (IKNP or Ferret with 128-bit LPN
//! parameters), the correlation-robust hash that makes them random OTs and AES-128 as a PRF.
//! The holder sees only `e = b xor x_j` with `b` a uniform bit hidden by the COT, so nothing
//! about `X`. The chooser holds `K_{x_j}` only; the other random-OT key, hence the other pad,
//! is pseudorandom to it, and every correction `D = G(K_1) - G(K_0) - W[i][:]` contains that
//! pad, so the corrections look uniform. Each output share on its own is pseudorandom (the
//! holder's is made of pads `A`, the chooser's is `X W` minus it).
//!
//! # Cost ([`matmul_known_cost`], [`matmul_shared_cost`])
//!
//! Per chooser element (`batch n d` of them): `l` COTs (Ferret: pooled ahead, see
//! [`NlSession::reserve`]; IKNP: 16 bytes each from the chooser), `l` choice bits from the
//! chooser and `k l (l+1) / 2` bits of corrections from the holder. With `l = 37` that is
//! 4.625 + 87.875 `k` bytes per chooser element with Ferret, plus 592 with IKNP; 2 flights
//! per run. For example (one direction, bytes of both parties):
//!
//! | product `n x d x k`, `l = 37` | Ferret | IKNP |
//! |---|---|---|
//! | `1 x 64 x 64` | 360,232 (0.36 MB) | 398,120 |
//! | `16 x 768 x 768` | 829,349,376 (829 MB) | 836,623,872 |
//! | `128 x 768 x 768` | 6,634,795,008 (6.6 GB) | 6,692,990,976 |
//!
//! (`128 x 768 x 768` is 98,304 chooser elements, one run of 3,637,248 COTs.) So the bytes
//! grow with `n d k l^2 / 16`: this is the protocol for small products, or for products of two
//! shared matrices, not for large weight matrices (lattice HE sends far less there).
//! [`matmul_shared`] costs both directions: twice the bytes and COTs, 3 flights for the first
//! run and 2 for each further one (a run's last flight and the next run's first are the same
//! party's).
//!
//! Work: [`matmul_known_words`] (`batch n d l k`) words, each expanded twice and packed once
//! by the holder, expanded once and unpacked at most once by the chooser. With the lanes
//! above, a pad of `k` values of `w` bits takes `ceil(k lane / 16)` AES blocks: for `l = 37`
//! that is `8 k` blocks per pad and chooser element (`16 k` for the holder, `8 k` for the
//! chooser), plus one AES key schedule per pad and the two hashes of each random OT.
//! Measured on the in-memory pair (release, 2 shared cores, both parties together): `1 x 64 x
//! 64` in 3 ms, `16 x 768 x 768` in about 1.9 s.

use super::cost::Tape;
use super::otx::COT_CHUNK;
use super::wire::{pack_bits, unpack_bits};
use super::{Cost, CotCount, NlConfig, NlSession};
use crate::ot::aes::AesPrg;
use crate::ot::{rot, Block, CotReceiver, CotSender};
use crate::{AShare, MpcError, Result, Ring};
use duet_transport::{Channel, Role};
use rayon::prelude::*;
use std::ops::Range;

/// Largest number of COTs one run of a product handles (4,194,304): the holder keeps its COT
/// `q` and the chooser its `t` (16 bytes each) for every COT of a run, so 64 MiB per party.
pub const RUN_COTS: usize = 1 << 22;

/// Largest correction message (16 MiB) unless one group of 8 chooser elements is larger.
pub const CORR_CHUNK_BYTES: usize = 1 << 24;

/// Upper bound on `batch n d k` accepted by [`MatShape::new`] (`2^48`), so that every derived
/// count (bits of corrections at `l = 64` are `2,080` per product) fits in 64 bits.
pub const MAX_PRODUCTS: u64 = 1 << 48;

/// Chooser elements per parallel task (8 elements carry a whole number of correction bytes).
const GROUP: usize = 8;

/// Dimensions of `batch` independent products `X_b W_b` with `X_b` of `n x d` and `W_b` of
/// `d x k` (row-major, batch-major). Made by [`MatShape::new`], which checks them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MatShape {
    batch: usize,
    n: usize,
    d: usize,
    k: usize,
}

impl MatShape {
    /// Checks the dimensions: all positive and `batch n d k <= `[`MAX_PRODUCTS`].
    pub fn new(batch: usize, n: usize, d: usize, k: usize) -> Result<Self> {
        let dims = [batch, n, d, k];
        if dims.contains(&0) {
            return Err(MpcError::ShapeMismatch {
                what: format!("matrix product of zero size: batch {batch}, {n} x {d} x {k}"),
            });
        }
        let total = dims
            .iter()
            .try_fold(1u64, |a, &v| a.checked_mul(u64::try_from(v).ok()?));
        match total {
            Some(t) if t <= MAX_PRODUCTS && usize::try_from(t).is_ok() => {
                Ok(Self { batch, n, d, k })
            }
            _ => Err(MpcError::ShapeMismatch {
                what: format!(
                    "matrix product batch {batch}, {n} x {d} x {k}: more than 2^48 products"
                ),
            }),
        }
    }

    /// Number of products.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Rows of `X` and of the output.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Columns of `X`, rows of `W` (the inner dimension).
    pub fn d(&self) -> usize {
        self.d
    }

    /// Columns of `W` and of the output.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Elements of the left operand `X` (`batch n d`): the chooser's elements.
    pub fn x_len(&self) -> usize {
        self.batch * self.n * self.d
    }

    /// Elements of the right operand `W` (`batch d k`).
    pub fn w_len(&self) -> usize {
        self.batch * self.d * self.k
    }

    /// Elements of the output (`batch n k`).
    pub fn out_len(&self) -> usize {
        self.batch * self.n * self.k
    }
}

/// Words of work of one [`matmul_known_holder`] / [`matmul_known_chooser`] call: the sum over
/// its COTs of `k`, i.e. `batch n d l k` (what a compute model multiplies by a per-word
/// time). Per such word the holder expands two pad values (AES-128 in counter mode, 1/16 to
/// 1/2 block per value depending on the width, `8 k` blocks per pad and element for `l = 37`)
/// and packs one correction; the chooser expands one and unpacks at most one.
/// [`matmul_shared`] does this twice (once in each direction).
pub fn matmul_known_words(shape: MatShape, ring: Ring) -> u64 {
    (shape.x_len() as u64)
        .saturating_mul(u64::from(ring.bits()))
        .saturating_mul(shape.k as u64)
}

/// The chunking of a product (same on both sides and in the cost formulas).
#[derive(Clone, Copy, Debug)]
struct Plan {
    n: usize,
    d: usize,
    k: usize,
    l: usize,
    /// Chooser elements.
    elems: usize,
    /// Correction bits per chooser element, `k l (l+1) / 2`; 8 elements take this many bytes.
    bpe: usize,
    /// Chooser elements per run (a multiple of 8).
    run: usize,
    /// Chooser elements per correction message (a multiple of 8).
    chunk: usize,
}

impl Plan {
    fn new(shape: MatShape, ring: Ring) -> Self {
        let l = ring.bits() as usize;
        let bpe = shape.k.saturating_mul(l * (l + 1) / 2);
        Self {
            n: shape.n,
            d: shape.d,
            k: shape.k,
            l,
            elems: shape.x_len(),
            bpe,
            run: (RUN_COTS / l / GROUP).max(1) * GROUP,
            chunk: (CORR_CHUNK_BYTES / bpe.max(1)).max(1) * GROUP,
        }
    }

    /// The runs: consecutive ranges of chooser elements.
    fn runs(&self) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..self.elems)
            .step_by(self.run)
            .map(|s| s..(s + self.run).min(self.elems))
    }

    /// The correction messages of a run of `len` elements, as ranges of run-local elements.
    fn chunks(&self, len: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        (0..len)
            .step_by(self.chunk)
            .map(move |s| s..(s + self.chunk).min(len))
    }

    /// Bytes of the corrections of `m` chooser elements.
    fn corr_bytes(&self, m: usize) -> usize {
        (m.saturating_mul(self.bpe)).div_ceil(8)
    }
}

fn mask(w: usize) -> u64 {
    if w >= 64 {
        u64::MAX
    } else {
        (1u64 << w) - 1
    }
}

/// Writes values of varying widths (LSB first) into a byte slice, 64 bits at a time.
struct BitWriter<'a> {
    out: &'a mut [u8],
    at: usize,
    acc: u64,
    fill: usize,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut [u8]) -> Self {
        Self {
            out,
            at: 0,
            acc: 0,
            fill: 0,
        }
    }

    /// Appends `v`, which has at most `w <= 64` bits.
    #[inline]
    fn push(&mut self, v: u64, w: usize) {
        // `fill < 64`; the bits of `v` beyond the current word start the next one
        self.acc |= v << self.fill;
        let fill = self.fill + w;
        if fill >= 64 {
            if let Some(d) = self.out.get_mut(self.at..self.at + 8) {
                d.copy_from_slice(&self.acc.to_le_bytes());
            }
            self.at += 8;
            self.acc = if self.fill == 0 {
                0
            } else {
                v >> (64 - self.fill)
            };
            self.fill = fill - 64;
        } else {
            self.fill = fill;
        }
    }

    /// Writes the last partial word: with it every byte of a slice of exactly
    /// `ceil(bits / 8)` bytes has been written.
    fn finish(self) {
        let tail = self.out.get_mut(self.at..).unwrap_or_default();
        for (d, s) in tail.iter_mut().zip(self.acc.to_le_bytes()) {
            *d = s;
        }
    }
}

/// Reads values of varying widths (LSB first) from a byte slice; bytes past its end read as
/// zero (the caller checked the length).
struct BitReader<'a> {
    bytes: &'a [u8],
    next: usize,
    acc: u64,
    fill: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            next: 0,
            acc: 0,
            fill: 0,
        }
    }

    fn load(&self, at: usize) -> u64 {
        match self.bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
            Some(Ok(b)) => u64::from_le_bytes(b),
            _ => {
                let b = self.bytes.get(at..).unwrap_or_default();
                b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x))
            }
        }
    }

    /// The next `w` bits (`1..=64`).
    #[inline]
    fn read(&mut self, w: usize) -> u64 {
        if self.fill >= w {
            let v = self.acc & mask(w);
            self.acc = shr(self.acc, w);
            self.fill -= w;
            return v;
        }
        // `fill < w <= 64`: the value continues in the next word
        let next = self.load(self.next);
        self.next += 8;
        let v = (self.acc | (next << self.fill)) & mask(w);
        let used = w - self.fill;
        self.acc = shr(next, used);
        self.fill = 64 - used;
        v
    }

    /// Skips `bits` bits.
    fn skip(&mut self, bits: usize) {
        if bits <= self.fill {
            self.acc = shr(self.acc, bits);
            self.fill -= bits;
            return;
        }
        let rest = bits - self.fill;
        self.next += rest / 8;
        self.acc = 0;
        self.fill = 0;
        if rest % 8 > 0 {
            self.acc = self.load(self.next) >> (rest % 8);
            self.fill = 64 - rest % 8;
            self.next += 8;
        }
    }
}

/// `x >> s`, zero for `s >= 64`.
#[inline]
fn shr(x: u64, s: usize) -> u64 {
    if s >= 64 {
        0
    } else {
        x >> s
    }
}

/// Stretches random-OT keys into pads (reusing its buffers).
#[derive(Default)]
struct Pads {
    words: Vec<u64>,
}

impl Pads {
    /// The pad of `out.len()` values of `w` bits (`1..=64`) from a random-OT key: AES-128
    /// keyed by `key` in counter mode (block `c` = `AES_key(c)`), the stream cut into
    /// little-endian lanes of 1, 2, 4 or 8 bytes (the smallest that holds `w` bits), each
    /// masked to `w` bits. Security: AES-128 as a PRF, 128-bit.
    fn expand(&mut self, key: Block, w: usize, out: &mut [u64]) {
        let lane = match w {
            0..=8 => 1,
            9..=16 => 2,
            17..=32 => 4,
            _ => 8,
        };
        let n = (out.len() * lane).div_ceil(16);
        if self.words.len() < 2 * n {
            self.words.resize(2 * n, 0);
        }
        let words = self.words.get_mut(..2 * n).unwrap_or_default();
        AesPrg::new(key).fill_words(0, words);
        // the byte order of the lanes below is little-endian on every machine
        for w in words.iter_mut() {
            *w = w.to_le();
        }
        let words = &*words;
        let m = mask(w);
        match lane {
            1 => {
                let v: &[u8] = bytemuck::cast_slice(words);
                out.iter_mut()
                    .zip(v)
                    .for_each(|(o, &x)| *o = u64::from(x) & m);
            }
            2 => {
                let v: &[u16] = bytemuck::cast_slice(words);
                out.iter_mut()
                    .zip(v)
                    .for_each(|(o, &x)| *o = u64::from(u16::from_le(x)) & m);
            }
            4 => {
                let v: &[u32] = bytemuck::cast_slice(words);
                out.iter_mut()
                    .zip(v)
                    .for_each(|(o, &x)| *o = u64::from(u32::from_le(x)) & m);
            }
            _ => out
                .iter_mut()
                .zip(words)
                .for_each(|(o, &x)| *o = u64::from_le(x) & m),
        }
    }
}

/// The partial sums of output row `row` in `rows` (a new zero row if the last is another).
fn row_acc(rows: &mut Vec<(usize, Vec<u64>)>, row: usize, k: usize) -> &mut [u64] {
    if rows.last().map(|r| r.0) != Some(row) {
        rows.push((row, vec![0u64; k]));
    }
    match rows.last_mut() {
        Some(r) => &mut r.1,
        None => &mut [],
    }
}

/// Adds the per-row partial sums of the tasks into `out` (`k` words per output row).
fn merge(out: &mut [u64], k: usize, parts: impl IntoIterator<Item = Vec<(usize, Vec<u64>)>>) {
    for rows in parts {
        for (row, v) in rows {
            let dst = out.get_mut(row * k..(row + 1) * k).unwrap_or_default();
            for (o, x) in dst.iter_mut().zip(&v) {
                *o = o.wrapping_add(*x);
            }
        }
    }
}

/// The chooser's state between its messages and the corrections of one run.
struct ChooserRun {
    elems: Range<usize>,
    /// Index of the run's first COT in the session's receiving COT source.
    start: u64,
    /// The COTs' `t` (hashed into random-OT keys when the corrections are processed).
    t: Vec<Block>,
}

/// The holder's state between the chooser's messages and its corrections of one run.
struct HolderRun {
    elems: Range<usize>,
    start: u64,
    delta: Block,
    q: Vec<Block>,
    /// The chooser's `e = b xor x_j`.
    e: Vec<bool>,
}

/// Chooser, first half of a run: takes `l` COTs per element of `elems` and sends the choice
/// bits (and with IKNP the extension messages), one message of each per [`COT_CHUNK`]
/// COTs. Does not flush.
fn chooser_begin<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    p: &Plan,
    x: &[u64],
    elems: Range<usize>,
) -> Result<ChooserRun> {
    let xs = x.get(elems.clone()).unwrap_or_default();
    let n = xs.len() * p.l;
    let start = CotReceiver::consumed(&s.cot_r);
    let mut t = Vec::with_capacity(n);
    for c0 in (0..n).step_by(COT_CHUNK) {
        let m = (n - c0).min(COT_CHUNK);
        let (b, tc) = s.cot_r.recv_cot(ch, m)?;
        let e: Vec<bool> = b
            .iter()
            .enumerate()
            .map(|(u, &bu)| {
                let g = c0 + u;
                let xv = xs.get(g / p.l).copied().unwrap_or(0);
                bu ^ ((xv >> (g % p.l)) & 1 == 1)
            })
            .collect();
        ch.send_bytes(&pack_bits(&e))?;
        t.extend(tc);
    }
    Ok(ChooserRun { elems, start, t })
}

/// Holder, first half of a run: the COTs of the run and the chooser's choice bits.
fn holder_begin<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    p: &Plan,
    elems: Range<usize>,
) -> Result<HolderRun> {
    let n = elems.len() * p.l;
    let start = CotSender::consumed(&s.cot_s);
    let delta = s.cot_s.delta();
    let mut q = Vec::with_capacity(n);
    let mut e = Vec::with_capacity(n);
    for c0 in (0..n).step_by(COT_CHUNK) {
        let m = (n - c0).min(COT_CHUNK);
        q.extend(s.cot_s.send_cot(ch, m)?);
        e.extend(unpack_bits(
            &ch.recv_bytes_max(m.div_ceil(8))?,
            m,
            "matrix-product choice bits",
        )?);
    }
    Ok(HolderRun {
        elems,
        start,
        delta,
        q,
        e,
    })
}

/// Holder, second half of a run: computes and sends the corrections (one message per
/// [`Plan::chunks`], parallel over groups of 8 elements) and adds its share `-sum 2^j A` to
/// `out`. Does not flush.
fn holder_finish<C: Channel>(
    ch: &mut C,
    p: &Plan,
    h: &HolderRun,
    w: &[u64],
    out: &mut [u64],
) -> Result<()> {
    let l = p.l;
    // every byte of a message is written (see BitWriter::finish): one buffer for all
    let mut buf = vec![0u8; p.corr_bytes(p.chunk.min(h.elems.len()))];
    for c in p.chunks(h.elems.len()) {
        let cots = c.start * l..c.end * l;
        let q = h.q.get(cots.clone()).unwrap_or_default();
        let e = h.e.get(cots).unwrap_or_default();
        let msg = buf.get_mut(..p.corr_bytes(c.len())).unwrap_or_default();
        let rows: Vec<Vec<(usize, Vec<u64>)>> = msg
            .par_chunks_mut(p.bpe.max(1))
            .zip(q.par_chunks(GROUP * l))
            .zip(e.par_chunks(GROUP * l))
            .enumerate()
            .map(|(g, ((mg, qg), eg))| holder_group(p, h, w, c.start + g * GROUP, qg, eg, mg))
            .collect();
        ch.send_bytes(msg)?;
        merge(out, p.k, rows);
    }
    Ok(())
}

/// The corrections (written to `msg`) of one group of (at most 8) chooser elements starting
/// at run-local element `local`, and the holder's partial share by output row.
fn holder_group(
    p: &Plan,
    h: &HolderRun,
    w: &[u64],
    local: usize,
    q: &[Block],
    e: &[bool],
    msg: &mut [u8],
) -> Vec<(usize, Vec<u64>)> {
    let (l, k) = (p.l, p.k);
    let keys = rot::rot_sender_keys(h.delta, h.start + (local * l) as u64, q);
    let mut bw = BitWriter::new(msg);
    let mut rows = Vec::new();
    let mut pads = Pads::default();
    let mut a = vec![0u64; k];
    let mut b = vec![0u64; k];
    for (u, (ke, ee)) in keys.chunks(l).zip(e.chunks(l)).enumerate() {
        let elem = h.elems.start + local + u;
        let (row, i) = (elem / p.d, elem % p.d);
        let wi = ((row / p.n) * p.d + i) * k;
        let wrow = w.get(wi..wi + k).unwrap_or_default();
        let acc = row_acc(&mut rows, row, k);
        for (j, (kk, &ej)) in ke.iter().zip(ee).enumerate() {
            let (k0, k1) = if ej { (kk[1], kk[0]) } else { (kk[0], kk[1]) };
            let width = l - j;
            let m = mask(width);
            pads.expand(k0, width, &mut a);
            pads.expand(k1, width, &mut b);
            // b becomes the corrections
            for (((bv, &av), &wv), o) in b.iter_mut().zip(&a).zip(wrow).zip(acc.iter_mut()) {
                *bv = bv.wrapping_sub(av).wrapping_sub(wv) & m;
                *o = o.wrapping_sub(av << j);
            }
            for &dv in &b {
                bw.push(dv, width);
            }
        }
    }
    bw.finish();
    rows
}

/// Chooser, second half of a run: receives the corrections message by message (each length
/// checked), unmasks them in parallel over groups of 8 elements and adds its share to `out`.
fn chooser_finish<C: Channel>(
    ch: &mut C,
    p: &Plan,
    c: &ChooserRun,
    x: &[u64],
    out: &mut [u64],
) -> Result<()> {
    let l = p.l;
    let xs = x.get(c.elems.clone()).unwrap_or_default();
    for r in p.chunks(c.elems.len()) {
        let expect = p.corr_bytes(r.len());
        let msg = ch.recv_bytes_max(expect)?;
        if msg.len() != expect {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "matrix-product corrections: {} bytes, expected {expect}",
                    msg.len()
                ),
            });
        }
        let t = c.t.get(r.start * l..r.end * l).unwrap_or_default();
        let xr = xs.get(r.clone()).unwrap_or_default();
        let parts: Vec<Vec<(usize, Vec<u64>)>> = t
            .par_chunks(GROUP * l)
            .zip(xr.par_chunks(GROUP))
            .zip(msg.par_chunks(p.bpe.max(1)))
            .enumerate()
            .map(|(g, ((tg, xg), bytes))| {
                let local = r.start + g * GROUP;
                chooser_group(p, c, local, tg, xg, bytes)
            })
            .collect();
        merge(out, p.k, parts);
    }
    Ok(())
}

/// The chooser's partial share of one group of (at most 8) elements from their corrections.
fn chooser_group(
    p: &Plan,
    c: &ChooserRun,
    local: usize,
    t: &[Block],
    xg: &[u64],
    bytes: &[u8],
) -> Vec<(usize, Vec<u64>)> {
    let (l, k) = (p.l, p.k);
    let keys = rot::rot_receiver_keys(c.start + (local * l) as u64, t.to_vec());
    let mut rows = Vec::new();
    let mut y = vec![0u64; k];
    let mut dv = vec![0u64; k];
    let mut pads = Pads::default();
    let mut br = BitReader::new(bytes);
    for (u, (ke, &xv)) in keys.chunks(l).zip(xg).enumerate() {
        let row = (c.elems.start + local + u) / p.d;
        let acc = row_acc(&mut rows, row, k);
        for (j, &key) in ke.iter().enumerate() {
            let width = l - j;
            pads.expand(key, width, &mut y);
            if (xv >> j) & 1 == 1 {
                for d in dv.iter_mut() {
                    *d = br.read(width);
                }
                for ((o, &yv), &d) in acc.iter_mut().zip(&y).zip(&dv) {
                    *o = o.wrapping_add(yv.wrapping_sub(d) << j);
                }
            } else {
                br.skip(k * width);
                for (o, &yv) in acc.iter_mut().zip(&y) {
                    *o = o.wrapping_add(yv << j);
                }
            }
        }
    }
    rows
}

fn check_operand(what: &str, v: &[u64], want: usize, ring: Ring) -> Result<()> {
    if v.len() != want {
        return Err(MpcError::ShapeMismatch {
            what: format!("{what} of {} elements, expected {want}", v.len()),
        });
    }
    if let Some(i) = v.iter().position(|&x| !ring.contains(x)) {
        return Err(MpcError::InvalidArgument {
            what: format!("{what}: element {i} outside Z_2^{}", ring.bits()),
        });
    }
    Ok(())
}

fn finish(shape: MatShape, ring: Ring, mut out: Vec<u64>) -> Result<AShare> {
    out.iter_mut().for_each(|v| *v = ring.reduce(*v));
    AShare::new(ring, vec![shape.batch, shape.n, shape.k], out)
}

/// The holder's side of shares of `X_b W_b` for the chooser's `X_b` (see the module
/// documentation): `w` is `batch` matrices of `d x k` (row-major, elements of `ring`). Returns
/// this party's share, shape `[batch, n, k]`. The peer calls [`matmul_known_chooser`] with the
/// same `shape` and `ring`.
///
/// Security: semi-honest, 128-bit. Cost: [`matmul_known_cost`] with this party as holder.
pub fn matmul_known_holder<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    shape: MatShape,
    w: &[u64],
    ring: Ring,
) -> Result<AShare> {
    check_operand("matrix W", w, shape.w_len(), ring)?;
    let p = Plan::new(shape, ring);
    let mut out = vec![0u64; shape.out_len()];
    for r in p.runs() {
        let need = CotCount::from(s.role(), (r.len() * p.l) as u64);
        s.reserve(ch, need)?;
        let h = holder_begin(s, ch, &p, r)?;
        holder_finish(ch, &p, &h, w, &mut out)?;
        ch.flush()?;
    }
    finish(shape, ring, out)
}

/// The chooser's side of [`matmul_known_holder`]: `x` is `batch` matrices of `n x d`
/// (row-major, elements of `ring`). Returns this party's share, shape `[batch, n, k]`.
///
/// Security: semi-honest, 128-bit. Cost: [`matmul_known_cost`] with the peer as holder.
pub fn matmul_known_chooser<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    shape: MatShape,
    x: &[u64],
    ring: Ring,
) -> Result<AShare> {
    check_operand("matrix X", x, shape.x_len(), ring)?;
    let p = Plan::new(shape, ring);
    let mut out = vec![0u64; shape.out_len()];
    for r in p.runs() {
        let need = CotCount::from(s.role().peer(), (r.len() * p.l) as u64);
        s.reserve(ch, need)?;
        let c = chooser_begin(s, ch, &p, x, r)?;
        ch.flush()?;
        chooser_finish(ch, &p, &c, x, &mut out)?;
    }
    finish(shape, ring, out)
}

/// Shares of `X_b Y_b` for shared `X` (`batch x n x d`) and shared `Y` (`batch x d x k`),
/// row-major whatever their shape says (only their lengths and rings are checked). Returns this
/// party's share, shape `[batch, n, k]`.
///
/// Protocol: each party multiplies its own shares locally; the cross terms `X_S Y_C` and
/// `X_C Y_S` run as in [`matmul_known_holder`], the [`NlConfig::ot_sender`] first as holder
/// (of its `Y` share), then the peer, sharing flights as `cot_both` does.
/// Security: semi-honest, 128-bit. Cost: [`matmul_shared_cost`].
pub fn matmul_shared<C: Channel>(
    s: &mut NlSession,
    ch: &mut C,
    shape: MatShape,
    x: &AShare,
    y: &AShare,
) -> Result<AShare> {
    let ring = x.ring();
    if y.ring() != ring {
        return Err(MpcError::ShapeMismatch {
            what: format!(
                "matrix product over Z_2^{} and Z_2^{}",
                ring.bits(),
                y.ring().bits()
            ),
        });
    }
    check_operand("shared matrix X", x.data(), shape.x_len(), ring)?;
    check_operand("shared matrix Y", y.data(), shape.w_len(), ring)?;
    let p = Plan::new(shape, ring);
    let mut out = local_product(shape, x.data(), y.data());
    let first = s.is_ot_sender();
    for r in p.runs() {
        let n = (r.len() * p.l) as u64;
        s.reserve(
            ch,
            CotCount {
                server_sends: n,
                client_sends: n,
            },
        )?;
        if first {
            let h = holder_begin(s, ch, &p, r.clone())?;
            holder_finish(ch, &p, &h, y.data(), &mut out)?;
            let c = chooser_begin(s, ch, &p, x.data(), r)?;
            ch.flush()?;
            chooser_finish(ch, &p, &c, x.data(), &mut out)?;
        } else {
            let c = chooser_begin(s, ch, &p, x.data(), r.clone())?;
            ch.flush()?;
            chooser_finish(ch, &p, &c, x.data(), &mut out)?;
            let h = holder_begin(s, ch, &p, r)?;
            holder_finish(ch, &p, &h, y.data(), &mut out)?;
            ch.flush()?;
        }
    }
    finish(shape, ring, out)
}

/// `X_b W_b` of one party's own operands, wrapping mod `2^64` (reduce into the ring after
/// adding), parallel over output rows: the local term of a product with a share.
pub fn local_product(shape: MatShape, x: &[u64], w: &[u64]) -> Vec<u64> {
    let (n, d, k) = (shape.n, shape.d, shape.k);
    let mut out = vec![0u64; shape.out_len()];
    out.par_chunks_mut(k)
        .zip(x.par_chunks(d))
        .enumerate()
        .for_each(|(row, (o, xr))| {
            let wb = (row / n) * d * k;
            let wm = w.get(wb..wb + d * k).unwrap_or_default();
            for (&xv, wr) in xr.iter().zip(wm.chunks(k)) {
                for (ov, &wv) in o.iter_mut().zip(wr) {
                    *ov = ov.wrapping_add(xv.wrapping_mul(wv));
                }
            }
        });
    out
}

/// Records one run of `m` chooser elements with `holder` as holder on `t`.
fn tape_run(t: &mut Tape, p: &Plan, holder: Role, m: usize) {
    let n = m * p.l;
    if n == 0 {
        return;
    }
    let (b, msgs) = t.cots(holder, n);
    let chunks = n.div_ceil(COT_CHUNK);
    let e: u64 = (0..n)
        .step_by(COT_CHUNK)
        .map(|s| ((n - s).min(COT_CHUNK)).div_ceil(8) as u64)
        .sum();
    t.send(holder.peer(), b + e, msgs + chunks as u64);
    t.send(holder, p.corr_bytes(m) as u64, m.div_ceil(p.chunk) as u64);
}

/// The cost of a call made of `full` runs of `p.run` elements and one of `rest` (possibly
/// empty), each run recorded by `one`. With `merge`, the party that sends a run's last
/// flight also sends the next run's first, so each run after the first has one flight fewer
/// (the shared product: the second holder's corrections, then its choice bits as the first
/// direction's chooser); without, every run starts with the party that received last (the
/// known product).
fn runs_cost(p: &Plan, cfg: NlConfig, merge: bool, one: impl Fn(&mut Tape, usize)) -> Cost {
    let full = (p.elems / p.run) as u64;
    let rest = p.elems % p.run;
    let of = |m: usize| {
        let mut t = Tape::with_config(cfg);
        one(&mut t, m);
        t.cost()
    };
    let f = of(p.run);
    let r = of(rest);
    let runs = full + u64::from(rest > 0);
    let merged = if merge { runs.saturating_sub(1) } else { 0 };
    Cost {
        bytes: full.saturating_mul(f.bytes).saturating_add(r.bytes),
        rounds: (full * f.rounds + r.rounds).saturating_sub(merged),
        cots: CotCount {
            server_sends: full * f.cots.server_sends + r.cots.server_sends,
            client_sends: full * f.cots.client_sends + r.cots.client_sends,
        },
    }
}

/// Exact cost of [`matmul_known_holder`] / [`matmul_known_chooser`] with `holder` as holder:
/// bytes of both parties, flights (2 per run) and COTs (`batch n d l`, sent by the holder).
pub fn matmul_known_cost(shape: MatShape, ring: Ring, cfg: NlConfig, holder: Role) -> Cost {
    let p = Plan::new(shape, ring);
    runs_cost(&p, cfg, false, |t, m| tape_run(t, &p, holder, m))
}

/// Exact cost of [`matmul_shared`]: both directions (twice the bytes and COTs of
/// [`matmul_known_cost`]), 3 flights for the first run and 2 for each further one.
pub fn matmul_shared_cost(shape: MatShape, ring: Ring, cfg: NlConfig) -> Cost {
    let p = Plan::new(shape, ring);
    runs_cost(&p, cfg, true, |t, m| {
        tape_run(t, &p, cfg.ot_sender, m);
        tape_run(t, &p, cfg.ot_sender.peer(), m);
    })
}
