//! `submit`: a ClothJob from a local photo (into a Secret the ClothJob owns, or uploaded with
//! `--upload-to`), an http(s) URL (`source.url`) or an object-store URI (`source.uri`).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use clothjob_api::{ClothJob, ClothJobSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Resource, ResourceExt};

use crate::args::{Format, SubmitArgs};
use crate::client::Connection;
use crate::error::{CommandError, EXIT_OK};
use crate::render::Style;

/// The largest local photo put into a Secret (Secrets hold at most 1 MiB).
pub const SECRET_MAX_BYTES: usize = 900 * 1024;
/// Label on a Secret the plugin made for a ClothJob's photo: the ClothJob's name.
pub const LABEL_SOURCE_OF: &str = "closetconnect.io/source-of";
/// `app.kubernetes.io/managed-by` of the objects the plugin makes.
pub const MANAGED_BY: &str = "kubectl-clothjob";
/// Top-level spec fields `--set` addresses directly; any other key is a pipeline setting.
const SPEC_KEYS: &[&str] = &[
    "output",
    "runner",
    "pipeline",
    "retries",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "reuse",
    "priority",
    "queueName",
];

/// Where the photo's bytes go before the ClothJob can use them.
#[derive(Debug, PartialEq)]
pub enum Photo {
    /// Into a Secret (created after the ClothJob, owned by it).
    Secret {
        /// Secret name.
        name: String,
        /// Key holding the bytes.
        key: String,
        /// The photo.
        bytes: Vec<u8>,
    },
    /// Uploaded to an object store before the ClothJob is created.
    Upload {
        /// Object URI (also the ClothJob's `source.uri`).
        uri: String,
        /// The photo.
        bytes: Vec<u8>,
    },
}

/// What `submit` will create.
#[derive(Debug)]
pub struct Plan {
    /// The ClothJob.
    pub clothjob: ClothJob,
    /// The local photo's bytes and where they go.
    pub photo: Option<Photo>,
}

/// Builds the ClothJob (and where a local photo goes) from the arguments, creating nothing.
pub fn plan(a: &SubmitArgs, namespace: &str) -> Result<Plan, CommandError> {
    let usage = CommandError::Usage;
    let remote = ["http://", "https://"]
        .iter()
        .any(|p| a.image.starts_with(p));
    let store = ["s3://", "gs://", "file://"]
        .iter()
        .any(|p| a.image.starts_with(p));
    let file_name = if remote || store {
        let without_query = a.image.split(['?', '#']).next().unwrap_or_default();
        percent_decode(
            without_query
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default(),
        )
    } else {
        Path::new(&a.image)
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    let name = match &a.name {
        Some(n) => {
            check_name(n)?;
            n.clone()
        }
        None => default_name(&file_name),
    };
    let (source, photo) = if remote {
        (serde_json::json!({"url": a.image}), None)
    } else if store {
        (serde_json::json!({"uri": a.image}), None)
    } else {
        let bytes = std::fs::read(&a.image)
            .map_err(|e| usage(format!("reading the photo {}: {e}", a.image)))?;
        match &a.upload_to {
            Some(prefix) => {
                if !["s3://", "gs://"].iter().any(|p| prefix.starts_with(p)) {
                    return Err(usage(format!(
                        "--upload-to {prefix}: expected s3://bucket/prefix or gs://bucket/prefix"
                    )));
                }
                let uri = format!(
                    "{}/{namespace}/{name}/{}",
                    prefix.trim_end_matches('/'),
                    secret_key(&file_name)
                );
                (
                    serde_json::json!({"uri": uri}),
                    Some(Photo::Upload { uri, bytes }),
                )
            }
            None => {
                if bytes.len() > SECRET_MAX_BYTES {
                    return Err(usage(format!(
                        "{} is {} bytes, more than a Secret holds ({SECRET_MAX_BYTES}): upload it with --upload-to s3://bucket/prefix (or gs://)",
                        a.image,
                        bytes.len()
                    )));
                }
                let secret = format!("{name}-photo");
                let key = secret_key(&file_name);
                (
                    serde_json::json!({"secretRef": {"name": secret, "key": key}}),
                    Some(Photo::Secret {
                        name: secret,
                        key,
                        bytes,
                    }),
                )
            }
        }
    };
    if a.upload_to.is_some() && (remote || store) {
        return Err(usage(
            "--upload-to is for a local photo; a URL or URI is used as it is".into(),
        ));
    }
    let mut spec = serde_json::json!({"source": source, "output": {"uri": a.output}});
    if let Some(c) = &a.credentials_secret {
        spec["output"]["credentialsSecretName"] = c.clone().into();
    }
    for s in &a.sets {
        apply_set(&mut spec, s)?;
    }
    let spec: ClothJobSpec =
        serde_json::from_value(spec).map_err(|e| usage(format!("the ClothJob's spec: {e}")))?;
    let mut clothjob = ClothJob::new(&name, spec);
    clothjob.metadata.namespace = Some(namespace.to_string());
    Ok(Plan { clothjob, photo })
}

/// Applies one `--set key=value`: `output.*`, `runner.*`, `retries`, ... address the spec,
/// anything else `spec.pipeline` (`expansion.background=#F4F4F4`). The value is read as JSON
/// (numbers, booleans, lists) and otherwise taken as a string.
pub fn apply_set(spec: &mut serde_json::Value, assignment: &str) -> Result<(), CommandError> {
    let usage = |m: &str| CommandError::Usage(format!("--set {assignment}: {m}"));
    let (path, raw) = assignment
        .split_once('=')
        .ok_or_else(|| usage("expected key=value, for example expansion.background=#F4F4F4"))?;
    let mut parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(usage("empty path segment"));
    }
    if parts[0] == "source" {
        return Err(usage("the source is the IMAGE_OR_URL argument"));
    }
    if !SPEC_KEYS.contains(&parts[0]) {
        parts.insert(0, "pipeline");
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
    let mut node = spec;
    for (i, part) in parts.iter().enumerate() {
        if !node.is_object() {
            *node = serde_json::json!({});
        }
        let obj = node.as_object_mut().ok_or_else(|| usage("not an object"))?;
        if i + 1 == parts.len() {
            obj.insert((*part).to_string(), value);
            return Ok(());
        }
        node = obj
            .entry((*part).to_string())
            .or_insert_with(|| serde_json::json!({}));
    }
    Ok(())
}

/// Checks a ClothJob name (a DNS label: lowercase letters, digits and '-', at most 63).
pub fn check_name(n: &str) -> Result<(), CommandError> {
    let ok = !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CommandError::Usage(format!(
            "--name {n:?}: use lowercase letters, digits and '-' (at most 63, not starting or ending with '-')"
        )))
    }
}

/// A name from the photo's file name and a random suffix: `blue-shirt-k3x9q`.
pub fn default_name(file_name: &str) -> String {
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(s, _)| s)
        .to_ascii_lowercase();
    let mut base: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    while base.contains("--") {
        base = base.replace("--", "-");
    }
    let mut base: String = base.trim_matches('-').chars().take(40).collect();
    base = base.trim_end_matches('-').to_string();
    if base.is_empty() {
        base = "photo".into();
    }
    format!("{base}-{}", random_suffix())
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

/// `%XX` escapes of a URL path segment decoded (invalid ones kept as they are).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A Secret key from a file name: letters, digits, '-', '_' and '.' only (else `photo`).
pub fn secret_key(file_name: &str) -> String {
    let key: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if key.is_empty() || key.chars().all(|c| c == '.') {
        "photo".into()
    } else {
        key
    }
}

/// An owner reference to `cj` (not the controller: the plugin's objects are garbage
/// collected with it).
pub fn owner_ref(cj: &ClothJob) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: ClothJob::api_version(&()).to_string(),
        kind: ClothJob::kind(&()).to_string(),
        name: cj.name_any(),
        uid: cj.metadata.uid.clone()?,
        controller: None,
        block_owner_deletion: None,
    })
}

/// The Secret holding a photo, owned by the ClothJob.
pub fn photo_secret(cj: &ClothJob, name: &str, key: &str, bytes: &[u8]) -> Secret {
    let labels = BTreeMap::from([
        (LABEL_SOURCE_OF.to_string(), cj.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cj.namespace(),
            labels: Some(labels),
            owner_references: owner_ref(cj).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(bytes.to_vec()),
        )])),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// `submit`: creates the ClothJob (and the photo's Secret or upload), then follows it with
/// `--watch`.
pub async fn submit(
    conn: &Connection,
    a: &SubmitArgs,
    format: Option<Format>,
    style: Style,
) -> Result<i32, CommandError> {
    let plan = plan(a, &conn.namespace)?;
    let name = plan.clothjob.name_any();
    let api: Api<ClothJob> = Api::namespaced(conn.client.clone(), &conn.namespace);
    if let Some(Photo::Upload { uri, bytes }) = &plan.photo {
        crate::outputs::put(uri, bytes.clone()).await?;
    }
    let created = api
        .create(&PostParams::default(), &plan.clothjob)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) if s.code == 409 => CommandError::Usage(format!(
                "ClothJob {name} already exists in namespace {}: choose another --name",
                conn.namespace
            )),
            e => CommandError::Api {
                action: format!("creating ClothJob {name}"),
                source: e,
            },
        })?;
    let mut note = None;
    if let Some(Photo::Secret {
        name: secret,
        key,
        bytes,
    }) = &plan.photo
    {
        let secrets: Api<Secret> = Api::namespaced(conn.client.clone(), &conn.namespace);
        let body = photo_secret(&created, secret, key, bytes);
        if let Err(e) = secrets.create(&PostParams::default(), &body).await {
            // Without its photo the job cannot run: take it back.
            let _ = api.delete(&name, &DeleteParams::background()).await;
            return Err(CommandError::Api {
                action: format!("creating Secret {secret} with the photo"),
                source: e,
            });
        }
        note = Some(format!(
            "photo in Secret {secret} (key {key}), deleted with the ClothJob"
        ));
    }
    if a.watch {
        if format.is_none() {
            println!("{} created", crate::object_name(&created));
        }
        return crate::watch::watch_command(conn, &name, a.timeout, format, style).await;
    }
    match format {
        Some(f) => crate::print_objects(Some(f), &[created])?,
        None => {
            println!("{} created", crate::object_name(&created));
            if let Some(n) = note {
                println!("{n}");
            }
            println!(
                "follow it with: kubectl clothjob watch {name} -n {}",
                conn.namespace
            );
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn args(image: &str, sets: &[&str]) -> SubmitArgs {
        SubmitArgs {
            image: image.into(),
            name: None,
            output: "s3://closet/catalog".into(),
            credentials_secret: Some("s3-creds".into()),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            upload_to: None,
            watch: false,
            timeout: None,
            dry_run: false,
        }
    }

    #[test]
    fn a_url_becomes_the_source_url_and_sets_reach_the_spec() {
        let a = args(
            "https://example.com/photos/Blue Shirt.JPG?sig=x",
            &[
                "expansion.background=#F4F4F4",
                "output.maxSide=800",
                "retries=4",
                "backgroundRemoval.enabled=false",
                "reuse=Never",
            ],
        );
        let p = plan(&a, "closet").unwrap();
        let cj = p.clothjob;
        assert!(p.photo.is_none());
        assert_eq!(
            cj.spec.source.url.as_deref(),
            Some("https://example.com/photos/Blue Shirt.JPG?sig=x")
        );
        assert_eq!(cj.spec.output.max_side, 800);
        assert_eq!(cj.spec.retries, 4);
        assert_eq!(cj.spec.reuse, clothjob_api::ReusePolicy::Never);
        assert_eq!(
            cj.spec.pipeline.expansion.background.as_deref(),
            Some("#F4F4F4")
        );
        assert!(!cj.spec.pipeline.background_removal.enabled);
        assert_eq!(
            cj.spec.output.credentials_secret_name.as_deref(),
            Some("s3-creds")
        );
        let name = cj.metadata.name.unwrap();
        assert!(name.starts_with("blue-shirt-"), "{name}");
        assert_eq!(name.len(), "blue-shirt-".len() + 5);
        assert_eq!(cj.metadata.namespace.as_deref(), Some("closet"));
    }

    #[test]
    fn a_small_local_file_goes_into_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tshirt.jpg");
        std::fs::write(&path, b"jpeg bytes").unwrap();
        let mut a = args(path.to_str().unwrap(), &[]);
        a.name = Some("tee".into());
        let p = plan(&a, "closet").unwrap();
        let r = p.clothjob.spec.source.secret_ref.clone().unwrap();
        assert_eq!(
            (r.name.as_str(), r.key.as_str()),
            ("tee-photo", "tshirt.jpg")
        );
        assert_eq!(
            p.photo,
            Some(Photo::Secret {
                name: "tee-photo".into(),
                key: "tshirt.jpg".into(),
                bytes: b"jpeg bytes".to_vec()
            })
        );
    }

    #[test]
    fn a_large_file_needs_upload_to_and_upload_to_names_the_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.png");
        std::fs::write(&path, vec![0u8; SECRET_MAX_BYTES + 1]).unwrap();
        let mut a = args(path.to_str().unwrap(), &[]);
        a.name = Some("big".into());
        let e = plan(&a, "closet").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--upload-to"), "{e}");
        a.upload_to = Some("s3://closet/uploads/".into());
        let p = plan(&a, "closet").unwrap();
        assert_eq!(
            p.clothjob.spec.source.uri.as_deref(),
            Some("s3://closet/uploads/closet/big/big.png")
        );
        assert!(matches!(p.photo, Some(Photo::Upload { .. })));
    }

    #[test]
    fn usage_errors_exit_2() {
        for (image, sets, name) in [
            ("/no/such/photo.jpg", vec![], None),
            ("https://x/y.jpg", vec!["noequals"], None),
            ("https://x/y.jpg", vec!["source.url=x"], None),
            ("https://x/y.jpg", vec!["retries=many"], None),
            ("https://x/y.jpg", vec![], Some("Bad_Name")),
        ] {
            let mut a = args(image, &sets);
            a.name = name.map(String::from);
            let e = plan(&a, "ns").unwrap_err();
            assert_eq!(e.exit_code(), 2, "{image} {sets:?}: {e}");
        }
    }

    #[test]
    fn names_and_keys_are_sanitised() {
        assert!(default_name("...").starts_with("photo-"));
        assert_eq!(
            percent_decode("Red%20Dress%zz%+1.png"),
            "Red Dress%zz%+1.png"
        );
        assert!(default_name("IMG_2041 (1).jpeg").starts_with("img-2041-1-"));
        assert_eq!(secret_key("a b.jpg"), "a_b.jpg");
        assert_eq!(secret_key(""), "photo");
        assert_ne!(default_name("a"), default_name("a"));
    }
}
