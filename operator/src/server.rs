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
/// namespace, name, uid, attempt and trace id). `RUST_LOG` filters (default `info`).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    if std::io::stderr().is_terminal() {
        fmt.init();
    } else {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .init();
    }
}
