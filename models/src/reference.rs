//! The plaintext f64 reference executor: runs a [`Graph`] in the clear, in double precision.
//! It defines what the secure executor must approximate.

use crate::config::Activation;
use crate::graph::{Graph, Node, NodeId, Op, WeightLayout};
use crate::weights::WeightFile;
use crate::{ModelError, Result};
use rayon::prelude::*;

/// Where weights come from (a safetensors file, or seeded random weights).
pub trait WeightSource {
    /// Tensor `name` as f64, row-major, checked against `shape`.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>>;

    /// In LoRA mode, the server's adapter on base tensor `weight`, if it has one (sources
    /// without adapters have none: [`crate::lora::LoraWeights`] has them).
    fn lora_pair(&self, weight: &str) -> Result<Option<crate::lora::LoraPair>> {
        let _ = weight;
        Ok(None)
    }
}

impl WeightSource for WeightFile {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        self.read_f64(name, shape)
    }
}

/// A `rows x cols` row-major matrix of f64.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    /// Rows (tokens).
    pub rows: usize,
    /// Columns (features).
    pub cols: usize,
    /// Values.
    pub data: Vec<f64>,
}

impl Matrix {
    fn zeros(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f64] {
        self.data
            .get(i * self.cols..(i + 1) * self.cols)
            .unwrap_or(&[])
    }
}

/// Runs `graph` on token ids `ids` and returns the last hidden state (`ids.len() x hidden`).
pub fn run_reference(graph: &Graph, weights: &impl WeightSource, ids: &[u32]) -> Result<Matrix> {
    run_reference_traced(graph, weights, ids, &mut |_, _, _| {})
}

/// The last hidden state and, for graphs with a language-model head, the last position's
/// logits.
pub fn run_reference_outputs(
    graph: &Graph,
    weights: &impl WeightSource,
    ids: &[u32],
) -> Result<(Matrix, Option<Vec<f64>>)> {
    let mut logits = None;
    let hidden = run_reference_traced(graph, weights, ids, &mut |node, _, out| {
        if graph
            .logits
            .and_then(|l| graph.nodes.get(l))
            .map(|n| &n.name)
            == Some(&node.name)
        {
            logits = Some(out.data.clone());
        }
    })?;
    Ok((hidden, logits))
}

/// Token ids a model with config `c` takes: at least one, at most `max_positions`, each in
/// the vocabulary (both executors check them before anything else).
pub(crate) fn check_ids(c: &crate::ModelConfig, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Err(ModelError::Input("no tokens".into()));
    }
    if ids.len() > c.max_positions {
        return Err(ModelError::Input(format!(
            "{} tokens, the model takes at most {}",
            ids.len(),
            c.max_positions
        )));
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= c.vocab_size) {
        return Err(ModelError::Input(format!(
            "token id {bad} outside the vocabulary of {}",
            c.vocab_size
        )));
    }
    Ok(())
}

/// [`run_reference`] calling `observe(node, inputs, output)` after every node: used to find
/// the value ranges a fixed-point format must cover.
pub fn run_reference_traced(
    graph: &Graph,
    weights: &impl WeightSource,
    ids: &[u32],
    observe: &mut dyn FnMut(&Node, &[&Matrix], &Matrix),
) -> Result<Matrix> {
    let c = &graph.config;
    check_ids(c, ids)?;
    // last use of every node, so intermediate values are freed early
    let mut last_use = vec![0usize; graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for &j in &n.inputs {
            if let Some(l) = last_use.get_mut(j) {
                *l = i;
            }
        }
    }
    let mut vals: Vec<Option<Matrix>> = vec![None; graph.nodes.len()];
    let s = ids.len();
    for (i, node) in graph.nodes.iter().enumerate() {
        let input = |k: usize| -> Result<&Matrix> {
            node.inputs
                .get(k)
                .and_then(|&j: &NodeId| vals.get(j))
                .and_then(Option::as_ref)
                .ok_or_else(|| ModelError::Input(format!("node {} lacks input {k}", node.name)))
        };
        let out = match &node.op {
            Op::Input => Matrix {
                rows: s,
                cols: 1,
                data: ids.iter().map(|&t| f64::from(t)).collect(),
            },
            Op::Embedding {
                word,
                position,
                token_type,
            } => {
                let table = weights.get(word, &[c.vocab_size, c.hidden])?;
                let mut m = Matrix::zeros(s, c.hidden);
                for (r, &t) in ids.iter().enumerate() {
                    add_row(&mut m, r, &table, t as usize);
                }
                if let Some(p) = position {
                    let pos = weights.get(p, &[c.max_positions, c.hidden])?;
                    for r in 0..s {
                        add_row(&mut m, r, &pos, r);
                    }
                }
                if let Some(tt) = token_type {
                    let types = weights.get(tt, &[c.type_vocab_size, c.hidden])?;
                    for r in 0..s {
                        add_row(&mut m, r, &types, 0);
                    }
                }
                m
            }
            Op::Linear {
                weight,
                bias,
                in_dim,
                out_total,
                cols,
                layout,
            } => {
                let w = weights.get(weight, &layout.shape(*in_dim, *out_total))?;
                let b = match bias {
                    Some(b) => Some(weights.get(b, &[*out_total])?),
                    None => None,
                };
                linear(
                    input(0)?,
                    &w,
                    b.as_deref(),
                    *in_dim,
                    *out_total,
                    *cols,
                    *layout,
                )?
            }
            Op::LayerNorm { gamma, beta, eps } => {
                let g = weights.get(gamma, &[c.hidden])?;
                let b = weights.get(beta, &[c.hidden])?;
                norm(input(0)?, &g, Some(&b), *eps, true)
            }
            Op::RmsNorm { gamma, eps } => {
                let g = weights.get(gamma, &[c.hidden])?;
                norm(input(0)?, &g, None, *eps, false)
            }
            Op::Attention {
                heads,
                kv_heads,
                head_dim,
                causal,
                rope_theta,
                kernel,
            } => attention(
                input(0)?,
                input(1)?,
                input(2)?,
                (*heads, *kv_heads, *head_dim),
                *causal,
                *rope_theta,
                *kernel,
            )?,
            Op::Activation(a) => {
                let mut m = input(0)?.clone();
                m.data.iter_mut().for_each(|x| *x = activation(*a, *x));
                m
            }
            Op::LastRow => {
                let x = input(0)?;
                Matrix {
                    rows: 1,
                    cols: x.cols,
                    data: x.row(x.rows.saturating_sub(1)).to_vec(),
                }
            }
            Op::Add | Op::Mul => {
                let (a, b) = (input(0)?, input(1)?);
                if a.rows != b.rows || a.cols != b.cols {
                    return Err(ModelError::Input(format!(
                        "{}: operand shapes differ",
                        node.name
                    )));
                }
                let mul = matches!(node.op, Op::Mul);
                Matrix {
                    rows: a.rows,
                    cols: a.cols,
                    data: a
                        .data
                        .iter()
                        .zip(&b.data)
                        .map(|(x, y)| if mul { x * y } else { x + y })
                        .collect(),
                }
            }
        };
        let ins: Vec<&Matrix> = node
            .inputs
            .iter()
            .filter_map(|&j| vals.get(j).and_then(Option::as_ref))
            .collect();
        observe(node, &ins, &out);
        if let Some(v) = vals.get_mut(i) {
            *v = Some(out);
        }
        for &j in &node.inputs {
            if last_use.get(j) == Some(&i) && j != graph.output && Some(j) != graph.logits {
                if let Some(v) = vals.get_mut(j) {
                    *v = None;
                }
            }
        }
    }
    vals.get_mut(graph.output)
        .and_then(Option::take)
        .ok_or_else(|| ModelError::Input("graph produced no output".into()))
}

fn add_row(m: &mut Matrix, r: usize, table: &[f64], t: usize) {
    let cols = m.cols;
    if let (Some(dst), Some(src)) = (
        m.data.get_mut(r * cols..(r + 1) * cols),
        table.get(t * cols..(t + 1) * cols),
    ) {
        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
    }
}

fn linear(
    x: &Matrix,
    w: &[f64],
    b: Option<&[f64]>,
    in_dim: usize,
    out_total: usize,
    cols: (usize, usize),
    layout: WeightLayout,
) -> Result<Matrix> {
    if x.cols != in_dim || cols.0 + cols.1 > out_total {
        return Err(ModelError::Input(format!(
            "linear layer of {in_dim} inputs applied to {} features",
            x.cols
        )));
    }
    let (start, count) = cols;
    // weight rows for the used outputs, each of length in_dim
    let wt: std::borrow::Cow<'_, [f64]> = match layout {
        WeightLayout::OutIn => w
            .get(start * in_dim..(start + count) * in_dim)
            .unwrap_or(&[])
            .into(),
        WeightLayout::InOut => {
            let mut t = vec![0.0; count * in_dim];
            for (k, row) in w.chunks_exact(out_total).enumerate() {
                for (o, &v) in row.iter().skip(start).take(count).enumerate() {
                    if let Some(d) = t.get_mut(o * in_dim + k) {
                        *d = v;
                    }
                }
            }
            t.into()
        }
    };
    let rows: Vec<&[f64]> = wt.chunks_exact(in_dim.max(1)).collect();
    let mut out = Matrix::zeros(x.rows, count);
    // four weight rows at a time against every input row: the weights are read from memory
    // once per call rather than once per input row; the blocks of four in parallel (each
    // result is computed exactly as sequentially)
    let blocks: Vec<Vec<[f64; 4]>> = rows
        .par_chunks(4)
        .map(|ws| {
            let mut sums = Vec::with_capacity(x.rows);
            let mut r = 0;
            while r < x.rows {
                match (ws, r + 1 < x.rows) {
                    // two input rows at once: eight independent sums
                    ([w0, w1, w2, w3], true) => {
                        let (a, b) = dot4x2(x.row(r), x.row(r + 1), [w0, w1, w2, w3]);
                        sums.extend([a, b]);
                        r += 2;
                    }
                    ([w0, w1, w2, w3], false) => {
                        sums.push(dot4(x.row(r), [w0, w1, w2, w3]));
                        r += 1;
                    }
                    _ => {
                        let xr = x.row(r);
                        let mut s = [0.0; 4];
                        s.iter_mut()
                            .zip(ws)
                            .for_each(|(s, w)| *s = xr.iter().zip(*w).map(|(a, b)| a * b).sum());
                        sums.push(s);
                        r += 1;
                    }
                }
            }
            sums
        })
        .collect();
    for ((o, ws), block) in rows.chunks(4).enumerate().zip(&blocks) {
        for (r, &sums) in block.iter().enumerate() {
            let at = r * count + 4 * o;
            let dst = out.data.get_mut(at..(at + ws.len()).min(r * count + count));
            for (j, (d, v)) in dst.unwrap_or(&mut []).iter_mut().zip(sums).enumerate() {
                let bias = b
                    .and_then(|b| b.get(start + 4 * o + j))
                    .copied()
                    .unwrap_or(0.0);
                *d = v + bias;
            }
        }
    }
    Ok(out)
}

/// Four dot products of `x` with rows `w`, each summed in order from the first term (as
/// `Iterator::sum` does), so the results equal four separate dot products bit for bit; the
/// four independent sums let the CPU overlap them.
fn dot4(x: &[f64], w: [&[f64]; 4]) -> [f64; 4] {
    let [w0, w1, w2, w3] = w;
    let mut s = [-0.0f64; 4];
    for ((((&a, &b0), &b1), &b2), &b3) in x.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
        s[0] += a * b0;
        s[1] += a * b1;
        s[2] += a * b2;
        s[3] += a * b3;
    }
    s
}

/// [`dot4`] of two rows `x`, `y` at once (eight independent sums, each as [`dot4`]'s).
fn dot4x2(x: &[f64], y: &[f64], w: [&[f64]; 4]) -> ([f64; 4], [f64; 4]) {
    let [w0, w1, w2, w3] = w;
    let (mut s, mut t) = ([-0.0f64; 4], [-0.0f64; 4]);
    for (((((&a, &c), &b0), &b1), &b2), &b3) in x.iter().zip(y).zip(w0).zip(w1).zip(w2).zip(w3) {
        s[0] += a * b0;
        s[1] += a * b1;
        s[2] += a * b2;
        s[3] += a * b3;
        t[0] += c * b0;
        t[1] += c * b1;
        t[2] += c * b2;
        t[3] += c * b3;
    }
    (s, t)
}

fn norm(x: &Matrix, g: &[f64], b: Option<&[f64]>, eps: f64, center: bool) -> Matrix {
    let mut out = x.clone();
    for row in out.data.chunks_exact_mut(x.cols) {
        let n = row.len() as f64;
        let mean = if center {
            row.iter().sum::<f64>() / n
        } else {
            0.0
        };
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (j, v) in row.iter_mut().enumerate() {
            let gj = g.get(j).copied().unwrap_or(1.0);
            let bj = b.and_then(|b| b.get(j)).copied().unwrap_or(0.0);
            *v = (*v - mean) * inv * gj + bj;
        }
    }
    out
}

/// The activation functions, exactly.
pub fn activation(a: Activation, x: f64) -> f64 {
    match a {
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044_715 * x * x * x)).tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

/// Rotary positions (LLaMA's half-split convention) applied in place to `m`, whose row `p`
/// holds `heads` heads of width `hd` at position `p`.
pub fn rope(m: &mut Matrix, heads: usize, hd: usize, theta: f64) {
    let half = hd / 2;
    for (p, row) in m.data.chunks_exact_mut(heads * hd).enumerate() {
        for h in 0..heads {
            for i in 0..half {
                let freq = theta.powf(-2.0 * i as f64 / hd as f64);
                let (sin, cos) = (p as f64 * freq).sin_cos();
                let (a, b) = (h * hd + i, h * hd + i + half);
                if let (Some(&x), Some(&y)) = (row.get(a), row.get(b)) {
                    if let Some(v) = row.get_mut(a) {
                        *v = x * cos - y * sin;
                    }
                    if let Some(v) = row.get_mut(b) {
                        *v = y * cos + x * sin;
                    }
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn attention(
    q: &Matrix,
    k: &Matrix,
    v: &Matrix,
    (heads, kv_heads, hd): (usize, usize, usize),
    causal: bool,
    rope_theta: Option<f64>,
    kernel: crate::config::AttentionKernel,
) -> Result<Matrix> {
    let s = q.rows;
    if q.cols != heads * hd || k.cols != kv_heads * hd || v.cols != kv_heads * hd || k.rows != s {
        return Err(ModelError::Input(
            "attention operand shapes do not match".into(),
        ));
    }
    let (mut q, mut k) = (q.clone(), k.clone());
    if let Some(theta) = rope_theta {
        rope(&mut q, heads, hd, theta);
        rope(&mut k, kv_heads, hd, theta);
    }
    let group = heads / kv_heads;
    let scale = 1.0 / (hd as f64).sqrt();
    // one head per task (each head's output is computed exactly as sequentially)
    let per_head: Vec<Matrix> = (0..heads)
        .into_par_iter()
        .map(|h| attention_head(&q, &k, v, (h, h / group, hd), causal, scale, kernel))
        .collect();
    let mut out = Matrix::zeros(s, heads * hd);
    for (h, m) in per_head.iter().enumerate() {
        for i in 0..s {
            let dst = out
                .data
                .get_mut(i * heads * hd + h * hd..i * heads * hd + (h + 1) * hd)
                .unwrap_or(&mut []);
            dst.copy_from_slice(m.row(i).get(..dst.len()).unwrap_or(&[]));
        }
    }
    Ok(out)
}

/// Head `h` of [`attention`] (`s x hd`), keys and values of head `kvh`; masked keys are
/// skipped (their weight is exactly 0).
fn attention_head(
    q: &Matrix,
    k: &Matrix,
    v: &Matrix,
    (h, kvh, hd): (usize, usize, usize),
    causal: bool,
    scale: f64,
    kernel: crate::config::AttentionKernel,
) -> Matrix {
    let s = q.rows;
    let mut out = Matrix::zeros(s, hd);
    let mut scores = vec![0.0; s];
    {
        for i in 0..s {
            let qi = q.row(i).get(h * hd..(h + 1) * hd).unwrap_or(&[]);
            let lim = if causal { i + 1 } else { s };
            let gaussian = match kernel {
                crate::config::AttentionKernel::Gaussian { scale } => Some(scale),
                crate::config::AttentionKernel::Softmax => None,
            };
            let scores = scores.get_mut(..lim).unwrap_or(&mut []);
            let key = |j: usize| k.row(j).get(kvh * hd..(kvh + 1) * hd).unwrap_or(&[]);
            // softmax scores four keys at a time (independent sums, each as a plain dot
            // product); the rest below
            let mut done = 0;
            if gaussian.is_none() {
                for (c, sc) in scores.chunks_exact_mut(4).enumerate() {
                    let j = 4 * c;
                    let d = dot4(qi, [key(j), key(j + 1), key(j + 2), key(j + 3)]);
                    sc.iter_mut().zip(d).for_each(|(s, d)| *s = d * scale);
                    done = j + 4;
                }
            }
            for (j, sc) in scores.iter_mut().enumerate().skip(done) {
                let kj = k.row(j).get(kvh * hd..(kvh + 1) * hd).unwrap_or(&[]);
                *sc = match (j < lim, gaussian) {
                    (false, None) => f64::NEG_INFINITY,
                    (false, Some(_)) => 0.0,
                    (true, None) => qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f64>() * scale,
                    // exp(-s ||q - k||^2), no normalisation
                    (true, Some(s)) => {
                        let d2: f64 = qi.iter().zip(kj).map(|(a, b)| (a - b) * (a - b)).sum();
                        (-s * d2).exp()
                    }
                };
            }
            let mut sum = 0.0;
            if gaussian.is_some() {
                sum = 1.0;
            } else {
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                scores.iter_mut().for_each(|x| {
                    *x = (*x - max).exp();
                    sum += *x;
                });
            }
            for (j, &p) in scores.iter().enumerate() {
                let vj = v.row(j).get(kvh * hd..(kvh + 1) * hd).unwrap_or(&[]);
                let dst = out.data.get_mut(i * hd..(i + 1) * hd).unwrap_or(&mut []);
                dst.iter_mut().zip(vj).for_each(|(d, x)| *d += p / sum * x);
            }
        }
    }
    out
}

/// Sentence embedding as sentence-transformers computes it: mean of the token vectors (no
/// padding here, so over all tokens), then L2 normalisation.
pub fn sentence_embedding(hidden: &Matrix) -> Vec<f64> {
    let mut mean = vec![0.0; hidden.cols];
    for r in 0..hidden.rows {
        mean.iter_mut()
            .zip(hidden.row(r))
            .for_each(|(m, x)| *m += x);
    }
    let n = hidden.rows.max(1) as f64;
    mean.iter_mut().for_each(|m| *m /= n);
    let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
    mean.into_iter().map(|x| x / norm).collect()
}

/// Cosine similarity of two vectors (0 if either is zero or lengths differ).
pub fn cosine(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return 0.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// `linear` equals plain dot products bit for bit, for both layouts, a bias, a column
    /// window and widths that are not multiples of four.
    #[test]
    fn linear_equals_plain_dot_products() {
        let val = |i: usize| ((i * 7919 % 1013) as f64 - 506.0) / 97.0;
        let (rows, in_dim, out_total) = (3, 13, 11);
        let x = Matrix {
            rows,
            cols: in_dim,
            data: (0..rows * in_dim).map(val).collect(),
        };
        let w: Vec<f64> = (0..in_dim * out_total).map(|i| val(i + 5)).collect();
        let b: Vec<f64> = (0..out_total).map(|i| val(i + 99)).collect();
        for layout in [WeightLayout::OutIn, WeightLayout::InOut] {
            for (start, count) in [(0, out_total), (2, 7), (4, 1)] {
                let got =
                    linear(&x, &w, Some(&b), in_dim, out_total, (start, count), layout).unwrap();
                for r in 0..rows {
                    for o in 0..count {
                        let wt = |k: usize| match layout {
                            WeightLayout::OutIn => w[(start + o) * in_dim + k],
                            WeightLayout::InOut => w[k * out_total + start + o],
                        };
                        let want =
                            (0..in_dim).map(|k| x.row(r)[k] * wt(k)).sum::<f64>() + b[start + o];
                        assert_eq!(got.data[r * count + o].to_bits(), want.to_bits());
                    }
                }
            }
        }
    }
}
