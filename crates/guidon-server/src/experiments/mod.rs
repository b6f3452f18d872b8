//! Experiments over HTTP: `POST /api/v1/events` takes batches of exposures
//! and conversions, `GET /api/v1/envs/{env}/experiments/{flag}/results`
//! answers one metric's results with their statistics and health checks.
//!
//! Ingestion checks each event on its own and stores the valid ones: a
//! batch with bad events is still accepted for the rest, and the answer
//! names every rejected event by its index. Storage, deduplication by
//! `event_id` and attribution are the store's (`guidon_store::Event`); the
//! statistics are `guidon-stats`'.

pub(crate) mod ingest;
pub(crate) mod results;

pub(crate) use ingest::check_batch;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::app::AppState;

pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/events", post(ingest::ingest))
        .route(
            "/api/v1/envs/{env}/experiments/{flag}/results",
            get(results::results),
        )
}
