//! Object stores (s3://, gs://, file://) with credentials from the environment (`AWS_*`,
//! `GOOGLE_*`), and `get-outputs`: downloads a ClothJob's outputs and checks each one's size
//! and sha256 against its status.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clothjob_api::{ClothJob, OutputStatus};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::args::{Format, GetOutputsArgs};
use crate::client::Connection;
use crate::error::{CommandError, EXIT_OK, is_not_found};
use crate::render::{self, Style, left, right, table};
use crate::watch::{Outcome, outcome};

/// Every `AWS_*` and `GOOGLE_*` variable of the process, as object_store options.
fn store_options() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_") || k.starts_with("GOOGLE_"))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// The store and object path of `uri`.
fn store_for(uri: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath), CommandError> {
    let err = |detail: String| CommandError::Store {
        action: format!("opening {uri}"),
        detail,
    };
    let url = url::Url::parse(uri).map_err(|e| err(e.to_string()))?;
    if url.scheme() == "file" {
        let path = ObjectPath::parse(url.path().trim_start_matches('/'))
            .map_err(|e| err(e.to_string()))?;
        return Ok((Arc::new(object_store::local::LocalFileSystem::new()), path));
    }
    let (store, path) =
        object_store::parse_url_opts(&url, store_options()).map_err(|e| err(e.to_string()))?;
    Ok((Arc::from(store), path))
}

/// Writes `bytes` at `uri`.
pub async fn put(uri: &str, bytes: Vec<u8>) -> Result<(), CommandError> {
    let (store, path) = store_for(uri)?;
    store
        .put(&path, object_store::PutPayload::from(bytes))
        .await
        .map_err(|e| CommandError::Store {
            action: format!("uploading the photo to {uri}"),
            detail: e.to_string(),
        })?;
    Ok(())
}

/// The bytes at `uri`.
pub async fn get(uri: &str) -> Result<Vec<u8>, CommandError> {
    let (store, path) = store_for(uri)?;
    let err = |e: object_store::Error| CommandError::Store {
        action: format!("downloading {uri}"),
        detail: e.to_string(),
    };
    let got = store.get(&path).await.map_err(err)?;
    Ok(got.bytes().await.map_err(err)?.to_vec())
}

/// One downloaded output.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Downloaded {
    /// Role.
    pub name: String,
    /// Where it came from.
    pub uri: String,
    /// Where it is now.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: i64,
    /// sha256, checked against the status.
    pub sha256: String,
}

/// The local file name of an output: the last segment of its URI, else `<role>`.
fn file_name(o: &OutputStatus) -> String {
    let last = o.uri.rsplit('/').next().unwrap_or_default();
    let safe = !last.is_empty() && last != "." && last != ".." && !last.contains('\\');
    if safe {
        last.to_string()
    } else {
        o.name.clone()
    }
}

/// Downloads every output into `dir`, checking size and sha256; a file that does not match is
/// not left behind.
pub async fn download(
    outputs: &[OutputStatus],
    dir: &Path,
) -> Result<Vec<Downloaded>, CommandError> {
    std::fs::create_dir_all(dir)
        .map_err(CommandError::io(format!("creating {}", dir.display())))?;
    let mut done = Vec::new();
    for o in outputs {
        let bytes = get(&o.uri).await?;
        let sha = hex::encode(Sha256::digest(&bytes));
        if sha != o.sha256 {
            return Err(CommandError::Checksum {
                uri: o.uri.clone(),
                detail: format!("sha256 is {sha}, the status says {}", o.sha256),
            });
        }
        if bytes.len() as i64 != o.bytes {
            return Err(CommandError::Checksum {
                uri: o.uri.clone(),
                detail: format!("{} bytes, the status says {}", bytes.len(), o.bytes),
            });
        }
        let path = dir.join(file_name(o));
        let tmp = dir.join(format!(".{}.part", file_name(o)));
        std::fs::write(&tmp, &bytes)
            .map_err(CommandError::io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path)
            .map_err(CommandError::io(format!("writing {}", path.display())))?;
        done.push(Downloaded {
            name: o.name.clone(),
            uri: o.uri.clone(),
            path,
            bytes: o.bytes,
            sha256: sha,
        });
    }
    Ok(done)
}

/// `get-outputs NAME DIR`.
pub async fn get_outputs(
    conn: &Connection,
    a: &GetOutputsArgs,
    format: Option<Format>,
    _style: Style,
) -> Result<i32, CommandError> {
    let api: kube::Api<ClothJob> = kube::Api::namespaced(conn.client.clone(), &conn.namespace);
    let cj = api.get(&a.name).await.map_err(|e| {
        if is_not_found(&e) {
            CommandError::NotFound {
                name: a.name.clone(),
                namespace: conn.namespace.clone(),
            }
        } else {
            CommandError::Api {
                action: format!("reading ClothJob {}", a.name),
                source: e,
            }
        }
    })?;
    if outcome(&cj) != Outcome::Succeeded {
        let phase = cj
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map_or("Pending", |p| p.as_str());
        return Err(CommandError::WrongState(format!(
            "ClothJob {} has not succeeded (it is {phase}): no outputs to download",
            a.name
        )));
    }
    let outputs = cj.status.and_then(|s| s.outputs).unwrap_or_default();
    let done = download(&outputs, &a.dir).await?;
    match format {
        Some(f) => {
            let names: Vec<String> = done.iter().map(|d| d.path.display().to_string()).collect();
            crate::print_value(f, &done, &names)?;
        }
        None => {
            let rows: Vec<Vec<String>> = done
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        render::human_bytes(d.bytes),
                        "ok".into(),
                        d.path.display().to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[left("ROLE"), right("SIZE"), left("SHA256"), left("FILE")],
                    &rows
                )
            );
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn output(dir: &Path, name: &str, bytes: &[u8]) -> OutputStatus {
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        OutputStatus {
            name: name.into(),
            uri: format!("file://{}", path.display()),
            media_type: "image/png".into(),
            width: 1,
            height: 1,
            bytes: bytes.len() as i64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }

    #[tokio::test]
    async fn file_outputs_are_downloaded_and_checked() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let outs = vec![
            output(src.path(), "mask", b"mask"),
            output(src.path(), "cutout", b"cut"),
        ];
        let done = download(&outs, &dst.path().join("new")).await.unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(
            std::fs::read(dst.path().join("new/mask.png")).unwrap(),
            b"mask"
        );

        let mut bad = output(src.path(), "garment", b"garment");
        bad.sha256 = "00".repeat(32);
        let e = download(&[bad], dst.path()).await.unwrap_err();
        assert!(matches!(e, CommandError::Checksum { .. }), "{e}");
        assert!(!dst.path().join("garment.png").exists());
    }

    #[tokio::test]
    async fn a_missing_object_is_a_store_error() {
        let dst = tempfile::tempdir().unwrap();
        let o = OutputStatus {
            name: "x".into(),
            uri: "file:///nonexistent/clothjob/x.png".into(),
            ..Default::default()
        };
        let e = download(&[o], dst.path()).await.unwrap_err();
        assert!(matches!(e, CommandError::Store { .. }), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}
