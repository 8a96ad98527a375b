//! Secure transformer non-linear operators on secret shares: GELU, SiLU, tanh, SoftMax,
//! LayerNorm, RMSNorm and Gaussian-kernel attention scores, each with typed approximation
//! choices (the published styles of BumbleBee, PUMA, BOLT and Iron, and the Duet default).

pub mod activation;
pub mod gaussian_attn;
pub mod norm;
pub mod softmax;
