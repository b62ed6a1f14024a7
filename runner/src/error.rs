//! Errors of a run, named after the failed action, with the exit code each one maps to.

use clothjob_api::contract;
use clothjob_pipeline::PipelineError;

/// What failed during a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runner was started without the settings it needs.
    #[error("configuration: {0}")]
    Config(String),
    /// The ClothJob could not be read or its status written.
    #[error("talking to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The ClothJob this runner was made for is gone or was replaced.
    #[error("ClothJob {0}")]
    Gone(String),
    /// Fetching the source photo failed; `retryable` tells whether trying again may help.
    #[error("fetching the source {what}: {detail}")]
    FetchSource {
        what: String,
        detail: String,
        retryable: bool,
    },
    /// The pipeline failed (decode, a stage, encoding).
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// Writing an output failed.
    #[error("storing output {name}: {detail}")]
    StoreOutput { name: String, detail: String },
    /// A worker thread of the pipeline died.
    #[error("pipeline worker: {0}")]
    Worker(String),
}

impl RunError {
    /// Whether the input can never succeed, so that retrying is pointless.
    pub fn is_bad_input(&self) -> bool {
        match self {
            RunError::FetchSource { retryable, .. } => !retryable,
            RunError::Pipeline(e) => e.is_bad_input(),
            RunError::Gone(_) | RunError::Config(_) => true,
            _ => false,
        }
    }

    /// A bounded category for status reasons, Events and metric labels: `InvalidSpec` (the
    /// settings cannot work: a missing key, options the pipeline rejects, a backend that
    /// refuses the key or model), `BadInput` (the photo cannot succeed: not an image, or a
    /// backend refused it, e.g. a safety block), `Transient`, `Backend` (retryable), `Internal`.
    pub fn category(&self) -> &'static str {
        match self {
            RunError::Config(_) => "InvalidSpec",
            RunError::Pipeline(e) if e.category() == "InvalidOptions" => "InvalidSpec",
            _ if self.is_bad_input() => "BadInput",
            RunError::Kube(_) => "Transient",
            RunError::FetchSource { .. } | RunError::StoreOutput { .. } => "Transient",
            RunError::Pipeline(_) => "Backend",
            RunError::Gone(_) | RunError::Worker(_) => "Internal",
        }
    }

    /// The process exit code: the bad-input code fails the Job at once, others are retried.
    pub fn exit_code(&self) -> i32 {
        if self.is_bad_input() {
            contract::EXIT_BAD_INPUT
        } else {
            contract::EXIT_TRANSIENT
        }
    }
}

#[cfg(test)]
mod tests {
    use clothjob_pipeline::StageName;

    use super::*;

    fn backend_failed(retryable: bool) -> RunError {
        RunError::Pipeline(PipelineError::Stage {
            stage: StageName::Expansion,
            source: Box::new(PipelineError::BackendFailed {
                stage: StageName::Expansion,
                backend: "gemini".into(),
                reason: "Gemini returned no image: blocked (IMAGE_SAFETY)".into(),
                retryable,
            }),
        })
    }

    #[test]
    fn a_refused_input_fails_at_once_and_a_busy_backend_is_retried() {
        let refused = backend_failed(false);
        assert_eq!(refused.category(), "BadInput");
        assert_eq!(refused.exit_code(), contract::EXIT_BAD_INPUT);
        assert!(refused.to_string().contains("IMAGE_SAFETY"), "{refused}");
        let busy = backend_failed(true);
        assert_eq!(busy.category(), "Backend");
        assert_eq!(busy.exit_code(), contract::EXIT_TRANSIENT);
    }

    #[test]
    fn options_the_pipeline_rejects_are_an_invalid_spec() {
        let e = RunError::Pipeline(PipelineError::InvalidOptions("bad key".into()));
        assert_eq!(e.category(), "InvalidSpec");
        assert_eq!(e.exit_code(), contract::EXIT_BAD_INPUT);
        let e = RunError::Pipeline(PipelineError::EmptyInput);
        assert_eq!(e.category(), "BadInput");
    }
}
