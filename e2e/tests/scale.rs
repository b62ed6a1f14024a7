//! End-to-end (issue 8): the operator's concurrency limit queues ClothJobs in phase Queued
//! without a Job and starts them as slots free up; a Kueue queue name creates the Job
//! suspended and leaves it to Kueue (here the test plays Kueue and resumes it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use clothjob_api::{Phase, conditions};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::wait_for;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};

const MINUTE: Duration = Duration::from_secs(60);

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

fn job_done(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}
