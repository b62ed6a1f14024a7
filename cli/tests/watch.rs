//! `watch`'s follow loop against a real kube-apiserver and etcd: versions are seen in order,
//! an apiserver restart mid-watch is survived (the watch reconnects from the last
//! resourceVersion, or reads the object again when that version is gone) and the end is
//! seen, `--timeout` and a deleted ClothJob end it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use clothjob_api::ClothJob;
use clothjob_cli::error::CommandError;
use clothjob_cli::watch::{Outcome, follow, outcome};
use clothjob_testenv::{ControlPlane, bins, wait_for};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

fn clothjob(name: &str) -> ClothJob {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "closetconnect.io/v1alpha1", "kind": "ClothJob",
        "metadata": {"name": name},
        "spec": {"source": {"url": "http://127.0.0.1:9/tee.jpg"}, "output": {"uri": "file:///out"}},
    }))
    .unwrap()
}

async fn set_status(api: &Api<ClothJob>, name: &str, status: serde_json::Value) -> Result<()> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": status})),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_resumes_after_an_apiserver_restart_and_ends_on_timeout_or_deletion() -> Result<()> {
    // Its own control plane: the apiserver is restarted.
    let cp = ControlPlane::start().await?;
    cp.install_crds(bins::workspace_root().join("crds")).await?;
    let ns = cp.create_namespace("cli-watch").await?;
    let client = cp.client().await?;
    let api: Api<ClothJob> = Api::namespaced(client, &ns);
    api.create(&PostParams::default(), &clothjob("tee")).await?;

    let seen = Arc::new(Mutex::new(Vec::<i32>::new()));
    let record = seen.clone();
    let (follow_api, follow_ns) = (api.clone(), ns.clone());
    let followed = tokio::spawn(async move {
        follow(
            &follow_api,
            &follow_ns,
            "tee",
            Some(Duration::from_secs(120)),
            move |cj| {
                if let Some(p) = cj.and_then(|c| c.status.as_ref()).and_then(|s| s.progress) {
                    let mut v = record.lock().unwrap();
                    if v.last() != Some(&p) {
                        v.push(p);
                    }
                }
            },
        )
        .await
    });
    let saw = |p: i32| {
        let seen = seen.clone();
        move || {
            let seen = seen.clone();
            async move { Ok(seen.lock().unwrap().contains(&p).then_some(())) }
        }
    };
    set_status(
        &api,
        "tee",
        serde_json::json!({"phase": "Running", "progress": 30}),
    )
    .await?;
    wait_for(
        "progress 30",
        Duration::from_secs(30),
        Duration::from_millis(50),
        saw(30),
    )
    .await?;

    // The apiserver goes away and comes back; versions written before the watch reconnects
    // still arrive, in order.
    cp.restart_apiserver().await?;
    set_status(&api, "tee", serde_json::json!({"progress": 60})).await?;
    set_status(&api, "tee", serde_json::json!({"progress": 80})).await?;
    set_status(
        &api,
        "tee",
        serde_json::json!({"progress": 100, "phase": "Succeeded", "conditions": [{"type": "Complete", "status": "True", "reason": "Succeeded", "message": "done", "lastTransitionTime": "2026-11-25T10:00:05Z"}]}),
    )
    .await?;
    let done = tokio::time::timeout(Duration::from_secs(120), followed).await???;
    assert_eq!(outcome(&done), Outcome::Succeeded);
    // A restarted apiserver's watch cache starts at etcd's current revision, so resuming
    // from the last version seen may be refused (410 Gone): then the object is read again.
    // Versions in between can be skipped, never shown out of order.
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.first(), Some(&30), "{seen:?}");
    assert_eq!(seen.last(), Some(&100), "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // A job that does not finish in time: TimedOut (exit 3).
    api.create(&PostParams::default(), &clothjob("slow"))
        .await?;
    let e = follow(&api, &ns, "slow", Some(Duration::from_secs(1)), |_| {})
        .await
        .unwrap_err();
    assert!(matches!(e, CommandError::TimedOut(..)), "{e}");
    assert_eq!(e.exit_code(), 3);

    // A ClothJob deleted while watched: a failure (exit 1); a missing one: NotFound.
    let (del_api, del_ns) = (api.clone(), ns.clone());
    let (read_tx, read_rx) = tokio::sync::oneshot::channel();
    let watching = tokio::spawn(async move {
        let mut read = Some(read_tx);
        follow(
            &del_api,
            &del_ns,
            "slow",
            Some(Duration::from_secs(60)),
            move |cj| {
                if cj.is_some()
                    && let Some(tx) = read.take()
                {
                    let _ = tx.send(());
                }
            },
        )
        .await
    });
    set_status(&api, "slow", serde_json::json!({"progress": 5})).await?;
    // Delete only once the follower has read the object (else it is NotFound, not Deleted).
    tokio::time::timeout(Duration::from_secs(30), read_rx).await??;
    api.delete("slow", &DeleteParams::default()).await?;
    let e = tokio::time::timeout(Duration::from_secs(60), watching)
        .await??
        .unwrap_err();
    assert!(
        matches!(e, CommandError::JobFailed { ref reason, .. } if reason == "Deleted"),
        "{e}"
    );
    assert_eq!(e.exit_code(), 1);
    let e = follow(&api, &ns, "nosuch", None, |_| {}).await.unwrap_err();
    assert!(matches!(e, CommandError::NotFound { .. }), "{e}");
    Ok(())
}
