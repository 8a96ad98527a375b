//! Rotating the residual stream of an RMSNorm model (issue 22, outlier handling).
//!
//! A LLaMA-family residual stream has a few channels that are far larger than the rest (up to
//! about 25,000 in SmolLM2-135M), and the fixed-point formats of the secure run must cover the
//! largest. An orthogonal matrix `Q` folded into the weights spreads those channels over all of
//! them without changing the model's function:
//!
//! - every RMSNorm's scale `g` is first folded into the linear layers that read the norm's
//!   output (`W -> W diag(g)` on the input side) and then set to 1: `RMSNorm(x Q) =
//!   RMSNorm(x) Q` holds for a unit scale because `Q` keeps the norm of a row, not for any other;
//! - the token embedding becomes `E Q`, so the stream carries `x Q` instead of `x`;
//! - a linear layer reading a normed stream (q, k, v, gate, up, the LM head) reads `x Q` and
//!   gets `Q^T diag(g) M` (with `y = x M`), so its output is unchanged;
//! - a linear layer writing into the stream (o_proj, down_proj) gets `M Q`.
//!
//! Only the stream is rotated: attention and the FFN's inner activations see exactly what they
//! saw before, and so do the logits. The graph's last hidden state (the final RMSNorm's output)
//! is `RMSNorm(x) Q` with a unit scale, not the original hidden state.
//!
//! Tied embeddings need no change of the graph: a LLaMA graph always reads its head as
//! [`crate::graph::LLAMA_HEAD`] and the weight sources resolve that name to the token
//! embedding when the checkpoint ties them; [`RotatedWeights`] serves the two names with two
//! different matrices (the embedding `E Q`, the head `E diag(g) Q`), so the rotated model is
//! untied, as it must be.
//!
//! The rotation ([`Rotation`]): `Q = D (H_a ⊗ R) / sqrt(a)` for a width `n = a m` with `a` the
//! largest power of two dividing `n`, `D` a seeded random diagonal of ±1, `H_a` the Sylvester
//! Hadamard matrix and `R` a seeded random orthogonal `m x m` matrix (Gram-Schmidt of a Gaussian
//! matrix). For a power of two this is the randomised Hadamard transform; SmolLM2's 576 is
//! 64 x 9. Every entry of `H_a ⊗ R` is non-zero (almost surely), so one large channel spreads
//! over all `n`; `x Q` costs `a m^2 + m a log a` operations per row instead of `n^2`.

use crate::graph::{Graph, NodeId, Op, WeightLayout};
use crate::reference::WeightSource;
use crate::{ModelError, Result};
use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};
use std::collections::HashMap;

/// A seeded orthogonal `n x n` matrix `Q = D (H_a ⊗ R) / sqrt(a)` (see the module
/// documentation), applied to row vectors as `x -> x Q`.
#[derive(Clone, Debug)]
pub struct Rotation {
    /// The power-of-two factor `a` of the width.
    pow2: usize,
    /// The odd factor `m` of the width.
    odd: usize,
    /// The diagonal `D` (±1).
    signs: Vec<f64>,
    /// `R`, row-major `m x m`, orthogonal.
    small: Vec<f64>,
}

impl Rotation {
    /// The rotation of width `n` drawn from `seed`.
    pub fn new(n: usize, seed: u64) -> Result<Self> {
        if n == 0 {
            return Err(ModelError::Rotation("width 0".into()));
        }
        let pow2 = 1usize << n.trailing_zeros();
        let odd = n / pow2;
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        let signs = (0..n)
            .map(|_| if rng.next_u32() & 1 == 0 { 1.0 } else { -1.0 })
            .collect();
        let small = random_orthogonal(odd, &mut rng)?;
        Ok(Self {
            pow2,
            odd,
            signs,
            small,
        })
    }

    /// The width `n`.
    pub fn dim(&self) -> usize {
        self.pow2 * self.odd
    }

    /// `x <- x Q` for one row of length [`Rotation::dim`].
    pub fn apply(&self, x: &mut [f64]) -> Result<()> {
        let (a, m) = (self.pow2, self.odd);
        if x.len() != a * m {
            return Err(ModelError::Rotation(format!(
                "row of {} values for a rotation of width {}",
                x.len(),
                a * m
            )));
        }
        x.iter_mut().zip(&self.signs).for_each(|(v, s)| *v *= s);
        // (x (H ⊗ R))[j1 m + j2] = sum_{i1, i2} x[i1 m + i2] H[i1, j1] R[i2, j2]: first every
        // group of m times R, then a Walsh-Hadamard transform across the groups
        if m > 1 {
            let mut t = vec![0.0; m];
            for group in x.chunks_exact_mut(m) {
                t.iter_mut().for_each(|v| *v = 0.0);
                for (&xi, row) in group.iter().zip(self.small.chunks_exact(m)) {
                    t.iter_mut().zip(row).for_each(|(d, r)| *d += xi * r);
                }
                group.copy_from_slice(&t);
            }
        }
        let mut h = 1;
        while h < a {
            for block in x.chunks_exact_mut(2 * h * m) {
                let (lo, hi) = block.split_at_mut(h * m);
                for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
                    let (p, q) = (*u, *v);
                    *u = p + q;
                    *v = p - q;
                }
            }
            h *= 2;
        }
        let scale = 1.0 / (a as f64).sqrt();
        x.iter_mut().for_each(|v| *v *= scale);
        Ok(())
    }

    /// `X <- X Q` for a row-major matrix whose rows have length [`Rotation::dim`].
    pub fn apply_rows(&self, data: &mut [f64]) -> Result<()> {
        let n = self.dim();
        if data.len() % n != 0 {
            return Err(ModelError::Rotation(format!(
                "{} values are not rows of {n}",
                data.len()
            )));
        }
        data.chunks_exact_mut(n).try_for_each(|r| self.apply(r))
    }

    /// `X <- Q^T X` for a row-major `dim x cols` matrix (each column `c -> Q^T c`).
    pub fn apply_columns(&self, data: &mut [f64], cols: usize) -> Result<()> {
        let n = self.dim();
        if data.len() != n * cols {
            return Err(ModelError::Rotation(format!(
                "{} values are not a {n} x {cols} matrix",
                data.len()
            )));
        }
        let mut t = transpose(data, n, cols);
        self.apply_rows(&mut t)?;
        data.copy_from_slice(&transpose(&t, cols, n));
        Ok(())
    }
}

fn transpose(data: &[f64], rows: usize, cols: usize) -> Vec<f64> {
    let mut t = vec![0.0; data.len()];
    for (r, row) in data.chunks_exact(cols.max(1)).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            if let Some(d) = t.get_mut(c * rows + r) {
                *d = v;
            }
        }
    }
    t
}

/// A uniform value in (0, 1].
fn unit(rng: &mut ChaCha12Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// A random orthogonal `m x m` matrix (rows orthonormal): Gram-Schmidt, run twice, on a
/// Gaussian matrix drawn with Box-Muller.
fn random_orthogonal(m: usize, rng: &mut ChaCha12Rng) -> Result<Vec<f64>> {
    let mut r: Vec<f64> = (0..m * m)
        .map(|_| {
            let (u, v) = (unit(rng), unit(rng));
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect();
    for i in 0..m {
        let (done, rest) = r.split_at_mut(i * m);
        let row = rest.get_mut(..m).unwrap_or(&mut []);
        for _ in 0..2 {
            for prev in done.chunks_exact(m) {
                let dot: f64 = row.iter().zip(prev).map(|(a, b)| a * b).sum();
                row.iter_mut().zip(prev).for_each(|(a, b)| *a -= dot * b);
            }
        }
        let norm = row.iter().map(|a| a * a).sum::<f64>().sqrt();
        if norm < 1e-6 {
            return Err(ModelError::Rotation("degenerate random matrix".into()));
        }
        row.iter_mut().for_each(|a| *a /= norm);
    }
    Ok(r)
}

/// What the rotation does to one tensor.
#[derive(Clone, Debug, PartialEq)]
enum Role {
    /// The token table: `E -> E Q`.
    Embedding,
    /// A linear layer reading the output of the RMSNorm with scale tensor `gamma`:
    /// `M -> Q^T diag(g) M` (with `y = x M`).
    Reader { gamma: String, layout: WeightLayout },
    /// A linear layer adding into the residual stream: `M -> M Q`.
    Writer { layout: WeightLayout },
    /// An RMSNorm scale: all ones.
    UnitScale,
}

/// A [`WeightSource`] serving the weights of `graph` with every RMSNorm scale folded into the
/// linear layers that read the norm and the residual stream rotated by a seeded [`Rotation`]
/// (see the module documentation): the graph run on it computes the same logits, while its
/// residual stream (and so every RMSNorm input) carries `x Q`. Tensors the rotation does not
/// touch are passed through.
pub struct RotatedWeights<'a> {
    inner: &'a dyn WeightSource,
    roles: HashMap<String, Role>,
    rotation: Rotation,
    hidden: usize,
}

impl<'a> RotatedWeights<'a> {
    /// The rotated view of `inner`'s weights for `graph`, with the rotation drawn from `seed`.
    /// Fails for graphs where the rotation would change the function: anything but RMSNorm
    /// or a residual sum reading the stream, a norm output read by anything but linear layers
    /// (directly or through the last-row selection), a bias on a layer writing into the
    /// stream, position or token-type embeddings, or one tensor in two roles.
    pub fn new(inner: &'a dyn WeightSource, graph: &Graph, seed: u64) -> Result<Self> {
        let hidden = graph.config.hidden;
        Ok(Self {
            inner,
            roles: roles(graph)?,
            rotation: Rotation::new(hidden, seed)?,
            hidden,
        })
    }

    /// The rotation folded into the stream.
    pub fn rotation(&self) -> &Rotation {
        &self.rotation
    }
}

fn bad(node: &str, why: &str) -> ModelError {
    ModelError::Rotation(format!("{node}: {why}"))
}

/// Each rotated tensor's role, from the graph's structure.
fn roles(graph: &Graph) -> Result<HashMap<String, Role>> {
    let hidden = graph.config.hidden;
    let nodes = &graph.nodes;
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for &j in &n.inputs {
            if let Some(c) = consumers.get_mut(j) {
                c.push(i);
            }
        }
    }
    let mut roles: HashMap<String, Role> = HashMap::new();
    let mut assign = |name: &str, role: Role| -> Result<()> {
        match roles.get(name) {
            Some(old) if *old != role => Err(ModelError::Rotation(format!(
                "tensor {name:?} is used as {old:?} and as {role:?}"
            ))),
            _ => {
                roles.insert(name.to_string(), role);
                Ok(())
            }
        }
    };
    let mut stream = vec![false; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        match &n.op {
            Op::Embedding {
                word,
                position,
                token_type,
            } => {
                if position.is_some() || token_type.is_some() {
                    return Err(bad(&n.name, "position or token-type embeddings"));
                }
                assign(word, Role::Embedding)?;
            }
            Op::Add if n.inputs.iter().any(|&j| stream.get(j) == Some(&true)) => {
                for &j in &n.inputs {
                    if stream.get(j) == Some(&true) {
                        continue;
                    }
                    match nodes.get(j).map(|w| (&w.name, &w.op)) {
                        Some((
                            _,
                            Op::Linear {
                                weight,
                                bias: None,
                                out_total,
                                cols,
                                layout,
                                ..
                            },
                        )) if *out_total == hidden && *cols == (0, hidden) => {
                            assign(weight, Role::Writer { layout: *layout })?;
                        }
                        Some((name, _)) => {
                            return Err(bad(name, "writes into the stream but is not a linear layer of the stream's width without bias"));
                        }
                        None => return Err(bad(&n.name, "missing input")),
                    }
                }
            }
            _ => continue,
        }
        if let Some(s) = stream.get_mut(i) {
            *s = true;
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if stream.get(i) != Some(&true) {
            continue;
        }
        for &c in consumers.get(i).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(cn) = nodes.get(c) else { continue };
            match &cn.op {
                Op::Add if stream.get(c) == Some(&true) => {}
                Op::RmsNorm { gamma, .. } => {
                    assign(gamma, Role::UnitScale)?;
                    readers(graph, &consumers, c, gamma, &mut assign)?;
                }
                _ => return Err(bad(&cn.name, &format!("reads the stream ({})", n.name))),
            }
        }
    }
    Ok(roles)
}

/// Assigns [`Role::Reader`] to every linear layer reading node `norm`'s output, directly or
/// through [`Op::LastRow`].
fn readers(
    graph: &Graph,
    consumers: &[Vec<NodeId>],
    norm: NodeId,
    gamma: &str,
    assign: &mut dyn FnMut(&str, Role) -> Result<()>,
) -> Result<()> {
    for &c in consumers.get(norm).map(Vec::as_slice).unwrap_or(&[]) {
        let Some(cn) = graph.nodes.get(c) else {
            continue;
        };
        match &cn.op {
            Op::Linear {
                weight,
                in_dim,
                layout,
                ..
            } if *in_dim == graph.config.hidden => assign(
                weight,
                Role::Reader {
                    gamma: gamma.to_string(),
                    layout: *layout,
                },
            )?,
            Op::LastRow => readers(graph, consumers, c, gamma, assign)?,
            _ => return Err(bad(&cn.name, "reads a normalised stream")),
        }
    }
    Ok(())
}

impl WeightSource for RotatedWeights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let Some(role) = self.roles.get(name) else {
            return self.inner.get(name, shape);
        };
        let n = self.hidden;
        let mut w = self.inner.get(name, shape)?;
        let cols = match shape {
            [_, c] => *c,
            [_] => 1,
            _ => return Err(bad(name, &format!("unexpected shape {shape:?}"))),
        };
        match role {
            // read (and so checked) above, then replaced
            Role::UnitScale => w.iter_mut().for_each(|v| *v = 1.0),
            Role::Embedding => self.rotation.apply_rows(&mut w)?,
            Role::Reader { gamma, layout } => {
                let g = self.inner.get(gamma, &[n])?;
                match layout {
                    // W [out, in]: W -> W diag(g) Q
                    WeightLayout::OutIn => {
                        for row in w.chunks_exact_mut(n) {
                            row.iter_mut().zip(&g).for_each(|(v, s)| *v *= s);
                        }
                        self.rotation.apply_rows(&mut w)?;
                    }
                    // W [in, out]: W -> Q^T diag(g) W
                    WeightLayout::InOut => {
                        for (row, s) in w.chunks_exact_mut(cols).zip(&g) {
                            row.iter_mut().for_each(|v| *v *= s);
                        }
                        self.rotation.apply_columns(&mut w, cols)?;
                    }
                }
            }
            Role::Writer { layout } => match layout {
                // W [out, in]: W -> Q^T W
                WeightLayout::OutIn => self.rotation.apply_columns(&mut w, cols)?,
                // W [in, out]: W -> W Q
                WeightLayout::InOut => self.rotation.apply_rows(&mut w)?,
            },
        }
        Ok(w)
    }

    fn lora_pair(&self, weight: &str) -> Result<Option<crate::lora::LoraPair>> {
        let pair = self.inner.lora_pair(weight)?;
        if pair.is_some() && self.roles.contains_key(weight) {
            return Err(bad(weight, "an adapter on a rotated tensor"));
        }
        Ok(pair)
    }
}
