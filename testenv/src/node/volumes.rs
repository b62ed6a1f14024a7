//! Materializing pod volumes into per-pod directories, standing in for the kubelet's mounts.
//!
//! A pod process cannot see the container's `mountPath`s (there is no mount namespace), so each
//! supported volume is written to `<pod dir>/volumes/<name>` and every env var value and
//! argument that starts with a `mountPath` (or is `--flag=<mountPath>...`) is rewritten to point
//! at that local directory instead — see `Mounts::rewrite`. Supported: `secret`, `configMap`
//! (with `binaryData` and `items`), `emptyDir`, `hostPath` (used in place), `downwardAPI`
//! (`fieldRef` items) and `projected` (`serviceAccountToken`, `secret`, `configMap`,
//! `downwardAPI` sources; this covers the admission-injected `kube-api-access-*` volume).
//! Other volume types are left alone (not materialized, paths not rewritten).
//!
//! A missing Secret, ConfigMap or item key fails with a [`MountError`] worded as the kubelet's
//! `FailedMount` Event (`MountVolume.SetUp failed for volume "v" : secret "x" not found`); the pod
//! then waits in `ContainerCreating`, as on a real node.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use super::env::{Lookup, field_ref};
use super::token::pod_token;

/// A volume that cannot be set up because a Secret, ConfigMap or key it needs is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountError {
    /// The pod's volume.
    pub volume: String,
    /// Why, e.g. `secret "x" not found`.
    pub message: String,
}

impl std::fmt::Display for MountError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MountVolume.SetUp failed for volume {:?} : {}",
            self.volume, self.message
        )
    }
}

impl std::error::Error for MountError {}

fn mount_error(volume: &str, message: String) -> anyhow::Error {
    anyhow::Error::new(MountError {
        volume: volume.to_string(),
        message,
    })
}

/// What a volume source is, for the kubelet's wording of a missing key.
#[derive(Clone, Copy)]
enum Source {
    Secret,
    ConfigMap,
}

impl Source {
    fn missing_key(self, key: &str) -> String {
        match self {
            Source::Secret => format!("references non-existent secret key: {key}"),
            Source::ConfigMap => format!("configmap references non-existent config key: {key}"),
        }
    }

    fn missing(self, name: &str) -> String {
        match self {
            Source::Secret => format!("secret {name:?} not found"),
            Source::ConfigMap => format!("configmap {name:?} not found"),
        }
    }
}

/// Container paths mapped to local paths, longest container path first.
#[derive(Debug, Default, Clone)]
pub(crate) struct Mounts {
    entries: Vec<(String, PathBuf)>,
}

fn strip_mount<'a>(value: &'a str, mount: &str) -> Option<&'a str> {
    let mount = mount.trim_end_matches('/');
    if mount.is_empty() {
        return None;
    }
    let rest = value.strip_prefix(mount)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

impl Mounts {
    /// Adds a mapping from a container path to a local path.
    pub(crate) fn add(&mut self, container_path: &str, local: PathBuf) {
        self.entries.push((container_path.to_string(), local));
        self.entries
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.trim_end_matches('/').len()));
    }

    /// Rewrites `value` if it starts with a mapped container path (also in `--flag=value` form).
    pub(crate) fn rewrite(&self, value: &str) -> String {
        for (mount, local) in &self.entries {
            if let Some(rest) = strip_mount(value, mount) {
                return format!("{}{rest}", local.display());
            }
        }
        if let Some((flag, v)) = value.split_once('=')
            && flag.starts_with('-')
        {
            for (mount, local) in &self.entries {
                if let Some(rest) = strip_mount(v, mount) {
                    return format!("{flag}={}{rest}", local.display());
                }
            }
        }
        value.to_string()
    }
}

/// What volume materialization needs from the node.
pub(crate) struct VolumeContext<'a> {
    pub client: &'a kube::Client,
    pub node_name: &'a str,
    pub issuer: &'a str,
    pub ca_pem: &'a str,
}

fn safe_rel(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("unsafe volume item path {path:?}");
    }
    Ok(p.to_path_buf())
}

fn write_file(base: &Path, rel: &str, bytes: &[u8], mode: Option<i32>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = base.join(safe_rel(rel)?);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    if let Some(mode) = mode {
        let mode = u32::try_from(mode).unwrap_or(0o644) & 0o777;
        // Keep files readable by the owner (the test user) whatever the mode says.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o600))?;
    }
    Ok(())
}

/// Writes `data` (all keys, or only `items` key→path) of a `source` of `volume` into `dir`.
struct Keys<'a> {
    volume: &'a str,
    source: Source,
    items: Option<&'a Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
}

fn write_keys(dir: &Path, data: &BTreeMap<String, Vec<u8>>, keys: &Keys<'_>) -> Result<()> {
    let Keys {
        volume,
        source,
        items,
        default_mode,
        optional,
    } = *keys;
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(v) => write_file(dir, &item.path, v, item.mode.or(default_mode))?,
                    None if optional => {}
                    None => return Err(mount_error(volume, source.missing_key(&item.key))),
                }
            }
        }
        _ => {
            for (k, v) in data {
                write_file(dir, k, v, default_mode)?;
            }
        }
    }
    Ok(())
}

/// Materializes the pod's volumes under `pod_dir/volumes` and returns the container's mounts.
pub(crate) async fn materialize(
    vctx: &VolumeContext<'_>,
    lookup: &mut Lookup,
    pod: &Pod,
    container: &Container,
    pod_dir: &Path,
) -> Result<Mounts> {
    let mut local_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for vol in &volumes {
        let dir = pod_dir.join("volumes").join(&vol.name);
        if let Some(src) = &vol.secret {
            let name = src.secret_name.clone().unwrap_or_default();
            let keys = Keys {
                volume: &vol.name,
                source: Source::Secret,
                items: src.items.as_ref(),
                default_mode: src.default_mode,
                optional: src.optional.unwrap_or(false),
            };
            std::fs::create_dir_all(&dir)?;
            match lookup.secret(&name).await? {
                Some(data) => write_keys(&dir, &data, &keys)?,
                None if keys.optional => {}
                None => return Err(mount_error(&vol.name, Source::Secret.missing(&name))),
            }
        } else if let Some(src) = &vol.config_map {
            let name = src.name.clone();
            let keys = Keys {
                volume: &vol.name,
                source: Source::ConfigMap,
                items: src.items.as_ref(),
                default_mode: src.default_mode,
                optional: src.optional.unwrap_or(false),
            };
            std::fs::create_dir_all(&dir)?;
            match lookup.config_map(&name).await? {
                Some(data) => write_keys(&dir, &data, &keys)?,
                None if keys.optional => {}
                None => return Err(mount_error(&vol.name, Source::ConfigMap.missing(&name))),
            }
        } else if vol.empty_dir.is_some() {
            std::fs::create_dir_all(&dir)?;
        } else if let Some(src) = &vol.host_path {
            local_dirs.insert(vol.name.clone(), PathBuf::from(&src.path));
            continue;
        } else if let Some(src) = &vol.downward_api {
            std::fs::create_dir_all(&dir)?;
            for item in src.items.clone().unwrap_or_default() {
                if let Some(f) = &item.field_ref {
                    let v = field_ref(pod, vctx.node_name, &f.field_path)?;
                    write_file(
                        &dir,
                        &item.path,
                        v.as_bytes(),
                        item.mode.or(src.default_mode),
                    )?;
                }
            }
        } else if let Some(src) = &vol.projected {
            std::fs::create_dir_all(&dir)?;
            for source in src.sources.clone().unwrap_or_default() {
                if let Some(t) = &source.service_account_token {
                    let token = pod_token(
                        vctx.client,
                        pod,
                        t.audience.as_deref(),
                        t.expiration_seconds,
                        vctx.issuer,
                    )
                    .await?;
                    write_file(&dir, &t.path, token.as_bytes(), src.default_mode)?;
                }
                if let Some(s) = &source.secret {
                    let keys = Keys {
                        volume: &vol.name,
                        source: Source::Secret,
                        items: s.items.as_ref(),
                        default_mode: src.default_mode,
                        optional: s.optional.unwrap_or(false),
                    };
                    match lookup.secret(&s.name).await? {
                        Some(data) => write_keys(&dir, &data, &keys)?,
                        None if keys.optional => {}
                        None => {
                            return Err(mount_error(&vol.name, Source::Secret.missing(&s.name)));
                        }
                    }
                }
                if let Some(c) = &source.config_map {
                    let keys = Keys {
                        volume: &vol.name,
                        source: Source::ConfigMap,
                        items: c.items.as_ref(),
                        default_mode: src.default_mode,
                        optional: c.optional.unwrap_or(false),
                    };
                    // kube-root-ca.crt is published by the controller manager; use our CA directly.
                    let data = if c.name == "kube-root-ca.crt" {
                        Some(BTreeMap::from([(
                            "ca.crt".to_string(),
                            vctx.ca_pem.as_bytes().to_vec(),
                        )]))
                    } else {
                        lookup.config_map(&c.name).await?
                    };
                    match data {
                        Some(data) => write_keys(&dir, &data, &keys)?,
                        None if keys.optional => {}
                        None => {
                            return Err(mount_error(&vol.name, Source::ConfigMap.missing(&c.name)));
                        }
                    }
                }
                if let Some(d) = &source.downward_api {
                    for item in d.items.clone().unwrap_or_default() {
                        if let Some(f) = &item.field_ref {
                            let v = field_ref(pod, vctx.node_name, &f.field_path)?;
                            write_file(
                                &dir,
                                &item.path,
                                v.as_bytes(),
                                item.mode.or(src.default_mode),
                            )?;
                        }
                    }
                }
            }
        } else {
            tracing::debug!("volume {}: unsupported type, left alone", vol.name);
            continue;
        }
        local_dirs.insert(vol.name.clone(), dir);
    }
    let mut mounts = Mounts::default();
    for vm in container.volume_mounts.clone().unwrap_or_default() {
        let Some(local) = local_dirs.get(&vm.name) else {
            continue;
        };
        let local = match vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => local.join(safe_rel(sub)?),
            None => local.clone(),
        };
        mounts.add(&vm.mount_path, local);
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_paths() {
        let mut m = Mounts::default();
        m.add("/etc/conf", PathBuf::from("/tmp/a"));
        m.add("/etc/conf/sub", PathBuf::from("/tmp/b"));
        assert_eq!(m.rewrite("/etc/conf/x.yaml"), "/tmp/a/x.yaml");
        assert_eq!(m.rewrite("/etc/conf/sub/y"), "/tmp/b/y");
        assert_eq!(m.rewrite("/etc/conf"), "/tmp/a");
        assert_eq!(m.rewrite("/etc/confx"), "/etc/confx");
        assert_eq!(m.rewrite("--config=/etc/conf/x"), "--config=/tmp/a/x");
        assert_eq!(m.rewrite("plain"), "plain");
    }
}
