//! End-to-end: ClothJobs on the real node (the runner image in containerd on a real kubelet),
//! from `kubectl apply` to outputs in S3.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clothjob_api::{ClothJob, StageState, conditions};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use sha2::{Digest, Sha256};

mod gemini;

const MINUTE: Duration = Duration::from_secs(60);

/// A ClothJob fetching `source_url`; `output` is `spec.output` as a flow mapping
/// ([`Case::output`]).
fn manifest(name: &str, source_url: &str, output: &str, extra: &str) -> String {
    format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{url: '{source_url}'}}\n  output: {output}\n{extra}"
    )
}

/// A source server the case's pods reach.
async fn source(case: &Case, photo: Vec<u8>, flaky: usize, slow: Duration) -> Result<SourceServer> {
    SourceServer::start_in(case.cluster(), photo, flaky, slow).await
}

/// Records every progress value the ClothJob shows, in order.
pub(crate) fn record_progress(api: Api<ClothJob>, name: &str) -> Arc<Mutex<Vec<(i32, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    tokio::spawn(async move {
        let mut stream = watcher(api, cfg).applied_objects().boxed();
        while let Some(Ok(cj)) = stream.next().await {
            if let Some(s) = cj.status
                && let Some(p) = s.progress
            {
                let mut v = out.lock().unwrap();
                let stage = s.stage.unwrap_or_default();
                if v.last() != Some(&(p, stage.clone())) {
                    v.push((p, stage));
                }
            }
        }
    });
    seen
}

/// What [`record_progress`] saw once it saw 100, checked never to go back.
pub(crate) async fn progress_to_100(
    seen: &Arc<Mutex<Vec<(i32, String)>>>,
) -> Result<Vec<(i32, String)>> {
    clothjob_testenv::wait_for(
        "the watch to see progress 100",
        MINUTE,
        Duration::from_millis(50),
        || async {
            Ok(seen
                .lock()
                .unwrap()
                .iter()
                .any(|(p, _)| *p == 100)
                .then_some(()))
        },
    )
    .await?;
    let seen = seen.lock().unwrap().clone();
    anyhow::ensure!(
        seen.windows(2).all(|w| w[0].0 <= w[1].0),
        "progress went back: {seen:?}"
    );
    Ok(seen)
}

async fn event_reasons(case: &Case, name: &str) -> Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(case.client.clone(), &case.ns);
    let list = events.list(&ListParams::default()).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect())
}

/// Waits until the ClothJob has Events with each of `reasons` (the operator records an Event
/// after the status it is about, so it may lag the condition a test waited for).
async fn wait_events(case: &Case, name: &str, reasons: &[&str]) -> Result<Vec<String>> {
    clothjob_testenv::wait_for(
        &format!("Events {reasons:?} of {name}"),
        MINUTE,
        Duration::from_millis(200),
        || async {
            let seen = event_reasons(case, name).await?;
            Ok(reasons
                .iter()
                .all(|r| seen.iter().any(|s| s == r))
                .then_some(seen))
        },
    )
    .await
}

async fn job_count(case: &Case) -> Result<usize> {
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    Ok(jobs.list(&ListParams::default()).await?.items.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_succeeds_with_weighted_progress_and_outputs() -> Result<()> {
    let case = Case::new("succeeds").await?;
    let src = source(&case, tshirt_jpeg(600, 800)?, 0, Duration::ZERO).await?;
    let api = case.clothjobs();
    let seen = record_progress(api.clone(), "tshirt");
    // kubectl apply returns at once.
    let path = case.dir.path().join("cj.yaml");
    std::fs::write(
        &path,
        manifest("tshirt", &src.url("photo.jpg"), &case.output(), ""),
    )?;
    let started = std::time::Instant::now();
    let out = case
        .cp
        .kubectl()
        .args(["apply", "-n", &case.ns, "-f"])
        .arg(&path)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // kubectl wait --for=condition=Complete returns once it is done.
    let wait = case
        .cp
        .kubectl()
        .args([
            "wait",
            "-n",
            &case.ns,
            "--for=condition=Complete",
            "clothjob/tshirt",
            "--timeout=240s",
        ])
        .output()?;
    assert!(
        wait.status.success(),
        "kubectl wait: {}\n{}",
        String::from_utf8_lossy(&wait.stderr),
        case.diagnostics()
    );
    let cj = wait_condition(&api, "tshirt", conditions::COMPLETE, MINUTE).await?;
    let status = cj.status.clone().context("status")?;
    assert_eq!(status.phase.map(|p| p.as_str()), Some("Succeeded"));
    assert_eq!(status.progress, Some(100));
    assert_eq!(status.attempts, Some(1));
    assert_eq!(status.observed_generation, cj.metadata.generation);
    assert!(status.completion_time.is_some() && status.start_time.is_some());

    // Progress never went back and reached 100.
    let seen = progress_to_100(&seen).await?;
    let values: Vec<i32> = seen.iter().map(|(p, _)| *p).collect();
    // A run this fast is written about once a second: its stage boundaries may be passed over
    // (the Gemini test sees a slow stage live); their timings are all in the final status.
    assert_eq!(values.last(), Some(&100), "{seen:?}");

    // Every stage ran, with timings.
    let stages = status.stages.clone().unwrap_or_default();
    let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "backgroundRemoval",
            "segmentation",
            "expansion",
            "encoding",
            "storing"
        ]
    );
    for s in &stages {
        assert_eq!(s.state, StageState::Succeeded, "{s:?}");
        assert!(
            s.duration_ms.is_some() && s.started_at.is_some() && s.finished_at.is_some(),
            "{s:?}"
        );
    }

    // The outputs exist where the status says, with the size and hash it says.
    let outputs = status.outputs.clone().unwrap_or_default();
    let roles: BTreeSet<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        roles,
        BTreeSet::from([
            "original", "cutout", "mask", "segments", "garment", "catalog", "square"
        ])
    );
    for o in &outputs {
        let prefix = format!("{}/{}/tshirt/", case.output_uri(), case.ns);
        assert!(
            o.uri.starts_with(&prefix),
            "{} is not under {prefix}",
            o.uri
        );
        let bytes = case.read_output(&o.uri)?;
        assert_eq!(bytes.len() as i64, o.bytes, "{}", o.name);
        assert_eq!(hex::encode(Sha256::digest(&bytes)), o.sha256, "{}", o.name);
        let img = image::load_from_memory(&bytes)?;
        assert_eq!(
            (img.width() as i32, img.height() as i32),
            (o.width, o.height),
            "{}",
            o.name
        );
        let png = bytes.starts_with(b"\x89PNG");
        assert_eq!(
            png,
            o.media_type == "image/png",
            "{}: {}",
            o.name,
            o.media_type
        );
    }
    // No image bytes in the object: it stays small.
    assert!(serde_json::to_vec(&cj)?.len() < 16 * 1024);

    // Events: Started, StageCompleted, Succeeded.
    wait_events(&case, "tshirt", &["Started", "StageCompleted", "Succeeded"]).await?;

    // kubectl get shows the printer columns; explain documents the spec.
    let get = case
        .cp
        .kubectl()
        .args(["get", "cloth", "-n", &case.ns])
        .output()?;
    let text = String::from_utf8_lossy(&get.stdout);
    for col in [
        "PHASE",
        "PROGRESS",
        "STAGE",
        "ATTEMPTS",
        "AGE",
        "Succeeded",
        "100",
    ] {
        assert!(text.contains(col), "kubectl get lacks {col}:\n{text}");
    }

    // The operator exported the stage timings.
    let metrics = case.operator.metrics().await?;
    assert!(metrics.contains("clothjob_stage_duration_seconds_count{backend=\"builtin\",outcome=\"succeeded\",stage=\"backgroundRemoval\"} 1"), "{metrics}");
    assert!(
        metrics.contains("clothjob_jobs_finished_total{outcome=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert_eq!(job_count(&case).await?, 1);
    // One runner pod, on the real node, from the runner image.
    let pods = case.runner_pods("tshirt").await?;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(clothjob_testenv::cluster::NODE_NAME)
    );
    let cs = &pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(cs.image, clothjob_api::contract::DEFAULT_RUNNER_IMAGE);
    assert_eq!(cs.restart_count, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_retried_and_then_succeeds() -> Result<()> {
    let case = Case::new("retry").await?;
    let src = source(&case, tshirt_jpeg(300, 400)?, 1, Duration::ZERO).await?;
    case.create(&manifest(
        "flaky",
        &src.url("flaky.jpg"),
        &case.output(),
        "  retries: 2\n",
    ))
    .await?;
    let cj = wait_condition(&case.clothjobs(), "flaky", conditions::COMPLETE, 3 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let status = cj.status.context("status")?;
    assert_eq!(status.attempts, Some(2));
    assert_eq!(status.progress, Some(100));
    assert_eq!(src.hits(), 2);
    wait_events(&case, "flaky", &["Retrying"]).await?;
    assert_eq!(job_count(&case).await?, 1);
    // Two attempts = two runner pods of the one Job.
    assert_eq!(case.runner_pods("flaky").await?.len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_transiently_fails_after_its_retries() -> Result<()> {
    let case = Case::new("exhaust").await?;
    let src = source(&case, Vec::new(), 0, Duration::ZERO).await?;
    case.create(&manifest(
        "down",
        &src.url("down.jpg"),
        &case.output(),
        "  retries: 1\n",
    ))
    .await?;
    let cj = wait_condition(&case.clothjobs(), "down", conditions::FAILED, 3 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let status = cj.status.context("status")?;
    assert_eq!(status.attempts, Some(2));
    assert_eq!(status.reason.as_deref(), Some("RetriesExhausted"));
    let message = status.message.unwrap_or_default();
    assert!(message.contains("503"), "{message}");
    let failed = conditions::find(
        status.conditions.as_deref().unwrap_or_default(),
        conditions::FAILED,
    )
    .cloned()
    .context("Failed")?;
    assert_eq!(failed.reason, "RetriesExhausted");
    assert!(failed.message.contains("503"));
    assert_eq!(src.hits(), 2);
    wait_events(&case, "down", &["Failed"]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_input_fails_at_once_without_retry() -> Result<()> {
    let case = Case::new("badinput").await?;
    let src = source(&case, Vec::new(), 0, Duration::ZERO).await?;
    case.create(&manifest(
        "notimage",
        &src.url("text.jpg"),
        &case.output(),
        "  retries: 3\n",
    ))
    .await?;
    let cj = wait_condition(
        &case.clothjobs(),
        "notimage",
        conditions::FAILED,
        2 * MINUTE,
    )
    .await
    .with_context(|| case.diagnostics())?;
    let status = cj.status.context("status")?;
    assert_eq!(status.attempts, Some(1), "retried a bad input");
    assert_eq!(status.reason.as_deref(), Some("BadInput"));
    let message = status.message.unwrap_or_default();
    assert!(message.starts_with("bad input: BadInput:"), "{message}");
    assert_eq!(src.hits(), 1);
    // The runner reported where it failed.
    let failure = status.runner_failure.context("runnerFailure")?;
    assert_eq!(failure.reason, "BadInput");
    assert!(!failure.retryable);
    assert!(
        status
            .stages
            .unwrap_or_default()
            .iter()
            .all(|s| s.state != StageState::Succeeded)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_mid_job_loses_nothing() -> Result<()> {
    let mut case = Case::new("restart").await?;
    let src = source(&case, tshirt_jpeg(300, 400)?, 0, Duration::from_secs(6)).await?;
    case.create(&manifest("slow", &src.url("slow.jpg"), &case.output(), ""))
        .await?;
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    clothjob_testenv::wait_for("the Job", MINUTE, Duration::from_millis(100), || async {
        Ok((!jobs.list(&ListParams::default()).await?.items.is_empty()).then_some(()))
    })
    .await?;
    case.operator.kill().await?;
    // The runner starts (and fetches the slow photo) while no operator runs.
    clothjob_testenv::wait_for(
        "the runner running without an operator",
        2 * MINUTE,
        Duration::from_millis(200),
        || async { Ok((case.running_runners("slow").await? == 1).then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    case.operator.restart().await?;
    case.operator.restart().await?;
    let cj = wait_condition(&case.clothjobs(), "slow", conditions::COMPLETE, 2 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    assert_eq!(cj.status.and_then(|s| s.attempts), Some(1));
    assert_eq!(job_count(&case).await?, 1);
    assert_eq!(case.runner_pods("slow").await?.len(), 1, "one runner pod");
    assert_eq!(case.runner_starts("slow").await?, 1, "the runner ran once");
    // SIGTERM stops it cleanly.
    let status = case.operator.terminate().await?;
    assert!(status.success(), "operator exit: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_clothjob_removes_its_job_and_pods() -> Result<()> {
    let case = Case::new("delete").await?;
    let src = source(&case, tshirt_jpeg(300, 400)?, 0, Duration::from_secs(300)).await?;
    case.create(&manifest(
        "doomed",
        &src.url("slow.jpg"),
        &case.output(),
        "",
    ))
    .await?;
    let pods: Api<Pod> = Api::namespaced(case.client.clone(), &case.ns);
    clothjob_testenv::wait_for(
        "a running runner",
        2 * MINUTE,
        Duration::from_millis(100),
        || async { Ok((case.running_runners("doomed").await? == 1).then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    case.clothjobs()
        .delete("doomed", &DeleteParams::foreground())
        .await?;
    // A pod object goes only once the kubelet has stopped its container (the runner, PID 1
    // without a SIGTERM handler, is killed after the 30 s grace period).
    clothjob_testenv::wait_for(
        "Job and pods gone",
        2 * MINUTE,
        Duration::from_millis(200),
        || async {
            let pods_left = pods.list(&ListParams::default()).await?.items.len();
            let jobs_left = job_count(&case).await?;
            let cj_left = case.clothjobs().get_opt("doomed").await?.is_some();
            Ok((pods_left == 0 && jobs_left == 0 && !cj_left).then_some(()))
        },
    )
    .await
    .with_context(|| case.diagnostics())?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_clothjob_is_deleted_after_its_ttl() -> Result<()> {
    let case = Case::new("ttl").await?;
    let src = source(&case, tshirt_jpeg(300, 400)?, 0, Duration::ZERO).await?;
    let extra = "  ttlSecondsAfterFinished: 2\n  pipeline: {backgroundRemoval: {enabled: false}, segmentation: {enabled: false}, expansion: {enabled: false}}\n";
    case.create(&manifest(
        "short",
        &src.url("photo.jpg"),
        &case.output(),
        extra,
    ))
    .await?;
    let cj = wait_condition(&case.clothjobs(), "short", conditions::COMPLETE, 2 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    // Disabled stages were skipped, never reported done; only the original was written.
    let status = cj.status.context("status")?;
    let outputs: Vec<String> = status
        .outputs
        .unwrap_or_default()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(outputs, ["original"]);
    let states: Vec<StageState> = status
        .stages
        .unwrap_or_default()
        .iter()
        .map(|s| s.state)
        .collect();
    assert_eq!(
        states,
        [
            StageState::Skipped,
            StageState::Skipped,
            StageState::Skipped,
            StageState::Succeeded,
            StageState::Succeeded
        ]
    );
    clothjob_testenv::wait_for(
        "ClothJob and Job deleted",
        MINUTE,
        Duration::from_millis(200),
        || async {
            Ok(
                (case.clothjobs().get_opt("short").await?.is_none()
                    && job_count(&case).await? == 0)
                    .then_some(()),
            )
        },
    )
    .await?;
    Ok(())
}
