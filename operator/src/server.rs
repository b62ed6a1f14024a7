//! HTTP endpoints: `/healthz` (alive), `/readyz` (caches synced) and `/metrics`; the
//! operator's logging set-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::metrics::Metrics;

/// State shared by the endpoints.
#[derive(Clone)]
pub struct Health {
    /// Set once the controller's caches have synced.
    pub ready: Arc<AtomicBool>,
    /// The metrics to render.
    pub metrics: Metrics,
}

/// The router of the endpoints.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(h): State<Health>| async move {
                if h.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(h): State<Health>| async move { h.metrics.render() }),
        )
        .with_state(health)
}

/// Sets up logging on stderr: human-readable on a terminal, one JSON object per line
/// elsewhere (in a pod), each line with its spans and their fields (a reconcile's ClothJob
/// namespace, name, uid, attempt and trace id). `RUST_LOG` filters (default `info`). With an
/// OTLP endpoint (`--otlp-endpoint`), spans are exported too; shut the returned
/// [`clothjob_telemetry::Telemetry`] down at exit to flush them.
pub fn init_logging(otlp_endpoint: Option<String>) -> clothjob_telemetry::Telemetry {
    clothjob_telemetry::init_or_log(&clothjob_telemetry::Settings::new(
        "clothjob-operator",
        otlp_endpoint,
    ))
}
