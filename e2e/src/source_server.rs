//! An HTTP server on loopback serving source photos with chosen behaviours: healthy, flaky
//! (503 for the first N requests), down (always 503), not an image, or slow; made reachable
//! from the cluster's pods with [`SourceServer::start_in`] (its URLs are then in-cluster URLs).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clothjob_testenv::Cluster;
use clothjob_testenv::cluster::forward::Forward;

use crate::harness::{expose, loopback_port};

#[derive(Clone)]
struct Shared {
    photo: Arc<Vec<u8>>,
    hits: Arc<AtomicUsize>,
    flaky_failures: usize,
    slow: Duration,
}

/// A running source server.
pub struct SourceServer {
    /// Base URL, e.g. `http://127.0.0.1:PORT`, or `http://198.18.0.2:PORT` once exposed.
    pub base: String,
    /// Where the test process reaches it: `http://127.0.0.1:PORT`.
    pub local: String,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    _forward: Option<Forward>,
}

impl SourceServer {
    /// Serves `photo` at `/photo.jpg`, `/flaky.jpg` (503 for the first `flaky_failures`
    /// requests), `/down.jpg` (503), `/text.jpg` (not an image) and `/slow.jpg` (after `slow`).
    pub async fn start(
        photo: Vec<u8>,
        flaky_failures: usize,
        slow: Duration,
    ) -> anyhow::Result<Self> {
        let hits = Arc::new(AtomicUsize::new(0));
        let shared = Shared {
            photo: Arc::new(photo),
            hits: hits.clone(),
            flaky_failures,
            slow,
        };
        let app = Router::new()
            .route("/{file}", get(serve))
            .with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            local: base.clone(),
            base,
            hits,
            task,
            _forward: None,
        })
    }

    /// [`start`](Self::start)s one and makes it reachable from the pods of `cluster`: [`url`]
    /// then gives in-cluster URLs (`http://198.18.0.2:PORT/...`).
    ///
    /// [`url`]: Self::url
    pub async fn start_in(
        cluster: &Cluster,
        photo: Vec<u8>,
        flaky_failures: usize,
        slow: Duration,
    ) -> anyhow::Result<Self> {
        let mut server = Self::start(photo, flaky_failures, slow).await?;
        let (base, forward) = expose(cluster, loopback_port(&server.local)?)?;
        server.base = base;
        server._forward = Some(forward);
        Ok(server)
    }

    /// URL of one of the files.
    pub fn url(&self, file: &str) -> String {
        format!("{}/{file}", self.base)
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for SourceServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(State(s): State<Shared>, Path(file): Path<String>) -> Response {
    let n = s.hits.fetch_add(1, Ordering::SeqCst);
    let photo = || {
        (
            StatusCode::OK,
            [("content-type", "image/jpeg")],
            s.photo.as_ref().clone(),
        )
            .into_response()
    };
    match file.as_str() {
        "photo.jpg" => photo(),
        "flaky.jpg" if n < s.flaky_failures => {
            (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response()
        }
        "flaky.jpg" => photo(),
        "down.jpg" => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        "text.jpg" => (
            StatusCode::OK,
            [("content-type", "image/jpeg")],
            "this is not an image",
        )
            .into_response(),
        "slow.jpg" => {
            tokio::time::sleep(s.slow).await;
            photo()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
