//! The encrypted KV cache of generation in [`SecureBackend`]: one [`HeKvCache`] per attention
//! layer (by node name), and the reverse key setup it needs (the server's own RLWE key, its
//! public and Galois keys sent to the client once, at the first step that uses the cache).
//!
//! Security and cost: [`HeKvCache`]'s (`protocols/src/matmul/kv_cache.rs`); the reverse setup
//! costs [`HeKvCache::setup_cost`] once per session, in the node that first uses the cache.

use super::{Keys, SecureBackend};
use crate::matmul::{HeKvCache, KvKeys, KvPolicy, KvSpec};
use crate::plan::KvCacheMode;
use crate::{HeClientSetup, HeServerSetup, ProtocolError, Result};
use duet_mpc::AShare;
use duet_transport::{Channel, Role};

/// The keys of the direction opposite to the session's: the server's own key (at the server)
/// or the server's public material (at the client).
pub(super) enum KvReverse {
    Client(HeServerSetup),
    Server(HeClientSetup),
}

/// The cache policy of `mode`, or an error when the plan keeps the cache as shares.
pub(crate) fn kv_policy(mode: KvCacheMode) -> Result<KvPolicy> {
    match mode {
        KvCacheMode::Encrypted(p) => Ok(p),
        KvCacheMode::Shares => Err(ProtocolError::Config(
            "the plan keeps the KV cache as shares: no encrypted cache to use".into(),
        )),
    }
}

/// This party's own key and the peer's public material for the cache: the session's shared
/// product keys in one direction, the reverse setup's in the other.
fn kv_keys<'a>(keys: &'a Keys, rev: Option<&'a KvReverse>) -> Result<KvKeys<'a>> {
    match (keys, rev) {
        (Keys::Client { shared, .. }, Some(KvReverse::Client(peer))) => KvKeys::new(shared, peer),
        (Keys::Server { shared, .. }, Some(KvReverse::Server(own))) => KvKeys::new(own, shared),
        _ => Err(ProtocolError::Config(
            "KV cache keys of the wrong role".into(),
        )),
    }
}

impl<C: Channel> SecureBackend<C> {
    /// The parameters of the cache: the session's shared-product parameters.
    fn kv_params(&self) -> std::sync::Arc<duet_fhe::RlweParameters> {
        match &self.keys {
            Keys::Client { shared, .. } => shared.params.clone(),
            Keys::Server { shared, .. } => shared.params.clone(),
        }
    }

    /// Runs the reverse key setup once.
    fn kv_setup(&mut self) -> Result<()> {
        if self.kv_rev.is_some() {
            return Ok(());
        }
        let params = self.kv_params();
        self.kv_rev = Some(match self.role {
            Role::Server => {
                KvReverse::Server(HeClientSetup::run(&mut self.ch, &params, &mut self.rng)?)
            }
            Role::Client => KvReverse::Client(HeServerSetup::run(&mut self.ch, &params)?),
        });
        Ok(())
    }

    /// [`super::super::Backend::kv_scores`] on shares.
    pub(super) fn kv_scores_shares(
        &mut self,
        cache: &str,
        spec: KvSpec,
        start: usize,
        q: &AShare,
        k: &AShare,
        v: &AShare,
    ) -> Result<AShare> {
        let policy = kv_policy(self.opts.plan.kv_cache)?;
        self.kv_setup()?;
        let params = self.kv_params();
        if start == 0 || !self.kv.contains_key(cache) {
            // a new generation (position 0) starts an empty cache
            if start != 0 {
                return Err(ProtocolError::Config(format!(
                    "{cache}: no encrypted cache for a block at position {start}"
                )));
            }
            self.kv
                .insert(cache.to_string(), HeKvCache::new(spec, policy, &params)?);
        }
        let c = self
            .kv
            .get_mut(cache)
            .ok_or_else(|| ProtocolError::Config(format!("{cache}: no encrypted cache")))?;
        if c.len() != start || c.spec() != spec || c.policy() != policy {
            return Err(ProtocolError::Config(format!(
                "{cache}: the encrypted cache holds {} positions, the block starts at {start}",
                c.len()
            )));
        }
        c.append(k.data(), v.data())?;
        let r = c.step_rows();
        let keys = kv_keys(&self.keys, self.kv_rev.as_ref())?;
        let s = c.scores(&mut self.ch, &keys, q.data(), &mut self.rng)?;
        let ctx = c.len();
        self.share(spec.heads * r, ctx, s)
    }

    /// [`super::super::Backend::kv_context`] on shares.
    pub(super) fn kv_context_shares(&mut self, cache: &str, p: &AShare) -> Result<AShare> {
        let c = self
            .kv
            .get_mut(cache)
            .ok_or_else(|| ProtocolError::Config(format!("{cache}: no encrypted cache")))?;
        let (spec, r) = (c.spec(), c.step_rows());
        let keys = kv_keys(&self.keys, self.kv_rev.as_ref())?;
        let z = c.context(&mut self.ch, &keys, p.data(), &mut self.rng)?;
        self.share(spec.heads * r, spec.head_dim, z)
    }
}
