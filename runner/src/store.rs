//! Stores outputs under the output prefix through `object_store` (s3://, gs://, file://).

use std::sync::Arc;
use std::time::Duration;

use clothjob_backends::netguard::{NetworkPolicy, Redirects, redact_url_str};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::client::{HttpClient, HttpConnector};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, PutPayload};

use crate::error::RunError;

/// Object-store settings from the environment (`AWS_*`, `GOOGLE_*`), as a Secret named in
/// `spec.output.credentialsSecretName` provides them, and the networks the runner may reach.
#[derive(Clone, Debug, Default)]
pub struct ObjectStoreOpts {
    /// The `AWS_*` and `GOOGLE_*` variables, names lower-cased (object_store's config keys).
    pub vars: Vec<(String, String)>,
    /// Where the store's clients may connect: the endpoint (`AWS_ENDPOINT`) and every
    /// address a store host resolves to are checked, as for every other outbound request.
    pub network: NetworkPolicy,
}

impl ObjectStoreOpts {
    /// Every `AWS_*` and `GOOGLE_*` variable of the process, and the runner's network policy
    /// (`CLOTHJOB_ALLOWED_NETWORKS`; public addresses only when unset or unreadable).
    pub fn from_env() -> Self {
        Self {
            vars: std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            network: NetworkPolicy::from_env().unwrap_or_default(),
        }
    }

    fn var(&self, key: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Builds the object store's HTTP clients under the network policy: resolved addresses
/// filtered, no proxy, no redirects; object_store's own time-outs.
#[derive(Debug)]
struct GuardedConnector {
    network: NetworkPolicy,
    allow_http: bool,
}

impl HttpConnector for GuardedConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .https_only(!self.allow_http);
        let client = self
            .network
            .guard_async(builder, Redirects::None)
            .build()
            .map_err(|e| object_store::Error::Generic {
                store: "guarded HTTP client",
                source: Box::new(e),
            })?;
        Ok(HttpClient::new(client))
    }
}

/// The store and the object path of a URI such as `s3://bucket/a/b.jpg` or `file:///x/y`.
/// A custom S3 endpoint is checked against the network policy first (its address may be a
/// literal IP, which no resolver sees).
pub fn object_store_for(
    uri: &str,
    opts: &ObjectStoreOpts,
) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    let url = url::Url::parse(uri).map_err(|e| format!("{uri}: {e}"))?;
    if url.scheme() == "file" {
        // A local volume: the root is "/", so the full path is the object path.
        let store = object_store::local::LocalFileSystem::new();
        let path = Path::parse(url.path().trim_start_matches('/')).map_err(|e| e.to_string())?;
        return Ok((Arc::new(store), path));
    }
    let path = Path::from_url_path(url.path()).map_err(|e| e.to_string())?;
    let connector = |allow_http: bool| GuardedConnector {
        network: opts.network.clone(),
        allow_http,
    };
    let allow_http = opts.var("aws_allow_http").is_some_and(|v| v == "true");
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" => {
            let mut builder = AmazonS3Builder::new().with_url(uri);
            for (k, v) in &opts.vars {
                if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
                    builder = builder.with_config(key, v);
                }
            }
            if let Some(endpoint) = builder.get_config_value(&AmazonS3ConfigKey::Endpoint) {
                let endpoint = url::Url::parse(&endpoint)
                    .map_err(|e| format!("AWS_ENDPOINT {}: {e}", redact_url_str(&endpoint)))?;
                opts.network
                    .check_url(&endpoint)
                    .map_err(|e| format!("AWS_ENDPOINT: {e}"))?;
            }
            let store = builder
                .with_http_connector(connector(allow_http))
                .build()
                .map_err(|e| e.to_string())?;
            Arc::new(store)
        }
        "gs" => {
            let mut builder = GoogleCloudStorageBuilder::new().with_url(uri);
            for (k, v) in &opts.vars {
                if let Ok(key) = k.parse::<GoogleConfigKey>() {
                    builder = builder.with_config(key, v);
                }
            }
            let store = builder
                .with_http_connector(connector(false))
                .build()
                .map_err(|e| e.to_string())?;
            Arc::new(store)
        }
        other => {
            return Err(format!(
                "{uri}: unsupported scheme {other}:// (s3, gs, file)"
            ));
        }
    };
    Ok((store, path))
}

/// [`object_store_for`], after resolving the custom S3 endpoint's host name and checking its
/// addresses (so a refused endpoint fails at once, not after the store's retries; the guarded
/// resolver checks again at connect time, against a name that resolves differently later).
pub async fn open(
    uri: &str,
    opts: &ObjectStoreOpts,
) -> Result<(Arc<dyn ObjectStore>, Path), String> {
    let opened = object_store_for(uri, opts)?;
    if uri.starts_with("s3://")
        && let Some(endpoint) = opts.var("aws_endpoint")
        && let Ok(url) = url::Url::parse(endpoint)
        && let Some(host) = url.host_str()
        && !opts.network.allows_host_name(host)
    {
        let port = url.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("AWS_ENDPOINT {}: resolving: {e}", redact_url_str(endpoint)))?;
        opts.network
            .filter_resolved(host, addrs)
            .map_err(|e| format!("AWS_ENDPOINT: {e}"))?;
    }
    Ok(opened)
}

/// The directory of one ClothJob's outputs: `<prefix>/<namespace>/<name>/<uid>`. The uid
/// keeps a re-created ClothJob of the same name (or a stale runner of the old one) from
/// overwriting the other's outputs.
pub fn output_dir(prefix: &str, namespace: &str, name: &str, uid: &str) -> String {
    format!("{}/{namespace}/{name}/{uid}", prefix.trim_end_matches('/'))
}

/// One output: `<prefix>/<namespace>/<name>/<uid>/<file>` (see [`output_dir`]).
pub fn output_uri(prefix: &str, namespace: &str, name: &str, uid: &str, file: &str) -> String {
    format!("{}/{file}", output_dir(prefix, namespace, name, uid))
}

/// Writes `bytes` at `uri`.
pub async fn put(uri: &str, bytes: Vec<u8>, opts: &ObjectStoreOpts) -> Result<(), RunError> {
    let err = |detail: String| RunError::StoreOutput {
        name: uri.to_string(),
        detail,
    };
    let (store, path) = open(uri, opts).await.map_err(err)?;
    if uri.starts_with("file://") {
        // LocalFileSystem creates parent directories itself, but wants the path absolute.
        if let Some(parent) = std::path::Path::new(url_path(uri).as_str()).parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
    }
    store
        .put(&path, PutPayload::from(bytes))
        .await
        .map_err(|e| err(e.to_string()))?;
    Ok(())
}

fn url_path(uri: &str) -> String {
    url::Url::parse(uri)
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_uris_are_prefix_namespace_name_uid_file() {
        assert_eq!(
            output_uri("s3://b/p/", "ns", "job", "0a1b-2c3d", "cutout.png"),
            "s3://b/p/ns/job/0a1b-2c3d/cutout.png"
        );
        assert_eq!(
            output_uri("file:///out", "ns", "job", "u1", "a.jpg"),
            "file:///out/ns/job/u1/a.jpg"
        );
        assert_eq!(
            output_dir("gs://b//", "ns", "job", "u1"),
            "gs://b/ns/job/u1"
        );
    }

    fn s3_opts(endpoint: &str, network: &str) -> ObjectStoreOpts {
        ObjectStoreOpts {
            vars: vec![
                ("aws_endpoint".into(), endpoint.into()),
                ("aws_allow_http".into(), "true".into()),
                ("aws_access_key_id".into(), "k".into()),
                ("aws_secret_access_key".into(), "s".into()),
                ("aws_region".into(), "r".into()),
            ],
            network: NetworkPolicy::parse(network).unwrap(),
        }
    }

    #[test]
    fn an_s3_endpoint_at_a_private_or_link_local_address_is_refused_unless_allowed() {
        for endpoint in [
            "http://10.1.2.3:9000",
            "http://169.254.169.254",
            "http://127.0.0.1:9",
        ] {
            let Err(e) = object_store_for("s3://b/a.jpg", &s3_opts(endpoint, "")) else {
                panic!("{endpoint} was allowed");
            };
            assert!(
                e.contains("AWS_ENDPOINT") && e.contains("allowed-networks"),
                "{e}"
            );
        }
        let (_, path) = object_store_for(
            "s3://b/x/a.jpg",
            &s3_opts("http://127.0.0.1:9", "127.0.0.0/8"),
        )
        .unwrap();
        assert_eq!(path.as_ref(), "x/a.jpg");
    }

    #[tokio::test]
    async fn an_s3_endpoint_name_resolving_to_loopback_is_refused_at_connect() {
        // `localhost` passes the literal check; the guarded resolver refuses its addresses, so
        // nothing is sent.
        let opts = s3_opts("http://localhost:9", "");
        let err = put("s3://b/a.bin", vec![1], &opts)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("allowed-networks") || err.contains("refused"),
            "{err}"
        );
    }

    #[test]
    fn other_schemes_are_refused() {
        let Err(e) = object_store_for("http://example.invalid/a", &ObjectStoreOpts::default())
        else {
            panic!("http:// accepted as a store");
        };
        assert!(e.contains("unsupported scheme"), "{e}");
    }

    #[tokio::test]
    async fn file_outputs_land_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let uri = format!("file://{}/x/y/z.bin", dir.path().display());
        put(&uri, vec![1, 2, 3], &ObjectStoreOpts::default())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("x/y/z.bin")).unwrap(),
            vec![1, 2, 3]
        );
    }
}
