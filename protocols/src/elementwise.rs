//! HE-based element-wise multiplication of two shared tensors: [`HeElementwiseMul`].
//!
//! # Protocol
//! Inputs: `x = x_c + x_s`, `y = y_c + y_s` additively shared over `Z_{2^l}` (client `c`,
//! server `s`). Output: fresh shares `z_c + z_s = x . y mod 2^l`. With all shares lifted to
//! `[0, 2^l)`, `x y = x_c y_c + x_s y_s + C` with the cross term `C = x_c y_s + y_c x_s` an
//! integer `< 2^(2l+1)`; only `C` needs interaction.
//!
//! 0. Setup (once per session, [`HeMulClientSetup`]): the client sends the public key of the
//!    slot ring ([`duet_fhe::SlotParameters`]).
//! 1. Client: for every batch of `N = 8192` elements and every plaintext prime `t_i`
//!    (`i < k`), sends `Enc_i(x_c)`, `Enc_i(y_c)` (slot-encoded BFV, seeded: half size).
//! 2. Server: draws `r` uniform in `[0, 2^(2l+1+sigma))` per element and returns, per batch and
//!    `i`, `Enc_i(x_c) * y_s + Enc_i(y_c) * x_s + r` re-randomized, modulus-switched and flooded
//!    ([`duet_fhe::SlotAccumulator::finalize`]). Its share: `z_s = x_s y_s - r mod 2^l`.
//! 3. Client: decrypts the `k` residues of `D = C + r` per element, recovers the integer `D`
//!    (`D < 2^(2l+2+sigma) <= prod t_i`, Garner CRT, [`duet_fhe::SlotParameters::combine_mod_2_64`])
//!    and sets `z_c = x_c y_c + D mod 2^l`.
//!
//! Exact: `z_c + z_s = x_c y_c + x_s y_s + C = x y mod 2^l`, for every `l` in `16..=64`.
//!
//! # Security (semi-honest)
//! Server: sees RLWE ciphertexts under the client's key (128-bit, HomomorphicEncryption.org row
//! `N = 8192, log2 q <= 218`) and the public key. Client: learns `D = C + r`; since `r` is
//! uniform on `2^(2l+1+sigma)` integers and `0 <= C < 2^(2l+1)`, `D` is within statistical
//! distance `2^-sigma` (sigma = 40) of a value independent of `C` per element. The returned
//! ciphertexts are re-randomized with the public key (their `a` part reveals nothing about the
//! server's shares) and flooded with 40-bit statistical security (their noise reveals nothing).
//!
//! # Cost ([`HeElementwiseMul::cost`], exact)
//! `B = ceil(n / N)` batches, `k` plaintext primes: up `2 k B` seeded ciphertexts of
//! `42 + N sum ceil(log2 p_i) / 8` bytes, down `k B` outputs of `11 + N (kb + ka) / 8` bytes;
//! 2 flights (one round trip). At `l = 37` (`k = 2`, `q` = 3 x 58 bits, `kb = 101`, `ka = 70`):
//! 87.0 B up + 42.8 B down = 129.8 bytes per element for full batches, versus about 1,369 for the
//! OT-based [`duet_mpc::nonlinear::mul`]. Setup: one public key, 178,218 bytes.
//! Compute per batch and prime: client 2 encryptions + 1 decryption, server 4 polynomial products
//! and about 25 NTTs of size `N`; batches run in parallel (rayon).

use std::sync::Arc;

use duet_fhe::{
    PublicKey, SecretKey, SeededCiphertext, SlotAccumulator, SlotOutput, SlotParameters, SlotPlain,
};
use duet_mpc::{AShare, Ring};
use duet_transport::Channel;
use rand::Rng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use rayon::prelude::*;

use crate::error::{ProtocolError, Result};
use crate::matmul::Cost;

/// The client's session keys for [`HeElementwiseMul`].
#[derive(Debug)]
pub struct HeMulClientSetup {
    params: Arc<SlotParameters>,
    sk: SecretKey,
    pk: PublicKey,
}

/// The server's view of the session keys: the client's public key.
#[derive(Debug)]
pub struct HeMulServerSetup {
    params: Arc<SlotParameters>,
    pk: PublicKey,
}

impl HeMulClientSetup {
    /// Generate a key pair for `params`.
    pub fn generate<R: RngCore + CryptoRng>(params: &Arc<SlotParameters>, rng: &mut R) -> Self {
        let sk = SecretKey::generate(params.ring(), rng);
        let pk = sk.public_key(rng);
        Self {
            params: Arc::clone(params),
            sk,
            pk,
        }
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<SlotParameters> {
        &self.params
    }

    /// The setup message (the public key).
    pub fn setup_message(&self) -> Vec<u8> {
        self.pk.to_bytes()
    }

    /// Setup traffic: one client message with the public key, one flight (it travels with the
    /// first online flight when the operator follows directly).
    pub fn setup_cost(params: &SlotParameters) -> Cost {
        let bytes = PublicKey::serialized_len(params.ring()) as u64;
        Cost {
            bytes,
            rounds: 1,
            client_to_server: bytes,
            messages: 1,
            ..Cost::default()
        }
    }

    /// Driver: generate keys and send the public key (flushed).
    pub fn run<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        params: &Arc<SlotParameters>,
        rng: &mut R,
    ) -> Result<Self> {
        let me = Self::generate(params, rng);
        ch.send_bytes(&me.setup_message())?;
        ch.flush()?;
        Ok(me)
    }
}

impl HeMulServerSetup {
    /// Core: parse the client's public key.
    pub fn from_message(params: &Arc<SlotParameters>, msg: &[u8]) -> Result<Self> {
        Ok(Self {
            params: Arc::clone(params),
            pk: PublicKey::from_bytes(params.ring(), msg)?,
        })
    }

    /// Driver: receive and parse the public key.
    pub fn run<C: Channel>(ch: &mut C, params: &Arc<SlotParameters>) -> Result<Self> {
        let msg = ch.recv_bytes_max(PublicKey::serialized_len(params.ring()))?;
        Self::from_message(params, &msg)
    }

    /// The parameters.
    pub fn params(&self) -> &Arc<SlotParameters> {
        &self.params
    }
}

/// HE-based element-wise product of two shared tensors (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub struct HeElementwiseMul;

/// The client's state between its two messages.
#[derive(Debug)]
pub struct HeElementwiseClient {
    ring: Ring,
    shape: Vec<usize>,
    /// `x_c y_c mod 2^l`.
    local: Vec<u64>,
}

fn check_inputs(params: &SlotParameters, x: &AShare, y: &AShare) -> Result<Ring> {
    let ring = x.ring();
    if y.ring() != ring || x.shape() != y.shape() {
        return Err(ProtocolError::Shape {
            what: "element-wise operands",
            expected: x.len(),
            got: y.len(),
        });
    }
    if ring.bits() != params.ring_bits() {
        return Err(ProtocolError::Config(format!(
            "shares over Z_2^{} but the slot parameters are for l = {}",
            ring.bits(),
            params.ring_bits()
        )));
    }
    Ok(ring)
}

fn batches(n: usize, degree: usize) -> usize {
    n.div_ceil(degree.max(1))
}

/// Independent per-batch generators derived from the caller's generator.
fn batch_rngs<R: RngCore + CryptoRng>(rng: &mut R, count: usize) -> Vec<ChaCha20Rng> {
    (0..count)
        .map(|_| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            ChaCha20Rng::from_seed(seed)
        })
        .collect()
}

impl HeElementwiseMul {
    /// Exact online traffic for `n` elements (setup apart: [`HeMulClientSetup::setup_cost`]).
    pub fn cost(n: usize, params: &SlotParameters) -> Cost {
        let b = batches(n, params.degree()) as u64;
        let k = params.components() as u64;
        let up = 2 * k * b * SeededCiphertext::serialized_len(params.ring()) as u64;
        let down = k * b * SlotOutput::serialized_len(params) as u64;
        Cost {
            bytes: up + down,
            rounds: if b == 0 { 0 } else { 2 },
            client_to_server: up,
            server_to_client: down,
            messages: 3 * k * b,
            key_switches: 0,
            products: 2 * k * b,
        }
    }

    /// Client core, first flight: the ciphertexts of `x_c` and `y_c`, batch by batch, for each
    /// plaintext prime `Enc(x_c)` then `Enc(y_c)`.
    pub fn client_start<R: RngCore + CryptoRng>(
        setup: &HeMulClientSetup,
        x_c: &AShare,
        y_c: &AShare,
        rng: &mut R,
    ) -> Result<(HeElementwiseClient, Vec<Vec<u8>>)> {
        let params = &setup.params;
        let ring = check_inputs(params, x_c, y_c)?;
        let n = params.degree();
        let k = params.components();
        let rngs = batch_rngs(rng, batches(x_c.len(), n));
        let msgs: Vec<Vec<Vec<u8>>> = x_c
            .data()
            .par_chunks(n)
            .zip(y_c.data().par_chunks(n))
            .zip(rngs)
            .map(|((xs, ys), mut rng)| -> Result<Vec<Vec<u8>>> {
                let mut out = Vec::with_capacity(2 * k);
                for comp in 0..k {
                    for v in [xs, ys] {
                        let ct = setup.sk.encrypt_slots(params, comp, v, &mut rng)?;
                        out.push(ct.to_bytes(params.ring())?);
                    }
                }
                Ok(out)
            })
            .collect::<Result<_>>()?;
        let local = x_c
            .data()
            .iter()
            .zip(y_c.data())
            .map(|(&a, &b)| ring.mul(a, b))
            .collect();
        Ok((
            HeElementwiseClient {
                ring,
                shape: x_c.shape().to_vec(),
                local,
            },
            msgs.into_iter().flatten().collect(),
        ))
    }

    /// Server core: answer the client's ciphertexts; returns the server's output share and the
    /// reply (per batch, one [`SlotOutput`] per plaintext prime).
    pub fn server_respond<R: RngCore + CryptoRng>(
        setup: &HeMulServerSetup,
        x_s: &AShare,
        y_s: &AShare,
        msgs: &[Vec<u8>],
        rng: &mut R,
    ) -> Result<(AShare, Vec<Vec<u8>>)> {
        let params = &setup.params;
        let ring = check_inputs(params, x_s, y_s)?;
        let n = params.degree();
        let k = params.components();
        let nb = batches(x_s.len(), n);
        if msgs.len() != 2 * k * nb {
            return Err(ProtocolError::Protocol(format!(
                "{} ciphertexts, expected {}",
                msgs.len(),
                2 * k * nb
            )));
        }
        let l = ring.bits();
        let mask_bits = 2 * l + 1 + params.stat_security_bits();
        let rngs = batch_rngs(rng, nb);
        let parts: Vec<(Vec<u64>, Vec<Vec<u8>>)> = x_s
            .data()
            .par_chunks(n)
            .zip(y_s.data().par_chunks(n))
            .zip(msgs.par_chunks(2 * k))
            .zip(rngs)
            .map(
                |(((xs, ys), cts), mut rng)| -> Result<(Vec<u64>, Vec<Vec<u8>>)> {
                    // mask r < 2^mask_bits: its residues mod each t_i and its value mod 2^l
                    let mut residues = vec![Vec::with_capacity(xs.len()); k];
                    let mut share = Vec::with_capacity(xs.len());
                    for (&a, &b) in xs.iter().zip(ys) {
                        let r = sample_mask(&mut rng, mask_bits);
                        for (dst, v) in residues.iter_mut().zip(params.residues_of(&r)) {
                            dst.push(v);
                        }
                        let r_low = r.first().copied().unwrap_or(0);
                        share.push(ring.sub(ring.mul(a, b), ring.reduce(r_low)));
                    }
                    let mut out = Vec::with_capacity(k);
                    for ((comp, pair), mask) in cts.chunks(2).enumerate().zip(&residues) {
                        let [cx, cy] = pair else {
                            return Err(ProtocolError::Protocol("odd ciphertext count".into()));
                        };
                        let cx = SeededCiphertext::from_bytes(params.ring(), cx)?
                            .expand(params.ring())?;
                        let cy = SeededCiphertext::from_bytes(params.ring(), cy)?
                            .expand(params.ring())?;
                        let mut acc = SlotAccumulator::new(params, comp)?;
                        acc.mul_acc(&cx, &SlotPlain::encode(params, comp, ys)?)?;
                        acc.mul_acc(&cy, &SlotPlain::encode(params, comp, xs)?)?;
                        let o = acc.finalize(&setup.pk, mask, &mut rng)?;
                        out.push(o.to_bytes(params)?);
                    }
                    Ok((share, out))
                },
            )
            .collect::<Result<_>>()?;
        let mut share = Vec::with_capacity(x_s.len());
        let mut reply = Vec::with_capacity(k * nb);
        for (s, o) in parts {
            share.extend(s);
            reply.extend(o);
        }
        Ok((AShare::new(ring, x_s.shape().to_vec(), share)?, reply))
    }

    /// Client core, final step: decrypt the server's reply into the client's output share.
    pub fn client_finish(
        setup: &HeMulClientSetup,
        state: HeElementwiseClient,
        msgs: &[Vec<u8>],
    ) -> Result<AShare> {
        let params = &setup.params;
        let n = params.degree();
        let k = params.components();
        let nb = batches(state.local.len(), n);
        if msgs.len() != k * nb {
            return Err(ProtocolError::Protocol(format!(
                "{} replies, expected {}",
                msgs.len(),
                k * nb
            )));
        }
        let ring = state.ring;
        let chunks: Vec<Vec<u64>> = state
            .local
            .par_chunks(n)
            .zip(msgs.par_chunks(k))
            .map(|(local, outs)| -> Result<Vec<u64>> {
                let residues = outs
                    .iter()
                    .enumerate()
                    .map(|(comp, bytes)| {
                        let o = SlotOutput::from_bytes(params, bytes, comp)?;
                        let mut slots = setup.sk.decrypt_slots(params, &o)?;
                        slots.truncate(local.len());
                        Ok(slots)
                    })
                    .collect::<Result<Vec<_>>>()?;
                let d = params.combine_mod_2_64(&residues)?;
                Ok(local
                    .iter()
                    .zip(d)
                    .map(|(&a, d)| ring.add(a, ring.reduce(d)))
                    .collect())
            })
            .collect::<Result<_>>()?;
        Ok(AShare::new(
            ring,
            state.shape,
            chunks.into_iter().flatten().collect(),
        )?)
    }

    /// Client driver: one flight out, one in. Returns the client's share of `x . y`.
    pub fn run_client<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeMulClientSetup,
        x_c: &AShare,
        y_c: &AShare,
        rng: &mut R,
    ) -> Result<AShare> {
        let (state, msgs) = Self::client_start(setup, x_c, y_c, rng)?;
        for m in &msgs {
            ch.send_bytes(m)?;
        }
        ch.flush()?;
        let want = setup.params.components() * batches(x_c.len(), setup.params.degree());
        let mut replies = Vec::with_capacity(want);
        let len = SlotOutput::serialized_len(&setup.params);
        for _ in 0..want {
            replies.push(ch.recv_bytes_max(len)?);
        }
        Self::client_finish(setup, state, &replies)
    }

    /// Server driver: receive the client's flight, answer with one flight. Returns the server's
    /// share of `x . y`.
    pub fn run_server<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        setup: &HeMulServerSetup,
        x_s: &AShare,
        y_s: &AShare,
        rng: &mut R,
    ) -> Result<AShare> {
        let want = 2 * setup.params.components() * batches(x_s.len(), setup.params.degree());
        let mut msgs = Vec::with_capacity(want);
        let len = SeededCiphertext::serialized_len(setup.params.ring());
        for _ in 0..want {
            msgs.push(ch.recv_bytes_max(len)?);
        }
        let (share, reply) = Self::server_respond(setup, x_s, y_s, &msgs, rng)?;
        for m in &reply {
            ch.send_bytes(m)?;
        }
        ch.flush()?;
        Ok(share)
    }
}

/// Uniform integer in `[0, 2^bits)` as four little-endian limbs (`bits <= 256`; the largest
/// mask, `l = 64` with `sigma = 80`, has 209 bits).
fn sample_mask<R: RngCore>(rng: &mut R, bits: u32) -> [u64; 4] {
    let mut r: [u64; 4] = rng.gen();
    for (i, limb) in r.iter_mut().enumerate() {
        let lo = 64 * i as u32;
        if bits <= lo {
            *limb = 0;
        } else if bits - lo < 64 {
            *limb &= (1u64 << (bits - lo)) - 1;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use duet_fhe::RingBits;
    use duet_transport::{run_two_party, ChannelStats};

    fn shares(ring: Ring, secret: &[u64], rng: &mut ChaCha20Rng) -> (AShare, AShare) {
        let n = secret.len();
        let r: Vec<u64> = (0..n).map(|_| ring.reduce(rng.gen())).collect();
        let c: Vec<u64> = secret
            .iter()
            .zip(&r)
            .map(|(&s, &r)| ring.sub(s, r))
            .collect();
        (
            AShare::new(ring, vec![n], r).unwrap(),
            AShare::new(ring, vec![n], c).unwrap(),
        )
    }

    /// Secrets: extremes (0, +-1, +-2^(l-1), 2^(l-1)-1) in every combination, then uniform.
    fn secrets(ring: Ring, n: usize, rng: &mut ChaCha20Rng) -> (Vec<u64>, Vec<u64>) {
        let half = 1u64 << (ring.bits() - 1);
        let ex = [0, 1, ring.neg(1), half, ring.neg(half), half - 1, 2];
        let mut x = Vec::with_capacity(n);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            if i < ex.len() * ex.len() {
                x.push(ex[i / ex.len()]);
                y.push(ex[i % ex.len()]);
            } else {
                x.push(ring.reduce(rng.gen()));
                y.push(ring.reduce(rng.gen()));
            }
        }
        (x, y)
    }

    type Run = (AShare, ChannelStats, ChannelStats);

    /// Both parties over the in-memory pair; returns (server, client) shares and the setup and
    /// online traffic of each endpoint.
    fn run(
        params: &Arc<SlotParameters>,
        x: &(AShare, AShare),
        y: &(AShare, AShare),
        seed: u64,
    ) -> (Run, Run) {
        let (rs, rc) = run_two_party(
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(seed);
                let setup = HeMulServerSetup::run(&mut ch, params)?;
                let s = ch.stats();
                let z = HeElementwiseMul::run_server(&mut ch, &setup, &x.0, &y.0, &mut rng)?;
                Ok::<_, ProtocolError>((z, s, ch.stats() - s))
            },
            |mut ch| {
                let mut rng = ChaCha20Rng::seed_from_u64(seed + 1);
                let setup = HeMulClientSetup::run(&mut ch, params, &mut rng)?;
                let s = ch.stats();
                let z = HeElementwiseMul::run_client(&mut ch, &setup, &x.1, &y.1, &mut rng)?;
                Ok::<_, ProtocolError>((z, s, ch.stats() - s))
            },
        );
        (rs.unwrap(), rc.unwrap())
    }

    /// Exact against the plaintext product for l = 16, 37, 64 on extremes and uniform shares,
    /// with a partial last batch; measured traffic equals `cost()` and `setup_cost()`.
    #[test]
    fn exact_products_and_measured_traffic() {
        for (l, n) in [(16u32, 100usize), (37, 8192 + 57), (64, 300)] {
            let ring = Ring::new(l).unwrap();
            let params = SlotParameters::new(RingBits(l)).unwrap();
            let mut rng = ChaCha20Rng::seed_from_u64(u64::from(l));
            let (xv, yv) = secrets(ring, n, &mut rng);
            let x = shares(ring, &xv, &mut rng);
            let y = shares(ring, &yv, &mut rng);
            let ((zs, setup_s, on_s), (zc, setup_c, on_c)) = run(&params, &x, &y, 7);
            let z = zs.reconstruct(&zc).unwrap();
            let want: Vec<u64> = xv.iter().zip(&yv).map(|(&a, &b)| ring.mul(a, b)).collect();
            assert_eq!(z, want, "l = {l}");
            assert_eq!(zs.shape(), &[n]);
            // traffic
            let cost = HeElementwiseMul::cost(n, &params);
            assert_eq!(on_c.bytes_sent, cost.client_to_server, "l = {l}");
            assert_eq!(on_s.bytes_sent, cost.server_to_client, "l = {l}");
            assert_eq!(on_s.bytes_sent + on_c.bytes_sent, cost.bytes);
            assert_eq!(on_s.messages_sent + on_c.messages_sent, cost.messages);
            // the client's online flight continues its setup flight; the server's reply is one
            let setup = HeMulClientSetup::setup_cost(&params);
            assert_eq!(setup_c.bytes_sent, setup.bytes);
            assert_eq!(setup_s.bytes_sent, 0);
            assert_eq!(
                setup_c.rounds + setup_s.rounds + on_c.rounds + on_s.rounds,
                cost.rounds
            );
            // the server's output share is masked: not equal to x_s y_s (overwhelmingly)
            let local: Vec<u64> =
                x.0.data()
                    .iter()
                    .zip(y.0.data())
                    .map(|(&a, &b)| ring.mul(a, b))
                    .collect();
            assert_ne!(zs.data(), &local[..]);
        }
    }

    #[test]
    fn cost_formula() {
        let params = SlotParameters::new(RingBits(37)).unwrap();
        assert_eq!(params.components(), 2);
        let c = HeElementwiseMul::cost(8192, &params);
        // 4 seeded ciphertexts of 10 + 32 + 8192 * 174 / 8 bytes, 2 outputs of
        // 11 + 8192 * (101 + 70) / 8 bytes
        assert_eq!(c.client_to_server, 4 * (42 + 8192 * 174 / 8));
        assert_eq!(c.server_to_client, 2 * (11 + 8192 * 171 / 8));
        assert_eq!(HeElementwiseMul::cost(8193, &params).bytes, 2 * c.bytes);
        assert_eq!(HeElementwiseMul::cost(0, &params).bytes, 0);
        assert!((c.bytes as f64 / 8192.0) < 131.0);
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let ring = Ring::new(37).unwrap();
        let params = SlotParameters::new(RingBits(37)).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let (xv, yv) = secrets(ring, 20, &mut rng);
        let x = shares(ring, &xv, &mut rng);
        let y = shares(ring, &yv, &mut rng);
        let client = HeMulClientSetup::generate(&params, &mut rng);
        let server = HeMulServerSetup::from_message(&params, &client.setup_message()).unwrap();
        assert!(HeMulServerSetup::from_message(&params, &[1, 2, 3]).is_err());
        let (state, msgs) = HeElementwiseMul::client_start(&client, &x.1, &y.1, &mut rng).unwrap();
        // wrong count
        assert!(matches!(
            HeElementwiseMul::server_respond(&server, &x.0, &y.0, &msgs[1..], &mut rng),
            Err(ProtocolError::Protocol(_))
        ));
        // truncated, flipped header, residue >= p
        for corrupt in [
            |m: &mut Vec<u8>| {
                m.pop();
            },
            |m: &mut Vec<u8>| m[1] ^= 1,
            |m: &mut Vec<u8>| {
                for b in m.iter_mut().skip(42).take(8) {
                    *b = 0xff;
                }
            },
        ] {
            let mut bad = msgs.clone();
            corrupt(&mut bad[2]);
            assert!(matches!(
                HeElementwiseMul::server_respond(&server, &x.0, &y.0, &bad, &mut rng),
                Err(ProtocolError::Fhe(_))
            ));
        }
        let (zs, reply) =
            HeElementwiseMul::server_respond(&server, &x.0, &y.0, &msgs, &mut rng).unwrap();
        // the client refuses bad replies
        let mut bad = reply.clone();
        bad[0].truncate(100);
        let (state2, _) = HeElementwiseMul::client_start(&client, &x.1, &y.1, &mut rng).unwrap();
        assert!(HeElementwiseMul::client_finish(&client, state2, &bad).is_err());
        let mut swapped = reply.clone();
        swapped.swap(0, 1);
        let (state3, _) = HeElementwiseMul::client_start(&client, &x.1, &y.1, &mut rng).unwrap();
        assert!(HeElementwiseMul::client_finish(&client, state3, &swapped).is_err());
        let (state4, _) = HeElementwiseMul::client_start(&client, &x.1, &y.1, &mut rng).unwrap();
        assert!(HeElementwiseMul::client_finish(&client, state4, &reply[..1]).is_err());
        let zc = HeElementwiseMul::client_finish(&client, state, &reply).unwrap();
        let want: Vec<u64> = xv.iter().zip(&yv).map(|(&a, &b)| ring.mul(a, b)).collect();
        assert_eq!(zs.reconstruct(&zc).unwrap(), want);
        // wrong ring width or shape
        let r16 = Ring::new(16).unwrap();
        let x16 = AShare::zeros(r16, vec![20]).unwrap();
        assert!(matches!(
            HeElementwiseMul::client_start(&client, &x16, &x16, &mut rng),
            Err(ProtocolError::Config(_))
        ));
        let short = AShare::zeros(ring, vec![19]).unwrap();
        assert!(HeElementwiseMul::client_start(&client, &x.1, &short, &mut rng).is_err());
    }
}
