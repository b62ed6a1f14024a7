//! `ClothJob.status`: lifecycle fields written by the operator and progress fields written by
//! the runner, each with its own server-side-apply field manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The status fields the operator writes (with its field manager); a runner may not change them.
pub const OPERATOR_FIELDS: &[&str] = &[
    "observedGeneration",
    "conditions",
    "phase",
    "attempts",
    "jobName",
    "jobUid",
    "message",
    "reason",
    "startTime",
    "completionTime",
    "announcedStages",
    "queuePosition",
    "reuse",
];

/// The status fields the runner writes (with its field manager).
pub const RUNNER_FIELDS: &[&str] = &[
    "progress",
    "stage",
    "stages",
    "outputs",
    "regions",
    "runnerFailure",
    "sourceSha256",
    "reuseKey",
    "reusedFrom",
];

/// Observed state of a ClothJob.
///
/// The operator owns the fields in [`OPERATOR_FIELDS`]; the runner owns those in
/// [`RUNNER_FIELDS`].
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClothJobStatus {
    /// The `metadata.generation` the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Conditions of the job: `Running`, `Complete` and `Failed` (list keyed by type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Option<Vec<Condition>>,

    /// Queued, Pending, Running, Succeeded or Failed. A summary of the conditions for printer
    /// columns; tools should wait on conditions instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Place in the operator's queue while the phase is `Queued` under its concurrency limits
    /// (1 is the next to start); refreshed as the queue moves, removed once the job starts.
    /// Exact in the first five places; further back it is rewritten only once the true place
    /// differs from it by half or more (a job at 100 shows 100 until it reaches 50), so a long
    /// queue costs each job a few status writes, not one per job ahead of it. Absent for a job whose Job waits suspended for Kueue (Kueue keeps that queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub queue_position: Option<i32>,

    /// Weighted progress in percent: background removal 0-30, segmentation 30-45, expansion
    /// 45-95, encoding 95-98, storing outputs 98-100. Never goes back within an attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub progress: Option<i32>,

    /// The stage the runner is in (backgroundRemoval, segmentation, expansion, encoding,
    /// storing) or `done`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,

    /// Per-stage state and timing of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stages: Option<Vec<StageStatus>>,

    /// Attempts started so far (runner pods created by the Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,

    /// Name of the Kubernetes Job running this ClothJob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,

    /// uid of the Job the operator created for this ClothJob. A Job of that name with another
    /// uid, or none once this is set, means the Job was deleted by someone else: the ClothJob
    /// fails (reason JobDeleted) instead of running again beside pods that may still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_uid: Option<String>,

    /// Finished stage runs of the current attempt the operator has already announced (a
    /// `StageCompleted` Event for a succeeded one) and counted in its stage metrics, keyed
    /// `<stage>@<startedAt ms>`, failed runs included, so a restart or a new leader neither
    /// announces nor counts them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced_stages: Option<Vec<String>>,

    /// The output images (locations and metadata, never image bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputStatus>>,

    /// Garment regions found by segmentation, with their dominant colours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<RegionStatus>>,

    /// A human-readable summary of the last transition, such as the failure reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Machine-readable reason of the terminal state (for example Succeeded, BadInput,
    /// BackoffLimitExceeded, DeadlineExceeded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// When the first runner pod started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the job finished (succeeded or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// A failure the runner reported before exiting (read by the operator, written by the
    /// runner), for runners whose termination message is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_failure: Option<RunnerFailure>,

    /// sha256 of the source bytes the runner fetched, hex (written by the runner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(equal = 64))]
    pub source_sha256: Option<String>,

    /// What identical jobs share (written by the runner once the source is read, unless
    /// `spec.reuse` is `Never`): sha256 over the source's sha256, the pipeline and output
    /// settings (not the output location or credentials) and the runner's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(equal = 64))]
    pub reuse_key: Option<String>,

    /// The ClothJob whose outputs this one copied instead of running the pipeline (written
    /// by the runner once the copies are stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,

    /// The operator's decision for this job's `reuseKey`: run the pipeline, wait for an
    /// identical job that is running, or reuse the outputs of one that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<ReuseStatus>,
}

/// The operator's reuse decision for one `reuseKey`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReuseStatus {
    /// The `reuseKey` this decision is about.
    pub key: String,
    /// Run, Wait or Reuse.
    pub decision: ReuseDecision,
    /// The identical ClothJob waited for (Wait) or reused (Reuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The outputs to copy (Reuse): that job's `status.outputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputStatus>>,
    /// That job's `status.regions` (Reuse).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regions: Option<Vec<RegionStatus>>,
}

/// What the runner does with an identical job.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReuseDecision {
    /// No identical job to take from or wait for: run the pipeline.
    #[default]
    Run,
    /// An identical job is running: wait for its outcome.
    Wait,
    /// An identical job succeeded: copy its outputs.
    Reuse,
}

impl ReuseDecision {
    /// The decision as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ReuseDecision::Run => "Run",
            ReuseDecision::Wait => "Wait",
            ReuseDecision::Reuse => "Reuse",
        }
    }
}

/// Summary phase of a ClothJob.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for a slot: over the operator's concurrency limits (no Job yet, see
    /// `queuePosition`), or its Job is suspended until Kueue admits it (condition `Waiting`,
    /// reason `SuspendedByKueue`).
    Queued,
    /// Accepted, no runner pod has started yet.
    Pending,
    /// A runner pod is working on it (or waiting to be retried).
    Running,
    /// All outputs were written.
    Succeeded,
    /// Gave up; see `message` and the `Failed` condition.
    Failed,
}

impl Phase {
    /// The phase as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Queued => "Queued",
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
}

/// State and timing of one pipeline stage.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// Stage name: backgroundRemoval, segmentation, expansion, encoding or storing.
    pub name: String,
    /// Pending, Running, Succeeded, Skipped (disabled) or Failed.
    pub state: StageState,
    /// Backend that ran the stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// When the stage started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the stage finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Duration of the stage in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// Why the stage ran on `backend`, for a stage that chooses at run time
    /// (backgroundRemoval on `auto`: the built-in remover's confidence and the path taken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub detail: Option<String>,
}

/// State of one pipeline stage.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum StageState {
    /// Not started yet.
    #[default]
    Pending,
    /// In progress.
    Running,
    /// Finished and produced its results.
    Succeeded,
    /// Disabled in the spec: did not run.
    Skipped,
    /// Failed; see the job's message.
    Failed,
}

/// One output image.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputStatus {
    /// Role of the image: original, cutout, mask, segments, garment, catalog or square.
    pub name: String,
    /// Where it was written.
    pub uri: String,
    /// image/jpeg or image/png.
    pub media_type: String,
    /// Width in pixels.
    pub width: i32,
    /// Height in pixels.
    pub height: i32,
    /// Size in bytes.
    pub bytes: i64,
    /// sha256 of the bytes, hex.
    pub sha256: String,
}

/// A garment region found by segmentation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// Label of the region in the `segments` label map.
    pub label: i32,
    /// The model's class of the region (for example `upper`, `lower`, `full`) when an
    /// `onnx` segmentation model made it; absent for the builtin colour regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// Share of the garment's pixels, 0-1 as a decimal string (for example "0.42").
    pub share: String,
    /// Bounding box `[x, y, width, height]` in pixels of the original photo.
    pub bbox: Vec<i32>,
    /// Dominant colours, most common first, as `#rrggbb` with a name (for example
    /// "navy #1f2a44").
    pub colors: Vec<String>,
}

/// A failure the runner reported about itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunnerFailure {
    /// Bounded category: BadInput, Transient, Backend or Internal.
    pub reason: String,
    /// What failed, in words.
    pub message: String,
    /// Whether retrying can help.
    pub retryable: bool,
}

fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_field_has_exactly_one_writer() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let full = ClothJobStatus {
            observed_generation: Some(1),
            conditions: Some(vec![]),
            phase: Some(Phase::Running),
            queue_position: Some(1),
            progress: Some(1),
            stage: Some("x".into()),
            stages: Some(vec![]),
            attempts: Some(1),
            job_name: Some("j".into()),
            job_uid: Some("u".into()),
            announced_stages: Some(vec![]),
            outputs: Some(vec![]),
            regions: Some(vec![]),
            message: Some("m".into()),
            reason: Some("r".into()),
            start_time: Some(t.clone()),
            completion_time: Some(t),
            runner_failure: Some(RunnerFailure::default()),
            source_sha256: Some("s".into()),
            reuse_key: Some("k".into()),
            reused_from: Some("f".into()),
            reuse: Some(ReuseStatus::default()),
        };
        let value = serde_json::to_value(&full).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        let mut owned: Vec<&str> = OPERATOR_FIELDS
            .iter()
            .chain(RUNNER_FIELDS)
            .copied()
            .collect();
        owned.sort_unstable();
        assert_eq!(keys, owned);
    }
}
