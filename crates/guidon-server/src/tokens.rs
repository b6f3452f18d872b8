//! The token table: live tokens held in memory (hash of the secret →
//! token), refreshed from the store every few seconds and at once after a
//! change through this instance, so a request costs one SHA-256 and a map
//! lookup instead of a query.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use guidon_protocol::api::TokenInfo;
use guidon_store::{Store, StoreError, secret_hash};
use subtle::ConstantTimeEq;

/// How often tokens created or revoked by another instance are noticed.
pub(crate) const TOKEN_REFRESH: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(crate) struct Tokens {
    live: ArcSwap<HashMap<String, TokenInfo>>,
    used: Mutex<HashSet<String>>,
}

impl Tokens {
    pub(crate) async fn load(store: &Store) -> Result<Tokens, StoreError> {
        let tokens = Tokens::default();
        tokens.refresh(store).await?;
        Ok(tokens)
    }

    pub(crate) async fn refresh(&self, store: &Store) -> Result<(), StoreError> {
        let live = store.live_tokens().await?;
        self.live.store(Arc::new(live.into_iter().collect()));
        Ok(())
    }

    /// The live token whose secret this is.
    pub(crate) fn authenticate(&self, secret: &str) -> Option<TokenInfo> {
        let hash = secret_hash(secret);
        let live = self.live.load();
        let (stored, info) = live.get_key_value(&hash)?;
        // The map found it by hash; compare once more in constant time so no
        // path of the check depends on how much of the secret matched.
        if !bool::from(stored.as_bytes().ct_eq(hash.as_bytes())) {
            return None;
        }
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        if !used.contains(&info.name) {
            used.insert(info.name.clone());
        }
        Some(info.clone())
    }

    /// The live token whose OFREP event channel for `env` this is
    /// ([`crate::ofrep_events::channel`]), compared in constant time.
    pub(crate) fn by_channel(&self, env: &str, channel: &str) -> Option<TokenInfo> {
        let live = self.live.load();
        live.iter()
            .find(|(hash, _)| {
                let ours = crate::ofrep_events::channel(hash, env);
                bool::from(ours.as_bytes().ct_eq(channel.as_bytes()))
            })
            .map(|(_, info)| info.clone())
    }

    /// Whether the token named `name` is live (not revoked or deleted).
    pub(crate) fn is_live(&self, name: &str) -> bool {
        self.live.load().values().any(|t| t.name == name)
    }

    /// Names used since the last call (their last-used time is recorded in batches).
    pub(crate) fn take_used(&self) -> Vec<String> {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.drain().collect()
    }
}
