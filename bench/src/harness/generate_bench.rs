//! `duet bench generate`: secure generation between two processes (the server a child of this
//! one) over a shaped network: a prefill of `P` seeded prompt tokens, then `T - 1` decode
//! steps (no early stop), each measured beside the cost model's prediction.

use crate::harness::model_bench::{check_net, run_config, ChildServer};
use crate::harness::netns::{ShapedNet, Shaping};
use crate::product::generate::{
    client_generate, generate_report, prefix_ids, prompt_ids, GenerateArgs, GenerateReport,
    PromptArg,
};
use crate::report::{peak_rss_bytes, PeakRss};
use crate::DuetError;
use duet_models::open::{AdapterSpec, ModelSpec, PublicModel};
use duet_models::session::TokenChoice;
use duet_transport::quic::{connect, Identity, QuicConfig, QuicRuntime};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Arguments of one `duet bench generate` run.
#[derive(Clone, Debug)]
pub struct BenchGenerateArgs {
    /// The model (a built-in shape, a GGUF file or a folder).
    pub model: ModelSpec,
    /// Prompt tokens (seeded ids).
    pub prompt_len: usize,
    /// Public-prefix tokens before the prompt (seeded ids; 0: none).
    pub prefix_len: usize,
    /// New tokens (the prefill gives the first).
    pub new_tokens: usize,
    /// Protocol preset.
    pub protocol: String,
    /// Network profile.
    pub net: String,
    /// How it is emulated.
    pub shaping: Shaping,
    /// Planned for the network (else fixed).
    pub planned: bool,
    /// How tokens are chosen.
    pub choice: TokenChoice,
    /// The server's PEFT adapter (LoRA mode: the client holds the public base; merged:
    /// every weight private).
    pub adapter: Option<AdapterSpec>,
}

/// The server child's model arguments for `spec`.
fn model_args(spec: &ModelSpec) -> Vec<String> {
    match spec {
        ModelSpec::Builtin(b) => vec!["--builtin".into(), b.name().into()],
        ModelSpec::Dir(p) | ModelSpec::Gguf(p) => {
            vec!["--model".into(), p.display().to_string()]
        }
    }
}

/// One run (see the module documentation).
pub fn bench_generate(args: &BenchGenerateArgs, exe: &Path) -> Result<GenerateReport, DuetError> {
    let profile = check_net(&args.net)?;
    let mut config = run_config(&args.protocol, args.planned, &args.net)?;
    let client = PublicModel::open(&args.model, false)?;
    // LoRA mode: the client holds the public base; the harness reads the adapters' public
    // layout to price the run (the client learns the same layout in the handshake)
    let base = match &args.adapter {
        Some(a) if !a.merged => {
            let layout = duet_models::lora::LoraAdapter::open(&a.dir, &client.graph)?.layout();
            config.adapter = Some(layout);
            Some(duet_models::open::ServerModel::open(&args.model)?)
        }
        _ => None,
    };
    let base_weights = base
        .as_ref()
        .map(|b| &b.weights as &(dyn duet_models::WeightSource + Sync));
    let mut gen_args = GenerateArgs::new(args.model.clone(), PromptArg::Len(args.prompt_len));
    gen_args.max_new_tokens = args.new_tokens;
    gen_args.choice = args.choice.clone();
    gen_args.stop_at_eos = false;
    gen_args.protocol.clone_from(&args.protocol);
    gen_args.net.clone_from(&args.net);
    gen_args.planned = args.planned;
    gen_args.adapter.clone_from(&args.adapter);
    gen_args.prefix = (args.prefix_len > 0).then_some(PromptArg::Len(args.prefix_len));
    let prompt = prompt_ids(&client, &gen_args)?;
    let prefix = prefix_ids(&client, &gen_args)?;
    let id = Identity::generate()?;
    let mut net = ShapedNet::setup(&profile, args.shaping)?;
    let mut child_args = model_args(&args.model);
    if let Some(a) = &args.adapter {
        child_args.extend(["--adapter".into(), a.dir.display().to_string()]);
        if a.merged {
            child_args.push("--merged".into());
        }
    }
    let child = ChildServer::start(exe, &mut net, &child_args, &config, &id)?;
    let rt = QuicRuntime::recommended()?;
    let t = Instant::now();
    let run = (|| -> Result<_, DuetError> {
        let session = connect(
            &rt,
            child.addr,
            &id,
            child.fingerprint,
            QuicConfig::default(),
        )?;
        let out = client_generate(
            &session,
            &client,
            &prefix,
            &prompt,
            &gen_args,
            &config,
            base_weights,
        )?;
        session.close()?;
        Ok(out)
    })();
    let wall = t.elapsed().as_secs_f64();
    let client_rss = peak_rss_bytes();
    let gen = match run {
        Ok(g) => g,
        Err(e) => return Err(child.failure(e)),
    };
    let done = child.finish()?;
    let mut rep = generate_report(&client, &gen_args, &config, &gen, wall, &args.net)?;
    if done.online_bytes != rep.run.report.bytes.total {
        return Err(DuetError::Usage(format!(
            "the parties count different online traffic: server {} B, client {} B",
            done.online_bytes, rep.run.report.bytes.total
        )));
    }
    rep.run.network_note.clone_from(&net.note);
    rep.run.shaping.clone_from(&net.shaping);
    rep.run.report.peak_rss_bytes = PeakRss {
        server: done.peak_rss_bytes,
        client: client_rss,
    };
    Ok(rep)
}

/// The file a run is written to: `<model>-generate-[<prefix>p+]<P>+<T>-<protocol>-<net>.json`.
pub fn run_file(dir: &Path, r: &GenerateReport) -> PathBuf {
    let clean = |s: &str| s.replace(['/', ':', '=', ','], "_");
    let prefix = if r.prefix_len > 0 {
        format!("{}p+", r.prefix_len)
    } else {
        String::new()
    };
    dir.join(format!(
        "{}-generate-{prefix}{}+{}-{}-{}.json",
        clean(&r.run.report.model),
        r.prompt_ids.len(),
        r.generated_ids.len(),
        clean(&r.run.report.protocol),
        clean(&r.run.report.network)
    ))
}

/// A Markdown table of generation runs: prefill and decode medians, predicted beside measured.
pub fn table(runs: &[GenerateReport]) -> String {
    let mut s = String::from(
        "| model | protocol | net | prompt | new | prefill s (pred) | prefill MB (pred) | decode s/token median (pred) | decode MB/token median (pred) | setup MB | peak RSS server / client GB | online MB, all (pred) | online s, all (pred) |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    let mb = |b: u64| b as f64 / 1e6;
    for r in runs {
        let mut ws: Vec<f64> = r.steps.iter().map(|p| p.wall_s).collect();
        let mut ps: Vec<f64> = r.steps.iter().map(|p| p.predicted_s).collect();
        let mut bs: Vec<f64> = r.steps.iter().map(|p| p.bytes as f64).collect();
        let mut pbs: Vec<f64> = r.steps.iter().map(|p| p.predicted_bytes as f64).collect();
        let prompt = if r.prefix_len > 0 {
            format!(
                "{} public ({:.1} s in the clear) + {}",
                r.prefix_len,
                r.prefix_seconds,
                r.prompt_ids.len()
            )
        } else {
            r.prompt_ids.len().to_string()
        };
        let phases = || std::iter::once(&r.prefill).chain(&r.steps);
        let all_b: u64 = phases().map(|p| p.bytes).sum();
        let all_pb: u64 = phases().map(|p| p.predicted_bytes).sum();
        let all_s: f64 = phases().map(|p| p.wall_s).sum();
        let all_ps: f64 = phases().map(|p| p.predicted_s).sum();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.1} ({:.1}) | {:.1} ({:.1}) | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.1} | {:.2} / {:.2} | {:.1} ({:.1}) | {:.1} ({:.1}) |\n",
            r.run.report.model,
            r.run.report.protocol,
            r.run.report.network,
            prompt,
            r.generated_ids.len(),
            r.prefill.wall_s,
            r.prefill.predicted_s,
            mb(r.prefill.bytes),
            mb(r.prefill.predicted_bytes),
            crate::median(&mut ws),
            crate::median(&mut ps),
            crate::median(&mut bs) / 1e6,
            crate::median(&mut pbs) / 1e6,
            mb(r.run.report.bytes.setup),
            r.run.report.peak_rss_bytes.server as f64 / 1e9,
            r.run.report.peak_rss_bytes.client as f64 / 1e9,
            mb(all_b),
            mb(all_pb),
            all_s,
            all_ps,
        ));
    }
    s
}
