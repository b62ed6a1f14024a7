//! `ClothJob.status`: lifecycle fields written by the operator and progress fields written by
//! the runner, each with its own server-side-apply field manager.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state of a ClothJob.
///
/// The operator owns `observedGeneration`, `conditions`, `phase`, `attempts`, `jobName`,
/// `message`, `reason`, `startTime` and `completionTime`; the runner owns `progress`,
/// `stage`, `stages`, `outputs` and `regions`.
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

    /// Pending, Running, Succeeded or Failed. A summary of the conditions for printer
    /// columns; tools should wait on conditions instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

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
}

/// Summary phase of a ClothJob.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
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
