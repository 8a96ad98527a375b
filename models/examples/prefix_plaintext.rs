//! The server's plaintext work for a public prefix: SmolLM2 (or any GGUF decoder) run in the
//! clear on `N` seeded ids, each layer's keys and values kept and encoded, as
//! `Server` does on a prefix request. Prints the seconds of each of `R` runs and their median.
//!
//! `cargo run --release -p duet-models --example prefix_plaintext -- MODEL.gguf [N] [R]`

use duet_models::prefix::server_prefix;
use duet_models::session::RunConfig;
use duet_models::GgufModel;
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or("usage: prefix_plaintext MODEL.gguf [N] [R]")?;
    let n: usize = args.next().map_or(Ok(2048), |v| v.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |v| v.parse())?;
    let m = GgufModel::open(std::path::Path::new(&path))?;
    let (opts, _) = RunConfig::fixed("duet").options(&m.graph, 1)?;
    let vocab = u32::try_from(m.graph.config.vocab_size)?;
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(7);
    let ids: Vec<u32> = (0..n).map(|_| rng.gen_range(0..vocab)).collect();
    let mut secs = Vec::new();
    for r in 0..runs {
        let (state, s) = server_prefix::<()>(&m.graph, &m, &ids, &opts)?;
        println!(
            "run {r}: {n} tokens in {s:.2} s (state at position {})",
            state.position()
        );
        secs.push(s);
    }
    secs.sort_by(f64::total_cmp);
    if let Some(med) = secs.get(secs.len() / 2) {
        println!(
            "median {med:.2} s over {runs} runs, {} threads",
            rayon::current_num_threads()
        );
    }
    Ok(())
}
