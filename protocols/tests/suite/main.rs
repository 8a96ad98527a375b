//! duet-protocols's integration tests, one binary (one binary per file cost a link and the
//! instantiations each). Run one file's tests with a filter: `cargo test --release -p duet-protocols
//! --test suite he_matmul::`.

mod he_matmul;
mod kv_cache;
mod linear;
mod rounds;
mod server_key;
mod token_choice;
