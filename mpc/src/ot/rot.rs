//! I/O-free cores of the OTs built on random COTs: random OT, chosen-message OT and
//! 1-out-of-N OT, with their exact costs (beyond the COTs they consume).
//!
//! * Random OT: `k_j^0 = H(j, q_j)`, `k_j^1 = H(j, q_j ⊕ Δ)`, the receiver's `H(j, t_j)` equals
//!   `k_j^{b_j}`; `H` is the tweakable correlation-robust hash [`FixedKeyHash`] with the global
//!   COT index as tweak, so the other key is pseudorandom to the receiver.
//! * Chosen-message OT (derandomization of a random OT, Beaver 1995): the receiver with choice
//!   `c_j` and random-OT bit `b_j` sends `e_j = c_j ⊕ b_j` (1 bit); the sender sends
//!   `y_j^x = m_j^x ⊕ k_j^{x ⊕ e_j}` truncated to `w` bits for `x = 0, 1`; the receiver
//!   unmasks `y_j^{c_j}` with its key. Bytes beyond the COTs: `ceil(n/8)` + `ceil(2 n w / 8)`.
//! * 1-out-of-`N` OT, `N = 2^l` (Naor–Pinkas 1999 from `l` 1-out-of-2 OTs): instance `i` uses
//!   `l` random OTs with keys `K_{k,0}, K_{k,1}`; the receiver derandomizes them to the bits of
//!   its choice `v` (`l` bits sent); message `x` is masked with
//!   `⊕_k F(K_{k, x_k}, (k, x))`, `F(K, τ) = H(τ, K)` with a tweak domain of its own, so any
//!   other message needs a key the receiver lacks. Bytes beyond the `n l` COTs:
//!   `ceil(n l / 8)` + `ceil(n N w / 8)`. Chosen by bytes over the alternatives for `N <= 4`;
//!   for larger `N` the KK13 code-based extension (32 bytes of COT per instance instead of
//!   `16 l`) would be cheaper and is not implemented yet.
//!
//! Security: semi-honest, 128-bit, fixed-key AES in the random-permutation model.

use super::aes::{FixedKeyHash, DOMAIN_ONE_OF_N, DOMAIN_ROT};
use super::bits::{low_mask, pack, pack_bools, packed_len, unpack, unpack_bools, BitWriter};
use super::{Block, OtCost, OtSide, Traffic};
use crate::{MpcError, Result, Ring};

/// Largest `l` (so `N = 2^l <= 256`) of the 1-out-of-N OT.
pub const MAX_ONE_OF_N_LOG: u32 = 8;

/// Checks a message width `w` in `1..=64`.
pub fn check_width(w: u32) -> Result<()> {
    if !(1..=64).contains(&w) {
        return Err(MpcError::InvalidArgument {
            what: format!("OT message width {w} bits, supported 1..=64"),
        });
    }
    Ok(())
}

fn check_log(l: u32) -> Result<()> {
    if !(1..=MAX_ONE_OF_N_LOG).contains(&l) {
        return Err(MpcError::InvalidArgument {
            what: format!("1-out-of-2^{l} OT: l must be in 1..={MAX_ONE_OF_N_LOG}"),
        });
    }
    Ok(())
}

/// Number of 1-out-of-`2^l` instances in `len` messages; errors on bad `l`, `w` or length.
pub fn one_of_n_instances(len: usize, l: u32, w: u32) -> Result<usize> {
    check_width(w)?;
    check_log(l)?;
    let big_n = 1usize << l;
    if len % big_n != 0 {
        return Err(MpcError::InvalidArgument {
            what: format!("{len} messages is not a whole number of 1-out-of-{big_n} instances"),
        });
    }
    Ok(len / big_n)
}

/// Checks the receiver's inputs of a 1-out-of-`2^l` OT.
pub fn check_one_of_n(choices: &[u8], l: u32, w: u32) -> Result<()> {
    check_width(w)?;
    check_log(l)?;
    if let Some(&v) = choices.iter().find(|&&v| u32::from(v) >> l != 0) {
        return Err(MpcError::InvalidArgument {
            what: format!("choice {v} out of range for 1-out-of-{} OT", 1u32 << l),
        });
    }
    Ok(())
}

fn rot_tweak(start: u64) -> impl Fn(usize) -> u128 {
    move |j| DOMAIN_ROT | u128::from(start + j as u64)
}

/// The random-OT keys of the sender from COTs `q` numbered from `start`.
pub fn rot_sender_keys(delta: Block, start: u64, q: &[Block]) -> Vec<[Block; 2]> {
    let mut keys: Vec<[Block; 2]> = q.iter().map(|&x| [x, x ^ delta]).collect();
    let tweak = rot_tweak(start);
    FixedKeyHash::new().hash_many(bytemuck::cast_slice_mut(&mut keys), |j| tweak(j / 2));
    keys
}

/// The random-OT keys of the receiver from COTs `t` numbered from `start` (hashed in place).
pub fn rot_receiver_keys(start: u64, mut t: Vec<Block>) -> Vec<Block> {
    FixedKeyHash::new().hash_many(&mut t, rot_tweak(start));
    t
}

fn len_check(what: &str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(MpcError::InvalidArgument {
            what: format!("{what}: {got}, expected {expected}"),
        });
    }
    Ok(())
}

/// Chosen OT, receiver step 1: the derandomization bits `e_j = c_j ⊕ b_j` (`ceil(n/8)` bytes).
pub fn chosen_receiver_message(rot_choices: &[bool], choices: &[bool]) -> Result<Vec<u8>> {
    len_check("random OTs for chosen OT", rot_choices.len(), choices.len())?;
    Ok(pack_bools(
        rot_choices.iter().zip(choices).map(|(b, c)| b ^ c),
    ))
}

/// Chosen OT, sender step: masks both messages with the random-OT keys chosen by `e_msg`.
/// Errors if `e_msg` has the wrong length; returns `ceil(2 n w / 8)` bytes.
pub fn chosen_sender_respond(
    keys: &[[Block; 2]],
    e_msg: &[u8],
    msgs: &[[u64; 2]],
    w: u32,
) -> Result<Vec<u8>> {
    check_width(w)?;
    len_check("random OTs for chosen OT", keys.len(), msgs.len())?;
    let e = unpack_bools(e_msg, msgs.len(), "chosen-OT choice bits")?;
    let mut y = BitWriter::new(w, 2 * msgs.len());
    for ((k, m), e) in keys.iter().zip(msgs).zip(e) {
        let (k0, k1) = if e { (k[1], k[0]) } else { (k[0], k[1]) };
        y.push(m[0] ^ k0 as u64);
        y.push(m[1] ^ k1 as u64);
    }
    Ok(y.finish())
}

/// Chosen OT, receiver step 2: unmasks the chosen message of each pair.
pub fn chosen_receiver_finish(
    keys: &[Block],
    choices: &[bool],
    y_msg: &[u8],
    w: u32,
) -> Result<Vec<u64>> {
    check_width(w)?;
    len_check("random OTs for chosen OT", keys.len(), choices.len())?;
    let y = unpack(y_msg, 2 * choices.len(), w, "chosen-OT masked messages")?;
    let mask = low_mask(w);
    Ok(y.chunks_exact(2)
        .zip(keys)
        .zip(choices)
        .map(|((pair, k), &c)| {
            let yc = pair.get(usize::from(c)).copied().unwrap_or(0);
            (yc ^ *k as u64) & mask
        })
        .collect())
}

/// Exact traffic of chosen-message OT beyond its `n` COTs: the receiver sends `ceil(n/8)`
/// bytes, the sender `ceil(2 n w / 8)` bytes, one message and one flight each.
pub fn chosen_cost(n: usize, w: u32) -> OtCost {
    OtCost::request_response(
        OtSide::Receiver,
        Traffic {
            bytes: n.div_ceil(8) as u64,
            messages: 1,
            flights: 1,
        },
        Traffic {
            bytes: packed_len(2 * n, w) as u64,
            messages: 1,
            flights: 1,
        },
    )
}

/// 1-of-N OT, receiver step 1: the `n l` derandomization bits (bit `k` of choice `i` xor its
/// random-OT bit), `ceil(n l / 8)` bytes.
pub fn one_of_n_receiver_message(rot_choices: &[bool], choices: &[u8], l: u32) -> Result<Vec<u8>> {
    check_log(l)?;
    let l = l as usize;
    len_check(
        "random OTs for 1-of-N OT",
        rot_choices.len(),
        choices.len() * l,
    )?;
    Ok(pack_bools(rot_choices.iter().enumerate().map(|(j, &b)| {
        b ^ (choices.get(j / l).map_or(0, |v| (v >> (j % l)) & 1) == 1)
    })))
}

/// The PRF tweak of bit position `k` and message index `x`.
fn f_tweak(k: usize, x: usize) -> u128 {
    DOMAIN_ONE_OF_N | ((k as u128) << 16) | x as u128
}

/// 1-of-N OT, sender step: masks all `N` messages of every instance; `ceil(n N w / 8)` bytes.
pub fn one_of_n_sender_respond(
    keys: &[[Block; 2]],
    e_msg: &[u8],
    msgs: &[u64],
    l: u32,
    w: u32,
) -> Result<Vec<u8>> {
    let n = one_of_n_instances(msgs.len(), l, w)?;
    let (l, big_n) = (l as usize, 1usize << l);
    len_check("random OTs for 1-of-N OT", keys.len(), n * l)?;
    let e = unpack_bools(e_msg, n * l, "1-of-N OT choice bits")?;
    let h = FixedKeyHash::new();
    // π(K) of each key once; then F(K, τ) = π(π(K) ⊕ τ) ⊕ π(K) costs one AES per message and
    // bit position. The tweaks are the same for every instance.
    let tweaks: Vec<u128> = (0..big_n * l).map(|j| f_tweak(j % l, j / l)).collect();
    let mut out = BitWriter::new(w, msgs.len());
    let mut pre = vec![[0u128; 2]; l];
    let mut buf = vec![0u128; big_n * l];
    let mut sel = vec![0u128; big_n * l];
    for ((inst_keys, inst_e), inst_msgs) in keys
        .chunks_exact(l)
        .zip(e.chunks_exact(l))
        .zip(msgs.chunks_exact(big_n))
    {
        // pre[k][β] = π(K_{k, β}) with K_{k, β} = keys[k][β ⊕ e_k]: since e_k = v_k ⊕ c_k,
        // the receiver's key keys[k][c_k] is K_{k, v_k}.
        for ((p, key), &ek) in pre.iter_mut().zip(inst_keys).zip(inst_e) {
            *p = if ek { [key[1], key[0]] } else { *key };
        }
        h.permute_many(bytemuck::cast_slice_mut(&mut pre));
        for (x, (bchunk, schunk)) in buf
            .chunks_exact_mut(l)
            .zip(sel.chunks_exact_mut(l))
            .enumerate()
        {
            for (k, ((slot, s), p)) in bchunk
                .iter_mut()
                .zip(schunk.iter_mut())
                .zip(&pre)
                .enumerate()
            {
                *s = if (x >> k) & 1 == 1 { p[1] } else { p[0] };
                *slot = *s;
            }
        }
        for (slot, t) in buf.iter_mut().zip(&tweaks) {
            *slot ^= t;
        }
        h.permute_many(&mut buf);
        for (m, (bchunk, schunk)) in inst_msgs
            .iter()
            .zip(buf.chunks_exact(l).zip(sel.chunks_exact(l)))
        {
            let pad = bchunk
                .iter()
                .zip(schunk)
                .fold(0u128, |acc, (x, s)| acc ^ x ^ s);
            out.push(m ^ pad as u64);
        }
    }
    Ok(out.finish())
}

/// 1-of-N OT, receiver step 2: unmasks the chosen message of each instance.
pub fn one_of_n_receiver_finish(
    keys: &[Block],
    choices: &[u8],
    y_msg: &[u8],
    l: u32,
    w: u32,
) -> Result<Vec<u64>> {
    check_one_of_n(choices, l, w)?;
    let (l, big_n) = (l as usize, 1usize << l);
    len_check("random OTs for 1-of-N OT", keys.len(), choices.len() * l)?;
    let y = unpack(y_msg, choices.len() * big_n, w, "1-of-N OT masked messages")?;
    let h = FixedKeyHash::new();
    let mut buf = keys.to_vec();
    h.hash_many(&mut buf, |j| {
        let v = choices.get(j / l).copied().map_or(0, usize::from);
        f_tweak(j % l, v)
    });
    let mask = low_mask(w);
    Ok(choices
        .iter()
        .zip(buf.chunks_exact(l))
        .zip(y.chunks_exact(big_n))
        .map(|((&v, chunk), inst_y)| {
            let pad = chunk.iter().fold(0u128, |acc, x| acc ^ x);
            let yv = inst_y.get(usize::from(v)).copied().unwrap_or(0);
            (yv ^ pad as u64) & mask
        })
        .collect())
}

/// Exact traffic of `n` 1-out-of-`2^l` OTs of `w`-bit messages beyond their `n l` COTs: the
/// receiver sends `ceil(n l / 8)` bytes, the sender `ceil(n 2^l w / 8)` bytes.
pub fn one_of_n_cost(n: usize, l: u32, w: u32) -> OtCost {
    OtCost::request_response(
        OtSide::Receiver,
        Traffic {
            bytes: (n * l as usize).div_ceil(8) as u64,
            messages: 1,
            flights: 1,
        },
        Traffic {
            bytes: packed_len(n << l, w) as u64,
            messages: 1,
            flights: 1,
        },
    )
}

/// Checks ring-valued correlations `xs` for [`cot_ring_sender`].
fn check_ring_inputs(xs: &[u64], ring: Ring) -> Result<()> {
    match xs.iter().position(|&x| !ring.contains(x)) {
        None => Ok(()),
        Some(i) => Err(MpcError::InvalidArgument {
            what: format!("correlation {i} is outside Z_2^{}", ring.bits()),
        }),
    }
}

/// Correlated OT over `Z_2^l`, sender step: from random-OT keys, optional derandomization bits
/// `e_msg` (`None`: the receiver keeps its random choices) and correlations `x_j`, returns the
/// sender's outputs `a_j` and the message `d_j = K_j^1 - a_j - x_j` (`ceil(n l / 8)` bytes),
/// where `K_j^β` is the key of choice `β` truncated to the ring.
///
/// The receiver's output minus the sender's is `b_j · x_j` (mod `2^l`): the additive
/// correlation of CrypTFlow2's B2A and multiplication protocols.
pub fn cot_ring_sender(
    keys: &[[Block; 2]],
    e_msg: Option<&[u8]>,
    xs: &[u64],
    ring: Ring,
) -> Result<(Vec<u64>, Vec<u8>)> {
    len_check("random OTs for ring COT", keys.len(), xs.len())?;
    check_ring_inputs(xs, ring)?;
    let e = match e_msg {
        Some(m) => unpack_bools(m, xs.len(), "ring-COT choice bits")?,
        None => vec![false; xs.len()],
    };
    let mut a = Vec::with_capacity(xs.len());
    let mut d = Vec::with_capacity(xs.len());
    for ((k, &x), e) in keys.iter().zip(xs).zip(e) {
        let (k0, k1) = if e { (k[1], k[0]) } else { (k[0], k[1]) };
        let aj = ring.reduce(k0 as u64);
        a.push(aj);
        d.push(ring.sub(ring.sub(ring.reduce(k1 as u64), aj), x));
    }
    Ok((a, pack(&d, ring.bits())))
}

/// Correlated OT over `Z_2^l`, receiver step: its output `K^b_j - b_j · d_j` for its key
/// `K^b_j` (the random-OT key of its choice) and choice `b_j`.
pub fn cot_ring_receiver_finish(
    keys: &[Block],
    choices: &[bool],
    d_msg: &[u8],
    ring: Ring,
) -> Result<Vec<u64>> {
    len_check("random OTs for ring COT", keys.len(), choices.len())?;
    let d = unpack(d_msg, choices.len(), ring.bits(), "ring-COT corrections")?;
    Ok(keys
        .iter()
        .zip(choices)
        .zip(d)
        .map(|((&k, &b), dj)| {
            let kb = ring.reduce(k as u64);
            if b {
                ring.sub(kb, dj)
            } else {
                kb
            }
        })
        .collect())
}

/// Exact traffic of `n` ring COTs over `Z_2^l` beyond their `n` COTs: with chosen choices the
/// receiver sends `ceil(n/8)` bytes first; the sender sends `ceil(n l / 8)` bytes.
pub fn cot_ring_cost(n: usize, ring: Ring, chosen_choices: bool) -> OtCost {
    let d = Traffic {
        bytes: packed_len(n, ring.bits()) as u64,
        messages: 1,
        flights: 1,
    };
    if chosen_choices {
        OtCost::request_response(
            OtSide::Receiver,
            Traffic {
                bytes: n.div_ceil(8) as u64,
                messages: 1,
                flights: 1,
            },
            d,
        )
    } else {
        OtCost::one_way(OtSide::Sender, d)
    }
}
