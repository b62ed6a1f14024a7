//! `PipelineError`: every way a run can fail, named after the failed action.

use crate::progress::StageName;

/// An error of the pipeline. Each variant is named after the action that failed.
///
/// [`PipelineError::is_bad_input`] tells whether a retry can never succeed (the
/// input or the options are at fault); [`PipelineError::category`] gives a small,
/// bounded label for metrics and Kubernetes Event reasons.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The input has no bytes at all.
    #[error("the input is empty")]
    EmptyInput,
    /// The input is over one of the [`crate::Limits`] (bytes, pixels): a
    /// decompression bomb or simply too big a photo.
    #[error("the input is too large: {what} is {actual}, the limit is {limit}")]
    TooLarge {
        /// What was measured: `"bytes"`, `"pixels"` or `"decoder memory (bytes)"`
        /// (then `actual` is only known to be over `limit`).
        what: &'static str,
        /// The measured value.
        actual: u64,
        /// The limit it broke.
        limit: u64,
    },
    /// The bytes are not an image in a format the pipeline reads
    /// (JPEG, PNG, WebP, GIF).
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    /// The bytes look like a supported image but could not be decoded
    /// (truncated, corrupt).
    #[error("could not decode the image: {0}")]
    Decode(String),
    /// An output could not be encoded.
    #[error("could not encode output {role}: {detail}")]
    Encode {
        /// The role of the output (`original`, `catalog`, …).
        role: String,
        /// What went wrong.
        detail: String,
    },
    /// The selected backend of a stage is not available in this build or
    /// environment (e.g. `onnx`, `remote` before they are wired in).
    #[error("backend {backend} of stage {stage} is unavailable: {reason}")]
    BackendUnavailable {
        /// The stage whose backend was asked for.
        stage: StageName,
        /// The backend's name.
        backend: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A backend (a network service, a model) was reached but failed the
    /// work: it refused the input (a safety block, an image it cannot use) or
    /// stayed busy, down or slow past its retries. `retryable` tells which.
    /// (The message leaves the stage to the [`PipelineError::Stage`] around it.)
    #[error("backend {backend} failed: {reason}")]
    BackendFailed {
        /// The stage whose backend failed.
        stage: StageName,
        /// The backend's name (`gemini`, …).
        backend: String,
        /// What went wrong, with the backend's own reason (`IMAGE_SAFETY`,
        /// `HTTP 503 UNAVAILABLE`, …).
        reason: String,
        /// True when the same request may succeed later (busy, down, time-out);
        /// false when the backend refused this input and always will.
        retryable: bool,
    },
    /// The options cannot work (a zero aspect ratio, a zero max side, …).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// A stage failed; `source` says how.
    #[error("stage {stage} failed: {source}")]
    Stage {
        /// The stage that failed.
        stage: StageName,
        /// The underlying error.
        #[source]
        source: Box<PipelineError>,
    },
    /// A bug or an unexpected state inside the pipeline.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PipelineError {
    /// True when the same input (with the same options) can never succeed, so a
    /// retry is pointless: not an image, truncated or corrupt, over the limits,
    /// options that cannot work, or a backend that refused the input.
    pub fn is_bad_input(&self) -> bool {
        match self {
            Self::EmptyInput
            | Self::TooLarge { .. }
            | Self::UnsupportedFormat(_)
            | Self::Decode(_)
            | Self::InvalidOptions(_) => true,
            Self::Stage { source, .. } => source.is_bad_input(),
            Self::BackendFailed { retryable, .. } => !retryable,
            Self::Encode { .. } | Self::BackendUnavailable { .. } | Self::Internal(_) => false,
        }
    }

    /// A small bounded label for metrics and Event reasons: one of
    /// `"BadInput"`, `"InvalidOptions"`, `"Backend"`, `"Internal"`. A backend
    /// that refused the input is `BadInput`; one that failed retryably `Backend`.
    pub fn category(&self) -> &'static str {
        match self {
            Self::EmptyInput
            | Self::TooLarge { .. }
            | Self::UnsupportedFormat(_)
            | Self::Decode(_) => "BadInput",
            Self::InvalidOptions(_) => "InvalidOptions",
            Self::BackendUnavailable { .. } => "Backend",
            Self::BackendFailed { retryable, .. } => {
                if *retryable {
                    "Backend"
                } else {
                    "BadInput"
                }
            }
            Self::Stage { source, .. } => source.category(),
            Self::Encode { .. } | Self::Internal(_) => "Internal",
        }
    }

    /// Wraps `self` as the failure of `stage` (unless it already names a stage).
    pub(crate) fn in_stage(self, stage: StageName) -> Self {
        match self {
            Self::Stage { .. } => self,
            other => Self::Stage {
                stage,
                source: Box::new(other),
            },
        }
    }
}
