//! GGUF files written by the test writer: a tiny LLaMA in every dense and 32-value type the
//! reader dequantizes gives exactly the HuggingFace-layout model's outputs; the tokenizer and
//! chat template from the metadata; clear errors for malformed files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use crate::common::gguf_writer;

use duet_models::gguf::{GgmlType, GgufFile, MetaValue};
use duet_models::{
    run_reference_outputs, ChatTemplate, GgufModel, ModelError, Result, TextTokenizer, WeightSource,
};
use gguf_writer::{tiny_llama, tiny_vocab, Val, Writer};
use std::collections::HashMap;
use std::path::Path;

/// The HuggingFace-layout weights, with a tied head reading the embedding.
struct HfWeights(HashMap<String, (Vec<usize>, Vec<f64>)>);

impl WeightSource for HfWeights {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f64>> {
        let name = if name == "lm_head.weight" && !self.0.contains_key(name) {
            "model.embed_tokens.weight"
        } else {
            name
        };
        let (s, v) = self.0.get(name).expect(name);
        assert_eq!(s, shape, "{name}");
        Ok(v.clone())
    }
}

fn parse(w: &Writer) -> Result<GgufFile> {
    GgufFile::from_bytes(Path::new("tiny.gguf"), w.write().0)
}

fn model(w: &Writer) -> Result<GgufModel> {
    GgufModel::from_file(parse(w)?)
}

#[test]
fn tiny_model_equals_its_huggingface_weights() {
    for tied in [false, true] {
        let (w, hf) = tiny_llama(tied, 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.gguf");
        std::fs::write(&path, w.write().0).unwrap();
        let m = GgufModel::open(&path).unwrap();
        assert_eq!(m.tied_head(), tied);
        let c = &m.config;
        assert_eq!(
            (c.layers, c.hidden, c.heads, c.kv_heads, c.intermediate),
            (2, 32, 4, 2, 64)
        );
        assert_eq!((c.vocab_size, c.max_positions), (tiny_vocab().0.len(), 64));
        assert_eq!((c.rope_theta, c.norm_eps), (10000.0, f64::from(1e-5f32)));
        // every weight, q/k rows un-permuted, equals the HuggingFace tensor exactly
        for (name, shape, vals) in &hf {
            assert_eq!(&m.get(name, shape).unwrap(), vals, "{name}");
        }
        let hf = HfWeights(hf.into_iter().map(|(n, s, v)| (n, (s, v))).collect());
        for ids in [
            vec![1u32, 40, 70, 263, 5],
            vec![7],
            vec![264, 3, 3, 100, 12, 0, 2],
        ] {
            let (h1, l1) = run_reference_outputs(&m.graph, &m, &ids).unwrap();
            let (h2, l2) = run_reference_outputs(&m.graph, &hf, &ids).unwrap();
            assert_eq!(h1, h2);
            assert_eq!(l1, l2);
            assert!(l1.unwrap().iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn metadata_values_of_every_type() {
    let (w, _) = tiny_llama(false, 1);
    let f = parse(&w).unwrap();
    assert_eq!((f.version(), f.alignment()), (3, 32));
    assert_eq!(f.get("test.u8"), Some(&MetaValue::U8(7)));
    assert_eq!(f.get("test.i8"), Some(&MetaValue::I8(-7)));
    assert_eq!(f.get("test.u16"), Some(&MetaValue::U16(700)));
    assert_eq!(f.get("test.i16"), Some(&MetaValue::I16(-700)));
    assert_eq!(f.get("test.i64"), Some(&MetaValue::I64(-70000)));
    assert_eq!(f.get_f64("test.f64").unwrap(), Some(0.25));
    assert_eq!(f.get_u64("llama.context_length").unwrap(), Some(64));
    assert_eq!(
        f.get_float_array("test.floats").unwrap(),
        Some(&[0.5, -1.5][..])
    );
    assert!(f.get_u64("test.i8").is_err(), "negative as u64");
    assert!(f.get_str("test.u8").is_err(), "wrong type");
    assert_eq!(f.get_str("absent").unwrap(), None);
    let t = f.tensor("extra.q6k").unwrap();
    assert_eq!((t.ggml_type, t.shape()), (GgmlType::Q6K, vec![2, 256]));
    for t in f.tensors() {
        let v = f.read_f64(&t.name).unwrap();
        assert_eq!(v.len() as u64, t.n_values);
    }
    // version 2 reads the same
    let mut w2 = w.clone();
    w2.version = 2;
    assert_eq!(parse(&w2).unwrap().tensors().len(), f.tensors().len());
}

#[test]
fn tokenizer_and_chat_template_from_metadata() {
    let (w, _) = tiny_llama(true, 2);
    let m = model(&w).unwrap();
    let tok = m.tokenizer().unwrap();
    assert_eq!((tok.bos(), tok.eos()), (Some(1), Some(2)));
    let byte = |c: char| 3 + c as u32;
    let (ll, the, twelve) = (262, 261, 264);
    // smollm: digits one by one, then the GPT-2 split; control tokens in the text
    let text = "<|im_start|>hello the 1212<|im_end|>";
    let ids = tok.encode(text).unwrap();
    let want = [
        vec![1, 260, ll, byte('o'), the, byte(' ')],
        "1212".chars().map(byte).collect(),
        vec![2],
    ]
    .concat();
    assert_eq!(ids, want);
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert!(tok.decode(&[100_000]).is_err());
    // the other pre-tokenizers split "1212" differently
    let digits = |pre: &str| {
        let mut w = w.clone();
        w.kv("tokenizer.ggml.pre", Val::str(pre));
        let f = parse(&w).unwrap();
        TextTokenizer::from_gguf_file(&f)
            .unwrap()
            .encode("1212")
            .unwrap()
    };
    assert_eq!(digits("gpt-2"), vec![twelve, twelve]);
    assert_eq!(digits("llama-bpe"), vec![twelve, byte('1'), byte('2')]);
    assert_eq!(digits("default"), vec![twelve, byte('1'), byte('2')]);
    assert_eq!(
        digits("qwen2"),
        "1212".chars().map(byte).collect::<Vec<_>>()
    );
    // add_bos_token
    let mut wb = w.clone();
    wb.kv("tokenizer.ggml.add_bos_token", Val::Bool(true));
    let tb = TextTokenizer::from_gguf_file(&parse(&wb).unwrap()).unwrap();
    assert_eq!(tb.encode("ll").unwrap(), vec![1, ll]);
    // chat template: ChatML with the template's own default system message
    let chat = m.chat_template().unwrap();
    assert_eq!(chat.default_system(), Some("Be brief."));
    assert_eq!(
        chat.render("Hi"),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let ids = tok.encode(&chat.render("Hi")).unwrap();
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 2);
}

#[test]
fn sentencepiece_tokenizer() {
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32; 3];
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (p, s) in [
        ("▁", -10.0),
        ("h", -10.0),
        ("e", -10.0),
        ("l", -10.0),
        ("o", -10.0),
        ("▁h", -1.0),
        ("ll", -2.0),
        ("lo", -2.5),
        ("▁he", -3.0),
        ("▁hell", -4.0),
    ] {
        tokens.push(p.to_string());
        types.push(1);
        scores.push(s);
    }
    let id = |p: &str| tokens.iter().position(|t| t == p).unwrap() as u32;
    let mut w = Writer::new();
    w.kv("tokenizer.ggml.model", Val::str("llama"))
        .kv("tokenizer.ggml.tokens", Val::strs(&tokens))
        .kv("tokenizer.ggml.token_type", Val::i32s(&types))
        .kv("tokenizer.ggml.scores", Val::f32s(&scores))
        .kv("tokenizer.ggml.bos_token_id", Val::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Val::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", Val::U32(0));
    let tok = TextTokenizer::from_gguf_file(&parse(&w).unwrap()).unwrap();
    // best-scored pair first: ▁h, ll, ▁he, ▁hell; "é" falls back to its UTF-8 bytes
    let ids = tok.encode("hello é").unwrap();
    assert_eq!(
        ids,
        vec![1, id("▁hell"), id("o"), id("▁"), id("<0xC3>"), id("<0xA9>")]
    );
    assert_eq!(tok.decode(&ids[1..]).unwrap(), "hello é");
    assert_eq!(tok.bos(), Some(1));
}

fn reason(e: ModelError) -> String {
    let s = e.to_string();
    assert!(s.contains("tiny.gguf"), "error names the file: {s}");
    s
}

#[test]
fn malformed_files_give_clear_errors() {
    let (w, _) = tiny_llama(false, 3);
    let (bytes, _) = w.write();
    let err = |b: Vec<u8>| reason(GgufFile::from_bytes(Path::new("tiny.gguf"), b).unwrap_err());
    let mut b = bytes.clone();
    b[0] = b'X';
    assert!(err(b).contains("not a GGUF file"));
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert!(err(b).contains("version 1"));
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert!(err(b).contains("big-endian"));
    let mut b = bytes.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(err(b).contains("exceeds the limit"));
    let mut b = bytes.clone();
    b[16..24].copy_from_slice(&60_000u64.to_le_bytes());
    assert!(err(b).contains("truncated"));
    assert!(err(bytes[..bytes.len() - 40].to_vec()).contains("lies outside the file"));
    assert!(err(bytes[..100].to_vec()).contains("truncated"));
    assert!(err(Vec::new()).contains("truncated"));

    let edit = |f: &dyn Fn(&mut Writer)| {
        let mut w = w.clone();
        f(&mut w);
        w
    };
    let s = reason(parse(&edit(&|w| w.tensors[3].ggml_type = 6)).unwrap_err());
    assert!(s.contains("ggml type 6"), "{s}");
    let s = reason(parse(&edit(&|w| w.tensors[1].dims = vec![31, 2])).unwrap_err());
    assert!(s.contains("multiple"), "{s}");
    let s = reason(parse(&edit(&|w| w.tensors[2].dims = vec![32, 0])).unwrap_err());
    assert!(s.contains("dimension 0"), "{s}");
    let s = reason(parse(&edit(&|w| w.tensors[1].dims = vec![32; 5])).unwrap_err());
    assert!(s.contains("5 dimensions"), "{s}");
    let s = reason(
        parse(&edit(&|w| {
            w.kv("general.alignment", Val::U32(48));
        }))
        .unwrap_err(),
    );
    assert!(s.contains("power of two"), "{s}");
    let s = reason(
        parse(&edit(&|w| {
            w.kv.push(("general.name".into(), Val::str("again")));
        }))
        .unwrap_err(),
    );
    assert!(s.contains("duplicate"), "{s}");
    let s = reason(parse(&edit(&|w| w.tensors[4].name = w.tensors[5].name.clone())).unwrap_err());
    assert!(s.contains("duplicate tensor"), "{s}");
    let s = reason(
        parse(&edit(&|w| {
            w.kv("test.nested", Val::Arr(9, vec![]));
        }))
        .unwrap_err(),
    );
    assert!(s.contains("nested"), "{s}");

    // the model: missing tensor, wrong shape, architecture, unsupported features
    let missing = edit(&|w| w.tensors.retain(|t| t.name != "blk.1.ffn_up.weight"));
    match model(&missing).unwrap_err() {
        ModelError::MissingTensor { name, .. } => assert_eq!(name, "blk.1.ffn_up.weight"),
        e => panic!("{e}"),
    }
    let reshaped = edit(&|w| {
        let t = w
            .tensors
            .iter_mut()
            .find(|t| t.name == "blk.0.attn_q.weight")
            .unwrap();
        t.dims = vec![64, 16];
    });
    match model(&reshaped).unwrap_err() {
        ModelError::Shape {
            name,
            expected,
            got,
            ..
        } => {
            assert_eq!(
                (name.as_str(), expected, got),
                ("blk.0.attn_q.weight", vec![32, 32], vec![16, 64])
            );
        }
        e => panic!("{e}"),
    }
    let gpt2 = edit(&|w| {
        w.kv("general.architecture", Val::str("gpt2"));
    });
    let s = reason(model(&gpt2).unwrap_err());
    assert!(s.contains("\"gpt2\" is not supported"), "{s}");
    for (key, v, what) in [
        ("llama.rope.dimension_count", Val::U32(4), "head width"),
        ("llama.attention.head_count", Val::U32(5), "multiple"),
        ("llama.attention.head_count_kv", Val::U32(3), "multiple"),
        ("llama.block_count", Val::U32(0), "expected 1"),
        (
            "llama.embedding_length",
            Val::Str("32".into()),
            "expected an integer",
        ),
        (
            "llama.rope.scaling.type",
            Val::str("linear"),
            "not supported",
        ),
    ] {
        let mut w = w.clone();
        w.kv(key, v);
        if key == "llama.rope.scaling.type" {
            w.kv("llama.rope.scaling.factor", Val::F32(4.0));
        }
        let s = reason(model(&w).unwrap_err());
        assert!(s.contains(what), "{key}: {s}");
    }

    // tokenizer and chat template
    let tok_err = |f: &dyn Fn(&mut Writer)| {
        let w = edit(f);
        reason(TextTokenizer::from_gguf_file(&parse(&w).unwrap()).unwrap_err())
    };
    assert!(tok_err(&|w| {
        w.kv("tokenizer.ggml.model", Val::str("bert"));
    })
    .contains("unsupported tokenizer model \"bert\""));
    assert!(tok_err(&|w| {
        w.kv("tokenizer.ggml.pre", Val::str("mystery"));
    })
    .contains("unsupported pre-tokenizer"));
    assert!(tok_err(&|w| {
        w.kv("tokenizer.ggml.merges", Val::strs(&["Ġt he x"]));
    })
    .contains("merge 0"));
    assert!(tok_err(&|w| {
        w.kv("tokenizer.ggml.eos_token_id", Val::U32(100_000));
    })
    .contains("outside the vocabulary"));
    assert!(tok_err(&|w| {
        w.kv("tokenizer.ggml.token_type", Val::i32s(&[1, 2]));
    })
    .contains("token types"));
    let chat = edit(&|w| {
        w.kv(
            "tokenizer.chat_template",
            Val::str("{{ bos_token }}[INST] {{ messages[0]['content'] }} [/INST]"),
        );
    });
    let s = reason(model(&chat).unwrap().chat_template().unwrap_err());
    assert!(s.contains("ChatML"), "{s}");
    assert!(ChatTemplate::parse("{{ x }}").is_err());

    // a missing file names the path
    let e = GgufModel::open(Path::new("/nonexistent/tiny.gguf")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/tiny.gguf"));
}
