//! Prometheus metrics, in the text format at `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EvalLabels {
    pub(crate) env: String,
    pub(crate) flag: String,
    pub(crate) reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) method: String,
    pub(crate) route: String,
    pub(crate) status: u16,
}

/// How an environment's live state moved to a new revision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SyncLabels {
    /// `commit`: this instance's commit, taken as the store compiled it;
    /// `catch_up`: read from the change log and compiled (other instances'
    /// commits); `reload`: the whole environment read again.
    pub(crate) how: &'static str,
}

pub(crate) type SyncCounters = Family<SyncLabels, Counter>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StreamLabels {
    pub(crate) transport: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EnvLabels {
    pub(crate) env: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

/// What `guidon edge` reports (zero on a server).
#[derive(Debug, Default)]
pub(crate) struct EdgeMetrics {
    /// 1 while the environment's follow of the upstream is current, 0
    /// while the edge serves its last known state (stale).
    pub(crate) upstream_connected: Family<EnvLabels, Gauge>,
    pub(crate) revision: Family<EnvLabels, Gauge>,
    /// Seconds since the environment stopped following its upstream (0
    /// while it follows).
    pub(crate) stale_seconds: Family<EnvLabels, Gauge>,
    /// Events durably buffered, not yet delivered upstream.
    pub(crate) events_buffered: Gauge,
    pub(crate) events_forwarded: Counter,
    /// Token verdicts asked of the upstream: `live`, `refused`, `unreachable`.
    pub(crate) token_checks: Family<OutcomeLabels, Counter>,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) edge: EdgeMetrics,
    registry: Registry,
    pub(crate) evaluations: Family<EvalLabels, Counter>,
    pub(crate) evaluation_seconds: Histogram,
    pub(crate) cache_hits: Counter,
    pub(crate) cache_misses: Counter,
    pub(crate) http_requests: Family<HttpLabels, Counter>,
    pub(crate) stream_clients: Family<StreamLabels, Gauge>,
    /// Stream clients disconnected for falling behind the broadcast.
    pub(crate) stream_lagged: Counter,
    /// Revisions sent to stream clients.
    pub(crate) stream_messages: Counter,
    pub(crate) syncs: SyncCounters,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let evaluations = Family::<EvalLabels, Counter>::default();
        registry.register(
            "guidon_evaluations",
            "Flag evaluations served by the API, by environment, flag and reason",
            evaluations.clone(),
        );
        // 1 µs to ~16 ms.
        let evaluation_seconds = Histogram::new(exponential_buckets(1e-6, 2.0, 15));
        registry.register(
            "guidon_evaluation_seconds",
            "Time to evaluate one request's flags (engine only)",
            evaluation_seconds.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "guidon_eval_cache_hits",
            "Evaluation cache hits",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "guidon_eval_cache_misses",
            "Evaluation cache misses",
            cache_misses.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "guidon_http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let stream_clients = Family::<StreamLabels, Gauge>::default();
        registry.register(
            "guidon_stream_clients",
            "Connected stream clients by transport",
            stream_clients.clone(),
        );
        let stream_lagged = Counter::default();
        registry.register(
            "guidon_stream_lagged_disconnects",
            "Stream clients disconnected because they fell behind the broadcast",
            stream_lagged.clone(),
        );
        let stream_messages = Counter::default();
        registry.register(
            "guidon_stream_messages",
            "Revisions sent to stream clients",
            stream_messages.clone(),
        );
        let syncs = SyncCounters::default();
        registry.register(
            "guidon_syncs",
            "Moves of an environment's live state to a newer revision, by how",
            syncs.clone(),
        );
        let edge = EdgeMetrics::default();
        registry.register(
            "guidon_edge_upstream_connected",
            "Edge: 1 while the environment follows its upstream, 0 while serving the last known state",
            edge.upstream_connected.clone(),
        );
        registry.register(
            "guidon_edge_stale_seconds",
            "Edge: seconds since the environment stopped following its upstream (0 while it follows)",
            edge.stale_seconds.clone(),
        );
        registry.register(
            "guidon_edge_revision",
            "Edge: the revision served of each environment",
            edge.revision.clone(),
        );
        registry.register(
            "guidon_edge_events_buffered",
            "Edge: events buffered durably, not yet delivered upstream",
            edge.events_buffered.clone(),
        );
        registry.register(
            "guidon_edge_events_forwarded",
            "Edge: events delivered upstream",
            edge.events_forwarded.clone(),
        );
        registry.register(
            "guidon_edge_token_checks",
            "Edge: token verdicts asked of the upstream, by outcome",
            edge.token_checks.clone(),
        );
        Metrics {
            edge,
            syncs,
            registry,
            evaluations,
            evaluation_seconds,
            cache_hits,
            cache_misses,
            http_requests,
            stream_clients,
            stream_lagged,
            stream_messages,
        }
    }
}

impl Metrics {
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one evaluation. `found` is false for an unknown flag: those
    /// share one label, so callers cannot grow the label set at will.
    pub(crate) fn count_evaluation(
        &self,
        env: &str,
        flag: &str,
        found: bool,
        reason: &'static str,
    ) {
        self.evaluations
            .get_or_create(&EvalLabels {
                env: env.to_owned(),
                flag: if found { flag } else { "(not found)" }.to_owned(),
                reason,
            })
            .inc();
    }

    /// The method as a label: the standard ones, or `other` (the method is
    /// the client's choice, and labels must stay bounded).
    pub(crate) fn method_label(method: &axum::http::Method) -> &'static str {
        use axum::http::Method;
        match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        }
    }
}
