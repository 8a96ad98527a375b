//! Secure inference of a small BERT between two parties over an in-memory channel pair:
//! `cargo run --release -p duet-models --example secure_bert_tiny`.

use duet_models::open::{ModelSpec, PublicModel, ServerModel};
use duet_models::session::{Client, RunConfig, Server};
use duet_models::{run_reference, ModelError};
use duet_transport::run_two_party;

fn main() -> Result<(), ModelError> {
    // bert-tiny with public seeded weights (a folder with config.json and model.safetensors
    // works the same: ModelSpec::Dir)
    let spec = ModelSpec::parse("bert-tiny")?;
    let (server_model, client_model) =
        (ServerModel::open(&spec)?, PublicModel::open(&spec, false)?);
    let ids = [101, 2023, 2003, 1037, 3231, 102];
    // the planner's choices for a LAN, derived by both parties and compared in the handshake
    let config = RunConfig::planned("duet", "lan");
    let (server, client) = run_two_party(
        |ch| Server::accept(ch, &server_model.graph, &server_model.weights, &config)?.serve(),
        |ch| {
            let mut client = Client::connect(ch, &client_model.graph, &config, ids.len())?;
            let out = client.infer(&ids)?;
            client.close()?;
            Ok::<_, ModelError>(out)
        },
    );
    server?;
    let (out, report) = client?;
    let hidden = out
        .hidden
        .ok_or_else(|| ModelError::Input("no hidden state".into()))?;
    let plain = run_reference(&server_model.graph, &server_model.weights, &ids)?;
    let err = hidden
        .data
        .iter()
        .zip(&plain.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!(
        "{} x {} hidden state, max |error| vs plaintext {err:.2e}; online {} bytes, setup {} bytes",
        hidden.rows, hidden.cols, report.online_bytes, report.setup_bytes
    );
    Ok(())
}
