//! Value ranges of SmolLM2-135M-Instruct per layer and per position class, before and after
//! rotating the residual stream (`duet_models::rotation`), on the reference prompts:
//!
//! ```text
//! cargo run --release -j1 -p duet-models --example smollm2_ranges [-- SEED]
//! ```
//!
//! Runs the plaintext f64 reference executor with an observer on every prompt of
//! `../shared/reference/smollm2/reference.json` (or `$DUET_SHARED_DIR`) and records max |x| of
//! the RMSNorm inputs (the residual stream), the SiLU inputs, the down-projection inputs (also
//! after an online randomised Hadamard transform of width 1536, measured only), and the
//! attention scores `q k^T / sqrt(d)` before SoftMax, split into position 0 and positions >= 1
//! (scores: query 0; query >= 1 against key 0; both >= 1). Prints Markdown and writes it to
//! `bench/results/ranges/smollm2.md`. SEED (default 1) draws the rotation.

#![allow(
    clippy::indexing_slicing,
    reason = "a measurement tool over fixed-size tables"
)]

use duet_models::reference::rope;
use duet_models::rotation::{RotatedWeights, Rotation};
use duet_models::{run_reference_traced, GgufModel, Graph, Matrix, Op, WeightSource};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

const GGUF: &str = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf";

/// The quantities per layer, each as [position 0, positions >= 1].
const QUANTITIES: [&str; 6] = [
    "attn norm in",
    "ffn norm in",
    "SiLU in",
    "down in",
    "down in, Hadamard",
    "score",
];

/// Max |x| per quantity and class for one layer; scores have three classes (query 0; query
/// >= 1 against key 0; both >= 1), the rest two (position 0; positions >= 1).
#[derive(Clone, Default)]
struct Layer {
    max: [[f64; 3]; 6],
}

#[derive(Default)]
struct Stats {
    layers: Vec<Layer>,
    final_norm: [f64; 2],
    logits: Vec<Vec<f64>>,
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("layer")?.split('.').next()?.parse().ok()
}

/// Max |x| of row 0 and of the other rows.
fn by_position(m: &Matrix) -> [f64; 2] {
    let mut out = [0.0f64; 2];
    for r in 0..m.rows {
        let c = usize::from(r > 0);
        out[c] = m.row(r).iter().fold(out[c], |a, v| a.max(v.abs()));
    }
    out
}

fn bump(dst: &mut [f64], src: &[f64]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d = d.max(*s));
}

/// Max |score| for query 0, for query >= 1 against key 0, and for both >= 1 (causal).
fn scores(
    q: &Matrix,
    k: &Matrix,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    theta: f64,
) -> [f64; 3] {
    let (mut q, mut k) = (q.clone(), k.clone());
    rope(&mut q, heads, hd, theta);
    rope(&mut k, kv_heads, hd, theta);
    let scale = 1.0 / (hd as f64).sqrt();
    let group = heads / kv_heads;
    let mut out = [0.0f64; 3];
    for h in 0..heads {
        let kvh = h / group;
        for i in 0..q.rows {
            let qi = &q.row(i)[h * hd..(h + 1) * hd];
            for j in 0..=i {
                let kj = &k.row(j)[kvh * hd..(kvh + 1) * hd];
                let s = qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale;
                let c = match (i, j) {
                    (0, _) => 0,
                    (_, 0) => 1,
                    _ => 2,
                };
                out[c] = out[c].max(s.abs());
            }
        }
    }
    out
}

fn measure(
    graph: &Graph,
    w: &dyn WeightSource,
    prompts: &[Vec<u32>],
    hadamard: &Rotation,
) -> Result<Stats, Box<dyn std::error::Error>> {
    struct Dyn<'a>(&'a dyn WeightSource);
    impl WeightSource for Dyn<'_> {
        fn get(&self, name: &str, shape: &[usize]) -> duet_models::Result<Vec<f64>> {
            self.0.get(name, shape)
        }
    }
    let mut st = Stats {
        layers: vec![Layer::default(); graph.config.layers],
        ..Stats::default()
    };
    let logits_node = graph
        .logits
        .and_then(|l| graph.nodes.get(l))
        .map(|n| n.name.clone());
    for ids in prompts {
        let mut err = None;
        run_reference_traced(graph, &Dyn(w), ids, &mut |node, ins, out| {
            if Some(&node.name) == logits_node.as_ref() {
                st.logits.push(out.data.clone());
            }
            let Some(x) = ins.first() else { return };
            if node.name == "final.rmsnorm" {
                bump(&mut st.final_norm, &by_position(x));
            }
            let Some(l) = layer_of(&node.name).and_then(|l| st.layers.get_mut(l)) else {
                return;
            };
            let slot = match (&node.op, node.name.rsplit('.').next()) {
                (Op::RmsNorm { .. }, _) if node.name.contains(".attn.") => 0,
                (Op::RmsNorm { .. }, _) => 1,
                (Op::Activation(_), _) => 2,
                (Op::Linear { .. }, Some("down")) => {
                    let mut h = (*x).clone();
                    if let Err(e) = hadamard.apply_rows(&mut h.data) {
                        err = Some(e);
                    }
                    bump(&mut l.max[4], &by_position(&h));
                    3
                }
                (
                    Op::Attention {
                        heads,
                        kv_heads,
                        head_dim,
                        rope_theta: Some(theta),
                        ..
                    },
                    _,
                ) => {
                    if let Some(k) = ins.get(1) {
                        let s = scores(x, k, *heads, *kv_heads, *head_dim, *theta);
                        bump(&mut l.max[5], &s);
                    }
                    return;
                }
                _ => return,
            };
            bump(&mut l.max[slot], &by_position(x));
        })?;
        if let Some(e) = err {
            return Err(e.into());
        }
    }
    Ok(st)
}

/// Max |w| per tensor kind (layer numbers dropped).
fn weight_max(
    graph: &Graph,
    w: &dyn WeightSource,
) -> Result<BTreeMap<String, f64>, Box<dyn std::error::Error>> {
    let mut out = BTreeMap::new();
    for (name, shape) in graph.weight_shapes() {
        let v = w.get(&name, &shape)?;
        let kind = name
            .split('.')
            .filter(|p| p.parse::<usize>().is_err())
            .collect::<Vec<_>>()
            .join(".");
        let e = out.entry(kind).or_insert(0.0f64);
        *e = v.iter().fold(*e, |a, x| a.max(x.abs()));
    }
    Ok(out)
}

fn table(md: &mut String, title: &str, st: &Stats) -> std::fmt::Result {
    writeln!(md, "\n### {title}\n")?;
    write!(md, "| layer |")?;
    for q in &QUANTITIES[..5] {
        write!(md, " {q}: pos 0 | {q}: pos >= 1 |")?;
    }
    writeln!(
        md,
        " score: query 0 | score: query >= 1, key 0 | score: both >= 1 |"
    )?;
    writeln!(md, "|---|{}", "---|".repeat(13))?;
    for (i, l) in st.layers.iter().enumerate() {
        write!(md, "| {i} |")?;
        for q in &l.max[..5] {
            write!(md, " {:.1} | {:.1} |", q[0], q[1])?;
        }
        let s = &l.max[5];
        writeln!(md, " {:.2} | {:.2} | {:.2} |", s[0], s[1], s[2])?;
    }
    writeln!(
        md,
        "| final norm in | {:.1} | {:.1} |{}",
        st.final_norm[0],
        st.final_norm[1],
        " |".repeat(11)
    )
}

/// Max over layers of quantity `q`, class `c`.
fn overall(st: &Stats, q: usize, c: usize) -> f64 {
    st.layers.iter().fold(0.0, |a, l| a.max(l.max[q][c]))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 1,
    };
    let shared = std::env::var_os("DUET_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let model = GgufModel::open(&shared.join(GGUF))?;
    let text = std::fs::read_to_string(shared.join("reference/smollm2/reference.json"))?;
    let entries: Vec<serde_json::Value> = serde_json::from_str(&text)?;
    let prompts: Vec<Vec<u32>> = entries
        .iter()
        .map(|e| {
            e["input_ids"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_u64())
                        .map(|v| v as u32)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let graph = &model.graph;
    let hadamard = Rotation::new(graph.config.intermediate, seed)?;
    let rotated = RotatedWeights::new(&model, graph, seed)?;
    let before = measure(graph, &model, &prompts, &hadamard)?;
    let after = measure(graph, &rotated, &prompts, &hadamard)?;
    let logit_err = before
        .logits
        .iter()
        .zip(&after.logits)
        .map(|(a, b)| {
            let scale = a.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            a.iter()
                .zip(b)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()))
                / scale
        })
        .fold(0.0, f64::max);

    let mut md = String::new();
    writeln!(md, "# SmolLM2-135M-Instruct: value ranges per layer\n")?;
    writeln!(
        md,
        "`cargo run --release -j1 -p duet-models --example smollm2_ranges -- {seed}`: the f64 \
         reference executor on the {} prompts of `../shared/reference/smollm2` ({} to {} \
         tokens; position 0 is `<|im_start|>` in the chat prompts and the first word \
         otherwise), max |x| over all prompts. \"Rotated\": `RotatedWeights` (RMSNorm scales \
         folded, residual stream times Q = D (H_64 ⊗ R_9) / 8, seed {seed}); its logits differ \
         from the original's by {logit_err:.1e} relative. \"down in, Hadamard\": the \
         down-projection input times a seeded D (H_512 ⊗ R_3) / sqrt(512) (an online rotation \
         on shares; not folded anywhere, measured only).",
        prompts.len(),
        prompts.iter().map(Vec::len).min().unwrap_or(0),
        prompts.iter().map(Vec::len).max().unwrap_or(0),
    )?;
    writeln!(md, "\n## Summary (max over layers)\n")?;
    writeln!(md, "| quantity | class | original | rotated |")?;
    writeln!(md, "|---|---|---|---|")?;
    for (q, name) in QUANTITIES.iter().enumerate() {
        let classes: &[&str] = if q == 5 {
            &["query 0", "query >= 1, key 0", "both >= 1"]
        } else {
            &["pos 0", "pos >= 1"]
        };
        for (c, cname) in classes.iter().enumerate() {
            writeln!(
                md,
                "| {name} | {cname} | {:.2} | {:.2} |",
                overall(&before, q, c),
                overall(&after, q, c)
            )?;
        }
    }
    for (c, cname) in ["pos 0", "pos >= 1"].iter().enumerate() {
        writeln!(
            md,
            "| final norm in | {cname} | {:.2} | {:.2} |",
            before.final_norm[c], after.final_norm[c]
        )?;
    }
    writeln!(md, "\n## Weights: max |w| per tensor kind\n")?;
    writeln!(md, "| tensor | original | rotated |")?;
    writeln!(md, "|---|---|---|")?;
    let (wb, wa) = (weight_max(graph, &model)?, weight_max(graph, &rotated)?);
    for (k, v) in &wb {
        writeln!(
            md,
            "| {k} | {v:.4} | {:.4} |",
            wa.get(k).copied().unwrap_or(f64::NAN)
        )?;
    }
    table(&mut md, "Original, per layer", &before)?;
    table(&mut md, "Rotated, per layer", &after)?;
    print!("{md}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/results/ranges");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("smollm2.md"), md)?;
    Ok(())
}
