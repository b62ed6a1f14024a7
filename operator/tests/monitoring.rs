//! The shipped Prometheus rules and Grafana dashboard (charts/clothjob-operator/files/):
//! `promtool check rules`, `promtool test rules` with a firing and a quiet case for every
//! alert, every dashboard query parsed by promtool, the dashboard's variables, and every
//! metric they name exported by the operator.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules_file() -> PathBuf {
    root().join("charts/clothjob-operator/files/prometheus-rules.yaml")
}

fn dashboard() -> Value {
    let path = root().join("charts/clothjob-operator/files/grafana-dashboard.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (scripts/setup-test-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// Every alert of the rules file, with its expression.
fn alerts() -> Vec<(String, String)> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file()).unwrap()).unwrap();
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| {
            Some((
                r["alert"].as_str()?.to_string(),
                r["expr"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Every query of the dashboard (panels, rows' panels and variables).
fn dashboard_queries(d: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

/// A dashboard query with Grafana's variables replaced as Grafana would for a 1 h range.
fn concrete(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$namespace", ".*")
}

#[test]
fn the_rules_pass_promtool_check_and_their_unit_tests() {
    let said = promtool(&["check", "rules", rules_file().to_str().unwrap()], &root());
    assert!(said.contains("SUCCESS"), "{said}");
    let dir = root().join("deploy/monitoring");
    let said = promtool(&["test", "rules", "rules.test.yaml"], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let tests: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/rules.test.yaml")).unwrap(),
    )
    .unwrap();
    let cases: Vec<(String, bool)> = tests["tests"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap().iter())
        .map(|c| {
            let name = c["alertname"].as_str().unwrap().to_string();
            let fires = c["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (name, fires)
        })
        .collect();
    let names: Vec<String> = alerts().into_iter().map(|(n, _)| n).collect();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        for fires in [true, false] {
            assert!(
                cases.contains(&(name.clone(), fires)),
                "{name} lacks a unit test where it {}",
                if fires { "fires" } else { "stays quiet" }
            );
        }
    }
}

#[test]
fn every_dashboard_query_parses() {
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 15, "{queries:?}");
    // promtool parses rule files: each query becomes a recording rule.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"record": format!("dashboard:query{i}"), "expr": concrete(q)}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = std::env::temp_dir().join(format!("clothjob-dashboard-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dashboard-queries.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let said = promtool(&["check", "rules", path.to_str().unwrap()], &dir);
    assert!(said.contains("SUCCESS"), "{said}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_dashboard_has_a_datasource_and_a_namespace_variable_and_no_fixed_uid_or_window() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["name"] == "datasource").unwrap();
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let ns = vars.iter().find(|v| v["name"] == "namespace").unwrap();
    assert_eq!(ns["type"], "query");
    // Every datasource reference is the variable.
    fn uids(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(ds)) = m.get("datasource")
                    && let Some(Value::String(uid)) = ds.get("uid")
                {
                    out.insert(uid.clone());
                }
                m.values().for_each(|v| uids(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| uids(v, out)),
            _ => {}
        }
    }
    let mut found = BTreeSet::new();
    uids(&d, &mut found);
    assert_eq!(found, BTreeSet::from(["${datasource}".to_string()]));
    for q in dashboard_queries(&d) {
        assert!(q.contains("namespace=~\"$namespace\""), "{q}");
        for (i, _) in q.match_indices('[') {
            let window = &q[i..];
            assert!(
                window.starts_with("[$__rate_interval]") || window.starts_with("[$__range]"),
                "a fixed window in {q}"
            );
        }
    }
    let titles: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for want in [
        "Stage latency p50 / p95 / p99 (succeeded runs)",
        "Share of job time by stage",
        "Throughput (finished jobs per minute)",
        "Failure rate by reason (per minute)",
        "Queue wait (created to first runner pod running)",
        "Jobs by phase",
        "Retries (per minute)",
        "Reconcile errors by category (per second)",
        "Reconcile duration p50 / p95 / p99",
    ] {
        assert!(titles.contains(&want), "no panel {want:?} in {titles:?}");
    }
}

/// Metric names in a PromQL expression (identifiers starting with `clothjob_`), without the
/// histogram suffixes.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("clothjob_") {
        let start = i + pos;
        let boundary = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            let name = &expr[start..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(base.to_string());
        }
        i = end;
    }
    out
}

#[test]
fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let m = clothjob_operator::metrics::Metrics::new().unwrap();
    m.stage_duration
        .with_label_values(&["encoding", "builtin", "succeeded"])
        .observe(0.1);
    m.failures.with_label_values(&["BadInput"]).inc();
    m.reconcile_errors.with_label_values(&["Kube"]).inc();
    let text = m.render();
    let exported: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let mut named = BTreeSet::new();
    for (_, expr) in alerts() {
        named.extend(metric_names(&expr));
    }
    for q in dashboard_queries(&dashboard()) {
        named.extend(metric_names(&q));
    }
    let missing: Vec<&String> = named.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}\n{text}");
    assert!(named.len() >= 10, "{named:?}");
}
