//! duet-fhe's integration tests, one binary (one binary per file cost a link and the
//! instantiations each). Run one file's tests with a filter: `cargo test --release -p duet-fhe
//! --test suite layout::`.

mod layout;
mod matmul_exact;
mod orbit;
mod pack;
mod serialization;
