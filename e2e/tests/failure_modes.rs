//! End-to-end, on the real node: every way a ClothJob can get stuck ends with a reason in
//! its status and a Warning Event (image pulls, missing Secrets, no node, a pod the Job
//! controller cannot create, a Job deleted by someone else, a spec the apiserver or the
//! runner refuses), and an operator restart announces nothing twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::time::Duration;

use anyhow::{Context, Result, bail};
use clothjob_api::{ClothJob, conditions};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

const MINUTE: Duration = Duration::from_secs(60);
/// The pending time-out of most of these tests' operators.
const PENDING_TIMEOUT_S: u64 = 25;
/// An image the node does not have (allowed by the test operator's configuration).
const ABSENT_IMAGE: &str = "ghcr.io/closetconnect/clothjob-runner:absent";
/// A source nobody serves (for jobs whose runner never starts).
const NOWHERE: &str = "http://198.18.0.2:9/never.jpg";

async fn case(prefix: &str) -> Result<Case> {
    case_with(prefix, PENDING_TIMEOUT_S).await
}

fn manifest(name: &str, source_url: &str, output: &str, extra: &str) -> String {
    format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{url: '{source_url}'}}\n  output: {output}\n{extra}"
    )
}

/// A case whose operator fails jobs whose pod cannot start after `pending_timeout_s` and
/// allows [`ABSENT_IMAGE`] as a runner image.
async fn case_with(prefix: &str, pending_timeout_s: u64) -> Result<Case> {
    Case::with_operator_args(
        prefix,
        &[
            "--pending-timeout-seconds",
            &pending_timeout_s.to_string(),
            "--allowed-runner-images",
            &format!(
                "{},{ABSENT_IMAGE}",
                clothjob_api::contract::DEFAULT_RUNNER_IMAGE
            ),
        ],
    )
    .await
}

/// The (reason, note, type, occurrences) of every Event about ClothJob `name` (an Event
/// object stands for a series when the recorder saw the same reason again).
async fn events(case: &Case, name: &str) -> Result<Vec<(String, String, String, i32)>> {
    let api: Api<Event> = Api::namespaced(case.client.clone(), &case.ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ClothJob")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| {
            (
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
                e.type_.unwrap_or_default(),
                e.series.map_or(1, |s| s.count),
            )
        })
        .collect())
}

/// Waits for a Warning Event with `reason` about ClothJob `name`; returns its note.
async fn wait_warning(case: &Case, name: &str, reason: &str) -> Result<String> {
    clothjob_testenv::wait_for(
        &format!("a Warning Event {reason} about {name}"),
        MINUTE,
        Duration::from_millis(250),
        || async {
            Ok(events(case, name)
                .await?
                .into_iter()
                .find(|(r, _, t, _)| r == reason && t == "Warning")
                .map(|(_, note, _, _)| note))
        },
    )
    .await
    .with_context(|| case.diagnostics())
}

/// Waits until the ClothJob's `status.reason` is one of `reasons`, while it has not finished.
async fn wait_reason(case: &Case, name: &str, reasons: &[&str]) -> Result<ClothJob> {
    let api = case.clothjobs();
    clothjob_testenv::wait_for(
        &format!("ClothJob {name} waiting with reason {reasons:?}"),
        MINUTE,
        Duration::from_millis(250),
        || async {
            let cj = api.get(name).await?;
            let status = cj.status.clone().unwrap_or_default();
            let conds = status.conditions.clone().unwrap_or_default();
            if conditions::is_true(&conds, conditions::FAILED) {
                bail!("{name} failed early: {:?}", status.message);
            }
            let waiting = conditions::is_true(&conds, conditions::WAITING);
            Ok(
                (waiting && reasons.contains(&status.reason.as_deref().unwrap_or_default()))
                    .then_some(cj),
            )
        },
    )
    .await
    .with_context(|| case.diagnostics())
}

async fn jobs(case: &Case) -> Result<Vec<Job>> {
    let api: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    Ok(api.list(&ListParams::default()).await?.items)
}

fn reason_and_message(cj: &ClothJob) -> (String, String) {
    let s = cj.status.clone().unwrap_or_default();
    (s.reason.unwrap_or_default(), s.message.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_is_not_on_the_node_shows_why_and_fails_after_the_pending_timeout()
-> Result<()> {
    let case = case("no-image").await?;
    let extra = format!("  runner: {{image: '{ABSENT_IMAGE}', imagePullPolicy: Never}}\n");
    case.create(&manifest("absent", NOWHERE, &case.output(), &extra))
        .await?;
    let cj = wait_reason(&case, "absent", &["ErrImageNeverPull"]).await?;
    let (_, message) = reason_and_message(&cj);
    assert!(message.contains("not present"), "{message}");
    let note = wait_warning(&case, "absent", "ErrImageNeverPull").await?;
    assert!(
        note.contains(ABSENT_IMAGE) || note.contains("not present"),
        "{note}"
    );
    // The pending time-out fails it with that reason and removes the Job.
    let cj = wait_condition(&case.clothjobs(), "absent", conditions::FAILED, 2 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let (reason, message) = reason_and_message(&cj);
    assert_eq!(reason, "ErrImageNeverPull", "{message}");
    assert!(message.contains("did not start within"), "{message}");
    clothjob_testenv::wait_for(
        "the Job gone",
        MINUTE,
        Duration::from_millis(250),
        || async { Ok(jobs(&case).await?.is_empty().then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    wait_warning(&case, "absent", "Failed").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_shows_create_container_config_error_until_it_exists() -> Result<()> {
    let case = case_with("no-secret", 600).await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(200, 260)?, 0, Duration::ZERO).await?;
    let output = format!(
        "{{uri: '{}', credentialsSecretName: late-creds}}",
        case.output_uri()
    );
    case.create(&manifest("late", &src.url("photo.jpg"), &output, ""))
        .await?;
    let cj = wait_reason(&case, "late", &["CreateContainerConfigError"]).await?;
    let (_, message) = reason_and_message(&cj);
    assert!(message.contains("late-creds"), "{message}");
    wait_warning(&case, "late", "CreateContainerConfigError").await?;
    // The Secret appears: the kubelet starts the pod and the job completes.
    let secrets: Api<Secret> = Api::namespaced(case.client.clone(), &case.ns);
    let mut secret = secrets.get("s3-creds").await?;
    secret.metadata = ObjectMeta {
        name: Some("late-creds".into()),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;
    let cj = wait_condition(&case.clothjobs(), "late", conditions::COMPLETE, 3 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let status = cj.status.unwrap_or_default();
    assert!(!status.outputs.unwrap_or_default().is_empty());
    assert!(
        status.start_time.is_some(),
        "startTime is set once the runner started"
    );
    let conds = status.conditions.unwrap_or_default();
    assert!(!conditions::is_true(&conds, conditions::WAITING));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_no_node_fits_shows_unschedulable() -> Result<()> {
    let case = case("unschedulable").await?;
    let extra = "  runner: {nodeSelector: {closetconnect.io/no-such-pool: 'true'}}\n";
    case.create(&manifest("nowhere", NOWHERE, &case.output(), extra))
        .await?;
    let cj = wait_reason(&case, "nowhere", &["Unschedulable"]).await?;
    let (_, message) = reason_and_message(&cj);
    assert!(message.contains("node"), "{message}");
    wait_warning(&case, "nowhere", "Unschedulable").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_the_job_controller_cannot_create_shows_failed_create() -> Result<()> {
    let case = case("quota").await?;
    let quota = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: no-pods, namespace: {}}}\nspec: {{hard: {{pods: '0'}}}}\n",
        case.ns
    );
    case.cp.apply_yaml(&quota).await?;
    case.create(&manifest("quota", NOWHERE, &case.output(), ""))
        .await?;
    let cj = wait_reason(&case, "quota", &["FailedCreate"]).await?;
    let (_, message) = reason_and_message(&cj);
    assert!(message.contains("quota"), "{message}");
    wait_warning(&case, "quota", "FailedCreate").await?;
    let cj = wait_condition(&case.clothjobs(), "quota", conditions::FAILED, 2 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    assert_eq!(reason_and_message(&cj).0, "FailedCreate");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deleted_by_someone_else_fails_the_clothjob_and_is_not_run_again() -> Result<()> {
    let case = case("job-deleted").await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(200, 260)?, 0, 10 * MINUTE).await?;
    case.create(&manifest(
        "victim",
        &src.url("slow.jpg"),
        &case.output(),
        "",
    ))
    .await?;
    clothjob_testenv::wait_for(
        "the runner running",
        2 * MINUTE,
        Duration::from_millis(250),
        || async { Ok((case.running_runners("victim").await? == 1).then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    let job = jobs(&case).await?.pop().context("no Job")?;
    let api: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    api.delete(
        job.metadata.name.as_deref().unwrap_or_default(),
        &DeleteParams::background(),
    )
    .await?;
    let cj = wait_condition(&case.clothjobs(), "victim", conditions::FAILED, MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    assert_eq!(reason_and_message(&cj).0, "JobDeleted");
    assert_eq!(
        cj.status.and_then(|s| s.job_uid),
        job.metadata.uid,
        "the status names the Job that was deleted"
    );
    wait_warning(&case, "victim", "Failed").await?;
    // Never re-created: wait until the old Job is gone, then there is none.
    clothjob_testenv::wait_for("no Job", MINUTE, Duration::from_millis(250), || async {
        Ok(jobs(&case).await?.is_empty().then_some(()))
    })
    .await?;
    let metrics = case.operator.metrics().await?;
    assert!(metrics.contains("JobDeleted"), "{metrics}");
    assert!(
        jobs(&case).await?.is_empty(),
        "the operator made a second Job"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_apiserver_rejects_fails_with_invalid_spec_without_retrying() -> Result<()> {
    let case = case("rejected").await?;
    // Requests above limits: a valid ClothJob, an invalid pod template (422 on the Job).
    let extra = "  runner: {resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}\n";
    case.create(&manifest("greedy", NOWHERE, &case.output(), extra))
        .await?;
    let cj = wait_condition(&case.clothjobs(), "greedy", conditions::FAILED, MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let (reason, message) = reason_and_message(&cj);
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(message.contains("limit"), "{message}");
    let note = wait_warning(&case, "greedy", "Failed").await?;
    assert!(note.starts_with("InvalidSpec"), "{note}");
    assert!(jobs(&case).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_runner_refuses_fails_at_once_as_invalid_spec() -> Result<()> {
    let case = case("runner-invalid").await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(200, 260)?, 0, Duration::ZERO).await?;
    let extra = "  pipeline:\n    backgroundRemoval: {backend: onnx, onnx: {modelUri: 'file:///nonexistent/u2netp.onnx'}}\n";
    case.create(&manifest(
        "nomodel",
        &src.url("photo.jpg"),
        &case.output(),
        extra,
    ))
    .await?;
    let cj = wait_condition(&case.clothjobs(), "nomodel", conditions::FAILED, 3 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let status = cj.status.clone().unwrap_or_default();
    let (reason, message) = reason_and_message(&cj);
    assert_eq!(reason, "InvalidSpec", "{message}");
    assert!(message.contains("u2netp.onnx"), "{message}");
    assert_eq!(status.attempts, Some(1), "not retried");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_restart_announces_nothing_twice() -> Result<()> {
    let mut case = case("announce").await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(300, 400)?, 0, Duration::ZERO).await?;
    case.create(&manifest("once", &src.url("photo.jpg"), &case.output(), ""))
        .await?;
    wait_condition(&case.clothjobs(), "once", conditions::COMPLETE, 3 * MINUTE)
        .await
        .with_context(|| case.diagnostics())?;
    let count = |evs: &[(String, String, String, i32)], r: &str| -> i32 {
        evs.iter().filter(|e| e.0 == r).map(|e| e.3).sum()
    };
    let before = clothjob_testenv::wait_for(
        "the Succeeded Event",
        MINUTE,
        Duration::from_millis(250),
        || async {
            let evs = events(&case, "once").await?;
            Ok((count(&evs, "Succeeded") == 1).then_some(evs))
        },
    )
    .await?;
    let stages = count(&before, "StageCompleted");
    // Stages ending close together share one Event, a line per stage.
    let lines: usize = before
        .iter()
        .filter(|e| e.0 == "StageCompleted")
        .map(|e| e.1.matches(" finished in ").count())
        .sum();
    assert!(stages >= 1 && lines >= 3, "a line per stage: {before:?}");
    // A new operator process reconciles the finished job (wait for it to have done so).
    case.operator.restart().await?;
    clothjob_testenv::wait_for(
        "a reconcile after the restart",
        MINUTE,
        Duration::from_millis(250),
        || async {
            let m = case.operator.metrics().await?;
            Ok(m.lines()
                .any(|l| {
                    l.starts_with("clothjob_reconcile_total{result=\"ok\"}") && !l.ends_with(" 0")
                })
                .then_some(()))
        },
    )
    .await
    .with_context(|| case.operator.logs())?;
    let after = events(&case, "once").await?;
    assert_eq!(count(&after, "StageCompleted"), stages, "{after:?}");
    assert_eq!(count(&after, "Succeeded"), 1, "{after:?}");
    Ok(())
}
