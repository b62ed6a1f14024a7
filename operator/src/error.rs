//! Errors of the reconciler, named after the action that failed.

/// What went wrong while reconciling one ClothJob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the Job or pods of a ClothJob failed.
    #[error("observing {what}: {source}")]
    Observe {
        what: &'static str,
        source: kube::Error,
    },
    /// Creating the runner Job failed.
    #[error("creating Job {name}: {source}")]
    CreateJob { name: String, source: kube::Error },
    /// Keeping the runner service account or its RoleBinding failed.
    #[error("ensuring runner RBAC in {namespace}: {source}")]
    EnsureRunnerAccess {
        namespace: String,
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("applying status: {0}")]
    ApplyStatus(kube::Error),
    /// Deleting a finished ClothJob after its TTL failed.
    #[error("deleting expired ClothJob: {0}")]
    DeleteExpired(kube::Error),
    /// Serializing an object failed.
    #[error("serializing {what}: {source}")]
    Serialize {
        what: &'static str,
        source: serde_json::Error,
    },
    /// The object lacks a namespace, name or uid.
    #[error("ClothJob has no {0}")]
    MissingMetadata(&'static str),
}

impl Error {
    /// A bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "Observe",
            Error::CreateJob { .. } => "CreateJob",
            Error::EnsureRunnerAccess { .. } => "RunnerAccess",
            Error::ApplyStatus(_) => "ApplyStatus",
            Error::DeleteExpired(_) => "DeleteExpired",
            Error::Serialize { .. } => "Serialize",
            Error::MissingMetadata(_) => "InvalidObject",
        }
    }
}
