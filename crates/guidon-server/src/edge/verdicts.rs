//! An edge's token verdicts: what its upstream said of each secret
//! presented (`POST /api/v1/auth/verify`), trusted for the TTL
//! (`--token-cache-ttl`) and then asked again, so a token revoked upstream
//! stops working at the edge within the TTL. Verdicts of tokens in use
//! (an open stream checks its token every heartbeat) are renewed in the
//! background before they expire, so a revoked token's streams end within
//! the TTL too; the secrets of those tokens are kept in memory for it
//! (never on disk: the edge receives them with every request anyway).
//!
//! While the upstream cannot be reached, a token it accepted keeps its last
//! verdict (the edge serves its last known state, and its callers with
//! it); a token never seen gets a 503, as it cannot be checked. The live
//! verdicts are kept in the edge's file by the secret's hash, so an edge
//! restarted during an outage still serves the tokens it knew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guidon_client::admin::{AdminClient, AdminError};
use guidon_protocol::api::TokenInfo;
use guidon_store::{EdgeStore, secret_hash};
use subtle::ConstantTimeEq;

use super::Upstream;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::metrics::{Metrics, OutcomeLabels};

/// Verdicts kept at most; past it the least recently used go.
const MAX_VERDICTS: usize = 100_000;
/// How long one question to the upstream may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Questions to the upstream at once: a flood of unknown tokens waits
/// here instead of becoming a flood upstream.
const ASKS_AT_ONCE: usize = 16;

#[derive(Debug, Clone)]
struct Verdict {
    /// The token, or `None`: no live token has this secret.
    info: Option<TokenInfo>,
    /// Empty for a verdict read back from the file (until presented again).
    secret: String,
    /// When the upstream said so; `None` for a verdict from the file.
    checked: Option<Instant>,
    used: Instant,
}

#[derive(Debug)]
pub(super) struct Verdicts {
    ttl: Duration,
    /// By the secret's hash.
    map: Mutex<HashMap<String, Verdict>>,
    /// The live verdicts changed since they were last kept.
    dirty: std::sync::atomic::AtomicBool,
    /// Tells the refresh loop to keep them now.
    changed: tokio::sync::Notify,
    asks: tokio::sync::Semaphore,
}

enum Asked {
    Answer(Option<TokenInfo>),
    Unreachable(String),
}

async fn ask(admin: &AdminClient, secret: &str, metrics: &Metrics) -> Asked {
    let asked = match tokio::time::timeout(ASK_TIMEOUT, admin.verify_token(secret)).await {
        Ok(Ok(info)) => Asked::Answer(info),
        Ok(Err(
            e @ (AdminError::Connect { .. }
            | AdminError::Timeout { .. }
            | AdminError::Request { .. }),
        )) => Asked::Unreachable(e.to_string()),
        Ok(Err(e)) => Asked::Unreachable(format!("the upstream does not verify tokens now: {e}")),
        Err(_) => Asked::Unreachable(format!("no answer within {ASK_TIMEOUT:?}")),
    };
    let outcome = match &asked {
        Asked::Answer(Some(_)) => "live",
        Asked::Answer(None) => "refused",
        Asked::Unreachable(_) => "unreachable",
    };
    metrics
        .edge
        .token_checks
        .get_or_create(&OutcomeLabels { outcome })
        .inc();
    asked
}

impl Verdicts {
    /// The verdicts kept in `file` (expired: each is asked again when
    /// presented, and stands only while the upstream cannot answer).
    pub(super) async fn load(ttl: Duration, file: &EdgeStore) -> Verdicts {
        let now = Instant::now();
        let mut map = HashMap::new();
        match file.verdicts().await {
            Ok(kept) => {
                for (hash, token) in kept {
                    if let Ok(info) = serde_json::from_str::<TokenInfo>(&token) {
                        map.insert(
                            hash,
                            Verdict {
                                info: Some(info),
                                secret: String::new(),
                                checked: None,
                                used: now,
                            },
                        );
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the kept token verdicts"),
        }
        Verdicts {
            ttl,
            map: Mutex::new(map),
            dirty: std::sync::atomic::AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            asks: tokio::sync::Semaphore::new(ASKS_AT_ONCE),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Verdict>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, v: &Verdict) -> bool {
        v.checked.is_some_and(|c| c.elapsed() < self.ttl)
    }

    pub(super) async fn authenticate(
        &self,
        admin: &AdminClient,
        secret: &str,
        metrics: &Metrics,
    ) -> ApiResult<Option<TokenInfo>> {
        let hash = secret_hash(secret);
        let known = {
            let mut map = self.lock();
            match map.get_mut(&hash) {
                Some(v) => {
                    v.used = Instant::now();
                    if self.fresh(v) {
                        return Ok(v.info.clone());
                    }
                    Some(v.info.clone())
                }
                None => None,
            }
        };
        let asked = match self.asks.acquire().await {
            Ok(_permit) => ask(admin, secret, metrics).await,
            Err(_) => Asked::Unreachable("shutting down".into()),
        };
        match asked {
            Asked::Answer(info) => {
                self.store(hash, secret, info.clone());
                Ok(info)
            }
            Asked::Unreachable(why) => match known {
                // The last verdict stands while the upstream is away.
                Some(info) => Ok(info),
                None => Err(ApiError::Unavailable(format!(
                    "this edge cannot verify the token: its upstream does not answer ({why})"
                ))),
            },
        }
    }

    fn store(&self, hash: String, secret: &str, info: Option<TokenInfo>) {
        let now = Instant::now();
        let mut map = self.lock();
        let before = map.get(&hash).map(|v| v.info.clone());
        if before.as_ref() != Some(&info) {
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
            self.changed.notify_one();
        }
        if let Some(v) = map.get_mut(&hash) {
            v.info = info;
            v.secret = secret.to_owned();
            v.checked = Some(now);
            return;
        }
        if map.len() >= MAX_VERDICTS {
            let oldest = map
                .iter()
                .min_by_key(|(_, v)| v.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                map.remove(&oldest);
            }
        }
        map.insert(
            hash,
            Verdict {
                info,
                secret: secret.to_owned(),
                checked: Some(now),
                used: now,
            },
        );
    }

    /// Whether a token named `name` has a live verdict (open streams ask
    /// every heartbeat; the verdict is renewed in the background).
    pub(super) fn is_live(&self, name: &str) -> bool {
        let mut map = self.lock();
        let mut live = false;
        for v in map.values_mut() {
            if v.info.as_ref().is_some_and(|i| i.name == name) {
                v.used = Instant::now();
                live = true;
            }
        }
        live
    }

    /// The live token whose OFREP event channel for `env` this is.
    pub(super) fn by_channel(&self, env: &str, channel: &str) -> Option<TokenInfo> {
        let map = self.lock();
        map.iter()
            .find(|(hash, _)| {
                let ours = crate::ofrep_events::channel(hash, env);
                bool::from(ours.as_bytes().ct_eq(channel.as_bytes()))
            })
            .and_then(|(_, v)| v.info.clone())
    }

    /// The live verdicts, to keep: (hash, token as JSON).
    fn kept(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .filter_map(|(hash, v)| {
                let info = v.info.as_ref()?;
                Some((hash.clone(), serde_json::to_string(info).ok()?))
            })
            .collect()
    }
}

/// Renews the verdicts of tokens in use before they expire, forgets those
/// unused for long, and keeps the live ones in the edge's file as soon as
/// they change; until shutdown.
pub(super) async fn refresh(state: Arc<AppState>, upstream: Arc<Upstream>) {
    let verdicts = &upstream.verdicts;
    let every = (verdicts.ttl / 4).max(Duration::from_millis(50));
    let in_use = verdicts.ttl * 2 + state.heartbeat * 2;
    let forget_after = (verdicts.ttl * 10).max(Duration::from_secs(600));
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = verdicts.changed.notified() => {}
            () = state.shutdown.wait() => return,
        }
        let due: Vec<(String, String)> = {
            let mut map = verdicts.lock();
            map.retain(|_, v| v.used.elapsed() < forget_after);
            map.iter()
                .filter(|(_, v)| {
                    v.info.is_some()
                        && !v.secret.is_empty()
                        && v.used.elapsed() < in_use
                        && v.checked
                            .is_none_or(|c| c.elapsed() + every >= verdicts.ttl)
                })
                .map(|(hash, v)| (hash.clone(), v.secret.clone()))
                .collect()
        };
        for (hash, secret) in due {
            if let Asked::Answer(info) = ask(&upstream.admin, &secret, &state.metrics).await {
                verdicts.store(hash, &secret, info);
            }
        }
        if verdicts
            .dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed)
            && let Err(e) = upstream.outbox.keep_verdicts(&verdicts.kept()).await
        {
            verdicts
                .dirty
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot keep the token verdicts");
        }
    }
}
