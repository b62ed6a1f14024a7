//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// Waits until the pod reaches `phase`, returning it.
pub async fn wait_pod_phase(
    pods: &Api<Pod>,
    name: &str,
    phase: &str,
    timeout: Duration,
) -> Result<Pod> {
    clothjob_testenv::wait_for(
        &format!("pod {name} phase {phase}"),
        timeout,
        Duration::from_millis(200),
        || async {
            let pod = pods.get(name).await?;
            let current = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            Ok((current == phase).then_some(pod))
        },
    )
    .await
}

/// Routes `tracing` to the test output (RUST_LOG).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}
