//! A private control plane and a fake node clean up after themselves on drop.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use clothjob_testenv::{ControlPlane, FakeNode, NodeConfig, wait_for};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

fn pids_of(children_of: &Path) -> Vec<u32> {
    // Processes whose command line mentions the control plane dir (etcd data dir, cert paths...).
    let needle = children_of.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn drop_stops_everything() -> Result<()> {
    let started = Instant::now();
    let cp = ControlPlane::start().await?;
    eprintln!("cold start of the control plane: {:?}", started.elapsed());
    let dir = cp.dir().to_path_buf();
    assert_eq!(
        pids_of(&dir).len(),
        3,
        "etcd, kube-apiserver, kube-controller-manager"
    );

    let ns = cp.create_namespace("lifecycle").await?;
    let node = FakeNode::start(&cp, NodeConfig::new().image("busybox", "/bin/sh")).await?;
    let client = cp.client().await?;
    let node_obj = Api::<Node>::all(client.clone()).get(node.name()).await?;
    let ready = node_obj
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    assert!(
        ready
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    );

    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "sleeper" },
        "spec": { "restartPolicy": "Never", "containers": [
            { "name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 300"] }
        ]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let pid = wait_for(
        "sleeper running",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async { Ok(node.pid(&ns, "sleeper")) },
    )
    .await?;
    drop(node);
    // Killed: gone, or a zombie until its parent reaps it (which may take a moment).
    let dead = |pid: u32| match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            stat.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z")
        }
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dead(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(dead(pid), "pod process killed with the node");

    drop(cp);
    assert!(pids_of(&dir).is_empty(), "control plane processes stopped");
    assert!(!dir.exists() || std::env::var("CLOTHJOB_KEEP_TESTENV").is_ok());
    Ok(())
}

/// The node keeps renewing its heartbeat: once Ready, it is Ready and untainted at every look for longer
/// than kube-controller-manager's default `--node-monitor-grace-period` (50 s), after which a
/// silent node would be marked NotReady and tainted. (~65 s: the check is the time itself.)
#[tokio::test]
async fn node_stays_ready_and_untainted() -> Result<()> {
    let cp = ControlPlane::start().await?;
    let node = FakeNode::start(&cp, NodeConfig::new()).await?;
    let nodes: Api<Node> = Api::all(cp.client().await?);
    // A new node starts with the not-ready taint until its first Ready heartbeat is seen.
    let ready_and_untainted = |n: &Node| {
        let no_taints = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_none_or(|t| t.is_empty());
        let ready = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        no_taints && ready
    };
    wait_for(
        "the node Ready and untainted",
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async { Ok(ready_and_untainted(&nodes.get(node.name()).await?).then_some(())) },
    )
    .await?;
    let started = std::time::Instant::now();
    let mut looks = 0;
    while started.elapsed() < Duration::from_secs(65) {
        let n = nodes.get(node.name()).await?;
        let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
        assert!(
            taints.is_empty(),
            "unexpected taints after {:?}: {taints:?}",
            started.elapsed()
        );
        let conds = n.status.and_then(|s| s.conditions).unwrap_or_default();
        assert!(
            conds
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True"),
            "not Ready after {:?}: {conds:?}",
            started.elapsed()
        );
        looks += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(looks >= 30, "only {looks} looks in 65 s");
    Ok(())
}
