//! `OnnxError`: every way loading or running a model can fail, and how each
//! maps onto the pipeline's [`PipelineError`].

use std::path::PathBuf;

use clothjob_pipeline::{PipelineError, StageName};

/// An error of the ONNX backends, named after the action that failed.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The ONNX Runtime library could not be loaded (missing, not a library,
    /// too old a version).
    #[error(
        "could not load ONNX Runtime from {path}: {reason} (set ORT_DYLIB_PATH to libonnxruntime.so, e.g. the one in the PyPI onnxruntime wheel)"
    )]
    LoadRuntime {
        /// The library that was tried.
        path: PathBuf,
        /// Why it failed.
        reason: String,
    },
    /// The model file could not be read.
    #[error("could not read the ONNX model {path}: {source}")]
    ReadModel {
        /// The model file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a model ONNX Runtime can load (not ONNX, corrupt,
    /// unsupported operators).
    #[error("could not load {path} as an ONNX model: {reason}")]
    ParseModel {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's reason.
        reason: String,
    },
    /// The model loads but its inputs or outputs are not what the backend
    /// needs.
    #[error("the ONNX model {path} does not fit: its {what} should be {expected}, it is {actual}")]
    ModelShape {
        /// The model file.
        path: PathBuf,
        /// Which tensor (`input 0`, `output 0`, …).
        what: String,
        /// What the backend needs, e.g. `float 1x3xHxW`.
        expected: String,
        /// What the model declares or produced.
        actual: String,
    },
    /// The backend was configured with something it cannot use (class names
    /// that do not match the model, an input size of zero).
    #[error("invalid settings for the ONNX model {path}: {reason}")]
    Settings {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// ONNX Runtime failed while running the model.
    #[error("could not run the ONNX model {path}: {reason}")]
    RunModel {
        /// The model file.
        path: PathBuf,
        /// ONNX Runtime's reason.
        reason: String,
    },
}

impl OnnxError {
    /// True when the configuration is at fault (a missing or wrong model, bad
    /// settings): retrying the same job cannot help.
    pub fn is_configuration(&self) -> bool {
        match self {
            Self::ReadModel { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            Self::ParseModel { .. } | Self::ModelShape { .. } | Self::Settings { .. } => true,
            Self::LoadRuntime { .. } | Self::RunModel { .. } => false,
        }
    }

    /// The pipeline's error for this failure in `stage`: a wrong or missing
    /// model is [`PipelineError::InvalidOptions`] (not retryable), a runtime
    /// that cannot be loaded or a model file that cannot be read for another
    /// reason is [`PipelineError::BackendUnavailable`], a failed run
    /// [`PipelineError::Internal`].
    pub fn into_pipeline(self, stage: StageName) -> PipelineError {
        if self.is_configuration() {
            return PipelineError::InvalidOptions(format!("stage {stage}, backend onnx: {self}"));
        }
        match self {
            Self::RunModel { .. } => PipelineError::Internal(self.to_string()),
            other => PipelineError::BackendUnavailable {
                stage,
                backend: "onnx".to_owned(),
                reason: other.to_string(),
            },
        }
    }
}
