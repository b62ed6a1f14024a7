//! Decide: from a ClothJob and what was observed, the actions to take and the operator's
//! status fields. Pure and level-triggered: the same inputs always give the same decision,
//! whatever caused the reconcile. Everything that must survive an operator restart (which
//! Job is ours, which Events were sent) is read from and written to the status.

use std::time::Duration;

use clothjob_api::conditions::{self, COMPLETE, FAILED, RUNNING, WAITING};
use clothjob_api::{ClothJob, ClothJobStatus, Phase, ReuseDecision, StageState, contract};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::observe::Observed;
use crate::pods::{self, Waiting};
use crate::queue::{self, Admission};

/// An Event to publish about the ClothJob.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventSpec {
    /// Warning instead of Normal.
    pub warning: bool,
    /// Short PascalCase reason (Started, StageCompleted, Retrying, Succeeded, Failed, or a
    /// waiting reason such as ImagePullBackOff).
    pub reason: String,
    /// Human readable note.
    pub note: String,
    /// The Event's action when not `Reconcile` (the stage of a StageCompleted Event, so the
    /// recorder keeps one Event per stage instead of folding them into one series).
    pub action: Option<String>,
}

/// A finished stage run to record in the stage-latency histogram (once: it is newly added
/// to `status.announcedStages` by the same decision).
#[derive(Clone, Debug, PartialEq)]
pub struct StageTiming {
    /// Stage name.
    pub stage: String,
    /// Backend that ran it.
    pub backend: String,
    /// Seconds it took.
    pub seconds: f64,
    /// `succeeded` or `failed`.
    pub outcome: String,
    /// Its key in `status.announcedStages` (`<stage>@<startedAt ms>`).
    pub key: String,
}

/// The operator-wide settings decisions depend on.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a runner pod may wait to start (image pulls, missing Secrets, scheduling)
    /// before the ClothJob fails with the waiting reason.
    pub pending_timeout: Duration,
    /// Seconds a finished ClothJob is kept when it sets no `spec.ttlSecondsAfterFinished`
    /// (`None`: forever).
    pub default_ttl: Option<i32>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            pending_timeout: Duration::from_secs(600),
            default_ttl: None,
        }
    }
}

/// How long the normal steps of a first start (the pod created, its container creating) go
/// unwritten: a pod that starts within it costs no status write between Pending and Running;
/// one still starting after it shows its waiting reason. Problems (image pulls, scheduling,
/// missing Secrets) are written at once. A minute (ADR 14): on a busy node a normal start
/// often takes longer than 15 s (0.96 writes per job in the load benchmark), and the step it
/// is in (`ContainerCreating` while the image is pulled) is nothing a user acts on.
pub const START_QUIET: Duration = Duration::from_secs(60);

/// How often a queued ClothJob looks at the queue again without being woken (a safety net:
/// a finishing or deleted job wakes the ones that may start; this also refreshes
/// `queuePosition`).
pub const QUEUE_RECHECK: Duration = Duration::from_secs(30);

/// What to do for one ClothJob.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// Create the runner Job (it does not exist and the ClothJob has not finished).
    pub create_job: bool,
    /// Delete the runner Job (the ClothJob failed while its pod could not start).
    pub delete_job: bool,
    /// The operator's status fields, when they differ from what is stored.
    pub status: Option<ClothJobStatus>,
    /// Events to publish (after the status is written: each is derived from a status
    /// transition, so it is sent at most once, also across operator restarts).
    pub events: Vec<EventSpec>,
    /// Stage runs to record, each once: succeeded and failed stages of every attempt, as
    /// they are first added to `status.announcedStages`.
    pub timings: Vec<StageTiming>,
    /// Terminal result newly reached: (phase, reason, seconds since creation).
    pub finished: Option<(Phase, String, f64)>,
    /// Delete the ClothJob (its TTL after finishing has passed).
    pub delete: bool,
    /// Reconcile again after this long even without a change.
    pub requeue_after: Option<Duration>,
    /// When the next stage completion is due to be announced (see [`ANNOUNCE_DELAY`]);
    /// folded into `requeue_after` by [`decide`].
    pub announce_after: Option<Duration>,
}

/// The operator-owned projection of a status (the fields it writes with server-side apply).
pub fn operator_fields(s: &ClothJobStatus) -> ClothJobStatus {
    with_operator_fields(&ClothJobStatus::default(), s)
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

/// Whether the Job reached a terminal condition.
fn job_finished(job: &Job) -> bool {
    job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some()
}

fn failure_text(cur: &ClothJobStatus, observed: &Observed) -> Option<String> {
    pods::last_failure(&observed.pods)
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

/// The status being built, with the helpers every branch uses.
/// What a status write of the operator changes, for `clothjob_status_writes_total{change}`
/// (a bounded set, first match wins): `phase`, `reuse` (the reuse decision), `queuePosition`,
/// `stages` (`announcedStages`), `condition` (conditions, reason or message of the same
/// phase), `attempt` (attempts, start time, the Job's uid) or `other`.
pub fn write_change(old: &ClothJobStatus, new: &ClothJobStatus) -> &'static str {
    if old.phase != new.phase {
        "phase"
    } else if old.reuse != new.reuse {
        "reuse"
    } else if old.queue_position != new.queue_position {
        "queuePosition"
    } else if old.announced_stages != new.announced_stages {
        "stages"
    } else if old.conditions != new.conditions
        || old.reason != new.reason
        || old.message != new.message
    {
        "condition"
    } else if old.attempts != new.attempts
        || old.start_time != new.start_time
        || old.job_uid != new.job_uid
    {
        "attempt"
    } else {
        "other"
    }
}

/// Every value [`write_change`] returns.
pub const WRITE_CHANGES: [&str; 7] = [
    "phase",
    "reuse",
    "queuePosition",
    "stages",
    "condition",
    "attempt",
    "other",
];

/// `s` with the operator-owned fields of `ours` (the runner's fields of `s` kept): the status
/// as it is after the operator applied `ours` (server-side apply: the fields it owns are
/// exactly those it sent).
pub fn with_operator_fields(s: &ClothJobStatus, ours: &ClothJobStatus) -> ClothJobStatus {
    // Every field named (no `..`): a new status field does not compile until it is sorted
    // into the operator's (copied from `ours`) or the runner's (kept from `s`), beside
    // `clothjob_api::status::OPERATOR_FIELDS` (a test compares the two).
    let ClothJobStatus {
        observed_generation,
        conditions,
        phase,
        queue_position,
        attempts,
        job_name,
        job_uid,
        announced_stages,
        message,
        reason,
        start_time,
        completion_time,
        reuse,
        progress: _,
        stage: _,
        stages: _,
        outputs: _,
        regions: _,
        runner_failure: _,
        source_sha256: _,
        reuse_key: _,
        reused_from: _,
    } = ours.clone();
    ClothJobStatus {
        observed_generation,
        conditions,
        phase,
        queue_position,
        attempts,
        job_name,
        job_uid,
        announced_stages,
        message,
        reason,
        start_time,
        completion_time,
        reuse,
        ..s.clone()
    }
}

struct Draft {
    new: ClothJobStatus,
    conds: Vec<Condition>,
    generation: Option<i64>,
    now: Time,
}

impl Draft {
    fn set(&mut self, type_: &str, status: bool, reason: &str, msg: &str) {
        conditions::set(
            &mut self.conds,
            type_,
            status,
            reason,
            msg,
            self.generation,
            &self.now,
        );
    }

    /// Terminal: Running and Waiting false, Complete or Failed true (the other false).
    fn finish(&mut self, phase: Phase, reason: &str, msg: &str, done: Time) {
        let succeeded = phase == Phase::Succeeded;
        self.set(RUNNING, false, reason, msg);
        if conditions::find(&self.conds, WAITING).is_some() {
            self.set(WAITING, false, reason, msg);
        }
        self.set(COMPLETE, succeeded, reason, msg);
        self.set(FAILED, !succeeded, reason, msg);
        self.new.phase = Some(phase);
        self.new.reason = Some(reason.to_string());
        self.new.message = Some(msg.to_string());
        self.new.completion_time = Some(done);
        self.new.queue_position = None;
    }

    /// Leaving phase Queued (a slot freed up, or Kueue resumed the Job): the `Waiting`
    /// condition starts afresh, so the pending time-out counts from now and not from when the
    /// ClothJob was queued (a job that waited in a queue longer than the time-out would
    /// otherwise fail the moment its pod is created).
    fn leave_queue(&mut self, old: &ClothJobStatus) {
        if old.phase == Some(Phase::Queued) && conditions::find(&self.conds, WAITING).is_some() {
            // Overwritten by the caller's own Waiting (true or false) with this transition.
            self.set(WAITING, false, "Admitted", "left the queue");
        }
    }

    fn into_status(mut self, old: &ClothJobStatus) -> Option<ClothJobStatus> {
        self.new.conditions = Some(self.conds);
        (self.new != *old).then_some(self.new)
    }
}

/// Decides what to do for `cj` given what was `observed` at `now`.
pub fn decide(
    cj: &ClothJob,
    observed: &Observed,
    settings: &Settings,
    job_name: &str,
    now: Timestamp,
) -> Decision {
    let mut d = Decision::default();
    if cj.metadata.deletion_timestamp.is_some() {
        return d;
    }
    decide_inner(cj, observed, settings, job_name, now, &mut d);
    if d.finished.is_some() {
        // Just finished: reconcile again once the TTL has passed.
        d.requeue_after = ttl_requeue(cj, settings);
    } else if let Some(a) = d.announce_after {
        d.requeue_after = Some(d.requeue_after.map_or(a, |r| r.min(a)));
    }
    d
}

fn decide_inner(
    cj: &ClothJob,
    observed: &Observed,
    settings: &Settings,
    job_name: &str,
    now: Timestamp,
    d: &mut Decision,
) {
    let cur = cj.status.clone().unwrap_or_default();
    let old = operator_fields(&cur);
    let mut draft = Draft {
        new: old.clone(),
        conds: old.conditions.clone().unwrap_or_default(),
        generation: cj.metadata.generation,
        now: Time(now),
    };
    draft.new.observed_generation = cj.metadata.generation;
    draft.new.job_name = Some(job_name.to_string());

    if conditions::is_true(&draft.conds, COMPLETE) || conditions::is_true(&draft.conds, FAILED) {
        // Whatever the runner reported after the outcome was written is announced now.
        announce_stages(&cur, true, &draft.now.clone(), &mut draft, d);
        finished(cj, observed, &cur, settings, now, d);
        d.status = draft.into_status(&old);
        return;
    }

    // The attempt is over once the runner reported its failure: a retry's first write would
    // replace the failed attempt's stages, so they are announced at once.
    let run_over = observed.job.as_ref().is_none_or(job_finished)
        || cancel_requested(cj, observed)
        || cur.stage.as_deref() == Some("failed")
        || cur
            .stages
            .iter()
            .flatten()
            .any(|s| s.state == StageState::Failed);
    announce_stages(&cur, run_over, &draft.now.clone(), &mut draft, d);

    if cancel_requested(cj, observed) {
        cancel(cj, observed, &mut draft, d);
        d.status = draft.into_status(&old);
        return;
    }

    let job = match (&observed.job, &old.job_uid) {
        (Some(job), Some(uid)) if job.metadata.uid.as_deref() != Some(uid.as_str()) => {
            job_lost(cj, job_name, &mut draft, d);
            d.status = draft.into_status(&old);
            return;
        }
        (None, Some(_)) => {
            job_lost(cj, job_name, &mut draft, d);
            d.status = draft.into_status(&old);
            return;
        }
        (None, None) => {
            if let Admission::Queued { position, limit } = observed.admission {
                queued(position, limit.reason(), &old, &mut draft, d);
                d.status = draft.into_status(&old);
                return;
            }
            d.create_job = true;
            draft.leave_queue(&old);
            draft.new.queue_position = None;
            draft.new.phase = Some(Phase::Pending);
            draft.new.reason = Some("Pending".into());
            draft.new.message = Some(format!(
                "Job {job_name} created; waiting for its runner pod"
            ));
            draft.set(RUNNING, false, "Pending", "waiting for a runner pod");
            draft.set(
                WAITING,
                true,
                "Pending",
                "waiting for the runner pod to start",
            );
            d.status = draft.into_status(&old);
            return;
        }
        (Some(job), _) => job,
    };
    draft.new.job_uid = job.metadata.uid.clone().or(old.job_uid.clone());

    let js = job.status.clone().unwrap_or_default();
    let (active, failed, succeeded) = (
        js.active.unwrap_or(0),
        js.failed.unwrap_or(0),
        js.succeeded.unwrap_or(0),
    );
    let attempts = old.attempts.unwrap_or(0).max(active + failed + succeeded);
    draft.new.attempts = Some(attempts);
    if draft.new.start_time.is_none() {
        draft.new.start_time = pods::first_start(&observed.pods);
    }

    let outcome =
        job_condition(job, "Complete").is_some() || job_condition(job, "Failed").is_some();
    if outcome && old.attempts.unwrap_or(0) == 0 && attempts > 0 {
        // A run over before the operator saw its pod running (its start went unwritten, see
        // `in_progress`): its Started Event goes out with the outcome, first.
        d.events.insert(0, started_event(job_name, cj));
    }
    if job_condition(job, "Complete").is_some() {
        succeeded_job(cj, job, &cur, attempts, &mut draft, d);
    } else if let Some(c) = job_condition(job, "Failed") {
        let done = c.last_transition_time.clone().unwrap_or(draft.now.clone());
        let (reason, msg) = failed_job(cj, c, &cur, observed, attempts);
        fail(cj, &mut draft, d, &reason, &msg, done.clone());
    } else if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        suspended(cj, &old, &mut draft, d);
    } else {
        in_progress(
            cj, observed, settings, job_name, &cur, &old, attempts, failed, &mut draft, d,
        );
    }
    d.status = draft.into_status(&old);
}

/// Reason of the `Waiting` condition of a ClothJob failed by the pending time-out.
pub const PENDING_TIMEOUT: &str = "PendingTimeout";

/// Reason of a ClothJob stopped through `spec.cancel`.
pub const CANCELLED: &str = "Cancelled";

/// `spec.cancel` is set and the Job has not finished (a Job that already completed or failed
/// decided the outcome before the cancel could stop it).
fn cancel_requested(cj: &ClothJob, observed: &Observed) -> bool {
    cj.spec.cancel && !observed.job.as_ref().is_some_and(job_finished)
}

/// `spec.cancel`: Failed with reason Cancelled, and the Job (with its pods) deleted; a
/// ClothJob whose Job was not made yet gets none.
fn cancel(cj: &ClothJob, observed: &Observed, draft: &mut Draft, d: &mut Decision) {
    let attempts = draft.new.attempts.unwrap_or(0);
    let msg = if observed.job.is_some() {
        format!("cancelled through spec.cancel; the runner was stopped after {attempts} attempt(s)")
    } else {
        "cancelled through spec.cancel before a runner started".to_string()
    };
    let done = draft.now.clone();
    fail(cj, draft, d, CANCELLED, &msg, done);
    d.delete_job = observed.job.is_some();
}

/// A finished ClothJob: nothing more to run. The Job of a ClothJob failed by the pending
/// time-out is deleted (its pod would wait forever); no other Job is ever deleted here, as a
/// Job cache can lag behind the status the operator wrote from a fresher read.
fn finished(
    cj: &ClothJob,
    observed: &Observed,
    cur: &ClothJobStatus,
    settings: &Settings,
    now: Timestamp,
    d: &mut Decision,
) {
    let conds = cur.conditions.as_deref().unwrap_or_default();
    let timed_out = conditions::find(conds, WAITING).is_some_and(|c| c.reason == PENDING_TIMEOUT);
    let cancelled = cur.reason.as_deref() == Some(CANCELLED);
    if (timed_out || cancelled) && observed.job.as_ref().is_some_and(|j| !job_finished(j)) {
        d.delete_job = true;
    }
    if let (Some(ttl), Some(done)) = (ttl(cj, settings), cur.completion_time.as_ref()) {
        let left_ms = done.0.as_millisecond() + i64::from(ttl) * 1000 - now.as_millisecond();
        if left_ms <= 0 {
            d.delete = true;
        } else {
            d.requeue_after = Some(Duration::from_millis(left_ms.unsigned_abs() + 200));
        }
    }
}

/// How long after a stage finished its completion is announced while the run goes on: the
/// completions of a fast run reach the status and the Events in one write with the outcome,
/// those of a slow run each a few seconds after the stage ended.
pub const ANNOUNCE_DELAY: Duration = Duration::from_secs(30);

/// Stage completions reported by the runner become one `StageCompleted` Event per batch (a
/// line per stage), once per run of a stage (keyed by stage and start time, remembered in
/// `status.announcedStages`); succeeded and failed stage runs become stage timings for the
/// metrics at the same transition. While the run goes on (`run_over` false), a stage is
/// announced [`ANNOUNCE_DELAY`] after it finished, so that stages ending close together are
/// announced together; once the run or the attempt is over everything left is announced.
fn announce_stages(
    cur: &ClothJobStatus,
    run_over: bool,
    now: &Time,
    draft: &mut Draft,
    d: &mut Decision,
) {
    let already = cur.announced_stages.clone().unwrap_or_default();
    let delay_ms = ANNOUNCE_DELAY.as_millis() as i64;
    let mut keys = Vec::new();
    let mut lines = Vec::new();
    let mut last = None;
    let mut wait_ms: Option<i64> = None;
    for s in cur
        .stages
        .iter()
        .flatten()
        .filter(|s| matches!(s.state, StageState::Succeeded | StageState::Failed))
    {
        let started = s.started_at.as_ref().map_or(0, |t| t.0.as_millisecond());
        let key = format!("{}@{started}", s.name);
        if already.contains(&key) {
            keys.push(key);
            continue;
        }
        // Finished this long ago (a stage without an end time counts as long ago).
        let ago = s
            .finished_at
            .as_ref()
            .map_or(i64::MAX, |f| now.0.as_millisecond() - f.0.as_millisecond());
        if !run_over && ago < delay_ms {
            wait_ms = Some(wait_ms.unwrap_or(i64::MAX).min(delay_ms - ago.max(0)));
            continue;
        }
        d.timings.push(stage_timing(s, &key));
        if s.state == StageState::Succeeded {
            let ms = s.duration_ms.unwrap_or(0);
            lines.push(format!(
                "{} finished in {:.2} s ({})",
                s.name,
                ms as f64 / 1000.0,
                s.backend.as_deref().unwrap_or("builtin")
            ));
            last = Some(s.name.clone());
        }
        keys.push(key);
    }
    if !lines.is_empty() {
        d.events.push(EventSpec {
            warning: false,
            reason: "StageCompleted".into(),
            action: last,
            note: lines.join("; "),
        });
    }
    if let Some(ms) = wait_ms {
        d.announce_after = Some(Duration::from_millis(ms.unsigned_abs() + 100));
    }
    // Only the current attempt's stages are kept: the list stays bounded.
    if !keys.is_empty() || cur.announced_stages.is_some() {
        draft.new.announced_stages = Some(keys);
    }
}

/// The timing of a finished stage run: its `durationMs`, or for a failed stage (the runner
/// records no duration) the time from its start to its end.
fn stage_timing(s: &clothjob_api::StageStatus, key: &str) -> StageTiming {
    let span = match (&s.started_at, &s.finished_at) {
        (Some(a), Some(b)) => (b.0.as_millisecond() - a.0.as_millisecond()).max(0),
        _ => 0,
    };
    StageTiming {
        stage: s.name.clone(),
        backend: s.backend.clone().unwrap_or_else(|| "builtin".into()),
        seconds: s.duration_ms.unwrap_or(span).max(0) as f64 / 1000.0,
        outcome: if s.state == StageState::Failed {
            "failed".into()
        } else {
            "succeeded".into()
        },
        key: key.to_string(),
    }
}

/// The Job this ClothJob ran on vanished or was replaced: fail (never re-run beside pods of the
/// old Job that may still be terminating).
fn job_lost(cj: &ClothJob, job_name: &str, draft: &mut Draft, d: &mut Decision) {
    let msg = format!(
        "the Job {job_name} was deleted before it finished (not by the operator); \
         not run again, as its pods may still be running"
    );
    let done = draft.now.clone();
    fail(cj, draft, d, "JobDeleted", &msg, done.clone());
}

/// How long after the Job completed the runner's final status write may still be on its way
/// into the watch cache; after that, a Complete Job without outputs is a failure.
const OUTPUTS_GRACE: Duration = Duration::from_secs(30);

fn succeeded_job(
    cj: &ClothJob,
    job: &Job,
    cur: &ClothJobStatus,
    attempts: i32,
    draft: &mut Draft,
    d: &mut Decision,
) {
    let js = job.status.clone().unwrap_or_default();
    let done = js
        .completion_time
        .clone()
        .or_else(|| job_condition(job, "Complete").and_then(|c| c.last_transition_time.clone()))
        .unwrap_or(draft.now.clone());
    let n = cur.outputs.as_ref().map_or(0, Vec::len);
    if n == 0 && cj.spec.pipeline.encoding.enabled {
        let waited_ms = draft.now.0.as_millisecond() - done.0.as_millisecond();
        if waited_ms < OUTPUTS_GRACE.as_millis() as i64 {
            d.requeue_after = Some(Duration::from_secs(1));
            return;
        }
        let msg = format!(
            "the runner exited successfully but no outputs reached the status after {attempts} attempt(s)"
        );
        fail(cj, draft, d, "OutputsMissing", &msg, done.clone());
        return;
    }
    let msg = match &cur.reused_from {
        Some(from) => format!("{n} outputs copied from the identical ClothJob {from}"),
        None => format!("{n} outputs written after {attempts} attempt(s)"),
    };
    draft.finish(Phase::Succeeded, "Succeeded", &msg, done.clone());
    d.events.push(EventSpec {
        warning: false,
        reason: "Succeeded".into(),
        note: msg,
        ..Default::default()
    });
    d.finished = Some((Phase::Succeeded, "Succeeded".into(), elapsed(cj, &done)));
}

/// The `Started` Event of a first attempt.
fn started_event(job_name: &str, cj: &ClothJob) -> EventSpec {
    let max_attempts = cj.spec.retries.max(0) + 1;
    EventSpec {
        warning: false,
        reason: "Started".into(),
        note: format!("Job {job_name} started attempt 1 of {max_attempts}"),
        ..Default::default()
    }
}

/// The reason and message of a failed Job.
fn failed_job(
    cj: &ClothJob,
    c: &k8s_openapi::api::batch::v1::JobCondition,
    cur: &ClothJobStatus,
    observed: &Observed,
    attempts: i32,
) -> (String, String) {
    let exit = pods::last_failure(&observed.pods).map(|(code, _)| code);
    let reason = match c.reason.as_deref() {
        Some("PodFailurePolicy") if exit == Some(contract::EXIT_INVALID_SPEC) => "InvalidSpec",
        Some("PodFailurePolicy") => "BadInput",
        Some("BackoffLimitExceeded") => "RetriesExhausted",
        Some("DeadlineExceeded") => "DeadlineExceeded",
        Some(other) if !other.is_empty() => other,
        _ => "JobFailed",
    }
    .to_string();
    let detail = failure_text(cur, observed);
    let msg = match (reason.as_str(), detail) {
        ("DeadlineExceeded", _) => format!(
            "deadline of {} s exceeded after {attempts} attempt(s)",
            job_deadline(observed).unwrap_or(cj.spec.active_deadline_seconds.unwrap_or(0))
        ),
        ("BadInput", Some(detail)) => format!("bad input: {detail}"),
        ("InvalidSpec", Some(detail)) => format!("invalid spec: {detail}"),
        (_, Some(detail)) => format!("failed after {attempts} attempt(s): {detail}"),
        (_, None) => c
            .message
            .clone()
            .unwrap_or_else(|| "the runner Job failed".into()),
    };
    (reason, msg)
}

fn job_deadline(observed: &Observed) -> Option<i64> {
    observed
        .job
        .as_ref()?
        .spec
        .as_ref()?
        .active_deadline_seconds
}

/// A Job that has not finished: running, waiting for its pod, or waiting to retry.
#[allow(clippy::too_many_arguments)]
fn in_progress(
    cj: &ClothJob,
    observed: &Observed,
    settings: &Settings,
    job_name: &str,
    cur: &ClothJobStatus,
    old: &ClothJobStatus,
    attempts: i32,
    failed: i32,
    draft: &mut Draft,
    d: &mut Decision,
) {
    let max_attempts = cj.spec.retries.max(0) + 1;
    let previous_failure = (failed > 0).then(|| failure_text(cur, observed)).flatten();
    let with_failure = |msg: String| match &previous_failure {
        Some(f) => format!("{msg}; last failure: {f}"),
        None => msg,
    };
    let old_attempts = old.attempts.unwrap_or(0);
    if attempts > old_attempts {
        if old_attempts == 0 {
            // A first attempt that failed before its start was written (a quiet start) still
            // gets its Started Event, before the Retrying one.
            d.events.push(started_event(job_name, cj));
        }
        if old_attempts > 0 || failed > 0 {
            d.events.push(EventSpec {
                warning: true,
                reason: "Retrying".into(),
                note: format!(
                    "attempt {attempts} of {max_attempts} after: {}",
                    previous_failure.as_deref().unwrap_or("a failed attempt")
                ),
                ..Default::default()
            });
        }
    }
    reuse_decision(observed, old, draft, d);
    let waiting = pods::waiting(&observed.pods, &observed.failed_create, failed);
    // A wait in a queue (the operator's, or Kueue's suspended Job) is not a pod waiting to
    // start: it neither counts toward the pending time-out nor hides a first Warning.
    let old_waiting = conditions::find(&old.conditions.clone().unwrap_or_default(), WAITING)
        .filter(|c| c.status == "True" && old.phase != Some(Phase::Queued))
        .cloned();
    draft.leave_queue(old);

    if let Some(w) = &waiting {
        let since = old_waiting
            .as_ref()
            .map_or(draft.now.0, |c| c.last_transition_time.0);
        let waited_ms = (draft.now.0.as_millisecond() - since.as_millisecond()).max(0);
        let limit_ms = settings.pending_timeout.as_millis() as i64;
        if waited_ms >= limit_ms {
            pending_timed_out(cj, w, settings, draft, d);
            return;
        }
        let quiet_ms = START_QUIET.as_millis() as i64;
        let shown_is_normal = old_waiting
            .as_ref()
            .is_some_and(|c| pods::is_normal_start(&c.reason));
        if shown_is_normal && !w.is_problem() && failed == 0 && waited_ms < quiet_ms {
            // A normal start under way: its steps (pod created, container creating) are not
            // written one by one, nor is the attempt's count or start time: they go out with
            // the Started Event once the runner runs (or with what the start waits for).
            // Looked at again when the quiet time is over.
            draft.new.attempts = old.attempts;
            draft.new.start_time = old.start_time.clone();
            d.events.retain(|e| e.reason != "Started");
            let due_ms = (quiet_ms - waited_ms).min(limit_ms - waited_ms);
            d.requeue_after = Some(Duration::from_millis(due_ms.unsigned_abs() + 100));
            return;
        }
        let msg = with_failure(if w.message.is_empty() {
            format!("the runner pod is waiting: {}", w.reason)
        } else {
            format!("the runner pod is waiting: {}: {}", w.reason, w.message)
        });
        let phase = if old.start_time.is_some() || draft.new.start_time.is_some() || failed > 0 {
            Phase::Running
        } else {
            Phase::Pending
        };
        draft.set(RUNNING, false, &w.reason, &msg);
        draft.set(WAITING, true, &w.reason, &msg);
        draft.new.phase = Some(phase);
        draft.new.reason = Some(w.reason.clone());
        draft.new.message = Some(msg.clone());
        let reason_changed =
            old_waiting.as_ref().map(|c| c.reason.as_str()) != Some(w.reason.as_str());
        if w.is_problem() && reason_changed {
            d.events.push(EventSpec {
                warning: true,
                reason: w.reason.clone(),
                note: msg,
                ..Default::default()
            });
        }
        d.requeue_after = Some(Duration::from_millis(
            (limit_ms - waited_ms).max(0).unsigned_abs() + 200,
        ));
    } else {
        let running = pods::any_running(&observed.pods);
        if !running && pods::any_succeeded(&observed.pods) {
            // The runner exited successfully and the Job controller has yet to mark the Job
            // Complete (its update reconciles again): nothing new to write in between, and
            // certainly not "waiting to retry". A start never seen running stays unwritten:
            // the outcome brings its attempt count and Started Event.
            draft.new.attempts = old.attempts;
            draft.new.start_time = old.start_time.clone();
            if old.attempts.unwrap_or(0) == 0 {
                d.events.retain(|e| e.reason != "Started");
            }
            return;
        }
        let (reason, msg) = match (running, failed) {
            (true, 0) => (
                "Started",
                format!("attempt {attempts} of {max_attempts} running"),
            ),
            (true, _) => (
                "Retrying",
                format!("attempt {attempts} of {max_attempts} running"),
            ),
            (false, _) => (
                "Retrying",
                format!("waiting to retry ({failed} of {max_attempts} attempts failed)"),
            ),
        };
        let msg = with_failure(msg);
        draft.set(RUNNING, running, reason, &msg);
        if conditions::find(&draft.conds, WAITING).is_some() {
            draft.set(WAITING, false, reason, &msg);
        }
        draft.new.phase = Some(Phase::Running);
        draft.new.reason = Some(reason.to_string());
        draft.new.message = Some(msg);
    }
}

/// The reuse decision for the key the runner reported goes into `status.reuse` (the runner
/// polls for it); waiting for or reusing an identical job is announced once per key.
fn reuse_decision(observed: &Observed, old: &ClothJobStatus, draft: &mut Draft, d: &mut Decision) {
    let Some(r) = &observed.reuse else {
        return;
    };
    let before = old.reuse.as_ref().filter(|o| o.key == r.key);
    if before.map(|b| b.decision) != Some(r.decision) {
        let other = r.job.as_deref().unwrap_or("another job");
        let note = match r.decision {
            ReuseDecision::Wait => Some((
                "WaitingForDuplicate",
                format!("an identical job ({other}) is running: waiting for its outputs"),
            )),
            ReuseDecision::Reuse => Some((
                "ReusingOutputs",
                format!(
                    "an identical job ({other}) succeeded: copying its {} outputs",
                    r.outputs.as_ref().map_or(0, Vec::len)
                ),
            )),
            ReuseDecision::Run => None,
        };
        if let Some((reason, note)) = note {
            d.events.push(EventSpec {
                warning: false,
                reason: reason.into(),
                note,
                ..Default::default()
            });
        }
    }
    if r.decision == ReuseDecision::Wait {
        d.requeue_after = Some(crate::reuse::WAIT_RECHECK);
    }
    draft.new.reuse = Some(r.clone());
}

/// The runner pod waited longer than the pending time-out: fail with its waiting reason and
/// delete the Job (its pod would wait forever).
fn pending_timed_out(
    cj: &ClothJob,
    w: &Waiting,
    settings: &Settings,
    draft: &mut Draft,
    d: &mut Decision,
) {
    let mut msg = format!(
        "the runner pod did not start within {} s: {}",
        settings.pending_timeout.as_secs(),
        w.reason
    );
    if !w.message.is_empty() {
        msg = format!("{msg}: {}", w.message);
    }
    let done = draft.now.clone();
    fail(cj, draft, d, &w.reason, &msg, done.clone());
    draft.set(WAITING, false, PENDING_TIMEOUT, &msg);
    d.delete_job = true;
}

/// The decision for a ClothJob whose spec the operator or the apiserver refuses: Failed with
/// reason InvalidSpec and a Warning Event.
pub fn invalid_spec(
    cj: &ClothJob,
    job_name: &str,
    detail: &str,
    settings: &Settings,
    now: Timestamp,
) -> Decision {
    let mut d = Decision::default();
    let cur = cj.status.clone().unwrap_or_default();
    let old = operator_fields(&cur);
    if conditions::is_true(old.conditions.as_deref().unwrap_or_default(), FAILED) {
        return d;
    }
    let mut draft = Draft {
        new: old.clone(),
        conds: old.conditions.clone().unwrap_or_default(),
        generation: cj.metadata.generation,
        now: Time(now),
    };
    draft.new.observed_generation = cj.metadata.generation;
    draft.new.job_name = Some(job_name.to_string());
    let done = draft.now.clone();
    fail(cj, &mut draft, &mut d, "InvalidSpec", detail, done.clone());
    d.status = draft.into_status(&old);
    d.requeue_after = ttl_requeue(cj, settings);
    d
}

/// Terminal failure: the Failed conditions and phase, a Warning Event `Failed` saying
/// `<reason>: <message>`, the result for the metrics, and a reconcile once the TTL passes.
fn fail(cj: &ClothJob, draft: &mut Draft, d: &mut Decision, reason: &str, msg: &str, done: Time) {
    draft.finish(Phase::Failed, reason, msg, done.clone());
    d.events.push(EventSpec {
        warning: true,
        reason: "Failed".into(),
        note: format!("{reason}: {msg}"),
        ..Default::default()
    });
    d.finished = Some((Phase::Failed, reason.to_string(), elapsed(cj, &done)));
}

/// The TTL after finishing: the ClothJob's own, else the operator's default.
fn ttl(cj: &ClothJob, settings: &Settings) -> Option<i32> {
    cj.spec.ttl_seconds_after_finished.or(settings.default_ttl)
}

/// Reconcile again once the TTL after finishing has passed (just finished now).
fn ttl_requeue(cj: &ClothJob, settings: &Settings) -> Option<Duration> {
    let ttl = u64::try_from(ttl(cj, settings)?).unwrap_or(0);
    Some(Duration::from_secs(ttl) + Duration::from_millis(200))
}

/// Places in the queue shown exactly (see `status.queuePosition`).
pub const EXACT_QUEUE_PLACES: usize = 5;

/// The place to show for a job at `position` that shows `shown` now: the new place at the
/// head of the queue or once it differs from the shown one by half or more, else the shown one
/// (no status write).
pub fn shown_position(shown: Option<usize>, position: usize) -> usize {
    match shown {
        Some(s)
            if s > EXACT_QUEUE_PLACES
                && position > EXACT_QUEUE_PLACES
                && s.abs_diff(position) * 2 < s =>
        {
            s
        }
        _ => position,
    }
}

/// Over the operator's concurrency limits: phase Queued at `position`, no Job, no Event.
fn queued(
    position: usize,
    reason: &str,
    old: &ClothJobStatus,
    draft: &mut Draft,
    d: &mut Decision,
) {
    let shown = (old.phase == Some(Phase::Queued) && old.reason.as_deref() == Some(reason))
        .then(|| old.queue_position.and_then(|p| usize::try_from(p).ok()))
        .flatten();
    let position = shown_position(shown, position);
    let msg =
        format!("queued at position {position} ({reason}): starts when a running job finishes");
    // No Event: the wait is in the status (phase, `Waiting` condition, position), as Kueue
    // keeps a workload's; an Event per queued job would be an etcd object per job for an hour
    // at the rate the queue exists for (ADR 14).
    set_queued(
        draft,
        reason,
        msg,
        Some(i32::try_from(position).unwrap_or(i32::MAX)),
    );
    d.requeue_after = Some(QUEUE_RECHECK);
}

/// Phase Queued for `reason`: not running, waiting, at `position` in the operator's queue
/// (none when Kueue or a suspended Job holds it).
fn set_queued(draft: &mut Draft, reason: &str, msg: String, position: Option<i32>) {
    draft.set(RUNNING, false, reason, &msg);
    draft.set(WAITING, true, reason, &msg);
    draft.new.phase = Some(Phase::Queued);
    draft.new.reason = Some(reason.to_string());
    draft.new.message = Some(msg);
    draft.new.queue_position = position;
}

/// The Job exists but is suspended (Kueue has not admitted it): phase Queued with reason
/// SuspendedByKueue, no pending time-out; the operator leaves `suspend` to Kueue.
fn suspended(cj: &ClothJob, old: &ClothJobStatus, draft: &mut Draft, d: &mut Decision) {
    let (reason, msg) = match queue::kueue_queue(cj) {
        Some(q) => (
            queue::SUSPENDED_BY_KUEUE,
            format!("the Job waits suspended until Kueue admits it from queue {q}"),
        ),
        None => (
            queue::SUSPENDED,
            "the Job is suspended (spec.suspend); it runs once resumed".to_string(),
        ),
    };
    if old.reason.as_deref() != Some(reason) {
        d.events.push(EventSpec {
            warning: false,
            reason: reason.into(),
            note: msg.clone(),
            ..Default::default()
        });
    }
    set_queued(draft, reason, msg, None);
}

fn elapsed(cj: &ClothJob, done: &Time) -> f64 {
    cj.metadata.creation_timestamp.as_ref().map_or(0.0, |c| {
        (done.0.as_millisecond() - c.0.as_millisecond()).max(0) as f64 / 1000.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_own_write_replaces_its_fields_and_keeps_the_runners() {
        let cached = ClothJobStatus {
            phase: Some(Phase::Queued),
            queue_position: Some(3),
            progress: Some(30),
            reuse_key: Some("k".into()),
            ..Default::default()
        };
        let ours = ClothJobStatus {
            phase: Some(Phase::Pending),
            job_uid: Some("u".into()),
            ..Default::default()
        };
        let view = with_operator_fields(&cached, &ours);
        assert_eq!(operator_fields(&view), operator_fields(&ours));
        assert_eq!(view.queue_position, None);
        assert_eq!(view.progress, Some(30));
        assert_eq!(view.reuse_key.as_deref(), Some("k"));
    }

    #[test]
    fn the_operators_fields_are_exactly_the_apis_operator_fields() {
        let full: ClothJobStatus = serde_json::from_value(serde_json::json!({
            "observedGeneration": 1, "conditions": [], "phase": "Running", "queuePosition": 1,
            "progress": 5, "stage": "segmentation", "stages": [], "attempts": 1,
            "jobName": "j", "jobUid": "u", "announcedStages": [], "outputs": [], "regions": [],
            "message": "m", "reason": "r", "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:00:01Z",
            "runnerFailure": {"reason": "BadInput", "message": "m", "retryable": false},
            "sourceSha256": "a".repeat(64), "reuseKey": "b".repeat(64), "reusedFrom": "x",
            "reuse": {"key": "b".repeat(64), "decision": "Run"},
        }))
        .unwrap();
        let keys = |s: &ClothJobStatus| -> Vec<String> {
            let mut k: Vec<String> = serde_json::to_value(s)
                .unwrap()
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect();
            k.sort();
            k
        };
        let mut all: Vec<String> = clothjob_api::status::OPERATOR_FIELDS
            .iter()
            .chain(clothjob_api::status::RUNNER_FIELDS)
            .map(|s| s.to_string())
            .collect();
        all.sort();
        assert_eq!(keys(&full), all, "the fixture sets every status field");
        let mut ours: Vec<String> = clothjob_api::status::OPERATOR_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        ours.sort();
        assert_eq!(keys(&operator_fields(&full)), ours);
        let kept = with_operator_fields(&full, &ClothJobStatus::default());
        let mut runners: Vec<String> = clothjob_api::status::RUNNER_FIELDS
            .iter()
            .map(|s| s.to_string())
            .collect();
        runners.sort();
        assert_eq!(keys(&kept), runners);
    }

    #[test]
    fn a_write_is_counted_by_the_first_kind_of_change_it_makes() {
        let old = ClothJobStatus {
            phase: Some(Phase::Queued),
            queue_position: Some(9),
            ..Default::default()
        };
        let moved = ClothJobStatus {
            queue_position: Some(4),
            ..old.clone()
        };
        assert_eq!(write_change(&old, &moved), "queuePosition");
        let started = ClothJobStatus {
            phase: Some(Phase::Pending),
            queue_position: None,
            ..old.clone()
        };
        assert_eq!(write_change(&old, &started), "phase");
        let retold = ClothJobStatus {
            message: Some("still waiting".into()),
            ..old.clone()
        };
        assert_eq!(write_change(&old, &retold), "condition");
        let counted = ClothJobStatus {
            attempts: Some(1),
            ..old.clone()
        };
        assert_eq!(write_change(&old, &counted), "attempt");
        assert_eq!(write_change(&old, &old), "other");
        for c in [&moved, &started, &retold, &counted, &old] {
            assert!(WRITE_CHANGES.contains(&write_change(&old, c)));
        }
    }

    /// The places shown to a job that entered the queue at `from` while the jobs ahead of it
    /// start one by one (one reconcile each): every distinct place shown.
    fn shown_while_moving(from: usize) -> Vec<usize> {
        let mut shown = None;
        let mut seen: Vec<usize> = Vec::new();
        for position in (1..=from).rev() {
            let s = shown_position(shown, position);
            if seen.last() != Some(&s) {
                seen.push(s);
            }
            shown = Some(s);
        }
        seen
    }

    #[test]
    fn a_long_queue_costs_each_job_a_few_position_writes() {
        assert_eq!(shown_while_moving(4), [4, 3, 2, 1]);
        assert_eq!(shown_while_moving(100), [100, 50, 25, 12, 6, 5, 4, 3, 2, 1]);
        assert!(shown_while_moving(10_000).len() <= 20);
        // Moving back (a higher priority arrived) is shown once off by half, too.
        assert_eq!(shown_position(Some(10), 14), 10);
        assert_eq!(shown_position(Some(10), 15), 15);
        // The head of the queue is exact.
        assert_eq!(shown_position(Some(8), 5), 5);
        assert_eq!(shown_position(None, 77), 77);
    }
}
