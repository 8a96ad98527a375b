//! Secure text generation on a [`Client`] session: a prefill of the prompt, then one decode
//! step per new token, each layer's keys and values kept shared on both sides between steps
//! (a [`crate::walk::WalkState`] per party). The chosen token goes back in as the next step's
//! private input: the server learns only that one more position is processed.
//!
//! What the client learns per step is its [`TokenChoice`]'s [`TokenChoice::reveals`]: the
//! token id (greedy, sampling), or the logits (explicit opt-in; the next token is then the
//! largest logit, taken in the clear). The server learns the prompt length and the number of
//! steps: stopping at an end-of-sequence token therefore tells it when generation stopped
//! (the output's length); [`GenerateOptions::stop`] empty runs every step.
//!
//! [`predict_generation`] is the same sequence of requests on the cost backend: the prefill
//! and every step, exact in bytes.

use crate::graph::Graph;
use crate::secure::predict::Prediction;
use crate::session::{run_request, Client, Reveal, SecureReport, TokenChoice};
use crate::walk::{Progress, WalkState};
use crate::{ModelError, Result};
use duet_protocols::cost_model::MachineProfile;
use duet_protocols::{CostBackend, SecureOptions, Tokens};
use duet_transport::Channel;
use serde::Serialize;

/// Most new tokens one generation takes.
pub const MAX_NEW_TOKENS: usize = 1 << 16;

/// How to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most new tokens (at least 1).
    pub max_new_tokens: usize,
    /// How each token is chosen.
    pub choice: TokenChoice,
    /// Token ids that end generation when chosen (e.g. the model's end-of-sequence); empty:
    /// always `max_new_tokens` steps, so the server does not learn the output's length.
    pub stop: Vec<u32>,
}

impl GenerateOptions {
    /// Greedy, at most `max_new_tokens`, stopping at `stop`.
    pub fn greedy(max_new_tokens: usize, stop: Vec<u32>) -> Self {
        Self {
            max_new_tokens,
            choice: TokenChoice::Greedy,
            stop,
        }
    }

    fn check(&self) -> Result<()> {
        if self.max_new_tokens == 0 || self.max_new_tokens > MAX_NEW_TOKENS {
            return Err(ModelError::Input(format!(
                "max new tokens {} (1..={MAX_NEW_TOKENS})",
                self.max_new_tokens
            )));
        }
        self.choice.validate().map_err(|e| ModelError::Secure {
            node: "token choice".into(),
            source: e,
        })
    }
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum StopReason {
    /// A stop token was chosen (it is the last generated token).
    StopToken,
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// The model's context is full.
    Context,
}

/// The result of [`Client::generate`].
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    /// The public prefix's length (0 without one).
    pub prefix_len: usize,
    /// The server's plaintext seconds for the public prefix, as it reported them.
    pub prefix_seconds: f64,
    /// The prompt's ids (the private part after the prefix).
    pub prompt: Vec<u32>,
    /// The generated ids (a stop token included).
    pub tokens: Vec<u32>,
    /// With [`TokenChoice::Logits`]: the logits revealed at each step.
    pub logits: Vec<Vec<f64>>,
    /// The prefill's report (the session's setup in it when it was the first request).
    pub prefill: SecureReport,
    /// One report per decode step.
    pub steps: Vec<SecureReport>,
    /// Why it ended.
    pub stop: StopReason,
}

/// A fresh seed per step from the client's seed (splitmix64).
fn step_choice(choice: &TokenChoice, step: u64) -> TokenChoice {
    match choice {
        TokenChoice::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        } => {
            let mut z = seed.wrapping_add(step.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            TokenChoice::Sample {
                temperature: *temperature,
                top_k: *top_k,
                top_p: *top_p,
                seed: z ^ (z >> 31),
            }
        }
        other => other.clone(),
    }
}

/// The largest logit's index (lowest among ties).
fn argmax(logits: &[f64]) -> Option<u32> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}

impl<C: Channel> Client<'_, C> {
    /// Generates up to `opts.max_new_tokens` tokens after `prompt` (see the module
    /// documentation); `on_token` is called with each token as soon as it is known.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32),
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Generation> {
        self.generate_after(&[], prompt, opts, on_token, progress)
    }

    /// [`Client::generate`] after a public `prefix` (ids both parties know; empty: none): the
    /// server runs the prefix in the clear ([`Client::prefix`]), then the private `prompt`
    /// is prefilled after it and generation goes on as usual.
    pub fn generate_after(
        &mut self,
        prefix: &[u32],
        prompt: &[u32],
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(u32),
        progress: &mut dyn FnMut(Progress<'_>),
    ) -> Result<Generation> {
        opts.check()?;
        let max_pos = self.graph().config.max_positions;
        if prompt.is_empty() || prefix.len() + prompt.len() >= max_pos {
            return Err(ModelError::Input(format!(
                "a prompt of {} tokens after a prefix of {} (1..{max_pos} in all)",
                prompt.len(),
                prefix.len()
            )));
        }
        let reveal_at = |step: u64| match &opts.choice {
            TokenChoice::Logits => Reveal::Logits,
            c => Reveal::Token(step_choice(c, step)),
        };
        let next = |out: &crate::session::SecureOutput| -> Result<u32> {
            out.token
                .or_else(|| out.logits.as_deref().and_then(argmax))
                .ok_or_else(|| ModelError::Input("the step revealed no token".into()))
        };
        let prefix_seconds = if prefix.is_empty() {
            0.0
        } else {
            self.prefix(prefix)?
        };
        let (out, prefill) = if prefix.is_empty() {
            self.prefill(prompt, &reveal_at(0), progress)?
        } else {
            self.extend(prompt, &reveal_at(0), progress)?
        };
        let first = next(&out)?;
        let mut tokens = vec![first];
        let mut logits: Vec<Vec<f64>> = out.logits.into_iter().collect();
        let mut steps = Vec::new();
        on_token(first);
        let stop = loop {
            let last = tokens.last().copied().unwrap_or(first);
            if opts.stop.contains(&last) {
                break StopReason::StopToken;
            }
            if tokens.len() >= opts.max_new_tokens {
                break StopReason::MaxTokens;
            }
            if self.position() >= max_pos {
                break StopReason::Context;
            }
            let (out, report) = self.extend(&[last], &reveal_at(tokens.len() as u64), progress)?;
            let t = next(&out)?;
            on_token(t);
            tokens.push(t);
            logits.extend(out.logits);
            steps.push(report);
        };
        Ok(Generation {
            prefix_len: prefix.len(),
            prefix_seconds,
            prompt: prompt.to_vec(),
            tokens,
            logits,
            prefill,
            steps,
            stop,
        })
    }
}

/// The prediction of a generation: the prefill and each decode step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationPrediction {
    /// Setup.
    pub setup: duet_protocols::Estimate,
    /// The prefill of the prompt.
    pub prefill: Prediction,
    /// One per decode step.
    pub steps: Vec<Prediction>,
}

/// Predicts a generation of `new_tokens` tokens (`new_tokens - 1` decode steps after the
/// prefill, none stopping early) after a prompt of `prompt_len` tokens: the same requests as
/// [`Client::generate`] on [`CostBackend`].
pub fn predict_generation(
    graph: &Graph,
    prompt_len: usize,
    new_tokens: usize,
    opts: &SecureOptions,
    choice: &TokenChoice,
    profile: &MachineProfile,
) -> Result<GenerationPrediction> {
    predict_generation_after(graph, 0, prompt_len, new_tokens, opts, choice, profile)
}

/// [`predict_generation`] after a public prefix of `prefix_len` tokens (run by the server in
/// the clear: not in the prediction, which covers the secure requests).
pub fn predict_generation_after(
    graph: &Graph,
    prefix_len: usize,
    prompt_len: usize,
    new_tokens: usize,
    opts: &SecureOptions,
    choice: &TokenChoice,
    profile: &MachineProfile,
) -> Result<GenerationPrediction> {
    let max_pos = graph.config.max_positions;
    if prompt_len == 0 || new_tokens == 0 || prefix_len + prompt_len + new_tokens - 1 > max_pos {
        return Err(ModelError::Input(format!(
            "a prompt of {prompt_len} tokens and {new_tokens} new ones (the model takes {max_pos})"
        )));
    }
    let mut b = CostBackend::new(opts, profile).map_err(|e| ModelError::Secure {
        node: "setup".into(),
        source: e,
    })?;
    let reveal = match choice {
        TokenChoice::Logits => Reveal::Logits,
        c => Reveal::Token(c.public()),
    };
    let mut state = if prefix_len == 0 {
        WalkState::new()
    } else {
        crate::prefix::public_prefix(graph, prefix_len)?
    };
    let mut out = GenerationPrediction {
        setup: b.setup(),
        ..GenerationPrediction::default()
    };
    for step in 0..new_tokens {
        let n = if step == 0 { prompt_len } else { 1 };
        run_request(
            &mut b,
            graph,
            None,
            Tokens::Count(n),
            Some(&mut state),
            &reveal,
            &mut |_| {},
        )?;
        let mut p = Prediction::default();
        p.add_records(&mut b);
        if step == 0 {
            out.prefill = p;
        } else {
            out.steps.push(p);
        }
    }
    Ok(out)
}
