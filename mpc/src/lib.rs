//! Duet MPC: the ring Z_2^l and fixed point, additive secret shares, PRGs, and oblivious
//! transfer with the two-party building blocks made from it.
//!
//! Every protocol has an I/O-free core and a thin driver over a
//! [`Channel`](duet_transport::Channel).

mod error;
pub mod fixed;
pub mod fixed_math;
pub mod nonlinear;
pub mod ot;
pub mod prg;
pub mod ring;
pub mod share;

pub use error::{MpcError, Result};
pub use fixed::FixedPoint;
pub use prg::{agree_seed, Prg, Seed};
pub use ring::Ring;
pub use share::AShare;
