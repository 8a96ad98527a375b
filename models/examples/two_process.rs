//! Secure inference between two processes over QUIC with pinned certificates: this program
//! starts a copy of itself as the server, then connects to it as the client.
//! `cargo run --release -p duet-models --example two_process`
//! (on two machines, run `duet serve` / `duet connect`, which do the same).

use duet_models::open::{ModelSpec, PublicModel, ServerModel};
use duet_models::session::{Client, RunConfig, Server};
use duet_transport::quic::{connect, Fingerprint, Identity, QuicConfig, QuicListener, QuicRuntime};
use duet_transport::Session;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

type Error = Box<dyn std::error::Error>;

/// The sub-channel of the model session.
const MODEL_CHANNEL: u32 = 1;

fn config() -> RunConfig {
    RunConfig::planned("duet", "lan")
}

/// The server process: listens on an ephemeral port, prints its address and fingerprint, and
/// serves the one client whose fingerprint it was given.
fn serve(client_fp: &str) -> Result<(), Error> {
    let model = ServerModel::open(&ModelSpec::parse("bert-tiny")?)?;
    let rt = QuicRuntime::recommended()?;
    let id = Identity::generate()?;
    let peer: Fingerprint = client_fp.parse()?;
    let listener = QuicListener::bind(
        &rt,
        "127.0.0.1:0".parse()?,
        &id,
        peer,
        QuicConfig::default(),
    )?;
    println!("{} {}", listener.local_addr()?, id.fingerprint());
    let session = listener.accept()?;
    let ch = session.channel(MODEL_CHANNEL)?;
    let reports = Server::accept(ch, &model.graph, &model.weights, &config())?.serve()?;
    session.close()?;
    eprintln!("server: served {} request(s)", reports.len());
    Ok(())
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, role, fp] = args.as_slice() {
        if role == "serve" {
            return serve(fp);
        }
    }
    // the client: start the server process, pin its fingerprint, connect
    let id = Identity::generate()?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", &id.fingerprint().to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let (addr, fp) = line.trim().split_once(' ').ok_or("bad server line")?;
    let model = PublicModel::open(&ModelSpec::parse("bert-tiny")?, false)?;
    let rt = QuicRuntime::recommended()?;
    let session = connect(&rt, addr.parse()?, &id, fp.parse()?, QuicConfig::default())?;
    let mut client = Client::connect(session.channel(MODEL_CHANNEL)?, &model.graph, &config(), 8)?;
    for ids in [
        &[101u32, 7, 42, 102][..],
        &[101, 2023, 2003, 1037, 3231, 1012, 7, 102],
    ] {
        let (out, report) = client.infer(ids)?;
        let rows = out.hidden.map_or(0, |h| h.rows);
        println!(
            "client: {rows} rows revealed, online {} bytes",
            report.online_bytes
        );
    }
    client.close()?;
    session.close()?;
    child.wait()?;
    Ok(())
}
