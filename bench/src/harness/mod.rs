//! The experiment harness: `duet bench model` (the server in a child process, the network
//! shaped by namespaces or the relay), the run reports' folder (`results.md`, plots) and
//! re-prediction of recorded runs (`duet bench table --profile`).

pub mod generate_bench;
pub mod model_bench;
pub mod netns;
pub mod repredict;
pub mod results;
