//! Building kubeconfig documents and [`kube::Client`]s from them.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// How a kubeconfig user authenticates.
pub(crate) enum Credentials<'a> {
    /// Client certificate and key (PEM).
    Cert { cert_pem: &'a str, key_pem: &'a str },
    /// Bearer token.
    Token(&'a str),
}

/// A single-context kubeconfig as a JSON value (JSON is valid YAML, so it can be written as-is).
pub(crate) fn kubeconfig_json(
    server: &str,
    ca_pem: &str,
    creds: &Credentials<'_>,
    namespace: Option<&str>,
) -> serde_json::Value {
    let user = match creds {
        Credentials::Cert { cert_pem, key_pem } => serde_json::json!({
            "client-certificate-data": STANDARD.encode(cert_pem),
            "client-key-data": STANDARD.encode(key_pem),
        }),
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    let mut context = serde_json::json!({ "cluster": "testenv", "user": "testenv" });
    if let Some(ns) = namespace {
        context["namespace"] = serde_json::Value::String(ns.to_string());
    }
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "testenv", "cluster": {
            "server": server,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{ "name": "testenv", "user": user }],
        "contexts": [{ "name": "testenv", "context": context }],
        "current-context": "testenv",
    })
}

/// A client for a kubeconfig value; must be called inside a Tokio runtime, and the client
/// must only be used on that runtime.
pub(crate) async fn client_from_json(value: &serde_json::Value) -> Result<kube::Client> {
    let kubeconfig: Kubeconfig =
        serde_json::from_value(value.clone()).context("parsing generated kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("loading generated kubeconfig")?;
    kube::Client::try_from(config).context("building kube client")
}
