//! The party cores shared by [`super::HeMatMul`] and [`super::HeMatMulShared`]: encrypt the
//! client's blocks, parse them on the server, answer one packing group, decrypt on the client,
//! plus an ordered parallel streamer for the drivers. No I/O here except in [`stream_ordered`],
//! which only calls the caller's sink.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use duet_fhe::{Ciphertext, MacAccumulator, OutputCiphertext, PlainWeights, SeededCiphertext};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rayon::prelude::*;

use super::plan::MatmulPlan;
use super::ring::{weight_block, WeightSrc};
use super::setup::{HeClientSetup, HeServerSetup};
use crate::error::{ProtocolError, Result};

/// Fresh 32-byte seeds, one per parallel task, so parallel work stays reproducible from one rng.
pub(crate) fn seeds<R: RngCore + CryptoRng>(rng: &mut R, count: usize) -> Vec<[u8; 32]> {
    (0..count).map(|_| fresh_seed(rng)).collect()
}

/// One fresh 32-byte seed.
pub(crate) fn fresh_seed<R: RngCore + CryptoRng>(rng: &mut R) -> [u8; 32] {
    let mut s = [0u8; 32];
    rng.fill_bytes(&mut s);
    s
}

/// The error for a missing per-task seed (an internal bug: seeds are drawn per task).
pub(crate) fn no_seed() -> ProtocolError {
    ProtocolError::Config("no randomness seed for a work item".into())
}

/// Client: the seeded ciphertexts of `x` (row-major `n x d`, checked by the caller), one message
/// per (row block, inner block), row block major.
pub(crate) fn encrypt_inputs<R: RngCore + CryptoRng>(
    setup: &HeClientSetup,
    plan: &MatmulPlan,
    x: &[u64],
    rng: &mut R,
) -> Result<Vec<Vec<u8>>> {
    let d = plan.shape().d;
    let ib_count = plan.inner_blocks();
    let layout = plan.layout();
    let params = plan.params();
    seeds(rng, plan.input_count())
        .into_par_iter()
        .enumerate()
        .map(|(idx, seed)| {
            let (rb, ib) = (idx / ib_count, idx % ib_count);
            let (r0, r1) = plan.rows(rb);
            let (j0, j1) = plan.inner(ib);
            let mut block = Vec::with_capacity((r1 - r0) * (j1 - j0));
            for i in r0..r1 {
                block.extend_from_slice(x.get(i * d + j0..i * d + j1).ok_or_else(|| {
                    ProtocolError::Shape {
                        what: "client matrix",
                        expected: plan.shape().n * d,
                        got: x.len(),
                    }
                })?);
            }
            let poly = layout.input_poly(&block, r1 - r0, j1 - j0)?;
            let mut rng = ChaCha20Rng::from_seed(seed);
            let ct = setup.sk.encrypt(&poly, &mut rng)?;
            Ok(ct.to_bytes(params)?)
        })
        .collect()
}

/// Server: parse and expand the client's input messages (count, length, version and parameter
/// id are checked by the decoder).
pub(crate) fn parse_inputs(plan: &MatmulPlan, msgs: &[Vec<u8>]) -> Result<Vec<Ciphertext>> {
    if msgs.len() != plan.input_count() {
        return Err(ProtocolError::Protocol(format!(
            "{} input ciphertexts, expected {}",
            msgs.len(),
            plan.input_count()
        )));
    }
    let params = plan.params();
    msgs.par_iter()
        .map(|m| Ok(SeededCiphertext::from_bytes(params, m)?.expand(params)?))
        .collect()
}

/// The server operand of one product: prepared polynomials (index `ib * col_blocks + cb`) or
/// raw values prepared on the fly.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operand<'a> {
    Prepared(&'a [PlainWeights]),
    Raw(WeightSrc<'a>),
}

/// Prepare every weight polynomial of `plan` for `src` (parallel).
pub(crate) fn prepare_all(plan: &MatmulPlan, src: WeightSrc<'_>) -> Result<Vec<PlainWeights>> {
    let cbs = plan.col_blocks();
    let k = plan.shape().k;
    let layout = plan.layout();
    (0..plan.inner_blocks() * cbs)
        .into_par_iter()
        .map(|idx| {
            let (ib, cb) = (idx / cbs, idx % cbs);
            weight_block(
                plan.params(),
                &layout,
                src,
                k,
                plan.inner(ib),
                plan.cols(cb),
            )
        })
        .collect()
}

/// Server: output message `o` (one packing group): accumulate, pack, add `plain` (row-major
/// `n x k` in `Z_{2^l}`: the server's own contribution minus its mask), re-randomize, extract the
/// useful coefficients, switch modulus, flood, serialize.
pub(crate) fn respond_group(
    setup: &HeServerSetup,
    plan: &MatmulPlan,
    cts: &[Ciphertext],
    operand: Operand<'_>,
    plain: &[u64],
    o: usize,
    seed: [u8; 32],
) -> Result<Vec<u8>> {
    let params = plan.params();
    let layout = plan.layout();
    let (rb, g) = plan.split_output(o);
    let (cb0, cb1) = plan.group_col_blocks(g);
    let ibs = plan.inner_blocks();
    let cbs = plan.col_blocks();
    let k = plan.shape().k;
    let missing = || ProtocolError::Config("block index outside the plan".into());
    let accs: Vec<MacAccumulator> = (0..plan.pack())
        .into_par_iter()
        .map(|r| {
            let mut acc = MacAccumulator::new(params);
            let cb = cb0 + r;
            if cb >= cb1 {
                return Ok(acc); // padding of a partial group: contributes nothing
            }
            for ib in 0..ibs {
                let ct = cts.get(rb * ibs + ib).ok_or_else(missing)?;
                match operand {
                    Operand::Prepared(ws) => {
                        acc.mul_acc(ct, ws.get(ib * cbs + cb).ok_or_else(missing)?)?;
                    }
                    Operand::Raw(src) => {
                        let w =
                            weight_block(params, &layout, src, k, plan.inner(ib), plan.cols(cb))?;
                        acc.mul_acc(ct, &w)?;
                    }
                }
            }
            Ok(acc)
        })
        .collect::<Result<_>>()?;
    let packed = if plan.pack() == 1 {
        accs.into_iter().next().ok_or_else(missing)?
    } else {
        let gk = setup.gk.as_ref().ok_or_else(|| {
            ProtocolError::Config("packing needs Galois keys in the session setup".into())
        })?;
        MacAccumulator::pack(accs, layout.d_b - 1, gk)?
    };
    let slots = plan.slots(o);
    let top = slots.iter().map(|s| s.pos + 1).max().unwrap_or(0);
    let mut poly = vec![0u64; top];
    for s in &slots {
        let v = plain.get(s.row * k + s.col).ok_or_else(missing)?;
        *poly.get_mut(s.pos).ok_or_else(missing)? = *v;
    }
    let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
    let mut rng = ChaCha20Rng::from_seed(seed);
    let out = packed.finalize(&setup.pk, &poly, &positions, &mut rng)?;
    Ok(out.to_bytes(params)?)
}

/// Client: decrypt every output message into the row-major `n x k` result.
pub(crate) fn decrypt_outputs(
    setup: &HeClientSetup,
    plan: &MatmulPlan,
    msgs: &[Vec<u8>],
) -> Result<Vec<u64>> {
    if msgs.len() != plan.output_count() {
        return Err(ProtocolError::Protocol(format!(
            "{} output ciphertexts, expected {}",
            msgs.len(),
            plan.output_count()
        )));
    }
    let params = plan.params();
    let k = plan.shape().k;
    let parts: Vec<Vec<(usize, u64)>> = msgs
        .par_iter()
        .enumerate()
        .map(|(o, m)| {
            let slots = plan.slots(o);
            let ct = OutputCiphertext::from_bytes(params, m, slots.len())?;
            let positions: Vec<usize> = slots.iter().map(|s| s.pos).collect();
            let vals = setup.sk.decrypt_output(&ct, &positions)?;
            Ok(slots
                .iter()
                .zip(vals)
                .map(|(s, v)| (s.row * k + s.col, v))
                .collect())
        })
        .collect::<Result<_>>()?;
    let mut y = vec![0u64; plan.shape().n * k];
    for (idx, v) in parts.into_iter().flatten() {
        if let Some(dst) = y.get_mut(idx) {
            *dst = v;
        }
    }
    Ok(y)
}

/// Runs `work(0..count)` on the rayon pool (workers take the next index, so results arrive
/// roughly in order) and hands the results to `sink` strictly in index order as soon as they are
/// ready, on the calling thread (which does the I/O). The first error stops the workers.
pub(crate) fn stream_ordered<T, F, S>(count: usize, work: F, mut sink: S) -> Result<()>
where
    T: Send,
    F: Fn(usize) -> Result<T> + Sync,
    S: FnMut(usize, T) -> Result<()>,
{
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<T>)>();
    let work = &work;
    let (next, stop) = (&next, &stop);
    std::thread::scope(|s| {
        let compute = s.spawn(move || {
            let workers = rayon::current_num_threads().clamp(1, count.max(1));
            rayon::scope(|rs| {
                for _ in 0..workers {
                    let tx = tx.clone();
                    rs.spawn(move |_| loop {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            break;
                        }
                        if tx.send((i, work(i))).is_err() {
                            break;
                        }
                    });
                }
            });
        });
        let mut pending = BTreeMap::new();
        let mut want = 0usize;
        let mut result = Ok(());
        'recv: for (i, r) in rx.iter() {
            match r {
                Ok(b) => {
                    pending.insert(i, b);
                }
                Err(e) => {
                    result = Err(e);
                    break 'recv;
                }
            }
            while let Some(b) = pending.remove(&want) {
                if let Err(e) = sink(want, b) {
                    result = Err(e);
                    break 'recv;
                }
                want += 1;
            }
            if want == count {
                break;
            }
        }
        if result.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        drop(rx);
        let joined = compute.join().map_err(|_| ProtocolError::WorkerPanicked);
        result?;
        joined?;
        if want != count {
            return Err(ProtocolError::WorkerPanicked);
        }
        Ok(())
    })
}
