//! Seeded mutation test of the GGUF reader: a tiny valid file is truncated, bit-flipped and
//! has its counts, lengths, types, offsets and dimensions rewritten; every mutant given to
//! the reader, the model, the tokenizer and the chat template must give an error or a valid
//! result: no panic, and no allocation beyond a bound (measured by a counting allocator).
//!
//! `DUET_GGUF_MUTATIONS` sets the number of cases (default 2,000) and `DUET_GGUF_SEED` the
//! seed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "suite/common/gguf_writer.rs"]
mod gguf_writer;

use duet_models::gguf::GgufFile;
use duet_models::{run_reference_outputs, GgufModel, TextTokenizer};
use gguf_writer::{tiny_llama, Field, FieldKind, Val, Writer};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts live bytes and the peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters are only
// updated on the side (test-only code; the library itself has no allocator).
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Most bytes one case may hold at once beyond what was live before it (the file is about
/// 40 kB; a count taken from the file unchecked would ask for gigabytes).
const MEMORY_BOUND: usize = 64 << 20;

/// Values worth writing into a count, length, type, dimension or offset field.
fn interesting(rng: &mut ChaCha8Rng, old: u64, file_len: u64) -> u64 {
    let pick = [
        0,
        1,
        2,
        3,
        4,
        5,
        7,
        8,
        9,
        12,
        13,
        14,
        30,
        31,
        32,
        33,
        255,
        256,
        u64::from(u32::MAX),
        1 << 31,
        1 << 32,
        (1 << 32) + 1,
        1 << 40,
        1 << 62,
        1 << 63,
        u64::MAX,
        u64::MAX - 1,
        file_len,
        file_len.wrapping_sub(1),
        file_len + 1,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        old / 2,
        old.wrapping_add(32),
        rng.gen(),
        rng.gen_range(0..file_len.max(1)),
    ];
    pick[rng.gen_range(0..pick.len())]
}

fn set_field(bytes: &mut [u8], f: &Field, v: u64) {
    let b = v.to_le_bytes();
    let w = f.width.min(8);
    if let Some(dst) = bytes.get_mut(f.pos..f.pos + w) {
        dst.copy_from_slice(&b[..w]);
    }
}

/// One random mutation of `bytes`.
fn mutate(rng: &mut ChaCha8Rng, bytes: &mut Vec<u8>, fields: &[Field]) -> String {
    let len = bytes.len();
    if len == 0 {
        bytes.push(rng.gen());
        return "one byte".into();
    }
    // fields still inside the (possibly already shortened) file
    let fields: Vec<&Field> = fields.iter().filter(|f| f.pos + f.width <= len).collect();
    if fields.is_empty() {
        bytes.truncate(rng.gen_range(0..len));
        return "truncate".into();
    }
    match rng.gen_range(0..10) {
        0 => {
            let cut = if rng.gen_bool(0.5) {
                // at a field boundary
                let f = fields[rng.gen_range(0..fields.len())];
                f.pos + rng.gen_range(0..f.width)
            } else {
                rng.gen_range(0..len)
            };
            bytes.truncate(cut);
            format!("truncate at {cut}")
        }
        1 | 2 => {
            let n = rng.gen_range(1..=8);
            for _ in 0..n {
                let i = rng.gen_range(0..len);
                bytes[i] ^= 1 << rng.gen_range(0..8);
            }
            format!("{n} bit flips")
        }
        3..=7 => {
            // a structural field: counts, lengths, types, dims, offsets
            let structural: Vec<&Field> = fields
                .iter()
                .copied()
                .filter(|f| f.kind != FieldKind::Scalar)
                .collect();
            let f = if structural.is_empty() || rng.gen_bool(0.1) {
                fields[rng.gen_range(0..fields.len())]
            } else {
                structural[rng.gen_range(0..structural.len())]
            };
            let old = {
                let mut b = [0u8; 8];
                b[..f.width.min(8)].copy_from_slice(&bytes[f.pos..f.pos + f.width.min(8)]);
                u64::from_le_bytes(b)
            };
            let v = interesting(rng, old, len as u64);
            set_field(bytes, f, v);
            format!("{:?} at {} from {old} to {v}", f.kind, f.pos)
        }
        8 => {
            let at = rng.gen_range(0..len);
            let n = rng.gen_range(1..64).min(len - at);
            for b in &mut bytes[at..at + n] {
                *b = rng.gen();
            }
            format!("{n} random bytes at {at}")
        }
        _ => {
            let at = rng.gen_range(0..len);
            if rng.gen_bool(0.5) {
                let n = rng.gen_range(1..16).min(len - at);
                bytes.drain(at..at + n);
                format!("delete {n} bytes at {at}")
            } else {
                let n = rng.gen_range(1..16);
                let ins: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                bytes.splice(at..at, ins);
                format!("insert {n} bytes at {at}")
            }
        }
    }
}

/// A random string: empty, ASCII, multi-byte, a special-looking token or a space.
fn random_string(rng: &mut ChaCha8Rng) -> String {
    let pool = [
        "",
        " ",
        "a",
        "Ġ",
        "Ġt",
        "he",
        "<|im_start|>",
        "<|im_end|>",
        "é",
        "12",
        "<0x41>",
        "▁",
        "ab cd",
        "<s>",
        "\u{0}",
        "{{",
        "'",
    ];
    (0..rng.gen_range(0..4))
        .map(|_| pool[rng.gen_range(0..pool.len())])
        .collect()
}

/// A metadata value of a random type.
fn random_val(rng: &mut ChaCha8Rng) -> Val {
    match rng.gen_range(0..9) {
        0 => Val::U32(interesting(rng, 3, 100) as u32),
        1 => Val::I32(rng.gen()),
        2 => Val::U64(interesting(rng, 3, 100)),
        3 => Val::F32(
            *[0.0f32, -1.0, 1e-5, 1e30, f32::NAN, f32::INFINITY]
                .get(rng.gen_range(0..6))
                .unwrap(),
        ),
        4 => Val::Bool(rng.gen()),
        5 => Val::Str(random_string(rng)),
        6 => Val::Arr(
            8,
            (0..rng.gen_range(0..5))
                .map(|_| Val::Str(random_string(rng)))
                .collect(),
        ),
        7 => Val::Arr(
            5,
            (0..rng.gen_range(0..5))
                .map(|_| Val::I32(rng.gen_range(-2..8)))
                .collect(),
        ),
        _ => Val::Arr(6, vec![Val::F32(rng.gen())]),
    }
}

/// A mutation of the file's content that keeps it well formed: odd metadata values,
/// vocabularies, merges, token types, special ids, templates, tensor types and shapes.
fn mutate_content(rng: &mut ChaCha8Rng, w: &mut Writer) -> String {
    let pick_key = |rng: &mut ChaCha8Rng, w: &Writer| w.kv[rng.gen_range(0..w.kv.len())].0.clone();
    match rng.gen_range(0..8) {
        0 => {
            let k = pick_key(rng, w);
            let v = random_val(rng);
            w.kv(&k, v);
            format!("metadata {k}")
        }
        1 | 2 => {
            let key = if rng.gen_bool(0.5) {
                "tokenizer.ggml.tokens"
            } else {
                "tokenizer.ggml.merges"
            };
            if let Some((_, Val::Arr(_, items))) = w.kv.iter_mut().find(|(k, _)| k == key) {
                for _ in 0..rng.gen_range(1..4) {
                    if items.is_empty() {
                        break;
                    }
                    let i = rng.gen_range(0..items.len());
                    match rng.gen_range(0..3) {
                        0 => items[i] = Val::Str(random_string(rng)),
                        1 => items.truncate(i),
                        _ => {
                            let j = rng.gen_range(0..items.len());
                            items[i] = items[j].clone();
                        }
                    }
                }
            }
            format!("entries of {key}")
        }
        3 => {
            if let Some((_, Val::Arr(_, items))) =
                w.kv.iter_mut()
                    .find(|(k, _)| k == "tokenizer.ggml.token_type")
            {
                for _ in 0..rng.gen_range(1..20) {
                    if items.is_empty() {
                        break;
                    }
                    let i = rng.gen_range(0..items.len());
                    items[i] = Val::I32(rng.gen_range(-1..8));
                }
            }
            "token types".into()
        }
        4 => {
            let (k, v) = match rng.gen_range(0..4) {
                0 => (
                    "tokenizer.ggml.pre",
                    ["default", "gpt-2", "llama-bpe", "qwen2", "x"][rng.gen_range(0..5)],
                ),
                1 => (
                    "tokenizer.ggml.model",
                    ["gpt2", "llama", "bert", ""][rng.gen_range(0..4)],
                ),
                2 => (
                    "general.architecture",
                    ["llama", "gpt2", ""][rng.gen_range(0..3)],
                ),
                _ => {
                    let t = gguf_writer::TINY_TEMPLATE;
                    let (a, b) = (rng.gen_range(0..t.len()), rng.gen_range(0..t.len()));
                    let cut = t.get(a.min(b)..a.max(b)).unwrap_or("");
                    w.kv("tokenizer.chat_template", Val::str(cut));
                    return "template".into();
                }
            };
            w.kv(k, Val::str(v));
            format!("{k} = {v}")
        }
        5 => {
            let k = [
                "tokenizer.ggml.bos_token_id",
                "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id",
            ][rng.gen_range(0..3)];
            w.kv(k, Val::U32(interesting(rng, 2, 300) as u32));
            w.kv("tokenizer.ggml.add_bos_token", Val::Bool(rng.gen()));
            k.to_string()
        }
        6 => {
            let i = rng.gen_range(0..w.tensors.len());
            w.tensors[i].ggml_type = [0, 1, 2, 3, 6, 8, 12, 13, 14, 30, 99][rng.gen_range(0..11)];
            format!("type of tensor {i}")
        }
        _ => {
            let i = rng.gen_range(0..w.tensors.len());
            let t = &mut w.tensors[i];
            if rng.gen_bool(0.5) {
                t.dims.reverse();
            } else {
                let d = rng.gen_range(0..t.dims.len());
                t.dims[d] = interesting(rng, t.dims[d], 64);
            }
            format!("dims of tensor {i}")
        }
    }
}

/// Everything a user does with a file; errors are fine, panics are not.
fn exercise(bytes: Vec<u8>) -> [bool; 3] {
    let name = Path::new("mutant.gguf");
    let Ok(file) = GgufFile::from_bytes(name, bytes) else {
        return [false; 3];
    };
    for t in file.tensors() {
        let _ = file.read_f64(&t.name);
    }
    let tok_ok = if let Ok(tok) = TextTokenizer::from_gguf_file(&file) {
        if let Ok(ids) = tok.encode("<|im_start|>user\nhello the 1212 wörld!<|im_end|>") {
            let _ = tok.decode(&ids);
        }
        let _ = tok.decode(&[0, 1, 2, 3, 300]);
        true
    } else {
        false
    };
    let mut model_ok = false;
    if let Ok(model) = GgufModel::from_file(file) {
        model_ok = true;
        let _ = model.chat_template().map(|c| c.render("hi"));
        let n = model.config.vocab_size as u32;
        let _ = run_reference_outputs(&model.graph, &model, &[1 % n, 5 % n, 7 % n]);
    }
    [true, tok_ok, model_ok]
}

#[test]
fn mutated_gguf_files_never_panic() {
    let cases: usize = std::env::var("DUET_GGUF_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let seed: u64 = std::env::var("DUET_GGUF_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6767_7566);
    let (w, _) = tiny_llama(false, 11);
    // the tokenizer reads a file that also has the SentencePiece keys
    let mut w = w;
    let n_tokens = gguf_writer::tiny_vocab().0.len();
    w.kv("tokenizer.ggml.scores", Val::f32s(&vec![-1.0; n_tokens]));
    let (base, fields) = w.write();
    assert_eq!(
        exercise(base.clone()),
        [true; 3],
        "the unmutated file is valid"
    );
    // the path through the memory map, once
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &base).unwrap();
    GgufModel::open(&path).unwrap();
    std::fs::write(&path, &base[..base.len() / 2]).unwrap();
    assert!(GgufModel::open(&path).is_err());

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut counts, mut worst) = ([0usize; 3], 0usize);
    let start = std::time::Instant::now();
    for case in 0..cases {
        let mut what = Vec::new();
        let (mut bytes, fields) = if rng.gen_bool(0.4) {
            let mut w = w.clone();
            for _ in 0..rng.gen_range(1..=2) {
                what.push(mutate_content(&mut rng, &mut w));
            }
            w.write()
        } else {
            (base.clone(), fields.clone())
        };
        for _ in 0..rng.gen_range(usize::from(!what.is_empty())..=2) {
            what.push(mutate(&mut rng, &mut bytes, &fields));
        }
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let mutant = bytes.clone();
        let r = std::panic::catch_unwind(move || exercise(mutant));
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        worst = worst.max(used);
        match r {
            Ok(ok) => counts
                .iter_mut()
                .zip(ok)
                .for_each(|(c, k)| *c += usize::from(k)),
            Err(_) => {
                let dump = std::env::temp_dir().join(format!("gguf-mutant-{seed}-{case}.gguf"));
                let _ = std::fs::write(&dump, &bytes);
                panic!(
                    "case {case} (seed {seed}: {what:?}) panicked; file in {}",
                    dump.display()
                );
            }
        }
        assert!(
            used <= MEMORY_BOUND,
            "case {case} (seed {seed}: {what:?}) held {used} bytes at once"
        );
    }
    println!(
        "{cases} mutants of a {}-byte file (seed {seed}): {} parsed, {} gave a tokenizer, {} \
         opened as a model, the rest refused with an error; no panic; at most {worst} bytes held \
         at once; {:.1} s",
        base.len(),
        counts[0],
        counts[1],
        counts[2],
        start.elapsed().as_secs_f64()
    );
}
