//! Resolving a container's environment the way the kubelet does: `env` (plain values,
//! `secretKeyRef`, `configMapKeyRef`, `fieldRef`), `envFrom` (with prefix) and `$(VAR)`
//! expansion, plus the few host variables a local process needs. A missing Secret, ConfigMap or
//! key is an error worded as the kubelet words it (`secret "x" not found`, `couldn't find key k
//! in Secret ns/x`), which the pod then shows as `CreateContainerConfigError`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;

/// Host variables passed to pod processes (everything else of the test process is dropped).
const PASSTHROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "LLVM_PROFILE_FILE",
];

/// Looks up Secrets and ConfigMaps of one namespace, caching them for one pod start.
pub(crate) struct Lookup {
    client: kube::Client,
    namespace: String,
    secrets: HashMap<String, Option<Secret>>,
    config_maps: HashMap<String, Option<ConfigMap>>,
}

impl Lookup {
    pub(crate) fn new(client: kube::Client, namespace: &str) -> Self {
        Lookup {
            client,
            namespace: namespace.to_string(),
            secrets: HashMap::new(),
            config_maps: HashMap::new(),
        }
    }

    /// The Secret's data (decoded), or `None` if it does not exist.
    pub(crate) async fn secret(&mut self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let s = api
                .get_opt(name)
                .await
                .with_context(|| format!("getting secret {}/{name}", self.namespace))?;
            self.secrets.insert(name.to_string(), s);
        }
        Ok(self.secrets.get(name).and_then(|s| s.as_ref()).map(|s| {
            s.data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }

    /// The ConfigMap's `data` and `binaryData` merged, or `None` if it does not exist.
    pub(crate) async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let c = api
                .get_opt(name)
                .await
                .with_context(|| format!("getting configmap {}/{name}", self.namespace))?;
            self.config_maps.insert(name.to_string(), c);
        }
        Ok(self
            .config_maps
            .get(name)
            .and_then(|c| c.as_ref())
            .map(|c| {
                let mut out: BTreeMap<String, Vec<u8>> = c
                    .data
                    .clone()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in c.binary_data.clone().unwrap_or_default() {
                    out.insert(k, v.0);
                }
                out
            }))
    }
}

/// Value of a downward-API `fieldRef` path.
pub(crate) fn field_ref(pod: &Pod, node_name: &str, path: &str) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| -> Option<&str> {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("']"))
            .and_then(|r| r.strip_prefix("['"))
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| node_name.to_string()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".to_string()),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
        "status.podIPs" | "status.hostIPs" => "127.0.0.1".to_string(),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                bail!("unsupported fieldRef {path}")
            }
        }
    })
}

/// Expands `$(VAR)` references (`$$` escapes a `$`), as the kubelet does for env values,
/// command and args. Unknown references are left as they are.
pub(crate) fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let name = &inner[..end];
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The host part of the environment (see [`PASSTHROUGH`]).
pub(crate) fn host_env() -> Vec<(String, String)> {
    PASSTHROUGH
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// Resolves the container's `envFrom` and `env` in order (later entries win), expanding `$(VAR)`.
pub(crate) async fn resolve(
    lookup: &mut Lookup,
    pod: &Pod,
    container: &Container,
    node_name: &str,
) -> Result<Vec<(String, String)>> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let set = |out: &mut Vec<(String, String)>,
               vars: &mut HashMap<String, String>,
               k: String,
               v: String| {
        out.retain(|(ek, _)| *ek != k);
        vars.insert(k.clone(), v.clone());
        out.push((k, v));
    };
    for from in container.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, optional) = if let Some(s) = &from.secret_ref {
            (
                lookup.secret(&s.name).await?,
                format!("secret {:?}", s.name),
                s.optional.unwrap_or(false),
            )
        } else if let Some(c) = &from.config_map_ref {
            (
                lookup.config_map(&c.name).await?,
                format!("configmap {:?}", c.name),
                c.optional.unwrap_or(false),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    let key = format!("{prefix}{k}");
                    if key.is_empty() || key.contains('=') {
                        continue;
                    }
                    set(
                        &mut out,
                        &mut vars,
                        key,
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => bail!("{what} not found"),
        }
    }
    for var in container.env.clone().unwrap_or_default() {
        let value = if let Some(src) = &var.value_from {
            if let Some(r) = &src.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match lookup.secret(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => bail!(
                            "couldn't find key {} in Secret {}/{}",
                            r.key,
                            lookup.namespace,
                            r.name
                        ),
                    },
                    None if optional => continue,
                    None => bail!("secret {:?} not found", r.name),
                }
            } else if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match lookup.config_map(&r.name).await? {
                    Some(d) => match d.get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => bail!(
                            "couldn't find key {} in ConfigMap {}/{}",
                            r.key,
                            lookup.namespace,
                            r.name
                        ),
                    },
                    None if optional => continue,
                    None => bail!("configmap {:?} not found", r.name),
                }
            } else if let Some(f) = &src.field_ref {
                field_ref(pod, node_name, &f.field_path)?
            } else if src.resource_field_ref.is_some() {
                tracing::warn!(
                    "env {}: resourceFieldRef is not supported, using an empty value",
                    var.name
                );
                String::new()
            } else {
                String::new()
            }
        } else {
            expand(var.value.as_deref().unwrap_or(""), &vars)
        };
        set(&mut out, &mut vars, var.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_references() {
        let vars = HashMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y$(B)$$(A)$", &vars), "x1y$(B)$(A)$");
    }
}
