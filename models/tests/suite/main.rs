//! duet-models' integration tests, one binary (each file was its own binary: linking and
//! instantiating the generic secure walk nineteen times took most of the suite's build time).
//! `tests/gguf_mutation.rs` and `tests/hostile_messages.rs` stay apart: they count the
//! process's allocations, which other tests running beside them would disturb.
//! Run one file's tests with a filter: `cargo test --release -p duet-models --test suite
//! smollm2::`.

mod common;

mod bad_models;
mod builtin_shapes;
mod gaussian_attention;
mod generate;
mod gguf;
mod gguf_synthetic;
mod leakage;
mod lora_mode;
mod minilm;
mod planner;
mod predict;
mod public_prefix;
mod ranges;
mod rotation;
mod secure;
mod smollm2;
mod smollm2_lora;
