//! `cargo xtask bench-load`: the load benchmark of issue 8 on the test cluster (the real
//! node). N ClothJobs created at once with the operator's limit (default 50), then D
//! duplicates of one photo; the same N again without the limit, in the same run, so the gain
//! is a ratio. A benchmark, not a test: it reports, and fails only when jobs do not succeed.
//!
//! Apiserver writes are counted by the apiserver itself: two FlowSchemas put the operator's
//! and the runners' write requests in flows of their own, and
//! `apiserver_flowcontrol_dispatched_requests_total` counts them per flow.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clothjob_api::{ClothJob, conditions, contract};
use clothjob_e2e::Case;
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};

/// Command-line settings.
struct Args {
    jobs: usize,
    duplicates: usize,
    limit: usize,
    baseline: bool,
    timeout: Duration,
}

fn args() -> Result<Args> {
    let mut a = Args {
        jobs: 1000,
        duplicates: 100,
        limit: 50,
        baseline: true,
        timeout: Duration::from_secs(3600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--jobs" => a.jobs = value()?.parse()?,
            "--duplicates" => a.duplicates = value()?.parse()?,
            "--limit" => a.limit = value()?.parse()?,
            "--timeout-seconds" => a.timeout = Duration::from_secs(value()?.parse()?),
            "--no-baseline" => a.baseline = false,
            other => bail!(
                "unknown flag {other}; flags: --jobs N --duplicates D --limit L --timeout-seconds S --no-baseline"
            ),
        }
    }
    Ok(a)
}

/// What one batch measured.
#[derive(Debug, Default)]
struct Run {
    label: String,
    jobs: usize,
    succeeded: usize,
    one_job_each: bool,
    drain_s: f64,
    rss_mib: f64,
    cpu_s: f64,
    operator_writes: f64,
    /// The operator's writes by kind (status, events, access, jobs, other).
    operator_by_kind: BTreeMap<String, f64>,
    runner_writes: f64,
    reconcile_p50_ms: f64,
    reconcile_p99_ms: f64,
    job_created_ms: Vec<f64>,
    /// apply → Job created of the first `limit` ClothJobs created (a slot free for each).
    free_slot_ms: Vec<f64>,
    complete_s: Vec<f64>,
    by_resource: BTreeMap<String, f64>,
    /// The operator's own count per job: status writes by what they changed, then Events by
    /// reason (`clothjob_status_writes_total`, `clothjob_events_total`).
    operator_detail: Vec<(String, f64)>,
}

fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Peak resident memory (MiB) and CPU seconds (user + system) of a process.
fn process_usage(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM")?
        .parse()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at the state (field 3).
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).context("utime")?.parse::<f64>()? + f.get(12).context("stime")?.parse::<f64>()?;
    Ok((hwm_kib / 1024.0, ticks / 100.0))
}

/// The FlowSchemas that give the operator's and the runners' writes flows of their own: the
/// operator's split by what it writes (each name starts with [`FLOW_OPERATOR`]).
const FLOW_OPERATOR: &str = "clothjob-bench-operator";
const FLOW_RUNNERS: &str = "clothjob-bench-runners";
/// The operator's writes by kind: (flow suffix, API groups, resources); the rest are "other".
const OPERATOR_KINDS: [(&str, &[&str], &[&str]); 4] = [
    ("status", &["closetconnect.io"], &["clothjobs/status"]),
    ("events", &["", "events.k8s.io"], &["events"]),
    (
        "access",
        &["", "rbac.authorization.k8s.io"],
        &["serviceaccounts", "roles", "rolebindings"],
    ),
    ("jobs", &["batch"], &["jobs"]),
];

async fn install_flow_schemas(case: &Case, namespaces: &[&str]) -> Result<()> {
    let rule = |groups: &[&str], resources: &[&str]| {
        serde_json::json!([{
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
            "apiGroups": groups, "resources": resources, "namespaces": ["*"], "clusterScope": true,
        }])
    };
    let runners: Vec<serde_json::Value> = namespaces
        .iter()
        .map(|ns| serde_json::json!({"kind": "ServiceAccount", "serviceAccount": {"namespace": ns, "name": "*"}}))
        .collect();
    let operator = serde_json::json!([{"kind": "ServiceAccount", "serviceAccount": {"namespace": clothjob_e2e::harness::SYSTEM_NAMESPACE, "name": "clothjob-operator"}}]);
    let mut flows = vec![
        (
            FLOW_OPERATOR.to_string(),
            150,
            operator.clone(),
            rule(&["*"], &["*"]),
        ),
        (
            FLOW_RUNNERS.to_string(),
            150,
            serde_json::Value::from(runners),
            rule(&["*"], &["*"]),
        ),
    ];
    for (kind, groups, resources) in OPERATOR_KINDS {
        // Matched before the operator's catch-all (a lower precedence number wins).
        flows.push((
            format!("{FLOW_OPERATOR}-{kind}"),
            140,
            operator.clone(),
            rule(groups, resources),
        ));
    }
    for (name, precedence, subjects, writes) in flows {
        let fs = serde_json::json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {
                "matchingPrecedence": precedence,
                "priorityLevelConfiguration": {"name": "workload-high"},
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{"subjects": subjects, "resourceRules": writes}],
            },
        });
        case.cp.apply_yaml(&serde_json::to_string(&fs)?).await?;
    }
    Ok(())
}

/// The apiserver's own /metrics text.
async fn apiserver_metrics(case: &Case) -> Result<String> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    Ok(case.client.request_text(req).await?)
}

/// The samples of metric `name` in an exposition: (the text between the braces, value).
fn samples<'a>(text: &'a str, name: &str) -> impl Iterator<Item = (&'a str, f64)> {
    let prefix = format!("{name}{{");
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(prefix.as_str())?;
        let (labels, value) = rest.rsplit_once(' ')?;
        Some((labels, value.parse().unwrap_or(0.0)))
    })
}

/// The value of label `k` in a sample's label text (empty when absent).
fn label(labels: &str, k: &str) -> String {
    labels
        .split(&format!("{k}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string()
}

/// Write requests the apiserver dispatched per bench flow so far.
fn flow_writes(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (labels, v) in samples(text, "apiserver_flowcontrol_dispatched_requests_total") {
        let flow = label(labels, "flow_schema");
        if flow.starts_with(FLOW_OPERATOR) || flow == FLOW_RUNNERS {
            *out.entry(flow).or_insert(0.0) += v;
        }
    }
    out
}

/// Write requests per (verb, resource[/subresource]) the apiserver served so far, all clients.
fn writes_by_resource(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in samples(text, "apiserver_request_total") {
        let verb = label(labels, "verb");
        if !matches!(
            verb.as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
        ) {
            continue;
        }
        let (res, sub) = (label(labels, "resource"), label(labels, "subresource"));
        let key = if sub.is_empty() {
            format!("{verb} {res}")
        } else {
            format!("{verb} {res}/{sub}")
        };
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

/// The operator's status writes by change and phase (`status <change> (<phase>)`) and Events by reason
/// (`event <reason>`), as counted by its own metrics so far.
fn operator_counts(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (labels, v) in samples(text, "clothjob_status_writes_total") {
        let key = format!(
            "status {} ({})",
            label(labels, "change"),
            label(labels, "phase")
        );
        *out.entry(key).or_insert(0.0) += v;
    }
    for (labels, v) in samples(text, "clothjob_events_total") {
        *out.entry(format!("event {}", label(labels, "reason")))
            .or_insert(0.0) += v;
    }
    out
}

/// Cumulative buckets of the operator's reconcile histogram.
async fn reconcile_buckets(case: &Case) -> Result<Vec<(f64, f64)>> {
    let text = case.operator.metrics().await?;
    samples(&text, "clothjob_reconcile_duration_seconds_bucket")
        .map(|(labels, v)| {
            let le = label(labels, "le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse()?
            };
            Ok((le, v))
        })
        .collect()
}

/// A quantile of the difference of two cumulative histograms (linear within a bucket).
fn histogram_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let diff: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, v)| {
            let b = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, v)| *v);
            (*le, v - b)
        })
        .collect();
    let total = diff.last().map_or(0.0, |(_, v)| *v);
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for (le, v) in &diff {
        if *v >= rank {
            if le.is_infinite() {
                return prev.0 * 1000.0;
            }
            let span = (v - prev.1).max(f64::MIN_POSITIVE);
            return (prev.0 + (le - prev.0) * (rank - prev.1) / span) * 1000.0;
        }
        prev = (*le, *v);
    }
    f64::NAN
}

fn manifest(name: &str, url: &str, case: &Case, reuse: bool) -> Result<ClothJob> {
    let reuse = if reuse { "" } else { "  reuse: Never\n" };
    Ok(serde_yaml::from_str(&format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{url: '{url}'}}\n  output: {}\n  ttlSecondsAfterFinished: 86400\n{reuse}",
        case.output()
    ))?)
}

fn finished(cj: &ClothJob) -> Option<bool> {
    let conds = cj.status.as_ref()?.conditions.as_deref()?;
    if conditions::is_true(conds, conditions::COMPLETE) {
        Some(true)
    } else if conditions::is_true(conds, conditions::FAILED) {
        Some(false)
    } else {
        None
    }
}

/// Creates `names` at once (64 requests in flight), watching when each one's Job appears
/// and when it finishes; waits until all finished or `timeout`.
async fn batch(
    case: &Case,
    url: &str,
    names: &[String],
    reuse: bool,
    timeout: Duration,
) -> Result<(Vec<f64>, Vec<f64>, Vec<ClothJob>, f64)> {
    let api = case.clothjobs();
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let job_seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let done_seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let js = job_seen.clone();
    let job_watch = tokio::spawn(async move {
        let mut s = watcher(jobs, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(j)) = s.try_next().await {
            let owner = j
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(contract::LABEL_CLOTHJOB))
                .cloned()
                .unwrap_or_default();
            if let Ok(mut m) = js.lock() {
                m.entry(owner).or_insert_with(Instant::now);
            }
        }
    });
    let ds = done_seen.clone();
    let cj_watch = tokio::spawn({
        let api = api.clone();
        async move {
            let mut s = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(cj)) = s.try_next().await {
                if finished(&cj).is_some()
                    && let Ok(mut m) = ds.lock()
                {
                    m.entry(cj.metadata.name.clone().unwrap_or_default())
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
    let started = Instant::now();
    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            let created = created.clone();
            async move {
                let cj = manifest(&name, url, case, reuse)?;
                let at = Instant::now();
                api.create(&PostParams::default(), &cj).await?;
                if let Ok(mut m) = created.lock() {
                    m.insert(name, at);
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    let all = clothjob_testenv::wait_for(
        &format!("{} ClothJobs to finish", names.len()),
        timeout,
        Duration::from_secs(1),
        || async {
            let n = done_seen.lock().map(|m| m.len()).unwrap_or(0);
            if n < names.len() {
                return Ok(None);
            }
            let list = api.list(&ListParams::default()).await?.items;
            let wanted: Vec<ClothJob> = list
                .into_iter()
                .filter(|c| names.contains(c.metadata.name.as_ref().unwrap_or(&String::new())))
                .collect();
            Ok(wanted
                .iter()
                .all(|c| finished(c).is_some())
                .then_some(wanted))
        },
    )
    .await;
    let drain = started.elapsed().as_secs_f64();
    job_watch.abort();
    cj_watch.abort();
    let all = match all {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            api.list(&ListParams::default()).await?.items
        }
    };
    let created = created.lock().map(|m| m.clone()).unwrap_or_default();
    let job_seen = job_seen.lock().map(|m| m.clone()).unwrap_or_default();
    let done_seen = done_seen.lock().map(|m| m.clone()).unwrap_or_default();
    let lat = |seen: &HashMap<String, Instant>, scale: f64| -> Vec<f64> {
        let mut order: Vec<&String> = names.iter().collect();
        order.sort_by_key(|n| created.get(*n).copied());
        order
            .into_iter()
            .filter_map(|n| {
                let (a, b) = (created.get(n)?, seen.get(n)?);
                Some(b.saturating_duration_since(*a).as_secs_f64() * scale)
            })
            .collect()
    };
    Ok((lat(&job_seen, 1000.0), lat(&done_seen, 1.0), all, drain))
}

async fn measure(label: &str, limit: usize, a: &Args, photo: &[u8]) -> Result<(Run, Case)> {
    let flag = format!("--max-concurrent-jobs={limit}");
    let case = Case::with_operator_args("bench", &[&flag, "--reconcile-concurrency=16"]).await?;
    install_flow_schemas(&case, &[&case.ns]).await?;
    let src = SourceServer::start_in(case.cluster(), photo.to_vec(), 0, Duration::ZERO).await?;
    let names: Vec<String> = (0..a.jobs).map(|i| format!("load-{i:04}")).collect();
    let m0 = apiserver_metrics(&case).await?;
    let (w0, b0) = (flow_writes(&m0), writes_by_resource(&m0));
    let r0 = reconcile_buckets(&case).await?;
    let c0 = operator_counts(&case.operator.metrics().await?);
    let (job_created_ms, complete_s, all, drain_s) =
        batch(&case, &src.url("photo.jpg"), &names, false, a.timeout).await?;
    let m1 = apiserver_metrics(&case).await?;
    let (w1, b1) = (flow_writes(&m1), writes_by_resource(&m1));
    let by_resource: BTreeMap<String, f64> = b1
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - b0.get(k).copied().unwrap_or(0.0)) / a.jobs.max(1) as f64,
            )
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let r1 = reconcile_buckets(&case).await?;
    let c1 = operator_counts(&case.operator.metrics().await?);
    let operator_detail = c1
        .iter()
        .map(|(k, v)| {
            let per = (v - c0.get(k).copied().unwrap_or(0.0)) / a.jobs.max(1) as f64;
            (k.clone(), per)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();
    let (rss_mib, cpu_s) = process_usage(case.operator.pid().context("operator pid")?)?;
    let succeeded = all.iter().filter(|c| finished(c) == Some(true)).count();
    let jobs: Api<Job> = Api::namespaced(case.client.clone(), &case.ns);
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for j in jobs.list(&ListParams::default()).await?.items {
        if let Some(o) = j
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(contract::LABEL_CLOTHJOB))
        {
            *per.entry(o.clone()).or_insert(0) += 1;
        }
    }
    let one_job_each = names.iter().all(|n| per.get(n) == Some(&1));
    let delta = |k: &str| w1.get(k).copied().unwrap_or(0.0) - w0.get(k).copied().unwrap_or(0.0);
    let free = if limit == 0 {
        a.jobs
    } else {
        limit.min(a.jobs)
    };
    let free_slot_ms = job_created_ms.iter().take(free).copied().collect();
    let run = Run {
        label: label.to_string(),
        jobs: a.jobs,
        succeeded,
        one_job_each,
        drain_s,
        rss_mib,
        cpu_s,
        operator_writes: w1
            .keys()
            .filter(|k| k.starts_with(FLOW_OPERATOR))
            .map(|k| delta(k))
            .sum(),
        operator_by_kind: w1
            .keys()
            .filter_map(|k| {
                let kind = k.strip_prefix(FLOW_OPERATOR)?.trim_start_matches('-');
                let kind = if kind.is_empty() { "other" } else { kind };
                Some((kind.to_string(), delta(k) / a.jobs.max(1) as f64))
            })
            .collect(),
        runner_writes: delta(FLOW_RUNNERS),
        reconcile_p50_ms: histogram_quantile(&r0, &r1, 0.5),
        reconcile_p99_ms: histogram_quantile(&r0, &r1, 0.99),
        job_created_ms,
        free_slot_ms,
        complete_s,
        by_resource,
        operator_detail,
    };
    Ok((run, case))
}

fn row(r: &Run) -> String {
    let n = r.jobs.max(1) as f64;
    format!(
        "| {} | {}/{} | {} | {:.1} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} | {:.0} / {:.0} | {:.1} / {:.1} |",
        r.label,
        r.succeeded,
        r.jobs,
        if r.one_job_each { "yes" } else { "no" },
        r.drain_s,
        r.succeeded as f64 / r.drain_s.max(1e-9),
        r.rss_mib,
        r.cpu_s,
        r.operator_writes / n,
        r.runner_writes / n,
        (r.operator_writes + r.runner_writes) / n,
        r.reconcile_p50_ms,
        r.reconcile_p99_ms,
        quantile(&r.job_created_ms, 0.5),
        quantile(&r.job_created_ms, 0.99),
        quantile(&r.complete_s, 0.5),
        quantile(&r.complete_s, 0.99),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let photo = tshirt_jpeg(120, 160)?;
    let (main_run, case) = measure(&format!("limit {}", a.limit), a.limit, &a, &photo).await?;
    // Duplicates of one photo, in the same namespace after the batch: reuse on.
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(128, 160)?, 0, Duration::ZERO).await?;
    let dups: Vec<String> = (0..a.duplicates).map(|i| format!("dup-{i:03}")).collect();
    let (_, dup_complete, dup_all, dup_drain) =
        batch(&case, &src.url("photo.jpg"), &dups, true, a.timeout).await?;
    let dup_ok = dup_all
        .iter()
        .filter(|c| dups.contains(c.metadata.name.as_ref().unwrap_or(&String::new())))
        .filter(|c| finished(c) == Some(true))
        .count();
    let ran_pipeline = dup_all
        .iter()
        .filter(|c| dups.contains(c.metadata.name.as_ref().unwrap_or(&String::new())))
        .filter(|c| c.status.as_ref().is_some_and(|s| s.reused_from.is_none()))
        .count();
    for c in dup_all
        .iter()
        .filter(|c| dups.contains(c.metadata.name.as_ref().unwrap_or(&String::new())))
        .filter(|c| finished(c) != Some(true))
        .take(3)
    {
        let s = c.status.clone().unwrap_or_default();
        eprintln!(
            "{} did not succeed: {:?}: {:?}",
            c.metadata.name.clone().unwrap_or_default(),
            s.reason,
            s.message
        );
    }
    drop(case);
    let baseline = if a.baseline {
        Some(measure("no limit", 0, &a, &photo).await?.0)
    } else {
        None
    };

    println!(
        "\n| run | succeeded | one Job each | drain s | jobs/s | operator peak RSS MiB | operator CPU s | operator writes/job | runner writes/job | writes/job | reconcile p50/p99 ms | apply→Job p50/p99 ms | apply→Complete p50/p99 s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!("{}", row(&main_run));
    if let Some(b) = &baseline {
        println!("{}", row(b));
        println!(
            "\nratios limit/no-limit: drain {:.2}, peak RSS {:.2}, operator CPU {:.2}, writes/job {:.2}, apply→Job p50 {:.2}",
            main_run.drain_s / b.drain_s,
            main_run.rss_mib / b.rss_mib,
            main_run.cpu_s / b.cpu_s.max(1e-9),
            (main_run.operator_writes + main_run.runner_writes)
                / (b.operator_writes + b.runner_writes).max(1e-9),
            quantile(&main_run.job_created_ms, 0.5) / quantile(&b.job_created_ms, 0.5),
        );
    }
    println!(
        "\nwrite requests per job by verb and resource (every client: operator, runners, controllers, kubelet; {}):",
        main_run.label
    );
    for (k, v) in &main_run.by_resource {
        println!("  {k}: {v:.2}");
    }
    for r in std::iter::once(&main_run).chain(baseline.as_ref()) {
        let kinds: Vec<String> = r
            .operator_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!(
            "operator writes per job by kind ({}): {}",
            r.label,
            kinds.join(", ")
        );
    }
    for r in std::iter::once(&main_run).chain(baseline.as_ref()) {
        let detail: Vec<String> = r
            .operator_detail
            .iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        println!(
            "operator status writes and Events per job, its own count ({}): {}",
            r.label,
            detail.join(", ")
        );
    }
    for r in std::iter::once(&main_run).chain(baseline.as_ref()) {
        println!(
            "apply→Job of the first {} created ({}): p50 {:.0} ms, p99 {:.0} ms",
            r.free_slot_ms.len(),
            r.label,
            quantile(&r.free_slot_ms, 0.5),
            quantile(&r.free_slot_ms, 0.99)
        );
    }
    println!(
        "\nduplicates: {dup_ok}/{} succeeded in {dup_drain:.1} s, {ran_pipeline} ran the pipeline, apply→Complete p50 {:.1} s",
        a.duplicates,
        quantile(&dup_complete, 0.5)
    );
    let n = main_run.jobs.max(1) as f64;
    println!(
        "succeeded={}/{} rss_mib={:.1} writes_per_job={:.1}",
        main_run.succeeded,
        main_run.jobs,
        main_run.rss_mib,
        (main_run.operator_writes + main_run.runner_writes) / n
    );
    if main_run.succeeded != main_run.jobs || dup_ok != a.duplicates {
        bail!("not every job succeeded");
    }
    Ok(())
}
