//! A small GGUF writer for tests: metadata of every type, tensors of the types Duet reads,
//! and the byte position of every count, length, type, dimension and offset field (for the
//! mutation test).

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use half::{bf16, f16};

/// A metadata value.
#[derive(Clone, Debug)]
pub enum Val {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Element type id and elements (all of that type).
    Arr(u32, Vec<Val>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Val {
    pub fn type_id(&self) -> u32 {
        match self {
            Val::U8(_) => 0,
            Val::I8(_) => 1,
            Val::U16(_) => 2,
            Val::I16(_) => 3,
            Val::U32(_) => 4,
            Val::I32(_) => 5,
            Val::F32(_) => 6,
            Val::Bool(_) => 7,
            Val::Str(_) => 8,
            Val::Arr(..) => 9,
            Val::U64(_) => 10,
            Val::I64(_) => 11,
            Val::F64(_) => 12,
        }
    }

    pub fn str(s: &str) -> Self {
        Val::Str(s.to_string())
    }

    pub fn strs<S: AsRef<str>>(v: &[S]) -> Self {
        Val::Arr(8, v.iter().map(|s| Val::str(s.as_ref())).collect())
    }

    pub fn i32s(v: &[i32]) -> Self {
        Val::Arr(5, v.iter().map(|&x| Val::I32(x)).collect())
    }

    pub fn f32s(v: &[f32]) -> Self {
        Val::Arr(6, v.iter().map(|&x| Val::F32(x)).collect())
    }
}

/// What a recorded field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Version,
    TensorCount,
    KvCount,
    StringLength,
    ValueType,
    ArrayType,
    ArrayLength,
    NDims,
    Dim,
    TensorType,
    Offset,
    Scalar,
}

/// A field of the written file.
#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub pos: usize,
    pub width: usize,
    pub kind: FieldKind,
}

/// A tensor to write: GGUF dims (innermost first), ggml type id, raw data.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    pub data: Vec<u8>,
}

/// A GGUF image under construction.
#[derive(Clone, Debug)]
pub struct Writer {
    pub version: u32,
    pub alignment: usize,
    pub kv: Vec<(String, Val)>,
    pub tensors: Vec<Tensor>,
}

struct Out {
    bytes: Vec<u8>,
    fields: Vec<Field>,
}

impl Out {
    fn put(&mut self, b: &[u8], kind: Option<FieldKind>) {
        if let Some(kind) = kind {
            self.fields.push(Field {
                pos: self.bytes.len(),
                width: b.len(),
                kind,
            });
        }
        self.bytes.extend_from_slice(b);
    }

    fn string(&mut self, s: &str) {
        self.put(
            &(s.len() as u64).to_le_bytes(),
            Some(FieldKind::StringLength),
        );
        self.put(s.as_bytes(), None);
    }

    fn value(&mut self, v: &Val) {
        let s = Some(FieldKind::Scalar);
        match v {
            Val::U8(x) => self.put(&x.to_le_bytes(), s),
            Val::I8(x) => self.put(&x.to_le_bytes(), s),
            Val::U16(x) => self.put(&x.to_le_bytes(), s),
            Val::I16(x) => self.put(&x.to_le_bytes(), s),
            Val::U32(x) => self.put(&x.to_le_bytes(), s),
            Val::I32(x) => self.put(&x.to_le_bytes(), s),
            Val::F32(x) => self.put(&x.to_le_bytes(), s),
            Val::Bool(x) => self.put(&[u8::from(*x)], s),
            Val::Str(x) => self.string(x),
            Val::U64(x) => self.put(&x.to_le_bytes(), s),
            Val::I64(x) => self.put(&x.to_le_bytes(), s),
            Val::F64(x) => self.put(&x.to_le_bytes(), s),
            Val::Arr(t, items) => {
                self.put(&t.to_le_bytes(), Some(FieldKind::ArrayType));
                self.put(
                    &(items.len() as u64).to_le_bytes(),
                    Some(FieldKind::ArrayLength),
                );
                for i in items {
                    self.value(i);
                }
            }
        }
    }
}

impl Writer {
    pub fn new() -> Self {
        Self {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(&mut self, key: &str, v: Val) -> &mut Self {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.to_string(), v));
        self
    }

    pub fn tensor(&mut self, name: &str, dims: &[u64], ggml_type: u32, data: Vec<u8>) -> &mut Self {
        self.tensors.push(Tensor {
            name: name.to_string(),
            dims: dims.to_vec(),
            ggml_type,
            data,
        });
        self
    }

    /// The file image and its fields.
    pub fn write(&self) -> (Vec<u8>, Vec<Field>) {
        let mut o = Out {
            bytes: Vec::new(),
            fields: Vec::new(),
        };
        o.put(b"GGUF", None);
        o.put(&self.version.to_le_bytes(), Some(FieldKind::Version));
        o.put(
            &(self.tensors.len() as u64).to_le_bytes(),
            Some(FieldKind::TensorCount),
        );
        o.put(
            &(self.kv.len() as u64).to_le_bytes(),
            Some(FieldKind::KvCount),
        );
        for (k, v) in &self.kv {
            o.string(k);
            o.put(&v.type_id().to_le_bytes(), Some(FieldKind::ValueType));
            o.value(v);
        }
        let pad = |n: usize| n.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0usize;
        for t in &self.tensors {
            o.string(&t.name);
            o.put(&(t.dims.len() as u32).to_le_bytes(), Some(FieldKind::NDims));
            for d in &t.dims {
                o.put(&d.to_le_bytes(), Some(FieldKind::Dim));
            }
            o.put(&t.ggml_type.to_le_bytes(), Some(FieldKind::TensorType));
            o.put(&(offset as u64).to_le_bytes(), Some(FieldKind::Offset));
            offset = pad(offset + t.data.len());
        }
        let start = pad(o.bytes.len());
        o.bytes.resize(start, 0);
        for t in &self.tensors {
            o.bytes.extend_from_slice(&t.data);
            let end = start + pad(o.bytes.len() - start);
            o.bytes.resize(end, 0);
        }
        (o.bytes, o.fields)
    }
}

/// ggml type ids.
pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;
pub const Q4_K: u32 = 12;
pub const Q5_K: u32 = 13;
pub const Q6_K: u32 = 14;
pub const BF16: u32 = 30;

/// Values stored exactly in `ggml_type` (F32, F16, BF16) as raw bytes.
pub fn encode_floats(vals: &[f32], ggml_type: u32) -> Vec<u8> {
    match ggml_type {
        F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
        F16 => vals
            .iter()
            .flat_map(|v| f16::from_f32(*v).to_le_bytes())
            .collect(),
        BF16 => vals
            .iter()
            .flat_map(|v| bf16::from_f32(*v).to_le_bytes())
            .collect(),
        _ => panic!("not a float type"),
    }
}

/// Q8_0 blocks holding `vals` (a multiple of 32) with scale `d` per block: exact when every
/// value is `d` times an integer in -127..=127.
pub fn encode_q8_0(vals: &[f32], d: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for block in vals.chunks(32) {
        out.extend(f16::from_f32(d).to_le_bytes());
        for v in block {
            out.push(((v / d).round() as i8) as u8);
        }
    }
    out
}

/// GPT-2's byte alphabet: the printable byte values stand for themselves, the others are
/// mapped to the characters from U+0100 on, in order.
pub fn byte_alphabet() -> Vec<char> {
    let keep =
        |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if keep(b) {
                char::from_u32(b).unwrap()
            } else {
                let c = char::from_u32(next).unwrap();
                next += 1;
                c
            }
        })
        .collect()
}

/// Q4_0 blocks of `d (q - 8)` for 4-bit `q` (a multiple of 32 values).
pub fn encode_q4_0(q: &[u8], d: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for block in q.chunks(32) {
        out.extend(f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            out.push(block[j] | (block[j + 16] << 4));
        }
    }
    out
}

/// Q4_1 blocks of `d q + m` for 4-bit `q`.
pub fn encode_q4_1(q: &[u8], d: f32, m: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for block in q.chunks(32) {
        out.extend(f16::from_f32(d).to_le_bytes());
        out.extend(f16::from_f32(m).to_le_bytes());
        for j in 0..16 {
            out.push(block[j] | (block[j + 16] << 4));
        }
    }
    out
}

/// llama.cpp's converter permutation of q/k rows: within each head of `d` rows, row
/// `s d/2 + i` goes to `2 i + s`.
pub fn permute_rows(w: &[f64], heads: usize, cols: usize) -> Vec<f64> {
    let d = w.len() / cols / heads;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..d / 2 {
                let src = h * d + s * d / 2 + i;
                let dst = h * d + 2 * i + s;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The tiny model's merges (its vocabulary: 3 control tokens, the 256 byte characters, one
/// token per merge).
pub const TINY_MERGES: [&str; 6] = ["Ġ t", "h e", "Ġt he", "l l", "o w", "1 2"];

/// ChatML with a default system message.
pub const TINY_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Tokens and token types of the tiny vocabulary.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3; 3];
    tokens.extend(byte_alphabet().into_iter().map(String::from));
    types.extend([1; 256]);
    for m in TINY_MERGES {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types)
}

/// A HuggingFace tensor: name, shape, values.
pub type HfTensor = (String, Vec<usize>, Vec<f64>);

/// Turns values into a tensor's stored bytes.
type Encoder = Box<dyn Fn(&[f64]) -> Vec<u8>>;

/// A tiny LLaMA (2 layers, hidden 32, 4 heads over 2 key/value heads, FFN 64) whose weights
/// are exact in the types they are stored in (F32, F16, BF16, Q8_0, Q4_0, Q4_1), q/k rows
/// permuted as llama.cpp's converter does, plus three unused K-quant tensors. Returns the
/// writer and the HuggingFace-layout weights (name, shape, values).
pub fn tiny_llama(tied: bool, seed: u64) -> (Writer, Vec<HfTensor>) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (tokens, types) = tiny_vocab();
    let vocab = tokens.len();
    let (hidden, heads, kv_heads, ff, layers) = (32usize, 4usize, 2usize, 64usize, 2usize);
    let hd = hidden / heads;
    let mut w = Writer::new();
    w.kv("general.architecture", Val::str("llama"))
        .kv("general.name", Val::str("tiny"))
        .kv("general.alignment", Val::U32(32))
        .kv("llama.block_count", Val::U32(layers as u32))
        .kv("llama.context_length", Val::U64(64))
        .kv("llama.embedding_length", Val::U32(hidden as u32))
        .kv("llama.feed_forward_length", Val::U32(ff as u32))
        .kv("llama.attention.head_count", Val::U32(heads as u32))
        .kv("llama.attention.head_count_kv", Val::U32(kv_heads as u32))
        .kv("llama.rope.freq_base", Val::F32(10000.0))
        .kv("llama.rope.dimension_count", Val::U32(hd as u32))
        .kv("llama.attention.layer_norm_rms_epsilon", Val::F32(1e-5))
        .kv("test.u8", Val::U8(7))
        .kv("test.i8", Val::I8(-7))
        .kv("test.u16", Val::U16(700))
        .kv("test.i16", Val::I16(-700))
        .kv("test.i64", Val::I64(-70000))
        .kv("test.f64", Val::F64(0.25))
        .kv(
            "test.bools",
            Val::Arr(7, vec![Val::Bool(true), Val::Bool(false)]),
        )
        .kv("test.floats", Val::f32s(&[0.5, -1.5]))
        .kv(
            "test.u64s",
            Val::Arr(10, vec![Val::U64(1), Val::U64(u64::MAX)]),
        )
        .kv("tokenizer.ggml.model", Val::str("gpt2"))
        .kv("tokenizer.ggml.pre", Val::str("smollm"))
        .kv("tokenizer.ggml.tokens", Val::strs(&tokens))
        .kv("tokenizer.ggml.token_type", Val::i32s(&types))
        .kv("tokenizer.ggml.merges", Val::strs(&TINY_MERGES))
        .kv("tokenizer.ggml.bos_token_id", Val::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Val::U32(2))
        .kv("tokenizer.ggml.add_bos_token", Val::Bool(false))
        .kv("tokenizer.chat_template", Val::str(TINY_TEMPLATE));
    let mut hf = Vec::new();
    // (gguf name, hf name, rows, cols, type, permuted heads)
    let mut plan: Vec<(String, String, usize, usize, u32, usize)> = vec![(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        vocab,
        hidden,
        Q8_0,
        0,
    )];
    let mats = [
        (
            "attn_q",
            "self_attn.q_proj",
            hidden,
            hidden,
            [Q4_0, F16],
            heads,
        ),
        (
            "attn_k",
            "self_attn.k_proj",
            kv_heads * hd,
            hidden,
            [Q4_1, BF16],
            kv_heads,
        ),
        (
            "attn_v",
            "self_attn.v_proj",
            kv_heads * hd,
            hidden,
            [F16, Q8_0],
            0,
        ),
        (
            "attn_output",
            "self_attn.o_proj",
            hidden,
            hidden,
            [BF16, Q4_0],
            0,
        ),
        ("ffn_gate", "mlp.gate_proj", ff, hidden, [Q8_0, Q4_1], 0),
        ("ffn_up", "mlp.up_proj", ff, hidden, [F32, F16], 0),
        ("ffn_down", "mlp.down_proj", hidden, ff, [Q4_1, Q8_0], 0),
    ];
    for l in 0..layers {
        for (g, h, rows, cols, ty, ph) in mats {
            plan.push((
                format!("blk.{l}.{g}.weight"),
                format!("model.layers.{l}.{h}.weight"),
                rows,
                cols,
                ty[l],
                ph,
            ));
        }
        plan.push((
            format!("blk.{l}.attn_norm.weight"),
            format!("model.layers.{l}.input_layernorm.weight"),
            1,
            hidden,
            F32,
            0,
        ));
        plan.push((
            format!("blk.{l}.ffn_norm.weight"),
            format!("model.layers.{l}.post_attention_layernorm.weight"),
            1,
            hidden,
            F32,
            0,
        ));
    }
    plan.push((
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        1,
        hidden,
        F32,
        0,
    ));
    if !tied {
        plan.push((
            "output.weight".into(),
            "lm_head.weight".into(),
            vocab,
            hidden,
            F16,
            0,
        ));
    }
    for (g, h, rows, cols, ty, ph) in plan {
        let n = rows * cols;
        let norm = g.contains("norm");
        // values on each type's exact grid
        let (vals, data): (Vec<f64>, Encoder) = match ty {
            Q4_0 => {
                let q: Vec<u8> = (0..n).map(|_| rng.gen_range(0..16)).collect();
                let v = q.iter().map(|&q| (f64::from(q) - 8.0) / 16.0).collect();
                (
                    v,
                    Box::new(|v: &[f64]| {
                        let q: Vec<u8> = v.iter().map(|x| (x * 16.0 + 8.0) as u8).collect();
                        encode_q4_0(&q, 1.0 / 16.0)
                    }),
                )
            }
            Q4_1 => {
                let q: Vec<u8> = (0..n).map(|_| rng.gen_range(0..16)).collect();
                let v = q.iter().map(|&q| f64::from(q) / 32.0 - 0.25).collect();
                (
                    v,
                    Box::new(|v: &[f64]| {
                        let q: Vec<u8> = v
                            .iter()
                            .map(|x| ((x + 0.25) * 32.0).round() as u8)
                            .collect();
                        encode_q4_1(&q, 1.0 / 32.0, -0.25)
                    }),
                )
            }
            Q8_0 => {
                let v = (0..n)
                    .map(|_| f64::from(rng.gen_range(-100i32..=100)) / 256.0)
                    .collect();
                (
                    v,
                    Box::new(|v: &[f64]| {
                        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                        encode_q8_0(&f, 1.0 / 256.0)
                    }),
                )
            }
            _ => {
                let v = (0..n)
                    .map(|_| {
                        let x = f64::from(rng.gen_range(-32i32..=32)) / 128.0;
                        if norm {
                            1.0 + x
                        } else {
                            x
                        }
                    })
                    .collect();
                (
                    v,
                    Box::new(move |v: &[f64]| {
                        let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                        encode_floats(&f, ty)
                    }),
                )
            }
        };
        let stored = if ph > 0 {
            permute_rows(&vals, ph, cols)
        } else {
            vals.clone()
        };
        let dims: Vec<u64> = if rows == 1 {
            vec![cols as u64]
        } else {
            vec![cols as u64, rows as u64]
        };
        w.tensor(&g, &dims, ty, data(&stored));
        let shape = if rows == 1 {
            vec![cols]
        } else {
            vec![rows, cols]
        };
        hf.push((h, shape, vals));
    }
    // unused tensors of the K-quant types (random blocks with a small scale)
    for (name, ty, bytes) in [
        ("extra.q4k", Q4_K, 144usize),
        ("extra.q5k", Q5_K, 176),
        ("extra.q6k", Q6_K, 210),
    ] {
        let mut data: Vec<u8> = (0..2 * bytes).map(|_| rng.gen()).collect();
        for b in 0..2 {
            let at = if ty == Q6_K {
                b * bytes + 208
            } else {
                b * bytes
            };
            data[at..at + 2].copy_from_slice(&f16::from_f32(0.01).to_le_bytes());
        }
        w.tensor(name, &[256, 2], ty, data);
    }
    (w, hf)
}
