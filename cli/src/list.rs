//! `list`: the namespace's (or every namespace's) ClothJobs with a small progress bar each.

use clothjob_api::ClothJob;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::args::Format;
use crate::client::Connection;
use crate::error::{CommandError, EXIT_OK};
use crate::render::{self, Style, left, right, table};

/// Width of the per-job bars.
const BAR_WIDTH: usize = 12;

/// The table of `list` (NAMESPACE first with `-A`).
pub fn list_table(jobs: &[ClothJob], all_namespaces: bool, style: Style, now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|cj| {
            let s = cj.status.clone().unwrap_or_default();
            let pct = s.progress.unwrap_or(0).clamp(0, 100);
            let progress = if style.fancy {
                format!(
                    "{} {pct:>3}%",
                    render::bar(f64::from(pct) / 100.0, BAR_WIDTH)
                )
            } else {
                format!("{pct}%")
            };
            let age = cj.metadata.creation_timestamp.as_ref().map_or_else(
                || "-".to_string(),
                |t| render::age(now.as_second() - t.0.as_second()),
            );
            let mut row = Vec::new();
            if all_namespaces {
                row.push(cj.namespace().unwrap_or_default());
            }
            row.extend([
                cj.name_any(),
                style.phase(s.phase.map_or("Pending", |p| p.as_str())),
                progress,
                s.stage.unwrap_or_else(|| "-".into()),
                s.attempts.unwrap_or(0).to_string(),
                age,
                s.reason.unwrap_or_default(),
            ]);
            row
        })
        .collect();
    let mut cols = Vec::new();
    if all_namespaces {
        cols.push(left("NAMESPACE"));
    }
    cols.extend([
        left("NAME"),
        left("PHASE"),
        right("PROGRESS"),
        left("STAGE"),
        right("ATTEMPTS"),
        right("AGE"),
        left("REASON"),
    ]);
    table(&cols, &rows)
}

/// `list [-A]`.
pub async fn list(
    conn: &Connection,
    all_namespaces: bool,
    format: Option<Format>,
    style: Style,
) -> Result<i32, CommandError> {
    let api: Api<ClothJob> = if all_namespaces {
        Api::all(conn.client.clone())
    } else {
        Api::namespaced(conn.client.clone(), &conn.namespace)
    };
    let mut jobs = api
        .list(&ListParams::default())
        .await
        .map_err(CommandError::api("listing ClothJobs"))?
        .items;
    jobs.sort_by_key(|cj| {
        (
            cj.namespace().unwrap_or_default(),
            cj.metadata.creation_timestamp.as_ref().map(|t| t.0),
            cj.name_any(),
        )
    });
    match format {
        Some(Format::Name) => {
            for cj in &jobs {
                println!("{}", crate::object_name(cj));
            }
        }
        Some(f) => {
            let doc = serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": jobs,
            });
            crate::print_value(f, &doc, &[])?;
        }
        None if jobs.is_empty() => {
            let scope = if all_namespaces {
                "any namespace".to_string()
            } else {
                format!("namespace {}", conn.namespace)
            };
            eprintln!("No ClothJobs in {scope}.");
        }
        None => print!(
            "{}",
            list_table(&jobs, all_namespaces, style, Timestamp::now())
        ),
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_list_shows_bars_only_on_a_terminal() {
        let mut cj: ClothJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "closetconnect.io/v1alpha1", "kind": "ClothJob",
            "metadata": {"name": "tee", "namespace": "closet", "creationTimestamp": "2026-11-25T10:00:00Z"},
            "spec": {"source": {"url": "http://a/b.jpg"}, "output": {"uri": "file:///o"}},
        }))
        .unwrap();
        cj.status = Some(clothjob_api::ClothJobStatus {
            progress: Some(50),
            stage: Some("expansion".into()),
            phase: Some(clothjob_api::Phase::Running),
            attempts: Some(1),
            ..Default::default()
        });
        let now: Timestamp = "2026-11-25T10:05:00Z".parse().unwrap();
        let plain = list_table(std::slice::from_ref(&cj), true, Style::plain(), now);
        assert_eq!(
            plain.lines().nth(1).unwrap(),
            "closet     tee   Running       50%  expansion         1   5m"
        );
        let fancy = list_table(&[cj], false, Style { fancy: true }, now);
        assert!(fancy.contains("██████░░░░░░  50%"), "{fancy}");
    }
}
