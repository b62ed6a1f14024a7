//! The apiserver connection: `--kubeconfig`, `--context` and `-n` over kubeconfig's usual
//! rules ($KUBECONFIG, ~/.kube/config, then the in-cluster service account).

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::args::Global;
use crate::error::CommandError;

/// A client and the namespace the command works in.
pub struct Connection {
    /// The client.
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

/// Connects as the global flags say.
pub async fn connect(g: &Global) -> Result<Connection, CommandError> {
    let opts = KubeConfigOptions {
        context: g.context.clone(),
        cluster: None,
        user: None,
    };
    let err = |e: String| CommandError::LoadKubeconfig(e);
    let config = match &g.kubeconfig {
        Some(path) => {
            let kc =
                Kubeconfig::read_from(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| err(e.to_string()))?
        }
        None if g.context.is_some() => Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| err(e.to_string()))?,
        None => Config::infer().await.map_err(|e| err(e.to_string()))?,
    };
    let namespace = g
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config).map_err(|e| err(e.to_string()))?;
    Ok(Connection { client, namespace })
}
