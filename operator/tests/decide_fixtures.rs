//! Table tests of the pure decide step: each YAML file under tests/fixtures describes what
//! was observed (a ClothJob over `_base.yaml`, its Job and pods) and what must be decided.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test helpers

use std::path::Path;
use std::time::Duration;

use clothjob_api::ClothJob;
use clothjob_api::conditions;
use clothjob_operator::decide::{Settings, decide};
use clothjob_operator::observe::Observed;
use clothjob_operator::queue::{Admission, Limit};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event as CoreEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

/// Deep-merges `patch` into `base` (objects merge, everything else replaces).
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

fn load(path: &Path) -> (ClothJob, Observed, Settings, Timestamp, Value) {
    let dir = path.parent().unwrap();
    let mut cj: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("_base.yaml")).unwrap()).unwrap();
    let fx: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    if let Some(over) = fx.get("clothjob") {
        merge(&mut cj, over);
    }
    let cj: ClothJob = serde_json::from_value(cj).unwrap();
    let job = fx.get("job").map(|j| {
        let mut base = serde_json::json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "tshirt-3f2a9c1b", "namespace": "closet", "uid": "job-uid"},
        });
        merge(&mut base, j);
        serde_json::from_value::<Job>(base).unwrap()
    });
    let pods = fx
        .get("pods")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut base = serde_json::json!({
                        "apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": format!("tshirt-3f2a9c1b-{i}"), "namespace": "closet"},
                    });
                    merge(&mut base, p);
                    serde_json::from_value::<Pod>(base).unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    let failed_create = fx
        .get("failedCreate")
        .and_then(Value::as_array)
        .map(|es| {
            es.iter()
                .map(|e| {
                    let mut base = serde_json::json!({
                        "metadata": {"name": "tshirt-3f2a9c1b.1", "namespace": "closet"},
                        "involvedObject": {"kind": "Job", "name": "tshirt-3f2a9c1b", "uid": "job-uid"},
                        "reason": "FailedCreate",
                    });
                    merge(&mut base, e);
                    serde_json::from_value::<CoreEvent>(base).unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    let settings = Settings {
        pending_timeout: Duration::from_secs(
            fx.get("pendingTimeoutSeconds")
                .and_then(Value::as_u64)
                .unwrap_or(600),
        ),
        default_ttl: fx
            .get("defaultTtlSeconds")
            .and_then(Value::as_i64)
            .map(|v| v as i32),
    };
    // `queued: {position: N, limit: Cluster|Namespace}`: what the concurrency limits said.
    let admission = match fx.get("queued") {
        None => Admission::Start,
        Some(q) => Admission::Queued {
            position: q.get("position").and_then(Value::as_u64).unwrap() as usize,
            limit: match q.get("limit").and_then(Value::as_str) {
                Some("Namespace") => Limit::Namespace,
                _ => Limit::Cluster,
            },
        },
    };
    // `reuse: {key, decision, job, outputs}`: the reuse decision the reconciler computed.
    let reuse = fx
        .get("reuse")
        .map(|r| serde_json::from_value::<clothjob_api::ReuseStatus>(r.clone()).unwrap());
    let now: Timestamp = fx
        .get("now")
        .and_then(Value::as_str)
        .unwrap_or("2026-11-25T10:00:10Z")
        .parse()
        .unwrap();
    let expect = fx.get("expect").cloned().unwrap_or(Value::Null);
    (
        cj,
        Observed {
            job,
            pods,
            failed_create,
            admission,
            reuse,
        },
        settings,
        now,
        expect,
    )
}

fn check(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let (cj, observed, settings, now, expect) = load(path);
    let d = decide(&cj, &observed, &settings, "tshirt-3f2a9c1b", now);
    let ctx = |what: &str| format!("{name}: {what}; decision = {d:#?}");
    let status = d.status.clone().or(cj.status.clone()).unwrap_or_default();

    if let Some(v) = expect.get("createJob").and_then(Value::as_bool) {
        assert_eq!(d.create_job, v, "{}", ctx("createJob"));
    }
    if let Some(v) = expect.get("deleteJob").and_then(Value::as_bool) {
        assert_eq!(d.delete_job, v, "{}", ctx("deleteJob"));
    }
    if let Some(v) = expect.get("jobUid").and_then(Value::as_str) {
        assert_eq!(status.job_uid.as_deref(), Some(v), "{}", ctx("jobUid"));
    }
    if let Some(v) = expect.get("startTime").and_then(Value::as_str) {
        assert_eq!(
            status.start_time.as_ref().map(|t| t.0.to_string()),
            Some(v.to_string()),
            "{}",
            ctx("startTime")
        );
    }
    if let Some(map) = expect.get("conditionReasons").and_then(Value::as_object) {
        let conds = status.conditions.clone().unwrap_or_default();
        for (t, want) in map {
            let got = conditions::find(&conds, t).map(|c| c.reason.clone());
            assert_eq!(
                got.as_deref(),
                want.as_str(),
                "{}",
                ctx(&format!("reason of {t}"))
            );
        }
    }
    // `conditionSince: {Type: time}`: the condition's lastTransitionTime.
    if let Some(map) = expect.get("conditionSince").and_then(Value::as_object) {
        let conds = status.conditions.clone().unwrap_or_default();
        for (t, want) in map {
            let got = conditions::find(&conds, t).map(|c| c.last_transition_time.0.to_string());
            assert_eq!(
                got.as_deref(),
                want.as_str(),
                "{}",
                ctx(&format!("lastTransitionTime of {t}"))
            );
        }
    }
    if let Some(v) = expect.get("requeueAtMostSeconds").and_then(Value::as_u64) {
        assert!(
            d.requeue_after.is_some_and(|r| r <= Duration::from_secs(v)),
            "{}",
            ctx("requeueAtMostSeconds")
        );
    }
    if let Some(v) = expect.get("queuePosition") {
        assert_eq!(
            status.queue_position.map(i64::from),
            v.as_i64(),
            "{}",
            ctx("queuePosition")
        );
    }
    if let Some(v) = expect.get("requeueAtLeastSeconds").and_then(Value::as_u64) {
        assert!(
            d.requeue_after.is_some_and(|r| r >= Duration::from_secs(v)),
            "{}",
            ctx("requeueAtLeastSeconds")
        );
    }
    if let Some(v) = expect.get("reuseDecision").and_then(Value::as_str) {
        let got = status.reuse.as_ref().map(|r| r.decision.as_str());
        assert_eq!(got, Some(v), "{}", ctx("reuseDecision"));
    }
    if let Some(v) = expect.get("delete").and_then(Value::as_bool) {
        assert_eq!(d.delete, v, "{}", ctx("delete"));
    }
    if expect.get("noStatus").and_then(Value::as_bool) == Some(true) {
        assert!(
            d.status.is_none() && d.events.is_empty(),
            "{}",
            ctx("noStatus")
        );
    }
    if let Some(v) = expect.get("phase").and_then(Value::as_str) {
        assert_eq!(
            status.phase.map(|p| p.as_str()),
            Some(v),
            "{}",
            ctx("phase")
        );
    }
    if let Some(v) = expect.get("reason").and_then(Value::as_str) {
        assert_eq!(status.reason.as_deref(), Some(v), "{}", ctx("reason"));
    }
    if let Some(v) = expect.get("attempts").and_then(Value::as_i64) {
        assert_eq!(
            status.attempts.map(i64::from),
            Some(v),
            "{}",
            ctx("attempts")
        );
    }
    if let Some(v) = expect.get("messageContains").and_then(Value::as_str) {
        let m = status.message.clone().unwrap_or_default();
        assert!(
            m.contains(v),
            "{}",
            ctx(&format!("message {m:?} lacks {v:?}"))
        );
    }
    if let Some(map) = expect.get("conditions").and_then(Value::as_object) {
        let conds = status.conditions.clone().unwrap_or_default();
        for (t, want) in map {
            let got = conditions::find(&conds, t).map(|c| c.status.clone());
            assert_eq!(
                got.as_deref(),
                want.as_str(),
                "{}",
                ctx(&format!("condition {t}"))
            );
        }
    }
    if let Some(list) = expect.get("events").and_then(Value::as_array) {
        let got: Vec<&str> = d.events.iter().map(|e| e.reason.as_str()).collect();
        let want: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        assert_eq!(got, want, "{}", ctx("events"));
    }
    if let Some(v) = expect.get("eventContains").and_then(Value::as_str) {
        assert!(
            d.events.iter().any(|e| e.note.contains(v)),
            "{}",
            ctx("eventContains")
        );
    }
    if let Some(list) = expect.get("timings").and_then(Value::as_array) {
        let got: Vec<&str> = d.timings.iter().map(|t| t.stage.as_str()).collect();
        let want: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
        assert_eq!(got, want, "{}", ctx("timings"));
    }
    if let Some(v) = expect.get("finished").and_then(Value::as_str) {
        assert_eq!(
            d.finished.as_ref().map(|f| f.0.as_str()),
            Some(v),
            "{}",
            ctx("finished")
        );
    }
    if let Some(v) = expect.get("requeue").and_then(Value::as_bool) {
        assert_eq!(d.requeue_after.is_some(), v, "{}", ctx("requeue"));
    }
}

#[test]
fn every_fixture_decides_as_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        if file.ends_with(".yaml") && !file.starts_with('_') {
            check(&path);
            n += 1;
        }
    }
    assert!(n >= 10, "only {n} fixtures found");
}

#[test]
fn deciding_twice_on_the_same_observation_is_idempotent() {
    // Apply the first decision's status, decide again: no new Job, no status change, no Events.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for f in [
        "new.yaml",
        "retrying.yaml",
        "succeeded.yaml",
        "failed_bad_input.yaml",
        "waiting_image_pull.yaml",
        "failed_create.yaml",
        "job_deleted.yaml",
        "pending_timeout.yaml",
        "cancelled_mid_run.yaml",
        "cancelled_before_the_job.yaml",
        "queued.yaml",
        "queued_moves_up.yaml",
        "suspended_by_kueue.yaml",
        "resumed_by_kueue.yaml",
        "resumed_by_kueue_after_a_long_wait.yaml",
        "queued_slot_free_after_a_long_wait.yaml",
        "default_ttl_expired.yaml",
        "running_stage_finished_a_while_ago.yaml",
        "succeeded_stages_just_finished.yaml",
    ] {
        let (mut cj, observed, settings, now, _) = load(&dir.join(f));
        let first = decide(&cj, &observed, &settings, "tshirt-3f2a9c1b", now);
        let mut status = cj.status.clone().unwrap_or_default();
        if let Some(s) = first.status {
            status.observed_generation = s.observed_generation;
            status.conditions = s.conditions;
            status.phase = s.phase;
            status.attempts = s.attempts;
            status.job_name = s.job_name;
            status.job_uid = s.job_uid;
            status.announced_stages = s.announced_stages;
            status.message = s.message;
            status.reason = s.reason;
            status.start_time = s.start_time;
            status.completion_time = s.completion_time;
            status.queue_position = s.queue_position;
        }
        cj.status = Some(status);
        let second = decide(&cj, &observed, &settings, "tshirt-3f2a9c1b", now);
        assert!(
            second.status.is_none(),
            "{f}: status changed again: {:#?}",
            second.status
        );
        assert!(
            second.events.is_empty(),
            "{f}: events again: {:?}",
            second.events
        );
        assert_eq!(
            second.create_job,
            first.create_job && observed.job.is_none(),
            "{f}"
        );
    }
}
