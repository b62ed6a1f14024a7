//! Errors of a run, named after the failed action, with the exit code each one maps to.

use clothjob_api::{RunnerFailure, contract};
use clothjob_pipeline::PipelineError;

use crate::writer::ApiCallError;

/// What failed during a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The runner was started without the settings it needs.
    #[error("configuration: {0}")]
    Config(String),
    /// The Kubernetes client could not be set up.
    #[error("talking to the Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Reading the ClothJob or writing its status failed after the retries allowed.
    #[error("talking to the Kubernetes API: {0}")]
    Api(ApiCallError),
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
    /// The runner was told to stop (SIGTERM, SIGINT) before the run ended.
    #[error("interrupted by {0} before the run ended")]
    Interrupted(&'static str),
}

impl From<ApiCallError> for RunError {
    fn from(e: ApiCallError) -> Self {
        match e {
            ApiCallError::Gone(what) => RunError::Gone(what),
            other => RunError::Api(other),
        }
    }
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

    /// Whether another attempt may succeed (the process then exits with
    /// [`contract::EXIT_TRANSIENT`] and the Job retries).
    pub fn is_retryable(&self) -> bool {
        self.exit_code() == contract::EXIT_TRANSIENT
    }

    /// A bounded category for status reasons, Events and metric labels: `InvalidSpec` (the
    /// settings cannot work: a missing key, options the pipeline rejects, a backend that
    /// refuses the key or model), `BadInput` (the photo cannot succeed: not an image, or a
    /// backend refused it, e.g. a safety block; also a ClothJob that is gone or was replaced),
    /// `Interrupted` (SIGTERM/SIGINT), `Transient`, `Backend` (retryable), `Internal`.
    pub fn category(&self) -> &'static str {
        match self {
            RunError::Config(_) => "InvalidSpec",
            RunError::Pipeline(e) if e.category() == "InvalidOptions" => "InvalidSpec",
            RunError::Interrupted(_) => "Interrupted",
            _ if self.is_bad_input() => "BadInput",
            RunError::Kube(_) | RunError::Api(_) => "Transient",
            RunError::FetchSource { .. } | RunError::StoreOutput { .. } => "Transient",
            RunError::Pipeline(_) => "Backend",
            RunError::Gone(_) | RunError::Worker(_) => "Internal",
        }
    }

    /// The process exit code: [`contract::EXIT_INVALID_SPEC`] for `InvalidSpec` and
    /// [`contract::EXIT_BAD_INPUT`] for `BadInput` fail the Job at once; everything else is
    /// [`contract::EXIT_TRANSIENT`] and retried.
    pub fn exit_code(&self) -> i32 {
        match self.category() {
            "InvalidSpec" => contract::EXIT_INVALID_SPEC,
            "BadInput" => contract::EXIT_BAD_INPUT,
            _ => contract::EXIT_TRANSIENT,
        }
    }

    /// The failure as the runner reports it in `status.runnerFailure` and `status.json`.
    pub fn runner_failure(&self) -> RunnerFailure {
        RunnerFailure {
            reason: self.category().to_string(),
            message: self.to_string(),
            retryable: self.is_retryable(),
        }
    }

    /// The termination message the kubelet hands to the pod status: `<Category>: <message>`.
    pub fn termination_message(&self) -> String {
        format!("{}: {self}", self.category())
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
        assert!(!refused.is_retryable());
        assert!(refused.to_string().contains("IMAGE_SAFETY"), "{refused}");
        let busy = backend_failed(true);
        assert_eq!(busy.category(), "Backend");
        assert_eq!(busy.exit_code(), contract::EXIT_TRANSIENT);
        assert!(busy.is_retryable());
    }

    #[test]
    fn an_invalid_spec_exits_with_its_own_code() {
        let e = RunError::Pipeline(PipelineError::InvalidOptions("bad key".into()));
        assert_eq!(e.category(), "InvalidSpec");
        assert_eq!(e.exit_code(), contract::EXIT_INVALID_SPEC);
        let e = RunError::Config("environment variable CLOTHJOB_NAME is not set".into());
        assert_eq!(e.category(), "InvalidSpec");
        assert_eq!(e.exit_code(), contract::EXIT_INVALID_SPEC);
        assert_eq!(
            e.termination_message(),
            "InvalidSpec: configuration: environment variable CLOTHJOB_NAME is not set"
        );
        let e = RunError::Pipeline(PipelineError::EmptyInput);
        assert_eq!(e.category(), "BadInput");
        assert_eq!(e.exit_code(), contract::EXIT_BAD_INPUT);
        assert_ne!(contract::EXIT_INVALID_SPEC, contract::EXIT_BAD_INPUT);
    }

    #[test]
    fn an_interruption_and_an_unavailable_apiserver_are_retried() {
        let e = RunError::Interrupted("SIGTERM");
        assert_eq!(e.category(), "Interrupted");
        assert_eq!(e.exit_code(), contract::EXIT_TRANSIENT);
        assert_eq!(
            e.termination_message(),
            "Interrupted: interrupted by SIGTERM before the run ended"
        );
        let e = RunError::from(ApiCallError::Unavailable {
            what: "writing the status".into(),
            attempts: 12,
            secs: 120,
            last: "connection refused".into(),
        });
        assert_eq!(e.category(), "Transient");
        assert_eq!(e.exit_code(), contract::EXIT_TRANSIENT);
    }

    #[test]
    fn a_gone_or_replaced_clothjob_is_terminal() {
        let e = RunError::from(ApiCallError::Gone(
            "ns/a was replaced by a new object".into(),
        ));
        assert!(matches!(e, RunError::Gone(_)), "{e:?}");
        assert!(!e.is_retryable());
        assert_eq!(e.exit_code(), contract::EXIT_BAD_INPUT);
    }
}
