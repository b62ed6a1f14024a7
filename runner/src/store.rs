//! Stores outputs under the output prefix through `object_store` (s3://, gs://, file://).

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::error::RunError;

/// Object-store settings from the environment (`AWS_*`, `GOOGLE_*`), as a Secret named in
/// `spec.output.credentialsSecretName` provides them.
#[derive(Clone, Debug, Default)]
pub struct ObjectStoreOpts(pub Vec<(String, String)>);

impl ObjectStoreOpts {
    /// Every `AWS_*` and `GOOGLE_*` variable of the process.
    pub fn from_env() -> Self {
        Self(
            std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
        )
    }
}

/// The store and the object path of a URI such as `s3://bucket/a/b.jpg` or `file:///x/y`.
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
    let (store, path) =
        object_store::parse_url_opts(&url, opts.0.iter().cloned()).map_err(|e| e.to_string())?;
    Ok((Arc::from(store), path))
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
    let (store, path) = object_store_for(uri, opts).map_err(err)?;
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
