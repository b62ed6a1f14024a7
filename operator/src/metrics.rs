//! Prometheus metrics of the operator: per-stage latency, job results, queue wait, retries,
//! failures, jobs by phase, stalled jobs, reconciles and build information.
//!
//! Every observation of a job is derived from a transition of its status that the operator
//! writes once (a stage key added to `status.announcedStages`, the terminal conditions, the
//! first start time, a higher attempt count) and is made only after that status write
//! succeeded. A restarted operator or a new leader reads the written status and derives
//! nothing again. Within one process, [`Recorded`] also drops an observation that a reconcile
//! from a lagging watch cache would derive a second time (see ADR "stage metrics exactly
//! once").

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use clothjob_api::conditions::{self, COMPLETE, FAILED};
use clothjob_api::progress::Stage;
use clothjob_api::{ClothJob, ClothJobStatus, Phase};
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

use crate::decide::Decision;

/// Buckets of the stage histogram: 5 ms encodes up to hour-long remote calls (Gemini's
/// time-out can be 3600 s).
pub const STAGE_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Buckets of the job duration and queue wait histograms (seconds).
const JOB_BUCKETS: [f64; 16] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
    7200.0, 14400.0,
];

/// Backends a stage may report; anything else is exported as `other`.
pub const BACKENDS: [&str; 5] = ["builtin", "onnx", "remote", "gemini", "objectStore"];

/// The stages with the backends each can run, whose series exist from the start.
const STAGE_BACKENDS: [(&str, &str); 9] = [
    ("backgroundRemoval", "builtin"),
    ("backgroundRemoval", "onnx"),
    ("backgroundRemoval", "remote"),
    ("segmentation", "builtin"),
    ("segmentation", "onnx"),
    ("expansion", "builtin"),
    ("expansion", "gemini"),
    ("encoding", "builtin"),
    ("storing", "objectStore"),
];

/// Terminal failure reasons exported as themselves; anything else is exported as `other`.
pub const FAILURE_REASONS: [&str; 15] = [
    "BadInput",
    "InvalidSpec",
    "RetriesExhausted",
    "DeadlineExceeded",
    "JobDeleted",
    "OutputsMissing",
    "Cancelled",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "Unschedulable",
    "FailedCreate",
];

/// The `stage` label of a stage name from the runner's status: a known stage, else `other`.
pub fn stage_label(name: &str) -> &'static str {
    Stage::from_name(name).map_or("other", Stage::name)
}

/// The `backend` label of a backend name from the runner's status: a known backend, else
/// `other` (a missing backend is `builtin`, as in the Events).
pub fn backend_label(name: Option<&str>) -> &'static str {
    let name = name.unwrap_or("builtin");
    BACKENDS.into_iter().find(|b| *b == name).unwrap_or("other")
}

/// The `reason` label of a terminal failure reason: one of [`FAILURE_REASONS`], else `other`.
pub fn failure_label(reason: &str) -> &'static str {
    FAILURE_REASONS
        .into_iter()
        .find(|r| *r == reason)
        .unwrap_or("other")
}

/// The `phase` label values of `clothjob_status_writes_total` (`none`: a status without one).
const PHASES: [&str; 6] = [
    "Queued",
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "none",
];

/// The reasons of the operator's Events, the label values of `clothjob_events_total`
/// ([`event_label`]).
pub const EVENT_REASONS: [&str; 10] = [
    "Started",
    "StageCompleted",
    "Retrying",
    "Succeeded",
    "Failed",
    "WaitingForDuplicate",
    "ReusingOutputs",
    "SuspendedByKueue",
    "Suspended",
    "Waiting",
];

/// The `reason` label of an Event: one of [`EVENT_REASONS`]; a runner pod's waiting reason
/// (`ErrImagePull`, `CreateContainerConfigError`, ...) counts as `Waiting`.
pub fn event_label(reason: &str) -> &'static str {
    EVENT_REASONS
        .into_iter()
        .find(|r| *r == reason)
        .unwrap_or("Waiting")
}

/// The operator's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served at /metrics.
    pub registry: Registry,
    /// Reconciles by result (ok, error).
    pub reconciles: IntCounterVec,
    /// Reconcile failures by error category.
    pub reconcile_errors: IntCounterVec,
    /// Seconds per reconcile (observe, decide, apply, status, Events).
    pub reconcile_duration: Histogram,
    /// Finished jobs by outcome (succeeded, failed).
    pub jobs_finished: IntCounterVec,
    /// Failed jobs by bounded reason.
    pub failures: IntCounterVec,
    /// Seconds from creation to finish, by outcome.
    pub job_duration: HistogramVec,
    /// Seconds from creation until the first runner pod ran.
    pub queue_wait: Histogram,
    /// Seconds per finished pipeline stage run, by stage, backend and outcome.
    pub stage_duration: HistogramVec,
    /// Attempts started after a failed one.
    pub retries: IntCounter,
    /// Bytes of the outputs written per succeeded job.
    pub output_bytes: Histogram,
    /// 1 while this replica holds the leader Lease (or runs without leader election), else 0.
    pub leader: IntGauge,
    /// Status writes of the operator, by what they changed (`decide::write_change`) and the
    /// phase written.
    pub status_writes: IntCounterVec,
    /// Reconciles that read the operator's own last status write because the ClothJob cache
    /// did not show it yet.
    pub cache_behind: IntCounter,
    /// Events the operator published, by reason (its own reasons; a pod's waiting reason is
    /// `Waiting`).
    pub events: IntCounterVec,
    /// The gauges computed from the ClothJob caches at scrape time.
    jobs: Arc<JobsCollector>,
    /// Observations already made in this process (against lagging caches).
    recorded: Arc<Recorded>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "clothjob_reconcile_total",
                "Reconciles of ClothJobs by result",
            ),
            &["result"],
        )?;
        let reconcile_errors = IntCounterVec::new(
            Opts::new(
                "clothjob_reconcile_errors_total",
                "Failed reconciles by error category",
            ),
            &["category"],
        )?;
        let reconcile_duration = Histogram::with_opts(
            HistogramOpts::new(
                "clothjob_reconcile_duration_seconds",
                "Seconds per reconcile of a ClothJob",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let jobs_finished = IntCounterVec::new(
            Opts::new(
                "clothjob_jobs_finished_total",
                "ClothJobs that finished, by outcome (succeeded, failed)",
            ),
            &["outcome"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "clothjob_failures_total",
                "ClothJobs that failed, by reason (a bounded set; anything else is other)",
            ),
            &["reason"],
        )?;
        let job_duration = HistogramVec::new(
            HistogramOpts::new(
                "clothjob_job_duration_seconds",
                "Seconds from a ClothJob's creation to its finish, by outcome",
            )
            .buckets(JOB_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                "clothjob_queue_wait_seconds",
                "Seconds from a ClothJob's creation until its first runner pod ran",
            )
            .buckets(JOB_BUCKETS.to_vec()),
        )?;
        let stage_duration = HistogramVec::new(
            HistogramOpts::new(
                "clothjob_stage_duration_seconds",
                "Seconds per finished pipeline stage run (every attempt), by stage, backend and outcome",
            )
            .buckets(STAGE_BUCKETS.to_vec()),
            &["stage", "backend", "outcome"],
        )?;
        let retries = IntCounter::new(
            "clothjob_retries_total",
            "Runner attempts started after a failed attempt",
        )?;
        let output_bytes = Histogram::with_opts(
            HistogramOpts::new(
                "clothjob_job_output_bytes",
                "Bytes of the output images written per succeeded ClothJob",
            )
            .buckets(prometheus::exponential_buckets(1024.0, 4.0, 11)?),
        )?;
        let leader = IntGauge::new(
            "clothjob_leader",
            "1 while this operator replica is the leader and reconciles, 0 while it stands by",
        )?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "clothjob_status_writes_total",
                "Status writes of the operator to ClothJobs, by what they changed and the phase written",
            ),
            &["change", "phase"],
        )?;
        let cache_behind = IntCounter::new(
            "clothjob_reconcile_cache_behind_total",
            "Reconciles that used the operator's own last status write because the ClothJob cache did not show it yet",
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "clothjob_events_total",
                "Events the operator published about ClothJobs, by reason",
            ),
            &["reason"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "clothjob_build_info",
                "Always 1; the operator's version in the label",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let jobs = Arc::new(JobsCollector::new()?);
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(reconcile_errors.clone()))?;
        registry.register(Box::new(reconcile_duration.clone()))?;
        registry.register(Box::new(jobs_finished.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(job_duration.clone()))?;
        registry.register(Box::new(queue_wait.clone()))?;
        registry.register(Box::new(stage_duration.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(output_bytes.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(status_writes.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(cache_behind.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(SharedCollector(jobs.clone())))?;
        // Series exist from the start at zero, so the first observation of each shows in
        // rate() and increase() (a series born at 1 shows no increase).
        for outcome in ["succeeded", "failed"] {
            jobs_finished.with_label_values(&[outcome]);
            job_duration.with_label_values(&[outcome]);
            for (stage, backend) in STAGE_BACKENDS {
                stage_duration.with_label_values(&[stage, backend, outcome]);
            }
        }
        for reason in FAILURE_REASONS.into_iter().chain(["other"]) {
            failures.with_label_values(&[reason]);
        }
        for change in crate::decide::WRITE_CHANGES {
            for phase in PHASES {
                status_writes.with_label_values(&[change, phase]);
            }
        }
        for reason in EVENT_REASONS {
            events.with_label_values(&[reason]);
        }
        Ok(Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            jobs_finished,
            failures,
            job_duration,
            queue_wait,
            stage_duration,
            retries,
            output_bytes,
            leader,
            status_writes,
            cache_behind,
            events,
            jobs,
            recorded: Arc::new(Recorded::default()),
        })
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }

    /// Counts the ClothJobs of a controller scope's cache (`scope`: a namespace or `*`) in
    /// `clothjob_jobs{phase}` and `clothjob_stalled_seconds_max{phase}` at scrape time; a
    /// later store for the same scope replaces the earlier one.
    pub fn watch(&self, scope: &str, store: Store<ClothJob>) {
        if let Ok(mut stores) = self.jobs.stores.lock() {
            stores.insert(scope.to_string(), store);
        }
    }

    /// Records what a decision about `cj` (as read from the cache) newly reached, once its
    /// status was written: stage runs, the terminal result, the queue wait, retries and the
    /// output bytes.
    pub fn record(&self, cj: &ClothJob, d: &Decision) {
        let obs = transitions(cj, d);
        let uid = cj.uid().unwrap_or_default();
        let cached = cj.status.clone().unwrap_or_default();
        let keys: Vec<String> = obs.iter().map(|o| o.key.clone()).collect();
        let admitted = self.recorded.admit(&uid, &cached, &keys, d.delete);
        for o in obs.into_iter().filter(|o| admitted.contains(&o.key)) {
            match o.what {
                What::Stage {
                    stage,
                    backend,
                    outcome,
                    seconds,
                } => self
                    .stage_duration
                    .with_label_values(&[stage, backend, outcome])
                    .observe(seconds),
                What::Finished {
                    outcome,
                    reason,
                    seconds,
                    output_bytes,
                } => {
                    self.jobs_finished.with_label_values(&[outcome]).inc();
                    self.job_duration
                        .with_label_values(&[outcome])
                        .observe(seconds);
                    if let Some(reason) = reason {
                        self.failures.with_label_values(&[reason]).inc();
                    }
                    if let Some(b) = output_bytes {
                        self.output_bytes.observe(b as f64);
                    }
                }
                What::Started { seconds } => self.queue_wait.observe(seconds),
                What::Retries(n) => self.retries.inc_by(n),
            }
        }
    }
}

/// One observation a decision newly reached, with its key in [`Recorded`].
#[derive(Clone, Debug, PartialEq)]
struct Observation {
    key: String,
    what: What,
}

#[derive(Clone, Debug, PartialEq)]
enum What {
    Stage {
        stage: &'static str,
        backend: &'static str,
        outcome: &'static str,
        seconds: f64,
    },
    Finished {
        outcome: &'static str,
        reason: Option<&'static str>,
        seconds: f64,
        output_bytes: Option<u64>,
    },
    Started {
        seconds: f64,
    },
    Retries(u64),
}

const KEY_FINISHED: &str = "finished";
const KEY_STARTED: &str = "started";
const KEY_STAGE: &str = "stage:";
const KEY_ATTEMPTS: &str = "attempts:";

/// The observations of a decision: its stage timings (each a stage run newly added to
/// `announcedStages`) and the transitions between the cached status and the decided one.
fn transitions(cj: &ClothJob, d: &Decision) -> Vec<Observation> {
    let mut obs: Vec<Observation> = d
        .timings
        .iter()
        .map(|t| Observation {
            key: format!("{KEY_STAGE}{}", t.key),
            what: What::Stage {
                stage: stage_label(&t.stage),
                backend: backend_label(Some(&t.backend)),
                outcome: if t.outcome == "failed" {
                    "failed"
                } else {
                    "succeeded"
                },
                seconds: t.seconds,
            },
        })
        .collect();
    let old = cj.status.clone().unwrap_or_default();
    if let Some((phase, reason, seconds)) = &d.finished {
        let succeeded = *phase == Phase::Succeeded;
        let bytes = old
            .outputs
            .iter()
            .flatten()
            .map(|o| u64::try_from(o.bytes).unwrap_or(0))
            .sum::<u64>();
        obs.push(Observation {
            key: KEY_FINISHED.into(),
            what: What::Finished {
                outcome: if succeeded { "succeeded" } else { "failed" },
                reason: (!succeeded).then(|| failure_label(reason)),
                seconds: *seconds,
                output_bytes: succeeded.then_some(bytes),
            },
        });
    }
    let Some(new) = &d.status else {
        return obs;
    };
    if let (None, Some(start), Some(created)) = (
        &old.start_time,
        &new.start_time,
        &cj.metadata.creation_timestamp,
    ) {
        let ms = (start.0.as_millisecond() - created.0.as_millisecond()).max(0);
        obs.push(Observation {
            key: KEY_STARTED.into(),
            what: What::Started {
                seconds: ms as f64 / 1000.0,
            },
        });
    }
    let (before, after) = (
        old.attempts.unwrap_or(0).max(1),
        new.attempts.unwrap_or(0).max(1),
    );
    if after > before {
        obs.push(Observation {
            key: format!("{KEY_ATTEMPTS}{after}"),
            what: What::Retries(u64::try_from(after - before).unwrap_or(0)),
        });
    }
    obs
}

/// Whether the status `s` (as cached) already shows the transition named by `key`, or can no
/// longer lead a decision to it: then the key need not be remembered.
fn reflected(s: &ClothJobStatus, key: &str) -> bool {
    if let Some(stage_key) = key.strip_prefix(KEY_STAGE) {
        let announced = s.announced_stages.iter().flatten().any(|k| k == stage_key);
        let present = s.stages.iter().flatten().any(|st| {
            let started = st.started_at.as_ref().map_or(0, |t| t.0.as_millisecond());
            format!("{}@{started}", st.name) == stage_key
        });
        return announced || !present;
    }
    if let Some(n) = key.strip_prefix(KEY_ATTEMPTS) {
        return n.parse::<i32>().is_ok_and(|n| s.attempts.unwrap_or(0) >= n);
    }
    let conds = s.conditions.as_deref().unwrap_or_default();
    match key {
        KEY_FINISHED => conditions::is_true(conds, COMPLETE) || conditions::is_true(conds, FAILED),
        KEY_STARTED => s.start_time.is_some(),
        _ => true,
    }
}

/// The most ClothJobs [`Recorded`] remembers keys for before it starts afresh.
const RECORDED_MAX_JOBS: usize = 4096;

/// Observations already made in this process, per ClothJob uid, until the watch cache shows
/// the status transition they came from. A reconcile that reads the ClothJob from a cache
/// that has not yet seen the operator's own last status write would otherwise derive the same
/// transition (and observe it) a second time.
#[derive(Default)]
struct Recorded {
    by_uid: Mutex<HashMap<String, HashSet<String>>>,
}

impl Recorded {
    /// The keys among `keys` not yet recorded for `uid` (they are recorded now). Keys the
    /// cached status `cached` already reflects are forgotten first; `gone`: the ClothJob is
    /// being deleted, so nothing is remembered for it.
    fn admit(
        &self,
        uid: &str,
        cached: &ClothJobStatus,
        keys: &[String],
        gone: bool,
    ) -> HashSet<String> {
        let Ok(mut map) = self.by_uid.lock() else {
            return keys.iter().cloned().collect();
        };
        if keys.is_empty() && !map.contains_key(uid) {
            return HashSet::new();
        }
        let seen = map.entry(uid.to_string()).or_default();
        seen.retain(|k| !reflected(cached, k));
        let admitted: HashSet<String> = keys
            .iter()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        seen.extend(admitted.iter().cloned());
        if seen.is_empty() || gone {
            map.remove(uid);
        }
        if map.len() > RECORDED_MAX_JOBS {
            map.clear();
        }
        admitted
    }
}

/// `clothjob_jobs{phase}` and `clothjob_stalled_seconds_max{phase}`, computed from the
/// ClothJob caches when scraped (a standby replica has no caches and exports zeros).
struct JobsCollector {
    stores: Mutex<HashMap<String, Store<ClothJob>>>,
    /// Per uid: the progress fingerprint last seen and since when.
    progress: Mutex<HashMap<String, (String, SystemTime)>>,
    jobs: IntGaugeVec,
    stalled: GaugeVec,
}

impl JobsCollector {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            stores: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            jobs: IntGaugeVec::new(
                Opts::new(
                    "clothjob_jobs",
                    "ClothJobs in the operator's cache, by phase",
                ),
                &["phase"],
            )?,
            stalled: GaugeVec::new(
                Opts::new(
                    "clothjob_stalled_seconds_max",
                    "Longest time any unfinished ClothJob of the phase has gone without a \
                     change of its progress, stage, stage states, attempts or conditions",
                ),
                &["phase"],
            )?,
        })
    }

    fn update(&self, now: SystemTime) {
        let all: Vec<Arc<ClothJob>> = match self.stores.lock() {
            Ok(stores) => stores.values().flat_map(Store::state).collect(),
            Err(_) => return,
        };
        let Ok(mut progress) = self.progress.lock() else {
            return;
        };
        let mut counts: HashMap<&'static str, i64> = HashMap::new();
        let mut stalled: HashMap<&'static str, f64> = HashMap::new();
        let mut live = HashSet::new();
        for cj in &all {
            let status = cj.status.clone().unwrap_or_default();
            let phase = status.phase.unwrap_or(Phase::Pending);
            *counts.entry(phase.as_str()).or_default() += 1;
            if matches!(phase, Phase::Succeeded | Phase::Failed) {
                continue;
            }
            let uid = cj.uid().unwrap_or_default();
            let print = fingerprint(&status);
            // First sighting (also after a restart): count from the last change the status
            // records; a changed fingerprint: from this scrape.
            let since = match progress.get(&uid) {
                Some((p, since)) if *p == print => *since,
                Some(_) => now,
                None => last_change(cj, &status).unwrap_or(now).min(now),
            };
            progress.insert(uid.clone(), (print, since));
            live.insert(uid);
            let secs = now
                .duration_since(since)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64();
            let max = stalled.entry(phase.as_str()).or_default();
            *max = max.max(secs);
        }
        progress.retain(|uid, _| live.contains(uid));
        for phase in [
            Phase::Queued,
            Phase::Pending,
            Phase::Running,
            Phase::Succeeded,
            Phase::Failed,
        ] {
            let p = phase.as_str();
            self.jobs
                .with_label_values(&[p])
                .set(counts.get(p).copied().unwrap_or(0));
        }
        for p in [Phase::Pending.as_str(), Phase::Running.as_str()] {
            self.stalled
                .with_label_values(&[p])
                .set(stalled.get(p).copied().unwrap_or(0.0));
        }
    }
}

/// What counts as progress of a job: progress, stage, each stage's state, attempts, phase
/// and the reason of the last transition.
fn fingerprint(s: &ClothJobStatus) -> String {
    let stages: Vec<String> = s
        .stages
        .iter()
        .flatten()
        .map(|st| format!("{}={:?}", st.name, st.state))
        .collect();
    format!(
        "{:?}|{:?}|{}|{:?}|{:?}|{:?}",
        s.progress,
        s.stage,
        stages.join(","),
        s.attempts,
        s.phase,
        s.reason
    )
}

/// The latest time the status records a change at (creation, first start, conditions,
/// stage starts and ends): where a freshly started operator starts counting a stall.
fn last_change(cj: &ClothJob, s: &ClothJobStatus) -> Option<SystemTime> {
    let conds = s
        .conditions
        .iter()
        .flatten()
        .map(|c| &c.last_transition_time);
    let stages = s
        .stages
        .iter()
        .flatten()
        .flat_map(|st| st.started_at.iter().chain(st.finished_at.iter()));
    let ms = cj
        .metadata
        .creation_timestamp
        .iter()
        .chain(s.start_time.iter())
        .chain(conds)
        .chain(stages)
        .map(|t| t.0.as_millisecond())
        .max()?;
    let ms = u64::try_from(ms).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
}

/// Registers a shared [`JobsCollector`] (the registry takes ownership of a box).
struct SharedCollector(Arc<JobsCollector>);

impl Collector for SharedCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.0.jobs.desc();
        d.extend(self.0.stalled.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.update(SystemTime::now());
        let mut families = self.0.jobs.collect();
        families.extend(self.0.stalled.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::StageTiming;
    use clothjob_api::{StageState, StageStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn event_reasons_are_a_bounded_set() {
        assert_eq!(event_label("StageCompleted"), "StageCompleted");
        assert_eq!(event_label("SuspendedByKueue"), "SuspendedByKueue");
        assert_eq!(event_label("ErrImageNeverPull"), "Waiting");
        let m = Metrics::new().unwrap();
        let text = m.render();
        for r in EVENT_REASONS {
            assert!(text.contains(&format!("clothjob_events_total{{reason=\"{r}\"}} 0")));
        }
        assert!(
            text.contains(
                "clothjob_status_writes_total{change=\"queuePosition\",phase=\"Queued\"} 0"
            )
        );
    }

    #[test]
    fn every_metric_is_in_the_readme_table() {
        let readme =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
        let text = Metrics::new().unwrap().render();
        let families: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert!(families.len() > 10, "{families:?}");
        for f in families {
            assert!(
                readme.contains(&format!("| `{f}` |")),
                "{f} is missing from README's metrics table"
            );
        }
    }

    fn time(ms: i64) -> Time {
        Time(Timestamp::from_millisecond(ms).unwrap())
    }

    fn job(status: ClothJobStatus) -> ClothJob {
        let mut cj = ClothJob::new(
            "a",
            serde_json::from_value(serde_json::json!({
                "source": {"url": "https://example.com/a.jpg"},
                "output": {"uri": "file:///out"}
            }))
            .unwrap(),
        );
        cj.metadata.uid = Some("u1".into());
        cj.metadata.creation_timestamp = Some(time(1_000));
        cj.status = Some(status);
        cj
    }

    fn timing(stage: &str, backend: &str, outcome: &str, key: &str) -> StageTiming {
        StageTiming {
            stage: stage.into(),
            backend: backend.into(),
            seconds: 0.2,
            outcome: outcome.into(),
            key: key.into(),
        }
    }

    fn count(m: &Metrics, labels: &[&str]) -> u64 {
        m.stage_duration
            .with_label_values(labels)
            .get_sample_count()
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(stage_label("encoding"), "encoding");
        assert_eq!(stage_label("rm -rf"), "other");
        assert_eq!(backend_label(Some("gemini")), "gemini");
        assert_eq!(backend_label(None), "builtin");
        assert_eq!(backend_label(Some("x".repeat(300).as_str())), "other");
        assert_eq!(failure_label("BadInput"), "BadInput");
        assert_eq!(failure_label("SomethingNew"), "other");
    }

    #[test]
    fn a_stage_is_observed_once_even_when_a_lagging_cache_repeats_the_transition() {
        let m = Metrics::new().unwrap();
        let stage = StageStatus {
            name: "encoding".into(),
            state: StageState::Failed,
            backend: Some("builtin".into()),
            started_at: Some(time(5_000)),
            finished_at: Some(time(5_200)),
            duration_ms: None,
            detail: None,
        };
        let weird = StageStatus {
            name: "weird".into(),
            state: StageState::Succeeded,
            started_at: Some(time(1)),
            ..Default::default()
        };
        let cached = job(ClothJobStatus {
            stages: Some(vec![stage, weird]),
            ..Default::default()
        });
        let d = Decision {
            timings: vec![
                timing("encoding", "builtin", "failed", "encoding@5000"),
                timing("weird", "custom", "succeeded", "weird@1"),
            ],
            ..Default::default()
        };
        m.record(&cached, &d);
        // The same stale cached object reconciled again: nothing more.
        m.record(&cached, &d);
        assert_eq!(count(&m, &["encoding", "builtin", "failed"]), 1);
        assert_eq!(count(&m, &["other", "other", "succeeded"]), 1);
        // Once the cache shows the key, it is forgotten (the decision no longer derives it).
        let mut caught_up = cached.clone();
        if let Some(s) = caught_up.status.as_mut() {
            s.announced_stages = Some(vec!["encoding@5000".into(), "weird@1".into()]);
        }
        m.record(&caught_up, &Decision::default());
        m.record(&caught_up, &Decision::default());
        assert!(m.recorded.by_uid.lock().unwrap().is_empty());
        assert_eq!(count(&m, &["encoding", "builtin", "failed"]), 1);
    }

    #[test]
    fn finishing_starting_and_retrying_are_observed_from_the_status_transition() {
        let m = Metrics::new().unwrap();
        let cached = job(ClothJobStatus {
            attempts: Some(1),
            outputs: Some(vec![clothjob_api::OutputStatus {
                bytes: 4096,
                ..Default::default()
            }]),
            ..Default::default()
        });
        let d = Decision {
            status: Some(ClothJobStatus {
                attempts: Some(3),
                start_time: Some(time(3_500)),
                ..Default::default()
            }),
            finished: Some((Phase::Failed, "NotAKnownReason".into(), 9.0)),
            ..Default::default()
        };
        m.record(&cached, &d);
        m.record(&cached, &d);
        assert_eq!(m.retries.get(), 2);
        assert_eq!(m.queue_wait.get_sample_count(), 1);
        assert!((m.queue_wait.get_sample_sum() - 2.5).abs() < 1e-9);
        assert_eq!(m.failures.with_label_values(&["other"]).get(), 1);
        assert_eq!(m.jobs_finished.with_label_values(&["failed"]).get(), 1);
        assert_eq!(m.output_bytes.get_sample_count(), 0);
        let text = m.render();
        assert!(text.contains("clothjob_build_info{version="), "{text}");
    }

    #[test]
    fn jobs_by_phase_and_stalls_come_from_the_cache() {
        let m = Metrics::new().unwrap();
        let (store, mut writer) = kube::runtime::reflector::store::<ClothJob>();
        let running = job(ClothJobStatus {
            phase: Some(Phase::Running),
            start_time: Some(time(40_000)),
            ..Default::default()
        });
        let mut done = job(ClothJobStatus {
            phase: Some(Phase::Succeeded),
            ..Default::default()
        });
        done.metadata.name = Some("b".into());
        done.metadata.uid = Some("u2".into());
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(running.clone()));
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(done));
        m.watch("*", store);
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        m.jobs.update(at(100));
        assert_eq!(m.jobs.jobs.with_label_values(&["Running"]).get(), 1);
        assert_eq!(m.jobs.jobs.with_label_values(&["Succeeded"]).get(), 1);
        assert_eq!(m.jobs.jobs.with_label_values(&["Pending"]).get(), 0);
        // No change since the start at 40 s.
        assert_eq!(m.jobs.stalled.with_label_values(&["Running"]).get(), 60.0);
        m.jobs.update(at(130));
        assert_eq!(m.jobs.stalled.with_label_values(&["Running"]).get(), 90.0);
        // Progress moves: the stall starts again from the scrape that saw it.
        let mut moved = running;
        moved.status.as_mut().unwrap().progress = Some(50);
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(moved));
        m.jobs.update(at(140));
        m.jobs.update(at(150));
        assert_eq!(m.jobs.stalled.with_label_values(&["Running"]).get(), 10.0);
        assert!(m.render().contains("clothjob_jobs{phase=\"Running\"} 1"));
    }

    #[test]
    fn a_failed_stage_is_timed_from_its_start_to_its_end_and_remembered_with_the_others() {
        let mut cj = job(serde_json::from_value(serde_json::json!({
            "attempts": 1,
            "jobUid": "job-uid",
            "stages": [
                {"name": "backgroundRemoval", "state": "Succeeded", "startedAt": "2025-11-25T10:00:01Z", "durationMs": 180, "backend": "remote"},
                {"name": "expansion", "state": "Failed", "startedAt": "2025-11-25T10:00:02Z", "finishedAt": "2025-11-25T10:00:04.500Z", "backend": "gemini"}
            ]
        })).unwrap());
        cj.metadata.namespace = Some("ns".into());
        let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "j", "uid": "job-uid"},
            "status": {"failed": 1, "active": 1}
        }))
        .unwrap();
        let observed = crate::observe::Observed {
            job: Some(job),
            ..Default::default()
        };
        let now = Timestamp::from_second(1_764_064_810).unwrap();
        let d = crate::decide::decide(&cj, &observed, &Default::default(), "j", now);
        let got: Vec<(&str, &str, f64)> = d
            .timings
            .iter()
            .map(|t| (t.stage.as_str(), t.outcome.as_str(), t.seconds))
            .collect();
        assert_eq!(
            got,
            [
                ("backgroundRemoval", "succeeded", 0.18),
                ("expansion", "failed", 2.5)
            ]
        );
        let status = d.status.clone().unwrap();
        assert_eq!(
            status.announced_stages.unwrap(),
            ["backgroundRemoval@1764064801000", "expansion@1764064802000"]
        );
        let m = Metrics::new().unwrap();
        m.record(&cj, &d);
        assert_eq!(count(&m, &["expansion", "gemini", "failed"]), 1);
        assert_eq!(count(&m, &["backgroundRemoval", "remote", "succeeded"]), 1);
        assert_eq!(m.retries.get(), 1);
        // Decided again from the written status (what a restarted operator reads): nothing.
        let mut after = cj.clone();
        after.status.as_mut().unwrap().announced_stages = status_keys(&d);
        after.status.as_mut().unwrap().attempts = Some(2);
        let again = crate::decide::decide(&after, &observed, &Default::default(), "j", now);
        assert!(again.timings.is_empty());
    }

    fn status_keys(d: &Decision) -> Option<Vec<String>> {
        d.status.as_ref()?.announced_stages.clone()
    }

    #[test]
    fn the_exposition_passes_promtool_check_metrics() {
        let m = Metrics::new().unwrap();
        m.stage_duration
            .with_label_values(&["encoding", "builtin", "succeeded"])
            .observe(0.05);
        m.failures.with_label_values(&["BadInput"]).inc();
        m.reconcile_errors.with_label_values(&["Kube"]).inc();
        m.reconciles.with_label_values(&["ok"]).inc();
        m.queue_wait.observe(1.0);
        m.output_bytes.observe(5000.0);
        m.reconcile_duration.observe(0.01);
        m.jobs.update(SystemTime::now());
        let text = m.render();
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool (scripts/setup-test-deps.sh installs it)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{said}\n{text}"
        );
    }
}
