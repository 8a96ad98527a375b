//! [`OtPair`]: both IKNP directions of one session, so either party can be the OT sender.

use super::base::SessionId;
use super::iknp::{IknpReceiver, IknpReceiverSetup, IknpSender, IknpSenderSetup, KAPPA};
use super::{base::POINT_BYTES, Traffic};
use crate::Result;
use duet_transport::{Channel, Role};
use rand::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

/// The base-OT session id of the direction in which `receiver` is the IKNP receiver (and the
/// base-OT sender).
fn direction_sid(receiver: Role) -> SessionId {
    let mut h = Sha256::new();
    h.update(b"duet/ot/iknp-base-ot/v1/receiver=");
    h.update(receiver.to_string().as_bytes());
    h.finalize().into()
}

/// A session's OT state: an IKNP sender (this party sends OTs to the peer) and an IKNP
/// receiver (the peer sends OTs to this party), each with its own `Δ`, seeds and COT pool.
///
/// Setup runs the 128 base OTs of both directions at once: each party sends its base-OT `A`,
/// then answers the peer's `A` (Simplest OT, see [`super::base`]). After that, COTs in either
/// direction need no public-key work. Both parties must make matching calls: when this party
/// calls `sender().send_*`, the peer calls `receiver().recv_*` with the same counts.
///
/// Security: semi-honest, 128-bit (see [`super::iknp`] and [`super::base`]).
/// Cost of [`OtPair::setup`]: see [`OtPair::setup_cost`].
#[derive(Debug)]
pub struct OtPair {
    role: Role,
    sender: IknpSender,
    receiver: IknpReceiver,
}

impl OtPair {
    /// Runs the base OTs of both directions over `ch` (2 messages each way, 2 flights each).
    pub fn setup<C: Channel, R: RngCore + CryptoRng>(
        ch: &mut C,
        role: Role,
        rng: &mut R,
    ) -> Result<Self> {
        let (recv_setup, a) = IknpReceiverSetup::new(rng, direction_sid(role));
        ch.send_bytes(&a)?;
        ch.flush()?;
        let peer_a = ch.recv_bytes_max(crate::ot::base::POINT_BYTES)?;
        let (answer, sender) =
            IknpSenderSetup::new(rng).receive_base(rng, direction_sid(role.peer()), &peer_a)?;
        ch.send_bytes(&answer)?;
        ch.flush()?;
        let peer_answer =
            ch.recv_bytes_max(crate::ot::base::POINT_BYTES * crate::ot::iknp::KAPPA)?;
        let receiver = recv_setup.finish(&peer_answer)?;
        Ok(Self {
            role,
            sender,
            receiver,
        })
    }

    /// The exact traffic each party sends during [`OtPair::setup`] (the two are equal):
    /// `32 + 32 · 128 = 4128` bytes in 2 messages and 2 flights.
    pub fn setup_cost() -> Traffic {
        Traffic {
            bytes: (POINT_BYTES + POINT_BYTES * KAPPA) as u64,
            messages: 2,
            flights: 2,
        }
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The direction in which this party is the OT sender.
    pub fn sender(&mut self) -> &mut IknpSender {
        &mut self.sender
    }

    /// The direction in which this party is the OT receiver.
    pub fn receiver(&mut self) -> &mut IknpReceiver {
        &mut self.receiver
    }

    /// Splits into the two directions (e.g. to use them from different threads, each over its
    /// own sub-channel).
    pub fn into_parts(self) -> (IknpSender, IknpReceiver) {
        (self.sender, self.receiver)
    }
}
