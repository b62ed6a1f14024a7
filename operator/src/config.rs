//! Operator settings, from flags or environment variables.

use clap::Parser;

/// Settings of the operator process.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "clothjob-operator",
    version,
    about = "Reconciles ClothJobs into runner Jobs"
)]
pub struct OperatorConfig {
    /// Runner image used when a ClothJob does not name one.
    #[arg(long, env = "CLOTHJOB_RUNNER_IMAGE", default_value = clothjob_api::contract::DEFAULT_RUNNER_IMAGE)]
    pub runner_image: String,

    /// Service account of runner pods when a ClothJob does not name one. The operator keeps
    /// it (and a RoleBinding to the `clothjob-runner` ClusterRole) in each namespace it runs jobs in.
    #[arg(long, env = "CLOTHJOB_RUNNER_SERVICE_ACCOUNT", default_value = clothjob_api::contract::DEFAULT_RUNNER_SERVICE_ACCOUNT)]
    pub runner_service_account: String,

    /// ClusterRole bound to the runner service account in each namespace.
    #[arg(
        long,
        env = "CLOTHJOB_RUNNER_CLUSTER_ROLE",
        default_value = "clothjob-runner"
    )]
    pub runner_cluster_role: String,

    /// Only watch this namespace (all namespaces when empty).
    #[arg(long, env = "CLOTHJOB_WATCH_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = "CLOTHJOB_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: String,

    /// Seconds of silence after which a running job is reconciled again anyway.
    #[arg(long, env = "CLOTHJOB_RESYNC_SECONDS", default_value_t = 300)]
    pub resync_seconds: u64,
}

impl OperatorConfig {
    /// Defaults, as if no flag or variable were given.
    pub fn defaults() -> Self {
        Self {
            runner_image: clothjob_api::contract::DEFAULT_RUNNER_IMAGE.to_string(),
            runner_service_account: clothjob_api::contract::DEFAULT_RUNNER_SERVICE_ACCOUNT
                .to_string(),
            runner_cluster_role: "clothjob-runner".to_string(),
            namespace: String::new(),
            http_addr: "127.0.0.1:0".to_string(),
            resync_seconds: 300,
        }
    }
}
