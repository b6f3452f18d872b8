//! Events accepted by the edge go upstream from its outbox, oldest first,
//! several buffered batches of one environment in one request (up to the
//! upstream's 10,000 events), and leave the outbox only once the upstream
//! answered for them. Network errors, 5xx, and a refused edge token are
//! retried with backoff (nothing is dropped); a batch the upstream can never
//! take (400, 413, 422) is logged and dropped.

use std::sync::Arc;
use std::time::Duration;

use guidon_client::admin::AdminError;
use guidon_store::Outgoing;
use serde_json::Value;

use super::Upstream;
use crate::app::AppState;

/// Most events in one request upstream (its batch limit).
const MAX_EVENTS: u64 = 10_000;
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Sets `guidon_edge_events_buffered` to what the outbox holds.
async fn measure(state: &AppState, upstream: &Upstream) {
    if let Ok(pending) = upstream.outbox.pending().await {
        upstream
            .buffered
            .store(pending, std::sync::atomic::Ordering::Relaxed);
        state
            .metrics
            .edge
            .events_buffered
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

pub(super) async fn run(state: Arc<AppState>, upstream: Arc<Upstream>) {
    measure(&state, &upstream).await;
    let mut failures: u32 = 0;
    loop {
        let wait = match deliver(&state, &upstream).await {
            Ok(true) => {
                failures = 0;
                continue;
            }
            Ok(false) => {
                failures = 0;
                measure(&state, &upstream).await;
                None
            }
            Err(why) => {
                measure(&state, &upstream).await;
                failures = failures.saturating_add(1);
                tracing::warn!(error = %why, "events not delivered upstream yet; retrying");
                Some(Duration::from_millis(250).saturating_mul(1 << failures.min(5)))
            }
        };
        tokio::select! {
            () = upstream.pushed.notified(), if wait.is_none() => {}
            () = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(1))) => {}
            () = state.shutdown.wait() => return,
        }
    }
}

/// Sends the oldest buffered batches of one environment: whether there was
/// anything to send.
async fn deliver(state: &AppState, upstream: &Upstream) -> Result<bool, String> {
    let oldest = upstream
        .outbox
        .oldest(64)
        .await
        .map_err(|e| e.to_string())?;
    let Some(first) = oldest.first() else {
        return Ok(false);
    };
    let env = first.env.clone();
    let mut taken: Vec<&Outgoing> = Vec::new();
    let mut count = 0;
    for batch in oldest.iter().take_while(|b| b.env == env) {
        if !taken.is_empty() && count + batch.count > MAX_EVENTS {
            break;
        }
        count += batch.count;
        taken.push(batch);
    }
    let mut events: Vec<Value> = Vec::new();
    for batch in &taken {
        match serde_json::from_str::<Vec<Value>>(&batch.events) {
            Ok(mut some) => events.append(&mut some),
            Err(e) => {
                tracing::error!(id = batch.id, error = %e, "a buffered batch does not parse; dropped")
            }
        }
    }
    let ids: Vec<i64> = taken.iter().map(|b| b.id).collect();
    let sent = tokio::time::timeout(SEND_TIMEOUT, upstream.admin.send_events(&env, &events)).await;
    match sent {
        Ok(Ok(receipt)) => {
            if !receipt.rejected.is_empty() {
                tracing::warn!(env = %env, rejected = receipt.rejected.len(), first = ?receipt.rejected.first(), "the upstream rejected some relayed events");
            }
            state
                .metrics
                .edge
                .events_forwarded
                .inc_by(receipt.accepted + receipt.duplicates);
        }
        Ok(Err(AdminError::Refused {
            status: 400 | 413 | 422,
            body,
        })) => {
            tracing::error!(env = %env, error = %body.message, events = count, "the upstream can never take these events; dropped");
        }
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no answer within {SEND_TIMEOUT:?}")),
    }
    upstream
        .outbox
        .remove(&ids)
        .await
        .map_err(|e| e.to_string())?;
    measure(state, upstream).await;
    Ok(true)
}
