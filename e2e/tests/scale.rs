//! End-to-end (issue 8): the operator's concurrency limit queues ClothJobs in phase Queued
//! without a Job and starts them as slots free up; a Kueue queue name creates the Job
//! suspended and leaves it to Kueue (here the test plays Kueue and resumes it); ClothJobs of
//! the same photo and settings run the pipeline once and copy its outputs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clothjob_api::{ClothJob, Phase, ReuseDecision, StageState, conditions};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::wait_for;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams};

const MINUTE: Duration = Duration::from_secs(60);
/// The whole Kueue case, once its namespace and operator are up: well under the 10 minutes a
/// CI step allows, so a stuck case fails with diagnostics instead of hanging.
const KUEUE_CASE_LIMIT: Duration = Duration::from_secs(5 * 60);

fn manifest(name: &str, source_url: &str, output: &str, labels: &str, extra: &str) -> String {
    format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}{labels}}}\nspec:\n  source: {{url: '{source_url}'}}\n  output: {output}\n{extra}"
    )
}

async fn jobs(case: &Case) -> Result<Vec<Job>> {
    let api: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    Ok(api.list(&ListParams::default()).await?.items)
}

/// The ClothJob each Job belongs to (its controller owner).
fn owner(job: &Job) -> String {
    job.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.name.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_clothjobs_queue_in_order_and_all_run_once() -> Result<()> {
    let case = Case::with_operator_args("limit", &["--max-concurrent-jobs=2"]).await?;
    // A slow source keeps the first two running while the queue is looked at.
    let src = SourceServer::start_in(
        case.cluster(),
        tshirt_jpeg(300, 400)?,
        0,
        Duration::from_secs(15),
    )
    .await?;
    let names: Vec<String> = (0..5).map(|i| format!("queued-{i}")).collect();
    for name in &names {
        case.create(&manifest(
            name,
            &src.url("slow.jpg"),
            &case.output(),
            "",
            "",
        ))
        .await?;
    }
    let api = case.clothjobs();
    let most_jobs = AtomicUsize::new(0);
    let queued = wait_for(
        "2 Jobs and 3 ClothJobs Queued at positions 1..3",
        MINUTE,
        Duration::from_millis(200),
        || async {
            let js = jobs(&case).await?;
            most_jobs.fetch_max(
                js.iter().filter(|j| !job_done(j)).count(),
                Ordering::Relaxed,
            );
            let cjs = api.list(&ListParams::default()).await?.items;
            let queued: BTreeMap<String, i32> = cjs
                .iter()
                .filter_map(|cj| {
                    let s = cj.status.as_ref()?;
                    (s.phase == Some(Phase::Queued)).then(|| {
                        (
                            cj.metadata.name.clone().unwrap_or_default(),
                            s.queue_position.unwrap_or(0),
                        )
                    })
                })
                .collect();
            let positions: BTreeSet<i32> = queued.values().copied().collect();
            Ok((js.len() == 2 && positions == BTreeSet::from([1, 2, 3])).then_some((queued, js)))
        },
    )
    .await;
    let (queued, js) = match queued {
        Ok(q) => q,
        Err(e) => bail!("{e}\n{}", case.diagnostics()),
    };
    // Queued ClothJobs have no Job; the reason says which limit holds them.
    let with_jobs: BTreeSet<String> = js.iter().map(owner).collect();
    for name in queued.keys() {
        assert!(!with_jobs.contains(name), "{name} is Queued but has a Job");
        let cj = api.get(name).await?;
        let conds = cj.status.and_then(|s| s.conditions).unwrap_or_default();
        let waiting = conditions::find(&conds, conditions::WAITING).unwrap();
        assert_eq!(waiting.reason, "MaxConcurrentJobs");
    }
    for name in &names {
        wait_condition(&api, name, conditions::COMPLETE, 5 * MINUTE).await?;
        let js = jobs(&case).await?;
        most_jobs.fetch_max(
            js.iter().filter(|j| !job_done(j)).count(),
            Ordering::Relaxed,
        );
    }
    let js = jobs(&case).await?;
    let owners: Vec<String> = js.iter().map(owner).collect();
    let distinct: BTreeSet<&String> = owners.iter().collect();
    assert_eq!(owners.len(), 5, "one Job per ClothJob: {owners:?}");
    assert_eq!(distinct.len(), 5, "one Job per ClothJob: {owners:?}");
    let most = most_jobs.load(Ordering::Relaxed);
    assert!(most <= 2, "at most 2 Jobs ran at once, saw {most}");
    for name in &names {
        let cj = api.get(name).await?;
        assert_eq!(cj.status.and_then(|s| s.queue_position), None, "{name}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_running_clothjob_starts_the_next_queued_one_at_once() -> Result<()> {
    let case = Case::with_operator_args("freed", &["--max-concurrent-jobs=1"]).await?;
    // The holder's runner waits on this source far longer than the test runs.
    let src = SourceServer::start_in(
        case.cluster(),
        tshirt_jpeg(300, 400)?,
        0,
        Duration::from_secs(600),
    )
    .await?;
    let output = case.output();
    case.create(&manifest("holder", &src.url("slow.jpg"), &output, "", ""))
        .await?;
    let api = case.clothjobs();
    let holding = wait_for(
        "the holder's Job",
        MINUTE,
        Duration::from_millis(200),
        || async {
            Ok(jobs(&case)
                .await?
                .iter()
                .any(|j| owner(j) == "holder")
                .then_some(()))
        },
    )
    .await;
    if let Err(e) = holding {
        bail!("{e}\n{}", case.diagnostics());
    }
    case.create(&manifest("next", &src.url("photo.jpg"), &output, "", ""))
        .await?;
    let is_queued = |cj: &ClothJob| cj.status.as_ref().and_then(|s| s.phase) == Some(Phase::Queued);
    wait_for(
        "next to be Queued",
        MINUTE,
        Duration::from_millis(100),
        || async { Ok(is_queued(&api.get("next").await?).then_some(())) },
    )
    .await?;
    // Its own recheck is QUEUE_RECHECK (30 s) away: only the deletion can start it sooner.
    let deleted = std::time::Instant::now();
    api.delete("holder", &Default::default()).await?;
    let started = wait_for(
        "next to get its Job after the holder's deletion (well before its 30 s recheck)",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            Ok(jobs(&case)
                .await?
                .iter()
                .any(|j| owner(j) == "next")
                .then_some(()))
        },
    )
    .await;
    if let Err(e) = started {
        bail!("{e}\n{}", case.diagnostics());
    }
    println!(
        "next got its Job {:.1} s after the holder was deleted",
        deleted.elapsed().as_secs_f64()
    );
    // Its status (written after the Job is created) leaves Queued too, and it runs to the end.
    wait_for(
        "next to leave Queued",
        MINUTE,
        Duration::from_millis(100),
        || async { Ok((!is_queued(&api.get("next").await?)).then_some(())) },
    )
    .await?;
    wait_condition(&api, "next", conditions::COMPLETE, 5 * MINUTE).await?;
    Ok(())
}

fn job_done(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Waits until the ClothJob has finished (Complete or Failed true) and returns it, so a job
/// that failed ends the wait at once with its status rather than at the time-out.
async fn wait_finished(api: &Api<ClothJob>, name: &str, timeout: Duration) -> Result<ClothJob> {
    wait_for(
        &format!("ClothJob {name} to finish (Complete or Failed)"),
        timeout,
        Duration::from_millis(200),
        || async {
            let cj = api.get(name).await?;
            let conds = cj
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let done = conditions::is_true(&conds, conditions::COMPLETE)
                || conditions::is_true(&conds, conditions::FAILED);
            Ok(done.then_some(cj))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kueue_suspended_job_keeps_its_clothjob_queued_until_resumed() -> Result<()> {
    // The operator's own limit (1) does not apply to ClothJobs that Kueue governs: both get
    // their Job at once.
    let case = Case::with_operator_args("kueue", &["--max-concurrent-jobs=1"]).await?;
    match tokio::time::timeout(KUEUE_CASE_LIMIT, kueue_case(&case)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("{e:#}\n{}", case.diagnostics()),
        Err(_) => bail!(
            "the Kueue case did not finish within {KUEUE_CASE_LIMIT:?}\n{}",
            case.diagnostics()
        ),
    }
}

async fn kueue_case(case: &Case) -> Result<()> {
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(300, 400)?, 0, Duration::ZERO).await?;
    // One by the label, one by spec.queueName.
    let by_label = ", labels: {kueue.x-k8s.io/queue-name: team-a}";
    case.create(&manifest(
        "by-label",
        &src.url("photo.jpg"),
        &case.output(),
        by_label,
        "",
    ))
    .await?;
    case.create(&manifest(
        "by-spec",
        &src.url("photo.jpg"),
        &case.output(),
        "",
        "  queueName: team-b\n",
    ))
    .await?;
    let api = case.clothjobs();
    let job_api: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    let mut job_names = BTreeMap::new();
    for (name, queue) in [("by-label", "team-a"), ("by-spec", "team-b")] {
        let cj = wait_for(
            &format!("{name} Queued with reason SuspendedByKueue"),
            MINUTE,
            Duration::from_millis(200),
            || async {
                let cj = api.get(name).await?;
                let s = cj.status.clone().unwrap_or_default();
                let conds = s.conditions.clone().unwrap_or_default();
                let reason = conditions::find(&conds, conditions::WAITING)
                    .filter(|c| c.status == "True")
                    .map(|c| c.reason.clone());
                Ok((s.phase == Some(Phase::Queued)
                    && reason.as_deref() == Some("SuspendedByKueue"))
                .then_some(cj))
            },
        )
        .await?;
        let status = cj.status.unwrap_or_default();
        ensure!(
            status.queue_position.is_none(),
            "{name}: a queuePosition under Kueue: {:?}",
            status.queue_position
        );
        let job_name = status.job_name.context("no status.jobName")?;
        let job = job_api.get(&job_name).await?;
        ensure!(
            job.spec.as_ref().and_then(|s| s.suspend) == Some(true),
            "{name}: its Job {job_name} was not created suspended"
        );
        let labels = job.metadata.labels.unwrap_or_default();
        let label = labels.get("kueue.x-k8s.io/queue-name").map(String::as_str);
        ensure!(
            label == Some(queue),
            "{name}: the Job's queue label is {label:?}, not {queue}"
        );
        job_names.insert(name, job_name);
    }
    // Both were seen Queued: still so, still suspended, no pod (the operator leaves suspend
    // alone and its own limit of 1 did not hold the second back).
    for (name, job_name) in &job_names {
        let cj = api.get(name).await?;
        let phase = cj.status.and_then(|s| s.phase);
        ensure!(
            phase == Some(Phase::Queued),
            "{name}: {phase:?} while suspended"
        );
        let job = job_api.get(job_name).await?;
        ensure!(
            job.spec.and_then(|s| s.suspend) == Some(true),
            "{name}: its Job was resumed by someone other than the test"
        );
        let pods = case.runner_pods(name).await?.len();
        ensure!(pods == 0, "{name}: {pods} runner pod(s) while suspended");
    }
    // Kueue admits them: suspend false. They leave Queued and run to completion.
    for job_name in job_names.values() {
        let patch = serde_json::json!({"spec": {"suspend": false}});
        job_api
            .patch(job_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    for (name, job_name) in &job_names {
        let cj = wait_finished(&api, name, 3 * MINUTE).await?;
        let status = cj.status.unwrap_or_default();
        ensure!(
            status.phase == Some(Phase::Succeeded),
            "{name} ended {:?}: {:?}: {:?}",
            status.phase,
            status.reason,
            status.message
        );
        // The operator never suspended it again.
        let job = job_api.get(job_name).await?;
        ensure!(
            job.spec.and_then(|s| s.suspend) == Some(false),
            "{name}: its Job was suspended again"
        );
    }
    let owners: Vec<String> = jobs(case).await?.iter().map(owner).collect();
    ensure!(owners.len() == 2, "one Job per ClothJob: {owners:?}");
    Ok(())
}

/// The reasons of the Events about ClothJob `name`.
async fn event_reasons(case: &Case, name: &str) -> Result<Vec<String>> {
    let api: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(case.client.clone(), &case.ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    Ok(api
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clothjobs_of_the_same_photo_run_the_pipeline_once() -> Result<()> {
    let case = Case::new("reuse").await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(300, 400)?, 0, Duration::ZERO).await?;
    let names: Vec<String> = (0..10).map(|i| format!("same-{i}")).collect();
    for name in &names {
        case.create(&manifest(
            name,
            &src.url("photo.jpg"),
            &case.output(),
            "",
            "",
        ))
        .await?;
    }
    // The same photo with `reuse: Never` runs the pipeline whatever else there is.
    case.create(&manifest(
        "own-run",
        &src.url("photo.jpg"),
        &case.output(),
        "",
        "  reuse: Never\n",
    ))
    .await?;
    let api = case.clothjobs();
    let mut done = BTreeMap::new();
    for name in names.iter().chain([&"own-run".to_string()]) {
        let cj = wait_finished(&api, name, 5 * MINUTE)
            .await
            .with_context(|| case.diagnostics())?;
        let s = cj.status.clone().unwrap_or_default();
        ensure!(
            s.phase == Some(Phase::Succeeded),
            "{name} ended {:?}: {:?}: {:?}\n{}",
            s.phase,
            s.reason,
            s.message,
            case.diagnostics()
        );
        done.insert(name.clone(), s);
    }
    let own = done.remove("own-run").context("own-run")?;
    ensure!(
        own.reused_from.is_none(),
        "reuse: Never was reused: {own:?}"
    );
    ensure!(own.reuse_key.is_none() && own.reuse.is_none(), "{own:?}");

    // Exactly one ran the pipeline; the nine others name it.
    let ran: Vec<&String> = done
        .iter()
        .filter(|(_, s)| s.reused_from.is_none())
        .map(|(n, _)| n)
        .collect();
    ensure!(ran.len() == 1, "not exactly one ran the pipeline: {ran:?}");
    let original = ran[0].clone();
    let first = &done[&original];
    let key = first.reuse_key.clone().context("no reuseKey")?;
    ensure!(first.source_sha256.as_ref().is_some_and(|s| s.len() == 64));
    let want: BTreeMap<String, String> = first
        .outputs
        .iter()
        .flatten()
        .map(|o| (o.name.clone(), o.sha256.clone()))
        .collect();
    ensure!(want.len() >= 5, "{original}: outputs {want:?}");
    let mut waited = 0;
    for (name, s) in &done {
        ensure!(
            s.reuse_key.as_deref() == Some(key.as_str()),
            "{name}: another key"
        );
        let outputs = s.outputs.clone().unwrap_or_default();
        let got: BTreeMap<String, String> = outputs
            .iter()
            .map(|o| (o.name.clone(), o.sha256.clone()))
            .collect();
        ensure!(got == want, "{name}: outputs differ from {original}'s");
        for o in &outputs {
            // Its own copy, under its own prefix, with the bytes the status names.
            ensure!(
                o.uri.contains(&format!("/{name}/")),
                "{name}: {} is not its own",
                o.uri
            );
            let bytes = case.read_output(&o.uri)?;
            ensure!(bytes.len() as i64 == o.bytes, "{}", o.uri);
        }
        if *name == original {
            continue;
        }
        ensure!(
            s.reused_from.as_deref() == Some(original.as_str()),
            "{name} reused {:?}, not {original}",
            s.reused_from
        );
        let decision = s.reuse.clone().context("no status.reuse")?;
        ensure!(decision.decision == ReuseDecision::Reuse && decision.key == key);
        // No pipeline stage ran: each says why.
        for st in s.stages.iter().flatten().filter(|st| st.name != "storing") {
            ensure!(
                st.state == StageState::Skipped
                    && st.detail.as_deref().is_some_and(|d| d.contains(&original)),
                "{name}: stage {st:?}"
            );
        }
        ensure!(
            s.message.as_deref().is_some_and(|m| m.contains(&original)),
            "{name}: message {:?}",
            s.message
        );
        let reasons = event_reasons(&case, name).await?;
        ensure!(
            reasons.iter().any(|r| r == "ReusingOutputs"),
            "{name}: Events {reasons:?}"
        );
        waited += usize::from(reasons.iter().any(|r| r == "WaitingForDuplicate"));
    }
    // Submitted together, most found the original running and waited for it.
    eprintln!("{waited} of 9 waited for {original} while it ran");
    Ok(())
}
