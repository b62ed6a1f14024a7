//! Decide: from a ClothJob and what was observed, the actions to take and the operator's
//! status fields. Pure and level-triggered: the same inputs always give the same decision,
//! whatever caused the reconcile.

use std::collections::BTreeSet;
use std::time::Duration;

use clothjob_api::conditions::{self, COMPLETE, FAILED, RUNNING};
use clothjob_api::{ClothJob, ClothJobStatus, Phase, StageState, contract};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::observe::Observed;

/// An Event to publish about the ClothJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning instead of Normal.
    pub warning: bool,
    /// Short PascalCase reason (Started, StageCompleted, Retrying, Succeeded, Failed, ...).
    pub reason: String,
    /// Human readable note.
    pub note: String,
}

/// A stage timing to record in the stage-latency histogram.
#[derive(Clone, Debug, PartialEq)]
pub struct StageTiming {
    /// Stage name.
    pub stage: String,
    /// Backend that ran it.
    pub backend: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// What to do for one ClothJob.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// Create the runner Job (it does not exist and the ClothJob has not finished).
    pub create_job: bool,
    /// The operator's status fields, when they differ from what is stored.
    pub status: Option<ClothJobStatus>,
    /// Events to publish.
    pub events: Vec<EventSpec>,
    /// Stage completions announced by `events` (to remember, so each is announced once).
    pub announced: Vec<String>,
    /// Stage timings to record (once, when the job completes).
    pub timings: Vec<StageTiming>,
    /// Terminal result newly reached: ("Succeeded"|"Failed", reason, seconds since creation).
    pub finished: Option<(Phase, String, f64)>,
    /// Delete the ClothJob (its TTL after finishing has passed).
    pub delete: bool,
    /// Reconcile again after this long even without a change.
    pub requeue_after: Option<Duration>,
}

/// The operator-owned projection of a status (the fields it writes with server-side apply).
pub fn operator_fields(s: &ClothJobStatus) -> ClothJobStatus {
    ClothJobStatus {
        observed_generation: s.observed_generation,
        conditions: s.conditions.clone(),
        phase: s.phase,
        attempts: s.attempts,
        job_name: s.job_name.clone(),
        message: s.message.clone(),
        reason: s.reason.clone(),
        start_time: s.start_time.clone(),
        completion_time: s.completion_time.clone(),
        ..Default::default()
    }
}

fn job_condition<'a>(
    job: &'a Job,
    type_: &str,
) -> Option<&'a k8s_openapi::api::batch::v1::JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// The last failure of a runner pod: (exit code, termination message).
fn last_pod_failure(pods: &[Pod]) -> Option<(i32, String)> {
    pods.iter()
        .filter_map(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let cs = statuses
                .iter()
                .find(|c| c.name == contract::RUNNER_CONTAINER)?;
            let t = cs.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                (
                    t.finished_at.clone(),
                    t.exit_code,
                    t.message.clone().unwrap_or_default(),
                )
            })
        })
        .max_by_key(|(finished, _, _)| finished.as_ref().map(|t| t.0))
        .map(|(_, code, msg)| (code, msg.trim().to_string()))
}

fn any_pod_running(pods: &[Pod]) -> bool {
    pods.iter().any(|p| {
        p.metadata.deletion_timestamp.is_none()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
}

fn failure_text(cur: &ClothJobStatus, pods: &[Pod]) -> Option<String> {
    last_pod_failure(pods)
        .map(|(code, msg)| {
            if msg.is_empty() {
                format!("runner exited with code {code}")
            } else {
                msg
            }
        })
        .or_else(|| {
            cur.runner_failure
                .as_ref()
                .map(|f| format!("{}: {}", f.reason, f.message))
        })
}

/// Decides what to do for `cj` given what was `observed` at `now`. `announced` holds the
/// stage completions already announced as Events.
pub fn decide(
    cj: &ClothJob,
    observed: &Observed,
    announced: &BTreeSet<String>,
    job_name: &str,
    now: Timestamp,
) -> Decision {
    let mut d = Decision::default();
    if cj.metadata.deletion_timestamp.is_some() {
        return d;
    }
    let cur = cj.status.clone().unwrap_or_default();
    let old = operator_fields(&cur);
    let mut new = old.clone();
    let now_t = Time(now);
    let generation = cj.metadata.generation;
    new.observed_generation = generation;
    new.job_name = Some(job_name.to_string());
    let mut conds = new.conditions.clone().unwrap_or_default();
    let was_complete = conditions::is_true(&conds, COMPLETE);
    let was_failed = conditions::is_true(&conds, FAILED);
    let uid = cj.metadata.uid.clone().unwrap_or_default();

    // Stage completions reported by the runner become Events, once per attempt and stage.
    let attempt = cur.attempts.unwrap_or(0);
    for s in cur
        .stages
        .iter()
        .flatten()
        .filter(|s| s.state == StageState::Succeeded)
    {
        let key = format!("{uid}/{attempt}/{}", s.name);
        if !announced.contains(&key) {
            let ms = s.duration_ms.unwrap_or(0);
            d.events.push(EventSpec {
                warning: false,
                reason: "StageCompleted".into(),
                note: format!(
                    "{} finished in {:.2} s ({})",
                    s.name,
                    ms as f64 / 1000.0,
                    s.backend.as_deref().unwrap_or("builtin")
                ),
            });
            d.announced.push(key);
        }
    }

    if was_complete || was_failed {
        // Finished: nothing more to run; only the TTL is left to honour.
        if let (Some(ttl), Some(done)) = (
            cj.spec.ttl_seconds_after_finished,
            cur.completion_time.as_ref(),
        ) {
            let left_ms = done.0.as_millisecond() + i64::from(ttl) * 1000 - now.as_millisecond();
            if left_ms <= 0 {
                d.delete = true;
            } else {
                d.requeue_after = Some(Duration::from_millis(left_ms.unsigned_abs() + 200));
            }
        }
        if new != old {
            d.status = Some(new);
        }
        return d;
    }

    let Some(job) = observed.job.as_ref() else {
        d.create_job = true;
        new.phase = Some(Phase::Pending);
        new.message = Some(format!("creating Job {job_name}"));
        conditions::set(
            &mut conds,
            RUNNING,
            false,
            "Pending",
            "waiting for a runner pod",
            generation,
            &now_t,
        );
        new.conditions = Some(conds);
        if new != old {
            d.status = Some(new);
        }
        return d;
    };

    let js = job.status.clone().unwrap_or_default();
    let (active, failed, succeeded) = (
        js.active.unwrap_or(0),
        js.failed.unwrap_or(0),
        js.succeeded.unwrap_or(0),
    );
    let attempts = old.attempts.unwrap_or(0).max(active + failed + succeeded);
    new.attempts = Some(attempts);
    if new.start_time.is_none() {
        new.start_time = js.start_time.clone();
    }
    let max_attempts = cj.spec.retries.max(0) + 1;

    if let Some(c) = job_condition(job, "Complete") {
        let done = js
            .completion_time
            .clone()
            .or_else(|| c.last_transition_time.clone())
            .unwrap_or(now_t.clone());
        let n = cur.outputs.as_ref().map_or(0, Vec::len);
        let msg = format!("{n} outputs written after {attempts} attempt(s)");
        set_outcome(&mut conds, true, "Succeeded", &msg, generation, &now_t);
        new.phase = Some(Phase::Succeeded);
        new.reason = Some("Succeeded".into());
        new.message = Some(msg.clone());
        new.completion_time = Some(done.clone());
        d.events.push(EventSpec {
            warning: false,
            reason: "Succeeded".into(),
            note: msg,
        });
        d.timings = cur
            .stages
            .iter()
            .flatten()
            .filter(|s| s.state == StageState::Succeeded)
            .map(|s| StageTiming {
                stage: s.name.clone(),
                backend: s.backend.clone().unwrap_or_else(|| "builtin".into()),
                seconds: s.duration_ms.unwrap_or(0) as f64 / 1000.0,
            })
            .collect();
        d.finished = Some((Phase::Succeeded, "Succeeded".into(), elapsed(cj, &done)));
        d.requeue_after = ttl_requeue(cj);
    } else if let Some(c) = job_condition(job, "Failed") {
        let done = c.last_transition_time.clone().unwrap_or(now_t.clone());
        let reason = match c.reason.as_deref() {
            Some("PodFailurePolicy") => "BadInput",
            Some("BackoffLimitExceeded") => "RetriesExhausted",
            Some("DeadlineExceeded") => "DeadlineExceeded",
            Some(other) if !other.is_empty() => other,
            _ => "JobFailed",
        }
        .to_string();
        let detail = failure_text(&cur, &observed.pods);
        let msg = match (reason.as_str(), detail) {
            ("DeadlineExceeded", _) => format!(
                "deadline of {} s exceeded after {attempts} attempt(s)",
                cj.spec.active_deadline_seconds.unwrap_or(0)
            ),
            ("BadInput", Some(detail)) => format!("bad input: {detail}"),
            (_, Some(detail)) => format!("failed after {attempts} attempt(s): {detail}"),
            (_, None) => c
                .message
                .clone()
                .unwrap_or_else(|| "the runner Job failed".into()),
        };
        set_outcome(&mut conds, false, &reason, &msg, generation, &now_t);
        new.phase = Some(Phase::Failed);
        new.reason = Some(reason.clone());
        new.message = Some(msg.clone());
        new.completion_time = Some(done.clone());
        d.events.push(EventSpec {
            warning: true,
            reason: "Failed".into(),
            note: format!("{reason}: {msg}"),
        });
        d.finished = Some((Phase::Failed, reason, elapsed(cj, &done)));
        d.requeue_after = ttl_requeue(cj);
    } else {
        let previous_failure = if failed > 0 {
            failure_text(&cur, &observed.pods)
        } else {
            None
        };
        let running = any_pod_running(&observed.pods) || js.ready.unwrap_or(0) > 0;
        let (phase, reason, msg) = match (running, failed, &previous_failure) {
            (true, 0, _) => (
                Phase::Running,
                "Started",
                format!("attempt {attempts} of {max_attempts} running"),
            ),
            (true, _, _) => (
                Phase::Running,
                "Retrying",
                format!("attempt {attempts} of {max_attempts} running"),
            ),
            (false, 0, _) => (
                Phase::Pending,
                "Pending",
                "waiting for the runner pod to start".to_string(),
            ),
            (false, _, _) => (
                Phase::Running,
                "Retrying",
                format!("waiting to retry ({failed} of {max_attempts} attempts failed)"),
            ),
        };
        let msg = match &previous_failure {
            Some(f) => format!("{msg}; last failure: {f}"),
            None => msg,
        };
        conditions::set(
            &mut conds,
            RUNNING,
            phase == Phase::Running,
            reason,
            &msg,
            generation,
            &now_t,
        );
        new.phase = Some(phase);
        new.message = Some(msg);
        let old_attempts = old.attempts.unwrap_or(0);
        if attempts > old_attempts {
            if old_attempts == 0 && failed == 0 {
                d.events.push(EventSpec {
                    warning: false,
                    reason: "Started".into(),
                    note: format!("Job {job_name} started attempt 1 of {max_attempts}"),
                });
            } else {
                d.events.push(EventSpec {
                    warning: true,
                    reason: "Retrying".into(),
                    note: format!(
                        "attempt {attempts} of {max_attempts} after: {}",
                        previous_failure.as_deref().unwrap_or("a failed attempt")
                    ),
                });
            }
        }
    }
    new.conditions = Some(conds);
    if new != old {
        d.status = Some(new);
    }
    d
}

/// Sets the terminal conditions: Running false, and Complete or Failed true (the other false).
fn set_outcome(
    conds: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    succeeded: bool,
    reason: &str,
    msg: &str,
    generation: Option<i64>,
    now: &Time,
) {
    conditions::set(conds, RUNNING, false, reason, msg, generation, now);
    conditions::set(conds, COMPLETE, succeeded, reason, msg, generation, now);
    conditions::set(conds, FAILED, !succeeded, reason, msg, generation, now);
}

/// Reconcile again once the TTL after finishing has passed (just finished now).
fn ttl_requeue(cj: &ClothJob) -> Option<Duration> {
    let ttl = u64::try_from(cj.spec.ttl_seconds_after_finished?).unwrap_or(0);
    Some(Duration::from_secs(ttl) + Duration::from_millis(200))
}

fn elapsed(cj: &ClothJob, done: &Time) -> f64 {
    cj.metadata.creation_timestamp.as_ref().map_or(0.0, |c| {
        (done.0.as_millisecond() - c.0.as_millisecond()).max(0) as f64 / 1000.0
    })
}
