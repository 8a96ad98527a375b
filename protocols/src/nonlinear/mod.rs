//! Secure transformer non-linear operators on secret shares: GELU, SiLU, tanh, SoftMax,
//! LayerNorm, RMSNorm and Gaussian-kernel attention scores, each with typed approximation
//! choices (the published styles of BumbleBee, PUMA, BOLT and Iron, and the Duet default);
//! and the private next-token choice of generation ([`token_choice`]: greedy, sampling, logits).

pub mod activation;
pub mod gaussian_attn;
pub mod norm;
pub mod softmax;
pub mod token_choice;
