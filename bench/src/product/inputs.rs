//! The client's inputs of a model run: text lines (tokenized by the model's tokenizer), a file
//! of them, or seeded token ids; and a progress bar for long runs.

use crate::DuetError;
use duet_models::open::{PublicModel, BUILTIN_SEED};
use duet_models::secure::Progress;
use duet_models::{run_reference_outputs, Matrix, RandomWeights, WeightSource};
use rand::{Rng, SeedableRng};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

/// Seed of the token ids `--seq-len N` draws.
pub const IDS_SEED: u64 = 7;
/// Most inputs (lines) one run accepts.
pub const MAX_INPUTS: usize = 100_000;

fn usage(m: impl Into<String>) -> DuetError {
    DuetError::Usage(m.into())
}

/// Where the client's inputs come from.
#[derive(Clone, Debug)]
pub enum InputArg {
    /// `--text T`: one run per line of `T`.
    Text(String),
    /// `--text-file F`: one run per non-empty line of `F`.
    TextFile(PathBuf),
    /// `--seq-len N`: one run on `N` token ids drawn from a public seed.
    SeqLen(usize),
}

impl InputArg {
    /// From `--text` / `--text-file` / `--seq-len` (exactly one).
    pub fn from_cli(
        text: Option<String>,
        text_file: Option<PathBuf>,
        seq_len: Option<usize>,
    ) -> Result<Self, DuetError> {
        match (text, text_file, seq_len) {
            (Some(t), None, None) => Ok(Self::Text(t)),
            (None, Some(f), None) => Ok(Self::TextFile(f)),
            (None, None, Some(n)) => Ok(Self::SeqLen(n)),
            _ => Err(usage(
                "give exactly one of --text T, --text-file F or --seq-len N",
            )),
        }
    }

    /// Whether text is given (a model folder then needs its tokenizer).
    pub fn is_text(&self) -> bool {
        !matches!(self, InputArg::SeqLen(_))
    }
}

/// One input of a secure run.
#[derive(Clone, Debug)]
pub struct Input {
    /// The line of text, if the input was text.
    pub text: Option<String>,
    /// Its token ids.
    pub ids: Vec<u32>,
}

/// `n` token ids uniform in the vocabulary, from the public seed [`IDS_SEED`].
pub fn seeded_ids(n: usize, vocab: usize) -> Result<Vec<u32>, DuetError> {
    let vocab = u32::try_from(vocab)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| usage(format!("vocabulary of {vocab} tokens")))?;
    let mut rng = rand_chacha::ChaCha12Rng::seed_from_u64(IDS_SEED);
    Ok((0..n).map(|_| rng.gen_range(0..vocab)).collect())
}

/// The inputs, one per line of text (blank lines skipped). Text is tokenized with the
/// folder's `tokenizer.json`; a built-in model has no tokenizer, so each UTF-8 byte `b` of the
/// line becomes token id `b mod vocab` (every built-in's vocabulary exceeds 256, so ids are
/// the bytes themselves).
pub fn resolve_inputs(model: &PublicModel, arg: &InputArg) -> Result<Vec<Input>, DuetError> {
    let c = &model.graph.config;
    let text = match arg {
        InputArg::SeqLen(n) => {
            if *n == 0 || *n > c.max_positions {
                return Err(usage(format!(
                    "--seq-len {n}: the model takes 1 to {} tokens",
                    c.max_positions
                )));
            }
            return Ok(vec![Input {
                text: None,
                ids: seeded_ids(*n, c.vocab_size)?,
            }]);
        }
        InputArg::Text(t) => t.clone(),
        InputArg::TextFile(f) => std::fs::read_to_string(f)
            .map_err(|e| usage(format!("cannot read the text file {}: {e}", f.display())))?,
    };
    let vocab = u32::try_from(c.vocab_size)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| usage(format!("vocabulary of {} tokens", c.vocab_size)))?;
    let mut out = Vec::new();
    // errors name a line by its number: its text is the client's private input
    for (number, line) in text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .enumerate()
        .map(|(i, l)| (i + 1, l))
    {
        if line.trim().is_empty() {
            continue;
        }
        let ids = match &model.tokenizer {
            // the tokenizer's message may quote the text
            Some(t) => t.encode(line).map_err(|_| {
                usage(format!(
                    "line {number} of the input cannot be tokenized by the model's tokenizer"
                ))
            })?,
            None => line.bytes().map(|b| u32::from(b) % vocab).collect(),
        };
        if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
            return Err(usage(format!(
                "the tokenizer gave id {bad} for line {number} of the input, outside the model's vocabulary of {vocab}; tokenizer.json and config.json do not match"
            )));
        }
        if ids.is_empty() || ids.len() > c.max_positions {
            return Err(usage(format!(
                "line {number} of the input is {} tokens; the model takes 1 to {}",
                ids.len(),
                c.max_positions
            )));
        }
        out.push(Input {
            text: Some(line.to_string()),
            ids,
        });
    }
    if out.is_empty() {
        return Err(usage("no input: the text has no non-empty line"));
    }
    if out.len() > MAX_INPUTS {
        return Err(usage(format!("more than {MAX_INPUTS} input lines")));
    }
    Ok(out)
}

/// A one-line progress bar on stderr, shown only when stderr is a terminal (the `indicatif`
/// crate is not in the offline registry, so this is a minimal one of our own).
#[derive(Debug)]
pub struct ProgressLine {
    enabled: bool,
    label: String,
}

impl ProgressLine {
    /// A bar labelled `label`; `wanted = false` (e.g. under `--json`) silences it.
    pub fn new(wanted: bool, label: &str) -> Self {
        Self {
            enabled: wanted && std::io::stderr().is_terminal(),
            label: label.to_string(),
        }
    }

    /// Draws the state after one node.
    pub fn update(&mut self, p: Progress<'_>) {
        if !self.enabled {
            return;
        }
        const WIDTH: usize = 30;
        let filled = (p.done * WIDTH)
            .checked_div(p.total)
            .unwrap_or(WIDTH)
            .min(WIDTH);
        let mut err = std::io::stderr().lock();
        // A failed write to the terminal only loses the bar.
        let _ = write!(
            err,
            "\r\x1b[2K{} [{}{}] {}/{} {}",
            self.label,
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            p.done,
            p.total,
            p.node
        );
        let _ = err.flush();
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.enabled {
            eprintln!();
        }
    }
}

/// What the plaintext reference executor computes for one input: the last hidden state and,
/// for decoders, the last position's logits.
#[derive(Clone, Debug)]
pub struct Reference {
    /// `tokens x hidden`.
    pub hidden: Matrix,
    /// `vocab`, for graphs with a language-model head.
    pub logits: Option<Vec<f64>>,
}

/// The f64 reference executor's outputs for `weights`, one per input.
pub fn references<'a>(
    graph: &duet_models::Graph,
    weights: &dyn WeightSource,
    inputs: impl Iterator<Item = &'a Input>,
) -> Result<Vec<Reference>, DuetError> {
    inputs
        .map(|i| {
            let (hidden, logits) = run_reference_outputs(graph, &Dyn(weights), &i.ids)?;
            Ok(Reference { hidden, logits })
        })
        .collect()
}

/// A `&dyn WeightSource` as a sized `WeightSource`.
struct Dyn<'a>(&'a dyn WeightSource);

impl WeightSource for Dyn<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> duet_models::Result<Vec<f64>> {
        self.0.get(name, shape)
    }
}

/// [`references`] for a built-in model's public seeded weights ([`BUILTIN_SEED`]).
pub fn builtin_references<'a>(
    graph: &duet_models::Graph,
    inputs: impl Iterator<Item = &'a Input>,
) -> Result<Vec<Reference>, DuetError> {
    references(graph, &RandomWeights { seed: BUILTIN_SEED }, inputs)
}
