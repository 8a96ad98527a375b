//! Base OT: Chou and Orlandi's "Simplest OT" (Latincrypt 2015) over Ristretto255, batched.
//!
//! Protocol, for `k` random OTs at once (IKNP uses `k = 128`), with `G` the Ristretto
//! basepoint and `H` SHA-256 over a labelled transcript:
//! 1. the sender draws `a`, sends `A = aG` (32 bytes);
//! 2. the receiver with choices `c_i` draws `b_i`, sends `B_i = b_i G + c_i A` (32 bytes each)
//!    and outputs `k_i = H(sid, i, A, B_i, b_i A)`;
//! 3. the sender outputs `k_i^0 = H(sid, i, A, B_i, a B_i)` and
//!    `k_i^1 = H(sid, i, A, B_i, a (B_i - A))`.
//!
//! Two subtleties are handled. The sender's `A` is fixed and sent before the receiver answers
//! (a sender choosing `A` after seeing `B_i` could bias the keys), and the hash binds the
//! session id, the index `i` and the transcript `(A, B_i)` besides the shared point, so that
//! the `k` outputs of a batch sharing one `A` are independent and the random-oracle proof goes
//! through (the version hashing only the shared point is the one whose UC proof was found
//! flawed). Every received point must decode canonically and `A` must not be the identity;
//! otherwise the result is [`MpcError::InvalidPeerData`], never a panic. Ristretto255 has prime
//! order, so there is no cofactor to clear.
//!
//! Security: semi-honest (passively secure) random OT in the random-oracle model under the CDH
//! assumption in Ristretto255, about 128-bit security. The receiver's choices are perfectly
//! hidden (`B_i` is uniform either way).
//!
//! Cost (per batch of `k`): sender → receiver 32 bytes in 1 message, receiver → sender `32 k`
//! bytes in 1 message, 2 flights. Sender: `k` variable-base scalar multiplications; receiver:
//! `k` fixed-base and `k` table-accelerated multiplications.

use super::{Block, OtCost, OtSide, Traffic};
use crate::{MpcError, Result};
use curve25519_dalek::constants::RISTRETTO_BASEPOINT_TABLE;
use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoBasepointTable, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

/// Bytes of an encoded Ristretto255 point.
pub const POINT_BYTES: usize = 32;

/// A session identifier bound into every base-OT key (e.g. a label and the direction).
pub type SessionId = [u8; 32];

const LABEL: &[u8] = b"duet/ot/simplest-ot/v1";

fn key_hash(
    sid: &SessionId,
    i: usize,
    a: &[u8; 32],
    b: &[u8; 32],
    shared: &RistrettoPoint,
) -> Block {
    let mut h = Sha256::new();
    h.update(LABEL);
    h.update(sid);
    h.update((i as u64).to_le_bytes());
    h.update(a);
    h.update(b);
    h.update(shared.compress().as_bytes());
    let d = h.finalize();
    let mut out = [0u8; 16];
    for (o, x) in out.iter_mut().zip(d.iter()) {
        *o = *x;
    }
    u128::from_le_bytes(out)
}

fn decode_point(bytes: &[u8], what: &str) -> Result<([u8; 32], RistrettoPoint)> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| MpcError::InvalidPeerData {
        what: format!("{what}: {} bytes, expected {POINT_BYTES}", bytes.len()),
    })?;
    let p = CompressedRistretto(arr)
        .decompress()
        .ok_or_else(|| MpcError::InvalidPeerData {
            what: format!("{what}: not a canonical Ristretto255 encoding"),
        })?;
    Ok((arr, p))
}

/// The exact cost of one batch of `k` base OTs (sender: the party sending `A`).
pub fn base_ot_cost(k: usize) -> OtCost {
    OtCost::request_response(
        OtSide::Sender,
        Traffic {
            bytes: POINT_BYTES as u64,
            messages: 1,
            flights: 1,
        },
        Traffic {
            bytes: (POINT_BYTES * k) as u64,
            messages: 1,
            flights: 1,
        },
    )
}

/// The Simplest-OT sender after it has sent `A`: waiting for the receiver's points.
///
/// I/O-free core: [`SimplestOtSender::new`] gives the first message,
/// [`SimplestOtSender::finish`] takes the answer and outputs `k` pairs of random 128-bit keys.
pub struct SimplestOtSender {
    sid: SessionId,
    a: Scalar,
    a_point: RistrettoPoint,
    a_bytes: [u8; 32],
    k: usize,
}

impl std::fmt::Debug for SimplestOtSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimplestOtSender")
            .field("k", &self.k)
            .finish()
    }
}

impl SimplestOtSender {
    /// Starts a batch of `k` OTs: draws `a` and returns the state and the message `A`.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R, sid: SessionId, k: usize) -> (Self, [u8; 32]) {
        let a = Scalar::random(rng);
        let a_point = RISTRETTO_BASEPOINT_TABLE * &a;
        let a_bytes = a_point.compress().to_bytes();
        (
            Self {
                sid,
                a,
                a_point,
                a_bytes,
                k,
            },
            a_bytes,
        )
    }

    /// Takes the receiver's `32 k` bytes of points and outputs the key pairs `(k_i^0, k_i^1)`.
    /// Errors on a wrong length or any invalid point.
    pub fn finish(self, receiver_msg: &[u8]) -> Result<Vec<[Block; 2]>> {
        if receiver_msg.len() != POINT_BYTES * self.k {
            return Err(MpcError::InvalidPeerData {
                what: format!(
                    "base OT answer of {} bytes, expected {}",
                    receiver_msg.len(),
                    POINT_BYTES * self.k
                ),
            });
        }
        let a_a = self.a * self.a_point;
        receiver_msg
            .chunks_exact(POINT_BYTES)
            .enumerate()
            .map(|(i, chunk)| {
                let (b_bytes, b) = decode_point(chunk, "base OT receiver point")?;
                let ab = self.a * b;
                let k0 = key_hash(&self.sid, i, &self.a_bytes, &b_bytes, &ab);
                let k1 = key_hash(&self.sid, i, &self.a_bytes, &b_bytes, &(ab - a_a));
                Ok([k0, k1])
            })
            .collect()
    }
}

/// The Simplest-OT receiver (one step): takes `A` and the choices, returns the answer (`32 k`
/// bytes) and the chosen keys `k_i^{c_i}`. Errors if `A` is malformed or the identity.
pub fn simplest_ot_receive<R: RngCore + CryptoRng>(
    rng: &mut R,
    sid: SessionId,
    choices: &[bool],
    sender_msg: &[u8],
) -> Result<(Vec<u8>, Vec<Block>)> {
    let (a_bytes, a_point) = decode_point(sender_msg, "base OT sender point")?;
    if a_point.is_identity() {
        return Err(MpcError::InvalidPeerData {
            what: "base OT sender point is the identity".into(),
        });
    }
    let a_table = RistrettoBasepointTable::create(&a_point);
    let mut msg = Vec::with_capacity(POINT_BYTES * choices.len());
    let mut keys = Vec::with_capacity(choices.len());
    for (i, &c) in choices.iter().enumerate() {
        let b = Scalar::random(rng);
        let b_point = RISTRETTO_BASEPOINT_TABLE * &b;
        // Both candidates are computed and one encoding is selected with a mask, so the
        // choice bit (a bit of the IKNP Δ) does not steer a branch.
        let p0 = b_point.compress().to_bytes();
        let p1 = (b_point + a_point).compress().to_bytes();
        let mask = 0u8.wrapping_sub(u8::from(c));
        let mut b_bytes = [0u8; 32];
        for ((o, x0), x1) in b_bytes.iter_mut().zip(p0).zip(p1) {
            *o = x0 ^ (mask & (x0 ^ x1));
        }
        let shared = &a_table * &b;
        keys.push(key_hash(&sid, i, &a_bytes, &b_bytes, &shared));
        msg.extend_from_slice(&b_bytes);
    }
    Ok((msg, keys))
}
