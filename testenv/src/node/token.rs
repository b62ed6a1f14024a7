//! Service-account credentials for pod processes: a TokenRequest bound to the pod, written
//! with the CA and namespace into a per-pod dir, plus a kubeconfig pointing at the apiserver
//! (exported as `KUBECONFIG`; in a real pod the in-cluster config would be used instead).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};

use crate::kubeconfig::{Credentials, kubeconfig_json};

/// Requests a token for the pod's ServiceAccount, bound to the pod.
pub(crate) async fn pod_token(
    client: &kube::Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration_seconds: Option<i64>,
    issuer: &str,
) -> Result<String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".to_string());
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: Some(vec![audience.unwrap_or(issuer).to_string()]),
            expiration_seconds: Some(expiration_seconds.unwrap_or(3600).max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let tr = api
        .create_token_request(&sa, &PostParams::default(), &tr)
        .await
        .with_context(|| format!("TokenRequest for serviceaccount {ns}/{sa}"))?;
    tr.status
        .and_then(|s| s.token)
        .context("TokenRequest without token")
}

/// Writes `token`, `ca.crt`, `namespace` into `dir` and a kubeconfig next to them; returns the
/// kubeconfig path.
pub(crate) fn write_credentials(
    dir: &Path,
    server: &str,
    ca_pem: &str,
    namespace: &str,
    token: &str,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("token"), token)?;
    std::fs::write(dir.join("ca.crt"), ca_pem)?;
    std::fs::write(dir.join("namespace"), namespace)?;
    let kc = kubeconfig_json(server, ca_pem, &Credentials::Token(token), Some(namespace));
    let path = dir.join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec_pretty(&kc)?)?;
    Ok(path)
}
