//! duet-mpc's integration tests, one binary (one binary per file cost a link and the
//! instantiations each). Run one file's tests with a filter: `cargo test --release -p duet-mpc
//! --test suite ferret_cot::`.

mod common;
mod ferret_cot;
mod nl_arith;
mod nl_batches;
mod nl_compare;
mod nl_malformed;
mod nl_ot_matmul;
mod ot_kk13;
mod ot_malformed;
mod ot_suite;
mod ot_transpose;
mod poly_rings;
