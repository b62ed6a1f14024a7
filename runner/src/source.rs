//! Fetches the source photo: an http(s) URL (time-out, size cap), an object-store URI
//! (s3://, gs://, file://) or the file a mounted Secret/ConfigMap key appears as.
//!
//! An http(s) source goes through the runner's [`NetworkPolicy`] (read from
//! `CLOTHJOB_ALLOWED_NETWORKS`, the operator's `--allowed-networks`): a non-public address
//! that is not allowed is refused before any connection (literal IPs, names after DNS
//! resolution, every redirect hop) and fails the job at once (not retried). Sources are
//! shown in every message without credentials, query (presigned tokens) or fragment.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use clothjob_backends::netguard::{self, NetworkPolicy, Redirects};
use futures::StreamExt;

use crate::error::RunError;
use crate::store::{ObjectStoreOpts, open};

/// Where to read the source from, as the runner sees it. `Debug` shows it as
/// [`SourceLocation::describe`] does (no presigned tokens).
#[derive(Clone, PartialEq, Eq)]
pub enum SourceLocation {
    /// An http:// or https:// URL.
    Url(String),
    /// An object-store URI.
    Uri(String),
    /// A local file (a mounted Secret or ConfigMap key, or a CLI argument).
    File(std::path::PathBuf),
}

impl SourceLocation {
    /// The source as shown in messages and logs: a URL or URI without credentials,
    /// query or fragment; a file's path.
    pub fn describe(&self) -> String {
        match self {
            SourceLocation::Url(u) | SourceLocation::Uri(u) => netguard::redact_url_str(u),
            SourceLocation::File(p) => p.display().to_string(),
        }
    }
}

impl fmt::Debug for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let variant = match self {
            SourceLocation::Url(_) => "Url",
            SourceLocation::Uri(_) => "Uri",
            SourceLocation::File(_) => "File",
        };
        f.debug_tuple(variant).field(&self.describe()).finish()
    }
}

/// Reads the whole source, refusing anything over `max_bytes`; an http(s) source
/// under the network policy of `CLOTHJOB_ALLOWED_NETWORKS` (a bad value is a
/// [`RunError::Config`]).
pub async fn fetch(
    loc: &SourceLocation,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Bytes, RunError> {
    let policy = match loc {
        SourceLocation::Url(_) => crate::options::network_policy_from_env()?,
        _ => NetworkPolicy::public_only(),
    };
    fetch_with(loc, max_bytes, timeout, &policy).await
}

/// [`fetch`] with the network policy given.
pub async fn fetch_with(
    loc: &SourceLocation,
    max_bytes: u64,
    timeout: Duration,
    policy: &NetworkPolicy,
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
            let url = url::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}"), false))?;
            // Literal IPs never reach the resolver: check them (and the scheme) here.
            policy
                .check_url(&url)
                .map_err(|e| fail(e.to_string(), false))?;
            let builder = reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(10));
            let client = policy
                .guard_async(builder, Redirects::Follow)
                .build()
                .map_err(|e| fail(request_error(e), false))?;
            // A refused address never succeeds; other failures may on a retry.
            let failed = |e: reqwest::Error| match netguard::refusal_in(&e) {
                Some(refused) => fail(refused, false),
                None => fail(request_error(e), true),
            };
            let resp = client.get(url).send().await.map_err(failed)?;
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
                let chunk = chunk.map_err(failed)?;
                body.extend_from_slice(&chunk);
                if body.len() as u64 > max_bytes {
                    return Err(too_big(body.len() as u64));
                }
            }
            Ok(Bytes::from(body))
        }
        SourceLocation::Uri(uri) => {
            let (store, path) = open(uri, &ObjectStoreOpts::from_env())
                .await
                .map_err(|e| fail(e, false))?;
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

/// A reqwest error as text: its chain of sources, without the URL (its query may
/// hold a presigned token).
fn request_error(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}

/// The loopback test servers of the backends' tests.
#[cfg(test)]
#[path = "../../backends/tests/support/mod.rs"]
mod test_support;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::test_support::{MockServer, Reply, refused_address};
    use super::*;

    const TOKEN: &str = "X-Amz-Signature=s3cr3t-presigned-token";

    fn url_source(base: &str) -> SourceLocation {
        SourceLocation::Url(format!("{base}/photos/shirt.jpg?{TOKEN}&X-Amz-Expires=60"))
    }

    async fn get(loc: &SourceLocation, policy: &str) -> Result<Bytes, RunError> {
        let policy = NetworkPolicy::parse(policy).unwrap();
        fetch_with(loc, 1 << 20, Duration::from_secs(5), &policy).await
    }

    fn assert_refused(e: &RunError, what: &str) {
        let text = e.to_string();
        assert!(
            text.contains(&format!("refused to connect to {what}")),
            "{text}"
        );
        assert!(text.contains("--allowed-networks"), "{text}");
        assert!(e.is_bad_input(), "a refusal is not retried: {text}");
        assert_eq!(e.category(), "BadInput", "{text}");
    }

    #[test]
    fn sources_are_shown_without_tokens_or_credentials() {
        let loc = SourceLocation::Url(format!(
            "https://user:pw@bucket.example.com/a/b.jpg?{TOKEN}#x"
        ));
        assert_eq!(loc.describe(), "https://bucket.example.com/a/b.jpg");
        assert_eq!(
            format!("{loc:?}"),
            "Url(\"https://bucket.example.com/a/b.jpg\")"
        );
        let uri = SourceLocation::Uri("s3://bucket/key.jpg?versionId=7".into());
        assert_eq!(uri.describe(), "s3://bucket/key.jpg");
        let file = SourceLocation::File("/var/run/clothjob/source/photo.jpg".into());
        assert_eq!(file.describe(), "/var/run/clothjob/source/photo.jpg");
    }

    #[tokio::test]
    async fn a_loopback_source_is_refused_without_a_connection_unless_allowed() {
        let server = MockServer::start(|_, _| Reply::new(200, "image/jpeg", b"jpeg".to_vec()));
        let e = get(&url_source(&server.url()), "").await.unwrap_err();
        assert_refused(&e, "127.0.0.1: loopback address");
        assert!(!e.to_string().contains(TOKEN), "{e}");
        // A name that resolves to loopback only is refused after resolution.
        let by_name = url_source(&format!("http://localhost:{}", server.addr.port()));
        let e = get(&by_name, "").await.unwrap_err();
        assert_refused(&e, "localhost (");
        assert_eq!(server.connections_so_far(), 0);

        let allowed = MockServer::start(|_, _| Reply::new(200, "image/jpeg", b"jpeg".to_vec()));
        let bytes = get(&url_source(&allowed.url()), "127.0.0.0/8")
            .await
            .unwrap();
        assert_eq!(&bytes[..], b"jpeg");
        assert_eq!(
            allowed.requests()[0].path,
            format!("/photos/shirt.jpg?{TOKEN}&X-Amz-Expires=60")
        );
    }

    #[tokio::test]
    async fn a_redirect_to_a_refused_address_fails_before_reaching_it() {
        let target = MockServer::start_on("127.0.0.2", |_, _| {
            Reply::new(200, "image/jpeg", b"jpeg".to_vec())
        });
        let location = format!("http://{}/elsewhere.jpg", target.addr);
        let first = MockServer::start(move |_, _| {
            Reply::new(302, "text/plain", "").header("Location", &location)
        });
        let e = get(&url_source(&first.url()), "127.0.0.1/32")
            .await
            .unwrap_err();
        assert_refused(&e, "127.0.0.2: loopback address");
        assert_eq!(first.count(), 1);
        assert_eq!(target.connections_so_far(), 0);
        // A redirect to the metadata service, whatever else is allowed.
        let metadata = MockServer::start(|_, _| {
            Reply::new(301, "text/plain", "")
                .header("Location", "http://169.254.169.254/latest/meta-data/")
        });
        let e = get(&url_source(&metadata.url()), "127.0.0.0/8")
            .await
            .unwrap_err();
        assert_refused(&e, "169.254.169.254: link-local address");

        let target = MockServer::start_on("127.0.0.2", |_, _| {
            Reply::new(200, "image/jpeg", b"moved".to_vec())
        });
        let location = format!("http://{}/elsewhere.jpg", target.addr);
        let first = MockServer::start(move |_, _| {
            Reply::new(302, "text/plain", "").header("Location", &location)
        });
        let bytes = get(&url_source(&first.url()), "127.0.0.0/8").await.unwrap();
        assert_eq!(&bytes[..], b"moved");
    }

    #[tokio::test]
    async fn failures_name_the_source_without_its_token() {
        let missing = MockServer::start(|_, _| Reply::new(404, "text/plain", "no"));
        let e = get(&url_source(&missing.url()), "127.0.0.0/8")
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("/photos/shirt.jpg: HTTP 404"), "{text}");
        assert!(e.is_bad_input());
        let closed = get(
            &url_source(&format!("http://{}", refused_address())),
            "127.0.0.0/8",
        )
        .await
        .unwrap_err();
        assert!(
            !closed.is_bad_input(),
            "a connection error is retried: {closed}"
        );
        for e in [&e, &closed] {
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("s3cr3t"), "{shown}");
        }
        let e = get(&SourceLocation::Url("ftp://example.com/x.jpg".into()), "")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("only http and https"), "{e}");
        assert!(e.is_bad_input());
    }
}
