//! A transformer as a graph of operators, built from the config; both the plaintext reference
//! executor and the secure executor walk the same graph.

use crate::config::{Activation, Arch, ModelConfig};

/// Index of a node in [`Graph::nodes`].
pub type NodeId = usize;

/// How a linear layer's weight tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[out, in]` (PyTorch `nn.Linear`: BERT, LLaMA).
    OutIn,
    /// `[in, out]` (GPT-2 `Conv1D`).
    InOut,
}

impl WeightLayout {
    /// The stored shape of a weight with `in_dim` inputs and `out_total` outputs.
    pub fn shape(self, in_dim: usize, out_total: usize) -> Vec<usize> {
        match self {
            WeightLayout::OutIn => vec![out_total, in_dim],
            WeightLayout::InOut => vec![in_dim, out_total],
        }
    }
}

/// One operator. Activations are `seq x width` matrices; every weight is named by its tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// The client's token ids.
    Input,
    /// Token embedding lookup plus learned position and token-type (type 0) embeddings.
    Embedding {
        /// Token table `[vocab, hidden]`.
        word: String,
        /// Learned positions `[max_positions, hidden]`, if any.
        position: Option<String>,
        /// Token types `[types, hidden]`, if any (type 0 is used).
        token_type: Option<String>,
    },
    /// `x W^T + b` (or `x W + b` for [`WeightLayout::InOut`]), optionally only output columns
    /// `cols.0 .. cols.0 + cols.1` of a fused weight.
    Linear {
        /// Weight tensor.
        weight: String,
        /// Bias tensor.
        bias: Option<String>,
        /// Input width.
        in_dim: usize,
        /// Output width of the stored tensor.
        out_total: usize,
        /// Output columns used: (start, count).
        cols: (usize, usize),
        /// Storage.
        layout: WeightLayout,
    },
    /// LayerNorm over the last axis with affine `gamma`, `beta`.
    LayerNorm {
        /// Scale.
        gamma: String,
        /// Shift.
        beta: String,
        /// Epsilon.
        eps: f64,
    },
    /// RMSNorm over the last axis with scale `gamma`.
    RmsNorm {
        /// Scale.
        gamma: String,
        /// Epsilon.
        eps: f64,
    },
    /// Multi-head attention on inputs (q, k, v): softmax(q k^T / sqrt(d)) v per head.
    Attention {
        /// Query heads.
        heads: usize,
        /// Key/value heads (grouped-query attention).
        kv_heads: usize,
        /// Head width.
        head_dim: usize,
        /// Mask future positions.
        causal: bool,
        /// Rotary embedding base, if rotary positions are used.
        rope_theta: Option<f64>,
        /// SoftMax or the Gaussian kernel.
        kernel: crate::config::AttentionKernel,
    },
    /// Element-wise activation.
    Activation(Activation),
    /// Element-wise sum of two inputs (residual).
    Add,
    /// Element-wise product of two inputs (gated FFN).
    Mul,
    /// The last position's row (`1 x width`): what a language-model head reads.
    LastRow,
}

/// A node: an operator applied to earlier nodes' outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Dotted name, e.g. `layer0.ffn.gelu`.
    pub name: String,
    /// The operator.
    pub op: Op,
    /// Inputs, in the operator's order.
    pub inputs: Vec<NodeId>,
}

/// The model graph; nodes are in execution order and `output` is the last hidden state.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    /// The config it was built from.
    pub config: ModelConfig,
    /// Nodes in execution order.
    pub nodes: Vec<Node>,
    /// The last hidden state.
    pub output: NodeId,
    /// Next-token logits of the last position (`1 x vocab`), for checkpoints with a language
    /// model head (GPT-2 and LLaMA; tied to the token embedding where the checkpoint ties it).
    pub logits: Option<NodeId>,
}

struct Builder {
    nodes: Vec<Node>,
}

impl Builder {
    fn push(&mut self, name: impl Into<String>, op: Op, inputs: Vec<NodeId>) -> NodeId {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        self.nodes.len() - 1
    }

    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        name: String,
        x: NodeId,
        weight: String,
        bias: Option<String>,
        in_dim: usize,
        out_total: usize,
        cols: (usize, usize),
        layout: WeightLayout,
    ) -> NodeId {
        self.push(
            name,
            Op::Linear {
                weight,
                bias,
                in_dim,
                out_total,
                cols,
                layout,
            },
            vec![x],
        )
    }
}

impl Graph {
    /// The graph of a config's architecture, with HuggingFace tensor names.
    pub fn build(config: &ModelConfig) -> Self {
        match config.arch {
            Arch::Bert => bert(config),
            Arch::Gpt2 => gpt2(config),
            Arch::Llama => llama(config),
        }
    }

    /// Every weight tensor the graph reads, with the shape it expects.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let c = &self.config;
        let mut out: Vec<(String, Vec<usize>)> = Vec::new();
        for n in &self.nodes {
            match &n.op {
                Op::Embedding {
                    word,
                    position,
                    token_type,
                } => {
                    out.push((word.clone(), vec![c.vocab_size, c.hidden]));
                    if let Some(p) = position {
                        out.push((p.clone(), vec![c.max_positions, c.hidden]));
                    }
                    if let Some(t) = token_type {
                        out.push((t.clone(), vec![c.type_vocab_size, c.hidden]));
                    }
                }
                Op::Linear {
                    weight,
                    bias,
                    in_dim,
                    out_total,
                    layout,
                    ..
                } => {
                    out.push((weight.clone(), layout.shape(*in_dim, *out_total)));
                    if let Some(b) = bias {
                        out.push((b.clone(), vec![*out_total]));
                    }
                }
                Op::LayerNorm { gamma, beta, .. } => {
                    out.push((gamma.clone(), vec![c.hidden]));
                    out.push((beta.clone(), vec![c.hidden]));
                }
                Op::RmsNorm { gamma, .. } => out.push((gamma.clone(), vec![c.hidden])),
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// LLaMA's head tensor; checkpoints with tied embeddings lack it and use
/// [`LLAMA_TIED_HEAD`].
pub const LLAMA_HEAD: &str = "lm_head.weight";
/// The token embedding a tied LLaMA head reads.
pub const LLAMA_TIED_HEAD: &str = "model.embed_tokens.weight";

/// Logits of the last position: `last_row(x) W^T` with `W` stored `[vocab, hidden]`.
fn lm_head(b: &mut Builder, x: NodeId, weight: &str, c: &ModelConfig) -> NodeId {
    let last = b.push("head.last_position", Op::LastRow, vec![x]);
    b.linear(
        "head.logits".into(),
        last,
        weight.into(),
        None,
        c.hidden,
        c.vocab_size,
        (0, c.vocab_size),
        WeightLayout::OutIn,
    )
}

fn bert(c: &ModelConfig) -> Graph {
    let h = c.hidden;
    let mut b = Builder { nodes: Vec::new() };
    let input = b.push("input", Op::Input, vec![]);
    let emb = b.push(
        "embeddings",
        Op::Embedding {
            word: "embeddings.word_embeddings.weight".into(),
            position: Some("embeddings.position_embeddings.weight".into()),
            token_type: Some("embeddings.token_type_embeddings.weight".into()),
        },
        vec![input],
    );
    let mut x = b.push(
        "embeddings.layernorm",
        Op::LayerNorm {
            gamma: "embeddings.LayerNorm.weight".into(),
            beta: "embeddings.LayerNorm.bias".into(),
            eps: c.norm_eps,
        },
        vec![emb],
    );
    for l in 0..c.layers {
        let p = format!("encoder.layer.{l}");
        let n = format!("layer{l}");
        let lin = |b: &mut Builder, name: &str, x, t: &str, i, o| {
            b.linear(
                format!("{n}.{name}"),
                x,
                format!("{p}.{t}.weight"),
                Some(format!("{p}.{t}.bias")),
                i,
                o,
                (0, o),
                WeightLayout::OutIn,
            )
        };
        let q = lin(&mut b, "attn.q", x, "attention.self.query", h, h);
        let k = lin(&mut b, "attn.k", x, "attention.self.key", h, h);
        let v = lin(&mut b, "attn.v", x, "attention.self.value", h, h);
        let a = b.push(
            format!("{n}.attn.softmax"),
            Op::Attention {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim(),
                causal: false,
                rope_theta: None,
                kernel: c.attention_kernel,
            },
            vec![q, k, v],
        );
        let o = lin(&mut b, "attn.out", a, "attention.output.dense", h, h);
        let r = b.push(format!("{n}.attn.residual"), Op::Add, vec![o, x]);
        let x1 = b.push(
            format!("{n}.attn.layernorm"),
            Op::LayerNorm {
                gamma: format!("{p}.attention.output.LayerNorm.weight"),
                beta: format!("{p}.attention.output.LayerNorm.bias"),
                eps: c.norm_eps,
            },
            vec![r],
        );
        let f = lin(
            &mut b,
            "ffn.up",
            x1,
            "intermediate.dense",
            h,
            c.intermediate,
        );
        let g = b.push(
            format!("{n}.ffn.gelu"),
            Op::Activation(c.activation),
            vec![f],
        );
        let d = lin(&mut b, "ffn.down", g, "output.dense", c.intermediate, h);
        let r2 = b.push(format!("{n}.ffn.residual"), Op::Add, vec![d, x1]);
        x = b.push(
            format!("{n}.ffn.layernorm"),
            Op::LayerNorm {
                gamma: format!("{p}.output.LayerNorm.weight"),
                beta: format!("{p}.output.LayerNorm.bias"),
                eps: c.norm_eps,
            },
            vec![r2],
        );
    }
    Graph {
        config: c.clone(),
        nodes: b.nodes,
        output: x,
        logits: None,
    }
}

fn gpt2(c: &ModelConfig) -> Graph {
    let h = c.hidden;
    let mut b = Builder { nodes: Vec::new() };
    let input = b.push("input", Op::Input, vec![]);
    let mut x = b.push(
        "embeddings",
        Op::Embedding {
            word: "wte.weight".into(),
            position: Some("wpe.weight".into()),
            token_type: None,
        },
        vec![input],
    );
    for l in 0..c.layers {
        let p = format!("h.{l}");
        let n = format!("layer{l}");
        let ln1 = b.push(
            format!("{n}.attn.layernorm"),
            Op::LayerNorm {
                gamma: format!("{p}.ln_1.weight"),
                beta: format!("{p}.ln_1.bias"),
                eps: c.norm_eps,
            },
            vec![x],
        );
        let qkv = |b: &mut Builder, name: &str, i: usize| {
            b.linear(
                format!("{n}.attn.{name}"),
                ln1,
                format!("{p}.attn.c_attn.weight"),
                Some(format!("{p}.attn.c_attn.bias")),
                h,
                3 * h,
                (i * h, h),
                WeightLayout::InOut,
            )
        };
        let q = qkv(&mut b, "q", 0);
        let k = qkv(&mut b, "k", 1);
        let v = qkv(&mut b, "v", 2);
        let a = b.push(
            format!("{n}.attn.softmax"),
            Op::Attention {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim(),
                causal: true,
                rope_theta: None,
                kernel: c.attention_kernel,
            },
            vec![q, k, v],
        );
        let o = b.linear(
            format!("{n}.attn.out"),
            a,
            format!("{p}.attn.c_proj.weight"),
            Some(format!("{p}.attn.c_proj.bias")),
            h,
            h,
            (0, h),
            WeightLayout::InOut,
        );
        let r = b.push(format!("{n}.attn.residual"), Op::Add, vec![o, x]);
        let ln2 = b.push(
            format!("{n}.ffn.layernorm"),
            Op::LayerNorm {
                gamma: format!("{p}.ln_2.weight"),
                beta: format!("{p}.ln_2.bias"),
                eps: c.norm_eps,
            },
            vec![r],
        );
        let f = b.linear(
            format!("{n}.ffn.up"),
            ln2,
            format!("{p}.mlp.c_fc.weight"),
            Some(format!("{p}.mlp.c_fc.bias")),
            h,
            c.intermediate,
            (0, c.intermediate),
            WeightLayout::InOut,
        );
        let g = b.push(
            format!("{n}.ffn.gelu"),
            Op::Activation(c.activation),
            vec![f],
        );
        let d = b.linear(
            format!("{n}.ffn.down"),
            g,
            format!("{p}.mlp.c_proj.weight"),
            Some(format!("{p}.mlp.c_proj.bias")),
            c.intermediate,
            h,
            (0, h),
            WeightLayout::InOut,
        );
        x = b.push(format!("{n}.ffn.residual"), Op::Add, vec![d, r]);
    }
    let out = b.push(
        "final.layernorm",
        Op::LayerNorm {
            gamma: "ln_f.weight".into(),
            beta: "ln_f.bias".into(),
            eps: c.norm_eps,
        },
        vec![x],
    );
    // GPT-2's head is tied to the token embedding `wte` (`[vocab, hidden]`)
    let logits = lm_head(&mut b, out, "wte.weight", c);
    Graph {
        config: c.clone(),
        nodes: b.nodes,
        output: out,
        logits: Some(logits),
    }
}

fn llama(c: &ModelConfig) -> Graph {
    let h = c.hidden;
    let kv = c.kv_heads * c.head_dim();
    let mut b = Builder { nodes: Vec::new() };
    let input = b.push("input", Op::Input, vec![]);
    let mut x = b.push(
        "embeddings",
        Op::Embedding {
            word: "model.embed_tokens.weight".into(),
            position: None,
            token_type: None,
        },
        vec![input],
    );
    for l in 0..c.layers {
        let p = format!("model.layers.{l}");
        let n = format!("layer{l}");
        let ln1 = b.push(
            format!("{n}.attn.rmsnorm"),
            Op::RmsNorm {
                gamma: format!("{p}.input_layernorm.weight"),
                eps: c.norm_eps,
            },
            vec![x],
        );
        let lin = |b: &mut Builder, name: &str, x, t: &str, i, o| {
            b.linear(
                format!("{n}.{name}"),
                x,
                format!("{p}.{t}.weight"),
                None,
                i,
                o,
                (0, o),
                WeightLayout::OutIn,
            )
        };
        let q = lin(&mut b, "attn.q", ln1, "self_attn.q_proj", h, h);
        let k = lin(&mut b, "attn.k", ln1, "self_attn.k_proj", h, kv);
        let v = lin(&mut b, "attn.v", ln1, "self_attn.v_proj", h, kv);
        let a = b.push(
            format!("{n}.attn.softmax"),
            Op::Attention {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim(),
                causal: true,
                rope_theta: Some(c.rope_theta),
                kernel: c.attention_kernel,
            },
            vec![q, k, v],
        );
        let o = lin(&mut b, "attn.out", a, "self_attn.o_proj", h, h);
        let r = b.push(format!("{n}.attn.residual"), Op::Add, vec![o, x]);
        let ln2 = b.push(
            format!("{n}.ffn.rmsnorm"),
            Op::RmsNorm {
                gamma: format!("{p}.post_attention_layernorm.weight"),
                eps: c.norm_eps,
            },
            vec![r],
        );
        let gate = lin(&mut b, "ffn.gate", ln2, "mlp.gate_proj", h, c.intermediate);
        let up = lin(&mut b, "ffn.up", ln2, "mlp.up_proj", h, c.intermediate);
        let s = b.push(
            format!("{n}.ffn.silu"),
            Op::Activation(Activation::Silu),
            vec![gate],
        );
        let m = b.push(format!("{n}.ffn.gated"), Op::Mul, vec![s, up]);
        let d = lin(&mut b, "ffn.down", m, "mlp.down_proj", c.intermediate, h);
        x = b.push(format!("{n}.ffn.residual"), Op::Add, vec![d, r]);
    }
    let out = b.push(
        "final.rmsnorm",
        Op::RmsNorm {
            gamma: "model.norm.weight".into(),
            eps: c.norm_eps,
        },
        vec![x],
    );
    let logits = lm_head(&mut b, out, LLAMA_HEAD, c);
    Graph {
        config: c.clone(),
        nodes: b.nodes,
        output: out,
        logits: Some(logits),
    }
}
