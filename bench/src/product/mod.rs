//! The product commands: `duet demo`, `infer`, `serve` / `connect`, `generate`, `plan`,
//! `relay`, and the glue they share (inputs, the model session over QUIC).

pub mod generate;
pub mod infer;
pub mod inputs;
pub mod linear_demo;
pub mod payload;
pub mod plan;
pub mod relay;
pub mod session;
pub mod share_demo;
