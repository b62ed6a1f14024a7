//! The real-node cluster itself: the node becomes Ready, a pod runs in containerd (the pause
//! image), a pod whose image is absent stays Pending with ErrImageNeverPull, and teardown leaves
//! no process, cgroup or directory behind.

use std::time::Duration;

use anyhow::{Context, Result};
use clothjob_testenv::{Cluster, wait_for};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

fn pod(name: &str, image: &str) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never"}],
        }
    }))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_node_runs_pods_and_tears_down_cleanly() -> Result<()> {
    let cluster = Cluster::start().await?;
    let dir = cluster.dir().to_path_buf();
    let cgroup = format!("/sys/fs/cgroup/pids/clothjob-{}-0", std::process::id());
    assert!(std::path::Path::new(&cgroup).is_dir(), "{cgroup}");
    let outcome = async {
        let cp = cluster.control_plane()?;
        let ns = cp.create_namespace("node").await?;
        let pods: Api<Pod> = Api::namespaced(cp.client().await?, &ns);
        pods.create(
            &PostParams::default(),
            &pod("pause", "registry.k8s.io/pause:3.10.1")?,
        )
        .await?;
        pods.create(
            &PostParams::default(),
            &pod("absent", "example.invalid/absent:1.0")?,
        )
        .await?;
        wait_for(
            "the pause pod Running",
            Duration::from_secs(90),
            Duration::from_millis(200),
            || async {
                let p = pods.get("pause").await?;
                let phase = p.status.and_then(|s| s.phase);
                Ok((phase.as_deref() == Some("Running")).then_some(()))
            },
        )
        .await?;
        let reason = wait_for(
            "the absent image's waiting reason",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                let p = pods.get("absent").await?;
                // ContainerCreating comes first; a real kubelet then reports why it cannot start.
                Ok(p.status
                    .and_then(|s| s.container_statuses)
                    .and_then(|c| c.into_iter().next())
                    .and_then(|c| c.state?.waiting?.reason)
                    .filter(|r| r != "ContainerCreating"))
            },
        )
        .await?;
        assert_eq!(reason, "ErrImageNeverPull");
        let p = pods.get("absent").await?;
        assert_eq!(p.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
        anyhow::Ok(())
    }
    .await;
    let diag = cluster.diagnostics();
    outcome.with_context(|| diag)?;
    drop(cluster);
    assert!(
        !std::path::Path::new(&cgroup).exists(),
        "{cgroup} left behind"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}
