//! `ClothJob.spec`: the source photo, where outputs go, the pipeline stages and the runner pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    CSIVolumeSource, ConfigMapKeySelector, ConfigMapVolumeSource, EmptyDirVolumeSource,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, ResourceRequirements,
    SecretKeySelector, SecretVolumeSource, Toleration,
};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::status::ClothJobStatus;

/// A request to turn one photo of a garment into catalog-ready images.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "closetconnect.io",
    version = "v1alpha1",
    kind = "ClothJob",
    plural = "clothjobs",
    singular = "clothjob",
    shortname = "cloth",
    category = "all",
    namespaced,
    doc = "A request to turn one photo of a garment into catalog-ready images: the operator runs it as a Kubernetes Job and reports weighted progress, stage timings and output locations in its status.",
    status = "ClothJobStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Queue","type":"integer","jsonPath":".status.queuePosition","description":"Place in the operator's queue while Queued (1 starts next)"}"#,
    printcolumn = r#"{"name":"Progress","type":"integer","jsonPath":".status.progress","description":"Weighted progress in percent (0-100)"}"#,
    printcolumn = r#"{"name":"Stage","type":"string","jsonPath":".status.stage"}"#,
    printcolumn = r#"{"name":"Attempts","type":"integer","jsonPath":".status.attempts"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClothJobSpec {
    /// The photo to process: exactly one of `url`, `uri`, `secretRef` or `configMapRef`.
    /// Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.source is immutable: create a new ClothJob"))]
    pub source: Source,

    /// Where the output images are written, and how they are encoded. Immutable.
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.output is immutable: create a new ClothJob"))]
    pub output: Output,

    /// Which pipeline stages run and with which backend. Every stage is enabled with its
    /// `builtin` backend when left out.
    #[serde(default)]
    pub pipeline: Pipeline,

    /// Attempts after the first one when the runner fails for a transient reason (network,
    /// object store, a crashed pod). A bad input is never retried. Default 2.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: i32,

    /// Wall-clock limit in seconds for the whole job, over all attempts; the job fails with
    /// reason DeadlineExceeded when it is reached. No limit when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,

    /// Seconds after the job finished (succeeded or failed) after which the ClothJob, and its
    /// Kubernetes Job and pods with it, are deleted. When unset, the operator's default applies
    /// (`--default-ttl-seconds-after-finished`, 6 hours unless configured; 0 there keeps
    /// finished ClothJobs forever). The outputs stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Settings of the runner pod.
    #[serde(default)]
    pub runner: RunnerSpec,

    /// Cancels the job: once true, the operator stops the runner (deletes its Job and with it
    /// the pods) and the ClothJob ends Failed with reason `Cancelled`. A ClothJob that already
    /// finished stays as it is. Cannot be set back to false. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("spec.cancel cannot be undone: create a new ClothJob (kubectl clothjob retry)"))]
    pub cancel: bool,

    /// Order in the operator's queue when its concurrency limits hold jobs back: higher
    /// first, then the oldest. Default 0; may be negative.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i32,

    /// Kueue LocalQueue to submit the runner Job to (the same as the ClothJob label
    /// `kueue.x-k8s.io/queue-name`, which wins when both are set). The Job is created
    /// suspended with that label, Kueue admits it under its quotas, and the operator's own
    /// concurrency limits do not apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_name: Option<String>,

    /// Whether this job may take the outputs of an identical one instead of running the
    /// pipeline: same source bytes (sha256), same pipeline and output settings, same
    /// namespace, succeeded within the operator's reuse window (or still running: then this
    /// one waits for it). Default `IfIdentical`; `Never` always runs the pipeline.
    #[serde(default, skip_serializing_if = "ReusePolicy::is_default")]
    pub reuse: ReusePolicy,
}

/// Whether a ClothJob may reuse the outputs of an identical one.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ReusePolicy {
    /// Reuse the outputs of an identical succeeded job of the same namespace, or wait for an
    /// identical one that is running, instead of running the pipeline again.
    #[default]
    IfIdentical,
    /// Always run the pipeline (for example to compare a new Gemini answer).
    Never,
}

impl ReusePolicy {
    fn is_default(&self) -> bool {
        *self == ReusePolicy::IfIdentical
    }
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn default_retries() -> i32 {
    2
}

/// Where the photo comes from. Exactly one field must be set.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.url), has(self.uri), has(self.secretRef), has(self.configMapRef)].filter(x, x).size() == 1").message("exactly one of url, uri, secretRef or configMapRef must be set"))]
pub struct Source {
    /// An http:// or https:// URL the runner downloads the photo from (with a time-out and a
    /// size cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("url must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: Option<String>,

    /// An object-store URI: `s3://bucket/key`, `gs://bucket/key`, or `file:///path` for a file
    /// on a volume mounted into the runner (see `runner.volumes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^(s3|gs)://[^/]+/.+') || self.matches('^file:///.+')").message("uri must be s3://bucket/key, gs://bucket/key or file:///path"))]
    #[schemars(length(max = 1024))]
    pub uri: Option<String>,

    /// A key of a Secret in the ClothJob's namespace holding the photo's bytes. The Secret is
    /// mounted into the runner pod; the runner itself is not allowed to read Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<KeyRef>,

    /// A key (in `binaryData` or `data`) of a ConfigMap in the ClothJob's namespace holding
    /// the photo's bytes. The ConfigMap is mounted into the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap in the ClothJob's namespace.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key holding the bytes.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Where outputs go and how they are encoded.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// Prefix the outputs are written under: `s3://bucket/prefix/`, `gs://bucket/prefix/` or
    /// `file:///path/` (a volume mounted into the runner). Each output is stored as
    /// `<uri>/<namespace>/<name>/<uid>/<role>.<ext>` (the ClothJob's uid, so a re-created
    /// ClothJob of the same name never overwrites its predecessor's outputs).
    #[x_kube(validation = Rule::new("self.matches('^(s3|gs)://[^/]+(/.*)?$') || self.matches('^file:///.*')").message("output.uri must be s3://bucket/prefix, gs://bucket/prefix or file:///path"))]
    #[schemars(length(max = 1024))]
    pub uri: String,

    /// Longest side of the encoded images in pixels; larger images are downscaled with
    /// Lanczos3 keeping their aspect ratio, smaller ones are never upscaled. Default 1024.
    #[serde(default = "default_max_side")]
    #[schemars(range(min = 64, max = 8192))]
    pub max_side: i32,

    /// JPEG quality (1-100) of opaque outputs; outputs with transparency, masks and label maps
    /// are lossless PNG. Default 85.
    #[serde(default = "default_jpeg_quality")]
    #[schemars(range(min = 1, max = 100))]
    pub jpeg_quality: i32,

    /// Name of a Secret in the ClothJob's namespace whose keys become environment variables
    /// of the runner for s3:// and gs:// access (for example AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT, AWS_ALLOW_HTTP,
    /// GOOGLE_SERVICE_ACCOUNT). Also used for an object-store `source.uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub credentials_secret_name: Option<String>,
}

fn default_max_side() -> i32 {
    1024
}

fn default_jpeg_quality() -> i32 {
    85
}

/// The pipeline's stages and their backends.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    /// Background removal: an alpha mask and the cut-out (outputs `cutout`, `mask`).
    #[serde(default)]
    pub background_removal: BackgroundRemovalStage,
    /// Garment segmentation: a label map, regions and dominant colours (output `segments`).
    #[serde(default)]
    pub segmentation: SegmentationStage,
    /// Expansion to catalog canvases (outputs `garment`, `catalog`, `square`).
    #[serde(default)]
    pub expansion: ExpansionStage,
    /// Encoding of the outputs (output `original` plus the other stages' images).
    #[serde(default)]
    pub encoding: EncodingStage,
}

fn default_true() -> bool {
    true
}

/// Background removal settings.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backend != 'onnx' || has(self.onnx)").message("backgroundRemoval.onnx is required when backend is onnx"))]
#[x_kube(validation = Rule::new("self.backend != 'remote' || has(self.remote)").message("backgroundRemoval.remote is required when backend is remote"))]
pub struct BackgroundRemovalStage {
    /// Whether the stage runs. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `builtin` (no model: for garments on a plain or studio background), `onnx` (a
    /// U2Net-family model run in process), `remote` (an HTTP service speaking rembg's API)
    /// or `auto` (builtin first; where its confidence says the photo is not a plain-backdrop
    /// case, the `onnx` model when `onnx` is set, else the builtin mask is kept; the stage
    /// reports the backend that made the mask and why).
    #[serde(default)]
    pub backend: BackgroundRemovalBackend,
    /// Options of the `onnx` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxModel>,
    /// Options of the `remote` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteRemover>,
}

impl Default for BackgroundRemovalStage {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: BackgroundRemovalBackend::default(),
            onnx: None,
            remote: None,
        }
    }
}

/// Backends of the background removal stage.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum BackgroundRemovalBackend {
    // Classical removal for plain or studio backgrounds; no model, no network.
    #[default]
    Builtin,
    // A U2Net-family ONNX model (u2net, u2netp, isnet, ...) run in process.
    Onnx,
    // An HTTP service that speaks rembg's server API (`POST /api/remove`).
    Remote,
    // Builtin first, the `onnx` model where the builtin remover's confidence is low.
    // (Plain `//` comments: schemars turns doc comments on unit variants into a `oneOf`
    // of described constants instead of the `enum` list kubectl explain shows.)
    Auto,
}

/// An ONNX model file.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OnnxModel {
    /// Where the model is: a path on a mounted volume (`file:///models/u2netp.onnx` or
    /// `/models/u2netp.onnx`) or an https URL fetched once and cached.
    #[schemars(length(min = 1, max = 2048))]
    pub model_uri: String,
    /// Expected sha256 (hex) of the model file; checked before loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-f]{64}$')").message("sha256 must be 64 lowercase hex digits"))]
    #[schemars(length(max = 64))]
    pub sha256: Option<String>,
    /// Model family, which decides pre- and post-processing (for example u2netp, u2net,
    /// isnet-general-use, u2net_cloth_seg). Default u2netp for background removal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub model: Option<String>,
}

/// A remote background remover speaking rembg's HTTP API.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRemover {
    /// Base URL of the service, for example `http://rembg.tools.svc:7000`.
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("remote.url must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Model the service should use (rembg's `model` form field). Default u2net.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub model: Option<String>,
    /// Whether the service applies alpha matting (rembg's `a` form field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_matting: Option<bool>,
    /// Request time-out in seconds. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// Segmentation settings.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backend != 'onnx' || has(self.onnx)").message("segmentation.onnx is required when backend is onnx"))]
pub struct SegmentationStage {
    /// Whether the stage runs. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `builtin` (regions from the mask and colour clusters) or `onnx` (a clothing
    /// segmentation model with N classes).
    #[serde(default)]
    pub backend: SegmentationBackend,
    /// Options of the `onnx` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onnx: Option<OnnxModel>,
}

impl Default for SegmentationStage {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: SegmentationBackend::default(),
            onnx: None,
        }
    }
}

/// Backends of the segmentation stage.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum SegmentationBackend {
    // Regions from the mask's components and colour clusters in Lab.
    #[default]
    Builtin,
    // A clothing-segmentation ONNX model (background/upper/lower/full layout).
    Onnx,
}

/// Expansion settings.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.backend != 'gemini' || has(self.gemini)").message("expansion.gemini is required when backend is gemini"))]
pub struct ExpansionStage {
    /// Whether the stage runs. Default true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `builtin` (centre the trimmed garment on a clean canvas with a soft shadow) or
    /// `gemini` (outpainting with Google Gemini's generateContent API).
    #[serde(default)]
    pub backend: ExpansionBackend,
    /// Background colour of the catalog canvases as `#RRGGBB`. Default `#FFFFFF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^#[0-9A-Fa-f]{6}$')").message("background must be #RRGGBB"))]
    #[schemars(length(max = 7))]
    pub background: Option<String>,
    /// Options of the `gemini` backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gemini: Option<GeminiExpansion>,
}

impl Default for ExpansionStage {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: ExpansionBackend::default(),
            background: None,
            gemini: None,
        }
    }
}

/// Backends of the expansion stage.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum ExpansionBackend {
    // Local compositing, no network.
    #[default]
    Builtin,
    // Google Gemini `generateContent` with image output.
    Gemini,
}

/// Gemini outpainting options.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GeminiExpansion {
    /// Model name, for example `gemini-2.5-flash-image`.
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// The Secret key holding the API key; given to the runner as an environment variable.
    pub api_key_secret_ref: KeyRef,
    /// Base URL of the API. Default `https://generativelanguage.googleapis.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/?#]+')").message("gemini.endpoint must be an http:// or https:// URL"))]
    #[schemars(length(max = 2048))]
    pub endpoint: Option<String>,
    /// Extra instructions appended to the built-in prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4000))]
    pub prompt: Option<String>,
    /// Total time cap in seconds for the stage, retries included. Default 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: Option<i32>,
}

/// Encoding settings.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EncodingStage {
    /// Whether the stage runs. Default true. When false, no outputs are written.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `builtin`: Lanczos3 downscale, JPEG when opaque, optimised PNG when transparent.
    #[serde(default)]
    pub backend: EncodingBackend,
}

impl Default for EncodingStage {
    fn default() -> Self {
        Self {
            enabled: true,
            backend: EncodingBackend::default(),
        }
    }
}

/// Backends of the encoding stage.
#[derive(
    schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum EncodingBackend {
    // The original worker's decisions, in parallel.
    #[default]
    Builtin,
}

/// Settings of the runner pod. The pod itself is under the operator's policy: the image and
/// the service account come from allow-lists in the operator's configuration, volumes are
/// limited to configMap, secret, emptyDir, persistentVolumeClaim and read-only csi, and the
/// operator's own paths and environment variables cannot be overridden.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.volumeMounts) || self.volumeMounts.all(m, has(self.volumes) && self.volumes.exists(v, v.name == m.name))").message("every runner.volumeMounts entry must name one of runner.volumes"))]
pub struct RunnerSpec {
    /// Container image of the runner. Defaults to the operator's configured runner image; any
    /// other image must be listed in the operator's `--allowed-runner-images` (Helm value
    /// `allowedRunnerImages`), else the ClothJob fails with reason InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Image pull policy of the runner container: Always, IfNotPresent or Never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Compute resources of the runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Service account of the runner pod. By default each ClothJob gets its own service
    /// account (`clothjob-runner-<job>`), which may read only this ClothJob and patch only its
    /// status. Another one must be listed in the operator's `--allowed-runner-service-accounts`
    /// (Helm value `allowedRunnerServiceAccounts`), else the ClothJob fails with reason
    /// InvalidSpec; it is then granted the same per-job access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("runner.serviceAccountName must be a valid service account name"))]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,
    /// Extra environment variables of the runner container: a literal `value` or a `valueFrom`
    /// (configMapKeyRef, secretKeyRef of the ClothJob's namespace, or fieldRef). Names of the
    /// operator's own variables (CLOTHJOB_*, GEMINI_API_KEY, POD_NAME, TMPDIR, HOME) and of
    /// the dynamic loader (LD_*, ORT_DYLIB_PATH) are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub env: Option<Vec<RunnerEnvVar>>,
    /// Extra volumes of the runner pod, for example the volume a `file://` source or output
    /// lives on, or a volume holding ONNX models: each has a `name` and exactly one of
    /// `configMap`, `secret`, `emptyDir`, `persistentVolumeClaim` or `csi` (read-only). No
    /// hostPath or other host volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub volumes: Option<Vec<RunnerVolume>>,
    /// Mounts of those volumes into the runner container. Not at, under or above the
    /// operator's own paths (/tmp, /var/run/clothjob, /var/run/secrets, /dev).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub volume_mounts: Option<Vec<RunnerVolumeMount>>,
}

/// Image pull policy of the runner container.
#[derive(schemars::JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    // Pull the image every time the pod starts.
    Always,
    // Pull only when the node does not have the image.
    IfNotPresent,
    // Never pull: the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The policy as Kubernetes writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Environment variable names the operator sets itself or that change how the runner's code
/// is loaded; a ClothJob may not set them (`CLOTHJOB_` and `LD_` are prefixes).
pub const RESERVED_ENV_NAMES: &[&str] = &[
    "GEMINI_API_KEY",
    "POD_NAME",
    "TMPDIR",
    "HOME",
    "ORT_DYLIB_PATH",
];
/// Prefixes of environment variable names a ClothJob may not set.
pub const RESERVED_ENV_PREFIXES: &[&str] = &["CLOTHJOB_", "LD_"];

/// An environment variable of the runner container.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.value) && has(self.valueFrom))").message("a runner.env entry has either value or valueFrom, not both"))]
pub struct RunnerEnvVar {
    /// Name of the variable. Not CLOTHJOB_*, LD_*, GEMINI_API_KEY, POD_NAME, TMPDIR, HOME or
    /// ORT_DYLIB_PATH (set by the operator, or deciding what code the runner loads).
    #[x_kube(validation = Rule::new("!self.startsWith('CLOTHJOB_') && !self.startsWith('LD_') && !(self in ['GEMINI_API_KEY', 'POD_NAME', 'TMPDIR', 'HOME', 'ORT_DYLIB_PATH'])").message("runner.env may not set CLOTHJOB_*, LD_*, GEMINI_API_KEY, POD_NAME, TMPDIR, HOME or ORT_DYLIB_PATH: the operator sets them"))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$')").message("runner.env names are letters, digits, '_', '-' and '.', not starting with a digit"))]
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub value: Option<String>,
    /// Where the value comes from instead: exactly one of configMapKeyRef, secretKeyRef or
    /// fieldRef.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_from: Option<RunnerEnvVarSource>,
}

/// The source of a runner environment variable's value.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.configMapKeyRef), has(self.secretKeyRef), has(self.fieldRef)].filter(x, x).size() == 1").message("runner.env valueFrom needs exactly one of configMapKeyRef, secretKeyRef or fieldRef"))]
pub struct RunnerEnvVarSource {
    /// A key of a ConfigMap in the ClothJob's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKeySelector>,
    /// A key of a Secret in the ClothJob's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
    /// A field of the runner pod (for example `metadata.namespace` or `spec.nodeName`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_ref: Option<ObjectFieldSelector>,
}

/// A volume of the runner pod: a name and exactly one of the allowed sources.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.configMap), has(self.secret), has(self.emptyDir), has(self.persistentVolumeClaim), has(self.csi)].filter(x, x).size() == 1").message("a runner volume needs exactly one of configMap, secret, emptyDir, persistentVolumeClaim or csi (hostPath and other sources are not allowed)"))]
#[x_kube(validation = Rule::new("!has(self.csi) || (has(self.csi.readOnly) && self.csi.readOnly)").message("a csi runner volume must be readOnly: true"))]
pub struct RunnerVolume {
    /// Name of the volume, referred to by `volumeMounts`. Names starting with `clothjob-` are
    /// the operator's.
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("runner volume names are DNS labels (lowercase letters, digits and '-')"))]
    #[x_kube(validation = Rule::new("!self.startsWith('clothjob-')").message("runner volume names starting with clothjob- are the operator's"))]
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// A ConfigMap of the ClothJob's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapVolumeSource>,
    /// A Secret of the ClothJob's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretVolumeSource>,
    /// A scratch directory that lives as long as the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirVolumeSource>,
    /// A PersistentVolumeClaim of the ClothJob's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
    /// A CSI volume (for example a secrets-store or object-store driver); must be read-only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csi: Option<CSIVolumeSource>,
}

/// The operator's own paths in the runner container, which no volume may be mounted at, under
/// or above (`/run` is where `/var/run` points in the runner image).
pub const RESERVED_MOUNT_PATHS: &[&str] = &[
    "/tmp",
    "/var/run/clothjob",
    "/var/run/secrets",
    "/run/clothjob",
    "/run/secrets",
    "/dev",
];

/// A mount of one of the runner's volumes.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerVolumeMount {
    /// Name of the volume (one of `runner.volumes`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Absolute path in the runner container, without `.` or `..` parts and without a
    /// trailing `/`. Not at, under or above /tmp, /var/run/clothjob, /var/run/secrets, /dev.
    #[x_kube(validation = Rule::new("self.matches('^(/[^/]+)+$') && !self.matches('(^|/)[.][.]?(/|$)')").message("mountPath must be an absolute path without '.' or '..' parts or a trailing '/'"))]
    #[x_kube(validation = Rule::new("!['/tmp', '/var/run/clothjob', '/var/run/secrets', '/run/clothjob', '/run/secrets', '/dev'].exists(p, self == p || self.startsWith(p + '/') || p.startsWith(self + '/'))").message("mountPath may not be at, under or above the operator's paths /tmp, /var/run/clothjob, /var/run/secrets and /dev"))]
    #[schemars(length(min = 2, max = 1024))]
    pub mount_path: String,
    /// Mount read-only. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// Path within the volume to mount instead of its root: relative, without `..` parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.startsWith('/') && !self.matches('(^|/)[.][.](/|$)')").message("subPath must be a relative path without '..' parts"))]
    #[schemars(length(max = 1024))]
    pub sub_path: Option<String>,
}

/// Whether a runner environment variable name is reserved for the operator.
pub fn is_reserved_env_name(name: &str) -> bool {
    RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p)) || RESERVED_ENV_NAMES.contains(&name)
}

/// Whether a mount path is at, under or above one of [`RESERVED_MOUNT_PATHS`].
pub fn is_reserved_mount_path(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let path = if path.is_empty() { "/" } else { path };
    RESERVED_MOUNT_PATHS.iter().any(|p| {
        path == *p
            || path.starts_with(&format!("{p}/"))
            || path == "/"
            || p.starts_with(&format!("{path}/"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CEL rules in the CRD name the same reserved names and paths as the operator's own
    /// check (the lists above), so the two cannot drift.
    #[test]
    fn cel_rules_use_the_reserved_lists() {
        let crd = serde_json::to_string(&<ClothJob as kube::CustomResourceExt>::crd()).unwrap();
        let quoted = |xs: &[&str]| {
            xs.iter()
                .map(|x| format!("'{x}'"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let env_rule = format!(
            "{} && !(self in [{}])",
            RESERVED_ENV_PREFIXES
                .iter()
                .map(|p| format!("!self.startsWith('{p}')"))
                .collect::<Vec<_>>()
                .join(" && "),
            quoted(RESERVED_ENV_NAMES)
        );
        assert!(crd.contains(&env_rule), "the CRD lacks {env_rule}");
        let mount_rule = format!("[{}].exists(p, ", quoted(RESERVED_MOUNT_PATHS));
        assert!(crd.contains(&mount_rule), "the CRD lacks {mount_rule}");
    }

    #[test]
    fn reserved_names_and_paths() {
        for n in [
            "CLOTHJOB_UID",
            "CLOTHJOB_X",
            "LD_PRELOAD",
            "HOME",
            "TMPDIR",
            "POD_NAME",
        ] {
            assert!(is_reserved_env_name(n), "{n}");
        }
        for n in ["AWS_REGION", "RUST_LOG", "CLOTHJOB", "HOMEDIR"] {
            assert!(!is_reserved_env_name(n), "{n}");
        }
        for p in [
            "/tmp",
            "/tmp/",
            "/tmp/x",
            "/var",
            "/var/run",
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/dev",
            "/dev/termination-log",
            "/",
            "/run",
        ] {
            assert!(is_reserved_mount_path(p), "{p}");
        }
        for p in ["/models", "/data/out", "/tmpx", "/var/lib/x", "/devices"] {
            assert!(!is_reserved_mount_path(p), "{p}");
        }
    }

    #[test]
    fn runner_spec_round_trips_typed_volumes_and_env() {
        let yaml = "image: r:1\nimagePullPolicy: Never\nenv: [{name: A, value: b}, {name: C, valueFrom: {secretKeyRef: {name: s, key: k}}}]\nvolumes: [{name: m, persistentVolumeClaim: {claimName: models, readOnly: true}}, {name: c, csi: {driver: d, readOnly: true}}]\nvolumeMounts: [{name: m, mountPath: /models, readOnly: true, subPath: u2net}]\n";
        let r: RunnerSpec = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(r.image_pull_policy, Some(PullPolicy::Never));
        let volumes = r.volumes.as_ref().unwrap();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "models"
        );
        assert_eq!(volumes[1].csi.as_ref().unwrap().read_only, Some(true));
        let back: RunnerSpec = serde_yaml::from_value(serde_yaml::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        // An unknown source (hostPath) is not part of the type: it is dropped, as the
        // apiserver prunes it, and the volume is then left without a source.
        let v: RunnerVolume = serde_yaml::from_str("{name: h, hostPath: {path: /}}").unwrap();
        assert_eq!(
            v,
            RunnerVolume {
                name: "h".into(),
                ..Default::default()
            }
        );
    }
}
