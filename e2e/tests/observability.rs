//! Observability end to end: a real Prometheus (Debian's `prometheus`, on loopback) scrapes
//! the operator of a case while ClothJobs run on the real node (two succeed, one is retried
//! after its storing stage failed, one fails after its retries), with the shipped rules
//! loaded. Its HTTP API must show every stage run once with the right outcome, counters that
//! match the jobs, numbers from the quantile and share queries, every dashboard and rule
//! expression parsing, and data in the main panels; a restarted operator observes nothing
//! again. Also: the chart's monitoring objects carry the shipped files unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clothjob_api::{ClothJob, StageState, conditions};
use clothjob_e2e::sample::tshirt_jpeg;
use clothjob_e2e::source_server::SourceServer;
use clothjob_e2e::{Case, wait_condition};
use clothjob_testenv::{bins, wait_for};
use kube::Api;
use serde_json::Value;
use tokio::process::{Child, Command};

const MINUTE: Duration = Duration::from_secs(60);
/// What the dashboard's Grafana variables stand for in these queries.
const RATE_INTERVAL: &str = "5m";
const RANGE: &str = "30m";
/// The `namespace` label Prometheus gives the operator's target (as a ServiceMonitor would).
const OPERATOR_NAMESPACE: &str = "clothjob-system";

fn chart() -> PathBuf {
    bins::workspace_root().join("charts/clothjob-operator")
}

fn rules_path() -> PathBuf {
    chart().join("files/prometheus-rules.yaml")
}

fn dashboard() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(chart().join("files/grafana-dashboard.json")).unwrap(),
    )
    .unwrap()
}

/// Every panel of the dashboard with its queries.
fn panels() -> Vec<(String, Vec<String>)> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| {
            let targets = p["targets"].as_array()?;
            Some((
                p["title"].as_str()?.to_string(),
                targets
                    .iter()
                    .filter_map(|t| t["expr"].as_str().map(str::to_string))
                    .collect(),
            ))
        })
        .collect()
}

/// A dashboard query as Grafana sends it.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", RANGE)
        .replace("$namespace", OPERATOR_NAMESPACE)
}

/// Every expression of the rules file (alerts and recording rules).
fn rule_exprs() -> Vec<(String, String)> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_path()).unwrap()).unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .map(|r| {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            (name.to_string(), r["expr"].as_str().unwrap().to_string())
        })
        .collect()
}

/// A Prometheus server on loopback scraping one target every second through a file_sd file
/// (rewritten when the operator moves to another port), with the shipped rules loaded.
struct Prometheus {
    child: Child,
    url: String,
    targets: PathBuf,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(target: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let targets = dir.path().join("targets.json");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_path()],
            "scrape_configs": [{
                "job_name": "clothjob-operator",
                "file_sd_configs": [{"files": [targets], "refresh_interval": "1s"}]
            }]
        });
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_yaml::to_string(&config)?)?;
        let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
        let mut p = Self {
            child: Command::new("prometheus")
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .kill_on_drop(true)
                .spawn()
                .context("starting prometheus (scripts/setup-test-deps.sh installs it)")?,
            url: format!("http://127.0.0.1:{port}"),
            targets,
            http: reqwest::Client::new(),
            _dir: dir,
        };
        p.retarget(target)?;
        let ready = format!("{}/-/ready", p.url);
        wait_for(
            "prometheus ready",
            MINUTE,
            Duration::from_millis(200),
            || {
                let http = p.http.clone();
                let ready = ready.clone();
                async move {
                    Ok(http
                        .get(&ready)
                        .send()
                        .await
                        .ok()
                        .filter(|r| r.status().is_success())
                        .map(|_| ()))
                }
            },
        )
        .await
        .with_context(|| p.log())?;
        if let Some(status) = p.child.try_wait()? {
            bail!("prometheus exited: {status}\n{}", p.log());
        }
        Ok(p)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Scrapes `target` (host:port) from now on, labelled like the chart's operator.
    fn retarget(&mut self, target: &str) -> Result<()> {
        let sd = serde_json::json!([{
            "targets": [target],
            "labels": {"namespace": OPERATOR_NAMESPACE}
        }]);
        let tmp = self.targets.with_extension("tmp");
        std::fs::write(&tmp, sd.to_string())?;
        std::fs::rename(&tmp, &self.targets)?;
        Ok(())
    }

    /// The result of an instant query; an error when Prometheus refuses it (a parse error).
    async fn query(&self, q: &str) -> Result<Vec<Value>> {
        let resp: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", q)])
            .send()
            .await?
            .json()
            .await?;
        if resp["status"] != "success" {
            bail!("query {q} failed: {resp}");
        }
        Ok(resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Instant query results as (labels, value).
    async fn samples(&self, q: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>> {
        Ok(self
            .query(q)
            .await?
            .into_iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                let value = r["value"][1].as_str().unwrap().parse::<f64>().unwrap();
                (labels, value)
            })
            .collect())
    }

    /// A range query's series as (labels, [[unix seconds, value]]); NaN points dropped.
    async fn range(
        &self,
        q: &str,
        start: f64,
        end: f64,
        step: f64,
    ) -> Result<Vec<(BTreeMap<String, String>, Vec<[f64; 2]>)>> {
        let resp: Value = self
            .http
            .get(format!("{}/api/v1/query_range", self.url))
            .query(&[
                ("query", q.to_string()),
                ("start", format!("{start:.3}")),
                ("end", format!("{end:.3}")),
                ("step", format!("{step:.3}")),
            ])
            .send()
            .await?
            .json()
            .await?;
        if resp["status"] != "success" {
            bail!("range query {q} failed: {resp}");
        }
        let mut out = Vec::new();
        for r in resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let labels = r["metric"]
                .as_object()
                .context("metric labels")?
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            let points = r["values"]
                .as_array()
                .context("values")?
                .iter()
                .filter_map(|p| {
                    let t = p[0].as_f64()?;
                    let v = p[1].as_str()?.parse::<f64>().ok()?;
                    v.is_finite().then_some([t, v])
                })
                .collect();
            out.push((labels, points));
        }
        Ok(out)
    }

    /// Waits until the instant query `q` returns one sample equal to `want`.
    async fn wait_value(&self, q: &str, want: f64) -> Result<()> {
        wait_for(
            &format!("{q} == {want} in Prometheus"),
            MINUTE,
            Duration::from_millis(500),
            || async {
                let s = self.samples(q).await?;
                Ok((s.len() == 1 && s[0].1 == want).then_some(()))
            },
        )
        .await
    }
}

/// The dashboard panels drawn in README's picture, in reading order.
const PICTURE_PANELS: [&str; 6] = [
    "Stage latency p50 / p95 / p99 (succeeded runs)",
    "Share of job time by stage",
    "Per-stage table over the time range (stage, p50, p95, share)",
    "Jobs by phase",
    "Throughput (finished jobs per minute)",
    "Job duration (created to finished)",
];

/// `{{label}}` placeholders of a Grafana legend filled from a series' labels.
fn legend(format: &str, labels: &BTreeMap<String, String>) -> String {
    let mut out = format.to_string();
    for (k, v) in labels {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

/// The picture's panels as Prometheus answers their queries over the run (range queries
/// for time series with a 1m rate window, the instant table over the run): the input of
/// `cargo xtask dashboard-picture`.
async fn dashboard_data(
    prom: &Prometheus,
    start: std::time::SystemTime,
    end: std::time::SystemTime,
) -> Result<Value> {
    let secs = |t: std::time::SystemTime| -> Result<f64> {
        Ok(t.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64())
    };
    let (start, end) = (secs(start)?, secs(end)?);
    let step = ((end - start) / 150.0).max(1.0);
    let range_secs = (end - start).ceil() as u64 + 60;
    let board = dashboard();
    let mut panels = Vec::new();
    for title in PICTURE_PANELS {
        let p = board["panels"]
            .as_array()
            .context("panels")?
            .iter()
            .find(|p| p["title"] == title)
            .with_context(|| format!("panel {title:?} in the dashboard"))?;
        let defaults = &p["fieldConfig"]["defaults"];
        let mut series = Vec::new();
        let mut rows = Vec::new();
        for t in p["targets"].as_array().context("targets")? {
            let expr = t["expr"]
                .as_str()
                .context("expr")?
                .replace("$__rate_interval", "1m")
                .replace("$__range", &format!("{range_secs}s"))
                .replace("$namespace", OPERATOR_NAMESPACE);
            if p["type"] == "table" {
                for (l, v) in prom.samples(&expr).await? {
                    rows.push(serde_json::json!({
                        "stage": l.get("stage"),
                        "stat": l.get("stat"),
                        "value": v,
                    }));
                }
                continue;
            }
            let format = t["legendFormat"].as_str().unwrap_or_default();
            for (l, points) in prom.range(&expr, start, end, step).await? {
                series.push(serde_json::json!({"name": legend(format, &l), "points": points}));
            }
        }
        panels.push(serde_json::json!({
            "title": title,
            "type": p["type"],
            "unit": defaults["unit"],
            "stacking": defaults["custom"]["stacking"]["mode"],
            "series": series,
            "rows": rows,
        }));
    }
    Ok(serde_json::json!({
        "source": "e2e/tests/observability.rs (prometheus_sees_every_stage_once_and_the_dashboard_and_rules_work)",
        "start": start,
        "end": end,
        "step": step,
        "rateInterval": "1m",
        "panels": panels,
    }))
}

/// The jobs here share one photo and settings: `reuse: Never` makes each run the pipeline,
/// which is what the metrics are checked for.
fn manifest(name: &str, url: &str, output: &str, retries: u32) -> String {
    format!(
        "apiVersion: closetconnect.io/v1alpha1\nkind: ClothJob\nmetadata: {{name: {name}}}\nspec:\n  source: {{url: '{url}'}}\n  output: {output}\n  retries: {retries}\n  reuse: Never\n"
    )
}

/// `spec.output` writing to the case's bucket with the credentials of Secret `secret`.
fn output_with(case: &Case, secret: &str) -> String {
    format!(
        "{{uri: '{}', credentialsSecretName: {secret}}}",
        case.output_uri()
    )
}

/// Writes Secret `name`: the case's S3 credentials, with a wrong secret key when `wrong`
/// (the S3 server refuses every write; a pod started later gets the new values).
async fn copy_creds(case: &Case, name: &str, wrong: bool) -> Result<()> {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let secrets: Api<Secret> = Api::namespaced(case.client.clone(), &case.ns);
    let mut data = secrets
        .get(clothjob_e2e::harness::S3_SECRET)
        .await?
        .data
        .context("credentials")?;
    if wrong {
        data.insert(
            "AWS_SECRET_ACCESS_KEY".into(),
            k8s_openapi::ByteString(b"not-the-key".to_vec()),
        );
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    secrets
        .patch(
            name,
            &PatchParams::apply("observability-test").force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

/// A counter of the operator's own /metrics text (0 when absent).
fn scraped(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn promtool_check_metrics(text: &str) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.trim().is_empty() {
        bail!("promtool check metrics: {said}");
    }
    Ok(())
}

/// The runner pod's log: one JSON object per line, each with the job span (namespace, name,
/// uid, attempt, the trace id the operator passed), and a stage span on each stage's lines.
async fn runner_logs_are_json_with_the_job_on_every_line(case: &Case, name: &str) -> Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let cj = case.clothjobs().get(name).await?;
    let uid = cj.metadata.uid.clone().context("uid")?;
    let trace: String = uid.chars().filter(|c| *c != '-').collect();
    let pods = case.runner_pods(name).await?;
    let pod = pods.first().context("runner pod")?;
    let env = pod.spec.as_ref().context("spec")?.containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let tp = env
        .iter()
        .find(|e| e.name == "TRACEPARENT")
        .and_then(|e| e.value.clone())
        .context("TRACEPARENT")?;
    assert!(tp.starts_with(&format!("00-{trace}-")), "{tp}");
    let api: Api<Pod> = Api::namespaced(case.client.clone(), &case.ns);
    let log = api
        .logs(
            pod.metadata.name.as_deref().context("pod name")?,
            &Default::default(),
        )
        .await?;
    let mut stages = Vec::new();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 5, "{log}");
    for line in lines {
        let v: Value = serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        let job = v["spans"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "job"))
            .with_context(|| format!("no job span: {line}"))?;
        assert_eq!(job["namespace"], case.ns.as_str(), "{line}");
        assert_eq!(job["clothjob"], name, "{line}");
        assert!(
            job["attempt"].is_i64() || v["message"] == "running",
            "{line}"
        );
        assert_eq!(job["uid"], uid.as_str(), "{line}");
        assert_eq!(job["trace_id"], trace.as_str(), "{line}");
        if v["message"] == "stage finished" {
            assert!(v["duration_ms"].is_u64(), "{line}");
            stages.push(v["span"]["stage"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(
        stages,
        [
            "backgroundRemoval",
            "segmentation",
            "expansion",
            "encoding",
            "storing"
        ],
        "{log}"
    );
    Ok(())
}

fn stage_failed(cj: &ClothJob, stage: &str) -> bool {
    cj.status
        .as_ref()
        .and_then(|s| s.stages.as_ref())
        .is_some_and(|st| {
            st.iter()
                .any(|s| s.name == stage && s.state == StageState::Failed)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_every_stage_once_and_the_dashboard_and_rules_work() -> Result<()> {
    let mut case = Case::new("observe").await?;
    let mut prom = Prometheus::start(&case.operator.http).await?;
    // rate() sees a job's finish only if a sample from before it is stored: wait for the
    // first scrape of the zero-initialised series before any job runs (else, on a slow
    // machine, the series may first be scraped at its final count and show no increase).
    prom.wait_value("sum(clothjob_job_duration_seconds_count)", 0.0)
        .await
        .context("Prometheus' first scrape of the operator")?;
    let started = std::time::SystemTime::now();
    let src =
        SourceServer::start_in(case.cluster(), tshirt_jpeg(300, 400)?, 0, Duration::ZERO).await?;
    let api: Api<ClothJob> = case.clothjobs();
    // Two that succeed; one whose S3 credentials are fixed only after its first attempt
    // failed in the storing stage; one whose credentials stay wrong (fails after its retry).
    copy_creds(&case, "late-creds", true).await?;
    copy_creds(&case, "bad-creds", true).await?;
    for (name, output, retries) in [
        ("ok-1", case.output(), 0),
        ("ok-2", case.output(), 0),
        ("late", output_with(&case, "late-creds"), 2),
        ("lost", output_with(&case, "bad-creds"), 1),
    ] {
        case.create(&manifest(name, &src.url("photo.jpg"), &output, retries))
            .await?;
    }
    wait_for(
        "late's first attempt to fail in storing",
        3 * MINUTE,
        Duration::from_millis(200),
        || async { Ok(stage_failed(&api.get("late").await?, "storing").then_some(())) },
    )
    .await
    .with_context(|| case.diagnostics())?;
    copy_creds(&case, "late-creds", false).await?;
    for (name, cond) in [
        ("ok-1", conditions::COMPLETE),
        ("ok-2", conditions::COMPLETE),
        ("late", conditions::COMPLETE),
        ("lost", conditions::FAILED),
    ] {
        wait_condition(&api, name, cond, 4 * MINUTE)
            .await
            .with_context(|| case.diagnostics())?;
    }
    let late_cj = api.get("late").await?;
    assert_eq!(late_cj.status.as_ref().and_then(|s| s.attempts), Some(2));
    let lost_cj = api.get("lost").await?;
    let lost_status = lost_cj.status.clone().context("status")?;
    assert_eq!(lost_status.reason.as_deref(), Some("RetriesExhausted"));
    assert_eq!(lost_status.attempts, Some(2));

    runner_logs_are_json_with_the_job_on_every_line(&case, "ok-1").await?;

    // The operator's exposition passes promtool on a real scrape.
    let text = case.operator.metrics().await?;
    promtool_check_metrics(&text)?;

    // Prometheus has scraped the final counts.
    prom.wait_value("sum(clothjob_jobs_finished_total)", 4.0)
        .await
        .with_context(|| prom.log())?;
    prom.wait_value(
        "sum(clothjob_stage_duration_seconds_count)",
        5.0 * 3.0 + 4.0 * 3.0 + 3.0,
    )
    .await?;

    // Every stage run once with its outcome: the four pipeline stages ran in all six
    // attempts; storing succeeded three times and failed three times (late's first attempt,
    // both of lost's).
    let counts: BTreeMap<(String, String, String), f64> = prom
        .samples("sum by (stage, backend, outcome) (clothjob_stage_duration_seconds_count)")
        .await?
        .into_iter()
        .filter(|(_, v)| *v > 0.0)
        .map(|(l, v)| {
            (
                (
                    l["stage"].clone(),
                    l["backend"].clone(),
                    l["outcome"].clone(),
                ),
                v,
            )
        })
        .collect();
    let mut want = BTreeMap::new();
    for stage in ["backgroundRemoval", "segmentation", "expansion", "encoding"] {
        want.insert((stage.into(), "builtin".into(), "succeeded".into()), 6.0);
    }
    want.insert(
        ("storing".into(), "objectStore".into(), "succeeded".into()),
        3.0,
    );
    want.insert(
        ("storing".into(), "objectStore".into(), "failed".into()),
        3.0,
    );
    assert_eq!(counts, want);

    // Counters match the jobs.
    for (q, v) in [
        (
            "sum(clothjob_jobs_finished_total{outcome=\"succeeded\"})",
            3.0,
        ),
        ("sum(clothjob_jobs_finished_total{outcome=\"failed\"})", 1.0),
        (
            "sum(clothjob_failures_total{reason=\"RetriesExhausted\"})",
            1.0,
        ),
        ("sum(clothjob_failures_total)", 1.0),
        ("sum(clothjob_retries_total)", 2.0),
        ("sum(clothjob_queue_wait_seconds_count)", 4.0),
        ("sum(clothjob_job_duration_seconds_count)", 4.0),
        ("sum(clothjob_job_output_bytes_count)", 3.0),
        ("sum(clothjob_jobs{phase=\"Succeeded\"})", 3.0),
        ("sum(clothjob_jobs{phase=\"Failed\"})", 1.0),
        ("sum(clothjob_jobs{phase=\"Running\"})", 0.0),
        ("sum(clothjob_leader)", 1.0),
        ("count(clothjob_build_info)", 1.0),
    ] {
        prom.wait_value(q, v).await?;
    }

    // The quantile and share queries give numbers for every stage.
    let p95 = prom
        .samples(&format!(
            "histogram_quantile(0.95, sum by (le, stage) (rate(clothjob_stage_duration_seconds_bucket{{outcome=\"succeeded\"}}[{RANGE}])))"
        ))
        .await?;
    assert_eq!(p95.len(), 5, "{p95:?}");
    assert!(
        p95.iter().all(|(_, v)| v.is_finite() && *v > 0.0),
        "{p95:?}"
    );
    let share = prom
        .samples(&format!(
            "sum by (stage) (increase(clothjob_stage_duration_seconds_sum[{RANGE}])) / scalar(sum(increase(clothjob_stage_duration_seconds_sum[{RANGE}])))"
        ))
        .await?;
    assert_eq!(share.len(), 5, "{share:?}");
    let total: f64 = share.iter().map(|(_, v)| v).sum();
    assert!((total - 1.0).abs() < 1e-6, "{share:?}");

    // Every dashboard query parses and the main panels have data.
    let main = [
        "Stage latency p50 / p95 / p99 (succeeded runs)",
        "Share of job time by stage",
        "Per-stage table over the time range (stage, p50, p95, share)",
        "Stage failures by stage",
        "Throughput (finished jobs per minute)",
        "Failure rate by reason (per minute)",
        "Jobs by phase",
        "Queue wait (created to first runner pod running)",
        "Job duration (created to finished)",
        "Retries (per minute)",
        "Reconcile duration p50 / p95 / p99",
        "Leader and version",
    ];
    let mut table = String::new();
    for (title, exprs) in panels() {
        for e in exprs {
            let rows = prom.samples(&concrete(&e)).await?;
            if main.contains(&title.as_str()) {
                assert!(!rows.is_empty(), "panel {title:?}: no data for {e}");
            }
            if title.starts_with("Per-stage table") {
                for (l, v) in &rows {
                    table.push_str(&format!("{} {} {v}\n", l["stage"], l["stat"]));
                }
            }
        }
    }
    // The README's per-stage table: stage, p50, p95 and share from one query.
    eprintln!("per-stage table:\n{table}");
    for stage in [
        "backgroundRemoval",
        "segmentation",
        "expansion",
        "encoding",
        "storing",
    ] {
        for stat in ["p50", "p95", "share"] {
            assert!(
                table.contains(&format!("{stage} {stat} ")),
                "{stage} {stat}:\n{table}"
            );
        }
    }
    // The data of the README's dashboard picture (`cargo xtask dashboard-picture`).
    let picture = dashboard_data(&prom, started, std::time::SystemTime::now()).await?;
    let drawn = picture["panels"].as_array().cloned().unwrap_or_default();
    assert_eq!(drawn.len(), PICTURE_PANELS.len(), "{picture}");
    for p in &drawn {
        let has_points = p["series"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["points"].as_array().is_some_and(|p| !p.is_empty()))
        });
        let has_rows = p["rows"].as_array().is_some_and(|r| !r.is_empty());
        assert!(has_points || has_rows, "picture panel without data: {p}");
    }
    let data_path = bins::workspace_root().join("target/e2e-dashboard-data.json");
    std::fs::create_dir_all(data_path.parent().context("target dir")?)?;
    std::fs::write(&data_path, serde_json::to_string_pretty(&picture)?)?;
    eprintln!("dashboard data written to {}", data_path.display());

    // Every rule expression parses (and the rules were loaded).
    for (name, e) in rule_exprs() {
        prom.query(&e)
            .await
            .with_context(|| format!("rule {name}"))?;
    }
    let rules: Value = prom
        .http
        .get(format!("{}/api/v1/rules", prom.url))
        .send()
        .await?
        .json()
        .await?;
    let groups = rules["data"]["groups"].as_array().context("rule groups")?;
    assert_eq!(groups.len(), 2, "{rules}");
    assert!(
        groups.iter().all(|g| g["rules"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["health"] != "err")),
        "{rules}"
    );
    // Nothing is stuck or failing to reconcile here.
    let firing: Vec<Value> = prom.query("ALERTS{alertstate=\"firing\"}").await?;
    assert!(firing.is_empty(), "{firing:?}");

    // A restarted operator reads the written status and observes nothing again.
    let before = case.operator.http.clone();
    case.operator.restart().await?;
    let after = case.operator.http.clone();
    assert_ne!(before, after);
    prom.retarget(&after)?;
    wait_for(
        "the restarted operator to reconcile the four ClothJobs",
        MINUTE,
        Duration::from_millis(200),
        || async {
            let t = case.operator.metrics().await?;
            Ok((scraped(&t, "clothjob_reconcile_total{result=\"ok\"}") >= 4.0).then_some(t))
        },
    )
    .await?;
    prom.wait_value(
        &format!("sum(clothjob_reconcile_total{{instance=\"{after}\",result=\"ok\"}}) >= bool 4"),
        1.0,
    )
    .await?;
    let text = case.operator.metrics().await?;
    let observed: f64 = text
        .lines()
        .filter(|l| l.starts_with("clothjob_stage_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        observed, 0.0,
        "the restarted operator observed stages again:\n{text}"
    );
    assert_eq!(
        scraped(&text, "clothjob_jobs_finished_total{outcome=\"succeeded\"}"),
        0.0
    );
    assert_eq!(scraped(&text, "clothjob_retries_total"), 0.0);
    let again = prom
        .samples(&format!(
            "sum(clothjob_stage_duration_seconds_count{{instance=\"{after}\"}})"
        ))
        .await?;
    assert!(again.is_empty() || again[0].1 == 0.0, "{again:?}");
    // The old process's series went stale: the current total is only the new process's.
    let now_total = prom
        .samples("sum(clothjob_stage_duration_seconds_count)")
        .await?;
    assert!(now_total.iter().all(|(_, v)| *v == 0.0), "{now_total:?}");
    prom.wait_value("sum(clothjob_jobs{phase=\"Succeeded\"})", 3.0)
        .await?;
    Ok(())
}

// ---- the chart's monitoring objects ----

fn helm_template(extra: &[&str]) -> Result<Vec<serde_yaml::Value>> {
    let helm = bins::ensure_helm()?;
    let home = std::env::temp_dir().join(format!("clothjob-helm-{}", std::process::id()));
    let out = std::process::Command::new(&helm)
        .args(["template", "clothjob"])
        .arg(chart())
        .args(["--namespace", "clothjob-system"])
        .args(extra)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()?;
    if !out.status.success() {
        bail!("helm template: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8(out.stdout)?;
    let mut docs = Vec::new();
    for d in text.split("\n---") {
        let v: serde_yaml::Value = serde_yaml::from_str(d)?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> Vec<&'a serde_yaml::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn helm_lint_passes_with_every_monitoring_object() {
    let helm = bins::ensure_helm().unwrap();
    let home = std::env::temp_dir().join(format!("clothjob-helm-lint-{}", std::process::id()));
    let out = std::process::Command::new(&helm)
        .arg("lint")
        .arg("--strict")
        .arg(chart())
        .args([
            "--set",
            "monitoring.serviceMonitor.enabled=true",
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--set",
            "monitoring.dashboard.enabled=true",
            "--set",
            "monitoring.dashboard.namespace=grafana",
            "--set",
            "monitoring.serviceMonitor.additionalLabels.release=kps",
        ])
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn by_default_the_chart_ships_the_dashboard_but_no_prometheus_operator_objects() {
    let docs = helm_template(&[]).unwrap();
    // ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs: opt in.
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(
            of_kind(&docs, kind).is_empty(),
            "{kind} rendered by default"
        );
    }
    // The dashboard is a plain ConfigMap: there from the first install.
    assert_eq!(of_kind(&docs, "ConfigMap").len(), 1);
}

#[test]
fn the_chart_ships_the_rules_and_the_dashboard_files_unchanged() {
    let docs = helm_template(&[
        "--set",
        "monitoring.serviceMonitor.enabled=true",
        "--set",
        "monitoring.serviceMonitor.additionalLabels.release=kps",
        "--set",
        "monitoring.prometheusRule.enabled=true",
        "--set",
        "monitoring.prometheusRule.additionalLabels.release=kps",
        "--set",
        "monitoring.dashboard.enabled=true",
        "--set",
        "monitoring.dashboard.namespace=grafana",
        "--set",
        "monitoring.dashboard.folder=Shop",
        "--set",
        "monitoring.dashboard.folderAnnotation=k8s-sidecar-target-directory",
    ])
    .unwrap();
    let sm = of_kind(&docs, "ServiceMonitor");
    assert_eq!(sm.len(), 1);
    assert_eq!(sm[0]["metadata"]["labels"]["release"], "kps");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["port"], "http");
    // It selects the metrics Service by that Service's labels.
    let service = of_kind(&docs, "Service")[0];
    let sel = sm[0]["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap();
    for (k, v) in sel {
        assert_eq!(&service["metadata"]["labels"][k], v, "{k:?}");
    }
    assert!(
        service["spec"]["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "http")
    );

    let rule = of_kind(&docs, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    assert_eq!(rule[0]["metadata"]["labels"]["release"], "kps");
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_path()).unwrap()).unwrap();
    assert_eq!(
        rule[0]["spec"], file,
        "the PrometheusRule differs from the rules file"
    );

    let cm = of_kind(&docs, "ConfigMap");
    assert_eq!(cm.len(), 1);
    assert_eq!(cm[0]["metadata"]["namespace"], "grafana");
    assert_eq!(cm[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        cm[0]["metadata"]["annotations"]["k8s-sidecar-target-directory"],
        "Shop"
    );
    let json: Value =
        serde_json::from_str(cm[0]["data"]["clothjob-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        json,
        dashboard(),
        "the ConfigMap's dashboard differs from the file"
    );
}

#[test]
fn the_dashboard_label_and_value_are_settable() {
    let docs = helm_template(&[
        "--set",
        "monitoring.dashboard.enabled=true",
        "--set",
        "monitoring.dashboard.label=dashboards",
        "--set-string",
        "monitoring.dashboard.labelValue=clothjob",
        "--set",
        "monitoring.dashboard.folder=",
    ])
    .unwrap();
    let cm = of_kind(&docs, "ConfigMap")[0];
    assert_eq!(cm["metadata"]["labels"]["dashboards"], "clothjob");
    assert_eq!(cm["metadata"]["namespace"], "clothjob-system");
    assert!(cm["metadata"]["annotations"].is_null());
}
