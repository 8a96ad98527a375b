//! The `duet` command.

use clap::{Parser, Subcommand};
use duet_bench::harness::model_bench::{self, BenchModelArgs};
use duet_bench::harness::netns::Shaping;
use duet_bench::harness::results;
use duet_bench::model_report::ModelReport;
use duet_bench::ops::transport::{self as transport_bench, TransportBenchArgs};
use duet_bench::product::infer::{self, InferArgs, Link};
use duet_bench::product::inputs::InputArg;
use duet_bench::product::payload::{self as demo, Builtin, RemoteSide};
use duet_bench::DuetError;
use duet_models::open::ModelSpec;
use duet_models::session::RunConfig;
use duet_models::BuiltinModel;
use duet_transport::quic::{Fingerprint, Identity, QuicConfig};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc reuses large freed blocks instead of returning them to the kernel, which avoids
/// a page fault per 4 KiB on every bulk message (measured: in-memory channel 1.5 -> see README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps freed memory committed (mimalloc's `purge_delay = -1`) unless the user set
/// `MIMALLOC_PURGE_DELAY`. mimalloc's default returns freed pages to the kernel after 1 s unused; the
/// HE layers allocate and free hundreds of MB of weight polynomials per call, so each call
/// page-faulted (and the kernel zeroed) them again: 43% of a `1x576x49152` matmul's samples
/// were `clear_page_erms`. Measured on SmolLM2 (`duet bench generate ... --prompt-len 8
/// --new-tokens 3 --shaping none --plan fixed`): decode 13.9 -> 10.9 s per token, prefill 54 ->
/// 47 s, system time 30 -> 10 s; peak RSS server 1.60 -> 1.65 GB, client 1.61 -> 1.97 GB
/// (freed memory is reused, not returned). See the README's design notes ("mimalloc keeps
/// freed memory").
mod alloc_tuning {
    use std::ffi::{c_int, c_long};

    /// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (libmimalloc-sys 0.1.49,
    /// `c_src/mimalloc/v3/include/mimalloc.h`); its default is 1000 (ms, `src/options.c`), checked below
    /// before anything is set.
    const PURGE_DELAY: c_int = 15;
    const PURGE_DELAY_DEFAULT: c_long = 1000;

    #[allow(unsafe_code)]
    mod ffi {
        use std::ffi::{c_int, c_long};
        unsafe extern "C" {
            fn mi_version() -> c_int;
            fn mi_option_get(option: c_int) -> c_long;
            fn mi_option_set(option: c_int, value: c_long);
        }
        pub(super) fn version() -> c_int {
            // SAFETY: a pure query of the linked mimalloc, no arguments.
            unsafe { mi_version() }
        }
        pub(super) fn get(option: c_int) -> c_long {
            // SAFETY: mimalloc bounds-checks `option` (returns 0 outside the table).
            unsafe { mi_option_get(option) }
        }
        pub(super) fn set(option: c_int, value: c_long) {
            // SAFETY: as `get`; options are atomics in mimalloc, safe from any thread.
            unsafe { mi_option_set(option, value) }
        }
    }

    /// Applies the setting; returns whether it was applied.
    pub(crate) fn keep_freed_memory() -> bool {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return false; // the user's choice stands
        }
        // only on the mimalloc whose option table we checked, with the option at its default
        if !(30_000..40_000).contains(&ffi::version())
            || ffi::get(PURGE_DELAY) != PURGE_DELAY_DEFAULT
        {
            return false;
        }
        ffi::set(PURGE_DELAY, -1);
        ffi::get(PURGE_DELAY) == -1
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_purge_delay_option_is_found_and_set() {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
                eprintln!("skipped: MIMALLOC_PURGE_DELAY is set in the environment");
                return;
            }
            assert!(
                super::keep_freed_memory(),
                "mimalloc {}",
                super::ffi::version()
            );
        }
    }
}

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
    /// Longest wait in seconds for one message from the peer (including the time the peer
    /// computes it). A dead peer is noticed sooner, by the idle timeout.
    #[arg(long, default_value_t = DEFAULT_RECV_TIMEOUT_S)]
    recv_timeout: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Where a model run's options come from.
#[derive(clap::Args, Debug, Clone)]
struct PlanArgs {
    /// The network the planner plans for: lan (3 Gbit/s, 1 ms RTT), wan (400 Mbit/s, 10 ms),
    /// wan-slow (100 Mbit/s, 80 ms) or rate=400mbit:rtt=10ms.
    #[arg(long = "net", default_value = "lan")]
    plan_net: String,
    /// planned: the `duet` preset runs the planner's choices for --net; fixed: the preset's
    /// fixed choices (other presets always run their fixed choices).
    #[arg(long, default_value = "planned")]
    plan: String,
}

impl PlanArgs {
    fn config(&self, protocol: &str) -> Result<RunConfig, DuetError> {
        model_bench::check_net(&self.plan_net)?;
        model_bench::run_config(protocol, planned(&self.plan)?, &self.plan_net)
    }
}

fn planned(plan: &str) -> Result<bool, DuetError> {
    match plan {
        "planned" => Ok(true),
        "fixed" => Ok(false),
        other => Err(DuetError::Usage(format!(
            "--plan {other}: expected planned or fixed"
        ))),
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Both parties in one process over loopback QUIC on a built-in model (bert-tiny with
    /// seeded random weights, a few tokens); no files needed.
    Demo {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// A built-in model (bert-tiny, ...) or payload (linear-demo, share-demo).
        #[arg(long, default_value = "bert-tiny")]
        builtin: String,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// Secure inference with both parties in this process over loopback QUIC: one run per
    /// input line. A built-in model has no tokenizer: each UTF-8 byte of the text is a token id.
    Infer {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        adapter: AdapterArgs,
        #[command(flatten)]
        input: InputArgs,
        /// Protocol preset: duet, iron, bolt, bumblebee or puma.
        #[arg(long, default_value = "duet")]
        protocol: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Print the report as JSON (no progress bar).
        #[arg(long)]
        json: bool,
        /// Longest wait in seconds for one message between the two parties.
        #[arg(long, default_value_t = DEFAULT_RECV_TIMEOUT_S)]
        recv_timeout: u64,
    },
    /// Secure text generation with both parties in this process over loopback QUIC: a
    /// prefill of the prompt, then one decode step per token (printed as it comes). Only the
    /// chosen token is revealed to the client (or, with --choice logits, the logits).
    Generate {
        /// A GGUF file or a HuggingFace folder.
        #[arg(long, conflicts_with = "builtin", required_unless_present = "builtin")]
        model: Option<PathBuf>,
        /// A built-in decoder shape: gpt2, llama-7b-shape (seeded random weights).
        #[arg(long)]
        builtin: Option<String>,
        #[command(flatten)]
        adapter: AdapterArgs,
        /// The prompt.
        #[arg(long, conflicts_with_all = ["prompt_file", "prompt_len"], required_unless_present_any = ["prompt_file", "prompt_len"])]
        prompt: Option<String>,
        /// A file holding the prompt.
        #[arg(long, conflicts_with = "prompt_len")]
        prompt_file: Option<PathBuf>,
        /// N token ids drawn from a public seed instead of text.
        #[arg(long)]
        prompt_len: Option<usize>,
        /// Wrap the prompt in the model's chat template.
        #[arg(long)]
        chat: bool,
        /// A public prefix before the (private) prompt: text both parties know, which the
        /// server runs in the clear (a system prompt, a shared document).
        #[arg(long, conflicts_with = "public_prefix_file")]
        public_prefix: Option<String>,
        /// A file holding the public prefix.
        #[arg(long)]
        public_prefix_file: Option<PathBuf>,
        /// Most new tokens.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// greedy (secure argmax), sample:t=..,top_k=..,top_p=..,seed=.. (the client's
        /// randomness inside the protocol) or logits (reveals the logits: explicit opt-in).
        #[arg(long, default_value = "greedy")]
        choice: String,
        /// Do not stop at the end-of-sequence token (the server then does not learn the
        /// output's length).
        #[arg(long)]
        no_stop: bool,
        /// Protocol preset.
        #[arg(long, default_value = "duet")]
        protocol: String,
        #[command(flatten)]
        plan: PlanArgs,
        /// Print the report as JSON (tokens are not echoed).
        #[arg(long)]
        json: bool,
        /// Longest wait in seconds for one message between the two parties.
        #[arg(long, default_value_t = DEFAULT_RECV_TIMEOUT_S)]
        recv_timeout: u64,
    },
    /// The server of `duet bench model` (run by it as a child process).
    #[command(name = "bench-server", hide = true)]
    BenchServer {
        /// A built-in model.
        #[arg(long, conflicts_with = "model", required_unless_present = "model")]
        builtin: Option<String>,
        /// A model file or folder.
        #[arg(long)]
        model: Option<PathBuf>,
        #[command(flatten)]
        adapter: AdapterArgs,
        #[arg(long)]
        protocol: String,
        #[arg(long)]
        peer_fingerprint: String,
        /// Address to listen on (an address inside the network namespace under netns shaping).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        /// Plan the `duet` preset for this network (as the client does); absent: fixed.
        #[arg(long)]
        net: Option<String>,
    },
    /// The planner's per-operator choices (backend, layout, approximation) for a model on a
    /// network, with predicted bytes, flights, compute and latency per operator kind, beside
    /// the fixed presets' predictions.
    Plan {
        /// A HuggingFace folder (only `config.json` is read).
        #[arg(long)]
        model: Option<PathBuf>,
        /// A built-in shape: bert-tiny, bert-base, bert-large, gpt2, llama-7b-shape.
        #[arg(long)]
        builtin: Option<String>,
        /// Tokens.
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Network profile: lan, wan, wan-slow or rate=400mbit:rtt=10ms.
        #[arg(long, default_value = "lan")]
        net: String,
        /// A machine profile written by `duet calibrate` (default: the shipped one).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Measures this machine's compute constants for the cost model (micro-benchmarks of HE
    /// products, key switches, COTs, ...) and writes a machine profile.
    Calibrate {
        /// Write the profile (JSON) here; without it, print it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Fewer and smaller repetitions (seconds instead of a minute; noisier).
        #[arg(long)]
        quick: bool,
        /// Where the two benchmark parties talk: memory (the in-memory pair, no transport) or
        /// quic (a loopback QUIC connection, whose CPU per byte then enters the constants).
        #[arg(long, default_value = "memory")]
        link: String,
        /// Instead of the compute constants, fit the deployment constants (two-process compute
        /// factor, transport time per byte and per flight) on short `duet bench model` runs
        /// over --net, onto --profile's compute constants.
        #[arg(long)]
        harness: bool,
        /// With --harness: the network profile of the runs.
        #[arg(long, default_value = "lan")]
        net: String,
        /// With --harness: how the network is emulated (auto, netns, relay, none).
        #[arg(long, default_value = "auto")]
        shaping: String,
        /// With --harness: the profile whose compute constants are kept (default: the
        /// shipped one).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// With --harness: fit on the run reports in this folder (as `duet bench model --out`
        /// writes them) instead of running the calibration runs.
        #[arg(long)]
        runs: Option<PathBuf>,
        /// Measure nothing new: run the check operators now and compare them with --profile's
        /// compute constants (default: the shipped profile), to see whether this machine is in
        /// the state the profile describes before a benchmark run.
        #[arg(long, conflicts_with_all = ["harness", "out"])]
        check: bool,
    },
    /// Print this party's certificate fingerprint (creating the identity if needed).
    Fingerprint {
        /// Folder that keeps this party's certificate and key.
        #[arg(long, env = "DUET_STATE_DIR")]
        state_dir: Option<PathBuf>,
    },
    /// Server side of a two-machine run: listen, accept one pinned client, run. Clients with
    /// another certificate are refused (they are told why) and the server waits on.
    Serve {
        /// Address to listen on, e.g. 0.0.0.0:4433.
        #[arg(long)]
        listen: String,
        /// Let the first connection attempt decide: a refused one ends the command (for
        /// scripts).
        #[arg(long)]
        once: bool,
        /// A model folder (HuggingFace config.json + model.safetensors).
        #[arg(long, conflicts_with = "builtin", required_unless_present = "builtin")]
        model: Option<PathBuf>,
        /// A built-in model (bert-tiny, bert-base, bert-large, gpt2, llama-7b-shape) or
        /// payload (linear-demo, share-demo).
        #[arg(long)]
        builtin: Option<String>,
        #[command(flatten)]
        adapter: AdapterArgs,
        /// Protocol preset (models only): duet, iron, bolt, bumblebee or puma.
        #[arg(long, default_value = "duet")]
        protocol: String,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Client side of a two-machine run: connect to a pinned server and run.
    Connect {
        /// Server address, e.g. 192.0.2.1:4433.
        addr: String,
        /// A model folder: only its config.json (and tokenizer.json for text) are read.
        #[arg(long, conflicts_with = "builtin")]
        model: Option<PathBuf>,
        /// A built-in model or payload (must match the server's); default linear-demo.
        #[arg(long)]
        builtin: Option<String>,
        /// LoRA mode: this side holds the model as the public base (it reads its weights;
        /// the server's adapters stay private, their layout is announced by the server).
        #[arg(long)]
        public_base: bool,
        /// Text to embed (one secure run per line).
        #[arg(long, conflicts_with_all = ["text_file", "seq_len"])]
        text: Option<String>,
        /// A file of texts (one secure run per non-empty line).
        #[arg(long, conflicts_with = "seq_len")]
        text_file: Option<PathBuf>,
        /// Run on N token ids drawn from a public seed instead of text.
        #[arg(long)]
        seq_len: Option<usize>,
        /// Protocol preset (models only).
        #[arg(long, default_value = "duet")]
        protocol: String,
        #[command(flatten)]
        plan: PlanArgs,
        #[command(flatten)]
        net: NetArgs,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// User-space network emulator between `duet connect` and `duet serve`: adds the profile's
    /// delay and shapes its rate (UDP relay; reports that it is the shaping used).
    Relay {
        /// Address the client connects to.
        #[arg(long)]
        listen: SocketAddr,
        /// The server's address.
        #[arg(long)]
        upstream: SocketAddr,
        /// Network profile: lan, wan, wan-slow, or `rate=400mbit,rtt=10ms`.
        #[arg(long, default_value = "wan")]
        net: String,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long)]
        seconds: Option<u64>,
    },
}

/// The server's PEFT adapter over the model.
#[derive(clap::Args, Debug, Clone)]
struct AdapterArgs {
    /// A PEFT adapter folder (adapter_config.json, adapter_model.safetensors) over the model:
    /// LoRA mode, the model a public base both sides hold and only the adapters private.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// With --adapter: merge the adapters into private weights (every weight private).
    #[arg(long, requires = "adapter")]
    merged: bool,
}

impl AdapterArgs {
    fn spec(self) -> Option<duet_models::open::AdapterSpec> {
        self.adapter.map(|dir| duet_models::open::AdapterSpec {
            dir,
            merged: self.merged,
        })
    }
}

#[derive(clap::Args, Debug, Clone)]
struct ModelArgs {
    /// A HuggingFace model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, conflicts_with = "builtin", required_unless_present = "builtin")]
    model: Option<PathBuf>,
    /// A built-in model: bert-tiny, bert-base, bert-large, gpt2, llama-7b-shape.
    #[arg(long)]
    builtin: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
struct InputArgs {
    /// Text to embed (one secure run per line).
    #[arg(long, conflicts_with_all = ["text_file", "seq_len"], required_unless_present_any = ["text_file", "seq_len"])]
    text: Option<String>,
    /// A file of texts (one secure run per non-empty line).
    #[arg(long, conflicts_with = "seq_len")]
    text_file: Option<PathBuf>,
    /// Run on N token ids drawn from a public seed instead of text.
    #[arg(long)]
    seq_len: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// A whole built-in model between two processes (the server a child of this one) on
    /// seeded token ids: traffic, time, peak RSS of each party, accuracy.
    Model {
        /// A built-in model: bert-tiny, bert-base, bert-large, gpt2, llama-7b-shape.
        #[arg(long)]
        builtin: String,
        /// Tokens.
        #[arg(long, default_value_t = 128)]
        seq_len: usize,
        /// Protocol presets, comma-separated: duet, iron, bolt, bumblebee, puma.
        #[arg(long, default_value = "duet")]
        protocol: String,
        /// Network profiles, comma-separated: lan (3 Gbit/s, 1 ms RTT), wan (400 Mbit/s,
        /// 10 ms), wan-slow (100 Mbit/s, 80 ms) or rate=400mbit:rtt=10ms.
        #[arg(long, default_value = "lan")]
        net: String,
        /// How the network is emulated: auto (netns when root and tc work, else relay),
        /// netns (namespace + veth + kernel tbf; delay by netem, or by the relay without it),
        /// relay (user-space UDP relay), none (loopback, unshaped).
        #[arg(long, default_value = "auto")]
        shaping: String,
        /// planned: `duet` runs the planner's choices for each network; fixed: the preset's
        /// fewest-bytes choices (the other presets always run their fixed choices).
        #[arg(long, default_value = "planned")]
        plan: String,
        /// Write the report(s) as JSON to this file (an array when several runs).
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write one JSON per run (<model>-<seq>-<protocol>-<net>.json), then results.md and
        /// SVG plots of bytes and time per operator kind, into this folder.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Before each run, run `duet calibrate --check --quick` against the shipped profile
        /// (about a minute) and record the median predicted / measured ratio in the report
        /// (`machine_check`): near 1, the machine was in the profile's state.
        #[arg(long)]
        machine_check: bool,
    },
    /// Secure generation between two processes (the server a child of this one) over a
    /// shaped network: a prefill of --prompt-len seeded tokens, then decode steps up to
    /// --new-tokens, each predicted beside measured.
    Generate {
        /// A built-in decoder shape: gpt2, llama-7b-shape.
        #[arg(long, conflicts_with = "model", required_unless_present = "model")]
        builtin: Option<String>,
        /// A GGUF file or a HuggingFace folder.
        #[arg(long)]
        model: Option<PathBuf>,
        /// A PEFT adapter folder over the model.
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// With --adapter: lora (public base, private adapters), merged (every weight
        /// private), or both, comma-separated (one run each, in one harness run).
        #[arg(long, default_value = "lora", requires = "adapter")]
        adapter_mode: String,
        /// Prompt tokens (seeded ids).
        #[arg(long, default_value_t = 32)]
        prompt_len: usize,
        /// Public-prefix tokens before the prompt (seeded ids the server runs in the clear),
        /// comma-separated for one run each (0: none), e.g. 0,2048.
        #[arg(long, default_value = "0")]
        prefix_len: String,
        /// New tokens.
        #[arg(long, default_value_t = 8)]
        new_tokens: usize,
        /// Protocol presets, comma-separated.
        #[arg(long, default_value = "duet")]
        protocol: String,
        /// Network profiles, comma-separated.
        #[arg(long, default_value = "lan")]
        net: String,
        /// How the network is emulated: auto, netns, relay, none.
        #[arg(long, default_value = "auto")]
        shaping: String,
        /// planned or fixed.
        #[arg(long, default_value = "planned")]
        plan: String,
        /// greedy, sample:... or logits.
        #[arg(long, default_value = "greedy")]
        choice: String,
        /// Write each run's JSON report into this folder, and generate.md with the table.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Rebuild results.md and the SVG plots from the run JSON files in a folder.
    Table {
        /// The folder (as written by `duet bench model --out DIR`).
        #[arg(long)]
        dir: PathBuf,
        /// Re-predict every run with this machine profile first (the measured figures stay;
        /// the run reports are rewritten with the new predictions).
        #[arg(long)]
        profile: Option<PathBuf>,
    },
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

/// `--model DIR` / `--builtin NAME` (exactly one).
fn model_spec(dir: Option<PathBuf>, builtin: Option<&str>) -> Result<ModelSpec, DuetError> {
    match (dir, builtin) {
        (Some(d), None) => Ok(ModelSpec::path(d)),
        (None, Some(b)) => Ok(ModelSpec::Builtin(BuiltinModel::from_name(b)?)),
        _ => Err(DuetError::Usage(
            "give exactly one of --model DIR or --builtin NAME".into(),
        )),
    }
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
        config: net_config(net)?,
        builtin,
        once: false,
    })
}

fn link<'a>(net: &NetArgs, identity: &'a Identity) -> Result<Link<'a>, DuetError> {
    let peer: Fingerprint = net.peer_fingerprint.parse()?;
    if net.idle_timeout == 0 {
        return Err(DuetError::Usage(
            "--idle-timeout must be at least 1 second".into(),
        ));
    }
    Ok(Link {
        identity,
        peer,
        config: net_config(net)?,
        once: false,
    })
}

/// The transport settings of `--idle-timeout` and `--recv-timeout`.
fn net_config(net: &NetArgs) -> Result<QuicConfig, DuetError> {
    if net.recv_timeout == 0 {
        return Err(DuetError::Usage(
            "--recv-timeout must be at least 1 second".into(),
        ));
    }
    Ok(QuicConfig {
        idle_timeout: Duration::from_secs(net.idle_timeout),
        recv_timeout: Duration::from_secs(net.recv_timeout),
        ..QuicConfig::default()
    })
}

/// `--recv-timeout` of `infer` / `generate` (at least 1 second).
fn recv_timeout(seconds: u64) -> Result<Duration, DuetError> {
    if seconds == 0 {
        return Err(DuetError::Usage(
            "--recv-timeout must be at least 1 second".into(),
        ));
    }
    Ok(Duration::from_secs(seconds))
}

/// Default `--recv-timeout`: generous, since it includes the peer's computation.
const DEFAULT_RECV_TIMEOUT_S: u64 = 600;

fn print_model_report(r: &ModelReport, json: bool) -> Result<(), DuetError> {
    if json {
        println!("{}", serde_json::to_string_pretty(r)?);
    } else {
        print!("{}", r.summary(false));
    }
    Ok(())
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
        Command::Demo {
            json,
            builtin,
            plan,
        } => match Builtin::from_name(&builtin) {
            Some(b) => print_report(&demo::run_demo(b)?, json),
            None => {
                let b = BuiltinModel::from_name(&builtin)?;
                let mut args =
                    InferArgs::new(ModelSpec::Builtin(b), InputArg::SeqLen(infer::DEMO_TOKENS));
                args.net = plan.plan_net.clone();
                args.planned = planned(&plan.plan)?;
                args.progress = !json;
                let r = infer::infer(&args)?;
                print_model_report(&r, json)
            }
        },
        Command::Infer {
            model,
            adapter,
            input,
            protocol,
            plan,
            json,
            recv_timeout: timeout,
        } => {
            let mut args = InferArgs::new(
                model_spec(model.model, model.builtin.as_deref())?,
                InputArg::from_cli(input.text, input.text_file, input.seq_len)?,
            );
            args.protocol = protocol;
            args.net = plan.plan_net.clone();
            args.planned = planned(&plan.plan)?;
            args.progress = !json;
            args.recv_timeout = recv_timeout(timeout)?;
            args.adapter = adapter.spec();
            let r = infer::infer(&args)?;
            print_model_report(&r, json)
        }
        Command::Generate {
            model,
            builtin,
            adapter,
            prompt,
            prompt_file,
            prompt_len,
            chat,
            public_prefix,
            public_prefix_file,
            max_new_tokens,
            choice,
            no_stop,
            protocol,
            plan,
            json,
            recv_timeout: timeout,
        } => {
            use duet_bench::product::generate::{self as gen, GenerateArgs, PromptArg};
            let prompt = match (prompt, prompt_file, prompt_len) {
                (Some(t), _, _) => PromptArg::Text(t),
                (_, Some(f), _) => PromptArg::File(f),
                (_, _, Some(n)) => PromptArg::Len(n),
                _ => {
                    return Err(DuetError::Usage(
                        "give --prompt, --prompt-file or --prompt-len".into(),
                    ))
                }
            };
            let mut args = GenerateArgs::new(model_spec(model, builtin.as_deref())?, prompt);
            args.chat = chat;
            args.prefix = match (public_prefix, public_prefix_file) {
                (Some(t), _) => Some(PromptArg::Text(t)),
                (_, Some(f)) => Some(PromptArg::File(f)),
                _ => None,
            };
            args.max_new_tokens = max_new_tokens;
            args.choice = gen::parse_choice(&choice)?;
            args.stop_at_eos = !no_stop;
            args.protocol = protocol;
            args.net = plan.plan_net.clone();
            args.planned = planned(&plan.plan)?;
            args.stream = !json;
            args.recv_timeout = recv_timeout(timeout)?;
            args.adapter = adapter.spec();
            let r = gen::generate(&args)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                let (med_s, med_b) = r.decode_medians().unwrap_or((0.0, 0));
                eprintln!(
                    "prompt {} tokens, {} generated ({}); prefill {:.1} s, {}; decode median {:.2} s, {} per token; setup {}; options {}",
                    r.prompt_ids.len(),
                    r.generated_ids.len(),
                    r.stop,
                    r.prefill.wall_s,
                    duet_bench::report::human_bytes(r.prefill.bytes),
                    med_s,
                    duet_bench::report::human_bytes(med_b),
                    duet_bench::report::human_bytes(r.run.report.bytes.setup),
                    r.run.plan_name
                );
            }
            Ok(())
        }
        Command::BenchServer {
            builtin,
            model,
            adapter,
            protocol,
            peer_fingerprint,
            listen,
            net,
        } => {
            let config = match &net {
                Some(n) => model_bench::run_config(&protocol, true, n)?,
                None => model_bench::run_config(&protocol, false, "lan")?,
            };
            model_bench::bench_server_child(
                &model_spec(model, builtin.as_deref())?,
                adapter.spec().as_ref(),
                &config,
                peer_fingerprint.parse()?,
                listen,
            )
        }
        Command::Relay {
            listen,
            upstream,
            net,
            seconds,
        } => duet_bench::product::relay::run_relay(listen, upstream, &net, seconds),
        Command::Plan {
            model,
            builtin,
            seq_len,
            net,
            profile,
            json,
        } => {
            let m = model_spec(model, builtin.as_deref())?;
            let r = duet_bench::product::plan::run_plan(&m, seq_len, &net, profile.as_deref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", r.text());
            }
            Ok(())
        }
        Command::Calibrate {
            out,
            quick,
            link,
            harness,
            net,
            shaping,
            profile,
            runs,
            check,
        } => {
            if check {
                let p = duet_bench::product::plan::load_profile(profile.as_deref())?;
                let link = duet_bench::calibrate::Link::from_name(&link)?;
                let checks = duet_bench::calibrate::check_profile(link, &p, quick)?;
                let (lo, hi) = duet_bench::calibrate::CHECK_BOUNDS;
                let (median, all) = duet_bench::calibrate::check_verdict(&checks, lo, hi);
                println!(
                    "profile {:?} (measured {}): predicted / measured median {median:.2}, {}",
                    p.machine,
                    p.measured,
                    if all {
                        format!(
                            "every check within {lo}-{hi}: the machine is in the profile's state"
                        )
                    } else {
                        format!(
                            "not every check within {lo}-{hi}: this machine is not in the state \
                             the profile describes (predictions will be off by about the \
                             median); wait for an idle machine or run `duet calibrate`"
                        )
                    }
                );
                return Ok(());
            }
            // prints each check (predicted against measured seconds) on stderr
            let profile = if harness {
                let base = duet_bench::product::plan::load_profile(profile.as_deref())?;
                let (p, fit) = match &runs {
                    Some(dir) => duet_bench::calibrate::harness::calibrate_from_runs(&base, dir)?,
                    None => duet_bench::calibrate::harness::calibrate_harness(
                        &base,
                        &net,
                        shaping.parse::<Shaping>()?,
                        &std::env::current_exe()?,
                    )?,
                };
                for (label, r) in &fit.ratios {
                    eprintln!("calibrate --harness: {label:28} measured / predicted {r:.2}");
                }
                eprintln!(
                    "calibrate --harness: party_factor {:.2}, ferret_factor {:.2}, transport {:.2} ns/B, {:.3} ms/flight",
                    p.party_factor,
                    p.ferret_factor,
                    p.transport_byte_s * 1e9,
                    p.transport_flight_s * 1e3
                );
                p
            } else {
                let link = duet_bench::calibrate::Link::from_name(&link)?;
                duet_bench::calibrate::calibrate(link, quick)?
            };
            let text = serde_json::to_string_pretty(&profile)? + "\n";
            match out {
                Some(path) => std::fs::write(&path, text).map_err(|e| {
                    DuetError::Usage(format!("cannot write {}: {e}", path.display()))
                })?,
                None => print!("{text}"),
            }
            Ok(())
        }
        Command::Fingerprint { state_dir: d } => {
            let dir = state_dir(d)?;
            let id = Identity::load_or_create(&dir)?;
            println!("{}", id.fingerprint());
            Ok(())
        }
        Command::Serve {
            listen,
            once,
            model,
            builtin,
            adapter,
            protocol,
            plan,
            net,
        } => {
            let payload = builtin.as_deref().and_then(Builtin::from_name);
            if payload.is_none() {
                let model = model_spec(model, builtin.as_deref())?;
                let config = plan.config(&protocol)?;
                let id = Identity::load_or_create(&state_dir(net.state_dir.clone())?)?;
                let listen = parse_addr(&listen)?;
                let fp = id.fingerprint();
                let mut l = link(&net, &id)?;
                l.once = once;
                let adapter = adapter.spec();
                let r = infer::serve_model(
                    l,
                    listen,
                    &model,
                    adapter.as_ref(),
                    &config,
                    !net.json,
                    |addr| {
                        eprintln!("duet serve: listening on {addr}");
                        eprintln!("duet serve: this server's fingerprint {fp}");
                    },
                )?;
                return print_model_report(&r, net.json);
            }
            let builtin = payload.unwrap_or(Builtin::LinearDemo);
            let id = Identity::load_or_create(&state_dir(net.state_dir.clone())?)?;
            let listen = parse_addr(&listen)?;
            let json = net.json;
            let fp = id.fingerprint();
            let mut s = side(&net, &id, builtin)?;
            s.once = once;
            let r = demo::serve(s, listen, |addr| {
                eprintln!("duet serve: listening on {addr}");
                eprintln!("duet serve: this server's fingerprint {fp}");
            })?;
            print_report(&r, json)
        }
        Command::Connect {
            addr,
            model,
            builtin,
            public_base,
            text,
            text_file,
            seq_len,
            protocol,
            plan,
            net,
        } => {
            let payload = match (&model, builtin.as_deref()) {
                (None, None) => Some(Builtin::LinearDemo),
                (None, Some(b)) => Builtin::from_name(b),
                (Some(_), _) => None,
            };
            let Some(builtin) = payload else {
                let model = model_spec(model, builtin.as_deref())?;
                let input = InputArg::from_cli(text, text_file, seq_len)?;
                let config = plan.config(&protocol)?;
                let id = Identity::load_or_create(&state_dir(net.state_dir.clone())?)?;
                eprintln!(
                    "duet connect: this client's fingerprint {}",
                    id.fingerprint()
                );
                let addr = parse_addr(&addr)?;
                let r = infer::connect_model(
                    link(&net, &id)?,
                    addr,
                    &model,
                    &input,
                    &config,
                    public_base,
                    !net.json,
                )?;
                return print_model_report(&r, net.json);
            };
            if text.is_some() || text_file.is_some() || seq_len.is_some() {
                return Err(DuetError::Usage(
                    "--text, --text-file and --seq-len need a model (--model or a built-in model)"
                        .into(),
                ));
            }
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
                BenchCommand::Model {
                    builtin,
                    seq_len,
                    protocol,
                    net,
                    shaping,
                    plan,
                    json,
                    out,
                    machine_check,
                },
        } => {
            let planned = match plan.as_str() {
                "planned" => true,
                "fixed" => false,
                other => {
                    return Err(DuetError::Usage(format!(
                        "--plan {other}: expected planned or fixed"
                    )))
                }
            };
            let builtin = BuiltinModel::from_name(&builtin)?;
            let shaping: Shaping = shaping.parse()?;
            if shaping == Shaping::Netns {
                duet_bench::harness::netns::netns_available().map_err(|why| {
                    DuetError::Usage(format!("--shaping netns is unavailable: {why}"))
                })?;
            }
            let protocols: Vec<&str> = protocol.split(',').map(str::trim).collect();
            let nets: Vec<&str> = net.split(',').map(str::trim).collect();
            // refuse bad values before any run
            for p in &protocols {
                model_bench::run_config(p, false, "lan")?;
            }
            for n in &nets {
                model_bench::check_net(n)?;
            }
            let exe = std::env::current_exe()?;
            let mut reports = Vec::new();
            let check_profile = if machine_check {
                Some(duet_protocols::cost_model::MachineProfile::default_profile()?)
            } else {
                None
            };
            for p in &protocols {
                for n in &nets {
                    let check = match &check_profile {
                        Some(profile) => {
                            let checks = duet_bench::calibrate::check_profile(
                                duet_bench::calibrate::Link::Memory,
                                profile,
                                true,
                            )?;
                            let (median, _) = duet_bench::calibrate::check_verdict(
                                &checks,
                                duet_bench::calibrate::CHECK_BOUNDS.0,
                                duet_bench::calibrate::CHECK_BOUNDS.1,
                            );
                            println!("machine check before {p} on {n}: predicted / measured median {median:.2}");
                            Some(median)
                        }
                        None => None,
                    };
                    let mut r = model_bench::bench_model(
                        &BenchModelArgs {
                            builtin,
                            seq_len,
                            protocol: (*p).to_string(),
                            net: (*n).to_string(),
                            shaping,
                            planned,
                            progress: true,
                        },
                        &exe,
                    )?;
                    r.machine_check = check;
                    print!("{}", r.summary(true));
                    if let Some(dir) = &out {
                        let path = results::write_run(dir, &r)?;
                        println!("wrote {}", path.display());
                    }
                    reports.push(r);
                }
            }
            if let Some(path) = json {
                let text = match reports.as_slice() {
                    [one] => serde_json::to_string_pretty(one)?,
                    many => serde_json::to_string_pretty(many)?,
                };
                std::fs::write(&path, text + "\n").map_err(|e| {
                    DuetError::Usage(format!("cannot write {}: {e}", path.display()))
                })?;
            }
            if let Some(dir) = &out {
                for f in results::write_results(dir, &reports)? {
                    println!("wrote {}", f.display());
                }
            }
            Ok(())
        }
        Command::Bench {
            what:
                BenchCommand::Generate {
                    builtin,
                    model,
                    adapter,
                    adapter_mode,
                    prompt_len,
                    prefix_len,
                    new_tokens,
                    protocol,
                    net,
                    shaping,
                    plan,
                    choice,
                    out,
                },
        } => {
            use duet_bench::harness::generate_bench::{self as gb, BenchGenerateArgs};
            let spec = model_spec(model, builtin.as_deref())?;
            let shaping: Shaping = shaping.parse()?;
            let choice = duet_bench::product::generate::parse_choice(&choice)?;
            let planned = planned(&plan)?;
            let exe = std::env::current_exe()?;
            let adapters: Vec<Option<duet_models::open::AdapterSpec>> = match &adapter {
                None => vec![None],
                Some(dir) => adapter_mode
                    .split(',')
                    .map(|m| match m.trim() {
                        "lora" => Ok(false),
                        "merged" => Ok(true),
                        other => Err(DuetError::Usage(format!(
                            "--adapter-mode {other:?}: lora, merged or lora,merged"
                        ))),
                    })
                    .map(|m| {
                        m.map(|merged| {
                            Some(duet_models::open::AdapterSpec {
                                dir: dir.clone(),
                                merged,
                            })
                        })
                    })
                    .collect::<Result<_, _>>()?,
            };
            let prefixes = prefix_len
                .split(',')
                .map(|p| {
                    p.trim().parse::<usize>().map_err(|_| {
                        DuetError::Usage(format!("--prefix-len {p:?}: a count of tokens"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut runs = Vec::new();
            for (a, &prefix_len) in adapters
                .iter()
                .flat_map(|a| prefixes.iter().map(move |p| (a, p)))
            {
                for p in protocol.split(',').map(str::trim) {
                    for n in net.split(',').map(str::trim) {
                        let r = gb::bench_generate(
                            &BenchGenerateArgs {
                                model: spec.clone(),
                                prompt_len,
                                prefix_len,
                                new_tokens,
                                protocol: p.to_string(),
                                net: n.to_string(),
                                shaping,
                                planned,
                                choice: choice.clone(),
                                adapter: a.clone(),
                            },
                            &exe,
                        )?;
                        println!("{}", gb::table(std::slice::from_ref(&r)));
                        if let Some(dir) = &out {
                            std::fs::create_dir_all(dir)?;
                            let path = gb::run_file(dir, &r);
                            std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")?;
                            println!("wrote {}", path.display());
                        }
                        runs.push(r);
                    }
                }
            }
            if let Some(dir) = &out {
                let path = dir.join("generate.md");
                std::fs::write(&path, gb::table(&runs))?;
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Bench {
            what: BenchCommand::Table { dir, profile },
        } => {
            let mut reports = results::read_dir(&dir)?;
            if let Some(p) = profile {
                let profile = duet_protocols::cost_model::MachineProfile::load(&p)?;
                // every report first, so that an error leaves the folder as it was
                for r in &mut reports {
                    duet_bench::harness::repredict::repredict(r, &profile)?;
                    let path = results::run_path(&dir, r);
                    if !path.is_file() {
                        return Err(DuetError::Usage(format!(
                            "--profile rewrites each run's own file, and {} is not in {} \
                             (runs from array files or renamed files cannot be rewritten)",
                            path.display(),
                            dir.display()
                        )));
                    }
                }
                for r in &reports {
                    let path = results::write_run(&dir, r)?;
                    println!("re-predicted {}", path.display());
                }
            }
            for f in results::write_results(&dir, &reports)? {
                println!("wrote {}", f.display());
            }
            Ok(())
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

/// Whether SIGINT / SIGTERM close the session with a reason the peer prints (the commands
/// that talk to a peer; the others keep the default: the signal ends them).
fn catches_signals(c: &Command) -> bool {
    matches!(
        c,
        Command::Serve { .. }
            | Command::Connect { .. }
            | Command::Infer { .. }
            | Command::Generate { .. }
            | Command::Demo { .. }
            | Command::Bench { .. }
            | Command::BenchServer { .. }
    )
}

fn main() -> ExitCode {
    alloc_tuning::keep_freed_memory();
    let cli = Cli::parse();
    if catches_signals(&cli.command) {
        if let Err(e) = duet_bench::signals::install() {
            eprintln!("duet: error: {e}");
            return ExitCode::FAILURE;
        }
        duet_bench::signals::end_when_the_peer_is_lost();
    }
    let res = run(cli);
    // interrupted: the command's error only echoes the closed connection
    if let Some(sig) = duet_bench::signals::received() {
        duet_bench::signals::exit_interrupted(sig);
    }
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string().replace('\n', " ");
            eprintln!("duet: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
