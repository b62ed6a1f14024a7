//! `ClothJob.spec`: the source photo, where outputs go, the pipeline stages and the runner pod.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
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
    /// Kubernetes Job and pods with it, are deleted. Kept forever when unset. The outputs stay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ttl_seconds_after_finished: Option<i32>,

    /// Settings of the runner pod.
    #[serde(default)]
    pub runner: RunnerSpec,
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
    /// `<uri>/<namespace>/<name>/<role>.<ext>`.
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
    /// U2Net-family model run in process) or `remote` (an HTTP service speaking rembg's API).
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

/// Settings of the runner pod.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunnerSpec {
    /// Container image of the runner. Defaults to the operator's configured runner image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Image pull policy (Always, IfNotPresent, Never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Compute resources of the runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node selector of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the runner pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Service account of the runner pod. Defaults to the operator's configured runner
    /// service account, which may patch ClothJob status and nothing more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment variables of the runner container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Extra volumes of the runner pod (core/v1 Volume objects), for example the volume a
    /// `file://` source or output lives on, or a volume holding ONNX models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::free_form_list")]
    pub volumes: Option<Vec<serde_json::Value>>,
    /// Mounts of those volumes into the runner container (core/v1 VolumeMount objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::free_form_list")]
    pub volume_mounts: Option<Vec<serde_json::Value>>,
}

/// Schema of a list of objects validated by the apiserver where they are used (volumes and
/// mounts are checked when the Job's pod template is created), kept free-form here so the
/// CRD stays small.
pub(crate) fn free_form_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "type": "object", "x-kubernetes-preserve-unknown-fields": true }
    })
}
