//! End-to-end fault tests on the real node: the operator killed at points of a batch of
//! jobs, the leader killed with a standby replica, a runner SIGKILLed mid-run, kube-apiserver
//! restarted mid-run. Every ClothJob completes exactly once: one Job each, its outputs once,
//! none stuck.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clothjob_api::{ClothJob, conditions};
use clothjob_e2e::operator::OperatorProcess;
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};

const MINUTE: Duration = Duration::from_secs(60);
/// Leader election over a Lease in the operator's namespace (where the chart's RBAC allows it).
const LEADER_ARGS: &[&str] = &[
    "--leader-elect",
    "--leader-election-namespace",
    clothjob_e2e::harness::SYSTEM_NAMESPACE,
    "--leader-election-lease",
    "e2e-leader",
];

fn manifest(name: &str, source_url: &str, output: &str) -> String {
    format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{url: '{source_url}'}}\n  output: {output}\n  retries: 3\n"
    )
}

async fn clothjobs(case: &Case) -> Result<Vec<ClothJob>> {
    Ok(case.clothjobs().list(&ListParams::default()).await?.items)
}

fn is(cj: &ClothJob, type_: &str) -> bool {
    cj.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .is_some_and(|c| conditions::is_true(c, type_))
}

async fn completed(case: &Case) -> Result<usize> {
    Ok(clothjobs(case)
        .await?
        .iter()
        .filter(|cj| is(cj, conditions::COMPLETE))
        .count())
}

/// The Jobs of the namespace per ClothJob name.
async fn jobs_per_clothjob(case: &Case) -> Result<BTreeMap<String, usize>> {
    let api: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    let mut out = BTreeMap::new();
    for j in api.list(&ListParams::default()).await?.items {
        let owner = j
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(clothjob_api::contract::LABEL_CLOTHJOB))
            .cloned()
            .unwrap_or_default();
        *out.entry(owner).or_insert(0) += 1;
    }
    Ok(out)
}

/// Every ClothJob Complete exactly once: one Job, one runner start, its outputs in S3 once.
async fn assert_each_ran_once(case: &Case, names: &[String]) -> Result<()> {
    let jobs = jobs_per_clothjob(case).await?;
    for name in names {
        let cj = case.clothjobs().get(name).await?;
        assert!(is(&cj, conditions::COMPLETE), "{name} not complete");
        assert_eq!(jobs.get(name), Some(&1), "{name}: Jobs {jobs:?}");
        assert_eq!(
            case.runner_starts(name).await?,
            1,
            "{name} ran more than once"
        );
        let status = cj.status.unwrap_or_default();
        assert_eq!(status.attempts, Some(1), "{name}");
        let outputs = status.outputs.unwrap_or_default();
        assert!(outputs.len() >= 5, "{name}: {outputs:?}");
        for o in &outputs {
            let bytes = case.read_output(&o.uri)?;
            assert_eq!(bytes.len() as i64, o.bytes, "{}", o.uri);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_killed_three_times_during_a_batch_loses_nothing_and_runs_nothing_twice()
-> Result<()> {
    let mut case = Case::new("kill-batch").await?;
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(160, 200)?, 0, Duration::ZERO).await?;
    let names: Vec<String> = (0..20).map(|i| format!("batch-{i:02}")).collect();
    for n in &names {
        case.create(&manifest(n, &src.url("photo.jpg"), &case.output()))
            .await?;
    }
    // Kill points spread over the batch: as Jobs are being created, mid-way, near the end.
    // Each is a state of the batch, not a time.
    let seed = std::process::id() as usize;
    let points = [1 + seed % 3, 7 + seed % 4, 14 + seed % 4];
    for point in points {
        clothjob_testenv::wait_for(
            &format!("{point} jobs complete"),
            5 * MINUTE,
            Duration::from_millis(100),
            || async { Ok((completed(&case).await? >= point).then_some(())) },
        )
        .await
        .with_context(|| case.diagnostics())?;
        case.operator.kill().await?;
        case.operator.restart().await?;
    }
    clothjob_testenv::wait_for(
        "all 20 complete",
        6 * MINUTE,
        Duration::from_millis(250),
        || async {
            let all = clothjobs(&case).await?;
            let failed: Vec<_> = all.iter().filter(|c| is(c, conditions::FAILED)).collect();
            anyhow::ensure!(
                failed.is_empty(),
                "failed: {:?}",
                failed.iter().map(|c| &c.status).collect::<Vec<_>>()
            );
            Ok(
                (all.iter().filter(|c| is(c, conditions::COMPLETE)).count() == names.len())
                    .then_some(()),
            )
        },
    )
    .await
    .with_context(|| case.diagnostics())?;
    assert_each_ran_once(&case, &names).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_by_the_standby_in_under_15_s() -> Result<()> {
    let mut case = Case::with_operator_args("leader", LEADER_ARGS).await?;
    let mut standby = OperatorProcess::start_with_args(
        &case.env.bins.operator,
        &case.kubeconfig,
        &case.ns,
        &case.dir.path().join("standby.log"),
        LEADER_ARGS,
    )
    .await?;
    let leading = |m: &str| m.lines().any(|l| l == "clothjob_leader 1");
    // Both start at once and race to create the Lease: either may win.
    let (first_leads, standby_leads) =
        clothjob_testenv::wait_for("one leader", MINUTE, Duration::from_millis(100), || async {
            let (a, b) = (
                leading(&case.operator.metrics().await?),
                leading(&standby.metrics().await?),
            );
            Ok((a || b).then_some((a, b)))
        })
        .await
        .with_context(|| format!("{}\n{}", case.operator.logs(), standby.logs()))?;
    assert!(!(first_leads && standby_leads), "two leaders");
    eprintln!(
        "{} won the Lease",
        if first_leads {
            "the first operator"
        } else {
            "the standby"
        }
    );
    if !first_leads {
        std::mem::swap(&mut case.operator, &mut standby);
    }
    assert!(!leading(&standby.metrics().await?), "two leaders");
    let src = SourceServer::start_in(
        case.cluster(),
        tshirt_jpeg(200, 260)?,
        0,
        Duration::from_secs(8),
    )
    .await?;
    case.create(&manifest("handover", &src.url("slow.jpg"), &case.output()))
        .await?;
    clothjob_testenv::wait_for("the Job", MINUTE, Duration::from_millis(100), || async {
        Ok((!jobs_per_clothjob(&case).await?.is_empty()).then_some(()))
    })
    .await?;
    case.operator.kill().await?;
    let killed = Instant::now();
    clothjob_testenv::wait_for(
        "the standby leading",
        30 * Duration::from_secs(1),
        Duration::from_millis(100),
        || async { Ok(leading(&standby.metrics().await?).then_some(())) },
    )
    .await
    .with_context(|| standby.logs())?;
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(15), "took over after {took:?}");
    eprintln!(
        "the standby took over {:.1} s after the leader was killed",
        took.as_secs_f64()
    );
    wait_condition(
        &case.clothjobs(),
        "handover",
        conditions::COMPLETE,
        3 * MINUTE,
    )
    .await
    .with_context(|| standby.logs())?;
    assert_each_ran_once(&case, &["handover".to_string()]).await?;
    let status = standby.terminate().await?;
    assert!(status.success(), "{status}");
    Ok(())
}

/// The host pid of the runner process working for ClothJob `ns/name` (the node's containers
/// share the host's pid namespace).
fn runner_pid(ns: &str, name: &str) -> Option<i32> {
    let want = [
        format!("CLOTHJOB_NAMESPACE={ns}"),
        format!("CLOTHJOB_NAME={name}"),
    ];
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmd).contains("clothjob-runner") {
            return None;
        }
        let env = std::fs::read(e.path().join("environ")).ok()?;
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).to_string())
            .collect();
        want.iter().all(|w| vars.contains(w)).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_sigkilled_mid_run_is_retried_and_its_progress_starts_again() -> Result<()> {
    let case = Case::new("sigkill").await?;
    let src = SourceServer::start_in(
        case.cluster(),
        tshirt_jpeg(200, 260)?,
        0,
        Duration::from_secs(6),
    )
    .await?;
    case.create(&manifest("killed", &src.url("slow.jpg"), &case.output()))
        .await?;
    let pid = clothjob_testenv::wait_for(
        "the runner process",
        2 * MINUTE,
        Duration::from_millis(100),
        || async { Ok(runner_pid(&case.ns, "killed")) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let cj = wait_condition(
        &case.clothjobs(),
        "killed",
        conditions::COMPLETE,
        4 * MINUTE,
    )
    .await
    .with_context(|| case.diagnostics())?;
    let status = cj.status.unwrap_or_default();
    assert_eq!(status.attempts, Some(2), "one retry after the kill");
    assert_eq!(status.progress, Some(100));
    assert!(status.outputs.is_some_and(|o| o.len() >= 5));
    assert_eq!(jobs_per_clothjob(&case).await?.get("killed"), Some(&1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_restart_mid_run_loses_nothing() -> Result<()> {
    // Alone: the other cases of this binary share the apiserver it restarts.
    let case = Case::exclusive("apiserver").await?;
    let src = SourceServer::start_in(
        case.cluster(),
        tshirt_jpeg(200, 260)?,
        0,
        Duration::from_secs(10),
    )
    .await?;
    case.create(&manifest("through", &src.url("slow.jpg"), &case.output()))
        .await?;
    clothjob_testenv::wait_for(
        "the runner running",
        2 * MINUTE,
        Duration::from_millis(200),
        || async { Ok((case.running_runners("through").await? == 1).then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    case.cp.restart_apiserver().await?;
    // Watches recover: the running job completes, and a job created after the restart too.
    case.create(&manifest("after", &src.url("photo.jpg"), &case.output()))
        .await?;
    for name in ["through", "after"] {
        wait_condition(&case.clothjobs(), name, conditions::COMPLETE, 4 * MINUTE)
            .await
            .with_context(|| case.diagnostics())?;
    }
    assert_each_ran_once(&case, &["through".to_string(), "after".to_string()]).await
}
