//! The `duet` command.

use clap::{Parser, Subcommand};
use duet_bench::demo::{self, Builtin, RemoteSide};
use duet_bench::transport_bench::{self, TransportBenchArgs};
use duet_bench::DuetError;
use duet_transport::quic::{Fingerprint, Identity, QuicConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc reuses large freed blocks instead of returning them to the kernel, which avoids
/// a page fault per 4 KiB on every bulk message (measured: in-memory channel 1.5 -> see README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Duet: two-party secure inference of transformers.
#[derive(Parser, Debug)]
#[command(name = "duet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
struct NetArgs {
    /// Folder that keeps this party's certificate and key (created on first use).
    #[arg(long, env = "DUET_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// SHA-256 fingerprint of the peer's certificate (64 hex digits), as the peer printed it.
    #[arg(long)]
    peer_fingerprint: String,
    /// Seconds without any packet from the peer before the session ends.
    #[arg(long, default_value_t = 60)]
    idle_timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Both parties in one process over loopback QUIC on a built-in payload; no files needed.
    Demo {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print this party's certificate fingerprint (creating the identity if needed).
    Fingerprint {
        /// Folder that keeps this party's certificate and key.
        #[arg(long, env = "DUET_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Server side of a two-machine run: listen, accept one pinned client, run.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:4433.
        #[arg(long)]
        listen: String,
        /// A model folder (HuggingFace config.json + model.safetensors).
        #[arg(long, conflicts_with = "builtin", required_unless_present = "builtin")]
        model: Option<PathBuf>,
        /// A built-in payload.
        #[arg(long, value_enum)]
        builtin: Option<Builtin>,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Client side of a two-machine run: connect to a pinned server and run.
    Connect {
        /// Server address, e.g. 192.0.2.1:4433.
        addr: String,
        /// A built-in payload (must match the server's).
        #[arg(long, value_enum, default_value = "linear-demo")]
        builtin: Builtin,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// One operator between two parties (both in this process) on random inputs, e.g.
    /// `duet bench op matmul --shape 128x768x768`.
    Op {
        /// Operator kind: matmul, matmul-shared, ...
        kind: String,
        /// Dimensions separated by `x`.
        #[arg(long)]
        shape: String,
        /// Protocol preset.
        #[arg(long, default_value = "duet")]
        protocol: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Channel throughput (bulk messages) and ping-pong latency, in-memory and loopback QUIC.
    Transport {
        /// Bulk message size in MiB.
        #[arg(long, default_value_t = 64)]
        mib: usize,
        /// Bulk messages.
        #[arg(long, default_value_t = 10)]
        messages: usize,
        /// Ping-pong round trips.
        #[arg(long, default_value_t = 2000)]
        pings: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn state_dir(given: Option<PathBuf>) -> Result<PathBuf, DuetError> {
    if let Some(d) = given {
        return Ok(d);
    }
    match std::env::var_os("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".duet")),
        None => Err(DuetError::Usage(
            "no --state-dir given and HOME is not set".into(),
        )),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, DuetError> {
    s.to_socket_addrs()
        .map_err(|e| DuetError::Usage(format!("bad address {s:?}: {e}")))?
        .next()
        .ok_or_else(|| DuetError::Usage(format!("address {s:?} resolves to nothing")))
}

fn side<'a>(
    net: &NetArgs,
    identity: &'a Identity,
    builtin: Builtin,
) -> Result<RemoteSide<'a>, DuetError> {
    let peer: Fingerprint = net.peer_fingerprint.parse()?;
    if net.idle_timeout == 0 {
        return Err(DuetError::Usage(
            "--idle-timeout must be at least 1 second".into(),
        ));
    }
    Ok(RemoteSide {
        identity,
        peer,
        config: QuicConfig {
            idle_timeout: Duration::from_secs(net.idle_timeout),
            ..QuicConfig::default()
        },
        builtin,
    })
}

fn print_report(r: &duet_bench::report::Report, json: bool) -> Result<(), DuetError> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", r.to_table());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<(), DuetError> {
    match cli.command {
        Command::Demo { json } => {
            let r = demo::run_demo(Builtin::LinearDemo)?;
            print_report(&r, json)
        }
        Command::Fingerprint { state_dir: d } => {
            let dir = state_dir(d)?;
            let id = Identity::load_or_create(&dir)?;
            println!("{}", id.fingerprint());
            Ok(())
        }
        Command::Serve {
            listen,
            model,
            builtin,
            net,
        } => {
            if let Some(m) = model {
                return Err(DuetError::Usage(format!(
                    "--model {}: loading HuggingFace model folders is not available in this build yet; use --builtin linear-demo or share-demo",
                    m.display()
                )));
            }
            let builtin = builtin.unwrap_or(Builtin::LinearDemo);
            let id = Identity::load_or_create(&state_dir(net.state_dir.clone())?)?;
            let listen = parse_addr(&listen)?;
            let json = net.json;
            let fp = id.fingerprint();
            let r = demo::serve(side(&net, &id, builtin)?, listen, |addr| {
                eprintln!("duet serve: listening on {addr}");
                eprintln!("duet serve: this server's fingerprint {fp}");
            })?;
            print_report(&r, json)
        }
        Command::Connect { addr, builtin, net } => {
            let id = Identity::load_or_create(&state_dir(net.state_dir.clone())?)?;
            eprintln!(
                "duet connect: this client's fingerprint {}",
                id.fingerprint()
            );
            let addr = parse_addr(&addr)?;
            let json = net.json;
            let r = demo::connect_and_run(side(&net, &id, builtin)?, addr)?;
            print_report(&r, json)
        }
        Command::Bench {
            what:
                BenchCommand::Op {
                    kind,
                    shape,
                    protocol,
                    json,
                },
        } => {
            let r = duet_bench::ops::run(&kind, &shape, &protocol)?;
            print_report(&r, json)
        }
        Command::Bench {
            what:
                BenchCommand::Transport {
                    mib,
                    messages,
                    pings,
                    json,
                },
        } => {
            if mib == 0 || mib > 1024 || messages == 0 {
                return Err(DuetError::Usage(
                    "--mib must be in 1..=1024 and --messages at least 1".into(),
                ));
            }
            let r = transport_bench::run(TransportBenchArgs {
                message_bytes: mib << 20,
                messages,
                pings,
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{:<15} {:>14} {:>12} {:>18}",
                    "link", "Gbit/s (med)", "GB/s (med)", "8 B RTT us (med)"
                );
                for l in &r.links {
                    println!(
                        "{:<15} {:>14.2} {:>12.2} {:>18.1}",
                        l.kind,
                        l.throughput_gbit_s_median,
                        l.throughput_gbyte_s_median,
                        l.ping_pong_rtt_us_median
                    );
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("duet: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
