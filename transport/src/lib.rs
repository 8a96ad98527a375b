//! Duet transport: how two parties talk.
//!
//! * [`Channel`]: a blocking, framed, counted message channel with typed helpers (bincode 2
//!   control messages, zero-copy `u64` bulk data via bytemuck).
//! * [`Session`]: a source of independent sub-channels to one peer, usable from several threads.
//! * [`memory_pair`] / [`memory_session_pair`]: in-memory implementations for tests, and
//!   [`run_two_party`] which runs both parties on two threads.
//! * [`quic`]: QUIC (quinn + rustls on the ring provider) with mutual authentication by pinned
//!   self-signed certificates, driven by a background tokio runtime so protocol code stays
//!   synchronous.
//!
//! ```
//! use duet_transport::{run_two_party, Channel};
//!
//! let (server_saw, client_saw) = run_two_party(
//!     |mut ch| {
//!         ch.send_u64s(&[1, 2, 3])?;
//!         ch.recv_msg::<String>()
//!     },
//!     |mut ch| {
//!         let v = ch.recv_u64s()?;
//!         ch.send_msg(&format!("sum {}", v.iter().sum::<u64>()))?;
//!         Ok::<_, duet_transport::TransportError>(v)
//!     },
//! );
//! assert_eq!(server_saw?, "sum 6");
//! assert_eq!(client_saw?, vec![1, 2, 3]);
//! # Ok::<(), duet_transport::TransportError>(())
//! ```
//!
//! Wire format of one message: an 8-byte little-endian payload length, then the payload. A
//! receiver refuses a length above its limits (the channel's frame limit, and the bound the
//! protocol gives for the message it expects) before allocating anything ([`wire`]). Text the
//! peer sends is printed only through [`peer_text`].

#[cfg(target_endian = "big")]
compile_error!(
    "duet-transport sends u64 slices as native bytes and requires a little-endian target"
);

mod channel;
mod error;
mod memory;
pub mod quic;
pub mod relay;
mod role;
mod stats;
mod text;
pub mod wire;

pub use channel::{Channel, Session, MAX_CONTROL_MESSAGE_BYTES};
pub use error::{Result, TransportError};
pub use memory::{
    memory_pair, memory_pair_with, memory_session_pair, MemoryChannel, MemorySession,
    DEFAULT_MEMORY_TIMEOUT,
};
pub use role::{run_two_party, run_two_party_sessions, Role};
pub use stats::{ChannelStats, Counters};
pub use text::{peer_text, peer_text_max, PEER_TEXT_MAX_CHARS};

/// Bytes of the length prefix of every framed message on the wire.
pub const FRAME_HEADER_BYTES: usize = 8;

/// Default limit on one message's payload of every channel: 256 MiB. A session that knows its
/// shapes may lower it per channel ([`Channel::set_max_frame`]); a receive that knows the size
/// it expects is bounded by that size as well ([`Channel::recv_bytes_max`]).
///
/// Why 256 MiB: every protocol message is chunked or of a fixed size except one. Ciphertexts,
/// public and Galois keys are a few MiB at most (N = 8192, log q = 200); OT extension,
/// KK13, ring-COT and Ferret messages are chunked (64 Ki instances, 128 trees: at most a few
/// MiB); the OT matrix product's corrections come in chunks of 16 MiB; non-linear calls run in
/// batches of 131,072 elements. The one message that grows with the model is an encoder's
/// revealed hidden state, `seq x hidden x 8` bytes: 4 MiB for bert-large at 512 tokens, and
/// 256 MiB for an 8,192-token encoder 4,096 wide, the largest this default admits. Decoders
/// reveal a token or one position's logits (`vocab x 8` bytes, 2 MiB for a 256k vocabulary).
pub const DEFAULT_MAX_FRAME_BYTES: u64 = 256 << 20;
