//! Experiments over HTTP: `POST /api/v1/events` takes batches of exposures
//! and conversions; the metric catalogue and experiments are defined per
//! environment ([`catalogue`]); `GET /api/v1/envs/{env}/experiments/{key}/results`
//! answers an experiment's results, every metric at once ([`report`]), or
//! with `?metric=` one metric of a flag ([`results`]), with their
//! statistics and health checks.
//!
//! Ingestion checks each event on its own and stores the valid ones: a
//! batch with bad events is still accepted for the rest, and the answer
//! names every rejected event by its index. Storage, deduplication by
//! `event_id` and attribution are the store's (`guidon_store::Event`); the
//! statistics are `guidon-stats`'.

pub(crate) mod catalogue;
pub(crate) mod ingest;
pub(crate) mod report;
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
            "/api/v1/envs/{env}/experiments/{key}/results",
            get(results::results),
        )
        .route("/api/v1/envs/{env}/metrics", get(catalogue::list_metrics))
        .route(
            "/api/v1/envs/{env}/metrics/{key}",
            get(catalogue::get_metric)
                .put(catalogue::put_metric)
                .delete(catalogue::delete_metric),
        )
        .route(
            "/api/v1/envs/{env}/experiments",
            get(catalogue::list_experiments),
        )
        .route(
            "/api/v1/envs/{env}/experiments/{key}",
            get(catalogue::get_experiment)
                .put(catalogue::put_experiment)
                .delete(catalogue::delete_experiment),
        )
        .route(
            "/api/v1/envs/{env}/experiments/{key}/stop",
            post(catalogue::stop_experiment),
        )
        .route(
            "/api/v1/envs/{env}/experiments/{key}/plan",
            get(report::plan_handler),
        )
        .route(
            "/api/v1/envs/{env}/experiments/{key}/daily",
            get(report::daily_handler),
        )
}
