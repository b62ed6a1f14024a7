//! `report`: where the time went. For one ClothJob each stage's backend, seconds, share of the
//! total and a bar; over the namespace's succeeded ClothJobs p50 and p95 per stage.

use std::collections::BTreeMap;

use clothjob_api::progress::Stage;
use clothjob_api::{ClothJob, StageState, StageStatus};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use crate::args::{Format, ReportArgs};
use crate::client::Connection;
use crate::error::{CommandError, EXIT_OK, is_not_found};
use crate::render::{self, Style, left, right, table};
use crate::watch::{Outcome, outcome};

/// Width of the share bars.
const BAR_WIDTH: usize = 20;

/// One stage of one job.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageRow {
    /// Stage name.
    pub stage: String,
    /// Backend that ran it.
    pub backend: String,
    /// Seconds it took.
    pub seconds: f64,
    /// Share of the stages' total, 0-1.
    pub share: f64,
}

/// The stages that ran (succeeded or failed, with a duration), in pipeline order.
pub fn breakdown(stages: &[StageStatus]) -> Vec<StageRow> {
    let ran: Vec<&StageStatus> = stages
        .iter()
        .filter(|s| matches!(s.state, StageState::Succeeded | StageState::Failed))
        .filter(|s| s.duration_ms.is_some())
        .collect();
    let total: i64 = ran.iter().filter_map(|s| s.duration_ms).sum();
    ran.into_iter()
        .map(|s| {
            let ms = s.duration_ms.unwrap_or(0);
            StageRow {
                stage: s.name.clone(),
                backend: s.backend.clone().unwrap_or_else(|| "builtin".into()),
                seconds: ms as f64 / 1000.0,
                share: if total > 0 {
                    ms as f64 / total as f64
                } else {
                    0.0
                },
            }
        })
        .collect()
}

/// The per-stage table of one job, with a total line.
pub fn breakdown_table(rows: &[StageRow], style: Style) -> String {
    let total: f64 = rows.iter().map(|r| r.seconds).sum();
    let mut cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut row = vec![
                r.stage.clone(),
                r.backend.clone(),
                render::seconds(r.seconds),
                format!("{:.1}%", 100.0 * r.share),
            ];
            if style.fancy {
                row.push(render::bar(r.share, BAR_WIDTH));
            }
            row
        })
        .collect();
    let mut total_row = vec![
        "total".into(),
        String::new(),
        render::seconds(total),
        if rows.is_empty() { "-" } else { "100.0%" }.into(),
    ];
    if style.fancy {
        total_row.push(String::new());
    }
    cells.push(total_row);
    let mut cols = vec![
        left("STAGE"),
        left("BACKEND"),
        right("SECONDS"),
        right("SHARE"),
    ];
    if style.fancy {
        cols.push(left(""));
    }
    table(&cols, &cells)
}

/// One stage over many jobs.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StageStats {
    /// Stage name (`total` for the jobs' sums).
    pub stage: String,
    /// Backend that ran it.
    pub backend: String,
    /// How many jobs ran it.
    pub jobs: usize,
    /// Median seconds.
    pub p50: f64,
    /// 95th percentile in seconds.
    pub p95: f64,
    /// Share of the p50s' sum, 0-1 (none for the total).
    pub share: f64,
}

/// The nearest-rank percentile `p` (0-100) of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn stage_order(name: &str) -> usize {
    Stage::ALL
        .iter()
        .position(|s| s.name() == name)
        .unwrap_or(usize::MAX)
}

/// p50/p95 per (stage, backend) over the jobs' succeeded stages, and over their totals.
pub fn aggregate(jobs: &[ClothJob]) -> Vec<StageStats> {
    let mut by_stage: BTreeMap<(usize, String, String), Vec<f64>> = BTreeMap::new();
    let mut totals = Vec::new();
    for cj in jobs {
        let stages = cj
            .status
            .as_ref()
            .and_then(|s| s.stages.clone())
            .unwrap_or_default();
        let rows = breakdown(&stages);
        if rows.is_empty() {
            continue;
        }
        totals.push(rows.iter().map(|r| r.seconds).sum::<f64>());
        for r in rows {
            by_stage
                .entry((stage_order(&r.stage), r.stage, r.backend))
                .or_default()
                .push(r.seconds);
        }
    }
    let sort = |v: &mut Vec<f64>| v.sort_by(|a, b| a.total_cmp(b));
    let mut out: Vec<StageStats> = by_stage
        .into_iter()
        .map(|((_, stage, backend), mut v)| {
            sort(&mut v);
            StageStats {
                stage,
                backend,
                jobs: v.len(),
                p50: percentile(&v, 50.0),
                p95: percentile(&v, 95.0),
                share: 0.0,
            }
        })
        .collect();
    let sum: f64 = out.iter().map(|s| s.p50).sum();
    for s in &mut out {
        s.share = if sum > 0.0 { s.p50 / sum } else { 0.0 };
    }
    if !totals.is_empty() {
        sort(&mut totals);
        out.push(StageStats {
            stage: "total".into(),
            backend: String::new(),
            jobs: totals.len(),
            p50: percentile(&totals, 50.0),
            p95: percentile(&totals, 95.0),
            share: 1.0,
        });
    }
    out
}

/// The p50/p95 table.
pub fn aggregate_table(stats: &[StageStats], style: Style) -> String {
    let rows: Vec<Vec<String>> = stats
        .iter()
        .map(|s| {
            let mut row = vec![
                s.stage.clone(),
                s.backend.clone(),
                s.jobs.to_string(),
                render::seconds(s.p50),
                render::seconds(s.p95),
                format!("{:.1}%", 100.0 * s.share),
            ];
            if style.fancy {
                row.push(if s.stage == "total" {
                    String::new()
                } else {
                    render::bar(s.share, BAR_WIDTH)
                });
            }
            row
        })
        .collect();
    let mut cols = vec![
        left("STAGE"),
        left("BACKEND"),
        right("JOBS"),
        right("P50"),
        right("P95"),
        right("SHARE"),
    ];
    if style.fancy {
        cols.push(left(""));
    }
    table(&cols, &rows)
}

/// `report [NAME]`.
pub async fn report(
    conn: &Connection,
    a: &ReportArgs,
    format: Option<Format>,
    style: Style,
) -> Result<i32, CommandError> {
    match &a.name {
        Some(name) => {
            let api: Api<ClothJob> = Api::namespaced(conn.client.clone(), &conn.namespace);
            let cj = api.get(name).await.map_err(|e| {
                if is_not_found(&e) {
                    CommandError::NotFound {
                        name: name.clone(),
                        namespace: conn.namespace.clone(),
                    }
                } else {
                    CommandError::Api {
                        action: format!("reading ClothJob {name}"),
                        source: e,
                    }
                }
            })?;
            let s = cj.status.clone().unwrap_or_default();
            let rows = breakdown(s.stages.as_deref().unwrap_or_default());
            match format {
                Some(f) => {
                    let doc = serde_json::json!({
                        "name": name,
                        "namespace": conn.namespace,
                        "phase": s.phase.map(|p| p.as_str()),
                        "stages": rows,
                        "totalSeconds": rows.iter().map(|r| r.seconds).sum::<f64>(),
                    });
                    crate::print_value(f, &doc, &[crate::object_name(&cj)])?;
                }
                None => {
                    let phase = s.phase.map_or("Pending", |p| p.as_str());
                    let mut head = format!("{name}  {}", style.phase(phase));
                    if let Outcome::Failed(r, m) = outcome(&cj) {
                        head.push_str(&format!("  {r}: {m}"));
                    }
                    println!("{head}");
                    print!("{}", breakdown_table(&rows, style));
                }
            }
        }
        None => {
            let api: Api<ClothJob> = if a.all_namespaces {
                Api::all(conn.client.clone())
            } else {
                Api::namespaced(conn.client.clone(), &conn.namespace)
            };
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(CommandError::api("listing ClothJobs"))?;
            let done: Vec<ClothJob> = list
                .items
                .into_iter()
                .filter(|cj| outcome(cj) == Outcome::Succeeded)
                .collect();
            let stats = aggregate(&done);
            match format {
                Some(f) => {
                    let names: Vec<String> = done.iter().map(crate::object_name).collect();
                    let doc = serde_json::json!({"jobs": done.len(), "stages": stats});
                    crate::print_value(f, &doc, &names)?;
                }
                None => {
                    let scope = if a.all_namespaces {
                        "all namespaces".to_string()
                    } else {
                        format!("namespace {}", conn.namespace)
                    };
                    println!("{} succeeded ClothJobs in {scope}", done.len());
                    if !done.is_empty() {
                        print!("{}", aggregate_table(&stats, style));
                    }
                }
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn stage(name: &str, ms: i64) -> StageStatus {
        StageStatus {
            name: name.into(),
            state: StageState::Succeeded,
            backend: Some("builtin".into()),
            duration_ms: Some(ms),
            ..Default::default()
        }
    }

    #[test]
    fn a_breakdown_gives_each_stage_its_share() {
        let mut skipped = stage("segmentation", 0);
        skipped.state = StageState::Skipped;
        let rows = breakdown(&[
            stage("backgroundRemoval", 300),
            skipped,
            stage("encoding", 100),
        ]);
        assert_eq!(rows.len(), 2);
        assert!((rows[0].share - 0.75).abs() < 1e-9);
        assert!((rows[1].seconds - 0.1).abs() < 1e-9);
        let t = breakdown_table(&rows, Style::plain());
        assert!(
            t.contains("backgroundRemoval  builtin    0.300   75.0%"),
            "{t}"
        );
        assert!(t.lines().last().unwrap().starts_with("total"), "{t}");
        assert!(!t.contains('█'));
        let fancy = breakdown_table(&rows, Style { fancy: true });
        assert!(fancy.contains("███████████████░░░░░"), "{fancy}");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 10.0);
        assert_eq!(percentile(&v, 95.0), 19.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn aggregates_keep_pipeline_order_and_add_a_total() {
        let job = |a: i64, b: i64| {
            let mut cj = ClothJob::new("x", serde_json::from_value(serde_json::json!({"source": {"url": "http://a/b"}, "output": {"uri": "file:///o"}})).unwrap());
            cj.status = Some(clothjob_api::ClothJobStatus {
                stages: Some(vec![stage("encoding", b), stage("backgroundRemoval", a)]),
                ..Default::default()
            });
            cj
        };
        let stats = aggregate(&[job(100, 10), job(200, 20), job(300, 30)]);
        let names: Vec<&str> = stats.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["backgroundRemoval", "encoding", "total"]);
        assert_eq!(stats[0].p50, 0.2);
        assert_eq!(stats[0].p95, 0.3);
        assert_eq!(stats[2].p50, 0.22);
        assert_eq!(stats[0].jobs, 3);
    }
}
