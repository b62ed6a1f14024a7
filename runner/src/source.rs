//! Fetches the source photo: an http(s) URL (time-out, size cap), an object-store URI
//! (s3://, gs://, file://) or the file a mounted Secret/ConfigMap key appears as.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::error::RunError;
use crate::store::{ObjectStoreOpts, object_store_for};

/// Where to read the source from, as the runner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceLocation {
    /// An http:// or https:// URL.
    Url(String),
    /// An object-store URI.
    Uri(String),
    /// A local file (a mounted Secret or ConfigMap key, or a CLI argument).
    File(std::path::PathBuf),
}

impl SourceLocation {
    fn describe(&self) -> String {
        match self {
            SourceLocation::Url(u) | SourceLocation::Uri(u) => u.clone(),
            SourceLocation::File(p) => p.display().to_string(),
        }
    }
}

/// Reads the whole source, refusing anything over `max_bytes`.
pub async fn fetch(
    loc: &SourceLocation,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Bytes, RunError> {
    let what = loc.describe();
    let fail = |detail: String, retryable: bool| RunError::FetchSource {
        what: what.clone(),
        detail,
        retryable,
    };
    let too_big = |n: u64| {
        fail(
            format!("larger than the limit of {max_bytes} bytes (at least {n})"),
            false,
        )
    };
    match loc {
        SourceLocation::File(path) => {
            let meta = tokio::fs::metadata(path)
                .await
                .map_err(|e| fail(e.to_string(), false))?;
            if meta.len() > max_bytes {
                return Err(too_big(meta.len()));
            }
            tokio::fs::read(path)
                .await
                .map(Bytes::from)
                .map_err(|e| fail(e.to_string(), false))
        }
        SourceLocation::Url(url) => {
            let client = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| fail(e.to_string(), false))?;
            let resp = client
                .get(url)
                .send()
                .await
                .map_err(|e| fail(e.to_string(), true))?;
            let status = resp.status();
            if !status.is_success() {
                let retryable =
                    status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                return Err(fail(format!("HTTP {status}"), retryable));
            }
            if resp.content_length().is_some_and(|n| n > max_bytes) {
                return Err(too_big(resp.content_length().unwrap_or(0)));
            }
            let mut body = Vec::new();
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| fail(e.to_string(), true))?;
                body.extend_from_slice(&chunk);
                if body.len() as u64 > max_bytes {
                    return Err(too_big(body.len() as u64));
                }
            }
            Ok(Bytes::from(body))
        }
        SourceLocation::Uri(uri) => {
            let (store, path) =
                object_store_for(uri, &ObjectStoreOpts::from_env()).map_err(|e| fail(e, false))?;
            let result = store.get(&path).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => fail("object not found".into(), false),
                other => fail(other.to_string(), true),
            })?;
            if result.meta.size > max_bytes {
                return Err(too_big(result.meta.size));
            }
            result.bytes().await.map_err(|e| fail(e.to_string(), true))
        }
    }
}
